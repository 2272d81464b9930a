/* The recommendation plugin's catalogue and per-state data: users, popularity,
 * co-visitation, and their snapshot in the store. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/privacy/privacy.h"
#include "plugins/recommend/internal.h"
#include "store/store.h"

const double sx__rec_half_life[REC_WINDOWS] = {REC_DAY, 7 * REC_DAY, 30 * REC_DAY};

/* ---- catalogue ---- */

static uint32_t hslot(const char *id, size_t len, uint32_t cap) { return (uint32_t)XXH3_64bits(id, len) & (cap - 1); }

int64_t sx__rec_item_find(const char *id, size_t len)
{
	struct rec *R = sx__rec;
	if (!R->hcap)
		return -1;
	for (uint32_t h = hslot(id, len, R->hcap);; h = (h + 1) & (R->hcap - 1)) {
		uint32_t v = R->hash[h];
		if (!v)
			return -1;
		struct rec_item *it = &R->items[v - 1];
		if (it->len == len && memcmp(it->id, id, len) == 0)
			return v - 1;
	}
}

static int hash_insert(uint32_t idx)
{
	struct rec *R = sx__rec;
	if ((R->nitems + 1) * 2 > R->hcap) {
		uint32_t ncap = R->hcap ? R->hcap * 2 : 1024;
		uint32_t *nh = calloc(ncap, sizeof(uint32_t));
		if (!nh)
			return SX_ENOMEM;
		for (uint32_t i = 0; i < R->hcap; i++) {
			uint32_t v = R->hash[i];
			if (!v)
				continue;
			uint32_t h = hslot(R->items[v - 1].id, R->items[v - 1].len, ncap);
			while (nh[h])
				h = (h + 1) & (ncap - 1);
			nh[h] = v;
		}
		free(R->hash);
		R->hash = nh;
		R->hcap = ncap;
	}
	uint32_t h = hslot(R->items[idx].id, R->items[idx].len, R->hcap);
	while (R->hash[h])
		h = (h + 1) & (R->hcap - 1);
	R->hash[h] = idx + 1;
	return 0;
}

static int items_reserve(uint32_t n)
{
	struct rec *R = sx__rec;
	if (n <= R->capitems)
		return 0;
	uint32_t ncap = R->capitems ? R->capitems : 1024;
	while (ncap < n)
		ncap *= 2;
	struct rec_item *ni = realloc(R->items, ncap * sizeof(*ni));
	if (!ni)
		return SX_ENOMEM;
	memset(ni + R->capitems, 0, (ncap - R->capitems) * sizeof(*ni));
	for (uint32_t i = R->capitems; i < ncap; i++)
		ni[i].kind = -1, ni[i].price = NAN;
	R->items = ni;
	R->capitems = ncap;
	return 0;
}

/* Places id at idx (loading or interning). */
static int item_place(uint32_t idx, const char *id, size_t len)
{
	struct rec *R = sx__rec;
	int rc;
	if ((rc = items_reserve(idx + 1)) < 0)
		return rc;
	if (R->items[idx].id)
		return SX_ECORRUPT;
	char *cp = malloc(len + 1);
	if (!cp)
		return SX_ENOMEM;
	memcpy(cp, id, len);
	cp[len] = 0;
	R->items[idx].id = cp;
	R->items[idx].len = (uint8_t)len;
	if (idx >= R->nitems)
		R->nitems = idx + 1;
	if ((rc = hash_insert(idx)) < 0) {
		R->items[idx].id = NULL;
		free(cp);
		return rc;
	}
	return 0;
}

int64_t sx__rec_item_intern(const char *id, size_t len)
{
	struct rec *R = sx__rec;
	int64_t f = sx__rec_item_find(id, len);
	if (f >= 0)
		return f;
	if (len == 0 || len > SX_EVENTS_ID_MAX)
		return SX_EINVAL;
	uint32_t idx = R->nitems;
	uint8_t k[6 + SX_EVENTS_ID_MAX], v[4];
	memcpy(k, "rec/i/", 6);
	memcpy(k + 6, id, len);
	sx_be32(v, idx);
	int rc = sx_store_put(R->e->store, SX_T_ARTIFACTS, k, 6 + len, v, 4);
	if (rc < 0 || (rc = item_place(idx, id, len)) < 0)
		return rc;
	return idx;
}

static void lower_copy(char *dst, size_t size, const char *s, size_t len)
{
	if (len >= size)
		len = size - 1;
	for (size_t i = 0; i < len; i++)
		dst[i] = (char)tolower((unsigned char)s[i]);
	dst[len] = 0;
}

static int num_of(const msgpack_object *o, double *v)
{
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = (double)o->via.u64; return 1;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (double)o->via.i64; return 1;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *v = o->via.f64; return isfinite(*v);
	default: return 0;
	}
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (sx_obj_streq(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

const struct rec_region *sx__rec_region_find(const char *name)
{
	struct rec *R = sx__rec;
	for (uint32_t i = 0; i < R->nregions; i++)
		if (strcmp(R->regions[i].name, name) == 0)
			return &R->regions[i];
	return NULL;
}

void sx__rec_regions_free(void)
{
	struct rec *R = sx__rec;
	for (uint32_t i = 0; i < R->nregions; i++)
		free(R->regions[i].items);
	free(R->regions);
	R->regions = NULL;
	R->nregions = R->capregions = 0;
}

/* Adds the item to the list of its region (it->region), interning the region. */
static void region_link(struct rec_item *it)
{
	struct rec *R = sx__rec;
	if (!it->region[0])
		return;
	uint32_t r;
	for (r = 0; r < R->nregions; r++)
		if (strcmp(R->regions[r].name, it->region) == 0)
			break;
	if (r == R->nregions) {
		if (R->nregions == UINT16_MAX - 1)
			return;
		if (R->nregions == R->capregions) {
			uint32_t nc = R->capregions ? R->capregions * 2 : 16;
			struct rec_region *nr = realloc(R->regions, nc * sizeof(*nr));
			if (!nr)
				return;
			R->regions = nr, R->capregions = nc;
		}
		memset(&R->regions[r], 0, sizeof(R->regions[r]));
		memcpy(R->regions[r].name, it->region, sizeof(it->region));
		R->nregions++;
	}
	struct rec_region *g = &R->regions[r];
	if (g->n == g->cap) {
		uint32_t nc = g->cap ? g->cap * 2 : 64;
		uint32_t *ni = realloc(g->items, nc * sizeof(uint32_t));
		if (!ni)
			return;
		g->items = ni, g->cap = nc;
	}
	g->items[g->n++] = (uint32_t)(it - R->items);
	it->region_id = (uint16_t)(r + 1);
}

static void region_unlink(struct rec_item *it)
{
	struct rec *R = sx__rec;
	if (!it->region_id)
		return;
	struct rec_region *g = &R->regions[it->region_id - 1];
	uint32_t idx = (uint32_t)(it - R->items);
	for (uint32_t i = 0; i < g->n; i++)
		if (g->items[i] == idx) {
			g->items[i] = g->items[--g->n];
			break;
		}
	it->region_id = 0;
}

static void item_clear(struct rec_item *it)
{
	region_unlink(it);
	for (int i = 0; i < it->ntags; i++)
		free(it->tags[i]);
	it->ntags = 0;
	it->kind = -1;
	it->has_vec = 0;
	it->price = NAN;
	it->region[0] = it->name[0] = 0;
	strcpy(it->currency, "EUR");
	it->avail_from = INT64_MIN, it->avail_to = INT64_MAX;
	it->months = 0;
	it->available = 1;
}

static void attrs_parse(struct rec_item *it, const void *attrs, size_t len)
{
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	if (!attrs || !len)
		return;
	msgpack_zone_init(&z, 2048);
	if (msgpack_unpack(attrs, len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_MAP) {
		msgpack_zone_destroy(&z);
		return;
	}
	const msgpack_object *v;
	double d;
	if ((v = map_get(&o, "region")) == NULL)
		v = map_get(&o, "country");
	if (v && v->type == MSGPACK_OBJECT_STR)
		lower_copy(it->region, sizeof(it->region), v->via.str.ptr, v->via.str.size);
	if ((v = map_get(&o, "name")) == NULL)
		v = map_get(&o, "title");
	if (v && v->type == MSGPACK_OBJECT_STR) {
		size_t n = v->via.str.size < sizeof(it->name) - 1 ? v->via.str.size : sizeof(it->name) - 1;
		memcpy(it->name, v->via.str.ptr, n);
		it->name[n] = 0;
	}
	if ((v = map_get(&o, "price")) && num_of(v, &d))
		it->price = d;
	if ((v = map_get(&o, "currency")) && v->type == MSGPACK_OBJECT_STR && v->via.str.size < sizeof(it->currency)) {
		memcpy(it->currency, v->via.str.ptr, v->via.str.size);
		it->currency[v->via.str.size] = 0;
	}
	if ((v = map_get(&o, "available")) && v->type == MSGPACK_OBJECT_BOOLEAN)
		it->available = v->via.boolean;
	if ((v = map_get(&o, "available_from")) && num_of(v, &d))
		it->avail_from = (int64_t)d;
	if ((v = map_get(&o, "available_to")) && num_of(v, &d))
		it->avail_to = (int64_t)d;
	if ((v = map_get(&o, "months")) && v->type == MSGPACK_OBJECT_ARRAY)
		for (uint32_t i = 0; i < v->via.array.size; i++)
			if (num_of(&v->via.array.ptr[i], &d) && d >= 1 && d <= 12)
				it->months |= (uint16_t)(1u << ((int)d - 1));
	if ((v = map_get(&o, "tags")) && v->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < v->via.array.size && it->ntags < REC_TAGS_MAX; i++) {
			const msgpack_object *t = &v->via.array.ptr[i];
			if (t->type != MSGPACK_OBJECT_STR || t->via.str.size == 0 || t->via.str.size > 64)
				continue;
			char *c = malloc(t->via.str.size + 1);
			if (!c)
				break;
			lower_copy(c, t->via.str.size + 1, t->via.str.ptr, t->via.str.size);
			it->tags[it->ntags++] = c;
		}
	}
	msgpack_zone_destroy(&z);
}

static int content_ensure(uint32_t dim)
{
	struct rec *R = sx__rec;
	if (R->content)
		return R->content_dim == dim ? 0 : SX_EINVAL;
	struct sx_hnsw_params p;
	sx_hnsw_params_init(&p, SX_METRIC_COSINE, dim);
	p.ef_construction = 100;
	p.ef_search = 64;
	R->content = sx_hnsw_new(&p);
	if (!R->content)
		return SX_ENOMEM;
	R->content_dim = dim;
	return 0;
}

void sx__rec_item_update(uint32_t idx, const struct sx_item *it)
{
	struct rec *R = sx__rec;
	struct rec_item *ri = &R->items[idx];
	item_clear(ri);
	if (!it) {
		if (R->content && sx_hnsw_contains(R->content, idx)) {
			sx_hnsw_delete(R->content, idx);
			R->content_dirty = 1;
		}
		R->live.generation++;
		return;
	}
	ri->kind = (int8_t)it->kind;
	attrs_parse(ri, it->attrs, it->attrs_len);
	region_link(ri);
	if (it->dim && content_ensure(it->dim) == 0) {
		float *v = malloc(it->dim * sizeof(float));
		if (v) {
			sx_item_vector(it, v, it->dim);
			if (sx_hnsw_add(R->content, idx, v, it->dim) == 0) {
				ri->has_vec = 1;
				R->content_dirty = 1;
			}
			free(v);
		}
	} else if (R->content && sx_hnsw_contains(R->content, idx)) {
		sx_hnsw_delete(R->content, idx);
		R->content_dirty = 1;
	}
	R->live.generation++;
}

int sx__rec_item_vec(uint32_t idx, float *out)
{
	struct rec *R = sx__rec;
	if (idx >= R->nitems || !R->items[idx].has_vec || !R->content)
		return SX_ENOENT;
	return sx_hnsw_get(R->content, idx, out, R->content_dim);
}

static int map_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	SX_UNUSED(ud);
	if (k->len < 7 || k->len > 6 + SX_EVENTS_ID_MAX || v->len != 4)
		return sx_diag_set(SX_ECORRUPT, "a stored item index does not decode");
	int rc = item_place(sx_get_be32(v->data), (const char *)k->data + 6, k->len - 6);
	return rc == SX_ECORRUPT ? sx_diag_set(rc, "two items share one index") : rc;
}

struct load_ud {
	int64_t stamp, newest;
};

static int cat_cb(const struct sx_item *it, void *ud)
{
	struct load_ud *l = ud;
	struct rec *R = sx__rec;
	int64_t idx = sx__rec_item_intern(it->id, it->id_len);
	if (idx < 0)
		return (int)idx;
	struct rec_item *ri = &R->items[idx];
	int in_index = R->content && sx_hnsw_contains(R->content, (uint64_t)idx);
	if (it->updated > l->newest)
		l->newest = it->updated;
	if (in_index && it->dim == R->content_dim && it->updated <= l->stamp) {
		item_clear(ri);
		ri->kind = (int8_t)it->kind;
		attrs_parse(ri, it->attrs, it->attrs_len);
		region_link(ri);
		ri->has_vec = 1;
		return 0;
	}
	sx__rec_item_update((uint32_t)idx, it);
	ri->kind = (int8_t)it->kind; /* an item stays in the catalogue even if its vector is refused */
	return 0;
}

int sx__rec_catalog_load(void)
{
	struct rec *R = sx__rec;
	struct sx_store *st = R->e->store;
	struct sx_val v;
	int rc;
	if ((rc = sx_store_scan(st, SX_T_ARTIFACTS, "rec/i/", 6, "rec/i0", 6, 0, map_cb, NULL)) < 0)
		return rc;
	struct load_ud l = {INT64_MIN, INT64_MIN};
	if (sx_store_get(st, SX_T_ARTIFACTS, "rec/content_t", 13, &v) == 0 && v.len == 8 &&
	    sx_store_get(st, SX_T_ARTIFACTS, "rec/content", 11, &v) == 0) {
		struct sx_hnsw *h = sx_hnsw_load(v.data, v.len);
		if (h) {
			R->content = h;
			R->content_dim = sx_hnsw_dim(h);
			sx_store_get(st, SX_T_ARTIFACTS, "rec/content_t", 13, &v);
			l.stamp = (int64_t)sx_get_be64(v.data);
		} else {
			sx_log_warn("recommend: the stored content index is unusable (%s); rebuilding", sx_diag_last());
		}
	}
	for (uint32_t i = 0; i < R->nitems; i++)
		item_clear(&R->items[i]);
	if ((rc = sx_events_item_scan(NULL, -1, cat_cb, &l)) < 0)
		return rc;
	/* items deleted while the image was saved */
	if (R->content)
		for (uint32_t i = 0; i < R->nitems; i++)
			if (R->items[i].kind < 0 && sx_hnsw_contains(R->content, i)) {
				sx_hnsw_delete(R->content, i);
				R->content_dirty = 1;
			}
	sx_store_read_end(st);
	return 0;
}

int sx__rec_content_save(void)
{
	struct rec *R = sx__rec;
	void *buf;
	size_t len;
	uint8_t t[8];
	int64_t newest = INT64_MIN;
	if (!R->content || !R->content_dirty)
		return 0;
	int rc = sx_hnsw_save_buf(R->content, &buf, &len);
	if (rc < 0)
		return rc;
	/* the stamp: every item present now is covered */
	newest = sx_wall_ms();
	sx_be64(t, (uint64_t)newest);
	rc = sx_store_put(R->e->store, SX_T_ARTIFACTS, "rec/content", 11, buf, len);
	if (rc == 0)
		rc = sx_store_put(R->e->store, SX_T_ARTIFACTS, "rec/content_t", 13, t, 8);
	free(buf);
	if (rc == 0)
		R->content_dirty = 0;
	return rc;
}

float sx__rec_weight(const char *name, size_t len)
{
	const struct rec_params *p = &sx__rec->params;
	for (int i = 0; i < p->nweights; i++)
		if (strlen(p->weights[i].name) == len && memcmp(p->weights[i].name, name, len) == 0)
			return p->weights[i].w;
	return 0;
}

int sx__rec_is_book(const char *name, size_t len) { return len == 4 && memcmp(name, "book", 4) == 0; }

/* ---- state ---- */

void sx__rec_state_init(struct rec_state *s, int live, int64_t horizon)
{
	memset(s, 0, sizeof(*s));
	s->live = live;
	s->horizon = horizon;
	s->seg_pairs_max = REC_SEG_ENTRIES;
}

static void user_free(struct rec_user *u)
{
	if (!u)
		return;
	free(u->inter), free(u->als), free(u->prof);
	free(u);
}

void sx__rec_state_close(struct rec_state *s)
{
	for (uint32_t i = 0; i < s->nusers; i++)
		user_free(s->users[i]);
	free(s->users);
	for (uint32_t i = 0; i < s->ncounts; i++)
		free(s->counts[i].cov);
	free(s->counts);
	for (uint32_t i = 0; i < s->nsegs; i++)
		free(s->segs[i].e);
	free(s->segs);
	s->segs = NULL;
	s->nsegs = 0;
	s->seg_entries = 0;
	free(s->dirty);
	free(s->jbuf);
	s->jbuf = NULL;
	s->jlen = s->jcap = 0;
	if (s->fs && s->fs->release)
		s->fs->release(s->fs->ud);
	s->users = NULL, s->counts = NULL, s->fs = NULL, s->own = NULL, s->dirty = NULL;
	s->nusers = s->ncounts = 0;
}

int64_t sx__rec_now(const struct rec_state *s) { return s->now ? s->now : sx_wall_ms(); }

static int users_reserve(struct rec_state *s, uint32_t n)
{
	if (n <= s->nusers)
		return 0;
	uint32_t ncap = s->nusers ? s->nusers : 1024;
	while (ncap < n)
		ncap *= 2;
	struct rec_user **nu = realloc(s->users, ncap * sizeof(*nu));
	if (!nu)
		return SX_ENOMEM;
	memset(nu + s->nusers, 0, (ncap - s->nusers) * sizeof(*nu));
	s->users = nu;
	s->nusers = ncap;
	return 0;
}

static int counts_reserve(struct rec_state *s, uint32_t n)
{
	if (n <= s->ncounts)
		return 0;
	uint32_t ncap = s->ncounts ? s->ncounts : 1024;
	while (ncap < n)
		ncap *= 2;
	struct rec_counts *nc = realloc(s->counts, ncap * sizeof(*nc));
	if (!nc)
		return SX_ENOMEM;
	memset(nc + s->ncounts, 0, (ncap - s->ncounts) * sizeof(*nc));
	for (uint32_t i = s->ncounts; i < ncap; i++)
		nc[i].t = INT64_MIN;
	s->counts = nc;
	s->ncounts = ncap;
	return 0;
}

static void user_add(struct rec_state *s, struct rec_user *u, uint32_t item, float w, int book, int64_t t)
{
	struct rec *R = sx__rec;
	uint32_t i;
	for (i = 0; i < u->ninter; i++)
		if (u->inter[i].item == item)
			break;
	if (i == u->ninter) {
		if (u->ninter == u->cap) {
			uint32_t nc = u->cap ? u->cap * 2 : 8;
			struct rec_inter *ni = realloc(u->inter, nc * sizeof(*ni));
			if (!ni)
				return;
			u->inter = ni, u->cap = nc;
		}
		u->inter[u->ninter++] = (struct rec_inter){item, 0, 0, 0};
	}
	u->inter[i].w += w;
	u->inter[i].n++;
	u->inter[i].booked |= (uint8_t)book;
	if (t > u->last_t)
		u->last_t = t;
	/* recent: kept in time order, one entry per item */
	int r;
	for (r = 0; r < u->nrecent; r++)
		if (u->recent[r] == item)
			break;
	if (r < u->nrecent) {
		memmove(u->recent + r, u->recent + r + 1, (size_t)(u->nrecent - r - 1) * sizeof(uint32_t));
		memmove(u->recent_t + r, u->recent_t + r + 1, (size_t)(u->nrecent - r - 1) * sizeof(int64_t));
		u->nrecent--;
	}
	if (u->nrecent == REC_RECENT) {
		if (t < u->recent_t[0])
			goto profile;
		memmove(u->recent, u->recent + 1, (REC_RECENT - 1) * sizeof(uint32_t));
		memmove(u->recent_t, u->recent_t + 1, (REC_RECENT - 1) * sizeof(int64_t));
		u->nrecent--;
	}
	r = u->nrecent;
	while (r > 0 && u->recent_t[r - 1] > t) {
		u->recent[r] = u->recent[r - 1], u->recent_t[r] = u->recent_t[r - 1];
		r--;
	}
	u->recent[r] = item, u->recent_t[r] = t;
	u->nrecent++;
profile:
	if (R->content && item < R->nitems && R->items[item].has_vec) {
		uint32_t d = R->content_dim;
		if (!u->prof) {
			u->prof = calloc(d, sizeof(float));
			if (!u->prof)
				return;
			u->prof_t = INT64_MIN;
		}
		float *v = malloc(d * sizeof(float));
		if (v && sx_hnsw_get(R->content, item, v, d) == 0) {
			sx_rec_profile_add(u->prof, d, &u->prof_w, &u->prof_t, v, w, t, REC_PROFILE_HALF_LIFE);
			u->has_prof = 1;
		}
		free(v);
	}
	u->als_ok = 0;
	SX_UNUSED(s);
}

struct hist_ud {
	struct rec_state *s;
	struct rec_user *u;
};

static int hist_cb(const struct sx_event *ev, void *ud)
{
	struct hist_ud *h = ud;
	float w;
	int64_t item;
	if (!ev->item || (w = sx__rec_weight(ev->name, ev->name_len)) <= 0 ||
	    (item = sx__rec_item_find(ev->item, ev->item_len)) < 0)
		return 0;
	user_add(h->s, h->u, (uint32_t)item, w, sx__rec_is_book(ev->name, ev->name_len), ev->time);
	return 0;
}

void sx__rec_user_forget(struct rec_state *s, uint32_t user)
{
	if (user < s->nusers && s->users[user]) {
		user_free(s->users[user]);
		s->users[user] = NULL;
		s->generation++;
	}
}

struct rec_user *sx__rec_user(struct rec_state *s, uint32_t user)
{
	/* Live state is personal data: without personalization consent it is
	 * neither kept nor built (a withdrawn consent drops what was held). */
	struct rec_user *held = user < s->nusers ? s->users[user] : NULL;
	uint64_t ver = s->live ? sx_privacy_consent_version() : 0;
	if (s->live && !(held && held->consent_ver == ver) &&
	    !sx_privacy_allowed_index(user, SX_PURPOSE_PERSONALIZATION)) {
		sx__rec_user_forget(s, user);
		return NULL;
	}
	if (held) {
		held->consent_ver = ver;
		return held;
	}
	if (!s->live)
		return NULL;
	if (users_reserve(s, user + 1) < 0)
		return NULL;
	struct rec_user *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->last_t = INT64_MIN;
	u->consent_ver = ver;
	struct hist_ud h = {s, u};
	if (sx_events_user_scan(NULL, user, 0, s->horizon, 0, hist_cb, &h) < 0) {
		user_free(u);
		return NULL;
	}
	s->users[user] = u;
	return u;
}

static struct rec_user *user_new(struct rec_state *s, uint32_t user)
{
	if (users_reserve(s, user + 1) < 0)
		return NULL;
	if (!s->users[user]) {
		s->users[user] = calloc(1, sizeof(struct rec_user));
		if (s->users[user])
			s->users[user]->last_t = INT64_MIN;
	}
	return s->users[user];
}

static void pop_add(struct rec_counts *c, double w, int64_t t)
{
	if (c->t == INT64_MIN)
		c->t = t;
	for (int k = 0; k < REC_WINDOWS; k++) {
		if (t > c->t)
			c->pop[k] = sx_rec_decay(c->pop[k], t - c->t, sx__rec_half_life[k]) + w;
		else
			c->pop[k] += sx_rec_decay(w, c->t - t, sx__rec_half_life[k]);
	}
	if (t > c->t)
		c->t = t;
	c->users++;
}

double sx__rec_pop(const struct rec_state *s, uint32_t item, int window, int64_t now)
{
	if (item >= s->ncounts || s->counts[item].t == INT64_MIN)
		return 0;
	const struct rec_counts *c = &s->counts[item];
	return sx_rec_decay(c->pop[window], now - c->t, sx__rec_half_life[window]);
}

float sx__rec_covis_score(const struct rec_nb *nb, int64_t now)
{
	return (float)sx_rec_decay(nb->score, now - nb->t, REC_COVIS_HALF_LIFE);
}

static void covis_add(struct rec_counts *c, uint32_t other, float w, int64_t t)
{
	for (uint16_t i = 0; i < c->ncov; i++) {
		struct rec_nb *nb = &c->cov[i];
		if (nb->item != other)
			continue;
		if (t > nb->t) {
			nb->score = (float)sx_rec_decay(nb->score, t - nb->t, REC_COVIS_HALF_LIFE) + w;
			nb->t = t;
		} else {
			nb->score += (float)sx_rec_decay(w, nb->t - t, REC_COVIS_HALF_LIFE);
		}
		return;
	}
	if (c->ncov == c->capcov) {
		if (c->capcov == REC_COVIS_MAX) {
			/* full: the weakest neighbour makes room if the newcomer beats it */
			uint16_t worst = 0;
			float ws = INFINITY;
			for (uint16_t i = 0; i < c->ncov; i++) {
				float sc = sx__rec_covis_score(&c->cov[i], t);
				if (sc < ws)
					ws = sc, worst = i;
			}
			if (ws >= w)
				return;
			c->cov[worst] = (struct rec_nb){other, w, t};
			return;
		}
		uint16_t nc = c->capcov ? (uint16_t)(c->capcov * 2) : 4;
		if (nc > REC_COVIS_MAX)
			nc = REC_COVIS_MAX;
		struct rec_nb *n = realloc(c->cov, nc * sizeof(*n));
		if (!n)
			return;
		c->cov = n, c->capcov = nc;
	}
	c->cov[c->ncov++] = (struct rec_nb){other, w, t};
}

/* ---- segments ---- */

#define SEG_HALF_LIFE (30 * REC_DAY)

uint64_t sx__rec_segment_hash(const char *v, size_t len)
{
	struct rec *R = sx__rec;
	char buf[REC_SEG_ATTR_MAX + 1 + REC_SEG_VALUE_MAX];
	size_t al = strlen(R->seg_attr);
	if (len > REC_SEG_VALUE_MAX)
		len = REC_SEG_VALUE_MAX;
	memcpy(buf, R->seg_attr, al);
	buf[al] = 0;
	for (size_t i = 0; i < len; i++)
		buf[al + 1 + i] = (char)tolower((unsigned char)v[i]);
	uint64_t h = XXH3_64bits(buf, al + 1 + len);
	return h ? h : 1;
}

/* The user's segment from the stored record: an index in segnames, -1 for none,
 * or -2 when it could not be read (a store or memory error: not to be cached). */
static int seg_lookup(uint32_t user)
{
	struct rec *R = sx__rec;
	char id[SX_EVENTS_ID_MAX + 1], val[REC_SEG_VALUE_MAX + 1];
	size_t len, vl = 0;
	const void *rec;
	size_t rlen;
	if (!R->seg_attr[0])
		return -1;
	int rc = sx_events_user_id(NULL, user, id, sizeof(id), &len);
	if (rc == 0)
		rc = sx_events_user_record(NULL, id, len, &rec, &rlen);
	if (rc < 0)
		return rc == SX_ENOENT ? -1 : -2;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(rec, rlen, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *v = map_get(map_get(&o, "attributes"), R->seg_attr);
		if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > 0 && v->via.str.size <= REC_SEG_VALUE_MAX &&
		    !memchr(v->via.str.ptr, 0, v->via.str.size)) {
			vl = v->via.str.size;
			memcpy(val, v->via.str.ptr, vl);
		} else if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			vl = (size_t)snprintf(val, sizeof(val), "%llu", (unsigned long long)v->via.u64);
		} else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
			vl = (size_t)snprintf(val, sizeof(val), "%lld", (long long)v->via.i64);
		}
	}
	msgpack_zone_destroy(&z);
	if (!vl)
		return -1;
	val[vl] = 0;
	uint64_t h = sx__rec_segment_hash(val, vl);
	for (uint32_t i = 0; i < R->nsegnames; i++)
		if (R->segnames[i].h == h)
			return (int)i;
	if (R->nsegnames == REC_SEG_NAMES)
		return -1;
	if (!R->segnames && !(R->segnames = malloc(REC_SEG_NAMES * sizeof(*R->segnames))))
		return -2;
	R->segnames[R->nsegnames].h = h;
	memcpy(R->segnames[R->nsegnames].name, val, vl + 1);
	return (int)R->nsegnames++;
}

int sx__rec_user_segment(uint32_t user)
{
	struct rec *R = sx__rec;
	if (user >= R->nuseg) {
		uint32_t nc = R->nuseg ? R->nuseg : 1024;
		while (nc <= user && nc < UINT32_MAX / 2)
			nc *= 2;
		uint16_t *nu = nc > user ? realloc(R->useg, (size_t)nc * sizeof(uint16_t)) : NULL;
		if (!nu) {
			int g = seg_lookup(user);
			return g < 0 ? -1 : g;
		}
		memset(nu + R->nuseg, 0, (size_t)(nc - R->nuseg) * sizeof(uint16_t));
		R->useg = nu, R->nuseg = nc;
	}
	if (!R->useg[user]) {
		int g = seg_lookup(user);
		if (g == -2)
			return -1; /* a read or memory error: asked again next time */
		R->useg[user] = (uint16_t)(g < 0 ? 1 : g + 2);
	}
	return (int)R->useg[user] - 2;
}

void sx__rec_segment_invalidate(uint32_t user)
{
	struct rec *R = sx__rec;
	if (user == UINT32_MAX) {
		if (R->useg)
			memset(R->useg, 0, (size_t)R->nuseg * sizeof(uint16_t));
	} else if (user < R->nuseg) {
		R->useg[user] = 0;
	}
}

void sx__rec_segments_free(void)
{
	struct rec *R = sx__rec;
	free(R->useg), free(R->segnames);
	R->useg = NULL, R->segnames = NULL;
	R->nuseg = R->nsegnames = 0;
}

const struct rec_seg *sx__rec_seg_find(const struct rec_state *s, uint64_t h)
{
	for (uint32_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].h == h)
			return &s->segs[i];
	return NULL;
}

double sx__rec_seg_pop(const struct rec_seg_entry *e, int64_t now)
{
	return sx_rec_decay(e->pop, now - e->t, SEG_HALF_LIFE);
}

/* Adds weight w at time t to a decayed sum last moved to *at. */
static void decay_add(double *sum, int64_t *at, double w, int64_t t)
{
	if (*at == INT64_MIN)
		*sum = w, *at = t;
	else if (t > *at)
		*sum = sx_rec_decay(*sum, t - *at, SEG_HALF_LIFE) + w, *at = t;
	else
		*sum += sx_rec_decay(w, *at - t, SEG_HALF_LIFE);
}

/* A new empty segment at the end of the table, or NULL if full (or OOM). */
static struct rec_seg *seg_new(struct rec_state *s, uint64_t h)
{
	if (s->nsegs == REC_SEG_MAX)
		return NULL;
	if (!s->segs && !(s->segs = calloc(REC_SEG_MAX, sizeof(*s->segs))))
		return NULL;
	struct rec_seg *g = &s->segs[s->nsegs++];
	memset(g, 0, sizeof(*g));
	g->h = h;
	g->t = INT64_MIN;
	return g;
}

static uint32_t seg_slot(uint32_t item, uint32_t cap) { return (item * 2654435761u) & (cap - 1); }

static struct rec_seg_entry *seg_find_entry(const struct rec_seg *g, uint32_t item)
{
	if (g->cap)
		for (uint32_t h = seg_slot(item, g->cap);; h = (h + 1) & (g->cap - 1)) {
			if (g->e[h].item == item)
				return &g->e[h];
			if (g->e[h].item == UINT32_MAX)
				break;
		}
	return NULL;
}

/* g's entry for item, added (empty: t INT64_MIN) if absent; NULL if absent
 * and the pair budget is spent (or OOM). */
static struct rec_seg_entry *seg_entry(struct rec_state *s, struct rec_seg *g, uint32_t item)
{
	struct rec_seg_entry *f = seg_find_entry(g, item);
	if (f)
		return f;
	if (s->seg_entries >= s->seg_pairs_max)
		return NULL;
	if ((g->n + 1) * 2 > g->cap) {
		uint32_t nc = g->cap ? g->cap * 2 : 64;
		struct rec_seg_entry *ne = malloc((size_t)nc * sizeof(*ne));
		if (!ne)
			return NULL;
		for (uint32_t i = 0; i < nc; i++)
			ne[i].item = UINT32_MAX;
		for (uint32_t i = 0; i < g->cap; i++) {
			if (g->e[i].item == UINT32_MAX)
				continue;
			uint32_t h = seg_slot(g->e[i].item, nc);
			while (ne[h].item != UINT32_MAX)
				h = (h + 1) & (nc - 1);
			ne[h] = g->e[i];
		}
		free(g->e);
		g->e = ne, g->cap = nc;
	}
	uint32_t h = seg_slot(item, g->cap);
	while (g->e[h].item != UINT32_MAX)
		h = (h + 1) & (g->cap - 1);
	g->e[h] = (struct rec_seg_entry){item, 0, INT64_MIN};
	g->n++;
	s->seg_entries++;
	return &g->e[h];
}

/* A weight w as of t, compared with others on one scale: w 2^(-(T - t)/H) at any
 * common later T orders as log2(w) + t/H does. Comparing these instead of the
 * weights decayed to the newest time keeps the order when that time is far
 * from the others (an event dated years ahead would decay them all to 0). */
static double seg_score(double w, int64_t t)
{
	return w > 0 && t != INT64_MIN ? log2(w) + (double)t / SEG_HALF_LIFE : -INFINITY;
}

/* Makes room for an interaction of weight w at t that does not fit (the rule
 * in internal.h), never at keep's expense: the index of the segment freed
 * (its pairs returned, its slot empty but still counted in nsegs), or -1 if
 * the least active segment only lost weight. for_pairs: room is wanted for a
 * pair, so a segment without pairs (freeing it gives none) is passed over. */
static int seg_reclaim(struct rec_state *s, const struct rec_seg *keep, double w, int64_t t, int for_pairs)
{
	int worst = -1;
	double least = INFINITY;
	for (uint32_t i = 0; i < s->nsegs; i++) {
		const struct rec_seg *g = &s->segs[i];
		double x = seg_score(g->w, g->t);
		if (g != keep && !(for_pairs && g->n == 0) && x < least)
			least = x, worst = (int)i;
	}
	if (worst < 0)
		return -1;
	struct rec_seg *g = &s->segs[worst];
	if (least > seg_score(w, t)) {
		/* both as of the later of the two times */
		int64_t at = g->t > t ? g->t : t;
		g->w = sx_rec_decay(g->w, at - g->t, SEG_HALF_LIFE) - sx_rec_decay(w, at - t, SEG_HALF_LIFE);
		g->t = at;
		return -1;
	}
	free(g->e);
	s->seg_entries -= g->n;
	uint64_t h = g->h;
	memset(g, 0, sizeof(*g));
	g->h = h;
	g->t = INT64_MIN;
	return worst;
}

/* Frees slot i's place in the table: the last segment moves into it, so the
 * table stays dense (and its order a function of the counts alone). Returns
 * where the segment that was at `follow` is now. */
static struct rec_seg *seg_remove_slot(struct rec_state *s, uint32_t i, struct rec_seg *follow)
{
	uint32_t last = --s->nsegs;
	if (i != last) {
		s->segs[i] = s->segs[last];
		if (follow == &s->segs[last])
			follow = &s->segs[i];
	}
	memset(&s->segs[last], 0, sizeof(s->segs[last]));
	return follow;
}

/* Counts w at t for item in segment h, making room when a bound is reached. */
static void seg_add(struct rec_state *s, uint64_t h, uint32_t item, double w, int64_t t)
{
	struct rec_seg *g = (struct rec_seg *)sx__rec_seg_find(s, h);
	int fresh = !g;
	if (!g && !(g = seg_new(s, h))) {
		int i = s->nsegs == REC_SEG_MAX ? seg_reclaim(s, NULL, w, t, 0) : -1;
		if (i < 0)
			return;
		g = &s->segs[i];
		g->h = h;
	}
	if (!seg_find_entry(g, item) && s->seg_entries >= s->seg_pairs_max) {
		int i = seg_reclaim(s, g, w, t, 1);
		if (i >= 0)
			g = seg_remove_slot(s, (uint32_t)i, g);
	}
	struct rec_seg_entry *e = seg_entry(s, g, item);
	if (!e) {
		/* a segment is never left without pairs: an empty one would be the least
		 * active at every later reclaim and take the wear meant for a real one */
		if (fresh && g->n == 0) {
			free(g->e);
			g->e = NULL;
			seg_remove_slot(s, (uint32_t)(g - s->segs), NULL);
		}
		return;
	}
	decay_add(&e->pop, &e->t, w, t);
	decay_add(&g->w, &g->t, w, t);
}

static void segs_clear(struct rec_state *s)
{
	for (uint32_t i = 0; i < s->nsegs; i++)
		free(s->segs[i].e);
	s->nsegs = 0;
	s->seg_entries = 0;
}

void sx__rec_segments_reset(struct rec_state *s)
{
	struct rec *R = sx__rec;
	segs_clear(s);
	sx__rec_segment_invalidate(UINT32_MAX);
	R->nsegnames = 0;
	s->generation++;
}

/* ---- journal ----
 * An operation: u8 type ('P': pop_add(a, w, t); 'C': covis_add both ways
 * between a and b at t; 'S': the preceding 'P' of the record also counted
 * for the segment whose hash is a | b << 32), u32 a, then f32 w or u32 b,
 * i64 t. Host order. */
#define JOP_SIZE 17

static void journal_op(struct rec_state *s, uint8_t type, uint32_t a, uint32_t b_or_w, int64_t t)
{
	if (!s->journal)
		return;
	if (s->jlen + JOP_SIZE > s->jcap) {
		size_t nc = s->jcap ? s->jcap * 2 : 4096;
		uint8_t *nb = realloc(s->jbuf, nc);
		if (!nb) {
			/* the snapshot at the end of this call makes up for the lost op */
			s->jbytes = SIZE_MAX / 2;
			return;
		}
		s->jbuf = nb, s->jcap = nc;
	}
	uint8_t *p = s->jbuf + s->jlen;
	p[0] = type;
	memcpy(p + 1, &a, 4);
	memcpy(p + 5, &b_or_w, 4);
	memcpy(p + 9, &t, 8);
	s->jlen += JOP_SIZE;
}

static void covis_pair(struct rec_state *s, uint32_t item, uint32_t j, int64_t t)
{
	covis_add(&s->counts[item], j, 1.0f, t);
	covis_add(&s->counts[j], item, 1.0f, t);
	journal_op(s, 'C', item, j, t);
}

void sx__rec_observe(struct rec_state *s, uint32_t user, uint32_t item, float w, int book, int64_t t,
		     int add_user)
{
	if (t >= s->horizon || counts_reserve(s, item + 1) < 0)
		return;
	int loaded = user < s->nusers && s->users[user];
	/* the live state asks for consent each time it changed, held users too; an
	 * evaluation's world treats the users without it as the live state does */
	struct rec_user *u = s->live ? sx__rec_user(s, user)
			     : loaded ? s->users[user]
			     : sx_privacy_allowed_index(user, SX_PURPOSE_PERSONALIZATION) ? user_new(s, user)
										  : NULL;
	pop_add(&s->counts[item], w, t);
	uint32_t wbits;
	memcpy(&wbits, &w, 4);
	journal_op(s, 'P', item, wbits, t);
	s->generation++;
	if (u) {
		/* u is NULL for live users without personalization consent (also
		 * withdrawn since their state was loaded): their attribute is not used */
		int sg = sx__rec_user_segment(user);
		if (sg >= 0) {
			uint64_t h = sx__rec->segnames[sg].h;
			seg_add(s, h, item, w, t);
			journal_op(s, 'S', (uint32_t)h, (uint32_t)(h >> 32), t);
		}
		/* co-visitation with the user's other recent items, before this one joins them */
		for (int r = 0; r < u->nrecent; r++) {
			uint32_t j = u->recent[r];
			if (j == item || t - u->recent_t[r] > REC_COVIS_WINDOW || u->recent_t[r] - t > REC_COVIS_WINDOW ||
			    counts_reserve(s, j + 1) < 0)
				continue;
			covis_pair(s, item, j, t);
		}
		if (add_user && (loaded || !s->live))
			user_add(s, u, item, w, book, t);
		if (s->fs && !u->als_ok) {
			if (s->ndirty == s->capdirty) {
				size_t nc = s->capdirty ? s->capdirty * 2 : 64;
				uint32_t *nd = realloc(s->dirty, nc * sizeof(uint32_t));
				if (!nd)
					return;
				s->dirty = nd, s->capdirty = nc;
			}
			s->dirty[s->ndirty++] = user;
		}
	}
}

const float *sx__rec_user_als(struct rec_state *s, struct rec_user *u)
{
	struct sx_rec_factor_source *fs = s->fs;
	if (!fs || !u || !u->ninter)
		return NULL;
	if (u->als_ok && u->als)
		return u->als;
	if (!u->als && !(u->als = malloc((size_t)fs->k * sizeof(float))))
		return NULL;
	int32_t *items = malloc(u->ninter * sizeof(int32_t) + 1);
	float *w = malloc(u->ninter * sizeof(float) + 1);
	size_t n = 0;
	if (!items || !w) {
		free(items), free(w);
		return NULL;
	}
	for (uint32_t i = 0; i < u->ninter; i++)
		if (u->inter[i].item < fs->n_items) {
			items[n] = (int32_t)u->inter[i].item;
			w[n++] = u->inter[i].w;
		}
	int rc = n ? fs->fold_in(fs->ud, items, w, n, u->als) : -1;
	free(items), free(w);
	if (rc < 0)
		return NULL;
	u->als_ok = 1;
	return u->als;
}

void sx__rec_flush_dirty(struct rec_state *s)
{
	for (size_t i = 0; i < s->ndirty; i++) {
		uint32_t user = s->dirty[i];
		if (user < s->nusers && s->users[user] && !s->users[user]->als_ok)
			sx__rec_user_als(s, s->users[user]);
	}
	s->ndirty = 0;
}

/* ---- counts snapshot ----
 * "SXRC" u32 version=2 u32 n u64 journal sequence covered, then per item:
 * u32 users, i64 t, 3 x f64 pop, u16 ncov, ncov x (u32 item, f32 score,
 * i64 t). Host order. Version 1 lacks the sequence. */

#define JKEY_LEN 14

static void jkey(uint8_t *k, uint64_t seq)
{
	memcpy(k, "rec/j/", 6);
	sx_be64(k + 6, seq);
}

/* ---- segments snapshot ----
 * "SXRS" u32 version=2 u64 journal sequence covered u32 nsegs, then per
 * segment in table order: u64 hash, f64 weight, i64 its time, u32 n, n x
 * (u32 item, f64 pop, i64 t). Host order. Version 1 lacks the weight and its
 * time (taken as the sum of the entries at the newest entry's time). */

#define SEGS_KEY "rec/segs"

/* The segment snapshot covering `covered` in a new buffer of *len bytes, or
 * NULL without memory. */
static uint8_t *segs_build(const struct rec_state *s, uint64_t covered, size_t *len)
{
	*len = 20;
	for (uint32_t i = 0; i < s->nsegs; i++)
		*len += 28 + (size_t)s->segs[i].n * 20;
	uint8_t *buf = malloc(*len), *p = buf;
	if (!buf)
		return NULL;
	uint32_t ver = 2;
	memcpy(p, "SXRS", 4), p += 4;
	memcpy(p, &ver, 4), p += 4;
	memcpy(p, &covered, 8), p += 8;
	memcpy(p, &s->nsegs, 4), p += 4;
	for (uint32_t i = 0; i < s->nsegs; i++) {
		const struct rec_seg *g = &s->segs[i];
		memcpy(p, &g->h, 8), p += 8;
		memcpy(p, &g->w, 8), p += 8;
		memcpy(p, &g->t, 8), p += 8;
		memcpy(p, &g->n, 4), p += 4;
		for (uint32_t j = 0; j < g->cap; j++) {
			if (g->e[j].item == UINT32_MAX)
				continue;
			memcpy(p, &g->e[j].item, 4), p += 4;
			memcpy(p, &g->e[j].pop, 8), p += 8;
			memcpy(p, &g->e[j].t, 8), p += 8;
		}
	}
	return buf;
}

/* Loads the segment snapshot written with the counts snapshot covering
 * `covered`; a missing one (a store from before segments) leaves them empty. */
static int segs_load(struct rec_state *s, uint64_t covered)
{
	struct sx_val v;
	int rc = sx_store_get(sx__rec->e->store, SX_T_ARTIFACTS, SEGS_KEY, strlen(SEGS_KEY), &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	const uint8_t *p = v.data, *end = p + v.len;
	uint32_t ver, n;
	uint64_t cov;
	if (v.len < 20 || memcmp(p, "SXRS", 4) != 0)
		goto bad;
	memcpy(&ver, p + 4, 4), memcpy(&cov, p + 8, 8), memcpy(&n, p + 16, 4);
	p += 20;
	if ((ver != 1 && ver != 2) || n > REC_SEG_MAX || cov != covered)
		goto bad;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t h;
		uint32_t ne;
		double w = 0;
		int64_t wt = INT64_MIN;
		if (end - p < (ver == 2 ? 28 : 12))
			goto bad;
		memcpy(&h, p, 8), p += 8;
		if (ver == 2) {
			memcpy(&w, p, 8), memcpy(&wt, p + 8, 8);
			p += 16;
			if (!isfinite(w) || w < 0 || (wt != INT64_MIN && (wt < 0 || wt > SX_EVENTS_TIME_MAX)))
				goto bad;
		}
		memcpy(&ne, p, 4), p += 4;
		if (!h || (size_t)(end - p) / 20 < ne || sx__rec_seg_find(s, h))
			goto bad;
		struct rec_seg *g = seg_new(s, h);
		if (!g)
			goto oom;
		for (uint32_t j = 0; j < ne; j++, p += 20) {
			struct rec_seg_entry x;
			memcpy(&x.item, p, 4), memcpy(&x.pop, p + 4, 8), memcpy(&x.t, p + 12, 8);
			if (x.item == UINT32_MAX || !isfinite(x.pop) || x.t < 0 || x.t > SX_EVENTS_TIME_MAX)
				goto bad;
			if (seg_find_entry(g, x.item))
				goto bad;
			struct rec_seg_entry *e = seg_entry(s, g, x.item);
			if (!e)
				goto bad; /* more pairs than the budget (or OOM) */
			*e = x;
			if (ver == 1 && x.t > wt)
				wt = x.t;
		}
		if (ver == 1)
			for (uint32_t j = 0; j < g->cap; j++)
				if (g->e[j].item != UINT32_MAX)
					w += sx_rec_decay(g->e[j].pop, wt - g->e[j].t, SEG_HALF_LIFE);
		g->w = w, g->t = wt;
	}
	if (p != end)
		goto bad;
	return 0;
oom:
	segs_clear(s);
	return sx_diag_set(SX_ENOMEM, "out of memory loading the segment popularity");
bad:
	segs_clear(s);
	return sx_diag_set(SX_ECORRUPT, "the stored segment popularity does not decode");
}

int sx__rec_counts_save(struct rec_state *s)
{
	size_t len = 20;
	for (uint32_t i = 0; i < s->ncounts; i++)
		len += 4 + 8 + 24 + 2 + (size_t)s->counts[i].ncov * 16;
	uint64_t covered = s->jseq_next ? s->jseq_next - 1 : 0;
	size_t slen;
	/* both snapshots or neither: counts with a newer `covered` than the
	 * segments would make the segments start over */
	uint8_t *buf = malloc(len), *p = buf, *sbuf = segs_build(s, covered, &slen);
	if (!buf || !sbuf) {
		free(buf), free(sbuf);
		return SX_ENOMEM;
	}
	uint32_t ver = 2, n = s->ncounts;
	memcpy(p, "SXRC", 4), p += 4;
	memcpy(p, &ver, 4), p += 4;
	memcpy(p, &n, 4), p += 4;
	memcpy(p, &covered, 8), p += 8;
	for (uint32_t i = 0; i < n; i++) {
		const struct rec_counts *c = &s->counts[i];
		memcpy(p, &c->users, 4), p += 4;
		memcpy(p, &c->t, 8), p += 8;
		memcpy(p, c->pop, 24), p += 24;
		memcpy(p, &c->ncov, 2), p += 2;
		for (uint16_t j = 0; j < c->ncov; j++) {
			memcpy(p, &c->cov[j].item, 4), p += 4;
			memcpy(p, &c->cov[j].score, 4), p += 4;
			memcpy(p, &c->cov[j].t, 8), p += 8;
		}
	}
	struct sx_store *st = sx__rec->e->store;
	int rc = sx_store_put(st, SX_T_ARTIFACTS, "rec/counts", 10, buf, len);
	if (rc == 0)
		rc = sx_store_put(st, SX_T_ARTIFACTS, SEGS_KEY, strlen(SEGS_KEY), sbuf, slen);
	free(buf), free(sbuf);
	if (rc < 0 || !s->journal)
		return rc;
	/* the records the snapshot covers go in the same batch */
	uint8_t k[JKEY_LEN];
	for (uint64_t q = s->jseq_snap + 1; q <= covered && rc == 0; q++) {
		jkey(k, q);
		rc = sx_store_del(st, SX_T_ARTIFACTS, k, JKEY_LEN);
		if (rc == SX_ENOENT)
			rc = 0;
	}
	if (rc == 0) {
		s->jseq_snap = covered;
		s->jbytes = 0;
		s->snap_bytes = len + slen;
	}
	return rc;
}

int sx__rec_journal_commit(struct rec_state *s)
{
	int rc = 0;
	if (!s->journal)
		return 0;
	if (s->jlen) {
		uint8_t k[JKEY_LEN];
		if (!s->jseq_next)
			s->jseq_next = s->jseq_snap + 1;
		jkey(k, s->jseq_next);
		rc = sx_store_put(sx__rec->e->store, SX_T_ARTIFACTS, k, JKEY_LEN, s->jbuf, s->jlen);
		if (rc == 0) {
			s->jseq_next++;
			s->jbytes += s->jlen;
		} else {
			s->jbytes = SIZE_MAX / 2; /* lost: the snapshot below must cover it */
		}
		s->jlen = 0;
	}
	size_t limit = s->snap_bytes > (4u << 20) ? s->snap_bytes : (4u << 20);
	if (s->jbytes > limit)
		rc = sx__rec_counts_save(s);
	return rc;
}

static void counts_clear(struct rec_state *s)
{
	for (uint32_t i = 0; i < s->ncounts; i++) {
		free(s->counts[i].cov);
		memset(&s->counts[i], 0, sizeof(s->counts[i]));
		s->counts[i].t = INT64_MIN;
	}
}

static int snapshot_load(struct rec_state *s)
{
	struct sx_val v;
	int rc = sx_store_get(sx__rec->e->store, SX_T_ARTIFACTS, "rec/counts", 10, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	const uint8_t *p = v.data, *end = p + v.len;
	uint32_t ver, n;
	uint64_t covered = 0;
	if (v.len < 12 || memcmp(p, "SXRC", 4) != 0)
		return sx_diag_set(SX_ECORRUPT, "the stored recommendation counts do not decode");
	memcpy(&ver, p + 4, 4), memcpy(&n, p + 8, 4);
	p += 12;
	if (ver == 2) {
		if (v.len < 20)
			return sx_diag_set(SX_ECORRUPT, "the stored recommendation counts do not decode");
		memcpy(&covered, p, 8);
		p += 8;
	}
	if ((ver != 1 && ver != 2) || n > (uint32_t)(v.len / 38) || counts_reserve(s, n) < 0)
		return sx_diag_set(SX_ECORRUPT, "the stored recommendation counts do not decode");
	for (uint32_t i = 0; i < n; i++) {
		struct rec_counts *c = &s->counts[i];
		uint16_t nc;
		if (end - p < 38)
			goto bad;
		memcpy(&c->users, p, 4), p += 4;
		memcpy(&c->t, p, 8), p += 8;
		memcpy(c->pop, p, 24), p += 24;
		memcpy(&nc, p, 2), p += 2;
		if (nc > REC_COVIS_MAX || end - p < (ptrdiff_t)nc * 16)
			goto bad;
		for (int k = 0; k < REC_WINDOWS; k++)
			if (!isfinite(c->pop[k]))
				goto bad;
		if (nc) {
			c->cov = malloc(REC_COVIS_MAX * sizeof(struct rec_nb));
			if (!c->cov)
				return SX_ENOMEM;
			c->capcov = REC_COVIS_MAX;
		}
		for (uint16_t j = 0; j < nc; j++) {
			memcpy(&c->cov[j].item, p, 4), p += 4;
			memcpy(&c->cov[j].score, p, 4), p += 4;
			memcpy(&c->cov[j].t, p, 8), p += 8;
			if (!isfinite(c->cov[j].score))
				goto bad;
		}
		c->ncov = nc;
	}
	s->jseq_snap = covered;
	s->snap_bytes = v.len;
	return 0;
bad:
	counts_clear(s);
	return sx_diag_set(SX_ECORRUPT, "the stored recommendation counts do not decode");
}

struct replay {
	struct rec_state *s;
	int apply;
	uint64_t records, ops, bad;
	uint32_t last_item; /* the record's last 'P', for 'S' */
	float last_w;
	int has_last;
};

static int replay_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct replay *r = ud;
	struct rec_state *s = r->s;
	if (k->len != JKEY_LEN || v->len % JOP_SIZE) {
		r->bad++;
		return 0;
	}
	uint64_t seq = sx_get_be64((const uint8_t *)k->data + 6);
	if (seq <= s->jseq_snap)
		return 0;
	s->jseq_next = seq + 1;
	if (!r->apply)
		return 0;
	const uint8_t *p = v->data;
	r->has_last = 0;
	for (size_t off = 0; off < v->len; off += JOP_SIZE) {
		uint32_t a, b;
		int64_t t;
		memcpy(&a, p + off + 1, 4);
		memcpy(&b, p + off + 5, 4);
		memcpy(&t, p + off + 9, 8);
		if (t < 0 || t > SX_EVENTS_TIME_MAX) { /* never written: events.track refuses such times */
			r->bad++;
			r->has_last = 0;
			continue;
		}
		if (p[off] == 'P') {
			float w;
			memcpy(&w, &b, 4);
			if (!isfinite(w) || counts_reserve(s, a + 1) < 0) {
				r->bad++;
				r->has_last = 0; /* an 'S' that follows belongs to this 'P' */
				continue;
			}
			pop_add(&s->counts[a], w, t);
			r->last_item = a, r->last_w = w, r->has_last = 1;
		} else if (p[off] == 'S') {
			uint64_t h = (uint64_t)a | (uint64_t)b << 32;
			if (!r->has_last || !h) {
				r->bad++;
				continue;
			}
			seg_add(s, h, r->last_item, r->last_w, t);
		} else if (p[off] == 'C') {
			if (counts_reserve(s, (a > b ? a : b) + 1) < 0) {
				r->bad++;
				continue;
			}
			covis_add(&s->counts[a], b, 1.0f, t);
			covis_add(&s->counts[b], a, 1.0f, t);
		} else {
			r->bad++;
			continue;
		}
		r->ops++;
	}
	r->records++;
	s->jbytes += v->len;
	return 0;
}

int sx__rec_counts_load(struct rec_state *s)
{
	int ok = snapshot_load(s) == 0;
	if (ok && segs_load(s, s->jseq_snap) < 0)
		sx_log_warn("recommend: %s; segment popularity starts from the journal", sx_diag_last());
	if (!ok) {
		/* the journal alone holds only the tail: start empty, and let the
		 * next snapshot delete the journal (from sequence 1 up) */
		sx_log_warn("recommend: %s; popularity and co-visitation start empty", sx_diag_last());
		counts_clear(s);
		segs_clear(s);
		s->jseq_snap = 0;
		s->snap_bytes = 0;
	}
	uint8_t lo[JKEY_LEN];
	jkey(lo, s->jseq_snap + 1);
	struct replay r = {s, ok, 0, 0, 0, 0, 0, 0};
	s->jseq_next = s->jseq_snap + 1;
	int rc = sx_store_scan(sx__rec->e->store, SX_T_ARTIFACTS, lo, JKEY_LEN, "rec/j0", 6, 0, replay_cb, &r);
	if (rc < 0)
		return rc;
	if (r.bad)
		sx_log_warn("recommend: %llu unreadable count journal entries skipped", (unsigned long long)r.bad);
	if (r.records)
		sx_log_info("recommend: replayed %llu count journal records (%llu operations)",
			    (unsigned long long)r.records, (unsigned long long)r.ops);
	if (!ok)
		s->jbytes = SIZE_MAX / 2; /* snapshot at the first events.track */
	s->generation++;
	s->journal = 1;
	return 0;
}
