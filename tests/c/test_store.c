/* The LMDB store: overlay reads, group commit, scans, rollback, growth, faults, backup. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/sx.h"
#include "store/store.h"

struct fx {
	char dir[128];
	uv_loop_t loop;
	struct sx_store *st;
	uint64_t last_seq;
	int last_rc, commits, failures;
};

static void commit_cb(uint64_t seq, int rc, void *ud)
{
	struct fx *f = ud;
	f->last_seq = seq;
	f->last_rc = rc;
	if (rc == 0)
		f->commits++;
	else
		f->failures++;
}

static struct sx_store *open_store(struct fx *f, size_t map, size_t max_map)
{
	struct sx_store_opts o = {.dir = f->dir, .map_size = map, .max_map_size = max_map,
				  .commit_cb = commit_cb, .ud = f};
	return sx_store_open(&f->loop, &o);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/sx-test-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	uv_loop_init(&f->loop);
	f->st = open_store(f, 0, 0);
	assert_non_null(f->st);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->st)
		sx_store_close(f->st);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	uv_loop_close(&f->loop);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* Flushes and runs the loop until every pending batch has an outcome. */
static void sync_all(struct fx *f)
{
	for (int i = 0; i < 1000; i++) {
		sx_store_flush(f->st);
		if (sx_store_idle(f->st))
			return;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	fail_msg("batches did not complete");
}

static void put_s(struct sx_store *st, int t, const char *k, const char *v)
{
	assert_int_equal(sx_store_put(st, t, k, strlen(k), v, strlen(v)), 0);
}

static void assert_get(struct sx_store *st, int t, const char *k, const char *want)
{
	struct sx_val v;
	int rc = sx_store_get(st, t, k, strlen(k), &v);
	if (!want) {
		assert_int_equal(rc, SX_ENOENT);
		return;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(v.len, strlen(want));
	assert_memory_equal(v.data, want, v.len);
}

static void test_read_your_writes_then_durable(void **state)
{
	struct fx *f = *state;
	sx_store_req_begin(f->st);
	put_s(f->st, SX_T_KV, "a", "1");
	assert_get(f->st, SX_T_KV, "a", "1");
	uint64_t wait = sx_store_req_end(f->st);
	assert_true(wait > 0);
	assert_true(wait > sx_store_durable_seq(f->st));
	sync_all(f);
	assert_true(sx_store_durable_seq(f->st) >= wait);
	assert_int_equal(f->last_rc, 0);
	/* A read of durable data has nothing to wait for. */
	sx_store_req_begin(f->st);
	assert_get(f->st, SX_T_KV, "a", "1");
	assert_int_equal(sx_store_req_end(f->st), 0);

	sx_store_close(f->st);
	f->st = open_store(f, 0, 0);
	assert_non_null(f->st);
	assert_get(f->st, SX_T_KV, "a", "1");
	sx_store_read_end(f->st);
}

static void test_delete_and_overwrite(void **state)
{
	struct fx *f = *state;
	put_s(f->st, SX_T_KV, "k", "old");
	sync_all(f);
	put_s(f->st, SX_T_KV, "k", "new");
	assert_get(f->st, SX_T_KV, "k", "new");
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "k", 1), 0);
	assert_get(f->st, SX_T_KV, "k", NULL);
	sync_all(f);
	assert_get(f->st, SX_T_KV, "k", NULL);
	sx_store_read_end(f->st);
	/* Tables are separate. */
	put_s(f->st, SX_T_USERS, "k", "u");
	assert_get(f->st, SX_T_KV, "k", NULL);
	assert_get(f->st, SX_T_USERS, "k", "u");
	sx_store_read_end(f->st);
}

static void test_savepoint_rollback(void **state)
{
	struct fx *f = *state;
	put_s(f->st, SX_T_KV, "x", "1");
	uint64_t sp = sx_store_savepoint(f->st);
	put_s(f->st, SX_T_KV, "x", "2");
	put_s(f->st, SX_T_KV, "y", "2");
	assert_get(f->st, SX_T_KV, "x", "2");
	sx_store_rollback(f->st, sp);
	assert_get(f->st, SX_T_KV, "x", "1");
	assert_get(f->st, SX_T_KV, "y", NULL);
	sync_all(f);
	assert_get(f->st, SX_T_KV, "x", "1");
	assert_get(f->st, SX_T_KV, "y", NULL);
	sx_store_read_end(f->st);
}

struct collect {
	char keys[64][16];
	char vals[64][16];
	int n;
};

static int collect_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct collect *c = ud;
	snprintf(c->keys[c->n], 16, "%.*s", (int)k->len, (const char *)k->data);
	snprintf(c->vals[c->n], 16, "%.*s", (int)v->len, (const char *)v->data);
	c->n++;
	return 0;
}

static void test_scan_merges_overlay(void **state)
{
	struct fx *f = *state;
	put_s(f->st, SX_T_KV, "b", "db");
	put_s(f->st, SX_T_KV, "d", "db");
	put_s(f->st, SX_T_KV, "f", "db");
	sync_all(f);
	put_s(f->st, SX_T_KV, "a", "ov");
	put_s(f->st, SX_T_KV, "d", "ov");
	put_s(f->st, SX_T_KV, "e", "ov");
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "f", 1), 0);
	put_s(f->st, SX_T_USERS, "c", "other");

	struct collect c = {0};
	assert_int_equal(sx_store_scan(f->st, SX_T_KV, NULL, 0, NULL, 0, 0, collect_cb, &c), 0);
	assert_int_equal(c.n, 4);
	const char *ek[] = {"a", "b", "d", "e"}, *ev[] = {"ov", "db", "ov", "ov"};
	for (int i = 0; i < 4; i++) {
		assert_string_equal(c.keys[i], ek[i]);
		assert_string_equal(c.vals[i], ev[i]);
	}
	memset(&c, 0, sizeof(c));
	assert_int_equal(sx_store_scan(f->st, SX_T_KV, "b", 1, "e", 1, 1, collect_cb, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.keys[0], "d");
	assert_string_equal(c.keys[1], "b");
	sx_store_read_end(f->st);
}

static void test_second_open_refused(void **state)
{
	struct fx *f = *state;
	uv_loop_t loop2;
	uv_loop_init(&loop2);
	struct sx_store_opts o = {.dir = f->dir};
	struct sx_store *other = sx_store_open(&loop2, &o);
	assert_null(other);
	assert_int_equal(sx_diag_last_code(), SX_EBUSY);
	uv_loop_close(&loop2);
}

static void test_map_grows(void **state)
{
	struct fx *f = *state;
	sx_store_close(f->st);
	f->st = open_store(f, 1 << 20, 64 << 20);
	assert_non_null(f->st);
	char val[4096];
	memset(val, 'v', sizeof(val));
	for (int i = 0; i < 2000; i++) {
		char k[32];
		snprintf(k, sizeof(k), "key%06d", i);
		assert_int_equal(sx_store_put(f->st, SX_T_KV, k, strlen(k), val, sizeof(val)), 0);
	}
	sync_all(f);
	assert_int_equal(f->failures, 0);
	struct sx_store_stats s;
	assert_int_equal(sx_store_stats(f->st, &s), 0);
	assert_true(s.map_size > (1 << 20));
	assert_int_equal(s.entries[SX_T_KV], 2000);
	sx_store_read_end(f->st);
}

static void test_reader_age_limit(void **state)
{
	struct fx *f = *state;
	sx_store_close(f->st);
	struct sx_store_opts o = {.dir = f->dir, .max_reader_age_ms = 50, .commit_cb = commit_cb, .ud = f};
	f->st = sx_store_open(&f->loop, &o);
	assert_non_null(f->st);
	MDB_txn *young, *old;
	assert_int_equal(sx_store_rtxn_begin(f->st, &old), 0);
	assert_int_equal(sx_store_rtxn_check(f->st, old), 0);
	usleep(80 * 1000);
	assert_int_equal(sx_store_rtxn_begin(f->st, &young), 0);
	assert_int_equal(sx_store_rtxn_check(f->st, young), 0);
	assert_int_equal(sx_store_rtxn_check(f->st, old), SX_ETIMEDOUT);
	assert_non_null(strstr(sx_diag_last(), "max_reader_age_ms"));
	assert_true(sx_store_oldest_reader_ms(f->st) >= 80);
	sx_store_rtxn_end(f->st, old);
	assert_true(sx_store_oldest_reader_ms(f->st) < 80);
	sx_store_rtxn_end(f->st, young);
	assert_int_equal(sx_store_oldest_reader_ms(f->st), 0);
	/* A transaction the store did not hand out (the loop's own) has no age. */
	assert_int_equal(sx_store_rtxn_check(f->st, NULL), 0);
}

/* Relaxed durability promises an fsync at least every sync_interval_ms, also while small
 * batches are committed on the loop thread turn after turn. */
static void test_relaxed_syncs_under_steady_writes(void **state)
{
	struct fx *f = *state;
	sx_store_close(f->st);
	struct sx_store_opts o = {.dir = f->dir, .relaxed = 1, .sync_interval_ms = 40,
				  .commit_cb = commit_cb, .ud = f};
	f->st = sx_store_open(&f->loop, &o);
	assert_non_null(f->st);
	uint64_t t0 = sx_now_ms();
	for (int i = 0; sx_now_ms() - t0 < 400; i++) {
		char k[32];
		snprintf(k, sizeof(k), "k%d", i % 100);
		put_s(f->st, SX_T_KV, k, "v");
		sync_all(f);
		usleep(500);
	}
	struct sx_store_stats s;
	assert_int_equal(sx_store_stats(f->st, &s), 0);
	/* ten intervals passed: allow for a slow machine, but not for none */
	assert_true(s.syncs >= 4);
}

static void test_map_limit_refuses_whole_batch(void **state)
{
	struct fx *f = *state;
	sx_store_close(f->st);
	f->st = open_store(f, 1 << 20, 2 << 20);
	assert_non_null(f->st);
	put_s(f->st, SX_T_KV, "before", "1");
	sync_all(f);
	char val[4096];
	memset(val, 'v', sizeof(val));
	for (int i = 0; i < 1000; i++) {
		char k[32];
		snprintf(k, sizeof(k), "big%06d", i);
		assert_int_equal(sx_store_put(f->st, SX_T_KV, k, strlen(k), val, sizeof(val)), 0);
	}
	sync_all(f);
	assert_int_equal(f->failures, 1);
	assert_int_equal(f->last_rc, SX_ENOSPC);
	/* Nothing of the failed batch is visible, what was there stays. */
	assert_get(f->st, SX_T_KV, "big000000", NULL);
	assert_get(f->st, SX_T_KV, "before", "1");
	sx_store_read_end(f->st);
	/* Small writes still work afterwards. */
	put_s(f->st, SX_T_KV, "after", "1");
	sync_all(f);
	assert_int_equal(f->last_rc, 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

static void test_corrupt_file_refused(void **state)
{
	struct fx *f = *state;
	sx_store_close(f->st);
	f->st = NULL;
	char path[400];
	snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
	char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	write_file(path, junk, sizeof(junk));
	assert_null(open_store(f, 0, 0));
	assert_int_equal(sx_diag_last_code(), SX_ECORRUPT);
	/* The file was not overwritten. */
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, sizeof(junk));
}

static void test_truncated_file_refused(void **state)
{
	struct fx *f = *state;
	char val[4096];
	memset(val, 'v', sizeof(val));
	for (int i = 0; i < 200; i++) {
		char k[32];
		snprintf(k, sizeof(k), "key%06d", i);
		assert_int_equal(sx_store_put(f->st, SX_T_KV, k, strlen(k), val, sizeof(val)), 0);
	}
	sync_all(f);
	sx_store_close(f->st);
	f->st = NULL;
	char path[400];
	snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
	assert_int_equal(truncate(path, 64 * 1024), 0);
	assert_null(open_store(f, 0, 0));
	assert_int_equal(sx_diag_last_code(), SX_ECORRUPT);
}

static void test_backup(void **state)
{
	struct fx *f = *state;
	put_s(f->st, SX_T_KV, "saved", "yes");
	sync_all(f);
	char bdir[128];
	snprintf(bdir, sizeof(bdir), "%.100s/backup", f->dir);
	assert_int_equal(sx_store_backup(f->st, bdir), 0);
	/* A second backup into the same place is refused. */
	assert_int_equal(sx_store_backup(f->st, bdir), SX_EEXIST);

	struct fx g = {0};
	snprintf(g.dir, sizeof(g.dir), "%s", bdir);
	uv_loop_init(&g.loop);
	struct sx_store *b = open_store(&g, 0, 0);
	assert_non_null(b);
	assert_get(b, SX_T_KV, "saved", "yes");
	sx_store_read_end(b);
	sx_store_close(b);
	uv_run(&g.loop, UV_RUN_NOWAIT);
	uv_loop_close(&g.loop);
}

static void test_bad_keys(void **state)
{
	struct fx *f = *state;
	char big[600];
	memset(big, 'k', sizeof(big));
	assert_int_equal(sx_store_put(f->st, SX_T_KV, big, sizeof(big), "v", 1), SX_E2BIG);
	assert_int_equal(sx_store_put(f->st, SX_T_KV, "", 0, "v", 1), SX_E2BIG);
	assert_int_equal(sx_store_put(f->st, SX_T_COUNT, "k", 1, "v", 1), SX_EINVAL);
}

static void test_many_batches_in_order(void **state)
{
	struct fx *f = *state;
	/* Writes that land in different batches keep their order: the last wins. */
	for (int i = 0; i < 50; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		put_s(f->st, SX_T_KV, "counter", v);
		sx_store_flush(f->st);
		uv_run(&f->loop, UV_RUN_NOWAIT);
	}
	sync_all(f);
	assert_get(f->st, SX_T_KV, "counter", "49");
	sx_store_read_end(f->st);
	sx_store_close(f->st);
	f->st = open_store(f, 0, 0);
	assert_get(f->st, SX_T_KV, "counter", "49");
	sx_store_read_end(f->st);
}


/* A batch applies the newest change of each key, whatever the order of its log. */
static void test_batch_applies_newest_change_per_key(void **state)
{
	struct fx *f = *state;
	put_s(f->st, SX_T_KV, "gone", "0");
	put_s(f->st, SX_T_KV, "kept", "0");
	sync_all(f);
	put_s(f->st, SX_T_KV, "z", "1");
	put_s(f->st, SX_T_KV, "a", "1");
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "a", 1), 0);
	put_s(f->st, SX_T_KV, "a", "2");
	put_s(f->st, SX_T_KV, "gone", "1");
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "gone", 4), 0);
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "never", 5), 0);
	put_s(f->st, SX_T_USERS, "a", "u");
	put_s(f->st, SX_T_KV, "z", "3");
	put_s(f->st, SX_T_KV, "m", "1");
	uint64_t sp = sx_store_savepoint(f->st);
	put_s(f->st, SX_T_KV, "m", "undone");
	assert_int_equal(sx_store_del(f->st, SX_T_KV, "kept", 4), 0);
	sx_store_rollback(f->st, sp);
	sync_all(f);
	assert_int_equal(f->last_rc, 0);
	sx_store_close(f->st);
	f->st = open_store(f, 0, 0);
	assert_non_null(f->st);
	assert_get(f->st, SX_T_KV, "a", "2");
	assert_get(f->st, SX_T_KV, "z", "3");
	assert_get(f->st, SX_T_KV, "m", "1");
	assert_get(f->st, SX_T_KV, "kept", "0");
	assert_get(f->st, SX_T_KV, "gone", NULL);
	assert_get(f->st, SX_T_KV, "never", NULL);
	assert_get(f->st, SX_T_USERS, "a", "u");
	assert_get(f->st, SX_T_USERS, "z", NULL);
	sx_store_read_end(f->st);
}

struct undo_log {
	int calls;
	uint64_t tables;
};

static void undo_cb(uint64_t tables, void *ud)
{
	struct undo_log *u = ud;
	u->calls++;
	u->tables |= tables;
}

static void test_undo_listeners(void **state)
{
	struct fx *f = *state;
	struct undo_log u = {0};
	assert_int_equal(sx_store_on_undo(f->st, undo_cb, &u), 0);
	assert_int_equal(sx_store_on_undo(f->st, undo_cb, &u), 0); /* once only */
	uint64_t sp = sx_store_savepoint(f->st);
	sx_store_rollback(f->st, sp); /* nothing undone: not called */
	assert_int_equal(u.calls, 0);
	put_s(f->st, SX_T_KV, "a", "1");
	put_s(f->st, SX_T_USERS, "b", "1");
	put_s(f->st, SX_T_KV, "c", "1");
	sx_store_rollback(f->st, sp);
	assert_int_equal(u.calls, 1);
	assert_true(u.tables == ((uint64_t)1 << SX_T_KV | (uint64_t)1 << SX_T_USERS));
	sync_all(f);
	assert_int_equal(u.calls, 1);

	/* a failed batch: every table */
	sx_store_close(f->st);
	f->st = open_store(f, 1 << 20, 1 << 20);
	assert_non_null(f->st);
	memset(&u, 0, sizeof(u));
	assert_int_equal(sx_store_on_undo(f->st, undo_cb, &u), 0);
	size_t big = 2 << 20;
	char *v = calloc(1, big);
	assert_int_equal(sx_store_put(f->st, SX_T_KV, "big", 3, v, big), 0);
	free(v);
	sync_all(f);
	assert_int_equal(f->failures, 1);
	assert_int_equal(u.calls, 1);
	assert_true(u.tables == ~(uint64_t)0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read_your_writes_then_durable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_and_overwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_savepoint_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_merges_overlay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_open_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_grows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_limit_refuses_whole_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_age_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_batches_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_applies_newest_change_per_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_listeners, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relaxed_syncs_under_steady_writes, setup, teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
