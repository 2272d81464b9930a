/* The accuracy sweep's pass over a log in chunks (plugins/predict/sweep.c)
 * over a real store: chunks end at their limit and the next resumes after
 * the last entry, sums gathered per key are merged into the stored ones, and
 * a chunk that fails writes nothing and is visited again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine_fixture.h"
#include "plugins/predict/internal.h"

/* The sums of the test: a count, encoded as 8 bytes big-endian. */
static void count_merge(void *into, const void *from) { *(uint64_t *)into += *(const uint64_t *)from; }
static void count_encode(const void *c, uint8_t *out) { sx_be64(out, *(const uint64_t *)c); }
static int count_decode(void *c, const void *buf, size_t len)
{
	if (len != 8)
		return SX_ECORRUPT;
	*(uint64_t *)c = sx_get_be64(buf);
	return 0;
}

static const struct sx_pred_sums_type count_type = {"count", 8, 8, count_merge, count_encode, count_decode};

struct folding {
	struct sx_pred_pass *pass;
	int fail_at;  /* the entry whose fold fails, or -1 */
	int seen[64];
};

/* Log entries 'Z' be32(i) -> group byte. Those of groups 0 and 1 add 1 to
 * the sums 'z' group and leave the log, as the sweeps' folds do with closed
 * windows; group 2 stays (a window still open). */
static int fold(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct folding *f = ud;
	int i = (int)sx_get_be32((const uint8_t *)key->data + 1);
	if (i == f->fail_at)
		return sx_diag_set(SX_EIO, "the fold of entry %d fails", i);
	f->seen[i]++;
	if (((const uint8_t *)val->data)[0] == 2)
		return 0;
	uint8_t sk[2] = {'z', ((const uint8_t *)val->data)[0]};
	uint64_t *n = sx__pred_pass_sums(f->pass, sk, sizeof(sk));
	if (!n)
		return SX_ENOMEM;
	++*n;
	return sx_store_del(sx__pred_eng->store, SX_T_SERIES, key->data, key->len);
}

static void put_entries(struct sxt_engine *t, int from, int to)
{
	for (int i = from; i < to; i++) {
		uint8_t k[5] = {'Z'}, g = (uint8_t)(i % 3);
		sx_be32(k + 1, (uint32_t)i);
		assert_int_equal(sx_store_put(t->e.store, SX_T_SERIES, k, sizeof(k), &g, 1), 0);
	}
	sxt_sync(t);
}

static uint64_t stored(struct sxt_engine *t, uint8_t group)
{
	uint8_t k[2] = {'z', group};
	struct sx_val v;
	uint64_t n = 0;
	sx_store_read_end(t->e.store);
	if (sx_store_get(t->e.store, SX_T_SERIES, k, sizeof(k), &v) == 0)
		assert_int_equal(count_decode(&n, v.data, v.len), 0);
	return n;
}

/* One chunk as the timer runs it: rolled back when it fails. */
static int chunk(struct sxt_engine *t, struct sx_pred_pass *p, size_t limit)
{
	static const uint8_t hi[1] = {'Z' + 1};
	uint64_t sp = sx_store_savepoint(t->e.store);
	int rc = sx__pred_pass_chunk(p, hi, sizeof(hi), limit);
	if (rc < 0)
		sx_store_rollback(t->e.store, sp);
	sxt_sync(t);
	return rc;
}

static void test_chunks_resume_and_merge(void **state)
{
	struct sxt_engine *t = *state;
	struct folding f = {.fail_at = -1};
	struct sx_pred_pass p = {.tag = 'Z', .type = &count_type, .fold = fold, .ud = &f};
	f.pass = &p;
	/* sums from an earlier pass are merged into, not replaced */
	uint8_t k0[2] = {'z', 0}, v0[8];
	sx_be64(v0, 100);
	assert_int_equal(sx_store_put(t->e.store, SX_T_SERIES, k0, 2, v0, 8), 0);
	put_entries(t, 0, 25);

	assert_int_equal(chunk(t, &p, 10), 0);
	assert_true(p.visited == 10 && p.stopped);
	assert_int_equal(stored(t, 0), 100 + 4); /* 0 3 6 9 */
	assert_int_equal(chunk(t, &p, 10), 0);
	assert_true(p.visited == 10 && p.stopped);
	assert_int_equal(chunk(t, &p, 10), 1);
	assert_true(p.visited == 5 && !p.stopped);
	for (int i = 0; i < 25; i++)
		assert_int_equal(f.seen[i], 1); /* the open ones too: each chunk went on after the last */
	assert_int_equal(stored(t, 0), 100 + 9);
	assert_int_equal(stored(t, 1), 8);
	assert_int_equal(stored(t, 2), 0);
	/* the pass is complete: the next starts over and sees the open entries */
	memset(f.seen, 0, sizeof(f.seen));
	assert_int_equal(chunk(t, &p, 10), 1);
	assert_int_equal(p.visited, 8);
	for (int i = 0; i < 25; i++)
		assert_int_equal(f.seen[i], i % 3 == 2);
}

static void test_failed_chunk_writes_nothing_and_is_visited_again(void **state)
{
	struct sxt_engine *t = *state;
	struct folding f = {.fail_at = 13};
	struct sx_pred_pass p = {.tag = 'Z', .type = &count_type, .fold = fold, .ud = &f};
	f.pass = &p;
	put_entries(t, 0, 20);
	assert_int_equal(chunk(t, &p, 10), 0); /* 0..9 */
	assert_int_equal(stored(t, 1), 3);
	assert_int_equal(chunk(t, &p, 10), SX_EIO); /* 10..12 folded, then 13 fails */
	assert_int_equal(stored(t, 1), 3);          /* 10 was not kept */
	f.fail_at = -1;
	memset(f.seen, 0, sizeof(f.seen));
	assert_int_equal(chunk(t, &p, 10), 1); /* 10..19 again, from the same cursor: the end */
	for (int i = 0; i < 20; i++)
		assert_int_equal(f.seen[i], i >= 10);
	assert_int_equal(stored(t, 0), 7); /* every closed entry counted once: 0 3 … 18 */
	assert_int_equal(stored(t, 1), 7);
}

static int setup(void **state)
{
	struct sxt_engine *t = calloc(1, sizeof(*t));
	sxt_init(t, "sweep", 0);
	sxt_open(t);
	sx__pred_eng = &t->e;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	sx__pred_eng = NULL;
	sxt_free(*state);
	free(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chunks_resume_and_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_chunk_writes_nothing_and_is_visited_again, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
