/* Live metrics: per-event configuration (dimensions, summed property),
 * metrics.query and metrics.active. The counters themselves are written by
 * the ingest batch (events.c) in the same store batch as the events. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "store/store.h"

#define DIM_NAME_MAX 64
#define QUERY_POINTS_MAX 10000

int sx__ev_dims_load(const char *event, size_t elen, struct sx_ev_dims *d)
{
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	d->ndims = 0;
	strcpy(d->value, "value");
	if (elen > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_EINVAL, "event name too long");
	k[0] = 'D';
	memcpy(k + 1, event, elen);
	int rc = sx_store_get(sx__ev_eng->store, SX_T_COUNTERS, k, elen + 1, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if ((rc = sx__ev_unpack(v.data, v.len, &z, &o)) == 0) {
		const msgpack_object *dims = sx__ev_map_get(&o, "dimensions"), *val = sx__ev_map_get(&o, "value");
		if (dims && dims->type == MSGPACK_OBJECT_ARRAY)
			for (uint32_t i = 0; i < dims->via.array.size && d->ndims < SX_EV_DIM_MAX; i++) {
				const msgpack_object *s = &dims->via.array.ptr[i];
				if (s->type == MSGPACK_OBJECT_STR && s->via.str.size <= DIM_NAME_MAX) {
					memcpy(d->dims[d->ndims], s->via.str.ptr, s->via.str.size);
					d->dims[d->ndims++][s->via.str.size] = 0;
				}
			}
		if (val && val->type == MSGPACK_OBJECT_STR && val->via.str.size <= SX_EVENTS_ID_MAX) {
			memcpy(d->value, val->via.str.ptr, val->via.str.size);
			d->value[val->via.str.size] = 0;
		}
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int check_dim_name(const msgpack_object *s)
{
	if (s->type != MSGPACK_OBJECT_STR || s->via.str.size == 0 || s->via.str.size > DIM_NAME_MAX ||
	    memchr(s->via.str.ptr, 0, s->via.str.size) || !sx_utf8_valid(s->via.str.ptr, s->via.str.size))
		return sx_diag_set(SX_EINVAL, "a dimension is a string of 1 to %d bytes of UTF-8: "
				   "\"PROPERTY\", \"item.ATTRIBUTE\" or \"user.ATTRIBUTE\"", DIM_NAME_MAX);
	if ((s->via.str.size == 5 && (!memcmp(s->via.str.ptr, "item.", 5) || !memcmp(s->via.str.ptr, "user.", 5))))
		return sx_diag_set(SX_EINVAL, "dimension '%.*s' names no attribute", (int)s->via.str.size, s->via.str.ptr);
	return 0;
}

static int event_arg(const msgpack_object *args, int allow_any, const char **s, size_t *len)
{
	const msgpack_object *o = sx_arg(args, "event");
	int rc = sx__ev_check_id(o, "event");
	if (rc < 0)
		return sx_diag_set(rc, "argument %s", sx_diag_last());
	*s = o->via.str.ptr, *len = o->via.str.size;
	if (**s == '*' && !(allow_any && *len == 1))
		return sx_diag_set(SX_EINVAL, "argument 'event': names starting with '*' are reserved (\"*\" is any event)");
	return 0;
}

static void pack_dims(msgpack_packer *pk, const char *event, size_t elen, const struct sx_ev_dims *d)
{
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "event");
	sx_pack_strn(pk, event, elen);
	sx_pack_key(pk, "dimensions");
	msgpack_pack_array(pk, (size_t)d->ndims);
	for (int i = 0; i < d->ndims; i++)
		sx_pack_str(pk, d->dims[i]);
	sx_pack_kv_str(pk, "value", d->value);
}

static int m_dimensions(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"event", "dimensions", "value", NULL};
	const char *ev, *val = NULL;
	size_t elen, vlen = 0;
	const msgpack_object *dims = NULL;
	struct sx_ev_dims d;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = event_arg(args, 0, &ev, &elen)) < 0 ||
	    (rc = sx_arg_array(args, "dimensions", 0, &dims)) < 0 || (rc = sx_arg_str(args, "value", 0, &val, &vlen)) < 0)
		return rc;
	if (dims && dims->via.array.size > SX_EV_DIM_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'dimensions': at most %d per event", SX_EV_DIM_MAX);
	for (uint32_t i = 0; dims && i < dims->via.array.size; i++) {
		if ((rc = check_dim_name(&dims->via.array.ptr[i])) < 0)
			return rc;
		for (uint32_t j = 0; j < i; j++)
			if (dims->via.array.ptr[j].via.str.size == dims->via.array.ptr[i].via.str.size &&
			    !memcmp(dims->via.array.ptr[j].via.str.ptr, dims->via.array.ptr[i].via.str.ptr,
				    dims->via.array.ptr[i].via.str.size))
				return sx_diag_set(SX_EINVAL, "argument 'dimensions' repeats '%.*s'",
						   (int)dims->via.array.ptr[i].via.str.size, dims->via.array.ptr[i].via.str.ptr);
	}
	if (val && (vlen > SX_EVENTS_ID_MAX || memchr(val, 0, vlen) || !sx_utf8_valid(val, vlen)))
		return sx_diag_set(SX_EINVAL, "argument 'value' must be a property name of at most %d bytes", SX_EVENTS_ID_MAX);
	if ((rc = sx__ev_dims_load(ev, elen, &d)) < 0)
		return rc;
	if (dims || val) {
		if (dims) {
			d.ndims = (int)dims->via.array.size;
			for (int i = 0; i < d.ndims; i++) {
				memcpy(d.dims[i], dims->via.array.ptr[i].via.str.ptr, dims->via.array.ptr[i].via.str.size);
				d.dims[i][dims->via.array.ptr[i].via.str.size] = 0;
			}
		}
		if (val) {
			memcpy(d.value, val, vlen);
			d.value[vlen] = 0;
		}
		msgpack_sbuffer sb;
		msgpack_packer spk;
		uint8_t k[1 + SX_EVENTS_ID_MAX];
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&spk, 2);
		sx_pack_key(&spk, "dimensions");
		msgpack_pack_array(&spk, (size_t)d.ndims);
		for (int i = 0; i < d.ndims; i++)
			sx_pack_str(&spk, d.dims[i]);
		sx_pack_kv_str(&spk, "value", d.value);
		k[0] = 'D';
		memcpy(k + 1, ev, elen);
		rc = sx_store_put(sx__ev_eng->store, SX_T_COUNTERS, k, elen + 1, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		if (rc < 0)
			return rc;
	}
	pack_dims(pk, ev, elen, &d);
	return 0;
}

/* ---- metrics.query ---- */

/* A point's distinct users are its record's bitmap cardinality, read from the
 * bitmap's header; only a total over several points with users needs a union,
 * built from the coarsest records covering the range (sx__ev_series_cover). */
struct group {
	char *value; /* owned */
	size_t vlen;
	uint64_t *count, *nsum, *users;
	double *sum;
	uint64_t tcount, tnsum, tusers;
	double tsum;
	size_t with_users;     /* points with users */
	roaring_bitmap_t *acc; /* the union while the cover pass runs */
	struct group *next;
};

struct query {
	int64_t from, step;
	size_t npoints, plen;
	int grouped;
	const char *where;
	size_t wlen;
	struct group **buckets;
	size_t nbuckets, ngroups;
	size_t voff; /* of the value in the cover pass's keys */
};

static struct group *group_find(const struct query *q, const char *v, size_t vlen, size_t *h)
{
	*h = (size_t)XXH3_64bits(v, vlen) & (q->nbuckets - 1);
	for (struct group *g = q->buckets[*h]; g; g = g->next)
		if (g->vlen == vlen && !memcmp(g->value, v, vlen))
			return g;
	return NULL;
}

static struct group *group_get(struct query *q, const char *v, size_t vlen)
{
	size_t h;
	struct group *g = group_find(q, v, vlen, &h);
	if (g)
		return g;
	if (!(g = calloc(1, sizeof(*g))))
		return NULL;
	g->value = malloc(vlen + 1);
	g->count = calloc(q->npoints, sizeof(uint64_t));
	g->nsum = calloc(q->npoints, sizeof(uint64_t));
	g->users = calloc(q->npoints, sizeof(uint64_t));
	g->sum = calloc(q->npoints, sizeof(double));
	if (!g->value || !g->count || !g->nsum || !g->users || !g->sum) {
		free(g->value), free(g->count), free(g->nsum), free(g->users), free(g->sum);
		free(g);
		return NULL;
	}
	memcpy(g->value, v, vlen);
	g->value[vlen] = 0;
	g->vlen = vlen;
	g->next = q->buckets[h];
	q->buckets[h] = g;
	q->ngroups++;
	return g;
}

static void group_free(struct group *g)
{
	free(g->value), free(g->count), free(g->nsum), free(g->users), free(g->sum);
	if (g->acc)
		roaring_bitmap_free(g->acc);
	free(g);
}

static int query_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct query *q = ud;
	if (key->len < q->plen + 8)
		return 0;
	const char *v = (const char *)key->data + q->plen + 8;
	size_t vlen = key->len - q->plen - 8;
	if (!q->grouped && (vlen != q->wlen || (vlen && memcmp(v, q->where, vlen))))
		return 0;
	int64_t t = (int64_t)sx_get_be64((const uint8_t *)key->data + q->plen);
	if (t < q->from)
		return 0;
	size_t i = (size_t)((t - q->from) / q->step);
	if (i >= q->npoints)
		return 0;
	struct sx_ev_record r;
	int rc = sx__ev_counter_peek(val->data, val->len, &r);
	if (rc < 0)
		return rc;
	struct group *g = group_get(q, v, vlen);
	if (!g)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	g->count[i] += r.count;
	g->sum[i] += r.sum;
	g->nsum[i] += r.nsum;
	g->tcount += r.count;
	g->tsum += r.sum;
	g->tnsum += r.nsum;
	if (r.users) {
		g->with_users += !g->users[i];
		g->users[i] += r.users;
		g->tusers = r.users; /* the total if this stays the only point with users */
	}
	return 0;
}

static int cover_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct query *q = ud;
	size_t h;
	if (key->len < q->voff)
		return 0;
	struct group *g = group_find(q, (const char *)key->data + q->voff, key->len - q->voff, &h);
	if (!g || !g->acc)
		return 0;
	struct sx_ev_record r;
	int rc = sx__ev_counter_peek(val->data, val->len, &r);
	return rc < 0 ? rc : sx__ev_bitmap_or_lazy(g->acc, r.bitmap, r.blen);
}

/* The distinct users over the range of the groups in gs that need a union. */
static int total_users(struct query *q, const char *ev, size_t elen, const char *dim, size_t dlen,
		       struct group **gs, size_t ng)
{
	size_t need = 0;
	for (size_t i = 0; i < ng; i++) {
		if (gs[i]->with_users < 2)
			continue;
		if (!(gs[i]->acc = roaring_bitmap_create()))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		need++;
	}
	if (!need)
		return 0;
	q->voff = SX_EV_METRIC_VALUE_OFF(elen, dlen);
	int rc = sx__ev_series_cover(NULL, ev, elen, dim, dlen, q->from, q->from + (int64_t)q->npoints * q->step,
				     cover_cb, q);
	for (size_t i = 0; i < ng; i++)
		if (gs[i]->acc) {
			roaring_bitmap_repair_after_lazy(gs[i]->acc);
			gs[i]->tusers = roaring_bitmap_get_cardinality(gs[i]->acc);
			roaring_bitmap_free(gs[i]->acc);
			gs[i]->acc = NULL;
		}
	return rc;
}

static void pack_point(msgpack_packer *pk, uint64_t count, uint64_t users, double sum, uint64_t nsum)
{
	sx_pack_kv_uint(pk, "count", count);
	sx_pack_kv_uint(pk, "users", users);
	sx_pack_kv_double(pk, "sum", sum);
	sx_pack_key(pk, "avg");
	if (nsum)
		msgpack_pack_double(pk, sum / (double)nsum);
	else
		msgpack_pack_nil(pk);
}

static void pack_group(msgpack_packer *pk, const struct query *q, const struct group *g)
{
	static const struct group empty;
	sx_pack_key(pk, "total");
	msgpack_pack_map(pk, 4);
	if (!g)
		g = &empty;
	pack_point(pk, g->tcount, g->with_users ? g->tusers : 0, g->tsum, g->tnsum);
	sx_pack_key(pk, "series");
	msgpack_pack_array(pk, q->npoints);
	for (size_t i = 0; i < q->npoints; i++) {
		msgpack_pack_map(pk, 5);
		sx_pack_kv_int(pk, "t", q->from + (int64_t)i * q->step);
		if (g->count)
			pack_point(pk, g->count[i], g->users[i], g->sum[i], g->nsum[i]);
		else
			pack_point(pk, 0, 0, 0, 0);
	}
}

static int cmp_groups(const void *a, const void *b)
{
	const struct group *x = *(struct group *const *)a, *y = *(struct group *const *)b;
	if (x->tcount != y->tcount)
		return x->tcount < y->tcount ? 1 : -1;
	size_t n = x->vlen < y->vlen ? x->vlen : y->vlen;
	int c = memcmp(x->value, y->value, n);
	return c ? c : (x->vlen > y->vlen) - (x->vlen < y->vlen);
}

/* A where/group value as the string the counters are keyed by. */
static int dim_value_string(const msgpack_object *o, char *buf, size_t size, const char **s, size_t *n)
{
	switch (o->type) {
	case MSGPACK_OBJECT_STR: *s = o->via.str.ptr, *n = o->via.str.size; return 0;
	case MSGPACK_OBJECT_BOOLEAN: *s = o->via.boolean ? "true" : "false", *n = strlen(*s); return 0;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *n = (size_t)snprintf(buf, size, "%llu", (unsigned long long)o->via.u64); *s = buf; return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *n = (size_t)snprintf(buf, size, "%lld", (long long)o->via.i64); *s = buf; return 0;
	default: return sx_diag_set(SX_EINVAL, "argument 'where': a value must be a string, integer or boolean");
	}
}

static int dim_configured(const struct sx_ev_dims *d, const char *dim, size_t dlen)
{
	for (int i = 0; i < d->ndims; i++)
		if (strlen(d->dims[i]) == dlen && !memcmp(d->dims[i], dim, dlen))
			return 1;
	return 0;
}

static int m_query(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"event", "from", "to", "interval", "group_by", "where", "limit", NULL};
	const char *ev, *iv = "hour", *gb = NULL;
	size_t elen, ivlen = 4, gblen = 0;
	int64_t from, to, limit = 20;
	const msgpack_object *where = NULL;
	char wbuf[32];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = event_arg(args, 1, &ev, &elen)) < 0 ||
	    (rc = sx_arg_int(args, "from", 1, &from)) < 0 || (rc = sx_arg_int(args, "to", 1, &to)) < 0 ||
	    (rc = sx_arg_str(args, "interval", 0, &iv, &ivlen)) < 0 ||
	    (rc = sx_arg_str(args, "group_by", 0, &gb, &gblen)) < 0 || (rc = sx_arg_map(args, "where", 0, &where)) < 0 ||
	    (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	int gran = sx__ev_gran_parse(iv, ivlen);
	if (!gran)
		return sx_diag_set(SX_EINVAL, "argument 'interval' must be minute, hour or day");
	if (from < 0 || to > SX_EVENTS_TIME_MAX + 1 || from >= to)
		return sx_diag_set(SX_EINVAL, "arguments 'from' < 'to' must be ms since 1970 (before the year 10000)");
	if (limit < 1 || limit > 1000)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to 1000");
	if (where && where->via.map.size > 1)
		return sx_diag_set(SX_EINVAL, "argument 'where' filters on one dimension (counters are kept per dimension)");
	if (where && gb)
		return sx_diag_set(SX_EINVAL, "arguments 'where' and 'group_by' cannot be combined "
				   "(counters are kept per dimension, not per pair)");
	struct query q = {0};
	q.step = sx__ev_gran_ms(gran);
	q.from = sx__ev_floor(from, q.step);
	q.npoints = (size_t)((to - q.from + q.step - 1) / q.step);
	if (q.npoints > QUERY_POINTS_MAX)
		return sx_diag_set(SX_EINVAL, "the query spans %zu %.*ss; at most %d points (use a coarser interval)",
				   q.npoints, (int)ivlen, iv, QUERY_POINTS_MAX);
	const char *dim = "";
	size_t dlen = 0;
	if (gb || (where && where->via.map.size == 1)) {
		struct sx_ev_dims d;
		if (gb)
			dim = gb, dlen = gblen;
		else {
			const msgpack_object *wk = &where->via.map.ptr[0].key;
			if (wk->type != MSGPACK_OBJECT_STR)
				return sx_diag_set(SX_EINVAL, "argument 'where' must map a dimension to a value");
			dim = wk->via.str.ptr, dlen = wk->via.str.size;
			if ((rc = dim_value_string(&where->via.map.ptr[0].val, wbuf, sizeof(wbuf), &q.where, &q.wlen)) < 0)
				return rc;
		}
		if (ev[0] == '*')
			return sx_diag_set(SX_EINVAL, "event \"*\" has no dimensions");
		if ((rc = sx__ev_dims_load(ev, elen, &d)) < 0)
			return rc;
		if (!dim_configured(&d, dim, dlen))
			return sx_diag_set(SX_EINVAL, "'%.*s' is not a dimension of event '%.*s' (see metrics.dimensions)",
					   (int)dlen, dim, (int)elen, ev);
	}
	q.grouped = gb != NULL;
	uint8_t lo[512], hi[512];
	q.plen = sx__ev_metric_prefix(lo, gran, ev, elen, dim, dlen);
	if (!q.plen)
		return sx_diag_set(SX_EINVAL, "event or dimension name too long");
	memcpy(hi, lo, q.plen);
	sx_be64(lo + q.plen, (uint64_t)q.from);
	sx_be64(hi + q.plen, (uint64_t)to);
	q.nbuckets = 256;
	q.buckets = calloc(q.nbuckets, sizeof(*q.buckets));
	if (!q.buckets)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	rc = sx__ev_scan(NULL, SX_T_COUNTERS, lo, q.plen + 8, hi, q.plen + 8, 0, query_cb, &q);
	struct group **gs = calloc(q.ngroups + 1, sizeof(*gs));
	size_t ng = 0;
	for (size_t i = 0; gs && i < q.nbuckets; i++)
		for (struct group *g = q.buckets[i]; g; g = g->next)
			gs[ng++] = g;
	if (rc == 0 && !gs)
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	size_t shown = ng;
	if (rc == 0 && q.grouped) {
		qsort(gs, ng, sizeof(*gs), cmp_groups);
		shown = ng < (size_t)limit ? ng : (size_t)limit;
	}
	if (rc == 0)
		rc = total_users(&q, ev, elen, dim, dlen, gs, shown);
	if (rc == 0) {
		msgpack_pack_map(pk, 6);
		sx_pack_key(pk, "event");
		sx_pack_strn(pk, ev, elen);
		sx_pack_kv_str(pk, "interval", iv[0] == 'm' ? "minute" : iv[0] == 'h' ? "hour" : "day");
		sx_pack_kv_int(pk, "from", q.from);
		sx_pack_kv_int(pk, "to", to);
		if (!q.grouped) {
			pack_group(pk, &q, ng ? gs[0] : NULL);
		} else {
			sx_pack_key(pk, "group_by");
			sx_pack_strn(pk, gb, gblen);
			sx_pack_key(pk, "groups");
			msgpack_pack_array(pk, shown);
			for (size_t i = 0; i < shown; i++) {
				msgpack_pack_map(pk, 3);
				sx_pack_key(pk, "value");
				sx_pack_strn(pk, gs[i]->value, gs[i]->vlen);
				pack_group(pk, &q, gs[i]);
			}
		}
	}
	for (size_t i = 0; i < q.nbuckets; i++)
		for (struct group *g = q.buckets[i], *n; g; g = n)
			n = g->next, group_free(g);
	free(gs);
	free(q.buckets);
	return rc;
}

/* ---- metrics.active ---- */

/* DAU, WAU and MAU from one pass over the 30 day records of "*", newest
 * first: each window's union is the previous one's plus older days. */
static const int active_days[] = {1, 7, 30};

struct active {
	int64_t end;
	int mark; /* the next window of active_days to count */
	uint64_t n[3];
	roaring_bitmap_t *acc;
};

static void active_mark(struct active *a, int64_t days)
{
	while (a->mark < 3 && active_days[a->mark] <= days) {
		roaring_bitmap_repair_after_lazy(a->acc);
		a->n[a->mark++] = roaring_bitmap_get_cardinality(a->acc);
	}
}

static int active_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct active *a = ud;
	if (key->len != SX_EV_METRIC_VALUE_OFF(1, 0))
		return 0;
	int64_t t = (int64_t)sx_get_be64((const uint8_t *)key->data + key->len - 8);
	active_mark(a, (a->end - t) / SX_EV_DAY_MS - 1);
	struct sx_ev_record r;
	int rc = sx__ev_counter_peek(val->data, val->len, &r);
	return rc < 0 ? rc : sx__ev_bitmap_or_lazy(a->acc, r.bitmap, r.blen);
}

static int m_active(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"window", "at", NULL};
	const char *w = "day";
	size_t wlen = 3;
	int64_t at = sx_wall_ms();
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "window", 0, &w, &wlen)) < 0 ||
	    (rc = sx_arg_int(args, "at", 0, &at)) < 0)
		return rc;
	int win = sx__ev_period_parse(w, wlen);
	if (win < 0)
		return sx_diag_set(SX_EINVAL, "argument 'window' must be day, week or month");
	if (at < 0 || at > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'at' must be ms since 1970 (before the year 10000)");
	int64_t day = sx__ev_floor(at, SX_EV_DAY_MS), end = day + SX_EV_DAY_MS;
	struct active a = {end, 0, {0}, roaring_bitmap_create()};
	if (!a.acc)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	uint8_t lo[16], hi[16];
	size_t p = sx__ev_metric_prefix(lo, SX_EV_DAY, "*", 1, "", 0);
	int64_t from = end - active_days[2] * SX_EV_DAY_MS;
	memcpy(hi, lo, p);
	sx_be64(lo + p, (uint64_t)(from < 0 ? 0 : from));
	sx_be64(hi + p, (uint64_t)end);
	rc = sx__ev_scan(NULL, SX_T_COUNTERS, lo, p + 8, hi, p + 8, 1, active_cb, &a);
	active_mark(&a, active_days[2]);
	roaring_bitmap_free(a.acc);
	if (rc < 0)
		return rc;
	const uint64_t *n = a.n;
	msgpack_pack_map(pk, 8);
	sx_pack_kv_int(pk, "at", at);
	sx_pack_kv_int(pk, "day", day);
	sx_pack_kv_uint(pk, "dau", n[0]);
	sx_pack_kv_uint(pk, "wau", n[1]);
	sx_pack_kv_uint(pk, "mau", n[2]);
	sx_pack_kv_double(pk, "stickiness", n[2] ? (double)n[0] / (double)n[2] : 0.0);
	sx_pack_key(pk, "window");
	sx_pack_strn(pk, w, wlen);
	sx_pack_kv_uint(pk, "active", n[win]);
	return 0;
}

int sx_events_metrics_query(const msgpack_object *args, msgpack_packer *pk)
{
	return m_query(NULL, args, pk, NULL);
}

int sx_events_metrics_active(const msgpack_object *args, msgpack_packer *pk)
{
	return m_active(NULL, args, pk, NULL);
}

int sx__ev_metrics_start(struct sx_engine *e)
{
	const struct sx_method methods[] = {
		{"metrics.dimensions", SX_ROLE_WRITER, m_dimensions, NULL,
		 "set or read an event's metric dimensions and summed property {event, dimensions?, value?}"},
		{"metrics.query", SX_ROLE_READER, m_query, NULL,
		 "count, users, sum, avg per minute/hour/day {event, from, to, interval?, group_by?, where?}"},
		{"metrics.active", SX_ROLE_READER, m_active, NULL, "DAU, WAU, MAU and stickiness {window?, at?}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return 0;
}
