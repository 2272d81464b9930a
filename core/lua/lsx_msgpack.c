/* sextant.msgpack: encode and decode MessagePack from Lua. */
#include <lauxlib.h>
#include <lua.h>
#include <msgpack.h>

#include "core/lua/lsx_msgpack.h"
#include "core/lua/mpack.h"
#include "core/sx.h"

static int lsx_msgpack_encode(lua_State *L)
{
	luaL_checkany(L, 1);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	int rc = sx_lua_pack(L, 1, &pk, NULL);
	if (rc == 0)
		lua_pushlstring(L, sb.data ? sb.data : "", sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0) {
		lua_pushnil(L);
		lua_pushstring(L, sx_diag_last());
		return 2;
	}
	return 1;
}

static int lsx_msgpack_decode(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	if (sx_lua_unpack(L, s, len) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, sx_diag_last());
		return 2;
	}
	return 1;
}

int lsx_open_msgpack(lua_State *L)
{
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, lsx_msgpack_encode);
	lua_setfield(L, -2, "encode");
	lua_pushcfunction(L, lsx_msgpack_decode);
	lua_setfield(L, -2, "decode");
	lua_setfield(L, -2, "msgpack");
	return 0;
}
