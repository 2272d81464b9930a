/* lsx_sandbox.c — sextant.sandbox.run: source in a fresh budgeted VM.
 *
 *   ok, result = sextant.sandbox.run(source [, opts])
 *   ok, message, code = ...        -- on failure: false, "chunk:line: msg",
 *                                  -- "script_error" | "budget_exceeded" | ...
 * opts: instructions, memory (bytes), timeout_ms, coroutine_depth (0 means
 * unlimited / default; absent fields get the defaults below), chunkname.
 * The result is copied out of the VM, which is then closed: nil, booleans,
 * numbers, strings and tables of those (raw contents, metatables ignored,
 * nesting at most MAX_DEPTH); anything else makes run return false.
 * Inside a sandbox VM this function refuses to run: a nested VM would escape
 * the caller's memory budget. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "core/lua/module.h"
#include "core/lua/sandbox.h"
#include "core/sx.h"

#define MAX_DEPTH 32
#define VM_META "sextant.sandbox.vm"

static const struct sx_lua_limits defaults = {
	.instructions = 1000000000ull,
	.memory = (size_t)256 << 20,
	.coroutine_depth = 0,
	.wall_ms = 10000,
};

static int vm_gc(lua_State *L)
{
	struct sx_lua **vm = luaL_checkudata(L, 1, VM_META);
	sx_lua_free(*vm);
	*vm = NULL;
	return 0;
}

static int opt_number(lua_State *L, int t, const char *field, double dflt, double *out)
{
	lua_getfield(L, t, field);
	if (lua_isnil(L, -1)) {
		*out = dflt;
	} else if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= 0)) {
		return luaL_error(L, "sandbox.run: opts.%s must be a number >= 0", field);
	} else {
		*out = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return 0;
}

/* Copies the value at index i of F onto T. Returns NULL or the reason it cannot. */
static const char *copy_value(lua_State *F, int i, lua_State *T, int depth)
{
	switch (lua_type(F, i)) {
	case LUA_TNIL: lua_pushnil(T); return NULL;
	case LUA_TBOOLEAN: lua_pushboolean(T, lua_toboolean(F, i)); return NULL;
	case LUA_TNUMBER: lua_pushnumber(T, lua_tonumber(F, i)); return NULL;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(F, i, &n);
		lua_pushlstring(T, s, n);
		return NULL;
	}
	case LUA_TTABLE: break;
	default: return lua_typename(F, lua_type(F, i));
	}
	if (depth >= MAX_DEPTH)
		return "table nested too deep (or cyclic)";
	if (!lua_checkstack(F, 3) || !lua_checkstack(T, 4))
		return "table nested too deep";
	if (i < 0)
		i = lua_gettop(F) + i + 1;
	lua_newtable(T);
	lua_pushnil(F);
	while (lua_next(F, i)) {
		int kt = lua_type(F, -2);
		const char *why = NULL;
		if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN)
			why = lua_typename(F, kt);
		if (!why)
			why = copy_value(F, -2, T, depth + 1);
		if (!why) {
			why = copy_value(F, -1, T, depth + 1);
			if (why)
				lua_pop(T, 1);
		}
		if (why) {
			lua_pop(F, 2);
			lua_pop(T, 1);
			return why;
		}
		lua_rawset(T, -3);
		lua_pop(F, 1);
	}
	return NULL;
}

static int lsx_sandbox_run(lua_State *L)
{
	size_t len;
	const char *src = luaL_checklstring(L, 1, &len);
	struct sx_lua_limits lim = defaults;
	const char *chunkname = "sandbox";
	if (!lua_isnoneornil(L, 2)) {
		double v;
		luaL_checktype(L, 2, LUA_TTABLE);
		opt_number(L, 2, "instructions", (double)defaults.instructions, &v);
		lim.instructions = v >= 1.8e19 ? 0 : (uint64_t)v;
		opt_number(L, 2, "memory", (double)defaults.memory, &v);
		lim.memory = v >= 1.8e19 ? 0 : (size_t)v;
		opt_number(L, 2, "timeout_ms", defaults.wall_ms, &v);
		lim.wall_ms = v >= 4294967295.0 ? 0 : (uint32_t)v;
		opt_number(L, 2, "coroutine_depth", 0, &v);
		lim.coroutine_depth = v >= 4294967295.0 ? 0 : (uint32_t)v;
		lua_getfield(L, 2, "chunkname");
		if (lua_isstring(L, -1))
			chunkname = lua_tostring(L, -1);
		else if (!lua_isnil(L, -1))
			return luaL_error(L, "sandbox.run: opts.chunkname must be a string");
	}
	if (sx_lua_from_state(L))
		return luaL_error(L, "sextant.sandbox.run is not available inside the sandbox");

	/* The VM is owned by a userdata from here on, so that a Lua error while
	 * copying the result cannot leak it. */
	struct sx_lua **vm = lua_newuserdata(L, sizeof(*vm));
	*vm = NULL;
	if (luaL_newmetatable(L, VM_META)) {
		lua_pushcfunction(L, vm_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	*vm = sx_lua_new(&lim);
	if (!*vm)
		return luaL_error(L, "sandbox.run: %s", sx_diag_last());

	int rc = sx_lua_load(*vm, chunkname, src, len);
	if (rc) {
		lua_pushboolean(L, 0);
		lua_pushstring(L, sx_diag_last());
		lua_pushstring(L, sx_error_code(rc));
		sx_lua_free(*vm);
		*vm = NULL;
		return 3;
	}
	lua_State *V = sx_lua_state(*vm);
	lua_pushboolean(L, 1);
	const char *why = copy_value(V, -2, L, 0);
	if (why) {
		lua_pop(L, 1);
		lua_pushboolean(L, 0);
		lua_pushfstring(L, "%s: result holds an unsupported value (%s)", chunkname, why);
		lua_pushstring(L, sx_error_code(SX_ESCRIPT));
		sx_lua_free(*vm);
		*vm = NULL;
		return 3;
	}
	sx_lua_free(*vm);
	*vm = NULL;
	return 2;
}

void lsx_open_sandbox(lua_State *L)
{
	lua_newtable(L);
	lua_pushcfunction(L, lsx_sandbox_run);
	lua_setfield(L, -2, "run");
	lua_setfield(L, -2, "sandbox");
}
