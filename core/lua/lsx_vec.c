#include "core/lua/lsx_vec.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/math/hnsw.h"
#include "core/math/vec.h"
#include "core/sx.h"

#define INDEX_MT "sextant.vec.index"
#define MAX_DIM 65536
#define MAX_K 10000
#define MAX_ALLOW 10000000

struct lsx_index {
	struct sx_hnsw *h;
	int busy; /* a search is running Lua code (a filter): no mutation */
};

/* Reads the array at idx into a float buffer owned by a new userdata pushed on
 * the stack (so nothing leaks if a later check raises). */
static float *check_vec(lua_State *L, int idx, size_t want, size_t *n_out)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	size_t n = lua_objlen(L, idx);
	if (n == 0 || n > MAX_DIM)
		luaL_error(L, "vector must have 1..%d numbers, got %d", MAX_DIM, (int)n);
	if (want && n != want)
		luaL_error(L, "vector has %d numbers, the index has dimension %d", (int)n, (int)want);
	float *v = lua_newuserdata(L, n * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, idx, (int)i + 1);
		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "vector element %d is not a number", (int)i + 1);
		double x = lua_tonumber(L, -1);
		if (!isfinite(x) || fabs(x) > 3.4028234663852886e38)
			luaL_error(L, "vector element %d is not a finite float", (int)i + 1);
		v[i] = (float)x;
		lua_pop(L, 1);
	}
	*n_out = n;
	return v;
}

static void push_vec(lua_State *L, const float *v, size_t n)
{
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushnumber(L, v[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
}

/* Labels: a non-negative integer number below 2^53, or a decimal string (any u64). */
static uint64_t check_label(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		double d = lua_tonumber(L, idx);
		if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d))
			luaL_argerror(L, idx, "label must be an integer in 0..2^53 or a decimal string");
		return (uint64_t)d;
	}
	size_t len;
	const char *s = lua_tolstring(L, idx, &len);
	if (!s || len == 0 || len > 20 || lua_type(L, idx) != LUA_TSTRING)
		luaL_argerror(L, idx, "label must be an integer in 0..2^53 or a decimal string");
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			luaL_argerror(L, idx, "label string must be decimal digits");
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	if (errno == ERANGE)
		luaL_argerror(L, idx, "label exceeds 2^64 - 1");
	return (uint64_t)v;
}

static void push_label(lua_State *L, uint64_t label)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%" PRIu64, label);
	lua_pushlstring(L, buf, (size_t)n);
}

static int raise_rc(lua_State *L, int rc)
{
	return luaL_error(L, "%s: %s", sx_error_code(rc), sx_diag_last());
}

/* ---- plain vector helpers ---- */

static int two_vecs(lua_State *L, float **a, float **b)
{
	size_t na, nb;
	lua_settop(L, 2);
	*a = check_vec(L, 1, 0, &na);
	*b = check_vec(L, 2, na, &nb);
	return (int)na;
}

static int lsx_vec_dot(lua_State *L)
{
	float *a, *b;
	int n = two_vecs(L, &a, &b);
	lua_pushnumber(L, sx_vec_dot(a, b, (size_t)n));
	return 1;
}

static int lsx_vec_l2(lua_State *L)
{
	float *a, *b;
	int n = two_vecs(L, &a, &b);
	lua_pushnumber(L, sx_vec_l2sq(a, b, (size_t)n));
	return 1;
}

static int lsx_vec_cosine(lua_State *L)
{
	float *a, *b;
	int n = two_vecs(L, &a, &b);
	lua_pushnumber(L, sx_vec_cosine(a, b, (size_t)n));
	return 1;
}

static int lsx_vec_norm(lua_State *L)
{
	size_t n;
	lua_settop(L, 1);
	float *a = check_vec(L, 1, 0, &n);
	lua_pushnumber(L, sx_vec_norm(a, n));
	return 1;
}

static int lsx_vec_normalize(lua_State *L)
{
	size_t n;
	lua_settop(L, 1);
	float *a = check_vec(L, 1, 0, &n);
	if (sx_vec_normalize(a, n) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, "zero vector");
		return 2;
	}
	push_vec(L, a, n);
	return 1;
}

/* ---- index ---- */

static struct lsx_index *check_index(lua_State *L, int idx)
{
	struct lsx_index *x = luaL_checkudata(L, idx, INDEX_MT);
	if (!x->h)
		luaL_error(L, "index is closed");
	return x;
}

static struct lsx_index *check_writable(lua_State *L)
{
	struct lsx_index *x = check_index(L, 1);
	if (x->busy)
		luaL_error(L, "index is busy: a search filter may not change its own index");
	return x;
}

static struct lsx_index *new_udata(lua_State *L)
{
	struct lsx_index *x = lua_newuserdata(L, sizeof *x);
	x->h = NULL;
	x->busy = 0;
	luaL_getmetatable(L, INDEX_MT);
	lua_setmetatable(L, -2);
	return x;
}

static lua_Integer opt_int_field(lua_State *L, int t, const char *name, lua_Integer def, lua_Integer lo,
				 lua_Integer hi)
{
	lua_getfield(L, t, name);
	lua_Integer v = def;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) != floor(lua_tonumber(L, -1)))
			luaL_error(L, "option '%s' must be an integer", name);
		v = lua_tointeger(L, -1);
		if (v < lo || v > hi)
			luaL_error(L, "option '%s' must be in %d..%d", name, (int)lo, (int)hi);
	}
	lua_pop(L, 1);
	return v;
}

static int metric_of(lua_State *L, const char *s)
{
	if (strcmp(s, "l2") == 0)
		return SX_METRIC_L2;
	if (strcmp(s, "ip") == 0)
		return SX_METRIC_IP;
	if (strcmp(s, "cosine") == 0)
		return SX_METRIC_COSINE;
	return luaL_error(L, "metric must be \"cosine\", \"ip\" or \"l2\"");
}

static const char *metric_name(int m) { return m == SX_METRIC_L2 ? "l2" : m == SX_METRIC_IP ? "ip" : "cosine"; }

/* vec.index{dim = n, metric = "cosine", M = 16, ef_construction = 200, ef = 64, capacity = 1024} */
static int lsx_vec_index(lua_State *L)
{
	lua_settop(L, 1);
	luaL_checktype(L, 1, LUA_TTABLE);
	struct sx_hnsw_params p;
	lua_Integer dim = opt_int_field(L, 1, "dim", 0, 1, MAX_DIM);
	if (dim == 0)
		return luaL_error(L, "option 'dim' is required");
	lua_getfield(L, 1, "metric");
	int metric = SX_METRIC_COSINE;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "metric must be \"cosine\", \"ip\" or \"l2\"");
		metric = metric_of(L, lua_tostring(L, -1));
	}
	lua_pop(L, 1);
	sx_hnsw_params_init(&p, metric, (uint32_t)dim);
	p.M = (uint32_t)opt_int_field(L, 1, "M", 16, 2, 128);
	p.ef_construction = (uint32_t)opt_int_field(L, 1, "ef_construction", 200, 1, 100000);
	p.ef_search = (uint32_t)opt_int_field(L, 1, "ef", 64, 1, 100000);
	p.capacity = (size_t)opt_int_field(L, 1, "capacity", 1024, 1, 100000000);
	struct lsx_index *x = new_udata(L);
	if (!(x->h = sx_hnsw_new(&p)))
		return raise_rc(L, sx_diag_last_code());
	return 1;
}

static int lsx_index_add(lua_State *L)
{
	lua_settop(L, 3);
	struct lsx_index *x = check_writable(L);
	uint64_t label = check_label(L, 2);
	size_t n;
	float *v = check_vec(L, 3, sx_hnsw_dim(x->h), &n);
	int rc = sx_hnsw_add(x->h, label, v, n);
	if (rc < 0)
		return raise_rc(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int lsx_index_delete(lua_State *L)
{
	struct lsx_index *x = check_writable(L);
	uint64_t label = check_label(L, 2);
	lua_pushboolean(L, sx_hnsw_delete(x->h, label) == 0);
	return 1;
}

static int lsx_index_get(lua_State *L)
{
	lua_settop(L, 2);
	struct lsx_index *x = check_index(L, 1);
	uint64_t label = check_label(L, 2);
	size_t dim = sx_hnsw_dim(x->h);
	float *v = lua_newuserdata(L, dim * sizeof(float));
	if (sx_hnsw_get(x->h, label, v, dim) < 0) {
		lua_pushnil(L);
		return 1;
	}
	push_vec(L, v, dim);
	return 1;
}

static int lsx_index_contains(lua_State *L)
{
	struct lsx_index *x = check_index(L, 1);
	lua_pushboolean(L, sx_hnsw_contains(x->h, check_label(L, 2)));
	return 1;
}

static int lsx_index_count(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)sx_hnsw_count(check_index(L, 1)->h));
	return 1;
}

static int lsx_index_dim(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)sx_hnsw_dim(check_index(L, 1)->h));
	return 1;
}

static int lsx_index_metric(lua_State *L)
{
	lua_pushstring(L, metric_name(sx_hnsw_metric(check_index(L, 1)->h)));
	return 1;
}

static int lsx_index_set_ef(lua_State *L)
{
	struct lsx_index *x = check_writable(L);
	lua_Number ef = luaL_checknumber(L, 2);
	if (!(ef >= 1 && ef <= 100000) || ef != floor(ef))
		return luaL_argerror(L, 2, "ef must be an integer in 1..100000");
	sx_hnsw_set_ef(x->h, (uint32_t)ef);
	return 0;
}

struct lua_pred {
	lua_State *L;
	int fn, trampoline;
	int failed; /* the error value is on top of the stack */
};

/* (fn, &label) -> fn(tostring(label)); runs under pcall, so that even the label
 * string's allocation cannot raise outside protection. */
static int pred_trampoline(lua_State *L)
{
	const uint64_t *label = lua_touserdata(L, 2);
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%" PRIu64, *label);
	lua_settop(L, 1);
	lua_pushlstring(L, buf, (size_t)n);
	lua_call(L, 1, 1);
	return 1;
}

/* A Lua error must not unwind through the C search (it holds pooled scratch
 * memory and the bitmap), so the filter runs under pcall, pushing only values
 * that need no allocation, and a failure is raised after the search. */
static bool lua_pred_cb(uint64_t label, void *arg)
{
	struct lua_pred *p = arg;
	if (p->failed)
		return false;
	lua_State *L = p->L;
	lua_pushvalue(L, p->trampoline);
	lua_pushvalue(L, p->fn);
	lua_pushlightuserdata(L, &label);
	if (lua_pcall(L, 2, 1, 0) != 0) {
		p->failed = 1;
		return false;
	}
	bool ok = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return ok;
}

/* idx:search(q, k [, {ef = n, allow = {labels...}, filter = function(label) end}])
 *   -> labels (array of strings), distances (array of numbers) */
static int lsx_index_search(lua_State *L)
{
	lua_settop(L, 4); /* scratch userdata go above the arguments */
	struct lsx_index *x = check_index(L, 1);
	size_t dim;
	float *q = check_vec(L, 2, sx_hnsw_dim(x->h), &dim);
	lua_Number kk = luaL_checknumber(L, 3);
	if (!(kk >= 1 && kk <= MAX_K) || kk != floor(kk))
		return luaL_argerror(L, 3, "k must be an integer in 1..10000");
	size_t k = (size_t)kk;
	uint32_t ef = 0;
	int fn = 0;
	uint32_t *allow = NULL;
	size_t nallow = 0;
	bool has_allow = false;
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		ef = (uint32_t)opt_int_field(L, 4, "ef", 0, 0, 100000);
		lua_getfield(L, 4, "filter");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TFUNCTION);
			fn = lua_gettop(L);
		} else {
			lua_pop(L, 1);
		}
		lua_getfield(L, 4, "allow");
		if (!lua_isnil(L, -1)) {
			int t = lua_gettop(L);
			luaL_checktype(L, t, LUA_TTABLE);
			nallow = lua_objlen(L, t);
			if (nallow > MAX_ALLOW)
				return luaL_error(L, "allow has more than %d labels", MAX_ALLOW);
			allow = lua_newuserdata(L, (nallow ? nallow : 1) * sizeof *allow);
			size_t m = 0;
			for (size_t i = 0; i < nallow; i++) {
				lua_rawgeti(L, t, (int)i + 1);
				uint64_t l = check_label(L, -1);
				lua_pop(L, 1);
				if (l <= UINT32_MAX)
					allow[m++] = (uint32_t)l;
			}
			nallow = m;
			has_allow = true;
		}
	}
	uint64_t *labels = lua_newuserdata(L, k * sizeof *labels);
	float *dists = lua_newuserdata(L, k * sizeof *dists);
	int trampoline = 0;
	if (fn) {
		lua_pushcfunction(L, pred_trampoline);
		trampoline = lua_gettop(L);
	}
	if (!lua_checkstack(L, 8))
		return luaL_error(L, "stack overflow");

	/* Nothing below may raise until the bitmap is freed. */
	roaring_bitmap_t *bm = NULL;
	if (has_allow && !(bm = roaring_bitmap_of_ptr(nallow, allow)))
		return luaL_error(L, "out of memory");
	struct lua_pred pred = {.L = L, .fn = fn, .trampoline = trampoline};
	struct sx_hnsw_filter f = {.labels = bm, .allow_cb = fn ? lua_pred_cb : NULL, .arg = &pred};
	size_t found = 0;
	x->busy++;
	int rc = sx_hnsw_search(x->h, q, dim, k, ef, (bm || fn) ? &f : NULL, labels, dists, &found);
	x->busy--;
	if (bm)
		roaring_bitmap_free(bm); /* 0.2.x does not accept NULL */
	if (pred.failed)
		return lua_error(L);
	if (rc < 0)
		return raise_rc(L, rc);
	lua_createtable(L, (int)found, 0);
	lua_createtable(L, (int)found, 0);
	for (size_t i = 0; i < found; i++) {
		push_label(L, labels[i]);
		lua_rawseti(L, -3, (int)i + 1);
		lua_pushnumber(L, dists[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 2;
}

static int save_cb(void *arg, const void *data, size_t len)
{
	luaL_addlstring(arg, data, len);
	return 0;
}

static int lsx_index_save(lua_State *L)
{
	struct lsx_index *x = check_index(L, 1);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	int rc = sx_hnsw_save(x->h, save_cb, &b);
	if (rc < 0)
		return raise_rc(L, rc);
	luaL_pushresult(&b);
	return 1;
}

/* vec.load(bytes) -> index | nil, message */
static int lsx_vec_load(lua_State *L)
{
	size_t len;
	lua_settop(L, 1);
	const char *s = luaL_checklstring(L, 1, &len);
	struct lsx_index *x = new_udata(L);
	if (!(x->h = sx_hnsw_load(s, len))) {
		lua_pushnil(L);
		lua_pushstring(L, sx_diag_last());
		return 2;
	}
	return 1;
}

static int lsx_index_gc(lua_State *L)
{
	struct lsx_index *x = luaL_checkudata(L, 1, INDEX_MT);
	sx_hnsw_free(x->h);
	x->h = NULL;
	return 0;
}

static int lsx_index_tostring(lua_State *L)
{
	struct lsx_index *x = luaL_checkudata(L, 1, INDEX_MT);
	if (!x->h)
		lua_pushliteral(L, "sextant.vec.index (closed)");
	else
		lua_pushfstring(L, "sextant.vec.index (%s, dim %d, %d items)", metric_name(sx_hnsw_metric(x->h)),
				(int)sx_hnsw_dim(x->h), (int)sx_hnsw_count(x->h));
	return 1;
}

static const luaL_Reg index_methods[] = {
	{"add", lsx_index_add},       {"delete", lsx_index_delete}, {"get", lsx_index_get},
	{"contains", lsx_index_contains}, {"count", lsx_index_count}, {"dim", lsx_index_dim},
	{"metric", lsx_index_metric}, {"set_ef", lsx_index_set_ef}, {"search", lsx_index_search},
	{"save", lsx_index_save},     {NULL, NULL},
};

static const luaL_Reg vec_funcs[] = {
	{"dot", lsx_vec_dot},     {"l2", lsx_vec_l2},     {"cosine", lsx_vec_cosine},
	{"norm", lsx_vec_norm},   {"normalize", lsx_vec_normalize}, {"index", lsx_vec_index},
	{"load", lsx_vec_load},   {NULL, NULL},
};

int lsx_open_vec(lua_State *L)
{
	if (luaL_newmetatable(L, INDEX_MT)) {
		lua_newtable(L);
		for (const luaL_Reg *r = index_methods; r->name; r++) {
			lua_pushcfunction(L, r->func);
			lua_setfield(L, -2, r->name);
		}
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, lsx_index_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, lsx_index_count);
		lua_setfield(L, -2, "__len");
		lua_pushcfunction(L, lsx_index_tostring);
		lua_setfield(L, -2, "__tostring");
		lua_pushliteral(L, "sextant.vec.index");
		lua_setfield(L, -2, "__metatable");
	}
	lua_pop(L, 1);
	lua_newtable(L);
	for (const luaL_Reg *r = vec_funcs; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_setfield(L, -2, "vec");
	return 0;
}
