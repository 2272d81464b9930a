/* Accuracy tracking of served predictions: score histograms per label,
 * the sweep that joins logged predictions with their outcomes once the label
 * window closed and folds them into stored rolling state, predict.accuracy
 * over that state, alert rules (threshold and drop vs baseline) published on
 * "alerts", and predict.sweep. */
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

#define SWEEP_CHUNK 500          /* log entries one timer turn visits */
#define SWEEP_LIMIT_MAX 1000000  /* entries one predict.sweep call visits */
#define SEGS_PER_TARGET 32       /* distinct attribute segments kept per target */
#define QUERY_SEGS_MAX (4 + SEGS_PER_TARGET + 1)
#define KEY_MAX (3 + SX_PRED_NAME_MAX + SX_PRED_SEG_MAX + 4)

/* ---- histograms ---- */

int sx__pred_acc_bin(double p)
{
	if (!(p > 0))
		return 0;
	int b = (int)(p * SX_PRED_ACC_BINS);
	return b >= SX_PRED_ACC_BINS ? SX_PRED_ACC_BINS - 1 : b;
}

void sx__pred_acc_add(struct sx_pred_acc *a, double p, int y)
{
	int b = sx__pred_acc_bin(p);
	double q = p < 1e-15 ? 1e-15 : p > 1 - 1e-15 ? 1 - 1e-15 : p;
	if (y)
		a->pos[b]++;
	else
		a->neg[b]++;
	a->sump[b] += p;
	a->ll += y ? -log(q) : -log(1 - q);
	a->brier += (p - y) * (p - y);
}

void sx__pred_acc_merge(struct sx_pred_acc *a, const struct sx_pred_acc *b)
{
	for (int i = 0; i < SX_PRED_ACC_BINS; i++)
		a->pos[i] += b->pos[i], a->neg[i] += b->neg[i], a->sump[i] += b->sump[i];
	a->ll += b->ll, a->brier += b->brier;
}

void sx__pred_acc_totals(const struct sx_pred_acc *a, uint64_t *n, uint64_t *pos, double *sump)
{
	uint64_t nn = 0, pp = 0;
	double s = 0;
	for (int i = 0; i < SX_PRED_ACC_BINS; i++)
		pp += a->pos[i], nn += a->pos[i] + a->neg[i], s += a->sump[i];
	*n = nn, *pos = pp;
	if (sump)
		*sump = s;
}

double sx__pred_acc_auc(const struct sx_pred_acc *a)
{
	uint64_t n, pos;
	sx__pred_acc_totals(a, &n, &pos, NULL);
	if (pos == 0 || pos == n)
		return NAN;
	double below = 0, sum = 0;
	for (int i = 0; i < SX_PRED_ACC_BINS; i++) {
		sum += (double)a->pos[i] * (below + 0.5 * (double)a->neg[i]);
		below += (double)a->neg[i];
	}
	return sum / ((double)pos * (double)(n - pos));
}

double sx__pred_acc_lift(const struct sx_pred_acc *a, double share)
{
	uint64_t n, pos;
	sx__pred_acc_totals(a, &n, &pos, NULL);
	double k = share * (double)n;
	if (pos == 0 || k < 1)
		return NAN;
	double taken = 0, hits = 0;
	for (int i = SX_PRED_ACC_BINS - 1; i >= 0 && taken < k; i--) {
		double c = (double)(a->pos[i] + a->neg[i]);
		if (c == 0)
			continue;
		double t = c < k - taken ? c : k - taken;
		hits += (double)a->pos[i] * t / c;
		taken += t;
	}
	return (hits / k) / ((double)pos / (double)n);
}

void sx__pred_acc_calibration(const struct sx_pred_acc *a, int bins, double *mp, double *ob, uint64_t *cnt)
{
	int w = SX_PRED_ACC_BINS / bins;
	for (int g = 0; g < bins; g++) {
		uint64_t c = 0, p = 0;
		double s = 0;
		for (int i = g * w; i < (g + 1) * w; i++)
			c += a->pos[i] + a->neg[i], p += a->pos[i], s += a->sump[i];
		cnt[g] = c;
		mp[g] = c ? s / (double)c : NAN;
		ob[g] = c ? (double)p / (double)c : NAN;
	}
}

void sx__pred_acc_encode(const struct sx_pred_acc *a, uint8_t *out)
{
	uint8_t *p = out;
	*p++ = 'H', *p++ = 1;
	for (int i = 0; i < SX_PRED_ACC_BINS; i++, p += 24) {
		sx_be64(p, a->pos[i]);
		sx_be64(p + 8, a->neg[i]);
		sx_be_f64(p + 16, a->sump[i]);
	}
	sx_be_f64(p, a->ll);
	sx_be_f64(p + 8, a->brier);
}

int sx__pred_acc_decode(struct sx_pred_acc *a, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (len != SX_PRED_ACC_BYTES || p[0] != 'H' || p[1] != 1)
		return sx_diag_set(SX_ECORRUPT, "a stored accuracy histogram does not decode");
	p += 2;
	for (int i = 0; i < SX_PRED_ACC_BINS; i++, p += 24) {
		a->pos[i] = sx_get_be64(p);
		a->neg[i] = sx_get_be64(p + 8);
		a->sump[i] = sx_get_be_f64(p + 16);
	}
	a->ll = sx_get_be_f64(p);
	a->brier = sx_get_be_f64(p + 8);
	return 0;
}

int sx__pred_rule_check(const struct sx_pred_rule *r, const struct sx_pred_acc *cur, const struct sx_pred_acc *base,
			double *value, double *threshold, double *baseline)
{
	uint64_t n, pos, bn, bpos;
	sx__pred_acc_totals(cur, &n, &pos, NULL);
	*value = sx__pred_acc_auc(cur), *threshold = NAN, *baseline = NAN;
	if ((int64_t)n < r->min_samples || isnan(*value))
		return -1;
	if (r->auc_below > 0 && *value < r->auc_below) {
		*threshold = r->auc_below;
		return 1;
	}
	if (r->drop > 0 && base) {
		sx__pred_acc_totals(base, &bn, &bpos, NULL);
		double b = sx__pred_acc_auc(base);
		if ((int64_t)bn >= r->min_samples && !isnan(b)) {
			*baseline = b;
			if (b - *value > r->drop) {
				*threshold = b - r->drop;
				return 2;
			}
		}
	}
	return 0;
}

/* ---- state keys ----
 *   'A' target \0 segment \0 u32 close day -> histogram (SX_PRED_ACC_BYTES)
 *   'G' target                              -> [attribute segments] (the cap)
 *   'S' target                              -> alert state
 */

static size_t acc_key(uint8_t *k, const char *target, const char *seg, int32_t day)
{
	size_t tl = strlen(target), sl = strlen(seg);
	k[0] = 'A';
	memcpy(k + 1, target, tl);
	k[1 + tl] = 0;
	memcpy(k + 2 + tl, seg, sl);
	k[2 + tl + sl] = 0;
	sx_be32(k + 3 + tl + sl, (uint32_t)day);
	return 7 + tl + sl;
}

/* ---- configuration ---- */

int64_t sx__pred_sweep_ms = 300000;
char sx__pred_seg_attr[SX_PRED_NAME_MAX + 1];

/* ---- attribute segments (capped per target) ---- */

struct segreg {
	char target[SX_PRED_NAME_MAX + 1];
	int n;
	char v[SEGS_PER_TARGET][SX_PRED_SEG_MAX + 1];
};
static struct segreg segregs[SX_PRED_TARGETS_MAX * 2];
static int nsegregs;

static struct segreg *segreg_get(const char *target)
{
	for (int i = 0; i < nsegregs; i++)
		if (strcmp(segregs[i].target, target) == 0)
			return &segregs[i];
	if (nsegregs == (int)SX_ARRAY_SIZE(segregs))
		return NULL;
	struct segreg *r = &segregs[nsegregs++];
	memset(r, 0, sizeof(*r));
	snprintf(r->target, sizeof(r->target), "%s", target);
	uint8_t k[SX_PRED_NAME_KEY];
	struct sx_val v;
	if (sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, sx__pred_name_key(k, 'G', target), &v) == 0) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 1024);
		if (msgpack_unpack(v.data, v.len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS && o.type == MSGPACK_OBJECT_ARRAY)
			for (uint32_t i = 0; i < o.via.array.size && r->n < SEGS_PER_TARGET; i++) {
				const msgpack_object *s = &o.via.array.ptr[i];
				if (s->type == MSGPACK_OBJECT_STR && s->via.str.size <= SX_PRED_SEG_MAX) {
					memcpy(r->v[r->n], s->via.str.ptr, s->via.str.size);
					r->v[r->n++][s->via.str.size] = 0;
				}
			}
		msgpack_zone_destroy(&z);
	}
	return r;
}

/* seg: the registered segment, or "ATTR:(other)" past the cap. */
static void segreg_admit(const char *target, char *seg, size_t size)
{
	struct segreg *r = segreg_get(target);
	if (!r) {
		snprintf(seg, size, "%s:(other)", sx__pred_seg_attr);
		return;
	}
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->v[i], seg) == 0)
			return;
	if (r->n == SEGS_PER_TARGET) {
		snprintf(seg, size, "%s:(other)", sx__pred_seg_attr);
		return;
	}
	snprintf(r->v[r->n++], sizeof(r->v[0]), "%s", seg);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, (size_t)r->n);
	for (int i = 0; i < r->n; i++)
		sx_pack_str(&pk, r->v[i]);
	if (sx__pred_name_put('G', target, &sb) < 0)
		sx_log_error("predict: cannot record segment %s of %s: %s", seg, target, sx_diag_last());
}

/* "ATTR:value" of user idx's attribute sx__pred_seg_attr; "" when off. */
static void user_segment(uint32_t idx, char *seg, size_t size)
{
	char id[SX_EVENTS_ID_MAX + 1], val[SX_PRED_SEG_MAX + 1] = "(none)";
	size_t len, rlen;
	const void *rec;
	seg[0] = 0;
	if (!sx__pred_seg_attr[0])
		return;
	if (sx_events_user_id(NULL, idx, id, sizeof(id), &len) == 0 &&
	    sx_events_user_record(NULL, id, len, &rec, &rlen) == 0) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 1024);
		if (msgpack_unpack(rec, rlen, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *at = sx_arg(&o, "attributes");
			const msgpack_object *v = at && at->type == MSGPACK_OBJECT_MAP ? sx_arg(at, sx__pred_seg_attr) : NULL;
			if (v && v->type == MSGPACK_OBJECT_STR) {
				size_t n = v->via.str.size;
				const char *nul = memchr(v->via.str.ptr, 0, n);
				if (nul)
					n = (size_t)(nul - v->via.str.ptr);
				if (n > 32)
					n = 32;
				memcpy(val, v->via.str.ptr, n);
				val[n] = 0;
			} else if (v && v->type == MSGPACK_OBJECT_BOOLEAN) {
				snprintf(val, sizeof(val), "%s", v->via.boolean ? "true" : "false");
			} else if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
				snprintf(val, sizeof(val), "%llu", (unsigned long long)v->via.u64);
			} else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
				snprintf(val, sizeof(val), "%lld", (long long)v->via.i64);
			} else if (v && (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)) {
				snprintf(val, sizeof(val), "%.15g", v->via.f64);
			}
		}
		msgpack_zone_destroy(&z);
	}
	snprintf(seg, size, "%s:%s", sx__pred_seg_attr, val);
}

/* ---- the sweep ---- */

struct sweep {
	int64_t now;
	uint64_t folded, open, dropped;
};

static void acc_merge(void *into, const void *from) { sx__pred_acc_merge(into, from); }
static void acc_encode(const void *a, uint8_t *out) { sx__pred_acc_encode(a, out); }
static int acc_decode(void *a, const void *buf, size_t len) { return sx__pred_acc_decode(a, buf, len); }

static const struct sx_pred_sums_type acc_type = {
	"histogram", sizeof(struct sx_pred_acc), SX_PRED_ACC_BYTES, acc_merge, acc_encode, acc_decode,
};

static int sweep_cb(const struct sx_val *key, const struct sx_val *val, void *ud);

/* The pass over the prediction log ('L' close time user target). */
static struct sx_pred_pass pass = {.tag = 'L', .type = &acc_type, .fold = sweep_cb};

/* Timer passes completed, and what the last one did. */
static struct {
	uint64_t passes, folded_total, forecast_periods_total;
	int64_t last_at, last_now;
	uint64_t last_visited, last_folded, last_open, last_forecast_periods;
} stats;

static const char *const band_segs[3] = {"band:low", "band:medium", "band:high"};

static int band_index(double p)
{
	const char *b = sx__pred_band(p, sx__pred_script.band_medium, sx__pred_script.band_high);
	return b[0] == 'h' ? 2 : b[0] == 'm' ? 1 : 0;
}

static int sweep_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct sweep *s = ud;
	const uint8_t *k = key->data;
	size_t tl = key->len > 13 ? key->len - 13 : 0;
	const struct sx_pred_target *t = tl ? sx__pred_target_find((const char *)k + 13, tl) : NULL;
	if (!t || val->len < 8) {
		/* a target the features lib no longer defines can never be joined */
		s->dropped++;
		return sx_store_del(sx__pred_eng->store, SX_T_SERIES, k, key->len);
	}
	int64_t time = (int64_t)sx_get_be64(k + 1);
	uint32_t user = sx_get_be32(k + 9);
	int64_t end = time + (int64_t)t->days * SX_PRED_DAY_MS;
	if (end > s->now) {
		s->open++;
		return 0;
	}
	double p = sx_get_be_f64(val->data);
	int band = val->len >= 9 && ((const uint8_t *)val->data)[8] < 3 ? ((const uint8_t *)val->data)[8] : band_index(p);
	struct sx_pred_label l = {t, 0};
	int rc = sx_events_user_scan(NULL, user, time + 1, end, 0, sx__pred_label_cb, &l);
	if (rc < 0)
		return rc;
	int y = sx__pred_label_value(&l);
	int32_t day = sx__pred_day_of(end);
	char seg[SX_PRED_SEG_MAX + 1];
	user_segment(user, seg, sizeof(seg));
	if (seg[0])
		segreg_admit(t->name, seg, sizeof(seg));
	const char *segs[3] = {"all", band_segs[band], seg};
	for (int i = 0; i < 3 && segs[i][0]; i++) {
		uint8_t ak[KEY_MAX];
		struct sx_pred_acc *a = sx__pred_pass_sums(&pass, ak, acc_key(ak, t->name, segs[i], day));
		if (!a)
			return SX_ENOMEM;
		sx__pred_acc_add(a, p, y);
	}
	s->folded++;
	return sx_store_del(sx__pred_eng->store, SX_T_SERIES, k, key->len);
}

/* The pass in progress, at `pass_now`. */
static int64_t pass_now = -1;
static int pass_forecasts; /* the pass in progress is past the prediction log, on the forecast log */

static int min_days(void)
{
	int d = 0;
	for (int i = 0; i < sx__pred_script.ntarget; i++)
		if (!d || sx__pred_script.target[i].days < d)
			d = sx__pred_script.target[i].days;
	return d;
}

static int evaluate_alerts(int64_t now, int *fired);

/* One chunk of the pass at `now`: 1 when the pass is complete, 0 when more
 * remains, or an error (nothing of the chunk is kept: the caller rolls back). */
static int sweep_chunk(int64_t now, size_t limit, struct sweep *s)
{
	memset(s, 0, sizeof(*s));
	s->now = now;
	pass.ud = s, pass.visited = 0;
	int md = min_days();
	if (!sx__pred_script.loaded || !md)
		return 1;
	int64_t upto = now - (int64_t)md * SX_PRED_DAY_MS + 1;
	if (upto <= 0)
		return 1;
	uint8_t hi[9] = {'L'};
	sx_be64(hi + 1, (uint64_t)upto);
	return sx__pred_pass_chunk(&pass, hi, sizeof(hi), limit);
}

static uv_timer_t sweep_timer;
static int sweep_on;

static void sweep_tick(uv_timer_t *t)
{
	SX_UNUSED(t);
	struct sweep s;
	struct sx_store *st = sx__pred_eng->store;
	if (pass_now < 0) {
		sx__pred_log_flush();
		pass_now = sx_wall_ms();
		sx__pred_pass_reset(&pass), pass_forecasts = 0;
		sx__pred_fc_sweep_reset();
		stats.last_visited = stats.last_folded = stats.last_open = stats.last_forecast_periods = 0;
	}
	uint64_t sp = sx_store_savepoint(st);
	int rc;
	if (!pass_forecasts) {
		rc = sweep_chunk(pass_now, SWEEP_CHUNK, &s);
		if (rc >= 0) {
			stats.last_visited += pass.visited, stats.last_folded += s.folded, stats.last_open += s.open;
			stats.folded_total += s.folded;
		}
		if (rc == 1)
			pass_forecasts = 1, rc = 0;
	} else {
		struct sx_pred_fc_sweep fs;
		rc = sx__pred_fc_sweep_chunk(pass_now, SWEEP_CHUNK, &fs);
		if (rc >= 0)
			stats.last_forecast_periods += fs.periods, stats.forecast_periods_total += fs.periods;
	}
	if (rc < 0) {
		sx_store_rollback(st, sp);
		sx_log_error("predict: accuracy sweep: %s", sx_diag_last());
		pass_now = -1, sx__pred_pass_reset(&pass);
	} else if (rc == 1) {
		int fired = 0;
		evaluate_alerts(pass_now, &fired);
		if (sx__pred_fc_alerts_eval(pass_now, &fired) < 0)
			sx_log_error("predict: forecast alerts: %s", sx_diag_last());
		stats.passes++, stats.last_at = sx_wall_ms(), stats.last_now = pass_now;
		pass_now = -1;
	} else if (sweep_on) {
		/* more to do: the next chunk after this loop turn's I/O */
		uv_timer_start(&sweep_timer, sweep_tick, 1, (uint64_t)sx__pred_sweep_ms);
	}
	sx_store_read_end(st);
}

void sx__pred_sweep_rearm(void)
{
	if (!sweep_on)
		return;
	uv_timer_stop(&sweep_timer);
	if (sx__pred_sweep_ms > 0)
		uv_timer_start(&sweep_timer, sweep_tick, (uint64_t)sx__pred_sweep_ms, (uint64_t)sx__pred_sweep_ms);
}

/* ---- reading the state ---- */

struct segacc {
	char seg[SX_PRED_SEG_MAX + 1];
	struct sx_pred_acc a;
};

struct readq {
	const char *target;
	int32_t from, to; /* close days, inclusive */
	const char *only; /* NULL: every segment */
	struct segacc *s;
	int n, max;
	int rc;
};

static int read_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct readq *q = ud;
	const uint8_t *k = key->data;
	size_t tl = strlen(q->target);
	if (key->len < tl + 7)
		return 0;
	const char *seg = (const char *)k + 2 + tl;
	size_t sl = key->len - tl - 7;
	if (memchr(seg, 0, sl) || seg[sl] != 0)
		return 0;
	int32_t day = (int32_t)sx_get_be32(k + key->len - 4);
	if (day < q->from || day > q->to)
		return 0;
	if (q->only && (strlen(q->only) != sl || memcmp(q->only, seg, sl) != 0))
		return 0;
	struct sx_pred_acc a;
	if (sx__pred_acc_decode(&a, val->data, val->len) < 0)
		return 0;
	int i;
	for (i = 0; i < q->n; i++)
		if (strlen(q->s[i].seg) == sl && memcmp(q->s[i].seg, seg, sl) == 0)
			break;
	if (i == q->n) {
		if (q->n == q->max || sl > SX_PRED_SEG_MAX)
			return 0;
		memset(&q->s[i], 0, sizeof(q->s[i]));
		memcpy(q->s[i].seg, seg, sl);
		q->s[i].seg[sl] = 0;
		q->n++;
	}
	sx__pred_acc_merge(&q->s[i].a, &a);
	return 0;
}

static int read_state(struct readq *q)
{
	q->n = 0;
	return sx__pred_name_scan('A', q->target, read_cb, q);
}

static int rule_get(const char *target, struct sx_pred_rule *r)
{
	uint8_t k[SX_PRED_NAME_KEY];
	struct sx_val v;
	int rc = sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, sx__pred_name_key(k, 'R', target), &v);
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	int64_t w = 30, b = 90;
	msgpack_zone_init(&z, 512);
	r->auc_below = 0, r->min_samples = 100, r->drop = 0;
	if (msgpack_unpack(v.data, v.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
	    sx_arg_num(&o, "auc_below", 0, &r->auc_below) < 0 || sx_arg_int(&o, "min_samples", 0, &r->min_samples) < 0 ||
	    sx_arg_num(&o, "drop", 0, &r->drop) < 0 || sx_arg_int(&o, "window", 0, &w) < 0 ||
	    sx_arg_int(&o, "baseline", 0, &b) < 0)
		rc = sx_diag_set(SX_ECORRUPT, "a stored alert rule does not decode");
	r->window = (int)w, r->baseline = (int)b;
	msgpack_zone_destroy(&z);
	return rc;
}

static const char *const rule_names[3] = {"", "auc_below", "drop"};
static const struct sx_pred_alert_kind alert_kind = {'S', "predict.accuracy", "target", rule_names};

/* Checks the rule of every target at `now` (segment "all"); a state change
 * is stored and published on "alerts". A window with fewer than min_samples
 * keeps the state it had. */
static int evaluate_alerts(int64_t now, int *fired)
{
	struct segacc cur, base;
	for (int i = 0; i < sx__pred_script.ntarget; i++) {
		const struct sx_pred_target *t = &sx__pred_script.target[i];
		struct sx_pred_rule r;
		if (rule_get(t->name, &r) < 0 || (r.auc_below <= 0 && r.drop <= 0))
			continue;
		int32_t d = sx__pred_day_of(now);
		struct readq q = {t->name, d - r.window + 1, d, "all", &cur, 0, 1, 0};
		if (read_state(&q) < 0)
			continue;
		if (!q.n)
			memset(&cur, 0, sizeof(cur));
		struct readq qb = {t->name, d - r.window - r.baseline + 1, d - r.window, "all", &base, 0, 1, 0};
		if (read_state(&qb) < 0)
			continue;
		if (!qb.n)
			memset(&base, 0, sizeof(base));
		double value, threshold, baseline;
		int which = sx__pred_rule_check(&r, &cur.a, &base.a, &value, &threshold, &baseline);
		if (which < 0)
			continue;
		uint64_t n, pos;
		sx__pred_acc_totals(&cur.a, &n, &pos, NULL);
		int rc = sx__pred_alert_update(&alert_kind, t->name, which, value, threshold, baseline, n, now, fired);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- methods ---- */

static int target_arg(const msgpack_object *args, const struct sx_pred_target **t)
{
	const msgpack_object *o = sx_arg(args, "target") ? sx_arg(args, "target") : sx_arg(args, "model");
	if (!o)
		return sx_diag_set(SX_EINVAL, "argument 'target' (or 'model') is required");
	if (o->type != MSGPACK_OBJECT_STR)
		return sx_diag_set(SX_EINVAL, "argument 'target' must be a string");
	const char *s = o->via.str.ptr;
	size_t n = o->via.str.size;
	if (n > 8 && memcmp(s, "predict.", 8) == 0)
		s += 8, n -= 8;
	if (!sx__pred_script.loaded)
		return sx_diag_set(SX_ESTATE, "no features lib: add scripts/lib/features.lua");
	if (!(*t = sx__pred_target_find(s, n)))
		return sx_diag_set(SX_ENOENT, "no target '%.*s'", n > 64 ? 64 : (int)n, s);
	return 0;
}

int sx__pred_accuracy_pack(const msgpack_object *args, msgpack_packer *pk)
{
	static const char *const known[] = {"target", "model", "window", "bins", "segment", "at", NULL};
	const struct sx_pred_target *t;
	char segment[SX_PRED_SEG_MAX + 1] = "all";
	double window = 30;
	int64_t bins = 10, at = sx_wall_ms();
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_num(args, "window", 0, &window)) < 0 ||
	    (rc = sx_arg_int(args, "bins", 0, &bins)) < 0 || (rc = sx_arg_int(args, "at", 0, &at)) < 0)
		return rc;
	if ((rc = sx_arg_cstr(args, "segment", 0, segment, sizeof(segment))) < 0)
		return sx_diag_set(SX_EINVAL, "argument 'segment' must be a string of 1 to %d bytes", SX_PRED_SEG_MAX);
	if (!segment[0])
		return sx_diag_set(SX_EINVAL, "argument 'segment' must be a string of 1 to %d bytes", SX_PRED_SEG_MAX);
	if (!(window >= 1 && window <= 3650) || window != floor(window))
		return sx_diag_set(SX_EINVAL, "argument 'window' (days) must be an integer 1 to 3650");
	if (bins < 1 || bins > SX_PRED_ACC_BINS || SX_PRED_ACC_BINS % bins != 0)
		return sx_diag_set(SX_EINVAL, "argument 'bins' must divide %d (1, 2, 4, 5, 10, 20, 25, 50, 100)", SX_PRED_ACC_BINS);
	if (at < 0 || at > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'at' must be ms since 1970");
	if ((rc = target_arg(args, &t)) < 0)
		return rc;
	struct segacc *segs = calloc(QUERY_SEGS_MAX, sizeof(*segs));
	if (!segs)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int32_t d = sx__pred_day_of(at);
	struct readq q = {t->name, d - (int32_t)window + 1, d, NULL, segs, 0, QUERY_SEGS_MAX, 0};
	if ((rc = read_state(&q)) < 0) {
		free(segs);
		return rc;
	}
	struct sx_pred_acc zero, *a = &zero;
	memset(&zero, 0, sizeof(zero));
	for (int i = 0; i < q.n; i++)
		if (strcmp(segs[i].seg, segment) == 0)
			a = &segs[i].a;
	uint64_t n, pos;
	double sump;
	sx__pred_acc_totals(a, &n, &pos, &sump);
	double mp[SX_PRED_ACC_BINS], ob[SX_PRED_ACC_BINS];
	uint64_t cnt[SX_PRED_ACC_BINS];
	sx__pred_acc_calibration(a, (int)bins, mp, ob, cnt);
	struct sx_pred_rule r;
	struct sx_pred_alert_state as;
	int has_rule = rule_get(t->name, &r) == 0 && (r.auc_below > 0 || r.drop > 0);
	if (has_rule) {
		int src = sx__pred_state_get('S', t->name, &as);
		if (src < 0 && src != SX_ENOENT)
			has_rule = 0;
	}
	msgpack_pack_map(pk, 15);
	sx_pack_kv_str(pk, "target", t->name);
	sx_pack_kv_str(pk, "segment", segment);
	sx_pack_kv_int(pk, "window", (int64_t)window);
	sx_pack_kv_int(pk, "at", at);
	sx_pack_kv_uint(pk, "samples", n);
	sx_pack_kv_uint(pk, "positives", pos);
	sx__pred_kv_num(pk, "base_rate", n ? (double)pos / (double)n : NAN);
	sx__pred_kv_num(pk, "mean_predicted", n ? sump / (double)n : NAN);
	sx__pred_kv_num(pk, "auc", sx__pred_acc_auc(a));
	sx__pred_kv_num(pk, "log_loss", n ? a->ll / (double)n : NAN);
	sx__pred_kv_num(pk, "brier", n ? a->brier / (double)n : NAN);
	sx__pred_kv_num(pk, "lift_top_decile", sx__pred_acc_lift(a, 0.1));
	sx_pack_key(pk, "calibration");
	msgpack_pack_array(pk, (size_t)bins);
	for (int64_t b = 0; b < bins; b++) {
		msgpack_pack_map(pk, 5);
		sx_pack_kv_double(pk, "lo", (double)b / (double)bins);
		sx_pack_kv_double(pk, "hi", (double)(b + 1) / (double)bins);
		sx_pack_kv_uint(pk, "count", cnt[b]);
		sx__pred_kv_num(pk, "mean_predicted", mp[b]);
		sx__pred_kv_num(pk, "observed", ob[b]);
	}
	sx_pack_key(pk, "segments");
	msgpack_pack_array(pk, (size_t)q.n);
	for (int i = 0; i < q.n; i++) {
		uint64_t sn, sp;
		sx__pred_acc_totals(&segs[i].a, &sn, &sp, NULL);
		msgpack_pack_map(pk, 4);
		sx_pack_kv_str(pk, "segment", segs[i].seg);
		sx_pack_kv_uint(pk, "samples", sn);
		sx_pack_kv_uint(pk, "positives", sp);
		sx__pred_kv_num(pk, "auc", sx__pred_acc_auc(&segs[i].a));
	}
	sx_pack_key(pk, "alert");
	if (has_rule)
		sx__pred_state_pack(pk, NULL, NULL, &as);
	else
		msgpack_pack_nil(pk);
	free(segs);
	return 0;
}

int sx__pred_alerts_pack(msgpack_packer *pk)
{
	struct sx_pred_alert_state a[SX_PRED_TARGETS_MAX];
	int idx[SX_PRED_TARGETS_MAX], n = 0;
	for (int i = 0; i < sx__pred_script.ntarget; i++) {
		int rc = sx__pred_state_get('S', sx__pred_script.target[i].name, &a[n]);
		if (rc == 0)
			idx[n++] = i;
		else if (rc != SX_ENOENT)
			return rc;
	}
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < n; i++)
		sx__pred_state_pack(pk, "target", sx__pred_script.target[idx[i]].name, &a[i]);
	return 0;
}

static int m_accuracy(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(req), SX_UNUSED(ud);
	return sx__pred_accuracy_pack(args, pk);
}

/* The stored rule, or with `target` (not NULL) the reply to predict.alerts. */
static void pack_rule(msgpack_packer *pk, const char *target, const struct sx_pred_rule *r)
{
	msgpack_pack_map(pk, 5 + (target != NULL));
	if (target)
		sx_pack_kv_str(pk, "target", target);
	sx_pack_kv_double(pk, "auc_below", r->auc_below);
	sx_pack_kv_int(pk, "min_samples", r->min_samples);
	sx_pack_kv_double(pk, "drop", r->drop);
	sx_pack_kv_int(pk, "window", r->window);
	sx_pack_kv_int(pk, "baseline", r->baseline);
}

static int m_alerts(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"target", "model", "auc_below", "min_samples", "drop", "window", "baseline", NULL};
	const struct sx_pred_target *t;
	struct sx_pred_rule r = {0, 100, 0, 30, 90};
	int64_t w, b;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = target_arg(args, &t)) < 0)
		return rc;
	if ((rc = rule_get(t->name, &r)) < 0 && rc != SX_ENOENT)
		return rc;
	w = r.window, b = r.baseline;
	if ((rc = sx_arg_num(args, "auc_below", 0, &r.auc_below)) < 0 ||
	    (rc = sx_arg_int(args, "min_samples", 0, &r.min_samples)) < 0 || (rc = sx_arg_num(args, "drop", 0, &r.drop)) < 0 ||
	    (rc = sx_arg_int(args, "window", 0, &w)) < 0 || (rc = sx_arg_int(args, "baseline", 0, &b)) < 0)
		return rc;
	if (!(r.auc_below >= 0 && r.auc_below <= 1))
		return sx_diag_set(SX_EINVAL, "argument 'auc_below' must be 0 (off) to 1");
	if (!(r.drop >= 0 && r.drop <= 1))
		return sx_diag_set(SX_EINVAL, "argument 'drop' must be 0 (off) to 1");
	if ((rc = sx__pred_rule_window_check(r.min_samples, w, b)) < 0)
		return rc;
	r.window = (int)w, r.baseline = (int)b;
	msgpack_sbuffer sb;
	msgpack_packer p;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
	pack_rule(&p, NULL, &r);
	if ((rc = sx__pred_name_put('R', t->name, &sb)) < 0)
		return rc;
	pack_rule(pk, t->name, &r);
	return 0;
}

static int m_alert_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {NULL};
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	return sx__pred_alerts_pack(pk);
}

/* predict.sweep {now?, limit?}: one whole pass now, bounded by limit (for
 * each of the two logs). Without a features lib only forecasts. */
static int m_sweep(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"now", "limit", NULL};
	int64_t now = sx_wall_ms(), limit = 100000;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "now", 0, &now)) < 0 ||
	    (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (now < 0 || now > SX_EVENTS_TIME_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'now' must be ms since 1970");
	if (limit < 1 || limit > SWEEP_LIMIT_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to %d", SWEEP_LIMIT_MAX);
	sx__pred_log_flush();
	/* a pass of its own: the timer's pass in progress starts over */
	pass_now = -1, sx__pred_pass_reset(&pass);
	sx__pred_fc_sweep_reset();
	struct sweep s;
	struct sx_pred_fc_sweep fs;
	if ((rc = sweep_chunk(now, (size_t)limit, &s)) < 0)
		return rc;
	int fired = 0, done = rc == 1;
	if ((rc = sx__pred_fc_sweep_chunk(now, (size_t)limit, &fs)) < 0)
		return rc;
	int fdone = rc == 1;
	if (done && (rc = evaluate_alerts(now, &fired)) < 0)
		return rc;
	if (fdone && (rc = sx__pred_fc_alerts_eval(now, &fired)) < 0)
		return rc;
	if (!done)
		sx__pred_pass_reset(&pass);
	sx__pred_fc_sweep_reset();
	msgpack_pack_map(pk, 8);
	sx_pack_kv_int(pk, "now", now);
	sx_pack_kv_uint(pk, "visited", pass.visited);
	sx_pack_kv_uint(pk, "folded", s.folded);
	sx_pack_kv_uint(pk, "open", s.open);
	sx_pack_kv_uint(pk, "dropped", s.dropped);
	sx_pack_kv_bool(pk, "done", done && fdone);
	sx_pack_kv_int(pk, "alerts_fired", fired);
	sx_pack_key(pk, "forecasts");
	msgpack_pack_map(pk, 6);
	sx_pack_kv_uint(pk, "visited", fs.visited);
	sx_pack_kv_uint(pk, "periods", fs.periods);
	sx_pack_kv_uint(pk, "skipped", fs.skipped);
	sx_pack_kv_uint(pk, "finished", fs.finished);
	sx_pack_kv_uint(pk, "dropped", fs.dropped);
	sx_pack_kv_bool(pk, "done", fdone);
	return 0;
}

static const sx_method_fn m_alerts_fn = m_alerts, m_sweep_fn = m_sweep;

int sx__pred_accuracy_start(struct sx_engine *e)
{
	nsegregs = 0, pass_now = -1, sx__pred_pass_reset(&pass), pass_forecasts = 0;
	memset(&stats, 0, sizeof(stats));
	const struct sx_method methods[] = {
		{"predict.accuracy", SX_ROLE_READER, m_accuracy, NULL,
		 "rolling accuracy of served predictions {target, window?, segment?, bins?, at?}"},
		{"predict.alerts", SX_ROLE_WRITER, sx__pred_audited, (void *)&m_alerts_fn,
		 "accuracy alert rule {target, auc_below?, drop?, window?, baseline?, min_samples?}"},
		{"predict.alert_list", SX_ROLE_READER, m_alert_list, NULL, "the alert state of every target with one"},
		{"predict.sweep", SX_ROLE_ADMIN, sx__pred_audited, (void *)&m_sweep_fn,
		 "join closed label windows now {now?, limit?}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	uv_timer_init(e->loop, &sweep_timer);
	uv_unref((uv_handle_t *)&sweep_timer);
	sweep_on = 1;
	sx__pred_sweep_rearm();
	return 0;
}

void sx__pred_sweep_info(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 10);
	sx_pack_kv_int(pk, "interval_ms", sx__pred_sweep_ms);
	sx_pack_kv_uint(pk, "passes", stats.passes);
	sx_pack_kv_uint(pk, "folded_total", stats.folded_total);
	sx_pack_kv_int(pk, "last_at", stats.last_at);
	sx_pack_kv_int(pk, "last_now", stats.last_now);
	sx_pack_kv_uint(pk, "last_visited", stats.last_visited);
	sx_pack_kv_uint(pk, "last_folded", stats.last_folded);
	sx_pack_kv_uint(pk, "last_open", stats.last_open);
	sx_pack_kv_uint(pk, "forecast_periods_total", stats.forecast_periods_total);
	sx_pack_kv_uint(pk, "last_forecast_periods", stats.last_forecast_periods);
}

void sx__pred_accuracy_stop(void)
{
	if (sweep_on) {
		uv_timer_stop(&sweep_timer);
		uv_close((uv_handle_t *)&sweep_timer, NULL);
		sweep_on = 0;
	}
}
