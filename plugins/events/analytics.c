/* Funnels (the engine is in funnel.c), retention and saved cohorts, over the
 * per-period user bitmaps and the per-user event scans. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/cohort_lua.h"
#include "plugins/events/funnel.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "store/store.h"

#define GROUP_VALUE_MAX 64
#define RETENTION_COHORTS_MAX 120
#define RETENTION_PERIODS_MAX 120
#define RULE_DEPTH_MAX 4

static int fail_null(void)
{
	int rc = sx_diag_last_code();
	return rc < 0 ? rc : sx_diag_set(SX_EINTERNAL, "bitmap query failed");
}

static int time_arg(const msgpack_object *args, const char *key, int required, int64_t *out)
{
	int rc = sx_arg_int(args, key, required, out);
	if (rc == 0 && (*out < 0 || *out > SX_EVENTS_TIME_MAX + 1))
		return sx_diag_set(SX_EINVAL, "argument '%s' must be ms since 1970 (before the year 10000)", key);
	return rc;
}

/* ---- funnel.query ---- */

/* The RPC method reads on the pool (one part per thread when the events
 * table is read, one part when the hour blocks serve it), so that a funnel
 * over millions of events never holds the loop; sx_events_funnel_query reads
 * on the loop thread in one part, and the panels' cache (below) plans on the
 * loop and reads on the pool like the method. All read committed data only. */
#define FUNNEL_PARTS 2

struct fwork {
	uv_work_t w;
	struct fquery *q;
	int part;
};

#define FCACHE_MAX 64
#define FCACHE_FRESH_MS 1000
#define FCACHE_DEPTH_MAX 32

struct fcache {
	uint8_t *key, *res; /* canonical arguments, packed result (NULL: free slot) */
	size_t klen, rlen;
	int64_t at;   /* wall ms when the computation's snapshot was taken */
	uint64_t seq; /* durable batch the snapshot holds at least */
	uint64_t used;
	struct fquery *q; /* revalidation in flight */
};

struct fquery {
	struct sx_funnel *f;
	struct sx_req *req;    /* funnel.query's, or NULL for a panel's revalidation */
	struct fcache *cache;  /* that revalidation's entry, NULL once dropped */
	int64_t at;
	uint64_t seq;
	int pending;
	struct fwork work[FUNNEL_PARTS];
	struct fquery *next;
};

static struct fquery *fqueries; /* in flight, for stop() */

static struct sx_events_funnel_cache_stats fcache_stats;
/* Store batch of the last erasure or expiry: answers read before it are
 * never served (their snapshot may hold the deleted events). */
static uint64_t fcache_floor;
static int fcache_store(struct fcache *c, struct sx_funnel *f, int64_t at, uint64_t seq);

static void funnel_work(uv_work_t *w)
{
	struct fwork *fw = w->data;
	MDB_txn *txn;
	if (sx_store_rtxn_begin(sx__ev_eng->store, &txn) < 0) {
		sx__funnel_fail(fw->q->f, fw->part, sx_diag_last_code(), sx_diag_last());
		return;
	}
	sx__funnel_run(fw->q->f, fw->part, txn);
	sx_store_rtxn_end(sx__ev_eng->store, txn);
}

static void funnel_after(uv_work_t *w, int status)
{
	struct fwork *fw = w->data;
	struct fquery *q = fw->q;
	if (status < 0)
		sx__funnel_fail(q->f, fw->part, SX_ECANCELED, "funnel query cancelled");
	if (--q->pending > 0)
		return;
	for (struct fquery **pp = &fqueries; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (q->req)
		sx_req_finish(q->req, sx__funnel_pack(q->f, &q->req->pk));
	else if (q->cache) {
		q->cache->q = NULL;
		if (q->seq < fcache_floor || fcache_store(q->cache, q->f, q->at, q->seq) < 0)
			fcache_stats.failed++;
	}
	sx__funnel_free(q->f);
	free(q);
}

static int funnel_plan(struct sx_funnel *f, int parts)
{
	MDB_txn *txn;
	int rc = sx_store_rtxn_begin(sx__ev_eng->store, &txn);
	if (rc < 0)
		return rc;
	rc = sx__funnel_plan(f, txn, parts);
	sx_store_rtxn_end(sx__ev_eng->store, txn);
	return rc;
}

/* Plans q and queues its parts; finishes the request itself when it cannot
 * (deferred) or returns the error (not yet deferred). */
static int funnel_start(struct fquery *q, msgpack_packer *pk, int deferred)
{
	struct sx_funnel *f = q->f;
	int rc = funnel_plan(f, FUNNEL_PARTS);
	for (int i = 0; i < rc; i++) {
		q->work[i].q = q, q->work[i].part = i;
		q->work[i].w.data = &q->work[i];
		if (uv_queue_work(sx__ev_eng->loop, &q->work[i].w, funnel_work, funnel_after) == 0)
			q->pending++;
		else
			sx__funnel_fail(f, i, SX_EINTERNAL, "cannot queue the funnel's work");
	}
	if (!q->pending) {
		if (rc >= 0 && (rc = sx__funnel_pack(f, deferred ? &q->req->pk : pk)) == 0)
			rc = sx_diag_set(SX_EINTERNAL, "cannot queue the funnel's work");
		if (deferred)
			sx_req_finish(q->req, rc);
		sx__funnel_free(f);
		free(q);
		return rc;
	}
	q->next = fqueries;
	fqueries = q;
	return SX_RPC_DEFER;
}

/* funnel.query requests that arrived while a warm-up build ran: planned once
 * it is done, so that they read its blocks rather than build them again. */
static struct fquery *fwaiting;

static void funnel_warm_idle(void)
{
	struct fquery *q = fwaiting;
	fwaiting = NULL;
	while (q) {
		struct fquery *next = q->next;
		q->next = NULL;
		funnel_start(q, NULL, 1);
		q = next;
	}
}

static int m_funnel(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(ud);
	struct sx_funnel *f = sx__funnel_new(args);
	if (!f)
		return fail_null();
	struct fquery *q = calloc(1, sizeof(*q));
	if (!q) {
		sx__funnel_free(f);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	q->f = f, q->req = req;
	/* a query over hours being warmed waits for them rather than build them twice */
	int64_t from, to;
	if (sx__funnel_block_span(f, &from, &to) && sx__tl_warm_covers(from, to)) {
		q->next = fwaiting;
		fwaiting = q;
		return SX_RPC_DEFER;
	}
	return funnel_start(q, pk, 0);
}

int sx_events_funnel_query(const msgpack_object *args, msgpack_packer *pk)
{
	struct sx_funnel *f = sx__funnel_new(args);
	MDB_txn *txn;
	if (!f)
		return fail_null();
	int rc = sx_store_rtxn_begin(sx__ev_eng->store, &txn);
	if (rc == 0) {
		if ((rc = sx__funnel_plan(f, txn, 1)) >= 0)
			rc = sx__funnel_run(f, 0, txn);
		sx_store_rtxn_end(sx__ev_eng->store, txn);
	}
	if (rc >= 0)
		rc = sx__funnel_pack(f, pk);
	sx__funnel_free(f);
	return rc;
}

/* ---- funnel panels: stale-while-revalidate ----
 * Dashboards refresh every second or so, and a funnel's cost grows with the
 * events of its range; computing it on the loop at each refresh holds every
 * other request. So a panel's funnel is answered from the last result for the
 * same arguments and recomputed on the pool behind it (planned on the loop as
 * funnel.query is). A result is exact as of store batch `seq`; it is
 * revalidated once FCACHE_FRESH_MS old and only if a batch committed since. */
static struct fcache fcache[FCACHE_MAX];
static uint64_t fcache_tick;

static int canon_pack(msgpack_packer *pk, const msgpack_object *o, int depth);

static int key_cmp(const void *a, const void *b)
{
	const msgpack_object_str *x = &((const msgpack_object_kv *)a)->key.via.str;
	const msgpack_object_str *y = &((const msgpack_object_kv *)b)->key.via.str;
	int c = memcmp(x->ptr, y->ptr, x->size < y->size ? x->size : y->size);
	return c ? c : (x->size > y->size) - (x->size < y->size);
}

/* Packs o with the keys of maps whose keys are all strings sorted, so that a
 * Lua table gives the same bytes whatever its iteration order. */
static int canon_pack(msgpack_packer *pk, const msgpack_object *o, int depth)
{
	if (depth > FCACHE_DEPTH_MAX)
		return sx_diag_set(SX_EINVAL, "funnel arguments nest too deep");
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		msgpack_pack_array(pk, o->via.array.size);
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if (canon_pack(pk, &o->via.array.ptr[i], depth + 1) < 0)
				return SX_EINVAL;
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_MAP) {
		msgpack_pack_object(pk, *o);
		return 0;
	}
	uint32_t n = o->via.map.size;
	msgpack_object_kv *kv = n ? malloc(n * sizeof(*kv)) : NULL;
	if (n && !kv)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int strs = 1;
	for (uint32_t i = 0; i < n; i++) {
		kv[i] = o->via.map.ptr[i];
		strs &= kv[i].key.type == MSGPACK_OBJECT_STR;
	}
	if (strs && n > 1)
		qsort(kv, n, sizeof(*kv), key_cmp);
	msgpack_pack_map(pk, n);
	int rc = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		msgpack_pack_object(pk, kv[i].key);
		rc = canon_pack(pk, &kv[i].val, depth + 1);
	}
	free(kv);
	return rc;
}

static void fcache_drop(struct fcache *c)
{
	if (c->q)
		c->q->cache = NULL; /* its result is discarded when it lands */
	free(c->key);
	free(c->res);
	memset(c, 0, sizeof(*c));
}

static void fcache_free_all(void)
{
	for (size_t i = 0; i < FCACHE_MAX; i++)
		fcache_drop(&fcache[i]);
}

void sx__ev_funnel_cache_clear(void)
{
	fcache_free_all();
	fcache_floor = sx_store_filling_seq(sx__ev_eng->store);
}

void sx_events_funnel_cache_stats(struct sx_events_funnel_cache_stats *out)
{
	*out = fcache_stats;
	out->entries = 0;
	for (size_t i = 0; i < FCACHE_MAX; i++)
		out->entries += fcache[i].key != NULL;
}

/* Packs the cached map with computed_at added in front. */
static int fcache_pack(const struct fcache *c, msgpack_packer *pk)
{
	const uint8_t *r = c->res;
	uint32_t n;
	size_t h;
	if (c->rlen >= 1 && (r[0] & 0xf0) == 0x80)
		n = r[0] & 0x0f, h = 1;
	else if (c->rlen >= 3 && r[0] == 0xde)
		n = (uint32_t)r[1] << 8 | r[2], h = 3;
	else if (c->rlen >= 5 && r[0] == 0xdf)
		n = sx_get_be32(r + 1), h = 5;
	else
		return sx_diag_set(SX_EINTERNAL, "cached funnel result is not a map");
	msgpack_pack_map(pk, n + 1);
	sx_pack_key(pk, "computed_at");
	msgpack_pack_int64(pk, c->at);
	return pk->callback(pk->data, (const char *)r + h, c->rlen - h) < 0 ? sx_diag_set(SX_ENOMEM, "out of memory")
									     : 0;
}

/* Replaces c's result with f's; on failure (a part failed or was
 * cancelled) c keeps the one it had. */
static int fcache_store(struct fcache *c, struct sx_funnel *f, int64_t at, uint64_t seq)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	int rc = sx__funnel_pack(f, &pk);
	if (rc == 0 && !sb.data)
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc < 0) {
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	free(c->res);
	c->res = (uint8_t *)sb.data, c->rlen = sb.size;
	c->at = at, c->seq = seq;
	return 0;
}

/* Starts the pool recomputation of c (loop thread). */
static void fcache_revalidate(struct fcache *c, const msgpack_object *args)
{
	struct sx_funnel *f = sx__funnel_new(args);
	struct fquery *q = f ? calloc(1, sizeof(*q)) : NULL;
	if (q)
		q->at = sx_wall_ms(), q->seq = sx_store_durable_seq(sx__ev_eng->store);
	int rc = q ? funnel_plan(f, FUNNEL_PARTS) : -1;
	if (rc < 0) {
		fcache_stats.failed++;
		free(q);
		sx__funnel_free(f);
		return;
	}
	q->f = f, q->cache = c;
	for (int i = 0; i < rc; i++) {
		q->work[i].q = q, q->work[i].part = i;
		q->work[i].w.data = &q->work[i];
		if (uv_queue_work(sx__ev_eng->loop, &q->work[i].w, funnel_work, funnel_after) == 0)
			q->pending++;
		else
			sx__funnel_fail(f, i, SX_EINTERNAL, "cannot queue the funnel's work");
	}
	if (!q->pending) {
		fcache_stats.failed++;
		sx__funnel_free(f);
		free(q);
		return;
	}
	c->q = q;
	fcache_stats.revalidations++;
	q->next = fqueries;
	fqueries = q;
}

int sx_events_funnel_query_cached(const msgpack_object *args, msgpack_packer *pk)
{
	msgpack_sbuffer kb;
	msgpack_packer kp;
	msgpack_sbuffer_init(&kb);
	msgpack_packer_init(&kp, &kb, msgpack_sbuffer_write);
	if (args ? canon_pack(&kp, args, 0) < 0 : (msgpack_pack_nil(&kp), 0)) {
		msgpack_sbuffer_destroy(&kb);
		return sx_events_funnel_query(args, pk);
	}
	struct fcache *c = NULL, *victim = &fcache[0];
	for (size_t i = 0; i < FCACHE_MAX; i++) {
		struct fcache *e = &fcache[i];
		if (e->key && e->klen == kb.size && memcmp(e->key, kb.data, kb.size) == 0) {
			c = e;
			break;
		}
		if (!e->key ? victim->key != NULL : victim->key && e->used < victim->used)
			victim = e;
	}
	if (c && c->seq < fcache_floor) {
		fcache_drop(c);
		victim = c, c = NULL;
	}
	if (c) {
		msgpack_sbuffer_destroy(&kb);
		c->used = ++fcache_tick;
		fcache_stats.hits++;
		if (!c->q && sx_wall_ms() - c->at >= FCACHE_FRESH_MS &&
		    sx_store_durable_seq(sx__ev_eng->store) != c->seq)
			fcache_revalidate(c, args);
		return fcache_pack(c, pk);
	}
	/* First render of these arguments: computed here so that it is right. */
	int64_t at = sx_wall_ms();
	uint64_t seq = sx_store_durable_seq(sx__ev_eng->store);
	struct sx_funnel *f = sx__funnel_new(args);
	MDB_txn *txn;
	int rc = f ? sx_store_rtxn_begin(sx__ev_eng->store, &txn) : fail_null();
	if (rc == 0) {
		if ((rc = sx__funnel_plan(f, txn, 1)) >= 0)
			rc = sx__funnel_run(f, 0, txn);
		sx_store_rtxn_end(sx__ev_eng->store, txn);
	}
	fcache_stats.sync++;
	if (rc >= 0 && seq < fcache_floor) {
		/* The last erasure is not durable yet: answered, not kept. */
		struct fcache tmp = {0};
		if ((rc = fcache_store(&tmp, f, at, seq)) == 0)
			rc = fcache_pack(&tmp, pk);
		free(tmp.res);
	} else if (rc >= 0) {
		fcache_drop(victim);
		victim->key = (uint8_t *)kb.data, victim->klen = kb.size;
		kb.data = NULL;
		victim->used = ++fcache_tick;
		if ((rc = fcache_store(victim, f, at, seq)) == 0)
			rc = fcache_pack(victim, pk);
		else
			fcache_drop(victim);
	}
	sx__funnel_free(f);
	msgpack_sbuffer_destroy(&kb);
	return rc;
}

/* ---- cohort.retention ---- */

struct pcache {
	int64_t start;
	roaring_bitmap_t *b;
};

static roaring_bitmap_t *period_users(struct pcache *pc, size_t *npc, size_t cap, const char *event,
				      int64_t start, int64_t end)
{
	for (size_t i = 0; i < *npc; i++)
		if (pc[i].start == start)
			return pc[i].b;
	if (*npc == cap) {
		sx_diag_set(SX_EINTERNAL, "retention period cache full");
		return NULL;
	}
	roaring_bitmap_t *b = sx_events_users_did(NULL, event, start, end);
	if (b) {
		pc[*npc].start = start;
		pc[(*npc)++].b = b;
	}
	return b;
}

static int m_retention(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"cohort_by", "period", "periods", "returning_event", "from", "to",
					    "cohort", NULL};
	const char *cb = "week", *pd = NULL, *cname = NULL;
	size_t cblen = 4, pdlen = 0, cnlen = 0;
	char ev[SX_EVENTS_ID_MAX + 1] = "*";
	int64_t periods = 8, from = -1, to = -1, now = sx_wall_ms();
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "cohort_by", 0, &cb, &cblen)) < 0 ||
	    (rc = sx_arg_str(args, "period", 0, &pd, &pdlen)) < 0 || (rc = sx_arg_int(args, "periods", 0, &periods)) < 0 ||
	    (rc = time_arg(args, "from", 0, &from)) < 0 || (rc = time_arg(args, "to", 0, &to)) < 0 ||
	    (rc = sx_arg_str(args, "cohort", 0, &cname, &cnlen)) < 0)
		return rc;
	const msgpack_object *re = sx_arg(args, "returning_event");
	if (re) {
		if ((rc = sx__ev_check_id(re, "returning_event")) < 0)
			return sx_diag_set(rc, "argument %s", sx_diag_last());
		memcpy(ev, re->via.str.ptr, re->via.str.size);
		ev[re->via.str.size] = 0;
	}
	int cby = sx__ev_period_parse(cb, cblen), per = pd ? sx__ev_period_parse(pd, pdlen) : cby;
	if (cby < 0 || per < 0)
		return sx_diag_set(SX_EINVAL, "arguments 'cohort_by' and 'period' must be day, week or month");
	if (periods < 1 || periods > RETENTION_PERIODS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'periods' must be 1 to %d", RETENTION_PERIODS_MAX);
	if (to < 0)
		to = now < SX_EVENTS_TIME_MAX ? now + 1 : SX_EVENTS_TIME_MAX;
	if (from < 0)
		from = sx__ev_period_add(cby, sx__ev_period_start(cby, to - 1), -(int)(periods - 1));
	if (from < 0)
		from = 0;
	if (from >= to)
		return sx_diag_set(SX_EINVAL, "argument 'from' must be before 'to'");
	int64_t c0 = sx__ev_period_start(cby, from);
	int ncoh = 0;
	for (int64_t c = c0; c < to; c = sx__ev_period_add(cby, c, 1))
		if (++ncoh > RETENTION_COHORTS_MAX)
			return sx_diag_set(SX_EINVAL, "the range holds more than %d cohorts", RETENTION_COHORTS_MAX);
	roaring_bitmap_t *filter = NULL;
	if (cname && !(filter = sx_events_cohort_users(NULL, cname, cnlen)))
		return fail_null();
	size_t cap = (size_t)ncoh * (size_t)periods + 1, npc = 0;
	struct pcache *pc = calloc(cap, sizeof(*pc));
	if (!pc) {
		if (filter)
			roaring_bitmap_free(filter);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	msgpack_pack_map(pk, 6);
	sx_pack_kv_str(pk, "cohort_by", cb);
	sx_pack_kv_str(pk, "period", per == SX_EV_PDAY ? "day" : per == SX_EV_PWEEK ? "week" : "month");
	sx_pack_kv_int(pk, "periods", periods);
	sx_pack_kv_str(pk, "returning_event", ev);
	sx_pack_key(pk, "cohort");
	if (cname)
		sx_pack_strn(pk, cname, cnlen);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "cohorts");
	msgpack_pack_array(pk, (size_t)ncoh);
	for (int64_t c = c0; rc == 0 && c < to; c = sx__ev_period_add(cby, c, 1)) {
		int64_t cend = sx__ev_period_add(cby, c, 1);
		roaring_bitmap_t *members = sx_events_users_first_seen(NULL, c, cend);
		if (!members) {
			rc = fail_null();
			break;
		}
		if (filter)
			roaring_bitmap_and_inplace(members, filter);
		uint64_t size = roaring_bitmap_get_cardinality(members);
		msgpack_pack_map(pk, 4);
		sx_pack_kv_int(pk, "start", c);
		sx_pack_kv_uint(pk, "size", size);
		int64_t p0 = sx__ev_period_start(per, c);
		uint64_t ret[RETENTION_PERIODS_MAX];
		int known_n = 0;
		for (int k = 0; k < periods; k++) {
			int64_t ps = sx__ev_period_add(per, p0, k);
			if (ps > now)
				break;
			roaring_bitmap_t *act = period_users(pc, &npc, cap, ev, ps, sx__ev_period_add(per, ps, 1));
			if (!act) {
				rc = fail_null();
				break;
			}
			ret[known_n++] = roaring_bitmap_and_cardinality(members, act);
		}
		roaring_bitmap_free(members);
		sx_pack_key(pk, "returning");
		msgpack_pack_array(pk, (size_t)periods);
		for (int k = 0; k < periods; k++)
			if (k < known_n)
				msgpack_pack_uint64(pk, ret[k]);
			else
				msgpack_pack_nil(pk);
		sx_pack_key(pk, "rates");
		msgpack_pack_array(pk, (size_t)periods);
		for (int k = 0; k < periods; k++)
			if (k < known_n)
				msgpack_pack_double(pk, size ? (double)ret[k] / (double)size : 0.0);
			else
				msgpack_pack_nil(pk);
	}
	for (size_t i = 0; i < npc; i++)
		roaring_bitmap_free(pc[i].b);
	free(pc);
	if (filter)
		roaring_bitmap_free(filter);
	return rc;
}

/* ---- saved cohorts ---- */

struct did {
	const char *name;
	size_t nlen;
	int64_t min;
	int64_t n;
};

static int did_cb(const struct sx_event *ev, void *ud)
{
	struct did *d = ud;
	if (ev->name_len == d->nlen && !memcmp(ev->name, d->name, d->nlen) && ++d->n >= d->min)
		return 1;
	return 0;
}

struct attr_scan {
	roaring_bitmap_t *out;
	const char *name;
	char value[GROUP_VALUE_MAX + 1];
	size_t vlen;
};

static int attr_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct attr_scan *a = ud;
	msgpack_zone z;
	msgpack_object o;
	char buf[GROUP_VALUE_MAX + 1];
	SX_UNUSED(key);
	msgpack_zone_init(&z, 1024);
	int rc = sx__ev_unpack(val->data, val->len, &z, &o);
	if (rc == 0) {
		const msgpack_object *v = sx__ev_map_get(sx__ev_map_get(&o, "attributes"), a->name);
		const msgpack_object *ix = sx__ev_map_get(&o, "index");
		int hit = 0;
		if (v && v->type == MSGPACK_OBJECT_ARRAY) {
			for (uint32_t i = 0; i < v->via.array.size && !hit; i++)
				hit = sx__ev_value_string(&v->via.array.ptr[i], buf) == a->vlen && !memcmp(buf, a->value, a->vlen);
		} else {
			hit = sx__ev_value_string(v, buf) == a->vlen && !memcmp(buf, a->value, a->vlen);
		}
		if (hit && ix && ix->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ix->via.u64 <= UINT32_MAX)
			roaring_bitmap_add(a->out, (uint32_t)ix->via.u64);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int rule_err(const char *what) { return sx_diag_set(SX_EINVAL, "cohort rule: %s", what); }

/* Evaluates a rule into a new bitmap (*out), or only checks it when out is NULL. */
static int rule_eval(const msgpack_object *r, int depth, int64_t now, roaring_bitmap_t **out)
{
	if (depth > RULE_DEPTH_MAX)
		return rule_err("nested deeper than 4");
	if (!r || r->type != MSGPACK_OBJECT_MAP || r->via.map.size != 1 || r->via.map.ptr[0].key.type != MSGPACK_OBJECT_STR)
		return rule_err("a rule is a map with one key: first_seen, attribute, did, all or any");
	const msgpack_object *k = &r->via.map.ptr[0].key, *v = &r->via.map.ptr[0].val;
	int rc;
	if (sx_obj_streq(k, "lua"))
		return rule_err("a lua rule must be the whole rule (use its 'candidates' to combine)");
	if (sx_obj_streq(k, "all") || sx_obj_streq(k, "any")) {
		int all = sx_obj_streq(k, "all");
		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size < 1 || v->via.array.size > 16)
			return rule_err("all/any take an array of 1 to 16 rules");
		roaring_bitmap_t *acc = NULL;
		for (uint32_t i = 0; i < v->via.array.size; i++) {
			roaring_bitmap_t *b = NULL;
			if ((rc = rule_eval(&v->via.array.ptr[i], depth + 1, now, out ? &b : NULL)) < 0) {
				if (acc)
					roaring_bitmap_free(acc);
				return rc;
			}
			if (!out)
				continue;
			if (!acc)
				acc = b;
			else {
				if (all)
					roaring_bitmap_and_inplace(acc, b);
				else
					roaring_bitmap_or_inplace(acc, b);
				roaring_bitmap_free(b);
			}
		}
		if (out)
			*out = acc;
		return 0;
	}
	if (v->type != MSGPACK_OBJECT_MAP)
		return rule_err("the rule's value must be a map");
	if (sx_obj_streq(k, "first_seen")) {
		static const char *const kn[] = {"from", "to", NULL};
		int64_t from, to;
		if ((rc = sx_arg_only(v, kn)) < 0 || (rc = time_arg(v, "from", 1, &from)) < 0 ||
		    (rc = time_arg(v, "to", 1, &to)) < 0)
			return sx_diag_set(rc, "cohort rule first_seen: %s", sx_diag_last());
		if (from >= to)
			return rule_err("first_seen needs from < to");
		if (out && !(*out = sx_events_users_first_seen(NULL, from, to)))
			return fail_null();
		return 0;
	}
	if (sx_obj_streq(k, "attribute")) {
		static const char *const kn[] = {"name", "value", NULL};
		struct attr_scan a;
		char name[SX_EVENTS_ID_MAX + 1];
		const msgpack_object *val = sx_arg(v, "value");
		if ((rc = sx_arg_only(v, kn)) < 0 || (rc = sx_arg_cstr(v, "name", 1, name, sizeof(name))) < 0)
			return sx_diag_set(rc, "cohort rule attribute: %s", sx_diag_last());
		if (!val || val->type == MSGPACK_OBJECT_ARRAY || val->type == MSGPACK_OBJECT_MAP ||
		    (a.vlen = sx__ev_value_string(val, a.value)) == (size_t)-1)
			return rule_err("attribute needs a value: a string, number or boolean");
		if (!out)
			return 0;
		a.name = name;
		if (!(a.out = roaring_bitmap_create()))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		if ((rc = sx__ev_scan(NULL, SX_T_USERS, NULL, 0, NULL, 0, 0, attr_cb, &a)) < 0) {
			roaring_bitmap_free(a.out);
			return rc;
		}
		*out = a.out;
		return 0;
	}
	if (sx_obj_streq(k, "did")) {
		static const char *const kn[] = {"event", "min_count", "days", NULL};
		char ev[SX_EVENTS_ID_MAX + 1];
		int64_t min = 1, days = 30;
		if ((rc = sx_arg_only(v, kn)) < 0 || (rc = sx_arg_cstr(v, "event", 1, ev, sizeof(ev))) < 0 ||
		    (rc = sx_arg_int(v, "min_count", 0, &min)) < 0 || (rc = sx_arg_int(v, "days", 0, &days)) < 0)
			return sx_diag_set(rc, "cohort rule did: %s", sx_diag_last());
		if (!ev[0] || min < 1 || min > 1000000 || days < 1 || days > 3660)
			return rule_err("did needs an event, min_count 1..1000000 and days 1..3660");
		if (!out)
			return 0;
		int64_t from = now - days * SX_EV_DAY_MS;
		roaring_bitmap_t *cand = sx_events_users_did(NULL, ev, from, now + SX_EV_MIN_MS);
		if (!cand)
			return fail_null();
		if (min > 1) {
			roaring_bitmap_t *res = roaring_bitmap_create();
			roaring_uint32_iterator_t *it = roaring_create_iterator(cand);
			for (rc = 0; rc == 0 && it->has_value; roaring_advance_uint32_iterator(it)) {
				struct did d = {ev, strlen(ev), min, 0};
				rc = sx_events_user_scan(NULL, it->current_value, from, now + 1, 0, did_cb, &d);
				if (rc == 0 && d.n >= min)
					roaring_bitmap_add(res, it->current_value);
			}
			roaring_free_uint32_iterator(it);
			roaring_bitmap_free(cand);
			if (rc < 0) {
				roaring_bitmap_free(res);
				return rc;
			}
			cand = res;
		}
		*out = cand;
		return 0;
	}
	return rule_err("unknown rule (first_seen, attribute, did, all or any)");
}

static int name_arg(const msgpack_object *args, const char **s, size_t *len)
{
	const msgpack_object *o = sx_arg(args, "name");
	int rc = sx__ev_check_id(o, "name");
	*s = NULL, *len = 0;
	if (rc < 0)
		return sx_diag_set(rc, "argument %s", sx_diag_last());
	*s = o->via.str.ptr, *len = o->via.str.size;
	return 0;
}

int sx__ev_rule_eval(const msgpack_object *rule, int64_t now, roaring_bitmap_t **out)
{
	return rule_eval(rule, 0, now, out);
}

int sx__ev_cohort_write(const char *name, size_t nlen, const msgpack_object *rule, const msgpack_object *desc,
			int64_t created, int64_t now, roaring_bitmap_t *b, msgpack_packer *pk)
{
	uint64_t size = roaring_bitmap_get_cardinality(b);
	msgpack_sbuffer sb;
	msgpack_packer spk;
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	msgpack_sbuffer_init(&sb);
	roaring_bitmap_run_optimize(b);
	int rc = sx__ev_bitmap_encode(b, &sb);
	k[0] = 'b';
	memcpy(k + 1, name, nlen);
	if (rc == 0)
		rc = sx_store_put(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1, sb.data, sb.size);
	msgpack_sbuffer_clear(&sb);
	msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&spk, 6);
	sx_pack_key(&spk, "name");
	sx_pack_strn(&spk, name, nlen);
	sx_pack_key(&spk, "rule");
	sx_pack_object(&spk, rule);
	sx_pack_key(&spk, "description");
	if (desc)
		sx_pack_object(&spk, desc);
	else
		msgpack_pack_nil(&spk);
	sx_pack_kv_uint(&spk, "size", size);
	sx_pack_kv_int(&spk, "refreshed", now);
	sx_pack_kv_int(&spk, "created", created ? created : now);
	k[0] = 'd';
	if (rc == 0)
		rc = sx_store_put(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "name");
	sx_pack_strn(pk, name, nlen);
	sx_pack_kv_uint(pk, "size", size);
	sx_pack_kv_int(pk, "refreshed", now);
	return 0;
}

/* Computes and stores cohort `name` with rule `rule` (an object), keeping
 * `created` and `description`; a predicate rule is computed in slices and
 * answers req later (SX_RPC_DEFER). Packs {name, size, refreshed}. */
static int cohort_store(struct sx_req *req, const char *name, size_t nlen, const msgpack_object *rule,
			const msgpack_object *desc, int64_t created, msgpack_packer *pk)
{
	if (sx__ev_cohort_lua_running(name, nlen))
		return sx_diag_set(SX_ESTATE, "cohort '%.*s' is being computed", (int)nlen, name);
	if (sx__ev_cohort_is_lua(rule)) {
		if (!req)
			return sx_diag_set(SX_ESTATE, "a predicate cohort is computed by cohort.save or cohort.refresh");
		return sx__ev_cohort_lua_begin(req, name, nlen, rule, desc, created);
	}
	int64_t now = sx_wall_ms();
	roaring_bitmap_t *b = NULL;
	int rc = rule_eval(rule, 0, now, &b);
	if (rc < 0)
		return rc;
	rc = sx__ev_cohort_write(name, nlen, rule, desc, created, now, b, pk);
	roaring_bitmap_free(b);
	return rc;
}

static int m_cohort_save(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "rule", "description", NULL};
	const char *name, *desc;
	size_t nlen, dlen;
	const msgpack_object *rule;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, &name, &nlen)) < 0 ||
	    (rc = sx_arg_map(args, "rule", 1, &rule)) < 0 || (rc = sx_arg_str(args, "description", 0, &desc, &dlen)) < 0)
		return rc;
	if (sx_arg(args, "description") && (dlen > 1024 || !sx_utf8_valid(desc, dlen)))
		return sx_diag_set(SX_EINVAL, "argument 'description' must be UTF-8 of at most 1024 bytes");
	if ((rc = sx__ev_cohort_is_lua(rule) ? sx__ev_cohort_lua_check(rule) : rule_eval(rule, 0, 0, NULL)) < 0)
		return rc;
	return cohort_store(req, name, nlen, rule, sx_arg(args, "description"), 0, pk);
}

/* Loads a cohort's definition into zone. */
static int cohort_def(const char *name, size_t nlen, msgpack_zone *z, msgpack_object *o)
{
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	k[0] = 'd';
	memcpy(k + 1, name, nlen);
	int rc = sx_store_get(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no cohort '%.*s'", (int)nlen, name);
	if (rc < 0)
		return rc;
	void *copy = msgpack_zone_malloc(z, v.len);
	if (!copy)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	memcpy(copy, v.data, v.len);
	return sx__ev_unpack(copy, v.len, z, o);
}

static int m_cohort_refresh(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	const char *name;
	size_t nlen;
	msgpack_zone z;
	msgpack_object o;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, &name, &nlen)) < 0)
		return rc;
	if (sx__ev_cohort_lua_running(name, nlen))
		return sx_diag_set(SX_ESTATE, "cohort '%.*s' is being computed", (int)nlen, name);
	msgpack_zone_init(&z, 1024);
	if ((rc = cohort_def(name, nlen, &z, &o)) == 0) {
		const msgpack_object *rule = sx__ev_map_get(&o, "rule"), *desc = sx__ev_map_get(&o, "description"),
				     *cr = sx__ev_map_get(&o, "created");
		if (desc && desc->type == MSGPACK_OBJECT_NIL)
			desc = NULL;
		rc = cohort_store(req, name, nlen, rule, desc,
				  cr && cr->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)cr->via.u64 : 0, pk);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int m_cohort_size(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	const char *name;
	size_t nlen;
	msgpack_zone z;
	msgpack_object o;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, &name, &nlen)) < 0)
		return rc;
	msgpack_zone_init(&z, 1024);
	if ((rc = cohort_def(name, nlen, &z, &o)) == 0) {
		const msgpack_object *size = sx__ev_map_get(&o, "size"), *ref = sx__ev_map_get(&o, "refreshed");
		msgpack_pack_map(pk, 3);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, name, nlen);
		sx_pack_key(pk, "size");
		size ? sx_pack_object(pk, size) : msgpack_pack_nil(pk);
		sx_pack_key(pk, "refreshed");
		ref ? sx_pack_object(pk, ref) : msgpack_pack_nil(pk);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

struct clist {
	msgpack_packer *pk;
	uint32_t n;
	int pack;
};

static int clist_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct clist *l = ud;
	SX_UNUSED(key);
	l->n++;
	if (!l->pack)
		return 0;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	int rc = sx__ev_unpack(val->data, val->len, &z, &o);
	if (rc == 0)
		sx_pack_object(l->pk, &o);
	msgpack_zone_destroy(&z);
	return rc;
}

static int m_cohort_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {NULL};
	struct clist l = {pk, 0, 0};
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 ||
	    (rc = sx__ev_scan(NULL, SX_T_COHORTS, "d", 1, "e", 1, 0, clist_cb, &l)) < 0)
		return rc;
	msgpack_pack_array(pk, l.n);
	l.pack = 1;
	return sx__ev_scan(NULL, SX_T_COHORTS, "d", 1, "e", 1, 0, clist_cb, &l);
}

static int m_cohort_users(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "cursor", "limit", NULL};
	const char *name;
	size_t nlen;
	int64_t cursor = 0, limit = 100;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, &name, &nlen)) < 0 ||
	    (rc = sx_arg_int(args, "cursor", 0, &cursor)) < 0 || (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (limit < 1 || limit > 10000)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to 10000");
	if (cursor < 0 || cursor > UINT32_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'cursor' is not a cursor of cohort.users");
	roaring_bitmap_t *b = sx_events_cohort_users(NULL, name, nlen);
	if (!b)
		return fail_null();
	uint64_t total = roaring_bitmap_get_cardinality(b);
	uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(limit + 1));
	size_t n = 0;
	roaring_uint32_iterator_t *it = roaring_create_iterator(b);
	if (!ids || !it) {
		free(ids);
		if (it)
			roaring_free_uint32_iterator(it);
		roaring_bitmap_free(b);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	if (roaring_move_uint32_iterator_equalorlarger(it, (uint32_t)cursor))
		for (; it->has_value && n < (size_t)limit + 1; roaring_advance_uint32_iterator(it))
			ids[n++] = it->current_value;
	roaring_free_uint32_iterator(it);
	roaring_bitmap_free(b);
	size_t shown = n > (size_t)limit ? (size_t)limit : n;
	msgpack_pack_map(pk, 4);
	sx_pack_key(pk, "name");
	sx_pack_strn(pk, name, nlen);
	sx_pack_kv_uint(pk, "size", total);
	sx_pack_key(pk, "users");
	msgpack_pack_array(pk, shown);
	for (size_t i = 0; i < shown; i++) {
		char id[SX_EVENTS_ID_MAX + 1];
		size_t len;
		if (sx_events_user_id(NULL, ids[i], id, sizeof(id), &len) < 0)
			msgpack_pack_nil(pk);
		else
			sx_pack_strn(pk, id, len);
	}
	sx_pack_key(pk, "cursor");
	if (n > (size_t)limit)
		msgpack_pack_uint32(pk, ids[limit]);
	else
		msgpack_pack_nil(pk);
	free(ids);
	return 0;
}

static int m_cohort_delete(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	const char *name;
	size_t nlen;
	msgpack_zone z;
	msgpack_object o;
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, &name, &nlen)) < 0)
		return rc;
	int cancelled = sx__ev_cohort_lua_cancel(name, nlen);
	msgpack_zone_init(&z, 1024);
	rc = cohort_def(name, nlen, &z, &o);
	msgpack_zone_destroy(&z);
	if (rc == SX_ENOENT && cancelled)
		rc = 0;
	if (rc < 0)
		return rc;
	memcpy(k + 1, name, nlen);
	k[0] = 'd';
	if ((rc = sx_store_del(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1)) < 0)
		return rc;
	k[0] = 'b';
	if ((rc = sx_store_del(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1)) < 0)
		return rc;
	msgpack_pack_map(pk, 2);
	sx_pack_key(pk, "name");
	sx_pack_strn(pk, name, nlen);
	sx_pack_kv_bool(pk, "deleted", 1);
	return 0;
}

int sx_events_retention(const msgpack_object *args, msgpack_packer *pk)
{
	return m_retention(NULL, args, pk, NULL);
}

int sx_events_cohort_size(const msgpack_object *args, msgpack_packer *pk)
{
	return m_cohort_size(NULL, args, pk, NULL);
}

int sx_events_cohort_list(msgpack_packer *pk)
{
	return m_cohort_list(NULL, NULL, pk, NULL);
}

int sx__ev_analytics_start(struct sx_engine *e)
{
	int rc;
	const struct sx_method methods[] = {
		{"funnel.query", SX_ROLE_READER, m_funnel, NULL,
		 "conversion per step, drop-off, median time between steps {steps, from, to, window_ms?, group_by?}"},
		{"cohort.retention", SX_ROLE_READER, m_retention, NULL,
		 "retention matrix {cohort_by?, period?, periods?, returning_event?, from?, to?, cohort?}"},
		{"cohort.save", SX_ROLE_WRITER, m_cohort_save, NULL, "save and compute a cohort {name, rule, description?}"},
		{"cohort.list", SX_ROLE_READER, m_cohort_list, NULL, "saved cohorts with their rules and sizes"},
		{"cohort.refresh", SX_ROLE_WRITER, m_cohort_refresh, NULL, "recompute a saved cohort {name}"},
		{"cohort.size", SX_ROLE_READER, m_cohort_size, NULL, "a saved cohort's size {name}"},
		{"cohort.users", SX_ROLE_READER, m_cohort_users, NULL, "a saved cohort's user ids, paged {name, cursor?, limit?}"},
		{"cohort.delete", SX_ROLE_WRITER, m_cohort_delete, NULL, "delete a saved cohort {name}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	if ((rc = sx__ev_cohort_lua_start(e)) < 0)
		return rc;
	return sx__tl_warm_start(e->loop, e->cfg ? e->cfg->funnel_warm_days : 0, funnel_warm_idle);
}

void sx__ev_analytics_stop(struct sx_engine *e)
{
	sx__ev_cohort_lua_stop();
	sx__tl_warm_stop();
	while (fqueries)
		uv_run(e->loop, UV_RUN_ONCE);
	fcache_free_all();
	sx__tl_clear();
}
