/* sandbox.c — the engine's LuaJIT VM: sandboxed environments and budgets.
 *
 * Budget accounting: the instrumented checks decrement a counter kept as an
 * upvalue of a small Lua function (so that traces inline it); when it goes
 * negative a C function settles the account, checks the deadline, and either
 * grants another quantum or raises. Quanta are charged when granted, so
 * `used` is an upper bound of what the call consumed.
 *
 * Library functions excluded for want of a bound on their work: table.move
 * (a Lua loop inside LuaJIT, never instrumented, over any index range),
 * math.randomseed (state shared by every environment).
 */
#include "core/lua/sandbox.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lua/instrument.h"
#include "core/lua/lpattern.h"
#include "core/lua/module.h"
#include "core/sx.h"

#define QUANTUM 65536
#define QUANTUM_FIRST 256
/* With a deadline, quanta adapt so that the clock is read every 0.5-2 ms of
 * run time even when each loop iteration runs a long C function. */
#define SETTLE_MIN_NS 500000u
#define SETTLE_MAX_NS 2000000u
#define DEFAULT_CODEPTH 16
#define CSTACK_LIMIT ((uintptr_t)1 << 20)
#define KERNEL_NAME "=(sandbox)"
#define MAX_STR 0x7fffff00 /* LuaJIT's longest string */

enum reason { R_NONE, R_INSTR, R_MEM, R_TIME, R_CODEPTH, R_COUNT };

static const char *const reason_msg[R_COUNT] = {
	"",
	"instruction budget exceeded",
	"memory budget exceeded",
	"time limit exceeded",
	"coroutine nesting too deep",
};

/* The watchdog. Budget checks read the clock only at instrumented points, in
 * the allocator and in host charges, so a C function that runs long between
 * them would overshoot the deadline. A thread per VM sleeps until the deadline
 * of the outermost call (polling every few ms while idle, so that arming a
 * call is two atomic stores); if the call still runs then, it signals the VM's
 * thread, whose handler sets `expired` and a count hook (what LuaJIT's own
 * interpreter does on SIGINT): interpreted code stops at its next
 * instruction, compiled code at its next budget check, host loops that poll
 * sx_lua_expired() at once. */
#define WD_SIGNAL (SIGRTMIN + 5)

#define WD_TICK_NS 5000000u /* how often an idle watchdog looks for a new call */

struct watchdog {
	pthread_t thread, owner;
	pthread_mutex_t mu; /* only for stop */
	pthread_cond_t cv;
	int started, stop;
	/* Arming a call costs two atomic stores, no system call: the thread
	 * polls every WD_TICK_NS while no deadline is set. */
	_Atomic uint64_t gen, deadline_ns; /* deadline 0: nothing to watch */
	_Atomic uint64_t kill_gen;	   /* the call the last signal was meant for */
};

struct sx_lua {
	lua_State *L;
	struct sx_lua_limits limits; /* for the next outermost call */
	struct sx_lua_limits active; /* of the outermost call in progress */
	size_t mem;		     /* bytes allocated now */
	size_t cap;		     /* SIZE_MAX: no cap */
	size_t gc_mark;		     /* level after the last assisted GC step */
	size_t mem_start;	     /* level when the outermost call began */
	int depth;		     /* budgeted calls in progress */
	int exhausted;		     /* enum reason, sticky until the outermost call returns */
	uint64_t used;		     /* instructions granted to or charged by this call */
	uint64_t deadline_ns;	     /* 0: none */
	uint64_t settled_ns;	     /* when the last quantum was granted */
	uint64_t quantum;
	unsigned ticks;
	size_t grown;	  /* bytes allocated since the allocator last read the clock */
	uint64_t pending; /* charges from C not yet taken from the counter */
	uintptr_t cstack_base;
	int ref_check, ref_co, ref_proto, ref_modules, ref_load, ref_fallback;
	int ref_msg[R_COUNT];
	char where[128];
	struct watchdog wd;
	volatile sig_atomic_t armed; /* the handler may act: a call with a deadline runs */
	atomic_int expired;	     /* set by the handler, cleared by budget_begin */
	struct sx_lua *wd_prev;	     /* the thread's previous current VM */
};

static __thread struct sx_lua *wd_current;

/* ---- allocation ---------------------------------------------------------- */

static void *lx_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct sx_lua *lx = ud;
	if (!ptr)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		lx->mem -= osize;
		return NULL;
	}
	if (nsize > osize) {
		size_t grow = nsize - osize;
		if (lx->cap != SIZE_MAX && (grow > lx->cap || lx->mem > lx->cap - grow)) {
			if (!lx->exhausted)
				lx->exhausted = R_MEM;
			return NULL;
		}
		if (lx->exhausted == R_TIME)
			return NULL;
		if (lx->depth && atomic_load_explicit(&lx->expired, memory_order_relaxed)) {
			if (!lx->exhausted)
				lx->exhausted = R_TIME;
			return NULL;
		}
		/* Bulk work in C (concatenations, table growth) allocates; this is
		 * where a deadline is noticed between instrumented checks. */
		lx->grown += grow;
		if (lx->deadline_ns && ((++lx->ticks & 255) == 0 || lx->grown > (1u << 20))) {
			lx->grown = 0;
			if (sx_now_ns() >= lx->deadline_ns) {
				if (!lx->exhausted)
					lx->exhausted = R_TIME;
				return NULL;
			}
		}
	}
	void *p = realloc(ptr, nsize);
	if (!p)
		return nsize < osize ? ptr : NULL;
	lx->mem = lx->mem - osize + nsize;
	return p;
}

struct sx_lua *sx_lua_from_state(lua_State *L)
{
	void *ud = NULL;
	if (!L || lua_getallocf(L, &ud) != lx_alloc)
		return NULL;
	return ud;
}

/* ---- budget accounting --------------------------------------------------- */

static double counter_get(lua_State *L, struct sx_lua *lx)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_check);
	lua_getupvalue(L, -1, 1);
	double v = lua_tonumber(L, -1);
	lua_pop(L, 2);
	return v;
}

static void counter_set(lua_State *L, struct sx_lua *lx, double v)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_check);
	lua_pushnumber(L, v);
	lua_setupvalue(L, -2, 1);
	lua_pop(L, 1);
}

/* Grants the next quantum; `limited` charges it to the call in progress. */
static void refill(lua_State *L, struct sx_lua *lx, int limited)
{
	uint64_t q = limited ? lx->quantum : QUANTUM;
	if (limited) {
		if (lx->active.instructions) {
			uint64_t max = lx->active.instructions;
			uint64_t left = lx->used < max ? max - lx->used : 0;
			if (q > left)
				q = left;
		}
		lx->used += q;
	}
	counter_set(L, lx, (double)q);
}

/* Where the script was when a budget ran out: the innermost Lua frame that is
 * not the sandbox's own. lua_getinfo("Sl") does not allocate. */
static void note_where(lua_State *L, struct sx_lua *lx)
{
	lua_Debug ar;
	if (lx->where[0])
		return;
	for (int level = 0; level < 64 && lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 ||
		    strcmp(ar.source, KERNEL_NAME) == 0)
			continue;
		snprintf(lx->where, sizeof(lx->where), "%s:%d", ar.short_src, ar.currentline);
		return;
	}
}

static int stop(lua_State *L, struct sx_lua *lx, int reason)
{
	if (!lx->exhausted)
		lx->exhausted = reason;
	note_where(L, lx);
	counter_set(L, lx, -1e300);
	/* a preallocated string: raising must work with no memory left */
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_msg[lx->exhausted]);
	return lua_error(L);
}

/* The counter went negative: settle, then raise or grant another quantum. */
static void settle(lua_State *L, struct sx_lua *lx, double left)
{
	if (!lx->depth) {
		refill(L, lx, 0);
		return;
	}
	if (lx->exhausted)
		stop(L, lx, lx->exhausted);
	if (atomic_load_explicit(&lx->expired, memory_order_relaxed))
		stop(L, lx, R_TIME);
	if (left < 0)
		lx->used += (uint64_t)-left;
	if (lx->active.instructions && lx->used > lx->active.instructions)
		stop(L, lx, R_INSTR);
	if (lx->deadline_ns) {
		uint64_t now = sx_now_ns();
		if (now >= lx->deadline_ns)
			stop(L, lx, R_TIME);
		uint64_t took = now - lx->settled_ns;
		if (took > SETTLE_MAX_NS)
			lx->quantum = lx->quantum / 4 ? lx->quantum / 4 : 1;
		else if (took < SETTLE_MIN_NS && lx->quantum < QUANTUM)
			lx->quantum *= 2;
		lx->settled_ns = now;
	}
	/* LuaJIT has no emergency collection when an allocation fails: help the
	 * collector along so that garbage does not count against the cap. */
	if (lx->cap != SIZE_MAX && lx->mem > lx->gc_mark &&
	    lx->mem - lx->gc_mark > lx->active.memory / 4) {
		size_t kb = lx->active.memory / 4 / 1024 + 1;
		lua_gc(L, LUA_GCSTEP, kb > 1 << 20 ? 1 << 20 : (int)kb);
		lx->gc_mark = lx->mem;
	}
	refill(L, lx, 1);
}

static int budget_slow(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (lx)
		settle(L, lx, counter_get(L, lx));
	return 0;
}

static int budget_post(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (lx && lx->depth && lx->exhausted)
		stop(L, lx, lx->exhausted);
	return 0;
}

static int budget_codeep(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (lx && lx->depth)
		stop(L, lx, R_CODEPTH);
	return luaL_error(L, "coroutine nesting too deep");
}

void sx__lua_charge(lua_State *L, uint64_t steps)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (!lx || !lx->depth)
		return;
	if (lx->exhausted)
		stop(L, lx, lx->exhausted);
	if (atomic_load_explicit(&lx->expired, memory_order_relaxed))
		stop(L, lx, R_TIME);
	/* small charges (one short match) are batched: settling costs API calls */
	lx->pending += steps;
	if (lx->pending < 4096)
		return;
	steps = lx->pending;
	lx->pending = 0;
	double left = counter_get(L, lx) - (double)steps;
	counter_set(L, lx, left);
	if (left < 0)
		settle(L, lx, left);
}

void sx__lua_cstack_check(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	if (lx && lx->depth && lx->cstack_base > here && lx->cstack_base - here > CSTACK_LIMIT)
		luaL_error(L, "C stack overflow");
}

static void co_set(lua_State *L, struct sx_lua *lx, int depth, int max)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_co);
	lua_pushinteger(L, depth);
	lua_rawseti(L, -2, 1);
	lua_pushinteger(L, max);
	lua_rawseti(L, -2, 2);
	lua_pop(L, 1);
}

static void wd_hook(lua_State *L, lua_Debug *ar)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	SX_UNUSED(ar);
	if (lx && lx->depth && atomic_load(&lx->expired))
		stop(L, lx, R_TIME);
}

static void wd_handler(int sig)
{
	struct sx_lua *lx = wd_current;
	SX_UNUSED(sig);
	/* a signal meant for a call that has ended (and maybe a new one begun) is ignored */
	if (lx && lx->armed && atomic_load(&lx->wd.kill_gen) == atomic_load(&lx->wd.gen)) {
		atomic_store(&lx->expired, 1);
		lua_sethook(lx->L, wd_hook, LUA_MASKCOUNT, 1);
	}
}

static void *wd_main(void *arg)
{
	struct watchdog *wd = arg;
	uint64_t signalled = 0;
	pthread_mutex_lock(&wd->mu);
	while (!wd->stop) {
		uint64_t gen = atomic_load(&wd->gen), dl = atomic_load(&wd->deadline_ns), now = sx_now_ns();
		if (dl && now >= dl && gen != signalled && atomic_load(&wd->gen) == gen) {
			signalled = gen;
			atomic_store(&wd->kill_gen, gen);
			pthread_kill(wd->owner, WD_SIGNAL);
		}
		uint64_t until = dl && dl > now && dl - now < WD_TICK_NS ? dl : now + WD_TICK_NS;
		struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
		pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
	}
	pthread_mutex_unlock(&wd->mu);
	return NULL;
}

static pthread_once_t wd_once = PTHREAD_ONCE_INIT;

static void wd_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(WD_SIGNAL, &sa, NULL);
}

/* Without a thread the deadline is still checked at the budget points. */
static int wd_start(struct sx_lua *lx)
{
	struct watchdog *wd = &lx->wd;
	pthread_condattr_t ca;
	pthread_once(&wd_once, wd_install);
	pthread_mutex_init(&wd->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wd->cv, &ca);
	pthread_condattr_destroy(&ca);
	wd->owner = pthread_self();
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&wd->thread, NULL, wd_main, wd);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		pthread_cond_destroy(&wd->cv);
		pthread_mutex_destroy(&wd->mu);
		return -1;
	}
	wd->started = 1;
	return 0;
}

static void wd_arm(struct sx_lua *lx)
{
	struct watchdog *wd = &lx->wd;
	if (!wd->started && wd_start(lx) < 0)
		return;
	if (!pthread_equal(wd->owner, pthread_self()))
		return;
	lx->wd_prev = wd_current;
	wd_current = lx;
	atomic_fetch_add(&wd->gen, 1);
	atomic_store(&wd->deadline_ns, lx->deadline_ns);
	lx->armed = 1;
}

static void wd_disarm(lua_State *L, struct sx_lua *lx)
{
	if (!lx->armed)
		return;
	lx->armed = 0; /* from here the handler leaves this VM alone */
	atomic_signal_fence(memory_order_seq_cst);
	atomic_store(&lx->wd.deadline_ns, 0);
	atomic_fetch_add(&lx->wd.gen, 1);
	if (lua_gethook(L) == wd_hook)
		lua_sethook(L, NULL, 0, 0);
	wd_current = lx->wd_prev;
}

static void wd_free(struct sx_lua *lx)
{
	struct watchdog *wd = &lx->wd;
	if (!wd->started)
		return;
	pthread_mutex_lock(&wd->mu);
	wd->stop = 1;
	pthread_cond_signal(&wd->cv);
	pthread_mutex_unlock(&wd->mu);
	pthread_join(wd->thread, NULL);
	pthread_cond_destroy(&wd->cv);
	pthread_mutex_destroy(&wd->mu);
}

static void budget_begin(lua_State *L, struct sx_lua *lx)
{
	lx->active = lx->limits;
	if (!lx->active.coroutine_depth)
		lx->active.coroutine_depth = DEFAULT_CODEPTH;
	lx->exhausted = R_NONE;
	lx->used = 0;
	lx->pending = 0;
	lx->where[0] = '\0';
	lx->cstack_base = (uintptr_t)__builtin_frame_address(0);
	lx->gc_mark = lx->mem_start = lx->mem;
	if (lx->active.memory && lx->active.memory < SIZE_MAX - lx->mem)
		lx->cap = lx->mem + lx->active.memory;
	else
		lx->cap = SIZE_MAX;
	lx->settled_ns = sx_now_ns();
	lx->deadline_ns = lx->active.wall_ms ? lx->settled_ns + (uint64_t)lx->active.wall_ms * 1000000u : 0;
	lx->quantum = lx->deadline_ns ? QUANTUM_FIRST : QUANTUM;
	atomic_store(&lx->expired, 0);
	if (lx->deadline_ns)
		wd_arm(lx);
	refill(L, lx, 1);
	co_set(L, lx, 0, (int)lx->active.coroutine_depth);
}

static void budget_end(lua_State *L, struct sx_lua *lx)
{
	wd_disarm(L, lx);
	atomic_store(&lx->expired, 0);
	lx->cap = SIZE_MAX;
	lx->deadline_ns = 0;
	lx->exhausted = R_NONE;
	refill(L, lx, 0);
	co_set(L, lx, 0, (int)lx->active.coroutine_depth);
}

/* ---- the sandbox's own functions ------------------------------------------ */

/* Pattern-free string functions are LuaJIT's; the rest are wrapped or ours.
 * check(w) is what instrumented code calls; its first upvalue is the counter. */
static const char kernel_src[] =
	"local slow, post, codeep, B, pcall, xpcall, resume, create, error, type = ...\n"
	"local n = 0\n"
	"local function check(w)\n"
	/* the chunk's `...` hands check to the script too: a weight that is not
	 * one the instrumenter writes (1..SX__INSTR_MAXW) costs the most, so no
	 * call can give budget back (a constant weight folds this away) */
	"  if not (w >= 1 and w <= " SX_STR(SX__INSTR_MAXW) ") then w = " SX_STR(SX__INSTR_MAXW) " end\n"
	"  n = n - w\n"
	"  if n < 0 then slow() end\n"
	"end\n"
	"local function after(ok, ...)\n"
	"  if not ok then post() end\n"
	"  return ok, ...\n"
	"end\n"
	"local function spcall(...) return after(pcall(...)) end\n"
	"local function sxpcall(...) return after(xpcall(...)) end\n"
	"local function resumed(ok, ...)\n"
	"  B[1] = B[1] - 1\n"
	"  if not ok then post() end\n"
	"  return ok, ...\n"
	"end\n"
	"local function sresume(co, ...)\n"
	"  if type(co) ~= 'thread' then\n"
	"    error(\"bad argument #1 to 'resume' (coroutine expected)\", 2)\n"
	"  end\n"
	"  local d = B[1]\n"
	"  if d >= B[2] then codeep() end\n"
	"  B[1] = d + 1\n"
	"  return resumed(resume(co, ...))\n"
	"end\n"
	"local function wrapped(ok, ...)\n"
	"  if not ok then error((...), 0) end\n"
	"  return ...\n"
	"end\n"
	"local function swrap(f)\n"
	"  local co = create(f)\n"
	"  return function(...) return wrapped(sresume(co, ...)) end\n"
	"end\n"
	"return check, spcall, sxpcall, sresume, swrap\n";

static int sb_collectgarbage(lua_State *L)
{
	const char *opt = luaL_optstring(L, 1, "collect");
	if (strcmp(opt, "count") != 0)
		return luaL_error(L, "collectgarbage: only \"count\" is allowed in the sandbox");
	lua_pushnumber(L, lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
	return 1;
}

/* LuaJIT's string.rep truncates the count to 32 bits and returns "" for
 * 2^31; refuse sizes it cannot build, and sizes the memory cap refuses,
 * before anything is allocated. */
static int sb_rep(lua_State *L)
{
	size_t l, lsep;
	luaL_checklstring(L, 1, &l);
	lua_Number n = luaL_checknumber(L, 2);
	luaL_optlstring(L, 3, "", &lsep);
	int nargs = lua_isnoneornil(L, 3) ? 2 : 3;
	if (!(n >= 1) || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	double k = floor(n);
	double total = (double)l * k + (double)lsep * (k - 1);
	if (total > MAX_STR)
		return luaL_error(L, "resulting string too large");
	struct sx_lua *lx = sx_lua_from_state(L);
	if (lx && lx->depth && lx->cap != SIZE_MAX && total > (double)(lx->cap - lx->mem))
		return stop(L, lx, R_MEM);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushnumber(L, k);
	if (nargs == 3)
		lua_pushvalue(L, 3);
	lua_call(L, nargs, 1);
	return 1;
}

/* Library functions whose work grows with a table are charged that work up
 * front, so that a loop calling them runs out of budget (and reads the
 * clock) in proportion to what it really does. */
static int forward(lua_State *L, uint64_t cost)
{
	sx__lua_charge(L, cost);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

static uint64_t table_len(lua_State *L, int idx)
{
	return lua_type(L, idx) == LUA_TTABLE ? (uint64_t)lua_objlen(L, idx) : 0;
}

static uint64_t span(lua_State *L, int from, int to, uint64_t dflt_to)
{
	double a = lua_type(L, from) == LUA_TNUMBER ? lua_tonumber(L, from) : 1;
	double b = lua_type(L, to) == LUA_TNUMBER ? lua_tonumber(L, to) : (double)dflt_to;
	return b >= a && b - a < 1e15 ? (uint64_t)(b - a) + 1 : 1;
}

static int sb_sort(lua_State *L)
{
	uint64_t n = table_len(L, 1);
	return forward(L, n * (uint64_t)(log2((double)n + 1) + 1));
}

static int sb_insert(lua_State *L)
{
	uint64_t n = table_len(L, 1);
	uint64_t cost = 1;
	if (lua_gettop(L) >= 3 && lua_type(L, 2) == LUA_TNUMBER) {
		double pos = lua_tonumber(L, 2);
		cost = pos < 1 ? n + 1 : pos <= (double)n ? n - (uint64_t)pos + 1 : 1;
	}
	return forward(L, cost);
}

/* Work past the table's border ends in an error: charge at most up to it. */
static uint64_t at_most(uint64_t cost, uint64_t max) { return cost < max ? cost : max; }

static int sb_remove(lua_State *L) { return forward(L, lua_isnoneornil(L, 2) ? 1 : table_len(L, 1) + 1); }
static int sb_concat(lua_State *L) { return forward(L, at_most(span(L, 3, 4, table_len(L, 1)), table_len(L, 1) + 1)); }
static int sb_unpack(lua_State *L) { return forward(L, at_most(span(L, 2, 3, table_len(L, 1)), 65536)); }

/* table.maxn visits every key; ours charges for each. */
static int sb_maxn(lua_State *L)
{
	lua_Number max = 0;
	uint64_t keys = 0;
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) > max)
			max = lua_tonumber(L, -1);
		if (++keys == 1024) {
			sx__lua_charge(L, keys);
			keys = 0;
		}
	}
	sx__lua_charge(L, keys);
	lua_pushnumber(L, max);
	return 1;
}

static int sb_require(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	lua_settop(L, 1);
	lua_pushvalue(L, 1);
	lua_rawget(L, lua_upvalueindex(1));
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	struct sx_lua *lx = sx_lua_from_state(L);
	if (!lx)
		return luaL_error(L, "module '%s' is not available in the sandbox", name);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_modules);
	lua_pushvalue(L, 1);
	lua_rawget(L, -2);
	if (!lua_iscfunction(L, -1)) {
		if (lx->ref_fallback == LUA_NOREF)
			return luaL_error(L, "module '%s' is not available in the sandbox", name);
		lua_pop(L, 1);
		lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_fallback);
	}
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, 1);
	lua_pushvalue(L, -2);
	lua_rawset(L, lua_upvalueindex(1));
	return 1;
}

/* ---- VM setup ------------------------------------------------------------ */

static const char *const base_names[] = {
	"assert", "error",  "ipairs", "next",	  "pairs",	  "select",	  "tonumber",
	"tostring", "type", "rawequal", "rawget", "rawset", "rawlen",
	"setmetatable", "getmetatable", "_VERSION",
};
static const char *const string_names[] = {"byte", "char", "format", "len", "lower", "reverse", "sub", "upper"};
static const char *const os_names[] = {"time", "clock", "date"};
static const char *const co_names[] = {"create", "running", "status", "yield", "isyieldable"};
static const char *const std_libs[] = {"string", "table", "math", "os", "coroutine", "bit"};

/* Copies the named fields of the table at src that exist into the table on top. */
static void copy_fields(lua_State *L, int src, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		lua_getfield(L, src, names[i]);
		if (lua_isnil(L, -1))
			lua_pop(L, 1);
		else
			lua_setfield(L, -2, names[i]);
	}
}

/* Copies every field of the table at src, except `skip`, into the table on top. */
static void copy_all(lua_State *L, int src, const char *skip)
{
	lua_pushnil(L);
	while (lua_next(L, src)) {
		if (skip && lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), skip) == 0) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
}

static int ref(lua_State *L) { return luaL_ref(L, LUA_REGISTRYINDEX); }

static int load_body(lua_State *L);

static int init_body(lua_State *L)
{
	struct sx_lua *lx = lua_touserdata(L, 1);
	lua_settop(L, 0);
	luaL_openlibs(L); /* also turns the JIT compiler on */

	for (int r = 1; r < R_COUNT; r++) {
		lua_pushstring(L, reason_msg[r]);
		lx->ref_msg[r] = ref(L);
	}
	lua_createtable(L, 2, 0);
	lua_pushvalue(L, -1);
	lx->ref_co = ref(L);
	int co = lua_gettop(L);

	if (luaL_loadbuffer(L, kernel_src, sizeof(kernel_src) - 1, KERNEL_NAME))
		return lua_error(L);
	lua_newtable(L);
	lua_setfenv(L, -2);
	lua_pushcfunction(L, budget_slow);
	lua_pushcfunction(L, budget_post);
	lua_pushcfunction(L, budget_codeep);
	lua_pushvalue(L, co);
	lua_getglobal(L, "pcall");
	lua_getglobal(L, "xpcall");
	lua_getglobal(L, "coroutine");
	lua_getfield(L, -1, "resume");
	lua_getfield(L, -2, "create");
	lua_remove(L, -3);
	lua_getglobal(L, "error");
	lua_getglobal(L, "type");
	lua_call(L, 10, 5);
	int k = lua_gettop(L) - 4; /* check, spcall, sxpcall, sresume, swrap */
	const char *up = lua_getupvalue(L, k, 1);
	if (!up || strcmp(up, "n") != 0)
		return luaL_error(L, "sandbox kernel: unexpected upvalue layout");
	lua_pop(L, 1);
	lua_pushvalue(L, k);
	lx->ref_check = ref(L);

	lua_newtable(L);
	int proto = lua_gettop(L);
	copy_fields(L, LUA_GLOBALSINDEX, base_names, SX_ARRAY_SIZE(base_names));
	lua_pushvalue(L, k + 1);
	lua_setfield(L, proto, "pcall");
	lua_pushvalue(L, k + 2);
	lua_setfield(L, proto, "xpcall");
	lua_pushcfunction(L, sb_collectgarbage);
	lua_setfield(L, proto, "collectgarbage");

	lua_getglobal(L, "string");
	int str = lua_gettop(L);
	lua_newtable(L);
	copy_fields(L, str, string_names, SX_ARRAY_SIZE(string_names));
	lua_pushcfunction(L, sx__lua_str_find);
	lua_setfield(L, -2, "find");
	lua_pushcfunction(L, sx__lua_str_match);
	lua_setfield(L, -2, "match");
	lua_pushcfunction(L, sx__lua_str_gmatch);
	lua_setfield(L, -2, "gmatch");
	lua_pushcfunction(L, sx__lua_str_gsub);
	lua_setfield(L, -2, "gsub");
	lua_getfield(L, str, "rep");
	lua_pushcclosure(L, sb_rep, 1);
	lua_setfield(L, -2, "rep");
	int sproto = lua_gettop(L);
	/* String methods resolve through the shared string metatable: point it at
	 * a private copy and hide it from getmetatable. */
	lua_pushliteral(L, "");
	if (!lua_getmetatable(L, -1))
		return luaL_error(L, "sandbox: strings have no metatable");
	lua_newtable(L);
	copy_all(L, sproto, NULL);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
	lua_setfield(L, proto, "string");
	lua_pop(L, 1);

	lua_getglobal(L, "table");
	lua_newtable(L);
	static const struct {
		const char *name;
		lua_CFunction f;
	} charged[] = {{"sort", sb_sort}, {"insert", sb_insert}, {"remove", sb_remove}, {"concat", sb_concat}};
	for (size_t i = 0; i < SX_ARRAY_SIZE(charged); i++) {
		lua_getfield(L, -2, charged[i].name);
		lua_pushcclosure(L, charged[i].f, 1);
		lua_setfield(L, -2, charged[i].name);
	}
	lua_pushcfunction(L, sb_maxn);
	lua_setfield(L, -2, "maxn");
	lua_setfield(L, proto, "table");
	lua_pop(L, 1);
	lua_getglobal(L, "unpack");
	lua_pushcclosure(L, sb_unpack, 1);
	lua_setfield(L, proto, "unpack");

	lua_getglobal(L, "math");
	lua_newtable(L);
	copy_all(L, lua_gettop(L) - 1, "randomseed");
	lua_setfield(L, proto, "math");
	lua_pop(L, 1);

	lua_getglobal(L, "os");
	lua_newtable(L);
	copy_fields(L, lua_gettop(L) - 1, os_names, SX_ARRAY_SIZE(os_names));
	lua_setfield(L, proto, "os");
	lua_pop(L, 1);

	lua_getglobal(L, "coroutine");
	lua_newtable(L);
	copy_fields(L, lua_gettop(L) - 1, co_names, SX_ARRAY_SIZE(co_names));
	lua_pushvalue(L, k + 3);
	lua_setfield(L, -2, "resume");
	lua_pushvalue(L, k + 4);
	lua_setfield(L, -2, "wrap");
	lua_setfield(L, proto, "coroutine");
	lua_pop(L, 1);

	lua_getglobal(L, "bit");
	lua_newtable(L);
	if (lua_istable(L, -2))
		copy_all(L, lua_gettop(L) - 1, NULL);
	lua_setfield(L, proto, "bit");
	lua_pop(L, 1);

	lua_pushvalue(L, proto);
	lx->ref_proto = ref(L);

	lua_newtable(L);
	lua_pushcfunction(L, luaopen_sextant);
	lua_setfield(L, -2, "sextant");
	lx->ref_modules = ref(L);

	lua_pushcfunction(L, load_body);
	lx->ref_load = ref(L);
	return 0;
}

struct sx_lua *sx_lua_new(const struct sx_lua_limits *limits)
{
	struct sx_lua *lx = calloc(1, sizeof(*lx));
	if (!lx) {
		sx_diag_set(SX_ENOMEM, "lua: out of memory");
		return NULL;
	}
	if (limits)
		lx->limits = *limits;
	lx->cap = SIZE_MAX;
	lx->ref_fallback = LUA_NOREF;
	lx->L = lua_newstate(lx_alloc, lx);
	if (!lx->L) {
		free(lx);
		sx_diag_set(SX_ENOMEM, "lua: cannot create a state");
		return NULL;
	}
	if (lua_cpcall(lx->L, init_body, lx) != 0) {
		sx_diag_set(SX_EINTERNAL, "lua: sandbox setup failed: %s",
			    lua_isstring(lx->L, -1) ? lua_tostring(lx->L, -1) : "?");
		lua_close(lx->L);
		free(lx);
		return NULL;
	}
	lx->active = lx->limits;
	lx->active.coroutine_depth = lx->limits.coroutine_depth ? lx->limits.coroutine_depth : DEFAULT_CODEPTH;
	budget_end(lx->L, lx);
	return lx;
}

void sx_lua_free(struct sx_lua *lx)
{
	if (!lx)
		return;
	/* finalizers run under the default budgets */
	budget_begin(lx->L, lx);
	lx->depth = 1;
	wd_disarm(lx->L, lx);
	lua_close(lx->L);
	wd_free(lx);
	free(lx);
}

lua_State *sx_lua_state(struct sx_lua *lx) { return lx->L; }

void sx_lua_set_limits(struct sx_lua *lx, const struct sx_lua_limits *limits)
{
	static const struct sx_lua_limits none;
	lx->limits = limits ? *limits : none;
}

const struct sx_lua_limits *sx_lua_limits(const struct sx_lua *lx) { return &lx->limits; }

size_t sx_lua_memory(const struct sx_lua *lx) { return lx->mem; }

int sx_lua_in_call(const struct sx_lua *lx) { return lx->depth > 0; }

int sx_lua_depth(const struct sx_lua *lx) { return lx->depth; }

int sx_lua_expired(lua_State *L)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	return lx && lx->depth && (atomic_load(&lx->expired) || lx->exhausted == R_TIME);
}

struct allow_args {
	const char *name;
	lua_CFunction open;
	int ref;
};

static int allow_body(lua_State *L)
{
	struct allow_args *a = lua_touserdata(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
	lua_pushcfunction(L, a->open);
	lua_setfield(L, -2, a->name);
	return 0;
}

int sx_lua_allow_module(struct sx_lua *lx, const char *name, lua_CFunction open)
{
	if (!name || !*name || !open)
		return sx_diag_set(SX_EINVAL, "lua: a module needs a name and an open function");
	struct allow_args a = {name, open, lx->ref_modules};
	if (lua_cpcall(lx->L, allow_body, &a) != 0) {
		lua_pop(lx->L, 1);
		return sx_diag_set(SX_ENOMEM, "lua: out of memory registering module '%s'", name);
	}
	return 0;
}

struct fallback_args {
	lua_CFunction fn;
	void *ud;
	int ref;
};

static int fallback_body(lua_State *L)
{
	struct fallback_args *a = lua_touserdata(L, 1);
	lua_pushlightuserdata(L, a->ud);
	lua_pushcclosure(L, a->fn, 1);
	a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

int sx_lua_set_require_fallback(struct sx_lua *lx, lua_CFunction fn, void *ud)
{
	struct fallback_args a = {fn, ud, LUA_NOREF};
	if (lx->ref_fallback != LUA_NOREF) {
		luaL_unref(lx->L, LUA_REGISTRYINDEX, lx->ref_fallback);
		lx->ref_fallback = LUA_NOREF;
	}
	if (!fn)
		return 0;
	if (lua_cpcall(lx->L, fallback_body, &a) != 0) {
		lua_pop(lx->L, 1);
		return sx_diag_set(SX_ENOMEM, "lua: out of memory registering the require fallback");
	}
	lx->ref_fallback = a.ref;
	return 0;
}

int sx_lua_module_builtin(struct sx_lua *lx, const char *name)
{
	for (size_t i = 0; i < SX_ARRAY_SIZE(std_libs); i++)
		if (strcmp(std_libs[i], name) == 0)
			return 1;
	lua_State *L = lx->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_modules);
	lua_getfield(L, -1, name);
	int known = !lua_isnil(L, -1);
	lua_pop(L, 2);
	return known;
}

/* ---- calls --------------------------------------------------------------- */

static int fail(lua_State *L, struct sx_lua *lx, int status, int reason, const char *name)
{
	char detail[64] = "";
	int rc = SX_ESCRIPT;
	const char *where = lx->where[0] ? lx->where : name;
	if (reason) {
		switch (reason) {
		case R_INSTR:
			snprintf(detail, sizeof(detail), " (%llu instructions)",
				 (unsigned long long)lx->active.instructions);
			break;
		case R_MEM:
			snprintf(detail, sizeof(detail), " (%zu bytes)", lx->active.memory);
			break;
		case R_TIME:
			snprintf(detail, sizeof(detail), " (%u ms)", lx->active.wall_ms);
			break;
		case R_CODEPTH:
			snprintf(detail, sizeof(detail), " (%u)", lx->active.coroutine_depth);
			break;
		}
		rc = sx_diag_set(SX_EBUDGET, "%s: %s%s", where, reason_msg[reason], detail);
	} else if (status == LUA_ERRMEM) {
		rc = sx_diag_set(SX_ENOMEM, "%s: not enough memory", name);
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		rc = sx_diag_set(SX_ESCRIPT, "%s", lua_tostring(L, -1));
	} else if (lua_type(L, -1) == LUA_TNUMBER) {
		rc = sx_diag_set(SX_ESCRIPT, "%s: %.14g", name, lua_tonumber(L, -1));
	} else {
		/* never call __tostring here: it could fail or loop outside any budget */
		rc = sx_diag_set(SX_ESCRIPT, "%s: (error object is a %s value)", name,
				 luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	return rc;
}

static int run(struct sx_lua *lx, lua_State *L, int nargs, int nresults, const char *name)
{
	/* An unnamed function's name is only for an error message: a copy of it waits below
	 * it and is looked up only if the call fails (that costs a getinfo and a format). */
	const int unnamed = !name;
	if (unnamed) {
		lua_pushvalue(L, -nargs - 1);
		lua_insert(L, -nargs - 2);
	}
	int func = lua_gettop(L) - nargs;
	int outer = lx->depth == 0;
	if (outer)
		budget_begin(L, lx);
	lx->depth++;
	int status = lua_pcall(L, nargs, nresults, 0);
	lx->depth--;
	int reason = lx->exhausted;
	if (outer)
		budget_end(L, lx);
	if (status == 0 && !reason) {
		if (unnamed)
			lua_remove(L, func - 1);
		return 0;
	}
	char fname[LUA_IDSIZE + 8];
	if (unnamed) {
		lua_Debug ar;
		snprintf(fname, sizeof(fname), "?");
		if (lua_isfunction(L, func - 1)) {
			lua_pushvalue(L, func - 1);
			if (lua_getinfo(L, ">S", &ar))
				snprintf(fname, sizeof(fname), "%s", ar.short_src);
		}
		lua_remove(L, --func);
		name = fname;
	}
	if (status == 0) {
		/* The budget ran out in a host function that swallowed the error
		 * (a nested call's return code): the call still failed. */
		lua_settop(L, func - 1);
		lua_pushnil(L);
	}
	int rc = fail(L, lx, status, reason, name);
	if (outer) {
		/* LuaJIT halves its temporary string buffer once per cycle: a few
		 * cycles bring a failed call's memory back near where it began. */
		for (int i = 0; i < 6; i++) {
			size_t before = lx->mem;
			lua_gc(L, LUA_GCCOLLECT, 0);
			if (lx->mem <= lx->mem_start + (64u << 10) || lx->mem >= before)
				break;
		}
	}
	return rc;
}

int sx_lua_call(struct sx_lua *lx, int nargs, int nresults)
{
	return sx_lua_call_state(lx->L, nargs, nresults);
}

int sx_lua_call_state(lua_State *L, int nargs, int nresults)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (!lx)
		return sx_diag_set(SX_EINVAL, "lua: not a sandbox state");
	if (nargs < 0 || lua_gettop(L) < nargs + 1)
		return sx_diag_set(SX_EINVAL, "lua: no function to call");
	return run(lx, L, nargs, nresults, NULL);
}

struct load_args {
	const char *buf;
	size_t len;
	const char *name;
};

static void new_env(lua_State *L, struct sx_lua *lx)
{
	lua_createtable(L, 0, 32);
	int env = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_proto);
	int proto = env + 1;
	lua_pushnil(L);
	while (lua_next(L, proto)) {
		if (lua_istable(L, -1)) {
			lua_createtable(L, 0, 32);
			copy_all(L, lua_gettop(L) - 1, NULL);
			lua_remove(L, -2);
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, env);
	}
	lua_pop(L, 1);
	lua_createtable(L, 0, 8);
	for (size_t i = 0; i < SX_ARRAY_SIZE(std_libs); i++) {
		lua_getfield(L, env, std_libs[i]);
		lua_setfield(L, -2, std_libs[i]);
	}
	lua_pushcclosure(L, sb_require, 1);
	lua_setfield(L, env, "require");
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");
}

static int load_body(lua_State *L)
{
	struct load_args *a = lua_touserdata(L, 1);
	struct sx_lua *lx = sx_lua_from_state(L);
	lua_settop(L, 0);
	if (luaL_loadbufferx(L, a->buf, a->len, a->name, "t") != 0)
		return lua_error(L);
	new_env(L, lx);
	lua_pushvalue(L, -1);
	lua_setfenv(L, 1);
	lua_insert(L, 1); /* env, chunk */
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_check);
	lua_call(L, 1, 1);
	lua_insert(L, 1); /* result, env */
	return 2;
}

int sx_lua_load(struct sx_lua *lx, const char *chunkname, const char *src, size_t len)
{
	return sx_lua_load_state(lx->L, chunkname, src, len);
}

int sx_lua_load_state(lua_State *L, const char *chunkname, const char *src, size_t len)
{
	struct sx_lua *lx = sx_lua_from_state(L);
	if (!lx)
		return sx_diag_set(SX_EINVAL, "lua: not a sandbox state");
	char name[256], shown[256];
	if (!chunkname)
		chunkname = "?";
	if (chunkname[0] == '=' || chunkname[0] == '@')
		snprintf(name, sizeof(name), "%s", chunkname);
	else
		snprintf(name, sizeof(name), "=%s", chunkname);
	snprintf(shown, sizeof(shown), "%s", name + 1);
	if (!src)
		src = "";
	if (len > 0 && src[0] == '\033')
		return sx_diag_set(SX_ESCRIPT, "%s: binary chunks are not accepted", shown);
	char *buf;
	size_t blen;
	int rc = sx__lua_instrument(shown, src, len, &buf, &blen);
	if (rc)
		return rc;
	struct load_args a = {buf, blen, name};
	lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_load);
	lua_pushlightuserdata(L, &a);
	rc = run(lx, L, 1, 2, shown);
	free(buf);
	return rc;
}
