/* instrument.h — load-time instrumentation of Lua source for the sandbox budgets.
 *
 * LuaJIT's count hook never fires inside compiled traces, so the budget is
 * charged by code inserted into the source itself: a call
 * `__sx_budget(w);` at the start of every function body, after the `do` of
 * every block (while/for bodies included) and `repeat`, and before every
 * `goto` statement. w is the number of tokens of the block's body (nested
 * function bodies excluded), clamped to [1, SX__INSTR_MAXW]; it is what one
 * pass through the block is charged.
 *
 * A prefix `local __sx_budget=...;` binds the check to the value the chunk is
 * called with. Nothing is inserted as a new line, so line numbers in compile
 * and run-time errors are those of the original source. Checks are never
 * inserted after labels: a label that ends a block must stay last for the
 * `goto continue` idiom, and the check before `goto` covers backward jumps.
 *
 * The lexer follows LuaJIT's: identifiers may contain bytes >= 0x80, `goto`
 * is a statement only when followed by a name, a UTF-8 BOM and a first line
 * starting with '#' are skipped. Invalid source is instrumented without
 * complaint; the compiler then reports the error at the original position.
 */
#ifndef SX_LUA_INSTRUMENT_H
#define SX_LUA_INSTRUMENT_H

#include <stddef.h>

#define SX__INSTR_NAME "__sx_budget"
#define SX__INSTR_MAXW 1000

/* Instrument src[0..len). On success stores a malloc'd buffer (the caller
 * frees it) in *out and its length in *outlen and returns 0. Returns
 * SX_ESCRIPT when the source uses the reserved identifier __sx_budget
 * ("chunkname:line: ..." in sx_diag_last(), chunkname as given) and SX_ENOMEM
 * when out of memory. */
int sx__lua_instrument(const char *chunkname, const char *src, size_t len, char **out,
		       size_t *outlen);

#endif
