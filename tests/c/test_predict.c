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

/* Accuracy histograms against hand-computed values. */
static void test_acc_auc_lift_calibration(void **state)
{
	(void)state;
	struct sx_pred_acc a, b;
	memset(&a, 0, sizeof(a));
	/* positives 0.37, 0.81; negatives 0.15, 0.42, 0.66: 4 of 6 pairs in order */
	const double p[5] = {0.15, 0.42, 0.37, 0.81, 0.66};
	const int y[5] = {0, 0, 1, 1, 0};
	for (int i = 0; i < 5; i++)
		sx__pred_acc_add(&a, p[i], y[i]);
	assert_true(fabs(sx__pred_acc_auc(&a) - 4.0 / 6.0) < 1e-15);
	uint64_t n, pos;
	double sump;
	sx__pred_acc_totals(&a, &n, &pos, &sump);
	assert_true(n == 5 && pos == 2 && fabs(sump - 2.41) < 1e-12);
	/* log loss and Brier sums */
	double ll = 0, br = 0;
	for (int i = 0; i < 5; i++)
		ll += y[i] ? -log(p[i]) : -log(1 - p[i]), br += (p[i] - y[i]) * (p[i] - y[i]);
	assert_true(fabs(a.ll - ll) < 1e-12 && fabs(a.brier - br) < 1e-12);
	/* calibration in 2 bins: [0, .5) holds .15 .42 .37 (1 positive), [.5, 1] .81 .66 (1) */
	double mp[2], ob[2];
	uint64_t cnt[2];
	sx__pred_acc_calibration(&a, 2, mp, ob, cnt);
	assert_true(cnt[0] == 3 && cnt[1] == 2);
	assert_true(fabs(mp[0] - 0.94 / 3) < 1e-12 && fabs(ob[0] - 1.0 / 3) < 1e-12);
	assert_true(fabs(mp[1] - 1.47 / 2) < 1e-12 && fabs(ob[1] - 0.5) < 1e-12);
	/* one label only: no AUC */
	memset(&b, 0, sizeof(b));
	sx__pred_acc_add(&b, 0.3, 1);
	assert_true(isnan(sx__pred_acc_auc(&b)));
	/* a positive and a negative in one bin count half */
	memset(&b, 0, sizeof(b));
	sx__pred_acc_add(&b, 0.505, 1);
	sx__pred_acc_add(&b, 0.509, 0);
	assert_true(sx__pred_acc_auc(&b) == 0.5);
	/* bins: floor(p * 100), 1 in the last, out of range clamped */
	assert_int_equal(sx__pred_acc_bin(0), 0);
	assert_int_equal(sx__pred_acc_bin(0.0099), 0);
	assert_int_equal(sx__pred_acc_bin(0.01), 1);
	assert_int_equal(sx__pred_acc_bin(1), 99);
	assert_int_equal(sx__pred_acc_bin(-1), 0);
	assert_int_equal(sx__pred_acc_bin(NAN), 0);
	/* lift: 20 scores, the top 2 positive, 3 more at the bottom: (2/2) / (5/20) = 4 */
	memset(&b, 0, sizeof(b));
	for (int i = 0; i < 20; i++)
		sx__pred_acc_add(&b, i / 20.0 + 0.01, i >= 18 || i < 3);
	assert_true(fabs(sx__pred_acc_lift(&b, 0.1) - 4) < 1e-12);
	/* the cut inside a bin takes it in proportion: all in one bin gives 1 */
	memset(&b, 0, sizeof(b));
	for (int i = 0; i < 10; i++)
		sx__pred_acc_add(&b, 0.42, i % 2);
	assert_true(fabs(sx__pred_acc_lift(&b, 0.1) - 1) < 1e-12);
	/* merging is adding */
	struct sx_pred_acc m = a;
	sx__pred_acc_merge(&m, &a);
	assert_true(fabs(sx__pred_acc_auc(&m) - 4.0 / 6.0) < 1e-15);
	sx__pred_acc_totals(&m, &n, &pos, NULL);
	assert_true(n == 10 && pos == 4);
}

static void test_acc_codec(void **state)
{
	(void)state;
	struct sx_pred_acc a, b;
	uint8_t buf[SX_PRED_ACC_BYTES];
	memset(&a, 0, sizeof(a));
	for (int i = 0; i < 1000; i++)
		sx__pred_acc_add(&a, (i * 37 % 1000) / 1000.0, i % 3 == 0);
	sx__pred_acc_encode(&a, buf);
	assert_int_equal(sx__pred_acc_decode(&b, buf, sizeof(buf)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(sx__pred_acc_decode(&b, buf, sizeof(buf) - 1), SX_ECORRUPT);
	buf[1] = 9;
	assert_int_equal(sx__pred_acc_decode(&b, buf, sizeof(buf)), SX_ECORRUPT);
}

static void fill(struct sx_pred_acc *a, int n, int good)
{
	/* good: positives score high (AUC 1); else alternating (AUC 0.5) */
	memset(a, 0, sizeof(*a));
	for (int i = 0; i < n; i++) {
		int y = i % 2;
		sx__pred_acc_add(a, good ? (y ? 0.9 : 0.1) : 0.5, y);
	}
}

static void test_alert_rules(void **state)
{
	(void)state;
	struct sx_pred_acc cur, base;
	double v, th, bl;
	struct sx_pred_rule r = {0.7, 10, 0, 30, 90};
	fill(&cur, 8, 0);
	assert_int_equal(sx__pred_rule_check(&r, &cur, NULL, &v, &th, &bl), -1); /* too few */
	fill(&cur, 20, 0);
	assert_int_equal(sx__pred_rule_check(&r, &cur, NULL, &v, &th, &bl), 1);
	assert_true(v == 0.5 && th == 0.7);
	fill(&cur, 20, 1);
	assert_int_equal(sx__pred_rule_check(&r, &cur, NULL, &v, &th, &bl), 0);
	/* drop: baseline 1.0, now 0.5: fires past a drop of 0.2 */
	struct sx_pred_rule d = {0, 10, 0.2, 30, 90};
	fill(&cur, 20, 0);
	fill(&base, 20, 1);
	assert_int_equal(sx__pred_rule_check(&d, &cur, &base, &v, &th, &bl), 2);
	assert_true(v == 0.5 && bl == 1 && fabs(th - 0.8) < 1e-15);
	/* no drop past 0.6; a thin baseline is ignored */
	d.drop = 0.6;
	assert_int_equal(sx__pred_rule_check(&d, &cur, &base, &v, &th, &bl), 0);
	d.drop = 0.2;
	fill(&base, 4, 1);
	assert_int_equal(sx__pred_rule_check(&d, &cur, &base, &v, &th, &bl), 0);
	assert_true(isnan(bl));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_windows),
		cmocka_unit_test(test_sessions_and_pruning),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_holdout),
		cmocka_unit_test(test_cap_and_band),
		cmocka_unit_test(test_acc_auc_lift_calibration),
		cmocka_unit_test(test_acc_codec),
		cmocka_unit_test(test_alert_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
