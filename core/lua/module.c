/* module.c — luaopen_sextant: the `sextant` Lua module.
 * Built twice: into the server (preloaded) and as sextant.so for luajit + busted. */
#include <lauxlib.h>
#include <lua.h>

#include "core/lua/lsx_msgpack.h"
#include "core/lua/lsx_vec.h"
#include "core/lua/module.h"
#include "core/sx.h"

int luaopen_sextant(lua_State *L)
{
	lua_newtable(L);
	lua_pushliteral(L, SX_VERSION);
	lua_setfield(L, -2, "version");
	lsx_open_sandbox(L);
	lsx_open_msgpack(L);
	lsx_open_vec(L);
	return 1;
}
