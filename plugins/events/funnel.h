/* funnel.h — the engine behind funnel.query (internal to the events plugin).
 *
 * A query reads one consistent snapshot: an LMDB read transaction, never the
 * loop thread's overlay, so it may run on a pool thread (the RPC method does)
 * or on the loop thread (the C API used by dashboards). Committed data only:
 * events.track answers once its batch is durable, so a client sees its own
 * tracked events.
 *
 * Cost. Candidates come from the per-minute/hour/day user bitmaps the ingest
 * keeps (internal.h 'M' records): users who did step 1 in [from, to). Those
 * that the bitmaps prove to stop at step 1 (never did step 2 in
 * [from, to + window), and no step-1 event in a partial edge minute) are
 * counted without reading an event. Only the others are read, and only their
 * events in [from, to + window): out of the cached per-hour blocks
 * (timeline.h; built from the store for the hours that have none or whose
 * events changed), gathered per user by a counting sort on the user index;
 * or, when grouping by an event property (the blocks hold no properties) or
 * with more distinct event names than blocks can intern, with one cursor
 * walked in user order over the events table (user | time | seq keys), the
 * work split by user index into parts that can run on different threads and
 * are merged at the end. Both give the same answer.
 */
#ifndef SX_EVENTS_FUNNEL_H
#define SX_EVENTS_FUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>
#include <msgpack.h>
#include <roaring/roaring.h>

#define SX_FUNNEL_STEPS_MAX 16
#define SX_FUNNEL_GROUPS_MAX 100
#define SX_FUNNEL_PARTS_MAX 4

/* One event of a user as the matcher sees it: its time and the steps whose
 * name it carries (bit i: step i). */
struct sx_funnel_ev {
	int64_t time;
	uint32_t mask;
};

/* The deepest run of steps one user completes, events in (time, seq) order.
 * A run starts at a step-1 event with from <= time < to and takes, for each
 * next step, the first later event of that step no later than start + window.
 * The first start reaching the greatest depth wins. Returns the depth
 * (0..nsteps); t[0..depth) gets the step times and *start the index of the
 * starting event (untouched when the depth is 0). */
int sx__funnel_match(const struct sx_funnel_ev *ev, size_t n, int nsteps, int64_t from, int64_t to,
		     int64_t window, int64_t *t, size_t *start);

struct sx_funnel;

/* 0: never use the hour blocks (tests and benchmarks compare both ways). */
extern int sx__funnel_blocks;

/* Parses and checks funnel.query's arguments {steps, from, to, window_ms?,
 * group_by?} (args is borrowed for the call only). NULL with SX_EINVAL or
 * SX_ENOMEM in the diagnostics. */
struct sx_funnel *sx__funnel_new(const msgpack_object *args);
void sx__funnel_free(struct sx_funnel *f);

/* Computes the candidates in txn and splits them into at most nparts parts
 * (1..SX_FUNNEL_PARTS_MAX). Returns the number of parts (>= 1) or an error. */
int sx__funnel_plan(struct sx_funnel *f, MDB_txn *txn, int nparts);
/* The event times a query reads from the hour blocks, [*from, *to): 1, or 0
 * when it reads none (grouped by a property: it walks the events table). */
int sx__funnel_block_span(const struct sx_funnel *f, int64_t *from, int64_t *to);

/* Reads the events of part i in txn. Parts are independent: each may run on
 * its own thread with its own read transaction (of the same snapshot or a
 * later one). 0 or an error (diag on the calling thread; also kept with
 * the part for sx__funnel_pack). */
int sx__funnel_run(struct sx_funnel *f, int part, MDB_txn *txn);

/* Merges the parts and packs funnel.query's result. Returns the first part's
 * error if one failed (its message restored into the diagnostics), else 0. */
int sx__funnel_pack(struct sx_funnel *f, msgpack_packer *pk);

/* Marks part i failed (for a part whose work never ran). */
void sx__funnel_fail(struct sx_funnel *f, int part, int rc, const char *msg);

/* A property or attribute value as groups key it: strings (cut to 64 bytes),
 * numbers and booleans as text, into buf (at least 65 bytes); (size_t)-1
 * for anything else or NULL. */
size_t sx__ev_value_string(const msgpack_object *o, char *buf);

/* Users read event by event, and users counted from bitmaps alone (stats). */
void sx__funnel_stats(const struct sx_funnel *f, uint64_t *scanned, uint64_t *pruned);

#endif
