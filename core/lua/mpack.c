#include "core/lua/mpack.h"

#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "core/rpc.h"
#include "core/sx.h"

struct pctx {
	lua_State *L;
	msgpack_packer *pk;
	size_t bytes, max_bytes;
	int max_depth;
};

static int pack_value(struct pctx *c, int idx, int depth);

static int is_array(lua_State *L, int idx, size_t *n)
{
	size_t len = lua_objlen(L, idx), count = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TNUMBER) {
			lua_pop(L, 1);
			return 0;
		}
		double k = lua_tonumber(L, -1);
		if (k != floor(k) || k < 1 || k > (double)len) {
			lua_pop(L, 1);
			return 0;
		}
		count++;
	}
	*n = len;
	return count == len;
}

static int pack_table(struct pctx *c, int idx, int depth)
{
	lua_State *L = c->L;
	size_t n;
	if (depth >= c->max_depth)
		return sx_diag_set(SX_EINVAL, "value is cyclic or nested deeper than %d levels", c->max_depth);
	if (!lua_checkstack(L, 4))
		return sx_diag_set(SX_EINVAL, "value nested too deep");
	if (is_array(L, idx, &n)) {
		msgpack_pack_array(c->pk, n);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, idx, (int)i);
			int rc = pack_value(c, lua_gettop(L), depth + 1);
			lua_pop(L, 1);
			if (rc)
				return rc;
		}
		return 0;
	}
	size_t count = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
	}
	msgpack_pack_map(c->pk, count);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int t = lua_gettop(L);
		int kt = lua_type(L, t - 1);
		if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
			lua_pop(L, 2);
			return sx_diag_set(SX_EINVAL, "a table key of type %s cannot be packed", lua_typename(L, kt));
		}
		int rc = pack_value(c, t - 1, depth + 1);
		if (!rc)
			rc = pack_value(c, t, depth + 1);
		lua_pop(L, 1);
		if (rc) {
			lua_pop(L, 1);
			return rc;
		}
	}
	return 0;
}

static int pack_value(struct pctx *c, int idx, int depth)
{
	lua_State *L = c->L;
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		msgpack_pack_nil(c->pk);
		return 0;
	case LUA_TBOOLEAN:
		lua_toboolean(L, idx) ? msgpack_pack_true(c->pk) : msgpack_pack_false(c->pk);
		return 0;
	case LUA_TNUMBER: {
		double d = lua_tonumber(L, idx);
		if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
			msgpack_pack_int64(c->pk, (int64_t)d);
		else
			msgpack_pack_double(c->pk, d);
		c->bytes += 9;
		return 0;
	}
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		c->bytes += len + 5;
		if (c->bytes > c->max_bytes)
			return sx_diag_set(SX_E2BIG, "value larger than %zu bytes", c->max_bytes);
		sx_pack_strn(c->pk, s, len);
		return 0;
	}
	case LUA_TTABLE:
		c->bytes += 5;
		return pack_table(c, idx, depth);
	default:
		return sx_diag_set(SX_EINVAL, "a %s cannot be packed", lua_typename(L, lua_type(L, idx)));
	}
}

int sx_lua_pack(lua_State *L, int idx, msgpack_packer *pk, const struct sx_mpack_limits *lim)
{
	struct pctx c = {L, pk, 0, (size_t)64 << 20, 64};
	if (lim && lim->max_bytes)
		c.max_bytes = lim->max_bytes;
	if (lim && lim->max_depth)
		c.max_depth = lim->max_depth;
	if (idx < 0 && idx > LUA_REGISTRYINDEX)
		idx = lua_gettop(L) + idx + 1;
	int top = lua_gettop(L);
	int rc = pack_value(&c, idx, 0);
	lua_settop(L, top);
	return rc;
}

void sx_lua_push_object(lua_State *L, const msgpack_object *o)
{
	luaL_checkstack(L, 3, "value nested too deep");
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: lua_pushnil(L); break;
	case MSGPACK_OBJECT_BOOLEAN: lua_pushboolean(L, o->via.boolean); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: lua_pushnumber(L, (lua_Number)o->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: lua_pushnumber(L, (lua_Number)o->via.i64); break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: lua_pushnumber(L, o->via.f64); break;
	case MSGPACK_OBJECT_STR: lua_pushlstring(L, o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN: lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size); break;
	case MSGPACK_OBJECT_EXT: lua_pushlstring(L, o->via.ext.ptr, o->via.ext.size); break;
	case MSGPACK_OBJECT_ARRAY:
		lua_createtable(L, (int)o->via.array.size, 0);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			sx_lua_push_object(L, &o->via.array.ptr[i]);
			lua_rawseti(L, -2, (int)i + 1);
		}
		break;
	case MSGPACK_OBJECT_MAP:
		lua_createtable(L, 0, (int)o->via.map.size);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			sx_lua_push_object(L, &o->via.map.ptr[i].key);
			if (lua_isnil(L, -1)) {
				lua_pop(L, 1);
				continue;
			}
			sx_lua_push_object(L, &o->via.map.ptr[i].val);
			lua_rawset(L, -3);
		}
		break;
	default: lua_pushnil(L); break;
	}
}

int sx_lua_unpack(lua_State *L, const void *buf, size_t len)
{
	struct sx_frame_scan fs;
	msgpack_zone zone;
	msgpack_object o;
	sx_frame_scan_reset(&fs);
	long n = sx_frame_scan(&fs, buf, len, len, SX_MAX_DEPTH_LIMIT);
	if (n <= 0 || (size_t)n != len)
		return sx_diag_set(SX_EPARSE, "stored value is not one MessagePack object");
	if (!msgpack_zone_init(&zone, 1024))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = sx_frame_decode(buf, len, &zone, &o);
	if (rc == 0)
		sx_lua_push_object(L, &o);
	msgpack_zone_destroy(&zone);
	return rc;
}
