/* bench_ets: ETS fit + forecast speed and accuracy; the statsmodels side is
 * bench/ets_ref.py, both run by bench/run_ets.sh.
 *
 * usage: bench_ets SHARED_DATA_DIR SAMPLE_CSV [nseries=10000] [threads=2]
 *
 * Series: the 181-day daily departure counts of the airports with a complete,
 * positive record, cycled and perturbed by +-3% multiplicative noise from a
 * fixed-seed generator to reach nseries distinct series. Each is fitted on the
 * first 167 days and scored on the last 14 (MAPE). The first 200 series are
 * written to SAMPLE_CSV for the statsmodels run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/math/ets.h"
#include "core/sx.h"

#define LEN 181
#define H 14
#define MAXA 256
#define SAMPLE 200

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Single-thread figures use CPU time: the machine is shared and wall time
 * swings with the other jobs' load; the batch figures are wall time. */
static double cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(double), cmpd);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double mape(const double *a, const double *f, size_t h)
{
	double s = 0;
	for (size_t j = 0; j < h; j++)
		s += fabs((a[j] - f[j]) / a[j]);
	return 100 * s / (double)h;
}

/* Airports with LEN positive days, in file order. */
static size_t load_airports(const char *dir, double (*out)[LEN])
{
	char p[1024], line[256], codes[MAXA][8];
	int cnt[MAXA] = {0};
	size_t na = 0;
	snprintf(p, sizeof(p), "%s/us_flights_2001h1_daily_by_origin.csv", dir);
	FILE *f = fopen(p, "r");
	if (!f) {
		fprintf(stderr, "missing %s\n", p);
		exit(1);
	}
	static double tmp[MAXA][LEN];
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "date", 4) || !strncmp(line, "2001-07", 7))
			continue;
		int mon = atoi(line + 5), day = atoi(line + 8);
		static const int cum[] = {0, 0, 31, 59, 90, 120, 151};
		int t = cum[mon] + day - 1;
		char *c = line + 11, *e = strchr(c, ',');
		*e = 0;
		size_t a;
		for (a = 0; a < na && strcmp(codes[a], c); a++)
			;
		if (a == na) {
			snprintf(codes[na], sizeof(codes[na]), "%.7s", c);
			na++;
		}
		double v = strtod(e + 1, NULL);
		if (t >= 0 && t < LEN && v > 0) {
			tmp[a][t] = v;
			cnt[a]++;
		}
	}
	fclose(f);
	size_t k = 0;
	for (size_t a = 0; a < na; a++)
		if (cnt[a] == LEN)
			memcpy(out[k++], tmp[a], sizeof(tmp[a]));
	return k;
}

static double load_air(const char *dir, double *y)
{
	char p[1024], line[128];
	snprintf(p, sizeof(p), "%s/airpassengers_monthly.csv", dir);
	FILE *f = fopen(p, "r");
	if (!f) {
		fprintf(stderr, "missing %s\n", p);
		exit(1);
	}
	int n = 0;
	while (fgets(line, sizeof(line), f))
		if (n < 144 && strchr(line, ',') && line[1] != 'd')
			y[n++] = strtod(strchr(line, ',') + 1, NULL);
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s SHARED_DATA_DIR SAMPLE_CSV [nseries] [threads]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	size_t ns = argc > 3 ? strtoul(argv[3], NULL, 10) : 10000;
	int threads = argc > 4 ? atoi(argv[4]) : 2;

	/* 1. one series: AirPassengers, ETS(M,A,M) fit + 12-step forecast with 95% PI */
	double air[144], f[12], lo[12], hi[12], tt[15];
	load_air(argv[1], air);
	struct sx_ets_spec mam;
	sx_ets_spec_parse("MAM", 12, &mam);
	struct sx_ets_model mod;
	for (int r = 0; r < 15; r++) {
		double t0 = cpu();
		if (sx_ets_fit(air, 144, &mam, NULL, &mod) ||
		    sx_ets_forecast(&mod, 12, 0.95, 1, f, lo, hi))
			return fprintf(stderr, "%s\n", sx_diag_last()), 1;
		tt[r] = cpu() - t0;
	}
	printf("single air MAM fit+forecast(PI, simulated): median %.3f ms  llf %.3f\n",
	       1e3 * median(tt, 15), mod.loglik);
	struct sx_ets_spec aaa;
	sx_ets_spec_parse("AAA", 12, &aaa);
	for (int r = 0; r < 15; r++) {
		double t0 = cpu();
		if (sx_ets_fit(air, 144, &aaa, NULL, &mod) ||
		    sx_ets_forecast(&mod, 12, 0.95, 1, f, lo, hi))
			return 1;
		tt[r] = cpu() - t0;
	}
	printf("single air AAA fit+forecast(PI, analytic):  median %.3f ms  llf %.3f\n",
	       1e3 * median(tt, 15), mod.loglik);
	for (int r = 0; r < 5; r++) {
		double t0 = cpu();
		if (sx_ets_auto(air, 144, 12, NULL, &mod) ||
		    sx_ets_forecast(&mod, 12, 0.95, 1, f, lo, hi))
			return 1;
		tt[r] = cpu() - t0;
	}
	char nm[8];
	printf("single air auto (15 models) fit+forecast:   median %.3f ms  -> %s\n",
	       1e3 * median(tt, 5), sx_ets_spec_name(&mod.spec, nm));

	/* 2. many series */
	static double base[MAXA][LEN];
	size_t nb = load_airports(argv[1], base);
	double *data = malloc(ns * LEN * sizeof(double));
	const double **ys = malloc(ns * sizeof(*ys));
	size_t *lens = malloc(ns * sizeof(size_t));
	struct sx_ets_model *out = malloc(ns * sizeof(*out));
	int *rc = malloc(ns * sizeof(int));
	uint64_t s = 20240601;
	for (size_t i = 0; i < ns; i++) {
		for (size_t t = 0; t < LEN; t++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			double u = (double)(s >> 11) / 9007199254740992.0;
			double v = base[i % nb][t] * (1 + 0.06 * (u - 0.5));
			data[i * LEN + t] = i < nb ? base[i][t] : v;
		}
		ys[i] = data + i * LEN;
		lens[i] = LEN - H;
	}
	FILE *sf = fopen(argv[2], "w");
	if (!sf)
		return perror(argv[2]), 1;
	for (size_t i = 0; i < SAMPLE && i < ns; i++)
		for (size_t t = 0; t < LEN; t++)
			fprintf(sf, "%.17g%c", data[i * LEN + t], t + 1 < LEN ? ',' : '\n');
	fclose(sf);
	printf("series: %zu (from %zu airports), length %d, fit on %d, score last %d\n", ns, nb,
	       LEN, LEN - H, H);

	static const char *fixed[] = {"AAA", "MAM", NULL};
	for (int k = 0; k < 3; k++) {
		struct sx_ets_spec sp, *spp = NULL;
		if (fixed[k]) {
			sx_ets_spec_parse(fixed[k], 7, &sp);
			spp = &sp;
		}
		/* per-series time on one thread over the sample, then the whole batch */
		size_t smp = ns < SAMPLE ? ns : SAMPLE;
		double t0 = cpu();
		sx_ets_batch((const double *const *)ys, lens, smp, 7, spp, NULL, 1, out, rc);
		double t1 = cpu() - t0;
		double ms = 0, ms10 = 0;
		FILE *lf = NULL;
		if (fixed[k]) {
			char lp[1100];
			snprintf(lp, sizeof(lp), "%s.%s.llf", argv[2], fixed[k]);
			lf = fopen(lp, "w");
		}
		for (size_t i = 0; i < smp; i++) {
			double fc[H];
			if (rc[i] || sx_ets_forecast(&out[i], H, 0.95, 1, fc, NULL, NULL))
				return fprintf(stderr, "series %zu: %s\n", i, sx_diag_last()), 1;
			ms += mape(ys[i] + LEN - H, fc, H);
			if (i < 10)
				ms10 += mape(ys[i] + LEN - H, fc, H);
			if (lf)
				fprintf(lf, "%.10g\n", out[i].loglik);
		}
		if (lf)
			fclose(lf);
		/* The automatic choice fits 15 models: its batch is capped at 2000
		 * series to keep the shared machine usable. */
		size_t nbat = spp || ns < 2000 ? ns : 2000;
		t0 = now();
		sx_ets_batch((const double *const *)ys, lens, nbat, 7, spp, NULL, threads, out, rc);
		double tb = now() - t0;
		double mall = 0;
		size_t ok = 0;
		for (size_t i = 0; i < nbat; i++) {
			double fc[H];
			if (rc[i] || sx_ets_forecast(&out[i], H, 0.95, 1, fc, NULL, NULL))
				continue;
			mall += mape(ys[i] + LEN - H, fc, H);
			ok++;
		}
		printf("ets %-4s sample %zu: %.3f ms/series (1 thread, cpu), MAPE %.3f (first 10: %.3f) | "
		       "batch %zu on %d threads: %.2f s wall, %.3f ms/series, MAPE %.3f, failed %zu\n",
		       fixed[k] ? fixed[k] : "auto", smp, 1e3 * t1 / smp, ms / smp, ms10 / 10, nbat,
		       threads, tb, 1e3 * tb / nbat, mall / ok, nbat - ok);
	}
	/* Holt-Winters additive, least squares */
	{
		struct sx_ets_spec sp;
		sx_ets_spec_parse("AAA", 7, &sp);
		size_t smp = ns < SAMPLE ? ns : SAMPLE;
		double t0 = cpu(), ms = 0;
		for (size_t i = 0; i < smp; i++) {
			double fc[H];
			if (sx_hw_fit(ys[i], lens[i], &sp, NULL, &out[i]) ||
			    sx_ets_forecast(&out[i], H, 0.95, 1, fc, NULL, NULL))
				return 1;
			ms += mape(ys[i] + LEN - H, fc, H);
		}
		double t1 = cpu() - t0;
		printf("hw   AA   sample %zu: %.3f ms/series (1 thread, cpu), MAPE %.3f\n", smp,
		       1e3 * t1 / smp, ms / smp);
	}
	free(data);
	free(ys);
	free(lens);
	free(out);
	free(rc);
	return 0;
}
