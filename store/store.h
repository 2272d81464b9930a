/* store.h — the LMDB store: tables, group commit, read-your-writes overlay, backup.
 *
 * One LMDB environment in the data directory, one named database per table.
 * Values are opaque bytes (the callers encode MessagePack).
 *
 * Threads. The loop thread owns the write path: sx_store_put()/sx_store_del()
 * record changes in the filling batch, an in-memory overlay that reads on the
 * loop thread consult before LMDB, so a request sees its own writes and those
 * of earlier requests at once. At the end of a loop turn sx_store_flush()
 * hands the filling batch to the store's writer thread, which applies it in one
 * LMDB write transaction and commits it (with fsync under durability "full").
 * While it commits, the next batch fills; so every batch groups what several
 * loop turns wrote. The outcome comes back on the loop thread through the
 * commit callback given to sx_store_open(), with the batch's sequence number.
 *
 * A reply that depends on a batch must wait for that batch: bracket each
 * request with sx_store_req_begin()/sx_store_req_end(); the latter returns the
 * sequence that must be durable before the request may be answered (0 if the
 * request neither wrote nor read anything that is not yet durable).
 * If a batch fails, the batch filling behind it (which may have read its data)
 * fails with it; both are reported to the commit callback and discarded.
 *
 * Reads on the loop thread return views that stay valid until
 * sx_store_req_end() or sx_store_read_end() (whichever comes first).
 * Other threads read with sx_store_rtxn_begin()/_end() and never see the
 * overlay.
 *
 * The map grows by itself on MDB_MAP_FULL up to max_map_size; past that a
 * batch fails with SX_ENOSPC and nothing of it is applied.
 */
#ifndef SX_STORE_H
#define SX_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>

enum sx_table {
	SX_T_META,
	SX_T_SCRIPTS,
	SX_T_KV,
	SX_T_USERS,
	SX_T_USER_IDX,
	SX_T_ITEMS,
	SX_T_EVENTS,
	SX_T_EVENTS_BY_TIME,
	SX_T_INTERACTIONS,
	SX_T_COUNTERS,
	SX_T_MODELS,
	SX_T_ARTIFACTS,
	SX_T_EXPERIMENTS,
	SX_T_EXPOSURES,
	SX_T_SERIES,
	SX_T_COHORTS,
	SX_T_NOTIFICATIONS,
	SX_T_CONSENT,
	SX_T_AUDIT,
	SX_T_JOBS,
	SX_T_COUNT
};

/* The table's name in LMDB ("events", ...). */
const char *sx_store_table_name(int table);

struct sx_store_opts {
	const char *dir;
	size_t map_size;     /* initial map size in bytes (0: 64 MiB) */
	size_t max_map_size; /* growth limit (0: 1 TiB) */
	int relaxed;         /* durability "relaxed": no fsync per commit */
	uint32_t sync_interval_ms; /* relaxed: fsync at least this often (0: 1000) */
	uint32_t max_reader_age_ms; /* off-loop readers older than this fail their next
				     * sx_store_rtxn_check (0: no limit) */
	/* Called on the loop thread once per committed or failed batch. */
	void (*commit_cb)(uint64_t seq, int rc, void *ud);
	void *ud;
};

struct uv_loop_s;
struct sx_store;

/* Opens (creating if needed) the store in opts->dir on `loop`. Refuses a
 * directory another process holds (SX_EBUSY) and a corrupted or foreign data
 * file (SX_ECORRUPT), never overwriting it. Clears stale reader slots, runs
 * schema migrations, starts the writer thread. NULL on failure (see diag). */
struct sx_store *sx_store_open(struct uv_loop_s *loop, const struct sx_store_opts *opts);

/* Commits what is pending (waiting for it), stops the writer, closes LMDB.
 * Must be called on the loop thread while the loop can still run callbacks
 * (it drives the loop until the last batch's callback has run). */
void sx_store_close(struct sx_store *st);

MDB_env *sx_store_env(struct sx_store *st);
MDB_dbi sx_store_dbi(struct sx_store *st, int table);

/* Schema version kept in the meta table. */
#define SX_STORE_SCHEMA 1

struct sx_val {
	const void *data;
	size_t len;
};

/* ---- loop thread ---- */

/* Reads key: 0 and a view in *out, SX_ENOENT if absent, or another error. */
int sx_store_get(struct sx_store *st, int table, const void *key, size_t klen, struct sx_val *out);

/* Copies key and value into the filling batch. SX_E2BIG for a key over LMDB's
 * limit (511 bytes) or an empty key. */
int sx_store_put(struct sx_store *st, int table, const void *key, size_t klen,
		 const void *val, size_t vlen);
int sx_store_del(struct sx_store *st, int table, const void *key, size_t klen);

/* Visits keys in [lo, hi) in order (hi NULL: to the end of the table; lo NULL:
 * from the start), merging the filling and committing batches over LMDB.
 * cb returns 0 to go on, 1 to stop, or a negative error that is returned.
 * The callback may write; its writes are not visited by this scan. */
typedef int (*sx_store_scan_cb)(const struct sx_val *key, const struct sx_val *val, void *ud);
int sx_store_scan(struct sx_store *st, int table, const void *lo, size_t lolen,
		  const void *hi, size_t hilen, int reverse, sx_store_scan_cb cb, void *ud);

/* Savepoints within the filling batch, to undo a failed request's writes. */
uint64_t sx_store_savepoint(struct sx_store *st);
void sx_store_rollback(struct sx_store *st, uint64_t savepoint);

/* Writes discarded on the loop thread: by sx_store_rollback() (`tables` has
 * bit 1 << table set for each table it undid writes of; not called when it
 * undid nothing) or with a failed batch (all bits set; called before the
 * commit callback). A cache of what the loop thread read or wrote drops what
 * it derived from those tables, since reads no longer see those writes. */
typedef void (*sx_store_undo_cb)(uint64_t tables, void *ud);
#define SX_STORE_UNDO_MAX 8
/* Registers cb (again with the same cb and ud: no-op); SX_ELIMIT past
 * SX_STORE_UNDO_MAX. Listeners live as long as the store. */
int sx_store_on_undo(struct sx_store *st, sx_store_undo_cb cb, void *ud);

void sx_store_req_begin(struct sx_store *st);
/* Ends the request's reads; returns the batch sequence to wait for (or 0). */
uint64_t sx_store_req_end(struct sx_store *st);
/* Ends the loop thread's read transaction (views become invalid). */
void sx_store_read_end(struct sx_store *st);

/* Hands the filling batch to the writer if it is idle. Call once per loop turn. */
void sx_store_flush(struct sx_store *st);

/* The newest batch sequence known durable, and the one filling now. */
uint64_t sx_store_durable_seq(const struct sx_store *st);
uint64_t sx_store_filling_seq(const struct sx_store *st);
/* The sequence of the newest batch not yet durable (filling with writes, else
 * being committed), 0 if none: what work that wrote in earlier turns waits for. */
uint64_t sx_store_newest_seq(const struct sx_store *st);
/* Batches that failed since the store opened: work spanning many batches
 * compares it at its end with its value at its start. */
uint64_t sx_store_failed_batches(const struct sx_store *st);
/* Nothing filling and nothing committing. */
int sx_store_idle(const struct sx_store *st);
/* Bytes held by the filling batch (callers may throttle on it). */
size_t sx_store_pending_bytes(const struct sx_store *st);

struct sx_store_stats {
	size_t map_size, used_bytes, page_size;
	uint64_t entries[SX_T_COUNT];
	uint64_t commits, batches_failed, durable_seq;
	int relaxed;
	int sync_failed;	   /* relaxed: a periodic fsync failed; writes are refused */
	uint64_t syncs;		   /* relaxed: periodic fsyncs done since the store opened */
	uint64_t oldest_reader_ms; /* age of the oldest off-loop reader, 0 if none */
};
int sx_store_stats(struct sx_store *st, struct sx_store_stats *out);

/* ---- any thread ---- */

/* A read-only transaction for a thread other than the loop thread, e.g. a
 * job on the pool. Keep it short: while one is open the map cannot grow, so
 * writes that need a bigger map wait for it. At most SX_STORE_MAX_OFFLOOP at
 * once (SX_EBUSY beyond). */
#define SX_STORE_MAX_OFFLOOP 64
int sx_store_rtxn_begin(struct sx_store *st, MDB_txn **out);
void sx_store_rtxn_end(struct sx_store *st, MDB_txn *txn);
/* SX_ETIMEDOUT (with the age in the diagnostic) once `txn` is older than
 * max_reader_age_ms, else 0. Long scans call it as they go and give up,
 * which bounds how long a reader can hold back map growth and page reuse. */
int sx_store_rtxn_check(struct sx_store *st, MDB_txn *txn);
/* Age in ms of the oldest open off-loop reader (0: none). */
uint64_t sx_store_oldest_reader_ms(struct sx_store *st);

/* A compacted, consistent copy of the store into directory `path` (created;
 * must not hold a data file already). Blocking: run it off the loop thread. */
int sx_store_backup(struct sx_store *st, const char *path);

/* Big-endian encoders for keys that sort as numbers. */
static inline void sx_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline uint64_t sx_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}
/* A double by its bits, big-endian (values, not keys: negative numbers do not sort). */
static inline void sx_be_f64(uint8_t *p, double v)
{
	uint64_t b;
	memcpy(&b, &v, 8);
	sx_be64(p, b);
}
static inline double sx_get_be_f64(const uint8_t *p)
{
	uint64_t b = sx_get_be64(p);
	double v;
	memcpy(&v, &b, 8);
	return v;
}
static inline void sx_be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline uint32_t sx_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
