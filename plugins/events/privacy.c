/* The events plugin's part of privacy: erasing and exporting one user, and
 * the retention sweep of old events (see events.h). */
#include <stdlib.h>
#include <string.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/cohort_lua.h"
#include "plugins/events/internal.h"
#include "plugins/events/timeline.h"
#include "store/store.h"

static int del(int table, const void *k, size_t klen)
{
	return sx_store_del(sx__ev_eng->store, table, k, klen);
}

/* ---- erase ---- */

struct ev_erase {
	uint32_t idx;
	struct sx_events_erased *out;
	msgpack_sbuffer sb;
};

static int erase_event_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ev_erase *x = ud;
	uint8_t tk[SX_EV_TKEY];
	const uint8_t *k = key->data;
	int rc;
	SX_UNUSED(val);
	if (key->len != SX_EV_EVKEY)
		return 0;
	sx__ev_time_key(tk, (int64_t)sx_get_be64(k + 4), sx_get_be64(k + 12));
	if ((rc = del(SX_T_EVENTS, k, key->len)) < 0 || (rc = del(SX_T_EVENTS_BY_TIME, tk, sizeof(tk))) < 0)
		return rc;
	x->out->events++;
	return 0;
}

/* Counter records ('M': [count, sum, nsum, users]) and first-seen days ('F': users). */
static int erase_counter_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ev_erase *x = ud;
	const uint8_t *k = key->data;
	int rc;
	if (key->len < 1)
		return 0;
	if (k[0] == 'F') {
		roaring_bitmap_t *b = sx__ev_bitmap_decode(val->data, val->len);
		if (!b)
			return SX_ECORRUPT;
		if (!roaring_bitmap_remove_checked(b, x->idx)) {
			roaring_bitmap_free(b);
			return 0;
		}
		x->out->bitmaps++;
		if (roaring_bitmap_is_empty(b)) {
			roaring_bitmap_free(b);
			return del(SX_T_COUNTERS, k, key->len);
		}
		rc = sx__ev_bitmap_encode(b, &x->sb);
		roaring_bitmap_free(b);
	} else {
		struct sx_ev_counter c = {0};
		if ((rc = sx__ev_counter_merge(&c, val->data, val->len)) < 0)
			return rc;
		if (!c.users || !roaring_bitmap_remove_checked(c.users, x->idx)) {
			if (c.users)
				roaring_bitmap_free(c.users);
			return 0;
		}
		x->out->bitmaps++;
		/* count and sum stay: the aggregate keeps the anonymous totals */
		rc = sx__ev_counter_encode(&c, &x->sb);
		roaring_bitmap_free(c.users);
	}
	return rc < 0 ? rc : sx_store_put(sx__ev_eng->store, SX_T_COUNTERS, k, key->len, x->sb.data, x->sb.size);
}

/* Rewrites a cohort definition's `size` after a member left. */
static int cohort_size_minus_one(const uint8_t *name, size_t nlen)
{
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	if (nlen > SX_EVENTS_ID_MAX)
		return 0;
	k[0] = 'd';
	memcpy(k + 1, name, nlen);
	int rc = sx_store_get(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if ((rc = sx__ev_unpack(v.data, v.len, &z, &o)) < 0 || o.type != MSGPACK_OBJECT_MAP) {
		msgpack_zone_destroy(&z);
		return rc < 0 ? rc : SX_ECORRUPT;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, o.via.map.size);
	for (uint32_t i = 0; i < o.via.map.size; i++) {
		const msgpack_object_kv *kv = &o.via.map.ptr[i];
		sx_pack_object(&pk, &kv->key);
		if (sx_obj_streq(&kv->key, "size") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		    kv->val.via.u64 > 0)
			msgpack_pack_uint64(&pk, kv->val.via.u64 - 1);
		else
			sx_pack_object(&pk, &kv->val);
	}
	rc = sx_store_put(sx__ev_eng->store, SX_T_COHORTS, k, nlen + 1, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&z);
	return rc;
}

static int erase_cohort_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ev_erase *x = ud;
	const uint8_t *k = key->data;
	int rc;
	if (!val->len)
		return 0;
	roaring_bitmap_t *b = sx__ev_bitmap_decode(val->data, val->len);
	if (!b)
		return SX_ECORRUPT;
	if (!roaring_bitmap_remove_checked(b, x->idx)) {
		roaring_bitmap_free(b);
		return 0;
	}
	x->out->cohorts++;
	roaring_bitmap_run_optimize(b);
	rc = sx__ev_bitmap_encode(b, &x->sb);
	roaring_bitmap_free(b);
	if (rc == 0)
		rc = sx_store_put(sx__ev_eng->store, SX_T_COHORTS, k, key->len, x->sb.data, x->sb.size);
	return rc < 0 ? rc : cohort_size_minus_one(k + 1, key->len - 1);
}

int sx_events_user_erase(const char *id, size_t len, uint32_t *idx_out, struct sx_events_erased *out)
{
	uint32_t idx;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = sx_events_user_index(NULL, id, len, &idx)) < 0)
		return rc;
	*idx_out = idx;
	sx__ev_cohort_lua_forget(idx);
	sx__tl_invalidate();
	sx__ev_funnel_cache_clear();
	struct ev_erase x = {idx, out, {0}};
	msgpack_sbuffer_init(&x.sb);
	uint8_t lo[SX_EV_EVKEY], hi[SX_EV_EVKEY], ik[4], uk[5] = {'U'};
	sx__ev_event_key(lo, idx, 0, 0);
	sx__ev_event_key(hi, idx + 1, 0, 0);
	sx_be32(ik, idx);
	sx_be32(uk + 1, idx);
	/* the bound first, so that the index is never handed out again */
	uint8_t bound[4];
	sx_be32(bound, sx_events_user_bound());
	if ((rc = sx_store_put(sx__ev_eng->store, SX_T_COUNTERS, "N", 1, bound, 4)) < 0)
		goto out;
	if ((rc = sx_store_scan(sx__ev_eng->store, SX_T_EVENTS, lo, sizeof(lo), idx == UINT32_MAX ? NULL : hi,
				idx == UINT32_MAX ? 0 : sizeof(hi), 0, erase_event_cb, &x)) < 0)
		goto out;
	if ((rc = del(SX_T_USERS, id, len)) < 0 || (rc = del(SX_T_USER_IDX, ik, 4)) < 0)
		goto out;
	sx__ev_user_cache_clear();
	out->users = 1;
	struct sx_val v;
	if ((rc = sx_store_get(sx__ev_eng->store, SX_T_COUNTERS, uk, 5, &v)) == 0) {
		if ((rc = del(SX_T_COUNTERS, uk, 5)) < 0)
			goto out;
		out->first_seen = 1;
	} else if (rc != SX_ENOENT) {
		goto out;
	}
	if ((rc = sx_store_scan(sx__ev_eng->store, SX_T_COUNTERS, "F", 1, "G", 1, 0, erase_counter_cb, &x)) < 0 ||
	    (rc = sx_store_scan(sx__ev_eng->store, SX_T_COUNTERS, "M", 1, "N", 1, 0, erase_counter_cb, &x)) < 0 ||
	    (rc = sx_store_scan(sx__ev_eng->store, SX_T_COHORTS, "b", 1, "c", 1, 0, erase_cohort_cb, &x)) < 0)
		goto out;
	rc = 0;
out:
	msgpack_sbuffer_destroy(&x.sb);
	return rc;
}

/* ---- export ---- */

static void pack_blob_map(msgpack_packer *pk, const void *data, size_t len)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if (data && len && sx__ev_unpack(data, len, &z, &o) == 0)
		sx_pack_object(pk, &o);
	else
		msgpack_pack_map(pk, 0);
	msgpack_zone_destroy(&z);
}

struct ev_export {
	msgpack_packer *pk;
	uint32_t idx, n;
	int pack;
	msgpack_sbuffer names;
	msgpack_packer npk;
};

static int export_event_cb(const struct sx_event *ev, void *ud)
{
	struct ev_export *x = ud;
	x->n++;
	if (!x->pack)
		return 0;
	msgpack_packer *pk = x->pk;
	msgpack_pack_map(pk, 4);
	sx_pack_key(pk, "name");
	sx_pack_strn(pk, ev->name, ev->name_len);
	sx_pack_kv_int(pk, "time", ev->time);
	sx_pack_key(pk, "item");
	if (ev->item)
		sx_pack_strn(pk, ev->item, ev->item_len);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "properties");
	pack_blob_map(pk, ev->props, ev->props_len);
	return 0;
}

static int export_cohort_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ev_export *x = ud;
	if (!val->len)
		return 0;
	roaring_bitmap_t *b = sx__ev_bitmap_decode(val->data, val->len);
	if (!b)
		return SX_ECORRUPT;
	if (roaring_bitmap_contains(b, x->idx)) {
		sx_pack_strn(&x->npk, (const char *)key->data + 1, key->len - 1);
		x->n++;
	}
	roaring_bitmap_free(b);
	return 0;
}

int sx_events_user_export(const char *id, size_t len, uint32_t idx, msgpack_packer *pk)
{
	const void *rec;
	size_t rlen;
	int64_t first;
	int rc = sx_events_user_record(NULL, id, len, &rec, &rlen);
	if (rc < 0)
		return rc;
	struct ev_export x = {pk, idx, 0, 0, {0}, {0}};
	msgpack_sbuffer_init(&x.names);
	msgpack_packer_init(&x.npk, &x.names, msgpack_sbuffer_write);
	if ((rc = sx_store_scan(sx__ev_eng->store, SX_T_COHORTS, "b", 1, "c", 1, 0, export_cohort_cb, &x)) < 0)
		goto out;
	uint32_t ncohorts = x.n;
	x.n = 0;
	if ((rc = sx_events_user_scan(NULL, idx, 0, SX_EVENTS_TIME_MAX + 1, 0, export_event_cb, &x)) < 0)
		goto out;
	int has_first = sx_events_user_first_seen(NULL, idx, &first) == 0;
	msgpack_pack_map(pk, 4);
	sx_pack_key(pk, "profile");
	pack_blob_map(pk, rec, rlen);
	sx_pack_key(pk, "first_seen");
	if (has_first)
		msgpack_pack_int64(pk, first);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "cohorts");
	msgpack_pack_array(pk, ncohorts);
	if (x.names.size)
		msgpack_pack_bin_body(pk, x.names.data, x.names.size); /* raw: packed names */
	sx_pack_key(pk, "events");
	msgpack_pack_array(pk, x.n);
	x.pack = 1;
	rc = sx_events_user_scan(NULL, idx, 0, SX_EVENTS_TIME_MAX + 1, 0, export_event_cb, &x);
out:
	msgpack_sbuffer_destroy(&x.names);
	return rc;
}

/* ---- retention ---- */

struct ev_expire {
	uint32_t max, n;
	int more;
};

static int expire_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ev_expire *x = ud;
	uint8_t ek[SX_EV_EVKEY];
	int rc;
	if (x->n == x->max) {
		x->more = 1;
		return 1;
	}
	if (key->len != SX_EV_TKEY || val->len != 4)
		return 0;
	const uint8_t *k = key->data;
	sx__ev_event_key(ek, sx_get_be32(val->data), (int64_t)sx_get_be64(k), sx_get_be64(k + 8));
	if ((rc = del(SX_T_EVENTS, ek, sizeof(ek))) < 0 || (rc = del(SX_T_EVENTS_BY_TIME, k, key->len)) < 0)
		return rc;
	x->n++;
	return 0;
}

int sx_events_expire(int64_t before, uint32_t max, uint32_t *deleted)
{
	uint8_t hi[SX_EV_TKEY];
	struct ev_expire x = {max, 0, 0};
	*deleted = 0;
	if (before <= 0 || max == 0)
		return 0;
	sx__ev_time_key(hi, before > SX_EVENTS_TIME_MAX ? SX_EVENTS_TIME_MAX + 1 : before, 0);
	int rc = sx_store_scan(sx__ev_eng->store, SX_T_EVENTS_BY_TIME, NULL, 0, hi, sizeof(hi), 0, expire_cb, &x);
	*deleted = x.n;
	if (x.n) {
		sx__tl_invalidate();
		sx__ev_funnel_cache_clear();
	}
	return rc < 0 ? rc : x.more;
}
