/* libFuzzer target: argument decoding of every registered method.
 *
 * Builds the engine in-process as core/main.c does (store in a temporary
 * directory, Lua VM, jobs, scripts, every plugin of core/plugins.c, a server
 * bound to a free loopback port that never accepts), then dispatches each
 * input to one method exactly as the server would: the first byte picks the
 * method: the input is the method's name, a NUL byte, then the MessagePack
 * argument map (or nil, or nothing); a name no method has picks one by its
 * hash, so that mutated names still reach some method. Checks: no crash,
 * no leak, no sanitizer report; an error is a known code other than
 * "internal" with a message; a success packs exactly one object.
 * Excluded: admin.backup (writes where the argument says) and demo.load (generates data
 * for as long as asked, answering later). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>
#include <uv.h>

#include "core/config.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "store/store.h"

static struct sx_config cfg;
static struct sx_engine eng;
static const struct sx_method *methods[256];
static size_t nmethods;
static char dir[64];

static void commit_cb(uint64_t seq, int rc, void *ud)
{
	(void)ud;
	if (eng.srv)
		sx_server_commit_cb(seq, rc, eng.srv);
}

static void cleanup(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_methods: could not remove %s\n", dir);
}

static void settle(void)
{
	sx_store_read_end(eng.store);
	for (int i = 0; i < 10000 && !sx_store_idle(eng.store); i++) {
		sx_store_flush(eng.store);
		uv_run(eng.loop, UV_RUN_NOWAIT);
		if (!sx_store_idle(eng.store))
			usleep(50);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	snprintf(dir, sizeof(dir), "/tmp/sx-fuzz-methods-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	atexit(cleanup);
	sx_config_defaults(&cfg);
	sx_log_set_level(SX_LOG_ERROR); /* rejected scripts would flood the output */
	snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s/data", dir);
	snprintf(cfg.scripts_dir, sizeof(cfg.scripts_dir), "%s/scripts", dir);
	snprintf(cfg.listen, sizeof(cfg.listen), "127.0.0.1:0");
	cfg.relaxed = 1;
	cfg.watch_scripts = 0;
	cfg.script_instructions = 200000;
	cfg.script_memory = 8u << 20;
	cfg.script_timeout_ms = 200;
	cfg.max_map_size = (size_t)1 << 30;
	eng.loop = uv_default_loop();
	eng.cfg = &cfg;
	eng.started_wall_ms = (uint64_t)sx_wall_ms();
	struct sx_store_opts so = {.dir = cfg.data_dir, .max_map_size = cfg.max_map_size, .relaxed = 1,
				   .commit_cb = commit_cb};
	eng.store = sx_store_open(eng.loop, &so);
	eng.rpc = sx_rpc_new();
	struct sx_lua_limits ll = {cfg.script_instructions, cfg.script_memory, 0, cfg.script_timeout_ms};
	eng.lua = sx_lua_new(&ll);
	eng.jobs = sx_jobs_new(eng.loop, NULL);
	if (!eng.store || !eng.rpc || !eng.lua || !eng.jobs) {
		fprintf(stderr, "fuzz_methods: %s\n", sx_diag_last());
		abort();
	}
	if (!(eng.scripts = sx_scripts_new(&eng)))
		abort();
	for (int i = 0; sx_plugins[i]; i++)
		if (sx_plugins[i]->start(&eng) < 0) {
			fprintf(stderr, "fuzz_methods: plugin %s: %s\n", sx_plugins[i]->name, sx_diag_last());
			abort();
		}
	struct sx_server_opts sopt = {cfg.listen, cfg.limits, NULL, 0};
	eng.srv = sx_server_new(eng.loop, eng.rpc, eng.store, &sopt);
	if (!eng.srv)
		abort();
	sx_jobs_set_server(eng.jobs, eng.srv);
	sx_scripts_start(eng.scripts);
	for (size_t i = 0; i < sx_rpc_count(eng.rpc) && nmethods < SX_ARRAY_SIZE(methods); i++) {
		const struct sx_method *m = sx_rpc_at(eng.rpc, i);
		if (strcmp(m->name, "admin.backup") != 0 && strcmp(m->name, "demo.load") != 0)
			methods[nmethods++] = m;
	}
	if (getenv("SX_FUZZ_LIST"))
		for (size_t i = 0; i < nmethods; i++)
			fprintf(stderr, "%zu %s\n", i, methods[i]->name);
	settle();
	return 0;
}

static int known_code(int rc)
{
	if (rc == SX_EINTERNAL)
		return 0;
	return strcmp(sx_error_code(rc), "internal") != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size < 257 ? size : 257);
	if (!nul || nmethods == 0)
		return 0;
	size_t nlen = (size_t)(nul - data);
	const struct sx_method *m = NULL;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < nlen; i++)
		h = (h ^ data[i]) * 16777619u;
	for (size_t i = 0; i < nmethods && !m; i++)
		if (strlen(methods[i]->name) == nlen && memcmp(methods[i]->name, data, nlen) == 0)
			m = methods[i];
	if (!m)
		m = methods[h % nmethods];
	size_t len = size - nlen - 1;
	uint8_t *buf = malloc(len ? len : 1);
	memcpy(buf, nul + 1, len);

	struct sx_frame_scan fs;
	sx_frame_scan_reset(&fs);
	msgpack_zone zone;
	msgpack_object args;
	msgpack_zone_init(&zone, 1024);
	const msgpack_object *ap = NULL;
	if (len > 0) {
		long r = sx_frame_scan(&fs, buf, len, 1u << 20, 64);
		if (r <= 0 || (size_t)r != len || sx_frame_decode(buf, len, &zone, &args) < 0 ||
		    (args.type != MSGPACK_OBJECT_MAP && args.type != MSGPACK_OBJECT_NIL))
			goto out;
		ap = &args;
	}
	/* An export to a path writes where the argument says and answers later. */
	if (strcmp(m->name, "export") == 0 && sx_arg(ap, "path"))
		goto out;

	struct sx_req *req = calloc(1, sizeof(*req));
	req->srv = eng.srv;
	req->role = SX_ROLE_ADMIN;
	req->method = m->name;
	msgpack_zone_init(&req->zone, 256);
	msgpack_sbuffer_init(&req->out);
	msgpack_packer_init(&req->pk, &req->out, msgpack_sbuffer_write);

	sx_diag_clear();
	sx_store_req_begin(eng.store);
	uint64_t sp = sx_store_savepoint(eng.store);
	int rc = m->fn(req, ap, &req->pk, m->ud);
	if (rc < 0)
		sx_store_rollback(eng.store, sp);
	sx_store_req_end(eng.store);
	if (rc == SX_RPC_DEFER) {
		/* The method owns the request now (funnel.query runs on the pool,
		 * a predicate cohort in slices on the loop): run the loop until its
		 * work is done and it has answered; the server pools the request. */
		for (int i = 0; i < 200000 && (sx_jobs_running(eng.jobs) > 0 || !sx_store_idle(eng.store)); i++) {
			sx_store_flush(eng.store);
			uv_run(eng.loop, UV_RUN_NOWAIT);
			usleep(50);
		}
		for (int i = 0; i < 100; i++)
			uv_run(eng.loop, UV_RUN_NOWAIT);
		if (sx_jobs_running(eng.jobs) > 0) {
			fprintf(stderr, "fuzz_methods: %s deferred and did not finish within 10 s\n", m->name);
			abort();
		}
		settle();
		goto out;
	}
	if (rc < 0) {
		if (!known_code(rc)) {
			fprintf(stderr, "fuzz_methods: %s failed with %d (%s): %s\n", m->name, rc,
				sx_error_code(rc), sx_diag_last());
			abort();
		}
	} else if (req->out.size > 0) {
		/* exactly one object */
		struct sx_frame_scan rs;
		sx_frame_scan_reset(&rs);
		long r = sx_frame_scan(&rs, (const uint8_t *)req->out.data, req->out.size, (size_t)1 << 31,
				       SX_MAX_DEPTH_LIMIT);
		if (r != (long)req->out.size) {
			fprintf(stderr, "fuzz_methods: %s packed %zu bytes that are not one object (%ld)\n",
				m->name, req->out.size, r);
			abort();
		}
	}
	msgpack_sbuffer_destroy(&req->out);
	msgpack_zone_destroy(&req->zone);
	free(req);
	settle();
out:
	msgpack_zone_destroy(&zone);
	free(buf);
	return 0;
}
