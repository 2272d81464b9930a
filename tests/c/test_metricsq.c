/* Live metrics answers against brute force over a real store: metrics.query
 * (per point from the bitmaps' headers, totals from unions of the covering
 * records) and metrics.active, before and after a privacy erasure and a
 * rolled-back request; and the in-place record reader on every encoding a
 * counter record may have. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "core/config.h"
#include "core/plugin.h"
#include "core/json.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/events/internal.h"
#include "store/store.h"

#include "engine_fixture.h"

#define MINUTE 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */

/* ---- serialized bitmaps and records ---- */

static void check_card(roaring_bitmap_t *b, int optimize)
{
	if (optimize)
		roaring_bitmap_run_optimize(b);
	size_t n = roaring_bitmap_portable_size_in_bytes(b);
	char *p = malloc(n + 1);
	roaring_bitmap_portable_serialize(b, p);
	uint64_t card = 12345;
	assert_int_equal(sx__ev_bitmap_card(p, n, &card), 0);
	assert_int_equal(card, roaring_bitmap_get_cardinality(b));
	assert_int_equal(sx__ev_bitmap_card(p, n - 1, &card), SX_ECORRUPT);
	p[n] = 0;
	assert_int_equal(sx__ev_bitmap_card(p, n + 1, &card), SX_ECORRUPT);
	free(p);
}

static void test_cardinality_from_the_header(void **state)
{
	(void)state;
	uint64_t card = 1;
	assert_int_equal(sx__ev_bitmap_card("", 0, &card), 0);
	assert_int_equal(card, 0);
	assert_int_equal(sx__ev_bitmap_card("\x01\x02\x03\x04\x05", 5, &card), SX_ECORRUPT);
	for (int opt = 0; opt < 2; opt++) {
		roaring_bitmap_t *b = roaring_bitmap_create();
		roaring_bitmap_add(b, 7);
		check_card(b, opt); /* one array container */
		roaring_bitmap_add_range(b, 70000, 70000 + 65536); /* two partial containers */
		check_card(b, opt);
		roaring_bitmap_add_range(b, 1u << 18, (1u << 18) + 65536); /* a full one: card - 1 = 0xffff */
		check_card(b, opt);
		for (uint32_t i = 0; i < 9000; i++)
			roaring_bitmap_add(b, 300000 + i * 3); /* a bitset container */
		check_card(b, opt);
		roaring_bitmap_add(b, UINT32_MAX); /* key 0xffff */
		check_card(b, opt); /* more than 4 containers: the run format has offsets */
		roaring_bitmap_free(b);
	}
	/* runs in fewer than 4 containers: no offsets */
	roaring_bitmap_t *b = roaring_bitmap_create();
	roaring_bitmap_add_range(b, 10, 50000);
	roaring_bitmap_add_range(b, 1u << 20, (1u << 20) + 3);
	check_card(b, 1);
	roaring_bitmap_free(b);
}

static void test_records_read_in_place(void **state)
{
	(void)state;
	struct sx_ev_counter c = {3, 2, 12.5, roaring_bitmap_create()};
	struct sx_ev_record r;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	roaring_bitmap_add_range(c.users, 100, 5000);
	roaring_bitmap_add(c.users, 1u << 30);
	assert_int_equal(sx__ev_counter_encode(&c, &sb), 0);
	assert_int_equal(sx__ev_counter_peek(sb.data, sb.size, &r), 0);
	assert_int_equal(r.count, 3);
	assert_int_equal(r.nsum, 2);
	assert_true(r.sum == 12.5);
	assert_int_equal(r.users, 4901);
	roaring_bitmap_t *b = sx__ev_bitmap_decode(r.bitmap, r.blen);
	assert_true(b && roaring_bitmap_equals(b, c.users));
	roaring_bitmap_free(b);
	assert_int_equal(sx__ev_counter_peek(sb.data, sb.size - 1, &r), SX_ECORRUPT);

	/* other encoders' forms of the numbers: int8, float32, u16, nil; an empty bin */
	struct sx_ev_counter m = {0};
	assert_int_equal(sx__ev_counter_peek("\x94\xd0\x05\xca\x3f\xc0\x00\x00\xcd\x01\x00\xc4\x00", 13, &r), 0);
	assert_true(r.count == 5 && r.sum == 1.5 && r.nsum == 256 && r.users == 0 && r.blen == 0);
	assert_int_equal(sx__ev_counter_merge(&m, "\x94\xd0\x05\xca\x3f\xc0\x00\x00\xcd\x01\x00\xc4\x00", 13), 0);
	assert_true(m.count == 5 && m.sum == 1.5 && m.nsum == 256 && !m.users);
	assert_int_equal(sx__ev_counter_peek("\x94\xc0\xff\x01\xc4\x00", 6, &r), 0);
	assert_true(r.count == 0 && r.sum == -1 && r.nsum == 1);
	assert_int_equal(sx__ev_counter_peek("\xdc\x00\x04\x01\x02\x03\xc4\x00", 8, &r), 0);
	assert_true(r.count == 1 && r.sum == 2 && r.nsum == 3);
	/* not a record */
	static const struct {
		const char *p;
		size_t n;
	} bad[] = {
		{"", 0},
		{"\x93\x01\x02\x03", 4},
		{"\x95\x01\x02\x03\xc4\x00\x00", 7},
		{"\x94\x01\x02\x03\xa0", 5},           /* a string where the bitmap goes */
		{"\x94\x01\x02\x03\xc4\x00\x00", 7},   /* a byte after the record */
		{"\x94\x01\x02\x03\xc4\x05\x00", 7},   /* a bin longer than the record */
		{"\x94\xcf\x01\x02\x03\xc4\x00", 7},   /* a truncated u64 */
		{"\x94\x91\x01\x02\x03\xc4\x00", 7},   /* an array where the count goes */
		{"\x94\x01\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc4\x03" "abc", 16},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(sx__ev_counter_peek(bad[i].p, bad[i].n, &r), SX_ECORRUPT);
		assert_int_equal(sx__ev_counter_merge(&m, bad[i].p, bad[i].n), SX_ECORRUPT);
	}
	roaring_bitmap_free(c.users);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- an engine, methods called as the server does ---- */

static int setup(void **state)
{
	struct sxt_engine *f = calloc(1, sizeof(*f));
	sxt_init(f, "metrics", 1);
	sxt_open(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	sxt_free(*state);
	free(*state);
	return 0;
}

static uint64_t uint_at(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = sx__ev_map_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		fail_msg("no unsigned '%s' in the result", key);
	return v->via.u64;
}

static double num_at(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = sx__ev_map_get(map, key);
	if (v && (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32))
		return v->via.f64;
	return (double)uint_at(map, key);
}

/* ---- the world: events kept here too, to count by brute force ---- */

#define NUSERS 40
#define NEVENTS 1500
static const char *const names[] = {"view", "book"};
static const char *const devices[] = {"ios", "android", "web"};

struct ev {
	int user, name, device;
	int64_t t;
};

struct world {
	struct ev ev[NEVENTS + 64];
	int n;
	int erased[NUSERS];
};

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rnd(uint64_t n)
{
	rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
	return rng_state % n;
}

/* Tracks events [from, to) of w in one request (undone if undo). */
static void track_events(struct sxt_engine *f, const struct world *w, int from, int to, int undo)
{
	size_t cap = 256 + (size_t)(to - from) * 160, len = 0;
	char *buf = malloc(cap);
	len += (size_t)snprintf(buf, cap, "{\"events\": [");
	for (int i = from; i < to; i++) {
		const struct ev *e = &w->ev[i];
		len += (size_t)snprintf(buf + len, cap - len,
					"%s{\"user\": \"u%d\", \"name\": \"%s\", \"time\": %lld, "
					"\"properties\": {\"device\": \"%s\", \"value\": %d}}",
					i > from ? ", " : "", e->user, names[e->name], (long long)e->t,
					devices[e->device], e->user % 7);
	}
	snprintf(buf + len, cap - len, "]}");
	assert_int_equal(sxt_call_undo(f, "events.track", buf, undo), 0);
	assert_int_equal(uint_at(&f->res, "accepted"), (uint64_t)(to - from));
	free(buf);
}

/* Count, distinct users (erased ones left out) and sum of "value" of the events of name (-1:
 * any) and device (-1: any) in [from, to). */
static void brute(const struct world *w, int name, int device, int64_t from, int64_t to, uint64_t *count,
		  uint64_t *users, double *sum)
{
	int seen[NUSERS] = {0};
	*count = *users = 0;
	*sum = 0;
	for (int i = 0; i < w->n; i++) {
		const struct ev *e = &w->ev[i];
		if (e->t < from || e->t >= to || (name >= 0 && e->name != name) || (device >= 0 && e->device != device))
			continue;
		(*count)++;
		*sum += e->user % 7;
		if (!w->erased[e->user] && !seen[e->user])
			seen[e->user] = 1, (*users)++;
	}
}

/* Checks a series answer (a map with total and series) against brute force. */
static void check_series(const struct world *w, const msgpack_object *g, int name, int device, int64_t from,
			 int64_t step, size_t npoints)
{
	uint64_t count, users;
	double sum;
	const msgpack_object *total = sx__ev_map_get(g, "total"), *series = sx__ev_map_get(g, "series");
	assert_non_null(total);
	assert_true(series && series->type == MSGPACK_OBJECT_ARRAY);
	assert_int_equal(series->via.array.size, npoints);
	brute(w, name, device, from, from + (int64_t)npoints * step, &count, &users, &sum);
	assert_int_equal(uint_at(total, "count"), count);
	assert_int_equal(uint_at(total, "users"), users);
	if (name >= 0)
		assert_true(num_at(total, "sum") == sum);
	for (size_t i = 0; i < npoints; i++) {
		const msgpack_object *p = &series->via.array.ptr[i];
		int64_t t = from + (int64_t)i * step;
		brute(w, name, device, t, t + step, &count, &users, &sum);
		assert_int_equal(uint_at(p, "t"), (uint64_t)t);
		assert_int_equal(uint_at(p, "count"), count);
		assert_int_equal(uint_at(p, "users"), users);
		if (name >= 0)
			assert_true(num_at(p, "sum") == sum);
	}
}

static void query(struct sxt_engine *f, const char *event, int64_t from, int64_t to, const char *interval,
		  const char *extra)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "{\"event\": \"%s\", \"from\": %lld, \"to\": %lld, \"interval\": \"%s\"%s}", event,
		 (long long)from, (long long)to, interval, extra ? extra : "");
	assert_int_equal(sxt_call(f, "metrics.query", buf), 0);
}

static void check_all(struct sxt_engine *f, const struct world *w)
{
	/* hours with ragged ends: hours at the edges, days inside */
	int64_t from = T0 + 5 * HOUR + 17 * MINUTE, to = T0 + 2 * DAY + 7 * HOUR + 3 * MINUTE;
	for (int name = -1; name < 2; name++) {
		query(f, name < 0 ? "*" : names[name], from, to, "hour", NULL);
		check_series(w, &f->res, name, -1, T0 + 5 * HOUR, HOUR, 51);
	}
	/* minutes across midnight: minutes at the edges, an hour inside */
	query(f, "view", T0 + DAY - 70 * MINUTE - 5, T0 + DAY + 95 * MINUTE, "minute", NULL);
	check_series(w, &f->res, 0, -1, T0 + DAY - 71 * MINUTE, MINUTE, 166);
	/* minutes inside one hour */
	query(f, "view", T0 + 10 * HOUR + 3 * MINUTE, T0 + 10 * HOUR + 40 * MINUTE, "minute", NULL);
	check_series(w, &f->res, 0, -1, T0 + 10 * HOUR + 3 * MINUTE, MINUTE, 37);
	/* days; one hour (a single point) */
	query(f, "view", T0 - DAY, T0 + 4 * DAY, "day", NULL);
	check_series(w, &f->res, 0, -1, T0 - DAY, DAY, 5);
	query(f, "book", T0 + 30 * HOUR, T0 + 31 * HOUR, "hour", NULL);
	check_series(w, &f->res, 1, -1, T0 + 30 * HOUR, HOUR, 1);
	/* one dimension value, then every value */
	query(f, "view", from, to, "hour", ", \"where\": {\"device\": \"android\"}");
	check_series(w, &f->res, 0, 1, T0 + 5 * HOUR, HOUR, 51);
	for (int limit = 3; limit >= 2; limit--) {
		char extra[64];
		snprintf(extra, sizeof(extra), ", \"group_by\": \"device\", \"limit\": %d", limit);
		query(f, "view", from, to, "hour", extra);
		const msgpack_object *gs = sx__ev_map_get(&f->res, "groups");
		assert_true(gs && gs->type == MSGPACK_OBJECT_ARRAY);
		assert_int_equal(gs->via.array.size, (uint32_t)limit);
		for (uint32_t i = 0; i < gs->via.array.size; i++) {
			const msgpack_object *v = sx__ev_map_get(&gs->via.array.ptr[i], "value");
			assert_true(v && v->type == MSGPACK_OBJECT_STR);
			int d = 0;
			while (d < 3 && (strlen(devices[d]) != v->via.str.size ||
					 memcmp(devices[d], v->via.str.ptr, v->via.str.size)))
				d++;
			assert_true(d < 3);
			check_series(w, &gs->via.array.ptr[i], 0, d, T0 + 5 * HOUR, HOUR, 51);
		}
	}
	/* DAU, WAU, MAU on the last day and on a day with nothing after it */
	for (int64_t at = T0 + 2 * DAY + 5; at <= T0 + 9 * DAY; at += 7 * DAY) {
		char buf[128];
		snprintf(buf, sizeof(buf), "{\"window\": \"week\", \"at\": %lld}", (long long)at);
		assert_int_equal(sxt_call(f, "metrics.active", buf), 0);
		int64_t end = sx__ev_floor(at, DAY) + DAY;
		uint64_t count, dau, wau, mau;
		double sum;
		brute(w, -1, -1, end - DAY, end, &count, &dau, &sum);
		brute(w, -1, -1, end - 7 * DAY, end, &count, &wau, &sum);
		brute(w, -1, -1, end - 30 * DAY, end, &count, &mau, &sum);
		assert_int_equal(uint_at(&f->res, "dau"), dau);
		assert_int_equal(uint_at(&f->res, "wau"), wau);
		assert_int_equal(uint_at(&f->res, "mau"), mau);
		assert_int_equal(uint_at(&f->res, "active"), wau);
		assert_true(at > T0 + 3 * DAY || dau > 0);
	}
}

static void make_world(struct world *w)
{
	memset(w, 0, sizeof(*w));
	for (int i = 0; i < NEVENTS; i++) {
		struct ev *e = &w->ev[w->n++];
		e->user = (int)rnd(NUSERS);
		e->name = rnd(4) == 0;
		e->device = (int)((uint64_t)e->user % 3 + rnd(5) / 4) % 3;
		/* three days, some users only on one of them */
		e->t = T0 + (int64_t)rnd(3) * DAY + (int64_t)rnd(DAY);
		if (e->user < 5)
			e->t = T0 + DAY + 10 * HOUR + (int64_t)rnd(HOUR);
	}
}

static void test_answers_match_brute_force(void **state)
{
	struct sxt_engine *f = *state;
	static struct world w;
	make_world(&w);
	assert_int_equal(sxt_call(f, "metrics.dimensions", "{\"event\": \"view\", \"dimensions\": [\"device\"]}"), 0);
	for (int i = 0; i < w.n; i += 500)
		track_events(f, &w, i, i + 500 < w.n ? i + 500 : w.n, 0);
	check_all(f, &w); /* read-your-writes, before the commit */
	sxt_sync(f);
	check_all(f, &w);
}

static void test_exact_after_erasure_and_rollback(void **state)
{
	struct sxt_engine *f = *state;
	static struct world w;
	make_world(&w);
	assert_int_equal(sxt_call(f, "metrics.dimensions", "{\"event\": \"view\", \"dimensions\": [\"device\"]}"), 0);
	track_events(f, &w, 0, w.n, 0);
	sxt_sync(f);

	/* a user active in one hour, one active everywhere */
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"u2\"}"), 0);
	w.erased[2] = 1;
	assert_int_equal(sxt_call(f, "privacy.erase", "{\"user\": \"u11\"}"), 0);
	w.erased[11] = 1;
	check_all(f, &w);
	sxt_sync(f);
	check_all(f, &w);

	/* a request that tracked new users and old ones into the same buckets, undone */
	struct world extra = w;
	for (int i = 0; i < 40; i++) {
		struct ev *e = &extra.ev[extra.n++];
		e->user = i < 20 ? NUSERS - 1 - i : (int)rnd(NUSERS);
		if (w.erased[e->user])
			e->user = 0; /* an erased id tracked again is a new user */
		e->name = i % 2;
		e->device = i % 3;
		e->t = T0 + 20 * HOUR + (int64_t)i * 7 * MINUTE;
	}
	track_events(f, &extra, w.n, extra.n, 1);
	check_all(f, &w);
	sxt_sync(f);
	check_all(f, &w);
	/* then kept: counters cached before the undo are not reused */
	track_events(f, &extra, w.n, extra.n, 0);
	w = extra;
	check_all(f, &w);
	sxt_sync(f);
	check_all(f, &w);
}

static void test_corrupt_counter_fails_the_query(void **state)
{
	struct sxt_engine *f = *state;
	uint8_t k[512];
	assert_int_equal(sxt_call(f, "events.track", "{\"user\": \"a\", \"name\": \"view\", \"time\": 1704067200000}"), 0);
	assert_int_equal(sxt_call(f, "events.track", "{\"user\": \"b\", \"name\": \"view\", \"time\": 1704070800000}"), 0);
	query(f, "view", T0, T0 + 2 * HOUR, "hour", NULL);
	/* the bitmap's header says 2 containers, its bytes hold 1 */
	roaring_bitmap_t *b = roaring_bitmap_of(1, 5);
	char rec[64] = "\x94\x01\x00\x00\xc4";
	size_t bl = roaring_bitmap_portable_size_in_bytes(b);
	assert_true(bl + 6 <= sizeof(rec));
	rec[5] = (char)bl;
	roaring_bitmap_portable_serialize(b, rec + 6);
	roaring_bitmap_free(b);
	assert_int_equal(rec[10], 1);
	rec[10] = 2;
	size_t n = sx__ev_metric_key(k, SX_EV_HOUR, "view", 4, "", 0, T0 + HOUR, "", 0);
	assert_int_equal(sx_store_put(f->e.store, SX_T_COUNTERS, k, n, rec, bl + 6), 0);
	assert_int_equal(sxt_call(f, "metrics.query", "{\"event\": \"view\", \"from\": 1704067200000, "
				"\"to\": 1704074400000, \"interval\": \"hour\"}"), SX_ECORRUPT);
	/* a corrupt day record fails the union of a total */
	n = sx__ev_metric_key(k, SX_EV_DAY, "view", 4, "", 0, T0, "", 0);
	assert_int_equal(sx_store_put(f->e.store, SX_T_COUNTERS, k, n, "\x94\x02\x00\x00\xc4\x03" "abc", 9), 0);
	assert_int_equal(sxt_call(f, "metrics.active", "{\"at\": 1704067200000}"), 0);
	n = sx__ev_metric_key(k, SX_EV_DAY, "*", 1, "", 0, T0, "", 0);
	assert_int_equal(sx_store_put(f->e.store, SX_T_COUNTERS, k, n, "\x94\x02\x00\x00\xc4\x03" "abc", 9), 0);
	assert_int_equal(sxt_call(f, "metrics.active", "{\"at\": 1704067200000}"), SX_ECORRUPT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cardinality_from_the_header),
		cmocka_unit_test(test_records_read_in_place),
		cmocka_unit_test_setup_teardown(test_answers_match_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exact_after_erasure_and_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_counter_fails_the_query, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
