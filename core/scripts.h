/* scripts.h — the script registry: kinds, versions, hot reload, rollback,
 * libs, and the first kind, `methods`.
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
 * Subscribers of "script.events" get {event = "loaded"|"failed"|"rollback"|
 * "reloaded", kind, name, version?, error?, origin}.
 *
 * Libs. The kind "lib" (scripts_dir/lib/NAME.lua) is built in: a chunk that
 * returns any value. A script of any kind gets it with require "NAME" while
 * it loads; each requiring environment runs the lib's current source anew,
 * inside its own load and budgets (so no script sees another's instance), and
 * keeps that instance. Built-in module names ("sextant", "predict", "string",
 * ...) win in require and are refused as lib names. require of a lib from a
 * function called after the load raises, unless that environment already
 * holds it; so the registry knows which libs every serving script required
 * (directly or through other libs). When a lib changes (put, file, rollback),
 * those scripts are compiled again from their stored current sources against
 * the new version before anything changes; if one fails, the lib version is
 * refused with "KIND/NAME does not load with this version of lib/LIB: <its
 * error>" and everything keeps serving as before; otherwise the lib and all
 * of them switch, between requests, each dependent keeping its version
 * number (event "reloaded", origin "lib/LIB"). A require cycle, or libs nested
 * deeper than 16, fails the load with "require cycle: a -> b -> a". A missing
 * lib fails it with "module 'x' not found: no lib script 'x' ...". When a lib
 * version loads (put, file, rollback), script files that failed for want of a
 * lib are loaded again; a failed script.put is not kept: put it again.
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

/* A host consumer of lib `name`'s value (the instance the lib's own load
 * made), for plugins configured by a lib (predict reads lib "features").
 * validate runs on every candidate version after the chunk ran, with the
 * same contract as a kind's; a failure refuses the version ("lib/NAME.lua:
 * <message>"). installed runs when a version serves (at once if one already
 * does). The struct is copied; name must be a static string. At most 8. */
struct sx_lib_use {
	const char *name;
	int (*validate)(lua_State *L, int value, const char *name, void *ud);
	void (*installed)(const char *name, int ref, void *ud);
	void *ud;
};

int sx_scripts_use_lib(struct sx_scripts *s, const struct sx_lib_use *use);

/* Also registers the kind "lib" and the sandbox's require fallback (which
 * sx_scripts_free removes). NULL with the reason in sx_diag_last(). */
struct sx_scripts *sx_scripts_new(struct sx_engine *e);
void sx_scripts_free(struct sx_scripts *s);
/* Stops watching the scripts folder (a pending reload is dropped): at shutdown,
 * before the plugins whose kinds a reload would call into stop. */
void sx_scripts_stop_watching(struct sx_scripts *s);

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

/* Packs [{kind, name, version, status, origin, loaded_at, error?, requires}]
 * for server.info / script.list; requires lists the libs the serving version
 * required, directly or not. */
void sx_scripts_pack_list(struct sx_scripts *s, const char *kind, msgpack_packer *pk);

/* Registers script.put/get/list/history/rollback and the `methods` kind. */
int sx_scripts_register_methods(struct sx_scripts *s);

#endif
