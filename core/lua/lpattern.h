/* lpattern.h — Lua 5.1 pattern matching charged to the sandbox budgets.
 *
 * Drop-in replacements for string.find, string.match, string.gmatch and
 * string.gsub, with LuaJIT 2.1's (Lua 5.1) semantics: classes %a %c %d %l %p
 * %s %u %w %x %z and their negations, sets, the quantifiers * + - ?, anchors,
 * captures and position captures, %b, %f and back-references.
 * Differences from LuaJIT's own: a pattern may contain "\0" (LuaJIT stops at
 * it), and a replacement string ending in a lone '%' is an error.
 *
 * Matching runs in C, where no Lua hook or instrumented check fires, so every
 * step (one attempt to match a pattern item at a subject position) is charged
 * to the instruction budget of the VM's outermost call, and the deadline is
 * checked every few thousand steps: a backtracking pattern raises the budget
 * error instead of hanging. Recursion inside the matcher is bounded ("pattern
 * too complex"), and so is C-stack growth through gsub callbacks ("C stack
 * overflow"). Outside a budgeted call nothing is charged.
 */
#ifndef SX_LUA_LPATTERN_H
#define SX_LUA_LPATTERN_H

#include <stdint.h>

#include <lua.h>

int sx__lua_str_find(lua_State *L);
int sx__lua_str_match(lua_State *L);
int sx__lua_str_gmatch(lua_State *L);
int sx__lua_str_gsub(lua_State *L);

/* Implemented in sandbox.c. Both may raise (never return) when a budget is
 * exhausted or the C stack used since the outermost call began is too deep;
 * both do nothing for a state not created by sx_lua_new or outside a call. */
void sx__lua_charge(lua_State *L, uint64_t steps);
void sx__lua_cstack_check(lua_State *L);

#endif
