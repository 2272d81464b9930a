/* bench_als — seconds per implicit-ALS iteration and NDCG@10 on a holdout.
 *
 *   bench_als synth <split.bin> [iters] [threads]
 *       50k users x 20k items, ~2M distinct interactions, power-law item popularity,
 *       seed 1; 20% of each user's items held out at random.
 *   bench_als movielens <ratings.csv> <split.bin> [iters] [threads]
 *       implicit from ratings (weight = rating); the last 20% of each user's
 *       ratings by time (ties by movieId) held out.
 *
 * Writes the train/test split to split.bin so that bench/als_ref.py fits and
 * scores exactly the same data. Format, little endian: int64 n_users,
 * n_items, nnz, n_test, eval_stride; int64 indptr[n_users + 1]; int32
 * indices[nnz]; float32 weights[nnz]; int64 test_indptr[n_users + 1]; int32
 * test_items[n_test] (ascending within a user). Users u with u % eval_stride
 * == 0 and a non-empty test set are scored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/math/als.h"
#include "core/math/metrics.h"

#define K 64
#define LAMBDA 0.1f
#define ALPHA 10.0f
#define CG_STEPS 3
#define SEED 1

struct split {
	int64_t n_users, n_items, nnz, n_test, stride;
	int64_t *indptr, *tptr;
	int32_t *idx, *titems;
	float *w;
};

static double clock_s(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static uint64_t rng;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double unif(void) { return (double)(rnd() >> 11) * 0x1p-53; }

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	return p;
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

/* Sampling from a cumulative table. */
static int32_t draw(const double *cdf, int32_t n)
{
	double u = unif() * cdf[n - 1];
	int32_t lo = 0, hi = n - 1;
	while (lo < hi) {
		int32_t mid = lo + (hi - lo) / 2;
		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Users belong to one of 50 taste groups; items to one of 50 genres. A user
 * draws 60% of its items from its own genre and the rest from the whole
 * catalogue, both by Zipf(0.9) popularity, so there is structure to learn
 * and a popularity head. Repeated picks add to the weight. */
static void make_synth(struct split *s)
{
	const int32_t NU = 50000, NI = 20000, G = 50;
	rng = SEED;
	s->n_users = NU;
	s->n_items = NI;
	s->stride = 10;
	double *cdf = xmalloc((size_t)NI * sizeof(double));
	int32_t *perm = xmalloc((size_t)NI * sizeof(int32_t));
	for (int32_t i = 0; i < NI; i++)
		perm[i] = i;
	for (int32_t i = NI - 1; i > 0; i--) {
		int32_t j = (int32_t)(rnd() % (uint64_t)(i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	/* Popularity rank r -> item perm[r]; genre of item = its index % G. */
	double acc = 0;
	for (int32_t r = 0; r < NI; r++)
		cdf[r] = acc += pow(r + 1, -0.9);
	int32_t per_g = NI / G;
	double *gcdf = xmalloc((size_t)per_g * sizeof(double));
	acc = 0;
	for (int32_t r = 0; r < per_g; r++)
		gcdf[r] = acc += pow(r + 1, -0.9);
	/* genre items ranked by popularity: genre g's r-th item is the r-th item
	 * of perm whose index % G == g. */
	int32_t *gitems = xmalloc((size_t)NI * sizeof(int32_t));
	int32_t *gfill = calloc((size_t)G, sizeof(int32_t));
	for (int32_t r = 0; r < NI; r++) {
		int32_t g = perm[r] % G;
		gitems[g * per_g + gfill[g]++] = perm[r];
	}
	size_t cap = 2200000;
	int32_t *ti = xmalloc(cap * sizeof(int32_t));
	float *tw = xmalloc(cap * sizeof(float));
	int32_t *hi = xmalloc(cap * sizeof(int32_t));
	s->indptr = xmalloc((size_t)(NU + 1) * sizeof(int64_t));
	s->tptr = xmalloc((size_t)(NU + 1) * sizeof(int64_t));
	size_t o = 0, ho = 0;
	int32_t picks[400];
	for (int32_t u = 0; u < NU; u++) {
		s->indptr[u] = (int64_t)o;
		s->tptr[u] = (int64_t)ho;
		int32_t g = (int32_t)(rnd() % G);
		/* 5..400 draws, mean ~50: a heavy-tailed activity. */
		int n = 5 + (int)(-45.0 * log(1 - unif()));
		if (n > 400)
			n = 400;
		for (int j = 0; j < n; j++)
			picks[j] = unif() < 0.6 ? gitems[g * per_g + draw(gcdf, per_g)] : perm[draw(cdf, NI)];
		qsort(picks, (size_t)n, sizeof picks[0], cmp_i32);
		for (int j = 0; j < n;) {
			int e = j;
			while (e < n && picks[e] == picks[j])
				e++;
			if (o + 1 >= cap || ho + 1 >= cap) {
				fprintf(stderr, "capacity\n");
				exit(1);
			}
			if (unif() < 0.2) {
				hi[ho++] = picks[j];
			} else {
				ti[o] = picks[j];
				tw[o++] = (float)(e - j);
			}
			j = e;
		}
	}
	s->indptr[NU] = (int64_t)o;
	s->tptr[NU] = (int64_t)ho;
	s->nnz = (int64_t)o;
	s->n_test = (int64_t)ho;
	s->idx = ti;
	s->w = tw;
	s->titems = hi;
	free(cdf);
	free(perm);
	free(gcdf);
	free(gitems);
	free(gfill);
}

struct rating {
	int32_t user, item;
	float w;
	int64_t ts;
	int32_t movie;
};

static int cmp_rating(const void *a, const void *b)
{
	const struct rating *x = a, *y = b;
	if (x->user != y->user)
		return (x->user > y->user) - (x->user < y->user);
	if (x->ts != y->ts)
		return (x->ts > y->ts) - (x->ts < y->ts);
	return (x->movie > y->movie) - (x->movie < y->movie);
}

static int cmp_rating_item(const void *a, const void *b)
{
	const struct rating *x = a, *y = b;
	return (x->item > y->item) - (x->item < y->item);
}

/* userId,movieId,rating,timestamp,... ; users and movies get dense ids in
 * ascending order of their original ids. */
static void make_movielens(const char *path, struct split *s)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(1);
	}
	char line[4096];
	if (!fgets(line, sizeof line, f))
		exit(1);
	size_t cap = 1 << 17, n = 0;
	struct rating *r = xmalloc(cap * sizeof *r);
	while (fgets(line, sizeof line, f)) {
		long u, m, ts;
		double v;
		if (sscanf(line, "%ld,%ld,%lf,%ld", &u, &m, &v, &ts) != 4)
			continue;
		if (n == cap)
			r = realloc(r, (cap *= 2) * sizeof *r);
		r[n++] = (struct rating){(int32_t)u, 0, (float)v, ts, (int32_t)m};
	}
	fclose(f);
	/* dense ids */
	int32_t max_u = 0, max_m = 0;
	for (size_t i = 0; i < n; i++) {
		if (r[i].user > max_u)
			max_u = r[i].user;
		if (r[i].movie > max_m)
			max_m = r[i].movie;
	}
	int32_t *umap = calloc((size_t)max_u + 1, sizeof(int32_t));
	int32_t *mmap = calloc((size_t)max_m + 1, sizeof(int32_t));
	for (size_t i = 0; i < n; i++) {
		umap[r[i].user] = 1;
		mmap[r[i].movie] = 1;
	}
	int32_t nu = 0, nm = 0;
	for (int32_t i = 0; i <= max_u; i++)
		umap[i] = umap[i] ? nu++ : -1;
	for (int32_t i = 0; i <= max_m; i++)
		mmap[i] = mmap[i] ? nm++ : -1;
	for (size_t i = 0; i < n; i++) {
		r[i].user = umap[r[i].user];
		r[i].item = mmap[r[i].movie];
	}
	qsort(r, n, sizeof *r, cmp_rating);
	s->n_users = nu;
	s->n_items = nm;
	s->stride = 1;
	s->indptr = xmalloc(((size_t)nu + 1) * sizeof(int64_t));
	s->tptr = xmalloc(((size_t)nu + 1) * sizeof(int64_t));
	s->idx = xmalloc(n * sizeof(int32_t));
	s->w = xmalloc(n * sizeof(float));
	s->titems = xmalloc(n * sizeof(int32_t));
	size_t o = 0, ho = 0;
	for (size_t i = 0; i < n;) {
		size_t e = i;
		while (e < n && r[e].user == r[i].user)
			e++;
		int32_t u = r[i].user;
		size_t n_test = (e - i) / 5;
		s->indptr[u] = (int64_t)o;
		s->tptr[u] = (int64_t)ho;
		/* train part in item order, test part in item order */
		qsort(r + i, e - i - n_test, sizeof *r, cmp_rating_item);
		qsort(r + e - n_test, n_test, sizeof *r, cmp_rating_item);
		for (size_t j = i; j < e - n_test; j++) {
			s->idx[o] = r[j].item;
			s->w[o++] = r[j].w;
		}
		for (size_t j = e - n_test; j < e; j++)
			s->titems[ho++] = r[j].item;
		i = e;
	}
	s->indptr[nu] = (int64_t)o;
	s->tptr[nu] = (int64_t)ho;
	s->nnz = (int64_t)o;
	s->n_test = (int64_t)ho;
	free(r);
	free(umap);
	free(mmap);
}

static void write_split(const struct split *s, const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	int64_t h[5] = {s->n_users, s->n_items, s->nnz, s->n_test, s->stride};
	fwrite(h, sizeof h, 1, f);
	fwrite(s->indptr, sizeof(int64_t), (size_t)s->n_users + 1, f);
	fwrite(s->idx, sizeof(int32_t), (size_t)s->nnz, f);
	fwrite(s->w, sizeof(float), (size_t)s->nnz, f);
	fwrite(s->tptr, sizeof(int64_t), (size_t)s->n_users + 1, f);
	fwrite(s->titems, sizeof(int32_t), (size_t)s->n_test, f);
	if (fclose(f) != 0) {
		fprintf(stderr, "write failed\n");
		exit(1);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: bench_als synth <split.bin> [iters] [threads]\n"
				"       bench_als movielens <ratings.csv> <split.bin> [iters] [threads]\n");
		return 2;
	}
	struct split s = {0};
	int a = 3;
	const char *out;
	double t0 = now();
	if (strcmp(argv[1], "synth") == 0) {
		make_synth(&s);
		out = argv[2];
	} else {
		if (argc < 4)
			return 2;
		make_movielens(argv[2], &s);
		out = argv[3];
		a = 4;
	}
	int iters = argc > a ? atoi(argv[a]) : 10;
	int threads = argc > a + 1 ? atoi(argv[a + 1]) : 2;
	write_split(&s, out);
	printf("data %s: %lld users x %lld items, %lld train, %lld test (%.2f s to build)\n", argv[1],
	       (long long)s.n_users, (long long)s.n_items, (long long)s.nnz, (long long)s.n_test,
	       now() - t0);

	struct sx_als *m = sx_als_new((int32_t)s.n_users, (int32_t)s.n_items, K, LAMBDA, ALPHA, CG_STEPS, SEED);
	if (!m || sx_als_set_data(m, s.indptr, s.idx, s.w) != 0) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}
	double *secs = xmalloc((size_t)iters * sizeof(double));
	double *cpus = xmalloc((size_t)iters * sizeof(double));
	for (int it = 0; it < iters; it++) {
		double t = now(), c = cpu();
		if (sx_als_fit_iteration(m, threads, NULL, NULL, NULL) != 0) {
			fprintf(stderr, "fit failed\n");
			return 1;
		}
		secs[it] = now() - t;
		cpus[it] = cpu() - c;
		double loss = 0;
		sx_als_loss(m, threads, &loss);
		printf("iter %d: %.3f s wall, %.3f s cpu, loss %.9f\n", it + 1, secs[it], cpus[it], loss);
		fflush(stdout);
	}
	double med = median(secs, iters), med_cpu = median(cpus, iters);

	const float *U = sx_als_user_factors(m);
	double ndcg = 0, t_eval = now();
	int64_t n_eval = 0;
	int32_t top[10];
	for (int64_t u = 0; u < s.n_users; u += s.stride) {
		size_t nt = (size_t)(s.tptr[u + 1] - s.tptr[u]);
		if (nt == 0)
			continue;
		int n = sx_als_recommend(m, U + u * K, s.idx + s.indptr[u],
					 (size_t)(s.indptr[u + 1] - s.indptr[u]), 10, top, NULL);
		ndcg += sx_metrics_ndcg_at_k(top, (size_t)n, s.titems + s.tptr[u], nt, 10);
		n_eval++;
	}
	/* Fold-in and explain latency over the evaluation users' train items. */
	double t_fold = 0, t_explain = 0;
	int64_t n_fold = 0, fold_items = 0;
	float xu[K];
	int32_t ex_items[5];
	float ex_c[5];
	for (int64_t u = 0; u < s.n_users && n_fold < 2000; u += s.stride, n_fold++) {
		size_t nu = (size_t)(s.indptr[u + 1] - s.indptr[u]);
		double t = now();
		sx_als_fold_in(m, s.idx + s.indptr[u], s.w + s.indptr[u], nu, xu);
		t_fold += now() - t;
		t = now();
		double total;
		sx_als_explain(m, s.idx + s.indptr[u], s.w + s.indptr[u], nu, 0, 5, ex_items, ex_c, &total);
		t_explain += now() - t;
		fold_items += (int64_t)nu;
	}
	printf("fold-in: %.1f us per user (mean %.1f items), explain: %.1f us\n",
	       1e6 * t_fold / (double)n_fold, (double)fold_items / (double)n_fold,
	       1e6 * t_explain / (double)n_fold);
	printf("RESULT c %s k=%d threads=%d median_s_per_iter=%.3f median_cpu_s_per_iter=%.3f "
	       "ndcg10=%.4f eval_users=%lld (eval %.1f s)\n",
	       argv[1], K, threads, med, med_cpu, ndcg / (double)n_eval, (long long)n_eval,
	       now() - t_eval);
	sx_als_free(m);
	free(secs);
	free(cpus);
	free(s.indptr);
	free(s.tptr);
	free(s.idx);
	free(s.w);
	free(s.titems);
	return 0;
}
