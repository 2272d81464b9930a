/* The audit log: entries in SX_T_AUDIT, the server secret for user hashes, audit.query. */
#include "core/audit.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "store/store.h"

#define AUDIT_KEY 16
#define TIME_MAX 253402300799999LL

static struct sx_store *seq_store; /* the store seq was read from */
static uint64_t seq;

static int last_seq_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	SX_UNUSED(val);
	if (key->len == AUDIT_KEY)
		*(uint64_t *)ud = sx_get_be64((const uint8_t *)key->data + 8) + 1;
	return 1;
}

/* Sequence numbers keep entries of one millisecond apart and in order, across restarts. */
static int next_seq(struct sx_engine *e, uint64_t *out)
{
	if (seq_store != e->store) {
		uint64_t s = 0;
		int rc = sx_store_scan(e->store, SX_T_AUDIT, NULL, 0, NULL, 0, 1, last_seq_cb, &s);
		if (rc < 0)
			return rc;
		seq = s;
		seq_store = e->store;
	}
	*out = seq++;
	return 0;
}

int sx_audit_record_packed(struct sx_engine *e, const char *action, const void *detail, size_t len)
{
	size_t alen = action ? strlen(action) : 0;
	if (alen == 0 || alen > SX_AUDIT_ACTION_MAX)
		return sx_diag_set(SX_EINVAL, "audit: an action is 1 to %d bytes", SX_AUDIT_ACTION_MAX);
	if (detail && len && (((const uint8_t *)detail)[0] & 0xf0) != 0x80 && ((const uint8_t *)detail)[0] != 0xde &&
	    ((const uint8_t *)detail)[0] != 0xdf)
		return sx_diag_set(SX_EINVAL, "audit: detail must be a map");
	uint64_t s;
	int rc = next_seq(e, &s);
	if (rc < 0)
		return rc;
	int64_t now = sx_wall_ms();
	uint8_t key[AUDIT_KEY];
	sx_be64(key, (uint64_t)now);
	sx_be64(key + 8, s);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	sx_pack_kv_int(&pk, "time", now);
	sx_pack_kv_str(&pk, "action", action);
	sx_pack_key(&pk, "detail");
	if (detail && len)
		msgpack_pack_bin_body(&pk, detail, len); /* raw: already one packed map */
	else
		msgpack_pack_map(&pk, 0);
	rc = sb.data ? sx_store_put(e->store, SX_T_AUDIT, key, sizeof(key), sb.data, sb.size)
		     : sx_diag_set(SX_ENOMEM, "out of memory");
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

int sx_audit_record(struct sx_engine *e, const char *action, const msgpack_object *detail)
{
	if (detail && detail->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "audit: detail must be a map");
	if (!detail)
		return sx_audit_record_packed(e, action, NULL, 0);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx_pack_object(&pk, detail);
	int rc = sx_audit_record_packed(e, action, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

int sx_audit_user_hash(struct sx_engine *e, const char *id, size_t len, char out[33])
{
	static const char skey[] = "audit.secret";
	struct sx_val v;
	uint8_t secret[crypto_auth_hmacsha256_KEYBYTES];
	int rc = sx_store_get(e->store, SX_T_META, skey, sizeof(skey) - 1, &v);
	if (rc == 0 && v.len == sizeof(secret)) {
		memcpy(secret, v.data, sizeof(secret));
	} else if (rc == 0 || rc == SX_ENOENT) {
		randombytes_buf(secret, sizeof(secret));
		if ((rc = sx_store_put(e->store, SX_T_META, skey, sizeof(skey) - 1, secret, sizeof(secret))) < 0)
			return rc;
	} else {
		return rc;
	}
	uint8_t mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256(mac, (const unsigned char *)id, len, secret);
	sodium_memzero(secret, sizeof(secret));
	for (int i = 0; i < 16; i++) {
		static const char hex[] = "0123456789abcdef";
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[32] = 0;
	return 0;
}

/* ---- audit.query ---- */

struct query {
	msgpack_packer *pk;
	const char *action;
	size_t alen;
	uint32_t n, limit;
	int pack, more;
	uint8_t next[AUDIT_KEY];
	msgpack_zone zone;
};

static const msgpack_object *map_get(const msgpack_object *m, const char *k)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (sx_obj_streq(&m->via.map.ptr[i].key, k))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static int query_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct query *q = ud;
	msgpack_object o;
	size_t off = 0;
	if (key->len != AUDIT_KEY)
		return 0;
	msgpack_zone_clear(&q->zone);
	if (msgpack_unpack(val->data, val->len, &off, &q->zone, &o) != MSGPACK_UNPACK_SUCCESS)
		return sx_diag_set(SX_ECORRUPT, "an audit entry does not decode");
	const msgpack_object *a = map_get(&o, "action");
	if (q->action && (!a || a->type != MSGPACK_OBJECT_STR || a->via.str.size != q->alen ||
			  memcmp(a->via.str.ptr, q->action, q->alen) != 0))
		return 0;
	if (q->n == q->limit) {
		q->more = 1;
		memcpy(q->next, key->data, AUDIT_KEY);
		return 1;
	}
	if (q->pack)
		sx_pack_object(q->pk, &o);
	q->n++;
	return 0;
}

static int m_query(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"from", "to", "action", "limit", "cursor", NULL};
	struct sx_engine *e = ud;
	int64_t from = 0, to = TIME_MAX + 1, limit = 100;
	const char *action = NULL, *cur = NULL;
	size_t alen = 0, clen = 0;
	int rc;
	SX_UNUSED(req);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "from", 0, &from)) < 0 ||
	    (rc = sx_arg_str(args, "cursor", 0, &cur, &clen)) < 0 ||
	    (rc = sx_arg_int(args, "to", 0, &to)) < 0 || (rc = sx_arg_str(args, "action", 0, &action, &alen)) < 0 ||
	    (rc = sx_arg_int(args, "limit", 0, &limit)) < 0)
		return rc;
	if (from < 0 || to > TIME_MAX + 1 || from > to)
		return sx_diag_set(SX_EINVAL, "arguments 'from' <= 'to' must be ms since 1970 (before the year 10000)");
	if (limit < 1 || limit > 1000)
		return sx_diag_set(SX_EINVAL, "argument 'limit' must be 1 to 1000");
	if (action && (alen == 0 || alen > SX_AUDIT_ACTION_MAX))
		return sx_diag_set(SX_EINVAL, "argument 'action' must be 1 to %d bytes", SX_AUDIT_ACTION_MAX);
	uint8_t lo[AUDIT_KEY], hi[8];
	size_t lolen = 8;
	sx_be64(lo, (uint64_t)from);
	sx_be64(hi, (uint64_t)to);
	if (cur) {
		/* the key of the first entry not yet returned, in hex */
		if (clen != 2 * AUDIT_KEY || sodium_hex2bin(lo, AUDIT_KEY, cur, clen, NULL, NULL, NULL) != 0)
			return sx_diag_set(SX_EINVAL, "argument 'cursor' is not a cursor of audit.query");
		lolen = AUDIT_KEY;
	}
	struct query q;
	memset(&q, 0, sizeof(q));
	q.pk = pk, q.action = action, q.alen = alen, q.limit = (uint32_t)limit;
	msgpack_zone_init(&q.zone, 1024);
	/* count first: the array header precedes the entries */
	rc = sx_store_scan(e->store, SX_T_AUDIT, lo, lolen, hi, 8, 0, query_cb, &q);
	if (rc == 0) {
		msgpack_pack_map(pk, 2);
		sx_pack_key(pk, "entries");
		msgpack_pack_array(pk, q.n);
		q.n = 0, q.pack = 1, q.more = 0;
		rc = sx_store_scan(e->store, SX_T_AUDIT, lo, lolen, hi, 8, 0, query_cb, &q);
	}
	if (rc == 0) {
		sx_pack_key(pk, "cursor");
		if (q.more) {
			char hex[2 * AUDIT_KEY + 1];
			sodium_bin2hex(hex, sizeof(hex), q.next, AUDIT_KEY);
			sx_pack_str(pk, hex);
		} else
			msgpack_pack_nil(pk);
	}
	msgpack_zone_destroy(&q.zone);
	return rc;
}

int sx_audit_register_methods(struct sx_engine *e)
{
	const struct sx_method m = {"audit.query", SX_ROLE_ADMIN, m_query, e,
				    "audit entries {from?, to?, action?, limit?, cursor?}"};
	return sx_rpc_register(e->rpc, &m) < 0 ? SX_ENOMEM : 0;
}
