/* An engine over a store in a temporary directory, for the cmocka tests of the
 * plugins: the events plugin (and the privacy plugin when asked) started on it,
 * methods called the way the server calls them. Header-only: every test file is
 * a program of its own. Include after <cmocka.h>. */
#ifndef SX_TEST_ENGINE_FIXTURE_H
#define SX_TEST_ENGINE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "core/config.h"
#include "core/json.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "store/store.h"

extern const struct sx_plugin sx_plugin_events, sx_plugin_privacy;

struct sxt_engine {
	char dir[128];
	uv_loop_t loop;
	struct sx_config cfg; /* defaults; change before sxt_open */
	struct sx_engine e;
	int privacy;          /* start the privacy plugin after the events plugin */
	msgpack_zone zone;    /* the last sxt_call's result, valid until the next call */
	msgpack_object res;
	msgpack_sbuffer out;
};

static inline void sxt_commit_ok(uint64_t seq, int rc, void *ud)
{
	(void)seq, (void)ud;
	assert_int_equal(rc, 0);
}

/* A fresh temporary directory named after `name`; nothing is opened yet. */
static inline void sxt_init(struct sxt_engine *t, const char *name, int privacy)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/sx-test-%s-XXXXXX", name);
	assert_non_null(mkdtemp(t->dir));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	sx_config_defaults(&t->cfg);
	t->privacy = privacy;
	msgpack_zone_init(&t->zone, 4096);
	msgpack_sbuffer_init(&t->out);
}

/* Opens the store at `dir` (NULL: the fixture's directory) with `o` (NULL:
 * relaxed, every batch must commit) and starts the plugins. */
static inline void sxt_open_with(struct sxt_engine *t, const char *dir, const struct sx_store_opts *o)
{
	struct sx_store_opts d = {.relaxed = 1, .commit_cb = sxt_commit_ok, .ud = t};
	if (o)
		d = *o;
	d.dir = dir ? dir : t->dir;
	t->e.loop = &t->loop;
	t->e.cfg = &t->cfg;
	t->e.store = sx_store_open(&t->loop, &d);
	assert_non_null(t->e.store);
	t->e.rpc = sx_rpc_new();
	assert_int_equal(sx_plugin_events.start(&t->e), 0);
	if (t->privacy)
		assert_int_equal(sx_plugin_privacy.start(&t->e), 0);
}

static inline void sxt_open(struct sxt_engine *t) { sxt_open_with(t, NULL, NULL); }

/* Runs the loop until every write batch handed to the store has committed. */
static inline void sxt_sync(struct sxt_engine *t)
{
	sx_store_read_end(t->e.store);
	for (int i = 0; i < 1000; i++) {
		sx_store_flush(t->e.store);
		if (sx_store_idle(t->e.store))
			return;
		uv_run(&t->loop, UV_RUN_ONCE);
	}
	fail_msg("batches did not complete");
}

/* Stops the plugins and closes the store; sxt_open_with may follow (a restart). */
static inline void sxt_stop(struct sxt_engine *t)
{
	sxt_sync(t);
	if (t->privacy)
		sx_plugin_privacy.stop(&t->e);
	sx_plugin_events.stop(&t->e);
	sx_store_close(t->e.store);
	sx_rpc_free(t->e.rpc);
	uv_run(&t->loop, UV_RUN_NOWAIT);
}

/* sxt_stop, then removes the directory and frees what sxt_init made. */
static inline void sxt_free(struct sxt_engine *t)
{
	sxt_stop(t);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	msgpack_zone_destroy(&t->zone);
	msgpack_sbuffer_destroy(&t->out);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	assert_int_equal(system(cmd), 0);
}

/* Calls `method` with JSON arguments as an admin, in a request of its own
 * (savepoint; rolled back on error, or always when `undo`). The result is in
 * t->res (nil on error) until the next call. Returns the handler's rc. */
static inline int sxt_call_undo(struct sxt_engine *t, const char *method, const char *json, int undo)
{
	const struct sx_method *m = sx_rpc_find(t->e.rpc, method, strlen(method));
	assert_non_null(m);
	json_error_t err;
	json_t *j = json_loads(json, 0, &err);
	if (!j)
		fail_msg("bad JSON in test: %s", err.text);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx_pack_json(&pk, j);
	json_decref(j);
	msgpack_zone az;
	msgpack_object args;
	msgpack_zone_init(&az, 1024);
	assert_int_equal(sx__ev_unpack(sb.data, sb.size, &az, &args), 0);
	msgpack_sbuffer_clear(&t->out);
	msgpack_packer opk;
	msgpack_packer_init(&opk, &t->out, msgpack_sbuffer_write);
	struct sx_req req;
	memset(&req, 0, sizeof(req));
	req.role = SX_ROLE_ADMIN;
	req.method = m->name;
	sx_diag_clear();
	sx_store_req_begin(t->e.store);
	uint64_t sp = sx_store_savepoint(t->e.store);
	int rc = m->fn(&req, &args, &opk, m->ud);
	if (rc < 0 || undo)
		sx_store_rollback(t->e.store, sp);
	msgpack_zone_clear(&t->zone);
	t->res.type = MSGPACK_OBJECT_NIL;
	if (rc == 0)
		assert_int_equal(sx__ev_unpack(t->out.data, t->out.size, &t->zone, &t->res), 0);
	sx_store_req_end(t->e.store);
	msgpack_zone_destroy(&az);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static inline int sxt_call(struct sxt_engine *t, const char *method, const char *json)
{
	return sxt_call_undo(t, method, json, 0);
}

#endif
