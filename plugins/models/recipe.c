/* Training recipes: script kind "models" (scripts/models/NAME.lua). A recipe
 * names the model type and hyper-parameters and selects the training data
 * (with its labels) in Lua; model.train {recipe = NAME} runs it on the loop
 * thread, under the script budgets, and trains on what it returned. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/config.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/models/internal.h"
#include "plugins/privacy/privacy.h"

#define KIND "models"
#define EVENTS_LIMIT_MAX 100000
#define EVENTS_LIMIT_DEFAULT 10000

static int rawfield(lua_State *L, int t, const char *k)
{
	lua_pushstring(L, k);
	lua_rawget(L, t);
	return lua_type(L, -1);
}

static int validate(lua_State *L, int value, const char *name, void *ud)
{
	static const char *const promote[] = {"never", "always", "not_worse", NULL};
	SX_UNUSED(ud);
	if (!lua_istable(L, value))
		return sx_diag_set(SX_ESCRIPT, "%s/%s.lua: a recipe returns a table {type, params?, data?, name?, "
				   "promote_if?, alias?, description?}", KIND, name);
	int top = lua_gettop(L);
	const char *err = NULL;
	if (rawfield(L, value, "type") != LUA_TSTRING ||
	    !sx__model_type_parse(lua_tostring(L, -1), lua_objlen(L, -1)))
		err = "'type' must be \"als\", \"logistic\", \"text\" or \"behaviour\"";
	int ty = rawfield(L, value, "params");
	if (!err && ty != LUA_TNIL && ty != LUA_TTABLE)
		err = "'params' must be a table";
	ty = rawfield(L, value, "data");
	if (!err && ty != LUA_TNIL && ty != LUA_TTABLE && ty != LUA_TFUNCTION)
		err = "'data' must be a function(ctx, args) or a table";
	ty = rawfield(L, value, "name");
	if (!err && ty != LUA_TNIL && !(ty == LUA_TSTRING && sx__models_name_ok(lua_tostring(L, -1), lua_objlen(L, -1))))
		err = "'name' must be a model name (1 to 64 bytes of [A-Za-z0-9_.-])";
	ty = rawfield(L, value, "alias");
	if (!err && ty != LUA_TNIL && !(ty == LUA_TSTRING && sx__models_name_ok(lua_tostring(L, -1), lua_objlen(L, -1))))
		err = "'alias' must be an alias name";
	ty = rawfield(L, value, "promote_if");
	if (!err && ty != LUA_TNIL) {
		int ok = 0;
		for (int i = 0; ty == LUA_TSTRING && promote[i]; i++)
			ok |= strcmp(lua_tostring(L, -1), promote[i]) == 0;
		if (!ok)
			err = "'promote_if' must be \"never\", \"always\" or \"not_worse\"";
	}
	ty = rawfield(L, value, "description");
	if (!err && ty != LUA_TNIL && ty != LUA_TSTRING)
		err = "'description' must be a string";
	lua_settop(L, top);
	return err ? sx_diag_set(SX_ESCRIPT, "%s/%s.lua: %s", KIND, name, err) : 0;
}

/* ---- ctx.events ---- */

struct ev_pack {
	msgpack_packer *pk;
	size_t n, limit;
	int with_user;
	const char *name;
	size_t name_len;
};

static int ev_pack_cb(const struct sx_event *ev, void *ud)
{
	struct ev_pack *e = ud;
	char id[SX_EVENTS_ID_MAX + 1];
	size_t idlen = 0;
	if (e->name && (ev->name_len != e->name_len || memcmp(ev->name, e->name, e->name_len) != 0))
		return 0;
	if (sx_events_user_id(NULL, ev->user, id, sizeof(id), &idlen) < 0)
		idlen = 0;
	msgpack_pack_map(e->pk, 3 + (ev->item != NULL) + (ev->props != NULL));
	sx_pack_key(e->pk, "user");
	sx_pack_strn(e->pk, id, idlen);
	sx_pack_key(e->pk, "name");
	sx_pack_strn(e->pk, ev->name, ev->name_len);
	sx_pack_kv_int(e->pk, "time", ev->time);
	if (ev->item) {
		sx_pack_key(e->pk, "item");
		sx_pack_strn(e->pk, ev->item, ev->item_len);
	}
	if (ev->props) {
		sx_pack_key(e->pk, "properties");
		msgpack_sbuffer_write(e->pk->data, ev->props, ev->props_len);
	}
	return ++e->n >= e->limit ? 1 : 0;
}

struct unpacked {
	const msgpack_sbuffer *sb;
	int ref;
};

static int unpack_protected(lua_State *L)
{
	struct unpacked *u = lua_touserdata(L, 1);
	if (sx_lua_unpack(L, u->sb->data, u->sb->size) < 0)
		return luaL_error(L, "ctx.events: the events do not decode");
	u->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

static double opt_number(lua_State *L, int t, const char *k, double dflt)
{
	int ty = rawfield(L, t, k);
	double v = ty == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
	lua_pop(L, 1);
	if (ty != LUA_TNIL && ty != LUA_TNUMBER)
		luaL_error(L, "ctx.events: '%s' must be a number", k);
	return v;
}

/* ctx.events{name?, user?, from?, to?, limit?, reverse?}: events in time
 * order (newest first with reverse), as {user, name, time, item?,
 * properties?}. */
static int lsx_events(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	double from = opt_number(L, 1, "from", 0), to = opt_number(L, 1, "to", (double)SX_EVENTS_TIME_MAX + 1);
	double limit = opt_number(L, 1, "limit", EVENTS_LIMIT_DEFAULT);
	if (!(from >= 0) || !(to <= (double)SX_EVENTS_TIME_MAX + 1) || !(from < to))
		return luaL_error(L, "ctx.events: need 0 <= from < to <= %f", (double)SX_EVENTS_TIME_MAX + 1);
	if (!(limit >= 1 && limit <= EVENTS_LIMIT_MAX))
		return luaL_error(L, "ctx.events: 'limit' must be 1 to %d", EVENTS_LIMIT_MAX);
	int rty = rawfield(L, 1, "reverse");
	int reverse = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (rty != LUA_TNIL && rty != LUA_TBOOLEAN)
		return luaL_error(L, "ctx.events: 'reverse' must be a boolean");
	char name[SX_EVENTS_ID_MAX + 1] = "", user[SX_EVENTS_ID_MAX + 1] = "";
	size_t nlen = 0, ulen = 0;
	int nty = rawfield(L, 1, "name");
	if (nty == LUA_TSTRING && (nlen = lua_objlen(L, -1)) >= 1 && nlen <= SX_EVENTS_ID_MAX)
		memcpy(name, lua_tostring(L, -1), nlen);
	else if (nty != LUA_TNIL)
		return luaL_error(L, "ctx.events: 'name' must be an event name");
	lua_pop(L, 1);
	int uty = rawfield(L, 1, "user");
	if (uty == LUA_TSTRING && (ulen = lua_objlen(L, -1)) >= 1 && ulen <= SX_EVENTS_ID_MAX)
		memcpy(user, lua_tostring(L, -1), ulen);
	else if (uty != LUA_TNIL)
		return luaL_error(L, "ctx.events: 'user' must be a user id");
	lua_pop(L, 1);

	msgpack_sbuffer sb, body;
	msgpack_packer pk, bpk;
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&body);
	msgpack_packer_init(&bpk, &body, msgpack_sbuffer_write);
	struct ev_pack e = {&bpk, 0, (size_t)limit, 0, nlen ? name : NULL, nlen};
	int rc = 0;
	if (ulen) {
		char pbuf[SX_PRIVACY_ID_BUF];
		size_t idlen;
		uint32_t idx;
		const char *id = sx_privacy_user_id(user, ulen, pbuf, &idlen);
		if (sx_events_user_index(NULL, id, idlen, &idx) == 0)
			rc = sx_events_user_scan(NULL, idx, (int64_t)from, (int64_t)to, reverse, ev_pack_cb, &e);
	} else if (!reverse) {
		rc = sx_events_range_scan(NULL, (int64_t)from, (int64_t)to, ev_pack_cb, &e);
	} else {
		msgpack_sbuffer_destroy(&sb);
		msgpack_sbuffer_destroy(&body);
		return luaL_error(L, "ctx.events: 'reverse' needs 'user'");
	}
	if (rc < 0) {
		msgpack_sbuffer_destroy(&sb);
		msgpack_sbuffer_destroy(&body);
		return luaL_error(L, "ctx.events: %s: %s", sx_error_code(rc), sx_diag_last());
	}
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, e.n);
	msgpack_sbuffer_write(&sb, body.data, body.size);
	msgpack_sbuffer_destroy(&body);
	/* Decoding allocates Lua memory and may raise: in protected mode, so
	 * that the buffer is freed whatever happens. */
	struct unpacked u = {&sb, LUA_NOREF};
	int st = lua_cpcall(L, unpack_protected, &u);
	msgpack_sbuffer_destroy(&sb);
	if (st != 0)
		return lua_error(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, u.ref);
	luaL_unref(L, LUA_REGISTRYINDEX, u.ref);
	return 1;
}

static int set_ctx(lua_State *L)
{
	const char *name = lua_touserdata(L, 1);
	if (sx_scripts_push_ctx(sx__models_eng->scripts, KIND, name) < 0)
		return 0;
	lua_pushcfunction(L, lsx_events);
	lua_setfield(L, -2, "events");
	return 0;
}

static void installed(const char *name, int ref, void *ud)
{
	SX_UNUSED(ref), SX_UNUSED(ud);
	lua_State *L = sx_lua_state(sx__models_eng->lua);
	if (lua_cpcall(L, set_ctx, (void *)name) != 0)
		lua_pop(L, 1);
}

int sx__models_recipes_start(struct sx_engine *e)
{
	static const struct sx_script_kind kind = {KIND, validate, installed, NULL};
	return sx_scripts_add_kind(e->scripts, &kind);
}

/* ---- running a recipe ---- */

static int pack_field(lua_State *L, int t, const char *k, msgpack_packer *pk)
{
	struct sx_mpack_limits lim = {0, sx__models_eng->cfg->limits.max_output_bytes};
	sx_pack_key(pk, k);
	int ty = rawfield(L, t, k);
	int rc = ty == LUA_TNIL ? (msgpack_pack_nil(pk), 0) : sx_lua_pack(L, -1, pk, &lim);
	lua_pop(L, 1);
	return rc;
}

int sx__models_recipe_run(const char *name, const msgpack_object *over, const msgpack_object *args, msgpack_sbuffer *sb)
{
	lua_State *L = sx_lua_state(sx__models_eng->lua);
	int top = lua_gettop(L), rc;
	msgpack_packer pk;
	msgpack_sbuffer base;
	msgpack_zone z;
	if (!lua_checkstack(L, 8))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	if (sx_scripts_push(sx__models_eng->scripts, KIND, name) < 0)
		return sx_diag_set(SX_ENOENT, "no model recipe '%s' (scripts/%s/%s.lua)", name, KIND, name);
	int t = lua_gettop(L);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_sbuffer_init(&base);
	msgpack_zone_init(&z, 1024);
	msgpack_pack_map(&pk, 6);
	if ((rc = pack_field(L, t, "type", &pk)) < 0 || (rc = pack_field(L, t, "name", &pk)) < 0 ||
	    (rc = pack_field(L, t, "promote_if", &pk)) < 0 || (rc = pack_field(L, t, "alias", &pk)) < 0)
		goto out;
	/* params: the recipe's, with the request's on top */
	msgpack_packer bp;
	msgpack_packer_init(&bp, &base, msgpack_sbuffer_write);
	if ((rc = pack_field(L, t, "params", &bp)) < 0)
		goto out;
	msgpack_object bo;
	size_t off = 0;
	/* pack_field wrote a key first: skip it */
	if (msgpack_unpack(base.data, base.size, &off, &z, &bo) != MSGPACK_UNPACK_EXTRA_BYTES ||
	    msgpack_unpack(base.data, base.size, &off, &z, &bo) != MSGPACK_UNPACK_SUCCESS) {
		rc = sx_diag_set(SX_EINTERNAL, "recipe params do not decode");
		goto out;
	}
	uint32_t nb = bo.type == MSGPACK_OBJECT_MAP ? bo.via.map.size : 0, no = over ? over->via.map.size : 0, keep = 0;
	/* base keys the request overrides are marked nil and skipped */
	keep = 0;
	for (uint32_t i = 0; i < nb; i++) {
		const msgpack_object *k = &bo.via.map.ptr[i].key;
		int replaced = 0;
		for (uint32_t j = 0; j < no; j++) {
			const msgpack_object *ko = &over->via.map.ptr[j].key;
			replaced |= k->type == MSGPACK_OBJECT_STR && ko->type == MSGPACK_OBJECT_STR &&
				    k->via.str.size == ko->via.str.size && !memcmp(k->via.str.ptr, ko->via.str.ptr, k->via.str.size);
		}
		keep += !replaced;
		bo.via.map.ptr[i].key.type = replaced ? MSGPACK_OBJECT_NIL : k->type;
	}
	sx_pack_key(&pk, "params");
	msgpack_pack_map(&pk, keep + no);
	for (uint32_t i = 0; i < nb; i++)
		if (bo.via.map.ptr[i].key.type != MSGPACK_OBJECT_NIL) {
			sx_pack_object(&pk, &bo.via.map.ptr[i].key);
			sx_pack_object(&pk, &bo.via.map.ptr[i].val);
		}
	for (uint32_t j = 0; j < no; j++) {
		sx_pack_object(&pk, &over->via.map.ptr[j].key);
		sx_pack_object(&pk, &over->via.map.ptr[j].val);
	}
	int dty = rawfield(L, t, "data");
	lua_pop(L, 1);
	if (dty == LUA_TFUNCTION) {
		sx_pack_key(&pk, "data");
		rc = sx_scripts_call(sx__models_eng->scripts, KIND, name, "data", args, &pk);
	} else {
		rc = pack_field(L, t, "data", &pk);
	}
out:
	if (rc < 0 && rc != SX_ESCRIPT && rc != SX_EBUDGET && rc != SX_ENOMEM)
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s: %s", KIND, name, sx_diag_last());
	lua_settop(L, top);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&base);
	return rc;
}
