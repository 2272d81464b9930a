/* recommend.h — the recommendation plugin: candidate sources, Lua strategies,
 * live personalization.
 *
 * The plugin keeps, in memory and on the loop thread:
 *   - the item catalogue: every item gets a dense index (kept in the store,
 *     never reused) and its attributes of interest (kind, region, price, tags,
 *     availability); an HNSW index (cosine) over the items' content vectors;
 *   - a factor source (struct sx_rec_factor_source): item factors and the
 *     fold-in of a user's interactions, with an HNSW index (inner product) over
 *     the item factors. By default it is the plugin's own implicit-ALS model,
 *     trained by the job `recommend.train`; sx_rec_set_factor_source() swaps in
 *     another (the model registry's production model);
 *   - per user (loaded from the user's history at first use): interactions,
 *     recent items, the ALS vector (fold-in) and the content profile;
 *   - per item: time-decayed popularity (half-lives of a day, a week, a month)
 *     and co-visitation counts, kept up to date as events are tracked.
 * Everything is updated from events.track (through sx_events_on_track) before
 * the track request is answered.
 *
 * The functions below are the pure maths the plugin is built on; they touch no
 * state and are thread-safe. Errors: 0 or a negative SX_E* code; the
 * diagnostics slot is not used.
 */
#ifndef SX_RECOMMEND_H
#define SX_RECOMMEND_H

#include <stddef.h>
#include <stdint.h>

/* w * 2^(-dt / half_life): the weight left after dt ms. dt <= 0 returns w
 * unchanged; half_life must be > 0. */
double sx_rec_decay(double w, int64_t dt, double half_life);

/* A time-decayed weighted sum of vectors: sum holds
 * sum_j w_j 2^(-(t - t_j)/half_life) v_j as of time *t, and *weight the same
 * sum of w_j. Adds (vec, w, at): when at is later than *t the sum decays to
 * `at` first and *t moves there; when it is earlier, the new term enters
 * already decayed. The profile's direction is sum / |sum|; its mean is
 * sum / *weight. *t = INT64_MIN marks an empty profile. */
void sx_rec_profile_add(float *sum, size_t dim, double *weight, int64_t *t, const float *vec, double w,
			int64_t at, double half_life);

/* Maximal marginal relevance: picks up to k of n candidates greedily, each
 * time the one maximising lambda * rel[i] - (1 - lambda) * max_j cos(v_i, v_j)
 * over those already picked (rel is used as given; normalise it first).
 * vecs is n x dim row-major; a row of zeros (no vector) has similarity 0 to
 * everything. has_vec may be NULL (all rows have vectors). out receives the
 * picked candidate positions in order; returns their number (min(k, n)) or
 * SX_EINVAL (lambda outside [0, 1]) / SX_ENOMEM. */
int sx_rec_mmr(const double *rel, const float *vecs, size_t n, size_t dim, size_t k, double lambda,
	       uint32_t *out);

/* ---- the factor source ----
 *
 * What collaborative filtering needs from a model. Item ids are the plugin's
 * dense item indexes (below n_items; items at or above have no factors).
 * All callbacks run on the loop thread. The plugin borrows the source from
 * sx_rec_set_factor_source() until it is replaced or the plugin stops, and
 * then calls release (if set). */
struct sx_hnsw;
struct sx_rec_factor_source {
	int k;
	uint32_t n_items;
	/* Inner-product index over the item factors (labels: item indexes). */
	const struct sx_hnsw *index;
	/* The exact user vector for these interactions (as sx_als_fold_in). */
	int (*fold_in)(void *ud, const int32_t *items, const float *weights, size_t n, float *out);
	/* The largest per-item contributions to item's score (as sx_als_explain). */
	int (*explain)(void *ud, const int32_t *items, const float *weights, size_t n, int32_t item,
		       size_t top, int32_t *out_items, float *out_contrib, double *out_total);
	/* Optional (NULL: explain is called per target): explain for nt targets at
	 * once (as sx_als_explain_many): target t's contributors at [t * top, t * top +
	 * out_count[t]), its score in out_total[t]; a target without factors gets
	 * count 0 and total 0. Returns 0 or a negative SX_E* code. */
	int (*explain_many)(void *ud, const int32_t *items, const float *weights, size_t n, const int32_t *targets,
			    size_t nt, size_t top, int32_t *out_items, float *out_contrib, double *out_total,
			    int *out_count);
	void (*release)(void *ud);
	void *ud;
	const char *description; /* for recommend.model: "als (recommend.train)", ... */
};

/* Replaces the live factor source (NULL: none, collaborative returns
 * nothing). Every cached user vector is recomputed at its next use.
 * Loop thread, after the plugin started. SX_ESTATE before. */
int sx_rec_set_factor_source(struct sx_rec_factor_source *fs);

/* Item index of id (the plugin's dense index), or -1 if the catalogue does
 * not hold it. Loop thread. */
int64_t sx_rec_item_index(const char *id, size_t len);

/* ---- recommendations for other plugins ---- */

#define SX_REC_ID_MAX 128

struct sx_recommendation {
	char item[SX_REC_ID_MAX + 1]; /* NUL-terminated */
	size_t len;
	double score;
	char source[24]; /* "collaborative", "content", ...; "" if the strategy gave none */
};

/* What recommend.items {user, kind, n, strategy} answers, into out[0..n):
 * the number written (0..n; an unknown user gets what a new user gets) or a
 * negative error with the message in sx_diag_last(): SX_EINVAL (bad user,
 * kind not trip|destination|activity|offer, n outside 1..1000), SX_ENOENT (no
 * such strategy), SX_ESCRIPT / SX_EBUDGET (the strategy failed), SX_ESTATE
 * (the plugin is not running). kind and strategy may be NULL (any kind; the
 * default strategy). Runs the strategy in the engine's Lua VM: loop thread,
 * never from inside another Lua call. */
int sx_recommend_items(const char *user, size_t ulen, const char *kind, size_t n, const char *strategy,
		       struct sx_recommendation *out);

#endif
