/* module.h — the `sextant` Lua module.
 *
 * luaopen_sextant() pushes the module table. Each area of the math core adds
 * its functions through an lsx_open_<area>(L) function that sets fields in the
 * table on top of the stack and leaves the stack as it found it. */
#ifndef SX_LUA_MODULE_H
#define SX_LUA_MODULE_H

#include <lua.h>

int luaopen_sextant(lua_State *L);

/* sextant.sandbox: run source in a fresh budgeted VM (lsx_sandbox.c). */
void lsx_open_sandbox(lua_State *L);

#endif
