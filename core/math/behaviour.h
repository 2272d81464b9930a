/* behaviour.h — user-behaviour models: next-action probabilities (a Markov
 * chain over event names with recency weighting) and item-to-item
 * co-visitation with time decay.
 *
 * Markov chain. States are dense ids 0..n-1 (event names). Training adds one
 * user's sequence at a time, times ascending. Each event at time t adds its
 * recency weight r(t) = 2^(-(t_ref - t) / half_life_ms) (1 when half_life_ms
 * is 0; times after t_ref count as t_ref) to the state's marginal count q;
 * each pair of consecutive events a (t1) -> b (t2) with max_gap_ms == 0 or
 * t2 - t1 <= max_gap_ms adds r(t2) to the transition count C[a][b].
 *
 *   P(b | a) = (C[a][b] + alpha * q[b] / sum q) / (sum_b' C[a][b'] + alpha)
 *
 * (alpha >= 0 smooths towards the marginal; a row with no count and alpha 0
 * is the marginal itself). The next-action distribution after recent states
 * s_1..s_m (oldest first) is sum_i decay^(m - i) P(. | s_i), normalised: the
 * latest event weighs 1, the one before `decay`, ... Ids outside 0..n-1 are
 * skipped; with none left it is the marginal.
 *
 * Co-visitation. For each user's sequence of item events (times ascending),
 * every pair of events on distinct items i != j at positions p < q with
 * q - p <= lookback and (window_ms == 0 or t_q - t_p <= window_ms) adds
 *
 *   w = 2^(-(t_q - t_p) / gap_half_life_ms) * 2^(-(t_ref - t_q) / age_half_life_ms)
 *
 * (each factor 1 when its half-life is 0) to both W[i][j] and W[j][i]:
 * items visited close together, and recently, weigh more. Repeated events
 * count each time. finish keeps for every item its top_n neighbours by
 * weight (ties: ascending id). A recommendation from recent items r with
 * weights u_r scores each item j by sum_r u_r W[r][j] over the kept lists.
 *
 * Errors: 0 or a negative SX_E* code (core/sx.h) with a message in
 * sx_diag_set(): SX_EINVAL for bad arguments, SX_ESTATE for calls in the
 * wrong order, SX_ENOMEM. Structures are not thread-safe; a finished one may
 * be read from several threads at once.
 */
#ifndef SX_MATH_BEHAVIOUR_H
#define SX_MATH_BEHAVIOUR_H

#include <stddef.h>
#include <stdint.h>

#define SX_MARKOV_MAX_STATES 1024

/* ---- Markov chain ---- */

struct sx_markov_opts {
	int64_t t_ref;       /* recency reference time (ms), usually the window's end */
	double half_life_ms; /* >= 0; 0: no recency weighting */
	int64_t max_gap_ms;  /* >= 0; 0: every consecutive pair is a transition */
};

struct sx_markov;

/* NULL if n_states is outside 1..SX_MARKOV_MAX_STATES or out of memory.
 * Memory: n_states^2 + n_states doubles. */
struct sx_markov *sx_markov_new(int32_t n_states);
void sx_markov_free(struct sx_markov *m);
int32_t sx_markov_n_states(const struct sx_markov *m);

/* Adds one sequence. SX_EINVAL (nothing added) if a state is out of range,
 * times are not ascending, or opts has a negative or non-finite value. */
int sx_markov_add(struct sx_markov *m, const int32_t *states, const int64_t *times, size_t n,
		  const struct sx_markov_opts *opts);

/* The counts, borrowed: C row-major (n * n, row a = from a) and q (n). */
const double *sx_markov_counts(const struct sx_markov *m);
const double *sx_markov_marginal(const struct sx_markov *m);
/* Restores counts saved from the two views above (copied; each finite and
 * >= 0, else SX_EINVAL and m unchanged). */
int sx_markov_set(struct sx_markov *m, const double *counts, const double *marginal);

/* out[0..n) = the next-action distribution after recent[0..nrecent)
 * (oldest first). alpha >= 0, decay in [0, 1]. SX_ESTATE if nothing was
 * added (all counts 0), SX_EINVAL for bad alpha or decay. */
int sx_markov_predict(const struct sx_markov *m, const int32_t *recent, size_t nrecent, double alpha,
		      double decay, double *out);

/* ---- co-visitation ---- */

struct sx_covisit_opts {
	int64_t t_ref;           /* age reference time (ms) */
	int64_t window_ms;       /* >= 0; 0: no limit on the gap of a pair */
	double gap_half_life_ms; /* >= 0; 0: no decay with the gap */
	double age_half_life_ms; /* >= 0; 0: no decay with age */
	size_t lookback;         /* >= 1: earlier events paired with each event */
	size_t top_n;            /* >= 1: neighbours kept per item */
};

struct sx_covisit;

/* NULL if n_items < 1, opts is invalid, or out of memory. */
struct sx_covisit *sx_covisit_new(int32_t n_items, const struct sx_covisit_opts *opts);
void sx_covisit_free(struct sx_covisit *c);
int32_t sx_covisit_n_items(const struct sx_covisit *c);

/* Adds one user's item events. SX_EINVAL (nothing added) if an item is out
 * of range or times are not ascending; SX_ESTATE after finish. */
int sx_covisit_add(struct sx_covisit *c, const int32_t *items, const int64_t *times, size_t n);
/* Builds the neighbour lists; adding is over. SX_ESTATE if called twice. */
int sx_covisit_finish(struct sx_covisit *c);
/* Pairs accumulated so far (distinct unordered item pairs). */
size_t sx_covisit_pairs(const struct sx_covisit *c);

/* Item i's kept neighbours after finish, heaviest first: the count, with
 * *ids and *w borrowed (valid while c lives). 0 for i out of range or
 * before finish. */
size_t sx_covisit_neighbors(const struct sx_covisit *c, int32_t i, const int32_t **ids, const float **w);

/* The lists in CSR form for saving: indptr (n_items + 1), ids and weights
 * (indptr[n_items] each), borrowed; NULL before finish. */
const int64_t *sx_covisit_indptr(const struct sx_covisit *c);
const int32_t *sx_covisit_ids(const struct sx_covisit *c);
const float *sx_covisit_weights(const struct sx_covisit *c);
/* Restores saved lists (copied) and marks c finished. SX_EINVAL (c
 * unchanged) unless indptr starts at 0 and never decreases, every id is in
 * range and not the row's own item, every weight is finite and > 0, and no
 * row is longer than top_n; SX_ESTATE if c has data already. */
int sx_covisit_set(struct sx_covisit *c, const int64_t *indptr, const int32_t *ids, const float *w);

/* The top k items by sum_r rw[r] W[recent[r]][j] (rw NULL: all 1), best
 * first, ties by ascending id, skipping items with score <= 0 and those in
 * exclude[0..nexclude) (any order). Recent ids out of range are ignored.
 * Returns the count (<= k), or SX_ESTATE before finish, SX_ENOMEM. */
int sx_covisit_recommend(const struct sx_covisit *c, const int32_t *recent, const double *rw, size_t nrecent,
			 const int32_t *exclude, size_t nexclude, size_t k, int32_t *out, double *scores);

#endif
