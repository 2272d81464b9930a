/* The privacy plugin: consent per purpose, erasure with a receipt, export
 * (right of access), the retention sweep, pseudonymous ids, and audit.query.
 *
 * Tables: consent  stored user id -> {PURPOSE = {granted, time, source}}
 *         audit    (see core/audit.h)
 */
#include "plugins/privacy/privacy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/audit.h"
#include "core/config.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "store/store.h"

#define DAY_MS 86400000LL
#define SWEEP_CHUNK 1000
#define SOURCE_MAX 128
#define HOOKS_MAX 32

static struct sx_engine *eng;
static uv_timer_t sweep_timer;
static int sweep_timer_on;
static uint64_t swept_total;

static const char *const purpose_names[SX_PURPOSES] = {"analytics", "personalization", "experiments",
							"notifications"};

const char *sx_privacy_purpose_name(int purpose)
{
	return purpose >= 0 && purpose < SX_PURPOSES ? purpose_names[purpose] : NULL;
}

static int purpose_parse(const char *s, size_t len)
{
	for (int i = 0; i < SX_PURPOSES; i++)
		if (strlen(purpose_names[i]) == len && memcmp(purpose_names[i], s, len) == 0)
			return i;
	return -1;
}

/* ---- hooks ---- */

struct hook {
	const char *name;
	void *fn;
	void *ud;
};
static struct hook erasers[HOOKS_MAX], exporters[HOOKS_MAX];
static int nerasers, nexporters;

static int hook_add(struct hook *h, int *n, const char *name, void *fn, void *ud)
{
	for (int i = 0; i < *n; i++)
		if (strcmp(h[i].name, name) == 0) {
			h[i].fn = fn, h[i].ud = ud; /* a restarted engine registers again */
			return 0;
		}
	if (*n == HOOKS_MAX)
		return sx_diag_set(SX_ENOMEM, "too many privacy hooks");
	h[*n].name = name, h[*n].fn = fn, h[*n].ud = ud;
	(*n)++;
	return 0;
}

int sx_privacy_register_eraser(const char *name, sx_privacy_eraser_fn fn, void *ud)
{
	return hook_add(erasers, &nerasers, name, (void *)fn, ud);
}

int sx_privacy_register_exporter(const char *name, sx_privacy_exporter_fn fn, void *ud)
{
	return hook_add(exporters, &nexporters, name, (void *)fn, ud);
}

struct sx_privacy_receipt {
	struct {
		const char *table;
		uint64_t n;
	} e[64];
	int n;
};

void sx_privacy_receipt_add(struct sx_privacy_receipt *r, const char *table, uint64_t n)
{
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->e[i].table, table) == 0) {
			r->e[i].n += n;
			return;
		}
	if (r->n < (int)SX_ARRAY_SIZE(r->e)) {
		r->e[r->n].table = table;
		r->e[r->n].n = n;
		r->n++;
	}
}

/* ---- ids ---- */

const char *sx_privacy_user_id(const char *id, size_t len, char *buf, size_t *outlen)
{
	const char *secret = eng ? eng->cfg->pseudonymize_secret : "";
	if (!secret[0]) {
		*outlen = len;
		return id;
	}
	crypto_auth_hmacsha256_state st;
	uint8_t mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)id, len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(buf, SX_PRIVACY_ID_BUF, mac, sizeof(mac));
	*outlen = 2 * sizeof(mac);
	return buf;
}

/* ---- consent ---- */

static int consent_default(void) { return eng ? eng->cfg->consent_default : 1; }

/* Bumped by every consent write, every undone one and every start or stop of
 * the plugin: an answer of sx_privacy_allowed() cached under one version
 * holds while the version stays. */
static uint64_t consent_version = 1;

uint64_t sx_privacy_consent_version(void) { return consent_version; }

static void consent_undo_cb(uint64_t tables, void *ud)
{
	SX_UNUSED(ud);
	if (tables & (uint64_t)1 << SX_T_CONSENT)
		consent_version++;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *k)
{
	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (sx_obj_streq(&m->via.map.ptr[i].key, k))
			return &m->via.map.ptr[i].val;
	return NULL;
}

/* Loads the consent record of a stored id into zone: 0, SX_ENOENT or an error. */
static int consent_load(const char *id, size_t len, msgpack_zone *z, msgpack_object *o)
{
	struct sx_val v;
	size_t off = 0;
	int rc = sx_store_get(eng->store, SX_T_CONSENT, id, len, &v);
	if (rc < 0)
		return rc;
	if (msgpack_unpack(v.data, v.len, &off, z, o) != MSGPACK_UNPACK_SUCCESS || o->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_ECORRUPT, "a stored consent record does not decode");
	return 0;
}

int sx_privacy_allowed(const char *id, size_t len, int purpose)
{
	if (!eng)
		return 1;
	if (purpose < 0 || purpose >= SX_PURPOSES || len == 0 || len > SX_EVENTS_ID_MAX)
		return 0;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 512);
	int rc = consent_load(id, len, &z, &o), allowed = 0;
	if (rc == SX_ENOENT) {
		allowed = consent_default();
	} else if (rc == 0) {
		const msgpack_object *p = map_get(&o, purpose_names[purpose]), *g = map_get(p, "granted");
		allowed = g ? g->type == MSGPACK_OBJECT_BOOLEAN && g->via.boolean : consent_default();
	}
	msgpack_zone_destroy(&z);
	return allowed;
}

int sx_privacy_allowed_index(uint32_t idx, int purpose)
{
	char id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	if (!eng)
		return 1;
	if (sx_events_user_id(NULL, idx, id, sizeof(id), &len) < 0)
		return 0;
	return sx_privacy_allowed(id, len, purpose);
}

/* ---- consent snapshots ---- */

struct id_list {
	char (*ids)[SX_EVENTS_ID_MAX + 1];
	size_t *lens;
	size_t n, cap;
};

static int consent_key_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct id_list *l = ud;
	SX_UNUSED(val);
	if (key->len == 0 || key->len > SX_EVENTS_ID_MAX)
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		void *a = realloc(l->ids, cap * sizeof(*l->ids)), *b = a ? realloc(l->lens, cap * sizeof(size_t)) : NULL;
		if (a)
			l->ids = a;
		if (!a || !b)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		l->lens = b, l->cap = cap;
	}
	memcpy(l->ids[l->n], key->data, key->len);
	l->lens[l->n++] = key->len;
	return 0;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Only users with a consent record can differ from the default, so a
 * snapshot costs one lookup per record, not per user. The ids are collected
 * first: the lookups must not run inside the scan. */
int sx_privacy_snapshot_take(int purpose, struct sx_privacy_snapshot *out)
{
	struct id_list l = {0};
	memset(out, 0, sizeof(*out));
	out->dflt = consent_default() ? 1 : 0;
	if (!eng) {
		out->dflt = 1;
		return 0;
	}
	int rc = sx_store_scan(eng->store, SX_T_CONSENT, NULL, 0, NULL, 0, 0, consent_key_cb, &l);
	if (rc == 0 && l.n && !(out->idx = malloc(l.n * sizeof(uint32_t))))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		uint32_t idx;
		if (sx_events_user_index(NULL, l.ids[i], l.lens[i], &idx) < 0)
			continue;
		if (sx_privacy_allowed(l.ids[i], l.lens[i], purpose) != out->dflt)
			out->idx[out->n++] = idx;
	}
	free(l.ids), free(l.lens);
	if (rc < 0) {
		sx_privacy_snapshot_free(out);
		return rc;
	}
	if (out->n)
		qsort(out->idx, out->n, sizeof(uint32_t), u32_cmp);
	return 0;
}

int sx_privacy_snapshot_allows(const struct sx_privacy_snapshot *s, uint32_t idx)
{
	int listed = s->n && bsearch(&idx, s->idx, s->n, sizeof(uint32_t), u32_cmp) != NULL;
	return listed ? !s->dflt : s->dflt;
}

void sx_privacy_snapshot_free(struct sx_privacy_snapshot *s)
{
	free(s->idx);
	s->idx = NULL;
	s->n = 0;
}

/* Packs {PURPOSE = {granted, time, source}} for every purpose; rec may be NULL. */
static void pack_purposes(msgpack_packer *pk, const msgpack_object *rec)
{
	msgpack_pack_map(pk, SX_PURPOSES);
	for (int i = 0; i < SX_PURPOSES; i++) {
		const msgpack_object *p = map_get(rec, purpose_names[i]);
		const msgpack_object *g = map_get(p, "granted"), *t = map_get(p, "time"), *s = map_get(p, "source");
		sx_pack_key(pk, purpose_names[i]);
		msgpack_pack_map(pk, 3);
		sx_pack_kv_bool(pk, "granted", g ? g->type == MSGPACK_OBJECT_BOOLEAN && g->via.boolean : consent_default());
		sx_pack_key(pk, "time");
		t ? sx_pack_object(pk, t) : msgpack_pack_nil(pk);
		sx_pack_key(pk, "source");
		s ? sx_pack_object(pk, s) : msgpack_pack_nil(pk);
	}
}

static int user_arg(const msgpack_object *args, char *buf, const char **id, size_t *len)
{
	const msgpack_object *o = sx_arg(args, "user");
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "argument 'user' is required");
	if (o->type != MSGPACK_OBJECT_STR)
		return sx_diag_set(SX_EINVAL, "argument 'user' must be a string");
	if (o->via.str.size == 0 || o->via.str.size > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'user' must be 1 to %d bytes", SX_EVENTS_ID_MAX);
	if (!sx_utf8_valid(o->via.str.ptr, o->via.str.size) || memchr(o->via.str.ptr, 0, o->via.str.size))
		return sx_diag_set(SX_EINVAL, "argument 'user' must be UTF-8 without NUL bytes");
	*id = sx_privacy_user_id(o->via.str.ptr, o->via.str.size, buf, len);
	return 0;
}

static void pack_user(msgpack_packer *pk, const char *id, size_t len)
{
	sx_pack_key(pk, "user");
	sx_pack_strn(pk, id, len);
}

static int m_consent_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", NULL};
	char buf[SX_PRIVACY_ID_BUF];
	const char *id;
	size_t len;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, buf, &id, &len)) < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 512);
	rc = consent_load(id, len, &z, &o);
	if (rc == 0 || rc == SX_ENOENT) {
		msgpack_pack_map(pk, 3);
		pack_user(pk, id, len);
		sx_pack_kv_bool(pk, "recorded", rc == 0);
		sx_pack_key(pk, "purposes");
		pack_purposes(pk, rc == 0 ? &o : NULL);
		rc = 0;
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int m_consent_set(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "purposes", "source", NULL};
	char buf[SX_PRIVACY_ID_BUF];
	const char *id, *src = NULL;
	size_t len, slen = 0;
	const msgpack_object *purposes;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, buf, &id, &len)) < 0 ||
	    (rc = sx_arg_map(args, "purposes", 1, &purposes)) < 0 || (rc = sx_arg_str(args, "source", 0, &src, &slen)) < 0)
		return rc;
	if (src && (slen == 0 || slen > SOURCE_MAX || !sx_utf8_valid(src, slen) || memchr(src, 0, slen)))
		return sx_diag_set(SX_EINVAL, "argument 'source' must be 1 to %d bytes of UTF-8", SOURCE_MAX);
	if (purposes->via.map.size == 0)
		return sx_diag_set(SX_EINVAL, "argument 'purposes' must name at least one purpose");
	int given[SX_PURPOSES];
	for (int i = 0; i < SX_PURPOSES; i++)
		given[i] = -1;
	for (uint32_t i = 0; i < purposes->via.map.size; i++) {
		const msgpack_object_kv *kv = &purposes->via.map.ptr[i];
		int p = kv->key.type == MSGPACK_OBJECT_STR ? purpose_parse(kv->key.via.str.ptr, kv->key.via.str.size) : -1;
		if (p < 0)
			return sx_diag_set(SX_EINVAL, "argument 'purposes': purposes are analytics, personalization, "
				"experiments and notifications");
		if (kv->val.type != MSGPACK_OBJECT_BOOLEAN)
			return sx_diag_set(SX_EINVAL, "argument 'purposes': %s must be true or false", purpose_names[p]);
		if (given[p] >= 0)
			return sx_diag_set(SX_EINVAL, "argument 'purposes' repeats %s", purpose_names[p]);
		given[p] = kv->val.via.boolean;
	}
	msgpack_zone z;
	msgpack_object old;
	msgpack_zone_init(&z, 512);
	rc = consent_load(id, len, &z, &old);
	if (rc < 0 && rc != SX_ENOENT) {
		msgpack_zone_destroy(&z);
		return rc;
	}
	const msgpack_object *prev = rc == 0 ? &old : NULL;
	int64_t now = sx_wall_ms();
	msgpack_sbuffer sb, ab;
	msgpack_packer spk, apk;
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&ab);
	msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
	msgpack_packer_init(&apk, &ab, msgpack_sbuffer_write);
	int n = 0;
	for (int i = 0; i < SX_PURPOSES; i++)
		n += given[i] >= 0 || map_get(prev, purpose_names[i]) != NULL;
	msgpack_pack_map(&spk, (size_t)n);
	for (int i = 0; i < SX_PURPOSES; i++) {
		const msgpack_object *p = map_get(prev, purpose_names[i]);
		if (given[i] < 0 && !p)
			continue;
		sx_pack_key(&spk, purpose_names[i]);
		if (given[i] < 0) {
			sx_pack_object(&spk, p);
			continue;
		}
		msgpack_pack_map(&spk, 3);
		sx_pack_kv_bool(&spk, "granted", given[i]);
		sx_pack_kv_int(&spk, "time", now);
		sx_pack_key(&spk, "source");
		src ? sx_pack_strn(&spk, src, slen) : msgpack_pack_nil(&spk);
	}
	consent_version++;
	rc = sx_store_put(eng->store, SX_T_CONSENT, id, len, sb.data, sb.size);
	/* the audit entry: which purposes changed how, for a hashed user */
	char hash[33];
	if (rc == 0)
		rc = sx_audit_user_hash(eng, id, len, hash);
	if (rc == 0) {
		msgpack_pack_map(&apk, 2);
		sx_pack_kv_str(&apk, "user", hash);
		sx_pack_key(&apk, "purposes");
		msgpack_pack_map(&apk, purposes->via.map.size);
		for (int i = 0; i < SX_PURPOSES; i++)
			if (given[i] >= 0)
				sx_pack_kv_bool(&apk, purpose_names[i], given[i]);
		rc = sx_audit_record_packed(eng, "consent.set", ab.data, ab.size);
	}
	if (rc == 0) {
		msgpack_object rec;
		size_t off = 0;
		msgpack_zone_clear(&z);
		if (msgpack_unpack(sb.data, sb.size, &off, &z, &rec) != MSGPACK_UNPACK_SUCCESS)
			rc = sx_diag_set(SX_EINTERNAL, "consent record does not decode");
		else {
			msgpack_pack_map(pk, 2);
			pack_user(pk, id, len);
			sx_pack_key(pk, "purposes");
			pack_purposes(pk, &rec);
		}
	}
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&ab);
	msgpack_zone_destroy(&z);
	return rc;
}

/* ---- erase ---- */

static int m_erase(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", NULL};
	char buf[SX_PRIVACY_ID_BUF], hash[33];
	const char *id;
	size_t len;
	uint32_t idx = 0;
	int has_idx = 0, rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, buf, &id, &len)) < 0 ||
	    (rc = sx_audit_user_hash(eng, id, len, hash)) < 0)
		return rc;
	struct sx_privacy_receipt *r = calloc(1, sizeof(*r));
	if (!r)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	struct sx_events_erased ev;
	rc = sx_events_user_erase(id, len, &idx, &ev);
	if (rc == 0) {
		has_idx = 1;
		sx_privacy_receipt_add(r, "users", ev.users);
		sx_privacy_receipt_add(r, "user_idx", ev.users);
		sx_privacy_receipt_add(r, "events", ev.events);
		sx_privacy_receipt_add(r, "events_by_time", ev.events);
		sx_privacy_receipt_add(r, "counters", ev.first_seen + ev.bitmaps);
		sx_privacy_receipt_add(r, "cohorts", ev.cohorts);
	} else if (rc != SX_ENOENT) {
		goto out;
	}
	struct sx_val v;
	rc = sx_store_get(eng->store, SX_T_CONSENT, id, len, &v);
	consent_version++;
	if (rc == 0 && (rc = sx_store_del(eng->store, SX_T_CONSENT, id, len)) == 0)
		sx_privacy_receipt_add(r, "consent", 1);
	if (rc < 0 && rc != SX_ENOENT)
		goto out;
	for (int i = 0; i < nerasers; i++) {
		sx_privacy_eraser_fn fn = (sx_privacy_eraser_fn)erasers[i].fn;
		if ((rc = fn(id, len, idx, has_idx, r, erasers[i].ud)) < 0) {
			sx_diag_set(rc, "erasure by %s failed: %s", erasers[i].name, sx_diag_last());
			goto out;
		}
	}
	uint64_t total = 0;
	for (int i = 0; i < r->n; i++)
		total += r->e[i].n;
	/* the audit entry holds the hash and the counts, nothing that names the user */
	msgpack_sbuffer ab;
	msgpack_packer apk;
	msgpack_sbuffer_init(&ab);
	msgpack_packer_init(&apk, &ab, msgpack_sbuffer_write);
	msgpack_pack_map(&apk, 2);
	sx_pack_kv_str(&apk, "user", hash);
	sx_pack_key(&apk, "removed");
	msgpack_pack_map(&apk, (size_t)r->n);
	for (int i = 0; i < r->n; i++)
		sx_pack_kv_uint(&apk, r->e[i].table, r->e[i].n);
	rc = sx_audit_record_packed(eng, "privacy.erase", ab.data, ab.size);
	msgpack_sbuffer_destroy(&ab);
	if (rc < 0)
		goto out;
	sx_log_info("privacy.erase: user %s, %llu records", hash, (unsigned long long)total);
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "user_hash", hash);
	sx_pack_key(pk, "user_index");
	has_idx ? msgpack_pack_uint32(pk, idx) : msgpack_pack_nil(pk);
	sx_pack_kv_bool(pk, "found", total > 0);
	sx_pack_key(pk, "removed");
	msgpack_pack_map(pk, (size_t)r->n);
	for (int i = 0; i < r->n; i++)
		sx_pack_kv_uint(pk, r->e[i].table, r->e[i].n);
	rc = 0;
out:
	free(r);
	return rc;
}

/* ---- export ---- */

static int m_export(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", NULL};
	char buf[SX_PRIVACY_ID_BUF];
	const char *id;
	size_t len;
	uint32_t idx = 0;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_arg(args, buf, &id, &len)) < 0)
		return rc;
	rc = sx_events_user_index(NULL, id, len, &idx);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	int has_idx = rc == 0;
	msgpack_zone z;
	msgpack_object crec;
	msgpack_zone_init(&z, 512);
	rc = consent_load(id, len, &z, &crec);
	if (rc < 0 && rc != SX_ENOENT) {
		msgpack_zone_destroy(&z);
		return rc;
	}
	int has_consent = rc == 0;
	if (!has_idx && !has_consent) {
		/* Found only if some exporter packs more than nil (the contract:
		 * nil when it holds nothing about the user). */
		int found = 0;
		msgpack_sbuffer sb;
		msgpack_packer spk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
		for (int i = 0; i < nexporters && !found && rc >= 0; i++) {
			sx_privacy_exporter_fn fn = (sx_privacy_exporter_fn)exporters[i].fn;
			msgpack_sbuffer_clear(&sb);
			rc = fn(id, len, idx, has_idx, &spk, exporters[i].ud);
			found = rc >= 0 && !(sb.size == 1 && (uint8_t)sb.data[0] == 0xc0);
		}
		msgpack_sbuffer_destroy(&sb);
		if (rc < 0 || !found) {
			msgpack_zone_destroy(&z);
			return rc < 0 ? rc : sx_diag_set(SX_ENOENT, "nothing is stored about this user");
		}
	}
	msgpack_pack_map(pk, 4 + (size_t)nexporters);
	pack_user(pk, id, len);
	sx_pack_key(pk, "index");
	has_idx ? msgpack_pack_uint32(pk, idx) : msgpack_pack_nil(pk);
	sx_pack_key(pk, "consent");
	msgpack_pack_map(pk, 2);
	sx_pack_kv_bool(pk, "recorded", has_consent);
	sx_pack_key(pk, "purposes");
	pack_purposes(pk, has_consent ? &crec : NULL);
	msgpack_zone_destroy(&z);
	sx_pack_key(pk, "events");
	if (has_idx) {
		if ((rc = sx_events_user_export(id, len, idx, pk)) < 0)
			return rc;
	} else {
		msgpack_pack_nil(pk);
	}
	for (int i = 0; i < nexporters; i++) {
		sx_privacy_exporter_fn fn = (sx_privacy_exporter_fn)exporters[i].fn;
		sx_pack_key(pk, exporters[i].name);
		if ((rc = fn(id, len, idx, has_idx, pk, exporters[i].ud)) < 0)
			return rc;
	}
	return 0;
}

/* ---- retention ---- */

static void sweep_cb(uv_timer_t *t)
{
	uint32_t n = 0;
	int64_t before = sx_wall_ms() - (int64_t)eng->cfg->retention_days * DAY_MS;
	int rc = sx_events_expire(before, SWEEP_CHUNK, &n);
	sx_store_read_end(eng->store);
	swept_total += n;
	if (rc < 0)
		sx_log_error("retention sweep: %s", sx_diag_last());
	else if (n)
		sx_log_debug("retention sweep: %u events older than %u days removed", n, eng->cfg->retention_days);
	/* More to do: go on at the next loop turn, after whatever I/O is waiting. */
	uv_timer_start(t, sweep_cb, rc == 1 ? 0 : eng->cfg->retention_interval_ms, 0);
}

/* ---- plugin ---- */

static int start(struct sx_engine *e)
{
	eng = e;
	swept_total = 0;
	consent_version++;
	if (sx_store_on_undo(e->store, consent_undo_cb, NULL) < 0)
		return sx_diag_last_code();
	const struct sx_method methods[] = {
		{"consent.set", SX_ROLE_WRITER, m_consent_set, NULL,
		 "record a user's consent {user, purposes = {analytics, personalization, experiments, notifications}, source?}"},
		{"consent.get", SX_ROLE_READER, m_consent_get, NULL, "a user's consent per purpose, with time and source"},
		{"privacy.erase", SX_ROLE_ADMIN, m_erase, NULL, "erase everything stored about a user {user}"},
		{"privacy.export", SX_ROLE_ADMIN, m_export, NULL, "everything stored about a user {user}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	int rc = sx_audit_register_methods(e);
	if (rc < 0)
		return rc;
	if (e->cfg->retention_days > 0) {
		uv_timer_init(e->loop, &sweep_timer);
		uv_timer_start(&sweep_timer, sweep_cb, e->cfg->retention_interval_ms, 0);
		sweep_timer_on = 1;
	}
	return 0;
}

static void stop(struct sx_engine *e)
{
	SX_UNUSED(e);
	if (sweep_timer_on) {
		uv_timer_stop(&sweep_timer);
		uv_close((uv_handle_t *)&sweep_timer, NULL);
		sweep_timer_on = 0;
	}
	eng = NULL;
	consent_version++;
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	msgpack_pack_map(pk, 5);
	sx_pack_kv_bool(pk, "consent_default", e->cfg->consent_default);
	sx_pack_kv_uint(pk, "retention_days", e->cfg->retention_days);
	sx_pack_kv_uint(pk, "retention_swept", swept_total);
	sx_pack_kv_bool(pk, "pseudonymized", e->cfg->pseudonymize_secret[0] != 0);
	sx_pack_kv_uint(pk, "erasers", (uint64_t)nerasers);
}

const struct sx_plugin sx_plugin_privacy = {"privacy", start, stop, info};
