/* rpc.h — MessagePack-RPC framing, decoding, method table and argument helpers.
 *
 * Framing never trusts a declared length: sx_frame_scan() walks the bytes as
 * they arrive, checks every declared length and count against the bytes and
 * the limits, and only a complete, verified frame is decoded (by
 * sx_frame_decode(), into a zone, never by msgpack-c's unpacker, whose
 * allocations follow declared lengths and whose nesting is capped at 32).
 */
#ifndef SX_RPC_H
#define SX_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define SX_MAX_DEPTH_LIMIT 256

struct sx_frame_scan {
	size_t pos;
	int depth;
	uint64_t left[SX_MAX_DEPTH_LIMIT + 1];
};

void sx_frame_scan_reset(struct sx_frame_scan *fs);

/* Continues scanning buf[0..len) (the same frame's bytes, with more appended
 * since the last call). Returns the frame's length once it is complete, 0 if
 * more bytes are needed, or SX_EPARSE (not MessagePack), SX_E2BIG (the frame
 * is or declares more than max_frame bytes) or SX_ELIMIT (nesting deeper than
 * max_depth). */
long sx_frame_scan(struct sx_frame_scan *fs, const uint8_t *buf, size_t len,
		   size_t max_frame, int max_depth);

/* Decodes one verified frame into objects allocated from zone. Strings and
 * binaries point into buf, which must outlive the objects. */
int sx_frame_decode(const uint8_t *buf, size_t len, msgpack_zone *zone, msgpack_object *out);

/* Is [s, s+len) valid UTF-8? */
int sx_utf8_valid(const char *s, size_t len);

/* ---- roles ---- */
enum sx_role { SX_ROLE_NONE = 0, SX_ROLE_READER = 1, SX_ROLE_WRITER = 2, SX_ROLE_ADMIN = 3 };
const char *sx_role_name(int role);
int sx_role_parse(const char *s); /* -1 if unknown */

/* ---- methods ---- */
struct sx_req;

/* A method handler packs exactly one result object with pk and returns 0, or
 * returns a negative SX_E* code with the message in sx_diag_set() (what it
 * packed is discarded), or returns SX_RPC_DEFER after sx_req_defer(): it then
 * owns the request and must call sx_req_finish() exactly once, later, on the
 * loop thread. */
typedef int (*sx_method_fn)(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk,
			    void *ud);
#define SX_RPC_DEFER 1

struct sx_method {
	const char *name;
	int role;
	sx_method_fn fn;
	void *ud;
	const char *doc; /* one line, for server.info and docs */
};

struct sx_rpc;
struct sx_rpc *sx_rpc_new(void);
void sx_rpc_free(struct sx_rpc *rpc);
/* Registers (or replaces) a method; the strings must outlive the table. */
int sx_rpc_register(struct sx_rpc *rpc, const struct sx_method *m);
const struct sx_method *sx_rpc_find(const struct sx_rpc *rpc, const char *name, size_t len);
/* Called for a name the table does not hold (scripted methods). Fills *out and
 * returns 0, or returns SX_ENOMETHOD. */
typedef int (*sx_rpc_fallback_fn)(const char *name, size_t len, struct sx_method *out, void *ud);
void sx_rpc_set_fallback(struct sx_rpc *rpc, sx_rpc_fallback_fn fn, void *ud);
int sx_rpc_resolve(const struct sx_rpc *rpc, const char *name, size_t len, struct sx_method *out);
size_t sx_rpc_count(const struct sx_rpc *rpc);
const struct sx_method *sx_rpc_at(const struct sx_rpc *rpc, size_t i);

/* ---- packing helpers ---- */
void sx_pack_str(msgpack_packer *pk, const char *s);
void sx_pack_strn(msgpack_packer *pk, const char *s, size_t n);
void sx_pack_kv_str(msgpack_packer *pk, const char *k, const char *v);
void sx_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v);
void sx_pack_kv_uint(msgpack_packer *pk, const char *k, uint64_t v);
void sx_pack_kv_double(msgpack_packer *pk, const char *k, double v);
void sx_pack_kv_bool(msgpack_packer *pk, const char *k, int v);
void sx_pack_key(msgpack_packer *pk, const char *k);
/* Packs an error map {code, message}. */
void sx_pack_error(msgpack_packer *pk, int rc, const char *message);
/* Deep-copies an object into a packer. */
void sx_pack_object(msgpack_packer *pk, const msgpack_object *o);

/* ---- argument helpers ----
 * Each looks up `key` in the argument map `args` (which may be NULL or nil:
 * no arguments). A missing optional argument leaves *out untouched and returns
 * 0; a missing required one or one of the wrong type returns SX_EINVAL with
 * "argument 'key' ..." in the diagnostics. */
const msgpack_object *sx_arg(const msgpack_object *args, const char *key);
int sx_arg_str(const msgpack_object *args, const char *key, int required, const char **s, size_t *len);
/* Copies a string argument into buf (NUL-terminated); SX_E2BIG if it does not fit
 * or contains a NUL byte. */
int sx_arg_cstr(const msgpack_object *args, const char *key, int required, char *buf, size_t size);
int sx_arg_int(const msgpack_object *args, const char *key, int required, int64_t *out);
int sx_arg_num(const msgpack_object *args, const char *key, int required, double *out);
int sx_arg_bool(const msgpack_object *args, const char *key, int required, int *out);
int sx_arg_map(const msgpack_object *args, const char *key, int required, const msgpack_object **out);
int sx_arg_array(const msgpack_object *args, const char *key, int required, const msgpack_object **out);
/* Names of argument keys that `args` holds beyond `known` (NULL-terminated):
 * SX_EINVAL naming the first unknown key. */
int sx_arg_only(const msgpack_object *args, const char *const *known);

int sx_obj_streq(const msgpack_object *o, const char *s);

#endif
