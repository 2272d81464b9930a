#include "core/math/logreg.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/sx.h"

/* Rows per block of the objective's pass: about 128 KiB of doubles, so that
 * a block and the next one, prefetched, sit in L2 together; at most
 * BLOCK_ROWS, at least MIN_BLOCK_ROWS so that the partial sums stay small
 * next to X. A function of d alone, so that the summation order, and thus
 * the result, does not depend on the number of threads. */
#define BLOCK_BYTES ((size_t)128 << 10)
#define BLOCK_ROWS 1024
#define MIN_BLOCK_ROWS 64
#define PREFETCH_MAX_BYTES ((size_t)512 << 10)
#define MAX_THREADS 256
#define LS_MAX_EVALS 40

struct sx_logreg {
	size_t d;
	double *coef;
	double intercept;
	int n_iter;
	int n_eval;
	int converged;
	int used_single;
};

void sx_logreg_opts_default(struct sx_logreg_opts *o)
{
	o->l2 = 1.0;
	o->fit_intercept = 1;
	o->class_weight[0] = 1.0;
	o->class_weight[1] = 1.0;
	o->max_iter = 1000;
	o->tol = 1e-8;
	o->history = 10;
	o->nthreads = 1;
}

struct sx_logreg *sx_logreg_new(size_t d)
{
	if (d == 0 || d > SIZE_MAX / sizeof(double) / 4)
		return NULL;
	struct sx_logreg *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->d = d;
	m->coef = calloc(d, sizeof(double));
	if (!m->coef) {
		free(m);
		return NULL;
	}
	return m;
}

void sx_logreg_free(struct sx_logreg *m)
{
	if (!m)
		return;
	free(m->coef);
	free(m);
}

typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef uint64_t v4u __attribute__((vector_size(32)));

/* The pass over X is compiled twice, for AVX2+FMA and for baseline x86-64,
 * and picked at run time; the kernels are inlined into each. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SX_LOGREG_AVX2 1
#endif
#define KERNEL static inline __attribute__((always_inline))
/* Vector values cross only always-inlined kernels, never a real call. */
#pragma GCC diagnostic ignored "-Wpsabi"

KERNEL double hsum(v4d a) { return (a[0] + a[2]) + (a[1] + a[3]); }

KERNEL double dotd(const double *restrict a, const double *restrict b, size_t n)
{
	v4d acc = {0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		v4d va, vb;
		memcpy(&va, a + i, sizeof va);
		memcpy(&vb, b + i, sizeof vb);
		acc += va * vb;
	}
	double s = hsum(acc);
	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

KERNEL double sigmoid(double z)
{
	if (z >= 0)
		return 1.0 / (1.0 + exp(-z));
	double e = exp(z);
	return e / (1.0 + e);
}

/* X is double, or float when every value converts exactly (single != 0).
 * Widening a float is exact, so both read the same doubles and, the
 * arithmetic being the same, give bit-identical results; the float copy only
 * halves the memory traffic. */
KERNEL v4d load4(const void *X, size_t at, int single)
{
	v4d v;
	if (single) {
		v4f f;
		memcpy(&f, (const float *)X + at, sizeof f);
		v = __builtin_convertvector(f, v4d);
	} else {
		memcpy(&v, (const double *)X + at, sizeof v);
	}
	return v;
}

/* The last cnt < 4 values from at, zero-padded. Tails take the same vector
 * multiply-adds as full groups: left scalar, the compiler contracts and
 * vectorises them differently for float and double loads. */
KERNEL v4d load_tail(const void *X, size_t at, size_t cnt, int single)
{
	v4d v = {0};
	for (size_t k = 0; k < cnt; k++)
		v[k] = single ? (double)((const float *)X)[at + k] : ((const double *)X)[at + k];
	return v;
}

KERNEL v4d splat(double a) { return (v4d){a, a, a, a}; }

KERNEL v4d vsel(v4l mask, v4d a, v4d b) { return (v4d)(((v4l)a & mask) | ((v4l)b & ~mask)); }

/* e^x for x <= 0, 0 below -708 (where e^x is subnormal or zero). Cody-Waite
 * reduction x = k ln 2 + r, |r| <= ln 2 / 2, and the degree-13 Taylor
 * polynomial, whose truncation error (< 1e-17 relative) is below rounding,
 * evaluated by Estrin's scheme: depth 4 instead of Horner's 13 dependent
 * multiply-adds, which would leave the sweep waiting on latency. */
KERNEL v4d vexp_neg(v4d x)
{
	const v4d shift = splat(0x1.8p52);
	v4l live = x > splat(-708.0);
	x = vsel(live, x, splat(-708.0));
	v4d t = x * splat(1.4426950408889634) + shift;
	v4d k = t - shift;
	v4d r = x - k * splat(6.93147180369123816490e-01);
	r = r - k * splat(1.90821492927058770002e-10);
	v4d r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
	v4d q0 = splat(1.0) + r;
	v4d q1 = splat(1.0 / 2) + splat(1.0 / 6) * r;
	v4d q2 = splat(1.0 / 24) + splat(1.0 / 120) * r;
	v4d q3 = splat(1.0 / 720) + splat(1.0 / 5040) * r;
	v4d q4 = splat(1.0 / 40320) + splat(1.0 / 362880) * r;
	v4d q5 = splat(1.0 / 3628800) + splat(1.0 / 39916800) * r;
	v4d q6 = splat(1.0 / 479001600) + splat(1.0 / 6227020800) * r;
	v4d u0 = q0 + q1 * r2, u1 = q2 + q3 * r2, u2 = q4 + q5 * r2;
	v4d p = (u0 + u1 * r4) + (u2 + q6 * r4) * r8;
	v4u ki = (v4u)t - (v4u)shift;
	v4d scale = (v4d)((ki + 1023) << 52);
	return (v4d)((v4l)(p * scale) & live);
}

/* log(1 + e) for 0 <= e <= 1 as 2 atanh(s), s = e / (2 + e) <= 1/3: the odd
 * series to s^33 leaves a relative truncation error below 2e-18, and there is
 * no cancellation for small e. Estrin's scheme in t = s^2, as above. */
KERNEL v4d vlog1p_unit(v4d e)
{
	v4d s = e / (e + splat(2.0)), t = s * s;
	v4d t2 = t * t, t4 = t2 * t2, t8 = t4 * t4, t16 = t8 * t8;
#define LP_PAIR(k) (splat(1.0 / (2 * (k) + 1)) + splat(1.0 / (2 * (k) + 3)) * t)
	v4d q0 = LP_PAIR(0), q1 = LP_PAIR(2), q2 = LP_PAIR(4), q3 = LP_PAIR(6);
	v4d q4 = LP_PAIR(8), q5 = LP_PAIR(10), q6 = LP_PAIR(12), q7 = LP_PAIR(14);
#undef LP_PAIR
	v4d u0 = q0 + q1 * t2, u1 = q2 + q3 * t2, u2 = q4 + q5 * t2, u3 = q6 + q7 * t2;
	v4d w0 = u0 + u1 * t4, w1 = u2 + u3 * t4;
	v4d p = (w0 + w1 * t8) + splat(1.0 / 33) * t16;
	return splat(2.0) * s * p;
}

struct problem {
	const double *X;
	const float *Xf; /* X as float, or NULL */
	const uint8_t *y;
	const double *sw;
	size_t n, d;
	double cw[2];
	double l2, S;
	int fit_intercept;
	int nthreads;
	int avx2;
	size_t block_rows, n_blocks;
	double *partial; /* n_blocks x (d + 2): loss, grad_w, grad_b */
	/* per evaluation */
	const double *theta;
	atomic_size_t next;
	int evals;
	/* First evaluation only: check X and build the float copy. */
	int scan;
	float *Xf_build;     /* or NULL */
	uint8_t *scan_state; /* n_blocks of SCAN_* bits */
};

#define SCAN_NONFINITE 1
#define SCAN_INEXACT 2

/* Checks a block of X (just read by the margins, so from cache) for
 * non-finite values and, into Xf unless NULL, converts it to float while
 * every value converts exactly. Values beyond the float range are clamped
 * before converting (converting them is undefined) and then fail the round
 * trip; so do NaN and, through x - x != 0, infinities. */
KERNEL int scan_block(const double *X, size_t nd, float *Xf)
{
	const v4d big = splat(FLT_MAX);
	int state = Xf ? 0 : SCAN_INEXACT;
	size_t i = 0;
	for (; i + 4 <= nd && !state; i += 4) {
		v4d v, c;
		memcpy(&v, X + i, sizeof v);
		c = vsel(v > big, big, v);
		c = vsel(c < -big, -big, c);
		v4f f = __builtin_convertvector(c, v4f);
		v4l ok = (__builtin_convertvector(f, v4d) == v) & (v - v == splat(0.0));
		if ((ok[0] & ok[1] & ok[2] & ok[3]) == 0)
			break;
		memcpy(Xf + i, &f, sizeof f);
	}
	for (; i < nd && !state; i++) {
		if (!(fabs(X[i]) <= FLT_MAX) || (double)(float)X[i] != X[i])
			break;
		Xf[i] = (float)X[i];
	}
	if (i < nd)
		state |= SCAN_INEXACT;
	for (; i < nd; i++)
		if (!isfinite(X[i]))
			return state | SCAN_NONFINITE;
	return state;
}

/* z[i] = x_i . w + b0 for rows of X; four rows at a time so that four
 * independent chains of multiply-adds keep the loads streaming. */
KERNEL void margins(const void *X, size_t d, size_t rows, const double *w, double b0, double *z,
		    int single)
{
	size_t i = 0;
	for (; i + 4 <= rows; i += 4) {
		v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
		size_t o = i * d, j = 0;
		for (; j + 4 <= d; j += 4) {
			v4d wv;
			memcpy(&wv, w + j, sizeof wv);
			a0 += load4(X, o + j, single) * wv;
			a1 += load4(X, o + d + j, single) * wv;
			a2 += load4(X, o + 2 * d + j, single) * wv;
			a3 += load4(X, o + 3 * d + j, single) * wv;
		}
		if (j < d) {
			v4d wv = load_tail(w, j, d - j, 0);
			a0 += load_tail(X, o + j, d - j, single) * wv;
			a1 += load_tail(X, o + d + j, d - j, single) * wv;
			a2 += load_tail(X, o + 2 * d + j, d - j, single) * wv;
			a3 += load_tail(X, o + 3 * d + j, d - j, single) * wv;
		}
		z[i] = hsum(a0) + b0;
		z[i + 1] = hsum(a1) + b0;
		z[i + 2] = hsum(a2) + b0;
		z[i + 3] = hsum(a3) + b0;
	}
	for (; i < rows; i++) {
		v4d a = {0};
		size_t o = i * d, j = 0;
		for (; j + 4 <= d; j += 4) {
			v4d wv;
			memcpy(&wv, w + j, sizeof wv);
			a += load4(X, o + j, single) * wv;
		}
		if (j < d)
			a += load_tail(X, o + j, d - j, single) * load_tail(w, j, d - j, 0);
		z[i] = hsum(a) + b0;
	}
}

/* g[j] = sum_i r[i] X[i][j]. Column panels held in registers across the
 * rows instead of a load-add-store of g per row: 32 columns in eight
 * accumulators, then 4 at a time with even and odd rows apart, then the
 * last 1..3 the same way, zero-padded. */
KERNEL void gradient(const void *X, size_t d, size_t rows, const double *r, double *g, int single)
{
	size_t j = 0;
	for (; j + 32 <= d; j += 32) {
		v4d a[8] = {{0}};
		for (size_t i = 0; i < rows; i++) {
			v4d ri = splat(r[i]);
#pragma GCC unroll 8
			for (int k = 0; k < 8; k++)
				a[k] += ri * load4(X, i * d + j + 4 * (size_t)k, single);
		}
#pragma GCC unroll 8
		for (int k = 0; k < 8; k++)
			memcpy(g + j + 4 * k, &a[k], sizeof a[k]);
	}
	for (; j + 4 <= d; j += 4) {
		v4d e = {0}, o = {0};
		size_t i = 0;
		for (; i + 2 <= rows; i += 2) {
			e += splat(r[i]) * load4(X, i * d + j, single);
			o += splat(r[i + 1]) * load4(X, (i + 1) * d + j, single);
		}
		if (i < rows)
			e += splat(r[i]) * load4(X, i * d + j, single);
		e += o;
		memcpy(g + j, &e, sizeof e);
	}
	if (j < d) {
		v4d e = {0}, o = {0};
		size_t i = 0, cnt = d - j;
		for (; i + 2 <= rows; i += 2) {
			e += splat(r[i]) * load_tail(X, i * d + j, cnt, single);
			o += splat(r[i + 1]) * load_tail(X, (i + 1) * d + j, cnt, single);
		}
		if (i < rows)
			e += splat(r[i]) * load_tail(X, i * d + j, cnt, single);
		e += o;
		for (size_t k = 0; k < cnt; k++)
			g[j + k] = e[k];
	}
}

/* Loss and residual of four rows: z margins, y labels, s weights. One exp
 * serves both: softplus(z) = max(z, 0) + log1p(e) and sigmoid(z) = 1 / (1 + e)
 * or e / (1 + e), with e = exp(-|z|). */
KERNEL v4d loss4(v4d z, v4d y, v4d s, v4d *loss, v4d *gb)
{
	v4l pos = z >= splat(0.0);
	v4d e = vexp_neg(vsel(pos, -z, z));
	v4d sp = vsel(pos, z, splat(0.0)) + vlog1p_unit(e);
	v4d sg = vsel(pos, splat(1.0), e) / (splat(1.0) + e);
	*loss += s * (sp - y * z);
	v4d r = s * (sg - y);
	*gb += r;
	return r;
}

/* One evaluation over a block of rows small enough to stay in L2: the
 * margins stream X from memory, the loss sweep touches no memory, and the
 * gradient re-reads the block from cache, so X crosses the memory bus once
 * per evaluation. */
KERNEL void eval_block_impl(struct problem *p, size_t b, size_t b_next, int single)
{
	const size_t d = p->d;
	double *out = p->partial + b * (d + 2);
	double z[BLOCK_ROWS];
	const double *w = p->theta;
	double b0 = p->fit_intercept ? p->theta[d] : 0.0;
	const size_t br = p->block_rows;
	size_t lo = b * br, hi = lo + br < p->n ? lo + br : p->n;
	size_t rows = hi - lo;
	const void *X = single ? (const void *)(p->Xf + lo * d) : (const void *)(p->X + lo * d);
	margins(X, d, rows, w, b0, z, single);
	if (p->scan)
		p->scan_state[b] = (uint8_t)scan_block(p->X + lo * d, rows * d,
						       p->Xf_build ? p->Xf_build + lo * d : NULL);
	const uint8_t *y = p->y + lo;
	const double *sw = p->sw ? p->sw + lo : NULL;
	const v4d cw0 = splat(p->cw[0]), cw1 = splat(p->cw[1]);
	/* The block this thread takes next is fetched into L2 while the loss
	 * sweep computes, instead of while the next margins wait for it. Only
	 * for the float copy: on the caller's doubles, in small pages, the
	 * prefetches' page walks cost more than they save (measured). */
	const char *pf = NULL;
	size_t pf_len = 0, pf_at = 0, pf_step = 0;
	if (single && b_next < p->n_blocks && rows >= 4) {
		size_t nlo = b_next * br, nhi = nlo + br < p->n ? nlo + br : p->n;
		pf = (const char *)(p->Xf + nlo * d);
		pf_len = (nhi - nlo) * d * sizeof(float);
		if (pf_len > PREFETCH_MAX_BYTES)
			pf_len = 0;
		pf_step = (pf_len / 64 + rows / 4) / (rows / 4) * 64;
	}
	v4d loss = {0}, gb = {0};
	size_t i = 0;
	for (; i + 4 <= rows; i += 4) {
		for (size_t e = pf_at + pf_step; pf_at < e && pf_at < pf_len; pf_at += 64)
			__builtin_prefetch(pf + pf_at, 0, 2);
		v4d zv, yv = {y[i], y[i + 1], y[i + 2], y[i + 3]};
		memcpy(&zv, z + i, sizeof zv);
		v4d sv = vsel(yv > splat(0.0), cw1, cw0);
		if (sw) {
			v4d swv;
			memcpy(&swv, sw + i, sizeof swv);
			sv *= swv;
		}
		v4d rv = loss4(zv, yv, sv, &loss, &gb);
		memcpy(z + i, &rv, sizeof rv);
	}
	if (i < rows) {
		/* Padding rows get weight 0 and add exact zeros. */
		v4d zv = {0}, yv = {0}, sv = {0};
		for (size_t k = 0; i + k < rows; k++) {
			zv[k] = z[i + k];
			yv[k] = y[i + k];
			sv[k] = p->cw[y[i + k]] * (sw ? sw[i + k] : 1.0);
		}
		v4d rv = loss4(zv, yv, sv, &loss, &gb);
		for (size_t k = 0; i + k < rows; k++)
			z[i + k] = rv[k];
	}
	gradient(X, d, rows, z, out + 1, single);
	out[0] = hsum(loss);
	out[d + 1] = hsum(gb);
}

static void eval_block(struct problem *p, size_t b, size_t b_next)
{
	if (p->Xf)
		eval_block_impl(p, b, b_next, 1);
	else
		eval_block_impl(p, b, b_next, 0);
}

#ifdef SX_LOGREG_AVX2
__attribute__((target("avx2,fma"))) static void eval_block_avx2(struct problem *p, size_t b,
								  size_t b_next)
{
	if (p->Xf)
		eval_block_impl(p, b, b_next, 1);
	else
		eval_block_impl(p, b, b_next, 0);
}
#endif

/* SX_VEC_ISA=sse, as for core/math/vec.h, selects the baseline pass. */
static int use_avx2(void)
{
#ifdef SX_LOGREG_AVX2
	const char *cap = getenv("SX_VEC_ISA");
	if (cap && strcmp(cap, "sse") == 0)
		return 0;
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return 0;
#endif
}

static void *eval_worker(void *arg)
{
	struct problem *p = arg;
#ifdef SX_LOGREG_AVX2
	void (*fn)(struct problem *, size_t, size_t) = p->avx2 ? eval_block_avx2 : eval_block;
#else
	void (*fn)(struct problem *, size_t, size_t) = eval_block;
#endif
	/* Claim one block ahead, so that it can be prefetched. */
	size_t b = atomic_fetch_add(&p->next, 1);
	while (b < p->n_blocks) {
		size_t b_next = atomic_fetch_add(&p->next, 1);
		fn(p, b, b_next);
		b = b_next;
	}
	return NULL;
}

/* f and g (dim values) of the objective scaled by 1 / S at theta. */
static int evaluate(struct problem *p, const double *theta, double *f, double *g)
{
	const size_t d = p->d;
	p->theta = theta;
	p->evals++;
	atomic_store(&p->next, 0);
	int nt = p->nthreads;
	if ((size_t)nt > p->n_blocks)
		nt = (int)p->n_blocks;
	pthread_t tid[MAX_THREADS];
	int started = 0;
	/* Blocks, not threads, fix the result: running short of threads only
	 * makes the pass slower. */
	for (int t = 1; t < nt; t++) {
		if (pthread_create(&tid[t], NULL, eval_worker, p) != 0)
			break;
		started = t;
	}
	eval_worker(p);
	for (int t = 1; t <= started; t++)
		pthread_join(tid[t], NULL);
	if (p->scan) {
		int state = 0;
		for (size_t b = 0; b < p->n_blocks; b++)
			state |= p->scan_state[b];
		p->scan = 0;
		if (state & SCAN_NONFINITE)
			return SX_EINVAL;
		if (!(state & SCAN_INEXACT))
			p->Xf = p->Xf_build;
	}
	double loss = 0, gb = 0;
	memset(g, 0, d * sizeof(double));
	for (size_t b = 0; b < p->n_blocks; b++) {
		const double *part = p->partial + b * (d + 2);
		loss += part[0];
		for (size_t j = 0; j < d; j++)
			g[j] += part[1 + j];
		gb += part[d + 1];
	}
	double ww = 0;
	for (size_t j = 0; j < d; j++) {
		ww += theta[j] * theta[j];
		g[j] = (g[j] + p->l2 * theta[j]) / p->S;
	}
	if (p->fit_intercept)
		g[d] = gb / p->S;
	*f = (loss + 0.5 * p->l2 * ww) / p->S;
	return 0;
}

static double dotn(const double *a, const double *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static double cubic_min(double a_lo, double f_lo, double g_lo, double a_hi, double f_hi, double g_hi)
{
	double d1 = g_lo + g_hi - 3 * (f_lo - f_hi) / (a_lo - a_hi);
	double disc = d1 * d1 - g_lo * g_hi;
	double lo = fmin(a_lo, a_hi), hi = fmax(a_lo, a_hi), w = hi - lo;
	double a = 0.5 * (a_lo + a_hi);
	if (disc >= 0) {
		double d2 = copysign(sqrt(disc), a_hi - a_lo);
		double den = g_hi - g_lo + 2 * d2;
		if (den != 0) {
			double c = a_hi - (a_hi - a_lo) * (g_hi + d2 - d1) / den;
			if (isfinite(c))
				a = c;
		}
	}
	/* Keep the trial well inside the bracket so it keeps shrinking. */
	if (!(a >= lo + 0.1 * w && a <= hi - 0.1 * w))
		a = 0.5 * (a_lo + a_hi);
	return a;
}

struct ls {
	struct problem *p;
	size_t dim;
	const double *x, *dir;
	double *xt, *gt;
	double f0, g0;
	int evals;
};

static int ls_eval(struct ls *l, double a, double *f, double *dg)
{
	for (size_t i = 0; i < l->dim; i++)
		l->xt[i] = l->x[i] + a * l->dir[i];
	l->evals++;
	int rc = evaluate(l->p, l->xt, f, l->gt);
	*dg = dotn(l->gt, l->dir, l->dim);
	return rc;
}

/* Armijo's sufficient decrease, or, where f is flat to rounding, the
 * approximate Wolfe test of Hager & Zhang (2005): the slope has risen enough
 * that f must have fallen in exact arithmetic. Without the latter the search
 * stalls before the gradient is as small as double precision allows. */
static int decreased(const struct ls *l, double a, double f, double g, double c1)
{
	if (!isfinite(f))
		return 0;
	if (f <= l->f0 + c1 * a * l->g0)
		return 1;
	return f <= l->f0 + 1e-12 * fabs(l->f0) && g <= -0.8 * l->g0;
}

/* Nocedal & Wright alg. 3.6: the bracket [lo, hi] (either order) holds a
 * point satisfying the strong Wolfe conditions; lo has the lower f. */
static int zoom(struct ls *l, double lo, double flo, double glo, double hi, double fhi,
		double ghi, double c1, double c2, double *f_out)
{
	double f, g;
	int rc;
	while (l->evals < LS_MAX_EVALS && fabs(hi - lo) > 1e-16 * fmax(1, fabs(lo))) {
		double at = isfinite(fhi) && isfinite(ghi) ? cubic_min(lo, flo, glo, hi, fhi, ghi)
							   : 0.5 * (lo + hi);
		if ((rc = ls_eval(l, at, &f, &g)) != 0)
			return rc;
		if (!decreased(l, at, f, g, c1) || f > flo) {
			hi = at;
			fhi = f;
			ghi = g;
			continue;
		}
		if (fabs(g) <= -c2 * l->g0) {
			*f_out = f;
			return 1;
		}
		if (g * (hi - lo) >= 0) {
			hi = lo;
			fhi = flo;
			ghi = glo;
		}
		lo = at;
		flo = f;
		glo = g;
	}
	/* Out of evaluations: settle for sufficient decrease without curvature. */
	if (lo > 0 && flo < l->f0) {
		if ((rc = ls_eval(l, lo, &f, &g)) != 0)
			return rc;
		*f_out = f;
		return 1;
	}
	return 0;
}

/* Strong Wolfe line search, Nocedal & Wright alg. 3.5. On success (1) xt/gt
 * and *f_out hold the accepted point; 0: no step found; negative: an error. */
static int line_search(struct ls *l, double a1, double *f_out)
{
	const double c1 = 1e-4, c2 = 0.9;
	double a_prev = 0, f_prev = l->f0, g_prev = l->g0;
	double a = a1, f, g;
	int rc;
	for (int i = 0;; i++) {
		if ((rc = ls_eval(l, a, &f, &g)) != 0)
			return rc;
		if (!decreased(l, a, f, g, c1) || (i > 0 && f > f_prev))
			return zoom(l, a_prev, f_prev, g_prev, a, f, g, c1, c2, f_out);
		if (fabs(g) <= -c2 * l->g0) {
			*f_out = f;
			return 1;
		}
		if (g >= 0)
			return zoom(l, a, f, g, a_prev, f_prev, g_prev, c1, c2, f_out);
		if (l->evals >= LS_MAX_EVALS) {
			*f_out = f;
			return 1;
		}
		a_prev = a;
		f_prev = f;
		g_prev = g;
		a *= 2;
	}
}

static int check_opts(const struct sx_logreg_opts *o)
{
	return isfinite(o->l2) && o->l2 >= 0 && isfinite(o->class_weight[0]) &&
	       isfinite(o->class_weight[1]) && o->class_weight[0] > 0 && o->class_weight[1] > 0 &&
	       o->max_iter >= 1 && isfinite(o->tol) && o->tol >= 0 && o->history >= 1 &&
	       o->history <= 100 && o->nthreads >= 1 && o->nthreads <= MAX_THREADS;
}

int sx_logreg_fit(struct sx_logreg *m, const double *X, const uint8_t *y,
		  const double *sample_weight, size_t n, const struct sx_logreg_opts *opts)
{
	return sx__logreg_fit_ex(m, X, y, sample_weight, n, opts, 1);
}

int sx__logreg_fit_ex(struct sx_logreg *m, const double *X, const uint8_t *y,
		      const double *sample_weight, size_t n, const struct sx_logreg_opts *opts,
		      int allow_single)
{
	struct sx_logreg_opts def;
	if (!opts) {
		sx_logreg_opts_default(&def);
		opts = &def;
	}
	if (!m || !X || !y || n == 0 || !check_opts(opts))
		return SX_EINVAL;
	const size_t d = m->d;
	double S = 0;
	for (size_t i = 0; i < n; i++) {
		if (y[i] > 1)
			return SX_EINVAL;
		double w = 1.0;
		if (sample_weight) {
			w = sample_weight[i];
			if (!isfinite(w) || w < 0)
				return SX_EINVAL;
		}
		S += opts->class_weight[y[i]] * w;
	}
	if (!(S > 0) || !isfinite(S))
		return SX_EINVAL;

	const size_t dim = d + (opts->fit_intercept ? 1 : 0);
	const size_t hm = (size_t)opts->history;
	struct problem p = {
		.X = X,
		.y = y,
		.sw = sample_weight,
		.n = n,
		.d = d,
		.cw = {opts->class_weight[0], opts->class_weight[1]},
		.l2 = opts->l2,
		.S = S,
		.fit_intercept = opts->fit_intercept,
		.nthreads = opts->nthreads,
		.avx2 = use_avx2(),
	};
	p.block_rows = BLOCK_BYTES / sizeof(double) / d;
	if (p.block_rows > BLOCK_ROWS)
		p.block_rows = BLOCK_ROWS;
	if (p.block_rows < MIN_BLOCK_ROWS)
		p.block_rows = MIN_BLOCK_ROWS;
	p.n_blocks = (n + p.block_rows - 1) / p.block_rows;
	/* x, g, dir, xt, gt, s[hm], y[hm], plus rho/alpha. */
	size_t nbuf = 5 * dim + 2 * hm * dim + 2 * hm;
	double *buf = calloc(nbuf, sizeof(double));
	p.partial = malloc(p.n_blocks * (d + 2) * sizeof(double));
	p.scan_state = malloc(p.n_blocks);
	if (!buf || !p.partial || !p.scan_state) {
		free(buf);
		free(p.partial);
		free(p.scan_state);
		return SX_ENOMEM;
	}
	/* X is checked, and converted to float if it can be exactly, during the
	 * first evaluation, which reads it anyway. The copy is in huge pages
	 * where the kernel allows: they nearly double the rate at which a core
	 * streams it. Without the memory the double pass gives the same result. */
	p.scan = 1;
	if (allow_single) {
		const size_t huge = (size_t)2 << 20;
		size_t bytes = n * d * sizeof(float);
		if (bytes < huge) {
			p.Xf_build = malloc(bytes);
		} else {
			bytes = (bytes + huge - 1) / huge * huge;
			if (posix_memalign((void **)&p.Xf_build, huge, bytes) != 0)
				p.Xf_build = NULL;
#ifdef MADV_HUGEPAGE
			else
				(void)madvise(p.Xf_build, bytes, MADV_HUGEPAGE);
#endif
		}
	}
	double *x = buf, *g = x + dim, *dir = g + dim, *xt = dir + dim, *gt = xt + dim;
	double *S_ = gt + dim, *Y_ = S_ + hm * dim, *rho = Y_ + hm * dim, *al = rho + hm;
	size_t n_pairs = 0, head = 0;
	double f;
	int rc = evaluate(&p, x, &f, g);
	int iter = 0, converged = 0, stalls = 0;
	double g_best = INFINITY;
	while (rc == 0) {
		double gmax = 0;
		for (size_t i = 0; i < dim; i++)
			gmax = fmax(gmax, fabs(g[i]));
		if (gmax <= opts->tol) {
			converged = 1;
			break;
		}
		if (iter >= opts->max_iter)
			break;
		/* Two-loop recursion: dir = -H g. */
		for (size_t i = 0; i < dim; i++)
			dir[i] = -g[i];
		for (size_t c = 0; c < n_pairs; c++) {
			size_t j = (head + hm - 1 - c) % hm;
			al[j] = rho[j] * dotn(S_ + j * dim, dir, dim);
			for (size_t i = 0; i < dim; i++)
				dir[i] -= al[j] * Y_[j * dim + i];
		}
		if (n_pairs > 0) {
			size_t j = (head + hm - 1) % hm;
			double gamma = dotn(S_ + j * dim, Y_ + j * dim, dim) /
				       dotn(Y_ + j * dim, Y_ + j * dim, dim);
			for (size_t i = 0; i < dim; i++)
				dir[i] *= gamma;
		}
		for (size_t c = n_pairs; c-- > 0;) {
			size_t j = (head + hm - 1 - c) % hm;
			double be = rho[j] * dotn(Y_ + j * dim, dir, dim);
			for (size_t i = 0; i < dim; i++)
				dir[i] += (al[j] - be) * S_[j * dim + i];
		}
		double g0 = dotn(g, dir, dim);
		if (!(g0 < 0)) {
			/* Not a descent direction: restart from steepest descent. */
			n_pairs = 0;
			for (size_t i = 0; i < dim; i++)
				dir[i] = -g[i];
			g0 = dotn(g, dir, dim);
		}
		double a1 = 1.0;
		if (n_pairs == 0)
			a1 = fmin(1.0, 1.0 / sqrt(dotn(g, g, dim)));
		struct ls l = {.p = &p, .dim = dim, .x = x, .dir = dir, .xt = xt, .gt = gt, .f0 = f, .g0 = g0};
		double fn;
		int ok = line_search(&l, a1, &fn);
		if (ok < 0) {
			rc = ok;
			break;
		}
		if (ok == 0)
			break;
		iter++;
		double *sj = S_ + head * dim, *yj = Y_ + head * dim;
		for (size_t i = 0; i < dim; i++) {
			sj[i] = xt[i] - x[i];
			yj[i] = gt[i] - g[i];
		}
		double sy = dotn(sj, yj, dim);
		if (sy > 1e-300) {
			rho[head] = 1.0 / sy;
			head = (head + 1) % hm;
			if (n_pairs < hm)
				n_pairs++;
		}
		double f_old = f;
		memcpy(x, xt, dim * sizeof(double));
		memcpy(g, gt, dim * sizeof(double));
		f = fn;
		/* At the limit of double precision the gradient test may never pass;
		 * stop after a run of iterations that improve neither f measurably
		 * nor the best gradient so far. */
		double gnew = 0;
		for (size_t i = 0; i < dim; i++)
			gnew = fmax(gnew, fabs(g[i]));
		if (f_old - f <= DBL_EPSILON * fmax(fabs(f), 1.0) && !(gnew < 0.5 * g_best)) {
			if (++stalls >= 10)
				break;
		} else {
			stalls = 0;
		}
		g_best = fmin(g_best, gnew);
	}
	if (rc == 0) {
		memcpy(m->coef, x, d * sizeof(double));
		m->intercept = opts->fit_intercept ? x[d] : 0.0;
		m->n_iter = iter;
		m->n_eval = p.evals;
		m->used_single = p.Xf != NULL;
		m->converged = converged;
	}
	free(buf);
	free(p.partial);
	free(p.scan_state);
	free(p.Xf_build);
	return rc;
}

size_t sx_logreg_dim(const struct sx_logreg *m) { return m->d; }
const double *sx_logreg_coef(const struct sx_logreg *m) { return m->coef; }
double sx_logreg_intercept(const struct sx_logreg *m) { return m->intercept; }
int sx_logreg_n_iter(const struct sx_logreg *m) { return m->n_iter; }
int sx_logreg_n_eval(const struct sx_logreg *m) { return m->n_eval; }
int sx__logreg_used_single(const struct sx_logreg *m) { return m->used_single; }
int sx_logreg_converged(const struct sx_logreg *m) { return m->converged; }

int sx_logreg_set(struct sx_logreg *m, const double *coef, double intercept)
{
	if (!m || !coef || !isfinite(intercept))
		return SX_EINVAL;
	for (size_t j = 0; j < m->d; j++)
		if (!isfinite(coef[j]))
			return SX_EINVAL;
	memcpy(m->coef, coef, m->d * sizeof(double));
	m->intercept = intercept;
	return 0;
}

double sx_logreg_decision(const struct sx_logreg *m, const double *x)
{
	return dotd(x, m->coef, m->d) + m->intercept;
}

void sx_logreg_predict_proba(const struct sx_logreg *m, const double *X, size_t n, double *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = sigmoid(sx_logreg_decision(m, X + i * m->d));
}

double sx_logreg_contributions(const struct sx_logreg *m, const double *x, double *out)
{
	for (size_t j = 0; j < m->d; j++)
		out[j] = m->coef[j] * x[j];
	return m->intercept;
}

int sx_logreg_balanced_weights(const uint8_t *y, size_t n, double out[2])
{
	size_t c[2] = {0, 0};
	for (size_t i = 0; i < n; i++) {
		if (y[i] > 1)
			return SX_EINVAL;
		c[y[i]]++;
	}
	if (c[0] == 0 || c[1] == 0)
		return SX_EINVAL;
	out[0] = (double)n / (2.0 * (double)c[0]);
	out[1] = (double)n / (2.0 * (double)c[1]);
	return 0;
}

int sx_logreg_standardize_fit(const double *X, size_t n, size_t d, double *mean, double *scale)
{
	if (n == 0 || d == 0)
		return SX_EINVAL;
	for (size_t j = 0; j < d; j++) {
		mean[j] = 0;
		scale[j] = 0;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < d; j++)
			mean[j] += X[i * d + j];
	for (size_t j = 0; j < d; j++)
		mean[j] /= (double)n;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < d; j++) {
			double c = X[i * d + j] - mean[j];
			scale[j] += c * c;
		}
	for (size_t j = 0; j < d; j++) {
		double sd = sqrt(scale[j] / (double)n);
		scale[j] = sd > 0 && isfinite(sd) ? sd : 1.0;
	}
	return 0;
}

void sx_logreg_standardize_apply(double *X, size_t n, size_t d, const double *mean,
				 const double *scale)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < d; j++)
			X[i * d + j] = (X[i * d + j] - mean[j]) / scale[j];
}
