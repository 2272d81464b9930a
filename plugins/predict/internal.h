/* internal.h — the predict plugin's shared state, summaries and helpers.
 * Not an API: other plugins use predict.h.
 *
 * Store layout (integers big-endian):
 *   series         'T' target                   -> {version, job, cutoff, trained_at, rows, positives}
 *                  'L' u64 time | u32 user | target
 *                                               -> f64 probability, u8 band (9 bytes; 8 in older
 *                                                  stores): the prediction log, until joined
 *                  'A' target \0 segment \0 u32 day
 *                                               -> histogram (sx__pred_acc_encode) of the
 *                                                  predictions whose label window closed that day
 *                  'G' target                   -> [segment]: attribute segments seen (capped)
 *                  'R' target                   -> {auc_below, min_samples, drop, window, baseline}
 *                  'S' target                   -> {state, rule, value, threshold, baseline,
 *                                                  samples, since, at}: alert state
 *                  'C'                          -> {sample, sweep_ms, segment_attribute}
 *                  'F' u64 close | u64 run | key
 *                                               -> a logged forecast (fcaccuracy.c) under the
 *                                                  close time of its next period to join
 *                  'N'                          -> u64 last forecast run id
 *                  'E' recipe \0 u32 day        -> forecast error sums (sx__pred_ferr_encode)
 *                                                  of the periods that closed that day
 *                  'K' recipe \0 key \0 u32 day -> the same per series key
 *                  'k' recipe                   -> u32 keys tracked; 'k' recipe \0 key -> ""
 *                  'P' recipe                   -> forecast alert rule
 *                  'Q' recipe                   -> forecast alert state
 *   notifications  'n' u64 id                   -> {id, user, rule, message, content, created, state}
 *                  'q' u64 id                   -> "" (pending, in id order)
 *                  'c' u32 user                 -> [times]: sends, newest last (frequency cap)
 *                  'h' rule \0 u32 user         -> u64 time: holdout members (for uplift)
 *                  'i'                          -> u64 last id
 */
#ifndef SX_PREDICT_INTERNAL_H
#define SX_PREDICT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <msgpack.h>

#include "plugins/events/events.h"
#include "store/store.h"

struct sx_engine;
extern struct sx_engine *sx__pred_eng;

#define SX_PRED_DAY_MS 86400000LL
#define SX_PRED_KEEP_DAYS 120   /* day buckets kept behind a summary's newest day */
#define SX_PRED_FEATURES_MAX 64
#define SX_PRED_TARGETS_MAX 16
#define SX_PRED_NAME_MAX 48     /* feature, target and rule names */
#define SX_PRED_WINDOWS 3       /* 7, 30 and 90 days */

extern const int sx__pred_windows[SX_PRED_WINDOWS];

static inline int32_t sx__pred_day_of(int64_t ms) { return (int32_t)(ms / SX_PRED_DAY_MS); }

/* What the summary counts, from the features lib (defaults in brackets). */
struct sx_pred_conf {
	char search[SX_EVENTS_ID_MAX + 1];   /* ["search"] */
	char trip[SX_EVENTS_ID_MAX + 1];     /* ["create_trip"] */
	char booking[SX_EVENTS_ID_MAX + 1];  /* ["book"] */
	char spend_event[SX_EVENTS_ID_MAX + 1]; /* ["book"] */
	char spend_prop[SX_EVENTS_ID_MAX + 1];  /* ["value"] */
	int64_t session_gap_ms;              /* [30 min] */
};
void sx__pred_conf_default(struct sx_pred_conf *c);

struct sx_pred_day {
	int32_t day; /* days since 1970 */
	uint16_t events, sessions, searches, trips, bookings;
	float spend;
};

/* A user's running summary: totals since the first event, plus day buckets
 * for the windows. */
struct sx_pred_sum {
	int64_t first, last, signup; /* -1: none */
	uint64_t events, sessions, searches, trips, bookings;
	double spend;
	uint32_t nd, cap;
	struct sx_pred_day *d; /* ascending days, the last SX_PRED_KEEP_DAYS before the newest */
};

void sx__pred_sum_init(struct sx_pred_sum *s);
void sx__pred_sum_free(struct sx_pred_sum *s);
/* Adds one event; props (MessagePack map or NULL) for the spend. 0 or SX_ENOMEM. */
int sx__pred_sum_add(struct sx_pred_sum *s, const struct sx_pred_conf *c, const char *name,
		     size_t nlen, int64_t time, const void *props, size_t plen);

/* The summary as seen at time `at`: windows are the W UTC days ending with
 * at's day; counts over days after at's day are left out. */
struct sx_pred_view {
	double days_since_signup, days_since_first, days_since_last; /* NAN: unknown */
	double total[6];                   /* events sessions searches trips bookings spend */
	double win[SX_PRED_WINDOWS][6];
};
void sx__pred_sum_view(const struct sx_pred_sum *s, int64_t at, struct sx_pred_view *v);
extern const char *const sx__pred_counts[6];

/* Targets: label = some event named `event` ("*": any) at a time in
 * [cutoff, cutoff + days), negated when `absent`. Eligible rows: users with
 * an event before the cutoff. */
struct sx_pred_target {
	char name[SX_PRED_NAME_MAX + 1];
	char event[SX_EVENTS_ID_MAX + 1];
	int days;
	int absent;
};
struct sx_pred_label {
	const struct sx_pred_target *t;
	int hit;
};
/* An sx_events_cb over the events after the cutoff. */
int sx__pred_label_cb(const struct sx_event *ev, void *ud);
static inline int sx__pred_label_value(const struct sx_pred_label *l) { return l->t->absent ? !l->hit : l->hit; }

/* 1 if (rule, user) falls in the holdout share (0..1): a hash, so the same
 * user stays in or out of a rule's holdout. */
int sx__pred_holdout(const char *rule, const char *user, size_t ulen, double share);
/* 1 if fewer than `max` of the n send times are within per_ms before now. */
int sx__pred_cap_ok(const int64_t *times, size_t n, int64_t now, int max, int64_t per_ms);
/* Risk band of p for thresholds medium <= high: "low", "medium", "high". */
const char *sx__pred_band(double p, double medium, double high);

/* ---- the features lib (predict.c) ---- */
struct sx_pred_script {
	int loaded;
	int nfeat;
	char feat[SX_PRED_FEATURES_MAX][SX_PRED_NAME_MAX + 1]; /* sorted */
	int ntarget;
	struct sx_pred_target target[SX_PRED_TARGETS_MAX];
	double band_medium, band_high;
	struct sx_pred_conf conf;
};
extern struct sx_pred_script sx__pred_script;

/* The summary of user idx now (cached, built from the store on first use). */
const struct sx_pred_sum *sx__pred_user_sum(uint32_t idx, int *rc);
/* The features of a summary viewed at `at` into out[nfeat] (loop thread, Lua). */
int sx__pred_features(const struct sx_pred_sum *s, int64_t at, double *out);
/* P(target) for user idx now; contributions optional (d = nfeat values,
 * in the script's feature order). SX_ENOENT without a model. */
struct sx_model;
int sx__pred_score(uint32_t idx, const char *user, size_t ulen, const struct sx_pred_target *t,
		   const double *x, double *p, double *contrib, double *intercept, struct sx_model **mout);
const struct sx_pred_target *sx__pred_target_find(const char *name, size_t len);
/* Set while sweeping many users: scores are not logged as served. */
extern int sx__pred_quiet;
/* Pushes the summary view as a Lua table. */
void sx__pred_push_view(lua_State *L, const struct sx_pred_view *v);

/* An sx_method_fn recording each success of the handler *(sx_method_fn *)ud
 * in the audit log (action = method name, detail = its arguments). */
struct sx_req;
int sx__pred_audited(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud);

/* Flushes the in-memory prediction log into the store's filling batch. */
void sx__pred_log_flush(void);
/* Scores of every user with an event for target t now (not logged), cached
 * for a minute per target and model version: *scores stays valid until the
 * next call. SX_ESTATE without a model. */
int sx__pred_scores(const struct sx_pred_target *t, const double **scores, size_t *n, uint32_t *version);

/* ---- accuracy.c ----
 * Histograms of served predictions by label: SX_PRED_ACC_BINS bins of width
 * 1/SX_PRED_ACC_BINS over [0, 1] (bin floor(p * 100), p = 1 in the last).
 * AUC from them counts a positive and a negative in the same bin as half a
 * correctly ordered pair: it is the exact AUC of the scores rounded down to
 * the bin, and differs from the AUC of the raw scores only by the ordering
 * of pairs inside one bin. */
#define SX_PRED_ACC_BINS 100
#define SX_PRED_ACC_BYTES (2 + SX_PRED_ACC_BINS * 24 + 16)
#define SX_PRED_SEG_MAX 100 /* bytes of a segment name */
struct sx_pred_acc {
	uint64_t pos[SX_PRED_ACC_BINS], neg[SX_PRED_ACC_BINS];
	double sump[SX_PRED_ACC_BINS]; /* sum of the probabilities in the bin */
	double ll, brier;              /* sums of log loss and squared error */
};
int sx__pred_acc_bin(double p);
void sx__pred_acc_add(struct sx_pred_acc *a, double p, int y);
void sx__pred_acc_merge(struct sx_pred_acc *a, const struct sx_pred_acc *b);
void sx__pred_acc_totals(const struct sx_pred_acc *a, uint64_t *n, uint64_t *pos, double *sump);
/* NAN unless both labels occur. */
double sx__pred_acc_auc(const struct sx_pred_acc *a);
/* Positive rate of the top `share` by score over the base rate; the bin at
 * the cut is taken in proportion. NAN without positives or share * n < 1. */
double sx__pred_acc_lift(const struct sx_pred_acc *a, double share);
/* bins divides SX_PRED_ACC_BINS; mp/ob NAN for an empty bin. */
void sx__pred_acc_calibration(const struct sx_pred_acc *a, int bins, double *mp, double *ob, uint64_t *cnt);
void sx__pred_acc_encode(const struct sx_pred_acc *a, uint8_t *out); /* SX_PRED_ACC_BYTES */
int sx__pred_acc_decode(struct sx_pred_acc *a, const void *buf, size_t len); /* 0 or SX_ECORRUPT */

struct sx_pred_rule {
	double auc_below;    /* 0: off */
	int64_t min_samples; /* in the window (and in the baseline, for drop) */
	double drop;         /* 0: off; fires when baseline AUC - AUC > drop */
	int window, baseline; /* days: the window ends at the check; the baseline precedes it */
};
/* -1: not enough samples (state unchanged), 0: ok, 1: AUC below auc_below,
 * 2: dropped more than `drop` below the baseline. *value: AUC of cur;
 * *threshold: the bound crossed; *baseline: AUC of base (NAN if unknown). */
int sx__pred_rule_check(const struct sx_pred_rule *r, const struct sx_pred_acc *cur, const struct sx_pred_acc *base,
			double *value, double *threshold, double *baseline);

extern int64_t sx__pred_sweep_ms;                   /* 0: no timer */
extern char sx__pred_seg_attr[SX_PRED_NAME_MAX + 1]; /* "": no attribute segments */
int sx__pred_accuracy_start(struct sx_engine *e);
void sx__pred_accuracy_stop(void);
/* After sx__pred_sweep_ms changed. */
void sx__pred_sweep_rearm(void);
/* {interval_ms, passes, folded_total, last_at, last_now, last_visited,
 * last_folded, last_open, forecast_periods_total, last_forecast_periods}: the
 * timer's passes (not predict.sweep calls). */
void sx__pred_sweep_info(msgpack_packer *pk);
/* predict.accuracy's result for its argument map. */
int sx__pred_accuracy_pack(const msgpack_object *args, msgpack_packer *pk);
/* [{target, state, rule, value, threshold, baseline, samples, since, at}]. */
int sx__pred_alerts_pack(msgpack_packer *pk);

/* ---- fcaccuracy.c: error of served forecasts ----
 * Sums over the forecast periods joined with their actuals. APE skips zero
 * actuals (n_ape counts the others); sAPE of a = f = 0 is 0. Percentages
 * (MAPE, sMAPE) are in percent, like sx_ets_backtest. */
struct sx_pred_ferr {
	uint64_t n, n_ape, covered;     /* periods; with a nonzero actual; actual in [lo, hi] */
	double ae, ape, sape, se, bias; /* sums of |a - f|, |a - f| / |a|, 2|a - f| / (|a| + |f|),
					 * (a - f)^2 and f - a */
};
#define SX_PRED_FERR_BYTES (2 + 3 * 8 + 5 * 8)
void sx__pred_ferr_add(struct sx_pred_ferr *e, double actual, double mean, double lo, double hi);
void sx__pred_ferr_merge(struct sx_pred_ferr *a, const struct sx_pred_ferr *b);
/* NAN where undefined: everything for n = 0, mape for n_ape = 0. */
struct sx_pred_ferr_stats {
	double mape, smape, mae, rmse, bias, coverage;
};
void sx__pred_ferr_stats(const struct sx_pred_ferr *e, struct sx_pred_ferr_stats *s);
void sx__pred_ferr_encode(const struct sx_pred_ferr *e, uint8_t *out); /* SX_PRED_FERR_BYTES */
int sx__pred_ferr_decode(struct sx_pred_ferr *e, const void *buf, size_t len); /* 0 or SX_ECORRUPT */

struct sx_pred_frule {
	double mape_above;     /* percent; 0: off */
	double rise;           /* percentage points of MAPE over the baseline's; 0: off */
	double coverage_below; /* 0: off */
	int64_t min_samples;   /* periods in the window (and in the baseline, for rise) */
	int window, baseline;  /* days: the window ends at the check; the baseline precedes it */
};
/* -1: not enough samples (state unchanged), 0: ok, 1: MAPE above mape_above,
 * 2: MAPE rose more than `rise` over the baseline's, 3: coverage below
 * coverage_below. *value: the metric of the rule that fired (MAPE when ok);
 * *threshold: the bound crossed; *baseline: the baseline's MAPE (NAN if
 * unknown). */
int sx__pred_frule_check(const struct sx_pred_frule *r, const struct sx_pred_ferr *cur,
			 const struct sx_pred_ferr *base, double *value, double *threshold, double *baseline);

/* Where the actuals of a recipe's forecasts come from: the events plugin's
 * metrics of `event`, the series key as the value of dimension `group_by`
 * ("" = the event's total), `field` of the period's total. */
#define SX_PRED_FKEY_MAX 200 /* bytes of a series key that is logged */
struct sx_pred_fspec {
	char event[SX_EVENTS_ID_MAX + 1];
	char group_by[SX_EVENTS_ID_MAX + 1];
	char field[8];  /* count | sum | users | avg */
	int64_t period; /* ms: minute, hour, day or week */
	int64_t origin; /* start of the first forecast period */
};
/* Reads the recipe's resolved `actual` table; origin defaults to now rounded
 * down to the period. SX_EINVAL with the reason. */
int sx__pred_fspec_parse(const msgpack_object *o, int64_t now, struct sx_pred_fspec *sp);
/* Next forecast run id (stored). */
uint64_t sx__pred_fc_next_run(void);
/* Logs one series of a served forecast (h periods). 0, SX_E2BIG for a key that
 * is not logged (over SX_PRED_FKEY_MAX bytes or holding NUL), or a store error. */
int sx__pred_fc_log(const char *recipe, const struct sx_pred_fspec *sp, uint64_t run, const char *key,
		    const char *model, double level, const double *mean, const double *lo, const double *hi, int h);

struct sx_pred_fc_sweep {
	size_t visited;                    /* log entries */
	uint64_t periods, skipped, finished, dropped; /* folded; without an actual (avg of nothing);
						       * entries done; entries whose actual cannot be read */
	int stopped;
};
/* One chunk of the forecast pass at `now` (entries from the cursor): 1 when
 * the pass is complete, 0 when more remains, or an error (the caller rolls
 * back). */
int sx__pred_fc_sweep_chunk(int64_t now, size_t limit, struct sx_pred_fc_sweep *s);
void sx__pred_fc_sweep_reset(void);
/* Checks every forecast alert rule at `now`; publishes changes on "alerts". */
int sx__pred_fc_alerts_eval(int64_t now, int *fired);
/* forecast.accuracy's result for its argument map. */
int sx__pred_fc_accuracy_pack(const msgpack_object *args, msgpack_packer *pk);
/* [{recipe, state, rule, value, threshold, baseline, samples, since, at}]. */
int sx__pred_fc_alerts_pack(msgpack_packer *pk);
int sx__pred_fc_start(struct sx_engine *e);
/* forecast.c: 1 if recipe `name` declares `actual`, 0 if not, SX_ENOENT if
 * there is no such recipe. */
int sx__pred_recipe_tracked(const char *name);

/* ---- lua.c ---- */
void sx__pred_lua_close(void);

/* ---- forecast.c, notify.c ---- */
int sx__pred_forecast_start(struct sx_engine *e);
int sx__pred_notify_start(struct sx_engine *e);
void sx__pred_notify_stop(void);
/* The notification rule's suggested action for user idx (features x), or NULL. */
const char *sx__pred_suggest(uint32_t idx, const char *user, size_t ulen, const double *x,
			     const double *probs, char *buf, size_t size);
/* allowed(user, purpose name): sx_privacy_allowed (0 for an unknown purpose). */
int sx__pred_allowed(const char *user, size_t ulen, const char *purpose);

/* ---- privacy.c ---- */
/* Drops the cached summary and the unflushed prediction logs of user idx. */
void sx__pred_forget(uint32_t idx);
/* Registers the eraser and exporter "predict". */
int sx__pred_privacy_start(void);

/* ---- state.c ---- */

/* SX_T_SERIES keys of one byte `tag` + a target or recipe name (k holds
 * SX_PRED_NAME_KEY bytes); returns the key's length. */
#define SX_PRED_NAME_KEY (1 + SX_EVENTS_ID_MAX)
size_t sx__pred_name_key(uint8_t *k, char tag, const char *name);
/* Stores the record packed in sb under that key (in the request's batch) and
 * destroys sb. 0 or the store's error. */
int sx__pred_name_put(char tag, const char *name, msgpack_sbuffer *sb);
/* sx_store_scan over the SX_T_SERIES keys that start with tag + name + NUL. */
int sx__pred_name_scan(char tag, const char *name, sx_store_scan_cb cb, void *ud);
/* The checks every alert rule shares: min_samples 1..1e8, window and
 * baseline 1..3650 days. 0 or SX_EINVAL. */
int sx__pred_rule_window_check(int64_t min_samples, int64_t window, int64_t baseline);

/* An alert rule's state: stored under SX_T_SERIES key tag + name
 * ('S' target alerts, 'Q' forecast alerts). get fills the "ok" state when there
 * is none; pack writes `field = name` first when field is not NULL. */
struct sx_pred_alert_state {
	char state[16], rule[16];
	double value, threshold, baseline;
	int64_t since, at;
	uint64_t samples;
};
int sx__pred_state_get(char tag, const char *name, struct sx_pred_alert_state *a);
int sx__pred_state_put(char tag, const char *name, const struct sx_pred_alert_state *a);
void sx__pred_state_pack(msgpack_packer *pk, const char *field, const char *name, const struct sx_pred_alert_state *a);
/* A number, or nil for NaN. */
void sx__pred_kv_num(msgpack_packer *pk, const char *k, double v);

/* What tells the prediction and the forecast alerts apart. */
struct sx_pred_alert_kind {
	char tag;                 /* of the state's key */
	const char *type, *field; /* the published "type"; the key that names the target or recipe */
	const char *const *rules; /* rule names by check outcome, "" at 0 */
};
/* Applies the outcome `which` (>= 0) of a rule check at `now` to the alert
 * state of `name`: stores it unless the alert is and stays ok, and when the
 * alert fires or resolves publishes {type, state, field: name, rule, value,
 * threshold, baseline, samples, at} on "alerts" and counts a firing in
 * *fired. 0 (also when the stored state does not decode: it is left as it
 * is) or the store's error. */
int sx__pred_alert_update(const struct sx_pred_alert_kind *kind, const char *name, int which, double value,
			  double threshold, double baseline, uint64_t samples, int64_t now, int *fired);

/* ---- the accuracy sweep's machinery (sweep.c), shared by the prediction
 * and the forecast logs ---- */

/* A kind of sums kept per key of SX_T_SERIES: merged, encoded, decoded. */
struct sx_pred_sums_type {
	const char *what;  /* for the log */
	size_t size;       /* of the sums in memory, zeroed when new */
	size_t bytes;      /* encoded */
	void (*merge)(void *into, const void *from);
	void (*encode)(const void *sums, uint8_t *out);
	int (*decode)(void *sums, const void *buf, size_t len); /* 0 or SX_ECORRUPT */
};

#define SX_PRED_PASS_KEY_MAX 512 /* longer log keys are folded but cannot be resumed after */

/* One pass over a log (the SX_T_SERIES keys that start with `tag`) in chunks
 * of at most `limit` entries: `fold` is called per entry in key order (it may
 * delete or rewrite the entry; a negative return ends the chunk with that
 * error) and adds to sums gathered per key with sx__pred_pass_sums. */
struct sx_pred_pass {
	char tag;
	const struct sx_pred_sums_type *type;
	sx_store_scan_cb fold;
	void *ud;
	/* after a chunk: */
	size_t visited;
	int stopped;       /* the chunk ended at its limit */
	/* private */
	size_t limit;
	int rc;
	struct sx_pred_pend *pend;
	size_t npend, cappend;
	uint8_t cursor[SX_PRED_PASS_KEY_MAX], last[SX_PRED_PASS_KEY_MAX];
	size_t cursor_len, last_len;
};
/* The chunk of entries after the cursor with keys below `hi`: the sums it
 * gathered are merged into the stored ones and the cursor moves past it. 1
 * when the pass is complete (the next chunk starts a new pass), 0 when more
 * remains, or an error: nothing is written, the caller rolls back and the
 * cursor stays. */
int sx__pred_pass_chunk(struct sx_pred_pass *p, const uint8_t *hi, size_t hilen, size_t limit);
/* The sums of store key `k` in the chunk running, zeroed when new; NULL with
 * SX_ENOMEM set when out of memory. */
void *sx__pred_pass_sums(struct sx_pred_pass *p, const uint8_t *k, size_t klen);
/* The next chunk starts a new pass. */
static inline void sx__pred_pass_reset(struct sx_pred_pass *p) { p->cursor_len = 0; }

#endif
