/* The predict plugin: user features from a Lua script over running
 * summaries, targets, training through the model registry, predict.user,
 * predict.churn_risk, the prediction log, and scores of every user. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/audit.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/models/models.h"
#include "plugins/predict/internal.h"
#include "plugins/privacy/privacy.h"
#include "plugins/predict/predict.h"
#include "store/store.h"

/* The lib whose value defines features, targets and bands. */
#define LIB "features"
#define POLL_MS 200
#define LOG_FLUSH_MS 1000
#define LOG_PENDING_MAX 100000
#define CHURN_LIMIT_MAX 10000
#define TRAIN_ROWS_MAX 1000000

struct sx_engine *sx__pred_eng;
struct sx_pred_script sx__pred_script;

/* NaN (unknown) is sent as nil. */
static void kv_num(msgpack_packer *pk, const char *k, double v)
{
	sx_pack_key(pk, k);
	if (isnan(v))
		msgpack_pack_nil(pk);
	else
		msgpack_pack_double(pk, v);
}

/* ---- summaries ---- */

static struct sx_pred_sum **sums; /* by user index; NULL: not built */
static uint32_t nsums;

static void sums_drop(void)
{
	for (uint32_t i = 0; i < nsums; i++)
		if (sums[i]) {
			sx__pred_sum_free(sums[i]);
			free(sums[i]);
		}
	free(sums);
	sums = NULL, nsums = 0;
}

static void on_track(const struct sx_event *ev, void *ud)
{
	SX_UNUSED(ud);
	if (!ev)
		return; /* the end of an events.track call */
	if (ev->user < nsums && sums[ev->user] &&
	    sx__pred_sum_add(sums[ev->user], &sx__pred_script.conf, ev->name, ev->name_len, ev->time, ev->props,
			     ev->props_len) < 0) {
		/* rebuilt from the store at the next use */
		sx__pred_sum_free(sums[ev->user]);
		free(sums[ev->user]);
		sums[ev->user] = NULL;
	}
}

struct build {
	struct sx_pred_sum *s;
	int rc;
};

static int build_cb(const struct sx_event *ev, void *ud)
{
	struct build *b = ud;
	if ((b->rc = sx__pred_sum_add(b->s, &sx__pred_script.conf, ev->name, ev->name_len, ev->time, ev->props,
				      ev->props_len)) < 0)
		return b->rc;
	return 0;
}

static int64_t user_signup(uint32_t idx)
{
	char id[SX_EVENTS_ID_MAX + 1];
	size_t len, rlen;
	const void *rec;
	int64_t v = -1;
	if (sx_events_user_id(NULL, idx, id, sizeof(id), &len) < 0 ||
	    sx_events_user_record(NULL, id, len, &rec, &rlen) < 0)
		return -1;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(rec, rlen, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS && sx_arg_int(&o, "signup_time", 0, &v) < 0)
		v = -1;
	msgpack_zone_destroy(&z);
	return v;
}

/* Fills s from the user's events in [0, to). */
static int sum_build(uint32_t idx, int64_t to, struct sx_pred_sum *s)
{
	struct build b = {s, 0};
	sx__pred_sum_init(s);
	s->signup = user_signup(idx);
	int rc = sx_events_user_scan(NULL, idx, 0, to, 0, build_cb, &b);
	if (rc < 0)
		sx__pred_sum_free(s);
	return rc;
}

const struct sx_pred_sum *sx__pred_user_sum(uint32_t idx, int *rc)
{
	*rc = 0;
	if (idx >= nsums) {
		uint32_t n = sx_events_user_bound() + 1024;
		if (idx >= n)
			n = idx + 1024;
		struct sx_pred_sum **ns = realloc(sums, n * sizeof(*ns));
		if (!ns) {
			*rc = sx_diag_set(SX_ENOMEM, "out of memory");
			return NULL;
		}
		memset(ns + nsums, 0, (n - nsums) * sizeof(*ns));
		sums = ns, nsums = n;
	}
	if (sums[idx])
		return sums[idx];
	struct sx_pred_sum *s = malloc(sizeof(*s));
	if (!s) {
		*rc = sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if ((*rc = sum_build(idx, SX_EVENTS_TIME_MAX + 1, s)) < 0) {
		free(s);
		return NULL;
	}
	sums[idx] = s;
	return s;
}

/* ---- the features lib ---- */

static int name_ok(const char *s, size_t n)
{
	if (n < 1 || n > SX_PRED_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

static int rawfield(lua_State *L, int t, const char *k)
{
	lua_pushstring(L, k);
	lua_rawget(L, t);
	return lua_type(L, -1);
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static int copy_str(lua_State *L, int t, const char *k, char *dst, size_t size, char *err, size_t esize)
{
	int ty = rawfield(L, t, k);
	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	size_t n;
	const char *s = ty == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
	if (!s || n >= size || memchr(s, 0, n)) {
		snprintf(err, esize, "'%s' must be a string of at most %zu bytes", k, size - 1);
		lua_pop(L, 1);
		return -1;
	}
	memcpy(dst, s, n + 1);
	lua_pop(L, 1);
	return 0;
}

static const struct sx_pred_target default_targets[] = {
	{"booking_30d", "book", 30, 0},
	{"churn_60d", "*", 60, 1},
	{"trip_14d", "create_trip", 14, 0},
};

/* Reads the features lib's value at index v into out; err on failure. */
static int parse_script(lua_State *L, int v, struct sx_pred_script *out, char *err, size_t esize)
{
	int top = lua_gettop(L);
	memset(out, 0, sizeof(*out));
	sx__pred_conf_default(&out->conf);
	out->band_medium = 0.3, out->band_high = 0.6;
	if (!lua_istable(L, v)) {
		snprintf(err, esize, "the features lib returns a table {features = {name = function(u) ... end}}");
		return -1;
	}
	if (rawfield(L, v, "features") != LUA_TTABLE) {
		snprintf(err, esize, "'features' must be a table of functions");
		goto fail;
	}
	int ft = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, ft)) {
		size_t n;
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
		if (!k || !name_ok(k, n) || !lua_isfunction(L, -1)) {
			snprintf(err, esize, "features: each entry is name = function(u), names 1 to %d of a-z, 0-9 and _",
				 SX_PRED_NAME_MAX);
			goto fail;
		}
		if (out->nfeat == SX_PRED_FEATURES_MAX) {
			snprintf(err, esize, "at most %d features", SX_PRED_FEATURES_MAX);
			goto fail;
		}
		memcpy(out->feat[out->nfeat++], k, n + 1);
		lua_pop(L, 1);
	}
	if (!out->nfeat) {
		snprintf(err, esize, "'features' is empty");
		goto fail;
	}
	qsort(out->feat, (size_t)out->nfeat, sizeof(out->feat[0]), cmp_name);
	lua_settop(L, top);

	int ty = rawfield(L, v, "targets");
	if (ty == LUA_TNIL) {
		out->ntarget = (int)SX_ARRAY_SIZE(default_targets);
		memcpy(out->target, default_targets, sizeof(default_targets));
	} else if (ty != LUA_TTABLE) {
		snprintf(err, esize, "'targets' must be a table {name = {event, days, absent?}}");
		goto fail;
	} else {
		int tt = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, tt)) {
			size_t n;
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
			if (!k || !name_ok(k, n) || !lua_istable(L, -1)) {
				snprintf(err, esize, "targets: each entry is name = {event, days, absent?}");
				goto fail;
			}
			if (out->ntarget == SX_PRED_TARGETS_MAX) {
				snprintf(err, esize, "at most %d targets", SX_PRED_TARGETS_MAX);
				goto fail;
			}
			struct sx_pred_target *t = &out->target[out->ntarget++];
			memcpy(t->name, k, n + 1);
			int e = lua_gettop(L);
			if (copy_str(L, e, "event", t->event, sizeof(t->event), err, esize) < 0)
				goto fail;
			if (!t->event[0]) {
				snprintf(err, esize, "target %s: 'event' is required (\"*\": any event)", t->name);
				goto fail;
			}
			double d = rawfield(L, e, "days") == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
			if (!(d >= 1 && d <= 730) || d != floor(d)) {
				snprintf(err, esize, "target %s: 'days' must be an integer 1 to 730", t->name);
				goto fail;
			}
			t->days = (int)d;
			int at = rawfield(L, e, "absent");
			if (at != LUA_TNIL && at != LUA_TBOOLEAN) {
				snprintf(err, esize, "target %s: 'absent' must be a boolean", t->name);
				goto fail;
			}
			t->absent = lua_toboolean(L, -1);
			lua_settop(L, e - 1);
		}
	}
	lua_settop(L, top);

	ty = rawfield(L, v, "bands");
	if (ty == LUA_TTABLE) {
		int bt = lua_gettop(L);
		if (rawfield(L, bt, "medium") == LUA_TNUMBER)
			out->band_medium = lua_tonumber(L, -1);
		if (rawfield(L, bt, "high") == LUA_TNUMBER)
			out->band_high = lua_tonumber(L, -1);
		if (!(out->band_medium > 0 && out->band_medium <= out->band_high && out->band_high < 1)) {
			snprintf(err, esize, "bands: 0 < medium <= high < 1");
			goto fail;
		}
	} else if (ty != LUA_TNIL) {
		snprintf(err, esize, "'bands' must be a table {medium, high}");
		goto fail;
	}
	lua_settop(L, top);

	ty = rawfield(L, v, "events");
	if (ty == LUA_TTABLE) {
		int et = lua_gettop(L);
		struct sx_pred_conf *c = &out->conf;
		if (copy_str(L, et, "search", c->search, sizeof(c->search), err, esize) < 0 ||
		    copy_str(L, et, "trip", c->trip, sizeof(c->trip), err, esize) < 0 ||
		    copy_str(L, et, "booking", c->booking, sizeof(c->booking), err, esize) < 0 ||
		    copy_str(L, et, "spend_event", c->spend_event, sizeof(c->spend_event), err, esize) < 0 ||
		    copy_str(L, et, "spend_property", c->spend_prop, sizeof(c->spend_prop), err, esize) < 0)
			goto fail;
		if (rawfield(L, et, "session_gap_minutes") != LUA_TNIL) {
			double g = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
			if (!(g >= 1 && g <= 1440)) {
				snprintf(err, esize, "events.session_gap_minutes must be 1 to 1440");
				goto fail;
			}
			c->session_gap_ms = (int64_t)(g * 60000);
		}
	} else if (ty != LUA_TNIL) {
		snprintf(err, esize, "'events' must be a table");
		goto fail;
	}
	lua_settop(L, top);
	out->loaded = 1;
	return 0;
fail:
	lua_settop(L, top);
	return -1;
}

static int validate(lua_State *L, int value, const char *name, void *ud)
{
	struct sx_pred_script tmp;
	char err[256];
	SX_UNUSED(name), SX_UNUSED(ud);
	if (parse_script(L, value, &tmp, err, sizeof(err)) < 0)
		return sx_diag_set(SX_ESCRIPT, "%s", err);
	return 0;
}

static void installed(const char *name, int ref, void *ud)
{
	char err[256];
	SX_UNUSED(ud);
	if (strcmp(name, LIB) != 0)
		return;
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	struct sx_pred_conf old = sx__pred_script.conf;
	if (parse_script(L, lua_gettop(L), &sx__pred_script, err, sizeof(err)) < 0)
		sx_log_error("lib/%s.lua: %s", name, err);
	lua_pop(L, 1);
	/* summaries count what the configuration names */
	if (memcmp(&old, &sx__pred_script.conf, sizeof(old)) != 0)
		sums_drop();
}

static void setnum(lua_State *L, const char *k, double v)
{
	if (isnan(v))
		return;
	lua_pushnumber(L, v);
	lua_setfield(L, -2, k);
}

void sx__pred_push_view(lua_State *L, const struct sx_pred_view *v)
{
	char k[64];
	lua_createtable(L, 0, 24);
	setnum(L, "days_since_signup", v->days_since_signup);
	setnum(L, "days_since_first", v->days_since_first);
	setnum(L, "days_since_last", v->days_since_last);
	for (int c = 0; c < 6; c++) {
		snprintf(k, sizeof(k), "%s_total", sx__pred_counts[c]);
		setnum(L, k, v->total[c]);
		for (int w = 0; w < SX_PRED_WINDOWS; w++) {
			snprintf(k, sizeof(k), "%s_%dd", sx__pred_counts[c], sx__pred_windows[w]);
			setnum(L, k, v->win[w][c]);
		}
	}
}

struct feat_run {
	const struct sx_pred_view *v;
	double *out;
};

/* (features table, struct feat_run): calls every feature on one summary table. */
static int run_features(lua_State *L)
{
	struct feat_run *r = lua_touserdata(L, 2);
	sx__pred_push_view(L, r->v);
	int u = lua_gettop(L);
	for (int i = 0; i < sx__pred_script.nfeat; i++) {
		lua_getfield(L, 1, sx__pred_script.feat[i]);
		lua_pushvalue(L, u);
		lua_call(L, 1, 1);
		int t = lua_type(L, -1);
		double x = t == LUA_TNUMBER ? lua_tonumber(L, -1) : t == LUA_TBOOLEAN ? lua_toboolean(L, -1) : 0;
		if ((t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TNIL) || !isfinite(x))
			return luaL_error(L, "feature '%s' returned %s (want a finite number, a boolean or nil)",
					  sx__pred_script.feat[i], t == LUA_TNUMBER ? "a non-finite number" : lua_typename(L, t));
		r->out[i] = x;
		lua_pop(L, 1);
	}
	return 0;
}

int sx__pred_features(const struct sx_pred_sum *s, int64_t at, double *out)
{
	struct sx_pred_view v;
	struct feat_run r = {&v, out};
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L), rc;
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	sx__pred_sum_view(s, at, &v);
	if (!lua_checkstack(L, 8))
		return sx_diag_set(SX_ENOMEM, "Lua stack exhausted");
	lua_pushcfunction(L, run_features);
	if ((rc = sx_scripts_push(sx__pred_eng->scripts, "lib", LIB)) < 0) {
		lua_settop(L, top);
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	}
	rawfield(L, lua_gettop(L), "features");
	lua_remove(L, -2);
	lua_pushlightuserdata(L, &r);
	rc = sx_lua_call(sx__pred_eng->lua, 2, 0);
	lua_settop(L, top);
	return rc;
}

/* ---- served models ---- */

struct served {
	char target[SX_PRED_NAME_MAX + 1];
	uint32_t version; /* 0: none recorded */
	int loaded;
};
static struct served served[SX_PRED_TARGETS_MAX * 2];
static int nserved;

static void model_name(const char *target, char *buf, size_t size) { snprintf(buf, size, "predict.%s", target); }

static struct served *served_get(const char *target)
{
	for (int i = 0; i < nserved; i++)
		if (strcmp(served[i].target, target) == 0)
			return &served[i];
	if (nserved == (int)SX_ARRAY_SIZE(served))
		return NULL;
	struct served *s = &served[nserved++];
	memset(s, 0, sizeof(*s));
	snprintf(s->target, sizeof(s->target), "%s", target);
	return s;
}

static uint32_t served_version(const char *target)
{
	struct served *s = served_get(target);
	if (!s)
		return 0;
	if (!s->loaded) {
		uint8_t k[1 + SX_PRED_NAME_MAX];
		struct sx_val v;
		size_t n = strlen(target);
		k[0] = 'T';
		memcpy(k + 1, target, n);
		if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, 1 + n, &v) == 0) {
			msgpack_zone z;
			msgpack_object o;
			size_t off = 0;
			int64_t ver = 0;
			msgpack_zone_init(&z, 512);
			if (msgpack_unpack(v.data, v.len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS &&
			    sx_arg_int(&o, "version", 0, &ver) == 0 && ver > 0 && ver <= UINT32_MAX)
				s->version = (uint32_t)ver;
			msgpack_zone_destroy(&z);
		}
		s->loaded = 1;
	}
	return s->version;
}

/* The production alias wins; else the version predict.train registered last. */
static struct sx_model *served_model(const struct sx_pred_target *t)
{
	char name[SX_MODELS_NAME_MAX + 1];
	model_name(t->name, name, sizeof(name));
	struct sx_model *m = sx_models_acquire(name, "production", 0);
	if (m || sx_diag_last_code() != SX_ENOENT)
		return m;
	uint32_t v = served_version(t->name);
	if (!v) {
		sx_diag_set(SX_ENOENT, "target '%s' has no trained model: call predict.train {target = \"%s\"}", t->name,
			    t->name);
		return NULL;
	}
	return sx_models_acquire(name, NULL, v);
}

const struct sx_pred_target *sx__pred_target_find(const char *name, size_t len)
{
	for (int i = 0; i < sx__pred_script.ntarget; i++)
		if (strlen(sx__pred_script.target[i].name) == len && memcmp(sx__pred_script.target[i].name, name, len) == 0)
			return &sx__pred_script.target[i];
	return NULL;
}

/* ---- the prediction log (kept in memory, written by a timer so that
 * predict.user never waits for a commit) ---- */

struct logent {
	int64_t time;
	uint32_t user;
	char target[SX_PRED_NAME_MAX + 1];
	double p;
	uint8_t band; /* 0 low, 1 medium, 2 high: the band served */
};
static struct logent *logq;
static size_t nlogq, caplogq;
static double log_sample = 1.0;
static uint64_t log_rng = 0x9e3779b97f4a7c15ULL;
static uv_timer_t poll_timer;
static int timer_on;

int sx__pred_quiet;

static void log_prediction(uint32_t user, const char *target, double p)
{
	if (log_sample <= 0 || sx__pred_quiet)
		return;
	log_rng ^= log_rng << 13, log_rng ^= log_rng >> 7, log_rng ^= log_rng << 17;
	if (log_sample < 1 && (double)(log_rng >> 11) / 9007199254740992.0 >= log_sample)
		return;
	if (nlogq == caplogq) {
		if (caplogq >= LOG_PENDING_MAX)
			return;
		size_t nc = caplogq ? caplogq * 2 : 256;
		struct logent *n = realloc(logq, nc * sizeof(*n));
		if (!n)
			return;
		logq = n, caplogq = nc;
	}
	struct logent *e = &logq[nlogq++];
	const char *b = sx__pred_band(p, sx__pred_script.band_medium, sx__pred_script.band_high);
	e->time = sx_wall_ms(), e->user = user, e->p = p, e->band = b[0] == 'h' ? 2 : b[0] == 'm' ? 1 : 0;
	snprintf(e->target, sizeof(e->target), "%s", target);
}

static size_t log_key(uint8_t *k, int64_t time, uint32_t user, const char *target)
{
	size_t n = strlen(target);
	k[0] = 'L';
	sx_be64(k + 1, (uint64_t)time);
	sx_be32(k + 9, user);
	memcpy(k + 13, target, n);
	return 13 + n;
}

void sx__pred_log_flush(void)
{
	for (size_t i = 0; i < nlogq; i++) {
		uint8_t k[16 + SX_PRED_NAME_MAX], v[9];
		uint64_t bits;
		memcpy(&bits, &logq[i].p, 8);
		sx_be64(v, bits);
		v[8] = logq[i].band;
		size_t kl = log_key(k, logq[i].time, logq[i].user, logq[i].target);
		if (sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, kl, v, 9) < 0)
			break;
	}
	nlogq = 0;
}

void sx__pred_forget(uint32_t idx)
{
	if (idx < nsums && sums[idx]) {
		sx__pred_sum_free(sums[idx]);
		free(sums[idx]);
		sums[idx] = NULL;
	}
	size_t n = 0;
	for (size_t i = 0; i < nlogq; i++)
		if (logq[i].user != idx)
			logq[n++] = logq[i];
	nlogq = n;
}

/* ---- scoring ---- */

int sx__pred_score(uint32_t idx, const char *user, size_t ulen, const struct sx_pred_target *t,
		   const double *x, double *p, double *contrib, double *intercept, struct sx_model **mout)
{
	SX_UNUSED(user), SX_UNUSED(ulen);
	struct sx_model *m = served_model(t);
	if (!m)
		return sx_diag_last_code() ? sx_diag_last_code() : SX_ENOENT;
	size_t d = sx_model_n_features(m);
	double xm[SX_PRED_FEATURES_MAX], cm[SX_PRED_FEATURES_MAX];
	int map[SX_PRED_FEATURES_MAX];
	if (sx_model_type(m) != SX_MODEL_LOGISTIC || d > SX_PRED_FEATURES_MAX) {
		sx_model_unref(m);
		return sx_diag_set(SX_ESTATE, "model predict.%s is not a logistic model over the features", t->name);
	}
	for (size_t j = 0; j < d; j++) {
		const char *fn = sx_model_feature_name(m, j);
		map[j] = -1;
		for (int i = 0; i < sx__pred_script.nfeat; i++)
			if (strcmp(fn, sx__pred_script.feat[i]) == 0)
				map[j] = i;
		if (map[j] < 0) {
			sx_model_unref(m);
			return sx_diag_set(SX_ESTATE, "model predict.%s v%u uses feature '%s' that lib/%s.lua no longer defines: retrain",
					   t->name, sx_model_version(m), fn, LIB);
		}
		xm[j] = x[map[j]];
	}
	int rc = sx_model_predict_proba(m, xm, cm, intercept, p);
	if (rc == 0 && contrib) {
		for (int i = 0; i < sx__pred_script.nfeat; i++)
			contrib[i] = 0;
		for (size_t j = 0; j < d; j++)
			contrib[map[j]] = cm[j];
	}
	if (rc == 0 && sx_privacy_allowed(user, ulen, SX_PURPOSE_ANALYTICS))
		log_prediction(idx, t->name, *p);
	if (rc == 0 && mout)
		*mout = m;
	else
		sx_model_unref(m);
	return rc;
}

/* cid gets the client's id (echoed back); id the id as stored, i.e. its
 * pseudonym when pseudonymization is on (sx_privacy_user_id). */
static int user_arg(const msgpack_object *args, char *cid, char *id, size_t *len, uint32_t *idx)
{
	int rc = sx_arg_cstr(args, "user", 1, cid, SX_EVENTS_ID_MAX + 1);
	if (rc < 0)
		return rc;
	size_t clen = strlen(cid);
	if (!clen)
		return sx_diag_set(SX_EINVAL, "argument 'user' must not be empty");
	char pbuf[SX_PRIVACY_ID_BUF];
	const char *sid = sx_privacy_user_id(cid, clen, pbuf, len);
	memmove(id, sid, *len);
	id[*len] = 0;
	if (sx_events_user_index(NULL, id, *len, idx) < 0)
		return sx_diag_set(SX_ENOENT, "no user '%s'", cid);
	return 0;
}

/* Training, alert rules, sampling and notification runs are admin actions:
 * each success goes to the audit log with its arguments (target, rule and
 * cohort names, numbers; no user ids). ud is the real handler. */
int sx__pred_audited(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	sx_method_fn fn = *(sx_method_fn *)ud;
	int rc = fn(req, args, pk, NULL);
	if (rc == 0)
		rc = sx_audit_record(sx__pred_eng, req->method, args && args->type == MSGPACK_OBJECT_MAP ? args : NULL);
	return rc;
}

struct rank {
	int i;
	double c;
};
static int rank_desc(const void *a, const void *b)
{
	double x = ((const struct rank *)a)->c, y = ((const struct rank *)b)->c;
	return x < y ? 1 : x > y ? -1 : 0;
}

static void pack_drivers(msgpack_packer *pk, const double *x, const double *contrib, int up, int nmax)
{
	struct rank r[SX_PRED_FEATURES_MAX];
	int n = 0;
	for (int i = 0; i < sx__pred_script.nfeat; i++)
		if (up ? contrib[i] > 0 : contrib[i] < 0)
			r[n].i = i, r[n].c = up ? contrib[i] : -contrib[i], n++;
	qsort(r, (size_t)n, sizeof(r[0]), rank_desc);
	if (n > nmax)
		n = nmax;
	msgpack_pack_array(pk, (size_t)n);
	for (int k = 0; k < n; k++) {
		msgpack_pack_map(pk, 3);
		sx_pack_kv_str(pk, "feature", sx__pred_script.feat[r[k].i]);
		sx_pack_kv_double(pk, "contribution", contrib[r[k].i]);
		sx_pack_kv_double(pk, "value", x[r[k].i]);
	}
}

static int m_user(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "targets", "top", NULL};
	char cid[SX_EVENTS_ID_MAX + 1], id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	uint32_t idx;
	const msgpack_object *targets = NULL;
	int64_t top = 3;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_array(args, "targets", 0, &targets)) < 0 ||
	    (rc = sx_arg_int(args, "top", 0, &top)) < 0)
		return rc;
	if (top < 0 || top > SX_PRED_FEATURES_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'top' must be 0 to %d", SX_PRED_FEATURES_MAX);
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	const struct sx_pred_target *want[SX_PRED_TARGETS_MAX];
	int nwant = 0, explicit = targets != NULL;
	if (targets) {
		if (targets->via.array.size > SX_PRED_TARGETS_MAX)
			return sx_diag_set(SX_EINVAL, "argument 'targets' names at most %d targets", SX_PRED_TARGETS_MAX);
		for (uint32_t i = 0; i < targets->via.array.size; i++) {
			const msgpack_object *o = &targets->via.array.ptr[i];
			const struct sx_pred_target *t = o->type == MSGPACK_OBJECT_STR ? sx__pred_target_find(o->via.str.ptr, o->via.str.size) : NULL;
			if (!t)
				return sx_diag_set(SX_EINVAL, "argument 'targets[%u]' is not a target of lib/%s.lua", i, LIB);
			want[nwant++] = t;
		}
	} else {
		for (int i = 0; i < sx__pred_script.ntarget; i++)
			want[nwant++] = &sx__pred_script.target[i];
	}
	if ((rc = user_arg(args, cid, id, &len, &idx)) < 0)
		return rc;
	const struct sx_pred_sum *s = sx__pred_user_sum(idx, &rc);
	if (!s)
		return rc;
	double x[SX_PRED_FEATURES_MAX], contrib[SX_PRED_TARGETS_MAX][SX_PRED_FEATURES_MAX];
	double p[SX_PRED_TARGETS_MAX], icpt[SX_PRED_TARGETS_MAX];
	uint32_t ver[SX_PRED_TARGETS_MAX];
	int have[SX_PRED_TARGETS_MAX], nhave = 0;
	int64_t now = sx_wall_ms();
	if ((rc = sx__pred_features(s, now, x)) < 0)
		return rc;
	for (int k = 0; k < nwant; k++) {
		struct sx_model *m = NULL;
		rc = sx__pred_score(idx, id, len, want[k], x, &p[k], contrib[k], &icpt[k], &m);
		have[k] = rc == 0;
		if (rc == SX_ENOENT && !explicit)
			continue;
		if (rc == SX_ENOENT)
			return sx_diag_set(SX_ESTATE, "%s", sx_diag_last());
		if (rc < 0)
			return rc;
		ver[k] = sx_model_version(m);
		sx_model_unref(m);
		nhave++;
	}
	msgpack_pack_map(pk, 5);
	sx_pack_kv_str(pk, "user", cid);
	sx_pack_kv_int(pk, "at", now);
	sx_pack_key(pk, "features");
	msgpack_pack_map(pk, (size_t)sx__pred_script.nfeat);
	for (int i = 0; i < sx__pred_script.nfeat; i++)
		sx_pack_kv_double(pk, sx__pred_script.feat[i], x[i]);
	sx_pack_key(pk, "predictions");
	msgpack_pack_map(pk, (size_t)nhave);
	for (int k = 0; k < nwant; k++) {
		if (!have[k])
			continue;
		char name[SX_MODELS_NAME_MAX + 1];
		model_name(want[k]->name, name, sizeof(name));
		sx_pack_key(pk, want[k]->name);
		msgpack_pack_map(pk, 6);
		sx_pack_kv_double(pk, "probability", p[k]);
		sx_pack_kv_str(pk, "band", sx__pred_band(p[k], sx__pred_script.band_medium, sx__pred_script.band_high));
		sx_pack_key(pk, "model");
		msgpack_pack_map(pk, 2);
		sx_pack_kv_str(pk, "name", name);
		sx_pack_kv_uint(pk, "version", ver[k]);
		sx_pack_kv_double(pk, "intercept", icpt[k]);
		sx_pack_key(pk, "up");
		pack_drivers(pk, x, contrib[k], 1, (int)top);
		sx_pack_key(pk, "down");
		pack_drivers(pk, x, contrib[k], 0, (int)top);
	}
	sx_pack_key(pk, "untrained");
	msgpack_pack_array(pk, (size_t)(nwant - nhave));
	for (int k = 0; k < nwant; k++)
		if (!have[k])
			sx_pack_str(pk, want[k]->name);
	return 0;
}

int sx_predict_user(const char *user, size_t len, const char *target, double *p)
{
	uint32_t idx;
	int rc;
	const struct sx_pred_target *t = sx__pred_target_find(target, strlen(target));
	if (!t)
		return sx_diag_set(SX_EINVAL, "no target '%s'", target);
	if (sx_events_user_index(NULL, user, len, &idx) < 0)
		return sx_diag_set(SX_ENOENT, "no such user");
	const struct sx_pred_sum *s = sx__pred_user_sum(idx, &rc);
	double x[SX_PRED_FEATURES_MAX];
	if (!s || (rc = sx__pred_features(s, sx_wall_ms(), x)) < 0)
		return rc;
	return sx__pred_score(idx, user, len, t, x, p, NULL, NULL, NULL);
}

/* ---- churn_risk ---- */

struct risk {
	uint32_t idx;
	double p;
};
static int risk_desc(const void *a, const void *b)
{
	const struct risk *x = a, *y = b;
	return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->idx > y->idx) - (x->idx < y->idx);
}

static const struct sx_pred_target *churn_target(void)
{
	const struct sx_pred_target *t = sx__pred_target_find("churn_60d", 9);
	for (int i = 0; !t && i < sx__pred_script.ntarget; i++)
		if (sx__pred_script.target[i].absent)
			t = &sx__pred_script.target[i];
	return t;
}

static int m_churn_risk(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"cohort", "min_risk", "limit", "target", NULL};
	char cohort[SX_EVENTS_ID_MAX + 1] = "", tname[SX_PRED_NAME_MAX + 2] = "";
	double min_risk = 0;
	int64_t limit = 100;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "cohort", 0, cohort, sizeof(cohort))) < 0 ||
	    (rc = sx_arg_num(args, "min_risk", 0, &min_risk)) < 0 || (rc = sx_arg_int(args, "limit", 0, &limit)) < 0 ||
	    (rc = sx_arg_cstr(args, "target", 0, tname, sizeof(tname))) < 0)
		return rc;
	if (!(min_risk >= 0 && min_risk <= 1))
		return sx_diag_set(SX_EINVAL, "argument 'min_risk' must be 0 to 1");
	if (limit < 1 || limit > CHURN_LIMIT_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to %d", CHURN_LIMIT_MAX);
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	const struct sx_pred_target *t = tname[0] ? sx__pred_target_find(tname, strlen(tname)) : churn_target();
	if (!t)
		return sx_diag_set(SX_EINVAL, tname[0] ? "argument 'target' is not a target of lib/features.lua"
						       : "lib/features.lua defines no churn target (absent = true)");
	struct sx_model *m = served_model(t);
	if (!m)
		return sx_diag_set(SX_ESTATE, "%s", sx_diag_last());
	sx_model_unref(m);
	roaring_bitmap_t *members = NULL;
	if (cohort[0] && !(members = sx_events_cohort_users(NULL, cohort, strlen(cohort))))
		return sx_diag_last_code() == SX_ENOENT ? sx_diag_set(SX_ENOENT, "no cohort '%s'", cohort) : sx_diag_last_code();
	uint32_t bound = sx_events_user_bound();
	struct risk *r = malloc((bound ? bound : 1) * sizeof(*r));
	if (!r) {
		if (members)
			roaring_bitmap_free(members);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	size_t n = 0, scored = 0;
	int64_t now = sx_wall_ms();
	double x[SX_PRED_FEATURES_MAX];
	sx__pred_quiet = 1; /* a sweep is not a served prediction */
	for (uint32_t i = 0; i < bound; i++) {
		if (members && !roaring_bitmap_contains(members, i))
			continue;
		const struct sx_pred_sum *s = sx__pred_user_sum(i, &rc);
		if (!s)
			break;
		if (s->events == 0)
			continue;
		double p;
		if ((rc = sx__pred_features(s, now, x)) < 0 || (rc = sx__pred_score(i, NULL, 0, t, x, &p, NULL, NULL, NULL)) < 0)
			break;
		scored++;
		if (p >= min_risk)
			r[n].idx = i, r[n].p = p, n++;
	}
	sx__pred_quiet = 0;
	if (members)
		roaring_bitmap_free(members);
	if (rc < 0) {
		free(r);
		return rc;
	}
	qsort(r, n, sizeof(*r), risk_desc);
	if (n > (size_t)limit)
		n = (size_t)limit;
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "target", t->name);
	sx_pack_kv_uint(pk, "scored", scored);
	sx_pack_kv_str(pk, "cohort", cohort[0] ? cohort : NULL);
	sx_pack_key(pk, "users");
	msgpack_pack_array(pk, n);
	for (size_t k = 0; k < n; k++) {
		char id[SX_EVENTS_ID_MAX + 1], act[SX_PRED_NAME_MAX + 1];
		size_t len = 0;
		if (sx_events_user_id(NULL, r[k].idx, id, sizeof(id), &len) < 0)
			id[0] = 0;
		const struct sx_pred_sum *s = sx__pred_user_sum(r[k].idx, &rc);
		const char *action = NULL;
		double probs[SX_PRED_TARGETS_MAX];
		for (int j = 0; j < sx__pred_script.ntarget; j++)
			probs[j] = &sx__pred_script.target[j] == t ? r[k].p : NAN;
		if (s && sx__pred_features(s, now, x) == 0)
			action = sx__pred_suggest(r[k].idx, id, len, x, probs, act, sizeof(act));
		msgpack_pack_map(pk, 4);
		sx_pack_kv_str(pk, "user", id);
		sx_pack_kv_double(pk, "probability", r[k].p);
		sx_pack_kv_str(pk, "band", sx__pred_band(r[k].p, sx__pred_script.band_medium, sx__pred_script.band_high));
		sx_pack_kv_str(pk, "action", action);
	}
	free(r);
	return 0;
}

/* ---- scores of every user (distribution) ---- */

#define SCORES_TTL_MS 60000

struct score_cache {
	char target[SX_PRED_NAME_MAX + 1];
	uint32_t version;
	uint64_t at;
	double *v;
	size_t n;
};
static struct score_cache scache[SX_PRED_TARGETS_MAX * 2];
static int nscache;

static void scache_drop(void)
{
	for (int i = 0; i < nscache; i++)
		free(scache[i].v);
	nscache = 0;
}

int sx__pred_scores(const struct sx_pred_target *t, const double **scores, size_t *n, uint32_t *version)
{
	struct sx_model *m = served_model(t);
	if (!m)
		return sx_diag_set(SX_ESTATE, "%s", sx_diag_last());
	uint32_t ver = sx_model_version(m);
	sx_model_unref(m);
	struct score_cache *c = NULL;
	for (int i = 0; i < nscache; i++)
		if (strcmp(scache[i].target, t->name) == 0)
			c = &scache[i];
	if (c && c->version == ver && sx_now_ms() - c->at < SCORES_TTL_MS) {
		*scores = c->v, *n = c->n, *version = ver;
		return 0;
	}
	if (!c) {
		if (nscache == (int)SX_ARRAY_SIZE(scache))
			scache_drop();
		c = &scache[nscache++];
		memset(c, 0, sizeof(*c));
		snprintf(c->target, sizeof(c->target), "%s", t->name);
	}
	uint32_t bound = sx_events_user_bound();
	double *v = malloc((bound ? bound : 1) * sizeof(*v)), x[SX_PRED_FEATURES_MAX];
	if (!v)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	size_t k = 0;
	int64_t now = sx_wall_ms();
	int rc = 0;
	sx__pred_quiet = 1;
	for (uint32_t i = 0; i < bound; i++) {
		const struct sx_pred_sum *s = sx__pred_user_sum(i, &rc);
		if (!s)
			break;
		if (s->events == 0)
			continue;
		if ((rc = sx__pred_features(s, now, x)) < 0 || (rc = sx__pred_score(i, NULL, 0, t, x, &v[k], NULL, NULL, NULL)) < 0)
			break;
		k++;
	}
	sx__pred_quiet = 0;
	if (rc < 0) {
		free(v);
		return rc;
	}
	free(c->v);
	c->v = v, c->n = k, c->version = ver, c->at = sx_now_ms();
	*scores = c->v, *n = c->n, *version = ver;
	return 0;
}

/* ---- training ---- */

struct pending_job {
	int64_t job;
	char target[SX_PRED_NAME_MAX + 1];
	int64_t cutoff;
	uint32_t rows, positives;
	struct pending_job *next;
};
static struct pending_job *pending;

static int m_train(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"target", "cutoff", "params", NULL};
	char tname[SX_PRED_NAME_MAX + 2];
	int64_t now = sx_wall_ms(), cutoff = -1;
	const msgpack_object *params = NULL;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "target", 1, tname, sizeof(tname))) < 0 ||
	    (rc = sx_arg_int(args, "cutoff", 0, &cutoff)) < 0 || (rc = sx_arg_map(args, "params", 0, &params)) < 0)
		return rc;
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	const struct sx_pred_target *t = sx__pred_target_find(tname, strlen(tname));
	if (!t)
		return sx_diag_set(SX_EINVAL, "argument 'target': no target '%s' in lib/%s.lua", tname, LIB);
	int64_t span = (int64_t)t->days * SX_PRED_DAY_MS;
	if (cutoff < 0 && sx_arg(args, "cutoff") == NULL)
		cutoff = now - span;
	if (cutoff < 0 || cutoff > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'cutoff' must be ms since 1970");
	if (cutoff + span > now)
		return sx_diag_set(SX_EINVAL, "argument 'cutoff': the %d-day label window after it has not closed yet", t->days);

	uint32_t bound = sx_events_user_bound();
	int nf = sx__pred_script.nfeat;
	msgpack_sbuffer sb;
	msgpack_packer dp;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&dp, &sb, msgpack_sbuffer_write);
	/* rows are counted first so that the arrays can be packed in one pass */
	double *X = NULL;
	uint8_t *y = NULL;
	size_t rows = 0, cap = 0, pos = 0;
	for (uint32_t i = 0; i < bound && rc == 0; i++) {
		struct sx_pred_sum s;
		if ((rc = sum_build(i, cutoff, &s)) < 0)
			break;
		if (s.events == 0) {
			sx__pred_sum_free(&s);
			continue;
		}
		if (rows == cap) {
			size_t nc = cap ? cap * 2 : 256;
			double *nx = nc <= TRAIN_ROWS_MAX ? realloc(X, nc * (size_t)nf * sizeof(*X)) : NULL;
			uint8_t *ny = nx ? realloc(y, nc) : NULL;
			if (nx)
				X = nx;
			if (!ny) {
				sx__pred_sum_free(&s);
				rc = sx_diag_set(SX_ENOMEM, "too many rows");
				break;
			}
			y = ny, cap = nc;
		}
		rc = sx__pred_features(&s, cutoff, X + rows * (size_t)nf);
		sx__pred_sum_free(&s);
		if (rc < 0)
			break;
		struct sx_pred_label l = {t, 0};
		if ((rc = sx_events_user_scan(NULL, i, cutoff, cutoff + span, 0, sx__pred_label_cb, &l)) < 0)
			break;
		y[rows] = (uint8_t)sx__pred_label_value(&l);
		pos += y[rows];
		rows++;
	}
	if (rc == 0 && (rows < 10 || pos == 0 || pos == rows))
		rc = sx_diag_set(SX_ESTATE, "target %s at cutoff %lld: %zu eligible users, %zu positive: need 10 rows and both labels",
				 t->name, (long long)cutoff, rows, pos);
	if (rc < 0) {
		free(X), free(y);
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	msgpack_pack_map(&dp, 3);
	sx_pack_key(&dp, "feature_names");
	msgpack_pack_array(&dp, (size_t)nf);
	for (int j = 0; j < nf; j++)
		sx_pack_str(&dp, sx__pred_script.feat[j]);
	sx_pack_key(&dp, "features");
	msgpack_pack_array(&dp, rows);
	for (size_t r = 0; r < rows; r++) {
		msgpack_pack_array(&dp, (size_t)nf);
		for (int j = 0; j < nf; j++)
			msgpack_pack_double(&dp, X[r * (size_t)nf + (size_t)j]);
	}
	sx_pack_key(&dp, "labels");
	msgpack_pack_array(&dp, rows);
	for (size_t r = 0; r < rows; r++)
		msgpack_pack_int(&dp, y[r]);
	free(X), free(y);
	msgpack_zone z;
	msgpack_object data;
	size_t off = 0;
	msgpack_zone_init(&z, 4096);
	char name[SX_MODELS_NAME_MAX + 1];
	model_name(t->name, name, sizeof(name));
	int64_t job = msgpack_unpack(sb.data, sb.size, &off, &z, &data) == MSGPACK_UNPACK_SUCCESS
			      ? sx_models_train("logistic", name, params, &data)
			      : sx_diag_set(SX_EINTERNAL, "training rows do not decode");
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	if (job < 0)
		return (int)job;
	struct pending_job *pj = calloc(1, sizeof(*pj));
	if (pj) {
		pj->job = job, pj->cutoff = cutoff, pj->rows = (uint32_t)rows, pj->positives = (uint32_t)pos;
		snprintf(pj->target, sizeof(pj->target), "%s", t->name);
		pj->next = pending;
		pending = pj;
	}
	msgpack_pack_map(pk, 7);
	sx_pack_kv_int(pk, "job", job);
	sx_pack_kv_str(pk, "target", t->name);
	sx_pack_kv_str(pk, "model", name);
	sx_pack_kv_int(pk, "cutoff", cutoff);
	sx_pack_kv_uint(pk, "rows", rows);
	sx_pack_kv_uint(pk, "positives", pos);
	sx_pack_kv_int(pk, "features", nf);
	return 0;
}

/* Records the version of each finished training job. */
static void poll_jobs(void)
{
	for (struct pending_job **pp = &pending, *p; (p = *pp) != NULL;) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		int done = 1;
		if (sx_jobs_pack_status(sx__pred_eng->jobs, (uint64_t)p->job, &pk) == 0) {
			msgpack_zone z;
			msgpack_object o;
			size_t off = 0;
			const char *st = NULL;
			size_t stl = 0;
			msgpack_zone_init(&z, 1024);
			if (msgpack_unpack(sb.data, sb.size, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS &&
			    sx_arg_str(&o, "state", 0, &st, &stl) == 0 && st) {
				const msgpack_object *res = sx_arg(&o, "result");
				int64_t ver = 0;
				if (stl == 7 && memcmp(st, "running", 7) == 0)
					done = 0;
				else if (stl == 4 && memcmp(st, "done", 4) == 0 && res && sx_arg_int(res, "version", 0, &ver) == 0 &&
					 ver > 0) {
					struct served *s = served_get(p->target);
					if (s)
						s->version = (uint32_t)ver, s->loaded = 1;
					uint8_t k[1 + SX_PRED_NAME_MAX];
					size_t n = strlen(p->target);
					k[0] = 'T';
					memcpy(k + 1, p->target, n);
					msgpack_sbuffer rb;
					msgpack_packer rp;
					msgpack_sbuffer_init(&rb);
					msgpack_packer_init(&rp, &rb, msgpack_sbuffer_write);
					msgpack_pack_map(&rp, 6);
					sx_pack_kv_int(&rp, "version", ver);
					sx_pack_kv_int(&rp, "job", p->job);
					sx_pack_kv_int(&rp, "cutoff", p->cutoff);
					sx_pack_kv_int(&rp, "trained_at", sx_wall_ms());
					sx_pack_kv_uint(&rp, "rows", p->rows);
					sx_pack_kv_uint(&rp, "positives", p->positives);
					if (sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, 1 + n, rb.data, rb.size) < 0)
						sx_log_error("predict: cannot record model version of %s: %s", p->target, sx_diag_last());
					msgpack_sbuffer_destroy(&rb);
				}
			}
			msgpack_zone_destroy(&z);
		}
		msgpack_sbuffer_destroy(&sb);
		if (done) {
			*pp = p->next;
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

static uint64_t last_flush;

static void tick(uv_timer_t *t)
{
	SX_UNUSED(t);
	if (pending)
		poll_jobs();
	if (nlogq && sx_now_ms() - last_flush >= LOG_FLUSH_MS) {
		sx__pred_log_flush();
		last_flush = sx_now_ms();
	}
	sx_store_read_end(sx__pred_eng->store);
}

static int m_config(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"sample", "sweep_ms", "segment_attribute", NULL};
	double sample = log_sample;
	int64_t sweep_ms = sx__pred_sweep_ms;
	char attr[SX_PRED_NAME_MAX + 2];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	snprintf(attr, sizeof(attr), "%s", sx__pred_seg_attr);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_num(args, "sample", 0, &sample)) < 0 ||
	    (rc = sx_arg_int(args, "sweep_ms", 0, &sweep_ms)) < 0)
		return rc;
	if (!(sample >= 0 && sample <= 1))
		return sx_diag_set(SX_EINVAL, "argument 'sample' must be 0 to 1");
	if (sweep_ms != 0 && (sweep_ms < 10 || sweep_ms > 86400000))
		return sx_diag_set(SX_EINVAL, "argument 'sweep_ms' must be 0 (off) or 10 to 86400000");
	if (sx_arg_cstr(args, "segment_attribute", 0, attr, sizeof(attr)) < 0 ||
	    (attr[0] && !name_ok(attr, strlen(attr))) || strcmp(attr, "band") == 0 || strcmp(attr, "all") == 0)
		return sx_diag_set(SX_EINVAL, "argument 'segment_attribute' must be \"\" (off) or a user attribute name "
				   "of 1 to %d of a-z, 0-9 and _ (not \"band\" or \"all\")", SX_PRED_NAME_MAX);
	if (sample != log_sample || sweep_ms != sx__pred_sweep_ms || strcmp(attr, sx__pred_seg_attr) != 0) {
		msgpack_sbuffer sb;
		msgpack_packer p;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&p, 3);
		sx_pack_kv_double(&p, "sample", sample);
		sx_pack_kv_int(&p, "sweep_ms", sweep_ms);
		sx_pack_kv_str(&p, "segment_attribute", attr);
		rc = sx_store_put(sx__pred_eng->store, SX_T_SERIES, "C", 1, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		if (rc < 0)
			return rc;
		log_sample = sample;
		snprintf(sx__pred_seg_attr, sizeof(sx__pred_seg_attr), "%s", attr);
		if (sweep_ms != sx__pred_sweep_ms) {
			sx__pred_sweep_ms = sweep_ms;
			sx__pred_sweep_rearm();
		}
	}
	msgpack_pack_map(pk, 6);
	sx_pack_kv_double(pk, "sample", log_sample);
	sx_pack_kv_int(pk, "sweep_ms", sx__pred_sweep_ms);
	sx_pack_kv_str(pk, "segment_attribute", sx__pred_seg_attr);
	sx_pack_kv_int(pk, "features", sx__pred_script.nfeat);
	sx_pack_key(pk, "targets");
	msgpack_pack_array(pk, (size_t)sx__pred_script.ntarget);
	for (int i = 0; i < sx__pred_script.ntarget; i++) {
		const struct sx_pred_target *t = &sx__pred_script.target[i];
		msgpack_pack_map(pk, 5);
		sx_pack_kv_str(pk, "name", t->name);
		sx_pack_kv_str(pk, "event", t->event);
		sx_pack_kv_int(pk, "days", t->days);
		sx_pack_kv_bool(pk, "absent", t->absent);
		sx_pack_kv_uint(pk, "version", served_version(t->name));
	}
	sx_pack_key(pk, "bands");
	msgpack_pack_map(pk, 2);
	sx_pack_kv_double(pk, "medium", sx__pred_script.band_medium);
	sx_pack_kv_double(pk, "high", sx__pred_script.band_high);
	return 0;
}

/* predict.features {user, at?}: the features and the summary behind them. */
static int m_features(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "at", NULL};
	char cid[SX_EVENTS_ID_MAX + 1], id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	uint32_t idx;
	int64_t at = sx_wall_ms();
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "at", 0, &at)) < 0)
		return rc;
	if (at < 0 || at > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'at' must be ms since 1970");
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/" LIB ".lua");
	if ((rc = user_arg(args, cid, id, &len, &idx)) < 0)
		return rc;
	struct sx_pred_sum tmp;
	const struct sx_pred_sum *s;
	int own = sx_arg(args, "at") != NULL;
	if (own) {
		if ((rc = sum_build(idx, at, &tmp)) < 0)
			return rc;
		s = &tmp;
	} else if (!(s = sx__pred_user_sum(idx, &rc))) {
		return rc;
	}
	double x[SX_PRED_FEATURES_MAX];
	struct sx_pred_view v;
	rc = sx__pred_features(s, at, x);
	sx__pred_sum_view(s, at, &v);
	if (own)
		sx__pred_sum_free(&tmp);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "user", cid);
	sx_pack_kv_int(pk, "at", at);
	sx_pack_key(pk, "features");
	msgpack_pack_map(pk, (size_t)sx__pred_script.nfeat);
	for (int i = 0; i < sx__pred_script.nfeat; i++)
		sx_pack_kv_double(pk, sx__pred_script.feat[i], x[i]);
	sx_pack_key(pk, "summary");
	msgpack_pack_map(pk, 3 + 6 * (1 + SX_PRED_WINDOWS));
	kv_num(pk, "days_since_signup", v.days_since_signup);
	kv_num(pk, "days_since_first", v.days_since_first);
	kv_num(pk, "days_since_last", v.days_since_last);
	for (int c = 0; c < 6; c++) {
		char k[64];
		snprintf(k, sizeof(k), "%s_total", sx__pred_counts[c]);
		sx_pack_kv_double(pk, k, v.total[c]);
		for (int w = 0; w < SX_PRED_WINDOWS; w++) {
			snprintf(k, sizeof(k), "%s_%dd", sx__pred_counts[c], sx__pred_windows[w]);
			sx_pack_kv_double(pk, k, v.win[w][c]);
		}
	}
	return 0;
}

/* ---- plugin ---- */

static const sx_method_fn m_train_fn = m_train, m_config_fn = m_config;

static int start(struct sx_engine *e)
{
	int rc;
	sx__pred_eng = e;
	memset(&sx__pred_script, 0, sizeof(sx__pred_script));
	sx__pred_conf_default(&sx__pred_script.conf);
	nserved = 0;
	log_sample = 1.0;
	sx__pred_sweep_ms = 300000;
	sx__pred_seg_attr[0] = 0;
	struct sx_val v;
	if (sx_store_get(e->store, SX_T_SERIES, "C", 1, &v) == 0) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 256);
		if (msgpack_unpack(v.data, v.len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
			sx_arg_num(&o, "sample", 0, &log_sample);
			sx_arg_int(&o, "sweep_ms", 0, &sx__pred_sweep_ms);
			sx_arg_cstr(&o, "segment_attribute", 0, sx__pred_seg_attr, sizeof(sx__pred_seg_attr));
		}
		msgpack_zone_destroy(&z);
	}
	sx_store_read_end(e->store);
	static const struct sx_lib_use use = {LIB, validate, installed, NULL};
	if ((rc = sx_scripts_use_lib(e->scripts, &use)) < 0 || (rc = sx_events_on_track(on_track, NULL)) < 0)
		return rc;
	const struct sx_method methods[] = {
		{"predict.user", SX_ROLE_READER, m_user, NULL, "probability per target, band and drivers {user, targets?, top?}"},
		{"predict.features", SX_ROLE_READER, m_features, NULL, "a user's features and summary {user, at?}"},
		{"predict.churn_risk", SX_ROLE_READER, m_churn_risk, NULL, "users most at risk {cohort?, min_risk?, limit?, target?}"},
		{"predict.train", SX_ROLE_WRITER, sx__pred_audited, (void *)&m_train_fn, "train a target's model through the registry {target, cutoff?, params?}"},
		{"predict.config", SX_ROLE_WRITER, sx__pred_audited, (void *)&m_config_fn,
		 "prediction log sampling, the accuracy sweep and the targets {sample?, sweep_ms?, segment_attribute?}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	if ((rc = sx__pred_forecast_start(e)) < 0 || (rc = sx__pred_notify_start(e)) < 0 ||
	    (rc = sx__pred_privacy_start()) < 0 || (rc = sx__pred_accuracy_start(e)) < 0 ||
	    (rc = sx_lua_allow_module(e->lua, "predict", sx_predict_lua_open)) < 0)
		return rc;
	uv_timer_init(e->loop, &poll_timer);
	uv_timer_start(&poll_timer, tick, POLL_MS, POLL_MS);
	uv_unref((uv_handle_t *)&poll_timer);
	timer_on = 1;
	return 0;
}

static void stop(struct sx_engine *e)
{
	SX_UNUSED(e);
	if (timer_on) {
		uv_timer_stop(&poll_timer);
		uv_close((uv_handle_t *)&poll_timer, NULL);
		timer_on = 0;
	}
	sx__pred_accuracy_stop();
	sx__pred_log_flush();
	free(logq);
	logq = NULL, nlogq = caplogq = 0;
	while (pending) {
		struct pending_job *p = pending;
		pending = p->next;
		free(p);
	}
	sx__pred_notify_stop();
	sums_drop();
	scache_drop();
	sx__pred_lua_close();
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	SX_UNUSED(e);
	uint32_t cached = 0;
	for (uint32_t i = 0; i < nsums; i++)
		cached += sums[i] != NULL;
	msgpack_pack_map(pk, 4);
	sx_pack_kv_uint(pk, "summaries", cached);
	sx_pack_kv_int(pk, "features", sx__pred_script.nfeat);
	sx_pack_kv_int(pk, "targets", sx__pred_script.ntarget);
	sx_pack_key(pk, "sweep");
	sx__pred_sweep_info(pk);
}

const struct sx_plugin sx_plugin_predict = {"predict", start, stop, info};
