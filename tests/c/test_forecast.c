/* Forecast error tracking's pure parts: folding errors into sums, the
 * metrics read from them, their codec, the alert rules and the recipe's
 * `actual` table. Expected values are worked out by hand in the comments. */
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

static void close_to(double got, double want)
{
	if (!(fabs(got - want) <= 1e-12 * (1 + fabs(want))))
		fail_msg("got %.17g, want %.17g", got, want);
}

static void test_fold_and_stats(void **state)
{
	(void)state;
	struct sx_pred_ferr e;
	struct sx_pred_ferr_stats s;
	memset(&e, 0, sizeof(e));
	/* (actual, forecast, lo, hi) */
	sx__pred_ferr_add(&e, 10, 8, 5, 11);  /* |e| 2, APE 0.2, sAPE 4/18, covered */
	sx__pred_ferr_add(&e, 0, 1, -1, 3);   /* |e| 1, no APE, sAPE 2, covered */
	sx__pred_ferr_add(&e, 4, 6, 4.5, 7);  /* |e| 2, APE 0.5, sAPE 4/10, below lo */
	sx__pred_ferr_add(&e, 0, 0, 0, 0);    /* |e| 0, no APE, sAPE 0 (a = f = 0), covered (bounds inclusive) */
	sx__pred_ferr_add(&e, -5, -4, -6, -4); /* |e| 1, APE 0.2, sAPE 2/9, covered (hi inclusive) */
	assert_int_equal(e.n, 5);
	assert_int_equal(e.n_ape, 3);
	assert_int_equal(e.covered, 4);
	sx__pred_ferr_stats(&e, &s);
	close_to(s.mape, 100 * (0.2 + 0.5 + 0.2) / 3);
	close_to(s.smape, 100 * (4.0 / 18 + 2 + 0.4 + 0 + 2.0 / 9) / 5);
	close_to(s.mae, (2 + 1 + 2 + 0 + 1) / 5.0);
	close_to(s.rmse, sqrt((4 + 1 + 4 + 0 + 1) / 5.0));
	close_to(s.bias, (-2 + 1 + 2 + 0 + 1) / 5.0);
	close_to(s.coverage, 0.8);

	/* merging two halves equals folding everything into one */
	struct sx_pred_ferr a, b;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	sx__pred_ferr_add(&a, 10, 8, 5, 11);
	sx__pred_ferr_add(&a, 0, 1, -1, 3);
	sx__pred_ferr_add(&b, 4, 6, 4.5, 7);
	sx__pred_ferr_add(&b, 0, 0, 0, 0);
	sx__pred_ferr_add(&b, -5, -4, -6, -4);
	sx__pred_ferr_merge(&a, &b);
	assert_memory_equal(&a, &e, sizeof(e));

	/* empty: everything unknown; only zero actuals: MAPE unknown, the rest known */
	memset(&e, 0, sizeof(e));
	sx__pred_ferr_stats(&e, &s);
	assert_true(isnan(s.mape) && isnan(s.smape) && isnan(s.mae) && isnan(s.rmse) && isnan(s.coverage));
	sx__pred_ferr_add(&e, 0, 2, 1, 3);
	sx__pred_ferr_stats(&e, &s);
	assert_true(isnan(s.mape));
	close_to(s.smape, 200);
	close_to(s.mae, 2);
	close_to(s.coverage, 0);
}

static void test_codec(void **state)
{
	(void)state;
	struct sx_pred_ferr e, d;
	uint8_t buf[SX_PRED_FERR_BYTES];
	memset(&e, 0, sizeof(e));
	for (int i = 0; i < 50; i++)
		sx__pred_ferr_add(&e, i % 7, 3.25 + 0.1 * i, 1, 5);
	sx__pred_ferr_encode(&e, buf);
	memset(&d, 0xff, sizeof(d));
	assert_int_equal(sx__pred_ferr_decode(&d, buf, sizeof(buf)), 0);
	assert_memory_equal(&d, &e, sizeof(e));
	assert_int_equal(sx__pred_ferr_decode(&d, buf, sizeof(buf) - 1), SX_ECORRUPT);
	buf[1] = 9;
	assert_int_equal(sx__pred_ferr_decode(&d, buf, sizeof(buf)), SX_ECORRUPT);
	buf[1] = 1;
	buf[10 + 7] = 200; /* n_ape > n */
	assert_int_equal(sx__pred_ferr_decode(&d, buf, sizeof(buf)), SX_ECORRUPT);
}

/* n periods of actual 100 forecast at 100 * (1 + err), inside [0, hi]. */
static void fill(struct sx_pred_ferr *e, int n, double err, double hi)
{
	memset(e, 0, sizeof(*e));
	for (int i = 0; i < n; i++)
		sx__pred_ferr_add(e, 100, 100 * (1 + err), 0, hi);
}

static void test_rules(void **state)
{
	(void)state;
	struct sx_pred_ferr cur, base;
	double v, t, b;
	struct sx_pred_frule r = {20, 0, 0, 10, 30, 90};
	fill(&cur, 9, 0.25, 1000);
	assert_int_equal(sx__pred_frule_check(&r, &cur, NULL, &v, &t, &b), -1); /* 9 < min_samples */
	fill(&cur, 10, 0.25, 1000);
	assert_int_equal(sx__pred_frule_check(&r, &cur, NULL, &v, &t, &b), 1);
	close_to(v, 25);
	close_to(t, 20);
	assert_true(isnan(b));
	fill(&cur, 10, 0.15, 1000);
	assert_int_equal(sx__pred_frule_check(&r, &cur, NULL, &v, &t, &b), 0);
	close_to(v, 15);

	/* rise: MAPE 15 against a baseline of 4 */
	struct sx_pred_frule rr = {0, 10, 0, 10, 30, 90};
	fill(&base, 10, 0.04, 1000);
	assert_int_equal(sx__pred_frule_check(&rr, &cur, &base, &v, &t, &b), 2);
	close_to(b, 4);
	close_to(t, 14);
	fill(&base, 10, 0.06, 1000); /* a rise of 9 */
	assert_int_equal(sx__pred_frule_check(&rr, &cur, &base, &v, &t, &b), 0);
	fill(&base, 3, 0.01, 1000); /* baseline below min_samples: no rise rule */
	assert_int_equal(sx__pred_frule_check(&rr, &cur, &base, &v, &t, &b), 0);
	assert_true(isnan(b));

	/* coverage: the actual 100 against intervals [0, 99] (missed) and [0, 110] */
	struct sx_pred_frule rc = {0, 0, 0.9, 10, 30, 90};
	fill(&cur, 10, 0.15, 99); /* actual 100 above hi 99: coverage 0 */
	assert_int_equal(sx__pred_frule_check(&rc, &cur, NULL, &v, &t, &b), 3);
	close_to(v, 0);
	close_to(t, 0.9);
	fill(&cur, 10, 0.15, 110);
	assert_int_equal(sx__pred_frule_check(&rc, &cur, NULL, &v, &t, &b), 0);

	/* all actuals zero: MAPE unknown, the MAPE rule cannot fire */
	memset(&cur, 0, sizeof(cur));
	for (int i = 0; i < 10; i++)
		sx__pred_ferr_add(&cur, 0, 5, 0, 10);
	assert_int_equal(sx__pred_frule_check(&r, &cur, NULL, &v, &t, &b), 0);
	assert_true(isnan(v));
}

static int parse(const char *json_like_keys[], const char *vals[], int n, int64_t now, struct sx_pred_fspec *sp)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (size_t)n);
	for (int i = 0; i < n; i++) {
		msgpack_pack_str(&pk, strlen(json_like_keys[i]));
		msgpack_pack_str_body(&pk, json_like_keys[i], strlen(json_like_keys[i]));
		if (!strcmp(json_like_keys[i], "origin"))
			msgpack_pack_int64(&pk, strtoll(vals[i], NULL, 10));
		else {
			msgpack_pack_str(&pk, strlen(vals[i]));
			msgpack_pack_str_body(&pk, vals[i], strlen(vals[i]));
		}
	}
	msgpack_zone_init(&z, 1024);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	int rc = sx__pred_fspec_parse(&o, now, sp);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void test_spec(void **state)
{
	(void)state;
	struct sx_pred_fspec sp;
	int64_t now = 19723LL * DAY + 13 * 3600000LL + 5; /* 2024-01-01T13:00:00.005Z */
	const char *k1[] = {"event"}, *v1[] = {"book"};
	assert_int_equal(parse(k1, v1, 1, now, &sp), 0);
	assert_string_equal(sp.event, "book");
	assert_string_equal(sp.group_by, "");
	assert_string_equal(sp.field, "count");
	assert_int_equal(sp.period, DAY);
	assert_int_equal(sp.origin, 19723LL * DAY);

	const char *k2[] = {"event", "group_by", "field", "period"}, *v2[] = {"book", "destination", "sum", "hour"};
	assert_int_equal(parse(k2, v2, 4, now, &sp), 0);
	assert_string_equal(sp.group_by, "destination");
	assert_string_equal(sp.field, "sum");
	assert_int_equal(sp.period, 3600000);
	assert_int_equal(sp.origin, 19723LL * DAY + 13 * 3600000LL);

	const char *k3[] = {"event", "period", "origin"}, *v3[] = {"book", "week", "1704153600000"}; /* a Tuesday 00:00 */
	assert_int_equal(parse(k3, v3, 3, now, &sp), 0);
	assert_int_equal(sp.period, 7 * DAY);
	assert_int_equal(sp.origin, 1704153600000LL);

	const char *bad_v[][2] = {{"*", "day"}, {"", "day"}, {"book", "fortnight"}};
	const char *kb[] = {"event", "period"};
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(parse(kb, bad_v[i], 2, now, &sp), SX_EINVAL);
	const char *kf[] = {"event", "field"}, *vf[] = {"book", "median"};
	assert_int_equal(parse(kf, vf, 2, now, &sp), SX_EINVAL);
	const char *ko[] = {"event", "origin"}, *vo[] = {"book", "1704153600001"}; /* not on an hour */
	assert_int_equal(parse(ko, vo, 2, now, &sp), SX_EINVAL);
	const char *ku[] = {"event", "colour"}, *vu[] = {"book", "red"};
	assert_int_equal(parse(ku, vu, 2, now, &sp), SX_EINVAL);
	const char *kn[] = {"group_by"}, *vn[] = {"destination"};
	assert_int_equal(parse(kn, vn, 1, now, &sp), SX_EINVAL);
	assert_int_equal(sx__pred_fspec_parse(NULL, now, &sp), SX_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fold_and_stats),
		cmocka_unit_test(test_codec),
		cmocka_unit_test(test_rules),
		cmocka_unit_test(test_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
