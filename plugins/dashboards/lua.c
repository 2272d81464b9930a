/* ctx.analytics: Lua bindings over the events plugin's C API.
 *
 * Arguments go Lua -> MessagePack -> the C function -> MessagePack -> Lua
 * through scratch buffers kept between calls (loop thread only), so that a
 * Lua error raised while pushing a result leaks nothing. Bad arguments
 * raise; a missing cohort or item returns nil, message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <xxhash.h>

#include "core/lua/mpack.h"
#include "core/math/ets.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/dashboards/dashboards.h"
#include "plugins/events/events.h"

#define SCRATCH_KEEP (4u << 20)     /* larger scratch buffers are released after use */
#define TOP_SCAN_MAX 5000000        /* events top_items may visit */
#define FORECAST_MAX 10000

static msgpack_sbuffer in, out;
static msgpack_zone zone;
static double *fbuf;
static size_t fcap;

void sx__dash_lua_init(void)
{
	msgpack_sbuffer_init(&in);
	msgpack_sbuffer_init(&out);
	msgpack_zone_init(&zone, 4096);
}

void sx__dash_lua_close(void)
{
	msgpack_sbuffer_destroy(&in);
	msgpack_sbuffer_destroy(&out);
	msgpack_zone_destroy(&zone);
	free(fbuf);
	fbuf = NULL, fcap = 0;
}

static void scratch_reset(void)
{
	if (in.alloc > SCRATCH_KEEP) {
		msgpack_sbuffer_destroy(&in);
		msgpack_sbuffer_init(&in);
	}
	if (out.alloc > SCRATCH_KEEP) {
		msgpack_sbuffer_destroy(&out);
		msgpack_sbuffer_init(&out);
	}
	msgpack_sbuffer_clear(&in);
	msgpack_sbuffer_clear(&out);
	msgpack_zone_clear(&zone);
}

/* The table at idx (or nil) as a msgpack map in the scratch zone. */
static const msgpack_object *args_of(lua_State *L, int idx, const char *what, msgpack_object *o)
{
	scratch_reset();
	if (lua_isnoneornil(L, idx))
		return NULL;
	if (!lua_istable(L, idx))
		luaL_error(L, "analytics.%s: the argument must be a table", what);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &in, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {16, 1 << 20};
	if (sx_lua_pack(L, idx, &pk, &lim) < 0)
		luaL_error(L, "analytics.%s: %s", what, sx_diag_last());
	size_t off = 0;
	if (msgpack_unpack(in.data, in.size, &off, &zone, o) != MSGPACK_UNPACK_SUCCESS)
		luaL_error(L, "analytics.%s: arguments do not encode", what);
	if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 0)
		o->type = MSGPACK_OBJECT_MAP, o->via.map.size = 0, o->via.map.ptr = NULL;
	return o;
}

/* Pushes the result in `out`, or nil+message for SX_ENOENT, or raises. */
static int finish(lua_State *L, const char *what, int rc)
{
	if (rc == SX_ENOENT) {
		lua_pushnil(L);
		lua_pushstring(L, sx_diag_last());
		return 2;
	}
	if (rc < 0)
		return luaL_error(L, "analytics.%s: %s: %s", what, sx_error_code(rc), sx_diag_last());
	if (sx_lua_unpack(L, out.data, out.size) < 0)
		return luaL_error(L, "analytics.%s: the result does not decode", what);
	return 1;
}

typedef int (*query_fn)(const msgpack_object *args, msgpack_packer *pk);

static int call_query(lua_State *L, const char *what, query_fn fn)
{
	msgpack_object o;
	const msgpack_object *a = args_of(L, 1, what, &o);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	int rc = fn(a, &pk);
	return finish(L, what, rc);
}

static int lsx_analytics_metrics(lua_State *L) { return call_query(L, "metrics", sx_events_metrics_query); }
static int lsx_analytics_active(lua_State *L) { return call_query(L, "active", sx_events_metrics_active); }
static int lsx_analytics_funnel(lua_State *L) { return call_query(L, "funnel", sx_events_funnel_query_cached); }
static int lsx_analytics_retention(lua_State *L) { return call_query(L, "retention", sx_events_retention); }

static int lsx_analytics_cohort_size(lua_State *L)
{
	size_t n;
	const char *name = luaL_checklstring(L, 1, &n);
	scratch_reset();
	msgpack_packer pk;
	msgpack_packer_init(&pk, &in, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	sx_pack_key(&pk, "name");
	sx_pack_strn(&pk, name, n);
	msgpack_object o;
	size_t off = 0;
	msgpack_unpack(in.data, in.size, &off, &zone, &o);
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	int rc = sx_events_cohort_size(&o, &pk);
	if (rc < 0)
		return finish(L, "cohort_size", rc);
	int r = finish(L, "cohort_size", rc);
	lua_getfield(L, -1, "size");
	return r;
}

static int lsx_analytics_cohorts(lua_State *L)
{
	scratch_reset();
	msgpack_packer pk;
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	return finish(L, "cohorts", sx_events_cohort_list(&pk));
}

static int64_t check_time(lua_State *L, int idx, const char *what)
{
	lua_Number t = luaL_checknumber(L, idx);
	if (!(t >= 0 && t <= (lua_Number)SX_EVENTS_TIME_MAX + 1) || t != floor(t))
		luaL_error(L, "analytics.%s: times are integers, ms since 1970", what);
	return (int64_t)t;
}

/* users_did(event, from, to) -> number of distinct users (minute resolution). */
static int lsx_analytics_users_did(lua_State *L)
{
	const char *ev = luaL_checkstring(L, 1);
	int64_t from = check_time(L, 2, "users_did"), to = check_time(L, 3, "users_did");
	if (from >= to)
		return luaL_error(L, "analytics.users_did: from must be before to");
	roaring_bitmap_t *b = sx_events_users_did(NULL, ev, from, to);
	if (!b)
		return luaL_error(L, "analytics.users_did: %s", sx_diag_last());
	uint64_t n = roaring_bitmap_get_cardinality(b);
	roaring_bitmap_free(b);
	lua_pushnumber(L, (lua_Number)n);
	return 1;
}

/* item(id) -> {id, kind, attributes} or nil, message. */
static int lsx_analytics_item(lua_State *L)
{
	size_t n;
	const char *id = luaL_checklstring(L, 1, &n);
	struct sx_item it;
	scratch_reset();
	int rc = sx_events_item_get(NULL, id, n, &it);
	if (rc == 0) {
		msgpack_packer pk;
		msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 3);
		sx_pack_key(&pk, "id");
		sx_pack_strn(&pk, it.id, it.id_len);
		sx_pack_kv_str(&pk, "kind", sx_item_kind_name(it.kind));
		sx_pack_key(&pk, "attributes");
		if (it.attrs)
			msgpack_sbuffer_write(&out, it.attrs, it.attrs_len);
		else
			msgpack_pack_map(&pk, 0);
	}
	return finish(L, "item", rc);
}

/* ---- top_items{event, from, to, limit = 10}: items by event count ---- */

struct titem {
	char id[SX_EVENTS_ID_MAX];
	size_t len;
	uint64_t count;
	struct titem *next;
};

struct top {
	const char *event;
	size_t elen;
	struct titem **b;
	size_t nb, n;
	uint64_t seen;
	int oom;
};

static int top_cb(const struct sx_event *ev, void *ud)
{
	struct top *t = ud;
	if (++t->seen > TOP_SCAN_MAX)
		return sx_diag_set(SX_ELIMIT, "top_items visits at most %d events: narrow the range", TOP_SCAN_MAX);
	if (!ev->item || ev->name_len != t->elen || memcmp(ev->name, t->event, t->elen) != 0)
		return 0;
	size_t h = (size_t)XXH3_64bits(ev->item, ev->item_len) & (t->nb - 1);
	for (struct titem *x = t->b[h]; x; x = x->next)
		if (x->len == ev->item_len && !memcmp(x->id, ev->item, x->len)) {
			x->count++;
			return 0;
		}
	struct titem *x = malloc(sizeof(*x));
	if (!x)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	memcpy(x->id, ev->item, ev->item_len);
	x->len = ev->item_len;
	x->count = 1;
	x->next = t->b[h];
	t->b[h] = x;
	t->n++;
	return 0;
}

static int cmp_titem(const void *a, const void *b)
{
	const struct titem *x = *(struct titem *const *)a, *y = *(struct titem *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->id, y->id, n);
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int lsx_analytics_top_items(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "event");
	lua_getfield(L, 1, "from");
	lua_getfield(L, 1, "to");
	lua_getfield(L, 1, "limit");
	size_t elen;
	const char *ev = luaL_checklstring(L, -4, &elen);
	int64_t from = check_time(L, -3, "top_items"), to = check_time(L, -2, "top_items");
	lua_Number lim = luaL_optnumber(L, -1, 10);
	if (from >= to)
		return luaL_error(L, "analytics.top_items: from must be before to");
	if (!(lim >= 1 && lim <= 1000))
		return luaL_error(L, "analytics.top_items: limit must be 1 to 1000");
	scratch_reset();
	struct top t = {ev, elen, NULL, 1024, 0, 0, 0};
	t.b = calloc(t.nb, sizeof(*t.b));
	if (!t.b)
		return luaL_error(L, "analytics.top_items: out of memory");
	int rc = sx_events_range_scan(NULL, from, to, top_cb, &t);
	struct titem **all = calloc(t.n + 1, sizeof(*all));
	size_t k = 0;
	for (size_t i = 0; i < t.nb; i++)
		for (struct titem *x = t.b[i]; x; x = x->next)
			if (all)
				all[k++] = x;
	if (rc == 0 && !all)
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc == 0) {
		qsort(all, k, sizeof(*all), cmp_titem);
		size_t shown = k < (size_t)lim ? k : (size_t)lim;
		msgpack_packer pk;
		msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
		msgpack_pack_array(&pk, shown);
		for (size_t i = 0; i < shown; i++) {
			struct sx_item it;
			int has = sx_events_item_get(NULL, all[i]->id, all[i]->len, &it) == 0 && it.attrs;
			msgpack_pack_map(&pk, 3);
			sx_pack_key(&pk, "item");
			sx_pack_strn(&pk, all[i]->id, all[i]->len);
			sx_pack_kv_uint(&pk, "count", all[i]->count);
			sx_pack_key(&pk, "attributes");
			if (has)
				msgpack_sbuffer_write(&out, it.attrs, it.attrs_len);
			else
				msgpack_pack_map(&pk, 0);
		}
	}
	for (size_t i = 0; i < t.nb; i++)
		for (struct titem *x = t.b[i], *nx; x; x = nx)
			nx = x->next, free(x);
	free(t.b);
	free(all);
	return finish(L, "top_items", rc);
}

/* ---- forecast{values, horizon, season?, level?}: ETS (automatic choice) ---- */

static int lsx_analytics_forecast(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "values");
	lua_getfield(L, 1, "horizon");
	lua_getfield(L, 1, "season");
	lua_getfield(L, 1, "level");
	int vi = lua_gettop(L) - 3;
	luaL_checktype(L, vi, LUA_TTABLE);
	lua_Number h = luaL_checknumber(L, vi + 1), m = luaL_optnumber(L, vi + 2, 1), lv = luaL_optnumber(L, vi + 3, 0.95);
	size_t n = lua_objlen(L, vi);
	if (n < 4 || n > FORECAST_MAX)
		return luaL_error(L, "analytics.forecast: values must hold 4 to %d numbers", FORECAST_MAX);
	if (!(h >= 1 && h <= 1000) || h != floor(h))
		return luaL_error(L, "analytics.forecast: horizon must be 1 to 1000");
	if (!(m >= 1 && m <= SX_ETS_MAX_M) || m != floor(m))
		return luaL_error(L, "analytics.forecast: season must be 1 to %d", SX_ETS_MAX_M);
	if (!(lv > 0 && lv < 1))
		return luaL_error(L, "analytics.forecast: level must be between 0 and 1");
	size_t need = n + 3 * (size_t)h;
	if (need > fcap) {
		double *nb = realloc(fbuf, need * sizeof(*fbuf));
		if (!nb)
			return luaL_error(L, "analytics.forecast: out of memory");
		fbuf = nb, fcap = need;
	}
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, vi, (int)i + 1);
		if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)))
			return luaL_error(L, "analytics.forecast: values[%d] is not a finite number", (int)i + 1);
		fbuf[i] = lua_tonumber(L, -1);
		lua_pop(L, 1);
	}
	struct sx_ets_model model;
	double *mean = fbuf + n, *lo = mean + (size_t)h, *hi = lo + (size_t)h;
	int season = n >= 2 * (size_t)m ? (int)m : 1;
	int rc = sx_ets_auto(fbuf, n, season, NULL, &model);
	if (rc == 0)
		rc = sx_ets_forecast(&model, (size_t)h, lv, 42, mean, lo, hi);
	if (rc < 0)
		return luaL_error(L, "analytics.forecast: %s", sx_diag_last());
	char name[8];
	lua_createtable(L, 0, 5);
	lua_pushstring(L, sx_ets_spec_name(&model.spec, name));
	lua_setfield(L, -2, "model");
	lua_pushnumber(L, lv);
	lua_setfield(L, -2, "level");
	const char *keys[3] = {"mean", "lo", "hi"};
	for (int k = 0; k < 3; k++) {
		lua_createtable(L, (int)h, 0);
		for (int i = 0; i < (int)h; i++) {
			lua_pushnumber(L, fbuf[n + (size_t)k * (size_t)h + (size_t)i]);
			lua_rawseti(L, -2, i + 1);
		}
		lua_setfield(L, -2, keys[k]);
	}
	return 1;
}

void sx__dash_push_analytics(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"metrics", lsx_analytics_metrics},
		{"active", lsx_analytics_active},
		{"funnel", lsx_analytics_funnel},
		{"retention", lsx_analytics_retention},
		{"cohort_size", lsx_analytics_cohort_size},
		{"cohorts", lsx_analytics_cohorts},
		{"users_did", lsx_analytics_users_did},
		{"item", lsx_analytics_item},
		{"top_items", lsx_analytics_top_items},
		{"forecast", lsx_analytics_forecast},
		{NULL, NULL},
	};
	lua_createtable(L, 0, (int)SX_ARRAY_SIZE(fns));
	for (const luaL_Reg *f = fns; f->name; f++) {
		lua_pushcfunction(L, f->func);
		lua_setfield(L, -2, f->name);
	}
}
