/* lsx_vec.h — `sextant.vec`: vector helpers and the HNSW index for Lua.
 *
 * lsx_open_vec(L) sets the field `vec` of the table on top of the stack and
 * leaves the stack as it found it. The functions are documented in
 * docs/notes-vec.md; they follow core/math/vec.h and core/math/hnsw.h. */
#ifndef SX_LUA_LSX_VEC_H
#define SX_LUA_LSX_VEC_H

#include <lua.h>

int lsx_open_vec(lua_State *L);

#endif
