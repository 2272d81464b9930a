#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/math/exact.h"
#include "core/math/hnsw.h"
#include "core/math/vec.h"
#include "core/sx.h"

/* Clustered Gaussian data: NC centres ~ N(0,1)^D, points = centre + SPREAD N(0,1)^D
 * (overlapping clusters, so that the graph has to work for its recall),
 * queries drawn from the same mixture. Recall is measured against sx_exact_search. */
#define D 32
#define N 6000
#define NQ 200
#define NC 40
#define K 10
#define SPREAD 1.0f
/* Small enough that recall is well below 1 and a weaker graph would show. */
#define TEST_EF 24

static uint64_t rng_state;

static double urand(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return ((double)(rng_state >> 11) + 0.5) * 0x1.0p-53;
}

static float grand(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }

static float centres[NC][D];

static void make_centres(uint64_t seed)
{
	rng_state = seed;
	for (int c = 0; c < NC; c++)
		for (int j = 0; j < D; j++)
			centres[c][j] = grand();
}

static float *make_points(size_t n)
{
	float *v = malloc(n * D * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++) {
		int c = (int)(urand() * NC);
		for (int j = 0; j < D; j++)
			v[i * D + j] = centres[c][j] + SPREAD * grand();
	}
	return v;
}

static struct sx_hnsw *new_index(int metric, uint32_t M, uint32_t efc)
{
	struct sx_hnsw_params p;
	sx_hnsw_params_init(&p, metric, D);
	p.M = M;
	p.ef_construction = efc;
	p.ef_search = 64;
	struct sx_hnsw *h = sx_hnsw_new(&p);
	assert_non_null(h);
	return h;
}

static void add_all(struct sx_hnsw *h, const float *v, const uint64_t *labels, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sx_hnsw_add(h, labels ? labels[i] : i, v + i * D, D), 0);
}

/* Recall@K of the index against exact search over rows `live` of base (labels =
 * row numbers), for queries q. */
static double recall(const struct sx_hnsw *h, int metric, const float *base, const uint8_t *live, size_t n,
		     const float *q, size_t nq, uint32_t ef)
{
	float *sub = malloc(n * D * sizeof *sub);
	uint64_t *map = malloc(n * sizeof *map);
	uint32_t *ids = malloc(nq * K * sizeof *ids);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (live && !live[i])
			continue;
		memcpy(sub + m * D, base + i * D, D * sizeof *sub);
		map[m++] = i;
	}
	assert_int_equal(sx_exact_search(metric, sub, m, D, q, nq, K, ids, NULL), 0);
	size_t hits = 0;
	for (size_t i = 0; i < nq; i++) {
		uint64_t got[K];
		size_t nf;
		assert_int_equal(sx_hnsw_search(h, q + i * D, D, K, ef, NULL, got, NULL, &nf), 0);
		assert_int_equal(nf, m < K ? m : K);
		for (size_t a = 0; a < nf; a++) {
			if (live)
				assert_true(live[got[a]]);
			for (size_t b = 0; b < K; b++)
				hits += ids[i * K + b] != UINT32_MAX && got[a] == map[ids[i * K + b]];
		}
	}
	free(sub);
	free(map);
	free(ids);
	return (double)hits / (double)(nq * (m < K ? m : K));
}

static void check_metric(int metric)
{
	make_centres(1000 + (uint64_t)metric);
	float *base = make_points(N), *q = make_points(NQ);
	struct sx_hnsw *h = new_index(metric, 16, 100);
	add_all(h, base, NULL, N);
	assert_int_equal(sx_hnsw_count(h), N);
	double r = recall(h, metric, base, NULL, N, q, NQ, TEST_EF);
	print_message("metric %d recall@10 = %.4f\n", metric, r);
	assert_true(r >= 0.95);

	/* Reported distances are the metric's, matching a direct computation. */
	uint64_t got[K];
	float dist[K];
	size_t nf;
	assert_int_equal(sx_hnsw_search(h, q, D, K, 0, NULL, got, dist, &nf), 0);
	assert_int_equal(nf, K);
	for (size_t a = 0; a < nf; a++) {
		const float *x = base + got[a] * D;
		float want;
		if (metric == SX_METRIC_L2)
			want = sx_vec_l2sq(q, x, D);
		else if (metric == SX_METRIC_IP)
			want = 1.0f - sx_vec_dot(q, x, D);
		else
			want = 1.0f - sx_vec_cosine(q, x, D);
		assert_float_equal(dist[a], want, 1e-3f * (1.0f + fabsf(want)));
		if (a)
			assert_true(dist[a] >= dist[a - 1]);
	}
	sx_hnsw_free(h);
	free(base);
	free(q);
}

static void test_recall_l2(void **state)
{
	(void)state;
	check_metric(SX_METRIC_L2);
}

static void test_recall_ip(void **state)
{
	(void)state;
	check_metric(SX_METRIC_IP);
}

static void test_recall_cosine(void **state)
{
	(void)state;
	check_metric(SX_METRIC_COSINE);
}

/* Delete 30%, check they vanish at once, insert as many new ones into the freed
 * slots, and check recall holds against exact search over what is live. */
static void test_delete_reuse(void **state)
{
	(void)state;
	make_centres(7);
	const size_t total = N + N * 3 / 10;
	float *base = make_points(total), *q = make_points(NQ);
	uint8_t *live = calloc(total, 1);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 16, 100);
	add_all(h, base, NULL, N);
	memset(live, 1, N);
	double r0 = recall(h, SX_METRIC_L2, base, live, total, q, NQ, TEST_EF);
	size_t size0 = sx_hnsw_serialized_size(h);

	size_t ndel = 0;
	while (ndel < N * 3 / 10) {
		size_t i = (size_t)(urand() * N);
		if (!live[i])
			continue;
		assert_int_equal(sx_hnsw_delete(h, i), 0);
		assert_false(sx_hnsw_contains(h, i));
		assert_int_equal(sx_hnsw_delete(h, i), SX_ENOENT);
		live[i] = 0;
		ndel++;
		/* A query equal to the deleted vector must not return it. */
		uint64_t got[K];
		size_t nf;
		assert_int_equal(sx_hnsw_search(h, base + i * D, D, K, TEST_EF, NULL, got, NULL, &nf), 0);
		for (size_t a = 0; a < nf; a++)
			assert_true(live[got[a]]);
	}
	assert_int_equal(sx_hnsw_count(h), N - ndel);
	double r1 = recall(h, SX_METRIC_L2, base, live, total, q, NQ, TEST_EF);

	for (size_t i = N; i < total; i++) {
		assert_int_equal(sx_hnsw_add(h, i, base + i * D, D), 0);
		live[i] = 1;
	}
	assert_int_equal(sx_hnsw_count(h), N);
	/* Every new element went into a freed slot: the image did not grow. */
	assert_int_equal(sx_hnsw_serialized_size(h), size0);
	double r2 = recall(h, SX_METRIC_L2, base, live, total, q, NQ, TEST_EF);
	print_message("recall before %.4f, after delete %.4f, after reuse %.4f\n", r0, r1, r2);
	assert_true(r1 >= r0 - 0.02);
	assert_true(r2 >= r0 - 0.02);
	sx_hnsw_free(h);
	free(base);
	free(q);
	free(live);
}

static void test_update(void **state)
{
	(void)state;
	make_centres(11);
	float *base = make_points(N), *q = make_points(NQ), *nv = make_points(N / 4);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 16, 100);
	add_all(h, base, NULL, N);
	/* Move a quarter of the elements to new random places. */
	for (size_t j = 0; j < N / 4; j++) {
		size_t i = j * 4 + 1;
		memcpy(base + i * D, nv + j * D, D * sizeof(float));
		assert_int_equal(sx_hnsw_add(h, i, base + i * D, D), 0);
	}
	assert_int_equal(sx_hnsw_count(h), N);
	float out[D];
	assert_int_equal(sx_hnsw_get(h, 5, out, D), 0);
	assert_memory_equal(out, base + 5 * D, sizeof out);
	uint64_t got[K];
	float dist[K];
	size_t nf;
	assert_int_equal(sx_hnsw_search(h, base + 9 * D, D, 1, 0, NULL, got, dist, &nf), 0);
	assert_int_equal(nf, 1);
	assert_int_equal(got[0], 9);
	assert_float_equal(dist[0], 0.0f, 1e-6f);
	double r = recall(h, SX_METRIC_L2, base, NULL, N, q, NQ, TEST_EF);
	print_message("recall after updates %.4f\n", r);
	assert_true(r >= 0.95);
	sx_hnsw_free(h);
	free(base);
	free(q);
	free(nv);
}

struct pred {
	uint64_t mod, rem;
	size_t calls;
};

static bool pred_cb(uint64_t label, void *arg)
{
	struct pred *p = arg;
	p->calls++;
	return label % p->mod == p->rem;
}

/* Recall under a filter, against exact search over the allowed rows. */
static double filtered_recall(const struct sx_hnsw *h, const float *base, const uint8_t *ok, const float *q,
			      const struct sx_hnsw_filter *f, uint32_t ef, size_t *n_allowed)
{
	float *sub = malloc(N * D * sizeof *sub);
	uint64_t map[N];
	uint32_t *ids = malloc(NQ * K * sizeof *ids);
	size_t m = 0;
	for (size_t i = 0; i < N; i++)
		if (ok[i]) {
			memcpy(sub + m * D, base + i * D, D * sizeof *sub);
			map[m++] = i;
		}
	*n_allowed = m;
	size_t hits = 0, expect = 0;
	if (m)
		assert_int_equal(sx_exact_search(SX_METRIC_L2, sub, m, D, q, NQ, K, ids, NULL), 0);
	for (size_t i = 0; i < NQ; i++) {
		uint64_t got[K];
		size_t nf;
		assert_int_equal(sx_hnsw_search(h, q + i * D, D, K, ef, f, got, NULL, &nf), 0);
		assert_int_equal(nf, m < K ? m : K);
		expect += nf;
		for (size_t a = 0; a < nf; a++) {
			assert_true(got[a] < N && ok[got[a]]);
			for (size_t b = 0; b < K && b < m; b++)
				hits += got[a] == map[ids[i * K + b]];
		}
	}
	free(sub);
	free(ids);
	return expect ? (double)hits / (double)expect : 1.0;
}

static void test_filter_bitmap(void **state)
{
	(void)state;
	make_centres(13);
	float *base = make_points(N), *q = make_points(NQ);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 16, 100);
	add_all(h, base, NULL, N);
	/* Elements whose labels lie past 2^32 can never pass a bitmap filter. */
	for (uint64_t i = 0; i < 50; i++)
		assert_int_equal(sx_hnsw_add(h, (1ull << 40) + i, base + i * D, D), 0);
	uint8_t *ok = calloc(N, 1);
	static const double fractions[] = {0.0, 0.005, 0.01, 0.1, 0.5, 1.0};
	for (size_t t = 0; t < SX_ARRAY_SIZE(fractions); t++) {
		roaring_bitmap_t *bm = roaring_bitmap_create();
		memset(ok, 0, N);
		for (size_t i = 0; i < N; i++)
			if (urand() < fractions[t]) {
				ok[i] = 1;
				roaring_bitmap_add(bm, (uint32_t)i);
			}
		roaring_bitmap_add(bm, N + 100000); /* no such element: ignored */
		struct sx_hnsw_filter f = {.labels = bm};
		size_t m;
		double r = filtered_recall(h, base, ok, q, &f, TEST_EF, &m);
		print_message("bitmap filter %.3f (%zu allowed): recall %.4f\n", fractions[t], m, r);
		assert_true(r >= (fractions[t] < 0.02 ? 1.0 : 0.95));
		roaring_bitmap_free(bm);
	}

	/* One allowed element: always exactly that one. */
	roaring_bitmap_t *one = roaring_bitmap_of(1, 1234);
	struct sx_hnsw_filter f1 = {.labels = one};
	uint64_t got[K];
	size_t nf;
	assert_int_equal(sx_hnsw_search(h, q, D, K, 0, &f1, got, NULL, &nf), 0);
	assert_int_equal(nf, 1);
	assert_int_equal(got[0], 1234);
	/* ... unless it is deleted. */
	assert_int_equal(sx_hnsw_delete(h, 1234), 0);
	assert_int_equal(sx_hnsw_search(h, q, D, K, 0, &f1, got, NULL, &nf), 0);
	assert_int_equal(nf, 0);
	roaring_bitmap_free(one);

	/* With the exact fallback off, a 2% filter still finds its neighbours by walking the graph. */
	assert_int_equal(sx_hnsw_set_exact_threshold(h, 0.0), 0);
	roaring_bitmap_t *bm = roaring_bitmap_create();
	memset(ok, 0, N);
	for (size_t i = 0; i < N; i++)
		if (i % 50 == 3 && i != 1234) {
			ok[i] = 1;
			roaring_bitmap_add(bm, (uint32_t)i);
		}
	struct sx_hnsw_filter f = {.labels = bm};
	size_t m;
	double r = filtered_recall(h, base, ok, q, &f, TEST_EF, &m);
	print_message("graph walk under a 2%% filter: recall %.4f\n", r);
	assert_true(r >= 0.9);
	assert_int_equal(sx_hnsw_set_exact_threshold(h, 1.5), SX_EINVAL);
	roaring_bitmap_free(bm);
	free(ok);
	sx_hnsw_free(h);
	free(base);
	free(q);
}

static void test_filter_predicate(void **state)
{
	(void)state;
	make_centres(17);
	float *base = make_points(N), *q = make_points(NQ);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 16, 100);
	add_all(h, base, NULL, N);
	uint8_t *ok = calloc(N, 1);
	static const struct {
		uint64_t mod, rem;
		double min_recall;
	} cases[] = {{3, 0, 0.95}, {2, 1, 0.95}, {100, 7, 1.0}, {N + 1, N, 1.0}, {1, 0, 0.95}};
	for (size_t t = 0; t < SX_ARRAY_SIZE(cases); t++) {
		struct pred p = {cases[t].mod, cases[t].rem, 0};
		for (size_t i = 0; i < N; i++)
			ok[i] = i % p.mod == p.rem;
		struct sx_hnsw_filter f = {.allow_cb = pred_cb, .arg = &p};
		size_t m;
		double r = filtered_recall(h, base, ok, q, &f, TEST_EF, &m);
		print_message("predicate %%%llu==%llu (%zu allowed): recall %.4f, %zu calls\n",
			      (unsigned long long)p.mod, (unsigned long long)p.rem, m, r, p.calls);
		assert_true(r >= cases[t].min_recall);
		assert_true(p.calls > 0);
	}
	/* Bitmap and predicate together: both must pass. */
	roaring_bitmap_t *bm = roaring_bitmap_create();
	for (uint32_t i = 0; i < N; i += 2)
		roaring_bitmap_add(bm, i);
	struct pred p = {3, 0, 0};
	for (size_t i = 0; i < N; i++)
		ok[i] = i % 6 == 0;
	struct sx_hnsw_filter f = {.labels = bm, .allow_cb = pred_cb, .arg = &p};
	size_t m;
	assert_true(filtered_recall(h, base, ok, q, &f, TEST_EF, &m) >= 0.95);
	roaring_bitmap_free(bm);
	free(ok);
	sx_hnsw_free(h);
	free(base);
	free(q);
}

struct chunks {
	uint8_t *p;
	size_t len, cap;
	int fail_at;
	int calls;
};

static int chunk_write(void *arg, const void *data, size_t len)
{
	struct chunks *c = arg;
	if (c->fail_at && ++c->calls == c->fail_at)
		return SX_EIO;
	if (c->len + len > c->cap)
		return SX_ENOSPC;
	memcpy(c->p + c->len, data, len);
	c->len += len;
	return 0;
}

static void same_results(const struct sx_hnsw *a, const struct sx_hnsw *b, const float *q)
{
	for (size_t i = 0; i < NQ; i++) {
		uint64_t la[K], lb[K];
		float da[K], db[K];
		size_t na, nb;
		assert_int_equal(sx_hnsw_search(a, q + i * D, D, K, 0, NULL, la, da, &na), 0);
		assert_int_equal(sx_hnsw_search(b, q + i * D, D, K, 0, NULL, lb, db, &nb), 0);
		assert_int_equal(na, nb);
		assert_memory_equal(la, lb, na * sizeof *la);
		assert_memory_equal(da, db, na * sizeof *da);
	}
}

static void test_save_load(void **state)
{
	(void)state;
	make_centres(19);
	float *base = make_points(N), *q = make_points(NQ);
	struct sx_hnsw *h = new_index(SX_METRIC_COSINE, 12, 80);
	add_all(h, base, NULL, N);
	for (uint64_t i = 0; i < N; i += 7)
		assert_int_equal(sx_hnsw_delete(h, i), 0);

	void *buf;
	size_t len;
	assert_int_equal(sx_hnsw_save_buf(h, &buf, &len), 0);
	assert_int_equal(len, sx_hnsw_serialized_size(h));
	struct chunks c = {.p = malloc(len), .cap = len};
	assert_int_equal(sx_hnsw_save(h, chunk_write, &c), 0);
	assert_int_equal(c.len, len);
	assert_memory_equal(c.p, buf, len);
	c.len = 0;
	c.fail_at = 3;
	assert_int_equal(sx_hnsw_save(h, chunk_write, &c), SX_EIO);

	struct sx_hnsw *g = sx_hnsw_load(buf, len);
	assert_non_null(g);
	assert_int_equal(sx_hnsw_count(g), sx_hnsw_count(h));
	assert_int_equal(sx_hnsw_dim(g), D);
	assert_int_equal(sx_hnsw_metric(g), SX_METRIC_COSINE);
	assert_false(sx_hnsw_contains(g, 7));
	assert_true(sx_hnsw_contains(g, 8));
	same_results(h, g, q);
	/* Both continue identically: deleted slots are reused after a load too. */
	for (uint64_t i = 0; i < 100; i++) {
		assert_int_equal(sx_hnsw_add(h, N + i, q + i * D, D), 0);
		assert_int_equal(sx_hnsw_add(g, N + i, q + i * D, D), 0);
	}
	assert_int_equal(sx_hnsw_serialized_size(g), len);
	same_results(h, g, q);

	/* An empty index round-trips too. */
	struct sx_hnsw *e = new_index(SX_METRIC_L2, 8, 10);
	void *ebuf;
	size_t elen;
	assert_int_equal(sx_hnsw_save_buf(e, &ebuf, &elen), 0);
	struct sx_hnsw *e2 = sx_hnsw_load(ebuf, elen);
	assert_non_null(e2);
	assert_int_equal(sx_hnsw_count(e2), 0);
	assert_int_equal(sx_hnsw_add(e2, 1, q, D), 0);
	assert_int_equal(sx_hnsw_count(e2), 1);
	sx_hnsw_free(e);
	sx_hnsw_free(e2);
	free(ebuf);

	free(c.p);
	free(buf);
	sx_hnsw_free(g);
	sx_hnsw_free(h);
	free(base);
	free(q);
}

static void expect_corrupt(const void *buf, size_t len)
{
	sx_diag_clear();
	struct sx_hnsw *g = sx_hnsw_load(buf, len);
	assert_null(g);
	assert_int_equal(sx_diag_last_code(), SX_ECORRUPT);
}

/* Re-seals a modified image so that only the structural checks can catch it. */
static void reseal(uint8_t *p, size_t len)
{
	uint64_t c = sx__hnsw_checksum(p, len - 8);
	memcpy(p + len - 8, &c, 8);
}

static void test_corrupt(void **state)
{
	(void)state;
	make_centres(23);
	enum { n = 1500 };
	float *base = make_points(n);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 8, 40);
	add_all(h, base, NULL, n);
	assert_int_equal(sx_hnsw_delete(h, 3), 0);
	uint8_t *buf;
	size_t len;
	assert_int_equal(sx_hnsw_save_buf(h, (void **)&buf, &len), 0);
	uint8_t *m = malloc(len);

	/* Any flipped byte. */
	for (size_t off = 0; off < len; off += 1 + off / 8) {
		memcpy(m, buf, len);
		m[off] ^= 0x5a;
		sx_diag_clear();
		assert_null(sx_hnsw_load(m, len));
		int rc = sx_diag_last_code();
		assert_true(rc == SX_ECORRUPT || (off >= 8 && off < 12 && rc == SX_EPROTO));
	}
	/* Any truncation. */
	static const size_t cuts[] = {0, 1, 8, 95, 96, 103, 104, 1000};
	for (size_t i = 0; i < SX_ARRAY_SIZE(cuts); i++)
		expect_corrupt(buf, cuts[i]);
	expect_corrupt(buf, len / 2);
	expect_corrupt(buf, len - 1);
	expect_corrupt(NULL, 0);

	/* Structurally wrong fields behind a valid checksum. */
	uint32_t block_size;
	memcpy(&block_size, buf + 32, 4);
	const size_t hdr = 96, off_links = D * 4 + 8;
	uint8_t *blk5 = m + hdr + 5 * block_size;
	uint32_t v;

	memcpy(m, buf, len);
	v = n + 7; /* link id out of range */
	memcpy(blk5 + off_links + 4, &v, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	v = 5; /* self link */
	memcpy(blk5 + off_links + 4, &v, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	v = 2 * 8 + 1; /* more level-0 links than 2M */
	memcpy(blk5 + off_links, &v, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	float nanv = NAN; /* NaN in a vector */
	memcpy(blk5 + 4, &nanv, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	memcpy(blk5 + D * 4, buf + hdr + 6 * block_size + D * 4, 8); /* duplicate label */
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	m[hdr + (size_t)n * block_size + 5] = 40; /* level above the top */
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	m[hdr + (size_t)n * block_size + n + 5] = 2; /* deleted flag not 0/1 */
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	uint64_t big = 1ull << 40; /* slot count beyond the bytes */
	memcpy(m + 40, &big, 8);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	v = 1000; /* dimension */
	memcpy(m + 16, &v, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	memcpy(m, buf, len);
	v = n; /* entry point out of range */
	memcpy(m + 56, &v, 4);
	reseal(m, len);
	expect_corrupt(m, len);

	/* The untouched image still loads. */
	memcpy(m, buf, len);
	struct sx_hnsw *g = sx_hnsw_load(m, len);
	assert_non_null(g);
	assert_int_equal(sx_hnsw_count(g), n - 1);
	sx_hnsw_free(g);

	free(m);
	free(buf);
	sx_hnsw_free(h);
	free(base);
}

static void test_batch_threads(void **state)
{
	(void)state;
	make_centres(29);
	float *base = make_points(N), *q = make_points(NQ);
	uint64_t *labels = malloc(N * sizeof *labels);
	for (size_t i = 0; i < N; i++)
		labels[i] = i;
	struct sx_hnsw *h1 = new_index(SX_METRIC_L2, 16, 100);
	struct sx_hnsw *h2 = new_index(SX_METRIC_L2, 16, 100);
	assert_int_equal(sx_hnsw_add_batch(h1, labels, base, N, D, 1), 0);
	assert_int_equal(sx_hnsw_add_batch(h2, labels, base, N, D, 2), 0);
	assert_int_equal(sx_hnsw_count(h2), N);
	double r1 = recall(h1, SX_METRIC_L2, base, NULL, N, q, NQ, TEST_EF);
	double r2 = recall(h2, SX_METRIC_L2, base, NULL, N, q, NQ, TEST_EF);
	print_message("batch recall: 1 thread %.4f, 2 threads %.4f\n", r1, r2);
	assert_true(r1 >= 0.95);
	assert_true(r2 >= 0.95);
	assert_true(fabs(r1 - r2) <= 0.02);

	/* A second batch into a populated index, with duplicate labels (later wins)
	 * and updates of present labels, on 4 threads. */
	float *more = make_points(1000);
	uint64_t ml[1000];
	for (size_t i = 0; i < 1000; i++)
		ml[i] = i < 500 ? N + i : (i < 900 ? N + i - 500 : i - 900);
	assert_int_equal(sx_hnsw_add_batch(h2, ml, more, 1000, D, 4), 0);
	assert_int_equal(sx_hnsw_count(h2), N + 500);
	float out[D];
	assert_int_equal(sx_hnsw_get(h2, N + 10, out, D), 0);
	assert_memory_equal(out, more + 510 * D, sizeof out);
	assert_int_equal(sx_hnsw_get(h2, N + 450, out, D), 0);
	assert_memory_equal(out, more + 450 * D, sizeof out);
	assert_int_equal(sx_hnsw_get(h2, 50, out, D), 0);
	assert_memory_equal(out, more + 950 * D, sizeof out);

	/* A batch with one bad vector inserts nothing. */
	more[3 * D + 5] = INFINITY;
	uint64_t nl[10] = {90000, 90001, 90002, 90003, 90004, 90005, 90006, 90007, 90008, 90009};
	assert_int_equal(sx_hnsw_add_batch(h2, nl, more, 10, D, 2), SX_EINVAL);
	assert_false(sx_hnsw_contains(h2, 90000));
	assert_int_equal(sx_hnsw_count(h2), N + 500);
	assert_int_equal(sx_hnsw_add_batch(h2, nl, more, 10, D + 1, 2), SX_EINVAL);

	free(more);
	free(labels);
	sx_hnsw_free(h1);
	sx_hnsw_free(h2);
	free(base);
	free(q);
}

static void test_edge_cases(void **state)
{
	(void)state;
	struct sx_hnsw_params p;
	sx_hnsw_params_init(&p, SX_METRIC_L2, D);
	p.M = 1;
	assert_null(sx_hnsw_new(&p));
	assert_int_equal(sx_diag_last_code(), SX_EINVAL);
	sx_hnsw_params_init(&p, 7, D);
	assert_null(sx_hnsw_new(&p));
	sx_hnsw_params_init(&p, SX_METRIC_L2, 0);
	assert_null(sx_hnsw_new(&p));
	assert_null(sx_hnsw_new(NULL));

	make_centres(31);
	float *v = make_points(50);
	struct sx_hnsw *h = new_index(SX_METRIC_L2, 4, 20);
	uint64_t got[100];
	float dist[100];
	size_t nf = 99;
	/* empty index */
	assert_int_equal(sx_hnsw_search(h, v, D, 5, 0, NULL, got, dist, &nf), 0);
	assert_int_equal(nf, 0);
	assert_int_equal(sx_hnsw_search(h, v, D, 0, 0, NULL, got, dist, &nf), SX_EINVAL);
	assert_int_equal(sx_hnsw_delete(h, 1), SX_ENOENT);
	float out[D];
	assert_int_equal(sx_hnsw_get(h, 1, out, D), SX_ENOENT);

	/* labels at the ends of the 64-bit range */
	assert_int_equal(sx_hnsw_add(h, 0, v, D), 0);
	assert_int_equal(sx_hnsw_add(h, UINT64_MAX, v + D, D), 0);
	assert_int_equal(sx_hnsw_search(h, v + D, D, 1, 0, NULL, got, dist, &nf), 0);
	assert_int_equal(nf, 1);
	assert_true(got[0] == UINT64_MAX);

	/* k larger than the count */
	for (uint64_t i = 2; i < 20; i++)
		assert_int_equal(sx_hnsw_add(h, i, v + i * D, D), 0);
	assert_int_equal(sx_hnsw_search(h, v, D, 100, 0, NULL, got, dist, &nf), 0);
	assert_int_equal(nf, 20);
	for (size_t i = 1; i < nf; i++)
		assert_true(dist[i] >= dist[i - 1]);

	/* dimension mismatch */
	assert_int_equal(sx_hnsw_add(h, 99, v, D - 1), SX_EINVAL);
	assert_int_equal(sx_hnsw_search(h, v, D + 1, 5, 0, NULL, got, NULL, &nf), SX_EINVAL);
	assert_int_equal(sx_hnsw_get(h, 2, out, D - 1), SX_EINVAL);

	/* NaN / Inf rejected, never inserted */
	float bad[D];
	memcpy(bad, v, sizeof bad);
	bad[7] = NAN;
	assert_int_equal(sx_hnsw_add(h, 500, bad, D), SX_EINVAL);
	assert_false(sx_hnsw_contains(h, 500));
	assert_int_equal(sx_hnsw_search(h, bad, D, 5, 0, NULL, got, NULL, &nf), SX_EINVAL);
	bad[7] = -INFINITY;
	assert_int_equal(sx_hnsw_add(h, 3, bad, D), SX_EINVAL);
	assert_int_equal(sx_hnsw_get(h, 3, out, D), 0);
	assert_memory_equal(out, v + 3 * D, sizeof out);
	assert_int_equal(sx_hnsw_count(h), 20);

	/* duplicate label = update */
	assert_int_equal(sx_hnsw_add(h, 4, v + 30 * D, D), 0);
	assert_int_equal(sx_hnsw_count(h), 20);
	assert_int_equal(sx_hnsw_get(h, 4, out, D), 0);
	assert_memory_equal(out, v + 30 * D, sizeof out);

	/* delete everything, search, re-add */
	assert_int_equal(sx_hnsw_delete(h, 0), 0);
	assert_int_equal(sx_hnsw_delete(h, UINT64_MAX), 0);
	for (uint64_t i = 2; i < 20; i++)
		assert_int_equal(sx_hnsw_delete(h, i), 0);
	assert_int_equal(sx_hnsw_count(h), 0);
	assert_int_equal(sx_hnsw_search(h, v, D, 5, 0, NULL, got, NULL, &nf), 0);
	assert_int_equal(nf, 0);
	assert_int_equal(sx_hnsw_add(h, 4, v + 4 * D, D), 0);
	assert_int_equal(sx_hnsw_search(h, v, D, 5, 0, NULL, got, NULL, &nf), 0);
	assert_int_equal(nf, 1);
	assert_int_equal(got[0], 4);
	assert_int_equal(sx_hnsw_set_ef(h, 0), SX_EINVAL);
	sx_hnsw_free(h);

	/* cosine refuses zero vectors */
	h = new_index(SX_METRIC_COSINE, 4, 20);
	float zero[D] = {0};
	assert_int_equal(sx_hnsw_add(h, 1, zero, D), SX_EINVAL);
	assert_int_equal(sx_hnsw_count(h), 0);
	assert_int_equal(sx_hnsw_add(h, 1, v, D), 0);
	assert_int_equal(sx_hnsw_search(h, zero, D, 1, 0, NULL, got, NULL, &nf), SX_EINVAL);
	sx_hnsw_free(h);
	sx_hnsw_free(NULL);
	free(v);
}

/* The reference itself: sx_exact_search agrees with a direct double loop. */
static void test_exact(void **state)
{
	(void)state;
	make_centres(37);
	enum { n = 700, nq = 70 };
	float *base = make_points(n), *q = make_points(nq);
	for (int metric = 0; metric < SX_METRIC_COUNT; metric++) {
		uint32_t ids[nq * K];
		float dist[nq * K];
		assert_int_equal(sx_exact_search(metric, base, n, D, q, nq, K, ids, dist), 0);
		for (size_t i = 0; i < nq; i++) {
			for (size_t a = 0; a < K; a++) {
				const float *x = base + (size_t)ids[i * K + a] * D;
				double dot = 0, nx = 0, nqq = 0, l2 = 0;
				for (int j = 0; j < D; j++) {
					dot += (double)x[j] * q[i * D + j];
					nx += (double)x[j] * x[j];
					nqq += (double)q[i * D + j] * q[i * D + j];
					l2 += ((double)x[j] - q[i * D + j]) * ((double)x[j] - q[i * D + j]);
				}
				double want = metric == SX_METRIC_L2 ? l2 : metric == SX_METRIC_IP ? 1 - dot
												   : 1 - dot / sqrt(nx * nqq);
				assert_true(fabs(dist[i * K + a] - want) <= 1e-3 * (1 + fabs(want)));
				if (a)
					assert_true(dist[i * K + a] >= dist[i * K + a - 1]);
			}
			/* nothing outside the top K is closer than the K-th */
			size_t closer = 0;
			for (size_t r = 0; r < n; r++) {
				float d = metric == SX_METRIC_L2 ? sx_vec_l2sq(q + i * D, base + r * D, D)
				        : metric == SX_METRIC_IP ? 1 - sx_vec_dot(q + i * D, base + r * D, D)
				                                 : 1 - sx_vec_cosine(q + i * D, base + r * D, D);
				closer += d < dist[i * K + K - 1] - 1e-3f * (1 + fabsf(d));
			}
			assert_true(closer <= K - 1);
		}
	}
	uint32_t ids[2 * K];
	float dist[2 * K];
	assert_int_equal(sx_exact_search(SX_METRIC_L2, base, 3, D, q, 2, K, ids, dist), 0);
	assert_int_equal(ids[3], UINT32_MAX);
	assert_true(isinf(dist[K + 5]));
	assert_int_equal(sx_exact_search(SX_METRIC_L2, base, n, D, q, 1, 0, ids, dist), SX_EINVAL);
	q[3] = NAN;
	assert_int_equal(sx_exact_search(SX_METRIC_L2, base, n, D, q, 1, K, ids, dist), SX_EINVAL);
	free(base);
	free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact),
		cmocka_unit_test(test_recall_l2),
		cmocka_unit_test(test_recall_ip),
		cmocka_unit_test(test_recall_cosine),
		cmocka_unit_test(test_delete_reuse),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_filter_bitmap),
		cmocka_unit_test(test_filter_predicate),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_batch_threads),
		cmocka_unit_test(test_edge_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
