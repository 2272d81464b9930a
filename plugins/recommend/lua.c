/* The `strategies` script kind and the ctx functions strategies call. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/config.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/sx.h"
#include "plugins/privacy/privacy.h"
#include "plugins/recommend/internal.h"

#define LIST_MAX 5000 /* entries a ctx function takes or returns */
#define N_MAX 1000

/* ---- helpers ---- */

/* Per-item scratch reused across requests instead of an nitems-sized array
 * allocated and cleared per call (100k items: 0.5 MB a request): an entry is
 * set when its stamp equals the current epoch. One set per function; a nested
 * call of the same function (a metamethod can run one) gets NULL and falls
 * back to fresh Lua memory. */
struct marks {
	uint32_t *stamp;
	int32_t *val;
	size_t cap;
	uint32_t epoch;
	int busy;
};
enum { MARK_BLEND, MARK_FILTER, MARK_RESULT, MARK_SETS };
static struct marks marks[MARK_SETS];

static struct marks *marks_begin(int which, size_t n)
{
	struct marks *m = &marks[which];
	if (m->busy)
		return NULL;
	if (m->cap < n) {
		size_t cap = n + n / 2 + 64;
		uint32_t *st = calloc(cap, sizeof(*st));
		int32_t *v = malloc(cap * sizeof(*v));
		if (!st || !v) {
			free(st), free(v);
			return NULL;
		}
		free(m->stamp), free(m->val);
		m->stamp = st, m->val = v, m->cap = cap, m->epoch = 0;
	}
	if (++m->epoch == 0) {
		memset(m->stamp, 0, m->cap * sizeof(*m->stamp));
		m->epoch = 1;
	}
	m->busy = 1;
	return m;
}

static inline int marks_has(const struct marks *m, size_t i) { return m->stamp[i] == m->epoch; }
static inline void marks_set(struct marks *m, size_t i, int32_t v)
{
	m->stamp[i] = m->epoch;
	m->val[i] = v;
}

void sx__rec_lua_marks_free(void)
{
	for (int i = 0; i < MARK_SETS; i++) {
		free(marks[i].stamp), free(marks[i].val);
		memset(&marks[i], 0, sizeof(marks[i]));
	}
}

static struct rec_user *user_arg(lua_State *L, int idx)
{
	size_t len;
	const char *id = luaL_checklstring(L, idx, &len);
	uint32_t u;
	if (len == 0 || len > SX_EVENTS_ID_MAX || sx_events_user_index(NULL, id, len, &u) < 0)
		return NULL;
	return sx__rec_user(sx__rec->cur, u);
}

static size_t n_arg(lua_State *L, int idx, size_t def)
{
	if (lua_isnoneornil(L, idx))
		return def;
	lua_Number d = luaL_checknumber(L, idx);
	if (!(d >= 0 && d <= N_MAX))
		luaL_argerror(L, idx, "n must be 0..1000");
	return (size_t)d;
}

static const char *item_name(uint32_t i)
{
	const struct rec_item *it = &sx__rec->items[i];
	return it->name[0] ? it->name : it->id;
}

/* Item id strings kept alive between requests (a direct-mapped table in the
 * registry, slot item % ID_CACHE): without it every request re-creates (and
 * the collector frees) a few hundred id strings, and that allocation was the
 * largest single cost of a recommendation. */
#define ID_CACHE 16384
static int id_cache_ref = LUA_NOREF;

/* Pushes the id table; its stack index is what push_item_id takes. */
static int id_cache_push(lua_State *L)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, id_cache_ref);
	return lua_gettop(L);
}

static void push_item_id(lua_State *L, int cache, uint32_t item)
{
	const struct rec_item *it = &sx__rec->items[item];
	if (!lua_istable(L, cache)) {
		lua_pushlstring(L, it->id, it->len);
		return;
	}
	int slot = (int)(item % ID_CACHE) + 1;
	lua_rawgeti(L, cache, slot);
	size_t len;
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
	if (s && len == it->len && memcmp(s, it->id, len) == 0)
		return;
	lua_pop(L, 1);
	lua_pushlstring(L, it->id, it->len);
	lua_pushvalue(L, -1);
	lua_rawseti(L, cache, slot);
}

static void push_cands(lua_State *L, const struct rec_cand *c, int n)
{
	int cache = id_cache_push(L);
	lua_createtable(L, n > 0 ? n : 0, 0);
	for (int i = 0; i < n; i++) {
		lua_createtable(L, 0, 4);
		push_item_id(L, cache, c[i].item);
		lua_setfield(L, -2, "item");
		lua_pushnumber(L, c[i].score);
		lua_setfield(L, -2, "score");
		lua_pushstring(L, sx__rec_source_names[c[i].source]);
		lua_setfield(L, -2, "source");
		if (c[i].via >= 0) {
			push_item_id(L, cache, (uint32_t)c[i].via);
			lua_setfield(L, -2, "via");
		}
		lua_rawseti(L, -2, i + 1);
	}
	lua_remove(L, cache);
}

static struct rec_cand *cand_buf(lua_State *L, size_t n)
{
	return lua_newuserdata(L, (n ? n : 1) * sizeof(struct rec_cand));
}

/* (user, n = 50, opts = {include_seen = false}) */
static int user_source(lua_State *L, int (*fn)(struct rec_state *, struct rec_user *, size_t, struct rec_cand *))
{
	struct rec_user *u = user_arg(L, 1);
	size_t n = n_arg(L, 2, 50);
	int include_seen = 0;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "include_seen");
		include_seen = lua_toboolean(L, -1);
		lua_pop(L, 1);
	} else if (!lua_isnoneornil(L, 3)) {
		luaL_argerror(L, 3, "{include_seen = boolean}");
	}
	struct rec_cand *c = cand_buf(L, n);
	sx__rec->include_seen = include_seen;
	int m = u ? fn(sx__rec->cur, u, n, c) : 0;
	sx__rec->include_seen = 0;
	if (m < 0)
		return luaL_error(L, "source failed: %s", sx_error_code(m));
	push_cands(L, c, m);
	return 1;
}

static int l_collab(lua_State *L) { return user_source(L, sx__rec_src_collab); }
static int l_content(lua_State *L) { return user_source(L, sx__rec_src_content); }
static int l_covisit(lua_State *L) { return user_source(L, sx__rec_src_covisit); }

static int window_parse(const char *s)
{
	if (!s || strcmp(s, "week") == 0)
		return REC_W_WEEK;
	if (strcmp(s, "day") == 0)
		return REC_W_DAY;
	if (strcmp(s, "month") == 0)
		return REC_W_MONTH;
	return -1;
}

/* The item kind named by field `kind` of the table at 1, or `dflt` without one. */
static int kind_field(lua_State *L, int dflt)
{
	int kind = dflt;
	lua_getfield(L, 1, "kind");
	if (!lua_isnil(L, -1)) {
		size_t kl;
		const char *k = luaL_checklstring(L, -1, &kl);
		if ((kind = sx_item_kind_parse(k, kl)) < 0)
			luaL_error(L, "unknown item kind '%s'", k);
	}
	lua_pop(L, 1);
	return kind;
}

/* opts: a number n or {kind?, region?, n?, window?} */
static int top_source(lua_State *L, int source, int kind, int window)
{
	size_t n = 50;
	char region[48] = "";
	if (lua_type(L, 1) == LUA_TNUMBER) {
		n = n_arg(L, 1, 50);
	} else if (lua_istable(L, 1)) {
		lua_getfield(L, 1, "n");
		n = n_arg(L, -1, 50);
		kind = kind_field(L, kind);
		lua_getfield(L, 1, "region");
		if (!lua_isnil(L, -1)) {
			size_t rl;
			const char *r = luaL_checklstring(L, -1, &rl);
			if (rl >= sizeof(region))
				rl = sizeof(region) - 1;
			for (size_t i = 0; i < rl; i++)
				region[i] = (char)tolower((unsigned char)r[i]);
			region[rl] = 0;
		}
		lua_getfield(L, 1, "window");
		if (!lua_isnil(L, -1) && (window = window_parse(luaL_checkstring(L, -1))) < 0)
			luaL_error(L, "window must be day, week or month");
		lua_pop(L, 3); /* n, region, window */
	} else if (!lua_isnoneornil(L, 1)) {
		luaL_argerror(L, 1, "a number or {kind, region, n, window}");
	}
	struct rec_cand *c = cand_buf(L, n);
	int m = sx__rec_src_top(sx__rec->cur, kind, region[0] ? region : NULL, window, n, source, c);
	if (m < 0)
		return luaL_error(L, "source failed: %s", sx_error_code(m));
	push_cands(L, c, m);
	return 1;
}

static int l_trending(lua_State *L) { return top_source(L, REC_SRC_TRENDING, -1, REC_W_DAY); }
static int l_offers(lua_State *L) { return top_source(L, REC_SRC_OFFERS, SX_ITEM_OFFER, REC_W_WEEK); }
static int l_popular(lua_State *L) { return top_source(L, REC_SRC_POPULAR, -1, REC_W_MONTH); }

/* The segment of user id (its index in segnames), -1 if none or if the live
 * state may not personalize for the user. */
static int user_segment(const char *id, size_t len)
{
	uint32_t u;
	if (len == 0 || len > SX_EVENTS_ID_MAX || sx_events_user_index(NULL, id, len, &u) < 0)
		return -1;
	if (sx__rec->cur->live && !sx_privacy_allowed_index(u, SX_PURPOSE_PERSONALIZATION))
		return -1;
	return sx__rec_user_segment(u);
}

/* segment_popular{user?, segment?, kind?, n = 50, fallback = true}: the most
 * popular items among the users who share user's segment value (or the value
 * `segment`), source "segment_popular"; without a segment, or one nobody
 * counted yet, the global popular list (source "popular"), or {} when
 * fallback is false. */
static int l_segment_popular(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	size_t n = 50;
	int kind = -1, fallback = 1;
	uint64_t h = 0;
	lua_getfield(L, 1, "n");
	n = n_arg(L, -1, 50);
	kind = kind_field(L, kind);
	lua_getfield(L, 1, "fallback");
	if (!lua_isnil(L, -1))
		fallback = lua_toboolean(L, -1);
	lua_getfield(L, 1, "segment");
	lua_getfield(L, 1, "user");
	if (!lua_isnil(L, -2)) {
		size_t sl;
		const char *sv = luaL_checklstring(L, -2, &sl);
		if (sl == 0 || sl > REC_SEG_VALUE_MAX)
			luaL_error(L, "segment must be 1 to %d bytes", REC_SEG_VALUE_MAX);
		h = sx__rec_segment_hash(sv, sl);
	} else if (!lua_isnil(L, -1)) {
		size_t ul;
		const char *uid = luaL_checklstring(L, -1, &ul);
		int g = user_segment(uid, ul);
		if (g >= 0)
			h = sx__rec->segnames[g].h;
	}
	lua_pop(L, 4); /* n, fallback, segment, user */
	struct rec_cand *c = cand_buf(L, n);
	int m = h ? sx__rec_src_segment(sx__rec->cur, h, kind, n, c) : 0;
	if (m == 0 && fallback)
		m = sx__rec_src_top(sx__rec->cur, kind, NULL, REC_W_MONTH, n, REC_SRC_POPULAR, c);
	if (m < 0)
		return luaL_error(L, "source failed: %s", sx_error_code(m));
	push_cands(L, c, m);
	return 1;
}

static int l_item_get(lua_State *L)
{
	size_t len;
	const char *id = luaL_checklstring(L, 1, &len);
	int64_t i = sx__rec_item_find(id, len);
	if (i < 0 || sx__rec->items[i].kind < 0)
		return 0;
	const struct rec_item *it = &sx__rec->items[i];
	lua_createtable(L, 0, 8);
	lua_pushlstring(L, it->id, it->len);
	lua_setfield(L, -2, "id");
	lua_pushstring(L, sx_item_kind_name(it->kind));
	lua_setfield(L, -2, "kind");
	if (it->region[0]) {
		lua_pushstring(L, it->region);
		lua_setfield(L, -2, "region");
	}
	if (it->name[0]) {
		lua_pushstring(L, it->name);
		lua_setfield(L, -2, "name");
	}
	if (!isnan(it->price)) {
		lua_pushnumber(L, it->price);
		lua_setfield(L, -2, "price");
	}
	lua_pushboolean(L, it->available);
	lua_setfield(L, -2, "available");
	lua_createtable(L, it->ntags, 0);
	for (int t = 0; t < it->ntags; t++) {
		lua_pushstring(L, it->tags[t]);
		lua_rawseti(L, -2, t + 1);
	}
	lua_setfield(L, -2, "tags");
	lua_pushnumber(L, sx__rec_pop(sx__rec->cur, (uint32_t)i, REC_W_MONTH, sx__rec_now(sx__rec->cur)));
	lua_setfield(L, -2, "popularity");
	return 1;
}

static int l_user(lua_State *L)
{
	size_t len;
	const char *id = luaL_checklstring(L, 1, &len);
	struct rec_user *u = user_arg(L, 1);
	lua_createtable(L, 0, 6);
	lua_pushlstring(L, id, len);
	lua_setfield(L, -2, "id");
	lua_pushboolean(L, u && u->ninter > 0);
	lua_setfield(L, -2, "known");
	lua_pushinteger(L, u ? (lua_Integer)u->ninter : 0);
	lua_setfield(L, -2, "interactions");
	lua_createtable(L, u ? u->nrecent : 0, 0);
	for (int r = 0; u && r < u->nrecent; r++) {
		uint32_t it = u->recent[u->nrecent - 1 - r];
		lua_pushlstring(L, sx__rec->items[it].id, sx__rec->items[it].len);
		lua_rawseti(L, -2, r + 1);
	}
	lua_setfield(L, -2, "recent");
	lua_newtable(L);
	int nb = 0;
	for (uint32_t i = 0; u && i < u->ninter; i++)
		if (u->inter[i].booked) {
			lua_pushlstring(L, sx__rec->items[u->inter[i].item].id, sx__rec->items[u->inter[i].item].len);
			lua_rawseti(L, -2, ++nb);
		}
	lua_setfield(L, -2, "booked");
	/* the region the user interacted with most, for regional rules */
	if (u && u->ninter) {
		const char *best = NULL;
		double bw = 0;
		for (uint32_t i = 0; i < u->ninter; i++) {
			const struct rec_item *it = &sx__rec->items[u->inter[i].item];
			if (!it->region[0])
				continue;
			double w = 0;
			for (uint32_t j = 0; j < u->ninter; j++)
				if (strcmp(sx__rec->items[u->inter[j].item].region, it->region) == 0)
					w += u->inter[j].w;
			if (w > bw)
				bw = w, best = it->region;
		}
		if (best) {
			lua_pushstring(L, best);
			lua_setfield(L, -2, "region");
		}
	}
	return 1;
}

static int l_profile(lua_State *L)
{
	size_t len;
	const char *id = luaL_checklstring(L, 1, &len);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	int rc = sx__rec_pack_profile(sx__rec->cur, id, len, &pk);
	if (rc < 0) {
		msgpack_sbuffer_destroy(&sb);
		return 0;
	}
	/* copy the bytes to Lua-owned memory so a raise cannot leak the buffer */
	char *b = lua_newuserdata(L, sb.size);
	memcpy(b, sb.data, sb.size);
	size_t n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	if (sx_lua_unpack(L, b, n) < 0)
		return 0;
	return 1;
}

/* ---- lists ---- */

struct row {
	int ref_pos; /* position in the input array */
	int64_t item;
	double score;
};

/* score descending, then input order */
static int row_cmp(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->ref_pos - y->ref_pos;
}

/* Reads list at idx into rows (Lua-owned memory); returns the count. */
static struct row *read_list(lua_State *L, int idx, int *count)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	int n = (int)lua_objlen(L, idx);
	if (n > LIST_MAX)
		luaL_error(L, "a list of at most %d entries", LIST_MAX);
	struct row *r = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(*r));
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, idx, i + 1);
		if (!lua_istable(L, -1))
			luaL_error(L, "list entry %d is not a table", i + 1);
		lua_getfield(L, -1, "item");
		size_t len;
		const char *id = lua_tolstring(L, -1, &len);
		if (!id || lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "list entry %d has no item id", i + 1);
		r[i].item = sx__rec_item_find(id, len);
		lua_getfield(L, -2, "score");
		r[i].score = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
		if (!isfinite(r[i].score))
			r[i].score = 0;
		r[i].ref_pos = i + 1;
		lua_pop(L, 3);
	}
	*count = n;
	return r;
}

static int64_t opt_int(lua_State *L, int t, const char *k, int64_t def)
{
	lua_getfield(L, t, k);
	int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : def;
	lua_pop(L, 1);
	return v;
}

static int months_overlap(uint16_t mask, int64_t from, int64_t to)
{
	if (!mask)
		return 1;
	if (to - from >= 366LL * 86400000)
		return 1;
	for (int64_t t = from; t <= to; t += 86400000LL * 27) {
		time_t s = (time_t)(t / 1000);
		struct tm tm;
		gmtime_r(&s, &tm);
		if (mask & (1u << tm.tm_mon))
			return 1;
	}
	time_t s = (time_t)(to / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	return (mask & (1u << tm.tm_mon)) != 0;
}

/* filter(list, req): drops unknown, unavailable, wrong-kind, over-budget,
 * wrong-date, excluded, booked and (unless req.include_seen) seen items. */
static int l_filter(lua_State *L)
{
	int n;
	struct row *r = read_list(L, 1, &n);
	int rows = lua_gettop(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct rec *R = sx__rec;
	int kind = -1, include_seen = 0;
	double budget = INFINITY;
	int64_t dfrom = INT64_MIN, dto = INT64_MAX;
	int has_dates = 0;
	struct rec_user *u = NULL;
	lua_getfield(L, 2, "user");
	if (lua_type(L, -1) == LUA_TSTRING)
		u = user_arg(L, -1);
	lua_getfield(L, 2, "kind");
	if (lua_type(L, -1) == LUA_TSTRING) {
		size_t kl;
		const char *k = lua_tolstring(L, -1, &kl);
		kind = sx_item_kind_parse(k, kl);
	}
	lua_getfield(L, 2, "include_seen");
	include_seen = lua_toboolean(L, -1);
	lua_pop(L, 3);
	/* exclusions: a set of item indexes */
	struct marks *mk = marks_begin(MARK_FILTER, R->nitems + 1);
	uint8_t *excl = NULL;
	if (!mk) {
		excl = lua_newuserdata(L, R->nitems + 1);
		memset(excl, 0, R->nitems + 1);
	}
#define EXCL_SET(x) (excl ? (void)(excl[x] = 1) : marks_set(mk, (size_t)(x), 1))
#define EXCL_HAS(x) (excl ? excl[x] != 0 : marks_has(mk, (size_t)(x)))
	lua_getfield(L, 2, "context");
	int ctxi = lua_gettop(L);
	if (lua_istable(L, ctxi)) {
		lua_getfield(L, ctxi, "budget");
		if (lua_isnumber(L, -1))
			budget = lua_tonumber(L, -1);
		lua_getfield(L, ctxi, "dates");
		if (lua_istable(L, -1)) {
			dfrom = opt_int(L, lua_gettop(L), "from", INT64_MIN);
			dto = opt_int(L, lua_gettop(L), "to", INT64_MAX);
			has_dates = 1;
		}
		lua_getfield(L, ctxi, "exclude");
		if (lua_istable(L, -1)) {
			int ne = (int)lua_objlen(L, -1);
			for (int i = 1; i <= ne && i <= LIST_MAX; i++) {
				lua_rawgeti(L, -1, i);
				size_t len;
				const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
				int64_t x = id ? sx__rec_item_find(id, len) : -1;
				if (x >= 0)
					EXCL_SET(x);
				lua_pop(L, 1);
			}
		}
		lua_pop(L, 3);
	}
	if (u)
		for (uint32_t i = 0; i < u->ninter; i++)
			if (u->inter[i].booked || !include_seen)
				EXCL_SET(u->inter[i].item);
	lua_createtable(L, n, 0);
	int out = 0;
	for (int i = 0; i < n; i++) {
		int64_t x = r[i].item;
		if (x < 0 || EXCL_HAS(x))
			continue;
		const struct rec_item *it = &R->items[x];
		if (it->kind < 0 || !it->available || (kind >= 0 && it->kind != kind) ||
		    (!isnan(it->price) && it->price > budget))
			continue;
		if (has_dates && (it->avail_to < dfrom || it->avail_from > dto || !months_overlap(it->months, dfrom, dto)))
			continue;
		EXCL_SET(x); /* once */
		lua_rawgeti(L, 1, r[i].ref_pos);
		lua_rawseti(L, -2, ++out);
	}
#undef EXCL_SET
#undef EXCL_HAS
	if (mk)
		mk->busy = 0;
	SX_UNUSED(rows);
	return 1;
}

/* blend({name = list, ...}, {name = weight, ...}): one list by item, each
 * list's scores divided by its largest; the source is the list that gave the
 * most, `sources` all of them. */
struct acc {
	int64_t item;
	double score, best;
	int best_src;
	uint32_t srcmask;
	int64_t via;
};

static int src_index(const char *name)
{
	for (int i = 0; i < REC_SRC_COUNT; i++)
		if (strcmp(name, sx__rec_source_names[i]) == 0)
			return i;
	return -1;
}

static int acc_cmp(const void *a, const void *b)
{
	const struct acc *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

static int l_blend(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	double prior = 0;
	int window = REC_W_MONTH;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_getfield(L, 3, "popularity");
		prior = luaL_optnumber(L, -1, 0);
		lua_getfield(L, 3, "window");
		if (!lua_isnil(L, -1) && (window = window_parse(luaL_checkstring(L, -1))) < 0)
			luaL_error(L, "window must be day, week or month");
		lua_pop(L, 2);
		if (!(prior >= 0 && prior <= 4))
			luaL_argerror(L, 3, "popularity must be in [0, 4]");
	}
	lua_settop(L, 2);
	struct rec *R = sx__rec;
	struct marks *mk = marks_begin(MARK_BLEND, R->nitems + 1);
	int32_t *pos = NULL;
	if (!mk) {
		pos = lua_newuserdata(L, (R->nitems + 1) * sizeof(int32_t));
		for (uint32_t i = 0; i <= R->nitems; i++)
			pos[i] = -1;
	}
	size_t total = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		total += lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
		lua_pop(L, 1);
	}
	if (total > LIST_MAX)
		total = LIST_MAX;
	struct acc *a = lua_newuserdata(L, (total ? total : 1) * sizeof(struct acc));
	int na = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
			luaL_error(L, "blend takes {source name = list}");
		const char *name = lua_tostring(L, -2);
		int si = src_index(name);
		if (si < 0)
			luaL_error(L, "unknown source '%s'", name);
		double w = 1;
		if (lua_istable(L, 2)) {
			lua_getfield(L, 2, name);
			if (lua_isnumber(L, -1))
				w = lua_tonumber(L, -1);
			lua_pop(L, 1);
		}
		int n, li = lua_gettop(L);
		struct row *r = read_list(L, li, &n);
		double mx = 0;
		for (int i = 0; i < n; i++)
			if (r[i].score > mx)
				mx = r[i].score;
		for (int i = 0; i < n; i++) {
			if (r[i].item < 0)
				continue;
			double s = mx > 0 ? (r[i].score > 0 ? r[i].score / mx : 0) : 1.0 / (1 + i);
			double c = w * s;
			int p = pos ? pos[r[i].item] : marks_has(mk, (size_t)r[i].item) ? mk->val[r[i].item] : -1;
			if (p < 0) {
				if ((size_t)na == total)
					continue;
				p = na++;
				if (pos)
					pos[r[i].item] = p;
				else
					marks_set(mk, (size_t)r[i].item, p);
				a[p] = (struct acc){r[i].item, 0, -INFINITY, si, 0, -1};
			}
			a[p].score += c;
			a[p].srcmask |= 1u << si;
			if (c > a[p].best)
				a[p].best = c, a[p].best_src = si;
			if (si == REC_SRC_COVISIT && a[p].via < 0) {
				lua_rawgeti(L, li, r[i].ref_pos);
				lua_getfield(L, -1, "via");
				size_t vl;
				const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
				a[p].via = v ? sx__rec_item_find(v, vl) : -1;
				lua_pop(L, 2);
			}
		}
		lua_settop(L, li - 1);
	}
	if (prior > 0 && na) {
		/* a popularity prior: among items the user's sources rate alike, the
		 * ones more people take are likelier (relative to the most popular
		 * candidate, so the scale stays the blend's) */
		int64_t now = sx__rec_now(R->cur);
		double mx = 0;
		double *pop = lua_newuserdata(L, (size_t)na * sizeof(double));
		for (int i = 0; i < na; i++) {
			pop[i] = sx__rec_pop(R->cur, (uint32_t)a[i].item, window, now);
			if (pop[i] > mx)
				mx = pop[i];
		}
		for (int i = 0; i < na; i++)
			a[i].score *= pow((pop[i] + 1e-3 * mx + 1e-9) / (mx + 1e-9), prior);
		lua_pop(L, 1);
	}
	if (mk)
		mk->busy = 0;
	qsort(a, (size_t)na, sizeof(*a), acc_cmp);
	/* One `sources` list per (best source, set of sources), shared by the
	 * entries that have it: a blend of a few hundred candidates has a handful. */
	int cache = id_cache_push(L);
	lua_createtable(L, 0, 8);
	int shared = lua_gettop(L);
	lua_createtable(L, na, 0);
	for (int i = 0; i < na; i++) {
		lua_createtable(L, 0, 5);
		push_item_id(L, cache, (uint32_t)a[i].item);
		lua_setfield(L, -2, "item");
		lua_pushnumber(L, a[i].score);
		lua_setfield(L, -2, "score");
		lua_pushstring(L, sx__rec_source_names[a[i].best_src]);
		lua_setfield(L, -2, "source");
		lua_Integer key = (lua_Integer)a[i].srcmask * 16 + a[i].best_src;
		lua_pushinteger(L, key);
		lua_rawget(L, shared);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_newtable(L);
			int k = 0;
			lua_pushstring(L, sx__rec_source_names[a[i].best_src]);
			lua_rawseti(L, -2, ++k);
			for (int s = 0; s < REC_SRC_COUNT; s++)
				if ((a[i].srcmask >> s & 1) && s != a[i].best_src) {
					lua_pushstring(L, sx__rec_source_names[s]);
					lua_rawseti(L, -2, ++k);
				}
			lua_pushinteger(L, key);
			lua_pushvalue(L, -2);
			lua_rawset(L, shared);
		}
		lua_setfield(L, -2, "sources");
		if (a[i].via >= 0) {
			push_item_id(L, cache, (uint32_t)a[i].via);
			lua_setfield(L, -2, "via");
		}
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

/* mmr(list, n, lambda = 0.7): diversity re-ranking over content vectors. */
static int l_mmr(lua_State *L)
{
	int n;
	struct row *r = read_list(L, 1, &n);
	size_t k = n_arg(L, 2, (size_t)n);
	double lambda = luaL_optnumber(L, 3, 0.7);
	if (!(lambda >= 0 && lambda <= 1))
		luaL_argerror(L, 3, "lambda must be in [0, 1]");
	struct rec *R = sx__rec;
	size_t dim = R->content_dim ? R->content_dim : 1;
	double *rel = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(double));
	float *vecs = lua_newuserdata(L, (size_t)(n ? n : 1) * dim * sizeof(float));
	uint32_t *order = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(uint32_t));
	double mx = 0;
	for (int i = 0; i < n; i++)
		if (r[i].score > mx)
			mx = r[i].score;
	for (int i = 0; i < n; i++) {
		rel[i] = mx > 0 ? r[i].score / mx : 1.0 / (1 + i);
		float *v = vecs + (size_t)i * dim;
		if (r[i].item < 0 || sx__rec_item_vec((uint32_t)r[i].item, v) < 0)
			memset(v, 0, dim * sizeof(float));
	}
	int m = n ? sx_rec_mmr(rel, vecs, (size_t)n, dim, k, lambda, order) : 0;
	if (m < 0)
		return luaL_error(L, "mmr failed: %s", sx_error_code(m));
	lua_createtable(L, m, 0);
	for (int i = 0; i < m; i++) {
		lua_rawgeti(L, 1, r[order[i]].ref_pos);
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

/* ---- reasons ---- */

struct tagw {
	const char *tag;
	double w;
};

/* The user's tags weighted by interaction (top 8). */
static int user_tags(const struct rec_user *u, struct tagw *out, int max)
{
	int n = 0;
	for (uint32_t i = 0; u && i < u->ninter; i++) {
		const struct rec_item *it = &sx__rec->items[u->inter[i].item];
		for (int t = 0; t < it->ntags; t++) {
			int j;
			for (j = 0; j < n; j++)
				if (strcmp(out[j].tag, it->tags[t]) == 0)
					break;
			if (j == n) {
				if (n == max)
					continue;
				out[n++] = (struct tagw){it->tags[t], 0};
			}
			out[j].w += u->inter[i].w;
		}
	}
	return n;
}

static void add_reason(lua_State *L, int tbl, int *n, const char *s)
{
	for (int i = 1; i <= *n; i++) {
		lua_rawgeti(L, tbl, i);
		int same = strcmp(lua_tostring(L, -1), s) == 0;
		lua_pop(L, 1);
		if (same)
			return;
	}
	lua_pushstring(L, s);
	lua_rawseti(L, tbl, ++*n);
}

static void collab_reason(struct rec_state *s, struct rec_user *u, uint32_t item, char *buf, size_t size)
{
	struct sx_rec_factor_source *fs = s->fs;
	buf[0] = 0;
	if (!fs || !u || !u->ninter || item >= fs->n_items)
		return;
	int32_t items[256], top[2];
	float w[256], contrib[2];
	double total;
	size_t n = 0;
	for (uint32_t i = 0; i < u->ninter && n < 256; i++)
		if (u->inter[i].item < fs->n_items)
			items[n] = (int32_t)u->inter[i].item, w[n++] = u->inter[i].w;
	int m = n ? fs->explain(fs->ud, items, w, n, (int32_t)item, 2, top, contrib, &total) : 0;
	if (m <= 0 || contrib[0] <= 0)
		return;
	if (m == 2 && contrib[1] > 0)
		snprintf(buf, size, "because you liked %s and %s", item_name((uint32_t)top[0]), item_name((uint32_t)top[1]));
	else
		snprintf(buf, size, "because you liked %s", item_name((uint32_t)top[0]));
}

/* collab_reason for the targets (item indexes) at once: one factorisation of the
 * user's system for all of them when the source can (explain_many). */
static void collab_reasons(struct rec_state *s, struct rec_user *u, const uint32_t *targets, size_t nt,
			   char (*out)[400])
{
	struct sx_rec_factor_source *fs = s->fs;
	for (size_t t = 0; t < nt; t++)
		out[t][0] = 0;
	if (!fs || !u || !u->ninter || !nt)
		return;
	if (!fs->explain_many) {
		for (size_t t = 0; t < nt; t++)
			collab_reason(s, u, targets[t], out[t], sizeof(out[t]));
		return;
	}
	int32_t items[256], tg[64], top[64 * 2];
	float w[256], contrib[64 * 2];
	double total[64];
	int count[64];
	size_t at[64], n = 0;
	for (uint32_t i = 0; i < u->ninter && n < 256; i++)
		if (u->inter[i].item < fs->n_items)
			items[n] = (int32_t)u->inter[i].item, w[n++] = u->inter[i].w;
	if (!n)
		return;
	for (size_t b = 0; b < nt; b += 64) {
		size_t m = 0;
		for (size_t t = b; t < nt && t < b + 64; t++)
			if (targets[t] < fs->n_items)
				at[m] = t, tg[m++] = (int32_t)targets[t];
		if (!m || fs->explain_many(fs->ud, items, w, n, tg, m, 2, top, contrib, total, count) < 0)
			continue;
		for (size_t j = 0; j < m; j++) {
			const int32_t *ti = top + j * 2;
			const float *tc = contrib + j * 2;
			char *o = out[at[j]];
			if (count[j] <= 0 || tc[0] <= 0)
				continue;
			if (count[j] == 2 && tc[1] > 0)
				snprintf(o, 400, "because you liked %s and %s", item_name((uint32_t)ti[0]),
					 item_name((uint32_t)ti[1]));
			else
				snprintf(o, 400, "because you liked %s", item_name((uint32_t)ti[0]));
		}
	}
}

int sx__rec_reasons(struct rec_user *u, uint32_t item, uint32_t mask, int64_t via, double budget,
		    const char *location, const char *collab, const char *segment, char (*out)[160], int max)
{
	struct rec *R = sx__rec;
	const struct rec_item *it = &R->items[item];
	struct tagw tags[8];
	int ntags = user_tags(u, tags, 8), n = 0;
	char buf[512];
#define PUT(...)                                                                                                       \
	do {                                                                                                           \
		snprintf(buf, sizeof(buf), __VA_ARGS__);                                                               \
		int dup_ = 0;                                                                                          \
		for (int q_ = 0; q_ < n; q_++)                                                                         \
			dup_ |= strcmp(out[q_], buf) == 0;                                                             \
		if (!dup_ && n < max) {                                                                                \
			size_t l_ = strlen(buf) < 159 ? strlen(buf) : 159;                                             \
			memcpy(out[n], buf, l_);                                                                       \
			out[n++][l_] = 0;                                                                              \
		}                                                                                                      \
	} while (0)
	if (mask >> REC_SRC_COLLAB & 1) {
		char cr[400];
		if (collab)
			snprintf(cr, sizeof(cr), "%s", collab);
		else
			collab_reason(R->cur, u, item, cr, sizeof(cr));
		if (cr[0])
			PUT("%s", cr);
		else
			PUT("liked by people with tastes like yours");
	}
	int matched = 0;
	for (int t = 0; t < it->ntags && matched < 2; t++)
		for (int j = 0; j < ntags; j++)
			if (strcmp(tags[j].tag, it->tags[t]) == 0) {
				PUT("matches your interest in %s", it->tags[t]);
				matched++;
				break;
			}
	if ((mask >> REC_SRC_CONTENT & 1) && !matched)
		PUT("similar to what you viewed");
	if (mask >> REC_SRC_COVISIT & 1) {
		if (via >= 0)
			PUT("often viewed together with %s", item_name((uint32_t)via));
		else
			PUT("often viewed together with what you viewed");
	}
	if (mask >> REC_SRC_TRENDING & 1) {
		if (it->region[0])
			PUT("trending in %s", it->region);
		else
			PUT("trending now");
	}
	if (mask >> REC_SRC_OFFERS & 1)
		PUT("special offer");
	/* the segment's reason says more than the global one */
	if ((mask >> REC_SRC_POPULAR & 1) && !((mask >> REC_SRC_SEGMENT & 1) && segment && segment[0]))
		PUT("popular with travellers");
	if (mask >> REC_SRC_SIMILAR & 1)
		PUT("similar item");
	if ((mask >> REC_SRC_SEGMENT & 1) && segment && segment[0]) {
		if (strcmp(R->seg_attr, "country") == 0)
			PUT("popular with travellers from %s", segment);
		else
			PUT("popular with travellers whose %s is %s", R->seg_attr, segment);
	} else if (mask >> REC_SRC_SEGMENT & 1) {
		PUT("popular with travellers like you");
	}
	if (location && location[0] && strcmp(location, it->region) == 0)
		PUT("in %s", it->region);
	if (!isnan(budget) && !isnan(it->price) && it->price <= budget)
		PUT("under %g %s", budget, it->currency);
	if (!n)
		PUT("recommended for you");
#undef PUT
	return n;
}

/* explain(list, req): adds readable reasons to every entry (in place). */
static int l_explain(lua_State *L)
{
	int n;
	struct row *r = read_list(L, 1, &n);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct rec_user *u = NULL;
	double budget = NAN;
	char location[48] = "";
	const char *segment = NULL;
	lua_getfield(L, 2, "user");
	if (lua_type(L, -1) == LUA_TSTRING) {
		u = user_arg(L, -1);
		size_t ul;
		const char *uid = lua_tolstring(L, -1, &ul);
		int g = user_segment(uid, ul);
		if (g >= 0)
			segment = sx__rec->segnames[g].name;
	}
	lua_getfield(L, 2, "context");
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "budget");
		if (lua_isnumber(L, -1))
			budget = lua_tonumber(L, -1);
		lua_getfield(L, -2, "location");
		if (lua_type(L, -1) == LUA_TSTRING) {
			size_t ll;
			const char *l = lua_tolstring(L, -1, &ll);
			if (ll >= sizeof(location))
				ll = sizeof(location) - 1;
			for (size_t i = 0; i < ll; i++)
				location[i] = (char)tolower((unsigned char)l[i]);
			location[ll] = 0;
		}
		lua_pop(L, 2);
	}
	lua_pop(L, 2);
	char (*reasons)[160] = lua_newuserdata(L, 12 * 160);
	uint32_t *masks = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(uint32_t));
	int64_t *vias = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(int64_t));
	uint32_t *targets = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(uint32_t));
	int32_t *tpos = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(int32_t));
	size_t nt = 0;
	/* first the sources of every entry, so that the collaborative reasons of
	 * all of them come from one solve */
	for (int i = 0; i < n; i++) {
		tpos[i] = -1;
		if (r[i].item < 0)
			continue;
		lua_rawgeti(L, 1, r[i].ref_pos);
		int e = lua_gettop(L);
		uint32_t mask = 0;
		lua_getfield(L, e, "sources");
		if (lua_istable(L, -1)) {
			int ns = (int)lua_objlen(L, -1);
			for (int s = 1; s <= ns; s++) {
				lua_rawgeti(L, -1, s);
				int si = lua_type(L, -1) == LUA_TSTRING ? src_index(lua_tostring(L, -1)) : -1;
				if (si >= 0)
					mask |= 1u << si;
				lua_pop(L, 1);
			}
		}
		lua_getfield(L, e, "source");
		if (lua_type(L, -1) == LUA_TSTRING) {
			int si = src_index(lua_tostring(L, -1));
			if (si >= 0)
				mask |= 1u << si;
		}
		lua_getfield(L, e, "via");
		size_t vl = 0;
		const char *via = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
		vias[i] = via ? sx__rec_item_find(via, vl) : -1;
		masks[i] = mask;
		if (mask >> REC_SRC_COLLAB & 1)
			tpos[i] = (int32_t)nt, targets[nt++] = (uint32_t)r[i].item;
		lua_settop(L, e - 1);
	}
	char (*collab)[400] = lua_newuserdata(L, (nt ? nt : 1) * 400);
	collab_reasons(sx__rec->cur, u, targets, nt, collab);
	for (int i = 0; i < n; i++) {
		if (r[i].item < 0)
			continue;
		lua_rawgeti(L, 1, r[i].ref_pos);
		int e = lua_gettop(L);
		lua_getfield(L, e, "reasons");
		if (!lua_istable(L, -1)) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -1);
			lua_setfield(L, e, "reasons");
		}
		int rt = lua_gettop(L), nr = (int)lua_objlen(L, rt);
		int m = sx__rec_reasons(u, (uint32_t)r[i].item, masks[i], vias[i], budget, location,
					tpos[i] >= 0 ? collab[tpos[i]] : NULL, segment, reasons, 12);
		for (int k = 0; k < m; k++)
			add_reason(L, rt, &nr, reasons[k]);
		lua_settop(L, e - 1);
	}
	lua_pushvalue(L, 1);
	return 1;
}

static int l_weight(lua_State *L)
{
	size_t len;
	const char *name = luaL_checklstring(L, 1, &len);
	lua_pushnumber(L, sx__rec_weight(name, len));
	return 1;
}

/* ---- the api table and the kind ---- */

/* affinity(list, user, {strength = 0.3, prior = 1}): the list re-scored by the
 * user's tag lift, best first. A tag's lift is how much likelier it is among
 * the items the user interacted with than in the list (weighted by score),
 * smoothed towards 1 by `prior` pseudo-items: (n_t + prior g_t) / (N + prior) / g_t.
 * An entry's score is multiplied by 1 + strength * sum over its tags of
 * max(0, lift - 1); entries are the input's tables with `score` replaced. */
#define AFF_TAGS 64
static int l_affinity(lua_State *L)
{
	int n;
	struct row *r = read_list(L, 1, &n);
	int rows = lua_gettop(L);
	struct rec_user *u = lua_isnoneornil(L, 2) ? NULL : user_arg(L, 2);
	double strength = 0.3, prior = 1;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_getfield(L, 3, "strength");
		strength = luaL_optnumber(L, -1, strength);
		lua_getfield(L, 3, "prior");
		prior = luaL_optnumber(L, -1, prior);
		lua_pop(L, 2);
		if (!(strength >= 0 && strength <= 100))
			luaL_argerror(L, 3, "strength must be in [0, 100]");
		if (!(prior > 0 && prior <= 1e6))
			luaL_argerror(L, 3, "prior must be in (0, 1e6]");
	}
	struct rec *R = sx__rec;
	struct tagw ut[AFF_TAGS], gt[AFF_TAGS];
	int nut = 0, ngt = 0;
	double N = 0, G = 0;
	for (uint32_t i = 0; u && i < u->ninter; i++) {
		const struct rec_item *it = &R->items[u->inter[i].item];
		if (it->ntags)
			N += 1;
		for (int t = 0; t < it->ntags; t++) {
			int j = 0;
			while (j < nut && strcmp(ut[j].tag, it->tags[t]) != 0)
				j++;
			if (j == nut && nut < AFF_TAGS)
				ut[nut++] = (struct tagw){it->tags[t], 0};
			if (j < nut)
				ut[j].w += 1;
		}
	}
	for (int i = 0; i < n && nut; i++) {
		if (r[i].item < 0 || r[i].score <= 0)
			continue;
		const struct rec_item *it = &R->items[r[i].item];
		G += r[i].score;
		for (int t = 0; t < it->ntags; t++) {
			int j = 0;
			while (j < ngt && strcmp(gt[j].tag, it->tags[t]) != 0)
				j++;
			if (j == ngt && ngt < AFF_TAGS)
				gt[ngt++] = (struct tagw){it->tags[t], 0};
			if (j < ngt)
				gt[j].w += r[i].score;
		}
	}
	for (int i = 0; i < n; i++) {
		double boost = 0;
		const struct rec_item *it = r[i].item >= 0 ? &R->items[r[i].item] : NULL;
		for (int t = 0; it && N > 0 && G > 0 && t < it->ntags; t++) {
			double g = 0, c = 0;
			for (int j = 0; j < ngt; j++)
				if (strcmp(gt[j].tag, it->tags[t]) == 0)
					g = gt[j].w / G;
			for (int j = 0; j < nut; j++)
				if (strcmp(ut[j].tag, it->tags[t]) == 0)
					c = ut[j].w;
			if (g > 0)
				boost += fmax(0, (c + prior * g) / (N + prior) / g - 1);
		}
		r[i].score *= 1 + strength * boost;
	}
	qsort(r, (size_t)n, sizeof(*r), row_cmp);
	lua_createtable(L, n, 0);
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 1, r[i].ref_pos);
		lua_pushnumber(L, r[i].score);
		lua_setfield(L, -2, "score");
		lua_rawseti(L, -2, i + 1);
	}
	SX_UNUSED(rows);
	return 1;
}

/* calibration(): {popular, ndcg, ndcg_collab, ndcg_popular, users} (sx__rec_calibrate) */
static int l_calibration(lua_State *L)
{
	const struct rec_calibration *c = sx__rec_calibrate(sx__rec->cur);
	lua_createtable(L, 0, 5);
	lua_pushnumber(L, c->popular);
	lua_setfield(L, -2, "popular");
	lua_pushnumber(L, c->ndcg);
	lua_setfield(L, -2, "ndcg");
	lua_pushnumber(L, c->ndcg_collab);
	lua_setfield(L, -2, "ndcg_collab");
	lua_pushnumber(L, c->ndcg_popular);
	lua_setfield(L, -2, "ndcg_popular");
	lua_pushinteger(L, (lua_Integer)c->users);
	lua_setfield(L, -2, "users");
	return 1;
}

static int build_api(lua_State *L)
{
	static const luaL_Reg sources[] = {{"collaborative", l_collab}, {"content", l_content},
					   {"covisit", l_covisit},      {"trending", l_trending},
					   {"offers", l_offers},        {"popular", l_popular},
					   {"segment_popular", l_segment_popular}, {NULL, NULL}};
	static const luaL_Reg top[] = {{"user", l_user},     {"profile", l_profile}, {"filter", l_filter},
				       {"blend", l_blend},   {"mmr", l_mmr},         {"explain", l_explain},
				       {"weight", l_weight}, {"calibration", l_calibration},
				       {"affinity", l_affinity}, {NULL, NULL}};
	lua_newtable(L);
	lua_newtable(L);
	for (const luaL_Reg *r = sources; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_setfield(L, -2, "sources");
	lua_newtable(L);
	lua_pushcfunction(L, l_item_get);
	lua_setfield(L, -2, "get");
	lua_setfield(L, -2, "items");
	for (const luaL_Reg *r = top; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	return 1;
}

/* Adds the api's fields to the ctx at the top of the stack once. Each script
 * gets copies of the tables, so one cannot change what another sees. */
static void ctx_extend(lua_State *L)
{
	lua_getfield(L, -1, "sources");
	int has = !lua_isnil(L, -1);
	lua_pop(L, 1);
	if (has)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sx__rec->api_ref);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_istable(L, -1)) {
			lua_newtable(L);
			lua_pushnil(L);
			while (lua_next(L, -3)) {
				lua_pushvalue(L, -2);
				lua_insert(L, -2);
				lua_rawset(L, -4);
			}
			lua_remove(L, -2);
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -5);
	}
	lua_pop(L, 1);
}

static int validate(lua_State *L, int idx, const char *name, void *ud)
{
	SX_UNUSED(name), SX_UNUSED(ud);
	if (!lua_istable(L, idx))
		return sx_diag_set(SX_ESCRIPT, "a strategy must return a table {name, description?, recommend = function(ctx, req)}");
	lua_getfield(L, idx, "recommend");
	int ok = lua_isfunction(L, -1);
	lua_pop(L, 1);
	if (!ok)
		return sx_diag_set(SX_ESCRIPT, "a strategy needs recommend = function(ctx, req)");
	static const char *const strs[] = {"name", "description"};
	for (int i = 0; i < 2; i++) {
		lua_getfield(L, idx, strs[i]);
		int bad = !lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING;
		lua_pop(L, 1);
		if (bad)
			return sx_diag_set(SX_ESCRIPT, "'%s' must be a string", strs[i]);
	}
	return 0;
}

int sx__rec_lua_start(struct sx_engine *e)
{
	static const struct sx_script_kind kind = {"strategies", validate, NULL, NULL};
	lua_State *L = sx_lua_state(e->lua);
	build_api(L);
	sx__rec->api_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_createtable(L, ID_CACHE, 0);
	id_cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return sx_scripts_add_kind(e->scripts, &kind);
}

/* Leaves the strategy's result on the stack (after top) or returns an error. */
static int call_strategy(const char *name, int top)
{
	struct sx_engine *e = sx__rec->e;
	lua_State *L = sx_lua_state(e->lua);
	int rc;
	/* a ctx function that raised left its marks claimed; none is in use here */
	for (int i = 0; i < MARK_SETS; i++)
		marks[i].busy = 0;
	/* stack: req at top */
	if ((rc = sx_scripts_push(e->scripts, "strategies", name)) < 0) {
		lua_settop(L, top);
		return sx_diag_set(SX_ENOENT, "no strategy '%s'", name);
	}
	lua_getfield(L, -1, "recommend");
	lua_remove(L, -2);
	sx_scripts_push_ctx(e->scripts, "strategies", name);
	ctx_extend(L);
	lua_pushvalue(L, top); /* req */
	if ((rc = sx_lua_call(e->lua, 2, 1)) < 0) {
		lua_settop(L, top - 1);
		return rc;
	}
	if (!lua_istable(L, -1)) {
		lua_settop(L, top - 1);
		return sx_diag_set(SX_ESCRIPT, "strategies/%s.lua: recommend must return a list of {item, score, source, reasons}", name);
	}
	return 0;
}

int sx__rec_run_strategy(const char *name, const msgpack_object *req, const char *user, size_t ulen, size_t n,
			 msgpack_packer *pk)
{
	lua_State *L = sx_lua_state(sx__rec->e->lua);
	int base = lua_gettop(L), rc;
	if (!lua_checkstack(L, 64))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	sx_lua_push_object(L, req);
	lua_pushinteger(L, (lua_Integer)n);
	lua_setfield(L, -2, "n");
	lua_pushlstring(L, user, ulen);
	lua_setfield(L, -2, "user");
	if ((rc = call_strategy(name, base + 1)) < 0)
		return rc;
	int res = lua_gettop(L);
	int len = (int)lua_objlen(L, res);
	/* validate first, then pack */
	int m = 0;
	int *take = malloc(sizeof(int) * (size_t)(len ? len : 1));
	struct marks *mk = marks_begin(MARK_RESULT, sx__rec->nitems + 1);
	uint8_t *seen = mk ? NULL : calloc(sx__rec->nitems + 1, 1);
	if (!take || (!mk && !seen)) {
		free(take), free(seen);
		if (mk)
			mk->busy = 0;
		lua_settop(L, base);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	for (int i = 1; i <= len && (size_t)m < n; i++) {
		lua_rawgeti(L, res, i);
		if (!lua_istable(L, -1))
			goto bad;
		lua_getfield(L, -1, "item");
		if (lua_type(L, -1) != LUA_TSTRING)
			goto bad;
		size_t il;
		const char *id = lua_tolstring(L, -1, &il);
		int64_t x = sx__rec_item_find(id, il);
		lua_getfield(L, -2, "score");
		if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1))))
			goto bad;
		lua_getfield(L, -3, "source");
		if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
			goto bad;
		lua_getfield(L, -4, "reasons");
		if (!lua_isnil(L, -1)) {
			if (!lua_istable(L, -1))
				goto bad;
			int nr = (int)lua_objlen(L, -1);
			for (int k = 1; k <= nr; k++) {
				lua_rawgeti(L, -1, k);
				int t = lua_type(L, -1);
				lua_pop(L, 1);
				if (t != LUA_TSTRING)
					goto bad;
			}
		}
		lua_pop(L, 5);
		if (x >= 0) {
			if (mk ? marks_has(mk, (size_t)x) : seen[x])
				continue;
			if (mk)
				marks_set(mk, (size_t)x, 1);
			else
				seen[x] = 1;
		}
		take[m++] = i;
	}
	msgpack_pack_array(pk, (uint32_t)m);
	for (int j = 0; j < m; j++) {
		lua_rawgeti(L, res, take[j]);
		msgpack_pack_map(pk, 4);
		lua_getfield(L, -1, "item");
		size_t l;
		const char *s = lua_tolstring(L, -1, &l);
		sx_pack_key(pk, "item");
		sx_pack_strn(pk, s, l);
		lua_getfield(L, -2, "score");
		sx_pack_kv_double(pk, "score", lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0);
		lua_getfield(L, -3, "source");
		sx_pack_kv_str(pk, "source", lua_isstring(L, -1) ? lua_tostring(L, -1) : name);
		lua_getfield(L, -4, "reasons");
		sx_pack_key(pk, "reasons");
		int nr = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
		msgpack_pack_array(pk, (uint32_t)nr);
		for (int k = 1; k <= nr; k++) {
			lua_rawgeti(L, -1, k);
			s = lua_tolstring(L, -1, &l);
			sx_pack_strn(pk, s, l);
			lua_pop(L, 1);
		}
		lua_pop(L, 5);
	}
	free(take), free(seen);
	if (mk)
		mk->busy = 0;
	lua_settop(L, base);
	return 0;
bad:
	free(take), free(seen);
	if (mk)
		mk->busy = 0;
	lua_settop(L, base);
	return sx_diag_set(SX_ESCRIPT, "strategies/%s.lua: recommend must return a list of {item = id, score = number, source = string, reasons = {strings}}", name);
}

int sx__rec_run_strategy_ids(const char *name, const char *user, size_t ulen, int kind, size_t n,
			     const msgpack_object *options, double diversity, int32_t *out)
{
	lua_State *L = sx_lua_state(sx__rec->e->lua);
	int base = lua_gettop(L), rc;
	if (!lua_checkstack(L, 64))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	lua_createtable(L, 0, 5);
	if (options) {
		sx_lua_push_object(L, options);
		lua_setfield(L, -2, "options");
	}
	if (!isnan(diversity)) {
		lua_pushnumber(L, diversity);
		lua_setfield(L, -2, "diversity");
	}
	lua_pushlstring(L, user, ulen);
	lua_setfield(L, -2, "user");
	if (kind >= 0) {
		lua_pushstring(L, sx_item_kind_name(kind));
		lua_setfield(L, -2, "kind");
	}
	lua_pushinteger(L, (lua_Integer)n);
	lua_setfield(L, -2, "n");
	if ((rc = call_strategy(name, base + 1)) < 0)
		return rc;
	int res = lua_gettop(L), len = (int)lua_objlen(L, res), m = 0;
	for (int i = 1; i <= len && (size_t)m < n; i++) {
		lua_rawgeti(L, res, i);
		if (lua_istable(L, -1)) {
			lua_getfield(L, -1, "item");
			size_t il;
			const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &il) : NULL;
			int64_t x = id ? sx__rec_item_find(id, il) : -1;
			int dup = 0;
			for (int k = 0; k < m; k++)
				dup |= out[k] == x;
			if (x >= 0 && !dup)
				out[m++] = (int32_t)x;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, base);
	return m;
}
