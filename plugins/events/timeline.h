/* timeline.h — compact per-hour copies of the events for funnels (internal to
 * the events plugin).
 *
 * A block holds every stored event of one UTC hour as 8 bytes: user index
 * (32 bits), ms within the hour (22 bits) and an interned name id (10 bits),
 * sorted by (user, time, seq). Reading a funnel's users out of blocks costs a
 * few ns per event instead of a B-tree walk per user.
 *
 * Validity. A block remembers the count of the hour's "*" counter (every
 * event of the hour, read in the same read transaction it was built from)
 * and the generation of sx__tl_invalidate(). It serves a query whose read
 * transaction shows the same count, in the same generation: an event added
 * to the hour (also a late one) changes the count and the block is rebuilt;
 * privacy.erase and retention expiry, which delete events without changing
 * counts, bump the generation. So a query's answer is the one reading the
 * events would give. A block whose hour gained events is extended rather
 * than rebuilt when the gain lies at or after its latest event (the hour
 * being filled now): only those events are read, for the users active since
 * that minute, and the count proves that nothing earlier was added.
 *
 * privacy.erase and retention expiry bump the generation before their
 * deletions commit: a set acquired before that commit is known durable may
 * read a snapshot still holding the deleted events, so the blocks it builds
 * serve its own query and are never cached.
 *
 * Building. The missing hours of a set that lie next to each other are built
 * in one walk of the events table: the users active in any of them in index
 * order, one cursor positioning per user (none when the cursor already
 * stands on the user's first event of the run), each event appended to its
 * hour's block; only the name is decoded from the record.
 *
 * Memory. Blocks live in process memory, at most SX_TL_CAP_ENTRIES entries
 * (8 bytes each) in all; beyond that the blocks used least recently and not
 * in use by a query are dropped. Nothing is persisted: after a restart the
 * blocks are built again from the store, by the warm-up (below) or by the
 * first query of a range.
 *
 * Threads. The cache itself belongs to the loop thread: sx__tl_acquire() and
 * sx__tl_release() run there. sx__tl_fill() builds the missing blocks of a set
 * in a read transaction on any thread, sx__tl_fill_part() a slice of them on
 * several threads at once; name interning is locked.
 */
#ifndef SX_EVENTS_TIMELINE_H
#define SX_EVENTS_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>
#include <uv.h>

#define SX_TL_CAP_ENTRIES (16u << 20)
#define SX_TL_NAMES_MAX 1023
#define SX_TL_PARTS_MAX 4

struct sx_tl_set; /* the blocks of the hours a query reads */

/* The blocks of the hours meeting [from, to), as valid in txn: cached ones
 * are referenced, stale or missing ones are marked for sx__tl_fill(). Loop
 * thread. NULL with the diagnostics set on failure. */
struct sx_tl_set *sx__tl_acquire(MDB_txn *txn, int64_t from, int64_t to);

/* Builds the set's missing blocks in txn. 0, SX_ELIMIT when more than
 * SX_TL_NAMES_MAX distinct event names exist (the caller reads the events
 * instead), or a store error. */
int sx__tl_fill(struct sx_tl_set *s, MDB_txn *txn);

/* Builds the part-th of nparts slices (by user index) of the set's hours
 * that need a whole build, in txn; not the hours to extend. The parts run at
 * once, on different threads, each with its own read transaction; the one
 * that finishes last joins their blocks into the set if they all read the
 * same snapshot (mdb_txn_id) and succeeded. Hours left unbuilt (other
 * snapshots; hours to extend) are for sx__tl_fill() afterwards: see
 * sx__tl_pending(). 0, or an error of this part (the last one: of any part). */
int sx__tl_fill_part(struct sx_tl_set *s, MDB_txn *txn, int part, int nparts);

/* Whether the set still has hours to build (*build) or extend (*extend). */
int sx__tl_pending(const struct sx_tl_set *s, size_t *build, size_t *extend);

/* The interned id of an event name, 0 if no block holds it. Any thread. */
uint32_t sx__tl_name_id(const char *name, size_t len);

/* Visits the set's entries hour by hour (each hour's in (user, time, seq)
 * order): fn(ud, user, time, name_id) for each event with from <= time < to. */
typedef void (*sx_tl_fn)(void *ud, uint32_t user, int64_t time, uint32_t name);
void sx__tl_each(const struct sx_tl_set *s, int64_t from, int64_t to, sx_tl_fn fn, void *ud);

/* The set's hours, and the entries of its i-th hour (NULL: none): each
 * entry is user << 32 | ms in the hour << 10 | name id, sorted. */
size_t sx__tl_nhours(const struct sx_tl_set *s);
const uint64_t *sx__tl_block(const struct sx_tl_set *s, size_t i, int64_t *hour, size_t *n);

/* Installs the blocks the set built, drops its references, frees it. Loop
 * thread; s may be NULL. */
void sx__tl_release(struct sx_tl_set *s);

/* Marks every block stale (events were deleted). Loop thread. */
void sx__tl_invalidate(void);

/* Frees every block (plugin stop). Loop thread. */
void sx__tl_clear(void);

/* Warm-up: on the loop's first turn after sx__tl_warm_start() and every
 * minute after, the blocks of the `days` days before the latest event's hour
 * (the latest event stamped no later than 5 minutes past the wall clock;
 * fewer days when they would hold more than half of SX_TL_CAP_ENTRIES) that
 * are missing or stale are built on the pool, in one read transaction that
 * respects max_reader_age_ms; the closed hours then stay cached, the current
 * one is extended. idle_cb (may be NULL) runs on the loop after each build
 * that went to the pool, whatever its outcome. days 0: never. Loop thread. */
int sx__tl_warm_start(uv_loop_t *loop, uint32_t days, void (*idle_cb)(void));
/* Runs the warm-up's check now (tests; no-op when not started). */
void sx__tl_warm_now(void);
/* A warm-up build is on the pool. */
int sx__tl_warm_busy(void);
/* 1 while a warm-up build runs over hours that [from, to) reads. */
int sx__tl_warm_covers(int64_t from, int64_t to);
/* Waits for a build on the pool (running the loop) and stops the timer. */
void sx__tl_warm_stop(void);

struct sx_tl_warm_stats {
	uint32_t days;
	int busy;
	uint64_t runs, failed; /* builds that went to the pool; failed ones */
	uint64_t last_ms;      /* the last build's wall time */
	int64_t from, to;      /* the range of the last check (0, 0: none yet) */
};
void sx__tl_warm_stats(struct sx_tl_warm_stats *out);

/* Entries cached now, blocks built and reused since start (stats). */
void sx__tl_stats(uint64_t *entries, uint64_t *built, uint64_t *reused);
/* Of the blocks built, those made by extending the previous block of their
 * hour with the events after its latest one (stats). */
uint64_t sx__tl_extended(void);

#endif
