#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/math/metrics.h"
#include "core/sx.h"

static void near_at(double a, double b, int line)
{
	if (!(fabs(a - b) <= 1e-12 * (1 + fabs(b))))
		fail_msg("line %d: %.17g != %.17g", line, a, b);
}
#define near(a, b) near_at((a), (b), __LINE__)

static void test_ranking_hand_computed(void **state)
{
	(void)state;
	/* rel = {1, 3, 4}. Top 5 of rec: 5 3 9 3 1 -> hits at ranks 2 (3) and
	 * 5 (1); the second 3 at rank 4 is a repeat and does not count. */
	const int32_t rec[] = {5, 3, 9, 3, 1, 7};
	const int32_t rel[] = {1, 3, 4};
	near(sx_metrics_precision_at_k(rec, 6, rel, 3, 5), 2.0 / 5);
	near(sx_metrics_recall_at_k(rec, 6, rel, 3, 5), 2.0 / 3);
	/* DCG = 1/log2(3) + 1/log2(6); ideal: 3 hits at ranks 1..3. */
	near(sx_metrics_ndcg_at_k(rec, 6, rel, 3, 5),
	     (1 / log2(3) + 1 / log2(6)) / (1 + 1 / log2(3) + 1 / log2(4)));
	/* AP@5 = (1/2 + 2/5) / min(5, 3) = 0.3 */
	near(sx_metrics_map_at_k(rec, 6, rel, 3, 5), 0.3);

	/* k = 2: one hit at rank 2. */
	near(sx_metrics_precision_at_k(rec, 6, rel, 3, 2), 0.5);
	near(sx_metrics_recall_at_k(rec, 6, rel, 3, 2), 1.0 / 3);
	near(sx_metrics_ndcg_at_k(rec, 6, rel, 3, 2), (1 / log2(3)) / (1 + 1 / log2(3)));
	/* AP@2 = (1/2) / min(2, 3) */
	near(sx_metrics_map_at_k(rec, 6, rel, 3, 2), 0.25);

	/* Shorter list than k: precision still divides by k. */
	const int32_t one[] = {3};
	const int32_t rel3[] = {3};
	near(sx_metrics_precision_at_k(one, 1, rel3, 1, 10), 0.1);
	near(sx_metrics_recall_at_k(one, 1, rel3, 1, 10), 1);
	near(sx_metrics_ndcg_at_k(one, 1, rel3, 1, 10), 1);
	near(sx_metrics_map_at_k(one, 1, rel3, 1, 10), 1);

	/* No hits at all. */
	const int32_t miss[] = {8, 9};
	near(sx_metrics_ndcg_at_k(miss, 2, rel, 3, 2), 0);
	near(sx_metrics_map_at_k(miss, 2, rel, 3, 2), 0);

	/* Empty held-out set, k = 0, unsorted rel: NAN. */
	assert_true(isnan(sx_metrics_recall_at_k(rec, 6, NULL, 0, 5)));
	assert_true(isnan(sx_metrics_ndcg_at_k(rec, 6, NULL, 0, 5)));
	assert_true(isnan(sx_metrics_map_at_k(rec, 6, NULL, 0, 5)));
	assert_true(isnan(sx_metrics_precision_at_k(rec, 6, rel, 3, 0)));
	const int32_t unsorted[] = {3, 1};
	assert_true(isnan(sx_metrics_recall_at_k(rec, 6, unsorted, 2, 5)));
	const int32_t dup[] = {1, 1};
	assert_true(isnan(sx_metrics_precision_at_k(rec, 6, dup, 2, 5)));
}

static void test_coverage(void **state)
{
	(void)state;
	/* Top 2 of each list: {0,1} {1,2} {2,9}; 9 is outside [0, 5). Covered:
	 * 0, 1, 2 -> 3/5. */
	const int32_t lists[] = {0, 1, 2, 1, 2, 3, 2, 9, -1};
	double c;
	assert_int_equal(sx_metrics_coverage(lists, 3, 3, 2, 5, &c), 0);
	near(c, 0.6);
	/* k beyond the list length: all 3 columns count -> 0,1,2,3 -> 4/5. */
	assert_int_equal(sx_metrics_coverage(lists, 3, 3, 10, 5, &c), 0);
	near(c, 0.8);
	assert_int_equal(sx_metrics_coverage(lists, 3, 3, 2, 0, &c), SX_EINVAL);
}

/* The data of tests/ref/metrics_ref.py. */
static const uint8_t Y[20] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0};
static const double P[20] = {0.9,  0.1, 0.4,  0.7,  0.4, 0.2,  0.9, 0.3,  0.8,  0.7,
			     0.55, 0.6, 0.05, 0.4, 0.35, 0.65, 0.15, 0.95, 0.5, 0.25};

static void test_auc(void **state)
{
	(void)state;
	/* Positives 0.4, 0.8; negatives 0.1, 0.4. Pairs: 0.4>0.1 (1), 0.4=0.4
	 * (1/2), 0.8>0.1 (1), 0.8>0.4 (1) -> 3.5 / 4. */
	const double s[] = {0.1, 0.4, 0.4, 0.8};
	const uint8_t y[] = {0, 0, 1, 1};
	double auc;
	assert_int_equal(sx_metrics_auc(s, y, 4, &auc), 0);
	near(auc, 0.875);
	/* sklearn roc_auc_score on the reference data (ties across classes). */
	assert_int_equal(sx_metrics_auc(P, Y, 20, &auc), 0);
	near(auc, 0.86499999999999999);
	const uint8_t same[] = {1, 1, 1, 1};
	assert_int_equal(sx_metrics_auc(s, same, 4, &auc), SX_EINVAL);
	const double nan_s[] = {0.1, NAN, 0.4, 0.8};
	assert_int_equal(sx_metrics_auc(nan_s, y, 4, &auc), SX_EINVAL);
}

static void test_log_loss_brier(void **state)
{
	(void)state;
	double v;
	/* -(log 0.8 + log(1 - 0.4)) / 2 and ((0.8-1)^2 + 0.4^2) / 2 = 0.1 */
	const double p[] = {0.8, 0.4};
	const uint8_t y[] = {1, 0};
	assert_int_equal(sx_metrics_log_loss(p, y, 2, &v), 0);
	near(v, -(log(0.8) + log(0.6)) / 2);
	assert_int_equal(sx_metrics_brier(p, y, 2, &v), 0);
	near(v, 0.1);
	/* sklearn log_loss and brier_score_loss on the reference data. */
	assert_int_equal(sx_metrics_log_loss(P, Y, 20, &v), 0);
	near(v, 0.45359374830075028);
	assert_int_equal(sx_metrics_brier(P, Y, 20, &v), 0);
	near(v, 0.15037499999999998);
	/* Clipping keeps a confident miss finite: -log(1e-15) / 1. */
	const double zero[] = {0.0};
	const uint8_t pos[] = {1};
	assert_int_equal(sx_metrics_log_loss(zero, pos, 1, &v), 0);
	near(v, -log(1e-15));
	const uint8_t bad[] = {2, 0};
	assert_int_equal(sx_metrics_brier(p, bad, 2, &v), SX_EINVAL);
	assert_int_equal(sx_metrics_log_loss(p, y, 0, &v), SX_EINVAL);
}

static void test_calibration(void **state)
{
	(void)state;
	double mp[6], ob[6];
	size_t cnt[6];
	/* sklearn calibration_curve(n_bins=5): values on an edge (0.2, 0.4, 0.6,
	 * 0.8) belong to the lower bin. */
	assert_int_equal(sx_metrics_calibration(P, Y, 20, 5, mp, ob, cnt), 0);
	const size_t ref_cnt[5] = {4, 6, 3, 4, 3};
	const double ref_ob[5] = {0, 0.33333333333333331, 1, 0.5, 1};
	const double ref_mp[5] = {0.125, 0.35000000000000003, 0.54999999999999993,
				  0.71250000000000002, 0.91666666666666663};
	for (int b = 0; b < 5; b++) {
		assert_int_equal(cnt[b], ref_cnt[b]);
		near(ob[b], ref_ob[b]);
		near(mp[b], ref_mp[b]);
	}
	/* An empty bin reports NAN means. 0.0 goes to bin 0, 1.0 to the last. */
	const double p2[] = {0.0, 1.0};
	const uint8_t y2[] = {0, 1};
	assert_int_equal(sx_metrics_calibration(p2, y2, 2, 3, mp, ob, cnt), 0);
	assert_int_equal(cnt[0], 1);
	assert_int_equal(cnt[1], 0);
	assert_int_equal(cnt[2], 1);
	assert_true(isnan(mp[1]) && isnan(ob[1]));
	near(ob[2], 1);
	const double out_of_range[] = {1.5};
	assert_int_equal(sx_metrics_calibration(out_of_range, y2, 1, 3, mp, ob, cnt), SX_EINVAL);
	assert_int_equal(sx_metrics_calibration(p2, y2, 2, 0, mp, ob, cnt), SX_EINVAL);
}

static void test_classification(void **state)
{
	(void)state;
	const int32_t t[12] = {0, 1, 2, 2, 1, 0, 3, 1, 2, 0, 1, 1};
	const int32_t q[12] = {0, 2, 2, 1, 1, 0, 1, 1, 2, 1, 0, 1};
	/* 7 of 12 agree. */
	near(sx_metrics_accuracy(t, q, 12), 7.0 / 12);
	uint64_t cm[16];
	assert_int_equal(sx_metrics_confusion(t, q, 12, 4, cm), 0);
	const uint64_t ref_cm[16] = {2, 1, 0, 0, 1, 3, 1, 0, 0, 1, 2, 0, 0, 1, 0, 0};
	for (int i = 0; i < 16; i++)
		assert_int_equal(cm[i], ref_cm[i]);
	/* F1 = 2TP / (predicted + true): class 0: 4/(3+3); 1: 6/(6+5);
	 * 2: 4/(3+3); 3: 0/(0+1). Mean = (2/3 + 6/11 + 2/3 + 0) / 4, which is
	 * sklearn's 0.46969696969696961. */
	double f1;
	assert_int_equal(sx_metrics_macro_f1(t, q, 12, 4, &f1), 0);
	near(f1, (2.0 / 3 + 6.0 / 11 + 2.0 / 3) / 4);
	near(f1, 0.46969696969696961);
	/* A class absent from both is left out of the mean: with 6 classes the
	 * result is the same. */
	assert_int_equal(sx_metrics_macro_f1(t, q, 12, 6, &f1), 0);
	near(f1, 0.46969696969696961);
	const int32_t bad[1] = {4};
	assert_int_equal(sx_metrics_confusion(bad, bad, 1, 4, cm), SX_EINVAL);
	assert_int_equal(sx_metrics_macro_f1(t, q, 0, 4, &f1), SX_EINVAL);
	assert_true(isnan(sx_metrics_accuracy(t, q, 0)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranking_hand_computed),
		cmocka_unit_test(test_coverage),
		cmocka_unit_test(test_auc),
		cmocka_unit_test(test_log_loss_brier),
		cmocka_unit_test(test_calibration),
		cmocka_unit_test(test_classification),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
