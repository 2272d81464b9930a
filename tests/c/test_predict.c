/* The predict plugin's pure parts: summary windows, sessions and spend,
 * label construction, holdout hashing, frequency caps, risk bands. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "core/sx.h"
#include "plugins/predict/internal.h"

#define DAY SX_PRED_DAY_MS
#define T0 (19723LL * DAY) /* 2024-01-01T00:00Z */

static void add(struct sx_pred_sum *s, const struct sx_pred_conf *c, const char *name, int64_t t, double value)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (!isnan(value)) {
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str(&pk, 5);
		msgpack_pack_str_body(&pk, "value", 5);
		msgpack_pack_double(&pk, value);
	}
	assert_int_equal(sx__pred_sum_add(s, c, name, strlen(name), t, isnan(value) ? NULL : sb.data, sb.size), 0);
	msgpack_sbuffer_destroy(&sb);
}

static void test_windows(void **state)
{
	(void)state;
	struct sx_pred_conf c;
	struct sx_pred_sum s;
	struct sx_pred_view v;
	sx__pred_conf_default(&c);
	sx__pred_sum_init(&s);
	int64_t at = T0 + 100 * DAY + 12 * 3600000LL; /* noon, day 100 */
	add(&s, &c, "search", at - 60000, NAN);             /* today */
	add(&s, &c, "search", at - 6 * DAY, NAN);           /* 6 days back: in 7d */
	add(&s, &c, "view", at - 7 * DAY, NAN);             /* 7 days back: out of 7d, in 30d */
	add(&s, &c, "create_trip", at - 29 * DAY, NAN);     /* in 30d */
	add(&s, &c, "book", at - 30 * DAY, 120.5);          /* out of 30d, in 90d */
	add(&s, &c, "book", at - 89 * DAY, 10);             /* in 90d */
	add(&s, &c, "book", at - 95 * DAY, 1000);           /* only in the totals */
	sx__pred_sum_view(&s, at, &v);
	/* events sessions searches trips bookings spend */
	assert_true(v.win[0][0] == 2 && v.win[1][0] == 4 && v.win[2][0] == 6 && v.total[0] == 7);
	assert_true(v.win[0][2] == 2 && v.win[1][2] == 2 && v.total[2] == 2);
	assert_true(v.win[0][3] == 0 && v.win[1][3] == 1 && v.total[3] == 1);
	assert_true(v.win[1][4] == 0 && v.win[2][4] == 2 && v.total[4] == 3);
	assert_true(fabs(v.win[2][5] - 130.5) < 1e-4 && fabs(v.total[5] - 1130.5) < 1e-9);
	assert_true(fabs(v.days_since_last - 60000.0 / DAY) < 1e-12);
	assert_true(fabs(v.days_since_first - 95) < 1e-12 && fabs(v.days_since_signup - 95) < 1e-12);
	/* seen from an earlier time, later days do not count in the windows */
	sx__pred_sum_view(&s, at - 20 * DAY, &v);
	assert_true(v.win[0][0] == 0 && v.win[1][0] == 2 && v.win[2][0] == 4);
	/* a signup time takes precedence over the first event */
	s.signup = at - 200 * DAY;
	sx__pred_sum_view(&s, at, &v);
	assert_true(fabs(v.days_since_signup - 200) < 1e-12);
	sx__pred_sum_free(&s);
}

static void test_sessions_and_pruning(void **state)
{
	(void)state;
	struct sx_pred_conf c;
	struct sx_pred_sum s;
	struct sx_pred_view v;
	sx__pred_conf_default(&c);
	sx__pred_sum_init(&s);
	int64_t t = T0 + 12 * 3600000LL;
	add(&s, &c, "view", t, NAN);
	add(&s, &c, "view", t + 29 * 60000, NAN);  /* same session */
	add(&s, &c, "view", t + 60 * 60000, NAN);  /* 31 min later: a new one */
	add(&s, &c, "view", t + 10 * 60000, NAN);  /* late arrival: never a new session */
	assert_int_equal(s.sessions, 2);
	assert_int_equal(s.events, 4);
	/* buckets further back than SX_PRED_KEEP_DAYS behind the newest are dropped */
	add(&s, &c, "view", t + 400 * DAY, NAN);
	assert_int_equal(s.nd, 1);
	add(&s, &c, "view", t + 10 * DAY, NAN); /* too old for a bucket: totals only */
	assert_int_equal(s.nd, 1);
	assert_int_equal(s.events, 6);
	sx__pred_sum_view(&s, t + 400 * DAY, &v);
	assert_true(v.win[2][0] == 1 && v.total[0] == 6);
	/* many days in arbitrary order stay sorted */
	struct sx_pred_sum s2;
	sx__pred_sum_init(&s2);
	for (int i = 0; i < 50; i++)
		add(&s2, &c, "view", T0 + (int64_t)((i * 37) % 50) * DAY, NAN);
	assert_int_equal(s2.nd, 50);
	for (uint32_t i = 1; i < s2.nd; i++)
		assert_true(s2.d[i - 1].day < s2.d[i].day);
	sx__pred_sum_free(&s2);
	sx__pred_sum_free(&s);
}

static int feed(struct sx_pred_label *l, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct sx_event ev = {0};
		ev.name = names[i], ev.name_len = strlen(names[i]);
		if (sx__pred_label_cb(&ev, l) == 1)
			break;
	}
	return sx__pred_label_value(l);
}

static void test_labels(void **state)
{
	(void)state;
	struct sx_pred_target trip = {"trip_14d", "create_trip", 14, 0};
	struct sx_pred_target churn = {"churn_60d", "*", 60, 1};
	const char *some[] = {"view", "search", "create_trip", "view"};
	const char *none[] = {"view", "create_tripx", "book"};
	struct sx_pred_label l = {&trip, 0};
	assert_int_equal(feed(&l, some, 4), 1);
	l = (struct sx_pred_label){&trip, 0};
	assert_int_equal(feed(&l, none, 3), 0);
	/* churn: no event at all in the window */
	l = (struct sx_pred_label){&churn, 0};
	assert_int_equal(feed(&l, NULL, 0), 1);
	l = (struct sx_pred_label){&churn, 0};
	assert_int_equal(feed(&l, none, 1), 0);
}

static void test_holdout(void **state)
{
	(void)state;
	char id[32];
	int in = 0, again = 0, other = 0, both = 0;
	for (int i = 0; i < 20000; i++) {
		snprintf(id, sizeof(id), "user%d", i);
		int h = sx__pred_holdout("inspiration", id, strlen(id), 0.1);
		int o = sx__pred_holdout("winback", id, strlen(id), 0.1);
		in += h, other += o, both += h && o;
		again += h == sx__pred_holdout("inspiration", id, strlen(id), 0.1);
		assert_int_equal(sx__pred_holdout("inspiration", id, strlen(id), 0), 0);
	}
	assert_int_equal(again, 20000);                 /* deterministic */
	assert_true(in > 1800 && in < 2200);              /* about 10% */
	assert_true(other > 1800 && other < 2200);
	assert_true(both > 100 && both < 300);            /* independent per rule: about 1% */
	/* a larger share keeps everyone who was in a smaller one */
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "user%d", i);
		if (sx__pred_holdout("inspiration", id, strlen(id), 0.1))
			assert_int_equal(sx__pred_holdout("inspiration", id, strlen(id), 0.3), 1);
	}
}

static void test_cap_and_band(void **state)
{
	(void)state;
	int64_t now = T0 + 100 * DAY;
	int64_t times[] = {now - 8 * DAY, now - 6 * DAY, now - DAY};
	assert_int_equal(sx__pred_cap_ok(NULL, 0, now, 1, 7 * DAY), 1);
	assert_int_equal(sx__pred_cap_ok(times, 1, now, 1, 7 * DAY), 1);  /* 8 days ago: outside */
	assert_int_equal(sx__pred_cap_ok(times, 2, now, 1, 7 * DAY), 0);
	assert_int_equal(sx__pred_cap_ok(times, 3, now, 2, 7 * DAY), 0);
	assert_int_equal(sx__pred_cap_ok(times, 3, now, 3, 7 * DAY), 1);
	assert_int_equal(sx__pred_cap_ok(times, 3, now, 1, DAY / 2), 1);
	assert_string_equal(sx__pred_band(0.1, 0.3, 0.6), "low");
	assert_string_equal(sx__pred_band(0.3, 0.3, 0.6), "medium");
	assert_string_equal(sx__pred_band(0.6, 0.3, 0.6), "high");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_windows),
		cmocka_unit_test(test_sessions_and_pruning),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_holdout),
		cmocka_unit_test(test_cap_and_band),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
