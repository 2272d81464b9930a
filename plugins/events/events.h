/* events.h — users, items and behavioural events: the events plugin's C API.
 *
 * Other plugins (recommend, predict, experiments, ...) read what the events
 * plugin stores through these functions only, never through its tables.
 * Everything here is valid once the events plugin has started (it comes right
 * after `system` in core/plugins.c) and until it stops.
 *
 * Threads. Every read function takes `txn`:
 *   - NULL: the caller is on the loop thread; reads see the filling and
 *     committing batches (a request sees its own writes and those of earlier
 *     requests). Views end at sx_store_req_end()/sx_store_read_end().
 *   - a read transaction from sx_store_rtxn_begin(): any thread (a job on the
 *     pool); reads see only committed data. Views end with the transaction.
 * Callbacks must not write to the store when txn is not NULL.
 *
 * Users. A user id is a string of 1 to 128 bytes of UTF-8. The first time an
 * id is seen (users.put or an event) it gets a dense index: 0, 1, 2, ... in
 * order of first sight, never reused, never changed. Indexes may have gaps (a
 * failed request or batch consumes the indexes it allocated), so size arrays
 * with sx_events_user_bound(), not a count. Sets of users are CRoaring bitmaps
 * of indexes.
 *
 * Events. An event is (user, name, time in ms since the Unix epoch, optional
 * item id, optional properties map) plus a sequence number that orders events
 * of the same millisecond in arrival order. Times are 0 .. SX_EVENTS_TIME_MAX.
 * Ranges are half-open: [from, to).
 *
 * Errors: 0 or a negative SX_E* code with the message in sx_diag_last():
 * SX_ENOENT (no such user/item/cohort), SX_EINVAL (bad argument),
 * SX_ECORRUPT (a stored record that does not decode), SX_ENOMEM, SX_EIO.
 */
#ifndef SX_EVENTS_H
#define SX_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>
#include <msgpack.h>
#include <roaring/roaring.h>

#define SX_EVENTS_ID_MAX 128                 /* bytes of a user, item or event name */
#define SX_EVENTS_TIME_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define SX_EVENTS_BATCH_MAX 10000            /* events per events.track call */
#define SX_EVENTS_VECTOR_MAX 4096            /* dimensions of an item's content vector */

/* ---- users ---- */

/* The dense index of user `id`: 0 and *out, or SX_ENOENT if never seen. */
int sx_events_user_index(MDB_txn *txn, const char *id, size_t len, uint32_t *out);

/* The id of user index `idx`, copied into buf (NUL-terminated; size must be
 * at least SX_EVENTS_ID_MAX + 1): 0 and *len, or SX_ENOENT. */
int sx_events_user_id(MDB_txn *txn, uint32_t idx, char *buf, size_t size, size_t *len);

/* One more than the largest index handed out so far (loop thread). */
uint32_t sx_events_user_bound(void);

/* The time of the user's earliest event: 0 and *out, or SX_ENOENT if the
 * user has no event. */
int sx_events_user_first_seen(MDB_txn *txn, uint32_t idx, int64_t *out);

/* The user's record as stored: a MessagePack map {id, index, attributes?,
 * signup_time?, created}. *out is a view (see Threads). */
int sx_events_user_record(MDB_txn *txn, const char *id, size_t len, const void **out, size_t *outlen);

/* ---- events ---- */

struct sx_event {
	uint32_t user;
	int64_t time;
	uint64_t seq;
	const char *name; /* not NUL-terminated */
	size_t name_len;
	const char *item; /* NULL if the event has no item */
	size_t item_len;
	const void *props; /* a MessagePack map, or NULL */
	size_t props_len;
};

/* Gets each event; everything in *ev is a view valid during the call only.
 * Returns 0 to go on, 1 to stop, or a negative error that the scan returns. */
typedef int (*sx_events_cb)(const struct sx_event *ev, void *ud);

/* The events of one user with from <= time < to, in time (then arrival)
 * order, or newest first when reverse is set. A short scan: events are kept
 * by (user, time, seq). */
int sx_events_user_scan(MDB_txn *txn, uint32_t user, int64_t from, int64_t to, int reverse,
			sx_events_cb cb, void *ud);

/* Every event with from <= time < to, in time order. Kept by (time, seq):
 * the scan costs one extra lookup per event. */
int sx_events_range_scan(MDB_txn *txn, int64_t from, int64_t to, sx_events_cb cb, void *ud);

/* The users who did event `name` ("*": any event) at a time in [from, to),
 * exact at minute resolution: from and to are rounded down to the minute.
 * Built from the live metrics' bitmaps (no event scan). A new bitmap that
 * the caller frees with roaring_bitmap_free(), or NULL (diag). */
roaring_bitmap_t *sx_events_users_did(MDB_txn *txn, const char *name, int64_t from, int64_t to);

/* The users first seen (earliest event) in [from, to), at day resolution:
 * from and to are rounded down to the day. Caller frees; NULL on error. */
roaring_bitmap_t *sx_events_users_first_seen(MDB_txn *txn, int64_t from, int64_t to);

/* ---- items ---- */

enum sx_item_kind { SX_ITEM_TRIP, SX_ITEM_DESTINATION, SX_ITEM_ACTIVITY, SX_ITEM_OFFER, SX_ITEM_KINDS };

/* "trip", "destination", ...; NULL for an unknown kind. */
const char *sx_item_kind_name(int kind);
/* The kind named by s, or -1. */
int sx_item_kind_parse(const char *s, size_t len);

struct sx_item {
	const char *id; /* views, see Threads */
	size_t id_len;
	int kind;
	const void *attrs; /* a MessagePack map, or NULL */
	size_t attrs_len;
	const void *vector; /* dim float32 values, little-endian, unaligned; NULL if none */
	uint32_t dim;
	int64_t updated;    /* ms since epoch */
};

/* Item `id`: 0 and *out, or SX_ENOENT. */
int sx_events_item_get(MDB_txn *txn, const char *id, size_t len, struct sx_item *out);

/* The item's content vector as floats: copies min(dim, n) values into out
 * and returns the item's dimension (0 if it has no vector). */
uint32_t sx_item_vector(const struct sx_item *it, float *out, uint32_t n);

typedef int (*sx_items_cb)(const struct sx_item *it, void *ud);
/* Every item of `kind` (-1: all kinds) in id order; cb as sx_events_cb. */
int sx_events_item_scan(MDB_txn *txn, int kind, sx_items_cb cb, void *ud);

/* ---- observers ----
 *
 * Other plugins keep derived state (recommendation profiles, co-visitation)
 * current through these callbacks. They run on the loop thread inside the
 * request that caused them, before it is answered; they may read the store
 * with txn NULL (they see the request's writes) and write to it (the writes
 * join the request's batch). They must not fail the request: they return
 * nothing. At most 8 observers of each kind; registration order is call order.
 *
 * Track: called once per accepted event of an events.track call, after the
 * call's events are stored (ev->seq is 0: not known to observers; ev->props
 * is the event's properties packed as a MessagePack map, or NULL), then once
 * with ev NULL to mark the end of the call. A retried call answered from its
 * client_id is not observed again.
 *
 * Items: called after items.put (it: the stored item) and items.delete (it
 * NULL) with the item's id. */
typedef void (*sx_events_track_fn)(const struct sx_event *ev, void *ud);
typedef void (*sx_events_item_fn)(const char *id, size_t len, const struct sx_item *it, void *ud);
/* Users: called with the user's index after a users.put (or the demo loader)
 * wrote the user's record, so that caches of user attributes can drop it; the
 * request may still fail and roll back, so observers only invalidate. */
typedef void (*sx_events_user_fn)(uint32_t idx, void *ud);
/* SX_ELIMIT when full. */
int sx_events_on_track(sx_events_track_fn fn, void *ud);
int sx_events_on_item(sx_events_item_fn fn, void *ud);
int sx_events_on_user(sx_events_user_fn fn, void *ud);

/* ---- cohorts ---- */

/* The members of saved cohort `name` as of its last refresh. Caller frees;
 * NULL with SX_ENOENT in the diagnostics if there is no such cohort. */
roaring_bitmap_t *sx_events_cohort_users(MDB_txn *txn, const char *name, size_t len);

/* ---- queries (loop thread) ----
 * The read methods of docs/API.md as C functions, for plugins that compose
 * them (dashboards, exports): `args` is the method's argument map (NULL: no
 * arguments), borrowed for the call; the result is packed with pk exactly as
 * the method returns it. On failure they return the method's error (SX_EINVAL,
 * SX_ENOENT, ...) with the message in sx_diag_last(), and what they packed
 * must be discarded. They read with txn NULL (see Threads), except the funnel,
 * which reads committed data in its own read transaction and keeps per-hour
 * copies of the events in memory (plugins/events/timeline.h). */
int sx_events_metrics_query(const msgpack_object *args, msgpack_packer *pk);  /* metrics.query */
int sx_events_metrics_active(const msgpack_object *args, msgpack_packer *pk); /* metrics.active */
int sx_events_funnel_query(const msgpack_object *args, msgpack_packer *pk);   /* funnel.query */
/* funnel.query for a dashboard panel, without computing on the loop but the
 * first time: the answer is the last one computed for the same arguments
 * (map keys in any order), with `computed_at` (wall ms of the snapshot it
 * read) added. When that is at least 1 s old and a store batch committed
 * since, one recomputation starts on the pool (planned here, as funnel.query
 * is) and replaces it when done, for a later call; until then, and if it
 * fails, the older answer is served. Arguments never seen before (or dropped:
 * 64 entries, least recently used out) are computed here, synchronously, and
 * a failure there returns the error like sx_events_funnel_query and caches
 * nothing. privacy.erase and retention expiry drop every entry and discard
 * recomputations in flight. Loop thread. */
int sx_events_funnel_query_cached(const msgpack_object *args, msgpack_packer *pk);
struct sx_events_funnel_cache_stats {
	uint64_t entries;       /* cached now */
	uint64_t hits;          /* calls answered from the cache */
	uint64_t sync;          /* calls computed on the loop (misses) */
	uint64_t revalidations; /* recomputations started on the pool */
	uint64_t failed;        /* recomputations that failed (the entry kept its answer) */
};
void sx_events_funnel_cache_stats(struct sx_events_funnel_cache_stats *out);
int sx_events_retention(const msgpack_object *args, msgpack_packer *pk);      /* cohort.retention */
int sx_events_cohort_size(const msgpack_object *args, msgpack_packer *pk);    /* cohort.size */
int sx_events_cohort_list(msgpack_packer *pk);                                /* cohort.list */

/* ---- privacy (loop thread only; writes go to the filling batch) ---- */

struct sx_events_erased {
	uint64_t users;      /* the profile and its index entries (0 or 1) */
	uint64_t events;     /* events removed (each under both of its keys) */
	uint64_t first_seen; /* the first-seen record (0 or 1) */
	uint64_t bitmaps;    /* counter and first-seen bitmaps the user was taken out of */
	uint64_t cohorts;    /* saved cohorts the user was taken out of */
};

/* Removes everything the events plugin keeps about user `id`: the profile,
 * both index entries, every event (both keys), the first-seen record, and the
 * user's bit in every counter, first-seen and cohort bitmap; counts and sums
 * stay (anonymous aggregates) and cohort sizes drop by one. The index is never
 * handed out again. The cost is one pass over the counters and cohorts tables.
 * 0 with the user's index in *idx, SX_ENOENT if the id was never seen (nothing
 * done), or a store error (the caller rolls the request back). */
int sx_events_user_erase(const char *id, size_t len, uint32_t *idx, struct sx_events_erased *out);

/* Packs {profile, first_seen, cohorts = [names], events = [{name, time,
 * item, properties}]} for user `id` of index `idx`: everything the events
 * plugin keeps about the user. SX_ENOENT if the id was never seen. */
int sx_events_user_export(const char *id, size_t len, uint32_t idx, msgpack_packer *pk);

/* Deletes up to `max` events with time < before, oldest first (both keys);
 * counters, first-seen records and cohorts stay. *deleted gets the count.
 * Returns 1 if older events remain, 0 if none, or a store error. */
int sx_events_expire(int64_t before, uint32_t max, uint32_t *deleted);

#endif
