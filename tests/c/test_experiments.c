/* The experiments plugin's pure pieces: bucketing (pinned values,
 * determinism, uniformity, independence of the purposes), weighted picks,
 * layer exclusivity, definition validation and canonical form, and every
 * targeting operator. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <msgpack.h>
#include <xxhash.h>

#include "core/json.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/experiments/internal.h"

/* ---- JSON to MessagePack, so that definitions read as they are written ---- */

struct obj {
	msgpack_sbuffer sb;
	msgpack_zone zone;
	msgpack_object o;
};

static struct obj *obj_new(const char *json)
{
	json_error_t err;
	json_t *j = json_loads(json, JSON_DECODE_ANY, &err);
	if (!j)
		fail_msg("bad JSON in the test: %s: %s", err.text, json);
	struct obj *o = calloc(1, sizeof(*o));
	msgpack_packer pk;
	msgpack_sbuffer_init(&o->sb);
	msgpack_packer_init(&pk, &o->sb, msgpack_sbuffer_write);
	sx_pack_json(&pk, j);
	json_decref(j);
	msgpack_zone_init(&o->zone, 1024);
	assert_int_equal(sx_frame_decode((const uint8_t *)o->sb.data, o->sb.size, &o->zone, &o->o), 0);
	return o;
}

static void obj_free(struct obj *o)
{
	msgpack_zone_destroy(&o->zone);
	msgpack_sbuffer_destroy(&o->sb);
	free(o);
}

static struct xp_def *def_of(const char *json)
{
	struct obj *o = obj_new(json);
	struct xp_def *d = sx__xp_def_parse(&o->o, NULL, 0);
	obj_free(o);
	return d;
}

#define TWO "\"variants\": [{\"name\": \"a\"}, {\"name\": \"b\"}]"

/* ---- bucketing ---- */

static void test_bucket_pinned_values(void **state)
{
	/* Assignments must never move between versions of the engine: these
	 * values, produced once by this implementation, pin
	 * XXH3-64(salt "\0" user, seed) mod 10000. The library itself is
	 * anchored to xxHash's published vector XXH3_64bits("") below. */
	static const struct {
		const char *salt, *user;
		uint64_t seed;
		uint32_t bucket;
	} pins[] = {
		{"exp", "alice", XP_SEED_TRAFFIC, 7654},
		{"exp", "alice", XP_SEED_VARIANT, 5916},
		{"exp", "bob", XP_SEED_TRAFFIC, 3911},
		{"checkout", "user-42", XP_SEED_LAYER, 5815},
	};
	(void)state;
	assert_true(XXH3_64bits("", 0) == 0x2D06800538D394C2ULL);
	assert_true(XXH3_64bits("exp\0alice", 9) % 10000 == 7654);
	for (size_t i = 0; i < SX_ARRAY_SIZE(pins); i++) {
		uint32_t b = sx__xp_bucket(pins[i].salt, strlen(pins[i].salt), pins[i].user, strlen(pins[i].user),
					   pins[i].seed);
		assert_int_equal(b, pins[i].bucket);
	}
}

static void test_bucket_deterministic_and_salted(void **state)
{
	(void)state;
	int differ_salt = 0, differ_seed = 0;
	for (int i = 0; i < 1000; i++) {
		char u[32];
		int n = snprintf(u, sizeof(u), "user-%d", i);
		uint32_t b = sx__xp_bucket("exp", 3, u, (size_t)n, 0);
		assert_true(b < XP_BUCKETS);
		assert_int_equal(b, sx__xp_bucket("exp", 3, u, (size_t)n, 0));
		differ_salt += b != sx__xp_bucket("exp2", 4, u, (size_t)n, 0);
		differ_seed += b != sx__xp_bucket("exp", 3, u, (size_t)n, 1);
	}
	assert_true(differ_salt > 990 && differ_seed > 990);
	/* salt and user are separated: ("ab", "c") is not ("a", "bc") */
	int same = 0;
	for (int i = 0; i < 200; i++) {
		char a[16];
		int n = snprintf(a, sizeof(a), "c%d", i);
		same += sx__xp_bucket("ab", 2, a, (size_t)n, 0) == sx__xp_bucket("abc", 3, a + 1, (size_t)n - 1, 0);
	}
	assert_true(same < 3);
}

static void test_bucket_uniform_and_independent(void **state)
{
	enum { N = 200000, BINS = 100 };
	static double obs[BINS], joint[10][10];
	(void)state;
	memset(obs, 0, sizeof(obs));
	memset(joint, 0, sizeof(joint));
	for (int i = 0; i < N; i++) {
		char u[32];
		int n = snprintf(u, sizeof(u), "u%d", i);
		uint32_t b = sx__xp_bucket("uniform", 7, u, (size_t)n, XP_SEED_TRAFFIC);
		uint32_t v = sx__xp_bucket("uniform", 7, u, (size_t)n, XP_SEED_VARIANT);
		obs[b * BINS / XP_BUCKETS]++;
		joint[b * 10 / XP_BUCKETS][v * 10 / XP_BUCKETS]++;
	}
	/* chi-square, 99 df: the 0.999 quantile is 148.2 */
	double chi = 0, e = (double)N / BINS;
	for (int i = 0; i < BINS; i++)
		chi += (obs[i] - e) * (obs[i] - e) / e;
	assert_true(chi < 148.2);
	/* traffic and variant buckets independent: 10x10 table, 81 df, 0.999 quantile 126.3 */
	chi = 0;
	e = (double)N / 100;
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			chi += (joint[i][j] - e) * (joint[i][j] - e) / e;
	assert_true(chi < 126.3);
}

static void test_pick_follows_weights(void **state)
{
	const double w[3] = {0.2, 0.5, 0.3};
	(void)state;
	assert_int_equal(sx__xp_pick(w, 3, 0), 0);
	assert_int_equal(sx__xp_pick(w, 3, 1999), 0);
	assert_int_equal(sx__xp_pick(w, 3, 2000), 1);
	assert_int_equal(sx__xp_pick(w, 3, 6999), 1);
	assert_int_equal(sx__xp_pick(w, 3, 7000), 2);
	assert_int_equal(sx__xp_pick(w, 3, 9999), 2);
	int count[3] = {0};
	for (uint32_t b = 0; b < XP_BUCKETS; b++)
		count[sx__xp_pick(w, 3, b)]++;
	assert_int_equal(count[0], 2000);
	assert_int_equal(count[1], 5000);
	assert_int_equal(count[2], 3000);
	/* a weight that rounds to no bucket gets nobody */
	const double tiny[2] = {0.00001, 0.99999};
	for (uint32_t b = 0; b < XP_BUCKETS; b++)
		assert_int_equal(sx__xp_pick(tiny, 2, b), 1);
}

static void test_layer_slots_exclusive_and_balanced(void **state)
{
	enum { N = 30000 };
	(void)state;
	for (int n = 1; n <= 4; n++) {
		int count[4] = {0};
		for (int i = 0; i < N; i++) {
			char u[32];
			int len = snprintf(u, sizeof(u), "layer-user-%d", i);
			int s = sx__xp_layer_slot("home", 4, u, (size_t)len, n);
			assert_true(s >= 0 && s < n);
			/* one slot per user, the same every time */
			assert_int_equal(s, sx__xp_layer_slot("home", 4, u, (size_t)len, n));
			count[s]++;
		}
		for (int s = 0; s < n; s++)
			assert_true(fabs(count[s] - (double)N / n) < 5 * sqrt((double)N / n));
	}
	/* different layers split users independently */
	int agree = 0;
	for (int i = 0; i < 1000; i++) {
		char u[32];
		int len = snprintf(u, sizeof(u), "x%d", i);
		agree += sx__xp_layer_slot("l1", 2, u, (size_t)len, 2) == sx__xp_layer_slot("l2", 2, u, (size_t)len, 2);
	}
	assert_true(agree > 430 && agree < 570);
}

/* ---- definitions ---- */

static void test_definition_defaults_and_canonical_form(void **state)
{
	(void)state;
	struct xp_def *d = def_of("{\"key\": \"k\", \"variants\": [{\"name\": \"a\", \"weight\": 1}, "
				  "{\"name\": \"b\", \"weight\": 3, \"payload\": {\"x\": [1, 2]}}], "
				  "\"metrics\": [{\"name\": \"m\", \"event\": \"buy\"}, "
				  "{\"name\": \"r\", \"kind\": \"sum\", \"event\": \"buy\", \"role\": \"guardrail\"}]}");
	assert_non_null(d);
	assert_int_equal(d->nv, 2);
	assert_true(fabs(d->v[0].weight - 0.25) < 1e-15 && fabs(d->v[1].weight - 0.75) < 1e-15);
	assert_true(d->traffic == 1 && d->holdout == 0 && d->layer == NULL && d->targeting == NULL);
	assert_int_equal(d->slen, 1);
	assert_memory_equal(d->salt, "k", 1);
	assert_int_equal(d->primary, 0);
	assert_int_equal(d->m[0].kind, XP_CONVERSION);
	assert_int_equal(d->m[0].window_ms, XP_WINDOW_DEFAULT);
	assert_int_equal(d->m[1].role, XP_GUARDRAIL);
	assert_int_equal(d->m[1].plen, 5);
	assert_memory_equal(d->m[1].prop, "value", 5);
	assert_int_equal(d->min_sample, 100);
	assert_int_equal(d->rule, XP_RULE_DEFAULT);
	assert_true(d->auto_stop && !d->rollout && d->alpha == 0.05);
	/* the canonical form parses to the same canonical form */
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	assert_int_equal(sx_frame_decode((const uint8_t *)d->packed, d->packed_len, &z, &o), 0);
	struct xp_def *d2 = sx__xp_def_parse(&o, "k", 1);
	assert_non_null(d2);
	assert_int_equal(d2->packed_len, d->packed_len);
	assert_memory_equal(d2->packed, d->packed, d->packed_len);
	/* a key given apart must match the map's */
	assert_null(sx__xp_def_parse(&o, "other", 5));
	assert_int_equal(sx_diag_last_code(), SX_EINVAL);
	msgpack_zone_destroy(&z);
	sx__xp_def_free(d2);
	sx__xp_def_free(d);
	/* "none" turns off automatic stops too */
	d = def_of("{\"key\": \"k\", " TWO ", \"stopping_rule\": \"none\"}");
	assert_true(d && d->rule == XP_RULE_NONE && !d->auto_stop);
	sx__xp_def_free(d);
}

static void test_definition_errors(void **state)
{
	static const char *const bad[] = {
		"[]",
		"{\"key\": \"k\"}",
		"{" TWO "}",
		"{\"key\": \"bad key\", " TWO "}",
		"{\"key\": \"k\", \"variants\": [{\"name\": \"a\"}]}",
		"{\"key\": \"k\", \"variants\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}",
		"{\"key\": \"k\", \"variants\": [{\"name\": \"a\", \"weight\": 0}, {\"name\": \"b\"}]}",
		"{\"key\": \"k\", \"variants\": [{\"name\": \"a\", \"weight\": \"1\"}, {\"name\": \"b\"}]}",
		"{\"key\": \"k\", " TWO ", \"traffic\": 1.5}",
		"{\"key\": \"k\", " TWO ", \"holdout\": 1}",
		"{\"key\": \"k\", " TWO ", \"what\": 1}",
		"{\"key\": \"k\", " TWO ", \"layer\": \"\"}",
		"{\"key\": \"k\", " TWO ", \"metrics\": [{\"name\": \"m\", \"event\": \"*\"}]}",
		"{\"key\": \"k\", " TWO ", \"metrics\": [{\"name\": \"m\", \"event\": \"e\", \"direction\": \"up\"}]}",
		"{\"key\": \"k\", " TWO ", \"metrics\": [{\"name\": \"m\", \"event\": \"e\", \"window_ms\": 1.5}]}",
		"{\"key\": \"k\", " TWO ", \"targeting\": {\"attr\": \"a\", \"op\": \"gt\", \"value\": true}}",
		"{\"key\": \"k\", " TWO ", \"targeting\": {\"attr\": \"a\", \"op\": \"exists\", \"value\": 1}}",
		"{\"key\": \"k\", " TWO ", \"targeting\": {\"attr\": \"a\", \"op\": \"eq\", \"value\": [1]}}",
		"{\"key\": \"k\", " TWO ", \"targeting\": {\"attr\": \"cohort\", \"op\": \"gt\", \"value\": \"x\"}}",
		"{\"key\": \"k\", " TWO ", \"targeting\": {\"any\": []}}",
		"{\"key\": \"k\", " TWO ", \"stopping_rule\": {\"tau\": -1}}",
		"{\"key\": \"k\", " TWO ", \"allocation\": \"thompson\", \"metrics\": [{\"name\": \"m\", \"kind\": \"sum\", \"event\": \"e\"}]}",
	};
	(void)state;
	for (size_t i = 0; i < SX_ARRAY_SIZE(bad); i++) {
		struct xp_def *d = def_of(bad[i]);
		if (d)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(sx_diag_last_code(), SX_EINVAL);
		assert_true(strlen(sx_diag_last()) > 5);
	}
}

/* ---- targeting ---- */

static int cohort_stub(const char *name, size_t len, const char *user, size_t ulen, void *ud)
{
	(void)ud;
	return len == 3 && memcmp(name, "vip", 3) == 0 && ulen == 5 && memcmp(user, "alice", 5) == 0;
}

static int target(const char *cond, const char *attrs, const char *context)
{
	char json[2048];
	snprintf(json, sizeof(json), "{\"key\": \"t\", " TWO ", \"targeting\": %s}", cond);
	struct xp_def *d = def_of(json);
	if (!d)
		fail_msg("rejected: %s: %s", cond, sx_diag_last());
	struct obj *a = attrs ? obj_new(attrs) : NULL, *c = context ? obj_new(context) : NULL;
	int r = sx__xp_target(d->targeting, "alice", 5, a ? &a->o : NULL, c ? &c->o : NULL, cohort_stub, NULL);
	if (a)
		obj_free(a);
	if (c)
		obj_free(c);
	sx__xp_def_free(d);
	return r;
}

#define T(cond, attrs, ctx) target(cond, attrs, ctx)

static void test_targeting_operators(void **state)
{
	const char *u = "{\"country\": \"FR\", \"age\": 31, \"score\": 2.5, \"vip\": true, "
			"\"tags\": [\"a\", \"beta\"], \"bio\": \"likes trains\"}";
	(void)state;
	/* eq / ne, with numbers of any encoding and arrays matching any element */
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"eq\", \"value\": \"FR\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"eq\", \"value\": \"DE\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"user.age\", \"op\": \"eq\", \"value\": 31.0}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"vip\", \"op\": \"eq\", \"value\": true}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"vip\", \"op\": \"eq\", \"value\": 1}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"tags\", \"op\": \"eq\", \"value\": \"beta\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"ne\", \"value\": \"DE\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"missing\", \"op\": \"ne\", \"value\": \"DE\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"missing\", \"op\": \"eq\", \"value\": \"DE\"}", u, NULL), 0);
	/* in / not_in */
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"in\", \"value\": [\"IT\", \"FR\"]}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"in\", \"value\": [\"IT\"]}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"not_in\", \"value\": [\"IT\"]}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"tags\", \"op\": \"in\", \"value\": [\"z\", \"a\"]}", u, NULL), 1);
	/* gt / gte / lt / lte on numbers and strings; never across types */
	assert_int_equal(T("{\"attr\": \"age\", \"op\": \"gt\", \"value\": 30}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"age\", \"op\": \"gt\", \"value\": 31}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"age\", \"op\": \"gte\", \"value\": 31}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"age\", \"op\": \"ge\", \"value\": 31.5}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"score\", \"op\": \"lt\", \"value\": 3}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"score\", \"op\": \"lte\", \"value\": 2.5}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"score\", \"op\": \"lt\", \"value\": -1}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"gt\", \"value\": \"DE\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"lt\", \"value\": \"F\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"gt\", \"value\": 1}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"age\", \"op\": \"lt\", \"value\": \"99\"}", u, NULL), 0);
	/* exists / not_exists / contains */
	assert_int_equal(T("{\"attr\": \"bio\", \"op\": \"exists\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"nope\", \"op\": \"exists\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"nope\", \"op\": \"not_exists\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"bio\", \"op\": \"contains\", \"value\": \"train\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"bio\", \"op\": \"contains\", \"value\": \"plane\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"tags\", \"op\": \"contains\", \"value\": \"beta\"}", u, NULL), 1);
	/* the user id, the context, cohorts */
	assert_int_equal(T("{\"attr\": \"user.id\", \"op\": \"eq\", \"value\": \"alice\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"context.device\", \"op\": \"eq\", \"value\": \"ios\"}", u,
			   "{\"device\": \"ios\"}"), 1);
	assert_int_equal(T("{\"attr\": \"context.device\", \"op\": \"eq\", \"value\": \"ios\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"device\", \"op\": \"eq\", \"value\": \"ios\"}", u, "{\"device\": \"ios\"}"), 0);
	assert_int_equal(T("{\"attr\": \"cohort\", \"op\": \"eq\", \"value\": \"vip\"}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"cohort\", \"op\": \"in\", \"value\": [\"x\", \"vip\"]}", u, NULL), 1);
	assert_int_equal(T("{\"attr\": \"cohort\", \"op\": \"ne\", \"value\": \"vip\"}", u, NULL), 0);
	assert_int_equal(T("{\"attr\": \"cohort\", \"op\": \"not_in\", \"value\": [\"x\"]}", u, NULL), 1);
	/* no attributes at all */
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"eq\", \"value\": \"FR\"}", NULL, NULL), 0);
	assert_int_equal(T("{\"attr\": \"country\", \"op\": \"not_exists\"}", NULL, NULL), 1);
}

static void test_targeting_combinators(void **state)
{
	const char *u = "{\"country\": \"FR\", \"age\": 31}";
	const char *fr = "{\"attr\": \"country\", \"op\": \"eq\", \"value\": \"FR\"}";
	const char *young = "{\"attr\": \"age\", \"op\": \"lt\", \"value\": 25}";
	char c[512];
	(void)state;
	snprintf(c, sizeof(c), "[%s, %s]", fr, young);
	assert_int_equal(T(c, u, NULL), 0);
	snprintf(c, sizeof(c), "{\"all\": [%s, {\"not\": %s}]}", fr, young);
	assert_int_equal(T(c, u, NULL), 1);
	snprintf(c, sizeof(c), "{\"any\": [%s, %s]}", young, fr);
	assert_int_equal(T(c, u, NULL), 1);
	snprintf(c, sizeof(c), "{\"any\": [%s]}", young);
	assert_int_equal(T(c, u, NULL), 0);
	snprintf(c, sizeof(c), "{\"not\": {\"any\": [%s, %s]}}", young, fr);
	assert_int_equal(T(c, u, NULL), 0);
	/* an empty array is nobody's business: everyone */
	struct xp_def *d = def_of("{\"key\": \"k\", " TWO ", \"targeting\": []}");
	assert_non_null(d);
	assert_null(d->targeting);
	assert_int_equal(sx__xp_target(d->targeting, "x", 1, NULL, NULL, NULL, NULL), 1);
	sx__xp_def_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_pinned_values),
		cmocka_unit_test(test_bucket_deterministic_and_salted),
		cmocka_unit_test(test_bucket_uniform_and_independent),
		cmocka_unit_test(test_pick_follows_weights),
		cmocka_unit_test(test_layer_slots_exclusive_and_balanced),
		cmocka_unit_test(test_definition_defaults_and_canonical_form),
		cmocka_unit_test(test_definition_errors),
		cmocka_unit_test(test_targeting_operators),
		cmocka_unit_test(test_targeting_combinators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
