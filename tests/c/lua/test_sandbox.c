/* test_sandbox.c — the Lua sandbox: budgets, escapes, isolation, errors, patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "core/lua/sandbox.h"
#include "core/sx.h"

static struct sx_lua *vm(uint64_t instructions, size_t memory, uint32_t wall_ms)
{
	struct sx_lua_limits lim = {.instructions = instructions, .memory = memory, .wall_ms = wall_ms};
	struct sx_lua *lx = sx_lua_new(&lim);
	assert_non_null(lx);
	return lx;
}

/* Loads src; on success leaves result and env on the stack. */
static int load(struct sx_lua *lx, const char *src)
{
	return sx_lua_load(lx, "t", src, strlen(src));
}

/* Loads src and pops what it pushed. */
static int run(struct sx_lua *lx, const char *src)
{
	int rc = load(lx, src);
	if (rc == 0)
		lua_pop(sx_lua_state(lx), 2);
	return rc;
}

static void expect_number(struct sx_lua *lx, const char *src, double want)
{
	lua_State *L = sx_lua_state(lx);
	int rc = load(lx, src);
	if (rc)
		fail_msg("%s -> %s", src, sx_diag_last());
	if (lua_type(L, -2) != LUA_TNUMBER || lua_tonumber(L, -2) != want)
		fail_msg("%s -> %s %s, want %g", src, luaL_typename(L, -2),
			 lua_tostring(L, -2) ? lua_tostring(L, -2) : "", want);
	lua_pop(L, 2);
	assert_int_equal(lua_gettop(L), 0);
}

static void expect_true(struct sx_lua *lx, const char *src)
{
	lua_State *L = sx_lua_state(lx);
	int rc = load(lx, src);
	if (rc)
		fail_msg("%s -> %s", src, sx_diag_last());
	if (lua_type(L, -2) != LUA_TBOOLEAN || !lua_toboolean(L, -2))
		fail_msg("not true: %s", src);
	lua_pop(L, 2);
}

static void expect_fail(struct sx_lua *lx, const char *src, int want_rc, const char *want_msg)
{
	lua_State *L = sx_lua_state(lx);
	int top = lua_gettop(L);
	int rc = load(lx, src);
	if (rc != want_rc)
		fail_msg("%s: rc %d (%s), want %d", src, rc, rc ? sx_diag_last() : "ok", want_rc);
	if (want_msg && !strstr(sx_diag_last(), want_msg))
		fail_msg("%s: message '%s' lacks '%s'", src, sx_diag_last(), want_msg);
	assert_int_equal(lua_gettop(L), top);
}

static void expect_alive(struct sx_lua *lx)
{
	expect_number(lx, "local s = 0 for i = 1, 10 do s = s + i end return s", 55);
}

/* ---- runaway CPU ---------------------------------------------------------- */

static const char *const runaway[] = {
	/* warmed up first, so that the final call runs in a compiled trace */
	"local function spin(limit)\n"
	"  local i = 0\n"
	"  while true do\n"
	"    i = i + 1\n"
	"    if limit and i >= limit then return i end\n"
	"  end\n"
	"end\n"
	"spin(5000) spin(5000)\n"
	"spin()\n",
	"for i = 1, 1e12 do end",
	"local i = 0\n::top::\ni = i + 1\ngoto top",
	"repeat until false",
	"local function f() return f() end return f()",
	"while true do pcall(function() while true do end end) end",
	"while true do xpcall(function() while true do end end, function() while true do end end) end",
	"local ok, e = pcall(function() for i = 1, 1e12 do end end) return ok, e",
	"local co = coroutine.wrap(function() while true do end end) co()",
	"local co = coroutine.create(function() while true do end end)\n"
	"while true do coroutine.resume(co) end",
	"return (('a'):rep(3e4)):find(('a-'):rep(30) .. 'b')",
	"local s = ('a'):rep(3e4) while true do pcall(string.find, s, ('a-'):rep(30) .. 'b') end",
	"local t = {} for i = 1, 100 do t[i] = i end table.sort(t, function(a, b) while true do end end)",
	"local t = setmetatable({}, {__index = function() while true do end end}) return t.x",
	"('x'):gsub('.', function() while true do end end)",
	"local t = setmetatable({}, {__tostring = function(x) return tostring(x) end}) return tostring(t)",
	/* the chunk's `...` is the budget check: weights it never writes cannot
	 * give budget back */
	"local chk = ... chk(-1e300) while true do end",
	"local chk = ... chk(0/0) while true do end",
	"local chk = ... chk(-math.huge) for i = 1, 1e12 do chk(-1e9) end",
};

static void test_runaway_instructions(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(20000000, 32 << 20, 5000);
	size_t base = sx_lua_memory(lx);
	for (size_t i = 0; i < SX_ARRAY_SIZE(runaway); i++) {
		uint64_t t0 = sx_now_ms();
		expect_fail(lx, runaway[i], SX_EBUDGET, "instruction budget exceeded (20000000 instructions)");
		uint64_t ms = sx_now_ms() - t0;
		if (ms > 1500)
			fail_msg("case %zu took %llu ms", i, (unsigned long long)ms);
		expect_alive(lx);
		assert_true(sx_lua_memory(lx) < base + (1 << 20));
	}
	/* the position is the script's, not the sandbox's */
	expect_fail(lx, runaway[0], SX_EBUDGET, "t:");
	expect_fail(lx, "\n\nwhile true do end", SX_EBUDGET, "t:3: instruction budget exceeded");
	sx_lua_free(lx);
}

static void test_runaway_time(void **state)
{
	(void)state;
	static const char *const cases[] = {
		"while true do end",
		"return (('a'):rep(3e4)):find(('a-'):rep(30) .. 'b')",
		/* each iteration is one long C call */
		"local t = {} for i = 1, 2e5 do t[i] = i end while true do table.sort(t) end",
		"local t = {} while true do table.insert(t, 1, true) end",
		"local t = {} for i = 1, 1e5 do t[i] = i end while true do table.maxn(t) end",
		"local t = {} for i = 1, 1e5 do t[i] = 'x' end while true do table.concat(t) end",
		"local t = {} for i = 1, 1e5 do t[i] = i end while true do table.remove(t, 1) table.insert(t, 1, 0) end",
		"local s = ('x'):rep(4e6) while true do local u = s:upper() end",
	};
	struct sx_lua *lx = vm(0, 64 << 20, 200);
	for (size_t i = 0; i < SX_ARRAY_SIZE(cases); i++) {
		uint64_t t0 = sx_now_ms();
		int rc = run(lx, cases[i]);
		uint64_t ms = sx_now_ms() - t0;
		assert_int_equal(rc, SX_EBUDGET);
		if (!strstr(sx_diag_last(), "time limit exceeded (200 ms)"))
			fail_msg("case %zu: %s", i, sx_diag_last());
		if (ms < 150 || ms > 1000)
			fail_msg("case %zu stopped after %llu ms", i, (unsigned long long)ms);
		expect_alive(lx);
	}
	sx_lua_free(lx);
}

/* ---- memory --------------------------------------------------------------- */

/* A host function that spends `ms` in C without allocating or calling Lua. */
static int spin(lua_State *L)
{
	uint64_t until = sx_now_ms() + (uint64_t)luaL_checknumber(L, 1);
	while (sx_now_ms() < until)
		;
	return 0;
}

/* A host loop that polls the watchdog (up to 5 s). */
static int poll_until_expired(lua_State *L)
{
	uint64_t until = sx_now_ms() + 5000;
	while (!sx_lua_expired(L) && sx_now_ms() < until)
		;
	lua_pushboolean(L, sx_lua_expired(L));
	return 1;
}

static uint64_t call_with(struct sx_lua *lx, const char *src, lua_CFunction f)
{
	lua_State *L = sx_lua_state(lx);
	assert_int_equal(load(lx, src), 0);
	lua_pop(L, 1);
	lua_pushcfunction(L, f);
	uint64_t t0 = sx_now_ms();
	int rc = sx_lua_call(lx, 1, 0);
	uint64_t ms = sx_now_ms() - t0;
	assert_int_equal(rc, SX_EBUDGET);
	if (!strstr(sx_diag_last(), "time limit exceeded (50 ms)"))
		fail_msg("%s", sx_diag_last());
	return ms;
}

/* Time spent inside C: the watchdog stops the call soon after its deadline,
 * not at the next budget settle (which could be dozens of slow calls later). */
static void test_watchdog(void **state)
{
	SX_UNUSED(state);
	struct sx_lua *lx = vm(0, 64 << 20, 50);
	uint64_t ms = call_with(lx, "return function(spin) for i = 1, 300 do spin(10) end end", spin);
	if (ms < 50 || ms > 150)
		fail_msg("a loop of 10 ms C calls stopped after %llu ms", (unsigned long long)ms);
	expect_alive(lx);
	ms = call_with(lx, "return function(poll) local expired = poll() while true do end end",
		       poll_until_expired);
	if (ms < 50 || ms > 150)
		fail_msg("a polling host loop stopped after %llu ms", (unsigned long long)ms);
	/* pcall cannot keep the script going once the deadline has passed */
	ms = call_with(lx, "return function(spin) for i = 1, 300 do pcall(spin, 10) end end", spin);
	if (ms < 50 || ms > 150)
		fail_msg("pcall'ed C calls stopped after %llu ms", (unsigned long long)ms);
	expect_alive(lx);
	/* a later call within its limit is not disturbed by the last one's signal */
	expect_number(lx, "local s = 0 for i = 1, 1e6 do s = s + 1 end return s", 1e6);
	sx_lua_free(lx);
}

static void test_memory(void **state)
{
	(void)state;
	static const char *const budget[] = {
		"local t = {} for i = 1, 1e9 do t[i] = i end",
		"return #string.rep('x', 2^30)",
		"return #('x'):rep(2^30)",
		"local s = 'x' for i = 1, 40 do s = s .. s end return #s",
		"local t = {} while true do t[#t + 1] = {} end",
		"local ok = pcall(string.rep, 'x', 2^30) return ok",
		"local ok = pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end) return ok",
		"local t = {} for i = 1, 1e9 do t[i] = tostring(i) .. 'abcdefgh' end",
	};
	struct sx_lua *lx = vm(1000000000, 16 << 20, 5000);
	size_t base = sx_lua_memory(lx);
	for (size_t i = 0; i < SX_ARRAY_SIZE(budget); i++) {
		expect_fail(lx, budget[i], SX_EBUDGET, "memory budget exceeded (16777216 bytes)");
		if (sx_lua_memory(lx) > base + (256 << 10))
			fail_msg("case %zu: %zu bytes left, %zu before", i, sx_lua_memory(lx), base);
		expect_alive(lx);
	}
	expect_fail(lx, "return select('#', unpack({}, 1, 1e8))", SX_ESCRIPT, "too many results to unpack");
	expect_fail(lx, "collectgarbage('stop')", SX_ESCRIPT, "only \"count\"");
	expect_fail(lx, "return #string.rep('x', 2^31)", SX_ESCRIPT, "resulting string too large");
	expect_fail(lx, "return #string.rep('xy', 2^53, ',')", SX_ESCRIPT, "resulting string too large");
	assert_true(sx_lua_memory(lx) < base + (256 << 10));
	/* garbage is collected, not counted: 40 MB allocated in total under a 16 MB cap */
	expect_number(lx, "for i = 1, 250 do local t = {} for j = 1, 1e4 do t[j] = j end end return 1", 1);
	expect_number(lx, "local n = 0 for i = 1, 2000 do n = n + #(('x'):rep(20000) .. i) end return n", 2000 * 20000 + 6893);
	/* the cap is relative to the level at the start of the call */
	expect_number(lx, "big = {} for i = 1, 1e6 do big[i] = i end return #big", 1e6);
	expect_number(lx, "local t = {} for i = 1, 5e5 do t[i] = i end return #t", 5e5);
	sx_lua_free(lx);
}

/* ---- stack ---------------------------------------------------------------- */

static void test_stack(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(100000000, 64 << 20, 5000);
	expect_fail(lx, "local function f() f() end f()", SX_ESCRIPT, "stack overflow");
	expect_fail(lx, "local function f() return 1 + f() end f()", SX_ESCRIPT, "stack overflow");
	expect_fail(lx, "local function f() coroutine.wrap(f)() end f()", SX_EBUDGET,
		    "coroutine nesting too deep (16)");
	expect_fail(lx, "local function f() local co = coroutine.create(f) coroutine.resume(co) end f()",
		    SX_EBUDGET, "coroutine nesting too deep");
	expect_fail(lx, "local function f() pcall(coroutine.wrap(f)) end f()", SX_EBUDGET,
		    "coroutine nesting too deep");
	/* C-stack recursion through a callback: LuaJIT's own gsub crashes here */
	expect_fail(lx, "local function f() ('x'):gsub('.', f) end f()", SX_ESCRIPT, "C stack overflow");
	int rc = run(lx, "local function c(a, b) table.sort({3, 2, 1}, c) return a < b end table.sort({3, 2, 1}, c)");
	assert_int_equal(rc, SX_ESCRIPT);
	rc = run(lx, "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x");
	assert_int_equal(rc, SX_ESCRIPT);
	expect_number(lx, "local n = 0 for i = 1, 16 do coroutine.wrap(function() n = n + 1 end)() end return n", 16);
	/* nesting to the limit is fine */
	expect_number(lx, "local function f(d) if d == 0 then return 0 end return coroutine.wrap(f)(d - 1) + 1 end return f(15)", 15);
	expect_alive(lx);
	sx_lua_free(lx);
}

/* ---- escapes -------------------------------------------------------------- */

static const char *const inert[] = {
	"return os.execute == nil and os.exit == nil and os.getenv == nil and os.remove == nil "
	"and os.rename == nil and os.tmpname == nil and os.setlocale == nil",
	"return io == nil and package == nil and debug == nil and jit == nil and ffi == nil",
	"return setfenv == nil and getfenv == nil and loadstring == nil and load == nil "
	"and dofile == nil and loadfile == nil and module == nil",
	"return string.dump == nil and newproxy == nil and gcinfo == nil and print == nil",
	"return not pcall(require, 'ffi') and not pcall(require, 'jit') and not pcall(require, 'io') "
	"and not pcall(require, 'debug') and not pcall(require, 'package')",
	"return getmetatable('') == false",
	"return not pcall(function() getmetatable('').__index = {} end)",
	"return not pcall(function() getmetatable('').__index.upper = nil end)",
	"return not pcall(rawset, getmetatable(''), '__index', {})",
	"return not pcall(function() return load(string.dump(function() end)) end)",
	"return not pcall(function() setfenv(1, {}) end)",
	"return not pcall(function() return loadstring('return 1') end)",
	"return _G == _G._G and type(_G) == 'table'",
	"return collectgarbage('count') > 0",
	"return not pcall(collectgarbage) and not pcall(collectgarbage, 'collect')",
	"return math.randomseed == nil and type(math.random()) == 'number'",
	"return table.move == nil",
	"return not pcall(require('sextant').sandbox.run, 'return 1')",
};

static const char *const allowed[] = {
	"_G:table", "_VERSION:string", "assert:function", "bit:table", "collectgarbage:function",
	"coroutine:table", "error:function", "getmetatable:function", "ipairs:function",
	"math:table", "next:function", "os:table", "pairs:function", "pcall:function",
	"rawequal:function", "rawget:function", "rawlen:function", "rawset:function",
	"require:function", "select:function", "setmetatable:function", "string:table",
	"table:table", "tonumber:function", "tostring:function", "type:function",
	"unpack:function", "xpcall:function",
	"bit.arshift:function", "bit.band:function", "bit.bnot:function", "bit.bor:function",
	"bit.bswap:function", "bit.bxor:function", "bit.lshift:function", "bit.rol:function",
	"bit.ror:function", "bit.rshift:function", "bit.tobit:function", "bit.tohex:function",
	"coroutine.create:function", "coroutine.isyieldable:function", "coroutine.resume:function",
	"coroutine.running:function", "coroutine.status:function", "coroutine.wrap:function",
	"coroutine.yield:function",
	"math.abs:function", "math.acos:function", "math.asin:function", "math.atan:function",
	"math.atan2:function", "math.ceil:function", "math.cos:function", "math.cosh:function",
	"math.deg:function", "math.exp:function", "math.floor:function", "math.fmod:function",
	"math.frexp:function", "math.huge:number", "math.ldexp:function", "math.log:function",
	"math.log10:function", "math.max:function", "math.min:function", "math.modf:function",
	"math.pi:number", "math.pow:function", "math.rad:function", "math.random:function",
	"math.sin:function", "math.sinh:function", "math.sqrt:function", "math.tan:function",
	"math.tanh:function",
	"os.clock:function", "os.date:function", "os.time:function",
	"string.byte:function", "string.char:function", "string.find:function",
	"string.format:function", "string.gmatch:function", "string.gsub:function",
	"string.len:function", "string.lower:function", "string.match:function",
	"string.rep:function", "string.reverse:function", "string.sub:function",
	"string.upper:function",
	"table.concat:function", "table.insert:function", "table.maxn:function",
	"table.remove:function", "table.sort:function",
};

static int is_allowed(const char *entry)
{
	for (size_t i = 0; i < SX_ARRAY_SIZE(allowed); i++)
		if (strcmp(allowed[i], entry) == 0)
			return 1;
	return 0;
}

static void test_escapes(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(100000000, 32 << 20, 5000);
	lua_State *L = sx_lua_state(lx);
	for (size_t i = 0; i < SX_ARRAY_SIZE(inert); i++)
		expect_true(lx, inert[i]);

	/* every reachable global, and every field of every library table */
	int rc = load(lx, "local out = {}\n"
			  "for k, v in pairs(_G) do\n"
			  "  out[#out + 1] = k .. ':' .. type(v)\n"
			  "  if type(v) == 'table' and v ~= _G then\n"
			  "    for k2, v2 in pairs(v) do out[#out + 1] = k .. '.' .. k2 .. ':' .. type(v2) end\n"
			  "  end\n"
			  "end\n"
			  "return table.concat(out, ' ')");
	assert_int_equal(rc, 0);
	char *all = strdup(lua_tostring(L, -2));
	lua_pop(L, 2);
	int n = 0;
	for (char *save = NULL, *tok = strtok_r(all, " ", &save); tok; tok = strtok_r(NULL, " ", &save), n++)
		if (!is_allowed(tok))
			fail_msg("not on the allowlist: %s", tok);
	free(all);
	/* rawlen is absent from LuaJIT 2.1: the allowlist has one entry to spare */
	assert_true(n >= (int)SX_ARRAY_SIZE(allowed) - 1);

	/* bytecode, raw or behind a BOM or a #! line */
	lua_State *P = luaL_newstate();
	luaL_openlibs(P);
	assert_int_equal(luaL_dostring(P, "return string.dump(function() return 1 end)"), 0);
	size_t blen;
	const char *bc = lua_tolstring(P, -1, &blen);
	assert_int_equal(sx_lua_load(lx, "bc", bc, blen), SX_ESCRIPT);
	char *bom = malloc(blen + 3);
	memcpy(bom, "\xef\xbb\xbf", 3);
	memcpy(bom + 3, bc, blen);
	assert_int_equal(sx_lua_load(lx, "bc", bom, blen + 3), SX_ESCRIPT);
	free(bom);
	lua_close(P);
	expect_fail(lx, "\x1bLJ\x02\x00", SX_ESCRIPT, "binary");
	expect_fail(lx, "#!/bin/sh\n\x1bLJ\x02", SX_ESCRIPT, NULL);
	assert_int_equal(lua_gettop(L), 0);
	sx_lua_free(lx);
}

/* ---- isolation ------------------------------------------------------------ */

static void test_isolation(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(100000000, 32 << 20, 5000);
	lua_State *L = sx_lua_state(lx);
	int rc = load(lx, "string.upper = nil; string.find = nil; rawset(string, 'lower', function() return 'evil' end)\n"
			  "math.x = 1; math.floor = nil; table.insert = nil; coroutine.wrap = nil\n"
			  "os.time = nil; bit.band = nil; require('string').rep = nil\n"
			  "require('sextant').version = 'evil'\n"
			  "leaked = 1; assert = nil; _G.pairs = nil\n"
			  "setmetatable(_G, {__index = function() return 'evil' end, __newindex = function() end})\n"
			  "pcall(function() getmetatable('').__index.upper = nil end)\n"
			  "return leaked");
	assert_int_equal(rc, 0);
	/* A's own environment holds its changes */
	assert_int_equal(lua_tointeger(L, -2), 1);
	lua_getfield(L, -1, "string");
	lua_getfield(L, -1, "upper");
	assert_true(lua_isnil(L, -1));
	lua_settop(L, 0);

	expect_true(lx, "return string.upper('a') == 'A' and ('a'):upper() == 'A' and string.lower('A') == 'a'\n"
			"and string.find('abc', 'b') == 2 and ('abc'):find('c') == 3 and math.x == nil\n"
			"and math.floor(1.5) == 1 and table.insert ~= nil and coroutine.wrap ~= nil\n"
			"and os.time ~= nil and bit.band ~= nil and string.rep('a', 2) == 'aa'\n"
			"and require('sextant').version ~= 'evil' and leaked == nil and assert ~= nil\n"
			"and pairs ~= nil and getmetatable(_G) == nil and undefined_name == nil");
	/* the same table is returned by require within one environment */
	expect_true(lx, "return require('string') == string and require('sextant') == require('sextant')");
	sx_lua_free(lx);
}

/* ---- load errors and instrumentation -------------------------------------- */

static void test_load_errors(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(100000000, 32 << 20, 5000);
	lua_State *L = sx_lua_state(lx);
	expect_fail(lx,
		    "local function f(x)\n"
		    "  for i = 1, 3 do\n"
		    "    while x do x = nil end\n"
		    "  end\n"
		    "  repeat x = 1 until x\n"
		    "end\n"
		    "local y = = 2\n",
		    SX_ESCRIPT, "t:7: unexpected symbol near '='");
	expect_fail(lx, "for i = 1, 2 do\n  local x = 1\n", SX_ESCRIPT, "'end' expected (to close 'for' at line 1)");
	expect_fail(lx,
		    "local function f()\n"
		    "  for i = 1, 2 do\n"
		    "    if i == 2 then\n"
		    "      error('boom')\n"
		    "    end\n"
		    "  end\n"
		    "end\n"
		    "f()\n",
		    SX_ESCRIPT, "t:4: boom");
	expect_fail(lx, "local t = nil\nlocal function g() return t.x end\nreturn g()", SX_ESCRIPT,
		    "t:2: attempt to index upvalue 't' (a nil value)");
	expect_fail(lx, "local __sx_budget = 1", SX_ESCRIPT, "t:1: the name '__sx_budget' is reserved");
	expect_fail(lx, "\nreturn function() __sx_budget = nil end", SX_ESCRIPT, "t:2:");

	assert_int_equal(sx_lua_load(lx, "@scripts/x.lua", "\n\nerror('e')", strlen("\n\nerror('e')")), SX_ESCRIPT);
	assert_string_equal(sx_diag_last(), "scripts/x.lua:3: e");

	/* any result is returned as it is, with the environment */
	assert_int_equal(load(lx, "return function() return 5 end"), 0);
	assert_int_equal(lua_type(L, -2), LUA_TFUNCTION);
	assert_int_equal(lua_type(L, -1), LUA_TTABLE);
	lua_getfield(L, -1, "_G");
	assert_true(lua_rawequal(L, -1, -2));
	lua_pop(L, 2);
	assert_int_equal(sx_lua_call(lx, 0, 1), 0);
	assert_int_equal(lua_tointeger(L, -1), 5);
	lua_settop(L, 0);
	assert_int_equal(load(lx, "local x = 1"), 0);
	assert_true(lua_isnil(L, -2));
	lua_settop(L, 0);
	expect_number(lx, "return 42, 43", 42);

	/* what the lexer must leave alone */
	assert_int_equal(load(lx, "return [==[ while true do end ]] ]==] .. \"do \\\"end\\\" function\" .. 'repeat'"
				  " --[[ for i = 1, 2 do end ]] -- do end\n"),
			 0);
	assert_string_equal(lua_tostring(L, -2), " while true do end ]] do \"end\" functionrepeat");
	lua_settop(L, 0);
	expect_number(lx, "return 0x10 + 1e1 + .5 + 2.5e-1 + 0x1p4 -- 42.75", 42.75);
	expect_number(lx, "#!/usr/bin/env luajit\nreturn 7", 7);
	expect_number(lx, "\xef\xbb\xbfreturn 8", 8);
	expect_number(lx, "\xef\xbb\xbf#!x\nreturn 9", 9);
	expect_number(lx, "local goto = 5 return goto", 5);
	expect_number(lx, "local s = 0\n"
			  "for i = 1, 5 do\n"
			  "  if i % 2 == 0 then goto continue end\n"
			  "  local x = i\n"
			  "  s = s + x\n"
			  "  ::continue::\n"
			  "end\n"
			  "return s",
		      9);
	expect_number(lx, "local t = {a = {b = function(self, x) return x end}}\n"
			  "function t.a.b2(x) return x * 2 end\n"
			  "function t.a:c(...) return select('#', ...) end\n"
			  "return t.a:b(1) + t.a.b2(2) + t.a:c(1, 2, 3)",
		      8);
	expect_number(lx, "local n = 0 local i = 0 while i < 10 do i = i + 1 do n = n + 1 end end return n", 10);
	expect_number(lx, "return select('#', ...)", 1);
	assert_int_equal(lua_gettop(L), 0);
	sx_lua_free(lx);
}

/* ---- bad results ---------------------------------------------------------- */

static int gc_raise(lua_State *L) { return luaL_error(L, "raised by a C function"); }

static int gc_runs;
static int gc_count(lua_State *L)
{
	(void)L;
	gc_runs++;
	return 0;
}

static int host_call(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	assert_non_null(lx);
	assert_true(sx_lua_in_call(lx));
	lua_pushvalue(L, 1);
	int rc = sx_lua_call_state(L, 0, 1);
	if (rc == 0)
		lua_pop(L, 1);
	lua_pushinteger(L, rc);
	return 1;
}

static void test_bad_results(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(20000000, 32 << 20, 5000);
	lua_State *L = sx_lua_state(lx);
	expect_fail(lx, "error({})", SX_ESCRIPT, "t: (error object is a table value)");
	expect_fail(lx, "error(setmetatable({}, {__tostring = function() while true do end end}))", SX_ESCRIPT,
		    "(error object is a table value)");
	expect_fail(lx, "error(setmetatable({}, {__tostring = function() error('x') end}))", SX_ESCRIPT,
		    "(error object is a table value)");
	expect_fail(lx, "error()", SX_ESCRIPT, "(error object is a nil value)");
	expect_fail(lx, "error(42)", SX_ESCRIPT, "t:1: 42");
	expect_fail(lx, "error('plain', 0)", SX_ESCRIPT, "plain");
	expect_fail(lx, "return tostring(setmetatable({}, {__tostring = function() error('in tostring') end}))",
		    SX_ESCRIPT, "in tostring");

	/* Scripts cannot install finalizers (no newproxy; __gc on tables is
	 * ignored); host finalizers run during calls. A host __gc must not raise:
	 * this LuaJIT crashes when a finalizer error unwinds through a trace. */
	gc_runs = 0;
	for (int i = 0; i < 100; i++) {
		lua_newuserdata(L, 8);
		lua_newtable(L);
		lua_pushcfunction(L, gc_count);
		lua_setfield(L, -2, "__gc");
		lua_setmetatable(L, -2);
		lua_pop(L, 1);
	}
	expect_number(lx, "for i = 1, 200 do local t = setmetatable({}, {__gc = function() error('x') end})\n"
			  "for j = 1, 1e3 do t[j] = {} end end return 1",
		      1);
	lua_gc(L, LUA_GCCOLLECT, 0);
	assert_int_equal(gc_runs, 100);
	expect_alive(lx);

	/* sx_lua_call on C functions and non-functions */
	lua_pushcfunction(L, gc_raise);
	assert_int_equal(sx_lua_call(lx, 0, 0), SX_ESCRIPT);
	assert_int_equal(lua_gettop(L), 0);
	lua_pushinteger(L, 3);
	assert_int_equal(sx_lua_call(lx, 0, 0), SX_ESCRIPT);
	assert_int_equal(lua_gettop(L), 0);

	/* a nested call shares the outer budget; the outer call fails too */
	assert_int_equal(load(lx, "return function(host) return host(function() while true do end end) end"), 0);
	lua_pop(L, 1);
	lua_pushcfunction(L, host_call);
	assert_int_equal(sx_lua_call(lx, 1, 1), SX_EBUDGET);
	assert_int_equal(lua_gettop(L), 0);
	assert_int_equal(load(lx, "return function(host) return host(function() return 1 end) end"), 0);
	lua_pop(L, 1);
	lua_pushcfunction(L, host_call);
	assert_int_equal(sx_lua_call(lx, 1, 1), 0);
	assert_int_equal(lua_tointeger(L, -1), 0);
	lua_settop(L, 0);
	assert_false(sx_lua_in_call(lx));
	sx_lua_free(lx);
}

/* ---- modules, limits API -------------------------------------------------- */

static int open_counter(lua_State *L)
{
	lua_newtable(L);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "name");
	return 1;
}

static void test_modules_and_api(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(0, 0, 0);
	assert_int_equal(sx_lua_allow_module(lx, "counter", open_counter), 0);
	assert_int_equal(sx_lua_allow_module(lx, NULL, open_counter), SX_EINVAL);
	expect_true(lx, "local c = require('counter') c.x = 1 return c.name == 'counter' and require('counter').x == 1");
	expect_true(lx, "return require('counter').x == nil");
	expect_fail(lx, "require('nope')", SX_ESCRIPT, "module 'nope' is not available in the sandbox");
	expect_true(lx, "return type(require('sextant').version) == 'string'");

	struct sx_lua_limits lim = {.instructions = 1000, .memory = 1 << 20, .coroutine_depth = 3, .wall_ms = 50};
	sx_lua_set_limits(lx, &lim);
	assert_int_equal(sx_lua_limits(lx)->instructions, 1000);
	assert_int_equal(sx_lua_limits(lx)->coroutine_depth, 3);
	expect_fail(lx, "for i = 1, 1e6 do end", SX_EBUDGET, "(1000 instructions)");
	expect_fail(lx, "local function f(d) if d == 0 then return end coroutine.wrap(f)(d - 1) end f(5)", SX_EBUDGET,
		    "coroutine nesting too deep (3)");
	lim.instructions = 0;
	sx_lua_set_limits(lx, &lim);
	expect_fail(lx, "while true do end", SX_EBUDGET, "time limit exceeded (50 ms)");

	lua_State *P = luaL_newstate();
	assert_null(sx_lua_from_state(P));
	lua_close(P);
	assert_ptr_equal(sx_lua_from_state(sx_lua_state(lx)), lx);
	sx_lua_free(lx);
	sx_lua_free(NULL);
}

static void test_performance_sanity(void **state)
{
	(void)state;
	struct sx_lua *lx = vm(10000000000ull, 32 << 20, 20000);
	expect_number(lx, "local s = 0 for i = 1, 1e7 do s = s + i end return s", 50000005000000.0);
	expect_number(lx, "local function add(a, b) return a + b end local s = 0 for i = 1, 1e7 do s = add(s, i) end return s",
		      50000005000000.0);
	sx_lua_free(lx);
}

/* ---- patterns: compared with LuaJIT's own string library ------------------- */

static const char probe_src[] =
	"local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub\n"
	"return function(s, p)\n"
	"  local out = {}\n"
	"  local function ser(ok, ...)\n"
	"    if not ok then return 'E' end\n"
	"    local t = {}\n"
	"    for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end\n"
	"    return select('#', ...) .. ':' .. table.concat(t, ',')\n"
	"  end\n"
	"  out[#out + 1] = ser(pcall(find, s, p))\n"
	"  out[#out + 1] = ser(pcall(find, s, p, 3))\n"
	"  out[#out + 1] = ser(pcall(find, s, p, -2))\n"
	"  out[#out + 1] = ser(pcall(find, s, p, 100))\n"
	"  out[#out + 1] = ser(pcall(find, s, p, 2, true))\n"
	"  out[#out + 1] = ser(pcall(match, s, p))\n"
	"  out[#out + 1] = ser(pcall(match, s, p, 2))\n"
	"  out[#out + 1] = ser(pcall(function()\n"
	"    local r = {}\n"
	"    for a, b in gmatch(s, p) do\n"
	"      r[#r + 1] = tostring(a) .. '/' .. tostring(b)\n"
	"      if #r > 40 then break end\n"
	"    end\n"
	"    return table.concat(r, ';')\n"
	"  end))\n"
	"  for _, r in ipairs({'<%0>', '%1-%1', '[%%]', '#', 7}) do out[#out + 1] = ser(pcall(gsub, s, p, r)) end\n"
	"  out[#out + 1] = ser(pcall(gsub, s, p, '#', 2))\n"
	"  out[#out + 1] = ser(pcall(gsub, s, p, {a = 'A', ['1'] = 1, b = false}))\n"
	"  out[#out + 1] = ser(pcall(gsub, s, p, function(a, b)\n"
	"    if a == 'a' then return nil end\n"
	"    return '{' .. tostring(a) .. tostring(b) .. '}'\n"
	"  end))\n"
	"  out[#out + 1] = ser(pcall(function() return s:find(p) end))\n"
	"  return table.concat(out, '|')\n"
	"end\n";

static const char *const fixed_cases[][2] = {
	{"hello world", "o w"},		{"hello world", "(o)(r)"},	{"hello", "l+"},
	{"hello", "l*"},		{"hello", "l-o"},		{"hello", "^h"},
	{"hello", "o$"},		{"hello", "^(h)(.-)$"},		{"  trim  ", "^%s*(.-)%s*$"},
	{"key = value", "(%w+)%s*=%s*(%w+)"}, {"f(a(b)c)d", "%b()"},	{"THE (quick) fox", "%f[%a]%a+"},
	{"abcabc", "(abc)%1"},		{"aaa", "()a()"},		{"x=1, y=2", "(%w+)=(%w+)"},
	{"a.b.c", "%."},		{"a+b", "a+b"},			{"[x]", "[]]"},
	{"[x]", "[^]]+"},		{"abc", "[a-"},			{"abc", "%"},
	{"abc", "(()"},			{"abc", "%2"},			{"abc", "a)"},
	{"1.5e10", "^[+-]?%d+%.?%d*[eE]?%d*$"}, {"\x01\x7f", "%c+"},	{"a,b,,c", "([^,]*)"},
	{"", ""},			{"", ".*"},			{"abc", ""},
	{"abc", "$"},			{"a$b", "$b"},			{"a^b", "a^b"},
	{"^ab", "^^a"},			{"hello", "%f[%l]"},		{"hello", "%f[%z]"},
	{"x y", "%S+"},			{"AbC", "%u%l%u"},		{"0xFF", "%x+"},
	{"a.b", "%p"},			{"a b", "[%s%p]"},		{"abc", "[%a-z]+"},
	{"a-z", "[a%-z]+"},		{"aaab", "a-b"},		{"aaab", "a?a?a?b"},
};

static void compare_patterns(lua_State *R, struct sx_lua *lx, const char *s, const char *p)
{
	lua_State *L = sx_lua_state(lx);
	lua_pushvalue(R, 1);
	lua_pushstring(R, s);
	lua_pushstring(R, p);
	if (lua_pcall(R, 2, 1, 0))
		fail_msg("reference failed: %s", lua_tostring(R, -1));
	lua_pushvalue(L, 1);
	lua_pushstring(L, s);
	lua_pushstring(L, p);
	if (sx_lua_call(lx, 2, 1))
		fail_msg("sandbox failed: %s", sx_diag_last());
	if (strcmp(lua_tostring(R, -1), lua_tostring(L, -1)) != 0)
		fail_msg("s=\"%s\" p=\"%s\"\n  luajit:  %s\n  sandbox: %s", s, p, lua_tostring(R, -1),
			 lua_tostring(L, -1));
	lua_pop(R, 1);
	lua_pop(L, 1);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned next_rand(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static void test_patterns(void **state)
{
	(void)state;
	static const char *const items[] = {
		"a", "b", "c", ".", "%a", "%d", "%s", "%w", "%A", "%S", "%l", "%u", "%p", "%x", "%c",
		"[ab]", "[^a]", "[a-c]", "[%d]", "[]]", "[^%s]", "(", ")", "()", "%1", "%2", "%b()", "%bab",
		"%f[%w]", "%f[%W]", "x", "1", " ", "%(", "%%", "%.", "*", "-", "$", "^",
	};
	static const char *const quant[] = {"", "", "", "*", "+", "-", "?"};
	static const char alphabet[] = "aabbc 1x(%)].^";
	struct sx_lua *lx = vm(0, 64 << 20, 0);
	lua_State *L = sx_lua_state(lx);
	assert_int_equal(load(lx, probe_src), 0);
	lua_pop(L, 1);
	lua_State *R = luaL_newstate();
	luaL_openlibs(R);
	assert_int_equal(luaL_loadstring(R, probe_src), 0);
	assert_int_equal(lua_pcall(R, 0, 1, 0), 0);

	for (size_t i = 0; i < SX_ARRAY_SIZE(fixed_cases); i++)
		compare_patterns(R, lx, fixed_cases[i][0], fixed_cases[i][1]);
	for (int round = 0; round < 4000; round++) {
		char p[128] = "", s[32];
		if (next_rand(5) == 0)
			strcat(p, "^");
		int nitems = 1 + (int)next_rand(5);
		for (int k = 0; k < nitems; k++) {
			strcat(p, items[next_rand(SX_ARRAY_SIZE(items))]);
			strcat(p, quant[next_rand(SX_ARRAY_SIZE(quant))]);
		}
		if (next_rand(5) == 0)
			strcat(p, "$");
		for (int t = 0; t < 3; t++) {
			int len = (int)next_rand(12);
			for (int k = 0; k < len; k++)
				s[k] = alphabet[next_rand(sizeof(alphabet) - 1)];
			s[len] = '\0';
			compare_patterns(R, lx, s, p);
		}
	}
	lua_close(R);

	/* what LuaJIT gets wrong or lacks */
	lua_settop(L, 0);
	expect_fail(lx, "return ('x'):gsub('x', '%')", SX_ESCRIPT, "invalid use of '%' in replacement string");
	expect_fail(lx, "return ('a'):rep(300):find(('a?'):rep(300))", SX_ESCRIPT, "pattern too complex");
	expect_true(lx, "return ('a\\0b'):find('\\0b', 1) == 2 and ('a\\0b'):find('%z') == 2 "
			"and ('a\\0b'):match('a%zb') == 'a\\0b'");
	sx_lua_free(lx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_runaway_instructions),
		cmocka_unit_test(test_runaway_time),
		cmocka_unit_test(test_watchdog),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_stack),
		cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_isolation),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_bad_results),
		cmocka_unit_test(test_modules_and_api),
		cmocka_unit_test(test_performance_sanity),
		cmocka_unit_test(test_patterns),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
