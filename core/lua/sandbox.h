/* sandbox.h — the engine's LuaJIT VM: sandboxed environments and per-call budgets.
 *
 * One struct sx_lua owns one lua_State, created with a counting allocator so
 * that memory can be capped per call. Only the thread that created it may use it.
 *
 * Every script is compiled from source only (bytecode is refused) into a fresh
 * environment table whose globals are an allowlist (see sandbox.c); what one
 * environment does to its globals is invisible to every other. Loops and
 * function entries are instrumented at load time so that the instruction
 * budget holds inside JIT-compiled code, where LuaJIT's count hook never fires.
 *
 * Budgets apply to the outermost sx_lua_call()/sx_lua_load() in progress:
 * instructions (approximate: each pass through a loop body or function body
 * is charged the number of tokens in it; pattern matching one unit per step;
 * table.sort/insert/remove/concat/maxn and unpack their work up front),
 * bytes allocated above what was in use when the call began, coroutine nesting
 * depth, and a wall-clock limit. The clock is read at the same points (every
 * 0.5-2 ms of run time), every few thousand pattern-matching steps, and by the
 * allocator every 256 allocations or MiB; and a watchdog thread per VM
 * signals the VM's thread when the deadline passes during a call, which stops
 * interpreted code at its next instruction, compiled code at its next budget
 * check, and host C loops that poll sx_lua_expired() (the signal is
 * SIGRTMIN+5, handled with SA_RESTART). A single library call that neither
 * allocates nor calls back into Lua (comparing two long strings) is not
 * interrupted, which the memory cap bounds.
 * Caveat: a __gc metamethod must never raise; this LuaJIT crashes when a
 * finalizer's error unwinds through compiled code. Scripts cannot install
 * finalizers; host code must keep its own from raising.
 * A stopped call cannot be caught by pcall inside the script: once a budget is
 * exhausted every further check raises again until the outermost call returns.
 *
 * The VM's string metatable is shared by every environment: its __index is a
 * private table holding the sandbox's string functions (budgeted find, match,
 * gmatch, gsub, capped rep), and getmetatable("") returns false. Host code in
 * the same VM gets those functions too for method calls ("x"):find(...).
 * docs/notes-sandbox.md lists the allowed globals.
 */
#ifndef SX_LUA_SANDBOX_H
#define SX_LUA_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

struct sx_lua_limits {
	uint64_t instructions;    /* per outermost call; 0 = unlimited */
	size_t memory;            /* bytes above the level at call start; 0 = unlimited */
	uint32_t coroutine_depth; /* nested resumes; 0 = default (16) */
	uint32_t wall_ms;         /* per outermost call; 0 = unlimited */
};

struct sx_lua;

/* A new VM with the given default limits (copied). NULL on allocation failure. */
struct sx_lua *sx_lua_new(const struct sx_lua_limits *limits);
/* Closes the state (running __gc finalizers under a budget) and frees it. */
void sx_lua_free(struct sx_lua *lx);

lua_State *sx_lua_state(struct sx_lua *lx);
void sx_lua_set_limits(struct sx_lua *lx, const struct sx_lua_limits *limits);
const struct sx_lua_limits *sx_lua_limits(const struct sx_lua *lx);

/* Bytes the VM has allocated now. */
size_t sx_lua_memory(const struct sx_lua *lx);

/* A module name that sandboxed `require` may load, and the C function that
 * opens it (called with the name as its argument, must return one value).
 * "sextant" is always allowed. Registered entries live as long as the VM.
 * `open` runs once per environment that requires the module (the value is
 * cached per environment), so it must return a fresh table each time, or one
 * whose changes do not matter: what one script does to it must not reach
 * another. "string", "table", "math", "os", "coroutine" and "bit" return the
 * environment's own copies. */
int sx_lua_allow_module(struct sx_lua *lx, const char *name, lua_CFunction open);

/* What sandboxed `require` calls for a name that is neither a standard
 * library nor a module allowed above: fn(name) with `ud` as its upvalue 1 (a
 * light userdata); it returns the module's value or raises, and the value is
 * cached per environment like any module. Built-in names always win, so the
 * fallback never sees them. NULL fn removes it. The scripts registry uses it
 * for lib scripts (core/scripts.h). */
int sx_lua_set_require_fallback(struct sx_lua *lx, lua_CFunction fn, void *ud);

/* 1 if `require(name)` resolves to a built-in module (a standard library,
 * "sextant" or one allowed with sx_lua_allow_module), else 0. */
int sx_lua_module_builtin(struct sx_lua *lx, const char *name);

/* Compile `src` (text only; a chunk that starts with "\033" is refused) as
 * `chunkname`, in a fresh sandboxed environment, and run it under the budgets.
 * On success pushes two values: the chunk's first result, then its environment
 * table, and returns 0. On failure pushes nothing and returns SX_ESCRIPT (syntax
 * or runtime error) or SX_EBUDGET, with "chunkname:line: message" in sx_diag_last().
 * `chunkname` is shown as given ("=name" and "@file" keep Lua's meaning); line
 * numbers are those of `src` (instrumentation adds no lines). The identifier
 * __sx_budget is reserved (SX_ESCRIPT). The chunk receives no arguments of its
 * own: `...` at its top level holds the budget check function. The result is
 * returned whatever its type; checking it is the caller's job. */
int sx_lua_load(struct sx_lua *lx, const char *chunkname, const char *src, size_t len);
/* sx_lua_load on the thread L of a VM made by sx_lua_new (the main state or a
 * coroutine), for host functions that load a chunk from inside a call: the
 * load then runs within the budgets of the outermost call. SX_EINVAL if L is
 * not such a thread. */
int sx_lua_load_state(lua_State *L, const char *chunkname, const char *src, size_t len);

/* Like lua_pcall(L, nargs, nresults, 0) on the function below the nargs
 * arguments on top of the stack, with the budgets. On failure pops the function
 * and arguments, pushes nothing and returns SX_ESCRIPT or SX_EBUDGET (SX_ENOMEM
 * if malloc itself failed) with the message in sx_diag_last():
 * "chunkname:line: message" for errors raised with a position; for a budget,
 * "chunkname:line: instruction budget exceeded (N instructions)" (also
 * "memory budget exceeded (N bytes)", "time limit exceeded (N ms)",
 * "coroutine nesting too deep (N)"), where the line is that of the script when
 * the budget ran out, or just the function's chunkname when unknown (memory);
 * "chunkname: (error object is a table value)" for non-string error objects,
 * whose __tostring is never called. Reentrant: a nested call runs within the
 * budgets of the outermost one. The caller must leave LUA_MINSTACK free slots.
 * After a failed outermost call a full collection runs, so sx_lua_memory()
 * drops back near its level before the call. */
int sx_lua_call(struct sx_lua *lx, int nargs, int nresults);

/* sx_lua_call on the thread L of a VM made by sx_lua_new (the main state or a
 * coroutine): host functions must use this one, as they may be running in a
 * coroutine while the main state is suspended. SX_EINVAL if L is not such a
 * thread. In a nested call a memory error may also be raised as a Lua error,
 * like from any Lua API call made by a C function. */
int sx_lua_call_state(lua_State *L, int nargs, int nresults);

/* The VM that owns the thread L, or NULL if L was not made by sx_lua_new. */
struct sx_lua *sx_lua_from_state(lua_State *L);

/* Is a budgeted call in progress? (Host functions use it to refuse reentry.) */
int sx_lua_in_call(const struct sx_lua *lx);
/* How many budgeted calls and loads are running, one inside another (0:
 * none). A host function tells its own script's code from code it reached
 * through another host call by it. */
int sx_lua_depth(const struct sx_lua *lx);

/* 1 once the call in progress on L's VM is past its wall-clock limit. Host
 * functions that loop in C (scans, bulk maths) poll it and return early; the
 * call then fails with "time limit exceeded" when control is back in Lua. */
int sx_lua_expired(lua_State *L);

#endif
