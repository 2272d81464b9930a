/* Segment popularity in the recommend plugin: counting per (segment value,
 * item) from events.track, the user -> segment cache and users.put, the
 * journal replay after a crash, the snapshot across a restart, the
 * evaluation world at the cut, and the bounds on segment values and pairs:
 * the slots and pairs of idle or least active segments reclaimed, the same
 * after a crash or a restart. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine_fixture.h"

#include "core/jobs.h"
#include "core/lua/sandbox.h"
#include "core/scripts.h"
#include "plugins/events/events.h"
#include "plugins/recommend/internal.h"

extern const struct sx_plugin sx_plugin_recommend;

#define T0 1767225600000LL /* 2026-01-01 */
#define HOUR 3600000LL

struct fx {
	struct sxt_engine t;
	char sdir[160];
};

static void rec_start(struct fx *f)
{
	struct sx_lua_limits ll = {0, 0, 0, 0};
	f->t.e.lua = sx_lua_new(&ll);
	f->t.e.jobs = sx_jobs_new(&f->t.loop, NULL);
	assert_non_null(f->t.e.lua);
	assert_non_null(f->t.e.jobs);
	f->t.e.scripts = sx_scripts_new(&f->t.e);
	assert_non_null(f->t.e.scripts);
	assert_int_equal(sx_plugin_recommend.start(&f->t.e), 0);
}

static void rec_stop(struct fx *f)
{
	sxt_sync(&f->t);
	sx_plugin_recommend.stop(&f->t.e);
	sx_jobs_free(f->t.e.jobs);
	sx_scripts_free(f->t.e.scripts);
	sx_lua_free(f->t.e.lua);
	f->t.e.jobs = NULL, f->t.e.scripts = NULL, f->t.e.lua = NULL;
	uv_run(&f->t.loop, UV_RUN_NOWAIT);
}

static void open_all(struct fx *f)
{
	sxt_open(&f->t);
	rec_start(f);
}

static void close_all(struct fx *f)
{
	rec_stop(f);
	sxt_stop(&f->t);
}

static void call_ok(struct fx *f, const char *method, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	int rc = sxt_call(&f->t, method, buf);
	if (rc != 0)
		fail_msg("%s %s: %s", method, buf, sx_diag_last());
}

static void user(struct fx *f, const char *id, const char *country)
{
	if (country)
		call_ok(f, "users.put", "{\"id\": \"%s\", \"attributes\": {\"country\": \"%s\"}}", id, country);
	else
		call_ok(f, "users.put", "{\"id\": \"%s\"}", id);
}

static void view(struct fx *f, const char *u, const char *item, int64_t t)
{
	call_ok(f, "events.track", "{\"user\": \"%s\", \"name\": \"view\", \"time\": %lld, \"item\": \"%s\"}", u, (long long)t,
		item);
}

static uint32_t item_idx(const char *id)
{
	int64_t i = sx__rec_item_find(id, strlen(id));
	assert_true(i >= 0);
	return (uint32_t)i;
}

static uint32_t user_idx(const char *id)
{
	uint32_t u;
	assert_int_equal(sx_events_user_index(NULL, id, strlen(id), &u), 0);
	return u;
}

/* The segment popularity of item in segment value v of state s (0 if none), as of s's now. */
static double segpop(struct rec_state *s, const char *v, const char *item)
{
	const struct rec_seg *g = sx__rec_seg_find(s, sx__rec_segment_hash(v, strlen(v)));
	uint32_t it = item_idx(item);
	for (uint32_t j = 0; g && j < g->cap; j++)
		if (g->e[j].item == it)
			return sx__rec_seg_pop(&g->e[j], sx__rec_now(s));
	return 0;
}

/* The items of segment v's source, best first, as ids joined by ',' */
static void top(struct rec_state *s, const char *v, char *out, size_t size)
{
	struct rec_cand c[16];
	int n = sx__rec_src_segment(s, sx__rec_segment_hash(v, strlen(v)), -1, 16, c);
	assert_true(n >= 0);
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(out);
		snprintf(out + l, size - l, "%s%s", i ? "," : "", sx__rec->items[c[i].item].id);
		assert_int_equal(c[i].source, REC_SRC_SEGMENT);
	}
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	sxt_init(&f->t, "recseg", 1);
	open_all(f);
	const char *items[] = {"a", "b", "c", "d", "e", "f"};
	for (size_t i = 0; i < SX_ARRAY_SIZE(items); i++)
		call_ok(f, "items.put", "{\"id\": \"%s\", \"kind\": \"destination\", \"attributes\": {\"tags\": [\"x\"]}}", items[i]);
	user(f, "fr1", "FR"), user(f, "fr2", "FR"), user(f, "fr3", "fr");
	user(f, "de1", "DE"), user(f, "de2", "DE");
	user(f, "none", NULL);
	/* FR: a by three users, b by one; DE: c by two, d by one; "none": e */
	view(f, "fr1", "a", T0), view(f, "fr2", "a", T0), view(f, "fr3", "a", T0), view(f, "fr1", "b", T0);
	view(f, "de1", "c", T0), view(f, "de2", "c", T0), view(f, "de1", "d", T0);
	view(f, "none", "e", T0);
	sx__rec->live.now = T0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	rec_stop(f);
	sxt_free(&f->t);
	free(f);
	return 0;
}

static void test_counts(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	char buf[256];
	/* the value is case-insensitive: fr3 ("fr") counts with FR */
	assert_float_equal(segpop(s, "FR", "a"), 3, 1e-9);
	assert_float_equal(segpop(s, "fr", "a"), 3, 1e-9);
	assert_float_equal(segpop(s, "FR", "b"), 1, 1e-9);
	assert_float_equal(segpop(s, "FR", "c"), 0, 1e-9);
	assert_float_equal(segpop(s, "DE", "c"), 2, 1e-9);
	top(s, "FR", buf, sizeof(buf));
	assert_string_equal(buf, "a,b");
	top(s, "DE", buf, sizeof(buf));
	assert_string_equal(buf, "c,d");
	top(s, "IT", buf, sizeof(buf));
	assert_string_equal(buf, "");
	/* the user without the attribute is counted globally only */
	assert_int_equal(s->nsegs, 2);
	assert_float_equal(sx__rec_pop(s, item_idx("e"), REC_W_MONTH, T0), 1, 1e-9);
	int g = sx__rec_user_segment(user_idx("fr1"));
	assert_true(g >= 0);
	assert_string_equal(sx__rec->segnames[g].name, "FR");
	assert_int_equal(sx__rec_user_segment(user_idx("none")), -1);
	/* one half-life (30 days) later half the weight is left */
	s->now = T0 + 30 * 24 * HOUR;
	assert_float_equal(segpop(s, "FR", "a"), 1.5, 1e-9);
	s->now = T0;
	(void)f;
}

static void test_users_put_moves(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	/* fr2 moves to DE: new events count there; the old ones stay with FR */
	user(f, "fr2", "DE");
	view(f, "fr2", "f", T0);
	assert_float_equal(segpop(s, "DE", "f"), 1, 1e-9);
	assert_float_equal(segpop(s, "FR", "f"), 0, 1e-9);
	assert_float_equal(segpop(s, "FR", "a"), 3, 1e-9);
	int g = sx__rec_user_segment(user_idx("fr2"));
	assert_string_equal(sx__rec->segnames[g].name, "DE");
	/* and the attribute removed: no segment */
	call_ok(f, "users.put", "{\"id\": \"de2\", \"attributes\": {\"city\": \"Berlin\"}}");
	assert_int_equal(sx__rec_user_segment(user_idx("de2")), -1);
	view(f, "de2", "d", T0);
	assert_float_equal(segpop(s, "DE", "d"), 1, 1e-9);
}

/* What a crashed server rebuilds: no snapshot yet, the journal replayed. */
static void test_journal_replay(void **state)
{
	struct fx *f = *state;
	view(f, "de1", "a", T0 + HOUR);
	sxt_sync(&f->t);
	struct rec_state r;
	sx__rec_state_init(&r, 0, INT64_MAX);
	r.now = T0 + HOUR;
	assert_int_equal(sx__rec_counts_load(&r), 0);
	r.journal = 0;
	struct rec_state *s = &sx__rec->live;
	s->now = T0 + HOUR;
	assert_int_equal(r.nsegs, s->nsegs);
	const char *vals[] = {"FR", "DE"}, *items[] = {"a", "b", "c", "d", "e", "f"};
	for (int v = 0; v < 2; v++)
		for (int i = 0; i < 6; i++)
			assert_float_equal(segpop(&r, vals[v], items[i]), segpop(s, vals[v], items[i]), 1e-9);
	assert_true(segpop(&r, "DE", "a") > 0.99);
	sx__rec_state_close(&r);
	s->now = T0;
}

static void test_restart(void **state)
{
	struct fx *f = *state;
	const char *vals[] = {"FR", "DE"}, *items[] = {"a", "b", "c", "d", "e", "f"};
	double before[2][6];
	for (int v = 0; v < 2; v++)
		for (int i = 0; i < 6; i++)
			before[v][i] = segpop(&sx__rec->live, vals[v], items[i]);
	close_all(f);
	open_all(f);
	sx__rec->live.now = T0;
	for (int v = 0; v < 2; v++)
		for (int i = 0; i < 6; i++)
			assert_float_equal(segpop(&sx__rec->live, vals[v], items[i]), before[v][i], 1e-9);
	assert_float_equal(segpop(&sx__rec->live, "FR", "a"), 3, 1e-9);
	/* counting goes on after the restart, and a second restart keeps it */
	view(f, "fr1", "c", T0);
	close_all(f);
	open_all(f);
	sx__rec->live.now = T0;
	assert_float_equal(segpop(&sx__rec->live, "FR", "c"), 1, 1e-9);
	assert_float_equal(segpop(&sx__rec->live, "FR", "a"), 3, 1e-9);
}

/* recommend.evaluate's world at the cut: events at or after it are not counted. */
static void test_world_at_cut(void **state)
{
	(void)state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, T0 + HOUR);
	es.now = T0 + HOUR;
	uint32_t fr1 = user_idx("fr1"), de1 = user_idx("de1");
	sx__rec_observe(&es, fr1, item_idx("a"), 1, 0, T0, 1);
	sx__rec_observe(&es, fr1, item_idx("b"), 1, 0, T0 + HOUR, 1);
	sx__rec_observe(&es, de1, item_idx("b"), 5, 1, T0 + 2 * HOUR, 1);
	assert_float_equal(segpop(&es, "FR", "a"), sx_rec_decay(1, HOUR, 30 * REC_DAY), 1e-9);
	assert_float_equal(segpop(&es, "FR", "b"), 0, 1e-12);
	assert_float_equal(segpop(&es, "DE", "b"), 0, 1e-12);
	sx__rec_state_close(&es);
}

/* The whole segment table of a and b is the same, to the bit. */
static void assert_same_segments(const struct rec_state *a, const struct rec_state *b)
{
	assert_int_equal(a->nsegs, b->nsegs);
	assert_int_equal(a->seg_entries, b->seg_entries);
	for (uint32_t i = 0; i < a->nsegs; i++) {
		const struct rec_seg *x = &a->segs[i], *y = &b->segs[i];
		assert_true(x->h == y->h);
		assert_true(x->w == y->w);
		assert_true(x->t == y->t);
		assert_int_equal(x->n, y->n);
		for (uint32_t j = 0; j < x->cap; j++) {
			if (x->e[j].item == UINT32_MAX)
				continue;
			uint32_t k;
			for (k = 0; k < y->cap; k++)
				if (y->e[k].item == x->e[j].item)
					break;
			assert_true(k < y->cap);
			assert_true(x->e[j].pop == y->e[k].pop);
			assert_true(x->e[j].t == y->e[k].t);
		}
	}
}

static int has_seg(const struct rec_state *s, const char *v)
{
	return sx__rec_seg_find(s, sx__rec_segment_hash(v, strlen(v))) != NULL;
}

/* One events.track call: user prefix + i views item at t, for i in [lo, hi). */
static void views_batch(struct fx *f, const char *prefix, int lo, int hi, const char *item, int64_t t)
{
	size_t cap = 64 + (size_t)(hi - lo) * 120, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	len += (size_t)snprintf(buf + len, cap - len, "{\"events\": [");
	for (int i = lo; i < hi; i++)
		len += (size_t)snprintf(buf + len, cap - len,
					"%s{\"user\": \"%s%d\", \"name\": \"view\", \"time\": %lld, \"item\": \"%s\"}",
					i > lo ? "," : "", prefix, i, (long long)t, item);
	snprintf(buf + len, cap - len, "]}");
	if (sxt_call(&f->t, "events.track", buf) != 0)
		fail_msg("events.track: %s", sx_diag_last());
	free(buf);
}

#define DAY (24 * HOUR)

/* The table full of fresh segments keeps them: a new value's interaction
 * takes its weight off the least active one (C7) and counts globally only.
 * Once they have decayed, a new value frees the least active, is counted
 * and served; the next one frees the first of the equally idle others. */
static void test_full_table_reclaims_idle_segments(void **state)
{
	struct fx *f = *state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	char id[32], c[32], buf[256];
	for (int i = 0; i < REC_SEG_MAX; i++) {
		snprintf(id, sizeof(id), "cap%d", i);
		snprintf(c, sizeof(c), "C%d", i);
		user(f, id, c);
		sx__rec_observe(&es, user_idx(id), item_idx("a"), 1, 0, T0, 0);
		sx__rec_observe(&es, user_idx(id), item_idx("b"), 1, 0, T0, 0);
		if (i != 7)
			sx__rec_observe(&es, user_idx(id), item_idx("b"), 1, 0, T0, 0);
	}
	assert_int_equal(es.nsegs, REC_SEG_MAX);
	assert_int_equal(es.seg_entries, 2 * REC_SEG_MAX);
	user(f, "x", "X"), user(f, "y", "Y"), user(f, "z", "Z");
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, T0, 0);
	assert_false(has_seg(&es, "X"));
	assert_true(has_seg(&es, "C7"));
	assert_float_equal(segpop(&es, "C7", "b"), 1, 1e-12);
	assert_float_equal(sx__rec_seg_find(&es, sx__rec_segment_hash("C7", 2))->w, 1, 1e-12);
	assert_float_equal(sx__rec_pop(&es, item_idx("c"), REC_W_MONTH, T0), 1, 1e-12);
	/* ten half-lives later: 3 / 1024 left of the others, 1 / 1024 of C7 */
	int64_t t1 = T0 + 300 * DAY;
	es.now = t1;
	sx__rec_observe(&es, user_idx("y"), item_idx("d"), 1, 0, t1, 0);
	assert_false(has_seg(&es, "C7"));
	assert_true(has_seg(&es, "Y"));
	assert_float_equal(segpop(&es, "Y", "d"), 1, 1e-12);
	top(&es, "Y", buf, sizeof(buf));
	assert_string_equal(buf, "d");
	assert_int_equal(es.nsegs, REC_SEG_MAX);
	assert_int_equal(es.seg_entries, 2 * REC_SEG_MAX - 2 + 1);
	assert_float_equal(segpop(&es, "C0", "b"), 2.0 / 1024, 1e-12);
	/* equally idle: the first in the table (C0) goes */
	sx__rec_observe(&es, user_idx("z"), item_idx("e"), 1, 0, t1, 0);
	assert_false(has_seg(&es, "C0"));
	assert_true(has_seg(&es, "C1") && has_seg(&es, "Y"));
	assert_float_equal(segpop(&es, "Z", "e"), 1, 1e-12);
	/* X, left out before, gets in now */
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, t1, 0);
	assert_float_equal(segpop(&es, "X", "c"), 1, 1e-12);
	assert_false(has_seg(&es, "C1"));
	assert_int_equal(es.nsegs, REC_SEG_MAX);
	sx__rec_state_close(&es);
}

/* A full table: users capI of country CI, each with 5 views of "a" at T0 in es,
 * but for segment `weak` with `weak_views` of them. */
static void fill_table(struct fx *f, struct rec_state *es, int weak, int weak_views)
{
	char id[32], c[32];
	for (int i = 0; i < REC_SEG_MAX; i++) {
		snprintf(id, sizeof(id), "cap%d", i);
		snprintf(c, sizeof(c), "C%d", i);
		user(f, id, c);
		for (int k = 0; k < (i == weak ? weak_views : 5); k++)
			sx__rec_observe(es, user_idx(id), item_idx("a"), 1, 0, T0, 0);
	}
}

/* Values left out wear the least active segment down: a value that keeps
 * coming gets in while the others are still fresh. */
static void test_left_out_values_wear_the_weakest_down(void **state)
{
	struct fx *f = *state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	fill_table(f, &es, 3, 3);
	user(f, "x", "X");
	/* C3 (3) loses 1, then 1 again, and the third view of X frees it */
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, T0, 0);
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, T0, 0);
	assert_false(has_seg(&es, "X"));
	assert_float_equal(segpop(&es, "C3", "a"), 3, 1e-12);
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, T0, 0);
	assert_false(has_seg(&es, "C3"));
	assert_float_equal(segpop(&es, "X", "c"), 1, 1e-12);
	assert_float_equal(segpop(&es, "C4", "a"), 5, 1e-12);
	/* an interaction that comes late is weighed as of the newest time: a
	 * book (3) from ten half-lives ago is worth 3 / 1024 of a view now, and
	 * X (1) keeps its place; a book an hour ago takes it */
	user(f, "late", "L");
	sx__rec_observe(&es, user_idx("late"), item_idx("d"), 3, 1, T0 - 300 * DAY, 0);
	assert_true(has_seg(&es, "X"));
	assert_false(has_seg(&es, "L"));
	assert_float_equal(sx__rec_seg_find(&es, sx__rec_segment_hash("X", 1))->w, 1 - 3.0 / 1024, 1e-12);
	sx__rec_observe(&es, user_idx("late"), item_idx("d"), 3, 1, T0 - HOUR, 0);
	assert_false(has_seg(&es, "X"));
	assert_float_equal(segpop(&es, "L", "d"), sx_rec_decay(3, HOUR, 30 * REC_DAY), 1e-12);
	sx__rec_state_close(&es);
}

/* Under the pair budget, two new values taking turns wear the full segment down
 * and then both get in: a value that is not counted leaves no empty segment
 * behind (an empty one would take every later reclaim for itself). */
static void test_new_values_taking_turns_get_in(void **state)
{
	struct fx *f = *state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	es.seg_pairs_max = 4;
	const char *items[] = {"a", "b", "c", "d"};
	for (int i = 0; i < 4; i++)
		sx__rec_observe(&es, user_idx("fr1"), item_idx(items[i]), 1, 0, T0, 0);
	user(f, "ua", "A"), user(f, "ub", "B");
	/* FR (4) loses 1 to A, 1 to B, 1 to A; B's second view frees it */
	for (int r = 0; r < 2; r++) {
		sx__rec_observe(&es, user_idx("ua"), item_idx("e"), 1, 0, T0, 0);
		assert_int_equal(es.nsegs, 1);
		sx__rec_observe(&es, user_idx("ub"), item_idx("f"), 1, 0, T0, 0);
	}
	assert_false(has_seg(&es, "FR"));
	assert_float_equal(segpop(&es, "B", "f"), 1, 1e-12);
	sx__rec_observe(&es, user_idx("ua"), item_idx("e"), 1, 0, T0, 0);
	assert_float_equal(segpop(&es, "A", "e"), 1, 1e-12);
	assert_int_equal(es.nsegs, 2);
	for (uint32_t i = 0; i < es.nsegs; i++)
		assert_true(es.segs[i].n > 0);
	sx__rec_state_close(&es);
}

/* One event dated far ahead does not decay every other weight to nothing: the
 * weights still decide, and a new value only wears the least active down. */
static void test_far_future_event_does_not_flatten_weights(void **state)
{
	struct fx *f = *state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	fill_table(f, &es, -1, 0);
	sx__rec_observe(&es, user_idx("cap9"), item_idx("b"), 1, 0, SX_EVENTS_TIME_MAX, 0);
	user(f, "x", "X"), user(f, "y", "Y");
	sx__rec_observe(&es, user_idx("x"), item_idx("c"), 1, 0, T0, 0);
	sx__rec_observe(&es, user_idx("y"), item_idx("c"), 1, 0, T0, 0);
	assert_false(has_seg(&es, "X"));
	assert_false(has_seg(&es, "Y"));
	assert_true(has_seg(&es, "C0") && has_seg(&es, "C1"));
	const struct rec_seg *g = sx__rec_seg_find(&es, sx__rec_segment_hash("C0", 2));
	assert_float_equal(g->w, 3, 1e-12); /* the first of the least active, worn twice */
	assert_int_equal(g->t, T0);
	sx__rec_state_close(&es);
}

/* The pair budget: a new pair takes weight off the least active other
 * segment; a decayed one is freed with its pairs, which the newcomer uses. */
static void test_pair_budget_reclaims(void **state)
{
	(void)state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	es.seg_pairs_max = 8;
	uint32_t fr1 = user_idx("fr1"), de1 = user_idx("de1");
	const char *items[] = {"a", "b", "c", "d", "e", "f"};
	for (int i = 0; i < 6; i++)
		sx__rec_observe(&es, fr1, item_idx(items[i]), 1, 0, T0, 0);
	sx__rec_observe(&es, de1, item_idx("a"), 1, 0, T0, 0);
	sx__rec_observe(&es, de1, item_idx("b"), 1, 0, T0, 0);
	assert_int_equal(es.seg_entries, 8);
	/* full, FR fresh: DE's new pair is not counted, FR loses 1 of its 6 */
	sx__rec_observe(&es, de1, item_idx("c"), 1, 0, T0, 0);
	assert_float_equal(segpop(&es, "DE", "c"), 0, 1e-12);
	assert_float_equal(sx__rec_seg_find(&es, sx__rec_segment_hash("FR", 2))->w, 5, 1e-12);
	assert_float_equal(segpop(&es, "FR", "c"), 1, 1e-12);
	/* a pair DE has is counted */
	sx__rec_observe(&es, de1, item_idx("a"), 1, 0, T0, 0);
	assert_float_equal(segpop(&es, "DE", "a"), 2, 1e-12);
	assert_int_equal(es.seg_entries, 8);
	/* ten half-lives later FR has under one view left: it is freed */
	int64_t t1 = T0 + 300 * DAY;
	es.now = t1;
	sx__rec_observe(&es, de1, item_idx("d"), 1, 0, t1, 0);
	assert_false(has_seg(&es, "FR"));
	assert_int_equal(es.nsegs, 1);
	assert_int_equal(es.seg_entries, 3);
	assert_float_equal(segpop(&es, "DE", "d"), 1, 1e-12);
	/* FR comes back from nothing */
	sx__rec_observe(&es, fr1, item_idx("e"), 1, 0, t1, 0);
	assert_float_equal(segpop(&es, "FR", "e"), 1, 1e-12);
	assert_float_equal(segpop(&es, "FR", "a"), 0, 1e-12);
	assert_int_equal(es.seg_entries, 4);
	/* the only other segment is never freed for its own pairs: with one
	 * segment the budget simply stops it */
	es.seg_pairs_max = 4;
	sx__rec_observe(&es, fr1, item_idx("f"), 1, 0, t1, 0);
	assert_float_equal(segpop(&es, "FR", "f"), 0, 1e-12);
	assert_true(has_seg(&es, "DE"));
	sx__rec_state_close(&es);
}

/* The choices the live state made at the value cap come back the same from
 * the snapshot and the journal (a crash) and across a clean restart; a user
 * without personalization consent frees nothing. */
static void test_reclaim_survives_crash_and_restart(void **state)
{
	struct fx *f = *state;
	char id[32], c[32];
	int64_t old = T0 - 300 * DAY;
	/* FR and DE (fresh) and 254 values from ten half-lives ago */
	for (int i = 0; i < REC_SEG_MAX - 2; i++) {
		snprintf(id, sizeof(id), "v%d", i);
		snprintf(c, sizeof(c), "C%d", i);
		user(f, id, c);
	}
	views_batch(f, "v", 0, REC_SEG_MAX - 2, "b", old);
	views_batch(f, "v", 0, 10, "c", old);
	assert_int_equal(sx__rec->live.nsegs, REC_SEG_MAX);
	/* a clean restart: the snapshot holds the full table */
	close_all(f);
	open_all(f);
	struct rec_state *s = &sx__rec->live;
	s->now = T0;
	assert_int_equal(s->nsegs, REC_SEG_MAX);
	/* without consent: not counted, nothing freed */
	user(f, "nc", "N9");
	call_ok(f, "consent.set", "{\"user\": \"nc\", \"purposes\": {\"personalization\": false}}");
	view(f, "nc", "d", T0);
	assert_false(has_seg(s, "N9"));
	assert_true(has_seg(s, "C10"));
	/* four new values: each frees one of the idle ones (C10..C13: C0..C9
	 * have two views), in the journal tail after the snapshot */
	for (int i = 0; i < 4; i++) {
		snprintf(id, sizeof(id), "n%d", i);
		snprintf(c, sizeof(c), "N%d", i);
		user(f, id, c);
	}
	views_batch(f, "n", 0, 4, "d", T0);
	view(f, "n0", "e", T0 + HOUR);
	for (int i = 0; i < 4; i++) {
		snprintf(c, sizeof(c), "N%d", i);
		assert_true(has_seg(s, c));
		snprintf(c, sizeof(c), "C%d", 10 + i);
		assert_false(has_seg(s, c));
	}
	assert_true(has_seg(s, "C0") && has_seg(s, "C14") && has_seg(s, "FR") && has_seg(s, "DE"));
	assert_float_equal(segpop(s, "N0", "d"), 1, 1e-12);
	assert_float_equal(segpop(s, "FR", "a"), 3, 1e-12);
	char buf[256];
	top(s, "N0", buf, sizeof(buf));
	assert_string_equal(buf, "d,e");
	/* what a crashed server rebuilds: the snapshot and the journal after it */
	sxt_sync(&f->t);
	struct rec_state r;
	sx__rec_state_init(&r, 0, INT64_MAX);
	r.now = T0;
	assert_int_equal(sx__rec_counts_load(&r), 0);
	r.journal = 0;
	assert_true(r.jseq_snap > 0);
	assert_same_segments(&r, s);
	/* and a clean restart */
	close_all(f);
	open_all(f);
	sx__rec->live.now = T0;
	assert_same_segments(&r, &sx__rec->live);
	assert_float_equal(segpop(&sx__rec->live, "N0", "d"), 1, 1e-12);
	sx__rec_state_close(&r);
}

/* The same for the pair budget (lowered here, in the live state and in the
 * state rebuilt), across a snapshot written between the events. */
static void test_pair_reclaim_replays(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	/* FR: a, b; DE: c, d */
	assert_int_equal(s->seg_entries, 4);
	s->seg_pairs_max = 6;
	view(f, "fr1", "c", T0), view(f, "fr1", "d", T0);
	view(f, "de1", "e", T0); /* FR (6) loses 1 */
	assert_float_equal(segpop(s, "DE", "e"), 0, 1e-12);
	sxt_sync(&f->t);
	assert_int_equal(sx__rec_counts_save(s), 0);
	sxt_sync(&f->t);
	int64_t t1 = T0 + 300 * DAY;
	s->now = t1;
	view(f, "de1", "f", t1); /* FR, idle, is freed */
	assert_false(has_seg(s, "FR"));
	view(f, "fr2", "a", t1);
	assert_float_equal(segpop(s, "FR", "a"), 1, 1e-12);
	assert_float_equal(segpop(s, "DE", "f"), 1, 1e-12);
	assert_int_equal(s->seg_entries, 4);
	sxt_sync(&f->t);
	struct rec_state r;
	sx__rec_state_init(&r, 0, INT64_MAX);
	r.seg_pairs_max = 6;
	r.now = t1;
	assert_int_equal(sx__rec_counts_load(&r), 0);
	r.journal = 0;
	assert_same_segments(&r, s);
	sx__rec_state_close(&r);
	s->now = T0;
}

/* A user whose record lookup fails with an error other than "no such user"
 * (here: its index entry holds an id too long for any user, which the id
 * lookup refuses with invalid_argument) is not cached as "no segment": once
 * it reads again, the user's segment is found. A failing store read takes the
 * same path in sx__rec_user_segment; no hook here makes LMDB fail a read. */
static void test_read_error_is_not_cached(void **state)
{
	struct fx *f = *state;
	struct rec *R = sx__rec;
	uint32_t u = user_idx("fr1");
	sx__rec_segment_invalidate(UINT32_MAX);
	uint8_t k[4];
	char junk[SX_EVENTS_ID_MAX + 40];
	memset(junk, 'x', sizeof(junk));
	sx_be32(k, u);
	uint64_t sp = sx_store_savepoint(f->t.e.store);
	assert_int_equal(sx_store_put(f->t.e.store, SX_T_USER_IDX, k, 4, junk, sizeof(junk)), 0);
	assert_int_equal(sx__rec_user_segment(u), -1);
	assert_true(u >= R->nuseg || R->useg[u] == 0);
	assert_int_equal(sx__rec_user_segment(u), -1);
	sx_store_rollback(f->t.e.store, sp);
	int g = sx__rec_user_segment(u);
	assert_true(g >= 0);
	assert_string_equal(R->segnames[g].name, "FR");
	assert_int_equal(R->useg[u], g + 2);
	/* a user without the attribute is cached as such */
	uint32_t n = user_idx("none");
	assert_int_equal(sx__rec_user_segment(n), -1);
	assert_int_equal(R->useg[n], 1);
}

/* The segment's list is cached until the state's next event: a repeat is the
 * same list, an event that reorders the segment is seen at once. */
static void test_cached_list_follows_events(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	char buf[256];
	top(s, "FR", buf, sizeof(buf));
	assert_string_equal(buf, "a,b");
	top(s, "FR", buf, sizeof(buf));
	assert_string_equal(buf, "a,b");
	for (int i = 0; i < 3; i++)
		view(f, "fr2", "b", T0 + 1 + i);
	top(s, "FR", buf, sizeof(buf));
	assert_string_equal(buf, "b,a");
	/* another segment's list is not this one's */
	top(s, "DE", buf, sizeof(buf));
	assert_string_equal(buf, "c,d");
}

/* A user whose state is held and who then withdraws personalization consent
 * is no longer counted in a segment (nor kept); granting again counts again. */
static void test_withdrawn_consent_stops_segment_counts(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	view(f, "fr1", "f", T0);
	assert_float_equal(segpop(s, "FR", "f"), 1, 1e-9);
	uint32_t u = user_idx("fr1");
	assert_non_null(sx__rec_user(s, u));
	call_ok(f, "consent.set", "{\"user\": \"fr1\", \"purposes\": {\"personalization\": false}}");
	view(f, "fr1", "f", T0 + 1);
	assert_float_equal(segpop(s, "FR", "f"), 1, 1e-9);
	assert_true(u >= s->nusers || !s->users[u]);
	call_ok(f, "consent.set", "{\"user\": \"fr1\", \"purposes\": {\"personalization\": true}}");
	view(f, "fr1", "f", T0 + 2);
	assert_float_equal(segpop(s, "FR", "f"), 2, 1e-9);
	/* an evaluation's world treats them as the live state does */
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	call_ok(f, "consent.set", "{\"user\": \"fr1\", \"purposes\": {\"personalization\": false}}");
	sx__rec_observe(&es, u, item_idx("f"), 1, 0, T0, 0);
	assert_false(has_seg(&es, "FR"));
	assert_true(u >= es.nusers || !es.users[u]);
	sx__rec_observe(&es, user_idx("fr2"), item_idx("f"), 1, 0, T0, 0);
	assert_float_equal(segpop(&es, "FR", "f"), 1, 1e-9);
	sx__rec_state_close(&es);
}

/* A users.put taken back (a rolled-back request, a failed batch) leaves no
 * segment in the cache that the store no longer has. */
static void test_undone_users_put_leaves_no_cached_segment(void **state)
{
	struct fx *f = *state;
	struct rec_state *s = &sx__rec->live;
	uint64_t sp = sx_store_savepoint(f->t.e.store);
	user(f, "fr1", "DE");
	view(f, "fr1", "f", T0);
	assert_float_equal(segpop(s, "DE", "f"), 1, 1e-9);
	sx_store_rollback(f->t.e.store, sp);
	int g = sx__rec_user_segment(user_idx("fr1"));
	assert_true(g >= 0);
	assert_string_equal(sx__rec->segnames[g].name, "FR");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_put_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_world_at_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_table_reclaims_idle_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_left_out_values_wear_the_weakest_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_values_taking_turns_get_in, setup, teardown),
		cmocka_unit_test_setup_teardown(test_far_future_event_does_not_flatten_weights, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pair_budget_reclaims, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reclaim_survives_crash_and_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pair_reclaim_replays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_error_is_not_cached, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_list_follows_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_withdrawn_consent_stops_segment_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undone_users_put_leaves_no_cached_segment, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
