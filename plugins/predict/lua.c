/* The Lua API over scores: require "predict" in any script, ctx.predict in
 * dashboards. Results go through scratch buffers kept between calls (loop
 * thread only), so that a Lua error raised while pushing a result leaks
 * nothing. Wrong argument types raise; an unknown user or target without a
 * model returns nil, message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/lua/mpack.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/models/models.h"
#include "plugins/predict/internal.h"
#include "plugins/predict/predict.h"
#include "plugins/privacy/privacy.h"

#define DIST_BINS_MAX 100

static msgpack_sbuffer in, out;
static msgpack_zone zone;
static int scratch_on;

static void scratch_reset(void)
{
	if (!scratch_on) {
		msgpack_sbuffer_init(&in);
		msgpack_sbuffer_init(&out);
		msgpack_zone_init(&zone, 4096);
		scratch_on = 1;
	}
	if (in.alloc > (1u << 20) || out.alloc > (1u << 20)) {
		msgpack_sbuffer_destroy(&in);
		msgpack_sbuffer_destroy(&out);
		msgpack_sbuffer_init(&in);
		msgpack_sbuffer_init(&out);
	}
	msgpack_sbuffer_clear(&in);
	msgpack_sbuffer_clear(&out);
	msgpack_zone_clear(&zone);
}

void sx__pred_lua_close(void)
{
	if (!scratch_on)
		return;
	msgpack_sbuffer_destroy(&in);
	msgpack_sbuffer_destroy(&out);
	msgpack_zone_destroy(&zone);
	scratch_on = 0;
}

static int nil_msg(lua_State *L)
{
	lua_pushnil(L);
	lua_pushstring(L, sx_diag_last());
	return 2;
}

/* Pushes the result in `out`; SX_ENOENT and SX_ESTATE are nil, message. */
static int finish(lua_State *L, const char *what, int rc)
{
	if (rc == SX_ENOENT || rc == SX_ESTATE)
		return nil_msg(L);
	if (rc < 0)
		return luaL_error(L, "predict.%s: %s: %s", what, sx_error_code(rc), sx_diag_last());
	if (sx_lua_unpack(L, out.data, out.size) < 0)
		return luaL_error(L, "predict.%s: the result does not decode", what);
	return 1;
}

static const struct sx_pred_target *check_target(lua_State *L, int idx, const char *what)
{
	size_t n;
	const char *s = luaL_checklstring(L, idx, &n);
	const struct sx_pred_target *t = sx__pred_target_find(s, n);
	if (!t && sx__pred_script.loaded)
		luaL_error(L, "predict.%s: no target '%s' in lib/features.lua", what, s);
	return t;
}

/* user(id [, {targets}]) -> {target = {probability, band, version}} */
static int lsx_predict_user(lua_State *L)
{
	size_t clen;
	const char *cid = luaL_checklstring(L, 1, &clen);
	const struct sx_pred_target *want[SX_PRED_TARGETS_MAX];
	int nwant = 0;
	if (clen < 1 || clen > SX_EVENTS_ID_MAX)
		return luaL_error(L, "predict.user: a user id has 1 to %d bytes", SX_EVENTS_ID_MAX);
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		size_t n = lua_objlen(L, 2);
		if (n > SX_PRED_TARGETS_MAX)
			return luaL_error(L, "predict.user: at most %d targets", SX_PRED_TARGETS_MAX);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, (int)i);
			const struct sx_pred_target *t = check_target(L, -1, "user");
			lua_pop(L, 1);
			if (t)
				want[nwant++] = t;
		}
	}
	if (!sx__pred_script.loaded) {
		sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/features.lua");
		return nil_msg(L);
	}
	if (lua_isnoneornil(L, 2))
		for (int i = 0; i < sx__pred_script.ntarget; i++)
			want[nwant++] = &sx__pred_script.target[i];
	char pbuf[SX_PRIVACY_ID_BUF];
	size_t len;
	const char *id = sx_privacy_user_id(cid, clen, pbuf, &len);
	uint32_t idx;
	if (sx_events_user_index(NULL, id, len, &idx) < 0) {
		sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)clen, cid);
		return nil_msg(L);
	}
	int rc;
	const struct sx_pred_sum *s = sx__pred_user_sum(idx, &rc);
	double x[SX_PRED_FEATURES_MAX], p[SX_PRED_TARGETS_MAX];
	uint32_t ver[SX_PRED_TARGETS_MAX];
	int have[SX_PRED_TARGETS_MAX];
	if (!s || (rc = sx__pred_features(s, sx_wall_ms(), x)) < 0)
		return finish(L, "user", rc);
	for (int k = 0; k < nwant; k++) {
		struct sx_model *m = NULL;
		rc = sx__pred_score(idx, id, len, want[k], x, &p[k], NULL, NULL, &m);
		have[k] = rc == 0;
		if (rc == SX_ENOENT)
			continue;
		if (rc < 0)
			return finish(L, "user", rc);
		ver[k] = sx_model_version(m);
		sx_model_unref(m);
	}
	lua_createtable(L, 0, nwant);
	for (int k = 0; k < nwant; k++) {
		if (!have[k])
			continue;
		lua_createtable(L, 0, 3);
		lua_pushnumber(L, p[k]);
		lua_setfield(L, -2, "probability");
		lua_pushstring(L, sx__pred_band(p[k], sx__pred_script.band_medium, sx__pred_script.band_high));
		lua_setfield(L, -2, "band");
		lua_pushnumber(L, ver[k]);
		lua_setfield(L, -2, "version");
		lua_setfield(L, -2, want[k]->name);
	}
	return 1;
}

/* distribution(target [, bins]) -> {target, version, scored, mean, bins = {{lo, hi, count}}} */
static int lsx_predict_distribution(lua_State *L)
{
	const struct sx_pred_target *t = check_target(L, 1, "distribution");
	lua_Number b = luaL_optnumber(L, 2, 10);
	if (!(b >= 1 && b <= DIST_BINS_MAX) || b != floor(b))
		return luaL_error(L, "predict.distribution: bins must be an integer 1 to %d", DIST_BINS_MAX);
	if (!t) {
		sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/features.lua");
		return nil_msg(L);
	}
	int bins = (int)b;
	const double *v;
	size_t n;
	uint32_t ver;
	int rc = sx__pred_scores(t, &v, &n, &ver);
	if (rc < 0)
		return finish(L, "distribution", rc);
	uint64_t cnt[DIST_BINS_MAX] = {0};
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		int k = (int)(v[i] * bins);
		cnt[k < 0 ? 0 : k >= bins ? bins - 1 : k]++;
		sum += v[i];
	}
	lua_createtable(L, 0, 5);
	lua_pushstring(L, t->name);
	lua_setfield(L, -2, "target");
	lua_pushnumber(L, ver);
	lua_setfield(L, -2, "version");
	lua_pushnumber(L, (lua_Number)n);
	lua_setfield(L, -2, "scored");
	if (n) {
		lua_pushnumber(L, sum / (double)n);
		lua_setfield(L, -2, "mean");
	}
	lua_createtable(L, bins, 0);
	for (int k = 0; k < bins; k++) {
		lua_createtable(L, 0, 3);
		lua_pushnumber(L, (double)k / bins);
		lua_setfield(L, -2, "lo");
		lua_pushnumber(L, (double)(k + 1) / bins);
		lua_setfield(L, -2, "hi");
		lua_pushnumber(L, (lua_Number)cnt[k]);
		lua_setfield(L, -2, "count");
		lua_rawseti(L, -2, k + 1);
	}
	lua_setfield(L, -2, "bins");
	return 1;
}

/* fn({[field] = arg 1, options of arg 2...}) for a method over an argument map. */
static int call_map(lua_State *L, const char *what, const char *field, int (*fn)(const msgpack_object *, msgpack_packer *))
{
	luaL_checkstring(L, 1);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	lua_newtable(L);
	int a = lua_gettop(L);
	if (lua_istable(L, 2)) {
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, a);
		}
	}
	lua_pushvalue(L, 1);
	lua_setfield(L, a, field);
	scratch_reset();
	msgpack_packer pk;
	msgpack_packer_init(&pk, &in, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {4, 1 << 16};
	if (sx_lua_pack(L, a, &pk, &lim) < 0)
		return luaL_error(L, "predict.%s: %s", what, sx_diag_last());
	msgpack_object o;
	size_t off = 0;
	if (msgpack_unpack(in.data, in.size, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS)
		return luaL_error(L, "predict.%s: arguments do not encode", what);
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	return finish(L, what, fn(&o, &pk));
}

/* accuracy(target [, {window, segment, bins, at}]) -> as predict.accuracy */
static int lsx_predict_accuracy(lua_State *L) { return call_map(L, "accuracy", "target", sx__pred_accuracy_pack); }

/* forecast_accuracy(recipe [, {window, key, at}]) -> as forecast.accuracy */
static int lsx_predict_forecast_accuracy(lua_State *L)
{
	return call_map(L, "forecast_accuracy", "recipe", sx__pred_fc_accuracy_pack);
}

/* forecast_alerts() -> [{recipe, state, rule, value, threshold, baseline, samples, since, at}] */
static int lsx_predict_forecast_alerts(lua_State *L)
{
	scratch_reset();
	msgpack_packer pk;
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	return finish(L, "forecast_alerts", sx__pred_fc_alerts_pack(&pk));
}

/* alerts() -> [{target, state, rule, value, threshold, baseline, samples, since, at}] */
static int lsx_predict_alerts(lua_State *L)
{
	scratch_reset();
	msgpack_packer pk;
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	return finish(L, "alerts", sx__pred_alerts_pack(&pk));
}

int sx_predict_lua_open(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"user", lsx_predict_user},
		{"distribution", lsx_predict_distribution},
		{"accuracy", lsx_predict_accuracy},
		{"alerts", lsx_predict_alerts},
		{"forecast_accuracy", lsx_predict_forecast_accuracy},
		{"forecast_alerts", lsx_predict_forecast_alerts},
		{NULL, NULL},
	};
	lua_createtable(L, 0, (int)SX_ARRAY_SIZE(fns) - 1);
	for (const luaL_Reg *f = fns; f->name; f++) {
		lua_pushcfunction(L, f->func);
		lua_setfield(L, -2, f->name);
	}
	return 1;
}
