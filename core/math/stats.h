/* stats.h — probability distributions and seeded sampling for the math core.
 *
 * Pure functions over doubles: no allocation, no global state, safe from any
 * thread. Invalid parameters (NaN, a shape <= 0, a probability outside [0,1])
 * give NaN, as libm does; these functions never touch the diagnostics slot.
 * Callers that need SX_EINVAL with a reason check their inputs first
 * (core/math/abtest.h does).
 *
 * Accuracy, relative, checked against 50-digit mpmath and SciPy 1.10 in
 * tests/c/math/test_stats.c:
 * - norm_cdf/sf: about 1e-16 * (1 + x^2) (libm's erfc; the rounding of
 *   x / sqrt 2 dominates far out, as in SciPy); norm_ppf: 1e-13 for
 *   1e-300 <= p <= 1 - 1e-16.
 * - t_cdf/sf and ibeta: 2e-12 in both tails for df and shapes a, b up to
 *   1e4; gamma_p/q: 2e-12 for a up to 500 (chi2: k up to 1000). Beyond, up
 *   to 1e6: 1e-10, where the continued fractions run close to their switch
 *   point.
 * - t_ppf: 1e-12 in the tails, 1e-11 within 0.2 of p = 0.5 (the quantile is
 *   small there; its absolute error stays ~1e-16); 1e-10 beyond df = 1e4.
 *   SciPy 1.10's own t quantile (cdflib) is good to ~1e-8 only.
 * "sf" is the upper tail 1 - cdf computed without cancellation: use it for
 * p-values.
 */
#ifndef SX_MATH_STATS_H
#define SX_MATH_STATS_H

#include <stdint.h>

/* Standard normal. ppf(p) is the quantile (-inf at 0, +inf at 1); isf(q) is
 * the upper quantile -ppf(q), accurate for tiny q. */
double sx_stats_norm_pdf(double x);
double sx_stats_norm_cdf(double x);
double sx_stats_norm_sf(double x);
double sx_stats_norm_ppf(double p);
double sx_stats_norm_isf(double q);

/* Student t with df > 0 degrees of freedom (df may be fractional, as
 * Welch-Satterthwaite gives; df = +inf is the normal). */
double sx_stats_t_pdf(double t, double df);
double sx_stats_t_cdf(double t, double df);
double sx_stats_t_sf(double t, double df);
double sx_stats_t_ppf(double p, double df);
double sx_stats_t_isf(double q, double df);

/* Chi-square with k > 0 degrees of freedom. */
double sx_stats_chi2_cdf(double x, double k);
double sx_stats_chi2_sf(double x, double k);

/* log Gamma(x) for x > 0 (libm's lgamma_r: thread-safe, no signgam). */
double sx_stats_lgamma(double x);
/* Regularised lower/upper incomplete gamma P(a, x), Q(a, x) = 1 - P(a, x);
 * a > 0, x >= 0. Series for x < a + 1, Lentz continued fraction otherwise. */
double sx_stats_gamma_p(double a, double x);
double sx_stats_gamma_q(double a, double x);

/* log B(a, b) for a, b > 0, with Stirling differences for large arguments
 * so that lbeta(1e6, 0.5) keeps full relative accuracy. */
double sx_stats_lbeta(double a, double b);
/* Regularised incomplete beta I_x(a, b) and its complement 1 - I_x(a, b);
 * a, b > 0, 0 <= x <= 1. Continued fraction (modified Lentz). */
double sx_stats_ibeta(double a, double b, double x);
double sx_stats_ibetac(double a, double b, double x);

/* The same with y = 1 - x passed separately, for callers that hold points
 * closer to 1 than a double x can (y = 1e-30): *ix = I_x(a, b),
 * *ixc = 1 - I_x(a, b); NaN in both for invalid arguments. */
void sx_stats_ibeta_xy(double a, double b, double x, double y, double *ix, double *ixc);

/* Beta(a, b) distribution. */
double sx_stats_beta_logpdf(double x, double a, double b);
double sx_stats_beta_logpdf_xy(double x, double y, double a, double b);
double sx_stats_beta_cdf(double x, double a, double b);
double sx_stats_beta_sf(double x, double a, double b);

/* A small seeded generator (xoshiro256** seeded through splitmix64).
 * The state is the caller's: one state per thread, or a lock around it.
 * The same seed gives the same sequence on every platform. */
struct sx_stats_rng {
	uint64_t s[4];
};

void sx_stats_rng_seed(struct sx_stats_rng *rng, uint64_t seed);
uint64_t sx_stats_rng_next(struct sx_stats_rng *rng);
/* Uniform on the open interval (0, 1). */
double sx_stats_rng_uniform(struct sx_stats_rng *rng);
double sx_stats_rng_normal(struct sx_stats_rng *rng);
/* Gamma(shape, 1) (Marsaglia-Tsang), Beta(a, b) as a ratio of gammas.
 * NaN for a shape that is not > 0. */
double sx_stats_rng_gamma(struct sx_stats_rng *rng, double shape);
double sx_stats_rng_beta(struct sx_stats_rng *rng, double a, double b);

#endif
