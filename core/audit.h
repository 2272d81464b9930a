/* audit.h — the audit log of administrative actions (table SX_T_AUDIT).
 *
 * An entry is {time, action, detail}: `action` names what was done
 * ("script.put", "script.rollback", "privacy.erase", "consent.set", ...),
 * `detail` is a map chosen by the caller. The log must never hold personal
 * data: callers put in `detail` only names of things (scripts, experiments,
 * models), counts, and user ids hashed with sx_audit_user_hash().
 *
 * Entries are written into the store's filling batch like any other write,
 * so an action and its audit entry commit together (the request's savepoint
 * rolls both back if it fails). Keys are (u64 time ms, u64 seq) big-endian.
 *
 * Everything here runs on the loop thread.
 */
#ifndef SX_AUDIT_H
#define SX_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

struct sx_engine;

#define SX_AUDIT_ACTION_MAX 64

/* Records an entry now. `detail` is a map object or NULL (stored as {}).
 * 0, SX_EINVAL (action not 1..64 bytes, detail not a map) or a store error. */
int sx_audit_record(struct sx_engine *e, const char *action, const msgpack_object *detail);

/* The same with `detail` already packed (one MessagePack map of `len` bytes). */
int sx_audit_record_packed(struct sx_engine *e, const char *action, const void *detail, size_t len);

/* Hex of a keyed hash (HMAC-SHA256, first 16 bytes) of a user id with a
 * secret kept in the store (created at first use; never leaves the server):
 * the same id always gives the same hash on this server, and the hash does
 * not reveal the id. out receives 33 bytes. 0 or a store error. */
int sx_audit_user_hash(struct sx_engine *e, const char *id, size_t len, char out[33]);

/* Registers audit.query {from?, to?, action?, limit?}. */
int sx_audit_register_methods(struct sx_engine *e);

#endif
