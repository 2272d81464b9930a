/* bench_abtest: cost per call of the A/B statistics, and the exact
 * P(best) by integration against its Monte Carlo peer in the same run.
 *
 * usage: bench_abtest [repeats=7]
 * Prints the median over repeats of the time per call, in microseconds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/math/abtest.h"
#include "core/math/stats.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static volatile double sink;

enum task {
	T_NORM_CDF, T_T_CDF, T_T_CDF_BIGDF, T_T_PPF, T_CHI2_SF, T_ZTEST, T_WELCH, T_BAYES2,
	T_BAYES2_BIG, T_BAYES4, T_BEST4_EXACT, T_BEST4_MC, T_CHOOSE4, T_NTASK
};

static const char *names[T_NTASK] = {
	"norm_cdf", "t_cdf (df 30)", "t_cdf (df 2e5)", "t_ppf (df 30)", "chi2_sf (k 3)",
	"prop_ztest", "welch", "bayes_beta 2 arms (n 1e3)", "bayes_beta 2 arms (n 1e6)",
	"bayes_beta 4 arms (n 1e3)", "prob_best 4 arms exact", "thompson_mc 4 arms 1e5 draws",
	"thompson_choose 4 arms",
};

static const long iters[T_NTASK] = {
	2000000, 200000, 50000, 50000, 200000, 200000, 200000, 100, 100, 20, 50, 3, 100000,
};

static void run(enum task t, long n, struct sx_stats_rng *rng)
{
	double s4[4] = {120, 130, 100, 128}, f4[4] = {880, 870, 900, 872};
	double n4[4] = {1000, 1000, 1000, 1000};
	double n2[2] = {1000, 1000}, x2[2] = {100, 130};
	double nb[2] = {1e6, 1e6}, xb[2] = {31000, 30500};
	struct sx_abtest_summary a = {100, 10, 4}, b = {120, 10.8, 9};
	struct sx_abtest_lift o;
	struct sx_abtest_bayes_arm arms[4];
	double p4[4];
	double acc = 0;
	for (long i = 0; i < n; i++) {
		double d = (double)(i % 1000) * 1e-3;
		switch (t) {
		case T_NORM_CDF: acc += sx_stats_norm_cdf(-3 + 6 * d); break;
		case T_T_CDF: acc += sx_stats_t_cdf(-3 + 6 * d, 30); break;
		case T_T_CDF_BIGDF: acc += sx_stats_t_cdf(-3 + 6 * d, 2e5); break;
		case T_T_PPF: acc += sx_stats_t_ppf(0.0005 + 0.999 * d, 30); break;
		case T_CHI2_SF: acc += sx_stats_chi2_sf(20 * d, 3); break;
		case T_ZTEST:
			sx_abtest_prop_ztest(1000, 100, 1000, 100 + (double)(i % 50), 0.05, 0, &o);
			acc += o.p_value;
			break;
		case T_WELCH:
			b.mean = 10 + d;
			sx_abtest_welch(&a, &b, 0.05, 0, &o);
			acc += o.p_value;
			break;
		case T_BAYES2:
			sx_abtest_bayes_beta(n2, x2, 2, 1, 1, arms);
			acc += arms[1].prob_beat_control;
			break;
		case T_BAYES2_BIG:
			sx_abtest_bayes_beta(nb, xb, 2, 1, 1, arms);
			acc += arms[1].prob_beat_control;
			break;
		case T_BAYES4:
			sx_abtest_bayes_beta(n4, s4, 4, 1, 1, arms);
			acc += arms[1].prob_best;
			break;
		case T_BEST4_EXACT:
			sx_abtest_prob_best(s4, f4, 4, 1, 1, p4);
			acc += p4[1];
			break;
		case T_BEST4_MC:
			sx_abtest_thompson_mc(s4, f4, 4, 1, 1, 100000, (uint64_t)i, p4);
			acc += p4[1];
			break;
		case T_CHOOSE4: {
			size_t arm;
			sx_abtest_thompson_choose(s4, f4, 4, 1, 1, rng, &arm);
			acc += (double)arm;
			break;
		}
		default: break;
		}
	}
	sink = acc;
}

int main(int argc, char **argv)
{
	int repeats = argc > 1 ? atoi(argv[1]) : 7;
	if (repeats < 1 || repeats > 101)
		repeats = 7;
	struct sx_stats_rng rng;
	sx_stats_rng_seed(&rng, 1);
	double med[T_NTASK];
	printf("%-34s %12s\n", "task", "us/call");
	for (int t = 0; t < T_NTASK; t++) {
		double times[101];
		for (int r = 0; r < repeats; r++) {
			double t0 = now();
			run((enum task)t, iters[t], &rng);
			times[r] = (now() - t0) / (double)iters[t] * 1e6;
		}
		qsort(times, (size_t)repeats, sizeof(double), cmp);
		med[t] = times[repeats / 2];
		printf("%-34s %12.3f\n", names[t], med[t]);
	}
	printf("\nexact P(best) vs Monte Carlo (1e5 draws, SE ~1.6e-3): %.1fx faster\n",
	       med[T_BEST4_MC] / med[T_BEST4_EXACT]);
	return 0;
}
