/* logreg.h — binary logistic regression with an L2 penalty, fitted by L-BFGS.
 *
 * Minimises  sum_i s_i [log(1 + e^{z_i}) - y_i z_i] + (l2 / 2) |w|^2,
 * z_i = x_i . w + b, where s_i = class_weight[y_i] * sample_weight[i]. The
 * intercept b is not penalised. This is scikit-learn's LogisticRegression
 * (penalty="l2") objective with C = 1 / l2 and class_weight / sample_weight
 * meaning the same, so the two agree to the optimiser's tolerance.
 *
 * Features are dense row-major double: row i is X[i*d .. i*d+d-1]. Labels are
 * 0 or 1. The solver is limited-memory BFGS (two-loop recursion) with a line
 * search that satisfies the strong Wolfe conditions (Nocedal & Wright, alg.
 * 3.5/3.6), usually one evaluation per iteration. Each evaluation of the
 * objective and its gradient is one pass over X, split into blocks of rows
 * (about 128 KiB each, a function of d alone) whose partial sums are added in
 * block order, so a fit is bit-for-bit the same for any number of threads
 * (though not across CPUs with and without AVX2+FMA, which the pass uses
 * where available; SX_VEC_ISA=sse in the environment, as for vec.h, selects
 * the baseline pass).
 *
 * When every value of X converts to float exactly (e.g. features that came
 * as float32, counts, one-hot columns), the fit reads a float copy of X after
 * its first evaluation: half the memory traffic, and the same result to the
 * bit, since the pass widens each value back to the same double. The copy
 * costs n * d * 4 bytes (in huge pages where the kernel allows) for the
 * duration of the fit; without that memory the fit reads X itself.
 *
 * Errors: functions return 0 or a negative SX_E* code (core/sx.h) and do not
 * touch the diagnostics slot.
 */
#ifndef SX_MATH_LOGREG_H
#define SX_MATH_LOGREG_H

#include <stddef.h>
#include <stdint.h>

struct sx_logreg_opts {
	double l2;              /* >= 0; scikit-learn's 1 / C. Default 1. */
	int fit_intercept;      /* default 1 */
	double class_weight[2]; /* > 0, weight of class 0 and class 1. Default {1, 1}. */
	int max_iter;           /* L-BFGS iterations, >= 1. Default 1000. */
	/* Converged when max |gradient| of the objective divided by sum_i s_i is
	 * <= tol. The fit also stops, unconverged, after max_iter iterations, when
	 * the line search finds no lower point, or after 10 iterations in a row
	 * that neither lower the scaled objective by DBL_EPSILON relative nor
	 * halve the smallest gradient seen.
	 * Default 1e-8. */
	double tol;
	int history;            /* L-BFGS pairs kept, 1..100. Default 10. */
	int nthreads;           /* >= 1. Default 1. */
};

void sx_logreg_opts_default(struct sx_logreg_opts *o);

struct sx_logreg;

/* A model over d >= 1 features with all coefficients zero. NULL on d == 0
 * or out of memory. */
struct sx_logreg *sx_logreg_new(size_t d);
void sx_logreg_free(struct sx_logreg *m);

/* Fit on n rows, starting from zero. X, y and sample_weight are borrowed for
 * the call only. sample_weight may be NULL (all 1); y holds 0 or 1. opts NULL
 * means the defaults. Returns 0 also when max_iter is reached or the line
 * search can make no progress; sx_logreg_converged tells. Returns SX_EINVAL
 * (n == 0, non-finite X or weights, negative weights, a label not 0 or 1, all
 * weights zero, bad opts), SX_ENOMEM. If threads cannot be started the pass
 * runs on those that could, with the same result. On error the coefficients
 * are unchanged. */
int sx_logreg_fit(struct sx_logreg *m, const double *X, const uint8_t *y,
		  const double *sample_weight, size_t n, const struct sx_logreg_opts *opts);

/* Internal, for tests: allow_single == 0 never makes the float copy of X;
 * sx__logreg_used_single tells whether the last fit ran on it. */
int sx__logreg_fit_ex(struct sx_logreg *m, const double *X, const uint8_t *y,
		      const double *sample_weight, size_t n, const struct sx_logreg_opts *opts,
		      int allow_single);
int sx__logreg_used_single(const struct sx_logreg *m);

size_t sx_logreg_dim(const struct sx_logreg *m);
/* Borrowed, d values, valid until the next fit/set or sx_logreg_free. */
const double *sx_logreg_coef(const struct sx_logreg *m);
double sx_logreg_intercept(const struct sx_logreg *m);
/* Iterations of the last fit, evaluations of the objective and gradient it
 * made (one per pass over X, including the one at the start), and whether it
 * met the tolerance. */
int sx_logreg_n_iter(const struct sx_logreg *m);
int sx_logreg_n_eval(const struct sx_logreg *m);
int sx_logreg_converged(const struct sx_logreg *m);

/* Install coefficients (d values) and intercept, e.g. from storage.
 * Returns SX_EINVAL on non-finite values. */
int sx_logreg_set(struct sx_logreg *m, const double *coef, double intercept);

/* x . w + b for one row of d values. */
double sx_logreg_decision(const struct sx_logreg *m, const double *x);

/* P(y = 1) for n rows of X into out. */
void sx_logreg_predict_proba(const struct sx_logreg *m, const double *X, size_t n, double *out);

/* out[j] = coef_j * x_j for one row; returns the intercept, so that
 * intercept + sum_j out[j] is the decision value. */
double sx_logreg_contributions(const struct sx_logreg *m, const double *x, double *out);

/* scikit-learn's class_weight="balanced": n / (2 * count of class c), for
 * labels 0/1. Returns SX_EINVAL if a class is absent or a label is not 0/1. */
int sx_logreg_balanced_weights(const uint8_t *y, size_t n, double out[2]);

/* Column means and population standard deviations (ddof 0, as scikit-learn's
 * StandardScaler) of X into mean[d] and scale[d]; a constant column gets
 * scale 1. Returns SX_EINVAL if n == 0 or d == 0. */
int sx_logreg_standardize_fit(const double *X, size_t n, size_t d, double *mean, double *scale);

/* X[i][j] = (X[i][j] - mean[j]) / scale[j], in place. */
void sx_logreg_standardize_apply(double *X, size_t n, size_t d, const double *mean,
				 const double *scale);

#endif
