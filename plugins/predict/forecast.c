/* Demand forecasting: forecast.run and forecast.backtest over series sent in
 * the request or produced by a recipe (script kind "forecasts"), with ETS
 * models chosen by AICc (core/math/ets.h). Recipes run as jobs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/jobs.h"
#include "core/log.h"
#include "core/lua/mpack.h"
#include "core/lua/sandbox.h"
#include "core/math/ets.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/predict/internal.h"
#include "store/store.h"

#define KIND "forecasts"
#define SERIES_MAX 100000   /* values per series */
#define RECIPE_SERIES_MAX 20000
#define HORIZON_MAX 1000
#define FOLDS_MAX 50
#define BATCH_THREADS 2
#define MARKS_MAX 1000

/* ---- recipes ---- */

static int validate(lua_State *L, int value, const char *name, void *ud)
{
	SX_UNUSED(ud);
	if (!lua_istable(L, value))
		return sx_diag_set(SX_ESCRIPT, "%s/%s.lua: a recipe returns a table {series = function(ctx, args), season?, horizon?, transform?, holidays?, actual?}",
				   KIND, name);
	int top = lua_gettop(L);
	const char *err = NULL;
	lua_getfield(L, value, "series");
	if (!lua_isfunction(L, -1))
		err = "'series' must be a function(ctx, args) returning {name = {numbers}} or {numbers}";
	lua_getfield(L, value, "season");
	if (!err && !lua_isnil(L, -1) &&
	    !(lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= SX_ETS_MAX_M))
		err = "'season' must be 1 to 24";
	lua_getfield(L, value, "horizon");
	if (!err && !lua_isnil(L, -1) &&
	    !(lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= HORIZON_MAX))
		err = "'horizon' must be 1 to 1000";
	lua_getfield(L, value, "transform");
	if (!err && !lua_isnil(L, -1) &&
	    !(lua_type(L, -1) == LUA_TSTRING && (strcmp(lua_tostring(L, -1), "log") == 0 || strcmp(lua_tostring(L, -1), "none") == 0)))
		err = "'transform' must be \"log\" or \"none\"";
	lua_getfield(L, value, "holidays");
	if (!err && !lua_isnil(L, -1) && !lua_istable(L, -1))
		err = "'holidays' must be a list of positions (1-based) to mark";
	lua_getfield(L, value, "actual");
	if (!err && !lua_isnil(L, -1) && !lua_istable(L, -1) && !lua_isfunction(L, -1))
		err = "'actual' must be a table {event, group_by?, field?, period?, origin?} or a function(ctx, args) returning one";
	lua_settop(L, top);
	return err ? sx_diag_set(SX_ESCRIPT, "%s/%s.lua: %s", KIND, name, err) : 0;
}

/* ctx.metrics(args): metrics.query from a recipe. */
static int lsx_metrics(lua_State *L)
{
	msgpack_sbuffer in, out;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	luaL_checktype(L, 1, LUA_TTABLE);
	msgpack_sbuffer_init(&in);
	msgpack_sbuffer_init(&out);
	msgpack_zone_init(&z, 1024);
	msgpack_packer_init(&pk, &in, msgpack_sbuffer_write);
	struct sx_mpack_limits lim = {8, 1 << 16};
	int rc = sx_lua_pack(L, 1, &pk, &lim);
	if (rc == 0 && msgpack_unpack(in.data, in.size, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS)
		rc = sx_diag_set(SX_EINVAL, "arguments do not encode");
	if (rc == 0) {
		msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
		rc = sx_events_metrics_query(&o, &pk);
	}
	if (rc == 0 && sx_lua_unpack(L, out.data, out.size) < 0)
		rc = sx_diag_set(SX_EINTERNAL, "the result does not decode");
	msgpack_sbuffer_destroy(&in);
	msgpack_sbuffer_destroy(&out);
	msgpack_zone_destroy(&z);
	if (rc < 0)
		return luaL_error(L, "ctx.metrics: %s: %s", sx_error_code(rc), sx_diag_last());
	return 1;
}

static int set_ctx(lua_State *L)
{
	const char *name = lua_touserdata(L, 1);
	if (sx_scripts_push_ctx(sx__pred_eng->scripts, KIND, name) < 0)
		return 0;
	lua_pushcfunction(L, lsx_metrics);
	lua_setfield(L, -2, "metrics");
	return 0;
}

static void installed(const char *name, int ref, void *ud)
{
	SX_UNUSED(ref), SX_UNUSED(ud);
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	if (lua_cpcall(L, set_ctx, (void *)name) != 0)
		lua_pop(L, 1);
}

/* ---- series ---- */

struct series {
	char *name;
	double *y;
	size_t n;
	size_t nmarks;
	uint32_t *marks; /* 0-based positions replaced before fitting */
};

struct fjob {
	int backtest;
	char recipe[SX_EVENTS_ID_MAX + 1];
	int season, horizon, folds, logt;
	double level;
	size_t count;
	struct series *s;
	struct sx_ets_model *models;
	int *rc;
	double *out;                       /* run: count * 3 * horizon (mean, lo, hi) */
	struct sx_ets_backtest_result *bt; /* backtest: count */
	int tracked;                       /* run: the recipe declares where actuals come from */
	struct sx_pred_fspec spec;
};

static void fjob_free(struct fjob *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->count; i++)
		free(j->s[i].name), free(j->s[i].y), free(j->s[i].marks);
	free(j->s), free(j->models), free(j->rc), free(j->out), free(j->bt);
	free(j);
}

static int numbers(const msgpack_object *o, const char *what, struct series *s)
{
	if (!o || o->type != MSGPACK_OBJECT_ARRAY)
		return sx_diag_set(SX_EINVAL, "%s must be an array of numbers", what);
	if (o->via.array.size < 4 || o->via.array.size > SERIES_MAX)
		return sx_diag_set(SX_EINVAL, "%s must hold 4 to %d numbers", what, SERIES_MAX);
	s->n = o->via.array.size;
	if (!(s->y = malloc(s->n * sizeof(double))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < s->n; i++) {
		const msgpack_object *x = &o->via.array.ptr[i];
		double v = x->type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (double)x->via.u64
			   : x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (double)x->via.i64
			   : x->type == MSGPACK_OBJECT_FLOAT32 || x->type == MSGPACK_OBJECT_FLOAT64 ? x->via.f64
										       : NAN;
		if (!isfinite(v))
			return sx_diag_set(SX_EINVAL, "%s[%zu] is not a finite number", what, i);
		s->y[i] = v;
	}
	return 0;
}

/* Marked positions (holidays) take the value interpolated between their
 * unmarked neighbours, so that one-off spikes do not bend the fit. */
static void apply_marks(struct series *s)
{
	if (!s->nmarks)
		return;
	uint8_t *m = calloc(s->n, 1);
	if (!m)
		return;
	for (size_t i = 0; i < s->nmarks; i++)
		if (s->marks[i] < s->n)
			m[s->marks[i]] = 1;
	for (size_t i = 0; i < s->n; i++) {
		if (!m[i])
			continue;
		size_t a = i, b = i;
		while (a > 0 && m[a])
			a--;
		while (b < s->n - 1 && m[b])
			b++;
		if (m[a] && m[b])
			break;
		double ya = m[a] ? s->y[b] : s->y[a], yb = m[b] ? s->y[a] : s->y[b];
		s->y[i] = a == b ? ya : ya + (yb - ya) * (double)(i - a) / (double)(b - a);
	}
	free(m);
}

static int season_for(int season, size_t n) { return season > 1 && n >= 2 * (size_t)season ? season : 1; }

/* ---- one series, synchronously ---- */

static void pack_params(msgpack_packer *pk, const struct sx_ets_model *m)
{
	char name[8];
	sx_pack_kv_str(pk, "model", sx_ets_spec_name(&m->spec, name));
	sx_pack_key(pk, "params");
	msgpack_pack_map(pk, 5);
	sx_pack_kv_double(pk, "alpha", m->alpha);
	sx_pack_kv_double(pk, "beta", m->beta);
	sx_pack_kv_double(pk, "gamma", m->gamma);
	sx_pack_kv_double(pk, "phi", m->phi);
	sx_pack_kv_int(pk, "season", m->spec.m);
	sx_pack_kv_double(pk, "aicc", m->aicc);
	sx_pack_kv_double(pk, "sigma2", m->sigma2);
}

static void pack_arr(msgpack_packer *pk, const char *k, const double *v, size_t n, int logt)
{
	sx_pack_key(pk, k);
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_double(pk, logt ? exp(v[i]) : v[i]);
}

static int check_logt(struct series *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (!(s->y[i] > 0))
			return sx_diag_set(SX_EINVAL, "transform \"log\" needs positive values (series %s)", s->name ? s->name : "");
		s->y[i] = log(s->y[i]);
	}
	return 0;
}

/* ---- the job ---- */

static int fjob_work(struct sx_job *job, void *ud)
{
	struct fjob *j = ud;
	if (!j->backtest) {
		const double **ys = malloc(j->count * sizeof(*ys));
		size_t *ns = malloc(j->count * sizeof(*ns));
		if (!ys || !ns) {
			free(ys), free(ns);
			return SX_ENOMEM;
		}
		for (size_t i = 0; i < j->count; i++)
			ys[i] = j->s[i].y, ns[i] = j->s[i].n;
		sx_job_progress(job, 0.05, "fitting");
		int rc = sx_ets_batch(ys, ns, j->count, j->season, NULL, NULL, BATCH_THREADS, j->models, j->rc);
		free(ys), free(ns);
		if (rc < 0)
			return rc;
		for (size_t i = 0; i < j->count; i++) {
			if (sx_job_cancelled(job))
				return SX_ECANCELED;
			if (j->rc[i] < 0 && season_for(j->season, j->s[i].n) != j->season)
				j->rc[i] = sx_ets_auto(j->s[i].y, j->s[i].n, 1, NULL, &j->models[i]);
			if (j->rc[i] == 0) {
				double *o = j->out + i * 3 * (size_t)j->horizon;
				j->rc[i] = sx_ets_forecast(&j->models[i], (size_t)j->horizon, j->level, 42, o, o + j->horizon,
							   o + 2 * j->horizon);
			}
		}
		return 0;
	}
	for (size_t i = 0; i < j->count; i++) {
		if (sx_job_cancelled(job))
			return SX_ECANCELED;
		struct sx_ets_cb_ctx cb = {NULL, season_for(j->season, j->s[i].n), NULL, 42};
		struct sx_ets_backtest_opts bo = {(size_t)j->folds, (size_t)j->horizon, 0, cb.m, j->level};
		j->rc[i] = sx_ets_backtest(j->s[i].y, j->s[i].n, &bo, sx_ets_forecaster, &cb, &j->bt[i]);
		sx_job_progress(job, (double)(i + 1) / (double)j->count, "backtesting");
	}
	return 0;
}

static void kv_num(msgpack_packer *pk, const char *k, double v)
{
	sx_pack_key(pk, k);
	if (isnan(v))
		msgpack_pack_nil(pk);
	else
		msgpack_pack_double(pk, v);
}

static void pack_bt(msgpack_packer *pk, const struct sx_ets_backtest_result *r)
{
	kv_num(pk, "mape", r->mape);
	kv_num(pk, "smape", r->smape);
	kv_num(pk, "mase", r->mase);
	kv_num(pk, "coverage", r->coverage);
	sx_pack_kv_uint(pk, "points", r->points);
}

/* Logs the forecasts of the job for accuracy tracking: {run, origin,
 * period, logged, unlogged} or nil. */
static void log_run(struct fjob *j, msgpack_packer *pk)
{
	size_t logged = 0, unlogged = 0;
	double *buf = malloc(3 * (size_t)j->horizon * sizeof(double));
	sx_pack_key(pk, "tracked");
	if (!j->tracked || !buf) {
		if (j->tracked)
			sx_log_error("predict: forecasts of %s not logged: out of memory", j->recipe);
		free(buf);
		msgpack_pack_nil(pk);
		return;
	}
	uint64_t run = sx__pred_fc_next_run();
	for (size_t i = 0; i < j->count; i++) {
		if (j->rc[i] < 0)
			continue;
		const double *o = j->out + i * 3 * (size_t)j->horizon;
		for (size_t k = 0; k < 3 * (size_t)j->horizon; k++)
			buf[k] = j->logt ? exp(o[k]) : o[k];
		char model[8];
		sx_ets_spec_name(&j->models[i].spec, model);
		int rc = sx__pred_fc_log(j->recipe, &j->spec, run, j->s[i].name, model, j->level, buf, buf + j->horizon,
					 buf + 2 * j->horizon, j->horizon);
		if (rc == 0) {
			logged++;
			continue;
		}
		if (rc != SX_E2BIG)
			sx_log_error("predict: cannot log forecast %s/%s: %s", j->recipe, j->s[i].name, sx_diag_last());
		unlogged++;
	}
	free(buf);
	sx_store_read_end(sx__pred_eng->store);
	msgpack_pack_map(pk, 5);
	sx_pack_kv_uint(pk, "run", run);
	sx_pack_kv_int(pk, "origin", j->spec.origin);
	sx_pack_kv_int(pk, "period", j->spec.period);
	sx_pack_kv_uint(pk, "logged", logged);
	sx_pack_kv_uint(pk, "unlogged", unlogged);
}

static void fjob_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct fjob *j = ud;
	SX_UNUSED(job);
	if (rc == 0) {
		msgpack_pack_map(pk, j->backtest ? 5 : 6);
		if (!j->backtest)
			log_run(j, pk);
		sx_pack_kv_str(pk, "recipe", j->recipe);
		sx_pack_kv_int(pk, "horizon", j->horizon);
		sx_pack_kv_double(pk, "level", j->level);
		sx_pack_key(pk, "series");
		msgpack_pack_array(pk, j->count);
		double sum[4] = {0}, w = 0;
		for (size_t i = 0; i < j->count; i++) {
			if (j->rc[i] < 0) {
				msgpack_pack_map(pk, 2);
				sx_pack_kv_str(pk, "name", j->s[i].name);
				sx_pack_kv_str(pk, "error", sx_error_code(j->rc[i]));
				continue;
			}
			if (j->backtest) {
				msgpack_pack_map(pk, 6);
				sx_pack_kv_str(pk, "name", j->s[i].name);
				pack_bt(pk, &j->bt[i]);
				double v[4] = {j->bt[i].mape, j->bt[i].smape, j->bt[i].mase, j->bt[i].coverage};
				for (int k = 0; k < 4; k++)
					sum[k] += v[k] * (double)j->bt[i].points;
				w += (double)j->bt[i].points;
				continue;
			}
			const double *o = j->out + i * 3 * (size_t)j->horizon;
			msgpack_pack_map(pk, 9);
			sx_pack_kv_str(pk, "name", j->s[i].name);
			pack_params(pk, &j->models[i]);
			sx_pack_kv_uint(pk, "n", j->s[i].n);
			pack_arr(pk, "mean", o, (size_t)j->horizon, j->logt);
			pack_arr(pk, "lo", o + j->horizon, (size_t)j->horizon, j->logt);
			pack_arr(pk, "hi", o + 2 * j->horizon, (size_t)j->horizon, j->logt);
		}
		sx_pack_key(pk, "pooled");
		if (j->backtest && w > 0) {
			msgpack_pack_map(pk, 4);
			kv_num(pk, "mape", sum[0] / w);
			kv_num(pk, "smape", sum[1] / w);
			kv_num(pk, "mase", sum[2] / w);
			kv_num(pk, "coverage", sum[3] / w);
		} else {
			msgpack_pack_nil(pk);
		}
	}
	fjob_free(j);
}

/* Runs the recipe's series(ctx, args) and fills j's series. */
static int recipe_series(struct fjob *j, const msgpack_object *args)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L), rc;
	if ((rc = sx_scripts_push(sx__pred_eng->scripts, KIND, j->recipe)) < 0)
		return sx_diag_set(SX_ENOENT, "no forecast recipe '%s'", j->recipe);
	lua_getfield(L, -1, "season");
	if (j->season <= 0)
		j->season = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : 1;
	lua_getfield(L, -2, "horizon");
	if (j->horizon <= 0)
		j->horizon = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : 0;
	lua_getfield(L, -3, "transform");
	j->logt = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "log") == 0;
	uint32_t marks[MARKS_MAX];
	size_t nmarks = 0;
	lua_getfield(L, -4, "holidays");
	if (lua_istable(L, -1))
		for (size_t i = 1; i <= lua_objlen(L, -1) && nmarks < MARKS_MAX; i++) {
			lua_rawgeti(L, -1, (int)i);
			if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= SERIES_MAX)
				marks[nmarks++] = (uint32_t)lua_tonumber(L, -1) - 1;
			lua_pop(L, 1);
		}
	lua_settop(L, top);
	if (j->horizon <= 0)
		return sx_diag_set(SX_EINVAL, "argument 'horizon' is required (the recipe sets none)");
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	const msgpack_object *ra = sx_arg(args, "args");
	if ((rc = sx_scripts_call(sx__pred_eng->scripts, KIND, j->recipe, "series", ra, &pk)) < 0) {
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	msgpack_zone_init(&z, 4096);
	if (msgpack_unpack(sb.data, sb.size, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS)
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s.series returned nothing usable", KIND, j->recipe);
	else if (o.type == MSGPACK_OBJECT_ARRAY)
		j->count = 1;
	else if (o.type == MSGPACK_OBJECT_MAP)
		j->count = o.via.map.size;
	else
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s.series must return {numbers} or {name = {numbers}}", KIND, j->recipe);
	if (rc == 0 && (j->count < 1 || j->count > RECIPE_SERIES_MAX))
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s.series returned %zu series (1 to %d)", KIND, j->recipe, j->count,
				 RECIPE_SERIES_MAX);
	if (rc == 0 && !(j->s = calloc(j->count, sizeof(*j->s))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; rc == 0 && i < j->count; i++) {
		struct series *s = &j->s[i];
		const msgpack_object *vals = o.type == MSGPACK_OBJECT_ARRAY ? &o : &o.via.map.ptr[i].val;
		const msgpack_object *key = o.type == MSGPACK_OBJECT_MAP ? &o.via.map.ptr[i].key : NULL;
		char what[320];
		size_t kl = key && key->type == MSGPACK_OBJECT_STR ? key->via.str.size : 0;
		if (!(s->name = malloc(kl + 24))) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			break;
		}
		if (kl)
			memcpy(s->name, key->via.str.ptr, kl), s->name[kl] = 0;
		else
			snprintf(s->name, 24, "%zu", i + 1);
		snprintf(what, sizeof(what), "series '%.100s' of %s", s->name, j->recipe);
		if ((rc = numbers(vals, what, s)) < 0)
			break;
		if (nmarks && (s->marks = malloc(nmarks * sizeof(uint32_t)))) {
			memcpy(s->marks, marks, nmarks * sizeof(uint32_t));
			s->nmarks = nmarks;
		}
		apply_marks(s);
		if (j->logt)
			rc = check_logt(s);
	}
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* Resolves the recipe's `actual` (a table, or a function(ctx, args)
 * returning one or nil) into j->spec; untracked without one. */
static int recipe_actual(struct fjob *j, const msgpack_object *args, int64_t now)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L), rc = 0;
	if (sx_scripts_push(sx__pred_eng->scripts, KIND, j->recipe) < 0)
		return sx_diag_set(SX_ENOENT, "no forecast recipe '%s'", j->recipe);
	lua_getfield(L, -1, "actual");
	int type = lua_type(L, -1);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (type == LUA_TTABLE) {
		struct sx_mpack_limits lim = {4, 1 << 16};
		if (sx_lua_pack(L, -1, &pk, &lim) < 0)
			rc = sx_diag_set(SX_ESCRIPT, "%s/%s.actual does not encode", KIND, j->recipe);
	}
	lua_settop(L, top);
	if (type == LUA_TFUNCTION)
		rc = sx_scripts_call(sx__pred_eng->scripts, KIND, j->recipe, "actual", sx_arg(args, "args"), &pk);
	if (rc < 0 || (type != LUA_TTABLE && type != LUA_TFUNCTION)) {
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(sb.data, sb.size, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS)
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s.actual returned nothing usable", KIND, j->recipe);
	else if (o.type != MSGPACK_OBJECT_NIL && sx__pred_fspec_parse(&o, now, &j->spec) < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", sx_diag_last());
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s: %s", KIND, j->recipe, why);
	} else if (o.type != MSGPACK_OBJECT_NIL && !j->spec.group_by[0] && j->count > 1) {
		rc = sx_diag_set(SX_ESCRIPT, "%s/%s: 'actual' without group_by reads one total: the recipe returned %zu series",
				 KIND, j->recipe, j->count);
	} else {
		j->tracked = o.type != MSGPACK_OBJECT_NIL;
	}
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

int sx__pred_recipe_tracked(const char *name)
{
	lua_State *L = sx_lua_state(sx__pred_eng->lua);
	int top = lua_gettop(L);
	if (sx_scripts_push(sx__pred_eng->scripts, KIND, name) < 0)
		return SX_ENOENT;
	lua_getfield(L, -1, "actual");
	int t = !lua_isnil(L, -1);
	lua_settop(L, top);
	return t;
}

static int common_args(const msgpack_object *args, int *season, int *horizon, double *level, int64_t *folds)
{
	int64_t s = 0, h = 0;
	int rc;
	if ((rc = sx_arg_int(args, "season", 0, &s)) < 0 || (rc = sx_arg_int(args, "horizon", 0, &h)) < 0 ||
	    (rc = sx_arg_num(args, "level", 0, level)) < 0 || (folds && (rc = sx_arg_int(args, "folds", 0, folds)) < 0))
		return rc;
	if (sx_arg(args, "season") && (s < 1 || s > SX_ETS_MAX_M))
		return sx_diag_set(SX_EINVAL, "argument 'season' must be 1 to %d", SX_ETS_MAX_M);
	if (sx_arg(args, "horizon") && (h < 1 || h > HORIZON_MAX))
		return sx_diag_set(SX_EINVAL, "argument 'horizon' must be 1 to %d", HORIZON_MAX);
	if (!(*level > 0 && *level < 1))
		return sx_diag_set(SX_EINVAL, "argument 'level' must be between 0 and 1");
	if (folds && (*folds < 1 || *folds > FOLDS_MAX))
		return sx_diag_set(SX_EINVAL, "argument 'folds' must be 1 to %d", FOLDS_MAX);
	if (!sx_arg(args, "series") == !sx_arg(args, "recipe"))
		return sx_diag_set(SX_EINVAL, "give either 'series' (numbers) or 'recipe' (a name)");
	*season = (int)s, *horizon = (int)h;
	return 0;
}

static int start_recipe(const msgpack_object *args, int backtest, int season, int horizon, double level, int folds,
			msgpack_packer *pk)
{
	struct fjob *j = calloc(1, sizeof(*j));
	int rc;
	if (!j)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	j->backtest = backtest, j->season = season, j->horizon = horizon, j->level = level, j->folds = folds;
	int64_t now = sx_wall_ms();
	if ((rc = sx_arg_cstr(args, "recipe", 1, j->recipe, sizeof(j->recipe))) < 0 || (rc = recipe_series(j, args)) < 0 ||
	    (!backtest && (rc = recipe_actual(j, args, now)) < 0)) {
		fjob_free(j);
		return rc;
	}
	if (j->season < 1 || j->season > SX_ETS_MAX_M)
		j->season = 1;
	j->models = calloc(j->count, sizeof(*j->models));
	j->rc = calloc(j->count, sizeof(int));
	j->out = backtest ? NULL : calloc(j->count * 3 * (size_t)j->horizon, sizeof(double));
	j->bt = backtest ? calloc(j->count, sizeof(*j->bt)) : NULL;
	if (!j->models || !j->rc || (!backtest && !j->out) || (backtest && !j->bt)) {
		fjob_free(j);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	size_t count = j->count;
	char recipe[sizeof(j->recipe)];
	memcpy(recipe, j->recipe, sizeof(recipe));
	int64_t id = sx_jobs_start(sx__pred_eng->jobs, backtest ? "forecast.backtest" : "forecast.run", fjob_work, fjob_done, j);
	if (id < 0) {
		fjob_free(j);
		return (int)id;
	}
	msgpack_pack_map(pk, 3);
	sx_pack_kv_int(pk, "job", id);
	sx_pack_kv_str(pk, "recipe", recipe);
	sx_pack_kv_uint(pk, "series", count);
	return 0;
}

static int m_run(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"series", "recipe", "args", "season", "horizon", "level", "model", NULL};
	int season, horizon, rc;
	double level = 0.95;
	char model[8] = "";
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = common_args(args, &season, &horizon, &level, NULL)) < 0 ||
	    (rc = sx_arg_cstr(args, "model", 0, model, sizeof(model))) < 0)
		return rc;
	if (sx_arg(args, "recipe"))
		return start_recipe(args, 0, season, horizon, level, 0, pk);
	if (!horizon)
		return sx_diag_set(SX_EINVAL, "argument 'horizon' is required");
	struct series s = {0};
	if ((rc = numbers(sx_arg(args, "series"), "argument 'series'", &s)) < 0) {
		free(s.y);
		return rc;
	}
	int m = season_for(season, s.n);
	struct sx_ets_model fit;
	struct sx_ets_spec spec;
	if (model[0] && strcmp(model, "auto") != 0) {
		if (sx_ets_spec_parse(model, m, &spec) < 0) {
			free(s.y);
			return sx_diag_set(SX_EINVAL, "argument 'model' must be \"auto\" or an ETS name such as \"AAdA\"");
		}
		if (spec.season != SX_ETS_NONE && m == 1) {
			free(s.y);
			return sx_diag_set(SX_EINVAL, "a seasonal model needs 'season' >= 2 and two seasons of data");
		}
		rc = sx_ets_fit(s.y, s.n, &spec, NULL, &fit);
	} else {
		rc = sx_ets_auto(s.y, s.n, m, NULL, &fit);
	}
	double *o = rc == 0 ? malloc(3 * (size_t)horizon * sizeof(double)) : NULL;
	if (rc == 0 && !o)
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc == 0)
		rc = sx_ets_forecast(&fit, (size_t)horizon, level, 42, o, o + horizon, o + 2 * horizon);
	if (rc < 0) {
		free(s.y), free(o);
		return rc;
	}
	msgpack_pack_map(pk, 10);
	pack_params(pk, &fit);
	sx_pack_kv_uint(pk, "n", s.n);
	sx_pack_kv_int(pk, "horizon", horizon);
	sx_pack_kv_double(pk, "level", level);
	pack_arr(pk, "mean", o, (size_t)horizon, 0);
	pack_arr(pk, "lo", o + horizon, (size_t)horizon, 0);
	pack_arr(pk, "hi", o + 2 * horizon, (size_t)horizon, 0);
	free(s.y), free(o);
	return 0;
}

static int m_backtest(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"series", "recipe", "args", "season", "horizon", "level", "folds", NULL};
	int season, horizon, rc;
	double level = 0.95;
	int64_t folds = 3;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = common_args(args, &season, &horizon, &level, &folds)) < 0)
		return rc;
	if (sx_arg(args, "recipe"))
		return start_recipe(args, 1, season, horizon, level, (int)folds, pk);
	if (!horizon)
		return sx_diag_set(SX_EINVAL, "argument 'horizon' is required");
	struct series s = {0};
	if ((rc = numbers(sx_arg(args, "series"), "argument 'series'", &s)) < 0) {
		free(s.y);
		return rc;
	}
	struct sx_ets_cb_ctx cb = {NULL, season_for(season, s.n), NULL, 42};
	struct sx_ets_backtest_opts bo = {(size_t)folds, (size_t)horizon, 0, cb.m, level};
	struct sx_ets_backtest_result r;
	if ((size_t)folds * (size_t)horizon + 4 > s.n) {
		free(s.y);
		return sx_diag_set(SX_EINVAL, "%lld folds of %d points need more than %zu values",
				   (long long)folds, horizon, s.n);
	}
	rc = sx_ets_backtest(s.y, s.n, &bo, sx_ets_forecaster, &cb, &r);
	free(s.y);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 9);
	sx_pack_kv_int(pk, "folds", folds);
	sx_pack_kv_int(pk, "horizon", horizon);
	sx_pack_kv_int(pk, "season", cb.m);
	sx_pack_kv_double(pk, "level", level);
	pack_bt(pk, &r);
	return 0;
}

int sx__pred_forecast_start(struct sx_engine *e)
{
	static const struct sx_script_kind kind = {KIND, validate, installed, NULL};
	int rc = sx_scripts_add_kind(e->scripts, &kind);
	if (rc < 0)
		return rc;
	const struct sx_method methods[] = {
		{"forecast.run", SX_ROLE_READER, m_run, NULL, "ETS forecast {series, season?, horizon, level?, model?} or {recipe, args?} (a job)"},
		{"forecast.backtest", SX_ROLE_READER, m_backtest, NULL, "rolling-origin backtest {series | recipe, folds?, horizon, season?}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return sx__pred_fc_start(e);
}
