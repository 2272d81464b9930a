#include "core/math/hnsw.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

#define NO_ID UINT32_MAX
#define MAX_LEVEL 31
#define MAX_DIM 65536u
#define MAX_M 128u
#define LOCK_STRIPES 4096u
#define FORMAT_VERSION 1u
#define HEADER_SIZE 96u
#define PREDICATE_SAMPLE 256u

/* (distance, id) as one integer: the distance's bits made order-preserving in the
 * high half, the id in the low half, so that "nearer, then lower id" is one
 * unsigned compare in the heaps. */
struct dist_id {
	uint64_t key;
};

static inline struct dist_id di(float d, uint32_t id)
{
	d += 0.0f; /* -0 -> +0, so that equal distances tie on the id */
	uint32_t u;
	memcpy(&u, &d, 4);
	u ^= (uint32_t)((int32_t)u >> 31) | 0x80000000u;
	return (struct dist_id){(uint64_t)u << 32 | id};
}

static inline uint32_t di_id(struct dist_id x) { return (uint32_t)x.key; }

static inline float di_d(struct dist_id x)
{
	uint32_t u = (uint32_t)(x.key >> 32);
	u = (u & 0x80000000u) ? u ^ 0x80000000u : ~u;
	float d;
	memcpy(&d, &u, 4);
	return d;
}

/* label -> slot id; open addressing with linear probing and backward-shift
 * deletion, so there are no tombstones to clean up. */
struct labelmap {
	uint64_t *keys;
	uint32_t *vals; /* NO_ID = empty */
	size_t mask;
	size_t n;
};

/* Per-search working memory, pooled so that concurrent searches each get their own. */
struct scratch {
	uint16_t *visited;
	size_t visited_cap;
	uint16_t tag;
	struct dist_id *cand, *res;
	size_t cand_cap, res_cap;
	float *qbuf;
	struct scratch *next;
};

struct sx_hnsw {
	int metric;
	uint32_t dim, M, M0, efc, ef;
	double exact_threshold;
	double level_mult;
	uint64_t rng;
	sx_vec_dist_fn dist;
	sx_vec_dist_batch_fn distb;

	/* Block layout: vector (dim floats) | label (u64) | n0 (u32) | links0 (M0 u32). */
	size_t block_size, off_label, off_links;
	char *blocks;
	uint8_t *levels;
	uint8_t *deleted;
	uint32_t **upper; /* per slot with level > 0: level * (1 + M) u32, [count, links...] per level */
	size_t cap, count, live;

	uint32_t entry;
	int maxlevel;

	struct labelmap map;
	uint32_t *freelist;
	size_t nfree, freecap;

	pthread_mutex_t pool_lock;
	struct scratch *pool;

	/* Only used while add_batch runs worker threads. */
	pthread_mutex_t *stripes;
	pthread_mutex_t ep_lock;
};

/* ---- small helpers ---- */

static inline float *vec_of(const struct sx_hnsw *h, uint32_t id)
{
	return (float *)(h->blocks + (size_t)id * h->block_size);
}

static inline uint64_t label_of(const struct sx_hnsw *h, uint32_t id)
{
	uint64_t l;
	memcpy(&l, h->blocks + (size_t)id * h->block_size + h->off_label, 8);
	return l;
}

static inline void set_label(struct sx_hnsw *h, uint32_t id, uint64_t l)
{
	memcpy(h->blocks + (size_t)id * h->block_size + h->off_label, &l, 8);
}

/* [0] = count, [1..] = links */
static inline uint32_t *links_of(const struct sx_hnsw *h, uint32_t id, int lev)
{
	if (lev == 0)
		return (uint32_t *)(h->blocks + (size_t)id * h->block_size + h->off_links);
	return h->upper[id] + (size_t)(lev - 1) * (1 + h->M);
}

static inline uint32_t max_links(const struct sx_hnsw *h, int lev) { return lev == 0 ? h->M0 : h->M; }

static inline pthread_mutex_t *stripe(const struct sx_hnsw *h, uint32_t id)
{
	return &h->stripes[id & (LOCK_STRIPES - 1)];
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int draw_level(struct sx_hnsw *h)
{
	double u = ((double)(splitmix(&h->rng) >> 11) + 1.0) * 0x1.0p-53;
	double l = -log(u) * h->level_mult;
	return l >= MAX_LEVEL ? MAX_LEVEL : (int)l;
}

/* ---- label map ---- */

static inline size_t lm_slot(const struct labelmap *m, uint64_t key)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & m->mask;
}

static int lm_init(struct labelmap *m, size_t want)
{
	size_t cap = 16;
	while (cap < want * 2)
		cap <<= 1;
	m->keys = malloc(cap * sizeof *m->keys);
	m->vals = malloc(cap * sizeof *m->vals);
	if (!m->keys || !m->vals) {
		free(m->keys);
		free(m->vals);
		m->keys = NULL;
		m->vals = NULL;
		return SX_ENOMEM;
	}
	memset(m->vals, 0xff, cap * sizeof *m->vals);
	m->mask = cap - 1;
	m->n = 0;
	return 0;
}

static void lm_close(struct labelmap *m)
{
	free(m->keys);
	free(m->vals);
	m->keys = NULL;
	m->vals = NULL;
}

static uint32_t lm_get(const struct labelmap *m, uint64_t key)
{
	for (size_t i = lm_slot(m, key);; i = (i + 1) & m->mask) {
		if (m->vals[i] == NO_ID)
			return NO_ID;
		if (m->keys[i] == key)
			return m->vals[i];
	}
}

static void lm_put_nogrow(struct labelmap *m, uint64_t key, uint32_t val)
{
	for (size_t i = lm_slot(m, key);; i = (i + 1) & m->mask) {
		if (m->vals[i] == NO_ID) {
			m->keys[i] = key;
			m->vals[i] = val;
			m->n++;
			return;
		}
		if (m->keys[i] == key) {
			m->vals[i] = val;
			return;
		}
	}
}

/* Room for `extra` more keys at load <= 1/2. */
static int lm_reserve(struct labelmap *m, size_t extra)
{
	if ((m->n + extra) * 2 <= m->mask + 1)
		return 0;
	struct labelmap nm;
	if (lm_init(&nm, m->n + extra) < 0)
		return SX_ENOMEM;
	for (size_t i = 0; i <= m->mask; i++)
		if (m->vals[i] != NO_ID)
			lm_put_nogrow(&nm, m->keys[i], m->vals[i]);
	lm_close(m);
	*m = nm;
	return 0;
}

static void lm_del(struct labelmap *m, uint64_t key)
{
	size_t i = lm_slot(m, key);
	for (;; i = (i + 1) & m->mask) {
		if (m->vals[i] == NO_ID)
			return;
		if (m->keys[i] == key)
			break;
	}
	/* Shift later members of the probe run back so every key stays reachable. */
	size_t j = i;
	for (;;) {
		j = (j + 1) & m->mask;
		if (m->vals[j] == NO_ID)
			break;
		size_t home = lm_slot(m, m->keys[j]);
		if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			i = j;
		}
	}
	m->vals[i] = NO_ID;
	m->n--;
}

/* ---- heaps of (distance, id) ---- */

static inline bool dless(struct dist_id a, struct dist_id b) { return a.key < b.key; }

/* max-heap: worst on top */
static inline void maxh_push(struct dist_id *hp, size_t *n, struct dist_id x)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!dless(hp[p], x))
			break;
		hp[i] = hp[p];
		i = p;
	}
	hp[i] = x;
}

static inline void maxh_pop(struct dist_id *hp, size_t *n)
{
	struct dist_id x = hp[--(*n)];
	size_t i = 0, m = *n;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= m)
			break;
		if (c + 1 < m && dless(hp[c], hp[c + 1]))
			c++;
		if (!dless(x, hp[c]))
			break;
		hp[i] = hp[c];
		i = c;
	}
	if (m)
		hp[i] = x;
}

/* min-heap: best on top */
static inline void minh_push(struct dist_id *hp, size_t *n, struct dist_id x)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!dless(x, hp[p]))
			break;
		hp[i] = hp[p];
		i = p;
	}
	hp[i] = x;
}

static inline void minh_pop(struct dist_id *hp, size_t *n)
{
	struct dist_id x = hp[--(*n)];
	size_t i = 0, m = *n;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= m)
			break;
		if (c + 1 < m && dless(hp[c + 1], hp[c]))
			c++;
		if (!dless(hp[c], x))
			break;
		hp[i] = hp[c];
		i = c;
	}
	if (m)
		hp[i] = x;
}

/* Sorts a max-heap of n into ascending order in place. */
static void maxh_sort(struct dist_id *hp, size_t n)
{
	while (n > 1) {
		struct dist_id top = hp[0];
		maxh_pop(hp, &n);
		hp[n] = top;
	}
}

static void insertion_sort(struct dist_id *a, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct dist_id x = a[i];
		size_t j = i;
		for (; j > 0 && dless(x, a[j - 1]); j--)
			a[j] = a[j - 1];
		a[j] = x;
	}
}

/* ---- scratch pool ---- */

static void scratch_free(struct scratch *s)
{
	if (!s)
		return;
	free(s->visited);
	free(s->cand);
	free(s->res);
	free(s->qbuf);
	free(s);
}

static int grow(struct dist_id **a, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 256;
	while (nc < need)
		nc *= 2;
	struct dist_id *p = realloc(*a, nc * sizeof *p);
	if (!p)
		return SX_ENOMEM;
	*a = p;
	*cap = nc;
	return 0;
}

static void next_tag(struct scratch *s)
{
	if (++s->tag == 0) {
		memset(s->visited, 0, s->visited_cap * sizeof *s->visited);
		s->tag = 1;
	}
}

static struct scratch *scratch_get(const struct sx_hnsw *hc, size_t ef)
{
	struct sx_hnsw *h = (struct sx_hnsw *)hc; /* the pool is internally locked */
	pthread_mutex_lock(&h->pool_lock);
	struct scratch *s = h->pool;
	if (s)
		h->pool = s->next;
	pthread_mutex_unlock(&h->pool_lock);
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s || !(s->qbuf = malloc((size_t)h->dim * sizeof(float)))) {
			free(s);
			return NULL;
		}
	}
	if (s->visited_cap < h->cap) {
		free(s->visited);
		s->visited = calloc(h->cap, sizeof *s->visited);
		s->visited_cap = s->visited ? h->cap : 0;
		s->tag = 0;
	}
	if (!s->visited || grow(&s->res, &s->res_cap, ef + 2) < 0 || grow(&s->cand, &s->cand_cap, ef + 2) < 0) {
		scratch_free(s);
		return NULL;
	}
	next_tag(s);
	return s;
}

static void scratch_put(const struct sx_hnsw *hc, struct scratch *s)
{
	struct sx_hnsw *h = (struct sx_hnsw *)hc;
	pthread_mutex_lock(&h->pool_lock);
	s->next = h->pool;
	h->pool = s;
	pthread_mutex_unlock(&h->pool_lock);
}

static void pool_clear(struct sx_hnsw *h)
{
	while (h->pool) {
		struct scratch *s = h->pool;
		h->pool = s->next;
		scratch_free(s);
	}
}

/* ---- creation, growth ---- */

void sx_hnsw_params_init(struct sx_hnsw_params *p, int metric, uint32_t dim)
{
	memset(p, 0, sizeof *p);
	p->metric = metric;
	p->dim = dim;
	p->M = 16;
	p->ef_construction = 200;
	p->ef_search = 64;
	p->seed = 42;
	p->exact_threshold = 0.02;
	p->capacity = 1024;
}

static void layout(struct sx_hnsw *h)
{
	h->M0 = 2 * h->M;
	h->off_label = ((size_t)h->dim * 4 + 7) & ~(size_t)7;
	h->off_links = h->off_label + 8;
	/* Whole cache lines, so every vector starts on a line boundary. */
	h->block_size = (h->off_links + 4 + (size_t)h->M0 * 4 + 63) & ~(size_t)63;
	h->level_mult = 1.0 / log((double)h->M);
}

static struct sx_hnsw *alloc_index(int metric, uint32_t dim, uint32_t M)
{
	struct sx_hnsw *h = calloc(1, sizeof *h);
	if (!h) {
		sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		return NULL;
	}
	h->metric = metric;
	h->dim = dim;
	h->M = M;
	h->dist = sx_vec_dist_kernel(metric);
	h->distb = sx_vec_dist_batch_kernel(metric);
	h->entry = NO_ID;
	h->maxlevel = -1;
	layout(h);
	pthread_mutex_init(&h->pool_lock, NULL);
	pthread_mutex_init(&h->ep_lock, NULL);
	return h;
}

static int reserve(struct sx_hnsw *h, size_t need)
{
	if (need <= h->cap)
		return 0;
	if (need > (size_t)UINT32_MAX - 1)
		return sx_diag_set(SX_E2BIG, "hnsw: more than 2^32 - 2 slots");
	size_t nc = h->cap < 64 ? 64 : h->cap;
	while (nc < need)
		nc = nc * 2 > (size_t)UINT32_MAX - 1 ? (size_t)UINT32_MAX - 1 : nc * 2;
	void *nb = NULL;
	if (posix_memalign(&nb, 64, nc * h->block_size) != 0)
		return sx_diag_set(SX_ENOMEM, "hnsw: cannot allocate %zu slots", nc);
	uint8_t *nl = realloc(h->levels, nc);
	if (nl)
		h->levels = nl;
	uint8_t *nd = nl ? realloc(h->deleted, nc) : NULL;
	if (nd)
		h->deleted = nd;
	uint32_t **nu = nd ? realloc(h->upper, nc * sizeof *nu) : NULL;
	if (!nu) {
		free(nb);
		return sx_diag_set(SX_ENOMEM, "hnsw: cannot allocate %zu slots", nc);
	}
	h->upper = nu;
	if (h->count)
		memcpy(nb, h->blocks, h->count * h->block_size);
	free(h->blocks);
	h->blocks = nb;
	h->cap = nc;
	return 0;
}

static int check_params(const struct sx_hnsw_params *p)
{
	if (!p)
		return sx_diag_set(SX_EINVAL, "hnsw: no parameters");
	if (p->metric < 0 || p->metric >= SX_METRIC_COUNT)
		return sx_diag_set(SX_EINVAL, "hnsw: unknown metric %d", p->metric);
	if (p->dim < 1 || p->dim > MAX_DIM)
		return sx_diag_set(SX_EINVAL, "hnsw: dim must be in 1..%u", MAX_DIM);
	if (p->M < 2 || p->M > MAX_M)
		return sx_diag_set(SX_EINVAL, "hnsw: M must be in 2..%u", MAX_M);
	if (p->ef_construction < 1 || p->ef_search < 1)
		return sx_diag_set(SX_EINVAL, "hnsw: ef_construction and ef_search must be >= 1");
	if (!(p->exact_threshold >= 0.0 && p->exact_threshold <= 1.0))
		return sx_diag_set(SX_EINVAL, "hnsw: exact_threshold must be in 0..1");
	return 0;
}

struct sx_hnsw *sx_hnsw_new(const struct sx_hnsw_params *p)
{
	if (check_params(p) < 0)
		return NULL;
	struct sx_hnsw *h = alloc_index(p->metric, p->dim, p->M);
	if (!h)
		return NULL;
	h->efc = p->ef_construction;
	h->ef = p->ef_search;
	h->exact_threshold = p->exact_threshold;
	h->rng = p->seed;
	size_t cap = p->capacity ? p->capacity : 1;
	if (reserve(h, cap) < 0 || lm_init(&h->map, cap) < 0) {
		sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		sx_hnsw_free(h);
		return NULL;
	}
	return h;
}

void sx_hnsw_free(struct sx_hnsw *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->count; i++)
		if (h->levels[i])
			free(h->upper[i]);
	free(h->blocks);
	free(h->levels);
	free(h->deleted);
	free(h->upper);
	free(h->freelist);
	lm_close(&h->map);
	pool_clear(h);
	pthread_mutex_destroy(&h->pool_lock);
	pthread_mutex_destroy(&h->ep_lock);
	free(h);
}

/* ---- graph search ---- */

enum { MODE_QUERY, MODE_BUILD, MODE_BUILD_LOCKED };

static inline bool allowed(const struct sx_hnsw *h, uint32_t id, const struct sx_hnsw_filter *f)
{
	if (h->deleted[id])
		return false;
	if (!f)
		return true;
	uint64_t l = label_of(h, id);
	if (f->labels && (l > UINT32_MAX || !roaring_bitmap_contains(f->labels, (uint32_t)l)))
		return false;
	if (f->allow_cb && !f->allow_cb(l, f->arg))
		return false;
	return true;
}

static inline void prefetch_vec(const struct sx_hnsw *h, uint32_t id)
{
	const char *p = (const char *)vec_of(h, id);
	size_t lines = ((size_t)h->dim * 4 + 63) / 64;
	if (lines > 8)
		lines = 8;
	for (size_t i = 0; i < lines; i++)
		__builtin_prefetch(p + i * 64);
}

/* Reads node id's links at lev into buf ([0] = count). Under add_batch's workers
 * another thread may be rewriting them, hence the copy under the stripe lock. */
static inline const uint32_t *read_links(const struct sx_hnsw *h, uint32_t id, int lev, int mode,
					 uint32_t *buf)
{
	const uint32_t *l = links_of(h, id, lev);
	if (mode != MODE_BUILD_LOCKED)
		return l;
	pthread_mutex_lock(stripe(h, id));
	memcpy(buf, l, (1 + (size_t)l[0]) * 4);
	pthread_mutex_unlock(stripe(h, id));
	return buf;
}

/* Greedy walk at one upper level: returns the closest node reachable from *cur. */
static inline void greedy(const struct sx_hnsw *h, const float *q, uint32_t self, uint32_t *cur,
			  float *curd, int lev, int mode)
{
	uint32_t buf[1 + MAX_M * 2];
	bool changed = true;
	while (changed) {
		changed = false;
		const uint32_t *l = read_links(h, *cur, lev, mode, buf);
		uint32_t ids[2 * MAX_M];
		float dd[2 * MAX_M];
		uint32_t n = l[0], m = 0;
		for (uint32_t j = 1; j <= n; j++)
			if (l[j] != self)
				ids[m++] = l[j];
		h->distb(q, h->blocks, h->block_size, ids, m, h->dim, dd);
		for (uint32_t j = 0; j < m; j++) {
			if (dd[j] < *curd) {
				*curd = dd[j];
				*cur = ids[j];
				changed = true;
			}
		}
	}
}

/* Best-first search at level lev from ep. Leaves up to ef results in s->res as a
 * max-heap and returns their number. In MODE_QUERY only allowed nodes enter the
 * results, but every node is walked through. self is never visited. */
static inline __attribute__((always_inline)) size_t
search_layer(const struct sx_hnsw *h, struct scratch *s, const float *q, uint32_t self, uint32_t ep,
	     float epd, size_t ef, int lev, int mode, const struct sx_hnsw_filter *f, int *err)
{
	uint32_t buf[1 + MAX_M * 2];
	uint16_t *vis = s->visited;
	uint16_t tag = s->tag;
	size_t nres = 0, ncand = 0;
	bool filtered = mode == MODE_QUERY && (f || h->live != h->count);
	float lower = INFINITY;

	if (self != NO_ID)
		vis[self] = tag;
	vis[ep] = tag;
	minh_push(s->cand, &ncand, di(epd, ep));
	if (!filtered || allowed(h, ep, f)) {
		maxh_push(s->res, &nres, di(epd, ep));
		lower = epd;
	}
	while (ncand) {
		struct dist_id c = s->cand[0];
		if (di_d(c) > lower && (nres >= ef || !filtered))
			break;
		minh_pop(s->cand, &ncand);
		/* The next node to expand is probably the new top: start loading its links. */
		if (ncand)
			__builtin_prefetch(links_of(h, di_id(s->cand[0]), lev));
		const uint32_t *l = read_links(h, di_id(c), lev, mode, buf);
		/* Mark and collect the unvisited neighbours first, so that the memory
		 * of several vectors is in flight before the first distance needs it. */
		uint32_t todo[2 * MAX_M];
		float dd[2 * MAX_M];
		uint32_t n = l[0], m = 0;
		/* Branch-free: whether a neighbour was visited is a coin toss to the
		 * predictor. A list holds no duplicates, so this equals the branchy form. */
		for (uint32_t j = 1; j <= n; j++) {
			uint32_t nb = l[j];
			todo[m] = nb;
			m += vis[nb] != tag;
			vis[nb] = tag;
		}
		for (uint32_t j = 0; j < m; j++)
			prefetch_vec(h, todo[j]);
		h->distb(q, h->blocks, h->block_size, todo, m, h->dim, dd);
		for (uint32_t j = 0; j < m; j++) {
			uint32_t nb = todo[j];
			float d = dd[j];
			if (nres < ef || d < lower) {
				if (ncand + 1 >= s->cand_cap && grow(&s->cand, &s->cand_cap, ncand + 2) < 0) {
					*err = SX_ENOMEM;
					return nres;
				}
				minh_push(s->cand, &ncand, di(d, nb));
				if (!filtered || allowed(h, nb, f)) {
					maxh_push(s->res, &nres, di(d, nb));
					if (nres > ef)
						maxh_pop(s->res, &nres);
					lower = di_d(s->res[0]);
				}
			}
		}
	}
	return nres;
}

/* ---- insertion ---- */

/* Keeps from cand (sorted nearest first, distances to the base node) at most m
 * that are closer to the base than to any already kept: the HNSW heuristic that
 * spreads links over directions. Returns the number kept, in place. */
static size_t select_neighbors(const struct sx_hnsw *h, struct dist_id *cand, size_t n, size_t m)
{
	size_t kept = 0;
	for (size_t i = 0; i < n && kept < m; i++) {
		bool good = true;
		const float *v = vec_of(h, di_id(cand[i]));
		for (size_t j = 0; j < kept; j++) {
			if (h->dist(v, vec_of(h, di_id(cand[j])), h->dim) < di_d(cand[i])) {
				good = false;
				break;
			}
		}
		if (good)
			cand[kept++] = cand[i];
	}
	return kept;
}

/* Adds the link a -> b at lev, pruning a's list with the heuristic when full. */
static void add_link(struct sx_hnsw *h, uint32_t a, uint32_t b, int lev, int mode)
{
	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_lock(stripe(h, a));
	uint32_t *l = links_of(h, a, lev);
	uint32_t n = l[0], mx = max_links(h, lev);
	bool present = false;
	for (uint32_t j = 1; j <= n; j++)
		present |= l[j] == b;
	if (!present) {
		if (n < mx) {
			l[n + 1] = b;
			l[0] = n + 1;
		} else {
			struct dist_id c[2 * MAX_M + 1];
			const float *va = vec_of(h, a);
			for (uint32_t j = 0; j < n; j++)
				c[j] = di(h->dist(va, vec_of(h, l[j + 1]), h->dim), l[j + 1]);
			c[n] = di(h->dist(va, vec_of(h, b), h->dim), b);
			insertion_sort(c, n + 1);
			size_t k = select_neighbors(h, c, n + 1, mx);
			for (size_t j = 0; j < k; j++)
				l[j + 1] = di_id(c[j]);
			l[0] = (uint32_t)k;
		}
	}
	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_unlock(stripe(h, a));
}

/* Links slot id (vector, label and level already set) into the graph. Its own old
 * links, if any, are only read as a fallback starting point, then overwritten. */
static int link_node(struct sx_hnsw *h, uint32_t id, int mode)
{
	int level = h->levels[id];
	const float *q = vec_of(h, id);

	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_lock(&h->ep_lock);
	uint32_t ep = h->entry;
	int top = h->maxlevel;
	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_unlock(&h->ep_lock);

	if (ep == id) {
		/* Relinking the entry point: start from one of its own neighbours. */
		ep = NO_ID;
		for (int l = top; l >= 0 && ep == NO_ID; l--) {
			uint32_t *ll = links_of(h, id, l);
			if (ll[0]) {
				ep = ll[1];
				top = l;
			}
		}
	}
	if (ep == NO_ID) {
		for (int l = 0; l <= level; l++)
			links_of(h, id, l)[0] = 0;
		goto entry;
	}

	struct scratch *s = scratch_get(h, h->efc);
	if (!s)
		return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
	float epd = h->dist(q, vec_of(h, ep), h->dim);
	for (int l = top; l > level; l--)
		greedy(h, q, id, &ep, &epd, l, mode);
	int err = 0;
	for (int l = level < top ? level : top; l >= 0; l--) {
		if (l < (level < top ? level : top))
			next_tag(s);
		size_t nres = search_layer(h, s, q, id, ep, epd, h->efc, l, mode, NULL, &err);
		if (err) {
			scratch_put(h, s);
			return sx_diag_set(err, "hnsw: out of memory");
		}
		maxh_sort(s->res, nres);
		ep = di_id(s->res[0]);
		epd = di_d(s->res[0]);
		size_t k = select_neighbors(h, s->res, nres, h->M);
		uint32_t *ll = links_of(h, id, l);
		if (mode == MODE_BUILD_LOCKED)
			pthread_mutex_lock(stripe(h, id));
		for (size_t j = 0; j < k; j++)
			ll[j + 1] = di_id(s->res[j]);
		ll[0] = (uint32_t)k;
		if (mode == MODE_BUILD_LOCKED)
			pthread_mutex_unlock(stripe(h, id));
		for (size_t j = 0; j < k; j++)
			add_link(h, di_id(s->res[j]), id, l, mode);
	}
	for (int l = top + 1; l <= level; l++)
		links_of(h, id, l)[0] = 0;
	scratch_put(h, s);
entry:
	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_lock(&h->ep_lock);
	if (level > h->maxlevel || h->entry == NO_ID) {
		h->entry = id;
		h->maxlevel = level;
	}
	if (mode == MODE_BUILD_LOCKED)
		pthread_mutex_unlock(&h->ep_lock);
	return 0;
}

/* Before slot id gets a new vector: nodes that its old neighbours pointed back
 * at it get, instead, the old neighbour closest to them, so the region the old
 * vector held together stays connected. */
static void repair_in_links(struct sx_hnsw *h, uint32_t id)
{
	for (int l = 0; l <= h->levels[id]; l++) {
		uint32_t old[1 + 2 * MAX_M];
		uint32_t *ol = links_of(h, id, l);
		memcpy(old, ol, (1 + (size_t)ol[0]) * 4);
		for (uint32_t i = 1; i <= old[0]; i++) {
			uint32_t a = old[i];
			uint32_t *al = links_of(h, a, l);
			uint32_t pos = 0;
			for (uint32_t j = 1; j <= al[0]; j++)
				if (al[j] == id)
					pos = j;
			if (!pos)
				continue;
			uint32_t best = NO_ID;
			float bd = INFINITY;
			const float *va = vec_of(h, a);
			for (uint32_t c = 1; c <= old[0]; c++) {
				uint32_t b = old[c];
				if (b == a || b == id)
					continue;
				bool present = false;
				for (uint32_t j = 1; j <= al[0]; j++)
					present |= al[j] == b;
				if (present)
					continue;
				float d = h->dist(va, vec_of(h, b), h->dim);
				if (d < bd) {
					bd = d;
					best = b;
				}
			}
			if (best != NO_ID) {
				al[pos] = best;
			} else {
				al[pos] = al[al[0]];
				al[0]--;
			}
		}
	}
}

/* Validated copy of the caller's vector (normalised for cosine) into out. */
static int prepare(const struct sx_hnsw *h, const float *vec, float *out)
{
	if (!vec)
		return sx_diag_set(SX_EINVAL, "hnsw: no vector");
	if (!sx_vec_finite(vec, h->dim))
		return sx_diag_set(SX_EINVAL, "hnsw: vector has a NaN or infinite component");
	memcpy(out, vec, (size_t)h->dim * sizeof(float));
	if (h->metric == SX_METRIC_COSINE && sx_vec_normalize(out, h->dim) < 0)
		return sx_diag_set(SX_EINVAL, "hnsw: zero vector under the cosine metric");
	return 0;
}

static int alloc_upper(struct sx_hnsw *h, uint32_t id, int level)
{
	h->upper[id] = NULL;
	if (level == 0)
		return 0;
	h->upper[id] = calloc((size_t)level * (1 + h->M), sizeof(uint32_t));
	return h->upper[id] ? 0 : SX_ENOMEM;
}

/* Takes a slot for a new label: a deleted one if any, else a fresh one. The
 * vector (already prepared) is written into it; the slot is not linked yet. */
static int take_slot(struct sx_hnsw *h, uint64_t label, const float *v, uint32_t *out, bool *reused)
{
	uint32_t id;
	if (h->nfree) {
		id = h->freelist[--h->nfree];
		*reused = true;
	} else {
		int rc = reserve(h, h->count + 1);
		if (rc < 0)
			return rc;
		id = (uint32_t)h->count;
		int level = draw_level(h);
		if (alloc_upper(h, id, level) < 0)
			return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		h->levels[id] = (uint8_t)level;
		h->deleted[id] = 0;
		links_of(h, id, 0)[0] = 0;
		h->count++;
		*reused = false;
	}
	memcpy(vec_of(h, id), v, (size_t)h->dim * sizeof(float));
	set_label(h, id, label);
	*out = id;
	return 0;
}

static int add_one(struct sx_hnsw *h, uint64_t label, const float *v)
{
	uint32_t id = lm_get(&h->map, label);
	if (id != NO_ID) {
		repair_in_links(h, id);
		memcpy(vec_of(h, id), v, (size_t)h->dim * sizeof(float));
		return link_node(h, id, MODE_BUILD);
	}
	int rc = lm_reserve(&h->map, 1);
	if (rc < 0)
		return sx_diag_set(rc, "hnsw: out of memory");
	bool reused;
	if (h->nfree)
		repair_in_links(h, h->freelist[h->nfree - 1]);
	if ((rc = take_slot(h, label, v, &id, &reused)) < 0)
		return rc;
	rc = link_node(h, id, MODE_BUILD);
	/* A slot is usable once written: even if linking ran out of memory it is a
	 * valid (poorly connected) member, which keeps the index consistent. */
	h->deleted[id] = 0;
	lm_put_nogrow(&h->map, label, id);
	h->live++;
	return rc;
}

int sx_hnsw_add(struct sx_hnsw *h, uint64_t label, const float *vec, size_t dim)
{
	if (!h)
		return sx_diag_set(SX_EINVAL, "hnsw: no index");
	if (dim != h->dim)
		return sx_diag_set(SX_EINVAL, "hnsw: vector has %zu components, index has %u", dim, h->dim);
	float *v = malloc((size_t)h->dim * sizeof(float));
	if (!v)
		return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
	int rc = prepare(h, vec, v);
	if (rc == 0)
		rc = add_one(h, label, v);
	free(v);
	return rc;
}

struct batch {
	struct sx_hnsw *h;
	const uint32_t *ids;
	size_t n;
	atomic_size_t next;
	atomic_int rc;
};

static void *batch_worker(void *arg)
{
	struct batch *b = arg;
	size_t i;
	while ((i = atomic_fetch_add(&b->next, 1)) < b->n) {
		int rc = link_node(b->h, b->ids[i], MODE_BUILD_LOCKED);
		if (rc < 0)
			atomic_store(&b->rc, rc);
	}
	return NULL;
}

int sx_hnsw_add_batch(struct sx_hnsw *h, const uint64_t *labels, const float *vecs, size_t n, size_t dim,
		      int nthreads)
{
	if (!h || (n && (!labels || !vecs)))
		return sx_diag_set(SX_EINVAL, "hnsw: bad batch arguments");
	if (dim != h->dim)
		return sx_diag_set(SX_EINVAL, "hnsw: vectors have %zu components, index has %u", dim, h->dim);
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!sx_vec_finite(vecs + i * dim, dim))
			return sx_diag_set(SX_EINVAL, "hnsw: vector %zu has a NaN or infinite component", i);
	float *norm = NULL;
	if (h->metric == SX_METRIC_COSINE) {
		norm = malloc(n * dim * sizeof(float));
		if (!norm)
			return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		memcpy(norm, vecs, n * dim * sizeof(float));
		for (size_t i = 0; i < n; i++) {
			if (sx_vec_normalize(norm + i * dim, dim) < 0) {
				free(norm);
				return sx_diag_set(SX_EINVAL, "hnsw: vector %zu is zero under the cosine metric", i);
			}
		}
		vecs = norm;
	}
	int rc = 0;
	uint32_t *fresh = malloc(n * sizeof *fresh);
	uint8_t *serial = calloc(n, 1);
	if (!fresh || !serial || lm_reserve(&h->map, n) < 0 || reserve(h, h->count + n) < 0) {
		rc = sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		goto out;
	}
	/* Fresh slots for new labels are linked in parallel; updates and reuse of
	 * deleted slots touch existing links and run afterwards, in order. Labels get
	 * their slots now, so later duplicates in the batch become updates. */
	size_t nfresh = 0;
	for (size_t i = 0; i < n; i++) {
		if (h->nfree || lm_get(&h->map, labels[i]) != NO_ID) {
			serial[i] = 1;
			continue;
		}
		uint32_t id;
		bool reused;
		if ((rc = take_slot(h, labels[i], vecs + i * dim, &id, &reused)) < 0)
			goto out;
		lm_put_nogrow(&h->map, labels[i], id);
		h->live++;
		if (h->entry == NO_ID) {
			links_of(h, id, 0)[0] = 0;
			for (int l = 1; l <= h->levels[id]; l++)
				links_of(h, id, l)[0] = 0;
			h->entry = id;
			h->maxlevel = h->levels[id];
		} else {
			fresh[nfresh++] = id;
		}
	}
	if (nthreads > 1 && nfresh > 1) {
		if (nthreads > 64)
			nthreads = 64;
		h->stripes = malloc(LOCK_STRIPES * sizeof *h->stripes);
		if (!h->stripes) {
			rc = sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
			goto out;
		}
		for (size_t i = 0; i < LOCK_STRIPES; i++)
			pthread_mutex_init(&h->stripes[i], NULL);
		struct batch b = {.h = h, .ids = fresh, .n = nfresh};
		atomic_init(&b.next, 0);
		atomic_init(&b.rc, 0);
		pthread_t th[64];
		int started = 0;
		for (int t = 0; t < nthreads - 1; t++) {
			if (pthread_create(&th[t], NULL, batch_worker, &b) != 0)
				break;
			started++;
		}
		batch_worker(&b);
		for (int t = 0; t < started; t++)
			pthread_join(th[t], NULL);
		for (size_t i = 0; i < LOCK_STRIPES; i++)
			pthread_mutex_destroy(&h->stripes[i]);
		free(h->stripes);
		h->stripes = NULL;
		rc = atomic_load(&b.rc);
	} else {
		for (size_t i = 0; i < nfresh && rc == 0; i++)
			rc = link_node(h, fresh[i], MODE_BUILD);
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (serial[i])
			rc = add_one(h, labels[i], vecs + i * dim);
out:
	free(fresh);
	free(serial);
	free(norm);
	return rc;
}

int sx_hnsw_delete(struct sx_hnsw *h, uint64_t label)
{
	if (!h)
		return sx_diag_set(SX_EINVAL, "hnsw: no index");
	uint32_t id = lm_get(&h->map, label);
	if (id == NO_ID)
		return sx_diag_set(SX_ENOENT, "hnsw: no element with label %llu", (unsigned long long)label);
	if (h->nfree == h->freecap) {
		size_t nc = h->freecap ? h->freecap * 2 : 64;
		uint32_t *f = realloc(h->freelist, nc * sizeof *f);
		if (!f)
			return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		h->freelist = f;
		h->freecap = nc;
	}
	h->freelist[h->nfree++] = id;
	h->deleted[id] = 1;
	lm_del(&h->map, label);
	h->live--;
	return 0;
}

int sx_hnsw_get(const struct sx_hnsw *h, uint64_t label, float *out, size_t dim)
{
	if (h && dim != h->dim)
		return sx_diag_set(SX_EINVAL, "hnsw: buffer has %zu components, index has %u", dim, h->dim);
	uint32_t id = h ? lm_get(&h->map, label) : NO_ID;
	if (id == NO_ID)
		return sx_diag_set(SX_ENOENT, "hnsw: no element with label %llu", (unsigned long long)label);
	memcpy(out, vec_of(h, id), (size_t)h->dim * sizeof(float));
	return 0;
}

bool sx_hnsw_contains(const struct sx_hnsw *h, uint64_t label) { return h && lm_get(&h->map, label) != NO_ID; }
size_t sx_hnsw_count(const struct sx_hnsw *h) { return h ? h->live : 0; }
uint32_t sx_hnsw_dim(const struct sx_hnsw *h) { return h->dim; }
int sx_hnsw_metric(const struct sx_hnsw *h) { return h->metric; }

size_t sx_hnsw_memory(const struct sx_hnsw *h)
{
	size_t m = sizeof *h + h->cap * (h->block_size + 2 + sizeof(uint32_t *));
	for (size_t i = 0; i < h->count; i++)
		m += (size_t)h->levels[i] * (1 + h->M) * 4;
	m += (h->map.mask + 1) * 12 + h->freecap * 4;
	for (const struct scratch *s = h->pool; s; s = s->next)
		m += s->visited_cap * 2 + (s->cand_cap + s->res_cap) * sizeof(struct dist_id) + h->dim * 4;
	return m;
}

int sx_hnsw_set_ef(struct sx_hnsw *h, uint32_t ef)
{
	if (!h || ef < 1)
		return sx_diag_set(SX_EINVAL, "hnsw: ef must be >= 1");
	h->ef = ef;
	return 0;
}

int sx_hnsw_set_exact_threshold(struct sx_hnsw *h, double fraction)
{
	if (!h || !(fraction >= 0.0 && fraction <= 1.0))
		return sx_diag_set(SX_EINVAL, "hnsw: exact_threshold must be in 0..1");
	h->exact_threshold = fraction;
	return 0;
}

/* ---- search ---- */

struct exact_ctx {
	const struct sx_hnsw *h;
	const struct sx_hnsw_filter *f;
	const float *q;
	struct dist_id *heap;
	size_t n, k;
};

static inline void exact_consider(struct exact_ctx *e, uint32_t id)
{
	float d = e->h->dist(e->q, vec_of(e->h, id), e->h->dim);
	struct dist_id x = di(d, id);
	if (e->n < e->k) {
		maxh_push(e->heap, &e->n, x);
	} else if (dless(x, e->heap[0])) {
		maxh_pop(e->heap, &e->n);
		maxh_push(e->heap, &e->n, x);
	}
}

static bool exact_label_cb(uint32_t value, void *arg)
{
	struct exact_ctx *e = arg;
	uint32_t id = lm_get(&e->h->map, value);
	if (id != NO_ID && (!e->f->allow_cb || e->f->allow_cb(value, e->f->arg)))
		exact_consider(e, id);
	return true;
}

static size_t exact_filtered(const struct sx_hnsw *h, const float *q, size_t k, const struct sx_hnsw_filter *f,
			     struct dist_id *heap)
{
	struct exact_ctx e = {.h = h, .f = f, .q = q, .heap = heap, .k = k};
	if (f->labels) {
		roaring_iterate(f->labels, exact_label_cb, &e);
	} else {
		for (uint32_t id = 0; id < h->count; id++)
			if (allowed(h, id, f))
				exact_consider(&e, id);
	}
	return e.n;
}

static bool want_exact(const struct sx_hnsw *h, const struct sx_hnsw_filter *f, size_t ef)
{
	if (!f || (!f->labels && !f->allow_cb))
		return false;
	if (f->labels) {
		uint64_t card = roaring_bitmap_get_cardinality(f->labels);
		return card <= ef || (double)card < h->exact_threshold * (double)h->live;
	}
	/* A Weyl sequence over the slots: evenly spread, yet not in step with
	 * periodic label patterns the way a fixed stride would be. */
	size_t n = h->count < PREDICATE_SAMPLE ? h->count : PREDICATE_SAMPLE, seen = 0, ok = 0;
	for (size_t j = 0; j < n; j++) {
		uint32_t id = (uint32_t)(((uint64_t)(uint32_t)(j * 0x9E3779B9u) * h->count) >> 32);
		if (h->deleted[id])
			continue;
		seen++;
		ok += f->allow_cb(label_of(h, id), f->arg);
	}
	return seen == 0 || (double)ok < h->exact_threshold * (double)seen;
}

int sx_hnsw_search(const struct sx_hnsw *h, const float *q, size_t dim, size_t k, uint32_t ef,
		   const struct sx_hnsw_filter *filter, uint64_t *labels, float *dists, size_t *n_found)
{
	if (n_found)
		*n_found = 0;
	if (!h || !q || !labels || !n_found || k == 0)
		return sx_diag_set(SX_EINVAL, "hnsw: bad search arguments (k must be >= 1)");
	if (dim != h->dim)
		return sx_diag_set(SX_EINVAL, "hnsw: query has %zu components, index has %u", dim, h->dim);
	if (k > UINT32_MAX)
		k = UINT32_MAX;
	size_t efs = ef ? ef : h->ef;
	if (efs < k)
		efs = k;
	if (filter && !filter->labels && !filter->allow_cb)
		filter = NULL;
	struct scratch *s = scratch_get(h, efs);
	if (!s)
		return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
	int rc = prepare(h, q, s->qbuf);
	if (rc < 0 || h->live == 0 || h->entry == NO_ID)
		goto done;
	q = s->qbuf;

	size_t nres;
	if (want_exact(h, filter, efs)) {
		if ((rc = grow(&s->res, &s->res_cap, k + 1)) < 0) {
			rc = sx_diag_set(rc, "hnsw: out of memory");
			goto done;
		}
		nres = exact_filtered(h, q, k, filter, s->res);
	} else {
		uint32_t ep = h->entry;
		float epd = h->dist(q, vec_of(h, ep), h->dim);
		for (int l = h->maxlevel; l > 0; l--)
			greedy(h, q, NO_ID, &ep, &epd, l, MODE_QUERY);
		int err = 0;
		nres = search_layer(h, s, q, NO_ID, ep, epd, efs, 0, MODE_QUERY, filter, &err);
		if (err) {
			rc = sx_diag_set(err, "hnsw: out of memory");
			goto done;
		}
	}
	maxh_sort(s->res, nres);
	size_t m = nres < k ? nres : k;
	for (size_t i = 0; i < m; i++) {
		/* Equal distances are ordered by label, so results do not depend on slot numbering. */
		struct dist_id x = s->res[i];
		float d = di_d(x);
		uint64_t l = label_of(h, di_id(x));
		size_t j = i;
		for (; j > 0 && di_d(s->res[j - 1]) == d && labels[j - 1] > l; j--) {
			labels[j] = labels[j - 1];
			s->res[j] = s->res[j - 1];
		}
		labels[j] = l;
		s->res[j] = x;
	}
	if (dists)
		for (size_t i = 0; i < m; i++)
			dists[i] = di_d(s->res[i]);
	*n_found = m;
done:
	scratch_put(h, s);
	return rc;
}

/* ---- serialization ---- */

/* A 64-bit checksum over 8-byte words in four independent lanes (multiply-rotate
 * rounds), fast enough to run over the whole image on load. */
struct csum {
	uint64_t v[4];
	uint8_t buf[32];
	size_t nbuf;
	uint64_t total;
};

#define CS_P1 0x9E3779B185EBCA87ull
#define CS_P2 0xC2B2AE3D27D4EB4Full
#define CS_P3 0x165667B19E3779F9ull

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t cs_round(uint64_t v, uint64_t w) { return rotl64(v + w * CS_P2, 31) * CS_P1; }

static void cs_init(struct csum *c)
{
	c->v[0] = CS_P1 + CS_P2;
	c->v[1] = CS_P2;
	c->v[2] = 0x5358484E53574631ull;
	c->v[3] = 0 - CS_P1;
	c->nbuf = 0;
	c->total = 0;
}

static inline void cs_stripe(struct csum *c, const uint8_t *p)
{
	uint64_t w[4];
	memcpy(w, p, 32);
	c->v[0] = cs_round(c->v[0], w[0]);
	c->v[1] = cs_round(c->v[1], w[1]);
	c->v[2] = cs_round(c->v[2], w[2]);
	c->v[3] = cs_round(c->v[3], w[3]);
}

static void cs_update(struct csum *c, const void *data, size_t len)
{
	const uint8_t *p = data;
	c->total += len;
	if (c->nbuf) {
		size_t t = 32 - c->nbuf < len ? 32 - c->nbuf : len;
		memcpy(c->buf + c->nbuf, p, t);
		c->nbuf += t;
		p += t;
		len -= t;
		if (c->nbuf < 32)
			return;
		cs_stripe(c, c->buf);
		c->nbuf = 0;
	}
	for (; len >= 32; p += 32, len -= 32)
		cs_stripe(c, p);
	memcpy(c->buf, p, len);
	c->nbuf = len;
}

static uint64_t cs_final(const struct csum *c)
{
	uint64_t h = rotl64(c->v[0], 1) + rotl64(c->v[1], 7) + rotl64(c->v[2], 12) + rotl64(c->v[3], 18);
	for (int i = 0; i < 4; i++)
		h = (h ^ cs_round(0, c->v[i])) * CS_P1 + CS_P3;
	h += c->total;
	for (size_t i = 0; i < c->nbuf; i++)
		h = rotl64(h ^ (c->buf[i] * CS_P3), 11) * CS_P1;
	h ^= h >> 33;
	h *= CS_P2;
	h ^= h >> 29;
	h *= CS_P3;
	h ^= h >> 32;
	return h;
}

uint64_t sx__hnsw_checksum(const void *buf, size_t len)
{
	struct csum cs;
	cs_init(&cs);
	cs_update(&cs, buf, len);
	return cs_final(&cs);
}

static size_t upper_words(const struct sx_hnsw *h)
{
	size_t w = 0;
	for (size_t i = 0; i < h->count; i++)
		w += (size_t)h->levels[i] * (1 + h->M);
	return w;
}

size_t sx_hnsw_serialized_size(const struct sx_hnsw *h)
{
	return HEADER_SIZE + h->count * (h->block_size + 2) + upper_words(h) * 4 + 8;
}

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static const char MAGIC[8] = {'S', 'X', 'H', 'N', 'S', 'W', 0, 0};

struct writer {
	sx_hnsw_write_cb cb;
	void *arg;
	struct csum cs;
};

static int emit(struct writer *w, const void *p, size_t len)
{
	if (len == 0)
		return 0;
	cs_update(&w->cs, p, len);
	return w->cb(w->arg, p, len);
}

int sx_hnsw_save(const struct sx_hnsw *h, sx_hnsw_write_cb write_cb, void *arg)
{
	if (!h || !write_cb)
		return sx_diag_set(SX_EINVAL, "hnsw: bad save arguments");
	uint8_t hd[HEADER_SIZE] = {0};
	memcpy(hd, MAGIC, 8);
	put32(hd + 8, FORMAT_VERSION);
	put32(hd + 12, (uint32_t)h->metric);
	put32(hd + 16, h->dim);
	put32(hd + 20, h->M);
	put32(hd + 24, h->efc);
	put32(hd + 28, h->ef);
	put32(hd + 32, (uint32_t)h->block_size);
	put32(hd + 36, (uint32_t)h->maxlevel);
	put64(hd + 40, h->count);
	put64(hd + 48, h->live);
	put32(hd + 56, h->entry);
	put64(hd + 64, h->rng);
	memcpy(hd + 72, &h->exact_threshold, 8);
	put64(hd + 80, upper_words(h));

	struct writer w = {.cb = write_cb, .arg = arg};
	cs_init(&w.cs);
	int rc;
	if ((rc = emit(&w, hd, sizeof hd)) < 0 || (rc = emit(&w, h->blocks, h->count * h->block_size)) < 0 ||
	    (rc = emit(&w, h->levels, h->count)) < 0 || (rc = emit(&w, h->deleted, h->count)) < 0)
		return rc;
	for (size_t i = 0; i < h->count; i++)
		if (h->levels[i] && (rc = emit(&w, h->upper[i], (size_t)h->levels[i] * (1 + h->M) * 4)) < 0)
			return rc;
	uint8_t tail[8];
	put64(tail, cs_final(&w.cs));
	return write_cb(arg, tail, 8);
}

struct membuf {
	uint8_t *p;
	size_t len, cap;
};

static int mem_write(void *arg, const void *data, size_t len)
{
	struct membuf *m = arg;
	if (m->len + len > m->cap)
		return SX_EINTERNAL;
	memcpy(m->p + m->len, data, len);
	m->len += len;
	return 0;
}

int sx_hnsw_save_buf(const struct sx_hnsw *h, void **buf, size_t *len)
{
	if (!h || !buf || !len)
		return sx_diag_set(SX_EINVAL, "hnsw: bad save arguments");
	struct membuf m = {.cap = sx_hnsw_serialized_size(h)};
	if (!(m.p = malloc(m.cap)))
		return sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
	int rc = sx_hnsw_save(h, mem_write, &m);
	if (rc < 0 || m.len != m.cap) {
		free(m.p);
		return sx_diag_set(rc < 0 ? rc : SX_EINTERNAL, "hnsw: save size mismatch");
	}
	*buf = m.p;
	*len = m.len;
	return 0;
}

static struct sx_hnsw *corrupt(struct sx_hnsw *h, const char *what)
{
	sx_hnsw_free(h);
	sx_diag_set(SX_ECORRUPT, "hnsw: corrupted index: %s", what);
	return NULL;
}

/* Checks one link list: count in range, targets in range, not self, and present
 * at that level. */
static bool links_ok(const struct sx_hnsw *h, uint32_t id, const uint32_t *l, int lev)
{
	if (l[0] > max_links(h, lev))
		return false;
	for (uint32_t j = 1; j <= l[0]; j++)
		if (l[j] >= h->count || l[j] == id || h->levels[l[j]] < lev)
			return false;
	return true;
}

struct sx_hnsw *sx_hnsw_load(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (!p || len < HEADER_SIZE + 8)
		return corrupt(NULL, "truncated header");
	if (memcmp(p, MAGIC, 8) != 0)
		return corrupt(NULL, "bad magic");
	if (get32(p + 8) != FORMAT_VERSION) {
		sx_diag_set(SX_EPROTO, "hnsw: unsupported format version %u", get32(p + 8));
		return NULL;
	}
	if (sx__hnsw_checksum(p, len - 8) != get64(p + len - 8))
		return corrupt(NULL, "checksum mismatch (truncated or modified)");

	struct sx_hnsw_params prm;
	sx_hnsw_params_init(&prm, (int)get32(p + 12), get32(p + 16));
	prm.M = get32(p + 20);
	prm.ef_construction = get32(p + 24);
	prm.ef_search = get32(p + 28);
	memcpy(&prm.exact_threshold, p + 72, 8);
	if (get32(p + 12) >= SX_METRIC_COUNT || check_params(&prm) < 0)
		return corrupt(NULL, "parameters out of range");
	uint64_t count = get64(p + 40), live = get64(p + 48), uw = get64(p + 80);
	int32_t maxlevel = (int32_t)get32(p + 36);
	uint32_t entry = get32(p + 56);
	struct sx_hnsw *h = alloc_index(prm.metric, prm.dim, prm.M);
	if (!h)
		return NULL;
	h->efc = prm.ef_construction;
	h->ef = prm.ef_search;
	h->exact_threshold = prm.exact_threshold;
	h->rng = get64(p + 64);
	if (get32(p + 32) != h->block_size)
		return corrupt(h, "block size");
	size_t body = len - 8 - HEADER_SIZE;
	if (count > (size_t)UINT32_MAX - 1 || count > body / (h->block_size + 2) || uw > body / 4 ||
	    count * (h->block_size + 2) + uw * 4 != body)
		return corrupt(h, "section sizes");
	if (live > count || maxlevel < -1 || maxlevel > MAX_LEVEL || (count == 0) != (maxlevel == -1) ||
	    (count == 0 ? entry != NO_ID : entry >= count))
		return corrupt(h, "counts or entry point");
	if (reserve(h, count ? count : 1) < 0 || lm_init(&h->map, count) < 0) {
		sx_hnsw_free(h);
		sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
		return NULL;
	}
	const uint8_t *q = p + HEADER_SIZE;
	memcpy(h->blocks, q, count * h->block_size);
	q += count * h->block_size;
	memcpy(h->levels, q, count);
	memcpy(h->deleted, q + count, count);
	q += 2 * count;
	h->count = count;
	h->entry = entry;
	h->maxlevel = maxlevel;

	size_t need_uw = 0, ndel = 0;
	for (size_t i = 0; i < count; i++) {
		if (h->levels[i] > maxlevel || h->deleted[i] > 1) {
			/* upper[] is not set yet: stop the free loop from reading it */
			h->count = i;
			memset(h->levels, 0, count);
			return corrupt(h, "level or deleted flag");
		}
		need_uw += (size_t)h->levels[i] * (1 + h->M);
		ndel += h->deleted[i];
	}
	if (need_uw != uw || count - ndel != live || (count && h->levels[entry] != maxlevel)) {
		memset(h->levels, 0, count);
		return corrupt(h, "level table");
	}
	for (size_t i = 0; i < count; i++) {
		h->upper[i] = NULL;
		if (h->levels[i]) {
			size_t words = (size_t)h->levels[i] * (1 + h->M);
			if (!(h->upper[i] = malloc(words * 4))) {
				for (size_t j = i; j < count; j++)
					h->levels[j] = 0;
				sx_hnsw_free(h);
				sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
				return NULL;
			}
			memcpy(h->upper[i], q, words * 4);
			q += words * 4;
		}
	}
	for (uint32_t i = 0; i < count; i++) {
		if (!sx_vec_finite(vec_of(h, i), h->dim))
			return corrupt(h, "non-finite vector");
		for (int l = 0; l <= h->levels[i]; l++)
			if (!links_ok(h, i, links_of(h, i, l), l))
				return corrupt(h, "link list");
		if (h->deleted[i]) {
			if (h->nfree == h->freecap) {
				size_t nc = h->freecap ? h->freecap * 2 : 64;
				uint32_t *f = realloc(h->freelist, nc * sizeof *f);
				if (!f) {
					sx_hnsw_free(h);
					sx_diag_set(SX_ENOMEM, "hnsw: out of memory");
					return NULL;
				}
				h->freelist = f;
				h->freecap = nc;
			}
			h->freelist[h->nfree++] = i;
			continue;
		}
		uint64_t l = label_of(h, i);
		if (lm_get(&h->map, l) != NO_ID)
			return corrupt(h, "duplicate label");
		lm_put_nogrow(&h->map, l, i);
	}
	h->live = live;
	return h;
}
