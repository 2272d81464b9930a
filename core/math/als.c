#include "core/math/als.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/blas.h"
#include "core/sx.h"

/* Rows per unit of work: large enough to amortise the atomic, small enough
 * to balance skewed rows and to poll the cancel flag often. */
#define BLOCK_ROWS 64
#define MAX_THREADS 256

struct sx_als {
	int32_t n_users, n_items;
	int k;
	float lambda, alpha;
	int cg_steps;
	float *U, *V;
	/* V^T V and U^T U, full symmetric k x k, without lambda. */
	float *gram_v, *gram_u;
	int has_data;
	/* alpha * w per stored entry, so that c = 1 + cm1 and c - 1 is exact. */
	int64_t *u_ptr, *i_ptr;
	int32_t *u_idx, *i_idx;
	float *u_cm1, *i_cm1;
};

typedef float v8f __attribute__((vector_size(32)));

/* The row loops are compiled twice, for AVX2+FMA and for baseline x86-64,
 * and picked at run time; the kernels below are inlined into each. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SX_ALS_AVX2 1
#endif
#define KERNEL static inline __attribute__((always_inline))

KERNEL float hsum8(v8f v)
{
	return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

KERNEL float dot(const float *restrict a, const float *restrict b, int k)
{
	v8f acc = {0};
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		v8f va, vb;
		memcpy(&va, a + i, sizeof va);
		memcpy(&vb, b + i, sizeof vb);
		acc += va * vb;
	}
	float s = hsum8(acc);
	for (; i < k; i++)
		s += a[i] * b[i];
	return s;
}

KERNEL void axpy(float a, const float *restrict x, float *restrict y, int k)
{
	v8f va = {a, a, a, a, a, a, a, a};
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		v8f vx, vy;
		memcpy(&vx, x + i, sizeof vx);
		memcpy(&vy, y + i, sizeof vy);
		vy += va * vx;
		memcpy(y + i, &vy, sizeof vy);
	}
	for (; i < k; i++)
		y[i] += a * x[i];
}

KERNEL void symv(const float *restrict g, const float *restrict x, float *restrict out, int k)
{
	for (int i = 0; i < k; i++)
		out[i] = dot(g + (size_t)i * k, x, k);
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void gram(const float *m, int32_t n, int k, float *out)
{
	cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, k, n, 1.0f, m, k, 0.0f, out, k);
	for (int i = 0; i < k; i++)
		for (int j = 0; j < i; j++)
			out[(size_t)i * k + j] = out[(size_t)j * k + i];
}

struct sx_als *sx_als_new(int32_t n_users, int32_t n_items, int k, float lambda, float alpha,
			  int cg_steps, uint64_t seed)
{
	if (n_users < 1 || n_items < 1 || k < 1 || k > 1024 || !(lambda >= 0) || !isfinite(lambda) ||
	    !(alpha >= 0) || !isfinite(alpha) || cg_steps < 1 || cg_steps > 100)
		return NULL;
	struct sx_als *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->n_users = n_users;
	a->n_items = n_items;
	a->k = k;
	a->lambda = lambda;
	a->alpha = alpha;
	a->cg_steps = cg_steps;
	a->U = malloc((size_t)n_users * k * sizeof(float));
	a->V = malloc((size_t)n_items * k * sizeof(float));
	a->gram_u = malloc((size_t)k * k * sizeof(float));
	a->gram_v = malloc((size_t)k * k * sizeof(float));
	if (!a->U || !a->V || !a->gram_u || !a->gram_v) {
		sx_als_free(a);
		return NULL;
	}
	uint64_t s = seed;
	for (size_t i = 0; i < (size_t)n_users * k; i++)
		a->U[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f * 0.01f;
	for (size_t i = 0; i < (size_t)n_items * k; i++)
		a->V[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f * 0.01f;
	gram(a->U, n_users, k, a->gram_u);
	gram(a->V, n_items, k, a->gram_v);
	return a;
}

static void free_data(struct sx_als *a)
{
	free(a->u_ptr);
	free(a->u_idx);
	free(a->u_cm1);
	free(a->i_ptr);
	free(a->i_idx);
	free(a->i_cm1);
	a->u_ptr = a->i_ptr = NULL;
	a->u_idx = a->i_idx = NULL;
	a->u_cm1 = a->i_cm1 = NULL;
	a->has_data = 0;
}

void sx_als_free(struct sx_als *a)
{
	if (!a)
		return;
	free_data(a);
	free(a->U);
	free(a->V);
	free(a->gram_u);
	free(a->gram_v);
	free(a);
}

int sx_als_set_data(struct sx_als *a, const int64_t *indptr, const int32_t *indices,
		    const float *weights)
{
	if (!a || !indptr || indptr[0] != 0)
		return SX_EINVAL;
	for (int32_t u = 0; u < a->n_users; u++)
		if (indptr[u + 1] < indptr[u])
			return SX_EINVAL;
	int64_t nnz_in = indptr[a->n_users];
	if (nnz_in > 0 && (!indices || !weights))
		return SX_EINVAL;
	int64_t nnz = 0;
	for (int64_t j = 0; j < nnz_in; j++) {
		if (indices[j] < 0 || indices[j] >= a->n_items || !isfinite(weights[j]) || weights[j] < 0)
			return SX_EINVAL;
		nnz += weights[j] > 0;
	}
	free_data(a);
	a->u_ptr = malloc(((size_t)a->n_users + 1) * sizeof(int64_t));
	a->i_ptr = calloc((size_t)a->n_items + 1, sizeof(int64_t));
	size_t m = nnz ? (size_t)nnz : 1;
	a->u_idx = malloc(m * sizeof(int32_t));
	a->i_idx = malloc(m * sizeof(int32_t));
	a->u_cm1 = malloc(m * sizeof(float));
	a->i_cm1 = malloc(m * sizeof(float));
	if (!a->u_ptr || !a->i_ptr || !a->u_idx || !a->i_idx || !a->u_cm1 || !a->i_cm1) {
		free_data(a);
		return SX_ENOMEM;
	}
	int64_t o = 0;
	a->u_ptr[0] = 0;
	for (int32_t u = 0; u < a->n_users; u++) {
		for (int64_t j = indptr[u]; j < indptr[u + 1]; j++) {
			if (weights[j] > 0) {
				a->u_idx[o] = indices[j];
				a->u_cm1[o] = a->alpha * weights[j];
				a->i_ptr[indices[j] + 1]++;
				o++;
			}
		}
		a->u_ptr[u + 1] = o;
	}
	for (int32_t i = 0; i < a->n_items; i++)
		a->i_ptr[i + 1] += a->i_ptr[i];
	int64_t *fill = malloc((size_t)a->n_items * sizeof(int64_t));
	if (!fill) {
		free_data(a);
		return SX_ENOMEM;
	}
	memcpy(fill, a->i_ptr, (size_t)a->n_items * sizeof(int64_t));
	for (int32_t u = 0; u < a->n_users; u++) {
		for (int64_t j = a->u_ptr[u]; j < a->u_ptr[u + 1]; j++) {
			int64_t d = fill[a->u_idx[j]]++;
			a->i_idx[d] = u;
			a->i_cm1[d] = a->u_cm1[j];
		}
	}
	free(fill);
	a->has_data = 1;
	return 0;
}

/* A parallel loop over blocks of rows. Workers pull blocks from `next`; the
 * result of a block depends only on the block, never on which thread ran it. */
struct par {
	size_t n_rows, n_blocks;
	atomic_size_t next, done_rows;
	atomic_int stop;
	const atomic_int *cancel;
	sx_als_progress_cb progress;
	void *ud;
	int phase;
	size_t reported; /* last rows_done passed to progress; caller only */
	size_t scratch_floats;
	void (*fn)(struct par *p, size_t lo, size_t hi, float *scratch, size_t block);
	/* half-step solve */
	const struct sx_als *als;
	float *X;
	const float *Y;
	const float *G; /* Y^T Y + lambda I */
	const int64_t *ptr;
	const int32_t *idx;
	const float *cm1;
	/* loss */
	double *partial;
};

static void run_blocks(struct par *p, float *scratch, int is_caller)
{
	for (;;) {
		if (atomic_load(&p->stop))
			return;
		if (p->cancel && atomic_load(p->cancel)) {
			atomic_store(&p->stop, 1);
			return;
		}
		size_t b = atomic_fetch_add(&p->next, 1);
		if (b >= p->n_blocks)
			return;
		size_t lo = b * BLOCK_ROWS;
		size_t hi = lo + BLOCK_ROWS < p->n_rows ? lo + BLOCK_ROWS : p->n_rows;
		p->fn(p, lo, hi, scratch, b);
		size_t done = atomic_fetch_add(&p->done_rows, hi - lo) + (hi - lo);
		if (is_caller && p->progress && done > p->reported) {
			p->reported = done;
			p->progress(p->ud, p->phase, done, p->n_rows);
		}
	}
}

struct worker {
	pthread_t tid;
	struct par *p;
	float *scratch;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	run_blocks(w->p, w->scratch, 0);
	return NULL;
}

/* Returns 0, SX_ECANCELED or SX_ENOMEM. */
static int par_run(struct par *p, int nthreads)
{
	p->n_blocks = (p->n_rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
	atomic_init(&p->next, 0);
	atomic_init(&p->done_rows, 0);
	atomic_init(&p->stop, 0);
	p->reported = 0;
	if (nthreads < 1)
		nthreads = 1;
	if (nthreads > MAX_THREADS)
		nthreads = MAX_THREADS;
	if ((size_t)nthreads > p->n_blocks)
		nthreads = p->n_blocks ? (int)p->n_blocks : 1;
	struct worker *w = calloc((size_t)nthreads, sizeof *w);
	if (!w)
		return SX_ENOMEM;
	int rc = 0, started = 0;
	for (int t = 0; t < nthreads; t++) {
		w[t].p = p;
		w[t].scratch = malloc((p->scratch_floats ? p->scratch_floats : 1) * sizeof(float));
		if (!w[t].scratch) {
			rc = SX_ENOMEM;
			break;
		}
	}
	if (rc == 0) {
		/* Fewer threads than asked only makes it slower: carry on. */
		for (int t = 1; t < nthreads; t++) {
			if (pthread_create(&w[t].tid, NULL, worker_main, &w[t]) != 0)
				break;
			started = t;
		}
		run_blocks(p, w[0].scratch, 1);
		for (int t = 1; t <= started; t++)
			pthread_join(w[t].tid, NULL);
	}
	for (int t = 0; t < nthreads; t++)
		free(w[t].scratch);
	free(w);
	if (rc == 0 && atomic_load(&p->stop))
		rc = SX_ECANCELED;
	/* Other threads may have run every block, so the caller may not have
	 * reported yet; a completed phase always ends with rows_done == total. */
	if (rc == 0 && p->progress && p->reported < p->n_rows)
		p->progress(p->ud, p->phase, p->n_rows, p->n_rows);
	return rc;
}

/* Conjugate gradient on (G + Y_u^T (C_u - I) Y_u) x = Y_u^T c_u, warm-started
 * from the row's current factors; implicit's `_least_squares_cg`. */
KERNEL void solve_rows_impl(struct par *p, size_t lo, size_t hi, float *scratch, size_t block)
{
	(void)block;
	const int k = p->als->k;
	float *r = scratch, *d = scratch + k, *Ad = scratch + 2 * k;
	for (size_t u = lo; u < hi; u++) {
		float *x = p->X + u * k;
		symv(p->G, x, r, k);
		for (int i = 0; i < k; i++)
			r[i] = -r[i];
		for (int64_t j = p->ptr[u]; j < p->ptr[u + 1]; j++) {
			const float *y = p->Y + (size_t)p->idx[j] * k;
			float cm1 = p->cm1[j];
			axpy((cm1 + 1.0f) - cm1 * dot(y, x, k), y, r, k);
		}
		memcpy(d, r, (size_t)k * sizeof(float));
		float rs_old = dot(r, r, k);
		if (rs_old < 1e-20f)
			continue;
		for (int it = 0; it < p->als->cg_steps; it++) {
			symv(p->G, d, Ad, k);
			for (int64_t j = p->ptr[u]; j < p->ptr[u + 1]; j++) {
				const float *y = p->Y + (size_t)p->idx[j] * k;
				axpy(p->cm1[j] * dot(y, d, k), y, Ad, k);
			}
			float dAd = dot(d, Ad, k);
			if (!(dAd > 0))
				break;
			float step = rs_old / dAd;
			axpy(step, d, x, k);
			axpy(-step, Ad, r, k);
			float rs_new = dot(r, r, k);
			if (rs_new < 1e-20f)
				break;
			float beta = rs_new / rs_old;
			for (int i = 0; i < k; i++)
				d[i] = r[i] + beta * d[i];
			rs_old = rs_new;
		}
	}
}

/* Per user: x^T (V^T V) x + sum over observed (c (1 - s)^2 - s^2) + lambda |x|^2,
 * i.e. the full sum over all items without touching the unobserved ones. */
KERNEL void loss_rows_impl(struct par *p, size_t lo, size_t hi, float *scratch, size_t block)
{
	const struct sx_als *a = p->als;
	const int k = a->k;
	double l = 0, conf = 0;
	for (size_t u = lo; u < hi; u++) {
		const float *x = a->U + u * k;
		symv(a->gram_v, x, scratch, k);
		l += dot(scratch, x, k) + a->lambda * (double)dot(x, x, k);
		for (int64_t j = a->u_ptr[u]; j < a->u_ptr[u + 1]; j++) {
			double s = dot(a->V + (size_t)a->u_idx[j] * k, x, k);
			double c = 1.0 + a->u_cm1[j];
			l += c * (1 - s) * (1 - s) - s * s;
			conf += a->u_cm1[j];
		}
	}
	p->partial[2 * block] = l;
	p->partial[2 * block + 1] = conf;
}

#ifdef SX_ALS_AVX2
__attribute__((target("avx2,fma"))) static void solve_rows_avx2(struct par *p, size_t lo, size_t hi,
								float *scratch, size_t block)
{
	solve_rows_impl(p, lo, hi, scratch, block);
}

__attribute__((target("avx2,fma"))) static void loss_rows_avx2(struct par *p, size_t lo, size_t hi,
							       float *scratch, size_t block)
{
	loss_rows_impl(p, lo, hi, scratch, block);
}

#endif

static void solve_rows(struct par *p, size_t lo, size_t hi, float *scratch, size_t block)
{
	solve_rows_impl(p, lo, hi, scratch, block);
}

static void loss_rows(struct par *p, size_t lo, size_t hi, float *scratch, size_t block)
{
	loss_rows_impl(p, lo, hi, scratch, block);
}

#ifdef SX_ALS_AVX2
#define PICK(fn) (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? fn##_avx2 : fn)
#else
#define PICK(fn) (fn)
#endif

static int half_step(struct sx_als *a, int phase, int nthreads, const atomic_int *cancel,
		     sx_als_progress_cb progress, void *ud)
{
	const int k = a->k;
	float *G = malloc((size_t)k * k * sizeof(float));
	if (!G)
		return SX_ENOMEM;
	memcpy(G, phase == 0 ? a->gram_v : a->gram_u, (size_t)k * k * sizeof(float));
	for (int i = 0; i < k; i++)
		G[(size_t)i * k + i] += a->lambda;
	struct par p = {
		.n_rows = (size_t)(phase == 0 ? a->n_users : a->n_items),
		.cancel = cancel,
		.progress = progress,
		.ud = ud,
		.phase = phase,
		.scratch_floats = 3 * (size_t)k,
		.fn = PICK(solve_rows),
		.als = a,
		.X = phase == 0 ? a->U : a->V,
		.Y = phase == 0 ? a->V : a->U,
		.G = G,
		.ptr = phase == 0 ? a->u_ptr : a->i_ptr,
		.idx = phase == 0 ? a->u_idx : a->i_idx,
		.cm1 = phase == 0 ? a->u_cm1 : a->i_cm1,
	};
	int rc = par_run(&p, nthreads);
	free(G);
	/* Refresh even after a cancel: some rows did change. */
	if (phase == 0)
		gram(a->U, a->n_users, k, a->gram_u);
	else
		gram(a->V, a->n_items, k, a->gram_v);
	return rc;
}

int sx_als_fit_iteration(struct sx_als *a, int nthreads, const atomic_int *cancel,
			 sx_als_progress_cb progress, void *ud)
{
	if (!a || nthreads < 1)
		return SX_EINVAL;
	if (!a->has_data)
		return SX_ESTATE;
	int rc = half_step(a, 0, nthreads, cancel, progress, ud);
	if (rc)
		return rc;
	return half_step(a, 1, nthreads, cancel, progress, ud);
}

int sx_als_loss(const struct sx_als *a, int nthreads, double *out)
{
	if (!a || !out)
		return SX_EINVAL;
	if (!a->has_data)
		return SX_ESTATE;
	size_t n_blocks = ((size_t)a->n_users + BLOCK_ROWS - 1) / BLOCK_ROWS;
	double *partial = calloc(2 * n_blocks, sizeof(double));
	if (!partial)
		return SX_ENOMEM;
	struct par p = {
		.n_rows = (size_t)a->n_users,
		.scratch_floats = (size_t)a->k,
		.fn = PICK(loss_rows),
		.als = a,
		.partial = partial,
	};
	int rc = par_run(&p, nthreads);
	if (rc == 0) {
		double l = 0, conf = 0;
		for (size_t b = 0; b < n_blocks; b++) {
			l += partial[2 * b];
			conf += partial[2 * b + 1];
		}
		double item_norm = 0;
		for (size_t i = 0; i < (size_t)a->n_items * a->k; i++)
			item_norm += (double)a->V[i] * a->V[i];
		l += a->lambda * item_norm;
		*out = l / ((double)a->n_users * a->n_items + conf);
	}
	free(partial);
	return rc;
}

int32_t sx_als_n_users(const struct sx_als *a) { return a->n_users; }
int32_t sx_als_n_items(const struct sx_als *a) { return a->n_items; }
int sx_als_k(const struct sx_als *a) { return a->k; }
float *sx_als_user_factors(struct sx_als *a) { return a->U; }
float *sx_als_item_factors(struct sx_als *a) { return a->V; }

int sx_als_set_factors(struct sx_als *a, const float *uf, const float *vf)
{
	if (!a)
		return SX_EINVAL;
	size_t nu = (size_t)a->n_users * a->k, nv = (size_t)a->n_items * a->k;
	if (uf)
		for (size_t i = 0; i < nu; i++)
			if (!isfinite(uf[i]))
				return SX_EINVAL;
	if (vf)
		for (size_t i = 0; i < nv; i++)
			if (!isfinite(vf[i]))
				return SX_EINVAL;
	if (uf && uf != a->U)
		memcpy(a->U, uf, nu * sizeof(float));
	if (vf && vf != a->V)
		memcpy(a->V, vf, nv * sizeof(float));
	gram(a->U, a->n_users, a->k, a->gram_u);
	gram(a->V, a->n_items, a->k, a->gram_v);
	return 0;
}

/* A (k x k, row-major, upper Cholesky factor on success) and b of a user's
 * exact system. The rank-n correction goes through dsyrk on the item rows
 * scaled by sqrt(c - 1). */
static int user_system(const struct sx_als *a, const int32_t *items, const float *weights,
		       size_t n, double *A, double *b)
{
	const int k = a->k;
	size_t m = 0;
	for (size_t j = 0; j < n; j++) {
		if (items[j] < 0 || items[j] >= a->n_items || !isfinite(weights[j]) || weights[j] < 0)
			return SX_EINVAL;
		m += weights[j] > 0;
	}
	if (m > INT32_MAX)
		return SX_EINVAL;
	for (int i = 0; i < k; i++) {
		for (int j = i; j < k; j++)
			A[(size_t)i * k + j] = a->gram_v[(size_t)i * k + j];
		A[(size_t)i * k + i] += a->lambda;
	}
	if (b)
		memset(b, 0, (size_t)k * sizeof(double));
	if (m > 0) {
		double *Ys = malloc(m * (size_t)k * sizeof(double));
		if (!Ys)
			return SX_ENOMEM;
		size_t r = 0;
		for (size_t j = 0; j < n; j++) {
			if (!(weights[j] > 0))
				continue;
			const float *y = a->V + (size_t)items[j] * k;
			double cm1 = (double)(a->alpha * weights[j]), sc = sqrt(cm1);
			double *row = Ys + r++ * k;
			for (int c = 0; c < k; c++)
				row[c] = sc * y[c];
			if (b)
				for (int c = 0; c < k; c++)
					b[c] += (1.0 + cm1) * y[c];
		}
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, k, (int)m, 1.0, Ys, k, 1.0, A, k);
		free(Ys);
	}
	if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', k, A, k) != 0)
		return SX_EINTERNAL;
	return 0;
}

int sx_als_fold_in(const struct sx_als *a, const int32_t *items, const float *weights, size_t n,
		   float *out)
{
	if (!a || !out || (n && (!items || !weights)))
		return SX_EINVAL;
	const int k = a->k;
	double *A = malloc(((size_t)k * k + k) * sizeof(double));
	if (!A)
		return SX_ENOMEM;
	double *b = A + (size_t)k * k;
	int rc = user_system(a, items, weights, n, A, b);
	if (rc == 0 && LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', k, 1, A, k, b, 1) != 0)
		rc = SX_EINTERNAL;
	if (rc == 0)
		for (int i = 0; i < k; i++)
			out[i] = (float)b[i];
	free(A);
	return rc;
}

struct scored {
	float s;
	int32_t id;
};

/* Strict order: higher score first, then lower id. */
static inline int better(struct scored x, struct scored y)
{
	return x.s > y.s || (x.s == y.s && x.id < y.id);
}

/* A heap whose root is the worst kept entry. */
static void sift_down(struct scored *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, w = i;
		if (l < n && better(h[w], h[l]))
			w = l;
		if (r < n && better(h[w], h[r]))
			w = r;
		if (w == i)
			return;
		struct scored t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

static void sift_up(struct scored *h, size_t i)
{
	while (i > 0) {
		size_t par = (i - 1) / 2;
		if (!better(h[par], h[i]))
			return;
		struct scored t = h[i];
		h[i] = h[par];
		h[par] = t;
		i = par;
	}
}

static void heap_offer(struct scored *h, size_t *len, size_t cap, struct scored e)
{
	if (*len < cap) {
		h[*len] = e;
		sift_up(h, (*len)++);
	} else if (cap > 0 && better(e, h[0])) {
		h[0] = e;
		sift_down(h, *len, 0);
	}
}

/* Pops the heap into descending order. */
static void heap_drain(struct scored *h, size_t len, int32_t *ids, float *scores)
{
	for (size_t n = len; n > 0; n--) {
		ids[n - 1] = h[0].id;
		if (scores)
			scores[n - 1] = h[0].s;
		h[0] = h[n - 1];
		sift_down(h, n - 1, 0);
	}
}

int sx_als_recommend(const struct sx_als *a, const float *x, const int32_t *exclude,
		     size_t n_exclude, size_t n, int32_t *out_items, float *out_scores)
{
	if (!a || !x || (n && !out_items) || (n_exclude && !exclude))
		return SX_EINVAL;
	size_t ni = (size_t)a->n_items;
	if (n > ni)
		n = ni;
	if (n == 0)
		return 0;
	float *s = malloc(ni * sizeof(float));
	uint8_t *skip = calloc(ni, 1);
	struct scored *h = malloc(n * sizeof *h);
	if (!s || !skip || !h) {
		free(s);
		free(skip);
		free(h);
		return SX_ENOMEM;
	}
	cblas_sgemv(CblasRowMajor, CblasNoTrans, a->n_items, a->k, 1.0f, a->V, a->k, x, 1, 0.0f, s, 1);
	for (size_t j = 0; j < n_exclude; j++)
		if (exclude[j] >= 0 && exclude[j] < a->n_items)
			skip[exclude[j]] = 1;
	size_t len = 0;
	for (size_t i = 0; i < ni; i++)
		if (!skip[i])
			heap_offer(h, &len, n, (struct scored){s[i], (int32_t)i});
	heap_drain(h, len, out_items, out_scores);
	free(s);
	free(skip);
	free(h);
	return (int)len;
}

int sx_als_explain(const struct sx_als *a, const int32_t *items, const float *weights,
		   size_t n_items, int32_t item, size_t n, int32_t *out_items, float *out_contrib,
		   double *out_total)
{
	if (!a || (n_items && (!items || !weights)) || item < 0 || item >= a->n_items ||
	    (n && (!out_items || !out_contrib)))
		return SX_EINVAL;
	const int k = a->k;
	double *A = malloc(((size_t)k * k + k) * sizeof(double));
	struct scored *h = malloc((n ? n : 1) * sizeof *h);
	if (!A || !h) {
		free(A);
		free(h);
		return SX_ENOMEM;
	}
	double *z = A + (size_t)k * k;
	int rc = user_system(a, items, weights, n_items, A, NULL);
	if (rc == 0) {
		for (int i = 0; i < k; i++)
			z[i] = a->V[(size_t)item * k + i];
		if (LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', k, 1, A, k, z, 1) != 0)
			rc = SX_EINTERNAL;
	}
	size_t len = 0;
	if (rc == 0) {
		double total = 0;
		for (size_t j = 0; j < n_items; j++) {
			if (!(weights[j] > 0))
				continue;
			const float *y = a->V + (size_t)items[j] * k;
			double s = 0;
			for (int i = 0; i < k; i++)
				s += z[i] * y[i];
			s *= 1.0 + (double)(a->alpha * weights[j]);
			total += s;
			heap_offer(h, &len, n, (struct scored){(float)s, items[j]});
		}
		heap_drain(h, len, out_items, out_contrib);
		if (out_total)
			*out_total = total;
	}
	free(A);
	free(h);
	return rc ? rc : (int)len;
}

int sx_als_explain_many(const struct sx_als *a, const int32_t *items, const float *weights, size_t n_items,
			const int32_t *targets, size_t n_targets, size_t n, int32_t *out_items, float *out_contrib,
			double *out_total, int *out_count)
{
	if (!a || (n_items && (!items || !weights)) || (n_targets && (!targets || !out_total || !out_count)) ||
	    (n && n_targets && (!out_items || !out_contrib)))
		return SX_EINVAL;
	for (size_t t = 0; t < n_targets; t++)
		if (targets[t] < 0 || targets[t] >= a->n_items)
			return SX_EINVAL;
	if (n_targets == 0)
		return 0;
	const int k = a->k;
	/* A (k x k), then Z (k x n_targets, row-major): one factorisation and one
	 * multi-right-hand-side solve for all targets. */
	double *A = malloc(((size_t)k * k + (size_t)k * n_targets) * sizeof(double));
	struct scored *h = malloc((n ? n : 1) * sizeof *h);
	if (!A || !h) {
		free(A);
		free(h);
		return SX_ENOMEM;
	}
	double *Z = A + (size_t)k * k;
	int rc = user_system(a, items, weights, n_items, A, NULL);
	if (rc == 0) {
		for (size_t t = 0; t < n_targets; t++)
			for (int i = 0; i < k; i++)
				Z[(size_t)i * n_targets + t] = a->V[(size_t)targets[t] * k + i];
		if (LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', k, (lapack_int)n_targets, A, k, Z, (lapack_int)n_targets) != 0)
			rc = SX_EINTERNAL;
	}
	for (size_t t = 0; rc == 0 && t < n_targets; t++) {
		double total = 0;
		size_t len = 0;
		for (size_t j = 0; j < n_items; j++) {
			if (!(weights[j] > 0))
				continue;
			const float *y = a->V + (size_t)items[j] * k;
			double s = 0;
			for (int i = 0; i < k; i++)
				s += Z[(size_t)i * n_targets + t] * y[i];
			s *= 1.0 + (double)(a->alpha * weights[j]);
			total += s;
			heap_offer(h, &len, n, (struct scored){(float)s, items[j]});
		}
		heap_drain(h, len, out_items + t * n, out_contrib + t * n);
		out_total[t] = total;
		out_count[t] = (int)len;
	}
	free(A);
	free(h);
	return rc;
}
