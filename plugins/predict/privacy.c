/* The predict plugin's part of privacy.erase and privacy.export: the
 * prediction log, notifications, frequency-cap and holdout records of one
 * user, and the cached summary. Layouts in internal.h. The log and the
 * notification records are not keyed by user, so both are scanned whole. */
#include <string.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

struct user_scan {
	const char *id;
	size_t len;
	uint32_t idx;
	int has_idx;
	int erase;
	msgpack_packer *pk; /* export: pass 1 packs, pass 0 counts */
	uint64_t n;
	int rc;
};

static int log_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct user_scan *u = ud;
	const uint8_t *k = key->data;
	if (key->len < 13 || sx_get_be32(k + 9) != u->idx)
		return 0;
	u->n++;
	if (u->erase)
		return sx_store_del(sx__pred_eng->store, SX_T_SERIES, key->data, key->len);
	if (u->pk) {
		uint64_t bits = val->len >= 8 ? sx_get_be64(val->data) : 0;
		double p;
		memcpy(&p, &bits, 8);
		msgpack_pack_map(u->pk, 3);
		sx_pack_kv_int(u->pk, "time", (int64_t)sx_get_be64(k + 1));
		sx_pack_key(u->pk, "target");
		sx_pack_strn(u->pk, (const char *)k + 13, key->len - 13);
		sx_pack_kv_double(u->pk, "probability", p);
	}
	return 0;
}

/* 1 if the notification record's "user" is u's id. */
static int notif_is_user(const struct sx_val *val, const struct user_scan *u, msgpack_zone *z, msgpack_object *o)
{
	if (sx_frame_decode(val->data, val->len, z, o) < 0 || o->type != MSGPACK_OBJECT_MAP)
		return 0;
	const msgpack_object *user = sx_arg(o, "user");
	return user && user->type == MSGPACK_OBJECT_STR && user->via.str.size == u->len &&
	       memcmp(user->via.str.ptr, u->id, u->len) == 0;
}

static int notif_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct user_scan *u = ud;
	msgpack_zone z;
	msgpack_object o;
	int rc = 0;
	if (key->len != 9)
		return 0;
	msgpack_zone_init(&z, 512);
	if (notif_is_user(val, u, &z, &o)) {
		u->n++;
		if (u->erase) {
			uint8_t k[9];
			memcpy(k, key->data, 9);
			if ((rc = sx_store_del(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9)) == 0) {
				k[0] = 'q';
				rc = sx_store_del(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 9);
				if (rc == SX_ENOENT)
					rc = 0;
			}
		} else if (u->pk) {
			sx_pack_object(u->pk, &o);
		}
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int holdout_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct user_scan *u = ud;
	const uint8_t *k = key->data;
	SX_UNUSED(val);
	if (key->len < 6 || sx_get_be32(k + key->len - 4) != u->idx)
		return 0;
	u->n++;
	if (u->erase)
		return sx_store_del(sx__pred_eng->store, SX_T_NOTIFICATIONS, key->data, key->len);
	if (u->pk)
		sx_pack_strn(u->pk, (const char *)k + 1, key->len - 6);
	return 0;
}

/* Runs cb over [lo, hi) of table: with pk, counts then packs an array. */
static int scan(int table, uint8_t lo, uint8_t hi, sx_store_scan_cb cb, struct user_scan *u)
{
	msgpack_packer *pk = u->pk;
	int rc;
	u->n = 0;
	if (pk) {
		u->pk = NULL;
		if ((rc = sx_store_scan(sx__pred_eng->store, table, &lo, 1, &hi, 1, 0, cb, u)) < 0)
			return rc;
		msgpack_pack_array(pk, (uint32_t)u->n);
		u->pk = pk, u->n = 0;
	}
	return sx_store_scan(sx__pred_eng->store, table, &lo, 1, &hi, 1, 0, cb, u);
}

static int erase_user(const char *id, size_t len, uint32_t idx, int has_idx, struct sx_privacy_receipt *r, void *ud)
{
	struct user_scan u = {id, len, idx, has_idx, 1, NULL, 0, 0};
	int rc;
	SX_UNUSED(ud);
	if ((rc = scan(SX_T_NOTIFICATIONS, 'n', 'o', notif_cb, &u)) < 0)
		return rc;
	if (u.n)
		sx_privacy_receipt_add(r, "notifications", u.n);
	if (!has_idx)
		return 0;
	sx__pred_forget(idx);
	if ((rc = scan(SX_T_SERIES, 'L', 'M', log_cb, &u)) < 0)
		return rc;
	if (u.n)
		sx_privacy_receipt_add(r, "series", u.n);
	if ((rc = scan(SX_T_NOTIFICATIONS, 'h', 'i', holdout_cb, &u)) < 0)
		return rc;
	uint64_t held = u.n;
	uint8_t k[5] = {'c'};
	struct sx_val v;
	sx_be32(k + 1, idx);
	if ((rc = sx_store_get(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 5, &v)) == 0) {
		if ((rc = sx_store_del(sx__pred_eng->store, SX_T_NOTIFICATIONS, k, 5)) < 0)
			return rc;
		held++;
	} else if (rc != SX_ENOENT) {
		return rc;
	}
	if (held)
		sx_privacy_receipt_add(r, "notifications", held);
	return 0;
}

static int export_user(const char *id, size_t len, uint32_t idx, int has_idx, msgpack_packer *pk, void *ud)
{
	struct user_scan u = {id, len, idx, has_idx, 0, NULL, 0, 0};
	uint64_t total = 0;
	int rc;
	SX_UNUSED(ud);
	if ((rc = scan(SX_T_NOTIFICATIONS, 'n', 'o', notif_cb, &u)) < 0)
		return rc;
	total += u.n;
	if (has_idx) {
		sx__pred_log_flush(); /* predictions served in the last second too */
		if ((rc = scan(SX_T_SERIES, 'L', 'M', log_cb, &u)) < 0)
			return rc;
		total += u.n;
		if ((rc = scan(SX_T_NOTIFICATIONS, 'h', 'i', holdout_cb, &u)) < 0)
			return rc;
		total += u.n;
	}
	if (total == 0) {
		msgpack_pack_nil(pk);
		return 0;
	}
	u.pk = pk;
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "notifications");
	if ((rc = scan(SX_T_NOTIFICATIONS, 'n', 'o', notif_cb, &u)) < 0)
		return rc;
	sx_pack_key(pk, "predictions");
	if (!has_idx)
		msgpack_pack_array(pk, 0);
	else if ((rc = scan(SX_T_SERIES, 'L', 'M', log_cb, &u)) < 0)
		return rc;
	sx_pack_key(pk, "holdouts");
	if (!has_idx)
		msgpack_pack_array(pk, 0);
	else if ((rc = scan(SX_T_NOTIFICATIONS, 'h', 'i', holdout_cb, &u)) < 0)
		return rc;
	return 0;
}

int sx__pred_privacy_start(void)
{
	int rc = sx_privacy_register_eraser("predict", erase_user, NULL);
	return rc < 0 ? rc : sx_privacy_register_exporter("predict", export_user, NULL);
}
