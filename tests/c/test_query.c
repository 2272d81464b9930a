/* The funnel engine (plugins/events/funnel.h): the matcher on hand-made
 * sequences, and plan/run/pack over a real store against a brute force built
 * from sx_events_user_scan, with bitmap pruning at aligned and ragged edges
 * and the work split into parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/events/funnel.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "store/store.h"

#include "engine_fixture.h"

#define DAY 86400000LL
#define HOUR 3600000LL
#define MINUTE 60000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */

/* ---- the matcher ---- */


static void test_match(void **state)
{
	(void)state;
	int64_t t[SX_FUNNEL_STEPS_MAX];
	size_t start = 99;
	/* steps a b c: a@0 b@5 a@10 b@12 c@20 */
	struct sx_funnel_ev ev[] = {{0, 1}, {5, 2}, {10, 1}, {12, 2}, {20, 4}};
	assert_int_equal(sx__funnel_match(ev, 5, 3, 0, 100, 100, t, &start), 3);
	assert_int_equal(start, 0);
	assert_true(t[0] == 0 && t[1] == 5 && t[2] == 20);
	/* window 15 from a@0 reaches b@5 only; from a@10: b@12, c@20 (20 <= 10 + 15) */
	assert_int_equal(sx__funnel_match(ev, 5, 3, 0, 100, 15, t, &start), 3);
	assert_int_equal(start, 2);
	assert_true(t[0] == 10 && t[1] == 12 && t[2] == 20);
	/* the window's end is inclusive */
	assert_int_equal(sx__funnel_match(ev, 5, 3, 0, 100, 10, t, &start), 3);
	assert_int_equal(start, 2);
	assert_int_equal(sx__funnel_match(ev, 5, 3, 0, 100, 9, t, &start), 2);
	assert_int_equal(start, 0); /* the first start reaching depth 2 */
	/* starts must lie in [from, to) */
	assert_int_equal(sx__funnel_match(ev, 5, 3, 1, 10, 100, t, &start), 0);
	assert_int_equal(sx__funnel_match(ev, 5, 3, 1, 11, 100, t, &start), 3);
	assert_int_equal(start, 2);
	/* order counts: b before a does not count */
	struct sx_funnel_ev rev[] = {{0, 2}, {1, 1}};
	assert_int_equal(sx__funnel_match(rev, 2, 2, 0, 10, 10, t, &start), 1);
	/* one event carrying two steps (a funnel a -> a) needs two events */
	struct sx_funnel_ev same[] = {{0, 3}, {4, 3}};
	assert_int_equal(sx__funnel_match(same, 1, 2, 0, 10, 10, t, &start), 1);
	assert_int_equal(sx__funnel_match(same, 2, 2, 0, 10, 10, t, &start), 2);
	assert_true(t[0] == 0 && t[1] == 4);
	assert_int_equal(sx__funnel_match(NULL, 0, 2, 0, 10, 10, t, &start), 0);
}

/* The matcher's definition, read literally: from each start, scan forward. */
static int match_ref(const struct sx_funnel_ev *ev, size_t n, int nsteps, int64_t from, int64_t to, int64_t window,
		     int64_t *t, size_t *start)
{
	int best = 0;
	for (size_t s = 0; s < n && best < nsteps; s++) {
		if (!(ev[s].mask & 1) || ev[s].time < from || ev[s].time >= to)
			continue;
		int64_t tt[SX_FUNNEL_STEPS_MAX];
		int k = 1;
		tt[0] = ev[s].time;
		for (size_t j = s + 1; j < n && k < nsteps; j++) {
			if (ev[j].time > tt[0] + window)
				break;
			if (ev[j].mask & (1u << k))
				tt[k++] = ev[j].time;
		}
		if (k > best) {
			best = k, *start = s;
			memcpy(t, tt, sizeof(int64_t) * (size_t)k);
		}
	}
	return best;
}

static void test_match_random(void **state)
{
	(void)state;
	struct sx_funnel_ev ev[300];
	uint64_t x = 12345;
	for (int round = 0; round < 20000; round++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		size_t n = (size_t)(x >> 33) % 300;
		int nsteps = 1 + (int)((x >> 20) % 6);
		int64_t window = (int64_t)((x >> 40) % 50), time = 0;
		for (size_t i = 0; i < n; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			time += (int64_t)((x >> 60) % 3);
			ev[i].time = time;
			/* mostly one step, sometimes two or none */
			ev[i].mask = (1u << ((x >> 33) % (unsigned)nsteps)) | ((x >> 50) % 7 == 0 ? 1u << ((x >> 40) % (unsigned)nsteps) : 0);
			if ((x >> 45) % 11 == 0)
				ev[i].mask = 0;
		}
		int64_t from = (int64_t)((x >> 10) % 40), to = from + (int64_t)((x >> 30) % (uint64_t)(time + 2));
		int64_t t1[SX_FUNNEL_STEPS_MAX], t2[SX_FUNNEL_STEPS_MAX];
		size_t s1 = 7777, s2 = 7777;
		int d1 = sx__funnel_match(ev, n, nsteps, from, to, window, t1, &s1);
		int d2 = match_ref(ev, n, nsteps, from, to, window, t2, &s2);
		assert_int_equal(d1, d2);
		assert_int_equal(s1, s2);
		for (int k = 0; k < d1; k++)
			assert_true(t1[k] == t2[k]);
	}
}

/* ---- over a store ---- */

static void track(struct sx_ev_batch *b, const char *user, const char *name, int64_t t, const char *device)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	sx_pack_kv_str(&pk, "user", user);
	sx_pack_kv_str(&pk, "name", name);
	sx_pack_kv_int(&pk, "time", t);
	sx_pack_key(&pk, "properties");
	msgpack_pack_map(&pk, 1);
	sx_pack_kv_str(&pk, "device", device);
	msgpack_zone_init(&z, 1024);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(sx__ev_batch_add(b, &o, 0), 0);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}

static const char *const names[] = {"search", "view", "create_trip", "book", "other"};

static int setup(void **state)
{
	struct sxt_engine *f = calloc(1, sizeof(*f));
	sxt_init(f, "query", 0);
	f->cfg.funnel_warm_days = 0; /* the tests start the warm-up themselves */
	sxt_open(f);
	/* 300 users: a third only search (pruned), the others random sessions;
	 * times at second resolution around minute edges */
	uint64_t x = 12345;
	struct sx_ev_batch *b = sx__ev_batch_new();
	for (int u = 0; u < 300; u++) {
		char id[16];
		snprintf(id, sizeof(id), "q%d", u);
		int n = 1 + (int)(x % 9);
		for (int i = 0; i < n; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			int64_t t = T0 + (int64_t)((x >> 20) % (4 * DAY / 1000)) * 1000;
			int nm = u % 3 == 0 ? 0 : (int)((x >> 50) % 5);
			track(b, id, names[nm], t, (x >> 40) & 1 ? "ios" : "web");
		}
	}
	assert_int_equal(sx__ev_batch_finish(b), 0);
	sxt_sync(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	sxt_free(*state);
	free(*state);
	return 0;
}

struct brute {
	int nsteps;
	struct sx_funnel_ev ev[64];
	size_t n;
};

static int brute_cb(const struct sx_event *ev, void *ud)
{
	struct brute *b = ud;
	uint32_t mask = 0;
	for (int i = 0; i < b->nsteps; i++)
		if (strlen(names[i]) == ev->name_len && !memcmp(names[i], ev->name, ev->name_len))
			mask |= 1u << i;
	if (mask) {
		assert_true(b->n < 64);
		b->ev[b->n].time = ev->time;
		b->ev[b->n++].mask = mask;
	}
	return 0;
}

/* users per step, by reading every user */
static void brute_force(int nsteps, int64_t from, int64_t to, int64_t window, uint64_t *users)
{
	memset(users, 0, sizeof(uint64_t) * SX_FUNNEL_STEPS_MAX);
	for (uint32_t u = 0; u < sx_events_user_bound(); u++) {
		struct brute b = {nsteps, {{0, 0}}, 0};
		int64_t t[SX_FUNNEL_STEPS_MAX];
		size_t start;
		assert_int_equal(sx_events_user_scan(NULL, u, from, to + window, 0, brute_cb, &b), 0);
		int d = sx__funnel_match(b.ev, b.n, nsteps, from, to, window, t, &start);
		for (int k = 0; k < d; k++)
			users[k]++;
	}
	sx_store_read_end(sx__ev_eng->store);
}

struct packed {
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o;
};

static struct sx_funnel *funnel_of(int nsteps, int64_t from, int64_t to, int64_t window, const char *group)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4 + (group != NULL));
	sx_pack_key(&pk, "steps");
	msgpack_pack_array(&pk, (size_t)nsteps);
	for (int i = 0; i < nsteps; i++)
		sx_pack_str(&pk, names[i]);
	sx_pack_kv_int(&pk, "from", from);
	sx_pack_kv_int(&pk, "to", to);
	sx_pack_kv_int(&pk, "window_ms", window);
	if (group)
		sx_pack_kv_str(&pk, "group_by", group);
	msgpack_zone_init(&z, 1024);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	struct sx_funnel *f = sx__funnel_new(&o);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	assert_non_null(f);
	return f;
}

/* Runs the funnel in `parts` parts; the packed result goes to p. */
static void run(struct sxt_engine *fx, struct sx_funnel *f, int parts, struct packed *p, uint64_t *pruned)
{
	MDB_txn *txn;
	uint64_t scanned;
	assert_int_equal(sx_store_rtxn_begin(fx->e.store, &txn), 0);
	int n = sx__funnel_plan(f, txn, parts);
	assert_true(n >= 1 && n <= parts);
	for (int i = 0; i < n; i++)
		assert_int_equal(sx__funnel_run(f, i, txn), 0);
	sx_store_rtxn_end(fx->e.store, txn);
	msgpack_packer pk;
	msgpack_sbuffer_init(&p->sb);
	msgpack_packer_init(&pk, &p->sb, msgpack_sbuffer_write);
	assert_int_equal(sx__funnel_pack(f, &pk), 0);
	sx__funnel_stats(f, &scanned, pruned);
	size_t off = 0;
	msgpack_zone_init(&p->z, 4096);
	assert_int_equal(msgpack_unpack(p->sb.data, p->sb.size, &off, &p->z, &p->o), MSGPACK_UNPACK_SUCCESS);
}

static void packed_free(struct packed *p)
{
	msgpack_zone_destroy(&p->z);
	msgpack_sbuffer_destroy(&p->sb);
}

static void check_steps(const msgpack_object *steps, int nsteps, const uint64_t *want)
{
	assert_int_equal(steps->type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(steps->via.array.size, nsteps);
	for (int k = 0; k < nsteps; k++) {
		const msgpack_object *u = sx__ev_map_get(&steps->via.array.ptr[k], "users");
		assert_non_null(u);
		assert_int_equal(u->via.u64, want[k]);
	}
}

/* A 4-step funnel over [from, to) run in one part: its users per step are `want`. */
static void check_funnel(struct sxt_engine *fx, int64_t from, int64_t to, int64_t window, const uint64_t *want)
{
	struct packed p;
	uint64_t pruned;
	struct sx_funnel *f = funnel_of(4, from, to, window, NULL);
	run(fx, f, 1, &p, &pruned);
	sx__funnel_free(f);
	check_steps(sx__ev_map_get(&p.o, "steps"), 4, want);
	packed_free(&p);
}

static void test_against_brute_force(void **state)
{
	struct sxt_engine *fx = *state;
	struct {
		int nsteps;
		int64_t from, to, window;
	} cases[] = {
		{4, T0, T0 + 2 * DAY, DAY},                                  /* aligned */
		{4, T0 + 30 * 1000, T0 + DAY + 90 * 1000, 6 * HOUR},          /* ragged minutes */
		{3, T0 + HOUR, T0 + 3 * DAY - 1, 7 * DAY},
		{2, T0, T0 + 4 * DAY, 1000},
		{1, T0 + 17 * 1000, T0 + 2 * DAY + 5 * 1000, DAY},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t want[SX_FUNNEL_STEPS_MAX], pruned1, pruned3;
		brute_force(cases[c].nsteps, cases[c].from, cases[c].to, cases[c].window, want);
		assert_true(want[0] > 0);
		struct packed p1, p3;
		struct sx_funnel *f = funnel_of(cases[c].nsteps, cases[c].from, cases[c].to, cases[c].window, NULL);
		run(fx, f, 1, &p1, &pruned1);
		sx__funnel_free(f);
		f = funnel_of(cases[c].nsteps, cases[c].from, cases[c].to, cases[c].window, NULL);
		run(fx, f, 3, &p3, &pruned3);
		sx__funnel_free(f);
		check_steps(sx__ev_map_get(&p1.o, "steps"), cases[c].nsteps, want);
		/* the split changes nothing, medians included */
		assert_int_equal(p1.sb.size, p3.sb.size);
		assert_memory_equal(p1.sb.data, p3.sb.data, p1.sb.size);
		assert_int_equal(pruned1, pruned3);
		/* the users who only search stop at step 1 without being read */
		if (cases[c].nsteps > 1)
			assert_true(pruned1 > 0);
		packed_free(&p1);
		packed_free(&p3);
	}
}

static void test_groups_add_up(void **state)
{
	struct sxt_engine *fx = *state;
	uint64_t want[SX_FUNNEL_STEPS_MAX], pruned;
	brute_force(3, T0, T0 + 3 * DAY, DAY, want);
	struct sx_funnel *f = funnel_of(3, T0, T0 + 3 * DAY, DAY, "device");
	struct packed p;
	run(fx, f, 2, &p, &pruned);
	sx__funnel_free(f);
	assert_int_equal(pruned, 0); /* grouping reads every candidate */
	check_steps(sx__ev_map_get(&p.o, "steps"), 3, want);
	const msgpack_object *g = sx__ev_map_get(&p.o, "groups");
	assert_non_null(g);
	assert_int_equal(g->via.array.size, 2);
	uint64_t sum[3] = {0};
	for (uint32_t i = 0; i < 2; i++) {
		const msgpack_object *v = sx__ev_map_get(&g->via.array.ptr[i], "value");
		assert_int_equal(v->type, MSGPACK_OBJECT_STR);
		const msgpack_object *st = sx__ev_map_get(&g->via.array.ptr[i], "steps");
		for (int k = 0; k < 3; k++)
			sum[k] += sx__ev_map_get(&st->via.array.ptr[k], "users")->via.u64;
	}
	for (int k = 0; k < 3; k++)
		assert_int_equal(sum[k], want[k]);
	packed_free(&p);
}

/* The hour blocks and the events table give the same bytes; blocks are
 * reused while their hour is unchanged and rebuilt when an event arrives in
 * it (even a late one), or after sx__tl_invalidate(). */
static void test_blocks_match_the_events_table(void **state)
{
	struct sxt_engine *fx = *state;
	struct packed a, b;
	uint64_t pruned, n0, built0, reused0, n1, built1, reused1;
	int64_t from = T0 + 30 * 1000, to = T0 + 3 * DAY + 7 * 1000, w = 5 * HOUR;
	sx__funnel_blocks = 0;
	struct sx_funnel *f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 2, &a, &pruned);
	sx__funnel_free(f);
	sx__funnel_blocks = 1;
	sx__tl_stats(&n0, &built0, &reused0);
	f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 2, &b, &pruned);
	sx__funnel_free(f);
	sx__tl_stats(&n1, &built1, &reused1);
	assert_true(built1 > built0 && n1 > 0);
	assert_int_equal(a.sb.size, b.sb.size);
	assert_memory_equal(a.sb.data, b.sb.data, a.sb.size);
	packed_free(&b);
	/* again: every block is reused */
	f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 1, &b, &pruned);
	sx__funnel_free(f);
	sx__tl_stats(&n0, &built0, &reused0);
	assert_int_equal(built0, built1);
	assert_true(reused0 > reused1);
	assert_memory_equal(a.sb.data, b.sb.data, a.sb.size);
	packed_free(&b);
	packed_free(&a);
	/* a late event in an old hour: that block alone is rebuilt, the answer follows */
	struct sx_ev_batch *bt = sx__ev_batch_new();
	track(bt, "late1", "search", T0 + HOUR + 5000, "ios");
	track(bt, "late1", "view", T0 + HOUR + 9000, "ios");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	uint64_t want[SX_FUNNEL_STEPS_MAX];
	brute_force(4, from, to, w, want);
	check_funnel(fx, from, to, w, want);
	sx__tl_stats(&n1, &built1, &reused1);
	assert_int_equal(built1, built0 + 1);
	sx__tl_invalidate();
	check_funnel(fx, from, to, w, want);
	sx__tl_stats(&n0, &built0, &reused0);
	assert_true(built0 > built1 + 10);
	assert_int_equal(reused0, reused1);
	/* events after an hour's latest one (the hour being filled): the block is
	 * extended, not rebuilt, and answers as the events table does */
	uint64_t ext0 = sx__tl_extended();
	bt = sx__ev_batch_new();
	track(bt, "ext1", "search", T0 + 3 * HOUR - 1, "web");
	track(bt, "ext1", "view", T0 + 3 * HOUR - 1, "web");
	track(bt, "late1", "create_trip", T0 + 3 * HOUR - 1, "web");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	brute_force(4, from, to, w, want);
	f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 1, &b, &pruned);
	sx__funnel_free(f);
	check_steps(sx__ev_map_get(&b.o, "steps"), 4, want);
	assert_int_equal(sx__tl_extended(), ext0 + 1);
	sx__funnel_blocks = 0;
	f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 2, &a, &pruned);
	sx__funnel_free(f);
	sx__funnel_blocks = 1;
	assert_int_equal(a.sb.size, b.sb.size);
	assert_memory_equal(a.sb.data, b.sb.data, a.sb.size);
	packed_free(&a);
	packed_free(&b);
	/* then one before the extended block's latest event: rebuilt whole */
	sx__tl_stats(&n0, &built0, &reused0);
	bt = sx__ev_batch_new();
	track(bt, "ext1", "create_trip", T0 + 3 * HOUR - 2, "web");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	brute_force(4, from, to, w, want);
	check_funnel(fx, from, to, w, want);
	sx__tl_stats(&n1, &built1, &reused1);
	assert_int_equal(built1, built0 + 1);
	assert_int_equal(sx__tl_extended(), ext0 + 1);
}

/* Blocks built in two parts (two read transactions of one snapshot) are
 * those built in one piece; parts that read different snapshots leave their
 * hours to a one-piece build. */
static void test_parts_build_the_same_blocks(void **state)
{
	struct sxt_engine *fx = *state;
	int64_t from = T0, to = T0 + 4 * DAY + HOUR;
	MDB_txn *t1, *t2;
	size_t nb, ne;
	sx__tl_clear();
	assert_int_equal(sx_store_rtxn_begin(fx->e.store, &t1), 0);
	assert_int_equal(sx_store_rtxn_begin(fx->e.store, &t2), 0);
	struct sx_tl_set *a = sx__tl_acquire(t1, from, to), *b = sx__tl_acquire(t1, from, to);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(sx__tl_pending(b, &nb, &ne));
	assert_true(nb > 90);
	assert_int_equal(ne, 0);
	assert_int_equal(sx__tl_fill(a, t1), 0);
	/* the last part to finish joins, whichever it is */
	assert_int_equal(sx__tl_fill_part(b, t2, 1, 2), 0);
	assert_true(sx__tl_pending(b, &nb, &ne));
	assert_int_equal(sx__tl_fill_part(b, t1, 0, 2), 0);
	assert_false(sx__tl_pending(b, &nb, &ne));
	size_t total = 0;
	assert_int_equal(sx__tl_nhours(a), sx__tl_nhours(b));
	for (size_t i = 0; i < sx__tl_nhours(a); i++) {
		int64_t ha, hb;
		size_t na, nb2;
		const uint64_t *ea = sx__tl_block(a, i, &ha, &na), *eb = sx__tl_block(b, i, &hb, &nb2);
		assert_true(ha == hb);
		assert_int_equal(na, nb2);
		if (na)
			assert_memory_equal(ea, eb, na * sizeof(uint64_t));
		total += na;
	}
	assert_true(total > 900);
	sx_store_rtxn_end(fx->e.store, t2);
	sx__tl_release(a);
	sx__tl_release(b);
	/* a commit between the parts' snapshots */
	sx__tl_clear();
	struct sx_tl_set *c = sx__tl_acquire(t1, from, to);
	assert_non_null(c);
	assert_int_equal(sx__tl_fill_part(c, t1, 0, 2), 0);
	sx_store_rtxn_end(fx->e.store, t1);
	struct sx_ev_batch *bt = sx__ev_batch_new();
	track(bt, "parts1", "search", T0 + 2 * HOUR + 1000, "ios");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	assert_int_equal(sx_store_rtxn_begin(fx->e.store, &t2), 0);
	assert_int_equal(sx__tl_fill_part(c, t2, 1, 2), 0);
	assert_true(sx__tl_pending(c, &nb, &ne));
	assert_true(nb > 90);
	assert_int_equal(sx__tl_fill(c, t2), 0);
	assert_false(sx__tl_pending(c, &nb, &ne));
	sx_store_rtxn_end(fx->e.store, t2);
	sx__tl_release(c);
	/* and the blocks answer as the events table does */
	struct packed pa, pb;
	uint64_t pruned;
	sx__funnel_blocks = 0;
	struct sx_funnel *f = funnel_of(4, from, to - HOUR, HOUR, NULL);
	run(fx, f, 2, &pa, &pruned);
	sx__funnel_free(f);
	sx__funnel_blocks = 1;
	f = funnel_of(4, from, to - HOUR, HOUR, NULL);
	run(fx, f, 1, &pb, &pruned);
	sx__funnel_free(f);
	assert_int_equal(pa.sb.size, pb.sb.size);
	assert_memory_equal(pa.sb.data, pb.sb.data, pa.sb.size);
	packed_free(&pa);
	packed_free(&pb);
}

/* An erasure or an expiry bumps the generation before its deletions commit:
 * blocks read from a snapshot before that commit serve their query and are
 * not cached, so a query after the commit never counts the deleted events. */
static void test_delete_before_commit(void **state)
{
	struct sxt_engine *fx = *state;
	int64_t from = T0, to = T0 + 3 * DAY, w = DAY;
	uint64_t before[SX_FUNNEL_STEPS_MAX], after[SX_FUNNEL_STEPS_MAX], pruned;
	struct sx_ev_batch *bt = sx__ev_batch_new();
	track(bt, "gone", "search", T0 + DAY + 1000, "ios");
	track(bt, "gone", "view", T0 + DAY + 2000, "ios");
	track(bt, "gone", "create_trip", T0 + DAY + 3000, "ios");
	track(bt, "gone", "book", T0 + DAY + 4000, "ios");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	brute_force(4, from, to, w, before);
	check_funnel(fx, from, to, w, before);
	uint32_t idx;
	struct sx_events_erased er;
	assert_int_equal(sx_events_user_erase("gone", 4, &idx, &er), 0);
	/* not committed yet: a query reads the snapshot that still holds them */
	check_funnel(fx, from, to, w, before);
	sxt_sync(fx);
	brute_force(4, from, to, w, after);
	assert_true(after[3] == before[3] - 1);
	check_funnel(fx, from, to, w, after);
	/* expiry keeps the counters and bitmaps (funnel.query's candidates): the
	 * blocks must answer as reading the events table does */
	uint32_t deleted;
	assert_true(sx_events_expire(T0 + DAY + DAY / 2, 1000000, &deleted) >= 0);
	assert_true(deleted > 100);
	check_funnel(fx, from, to, w, after);
	sxt_sync(fx);
	struct packed p, pt;
	sx__funnel_blocks = 0;
	struct sx_funnel *f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 2, &pt, &pruned);
	sx__funnel_free(f);
	sx__funnel_blocks = 1;
	f = funnel_of(4, from, to, w, NULL);
	run(fx, f, 1, &p, &pruned);
	sx__funnel_free(f);
	assert_int_equal(p.sb.size, pt.sb.size);
	assert_memory_equal(p.sb.data, pt.sb.data, p.sb.size);
	/* and the expiry changed it */
	const msgpack_object *s1 = sx__ev_map_get(&p.o, "steps");
	assert_true(sx__ev_map_get(&s1->via.array.ptr[1], "users")->via.u64 < after[1]);
	packed_free(&p);
	packed_free(&pt);
}

static int warm_idle_calls;
static void warm_idle(void) { warm_idle_calls++; }

static void warm_wait(struct sxt_engine *fx)
{
	for (int i = 0; i < 1000 && sx__tl_warm_busy(); i++)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_false(sx__tl_warm_busy());
}

/* The warm-up builds the latest days' blocks on the pool: a query over them
 * then builds nothing; it extends the current hour as events arrive and does
 * nothing when nothing changed. */
static void test_warm_up(void **state)
{
	struct sxt_engine *fx = *state;
	struct sx_tl_warm_stats ws;
	uint64_t n0, built0, reused0, n1, built1, reused1, want[SX_FUNNEL_STEPS_MAX];
	uint64_t nb, builtb, reusedb;
	sx__tl_clear();
	sx__tl_stats(&nb, &builtb, &reusedb);
	warm_idle_calls = 0;
	assert_int_equal(sx__tl_warm_start(&fx->loop, 2, warm_idle), 0);
	for (int i = 0; i < 1000; i++) {
		sx__tl_warm_stats(&ws);
		if (ws.runs)
			break;
		uv_run(&fx->loop, UV_RUN_ONCE);
	}
	assert_int_equal(ws.runs, 1);
	assert_int_equal(ws.failed, 0);
	assert_int_equal(warm_idle_calls, 1);
	/* the data ends in the last hour of day 4 (T0 + 4 days) */
	assert_true(ws.to == T0 + 4 * DAY);
	assert_true(ws.from == T0 + 2 * DAY);
	sx__tl_stats(&n0, &built0, &reused0);
	assert_int_equal(built0, builtb + 48);
	assert_int_equal(nb, 0);
	assert_true(n0 > 300);
	brute_force(4, ws.from, ws.to - HOUR, HOUR, want);
	check_funnel(fx, ws.from, ws.to - HOUR, HOUR, want);
	sx__tl_stats(&n1, &built1, &reused1);
	assert_int_equal(built1, built0);
	assert_int_equal(reused1, reused0 + 48);
	/* nothing changed: nothing goes to the pool */
	sx__tl_warm_now();
	assert_false(sx__tl_warm_busy());
	sx__tl_warm_stats(&ws);
	assert_int_equal(ws.runs, 1);
	/* an event in the latest hour: that block is extended */
	uint64_t ext0 = sx__tl_extended();
	struct sx_ev_batch *bt = sx__ev_batch_new();
	track(bt, "warm1", "search", T0 + 4 * DAY - 1, "web");
	assert_int_equal(sx__ev_batch_finish(bt), 0);
	sxt_sync(fx);
	sx__tl_warm_now();
	assert_true(sx__tl_warm_busy());
	warm_wait(fx);
	sx__tl_warm_stats(&ws);
	assert_int_equal(ws.runs, 2);
	assert_int_equal(warm_idle_calls, 2);
	assert_int_equal(sx__tl_extended(), ext0 + 1);
	sx__tl_stats(&n0, &built0, &reused0);
	assert_int_equal(n0, n1 + 1);
	sx__tl_warm_stop();
}

static void test_bad_arguments(void **state)
{
	(void)state;
	assert_null(sx__funnel_new(NULL));
	assert_int_equal(sx_diag_last_code(), SX_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_match_random),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test_setup_teardown(test_against_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_groups_add_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blocks_match_the_events_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parts_build_the_same_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_before_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_warm_up, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
