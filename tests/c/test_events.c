/* The events plugin: key encodings, bucket and period arithmetic, counter and
 * bitmap records, value validation, and the C API of events.h over a real store
 * (loop-thread reads and read transactions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/events/internal.h"
#include "store/store.h"

#include "engine_fixture.h"

#define DAY 86400000LL
#define HOUR 3600000LL
#define MINUTE 60000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z, a Monday */

/* ---- pure pieces ---- */

static void test_event_keys_sort_by_user_time_seq(void **state)
{
	uint8_t a[SX_EV_EVKEY], b[SX_EV_EVKEY], c[SX_EV_EVKEY], d[SX_EV_EVKEY];
	(void)state;
	sx__ev_event_key(a, 1, T0, 5);
	sx__ev_event_key(b, 1, T0, 6);
	sx__ev_event_key(c, 1, T0 + 1, 0);
	sx__ev_event_key(d, 2, 0, 0);
	assert_true(memcmp(a, b, SX_EV_EVKEY) < 0);
	assert_true(memcmp(b, c, SX_EV_EVKEY) < 0);
	assert_true(memcmp(c, d, SX_EV_EVKEY) < 0);
	assert_int_equal(sx_get_be32(a), 1);
	assert_int_equal((int64_t)sx_get_be64(a + 4), T0);
	assert_int_equal(sx_get_be64(a + 12), 5);
	uint8_t t1[SX_EV_TKEY], t2[SX_EV_TKEY];
	sx__ev_time_key(t1, 255, 1000);
	sx__ev_time_key(t2, 256, 0);
	assert_true(memcmp(t1, t2, SX_EV_TKEY) < 0);
}

static void test_metric_keys(void **state)
{
	uint8_t k[512], p[512];
	(void)state;
	size_t n = sx__ev_metric_key(k, SX_EV_HOUR, "book", 4, "item.country", 12, T0, "FR", 2);
	size_t pl = sx__ev_metric_prefix(p, SX_EV_HOUR, "book", 4, "item.country", 12);
	assert_int_equal(pl, 2 + 4 + 1 + 12 + 1);
	assert_int_equal(n, pl + 8 + 2);
	assert_memory_equal(k, p, pl);
	assert_memory_equal(k, "Mhbook\0item.country\0", pl);
	assert_int_equal((int64_t)sx_get_be64(k + pl), T0);
	assert_memory_equal(k + pl + 8, "FR", 2);
	/* a later bucket of any value sorts after every value of an earlier bucket */
	uint8_t k2[512];
	size_t n2 = sx__ev_metric_key(k2, SX_EV_HOUR, "book", 4, "item.country", 12, T0 + HOUR, "", 0);
	assert_true(memcmp(k, k2, n < n2 ? n : n2) < 0);
	/* no dimension: the prefix ends in two NULs, and "book" does not prefix "booking" */
	n = sx__ev_metric_key(k, SX_EV_DAY, "book", 4, "", 0, T0, "", 0);
	assert_int_equal(n, 2 + 4 + 2 + 8);
	n2 = sx__ev_metric_prefix(k2, SX_EV_DAY, "booking", 7, "", 0);
	assert_true(memcmp(k, k2, 7) != 0);
	/* too long for an LMDB key */
	char big[600];
	memset(big, 'x', sizeof(big));
	assert_int_equal(sx__ev_metric_key(k, SX_EV_DAY, big, 128, big, 64, T0, big, 400), 0);
	assert_true(sx__ev_metric_key(k, SX_EV_DAY, big, 128, big, 64, T0, big, 200) > 0);
}

static void test_bucket_arithmetic(void **state)
{
	(void)state;
	assert_int_equal(sx__ev_gran_ms(SX_EV_MINUTE), MINUTE);
	assert_int_equal(sx__ev_gran_ms(SX_EV_HOUR), HOUR);
	assert_int_equal(sx__ev_gran_ms(SX_EV_DAY), DAY);
	assert_int_equal(sx__ev_floor(T0 + 59999, MINUTE), T0);
	assert_int_equal(sx__ev_floor(T0 + 60000, MINUTE), T0 + MINUTE);
	assert_int_equal(sx__ev_floor(T0 + 3 * HOUR + 1, DAY), T0);
	assert_int_equal(sx__ev_floor(-1, DAY), -DAY);
	assert_int_equal(sx__ev_floor(-DAY, DAY), -DAY);
	assert_int_equal(sx__ev_gran_parse("minute", 6), SX_EV_MINUTE);
	assert_int_equal(sx__ev_gran_parse("week", 4), 0);
	assert_int_equal(sx__ev_period_parse("month", 5), SX_EV_PMONTH);
	assert_int_equal(sx__ev_period_parse("mon", 3), -1);
}

static void test_periods(void **state)
{
	(void)state;
	/* weeks start on Monday: 2024-01-07 (Sunday) belongs to the week of 2024-01-01 */
	assert_int_equal(sx__ev_period_start(SX_EV_PWEEK, T0 + 6 * DAY + 23 * HOUR), T0);
	assert_int_equal(sx__ev_period_start(SX_EV_PWEEK, T0 + 7 * DAY), T0 + 7 * DAY);
	assert_int_equal(sx__ev_period_start(SX_EV_PWEEK, T0 - 1), T0 - 7 * DAY);
	/* 1970-01-01 was a Thursday: its week starts 1969-12-29 */
	assert_int_equal(sx__ev_period_start(SX_EV_PWEEK, 0), -3 * DAY);
	assert_int_equal(sx__ev_period_start(SX_EV_PDAY, T0 + 5), T0);
	/* months: 2024 is a leap year (Feb 29 days) */
	int64_t feb1 = T0 + 31 * DAY, mar1 = feb1 + 29 * DAY;
	assert_int_equal(sx__ev_period_start(SX_EV_PMONTH, mar1 - 1), feb1);
	assert_int_equal(sx__ev_period_start(SX_EV_PMONTH, mar1), mar1);
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, T0, 1), feb1);
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, T0, 2), mar1);
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, T0, 12), T0 + 366 * DAY);
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, T0, -1), T0 - 31 * DAY); /* 2023-12-01 */
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, T0, -13), T0 - 396 * DAY); /* 2022-12-01 */
	assert_int_equal(sx__ev_period_add(SX_EV_PWEEK, T0, 3), T0 + 21 * DAY);
	/* 2000-02-29 exists (divisible by 400), 1900 had none: 1900-03-01 is 28 days after 1900-02-01 */
	int64_t y2000 = 946684800000LL;
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, y2000, 2) - sx__ev_period_add(SX_EV_PMONTH, y2000, 1),
			 29 * DAY);
	int64_t feb1900 = -2206310400000LL; /* 1900-02-01 */
	assert_int_equal(sx__ev_period_add(SX_EV_PMONTH, feb1900, 1) - feb1900, 28 * DAY);
}

static void test_counter_records_round_trip_and_merge(void **state)
{
	(void)state;
	struct sx_ev_counter c = {3, 2, 12.5, roaring_bitmap_create()}, m = {0};
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	roaring_bitmap_add(c.users, 7);
	roaring_bitmap_add(c.users, 1000000);
	roaring_bitmap_add_range(c.users, 100, 5000);
	assert_int_equal(sx__ev_counter_encode(&c, &sb), 0);
	assert_int_equal(sx__ev_counter_merge(&m, sb.data, sb.size), 0);
	assert_int_equal(m.count, 3);
	assert_int_equal(m.nsum, 2);
	assert_true(m.sum == 12.5);
	assert_true(roaring_bitmap_equals(m.users, c.users));
	/* merging again adds the counts and ors the users */
	struct sx_ev_counter d = {1, 1, 0.5, roaring_bitmap_create()};
	roaring_bitmap_add(d.users, 8);
	assert_int_equal(sx__ev_counter_encode(&d, &sb), 0);
	assert_int_equal(sx__ev_counter_merge(&m, sb.data, sb.size), 0);
	assert_int_equal(m.count, 4);
	assert_true(m.sum == 13.0);
	assert_int_equal(roaring_bitmap_get_cardinality(m.users), 4900 + 3);
	/* an empty bitmap is stored as an empty bin */
	struct sx_ev_counter e = {1, 0, 0, NULL}, f = {0};
	assert_int_equal(sx__ev_counter_encode(&e, &sb), 0);
	assert_int_equal(sx__ev_counter_merge(&f, sb.data, sb.size), 0);
	assert_null(f.users);
	assert_int_equal(f.count, 1);
	/* garbage does not decode */
	assert_int_equal(sx__ev_counter_merge(&f, "\x93\x01\x02\x03", 4), SX_ECORRUPT);
	assert_int_equal(sx__ev_counter_merge(&f, "\x94\x01\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc4\x03" "abc", 16),
			 SX_ECORRUPT);
	/* bitmaps alone */
	assert_int_equal(sx__ev_bitmap_encode(c.users, &sb), 0);
	roaring_bitmap_t *b = sx__ev_bitmap_decode(sb.data, sb.size);
	assert_non_null(b);
	assert_true(roaring_bitmap_equals(b, c.users));
	roaring_bitmap_free(b);
	assert_null(sx__ev_bitmap_decode(sb.data, sb.size - 1));
	assert_null(sx__ev_bitmap_decode("\x01\x02\x03\x04\x05", 5));
	roaring_bitmap_free(c.users);
	roaring_bitmap_free(d.users);
	roaring_bitmap_free(m.users);
	msgpack_sbuffer_destroy(&sb);
}

/* Packs a Python-ish literal built with the helpers below into an object in zone. */
struct obj {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone zone;
	msgpack_object o;
};

static void obj_begin(struct obj *o)
{
	msgpack_sbuffer_init(&o->sb);
	msgpack_packer_init(&o->pk, &o->sb, msgpack_sbuffer_write);
	msgpack_zone_init(&o->zone, 1024);
}

static const msgpack_object *obj_end(struct obj *o)
{
	assert_int_equal(sx__ev_unpack(o->sb.data, o->sb.size, &o->zone, &o->o), 0);
	return &o->o;
}

static void obj_free(struct obj *o)
{
	msgpack_zone_destroy(&o->zone);
	msgpack_sbuffer_destroy(&o->sb);
}

static void test_value_checks(void **state)
{
	struct obj o;
	(void)state;
	obj_begin(&o);
	msgpack_pack_map(&o.pk, 1);
	sx_pack_str(&o.pk, "a");
	msgpack_pack_array(&o.pk, 2);
	msgpack_pack_int(&o.pk, 1);
	msgpack_pack_double(&o.pk, 0.0 / 0.0);
	assert_int_equal(sx__ev_check_value(obj_end(&o), "p", 1000), SX_EINVAL);
	assert_non_null(strstr(sx_diag_last(), "NaN"));
	obj_free(&o);

	obj_begin(&o);
	for (int i = 0; i < 9; i++) {
		msgpack_pack_map(&o.pk, 1);
		sx_pack_str(&o.pk, "k");
	}
	msgpack_pack_int(&o.pk, 1);
	assert_int_equal(sx__ev_check_value(obj_end(&o), "p", 1000), SX_EINVAL);
	assert_non_null(strstr(sx_diag_last(), "deeper"));
	obj_free(&o);

	obj_begin(&o);
	msgpack_pack_map(&o.pk, 1);
	msgpack_pack_int(&o.pk, 1);
	msgpack_pack_int(&o.pk, 1);
	assert_int_equal(sx__ev_check_value(obj_end(&o), "p", 1000), SX_EINVAL);
	obj_free(&o);

	obj_begin(&o);
	msgpack_pack_map(&o.pk, 1);
	sx_pack_str(&o.pk, "k");
	sx_pack_strn(&o.pk, "\xc3\x28", 2);
	assert_int_equal(sx__ev_check_value(obj_end(&o), "p", 1000), SX_EINVAL);
	obj_free(&o);

	obj_begin(&o);
	msgpack_pack_map(&o.pk, 2);
	sx_pack_kv_str(&o.pk, "country", "FR");
	sx_pack_kv_double(&o.pk, "price", 12.5);
	assert_int_equal(sx__ev_check_value(obj_end(&o), "p", 1000), 0);
	assert_int_equal(sx__ev_check_value(&o.o, "p", 10), SX_EINVAL);
	obj_free(&o);

	obj_begin(&o);
	sx_pack_str(&o.pk, "");
	assert_int_equal(sx__ev_check_id(obj_end(&o), "id"), SX_EINVAL);
	obj_free(&o);
	obj_begin(&o);
	sx_pack_strn(&o.pk, "a\0b", 3);
	assert_int_equal(sx__ev_check_id(obj_end(&o), "id"), SX_EINVAL);
	obj_free(&o);
	assert_int_equal(sx__ev_check_id(NULL, "id"), SX_EINVAL);
}

/* ---- the C API over a real store ---- */

static int setup_store(void **state)
{
	struct sxt_engine *f = calloc(1, sizeof(*f));
	sxt_init(f, "events", 0);
	sxt_open(f);
	*state = f;
	return 0;
}

static int teardown_store(void **state)
{
	sxt_free(*state);
	free(*state);
	return 0;
}

static void track(struct sx_ev_batch *b, const char *user, const char *name, int64_t t, const char *item,
		  double value)
{
	struct obj o;
	obj_begin(&o);
	msgpack_pack_map(&o.pk, 4 + (item != NULL));
	sx_pack_kv_str(&o.pk, "user", user);
	sx_pack_kv_str(&o.pk, "name", name);
	sx_pack_kv_int(&o.pk, "time", t);
	if (item)
		sx_pack_kv_str(&o.pk, "item", item);
	sx_pack_key(&o.pk, "properties");
	msgpack_pack_map(&o.pk, 1);
	sx_pack_kv_double(&o.pk, "value", value);
	assert_int_equal(sx__ev_batch_add(b, obj_end(&o), 0), 0);
	obj_free(&o);
}

struct seen {
	int n;
	int64_t times[16];
	uint32_t users[16];
	char names[16][16];
};

static int seen_cb(const struct sx_event *ev, void *ud)
{
	struct seen *s = ud;
	assert_true(s->n < 16);
	s->times[s->n] = ev->time;
	s->users[s->n] = ev->user;
	snprintf(s->names[s->n], sizeof(s->names[0]), "%.*s", (int)ev->name_len, ev->name);
	s->n++;
	return 0;
}

static void load(struct sxt_engine *f)
{
	struct sx_ev_batch *b = sx__ev_batch_new();
	assert_non_null(b);
	track(b, "u0", "view", T0 + 2 * HOUR, "d1", 1);
	track(b, "u1", "view", T0 + HOUR, NULL, 2);
	track(b, "u0", "book", T0 + HOUR + 30 * MINUTE, "d1", 100);
	track(b, "u0", "view", T0 + DAY + 5, NULL, 3);
	track(b, "u2", "book", T0 + 10 * MINUTE, NULL, 50);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	/* a bad event stores nothing and says why */
	b = sx__ev_batch_new();
	struct obj o;
	obj_begin(&o);
	msgpack_pack_map(&o.pk, 2);
	sx_pack_kv_str(&o.pk, "user", "u9");
	sx_pack_kv_int(&o.pk, "name", 3);
	assert_int_equal(sx__ev_batch_add(b, obj_end(&o), 0), SX_EINVAL);
	obj_free(&o);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	struct sx_item it;
	msgpack_object attrs;
	obj_begin(&o);
	msgpack_pack_map(&o.pk, 1);
	sx_pack_kv_str(&o.pk, "country", "IT");
	attrs = *obj_end(&o);
	float vec[3] = {0.5f, -1.0f, 3.25f};
	assert_int_equal(sx__ev_item_put("d1", 2, SX_ITEM_DESTINATION, &attrs, vec, 3), 0);
	assert_int_equal(sx__ev_item_put("t1", 2, SX_ITEM_TRIP, NULL, NULL, 0), 0);
	obj_free(&o);
	assert_int_equal(sx_events_item_get(NULL, "d1", 2, &it), 0);
	(void)f;
}

static void check_reads(MDB_txn *txn)
{
	uint32_t u0, u1, u2;
	char id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	assert_int_equal(sx_events_user_index(txn, "u0", 2, &u0), 0);
	assert_int_equal(sx_events_user_index(txn, "u1", 2, &u1), 0);
	assert_int_equal(sx_events_user_index(txn, "u2", 2, &u2), 0);
	assert_int_equal(u0, 0);
	assert_int_equal(u1, 1);
	assert_int_equal(u2, 2);
	assert_int_equal(sx_events_user_index(txn, "u9", 2, &u0), SX_ENOENT);
	assert_int_equal(sx_events_user_id(txn, 1, id, sizeof(id), &len), 0);
	assert_string_equal(id, "u1");
	assert_int_equal(sx_events_user_id(txn, 7, id, sizeof(id), &len), SX_ENOENT);
	int64_t first;
	assert_int_equal(sx_events_user_first_seen(txn, 0, &first), 0);
	assert_int_equal(first, T0 + HOUR + 30 * MINUTE);

	struct seen s = {0};
	assert_int_equal(sx_events_user_scan(txn, 0, 0, SX_EVENTS_TIME_MAX, 0, seen_cb, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.names[0], "book");
	assert_int_equal(s.times[0], T0 + HOUR + 30 * MINUTE);
	assert_int_equal(s.times[1], T0 + 2 * HOUR);
	assert_int_equal(s.times[2], T0 + DAY + 5);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sx_events_user_scan(txn, 0, 0, SX_EVENTS_TIME_MAX, 1, seen_cb, &s), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.times[0], T0 + DAY + 5);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sx_events_user_scan(txn, 0, T0 + 2 * HOUR, T0 + DAY + 5, 0, seen_cb, &s), 0);
	assert_int_equal(s.n, 1);

	memset(&s, 0, sizeof(s));
	assert_int_equal(sx_events_range_scan(txn, T0, T0 + DAY, seen_cb, &s), 0);
	assert_int_equal(s.n, 4);
	int64_t want_t[] = {T0 + 10 * MINUTE, T0 + HOUR, T0 + HOUR + 30 * MINUTE, T0 + 2 * HOUR};
	uint32_t want_u[] = {2, 1, 0, 0};
	for (int i = 0; i < 4; i++) {
		assert_int_equal(s.times[i], want_t[i]);
		assert_int_equal(s.users[i], want_u[i]);
	}

	roaring_bitmap_t *b = sx_events_users_did(txn, "view", T0, T0 + DAY);
	assert_non_null(b);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 2);
	assert_true(roaring_bitmap_contains(b, 0) && roaring_bitmap_contains(b, 1));
	roaring_bitmap_free(b);
	/* minute resolution at ragged edges: [T0+1h01, T0+1h31) holds u0's book only */
	b = sx_events_users_did(txn, "book", T0 + HOUR + MINUTE, T0 + HOUR + 31 * MINUTE);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 1);
	assert_true(roaring_bitmap_contains(b, 0));
	roaring_bitmap_free(b);
	b = sx_events_users_did(txn, "book", T0 + HOUR + MINUTE, T0 + HOUR + 30 * MINUTE);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 0);
	roaring_bitmap_free(b);
	b = sx_events_users_did(txn, "*", T0 - DAY, T0 + 3 * DAY);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 3);
	roaring_bitmap_free(b);
	b = sx_events_users_first_seen(txn, T0, T0 + DAY);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 3);
	roaring_bitmap_free(b);
	b = sx_events_users_first_seen(txn, T0 + DAY, T0 + 2 * DAY);
	assert_int_equal(roaring_bitmap_get_cardinality(b), 0);
	roaring_bitmap_free(b);

	struct sx_item it;
	float v[4] = {0};
	assert_int_equal(sx_events_item_get(txn, "d1", 2, &it), 0);
	assert_int_equal(it.kind, SX_ITEM_DESTINATION);
	assert_int_equal(sx_item_vector(&it, v, 4), 3);
	assert_true(v[0] == 0.5f && v[1] == -1.0f && v[2] == 3.25f);
	assert_non_null(it.attrs);
	assert_int_equal(sx_events_item_get(txn, "t1", 2, &it), 0);
	assert_null(it.vector);
	assert_null(it.attrs);
	assert_int_equal(sx_events_item_get(txn, "zz", 2, &it), SX_ENOENT);
	assert_null(sx_events_cohort_users(txn, "nope", 4));
	assert_int_equal(sx_diag_last_code(), SX_ENOENT);
}

static void test_api_on_the_loop_thread(void **state)
{
	struct sxt_engine *f = *state;
	load(f);
	check_reads(NULL); /* reads see the batch before it commits */
	assert_int_equal(sx_events_user_bound(), 3);
	sxt_sync(f);
}

static void test_api_in_a_read_transaction(void **state)
{
	struct sxt_engine *f = *state;
	MDB_txn *txn;
	load(f);
	sxt_sync(f);
	assert_int_equal(sx_store_rtxn_begin(f->e.store, &txn), 0);
	check_reads(txn);
	sx_store_rtxn_end(f->e.store, txn);
}

static void test_first_seen_moves_back_and_bitmaps_persist(void **state)
{
	struct sxt_engine *f = *state;
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "late", "view", T0 + 3 * DAY, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	b = sx__ev_batch_new();
	track(b, "late", "view", T0 + DAY, NULL, 1); /* an older event arrives later */
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	int64_t first;
	assert_int_equal(sx_events_user_first_seen(NULL, 0, &first), 0);
	assert_int_equal(first, T0 + DAY);
	roaring_bitmap_t *d1 = sx_events_users_first_seen(NULL, T0 + DAY, T0 + 2 * DAY),
			 *d3 = sx_events_users_first_seen(NULL, T0 + 3 * DAY, T0 + 4 * DAY);
	assert_int_equal(roaring_bitmap_get_cardinality(d1), 1);
	assert_int_equal(roaring_bitmap_get_cardinality(d3), 0);
	roaring_bitmap_free(d1);
	roaring_bitmap_free(d3);
	/* the day counter of "view" holds both events and one user */
	uint8_t k[512];
	struct sx_val v;
	size_t n = sx__ev_metric_key(k, SX_EV_DAY, "view", 4, "", 0, T0 + DAY, "", 0);
	assert_int_equal(sx_store_get(f->e.store, SX_T_COUNTERS, k, n, &v), 0);
	struct sx_ev_counter c = {0};
	assert_int_equal(sx__ev_counter_merge(&c, v.data, v.len), 0);
	assert_int_equal(c.count, 1);
	assert_int_equal(roaring_bitmap_get_cardinality(c.users), 1);
	roaring_bitmap_free(c.users);
}


/* ---- the caches kept across batches (users' indexes, counter records) ---- */

/* The day counter of `name` holding t: count and distinct users (0, 0 if absent). */
static void day_counter(struct sxt_engine *f, const char *name, int64_t t, uint64_t *count, uint64_t *users)
{
	uint8_t k[512];
	struct sx_val v;
	size_t n = sx__ev_metric_key(k, SX_EV_DAY, name, strlen(name), "", 0, sx__ev_floor(t, DAY), "", 0);
	*count = *users = 0;
	int rc = sx_store_get(f->e.store, SX_T_COUNTERS, k, n, &v);
	if (rc == SX_ENOENT)
		return;
	assert_int_equal(rc, 0);
	struct sx_ev_counter c = {0};
	assert_int_equal(sx__ev_counter_merge(&c, v.data, v.len), 0);
	*count = c.count;
	*users = c.users ? roaring_bitmap_get_cardinality(c.users) : 0;
	if (c.users)
		roaring_bitmap_free(c.users);
}

/* The index of user id, checked against the index -> id table. */
static uint32_t user_index_checked(const char *id)
{
	uint32_t idx;
	char back[SX_EVENTS_ID_MAX + 1];
	assert_int_equal(sx_events_user_index(NULL, id, strlen(id), &idx), 0);
	assert_int_equal(sx_events_user_id(NULL, idx, back, sizeof(back), NULL), 0);
	assert_string_equal(back, id);
	return idx;
}

/* What the batch that new users and an older event of "a" were in leaves
 * behind once it is undone: nothing. */
static void check_undone(struct sxt_engine *f)
{
	uint32_t idx;
	int64_t first;
	uint64_t count, users;
	assert_int_equal(sx_events_user_index(NULL, "b", 1, &idx), SX_ENOENT);
	assert_int_equal(sx_events_user_first_seen(NULL, user_index_checked("a"), &first), 0);
	assert_int_equal(first, T0);
	day_counter(f, "view", T0, &count, &users);
	assert_true(count == 1 && users == 1);
	day_counter(f, "view", T0 - DAY, &count, &users);
	assert_true(count == 0 && users == 0);

	/* the same users again: "b" is new once more, counts are exact */
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "b", "view", T0 + 1, NULL, 1);
	track(b, "a", "view", T0 + 2, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	uint32_t bi = user_index_checked("b");
	assert_int_equal(sx_events_user_first_seen(NULL, bi, &first), 0);
	assert_int_equal(first, T0 + 1);
	assert_int_equal(sx_events_user_first_seen(NULL, user_index_checked("a"), &first), 0);
	assert_int_equal(first, T0);
	day_counter(f, "view", T0, &count, &users);
	assert_true(count == 3 && users == 2);
	struct seen s = {0};
	assert_int_equal(sx_events_user_scan(NULL, bi, 0, SX_EVENTS_TIME_MAX, 0, seen_cb, &s), 0);
	assert_int_equal(s.n, 1);
	roaring_bitmap_t *fs = sx_events_users_first_seen(NULL, T0 - DAY, T0 + DAY);
	assert_int_equal(roaring_bitmap_get_cardinality(fs), 2);
	roaring_bitmap_free(fs);
}

/* The batch of "b" (new) and an older event of "a": new user, first seen moved,
 * counters of two days touched. */
static void track_then_undo_batch(void)
{
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "b", "view", T0 + 5, NULL, 1);
	track(b, "a", "view", T0 - DAY, NULL, 1);
	track(b, "a", "view", T0 + 6, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	uint32_t idx;
	assert_int_equal(sx_events_user_index(NULL, "b", 1, &idx), 0); /* visible until undone */
}

static void test_rollback_forgets_cached_users_and_counters(void **state)
{
	struct sxt_engine *f = *state;
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "a", "view", T0, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	uint64_t sp = sx_store_savepoint(f->e.store);
	track_then_undo_batch();
	sx_store_rollback(f->e.store, sp); /* as the server does when the request fails */
	check_undone(f);
}

static int fails;

static void count_fail_cb(uint64_t seq, int rc, void *ud)
{
	(void)seq, (void)ud;
	fails += rc < 0;
}

static int setup_small_store(void **state)
{
	struct sxt_engine *f = calloc(1, sizeof(*f));
	sxt_init(f, "events", 0);
	struct sx_store_opts o = {.relaxed = 1, .map_size = 1 << 20, .max_map_size = 1 << 20,
				  .commit_cb = count_fail_cb, .ud = f};
	sxt_open_with(f, NULL, &o);
	fails = 0;
	*state = f;
	return 0;
}

static void test_failed_batch_forgets_cached_users_and_counters(void **state)
{
	struct sxt_engine *f = *state;
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "a", "view", T0, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	assert_int_equal(fails, 0);
	track_then_undo_batch();
	/* more than the map may ever hold: the writer fails the whole batch */
	size_t big = 2 << 20;
	char *v = calloc(1, big);
	assert_int_equal(sx_store_put(f->e.store, SX_T_KV, "big", 3, v, big), 0);
	free(v);
	sxt_sync(f);
	assert_int_equal(fails, 1);
	check_undone(f);
	assert_int_equal(fails, 1);
}

static void restart(struct sxt_engine *f, const char *dir)
{
	sxt_stop(f);
	sxt_open_with(f, dir, NULL);
}

static void test_restart_keeps_indexes_and_counts(void **state)
{
	struct sxt_engine *f = *state;
	uint64_t count, users;
	int64_t first;
	struct sx_ev_batch *b = sx__ev_batch_new();
	track(b, "r1", "view", T0, NULL, 1);
	track(b, "r2", "view", T0 + 1, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);

	/* another store first: nothing of the first may leak into it */
	char other[160];
	snprintf(other, sizeof(other), "%s/other", f->dir);
	restart(f, other);
	b = sx__ev_batch_new();
	track(b, "r2", "view", T0 + 2, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	assert_int_equal(user_index_checked("r2"), 0);
	assert_int_equal(sx_events_user_first_seen(NULL, 0, &first), 0);
	assert_int_equal(first, T0 + 2);
	day_counter(f, "view", T0, &count, &users);
	assert_true(count == 1 && users == 1);

	restart(f, f->dir);
	b = sx__ev_batch_new();
	track(b, "r3", "view", T0 + 3, NULL, 1);
	track(b, "r1", "view", T0 - 1, NULL, 1);
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	assert_int_equal(user_index_checked("r1"), 0);
	assert_int_equal(user_index_checked("r2"), 1);
	assert_int_equal(user_index_checked("r3"), 2);
	assert_int_equal(sx_events_user_first_seen(NULL, 0, &first), 0);
	assert_int_equal(first, T0 - 1);
	day_counter(f, "view", T0, &count, &users);
	assert_true(count == 3 && users == 3);
	day_counter(f, "view", T0 - 1, &count, &users);
	assert_true(count == 1 && users == 1);
}

/* Many batches over the same counters: the cached records and the stored ones agree. */
static void test_cached_counters_match_the_store(void **state)
{
	struct sxt_engine *f = *state;
	char id[16];
	for (int round = 0; round < 5; round++) {
		struct sx_ev_batch *b = sx__ev_batch_new();
		for (int i = 0; i < 200; i++) {
			snprintf(id, sizeof(id), "c%d", (i * 7 + round * 13) % 150);
			track(b, id, i % 2 ? "view" : "book", T0 + (int64_t)(i % 5) * HOUR, NULL, 1);
		}
		assert_int_equal(sx__ev_batch_finish(b), 0);
		if (round % 2)
			sxt_sync(f);
	}
	sxt_sync(f);
	uint64_t count, users;
	day_counter(f, "view", T0, &count, &users);
	assert_int_equal(count, 500);
	day_counter(f, "*", T0, &count, &users);
	assert_int_equal(count, 1000);
	assert_int_equal(users, 150);
	MDB_txn *txn;
	assert_int_equal(sx_store_rtxn_begin(f->e.store, &txn), 0);
	roaring_bitmap_t *v = sx_events_users_did(txn, "view", T0, T0 + DAY);
	roaring_bitmap_t *bk = sx_events_users_did(txn, "book", T0, T0 + HOUR);
	sx_store_rtxn_end(f->e.store, txn);
	/* view: odd i, (7i + 13r) mod 150 over r in 0..4 */
	roaring_bitmap_t *want = roaring_bitmap_create(), *want_bk = roaring_bitmap_create();
	for (int round = 0; round < 5; round++)
		for (int i = 0; i < 200; i++) {
			snprintf(id, sizeof(id), "c%d", (i * 7 + round * 13) % 150);
			uint32_t idx;
			assert_int_equal(sx_events_user_index(NULL, id, strlen(id), &idx), 0);
			if (i % 2)
				roaring_bitmap_add(want, idx);
			else if (i % 5 == 0)
				roaring_bitmap_add(want_bk, idx);
		}
	assert_true(roaring_bitmap_equals(v, want));
	assert_true(roaring_bitmap_equals(bk, want_bk));
	roaring_bitmap_free(v);
	roaring_bitmap_free(bk);
	roaring_bitmap_free(want);
	roaring_bitmap_free(want_bk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_keys_sort_by_user_time_seq),
		cmocka_unit_test(test_metric_keys),
		cmocka_unit_test(test_bucket_arithmetic),
		cmocka_unit_test(test_periods),
		cmocka_unit_test(test_counter_records_round_trip_and_merge),
		cmocka_unit_test(test_value_checks),
		cmocka_unit_test_setup_teardown(test_api_on_the_loop_thread, setup_store, teardown_store),
		cmocka_unit_test_setup_teardown(test_api_in_a_read_transaction, setup_store, teardown_store),
		cmocka_unit_test_setup_teardown(test_first_seen_moves_back_and_bitmaps_persist, setup_store,
						teardown_store),
		cmocka_unit_test_setup_teardown(test_rollback_forgets_cached_users_and_counters, setup_store,
						teardown_store),
		cmocka_unit_test_setup_teardown(test_failed_batch_forgets_cached_users_and_counters,
						setup_small_store, teardown_store),
		cmocka_unit_test_setup_teardown(test_restart_keeps_indexes_and_counts, setup_store, teardown_store),
		cmocka_unit_test_setup_teardown(test_cached_counters_match_the_store, setup_store, teardown_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
