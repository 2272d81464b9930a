/* internal.h — the models plugin's key layouts, codecs and shared state.
 * Not an API: other plugins use models.h.
 *
 * Tables and keys (integers big-endian so that keys sort as numbers):
 *   models     'n' name                    -> {name, type, next_version, created}
 *              'v' name \0 u32 version     -> {name, version, type, params, metrics, data,
 *                                              trained_at, train_ms, parent, status, reason,
 *                                              trigger, events_at_train}
 *              'a' name \0 alias           -> {alias, version, updated, previous = [v...],
 *                                              history = [{version, from, at, action}]}
 *              'p' name                    -> {every_hours, after_events, drift_above,
 *                                              promote_if, alias, params, last_run,
 *                                              events_at_last}
 *              'r' name                    -> alert rules {psi_above, p99_ms_above, min_samples}
 *   artifacts  name \0 u32 version         -> weights map (see sx__models_pack_weights)
 */
#ifndef SX_MODELS_INTERNAL_H
#define SX_MODELS_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "core/math/logreg.h"
#include "core/math/text.h"
#include "plugins/models/models.h"
#include "plugins/privacy/privacy.h"

struct sx_als;
struct sx_logreg;
struct sx_markov;
struct sx_covisit;
struct sx_engine;
struct sx_job;

#define SX_MODELS_PSI_BINS 10
#define SX_MODELS_KEY_MAX (1 + SX_MODELS_NAME_MAX + 1 + SX_MODELS_NAME_MAX)
#define SX_MODELS_HIST_MAX 100 /* alias history entries kept */
#define MAX_EVENT_WEIGHTS 64     /* event names of an ALS model */

/* Strings -> dense int32 ids, in order of insertion. */
struct sx_idmap {
	char **ids;
	uint32_t *lens;
	int32_t n, cap;
	int32_t *slots; /* open addressing, -1 empty */
	uint32_t nslots;
};
void sx__idmap_init(struct sx_idmap *m);
void sx__idmap_close(struct sx_idmap *m);
/* The id of s, adding it if absent (add != 0); -1 if absent, -2 out of memory. */
int32_t sx__idmap_get(struct sx_idmap *m, const char *s, size_t len, int add);

struct sx_model_weight {
	char name[129];
	float w;
};

struct sx_model {
	int refs;
	int type;
	char name[SX_MODELS_NAME_MAX + 1];
	uint32_t version;
	uint32_t parent; /* 0: none */
	int64_t trained_at, train_ms;
	int64_t data_from, data_to; /* -1: unbounded */
	uint64_t events_at_train;
	char status[16];
	char reason[256];
	char trigger[32];
	msgpack_sbuffer params;  /* one packed map */
	msgpack_sbuffer metrics; /* one packed map */
	/* reference distribution of scores, for drift */
	int has_ref;
	double ref_edges[SX_MODELS_PSI_BINS - 1];
	double ref_expected[SX_MODELS_PSI_BINS];
	/* logistic */
	size_t d;
	char **features;
	double *mean, *scale, *coef, intercept;
	struct sx_logreg *lr;
	/* als */
	struct sx_als *als;
	int32_t n_users, n_items;
	int k;
	float lambda, alpha;
	struct sx_idmap users, items;
	struct sx_model_weight *weights; /* event name -> weight, for fold-in */
	size_t nweights;
	/* text: classes sorted by label */
	int32_t n_classes;
	char **classes;
	int algorithm; /* SX_TEXT_NB or SX_TEXT_LOGREG */
	struct sx_text_feat_opts fo;
	struct sx_text_tfidf *tfidf; /* NULL: raw counts */
	struct sx_text_nb *nb;
	struct sx_text_lr *tlr;
	/* behaviour: event names (states) in `names`, items in `items` */
	struct sx_idmap names;
	struct sx_markov *markov;
	struct sx_covisit *covisit;
	double smoothing, decay, item_decay;
	int order, recent_items;
};

enum { SX_TEXT_NB = 1, SX_TEXT_LOGREG = 2 };
#define SX_TEXT_CLASSES_MAX 1000
#define SX_TEXT_LABEL_MAX 128

struct sx_model *sx__model_new(int type, const char *name);
const char *sx__model_type_name(int type);
int sx__model_type_parse(const char *s, size_t len); /* 0 if unknown */

/* 1..64 bytes of [A-Za-z0-9_.-]. */
int sx__models_name_ok(const char *s, size_t len);

/* Prefixes the last diagnostic message; returns rc. */
int sx__diag_prefix(int rc, const char *prefix);

/* ---- keys ---- */
size_t sx__models_head_key(uint8_t *k, const char *name);
size_t sx__models_version_key(uint8_t *k, const char *name, uint32_t version);
size_t sx__models_alias_key(uint8_t *k, const char *name, const char *alias);
size_t sx__models_policy_key(uint8_t *k, const char *name);
size_t sx__models_rules_key(uint8_t *k, const char *name);
size_t sx__models_artifact_key(uint8_t *k, const char *name, uint32_t version);

/* ---- codecs ---- */
/* Packs a finite double, or nil. */
void sx__pack_num(msgpack_packer *pk, double v);
/* The metadata map (as stored under 'v'). */
void sx__models_pack_meta(msgpack_packer *pk, const struct sx_model *m);
/* The weights map: logistic {features, coef, intercept, mean, scale};
 * als {k, lambda, alpha, n_users, n_items, users, items, user_factors,
 * item_factors, event_weights}; both with reference = {edges, expected}.
 * binary: factors as bin (float32 little-endian, row-major) rather than
 * arrays of rows. */
void sx__models_pack_weights(msgpack_packer *pk, const struct sx_model *m, int binary);
/* The bundle: the metadata keys plus format = "sextant.model",
 * format_version = 1 and weights. */
void sx__models_pack_bundle(msgpack_packer *pk, const struct sx_model *m, int binary);
/* A model from a metadata map and a weights map (factors as bin or arrays).
 * NULL on error (diag: SX_EINVAL or SX_ECORRUPT per `corrupt`). */
struct sx_model *sx__models_decode(const msgpack_object *meta, const msgpack_object *weights,
				   int corrupt);
struct sx_model *sx__models_decode_bundle(const msgpack_object *bundle);
/* JSON text of the bundle (malloc'd, NUL-terminated) or NULL. */
char *sx__models_bundle_json(const struct sx_model *m);
/* JSON text -> packed MessagePack in sb. 0 or SX_EINVAL. */
int sx__models_json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *sb);

/* ---- NPY ---- */
/* A NPY v1.0 header for a C-order array of descr ("<f4", "<f8") and shape
 * (ndim 1 or 2) into buf; returns its length (a multiple of 64) or 0 if
 * size is too small. */
size_t sx__npy_header(char *buf, size_t size, const char *descr, const uint64_t *shape, int ndim);
/* Writes a float32 (elsize 4) or float64 (8) matrix to path. 0 or SX_EIO. */
int sx__npy_write(const char *path, const void *data, int elsize, uint64_t rows, uint64_t cols,
		  int ndim);

/* ---- drift ---- */
/* Population stability index sum (a - e) ln(a / e) over n bins of two
 * distributions given as counts or fractions (each normalised here); empty
 * bins count as 1e-4. Returns NAN if either sums to 0. */
double sx__models_psi(const double *expected, const double *actual, size_t n);
/* Decile edges (nbins - 1 values) of scores[0..n) and the share of scores in
 * each bin (bin b: edges[b-1] < s <= edges[b]). Sorts scores. */
void sx__models_ref_fit(double *scores, size_t n, double *edges, double *expected);
/* The bin of s. */
int sx__models_bin(const double *edges, double s);

/* ---- training (train.c, text.c, behaviour.c) ---- */
/* A training request, copied on the loop thread and run on the pool. */
struct sx_train {
	int type;
	char name[SX_MODELS_NAME_MAX + 1];
	msgpack_sbuffer params;
	double holdout;
	int refit, threads;
	/* als */
	int64_t from, to;
	int k, iterations, cg_steps, eval_k;
	float lambda, alpha;
	uint64_t seed;
	struct sx_model_weight weights[MAX_EVENT_WEIGHTS];
	size_t nweights;
	/* logistic */
	size_t n, d, nt;
	double *X, *Xt;
	uint8_t *y, *yt;
	char **names;
	struct sx_logreg_opts lo;
	int balanced;
	/* als and behaviour: users without personalization consent are skipped */
	struct sx_privacy_snapshot consent; /* personalization, for ALS and behaviour */
	/* text */
	int algorithm, tfidf;
	struct sx_text_feat_opts fo;
	struct sx_text_lr_opts tlo;
	double nb_alpha;
	char **texts, **labels; /* nrows each; then ntest test rows */
	size_t nrows, ntest, rows_cap;
	char *csv, text_col[SX_TEXT_LABEL_MAX + 1], label_col[SX_TEXT_LABEL_MAX + 1];
	char ev_name[SX_TEXT_LABEL_MAX + 1];
	int from_events;
	/* behaviour */
	char (*bnames)[SX_TEXT_LABEL_MAX + 1]; /* NULL: every name */
	size_t nbnames;
	char (*inames)[SX_TEXT_LABEL_MAX + 1]; /* NULL: every name with an item */
	size_t ninames;
	double half_life_ms, gap_half_life_ms, age_half_life_ms, smoothing, decay, item_decay;
	int64_t max_gap_ms, window_ms;
	int lookback, top_n, order, recent_items;
	/* comparison */
	struct sx_model *prod;
	double cmp_cand, cmp_prod;
	/* result */
	struct sx_model *out;
	struct sx_job *job;
	atomic_int cancel;
};

/* Per type: parse and copy params and data (loop thread), run (pool). */
/* The metrics' "comparison" entry: the candidate against production on `metric`. */
void sx__pack_comparison(msgpack_packer *pk, const struct sx_train *t, const char *metric);
int sx__text_prepare(struct sx_train *t, const msgpack_object *p, const msgpack_object *data);
int sx__text_run(struct sx_train *t);
void sx__text_free(struct sx_train *t);
int sx__behaviour_prepare(struct sx_train *t, const msgpack_object *p, const msgpack_object *data);
int sx__behaviour_run(struct sx_train *t);
/* Helpers shared by the types. */
int sx__train_check_only(const msgpack_object *o, const char *what, const char *const *known);
int sx__train_opt_int(const msgpack_object *p, const char *key, int64_t lo, int64_t hi, int64_t *v);
int sx__train_opt_num(const msgpack_object *p, const char *key, double lo, double hi, double *v);
int sx__train_window(const msgpack_object *data, int64_t *from, int64_t *to);
/* Ranking metrics of a recommender on a holdout (ALS and behaviour): sums
 * over the evaluated users of precision, recall, NDCG and MAP at k, which the
 * caller turns into means, and the catalogue coverage of the lists. */
struct sx_models_ranking {
	double precision, recall, ndcg, map, coverage;
};
/* Adds one user's list rec[n] against the held-out items rel[nrel] (sorted, no repeats). */
void sx__models_ranking_add(struct sx_models_ranking *r, const int32_t *rec, size_t n, const int32_t *rel, size_t nrel,
			    size_t k);
/* Packs the five as keys precision, recall, ndcg, map, coverage (not finite: nil). */
void sx__models_ranking_pack(msgpack_packer *pk, const struct sx_models_ranking *r);
/* Parses and copies the request on the loop thread; NULL (diag). */
struct sx_train *sx__train_prepare(int type, const char *name, const msgpack_object *params,
				   const msgpack_object *data);
void sx__train_free(struct sx_train *t);
/* The model the candidate is compared with (a new reference is kept). */
void sx__train_compare_with(struct sx_train *t, struct sx_model *prod);
/* Runs on a pool thread; the built model is taken with sx__train_result. */
int sx__train_run(struct sx_train *t, struct sx_job *job);
struct sx_model *sx__train_result(struct sx_train *t);
/* 1 if the candidate's comparison score >= production's (or no production),
 * and the two scores (NAN if not computed). */
int sx__train_not_worse(const struct sx_train *t, double *cand, double *prod);
/* The effective params map (defaults filled in), packed. */
const msgpack_sbuffer *sx__train_params(const struct sx_train *t);

/* ---- text and behaviour serving (serve.c) ---- */
/* Class probabilities of text s[0..n) into proba[n_classes]. SX_EINVAL for
 * a model of another type, SX_ENOMEM. */
int sx__text_predict(const struct sx_model *m, const char *s, size_t n, double *proba);
/* Next-action distribution out[n_states] after recent name ids (oldest
 * first; the model's `order` last ones count). */
int sx__behaviour_next(const struct sx_model *m, const int32_t *names, size_t n, double *out);
/* Co-visited items for recent item ids (oldest first; the model's
 * `recent_items` last ones count, the latest weighing most), excluding the
 * recent ones. Returns the count or an error. */
int sx__behaviour_items(const struct sx_model *m, const int32_t *items, size_t n, size_t k, int32_t *out,
			double *scores);

/* ---- recipes (recipe.c, loop thread) ---- */
int sx__models_recipes_start(struct sx_engine *e);
/* Runs recipe `name`: packs into sb one map {type, name, params, data,
 * promote_if, alias} (absent fields nil) with params = the recipe's params
 * with `over` (may be NULL) on top, and data = what data(ctx, args) returned
 * (or the recipe's data table). SX_ENOENT (no recipe), SX_ESCRIPT,
 * SX_EBUDGET, SX_EINVAL. */
int sx__models_recipe_run(const char *name, const msgpack_object *over, const msgpack_object *args,
			  msgpack_sbuffer *sb);

/* ---- shared (models.c) ---- */
extern struct sx_engine *sx__models_eng;

#endif
