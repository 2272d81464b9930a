#include "core/scripts.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <uv.h>
#include <xxhash.h>

#include "core/audit.h"
#include "core/config.h"
#include "core/log.h"
#include "core/lua/module.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "store/store.h"

#define MAX_KINDS 16
#define MAX_SOURCE (1 << 20)
#define MAX_VALUE (16 << 20)
#define LIB "lib"
#define MAX_DEPS 64	  /* libs one script may require, directly or not */
#define MAX_LIB_DEPTH 16 /* libs requiring libs */
#define MAX_USES 8

/* Names of the libs a load required, directly or through other libs. */
struct deps {
	char (*v)[64];
	int n;
};

struct script {
	char kind[32];
	char name[64];
	uint32_t version;
	int ref;     /* the chunk's value, LUA_NOREF if none serves */
	int ctx_ref;
	char origin[8];
	int64_t loaded_at;
	char error[512]; /* the last failure, "" if the last load succeeded */
	struct deps deps; /* of the version serving */
	char *src;	  /* lib kind: the source serving, what require instantiates */
	size_t len;
};

struct watch {
	uv_fs_event_t ev;
	struct sx_scripts *s;
	const struct sx_script_kind *kind;
};

struct sx_scripts {
	struct sx_engine *e;
	lua_State *L;
	struct sx_script_kind kinds[MAX_KINDS];
	int nkinds;
	struct script *v;
	size_t n, cap;
	int module_ref;
	int invoke_ref; /* the invoke function: pushing a C function allocates one each time */
	struct watch watches[MAX_KINDS];
	int nwatches;
	uv_timer_t debounce;
	char pending[32][128]; /* "kind/name" waiting for the debounce */
	int npending;
	struct deps *loading;		     /* the libs required by the load in progress */
	const char *stack[MAX_LIB_DEPTH];    /* libs being instantiated, outermost first */
	int nstack;
	int nreq;	   /* lib_require calls in progress */
	int load_depth;	   /* sx_lua_depth() at which the outermost load's chunk runs */
	int load_libs;	   /* ref of {name = instance} of the outermost load: one instance per script */
	const char *chunk; /* of the outermost load in progress */
	const char *cand_name, *cand_src;    /* a lib version on trial: require gets it */
	size_t cand_len;
	struct sx_lib_use uses[MAX_USES];
	int nuses;
	int started;  /* the scripts folder has been read once */
	int retrying; /* the folder is being read again after a lib loaded */
};

static int invoke(lua_State *L);

/* ---- helpers ---- */

static int valid_name(const char *s, size_t len)
{
	if (len == 0 || len > 63 || !(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* Pushes t[k] of the table at idx without metamethods (nil for a non-table):
 * outside a call's budgets a script's __index must not run. */
static void raw_field(lua_State *L, int idx, const char *k)
{
	if (!lua_istable(L, idx)) {
		lua_pushnil(L);
		return;
	}
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	lua_pushstring(L, k);
	lua_rawget(L, idx);
}

static const struct sx_script_kind *find_kind(struct sx_scripts *s, const char *kind)
{
	for (int i = 0; i < s->nkinds; i++)
		if (strcmp(s->kinds[i].name, kind) == 0)
			return &s->kinds[i];
	return NULL;
}

static struct script *find(struct sx_scripts *s, const char *kind, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i].kind, kind) == 0 && strcmp(s->v[i].name, name) == 0)
			return &s->v[i];
	return NULL;
}

static struct script *find_or_add(struct sx_scripts *s, const char *kind, const char *name)
{
	struct script *sc = find(s, kind, name);
	if (sc)
		return sc;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct script *nv = realloc(s->v, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		s->v = nv;
		s->cap = cap;
	}
	sc = &s->v[s->n++];
	memset(sc, 0, sizeof(*sc));
	snprintf(sc->kind, sizeof(sc->kind), "%s", kind);
	snprintf(sc->name, sizeof(sc->name), "%s", name);
	sc->ref = sc->ctx_ref = LUA_NOREF;
	return sc;
}

static int deps_has(const struct deps *d, const char *name)
{
	for (int i = 0; i < d->n; i++)
		if (strcmp(d->v[i], name) == 0)
			return 1;
	return 0;
}

static int deps_add(struct deps *d, const char *name)
{
	if (deps_has(d, name))
		return 0;
	if (d->n == MAX_DEPS)
		return sx_diag_set(SX_ELIMIT, "a script may require at most %d libs", MAX_DEPS);
	if ((d->n & 7) == 0) {
		void *nv = realloc(d->v, (size_t)(d->n + 8) * sizeof(*d->v));
		if (!nv)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		d->v = nv;
	}
	snprintf(d->v[d->n++], sizeof(d->v[0]), "%s", name);
	return 0;
}

static void deps_free(struct deps *d)
{
	free(d->v);
	d->v = NULL;
	d->n = 0;
}

static size_t key_of(char *buf, size_t size, char tag, const char *kind, const char *name, uint32_t version,
		     int with_version)
{
	int n = snprintf(buf, size, "%c/%s/%s/", tag, kind, name);
	if (with_version) {
		sx_be32((uint8_t *)buf + n, version);
		n += 4;
	}
	return (size_t)n;
}

static void publish_event(struct sx_scripts *s, const char *event, const struct script *sc,
			  uint32_t version, const char *origin, const char *error)
{
	if (!s->e->srv)
		return;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5 + (error != NULL));
	sx_pack_kv_str(&pk, "event", event);
	sx_pack_kv_str(&pk, "kind", sc->kind);
	sx_pack_kv_str(&pk, "name", sc->name);
	sx_pack_str(&pk, "version");
	if (version)
		msgpack_pack_uint32(&pk, version);
	else
		msgpack_pack_nil(&pk);
	sx_pack_kv_str(&pk, "origin", origin);
	if (error)
		sx_pack_kv_str(&pk, "error", error);
	sx_server_publish(s->e->srv, "script.events", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- ctx: what a script's functions get ---- */

static struct sx_scripts *ctx_self(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static size_t ctx_key(lua_State *L, int arg, char *buf)
{
	size_t nslen, klen;
	const char *ns = lua_tolstring(L, lua_upvalueindex(2), &nslen);
	const char *k = luaL_checklstring(L, arg, &klen);
	if (klen == 0 || nslen + klen > 511)
		luaL_error(L, "store keys must have 1 to %d bytes", (int)(511 - nslen));
	memcpy(buf, ns, nslen);
	memcpy(buf + nslen, k, klen);
	return nslen + klen;
}

static int lsx_ctx_get(lua_State *L)
{
	char key[512];
	size_t klen = ctx_key(L, 1, key);
	struct sx_val v;
	int rc = sx_store_get(ctx_self(L)->e->store, SX_T_KV, key, klen, &v);
	if (rc == SX_ENOENT) {
		lua_pushnil(L);
		return 1;
	}
	if (rc < 0 || sx_lua_unpack(L, v.data, v.len) < 0)
		return luaL_error(L, "store.get: %s", sx_diag_last());
	return 1;
}

static int lsx_ctx_put(lua_State *L)
{
	char key[512];
	size_t klen = ctx_key(L, 1, key);
	luaL_checkany(L, 2);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {0, MAX_VALUE};
	int rc = sx_lua_pack(L, 2, &pk, &lim);
	if (rc == 0)
		rc = sx_store_put(ctx_self(L)->e->store, SX_T_KV, key, klen, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return luaL_error(L, "store.put: %s", sx_diag_last());
	return 0;
}

static int lsx_ctx_delete(lua_State *L)
{
	char key[512];
	size_t klen = ctx_key(L, 1, key);
	if (sx_store_del(ctx_self(L)->e->store, SX_T_KV, key, klen) < 0)
		return luaL_error(L, "store.delete: %s", sx_diag_last());
	return 0;
}

struct scan_ud {
	lua_State *L;
	size_t nslen;
	int n, limit;
};

static int scan_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct scan_ud *u = ud;
	lua_State *L = u->L;
	lua_createtable(L, 0, 2);
	lua_pushlstring(L, (const char *)k->data + u->nslen, k->len - u->nslen);
	lua_setfield(L, -2, "key");
	if (sx_lua_unpack(L, v->data, v->len) < 0)
		lua_pushnil(L);
	lua_setfield(L, -2, "value");
	lua_rawseti(L, -2, ++u->n);
	return u->n >= u->limit;
}

/* store.scan{prefix = "", limit = 100, reverse = false} → {{key, value}, ...} */
static int lsx_ctx_scan(lua_State *L)
{
	size_t nslen, plen = 0;
	const char *ns = lua_tolstring(L, lua_upvalueindex(2), &nslen);
	const char *prefix = "";
	int limit = 100, reverse = 0;
	if (!lua_isnoneornil(L, 1)) {
		luaL_checktype(L, 1, LUA_TTABLE);
		lua_getfield(L, 1, "prefix");
		if (!lua_isnil(L, -1))
			prefix = luaL_checklstring(L, -1, &plen);
		lua_getfield(L, 1, "limit");
		if (!lua_isnil(L, -1))
			limit = (int)luaL_checknumber(L, -1);
		lua_getfield(L, 1, "reverse");
		reverse = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	if (limit < 1 || limit > 10000)
		return luaL_error(L, "store.scan: limit must be 1 to 10000");
	if (nslen + plen > 510)
		return luaL_error(L, "store.scan: prefix too long");
	uint8_t lo[512], hi[512];
	memcpy(lo, ns, nslen);
	memcpy(lo + nslen, prefix, plen);
	size_t lolen = nslen + plen, hilen = lolen;
	memcpy(hi, lo, lolen);
	/* The end of the prefix range: the prefix with its last byte incremented. */
	while (hilen > 0 && hi[hilen - 1] == 0xff)
		hilen--;
	hi[hilen - 1]++;
	lua_newtable(L);
	struct scan_ud u = {L, nslen, 0, limit};
	if (sx_store_scan(ctx_self(L)->e->store, SX_T_KV, lo, lolen, hi, hilen, reverse, scan_cb, &u) < 0)
		return luaL_error(L, "store.scan: %s", sx_diag_last());
	return 1;
}

static int lsx_ctx_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)sx_wall_ms());
	return 1;
}

static int lsx_ctx_log(lua_State *L)
{
	size_t len;
	const char *msg = luaL_checklstring(L, 1, &len);
	sx_log_info("script %s: %.*s", lua_tostring(L, lua_upvalueindex(2)), (int)(len > 1000 ? 1000 : len), msg);
	return 0;
}

static int lsx_ctx_publish(lua_State *L)
{
	size_t tlen;
	const char *topic = luaL_checklstring(L, 1, &tlen);
	luaL_checkany(L, 2);
	if (tlen == 0 || tlen > 200)
		return luaL_error(L, "publish: topic must have 1 to 200 bytes");
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {0, MAX_VALUE};
	int rc = sx_lua_pack(L, 2, &pk, &lim), n = 0;
	if (rc == 0 && ctx_self(L)->e->srv)
		n = sx_server_publish(ctx_self(L)->e->srv, topic, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return luaL_error(L, "publish: %s", sx_diag_last());
	lua_pushinteger(L, n);
	return 1;
}

static void set_closure(lua_State *L, const char *field, lua_CFunction fn, struct sx_scripts *s,
			const char *ns)
{
	lua_pushlightuserdata(L, s);
	lua_pushstring(L, ns);
	lua_pushcclosure(L, fn, 2);
	lua_setfield(L, -2, field);
}

/* Builds the ctx table of a script (protected: runs under lua_cpcall). */
struct ctx_args {
	struct sx_scripts *s;
	struct script *sc;
	int ref;
};

static int build_ctx(lua_State *L)
{
	struct ctx_args *a = lua_touserdata(L, 1);
	char ns[160];
	snprintf(ns, sizeof(ns), "%s/%s/", a->sc->kind, a->sc->name);
	lua_newtable(L);
	lua_newtable(L);
	set_closure(L, "get", lsx_ctx_get, a->s, ns);
	set_closure(L, "put", lsx_ctx_put, a->s, ns);
	set_closure(L, "delete", lsx_ctx_delete, a->s, ns);
	set_closure(L, "scan", lsx_ctx_scan, a->s, ns);
	lua_setfield(L, -2, "store");
	set_closure(L, "log", lsx_ctx_log, a->s, ns);
	set_closure(L, "publish", lsx_ctx_publish, a->s, ns);
	lua_pushcfunction(L, lsx_ctx_now);
	lua_setfield(L, -2, "now");
	lua_rawgeti(L, LUA_REGISTRYINDEX, a->s->module_ref);
	lua_setfield(L, -2, "sextant");
	lua_createtable(L, 0, 3);
	lua_pushstring(L, a->sc->kind);
	lua_setfield(L, -2, "kind");
	lua_pushstring(L, a->sc->name);
	lua_setfield(L, -2, "name");
	lua_pushinteger(L, a->sc->version);
	lua_setfield(L, -2, "version");
	lua_setfield(L, -2, "script");
	a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* ---- loading ---- */

static void unref(lua_State *L, int *ref)
{
	if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
		luaL_unref(L, LUA_REGISTRYINDEX, *ref);
	*ref = LUA_NOREF;
}

/* Compiles and validates; on success leaves the value's registry ref in *ref
 * and the libs the load required in *deps (the caller frees them). */
static int compile(struct sx_scripts *s, const struct sx_script_kind *k, const char *name,
		   const char *src, size_t len, int *ref, struct deps *deps)
{
	lua_State *L = s->L;
	char chunk[160];
	struct deps local = {NULL, 0}, *prev = s->loading;
	int prev_n = s->nstack, prev_req = s->nreq, prev_depth = s->load_depth;
	snprintf(chunk, sizeof(chunk), "%s/%s.lua", k->name, name);
	int top = lua_gettop(L);
	s->loading = &local;
	s->load_depth = sx_lua_depth(s->e->lua) + 1;
	s->nreq = 0;
	int prev_libs = s->load_libs;
	lua_newtable(L);
	s->load_libs = luaL_ref(L, LUA_REGISTRYINDEX);
	if (!prev)
		s->chunk = chunk;
	/* a lib that requires itself is a cycle, not the stored version */
	if (strcmp(k->name, LIB) == 0 && s->nstack < MAX_LIB_DEPTH)
		s->stack[s->nstack++] = name;
	int rc = sx_lua_load(s->e->lua, chunk, src, len);
	s->loading = prev;
	s->nstack = prev_n;
	s->nreq = prev_req;
	s->load_depth = prev_depth;
	unref(L, &s->load_libs);
	s->load_libs = prev_libs;
	if (rc < 0) {
		deps_free(&local);
		return rc;
	}
	rc = k->validate(L, top + 1, name, k->ud);
	if (rc < 0) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s: %s", chunk, sx_diag_last());
		lua_settop(L, top);
		deps_free(&local);
		return sx_diag_set(SX_ESCRIPT, "%s", msg);
	}
	lua_pushvalue(L, top + 1);
	*ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_settop(L, top);
	*deps = local;
	return 0;
}

/* ---- libs ---- */

/* Raises "chunk:line: message" at the Lua code that called require (or
 * "chunk: message" after a tail call, which leaves no frame). */
static int raise_at(lua_State *L, const char *fmt, ...)
{
	struct sx_scripts *s = lua_touserdata(L, lua_upvalueindex(1));
	va_list ap;
	luaL_where(L, 2);
	if (lua_objlen(L, -1) == 0 && s->loading) {
		lua_pop(L, 1);
		if (s->nstack > 0 && s->nreq > 0)
			lua_pushfstring(L, "lib/%s.lua: ", s->stack[s->nstack - 1]);
		else
			lua_pushfstring(L, "%s: ", s->chunk);
	}
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	return lua_error(L);
}

/* The sandbox's require for names that are not built-in modules: a fresh
 * instance of lib NAME, loaded in the requiring environment's call. */
static int lib_require(lua_State *L)
{
	struct sx_scripts *s = lua_touserdata(L, lua_upvalueindex(1));
	size_t nlen, len;
	const char *name = luaL_checklstring(L, 1, &nlen), *src;
	if (!valid_name(name, nlen))
		return raise_at(L, "module '%s' is not available in the sandbox", name);
	/* the load's own code, or a lib it is instantiating; not code that a
	 * host call made during the load reached (another script's function) */
	if (!s->loading || sx_lua_depth(s->e->lua) != s->load_depth + s->nreq)
		return raise_at(L, "require \"%s\": a lib is required while the script loads (at its top level), "
				   "not from a function called later", name);
	for (int i = 0; i < s->nstack; i++) {
		if (strcmp(s->stack[i], name) != 0)
			continue;
		luaL_Buffer b;
		luaL_buffinit(L, &b);
		for (int j = i; j < s->nstack; j++) {
			luaL_addstring(&b, s->stack[j]);
			luaL_addstring(&b, " -> ");
		}
		luaL_addstring(&b, name);
		luaL_pushresult(&b);
		return raise_at(L, "require cycle: %s", lua_tostring(L, -1));
	}
	if (s->nstack == MAX_LIB_DEPTH)
		return raise_at(L, "require \"%s\": libs nested more than %d deep", name, MAX_LIB_DEPTH);
	if (deps_add(s->loading, name) < 0)
		return raise_at(L, "require \"%s\": %s", name, sx_diag_last());
	/* one instance per load: a lib that the script and one of its libs both
	 * require is the same table for both (and a diamond loads each lib once) */
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->load_libs);
	lua_pushstring(L, name);
	lua_rawget(L, -2);
	if (!lua_isnil(L, -1)) {
		lua_remove(L, -2);
		return 1;
	}
	lua_pop(L, 2);
	if (s->cand_name && strcmp(s->cand_name, name) == 0) {
		src = s->cand_src;
		len = s->cand_len;
	} else {
		struct script *sc = find(s, LIB, name);
		if (!sc || !sc->src)
			return raise_at(L, "module '%s' not found: no lib script '%s' (scripts/lib/%s.lua)", name, name,
					name);
		src = sc->src;
		len = sc->len;
	}
	char chunk[80];
	snprintf(chunk, sizeof(chunk), "lib/%s.lua", name);
	s->stack[s->nstack++] = name;
	s->nreq++;
	int rc = sx_lua_load_state(L, chunk, src, len);
	s->nstack--;
	s->nreq--;
	/* Only the outermost require names its caller: the innermost error
	 * already says where it happened. */
	if (rc < 0 && s->nreq > 0) {
		lua_pushstring(L, sx_diag_last());
		return lua_error(L);
	}
	if (rc < 0)
		return raise_at(L, "require \"%s\": %s", name, sx_diag_last());
	lua_pop(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->load_libs);
	lua_pushstring(L, name);
	lua_pushvalue(L, -3);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	return 1;
}

static int lib_validate(lua_State *L, int idx, const char *name, void *ud)
{
	struct sx_scripts *s = ud;
	/* nor the standard modules the sandbox withholds: `require "ffi"` must
	 * stay missing, not become somebody's code */
	static const char *const withheld[] = {"ffi", "jit", "debug", "io", "os", "package", NULL};
	for (int i = 0; withheld[i]; i++)
		if (strcmp(name, withheld[i]) == 0)
			return sx_diag_set(SX_ESCRIPT, "'%s' is a standard module the sandbox withholds: a lib may not take its name",
					   name);
	if (sx_lua_module_builtin(s->e->lua, name))
		return sx_diag_set(SX_ESCRIPT, "'%s' is a built-in module: a lib may not take its name", name);
	for (int i = 0; i < s->nuses; i++)
		if (strcmp(s->uses[i].name, name) == 0 && s->uses[i].validate &&
		    s->uses[i].validate(L, idx, name, s->uses[i].ud) < 0)
			return SX_ESCRIPT;
	return 0;
}

static void lib_installed(const char *name, int ref, void *ud)
{
	struct sx_scripts *s = ud;
	for (int i = 0; i < s->nuses; i++)
		if (strcmp(s->uses[i].name, name) == 0 && s->uses[i].installed)
			s->uses[i].installed(name, ref, s->uses[i].ud);
}

int sx_scripts_use_lib(struct sx_scripts *s, const struct sx_lib_use *use)
{
	if (!use || !use->name || !valid_name(use->name, strlen(use->name)))
		return sx_diag_set(SX_EINVAL, "a lib use needs a lib name");
	if (s->nuses == MAX_USES)
		return sx_diag_set(SX_ELIMIT, "too many lib uses");
	s->uses[s->nuses++] = *use;
	struct script *sc = find(s, LIB, use->name);
	if (sc && sc->ref != LUA_NOREF && use->installed)
		use->installed(use->name, sc->ref, use->ud);
	return 0;
}

/* Makes ref serve as `version` of sc. Takes ref and *deps in all cases; src
 * (a lib's source, copied) may be NULL to keep the one serving. */
static int install(struct sx_scripts *s, const struct sx_script_kind *k, struct script *sc, int ref,
		   uint32_t version, const char *origin, struct deps *deps, const char *src, size_t len)
{
	struct ctx_args a = {s, sc, LUA_NOREF};
	uint32_t old_version = sc->version;
	char *copy = NULL;
	sc->version = version;
	int bad = src && !(copy = malloc(len ? len : 1));
	if (bad || lua_cpcall(s->L, build_ctx, &a) != 0) {
		sc->version = old_version;
		const char *m = bad ? "out of memory" : lua_tostring(s->L, -1);
		sx_diag_set(SX_ENOMEM, "cannot build the script context: %s", m ? m : "?");
		if (!bad)
			lua_pop(s->L, 1);
		free(copy);
		unref(s->L, &ref);
		deps_free(deps);
		return SX_ENOMEM;
	}
	unref(s->L, &sc->ref);
	unref(s->L, &sc->ctx_ref);
	sc->ref = ref;
	sc->ctx_ref = a.ref;
	deps_free(&sc->deps);
	sc->deps = *deps;
	deps->v = NULL, deps->n = 0;
	if (src) {
		memcpy(copy, src, len);
		free(sc->src);
		sc->src = copy;
		sc->len = len;
	}
	if (origin != sc->origin)
		snprintf(sc->origin, sizeof(sc->origin), "%s", origin);
	sc->loaded_at = sx_wall_ms();
	sc->error[0] = '\0';
	if (k->installed)
		k->installed(sc->name, ref, k->ud);
	return 0;
}

static int stored_current(struct sx_scripts *s, const char *kind, const char *name, uint32_t *version)
{
	char key[256];
	size_t klen = key_of(key, sizeof(key), 'c', kind, name, 0, 0);
	struct sx_val v;
	int rc = sx_store_get(s->e->store, SX_T_SCRIPTS, key, klen, &v);
	if (rc < 0)
		return rc;
	if (v.len != 4)
		return sx_diag_set(SX_ECORRUPT, "script pointer %s/%s is malformed", kind, name);
	*version = sx_get_be32(v.data);
	return 0;
}

static int last_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	SX_UNUSED(v);
	*(uint32_t *)ud = sx_get_be32((const uint8_t *)k->data + k->len - 4);
	return 1;
}

static uint32_t max_version(struct sx_scripts *s, const char *kind, const char *name)
{
	char lo[256], hi[256];
	size_t lolen = key_of(lo, sizeof(lo), 'v', kind, name, 0, 0);
	memcpy(hi, lo, lolen);
	hi[lolen - 1]++; /* '/' + 1 */
	uint32_t max = 0;
	sx_store_scan(s->e->store, SX_T_SCRIPTS, lo, lolen, hi, lolen, 1, last_cb, &max);
	return max;
}

/* An audit entry for a script change: names and version only, never the source. */
static int audit(struct sx_scripts *s, const char *action, const char *kind, const char *name,
		 uint32_t version, const char *origin)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	sx_pack_kv_str(&pk, "kind", kind);
	sx_pack_kv_str(&pk, "name", name);
	sx_pack_kv_uint(&pk, "version", version);
	sx_pack_kv_str(&pk, "origin", origin);
	int rc = sx_audit_record_packed(s->e, action, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* A version compiled and validated, with the dependents of a lib re-loaded
 * against it: everything ready to serve, nothing changed yet. */
struct reload {
	size_t idx; /* into s->v */
	int ref;
	struct deps deps;
};

struct prepared {
	int ref;
	struct deps deps;
	struct reload *rl;
	size_t nrl;
};

static int prepare(struct sx_scripts *s, const struct sx_script_kind *k, const char *name, const char *src,
		   size_t len, struct prepared *p);
static void retry_files(struct sx_scripts *s);
static void prepared_drop(struct sx_scripts *s, struct prepared *p);
static void reload_apply(struct sx_scripts *s, struct prepared *p, const char *lib);

int sx_scripts_put(struct sx_scripts *s, const char *kind, const char *name, const char *src,
		   size_t len, const char *origin)
{
	const struct sx_script_kind *k = find_kind(s, kind);
	if (!k)
		return sx_diag_set(SX_EINVAL, "unknown script kind '%s'", kind);
	if (!valid_name(name, strlen(name)))
		return sx_diag_set(SX_EINVAL, "script names are 1 to 63 of a-z, 0-9 and _, starting with a letter");
	if (len > MAX_SOURCE)
		return sx_diag_set(SX_E2BIG, "a script source may have at most %d bytes", MAX_SOURCE);
	struct prepared p;
	int rc = prepare(s, k, name, src, len, &p);
	struct script *sc = find_or_add(s, kind, name);
	if (!sc) {
		prepared_drop(s, &p);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	if (rc < 0) {
		snprintf(sc->error, sizeof(sc->error), "%s", sx_diag_last());
		sx_log_warn("script %s/%s rejected: %s", kind, name, sc->error);
		publish_event(s, "failed", sc, 0, origin, sc->error);
		sx_diag_set(rc, "%s", sc->error);
		return rc;
	}
	uint32_t version = max_version(s, kind, name) + 1;
	/* The record: {source, created, origin, bytes}. */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	sx_pack_str(&pk, "source");
	sx_pack_strn(&pk, src, len);
	sx_pack_kv_int(&pk, "created", sx_wall_ms());
	sx_pack_kv_str(&pk, "origin", origin);
	char key[256];
	uint8_t ver[4];
	size_t klen = key_of(key, sizeof(key), 'v', kind, name, version, 1);
	sx_be32(ver, version);
	rc = sx_store_put(s->e->store, SX_T_SCRIPTS, key, klen, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	klen = key_of(key, sizeof(key), 'c', kind, name, 0, 0);
	if (rc == 0)
		rc = sx_store_put(s->e->store, SX_T_SCRIPTS, key, klen, ver, 4);
	int is_lib = strcmp(kind, LIB) == 0;
	if (rc == 0) {
		rc = install(s, k, sc, p.ref, version, origin, &p.deps, is_lib ? src : NULL, len);
		p.ref = LUA_NOREF;
	}
	if (rc < 0) {
		prepared_drop(s, &p);
		return rc;
	}
	rc = audit(s, "script.put", kind, name, version, origin);
	sx_log_info("script %s/%s version %u loaded (%s)", kind, name, version, origin);
	publish_event(s, "loaded", sc, version, origin, NULL);
	reload_apply(s, &p, name);
	if (is_lib)
		retry_files(s);
	return rc < 0 ? rc : (int)version;
}

struct record {
	const char *src;
	size_t len;
	int64_t created;
	const char *origin;
	size_t origin_len;
};

/* Decodes a version record into r (views into zone / v). */
static int read_record(struct sx_scripts *s, const char *kind, const char *name, uint32_t version,
		       msgpack_zone *zone, struct record *r)
{
	char key[256];
	size_t klen = key_of(key, sizeof(key), 'v', kind, name, version, 1);
	struct sx_val v;
	int rc = sx_store_get(s->e->store, SX_T_SCRIPTS, key, klen, &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "%s/%s has no version %u", kind, name, version);
	if (rc < 0)
		return rc;
	void *copy = msgpack_zone_malloc(zone, v.len);
	msgpack_object o;
	if (!copy || sx_frame_decode(memcpy(copy, v.data, v.len), v.len, zone, &o) < 0 ||
	    o.type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_ECORRUPT, "the record of %s/%s version %u is malformed", kind, name, version);
	memset(r, 0, sizeof(*r));
	if (sx_arg_str(&o, "source", 1, &r->src, &r->len) < 0)
		return sx_diag_set(SX_ECORRUPT, "the record of %s/%s version %u has no source", kind, name, version);
	sx_arg_int(&o, "created", 0, &r->created);
	r->origin = "?";
	r->origin_len = 1;
	sx_arg_str(&o, "origin", 0, &r->origin, &r->origin_len);
	return 0;
}

static void reload_free(struct sx_scripts *s, struct reload *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unref(s->L, &r[i].ref);
		deps_free(&r[i].deps);
	}
	free(r);
}

static void prepared_drop(struct sx_scripts *s, struct prepared *p)
{
	unref(s->L, &p->ref);
	deps_free(&p->deps);
	reload_free(s, p->rl, p->nrl);
	p->rl = NULL;
	p->nrl = 0;
}

/* Re-loads, from their stored sources, the scripts serving now that required
 * lib `name` (while s->cand_* makes require see the new version). */
static int reload_dependents(struct sx_scripts *s, const char *name, struct prepared *p)
{
	size_t n = 0, m = 0;
	int rc = 0;
	for (size_t i = 0; i < s->n; i++)
		n += s->v[i].ref != LUA_NOREF && deps_has(&s->v[i].deps, name);
	if (!n)
		return 0;
	struct reload *r = calloc(n, sizeof(*r));
	if (!r)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	/* each dependent compiles under a budget of its own, all on the loop: the
	 * whole change may hold it twice the timeout of one call, not n times */
	uint64_t t0 = sx_now_ms(), cap = 2 * (uint64_t)(s->e->cfg->script_timeout_ms ? s->e->cfg->script_timeout_ms : 1000);
	for (size_t i = 0; i < s->n && rc == 0; i++) {
		struct script *sc = &s->v[i];
		if (sc->ref == LUA_NOREF || !deps_has(&sc->deps, name))
			continue;
		if (sx_now_ms() - t0 > cap) {
			rc = sx_diag_set(SX_EBUDGET, "lib/%s: compiling the scripts that require it took over %llu ms "
						 "(%zu of %zu done); the change is refused", name, (unsigned long long)cap, m, n);
			break;
		}
		const struct sx_script_kind *k = find_kind(s, sc->kind);
		msgpack_zone zone;
		struct record rec;
		r[m].idx = i;
		r[m].ref = LUA_NOREF;
		if (!msgpack_zone_init(&zone, 1024)) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			break;
		}
		rc = k ? read_record(s, sc->kind, sc->name, sc->version, &zone, &rec)
		       : sx_diag_set(SX_EINVAL, "unknown script kind '%s'", sc->kind);
		if (rc == 0)
			rc = compile(s, k, sc->name, rec.src, rec.len, &r[m].ref, &r[m].deps);
		msgpack_zone_destroy(&zone);
		m++;
		if (rc < 0) {
			char msg[700];
			snprintf(msg, sizeof(msg), "%s/%s does not load with this version of lib/%s: %s", sc->kind,
				 sc->name, name, sx_diag_last());
			sx_diag_set(rc, "%s", msg);
		}
	}
	if (rc < 0) {
		reload_free(s, r, m);
		return rc;
	}
	p->rl = r;
	p->nrl = m;
	return 0;
}

static int prepare(struct sx_scripts *s, const struct sx_script_kind *k, const char *name, const char *src,
		   size_t len, struct prepared *p)
{
	memset(p, 0, sizeof(*p));
	p->ref = LUA_NOREF;
	int is_lib = strcmp(k->name, LIB) == 0;
	if (is_lib) {
		s->cand_name = name;
		s->cand_src = src;
		s->cand_len = len;
	}
	int rc = compile(s, k, name, src, len, &p->ref, &p->deps);
	if (rc == 0 && is_lib && (rc = reload_dependents(s, name, p)) < 0) {
		char msg[800];
		snprintf(msg, sizeof(msg), "%s", sx_diag_last());
		prepared_drop(s, p);
		sx_diag_set(rc, "%s", msg);
	}
	s->cand_name = s->cand_src = NULL;
	return rc;
}

/* The dependents re-loaded against a lib that now serves replace their old
 * instances; each keeps its version. */
static void reload_apply(struct sx_scripts *s, struct prepared *p, const char *lib)
{
	char origin[80];
	snprintf(origin, sizeof(origin), "lib/%s", lib);
	for (size_t i = 0; i < p->nrl; i++) {
		struct reload *r = &p->rl[i];
		struct script *sc = &s->v[r->idx];
		int rc = install(s, find_kind(s, sc->kind), sc, r->ref, sc->version, sc->origin, &r->deps, NULL, 0);
		r->ref = LUA_NOREF;
		if (rc < 0) {
			sx_log_warn("script %s/%s: not re-loaded after %s: %s", sc->kind, sc->name, origin, sx_diag_last());
			continue;
		}
		sx_log_info("script %s/%s version %u re-loaded with %s", sc->kind, sc->name, sc->version, origin);
		publish_event(s, "reloaded", sc, sc->version, origin, NULL);
	}
	prepared_drop(s, p);
}

static int activate(struct sx_scripts *s, const char *kind, const char *name, uint32_t version,
		    const char *event)
{
	const struct sx_script_kind *k = find_kind(s, kind);
	msgpack_zone zone;
	struct record r;
	if (!k)
		return sx_diag_set(SX_EINVAL, "unknown script kind '%s'", kind);
	if (!msgpack_zone_init(&zone, 1024))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	struct prepared p;
	memset(&p, 0, sizeof(p));
	p.ref = LUA_NOREF;
	int rc = read_record(s, kind, name, version, &zone, &r);
	char origin[8];
	if (rc == 0) {
		snprintf(origin, sizeof(origin), "%.*s", (int)r.origin_len, r.origin);
		rc = prepare(s, k, name, r.src, r.len, &p);
	}
	struct script *sc = find_or_add(s, kind, name);
	if (!sc) {
		msgpack_zone_destroy(&zone);
		prepared_drop(s, &p);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	if (rc < 0) {
		msgpack_zone_destroy(&zone);
		snprintf(sc->error, sizeof(sc->error), "%s", sx_diag_last());
		publish_event(s, "failed", sc, version, "store", sc->error);
		sx_diag_set(rc, "%s", sc->error);
		return rc;
	}
	int is_lib = strcmp(kind, LIB) == 0;
	rc = install(s, k, sc, p.ref, version, origin, &p.deps, is_lib ? r.src : NULL, r.len);
	p.ref = LUA_NOREF;
	msgpack_zone_destroy(&zone);
	if (rc < 0) {
		prepared_drop(s, &p);
		return rc;
	}
	if (strcmp(event, "rollback") == 0) {
		char key[256];
		uint8_t ver[4];
		sx_be32(ver, version);
		size_t klen = key_of(key, sizeof(key), 'c', kind, name, 0, 0);
		if ((rc = sx_store_put(s->e->store, SX_T_SCRIPTS, key, klen, ver, 4)) < 0 ||
		    (rc = audit(s, "script.rollback", kind, name, version, origin)) < 0) {
			reload_apply(s, &p, name);
			return rc;
		}
		sx_log_info("script %s/%s rolled back to version %u", kind, name, version);
	}
	publish_event(s, event, sc, version, origin, NULL);
	reload_apply(s, &p, name);
	if (is_lib)
		retry_files(s);
	return rc;
}

/* ---- the scripts directory ---- */

static int read_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return sx_diag_set(SX_ENOENT, "cannot open %s", path);
	char *buf = malloc(MAX_SOURCE + 1);
	size_t n = buf ? fread(buf, 1, MAX_SOURCE + 1, f) : 0;
	fclose(f);
	if (!buf)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (n > MAX_SOURCE) {
		free(buf);
		return sx_diag_set(SX_E2BIG, "%s is larger than %d bytes", path, MAX_SOURCE);
	}
	*out = buf;
	*len = n;
	return 0;
}

/* Loads scripts_dir/kind/name.lua if its content changed since it was last
 * seen. Returns 1 if a version of it serves afterwards. */
static int load_file(struct sx_scripts *s, const char *kind, const char *name)
{
	char path[2048], key[256];
	char *src = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "%s/%s/%s.lua", s->e->cfg->scripts_dir, kind, name);
	if (read_file(path, &src, &len) < 0)
		return 0;
	uint64_t h = XXH3_64bits(src, len);
	uint8_t hb[8];
	sx_be64(hb, h);
	size_t klen = key_of(key, sizeof(key), 'f', kind, name, 0, 0);
	struct sx_val v;
	struct script *sc = find(s, kind, name);
	if (sx_store_get(s->e->store, SX_T_SCRIPTS, key, klen, &v) == 0 && v.len == 8 &&
	    memcmp(v.data, hb, 8) == 0 && sc && (sc->ref != LUA_NOREF || (s->retrying && !memmem(src, len, "require", 7)))) {
		/* unchanged and serving; or, retried after a lib loaded, a file
		 * that requires nothing: no lib can be what it lacked */
		free(src);
		return sc->ref != LUA_NOREF;
	}
	int rc = sx_scripts_put(s, kind, name, src, len, "file");
	sx_store_put(s->e->store, SX_T_SCRIPTS, key, klen, hb, 8);
	free(src);
	return rc > 0 || ((sc = find(s, kind, name)) && sc->ref != LUA_NOREF);
}

static int name_of_file(const char *file, char *name, size_t size)
{
	size_t n = strlen(file);
	if (n < 5 || n - 4 >= size || strcmp(file + n - 4, ".lua") != 0)
		return 0;
	memcpy(name, file, n - 4);
	name[n - 4] = '\0';
	return valid_name(name, n - 4);
}

static void debounce_cb(uv_timer_t *t)
{
	struct sx_scripts *s = t->data;
	for (int i = 0; i < s->npending; i++) {
		char *slash = strchr(s->pending[i], '/');
		*slash = '\0';
		load_file(s, s->pending[i], slash + 1);
	}
	s->npending = 0;
}

static void fs_cb(uv_fs_event_t *ev, const char *file, int events, int status)
{
	struct watch *w = (struct watch *)ev;
	struct sx_scripts *s = w->s;
	char name[64], entry[128];
	SX_UNUSED(events);
	if (status < 0 || !file || !name_of_file(file, name, sizeof(name)))
		return;
	snprintf(entry, sizeof(entry), "%s/%s", w->kind->name, name);
	for (int i = 0; i < s->npending; i++)
		if (strcmp(s->pending[i], entry) == 0)
			goto arm;
	if (s->npending < (int)SX_ARRAY_SIZE(s->pending))
		strcpy(s->pending[s->npending++], entry);
arm:
	/* Editors write in several steps: wait until the file is quiet. */
	uv_timer_start(&s->debounce, debounce_cb, 50, 0);
}

/* Loads the files of a kind's folder; returns how many do not serve. */
static int scan_dir(struct sx_scripts *s, const struct sx_script_kind *k)
{
	char dir[2048], name[64];
	int failed = 0;
	snprintf(dir, sizeof(dir), "%s/%s", s->e->cfg->scripts_dir, k->name);
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (name_of_file(de->d_name, name, sizeof(name)))
			failed += !load_file(s, k->name, name);
	closedir(d);
	return failed;
}

/* A new lib version may be what a script file lacked: the files of the folder
 * that do not serve are loaded again (unchanged ones that serve are skipped). */
static void retry_files(struct sx_scripts *s)
{
	if (!s->started || s->retrying)
		return;
	s->retrying = 1;
	for (int failed = -1, last; failed != 0;) {
		last = failed, failed = 0;
		for (int i = 0; i < s->nkinds; i++)
			failed += scan_dir(s, &s->kinds[i]);
		if (last >= 0 && failed >= last)
			break;
	}
	s->retrying = 0;
}

static void watch_dir(struct sx_scripts *s, const struct sx_script_kind *k)
{
	char dir[2048];
	struct stat st;
	snprintf(dir, sizeof(dir), "%s/%s", s->e->cfg->scripts_dir, k->name);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return;
	if (s->e->cfg->watch_scripts && s->nwatches < MAX_KINDS) {
		struct watch *w = &s->watches[s->nwatches];
		w->s = s;
		w->kind = k;
		uv_fs_event_init(s->e->loop, &w->ev);
		if (uv_fs_event_start(&w->ev, fs_cb, dir, 0) == 0)
			s->nwatches++;
		else
			uv_close((uv_handle_t *)&w->ev, NULL);
	}
}

struct cur_ud {
	struct sx_scripts *s;
	char (*names)[2][64];
	size_t n, cap;
};

static int cur_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct cur_ud *u = ud;
	SX_UNUSED(v);
	/* "c/kind/name/" */
	const char *p = (const char *)k->data + 2, *end = (const char *)k->data + k->len;
	const char *slash = memchr(p, '/', (size_t)(end - p));
	if (!slash || end[-1] != '/' || slash - p >= 64 || end - slash - 2 >= 64)
		return 0;
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		void *nn = realloc(u->names, cap * sizeof(*u->names));
		if (!nn)
			return SX_ENOMEM;
		u->names = nn;
		u->cap = cap;
	}
	snprintf(u->names[u->n][0], 64, "%.*s", (int)(slash - p), p);
	snprintf(u->names[u->n][1], 64, "%.*s", (int)(end - slash - 2), slash + 1);
	u->n++;
	return 0;
}

int sx_scripts_start(struct sx_scripts *s)
{
	struct cur_ud u = {s, NULL, 0, 0};
	sx_store_scan(s->e->store, SX_T_SCRIPTS, "c/", 2, "c0", 2, 0, cur_cb, &u);
	char *done = calloc(u.n ? u.n : 1, 1);
	if (!done) {
		free(u.names);
		sx_store_read_end(s->e->store);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	/* Libs first, as often as one more of them loads (a lib may require a
	 * lib that comes after it), then the scripts that require them. */
	for (int libs = 1; libs >= 0; libs--) {
		int progress = 1;
		while (progress) {
			progress = 0;
			for (size_t i = 0; i < u.n; i++) {
				uint32_t version;
				if (done[i] || (strcmp(u.names[i][0], LIB) == 0) != libs)
					continue;
				if (!find_kind(s, u.names[i][0])) {
					done[i] = 1;
					sx_log_warn("script %s/%s: there is no kind '%s' (any more); not loaded%s",
						    u.names[i][0], u.names[i][1], u.names[i][0],
						    strcmp(u.names[i][0], "features") == 0
							    ? ": the features are the lib scripts/lib/features.lua now"
							    : "");
					continue;
				}
				if (stored_current(s, u.names[i][0], u.names[i][1], &version) < 0) {
					done[i] = 1;
					continue;
				}
				if (activate(s, u.names[i][0], u.names[i][1], version, "loaded") == 0) {
					done[i] = 1;
					progress = 1;
				} else if (!libs) {
					done[i] = 1;
					sx_log_warn("script %s/%s version %u does not load: %s", u.names[i][0],
						    u.names[i][1], version, sx_diag_last());
				}
			}
		}
	}
	for (size_t i = 0; i < u.n; i++)
		if (!done[i])
			sx_log_warn("script %s/%s does not load: %s", u.names[i][0], u.names[i][1],
				    find(s, u.names[i][0], u.names[i][1]) ? find(s, u.names[i][0], u.names[i][1])->error : "?");
	free(done);
	free(u.names);
	/* kinds[0] is lib */
	for (int failed = scan_dir(s, &s->kinds[0]), last = -1; failed > 0 && failed != last;)
		last = failed, failed = scan_dir(s, &s->kinds[0]);
	for (int i = 1; i < s->nkinds; i++)
		scan_dir(s, &s->kinds[i]);
	for (int i = 0; i < s->nkinds; i++)
		watch_dir(s, &s->kinds[i]);
	s->started = 1;
	sx_store_read_end(s->e->store);
	return 0;
}

/* ---- lifecycle ---- */

struct sx_scripts *sx_scripts_new(struct sx_engine *e)
{
	struct sx_scripts *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->load_libs = LUA_NOREF;
	s->e = e;
	s->L = sx_lua_state(e->lua);
	lua_pushcfunction(s->L, luaopen_sextant);
	if (lua_pcall(s->L, 0, 1, 0) != 0) {
		lua_pop(s->L, 1);
		free(s);
		sx_diag_set(SX_ENOMEM, "cannot open the sextant module");
		return NULL;
	}
	s->module_ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
	lua_pushcfunction(s->L, invoke);
	s->invoke_ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
	/* first, so that libs load before the scripts that require them */
	struct sx_script_kind lib = {LIB, lib_validate, lib_installed, s};
	s->kinds[s->nkinds++] = lib;
	if (sx_lua_set_require_fallback(e->lua, lib_require, s) < 0) {
		luaL_unref(s->L, LUA_REGISTRYINDEX, s->module_ref);
		luaL_unref(s->L, LUA_REGISTRYINDEX, s->invoke_ref);
		free(s);
		return NULL;
	}
	uv_timer_init(e->loop, &s->debounce);
	s->debounce.data = s;
	return s;
}

void sx_scripts_stop_watching(struct sx_scripts *s)
{
	for (int i = 0; i < s->nwatches; i++)
		uv_fs_event_stop(&s->watches[i].ev);
	uv_timer_stop(&s->debounce);
	s->npending = 0;
}

void sx_scripts_free(struct sx_scripts *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->nwatches; i++) {
		uv_fs_event_stop(&s->watches[i].ev);
		uv_close((uv_handle_t *)&s->watches[i].ev, NULL);
	}
	uv_close((uv_handle_t *)&s->debounce, NULL);
	uv_run(s->e->loop, UV_RUN_NOWAIT);
	sx_lua_set_require_fallback(s->e->lua, NULL, NULL);
	for (size_t i = 0; i < s->n; i++) {
		unref(s->L, &s->v[i].ref);
		unref(s->L, &s->v[i].ctx_ref);
		deps_free(&s->v[i].deps);
		free(s->v[i].src);
	}
	luaL_unref(s->L, LUA_REGISTRYINDEX, s->module_ref);
	luaL_unref(s->L, LUA_REGISTRYINDEX, s->invoke_ref);
	free(s->v);
	free(s);
}

int sx_scripts_add_kind(struct sx_scripts *s, const struct sx_script_kind *kind)
{
	if (s->nkinds == MAX_KINDS)
		return sx_diag_set(SX_ELIMIT, "too many script kinds");
	s->kinds[s->nkinds++] = *kind;
	return 0;
}

int sx_scripts_push(struct sx_scripts *s, const char *kind, const char *name)
{
	struct script *sc = find(s, kind, name);
	if (!sc || sc->ref == LUA_NOREF)
		return sx_diag_set(SX_ENOENT, "no %s script '%s'", kind, name);
	lua_rawgeti(s->L, LUA_REGISTRYINDEX, sc->ref);
	return 0;
}

int sx_scripts_push_ctx(struct sx_scripts *s, const char *kind, const char *name)
{
	struct script *sc = find(s, kind, name);
	if (!sc || sc->ctx_ref == LUA_NOREF)
		return sx_diag_set(SX_ENOENT, "no %s script '%s'", kind, name);
	lua_rawgeti(s->L, LUA_REGISTRYINDEX, sc->ctx_ref);
	return 0;
}

/* fn(ctx, args) with args decoded inside the protected call. */
static int invoke(lua_State *L)
{
	const msgpack_object *args = lua_touserdata(L, 3);
	lua_settop(L, 2);
	if (args && args->type == MSGPACK_OBJECT_MAP)
		sx_lua_push_object(L, args);
	else
		lua_newtable(L);
	lua_call(L, 2, 1);
	return 1;
}

int sx_scripts_call(struct sx_scripts *s, const char *kind, const char *name, const char *fn,
		    const msgpack_object *args, msgpack_packer *pk)
{
	lua_State *L = s->L;
	int top = lua_gettop(L), rc;
	if (!lua_checkstack(L, 8))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->invoke_ref);
	if ((rc = sx_scripts_push(s, kind, name)) < 0) {
		lua_settop(L, top);
		return rc;
	}
	raw_field(L, -1, fn);
	lua_remove(L, -2);
	if (!lua_isfunction(L, -1)) {
		lua_settop(L, top);
		return sx_diag_set(SX_ENOENT, "%s script '%s' has no function '%s'", kind, name, fn);
	}
	sx_scripts_push_ctx(s, kind, name);
	lua_pushlightuserdata(L, (void *)args);
	if ((rc = sx_lua_call(s->e->lua, 3, 1)) < 0) {
		lua_settop(L, top);
		return rc;
	}
	struct sx_mpack_limits lim = {0, s->e->cfg->limits.max_output_bytes / 2};
	rc = sx_lua_pack(L, -1, pk, &lim);
	lua_settop(L, top);
	if (rc < 0)
		return sx_diag_set(rc, "%s/%s.%s returned a bad result: %s", kind, name, fn, sx_diag_last());
	return 0;
}

void sx_scripts_pack_list(struct sx_scripts *s, const char *kind, msgpack_packer *pk)
{
	uint32_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += !kind || strcmp(kind, s->v[i].kind) == 0;
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < s->n; i++) {
		struct script *sc = &s->v[i];
		if (kind && strcmp(kind, sc->kind) != 0)
			continue;
		msgpack_pack_map(pk, 8);
		sx_pack_kv_str(pk, "kind", sc->kind);
		sx_pack_kv_str(pk, "name", sc->name);
		sx_pack_kv_uint(pk, "version", sc->version);
		sx_pack_kv_str(pk, "status", sc->ref != LUA_NOREF ? "serving" : "failed");
		sx_pack_kv_str(pk, "origin", sc->origin);
		sx_pack_kv_int(pk, "loaded_at", sc->loaded_at);
		sx_pack_kv_str(pk, "error", sc->error[0] ? sc->error : NULL);
		sx_pack_key(pk, "requires");
		msgpack_pack_array(pk, (size_t)sc->deps.n);
		for (int j = 0; j < sc->deps.n; j++)
			sx_pack_str(pk, sc->deps.v[j]);
	}
}

/* ---- the `methods` kind ---- */

static int methods_validate(lua_State *L, int idx, const char *name, void *ud)
{
	struct sx_scripts *s = ud;
	int nfn = 0;
	size_t nlen = strlen(name);
	for (size_t i = 0; i < sx_rpc_count(s->e->rpc); i++) {
		const char *m = sx_rpc_at(s->e->rpc, i)->name;
		if (strncmp(m, name, nlen) == 0 && m[nlen] == '.')
			return sx_diag_set(SX_ESCRIPT, "the name '%s' is taken by built-in methods (%s)", name, m);
	}
	if (!lua_istable(L, idx))
		return sx_diag_set(SX_ESCRIPT, "a methods script must return a table of functions (got %s)",
				   lua_typename(L, lua_type(L, idx)));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int kt = lua_type(L, -2), vt = lua_type(L, -1);
		const char *k = kt == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		if (!k) {
			lua_pop(L, 2);
			return sx_diag_set(SX_ESCRIPT, "keys of a methods table must be strings");
		}
		if (strcmp(k, "roles") == 0) {
			if (vt != LUA_TTABLE) {
				lua_pop(L, 2);
				return sx_diag_set(SX_ESCRIPT, "'roles' must map function names to reader, writer or admin");
			}
			int t = lua_gettop(L);
			lua_pushnil(L);
			while (lua_next(L, t)) {
				const char *r = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
				if (lua_type(L, -2) != LUA_TSTRING || !r || sx_role_parse(r) < 0) {
					lua_pop(L, 4);
					return sx_diag_set(SX_ESCRIPT, "'roles' must map function names to reader, writer or admin");
				}
				lua_pop(L, 1);
			}
		} else if (strcmp(k, "description") == 0) {
			if (vt != LUA_TSTRING) {
				lua_pop(L, 2);
				return sx_diag_set(SX_ESCRIPT, "'description' must be a string");
			}
		} else if (vt == LUA_TFUNCTION) {
			if (!valid_name(k, strlen(k))) {
				lua_pop(L, 2);
				return sx_diag_set(SX_ESCRIPT, "method name '%s' is not 1 to 63 of a-z, 0-9 and _", k);
			}
			nfn++;
		} else {
			lua_pop(L, 2);
			return sx_diag_set(SX_ESCRIPT, "field '%s' must be a function", k);
		}
		lua_pop(L, 1);
	}
	if (nfn == 0)
		return sx_diag_set(SX_ESCRIPT, "a methods script must define at least one function");
	return 0;
}

static int split_method(const char *full, char *mod, size_t msize, const char **fn)
{
	const char *dot = strrchr(full, '.');
	if (!dot || dot == full || (size_t)(dot - full) >= msize || !dot[1])
		return 0;
	memcpy(mod, full, (size_t)(dot - full));
	mod[dot - full] = '\0';
	*fn = dot + 1;
	return 1;
}

static int m_scripted(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	char mod[64];
	const char *fn;
	if (!split_method(req->method, mod, sizeof(mod), &fn))
		return sx_diag_set(SX_ENOMETHOD, "no method '%s'", req->method);
	return sx_scripts_call(ud, "methods", mod, fn, args, pk);
}

static int methods_fallback(const char *name, size_t len, struct sx_method *out, void *ud)
{
	struct sx_scripts *s = ud;
	char full[256], mod[64];
	const char *fn;
	if (len >= sizeof(full))
		return SX_ENOMETHOD;
	memcpy(full, name, len);
	full[len] = '\0';
	if (!split_method(full, mod, sizeof(mod), &fn) || sx_scripts_push(s, "methods", mod) < 0)
		return SX_ENOMETHOD;
	lua_State *L = s->L;
	int role = SX_ROLE_WRITER, ok;
	raw_field(L, -1, fn);
	ok = lua_isfunction(L, -1) && valid_name(fn, strlen(fn));
	lua_pop(L, 1);
	raw_field(L, -1, "roles");
	if (lua_istable(L, -1)) {
		raw_field(L, -1, fn);
		if (lua_type(L, -1) == LUA_TSTRING)
			role = sx_role_parse(lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	if (!ok)
		return SX_ENOMETHOD;
	out->name = NULL;
	out->role = role;
	out->fn = m_scripted;
	out->ud = s;
	out->doc = NULL;
	return 0;
}

/* ---- script.* methods ---- */

static int arg_kind_name(struct sx_scripts *s, const msgpack_object *args, char *kind, char *name)
{
	int rc;
	if ((rc = sx_arg_cstr(args, "kind", 1, kind, 32)) < 0 || (rc = sx_arg_cstr(args, "name", 1, name, 64)) < 0)
		return rc;
	if (!find_kind(s, kind))
		return sx_diag_set(SX_EINVAL, "unknown script kind '%s'", kind);
	if (!valid_name(name, strlen(name)))
		return sx_diag_set(SX_EINVAL, "script names are 1 to 63 of a-z, 0-9 and _, starting with a letter");
	return 0;
}

static int m_put(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "name", "source", NULL};
	char kind[32], name[64];
	const char *src;
	size_t len;
	int rc;
	SX_UNUSED(req);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = arg_kind_name(ud, args, kind, name)) < 0 ||
	    (rc = sx_arg_str(args, "source", 1, &src, &len)) < 0)
		return rc;
	if ((rc = sx_scripts_put(ud, kind, name, src, len, "rpc")) < 0)
		return rc;
	msgpack_pack_map(pk, 3);
	sx_pack_kv_str(pk, "kind", kind);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", (uint32_t)rc);
	return 0;
}

static int m_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "name", "version", NULL};
	struct sx_scripts *s = ud;
	char kind[32], name[64];
	int64_t version = 0;
	uint32_t current = 0;
	int rc;
	SX_UNUSED(req);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = arg_kind_name(s, args, kind, name)) < 0 ||
	    (rc = sx_arg_int(args, "version", 0, &version)) < 0)
		return rc;
	if (stored_current(s, kind, name, &current) < 0)
		return sx_diag_set(SX_ENOENT, "no %s script '%s'", kind, name);
	if (version == 0)
		version = current;
	if (version < 1 || version > UINT32_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'version' must be a version number");
	msgpack_zone zone;
	struct record r;
	msgpack_zone_init(&zone, 1024);
	rc = read_record(s, kind, name, (uint32_t)version, &zone, &r);
	if (rc == 0) {
		msgpack_pack_map(pk, 7);
		sx_pack_kv_str(pk, "kind", kind);
		sx_pack_kv_str(pk, "name", name);
		sx_pack_kv_uint(pk, "version", (uint64_t)version);
		sx_pack_kv_bool(pk, "current", (uint32_t)version == current);
		sx_pack_kv_int(pk, "created", r.created);
		sx_pack_str(pk, "origin");
		sx_pack_strn(pk, r.origin, r.origin_len);
		sx_pack_str(pk, "source");
		sx_pack_strn(pk, r.src, r.len);
	}
	msgpack_zone_destroy(&zone);
	return rc;
}

static int m_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", NULL};
	char kind[32];
	int rc;
	SX_UNUSED(req);
	kind[0] = '\0';
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "kind", 0, kind, sizeof(kind))) < 0)
		return rc;
	sx_scripts_pack_list(ud, kind[0] ? kind : NULL, pk);
	return 0;
}

struct hist_ud {
	uint32_t current;
	int n;
	msgpack_sbuffer sb;
	msgpack_packer ipk;
};

static int hist_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct hist_ud *u = ud;
	uint32_t version = sx_get_be32((const uint8_t *)k->data + k->len - 4);
	msgpack_zone zone;
	msgpack_object o;
	msgpack_zone_init(&zone, 1024);
	void *copy = msgpack_zone_malloc(&zone, v->len);
	int64_t created = 0;
	const char *origin = "?", *src = "";
	size_t olen = 1, slen = 0;
	if (copy && sx_frame_decode(memcpy(copy, v->data, v->len), v->len, &zone, &o) == 0) {
		sx_arg_int(&o, "created", 0, &created);
		sx_arg_str(&o, "origin", 0, &origin, &olen);
		sx_arg_str(&o, "source", 0, &src, &slen);
	}
	msgpack_pack_map(&u->ipk, 5);
	sx_pack_kv_uint(&u->ipk, "version", version);
	sx_pack_kv_int(&u->ipk, "created", created);
	sx_pack_str(&u->ipk, "origin");
	sx_pack_strn(&u->ipk, origin, olen);
	sx_pack_kv_uint(&u->ipk, "bytes", slen);
	sx_pack_kv_bool(&u->ipk, "current", version == u->current);
	msgpack_zone_destroy(&zone);
	u->n++;
	return 0;
}

static int m_history(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "name", NULL};
	struct sx_scripts *s = ud;
	char kind[32], name[64], lo[256], hi[256];
	int rc;
	SX_UNUSED(req);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = arg_kind_name(s, args, kind, name)) < 0)
		return rc;
	struct hist_ud u = {0, 0, {0}, {0}};
	if (stored_current(s, kind, name, &u.current) < 0)
		return sx_diag_set(SX_ENOENT, "no %s script '%s'", kind, name);
	size_t len = key_of(lo, sizeof(lo), 'v', kind, name, 0, 0);
	memcpy(hi, lo, len);
	hi[len - 1]++;
	msgpack_sbuffer_init(&u.sb);
	msgpack_packer_init(&u.ipk, &u.sb, msgpack_sbuffer_write);
	rc = sx_store_scan(s->e->store, SX_T_SCRIPTS, lo, len, hi, len, 0, hist_cb, &u);
	if (rc == 0) {
		msgpack_pack_array(pk, (size_t)u.n);
		msgpack_sbuffer_write(pk->data, u.sb.data, u.sb.size);
	}
	msgpack_sbuffer_destroy(&u.sb);
	return rc;
}

static int m_rollback(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "name", "version", NULL};
	struct sx_scripts *s = ud;
	char kind[32], name[64];
	int64_t version = 0;
	uint32_t current;
	int rc;
	SX_UNUSED(req);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = arg_kind_name(s, args, kind, name)) < 0 ||
	    (rc = sx_arg_int(args, "version", 0, &version)) < 0)
		return rc;
	if (stored_current(s, kind, name, &current) < 0)
		return sx_diag_set(SX_ENOENT, "no %s script '%s'", kind, name);
	if (version == 0) {
		if (current <= 1)
			return sx_diag_set(SX_ESTATE, "%s/%s has no version before %u", kind, name, current);
		version = current - 1;
	}
	if (version < 1 || version > UINT32_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'version' must be a version number");
	if ((rc = activate(s, kind, name, (uint32_t)version, "rollback")) < 0)
		return rc;
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "kind", kind);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", (uint64_t)version);
	sx_pack_kv_uint(pk, "previous", current);
	return 0;
}

int sx_scripts_register_methods(struct sx_scripts *s)
{
	const struct sx_method methods[] = {
		{"script.put", SX_ROLE_ADMIN, m_put, s, "store and load a new version of a script"},
		{"script.get", SX_ROLE_READER, m_get, s, "a script's source and metadata"},
		{"script.list", SX_ROLE_READER, m_list, s, "the scripts loaded, with their versions"},
		{"script.history", SX_ROLE_READER, m_history, s, "every version of a script"},
		{"script.rollback", SX_ROLE_ADMIN, m_rollback, s, "make an earlier version current"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(s->e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	struct sx_script_kind k = {"methods", methods_validate, NULL, s};
	sx_rpc_set_fallback(s->e->rpc, methods_fallback, s);
	return sx_scripts_add_kind(s, &k);
}
