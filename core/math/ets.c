#include "core/math/ets.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/optim.h"
#include "core/sx.h"

#define LB_SMOOTH 1e-4
#define UB_SMOOTH (1.0 - 1e-4)
#define LB_PHI 0.8
#define UB_PHI 0.98
#define UB_PHI_HW 0.995
#define LOG_2PI 1.8378770664093454836

/* ---- specs ---------------------------------------------------------------- */

char *sx_ets_spec_name(const struct sx_ets_spec *spec, char *buf)
{
	static const char c[] = "NAM";
	char *p = buf;
	*p++ = c[spec->error < 0 || spec->error > 2 ? 0 : spec->error];
	*p++ = c[spec->trend < 0 || spec->trend > 2 ? 0 : spec->trend];
	if (spec->damped)
		*p++ = 'd';
	*p++ = c[spec->season < 0 || spec->season > 2 ? 0 : spec->season];
	*p = '\0';
	return buf;
}

static int letter(char ch)
{
	return ch == 'N' ? SX_ETS_NONE : ch == 'A' ? SX_ETS_ADD : ch == 'M' ? SX_ETS_MUL : -1;
}

int sx_ets_spec_parse(const char *name, int m, struct sx_ets_spec *spec)
{
	size_t len = name ? strlen(name) : 0;
	if (len != 3 && !(len == 4 && name[2] == 'd'))
		return sx_diag_set(SX_EINVAL, "ets: model name '%s' is not like ANN or MAdM",
				   name ? name : "(null)");
	struct sx_ets_spec s = {
		.error = letter(name[0]),
		.trend = letter(name[1]),
		.damped = len == 4,
		.season = letter(name[len - 1]),
		.m = m,
	};
	if (s.error < SX_ETS_ADD || s.trend < 0 || s.trend == SX_ETS_MUL || s.season < 0 ||
	    (s.damped && s.trend != SX_ETS_ADD))
		return sx_diag_set(SX_EINVAL,
				   "ets: model '%s': error A|M, trend N|A|Ad, season N|A|M", name);
	*spec = s;
	return 0;
}

static int check_spec(const struct sx_ets_spec *s)
{
	if (!s)
		return sx_diag_set(SX_EINVAL, "ets: spec is NULL");
	if (s->error != SX_ETS_ADD && s->error != SX_ETS_MUL)
		return sx_diag_set(SX_EINVAL, "ets: error must be additive or multiplicative");
	if (s->trend != SX_ETS_NONE && s->trend != SX_ETS_ADD)
		return sx_diag_set(SX_EINVAL, "ets: trend must be none or additive");
	if (s->damped && s->trend != SX_ETS_ADD)
		return sx_diag_set(SX_EINVAL, "ets: a damped model needs an additive trend");
	if (s->season < SX_ETS_NONE || s->season > SX_ETS_MUL)
		return sx_diag_set(SX_EINVAL, "ets: season must be none, additive or multiplicative");
	if (s->season != SX_ETS_NONE && (s->m < 2 || s->m > SX_ETS_MAX_M))
		return sx_diag_set(SX_EINVAL,
				   "ets: seasonal model needs 2 <= m <= %d (got %d); remove longer "
				   "periods with sx_ets_seasonal_index",
				   SX_ETS_MAX_M, s->m);
	return 0;
}

static int season_len(const struct sx_ets_spec *s)
{
	return s->season == SX_ETS_NONE ? 1 : s->m;
}

static int count_params(const struct sx_ets_spec *s)
{
	int k = 1 + (s->trend != SX_ETS_NONE) + (s->season != SX_ETS_NONE) + s->damped;
	k += 1 + (s->trend != SX_ETS_NONE) + (s->season != SX_ETS_NONE ? s->m - 1 : 0);
	return k + 1;
}

static int check_data(const double *y, size_t n, const struct sx_ets_spec *s, int fitting)
{
	if (!y)
		return sx_diag_set(SX_EINVAL, "ets: data is NULL");
	int mulc = s->error == SX_ETS_MUL || s->season == SX_ETS_MUL;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return sx_diag_set(SX_EINVAL, "ets: y[%zu] is not finite", i);
		if (mulc && !(y[i] > 0))
			return sx_diag_set(SX_EINVAL,
					   "ets: multiplicative model needs y > 0 (y[%zu] = %g)", i,
					   y[i]);
	}
	if (!fitting) {
		if (n < 1)
			return sx_diag_set(SX_EINVAL, "ets: no observations");
		return 0;
	}
	size_t minn = s->season != SX_ETS_NONE ? 2 * (size_t)s->m : 4;
	if (n < minn)
		return sx_diag_set(SX_EINVAL, "ets: %zu observations, the model needs at least %zu",
				   n, minn);
	if (n < (size_t)count_params(s) + 2)
		return sx_diag_set(SX_EINVAL, "ets: %zu observations for %d parameters", n,
				   count_params(s));
	return 0;
}

/* ---- recursions ----------------------------------------------------------- */

struct kres {
	double sse_r; /* sum r^2 */
	double sse_e; /* sum (r/yhat)^2 */
	double slog;  /* sum log yhat */
	int bad;      /* a multiplicative term hit <= 0 or a state overflowed */
};

/* The one smoothing pass shared by ML fits, least squares, filtering. */
static void kernel(const double *y, size_t n, const struct sx_ets_model *p, double *fitted,
		   double *l_end, double *b_end, double *s_end, struct kres *kr)
{
	int trend = p->spec.trend != SX_ETS_NONE, seas = p->spec.season;
	int mulerr = p->spec.error == SX_ETS_MUL;
	int m = season_len(&p->spec);
	double alpha = p->alpha, beta = trend ? p->beta : 0, gamma = seas ? p->gamma : 0;
	double phi = trend ? p->phi : 0;
	double l = p->l0, b = trend ? p->b0 : 0;
	double ring[SX_ETS_MAX_M];
	for (int j = 0; j < m; j++)
		ring[j] = seas ? p->s0[j] : 0;
	/* sum log yhat as the exponent and mantissa of the product: one log per
	 * pass instead of one per observation. */
	double sse_r = 0, sse_e = 0, mant = 1;
	long expo = 0;
	int bad = 0, j = 0;
	for (size_t t = 0; t < n; t++) {
		double B = phi * b, L = l + B, S = ring[j], Y, r;
		if (seas == SX_ETS_MUL) {
			if (!(S > 0) || !(L > 0)) {
				bad = 1;
				break;
			}
			Y = L * S;
			r = y[t] - Y;
			l = L + alpha * r / S;
			b = B + beta * r / S;
			ring[j] = S + gamma * r / L;
		} else {
			Y = L + S;
			r = y[t] - Y;
			l = L + alpha * r;
			b = B + beta * r;
			ring[j] = S + gamma * r;
		}
		if (fitted)
			fitted[t] = Y;
		sse_r += r * r;
		if (mulerr) {
			if (!(Y > 0)) {
				bad = 1;
				break;
			}
			double e = r / Y;
			sse_e += e * e;
			mant *= Y;
			if (!(mant < 1e150 && mant > 1e-150)) {
				int ex;
				if (isinf(mant)) {
					bad = 1;
					break;
				}
				mant = frexp(mant, &ex);
				expo += ex;
			}
		}
		if (++j == m)
			j = 0;
	}
	if (!isfinite(sse_r) || !isfinite(l) || !isfinite(b))
		bad = 1;
	kr->sse_r = sse_r;
	kr->sse_e = sse_e;
	kr->slog = mulerr ? log(mant) + (double)expo * M_LN2 : 0;
	kr->bad = bad;
	if (l_end) {
		*l_end = l;
		*b_end = b;
		for (int i = 0; i < m; i++)
			s_end[i] = ring[(j + i) % m];
	}
}

static double loglik_of(const struct sx_ets_spec *s, size_t n, const struct kres *kr)
{
	double dn = (double)n;
	if (s->error == SX_ETS_MUL)
		return -0.5 * dn * (LOG_2PI + log(kr->sse_e / dn) + 1.0) - kr->slog;
	return -0.5 * dn * (LOG_2PI + log(kr->sse_r / dn) + 1.0);
}

/* The same pass for SX_OPTIM_LANES parameter sets at once, for the
 * optimiser's gradient and line-search points (core/math/ets_lanes.h). One
 * pass is a serial chain of dependent operations (latency-bound);
 * independent lanes fill the pipeline, so four cost little more than one.
 * Specialised per model shape (trend, season, error) so that the per-step
 * branches disappear.
 *
 * Baseline x86-64 (SSE2) runs the four lanes as two 16-byte vectors: GCC
 * lowers 32-byte vector comparisons and 64-bit integer operations without
 * AVX to scalar code through memory, and its store-to-load forwarding
 * stalls made the multiplicative models three times slower than their
 * arithmetic. With AVX2 the four lanes are one 32-byte vector. */
#define NL SX_OPTIM_LANES

struct lanes {
	double alpha[NL], beta[NL], gamma[NL], phi[NL], l0[NL], b0[NL];
	double s0[SX_ETS_MAX_M][NL];
};

#define LN_W 2
#define LN_SFX sse2
#define LN_TARGET
#include "core/math/ets_lanes.h"
#undef LN_W
#undef LN_SFX
#undef LN_TARGET

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LN_W 4
#define LN_SFX avx2
#define LN_TARGET __attribute__((target("avx2")))
#include "core/math/ets_lanes.h"
#undef LN_W
#undef LN_SFX
#undef LN_TARGET
#define HAVE_AVX2_KERNEL 1
#endif

static void kernel_lanes(const double *y, size_t n, const struct sx_ets_spec *s,
			 const struct lanes *P, struct kres *kr)
{
	int trend = s->trend != SX_ETS_NONE, seas = s->season, mulerr = s->error == SX_ETS_MUL;
	int m = season_len(s);
#ifdef HAVE_AVX2_KERNEL
	/* SX_ETS_KERNEL=sse2 keeps the SSE2 kernel on an AVX2 machine, so that the
	 * test suite runs both (they give the same bits: no FMA in either) */
	static int avx2 = -1; /* fits run on several threads: the same answer from each */
	int use = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
	if (use < 0) {
		const char *k = getenv("SX_ETS_KERNEL");
		use = __builtin_cpu_supports("avx2") && !(k && strcmp(k, "sse2") == 0);
		__atomic_store_n(&avx2, use, __ATOMIC_RELAXED);
	}
	if (use) {
		kernel_lanes_avx2(y, n, m, trend, seas, mulerr, P, kr);
		return;
	}
#endif
	kernel_lanes_sse2(y, n, m, trend, seas, mulerr, P, kr);
}

int sx_ets_filter(const double *y, size_t n, struct sx_ets_model *p, double *fitted)
{
	int rc;
	if (!p)
		return sx_diag_set(SX_EINVAL, "ets: model is NULL");
	if ((rc = check_spec(&p->spec)) || (rc = check_data(y, n, &p->spec, 0)))
		return rc;
	struct kres kr;
	kernel(y, n, p, fitted, &p->l, &p->b, p->s, &kr);
	if (kr.bad)
		return sx_diag_set(SX_EINVAL,
				   "ets: the recursion left the admissible region (a multiplicative "
				   "term <= 0 or an overflow)");
	int m = season_len(&p->spec);
	if (p->spec.season == SX_ETS_NONE)
		for (int j = 0; j < SX_ETS_MAX_M; j++)
			p->s[j] = p->s0[j] = 0;
	for (int j = m; j < SX_ETS_MAX_M; j++)
		p->s[j] = p->s0[j] = 0;
	if (p->spec.trend == SX_ETS_NONE) {
		p->beta = 0;
		p->phi = 1;
		p->b = p->b0 = 0;
	} else if (!p->spec.damped) {
		p->phi = 1;
	}
	if (p->spec.season == SX_ETS_NONE)
		p->gamma = 0;
	p->n = n;
	p->sse = kr.sse_r;
	p->sigma2 = (p->spec.error == SX_ETS_MUL ? kr.sse_e : kr.sse_r) / (double)n;
	p->loglik = loglik_of(&p->spec, n, &kr);
	p->k = count_params(&p->spec);
	double k = p->k, dn = (double)n;
	p->aic = -2 * p->loglik + 2 * k;
	p->aicc = dn - k - 1 > 0 ? p->aic + 2 * k * (k + 1) / (dn - k - 1) : INFINITY;
	p->bic = -2 * p->loglik + k * log(dn);
	return 0;
}

/* ---- starting values ------------------------------------------------------ */

/* Hyndman et al. (2008) §2.6.1, as statsmodels' _initialization_heuristic;
 * the simple one (first cycle) when the series is too short for it. */
static void heuristic(const double *y, size_t n, const struct sx_ets_spec *s, double *l0,
		      double *b0, double *s0)
{
	int seas = s->season != SX_ETS_NONE;
	size_t m = seas ? (size_t)s->m : 1;
	size_t minobs = 10 + 2 * (m / 2);
	if (!seas) {
		if (n < 10) {
			*l0 = y[0];
			*b0 = y[1] - y[0];
			return;
		}
	} else if (n < minobs) {
		double lv = 0, tr = 0;
		for (size_t j = 0; j < m; j++)
			lv += y[j];
		lv /= (double)m;
		for (size_t j = 0; j < m; j++)
			tr += (y[m + j] - y[j]) / (double)m;
		*l0 = lv;
		*b0 = tr / (double)m;
		for (size_t j = 0; j < m; j++)
			s0[j] = s->season == SX_ETS_MUL ? y[j] / lv : y[j] - lv;
		return;
	}
	double trendbuf[10];
	const double *base = y;
	if (seas) {
		size_t kc = n / m < 5 ? n / m : 5;
		size_t need = (minobs + m - 1) / m;
		if (kc < need)
			kc = need;
		size_t len = kc * m < n ? kc * m : n;
		double sum[SX_ETS_MAX_M] = {0};
		int cnt[SX_ETS_MAX_M] = {0};
		size_t half = m / 2, nt = 0;
		for (size_t t = half; t + half < len; t++) {
			double ma = 0;
			if (m % 2) {
				for (size_t i = t - half; i <= t + half; i++)
					ma += y[i];
				ma /= (double)m;
			} else {
				ma = 0.5 * (y[t - half] + y[t + half]);
				for (size_t i = t - half + 1; i < t + half; i++)
					ma += y[i];
				ma /= (double)m;
			}
			sum[t % m] += s->season == SX_ETS_MUL ? y[t] / ma : y[t] - ma;
			cnt[t % m]++;
			if (nt < 10)
				trendbuf[nt++] = ma;
		}
		double mean = 0;
		for (size_t j = 0; j < m; j++) {
			s0[j] = cnt[j] ? sum[j] / cnt[j] : (s->season == SX_ETS_MUL ? 1 : 0);
			mean += s0[j];
		}
		mean /= (double)m;
		for (size_t j = 0; j < m; j++)
			s0[j] = s->season == SX_ETS_MUL ? s0[j] / mean : s0[j] - mean;
		base = trendbuf;
	}
	/* OLS of the first 10 values on 1..10. */
	double sx = 55, sxx = 385, sy = 0, sxy = 0;
	for (int i = 0; i < 10; i++) {
		sy += base[i];
		sxy += (i + 1) * base[i];
	}
	double slope = (10 * sxy - sx * sy) / (10 * sxx - sx * sx);
	*l0 = (sy - slope * sx) / 10;
	*b0 = slope;
}

/* ---- fitting -------------------------------------------------------------- */

struct obj {
	const double *y;
	size_t n;
	struct sx_ets_model p;
	int hw; /* least squares, Holt-Winters bounds */
	int ib, ig, iphi, il, ibb, is;
	size_t dim;
};

static void layout(struct obj *o)
{
	const struct sx_ets_spec *s = &o->p.spec;
	int i = 1;
	o->ib = s->trend ? i++ : -1;
	o->ig = s->season ? i++ : -1;
	o->iphi = s->damped ? i++ : -1;
	o->il = i++;
	o->ibb = s->trend ? i++ : -1;
	o->is = s->season ? i : -1;
	if (s->season)
		i += s->m - 1;
	o->dim = (size_t)i;
}

static void unpack_to(const struct obj *o, const double *x, struct sx_ets_model *p)
{
	double a = x[0];
	p->alpha = a;
	/* beta and gamma are searched as fractions of their upper limits so
	 * that the box stays rectangular. */
	p->beta = o->ib >= 0 ? (o->hw ? a * a * x[o->ib] : a * x[o->ib]) : 0;
	p->gamma = o->ig >= 0 ? (1 - a) * x[o->ig] : 0;
	p->phi = o->iphi >= 0 ? x[o->iphi] : 1;
	p->l0 = x[o->il];
	p->b0 = o->ibb >= 0 ? x[o->ibb] : 0;
	if (o->is >= 0) {
		int m = p->spec.m;
		double acc = 0;
		for (int j = 0; j < m - 1; j++) {
			p->s0[j] = x[o->is + j];
			acc += p->s0[j];
		}
		p->s0[m - 1] = p->spec.season == SX_ETS_MUL ? m - acc : -acc;
	}
}

static void unpack(struct obj *o, const double *x) { unpack_to(o, x, &o->p); }

static double objective_value(const struct obj *o, const struct kres *kr)
{
	if (kr->bad)
		return INFINITY;
	if (o->hw)
		return kr->sse_r;
	if (o->p.spec.error == SX_ETS_MUL && !(kr->sse_e > 0))
		return INFINITY;
	if (o->p.spec.error == SX_ETS_ADD && !(kr->sse_r > 0))
		return -1e300;
	return -loglik_of(&o->p.spec, o->n, kr);
}

static double objective(const double *x, void *ud)
{
	struct obj *o = ud;
	unpack(o, x);
	struct kres kr;
	kernel(o->y, o->n, &o->p, NULL, NULL, NULL, NULL, &kr);
	return objective_value(o, &kr);
}

struct uobj {
	struct obj *o;
	size_t dim;
	double lb[SX_OPTIM_MAX_DIM], ub[SX_OPTIM_MAX_DIM], c[SX_OPTIM_MAX_DIM], s[SX_OPTIM_MAX_DIM];
};

static double from_u1(const struct uobj *u, size_t i, double z)
{
	double x;
	if (isfinite(u->lb[i]) && isfinite(u->ub[i]))
		x = u->lb[i] + (u->ub[i] - u->lb[i]) / (1 + exp(-z));
	else
		x = u->c[i] + u->s[i] * z;
	if (u->lb[i] > -INFINITY && x < u->lb[i])
		x = u->lb[i];
	return x;
}

static void from_u(const struct uobj *u, const double *z, double *x)
{
	for (size_t i = 0; i < u->dim; i++)
		x[i] = from_u1(u, i, z[i]);
}

static void to_u(const struct uobj *u, const double *x, double *z)
{
	for (size_t i = 0; i < u->dim; i++) {
		if (isfinite(u->lb[i]) && isfinite(u->ub[i])) {
			double p = (x[i] - u->lb[i]) / (u->ub[i] - u->lb[i]);
			p = fmin(fmax(p, 1e-6), 1 - 1e-6);
			z[i] = log(p / (1 - p));
		} else {
			z[i] = (x[i] - u->c[i]) / u->s[i];
		}
	}
}

static double objective_u(const double *z, void *ud)
{
	const struct uobj *u = ud;
	double x[SX_OPTIM_MAX_DIM];
	from_u(u, z, x);
	return objective(x, u->o);
}

static void set_lane(const struct obj *o, const double *x, struct lanes *P, int k)
{
	struct sx_ets_model mp;
	mp.spec = o->p.spec;
	unpack_to(o, x, &mp);
	P->alpha[k] = mp.alpha;
	P->beta[k] = mp.beta;
	P->gamma[k] = mp.gamma;
	P->phi[k] = mp.phi;
	P->l0[k] = mp.l0;
	P->b0[k] = mp.b0;
	for (int j = 0; j < season_len(&o->p.spec); j++)
		P->s0[j][k] = mp.s0[j];
}

/* objective() of count points xs, NL at a time. */
static void objective_x_multi(const struct obj *o, const double *const *xs, size_t count,
			      double *fx)
{
	for (size_t g = 0; g < count; g += NL) {
		struct lanes P;
		struct kres kr[NL];
		for (int k = 0; k < NL; k++)
			set_lane(o, xs[g + k < count ? g + k : g], &P, k);
		kernel_lanes(o->y, o->n, &o->p.spec, &P, kr);
		for (int k = 0; k < NL && g + k < count; k++)
			fx[g + k] = objective_value(o, &kr[k]);
	}
}

/* The optimiser's points in groups of NL lanes (a short last group is
 * padded with copies of its first point). from_u is coordinate-wise, so a
 * point that differs from the previous one in a few coordinates (a
 * gradient step) only maps those again. */
static void objective_multi(const double *const *zs, size_t count, double *fx, void *ud)
{
	const struct uobj *u = ud;
	const struct obj *o = u->o;
	double zprev[SX_OPTIM_MAX_DIM], xprev[SX_OPTIM_MAX_DIM];
	int have = 0;
	for (size_t g = 0; g < count; g += NL) {
		struct lanes P;
		struct kres kr[NL];
		for (int k = 0; k < NL; k++) {
			const double *z = zs[g + k < count ? g + k : g];
			double x[SX_OPTIM_MAX_DIM];
			if (!have) {
				from_u(u, z, x);
				have = 1;
			} else {
				for (size_t i = 0; i < u->dim; i++) {
					x[i] = z[i] == zprev[i] ? xprev[i] : from_u1(u, i, z[i]);
				}
			}
			memcpy(zprev, z, u->dim * sizeof(double));
			memcpy(xprev, x, u->dim * sizeof(double));
			set_lane(o, x, &P, k);
		}
		kernel_lanes(o->y, o->n, &o->p.spec, &P, kr);
		for (int k = 0; k < NL && g + k < count; k++)
			fx[g + k] = objective_value(o, &kr[k]);
	}
}

static double scale_of(const double *y, size_t n)
{
	double mean = 0, var = 0;
	for (size_t i = 0; i < n; i++)
		mean += y[i];
	mean /= (double)n;
	for (size_t i = 0; i < n; i++)
		var += (y[i] - mean) * (y[i] - mean);
	double sd = sqrt(var / (double)n);
	return sd > 0 ? sd : (fabs(mean) > 0 ? fabs(mean) : 1);
}

static int fit_common(const double *y, size_t n, const struct sx_ets_spec *spec,
		      const struct sx_ets_opts *opts, int hw, struct sx_ets_model *out)
{
	int rc;
	if (!out)
		return sx_diag_set(SX_EINVAL, "ets: out is NULL");
	if ((rc = check_spec(spec)) || (rc = check_data(y, n, spec, 1)))
		return rc;
	struct obj o = {.y = y, .n = n, .hw = hw};
	o.p.spec = *spec;
	if (!spec->season)
		o.p.spec.m = 1;
	layout(&o);

	double l0 = 0, b0 = 0, s0[SX_ETS_MAX_M] = {0};
	heuristic(y, n, &o.p.spec, &l0, &b0, s0);
	double sd = scale_of(y, n);

	double lb[SX_OPTIM_MAX_DIM], ub[SX_OPTIM_MAX_DIM], step[SX_OPTIM_MAX_DIM];
	double x0[SX_OPTIM_MAX_DIM] = {0};
	double slo = hw ? 0 : LB_SMOOTH, shi = hw ? 1 : UB_SMOOTH;
	for (size_t i = 0; i < o.dim; i++) {
		lb[i] = -INFINITY;
		ub[i] = INFINITY;
	}
	lb[0] = slo;
	ub[0] = shi;
	step[0] = 0.1;
	if (o.ib >= 0) {
		lb[o.ib] = slo;
		ub[o.ib] = shi;
		step[o.ib] = 0.1;
	}
	if (o.ig >= 0) {
		lb[o.ig] = slo;
		ub[o.ig] = shi;
		step[o.ig] = 0.1;
	}
	if (o.iphi >= 0) {
		lb[o.iphi] = LB_PHI;
		ub[o.iphi] = hw ? UB_PHI_HW : UB_PHI;
		step[o.iphi] = 0.05;
	}
	step[o.il] = 0.1 * fabs(l0) + 0.05 * sd;
	x0[o.il] = l0;
	if (o.ibb >= 0) {
		step[o.ibb] = 0.5 * fabs(b0) + 0.01 * sd;
		x0[o.ibb] = b0;
	}
	if (o.is >= 0) {
		for (int j = 0; j < o.p.spec.m - 1; j++) {
			x0[o.is + j] = s0[j];
			step[o.is + j] = spec->season == SX_ETS_MUL ? 0.05 : 0.1 * fabs(s0[j]) + 0.05 * sd;
			if (spec->season == SX_ETS_MUL)
				lb[o.is + j] = 1e-3;
		}
	}

	/* The search runs in u-space: bounded parameters through a logistic,
	 * states centred on the heuristic start and scaled by their step, so
	 * that BFGS sees an unconstrained, O(1)-scaled problem. */
	struct uobj u = {.o = &o, .dim = o.dim};
	for (size_t i = 0; i < o.dim; i++) {
		u.lb[i] = lb[i];
		u.ub[i] = ub[i];
		u.c[i] = x0[i];
		u.s[i] = step[i];
	}
	/* First start: the best point of a coarse grid over the smoothing
	 * parameters (states at the heuristic start): the likelihood has ridges
	 * along alpha/gamma and a local search from a fixed start can stall on
	 * the wrong one (AirPassengers ANA from alpha 0.1 alone: llf -611.9
	 * against -586.0). */
	static const double ga[] = {0.05, 0.2, 0.5, 0.8}, gg[] = {0.05, 0.3, 0.7};
	struct sx_optim_bfgs_opts bo = {
		.max_iter = opts && opts->max_iter ? opts->max_iter : 400,
		.ftol = 1e-9,
		.multi = objective_multi,
	};
	double best[SX_OPTIM_MAX_DIM], fbest = INFINITY, x[SX_OPTIM_MAX_DIM];
	int evals = 0;
	memcpy(x, x0, sizeof(x));
	if (o.ib >= 0)
		x[o.ib] = 0.1;
	if (o.iphi >= 0)
		x[o.iphi] = 0.97 > ub[o.iphi] ? ub[o.iphi] : 0.97;
	memcpy(best, x, sizeof(best));
	{
		double gp[SX_ARRAY_SIZE(ga) * SX_ARRAY_SIZE(gg)][SX_OPTIM_MAX_DIM];
		double gv[SX_ARRAY_SIZE(ga) * SX_ARRAY_SIZE(gg)];
		const double *gps[SX_ARRAY_SIZE(ga) * SX_ARRAY_SIZE(gg)];
		size_t np = 0;
		for (size_t i = 0; i < SX_ARRAY_SIZE(ga); i++) {
			for (size_t j = 0; j < (o.ig >= 0 ? SX_ARRAY_SIZE(gg) : 1); j++, np++) {
				memcpy(gp[np], x, o.dim * sizeof(double));
				gp[np][0] = ga[i];
				if (o.ig >= 0)
					gp[np][o.ig] = gg[j];
				gps[np] = gp[np];
			}
		}
		objective_x_multi(&o, gps, np, gv);
		evals += (int)np;
		for (size_t k = 0; k < np; k++) {
			if (gv[k] < fbest) {
				fbest = gv[k];
				memcpy(best, gp[k], o.dim * sizeof(double));
			}
		}
	}
	/* Second start: slow adaptation, which the grid's coarse level can miss
	 * (AirPassengers MAM from the grid's best point: llf -527.7 against
	 * -522.5). */
	double starts[2][SX_OPTIM_MAX_DIM];
	memcpy(starts[0], best, sizeof(best));
	memcpy(starts[1], best, sizeof(best));
	starts[1][0] = 0.1;
	if (o.ib >= 0)
		starts[1][o.ib] = 0.1;
	if (o.ig >= 0)
		starts[1][o.ig] = 0.05;
	fbest = INFINITY;
	for (int st = 0; st < 2; st++) {
		double z[SX_OPTIM_MAX_DIM], fz = INFINITY;
		to_u(&u, starts[st], z);
		/* A fresh inverse Hessian restarts runs that stalled on a ridge. */
		for (int r = 0; r < 3; r++) {
			double prev = fz;
			int ev = sx_optim_bfgs(objective_u, &u, z, o.dim, &bo, &fz);
			if (ev < 0)
				return ev;
			evals += ev;
			if (r > 0 && !(prev - fz > 1e-7 * (fabs(fz) + 1)))
				break;
		}
		if (fz < fbest || st == 0) {
			fbest = fz;
			from_u(&u, z, best);
		}
	}
	if (!isfinite(fbest))
		return sx_diag_set(SX_EINVAL, "ets: no admissible parameters found for this series");
	unpack(&o, best);
	struct sx_ets_model res = o.p;
	if (hw)
		res.spec.error = SX_ETS_ADD;
	if ((rc = sx_ets_filter(y, n, &res, NULL)))
		return rc;
	res.evals = evals;
	*out = res;
	return 0;
}

int sx_ets_fit(const double *y, size_t n, const struct sx_ets_spec *spec,
	       const struct sx_ets_opts *opts, struct sx_ets_model *out)
{
	return fit_common(y, n, spec, opts, 0, out);
}

int sx_hw_fit(const double *y, size_t n, const struct sx_ets_spec *spec,
	      const struct sx_ets_opts *opts, struct sx_ets_model *out)
{
	if (!spec)
		return sx_diag_set(SX_EINVAL, "hw: spec is NULL");
	struct sx_ets_spec s = *spec;
	s.error = SX_ETS_ADD;
	return fit_common(y, n, &s, opts, 1, out);
}

static const char *const default_candidates[] = {
	"ANN", "AAN", "AAdN", "ANA", "AAA", "AAdA", "MNN", "MAN",
	"MAdN", "MNA", "MAA", "MAdA", "MNM", "MAM", "MAdM",
};

int sx_ets_auto(const double *y, size_t n, int m, const struct sx_ets_opts *opts,
		struct sx_ets_model *out)
{
	if (!y || !out)
		return sx_diag_set(SX_EINVAL, "ets: NULL argument");
	if (m < 1)
		return sx_diag_set(SX_EINVAL, "ets: season length m = %d < 1", m);
	int positive = 1;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return sx_diag_set(SX_EINVAL, "ets: y[%zu] is not finite", i);
		if (!(y[i] > 0))
			positive = 0;
	}
	size_t nc = opts && opts->candidates ? opts->ncandidates : SX_ARRAY_SIZE(default_candidates);
	struct sx_ets_model best = {0}, cur;
	int found = 0, lastrc = 0;
	for (size_t c = 0; c < nc; c++) {
		struct sx_ets_spec s;
		if (opts && opts->candidates) {
			s = opts->candidates[c];
			s.m = m;
		} else {
			sx_ets_spec_parse(default_candidates[c], m, &s);
		}
		if (s.season && (m < 2 || m > SX_ETS_MAX_M || n < 2 * (size_t)m))
			continue;
		if (!positive && (s.error == SX_ETS_MUL || s.season == SX_ETS_MUL))
			continue;
		if (n < (size_t)count_params(&s) + 2)
			continue;
		int rc = sx_ets_fit(y, n, &s, opts, &cur);
		if (rc == SX_ENOMEM)
			return rc;
		if (rc) {
			lastrc = rc;
			continue;
		}
		if (!found || cur.aicc < best.aicc) {
			best = cur;
			found = 1;
		}
	}
	if (!found)
		return lastrc ? lastrc
			      : sx_diag_set(SX_EINVAL, "ets: %zu observations are too few for any model", n);
	*out = best;
	return 0;
}

/* ---- forecasting ---------------------------------------------------------- */

int sx_ets_has_analytic_pi(const struct sx_ets_spec *spec)
{
	return spec->error == SX_ETS_ADD && spec->season != SX_ETS_MUL;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct rng {
	uint64_t s[4];
	double spare;
	int has_spare;
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

static double unif(struct rng *r) { return ((xoshiro(r) >> 11) + 0.5) * 0x1.0p-53; }

static double gauss(struct rng *r)
{
	if (r->has_spare) {
		r->has_spare = 0;
		return r->spare;
	}
	double u = unif(r), v = unif(r), rad = sqrt(-2 * log(u));
	r->spare = rad * sin(2 * M_PI * v);
	r->has_spare = 1;
	return rad * cos(2 * M_PI * v);
}

/* Acklam's rational approximation with one Halley step. */
static double norm_quantile(double p)
{
	static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
				   -2.759285104469687e+02, 1.383577518672690e+02,
				   -3.066479806614716e+01, 2.506628277459239e+00};
	static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
				   -1.556989798598866e+02, 6.680131188771972e+01,
				   -1.328068155288572e+01};
	static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
				   -2.400758277161838e+00, -2.549732539343734e+00,
				   4.374664141464968e+00,  2.938163982698783e+00};
	static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
				   2.445134137142996e+00, 3.754408661907416e+00};
	double q, x;
	if (p < 0.02425) {
		q = sqrt(-2 * log(p));
		x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
		    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
	} else if (p <= 1 - 0.02425) {
		q = p - 0.5;
		double r = q * q;
		x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
		    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
	} else {
		q = sqrt(-2 * log(1 - p));
		x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
		    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
	}
	double e = 0.5 * erfc(-x / M_SQRT2) - p;
	double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
	return x - u / (1 + x * u / 2);
}

/* k-th smallest of v[0..n) in place (Hoare selection); afterwards every
 * element after k is >= v[k]. */
static double select_kth(double *v, size_t n, size_t k)
{
	size_t lo = 0, hi = n - 1;
	while (lo < hi) {
		double piv = v[lo + (hi - lo) / 2];
		size_t i = lo, j = hi;
		while (i <= j) {
			while (v[i] < piv)
				i++;
			while (v[j] > piv)
				j--;
			if (i <= j) {
				double t = v[i];
				v[i] = v[j];
				v[j] = t;
				i++;
				if (j == 0)
					break;
				j--;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			break;
	}
	return v[k];
}

/* Quantile with linear interpolation between order statistics (numpy's
 * default), by selection instead of a full sort. */
static double quantile(double *v, size_t n, double q)
{
	double pos = q * (double)(n - 1);
	size_t i = (size_t)pos;
	double a = select_kth(v, n, i);
	if (i + 1 >= n)
		return a;
	double b = v[i + 1];
	for (size_t k = i + 2; k < n; k++)
		if (v[k] < b)
			b = v[k];
	return a + (pos - (double)i) * (b - a);
}

int sx_ets_forecast(const struct sx_ets_model *p, size_t h, double level, uint64_t seed,
		    double *mean, double *lo, double *hi)
{
	int rc;
	if (!p || !mean)
		return sx_diag_set(SX_EINVAL, "ets: NULL argument");
	if ((rc = check_spec(&p->spec)))
		return rc;
	if (h == 0)
		return 0;
	if (!lo != !hi)
		return sx_diag_set(SX_EINVAL, "ets: lo and hi must both be given or both NULL");
	if (lo && !(level > 0 && level < 1))
		return sx_diag_set(SX_EINVAL, "ets: level %g outside (0, 1)", level);
	const struct sx_ets_spec *s = &p->spec;
	int m = season_len(s), trend = s->trend != SX_ETS_NONE;
	double phi = trend ? p->phi : 0, b = trend ? p->b : 0;
	double phisum = 0, phipow = 1;
	for (size_t j = 0; j < h; j++) {
		phipow *= phi;
		phisum += phipow;
		double Lf = p->l + phisum * b, S = s->season ? p->s[j % m] : 0;
		mean[j] = s->season == SX_ETS_MUL ? Lf * S : Lf + S;
	}
	if (!lo)
		return 0;
	double sigma = sqrt(p->sigma2);
	if (sx_ets_has_analytic_pi(s)) {
		double z = norm_quantile(0.5 + level / 2), acc = 0;
		phisum = 0;
		phipow = 1;
		for (size_t j = 0; j < h; j++) {
			/* var(h) = sigma2 (1 + sum_{i=1}^{h-1} c_i^2) */
			double half = z * sigma * sqrt(1 + acc);
			lo[j] = mean[j] - half;
			hi[j] = mean[j] + half;
			size_t i = j + 1;
			phipow *= trend ? p->phi : 0;
			phisum += phipow;
			double ci = p->alpha + (trend ? p->beta * phisum : 0) +
				    (s->season && i % (size_t)m == 0 ? p->gamma : 0);
			acc += ci * ci;
		}
		return 0;
	}
	size_t np = SX_ETS_SIM_PATHS;
	double *sim = malloc(np * h * sizeof(double));
	if (!sim)
		return sx_diag_set(SX_ENOMEM, "ets: no memory for %zu simulated paths", np);
	struct rng r = {0};
	uint64_t sm = seed;
	for (int i = 0; i < 4; i++)
		r.s[i] = splitmix(&sm);
	for (size_t k = 0; k < np; k++) {
		double l = p->l, bb = b, ring[SX_ETS_MAX_M];
		for (int j = 0; j < m; j++)
			ring[j] = s->season ? p->s[j] : 0;
		for (size_t j = 0; j < h; j++) {
			int jj = (int)(j % (size_t)m);
			double B = phi * bb, L = l + B, S = ring[jj], Y, r_;
			double e = sigma * gauss(&r);
			if (s->season == SX_ETS_MUL) {
				Y = L * S;
				r_ = s->error == SX_ETS_MUL ? Y * e : e;
				l = L + p->alpha * r_ / S;
				bb = B + p->beta * r_ / S;
				ring[jj] = S + p->gamma * r_ / L;
			} else {
				Y = L + S;
				r_ = s->error == SX_ETS_MUL ? Y * e : e;
				l = L + p->alpha * r_;
				bb = B + p->beta * r_;
				ring[jj] = S + p->gamma * r_;
			}
			sim[j * np + k] = Y + r_;
		}
	}
	for (size_t j = 0; j < h; j++) {
		double *col = sim + j * np;
		lo[j] = quantile(col, np, 0.5 - level / 2);
		hi[j] = quantile(col, np, 0.5 + level / 2);
	}
	free(sim);
	return 0;
}

/* ---- batch ---------------------------------------------------------------- */

struct batch {
	const double *const *ys;
	const size_t *ns;
	size_t count;
	int m;
	const struct sx_ets_spec *spec;
	const struct sx_ets_opts *opts;
	struct sx_ets_model *out;
	int *rc;
	atomic_size_t next;
};

static void *batch_worker(void *arg)
{
	struct batch *b = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&b->next, 1);
		if (i >= b->count)
			break;
		int rc = b->spec ? sx_ets_fit(b->ys[i], b->ns[i], b->spec, b->opts, &b->out[i])
				 : sx_ets_auto(b->ys[i], b->ns[i], b->m, b->opts, &b->out[i]);
		if (b->rc)
			b->rc[i] = rc;
	}
	return NULL;
}

int sx_ets_batch(const double *const *ys, const size_t *ns, size_t count, int m,
		 const struct sx_ets_spec *spec, const struct sx_ets_opts *opts, int threads,
		 struct sx_ets_model *out, int *rc)
{
	if (count && (!ys || !ns || !out))
		return sx_diag_set(SX_EINVAL, "ets: NULL argument to batch");
	if (threads < 1)
		threads = 1;
	if ((size_t)threads > count)
		threads = count ? (int)count : 1;
	struct batch b = {.ys = ys, .ns = ns, .count = count, .m = m, .spec = spec,
			  .opts = opts, .out = out, .rc = rc};
	atomic_init(&b.next, 0);
	pthread_t *tid = calloc((size_t)threads, sizeof(pthread_t));
	if (!tid)
		return sx_diag_set(SX_ENOMEM, "ets: no memory for %d threads", threads);
	int started = 0;
	for (int t = 1; t < threads; t++) {
		if (pthread_create(&tid[t], NULL, batch_worker, &b))
			break;
		started++;
	}
	batch_worker(&b);
	for (int t = 1; t <= started; t++)
		pthread_join(tid[t], NULL);
	free(tid);
	return 0;
}

/* ---- a second seasonal period --------------------------------------------- */

int sx_ets_seasonal_index(const double *y, size_t n, size_t p, int mul, double *index)
{
	if (!y || !index)
		return sx_diag_set(SX_EINVAL, "ets: NULL argument");
	if (p < 2)
		return sx_diag_set(SX_EINVAL, "ets: period %zu < 2", p);
	if (n < 2 * p)
		return sx_diag_set(SX_EINVAL, "ets: %zu observations, a period of %zu needs %zu", n,
				   p, 2 * p);
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return sx_diag_set(SX_EINVAL, "ets: y[%zu] is not finite", i);
		if (mul && !(y[i] > 0))
			return sx_diag_set(SX_EINVAL, "ets: multiplicative index needs y > 0");
	}
	double *cnt = calloc(p, sizeof(double));
	if (!cnt)
		return sx_diag_set(SX_ENOMEM, "ets: no memory for a period of %zu", p);
	for (size_t j = 0; j < p; j++)
		index[j] = 0;
	size_t half = p / 2;
	/* Running sum keeps the moving average O(n) for long periods. */
	double run = 0;
	for (size_t i = 0; i < p; i++)
		run += y[i];
	for (size_t t = half; t + half < n; t++) {
		double ma;
		if (p % 2) {
			/* run = sum y[t-half .. t+half] */
			ma = run / (double)p;
			if (t + half + 1 < n)
				run += y[t + half + 1] - y[t - half];
		} else {
			/* run = sum y[t-half .. t+half-1]; 2xp average adds half ends */
			ma = (run - 0.5 * y[t - half] + 0.5 * y[t + half]) / (double)p;
			run += y[t + half] - y[t - half];
		}
		index[t % p] += mul ? y[t] / ma : y[t] - ma;
		cnt[t % p] += 1;
	}
	double mean = 0;
	for (size_t j = 0; j < p; j++) {
		index[j] = cnt[j] > 0 ? index[j] / cnt[j] : (mul ? 1 : 0);
		mean += index[j];
	}
	mean /= (double)p;
	for (size_t j = 0; j < p; j++)
		index[j] = mul ? index[j] / mean : index[j] - mean;
	free(cnt);
	return 0;
}

void sx_ets_reseason(double *x, size_t len, size_t t0, const double *index, size_t p, int mul,
		     int sign)
{
	for (size_t i = 0; i < len; i++) {
		double v = index[(t0 + i) % p];
		if (mul)
			x[i] = sign > 0 ? x[i] * v : x[i] / v;
		else
			x[i] = sign > 0 ? x[i] + v : x[i] - v;
	}
}

/* ---- backtesting ---------------------------------------------------------- */

int sx_ets_forecaster(const double *y, size_t n, size_t h, double level, double *mean,
		      double *lo, double *hi, void *ud)
{
	const struct sx_ets_cb_ctx *c = ud;
	if (!c)
		return sx_diag_set(SX_EINVAL, "ets: forecaster context is NULL");
	struct sx_ets_model mod;
	int rc = c->spec ? sx_ets_fit(y, n, c->spec, c->opts, &mod)
			 : sx_ets_auto(y, n, c->m, c->opts, &mod);
	if (rc)
		return rc;
	return sx_ets_forecast(&mod, h, level, c->seed, mean, lo, hi);
}

int sx_ets_backtest(const double *y, size_t n, const struct sx_ets_backtest_opts *o,
		    sx_ets_forecaster_cb cb, void *ud, struct sx_ets_backtest_result *out)
{
	if (!y || !o || !cb || !out)
		return sx_diag_set(SX_EINVAL, "backtest: NULL argument");
	size_t step = o->step ? o->step : o->h;
	if (o->folds < 1 || o->h < 1 || o->m < 1)
		return sx_diag_set(SX_EINVAL, "backtest: folds, h and m must be >= 1");
	if (!(o->level > 0 && o->level < 1))
		return sx_diag_set(SX_EINVAL, "backtest: level %g outside (0, 1)", o->level);
	size_t back = o->h + (o->folds - 1) * step;
	size_t minn = (size_t)o->m + 1 > 2 ? (size_t)o->m + 1 : 2;
	if (back > n || n - back < minn)
		return sx_diag_set(SX_EINVAL,
				   "backtest: %zu observations leave the first fold %zu to train "
				   "on, it needs %zu",
				   n, back > n ? 0 : n - back, minn);
	for (size_t i = 0; i < n; i++)
		if (!isfinite(y[i]))
			return sx_diag_set(SX_EINVAL, "backtest: y[%zu] is not finite", i);
	double *buf = malloc(3 * o->h * sizeof(double));
	if (!buf)
		return sx_diag_set(SX_ENOMEM, "backtest: no memory for h = %zu", o->h);
	double *mean = buf, *lo = buf + o->h, *hi = buf + 2 * o->h;
	double ape = 0, sape = 0, ase = 0, cover = 0;
	int zero_y = 0, zero_scale = 0, nan_pi = 0;
	size_t pts = 0;
	for (size_t f = 0; f < o->folds; f++) {
		size_t org = n - o->h - (o->folds - 1 - f) * step;
		for (size_t j = 0; j < o->h; j++)
			lo[j] = hi[j] = NAN;
		int rc = cb(y, org, o->h, o->level, mean, lo, hi, ud);
		if (rc) {
			free(buf);
			return rc;
		}
		double scale = 0;
		for (size_t t = (size_t)o->m; t < org; t++)
			scale += fabs(y[t] - y[t - (size_t)o->m]);
		scale /= (double)(org - (size_t)o->m);
		if (!(scale > 0))
			zero_scale = 1;
		for (size_t j = 0; j < o->h; j++) {
			double a = y[org + j], e = fabs(a - mean[j]), den = fabs(a) + fabs(mean[j]);
			if (a == 0)
				zero_y = 1;
			else
				ape += e / fabs(a);
			sape += den > 0 ? 2 * e / den : 0;
			ase += e / scale;
			if (isnan(lo[j]) || isnan(hi[j]))
				nan_pi = 1;
			else
				cover += lo[j] <= a && a <= hi[j];
			pts++;
		}
	}
	free(buf);
	double dp = (double)pts;
	out->points = pts;
	out->mape = zero_y ? NAN : 100 * ape / dp;
	out->smape = 100 * sape / dp;
	out->mase = zero_scale ? NAN : ase / dp;
	out->coverage = nan_pi ? NAN : cover / dp;
	return 0;
}
