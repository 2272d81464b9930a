/* internal.h — the events plugin's key layouts, codecs and shared state.
 * Not an API: other plugins use events.h.
 *
 * Tables and keys (all integers big-endian so that keys sort as numbers):
 *   users          user id                              -> {id, index, attributes?, signup_time?, created}
 *   user_idx       u32 index                            -> user id
 *   events         u32 user | u64 time | u64 seq        -> [name, item|nil, properties|nil]
 *   events_by_time u64 time | u64 seq                   -> u32 user
 *   items          'i' id                               -> {id, kind, attributes?, vector? (bin f32 LE), updated}
 *                  'k' kind(u8) id                      -> "" (index by kind)
 *   counters       'M' gran event \0 dim \0 u64 bucket value
 *                                                       -> [count, sum, nsum, users bitmap (bin)]
 *                  'D' event                            -> {dimensions = [..], value = "prop"}
 *                  'F' u64 day                          -> users first seen that day (bitmap)
 *                  'U' u32 user                         -> u64 first-seen time
 *                  'B'                                  -> u64 boot epoch
 *                  'N'                                  -> u32 user bound left by privacy.erase
 *                  'K' client_id                        -> {at, result (bin: packed reply)}
 *                  'X' u64 expiry | client_id           -> "" (expiry order of 'K')
 *   cohorts        'd' name                             -> {name, rule, size, refreshed, created}
 *                  'b' name                             -> users bitmap
 * Bitmaps are CRoaring's portable serialization.
 */
#ifndef SX_EVENTS_INTERNAL_H
#define SX_EVENTS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <roaring/roaring.h>

#include "plugins/events/events.h"

struct sx_engine;
struct sx_val;

extern struct sx_engine *sx__ev_eng;

#define SX_EV_MIN_MS 60000LL
#define SX_EV_HOUR_MS 3600000LL
#define SX_EV_DAY_MS 86400000LL
#define SX_EV_WEEK_MS (7 * SX_EV_DAY_MS)
#define SX_EV_CLIENT_TTL_MS (7 * SX_EV_DAY_MS)
#define SX_EV_DIM_MAX 8          /* dimensions per event name */
#define SX_EV_DIM_VALUE_MAX 200  /* longer dimension values are not counted */
#define SX_EV_PROPS_MAX 16384    /* packed bytes of an event's properties */
#define SX_EV_ATTRS_MAX 65536    /* packed bytes of a user's or item's attributes */
#define SX_EV_NEST_MAX 8         /* nesting of properties and attributes */

/* Granularities of the live metrics, also the key byte. */
enum { SX_EV_MINUTE = 'm', SX_EV_HOUR = 'h', SX_EV_DAY = 'd' };
/* Periods for cohorts and retention. */
enum { SX_EV_PDAY, SX_EV_PWEEK, SX_EV_PMONTH };

/* ---- time arithmetic (UTC) ---- */
int64_t sx__ev_gran_ms(int gran);
int64_t sx__ev_floor(int64_t t, int64_t step);  /* floor to a multiple of step (t may be < 0) */
/* Start of the period (day, week from Monday, calendar month) holding t. */
int64_t sx__ev_period_start(int period, int64_t t);
/* Start of the period n periods after the one starting at start. */
int64_t sx__ev_period_add(int period, int64_t start, int n);
int sx__ev_period_parse(const char *s, size_t len); /* -1 if unknown */
int sx__ev_gran_parse(const char *s, size_t len);   /* 0 if unknown */

/* ---- keys ---- */
#define SX_EV_EVKEY 20
#define SX_EV_TKEY 16
void sx__ev_event_key(uint8_t *k, uint32_t user, int64_t time, uint64_t seq);
void sx__ev_time_key(uint8_t *k, int64_t time, uint64_t seq);
/* Builds 'M' gran event \0 dim \0 bucket value into k (size >= 512); returns
 * the length, or 0 if it would not fit an LMDB key. */
size_t sx__ev_metric_key(uint8_t *k, int gran, const char *event, size_t elen, const char *dim,
			 size_t dlen, int64_t bucket, const char *val, size_t vlen);
/* Length of the prefix before the bucket ('M' gran event \0 dim \0). */
size_t sx__ev_metric_prefix(uint8_t *k, int gran, const char *event, size_t elen, const char *dim,
			    size_t dlen);
/* Where the value starts in a metric key (the same at every granularity). */
#define SX_EV_METRIC_VALUE_OFF(elen, dlen) ((size_t)(elen) + (size_t)(dlen) + 12)

/* ---- counter records ---- */
struct sx_ev_counter {
	uint64_t count, nsum;
	double sum;
	roaring_bitmap_t *users; /* owned; may be NULL (empty) */
};
/* Decodes a stored record, merging into c (count/sum added, users or'ed). */
int sx__ev_counter_merge(struct sx_ev_counter *c, const void *data, size_t len);
/* A stored record read in place, its bitmap left serialized. */
struct sx_ev_record {
	uint64_t count, nsum;
	double sum;
	uint64_t users;     /* the bitmap's cardinality, from its header */
	const void *bitmap; /* points into the record's bytes (valid as long as they are); blen 0: no user */
	size_t blen;
};
/* Reads a record without decoding its bitmap: 0 or SX_ECORRUPT. The bitmap's
 * header is checked against its length (as sx__ev_bitmap_decode does), not
 * its containers. */
int sx__ev_counter_peek(const void *data, size_t len, struct sx_ev_record *r);
/* Packs c into sb (cleared first). */
int sx__ev_counter_encode(const struct sx_ev_counter *c, msgpack_sbuffer *sb);
/* A bitmap from stored bytes (NULL and SX_ECORRUPT if they do not decode). */
roaring_bitmap_t *sx__ev_bitmap_decode(const void *data, size_t len);
/* Serializes into sb (cleared first). */
int sx__ev_bitmap_encode(const roaring_bitmap_t *b, msgpack_sbuffer *sb);
/* The cardinality of a serialized bitmap, summed from the per-container
 * cardinalities its header holds (no decode); 0 for len 0. SX_ECORRUPT if the
 * header does not fit len exactly. */
int sx__ev_bitmap_card(const void *data, size_t len, uint64_t *card);
/* Ors a serialized bitmap (len may be 0) into acc with roaring's lazy union:
 * call roaring_bitmap_repair_after_lazy(acc) before reading acc. 0 or
 * SX_ECORRUPT (acc unchanged). */
int sx__ev_bitmap_or_lazy(roaring_bitmap_t *acc, const void *data, size_t len);

/* ---- reads on the loop thread (txn NULL) or in a read transaction ---- */
int sx__ev_get(MDB_txn *txn, int table, const void *key, size_t klen, struct sx_val *out);
typedef int (*sx__ev_scan_cb)(const struct sx_val *key, const struct sx_val *val, void *ud);
int sx__ev_scan(MDB_txn *txn, int table, const void *lo, size_t lolen, const void *hi, size_t hilen,
		int reverse, sx__ev_scan_cb cb, void *ud);

/* Visits, through cb, the records of series (event, dim, any value) that
 * cover [from, to) (both floored to minutes) once: day buckets inside, hour
 * and minute buckets at the ragged edges. Ingest and erasure write the three
 * granularities of a series together, so the union of the visited bitmaps is
 * that of the finest buckets of the range. */
int sx__ev_series_cover(MDB_txn *txn, const char *event, size_t elen, const char *dim, size_t dlen,
			int64_t from, int64_t to, sx__ev_scan_cb cb, void *ud);
/* The union of the bitmaps of series (event, dim, value) over [from, to),
 * using day buckets inside and hour/minute buckets at the ragged edges.
 * dim "" and value "" is the series of all the event's occurrences. */
roaring_bitmap_t *sx__ev_series_users(MDB_txn *txn, const char *event, size_t elen, const char *dim,
				      size_t dlen, const char *val, size_t vlen, int64_t from,
				      int64_t to);

/* ---- validation ---- */
/* Checks a user-supplied value: no NaN/Inf, string keys, nesting and size
 * limits. `what` names it in the message. 0 or SX_EINVAL. */
int sx__ev_check_value(const msgpack_object *o, const char *what, size_t max_bytes);
/* A string id of 1..SX_EVENTS_ID_MAX bytes of UTF-8 without NUL. */
int sx__ev_check_id(const msgpack_object *o, const char *what);

/* ---- msgpack helpers ---- */
/* Value of key in a map object, NULL if absent. */
const msgpack_object *sx__ev_map_get(const msgpack_object *map, const char *key);
/* Unpacks a stored record into zone; SX_ECORRUPT if it is not one object. */
int sx__ev_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *out);

/* An event name's metric configuration: dimensions and the summed property. */
struct sx_ev_dims {
	char event[SX_EVENTS_ID_MAX];
	size_t elen;
	int ndims;
	char dims[SX_EV_DIM_MAX][SX_EVENTS_ID_MAX + 1];
	char value[SX_EVENTS_ID_MAX + 1];
	struct sx_ev_dims *next;
};

/* Loads the configuration of event (defaults: no dimension, value = "value"). */
int sx__ev_dims_load(const char *event, size_t elen, struct sx_ev_dims *d);

/* ---- method registration of the other files ---- */
int sx__ev_metrics_start(struct sx_engine *e);
int sx__ev_analytics_start(struct sx_engine *e);
/* Waits for the funnel queries in flight and stops cohort refreshes. */
void sx__ev_analytics_stop(struct sx_engine *e);
/* Drops every cached panel funnel (sx_events_funnel_query_cached) and
 * discards the recomputations in flight: events were deleted. */
void sx__ev_funnel_cache_clear(void);
/* demo.c: registers demo.load; with cfg->demo and no users yet, starts the
 * small demo load. stop() cancels a load in progress. */
int sx__ev_demo_start(struct sx_engine *e);
void sx__ev_demo_stop(struct sx_engine *e);

/* ---- ingest ---- */
struct sx_ev_batch;
struct sx_ev_batch *sx__ev_batch_new(void);
/* Validates and stores one event (a map as events.track takes it); on a bad
 * event returns SX_EINVAL with the reason and stores nothing of it. */
int sx__ev_batch_add(struct sx_ev_batch *b, const msgpack_object *ev, int64_t now);
/* Writes the batch's metric updates; frees it in every case. */
int sx__ev_batch_finish(struct sx_ev_batch *b);
void sx__ev_batch_free(struct sx_ev_batch *b);
/* Stores a user record (creating the index if new). attrs may be NULL. */
int sx__ev_user_put(const char *id, size_t len, const msgpack_object *attrs, int64_t signup,
		    int has_signup, uint32_t *idx, int *created);
int sx__ev_item_put(const char *id, size_t len, int kind, const msgpack_object *attrs,
		    const float *vec, uint32_t dim);
/* Forgets what events.c keeps across batches: every user's index and
 * first-seen time, and the 'M' counter records it last wrote. A writer that
 * deletes users or changes 'U' or 'M' records outside events.c calls it. */
void sx__ev_user_cache_clear(void);

#endif
