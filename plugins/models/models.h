/* models.h — the model registry's C API: train, look up and serve models.
 *
 * Other plugins (recommend, predict, ...) use trained models through these
 * functions only, never through the models and artifacts tables. Everything
 * here is valid once the models plugin has started and until it stops.
 *
 * Threads. Functions marked "loop" run on the loop thread only. A struct
 * sx_model is immutable once built and reference counted on the loop thread:
 * a holder may read it from any thread (e.g. hand it to a job) as long as the
 * reference is taken and dropped on the loop thread.
 *
 * Names. A model name and an alias are 1 to 64 bytes of [A-Za-z0-9_.-].
 * Versions count from 1 per name and are never reused.
 *
 * Errors: 0 or a negative SX_E* code with the message in sx_diag_last():
 * SX_EINVAL (bad argument), SX_ENOENT (no such model, version or alias),
 * SX_ESTATE (wrong state: archived, alias target, type mismatch),
 * SX_ECORRUPT (a stored record that does not decode), SX_ENOMEM.
 */
#ifndef SX_MODELS_H
#define SX_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define SX_MODELS_NAME_MAX 64

enum sx_model_type { SX_MODEL_ALS = 1, SX_MODEL_LOGISTIC = 2, SX_MODEL_TEXT = 3, SX_MODEL_BEHAVIOUR = 4 };

struct sx_model;

/* ---- training (loop) ----
 * Starts a training job exactly as the RPC method model.train does: type
 * "als", "logistic", "text" or "behaviour", params and data as documented in
 * docs/API.md (Models; either may be NULL). No role check: a text model's
 * data.csv is read from the server's disk for any caller of this function. Inputs are checked and copied before the call
 * returns; the job registers a new version when it succeeds. Returns the job
 * id (> 0) or a negative error. */
int64_t sx_models_train(const char *type, const char *name, const msgpack_object *params,
			const msgpack_object *data);

/* ---- logistic regression without the registry (any thread) ----
 * Fits standardised L2 logistic regression on n rows of d features (X
 * row-major, y 0/1) and returns a model named `name` (version 0, not
 * registered), or NULL (diag). names may be NULL (f0, f1, ...). opts as
 * core/math/logreg.h (NULL: defaults). */
struct sx_logreg_opts;
struct sx_model *sx_models_logistic_fit(const char *name, const double *X, const uint8_t *y,
					size_t n, size_t d, const char *const *names,
					const struct sx_logreg_opts *opts);

/* ---- serving (loop) ----
 * The model that alias (NULL: "production") or version (when > 0) of name
 * designates, loaded from the store if needed, with a new reference; NULL
 * (diag: SX_ENOENT, SX_ECORRUPT, SX_ENOMEM; SX_ESTATE if the plugin is not
 * running). Release with sx_model_unref. */
struct sx_model *sx_models_acquire(const char *name, const char *alias, uint32_t version);
void sx_model_ref(struct sx_model *m);
void sx_model_unref(struct sx_model *m);

int sx_model_type(const struct sx_model *m);
uint32_t sx_model_version(const struct sx_model *m);
/* Borrowed, valid while m is referenced. */
const char *sx_model_name(const struct sx_model *m);

/* Bumps whenever an alias of any model moves (promote, rollback, a training
 * that promotes): a holder of an aliased model re-acquires only when this
 * changed. 0 while the models plugin is not running. Loop. */
uint64_t sx_models_generation(void);

/* ALS models (any thread while referenced). The factorisation, for
 * sx_als_fold_in / sx_als_explain / sx_als_item_factors (read only): NULL for
 * another type. Borrowed, valid while m is referenced. */
struct sx_als;
const struct sx_als *sx_model_als(const struct sx_model *m);
/* The item ids of the factor rows: row i is item sx_model_item_id(m, i).
 * n_items is 0 and item_id NULL for another type or i out of range. */
size_t sx_model_n_items(const struct sx_model *m);
const char *sx_model_item_id(const struct sx_model *m, size_t i, size_t *len);

/* Logistic models (any thread while referenced). */
size_t sx_model_n_features(const struct sx_model *m);
/* Borrowed, valid while m is referenced. */
const char *sx_model_feature_name(const struct sx_model *m, size_t j);
/* P(y = 1) of one raw row x[d]; contrib (may be NULL) gets d per-feature
 * contributions to the log-odds (coef_j * standardised x_j); *intercept (may
 * be NULL) the intercept, so that intercept + sum contrib = logit(p).
 * Returns SX_EINVAL for a non-logistic model or non-finite x. */
int sx_model_predict_proba(const struct sx_model *m, const double *x, double *contrib,
			   double *intercept, double *p);

#endif
