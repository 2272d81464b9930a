/* scripts.h — the script registry: kinds, versions, hot reload, rollback, and
 * the first kind, `methods`.
 *
 * A script is (kind, name, source). Loading one compiles it into a fresh
 * sandboxed environment (core/lua/sandbox.h), runs it, and checks the value
 * it returns against its kind's contract; only then does it replace the
 * version serving, between requests. A version that fails leaves the old one
 * serving and reports "chunk:line: message". Every version is stored in the
 * scripts table and survives restarts; rollback makes an earlier one current.
 *
 * Sources: the scripts directory (scripts_dir/KIND/NAME.lua, watched, so that
 * saving a file reloads it) and script.put. At start the current version of
 * each script comes from the store; a file whose content changed since it was
 * last loaded becomes a new version.
 *
 * Subscribers of "script.events" get {event = "loaded"|"failed"|"rollback",
 * kind, name, version?, error?, origin}.
 *
 * All of it runs on the loop thread.
 */
#ifndef SX_SCRIPTS_H
#define SX_SCRIPTS_H

#include <stdint.h>

#include <lua.h>
#include <msgpack.h>

struct sx_engine;
struct sx_scripts;

struct sx_script_kind {
	const char *name; /* "methods", "strategies", ... (static string) */
	/* Checks the value the chunk returned (at stack index `value`). Returns 0,
	 * or SX_ESCRIPT with the reason in sx_diag_set(). Must not raise. */
	int (*validate)(lua_State *L, int value, const char *name, void *ud);
	/* Optional: a new version of `name` is serving (ref: its value in the registry). */
	void (*installed)(const char *name, int ref, void *ud);
	void *ud;
};

struct sx_scripts *sx_scripts_new(struct sx_engine *e);
void sx_scripts_free(struct sx_scripts *s);

int sx_scripts_add_kind(struct sx_scripts *s, const struct sx_script_kind *kind);

/* Loads the stored current versions, then the scripts directory, and starts
 * watching it. Failures are logged and reported per script, not fatal. */
int sx_scripts_start(struct sx_scripts *s);

/* Compiles, validates and installs a new version. On success stores it and
 * returns the new version number (> 0); on failure returns SX_ESCRIPT,
 * SX_EBUDGET or SX_EINVAL with the reason. origin: "file" or "rpc". */
int sx_scripts_put(struct sx_scripts *s, const char *kind, const char *name, const char *src,
		   size_t len, const char *origin);

/* Pushes the value the current version of (kind, name) returned and returns
 * 0, or pushes nothing and returns SX_ENOENT. */
int sx_scripts_push(struct sx_scripts *s, const char *kind, const char *name);
/* The context table given to this script's functions (pushed), as above. */
int sx_scripts_push_ctx(struct sx_scripts *s, const char *kind, const char *name);

/* Calls function `fn` of script (kind, name) as fn(ctx, args) with args
 * decoded from `args` (a map or NULL), and packs its first result with pk.
 * Errors: SX_ENOENT (no such script or function), SX_ESCRIPT, SX_EBUDGET,
 * SX_EINVAL (a result that cannot be packed). */
int sx_scripts_call(struct sx_scripts *s, const char *kind, const char *name, const char *fn,
		    const msgpack_object *args, msgpack_packer *pk);

/* Packs [{kind, name, version, origin, loaded_at, error?}] for server.info / script.list. */
void sx_scripts_pack_list(struct sx_scripts *s, const char *kind, msgpack_packer *pk);

/* Registers script.put/get/list/history/rollback and the `methods` kind. */
int sx_scripts_register_methods(struct sx_scripts *s);

#endif
