/* Per-hour compact copies of the events, cached in memory for funnels
 * (see timeline.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
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
	int keep;        /* its snapshots hold every deletion of its generation: blocks may be cached */
	struct blk **b;  /* per hour: the block, NULL if the hour is empty or not built yet */
	struct blk **old; /* per hour: the block to extend (need EXTEND), referenced */
	uint8_t *need;   /* per hour: BUILD, EXTEND, or BUILT once sx__tl_fill made it */
	/* sx__tl_fill_part: each part's slice of the hours to build, the
	 * snapshot it read and its outcome; parts finished */
	struct blk **pb[SX_TL_PARTS_MAX];
	size_t txnid[SX_TL_PARTS_MAX];
	int prc[SX_TL_PARTS_MAX];
	int done;
};

enum { BUILD = 1, EXTEND, BUILT };

static struct blk *table[BUCKETS];
static uint64_t gen = 1, tick, entries, built, reused, extended;
/* the store batch holding the deletions that began the generation */
static uint64_t gen_seq;

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
	/* a snapshot taken before that batch committed may still hold the
	 * deleted events: blocks read from it serve this query, never a later
	 * one (with nothing filling or committing, every write is in LMDB) */
	s->keep = sx_store_durable_seq(sx__ev_eng->store) >= gen_seq || sx_store_idle(sx__ev_eng->store);
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

/* Where an event record's name lies: [name, item, properties], the name a
 * str right after the array header. */
static int name_at(const uint8_t *vp, size_t n, size_t *h, size_t *nl)
{
	if (n >= 2 && vp[0] == 0x93 && (vp[1] & 0xe0) == 0xa0)
		*h = 2, *nl = vp[1] & 0x1f;
	else if (n >= 3 && vp[0] == 0x93 && vp[1] == 0xd9)
		*h = 3, *nl = vp[2];
	else
		return sx_diag_set(SX_ECORRUPT, "a stored event record does not decode");
	if (*nl > n - *h)
		return sx_diag_set(SX_ECORRUPT, "a stored event record does not decode");
	return 0;
}

/* The event under the cursor if it is user u's and before `end`: 1 with its
 * time and name id, 0 past them, or an error. */
static int event_of(const MDB_val *k, const MDB_val *v, uint32_t u, int64_t end, struct nmap *m, int64_t *t,
		    uint32_t *id)
{
	const uint8_t *kp = k->mv_data;
	size_t nl = 0, h = 0;
	int rc;
	if (k->mv_size != SX_EV_EVKEY)
		return sx_diag_set(SX_ECORRUPT, "a stored event key does not decode");
	*t = (int64_t)sx_get_be64(kp + 4);
	if (sx_get_be32(kp) != u || *t >= end)
		return 0;
	if ((rc = name_at(v->mv_data, v->mv_size, &h, &nl)) < 0)
		return rc;
	if (!(*id = name_of(m, (const uint8_t *)v->mv_data + h, nl)))
		return sx_diag_set(SX_ELIMIT, "more than %d event names", SX_TL_NAMES_MAX);
	return 1;
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
			int64_t t;
			uint32_t id;
			if ((rc = event_of(&k, &v, u, end, m, &t, &id)) <= 0)
				break;
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

/* The least user index u at which the (user <= u, hour) pairs of the hours'
 * bitmaps hb[0..n) (NULL: empty) reach target. */
static uint32_t split_at(roaring_bitmap_t *const *hb, size_t n, uint64_t target)
{
	uint64_t lo = 0, hi = UINT32_MAX;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2, w = 0;
		for (size_t i = 0; i < n; i++)
			w += hb[i] ? roaring_bitmap_rank(hb[i], (uint32_t)mid) : 0;
		if (w >= target)
			hi = mid;
		else
			lo = mid + 1;
	}
	return (uint32_t)lo;
}

/* Builds the blocks of hours [i0, i1) of s, each of which needs BUILD, into
 * out[i0..i1), in one walk of the events table: the users active in any of
 * them in index order (of those, the part-th of nparts slices holding about
 * as many (user, hour) pairs each), each
 * user's events of the span read with one cursor positioning (none when the
 * cursor already stands on them), appended to their hour's block. Users
 * ascend and a user's events come in (time, seq) order, so every block comes
 * out sorted, and the parts' blocks of an hour concatenated in part order
 * are too. */
static int build_run(struct sx_tl_set *s, MDB_txn *txn, MDB_cursor *cur, struct nmap *m, size_t i0, size_t i1,
		     int part, int nparts, struct blk **out)
{
	int64_t start = s->h0 + (int64_t)i0 * SX_EV_HOUR_MS, end = s->h0 + (int64_t)i1 * SX_EV_HOUR_MS;
	size_t *cap = calloc(i1 - i0, sizeof(*cap));
	roaring_bitmap_t *all = roaring_bitmap_create(), **hb = NULL;
	roaring_uint32_iterator_t *it = NULL;
	int rc = 0;
	if (nparts > 1 && !(hb = calloc(i1 - i0, sizeof(*hb))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (!cap || !all || rc < 0) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = i0; i < i1 && rc == 0; i++) {
		roaring_bitmap_t *users;
		uint64_t count;
		size_t want;
		if ((rc = hour_count(txn, s->h0 + (int64_t)i * SX_EV_HOUR_MS, &count, &users)) < 0)
			break;
		want = (size_t)(count / (uint64_t)nparts) + (nparts > 1 ? 64 : 0);
		if (!(out[i] = blk_new(s->h0 + (int64_t)i * SX_EV_HOUR_MS, count, s->gen)))
			rc = SX_ENOMEM;
		else if (want && !(out[i]->e = malloc(want * sizeof(uint64_t))))
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
		else
			cap[i - i0] = want;
		if (users) {
			roaring_bitmap_or_inplace(all, users);
			if (hb)
				hb[i - i0] = users;
			else
				roaring_bitmap_free(users);
		}
	}
	if (rc < 0 || !(it = roaring_create_iterator(all))) {
		rc = rc < 0 ? rc : sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	uint64_t first = 0, last = UINT32_MAX;
	if (hb) {
		/* slices of equal (user, hour) pairs, about equal events: an equal
		 * number of users leaves the part with the older, busier users
		 * twice the work */
		uint64_t total = 0;
		for (size_t i = 0; i < i1 - i0; i++)
			total += hb[i] ? roaring_bitmap_get_cardinality(hb[i]) : 0;
		if (part > 0)
			first = split_at(hb, i1 - i0, total * (uint64_t)part / (uint64_t)nparts) + 1;
		if (part < nparts - 1)
			last = split_at(hb, i1 - i0, total * (uint64_t)(part + 1) / (uint64_t)nparts);
		if (first > last || first > UINT32_MAX)
			goto out;
	}
	roaring_move_uint32_iterator_equalorlarger(it, (uint32_t)first);
	MDB_val k = {0, NULL}, v;
	int at = MDB_NOTFOUND; /* 0 when the cursor stands on (k, v) */
	uint64_t nusers = 0;
	for (; rc == 0 && it->has_value && it->current_value <= last; roaring_advance_uint32_iterator(it)) {
		uint32_t u = it->current_value;
		if ((++nusers & 4095) == 0 && (rc = sx_store_rtxn_check(sx__ev_eng->store, txn)) < 0)
			break;
		if (at != 0 || k.mv_size != SX_EV_EVKEY || sx_get_be32(k.mv_data) != u ||
		    (int64_t)sx_get_be64((const uint8_t *)k.mv_data + 4) < start) {
			uint8_t lo[SX_EV_EVKEY];
			sx__ev_event_key(lo, u, start, 0);
			k.mv_size = sizeof(lo), k.mv_data = lo;
			at = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		}
		for (; at == 0; at = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			int64_t t;
			uint32_t id;
			if ((rc = event_of(&k, &v, u, end, m, &t, &id)) <= 0)
				break;
			size_t i = (size_t)((t - s->h0) / SX_EV_HOUR_MS);
			struct blk *b = out[i];
			if (t > b->last)
				b->last = t;
			if ((rc = push(b, &cap[i - i0], (uint64_t)u << 32 | (uint64_t)(t - b->hour) << 10 | id)) < 0)
				break;
		}
		if (at != 0 && at != MDB_NOTFOUND && rc == 0)
			rc = sx_diag_set(SX_EIO, "store scan: %s", mdb_strerror(at));
	}
out:
	if (it)
		roaring_free_uint32_iterator(it);
	if (all)
		roaring_bitmap_free(all);
	for (size_t i = 0; hb && i < i1 - i0; i++)
		if (hb[i])
			roaring_bitmap_free(hb[i]);
	free(hb);
	free(cap);
	if (rc < 0)
		for (size_t i = i0; i < i1; i++) {
			blk_drop(out[i]);
			out[i] = NULL;
		}
	return rc;
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
	MDB_cursor *cur = NULL;
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
		if (s->need[i] != EXTEND)
			continue;
		rc = extend(txn, cur, m, s->old[i], &s->b[i]);
		if (rc == 0) {
			__atomic_add_fetch(&extended, 1, __ATOMIC_RELAXED);
			s->need[i] = BUILT;
		} else if (rc == 1) {
			s->need[i] = BUILD;
			rc = 0;
		}
	}
	/* consecutive hours in one walk: an hour alone costs a cursor
	 * positioning per user active in it, a run about one per user */
	for (size_t i = 0; i < s->nh && rc == 0;) {
		size_t j = i;
		while (j < s->nh && s->need[j] == BUILD)
			j++;
		if (j == i) {
			i++;
			continue;
		}
		if ((rc = build_run(s, txn, cur, m, i, j, 0, 1, s->b)) == 0)
			for (; i < j; i++)
				s->need[i] = BUILT;
	}
	if (m) {
		mdb_cursor_close(cur);
		free(m);
	}
	return rc;
}

static void drop_part(struct sx_tl_set *s, int p)
{
	if (!s->pb[p])
		return;
	for (size_t i = 0; i < s->nh; i++)
		blk_drop(s->pb[p][i]);
	free(s->pb[p]);
	s->pb[p] = NULL;
}

/* Concatenates the parts' blocks of each hour, when every part succeeded
 * reading one snapshot: 0; 1 if the snapshots differed (the hours are left
 * to build); or the first part's error. */
static int join(struct sx_tl_set *s, int nparts)
{
	int rc = 0;
	for (int p = 0; p < nparts && rc == 0; p++)
		if (s->prc[p] < 0)
			rc = s->prc[p];
		else if (s->txnid[p] != s->txnid[0])
			rc = 1;
	for (size_t i = 0; i < s->nh && rc == 0; i++) {
		struct blk *b = s->pb[0][i];
		if (!b)
			continue;
		size_t n = 0;
		for (int p = 0; p < nparts; p++)
			n += s->pb[p][i]->n;
		uint64_t *e = realloc(b->e, (n ? n : 1) * sizeof(*e));
		if (!e) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			break;
		}
		b->e = e;
		for (int p = 1; p < nparts; p++) {
			const struct blk *x = s->pb[p][i];
			if (x->n)
				memcpy(b->e + b->n, x->e, x->n * sizeof(*e));
			b->n += x->n;
			if (x->last > b->last)
				b->last = x->last;
		}
		s->b[i] = b;
		s->pb[0][i] = NULL;
		s->need[i] = BUILT;
	}
	for (int p = 0; p < nparts; p++)
		drop_part(s, p);
	return rc;
}

int sx__tl_fill_part(struct sx_tl_set *s, MDB_txn *txn, int part, int nparts)
{
	MDB_cursor *cur = NULL;
	struct nmap *m;
	int rc = 0;
	if (nparts < 1 || nparts > SX_TL_PARTS_MAX || part < 0 || part >= nparts)
		return sx_diag_set(SX_EINVAL, "part %d of %d", part, nparts);
	m = calloc(1, sizeof(*m));
	s->txnid[part] = mdb_txn_id(txn);
	if (!m || !(s->pb[part] = calloc(s->nh ? s->nh : 1, sizeof(struct blk *))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	else if ((rc = mdb_cursor_open(txn, sx_store_dbi(sx__ev_eng->store, SX_T_EVENTS), &cur)) != 0)
		rc = sx_diag_set(SX_EIO, "store cursor: %s", mdb_strerror(rc));
	for (size_t i = 0; i < s->nh && rc == 0;) {
		size_t j = i;
		while (j < s->nh && s->need[j] == BUILD)
			j++;
		if (j == i)
			i++;
		else
			rc = build_run(s, txn, cur, m, i, j, part, nparts, s->pb[part]), i = j;
	}
	if (cur)
		mdb_cursor_close(cur);
	free(m);
	s->prc[part] = rc;
	if (__atomic_add_fetch(&s->done, 1, __ATOMIC_ACQ_REL) < nparts)
		return rc;
	int jrc = join(s, nparts);
	return jrc < 0 ? jrc : rc;
}

int sx__tl_pending(const struct sx_tl_set *s, size_t *build, size_t *extend)
{
	*build = *extend = 0;
	for (size_t i = 0; i < s->nh; i++) {
		*build += s->need[i] == BUILD;
		*extend += s->need[i] == EXTEND;
	}
	return *build + *extend > 0;
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
		if (s->keep && s->need && s->need[i] == BUILT && b->gen == gen && b->n <= SX_TL_CAP_ENTRIES) {
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
	for (int p = 0; p < SX_TL_PARTS_MAX; p++)
		drop_part(s, p);
	free(s);
	evict();
}

void sx__tl_invalidate(void)
{
	gen++;
	gen_seq = sx_store_filling_seq(sx__ev_eng->store);
}

void sx__tl_clear(void)
{
	for (int i = 0; i < BUCKETS; i++)
		while (table[i])
			unhash(table[i]);
	gen++;
	gen_seq = 0;
}

uint64_t sx__tl_extended(void)
{
	return __atomic_load_n(&extended, __ATOMIC_RELAXED);
}

void sx__tl_stats(uint64_t *n, uint64_t *b, uint64_t *r)
{
	*n = entries, *b = built, *r = reused;
}

/* ---- warm-up ---- */

#define WARM_EVERY_MS 60000
#define WARM_SKEW_MS (5 * SX_EV_MIN_MS) /* events stamped this far ahead of the clock still count as latest */
#define WARM_PARTS 2                     /* the machine's cores, or most servers' */
#define WARM_PARALLEL_HOURS 24           /* fewer hours to build: one piece is as fast */

static struct {
	uv_loop_t *loop;
	uv_timer_t timer;
	uv_work_t work;
	uint32_t days;
	int on, busy, stopping;
	void (*idle_cb)(void);
	struct sx_tl_set *set;
	int nparts, pending;
	int rc;
	char err[256];
	uint64_t runs, failed, began, last_ms;
	int64_t from, to;
} warm;

/* The hour after the latest event stamped no later than now + WARM_SKEW_MS
 * (0: no event), in txn. */
static int latest_hour(MDB_txn *txn, int64_t *end)
{
	MDB_cursor *cur;
	uint8_t k0[SX_EV_TKEY];
	int64_t limit = sx_wall_ms() + WARM_SKEW_MS;
	*end = 0;
	int rc = mdb_cursor_open(txn, sx_store_dbi(sx__ev_eng->store, SX_T_EVENTS_BY_TIME), &cur);
	if (rc != 0)
		return sx_diag_set(SX_EIO, "store cursor: %s", mdb_strerror(rc));
	sx__ev_time_key(k0, limit + 1, 0);
	MDB_val k = {sizeof(k0), k0}, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	rc = mdb_cursor_get(cur, &k, &v, rc == 0 ? MDB_PREV : MDB_LAST);
	if (rc == 0 && k.mv_size == SX_EV_TKEY) {
		int64_t t = (int64_t)sx_get_be64(k.mv_data);
		if (t <= limit)
			*end = sx__ev_floor(t, SX_EV_HOUR_MS) + SX_EV_HOUR_MS;
	}
	mdb_cursor_close(cur);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : sx_diag_set(SX_EIO, "store scan: %s", mdb_strerror(rc));
}

/* The warm range [*from, *to): `days` days back from the latest event's hour,
 * fewer when their events would fill more than half the cache. */
static void warm_after(uv_work_t *w, int status);

static int warm_range(MDB_txn *txn, int64_t *from, int64_t *to)
{
	uint64_t sum = 0, count;
	int rc = latest_hour(txn, to);
	*from = *to;
	if (rc < 0 || !*to)
		return rc;
	for (int64_t h = *to - SX_EV_HOUR_MS; h >= 0 && h >= *to - (int64_t)warm.days * SX_EV_DAY_MS; h -= SX_EV_HOUR_MS) {
		if ((rc = hour_count(txn, h, &count, NULL)) < 0)
			return rc;
		if ((sum += count) > SX_TL_CAP_ENTRIES / 2)
			break;
		*from = h;
	}
	return 0;
}

struct warm_part {
	uv_work_t w;
	int part;
};

static struct warm_part warm_parts[WARM_PARTS];

/* nparts 0: the whole set in one piece (hours to extend too) */
static void warm_work(uv_work_t *w)
{
	struct warm_part *wp = w->data;
	MDB_txn *txn;
	int rc = sx_store_rtxn_begin(sx__ev_eng->store, &txn);
	if (rc == 0) {
		rc = warm.nparts ? sx__tl_fill_part(warm.set, txn, wp->part, warm.nparts) : sx__tl_fill(warm.set, txn);
		sx_store_rtxn_end(sx__ev_eng->store, txn);
	}
	if (rc < 0 && __atomic_exchange_n(&warm.rc, rc, __ATOMIC_ACQ_REL) == 0)
		snprintf(warm.err, sizeof(warm.err), "%s", sx_diag_last());
}

static int warm_queue(int nparts)
{
	warm.nparts = nparts;
	warm.pending = 0;
	for (int p = 0; p < (nparts ? nparts : 1); p++) {
		warm_parts[p].part = p;
		warm_parts[p].w.data = &warm_parts[p];
		if (uv_queue_work(warm.loop, &warm_parts[p].w, warm_work, warm_after) != 0)
			break;
		warm.pending++;
	}
	if (warm.pending == (nparts ? nparts : 1))
		return 0;
	/* the parts queued still run (one alone builds nothing that is kept) */
	warm.rc = SX_EINTERNAL;
	snprintf(warm.err, sizeof(warm.err), "cannot queue the warm-up's work");
	return warm.pending ? 0 : -1;
}

static void warm_after(uv_work_t *w, int status)
{
	size_t nb, ne;
	(void)w;
	if (status < 0 && warm.rc == 0)
		warm.rc = SX_ECANCELED, snprintf(warm.err, sizeof(warm.err), "cancelled");
	if (--warm.pending > 0)
		return;
	/* parts that read different snapshots leave their hours to one piece */
	if (warm.rc == 0 && warm.nparts && !warm.stopping && sx__tl_pending(warm.set, &nb, &ne) && warm_queue(0) == 0)
		return;
	if (warm.rc < 0) {
		warm.failed++;
		sx_log_warn("funnel warm-up: %s", warm.err);
	}
	warm.last_ms = sx_now_ms() - warm.began;
	sx__tl_release(warm.set); /* what was built is kept, also after a failure */
	warm.set = NULL;
	warm.busy = 0;
	warm.runs++;
	if (warm.idle_cb)
		warm.idle_cb();
}

static void warm_tick(uv_timer_t *t)
{
	MDB_txn *txn;
	int64_t from, to;
	size_t nb, ne;
	(void)t;
	if (warm.busy || warm.stopping || sx_store_rtxn_begin(sx__ev_eng->store, &txn) < 0)
		return;
	int rc = warm_range(txn, &from, &to);
	struct sx_tl_set *s = rc == 0 && from < to ? sx__tl_acquire(txn, from, to) : NULL;
	sx_store_rtxn_end(sx__ev_eng->store, txn);
	if (rc < 0)
		sx_log_warn("funnel warm-up: %s", sx_diag_last());
	if (!s)
		return;
	warm.from = from, warm.to = to;
	warm.rc = 0;
	if (!sx__tl_pending(s, &nb, &ne)) {
		sx__tl_release(s);
		return;
	}
	warm.set = s;
	warm.began = sx_now_ms();
	if (warm_queue(nb >= WARM_PARALLEL_HOURS ? WARM_PARTS : 0) < 0) {
		warm.set = NULL;
		sx__tl_release(s);
		return;
	}
	warm.busy = 1;
}

int sx__tl_warm_start(uv_loop_t *loop, uint32_t days, void (*idle_cb)(void))
{
	warm.loop = loop, warm.days = days, warm.idle_cb = idle_cb;
	warm.busy = warm.stopping = 0;
	warm.runs = warm.failed = 0;
	warm.from = warm.to = 0;
	if (!days || warm.on)
		return 0;
	int rc = uv_timer_init(loop, &warm.timer);
	if (rc == 0)
		rc = uv_timer_start(&warm.timer, warm_tick, 0, WARM_EVERY_MS);
	if (rc != 0)
		return sx_diag_set(SX_EINTERNAL, "funnel warm-up timer: %s", uv_strerror(rc));
	warm.on = 1;
	return 0;
}

void sx__tl_warm_now(void)
{
	if (warm.on)
		warm_tick(&warm.timer);
}

int sx__tl_warm_busy(void)
{
	return warm.busy;
}

int sx__tl_warm_covers(int64_t from, int64_t to)
{
	return warm.busy && from < warm.to && warm.from < to;
}

void sx__tl_warm_stop(void)
{
	warm.stopping = 1;
	while (warm.busy)
		uv_run(warm.loop, UV_RUN_ONCE);
	if (warm.on) {
		uv_timer_stop(&warm.timer);
		uv_close((uv_handle_t *)&warm.timer, NULL);
		warm.on = 0;
	}
}

void sx__tl_warm_stats(struct sx_tl_warm_stats *out)
{
	out->days = warm.days;
	out->busy = warm.busy;
	out->runs = warm.runs;
	out->failed = warm.failed;
	out->last_ms = warm.last_ms;
	out->from = warm.from;
	out->to = warm.to;
}
