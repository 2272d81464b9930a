/* als.h — implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008).
 *
 * Each observed (user, item, w) with w > 0 means preference p = 1 with
 * confidence c = 1 + alpha * w; every unobserved pair has p = 0, c = 1. The
 * model minimises
 *
 *   sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + lambda (sum_u |x_u|^2 + sum_i |y_i|^2)
 *
 * by alternating least squares. Each row is solved with a few conjugate-gradient
 * steps warm-started from its previous factors (Takacs, Pilaszy, Tikk 2011), on
 * the Gram matrix Y^T Y + lambda I plus the sparse correction of the row's
 * observed entries, so one iteration costs O((n_users + n_items) k^2 + nnz k)
 * per CG step. Rows are spread over pthreads.
 *
 * Factors are row-major float32: user u is user_factors[u*k .. u*k+k-1].
 * Results depend only on the seed and the data, not on the number of threads
 * (the inner loops use AVX2+FMA where the CPU has it, so two machines may
 * differ in the last bits).
 *
 * Threads: one struct sx_als may be read (fold-in, recommend, explain, loss)
 * from any number of threads at once, but nothing may read it while
 * sx_als_set_data, sx_als_fit_iteration or sx_als_set_factors runs.
 *
 * Errors: functions return 0 or a negative SX_E* code (core/sx.h). core/math
 * does not touch the diagnostics slot; each function lists its codes.
 */
#ifndef SX_MATH_ALS_H
#define SX_MATH_ALS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct sx_als;

/* Progress of one half-step: phase 0 solves users, 1 solves items. Called on
 * the thread that called sx_als_fit_iteration, never concurrently, with
 * rows_done increasing within a phase; a phase that completes always ends
 * with a call where rows_done == rows_total (a cancelled one may not). */
typedef void (*sx_als_progress_cb)(void *ud, int phase, size_t rows_done, size_t rows_total);

/* A model with factors drawn uniformly from [0, 0.01) by a PRNG seeded with
 * seed. Requires n_users, n_items >= 1, 1 <= k <= 1024, lambda >= 0,
 * alpha >= 0, 1 <= cg_steps <= 100. Returns NULL on bad arguments or out of
 * memory. */
struct sx_als *sx_als_new(int32_t n_users, int32_t n_items, int k, float lambda,
			  float alpha, int cg_steps, uint64_t seed);
void sx_als_free(struct sx_als *als);

/* Copy the users x items matrix in CSR form (indptr has n_users + 1 entries,
 * indptr[0] = 0, non-decreasing; indices in [0, n_items); weights finite and
 * >= 0, a zero weight is the same as an absent entry) and build its
 * transpose. Duplicate (user, item) entries are kept and each adds its
 * confidence. Replaces earlier data; factors are kept, so a model can be
 * warm-started on updated data.
 * Returns SX_EINVAL on a malformed matrix (earlier data kept), SX_ENOMEM
 * (the model is then left without data). */
int sx_als_set_data(struct sx_als *als, const int64_t *indptr, const int32_t *indices,
		    const float *weights);

/* One full alternating step: users from the item factors, then items from
 * the user factors. nthreads >= 1 workers (the calling thread is one of them).
 * cancel, if not NULL, is polled between blocks of rows; when it becomes
 * non-zero the call returns SX_ECANCELED with some rows of the current
 * half-step updated and the others not: the model is still usable, only less
 * fitted. progress may be NULL.
 * If threads cannot be started the work runs on those that could.
 * Returns SX_ESTATE if no data was set, SX_EINVAL, SX_ECANCELED, SX_ENOMEM. */
int sx_als_fit_iteration(struct sx_als *als, int nthreads, const atomic_int *cancel,
			 sx_als_progress_cb progress, void *ud);

/* The objective above, divided by the sum of confidences of all n_users *
 * n_items cells (the `implicit` library's normalisation), for the current
 * factors and data. Returns SX_ESTATE if no data was set, SX_ENOMEM. */
int sx_als_loss(const struct sx_als *als, int nthreads, double *out);

int32_t sx_als_n_users(const struct sx_als *als);
int32_t sx_als_n_items(const struct sx_als *als);
int sx_als_k(const struct sx_als *als);

/* Borrowed views of the factor matrices, valid until sx_als_free. Writing
 * through them is allowed only while no other call on als runs; call
 * sx_als_set_factors afterwards so cached Gram matrices are refreshed. */
float *sx_als_user_factors(struct sx_als *als);
float *sx_als_item_factors(struct sx_als *als);

/* Copy factors in (either pointer may be NULL to keep the current ones) and
 * refresh the cached Gram matrices. Returns SX_EINVAL on non-finite values. */
int sx_als_set_factors(struct sx_als *als, const float *user_factors, const float *item_factors);

/* The exact least-squares vector of a user who interacted with items[0..n-1]
 * (weights as in sx_als_set_data) given the current item factors: Cholesky
 * solve of (Y^T Y + lambda I + sum (c_i - 1) y_i y_i^T) x = sum c_i y_i.
 * out has k floats. n may be 0 (the result is then zero).
 * Returns SX_EINVAL (bad item id or weight), SX_ENOMEM, SX_EINTERNAL if the
 * system is not positive definite (only possible with lambda = 0). */
int sx_als_fold_in(const struct sx_als *als, const int32_t *items, const float *weights,
		   size_t n, float *out);

/* The n highest-scoring items for a user vector (k floats), by descending
 * score x . y_i, ties by ascending item id, skipping the n_exclude ids in
 * exclude (ids out of range are ignored). out_items / out_scores (the latter
 * may be NULL) have room for n entries. Returns the number written (at most
 * n, fewer when the catalogue minus exclusions is smaller) or SX_ENOMEM. */
int sx_als_recommend(const struct sx_als *als, const float *user_vec, const int32_t *exclude,
		     size_t n_exclude, size_t n, int32_t *out_items, float *out_scores);

/* Why item scores what it does for the user of items/weights (as in
 * sx_als_fold_in): with A the user's weighted Gram matrix, the score of item
 * for the exact user vector is sum_j c_j y_j^T A^-1 y_item; out_total gets
 * that sum and the n largest terms go to out_items / out_contrib (descending,
 * ties by ascending id). Returns the number written or SX_EINVAL, SX_ENOMEM,
 * SX_EINTERNAL as sx_als_fold_in. */
int sx_als_explain(const struct sx_als *als, const int32_t *items, const float *weights,
		   size_t n_items, int32_t item, size_t n, int32_t *out_items,
		   float *out_contrib, double *out_total);

/* sx_als_explain for n_targets items at once, with one factorisation of A:
 * target t's contributors go to out_items / out_contrib [t * n, t * n + out_count[t]),
 * its score to out_total[t]. Returns 0, or SX_EINVAL (also for a target out of
 * range), SX_ENOMEM, SX_EINTERNAL; the outputs are then unspecified. */
int sx_als_explain_many(const struct sx_als *als, const int32_t *items, const float *weights, size_t n_items,
			const int32_t *targets, size_t n_targets, size_t n, int32_t *out_items, float *out_contrib,
			double *out_total, int *out_count);

#endif
