/* The experiments plugin: definitions, versions, life cycle, audit,
 * assignment, the `experiments` script kind and the live monitor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <roaring/roaring.h>
#include <xxhash.h>

#include "core/audit.h"
#include "core/log.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/experiments/experiments.h"
#include "plugins/experiments/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

struct sx_engine *sx__xp_eng;
#define eng sx__xp_eng

static struct xp **xps;
static size_t nxps, capxps;
static uv_timer_t monitor;
static int monitor_on;
static uint32_t audit_seq;

#define MONITOR_MS 1000

/* ---- registry ---- */

static int xcmp(const char *k, size_t n, const struct xp *x)
{
	size_t m = n < x->klen ? n : x->klen;
	int r = memcmp(k, x->key, m);
	return r ? r : n < x->klen ? -1 : n > x->klen;
}

static size_t lower_bound(const char *k, size_t n)
{
	size_t lo = 0, hi = nxps;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (xcmp(k, n, xps[mid]) > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct xp *sx__xp_find(const char *key, size_t len)
{
	size_t i = lower_bound(key, len);
	return i < nxps && xcmp(key, len, xps[i]) == 0 ? xps[i] : NULL;
}

static int insert(struct xp *x)
{
	if (nxps == capxps) {
		size_t cap = capxps ? capxps * 2 : 16;
		struct xp **n = realloc(xps, cap * sizeof(*n));
		if (!n)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		xps = n;
		capxps = cap;
	}
	size_t i = lower_bound(x->key, x->klen);
	memmove(xps + i + 1, xps + i, (nxps - i) * sizeof(*xps));
	xps[i] = x;
	nxps++;
	return 0;
}

static void xp_free(struct xp *x)
{
	if (x) {
		sx__xp_def_free(x->def);
		free(x);
	}
}

static void set_def(struct xp *x, struct xp_def *d)
{
	sx__xp_def_free(x->def);
	x->def = d;
	x->spec = sx__xp_spec(d);
	x->ms_ready = 0;
	x->alloc_ready = 0;
	for (int i = 0; i < d->nv; i++)
		x->alloc[i] = d->v[i].weight;
}

/* ---- storage ---- */

static size_t dkey(uint8_t *k, const struct xp *x)
{
	k[0] = 'd';
	memcpy(k + 1, x->key, x->klen);
	return 1 + x->klen;
}

static size_t vkey(uint8_t *k, const char *key, size_t klen, uint32_t version)
{
	k[0] = 'v';
	memcpy(k + 1, key, klen);
	k[1 + klen] = 0;
	sx_be32(k + 2 + klen, version);
	return 6 + klen;
}

static void pack_nstr(msgpack_packer *pk, const char *s)
{
	if (s && *s)
		sx_pack_str(pk, s);
	else
		msgpack_pack_nil(pk);
}

static void pack_reasons(msgpack_packer *pk, char (*r)[200], int n)
{
	msgpack_pack_array(pk, (uint32_t)n);
	for (int i = 0; i < n; i++)
		sx_pack_str(pk, r[i]);
}

static int save_state(struct xp *x)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t k[1 + XP_KEY_MAX];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 13);
	sx_pack_key(&pk, "key");
	sx_pack_strn(&pk, x->key, x->klen);
	sx_pack_kv_uint(&pk, "version", x->version);
	sx_pack_kv_str(&pk, "state", sx__xp_state_name(x->state));
	sx_pack_kv_int(&pk, "created", x->created);
	sx_pack_kv_int(&pk, "updated", x->updated);
	sx_pack_kv_int(&pk, "started_at", x->started_at);
	sx_pack_kv_int(&pk, "stopped_at", x->stopped_at);
	sx_pack_kv_int(&pk, "concluded_at", x->concluded_at);
	sx_pack_key(&pk, "winner");
	if (x->winner >= 0 && x->winner < x->def->nv)
		sx_pack_strn(&pk, x->def->v[x->winner].name, x->def->v[x->winner].nlen);
	else
		msgpack_pack_nil(&pk);
	sx_pack_key(&pk, "reasons");
	pack_reasons(&pk, x->reasons, x->nreasons);
	sx_pack_kv_bool(&pk, "rollout", x->rollout);
	sx_pack_key(&pk, "script");
	pack_nstr(&pk, x->script);
	sx_pack_kv_bool(&pk, "lua_targeting", x->lua_targeting);
	int rc = sb.data ? sx_store_put(eng->store, SX_T_EXPERIMENTS, k, dkey(k, x), sb.data, sb.size)
			 : sx_diag_set(SX_ENOMEM, "out of memory");
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int save_version(struct xp *x, const struct xp_def *d, uint32_t version, const char *who, const char *origin)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t k[8 + XP_KEY_MAX];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	sx_pack_key(&pk, "definition");
	pk.callback(pk.data, d->packed, d->packed_len);
	sx_pack_kv_int(&pk, "created", sx_wall_ms());
	sx_pack_kv_str(&pk, "by", who);
	sx_pack_kv_str(&pk, "origin", origin);
	int rc = sb.data ? sx_store_put(eng->store, SX_T_EXPERIMENTS, k, vkey(k, x->key, x->klen, version), sb.data, sb.size)
			 : sx_diag_set(SX_ENOMEM, "out of memory");
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* Older data dirs kept the trail under this prefix in the audit table. */
#define AUDIT_PREFIX "experiment/"

/* The change goes to the common audit log (audit.query, action
 * "experiment.WHAT") and, under 'a' in the experiments table, to the
 * experiment's own trail (experiment.history); both commit with the change. */
static int audit(const struct xp *x, const char *who, const char *what, const char *detail)
{
	uint8_t k[2 + XP_KEY_MAX + 12];
	size_t n = 1;
	int64_t now = sx_wall_ms();
	char action[SX_AUDIT_ACTION_MAX + 1];
	k[0] = 'a';
	memcpy(k + n, x->key, x->klen);
	n += x->klen;
	k[n++] = 0;
	sx_be64(k + n, (uint64_t)now);
	sx_be32(k + n + 8, audit_seq++);
	n += 12;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 6);
	sx_pack_kv_int(&pk, "when", now);
	sx_pack_kv_str(&pk, "who", who);
	sx_pack_kv_str(&pk, "what", what);
	sx_pack_key(&pk, "key");
	sx_pack_strn(&pk, x->key, x->klen);
	sx_pack_kv_uint(&pk, "version", x->version);
	sx_pack_key(&pk, "detail");
	pack_nstr(&pk, detail);
	snprintf(action, sizeof(action), "experiment.%s", what);
	int rc = sb.data ? sx_store_put(eng->store, SX_T_EXPERIMENTS, k, n, sb.data, sb.size)
			 : sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc == 0)
		rc = sx_audit_record_packed(eng, action, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int state_parse(const msgpack_object *o)
{
	for (int s = XP_DRAFT; s <= XP_CONCLUDED; s++)
		if (sx_obj_streq(o, sx__xp_state_name(s)))
			return s;
	return -1;
}

static int variant_index(const struct xp_def *d, const char *name, size_t len)
{
	for (int i = 0; i < d->nv; i++)
		if (d->v[i].nlen == len && memcmp(d->v[i].name, name, len) == 0)
			return i;
	return -1;
}

/* Reads the definition of (key, version) from the store. */
static struct xp_def *load_def(const char *key, size_t klen, uint32_t version)
{
	uint8_t k[8 + XP_KEY_MAX];
	struct sx_val v;
	msgpack_zone zone;
	msgpack_object o;
	struct xp_def *d = NULL;
	int rc = sx_store_get(eng->store, SX_T_EXPERIMENTS, k, vkey(k, key, klen, version), &v);
	if (rc < 0) {
		sx_diag_set(rc == SX_ENOENT ? SX_ENOENT : rc, "experiment %.*s has no version %u", (int)klen, key, version);
		return NULL;
	}
	if (!msgpack_zone_init(&zone, 1024)) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if (sx_frame_decode(v.data, v.len, &zone, &o) < 0 || !sx_arg(&o, "definition"))
		sx_diag_set(SX_ECORRUPT, "experiment %.*s version %u is malformed", (int)klen, key, version);
	else
		d = sx__xp_def_parse(sx_arg(&o, "definition"), key, klen);
	msgpack_zone_destroy(&zone);
	return d;
}

struct load_ud {
	char (*keys)[XP_KEY_MAX + 1];
	size_t n, cap;
};

static int load_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct load_ud *u = ud;
	SX_UNUSED(v);
	if (k->len < 2 || k->len > 1 + XP_KEY_MAX)
		return 0;
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		void *n = realloc(u->keys, cap * sizeof(*u->keys));
		if (!n)
			return SX_ENOMEM;
		u->keys = n;
		u->cap = cap;
	}
	memcpy(u->keys[u->n], (const char *)k->data + 1, k->len - 1);
	u->keys[u->n][k->len - 1] = 0;
	u->n++;
	return 0;
}

static int load_one(const char *key)
{
	uint8_t k[1 + XP_KEY_MAX];
	struct sx_val v;
	msgpack_zone zone;
	msgpack_object o;
	size_t klen = strlen(key);
	k[0] = 'd';
	memcpy(k + 1, key, klen);
	int rc = sx_store_get(eng->store, SX_T_EXPERIMENTS, k, 1 + klen, &v);
	if (rc < 0)
		return rc;
	if (!msgpack_zone_init(&zone, 1024))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	struct xp *x = calloc(1, sizeof(*x));
	rc = x ? 0 : sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc == 0 && (sx_frame_decode(v.data, v.len, &zone, &o) < 0 || o.type != MSGPACK_OBJECT_MAP))
		rc = sx_diag_set(SX_ECORRUPT, "experiment %s: malformed record", key);
	if (rc == 0) {
		int64_t ver = 0;
		int b = 0;
		const msgpack_object *st = sx_arg(&o, "state"), *w = sx_arg(&o, "winner"), *r = sx_arg(&o, "reasons"),
				     *sc = sx_arg(&o, "script");
		memcpy(x->key, key, klen + 1);
		x->klen = klen;
		sx_arg_int(&o, "version", 0, &ver);
		x->version = (uint32_t)ver;
		x->state = st ? state_parse(st) : -1;
		sx_arg_int(&o, "created", 0, &x->created);
		sx_arg_int(&o, "updated", 0, &x->updated);
		sx_arg_int(&o, "started_at", 0, &x->started_at);
		sx_arg_int(&o, "stopped_at", 0, &x->stopped_at);
		sx_arg_int(&o, "concluded_at", 0, &x->concluded_at);
		sx_arg_bool(&o, "rollout", 0, &b);
		x->rollout = b;
		sx_arg_bool(&o, "lua_targeting", 0, &x->lua_targeting);
		if (sc && sc->type == MSGPACK_OBJECT_STR && sc->via.str.size <= XP_NAME_MAX)
			snprintf(x->script, sizeof(x->script), "%.*s", (int)sc->via.str.size, sc->via.str.ptr);
		if (r && r->type == MSGPACK_OBJECT_ARRAY)
			for (uint32_t i = 0; i < r->via.array.size && x->nreasons < XP_REASONS_MAX; i++)
				if (r->via.array.ptr[i].type == MSGPACK_OBJECT_STR)
					snprintf(x->reasons[x->nreasons++], 200, "%.*s", (int)r->via.array.ptr[i].via.str.size,
						 r->via.array.ptr[i].via.str.ptr);
		if (x->state < 0 || x->version < 1)
			rc = sx_diag_set(SX_ECORRUPT, "experiment %s: malformed record", key);
		struct xp_def *d = rc == 0 ? load_def(key, klen, x->version) : NULL;
		if (rc == 0 && !d)
			rc = sx_diag_last_code() ? sx_diag_last_code() : SX_ECORRUPT;
		if (d) {
			set_def(x, d);
			x->winner = w && w->type == MSGPACK_OBJECT_STR ? variant_index(d, w->via.str.ptr, w->via.str.size) : -1;
			rc = sx__xp_counters_check(x);
		}
	}
	msgpack_zone_destroy(&zone);
	if (rc == 0)
		rc = insert(x);
	if (rc < 0)
		xp_free(x);
	return rc;
}

/* ---- packing ---- */

static void pack_variant_name(msgpack_packer *pk, const struct xp *x, int v)
{
	if (v >= 0 && v < x->def->nv)
		sx_pack_strn(pk, x->def->v[v].name, x->def->v[v].nlen);
	else
		msgpack_pack_nil(pk);
}

static void pack_get(const struct xp *x, const struct xp_def *d, uint32_t version, msgpack_packer *pk)
{
	msgpack_pack_map(pk, 16);
	sx_pack_key(pk, "key");
	sx_pack_strn(pk, x->key, x->klen);
	sx_pack_kv_uint(pk, "version", version);
	sx_pack_kv_uint(pk, "current_version", x->version);
	sx_pack_kv_str(pk, "state", sx__xp_state_name(x->state));
	sx_pack_key(pk, "definition");
	pk->callback(pk->data, d->packed, d->packed_len);
	sx_pack_kv_int(pk, "created", x->created);
	sx_pack_kv_int(pk, "updated", x->updated);
	sx_pack_key(pk, "started_at");
	x->started_at ? msgpack_pack_int64(pk, x->started_at) : msgpack_pack_nil(pk);
	sx_pack_key(pk, "stopped_at");
	x->stopped_at ? msgpack_pack_int64(pk, x->stopped_at) : msgpack_pack_nil(pk);
	sx_pack_key(pk, "concluded_at");
	x->concluded_at ? msgpack_pack_int64(pk, x->concluded_at) : msgpack_pack_nil(pk);
	sx_pack_key(pk, "winner");
	pack_variant_name(pk, x, x->winner);
	sx_pack_key(pk, "reasons");
	pack_reasons(pk, (char(*)[200])x->reasons, x->nreasons);
	sx_pack_kv_bool(pk, "rollout", x->rollout);
	sx_pack_key(pk, "script");
	pack_nstr(pk, x->script);
	sx_pack_kv_str(pk, "targeting_kind", x->lua_targeting ? "lua" : x->def->targeting ? "conditions" : "everyone");
	sx_pack_key(pk, "allocation");
	msgpack_pack_map(pk, (uint32_t)x->def->nv);
	for (int i = 0; i < x->def->nv; i++) {
		sx_pack_strn(pk, x->def->v[i].name, x->def->v[i].nlen);
		msgpack_pack_double(pk, x->alloc[i]);
	}
}

/* ---- changes ---- */

static int who_of(const struct sx_req *req, char *buf, size_t size)
{
	snprintf(buf, size, "%s", req ? sx_role_name(req->role) : "system");
	return 0;
}

/* Checks that a new definition keeps the variants users may hold. */
static int compatible(const struct xp *x, const struct xp_def *d)
{
	if (!x->started_at)
		return 0;
	if (d->nv < x->def->nv)
		return sx_diag_set(SX_ESTATE, "experiment %s has started: variants can change weight and payload, "
					      "and new ones can be added at the end, but none can be removed", x->key);
	for (int i = 0; i < x->def->nv; i++)
		if (d->v[i].nlen != x->def->v[i].nlen || memcmp(d->v[i].name, x->def->v[i].name, d->v[i].nlen) != 0)
			return sx_diag_set(SX_ESTATE, "experiment %s has started: variant %d must stay '%.*s'", x->key,
					   i + 1, (int)x->def->v[i].nlen, x->def->v[i].name);
	return 0;
}

/* Makes d (owned on success) a new version of x. */
static int new_version(struct xp *x, struct xp_def *d, const char *who, const char *origin)
{
	int rc;
	if (d->packed_len == x->def->packed_len && memcmp(d->packed, x->def->packed, d->packed_len) == 0) {
		sx__xp_def_free(d);
		return 0;
	}
	if ((rc = compatible(x, d)) < 0)
		return rc;
	uint32_t old = x->version;
	int64_t old_updated = x->updated;
	uint64_t sp = sx_store_savepoint(eng->store);
	x->version = old + 1;
	x->updated = sx_wall_ms();
	/* the version, the state, the audit entries and (for other metrics) the
	 * rebuilt counters go in one batch, or none of them */
	if ((rc = save_version(x, d, x->version, who, origin)) < 0 || (rc = save_state(x)) < 0 ||
	    (rc = audit(x, who, "update", origin)) < 0 ||
	    (x->started_at && sx__xp_spec(d) != x->spec && (rc = sx__xp_rebuild(x, d)) < 0)) {
		sx_store_rollback(eng->store, sp);
		x->version = old;
		x->updated = old_updated;
		return rc;
	}
	set_def(x, d);
	return 0;
}

static struct xp *create(struct xp_def *d, const char *who, const char *origin, const char *script, int lua_targeting,
			 int autostart)
{
	struct xp *x = calloc(1, sizeof(*x));
	if (!x) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(x->key, d->key, d->klen);
	x->klen = d->klen;
	x->version = 1;
	x->state = autostart ? XP_RUNNING : XP_DRAFT;
	x->created = x->updated = sx_wall_ms();
	x->started_at = autostart ? x->created : 0;
	x->winner = -1;
	x->lua_targeting = lua_targeting;
	snprintf(x->script, sizeof(x->script), "%s", script ? script : "");
	x->def = d;
	int rc;
	if ((rc = save_version(x, d, 1, who, origin)) < 0 || (rc = save_state(x)) < 0 ||
	    (rc = audit(x, who, "create", origin)) < 0 || (autostart && (rc = audit(x, who, "start", origin)) < 0) ||
	    (rc = insert(x)) < 0) {
		x->def = NULL;
		xp_free(x);
		return NULL;
	}
	x->def = NULL;
	set_def(x, d);
	return x;
}

static void publish(const struct xp *x, const char *event)
{
	if (!eng->srv)
		return;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char topic[16 + XP_KEY_MAX];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 6);
	sx_pack_kv_str(&pk, "event", event);
	sx_pack_key(&pk, "key");
	sx_pack_strn(&pk, x->key, x->klen);
	sx_pack_kv_str(&pk, "state", sx__xp_state_name(x->state));
	sx_pack_key(&pk, "winner");
	pack_variant_name(&pk, x, x->winner);
	sx_pack_key(&pk, "reasons");
	pack_reasons(&pk, (char(*)[200])x->reasons, x->nreasons);
	sx_pack_kv_bool(&pk, "rollout", x->rollout);
	if (sb.data) {
		snprintf(topic, sizeof(topic), "experiment.%s", x->key);
		sx_server_publish(eng->srv, topic, sb.data, sb.size);
		sx_server_publish(eng->srv, "experiments", sb.data, sb.size);
	}
	msgpack_sbuffer_destroy(&sb);
}

/* Moves x to state `to`; reasons (may be NULL) replace the stored ones. */
static int transition(struct xp *x, int to, int winner, char (*reasons)[200], int nreasons, const char *who,
		      const char *what)
{
	struct xp saved;
	int64_t now = sx_wall_ms();
	int first_start = to == XP_RUNNING && !x->started_at;
	uint64_t sp = sx_store_savepoint(eng->store);
	memcpy(&saved, x, offsetof(struct xp, ms));
	x->state = to;
	x->updated = now;
	if (first_start)
		x->started_at = now;
	if (to == XP_STOPPED)
		x->stopped_at = now;
	if (to == XP_CONCLUDED) {
		x->concluded_at = now;
		x->winner = winner;
		x->rollout = winner >= 0 && x->def->rollout;
	}
	if (reasons) {
		x->nreasons = nreasons;
		for (int i = 0; i < nreasons; i++)
			memcpy(x->reasons[i], reasons[i], 200);
	}
	char detail[400] = "";
	for (int i = 0; i < x->nreasons && reasons; i++)
		snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail), "%s%s", i ? "; " : "", x->reasons[i]);
	int rc;
	if ((rc = save_state(x)) < 0 || (rc = audit(x, who, what, detail[0] ? detail : NULL)) < 0 ||
	    (first_start && (rc = sx__xp_counters_init(x)) < 0)) {
		sx_store_rollback(eng->store, sp);
		memcpy(x, &saved, offsetof(struct xp, ms));
		return rc;
	}
	if (to == XP_CONCLUDED || to == XP_STOPPED)
		publish(x, to == XP_CONCLUDED ? "concluded" : "stopped");
	return 0;
}

/* ---- assignment ---- */

struct user_ctx {
	const char *id; /* as stored: the client's id through sx_privacy_user_id */
	size_t len;
	const msgpack_object *context;
	int loaded;
	msgpack_object attrs; /* nil type if none */
	msgpack_zone *zone;
	char pbuf[SX_PRIVACY_ID_BUF];
};

static int load_attrs(struct user_ctx *u)
{
	if (u->loaded)
		return 0;
	u->loaded = 1;
	u->attrs.type = MSGPACK_OBJECT_NIL;
	const void *rec;
	size_t len;
	int rc = sx_events_user_record(NULL, u->id, u->len, &rec, &len);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	msgpack_object o;
	if (sx_frame_decode(rec, len, u->zone, &o) < 0)
		return sx_diag_set(SX_ECORRUPT, "user %.*s: malformed record", (int)u->len, u->id);
	const msgpack_object *a = sx_arg(&o, "attributes");
	if (a && a->type == MSGPACK_OBJECT_MAP)
		u->attrs = *a;
	return 0;
}

static int cohort_cb(const char *name, size_t len, const char *user, size_t ulen, void *ud)
{
	uint32_t idx;
	SX_UNUSED(ud);
	if (sx_events_user_index(NULL, user, ulen, &idx) < 0)
		return 0;
	roaring_bitmap_t *b = sx_events_cohort_users(NULL, name, len);
	if (!b)
		return sx_diag_last_code() == SX_ENOENT ? 0 : sx_diag_last_code();
	int r = roaring_bitmap_contains(b, idx);
	roaring_bitmap_free(b);
	return r;
}

struct lua_target_args {
	const struct user_ctx *u;
};

static int lua_target_build(lua_State *L)
{
	struct lua_target_args *a = lua_touserdata(L, -1);
	lua_pop(L, 1);
	lua_createtable(L, 0, 2);
	lua_pushlstring(L, a->u->id, a->u->len);
	lua_setfield(L, -2, "id");
	if (a->u->attrs.type == MSGPACK_OBJECT_MAP)
		sx_lua_push_object(L, &a->u->attrs);
	else
		lua_newtable(L);
	lua_setfield(L, -2, "attributes");
	if (a->u->context)
		sx_lua_push_object(L, a->u->context);
	else
		lua_newtable(L);
	lua_call(L, 2, 1);
	return 1;
}

static int lua_target(const struct xp *x, struct user_ctx *u)
{
	lua_State *L = sx_lua_state(eng->lua);
	int top = lua_gettop(L), rc;
	if (!lua_checkstack(L, 8))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	if (sx_lua_in_call(eng->lua))
		return sx_diag_set(SX_ESTATE, "experiment targeting cannot run inside another script");
	lua_pushcfunction(L, lua_target_build);
	if ((rc = sx_scripts_push(eng->scripts, "experiments", x->script)) < 0) {
		lua_settop(L, top);
		return rc;
	}
	lua_getfield(L, -1, "targeting");
	lua_remove(L, -2);
	if (!lua_isfunction(L, -1)) {
		lua_settop(L, top);
		return 1;
	}
	struct lua_target_args a = {u};
	lua_pushlightuserdata(L, &a);
	if ((rc = sx_lua_call(eng->lua, 2, 1)) < 0) {
		lua_settop(L, top);
		return rc;
	}
	int r = lua_toboolean(L, -1);
	lua_settop(L, top);
	return r;
}

static size_t expkey(uint8_t *k, const struct xp *x, const char *user, size_t ulen)
{
	memcpy(k, x->key, x->klen);
	k[x->klen] = 0;
	memcpy(k + x->klen + 1, user, ulen);
	return x->klen + 1 + ulen;
}

/* The stored assignment of user in x: its variant index, or SX_ENOENT. */
static int sticky(const struct xp *x, const char *user, size_t ulen, msgpack_zone *zone)
{
	uint8_t k[XP_KEY_MAX + 1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	msgpack_object o;
	int rc = sx_store_get(eng->store, SX_T_EXPOSURES, k, expkey(k, x, user, ulen), &v);
	if (rc < 0)
		return rc;
	if (sx_frame_decode(v.data, v.len, zone, &o) < 0 || o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 1 ||
	    o.via.array.ptr[0].type != MSGPACK_OBJECT_STR)
		return sx_diag_set(SX_ECORRUPT, "exposure of %.*s in %s is malformed", (int)ulen, user, x->key);
	int vi = variant_index(x->def, o.via.array.ptr[0].via.str.ptr, o.via.array.ptr[0].via.str.size);
	return vi >= 0 ? vi : sx_diag_set(SX_ECORRUPT, "exposure of %.*s in %s names an unknown variant", (int)ulen, user, x->key);
}

/* Running experiments of layer `layer` in key order. */
static int layer_members(const struct xp_def *d, struct xp **out, int max)
{
	int n = 0;
	for (size_t i = 0; i < nxps && n < max; i++) {
		struct xp *y = xps[i];
		if (y->state == XP_RUNNING && y->def->layer && y->def->llen == d->llen &&
		    memcmp(y->def->layer, d->layer, d->llen) == 0)
			out[n++] = y;
	}
	return n;
}

enum { R_NONE, R_NOT_RUNNING, R_NOT_TARGETED, R_OUTSIDE, R_HOLDOUT, R_LAYER, R_NO_CONSENT };
static const char *const reason_names[] = {"",        "not_running", "not_targeted", "outside_traffic",
					   "holdout", "layer",       "no_consent"};

struct answer {
	int variant; /* >= 0: enrolled */
	int reason;
	int fresh;   /* this call logged the exposure */
	int rollout;
};

static int assign(struct xp *x, struct user_ctx *u, struct answer *a)
{
	int rc;
	memset(a, 0, sizeof(*a));
	a->variant = -1;
	if (x->state == XP_CONCLUDED && x->rollout && x->winner >= 0) {
		a->variant = x->winner;
		a->rollout = 1;
		return 0;
	}
	if (x->state != XP_RUNNING) {
		a->reason = R_NOT_RUNNING;
		return 0;
	}
	/* Before the sticky lookup: a user who withdraws consent leaves every
	 * experiment, and no exposure is logged for them. */
	if (!sx_privacy_allowed(u->id, u->len, SX_PURPOSE_EXPERIMENTS)) {
		a->reason = R_NO_CONSENT;
		return 0;
	}
	const struct xp_def *d = x->def;
	rc = sticky(x, u->id, u->len, u->zone);
	if (rc >= 0) {
		a->variant = rc;
		return 0;
	}
	if (rc != SX_ENOENT)
		return rc;
	if (d->layer) {
		struct xp *members[64];
		int n = layer_members(d, members, 64);
		if (n > 0 && members[sx__xp_layer_slot(d->layer, d->llen, u->id, u->len, n)] != x) {
			a->reason = R_LAYER;
			return 0;
		}
		for (int i = 0; i < n; i++) {
			if (members[i] == x)
				continue;
			rc = sticky(members[i], u->id, u->len, u->zone);
			if (rc >= 0) {
				a->reason = R_LAYER;
				return 0;
			}
			if (rc != SX_ENOENT)
				return rc;
		}
	}
	if (d->targeting || x->lua_targeting) {
		if ((rc = load_attrs(u)) < 0)
			return rc;
		const msgpack_object *attrs = u->attrs.type == MSGPACK_OBJECT_MAP ? &u->attrs : NULL;
		if (d->targeting &&
		    (rc = sx__xp_target(d->targeting, u->id, u->len, attrs, u->context, cohort_cb, NULL)) <= 0) {
			if (rc < 0)
				return rc;
			a->reason = R_NOT_TARGETED;
			return 0;
		}
		if (x->lua_targeting && (rc = lua_target(x, u)) <= 0) {
			if (rc < 0)
				return rc;
			a->reason = R_NOT_TARGETED;
			return 0;
		}
	}
	if (d->holdout > 0 &&
	    sx__xp_bucket(d->salt, d->slen, u->id, u->len, XP_SEED_HOLDOUT) < (uint32_t)floor(d->holdout * XP_BUCKETS + 0.5)) {
		a->reason = R_HOLDOUT;
		return 0;
	}
	if (sx__xp_bucket(d->salt, d->slen, u->id, u->len, XP_SEED_TRAFFIC) >= (uint32_t)floor(d->traffic * XP_BUCKETS + 0.5)) {
		a->reason = R_OUTSIDE;
		return 0;
	}
	double w[XP_VARIANTS_MAX];
	for (int i = 0; i < d->nv; i++)
		w[i] = d->thompson ? x->alloc[i] : d->v[i].weight;
	int v = sx__xp_pick(w, d->nv, sx__xp_bucket(d->salt, d->slen, u->id, u->len, XP_SEED_VARIANT));
	/* first assignment: the exposure, which is also the sticky assignment */
	if ((rc = sx__xp_expose(x, u->id, u->len, v, sx_wall_ms())) < 0)
		return rc;
	x->exposures++;
	a->variant = v;
	a->fresh = 1;
	return 0;
}

static void pack_answer(msgpack_packer *pk, const struct xp *x, const struct answer *a, int with_key)
{
	if (a->variant >= 0) {
		msgpack_pack_map(pk, 5 + with_key);
		if (with_key) {
			sx_pack_key(pk, "key");
			sx_pack_strn(pk, x->key, x->klen);
		}
		sx_pack_kv_bool(pk, "enrolled", 1);
		sx_pack_key(pk, "variant");
		pack_variant_name(pk, x, a->variant);
		sx_pack_key(pk, "payload");
		if (x->def->v[a->variant].payload)
			sx_pack_object(pk, x->def->v[a->variant].payload);
		else
			msgpack_pack_nil(pk);
		sx_pack_kv_bool(pk, "first", a->fresh);
		sx_pack_kv_bool(pk, "rollout", a->rollout);
		return;
	}
	msgpack_pack_map(pk, 2 + with_key);
	if (with_key) {
		sx_pack_key(pk, "key");
		sx_pack_strn(pk, x->key, x->klen);
	}
	sx_pack_kv_bool(pk, "enrolled", 0);
	sx_pack_kv_str(pk, "reason", reason_names[a->reason]);
}

static int user_arg(const msgpack_object *args, struct user_ctx *u, struct sx_req *req)
{
	int rc;
	memset(u, 0, sizeof(*u));
	if ((rc = sx_arg_str(args, "user", 1, &u->id, &u->len)) < 0)
		return rc;
	if (u->len < 1 || u->len > SX_EVENTS_ID_MAX || memchr(u->id, 0, u->len) || !sx_utf8_valid(u->id, u->len))
		return sx_diag_set(SX_EINVAL, "argument 'user' must be a user id of 1 to %d bytes of UTF-8",
				   SX_EVENTS_ID_MAX);
	u->id = sx_privacy_user_id(u->id, u->len, u->pbuf, &u->len);
	const msgpack_object *c = NULL;
	if ((rc = sx_arg_map(args, "context", 0, &c)) < 0)
		return rc;
	u->context = c;
	u->zone = &req->zone;
	return 0;
}

/* ---- privacy ---- */

/* The user's exposures (sticky assignments) in every experiment, and their
 * share of the counters. */
static int erase_user(const char *id, size_t len, uint32_t idx, int has_idx, struct sx_privacy_receipt *r, void *ud)
{
	SX_UNUSED(idx), SX_UNUSED(has_idx), SX_UNUSED(ud);
	uint64_t n = 0;
	if (len > SX_EVENTS_ID_MAX)
		return 0;
	for (size_t i = 0; i < nxps; i++) {
		int found;
		int rc = sx__xp_unexpose(xps[i], id, len, &found);
		if (rc < 0)
			return rc;
		if (found && xps[i]->exposures)
			xps[i]->exposures--;
		n += (uint64_t)found;
	}
	if (n)
		sx_privacy_receipt_add(r, "exposures", n);
	return 0;
}

static int export_user(const char *id, size_t len, uint32_t idx, int has_idx, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(idx), SX_UNUSED(has_idx), SX_UNUSED(ud);
	uint8_t k[XP_KEY_MAX + 1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	msgpack_zone z;
	msgpack_object o;
	uint32_t n = 0;
	int rc = 0;
	if (len > SX_EVENTS_ID_MAX) {
		msgpack_pack_nil(pk);
		return 0;
	}
	for (int pass = 0; pass < 2 && rc >= 0; pass++) {
		if (pass == 1) {
			if (n == 0)
				break;
			msgpack_pack_map(pk, 1);
			sx_pack_key(pk, "assignments");
			msgpack_pack_array(pk, n);
		}
		for (size_t i = 0; i < nxps && rc >= 0; i++) {
			rc = sx_store_get(eng->store, SX_T_EXPOSURES, k, expkey(k, xps[i], id, len), &v);
			if (rc == SX_ENOENT) {
				rc = 0;
				continue;
			}
			if (rc < 0)
				break;
			if (pass == 0) {
				n++;
				continue;
			}
			msgpack_zone_init(&z, 256);
			int ok = sx_frame_decode(v.data, v.len, &z, &o) == 0 && o.type == MSGPACK_OBJECT_ARRAY &&
				 o.via.array.size >= 3;
			msgpack_pack_map(pk, 4);
			sx_pack_key(pk, "experiment");
			sx_pack_strn(pk, xps[i]->key, xps[i]->klen);
			sx_pack_key(pk, "variant");
			if (ok)
				sx_pack_object(pk, &o.via.array.ptr[0]);
			else
				msgpack_pack_nil(pk);
			sx_pack_key(pk, "time");
			if (ok)
				sx_pack_object(pk, &o.via.array.ptr[1]);
			else
				msgpack_pack_nil(pk);
			sx_pack_key(pk, "version");
			if (ok)
				sx_pack_object(pk, &o.via.array.ptr[2]);
			else
				msgpack_pack_nil(pk);
			msgpack_zone_destroy(&z);
		}
	}
	if (rc >= 0 && n == 0)
		msgpack_pack_nil(pk);
	return rc < 0 ? rc : 0;
}

/* ---- the C API ---- */

int sx_experiments_assign(const char *key, size_t klen, const char *user, size_t ulen, const msgpack_object *context,
			  msgpack_zone *zone, struct sx_experiment_assignment *out)
{
	struct xp *x = sx__xp_find(key, klen);
	struct user_ctx u;
	struct answer a;
	if (!x)
		return sx_diag_set(SX_ENOENT, "no experiment '%.*s'", (int)klen, key);
	memset(&u, 0, sizeof(u));
	u.context = context;
	u.zone = zone;
	u.id = sx_privacy_user_id(user, ulen, u.pbuf, &u.len);
	int rc = assign(x, &u, &a);
	if (rc < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	out->enrolled = a.variant >= 0;
	out->reason = reason_names[a.reason];
	if (a.variant >= 0) {
		out->variant = x->def->v[a.variant].name;
		out->variant_len = x->def->v[a.variant].nlen;
		out->payload = x->def->v[a.variant].payload;
	}
	return 0;
}

/* ---- methods ---- */

static struct xp *find_arg(const msgpack_object *args)
{
	const char *k;
	size_t n;
	if (sx_arg_str(args, "key", 1, &k, &n) < 0)
		return NULL;
	struct xp *x = sx__xp_find(k, n);
	if (!x)
		sx_diag_set(SX_ENOENT, "no experiment '%.*s'", (int)(n > 64 ? 64 : n), k);
	return x;
}

static int m_create(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	char who[16];
	SX_UNUSED(ud);
	struct xp_def *d = sx__xp_def_parse(args, NULL, 0);
	if (!d)
		return sx_diag_last_code() ? sx_diag_last_code() : SX_EINVAL;
	if (sx__xp_find(d->key, d->klen)) {
		int rc = sx_diag_set(SX_EEXIST, "experiment '%.*s' exists: use experiment.update", (int)d->klen, d->key);
		sx__xp_def_free(d);
		return rc;
	}
	who_of(req, who, sizeof(who));
	struct xp *x = create(d, who, "rpc", NULL, 0, 0);
	if (!x) {
		int rc = sx_diag_last_code();
		sx__xp_def_free(d);
		return rc ? rc : SX_EINTERNAL;
	}
	pack_get(x, x->def, x->version, pk);
	return 0;
}

static int m_update(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	char who[16];
	msgpack_object cur;
	SX_UNUSED(ud);
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if (x->script[0])
		return sx_diag_set(SX_ESTATE, "experiment %s is defined by the script experiments/%s: change the script",
				   x->key, x->script);
	if (x->state == XP_CONCLUDED)
		return sx_diag_set(SX_ESTATE, "experiment %s is concluded", x->key);
	if (sx_frame_decode((const uint8_t *)x->def->packed, x->def->packed_len, &req->zone, &cur) < 0)
		return sx_diag_set(SX_EINTERNAL, "cannot decode the current definition");
	/* The current definition with the given top-level fields replaced. */
	uint32_t n = cur.via.map.size + args->via.map.size;
	msgpack_object_kv *kv = msgpack_zone_malloc(&req->zone, sizeof(*kv) * n);
	if (!kv)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	uint32_t m = 0;
	for (uint32_t i = 0; i < cur.via.map.size; i++) {
		const msgpack_object *k = &cur.via.map.ptr[i].key;
		int given = 0;
		for (uint32_t j = 0; j < args->via.map.size && !given; j++)
			given = args->via.map.ptr[j].key.type == MSGPACK_OBJECT_STR && k->type == MSGPACK_OBJECT_STR &&
				args->via.map.ptr[j].key.via.str.size == k->via.str.size &&
				memcmp(args->via.map.ptr[j].key.via.str.ptr, k->via.str.ptr, k->via.str.size) == 0;
		if (!given)
			kv[m++] = cur.via.map.ptr[i];
	}
	for (uint32_t j = 0; j < args->via.map.size; j++)
		kv[m++] = args->via.map.ptr[j];
	msgpack_object merged = {.type = MSGPACK_OBJECT_MAP, .via.map = {m, kv}};
	struct xp_def *d = sx__xp_def_parse(&merged, x->key, x->klen);
	if (!d)
		return sx_diag_last_code() ? sx_diag_last_code() : SX_EINVAL;
	who_of(req, who, sizeof(who));
	int rc = new_version(x, d, who, "rpc");
	if (rc < 0) {
		sx__xp_def_free(d);
		return rc;
	}
	pack_get(x, x->def, x->version, pk);
	return 0;
}

enum { A_START, A_PAUSE, A_STOP, A_CONCLUDE };

static int m_life(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", "reason", NULL};
	static const char *const known_c[] = {"key", "reason", "winner", NULL};
	int action = (int)(intptr_t)ud, rc;
	char who[16], reasons[1][200];
	const char *reason = NULL;
	size_t rlen = 0;
	if ((rc = sx_arg_only(args, action == A_CONCLUDE ? known_c : known)) < 0 ||
	    (rc = sx_arg_str(args, "reason", 0, &reason, &rlen)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	who_of(req, who, sizeof(who));
	int s = x->state, winner = -1;
	if (reason)
		snprintf(reasons[0], 200, "%.*s", (int)(rlen > 199 ? 199 : rlen), reason);
	switch (action) {
	case A_START:
		if (s != XP_DRAFT && s != XP_PAUSED)
			return sx_diag_set(SX_ESTATE, "experiment %s is %s: only a draft or paused one can start", x->key,
					   sx__xp_state_name(s));
		rc = transition(x, XP_RUNNING, -1, NULL, 0, who, "start");
		break;
	case A_PAUSE:
		if (s != XP_RUNNING)
			return sx_diag_set(SX_ESTATE, "experiment %s is %s: only a running one can pause", x->key,
					   sx__xp_state_name(s));
		rc = transition(x, XP_PAUSED, -1, NULL, 0, who, "pause");
		break;
	case A_STOP:
		if (s != XP_RUNNING && s != XP_PAUSED)
			return sx_diag_set(SX_ESTATE, "experiment %s is %s: only a running or paused one can stop", x->key,
					   sx__xp_state_name(s));
		rc = transition(x, XP_STOPPED, -1, reason ? reasons : NULL, reason != NULL, who, "stop");
		break;
	default: {
		const char *w;
		size_t wlen;
		if ((rc = sx_arg_str(args, "winner", 1, &w, &wlen)) < 0)
			return rc;
		if ((winner = variant_index(x->def, w, wlen)) < 0)
			return sx_diag_set(SX_EINVAL, "argument 'winner': experiment %s has no variant '%.*s'", x->key,
					   (int)(wlen > 64 ? 64 : wlen), w);
		if (s != XP_RUNNING && s != XP_PAUSED && s != XP_STOPPED)
			return sx_diag_set(SX_ESTATE, "experiment %s is %s: only a started one can conclude", x->key,
					   sx__xp_state_name(s));
		if (!reason)
			snprintf(reasons[0], 200, "concluded by hand");
		rc = transition(x, XP_CONCLUDED, winner, reasons, 1, who, "conclude");
	}
	}
	if (rc < 0)
		return rc;
	pack_get(x, x->def, x->version, pk);
	return 0;
}

static int m_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", "version", NULL};
	int64_t version = 0;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "version", 0, &version)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if (!version || version == x->version) {
		pack_get(x, x->def, x->version, pk);
		return 0;
	}
	if (version < 1 || version > x->version)
		return sx_diag_set(SX_ENOENT, "experiment %s has no version %lld", x->key, (long long)version);
	struct xp_def *d = load_def(x->key, x->klen, (uint32_t)version);
	if (!d)
		return sx_diag_last_code();
	pack_get(x, d, (uint32_t)version, pk);
	sx__xp_def_free(d);
	return 0;
}

static int m_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"state", NULL};
	int rc, want = -1;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	const msgpack_object *st = sx_arg(args, "state");
	if (st && (want = state_parse(st)) < 0)
		return sx_diag_set(SX_EINVAL, "argument 'state' must be draft|running|paused|stopped|concluded");
	uint32_t n = 0;
	for (size_t i = 0; i < nxps; i++)
		n += want < 0 || xps[i]->state == want;
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < nxps; i++) {
		struct xp *x = xps[i];
		if (want >= 0 && x->state != want)
			continue;
		msgpack_pack_map(pk, 9);
		sx_pack_key(pk, "key");
		sx_pack_strn(pk, x->key, x->klen);
		sx_pack_kv_uint(pk, "version", x->version);
		sx_pack_kv_str(pk, "state", sx__xp_state_name(x->state));
		sx_pack_key(pk, "description");
		x->def->desc ? sx_pack_strn(pk, x->def->desc, x->def->dlen) : msgpack_pack_nil(pk);
		sx_pack_key(pk, "layer");
		x->def->layer ? sx_pack_strn(pk, x->def->layer, x->def->llen) : msgpack_pack_nil(pk);
		sx_pack_key(pk, "variants");
		msgpack_pack_array(pk, (uint32_t)x->def->nv);
		for (int j = 0; j < x->def->nv; j++)
			sx_pack_strn(pk, x->def->v[j].name, x->def->v[j].nlen);
		sx_pack_key(pk, "started_at");
		x->started_at ? msgpack_pack_int64(pk, x->started_at) : msgpack_pack_nil(pk);
		sx_pack_key(pk, "winner");
		pack_variant_name(pk, x, x->winner);
		sx_pack_key(pk, "script");
		pack_nstr(pk, x->script);
	}
	return 0;
}

struct hist_ud {
	msgpack_packer *pk;
	msgpack_sbuffer *sb;
	uint32_t n;
	int versions;
};

static int hist_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct hist_ud *h = ud;
	msgpack_packer pk;
	msgpack_packer_init(&pk, h->sb, msgpack_sbuffer_write);
	if (h->versions) {
		/* {version, created, by, origin} without the definition */
		msgpack_zone zone;
		msgpack_object o;
		if (!msgpack_zone_init(&zone, 512))
			return SX_ENOMEM;
		if (sx_frame_decode(v->data, v->len, &zone, &o) == 0 && o.type == MSGPACK_OBJECT_MAP) {
			msgpack_pack_map(&pk, 4);
			sx_pack_kv_uint(&pk, "version", sx_get_be32((const uint8_t *)k->data + k->len - 4));
			const char *names[] = {"created", "by", "origin"};
			for (int i = 0; i < 3; i++) {
				sx_pack_key(&pk, names[i]);
				const msgpack_object *f = sx_arg(&o, names[i]);
				f ? sx_pack_object(&pk, f) : msgpack_pack_nil(&pk);
			}
			h->n++;
		}
		msgpack_zone_destroy(&zone);
		return 0;
	}
	msgpack_sbuffer_write(h->sb, v->data, v->len);
	h->n++;
	return 0;
}

static int m_history(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", NULL};
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	struct hist_ud h = {pk, &sb, 0, 1};
	uint8_t lo[8 + XP_KEY_MAX], hi[8 + XP_KEY_MAX];
	size_t n = vkey(lo, x->key, x->klen, 0);
	vkey(hi, x->key, x->klen, 0);
	hi[1 + x->klen] = 1;
	rc = sx_store_scan(eng->store, SX_T_EXPERIMENTS, lo, n, hi, 2 + x->klen, 0, hist_cb, &h);
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "key");
	sx_pack_strn(pk, x->key, x->klen);
	sx_pack_key(pk, "versions");
	msgpack_pack_array(pk, h.n);
	pk->callback(pk->data, sb.data ? sb.data : "", sb.size);
	sb.size = 0;
	h.n = 0;
	h.versions = 0;
	uint8_t alo[sizeof(AUDIT_PREFIX) + XP_KEY_MAX + 1], ahi[sizeof(AUDIT_PREFIX) + XP_KEY_MAX + 1];
	size_t an = sizeof(AUDIT_PREFIX) - 1;
	memcpy(alo, AUDIT_PREFIX, an);
	memcpy(alo + an, x->key, x->klen);
	an += x->klen;
	memcpy(ahi, alo, an);
	alo[an] = 0;
	ahi[an] = 1;
	if (rc >= 0)
		rc = sx_store_scan(eng->store, SX_T_AUDIT, alo, an + 1, ahi, an + 1, 0, hist_cb, &h);
	uint8_t tlo[2 + XP_KEY_MAX], thi[2 + XP_KEY_MAX];
	tlo[0] = thi[0] = 'a';
	memcpy(tlo + 1, x->key, x->klen);
	memcpy(thi + 1, x->key, x->klen);
	tlo[1 + x->klen] = 0;
	thi[1 + x->klen] = 1;
	if (rc >= 0)
		rc = sx_store_scan(eng->store, SX_T_EXPERIMENTS, tlo, 2 + x->klen, thi, 2 + x->klen, 0, hist_cb, &h);
	sx_pack_key(pk, "audit");
	msgpack_pack_array(pk, h.n);
	pk->callback(pk->data, sb.data ? sb.data : "", sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc < 0 ? rc : 0;
}

static int m_assign(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", "user", "context", NULL};
	struct user_ctx u;
	struct answer a;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, &u, req)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if ((rc = assign(x, &u, &a)) < 0)
		return rc;
	pack_answer(pk, x, &a, 1);
	return 0;
}

static int m_assign_all(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "context", NULL};
	struct user_ctx u;
	struct answer a;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, &u, req)) < 0)
		return rc;
	uint32_t n = 0;
	for (size_t i = 0; i < nxps; i++)
		n += xps[i]->state == XP_RUNNING || (xps[i]->state == XP_CONCLUDED && xps[i]->rollout);
	msgpack_pack_map(pk, n);
	for (size_t i = 0; i < nxps; i++) {
		struct xp *x = xps[i];
		if (!(x->state == XP_RUNNING || (x->state == XP_CONCLUDED && x->rollout)))
			continue;
		sx_pack_strn(pk, x->key, x->klen);
		if ((rc = assign(x, &u, &a)) < 0) {
			msgpack_pack_map(pk, 3);
			sx_pack_kv_bool(pk, "enrolled", 0);
			sx_pack_kv_str(pk, "reason", "error");
			sx_pack_kv_str(pk, "error", sx_diag_last());
			continue;
		}
		pack_answer(pk, x, &a, 0);
	}
	return 0;
}

static int m_results(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", "recompute", NULL};
	struct xp_results r;
	int rc, recompute = 0;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_bool(args, "recompute", 0, &recompute)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if ((rc = sx__xp_results(x, 0, recompute, &r)) < 0)
		return rc;
	sx__xp_pack_results(x, &r, pk);
	free(r.days);
	return 0;
}

static int m_report(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", "format", "recompute", NULL};
	struct xp_results r;
	const char *f = "json";
	size_t flen = 4;
	int rc, recompute = 0;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "format", 0, &f, &flen)) < 0 ||
	    (rc = sx_arg_bool(args, "recompute", 0, &recompute)) < 0)
		return rc;
	int csv = flen == 3 && memcmp(f, "csv", 3) == 0, xlsx = flen == 4 && memcmp(f, "xlsx", 4) == 0;
	if (!csv && !xlsx && !(flen == 4 && memcmp(f, "json", 4) == 0))
		return sx_diag_set(SX_EINVAL, "argument 'format' must be json, csv or xlsx");
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if ((rc = sx__xp_results(x, 1, recompute, &r)) < 0)
		return rc;
	if (csv || xlsx) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		if (csv)
			sx__xp_report_csv(x, &r, &sb);
		else
			rc = sx__xp_report_xlsx(x, &r, &sb);
		if (rc == 0) {
			msgpack_pack_map(pk, 3);
			sx_pack_key(pk, "key");
			sx_pack_strn(pk, x->key, x->klen);
			sx_pack_kv_str(pk, "format", csv ? "csv" : "xlsx");
			sx_pack_key(pk, csv ? "csv" : "xlsx");
			if (csv) {
				sx_pack_strn(pk, sb.data ? sb.data : "", sb.size);
			} else {
				msgpack_pack_bin(pk, sb.size);
				msgpack_pack_bin_body(pk, sb.data ? sb.data : "", sb.size);
			}
		}
		msgpack_sbuffer_destroy(&sb);
	} else {
		msgpack_pack_map(pk, 3);
		sx_pack_kv_str(pk, "format", "json");
		sx_pack_key(pk, "results");
		sx__xp_pack_results(x, &r, pk);
		sx_pack_key(pk, "timeline");
		sx__xp_pack_timeline(x, &r, pk);
	}
	free(r.days);
	return rc;
}

static int m_plan(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"baseline", "mde", "mde_kind", "alpha", "power", "sides", "variants",
					    "kind", "sd", "daily_traffic", NULL};
	struct sx_abtest_plan p = {0};
	struct sx_abtest_plan_result out;
	const char *kind = "conversion", *mk = "relative";
	size_t kl = 10, mkl = 8;
	int64_t sides = 2, variants = 2;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	p.alpha = 0.05;
	p.power = 0.8;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_num(args, "baseline", 1, &p.baseline)) < 0 ||
	    (rc = sx_arg_num(args, "mde", 1, &p.mde)) < 0 || (rc = sx_arg_num(args, "alpha", 0, &p.alpha)) < 0 ||
	    (rc = sx_arg_num(args, "power", 0, &p.power)) < 0 || (rc = sx_arg_int(args, "sides", 0, &sides)) < 0 ||
	    (rc = sx_arg_int(args, "variants", 0, &variants)) < 0 || (rc = sx_arg_str(args, "kind", 0, &kind, &kl)) < 0 ||
	    (rc = sx_arg_str(args, "mde_kind", 0, &mk, &mkl)) < 0 || (rc = sx_arg_num(args, "sd", 0, &p.sd)) < 0 ||
	    (rc = sx_arg_num(args, "daily_traffic", 0, &p.daily_traffic)) < 0)
		return rc;
	int means = kl == 4 && memcmp(kind, "mean", 4) == 0;
	if (!means && !(kl == 10 && memcmp(kind, "conversion", 10) == 0))
		return sx_diag_set(SX_EINVAL, "argument 'kind' must be conversion or mean");
	if (mkl == 8 && memcmp(mk, "absolute", 8) == 0)
		p.mde_kind = SX_ABTEST_MDE_ABSOLUTE;
	else if (mkl == 8 && memcmp(mk, "relative", 8) == 0)
		p.mde_kind = SX_ABTEST_MDE_RELATIVE;
	else
		return sx_diag_set(SX_EINVAL, "argument 'mde_kind' must be relative or absolute");
	if (sides != 1 && sides != 2)
		return sx_diag_set(SX_EINVAL, "argument 'sides' must be 1 or 2");
	if (variants < 2 || variants > XP_VARIANTS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'variants' must be from 2 to %d", XP_VARIANTS_MAX);
	if (means && !sx_arg(args, "sd"))
		return sx_diag_set(SX_EINVAL, "argument 'sd' is required for kind mean");
	if (p.daily_traffic < 0)
		return sx_diag_set(SX_EINVAL, "argument 'daily_traffic' must not be negative");
	p.sides = (int)sides;
	p.variants = (int)variants;
	rc = means ? sx_abtest_plan_means(&p, &out) : sx_abtest_plan_props(&p, &out);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 7);
	sx_pack_kv_double(pk, "n_per_variant", out.n_per_arm_ceil);
	sx_pack_kv_double(pk, "n_per_variant_exact", out.n_per_arm);
	sx_pack_kv_double(pk, "n_total", out.n_total);
	sx_pack_key(pk, "days");
	p.daily_traffic > 0 ? msgpack_pack_double(pk, out.days) : msgpack_pack_nil(pk);
	sx_pack_kv_double(pk, "alpha_per_test", out.alpha_per_test);
	sx_pack_kv_double(pk, "diff", out.diff);
	sx_pack_kv_str(pk, "kind", means ? "mean" : "conversion");
	return 0;
}

static int m_subscribe(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"key", NULL};
	char topic[16 + XP_KEY_MAX];
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	struct xp *x = find_arg(args);
	if (!x)
		return sx_diag_last_code();
	if (!req->conn)
		return sx_diag_set(SX_ECANCELED, "connection closed");
	snprintf(topic, sizeof(topic), "experiment.%s", x->key);
	if ((rc = sx_server_subscribe(eng->srv, req->conn, topic)) < 0)
		return rc;
	x->subscribed = 1;
	x->pushed_hash = 0;
	msgpack_pack_map(pk, 1);
	sx_pack_kv_str(pk, "subscribed", topic);
	return 0;
}

/* ---- monitor ---- */

static uint64_t hash_results(struct xp *x, struct xp_results *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int64_t at = r->computed_at;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	r->computed_at = 0;
	sx__xp_pack_results(x, r, &pk);
	r->computed_at = at;
	uint64_t h = XXH3_64bits(sb.data ? sb.data : "", sb.size) | 1;
	msgpack_sbuffer_destroy(&sb);
	return h;
}

static void monitor_one(struct xp *x, uint64_t now)
{
	const struct xp_def *d = x->def;
	int decide = d->rule == XP_RULE_DEFAULT && d->primary >= 0;
	int stop = d->auto_stop;
	if (!x->subscribed && !decide && !stop && !d->thompson)
		return;
	uint64_t gap = x->eval_cost_ms * 20 > MONITOR_MS ? x->eval_cost_ms * 20 : MONITOR_MS - 50;
	if (x->last_eval_ms && now - x->last_eval_ms < gap)
		return;
	/* Without subscribers, look only when exposures arrived or every 5 s (events may). */
	if (!x->subscribed && x->exposures == x->exposures_seen && x->last_eval_ms && now - x->last_eval_ms < 5000)
		return;
	struct xp_results r;
	uint64_t t0 = sx_now_ms();
	if (sx__xp_results(x, 0, 0, &r) < 0) {
		sx_log_warn("experiment %s: results failed: %s", x->key, sx_diag_last());
		x->last_eval_ms = now;
		return;
	}
	x->eval_cost_ms = sx_now_ms() - t0;
	x->last_eval_ms = now;
	x->exposures_seen = x->exposures;
	if (decide && r.winner >= 0 && r.ready) {
		if (transition(x, XP_CONCLUDED, r.winner, r.reasons, r.nreasons, "monitor", "conclude") < 0)
			sx_log_warn("experiment %s: cannot conclude: %s", x->key, sx_diag_last());
		else
			sx_log_info("experiment %s concluded: winner %.*s", x->key, (int)d->v[r.winner].nlen, d->v[r.winner].name);
	} else if (stop && r.stop) {
		if (transition(x, XP_STOPPED, -1, r.reasons, r.nreasons, "monitor", "stop") < 0)
			sx_log_warn("experiment %s: cannot stop: %s", x->key, sx_diag_last());
		else
			sx_log_info("experiment %s stopped automatically: %s", x->key, r.reasons[0]);
	}
	if (x->subscribed) {
		uint64_t h = hash_results(x, &r);
		if (h != x->pushed_hash) {
			msgpack_sbuffer sb;
			msgpack_packer pk;
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			sx__xp_pack_results(x, &r, &pk);
			char topic[16 + XP_KEY_MAX];
			snprintf(topic, sizeof(topic), "experiment.%s", x->key);
			msgpack_sbuffer sb2;
			msgpack_packer pk2;
			msgpack_sbuffer_init(&sb2);
			msgpack_packer_init(&pk2, &sb2, msgpack_sbuffer_write);
			msgpack_pack_map(&pk2, 3);
			sx_pack_kv_str(&pk2, "event", "results");
			sx_pack_key(&pk2, "key");
			sx_pack_strn(&pk2, x->key, x->klen);
			sx_pack_key(&pk2, "results");
			pk2.callback(pk2.data, sb.data ? sb.data : "", sb.size);
			if (sb2.data && sx_server_publish(eng->srv, topic, sb2.data, sb2.size) == 0)
				x->subscribed = 0;
			x->pushed_hash = h;
			msgpack_sbuffer_destroy(&sb);
			msgpack_sbuffer_destroy(&sb2);
		}
	}
	free(r.days);
}

static void monitor_cb(uv_timer_t *t)
{
	SX_UNUSED(t);
	if (!eng->srv)
		return;
	uint64_t now = sx_now_ms();
	for (size_t i = 0; i < nxps; i++)
		if (xps[i]->state == XP_RUNNING)
			monitor_one(xps[i], now);
	sx_store_read_end(eng->store);
}

/* ---- the `experiments` script kind ---- */

struct lua_def {
	msgpack_sbuffer *sb;
	int has_fn;
	int autostart;
	int rc;
};

/* Packs the returned table without its Lua function `targeting` and without `autostart`. */
static int lua_def_pack(lua_State *L)
{
	struct lua_def *a = lua_touserdata(L, 2);
	lua_settop(L, 1);
	lua_newtable(L);
	lua_insert(L, 1); /* 1: the copy, 2: the script's table */
	lua_pushnil(L);
	while (lua_next(L, 2) != 0) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			const char *k = lua_tostring(L, -2);
			if (strcmp(k, "targeting") == 0 && lua_isfunction(L, -1)) {
				a->has_fn = 1;
				lua_pop(L, 1);
				continue;
			}
			if (strcmp(k, "autostart") == 0) {
				a->autostart = lua_toboolean(L, -1);
				lua_pop(L, 1);
				continue;
			}
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, 1);
	}
	msgpack_packer pk;
	msgpack_packer_init(&pk, a->sb, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {16, 1 << 20};
	a->rc = sx_lua_pack(L, 1, &pk, &lim);
	return 0;
}

static struct xp_def *def_of_lua(lua_State *L, int idx, const char *name, int *has_fn, int *autostart)
{
	msgpack_sbuffer sb;
	msgpack_zone zone;
	msgpack_object o;
	struct xp_def *d = NULL;
	if (lua_type(L, idx) != LUA_TTABLE) {
		sx_diag_set(SX_ESCRIPT, "an experiments script returns a table {variants, ...}");
		return NULL;
	}
	msgpack_sbuffer_init(&sb);
	struct lua_def a = {&sb, 0, 0, 0};
	lua_pushcfunction(L, lua_def_pack);
	lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
	lua_pushlightuserdata(L, &a);
	if (lua_pcall(L, 2, 0, 0) != 0) {
		lua_pop(L, 1);
		msgpack_sbuffer_destroy(&sb);
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if (a.rc < 0 || !sb.data) {
		if (a.rc >= 0)
			sx_diag_set(SX_ENOMEM, "out of memory");
		msgpack_sbuffer_destroy(&sb);
		return NULL;
	}
	if (!msgpack_zone_init(&zone, 1024)) {
		msgpack_sbuffer_destroy(&sb);
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if (sx_frame_decode((const uint8_t *)sb.data, sb.size, &zone, &o) == 0)
		d = sx__xp_def_parse(&o, name, strlen(name));
	else
		sx_diag_set(SX_ESCRIPT, "the returned table does not pack");
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sb);
	*has_fn = a.has_fn;
	*autostart = a.autostart;
	return d;
}

/* The last diagnostic again, under another code. */
static int recode(int rc)
{
	char m[512];
	snprintf(m, sizeof(m), "%s", sx_diag_last());
	return sx_diag_set(rc, "%s", m);
}

static int kind_validate(lua_State *L, int value, const char *name, void *ud)
{
	int has_fn, autostart;
	SX_UNUSED(ud);
	if (strlen(name) > XP_KEY_MAX)
		return sx_diag_set(SX_ESCRIPT, "experiment keys have at most %d bytes", XP_KEY_MAX);
	struct xp *x = sx__xp_find(name, strlen(name));
	if (x && strcmp(x->script, name) != 0)
		return sx_diag_set(SX_ESCRIPT, "experiment %s exists and is not defined by a script", name);
	struct xp_def *d = def_of_lua(L, value, name, &has_fn, &autostart);
	if (!d)
		return recode(SX_ESCRIPT);
	int rc = x ? compatible(x, d) : 0;
	sx__xp_def_free(d);
	if (rc < 0)
		return recode(SX_ESCRIPT);
	return 0;
}

static void kind_installed(const char *name, int ref, void *ud)
{
	lua_State *L = sx_lua_state(eng->lua);
	int has_fn, autostart, rc = 0;
	SX_UNUSED(ud);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	struct xp_def *d = def_of_lua(L, -1, name, &has_fn, &autostart);
	lua_pop(L, 1);
	if (!d) {
		sx_log_warn("experiments/%s: %s", name, sx_diag_last());
		return;
	}
	struct xp *x = sx__xp_find(name, strlen(name));
	if (!x) {
		if (!create(d, "script", "script", name, has_fn, autostart)) {
			sx_log_warn("experiments/%s: cannot create: %s", name, sx_diag_last());
			sx__xp_def_free(d);
		}
		return;
	}
	int lua_changed = x->lua_targeting != has_fn;
	x->lua_targeting = has_fn;
	if ((rc = new_version(x, d, "script", "script")) < 0) {
		sx_log_warn("experiments/%s: cannot update: %s", name, sx_diag_last());
		sx__xp_def_free(d);
	}
	if (lua_changed && rc == 0)
		save_state(x);
}

/* ---- plugin ---- */

static void observe_cb(const struct sx_event *ev, void *ud)
{
	SX_UNUSED(ud);
	sx__xp_observe(xps, nxps, ev);
}

static int start(struct sx_engine *e)
{
	int rc;
	eng = e;
	audit_seq = (uint32_t)sx_now_ns();
	struct load_ud u = {0};
	rc = sx_store_scan(e->store, SX_T_EXPERIMENTS, "d", 1, "e", 1, 0, load_cb, &u);
	for (size_t i = 0; rc >= 0 && i < u.n; i++)
		if ((rc = load_one(u.keys[i])) < 0)
			sx_log_error("experiment %s does not load: %s", u.keys[i], sx_diag_last());
	free(u.keys);
	sx_store_read_end(e->store);
	if (rc < 0)
		return rc;
	const struct sx_method methods[] = {
		{"experiment.create", SX_ROLE_WRITER, m_create, NULL, "define an experiment (state draft)"},
		{"experiment.update", SX_ROLE_WRITER, m_update, NULL, "a new version of an experiment's definition"},
		{"experiment.start", SX_ROLE_WRITER, m_life, (void *)(intptr_t)A_START, "start or resume an experiment"},
		{"experiment.pause", SX_ROLE_WRITER, m_life, (void *)(intptr_t)A_PAUSE, "pause a running experiment"},
		{"experiment.stop", SX_ROLE_WRITER, m_life, (void *)(intptr_t)A_STOP, "stop an experiment for good"},
		{"experiment.conclude", SX_ROLE_WRITER, m_life, (void *)(intptr_t)A_CONCLUDE, "conclude with a winner"},
		{"experiment.get", SX_ROLE_READER, m_get, NULL, "an experiment's definition and state"},
		{"experiment.list", SX_ROLE_READER, m_list, NULL, "every experiment {state?}"},
		{"experiment.history", SX_ROLE_READER, m_history, NULL, "versions and audit trail of an experiment"},
		{"experiment.assign", SX_ROLE_WRITER, m_assign, NULL, "a user's variant {key, user, context?}"},
		{"experiment.assign_all", SX_ROLE_WRITER, m_assign_all, NULL, "a user's variant in every running experiment"},
		{"experiment.results", SX_ROLE_READER, m_results, NULL, "statistics per variant and metric"},
		{"experiment.report", SX_ROLE_READER, m_report, NULL, "results and a daily timeline {key, format}"},
		{"experiment.plan", SX_ROLE_READER, m_plan, NULL, "sample size and duration {baseline, mde, ...}"},
		{"experiment.subscribe", SX_ROLE_READER, m_subscribe, NULL, "live results on topic experiment.KEY"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	struct sx_script_kind k = {"experiments", kind_validate, kind_installed, NULL};
	if ((rc = sx_scripts_add_kind(e->scripts, &k)) < 0 || (rc = sx_events_on_track(observe_cb, NULL)) < 0 ||
	    (rc = sx_privacy_register_eraser("experiments", erase_user, NULL)) < 0 ||
	    (rc = sx_privacy_register_exporter("experiments", export_user, NULL)) < 0)
		return rc;
	uv_timer_init(e->loop, &monitor);
	uv_timer_start(&monitor, monitor_cb, MONITOR_MS, MONITOR_MS);
	uv_unref((uv_handle_t *)&monitor);
	monitor_on = 1;
	return 0;
}

static void stop(struct sx_engine *e)
{
	SX_UNUSED(e);
	if (monitor_on) {
		uv_timer_stop(&monitor);
		uv_close((uv_handle_t *)&monitor, NULL);
		monitor_on = 0;
	}
	sx__xp_counters_stop();
	for (size_t i = 0; i < nxps; i++)
		xp_free(xps[i]);
	free(xps);
	xps = NULL;
	nxps = capxps = 0;
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	uint32_t running = 0;
	SX_UNUSED(e);
	for (size_t i = 0; i < nxps; i++)
		running += xps[i]->state == XP_RUNNING;
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "experiments", nxps);
	sx_pack_kv_uint(pk, "running", running);
}

const struct sx_plugin sx_plugin_experiments = {"experiments", start, stop, info};
