#include "core/math/logreg.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

/* Rows per block of the objective's pass. Fixed so that the summation order,
 * and thus the result, does not depend on the number of threads. */
#define BLOCK_ROWS 1024
#define MAX_THREADS 256
#define LS_MAX_EVALS 40

struct sx_logreg {
	size_t d;
	double *coef;
	double intercept;
	int n_iter;
	int converged;
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

/* The pass over X is compiled twice, for AVX2+FMA and for baseline x86-64,
 * and picked at run time; the kernels are inlined into each. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SX_LOGREG_AVX2 1
#endif
#define KERNEL static inline __attribute__((always_inline))

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
	double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

KERNEL void axpyd(double a, const double *restrict x, double *restrict y, size_t n)
{
	v4d va = {a, a, a, a};
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		v4d vx, vy;
		memcpy(&vx, x + i, sizeof vx);
		memcpy(&vy, y + i, sizeof vy);
		vy += va * vx;
		memcpy(y + i, &vy, sizeof vy);
	}
	for (; i < n; i++)
		y[i] += a * x[i];
}

KERNEL double sigmoid(double z)
{
	if (z >= 0)
		return 1.0 / (1.0 + exp(-z));
	double e = exp(z);
	return e / (1.0 + e);
}

struct problem {
	const double *X;
	const uint8_t *y;
	const double *sw;
	size_t n, d;
	double cw[2];
	double l2, S;
	int fit_intercept;
	int nthreads;
	size_t n_blocks;
	double *partial; /* n_blocks x (d + 2): loss, grad_w, grad_b */
	/* per evaluation */
	const double *theta;
	atomic_size_t next;
};

/* Three sweeps over a block small enough to stay in L2: the dot products
 * stream X from memory without waiting on exp/log1p, the scalar sweep has no
 * memory traffic, and the gradient sweep re-reads the block from cache. */
KERNEL void eval_block_impl(struct problem *p, size_t b)
{
	const size_t d = p->d;
	double *out = p->partial + b * (d + 2);
	double *gw = out + 1;
	double loss = 0, gb = 0;
	double r[BLOCK_ROWS];
	memset(out, 0, (d + 2) * sizeof(double));
	const double *w = p->theta;
	double b0 = p->fit_intercept ? p->theta[d] : 0.0;
	size_t lo = b * BLOCK_ROWS, hi = lo + BLOCK_ROWS < p->n ? lo + BLOCK_ROWS : p->n;
	for (size_t i = lo; i < hi; i++)
		r[i - lo] = dotd(p->X + i * d, w, d) + b0;
	for (size_t i = lo; i < hi; i++) {
		double s = p->cw[p->y[i]] * (p->sw ? p->sw[i] : 1.0);
		double z = r[i - lo];
		/* One exp serves both: softplus(z) = max(z, 0) + log1p(e) and
		 * sigmoid(z) = 1 / (1 + e) or e / (1 + e), with e = exp(-|z|). */
		double e = exp(-fabs(z));
		double sp = (z > 0 ? z : 0.0) + log1p(e);
		double sg = z >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
		loss += s * (sp - (p->y[i] ? z : 0.0));
		r[i - lo] = s * (sg - p->y[i]);
		gb += r[i - lo];
	}
	for (size_t i = lo; i < hi; i++)
		if (r[i - lo] != 0)
			axpyd(r[i - lo], p->X + i * d, gw, d);
	out[0] = loss;
	out[d + 1] = gb;
}

static void eval_block(struct problem *p, size_t b)
{
	eval_block_impl(p, b);
}

#ifdef SX_LOGREG_AVX2
__attribute__((target("avx2,fma"))) static void eval_block_avx2(struct problem *p, size_t b)
{
	eval_block_impl(p, b);
}
#endif

static void *eval_worker(void *arg)
{
	struct problem *p = arg;
#ifdef SX_LOGREG_AVX2
	void (*fn)(struct problem *, size_t) =
		__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? eval_block_avx2 : eval_block;
#else
	void (*fn)(struct problem *, size_t) = eval_block;
#endif
	for (;;) {
		size_t b = atomic_fetch_add(&p->next, 1);
		if (b >= p->n_blocks)
			return NULL;
		fn(p, b);
	}
}

/* f and g (dim values) of the objective scaled by 1 / S at theta. */
static int evaluate(struct problem *p, const double *theta, double *f, double *g)
{
	const size_t d = p->d;
	p->theta = theta;
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
	for (size_t i = 0; i < n * d; i++)
		if (!isfinite(X[i]))
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
		.n_blocks = (n + BLOCK_ROWS - 1) / BLOCK_ROWS,
	};
	/* x, g, dir, xt, gt, s[hm], y[hm], plus rho/alpha. */
	size_t nbuf = 5 * dim + 2 * hm * dim + 2 * hm;
	double *buf = calloc(nbuf, sizeof(double));
	p.partial = malloc(p.n_blocks * (d + 2) * sizeof(double));
	if (!buf || !p.partial) {
		free(buf);
		free(p.partial);
		return SX_ENOMEM;
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
		m->converged = converged;
	}
	free(buf);
	free(p.partial);
	return rc;
}

size_t sx_logreg_dim(const struct sx_logreg *m) { return m->d; }
const double *sx_logreg_coef(const struct sx_logreg *m) { return m->coef; }
double sx_logreg_intercept(const struct sx_logreg *m) { return m->intercept; }
int sx_logreg_n_iter(const struct sx_logreg *m) { return m->n_iter; }
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
