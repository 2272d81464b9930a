#include "core/math/abtest.h"

#include <math.h>
#include <stdlib.h>

#include "core/sx.h"

#define SUPPORT_SDS 50.0
#define QUAD_ABS 1e-13
#define QUAD_REL 1e-12
#define QUAD_PIECES 400

static int check_alpha(double alpha)
{
	if (!(alpha > 0 && alpha < 1))
		return sx_diag_set(SX_EINVAL, "alpha must be in (0, 1), got %g", alpha);
	return 0;
}

static int check_alt(int alt)
{
	if (alt != SX_ABTEST_LESS && alt != SX_ABTEST_TWO_SIDED && alt != SX_ABTEST_GREATER)
		return sx_diag_set(SX_EINVAL, "alt must be -1, 0 or 1, got %d", alt);
	return 0;
}

static int check_counts(double n, double x, const char *arm)
{
	if (!isfinite(n) || !(n > 0))
		return sx_diag_set(SX_EINVAL, "%s: n must be a finite number > 0, got %g", arm, n);
	if (!isfinite(x) || !(x >= 0 && x <= n))
		return sx_diag_set(SX_EINVAL, "%s: successes must be in [0, n], got %g of %g", arm, x, n);
	return 0;
}

static int check_summary(const struct sx_abtest_summary *s, double min_n, const char *arm)
{
	if (!isfinite(s->n) || !(s->n >= min_n))
		return sx_diag_set(SX_EINVAL, "%s: n must be >= %g, got %g", arm, min_n, s->n);
	if (!isfinite(s->mean))
		return sx_diag_set(SX_EINVAL, "%s: mean is not finite", arm);
	if (!isfinite(s->var) || !(s->var >= 0))
		return sx_diag_set(SX_EINVAL, "%s: variance must be finite and >= 0, got %g", arm, s->var);
	return 0;
}

/* The critical value for a (1 - alpha) interval, one- or two-sided, of a
 * t with df degrees of freedom (the normal for df = inf). */
static double crit(double alpha, int alt, double df)
{
	double q = alt == SX_ABTEST_TWO_SIDED ? alpha / 2 : alpha;
	return isinf(df) ? sx_stats_norm_isf(q) : sx_stats_t_isf(q, df);
}

static double p_value(double stat, int alt, double df)
{
	if (isnan(stat))
		return NAN;
	double lo = isinf(df) ? sx_stats_norm_cdf(stat) : sx_stats_t_cdf(stat, df);
	double hi = isinf(df) ? sx_stats_norm_sf(stat) : sx_stats_t_sf(stat, df);
	if (alt == SX_ABTEST_GREATER)
		return hi;
	if (alt == SX_ABTEST_LESS)
		return lo;
	double p = 2 * (lo < hi ? lo : hi);
	return p > 1 ? 1 : p;
}

/* Fill the intervals of out from its diff, rel, se and the variances of the
 * two estimates (va, vb: variances of the control and treatment estimates). */
static void fill_intervals(struct sx_abtest_lift *out, double va, double vb, double c, int alt)
{
	out->diff_lo = out->diff - c * out->se;
	out->diff_hi = out->diff + c * out->se;
	double m = out->control;
	if (m == 0) {
		out->rel = out->rel_lo = out->rel_hi = NAN;
	} else {
		double se_rel = sqrt(vb / (m * m) + out->treatment * out->treatment * va / (m * m * m * m));
		out->rel_lo = out->rel - c * se_rel;
		out->rel_hi = out->rel + c * se_rel;
	}
	if (alt == SX_ABTEST_GREATER) {
		out->diff_hi = INFINITY;
		if (m != 0)
			out->rel_hi = INFINITY;
	} else if (alt == SX_ABTEST_LESS) {
		out->diff_lo = -INFINITY;
		if (m != 0)
			out->rel_lo = -INFINITY;
	}
}

int sx_abtest_prop_ztest(double n_a, double x_a, double n_b, double x_b, double alpha,
			 int alt, struct sx_abtest_lift *out)
{
	int rc;
	if ((rc = check_counts(n_a, x_a, "control")) || (rc = check_counts(n_b, x_b, "treatment")) ||
	    (rc = check_alpha(alpha)) || (rc = check_alt(alt)))
		return rc;
	double pa = x_a / n_a, pb = x_b / n_b;
	double pool = (x_a + x_b) / (n_a + n_b);
	double se0 = sqrt(pool * (1 - pool) * (1 / n_a + 1 / n_b));
	double va = pa * (1 - pa) / n_a, vb = pb * (1 - pb) / n_b;
	out->control = pa;
	out->treatment = pb;
	out->diff = pb - pa;
	out->rel = pa == 0 ? NAN : pb / pa - 1;
	out->df = INFINITY;
	if (se0 == 0) {
		out->stat = 0;
		out->p_value = 1;
	} else {
		out->stat = out->diff / se0;
		out->p_value = p_value(out->stat, alt, INFINITY);
	}
	out->se = sqrt(va + vb);
	fill_intervals(out, va, vb, crit(alpha, alt, INFINITY), alt);
	return 0;
}

int sx_abtest_welch(const struct sx_abtest_summary *a, const struct sx_abtest_summary *b,
		    double alpha, int alt, struct sx_abtest_lift *out)
{
	int rc;
	if ((rc = check_summary(a, 2, "control")) || (rc = check_summary(b, 2, "treatment")) ||
	    (rc = check_alpha(alpha)) || (rc = check_alt(alt)))
		return rc;
	double va = a->var / a->n, vb = b->var / b->n;
	if (va + vb == 0)
		return sx_diag_set(SX_EINVAL, "both variances are 0: nothing to test");
	out->control = a->mean;
	out->treatment = b->mean;
	out->diff = b->mean - a->mean;
	out->rel = a->mean == 0 ? NAN : b->mean / a->mean - 1;
	out->se = sqrt(va + vb);
	out->df = (va + vb) * (va + vb) / (va * va / (a->n - 1) + vb * vb / (b->n - 1));
	out->stat = out->diff / out->se;
	out->p_value = p_value(out->stat, alt, out->df);
	fill_intervals(out, va, vb, crit(alpha, alt, out->df), alt);
	return 0;
}

int sx_abtest_chi2_indep(const double *n, const double *x, size_t k, int yates,
			 struct sx_abtest_chi2 *out)
{
	if (k < 2)
		return sx_diag_set(SX_EINVAL, "need at least 2 variants, got %zu", k);
	double tn = 0, tx = 0;
	for (size_t i = 0; i < k; i++) {
		int rc = check_counts(n[i], x[i], "variant");
		if (rc)
			return rc;
		tn += n[i];
		tx += x[i];
	}
	if (tx == 0 || tx == tn)
		return sx_diag_set(SX_EINVAL, "every unit %s: the table has an empty column",
				   tx == 0 ? "failed" : "succeeded");
	double df = (double)(k - 1);
	double stat = 0;
	for (size_t i = 0; i < k; i++) {
		double obs[2] = {x[i], n[i] - x[i]};
		double exp_[2] = {n[i] * tx / tn, n[i] * (tn - tx) / tn};
		for (int j = 0; j < 2; j++) {
			double d = obs[j] - exp_[j];
			if (yates && k == 2) {
				/* Move each cell toward its expectation by at most 0.5. */
				double m = fabs(d) < 0.5 ? fabs(d) : 0.5;
				d = d > 0 ? d - m : d + m;
			}
			stat += d * d / exp_[j];
		}
	}
	out->stat = stat;
	out->df = df;
	out->p_value = sx_stats_chi2_sf(stat, df);
	return 0;
}

struct ranked {
	double p;
	size_t i;
};

static int ranked_cmp(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;
	if (x->p != y->p)
		return x->p < y->p ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

int sx_abtest_holm(const double *p, size_t m, double *adj)
{
	if (m == 0)
		return sx_diag_set(SX_EINVAL, "no p-values");
	for (size_t i = 0; i < m; i++)
		if (!(p[i] >= 0 && p[i] <= 1))
			return sx_diag_set(SX_EINVAL, "p-value %zu must be in [0, 1], got %g", i, p[i]);
	struct ranked *r = malloc(m * sizeof(*r));
	if (!r)
		return sx_diag_set(SX_ENOMEM, "holm: out of memory for %zu p-values", m);
	for (size_t i = 0; i < m; i++) {
		r[i].p = p[i];
		r[i].i = i;
	}
	qsort(r, m, sizeof(*r), ranked_cmp);
	double run = 0;
	for (size_t j = 0; j < m; j++) {
		double v = (double)(m - j) * r[j].p;
		if (v > 1)
			v = 1;
		if (v > run)
			run = v;
		adj[r[j].i] = run;
	}
	free(r);
	return 0;
}

int sx_abtest_srm(const double *counts, const double *weights, size_t k, double threshold,
		  struct sx_abtest_srm *out)
{
	if (k < 2)
		return sx_diag_set(SX_EINVAL, "need at least 2 arms, got %zu", k);
	if (threshold == 0)
		threshold = SX_ABTEST_SRM_THRESHOLD;
	if (!(threshold > 0 && threshold < 1))
		return sx_diag_set(SX_EINVAL, "threshold must be in (0, 1), got %g", threshold);
	double tc = 0, tw = 0;
	for (size_t i = 0; i < k; i++) {
		if (!isfinite(counts[i]) || !(counts[i] >= 0))
			return sx_diag_set(SX_EINVAL, "count %zu must be finite and >= 0, got %g", i, counts[i]);
		double w = weights ? weights[i] : 1;
		if (!isfinite(w) || !(w > 0))
			return sx_diag_set(SX_EINVAL, "weight %zu must be finite and > 0, got %g", i, w);
		tc += counts[i];
		tw += w;
	}
	if (!(tc > 0))
		return sx_diag_set(SX_EINVAL, "no units assigned");
	double stat = 0;
	for (size_t i = 0; i < k; i++) {
		double e = tc * (weights ? weights[i] : 1) / tw;
		stat += (counts[i] - e) * (counts[i] - e) / e;
	}
	out->stat = stat;
	out->df = (double)(k - 1);
	out->p_value = sx_stats_chi2_sf(stat, out->df);
	out->mismatch = out->p_value < threshold;
	return 0;
}

static int plan_common(const struct sx_abtest_plan *plan, struct sx_abtest_plan_result *out,
		       double *z_alpha, double *z_power)
{
	int rc;
	if ((rc = check_alpha(plan->alpha)))
		return rc;
	if (!(plan->power > 0 && plan->power < 1))
		return sx_diag_set(SX_EINVAL, "power must be in (0, 1), got %g", plan->power);
	if (plan->sides != 1 && plan->sides != 2)
		return sx_diag_set(SX_EINVAL, "sides must be 1 or 2, got %d", plan->sides);
	if (plan->variants < 2)
		return sx_diag_set(SX_EINVAL, "variants counts the control: >= 2, got %d", plan->variants);
	if (plan->mde_kind != SX_ABTEST_MDE_RELATIVE && plan->mde_kind != SX_ABTEST_MDE_ABSOLUTE)
		return sx_diag_set(SX_EINVAL, "mde_kind must be relative (0) or absolute (1)");
	if (!isfinite(plan->mde) || plan->mde == 0)
		return sx_diag_set(SX_EINVAL, "mde must be finite and not 0, got %g", plan->mde);
	if (!isfinite(plan->baseline))
		return sx_diag_set(SX_EINVAL, "baseline is not finite");
	if (!isfinite(plan->daily_traffic) || plan->daily_traffic < 0)
		return sx_diag_set(SX_EINVAL, "daily_traffic must be finite and >= 0, got %g",
				   plan->daily_traffic);
	out->alpha_per_test = plan->alpha / (plan->variants - 1);
	out->diff = plan->mde_kind == SX_ABTEST_MDE_RELATIVE ? plan->baseline * plan->mde : plan->mde;
	if (out->diff == 0)
		return sx_diag_set(SX_EINVAL, "a relative mde of a 0 baseline is no difference");
	*z_alpha = sx_stats_norm_isf(out->alpha_per_test / plan->sides);
	*z_power = sx_stats_norm_ppf(plan->power);
	return 0;
}

static void plan_finish(const struct sx_abtest_plan *plan, double num,
			struct sx_abtest_plan_result *out)
{
	double r = (num > 0 ? num : 0) / out->diff;
	out->n_per_arm = r * r;
	out->n_per_arm_ceil = ceil(out->n_per_arm);
	out->n_total = out->n_per_arm_ceil * plan->variants;
	out->days = plan->daily_traffic > 0 ? ceil(out->n_total / plan->daily_traffic) : 0;
}

int sx_abtest_plan_props(const struct sx_abtest_plan *plan, struct sx_abtest_plan_result *out)
{
	double za, zb;
	int rc = plan_common(plan, out, &za, &zb);
	if (rc)
		return rc;
	double p1 = plan->baseline, p2 = p1 + out->diff;
	if (!(p1 > 0 && p1 < 1))
		return sx_diag_set(SX_EINVAL, "baseline rate must be in (0, 1), got %g", p1);
	if (!(p2 > 0 && p2 < 1))
		return sx_diag_set(SX_EINVAL, "baseline + mde must be a rate in (0, 1), got %g", p2);
	double pool = (p1 + p2) / 2;
	double sd0 = sqrt(2 * pool * (1 - pool)), sd1 = sqrt(p1 * (1 - p1) + p2 * (1 - p2));
	plan_finish(plan, za * sd0 + zb * sd1, out);
	return 0;
}

int sx_abtest_plan_means(const struct sx_abtest_plan *plan, struct sx_abtest_plan_result *out)
{
	double za, zb;
	if (!isfinite(plan->sd) || !(plan->sd > 0))
		return sx_diag_set(SX_EINVAL, "sd must be finite and > 0, got %g", plan->sd);
	int rc = plan_common(plan, out, &za, &zb);
	if (rc)
		return rc;
	plan_finish(plan, (za + zb) * plan->sd * M_SQRT2, out);
	return 0;
}

int sx_abtest_msprt_init(struct sx_abtest_msprt *s, double tau2, double alpha, double theta0)
{
	int rc;
	if (!isfinite(tau2) || !(tau2 > 0))
		return sx_diag_set(SX_EINVAL, "tau2 must be finite and > 0, got %g", tau2);
	if ((rc = check_alpha(alpha)))
		return rc;
	if (!isfinite(theta0))
		return sx_diag_set(SX_EINVAL, "theta0 is not finite");
	s->tau2 = tau2;
	s->alpha = alpha;
	s->theta0 = theta0;
	s->p_value = 1;
	s->ci_lo = -INFINITY;
	s->ci_hi = INFINITY;
	s->lambda = 1;
	s->diff = 0;
	s->var = 0;
	s->updates = 0;
	return 0;
}

double sx_abtest_msprt_log_lambda(double diff, double var, double tau2, double theta0)
{
	double d = diff - theta0;
	return 0.5 * log(var / (var + tau2)) + tau2 * d * d / (2 * var * (var + tau2));
}

int sx_abtest_msprt_update(struct sx_abtest_msprt *s, double diff, double var)
{
	if (!isfinite(diff))
		return sx_diag_set(SX_EINVAL, "msprt: diff is not finite");
	if (!isfinite(var) || !(var >= 0))
		return sx_diag_set(SX_EINVAL, "msprt: variance must be finite and >= 0, got %g", var);
	s->updates++;
	s->diff = diff;
	s->var = var;
	if (var == 0)
		return 0;
	double ll = sx_abtest_msprt_log_lambda(diff, var, s->tau2, s->theta0);
	s->lambda = exp(ll);
	double p = exp(-ll);
	if (p < s->p_value)
		s->p_value = p;
	double r = sqrt(var * (var + s->tau2) / s->tau2 *
			(2 * log(1 / s->alpha) + log((var + s->tau2) / var)));
	if (diff - r > s->ci_lo)
		s->ci_lo = diff - r;
	if (diff + r < s->ci_hi)
		s->ci_hi = diff + r;
	return 0;
}

int sx_abtest_msprt_update_means(struct sx_abtest_msprt *s, const struct sx_abtest_summary *a,
				 const struct sx_abtest_summary *b)
{
	int rc;
	if ((rc = check_summary(a, 1, "control")) || (rc = check_summary(b, 1, "treatment")))
		return rc;
	return sx_abtest_msprt_update(s, b->mean - a->mean, a->var / a->n + b->var / b->n);
}

int sx_abtest_msprt_update_props(struct sx_abtest_msprt *s, double n_a, double x_a, double n_b,
				 double x_b)
{
	int rc;
	if ((rc = check_counts(n_a, x_a, "control")) || (rc = check_counts(n_b, x_b, "treatment")))
		return rc;
	double pa = x_a / n_a, pb = x_b / n_b;
	return sx_abtest_msprt_update(s, pb - pa, pa * (1 - pa) / n_a + pb * (1 - pb) / n_b);
}

/* ---- one-dimensional integrals over [0, 1] for the Beta posteriors ---- */

struct beta_arm {
	double a, b, lo, hi; /* shape, and where its density lives */
};

/* Integrands get x and y = 1 - x, each exact where it is small. */
typedef double (*integrand_fn)(double x, double y, const void *ctx);

static const double gk_x[8] = {
	0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
	0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
	0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
	0.207784955007898467600689403773245, 0.0};
static const double gk_w[8] = {
	0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
	0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
	0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
	0.204432940075298892414161999234649, 0.209482141084727828012999174891714};
static const double g7_w[4] = {
	0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
	0.381830050505118944950369775488975, 0.417959183673469387755102040816327};

/* One segment of the range, integrated in t on [0, 1]: the point is
 * end + width * t^pow measured in x, or in y = 1 - x for the segment that
 * ends at 1 (so that points 1e-30 from 1 exist). The power flattens a Beta
 * density's x^(a-1) singularity at 0 (or (1-x)^(b-1) at 1) into
 * t^(pow a - 1). */
struct half {
	integrand_fn f;
	const void *ctx;
	double end, width, pow;
	int right;
};

static double half_eval(const struct half *h, double t)
{
	double tp = h->pow == 1 ? t : pow(t, h->pow);
	double d = h->end + h->width * tp;
	double dd = h->width * h->pow * (h->pow == 1 ? 1 : tp / t);
	if (!(dd > 0) || !isfinite(dd))
		return 0;
	double v = h->right ? h->f(1 - d, d, h->ctx) : h->f(d, 1 - d, h->ctx);
	return isfinite(v) ? v * dd : 0;
}

static double gk15(const struct half *m, double a, double b, double *err)
{
	double c = 0.5 * (a + b), h = 0.5 * (b - a);
	double fc = half_eval(m, c);
	double k = fc * gk_w[7], g = fc * g7_w[3];
	for (int i = 0; i < 7; i++) {
		double dx = h * gk_x[i];
		double s = half_eval(m, c - dx) + half_eval(m, c + dx);
		k += gk_w[i] * s;
		if (i % 2 == 1)
			g += g7_w[i / 2] * s;
	}
	*err = fabs((k - g) * h);
	return k * h;
}

/* Globally adaptive: keep splitting the piece with the largest error
 * estimate until the sum of the estimates is within tolerance or the piece
 * budget is spent (bounded work whatever the integrand). */
static double integrate_half(const struct half *m)
{
	struct piece {
		double a, b, v, err;
	} p[QUAD_PIECES];
	size_t n = 1;
	p[0].a = 0;
	p[0].b = 1;
	p[0].v = gk15(m, 0, 1, &p[0].err);
	for (;;) {
		double total = 0, err = 0;
		size_t worst = 0;
		for (size_t i = 0; i < n; i++) {
			total += p[i].v;
			err += p[i].err;
			if (p[i].err > p[worst].err)
				worst = i;
		}
		if (err <= QUAD_ABS || err <= QUAD_REL * fabs(total) || n + 1 > QUAD_PIECES)
			return total;
		double a = p[worst].a, b = p[worst].b, c = 0.5 * (a + b);
		if (!(c > a && c < b))
			return total;
		p[worst].b = c;
		p[worst].v = gk15(m, a, c, &p[worst].err);
		p[n].a = c;
		p[n].b = b;
		p[n].v = gk15(m, c, b, &p[n].err);
		n++;
	}
}

/* The substitution power for an end where a density behaves like
 * dist^(shape - 1). */
static double end_pow(double shape)
{
	double p = ceil(1.5 / shape);
	return p < 1 ? 1 : p > 40 ? 40 : p;
}

static void add_point(double *pts, size_t *n, double v, double lo, double hi)
{
	if (v > lo && v < hi)
		pts[(*n)++] = v;
}

static int double_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* int_lo^hi f, cut at every arm's support ends and mean so that no narrow
 * ramp or peak hides between quadrature nodes. shape_lo / shape_hi: the
 * smallest Beta shape of a density the integrand carries at 0 / 1. */
static double integrate(integrand_fn f, const void *ctx, double lo, double hi,
			const struct beta_arm *arms, size_t k, double shape_lo, double shape_hi)
{
	if (!(hi > lo))
		return 0;
	double pts[3 * SX_ABTEST_MAX_ARMS + 3];
	size_t n = 0;
	pts[n++] = lo;
	pts[n++] = hi;
	add_point(pts, &n, 0.5 * (lo + hi), lo, hi);
	for (size_t j = 0; j < k; j++) {
		add_point(pts, &n, arms[j].lo, lo, hi);
		add_point(pts, &n, arms[j].hi, lo, hi);
		add_point(pts, &n, arms[j].a / (arms[j].a + arms[j].b), lo, hi);
	}
	qsort(pts, n, sizeof(*pts), double_cmp);
	double total = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		double a = pts[i], b = pts[i + 1];
		if (!(b > a))
			continue;
		struct half h = {f, ctx, a, b - a, 1, 0};
		if (b == 1) {
			h.end = 1 - b;
			h.right = 1;
			h.pow = end_pow(shape_hi);
		} else if (a == 0) {
			h.pow = end_pow(shape_lo);
		}
		total += integrate_half(&h);
	}
	return total;
}

static void beta_arm_init(struct beta_arm *arm, double a, double b)
{
	double s = a + b, mean = a / s, sd = sqrt(a * b / (s * s * (s + 1)));
	arm->a = a;
	arm->b = b;
	arm->lo = mean - SUPPORT_SDS * sd;
	arm->hi = mean + SUPPORT_SDS * sd;
	if (arm->lo < 0)
		arm->lo = 0;
	if (arm->hi > 1)
		arm->hi = 1;
}

struct best_ctx {
	const struct beta_arm *arms;
	size_t k, i;
};

static double beta_cdf_xy(const struct beta_arm *arm, double x, double y)
{
	double ix, ixc;
	sx_stats_ibeta_xy(arm->a, arm->b, x, y, &ix, &ixc);
	return ix;
}

/* f_i(x) prod_{j != i} F_j(x) */
static double best_density(double x, double y, const void *vctx)
{
	const struct best_ctx *c = vctx;
	const struct beta_arm *ai = &c->arms[c->i];
	double v = exp(sx_stats_beta_logpdf_xy(x, y, ai->a, ai->b));
	for (size_t j = 0; j < c->k && v > 0; j++)
		if (j != c->i)
			v *= beta_cdf_xy(&c->arms[j], x, y);
	return v;
}

/* F_i(x) (1 - prod_{j != i} F_j(x)); with one other arm its sf directly. */
static double loss_density(double x, double y, const void *vctx)
{
	const struct best_ctx *c = vctx;
	double fi = beta_cdf_xy(&c->arms[c->i], x, y);
	if (fi == 0)
		return 0;
	if (c->k == 2) {
		const struct beta_arm *o = &c->arms[1 - c->i];
		double ix, ixc;
		sx_stats_ibeta_xy(o->a, o->b, x, y, &ix, &ixc);
		return fi * ixc;
	}
	double g = 1;
	for (size_t j = 0; j < c->k; j++)
		if (j != c->i)
			g *= beta_cdf_xy(&c->arms[j], x, y);
	return fi * (1 - g);
}

static double prob_best_one(const struct beta_arm *arms, size_t k, size_t i)
{
	struct best_ctx c = {arms, k, i};
	double v = integrate(best_density, &c, arms[i].lo, arms[i].hi, arms, k, arms[i].a, arms[i].b);
	return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* No density in the loss integrand: nothing singular at the ends. */
static double loss_one(const struct beta_arm *arms, size_t k, size_t i)
{
	struct best_ctx c = {arms, k, i};
	double hi = 0;
	for (size_t j = 0; j < k; j++)
		if (j != i && arms[j].hi > hi)
			hi = arms[j].hi;
	double v = integrate(loss_density, &c, arms[i].lo, hi, arms, k, 2, 2);
	return v < 0 ? 0 : v;
}

static int check_prior(double a, double b)
{
	if (!isfinite(a) || !(a > 0) || !isfinite(b) || !(b > 0))
		return sx_diag_set(SX_EINVAL, "prior must be Beta(a, b) with finite a, b > 0, got (%g, %g)",
				   a, b);
	return 0;
}

static int arms_from_counts(const double *n, const double *x, size_t k, double pa, double pb,
			    struct beta_arm **out)
{
	int rc;
	if (k < 2)
		return sx_diag_set(SX_EINVAL, "need at least 2 arms, got %zu", k);
	if ((rc = check_prior(pa, pb)))
		return rc;
	for (size_t i = 0; i < k; i++)
		if ((rc = check_counts(n[i], x[i], "arm")))
			return rc;
	struct beta_arm *arms = malloc(k * sizeof(*arms));
	if (!arms)
		return sx_diag_set(SX_ENOMEM, "out of memory for %zu arms", k);
	for (size_t i = 0; i < k; i++)
		beta_arm_init(&arms[i], pa + x[i], pb + n[i] - x[i]);
	*out = arms;
	return 0;
}

int sx_abtest_bayes_beta(const double *n, const double *x, size_t k, double prior_a,
			 double prior_b, struct sx_abtest_bayes_arm *out)
{
	struct beta_arm *arms = NULL;
	if (k > SX_ABTEST_MAX_ARMS)
		return sx_diag_set(SX_EINVAL, "at most %d arms, got %zu", SX_ABTEST_MAX_ARMS, k);
	int rc = arms_from_counts(n, x, k, prior_a, prior_b, &arms);
	if (rc)
		return rc;
	for (size_t i = 0; i < k; i++) {
		struct sx_abtest_bayes_arm *o = &out[i];
		o->mean = arms[i].a / (arms[i].a + arms[i].b);
		o->prob_best = prob_best_one(arms, k, i);
		o->loss_vs_best = loss_one(arms, k, i);
		if (i == 0) {
			o->prob_beat_control = NAN;
			o->loss_vs_control = 0;
			continue;
		}
		struct beta_arm pair[2] = {arms[i], arms[0]};
		o->prob_beat_control = prob_best_one(pair, 2, 0);
		o->loss_vs_control = loss_one(pair, 2, 0);
	}
	free(arms);
	return 0;
}

int sx_abtest_bayes_beta_control(const double *n, const double *x, size_t k, double prior_a,
				 double prior_b, struct sx_abtest_bayes_arm *out)
{
	struct beta_arm *arms = NULL;
	if (k > SX_ABTEST_MAX_ARMS)
		return sx_diag_set(SX_EINVAL, "at most %d arms, got %zu", SX_ABTEST_MAX_ARMS, k);
	int rc = arms_from_counts(n, x, k, prior_a, prior_b, &arms);
	if (rc)
		return rc;
	for (size_t i = 0; i < k; i++) {
		struct sx_abtest_bayes_arm *o = &out[i];
		o->mean = arms[i].a / (arms[i].a + arms[i].b);
		o->prob_best = NAN;
		o->loss_vs_best = NAN;
		if (i == 0) {
			o->prob_beat_control = NAN;
			o->loss_vs_control = 0;
			continue;
		}
		struct beta_arm pair[2] = {arms[i], arms[0]};
		o->prob_beat_control = prob_best_one(pair, 2, 0);
		o->loss_vs_control = loss_one(pair, 2, 0);
	}
	free(arms);
	return 0;
}

int sx_abtest_bayes_normal(const struct sx_abtest_summary *a, const struct sx_abtest_summary *b,
			   struct sx_abtest_bayes_normal *out)
{
	int rc;
	if ((rc = check_summary(a, 1, "control")) || (rc = check_summary(b, 1, "treatment")))
		return rc;
	double mu = b->mean - a->mean, s = sqrt(a->var / a->n + b->var / b->n);
	if (s == 0)
		return sx_diag_set(SX_EINVAL, "both variances are 0: no posterior spread");
	double z = mu / s, pdf = sx_stats_norm_pdf(z);
	out->prob_beat = sx_stats_norm_cdf(z);
	out->loss_choose = s * pdf - mu * sx_stats_norm_sf(z);
	out->loss_keep = mu * out->prob_beat + s * pdf;
	if (out->loss_choose < 0)
		out->loss_choose = 0;
	if (out->loss_keep < 0)
		out->loss_keep = 0;
	return 0;
}

int sx_abtest_cuped(const struct sx_abtest_cuped_sums *v, size_t k, double *theta,
		    struct sx_abtest_summary *adj)
{
	if (k < 1)
		return sx_diag_set(SX_EINVAL, "no variants");
	double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
	for (size_t i = 0; i < k; i++) {
		const struct sx_abtest_cuped_sums *s = &v[i];
		if (!isfinite(s->n) || !(s->n >= 2))
			return sx_diag_set(SX_EINVAL, "variant %zu: n must be >= 2, got %g", i, s->n);
		if (!isfinite(s->sx) || !isfinite(s->sy) || !isfinite(s->sxx) || !isfinite(s->syy) ||
		    !isfinite(s->sxy))
			return sx_diag_set(SX_EINVAL, "variant %zu: a sum is not finite", i);
		n += s->n;
		sx += s->sx;
		sy += s->sy;
		sxx += s->sxx;
		sxy += s->sxy;
	}
	double varx = (sxx - sx * sx / n) / (n - 1);
	double cov = (sxy - sx * sy / n) / (n - 1);
	if (!(varx > 0))
		return sx_diag_set(SX_EINVAL, "the covariate is constant: CUPED has nothing to use");
	double th = cov / varx, mx = sx / n;
	for (size_t i = 0; i < k; i++) {
		const struct sx_abtest_cuped_sums *s = &v[i];
		double m = s->n, xi = s->sx / m, yi = s->sy / m;
		double vx = (s->sxx - s->sx * xi) / (m - 1);
		double vy = (s->syy - s->sy * yi) / (m - 1);
		double cxy = (s->sxy - s->sx * yi) / (m - 1);
		double var = vy + th * th * vx - 2 * th * cxy;
		adj[i].n = m;
		adj[i].mean = yi - th * (xi - mx);
		adj[i].var = var > 0 ? var : 0;
	}
	if (theta)
		*theta = th;
	return 0;
}

static int arms_from_bandit(const double *s, const double *f, size_t k, double pa, double pb,
			    struct beta_arm **out)
{
	int rc;
	if (k < 1)
		return sx_diag_set(SX_EINVAL, "no arms");
	if ((rc = check_prior(pa, pb)))
		return rc;
	for (size_t i = 0; i < k; i++)
		if (!isfinite(s[i]) || !(s[i] >= 0) || !isfinite(f[i]) || !(f[i] >= 0))
			return sx_diag_set(SX_EINVAL, "arm %zu: successes and failures must be finite and >= 0",
					   i);
	struct beta_arm *arms = malloc(k * sizeof(*arms));
	if (!arms)
		return sx_diag_set(SX_ENOMEM, "out of memory for %zu arms", k);
	for (size_t i = 0; i < k; i++)
		beta_arm_init(&arms[i], pa + s[i], pb + f[i]);
	*out = arms;
	return 0;
}

int sx_abtest_prob_best(const double *s, const double *f, size_t k, double prior_a,
			double prior_b, double *prob)
{
	struct beta_arm *arms = NULL;
	if (k > SX_ABTEST_MAX_ARMS)
		return sx_diag_set(SX_EINVAL, "at most %d arms, got %zu", SX_ABTEST_MAX_ARMS, k);
	int rc = arms_from_bandit(s, f, k, prior_a, prior_b, &arms);
	if (rc)
		return rc;
	for (size_t i = 0; i < k; i++)
		prob[i] = k == 1 ? 1 : prob_best_one(arms, k, i);
	free(arms);
	return 0;
}

static size_t thompson_draw(const struct beta_arm *arms, size_t k, struct sx_stats_rng *rng)
{
	size_t best = 0;
	double top = -1;
	for (size_t i = 0; i < k; i++) {
		double d = sx_stats_rng_beta(rng, arms[i].a, arms[i].b);
		if (d > top) {
			top = d;
			best = i;
		}
	}
	return best;
}

int sx_abtest_thompson_mc(const double *s, const double *f, size_t k, double prior_a,
			  double prior_b, uint64_t draws, uint64_t seed, double *prob)
{
	if (draws == 0)
		return sx_diag_set(SX_EINVAL, "draws must be > 0");
	struct beta_arm *arms = NULL;
	int rc = arms_from_bandit(s, f, k, prior_a, prior_b, &arms);
	if (rc)
		return rc;
	struct sx_stats_rng rng;
	sx_stats_rng_seed(&rng, seed);
	for (size_t i = 0; i < k; i++)
		prob[i] = 0;
	for (uint64_t d = 0; d < draws; d++)
		prob[thompson_draw(arms, k, &rng)] += 1;
	for (size_t i = 0; i < k; i++)
		prob[i] /= (double)draws;
	free(arms);
	return 0;
}

int sx_abtest_thompson_choose(const double *s, const double *f, size_t k, double prior_a,
			      double prior_b, struct sx_stats_rng *rng, size_t *arm)
{
	struct beta_arm *arms = NULL;
	int rc = arms_from_bandit(s, f, k, prior_a, prior_b, &arms);
	if (rc)
		return rc;
	*arm = thompson_draw(arms, k, rng);
	free(arms);
	return 0;
}
