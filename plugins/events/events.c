/* The events plugin: users, items, events.track, and the C API of events.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

struct sx_engine *sx__ev_eng;

static uint32_t next_uidx;
static uint64_t boot_epoch, seq_counter;

#define SEQ_BITS 40
/* The user of an event counted without analytics consent: in totals, in no bitmap. */
#define NO_USER UINT32_MAX
#define NOT_ACCEPTED UINT64_MAX

#define OBSERVERS_MAX 8
static struct {
	sx_events_track_fn fn;
	void *ud;
} track_obs[OBSERVERS_MAX];
static struct {
	sx_events_item_fn fn;
	void *ud;
} item_obs[OBSERVERS_MAX];
static struct {
	sx_events_user_fn fn;
	void *ud;
} user_obs[OBSERVERS_MAX];
static int n_track_obs, n_item_obs, n_user_obs;

int sx_events_on_track(sx_events_track_fn fn, void *ud)
{
	if (n_track_obs == OBSERVERS_MAX)
		return sx_diag_set(SX_ELIMIT, "too many track observers");
	track_obs[n_track_obs].fn = fn, track_obs[n_track_obs++].ud = ud;
	return 0;
}

int sx_events_on_item(sx_events_item_fn fn, void *ud)
{
	if (n_item_obs == OBSERVERS_MAX)
		return sx_diag_set(SX_ELIMIT, "too many item observers");
	item_obs[n_item_obs].fn = fn, item_obs[n_item_obs++].ud = ud;
	return 0;
}

int sx_events_on_user(sx_events_user_fn fn, void *ud)
{
	if (n_user_obs == OBSERVERS_MAX)
		return sx_diag_set(SX_ELIMIT, "too many user observers");
	user_obs[n_user_obs].fn = fn, user_obs[n_user_obs++].ud = ud;
	return 0;
}

static void notify_item(const char *id, size_t len, int deleted)
{
	struct sx_item it;
	if (!n_item_obs)
		return;
	if (!deleted && sx_events_item_get(NULL, id, len, &it) < 0)
		return;
	for (int i = 0; i < n_item_obs; i++)
		item_obs[i].fn(id, len, deleted ? NULL : &it, item_obs[i].ud);
}

/* ev: an accepted event map as events.track took it; idx its user's index,
 * or NO_USER to look it up; ps: scratch space for the packed properties,
 * reused across the events of a call. */
static void notify_track(const msgpack_object *ev, int64_t now, uint32_t idx, msgpack_sbuffer *ps)
{
	const msgpack_object *user = sx_arg(ev, "user"), *name = sx_arg(ev, "name");
	const msgpack_object *item = sx_arg(ev, "item"), *props = sx_arg(ev, "properties");
	struct sx_event e = {0};
	e.time = now;
	sx_arg_int(ev, "time", 0, &e.time);
	e.user = idx;
	if (idx == NO_USER) {
		char pbuf[SX_PRIVACY_ID_BUF];
		size_t ulen;
		const char *uid = sx_privacy_user_id(user->via.str.ptr, user->via.str.size, pbuf, &ulen);
		if (sx_events_user_index(NULL, uid, ulen, &e.user) < 0)
			return;
	}
	e.name = name->via.str.ptr, e.name_len = name->via.str.size;
	if (item)
		e.item = item->via.str.ptr, e.item_len = item->via.str.size;
	if (props && props->via.map.size) {
		msgpack_packer ppk;
		msgpack_sbuffer_clear(ps);
		msgpack_packer_init(&ppk, ps, msgpack_sbuffer_write);
		sx_pack_object(&ppk, props);
		e.props = ps->data, e.props_len = ps->size;
	}
	for (int i = 0; i < n_track_obs; i++)
		track_obs[i].fn(&e, track_obs[i].ud);
}

static uint64_t next_seq(void)
{
	if (seq_counter >> SEQ_BITS) {
		uint8_t v[8];
		boot_epoch++;
		seq_counter = 0;
		sx_be64(v, boot_epoch);
		sx_store_put(sx__ev_eng->store, SX_T_COUNTERS, "B", 1, v, 8);
	}
	return boot_epoch << SEQ_BITS | seq_counter++;
}

/* ---- users seen before: id -> index and first-seen time ----
 * What the store (LMDB under the overlay) says, without a lookup and a decode
 * per user per batch. Entries change only together with the store writes they
 * mirror (a user's creation, its 'U' record), and the whole cache is dropped
 * when writes to users or counters are undone (a request rolled back, a batch
 * failed: see sx_store_on_undo) or a user is erased. Loop thread only. */

struct uent {
	struct uent *next;
	uint64_t h;
	int64_t first; /* -1: no event yet */
	uint64_t cver; /* the analytics consent answer, valid while sx_privacy_consent_version() == cver */
	uint32_t idx;
	uint8_t allowed;
	uint8_t len;
	char id[];
};

#define UCACHE_MAX ((size_t)1 << 21) /* entries; past it the cache starts over */

static struct {
	struct uent **b;
	size_t nb, n;
} ucache;

static void ccache_clear(void);

void sx__ev_user_cache_clear(void)
{
	ccache_clear();
	for (size_t i = 0; i < ucache.nb; i++)
		for (struct uent *e = ucache.b[i], *n; e; e = n)
			n = e->next, free(e);
	free(ucache.b);
	ucache.b = NULL;
	ucache.nb = ucache.n = 0;
}

static struct uent *ucache_find(const char *id, size_t len, uint64_t h)
{
	if (!ucache.nb)
		return NULL;
	for (struct uent *e = ucache.b[h & (ucache.nb - 1)]; e; e = e->next)
		if (e->h == h && e->len == len && memcmp(e->id, id, len) == 0)
			return e;
	return NULL;
}

/* Best effort: on no memory the user is simply not cached (NULL). */
static struct uent *ucache_set(const char *id, size_t len, uint64_t h, uint32_t idx, int64_t first)
{
	struct uent *e = ucache_find(id, len, h);
	if (e) {
		e->idx = idx, e->first = first;
		return e;
	}
	if (ucache.n >= UCACHE_MAX)
		sx__ev_user_cache_clear();
	if (ucache.n >= ucache.nb) {
		size_t nb = ucache.nb ? ucache.nb * 2 : 4096;
		struct uent **b = calloc(nb, sizeof(*b));
		if (!b)
			return NULL;
		for (size_t i = 0; i < ucache.nb; i++)
			for (struct uent *x = ucache.b[i], *n; x; x = n) {
				n = x->next;
				x->next = b[x->h & (nb - 1)];
				b[x->h & (nb - 1)] = x;
			}
		free(ucache.b);
		ucache.b = b, ucache.nb = nb;
	}
	if (!(e = malloc(sizeof(*e) + len)))
		return NULL;
	e->h = h, e->idx = idx, e->first = first, e->len = (uint8_t)len;
	e->cver = 0, e->allowed = 0;
	memcpy(e->id, id, len);
	e->next = ucache.b[h & (ucache.nb - 1)];
	ucache.b[h & (ucache.nb - 1)] = e;
	ucache.n++;
	return e;
}

static void ucache_undo_cb(uint64_t tables, void *ud)
{
	SX_UNUSED(ud);
	if (tables & ((uint64_t)1 << SX_T_USERS | (uint64_t)1 << SX_T_USER_IDX | (uint64_t)1 << SX_T_COUNTERS))
		sx__ev_user_cache_clear();
}

/* ---- tiny readers for our own fixed-shape records ---- */

struct rd {
	const uint8_t *p, *end;
};

static int rd_u(struct rd *r, size_t n, uint64_t *v)
{
	if ((size_t)(r->end - r->p) < n)
		return -1;
	*v = 0;
	for (size_t i = 0; i < n; i++)
		*v = *v << 8 | *r->p++;
	return 0;
}

static int rd_int(struct rd *r, int64_t *out)
{
	uint64_t v;
	if (r->p >= r->end)
		return -1;
	uint8_t t = *r->p++;
	if (t <= 0x7f)
		return *out = t, 0;
	if (t >= 0xe0)
		return *out = (int8_t)t, 0;
	switch (t) {
	case 0xcc: if (rd_u(r, 1, &v)) return -1; *out = (int64_t)v; return 0;
	case 0xcd: if (rd_u(r, 2, &v)) return -1; *out = (int64_t)v; return 0;
	case 0xce: if (rd_u(r, 4, &v)) return -1; *out = (int64_t)v; return 0;
	case 0xcf: if (rd_u(r, 8, &v)) return -1; *out = (int64_t)v; return 0;
	case 0xd0: if (rd_u(r, 1, &v)) return -1; *out = (int8_t)v; return 0;
	case 0xd1: if (rd_u(r, 2, &v)) return -1; *out = (int16_t)v; return 0;
	case 0xd2: if (rd_u(r, 4, &v)) return -1; *out = (int32_t)v; return 0;
	case 0xd3: if (rd_u(r, 8, &v)) return -1; *out = (int64_t)v; return 0;
	}
	return -1;
}

/* A str (want_bin 0) or bin (1), or nil (*s = NULL). */
static int rd_blob(struct rd *r, int want_bin, const void **s, size_t *len)
{
	uint64_t n;
	if (r->p >= r->end)
		return -1;
	uint8_t t = *r->p++;
	if (t == 0xc0) {
		*s = NULL, *len = 0;
		return 0;
	}
	if (!want_bin && t >= 0xa0 && t <= 0xbf)
		n = t & 0x1f;
	else if ((!want_bin && t == 0xd9) || (want_bin && t == 0xc4)) {
		if (rd_u(r, 1, &n))
			return -1;
	} else if ((!want_bin && t == 0xda) || (want_bin && t == 0xc5)) {
		if (rd_u(r, 2, &n))
			return -1;
	} else if ((!want_bin && t == 0xdb) || (want_bin && t == 0xc6)) {
		if (rd_u(r, 4, &n))
			return -1;
	} else
		return -1;
	if ((uint64_t)(r->end - r->p) < n)
		return -1;
	*s = r->p, *len = (size_t)n;
	r->p += n;
	return 0;
}

static int corrupt(const char *what) { return sx_diag_set(SX_ECORRUPT, "a stored %s record does not decode", what); }

/* Event record: [name, item|nil, properties (bin: a packed map)|nil]. */
static int event_decode(const struct sx_val *key, const struct sx_val *val, struct sx_event *ev)
{
	struct rd r = {val->data, (const uint8_t *)val->data + val->len};
	const void *name, *item, *props;
	if (key->len != SX_EV_EVKEY || r.p >= r.end || *r.p++ != 0x93 || rd_blob(&r, 0, &name, &ev->name_len) ||
	    !name || rd_blob(&r, 0, &item, &ev->item_len) || rd_blob(&r, 1, &props, &ev->props_len))
		return corrupt("event");
	const uint8_t *k = key->data;
	ev->user = sx_get_be32(k);
	ev->time = (int64_t)sx_get_be64(k + 4);
	ev->seq = sx_get_be64(k + 12);
	ev->name = name, ev->item = item, ev->props = props;
	return 0;
}

/* Item record: [kind, updated, attributes (bin)|nil, vector (bin f32 LE)|nil]. */
static int item_decode(const char *id, size_t idlen, const struct sx_val *val, struct sx_item *it)
{
	struct rd r = {val->data, (const uint8_t *)val->data + val->len};
	int64_t kind;
	size_t vlen;
	if (r.p >= r.end || *r.p++ != 0x94 || rd_int(&r, &kind) || kind < 0 || kind >= SX_ITEM_KINDS ||
	    rd_int(&r, &it->updated) || rd_blob(&r, 1, &it->attrs, &it->attrs_len) ||
	    rd_blob(&r, 1, &it->vector, &vlen) || vlen % 4)
		return corrupt("item");
	it->id = id, it->id_len = idlen;
	it->kind = (int)kind;
	it->dim = (uint32_t)(vlen / 4);
	if (!it->attrs_len)
		it->attrs = NULL;
	if (!vlen)
		it->vector = NULL;
	return 0;
}

/* ---- C API ---- */

static const char *const kind_names[SX_ITEM_KINDS] = {"trip", "destination", "activity", "offer"};

const char *sx_item_kind_name(int kind) { return kind >= 0 && kind < SX_ITEM_KINDS ? kind_names[kind] : NULL; }

int sx_item_kind_parse(const char *s, size_t len)
{
	for (int i = 0; i < SX_ITEM_KINDS; i++)
		if (strlen(kind_names[i]) == len && memcmp(kind_names[i], s, len) == 0)
			return i;
	return -1;
}

static int user_rec_index(const struct sx_val *v, uint32_t *out)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 512);
	int rc = sx__ev_unpack(v->data, v->len, &z, &o);
	const msgpack_object *ix = rc == 0 ? sx__ev_map_get(&o, "index") : NULL;
	if (rc == 0 && (!ix || ix->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ix->via.u64 > UINT32_MAX))
		rc = corrupt("user");
	if (rc == 0)
		*out = (uint32_t)ix->via.u64;
	msgpack_zone_destroy(&z);
	return rc;
}

int sx_events_user_index(MDB_txn *txn, const char *id, size_t len, uint32_t *out)
{
	struct sx_val v;
	if (len == 0 || len > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_ENOENT, "no such user");
	int rc = sx__ev_get(txn, SX_T_USERS, id, len, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)len, id);
	return rc < 0 ? rc : user_rec_index(&v, out);
}

int sx_events_user_id(MDB_txn *txn, uint32_t idx, char *buf, size_t size, size_t *len)
{
	uint8_t k[4];
	struct sx_val v;
	sx_be32(k, idx);
	int rc = sx__ev_get(txn, SX_T_USER_IDX, k, 4, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no user with index %u", idx);
	if (rc < 0)
		return rc;
	if (v.len >= size)
		return sx_diag_set(SX_EINVAL, "buffer too small for a user id");
	memcpy(buf, v.data, v.len);
	buf[v.len] = 0;
	if (len)
		*len = v.len;
	return 0;
}

uint32_t sx_events_user_bound(void) { return next_uidx; }

int sx_events_user_first_seen(MDB_txn *txn, uint32_t idx, int64_t *out)
{
	uint8_t k[5] = {'U'};
	struct sx_val v;
	sx_be32(k + 1, idx);
	int rc = sx__ev_get(txn, SX_T_COUNTERS, k, 5, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "user %u has no event", idx);
	if (rc < 0)
		return rc;
	if (v.len != 8)
		return corrupt("first-seen");
	*out = (int64_t)sx_get_be64(v.data);
	return 0;
}

int sx_events_user_record(MDB_txn *txn, const char *id, size_t len, const void **out, size_t *outlen)
{
	struct sx_val v;
	if (len == 0 || len > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_ENOENT, "no such user");
	int rc = sx__ev_get(txn, SX_T_USERS, id, len, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)len, id);
	if (rc == 0)
		*out = v.data, *outlen = v.len;
	return rc;
}

struct uscan {
	sx_events_cb cb;
	void *ud;
};

static int uscan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct uscan *u = ud;
	struct sx_event ev;
	int rc = event_decode(key, val, &ev);
	return rc < 0 ? rc : u->cb(&ev, u->ud);
}

static int64_t clamp_time(int64_t t)
{
	return t < 0 ? 0 : t > SX_EVENTS_TIME_MAX + 1 ? SX_EVENTS_TIME_MAX + 1 : t;
}

int sx_events_user_scan(MDB_txn *txn, uint32_t user, int64_t from, int64_t to, int reverse,
			sx_events_cb cb, void *ud)
{
	uint8_t lo[SX_EV_EVKEY], hi[SX_EV_EVKEY];
	struct uscan u = {cb, ud};
	from = clamp_time(from), to = clamp_time(to);
	if (from >= to)
		return 0;
	sx__ev_event_key(lo, user, from, 0);
	sx__ev_event_key(hi, user, to, 0);
	return sx__ev_scan(txn, SX_T_EVENTS, lo, sizeof(lo), hi, sizeof(hi), reverse, uscan_cb, &u);
}

struct tscan {
	MDB_txn *txn;
	sx_events_cb cb;
	void *ud;
	uint32_t n;
};

static int tscan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct tscan *t = ud;
	uint8_t k[SX_EV_EVKEY];
	struct sx_val ev_val, ev_key = {k, sizeof(k)};
	struct sx_event ev;
	if (key->len != SX_EV_TKEY || val->len != 4)
		return corrupt("event time index");
	/* a scan on the pool must not hold its reader past the age limit */
	if ((++t->n & 4095) == 0 && sx__ev_eng && sx_store_rtxn_check(sx__ev_eng->store, t->txn) < 0)
		return sx_diag_last_code();
	const uint8_t *p = key->data;
	sx__ev_event_key(k, sx_get_be32(val->data), (int64_t)sx_get_be64(p), sx_get_be64(p + 8));
	int rc = sx__ev_get(t->txn, SX_T_EVENTS, k, sizeof(k), &ev_val);
	if (rc == SX_ENOENT)
		return corrupt("event time index");
	if (rc < 0 || (rc = event_decode(&ev_key, &ev_val, &ev)) < 0)
		return rc;
	return t->cb(&ev, t->ud);
}

int sx_events_range_scan(MDB_txn *txn, int64_t from, int64_t to, sx_events_cb cb, void *ud)
{
	uint8_t lo[SX_EV_TKEY], hi[SX_EV_TKEY];
	struct tscan t = {txn, cb, ud, 0};
	from = clamp_time(from), to = clamp_time(to);
	if (from >= to)
		return 0;
	sx__ev_time_key(lo, from, 0);
	sx__ev_time_key(hi, to, 0);
	return sx__ev_scan(txn, SX_T_EVENTS_BY_TIME, lo, sizeof(lo), hi, sizeof(hi), 0, tscan_cb, &t);
}

roaring_bitmap_t *sx_events_users_did(MDB_txn *txn, const char *name, int64_t from, int64_t to)
{
	size_t n = strlen(name);
	if (n == 0 || n > SX_EVENTS_ID_MAX) {
		sx_diag_set(SX_EINVAL, "event name must be 1 to %d bytes", SX_EVENTS_ID_MAX);
		return NULL;
	}
	return sx__ev_series_users(txn, name, n, "", 0, "", 0, clamp_time(from), clamp_time(to));
}

struct fscan {
	roaring_bitmap_t *acc;
};

static int fscan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct fscan *f = ud;
	SX_UNUSED(key);
	roaring_bitmap_t *b = sx__ev_bitmap_decode(val->data, val->len);
	if (!b)
		return SX_ECORRUPT;
	roaring_bitmap_or_inplace(f->acc, b);
	roaring_bitmap_free(b);
	return 0;
}

roaring_bitmap_t *sx_events_users_first_seen(MDB_txn *txn, int64_t from, int64_t to)
{
	uint8_t lo[9] = {'F'}, hi[9] = {'F'};
	struct fscan f = {roaring_bitmap_create()};
	if (!f.acc) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	from = sx__ev_floor(clamp_time(from), SX_EV_DAY_MS);
	to = sx__ev_floor(clamp_time(to), SX_EV_DAY_MS);
	if (from >= to)
		return f.acc;
	sx_be64(lo + 1, (uint64_t)from);
	sx_be64(hi + 1, (uint64_t)to);
	if (sx__ev_scan(txn, SX_T_COUNTERS, lo, 9, hi, 9, 0, fscan_cb, &f) < 0) {
		roaring_bitmap_free(f.acc);
		return NULL;
	}
	return f.acc;
}

int sx_events_item_get(MDB_txn *txn, const char *id, size_t len, struct sx_item *out)
{
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	if (len == 0 || len > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_ENOENT, "no such item");
	k[0] = 'i';
	memcpy(k + 1, id, len);
	int rc = sx__ev_get(txn, SX_T_ITEMS, k, len + 1, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no item '%.*s'", (int)len, id);
	return rc < 0 ? rc : item_decode(id, len, &v, out);
}

uint32_t sx_item_vector(const struct sx_item *it, float *out, uint32_t n)
{
	const uint8_t *p = it->vector;
	for (uint32_t i = 0; i < it->dim && i < n; i++) {
		uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
			     (uint32_t)p[4 * i + 3] << 24;
		memcpy(&out[i], &u, 4);
	}
	return it->dim;
}

struct iscan {
	MDB_txn *txn;
	int by_kind;
	sx_items_cb cb;
	void *ud;
};

static int iscan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct iscan *s = ud;
	struct sx_item it;
	const char *id = (const char *)key->data + 1 + s->by_kind;
	size_t idlen = key->len - 1 - (size_t)s->by_kind;
	int rc;
	if (s->by_kind)
		rc = sx_events_item_get(s->txn, id, idlen, &it);
	else
		rc = item_decode(id, idlen, val, &it);
	if (rc == SX_ENOENT)
		return corrupt("item kind index");
	return rc < 0 ? rc : s->cb(&it, s->ud);
}

int sx_events_item_scan(MDB_txn *txn, int kind, sx_items_cb cb, void *ud)
{
	struct iscan s = {txn, kind >= 0, cb, ud};
	uint8_t lo[2] = {'k', (uint8_t)kind}, hi[2] = {'k', (uint8_t)(kind + 1)};
	if (kind >= SX_ITEM_KINDS)
		return sx_diag_set(SX_EINVAL, "no such item kind");
	if (kind >= 0)
		return sx__ev_scan(txn, SX_T_ITEMS, lo, 2, hi, 2, 0, iscan_cb, &s);
	return sx__ev_scan(txn, SX_T_ITEMS, "i", 1, "j", 1, 0, iscan_cb, &s);
}

roaring_bitmap_t *sx_events_cohort_users(MDB_txn *txn, const char *name, size_t len)
{
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	if (len == 0 || len > SX_EVENTS_ID_MAX) {
		sx_diag_set(SX_ENOENT, "no such cohort");
		return NULL;
	}
	k[0] = 'b';
	memcpy(k + 1, name, len);
	int rc = sx__ev_get(txn, SX_T_COHORTS, k, len + 1, &v);
	if (rc == SX_ENOENT) {
		sx_diag_set(SX_ENOENT, "no cohort '%.*s'", (int)len, name);
		return NULL;
	}
	if (rc < 0)
		return NULL;
	return v.len ? sx__ev_bitmap_decode(v.data, v.len) : roaring_bitmap_create();
}

/* ---- writes ---- */

static int put(int table, const void *k, size_t klen, const void *v, size_t vlen)
{
	return sx_store_put(sx__ev_eng->store, table, k, klen, v, vlen);
}

/* get_rc: the outcome of reading the user's record into *v (0 or SX_ENOENT). */
static int user_write(const char *id, size_t len, const msgpack_object *attrs, int64_t signup,
		      int has_signup, uint32_t *idx, int *created, int get_rc, const struct sx_val *v);

int sx__ev_user_put(const char *id, size_t len, const msgpack_object *attrs, int64_t signup,
		    int has_signup, uint32_t *idx, int *created)
{
	struct sx_val v;
	int rc = sx_store_get(sx__ev_eng->store, SX_T_USERS, id, len, &v);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	return user_write(id, len, attrs, signup, has_signup, idx, created, rc, &v);
}

static int user_write(const char *id, size_t len, const msgpack_object *attrs, int64_t signup,
		      int has_signup, uint32_t *idx, int *created, int get_rc, const struct sx_val *vp)
{
	msgpack_zone z;
	msgpack_object old = {.type = MSGPACK_OBJECT_NIL};
	int64_t created_at = sx_wall_ms();
	struct sx_val v = get_rc == 0 ? *vp : (struct sx_val){NULL, 0};
	int rc = get_rc;
	msgpack_zone_init(&z, 1024);
	if (rc == 0) {
		if ((rc = sx__ev_unpack(v.data, v.len, &z, &old)) == 0 && (rc = user_rec_index(&v, idx)) == 0) {
			const msgpack_object *c = sx__ev_map_get(&old, "created");
			if (c && c->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
				created_at = (int64_t)c->via.u64;
			if (!attrs)
				attrs = sx__ev_map_get(&old, "attributes");
			const msgpack_object *s = sx__ev_map_get(&old, "signup_time");
			if (!has_signup && s && s->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
				signup = (int64_t)s->via.u64, has_signup = 1;
		}
		*created = 0;
	} else if (rc == SX_ENOENT) {
		if (next_uidx == UINT32_MAX) {
			msgpack_zone_destroy(&z);
			return sx_diag_set(SX_ENOSPC, "no more user indexes");
		}
		*idx = next_uidx++;
		*created = 1;
		rc = 0;
	}
	if (rc < 0) {
		msgpack_zone_destroy(&z);
		return rc;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	int has_attrs = attrs && attrs->type == MSGPACK_OBJECT_MAP;
	msgpack_pack_map(&pk, 3 + (size_t)has_attrs + (size_t)has_signup);
	sx_pack_key(&pk, "id");
	sx_pack_strn(&pk, id, len);
	sx_pack_kv_uint(&pk, "index", *idx);
	sx_pack_kv_int(&pk, "created", created_at);
	if (has_attrs) {
		sx_pack_key(&pk, "attributes");
		sx_pack_object(&pk, attrs);
	}
	if (has_signup)
		sx_pack_kv_int(&pk, "signup_time", signup);
	rc = put(SX_T_USERS, id, len, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&z);
	for (int i = 0; rc == 0 && i < n_user_obs; i++)
		user_obs[i].fn(*idx, user_obs[i].ud);
	if (rc == 0 && *created) {
		uint8_t k[4];
		sx_be32(k, *idx);
		rc = put(SX_T_USER_IDX, k, 4, id, len);
		if (rc == 0)
			ucache_set(id, len, XXH3_64bits(id, len), *idx, -1);
	}
	return rc;
}

int sx__ev_item_put(const char *id, size_t len, int kind, const msgpack_object *attrs,
		    const float *vec, uint32_t dim)
{
	uint8_t k[2 + SX_EVENTS_ID_MAX];
	struct sx_item old;
	int rc = sx_events_item_get(NULL, id, len, &old);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	if (rc == 0 && old.kind != kind) {
		k[0] = 'k', k[1] = (uint8_t)old.kind;
		memcpy(k + 2, id, len);
		if ((rc = sx_store_del(sx__ev_eng->store, SX_T_ITEMS, k, len + 2)) < 0)
			return rc;
	}
	msgpack_sbuffer sb, ab;
	msgpack_packer pk, apk;
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&ab);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_packer_init(&apk, &ab, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, kind);
	msgpack_pack_int64(&pk, sx_wall_ms());
	if (attrs) {
		sx_pack_object(&apk, attrs);
		msgpack_pack_bin(&pk, ab.size);
		msgpack_pack_bin_body(&pk, ab.data, ab.size);
	} else {
		msgpack_pack_nil(&pk);
	}
	if (dim) {
		msgpack_pack_bin(&pk, (size_t)dim * 4);
		for (uint32_t i = 0; i < dim; i++) {
			uint32_t u;
			uint8_t b[4];
			memcpy(&u, &vec[i], 4);
			b[0] = (uint8_t)u, b[1] = (uint8_t)(u >> 8), b[2] = (uint8_t)(u >> 16), b[3] = (uint8_t)(u >> 24);
			msgpack_pack_bin_body(&pk, b, 4);
		}
	} else {
		msgpack_pack_nil(&pk);
	}
	k[0] = 'i';
	memcpy(k + 1, id, len);
	rc = put(SX_T_ITEMS, k, len + 1, sb.data, sb.size);
	k[0] = 'k', k[1] = (uint8_t)kind;
	memcpy(k + 2, id, len);
	if (rc == 0)
		rc = put(SX_T_ITEMS, k, len + 2, "", 1);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&ab);
	/* Every writer of items (items.put, demo.load) keeps the observers current. */
	if (rc == 0)
		notify_item(id, len, 0);
	return rc;
}

/* ---- ingest batches ---- */

struct ucache {
	char id[SX_EVENTS_ID_MAX];
	size_t len;
	uint32_t idx;
	int64_t first, orig_first; /* -1: none */
	int attrs_loaded;
	int anon;             /* no analytics consent: counted in totals only, no index */
	msgpack_object attrs; /* NIL if none; points into the batch zone */
	struct ucache *next;
};

struct acc {
	uint8_t *key;
	size_t klen;
	uint64_t h; /* XXH3 of the key, also the counter cache's hash */
	struct sx_ev_counter c; /* 'M' entries: users in uv instead of c.users */
	roaring_bitmap_t *del; /* 'F' entries: users to remove before adding */
	uint32_t *uv, nu, cu;   /* 'M' entries: the users, with repeats */
	uint32_t inl[2];
	struct acc *next;
};

struct icache {
	char id[SX_EVENTS_ID_MAX];
	size_t len;
	msgpack_object attrs; /* NIL if unknown item */
	struct icache *next;
};

#define UC_BUCKETS 1024
#define ACC_BUCKETS 4096

struct sx_ev_batch {
	msgpack_zone zone;
	struct ucache *users[UC_BUCKETS];
	struct acc *acc[ACC_BUCKETS];
	struct sx_ev_dims *dims;
	struct icache *items;
	msgpack_sbuffer sb, psb;
	uint32_t last_user; /* of the last accepted event; NO_USER if anonymous */
};

struct sx_ev_batch *sx__ev_batch_new(void)
{
	struct sx_ev_batch *b = calloc(1, sizeof(*b));
	if (!b) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	msgpack_zone_init(&b->zone, 65536);
	msgpack_sbuffer_init(&b->sb);
	msgpack_sbuffer_init(&b->psb);
	return b;
}

void sx__ev_batch_free(struct sx_ev_batch *b)
{
	if (!b)
		return;
	for (int i = 0; i < UC_BUCKETS; i++)
		for (struct ucache *u = b->users[i], *n; u; u = n)
			n = u->next, free(u);
	for (int i = 0; i < ACC_BUCKETS; i++)
		for (struct acc *a = b->acc[i], *n; a; a = n) {
			n = a->next;
			if (a->c.users)
				roaring_bitmap_free(a->c.users);
			if (a->del)
				roaring_bitmap_free(a->del);
			if (a->uv != a->inl)
				free(a->uv);
			free(a);
		}
	for (struct sx_ev_dims *d = b->dims, *n; d; d = n)
		n = d->next, free(d);
	for (struct icache *it = b->items, *n; it; it = n)
		n = it->next, free(it);
	msgpack_zone_destroy(&b->zone);
	msgpack_sbuffer_destroy(&b->sb);
	msgpack_sbuffer_destroy(&b->psb);
	free(b);
}

static struct acc *acc_get(struct sx_ev_batch *b, const uint8_t *key, size_t klen)
{
	uint64_t h = XXH3_64bits(key, klen);
	struct acc **pp = &b->acc[h & (ACC_BUCKETS - 1)];
	for (struct acc *a = *pp; a; a = a->next)
		if (a->h == h && a->klen == klen && memcmp(a->key, key, klen) == 0)
			return a;
	struct acc *a = calloc(1, sizeof(*a) + klen);
	if (!a)
		return NULL;
	a->key = (uint8_t *)(a + 1);
	memcpy(a->key, key, klen);
	a->klen = klen;
	a->h = h;
	a->next = *pp;
	*pp = a;
	return a;
}

static int acc_add(struct sx_ev_batch *b, const uint8_t *key, size_t klen, uint32_t user, int has_val,
		   double val)
{
	struct acc *a = acc_get(b, key, klen);
	if (!a)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (user != NO_USER) {
		if (!a->uv)
			a->uv = a->inl, a->cu = SX_ARRAY_SIZE(a->inl);
		if (a->nu == a->cu) {
			uint32_t cu = a->cu * 2, *uv = malloc(cu * sizeof(*uv));
			if (!uv)
				return sx_diag_set(SX_ENOMEM, "out of memory");
			memcpy(uv, a->uv, a->nu * sizeof(*uv));
			if (a->uv != a->inl)
				free(a->uv);
			a->uv = uv, a->cu = cu;
		}
		a->uv[a->nu++] = user;
	}
	a->c.count++;
	if (has_val)
		a->c.sum += val, a->c.nsum++;
	return 0;
}

static int first_seen_move(struct sx_ev_batch *b, uint32_t user, int64_t old, int64_t now)
{
	uint8_t k[9] = {'F'};
	if (old >= 0) {
		sx_be64(k + 1, (uint64_t)sx__ev_floor(old, SX_EV_DAY_MS));
		struct acc *a = acc_get(b, k, 9);
		if (!a || (!a->del && !(a->del = roaring_bitmap_create())))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		roaring_bitmap_add(a->del, user);
		if (a->c.users)
			roaring_bitmap_remove(a->c.users, user);
	}
	sx_be64(k + 1, (uint64_t)sx__ev_floor(now, SX_EV_DAY_MS));
	struct acc *a = acc_get(b, k, 9);
	if (!a || (!a->c.users && !(a->c.users = roaring_bitmap_create())))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	roaring_bitmap_add(a->c.users, user);
	if (a->del)
		roaring_bitmap_remove(a->del, user);
	return 0;
}

static struct ucache *user_lookup_slow(struct ucache *u, struct ucache **pp, const char *id, size_t len,
				       uint64_t h, uint64_t cver, struct uent *g, int *rc);

static struct ucache *user_lookup(struct sx_ev_batch *b, const char *id, size_t len, int *rc)
{
	uint64_t h = XXH3_64bits(id, len);
	struct ucache **pp = &b->users[h & (UC_BUCKETS - 1)];
	for (struct ucache *u = *pp; u; u = u->next)
		if (u->len == len && memcmp(u->id, id, len) == 0)
			return u;
	struct ucache *u = calloc(1, sizeof(*u));
	if (!u) {
		*rc = sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(u->id, id, len);
	u->len = len;
	u->attrs.type = MSGPACK_OBJECT_NIL;
	uint64_t cver = sx_privacy_consent_version();
	struct uent *g = ucache_find(id, len, h);
	if (g && g->cver == cver && g->allowed) {
		u->idx = g->idx;
		u->first = u->orig_first = g->first;
		u->next = *pp;
		*pp = u;
		*rc = 0;
		return u;
	}
	*rc = 0;
	return user_lookup_slow(u, pp, id, len, h, cver, g, rc);
}

/* user_lookup for a user whose consent answer is not cached, or who is not
 * cached at all: consent first (no index for a user without it), then the
 * index and first-seen time, creating the user if new. */
static struct ucache *user_lookup_slow(struct ucache *u, struct ucache **pp, const char *id, size_t len,
				       uint64_t h, uint64_t cver, struct uent *g, int *rc)
{
	int allowed = g && g->cver == cver ? g->allowed : sx_privacy_allowed(id, len, SX_PURPOSE_ANALYTICS);
	if (g)
		g->cver = cver, g->allowed = (uint8_t)allowed;
	if (!allowed) {
		u->anon = 1;
		u->idx = NO_USER;
		u->first = u->orig_first = -1;
		u->attrs_loaded = 1;
		u->next = *pp;
		*pp = u;
		return u;
	}
	if (g) {
		u->idx = g->idx;
		u->first = u->orig_first = g->first;
		u->next = *pp;
		*pp = u;
		return u;
	}
	struct sx_val v;
	*rc = sx_store_get(sx__ev_eng->store, SX_T_USERS, id, len, &v);
	if (*rc == SX_ENOENT) {
		int created;
		*rc = user_write(id, len, NULL, 0, 0, &u->idx, &created, SX_ENOENT, NULL);
		u->attrs_loaded = 1;
		u->first = -1;
	} else if (*rc == 0 && (*rc = user_rec_index(&v, &u->idx)) == 0) {
		int64_t f;
		int r = sx_events_user_first_seen(NULL, u->idx, &f);
		if (r == 0)
			u->first = f;
		else if (r == SX_ENOENT)
			u->first = -1;
		else
			*rc = r;
	}
	if (*rc < 0) {
		free(u);
		return NULL;
	}
	u->orig_first = u->first;
	if ((g = ucache_set(id, len, h, u->idx, u->first)) != NULL)
		g->cver = cver, g->allowed = 1;
	u->next = *pp;
	*pp = u;
	return u;
}

static const msgpack_object *user_attrs(struct sx_ev_batch *b, struct ucache *u)
{
	if (!u->attrs_loaded) {
		struct sx_val v;
		msgpack_object o;
		u->attrs_loaded = 1;
		if (sx_store_get(sx__ev_eng->store, SX_T_USERS, u->id, u->len, &v) == 0) {
			/* copied: the view ends with the request, the zone with the batch */
			void *copy = msgpack_zone_malloc(&b->zone, v.len);
			if (copy) {
				memcpy(copy, v.data, v.len);
				if (sx__ev_unpack(copy, v.len, &b->zone, &o) == 0) {
					const msgpack_object *a = sx__ev_map_get(&o, "attributes");
					if (a)
						u->attrs = *a;
				}
			}
		}
	}
	return &u->attrs;
}

static const msgpack_object *item_attrs(struct sx_ev_batch *b, const char *id, size_t len)
{
	for (struct icache *c = b->items; c; c = c->next)
		if (c->len == len && memcmp(c->id, id, len) == 0)
			return &c->attrs;
	struct icache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	memcpy(c->id, id, len);
	c->len = len;
	c->attrs.type = MSGPACK_OBJECT_NIL;
	struct sx_item it;
	if (sx_events_item_get(NULL, id, len, &it) == 0 && it.attrs) {
		void *copy = msgpack_zone_malloc(&b->zone, it.attrs_len);
		if (copy) {
			memcpy(copy, it.attrs, it.attrs_len);
			if (sx__ev_unpack(copy, it.attrs_len, &b->zone, &c->attrs) < 0)
				c->attrs.type = MSGPACK_OBJECT_NIL;
		}
	}
	c->next = b->items;
	b->items = c;
	return &c->attrs;
}

static const struct sx_ev_dims *dims_for(struct sx_ev_batch *b, const char *event, size_t elen, int *rc)
{
	for (struct sx_ev_dims *d = b->dims; d; d = d->next)
		if (d->elen == elen && memcmp(d->event, event, elen) == 0)
			return d;
	struct sx_ev_dims *d = calloc(1, sizeof(*d));
	if (!d) {
		*rc = sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(d->event, event, elen);
	d->elen = elen;
	if ((*rc = sx__ev_dims_load(event, elen, d)) < 0) {
		free(d);
		return NULL;
	}
	d->next = b->dims;
	b->dims = d;
	return d;
}

/* Adds the event to series (gran, event, dim, value) for each value of o. */
static int add_dim_values(struct sx_ev_batch *b, const char *event, size_t elen, const char *dim,
			  const msgpack_object *o, int64_t t, uint32_t user, int has_val, double val,
			  int depth)
{
	char buf[64];
	const char *s = NULL;
	size_t n = 0;
	switch (o->type) {
	case MSGPACK_OBJECT_STR: s = o->via.str.ptr, n = o->via.str.size; break;
	case MSGPACK_OBJECT_BOOLEAN: s = o->via.boolean ? "true" : "false", n = strlen(s); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: n = (size_t)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)o->via.u64), s = buf; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: n = (size_t)snprintf(buf, sizeof(buf), "%lld", (long long)o->via.i64), s = buf; break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: n = (size_t)snprintf(buf, sizeof(buf), "%.17g", o->via.f64), s = buf; break;
	case MSGPACK_OBJECT_ARRAY:
		if (depth > 0)
			return 0;
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			int rc = add_dim_values(b, event, elen, dim, &o->via.array.ptr[i], t, user, has_val, val, 1);
			if (rc < 0)
				return rc;
		}
		return 0;
	default: return 0;
	}
	if (n == 0 || n > SX_EV_DIM_VALUE_MAX)
		return 0;
	static const int grans[] = {SX_EV_MINUTE, SX_EV_HOUR, SX_EV_DAY};
	uint8_t k[512];
	for (int g = 0; g < 3; g++) {
		size_t kl = sx__ev_metric_key(k, grans[g], event, elen, dim, strlen(dim),
					      sx__ev_floor(t, sx__ev_gran_ms(grans[g])), s, n);
		int rc = kl ? acc_add(b, k, kl, user, has_val, val) : 0;
		if (rc < 0)
			return rc;
	}
	return 0;
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

/* An event without analytics consent: it adds to the counts and sums of its
 * series (event, "*", property and item dimensions) and is stored nowhere
 * else; no user index, no bitmap, no user.* dimension. */
static int count_anonymous(struct sx_ev_batch *b, const struct sx_ev_dims *dc, const char *nm, size_t nl,
			   const msgpack_object *item, const msgpack_object *props, int64_t t)
{
	static const int grans[] = {SX_EV_MINUTE, SX_EV_HOUR, SX_EV_DAY};
	double val = 0;
	const msgpack_object *vo = props && dc->value[0] ? sx__ev_map_get(props, dc->value) : NULL;
	int has_val = vo && num_of(vo, &val), rc;
	uint8_t k[512];
	for (int g = 0; g < 3; g++) {
		int64_t bucket = sx__ev_floor(t, sx__ev_gran_ms(grans[g]));
		size_t kl = sx__ev_metric_key(k, grans[g], nm, nl, "", 0, bucket, "", 0);
		if ((rc = acc_add(b, k, kl, NO_USER, has_val, val)) < 0)
			return rc;
		kl = sx__ev_metric_key(k, grans[g], "*", 1, "", 0, bucket, "", 0);
		if ((rc = acc_add(b, k, kl, NO_USER, 0, 0)) < 0)
			return rc;
	}
	for (int i = 0; i < dc->ndims; i++) {
		const char *dim = dc->dims[i], *field = dim;
		const msgpack_object *src = props, *o;
		if (strncmp(dim, "user.", 5) == 0)
			continue;
		if (strncmp(dim, "item.", 5) == 0) {
			src = item ? item_attrs(b, item->via.str.ptr, item->via.str.size) : NULL;
			field = dim + 5;
		}
		if (src && (o = sx__ev_map_get(src, field)) != NULL &&
		    (rc = add_dim_values(b, nm, nl, dim, o, t, NO_USER, has_val, val, 0)) < 0)
			return rc;
	}
	return 0;
}

int sx__ev_batch_add(struct sx_ev_batch *b, const msgpack_object *ev, int64_t now)
{
	static const char *const known[] = {"user", "name", "item", "time", "properties", NULL};
	const msgpack_object *user, *name, *item, *props;
	int64_t t = now;
	int rc;
	if (ev->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "an event must be a map");
	if ((rc = sx_arg_only(ev, known)) < 0)
		return rc;
	user = sx_arg(ev, "user"), name = sx_arg(ev, "name"), item = sx_arg(ev, "item");
	props = sx_arg(ev, "properties");
	if ((rc = sx__ev_check_id(user, "user")) < 0 || (rc = sx__ev_check_id(name, "name")) < 0 ||
	    (item && (rc = sx__ev_check_id(item, "item")) < 0) || (rc = sx_arg_int(ev, "time", 0, &t)) < 0 ||
	    (props && (rc = sx__ev_check_value(props, "'properties'", SX_EV_PROPS_MAX)) < 0))
		return rc;
	if (name->via.str.ptr[0] == '*')
		return sx_diag_set(SX_EINVAL, "event names starting with '*' are reserved");
	if (t < 0 || t > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "'time' must be ms since 1970 and before the year 10000");

	const char *nm = name->via.str.ptr;
	size_t nl = name->via.str.size;
	const struct sx_ev_dims *dc = dims_for(b, nm, nl, &rc);
	if (!dc)
		return rc == SX_EINVAL ? SX_EINTERNAL : rc;
	char pbuf[SX_PRIVACY_ID_BUF];
	size_t ulen;
	const char *uid = sx_privacy_user_id(user->via.str.ptr, user->via.str.size, pbuf, &ulen);
	struct ucache *u = user_lookup(b, uid, ulen, &rc);
	if (!u)
		return rc == SX_EINVAL ? SX_EINTERNAL : rc;
	b->last_user = u->idx;
	if (u->anon)
		return count_anonymous(b, dc, nm, nl, item, props, t);

	/* the record: [name, item|nil, properties (bin)|nil] */
	msgpack_sbuffer *sb = &b->sb;
	msgpack_packer pk;
	msgpack_sbuffer_clear(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	sx_pack_strn(&pk, nm, nl);
	if (item)
		sx_pack_strn(&pk, item->via.str.ptr, item->via.str.size);
	else
		msgpack_pack_nil(&pk);
	if (props && props->via.map.size) {
		msgpack_packer ppk;
		msgpack_sbuffer_clear(&b->psb);
		msgpack_packer_init(&ppk, &b->psb, msgpack_sbuffer_write);
		sx_pack_object(&ppk, props);
		msgpack_pack_bin(&pk, b->psb.size);
		msgpack_pack_bin_body(&pk, b->psb.data, b->psb.size);
	} else {
		msgpack_pack_nil(&pk);
	}
	uint64_t seq = next_seq();
	uint8_t ek[SX_EV_EVKEY], tk[SX_EV_TKEY], uv[4];
	sx__ev_event_key(ek, u->idx, t, seq);
	sx__ev_time_key(tk, t, seq);
	sx_be32(uv, u->idx);
	if ((rc = put(SX_T_EVENTS, ek, sizeof(ek), sb->data, sb->size)) < 0 ||
	    (rc = put(SX_T_EVENTS_BY_TIME, tk, sizeof(tk), uv, 4)) < 0)
		return rc;

	if (u->first < 0 || t < u->first) {
		if ((rc = first_seen_move(b, u->idx, u->first, t)) < 0)
			return rc;
		u->first = t;
	}

	double val = 0;
	const msgpack_object *vo = props && dc->value[0] ? sx__ev_map_get(props, dc->value) : NULL;
	int has_val = vo && num_of(vo, &val);
	static const int grans[] = {SX_EV_MINUTE, SX_EV_HOUR, SX_EV_DAY};
	uint8_t k[512];
	for (int g = 0; g < 3; g++) {
		int64_t bucket = sx__ev_floor(t, sx__ev_gran_ms(grans[g]));
		size_t kl = sx__ev_metric_key(k, grans[g], nm, nl, "", 0, bucket, "", 0);
		if ((rc = acc_add(b, k, kl, u->idx, has_val, val)) < 0)
			return rc;
		kl = sx__ev_metric_key(k, grans[g], "*", 1, "", 0, bucket, "", 0);
		if ((rc = acc_add(b, k, kl, u->idx, 0, 0)) < 0)
			return rc;
	}
	for (int i = 0; i < dc->ndims; i++) {
		const char *dim = dc->dims[i];
		const msgpack_object *src = props, *o;
		const char *field = dim;
		if (strncmp(dim, "item.", 5) == 0) {
			src = item ? item_attrs(b, item->via.str.ptr, item->via.str.size) : NULL;
			field = dim + 5;
		} else if (strncmp(dim, "user.", 5) == 0) {
			src = user_attrs(b, u);
			field = dim + 5;
		}
		if (src && (o = sx__ev_map_get(src, field)) != NULL &&
		    (rc = add_dim_values(b, nm, nl, dim, o, t, u->idx, has_val, val, 0)) < 0)
			return rc;
	}
	return 0;
}

/* ---- counters written before: metric key -> the record as last written ----
 * Saves a read and a decode per touched counter per batch. Exact for the same
 * reasons as the user cache above, which it is cleared with. */

struct cent {
	struct cent *next;
	uint64_t h;
	struct sx_ev_counter c;
	size_t bytes; /* of its bitmap, as last encoded */
	uint16_t klen;
	uint8_t key[];
};

#define CCACHE_MAX_ENTRIES ((size_t)1 << 19)
#define CCACHE_MAX_BYTES ((size_t)256 << 20) /* of bitmaps; past either the cache starts over */

static struct {
	struct cent **b;
	size_t nb, n, bytes;
} ccache;

static void ccache_clear(void)
{
	for (size_t i = 0; i < ccache.nb; i++)
		for (struct cent *e = ccache.b[i], *n; e; e = n) {
			n = e->next;
			if (e->c.users)
				roaring_bitmap_free(e->c.users);
			free(e);
		}
	free(ccache.b);
	ccache.b = NULL;
	ccache.nb = ccache.n = ccache.bytes = 0;
}

static struct cent *ccache_find(const uint8_t *key, size_t klen, uint64_t h)
{
	if (!ccache.nb)
		return NULL;
	for (struct cent *e = ccache.b[h & (ccache.nb - 1)]; e; e = e->next)
		if (e->h == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

/* A new empty entry for key (absent), or NULL without memory. */
static struct cent *ccache_add(const uint8_t *key, size_t klen, uint64_t h)
{
	if (ccache.n >= CCACHE_MAX_ENTRIES || ccache.bytes >= CCACHE_MAX_BYTES)
		ccache_clear();
	if (ccache.n >= ccache.nb) {
		size_t nb = ccache.nb ? ccache.nb * 2 : 4096;
		struct cent **b = calloc(nb, sizeof(*b));
		if (!b)
			return NULL;
		for (size_t i = 0; i < ccache.nb; i++)
			for (struct cent *x = ccache.b[i], *n; x; x = n) {
				n = x->next;
				x->next = b[x->h & (nb - 1)];
				b[x->h & (nb - 1)] = x;
			}
		free(ccache.b);
		ccache.b = b, ccache.nb = nb;
	}
	struct cent *e = calloc(1, sizeof(*e) + klen);
	if (!e)
		return NULL;
	e->h = h, e->klen = (uint16_t)klen;
	memcpy(e->key, key, klen);
	e->next = ccache.b[h & (ccache.nb - 1)];
	ccache.b[h & (ccache.nb - 1)] = e;
	ccache.n++;
	return e;
}

static void ccache_drop(struct cent *e)
{
	struct cent **pp = &ccache.b[e->h & (ccache.nb - 1)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	ccache.n--;
	ccache.bytes -= e->bytes;
	if (e->c.users)
		roaring_bitmap_free(e->c.users);
	free(e);
}

/* Adds the batch's part of an 'M' counter to the record and writes it. */
static int acc_flush_metric(struct sx_ev_batch *b, struct acc *a)
{
	uint64_t h = a->h;
	struct cent *e = ccache_find(a->key, a->klen, h);
	int rc;
	if (!e) {
		struct sx_val v;
		rc = sx_store_get(sx__ev_eng->store, SX_T_COUNTERS, a->key, a->klen, &v);
		if (rc < 0 && rc != SX_ENOENT)
			return rc;
		if (!(e = ccache_add(a->key, a->klen, h)))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		if (rc == 0 && (rc = sx__ev_counter_merge(&e->c, v.data, v.len)) < 0) {
			ccache_drop(e);
			return rc;
		}
	}
	e->c.count += a->c.count;
	e->c.sum += a->c.sum;
	e->c.nsum += a->c.nsum;
	if (a->nu) {
		if (!e->c.users && !(e->c.users = roaring_bitmap_create()))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		roaring_bitmap_add_many(e->c.users, a->nu, a->uv);
	}
	if ((rc = sx__ev_counter_encode(&e->c, &b->sb)) < 0)
		return rc;
	ccache.bytes -= e->bytes;
	e->bytes = b->sb.size;
	ccache.bytes += e->bytes;
	return put(SX_T_COUNTERS, a->key, a->klen, b->sb.data, b->sb.size);
}

static int acc_flush(struct sx_ev_batch *b, struct acc *a)
{
	struct sx_val v;
	if (a->key[0] != 'F')
		return acc_flush_metric(b, a);
	int rc = sx_store_get(sx__ev_eng->store, SX_T_COUNTERS, a->key, a->klen, &v);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	roaring_bitmap_t *old = rc == 0 ? sx__ev_bitmap_decode(v.data, v.len) : roaring_bitmap_create();
	if (!old)
		return SX_ECORRUPT;
	if (a->del)
		roaring_bitmap_andnot_inplace(old, a->del);
	if (a->c.users)
		roaring_bitmap_or_inplace(old, a->c.users);
	if (roaring_bitmap_is_empty(old)) {
		roaring_bitmap_free(old);
		return rc == 0 ? sx_store_del(sx__ev_eng->store, SX_T_COUNTERS, a->key, a->klen) : 0;
	}
	roaring_bitmap_run_optimize(old);
	rc = sx__ev_bitmap_encode(old, &b->sb);
	roaring_bitmap_free(old);
	return rc < 0 ? rc : put(SX_T_COUNTERS, a->key, a->klen, b->sb.data, b->sb.size);
}

int sx__ev_batch_finish(struct sx_ev_batch *b)
{
	int rc = 0;
	for (int i = 0; i < UC_BUCKETS && rc == 0; i++)
		for (struct ucache *u = b->users[i]; u && rc == 0; u = u->next)
			if (u->first != u->orig_first) {
				uint8_t k[5] = {'U'}, v[8];
				sx_be32(k + 1, u->idx);
				sx_be64(v, (uint64_t)u->first);
				rc = put(SX_T_COUNTERS, k, 5, v, 8);
				if (rc == 0)
					ucache_set(u->id, u->len, XXH3_64bits(u->id, u->len), u->idx, u->first);
			}
	for (int i = 0; i < ACC_BUCKETS && rc == 0; i++)
		for (struct acc *a = b->acc[i]; a && rc == 0; a = a->next)
			rc = acc_flush(b, a);
	/* The request will be rolled back: the caches may already hold some of it. */
	if (rc < 0)
		sx__ev_user_cache_clear();
	sx__ev_batch_free(b);
	return rc;
}

/* ---- methods ---- */

static int id_arg(const msgpack_object *args, const char *key, const char **s, size_t *len)
{
	const msgpack_object *o = sx_arg(args, key);
	int rc = sx__ev_check_id(o, key);
	*s = NULL, *len = 0;
	if (rc < 0)
		return sx_diag_set(rc, "argument %s", sx_diag_last());
	*s = o->via.str.ptr, *len = o->via.str.size;
	return 0;
}

/* A user id argument "id", as stored (pseudonymized when configured; buf holds it then). */
static int user_id_arg(const msgpack_object *args, char *buf, const char **s, size_t *len)
{
	int rc = id_arg(args, "id", s, len);
	if (rc == 0)
		*s = sx_privacy_user_id(*s, *len, buf, len);
	return rc;
}

static int m_users_put(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", "attributes", "signup_time", NULL};
	const char *id;
	size_t len;
	const msgpack_object *attrs = NULL;
	int64_t signup = 0;
	uint32_t idx;
	int created, rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	char pbuf[SX_PRIVACY_ID_BUF];
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_id_arg(args, pbuf, &id, &len)) < 0 ||
	    (rc = sx_arg_map(args, "attributes", 0, &attrs)) < 0 ||
	    (attrs && (rc = sx__ev_check_value(attrs, "argument 'attributes'", SX_EV_ATTRS_MAX)) < 0) ||
	    (rc = sx_arg_int(args, "signup_time", 0, &signup)) < 0)
		return rc;
	if (signup < 0 || signup > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'signup_time' must be ms since 1970 and before the year 10000");
	if ((rc = sx__ev_user_put(id, len, attrs, signup, sx_arg(args, "signup_time") != NULL, &idx, &created)) < 0)
		return rc;
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "id");
	sx_pack_strn(pk, id, len);
	sx_pack_kv_uint(pk, "index", idx);
	sx_pack_kv_bool(pk, "created", created);
	return 0;
}

static int m_users_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", NULL};
	const char *id;
	size_t len;
	const void *rec;
	size_t rlen;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	char pbuf[SX_PRIVACY_ID_BUF];
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_id_arg(args, pbuf, &id, &len)) < 0 ||
	    (rc = sx_events_user_record(NULL, id, len, &rec, &rlen)) < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if ((rc = sx__ev_unpack(rec, rlen, &z, &o)) < 0 || o.type != MSGPACK_OBJECT_MAP) {
		msgpack_zone_destroy(&z);
		return rc < 0 ? rc : corrupt("user");
	}
	uint32_t idx;
	int64_t first;
	struct sx_val v = {rec, rlen};
	if ((rc = user_rec_index(&v, &idx)) < 0) {
		msgpack_zone_destroy(&z);
		return rc;
	}
	int has_first = sx_events_user_first_seen(NULL, idx, &first) == 0;
	const msgpack_object *a = sx__ev_map_get(&o, "attributes"), *s = sx__ev_map_get(&o, "signup_time"),
			     *c = sx__ev_map_get(&o, "created");
	msgpack_pack_map(pk, 6);
	sx_pack_key(pk, "id");
	sx_pack_strn(pk, id, len);
	sx_pack_kv_uint(pk, "index", idx);
	sx_pack_key(pk, "attributes");
	if (a)
		sx_pack_object(pk, a);
	else
		msgpack_pack_map(pk, 0);
	sx_pack_key(pk, "signup_time");
	if (s)
		sx_pack_object(pk, s);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "first_seen");
	if (has_first)
		msgpack_pack_int64(pk, first);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "created");
	if (c)
		sx_pack_object(pk, c);
	else
		msgpack_pack_nil(pk);
	msgpack_zone_destroy(&z);
	return 0;
}

struct uev {
	msgpack_packer *pk;
	uint32_t n, limit;
	int64_t next_time;
	int more;
};

static void pack_props(msgpack_packer *pk, const void *props, size_t len)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if (props && sx__ev_unpack(props, len, &z, &o) == 0)
		sx_pack_object(pk, &o);
	else
		msgpack_pack_map(pk, 0);
	msgpack_zone_destroy(&z);
}

static int uev_cb(const struct sx_event *ev, void *ud)
{
	struct uev *u = ud;
	if (u->n == u->limit) {
		u->more = 1;
		u->next_time = ev->time;
		return 1;
	}
	msgpack_pack_map(u->pk, 4);
	sx_pack_key(u->pk, "name");
	sx_pack_strn(u->pk, ev->name, ev->name_len);
	sx_pack_kv_int(u->pk, "time", ev->time);
	sx_pack_key(u->pk, "item");
	if (ev->item)
		sx_pack_strn(u->pk, ev->item, ev->item_len);
	else
		msgpack_pack_nil(u->pk);
	sx_pack_key(u->pk, "properties");
	pack_props(u->pk, ev->props, ev->props_len);
	u->n++;
	return 0;
}

struct counter {
	uint32_t n, limit;
};

static int count_cb(const struct sx_event *ev, void *ud)
{
	struct counter *c = ud;
	SX_UNUSED(ev);
	return ++c->n > c->limit ? 1 : 0;
}

static int m_users_events(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", "from", "to", "limit", NULL};
	const char *id;
	size_t len;
	int64_t from = 0, to = SX_EVENTS_TIME_MAX + 1, limit = 100;
	uint32_t idx;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	char pbuf[SX_PRIVACY_ID_BUF];
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_id_arg(args, pbuf, &id, &len)) < 0 ||
	    (rc = sx_arg_int(args, "from", 0, &from)) < 0 || (rc = sx_arg_int(args, "to", 0, &to)) < 0 ||
	    (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (limit < 1 || limit > 10000)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to 10000");
	if ((rc = sx_events_user_index(NULL, id, len, &idx)) < 0)
		return rc;
	struct counter c = {0, (uint32_t)limit};
	if ((rc = sx_events_user_scan(NULL, idx, from, to, 0, count_cb, &c)) < 0)
		return rc;
	struct uev u = {pk, 0, (uint32_t)limit, 0, 0};
	msgpack_pack_map(pk, 2);
	sx_pack_key(pk, "events");
	msgpack_pack_array(pk, c.n > limit ? (size_t)limit : c.n);
	if ((rc = sx_events_user_scan(NULL, idx, from, to, 0, uev_cb, &u)) < 0)
		return rc;
	sx_pack_key(pk, "next_from");
	if (u.more)
		msgpack_pack_int64(pk, u.next_time);
	else
		msgpack_pack_nil(pk);
	return 0;
}

static int m_items_put(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", "kind", "attributes", "vector", NULL};
	const char *id, *ks;
	size_t len, klen;
	const msgpack_object *attrs = NULL, *vec = NULL;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = id_arg(args, "id", &id, &len)) < 0 ||
	    (rc = sx_arg_str(args, "kind", 1, &ks, &klen)) < 0 || (rc = sx_arg_map(args, "attributes", 0, &attrs)) < 0 ||
	    (attrs && (rc = sx__ev_check_value(attrs, "argument 'attributes'", SX_EV_ATTRS_MAX)) < 0) ||
	    (rc = sx_arg_array(args, "vector", 0, &vec)) < 0)
		return rc;
	int kind = sx_item_kind_parse(ks, klen);
	if (kind < 0)
		return sx_diag_set(SX_EINVAL, "argument 'kind' must be trip, destination, activity or offer");
	uint32_t dim = vec ? vec->via.array.size : 0;
	if (vec && (dim == 0 || dim > SX_EVENTS_VECTOR_MAX))
		return sx_diag_set(SX_EINVAL, "argument 'vector' must hold 1 to %d numbers", SX_EVENTS_VECTOR_MAX);
	float *fv = dim ? malloc(sizeof(float) * dim) : NULL;
	if (dim && !fv)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < dim; i++) {
		double d;
		if (!num_of(&vec->via.array.ptr[i], &d) || fabs(d) > 3.4e38) {
			free(fv);
			return sx_diag_set(SX_EINVAL, "argument 'vector' element %u must be a finite number (float32 range)", i);
		}
		fv[i] = (float)d;
	}
	rc = sx__ev_item_put(id, len, kind, attrs, fv, dim);
	free(fv);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 2);
	sx_pack_key(pk, "id");
	sx_pack_strn(pk, id, len);
	sx_pack_kv_str(pk, "kind", kind_names[kind]);
	return 0;
}

static void pack_item(msgpack_packer *pk, const struct sx_item *it)
{
	msgpack_pack_map(pk, 5);
	sx_pack_key(pk, "id");
	sx_pack_strn(pk, it->id, it->id_len);
	sx_pack_kv_str(pk, "kind", kind_names[it->kind]);
	sx_pack_key(pk, "attributes");
	pack_props(pk, it->attrs, it->attrs_len);
	sx_pack_key(pk, "vector");
	if (it->dim) {
		float f[SX_EVENTS_VECTOR_MAX];
		sx_item_vector(it, f, SX_EVENTS_VECTOR_MAX);
		msgpack_pack_array(pk, it->dim);
		for (uint32_t i = 0; i < it->dim; i++)
			msgpack_pack_double(pk, f[i]);
	} else {
		msgpack_pack_nil(pk);
	}
	sx_pack_kv_int(pk, "updated", it->updated);
}

static int m_items_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", NULL};
	const char *id;
	size_t len;
	struct sx_item it;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = id_arg(args, "id", &id, &len)) < 0 ||
	    (rc = sx_events_item_get(NULL, id, len, &it)) < 0)
		return rc;
	pack_item(pk, &it);
	return 0;
}

static int m_items_delete(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"id", NULL};
	const char *id;
	size_t len;
	struct sx_item it;
	uint8_t k[2 + SX_EVENTS_ID_MAX];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = id_arg(args, "id", &id, &len)) < 0 ||
	    (rc = sx_events_item_get(NULL, id, len, &it)) < 0)
		return rc;
	k[0] = 'k', k[1] = (uint8_t)it.kind;
	memcpy(k + 2, id, len);
	if ((rc = sx_store_del(sx__ev_eng->store, SX_T_ITEMS, k, len + 2)) < 0)
		return rc;
	k[0] = 'i';
	memcpy(k + 1, id, len);
	if ((rc = sx_store_del(sx__ev_eng->store, SX_T_ITEMS, k, len + 1)) < 0)
		return rc;
	notify_item(id, len, 1);
	msgpack_pack_map(pk, 2);
	sx_pack_key(pk, "id");
	sx_pack_strn(pk, id, len);
	sx_pack_kv_bool(pk, "deleted", 1);
	return 0;
}

struct ilist {
	msgpack_packer *pk;
	uint32_t n, limit;
	int more, pack;
	char last[SX_EVENTS_ID_MAX];
	size_t last_len;
};

static int ilist_cb(const struct sx_item *it, void *ud)
{
	struct ilist *l = ud;
	if (l->n == l->limit) {
		l->more = 1;
		return 1;
	}
	if (l->pack)
		pack_item(l->pk, it);
	memcpy(l->last, it->id, it->id_len);
	l->last_len = it->id_len;
	l->n++;
	return 0;
}

static int m_items_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "cursor", "limit", NULL};
	const char *ks = NULL, *cur = NULL;
	size_t klen = 0, clen = 0;
	int64_t limit = 100;
	int kind = -1, rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "kind", 0, &ks, &klen)) < 0 ||
	    (rc = sx_arg_str(args, "cursor", 0, &cur, &clen)) < 0 || (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (ks && (kind = sx_item_kind_parse(ks, klen)) < 0)
		return sx_diag_set(SX_EINVAL, "argument 'kind' must be trip, destination, activity or offer");
	if (limit < 1 || limit > 1000)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to 1000");
	if (cur && (clen > SX_EVENTS_ID_MAX))
		return sx_diag_set(SX_EINVAL, "argument 'cursor' is not a cursor of items.list");
	/* first the smallest key after the cursor (ids hold no NUL), then the end of the range */
	uint8_t lo[3 + SX_EVENTS_ID_MAX], hi[2];
	size_t lolen, hilen;
	if (kind >= 0) {
		lo[0] = 'k', lo[1] = (uint8_t)kind, lolen = 2;
		hi[0] = 'k', hi[1] = (uint8_t)(kind + 1), hilen = 2;
	} else {
		lo[0] = 'i', lolen = 1;
		hi[0] = 'j', hilen = 1;
	}
	if (cur) {
		memcpy(lo + lolen, cur, clen);
		lolen += clen;
		lo[lolen++] = 0;
	}
	struct ilist l = {pk, 0, (uint32_t)limit, 0, 0, "", 0};
	struct iscan s = {NULL, kind >= 0, ilist_cb, &l};
	if ((rc = sx__ev_scan(NULL, SX_T_ITEMS, lo, lolen, hi, hilen, 0, iscan_cb, &s)) < 0)
		return rc;
	msgpack_pack_map(pk, 2);
	sx_pack_key(pk, "items");
	msgpack_pack_array(pk, l.n);
	l.n = 0, l.more = 0, l.pack = 1;
	if ((rc = sx__ev_scan(NULL, SX_T_ITEMS, lo, lolen, hi, hilen, 0, iscan_cb, &s)) < 0)
		return rc;
	sx_pack_key(pk, "cursor");
	if (l.more)
		sx_pack_strn(pk, l.last, l.last_len);
	else
		msgpack_pack_nil(pk);
	return 0;
}

/* ---- events.track ---- */

struct expired {
	uint8_t key[9 + SX_EVENTS_ID_MAX];
	size_t len;
};

struct expire_scan {
	struct expired e[32];
	int n;
};

static int expire_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct expire_scan *s = ud;
	SX_UNUSED(val);
	if (key->len > sizeof(s->e[0].key) || key->len < 10)
		return 0;
	memcpy(s->e[s->n].key, key->data, key->len);
	s->e[s->n].len = key->len;
	return ++s->n == 32 ? 1 : 0;
}

/* Forgets up to 32 client ids whose retention ended before now. */
static int expire_client_ids(int64_t now)
{
	uint8_t hi[9] = {'X'};
	struct expire_scan *s = malloc(sizeof(*s));
	int rc;
	if (!s)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	s->n = 0;
	sx_be64(hi + 1, (uint64_t)now);
	rc = sx__ev_scan(NULL, SX_T_COUNTERS, "X", 1, hi, 9, 0, expire_cb, s);
	for (int i = 0; i < s->n && rc == 0; i++) {
		uint8_t k[1 + SX_EVENTS_ID_MAX];
		k[0] = 'K';
		memcpy(k + 1, s->e[i].key + 9, s->e[i].len - 9);
		rc = sx_store_del(sx__ev_eng->store, SX_T_COUNTERS, s->e[i].key, s->e[i].len);
		if (rc == 0)
			rc = sx_store_del(sx__ev_eng->store, SX_T_COUNTERS, k, s->e[i].len - 8);
	}
	free(s);
	return rc;
}

static int m_events_track(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const batch_known[] = {"events", "client_id", NULL};
	const msgpack_object *events = sx_arg(args, "events"), *cid = sx_arg(args, "client_id");
	int64_t now = sx_wall_ms();
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "events.track needs {events = [...]} or one event {user, name, ...}");
	if (events && (rc = sx_arg_only(args, batch_known)) < 0)
		return rc;
	if (events && events->type != MSGPACK_OBJECT_ARRAY)
		return sx_diag_set(SX_EINVAL, "argument 'events' must be an array of events");
	if (events && events->via.array.size > SX_EVENTS_BATCH_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'events' holds %u events; at most %d per call",
				   events->via.array.size, SX_EVENTS_BATCH_MAX);
	if (cid && (rc = sx__ev_check_id(cid, "client_id")) < 0)
		return sx_diag_set(rc, "argument %s", sx_diag_last());

	/* the single-event form: the event's own keys plus client_id */
	msgpack_object single;
	msgpack_object_kv kvs[6];
	if (!events) {
		uint32_t n = 0;
		for (uint32_t i = 0; i < args->via.map.size; i++)
			if (!sx_obj_streq(&args->via.map.ptr[i].key, "client_id")) {
				if (n == SX_ARRAY_SIZE(kvs))
					return sx_diag_set(SX_EINVAL, "an event has user, name, item, time and properties only");
				kvs[n++] = args->via.map.ptr[i];
			}
		single.type = MSGPACK_OBJECT_MAP;
		single.via.map.size = n;
		single.via.map.ptr = kvs;
	}

	uint8_t ck[1 + SX_EVENTS_ID_MAX];
	size_t cklen = 0;
	if (cid) {
		struct sx_val v;
		ck[0] = 'K';
		memcpy(ck + 1, cid->via.str.ptr, cid->via.str.size);
		cklen = 1 + cid->via.str.size;
		if ((rc = expire_client_ids(now)) < 0)
			return rc;
		rc = sx_store_get(sx__ev_eng->store, SX_T_COUNTERS, ck, cklen, &v);
		if (rc == 0) {
			msgpack_zone z;
			msgpack_object o;
			const msgpack_object *acc, *rej;
			msgpack_zone_init(&z, 4096);
			if ((rc = sx__ev_unpack(v.data, v.len, &z, &o)) < 0 || !(acc = sx__ev_map_get(&o, "accepted")) ||
			    !(rej = sx__ev_map_get(&o, "rejected"))) {
				msgpack_zone_destroy(&z);
				return rc < 0 ? rc : corrupt("client id");
			}
			msgpack_pack_map(pk, 3);
			sx_pack_key(pk, "accepted");
			sx_pack_object(pk, acc);
			sx_pack_key(pk, "rejected");
			sx_pack_object(pk, rej);
			sx_pack_kv_bool(pk, "duplicate", 1);
			msgpack_zone_destroy(&z);
			return 0;
		}
		if (rc != SX_ENOENT)
			return rc;
	}

	struct sx_ev_batch *b = sx__ev_batch_new();
	if (!b)
		return SX_ENOMEM;
	uint32_t n = events ? events->via.array.size : 1, accepted = 0, nrej = 0;
	/* rejected entries are kept as (index, rc, message) in a side buffer */
	msgpack_sbuffer rej;
	msgpack_packer rpk;
	/* per event: its user's index, NO_USER if anonymous, NOT_ACCEPTED */
	uint64_t *ok = n_track_obs ? malloc(n * sizeof(*ok)) : NULL;
	if (n_track_obs && !ok) {
		sx__ev_batch_free(b);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	msgpack_sbuffer_init(&rej);
	msgpack_packer_init(&rpk, &rej, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *ev = events ? &events->via.array.ptr[i] : &single;
		rc = sx__ev_batch_add(b, ev, now);
		if (ok)
			ok[i] = NOT_ACCEPTED;
		if (rc == SX_EINVAL) {
			if (!events) {
				sx__ev_batch_free(b);
				msgpack_sbuffer_destroy(&rej);
				free(ok);
				return rc;
			}
			msgpack_pack_map(&rpk, 3);
			sx_pack_kv_uint(&rpk, "index", i);
			sx_pack_kv_str(&rpk, "code", sx_error_code(rc));
			sx_pack_kv_str(&rpk, "message", sx_diag_last());
			nrej++;
			continue;
		}
		if (rc < 0) {
			sx__ev_batch_free(b);
			msgpack_sbuffer_destroy(&rej);
			free(ok);
			return rc;
		}
		if (ok)
			ok[i] = b->last_user;
		accepted++;
	}
	if ((rc = sx__ev_batch_finish(b)) < 0) {
		msgpack_sbuffer_destroy(&rej);
		free(ok);
		return rc;
	}
	msgpack_sbuffer res;
	msgpack_packer respk;
	msgpack_sbuffer_init(&res);
	msgpack_packer_init(&respk, &res, msgpack_sbuffer_write);
	msgpack_pack_map(&respk, 2);
	sx_pack_kv_uint(&respk, "accepted", accepted);
	sx_pack_key(&respk, "rejected");
	msgpack_pack_array(&respk, nrej);
	msgpack_pack_bin_body(&respk, rej.data, rej.size); /* raw bytes: already packed entries */
	msgpack_sbuffer_destroy(&rej);
	if (cid) {
		uint8_t xk[9 + SX_EVENTS_ID_MAX];
		xk[0] = 'X';
		sx_be64(xk + 1, (uint64_t)(now + SX_EV_CLIENT_TTL_MS));
		memcpy(xk + 9, cid->via.str.ptr, cid->via.str.size);
		if ((rc = put(SX_T_COUNTERS, ck, cklen, res.data, res.size)) < 0 ||
		    (rc = put(SX_T_COUNTERS, xk, 9 + cid->via.str.size, "", 1)) < 0) {
			msgpack_sbuffer_destroy(&res);
			free(ok);
			return rc;
		}
	}
	if (ok) {
		msgpack_sbuffer ps;
		msgpack_sbuffer_init(&ps);
		for (uint32_t i = 0; i < n; i++)
			if (ok[i] != NOT_ACCEPTED)
				notify_track(events ? &events->via.array.ptr[i] : &single, now, (uint32_t)ok[i], &ps);
		msgpack_sbuffer_destroy(&ps);
		for (int i = 0; i < n_track_obs; i++)
			track_obs[i].fn(NULL, track_obs[i].ud);
		free(ok);
	}
	/* the reply: the stored map plus duplicate = false */
	msgpack_pack_map(pk, 3);
	pk->callback(pk->data, res.data + 1, res.size - 1);
	sx_pack_kv_bool(pk, "duplicate", 0);
	msgpack_sbuffer_destroy(&res);
	return 0;
}

/* ---- plugin ---- */

static int last_index_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	SX_UNUSED(val);
	if (key->len == 4)
		*(uint32_t *)ud = sx_get_be32(key->data) + 1;
	return 1;
}

static int start(struct sx_engine *e)
{
	struct sx_val v;
	uint8_t bv[8];
	int rc;
	sx__ev_eng = e;
	next_uidx = 0;
	sx__ev_user_cache_clear();
	if ((rc = sx_store_on_undo(e->store, ucache_undo_cb, NULL)) < 0)
		return rc;
	n_track_obs = n_item_obs = n_user_obs = 0;
	if ((rc = sx_store_scan(e->store, SX_T_USER_IDX, NULL, 0, NULL, 0, 1, last_index_cb, &next_uidx)) < 0)
		return rc;
	/* erased users leave no index entry: the bound they left keeps their indexes unused */
	rc = sx_store_get(e->store, SX_T_COUNTERS, "N", 1, &v);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	if (rc == 0 && v.len == 4 && sx_get_be32(v.data) > next_uidx)
		next_uidx = sx_get_be32(v.data);
	rc = sx_store_get(e->store, SX_T_COUNTERS, "B", 1, &v);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	boot_epoch = rc == 0 && v.len == 8 ? sx_get_be64(v.data) + 1 : 1;
	seq_counter = 0;
	sx_be64(bv, boot_epoch);
	if ((rc = sx_store_put(e->store, SX_T_COUNTERS, "B", 1, bv, 8)) < 0)
		return rc;
	sx_store_read_end(e->store);
	const struct sx_method methods[] = {
		{"users.put", SX_ROLE_WRITER, m_users_put, NULL, "create or update a user {id, attributes?, signup_time?}"},
		{"users.get", SX_ROLE_READER, m_users_get, NULL, "a user's index, attributes, signup and first-seen times"},
		{"users.events", SX_ROLE_READER, m_users_events, NULL, "a user's events in time order {id, from?, to?, limit?}"},
		{"items.put", SX_ROLE_WRITER, m_items_put, NULL, "create or replace an item {id, kind, attributes?, vector?}"},
		{"items.get", SX_ROLE_READER, m_items_get, NULL, "an item by id"},
		{"items.list", SX_ROLE_READER, m_items_list, NULL, "items in id order {kind?, cursor?, limit?}"},
		{"items.delete", SX_ROLE_WRITER, m_items_delete, NULL, "delete an item"},
		{"events.track", SX_ROLE_WRITER, m_events_track, NULL, "record one event or a batch of up to 10,000"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	if ((rc = sx__ev_metrics_start(e)) < 0 || (rc = sx__ev_analytics_start(e)) < 0 ||
	    (rc = sx__ev_demo_start(e)) < 0)
		return rc;
	return 0;
}

static void stop(struct sx_engine *e)
{
	sx__ev_demo_stop(e);
	sx__ev_user_cache_clear();
	sx__ev_analytics_stop(e);
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	SX_UNUSED(e);
	struct sx_events_funnel_cache_stats fc;
	sx_events_funnel_cache_stats(&fc);
	struct sx_tl_warm_stats ws;
	uint64_t entries, built, reused;
	sx__tl_warm_stats(&ws);
	sx__tl_stats(&entries, &built, &reused);
	msgpack_pack_map(pk, 3);
	sx_pack_kv_uint(pk, "user_bound", next_uidx);
	sx_pack_key(pk, "funnel_blocks");
	msgpack_pack_map(pk, 10);
	sx_pack_kv_uint(pk, "entries", entries);
	sx_pack_kv_uint(pk, "built", built);
	sx_pack_kv_uint(pk, "reused", reused);
	sx_pack_kv_uint(pk, "extended", sx__tl_extended());
	sx_pack_kv_uint(pk, "warm_days", ws.days);
	sx_pack_kv_bool(pk, "warming", ws.busy);
	sx_pack_kv_uint(pk, "warm_builds", ws.runs);
	sx_pack_kv_uint(pk, "warm_failed", ws.failed);
	sx_pack_kv_uint(pk, "warm_last_ms", ws.last_ms);
	sx_pack_key(pk, "warm_range");
	if (ws.to > ws.from) {
		msgpack_pack_array(pk, 2);
		msgpack_pack_int64(pk, ws.from);
		msgpack_pack_int64(pk, ws.to);
	} else {
		msgpack_pack_nil(pk);
	}
	sx_pack_key(pk, "funnel_cache");
	msgpack_pack_map(pk, 5);
	sx_pack_kv_uint(pk, "entries", fc.entries);
	sx_pack_kv_uint(pk, "hits", fc.hits);
	sx_pack_kv_uint(pk, "sync", fc.sync);
	sx_pack_kv_uint(pk, "revalidations", fc.revalidations);
	sx_pack_kv_uint(pk, "failed", fc.failed);
}

const struct sx_plugin sx_plugin_events = {"events", start, stop, info};
