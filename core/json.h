/* json.h — JSON (jansson) to MessagePack, for the CLI, model bundles and tests.
 *
 * Objects become maps (keys as given, NUL bytes included), arrays arrays,
 * integers int64, reals doubles, strings str, true/false/null themselves.
 * Cannot fail beyond the packer's own allocation. */
#ifndef SX_JSON_H
#define SX_JSON_H

#include <jansson.h>
#include <msgpack.h>

void sx_pack_json(msgpack_packer *pk, const json_t *j);

#endif
