#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/math/als.h"
#include "core/sx.h"

/* Planted problem: 500 users x 300 items, rank 5. A user likes an item with
 * probability sigmoid(8 (p_u . q_i) - 6); a fifth of each user's positives
 * (at least one, for users with two or more) is held out. */
#define NU 500
#define NI 300
#define RANK 5
#define K 10

struct planted {
	int64_t indptr[NU + 1];
	int32_t *idx;
	float *w;
	uint8_t held[NU][NI];
	uint8_t train[NU][NI];
	int n_held;
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double unif(void) { return (double)(rnd() >> 11) * 0x1p-53; }

static double gauss(void)
{
	double u = unif() + 1e-300, v = unif();
	return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static struct planted *planted_new(void)
{
	struct planted *p = calloc(1, sizeof *p);
	assert_non_null(p);
	static double P[NU][RANK], Q[NI][RANK];
	rng_state = 42;
	for (int u = 0; u < NU; u++)
		for (int r = 0; r < RANK; r++)
			P[u][r] = gauss() / sqrt(RANK);
	for (int i = 0; i < NI; i++)
		for (int r = 0; r < RANK; r++)
			Q[i][r] = gauss();
	p->idx = malloc(NU * NI * sizeof(int32_t));
	p->w = malloc(NU * NI * sizeof(float));
	assert_non_null(p->idx);
	assert_non_null(p->w);
	int64_t o = 0;
	for (int u = 0; u < NU; u++) {
		p->indptr[u] = o;
		int pos[NI], np = 0;
		for (int i = 0; i < NI; i++) {
			double s = 0;
			for (int r = 0; r < RANK; r++)
				s += P[u][r] * Q[i][r];
			if (unif() < 1 / (1 + exp(-(8 * s - 6))))
				pos[np++] = i;
		}
		for (int j = 0; j < np; j++) {
			if (np >= 2 && (j == 0 || unif() < 0.2)) {
				p->held[u][pos[j]] = 1;
				p->n_held++;
			} else {
				p->train[u][pos[j]] = 1;
				p->idx[o] = pos[j];
				p->w[o] = 1.0f + (float)(rnd() % 3);
				o++;
			}
		}
	}
	p->indptr[NU] = o;
	return p;
}

static void planted_free(struct planted *p)
{
	free(p->idx);
	free(p->w);
	free(p);
}

static struct sx_als *fit(struct planted *p, int iters, int nthreads, double *losses)
{
	struct sx_als *a = sx_als_new(NU, NI, K, 0.1f, 10.0f, 3, 7);
	assert_non_null(a);
	assert_int_equal(sx_als_set_data(a, p->indptr, p->idx, p->w), 0);
	for (int it = 0; it < iters; it++) {
		assert_int_equal(sx_als_fit_iteration(a, nthreads, NULL, NULL, NULL), 0);
		if (losses)
			assert_int_equal(sx_als_loss(a, nthreads, &losses[it]), 0);
	}
	return a;
}

static void test_recovers_planted(void **state)
{
	(void)state;
	struct planted *p = planted_new();
	double loss[20];
	struct sx_als *a = fit(p, 20, 2, loss);
	/* Each CG step can only lower its row's quadratic, so the objective never
	 * rises; the slack covers float rounding near convergence. */
	for (int it = 1; it < 20; it++)
		assert_true(loss[it] <= loss[it - 1] * (1 + 1e-5));
	assert_true(loss[19] < 0.8 * loss[0]);

	const float *U = sx_als_user_factors(a), *V = sx_als_item_factors(a);
	double auc_sum = 0;
	int auc_users = 0;
	double hits = 0, pop_hits = 0;
	int pop[NI] = {0};
	for (int u = 0; u < NU; u++)
		for (int i = 0; i < NI; i++)
			pop[i] += p->train[u][i];
	for (int u = 0; u < NU; u++) {
		float s[NI];
		for (int i = 0; i < NI; i++) {
			s[i] = 0;
			for (int r = 0; r < K; r++)
				s[i] += U[u * K + r] * V[i * K + r];
		}
		/* Per-user AUC of held-out positives against never-seen items. */
		double wins = 0, pairs = 0;
		for (int i = 0; i < NI; i++) {
			if (!p->held[u][i])
				continue;
			for (int j = 0; j < NI; j++) {
				if (p->held[u][j] || p->train[u][j])
					continue;
				wins += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
				pairs++;
			}
		}
		if (pairs > 0) {
			auc_sum += wins / pairs;
			auc_users++;
		}
		int32_t excl[NI], top[10];
		size_t ne = 0;
		for (int i = 0; i < NI; i++)
			if (p->train[u][i])
				excl[ne++] = i;
		int n = sx_als_recommend(a, U + u * K, excl, ne, 10, top, NULL);
		assert_true(n == 10 || (size_t)n == NI - ne);
		for (int j = 0; j < n; j++) {
			assert_false(p->train[u][top[j]]);
			hits += p->held[u][top[j]];
		}
		/* Popularity baseline: the 10 most popular items the user has not seen. */
		uint8_t used[NI] = {0};
		for (int t = 0; t < 10; t++) {
			int best = -1;
			for (int i = 0; i < NI; i++)
				if (!p->train[u][i] && !used[i] && (best < 0 || pop[i] > pop[best]))
					best = i;
			if (best < 0)
				break;
			used[best] = 1;
			pop_hits += p->held[u][best];
		}
	}
	double auc = auc_sum / auc_users;
	double recall = hits / p->n_held, pop_recall = pop_hits / p->n_held;
	print_message("planted: auc=%.4f recall@10=%.4f popularity=%.4f loss %.5f -> %.5f\n", auc,
		      recall, pop_recall, loss[0], loss[19]);
	assert_true(auc > 0.9);
	assert_true(recall > 1.3 * pop_recall);
	sx_als_free(a);
	planted_free(p);
}

struct capture {
	struct sx_als *als;
	int done;
	float users[NU * K];
};

static void capture_users_cb(void *ud, int phase, size_t done, size_t total)
{
	struct capture *c = ud;
	(void)done;
	(void)total;
	if (phase == 1 && !c->done) {
		memcpy(c->users, sx_als_user_factors(c->als), sizeof c->users);
		c->done = 1;
	}
}

static void test_fold_in_matches_fit(void **state)
{
	(void)state;
	struct planted *p = planted_new();
	struct sx_als *a = sx_als_new(NU, NI, K, 0.1f, 10.0f, 3, 7);
	assert_non_null(a);
	assert_int_equal(sx_als_set_data(a, p->indptr, p->idx, p->w), 0);
	for (int it = 0; it < 25; it++)
		assert_int_equal(sx_als_fit_iteration(a, 1, NULL, NULL, NULL), 0);
	const float *U = sx_als_user_factors(a);
	double worst = 0;
	for (int u = 0; u < NU; u += 7) {
		float x[K];
		size_t n = (size_t)(p->indptr[u + 1] - p->indptr[u]);
		assert_int_equal(sx_als_fold_in(a, p->idx + p->indptr[u], p->w + p->indptr[u], n, x), 0);
		double num = 0, den = 0;
		for (int r = 0; r < K; r++) {
			num += (x[r] - U[u * K + r]) * (x[r] - U[u * K + r]);
			den += (double)U[u * K + r] * U[u * K + r];
		}
		double rel = sqrt(num / (den + 1e-12));
		if (rel > worst)
			worst = rel;
	}
	print_message("fold-in vs fitted: worst relative difference %.5f\n", worst);
	/* The fitted vectors were solved against the previous item factors. */
	assert_true(worst < 0.05);

	/* Exactness: capture the user vectors of a half-step whose CG runs to
	 * convergence, and fold in against the item factors it used. */
	struct sx_als *b = sx_als_new(NU, NI, K, 0.1f, 10.0f, 4 * K, 7);
	assert_non_null(b);
	assert_int_equal(sx_als_set_data(b, p->indptr, p->idx, p->w), 0);
	assert_int_equal(sx_als_set_factors(b, U, sx_als_item_factors(a)), 0);
	static float v_before[NI * K];
	memcpy(v_before, sx_als_item_factors(b), sizeof v_before);
	struct capture cap = {.als = b};
	assert_int_equal(sx_als_fit_iteration(b, 2, NULL, capture_users_cb, &cap), 0);
	assert_true(cap.done);
	assert_int_equal(sx_als_set_factors(b, NULL, v_before), 0);
	double exact_worst = 0;
	for (int u = 0; u < NU; u += 7) {
		float x[K];
		size_t n = (size_t)(p->indptr[u + 1] - p->indptr[u]);
		assert_int_equal(sx_als_fold_in(b, p->idx + p->indptr[u], p->w + p->indptr[u], n, x), 0);
		for (int r = 0; r < K; r++) {
			double d = fabs(x[r] - cap.users[u * K + r]);
			if (d > exact_worst)
				exact_worst = d;
		}
	}
	print_message("fold-in vs converged half-step: worst abs difference %.2e\n", exact_worst);
	assert_true(exact_worst < 1e-4);
	sx_als_free(b);

	/* explain: the contributions add up to the folded-in user's score. */
	int u = 3;
	size_t n = (size_t)(p->indptr[u + 1] - p->indptr[u]);
	const int32_t *items = p->idx + p->indptr[u];
	const float *w = p->w + p->indptr[u];
	float x[K];
	assert_int_equal(sx_als_fold_in(a, items, w, n, x), 0);
	int32_t best;
	float best_score;
	assert_int_equal(sx_als_recommend(a, x, items, n, 1, &best, &best_score), 1);
	int32_t ex_items[64];
	float ex_c[64];
	double total = 0;
	int m = sx_als_explain(a, items, w, n, best, 64, ex_items, ex_c, &total);
	assert_int_equal(m, n < 64 ? n : 64);
	assert_true(fabs(total - best_score) < 1e-4 * (1 + fabs(total)));
	double sum = 0;
	for (int j = 0; j < m; j++) {
		if (j)
			assert_true(ex_c[j] <= ex_c[j - 1]);
		sum += ex_c[j];
	}
	if ((size_t)m == n)
		assert_true(fabs(sum - total) < 1e-4 * (1 + fabs(total)));
	sx_als_free(a);
	planted_free(p);
}

static void test_threads_match(void **state)
{
	(void)state;
	struct planted *p = planted_new();
	struct sx_als *a1 = fit(p, 3, 1, NULL), *a2 = fit(p, 3, 2, NULL), *a4 = fit(p, 3, 4, NULL);
	const float *u1 = sx_als_user_factors(a1), *u2 = sx_als_user_factors(a2),
		    *u4 = sx_als_user_factors(a4);
	const float *v1 = sx_als_item_factors(a1), *v2 = sx_als_item_factors(a2),
		    *v4 = sx_als_item_factors(a4);
	for (int i = 0; i < NU * K; i++) {
		assert_true(fabsf(u1[i] - u2[i]) <= 1e-6f);
		assert_true(fabsf(u1[i] - u4[i]) <= 1e-6f);
	}
	for (int i = 0; i < NI * K; i++) {
		assert_true(fabsf(v1[i] - v2[i]) <= 1e-6f);
		assert_true(fabsf(v1[i] - v4[i]) <= 1e-6f);
	}
	double l1, l2;
	assert_int_equal(sx_als_loss(a1, 1, &l1), 0);
	assert_int_equal(sx_als_loss(a2, 3, &l2), 0);
	assert_true(fabs(l1 - l2) <= 1e-9 * l1);
	sx_als_free(a1);
	sx_als_free(a2);
	sx_als_free(a4);
	planted_free(p);
}

struct progress_log {
	int calls;
	size_t last_done[2];
	size_t total[2];
	atomic_int *cancel_at_users;
};

static void progress_cb(void *ud, int phase, size_t done, size_t total)
{
	struct progress_log *l = ud;
	assert_true(phase == 0 || phase == 1);
	assert_true(done <= total);
	assert_true(done > l->last_done[phase] || l->calls == 0);
	l->calls++;
	l->last_done[phase] = done;
	l->total[phase] = total;
	if (l->cancel_at_users && phase == 0 && done >= total / 2)
		atomic_store(l->cancel_at_users, 1);
}

static void test_cancel_and_progress(void **state)
{
	(void)state;
	struct planted *p = planted_new();
	struct sx_als *a = sx_als_new(NU, NI, K, 0.1f, 10.0f, 3, 7);
	assert_non_null(a);
	assert_int_equal(sx_als_fit_iteration(a, 1, NULL, NULL, NULL), SX_ESTATE);
	assert_int_equal(sx_als_set_data(a, p->indptr, p->idx, p->w), 0);

	struct progress_log log = {0};
	assert_int_equal(sx_als_fit_iteration(a, 2, NULL, progress_cb, &log), 0);
	assert_int_equal(log.total[0], NU);
	assert_int_equal(log.total[1], NI);
	assert_int_equal(log.last_done[0], NU);
	assert_int_equal(log.last_done[1], NI);

	atomic_int cancel = 1;
	assert_int_equal(sx_als_fit_iteration(a, 2, &cancel, NULL, NULL), SX_ECANCELED);

	float before[NU * K];
	memcpy(before, sx_als_user_factors(a), sizeof before);
	atomic_store(&cancel, 0);
	struct progress_log mid = {.cancel_at_users = &cancel};
	assert_int_equal(sx_als_fit_iteration(a, 1, &cancel, progress_cb, &mid), SX_ECANCELED);
	assert_true(mid.last_done[0] < NU);
	assert_int_equal(mid.last_done[1], 0);
	/* Rows solved before the cancel changed, the rest did not. */
	const float *after = sx_als_user_factors(a);
	assert_memory_not_equal(before, after, K * sizeof(float));
	assert_memory_equal(before + (NU - 1) * K, after + (NU - 1) * K, K * sizeof(float));
	sx_als_free(a);
	planted_free(p);
}

static void test_recommend_brute_force(void **state)
{
	(void)state;
	struct sx_als *a = sx_als_new(20, 50, 4, 0.1f, 1.0f, 2, 3);
	assert_non_null(a);
	const float *V = sx_als_item_factors(a);
	float x[4] = {1, -2, 0.5f, 3};
	int32_t excl[] = {7, 3, 7, 999, -1};
	int32_t top[50];
	float sc[50];
	int n = sx_als_recommend(a, x, excl, 5, 100, top, sc);
	assert_int_equal(n, 48);
	for (int j = 0; j < n; j++) {
		assert_true(top[j] != 7 && top[j] != 3);
		float s = 0;
		for (int r = 0; r < 4; r++)
			s += x[r] * V[top[j] * 4 + r];
		assert_true(fabsf(s - sc[j]) < 1e-5f);
		if (j)
			assert_true(sc[j] < sc[j - 1] || (sc[j] == sc[j - 1] && top[j] > top[j - 1]));
	}
	sx_als_free(a);
}

static void test_rejects_bad_input(void **state)
{
	(void)state;
	assert_null(sx_als_new(0, 5, 4, 0.1f, 1, 3, 1));
	assert_null(sx_als_new(5, 5, 0, 0.1f, 1, 3, 1));
	assert_null(sx_als_new(5, 5, 4, NAN, 1, 3, 1));
	assert_null(sx_als_new(5, 5, 4, 0.1f, -1, 3, 1));
	assert_null(sx_als_new(5, 5, 4, 0.1f, 1, 0, 1));
	struct sx_als *a = sx_als_new(2, 3, 4, 0.1f, 1, 3, 1);
	assert_non_null(a);
	int64_t ptr[] = {0, 2, 3};
	int32_t idx[] = {0, 2, 1};
	float w[] = {1, 2, 3};
	assert_int_equal(sx_als_set_data(a, ptr, idx, w), 0);
	int32_t bad_idx[] = {0, 3, 1};
	assert_int_equal(sx_als_set_data(a, ptr, bad_idx, w), SX_EINVAL);
	float nan_w[] = {1, NAN, 3};
	assert_int_equal(sx_als_set_data(a, ptr, idx, nan_w), SX_EINVAL);
	float neg_w[] = {1, -1, 3};
	assert_int_equal(sx_als_set_data(a, ptr, idx, neg_w), SX_EINVAL);
	int64_t bad_ptr[] = {0, 3, 2};
	assert_int_equal(sx_als_set_data(a, bad_ptr, idx, w), SX_EINVAL);
	float out[4];
	int32_t items[] = {5};
	float one[] = {1};
	assert_int_equal(sx_als_fold_in(a, items, one, 1, out), SX_EINVAL);
	assert_int_equal(sx_als_fold_in(a, NULL, NULL, 0, out), 0);
	for (int r = 0; r < 4; r++)
		assert_true(out[r] == 0.0f);
	float inf_f[2 * 4] = {INFINITY};
	assert_int_equal(sx_als_set_factors(a, inf_f, NULL), SX_EINVAL);
	sx_als_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_recovers_planted),
		cmocka_unit_test(test_fold_in_matches_fit),
		cmocka_unit_test(test_threads_match),
		cmocka_unit_test(test_cancel_and_progress),
		cmocka_unit_test(test_recommend_brute_force),
		cmocka_unit_test(test_rejects_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
