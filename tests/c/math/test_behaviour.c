/* The behaviour models against hand-computed answers: Markov transition
 * counts with session gaps and recency weights, smoothed and mixed
 * next-action distributions; co-visitation pair weights with lookback,
 * window, gap and age decay, top-n lists with ties, recommendation scores,
 * saving and restoring, and refusal of bad input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/math/behaviour.h"
#include "core/sx.h"

#define EPS 1e-12
#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) <= EPS)

static struct sx_markov *two_sequences(void)
{
	/* view 0, click 1, book 2 */
	struct sx_markov *m = sx_markov_new(3);
	struct sx_markov_opts o = {100000, 0, 10000};
	int32_t a[] = {0, 1, 2, 0}, b[] = {0, 0, 1};
	int64_t ta[] = {0, 1000, 2000, 100000}, tb[] = {0, 500, 600};
	assert_non_null(m);
	assert_int_equal(sx_markov_add(m, a, ta, 4, &o), 0); /* 2 -> 0 is past the 10 s gap */
	assert_int_equal(sx_markov_add(m, b, tb, 3, &o), 0);
	return m;
}

static void test_markov_counts(void **state)
{
	(void)state;
	struct sx_markov *m = two_sequences();
	const double want_c[9] = {1, 2, 0, 0, 0, 1, 0, 0, 0}, want_q[3] = {4, 2, 1};
	for (int i = 0; i < 9; i++)
		assert_near(sx_markov_counts(m)[i], want_c[i]);
	for (int i = 0; i < 3; i++)
		assert_near(sx_markov_marginal(m)[i], want_q[i]);
	sx_markov_free(m);
}

static void test_markov_predict(void **state)
{
	(void)state;
	struct sx_markov *m = two_sequences();
	double p[3];
	int32_t r0[] = {0};
	assert_int_equal(sx_markov_predict(m, r0, 1, 0, 0.5, p), 0);
	assert_near(p[0], 1.0 / 3), assert_near(p[1], 2.0 / 3), assert_near(p[2], 0);
	/* alpha 1 pulls towards the marginal (4, 2, 1) / 7 */
	assert_int_equal(sx_markov_predict(m, r0, 1, 1, 0.5, p), 0);
	assert_near(p[0], 11.0 / 28), assert_near(p[1], 16.0 / 28), assert_near(p[2], 1.0 / 28);
	/* click then view: P(.|view) weighs 1, P(.|click) = (0, 0, 1) weighs 0.5 */
	int32_t r1[] = {1, 0};
	assert_int_equal(sx_markov_predict(m, r1, 2, 0, 0.5, p), 0);
	assert_near(p[0], 2.0 / 9), assert_near(p[1], 4.0 / 9), assert_near(p[2], 1.0 / 3);
	/* decay 0: only the latest event counts */
	assert_int_equal(sx_markov_predict(m, r1, 2, 0, 0, p), 0);
	assert_near(p[0], 1.0 / 3), assert_near(p[2], 0);
	/* a state never left, no state, unknown states: the marginal */
	int32_t r2[] = {2}, r3[] = {7, -1};
	assert_int_equal(sx_markov_predict(m, r2, 1, 0, 0.5, p), 0);
	assert_near(p[0], 4.0 / 7), assert_near(p[1], 2.0 / 7), assert_near(p[2], 1.0 / 7);
	assert_int_equal(sx_markov_predict(m, NULL, 0, 0, 0.5, p), 0);
	assert_near(p[0], 4.0 / 7);
	assert_int_equal(sx_markov_predict(m, r3, 2, 0, 0.5, p), 0);
	assert_near(p[2], 1.0 / 7);
	assert_int_equal(sx_markov_predict(m, r0, 1, -1, 0.5, p), SX_EINVAL);
	assert_int_equal(sx_markov_predict(m, r0, 1, 0, 1.5, p), SX_EINVAL);
	sx_markov_free(m);
}

static void test_markov_recency(void **state)
{
	(void)state;
	struct sx_markov *m = sx_markov_new(3);
	struct sx_markov_opts o = {2000, 1000, 0};
	int32_t a[] = {0, 1}, b[] = {0, 2};
	int64_t ta[] = {0, 2000}, tb[] = {1000, 1000};
	assert_int_equal(sx_markov_add(m, a, ta, 2, &o), 0);
	assert_int_equal(sx_markov_add(m, b, tb, 2, &o), 0);
	/* weights 2^-((2000 - t) / 1000): 0.25 at 0, 0.5 at 1000, 1 at 2000 */
	assert_near(sx_markov_marginal(m)[0], 0.75);
	assert_near(sx_markov_marginal(m)[1], 1);
	assert_near(sx_markov_marginal(m)[2], 0.5);
	double p[3];
	int32_t r[] = {0};
	assert_int_equal(sx_markov_predict(m, r, 1, 0, 1, p), 0);
	assert_near(p[0], 0), assert_near(p[1], 2.0 / 3), assert_near(p[2], 1.0 / 3);
	sx_markov_free(m);
}

static void test_markov_errors_and_set(void **state)
{
	(void)state;
	assert_null(sx_markov_new(0));
	assert_null(sx_markov_new(SX_MARKOV_MAX_STATES + 1));
	struct sx_markov *m = sx_markov_new(2), *m2 = sx_markov_new(2);
	struct sx_markov_opts o = {0, 0, 0};
	double p[2];
	assert_int_equal(sx_markov_predict(m, NULL, 0, 1, 1, p), SX_ESTATE);
	int32_t bad[] = {0, 2}, ok[] = {0, 1};
	int64_t t[] = {5, 6}, desc[] = {6, 5};
	assert_int_equal(sx_markov_add(m, bad, t, 2, &o), SX_EINVAL);
	assert_int_equal(sx_markov_add(m, ok, desc, 2, &o), SX_EINVAL);
	o.half_life_ms = -1;
	assert_int_equal(sx_markov_add(m, ok, t, 2, &o), SX_EINVAL);
	o.half_life_ms = 0;
	assert_int_equal(sx_markov_add(m, ok, t, 2, &o), 0);
	double c[4] = {0, 1, 0, 0}, q[2] = {1, 1}, neg[4] = {0, -1, 0, 0};
	assert_int_equal(sx_markov_set(m2, neg, q), SX_EINVAL);
	assert_int_equal(sx_markov_set(m2, sx_markov_counts(m), sx_markov_marginal(m)), 0);
	for (int i = 0; i < 4; i++)
		assert_near(sx_markov_counts(m2)[i], c[i]);
	assert_int_equal(sx_markov_predict(m2, ok, 1, 0, 1, p), 0);
	assert_near(p[1], 1);
	sx_markov_free(m);
	sx_markov_free(m2);
}

/* ---- co-visitation ---- */

static struct sx_covisit *three_users(void)
{
	struct sx_covisit_opts o = {10000, 0, 1000, 0, 2, 2};
	struct sx_covisit *c = sx_covisit_new(4, &o);
	int32_t u1[] = {0, 1, 2}, u2[] = {3, 3, 0}, u3[] = {0, 1, 2, 3};
	int64_t t1[] = {0, 1000, 1000}, t2[] = {0, 0, 2000}, t3[] = {0, 0, 0, 0};
	assert_non_null(c);
	assert_int_equal(sx_covisit_add(c, u1, t1, 3), 0);
	assert_int_equal(sx_covisit_add(c, u2, t2, 3), 0);
	assert_int_equal(sx_covisit_add(c, u3, t3, 4), 0);
	return c;
}

static void check_row(const struct sx_covisit *c, int32_t i, const int32_t *ids, const double *w, size_t n)
{
	const int32_t *gi;
	const float *gw;
	assert_int_equal(sx_covisit_neighbors(c, i, &gi, &gw), n);
	for (size_t j = 0; j < n; j++) {
		assert_int_equal(gi[j], ids[j]);
		assert_near(gw[j], w[j]);
	}
}

static void test_covisit_lists(void **state)
{
	(void)state;
	struct sx_covisit *c = three_users();
	/* W01 = .5 + 1, W02 = .5 + 1, W03 = .25 + .25, W12 = 1 + 1, W13 = 1, W23 = 1;
	 * user 3's pair (0, 3) is 3 events apart, past the lookback of 2 */
	assert_int_equal(sx_covisit_pairs(c), 6);
	assert_int_equal(sx_covisit_finish(c), 0);
	assert_int_equal(sx_covisit_finish(c), SX_ESTATE);
	int32_t r0[] = {1, 2}, r1[] = {2, 0}, r2[] = {1, 0}, r3[] = {1, 2};
	double w0[] = {1.5, 1.5}, w1[] = {2, 1.5}, w2[] = {2, 1.5}, w3[] = {1, 1};
	check_row(c, 0, r0, w0, 2);
	check_row(c, 1, r1, w1, 2);
	check_row(c, 2, r2, w2, 2);
	check_row(c, 3, r3, w3, 2);
	const int32_t *gi;
	const float *gw;
	assert_int_equal(sx_covisit_neighbors(c, 4, &gi, &gw), 0);

	int32_t out[4];
	double sc[4];
	int32_t rec[] = {1, 3}, ex[] = {1};
	/* from 1: 2 (2), 0 (1.5); from 3: 1 (1, excluded), 2 (1) */
	assert_int_equal(sx_covisit_recommend(c, rec, NULL, 2, ex, 1, 4, out, sc), 2);
	assert_int_equal(out[0], 2), assert_near(sc[0], 3);
	assert_int_equal(out[1], 0), assert_near(sc[1], 1.5);
	double rw[] = {0.5, 2};
	assert_int_equal(sx_covisit_recommend(c, rec, rw, 2, NULL, 0, 1, out, sc), 1);
	assert_int_equal(out[0], 2), assert_near(sc[0], 3);
	int32_t one[] = {0}, ex0[] = {0};
	assert_int_equal(sx_covisit_recommend(c, one, NULL, 1, ex0, 1, 4, out, sc), 2);
	assert_int_equal(out[0], 1), assert_int_equal(out[1], 2); /* a tie: ascending id */
	int32_t unknown[] = {9};
	assert_int_equal(sx_covisit_recommend(c, unknown, NULL, 1, NULL, 0, 4, out, sc), 0);

	/* save and restore */
	struct sx_covisit_opts o = {0, 0, 0, 0, 1, 2};
	struct sx_covisit *d = sx_covisit_new(4, &o);
	assert_int_equal(sx_covisit_set(d, sx_covisit_indptr(c), sx_covisit_ids(c), sx_covisit_weights(c)), 0);
	check_row(d, 1, r1, w1, 2);
	assert_int_equal(sx_covisit_recommend(d, rec, NULL, 2, ex, 1, 4, out, sc), 2);
	assert_int_equal(out[0], 2), assert_near(sc[0], 3);
	assert_int_equal(sx_covisit_add(d, one, (int64_t[]){0}, 1), SX_ESTATE);
	sx_covisit_free(d);
	/* a self-pair or a row longer than top_n is refused */
	d = sx_covisit_new(2, &o);
	int64_t ip[] = {0, 1, 1}, ip3[] = {0, 3, 3};
	int32_t self[] = {0}, three[] = {1, 1, 1};
	float w[] = {1, 1, 1};
	assert_int_equal(sx_covisit_set(d, ip, self, w), SX_EINVAL);
	assert_int_equal(sx_covisit_set(d, ip3, three, w), SX_EINVAL);
	sx_covisit_free(d);
	sx_covisit_free(c);
}

static void test_covisit_window_and_age(void **state)
{
	(void)state;
	struct sx_covisit_opts o = {10000, 500, 1000, 0, 2, 5};
	struct sx_covisit *c = sx_covisit_new(4, &o);
	int32_t u1[] = {0, 1, 2};
	int64_t t1[] = {0, 1000, 1000};
	assert_int_equal(sx_covisit_add(c, u1, t1, 3), 0);
	assert_int_equal(sx_covisit_pairs(c), 1); /* only (1, 2): the others are 1000 ms apart */
	assert_int_equal(sx_covisit_finish(c), 0);
	int32_t r1[] = {2};
	double w1[] = {1};
	check_row(c, 1, r1, w1, 1);
	sx_covisit_free(c);

	struct sx_covisit_opts oa = {3000, 0, 0, 1000, 5, 5};
	c = sx_covisit_new(2, &oa);
	int32_t u2[] = {0, 1};
	int64_t t2[] = {1000, 2000};
	assert_int_equal(sx_covisit_add(c, u2, t2, 2), 0); /* age 1000 ms of the later event: 0.5 */
	assert_int_equal(sx_covisit_finish(c), 0);
	int32_t r0[] = {1};
	double w0[] = {0.5};
	check_row(c, 0, r0, w0, 1);
	sx_covisit_free(c);
}

static void test_covisit_errors(void **state)
{
	(void)state;
	struct sx_covisit_opts o = {0, 0, 0, 0, 1, 1};
	assert_null(sx_covisit_new(0, &o));
	o.lookback = 0;
	assert_null(sx_covisit_new(2, &o));
	o.lookback = 1, o.gap_half_life_ms = -1;
	assert_null(sx_covisit_new(2, &o));
	o.gap_half_life_ms = 0;
	struct sx_covisit *c = sx_covisit_new(2, &o);
	int32_t bad[] = {0, 2}, ok[] = {0, 1};
	int64_t t[] = {0, 1}, desc[] = {1, 0};
	int32_t out[2];
	assert_int_equal(sx_covisit_add(c, bad, t, 2), SX_EINVAL);
	assert_int_equal(sx_covisit_add(c, ok, desc, 2), SX_EINVAL);
	assert_int_equal(sx_covisit_pairs(c), 0);
	assert_int_equal(sx_covisit_recommend(c, ok, NULL, 1, NULL, 0, 2, out, NULL), SX_ESTATE);
	assert_int_equal(sx_covisit_finish(c), 0); /* an empty model is valid */
	assert_int_equal(sx_covisit_recommend(c, ok, NULL, 2, NULL, 0, 2, out, NULL), 0);
	sx_covisit_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_markov_counts),         cmocka_unit_test(test_markov_predict),
		cmocka_unit_test(test_markov_recency),        cmocka_unit_test(test_markov_errors_and_set),
		cmocka_unit_test(test_covisit_lists),         cmocka_unit_test(test_covisit_window_and_age),
		cmocka_unit_test(test_covisit_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
