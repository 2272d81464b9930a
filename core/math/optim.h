/* optim.h — small minimisers: Nelder–Mead with box bounds, and BFGS with
 * finite-difference gradients.
 *
 * A small, allocation-free-per-iteration optimiser for smooth-ish objectives
 * in up to SX_OPTIM_MAX_DIM dimensions, used by the exponential smoothing fits
 * and reusable by any module that needs to fit a handful of parameters.
 *
 * Bounds are handled by projection: every trial point is clamped into
 * [lb, ub] before f is called, so f is never evaluated outside the box.
 * Infinite bounds (±INFINITY) mean unbounded. The adaptive coefficients of
 * Gao & Han (2012) are used, which keeps the method useful beyond ~10
 * dimensions where the textbook coefficients stall.
 *
 * The objective may return +INFINITY or NaN for inadmissible points; both
 * are treated as "worse than anything finite".
 *
 * Thread safety: no global state; concurrent calls are fine as long as
 * f and its user data are.
 */
#ifndef SX_MATH_OPTIM_H
#define SX_MATH_OPTIM_H

#include <stddef.h>

#define SX_OPTIM_MAX_DIM 64

/* Objective: x has dim coordinates (already inside the bounds). */
typedef double (*sx_optim_fn)(const double *x, void *ud);

struct sx_optim_nm_opts {
	size_t max_evals;  /* per call, restarts included; 0 = 400 * dim */
	double ftol;       /* stop when the simplex's f spread <= ftol * (|f_best| + ftol); 0 = 1e-10 */
	int restarts;      /* fresh simplices around the best point after convergence; < 0 = none, 0 = 3 */
};

/* Minimise f starting at x (dim coordinates, 1 <= dim <= SX_OPTIM_MAX_DIM).
 * step[i] (> 0) is the initial simplex edge along coordinate i; lb/ub may be
 * NULL for unbounded. On return x holds the best point found and *fx (if not
 * NULL) its value. opts may be NULL for the defaults.
 * Returns the number of evaluations (> 0), or SX_EINVAL for a bad dim,
 * a non-positive step or a start point with lb > ub. Never allocates. */
int sx_optim_nm(sx_optim_fn f, void *ud, double *x, size_t dim, const double *step,
		const double *lb, const double *ub, const struct sx_optim_nm_opts *opts, double *fx);

/* Several points at once: fx[i] = f(xs[i]) for i < count. An objective that
 * is latency-bound (a serial recursion) evaluates independent points nearly
 * for the price of one; results must equal count calls of the plain f. */
typedef void (*sx_optim_multi_fn)(const double *const *xs, size_t count, double *fx, void *ud);

struct sx_optim_bfgs_opts {
	size_t max_iter; /* 0 = 200 */
	double ftol;     /* stop when an iteration gains <= ftol * (|f| + ftol); 0 = 1e-10 */
	double gtol;     /* or when max |gradient| <= gtol; 0 = 1e-8 */
	double fd_step;  /* difference step per unit of x; 0 = 1e-8 forward, 1e-6 central */
	int central;     /* central differences: 2 evaluations per coordinate, not 1 */
	/* Optional: used for the gradient's points and for SX_OPTIM_LANES
	 * consecutive halvings of the line search at once; once the inverse
	 * Hessian is built up (forward differences only), the full step, the
	 * gradient points around it and further halvings go in one call. The
	 * iterates are the same as with f alone; only the evaluation count
	 * (speculative points included) differs. */
	sx_optim_multi_fn multi;
};

#define SX_OPTIM_LANES 4

/* Minimise an unconstrained f from x with BFGS (inverse-Hessian update,
 * backtracking Armijo line search) and finite-difference gradients of
 * step fd_step * max(1, |x_i|). Variables should be scaled to O(1); map
 * bounded parameters through a logistic or similar before calling.
 * On return x holds the best point and *fx its value. opts may be NULL.
 * Returns the number of evaluations (> 0) or SX_EINVAL. Never allocates. */
int sx_optim_bfgs(sx_optim_fn f, void *ud, double *x, size_t dim,
		  const struct sx_optim_bfgs_opts *opts, double *fx);

#endif
