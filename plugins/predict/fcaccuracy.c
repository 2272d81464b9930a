/* Error of served forecasts as their actuals arrive: forecast.run of a recipe
 * that declares `actual` logs each series; the accuracy sweep (accuracy.c's
 * timer and predict.sweep) joins every period that has closed with its actual
 * from the events plugin's metrics and folds the errors into stored sums per
 * recipe and per series key; forecast.accuracy reads them; forecast alert
 * rules publish on "alerts". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"
#include "store/store.h"

#define RECIPE_MAX SX_EVENTS_ID_MAX
#define LOGKEY_MAX (17 + SX_PRED_FKEY_MAX)
_Static_assert(LOGKEY_MAX <= SX_PRED_PASS_KEY_MAX, "a log key the pass cannot resume after");
#define KEYS_PER_RECIPE 200 /* series keys with sums of their own, per recipe */
#define RULES_MAX 1024
#define HORIZON_MAX 1000
#define MINUTE_MS 60000LL
#define HOUR_MS 3600000LL
#define WEEK_MS (7 * SX_PRED_DAY_MS)

/* ---- the error maths ---- */

void sx__pred_ferr_add(struct sx_pred_ferr *e, double a, double f, double lo, double hi)
{
	double d = fabs(a - f), den = fabs(a) + fabs(f);
	e->n++;
	e->ae += d;
	e->se += (a - f) * (a - f);
	e->bias += f - a;
	if (a != 0) {
		e->n_ape++;
		e->ape += d / fabs(a);
	}
	e->sape += den > 0 ? 2 * d / den : 0;
	e->covered += lo <= a && a <= hi;
}

void sx__pred_ferr_merge(struct sx_pred_ferr *a, const struct sx_pred_ferr *b)
{
	a->n += b->n, a->n_ape += b->n_ape, a->covered += b->covered;
	a->ae += b->ae, a->ape += b->ape, a->sape += b->sape, a->se += b->se, a->bias += b->bias;
}

void sx__pred_ferr_stats(const struct sx_pred_ferr *e, struct sx_pred_ferr_stats *s)
{
	double n = (double)e->n;
	s->mape = e->n_ape ? 100 * e->ape / (double)e->n_ape : NAN;
	s->smape = e->n ? 100 * e->sape / n : NAN;
	s->mae = e->n ? e->ae / n : NAN;
	s->rmse = e->n ? sqrt(e->se / n) : NAN;
	s->bias = e->n ? e->bias / n : NAN;
	s->coverage = e->n ? (double)e->covered / n : NAN;
}

void sx__pred_ferr_encode(const struct sx_pred_ferr *e, uint8_t *out)
{
	out[0] = 'E', out[1] = 1;
	sx_be64(out + 2, e->n);
	sx_be64(out + 10, e->n_ape);
	sx_be64(out + 18, e->covered);
	sx_be_f64(out + 26, e->ae);
	sx_be_f64(out + 34, e->ape);
	sx_be_f64(out + 42, e->sape);
	sx_be_f64(out + 50, e->se);
	sx_be_f64(out + 58, e->bias);
}

int sx__pred_ferr_decode(struct sx_pred_ferr *e, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (len != SX_PRED_FERR_BYTES || p[0] != 'E' || p[1] != 1)
		return sx_diag_set(SX_ECORRUPT, "stored forecast error sums do not decode");
	e->n = sx_get_be64(p + 2);
	e->n_ape = sx_get_be64(p + 10);
	e->covered = sx_get_be64(p + 18);
	e->ae = sx_get_be_f64(p + 26);
	e->ape = sx_get_be_f64(p + 34);
	e->sape = sx_get_be_f64(p + 42);
	e->se = sx_get_be_f64(p + 50);
	e->bias = sx_get_be_f64(p + 58);
	if (e->n_ape > e->n || e->covered > e->n)
		return sx_diag_set(SX_ECORRUPT, "stored forecast error sums are inconsistent");
	return 0;
}

int sx__pred_frule_check(const struct sx_pred_frule *r, const struct sx_pred_ferr *cur,
			 const struct sx_pred_ferr *base, double *value, double *threshold, double *baseline)
{
	struct sx_pred_ferr_stats c, b;
	sx__pred_ferr_stats(cur, &c);
	*value = c.mape, *threshold = NAN, *baseline = NAN;
	if ((int64_t)cur->n < r->min_samples)
		return -1;
	if (base && (int64_t)base->n >= r->min_samples) {
		sx__pred_ferr_stats(base, &b);
		*baseline = b.mape;
	}
	if (r->mape_above > 0 && !isnan(c.mape) && c.mape > r->mape_above) {
		*threshold = r->mape_above;
		return 1;
	}
	if (r->rise > 0 && !isnan(c.mape) && !isnan(*baseline) && c.mape - *baseline > r->rise) {
		*threshold = *baseline + r->rise;
		return 2;
	}
	if (r->coverage_below > 0 && c.coverage < r->coverage_below) {
		*value = c.coverage, *threshold = r->coverage_below;
		return 3;
	}
	return 0;
}

/* ---- the actual's source ---- */

int sx__pred_fspec_parse(const msgpack_object *o, int64_t now, struct sx_pred_fspec *sp)
{
	static const char *const known[] = {"event", "group_by", "field", "period", "origin", NULL};
	char period[8] = "day";
	int rc;
	memset(sp, 0, sizeof(*sp));
	snprintf(sp->field, sizeof(sp->field), "count");
	if (!o || o->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "'actual' must be a table {event, group_by?, field?, period?, origin?}");
	if ((rc = sx_arg_only(o, known)) < 0)
		return rc;
	if (sx_arg_cstr(o, "event", 1, sp->event, sizeof(sp->event)) < 0 || !sp->event[0] || sp->event[0] == '*')
		return sx_diag_set(SX_EINVAL, "'actual.event' must be an event name (1 to %d bytes, not \"*\")",
				   SX_EVENTS_ID_MAX);
	if (sx_arg_cstr(o, "group_by", 0, sp->group_by, sizeof(sp->group_by)) < 0)
		return sx_diag_set(SX_EINVAL, "'actual.group_by' must be a dimension of the event");
	if (sx_arg_cstr(o, "field", 0, sp->field, sizeof(sp->field)) < 0 ||
	    (strcmp(sp->field, "count") && strcmp(sp->field, "sum") && strcmp(sp->field, "users") && strcmp(sp->field, "avg")))
		return sx_diag_set(SX_EINVAL, "'actual.field' must be \"count\", \"sum\", \"users\" or \"avg\"");
	if (sx_arg_cstr(o, "period", 0, period, sizeof(period)) < 0)
		period[0] = 0;
	sp->period = !strcmp(period, "minute") ? MINUTE_MS
		     : !strcmp(period, "hour") ? HOUR_MS
		     : !strcmp(period, "day")  ? SX_PRED_DAY_MS
		     : !strcmp(period, "week") ? WEEK_MS
					       : 0;
	if (!sp->period)
		return sx_diag_set(SX_EINVAL, "'actual.period' must be \"minute\", \"hour\", \"day\" or \"week\"");
	/* metrics are read per minute, hour or day: an origin on the coarsest
	 * that the period allows keeps a week's query to 168 points */
	int64_t grain = sp->period >= HOUR_MS ? HOUR_MS : MINUTE_MS;
	sp->origin = now - now % sp->period;
	if (sx_arg_int(o, "origin", 0, &sp->origin) < 0 || sp->origin < 0 || sp->origin % grain ||
	    sp->origin > SX_EVENTS_TIME_MAX - (int64_t)HORIZON_MAX * sp->period)
		return sx_diag_set(SX_EINVAL, "'actual.origin' must be ms since 1970 on a whole %s",
				   grain == HOUR_MS ? "hour" : "minute");
	return 0;
}

/* ---- the log ---- */

uint64_t sx__pred_fc_next_run(void)
{
	struct sx_val v;
	uint64_t id = 0;
	uint8_t b[8];
	if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, "N", 1, &v) == 0 && v.len == 8)
		id = sx_get_be64(v.data);
	sx_be64(b, ++id);
	if (sx_store_put(sx__pred_eng->store, SX_T_SERIES, "N", 1, b, 8) < 0)
		sx_log_error("predict: cannot record forecast run %llu: %s", (unsigned long long)id, sx_diag_last());
	return id;
}

static size_t log_key(uint8_t *k, int64_t close, uint64_t run, const char *key, size_t kl)
{
	k[0] = 'F';
	sx_be64(k + 1, (uint64_t)close);
	sx_be64(k + 9, run);
	memcpy(k + 17, key, kl);
	return 17 + kl;
}

static void pack_doubles(msgpack_packer *pk, const char *k, const double *v, int n)
{
	sx_pack_key(pk, k);
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_double(pk, v[i]);
}

int sx__pred_fc_log(const char *recipe, const struct sx_pred_fspec *sp, uint64_t run, const char *key,
		    const char *model, double level, const double *mean, const double *lo, const double *hi, int h)
{
	size_t kl = strlen(key);
	if (kl > SX_PRED_FKEY_MAX)
		return SX_E2BIG;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 14);
	sx_pack_kv_str(&pk, "recipe", recipe);
	sx_pack_kv_str(&pk, "key", key);
	sx_pack_kv_str(&pk, "event", sp->event);
	sx_pack_kv_str(&pk, "group_by", sp->group_by);
	sx_pack_kv_str(&pk, "field", sp->field);
	sx_pack_kv_int(&pk, "origin", sp->origin);
	sx_pack_kv_int(&pk, "period", sp->period);
	sx_pack_kv_double(&pk, "level", level);
	sx_pack_kv_str(&pk, "model", model);
	sx_pack_kv_int(&pk, "served", sx_wall_ms());
	sx_pack_kv_uint(&pk, "run", run);
	pack_doubles(&pk, "mean", mean, h);
	pack_doubles(&pk, "lo", lo, h);
	pack_doubles(&pk, "hi", hi, h);
	uint8_t k[LOGKEY_MAX];
	size_t klen = log_key(k, sp->origin + sp->period, run, key, kl);
	int rc = sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, klen, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* A logged forecast as decoded from the store (views into the value). */
struct entry {
	const msgpack_object *recipe, *key, *event, *group_by, *field, *mean, *lo, *hi;
	int64_t origin, period;
	int h;
};

static int str_ok(const msgpack_object *o, size_t max)
{
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size <= max && !memchr(o->via.str.ptr, 0, o->via.str.size);
}

static int entry_decode(const msgpack_object *o, struct entry *e)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return -1;
	e->recipe = sx_arg(o, "recipe"), e->key = sx_arg(o, "key"), e->event = sx_arg(o, "event");
	e->group_by = sx_arg(o, "group_by"), e->field = sx_arg(o, "field");
	e->mean = sx_arg(o, "mean"), e->lo = sx_arg(o, "lo"), e->hi = sx_arg(o, "hi");
	if (!str_ok(e->recipe, RECIPE_MAX) || !e->recipe->via.str.size || !str_ok(e->key, SX_PRED_FKEY_MAX) ||
	    !str_ok(e->event, SX_EVENTS_ID_MAX) || !str_ok(e->group_by, SX_EVENTS_ID_MAX) || !str_ok(e->field, 7) ||
	    sx_arg_int(o, "origin", 1, &e->origin) < 0 || sx_arg_int(o, "period", 1, &e->period) < 0 ||
	    !e->mean || e->mean->type != MSGPACK_OBJECT_ARRAY || !e->lo || e->lo->type != MSGPACK_OBJECT_ARRAY ||
	    !e->hi || e->hi->type != MSGPACK_OBJECT_ARRAY)
		return -1;
	e->h = (int)e->mean->via.array.size;
	if (e->h < 1 || e->h > HORIZON_MAX || e->lo->via.array.size != (uint32_t)e->h ||
	    e->hi->via.array.size != (uint32_t)e->h || e->period < MINUTE_MS || e->period % MINUTE_MS || e->origin < 0 ||
	    e->origin % MINUTE_MS || e->origin > SX_EVENTS_TIME_MAX - (int64_t)e->h * e->period)
		return -1;
	return 0;
}

static double num_at(const msgpack_object *a, int i)
{
	const msgpack_object *x = &a->via.array.ptr[i];
	return x->type == MSGPACK_OBJECT_FLOAT64 || x->type == MSGPACK_OBJECT_FLOAT32 ? x->via.f64
	       : x->type == MSGPACK_OBJECT_POSITIVE_INTEGER			       ? (double)x->via.u64
	       : x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER			       ? (double)x->via.i64
										       : NAN;
}

static int64_t interval_for(int64_t from, int64_t period, const char **name)
{
	if (from % SX_PRED_DAY_MS == 0 && period % SX_PRED_DAY_MS == 0)
		return *name = "day", SX_PRED_DAY_MS;
	if (from % HOUR_MS == 0 && period % HOUR_MS == 0)
		return *name = "hour", HOUR_MS;
	return *name = "minute", MINUTE_MS;
}

/* The actual of period [from, to): 0 and *out (NAN: no value, an avg of
 * nothing), or the metrics' error. */
static int read_actual(const struct entry *e, int64_t from, int64_t to, double *out)
{
	msgpack_sbuffer in, res;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object args, r;
	size_t off = 0;
	const char *iv;
	int gb = e->group_by->via.str.size > 0;
	interval_for(from, e->period, &iv);
	msgpack_sbuffer_init(&in);
	msgpack_sbuffer_init(&res);
	msgpack_zone_init(&z, 2048);
	msgpack_packer_init(&pk, &in, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4 + gb);
	sx_pack_key(&pk, "event");
	sx_pack_strn(&pk, e->event->via.str.ptr, e->event->via.str.size);
	sx_pack_kv_int(&pk, "from", from);
	sx_pack_kv_int(&pk, "to", to);
	sx_pack_kv_str(&pk, "interval", iv);
	if (gb) {
		sx_pack_key(&pk, "where");
		msgpack_pack_map(&pk, 1);
		sx_pack_strn(&pk, e->group_by->via.str.ptr, e->group_by->via.str.size);
		sx_pack_strn(&pk, e->key->via.str.ptr, e->key->via.str.size);
	}
	int rc = msgpack_unpack(in.data, in.size, &off, &z, &args) == MSGPACK_UNPACK_SUCCESS
			 ? 0
			 : sx_diag_set(SX_EINTERNAL, "metrics arguments do not encode");
	msgpack_packer_init(&pk, &res, msgpack_sbuffer_write);
	if (rc == 0)
		rc = sx_events_metrics_query(&args, &pk);
	off = 0;
	if (rc == 0 && msgpack_unpack(res.data, res.size, &off, &z, &r) != MSGPACK_UNPACK_SUCCESS)
		rc = sx_diag_set(SX_EINTERNAL, "a metrics result does not decode");
	if (rc == 0) {
		char field[8];
		memcpy(field, e->field->via.str.ptr, e->field->via.str.size);
		field[e->field->via.str.size] = 0;
		const msgpack_object *t = sx_arg(&r, "total");
		const msgpack_object *v = t ? sx_arg(t, field) : NULL;
		*out = NAN;
		if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			*out = (double)v->via.u64;
		else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			*out = (double)v->via.i64;
		else if (v && (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32))
			*out = v->via.f64;
		else if (!v || v->type != MSGPACK_OBJECT_NIL)
			rc = sx_diag_set(SX_EINTERNAL, "a metrics result has no total.%s", field);
	}
	msgpack_sbuffer_destroy(&in);
	msgpack_sbuffer_destroy(&res);
	msgpack_zone_destroy(&z);
	return rc;
}

/* ---- the pass over the log, sums per (recipe, key, close day) ---- */

static void ferr_merge(void *into, const void *from) { sx__pred_ferr_merge(into, from); }
static void ferr_encode(const void *e, uint8_t *out) { sx__pred_ferr_encode(e, out); }
static int ferr_decode(void *e, const void *buf, size_t len) { return sx__pred_ferr_decode(e, buf, len); }

static const struct sx_pred_sums_type ferr_type = {
	"forecast error sums", sizeof(struct sx_pred_ferr), SX_PRED_FERR_BYTES, ferr_merge, ferr_encode, ferr_decode,
};

struct sweep {
	int64_t now;
	struct sx_pred_fc_sweep *out;
};

static int sweep_cb(const struct sx_val *key, const struct sx_val *val, void *ud);

/* The pass over the forecast log ('F' close time run key). */
static struct sx_pred_pass pass = {.tag = 'F', .type = &ferr_type, .fold = sweep_cb};

static size_t sums_key(uint8_t *k, const char *recipe, const char *key, int all, int32_t day)
{
	size_t rl = strlen(recipe), n = 0;
	k[n++] = all ? 'E' : 'K';
	memcpy(k + n, recipe, rl), n += rl;
	k[n++] = 0;
	if (!all) {
		size_t kl = strlen(key);
		memcpy(k + n, key, kl), n += kl;
		k[n++] = 0;
	}
	sx_be32(k + n, (uint32_t)day);
	return n + 4;
}

/* 1 if the key has sums of its own: registered, or registered now while the
 * recipe has fewer than KEYS_PER_RECIPE. */
static int key_admit(const char *recipe, const char *key, int *rc)
{
	uint8_t k[2 + RECIPE_MAX + SX_PRED_FKEY_MAX], cb[4];
	size_t rl = strlen(recipe), kl = strlen(key);
	struct sx_val v;
	if (!kl)
		return 0;
	k[0] = 'k';
	memcpy(k + 1, recipe, rl);
	k[1 + rl] = 0;
	memcpy(k + 2 + rl, key, kl);
	if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, 2 + rl + kl, &v) == 0)
		return 1;
	uint32_t n = 0;
	if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, 1 + rl, &v) == 0 && v.len == 4)
		n = sx_get_be32(v.data);
	if (n >= KEYS_PER_RECIPE)
		return 0;
	sx_be32(cb, n + 1);
	if ((*rc = sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, 2 + rl + kl, "", 0)) < 0 ||
	    (*rc = sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, 1 + rl, cb, 4)) < 0)
		return 0;
	return 1;
}

static int sweep_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct sweep *s = ud;
	struct sx_pred_fc_sweep *o = s->out;
	const uint8_t *k = key->data;
	msgpack_zone z;
	msgpack_object obj;
	size_t off = 0;
	struct entry e;
	msgpack_zone_init(&z, 4096);
	if (key->len < 17 || msgpack_unpack(val->data, val->len, &off, &z, &obj) != MSGPACK_UNPACK_SUCCESS ||
	    entry_decode(&obj, &e) < 0) {
		msgpack_zone_destroy(&z);
		sx_log_error("predict: dropping an undecodable forecast log entry");
		o->dropped++;
		return sx_store_del(sx__pred_eng->store, SX_T_SERIES, k, key->len);
	}
	int64_t close = (int64_t)sx_get_be64(k + 1);
	uint64_t run = sx_get_be64(k + 9);
	int64_t j = (close - e.origin) / e.period - 1;
	char recipe[RECIPE_MAX + 1], skey[SX_PRED_FKEY_MAX + 1];
	memcpy(recipe, e.recipe->via.str.ptr, e.recipe->via.str.size);
	recipe[e.recipe->via.str.size] = 0;
	memcpy(skey, e.key->via.str.ptr, e.key->via.str.size);
	skey[e.key->via.str.size] = 0;
	int rc = 0, own = -1;
	for (; rc == 0 && j >= 0 && j < e.h && e.origin + (j + 1) * e.period <= s->now; j++) {
		int64_t from = e.origin + j * e.period, to = from + e.period;
		double a = NAN;
		if ((rc = read_actual(&e, from, to, &a)) < 0)
			break;
		if (isnan(a)) {
			o->skipped++;
			continue;
		}
		if (own < 0)
			own = key_admit(recipe, skey, &rc);
		if (rc < 0)
			break;
		int32_t day = sx__pred_day_of(to);
		double f = num_at(e.mean, (int)j), lo = num_at(e.lo, (int)j), hi = num_at(e.hi, (int)j);
		for (int all = 1; all >= (own ? 0 : 1); all--) {
			uint8_t sk[8 + RECIPE_MAX + SX_PRED_FKEY_MAX];
			struct sx_pred_ferr *acc = sx__pred_pass_sums(&pass, sk, sums_key(sk, recipe, skey, all, day));
			if (!acc) {
				rc = SX_ENOMEM;
				break;
			}
			sx__pred_ferr_add(acc, a, f, lo, hi);
		}
		o->periods++;
	}
	msgpack_zone_destroy(&z);
	if (rc == SX_EINVAL || rc == SX_ENOENT) {
		/* the recipe's event or dimension is no longer readable: never joinable */
		sx_log_error("predict: dropping forecast %llu of %s/%s: %s", (unsigned long long)run, recipe, skey,
			     sx_diag_last());
		o->dropped++;
		return sx_store_del(sx__pred_eng->store, SX_T_SERIES, k, key->len);
	}
	if (rc < 0 || (rc = sx_store_del(sx__pred_eng->store, SX_T_SERIES, k, key->len)) < 0)
		return rc;
	if (j >= e.h || j < 0) {
		o->finished++;
		return 0;
	}
	uint8_t nk[LOGKEY_MAX];
	size_t nl = log_key(nk, e.origin + (j + 1) * e.period, run, skey, strlen(skey));
	return sx_store_put(sx__pred_eng->store, SX_T_SERIES, nk, nl, val->data, val->len);
}

void sx__pred_fc_sweep_reset(void) { sx__pred_pass_reset(&pass); }

int sx__pred_fc_sweep_chunk(int64_t now, size_t limit, struct sx_pred_fc_sweep *out)
{
	struct sweep s = {now, out};
	memset(out, 0, sizeof(*out));
	pass.ud = &s;
	if (now >= SX_EVENTS_TIME_MAX)
		now = SX_EVENTS_TIME_MAX - 1;
	uint8_t hi[9] = {'F'};
	sx_be64(hi + 1, (uint64_t)now + 1);
	int rc = sx__pred_pass_chunk(&pass, hi, sizeof(hi), limit);
	out->visited = pass.visited, out->stopped = pass.stopped;
	return rc;
}

/* ---- reading the sums ---- */

struct readq {
	int32_t from, to;   /* close days, inclusive */
	size_t prefix;      /* key bytes before the day (per key: up to the key's NUL) */
	struct sx_pred_ferr *e;
	/* listing every key: */
	struct keysum {
		char key[SX_PRED_FKEY_MAX + 1];
		struct sx_pred_ferr e;
	} *keys;
	int nkeys, maxkeys;
};

static int read_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct readq *q = ud;
	const uint8_t *k = key->data;
	struct sx_pred_ferr e;
	if (key->len < q->prefix + 4)
		return 0;
	int32_t day = (int32_t)sx_get_be32(k + key->len - 4);
	if (day < q->from || day > q->to || sx__pred_ferr_decode(&e, val->data, val->len) < 0)
		return 0;
	if (!q->keys) {
		if (key->len == q->prefix + 4)
			sx__pred_ferr_merge(q->e, &e);
		return 0;
	}
	/* 'K' recipe \0 key \0 day: the key runs from prefix to the last NUL */
	size_t kl = key->len - 5 - q->prefix;
	if (key->len < q->prefix + 5 || k[key->len - 5] != 0 || kl > SX_PRED_FKEY_MAX || memchr(k + q->prefix, 0, kl))
		return 0;
	int i = q->nkeys - 1;
	if (i < 0 || strlen(q->keys[i].key) != kl || memcmp(q->keys[i].key, k + q->prefix, kl)) {
		if (q->nkeys == q->maxkeys)
			return 1;
		i = q->nkeys++;
		memset(&q->keys[i], 0, sizeof(q->keys[i]));
		memcpy(q->keys[i].key, k + q->prefix, kl);
	}
	sx__pred_ferr_merge(&q->keys[i].e, &e);
	return 0;
}

/* Sums of `recipe` (key NULL: all keys) over close days [from, to]. */
static int read_sums(const char *recipe, const char *key, int32_t from, int32_t to, struct sx_pred_ferr *e)
{
	uint8_t lo[8 + RECIPE_MAX + SX_PRED_FKEY_MAX], hi[8 + RECIPE_MAX + SX_PRED_FKEY_MAX];
	memset(e, 0, sizeof(*e));
	if (from > to)
		return 0;
	size_t n = sums_key(lo, recipe, key ? key : "", !key, from);
	sums_key(hi, recipe, key ? key : "", !key, to);
	sx_be32(hi + n - 4, (uint32_t)to + 1);
	struct readq q = {from, to, n - 4, e, NULL, 0, 0};
	return sx_store_scan(sx__pred_eng->store, SX_T_SERIES, lo, n, hi, n, 0, read_cb, &q);
}

/* ---- rules and alert state ---- */

static int rule_get(const char *recipe, struct sx_pred_frule *r)
{
	uint8_t k[SX_PRED_NAME_KEY];
	struct sx_val v;
	int rc = sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, sx__pred_name_key(k, 'P', recipe), &v);
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	int64_t w = 30, b = 90;
	msgpack_zone_init(&z, 512);
	if (msgpack_unpack(v.data, v.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
	    sx_arg_num(&o, "mape_above", 0, &r->mape_above) < 0 || sx_arg_num(&o, "rise", 0, &r->rise) < 0 ||
	    sx_arg_num(&o, "coverage_below", 0, &r->coverage_below) < 0 ||
	    sx_arg_int(&o, "min_samples", 0, &r->min_samples) < 0 || sx_arg_int(&o, "window", 0, &w) < 0 ||
	    sx_arg_int(&o, "baseline", 0, &b) < 0)
		rc = sx_diag_set(SX_ECORRUPT, "a stored forecast alert rule does not decode");
	r->window = (int)w, r->baseline = (int)b;
	msgpack_zone_destroy(&z);
	return rc;
}

/* Names under prefix `tag` (rules 'P' or states 'Q'), in order. */
struct names {
	char (*v)[RECIPE_MAX + 1];
	int n, max;
};

static int names_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct names *ns = ud;
	SX_UNUSED(val);
	if (key->len < 2 || key->len > 1 + RECIPE_MAX || memchr((const char *)key->data + 1, 0, key->len - 1))
		return 0;
	if (ns->n == ns->max)
		return 1;
	memcpy(ns->v[ns->n], (const char *)key->data + 1, key->len - 1);
	ns->v[ns->n++][key->len - 1] = 0;
	return 0;
}

static int names_list(char tag, struct names *ns)
{
	uint8_t lo[1] = {(uint8_t)tag}, hi[1] = {(uint8_t)(tag + 1)};
	ns->n = 0, ns->max = RULES_MAX;
	if (!(ns->v = malloc(RULES_MAX * sizeof(*ns->v))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = sx_store_scan(sx__pred_eng->store, SX_T_SERIES, lo, 1, hi, 1, 0, names_cb, ns);
	if (rc < 0)
		free(ns->v), ns->v = NULL;
	return rc;
}

static const char *const rule_names[4] = {"", "mape_above", "rise", "coverage_below"};
static const struct sx_pred_alert_kind alert_kind = {'Q', "forecast.accuracy", "recipe", rule_names};

static int eval_one(const char *recipe, int64_t now, int *fired)
{
	struct sx_pred_frule r = {0, 0, 0, 30, 30, 90};
	struct sx_pred_ferr cur, base;
	int rc;
	if ((rc = rule_get(recipe, &r)) < 0)
		return rc == SX_ECORRUPT ? 0 : rc;
	if (r.mape_above <= 0 && r.rise <= 0 && r.coverage_below <= 0)
		return 0;
	int32_t d = sx__pred_day_of(now);
	if ((rc = read_sums(recipe, NULL, d - r.window + 1, d, &cur)) < 0 ||
	    (rc = read_sums(recipe, NULL, d - r.window - r.baseline + 1, d - r.window, &base)) < 0)
		return rc;
	double value, threshold, baseline;
	int which = sx__pred_frule_check(&r, &cur, &base, &value, &threshold, &baseline);
	if (which < 0)
		return 0;
	return sx__pred_alert_update(&alert_kind, recipe, which, value, threshold, baseline, cur.n, now, fired);
}

int sx__pred_fc_alerts_eval(int64_t now, int *fired)
{
	struct names ns;
	int rc = names_list('P', &ns);
	for (int i = 0; rc == 0 && i < ns.n; i++)
		rc = eval_one(ns.v[i], now, fired);
	free(ns.v);
	return rc;
}

int sx__pred_fc_alerts_pack(msgpack_packer *pk)
{
	struct names ns;
	struct sx_pred_alert_state *a = NULL;
	int rc = names_list('Q', &ns), n = 0;
	if (rc == 0 && ns.n && !(a = malloc((size_t)ns.n * sizeof(*a))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	for (int i = 0; rc == 0 && i < ns.n; i++) {
		if ((rc = sx__pred_state_get('Q', ns.v[i], &a[n])) == 0) {
			if (n != i)
				memcpy(ns.v[n], ns.v[i], sizeof(ns.v[0]));
			n++;
		} else if (rc == SX_ECORRUPT || rc == SX_ENOENT) {
			rc = 0;
		}
	}
	if (rc == 0) {
		msgpack_pack_array(pk, (size_t)n);
		for (int i = 0; i < n; i++)
			sx__pred_state_pack(pk, "recipe", ns.v[i], &a[i]);
	}
	free(a), free(ns.v);
	return rc;
}

/* ---- methods ---- */

static int recipe_arg(const msgpack_object *args, char *recipe)
{
	int rc = sx_arg_cstr(args, "recipe", 1, recipe, RECIPE_MAX + 1);
	if (rc < 0 || !recipe[0])
		return sx_diag_set(SX_EINVAL, "argument 'recipe' must be a recipe name (1 to %d bytes)", RECIPE_MAX);
	return 0;
}

/* The recipe must exist and declare `actual`, or have tracked forecasts. */
static int recipe_known(const char *recipe)
{
	int t = sx__pred_recipe_tracked(recipe);
	if (t == 1)
		return 0;
	int found = 0;
	struct sx_val v;
	uint8_t pk[SX_PRED_NAME_KEY];
	if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, pk, sx__pred_name_key(pk, 'P', recipe), &v) == 0)
		found = 1;
	if (!found) {
		struct readq q = {0, INT32_MAX, 2 + strlen(recipe), NULL, NULL, 0, 0};
		struct sx_pred_ferr e;
		memset(&e, 0, sizeof(e));
		q.e = &e;
		int rc = sx__pred_name_scan('E', recipe, read_cb, &q);
		if (rc < 0)
			return rc;
		found = e.n > 0;
	}
	if (found)
		return 0;
	if (t == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no forecast recipe '%s'", recipe);
	return sx_diag_set(SX_ESTATE, "recipe '%s' declares no 'actual': its forecasts are not tracked", recipe);
}

static void pack_stats(msgpack_packer *pk, const struct sx_pred_ferr *e)
{
	struct sx_pred_ferr_stats s;
	sx__pred_ferr_stats(e, &s);
	sx_pack_kv_uint(pk, "n", e->n);
	sx_pack_kv_uint(pk, "n_ape", e->n_ape);
	sx__pred_kv_num(pk, "mape", s.mape);
	sx__pred_kv_num(pk, "smape", s.smape);
	sx__pred_kv_num(pk, "mae", s.mae);
	sx__pred_kv_num(pk, "rmse", s.rmse);
	sx__pred_kv_num(pk, "bias", s.bias);
	sx__pred_kv_num(pk, "coverage", s.coverage);
}

int sx__pred_fc_accuracy_pack(const msgpack_object *args, msgpack_packer *pk)
{
	static const char *const known[] = {"recipe", "window", "key", "at", NULL};
	char recipe[RECIPE_MAX + 1], key[SX_PRED_FKEY_MAX + 1] = "";
	double window = 30;
	int64_t at = sx_wall_ms();
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = recipe_arg(args, recipe)) < 0 ||
	    (rc = sx_arg_num(args, "window", 0, &window)) < 0 || (rc = sx_arg_int(args, "at", 0, &at)) < 0)
		return rc;
	if (sx_arg(args, "key") && (sx_arg_cstr(args, "key", 0, key, sizeof(key)) < 0 || !key[0]))
		return sx_diag_set(SX_EINVAL, "argument 'key' must be a series name of 1 to %d bytes", SX_PRED_FKEY_MAX);
	if (!(window >= 1 && window <= 3650) || window != floor(window))
		return sx_diag_set(SX_EINVAL, "argument 'window' (days) must be an integer 1 to 3650");
	if (at < 0 || at > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'at' must be ms since 1970");
	if ((rc = recipe_known(recipe)) < 0)
		return rc;
	int32_t d = sx__pred_day_of(at), from = d - (int32_t)window + 1;
	struct sx_pred_ferr e;
	if ((rc = read_sums(recipe, key[0] ? key : NULL, from, d, &e)) < 0)
		return rc;
	struct readq q = {from, d, 0, NULL, NULL, 0, KEYS_PER_RECIPE + 1};
	if (!key[0]) {
		q.prefix = 2 + strlen(recipe);
		if (!(q.keys = calloc((size_t)q.maxkeys, sizeof(*q.keys))))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		if ((rc = sx__pred_name_scan('K', recipe, read_cb, &q)) < 0) {
			free(q.keys);
			return rc;
		}
	}
	struct sx_pred_frule r = {0, 0, 0, 30, 30, 90};
	struct sx_pred_alert_state as;
	int has_rule = rule_get(recipe, &r) == 0 && (r.mape_above > 0 || r.rise > 0 || r.coverage_below > 0);
	if (has_rule) {
		int src = sx__pred_state_get('Q', recipe, &as);
		if (src < 0 && src != SX_ENOENT)
			has_rule = 0;
	}
	msgpack_pack_map(pk, 14);
	sx_pack_kv_str(pk, "recipe", recipe);
	sx_pack_kv_str(pk, "key", key[0] ? key : NULL);
	sx_pack_kv_int(pk, "window", (int64_t)window);
	sx_pack_kv_int(pk, "at", at);
	pack_stats(pk, &e);
	sx_pack_key(pk, "keys");
	msgpack_pack_array(pk, (size_t)q.nkeys);
	for (int i = 0; i < q.nkeys; i++) {
		msgpack_pack_map(pk, 9);
		sx_pack_kv_str(pk, "key", q.keys[i].key);
		pack_stats(pk, &q.keys[i].e);
	}
	sx_pack_key(pk, "alert");
	if (has_rule)
		sx__pred_state_pack(pk, "recipe", NULL, &as);
	else
		msgpack_pack_nil(pk);
	free(q.keys);
	return 0;
}

static int m_accuracy(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(req), SX_UNUSED(ud);
	return sx__pred_fc_accuracy_pack(args, pk);
}

/* The stored rule, or with `recipe` (not NULL) the reply to forecast.alerts. */
static void pack_rule(msgpack_packer *pk, const char *recipe, const struct sx_pred_frule *r)
{
	msgpack_pack_map(pk, 6 + (recipe != NULL));
	if (recipe)
		sx_pack_kv_str(pk, "recipe", recipe);
	sx_pack_kv_double(pk, "mape_above", r->mape_above);
	sx_pack_kv_double(pk, "rise", r->rise);
	sx_pack_kv_double(pk, "coverage_below", r->coverage_below);
	sx_pack_kv_int(pk, "min_samples", r->min_samples);
	sx_pack_kv_int(pk, "window", r->window);
	sx_pack_kv_int(pk, "baseline", r->baseline);
}

static int m_alerts(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"recipe", "mape_above", "rise", "coverage_below", "min_samples",
					    "window", "baseline", NULL};
	char recipe[RECIPE_MAX + 1];
	struct sx_pred_frule r = {0, 0, 0, 30, 30, 90};
	int64_t w, b;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = recipe_arg(args, recipe)) < 0)
		return rc;
	if ((rc = rule_get(recipe, &r)) < 0 && rc != SX_ENOENT)
		return rc;
	w = r.window, b = r.baseline;
	if ((rc = sx_arg_num(args, "mape_above", 0, &r.mape_above)) < 0 || (rc = sx_arg_num(args, "rise", 0, &r.rise)) < 0 ||
	    (rc = sx_arg_num(args, "coverage_below", 0, &r.coverage_below)) < 0 ||
	    (rc = sx_arg_int(args, "min_samples", 0, &r.min_samples)) < 0 || (rc = sx_arg_int(args, "window", 0, &w)) < 0 ||
	    (rc = sx_arg_int(args, "baseline", 0, &b)) < 0)
		return rc;
	if (!(r.mape_above >= 0 && r.mape_above <= 1e6))
		return sx_diag_set(SX_EINVAL, "argument 'mape_above' (percent) must be 0 (off) to 1e6");
	if (!(r.rise >= 0 && r.rise <= 1e6))
		return sx_diag_set(SX_EINVAL, "argument 'rise' (percentage points) must be 0 (off) to 1e6");
	if (!(r.coverage_below >= 0 && r.coverage_below <= 1))
		return sx_diag_set(SX_EINVAL, "argument 'coverage_below' must be 0 (off) to 1");
	if ((rc = sx__pred_rule_window_check(r.min_samples, w, b)) < 0)
		return rc;
	if ((rc = sx__pred_recipe_tracked(recipe)) < 0)
		return sx_diag_set(rc, "no forecast recipe '%s'", recipe);
	if (rc == 0)
		return sx_diag_set(SX_ESTATE, "recipe '%s' declares no 'actual': its forecasts are not tracked", recipe);
	r.window = (int)w, r.baseline = (int)b;
	msgpack_sbuffer sb;
	msgpack_packer p;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
	pack_rule(&p, NULL, &r);
	if ((rc = sx__pred_name_put('P', recipe, &sb)) < 0)
		return rc;
	pack_rule(pk, recipe, &r);
	return 0;
}

static int m_alert_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {NULL};
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	return sx__pred_fc_alerts_pack(pk);
}

static const sx_method_fn m_alerts_fn = m_alerts;

int sx__pred_fc_start(struct sx_engine *e)
{
	sx__pred_pass_reset(&pass);
	const struct sx_method methods[] = {
		{"forecast.accuracy", SX_ROLE_READER, m_accuracy, NULL,
		 "error of served forecasts as actuals arrived {recipe, window?, key?, at?}"},
		{"forecast.alerts", SX_ROLE_WRITER, sx__pred_audited, (void *)&m_alerts_fn,
		 "forecast alert rule {recipe, mape_above?, rise?, coverage_below?, window?, baseline?, min_samples?}"},
		{"forecast.alert_list", SX_ROLE_READER, m_alert_list, NULL, "the alert state of every recipe with one"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return 0;
}
