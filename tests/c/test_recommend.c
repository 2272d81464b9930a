/* The recommend plugin's maths: decay, time-decayed profiles, MMR re-ranking. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/sx.h"
#include "plugins/recommend/recommend.h"

#define DAY 86400000.0

static void test_decay(void **state)
{
	(void)state;
	assert_float_equal(sx_rec_decay(8, 0, DAY), 8, 1e-12);
	assert_float_equal(sx_rec_decay(8, -5, DAY), 8, 1e-12);
	assert_float_equal(sx_rec_decay(8, (int64_t)DAY, DAY), 4, 1e-12);
	assert_float_equal(sx_rec_decay(8, (int64_t)(3 * DAY), DAY), 1, 1e-12);
	assert_float_equal(sx_rec_decay(1, (int64_t)(DAY / 2), DAY), 1 / sqrt(2), 1e-12);
}

static void test_profile_in_order(void **state)
{
	(void)state;
	float sum[2];
	double w;
	int64_t t = INT64_MIN;
	const float a[2] = {1, 0}, b[2] = {0, 1};
	sx_rec_profile_add(sum, 2, &w, &t, a, 2.0, 0, DAY);
	assert_int_equal(t, 0);
	assert_float_equal(sum[0], 2, 1e-6);
	assert_float_equal(w, 2, 1e-12);
	/* one half-life later: a's term halves, b enters whole */
	sx_rec_profile_add(sum, 2, &w, &t, b, 1.0, (int64_t)DAY, DAY);
	assert_int_equal(t, (int64_t)DAY);
	assert_float_equal(sum[0], 1, 1e-6);
	assert_float_equal(sum[1], 1, 1e-6);
	assert_float_equal(w, 2, 1e-12);
}

static void test_profile_out_of_order(void **state)
{
	(void)state;
	/* the same two events in the other order give the same profile */
	float sum[2];
	double w;
	int64_t t = INT64_MIN;
	const float a[2] = {1, 0}, b[2] = {0, 1};
	sx_rec_profile_add(sum, 2, &w, &t, b, 1.0, (int64_t)DAY, DAY);
	sx_rec_profile_add(sum, 2, &w, &t, a, 2.0, 0, DAY);
	assert_int_equal(t, (int64_t)DAY);
	assert_float_equal(sum[0], 1, 1e-6);
	assert_float_equal(sum[1], 1, 1e-6);
	assert_float_equal(w, 2, 1e-12);
	/* a third event two half-lives on: earlier terms quarter */
	const float c[2] = {3, 3};
	sx_rec_profile_add(sum, 2, &w, &t, c, 1.0, (int64_t)(3 * DAY), DAY);
	assert_float_equal(sum[0], 0.25 + 3, 1e-6);
	assert_float_equal(sum[1], 0.25 + 3, 1e-6);
	assert_float_equal(w, 1.5, 1e-12);
}

static void test_mmr(void **state)
{
	(void)state;
	/* 0 and 1 are near-duplicates, 2 points elsewhere, 3 has no vector */
	const float v[4 * 2] = {1, 0, 0.99f, 0.141f, 0, 1, 0, 0};
	const double rel[4] = {1.0, 0.95, 0.6, 0.1};
	uint32_t out[4];
	/* lambda 1: pure relevance */
	assert_int_equal(sx_rec_mmr(rel, v, 4, 2, 4, 1.0, out), 4);
	assert_int_equal(out[0], 0), assert_int_equal(out[1], 1), assert_int_equal(out[2], 2), assert_int_equal(out[3], 3);
	/* lambda 0.5: after 0, candidate 1 scores 0.475 - 0.5*0.99 < 0 while 2 scores 0.3 */
	assert_int_equal(sx_rec_mmr(rel, v, 4, 2, 3, 0.5, out), 3);
	assert_int_equal(out[0], 0), assert_int_equal(out[1], 2);
	/* then 3 (0.05, no similarity) beats 1 (0.475 - 0.495 = -0.02) */
	assert_int_equal(out[2], 3);
	/* k larger than n, and bad lambda */
	assert_int_equal(sx_rec_mmr(rel, v, 2, 2, 5, 0.7, out), 2);
	assert_int_equal(sx_rec_mmr(rel, v, 4, 2, 2, 1.5, out), SX_EINVAL);
	assert_int_equal(sx_rec_mmr(rel, v, 4, 2, 2, NAN, out), SX_EINVAL);
	assert_int_equal(sx_rec_mmr(rel, v, 0, 2, 2, 0.5, out), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decay),
		cmocka_unit_test(test_profile_in_order),
		cmocka_unit_test(test_profile_out_of_order),
		cmocka_unit_test(test_mmr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
