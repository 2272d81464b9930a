#include "core/math/behaviour.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

/* 2^(-age / half_life); 1 without a half-life, and for negative ages. */
static double decay_of(double age, double half_life)
{
	if (!(half_life > 0) || age <= 0)
		return 1.0;
	return exp2(-age / half_life);
}

/* ---- Markov chain ---- */

struct sx_markov {
	int32_t n;
	double *c; /* n * n */
	double *q; /* n */
};

struct sx_markov *sx_markov_new(int32_t n_states)
{
	if (n_states < 1 || n_states > SX_MARKOV_MAX_STATES)
		return NULL;
	struct sx_markov *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->n = n_states;
	m->c = calloc((size_t)n_states * (size_t)n_states, sizeof(double));
	m->q = calloc((size_t)n_states, sizeof(double));
	if (!m->c || !m->q) {
		sx_markov_free(m);
		return NULL;
	}
	return m;
}

void sx_markov_free(struct sx_markov *m)
{
	if (!m)
		return;
	free(m->c);
	free(m->q);
	free(m);
}

int32_t sx_markov_n_states(const struct sx_markov *m) { return m->n; }
const double *sx_markov_counts(const struct sx_markov *m) { return m->c; }
const double *sx_markov_marginal(const struct sx_markov *m) { return m->q; }

int sx_markov_add(struct sx_markov *m, const int32_t *states, const int64_t *times, size_t n,
		  const struct sx_markov_opts *o)
{
	if (!m || !o || (n && (!states || !times)))
		return sx_diag_set(SX_EINVAL, "markov: NULL argument");
	if (!isfinite(o->half_life_ms) || o->half_life_ms < 0 || o->max_gap_ms < 0)
		return sx_diag_set(SX_EINVAL, "markov: half_life_ms and max_gap_ms must be >= 0");
	for (size_t i = 0; i < n; i++) {
		if (states[i] < 0 || states[i] >= m->n)
			return sx_diag_set(SX_EINVAL, "markov: state %d out of range", (int)states[i]);
		if (i && times[i] < times[i - 1])
			return sx_diag_set(SX_EINVAL, "markov: times must be ascending");
	}
	for (size_t i = 0; i < n; i++) {
		double r = decay_of((double)o->t_ref - (double)times[i], o->half_life_ms);
		m->q[states[i]] += r;
		if (i && (o->max_gap_ms == 0 || times[i] - times[i - 1] <= o->max_gap_ms))
			m->c[(size_t)states[i - 1] * (size_t)m->n + (size_t)states[i]] += r;
	}
	return 0;
}

int sx_markov_set(struct sx_markov *m, const double *counts, const double *marginal)
{
	if (!m || !counts || !marginal)
		return sx_diag_set(SX_EINVAL, "markov: NULL argument");
	size_t nn = (size_t)m->n * (size_t)m->n;
	for (size_t i = 0; i < nn; i++)
		if (!isfinite(counts[i]) || counts[i] < 0)
			return sx_diag_set(SX_EINVAL, "markov: count %zu is not a finite number >= 0", i);
	for (int32_t i = 0; i < m->n; i++)
		if (!isfinite(marginal[i]) || marginal[i] < 0)
			return sx_diag_set(SX_EINVAL, "markov: marginal %d is not a finite number >= 0", (int)i);
	memcpy(m->c, counts, nn * sizeof(double));
	memcpy(m->q, marginal, (size_t)m->n * sizeof(double));
	return 0;
}

int sx_markov_predict(const struct sx_markov *m, const int32_t *recent, size_t nrecent, double alpha,
		      double decay, double *out)
{
	if (!m || !out || (nrecent && !recent))
		return sx_diag_set(SX_EINVAL, "markov: NULL argument");
	if (!isfinite(alpha) || alpha < 0 || !(decay >= 0 && decay <= 1))
		return sx_diag_set(SX_EINVAL, "markov: alpha must be >= 0 and decay in [0, 1]");
	int32_t n = m->n;
	double qs = 0;
	for (int32_t b = 0; b < n; b++)
		qs += m->q[b];
	if (!(qs > 0))
		return sx_diag_set(SX_ESTATE, "markov: no data");
	for (int32_t b = 0; b < n; b++)
		out[b] = 0;
	double wsum = 0, w = 1;
	for (size_t i = nrecent; i-- > 0; w *= decay) {
		int32_t a = recent[i];
		if (a < 0 || a >= n)
			continue;
		if (!(w > 0))
			break;
		const double *row = m->c + (size_t)a * (size_t)n;
		double rs = 0;
		for (int32_t b = 0; b < n; b++)
			rs += row[b];
		double den = rs + alpha;
		for (int32_t b = 0; b < n; b++)
			out[b] += w * (den > 0 ? (row[b] + alpha * m->q[b] / qs) / den : m->q[b] / qs);
		wsum += w;
	}
	if (wsum == 0) {
		for (int32_t b = 0; b < n; b++)
			out[b] = m->q[b] / qs;
		return 0;
	}
	for (int32_t b = 0; b < n; b++)
		out[b] /= wsum;
	return 0;
}

/* ---- co-visitation ---- */

struct pair_slot {
	uint64_t key; /* (i << 32 | j) + 1 with i < j; 0 = empty */
	double w;
};

struct sx_covisit {
	int32_t n;
	struct sx_covisit_opts o;
	struct pair_slot *slots;
	size_t nslots, npairs;
	int finished;
	int64_t *indptr;
	int32_t *ids;
	float *w;
};

struct sx_covisit *sx_covisit_new(int32_t n_items, const struct sx_covisit_opts *o)
{
	if (n_items < 1 || !o || o->window_ms < 0 || !isfinite(o->gap_half_life_ms) || o->gap_half_life_ms < 0 ||
	    !isfinite(o->age_half_life_ms) || o->age_half_life_ms < 0 || o->lookback < 1 || o->top_n < 1)
		return NULL;
	struct sx_covisit *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->n = n_items;
	c->o = *o;
	return c;
}

void sx_covisit_free(struct sx_covisit *c)
{
	if (!c)
		return;
	free(c->slots);
	free(c->indptr);
	free(c->ids);
	free(c->w);
	free(c);
}

int32_t sx_covisit_n_items(const struct sx_covisit *c) { return c->n; }
size_t sx_covisit_pairs(const struct sx_covisit *c) { return c->npairs; }

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int pairs_grow(struct sx_covisit *c)
{
	size_t ns = c->nslots ? c->nslots * 2 : 1024;
	struct pair_slot *s = calloc(ns, sizeof(*s));
	if (!s)
		return sx_diag_set(SX_ENOMEM, "covisit: out of memory");
	for (size_t i = 0; i < c->nslots; i++) {
		if (!c->slots[i].key)
			continue;
		size_t h = mix64(c->slots[i].key) & (ns - 1);
		while (s[h].key)
			h = (h + 1) & (ns - 1);
		s[h] = c->slots[i];
	}
	free(c->slots);
	c->slots = s;
	c->nslots = ns;
	return 0;
}

static int pair_add(struct sx_covisit *c, int32_t a, int32_t b, double w)
{
	if (a > b) {
		int32_t t = a;
		a = b, b = t;
	}
	uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	if ((c->npairs + 1) * 2 > c->nslots && pairs_grow(c) < 0)
		return SX_ENOMEM;
	size_t h = mix64(key) & (c->nslots - 1);
	while (c->slots[h].key && c->slots[h].key != key)
		h = (h + 1) & (c->nslots - 1);
	if (!c->slots[h].key) {
		c->slots[h].key = key;
		c->npairs++;
	}
	c->slots[h].w += w;
	return 0;
}

int sx_covisit_add(struct sx_covisit *c, const int32_t *items, const int64_t *times, size_t n)
{
	if (!c || (n && (!items || !times)))
		return sx_diag_set(SX_EINVAL, "covisit: NULL argument");
	if (c->finished)
		return sx_diag_set(SX_ESTATE, "covisit: already finished");
	for (size_t i = 0; i < n; i++) {
		if (items[i] < 0 || items[i] >= c->n)
			return sx_diag_set(SX_EINVAL, "covisit: item %d out of range", (int)items[i]);
		if (i && times[i] < times[i - 1])
			return sx_diag_set(SX_EINVAL, "covisit: times must be ascending");
	}
	for (size_t q = 1; q < n; q++) {
		double age = decay_of((double)c->o.t_ref - (double)times[q], c->o.age_half_life_ms);
		size_t p0 = q > c->o.lookback ? q - c->o.lookback : 0;
		for (size_t p = q; p-- > p0;) {
			int64_t gap = times[q] - times[p];
			if (c->o.window_ms && gap > c->o.window_ms)
				break;
			if (items[p] == items[q])
				continue;
			int rc = pair_add(c, items[p], items[q], age * decay_of((double)gap, c->o.gap_half_life_ms));
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

struct nb_entry {
	int32_t id;
	float w;
};

static int nb_cmp(const void *a, const void *b)
{
	const struct nb_entry *x = a, *y = b;
	if (x->w != y->w)
		return x->w > y->w ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

int sx_covisit_finish(struct sx_covisit *c)
{
	if (!c)
		return sx_diag_set(SX_EINVAL, "covisit: NULL argument");
	if (c->finished)
		return sx_diag_set(SX_ESTATE, "covisit: already finished");
	size_t n = (size_t)c->n;
	int64_t *deg = calloc(n + 1, sizeof(int64_t));
	struct nb_entry *all = malloc((c->npairs ? c->npairs * 2 : 1) * sizeof(*all));
	int64_t *fill = calloc(n, sizeof(int64_t));
	c->indptr = calloc(n + 1, sizeof(int64_t));
	if (!deg || !all || !fill || !c->indptr) {
		free(deg), free(all), free(fill);
		free(c->indptr), c->indptr = NULL;
		return sx_diag_set(SX_ENOMEM, "covisit: out of memory");
	}
	for (size_t s = 0; s < c->nslots; s++) {
		if (!c->slots[s].key)
			continue;
		uint64_t k = c->slots[s].key - 1;
		deg[(uint32_t)(k >> 32) + 1]++;
		deg[(uint32_t)k + 1]++;
	}
	for (size_t i = 0; i < n; i++)
		deg[i + 1] += deg[i];
	for (size_t s = 0; s < c->nslots; s++) {
		if (!c->slots[s].key)
			continue;
		uint64_t k = c->slots[s].key - 1;
		int32_t a = (int32_t)(k >> 32), b = (int32_t)(uint32_t)k;
		float w = (float)c->slots[s].w;
		all[deg[a] + fill[a]++] = (struct nb_entry){b, w};
		all[deg[b] + fill[b]++] = (struct nb_entry){a, w};
	}
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)(deg[i + 1] - deg[i]);
		qsort(all + deg[i], len, sizeof(*all), nb_cmp);
		kept += len < c->o.top_n ? len : c->o.top_n;
	}
	c->ids = malloc((kept ? kept : 1) * sizeof(int32_t));
	c->w = malloc((kept ? kept : 1) * sizeof(float));
	if (!c->ids || !c->w) {
		free(deg), free(all), free(fill);
		free(c->ids), free(c->w), free(c->indptr);
		c->ids = NULL, c->w = NULL, c->indptr = NULL;
		return sx_diag_set(SX_ENOMEM, "covisit: out of memory");
	}
	int64_t o = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)(deg[i + 1] - deg[i]);
		if (len > c->o.top_n)
			len = c->o.top_n;
		for (size_t j = 0; j < len; j++, o++) {
			c->ids[o] = all[deg[i] + (int64_t)j].id;
			c->w[o] = all[deg[i] + (int64_t)j].w;
		}
		c->indptr[i + 1] = o;
	}
	free(deg), free(all), free(fill);
	free(c->slots);
	c->slots = NULL;
	c->nslots = 0;
	c->finished = 1;
	return 0;
}

size_t sx_covisit_neighbors(const struct sx_covisit *c, int32_t i, const int32_t **ids, const float **w)
{
	if (!c->finished || i < 0 || i >= c->n) {
		*ids = NULL, *w = NULL;
		return 0;
	}
	*ids = c->ids + c->indptr[i];
	*w = c->w + c->indptr[i];
	return (size_t)(c->indptr[i + 1] - c->indptr[i]);
}

const int64_t *sx_covisit_indptr(const struct sx_covisit *c) { return c->finished ? c->indptr : NULL; }
const int32_t *sx_covisit_ids(const struct sx_covisit *c) { return c->finished ? c->ids : NULL; }
const float *sx_covisit_weights(const struct sx_covisit *c) { return c->finished ? c->w : NULL; }

int sx_covisit_set(struct sx_covisit *c, const int64_t *indptr, const int32_t *ids, const float *w)
{
	if (!c || !indptr || (indptr[c->n] > 0 && (!ids || !w)))
		return sx_diag_set(SX_EINVAL, "covisit: NULL argument");
	if (c->finished || c->npairs)
		return sx_diag_set(SX_ESTATE, "covisit: already has data");
	if (indptr[0] != 0)
		return sx_diag_set(SX_EINVAL, "covisit: indptr must start at 0");
	for (int32_t i = 0; i < c->n; i++) {
		if (indptr[i + 1] < indptr[i] || (size_t)(indptr[i + 1] - indptr[i]) > c->o.top_n)
			return sx_diag_set(SX_EINVAL, "covisit: row %d has a bad length", (int)i);
		for (int64_t o = indptr[i]; o < indptr[i + 1]; o++)
			if (ids[o] < 0 || ids[o] >= c->n || ids[o] == i || !isfinite(w[o]) || !(w[o] > 0))
				return sx_diag_set(SX_EINVAL, "covisit: row %d has a bad entry", (int)i);
	}
	size_t total = (size_t)indptr[c->n];
	int64_t *ip = malloc(((size_t)c->n + 1) * sizeof(int64_t));
	int32_t *id = malloc((total ? total : 1) * sizeof(int32_t));
	float *ww = malloc((total ? total : 1) * sizeof(float));
	if (!ip || !id || !ww) {
		free(ip), free(id), free(ww);
		return sx_diag_set(SX_ENOMEM, "covisit: out of memory");
	}
	memcpy(ip, indptr, ((size_t)c->n + 1) * sizeof(int64_t));
	if (total) {
		memcpy(id, ids, total * sizeof(int32_t));
		memcpy(ww, w, total * sizeof(float));
	}
	c->indptr = ip, c->ids = id, c->w = ww;
	c->finished = 1;
	return 0;
}

struct cand {
	int32_t id;
	double s;
};

static int cand_id_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int cand_score_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->s != y->s)
		return x->s > y->s ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int i32_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return x < y ? -1 : x > y;
}

int sx_covisit_recommend(const struct sx_covisit *c, const int32_t *recent, const double *rw, size_t nrecent,
			 const int32_t *exclude, size_t nexclude, size_t k, int32_t *out, double *scores)
{
	if (!c || (nrecent && !recent) || (nexclude && !exclude) || (k && !out))
		return sx_diag_set(SX_EINVAL, "covisit: NULL argument");
	if (!c->finished)
		return sx_diag_set(SX_ESTATE, "covisit: not finished");
	size_t total = 0;
	for (size_t r = 0; r < nrecent; r++)
		if (recent[r] >= 0 && recent[r] < c->n)
			total += (size_t)(c->indptr[recent[r] + 1] - c->indptr[recent[r]]);
	struct cand *cs = malloc((total ? total : 1) * sizeof(*cs));
	int32_t *ex = malloc((nexclude ? nexclude : 1) * sizeof(int32_t));
	if (!cs || !ex) {
		free(cs), free(ex);
		return sx_diag_set(SX_ENOMEM, "covisit: out of memory");
	}
	size_t m = 0;
	for (size_t r = 0; r < nrecent; r++) {
		int32_t a = recent[r];
		if (a < 0 || a >= c->n)
			continue;
		double u = rw ? rw[r] : 1.0;
		for (int64_t o = c->indptr[a]; o < c->indptr[a + 1]; o++)
			cs[m++] = (struct cand){c->ids[o], u * (double)c->w[o]};
	}
	if (nexclude)
		memcpy(ex, exclude, nexclude * sizeof(int32_t));
	qsort(ex, nexclude, sizeof(int32_t), i32_cmp);
	qsort(cs, m, sizeof(*cs), cand_id_cmp);
	size_t u = 0;
	for (size_t i = 0; i < m; i++) {
		if (u && cs[u - 1].id == cs[i].id) {
			cs[u - 1].s += cs[i].s;
			continue;
		}
		cs[u++] = cs[i];
	}
	size_t v = 0;
	for (size_t i = 0; i < u; i++)
		if (cs[i].s > 0 && !bsearch(&cs[i].id, ex, nexclude, sizeof(int32_t), i32_cmp))
			cs[v++] = cs[i];
	qsort(cs, v, sizeof(*cs), cand_score_cmp);
	size_t got = v < k ? v : k;
	for (size_t i = 0; i < got; i++) {
		out[i] = cs[i].id;
		if (scores)
			scores[i] = cs[i].s;
	}
	free(cs), free(ex);
	return (int)got;
}
