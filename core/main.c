/* sextant — the engine: flags and config, the store, the Lua host, plugins, the loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sextant [--config FILE] [--listen HOST:PORT] [--data-dir DIR] [--scripts-dir DIR]\n"
		"               [--durability full|relaxed] [--KEY VALUE ...]\n"
		"       sextant --hash-token TOKEN   print the sha256 to put in the config's tokens list\n"
		"       sextant --version\n"
		"Every config key is also a flag (max_frame_bytes is --max-frame-bytes); see docs/OPERATIONS.md.\n");
}

struct main_state {
	struct sx_engine e;
	struct sx_server *srv;
	uv_signal_t sigint, sigterm;
	uv_check_t check;
	int stopping;
};

static void commit_cb(uint64_t seq, int rc, void *ud)
{
	struct main_state *m = ud;
	if (rc < 0)
		sx_log_error("store: batch %llu failed: %s", (unsigned long long)seq, sx_diag_last());
	if (m->srv)
		sx_server_commit_cb(seq, rc, m->srv);
}

static void check_cb(uv_check_t *c)
{
	struct main_state *m = c->data;
	if (m->srv)
		sx_server_turn_end(m->srv);
	else
		sx_store_flush(m->e.store);
}

static void signal_cb(uv_signal_t *s, int signum)
{
	struct main_state *m = s->data;
	sx_log_info("signal %d: shutting down", signum);
	m->stopping = 1;
	uv_stop(s->loop);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
	SX_UNUSED(arg);
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int parse_args(struct sx_config *cfg, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			if (sx_config_load_file(cfg, argv[++i]) < 0)
				return -1;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
			sx_diag_set(SX_EINVAL, "unexpected argument '%s' (flags take a value: --KEY VALUE)", a);
			return -1;
		}
		char key[64];
		size_t n = strlen(a + 2);
		if (n >= sizeof(key)) {
			sx_diag_set(SX_EINVAL, "unknown flag '%s'", a);
			return -1;
		}
		for (size_t j = 0; j <= n; j++)
			key[j] = a[2 + j] == '-' ? '_' : a[2 + j];
		if (sx_config_set(cfg, key, argv[++i]) < 0)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sx_config cfg;
	struct main_state m;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("sextant %s\n", SX_VERSION);
			return 0;
		}
		if (!strcmp(argv[i], "--hash-token")) {
			char hex[65];
			if (i + 1 >= argc) {
				usage(stderr);
				return 2;
			}
			sx_config_hash_token(argv[i + 1], hex);
			printf("%s\n", hex);
			return 0;
		}
	}
	sx_config_defaults(&cfg);
	if (parse_args(&cfg, argc, argv) < 0) {
		fprintf(stderr, "sextant: %s\n", sx_diag_last());
		usage(stderr);
		sx_config_free(&cfg);
		return 2;
	}
	int level = sx_log_level_parse(cfg.log_level);
	sx_log_set_level(level < 0 ? SX_LOG_INFO : level);
	signal(SIGPIPE, SIG_IGN);
	/* A file size limit must fail the write (EFBIG), not kill the server. */
	signal(SIGXFSZ, SIG_IGN);

	memset(&m, 0, sizeof(m));
	uv_loop_t *loop = uv_default_loop();
	m.e.loop = loop;
	m.e.cfg = &cfg;
	m.e.started_wall_ms = (uint64_t)sx_wall_ms();

	struct sx_store_opts so = {
		.dir = cfg.data_dir,
		.map_size = cfg.map_size,
		.max_map_size = cfg.max_map_size,
		.relaxed = cfg.relaxed,
		.sync_interval_ms = cfg.sync_interval_ms,
		.max_reader_age_ms = cfg.max_reader_age_ms,
		.commit_cb = commit_cb,
		.ud = &m,
	};
	m.e.store = sx_store_open(loop, &so);
	if (!m.e.store) {
		sx_log_error("%s", sx_diag_last());
		goto out_cfg;
	}
	if (cfg.relaxed)
		sx_log_warn("durability \"relaxed\": if the machine (not just the process) fails, acknowledged "
			    "writes of the last %u ms can be lost and the data file can be left corrupt (keep "
			    "backups; see docs/OPERATIONS.md)", cfg.sync_interval_ms);
	m.e.rpc = sx_rpc_new();
	struct sx_lua_limits ll = {cfg.script_instructions, cfg.script_memory, 0, cfg.script_timeout_ms};
	m.e.lua = sx_lua_new(&ll);
	m.e.jobs = sx_jobs_new(loop, NULL);
	if (!m.e.rpc || !m.e.lua || !m.e.jobs) {
		sx_log_error("out of memory at start");
		goto out_store;
	}
	m.e.scripts = sx_scripts_new(&m.e);
	if (!m.e.scripts) {
		sx_log_error("%s", sx_diag_last());
		goto out_store;
	}
	int started = 0;
	for (; sx_plugins[started]; started++) {
		if (sx_plugins[started]->start(&m.e) < 0) {
			sx_log_error("plugin %s failed to start: %s", sx_plugins[started]->name, sx_diag_last());
			goto out_plugins;
		}
	}
	struct sx_server_opts sopt = {cfg.listen, cfg.limits, cfg.tokens, cfg.ntokens};
	m.srv = sx_server_new(loop, m.e.rpc, m.e.store, &sopt);
	if (!m.srv) {
		sx_log_error("%s", sx_diag_last());
		goto out_plugins;
	}
	m.e.srv = m.srv;
	sx_jobs_set_server(m.e.jobs, m.srv);
	sx_scripts_start(m.e.scripts);

	uv_check_init(loop, &m.check);
	m.check.data = &m;
	uv_check_start(&m.check, check_cb);
	uv_signal_init(loop, &m.sigint);
	uv_signal_init(loop, &m.sigterm);
	m.sigint.data = m.sigterm.data = &m;
	uv_signal_start(&m.sigint, signal_cb, SIGINT);
	uv_signal_start(&m.sigterm, signal_cb, SIGTERM);

	char host[256];
	snprintf(host, sizeof(host), "%s", cfg.listen);
	char *colon = strrchr(host, ':');
	if (colon)
		*colon = '\0';
	fprintf(stderr, "sextant listening on %s:%d\n", host, sx_server_port(m.srv));
	sx_log_info("sextant %s: data in %s, scripts in %s, durability %s%s", SX_VERSION, cfg.data_dir,
		    cfg.scripts_dir, cfg.relaxed ? "relaxed" : "full",
		    cfg.ntokens ? "" : ", no tokens: loopback clients only");

	uv_run(loop, UV_RUN_DEFAULT);
	rc = m.stopping ? 0 : 1;

	uv_signal_stop(&m.sigint);
	uv_signal_stop(&m.sigterm);
	sx_server_shutdown(m.srv, cfg.shutdown_grace_ms);
	uv_check_stop(&m.check);
	sx_scripts_stop_watching(m.e.scripts); /* a reload must not reach a stopped plugin */
out_plugins:
	while (started-- > 0)
		if (sx_plugins[started]->stop)
			sx_plugins[started]->stop(&m.e);
	sx_jobs_free(m.e.jobs);
	m.e.jobs = NULL;
	sx_scripts_free(m.e.scripts);
	m.e.scripts = NULL;
out_store:
	sx_store_close(m.e.store);
	sx_server_free(m.srv);
	if (m.e.jobs)
		sx_jobs_free(m.e.jobs);
	if (m.e.lua)
		sx_lua_free(m.e.lua);
	sx_rpc_free(m.e.rpc);
	uv_walk(loop, close_walk_cb, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	sx_log_info("stopped");
out_cfg:
	sx_config_free(&cfg);
	return rc;
}
