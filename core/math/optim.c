#include "core/math/optim.h"

#include <math.h>
#include <string.h>

#include "core/sx.h"

struct nm {
	sx_optim_fn f;
	void *ud;
	size_t dim;
	const double *lb, *ub;
	size_t evals, max_evals;
};

static void clamp(const struct nm *s, double *x)
{
	for (size_t i = 0; i < s->dim; i++) {
		if (s->lb && x[i] < s->lb[i])
			x[i] = s->lb[i];
		if (s->ub && x[i] > s->ub[i])
			x[i] = s->ub[i];
	}
}

static double eval(struct nm *s, double *x)
{
	clamp(s, x);
	s->evals++;
	double v = s->f(x, s->ud);
	return isnan(v) ? INFINITY : v;
}

/* One Nelder–Mead run from x with edges step; returns the best value. */
static double run(struct nm *s, double *x, const double *step, double ftol)
{
	size_t n = s->dim;
	double p[(SX_OPTIM_MAX_DIM + 1) * SX_OPTIM_MAX_DIM];
	double fv[SX_OPTIM_MAX_DIM + 1];
	double c[SX_OPTIM_MAX_DIM], xr[SX_OPTIM_MAX_DIM], xe[SX_OPTIM_MAX_DIM];
	double dn = (double)n;
	double ra = 1.0, ex = 1.0 + 2.0 / dn, co = 0.75 - 0.5 / dn, sh = 1.0 - 1.0 / dn;
	if (n == 1) {
		ex = 2.0;
		co = 0.5;
		sh = 0.5;
	}

	for (size_t k = 0; k <= n; k++) {
		double *pk = p + k * n;
		memcpy(pk, x, n * sizeof(double));
		if (k > 0) {
			size_t i = k - 1;
			pk[i] += step[i];
			/* Step inward when the vertex would sit on a bound, so the
			 * simplex keeps full rank after clamping. */
			if (s->ub && pk[i] > s->ub[i])
				pk[i] = x[i] - step[i];
		}
		fv[k] = eval(s, pk);
	}

	for (;;) {
		/* Order: best at 0, worst at n (insertion sort; n is small). */
		for (size_t a = 1; a <= n; a++) {
			double fa = fv[a];
			double tmp[SX_OPTIM_MAX_DIM];
			memcpy(tmp, p + a * n, n * sizeof(double));
			size_t b = a;
			while (b > 0 && fv[b - 1] > fa) {
				fv[b] = fv[b - 1];
				memcpy(p + b * n, p + (b - 1) * n, n * sizeof(double));
				b--;
			}
			fv[b] = fa;
			memcpy(p + b * n, tmp, n * sizeof(double));
		}
		double spread = fv[n] - fv[0];
		if (isfinite(fv[n]) && spread <= ftol * (fabs(fv[0]) + ftol))
			break;
		if (s->evals >= s->max_evals)
			break;

		for (size_t i = 0; i < n; i++) {
			double acc = 0;
			for (size_t k = 0; k < n; k++)
				acc += p[k * n + i];
			c[i] = acc / dn;
		}
		double *w = p + n * n;
		for (size_t i = 0; i < n; i++)
			xr[i] = c[i] + ra * (c[i] - w[i]);
		double fr = eval(s, xr);
		if (fr < fv[0]) {
			for (size_t i = 0; i < n; i++)
				xe[i] = c[i] + ex * (xr[i] - c[i]);
			double fe = eval(s, xe);
			if (fe < fr) {
				memcpy(w, xe, n * sizeof(double));
				fv[n] = fe;
			} else {
				memcpy(w, xr, n * sizeof(double));
				fv[n] = fr;
			}
			continue;
		}
		if (fr < fv[n - 1]) {
			memcpy(w, xr, n * sizeof(double));
			fv[n] = fr;
			continue;
		}
		int outside = fr < fv[n];
		for (size_t i = 0; i < n; i++)
			xe[i] = outside ? c[i] + co * (xr[i] - c[i]) : c[i] - co * (c[i] - w[i]);
		double fc = eval(s, xe);
		if (outside ? fc <= fr : fc < fv[n]) {
			memcpy(w, xe, n * sizeof(double));
			fv[n] = fc;
			continue;
		}
		for (size_t k = 1; k <= n; k++) {
			double *pk = p + k * n;
			for (size_t i = 0; i < n; i++)
				pk[i] = p[i] + sh * (pk[i] - p[i]);
			fv[k] = eval(s, pk);
		}
	}
	memcpy(x, p, n * sizeof(double));
	return fv[0];
}

int sx_optim_nm(sx_optim_fn f, void *ud, double *x, size_t dim, const double *step,
		const double *lb, const double *ub, const struct sx_optim_nm_opts *opts, double *fx)
{
	if (!f || !x || !step || dim < 1 || dim > SX_OPTIM_MAX_DIM)
		return sx_diag_set(SX_EINVAL, "optim: dimension %zu outside 1..%d", dim, SX_OPTIM_MAX_DIM);
	for (size_t i = 0; i < dim; i++) {
		if (!(step[i] > 0) || !isfinite(step[i]))
			return sx_diag_set(SX_EINVAL, "optim: step[%zu] must be positive and finite", i);
		if (lb && ub && lb[i] > ub[i])
			return sx_diag_set(SX_EINVAL, "optim: lb[%zu] > ub[%zu]", i, i);
	}
	struct nm s = {.f = f, .ud = ud, .dim = dim, .lb = lb, .ub = ub};
	s.max_evals = opts && opts->max_evals ? opts->max_evals : 400 * dim;
	double ftol = opts && opts->ftol > 0 ? opts->ftol : 1e-10;
	int restarts = opts ? (opts->restarts < 0 ? 0 : opts->restarts ? opts->restarts : 3) : 3;

	double best = run(&s, x, step, ftol);
	for (int r = 0; r < restarts && s.evals < s.max_evals; r++) {
		double prev = best;
		best = run(&s, x, step, ftol);
		if (!(prev - best > ftol * (fabs(best) + ftol)))
			break;
	}
	if (fx)
		*fx = best;
	return (int)(s.evals > (size_t)0x7fffffff ? 0x7fffffff : s.evals);
}

static void grad(sx_optim_fn f, sx_optim_multi_fn multi, void *ud, const double *x, double fx,
		 size_t n, double hs, int central, double *g, size_t *evals)
{
	double xt[SX_OPTIM_MAX_DIM];
	if (multi) {
		/* every difference point in one call; same points, same arithmetic */
		double pts[2 * SX_OPTIM_MAX_DIM][SX_OPTIM_MAX_DIM], fv[2 * SX_OPTIM_MAX_DIM], hh[SX_OPTIM_MAX_DIM];
		const double *ps[2 * SX_OPTIM_MAX_DIM] = {0};
		size_t np = 0;
		for (size_t i = 0; i < n; i++) {
			hh[i] = hs * fmax(1.0, fabs(x[i]));
			memcpy(pts[np], x, n * sizeof(double));
			pts[np][i] = x[i] + hh[i];
			ps[np] = pts[np];
			np++;
			if (central) {
				memcpy(pts[np], x, n * sizeof(double));
				pts[np][i] = x[i] - hh[i];
				ps[np] = pts[np];
				np++;
			}
		}
		multi(ps, np, fv, ud);
		*evals += np;
		for (size_t i = 0; i < n; i++) {
			double fp = central ? fv[2 * i] : fv[i], fm = central ? fv[2 * i + 1] : fx, h = hh[i];
			if (!central)
				h *= 0.5;
			g[i] = isfinite(fp) && isfinite(fm) ? (fp - fm) / (2 * h) : 0;
		}
		return;
	}
	memcpy(xt, x, n * sizeof(double));
	for (size_t i = 0; i < n; i++) {
		double h = hs * fmax(1.0, fabs(x[i]));
		xt[i] = x[i] + h;
		double fp = f(xt, ud), fm = fx;
		if (central) {
			xt[i] = x[i] - h;
			fm = f(xt, ud);
			(*evals)++;
		} else {
			h *= 0.5;
		}
		xt[i] = x[i];
		(*evals)++;
		g[i] = isfinite(fp) && isfinite(fm) ? (fp - fm) / (2 * h) : 0;
	}
}

/* The trial point x + t d, the forward-difference points around it, and
 * in the lanes left over the next halvings t/2, t/4, ..., in one call of
 * multi. Returns 1 if x + t d passes the Armijo test (xn, fnew and its
 * gradient gn set: the values grad() would compute), 2 if one of the
 * halvings does (xn, fnew set; the first in order, as the sequential
 * search), 0 if none (*t is then the next step to try). *tried gets the
 * number of steps tried. */
static int speculate(sx_optim_multi_fn multi, void *ud, const double *x, const double *d, size_t n,
		     double f0, double slope, double hs, double *t, double *xn, double *fnew,
		     double *gn, int *tried, size_t *evals)
{
	enum { MAXP = SX_OPTIM_MAX_DIM + 1 + SX_OPTIM_LANES };
	double pts[MAXP][SX_OPTIM_MAX_DIM], fv[MAXP], ts[SX_OPTIM_LANES], hh[SX_OPTIM_MAX_DIM];
	const double *ps[MAXP];
	double t0 = *t, th = t0;
	size_t np = 1, nh = 0;
	for (size_t i = 0; i < n; i++)
		pts[0][i] = x[i] + t0 * d[i];
	ps[0] = pts[0];
	for (size_t i = 0; i < n; i++, np++) {
		hh[i] = hs * fmax(1.0, fabs(pts[0][i]));
		memcpy(pts[np], pts[0], n * sizeof(double));
		pts[np][i] = pts[0][i] + hh[i];
		ps[np] = pts[np];
	}
	while (np % SX_OPTIM_LANES) {
		th *= 0.5;
		ts[nh++] = th;
		for (size_t i = 0; i < n; i++)
			pts[np][i] = x[i] + th * d[i];
		ps[np] = pts[np];
		np++;
	}
	multi(ps, np, fv, ud);
	*evals += np;
	*tried = (int)(1 + nh);
	if (isfinite(fv[0]) && fv[0] <= f0 + 1e-4 * t0 * slope) {
		memcpy(xn, pts[0], n * sizeof(double));
		*fnew = fv[0];
		for (size_t i = 0; i < n; i++) {
			double fp = fv[1 + i], fm = fv[0], h = hh[i] * 0.5;
			gn[i] = isfinite(fp) && isfinite(fm) ? (fp - fm) / (2 * h) : 0;
		}
		return 1;
	}
	for (size_t k = 0; k < nh; k++) {
		double fk = fv[1 + n + k];
		if (isfinite(fk) && fk <= f0 + 1e-4 * ts[k] * slope) {
			memcpy(xn, pts[1 + n + k], n * sizeof(double));
			*fnew = fk;
			return 2;
		}
	}
	*t = th * 0.5;
	return 0;
}

int sx_optim_bfgs(sx_optim_fn f, void *ud, double *x, size_t dim,
		  const struct sx_optim_bfgs_opts *opts, double *fx)
{
	if (!f || !x || dim < 1 || dim > SX_OPTIM_MAX_DIM)
		return sx_diag_set(SX_EINVAL, "optim: dimension %zu outside 1..%d", dim, SX_OPTIM_MAX_DIM);
	size_t n = dim, evals = 1;
	size_t max_iter = opts && opts->max_iter ? opts->max_iter : 200;
	double ftol = opts && opts->ftol > 0 ? opts->ftol : 1e-10;
	double gtol = opts && opts->gtol > 0 ? opts->gtol : 1e-8;
	int central = opts ? opts->central : 0;
	sx_optim_multi_fn multi = opts ? opts->multi : NULL;
	double hs = opts && opts->fd_step > 0 ? opts->fd_step : central ? 1e-6 : 1e-8;
	double H[SX_OPTIM_MAX_DIM * SX_OPTIM_MAX_DIM];
	double g[SX_OPTIM_MAX_DIM], gn[SX_OPTIM_MAX_DIM], d[SX_OPTIM_MAX_DIM];
	double xn[SX_OPTIM_MAX_DIM], sv[SX_OPTIM_MAX_DIM], yv[SX_OPTIM_MAX_DIM], hy[SX_OPTIM_MAX_DIM];

	double f0 = f(x, ud);
	if (isnan(f0))
		f0 = INFINITY;
	if (!isfinite(f0)) {
		if (fx)
			*fx = f0;
		return (int)evals;
	}
	grad(f, multi, ud, x, f0, n, hs, central, g, &evals);
	int fresh = 1, stall = 0;
	for (size_t it = 0; it < max_iter; it++) {
		if (fresh) {
			memset(H, 0, n * n * sizeof(double));
			for (size_t i = 0; i < n; i++)
				H[i * n + i] = 1;
		}
		double gmax = 0, slope = 0;
		for (size_t i = 0; i < n; i++)
			gmax = fmax(gmax, fabs(g[i]));
		if (gmax <= gtol)
			break;
		for (size_t i = 0; i < n; i++) {
			double acc = 0;
			for (size_t j = 0; j < n; j++)
				acc -= H[i * n + j] * g[j];
			d[i] = acc;
			slope += acc * g[i];
		}
		if (!(slope < 0)) {
			if (fresh)
				break;
			fresh = 1;
			it--;
			continue;
		}
		/* A first step from the identity is scaled to move ~1 unit. */
		double t = 1;
		if (fresh) {
			double dn = 0;
			for (size_t i = 0; i < n; i++)
				dn = fmax(dn, fabs(d[i]));
			if (dn > 1)
				t = 1 / dn;
		}
		double fnew = INFINITY;
		int ok = 0, have_g = 0, tried = 0;
		if (multi && !fresh && !central) {
			/* With a built-up inverse Hessian the full step is accepted in
			 * ~90% of iterations: evaluate it together with the gradient
			 * points around it (one call for what took two). */
			ok = speculate(multi, ud, x, d, n, f0, slope, hs, &t, xn, &fnew, gn, &tried,
				       &evals);
			have_g = ok == 1;
		}
		if (multi && !ok) {
			/* SX_OPTIM_LANES halvings per call; the first acceptable one in
			 * order is the one the sequential search would take. */
			double lp[SX_OPTIM_LANES][SX_OPTIM_MAX_DIM], lf[SX_OPTIM_LANES], lt[SX_OPTIM_LANES];
			const double *lps[SX_OPTIM_LANES];
			for (int ls = tried; ls < 40 && !ok; ls += SX_OPTIM_LANES) {
				for (int k = 0; k < SX_OPTIM_LANES; k++) {
					lt[k] = t;
					for (size_t i = 0; i < n; i++)
						lp[k][i] = x[i] + t * d[i];
					lps[k] = lp[k];
					t *= 0.5;
				}
				multi(lps, SX_OPTIM_LANES, lf, ud);
				evals += SX_OPTIM_LANES;
				for (int k = 0; k < SX_OPTIM_LANES && ls + k < 40; k++) {
					if (isfinite(lf[k]) && lf[k] <= f0 + 1e-4 * lt[k] * slope) {
						ok = 1;
						fnew = lf[k];
						memcpy(xn, lp[k], n * sizeof(double));
						break;
					}
				}
			}
		} else if (!multi) {
			for (int ls = 0; ls < 40; ls++) {
				for (size_t i = 0; i < n; i++)
					xn[i] = x[i] + t * d[i];
				fnew = f(xn, ud);
				evals++;
				if (isfinite(fnew) && fnew <= f0 + 1e-4 * t * slope) {
					ok = 1;
					break;
				}
				t *= 0.5;
			}
		}
		if (!ok) {
			if (fresh)
				break;
			fresh = 1;
			continue;
		}
		if (!have_g)
			grad(f, multi, ud, xn, fnew, n, hs, central, gn, &evals);
		double sy = 0;
		for (size_t i = 0; i < n; i++) {
			sv[i] = xn[i] - x[i];
			yv[i] = gn[i] - g[i];
			sy += sv[i] * yv[i];
		}
		double gain = f0 - fnew;
		memcpy(x, xn, n * sizeof(double));
		memcpy(g, gn, n * sizeof(double));
		f0 = fnew;
		if (gain <= ftol * (fabs(f0) + ftol)) {
			if (++stall >= 2)
				break;
		} else {
			stall = 0;
		}
		if (sy > 1e-12) {
			if (fresh) {
				double yy = 0;
				for (size_t i = 0; i < n; i++)
					yy += yv[i] * yv[i];
				for (size_t i = 0; i < n; i++)
					H[i * n + i] = sy / yy;
			}
			double yhy = 0;
			for (size_t i = 0; i < n; i++) {
				double acc = 0;
				for (size_t j = 0; j < n; j++)
					acc += H[i * n + j] * yv[j];
				hy[i] = acc;
				yhy += yv[i] * acc;
			}
			double rho = 1 / sy, c = (1 + rho * yhy) * rho;
			for (size_t i = 0; i < n; i++)
				for (size_t j = 0; j < n; j++)
					H[i * n + j] += c * sv[i] * sv[j] - rho * (hy[i] * sv[j] + sv[i] * hy[j]);
			fresh = 0;
		} else {
			fresh = 1;
		}
	}
	if (fx)
		*fx = f0;
	return (int)(evals > (size_t)0x7fffffff ? 0x7fffffff : evals);
}
