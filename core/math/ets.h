/* ets.h — exponential smoothing: ETS state-space models, Holt-Winters,
 * forecasts with prediction intervals, rolling-origin backtests.
 *
 * Models follow the Hyndman et al. taxonomy ETS(error, trend, season):
 * error A|M, trend N|A|Ad (additive damped), season N|A|M, season length m.
 * Multiplicative trends are not provided. With the state (l, b, s) and
 *   B = phi*b, L = l + B, S = s[t-m], yhat = L (+|*) S, r = y - yhat
 * the recursions are (identical for both error types; only the likelihood
 * differs):
 *   season N|A:  l = L + alpha*r,    b = B + beta*r,    s = S + gamma*r
 *   season M:    l = L + alpha*r/S,  b = B + beta*r/S,  s = S + gamma*r/L
 * The log-likelihood is the concentrated Gaussian one of statsmodels'
 * ETSModel and R's forecast::ets:
 *   error A:  -n/2 (log(2 pi SSE/n) + 1)
 *   error M:  -n/2 (log(2 pi sum(e^2)/n) + 1) - sum log yhat,  e = r/yhat
 *
 * Fitting (sx_ets_fit) maximises it over alpha, beta, gamma, phi and the
 * initial states l0, b0, s0 with the "usual" bounds of both references:
 *   1e-4 <= alpha <= 1-1e-4,  1e-4 <= beta/alpha <= 1-1e-4,
 *   1e-4 <= gamma/(1-alpha) <= 1-1e-4,  0.8 <= phi <= 0.98.
 * The seasonal initial states are normalised to sum 0 (additive) or m
 * (multiplicative), so m-1 of them are free. The optimiser is BFGS with
 * finite-difference gradients (core/math/optim.h) on logistic-mapped
 * smoothing parameters and scaled states, started from the heuristic states
 * of Hyndman et al. §2.6 and from two smoothing-parameter points (the best
 * of a 4x3 alpha/gamma grid, and alpha 0.1, beta/alpha 0.1, gamma 0.05);
 * the better optimum is kept. The optimiser's gradient, line-search and
 * grid points go through a four-lane vector version of the recursion
 * (SX_OPTIM_LANES independent parameter sets per pass): one pass is a
 * latency-bound chain, so four cost little more than one; the iterates are
 * those of the one-point search. The lanes run as two SSE2 vector pairs, or
 * as one AVX2 vector where the CPU has AVX2 (chosen at run time; no FMA, so
 * both give the same bits). Caveat: these likelihoods are multimodal and
 * the search is local; on 200 daily airport series ours was within 0.05 of
 * statsmodels' log-likelihood or better in 95-98% of fits (bench/README.md,
 * "Exponential smoothing").
 *
 * AICc counts every free parameter plus the variance:
 *   k = #smoothing + 1 + (trend) + (m-1 if seasonal) + 1
 * which is R's count; statsmodels counts m seasonal states, one more.
 *
 * Prediction intervals: for ETS(A,N|A|Ad,N|A) the analytic variance
 *   sigma2 * (1 + sum_{j<h} c_j^2),  c_j = alpha + beta*(phi+..+phi^j) + gamma*[j%m==0]
 * (Hyndman et al. 2008, class 1); for every other model, simulation of
 * SX_ETS_SIM_PATHS sample paths with Gaussian innovations from a seeded
 * xoshiro256** stream, and the empirical quantiles. sigma2 = SSE/n of the
 * residuals r (error A) or relative residuals e (error M), as statsmodels.
 *
 * Several seasonal periods: ETS handles one period m <= SX_ETS_MAX_M (daily
 * data with weekly seasonality: m = 7). A second, longer period (e.g. 365
 * days, or 7 on hourly data with m = 24) is removed first by a classical
 * decomposition (sx_ets_seasonal_index), the rest is fitted by ETS, and the
 * index is put back on the forecasts (sx_ets_reseason). See
 * bench/README.md, "Several seasonal periods".
 *
 * Errors: SX_EINVAL (with the reason in sx_diag_last()) for NaN/Inf data,
 * series too short for the model, m < 1 or m > SX_ETS_MAX_M with a seasonal
 * model, non-positive data with a multiplicative component, bad options.
 * SX_ENOMEM on allocation failure. Nothing is allocated that outlives a
 * call; struct sx_ets_model is plain data and may be copied.
 *
 * Thread safety: every function is reentrant; sx_ets_batch runs fits on
 * its own pthreads.
 */
#ifndef SX_MATH_ETS_H
#define SX_MATH_ETS_H

#include <stddef.h>
#include <stdint.h>

#define SX_ETS_MAX_M 24
#define SX_ETS_SIM_PATHS 2000

enum {
	SX_ETS_NONE = 0, /* 'N' */
	SX_ETS_ADD = 1,  /* 'A' */
	SX_ETS_MUL = 2   /* 'M' */
};

struct sx_ets_spec {
	int error;  /* SX_ETS_ADD or SX_ETS_MUL */
	int trend;  /* SX_ETS_NONE or SX_ETS_ADD */
	int damped; /* 1 for a damped additive trend */
	int season; /* SX_ETS_NONE, SX_ETS_ADD or SX_ETS_MUL */
	int m;      /* season length; ignored (taken as 1) without a season */
};

struct sx_ets_model {
	struct sx_ets_spec spec;
	double alpha, beta, gamma, phi; /* beta, gamma 0 and phi 1 when absent */
	/* Initial states: level, trend and s0[j] = the seasonal term applied at
	 * time j (0 <= j < m), i.e. s_{j-m}. */
	double l0, b0, s0[SX_ETS_MAX_M];
	/* States after the last observation; s[j] applies at time n + j. */
	double l, b, s[SX_ETS_MAX_M];
	double sigma2; /* innovation variance (see above) */
	double loglik, aic, aicc, bic;
	double sse;    /* sum of squared residuals y - yhat */
	size_t n;      /* observations fitted */
	int k;         /* parameters counted by the information criteria */
	int evals;     /* objective evaluations spent by the optimiser */
};

struct sx_ets_opts {
	size_t max_iter; /* BFGS iterations per run; 0 = 400 */
	/* Candidates for sx_ets_auto; NULL = the 15 models of R's ets() with
	 * restrict = TRUE and no multiplicative trend (ANN AAN AAdN ANA AAA AAdA
	 * MNN MAN MAdN MNA MAA MAdA MNM MAM MAdM). */
	const struct sx_ets_spec *candidates;
	size_t ncandidates;
};

/* "MAdM" style name of spec into buf (>= 5 bytes). Returns buf. */
char *sx_ets_spec_name(const struct sx_ets_spec *spec, char *buf);

/* Parse "ANN", "MAdM", ... (case-sensitive) with season length m. */
int sx_ets_spec_parse(const char *name, int m, struct sx_ets_spec *spec);

/* Fit spec to y[0..n) by maximum likelihood. opts may be NULL.
 * Needs n >= 4 non-seasonal, n >= 2m seasonal, and more observations than
 * parameters. Returns 0 or SX_EINVAL / SX_ENOMEM. */
int sx_ets_fit(const double *y, size_t n, const struct sx_ets_spec *spec,
	       const struct sx_ets_opts *opts, struct sx_ets_model *out);

/* Fit every admissible candidate and keep the one with the smallest AICc.
 * Admissible: multiplicative error or season only for strictly positive y;
 * seasonal only if m > 1 and n >= 2m; at least k+2 observations.
 * Returns 0, SX_EINVAL if no candidate is admissible, or SX_ENOMEM. */
int sx_ets_auto(const double *y, size_t n, int m, const struct sx_ets_opts *opts,
		struct sx_ets_model *out);

/* Run the recursions with the parameters and initial states in *model
 * (spec, alpha..phi, l0, b0, s0 are read) over y[0..n): fills the end
 * states, sse, sigma2, loglik and the criteria of *model; fitted (optional,
 * n values) gets the one-step predictions. Returns 0 or SX_EINVAL. Used by
 * the fits; exposed for known-answer tests and for refits with fixed
 * parameters. */
int sx_ets_filter(const double *y, size_t n, struct sx_ets_model *model, double *fitted);

/* Forecast h steps after the fitted sample. mean gets h values; lo and hi
 * (both NULL or both h values) the central prediction interval at level
 * (0 < level < 1, e.g. 0.95). seed fixes the simulation stream (only used
 * for models without an analytic variance). Returns 0, SX_EINVAL, or
 * SX_ENOMEM (simulation buffers). */
int sx_ets_forecast(const struct sx_ets_model *model, size_t h, double level, uint64_t seed,
		    double *mean, double *lo, double *hi);

/* 1 if intervals of this spec are analytic, 0 if simulated. */
int sx_ets_has_analytic_pi(const struct sx_ets_spec *spec);

/* Holt-Winters by least squares, as statsmodels' ExponentialSmoothing:
 * spec->error is ignored (recorded as A); trend N|A|Ad, season N|A|M.
 * Bounds: 0 <= alpha <= 1, 0 <= beta_hw <= alpha, 0 <= gamma <= 1-alpha,
 * 0.8 <= phi <= 0.995, where beta_hw (the textbook Holt-Winters trend
 * parameter) = model.beta / model.alpha. loglik and the criteria are those
 * of the additive-error likelihood at the least-squares fit.
 * Returns 0, SX_EINVAL or SX_ENOMEM. */
int sx_hw_fit(const double *y, size_t n, const struct sx_ets_spec *spec,
	      const struct sx_ets_opts *opts, struct sx_ets_model *out);

/* Fit many series on `threads` pthreads (<= 0: 1). spec NULL = sx_ets_auto
 * with season length m, else sx_ets_fit with *spec. ys[i] has ns[i] values;
 * out[i] and rc[i] get the model and the return code of series i (a
 * failed series does not stop the others; its message is not kept).
 * Returns 0, or SX_EINVAL/SX_ENOMEM if the batch could not run at all. */
int sx_ets_batch(const double *const *ys, const size_t *ns, size_t count, int m,
		 const struct sx_ets_spec *spec, const struct sx_ets_opts *opts, int threads,
		 struct sx_ets_model *out, int *rc);

/* Classical decomposition index for period p >= 2 (any length, e.g. 365):
 * centred moving average of order p (2x p when p is even), y detrended by
 * it (y - ma or y / ma), averaged per position t % p and normalised to
 * mean 0 (additive) or 1 (mul). index gets p values; index[t % p] applies
 * at time t. Needs n >= 2p and, for mul, y > 0. Returns 0 or SX_EINVAL. */
int sx_ets_seasonal_index(const double *y, size_t n, size_t p, int mul, double *index);

/* Remove (sign = -1) or put back (sign = +1) an index from
 * sx_ets_seasonal_index on x[0..len), where x[i] is at time t0 + i. */
void sx_ets_reseason(double *x, size_t len, size_t t0, const double *index, size_t p, int mul,
		     int sign);

/* Rolling-origin evaluation. Fold i (0 <= i < folds) trains on
 * y[0..o_i) and scores the forecast of y[o_i..o_i+h), with
 * o_i = n - h - (folds-1-i)*step. */
struct sx_ets_backtest_opts {
	size_t folds, h, step; /* step 0 = h */
	int m;                 /* seasonal-naive lag for the MASE scale (>= 1) */
	double level;          /* interval level for the coverage, e.g. 0.95 */
};

/* Pooled over every scored point of every fold:
 *   mape  = 100 mean |y-f|/|y|             (NaN if some y == 0)
 *   smape = 100 mean 2|y-f|/(|y|+|f|)       (a 0/0 term counts 0)
 *   mase  = mean |y-f| / scale_fold, scale_fold = mean_{m<=t<o} |y_t - y_{t-m}|
 *           of that fold's training part    (NaN if a scale is 0)
 *   coverage = share of points with lo <= y <= hi (NaN if the forecaster
 *           gave NaN limits) */
struct sx_ets_backtest_result {
	double mape, smape, mase, coverage;
	size_t points;
};

/* Forecaster for the backtest: forecast y[0..n) h steps into mean/lo/hi
 * (h values each) at level; return 0 or a negative SX_E* code. */
typedef int (*sx_ets_forecaster_cb)(const double *y, size_t n, size_t h, double level,
				    double *mean, double *lo, double *hi, void *ud);

/* Built-in forecaster: ud is a struct sx_ets_cb_ctx; spec NULL = auto. */
struct sx_ets_cb_ctx {
	const struct sx_ets_spec *spec;
	int m;
	const struct sx_ets_opts *opts;
	uint64_t seed;
};
int sx_ets_forecaster(const double *y, size_t n, size_t h, double level, double *mean,
		      double *lo, double *hi, void *ud);

/* Returns 0, SX_EINVAL (bad options, a training part shorter than m+1 or
 * than 2, NaN/Inf data), SX_ENOMEM, or the forecaster's error. */
int sx_ets_backtest(const double *y, size_t n, const struct sx_ets_backtest_opts *opts,
		    sx_ets_forecaster_cb cb, void *ud, struct sx_ets_backtest_result *out);

#endif
