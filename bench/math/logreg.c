/* bench_logreg — logistic regression fit time on 1M x 32 synthetic rows.
 *
 *   bench_logreg <data.bin> [threads] [tol] [f32|f64] [fits]
 *
 * Generates the data (seed 1: X ~ N(0, 1) with column j scaled by
 * 1 + (j % 4) / 2, y ~ Bernoulli(sigmoid(x . w* + 0.5)), w*_j = 0.3 ((j % 5) - 2)),
 * writes it to data.bin for bench/logreg_ref.py (int64 n, int64 d, int64
 * bytes per value, X[n*d] as float32 or float64, uint8 y[n]) and fits it with
 * L2 = 1 (sklearn C = 1), `fits` times (default 5), printing each fit's wall
 * and CPU time, iterations and evaluations, then the medians, the training
 * AUC, the scaled objective (loss + l2/2 |w|^2) / n and its max |gradient| at
 * the solution, recomputed here in plain double loops.
 *
 * f32 (default) rounds X to float, so the fit can use its internal float copy
 * (bit-identical results, half the memory traffic); f64 keeps full double
 * values, so it cannot. Both sides of the comparison fit the same doubles.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/math/logreg.h"
#include "core/math/metrics.h"

#define N 1000000
#define D 32
#define MAX_FITS 15

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

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, by_value);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_logreg <data.bin> [threads] [tol] [f32|f64] [fits]\n");
		return 2;
	}
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	double tol = argc > 3 ? atof(argv[3]) : 1e-6;
	int f64 = argc > 4 && strcmp(argv[4], "f64") == 0;
	int fits = argc > 5 ? atoi(argv[5]) : 5;
	if (fits < 1 || fits > MAX_FITS)
		fits = 5;
	double *X = malloc((size_t)N * D * sizeof(double));
	uint8_t *y = malloc(N);
	double *p = malloc(N * sizeof(double));
	if (!X || !y || !p)
		return 1;
	double w[D];
	for (int j = 0; j < D; j++)
		w[j] = 0.3 * ((j % 5) - 2);
	for (size_t i = 0; i < N; i++) {
		double z = 0.5;
		for (int j = 0; j < D; j += 2) {
			double r = sqrt(-2 * log(unif())), t = 2 * M_PI * unif();
			X[i * D + j] = r * cos(t) * (1 + (j % 4) / 2.0);
			X[i * D + j + 1] = r * sin(t) * (1 + ((j + 1) % 4) / 2.0);
		}
		for (int j = 0; j < D; j++) {
			if (!f64)
				X[i * D + j] = (float)X[i * D + j];
			z += w[j] * X[i * D + j];
		}
		y[i] = unif() < 1 / (1 + exp(-z));
	}
	FILE *f = fopen(argv[1], "wb");
	int64_t h[3] = {N, D, f64 ? 8 : 4};
	int ok = f && fwrite(h, sizeof h, 1, f) == 1;
	if (f64) {
		ok = ok && fwrite(X, sizeof(double), (size_t)N * D, f) == (size_t)N * D;
	} else {
		float row[D];
		for (size_t i = 0; ok && i < N; i++) {
			for (int j = 0; j < D; j++)
				row[j] = (float)X[i * D + j];
			ok = fwrite(row, sizeof row, 1, f) == 1;
		}
	}
	if (!ok || fwrite(y, 1, N, f) != N || fclose(f) != 0) {
		fprintf(stderr, "cannot write %s\n", argv[1]);
		return 1;
	}

	struct sx_logreg *m = sx_logreg_new(D);
	struct sx_logreg_opts o;
	sx_logreg_opts_default(&o);
	o.nthreads = threads;
	o.tol = tol;
	double wall[MAX_FITS], cpus[MAX_FITS];
	for (int rep = 0; rep < fits; rep++) {
		double t = now(), c = cpu();
		if (sx_logreg_fit(m, X, y, NULL, N, &o) != 0)
			return 1;
		wall[rep] = now() - t;
		cpus[rep] = cpu() - c;
		printf("fit %d: %.3f s wall, %.3f s cpu, %d iterations, %d evaluations, converged %d\n",
		       rep + 1, wall[rep], cpus[rep], sx_logreg_n_iter(m), sx_logreg_n_eval(m),
		       sx_logreg_converged(m));
		fflush(stdout);
	}
	const double *c = sx_logreg_coef(m);
	double b = sx_logreg_intercept(m), loss = 0, g[D + 1] = {0}, ww = 0;
	for (size_t i = 0; i < N; i++) {
		double z = sx_logreg_decision(m, X + i * D);
		loss += (z > 0 ? z : 0) + log1p(exp(-fabs(z))) - (y[i] ? z : 0);
		double r = 1 / (1 + exp(-z)) - y[i];
		for (int j = 0; j < D; j++)
			g[j] += r * X[i * D + j];
		g[D] += r;
	}
	double gmax = 0;
	for (int j = 0; j <= D; j++) {
		if (j < D) {
			ww += c[j] * c[j];
			g[j] += o.l2 * c[j];
		}
		gmax = fmax(gmax, fabs(g[j]) / N);
	}
	sx_logreg_predict_proba(m, X, N, p);
	double auc;
	sx_metrics_auc(p, y, N, &auc);
	printf("coef[0..3] %.6f %.6f %.6f %.6f intercept %.6f\n", c[0], c[1], c[2], c[3], b);
	printf("RESULT c logreg n=%d d=%d x=%s threads=%d tol=%g fits=%d median_wall_s=%.3f "
	       "median_cpu_s=%.3f iters=%d evals=%d f=%.12f max_grad=%.2e auc=%.6f\n",
	       N, D, f64 ? "f64" : "f32", threads, tol, fits, median(wall, fits), median(cpus, fits),
	       sx_logreg_n_iter(m), sx_logreg_n_eval(m), (loss + 0.5 * o.l2 * ww) / N, gmax, auc);
	sx_logreg_free(m);
	free(X);
	free(y);
	free(p);
	return 0;
}
