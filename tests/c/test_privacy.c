/* The privacy plugin and the events plugin's privacy parts over a real store:
 * consent honoured by ingest, erasure that leaves no trace in any table,
 * export, the retention expiry, the audit log, pseudonymous ids, eraser
 * hooks; and regressions found by fuzzing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "core/audit.h"
#include "core/config.h"
#include "core/plugin.h"
#include "core/json.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/events/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

#include "engine_fixture.h"

#define DAY 86400000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */
#define VICTIM "erase-me-7f3a"

static int setup_cfg(void **state, const char *secret, int consent_default)
{
	struct sxt_engine *f = calloc(1, sizeof(*f));
	sxt_init(f, "privacy", 1);
	snprintf(f->cfg.pseudonymize_secret, sizeof(f->cfg.pseudonymize_secret), "%s", secret);
	f->cfg.consent_default = consent_default;
	sxt_open(f);
	*state = f;
	return 0;
}

static int setup(void **state) { return setup_cfg(state, "", 1); }
static int setup_pseudo(void **state) { return setup_cfg(state, "s3cret", 1); }
static int setup_deny(void **state) { return setup_cfg(state, "", 0); }

static int teardown(void **state)
{
	sxt_free(*state);
	free(*state);
	return 0;
}

/* ---- calling methods with JSON arguments ---- */


static const msgpack_object *get(const msgpack_object *o, const char *path)
{
	char key[64];
	while (o && *path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		o = sx__ev_map_get(o, key);
		path += n + (dot != NULL);
	}
	return o;
}

static int64_t get_int(const msgpack_object *o, const char *path)
{
	const msgpack_object *v = get(o, path);
	if (!v)
		fail_msg("no %s in the result", path);
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (int64_t)v->via.u64;
	assert_int_equal(v->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
	return v->via.i64;
}

static int get_bool(const msgpack_object *o, const char *path)
{
	const msgpack_object *v = get(o, path);
	assert_non_null(v);
	assert_int_equal(v->type, MSGPACK_OBJECT_BOOLEAN);
	return v->via.boolean;
}

static void track(struct sxt_engine *f, const char *user, const char *name, int64_t t, const char *extra)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "{\"user\": \"%s\", \"name\": \"%s\", \"time\": %lld%s}", user, name,
		 (long long)t, extra ? extra : "");
	assert_int_equal(sxt_call(f, "events.track", buf), 0);
	assert_int_equal(get_int(&f->res, "accepted"), 1);
}

/* count and distinct users of the day counter of `event` on day T0 + d */
static void day_counter(struct sxt_engine *f, const char *event, int64_t day, uint64_t *count, uint64_t *users)
{
	uint8_t k[512];
	struct sx_val v;
	size_t n = sx__ev_metric_key(k, SX_EV_DAY, event, strlen(event), "", 0, T0 + day * DAY, "", 0);
	assert_int_equal(sx_store_get(f->e.store, SX_T_COUNTERS, k, n, &v), 0);
	struct sx_ev_counter c = {0};
	assert_int_equal(sx__ev_counter_merge(&c, v.data, v.len), 0);
	*count = c.count;
	*users = c.users ? roaring_bitmap_get_cardinality(c.users) : 0;
	if (c.users)
		roaring_bitmap_free(c.users);
}

/* ---- a full scan of every table for a user's traces ---- */

static int bitmap_has(const void *data, size_t len, uint32_t idx)
{
	roaring_bitmap_t *b = sx__ev_bitmap_decode(data, len);
	assert_non_null(b);
	int has = roaring_bitmap_contains(b, idx);
	roaring_bitmap_free(b);
	return has;
}

/* Returns how many traces of (id, idx) the committed store holds; prints each.
 * Keys are judged by their structure (an index's 4 bytes may occur by chance
 * in unrelated binary data), every key and value is searched for the id. */
static int traces(struct sxt_engine *f, const char *id, uint32_t idx)
{
	MDB_txn *txn;
	int found = 0;
	uint8_t be[4];
	sx_be32(be, idx);
	assert_int_equal(sx_store_rtxn_begin(f->e.store, &txn), 0);
	for (int t = 0; t < SX_T_COUNT; t++) {
		MDB_cursor *cur;
		MDB_val k, v;
		assert_int_equal(mdb_cursor_open(txn, sx_store_dbi(f->e.store, t), &cur), 0);
		for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			const uint8_t *kp = k.mv_data;
			const char *why = NULL;
			if (memmem(k.mv_data, k.mv_size, id, strlen(id)))
				why = "key holds the id";
			else if (memmem(v.mv_data, v.mv_size, id, strlen(id)))
				why = "value holds the id";
			else if ((t == SX_T_EVENTS && k.mv_size == SX_EV_EVKEY && !memcmp(kp, be, 4)) ||
				 (t == SX_T_USER_IDX && k.mv_size == 4 && !memcmp(kp, be, 4)) ||
				 (t == SX_T_COUNTERS && k.mv_size == 5 && kp[0] == 'U' && !memcmp(kp + 1, be, 4)))
				why = "key holds the index";
			else if (t == SX_T_EVENTS_BY_TIME && v.mv_size == 4 && !memcmp(v.mv_data, be, 4))
				why = "time index points at the index";
			else if (t == SX_T_COUNTERS && kp[0] == 'F' && bitmap_has(v.mv_data, v.mv_size, idx))
				why = "first-seen bitmap holds the index";
			else if (t == SX_T_COHORTS && kp[0] == 'b' && v.mv_size && bitmap_has(v.mv_data, v.mv_size, idx))
				why = "cohort bitmap holds the index";
			else if (t == SX_T_COUNTERS && kp[0] == 'M') {
				struct sx_ev_counter c = {0};
				assert_int_equal(sx__ev_counter_merge(&c, v.mv_data, v.mv_size), 0);
				if (c.users && roaring_bitmap_contains(c.users, idx))
					why = "counter bitmap holds the index";
				if (c.users)
					roaring_bitmap_free(c.users);
			}
			if (why) {
				fprintf(stderr, "trace in %s (key %zu bytes, first 0x%02x): %s\n", sx_store_table_name(t),
					k.mv_size, k.mv_size ? kp[0] : 0, why);
				found++;
			}
		}
		mdb_cursor_close(cur);
	}
	sx_store_rtxn_end(f->e.store, txn);
	return found;
}

/* ---- tests ---- */

static void test_diag_set_may_wrap_its_last_message(void **state)
{
	(void)state;
	/* found by fuzzing review: vsnprintf wrote over its own argument */
	sx_diag_set(SX_EINVAL, "'user' must be a string");
	sx_diag_set(SX_EINVAL, "argument %s", sx_diag_last());
	assert_string_equal(sx_diag_last(), "argument 'user' must be a string");
}

static void load_world(struct sxt_engine *f, uint32_t *victim_idx)
{
	assert_int_equal(sxt_call(f, "users.put", "{\"id\": \"keep-1\", \"attributes\": {\"tier\": \"gold\"}}"), 0);
	assert_int_equal(sxt_call(f, "users.put", "{\"id\": \"" VICTIM "\", \"attributes\": {\"tier\": \"gold\", "
				"\"email\": \"" VICTIM "@example.com\"}, \"signup_time\": 1700000000000}"), 0);
	*victim_idx = (uint32_t)get_int(&f->res, "index");
	assert_int_equal(*victim_idx, 1);
	assert_int_equal(sxt_call(f, "metrics.dimensions", "{\"event\": \"view\", \"dimensions\": [\"device\", \"user.tier\"]}"), 0);
	assert_int_equal(sxt_call(f, "items.put", "{\"id\": \"d1\", \"kind\": \"destination\"}"), 0);
	for (int d = 0; d < 3; d++) {
		track(f, VICTIM, "view", T0 + d * DAY + 1000, ", \"item\": \"d1\", \"properties\": {\"device\": \"ios\", \"value\": 2}");
		track(f, "keep-1", "view", T0 + d * DAY + 2000, ", \"properties\": {\"device\": \"ios\", \"value\": 1}");
	}
	track(f, VICTIM, "book", T0 + 5000, NULL);
	track(f, "keep-2", "book", T0 + 6000, NULL);
	assert_int_equal(sxt_call(f, "cohort.save", "{\"name\": \"gold\", \"rule\": {\"attribute\": {\"name\": \"tier\", \"value\": \"gold\"}}}"), 0);
	assert_int_equal(get_int(&f->res, "size"), 2);
	assert_int_equal(sxt_call(f, "cohort.save", "{\"name\": \"early\", \"rule\": {\"first_seen\": {\"from\": 1703980800000, \"to\": 1704153600000}}}"), 0);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"" VICTIM "\", \"purposes\": {\"analytics\": true}, \"source\": \"banner\"}"), 0);
	assert_int_equal(sxt_call(f, "events.track", "{\"events\": [{\"user\": \"" VICTIM "\", \"name\": \"view\", \"time\": 1704067260000}], \"client_id\": \"c1\"}"), 0);
	sxt_sync(f);
}

static void test_erase_leaves_no_trace_in_any_table(void **state)
{
	struct sxt_engine *f = *state;
	uint32_t idx;
	load_world(f, &idx);
	assert_true(traces(f, VICTIM, idx) > 10); /* the scan does see a live user */
	uint64_t count0, users0;
	day_counter(f, "view", 0, &count0, &users0);
	assert_int_equal(count0, 3);
	assert_int_equal(users0, 2);

	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"" VICTIM "\"}"), 0);
	assert_int_equal(get_int(&f->res, "user_index"), idx);
	assert_true(get_bool(&f->res, "found"));
	assert_int_equal(get_int(&f->res, "removed.users"), 1);
	assert_int_equal(get_int(&f->res, "removed.user_idx"), 1);
	assert_int_equal(get_int(&f->res, "removed.events"), 5);
	assert_int_equal(get_int(&f->res, "removed.events_by_time"), 5);
	assert_int_equal(get_int(&f->res, "removed.consent"), 1);
	assert_int_equal(get_int(&f->res, "removed.cohorts"), 2);
	assert_true(get_int(&f->res, "removed.counters") > 20);
	const msgpack_object *h = get(&f->res, "user_hash");
	assert_true(h && h->type == MSGPACK_OBJECT_STR && h->via.str.size == 32);
	char hash[33];
	memcpy(hash, h->via.str.ptr, 32);
	hash[32] = 0;

	/* before the commit, loop-thread reads no longer see the user */
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"" VICTIM "\"}"), SX_ENOENT);
	sxt_sync(f);
	assert_int_equal(traces(f, VICTIM, idx), 0);

	/* aggregates keep their anonymous counts; the others are untouched */
	uint64_t count1, users1;
	day_counter(f, "view", 0, &count1, &users1);
	assert_int_equal(count1, count0);
	assert_int_equal(users1, users0 - 1);
	assert_int_equal(sxt_call(f, "users.events", "{\"id\": \"keep-1\"}"), 0);
	assert_int_equal(get(&f->res, "events")->via.array.size, 3);
	assert_int_equal(sxt_call(f, "cohort.size", "{\"name\": \"gold\"}"), 0);
	assert_int_equal(get_int(&f->res, "size"), 1);
	assert_int_equal(sxt_call(f, "cohort.users", "{\"name\": \"gold\"}"), 0);
	assert_int_equal(get(&f->res, "users")->via.array.size, 1);

	/* the audit entry has the hash and counts, not the id */
	assert_int_equal(sxt_call(f, "audit.query", "{\"action\": \"privacy.erase\"}"), 0);
	const msgpack_object *es = get(&f->res, "entries");
	assert_int_equal(es->via.array.size, 1);
	const msgpack_object *au = get(&es->via.array.ptr[0], "detail.user");
	assert_true(au && au->via.str.size == 32 && !memcmp(au->via.str.ptr, hash, 32));
	assert_int_equal(get_int(&es->via.array.ptr[0], "detail.removed.events"), 5);

	/* erasing again finds nothing and succeeds */
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"" VICTIM "\"}"), 0);
	assert_false(get_bool(&f->res, "found"));

	/* the index is never handed out again, across a restart too */
	sxt_stop(f);
	sxt_open(f);
	assert_true(sx_events_user_bound() >= 3);
	track(f, "newcomer", "view", T0, NULL);
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"newcomer\"}"), 0);
	assert_int_equal(get_int(&f->res, "index"), 3);
	sxt_sync(f);
}

static int failing_eraser(const char *id, size_t len, uint32_t idx, int has_idx, struct sx_privacy_receipt *r,
			  void *ud)
{
	(void)id, (void)len, (void)idx, (void)has_idx;
	int *mode = ud;
	if (*mode == 1)
		return sx_diag_set(SX_EIO, "disk on fire");
	sx_privacy_receipt_add(r, "fake_vectors", 7);
	return 0;
}

static void test_erasers_join_the_erasure_and_can_fail_it(void **state)
{
	struct sxt_engine *f = *state;
	static int mode;
	uint32_t idx;
	load_world(f, &idx);
	mode = 1;
	assert_int_equal(sx_privacy_register_eraser("fake", failing_eraser, &mode), 0);
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"" VICTIM "\"}"), SX_EIO);
	assert_non_null(strstr(sx_diag_last(), "fake"));
	/* nothing was erased: the request's writes were rolled back */
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"" VICTIM "\"}"), 0);
	assert_int_equal(sxt_call(f, "users.events", "{\"id\": \"" VICTIM "\"}"), 0);
	assert_int_equal(get(&f->res, "events")->via.array.size, 5);
	mode = 0;
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"" VICTIM "\"}"), 0);
	assert_int_equal(get_int(&f->res, "removed.fake_vectors"), 7);
	mode = 0; /* registered hooks live as long as the process; this one is harmless now */
	sxt_sync(f);
	assert_int_equal(traces(f, VICTIM, idx), 0);
}

static void test_export_holds_everything(void **state)
{
	struct sxt_engine *f = *state;
	uint32_t idx;
	load_world(f, &idx);
	assert_int_equal(sxt_call(f, "privacy.export", "{\"user\": \"" VICTIM "\"}"), 0);
	const msgpack_object *r = &f->res;
	assert_int_equal(get_int(r, "index"), idx);
	assert_true(get_bool(r, "consent.recorded"));
	assert_true(get_bool(r, "consent.purposes.analytics.granted"));
	assert_true(get_bool(r, "consent.purposes.personalization.granted")); /* the default */
	assert_int_equal(get(r, "consent.purposes.personalization.time")->type, MSGPACK_OBJECT_NIL);
	const msgpack_object *src = get(r, "consent.purposes.analytics.source");
	assert_true(src->type == MSGPACK_OBJECT_STR && src->via.str.size == 6);
	const msgpack_object *email = get(r, "events.profile.attributes.email");
	assert_true(email && email->type == MSGPACK_OBJECT_STR);
	assert_int_equal(get_int(r, "events.profile.signup_time"), 1700000000000LL);
	assert_int_equal(get_int(r, "events.first_seen"), T0 + 1000);
	const msgpack_object *ev = get(r, "events.events");
	assert_int_equal(ev->via.array.size, 5);
	assert_int_equal(get_int(&ev->via.array.ptr[0], "time"), T0 + 1000);
	assert_int_equal(get_int(&ev->via.array.ptr[0], "properties.value"), 2);
	const msgpack_object *c = get(r, "events.cohorts");
	assert_int_equal(c->via.array.size, 2);
	assert_int_equal(sxt_call(f, "privacy.export", "{\"user\": \"nobody\"}"), SX_ENOENT);
	assert_int_equal(sxt_call(f, "privacy.export", "{\"user\": 5}"), SX_EINVAL);
}

static void test_no_analytics_consent_counts_anonymously(void **state)
{
	struct sxt_engine *f = *state;
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"shy\", \"purposes\": {\"analytics\": false}}"), 0);
	assert_false(get_bool(&f->res, "purposes.analytics.granted"));
	assert_true(get_bool(&f->res, "purposes.experiments.granted"));
	assert_int_equal(sx_privacy_allowed("shy", 3, SX_PURPOSE_ANALYTICS), 0);
	assert_int_equal(sx_privacy_allowed("shy", 3, SX_PURPOSE_NOTIFICATIONS), 1);
	assert_int_equal(sx_privacy_allowed("other", 5, SX_PURPOSE_ANALYTICS), 1);
	track(f, "shy", "view", T0 + 10, ", \"properties\": {\"value\": 4}");
	track(f, "shy", "view", T0 + 20, NULL);
	track(f, "bold", "view", T0 + 30, NULL);
	/* no index, no profile, no stored event for the shy user */
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"shy\"}"), SX_ENOENT);
	uint64_t count, users;
	day_counter(f, "view", 0, &count, &users);
	assert_int_equal(count, 3);
	assert_int_equal(users, 1);
	day_counter(f, "*", 0, &count, &users);
	assert_int_equal(count, 3);
	sxt_sync(f);
	assert_int_equal(traces(f, "shy", 999), 1); /* the consent record itself */
	/* granting later makes the next events per-user */
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"shy\", \"purposes\": {\"analytics\": true}}"), 0);
	assert_false(get_bool(&f->res, "purposes.notifications.granted") == 0);
	track(f, "shy", "view", T0 + 40, NULL);
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"shy\"}"), 0);
	/* bad arguments */
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"x\", \"purposes\": {\"ads\": true}}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"x\", \"purposes\": {\"analytics\": 1}}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"x\", \"purposes\": {}}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"\", \"purposes\": {\"analytics\": true}}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"x\", \"purposes\": {\"analytics\": true}, \"source\": 3}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.get", "{\"user\": \"x\", \"extra\": 1}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "consent.get", "{\"user\": \"never\"}"), 0);
	assert_false(get_bool(&f->res, "recorded"));
	/* consent changes are audited with a hashed user */
	assert_int_equal(sxt_call(f, "audit.query", "{\"action\": \"consent.set\"}"), 0);
	assert_int_equal(get(&f->res, "entries")->via.array.size, 2);
	assert_false(get_bool(&get(&f->res, "entries")->via.array.ptr[0], "detail.purposes.analytics"));
}

static int count_cb(const struct sx_event *ev, void *ud)
{
	(void)ev;
	++*(int *)ud;
	return 0;
}

/* Events stored under the user's index. */
static int stored_events(const char *user)
{
	uint32_t idx;
	int n = 0;
	assert_int_equal(sx_events_user_index(NULL, user, strlen(user), &idx), 0);
	assert_int_equal(sx_events_user_scan(NULL, idx, 0, SX_EVENTS_TIME_MAX, 0, count_cb, &n), 0);
	return n;
}

/* Ingest keeps each user's consent answer across batches: it must follow
 * every consent.set and erasure, and forget what a rolled-back grant allowed. */
static void test_cached_consent_follows_changes_and_undo(void **state)
{
	struct sxt_engine *f = *state;
	uint64_t count, users;
	track(f, "flip", "view", T0 + 1, NULL); /* allowed by default: cached as such */
	track(f, "flip", "view", T0 + 2, NULL);
	assert_int_equal(stored_events("flip"), 2);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"flip\", \"purposes\": {\"analytics\": false}}"), 0);
	track(f, "flip", "view", T0 + 3, NULL);
	assert_int_equal(stored_events("flip"), 2); /* counted, not stored */
	day_counter(f, "view", 0, &count, &users);
	assert_true(count == 3 && users == 1);
	sxt_sync(f);

	/* a grant undone by its request's rollback leaves the refusal in force */
	sx_store_req_begin(f->e.store);
	uint64_t sp = sx_store_savepoint(f->e.store);
	const struct sx_method *m = sx_rpc_find(f->e.rpc, "consent.set", 11);
	assert_non_null(m);
	msgpack_sbuffer sb, out;
	msgpack_packer pk, opk;
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&out);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_packer_init(&opk, &out, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	sx_pack_kv_str(&pk, "user", "flip");
	sx_pack_key(&pk, "purposes");
	msgpack_pack_map(&pk, 1);
	sx_pack_kv_bool(&pk, "analytics", 1);
	msgpack_zone z;
	msgpack_object args;
	msgpack_zone_init(&z, 1024);
	assert_int_equal(sx__ev_unpack(sb.data, sb.size, &z, &args), 0);
	struct sx_req req;
	memset(&req, 0, sizeof(req));
	req.role = SX_ROLE_ADMIN;
	req.method = m->name;
	assert_int_equal(m->fn(&req, &args, &opk, m->ud), 0);
	track(f, "flip", "view", T0 + 4, NULL); /* inside the same batch: granted now */
	assert_int_equal(stored_events("flip"), 3);
	sx_store_rollback(f->e.store, sp);
	sx_store_req_end(f->e.store);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&out);
	assert_int_equal(sx_privacy_allowed("flip", 4, SX_PURPOSE_ANALYTICS), 0);
	track(f, "flip", "view", T0 + 5, NULL);
	assert_int_equal(stored_events("flip"), 2);
	day_counter(f, "view", 0, &count, &users);
	assert_true(count == 4 && users == 1);

	/* granted again for good */
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"flip\", \"purposes\": {\"analytics\": true}}"), 0);
	track(f, "flip", "view", T0 + 6, NULL);
	assert_int_equal(stored_events("flip"), 3);
	/* erasure deletes the consent record: the default (allowed) applies afresh */
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"flip\", \"purposes\": {\"analytics\": false}}"), 0);
	track(f, "flip", "view", T0 + 7, NULL);
	assert_int_equal(stored_events("flip"), 3);
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"flip\"}"), 0);
	track(f, "flip", "view", T0 + 8, NULL);
	assert_int_equal(stored_events("flip"), 1);
}

static void test_consent_default_deny(void **state)
{
	struct sxt_engine *f = *state;
	assert_int_equal(sx_privacy_allowed("anyone", 6, SX_PURPOSE_ANALYTICS), 0);
	track(f, "anyone", "view", T0, NULL);
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"anyone\"}"), SX_ENOENT);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"anyone\", \"purposes\": {\"analytics\": true}}"), 0);
	assert_false(get_bool(&f->res, "purposes.personalization.granted"));
	assert_int_equal(sx_privacy_allowed("anyone", 6, SX_PURPOSE_ANALYTICS), 1);
	assert_int_equal(sx_privacy_allowed_index(0, SX_PURPOSE_ANALYTICS), 0); /* no such index */
	track(f, "anyone", "view", T0, NULL);
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"anyone\"}"), 0);
	assert_int_equal(sx_privacy_allowed_index((uint32_t)get_int(&f->res, "index"), SX_PURPOSE_ANALYTICS), 1);
}

static void test_retention_expiry_in_chunks(void **state)
{
	struct sxt_engine *f = *state;
	for (int i = 0; i < 5; i++)
		track(f, "u", "view", T0 + i, NULL);
	track(f, "u", "view", T0 + 10 * DAY, NULL);
	sxt_sync(f);
	uint32_t n;
	assert_int_equal(sx_events_expire(T0 + DAY, 2, &n), 1);
	assert_int_equal(n, 2);
	assert_int_equal(sx_events_expire(T0 + DAY, 2, &n), 1);
	assert_int_equal(n, 2);
	assert_int_equal(sx_events_expire(T0 + DAY, 2, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(sx_events_expire(T0 + DAY, 2, &n), 0);
	assert_int_equal(n, 0);
	sxt_sync(f);
	assert_int_equal(sxt_call(f, "users.events", "{\"id\": \"u\"}"), 0);
	assert_int_equal(get(&f->res, "events")->via.array.size, 1);
	uint64_t count, users;
	day_counter(f, "view", 0, &count, &users); /* aggregates stay */
	assert_int_equal(count, 5);
	assert_int_equal(users, 1);
	MDB_txn *txn;
	MDB_stat st;
	assert_int_equal(sx_store_rtxn_begin(f->e.store, &txn), 0);
	assert_int_equal(mdb_stat(txn, sx_store_dbi(f->e.store, SX_T_EVENTS_BY_TIME), &st), 0);
	assert_int_equal(st.ms_entries, 1);
	sx_store_rtxn_end(f->e.store, txn);
}

static void test_audit_log(void **state)
{
	struct sxt_engine *f = *state;
	struct obj {
		msgpack_sbuffer sb;
		msgpack_packer pk;
	} o;
	msgpack_sbuffer_init(&o.sb);
	msgpack_packer_init(&o.pk, &o.sb, msgpack_sbuffer_write);
	msgpack_pack_map(&o.pk, 1);
	sx_pack_kv_str(&o.pk, "model", "als-3");
	for (int i = 0; i < 5; i++)
		assert_int_equal(sx_audit_record_packed(&f->e, i % 2 ? "model.promote" : "experiment.edit", o.sb.data, o.sb.size), 0);
	msgpack_sbuffer_destroy(&o.sb);
	assert_int_equal(sx_audit_record(&f->e, "x", NULL), 0);
	assert_int_equal(sx_audit_record_packed(&f->e, "", NULL, 0), SX_EINVAL);
	assert_int_equal(sx_audit_record_packed(&f->e, "bad", "\x91\x01", 2), SX_EINVAL);
	sxt_sync(f);
	assert_int_equal(sxt_call(f, "audit.query", "{\"limit\": 2}"), 0);
	assert_int_equal(get(&f->res, "entries")->via.array.size, 2);
	const msgpack_object *cur = get(&f->res, "cursor");
	assert_int_equal(cur->type, MSGPACK_OBJECT_STR);
	char buf[128];
	snprintf(buf, sizeof(buf), "{\"limit\": 10, \"cursor\": \"%.*s\"}", (int)cur->via.str.size, cur->via.str.ptr);
	assert_int_equal(sxt_call(f, "audit.query", buf), 0);
	assert_int_equal(get(&f->res, "entries")->via.array.size, 4);
	assert_int_equal(get(&f->res, "cursor")->type, MSGPACK_OBJECT_NIL);
	assert_int_equal(sxt_call(f, "audit.query", "{\"action\": \"model.promote\"}"), 0);
	const msgpack_object *es = get(&f->res, "entries");
	assert_int_equal(es->via.array.size, 2);
	assert_true(sx_obj_streq(get(&es->via.array.ptr[0], "detail.model"), "als-3"));
	int64_t t = get_int(&es->via.array.ptr[0], "time");
	snprintf(buf, sizeof(buf), "{\"from\": %lld, \"to\": %lld}", (long long)t + 3600000, (long long)t + 7200000);
	assert_int_equal(sxt_call(f, "audit.query", buf), 0);
	assert_int_equal(get(&f->res, "entries")->via.array.size, 0);
	assert_int_equal(sxt_call(f, "audit.query", "{\"limit\": 0}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "audit.query", "{\"cursor\": \"zz\"}"), SX_EINVAL);
	assert_int_equal(sxt_call(f, "audit.query", "{\"from\": 10, \"to\": 5}"), SX_EINVAL);
}

static void test_pseudonymous_ids(void **state)
{
	struct sxt_engine *f = *state;
	char buf[SX_PRIVACY_ID_BUF], buf2[SX_PRIVACY_ID_BUF];
	size_t n, n2;
	const char *p = sx_privacy_user_id("alice", 5, buf, &n);
	assert_int_equal(n, 64);
	assert_ptr_equal(p, buf);
	sx_privacy_user_id("alice", 5, buf2, &n2);
	assert_string_equal(buf, buf2);
	sx_privacy_user_id("alicf", 5, buf2, &n2);
	assert_string_not_equal(buf, buf2);
	assert_int_equal(sxt_call(f, "users.put", "{\"id\": \"alice\", \"attributes\": {\"a\": 1}}"), 0);
	track(f, "alice", "view", T0, NULL);
	assert_int_equal(sxt_call(f, "users.get", "{\"id\": \"alice\"}"), 0);
	const msgpack_object *id = get(&f->res, "id");
	assert_int_equal(id->via.str.size, 64);
	assert_memory_equal(id->via.str.ptr, buf, 64);
	assert_int_equal(get_int(&f->res, "index"), 0);
	assert_int_equal(sxt_call(f, "consent.set", "{\"user\": \"alice\", \"purposes\": {\"notifications\": false}}"), 0);
	assert_int_equal(sx_privacy_allowed(buf, 64, SX_PURPOSE_NOTIFICATIONS), 0);
	sxt_sync(f);
	assert_int_equal(traces(f, "alice", 99), 0); /* the raw id is nowhere */
	assert_int_equal(sxt_call(f, "privacy.export", "{\"user\": \"alice\"}"), 0);
	assert_int_equal(get(&f->res, "events.events")->via.array.size, 1);
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"alice\"}"), 0);
	assert_int_equal(get_int(&f->res, "removed.events"), 1);
	sxt_sync(f);
	assert_int_equal(traces(f, buf, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_diag_set_may_wrap_its_last_message),
		cmocka_unit_test_setup_teardown(test_erase_leaves_no_trace_in_any_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_erasers_join_the_erasure_and_can_fail_it, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_holds_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_analytics_consent_counts_anonymously, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_consent_follows_changes_and_undo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consent_default_deny, setup_deny, teardown),
		cmocka_unit_test_setup_teardown(test_retention_expiry_in_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pseudonymous_ids, setup_pseudo, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
