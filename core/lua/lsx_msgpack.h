/* lsx_msgpack.h — sextant.msgpack.encode(value) → string | nil, err;
 * sextant.msgpack.decode(string) → value | nil, err. */
#ifndef SX_LUA_LSX_MSGPACK_H
#define SX_LUA_LSX_MSGPACK_H

#include <lua.h>

/* Sets field "msgpack" in the table on top of the stack. */
int lsx_open_msgpack(lua_State *L);

#endif
