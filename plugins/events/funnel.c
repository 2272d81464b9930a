/* funnel.query: candidates from the user bitmaps, then one cursor walked in
 * user order over the events of the users the bitmaps cannot settle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/funnel.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "store/store.h"

#define GROUP_VALUE_MAX 64

struct dvec {
	int64_t *v;
	size_t n, cap;
};

struct fgroup {
	char value[GROUP_VALUE_MAX + 1];
	size_t vlen;
	uint64_t users[SX_FUNNEL_STEPS_MAX];
	struct dvec delta[SX_FUNNEL_STEPS_MAX];
};

struct fpart {
	uint32_t lo, hi; /* users [lo, hi] of the scan set; empty if lo > hi */
	int empty;
	struct fgroup all;
	struct fgroup *groups;
	size_t ngroups;
	struct sx_funnel_ev *ev;
	const void **props; /* per event: the properties (bin) of a step-1 event, a view */
	size_t *plen;
	size_t nev, cap;
	uint64_t scanned;
	int rc;
	char err[256];
};

struct sx_funnel {
	int nsteps;
	char name[SX_FUNNEL_STEPS_MAX][SX_EVENTS_ID_MAX + 1];
	size_t nlen[SX_FUNNEL_STEPS_MAX];
	int64_t from, to, window, end;
	int grouped;
	char group[SX_EVENTS_ID_MAX + 1];
	const char *group_prop, *group_user;
	roaring_bitmap_t *scan;
	uint64_t pruned;
	struct sx_tl_set *tl; /* the hours' blocks, NULL: read the events table */
	int nparts;
	struct fpart part[SX_FUNNEL_PARTS_MAX];
};

int sx__funnel_blocks = 1;

/* ---- the matcher ---- */

int sx__funnel_match(const struct sx_funnel_ev *ev, size_t n, int nsteps, int64_t from, int64_t to,
		     int64_t window, int64_t *t, size_t *start)
{
	/* at[k]: the first step-k event after the step-(k-1) event of some
	 * earlier start (n: none). A later start's chain lies at or after an
	 * earlier one's, step by step, so at[k] only moves forward: linear in
	 * n per step, not quadratic when a user has many step-1 events. */
	size_t at[SX_FUNNEL_STEPS_MAX] = {0};
	int best = 0;
	for (size_t s = 0; s < n && best < nsteps; s++) {
		if (!(ev[s].mask & 1) || ev[s].time < from || ev[s].time >= to)
			continue;
		int64_t last = ev[s].time + window;
		size_t prev = s;
		int k = 1;
		for (; k < nsteps; k++) {
			size_t j = at[k] > prev ? at[k] : prev + 1;
			while (j < n && !(ev[j].mask & (1u << k)))
				j++;
			at[k] = j;
			if (j >= n || ev[j].time > last)
				break;
			prev = j;
		}
		if (k > best) {
			best = k, *start = s;
			t[0] = ev[s].time;
			for (int i = 1; i < k; i++)
				t[i] = ev[at[i]].time;
		}
	}
	return best;
}

/* ---- accumulators ---- */

static int dvec_push(struct dvec *d, int64_t v)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		int64_t *p = realloc(d->v, cap * sizeof(*p));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		d->v = p, d->cap = cap;
	}
	d->v[d->n++] = v;
	return 0;
}

static int dvec_append(struct dvec *d, const struct dvec *s)
{
	if (!s->n)
		return 0;
	if (d->n + s->n > d->cap) {
		size_t cap = d->n + s->n;
		int64_t *p = realloc(d->v, cap * sizeof(*p));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		d->v = p, d->cap = cap;
	}
	memcpy(d->v + d->n, s->v, s->n * sizeof(int64_t));
	d->n += s->n;
	return 0;
}

/* The k-th smallest of v[0..n) (v is reordered), by quickselect. */
static int64_t select_k(int64_t *v, size_t n, size_t k)
{
	size_t lo = 0, hi = n - 1;
	while (lo < hi) {
		int64_t a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
		int64_t piv = a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b);
		size_t i = lo, j = hi;
		while (i <= j) {
			while (v[i] < piv)
				i++;
			while (v[j] > piv)
				j--;
			if (i <= j) {
				int64_t x = v[i];
				v[i] = v[j], v[j] = x;
				i++;
				if (j == 0)
					break;
				j--;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			return v[k];
	}
	return v[k];
}

static double median(struct dvec *d)
{
	if (!d->n)
		return 0;
	int64_t hi = select_k(d->v, d->n, d->n / 2);
	if (d->n % 2)
		return (double)hi;
	/* v[0..n/2) now holds the smaller half */
	int64_t lo = d->v[0];
	for (size_t i = 1; i < d->n / 2; i++)
		if (d->v[i] > lo)
			lo = d->v[i];
	return ((double)lo + (double)hi) / 2.0;
}

static void fgroup_free(struct fgroup *g)
{
	for (int k = 0; k < SX_FUNNEL_STEPS_MAX; k++)
		free(g->delta[k].v);
}

static int count(struct fgroup *g, int depth, const int64_t *t)
{
	for (int k = 0; k < depth; k++) {
		g->users[k]++;
		if (k > 0) {
			int rc = dvec_push(&g->delta[k], t[k] - t[k - 1]);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* The group of value v (NULL: none, grouped as nil); NULL when the table is
 * full (the user then counts in the total only). */
static struct fgroup *group_of(struct fpart *p, const char *v, size_t n, int *rc)
{
	if (!v)
		v = "", n = 0;
	for (size_t i = 0; i < p->ngroups; i++)
		if (p->groups[i].vlen == n && !memcmp(p->groups[i].value, v, n))
			return &p->groups[i];
	if (p->ngroups == SX_FUNNEL_GROUPS_MAX)
		return NULL;
	if (!p->groups && !(p->groups = calloc(SX_FUNNEL_GROUPS_MAX, sizeof(*p->groups)))) {
		*rc = sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	struct fgroup *g = &p->groups[p->ngroups++];
	memcpy(g->value, v, n);
	g->vlen = n;
	return g;
}

/* ---- values ---- */

size_t sx__ev_value_string(const msgpack_object *o, char *buf)
{
	int n;
	switch (o ? o->type : MSGPACK_OBJECT_NIL) {
	case MSGPACK_OBJECT_STR:
		n = o->via.str.size > GROUP_VALUE_MAX ? GROUP_VALUE_MAX : (int)o->via.str.size;
		memcpy(buf, o->via.str.ptr, (size_t)n);
		return (size_t)n;
	case MSGPACK_OBJECT_BOOLEAN: return (size_t)snprintf(buf, GROUP_VALUE_MAX + 1, "%s", o->via.boolean ? "true" : "false");
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (size_t)snprintf(buf, GROUP_VALUE_MAX + 1, "%llu", (unsigned long long)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (size_t)snprintf(buf, GROUP_VALUE_MAX + 1, "%lld", (long long)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return (size_t)snprintf(buf, GROUP_VALUE_MAX + 1, "%.17g", o->via.f64);
	default: return (size_t)-1;
	}
}

static size_t prop_string(const void *props, size_t len, const char *key, char *buf)
{
	msgpack_zone z;
	msgpack_object o;
	size_t n = (size_t)-1;
	if (!props)
		return n;
	msgpack_zone_init(&z, 512);
	if (sx__ev_unpack(props, len, &z, &o) == 0)
		n = sx__ev_value_string(sx__ev_map_get(&o, key), buf);
	msgpack_zone_destroy(&z);
	return n;
}

static int user_attr_string(MDB_txn *txn, uint32_t idx, const char *attr, char *buf, size_t *n)
{
	char id[SX_EVENTS_ID_MAX + 1];
	size_t idlen;
	const void *rec;
	size_t rlen;
	int rc;
	*n = (size_t)-1;
	if ((rc = sx_events_user_id(txn, idx, id, sizeof(id), &idlen)) < 0 ||
	    (rc = sx_events_user_record(txn, id, idlen, &rec, &rlen)) < 0)
		return rc == SX_ENOENT ? 0 : rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if ((rc = sx__ev_unpack(rec, rlen, &z, &o)) == 0)
		*n = sx__ev_value_string(sx__ev_map_get(sx__ev_map_get(&o, "attributes"), attr), buf);
	msgpack_zone_destroy(&z);
	return rc;
}

/* ---- arguments ---- */

static int time_arg(const msgpack_object *args, const char *key, int64_t *out)
{
	int rc = sx_arg_int(args, key, 1, out);
	if (rc == 0 && (*out < 0 || *out > SX_EVENTS_TIME_MAX + 1))
		return sx_diag_set(SX_EINVAL, "argument '%s' must be ms since 1970 (before the year 10000)", key);
	return rc;
}

struct sx_funnel *sx__funnel_new(const msgpack_object *args)
{
	static const char *const known[] = {"steps", "from", "to", "window_ms", "group_by", NULL};
	const msgpack_object *steps;
	const char *gb = NULL;
	size_t gblen = 0;
	int64_t from, to, window = 7 * SX_EV_DAY_MS;
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_array(args, "steps", 1, &steps)) < 0 ||
	    (rc = time_arg(args, "from", &from)) < 0 || (rc = time_arg(args, "to", &to)) < 0 ||
	    (rc = sx_arg_int(args, "window_ms", 0, &window)) < 0 || (rc = sx_arg_str(args, "group_by", 0, &gb, &gblen)) < 0)
		return NULL;
	if (from >= to) {
		sx_diag_set(SX_EINVAL, "argument 'from' must be before 'to'");
		return NULL;
	}
	if (window < 1 || window > 366 * SX_EV_DAY_MS) {
		sx_diag_set(SX_EINVAL, "argument 'window_ms' must be 1 ms to 366 days");
		return NULL;
	}
	int nsteps = (int)steps->via.array.size;
	if (nsteps < 1 || nsteps > SX_FUNNEL_STEPS_MAX) {
		sx_diag_set(SX_EINVAL, "argument 'steps' must hold 1 to %d event names", SX_FUNNEL_STEPS_MAX);
		return NULL;
	}
	for (int i = 0; i < nsteps; i++)
		if ((rc = sx__ev_check_id(&steps->via.array.ptr[i], "steps")) < 0) {
			sx_diag_set(rc, "argument 'steps' element %d: %s", i, sx_diag_last());
			return NULL;
		}
	if (gb && (gblen == 0 || gblen > SX_EVENTS_ID_MAX || memchr(gb, 0, gblen))) {
		sx_diag_set(SX_EINVAL, "argument 'group_by' must be a property name or user.ATTRIBUTE");
		return NULL;
	}
	struct sx_funnel *f = calloc(1, sizeof(*f));
	if (!f) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	f->nsteps = nsteps;
	for (int i = 0; i < nsteps; i++) {
		f->nlen[i] = steps->via.array.ptr[i].via.str.size;
		memcpy(f->name[i], steps->via.array.ptr[i].via.str.ptr, f->nlen[i]);
	}
	f->from = from, f->to = to, f->window = window;
	f->end = to + window > SX_EVENTS_TIME_MAX + 1 ? SX_EVENTS_TIME_MAX + 1 : to + window;
	if (gb) {
		f->grouped = 1;
		memcpy(f->group, gb, gblen);
		if (gblen > 5 && !strncmp(f->group, "user.", 5))
			f->group_user = f->group + 5;
		else
			f->group_prop = f->group;
	}
	f->nparts = 1;
	f->part[0].empty = 1;
	return f;
}

void sx__funnel_free(struct sx_funnel *f)
{
	if (!f)
		return;
	for (int i = 0; i < SX_FUNNEL_PARTS_MAX; i++) {
		struct fpart *p = &f->part[i];
		fgroup_free(&p->all);
		for (size_t g = 0; g < p->ngroups; g++)
			fgroup_free(&p->groups[g]);
		free(p->groups);
		free(p->ev);
		free(p->props);
		free(p->plen);
	}
	if (f->scan)
		roaring_bitmap_free(f->scan);
	sx__tl_release(f->tl);
	free(f);
}

/* ---- candidates ---- */

static int64_t ceil_min(int64_t t)
{
	int64_t f = sx__ev_floor(t, SX_EV_MIN_MS);
	return f == t ? t : f + SX_EV_MIN_MS;
}

static int fail_null(void)
{
	int rc = sx_diag_last_code();
	return rc < 0 ? rc : sx_diag_set(SX_EINTERNAL, "bitmap query failed");
}

/* Users who did step `i` in [from, to), exact at minute edges (from and to aligned). */
static roaring_bitmap_t *did(MDB_txn *txn, const struct sx_funnel *f, int i, int64_t from, int64_t to)
{
	return sx__ev_series_users(txn, f->name[i], f->nlen[i], "", 0, "", 0, from, to);
}

int sx__funnel_block_span(const struct sx_funnel *f, int64_t *from, int64_t *to)
{
	*from = f->from, *to = f->end;
	return !f->group_prop && sx__funnel_blocks;
}

int sx__funnel_plan(struct sx_funnel *f, MDB_txn *txn, int nparts)
{
	int64_t from = sx__ev_floor(f->from, SX_EV_MIN_MS);
	roaring_bitmap_t *b0 = did(txn, f, 0, from, ceil_min(f->to)), *edge = NULL, *b1 = NULL;
	if (!b0)
		return fail_null();
	if (!f->grouped) {
		/* Users with a step-1 event in a whole minute inside [from, to) who
		 * never did step 2 before `end` stop at step 1: counted, not read. */
		if (!(edge = roaring_bitmap_create()))
			goto nomem;
		if (f->from != from) {
			roaring_bitmap_t *e = did(txn, f, 0, from, from + SX_EV_MIN_MS);
			if (!e)
				goto fail;
			roaring_bitmap_or_inplace(edge, e);
			roaring_bitmap_free(e);
		}
		if (f->to != sx__ev_floor(f->to, SX_EV_MIN_MS)) {
			int64_t t = sx__ev_floor(f->to, SX_EV_MIN_MS);
			roaring_bitmap_t *e = did(txn, f, 0, t, t + SX_EV_MIN_MS);
			if (!e)
				goto fail;
			roaring_bitmap_or_inplace(edge, e);
			roaring_bitmap_free(e);
		}
		if (f->nsteps > 1 && !(b1 = did(txn, f, 1, from, ceil_min(f->end))))
			goto fail;
		roaring_bitmap_t *sure = roaring_bitmap_andnot(b0, edge);
		if (!sure)
			goto nomem;
		if (b1)
			roaring_bitmap_andnot_inplace(sure, b1);
		f->pruned = roaring_bitmap_get_cardinality(sure);
		roaring_bitmap_andnot_inplace(b0, sure);
		roaring_bitmap_free(sure);
		roaring_bitmap_free(edge);
		if (b1)
			roaring_bitmap_free(b1);
		edge = b1 = NULL;
	}
	f->scan = b0;
	uint64_t n = roaring_bitmap_get_cardinality(b0);
	if (nparts < 1)
		nparts = 1;
	/* the blocks need no properties: grouping by one reads the events table */
	if (n && !f->group_prop && sx__funnel_blocks) {
		if ((f->tl = sx__tl_acquire(txn, f->from, f->end)) != NULL)
			nparts = 1;
		else
			sx_diag_clear();
	}
	if (nparts > SX_FUNNEL_PARTS_MAX)
		nparts = SX_FUNNEL_PARTS_MAX;
	if ((uint64_t)nparts > n)
		nparts = n ? (int)n : 1;
	f->nparts = nparts;
	for (int i = 0; i < nparts; i++) {
		struct fpart *p = &f->part[i];
		p->empty = n == 0;
		if (p->empty)
			continue;
		uint64_t a = n * (uint64_t)i / (uint64_t)nparts, b = n * (uint64_t)(i + 1) / (uint64_t)nparts - 1;
		roaring_bitmap_select(b0, (uint32_t)a, &p->lo);
		roaring_bitmap_select(b0, (uint32_t)b, &p->hi);
	}
	return nparts;
nomem:
	sx_diag_set(SX_ENOMEM, "out of memory");
fail:;
	int rc = fail_null();
	roaring_bitmap_free(b0);
	if (edge)
		roaring_bitmap_free(edge);
	if (b1)
		roaring_bitmap_free(b1);
	return rc;
}

/* ---- reading events ---- */

/* A MessagePack str or bin header at p (n bytes left): the payload in *s,
 * *len; returns the bytes consumed, 0 if it is nil (*s NULL), -1 if neither. */
static long blob_at(const uint8_t *p, size_t n, int bin, const uint8_t **s, size_t *len)
{
	size_t h, l;
	if (!n)
		return -1;
	if (p[0] == 0xc0) {
		*s = NULL, *len = 0;
		return 1;
	}
	if (!bin && (p[0] & 0xe0) == 0xa0)
		h = 1, l = p[0] & 0x1f;
	else if (n >= 2 && p[0] == (bin ? 0xc4 : 0xd9))
		h = 2, l = p[1];
	else if (n >= 3 && p[0] == (bin ? 0xc5 : 0xda))
		h = 3, l = (size_t)p[1] << 8 | p[2];
	else if (n >= 5 && p[0] == (bin ? 0xc6 : 0xdb))
		h = 5, l = (size_t)sx_get_be32(p + 1);
	else
		return -1;
	if (l > n - h)
		return -1;
	*s = p + h, *len = l;
	return (long)(h + l);
}

static int corrupt(void) { return sx_diag_set(SX_ECORRUPT, "a stored event record does not decode"); }

static int push_ev(struct fpart *p, int64_t t, uint32_t mask, const void *props, size_t plen)
{
	if (p->nev == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 256;
		struct sx_funnel_ev *e = realloc(p->ev, cap * sizeof(*e));
		if (e)
			p->ev = e;
		const void **pp = e ? realloc(p->props, cap * sizeof(*pp)) : NULL;
		if (pp)
			p->props = pp;
		size_t *pl = pp ? realloc(p->plen, cap * sizeof(*pl)) : NULL;
		if (!pl)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		p->plen = pl, p->cap = cap;
	}
	p->ev[p->nev].time = t;
	p->ev[p->nev].mask = mask;
	p->props[p->nev] = props;
	p->plen[p->nev++] = plen;
	return 0;
}

/* Reads user u's events in [from, end) with cursor cur into p->ev. */
static int read_user(struct sx_funnel *f, struct fpart *p, MDB_cursor *cur, uint32_t u)
{
	uint8_t lo[SX_EV_EVKEY];
	MDB_val k, v;
	p->nev = 0;
	sx__ev_event_key(lo, u, f->from, 0);
	k.mv_size = sizeof(lo), k.mv_data = lo;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *kp = k.mv_data, *vp = v.mv_data, *nm, *item, *props;
		size_t nl, il, pl;
		if (k.mv_size != SX_EV_EVKEY)
			return corrupt();
		if (sx_get_be32(kp) != u)
			break;
		int64_t t = (int64_t)sx_get_be64(kp + 4);
		if (t >= f->end)
			break;
		long a, b;
		if (v.mv_size < 2 || vp[0] != 0x93 || (a = blob_at(vp + 1, v.mv_size - 1, 0, &nm, &nl)) <= 0 || !nm)
			return corrupt();
		uint32_t mask = 0;
		for (int i = 0; i < f->nsteps; i++)
			if (f->nlen[i] == nl && !memcmp(f->name[i], nm, nl))
				mask |= 1u << i;
		if (!mask)
			continue;
		props = NULL, pl = 0;
		if ((mask & 1) && f->group_prop) {
			size_t off = 1 + (size_t)a;
			if ((b = blob_at(vp + off, v.mv_size - off, 0, &item, &il)) < 0)
				return corrupt();
			off += (size_t)b;
			if (blob_at(vp + off, v.mv_size - off, 1, &props, &pl) < 0)
				return corrupt();
		}
		if ((rc = push_ev(p, t, mask, props, pl)) < 0)
			return rc;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		return sx_diag_set(SX_EIO, "store scan: %s", mdb_strerror(rc));
	return 0;
}

static int run_user(struct sx_funnel *f, struct fpart *p, MDB_txn *txn, MDB_cursor *cur, uint32_t u)
{
	int64_t t[SX_FUNNEL_STEPS_MAX];
	size_t start = 0;
	int rc = read_user(f, p, cur, u);
	if (rc < 0)
		return rc;
	p->scanned++;
	int depth = sx__funnel_match(p->ev, p->nev, f->nsteps, f->from, f->to, f->window, t, &start);
	if (!depth)
		return 0;
	if ((rc = count(&p->all, depth, t)) < 0 || !f->grouped)
		return rc;
	char buf[GROUP_VALUE_MAX + 1];
	size_t n;
	if (f->group_prop)
		n = prop_string(p->props[start], p->plen[start], f->group_prop, buf);
	else if ((rc = user_attr_string(txn, u, f->group_user, buf, &n)) < 0)
		return rc;
	struct fgroup *g = group_of(p, n == (size_t)-1 ? NULL : buf, n, &rc);
	if (rc < 0)
		return rc;
	return g ? count(g, depth, t) : 0;
}

/* ---- reading the hours' blocks ---- */

#define RANGE_USERS (1u << 16) /* users gathered at a time: their counters stay in cache */

static int tl_user(struct sx_funnel *f, struct fpart *p, MDB_txn *txn, uint32_t u, const struct sx_funnel_ev *ev,
		   size_t n)
{
	int64_t t[SX_FUNNEL_STEPS_MAX];
	size_t start = 0;
	int rc;
	p->scanned++;
	int depth = sx__funnel_match(ev, n, f->nsteps, f->from, f->to, f->window, t, &start);
	if (!depth)
		return 0;
	if ((rc = count(&p->all, depth, t)) < 0 || !f->grouped)
		return rc;
	char buf[GROUP_VALUE_MAX + 1];
	size_t len;
	if ((rc = user_attr_string(txn, u, f->group_user, buf, &len)) < 0)
		return rc;
	struct fgroup *g = group_of(p, len == (size_t)-1 ? NULL : buf, len, &rc);
	if (rc < 0)
		return rc;
	return g ? count(g, depth, t) : 0;
}

/* The scan set's users RANGE_USERS indexes at a time: their events gathered
 * from every hour's block (each sorted by user, so one cursor per block moves
 * forward through the ranges) by a counting sort on the user index; stable,
 * so each user's events stay in time order (hours in order, then (time, seq)
 * inside a block). */
static int run_blocks(struct sx_funnel *f, struct fpart *p, MDB_txn *txn)
{
	uint32_t mask_of[SX_TL_NAMES_MAX + 1] = {0};
	int rc = 0;
	for (int i = 0; i < f->nsteps; i++)
		mask_of[sx__tl_name_id(f->name[i], f->nlen[i])] |= 1u << i;
	mask_of[0] = 0;
	if (roaring_bitmap_is_empty(f->scan))
		return 0;
	uint32_t max = roaring_bitmap_maximum(f->scan);
	size_t nh = sx__tl_nhours(f->tl), cap = 0;
	const uint64_t **blk = calloc(nh ? nh : 1, sizeof(*blk));
	size_t *len = calloc(nh ? nh : 1, sizeof(*len)), *cur = calloc(nh ? nh : 1, sizeof(*cur));
	int64_t *hour = calloc(nh ? nh : 1, sizeof(*hour));
	uint64_t *in = calloc(RANGE_USERS / 64, sizeof(uint64_t));
	uint32_t *off = calloc(RANGE_USERS + 1, sizeof(uint32_t)), *pos = calloc(RANGE_USERS, sizeof(uint32_t));
	struct sx_funnel_ev *ev = NULL;
	roaring_uint32_iterator_t *it = roaring_create_iterator(f->scan);
	if (!blk || !len || !cur || !hour || !in || !off || !pos || !it) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nh; i++)
		blk[i] = sx__tl_block(f->tl, i, &hour[i], &len[i]);
	for (uint64_t lo = it->current_value & ~(uint64_t)(RANGE_USERS - 1); rc == 0 && lo <= max; lo += RANGE_USERS) {
		uint64_t hi = lo + RANGE_USERS;
		memset(in, 0, RANGE_USERS / 8);
		memset(pos, 0, RANGE_USERS * sizeof(uint32_t));
		int any = 0;
		for (; it->has_value && it->current_value < hi; roaring_advance_uint32_iterator(it), any = 1)
			in[(it->current_value - lo) >> 6] |= 1ull << (it->current_value & 63);
		if (!any)
			continue;
		/* pass 1: count; pass 2: place (the cursors move past the range) */
		for (int pass = 0; pass < 2; pass++) {
			for (size_t i = 0; i < nh; i++) {
				const uint64_t *e = blk[i];
				size_t j = cur[i];
				while (j < len[i] && (e[j] >> 32) < lo)
					j++;
				int whole = hour[i] >= f->from && hour[i] + SX_EV_HOUR_MS <= f->end;
				for (; j < len[i] && (e[j] >> 32) < hi; j++) {
					uint32_t u = (uint32_t)(e[j] >> 32) - (uint32_t)lo, m = mask_of[e[j] & 1023];
					if (!m || !(in[u >> 6] >> (u & 63) & 1))
						continue;
					int64_t t = hour[i] + (int64_t)(e[j] >> 10 & ((1u << 22) - 1));
					if (!whole && (t < f->from || t >= f->end))
						continue;
					if (pass == 0) {
						pos[u]++;
					} else {
						ev[pos[u]].time = t;
						ev[pos[u]++].mask = m;
					}
				}
				if (pass == 1)
					cur[i] = j;
			}
			if (pass == 1)
				break;
			uint64_t total = 0;
			for (uint32_t u = 0; u < RANGE_USERS; u++) {
				off[u] = (uint32_t)total;
				total += pos[u];
				pos[u] = off[u];
			}
			off[RANGE_USERS] = (uint32_t)total;
			if (total > cap) {
				free(ev);
				cap = total;
				if (!(ev = malloc(cap * sizeof(*ev)))) {
					rc = sx_diag_set(SX_ENOMEM, "out of memory");
					goto out;
				}
			}
		}
		for (uint32_t w = 0; rc == 0 && w < RANGE_USERS / 64; w++)
			for (uint64_t bits = in[w]; rc == 0 && bits; bits &= bits - 1) {
				uint32_t u = w * 64 + (uint32_t)__builtin_ctzll(bits);
				rc = tl_user(f, p, txn, (uint32_t)lo + u, ev ? ev + off[u] : NULL, off[u + 1] - off[u]);
			}
	}
out:
	if (it)
		roaring_free_uint32_iterator(it);
	free(blk), free(len), free(cur), free(hour), free(in), free(off), free(pos), free(ev);
	return rc;
}

int sx__funnel_run(struct sx_funnel *f, int part, MDB_txn *txn)
{
	struct fpart *p = &f->part[part];
	MDB_cursor *cur = NULL;
	int rc = 0;
	if (p->empty)
		return 0;
	if (f->tl) {
		rc = sx__tl_fill(f->tl, txn);
		if (rc == 0)
			rc = run_blocks(f, p, txn);
		if (rc != SX_ELIMIT) {
			if (rc < 0) {
				p->rc = rc;
				snprintf(p->err, sizeof(p->err), "%s", sx_diag_last());
			}
			return rc;
		}
		rc = 0; /* too many names for blocks: read the events */
	}
	roaring_uint32_iterator_t *it = roaring_create_iterator(f->scan);
	if (!it)
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	else if ((rc = mdb_cursor_open(txn, sx_store_dbi(sx__ev_eng->store, SX_T_EVENTS), &cur)) != 0)
		rc = sx_diag_set(SX_EIO, "store cursor: %s", mdb_strerror(rc));
	if (rc == 0 && roaring_move_uint32_iterator_equalorlarger(it, p->lo))
		for (; rc == 0 && it->has_value && it->current_value <= p->hi; roaring_advance_uint32_iterator(it))
			rc = run_user(f, p, txn, cur, it->current_value);
	if (cur)
		mdb_cursor_close(cur);
	if (it)
		roaring_free_uint32_iterator(it);
	if (rc < 0) {
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s", sx_diag_last());
	}
	return rc;
}

/* ---- result ---- */

static void pack_steps(msgpack_packer *pk, struct sx_funnel *f, struct fgroup *g)
{
	msgpack_pack_array(pk, (size_t)f->nsteps);
	for (int k = 0; k < f->nsteps; k++) {
		msgpack_pack_map(pk, 6);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, f->name[k], f->nlen[k]);
		sx_pack_kv_uint(pk, "users", g->users[k]);
		sx_pack_kv_double(pk, "conversion", g->users[0] ? (double)g->users[k] / (double)g->users[0] : 0.0);
		sx_pack_kv_double(pk, "conversion_from_previous",
				  k == 0 ? (g->users[0] ? 1.0 : 0.0)
					 : g->users[k - 1] ? (double)g->users[k] / (double)g->users[k - 1] : 0.0);
		sx_pack_kv_uint(pk, "drop_off", k == 0 ? 0 : g->users[k - 1] - g->users[k]);
		sx_pack_key(pk, "median_ms");
		if (k == 0 || !g->delta[k].n)
			msgpack_pack_nil(pk);
		else
			msgpack_pack_double(pk, median(&g->delta[k]));
	}
}

static int cmp_fgroup(const void *a, const void *b)
{
	const struct fgroup *x = a, *y = b;
	if (x->users[0] != y->users[0])
		return x->users[0] < y->users[0] ? 1 : -1;
	size_t n = x->vlen < y->vlen ? x->vlen : y->vlen;
	int c = memcmp(x->value, y->value, n);
	return c ? c : (x->vlen > y->vlen) - (x->vlen < y->vlen);
}

static int merge(struct fgroup *d, const struct fgroup *s)
{
	for (int k = 0; k < SX_FUNNEL_STEPS_MAX; k++) {
		d->users[k] += s->users[k];
		int rc = dvec_append(&d->delta[k], &s->delta[k]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int sx__funnel_pack(struct sx_funnel *f, msgpack_packer *pk)
{
	struct fpart *p0 = &f->part[0];
	int rc = 0;
	for (int i = 0; i < f->nparts; i++)
		if (f->part[i].rc < 0)
			return sx_diag_set(f->part[i].rc, "%s", f->part[i].err);
	for (int i = 1; i < f->nparts && rc == 0; i++) {
		struct fpart *p = &f->part[i];
		rc = merge(&p0->all, &p->all);
		for (size_t g = 0; g < p->ngroups && rc == 0; g++) {
			struct fgroup *d = group_of(p0, p->groups[g].value, p->groups[g].vlen, &rc);
			if (d)
				rc = merge(d, &p->groups[g]);
		}
	}
	if (rc < 0)
		return rc;
	p0->all.users[0] += f->pruned;
	msgpack_pack_map(pk, 4 + f->grouped);
	sx_pack_kv_int(pk, "from", f->from);
	sx_pack_kv_int(pk, "to", f->to);
	sx_pack_kv_int(pk, "window_ms", f->window);
	sx_pack_key(pk, "steps");
	pack_steps(pk, f, &p0->all);
	if (f->grouped) {
		if (p0->ngroups)
			qsort(p0->groups, p0->ngroups, sizeof(*p0->groups), cmp_fgroup);
		sx_pack_key(pk, "groups");
		msgpack_pack_array(pk, p0->ngroups);
		for (size_t i = 0; i < p0->ngroups; i++) {
			msgpack_pack_map(pk, 2);
			sx_pack_key(pk, "value");
			if (p0->groups[i].vlen)
				sx_pack_strn(pk, p0->groups[i].value, p0->groups[i].vlen);
			else
				msgpack_pack_nil(pk);
			sx_pack_key(pk, "steps");
			pack_steps(pk, f, &p0->groups[i]);
		}
	}
	return 0;
}

void sx__funnel_fail(struct sx_funnel *f, int part, int rc, const char *msg)
{
	f->part[part].rc = rc < 0 ? rc : SX_EINTERNAL;
	snprintf(f->part[part].err, sizeof(f->part[part].err), "%s", msg);
}

void sx__funnel_stats(const struct sx_funnel *f, uint64_t *scanned, uint64_t *pruned)
{
	*scanned = 0;
	for (int i = 0; i < f->nparts; i++)
		*scanned += f->part[i].scanned;
	*pruned = f->pruned;
}
