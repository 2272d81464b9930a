/* abtest.h — the statistics of A/B tests and bandits over summary numbers.
 *
 * Every function works on counts, means and variances the caller has already
 * aggregated, fills a caller-owned result, keeps no pointer and is safe from
 * any thread (state lives in caller-owned structs). They return 0, or
 * SX_EINVAL with the reason in sx_diag_set() for bad input: a NaN or
 * infinite number, n <= 0, successes outside [0, n], a probability outside
 * its range, a too short array. holm, bayes_beta, prob_best and the
 * thompson functions allocate a small scratch array (SX_ENOMEM) and free it
 * before returning. On error *out is left unspecified.
 *
 * Conventions
 * - Arm 0 / "a" is the control, "b" or i > 0 the treatment. Lift is
 *   treatment - control (absolute) and treatment / control - 1 (relative).
 * - alt: SX_ABTEST_TWO_SIDED, SX_ABTEST_GREATER (treatment > control) or
 *   SX_ABTEST_LESS. A one-sided test gets a one-sided (1 - alpha) interval:
 *   the far bound is -inf or +inf.
 * - Counts are doubles so that weighted counts pass; they need not be
 *   integers.
 *
 * Methods, and the SciPy/statsmodels routine each one matches (see
 * tests/ref/abtest_ref.py and docs/notes-abtest.md):
 * - prop_ztest: z with the pooled SE (statsmodels proportions_ztest); CI of
 *   the difference with the unpooled SE (Wald, confint_proportions_2indep);
 *   CI of the relative lift by the delta method on the ratio:
 *   se_rel^2 = v_b / p_a^2 + p_b^2 v_a / p_a^4, v = p (1 - p) / n.
 * - welch: scipy ttest_ind_from_stats(equal_var=False); CI of the
 *   difference with the t quantile at the Welch-Satterthwaite df; relative
 *   CI by the same delta method and the same t quantile.
 * - chi2_indep: scipy chi2_contingency on the k x 2 table [x, n - x].
 * - holm: statsmodels multipletests(method="holm").
 * - srm: scipy chisquare of counts against weights.
 * - plan_props / plan_means: statsmodels samplesize_proportions_2indep_onetail
 *   / normal_sample_size_one_tail, with alpha split over variants - 1
 *   comparisons (Bonferroni).
 * - msprt, bayes_*, prob_best: no library routine; the tests check them
 *   against direct numerical integration (scipy.integrate.quad).
 */
#ifndef SX_MATH_ABTEST_H
#define SX_MATH_ABTEST_H

#include <stddef.h>
#include <stdint.h>

#include "core/math/stats.h"

enum {
	SX_ABTEST_LESS = -1,
	SX_ABTEST_TWO_SIDED = 0,
	SX_ABTEST_GREATER = 1
};

/* One arm of a numeric metric: n units, sample mean, sample variance
 * (denominator n - 1). */
struct sx_abtest_summary {
	double n, mean, var;
};

/* Result of a two-arm test of a rate or a mean. rel, rel_lo and rel_hi are
 * NaN when the control is 0. */
struct sx_abtest_lift {
	double control, treatment; /* rates or means */
	double diff, rel;          /* treatment - control, treatment / control - 1 */
	double stat;               /* z or t */
	double df;                 /* Welch df; INFINITY for the z-test */
	double p_value;
	double se;                 /* unpooled SE of diff (the one the CI uses) */
	double diff_lo, diff_hi;   /* (1 - alpha) CI of diff */
	double rel_lo, rel_hi;     /* (1 - alpha) CI of rel, delta method */
};

/* Two-proportion z-test: x_a successes of n_a (control) against x_b of n_b.
 * When both arms are all successes or all failures the pooled SE is 0:
 * stat = 0 and p_value = 1. 0 < alpha < 1. */
int sx_abtest_prop_ztest(double n_a, double x_a, double n_b, double x_b, double alpha,
			 int alt, struct sx_abtest_lift *out);

/* Welch's t-test from summaries; n >= 2 in each arm, var >= 0, not both 0. */
int sx_abtest_welch(const struct sx_abtest_summary *a, const struct sx_abtest_summary *b,
		    double alpha, int alt, struct sx_abtest_lift *out);

struct sx_abtest_chi2 {
	double stat, df, p_value;
};

/* Chi-square test of independence of k >= 2 variants x {success, failure};
 * x[i] successes of n[i]. yates != 0 applies Yates' continuity correction
 * when df = 1 (SciPy's default). SX_EINVAL when all units succeeded or all
 * failed (an empty column). */
int sx_abtest_chi2_indep(const double *n, const double *x, size_t k, int yates,
			 struct sx_abtest_chi2 *out);

/* Holm-Bonferroni adjusted p-values, monotone in the order of p and capped at
 * 1. adj may be p itself. m >= 1, every p in [0, 1]. */
int sx_abtest_holm(const double *p, size_t m, double *adj);

#define SX_ABTEST_SRM_THRESHOLD 0.001

struct sx_abtest_srm {
	double stat, df, p_value;
	int mismatch; /* p_value < threshold */
};

/* Sample-ratio mismatch: chi-square goodness of fit of k >= 2 assignment
 * counts against weights (any positive scale; NULL = equal). threshold 0
 * means SX_ABTEST_SRM_THRESHOLD. */
int sx_abtest_srm(const double *counts, const double *weights, size_t k, double threshold,
		  struct sx_abtest_srm *out);

/* Sample size. mde is relative to baseline (SX_ABTEST_MDE_RELATIVE, 0.05 =
 * +5%) or absolute (a difference in rate or mean units); it may be negative.
 * sides is 1 or 2; variants >= 2 counts the control, and alpha is split
 * over the variants - 1 comparisons with the control. For means, sd is the
 * per-unit standard deviation (same in both arms); baseline then only
 * serves a relative mde. daily_traffic (units per day over all arms, 0 for
 * none) gives the duration. */
enum {
	SX_ABTEST_MDE_RELATIVE = 0,
	SX_ABTEST_MDE_ABSOLUTE = 1
};

struct sx_abtest_plan {
	double baseline, mde;
	int mde_kind;
	double alpha, power;
	int sides, variants;
	double sd;
	double daily_traffic;
};

struct sx_abtest_plan_result {
	double n_per_arm;      /* the formula's real number */
	double n_per_arm_ceil; /* units to collect per arm */
	double n_total;        /* n_per_arm_ceil * variants */
	double days;           /* ceil(n_total / daily_traffic); 0 if no traffic given */
	double alpha_per_test; /* alpha / (variants - 1) */
	double diff;           /* the absolute difference planned for */
};

int sx_abtest_plan_props(const struct sx_abtest_plan *plan, struct sx_abtest_plan_result *out);
int sx_abtest_plan_means(const struct sx_abtest_plan *plan, struct sx_abtest_plan_result *out);

/* Mixture SPRT (Johari, Pekelis, Walsh, "Always valid inference", 2022) for
 * the difference theta of two means or rates, with a N(theta0, tau2) mixing
 * distribution over the alternative. With d the current estimate of theta
 * and v its variance,
 *   Lambda = sqrt(v / (v + tau2)) exp(tau2 (d - theta0)^2 / (2 v (v + tau2))).
 * The always-valid p-value is min over updates of 1 / Lambda; the always-
 * valid (1 - alpha) CI is the running intersection of
 *   {theta : Lambda(theta) < 1 / alpha} = d -+ sqrt(v (v + tau2) / tau2 *
 *                                          (2 log(1/alpha) + log((v + tau2) / v))).
 * Update with the cumulative summaries whenever you look; any stopping rule
 * keeps the error rate at alpha (v is the plug-in estimate: asymptotically).
 * An empty interval (lo > hi) can happen, with probability <= alpha. */
struct sx_abtest_msprt {
	double tau2, alpha, theta0;
	double p_value;      /* 1 until evidence arrives */
	double ci_lo, ci_hi; /* -inf, +inf until the first update */
	double lambda;       /* Lambda at the last update */
	double diff, var;    /* d and v of the last update */
	uint64_t updates;
};

/* tau2 > 0, 0 < alpha < 1. */
int sx_abtest_msprt_init(struct sx_abtest_msprt *s, double tau2, double alpha, double theta0);
/* var >= 0; var = 0 carries no evidence and changes nothing but diff. */
int sx_abtest_msprt_update(struct sx_abtest_msprt *s, double diff, double var);
int sx_abtest_msprt_update_means(struct sx_abtest_msprt *s, const struct sx_abtest_summary *a,
				 const struct sx_abtest_summary *b);
int sx_abtest_msprt_update_props(struct sx_abtest_msprt *s, double n_a, double x_a, double n_b,
				 double x_b);
/* log Lambda for one look, for callers that keep their own state. */
double sx_abtest_msprt_log_lambda(double diff, double var, double tau2, double theta0);

/* Bayesian Beta-Binomial: arm i has posterior Beta(prior_a + x[i],
 * prior_b + n[i] - x[i]). Each figure is a one-dimensional integral over
 * [0, 1] evaluated by adaptive Gauss-Kronrod (7/15) to 1e-12 absolute
 * (exact up to that; checked to 1e-9 against scipy quad in the tests):
 *   P(p_i > p_0)           = int f_i F_0
 *   P(p_i is the largest)  = int f_i prod_{j != i} F_j
 *   E[max(p_0 - p_i, 0)]   = int F_i (1 - F_0)
 *   E[max_j p_j - p_i]     = int F_i (1 - prod_{j != i} F_j)
 * Cost grows as k^2 integrals of ~10^3 points; k <= SX_ABTEST_MAX_ARMS. */
#define SX_ABTEST_MAX_ARMS 64

struct sx_abtest_bayes_arm {
	double mean;              /* posterior mean */
	double prob_beat_control; /* NaN for the control itself */
	double loss_vs_control;   /* expected loss of shipping i instead of the control */
	double prob_best;
	double loss_vs_best;      /* expected loss of shipping i rather than the best */
};

int sx_abtest_bayes_beta(const double *n, const double *x, size_t k, double prior_a,
			 double prior_b, struct sx_abtest_bayes_arm *out);
/* The same but only mean, prob_beat_control and loss_vs_control (prob_best and
 * loss_vs_best are NaN): 2 (k - 1) integrals, the same values bit for bit. */
int sx_abtest_bayes_beta_control(const double *n, const double *x, size_t k, double prior_a,
				 double prior_b, struct sx_abtest_bayes_arm *out);

/* Normal approximation for means: mean_i ~ N(mean, var / n) (flat prior).
 * Closed form with D = mean_b - mean_a ~ N(mu, s^2):
 * P(b > a) = Phi(mu / s); loss of choosing b = E[max(-D, 0)]
 * = s phi(mu/s) - mu Phi(-mu/s); loss of keeping a = E[max(D, 0)]. n >= 1. */
struct sx_abtest_bayes_normal {
	double prob_beat;   /* P(mean_b > mean_a) */
	double loss_choose; /* E[max(mean_a - mean_b, 0)] */
	double loss_keep;   /* E[max(mean_b - mean_a, 0)] */
};

int sx_abtest_bayes_normal(const struct sx_abtest_summary *a, const struct sx_abtest_summary *b,
			   struct sx_abtest_bayes_normal *out);

/* CUPED from per-variant sums of the covariate x (pre-period) and metric y.
 * theta = cov(y, x) / var(x) over all units of all variants together;
 * adjusted y = y - theta (x - mean x). Fills adj[i] with the adjusted mean
 * and variance (n - 1 denominator) of variant i, ready for sx_abtest_welch.
 * n >= 2 per variant; SX_EINVAL if x is constant. The sums lose digits when
 * |mean| >> sd (centre the data first if so). theta may be NULL. */
struct sx_abtest_cuped_sums {
	double n, sx, sy, sxx, syy, sxy;
};

int sx_abtest_cuped(const struct sx_abtest_cuped_sums *v, size_t k, double *theta,
		    struct sx_abtest_summary *adj);

/* Bandit arms: successes s[i], failures f[i], prior Beta(prior_a, prior_b).
 * prob_best: the exact P(arm i is best) by integration as above
 * (k <= SX_ABTEST_MAX_ARMS).
 * thompson_mc: the same by Monte Carlo with draws samples from a generator
 * seeded with seed (deterministic, thread-safe; standard error
 * sqrt(p (1 - p) / draws)).
 * thompson_choose: one Thompson draw per arm from the caller's generator,
 * *arm = the arm with the largest draw. */
int sx_abtest_prob_best(const double *s, const double *f, size_t k, double prior_a,
			double prior_b, double *prob);
int sx_abtest_thompson_mc(const double *s, const double *f, size_t k, double prior_a,
			  double prior_b, uint64_t draws, uint64_t seed, double *prob);
int sx_abtest_thompson_choose(const double *s, const double *f, size_t k, double prior_a,
			      double prior_b, struct sx_stats_rng *rng, size_t *arm);

#endif
