/* experiments.h — the experiments plugin's C API, for other plugins
 * (recommend can A/B test strategies by reading a variant's payload).
 *
 * Loop thread only, valid once the experiments plugin has started and until
 * it stops.
 */
#ifndef SX_EXPERIMENTS_H
#define SX_EXPERIMENTS_H

#include <stddef.h>

#include <msgpack.h>

struct sx_experiment_assignment {
	int enrolled;
	const char *reason;  /* "" when enrolled; else not_running, not_targeted, outside_traffic, holdout, layer */
	const char *variant; /* NULL unless enrolled; not NUL-terminated */
	size_t variant_len;
	const msgpack_object *payload; /* NULL if the variant has none */
};

/* The answer experiment.assign gives for (key, user, context), `user` being
 * the client's id (it is mapped with sx_privacy_user_id here): logs the
 * user's exposure on a first assignment (a store write, committed with the
 * caller's request). context is a map or NULL. zone holds what decoding the
 * user's record needs (the caller's request zone). The variant and payload
 * stay valid until the experiment's next version or the caller returns to
 * the loop, whichever comes first.
 * Errors: SX_ENOENT (no such experiment), SX_ESCRIPT / SX_EBUDGET (Lua
 * targeting failed), SX_ECORRUPT, SX_ENOMEM. */
int sx_experiments_assign(const char *key, size_t klen, const char *user, size_t ulen, const msgpack_object *context,
			  msgpack_zone *zone, struct sx_experiment_assignment *out);

#endif
