/* Dashboards: the "dashboards" script kind, dashboard.list/render, and the
 * live view (dashboard.subscribe): one uv timer per subscription group
 * (dashboard, variables, refresh), which renders and sends each subscriber
 * the panels whose content changed since the last refresh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <xxhash.h>

#include "core/config.h"
#include "core/log.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/dashboards/dashboards.h"
#include "plugins/predict/predict.h"
#include "store/store.h"

#define KIND "dashboards"
#define NAME_MAX_LEN 63
#define NAMES_MAX 256
#define GROUPS_MAX 256
#define DEFAULT_REFRESH_MS 10000
#define PANEL_BYTES_MAX (8u << 20)

struct sx_engine *sx__dash_eng;

static const char *const panel_kinds[] = {"number", "timeseries", "table", "retention", "funnel",
					  "forecast", "distribution", "experiment", NULL};

/* Names of the dashboards that have served (kept from the `installed` hook). */
static char names[NAMES_MAX][NAME_MAX_LEN + 1];
static int nnames;

/* ---- the script kind ---- */

static int rawfield(lua_State *L, int t, const char *k)
{
	lua_pushstring(L, k);
	lua_rawget(L, t);
	return lua_type(L, -1);
}

/* Empty tables pack as arrays; variables are a map even when empty. */
static int table_empty(lua_State *L, int t)
{
	lua_pushnil(L);
	if (!lua_next(L, t))
		return 1;
	lua_pop(L, 2);
	return 0;
}

static int is_kind(const char *k)
{
	for (int i = 0; panel_kinds[i]; i++)
		if (strcmp(panel_kinds[i], k) == 0)
			return 1;
	return 0;
}

static int validate_panels(lua_State *L, int t)
{
	size_t n = lua_objlen(L, t);
	if (n < 1 || n > SX_DASH_PANELS_MAX)
		return sx_diag_set(SX_ESCRIPT, "'panels' must be an array of 1 to %d panels", SX_DASH_PANELS_MAX);
	char ids[SX_DASH_PANELS_MAX][65];
	for (size_t i = 1; i <= n; i++) {
		int top = lua_gettop(L);
		lua_rawgeti(L, t, (int)i);
		int p = lua_gettop(L);
		if (!lua_istable(L, p)) {
			lua_settop(L, top);
			return sx_diag_set(SX_ESCRIPT, "panels[%zu] must be a table", i);
		}
		size_t idlen;
		const char *id = rawfield(L, p, "id") == LUA_TSTRING ? lua_tolstring(L, -1, &idlen) : NULL;
		int tt = rawfield(L, p, "title");
		const char *kind = rawfield(L, p, "kind") == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		int qt = rawfield(L, p, "query");
		int rc = 0;
		if (!id || idlen < 1 || idlen > 64)
			rc = sx_diag_set(SX_ESCRIPT, "panels[%zu].id must be a string of 1 to 64 bytes", i);
		else if (tt != LUA_TNIL && tt != LUA_TSTRING)
			rc = sx_diag_set(SX_ESCRIPT, "panels[%zu].title must be a string", i);
		else if (!kind || !is_kind(kind))
			rc = sx_diag_set(SX_ESCRIPT, "panels[%zu].kind must be number, timeseries, table, retention, "
					 "funnel, forecast, distribution or experiment", i);
		else if (qt != LUA_TFUNCTION)
			rc = sx_diag_set(SX_ESCRIPT, "panels[%zu].query must be a function(ctx, vars)", i);
		if (rc == 0) {
			for (size_t j = 0; j + 1 < i; j++)
				if (strcmp(ids[j], id) == 0)
					rc = sx_diag_set(SX_ESCRIPT, "panel id '%s' is used twice", id);
			memcpy(ids[i - 1], id, idlen);
			ids[i - 1][idlen] = 0;
		}
		lua_settop(L, top);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int validate(lua_State *L, int value, const char *name, void *ud)
{
	SX_UNUSED(name), SX_UNUSED(ud);
	if (!lua_istable(L, value))
		return sx_diag_set(SX_ESCRIPT, "a dashboard must return a table {title, refresh_ms, variables, panels}");
	int top = lua_gettop(L), rc = 0;
	if (rawfield(L, value, "title") != LUA_TSTRING)
		rc = sx_diag_set(SX_ESCRIPT, "'title' must be a string");
	int rt = rawfield(L, value, "refresh_ms");
	if (rc == 0 && rt != LUA_TNIL &&
	    (rt != LUA_TNUMBER || !(lua_tonumber(L, -1) >= SX_DASH_REFRESH_MIN_MS && lua_tonumber(L, -1) <= SX_DASH_REFRESH_MAX_MS)))
		rc = sx_diag_set(SX_ESCRIPT, "'refresh_ms' must be a number from %d to %d", SX_DASH_REFRESH_MIN_MS,
				 SX_DASH_REFRESH_MAX_MS);
	int vt = rawfield(L, value, "variables");
	if (rc == 0 && vt != LUA_TNIL) {
		int v = lua_gettop(L);
		if (vt != LUA_TTABLE)
			rc = sx_diag_set(SX_ESCRIPT, "'variables' must be a table of defaults");
		lua_pushnil(L);
		while (rc == 0 && lua_next(L, v)) {
			int kt = lua_type(L, -2), t = lua_type(L, -1);
			if (kt != LUA_TSTRING || (t != LUA_TNUMBER && t != LUA_TSTRING && t != LUA_TBOOLEAN))
				rc = sx_diag_set(SX_ESCRIPT, "'variables' maps names to numbers, strings or booleans "
						 "(false: not set)");
			lua_pop(L, 1);
		}
	}
	if (rc == 0) {
		if (rawfield(L, value, "panels") != LUA_TTABLE)
			rc = sx_diag_set(SX_ESCRIPT, "'panels' must be an array of panels");
		else
			rc = validate_panels(L, lua_gettop(L));
	}
	lua_settop(L, top);
	return rc;
}

static int set_analytics(lua_State *L)
{
	const char *name = lua_touserdata(L, 1);
	if (sx_scripts_push_ctx(sx__dash_eng->scripts, KIND, name) < 0)
		return 0;
	sx__dash_push_analytics(L);
	lua_setfield(L, -2, "analytics");
	sx_predict_lua_open(L);
	lua_setfield(L, -2, "predict");
	return 0;
}

static void installed(const char *name, int ref, void *ud)
{
	SX_UNUSED(ref), SX_UNUSED(ud);
	lua_State *L = sx_lua_state(sx__dash_eng->lua);
	if (lua_cpcall(L, set_analytics, (void *)name) != 0) {
		sx_log_error("dashboard %s: cannot set ctx.analytics: %s", name, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	for (int i = 0; i < nnames; i++)
		if (strcmp(names[i], name) == 0)
			return;
	if (nnames < NAMES_MAX && strlen(name) <= NAME_MAX_LEN)
		snprintf(names[nnames++], sizeof(names[0]), "%s", name);
}

/* ---- render ---- */

struct panel_out {
	char id[65];
	uint64_t hash; /* of the packed panel */
	size_t off, len; /* in the render's panel buffer */
};

struct render {
	char title[256];
	uint32_t version;
	uint32_t refresh_ms;
	int64_t at;
	int npanels;
	struct panel_out p[SX_DASH_PANELS_MAX];
	msgpack_sbuffer panels; /* the packed panels, one after the other */
	msgpack_sbuffer vars;   /* the effective variables, packed */
};

static void render_init(struct render *r)
{
	memset(r, 0, sizeof(*r));
	msgpack_sbuffer_init(&r->panels);
	msgpack_sbuffer_init(&r->vars);
}

static void render_free(struct render *r)
{
	msgpack_sbuffer_destroy(&r->panels);
	msgpack_sbuffer_destroy(&r->vars);
}

static int valid_name(const char *s, size_t n)
{
	if (n < 1 || n > NAME_MAX_LEN)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

/* Builds the variables table from the script's defaults (argument 2) and
 * the request's values (protected). */
struct vars_args {
	const msgpack_object *vars;
	char err[256];
};

static int build_vars(lua_State *L)
{
	struct vars_args *a = lua_touserdata(L, 1);
	lua_newtable(L);
	int t = lua_gettop(L);
	rawfield(L, 2, "variables");
	int d = lua_gettop(L);
	if (lua_istable(L, d)) {
		lua_pushnil(L);
		while (lua_next(L, d)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, t);
		}
	}
	for (uint32_t i = 0; a->vars && i < a->vars->via.map.size; i++) {
		const msgpack_object *k = &a->vars->via.map.ptr[i].key, *v = &a->vars->via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR) {
			snprintf(a->err, sizeof(a->err), "argument 'vars' must map variable names to values");
			return 0;
		}
		lua_pushlstring(L, k->via.str.ptr, k->via.str.size);
		lua_pushvalue(L, -1);
		lua_rawget(L, d);
		int dt = lua_istable(L, d) ? lua_type(L, -1) : LUA_TNIL;
		int def_unset = dt == LUA_TBOOLEAN && !lua_toboolean(L, -1);
		lua_pop(L, 1);
		if (dt == LUA_TNIL) {
			snprintf(a->err, sizeof(a->err), "dashboard has no variable '%.*s'", (int)k->via.str.size, k->via.str.ptr);
			return 0;
		}
		int vt;
		switch (v->type) {
		case MSGPACK_OBJECT_POSITIVE_INTEGER:
		case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		case MSGPACK_OBJECT_FLOAT32:
		case MSGPACK_OBJECT_FLOAT64: vt = LUA_TNUMBER; break;
		case MSGPACK_OBJECT_STR: vt = LUA_TSTRING; break;
		case MSGPACK_OBJECT_BOOLEAN: vt = LUA_TBOOLEAN; break;
		case MSGPACK_OBJECT_NIL: vt = LUA_TNIL; break;
		default: vt = -1;
		}
		if (vt == LUA_TNIL) {
			lua_pop(L, 1);
			continue; /* nil: keep the default */
		}
		if (vt < 0 || (!def_unset && vt != dt)) {
			snprintf(a->err, sizeof(a->err), "variable '%.*s' must be a %s", (int)k->via.str.size,
				 k->via.str.ptr, def_unset ? "number, string or boolean" : lua_typename(L, dt));
			return 0;
		}
		sx_lua_push_object(L, v);
		lua_rawset(L, t);
	}
	lua_settop(L, t);
	return 1;
}

/* Copies the table at idx (one level: variables are scalars). */
static void copy_table(lua_State *L, int idx)
{
	lua_newtable(L);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
}

/* Adds change and change_ratio to a number panel's {value, previous}. */
static void number_change(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_createtable(L, 0, 1);
		lua_pushvalue(L, idx);
		lua_setfield(L, -2, "value");
		lua_replace(L, idx);
	}
	if (!lua_istable(L, idx))
		return;
	rawfield(L, idx, "value");
	rawfield(L, idx, "previous");
	if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TNUMBER) {
		double v = lua_tonumber(L, -2), p = lua_tonumber(L, -1);
		lua_pushnumber(L, v - p);
		lua_setfield(L, idx, "change");
		if (p != 0) {
			lua_pushnumber(L, (v - p) / (p < 0 ? -p : p));
			lua_setfield(L, idx, "change_ratio");
		}
	}
	lua_pop(L, 2);
}

static int protected_change(lua_State *L)
{
	number_change(L, 1);
	return 1;
}

static void pack_panel_head(msgpack_packer *pk, const char *id, const char *title, const char *kind)
{
	msgpack_pack_map(pk, 5);
	sx_pack_kv_str(pk, "id", id);
	sx_pack_kv_str(pk, "title", title);
	sx_pack_kv_str(pk, "kind", kind);
}

static int render_run(const char *name, const msgpack_object *vars, struct render *r)
{
	struct sx_scripts *sc = sx__dash_eng->scripts;
	struct sx_lua *lx = sx__dash_eng->lua;
	lua_State *L = sx_lua_state(lx);
	int top = lua_gettop(L), rc;
	if (!valid_name(name, strlen(name)))
		return sx_diag_set(SX_EINVAL, "a dashboard name is 1 to %d of a-z, 0-9, _ and -", NAME_MAX_LEN);
	if (vars && vars->type != MSGPACK_OBJECT_MAP && vars->type != MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "argument 'vars' must be a map");
	if (vars && vars->type == MSGPACK_OBJECT_NIL)
		vars = NULL;
	if (!lua_checkstack(L, 16))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	if ((rc = sx_scripts_push(sc, KIND, name)) < 0)
		return sx_diag_set(SX_ENOENT, "no dashboard '%s'", name);
	int script = lua_gettop(L);
	struct vars_args va = {vars, ""};
	lua_pushcfunction(L, build_vars);
	lua_pushlightuserdata(L, &va);
	lua_pushvalue(L, script);
	if (lua_pcall(L, 2, 1, 0) != 0) {
		lua_settop(L, top);
		return sx_diag_set(SX_ENOMEM, "cannot build the variables");
	}
	if (va.err[0]) {
		lua_settop(L, top);
		return sx_diag_set(SX_EINVAL, "%s", va.err);
	}
	int vt = lua_gettop(L);
	msgpack_packer vpk;
	msgpack_packer_init(&vpk, &r->vars, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {8, 1 << 20};
	if (table_empty(L, vt))
		msgpack_pack_map(&vpk, 0);
	else if ((rc = sx_lua_pack(L, vt, &vpk, &lim)) < 0) {
		lua_settop(L, top);
		return rc;
	}
	rawfield(L, script, "title");
	snprintf(r->title, sizeof(r->title), "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : name);
	rawfield(L, script, "refresh_ms");
	r->refresh_ms = lua_type(L, -1) == LUA_TNUMBER ? (uint32_t)lua_tonumber(L, -1) : DEFAULT_REFRESH_MS;
	lua_settop(L, vt);
	rawfield(L, script, "panels");
	int panels = lua_gettop(L);
	r->at = sx_wall_ms();
	r->npanels = (int)lua_objlen(L, panels);
	if (r->npanels > SX_DASH_PANELS_MAX)
		r->npanels = SX_DASH_PANELS_MAX;
	msgpack_packer pk;
	msgpack_packer_init(&pk, &r->panels, msgpack_sbuffer_write);
	for (int i = 0; i < r->npanels; i++) {
		struct panel_out *po = &r->p[i];
		lua_settop(L, panels);
		lua_rawgeti(L, panels, i + 1);
		int p = lua_gettop(L);
		rawfield(L, p, "id");
		snprintf(po->id, sizeof(po->id), "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
		rawfield(L, p, "title");
		char title[256], kind[32], err[512] = "";
		snprintf(title, sizeof(title), "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : po->id);
		rawfield(L, p, "kind");
		snprintf(kind, sizeof(kind), "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "table");
		lua_settop(L, p);
		po->off = r->panels.size;
		rawfield(L, p, "query");
		sx_scripts_push_ctx(sc, KIND, name);
		copy_table(L, vt);
		uint64_t q0 = sx_now_ns();
		rc = sx_lua_call(lx, 2, 1);
		sx_log_debug("dashboard %s panel %s: %.2f ms", name, po->id, (double)(sx_now_ns() - q0) / 1e6);
		size_t mark = r->panels.size;
		pack_panel_head(&pk, po->id, title, kind);
		sx_pack_key(&pk, "data");
		if (rc == 0) {
			if (strcmp(kind, "number") == 0) {
				lua_pushcfunction(L, protected_change);
				lua_insert(L, -2);
				if (lua_pcall(L, 1, 1, 0) != 0)
					snprintf(err, sizeof(err), "panel %s: %s", po->id, lua_tostring(L, -1));
			}
			struct sx_mpack_limits plim = {32, PANEL_BYTES_MAX};
			size_t before = r->panels.size;
			if (!err[0] && sx_lua_pack(L, -1, &pk, &plim) < 0)
				snprintf(err, sizeof(err), "panel %s returned a bad value: %s", po->id, sx_diag_last());
			if (err[0]) {
				r->panels.size = before;
				msgpack_pack_nil(&pk);
			}
		} else {
			snprintf(err, sizeof(err), "%s", sx_diag_last());
			msgpack_pack_nil(&pk);
		}
		sx_pack_key(&pk, "error");
		if (err[0])
			sx_pack_str(&pk, err);
		else
			msgpack_pack_nil(&pk);
		SX_UNUSED(mark);
		po->len = r->panels.size - po->off;
		po->hash = XXH3_64bits(r->panels.data + po->off, po->len);
	}
	lua_settop(L, top);
	return 0;
}

static void pack_render(msgpack_packer *pk, const char *name, const struct render *r, const uint8_t *only)
{
	int n = 0;
	for (int i = 0; i < r->npanels; i++)
		n += !only || only[i];
	msgpack_pack_map(pk, 7);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_str(pk, "title", r->title);
	sx_pack_kv_int(pk, "rendered_at", r->at);
	sx_pack_kv_uint(pk, "refresh_ms", r->refresh_ms);
	sx_pack_key(pk, "vars");
	pk->callback(pk->data, r->vars.data, r->vars.size);
	sx_pack_key(pk, "changed");
	msgpack_pack_uint32(pk, (uint32_t)n);
	sx_pack_key(pk, "panels");
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < r->npanels; i++)
		if (!only || only[i])
			pk->callback(pk->data, r->panels.data + r->p[i].off, r->p[i].len);
}

int sx_dashboards_render(const char *name, const msgpack_object *vars, msgpack_packer *pk)
{
	struct render r;
	render_init(&r);
	int rc = render_run(name, vars, &r);
	if (rc == 0)
		pack_render(pk, name, &r, NULL);
	render_free(&r);
	return rc;
}

/* ---- methods ---- */

static int name_arg(const msgpack_object *args, char *name)
{
	int rc = sx_arg_cstr(args, "name", 1, name, NAME_MAX_LEN + 1);
	if (rc == SX_E2BIG || (rc == 0 && !valid_name(name, strlen(name))))
		return sx_diag_set(SX_EINVAL, "argument 'name' must be 1 to %d of a-z, 0-9, _ and -", NAME_MAX_LEN);
	return rc;
}

static int m_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {NULL};
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	lua_State *L = sx_lua_state(sx__dash_eng->lua);
	int top = lua_gettop(L), n = 0;
	for (int i = 0; i < nnames; i++)
		if (sx_scripts_push(sx__dash_eng->scripts, KIND, names[i]) == 0)
			n++, lua_pop(L, 1);
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < nnames; i++) {
		if (sx_scripts_push(sx__dash_eng->scripts, KIND, names[i]) < 0)
			continue;
		int s = lua_gettop(L);
		msgpack_pack_map(pk, 5);
		sx_pack_kv_str(pk, "name", names[i]);
		rawfield(L, s, "title");
		sx_pack_kv_str(pk, "title", lua_tostring(L, -1));
		rawfield(L, s, "refresh_ms");
		sx_pack_kv_uint(pk, "refresh_ms", lua_type(L, -1) == LUA_TNUMBER ? (uint64_t)lua_tonumber(L, -1) : DEFAULT_REFRESH_MS);
		sx_pack_key(pk, "variables");
		rawfield(L, s, "variables");
		struct sx_mpack_limits lim = {4, 1 << 20};
		if (!lua_istable(L, -1) || table_empty(L, lua_gettop(L)))
			msgpack_pack_map(pk, 0);
		else if ((rc = sx_lua_pack(L, -1, pk, &lim)) < 0) {
			lua_settop(L, top);
			return rc;
		}
		lua_settop(L, s);
		rawfield(L, s, "panels");
		int p = lua_gettop(L);
		int np = (int)lua_objlen(L, p);
		sx_pack_key(pk, "panels");
		msgpack_pack_array(pk, (size_t)np);
		for (int j = 1; j <= np; j++) {
			lua_rawgeti(L, p, j);
			int q = lua_gettop(L);
			msgpack_pack_map(pk, 3);
			rawfield(L, q, "id");
			sx_pack_kv_str(pk, "id", lua_tostring(L, -1));
			rawfield(L, q, "title");
			sx_pack_kv_str(pk, "title", lua_tostring(L, -1));
			rawfield(L, q, "kind");
			sx_pack_kv_str(pk, "kind", lua_tostring(L, -1));
			lua_settop(L, p);
		}
		lua_settop(L, top);
	}
	return 0;
}

static int m_render(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "vars", NULL};
	char name[NAME_MAX_LEN + 1];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, name)) < 0)
		return rc;
	return sx_dashboards_render(name, sx_arg(args, "vars"), pk);
}

/* ---- the live view ---- */

struct subscriber {
	struct sx_conn *conn; /* referenced */
	struct subscriber *next;
};

struct group {
	uv_timer_t timer;
	char name[NAME_MAX_LEN + 1];
	char topic[NAME_MAX_LEN + 16];
	msgpack_sbuffer vars; /* the variables as asked (packed map, or empty: defaults) */
	uint32_t refresh_ms;  /* 0: the script's */
	struct render last;   /* the last render */
	int has_last;
	struct subscriber *subs;
	struct group *next;
};

static struct group *groups;
static int ngroups;

static void group_close_cb(uv_handle_t *h)
{
	struct group *g = h->data;
	msgpack_sbuffer_destroy(&g->vars);
	render_free(&g->last);
	free(g);
}

static void group_free(struct group *g)
{
	for (struct group **pp = &groups; *pp; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	ngroups--;
	for (struct subscriber *s = g->subs, *n; s; s = n) {
		n = s->next;
		sx_conn_unref(s->conn);
		free(s);
	}
	g->subs = NULL;
	uv_timer_stop(&g->timer);
	uv_close((uv_handle_t *)&g->timer, group_close_cb);
}

static int conn_in_other_group(struct sx_conn *c, const struct group *except, const char *name)
{
	for (struct group *g = groups; g; g = g->next)
		if (g != except && strcmp(g->name, name) == 0)
			for (struct subscriber *s = g->subs; s; s = s->next)
				if (s->conn == c)
					return 1;
	return 0;
}

static int group_vars(const struct group *g, msgpack_zone *z, msgpack_object *o, const msgpack_object **out)
{
	*out = NULL;
	if (!g->vars.size)
		return 0;
	size_t off = 0;
	if (msgpack_unpack(g->vars.data, g->vars.size, &off, z, o) != MSGPACK_UNPACK_SUCCESS)
		return sx_diag_set(SX_EINTERNAL, "stored variables do not decode");
	*out = o;
	return 0;
}

static void group_tick(uv_timer_t *t)
{
	struct group *g = t->data;
	struct subscriber **pp = &g->subs;
	while (*pp) {
		if (!sx_conn_open((*pp)->conn)) {
			struct subscriber *s = *pp;
			*pp = s->next;
			sx_conn_unref(s->conn);
			free(s);
		} else {
			pp = &(*pp)->next;
		}
	}
	if (!g->subs) {
		group_free(g);
		return;
	}
	msgpack_zone z;
	msgpack_object vo;
	const msgpack_object *vars;
	struct render r;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone_init(&z, 1024);
	render_init(&r);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	uint64_t t0 = sx_now_ms();
	int rc = group_vars(g, &z, &vo, &vars);
	if (rc == 0)
		rc = render_run(g->name, vars, &r);
	sx_store_read_end(sx__dash_eng->store);
	uint64_t took = sx_now_ms() - t0;
	int send = 0;
	if (rc < 0) {
		msgpack_pack_map(&pk, 3);
		sx_pack_kv_str(&pk, "name", g->name);
		sx_pack_kv_int(&pk, "rendered_at", sx_wall_ms());
		sx_pack_key(&pk, "error");
		sx_pack_error(&pk, rc, sx_diag_last());
		send = 1;
	} else {
		uint8_t changed[SX_DASH_PANELS_MAX];
		for (int i = 0; i < r.npanels; i++) {
			changed[i] = 1;
			for (int j = 0; g->has_last && j < g->last.npanels; j++)
				if (strcmp(g->last.p[j].id, r.p[i].id) == 0) {
					changed[i] = g->last.p[j].hash != r.p[i].hash;
					break;
				}
			send |= changed[i];
		}
		if (send)
			pack_render(&pk, g->name, &r, changed);
		render_free(&g->last);
		g->last = r;
		g->has_last = 1;
		render_init(&r);
	}
	if (send)
		for (struct subscriber *s = g->subs; s; s = s->next)
			sx_conn_notify(s->conn, g->topic, sb.data, sb.size);
	uint64_t every = g->refresh_ms ? g->refresh_ms : g->has_last ? g->last.refresh_ms : DEFAULT_REFRESH_MS;
	/* A refresh runs on the loop: when it grows slow (its queries read more data),
	 * the next one waits longer, so that refreshes take at most a quarter of the loop. */
	if (every < 4 * took)
		every = 4 * took;
	uv_timer_start(&g->timer, group_tick, every, 0);
	render_free(&r);
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&z);
}

static int m_subscribe(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "vars", "refresh_ms", NULL};
	char name[NAME_MAX_LEN + 1];
	int64_t refresh = 0;
	const msgpack_object *vars = NULL;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, name)) < 0 ||
	    (rc = sx_arg_map(args, "vars", 0, &vars)) < 0 || (rc = sx_arg_int(args, "refresh_ms", 0, &refresh)) < 0)
		return rc;
	if (refresh && (refresh < SX_DASH_REFRESH_MIN_MS || refresh > SX_DASH_REFRESH_MAX_MS))
		return sx_diag_set(SX_EINVAL, "argument 'refresh_ms' must be %d to %d", SX_DASH_REFRESH_MIN_MS,
				   SX_DASH_REFRESH_MAX_MS);
	if (!req->conn)
		return sx_diag_set(SX_ECANCELED, "connection closed");
	msgpack_sbuffer vb;
	msgpack_packer vpk;
	msgpack_sbuffer_init(&vb);
	msgpack_packer_init(&vpk, &vb, msgpack_sbuffer_write);
	if (vars && vars->via.map.size)
		sx_pack_object(&vpk, vars);
	struct group *g = groups;
	for (; g; g = g->next)
		if (strcmp(g->name, name) == 0 && g->refresh_ms == (uint32_t)refresh && g->vars.size == vb.size &&
		    (!vb.size || memcmp(g->vars.data, vb.data, vb.size) == 0))
			break;
	if (!g) {
		struct render r;
		if (ngroups >= GROUPS_MAX) {
			msgpack_sbuffer_destroy(&vb);
			return sx_diag_set(SX_ELIMIT, "at most %d dashboard subscription groups", GROUPS_MAX);
		}
		render_init(&r);
		if ((rc = render_run(name, vars, &r)) < 0) {
			render_free(&r);
			msgpack_sbuffer_destroy(&vb);
			return rc;
		}
		if (!(g = calloc(1, sizeof(*g)))) {
			render_free(&r);
			msgpack_sbuffer_destroy(&vb);
			return sx_diag_set(SX_ENOMEM, "out of memory");
		}
		snprintf(g->name, sizeof(g->name), "%s", name);
		snprintf(g->topic, sizeof(g->topic), "dashboard.%s", name);
		g->vars = vb;
		g->refresh_ms = (uint32_t)refresh;
		g->last = r;
		g->has_last = 1;
		uv_timer_init(sx__dash_eng->loop, &g->timer);
		g->timer.data = g;
		uv_timer_start(&g->timer, group_tick, g->refresh_ms ? g->refresh_ms : r.refresh_ms, 0);
		g->next = groups;
		groups = g;
		ngroups++;
	} else {
		msgpack_sbuffer_destroy(&vb);
	}
	int have = 0;
	for (struct subscriber *s = g->subs; s; s = s->next)
		have |= s->conn == req->conn;
	if (!have) {
		struct subscriber *s = malloc(sizeof(*s));
		if (!s || (rc = sx_server_subscribe(sx__dash_eng->srv, req->conn, g->topic)) < 0) {
			free(s);
			if (!g->subs)
				group_free(g);
			return s ? rc : sx_diag_set(SX_ENOMEM, "out of memory");
		}
		s->conn = req->conn;
		sx_conn_ref(s->conn);
		s->next = g->subs;
		g->subs = s;
	}
	msgpack_pack_map(pk, 3);
	sx_pack_kv_str(pk, "topic", g->topic);
	sx_pack_kv_uint(pk, "refresh_ms", g->refresh_ms ? g->refresh_ms : g->last.refresh_ms);
	sx_pack_key(pk, "render");
	pack_render(pk, g->name, &g->last, NULL);
	return 0;
}

static int m_unsubscribe(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	char name[NAME_MAX_LEN + 1];
	int rc, removed = 0;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, name)) < 0)
		return rc;
	if (!req->conn)
		return sx_diag_set(SX_ECANCELED, "connection closed");
	for (struct group *g = groups, *next; g; g = next) {
		next = g->next;
		if (strcmp(g->name, name) != 0)
			continue;
		for (struct subscriber **pp = &g->subs; *pp;)
			if ((*pp)->conn == req->conn) {
				struct subscriber *s = *pp;
				*pp = s->next;
				sx_conn_unref(s->conn);
				free(s);
				removed++;
			} else {
				pp = &(*pp)->next;
			}
		if (!g->subs)
			group_free(g);
	}
	if (!removed)
		return sx_diag_set(SX_ENOENT, "not subscribed to dashboard '%s'", name);
	char topic[NAME_MAX_LEN + 16];
	snprintf(topic, sizeof(topic), "dashboard.%s", name);
	if (!conn_in_other_group(req->conn, NULL, name))
		sx_server_unsubscribe(sx__dash_eng->srv, req->conn, topic);
	msgpack_pack_map(pk, 2);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_int(pk, "removed", removed);
	return 0;
}

/* ---- plugin ---- */

static int start(struct sx_engine *e)
{
	sx__dash_eng = e;
	nnames = 0;
	groups = NULL;
	ngroups = 0;
	sx__dash_lua_init();
	const struct sx_script_kind kind = {KIND, validate, installed, NULL};
	int rc = sx_scripts_add_kind(e->scripts, &kind);
	if (rc < 0)
		return rc;
	const struct sx_method methods[] = {
		{"dashboard.list", SX_ROLE_READER, m_list, NULL, "the dashboards: name, title, refresh, variables, panels"},
		{"dashboard.render", SX_ROLE_READER, m_render, NULL, "every panel of a dashboard, in one snapshot {name, vars?}"},
		{"dashboard.subscribe", SX_ROLE_READER, m_subscribe, NULL,
		 "live view: the changed panels at each refresh, on topic dashboard.NAME {name, vars?, refresh_ms?}"},
		{"dashboard.unsubscribe", SX_ROLE_READER, m_unsubscribe, NULL, "stop a dashboard's live view {name}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return sx__dash_export_start(e);
}

static void stop(struct sx_engine *e)
{
	sx__dash_export_stop(e);
	while (groups)
		group_free(groups);
	sx__dash_lua_close();
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	SX_UNUSED(e);
	int subs = 0;
	for (struct group *g = groups; g; g = g->next)
		for (struct subscriber *s = g->subs; s; s = s->next)
			subs++;
	msgpack_pack_map(pk, 3);
	sx_pack_kv_int(pk, "dashboards", nnames);
	sx_pack_kv_int(pk, "subscription_groups", ngroups);
	sx_pack_kv_int(pk, "subscribers", subs);
}

const struct sx_plugin sx_plugin_dashboards = {"dashboards", start, stop, info};
