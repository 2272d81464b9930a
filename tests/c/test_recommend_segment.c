/* Segment popularity in the recommend plugin: counting per (segment value,
 * item) from events.track, the user -> segment cache and users.put, the
 * journal replay after a crash, the snapshot across a restart, the
 * evaluation world at the cut, and the cap on segment values. */
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

/* At most REC_SEG_MAX values are counted; the others' users fall back. */
static void test_cap(void **state)
{
	struct fx *f = *state;
	struct rec_state es;
	sx__rec_state_init(&es, 0, INT64_MAX);
	es.now = T0;
	char id[32], c[32];
	for (int i = 0; i < REC_SEG_MAX + 20; i++) {
		snprintf(id, sizeof(id), "cap%d", i);
		snprintf(c, sizeof(c), "C%d", i);
		user(f, id, c);
		sx__rec_observe(&es, user_idx(id), item_idx("a"), 1, 0, T0, 1);
	}
	assert_int_equal(es.nsegs, REC_SEG_MAX);
	assert_float_equal(segpop(&es, "C0", "a"), 1, 1e-9);
	snprintf(c, sizeof(c), "C%d", REC_SEG_MAX + 5);
	assert_float_equal(segpop(&es, c, "a"), 0, 1e-12);
	assert_null(sx__rec_seg_find(&es, sx__rec_segment_hash(c, strlen(c))));
	sx__rec_state_close(&es);
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
		cmocka_unit_test_setup_teardown(test_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_list_follows_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_withdrawn_consent_stops_segment_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undone_users_put_leaves_no_cached_segment, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
