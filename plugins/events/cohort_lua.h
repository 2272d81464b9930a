/* cohort_lua.h — saved cohorts defined by a Lua predicate (internal to the
 * events plugin; the methods are cohort.save/refresh in analytics.c).
 *
 * A predicate rule is the whole rule of a cohort:
 *   {lua = {script = NAME | source = SRC, days? = 30, events? = [names] | "*",
 *           candidates? = RULE}}
 * `script` names a script of kind "cohorts" (scripts/cohorts/NAME.lua or
 * script.put) returning a function or {predicate = function}; `source` is the
 * text of such a chunk, kept in the cohort's definition and compiled in a
 * fresh sandbox environment at each refresh. The function is called as
 * predicate(user, ctx) once per candidate user, each call within the
 * sandbox's instruction, memory and time budgets, and the user is a member
 * when it returns a true value. `candidates` is a declarative rule (default:
 * the users with any event in the last `days` days).
 *
 * The evaluation runs on the loop thread in slices of at most SLICE_MS
 * between loop turns (Lua lives on the loop thread, so it cannot be a pool
 * job): other requests are served between slices. The request that asked for
 * it (cohort.save or cohort.refresh) is answered when the last slice is done;
 * until then the cohort keeps its previous members. A second save or refresh
 * of the same cohort meanwhile fails with failed_precondition; cohort.delete
 * cancels it (its request gets `cancelled`). A predicate that raises or runs
 * out of budget stops the refresh with script_error / budget_exceeded, naming
 * the user, and the previous members stay.
 */
#ifndef SX_EVENTS_COHORT_LUA_H
#define SX_EVENTS_COHORT_LUA_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <roaring/roaring.h>

struct sx_engine;
struct sx_req;

/* Is `rule` a predicate rule (a map whose one key is "lua")? */
int sx__ev_cohort_is_lua(const msgpack_object *rule);

/* Checks a predicate rule: the script exists / the source compiles and
 * returns a predicate, days 1..3660, events and candidates well formed.
 * 0, or SX_EINVAL / SX_ENOENT / SX_ESCRIPT / SX_EBUDGET with the reason. */
int sx__ev_cohort_lua_check(const msgpack_object *rule);

/* Starts computing cohort `name` with predicate rule `rule` (and the
 * definition's `desc` and `created`, all copied). Returns SX_RPC_DEFER: req is
 * answered later as cohort.save answers ({name, size, refreshed}); or an
 * error, req untouched. */
int sx__ev_cohort_lua_begin(struct sx_req *req, const char *name, size_t nlen, const msgpack_object *rule,
			    const msgpack_object *desc, int64_t created);

/* Is cohort `name` being computed? */
int sx__ev_cohort_lua_running(const char *name, size_t nlen);

/* Cancels the computation of cohort `name` (its request gets SX_ECANCELED):
 * 1 if one was running, else 0. */
int sx__ev_cohort_lua_cancel(const char *name, size_t nlen);

/* Takes user index `idx` out of the computations in progress (privacy.erase). */
void sx__ev_cohort_lua_forget(uint32_t idx);

/* Registers the script kind "cohorts". */
int sx__ev_cohort_lua_start(struct sx_engine *e);
/* Cancels every computation in progress. */
void sx__ev_cohort_lua_stop(void);

/* ---- from analytics.c ---- */

/* Evaluates a declarative rule (first_seen, attribute, did, all, any) at
 * time `now` into a new bitmap; out NULL: only checks it. */
int sx__ev_rule_eval(const msgpack_object *rule, int64_t now, roaring_bitmap_t **out);

/* Stores cohort `name`: members `b` (borrowed) and the definition {name, rule,
 * description, size, refreshed = now, created (0: now)}; packs {name, size,
 * refreshed} with pk. */
int sx__ev_cohort_write(const char *name, size_t nlen, const msgpack_object *rule, const msgpack_object *desc,
			int64_t created, int64_t now, roaring_bitmap_t *b, msgpack_packer *pk);

#endif
