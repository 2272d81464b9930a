/* Cohorts defined by a Lua predicate, evaluated user by user in time slices
 * on the loop thread (see cohort_lua.h). */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/cohort_lua.h"
#include "plugins/events/internal.h"
#include "store/store.h"

#define KIND "cohorts"
#define SLICE_MS 4          /* longest stretch the loop is held */
#define DAYS_MAX 3660
#define NAMES_MAX 64        /* distinct event names counted per user */
#define EVENTS_LIST_MAX 256 /* names in 'events' */
#define USER_EVENTS_MAX 10000

struct ncount {
	const char *name; /* a view, valid during the user's evaluation */
	size_t len;
	int64_t count, last;
};

struct refresh {
	char name[SX_EVENTS_ID_MAX];
	size_t nlen;
	struct sx_req *req;
	msgpack_zone zone; /* rule and description */
	msgpack_object rule, desc;
	int has_desc;
	int64_t created, now, from, days;
	int all_events;
	const msgpack_object *events; /* array of names, or NULL */
	int fn_ref;
	roaring_bitmap_t *cand, *out;
	roaring_uint32_iterator_t *it;
	uint64_t done;
	uv_timer_t timer;
	struct refresh *next;
	/* per user */
	struct ncount names[NAMES_MAX];
	int nnames;
	int nevents;
};

static struct sx_engine *eng;
static struct refresh *running;

int sx__ev_cohort_is_lua(const msgpack_object *rule)
{
	return rule && rule->type == MSGPACK_OBJECT_MAP && rule->via.map.size == 1 &&
	       sx_obj_streq(&rule->via.map.ptr[0].key, "lua");
}

static struct refresh *find(const char *name, size_t nlen)
{
	for (struct refresh *r = running; r; r = r->next)
		if (r->nlen == nlen && !memcmp(r->name, name, nlen))
			return r;
	return NULL;
}

int sx__ev_cohort_lua_running(const char *name, size_t nlen)
{
	return find(name, nlen) != NULL;
}

/* ---- the predicate ---- */

/* Leaves the predicate function on the stack (0) or nothing (error). */
static int push_fn(const char *name, size_t nlen, const msgpack_object *def)
{
	lua_State *L = sx_lua_state(eng->lua);
	const msgpack_object *script = sx__ev_map_get(def, "script"), *src = sx__ev_map_get(def, "source");
	int rc;
	if ((script != NULL) == (src != NULL))
		return sx_diag_set(SX_EINVAL, "cohort rule lua: give either 'script' or 'source'");
	if (script) {
		char sname[SX_EVENTS_ID_MAX + 1];
		if (script->type != MSGPACK_OBJECT_STR || script->via.str.size == 0 || script->via.str.size > SX_EVENTS_ID_MAX ||
		    memchr(script->via.str.ptr, 0, script->via.str.size))
			return sx_diag_set(SX_EINVAL, "cohort rule lua: 'script' must name a script of kind cohorts");
		memcpy(sname, script->via.str.ptr, script->via.str.size);
		sname[script->via.str.size] = 0;
		if ((rc = sx_scripts_push(eng->scripts, KIND, sname)) < 0)
			return sx_diag_set(SX_ENOENT, "cohort rule lua: no script cohorts/%s", sname);
	} else {
		char chunk[SX_EVENTS_ID_MAX + 16];
		if (src->type != MSGPACK_OBJECT_STR || src->via.str.size == 0 || src->via.str.size > 65536)
			return sx_diag_set(SX_EINVAL, "cohort rule lua: 'source' must be Lua source of 1 to 65536 bytes");
		snprintf(chunk, sizeof(chunk), "=cohort:%.*s", (int)nlen, name);
		if ((rc = sx_lua_load(eng->lua, chunk, src->via.str.ptr, src->via.str.size)) < 0)
			return rc;
		lua_pop(L, 1); /* the environment */
	}
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "predicate");
		lua_remove(L, -2);
	}
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		return sx_diag_set(SX_ESCRIPT, "cohort rule lua: the chunk must return a function or {predicate = function}");
	}
	return 0;
}

static int check_def(const msgpack_object *def, int64_t *days, const msgpack_object **events, int *all_events)
{
	static const char *const known[] = {"script", "source", "days", "events", "candidates", NULL};
	const msgpack_object *ev, *cand;
	int rc;
	*days = 30, *events = NULL, *all_events = 0;
	if (!def || def->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "cohort rule lua: the value must be a map {script | source, days?, events?, candidates?}");
	if ((rc = sx_arg_only(def, known)) < 0 || (rc = sx_arg_int(def, "days", 0, days)) < 0)
		return sx_diag_set(rc, "cohort rule lua: %s", sx_diag_last());
	if (*days < 1 || *days > DAYS_MAX)
		return sx_diag_set(SX_EINVAL, "cohort rule lua: 'days' must be 1 to %d", DAYS_MAX);
	if ((ev = sx__ev_map_get(def, "events")) != NULL) {
		if (ev->type == MSGPACK_OBJECT_STR && ev->via.str.size == 1 && ev->via.str.ptr[0] == '*') {
			*all_events = 1;
		} else if (ev->type == MSGPACK_OBJECT_ARRAY && ev->via.array.size <= EVENTS_LIST_MAX) {
			for (uint32_t i = 0; i < ev->via.array.size; i++)
				if ((rc = sx__ev_check_id(&ev->via.array.ptr[i], "events")) < 0)
					return sx_diag_set(rc, "cohort rule lua: %s", sx_diag_last());
			*events = ev;
		} else {
			return sx_diag_set(SX_EINVAL, "cohort rule lua: 'events' must be \"*\" or an array of at most %d names",
					   EVENTS_LIST_MAX);
		}
	}
	if ((cand = sx__ev_map_get(def, "candidates")) != NULL && (rc = sx__ev_rule_eval(cand, 0, NULL)) < 0)
		return sx_diag_set(rc, "cohort rule lua: candidates: %s", sx_diag_last());
	return 0;
}

int sx__ev_cohort_lua_check(const msgpack_object *rule)
{
	const msgpack_object *def = &rule->via.map.ptr[0].val, *events;
	int64_t days;
	int all, rc;
	if ((rc = check_def(def, &days, &events, &all)) < 0)
		return rc;
	if (sx_lua_in_call(eng->lua))
		return sx_diag_set(SX_ESTATE, "a predicate cohort cannot be saved from inside a script");
	if ((rc = push_fn("check", 5, def)) < 0)
		return rc;
	lua_pop(sx_lua_state(eng->lua), 1);
	return 0;
}

/* ---- one user ---- */

static int want_events(const struct refresh *r, const struct sx_event *ev)
{
	if (r->all_events)
		return 1;
	for (uint32_t i = 0; r->events && i < r->events->via.array.size; i++) {
		const msgpack_object *o = &r->events->via.array.ptr[i];
		if (o->via.str.size == ev->name_len && !memcmp(o->via.str.ptr, ev->name, ev->name_len))
			return 1;
	}
	return 0;
}

static int user_ev_cb(const struct sx_event *ev, void *ud)
{
	struct refresh *r = ud;
	lua_State *L = sx_lua_state(eng->lua);
	int i;
	for (i = 0; i < r->nnames; i++)
		if (r->names[i].len == ev->name_len && !memcmp(r->names[i].name, ev->name, ev->name_len))
			break;
	if (i == r->nnames && r->nnames < NAMES_MAX) {
		r->names[i].name = ev->name, r->names[i].len = ev->name_len;
		r->names[i].count = 0;
		r->nnames++;
	}
	if (i < r->nnames) {
		r->names[i].count++;
		r->names[i].last = ev->time;
	}
	if (r->nevents >= USER_EVENTS_MAX || !want_events(r, ev))
		return 0;
	/* the events table is at stack index -1 */
	lua_createtable(L, 0, 4);
	lua_pushlstring(L, ev->name, ev->name_len);
	lua_setfield(L, -2, "name");
	lua_pushnumber(L, (lua_Number)ev->time);
	lua_setfield(L, -2, "time");
	if (ev->item) {
		lua_pushlstring(L, ev->item, ev->item_len);
		lua_setfield(L, -2, "item");
	}
	if (ev->props) {
		msgpack_zone z;
		msgpack_object o;
		msgpack_zone_init(&z, 512);
		if (sx__ev_unpack(ev->props, ev->props_len, &z, &o) == 0) {
			sx_lua_push_object(L, &o);
			lua_setfield(L, -2, "properties");
		}
		msgpack_zone_destroy(&z);
	}
	lua_rawseti(L, -2, ++r->nevents);
	return 0;
}

static void push_counts(lua_State *L, const struct refresh *r, int last)
{
	lua_createtable(L, 0, r->nnames);
	for (int i = 0; i < r->nnames; i++) {
		lua_pushlstring(L, r->names[i].name, r->names[i].len);
		lua_pushnumber(L, (lua_Number)(last ? r->names[i].last : r->names[i].count));
		lua_rawset(L, -3);
	}
}

/* Pushes the user table of index u: {id, index, attributes, first_seen,
 * counts, last, events}; 1 if pushed, 0 if the user is gone (erased). */
static int push_user(struct refresh *r, uint32_t u, int *rc)
{
	lua_State *L = sx_lua_state(eng->lua);
	char id[SX_EVENTS_ID_MAX + 1];
	size_t idlen, rlen;
	const void *rec;
	int64_t first;
	*rc = sx_events_user_id(NULL, u, id, sizeof(id), &idlen);
	if (*rc == SX_ENOENT)
		return *rc = 0;
	if (*rc < 0)
		return 0;
	lua_createtable(L, 0, 8);
	lua_pushlstring(L, id, idlen);
	lua_setfield(L, -2, "id");
	lua_pushnumber(L, u);
	lua_setfield(L, -2, "index");
	msgpack_zone z;
	msgpack_object o;
	const msgpack_object *attrs = NULL;
	msgpack_zone_init(&z, 1024);
	if (sx_events_user_record(NULL, id, idlen, &rec, &rlen) == 0 && sx__ev_unpack(rec, rlen, &z, &o) == 0)
		attrs = sx__ev_map_get(&o, "attributes");
	if (attrs && attrs->type == MSGPACK_OBJECT_MAP)
		sx_lua_push_object(L, attrs);
	else
		lua_newtable(L);
	lua_setfield(L, -2, "attributes");
	msgpack_zone_destroy(&z);
	if (sx_events_user_first_seen(NULL, u, &first) == 0) {
		lua_pushnumber(L, (lua_Number)first);
		lua_setfield(L, -2, "first_seen");
	}
	r->nnames = 0, r->nevents = 0;
	lua_newtable(L); /* events, filled by the scan */
	*rc = sx_events_user_scan(NULL, u, r->from, r->now + 1, 0, user_ev_cb, r);
	if (*rc < 0) {
		lua_pop(L, 2);
		return 0;
	}
	lua_setfield(L, -2, "events");
	push_counts(L, r, 0);
	lua_setfield(L, -2, "counts");
	push_counts(L, r, 1);
	lua_setfield(L, -2, "last");
	return 1;
}

static int eval_user(struct refresh *r, uint32_t u)
{
	lua_State *L = sx_lua_state(eng->lua);
	int top = lua_gettop(L), rc;
	if (!lua_checkstack(L, 16))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
	if (!push_user(r, u, &rc)) {
		lua_settop(L, top);
		return rc;
	}
	lua_createtable(L, 0, 3);
	lua_pushnumber(L, (lua_Number)r->now);
	lua_setfield(L, -2, "now");
	lua_pushnumber(L, (lua_Number)r->from);
	lua_setfield(L, -2, "from");
	lua_pushnumber(L, (lua_Number)r->days);
	lua_setfield(L, -2, "days");
	if ((rc = sx_lua_call(eng->lua, 2, 1)) < 0) {
		lua_settop(L, top);
		return sx_diag_set(rc, "cohort %.*s, user index %u: %s", (int)r->nlen, r->name, u, sx_diag_last());
	}
	if (lua_toboolean(L, -1))
		roaring_bitmap_add(r->out, u);
	lua_settop(L, top);
	return 0;
}

/* ---- the slices ---- */

static void close_cb(uv_handle_t *h)
{
	struct refresh *r = h->data;
	msgpack_zone_destroy(&r->zone);
	free(r);
}

static void refresh_end(struct refresh *r, int rc)
{
	for (struct refresh **pp = &running; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	if (rc == 0) {
		rc = sx__ev_cohort_write(r->name, r->nlen, &r->rule, r->has_desc ? &r->desc : NULL, r->created, r->now,
					 r->out, &r->req->pk);
		sx_store_read_end(eng->store);
	}
	sx_req_finish(r->req, rc);
	luaL_unref(sx_lua_state(eng->lua), LUA_REGISTRYINDEX, r->fn_ref);
	if (r->it)
		roaring_free_uint32_iterator(r->it);
	if (r->cand)
		roaring_bitmap_free(r->cand);
	if (r->out)
		roaring_bitmap_free(r->out);
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, close_cb);
}

static void slice(uv_timer_t *t)
{
	struct refresh *r = t->data;
	uint64_t deadline = uv_hrtime() + (uint64_t)SLICE_MS * 1000000u;
	int rc = 0, n = 0;
	while (rc == 0 && r->it->has_value) {
		rc = eval_user(r, r->it->current_value);
		roaring_advance_uint32_iterator(r->it);
		r->done++;
		if ((++n & 15) == 0 && uv_hrtime() >= deadline)
			break;
	}
	sx_store_read_end(eng->store);
	if (rc < 0 || !r->it->has_value) {
		refresh_end(r, rc);
		return;
	}
	/* 1 ms, not 0: libuv 1.44 runs a timer re-armed with 0 from its own callback
	 * again in the same pass, so the loop would never get to I/O between slices */
	uv_timer_start(&r->timer, slice, 1, 0);
}

int sx__ev_cohort_lua_begin(struct sx_req *req, const char *name, size_t nlen, const msgpack_object *rule,
			    const msgpack_object *desc, int64_t created)
{
	const msgpack_object *def = &rule->via.map.ptr[0].val, *cand_rule;
	lua_State *L = sx_lua_state(eng->lua);
	int64_t days;
	const msgpack_object *events;
	int all, rc;
	if ((rc = check_def(def, &days, &events, &all)) < 0)
		return rc;
	if (sx_lua_in_call(eng->lua))
		return sx_diag_set(SX_ESTATE, "a predicate cohort cannot be computed from inside a script");
	struct refresh *r = calloc(1, sizeof(*r));
	if (!r)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	msgpack_zone_init(&r->zone, 1024);
	/* the rule and description outlive the request's zone: deep copies */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	sx_pack_object(&pk, rule);
	desc ? sx_pack_object(&pk, desc) : msgpack_pack_nil(&pk);
	msgpack_object both;
	void *copy = msgpack_zone_malloc(&r->zone, sb.size);
	rc = copy ? 0 : sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc == 0) {
		memcpy(copy, sb.data, sb.size);
		rc = sx__ev_unpack(copy, sb.size, &r->zone, &both);
	}
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0) {
		msgpack_zone_destroy(&r->zone);
		free(r);
		return rc;
	}
	r->rule = both.via.array.ptr[0];
	r->desc = both.via.array.ptr[1];
	r->has_desc = desc != NULL;
	def = &r->rule.via.map.ptr[0].val;
	check_def(def, &days, &events, &all);
	memcpy(r->name, name, nlen);
	r->nlen = nlen;
	r->req = req;
	r->created = created;
	r->now = sx_wall_ms();
	r->days = days;
	r->from = r->now - days * SX_EV_DAY_MS;
	r->events = events;
	r->all_events = all;
	r->fn_ref = LUA_NOREF;
	if ((rc = push_fn(name, nlen, def)) == 0) {
		r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		if ((cand_rule = sx__ev_map_get(def, "candidates")) != NULL)
			rc = sx__ev_rule_eval(cand_rule, r->now, &r->cand);
		else if (!(r->cand = sx_events_users_did(NULL, "*", r->from, r->now + SX_EV_MIN_MS)))
			rc = sx_diag_last_code() < 0 ? sx_diag_last_code() : SX_EINTERNAL;
	}
	if (rc == 0 && (!(r->out = roaring_bitmap_create()) || !(r->it = roaring_create_iterator(r->cand))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc < 0) {
		luaL_unref(L, LUA_REGISTRYINDEX, r->fn_ref);
		if (r->it)
			roaring_free_uint32_iterator(r->it);
		if (r->cand)
			roaring_bitmap_free(r->cand);
		if (r->out)
			roaring_bitmap_free(r->out);
		msgpack_zone_destroy(&r->zone);
		free(r);
		return rc;
	}
	uv_timer_init(eng->loop, &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, slice, 0, 0);
	r->next = running;
	running = r;
	return SX_RPC_DEFER;
}

int sx__ev_cohort_lua_cancel(const char *name, size_t nlen)
{
	struct refresh *r = find(name, nlen);
	if (!r)
		return 0;
	sx_diag_set(SX_ECANCELED, "cohort '%.*s' was deleted while it was computed", (int)nlen, name);
	refresh_end(r, SX_ECANCELED);
	return 1;
}

void sx__ev_cohort_lua_forget(uint32_t idx)
{
	for (struct refresh *r = running; r; r = r->next)
		roaring_bitmap_remove(r->out, idx);
}

void sx__ev_cohort_lua_stop(void)
{
	while (running) {
		sx_diag_set(SX_ECANCELED, "the server is stopping");
		refresh_end(running, SX_ECANCELED);
	}
}

/* ---- the script kind ---- */

static int kind_validate(lua_State *L, int value, const char *name, void *ud)
{
	SX_UNUSED(name), SX_UNUSED(ud);
	if (lua_isfunction(L, value))
		return 0;
	if (lua_istable(L, value)) {
		lua_getfield(L, value, "predicate");
		int ok = lua_isfunction(L, -1);
		lua_pop(L, 1);
		if (ok)
			return 0;
	}
	return sx_diag_set(SX_ESCRIPT, "a cohorts script returns a function or {predicate = function(user, ctx)}");
}

int sx__ev_cohort_lua_start(struct sx_engine *e)
{
	static const struct sx_script_kind kind = {KIND, kind_validate, NULL, NULL};
	eng = e;
	return e->scripts ? sx_scripts_add_kind(e->scripts, &kind) : 0;
}
