/* Candidate sources: collaborative, content, co-visitation, trending/offers/popular, similar, segment. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/vec.h"
#include "core/sx.h"
#include "plugins/recommend/internal.h"

const char *const sx__rec_source_names[REC_SRC_COUNT] = {"collaborative", "content", "covisit", "trending",
							  "offers", "popular", "similar", "segment_popular"};

static int in_recent(const struct rec_user *u, uint32_t item)
{
	for (int r = 0; r < u->nrecent; r++)
		if (u->recent[r] == item)
			return 1;
	return 0;
}

static int live_item(uint32_t item)
{
	return item < sx__rec->nitems && sx__rec->items[item].kind >= 0;
}

struct seen {
	uint32_t *items;
	size_t n;
};

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static bool not_seen(uint64_t label, void *arg)
{
	const struct seen *s = arg;
	uint32_t l = (uint32_t)label;
	return label > UINT32_MAX || !bsearch(&l, s->items, s->n, sizeof(uint32_t), u32_cmp);
}

/* Searches an index for q, keeping live items and, with u, none the user has
 * interacted with: the search itself passes over them, so the n results are
 * all new to the user however long their history; scores are 1 - distance. */
static int knn(const struct sx_hnsw *h, const float *q, size_t dim, size_t n, int source, int32_t skip,
	       const struct rec_user *u, struct rec_cand *out)
{
	size_t want = n + 1, found = 0;
	uint64_t *labels = malloc(want * sizeof(uint64_t));
	float *dists = malloc(want * sizeof(float));
	struct seen seen = {NULL, 0};
	if (u && u->ninter && (seen.items = malloc(u->ninter * sizeof(uint32_t)))) {
		for (uint32_t i = 0; i < u->ninter; i++)
			seen.items[seen.n++] = u->inter[i].item;
		qsort(seen.items, seen.n, sizeof(uint32_t), u32_cmp);
	}
	if (!labels || !dists || (u && u->ninter && !seen.items)) {
		free(labels), free(dists), free(seen.items);
		return SX_ENOMEM;
	}
	uint32_t ef = want > 64 ? (uint32_t)want : 64;
	struct sx_hnsw_filter f = {NULL, not_seen, &seen};
	int rc = sx_hnsw_search(h, q, dim, want, ef, seen.n ? &f : NULL, labels, dists, &found);
	free(seen.items);
	int m = 0;
	for (size_t i = 0; rc == 0 && i < found && (size_t)m < n; i++) {
		if ((int64_t)labels[i] == skip || !live_item((uint32_t)labels[i]))
			continue;
		out[m++] = (struct rec_cand){(uint32_t)labels[i], 1.0f - dists[i], source, -1};
	}
	free(labels), free(dists);
	return rc < 0 ? rc : m;
}

int sx__rec_src_collab(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out)
{
	const float *x = sx__rec_user_als(s, u);
	if (!x || !s->fs->index || !sx_hnsw_count(s->fs->index) || !n)
		return 0;
	if (sx_vec_norm(x, (size_t)s->fs->k) == 0)
		return 0;
	return knn(s->fs->index, x, (size_t)s->fs->k, n, REC_SRC_COLLAB, -1, sx__rec->include_seen ? NULL : u, out);
}

int sx__rec_src_content(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out)
{
	struct rec *R = sx__rec;
	SX_UNUSED(s);
	if (!u || !u->has_prof || !u->prof || !R->content || !sx_hnsw_count(R->content) || !n ||
	    sx_vec_norm(u->prof, R->content_dim) == 0)
		return 0;
	return knn(R->content, u->prof, R->content_dim, n, REC_SRC_CONTENT, -1, sx__rec->include_seen ? NULL : u, out);
}

static int cand_cmp(const void *a, const void *b)
{
	const struct rec_cand *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

int sx__rec_src_covisit(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out)
{
	if (!u || !u->nrecent || !n)
		return 0;
	int64_t now = sx__rec_now(s);
	size_t cap = (size_t)u->nrecent * REC_COVIS_MAX, m = 0;
	struct rec_cand *acc = malloc(cap * sizeof(*acc) + 1);
	if (!acc)
		return SX_ENOMEM;
	struct seen seen = {NULL, 0};
	if (!sx__rec->include_seen && u->ninter && (seen.items = malloc(u->ninter * sizeof(uint32_t)))) {
		for (uint32_t i = 0; i < u->ninter; i++)
			seen.items[seen.n++] = u->inter[i].item;
		qsort(seen.items, seen.n, sizeof(uint32_t), u32_cmp);
	}
	for (int r = u->nrecent - 1; r >= 0; r--) {
		uint32_t j = u->recent[r];
		if (j >= s->ncounts)
			continue;
		/* newer recent items count more */
		float rw = (float)(1.0 / (1 + (u->nrecent - 1 - r) * 0.25));
		const struct rec_counts *c = &s->counts[j];
		for (uint16_t k = 0; k < c->ncov; k++) {
			uint32_t it = c->cov[k].item;
			if (in_recent(u, it) || !live_item(it) || (seen.n && !not_seen(it, &seen)))
				continue;
			float sc = rw * sx__rec_covis_score(&c->cov[k], now);
			size_t q;
			for (q = 0; q < m; q++)
				if (acc[q].item == it)
					break;
			if (q == m)
				acc[m++] = (struct rec_cand){it, 0, REC_SRC_COVISIT, (int32_t)j};
			if (sc > 0 && (acc[q].score == 0 || sc > acc[q].score))
				acc[q].via = (int32_t)j;
			acc[q].score += sc;
		}
	}
	free(seen.items);
	qsort(acc, m, sizeof(*acc), cand_cmp);
	if (m > n)
		m = n;
	memcpy(out, acc, m * sizeof(*acc));
	free(acc);
	return (int)m;
}

/* ---- top by popularity, with a small cache ---- */

struct top_cache {
	const struct rec_state *s;
	uint64_t generation;
	uint64_t seg; /* the segment's hash for REC_SRC_SEGMENT lists, else 0 */
	int64_t at;
	int kind, window, source;
	char region[48];
	size_t n;
	struct rec_cand *c;
};
#define TOP_CACHE 128 /* (kind, region, window, source) lists: a region each for trending and offers */
static struct top_cache cache[TOP_CACHE];
static unsigned cache_next;

/* min-heap on score of the best n seen */
static void heap_push(struct rec_cand *h, size_t *m, size_t n, struct rec_cand c)
{
	if (*m < n) {
		size_t i = (*m)++;
		h[i] = c;
		while (i && cand_cmp(&h[(i - 1) / 2], &h[i]) < 0) {
			struct rec_cand t = h[i];
			h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = t;
			i = (i - 1) / 2;
		}
		return;
	}
	if (cand_cmp(&c, &h[0]) >= 0)
		return;
	h[0] = c;
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, w = i;
		if (l < *m && cand_cmp(&h[l], &h[w]) > 0)
			w = l;
		if (r < *m && cand_cmp(&h[r], &h[w]) > 0)
			w = r;
		if (w == i)
			break;
		struct rec_cand t = h[i];
		h[i] = h[w], h[w] = t;
		i = w;
	}
}

/* The best n of a cached list (it may be shorter when few items qualify). */
static int cache_copy(const struct top_cache *c, size_t n, struct rec_cand *out)
{
	size_t m = 0;
	while (m < n && m < c->n && c->c[m].score >= 0)
		m++;
	memcpy(out, c->c, m * sizeof(*out));
	return (int)m;
}

/* Sorts the m best of h (room for want) and caches them under s's generation;
 * the slot's other keys are the caller's to set. */
static struct top_cache *cache_put(const struct rec_state *s, struct rec_cand *h, size_t m, size_t want, int source,
				   uint64_t seg)
{
	qsort(h, m, sizeof(*h), cand_cmp);
	struct top_cache *c = &cache[cache_next++ % TOP_CACHE];
	free(c->c);
	memset(c, 0, sizeof(*c));
	c->s = s, c->generation = s->generation, c->source = source, c->seg = seg;
	c->c = h;
	/* mark the end of a short list so that a longer ask is not served from it */
	c->n = m < want ? want : m;
	for (size_t i = m; i < want; i++)
		h[i] = (struct rec_cand){0, -1, source, -1};
	return c;
}

void sx__rec_top_cache_clear(void)
{
	for (int i = 0; i < TOP_CACHE; i++) {
		free(cache[i].c);
		memset(&cache[i], 0, sizeof(cache[i]));
	}
}

int sx__rec_src_top(struct rec_state *s, int kind, const char *region, int window, size_t n, int source,
		    struct rec_cand *out)
{
	struct rec *R = sx__rec;
	int64_t now = sx__rec_now(s);
	const char *rg = region ? region : "";
	if (!n)
		return 0;
	for (int i = 0; i < TOP_CACHE; i++) {
		struct top_cache *c = &cache[i];
		if (c->c && c->s == s && c->kind == kind && c->window == window && c->source == source && !c->seg &&
		    strcmp(c->region, rg) == 0 && c->n >= n && c->generation == s->generation)
			return cache_copy(c, n, out);
	}
	size_t want = n < 200 ? 200 : n, m = 0;
	struct rec_cand *h = malloc(want * sizeof(*h));
	if (!h)
		return SX_ENOMEM;
	/* a region reads its own items only */
	const struct rec_region *g = region ? sx__rec_region_find(region) : NULL;
	uint32_t total = region ? (g ? g->n : 0) : R->nitems;
	for (uint32_t q = 0; q < total; q++) {
		uint32_t i = g ? g->items[q] : q;
		const struct rec_item *it = &R->items[i];
		if (it->kind < 0 || (kind >= 0 && it->kind != kind))
			continue;
		double p = sx__rec_pop(s, i, window, now);
		if (p <= 0 && source != REC_SRC_OFFERS)
			continue;
		heap_push(h, &m, want, (struct rec_cand){i, (float)p, source, -1});
	}
	struct top_cache *c = cache_put(s, h, m, want, source, 0);
	c->at = now, c->kind = kind, c->window = window;
	snprintf(c->region, sizeof(c->region), "%s", rg);
	return cache_copy(c, n, out);
}

int sx__rec_src_segment(struct rec_state *s, uint64_t h, int kind, size_t n, struct rec_cand *out)
{
	struct rec *R = sx__rec;
	const struct rec_seg *g = sx__rec_seg_find(s, h);
	if (!n || !g || !g->n)
		return 0;
	for (int i = 0; i < TOP_CACHE; i++) {
		struct top_cache *c = &cache[i];
		if (c->c && c->s == s && c->seg == h && c->kind == kind && c->n >= n && c->generation == s->generation)
			return cache_copy(c, n, out);
	}
	int64_t now = sx__rec_now(s);
	size_t m = 0, want = n < 200 ? 200 : n;
	struct rec_cand *hp = malloc(want * sizeof(*hp));
	if (!hp)
		return SX_ENOMEM;
	for (uint32_t j = 0; j < g->cap; j++) {
		const struct rec_seg_entry *e = &g->e[j];
		if (e->item == UINT32_MAX || !live_item(e->item) || (kind >= 0 && R->items[e->item].kind != kind))
			continue;
		double p = sx__rec_seg_pop(e, now);
		if (p > 0)
			heap_push(hp, &m, want, (struct rec_cand){e->item, (float)p, REC_SRC_SEGMENT, -1});
	}
	struct top_cache *c = cache_put(s, hp, m, want, REC_SRC_SEGMENT, h);
	c->at = now, c->kind = kind;
	return cache_copy(c, n, out);
}

int sx__rec_src_similar(struct rec_state *s, uint32_t item, size_t n, struct rec_cand *out)
{
	struct rec *R = sx__rec;
	int m = 0;
	if (R->items[item].has_vec) {
		float *v = malloc(R->content_dim * sizeof(float));
		if (!v)
			return SX_ENOMEM;
		int rc = sx_hnsw_get(R->content, item, v, R->content_dim);
		m = rc < 0 ? rc : knn(R->content, v, R->content_dim, n, REC_SRC_SIMILAR, item, NULL, out);
		free(v);
		return m;
	}
	if (s->fs && s->fs->index && item < s->fs->n_items && sx_hnsw_contains(s->fs->index, item)) {
		float *v = malloc((size_t)s->fs->k * sizeof(float));
		if (!v)
			return SX_ENOMEM;
		int rc = sx_hnsw_get(s->fs->index, item, v, (size_t)s->fs->k);
		m = rc < 0 ? rc : knn(s->fs->index, v, (size_t)s->fs->k, n, REC_SRC_SIMILAR, item, NULL, out);
		free(v);
		return m;
	}
	if (item < s->ncounts && s->counts[item].ncov) {
		int64_t now = sx__rec_now(s);
		const struct rec_counts *c = &s->counts[item];
		struct rec_cand *acc = malloc(c->ncov * sizeof(*acc));
		if (!acc)
			return SX_ENOMEM;
		size_t k = 0;
		for (uint16_t i = 0; i < c->ncov; i++)
			if (live_item(c->cov[i].item))
				acc[k++] = (struct rec_cand){c->cov[i].item, sx__rec_covis_score(&c->cov[i], now), REC_SRC_SIMILAR, (int32_t)item};
		qsort(acc, k, sizeof(*acc), cand_cmp);
		m = (int)(k < n ? k : n);
		memcpy(out, acc, (size_t)m * sizeof(*acc));
		free(acc);
	}
	return m;
}

/* ---- calibration of the popularity weight ---- */

static const double calib_grid[] = {0, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10};
#define CALIB_GRID (sizeof(calib_grid) / sizeof(calib_grid[0]))

const struct rec_calibration *sx__rec_calibrate(struct rec_state *s)
{
	struct rec *R = sx__rec;
	const struct sx_rec_factor_source *fs = s->fs;
	int64_t now = sx__rec_now(s);
	if (fs && s->calib_fs == fs && (!s->live || now - s->calib_at < REC_CALIB_TTL))
		return &s->calib;
	memset(&s->calib, 0, sizeof(s->calib));
	s->calib_fs = fs, s->calib_at = now;
	if (!fs || !fs->index || !fs->fold_in || fs->k < 1 || !fs->n_items)
		return &s->calib;
	uint32_t ni = fs->n_items < R->nitems ? fs->n_items : R->nitems;
	size_t k = (size_t)fs->k;
	/* bounds the work (every sample user scores every item) on large catalogues */
	double budget = 4e7 / ((double)ni * (double)(k + 2));
	uint32_t want = budget >= REC_CALIB_USERS ? REC_CALIB_USERS : budget < 30 ? 30 : (uint32_t)budget;
	float *F = calloc((size_t)ni * k + 1, sizeof(float)), *v = malloc(k * sizeof(float));
	float *c = malloc((size_t)ni * sizeof(float) + 1), *p = malloc((size_t)ni * sizeof(float) + 1);
	uint32_t *stamp = calloc((size_t)ni + 1, sizeof(uint32_t));
	int32_t *items = NULL;
	float *w = NULL;
	double sum[CALIB_GRID + 1] = {0};
	if (!F || !v || !c || !p || !stamp)
		goto out;
	double pmax = 0;
	for (uint32_t i = 0; i < ni; i++) {
		p[i] = (float)sx__rec_pop(s, i, REC_W_MONTH, now);
		int has = R->items[i].kind >= 0 && sx_hnsw_contains(fs->index, i) &&
			  sx_hnsw_get(fs->index, i, F + (size_t)i * k, k) == 0;
		if (!has)
			memset(F + (size_t)i * k, 0, k * sizeof(float)), p[i] = -1;
		else if (p[i] > pmax)
			pmax = p[i];
	}
	if (pmax <= 0)
		goto out;
	for (uint32_t i = 0; i < ni; i++)
		p[i] = p[i] < 0 ? -1 : (float)(p[i] / pmax); /* -1: not a candidate */
	/* the same sample whichever users happen to be in memory: a live state
	 * loads them */
	uint32_t bound = s->live ? sx_events_user_bound() : s->nusers;
	uint32_t stride = bound / (want * 4) + 1, n = 0, round = 0;
	for (uint32_t uu = 0; uu < bound && n < want; uu += stride) {
		struct rec_user *u = sx__rec_user(s, uu);
		if (!u || u->ninter < 3 || !u->nrecent)
			continue;
		round++;
		uint32_t x = u->recent[u->nrecent - 1];
		if (x >= ni || p[x] < 0)
			continue;
		int first = 0;
		size_t m = 0;
		free(items), free(w);
		items = malloc(u->ninter * sizeof(int32_t));
		w = malloc(u->ninter * sizeof(float));
		if (!items || !w)
			goto out;
		for (uint32_t q = 0; q < u->ninter; q++) {
			uint32_t it = u->inter[q].item;
			if (it == x) {
				first = u->inter[q].n == 1;
				continue;
			}
			if (it < ni) {
				items[m] = (int32_t)it, w[m++] = u->inter[q].w;
				stamp[it] = round;
			}
		}
		if (!first || m < 2 || fs->fold_in(fs->ud, items, w, m, v) < 0)
			continue;
		float cmax = 0;
		for (uint32_t i = 0; i < ni; i++) {
			if (p[i] < 0 || stamp[i] == round) {
				c[i] = NAN;
				continue;
			}
			c[i] = sx_vec_dot(F + (size_t)i * k, v, k);
			if (c[i] > cmax)
				cmax = c[i];
		}
		if (!(cmax > 0))
			continue;
		for (size_t g = 0; g <= CALIB_GRID; g++) {
			/* g == CALIB_GRID: popularity alone, collaborative breaking ties */
			double wg = g < CALIB_GRID ? calib_grid[g] : 1e6;
			double bx = fmax(c[x], 0) / cmax + wg * p[x];
			uint32_t rank = 0;
			for (uint32_t i = 0; i < ni && rank < 10; i++)
				if (i != x && !isnan(c[i]) && fmax(c[i], 0) / cmax + wg * p[i] > bx)
					rank++;
			if (rank < 10)
				sum[g] += 1 / log2(rank + 2.0);
		}
		n++;
	}
	if (n) {
		size_t best = 0;
		for (size_t g = 1; g < CALIB_GRID; g++)
			if (sum[g] > sum[best] * (1 + 1e-9))
				best = g;
		s->calib.popular = calib_grid[best];
		s->calib.ndcg = sum[best] / n;
		s->calib.ndcg_collab = sum[0] / n;
		s->calib.ndcg_popular = sum[CALIB_GRID] / n;
		s->calib.users = n;
	}
out:
	free(F), free(v), free(c), free(p), free(stamp), free(items), free(w);
	return &s->calib;
}
