/* bench_hnsw — HNSW build time and single-thread queries/s at fixed recall@10.
 *
 * Reads the shared ANN set written by shared/bench/ann_data.py (TEXMEX .fvecs /
 * .ivecs) from $BENCH_DATA (default ../shared/bench/data relative to the current
 * directory), builds with M=16, ef_construction=200 on 2 threads, then sweeps ef
 * and reports, for recall@10 targets 0.90 / 0.95 / 0.99, the queries/s of the
 * smallest swept ef that reaches the target (median of the repeats). Queries/s are
 * given twice: over the thread's CPU time (the headline figure: robust when other
 * processes share the cores) and over wall-clock time.
 *
 *   bench_hnsw [prefix=synth-200k-d64] [repeats=3] [build_threads=2]
 *
 * With $BENCH_HNSW_IMAGE set, the built index is saved there and also loaded back,
 * timing both (the searches then run on the loaded copy). $BENCH_METRIC = l2
 * (default) | ip (inner product: the ALS item factors, bench/recommend_bench.py
 * factors) | cosine picks the metric; the truth file must be for that metric.
 *
 * Output: a table on stdout and RESULT lines in the shared bench format.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/math/hnsw.h"
#include "core/math/vec.h"
#include "core/sx.h"

static void *read_vecs(const char *path, size_t elem, size_t *n, size_t *d)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cannot open %s (run /usr/bin/python3 shared/bench/ann_data.py with BENCH_DATA set)\n",
			path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	int32_t dim;
	if (fread(&dim, 4, 1, f) != 1 || dim <= 0) {
		fprintf(stderr, "%s: bad header\n", path);
		exit(1);
	}
	size_t rec = 4 + (size_t)dim * elem;
	*n = (size_t)sz / rec;
	*d = (size_t)dim;
	char *out = malloc(*n * (size_t)dim * elem);
	fseek(f, 0, SEEK_SET);
	char *row = malloc(rec);
	for (size_t i = 0; i < *n; i++) {
		if (fread(row, rec, 1, f) != 1) {
			fprintf(stderr, "%s: short read\n", path);
			exit(1);
		}
		memcpy(out + i * dim * elem, row + 4, (size_t)dim * elem);
	}
	free(row);
	fclose(f);
	return out;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *prefix = argc > 1 ? argv[1] : "synth-200k-d64";
	int repeats = argc > 2 ? atoi(argv[2]) : 3;
	int threads = argc > 3 ? atoi(argv[3]) : 2;
	const char *dir = getenv("BENCH_DATA") ? getenv("BENCH_DATA") : "../shared/bench/data";
	char path[4096];
	size_t n, d, nq, dq, ngt, kgt;
	snprintf(path, sizeof path, "%s/%s.base.fvecs", dir, prefix);
	float *base = read_vecs(path, 4, &n, &d);
	snprintf(path, sizeof path, "%s/%s.query.fvecs", dir, prefix);
	float *query = read_vecs(path, 4, &nq, &dq);
	snprintf(path, sizeof path, "%s/%s.gt.ivecs", dir, prefix);
	int32_t *gt = read_vecs(path, 4, &ngt, &kgt);
	if (dq != d || ngt != nq || kgt < 10) {
		fprintf(stderr, "inconsistent data files\n");
		return 1;
	}

	const char *mname = getenv("BENCH_METRIC") ? getenv("BENCH_METRIC") : "l2";
	int metric = !strcmp(mname, "ip") ? SX_METRIC_IP : !strcmp(mname, "cosine") ? SX_METRIC_COSINE : SX_METRIC_L2;
	struct sx_hnsw_params p;
	sx_hnsw_params_init(&p, metric, (uint32_t)d);
	p.M = 16;
	p.ef_construction = 200;
	p.capacity = n;
	struct sx_hnsw *h = sx_hnsw_new(&p);
	uint64_t *labels = malloc(n * sizeof *labels);
	for (size_t i = 0; i < n; i++)
		labels[i] = i;
	uint64_t t0 = sx_now_ns();
	struct timespec pc0, pc1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &pc0);
	if (sx_hnsw_add_batch(h, labels, base, n, d, threads) < 0) {
		fprintf(stderr, "build failed: %s\n", sx_diag_last());
		return 1;
	}
	double build_s = (double)(sx_now_ns() - t0) / 1e9;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &pc1);
	double build_cpu = (double)(pc1.tv_sec - pc0.tv_sec) + (double)(pc1.tv_nsec - pc0.tv_nsec) * 1e-9;
	printf("sextant hnsw: n=%zu d=%zu nq=%zu metric=%s isa=%s build %.2f s (%d threads, %.2f s CPU), %.1f MiB\n",
	       n, d, nq, mname, sx_vec_isa(), build_s, threads, build_cpu, (double)sx_hnsw_memory(h) / 1048576.0);
	printf("RESULT system=sextant metric=ann.hnsw.build_seconds value=%.4g unit=s threads=%d cpu_seconds=%.4g "
	       "M=16 efc=200\n",
	       build_s, threads, build_cpu);

	static const uint32_t efs[] = {10, 12, 14, 16, 18, 20, 22, 24, 28, 32, 36, 40, 44, 48, 56, 64, 72, 80, 88, 96, 112, 128, 144, 160, 192, 224, 256, 320, 400, 512};
	static const double targets[] = {0.90, 0.95, 0.99};
	double tqps[3] = {0}, trec[3] = {0}, twall[3] = {0};
	uint32_t tef[3] = {0};
	uint64_t res[10];
	double *times = malloc((size_t)repeats * sizeof *times);
	double *walls = malloc((size_t)repeats * sizeof *walls);
	void *image = NULL;
	const char *image_path = getenv("BENCH_HNSW_IMAGE");
	if (image_path) {
		size_t len;
		uint64_t s0 = sx_now_ns();
		if (sx_hnsw_save_buf(h, &image, &len) < 0) {
			fprintf(stderr, "save failed: %s\n", sx_diag_last());
			return 1;
		}
		double save_s = (double)(sx_now_ns() - s0) / 1e9;
		FILE *f = fopen(image_path, "wb");
		if (!f || fwrite(image, 1, len, f) != len || fclose(f) != 0) {
			fprintf(stderr, "cannot write %s\n", image_path);
			return 1;
		}
		s0 = sx_now_ns();
		struct sx_hnsw *g = sx_hnsw_load(image, len);
		double load_s = (double)(sx_now_ns() - s0) / 1e9;
		if (!g) {
			fprintf(stderr, "load failed: %s\n", sx_diag_last());
			return 1;
		}
		sx_hnsw_free(h);
		h = g;
		printf("image %.1f MiB: save (to memory) %.3f s, load (validate + rebuild) %.3f s\n",
		       (double)len / 1048576.0, save_s, load_s);
		printf("RESULT system=sextant metric=ann.hnsw.load_seconds value=%.4g unit=s bytes=%zu\n", load_s, len);
	}
	printf("%6s %8s %10s %10s\n", "ef", "recall", "qps(cpu)", "qps(wall)");
	for (size_t e = 0; e < SX_ARRAY_SIZE(efs); e++) {
		size_t hits = 0;
		for (int r = 0; r < repeats; r++) {
			uint64_t s0 = sx_now_ns();
			double c0 = cpu_now();
			for (size_t i = 0; i < nq; i++) {
				size_t got;
				sx_hnsw_search(h, query + i * d, d, 10, efs[e], NULL, res, NULL, &got);
				if (r == 0)
					for (size_t a = 0; a < got; a++)
						for (size_t b = 0; b < 10; b++)
							hits += res[a] == (uint64_t)gt[i * kgt + b];
			}
			times[r] = cpu_now() - c0;
			walls[r] = (double)(sx_now_ns() - s0) / 1e9;
		}
		qsort(times, (size_t)repeats, sizeof *times, cmp_double);
		qsort(walls, (size_t)repeats, sizeof *walls, cmp_double);
		double qps = (double)nq / times[repeats / 2];
		double wqps = (double)nq / walls[repeats / 2];
		double recall = (double)hits / (double)(nq * 10);
		printf("%6u %8.4f %10.0f %10.0f\n", efs[e], recall, qps, wqps);
		for (int t = 0; t < 3; t++)
			if (!tef[t] && recall >= targets[t]) {
				tef[t] = efs[e];
				tqps[t] = qps;
				twall[t] = wqps;
				trec[t] = recall;
			}
		if (tef[2])
			break;
	}
	for (int t = 0; t < 3; t++) {
		if (tef[t]) {
			printf("recall@10 >= %.2f: ef=%u recall=%.4f qps(cpu)=%.0f qps(wall)=%.0f\n", targets[t], tef[t],
			       trec[t], tqps[t], twall[t]);
			printf("RESULT system=sextant metric=ann.hnsw.qps_at_recall%02d value=%.6g unit=queries/s ef=%u "
			       "recall=%.4f wall_qps=%.6g\n",
			       (int)(targets[t] * 100 + 0.5), tqps[t], tef[t], trec[t], twall[t]);
		} else {
			printf("recall@10 >= %.2f: not reached\n", targets[t]);
		}
	}
	free(times);
	free(walls);
	free(image);
	free(labels);
	free(base);
	free(query);
	free(gt);
	sx_hnsw_free(h);
	return 0;
}
