/* predict.h — the predict plugin's C API: user scores for other plugins
 * (dashboards, recommendations).
 *
 * Valid once the predict plugin has started and until it stops; loop thread
 * only (features run in the engine's Lua VM).
 *
 * Errors: 0 or a negative SX_E* code with the message in sx_diag_last():
 * SX_EINVAL (no such target), SX_ENOENT (no such user, or the target has no
 * trained model), SX_ESTATE (no features lib, or a model over features
 * the lib no longer defines), SX_ESCRIPT/SX_EBUDGET (a feature failed).
 */
#ifndef SX_PREDICT_H
#define SX_PREDICT_H

#include <stddef.h>

/* P(target) for user `user` (len bytes) now, with the model predict.user
 * serves: *p. Logged for accuracy tracking like predict.user. */
int sx_predict_user(const char *user, size_t len, const char *target, double *p);

/* The Lua API over scores (a lua_CFunction): pushes a new table
 * {user, distribution, accuracy, alerts, forecast_accuracy, forecast_alerts}
 * and returns 1. The predict plugin allows it as `require "predict"` in every
 * script; dashboards also set it as ctx.predict. Loop thread only; docs/SCRIPTING.md has the contract. */
struct lua_State;
int sx_predict_lua_open(struct lua_State *L);

#endif
