#include "core/math/stats.h"

#include <math.h>

#define LN_SQRT_2PI 0.91893853320467274178
#define TINY 1e-300
#define CF_EPS 1e-16
#define MAX_ITER 200000

/* Stirling series remainder: lgamma(z) - [(z - 0.5) log z - z + log sqrt(2 pi)].
 * Seven terms leave an error below 1e-17 for z >= 10. */
static double stirling_corr(double z)
{
	double r = 1.0 / z, r2 = r * r;
	return r * (1.0 / 12 + r2 * (-1.0 / 360 + r2 * (1.0 / 1260 + r2 * (-1.0 / 1680 +
	       r2 * (1.0 / 1188 + r2 * (-691.0 / 360360 + r2 * (1.0 / 156)))))));
}

/* log(1 + u) - u without the cancellation that ruins it for small u. */
static double log1pmx(double u)
{
	if (fabs(u) > 0.1)
		return log1p(u) - u;
	double term = u, sum = 0;
	for (int k = 2; k < 40; k++) {
		term *= -u;
		double add = term / k;
		sum += add;
		if (fabs(add) < 1e-17 * fabs(sum))
			break;
	}
	return sum;
}

double sx_stats_lgamma(double x)
{
	int sign;
	if (!(x > 0))
		return NAN;
	return lgamma_r(x, &sign);
}

double sx_stats_lbeta(double a, double b)
{
	if (!(a > 0) || !(b > 0))
		return NAN;
	double lo = a < b ? a : b, hi = a < b ? b : a;
	if (hi < 10)
		return sx_stats_lgamma(a) + sx_stats_lgamma(b) - sx_stats_lgamma(a + b);
	if (isinf(hi))
		return -INFINITY;
	if (lo < 10) {
		/* lgamma(hi + lo) - lgamma(hi) from the Stirling forms of both. */
		double d = lo * log(hi) + (hi + lo - 0.5) * log1p(lo / hi) - lo +
			   stirling_corr(hi + lo) - stirling_corr(hi);
		return sx_stats_lgamma(lo) - d;
	}
	double s = a + b;
	return LN_SQRT_2PI - 0.5 * log(s) - (a - 0.5) * log1p(b / a) - (b - 0.5) * log1p(a / b) +
	       stirling_corr(a) + stirling_corr(b) - stirling_corr(s);
}

/* log of x^a y^b / B(a, b) with y = 1 - x given separately so that neither
 * loses digits near 1; for large a and b the Stirling forms cancel exactly. */
static double ibeta_logfront(double a, double b, double x, double y)
{
	double lx = x <= 0.5 ? log(x) : log1p(-y);
	double ly = y <= 0.5 ? log(y) : log1p(-x);
	if (a >= 10 && b >= 10 && !isinf(a) && !isinf(b)) {
		/* x = a / (a + b) (1 + ua): log1p(ua) - ua straight from ua near 0,
		 * from log x where 1 + ua would cancel. */
		double ua = (x * b - y * a) / a, ub = (y * a - x * b) / b;
		double ta = fabs(ua) < 0.1 ? log1pmx(ua) : lx + log1p(b / a) - ua;
		double tb = fabs(ub) < 0.1 ? log1pmx(ub) : ly + log1p(a / b) - ub;
		return a * ta + b * tb + 0.5 * log(a / (a + b) * b) -
		       LN_SQRT_2PI + stirling_corr(a + b) - stirling_corr(a) - stirling_corr(b);
	}
	return a * lx + b * ly - sx_stats_lbeta(a, b);
}

/* Continued fraction for I_x(a, b) / (x^a y^b / (a B(a, b))), modified Lentz.
 * Converges quickly for x < (a + 1) / (a + b + 2). */
static double ibeta_cf(double a, double b, double x)
{
	double c = 1, d = 1 - (a + b) * x / (a + 1);
	if (fabs(d) < TINY)
		d = TINY;
	d = 1 / d;
	double f = d;
	for (int m = 1; m < MAX_ITER; m++) {
		double m2 = 2.0 * m;
		double num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
		d = 1 + num * d;
		c = 1 + num / c;
		if (fabs(d) < TINY)
			d = TINY;
		if (fabs(c) < TINY)
			c = TINY;
		d = 1 / d;
		f *= c * d;
		num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
		d = 1 + num * d;
		c = 1 + num / c;
		if (fabs(d) < TINY)
			d = TINY;
		if (fabs(c) < TINY)
			c = TINY;
		d = 1 / d;
		double step = c * d;
		f *= step;
		if (fabs(step - 1) < CF_EPS)
			break;
	}
	return f;
}

/* I_x(a, b) and 1 - I_x(a, b), each computed directly where it is the
 * smaller one. */
static void ibeta_pair(double a, double b, double x, double y, double *ix, double *ixc)
{
	if (x <= 0) {
		*ix = 0;
		*ixc = 1;
		return;
	}
	if (y <= 0) {
		*ix = 1;
		*ixc = 0;
		return;
	}
	double lf = ibeta_logfront(a, b, x, y);
	if (x * (a + b + 2) < a + 1) {
		*ix = exp(lf) * ibeta_cf(a, b, x) / a;
		*ixc = 1 - *ix;
	} else {
		*ixc = exp(lf) * ibeta_cf(b, a, y) / b;
		*ix = 1 - *ixc;
	}
}

static int beta_args_bad(double a, double b, double x)
{
	return !(a > 0) || !(b > 0) || !(x >= 0 && x <= 1);
}

double sx_stats_ibeta(double a, double b, double x)
{
	double ix, ixc;
	if (beta_args_bad(a, b, x))
		return NAN;
	ibeta_pair(a, b, x, 1 - x, &ix, &ixc);
	return ix;
}

double sx_stats_ibetac(double a, double b, double x)
{
	double ix, ixc;
	if (beta_args_bad(a, b, x))
		return NAN;
	ibeta_pair(a, b, x, 1 - x, &ix, &ixc);
	return ixc;
}

void sx_stats_ibeta_xy(double a, double b, double x, double y, double *ix, double *ixc)
{
	if (beta_args_bad(a, b, x) || !(y >= 0 && y <= 1)) {
		*ix = *ixc = NAN;
		return;
	}
	ibeta_pair(a, b, x, y, ix, ixc);
}

double sx_stats_beta_logpdf(double x, double a, double b)
{
	return sx_stats_beta_logpdf_xy(x, 1 - x, a, b);
}

double sx_stats_beta_logpdf_xy(double x, double y, double a, double b)
{
	if (beta_args_bad(a, b, x) || !(y >= 0 && y <= 1))
		return NAN;
	if (x == 0)
		return a < 1 ? INFINITY : a == 1 ? -sx_stats_lbeta(a, b) : -INFINITY;
	if (y == 0)
		return b < 1 ? INFINITY : b == 1 ? -sx_stats_lbeta(a, b) : -INFINITY;
	return ibeta_logfront(a, b, x, y) - log(x) - log(y);
}

double sx_stats_beta_cdf(double x, double a, double b) { return sx_stats_ibeta(a, b, x); }
double sx_stats_beta_sf(double x, double a, double b) { return sx_stats_ibetac(a, b, x); }

/* log of x^a e^-x / Gamma(a). */
static double gamma_logfront(double a, double x)
{
	if (a >= 10) {
		double u = (x - a) / a;
		double t = fabs(u) < 0.1 ? log1pmx(u) : log(x) - log(a) - u;
		return a * t + 0.5 * log(a) - LN_SQRT_2PI - stirling_corr(a);
	}
	return a * log(x) - x - sx_stats_lgamma(a);
}

static void gamma_pair(double a, double x, double *p, double *q)
{
	if (x == 0) {
		*p = 0;
		*q = 1;
		return;
	}
	if (isinf(x)) {
		*p = 1;
		*q = 0;
		return;
	}
	double lf = gamma_logfront(a, x);
	if (x < a + 1) {
		double term = 1 / a, sum = term, ap = a;
		for (int n = 1; n < MAX_ITER; n++) {
			ap += 1;
			term *= x / ap;
			sum += term;
			if (term < sum * CF_EPS)
				break;
		}
		*p = sum * exp(lf);
		*q = 1 - *p;
		return;
	}
	double bb = x + 1 - a, c = 1 / TINY, d = 1 / bb, f = d;
	for (int i = 1; i < MAX_ITER; i++) {
		double an = -i * (i - a);
		bb += 2;
		d = an * d + bb;
		c = bb + an / c;
		if (fabs(d) < TINY)
			d = TINY;
		if (fabs(c) < TINY)
			c = TINY;
		d = 1 / d;
		double step = c * d;
		f *= step;
		if (fabs(step - 1) < CF_EPS)
			break;
	}
	*q = exp(lf) * f;
	*p = 1 - *q;
}

double sx_stats_gamma_p(double a, double x)
{
	double p, q;
	if (!(a > 0) || !(x >= 0))
		return NAN;
	gamma_pair(a, x, &p, &q);
	return p;
}

double sx_stats_gamma_q(double a, double x)
{
	double p, q;
	if (!(a > 0) || !(x >= 0))
		return NAN;
	gamma_pair(a, x, &p, &q);
	return q;
}

double sx_stats_chi2_cdf(double x, double k)
{
	if (!(k > 0) || isnan(x))
		return NAN;
	return x <= 0 ? 0 : sx_stats_gamma_p(k / 2, x / 2);
}

double sx_stats_chi2_sf(double x, double k)
{
	if (!(k > 0) || isnan(x))
		return NAN;
	return x <= 0 ? 1 : sx_stats_gamma_q(k / 2, x / 2);
}

double sx_stats_norm_pdf(double x)
{
	return exp(-0.5 * x * x - LN_SQRT_2PI);
}

double sx_stats_norm_cdf(double x)
{
	return 0.5 * erfc(-x * M_SQRT1_2);
}

double sx_stats_norm_sf(double x)
{
	return 0.5 * erfc(x * M_SQRT1_2);
}

/* Lower-tail quantile for 0 < p <= 0.5: a rational start good to 5e-4
 * (Hastings' form), then Halley steps on cdf(x) - p, which converge
 * cubically and keep relative accuracy in the tail because erfc does. */
static double norm_ppf_lower(double p)
{
	double t = sqrt(-2 * log(p));
	double x = -(t - (2.515517 + t * (0.802853 + t * 0.010328)) /
			     (1 + t * (1.432788 + t * (0.189269 + t * 0.001308))));
	for (int i = 0; i < 8; i++) {
		double pdf = sx_stats_norm_pdf(x);
		if (pdf == 0)
			break;
		double dx = (sx_stats_norm_cdf(x) - p) / pdf;
		double nx = x - dx / (1 + 0.5 * x * dx);
		if (fabs(nx - x) <= 1e-16 * fabs(nx))
			return nx;
		x = nx;
	}
	return x;
}

double sx_stats_norm_ppf(double p)
{
	if (!(p >= 0 && p <= 1))
		return NAN;
	if (p == 0)
		return -INFINITY;
	if (p == 1)
		return INFINITY;
	double x = p <= 0.5 ? norm_ppf_lower(p) : -norm_ppf_lower(1 - p);
	if (p < 0.25 || p > 0.75)
		return x;
	/* Near the centre the quantile is small and cdf(x) - p only knows it to
	 * 1e-16 absolute; erf(w) = 2p - 1 (exact here) keeps it relative. */
	double r = 2 * p - 1, w = x * M_SQRT1_2;
	for (int i = 0; i < 6; i++) {
		double d = (erf(w) - r) / (M_2_SQRTPI * exp(-w * w));
		double nw = w - d / (1 + w * d);
		if (fabs(nw - w) <= 1e-17 * fabs(nw) || nw == w) {
			w = nw;
			break;
		}
		w = nw;
	}
	return w * M_SQRT2;
}

double sx_stats_norm_isf(double q)
{
	return -sx_stats_norm_ppf(q);
}

double sx_stats_t_pdf(double t, double df)
{
	if (!(df > 0) || isnan(t))
		return NAN;
	if (isinf(df))
		return sx_stats_norm_pdf(t);
	double at = fabs(t);
	double l = at > 1e150 ? 2 * log(at) - log(df) : log1p(t * t / df);
	return exp(-0.5 * log(df) - sx_stats_lbeta(df / 2, 0.5) - 0.5 * (df + 1) * l);
}

/* P(T > s) for s >= 0: 0.5 I_x(df/2, 1/2) with x = df / (df + s^2), and
 * y = 1 - x formed directly so neither end loses digits. */
static double t_upper(double s, double df)
{
	double x, y, ix, ixc;
	if (s == 0)
		return 0.5;
	if (isinf(s))
		return 0;
	if (s > 1e150) {
		/* df / s^2 would underflow; I_x(a, b) = x^a / (a B(a, b)) (1 + O(x)). */
		double a = df / 2, lx = log(df) - 2 * log(s);
		return 0.5 * exp(a * lx - sx_stats_lbeta(a, 0.5)) / a;
	}
	if (s < 1) {
		double s2 = s * s;
		x = df / (df + s2);
		y = s2 / (df + s2);
	} else {
		double r = df / s / s;
		x = r / (1 + r);
		y = 1 / (1 + r);
	}
	ibeta_pair(df / 2, 0.5, x, y, &ix, &ixc);
	return 0.5 * ix;
}

double sx_stats_t_cdf(double t, double df)
{
	if (!(df > 0) || isnan(t))
		return NAN;
	if (isinf(df))
		return sx_stats_norm_cdf(t);
	return t < 0 ? t_upper(-t, df) : 1 - t_upper(t, df);
}

double sx_stats_t_sf(double t, double df)
{
	if (!(df > 0) || isnan(t))
		return NAN;
	if (isinf(df))
		return sx_stats_norm_sf(t);
	return t > 0 ? t_upper(t, df) : 1 - t_upper(-t, df);
}

/* s >= 0 with P(T > s) = q, 0 < q < 0.5. Newton on g(v) = log P(T > e^v) - log q,
 * which is close to linear in v in the heavy tail, kept inside a bracket
 * that bisection shrinks whenever Newton would leave it. */
static double t_upper_quantile(double q, double df)
{
	double z = -norm_ppf_lower(q);
	double s = z + (z * z * z + z) / (4 * df) +
		   (((5 * z * z + 16) * z * z + 3) * z) / (96 * df * df);
	/* Heavy-tail start: P(T > s) ~ K s^-df / df. */
	double logk = sx_stats_lgamma((df + 1) / 2) - sx_stats_lgamma(df / 2) -
		      0.5 * log(df * M_PI) + 0.5 * (df + 1) * log(df);
	double s_tail = exp((logk - log(df * q)) / df);
	double lq = log(q);
	double v = log(s > 0 && isfinite(s) ? s : 1);
	if (isfinite(s_tail) && s_tail > 0 &&
	    fabs(log(t_upper(s_tail, df)) - lq) < fabs(log(t_upper(exp(v), df)) - lq))
		v = log(s_tail);

	double lo = -INFINITY, hi = INFINITY;
	for (int i = 0; i < 400; i++) {
		double sv = exp(v);
		double sf = t_upper(sv, df);
		double g = log(sf) - lq;
		if (g == 0 || !isfinite(g))
			break;
		if (g > 0)
			lo = v;
		else
			hi = v;
		double dg = -sv * sx_stats_t_pdf(sv, df) / sf;
		double step = g / dg;
		if (fabs(step) <= 4e-16 * fabs(v) + 1e-300)
			return exp(v - step);
		double nv = v - step;
		if (!(nv > lo && nv < hi) || !isfinite(nv)) {
			if (isinf(lo))
				nv = hi - 2;
			else if (isinf(hi))
				nv = lo + 2;
			else
				nv = 0.5 * (lo + hi);
		}
		if (isfinite(hi - lo) && hi - lo <= 4e-16 * fabs(hi))
			return exp(nv);
		if (nv > 709)
			return INFINITY;
		v = nv;
	}
	return exp(v);
}

double sx_stats_t_ppf(double p, double df)
{
	if (!(df > 0) || !(p >= 0 && p <= 1))
		return NAN;
	if (p == 0)
		return -INFINITY;
	if (p == 1)
		return INFINITY;
	if (p == 0.5)
		return 0;
	if (isinf(df))
		return sx_stats_norm_ppf(p);
	double q = p < 0.5 ? p : 1 - p;
	double s;
	if (df == 1)
		s = 1 / tan(M_PI * q);
	else if (df == 2)
		s = (1 - 2 * q) / sqrt(2 * q * (1 - q));
	else
		s = t_upper_quantile(q, df);
	return p < 0.5 ? -s : s;
}

double sx_stats_t_isf(double q, double df)
{
	return -sx_stats_t_ppf(q, df);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void sx_stats_rng_seed(struct sx_stats_rng *rng, uint64_t seed)
{
	for (int i = 0; i < 4; i++) {
		seed += 0x9e3779b97f4a7c15ull;
		uint64_t z = seed;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		rng->s[i] = z ^ (z >> 31);
	}
}

uint64_t sx_stats_rng_next(struct sx_stats_rng *rng)
{
	uint64_t *s = rng->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double sx_stats_rng_uniform(struct sx_stats_rng *rng)
{
	return ((double)(sx_stats_rng_next(rng) >> 11) + 0.5) * 0x1p-53;
}

double sx_stats_rng_normal(struct sx_stats_rng *rng)
{
	double u1 = sx_stats_rng_uniform(rng), u2 = sx_stats_rng_uniform(rng);
	return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

double sx_stats_rng_gamma(struct sx_stats_rng *rng, double shape)
{
	if (!(shape > 0) || isinf(shape))
		return NAN;
	if (shape < 1) {
		/* Gamma(a) = Gamma(a + 1) U^(1/a); the log form avoids pow underflow
		 * surprises for tiny a. */
		double g = sx_stats_rng_gamma(rng, shape + 1);
		return g * exp(log(sx_stats_rng_uniform(rng)) / shape);
	}
	double d = shape - 1.0 / 3, c = 1 / sqrt(9 * d);
	for (;;) {
		double x = sx_stats_rng_normal(rng), v = 1 + c * x;
		if (v <= 0)
			continue;
		v = v * v * v;
		double u = sx_stats_rng_uniform(rng);
		if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
			return d * v;
	}
}

double sx_stats_rng_beta(struct sx_stats_rng *rng, double a, double b)
{
	if (!(a > 0) || !(b > 0) || isinf(a) || isinf(b))
		return NAN;
	double x = sx_stats_rng_gamma(rng, a), y = sx_stats_rng_gamma(rng, b);
	if (x + y == 0)
		return sx_stats_rng_uniform(rng) < a / (a + b) ? 1 : 0;
	return x / (x + y);
}
