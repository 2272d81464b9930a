/* plugin.h — the interface every service registers through.
 *
 * A plugin is a static struct sx_plugin listed in core/plugins.c. At start the
 * engine calls start() in list order with everything opened; a plugin
 * registers its RPC methods (sx_rpc_register), its script kinds
 * (sx_scripts_kind) and its Lua functions. stop() runs in reverse order before
 * the store closes. A plugin reaches another plugin only through that
 * plugin's header (plugins/NAME/NAME.h), never its tables.
 */
#ifndef SX_PLUGIN_H
#define SX_PLUGIN_H

#include <msgpack.h>
#include <uv.h>

struct sx_config;
struct sx_store;
struct sx_rpc;
struct sx_server;
struct sx_lua;
struct sx_scripts;
struct sx_jobs;

struct sx_engine {
	uv_loop_t *loop;
	const struct sx_config *cfg;
	struct sx_store *store;
	struct sx_rpc *rpc;
	struct sx_server *srv;
	struct sx_lua *lua;
	struct sx_scripts *scripts;
	struct sx_jobs *jobs;
	uint64_t started_wall_ms;
};

struct sx_plugin {
	const char *name;
	int (*start)(struct sx_engine *e);
	void (*stop)(struct sx_engine *e);
	/* Optional: packs one object (a map) describing the plugin for server.info. */
	void (*info)(struct sx_engine *e, msgpack_packer *pk);
};

/* NULL-terminated, in start order. */
extern const struct sx_plugin *const sx_plugins[];

#endif
