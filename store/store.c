#include "store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/sx.h"

static const char *const table_names[SX_T_COUNT] = {
	[SX_T_META] = "meta",
	[SX_T_SCRIPTS] = "scripts",
	[SX_T_KV] = "kv",
	[SX_T_USERS] = "users",
	[SX_T_USER_IDX] = "user_index",
	[SX_T_ITEMS] = "items",
	[SX_T_EVENTS] = "events",
	[SX_T_EVENTS_BY_TIME] = "events_by_time",
	[SX_T_INTERACTIONS] = "interactions",
	[SX_T_COUNTERS] = "counters",
	[SX_T_MODELS] = "models",
	[SX_T_ARTIFACTS] = "artifacts",
	[SX_T_EXPERIMENTS] = "experiments",
	[SX_T_EXPOSURES] = "exposures",
	[SX_T_SERIES] = "series",
	[SX_T_COHORTS] = "cohorts",
	[SX_T_NOTIFICATIONS] = "notifications",
	[SX_T_CONSENT] = "consent",
	[SX_T_AUDIT] = "audit",
	[SX_T_JOBS] = "jobs",
};

const char *sx_store_table_name(int table)
{
	return table >= 0 && table < SX_T_COUNT ? table_names[table] : "?";
}

/* One change in a batch. Key and value follow the header. */
struct entry {
	struct entry *chain;   /* next in hash bucket */
	struct entry *shadow;  /* the older entry for the same key in this batch */
	uint64_t hash;         /* of table and key: bucket growth and chain walks skip the keys */
	uint32_t table, klen, vlen;
	int del;
	int stale; /* writer thread only: a newer entry of this batch has the same key */
	unsigned char data[];
};

/* Entries are carved from chunks freed with their batch. */
struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct batch {
	uint64_t seq;
	struct chunk *chunks;
	struct entry **log;
	size_t n, cap;
	/* The same entries per table, so that a scan looks at its table only. */
	struct entry **tl[SX_T_COUNT];
	size_t tn[SX_T_COUNT], tcap[SX_T_COUNT];
	struct entry **bucket;
	size_t nbucket;
	size_t bytes;
};

struct sx_store {
	MDB_env *env;
	MDB_dbi dbi[SX_T_COUNT];
	int lock_fd;
	size_t map_size, max_map_size;
	int relaxed;
	uint32_t sync_interval_ms;
	void (*commit_cb)(uint64_t, int, void *);
	void *ud;

	uv_loop_t *loop;
	uv_async_t async;
	uv_timer_t grow_timer;
	int closing;

	/* loop thread */
	MDB_txn *rtxn;
	int rtxn_live;
	struct batch *filling, *committing;
	uint64_t next_seq, durable_seq, req_seq;
	uint64_t commits, failed;

	/* writer thread hand-off, under mu */
	pthread_t writer;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct batch *todo, *done;
	int done_rc;
	char done_msg[256];
	int stop;
	atomic_int offloop_readers;
	/* relaxed: the loop committed a batch itself that no sync covers yet. Set (and the
	 * writer woken) by the first such commit only; cleared by the writer as it syncs. */
	atomic_int inline_dirty;
	int flushing;
	/* relaxed: set by the writer when a periodic fsync failed; sticky */
	atomic_int sync_failed;
	_Atomic uint64_t syncs;
	char sync_msg[200];

	/* off-loop readers' start times, for max_reader_age_ms */
	pthread_mutex_t readers_mu;
	struct { MDB_txn *txn; uint64_t start_ms; } readers[SX_STORE_MAX_OFFLOOP];
	uint32_t max_reader_age_ms;

	struct {
		sx_store_undo_cb cb;
		void *ud;
	} undo[SX_STORE_UNDO_MAX];
	int nundo;
};

/* Set by the writer when a batch needs a bigger map; not an SX_E* code. */
#define NEED_GROW 1

/* ---- batches ---- */

static uint64_t hash_key(uint32_t table, const void *key, size_t len)
{
	return XXH3_64bits_withSeed(key, len, table);
}

/* nbucket: a power of two (at least 256), sized for what the batch will likely
 * hold, so that a steady load does not rehash its way up in every batch. */
static struct batch *batch_new(uint64_t seq, size_t nbucket)
{
	struct batch *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->seq = seq;
	b->nbucket = nbucket < 256 ? 256 : nbucket;
	b->bucket = calloc(b->nbucket, sizeof(*b->bucket));
	if (!b->bucket) {
		free(b);
		return NULL;
	}
	return b;
}

static void *batch_alloc(struct batch *b, size_t size)
{
	size = (size + 15) & ~(size_t)15;
	struct chunk *c = b->chunks;
	if (!c || c->cap - c->used < size) {
		size_t cap = size > (256u << 10) ? size : (256u << 10);
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = b->chunks;
		b->chunks = c;
	}
	void *p = (char *)c->data + c->used;
	c->used += size;
	return p;
}

static void batch_free(struct batch *b)
{
	if (!b)
		return;
	while (b->chunks) {
		struct chunk *c = b->chunks;
		b->chunks = c->next;
		free(c);
	}
	free(b->log);
	for (int t = 0; t < SX_T_COUNT; t++)
		free(b->tl[t]);
	free(b->bucket);
	free(b);
}

static struct entry **batch_slot_h(struct batch *b, uint64_t h, uint32_t table, const void *key, size_t klen)
{
	struct entry **pp = &b->bucket[h & (b->nbucket - 1)];
	for (; *pp; pp = &(*pp)->chain) {
		struct entry *e = *pp;
		if (e->hash == h && e->table == table && e->klen == klen && memcmp(e->data, key, klen) == 0)
			return pp;
	}
	return pp;
}

static int batch_grow(struct batch *b)
{
	size_t nb = b->nbucket * 2;
	struct entry **nbk = calloc(nb, sizeof(*nbk));
	if (!nbk)
		return SX_ENOMEM;
	for (size_t i = 0; i < b->nbucket; i++) {
		struct entry *e = b->bucket[i], *next;
		for (; e; e = next) {
			next = e->chain;
			size_t h = e->hash & (nb - 1);
			e->chain = nbk[h];
			nbk[h] = e;
		}
	}
	free(b->bucket);
	b->bucket = nbk;
	b->nbucket = nb;
	return 0;
}

static int batch_add(struct batch *b, uint32_t table, const void *key, size_t klen,
		     const void *val, size_t vlen, int del)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct entry **log = realloc(b->log, cap * sizeof(*log));
		if (!log)
			return SX_ENOMEM;
		b->log = log;
		b->cap = cap;
	}
	if (b->tn[table] == b->tcap[table]) {
		size_t cap = b->tcap[table] ? b->tcap[table] * 2 : 16;
		struct entry **tl = realloc(b->tl[table], cap * sizeof(*tl));
		if (!tl)
			return SX_ENOMEM;
		b->tl[table] = tl;
		b->tcap[table] = cap;
	}
	if (b->n >= b->nbucket && batch_grow(b) < 0)
		return SX_ENOMEM;
	struct entry *e = batch_alloc(b, sizeof(*e) + klen + vlen);
	if (!e)
		return SX_ENOMEM;
	e->table = table;
	e->klen = (uint32_t)klen;
	e->vlen = (uint32_t)vlen;
	e->del = del;
	e->hash = hash_key(table, key, klen);
	memcpy(e->data, key, klen);
	if (vlen)
		memcpy(e->data + klen, val, vlen);
	struct entry **pp = batch_slot_h(b, e->hash, table, key, klen);
	e->shadow = *pp;
	e->chain = *pp ? (*pp)->chain : NULL;
	*pp = e;
	b->log[b->n++] = e;
	b->tl[table][b->tn[table]++] = e;
	b->bytes += sizeof(*e) + klen + vlen;
	return 0;
}

static struct entry *batch_find_h(struct batch *b, uint64_t h, uint32_t table, const void *key, size_t klen)
{
	return b ? *batch_slot_h(b, h, table, key, klen) : NULL;
}

/* Returns the tables it undid writes of, as bits 1 << table. */
static uint64_t batch_undo_to(struct batch *b, size_t n)
{
	uint64_t tables = 0;
	while (b->n > n) {
		struct entry *e = b->log[--b->n];
		tables |= (uint64_t)1 << e->table;
		b->tn[e->table]--; /* undone last, so also the last of its table */
		struct entry **pp = batch_slot_h(b, e->hash, e->table, e->data, e->klen);
		if (e->shadow) {
			e->shadow->chain = e->chain;
			*pp = e->shadow;
		} else {
			*pp = e->chain;
		}
		b->bytes -= sizeof(*e) + e->klen + e->vlen;
		/* The entry's memory goes back with the whole batch. */
	}
	return tables;
}

/* ---- writer thread ---- */

static int mdb_to_sx(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_MAP_FULL:
		return SX_ENOSPC;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return SX_ENOSPC;
	case MDB_NOTFOUND:
		return SX_ENOENT;
	case MDB_CORRUPTED:
	case MDB_INVALID:
	case MDB_PAGE_NOTFOUND:
	case MDB_VERSION_MISMATCH:
		return SX_ECORRUPT;
	case MDB_BAD_VALSIZE:
		return SX_E2BIG;
	default:
		return rc > 0 && rc < 1000 ? -rc : SX_EIO;
	}
}

/* LMDB's default order: memcmp over the common length, then shorter first. */
static int keycmp(const void *a, size_t al, const void *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

/* An entry's place in (table, key) order: the table and the key's first 12
 * bytes (zero-padded) as integers decide most comparisons without touching
 * the entry; ties fall back to the whole key. Padding agrees with keycmp: a
 * key that differs from another first at a padded byte is the shorter one. */
struct sortkey {
	uint64_t hi, lo;
	struct entry *e;
};

static struct sortkey sortkey_of(struct entry *e)
{
	uint8_t p[12] = {0};
	memcpy(p, e->data, e->klen < 12 ? e->klen : 12);
	struct sortkey k = {(uint64_t)e->table << 32 | sx_get_be32(p), sx_get_be64(p + 4), e};
	return k;
}

static int sortkeycmp(const void *pa, const void *pb)
{
	const struct sortkey *a = pa, *b = pb;
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return keycmp(a->e->data, a->e->klen, b->e->data, b->e->klen);
}

/* Applies the newest entry of each key in key order, through one cursor per
 * table: LMDB then finds most keys on the page the cursor is on instead of
 * searching from the root, and a key written many times is written once. */
static int apply_batch(struct sx_store *st, struct batch *b)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	uint32_t cur_table = UINT32_MAX;
	struct sortkey *v = malloc((b->n ? b->n : 1) * sizeof(*v));
	size_t n = 0;
	if (!v)
		return sx_diag_set(SX_ENOMEM, "store: out of memory");
	for (size_t i = 0; i < b->n; i++)
		b->log[i]->stale = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->log[i]->shadow)
			b->log[i]->shadow->stale = 1;
	for (size_t i = 0; i < b->n; i++)
		if (!b->log[i]->stale)
			v[n++] = sortkey_of(b->log[i]);
	qsort(v, n, sizeof(*v), sortkeycmp);
	int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc) {
		free(v);
		return sx_diag_set(mdb_to_sx(rc), "store: begin: %s", mdb_strerror(rc));
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct entry *e = v[i].e;
		if (e->table != cur_table) {
			if (cur)
				mdb_cursor_close(cur);
			cur = NULL;
			cur_table = e->table;
			if ((rc = mdb_cursor_open(txn, st->dbi[e->table], &cur)))
				break;
		}
		MDB_val k = {e->klen, e->data};
		if (e->del) {
			MDB_val dv;
			rc = mdb_cursor_get(cur, &k, &dv, MDB_SET);
			if (rc == 0)
				rc = mdb_cursor_del(cur, 0);
			else if (rc == MDB_NOTFOUND)
				rc = 0;
		} else {
			MDB_val dv = {e->vlen, e->data + e->klen};
			rc = mdb_cursor_put(cur, &k, &dv, 0);
		}
	}
	if (cur)
		mdb_cursor_close(cur);
	free(v);
	if (rc) {
		mdb_txn_abort(txn);
	} else {
		rc = mdb_txn_commit(txn);
	}
	if (rc == MDB_MAP_FULL)
		return NEED_GROW;
	if (rc)
		return sx_diag_set(mdb_to_sx(rc), "store: commit: %s", mdb_strerror(rc));
	return 0;
}

static void *writer_main(void *arg)
{
	struct sx_store *st = arg;
	uint64_t last_sync = sx_now_ms();
	int dirty = 0;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->todo && !st->stop) {
			/* after a failed sync nothing is synced again (see below): nothing is due */
			if (atomic_load(&st->sync_failed))
				dirty = 0;
			else if (atomic_load(&st->inline_dirty))
				dirty = 1;
			if (st->relaxed && dirty) {
				/* due one interval after the last sync, however often we are woken; the
				 * condition variable runs on the monotonic clock, as sx_now_ms does */
				uint64_t now = sx_now_ms(), due = last_sync + st->sync_interval_ms;
				if (now >= due)
					break;
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				uint64_t ns = (uint64_t)ts.tv_nsec + (due - now) * 1000000u;
				ts.tv_sec += (time_t)(ns / 1000000000u);
				ts.tv_nsec = (long)(ns % 1000000000u);
				if (pthread_cond_timedwait(&st->cv, &st->mu, &ts) == ETIMEDOUT)
					break;
			} else {
				pthread_cond_wait(&st->cv, &st->mu);
			}
		}
		struct batch *b = st->todo;
		st->todo = NULL;
		int stop = st->stop;
		pthread_mutex_unlock(&st->mu);

		int rc = 0;
		if (b && atomic_load(&st->sync_failed))
			rc = sx_diag_set(SX_EIO, "%s", st->sync_msg);
		else if (b) {
			rc = apply_batch(st, b);
			dirty |= rc == 0;
		}
		if (st->relaxed && dirty && !atomic_load(&st->sync_failed) &&
		    (stop || sx_now_ms() - last_sync >= st->sync_interval_ms)) {
			/* Cleared first: a commit the loop makes during the sync sets it again, and
			 * is due one interval from here. */
			atomic_store(&st->inline_dirty, 0);
			last_sync = sx_now_ms();
			/* The kernel reports a failed write-back once: a second fsync
			 * would succeed with the pages lost. Writes stop for good. */
			int src = mdb_env_sync(st->env, 1);
			if (src) {
				snprintf(st->sync_msg, sizeof(st->sync_msg),
					 "store: fsync failed (%s): writes are refused until a restart; "
					 "writes acknowledged since the last good sync may be lost",
					 mdb_strerror(src));
				atomic_store(&st->sync_failed, 1);
				sx_log_error("%s", st->sync_msg);
			} else {
				atomic_fetch_add(&st->syncs, 1);
			}
			dirty = 0;
		}

		pthread_mutex_lock(&st->mu);
		if (b) {
			st->done = b;
			st->done_rc = rc;
			if (rc < 0)
				snprintf(st->done_msg, sizeof(st->done_msg), "%s", sx_diag_last());
			uv_async_send(&st->async);
			/* One batch in flight: wait until the loop has taken the result. */
			while (st->done && !st->stop)
				pthread_cond_wait(&st->cv, &st->mu);
		}
		if (stop && !st->todo)
			break;
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* ---- loop thread: completion ---- */

static void submit(struct sx_store *st, struct batch *b)
{
	pthread_mutex_lock(&st->mu);
	st->todo = b;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
}

static int grow_map(struct sx_store *st)
{
	if (st->map_size >= st->max_map_size)
		return sx_diag_set(SX_ENOSPC, "store: the map is full at its limit of %zu MiB (max_map_size)",
				   st->max_map_size >> 20);
	size_t want = st->map_size * 2;
	if (want > st->max_map_size)
		want = st->max_map_size;
	int rc = mdb_env_set_mapsize(st->env, want);
	if (rc)
		return sx_diag_set(SX_ENOSPC, "store: cannot grow the map: %s", mdb_strerror(rc));
	st->map_size = want;
	return 0;
}

static void finish_batch(struct sx_store *st, struct batch *b, int rc);

static void retry_grow_cb(uv_timer_t *t)
{
	struct sx_store *st = t->data;
	finish_batch(st, st->committing, NEED_GROW);
}

static void notify_undo(struct sx_store *st, uint64_t tables)
{
	for (int i = 0; i < st->nundo && tables; i++)
		st->undo[i].cb(tables, st->undo[i].ud);
}

static void fail_filling(struct sx_store *st, int rc)
{
	struct batch *f = st->filling;
	if (!f || f->n == 0)
		return;
	uint64_t seq = f->seq;
	notify_undo(st, batch_undo_to(f, 0));
	st->failed++;
	if (st->commit_cb)
		st->commit_cb(seq, rc, st->ud);
	/* The sequence is spent: waiters of `seq` have been answered. */
	f->seq = st->next_seq++;
}

static void finish_batch(struct sx_store *st, struct batch *b, int rc)
{
	sx_store_read_end(st);
	if (rc == NEED_GROW) {
		/* readers_mu is held from the check through the remap: a reader starting on a
		 * job thread in between would have the map moved under it */
		pthread_mutex_lock(&st->readers_mu);
		if (atomic_load(&st->offloop_readers) > 0) {
			pthread_mutex_unlock(&st->readers_mu);
			uv_timer_start(&st->grow_timer, retry_grow_cb, 5, 0);
			return;
		}
		if (st->rtxn) {
			mdb_txn_abort(st->rtxn);
			st->rtxn = NULL;
		}
		rc = grow_map(st);
		pthread_mutex_unlock(&st->readers_mu);
		if (rc == 0) {
			submit(st, b);
			return;
		}
	}
	st->committing = NULL;
	if (rc == 0) {
		st->durable_seq = b->seq;
		st->commits++;
	} else {
		st->failed++;
	}
	uint64_t seq = b->seq;
	batch_free(b);
	if (rc)
		notify_undo(st, ~(uint64_t)0);
	if (st->commit_cb)
		st->commit_cb(seq, rc, st->ud);
	if (rc)
		fail_filling(st, rc);
	if (!st->closing)
		sx_store_flush(st);
}

static void async_cb(uv_async_t *a)
{
	struct sx_store *st = a->data;
	pthread_mutex_lock(&st->mu);
	struct batch *b = st->done;
	int rc = st->done_rc;
	st->done = NULL;
	if (rc < 0)
		sx_diag_set(rc, "%s", st->done_msg);
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	if (b)
		finish_batch(st, b, rc);
}

/* Relaxed durability commits small batches on the loop thread: without an
 * fsync an LMDB commit of a few pages costs less than waking the writer and
 * being woken back, which at pipeline depth 1 is most of a request's cost. */
#define INLINE_MAX_ENTRIES 64
#define INLINE_MAX_BYTES (64u << 10)

void sx_store_flush(struct sx_store *st)
{
	if (st->committing || st->flushing || !st->filling || st->filling->n == 0)
		return;
	/* sized for a batch like the one handed off, within bounds: a burst must
	 * not leave every later batch clearing a huge bucket array */
	size_t nbucket = 256;
	while (nbucket < st->filling->n && nbucket < ((size_t)1 << 16))
		nbucket <<= 1;
	struct batch *nb = batch_new(st->next_seq++, nbucket);
	if (!nb)
		return; /* retried at the next turn */
	struct batch *b = st->filling;
	st->committing = b;
	st->filling = nb;
	if (!st->relaxed || st->closing || b->n > INLINE_MAX_ENTRIES || b->bytes > INLINE_MAX_BYTES) {
		submit(st, b);
		return;
	}
	int rc = atomic_load(&st->sync_failed) ? sx_diag_set(SX_EIO, "%s", st->sync_msg) : apply_batch(st, b);
	if (rc == 0 && !atomic_load(&st->inline_dirty)) {
		/* Only the first commit after a sync wakes the writer: one wake-up per
		 * commit was a thread hand-off per loop turn, and each wake-up restarted
		 * the writer's wait, so that steady traffic postponed the sync for ever. */
		pthread_mutex_lock(&st->mu);
		atomic_store(&st->inline_dirty, 1);
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
	}
	st->flushing = 1; /* what the commit callbacks write waits for the next turn */
	finish_batch(st, b, rc);
	st->flushing = 0;
}

/* ---- open / close ---- */

typedef int (*migration_fn)(MDB_txn *txn, struct sx_store *st);
/* migrations[v] upgrades schema v to v+1; index 0 is unused (1 is the first). */
static const migration_fn migrations[SX_STORE_SCHEMA] = {0};

static int check_schema(struct sx_store *st, MDB_txn *txn)
{
	static const char key[] = "schema_version";
	MDB_val k = {sizeof(key) - 1, (void *)key}, v;
	uint8_t buf[4];
	int rc = mdb_get(txn, st->dbi[SX_T_META], &k, &v);
	uint32_t ver = SX_STORE_SCHEMA;
	if (rc == MDB_NOTFOUND) {
		ver = SX_STORE_SCHEMA;
	} else if (rc) {
		return sx_diag_set(mdb_to_sx(rc), "store: reading the schema version: %s", mdb_strerror(rc));
	} else if (v.mv_size != 4) {
		return sx_diag_set(SX_ECORRUPT, "store: the schema version record is malformed");
	} else {
		ver = sx_get_be32(v.mv_data);
		if (ver > SX_STORE_SCHEMA)
			return sx_diag_set(SX_ECORRUPT, "store: schema version %u is newer than this server's (%u)",
					   ver, SX_STORE_SCHEMA);
		for (; ver < SX_STORE_SCHEMA; ver++) {
			if (ver == 0 || !migrations[ver])
				return sx_diag_set(SX_ECORRUPT, "store: no migration from schema version %u", ver);
			if ((rc = migrations[ver](txn, st)) < 0)
				return rc;
		}
	}
	sx_be32(buf, ver);
	v.mv_size = 4;
	v.mv_data = buf;
	rc = mdb_put(txn, st->dbi[SX_T_META], &k, &v, 0);
	return rc ? sx_diag_set(mdb_to_sx(rc), "store: %s", mdb_strerror(rc)) : 0;
}

static int check_file(const char *dir, MDB_env *env)
{
	char path[4096];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(path, &sb) < 0)
		return 0;
	MDB_envinfo info;
	MDB_stat ms;
	mdb_env_info(env, &info);
	mdb_env_stat(env, &ms);
	if ((uint64_t)(info.me_last_pgno + 1) * ms.ms_psize > (uint64_t)sb.st_size)
		return sx_diag_set(SX_ECORRUPT,
				   "store: %s is truncated (%lld bytes, but its pages reach %llu); refusing to start",
				   path, (long long)sb.st_size,
				   (unsigned long long)(info.me_last_pgno + 1) * ms.ms_psize);
	return 0;
}

struct sx_store *sx_store_open(uv_loop_t *loop, const struct sx_store_opts *o)
{
	struct sx_store *st = calloc(1, sizeof(*st));
	char path[4096];
	int rc;
	if (!st) {
		sx_diag_set(SX_ENOMEM, "store: out of memory");
		return NULL;
	}
	st->lock_fd = -1;
	st->map_size = o->map_size ? o->map_size : (size_t)64 << 20;
	st->max_map_size = o->max_map_size ? o->max_map_size : (size_t)1 << 40;
	if (st->map_size > st->max_map_size)
		st->map_size = st->max_map_size;
	st->relaxed = o->relaxed;
	st->sync_interval_ms = o->sync_interval_ms ? o->sync_interval_ms : 1000;
	st->max_reader_age_ms = o->max_reader_age_ms;
	pthread_mutex_init(&st->readers_mu, NULL);
	st->commit_cb = o->commit_cb;
	st->ud = o->ud;
	st->loop = loop;

	if (mkdir(o->dir, 0700) < 0 && errno != EEXIST) {
		sx_diag_set(-errno, "store: cannot create %s: %s", o->dir, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/sextant.lock", o->dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		sx_diag_set(-errno, "store: cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		sx_diag_set(SX_EBUSY, "store: %s is in use by another sextant process", o->dir);
		goto fail;
	}
	if ((rc = mdb_env_create(&st->env)) ||
	    (rc = mdb_env_set_maxdbs(st->env, SX_T_COUNT + 4)) ||
	    (rc = mdb_env_set_maxreaders(st->env, 256))) {
		sx_diag_set(mdb_to_sx(rc), "store: %s", mdb_strerror(rc));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/data.mdb", o->dir);
	struct stat sb;
	if (stat(path, &sb) == 0 && (size_t)sb.st_size > st->map_size) {
		st->map_size = (size_t)sb.st_size;
		if (st->map_size > st->max_map_size)
			st->max_map_size = st->map_size;
	}
	mdb_env_set_mapsize(st->env, st->map_size);
	unsigned flags = MDB_NOTLS | (st->relaxed ? MDB_NOSYNC : 0);
	rc = mdb_env_open(st->env, o->dir, flags, 0600);
	if (rc) {
		sx_diag_set(mdb_to_sx(rc), "store: cannot open the data file in %s: %s; refusing to start",
			    o->dir, mdb_strerror(rc));
		goto fail;
	}
	MDB_envinfo info;
	mdb_env_info(st->env, &info);
	st->map_size = info.me_mapsize;
	if (check_file(o->dir, st->env) < 0)
		goto fail;
	int dead = 0;
	mdb_reader_check(st->env, &dead);

	MDB_txn *txn;
	if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn))) {
		sx_diag_set(mdb_to_sx(rc), "store: %s", mdb_strerror(rc));
		goto fail;
	}
	for (int i = 0; i < SX_T_COUNT; i++) {
		if ((rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE, &st->dbi[i]))) {
			mdb_txn_abort(txn);
			sx_diag_set(mdb_to_sx(rc), "store: table %s: %s", table_names[i], mdb_strerror(rc));
			goto fail;
		}
	}
	if (check_schema(st, txn) < 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn))) {
		sx_diag_set(mdb_to_sx(rc), "store: %s", mdb_strerror(rc));
		goto fail;
	}

	st->next_seq = 1;
	st->filling = batch_new(st->next_seq++, 0);
	if (!st->filling) {
		sx_diag_set(SX_ENOMEM, "store: out of memory");
		goto fail;
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step must not move a sync */
	pthread_cond_init(&st->cv, &ca);
	pthread_condattr_destroy(&ca);
	uv_async_init(loop, &st->async, async_cb);
	st->async.data = st;
	uv_timer_init(loop, &st->grow_timer);
	st->grow_timer.data = st;
	if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
		sx_diag_set(SX_ENOMEM, "store: cannot start the writer thread");
		uv_close((uv_handle_t *)&st->async, NULL);
		uv_close((uv_handle_t *)&st->grow_timer, NULL);
		goto fail;
	}
	return st;
fail:
	if (st->env)
		mdb_env_close(st->env);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	batch_free(st->filling);
	free(st);
	return NULL;
}

void sx_store_close(struct sx_store *st)
{
	if (!st)
		return;
	sx_store_read_end(st);
	/* Commit what is pending, batch after batch, through the loop's callbacks. */
	while (st->committing || (st->filling && st->filling->n)) {
		sx_store_flush(st);
		if (st->committing) /* on the writer, not committed on the loop */
			uv_run(st->loop, UV_RUN_ONCE);
	}
	st->closing = 1;
	pthread_mutex_lock(&st->mu);
	st->stop = 1;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	pthread_join(st->writer, NULL);
	uv_close((uv_handle_t *)&st->async, NULL);
	uv_close((uv_handle_t *)&st->grow_timer, NULL);
	uv_run(st->loop, UV_RUN_NOWAIT);
	if (st->rtxn)
		mdb_txn_abort(st->rtxn);
	if (!atomic_load(&st->sync_failed)) /* a failed write-back is never retried into a success */
		mdb_env_sync(st->env, 1);
	mdb_env_close(st->env);
	close(st->lock_fd);
	batch_free(st->filling);
	pthread_mutex_destroy(&st->mu);
	pthread_mutex_destroy(&st->readers_mu);
	pthread_cond_destroy(&st->cv);
	free(st);
}

MDB_env *sx_store_env(struct sx_store *st) { return st->env; }
MDB_dbi sx_store_dbi(struct sx_store *st, int table) { return st->dbi[table]; }

/* ---- loop thread: reads and writes ---- */

static int rtxn(struct sx_store *st, MDB_txn **out)
{
	int rc = 0;
	if (!st->rtxn)
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
	else if (!st->rtxn_live)
		rc = mdb_txn_renew(st->rtxn);
	if (rc) {
		if (st->rtxn && !st->rtxn_live) {
			mdb_txn_abort(st->rtxn);
			st->rtxn = NULL;
		}
		return sx_diag_set(mdb_to_sx(rc), "store: read: %s", mdb_strerror(rc));
	}
	st->rtxn_live = 1;
	*out = st->rtxn;
	return 0;
}

void sx_store_read_end(struct sx_store *st)
{
	if (st->rtxn && st->rtxn_live) {
		mdb_txn_reset(st->rtxn);
		st->rtxn_live = 0;
	}
}

static void touch(struct sx_store *st, uint64_t seq)
{
	if (seq > st->req_seq)
		st->req_seq = seq;
}

static struct entry *overlay_find(struct sx_store *st, int table, const void *key, size_t klen)
{
	uint64_t h = hash_key((uint32_t)table, key, klen);
	struct entry *e = batch_find_h(st->filling, h, (uint32_t)table, key, klen);
	if (e) {
		touch(st, st->filling->seq);
		return e;
	}
	e = batch_find_h(st->committing, h, (uint32_t)table, key, klen);
	if (e)
		touch(st, st->committing->seq);
	return e;
}

static int check_key(int table, size_t klen)
{
	if (table < 0 || table >= SX_T_COUNT)
		return sx_diag_set(SX_EINVAL, "store: no table %d", table);
	if (klen == 0 || klen > 511)
		return sx_diag_set(SX_E2BIG, "store: a key must have 1 to 511 bytes (got %zu)", klen);
	return 0;
}

int sx_store_get(struct sx_store *st, int table, const void *key, size_t klen, struct sx_val *out)
{
	int rc = check_key(table, klen);
	if (rc)
		return rc;
	struct entry *e = overlay_find(st, table, key, klen);
	if (e) {
		if (e->del)
			return SX_ENOENT;
		out->data = e->data + e->klen;
		out->len = e->vlen;
		return 0;
	}
	MDB_txn *txn;
	if ((rc = rtxn(st, &txn)))
		return rc;
	MDB_val k = {klen, (void *)key}, v;
	rc = mdb_get(txn, st->dbi[table], &k, &v);
	if (rc == MDB_NOTFOUND)
		return SX_ENOENT;
	if (rc)
		return sx_diag_set(mdb_to_sx(rc), "store: get: %s", mdb_strerror(rc));
	out->data = v.mv_data;
	out->len = v.mv_size;
	return 0;
}

int sx_store_put(struct sx_store *st, int table, const void *key, size_t klen,
		 const void *val, size_t vlen)
{
	int rc = check_key(table, klen);
	if (rc)
		return rc;
	if (vlen > UINT32_MAX)
		return sx_diag_set(SX_E2BIG, "store: value too large");
	if ((rc = batch_add(st->filling, (uint32_t)table, key, klen, val, vlen, 0)))
		return sx_diag_set(rc, "store: out of memory");
	touch(st, st->filling->seq);
	return 0;
}

int sx_store_del(struct sx_store *st, int table, const void *key, size_t klen)
{
	int rc = check_key(table, klen);
	if (rc)
		return rc;
	if ((rc = batch_add(st->filling, (uint32_t)table, key, klen, NULL, 0, 1)))
		return sx_diag_set(rc, "store: out of memory");
	touch(st, st->filling->seq);
	return 0;
}

uint64_t sx_store_savepoint(struct sx_store *st) { return st->filling->n; }

void sx_store_rollback(struct sx_store *st, uint64_t sp) { notify_undo(st, batch_undo_to(st->filling, (size_t)sp)); }

int sx_store_on_undo(struct sx_store *st, sx_store_undo_cb cb, void *ud)
{
	for (int i = 0; i < st->nundo; i++)
		if (st->undo[i].cb == cb && st->undo[i].ud == ud)
			return 0;
	if (st->nundo == SX_STORE_UNDO_MAX)
		return sx_diag_set(SX_ELIMIT, "store: too many undo listeners");
	st->undo[st->nundo].cb = cb;
	st->undo[st->nundo++].ud = ud;
	return 0;
}

void sx_store_req_begin(struct sx_store *st) { st->req_seq = 0; }

uint64_t sx_store_req_end(struct sx_store *st)
{
	sx_store_read_end(st);
	uint64_t s = st->req_seq;
	st->req_seq = 0;
	return s > st->durable_seq ? s : 0;
}

uint64_t sx_store_durable_seq(const struct sx_store *st) { return st->durable_seq; }
uint64_t sx_store_filling_seq(const struct sx_store *st) { return st->filling->seq; }

uint64_t sx_store_newest_seq(const struct sx_store *st)
{
	if (st->filling->n)
		return st->filling->seq;
	return st->committing ? st->committing->seq : 0;
}

uint64_t sx_store_failed_batches(const struct sx_store *st) { return st->failed; }
size_t sx_store_pending_bytes(const struct sx_store *st) { return st->filling->bytes; }
int sx_store_idle(const struct sx_store *st) { return !st->committing && st->filling->n == 0; }

static int entcmp(const void *pa, const void *pb)
{
	const struct entry *a = *(struct entry *const *)pa, *b = *(struct entry *const *)pb;
	return keycmp(a->data, a->klen, b->data, b->klen);
}

static int in_range(const struct entry *e, const void *lo, size_t lolen, const void *hi, size_t hilen)
{
	if (lo && keycmp(e->data, e->klen, lo, lolen) < 0)
		return 0;
	if (hi && keycmp(e->data, e->klen, hi, hilen) >= 0)
		return 0;
	return 1;
}

/* The newest overlay entry of each key of `table` in range, sorted. */
static int overlay_range(struct sx_store *st, int table, const void *lo, size_t lolen,
			 const void *hi, size_t hilen, struct entry ***out, size_t *nout)
{
	struct batch *bs[2] = {st->filling, st->committing};
	size_t cap = 0, n = 0;
	for (int i = 0; i < 2; i++)
		if (bs[i])
			cap += bs[i]->tn[table];
	*out = NULL;
	*nout = 0;
	if (!cap)
		return 0;
	struct entry **v = malloc(cap * sizeof(*v));
	if (!v)
		return sx_diag_set(SX_ENOMEM, "store: out of memory");
	for (int i = 0; i < 2; i++) {
		struct batch *b = bs[i];
		if (!b)
			continue;
		for (size_t j = 0; j < b->tn[table]; j++) {
			struct entry *e = b->tl[table][j];
			if (!in_range(e, lo, lolen, hi, hilen))
				continue;
			if (*batch_slot_h(b, e->hash, e->table, e->data, e->klen) != e)
				continue; /* shadowed within its batch */
			if (i == 1 && batch_find_h(st->filling, e->hash, e->table, e->data, e->klen))
				continue; /* shadowed by the filling batch */
			touch(st, b->seq);
			v[n++] = e;
		}
	}
	qsort(v, n, sizeof(*v), entcmp);
	*out = v;
	*nout = n;
	return 0;
}

int sx_store_scan(struct sx_store *st, int table, const void *lo, size_t lolen,
		  const void *hi, size_t hilen, int reverse, sx_store_scan_cb cb, void *ud)
{
	if (table < 0 || table >= SX_T_COUNT)
		return sx_diag_set(SX_EINVAL, "store: no table %d", table);
	struct entry **ov;
	size_t nov, oi;
	int rc = overlay_range(st, table, lo, lolen, hi, hilen, &ov, &nov);
	if (rc)
		return rc;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	if ((rc = rtxn(st, &txn)) || (rc = mdb_cursor_open(txn, st->dbi[table], &cur))) {
		free(ov);
		return rc < 0 ? rc : sx_diag_set(mdb_to_sx(rc), "store: %s", mdb_strerror(rc));
	}
	MDB_val k, v;
	int mrc;
	if (!reverse) {
		if (lo) {
			k.mv_size = lolen;
			k.mv_data = (void *)lo;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		} else {
			mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		}
		oi = 0;
	} else {
		if (hi) {
			k.mv_size = hilen;
			k.mv_data = (void *)hi;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			mrc = mrc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
						  : mdb_cursor_get(cur, &k, &v, MDB_PREV);
		} else {
			mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		}
		oi = nov;
	}
	rc = 0;
	for (;;) {
		int have_db = mrc == 0 && (reverse ? (!lo || keycmp(k.mv_data, k.mv_size, lo, lolen) >= 0)
						   : (!hi || keycmp(k.mv_data, k.mv_size, hi, hilen) < 0));
		struct entry *e = NULL;
		if (reverse ? oi > 0 : oi < nov)
			e = ov[reverse ? oi - 1 : oi];
		if (!have_db && !e)
			break;
		int c = 0;
		if (have_db && e)
			c = keycmp(k.mv_data, k.mv_size, e->data, e->klen);
		if (reverse)
			c = -c;
		struct sx_val kk, vv;
		if (e && (!have_db || c >= 0)) {
			reverse ? oi-- : oi++;
			if (have_db && c == 0)
				mrc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
			if (e->del)
				continue;
			kk = (struct sx_val){e->data, e->klen};
			vv = (struct sx_val){e->data + e->klen, e->vlen};
		} else {
			kk = (struct sx_val){k.mv_data, k.mv_size};
			vv = (struct sx_val){v.mv_data, v.mv_size};
			/* The cursor moves after the callback, so the view is valid in it. */
		}
		rc = cb(&kk, &vv, ud);
		if (rc)
			break;
		if (!(e && (!have_db || c >= 0)))
			mrc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
	}
	mdb_cursor_close(cur);
	free(ov);
	return rc < 0 ? rc : 0;
}

int sx_store_stats(struct sx_store *st, struct sx_store_stats *out)
{
	memset(out, 0, sizeof(*out));
	MDB_envinfo info;
	MDB_stat ms;
	mdb_env_info(st->env, &info);
	mdb_env_stat(st->env, &ms);
	out->map_size = info.me_mapsize;
	out->page_size = ms.ms_psize;
	out->used_bytes = (info.me_last_pgno + 1) * (size_t)ms.ms_psize;
	out->commits = st->commits;
	out->batches_failed = st->failed;
	out->durable_seq = st->durable_seq;
	out->relaxed = st->relaxed;
	out->sync_failed = atomic_load(&st->sync_failed);
	out->syncs = atomic_load(&st->syncs);
	out->oldest_reader_ms = sx_store_oldest_reader_ms(st);
	MDB_txn *txn;
	int rc = rtxn(st, &txn);
	if (rc)
		return rc;
	for (int i = 0; i < SX_T_COUNT; i++)
		if (mdb_stat(txn, st->dbi[i], &ms) == 0)
			out->entries[i] = ms.ms_entries;
	return 0;
}

/* ---- any thread ---- */

int sx_store_rtxn_begin(struct sx_store *st, MDB_txn **out)
{
	pthread_mutex_lock(&st->readers_mu);
	int slot = -1;
	for (int i = 0; i < SX_STORE_MAX_OFFLOOP && slot < 0; i++)
		if (!st->readers[i].txn)
			slot = i;
	if (slot < 0) {
		pthread_mutex_unlock(&st->readers_mu);
		return sx_diag_set(SX_EBUSY, "store: %d off-loop readers are open already", SX_STORE_MAX_OFFLOOP);
	}
	atomic_fetch_add(&st->offloop_readers, 1);
	int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, out);
	if (rc) {
		atomic_fetch_sub(&st->offloop_readers, 1);
		pthread_mutex_unlock(&st->readers_mu);
		return sx_diag_set(mdb_to_sx(rc), "store: read: %s", mdb_strerror(rc));
	}
	st->readers[slot].txn = *out;
	st->readers[slot].start_ms = sx_now_ms();
	pthread_mutex_unlock(&st->readers_mu);
	return 0;
}

void sx_store_rtxn_end(struct sx_store *st, MDB_txn *txn)
{
	pthread_mutex_lock(&st->readers_mu);
	for (int i = 0; i < SX_STORE_MAX_OFFLOOP; i++)
		if (st->readers[i].txn == txn)
			st->readers[i].txn = NULL;
	pthread_mutex_unlock(&st->readers_mu);
	mdb_txn_abort(txn);
	atomic_fetch_sub(&st->offloop_readers, 1);
}

int sx_store_rtxn_check(struct sx_store *st, MDB_txn *txn)
{
	if (!st->max_reader_age_ms)
		return 0;
	uint64_t start = 0;
	pthread_mutex_lock(&st->readers_mu);
	for (int i = 0; i < SX_STORE_MAX_OFFLOOP; i++)
		if (st->readers[i].txn == txn)
			start = st->readers[i].start_ms;
	pthread_mutex_unlock(&st->readers_mu);
	uint64_t age = start ? sx_now_ms() - start : 0;
	if (age > st->max_reader_age_ms)
		return sx_diag_set(SX_ETIMEDOUT,
				   "store: a read transaction ran for %llu ms, over max_reader_age_ms (%u)",
				   (unsigned long long)age, st->max_reader_age_ms);
	return 0;
}

uint64_t sx_store_oldest_reader_ms(struct sx_store *st)
{
	uint64_t now = sx_now_ms(), oldest = 0;
	pthread_mutex_lock(&st->readers_mu);
	for (int i = 0; i < SX_STORE_MAX_OFFLOOP; i++)
		if (st->readers[i].txn && now - st->readers[i].start_ms > oldest)
			oldest = now - st->readers[i].start_ms;
	pthread_mutex_unlock(&st->readers_mu);
	return oldest;
}

int sx_store_backup(struct sx_store *st, const char *path)
{
	char file[4096];
	struct stat sb;
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return sx_diag_set(SX_EIO, "backup: cannot create %s: %s", path, strerror(errno));
	snprintf(file, sizeof(file), "%s/data.mdb", path);
	if (stat(file, &sb) == 0)
		return sx_diag_set(SX_EEXIST, "backup: %s already holds a data file", path);
	pthread_mutex_lock(&st->readers_mu); /* not while the map is being grown */
	atomic_fetch_add(&st->offloop_readers, 1);
	pthread_mutex_unlock(&st->readers_mu);
	int rc = mdb_env_copy2(st->env, path, MDB_CP_COMPACT);
	atomic_fetch_sub(&st->offloop_readers, 1);
	if (rc) {
		unlink(file);
		return sx_diag_set(mdb_to_sx(rc), "backup: %s", mdb_strerror(rc));
	}
	return 0;
}
