/* Notifications: rules (script kind "notifications"), generation with
 * consent, frequency cap and holdout, and the pull/ack queue. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <xxhash.h>

#include "core/lua/mpack.h"
#include "core/log.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"
#include "plugins/privacy/privacy.h"
#include "plugins/recommend/recommend.h"
#include "store/store.h"

#define KIND "notifications"
#define RULES_MAX 64
#define CONTENT_DAYS 30
#define CONTENT_SCAN_MAX 2000000
#define CONTENT_MAX 20
#define CAP_KEEP 32 /* send times kept per user */
#define PULL_MAX 1000
#define ACK_MAX 10000
#define MESSAGE_MAX 16384
#define GENERATE_MAX 100000

static char rules[RULES_MAX][SX_PRED_NAME_MAX + 1];
static int nrules;

int sx__pred_allowed(const char *user, size_t ulen, const char *purpose)
{
	for (int i = 0; i < SX_PURPOSES; i++)
		if (strcmp(sx_privacy_purpose_name(i), purpose) == 0)
			return sx_privacy_allowed(user, ulen, i);
	return 0;
}

static int validate(lua_State *L, int value, const char *name, void *ud)
{
	SX_UNUSED(ud);
	const char *err = NULL;
	int top = lua_gettop(L);
	if (strlen(name) > SX_PRED_NAME_MAX)
		return sx_diag_set(SX_ESCRIPT, "%s/%s.lua: rule names are at most %d bytes", KIND, name, SX_PRED_NAME_MAX);
	if (!lua_istable(L, value))
		return sx_diag_set(SX_ESCRIPT, "%s/%s.lua: a rule returns {condition = function(user), message = function(user, content), cap?, holdout?, action?}",
				   KIND, name);
	lua_getfield(L, value, "condition");
	if (!lua_isfunction(L, -1))
		err = "'condition' must be a function(user) returning a boolean";
	lua_getfield(L, value, "message");
	if (!err && !lua_isfunction(L, -1))
		err = "'message' must be a function(user, content) returning a string or {title, body}";
	lua_getfield(L, value, "holdout");
	if (!err && !lua_isnil(L, -1) && !(lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 0 && lua_tonumber(L, -1) < 1))
		err = "'holdout' must be a share 0 <= h < 1";
	lua_getfield(L, value, "cap");
	if (!err && !lua_isnil(L, -1)) {
		if (!lua_istable(L, -1))
			err = "'cap' must be {max, days}";
		else {
			lua_getfield(L, -1, "max");
			lua_getfield(L, -2, "days");
			if (!(lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) >= 1 && lua_tonumber(L, -2) <= CAP_KEEP) ||
			    !(lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) > 0 && lua_tonumber(L, -1) <= 365))
				err = "'cap' must be {max = 1..32, days = (0, 365]}";
		}
	}
	lua_settop(L, top);
	lua_getfield(L, value, "action");
	if (!err && !lua_isnil(L, -1) && !(lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1) <= SX_PRED_NAME_MAX))
		err = "'action' must be a string of at most 48 bytes";
	lua_settop(L, top);
	return err ? sx_diag_set(SX_ESCRIPT, "%s/%s.lua: %s", KIND, name, err) : 0;
}

static int cmp_rule(const void *a, const void *b) { return strcmp(a, b); }

static void installed(const char *name, int ref, void *ud)
{
	SX_UNUSED(ref), SX_UNUSED(ud);
	for (int i = 0; i < nrules; i++)
		if (strcmp(rules[i], name) == 0)
			return;
	if (nrules < RULES_MAX && strlen(name) <= SX_PRED_NAME_MAX) {
		snprintf(rules[nrules++], sizeof(rules[0]), "%s", name);
		qsort(rules, (size_t)nrules, sizeof(rules[0]), cmp_rule);
	}
}

/* ---- content: the user's recommended destinations (recommend plugin),
 * topped up with the most popular items of the last 30 days when the
 * recommendations are fewer (no catalogue, plugin not running). ---- */

struct citem {
	char id[SX_EVENTS_ID_MAX];
	size_t len;
	uint64_t count;
	struct citem *next;
};
struct ctab {
	struct citem *b[4096];
	size_t seen;
};

static int content_cb(const struct sx_event *ev, void *ud)
{
	struct ctab *t = ud;
	if (!ev->item || ev->item_len > SX_EVENTS_ID_MAX)
		return 0;
	if (++t->seen > CONTENT_SCAN_MAX)
		return 1;
	size_t h = XXH64(ev->item, ev->item_len, 0) % 4096;
	for (struct citem *c = t->b[h]; c; c = c->next)
		if (c->len == ev->item_len && memcmp(c->id, ev->item, c->len) == 0) {
			c->count++;
			return 0;
		}
	struct citem *c = malloc(sizeof(*c));
	if (!c)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	memcpy(c->id, ev->item, ev->item_len);
	c->len = ev->item_len, c->count = 1, c->next = t->b[h];
	t->b[h] = c;
	return 0;
}

struct popular {
	int n;
	struct citem top[CONTENT_MAX];
};

struct centry {
	char id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	double score;
	const char *source; /* static */
	char src[24];
};

struct content {
	int n;
	struct centry e[CONTENT_MAX];
};

static int content_for_all(int n, struct popular *out)
{
	struct ctab *t = calloc(1, sizeof(*t));
	if (!t)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int64_t now = sx_wall_ms();
	int rc = sx_events_range_scan(NULL, now - CONTENT_DAYS * SX_PRED_DAY_MS, now + 1, content_cb, t);
	out->n = 0;
	for (int i = 0; i < 4096; i++)
		for (struct citem *c = t->b[i], *nx; c; c = nx) {
			nx = c->next;
			/* insertion into the top n, ties by id */
			int k = out->n < n ? out->n++ : n;
			while (k > 0 && (out->top[k - 1].count < c->count ||
					 (out->top[k - 1].count == c->count &&
					  (c->len < out->top[k - 1].len ||
					   (c->len == out->top[k - 1].len && memcmp(c->id, out->top[k - 1].id, c->len) < 0))))) {
				if (k < n)
					out->top[k] = out->top[k - 1];
				k--;
			}
			if (k < n) {
				out->top[k] = *c;
				out->top[k].next = NULL;
			}
			free(c);
		}
	free(t);
	return rc < 0 ? rc : 0;
}

static void user_content(const char *id, size_t len, int n, struct popular *pop, int *pop_done, struct content *out,
			 uint64_t *rec_failed)
{
	struct sx_recommendation recs[CONTENT_MAX];
	out->n = 0;
	if (n <= 0)
		return;
	int m = sx_recommend_items(id, len, "destination", (size_t)n, NULL, recs);
	if (m < 0)
		(*rec_failed)++;
	for (int i = 0; i < m && out->n < n; i++) {
		struct centry *c = &out->e[out->n++];
		memcpy(c->id, recs[i].item, recs[i].len);
		c->len = recs[i].len;
		c->score = recs[i].score;
		snprintf(c->src, sizeof(c->src), "%s", recs[i].source[0] ? recs[i].source : "recommended");
		c->source = c->src;
	}
	if (out->n >= n)
		return;
	if (!*pop_done) {
		if (content_for_all(CONTENT_MAX, pop) < 0)
			pop->n = 0;
		*pop_done = 1;
	}
	for (int i = 0; i < pop->n && out->n < n; i++) {
		int dup = 0;
		for (int k = 0; k < out->n && !dup; k++)
			dup = out->e[k].len == pop->top[i].len && !memcmp(out->e[k].id, pop->top[i].id, pop->top[i].len);
		if (dup)
			continue;
		struct centry *c = &out->e[out->n++];
		memcpy(c->id, pop->top[i].id, pop->top[i].len);
		c->len = pop->top[i].len;
		c->score = (double)pop->top[i].count;
		c->source = "recent_popular";
	}
}

/* ---- evaluating a rule for one user ---- */

struct urun {
	const char *id;
	size_t idlen;
	const double *x;
	const double *probs; /* per target, NAN: not scored */
	const struct sx_pred_view *v;
	const struct content *content; /* NULL: condition only */
	int matched;
	msgpack_sbuffer *msg; /* the message, packed */
	int skip_condition;   /* matched already: only the message */
};

static void push_user(lua_State *L, const struct urun *u)
{
	lua_createtable(L, 0, 4);
	lua_pushlstring(L, u->id, u->idlen);
	lua_setfield(L, -2, "id");
	lua_createtable(L, 0, sx__pred_script.nfeat);
	for (int i = 0; i < sx__pred_script.nfeat; i++) {
		lua_pushnumber(L, u->x[i]);
		lua_setfield(L, -2, sx__pred_script.feat[i]);
	}
	lua_setfield(L, -2, "features");
	lua_createtable(L, 0, sx__pred_script.ntarget);
	for (int i = 0; i < sx__pred_script.ntarget; i++)
		if (!isnan(u->probs[i])) {
			lua_pushnumber(L, u->probs[i]);
			lua_setfield(L, -2, sx__pred_script.target[i].name);
		}
	lua_setfield(L, -2, "scores");
	if (u->v) {
		sx__pred_push_view(L, u->v);
		lua_setfield(L, -2, "summary");
	}
}

/* (rule table, struct urun) */
static int run_rule(lua_State *L)
{
	struct urun *u = lua_touserdata(L, 2);
	push_user(L, u);
	int ut = lua_gettop(L);
	if (!u->skip_condition) {
		lua_getfield(L, 1, "condition");
		lua_pushvalue(L, ut);
		lua_call(L, 1, 1);
		u->matched = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	if (!u->matched || !u->content)
		return 0;
	lua_getfield(L, 1, "message");
	lua_pushvalue(L, ut);
	lua_createtable(L, u->content->n, 0);
	for (int i = 0; i < u->content->n; i++) {
		const struct centry *c = &u->content->e[i];
		lua_createtable(L, 0, 3);
		lua_pushlstring(L, c->id, c->len);
		lua_setfield(L, -2, "item");
		lua_pushnumber(L, (lua_Number)c->score);
		lua_setfield(L, -2, "score");
		lua_pushstring(L, c->source);
		lua_setfield(L, -2, "source");
		lua_rawseti(L, -2, i + 1);
	}
	lua_call(L, 2, 1);
	if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TTABLE)
		return luaL_error(L, "message must return a string or a table {title, body}");
	msgpack_packer pk;
	msgpack_packer_init(&pk, u->msg, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {8, MESSAGE_MAX};
	if (sx_lua_pack(L, -1, &pk, &lim) < 0)
		return luaL_error(L, "message: %s", sx_diag_last());
	return 0;
}

static int eval_rule(const char *rule, struct urun *u)
{
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L), rc;
	if (!lua_checkstack(L, 8))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	lua_pushcfunction(L, run_rule);
	if ((rc = sx_scripts_push(sx__pred_eng->scripts, KIND, rule)) < 0) {
		lua_settop(L, top);
		return sx_diag_set(SX_ENOENT, "no notification rule '%s'", rule);
	}
	lua_pushlightuserdata(L, u);
	rc = sx_lua_call(sx__pred_eng->lua, 2, 0);
	lua_settop(L, top);
	return rc;
}

static int rule_num(const char *rule, const char *k1, const char *k2, double *out)
{
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L), found = 0;
	if (sx_scripts_push(sx__pred_eng->scripts, KIND, rule) < 0)
		return 0;
	lua_pushstring(L, k1);
	lua_rawget(L, -2);
	if (k2 && lua_istable(L, -1)) {
		lua_pushstring(L, k2);
		lua_rawget(L, -2);
	}
	if (lua_type(L, -1) == LUA_TNUMBER)
		*out = lua_tonumber(L, -1), found = 1;
	lua_settop(L, top);
	return found;
}

const char *sx__pred_suggest(uint32_t idx, const char *user, size_t ulen, const double *x,
			     const double *probs, char *buf, size_t size)
{
	SX_UNUSED(idx);
	struct urun u = {user, ulen, x, probs, NULL, NULL, 0, NULL, 0};
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	for (int i = 0; i < nrules; i++) {
		if (eval_rule(rules[i], &u) < 0 || !u.matched)
			continue;
		int top = lua_gettop(L);
		snprintf(buf, size, "%s", rules[i]);
		if (sx_scripts_push(sx__pred_eng->scripts, KIND, rules[i]) == 0) {
			lua_pushstring(L, "action");
			lua_rawget(L, -2);
			if (lua_type(L, -1) == LUA_TSTRING)
				snprintf(buf, size, "%s", lua_tostring(L, -1));
		}
		lua_settop(L, top);
		return buf;
	}
	return NULL;
}

/* ---- generate ---- */

static int cap_times(uint32_t user, int64_t *times, size_t *n)
{
	uint8_t k[5] = {'c'};
	struct sx_val v;
	sx_be32(k + 1, user);
	*n = 0;
	int rc = sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 5, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	if (v.len % 8 || v.len / 8 > CAP_KEEP)
		return sx_diag_set(SX_ECORRUPT, "a stored frequency cap record does not decode");
	for (size_t i = 0; i < v.len / 8; i++)
		times[(*n)++] = (int64_t)sx_get_be64((const uint8_t *)v.data + 8 * i);
	return 0;
}

static int cap_record(uint32_t user, int64_t *times, size_t n, int64_t now)
{
	uint8_t k[5] = {'c'}, v[8 * CAP_KEEP];
	sx_be32(k + 1, user);
	if (n == CAP_KEEP)
		memmove(times, times + 1, (--n) * sizeof(*times));
	times[n++] = now;
	for (size_t i = 0; i < n; i++)
		sx_be64(v + 8 * i, (uint64_t)times[i]);
	return sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 5, v, 8 * n);
}

static uint64_t next_id(void)
{
	struct sx_val v;
	uint64_t id = 0;
	if (sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, "i", 1, &v) == 0 && v.len == 8)
		id = sx_get_be64(v.data);
	uint8_t b[8];
	sx_be64(b, ++id);
	return sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, "i", 1, b, 8) < 0 ? 0 : id;
}

static int m_generate(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"rule", "cohort", "limit", NULL};
	char rule[SX_PRED_NAME_MAX + 2], cohort[SX_EVENTS_ID_MAX + 1] = "";
	int64_t limit = 1000;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "rule", 1, rule, sizeof(rule))) < 0 ||
	    (rc = sx_arg_cstr(args, "cohort", 0, cohort, sizeof(cohort))) < 0 || (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (limit < 1 || limit > GENERATE_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to %d", GENERATE_MAX);
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	if (sx_scripts_push(sx__pred_eng->scripts, KIND, rule) < 0)
		return sx_diag_set(SX_ENOENT, "no notification rule '%s'", rule);
	lua_pop(L, 1);
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib");
	double holdout = 0, cap_max = 1, cap_days = 7, ncontent = 3;
	rule_num(rule, "holdout", NULL, &holdout);
	rule_num(rule, "cap", "max", &cap_max);
	rule_num(rule, "cap", "days", &cap_days);
	rule_num(rule, "content_items", NULL, &ncontent);
	if (!(ncontent >= 0 && ncontent <= CONTENT_MAX))
		ncontent = 3;
	roaring_bitmap_t *members = NULL;
	if (cohort[0] && !(members = sx_events_cohort_users(NULL, cohort, strlen(cohort))))
		return sx_diag_last_code() == SX_ENOENT ? sx_diag_set(SX_ENOENT, "no cohort '%s'", cohort) : sx_diag_last_code();
	struct popular *pop = malloc(sizeof(*pop));
	struct content *content = malloc(sizeof(*content));
	int pop_done = 0;
	uint64_t rec_failed = 0;
	if (!pop || !content) {
		free(pop), free(content);
		if (members)
			roaring_bitmap_free(members);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	rc = 0;
	int64_t now = sx_wall_ms();
	uint32_t bound = sx_events_user_bound();
	uint64_t evaluated = 0, matched = 0, created = 0, held = 0, capped = 0, noconsent = 0;
	msgpack_sbuffer msg, rec, ids;
	msgpack_packer rp, ip;
	msgpack_sbuffer_init(&msg);
	msgpack_sbuffer_init(&rec);
	msgpack_sbuffer_init(&ids);
	msgpack_packer_init(&rp, &rec, msgpack_sbuffer_write);
	msgpack_packer_init(&ip, &ids, msgpack_sbuffer_write);
	sx__pred_quiet = 1;
	for (uint32_t i = 0; i < bound && rc == 0 && (int64_t)created < limit; i++) {
		if (members && !roaring_bitmap_contains(members, i))
			continue;
		const struct sx_pred_sum *s = sx__pred_user_sum(i, &rc);
		if (!s)
			break;
		if (s->events == 0)
			continue;
		char id[SX_EVENTS_ID_MAX + 1];
		size_t len;
		if ((rc = sx_events_user_id(NULL, i, id, sizeof(id), &len)) < 0)
			break;
		double x[SX_PRED_FEATURES_MAX], probs[SX_PRED_TARGETS_MAX];
		struct sx_pred_view v;
		sx__pred_sum_view(s, now, &v);
		if ((rc = sx__pred_features(s, now, x)) < 0)
			break;
		for (int t = 0; t < sx__pred_script.ntarget; t++)
			if (sx__pred_score(i, id, len, &sx__pred_script.target[t], x, &probs[t], NULL, NULL, NULL) < 0)
				probs[t] = NAN;
		rc = 0;
		msgpack_sbuffer_clear(&msg);
		struct urun u = {id, len, x, probs, &v, NULL, 0, &msg, 0};
		evaluated++;
		if ((rc = eval_rule(rule, &u)) < 0)
			break;
		if (!u.matched)
			continue;
		matched++;
		if (!sx__pred_allowed(id, len, "notifications")) {
			noconsent++;
			continue;
		}
		if (sx__pred_holdout(rule, id, len, holdout)) {
			uint8_t k[2 + SX_PRED_NAME_MAX + 4], tv[8];
			size_t rl = strlen(rule);
			k[0] = 'h';
			memcpy(k + 1, rule, rl + 1);
			sx_be32(k + 2 + rl, i);
			sx_be64(tv, (uint64_t)now);
			if ((rc = sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 6 + rl, tv, 8)) < 0)
				break;
			held++;
			continue;
		}
		int64_t times[CAP_KEEP];
		size_t nt;
		if ((rc = cap_times(i, times, &nt)) < 0)
			break;
		if (!sx__pred_cap_ok(times, nt, now, (int)cap_max, (int64_t)(cap_days * SX_PRED_DAY_MS))) {
			capped++;
			continue;
		}
		/* recommendations only for the users who get a message */
		user_content(id, len, (int)ncontent, pop, &pop_done, content, &rec_failed);
		u.content = content;
		u.skip_condition = 1;
		if ((rc = eval_rule(rule, &u)) < 0)
			break;
		uint64_t nid = next_id();
		if (!nid) {
			rc = sx_diag_last_code() ? sx_diag_last_code() : SX_EIO;
			break;
		}
		msgpack_sbuffer_clear(&rec);
		msgpack_pack_map(&rp, 7);
		sx_pack_kv_uint(&rp, "id", nid);
		sx_pack_kv_str(&rp, "user", id);
		sx_pack_kv_str(&rp, "rule", rule);
		sx_pack_key(&rp, "message");
		msgpack_sbuffer_write(&rec, msg.data, msg.size);
		sx_pack_key(&rp, "content");
		msgpack_pack_array(&rp, (size_t)content->n);
		for (int c = 0; c < content->n; c++)
			sx_pack_strn(&rp, content->e[c].id, content->e[c].len);
		sx_pack_kv_int(&rp, "created", now);
		sx_pack_kv_str(&rp, "state", "pending");
		uint8_t k[9];
		k[0] = 'n';
		sx_be64(k + 1, nid);
		if ((rc = sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, rec.data, rec.size)) < 0)
			break;
		k[0] = 'q';
		if ((rc = sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, "", 0 + 1)) < 0 ||
		    (rc = cap_record(i, times, nt, now)) < 0)
			break;
		if (created < 1000)
			msgpack_pack_uint64(&ip, nid);
		created++;
	}
	sx__pred_quiet = 0;
	if (rec_failed)
		sx_log_warn("notifications.generate %s: recommendations failed for %llu users (%s); popular items used",
			    rule, (unsigned long long)rec_failed, sx_diag_last());
	free(pop), free(content);
	if (members)
		roaring_bitmap_free(members);
	if (rc == 0) {
		msgpack_pack_map(pk, 8);
		sx_pack_kv_str(pk, "rule", rule);
		sx_pack_kv_uint(pk, "evaluated", evaluated);
		sx_pack_kv_uint(pk, "matched", matched);
		sx_pack_kv_uint(pk, "created", created);
		sx_pack_kv_uint(pk, "held_out", held);
		sx_pack_kv_uint(pk, "capped", capped);
		sx_pack_kv_uint(pk, "no_consent", noconsent);
		sx_pack_key(pk, "ids");
		msgpack_pack_array(pk, created < 1000 ? created : 1000);
		pk->callback(pk->data, ids.data, ids.size);
	}
	msgpack_sbuffer_destroy(&msg);
	msgpack_sbuffer_destroy(&rec);
	msgpack_sbuffer_destroy(&ids);
	return rc;
}

/* ---- pull / ack ---- */

struct pull {
	msgpack_packer *pk;
	msgpack_sbuffer *sb;
	uint32_t n, limit;
	int rc;
};

static int pull_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct pull *p = ud;
	SX_UNUSED(val);
	if (key->len != 9)
		return 0;
	uint8_t k[9];
	memcpy(k, key->data, 9);
	k[0] = 'n';
	struct sx_val v;
	if ((p->rc = sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, &v)) < 0)
		return p->rc == SX_ENOENT ? (p->rc = sx_diag_set(SX_ECORRUPT, "a queued notification has no record")) : p->rc;
	msgpack_sbuffer_write(p->sb, v.data, v.len);
	return ++p->n >= p->limit;
}

static int m_pull(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"limit", NULL};
	int64_t limit = 100;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (limit < 1 || limit > PULL_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to %d", PULL_MAX);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	struct pull p = {pk, &sb, 0, (uint32_t)limit, 0};
	uint8_t lo[1] = {'q'}, hi[1] = {'r'};
	rc = sx_store_scan(sx__pred_eng->store, SX_T_NOTIFICATIONS, lo, 1, hi, 1, 0, pull_cb, &p);
	if (rc == 0 && p.rc < 0)
		rc = p.rc;
	if (rc == 0) {
		msgpack_pack_map(pk, 1);
		sx_pack_key(pk, "notifications");
		msgpack_pack_array(pk, p.n);
		pk->callback(pk->data, sb.data, sb.size);
	}
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int m_ack(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"ids", NULL};
	const msgpack_object *ids;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_array(args, "ids", 1, &ids)) < 0)
		return rc;
	if (ids->via.array.size > ACK_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'ids' holds at most %d ids", ACK_MAX);
	for (uint32_t i = 0; i < ids->via.array.size; i++)
		if (ids->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return sx_diag_set(SX_EINVAL, "argument 'ids[%u]' must be a notification id (a positive integer)", i);
	uint64_t acked = 0, unknown = 0;
	int64_t now = sx_wall_ms();
	for (uint32_t i = 0; i < ids->via.array.size; i++) {
		uint8_t k[9] = {'q'};
		struct sx_val v;
		sx_be64(k + 1, ids->via.array.ptr[i].via.u64);
		if ((rc = sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, &v)) == SX_ENOENT) {
			unknown++;
			continue;
		}
		if (rc < 0 || (rc = sx_store_del(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9)) < 0)
			return rc;
		k[0] = 'n';
		if ((rc = sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, &v)) < 0)
			return rc;
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 1024);
		if (msgpack_unpack(v.data, v.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_MAP) {
			msgpack_zone_destroy(&z);
			return sx_diag_set(SX_ECORRUPT, "a stored notification does not decode");
		}
		msgpack_sbuffer sb;
		msgpack_packer p;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
		uint32_t keep = 0;
		for (uint32_t j = 0; j < o.via.map.size; j++)
			keep += !sx_obj_streq(&o.via.map.ptr[j].key, "state") && !sx_obj_streq(&o.via.map.ptr[j].key, "acked");
		msgpack_pack_map(&p, keep + 2);
		for (uint32_t j = 0; j < o.via.map.size; j++)
			if (!sx_obj_streq(&o.via.map.ptr[j].key, "state") && !sx_obj_streq(&o.via.map.ptr[j].key, "acked")) {
				sx_pack_object(&p, &o.via.map.ptr[j].key);
				sx_pack_object(&p, &o.via.map.ptr[j].val);
			}
		sx_pack_kv_str(&p, "state", "acked");
		sx_pack_kv_int(&p, "acked", now);
		msgpack_zone_destroy(&z);
		rc = sx_store_put(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		if (rc < 0)
			return rc;
		acked++;
	}
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "acked", acked);
	sx_pack_kv_uint(pk, "unknown", unknown);
	return 0;
}

int sx__pred_notify_start(struct sx_engine *e)
{
	static const struct sx_script_kind kind = {KIND, validate, installed, NULL};
	nrules = 0;
	int rc = sx_scripts_add_kind(e->scripts, &kind);
	if (rc < 0)
		return rc;
	static const sx_method_fn m_generate_fn = m_generate;
	const struct sx_method methods[] = {
		{"notifications.generate", SX_ROLE_WRITER, sx__pred_audited, (void *)&m_generate_fn, "run a notification rule {rule, cohort?, limit?}"},
		{"notifications.pull", SX_ROLE_READER, m_pull, NULL, "pending notifications, oldest first {limit?}"},
		{"notifications.ack", SX_ROLE_WRITER, m_ack, NULL, "mark notifications delivered {ids}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return 0;
}

void sx__pred_notify_stop(void) { nrules = 0; }
