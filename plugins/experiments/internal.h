/* internal.h — the experiments plugin's definitions, bucketing, targeting and
 * registry. Not an API: other plugins use experiments.h.
 *
 * Tables and keys:
 *   experiments 'd' key                      -> {key, version, state, created, updated, started_at,
 *                                                stopped_at, concluded_at, winner, reasons, rollout,
 *                                                script, lua_targeting}
 *               'v' key \0 u32 version       -> {definition, created, by, origin}
 *               'a' key \0 u64 time u32 seq  -> {when, who, what, key, version, detail?}
 *               'A' key                      -> the counters (counters.c)
 *               'T' key \0 u32 day           -> one UTC day's counters (counters.c)
 *   exposures   key \0 user id               -> [variant name, time, version, state?]
 *               (the first assignment: exposure log and sticky assignment at once;
 *               state: the user's metric state, bin, absent while empty)
 *   audit       the common log (core/audit.h), action "experiment.WHAT"; older data
 *               dirs also hold "experiment/" key \0 u64 time u32 seq, read by history
 * Integers big-endian. Counters are host-order doubles behind a 12-byte header
 * {u32 magic, u32 metric spec hash, u16 variants, u16 metrics}:
 *   A: other_users, then per (metric, variant) n, conversions, sum, sum of
 *      squares, covariate sum, its squares, cross products (n: mean metrics only;
 *      the other kinds have one unit per exposed user);
 *   T: exposures per variant that day, then per (metric, variant) first post-window
 *      conversions, the total of values and (mean metrics) the events with one.
 */
#ifndef SX_EXPERIMENTS_INTERNAL_H
#define SX_EXPERIMENTS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "core/math/abtest.h"

struct sx_engine;
struct sx_event;

#define XP_BUCKETS 10000
#define XP_KEY_MAX 64
#define XP_NAME_MAX 64
#define XP_VARIANTS_MAX 16
#define XP_METRICS_MAX 16
#define XP_COND_MAX 64           /* conditions in one targeting tree */
#define XP_COND_DEPTH 4
#define XP_PAYLOAD_MAX 16384     /* packed bytes of one variant's payload */
#define XP_DESC_MAX 4096
#define XP_WINDOW_MAX (366LL * 86400000LL)
#define XP_WINDOW_DEFAULT (7LL * 86400000LL)
#define XP_REASONS_MAX 8

enum { XP_DRAFT, XP_RUNNING, XP_PAUSED, XP_STOPPED, XP_CONCLUDED };
enum { XP_CONVERSION, XP_COUNT, XP_SUM, XP_MEAN };
enum { XP_PRIMARY, XP_SECONDARY, XP_GUARDRAIL };
enum { XP_RULE_NONE, XP_RULE_DEFAULT };

enum {
	XP_OP_EQ, XP_OP_NE, XP_OP_IN, XP_OP_NOT_IN, XP_OP_GT, XP_OP_GTE, XP_OP_LT, XP_OP_LTE,
	XP_OP_EXISTS, XP_OP_NOT_EXISTS, XP_OP_CONTAINS,
	XP_OP_ALL, XP_OP_ANY, XP_OP_NOT
};
/* Where a leaf condition reads its value. */
enum { XP_SCOPE_USER, XP_SCOPE_CONTEXT, XP_SCOPE_ID, XP_SCOPE_COHORT };

struct xp_cond {
	int op;
	int scope;
	const char *attr; /* without its "user." / "context." prefix */
	size_t alen;
	const msgpack_object *value; /* NULL for exists / not_exists */
	struct xp_cond *sub;         /* all / any / not */
	uint32_t nsub;
};

struct xp_variant {
	const char *name;
	size_t nlen;
	double weight; /* normalised: the weights sum to 1 */
	double given;  /* as defined */
	const msgpack_object *payload; /* NULL if none */
};

struct xp_metric {
	const char *name;
	size_t nlen;
	int kind;
	const char *event;
	size_t elen;
	const char *prop; /* sum / mean: the summed property ("value" by default) */
	size_t plen;
	int64_t window_ms;
	int decrease; /* a decrease is good */
	int role;
};

/* A parsed definition. Everything points into `zone`, which also owns the
 * canonical packed form `packed`. */
struct xp_def {
	msgpack_zone zone;
	char *packed;
	size_t packed_len;
	const char *key;
	size_t klen;
	const char *desc;
	size_t dlen;
	struct xp_variant v[XP_VARIANTS_MAX];
	int nv;
	double traffic, holdout;
	const char *layer; /* NULL: no layer */
	size_t llen;
	const char *salt;
	size_t slen;
	struct xp_cond *targeting; /* NULL: everyone */
	struct xp_metric m[XP_METRICS_MAX];
	int nm;
	int primary; /* index of the primary metric, -1 if none */
	int64_t min_sample, min_duration_ms;
	int rule;
	double alpha, tau; /* tau 0: chosen from the data */
	int auto_stop, rollout;
	int thompson;
};

/* Validates definition `o` (a map; key given separately when key != NULL:
 * the map's own `key`, if any, must then equal it) and builds its canonical
 * form. NULL and SX_EINVAL with a message naming the field. */
struct xp_def *sx__xp_def_parse(const msgpack_object *o, const char *key, size_t klen);
void sx__xp_def_free(struct xp_def *d);

/* Bucket 0..XP_BUCKETS-1 of (salt, user) for a purpose (seed): XXH3-64 of
 * salt "\0" user with that seed, reduced modulo XP_BUCKETS. */
enum { XP_SEED_TRAFFIC = 0, XP_SEED_VARIANT = 1, XP_SEED_HOLDOUT = 2, XP_SEED_LAYER = 3 };
uint32_t sx__xp_bucket(const char *salt, size_t slen, const char *user, size_t ulen, uint64_t seed);
/* The variant a bucket falls in for weights w[0..n) (summing to ~1). */
int sx__xp_pick(const double *w, int n, uint32_t bucket);
/* Which of the n > 0 running experiments of a layer (in key order) may
 * enrol user: the layer's bucket of the user split into n equal ranges. */
int sx__xp_layer_slot(const char *layer, size_t llen, const char *user, size_t ulen, int n);

/* Targeting. attrs and context are maps or NULL; cohort_fn answers cohort
 * membership (1/0, or < 0 on error) and may be NULL (then: not a member).
 * Returns 1 (targeted), 0 (not) or a negative error. */
typedef int (*xp_cohort_fn)(const char *name, size_t len, const char *user, size_t ulen, void *ud);
int sx__xp_target(const struct xp_cond *c, const char *user, size_t ulen, const msgpack_object *attrs,
		  const msgpack_object *context, xp_cohort_fn cohort_fn, void *ud);

const char *sx__xp_state_name(int state);
const char *sx__xp_kind_name(int kind);
const char *sx__xp_role_name(int role);

/* ---- registry (experiments.c) ---- */

struct xp {
	char key[XP_KEY_MAX + 1];
	size_t klen;
	uint32_t version;
	int state;
	struct xp_def *def;
	char script[XP_NAME_MAX + 1]; /* "" unless defined by script experiments/NAME */
	int lua_targeting;
	int64_t created, updated, started_at, stopped_at, concluded_at;
	int winner; /* variant index, -1 */
	char reasons[XP_REASONS_MAX][200];
	int nreasons;
	int rollout;
	/* live state, not stored */
	struct sx_abtest_msprt ms[XP_METRICS_MAX][XP_VARIANTS_MAX];
	int ms_ready;
	double alloc[XP_VARIANTS_MAX]; /* Thompson allocation; weights until data */
	int alloc_ready;
	uint32_t spec;      /* sx__xp_spec(def) */
	uint64_t exposures; /* new exposures since start (drives the monitor) */
	uint64_t exposures_seen;
	int subscribed;
	uint64_t pushed_hash;
	uint64_t last_eval_ms, eval_cost_ms;
};

extern struct sx_engine *sx__xp_eng;
struct xp *sx__xp_find(const char *key, size_t len);

/* ---- results (results.c) ---- */

struct xp_arm {
	double users;           /* exposed users of the variant */
	double n, conv;         /* units of the metric, units with an event */
	double sum, sumsq;      /* of the unit values */
	double sx, sxx, sxy;    /* pre-exposure covariate (CUPED) */
};

struct xp_arm_stats {
	int have_lift;
	struct sx_abtest_lift lift;
	double p_holm;
	double msprt_p, msprt_lo, msprt_hi;
	double prob_better, expected_loss;
	int have_cuped;
	double cuped_mean;
	struct sx_abtest_lift cuped;
};

struct xp_metric_stats {
	struct xp_arm arm[XP_VARIANTS_MAX];
	struct xp_arm_stats st[XP_VARIANTS_MAX];
	int have_chi2;
	struct sx_abtest_chi2 chi2;
	double cuped_theta;
};

struct xp_day {
	double users[XP_VARIANTS_MAX];
	double conv[XP_METRICS_MAX][XP_VARIANTS_MAX];
	double total[XP_METRICS_MAX][XP_VARIANTS_MAX];
	double nev[XP_METRICS_MAX][XP_VARIANTS_MAX];
};

struct xp_results {
	int64_t computed_at;
	double users[XP_VARIANTS_MAX];
	double other_users; /* exposures to variants that the current version no longer has */
	struct xp_metric_stats ms[XP_METRICS_MAX];
	int have_srm;
	struct sx_abtest_srm srm;
	/* decision */
	int winner;     /* -1: none yet */
	int stop;       /* guardrail harm or SRM */
	int ready;      /* min sample and duration reached */
	char reasons[XP_REASONS_MAX][200];
	int nreasons;
	/* timeline (with_timeline) */
	struct xp_day *days;
	int ndays;
	int64_t day0;
};

/* Fills *r from the counters, or with recompute set by scanning the
 * experiment's exposures and each exposed user's events (the reference the
 * counters must equal; O(exposures)). Caller frees r->days with free(). Loop
 * thread. Updates the experiment's sequential-test state (a look). */
int sx__xp_results(struct xp *x, int with_timeline, int recompute, struct xp_results *r);
void sx__xp_pack_results(struct xp *x, const struct xp_results *r, msgpack_packer *pk);
/* The report as CSV text into sb. */
void sx__xp_report_csv(struct xp *x, const struct xp_results *r, msgpack_sbuffer *sb);
void sx__xp_pack_timeline(struct xp *x, const struct xp_results *r, msgpack_packer *pk);
/* The report as an XLSX workbook (the dashboards plugin's table writer: one
 * sheet "data", the CSV report's rows under the union of its columns) into sb.
 * SX_EIO (temporary file), SX_ENOMEM. */
int sx__xp_report_xlsx(struct xp *x, const struct xp_results *r, msgpack_sbuffer *sb);

/* ---- counters (counters.c) ----
 * Per experiment, kept current as users are exposed, events arrive and users
 * are erased, so that results cost O(variants × metrics + days). Each call
 * writes through the store's filling batch (a rolled-back request takes its
 * counter updates with it). */

/* Hash of what the counters depend on: each metric's kind, event, property
 * and window, in order. A new version with another spec rebuilds. */
uint32_t sx__xp_spec(const struct xp_def *d);
/* Logs the first exposure of user to variant v at t0 (the sticky
 * assignment), folding in the user's events already stored. */
int sx__xp_expose(struct xp *x, const char *user, size_t ulen, int v, int64_t t0);
/* Removes user's exposure and its share of the counters; *found 0/1. */
int sx__xp_unexpose(struct xp *x, const char *user, size_t ulen, int *found);
/* The events plugin's track observer over the experiments xs[0..n). ev NULL
 * (the end of a call) writes the pending counter updates. */
void sx__xp_observe(struct xp **xs, size_t n, const struct sx_event *ev);
/* Recomputes x's counters and users' states for definition d (the one about
 * to become current) from the exposures and events. O(exposures). */
int sx__xp_rebuild(struct xp *x, const struct xp_def *d);
/* At load: sets x->spec, rebuilds when a started experiment's counters are
 * missing or of another spec. */
int sx__xp_counters_check(struct xp *x);
/* Writes empty counters (at the first start). */
int sx__xp_counters_init(struct xp *x);

struct xp_day_rec {
	uint32_t day; /* UTC days since the epoch */
	double *v;    /* T layout */
};
/* The A record (*a, calloc'ed) and every T record (*days, each v malloc'ed)
 * in day order. */
int sx__xp_counters_read(struct xp *x, struct xp_day_rec **days, size_t *ndays, double **a);
size_t sx__xp_a_at(const struct xp_def *d, int m, int v, int f);
size_t sx__xp_t_at(const struct xp_def *d, int m, int v, int f);
void sx__xp_counters_stop(void);

/* The metric's numeric property of an event (1 and *out), or 0 when the event has
 * none, it is not a finite number, or its properties do not decode. */
int sx__xp_prop_value(const struct sx_event *ev, const struct xp_metric *m, msgpack_zone *zone, double *out);

#endif
