/* bench_logreg — logistic regression fit time on 1M x 32 synthetic rows.
 *
 *   bench_logreg <data.bin> [threads] [tol]
 *
 * Generates the data (seed 1: X ~ N(0, 1) with column j scaled by
 * 1 + (j % 4) / 2, y ~ Bernoulli(sigmoid(x . w* + 0.5)), w*_j = 0.3 ((j % 5) - 2)),
 * writes it to data.bin for bench/logreg_ref.py (int64 n, int64 d, float32
 * X[n*d], uint8 y[n]; X is stored as float32 and both sides fit on its exact
 * double values), fits with L2 = 1 (sklearn C = 1) and prints the fit time,
 * iterations and training AUC.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/math/logreg.h"
#include "core/math/metrics.h"

#define N 1000000
#define D 32

static uint64_t rng = 1;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double unif(void) { return ((double)(rnd() >> 11) + 0.5) * 0x1p-53; }

static double clock_s(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_logreg <data.bin> [threads] [tol]\n");
		return 2;
	}
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	double tol = argc > 3 ? atof(argv[3]) : 1e-6;
	float *Xf = malloc((size_t)N * D * sizeof(float));
	double *X = malloc((size_t)N * D * sizeof(double));
	uint8_t *y = malloc(N);
	double *p = malloc(N * sizeof(double));
	if (!Xf || !X || !y || !p)
		return 1;
	double w[D];
	for (int j = 0; j < D; j++)
		w[j] = 0.3 * ((j % 5) - 2);
	for (size_t i = 0; i < N; i++) {
		double z = 0.5;
		for (int j = 0; j < D; j += 2) {
			double r = sqrt(-2 * log(unif())), t = 2 * M_PI * unif();
			Xf[i * D + j] = (float)(r * cos(t) * (1 + (j % 4) / 2.0));
			Xf[i * D + j + 1] = (float)(r * sin(t) * (1 + ((j + 1) % 4) / 2.0));
		}
		for (int j = 0; j < D; j++) {
			X[i * D + j] = Xf[i * D + j];
			z += w[j] * X[i * D + j];
		}
		y[i] = unif() < 1 / (1 + exp(-z));
	}
	FILE *f = fopen(argv[1], "wb");
	int64_t h[2] = {N, D};
	if (!f || fwrite(h, sizeof h, 1, f) != 1 || fwrite(Xf, sizeof(float), (size_t)N * D, f) != (size_t)N * D ||
	    fwrite(y, 1, N, f) != N || fclose(f) != 0) {
		fprintf(stderr, "cannot write %s\n", argv[1]);
		return 1;
	}
	free(Xf);

	struct sx_logreg *m = sx_logreg_new(D);
	struct sx_logreg_opts o;
	sx_logreg_opts_default(&o);
	o.nthreads = threads;
	o.tol = tol;
	double best = 1e9, best_cpu = 1e9;
	for (int rep = 0; rep < 3; rep++) {
		double t = now(), c = cpu();
		if (sx_logreg_fit(m, X, y, NULL, N, &o) != 0)
			return 1;
		t = now() - t;
		c = cpu() - c;
		printf("fit %d: %.3f s wall, %.3f s cpu, %d iterations, converged %d\n", rep + 1, t, c,
		       sx_logreg_n_iter(m), sx_logreg_converged(m));
		fflush(stdout);
		if (t < best)
			best = t;
		if (c < best_cpu)
			best_cpu = c;
	}
	sx_logreg_predict_proba(m, X, N, p);
	double auc;
	sx_metrics_auc(p, y, N, &auc);
	printf("coef[0..3] %.6f %.6f %.6f %.6f intercept %.6f\n", sx_logreg_coef(m)[0],
	       sx_logreg_coef(m)[1], sx_logreg_coef(m)[2], sx_logreg_coef(m)[3], sx_logreg_intercept(m));
	printf("RESULT c logreg n=%d d=%d threads=%d tol=%g best_fit_s=%.3f best_cpu_s=%.3f iters=%d "
	       "auc=%.6f\n",
	       N, D, threads, tol, best, best_cpu, sx_logreg_n_iter(m), auc);
	sx_logreg_free(m);
	free(X);
	free(y);
	free(p);
	return 0;
}
