/* Per-hour compact copies of the events, cached in memory for funnels
 * (see timeline.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/plugin.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "store/store.h"

#define BUCKETS 4096
#define NAME_SLOTS 2048 /* > 2 x SX_TL_NAMES_MAX */
#define MS_BITS 22      /* 3,600,000 < 2^22 */
/* Events are stamped at ingest and committed shortly after: an extension
 * rereads this much before the previous build, so that such an event, not
 * in that build's snapshot, is not taken for a late one. */
#define SETTLE_MS 5000

struct blk {
	int64_t hour;
	int64_t last; /* the time of its latest event (hour - 1: none) */
	int64_t at;   /* wall clock when it was built */
	uint64_t count, gen, used;
	uint64_t *e;
	size_t n;
	int refs;   /* the cache's own + one per set holding it */
	int hashed;
	struct blk *next;
};

struct sx_tl_set {
	int64_t h0;
	size_t nh;
	uint64_t gen;
	struct blk **b;  /* per hour: the block, NULL if the hour is empty or not built yet */
	struct blk **old; /* per hour: the block to extend (need EXTEND), referenced */
	uint8_t *need;   /* per hour: BUILD, EXTEND, or BUILT once sx__tl_fill made it */
};

enum { BUILD = 1, EXTEND, BUILT };

static struct blk *table[BUCKETS];
static uint64_t gen = 1, tick, entries, built, reused, extended;

/* ---- names ---- */

static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static char *names[SX_TL_NAMES_MAX + 1];
static size_t name_len[SX_TL_NAMES_MAX + 1];
static uint32_t nnames;
static uint16_t slots[NAME_SLOTS]; /* name id, 0: free */

/* Looks name up, adding it when add is set; 0 if absent or the table is full. */
static uint32_t intern(const char *s, size_t len, int add)
{
	uint32_t h = (uint32_t)XXH3_64bits(s, len) & (NAME_SLOTS - 1), id = 0;
	pthread_mutex_lock(&names_mu);
	for (;; h = (h + 1) & (NAME_SLOTS - 1)) {
		uint16_t x = slots[h];
		if (!x)
			break;
		if (name_len[x] == len && !memcmp(names[x], s, len)) {
			id = x;
			goto out;
		}
	}
	if (add && nnames < SX_TL_NAMES_MAX && (names[nnames + 1] = malloc(len ? len : 1))) {
		id = ++nnames;
		memcpy(names[id], s, len);
		name_len[id] = len;
		slots[h] = (uint16_t)id;
	}
out:
	pthread_mutex_unlock(&names_mu);
	return id;
}

uint32_t sx__tl_name_id(const char *name, size_t len)
{
	return intern(name, len, 0);
}

/* ---- blocks ---- */

static struct blk **slot_of(int64_t hour)
{
	uint64_t h = (uint64_t)(hour / SX_EV_HOUR_MS);
	return &table[(h * 0x9e3779b97f4a7c15ULL) >> 52 & (BUCKETS - 1)];
}

static void unref(struct blk *b)
{
	if (--b->refs == 0) {
		free(b->e);
		free(b);
	}
}

static void unhash(struct blk *b)
{
	for (struct blk **pp = slot_of(b->hour); *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	b->hashed = 0;
	entries -= b->n;
	unref(b);
}

/* The count of the hour's "*" counter in txn (0 if there is none), and
 * with users set its bitmap (NULL if empty). */
static int hour_count(MDB_txn *txn, int64_t hour, uint64_t *count, roaring_bitmap_t **users)
{
	uint8_t k[512];
	struct sx_val v;
	size_t kl = sx__ev_metric_key(k, SX_EV_HOUR, "*", 1, "", 0, hour, "", 0);
	*count = 0;
	if (users)
		*users = NULL;
	int rc = sx__ev_get(txn, SX_T_COUNTERS, k, kl, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	if (users) {
		struct sx_ev_counter c = {0};
		if ((rc = sx__ev_counter_merge(&c, v.data, v.len)) < 0)
			return rc;
		*count = c.count;
		*users = c.users;
		return 0;
	}
	/* [count, sum, nsum, users]: only the first element */
	const uint8_t *p = v.data;
	if (v.len < 2 || p[0] != 0x94)
		return sx_diag_set(SX_ECORRUPT, "a stored counter record does not decode");
	if (p[1] < 0x80)
		*count = p[1];
	else if (p[1] == 0xcc && v.len >= 3)
		*count = p[2];
	else if (p[1] == 0xcd && v.len >= 4)
		*count = (uint64_t)p[2] << 8 | p[3];
	else if (p[1] == 0xce && v.len >= 6)
		*count = sx_get_be32(p + 2);
	else if (p[1] == 0xcf && v.len >= 10)
		*count = sx_get_be64(p + 2);
	else
		return sx_diag_set(SX_ECORRUPT, "a stored counter record does not decode");
	return 0;
}

struct sx_tl_set *sx__tl_acquire(MDB_txn *txn, int64_t from, int64_t to)
{
	int64_t h0 = sx__ev_floor(from, SX_EV_HOUR_MS), h1 = sx__ev_floor(to - 1, SX_EV_HOUR_MS) + SX_EV_HOUR_MS;
	struct sx_tl_set *s = calloc(1, sizeof(*s));
	if (!s || to <= from) {
		if (s)
			return s;
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	s->h0 = h0;
	s->nh = (size_t)((h1 - h0) / SX_EV_HOUR_MS);
	s->gen = gen;
	s->b = calloc(s->nh, sizeof(*s->b));
	s->old = calloc(s->nh, sizeof(*s->old));
	s->need = calloc(s->nh, 1);
	if (!s->b || !s->old || !s->need) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		sx__tl_release(s);
		return NULL;
	}
	tick++;
	for (size_t i = 0; i < s->nh; i++) {
		int64_t hour = h0 + (int64_t)i * SX_EV_HOUR_MS;
		uint64_t count;
		int rc = hour_count(txn, hour, &count, NULL);
		if (rc < 0) {
			sx__tl_release(s);
			return NULL;
		}
		if (!count)
			continue;
		struct blk *b = *slot_of(hour);
		for (; b && b->hour != hour; b = b->next)
			;
		if (b && b->count == count && b->gen == gen) {
			b->refs++;
			b->used = tick;
			s->b[i] = b;
			reused++;
		} else if (b && b->count < count && b->gen == gen) {
			/* events were added: most likely after its latest one (the hour
			 * being filled now), which sx__tl_fill reads alone */
			b->refs++;
			s->old[i] = b;
			s->need[i] = EXTEND;
		} else {
			s->need[i] = BUILD;
		}
	}
	return s;
}

struct nmap {
	const char *s[NAME_SLOTS];
	size_t len[NAME_SLOTS];
	uint32_t id[NAME_SLOTS];
};

/* The id of a name, through a per-build map in front of the locked table. */
static uint32_t name_of(struct nmap *m, const uint8_t *s, size_t len)
{
	uint32_t h = (uint32_t)XXH3_64bits(s, len) & (NAME_SLOTS - 1);
	for (; m->s[h]; h = (h + 1) & (NAME_SLOTS - 1))
		if (m->len[h] == len && !memcmp(m->s[h], s, len))
			return m->id[h];
	uint32_t id = intern((const char *)s, len, 1);
	if (id) {
		m->s[h] = names[id]; /* stable: names are never freed */
		m->len[h] = len;
		m->id[h] = id;
	}
	return id;
}

static int push(struct blk *b, size_t *cap, uint64_t x)
{
	if (b->n == *cap) {
		size_t c = *cap ? *cap * 2 : 1024;
		uint64_t *p = realloc(b->e, c * sizeof(*p));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		b->e = p, *cap = c;
	}
	b->e[b->n++] = x;
	return 0;
}

/* Appends to b the events of `users` with since <= time < the hour's end,
 * in (user, time, seq) order. */
static int read_events(MDB_cursor *cur, struct nmap *m, int64_t since, const roaring_bitmap_t *users, struct blk *b,
		       size_t *cap)
{
	int64_t end = b->hour + SX_EV_HOUR_MS;
	int rc = 0;
	roaring_uint32_iterator_t *it = roaring_create_iterator(users);
	if (!it)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (; rc == 0 && it->has_value; roaring_advance_uint32_iterator(it)) {
		uint32_t u = it->current_value;
		uint8_t lo[SX_EV_EVKEY];
		MDB_val k = {sizeof(lo), lo}, v;
		sx__ev_event_key(lo, u, since, 0);
		int r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		for (; r == 0 && rc == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			const uint8_t *kp = k.mv_data, *vp = v.mv_data;
			if (k.mv_size != SX_EV_EVKEY) {
				rc = sx_diag_set(SX_ECORRUPT, "a stored event key does not decode");
				break;
			}
			int64_t t = (int64_t)sx_get_be64(kp + 4);
			if (sx_get_be32(kp) != u || t >= end)
				break;
			/* [name, item, properties]: the name is a str right after the array header */
			size_t nl, h;
			if (v.mv_size >= 2 && vp[0] == 0x93 && (vp[1] & 0xe0) == 0xa0)
				h = 2, nl = vp[1] & 0x1f;
			else if (v.mv_size >= 3 && vp[0] == 0x93 && vp[1] == 0xd9)
				h = 3, nl = vp[2];
			else {
				rc = sx_diag_set(SX_ECORRUPT, "a stored event record does not decode");
				break;
			}
			if (nl > v.mv_size - h) {
				rc = sx_diag_set(SX_ECORRUPT, "a stored event record does not decode");
				break;
			}
			uint32_t id = name_of(m, vp + h, nl);
			if (!id) {
				rc = sx_diag_set(SX_ELIMIT, "more than %d event names", SX_TL_NAMES_MAX);
				break;
			}
			if (t > b->last)
				b->last = t;
			rc = push(b, cap, (uint64_t)u << 32 | (uint64_t)(t - b->hour) << 10 | id);
		}
		if (r != 0 && r != MDB_NOTFOUND && rc == 0)
			rc = sx_diag_set(SX_EIO, "store scan: %s", mdb_strerror(r));
	}
	roaring_free_uint32_iterator(it);
	return rc;
}

static struct blk *blk_new(int64_t hour, uint64_t count, uint64_t g)
{
	struct blk *b = calloc(1, sizeof(*b));
	if (!b) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	b->hour = hour, b->last = hour - 1, b->count = count, b->gen = g, b->refs = 1;
	b->at = sx_wall_ms();
	return b;
}

static void blk_drop(struct blk *b)
{
	if (b) {
		free(b->e);
		free(b);
	}
}

static int build(MDB_txn *txn, MDB_cursor *cur, struct nmap *m, int64_t hour, uint64_t g, struct blk **out)
{
	roaring_bitmap_t *users;
	uint64_t count;
	size_t cap = 0;
	int rc = hour_count(txn, hour, &count, &users);
	if (rc < 0)
		return rc;
	struct blk *b = blk_new(hour, count, g);
	if (!b)
		rc = SX_ENOMEM;
	else if (users)
		rc = read_events(cur, m, hour, users, b, &cap);
	if (users)
		roaring_bitmap_free(users);
	if (rc < 0) {
		blk_drop(b);
		return rc;
	}
	*out = b;
	return 0;
}

/* A new block for old's hour as of txn: old's events before a time W, and
 * the events read from W on, only for the users active in W's minute or
 * later. W is old's latest event, or SETTLE_MS before old was built if that
 * is earlier (events stamped later than the clock: demo data, skewed
 * clients). Exact when every event the store added to the hour since old
 * was built lies at or after W, which the hour's count proves: 1 (with *out
 * NULL) when it does not (a late event), so the caller builds the hour whole. */
static int extend(MDB_txn *txn, MDB_cursor *cur, struct nmap *m, const struct blk *old, struct blk **out)
{
	int64_t w = old->last, end = old->hour + SX_EV_HOUR_MS;
	uint64_t count;
	size_t cap = 0;
	*out = NULL;
	if (old->at - SETTLE_MS < w)
		w = old->at - SETTLE_MS;
	if (w < old->hour)
		w = old->hour;
	int rc = hour_count(txn, old->hour, &count, NULL);
	if (rc < 0)
		return rc;
	roaring_bitmap_t *users = sx__ev_series_users(txn, "*", 1, "", 0, "", 0, sx__ev_floor(w, SX_EV_MIN_MS), end);
	if (!users) {
		rc = sx_diag_last_code();
		return rc < 0 ? rc : sx_diag_set(SX_EINTERNAL, "bitmap query failed");
	}
	struct blk *d = blk_new(old->hour, 0, old->gen), *b = NULL;
	rc = d ? read_events(cur, m, w, users, d, &cap) : SX_ENOMEM;
	roaring_bitmap_free(users);
	uint64_t wms = (uint64_t)(w - old->hour), kept = 0;
	for (size_t i = 0; rc == 0 && i < old->n; i++)
		kept += (old->e[i] >> 10 & ((1u << MS_BITS) - 1)) < wms;
	if (rc == 0 && kept + d->n != count)
		rc = 1;
	if (rc == 0 && !(b = blk_new(old->hour, count, old->gen)))
		rc = SX_ENOMEM;
	if (rc == 0 && !(b->e = malloc((kept + d->n ? kept + d->n : 1) * sizeof(*b->e)))) {
		blk_drop(b);
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	}
	if (rc == 0) {
		/* both runs are in (user, time, seq) order; a user's kept events
		 * come before W, the read ones at or after it */
		uint64_t last = 0;
		size_t i = 0, j = 0;
		while (i < old->n || j < d->n) {
			uint64_t ms = i < old->n ? old->e[i] >> 10 & ((1u << MS_BITS) - 1) : 0;
			if (i < old->n && ms >= wms) {
				i++;
				continue;
			}
			if (i < old->n && (j == d->n || old->e[i] >> 32 <= d->e[j] >> 32)) {
				b->e[b->n++] = old->e[i++];
				last = ms > last ? ms : last;
			} else {
				b->e[b->n++] = d->e[j++];
			}
		}
		b->last = d->n ? d->last : kept ? old->hour + (int64_t)last : old->hour - 1;
		*out = b;
	}
	blk_drop(d);
	return rc;
}

int sx__tl_fill(struct sx_tl_set *s, MDB_txn *txn)
{
	MDB_cursor *cur;
	struct nmap *m = NULL;
	int rc = 0;
	for (size_t i = 0; i < s->nh && rc == 0; i++) {
		if (s->need[i] != BUILD && s->need[i] != EXTEND)
			continue;
		if (!m) {
			if (!(m = calloc(1, sizeof(*m))))
				return sx_diag_set(SX_ENOMEM, "out of memory");
			if ((rc = mdb_cursor_open(txn, sx_store_dbi(sx__ev_eng->store, SX_T_EVENTS), &cur)) != 0) {
				free(m);
				return sx_diag_set(SX_EIO, "store cursor: %s", mdb_strerror(rc));
			}
		}
		int64_t hour = s->h0 + (int64_t)i * SX_EV_HOUR_MS;
		rc = s->need[i] == EXTEND ? extend(txn, cur, m, s->old[i], &s->b[i]) : 1;
		if (rc == 0)
			__atomic_add_fetch(&extended, 1, __ATOMIC_RELAXED);
		else if (rc == 1)
			rc = build(txn, cur, m, hour, s->gen, &s->b[i]);
		if (rc == 0)
			s->need[i] = BUILT;
	}
	if (m) {
		mdb_cursor_close(cur);
		free(m);
	}
	return rc;
}

void sx__tl_each(const struct sx_tl_set *s, int64_t from, int64_t to, sx_tl_fn fn, void *ud)
{
	for (size_t i = 0; i < s->nh; i++) {
		const struct blk *b = s->b[i];
		if (!b)
			continue;
		int64_t hour = b->hour;
		int whole = hour >= from && hour + SX_EV_HOUR_MS <= to;
		for (size_t j = 0; j < b->n; j++) {
			uint64_t x = b->e[j];
			int64_t t = hour + (int64_t)(x >> 10 & ((1u << MS_BITS) - 1));
			if (whole || (t >= from && t < to))
				fn(ud, (uint32_t)(x >> 32), t, (uint32_t)(x & 1023));
		}
	}
}

size_t sx__tl_nhours(const struct sx_tl_set *s)
{
	return s->nh;
}

const uint64_t *sx__tl_block(const struct sx_tl_set *s, size_t i, int64_t *hour, size_t *n)
{
	const struct blk *b = s->b[i];
	*hour = s->h0 + (int64_t)i * SX_EV_HOUR_MS;
	*n = b ? b->n : 0;
	return b ? b->e : NULL;
}

static void evict(void)
{
	while (entries > SX_TL_CAP_ENTRIES) {
		struct blk *old = NULL;
		for (int i = 0; i < BUCKETS; i++)
			for (struct blk *b = table[i]; b; b = b->next)
				if (b->refs == 1 && (!old || b->used < old->used))
					old = b;
		if (!old)
			return;
		unhash(old);
	}
}

void sx__tl_release(struct sx_tl_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; s->b && i < s->nh; i++) {
		struct blk *b = s->b[i];
		if (s->old && s->old[i])
			unref(s->old[i]);
		if (!b)
			continue;
		if (s->need && s->need[i] == BUILT && b->gen == gen && b->n <= SX_TL_CAP_ENTRIES) {
			struct blk **pp = slot_of(b->hour);
			for (struct blk *o = *pp; o; o = o->next)
				if (o->hour == b->hour) {
					unhash(o);
					break;
				}
			b->refs++;
			b->hashed = 1;
			b->used = tick;
			b->next = *slot_of(b->hour);
			*slot_of(b->hour) = b;
			entries += b->n;
			built++;
		}
		unref(b);
	}
	free(s->b);
	free(s->old);
	free(s->need);
	free(s);
	evict();
}

void sx__tl_invalidate(void)
{
	gen++;
}

void sx__tl_clear(void)
{
	for (int i = 0; i < BUCKETS; i++)
		while (table[i])
			unhash(table[i]);
	gen++;
}

uint64_t sx__tl_extended(void)
{
	return __atomic_load_n(&extended, __ATOMIC_RELAXED);
}

void sx__tl_stats(uint64_t *n, uint64_t *b, uint64_t *r)
{
	*n = entries, *b = built, *r = reused;
}
