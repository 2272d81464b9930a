/* Experiment definitions (validation, canonical form), bucketing, targeting. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/experiments/internal.h"

static const char *const state_names[] = {"draft", "running", "paused", "stopped", "concluded"};
static const char *const kind_names[] = {"conversion", "count", "sum", "mean"};
static const char *const role_names[] = {"primary", "secondary", "guardrail"};
static const char *const op_names[] = {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte",
				       "exists", "not_exists", "contains"};

const char *sx__xp_state_name(int s) { return s >= 0 && s <= XP_CONCLUDED ? state_names[s] : "?"; }
const char *sx__xp_kind_name(int k) { return k >= 0 && k <= XP_MEAN ? kind_names[k] : "?"; }
const char *sx__xp_role_name(int r) { return r >= 0 && r <= XP_GUARDRAIL ? role_names[r] : "?"; }

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return sx_diag_set(SX_EINVAL, "%s", msg);
}

static int str_ok(const msgpack_object *o, size_t max)
{
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size >= 1 && o->via.str.size <= max &&
	       !memchr(o->via.str.ptr, 0, o->via.str.size) && sx_utf8_valid(o->via.str.ptr, o->via.str.size);
}

static int num_of(const msgpack_object *o, double *out)
{
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 1;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 1;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(o->via.f64);
	default: return 0;
	}
}

static int is_num(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
	       o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

static int is_scalar(const msgpack_object *o)
{
	double d;
	return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BOOLEAN || (is_num(o) && num_of(o, &d));
}

/* A user-supplied value: no NaN/Inf, no extensions, string keys, bounded nesting. */
static int value_ok(const msgpack_object *o, int depth)
{
	double d;
	if (depth > 8)
		return 0;
	switch (o->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return num_of(o, &d);
	case MSGPACK_OBJECT_EXT: return 0;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if (!value_ok(&o->via.array.ptr[i], depth + 1))
				return 0;
		return 1;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++)
			if (o->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR ||
			    !value_ok(&o->via.map.ptr[i].val, depth + 1))
				return 0;
		return 1;
	default: return 1;
	}
}

static size_t packed_size(const msgpack_object *o)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx_pack_object(&pk, o);
	size_t n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static int only(const msgpack_object *o, const char *what, const char *const *known)
{
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		int ok = 0;
		for (const char *const *n = known; *n && !ok; n++)
			ok = sx_obj_streq(k, *n);
		if (!ok)
			return k->type == MSGPACK_OBJECT_STR
				       ? bad("%s: unknown field '%.*s'", what, (int)(k->via.str.size > 64 ? 64 : k->via.str.size),
					     k->via.str.ptr)
				       : bad("%s: field names must be strings", what);
	}
	return 0;
}

static int parse_enum(const msgpack_object *o, const char *what, const char *const *names, int n, int dflt,
		      int *out)
{
	if (!o) {
		*out = dflt;
		return 0;
	}
	for (int i = 0; i < n; i++)
		if (sx_obj_streq(o, names[i])) {
			*out = i;
			return 0;
		}
	char list[200] = "";
	for (int i = 0; i < n; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "|" : "", names[i]);
	return bad("%s must be one of %s", what, list);
}

/* ---- targeting ---- */

struct cond_ctx {
	msgpack_zone *zone;
	int count;
};

static int parse_cond(struct cond_ctx *cc, const msgpack_object *o, int depth, struct xp_cond *c, const char *path);

static int parse_list(struct cond_ctx *cc, const msgpack_object *arr, int depth, struct xp_cond *c, int op,
		      const char *path)
{
	if (arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size < 1 || arr->via.array.size > XP_COND_MAX)
		return bad("%s must be an array of 1 to %d conditions", path, XP_COND_MAX);
	c->op = op;
	c->nsub = arr->via.array.size;
	c->sub = msgpack_zone_malloc(cc->zone, sizeof(*c->sub) * c->nsub);
	if (!c->sub)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	memset(c->sub, 0, sizeof(*c->sub) * c->nsub);
	for (uint32_t i = 0; i < c->nsub; i++) {
		char p[96];
		snprintf(p, sizeof(p), "%s[%u]", path, i + 1);
		int rc = parse_cond(cc, &arr->via.array.ptr[i], depth + 1, &c->sub[i], p);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int parse_cond(struct cond_ctx *cc, const msgpack_object *o, int depth, struct xp_cond *c, const char *path)
{
	if (depth > XP_COND_DEPTH)
		return bad("%s: targeting is nested more than %d deep", path, XP_COND_DEPTH);
	if (++cc->count > XP_COND_MAX)
		return bad("targeting has more than %d conditions", XP_COND_MAX);
	if (o->type == MSGPACK_OBJECT_ARRAY)
		return parse_list(cc, o, depth, c, XP_OP_ALL, path);
	if (o->type != MSGPACK_OBJECT_MAP)
		return bad("%s must be a condition {attr, op, value} or {all|any|not = ...}", path);
	const msgpack_object *v;
	if (o->via.map.size == 1 && (v = sx_arg(o, "all")))
		return parse_list(cc, v, depth, c, XP_OP_ALL, path);
	if (o->via.map.size == 1 && (v = sx_arg(o, "any")))
		return parse_list(cc, v, depth, c, XP_OP_ANY, path);
	if (o->via.map.size == 1 && (v = sx_arg(o, "not"))) {
		c->op = XP_OP_NOT;
		c->nsub = 1;
		c->sub = msgpack_zone_malloc(cc->zone, sizeof(*c->sub));
		if (!c->sub)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		memset(c->sub, 0, sizeof(*c->sub));
		return parse_cond(cc, v, depth + 1, c->sub, path);
	}
	static const char *const known[] = {"attr", "op", "value", NULL};
	int rc;
	if ((rc = only(o, path, known)) < 0)
		return rc;
	const msgpack_object *attr = sx_arg(o, "attr"), *op = sx_arg(o, "op");
	if (!str_ok(attr, 128))
		return bad("%s.attr must be a string of 1 to 128 bytes", path);
	char what[120];
	snprintf(what, sizeof(what), "%s.op", path);
	if (!op)
		return bad("%s is missing", what);
	if ((rc = parse_enum(op, what, op_names, (int)SX_ARRAY_SIZE(op_names), 0, &c->op)) < 0) {
		/* accept the short spellings too */
		if (sx_obj_streq(op, "ge"))
			c->op = XP_OP_GTE;
		else if (sx_obj_streq(op, "le"))
			c->op = XP_OP_LTE;
		else if (sx_obj_streq(op, "nin"))
			c->op = XP_OP_NOT_IN;
		else
			return rc;
	}
	const char *a = attr->via.str.ptr;
	size_t alen = attr->via.str.size;
	c->scope = XP_SCOPE_USER;
	if (alen > 8 && memcmp(a, "context.", 8) == 0)
		c->scope = XP_SCOPE_CONTEXT, a += 8, alen -= 8;
	else if (alen > 5 && memcmp(a, "user.", 5) == 0)
		a += 5, alen -= 5;
	if (c->scope == XP_SCOPE_USER && alen == 2 && memcmp(a, "id", 2) == 0 && attr->via.str.size == 7)
		c->scope = XP_SCOPE_ID;
	if (c->scope == XP_SCOPE_USER && attr->via.str.size == 6 && memcmp(attr->via.str.ptr, "cohort", 6) == 0)
		c->scope = XP_SCOPE_COHORT;
	c->attr = a;
	c->alen = alen;
	c->value = sx_arg(o, "value");
	if (c->op == XP_OP_EXISTS || c->op == XP_OP_NOT_EXISTS) {
		if (c->value)
			return bad("%s: %s takes no value", path, op_names[c->op]);
		if (c->scope == XP_SCOPE_COHORT)
			return bad("%s: cohort takes eq, ne, in or not_in", path);
		return 0;
	}
	if (!c->value)
		return bad("%s.value is missing", path);
	if (c->op == XP_OP_IN || c->op == XP_OP_NOT_IN) {
		if (c->value->type != MSGPACK_OBJECT_ARRAY || c->value->via.array.size < 1 ||
		    c->value->via.array.size > 1000)
			return bad("%s.value must be an array of 1 to 1000 values for %s", path, op_names[c->op]);
		for (uint32_t i = 0; i < c->value->via.array.size; i++)
			if (!is_scalar(&c->value->via.array.ptr[i]) ||
			    (c->scope == XP_SCOPE_COHORT && !str_ok(&c->value->via.array.ptr[i], 128)))
				return bad("%s.value[%u] must be a string, number or boolean", path, i + 1);
		return 0;
	}
	if (c->scope == XP_SCOPE_COHORT) {
		if (c->op != XP_OP_EQ && c->op != XP_OP_NE)
			return bad("%s: cohort takes eq, ne, in or not_in", path);
		if (!str_ok(c->value, 128))
			return bad("%s.value must be a cohort name", path);
		return 0;
	}
	if (!is_scalar(c->value))
		return bad("%s.value must be a string, number or boolean", path);
	if ((c->op == XP_OP_GT || c->op == XP_OP_GTE || c->op == XP_OP_LT || c->op == XP_OP_LTE) &&
	    c->value->type == MSGPACK_OBJECT_BOOLEAN)
		return bad("%s.value must be a number or a string for %s", path, op_names[c->op]);
	return 0;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *k, size_t klen)
{
	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *key = &m->via.map.ptr[i].key;
		if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == klen && memcmp(key->via.str.ptr, k, klen) == 0)
			return m->via.map.ptr[i].val.type == MSGPACK_OBJECT_NIL ? NULL : &m->via.map.ptr[i].val;
	}
	return NULL;
}

/* -2: not comparable; else <0, 0, >0. */
static int cmp(const msgpack_object *a, const msgpack_object *b)
{
	if (a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR) {
		size_t n = a->via.str.size < b->via.str.size ? a->via.str.size : b->via.str.size;
		int r = memcmp(a->via.str.ptr, b->via.str.ptr, n);
		if (r == 0)
			r = a->via.str.size < b->via.str.size ? -1 : a->via.str.size > b->via.str.size;
		return r < 0 ? -1 : r > 0;
	}
	if (a->type == MSGPACK_OBJECT_BOOLEAN && b->type == MSGPACK_OBJECT_BOOLEAN)
		return a->via.boolean == b->via.boolean ? 0 : a->via.boolean ? 1 : -1;
	if ((a->type == MSGPACK_OBJECT_POSITIVE_INTEGER || a->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) &&
	    (b->type == MSGPACK_OBJECT_POSITIVE_INTEGER || b->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)) {
		if (a->type != b->type)
			return a->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? 1 : -1;
		if (a->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			return a->via.u64 < b->via.u64 ? -1 : a->via.u64 > b->via.u64;
		return a->via.i64 < b->via.i64 ? -1 : a->via.i64 > b->via.i64;
	}
	double x, y;
	if (is_num(a) && is_num(b) && num_of(a, &x) && num_of(b, &y))
		return x < y ? -1 : x > y;
	return -2;
}

static int test_one(int op, const msgpack_object *val, const msgpack_object *want)
{
	int r;
	switch (op) {
	case XP_OP_EQ: return cmp(val, want) == 0;
	case XP_OP_IN:
		for (uint32_t i = 0; i < want->via.array.size; i++)
			if (cmp(val, &want->via.array.ptr[i]) == 0)
				return 1;
		return 0;
	case XP_OP_GT: return (r = cmp(val, want)) != -2 && r > 0;
	case XP_OP_GTE: return (r = cmp(val, want)) != -2 && r >= 0;
	case XP_OP_LT: return (r = cmp(val, want)) != -2 && r < 0;
	case XP_OP_LTE: return (r = cmp(val, want)) != -2 && r <= 0;
	case XP_OP_CONTAINS:
		if (val->type == MSGPACK_OBJECT_STR && want->type == MSGPACK_OBJECT_STR)
			return memmem(val->via.str.ptr, val->via.str.size, want->via.str.ptr, want->via.str.size) != NULL;
		return 0;
	default: return 0;
	}
}

/* Positive form of a leaf on a value (an array value matches if any element does). */
static int test_leaf(int op, const msgpack_object *val, const msgpack_object *want)
{
	if (val->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < val->via.array.size; i++) {
			const msgpack_object *e = &val->via.array.ptr[i];
			if (op == XP_OP_CONTAINS ? cmp(e, want) == 0 || test_one(op, e, want) : test_one(op, e, want))
				return 1;
		}
		return 0;
	}
	return test_one(op, val, want);
}

int sx__xp_target(const struct xp_cond *c, const char *user, size_t ulen, const msgpack_object *attrs,
		  const msgpack_object *context, xp_cohort_fn cohort_fn, void *ud)
{
	int r;
	if (!c)
		return 1;
	switch (c->op) {
	case XP_OP_ALL:
	case XP_OP_ANY:
		for (uint32_t i = 0; i < c->nsub; i++) {
			if ((r = sx__xp_target(&c->sub[i], user, ulen, attrs, context, cohort_fn, ud)) < 0)
				return r;
			if (c->op == XP_OP_ALL ? !r : r)
				return r;
		}
		return c->op == XP_OP_ALL;
	case XP_OP_NOT:
		r = sx__xp_target(c->sub, user, ulen, attrs, context, cohort_fn, ud);
		return r < 0 ? r : !r;
	default: break;
	}
	int neg = c->op == XP_OP_NE || c->op == XP_OP_NOT_IN || c->op == XP_OP_NOT_EXISTS;
	int pos = c->op == XP_OP_NE ? XP_OP_EQ : c->op == XP_OP_NOT_IN ? XP_OP_IN
					       : c->op == XP_OP_NOT_EXISTS ? XP_OP_EXISTS : c->op;
	if (c->scope == XP_SCOPE_COHORT) {
		r = 0;
		if (cohort_fn) {
			if (c->value->type == MSGPACK_OBJECT_ARRAY) {
				for (uint32_t i = 0; i < c->value->via.array.size && r == 0; i++) {
					const msgpack_object *n = &c->value->via.array.ptr[i];
					r = cohort_fn(n->via.str.ptr, n->via.str.size, user, ulen, ud);
				}
			} else {
				r = cohort_fn(c->value->via.str.ptr, c->value->via.str.size, user, ulen, ud);
			}
		}
		return r < 0 ? r : neg ? !r : r;
	}
	msgpack_object idobj;
	const msgpack_object *val;
	if (c->scope == XP_SCOPE_ID) {
		idobj.type = MSGPACK_OBJECT_STR;
		idobj.via.str.ptr = user;
		idobj.via.str.size = (uint32_t)ulen;
		val = &idobj;
	} else {
		val = map_get(c->scope == XP_SCOPE_CONTEXT ? context : attrs, c->attr, c->alen);
	}
	r = pos == XP_OP_EXISTS ? val != NULL : val != NULL && test_leaf(pos, val, c->value);
	return neg ? !r : r;
}

/* ---- bucketing ---- */

uint32_t sx__xp_bucket(const char *salt, size_t slen, const char *user, size_t ulen, uint64_t seed)
{
	char buf[XP_KEY_MAX + 1 + 256];
	if (slen > XP_KEY_MAX)
		slen = XP_KEY_MAX;
	if (ulen > 256)
		ulen = 256;
	memcpy(buf, salt, slen);
	buf[slen] = '\0';
	memcpy(buf + slen + 1, user, ulen);
	return (uint32_t)(XXH3_64bits_withSeed(buf, slen + 1 + ulen, seed) % XP_BUCKETS);
}

int sx__xp_pick(const double *w, int n, uint32_t bucket)
{
	double acc = 0;
	for (int i = 0; i < n - 1; i++) {
		acc += w[i];
		if ((double)bucket < floor(acc * XP_BUCKETS + 0.5))
			return i;
	}
	return n - 1;
}

int sx__xp_layer_slot(const char *layer, size_t llen, const char *user, size_t ulen, int n)
{
	uint32_t b = sx__xp_bucket(layer, llen, user, ulen, XP_SEED_LAYER);
	return (int)((uint64_t)b * (uint64_t)n / XP_BUCKETS);
}

/* ---- definitions ---- */

static int parse_variants(struct xp_def *d, const msgpack_object *o)
{
	if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2 || o->via.array.size > XP_VARIANTS_MAX)
		return bad("variants must be an array of 2 to %d variants {name, weight?, payload?}", XP_VARIANTS_MAX);
	static const char *const known[] = {"name", "weight", "payload", NULL};
	double total = 0;
	d->nv = (int)o->via.array.size;
	for (int i = 0; i < d->nv; i++) {
		const msgpack_object *v = &o->via.array.ptr[i];
		char what[40];
		int rc;
		snprintf(what, sizeof(what), "variants[%d]", i + 1);
		if (v->type != MSGPACK_OBJECT_MAP)
			return bad("%s must be a map {name, weight?, payload?}", what);
		if ((rc = only(v, what, known)) < 0)
			return rc;
		const msgpack_object *name = sx_arg(v, "name"), *w = sx_arg(v, "weight");
		if (!str_ok(name, XP_NAME_MAX))
			return bad("%s.name must be a string of 1 to %d bytes", what, XP_NAME_MAX);
		for (int j = 0; j < i; j++)
			if (d->v[j].nlen == name->via.str.size && memcmp(d->v[j].name, name->via.str.ptr, d->v[j].nlen) == 0)
				return bad("%s.name '%.*s' is used twice", what, (int)name->via.str.size, name->via.str.ptr);
		d->v[i].name = name->via.str.ptr;
		d->v[i].nlen = name->via.str.size;
		d->v[i].given = 1;
		if (w && (!num_of(w, &d->v[i].given) || d->v[i].given <= 0 || d->v[i].given > 1e9))
			return bad("%s.weight must be a number in (0, 1e9]", what);
		total += d->v[i].given;
		d->v[i].payload = sx_arg(v, "payload");
		if (d->v[i].payload && (!value_ok(d->v[i].payload, 0) || packed_size(d->v[i].payload) > XP_PAYLOAD_MAX))
			return bad("%s.payload must be a value without NaN, infinities or extensions, nested at most 8 "
				   "deep, of at most %d bytes", what, XP_PAYLOAD_MAX);
	}
	for (int i = 0; i < d->nv; i++)
		d->v[i].weight = d->v[i].given / total;
	return 0;
}

static int parse_metrics(struct xp_def *d, const msgpack_object *o)
{
	static const char *const known[] = {"name", "kind", "event", "property", "window_ms", "direction", "role", NULL};
	static const char *const dirs[] = {"increase", "decrease"};
	d->primary = -1;
	if (!o)
		return 0;
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > XP_METRICS_MAX)
		return bad("metrics must be an array of at most %d metrics", XP_METRICS_MAX);
	d->nm = (int)o->via.array.size;
	int explicit_primary = 0;
	for (int i = 0; i < d->nm; i++) {
		const msgpack_object *m = &o->via.array.ptr[i];
		struct xp_metric *x = &d->m[i];
		char what[64];
		int rc;
		snprintf(what, sizeof(what), "metrics[%d]", i + 1);
		if (m->type != MSGPACK_OBJECT_MAP)
			return bad("%s must be a map {name, kind, event, ...}", what);
		if ((rc = only(m, what, known)) < 0)
			return rc;
		const msgpack_object *name = sx_arg(m, "name"), *ev = sx_arg(m, "event"), *p = sx_arg(m, "property"),
				     *w = sx_arg(m, "window_ms");
		if (!str_ok(name, XP_NAME_MAX))
			return bad("%s.name must be a string of 1 to %d bytes", what, XP_NAME_MAX);
		for (int j = 0; j < i; j++)
			if (d->m[j].nlen == name->via.str.size && memcmp(d->m[j].name, name->via.str.ptr, d->m[j].nlen) == 0)
				return bad("%s.name '%.*s' is used twice", what, (int)name->via.str.size, name->via.str.ptr);
		x->name = name->via.str.ptr;
		x->nlen = name->via.str.size;
		if (!str_ok(ev, 128) || ev->via.str.ptr[0] == '*')
			return bad("%s.event must be an event name of 1 to 128 bytes", what);
		x->event = ev->via.str.ptr;
		x->elen = ev->via.str.size;
		char f[80];
		snprintf(f, sizeof(f), "%s.kind", what);
		if ((rc = parse_enum(sx_arg(m, "kind"), f, kind_names, 4, XP_CONVERSION, &x->kind)) < 0)
			return rc;
		if (p) {
			if (x->kind == XP_CONVERSION || x->kind == XP_COUNT)
				return bad("%s.property applies to kinds sum and mean only", what);
			if (!str_ok(p, 128))
				return bad("%s.property must be a string of 1 to 128 bytes", what);
			x->prop = p->via.str.ptr;
			x->plen = p->via.str.size;
		} else if (x->kind == XP_SUM || x->kind == XP_MEAN) {
			x->prop = "value";
			x->plen = 5;
		}
		x->window_ms = XP_WINDOW_DEFAULT;
		double wd;
		if (w && (!num_of(w, &wd) || wd != floor(wd) || wd < 1 || wd > (double)XP_WINDOW_MAX))
			return bad("%s.window_ms must be an integer from 1 to %lld", what, (long long)XP_WINDOW_MAX);
		if (w)
			x->window_ms = (int64_t)wd;
		snprintf(f, sizeof(f), "%s.direction", what);
		if ((rc = parse_enum(sx_arg(m, "direction"), f, dirs, 2, 0, &x->decrease)) < 0)
			return rc;
		snprintf(f, sizeof(f), "%s.role", what);
		x->role = -1;
		if (sx_arg(m, "role") && (rc = parse_enum(sx_arg(m, "role"), f, role_names, 3, 0, &x->role)) < 0)
			return rc;
		if (x->role == XP_PRIMARY) {
			if (explicit_primary)
				return bad("%s: only one metric may have role primary", what);
			explicit_primary = 1;
			d->primary = i;
		}
	}
	for (int i = 0; i < d->nm; i++)
		if (d->m[i].role < 0) {
			d->m[i].role = explicit_primary || d->primary >= 0 ? XP_SECONDARY : XP_PRIMARY;
			if (d->m[i].role == XP_PRIMARY)
				d->primary = i;
		}
	return 0;
}

static int parse_rule(struct xp_def *d, const msgpack_object *o)
{
	static const char *const rules[] = {"none", "default"};
	static const char *const known[] = {"rule", "alpha", "tau", "auto_stop", "rollout", NULL};
	d->rule = XP_RULE_DEFAULT;
	d->alpha = 0.05;
	d->tau = 0;
	d->auto_stop = 1;
	d->rollout = 0;
	if (!o)
		return 0;
	if (o->type == MSGPACK_OBJECT_STR) {
		int rc = parse_enum(o, "stopping_rule", rules, 2, XP_RULE_DEFAULT, &d->rule);
		d->auto_stop = d->rule != XP_RULE_NONE;
		return rc;
	}
	if (o->type != MSGPACK_OBJECT_MAP)
		return bad("stopping_rule must be \"default\", \"none\" or a map {rule, alpha, tau, auto_stop, rollout}");
	int rc;
	if ((rc = only(o, "stopping_rule", known)) < 0 ||
	    (rc = parse_enum(sx_arg(o, "rule"), "stopping_rule.rule", rules, 2, XP_RULE_DEFAULT, &d->rule)) < 0)
		return rc;
	const msgpack_object *a = sx_arg(o, "alpha"), *t = sx_arg(o, "tau"), *s = sx_arg(o, "auto_stop"),
			     *r = sx_arg(o, "rollout");
	if (a && (!num_of(a, &d->alpha) || d->alpha <= 0 || d->alpha > 0.5))
		return bad("stopping_rule.alpha must be a number in (0, 0.5]");
	if (t && (!num_of(t, &d->tau) || d->tau <= 0 || d->tau > 1e12))
		return bad("stopping_rule.tau must be a positive number (the mixture's standard deviation of the effect)");
	if (s && s->type != MSGPACK_OBJECT_BOOLEAN)
		return bad("stopping_rule.auto_stop must be a boolean");
	if (r && r->type != MSGPACK_OBJECT_BOOLEAN)
		return bad("stopping_rule.rollout must be a boolean");
	d->auto_stop = s ? s->via.boolean : d->rule != XP_RULE_NONE;
	if (r)
		d->rollout = r->via.boolean;
	return 0;
}

static int key_ok(const char *k, size_t n)
{
	if (n < 1 || n > XP_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = k[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
		      ch == '-' || ch == '.'))
			return 0;
	}
	return 1;
}

static int parse_into(struct xp_def *d, const msgpack_object *o, const char *key, size_t klen)
{
	static const char *const known[] = {"key", "description", "variants", "traffic", "targeting", "layer",
					    "holdout", "metrics", "min_sample", "min_duration_ms", "stopping_rule",
					    "salt", "allocation", NULL};
	static const char *const allocs[] = {"fixed", "thompson"};
	int rc;
	if (!o || o->type != MSGPACK_OBJECT_MAP)
		return bad("an experiment is a map {key, variants, ...}");
	if ((rc = sx_arg_only(o, known)) < 0)
		return rc;
	const msgpack_object *k = sx_arg(o, "key");
	if (k && (k->type != MSGPACK_OBJECT_STR || !key_ok(k->via.str.ptr, k->via.str.size)))
		return bad("key must be 1 to %d of A-Z a-z 0-9 _ - .", XP_KEY_MAX);
	if (key) {
		if (!key_ok(key, klen))
			return bad("key must be 1 to %d of A-Z a-z 0-9 _ - .", XP_KEY_MAX);
		if (k && (k->via.str.size != klen || memcmp(k->via.str.ptr, key, klen) != 0))
			return bad("key '%.*s' differs from the experiment's key '%.*s'", (int)k->via.str.size,
				   k->via.str.ptr, (int)klen, key);
		d->key = key;
		d->klen = klen;
	} else {
		if (!k)
			return bad("argument 'key' is missing");
		d->key = k->via.str.ptr;
		d->klen = k->via.str.size;
	}
	const msgpack_object *x;
	if ((x = sx_arg(o, "description"))) {
		if (x->type != MSGPACK_OBJECT_STR || x->via.str.size > XP_DESC_MAX || !sx_utf8_valid(x->via.str.ptr, x->via.str.size))
			return bad("description must be a string of at most %d bytes", XP_DESC_MAX);
		d->desc = x->via.str.ptr;
		d->dlen = x->via.str.size;
	}
	if ((rc = parse_variants(d, sx_arg(o, "variants"))) < 0)
		return rc;
	d->traffic = 1;
	if ((x = sx_arg(o, "traffic")) && (!num_of(x, &d->traffic) || d->traffic < 0 || d->traffic > 1))
		return bad("traffic must be a number from 0 to 1");
	d->holdout = 0;
	if ((x = sx_arg(o, "holdout")) && (!num_of(x, &d->holdout) || d->holdout < 0 || d->holdout >= 1))
		return bad("holdout must be a number from 0 to less than 1");
	if ((x = sx_arg(o, "layer"))) {
		if (!str_ok(x, XP_NAME_MAX))
			return bad("layer must be a string of 1 to %d bytes", XP_NAME_MAX);
		d->layer = x->via.str.ptr;
		d->llen = x->via.str.size;
	}
	d->salt = d->key;
	d->slen = d->klen;
	if ((x = sx_arg(o, "salt"))) {
		if (!str_ok(x, XP_KEY_MAX))
			return bad("salt must be a string of 1 to %d bytes", XP_KEY_MAX);
		d->salt = x->via.str.ptr;
		d->slen = x->via.str.size;
	}
	if ((x = sx_arg(o, "targeting"))) {
		struct cond_ctx cc = {&d->zone, 0};
		d->targeting = msgpack_zone_malloc(&d->zone, sizeof(*d->targeting));
		if (!d->targeting)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		memset(d->targeting, 0, sizeof(*d->targeting));
		if (x->type == MSGPACK_OBJECT_ARRAY && x->via.array.size == 0) {
			d->targeting = NULL;
		} else if ((rc = parse_cond(&cc, x, 1, d->targeting, "targeting")) < 0) {
			return rc;
		}
	}
	if ((rc = parse_metrics(d, sx_arg(o, "metrics"))) < 0)
		return rc;
	d->min_sample = 100;
	double v;
	if ((x = sx_arg(o, "min_sample")) && (!num_of(x, &v) || v != floor(v) || v < 0 || v > 1e12))
		return bad("min_sample must be an integer from 0 to 1e12");
	if (x)
		d->min_sample = (int64_t)v;
	d->min_duration_ms = 0;
	if ((x = sx_arg(o, "min_duration_ms")) && (!num_of(x, &v) || v != floor(v) || v < 0 || v > 3.2e11))
		return bad("min_duration_ms must be an integer from 0 to 3.2e11 (ten years)");
	if (x)
		d->min_duration_ms = (int64_t)v;
	if ((rc = parse_rule(d, sx_arg(o, "stopping_rule"))) < 0)
		return rc;
	if ((rc = parse_enum(sx_arg(o, "allocation"), "allocation", allocs, 2, 0, &d->thompson)) < 0)
		return rc;
	if (d->thompson && (d->primary < 0 || d->m[d->primary].kind != XP_CONVERSION))
		return bad("allocation \"thompson\" needs a primary metric of kind conversion");
	return 0;
}

static void pack_def(const struct xp_def *d, const msgpack_object *targeting, msgpack_packer *pk)
{
	msgpack_pack_map(pk, 13);
	sx_pack_key(pk, "key");
	sx_pack_strn(pk, d->key, d->klen);
	sx_pack_key(pk, "description");
	if (d->desc)
		sx_pack_strn(pk, d->desc, d->dlen);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "variants");
	msgpack_pack_array(pk, (uint32_t)d->nv);
	for (int i = 0; i < d->nv; i++) {
		msgpack_pack_map(pk, 3);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, d->v[i].name, d->v[i].nlen);
		sx_pack_kv_double(pk, "weight", d->v[i].given);
		sx_pack_key(pk, "payload");
		if (d->v[i].payload)
			sx_pack_object(pk, d->v[i].payload);
		else
			msgpack_pack_nil(pk);
	}
	sx_pack_kv_double(pk, "traffic", d->traffic);
	sx_pack_kv_double(pk, "holdout", d->holdout);
	sx_pack_key(pk, "layer");
	if (d->layer)
		sx_pack_strn(pk, d->layer, d->llen);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "salt");
	sx_pack_strn(pk, d->salt, d->slen);
	sx_pack_key(pk, "targeting");
	if (targeting && d->targeting)
		sx_pack_object(pk, targeting);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "metrics");
	msgpack_pack_array(pk, (uint32_t)d->nm);
	for (int i = 0; i < d->nm; i++) {
		const struct xp_metric *m = &d->m[i];
		msgpack_pack_map(pk, 7);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, m->name, m->nlen);
		sx_pack_kv_str(pk, "kind", kind_names[m->kind]);
		sx_pack_key(pk, "event");
		sx_pack_strn(pk, m->event, m->elen);
		sx_pack_key(pk, "property");
		if (m->prop)
			sx_pack_strn(pk, m->prop, m->plen);
		else
			msgpack_pack_nil(pk);
		sx_pack_kv_int(pk, "window_ms", m->window_ms);
		sx_pack_kv_str(pk, "direction", m->decrease ? "decrease" : "increase");
		sx_pack_kv_str(pk, "role", role_names[m->role]);
	}
	sx_pack_kv_int(pk, "min_sample", d->min_sample);
	sx_pack_kv_int(pk, "min_duration_ms", d->min_duration_ms);
	sx_pack_key(pk, "stopping_rule");
	msgpack_pack_map(pk, 5);
	sx_pack_kv_str(pk, "rule", d->rule == XP_RULE_NONE ? "none" : "default");
	sx_pack_kv_double(pk, "alpha", d->alpha);
	sx_pack_key(pk, "tau");
	if (d->tau > 0)
		msgpack_pack_double(pk, d->tau);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_bool(pk, "auto_stop", d->auto_stop);
	sx_pack_kv_bool(pk, "rollout", d->rollout);
	sx_pack_kv_str(pk, "allocation", d->thompson ? "thompson" : "fixed");
}

static struct xp_def *def_new(void)
{
	struct xp_def *d = calloc(1, sizeof(*d));
	if (!d || !msgpack_zone_init(&d->zone, 2048)) {
		free(d);
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	return d;
}

void sx__xp_def_free(struct xp_def *d)
{
	if (!d)
		return;
	msgpack_zone_destroy(&d->zone);
	free(d);
}

struct xp_def *sx__xp_def_parse(const msgpack_object *o, const char *key, size_t klen)
{
	struct xp_def *tmp = def_new(), *d = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_object canon;
	if (!tmp)
		return NULL;
	if (parse_into(tmp, o, key, klen) < 0) {
		sx__xp_def_free(tmp);
		return NULL;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_def(tmp, sx_arg(o, "targeting"), &pk);
	sx__xp_def_free(tmp);
	if (!sb.data || !(d = def_new()))
		goto fail;
	d->packed = msgpack_zone_malloc(&d->zone, sb.size);
	if (!d->packed)
		goto fail;
	memcpy(d->packed, sb.data, sb.size);
	d->packed_len = sb.size;
	if (sx_frame_decode((const uint8_t *)d->packed, d->packed_len, &d->zone, &canon) < 0 ||
	    parse_into(d, &canon, NULL, 0) < 0) {
		char m[400];
		snprintf(m, sizeof(m), "%s", sx_diag_last());
		sx_diag_set(SX_EINTERNAL, "canonical definition does not parse: %s", m);
		goto fail_quiet;
	}
	msgpack_sbuffer_destroy(&sb);
	return d;
fail:
	sx_diag_set(SX_ENOMEM, "out of memory");
fail_quiet:
	msgpack_sbuffer_destroy(&sb);
	sx__xp_def_free(d);
	return NULL;
}
