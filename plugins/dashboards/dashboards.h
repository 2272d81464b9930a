/* dashboards.h — dashboards as Lua scripts, their live view, and exports.
 *
 * A dashboard is a script of kind "dashboards" (scripts/dashboards/NAME.lua
 * or script.put) returning
 *   {title, refresh_ms?, variables? = {NAME = default, ...},
 *    panels = {{id, title?, kind, query = function(ctx, vars) ... end}, ...}}
 * kind: number | timeseries | table | retention | funnel | forecast |
 * distribution | experiment. Each query gets the script's ctx, which has an
 * `analytics` table of C bindings over plugins/events (docs/notes-dashboards.md)
 * and a `predict` table (sx_predict_lua_open), and a fresh copy of the
 * variables. Everything here runs on the loop thread.
 */
#ifndef SX_DASHBOARDS_H
#define SX_DASHBOARDS_H

#include <lua.h>
#include <msgpack.h>

struct sx_engine;

#define SX_DASH_PANELS_MAX 64
#define SX_DASH_REFRESH_MIN_MS 100
#define SX_DASH_REFRESH_MAX_MS 86400000

/* Renders dashboard `name` with the variables `vars` (a map or NULL: the
 * defaults), all panels in one loop turn (so they read one state of the
 * store), and packs {name, title, version, rendered_at, refresh_ms, vars,
 * panels = [{id, title, kind, data, error}]} with pk. A panel whose query
 * fails has data nil and error "chunk:line: message"; the others render.
 * Errors: SX_ENOENT (no such dashboard), SX_EINVAL (an unknown variable or
 * one of the wrong type), SX_ENOMEM. What was packed on error must be
 * discarded. */
int sx_dashboards_render(const char *name, const msgpack_object *vars, msgpack_packer *pk);

/* ---- between the plugin's files ---- */
extern struct sx_engine *sx__dash_eng;
/* Pushes a new `analytics` table of bindings (lua.c). */
void sx__dash_push_analytics(lua_State *L);
/* Scratch buffers of the bindings (lua.c). */
void sx__dash_lua_init(void);
void sx__dash_lua_close(void);
/* export.c: registers `export` and `export.ack`/`export.cancel`; stop()
 * cancels exports in progress. */
int sx__dash_export_start(struct sx_engine *e);
void sx__dash_export_stop(struct sx_engine *e);

#endif
