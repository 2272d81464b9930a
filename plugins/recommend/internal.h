/* internal.h — the recommendation plugin's state, shared by its files.
 * Not an API: other plugins use recommend.h.
 *
 * Store (SX_T_ARTIFACTS), keys:
 *   "rec/i/" item id   -> u32 (BE) dense item index, never reused
 *   "rec/content"      -> the content HNSW image (sx_hnsw_save)
 *   "rec/content_t"    -> i64 (BE): newest item `updated` covered by that image
 *   "rec/model"        -> {k, n_items, lambda, alpha, iterations, weights, trained_at,
 *                          users, interactions, factors (bin: n_items x k float32 LE)}
 *   "rec/model_index"  -> the item-factor HNSW image
 *   "rec/counts"       -> popularity and co-visitation snapshot (see state.c)
 *   "rec/segs"         -> segment popularity snapshot, written with "rec/counts"
 *   "rec/j/" u64 (BE)  -> one events.track call's count operations (the journal)
 */
#ifndef SX_RECOMMEND_INTERNAL_H
#define SX_RECOMMEND_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <msgpack.h>

#include "core/math/als.h"
#include "core/math/hnsw.h"
#include "plugins/events/events.h"
#include "plugins/recommend/recommend.h"

struct sx_engine;

#define REC_RECENT 10         /* recent items kept per user */
#define REC_COVIS_MAX 48      /* co-visitation neighbours kept per item */
#define REC_COVIS_WINDOW (7 * 86400000LL)
#define REC_TAGS_MAX 16
#define REC_DAY 86400000.0
#define REC_PROFILE_HALF_LIFE (30 * REC_DAY)
#define REC_COVIS_HALF_LIFE (30 * REC_DAY)
#define REC_WEIGHTS_MAX 16

enum { REC_W_DAY, REC_W_WEEK, REC_W_MONTH, REC_WINDOWS };
extern const double sx__rec_half_life[REC_WINDOWS];

struct rec_item {
	char *id; /* NULL: never seen (a gap) */
	uint8_t len;
	int8_t kind;      /* -1: deleted */
	uint8_t available;
	uint8_t has_vec;
	uint8_t ntags;
	double price;     /* NAN if none */
	int64_t avail_from, avail_to;
	uint16_t months;  /* bit m-1 for month m; 0: any */
	uint16_t region_id; /* 1 + index in rec.regions; 0: none */
	char region[48];
	char currency[8];
	char name[64];
	char *tags[REC_TAGS_MAX];
};

struct rec_inter {
	uint32_t item;
	float w;
	uint16_t n;
	uint8_t booked;
};

struct rec_user {
	uint8_t als_ok;   /* als holds the fold-in of inter under the current source */
	uint8_t has_prof;
	int nrecent;
	uint32_t recent[REC_RECENT]; /* oldest first */
	int64_t recent_t[REC_RECENT];
	struct rec_inter *inter;
	uint32_t ninter, cap;
	float *als;       /* k floats */
	float *prof;      /* content_dim floats */
	double prof_w;
	int64_t prof_t, last_t;
	uint64_t consent_ver; /* sx_privacy_consent_version() when consent was last checked */
};

struct rec_nb {
	uint32_t item;
	float score;
	int64_t t;
};

struct rec_counts {
	double pop[REC_WINDOWS];
	int64_t t; /* INT64_MIN: none */
	uint32_t users;  /* interactions counted (for novelty) */
	uint16_t ncov, capcov;
	struct rec_nb *cov;
};

/* Segment popularity: per value of a user attribute (the segment, by default
 * "country"), the time-decayed weighted interactions per item of the users
 * with that value (the month half-life, the weighting of `popular`). A value
 * is known by a 64-bit hash of the attribute name and the lowercased value.
 * Bounded: at most REC_SEG_MAX values and rec_state.seg_pairs_max (value,
 * item) pairs per state. Each segment also keeps its weight: the decayed sum
 * of the weights counted in it. An interaction that needs a new value or a
 * new pair beyond a bound takes its weight off the segment of least weight
 * (other than its own, and with pairs when room for a pair is wanted; ties:
 * the first in the table), weights compared as of one common time (seg_score
 * in state.c): if that leaves the segment
 * nothing (<= 0), the segment is freed with its pairs and the interaction is
 * counted in the room made; else the segment keeps the rest and the
 * interaction counts globally only, so its user falls back to the global
 * list. A segment idle until its weight decayed under one interaction's
 * gives way at once; one still used is worn down by the values left out, so
 * a value that keeps coming gets in. The choice reads only the counts and
 * the interaction's weight and time: replaying the journal over the snapshot
 * repeats it exactly. */
#define REC_SEG_MAX 256
#define REC_SEG_ENTRIES (1u << 21)
#define REC_SEG_NAMES 4096 /* distinct values the user -> segment cache names */
#define REC_SEG_ATTR_MAX 32
#define REC_SEG_VALUE_MAX 64

struct rec_seg_entry {
	uint32_t item; /* UINT32_MAX: empty slot */
	double pop;
	int64_t t;
};

struct rec_seg {
	uint64_t h;
	double w;  /* the weight (above) as of t, after what left-out values took off */
	int64_t t; /* INT64_MIN: nothing counted yet */
	uint32_t n, cap; /* open addressing over items; cap a power of two */
	struct rec_seg_entry *e;
};

struct rec_segname {
	uint64_t h;
	char name[REC_SEG_VALUE_MAX + 1];
};

struct rec_model;

/* One world of recommendation state: the live one, or one rebuilt from the
 * events before a cut for recommend.evaluate. */
struct rec_state {
	int live;       /* load users from their history on first use */
	int64_t horizon; /* events at or after are ignored (live: INT64_MAX) */
	int64_t now;     /* 0: the wall clock */
	struct rec_user **users;
	uint32_t nusers;
	struct rec_counts *counts;
	uint32_t ncounts;
	struct sx_rec_factor_source *fs;
	struct rec_model *own; /* when fs is the plugin's own model */
	uint32_t *dirty;
	size_t ndirty, capdirty;
	uint64_t generation; /* bumps on every change the trending cache depends on */
	struct rec_seg *segs;
	uint32_t nsegs;
	size_t seg_entries;
	size_t seg_pairs_max; /* REC_SEG_ENTRIES; tests lower it */
	/* The journal (live state): every change to counts since the snapshot
	 * "rec/counts", written with the events that caused it (see state.c). */
	int journal;
	uint8_t *jbuf;
	size_t jlen, jcap;
	uint64_t jseq_snap;  /* records up to this one are in the snapshot */
	uint64_t jseq_next;  /* the next record's sequence */
	size_t jbytes;       /* journaled since the snapshot */
	size_t snap_bytes;   /* size of the snapshot */
	/* sx__rec_calibrate's last answer, for this factor source */
	const struct sx_rec_factor_source *calib_fs;
	int64_t calib_at;
	struct rec_calibration {
		double popular;      /* the popularity weight that ranked held-out items best */
		double ndcg, ndcg_collab, ndcg_popular; /* at that weight, at 0, popularity alone */
		uint32_t users;
	} calib;
};

struct rec_weight {
	char name[SX_EVENTS_ID_MAX + 1];
	float w;
};

struct rec_params {
	int k, iterations, cg_steps;
	float lambda, alpha;
	int nweights;
	struct rec_weight weights[REC_WEIGHTS_MAX];
};

/* The items of one region, so that trending in a region reads those only. */
struct rec_region {
	char name[48];
	uint32_t *items;
	uint32_t n, cap;
};

struct rec {
	struct sx_engine *e;
	struct rec_region *regions;
	uint32_t nregions, capregions;
	struct rec_item *items;
	uint32_t nitems, capitems;
	uint32_t *hash; /* open addressing: item index + 1, 0 empty */
	uint32_t hcap;
	struct sx_hnsw *content;
	uint32_t content_dim;
	int content_dirty;
	struct rec_state live;
	struct rec_state *cur; /* what the Lua sources read */
	struct rec_params params;
	int api_ref;  /* the table of ctx functions */
	int training;
	int include_seen; /* the personal sources keep the user's own items (one call) */
	char default_strategy[64];
	/* user index -> 0 not looked up, 1 no segment, 2 + index in segnames */
	char seg_attr[REC_SEG_ATTR_MAX + 1];
	uint16_t *useg;
	uint32_t nuseg;
	struct rec_segname *segnames;
	uint32_t nsegnames;
};

extern struct rec *sx__rec;

/* ---- catalogue (state.c) ---- */
int64_t sx__rec_item_find(const char *id, size_t len);
/* The region named name (lowercase), or NULL. */
const struct rec_region *sx__rec_region_find(const char *name);
void sx__rec_regions_free(void);
/* Dense index of id, assigning (and storing) a new one if needed. */
int64_t sx__rec_item_intern(const char *id, size_t len);
void sx__rec_item_update(uint32_t idx, const struct sx_item *it); /* it NULL: deleted */
int sx__rec_catalog_load(void);
int sx__rec_item_vec(uint32_t idx, float *out); /* 0, or SX_ENOENT if none */
float sx__rec_weight(const char *name, size_t len); /* 0: not an interaction */
int sx__rec_is_book(const char *name, size_t len);

/* ---- state (state.c) ---- */
void sx__rec_state_init(struct rec_state *s, int live, int64_t horizon);
void sx__rec_state_close(struct rec_state *s);
int64_t sx__rec_now(const struct rec_state *s);
/* The user's state, loading it (live states) when absent; NULL if unknown,
 * OOM or (live states) without personalization consent, whose held state is
 * then dropped. */
struct rec_user *sx__rec_user(struct rec_state *s, uint32_t user);
/* Frees the user's state if held (erasure, withdrawn consent). */
void sx__rec_user_forget(struct rec_state *s, uint32_t user);
/* One interaction: updates popularity, co-visitation and, with add_user, the
 * user's state (a live state loads an absent user from the store first; the
 * store then already holds the event, so callers pass add_user = 0). */
void sx__rec_observe(struct rec_state *s, uint32_t user, uint32_t item, float w, int book, int64_t t,
		     int add_user);
/* Recomputes the ALS vectors of users marked dirty. */
void sx__rec_flush_dirty(struct rec_state *s);
/* The user's ALS vector (computing it if stale); NULL if none. */
const float *sx__rec_user_als(struct rec_state *s, struct rec_user *u);
double sx__rec_pop(const struct rec_state *s, uint32_t item, int window, int64_t now);

/* ---- segments (state.c) ---- */
/* The user's segment (an index in sx__rec->segnames), looked up in the
 * user's stored attributes once and cached until users.put; -1 if the user
 * has none (no such attribute, not a string or integer, empty or longer than
 * REC_SEG_VALUE_MAX bytes, or the name table full). Loop thread. */
int sx__rec_user_segment(uint32_t user);
/* The hash of segment value v under the configured attribute (never 0). */
uint64_t sx__rec_segment_hash(const char *v, size_t len);
/* Forgets the cached segment of user (users.put, erasure); UINT32_MAX: all. */
void sx__rec_segment_invalidate(uint32_t user);
const struct rec_seg *sx__rec_seg_find(const struct rec_state *s, uint64_t h);
/* Segment popularity of entry e as of now. */
double sx__rec_seg_pop(const struct rec_seg_entry *e, int64_t now);
void sx__rec_segments_free(void);
/* A new segment attribute: drops s's segment counts and the user cache. */
void sx__rec_segments_reset(struct rec_state *s);
float sx__rec_covis_score(const struct rec_nb *nb, int64_t now);

/* ---- the own ALS model (model.c) ---- */
struct rec_triplets {
	uint32_t *user, *item;
	float *w;
	int64_t *t;
	size_t n, cap;
	uint32_t n_users, n_items;
};
int sx__rec_triplets_add(struct rec_triplets *tr, uint32_t u, uint32_t i, float w, int64_t t);
void sx__rec_triplets_free(struct rec_triplets *tr);
/* Trains a model on tr (any thread); NULL on failure (diag). The item-factor
 * index is built with index_threads (1: the same graph on every run, which an
 * evaluation needs to be repeatable). */
struct rec_model *sx__rec_model_train(const struct rec_triplets *tr, const struct rec_params *p, int nthreads,
				      int index_threads, const atomic_int *cancel, double *loss);
void sx__rec_model_free(struct rec_model *m);
struct sx_rec_factor_source *sx__rec_model_source(struct rec_model *m);
int sx__rec_model_save(struct rec_model *m);
struct rec_model *sx__rec_model_load(void);
void sx__rec_model_pack_info(struct rec_model *m, msgpack_packer *pk);
/* Installs m as the live model (owned), replacing any. */
void sx__rec_set_own_model(struct rec_state *s, struct rec_model *m);

/* ---- persistence of counts (state.c) ----
 * Popularity and co-visitation are kept durable by a snapshot plus a journal:
 * each events.track call that changes counts writes one record
 * "rec/j/" u64 (BE) sequence -> the operations it applied (pop_add and
 * covis_add, with their arguments), into the call's own store batch, so the
 * record commits with the events it derives from. When the journal outgrows
 * max(4 MiB, the snapshot), a snapshot is written and the journal records it
 * covers are deleted in the same batch. At start the snapshot is loaded and
 * the journal after it replayed, which repeats the exact operations in their
 * order: the counts are those before a crash. */
int sx__rec_counts_save(struct rec_state *s);
/* Loads the snapshot and replays the journal (live state). */
int sx__rec_counts_load(struct rec_state *s);
/* Writes the journal record of the current events.track call, if any, and a
 * snapshot when due. */
int sx__rec_journal_commit(struct rec_state *s);
int sx__rec_content_save(void);

/* ---- candidates (sources.c) ---- */
struct rec_cand {
	uint32_t item;
	float score;
	int source; /* enum rec_source */
	int32_t via; /* an item that led here (covisit), -1 */
};
enum { REC_SRC_COLLAB, REC_SRC_CONTENT, REC_SRC_COVISIT, REC_SRC_TRENDING, REC_SRC_OFFERS, REC_SRC_POPULAR,
       REC_SRC_SIMILAR, REC_SRC_SEGMENT, REC_SRC_COUNT };
extern const char *const sx__rec_source_names[REC_SRC_COUNT];
/* Each fills up to n candidates, best first, and returns their number (or a
 * negative error). user may be NULL (unknown user). The personal ones skip
 * the items the user has interacted with unless sx__rec->include_seen. */
int sx__rec_src_collab(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out);
int sx__rec_src_content(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out);
int sx__rec_src_covisit(struct rec_state *s, struct rec_user *u, size_t n, struct rec_cand *out);
/* kind -1: any; region NULL: any. */
int sx__rec_src_top(struct rec_state *s, int kind, const char *region, int window, size_t n, int source,
		    struct rec_cand *out);
void sx__rec_top_cache_clear(void);
int sx__rec_src_similar(struct rec_state *s, uint32_t item, size_t n, struct rec_cand *out);
/* The most popular items among the users of segment h (kind -1: any); 0 if
 * the state has no such segment. */
int sx__rec_src_segment(struct rec_state *s, uint64_t h, int kind, size_t n, struct rec_cand *out);
/* How much popularity the collaborative scores need: for up to REC_CALIB_USERS
 * users with at least 3 items, their newest item (first seen then) is hidden,
 * the rest folded in, and the item ranked among the unseen ones by
 * collaborative / max + w * popularity / max for each w of a grid; the w with
 * the best mean NDCG@10 wins (ties: the smaller). The sample is every
 * (bound / 4 REC_CALIB_USERS)-th user index, loaded into a live state if
 * absent (with personalization consent only), so it does not depend on who
 * is in memory; fewer users on large catalogues (the work is bounded to about
 * 4e7 multiply-adds). Kept per factor source for REC_CALIB_TTL (live) or the
 * state's life (evaluation). Without a model or sample users, popular is 0
 * and users 0. Loop thread. */
#define REC_CALIB_USERS 400
#define REC_CALIB_TTL (3600 * 1000LL)
const struct rec_calibration *sx__rec_calibrate(struct rec_state *s);

/* ---- Lua (lua.c) ---- */
int sx__rec_lua_start(struct sx_engine *e);
/* Runs strategy `name` for req (a map object) with req.user replaced by user
 * (the stored id, see sx_privacy_user_id); packs the result list. */
int sx__rec_run_strategy(const char *name, const msgpack_object *req, const char *user, size_t ulen, size_t n,
			 msgpack_packer *pk);
/* Runs it and returns the item indexes (at most n) for evaluation; options
 * (NULL: none) and diversity (NAN: none) become req.options, req.diversity. */
int sx__rec_run_strategy_ids(const char *name, const char *user, size_t ulen, int kind, size_t n,
			     const msgpack_object *options, double diversity, int32_t *out);

/* Readable reasons for item (sources in mask, bit per REC_SRC_*): up to max
 * strings into out. via: the co-visited item or -1; budget NAN: none; collab:
 * the collaborative reason already worked out ("" for none), or NULL to work it
 * out here; segment: the user's segment value (NULL: none). */
int sx__rec_reasons(struct rec_user *u, uint32_t item, uint32_t mask, int64_t via, double budget,
		    const char *location, const char *collab, const char *segment, char (*out)[160], int max);
/* Frees the ctx functions' reusable per-item scratch (plugin stop). */
void sx__rec_lua_marks_free(void);

/* ---- the registry's model (registry.c) ----
 * Config (SX_T_ARTIFACTS "rec/config"): {model, alias, pool_above, segment}. */
struct sx_req;
int sx__rec_registry_start(void);
void sx__rec_registry_stop(void);
/* Serves the configured registry model if its alias moved (or the config
 * changed) since the last call; else keeps the current source. Loop. */
void sx__rec_registry_sync(void);
/* Installs m (owned) as the plugin's own model: serving, or kept aside as the
 * fallback while a registry model serves. */
void sx__rec_own_model_install(struct rec_model *m);
void sx__rec_registry_pack_info(msgpack_packer *pk);
int sx__rec_m_config(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud);

/* ---- profile (recommend.c) ---- */
int sx__rec_pack_profile(struct rec_state *s, const char *id, size_t len, msgpack_packer *pk);

#endif
