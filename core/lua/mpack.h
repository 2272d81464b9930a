/* mpack.h — Lua values to MessagePack and back.
 *
 * Tables whose keys are exactly 1..n pack as arrays, other tables as maps
 * (an empty table packs as an empty array). Numbers that are integral and
 * within int64 pack as integers, others as float64. Strings pack as str.
 * Functions, userdata, threads, cycles and nesting deeper than max_depth are
 * refused with SX_EINVAL and a message naming the path ("result.a[3]").
 * Decoding gives copies: maps and arrays become tables, bin and ext become
 * strings, nil inside arrays stays a hole.
 */
#ifndef SX_LUA_MPACK_H
#define SX_LUA_MPACK_H

#include <stddef.h>

#include <lua.h>
#include <msgpack.h>

struct sx_mpack_limits {
	int max_depth;    /* 0: 64 */
	size_t max_bytes; /* 0: 64 MiB; checked as strings are packed */
};

/* Packs the value at idx. On failure returns SX_EINVAL or SX_E2BIG with the
 * reason in sx_diag_last(); what was already packed must be discarded. */
int sx_lua_pack(lua_State *L, int idx, msgpack_packer *pk, const struct sx_mpack_limits *lim);

/* Pushes a copy of o. Needs stack room for its nesting depth (checked). */
void sx_lua_push_object(lua_State *L, const msgpack_object *o);

/* Pushes the value decoded from a MessagePack buffer (one object); on bytes
 * that do not decode pushes nothing and returns SX_EPARSE. */
int sx_lua_unpack(lua_State *L, const void *buf, size_t len);

#endif
