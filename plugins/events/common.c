/* The events plugin's shared pieces: UTC time arithmetic, key layouts, counter
 * records, reads that work on the loop thread or in a read transaction, and
 * validation of user-supplied values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "store/store.h"

/* ---- time ---- */

int64_t sx__ev_gran_ms(int gran)
{
	switch (gran) {
	case SX_EV_MINUTE: return SX_EV_MIN_MS;
	case SX_EV_HOUR: return SX_EV_HOUR_MS;
	case SX_EV_DAY: return SX_EV_DAY_MS;
	}
	return 0;
}

int64_t sx__ev_floor(int64_t t, int64_t step)
{
	int64_t q = t / step;
	if (t % step < 0)
		q--;
	return q * step;
}

/* Days since 1970-01-01 <-> civil date (proleptic Gregorian), after H. Hinnant. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

int64_t sx__ev_period_start(int period, int64_t t)
{
	int64_t day = sx__ev_floor(t, SX_EV_DAY_MS) / SX_EV_DAY_MS;
	switch (period) {
	case SX_EV_PDAY: return day * SX_EV_DAY_MS;
	case SX_EV_PWEEK: /* 1970-01-01 was a Thursday: Mondays are day 4 mod 7 */
		return (sx__ev_floor(day - 4, 7) + 4) * SX_EV_DAY_MS;
	case SX_EV_PMONTH: {
		int64_t y;
		int m, d;
		civil_from_days(day, &y, &m, &d);
		return days_from_civil(y, m, 1) * SX_EV_DAY_MS;
	}
	}
	return t;
}

int64_t sx__ev_period_add(int period, int64_t start, int n)
{
	switch (period) {
	case SX_EV_PDAY: return start + n * SX_EV_DAY_MS;
	case SX_EV_PWEEK: return start + n * SX_EV_WEEK_MS;
	case SX_EV_PMONTH: {
		int64_t y;
		int m, d;
		civil_from_days(sx__ev_floor(start, SX_EV_DAY_MS) / SX_EV_DAY_MS, &y, &m, &d);
		int64_t mi = y * 12 + (m - 1) + n;
		int64_t ny = mi >= 0 ? mi / 12 : (mi - 11) / 12;
		return days_from_civil(ny, (int)(mi - ny * 12) + 1, 1) * SX_EV_DAY_MS;
	}
	}
	return start;
}

static int streqn(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

int sx__ev_period_parse(const char *s, size_t len)
{
	if (streqn(s, len, "day"))
		return SX_EV_PDAY;
	if (streqn(s, len, "week"))
		return SX_EV_PWEEK;
	if (streqn(s, len, "month"))
		return SX_EV_PMONTH;
	return -1;
}

int sx__ev_gran_parse(const char *s, size_t len)
{
	if (streqn(s, len, "minute"))
		return SX_EV_MINUTE;
	if (streqn(s, len, "hour"))
		return SX_EV_HOUR;
	if (streqn(s, len, "day"))
		return SX_EV_DAY;
	return 0;
}

/* ---- keys ---- */

void sx__ev_event_key(uint8_t *k, uint32_t user, int64_t time, uint64_t seq)
{
	sx_be32(k, user);
	sx_be64(k + 4, (uint64_t)time);
	sx_be64(k + 12, seq);
}

void sx__ev_time_key(uint8_t *k, int64_t time, uint64_t seq)
{
	sx_be64(k, (uint64_t)time);
	sx_be64(k + 8, seq);
}

size_t sx__ev_metric_prefix(uint8_t *k, int gran, const char *event, size_t elen, const char *dim,
			    size_t dlen)
{
	if (4 + elen + dlen + 8 > 511)
		return 0;
	size_t n = 0;
	k[n++] = 'M';
	k[n++] = (uint8_t)gran;
	memcpy(k + n, event, elen);
	n += elen;
	k[n++] = 0;
	if (dlen)
		memcpy(k + n, dim, dlen);
	n += dlen;
	k[n++] = 0;
	return n;
}

size_t sx__ev_metric_key(uint8_t *k, int gran, const char *event, size_t elen, const char *dim,
			 size_t dlen, int64_t bucket, const char *val, size_t vlen)
{
	size_t n = sx__ev_metric_prefix(k, gran, event, elen, dim, dlen);
	if (!n || n + 8 + vlen > 511)
		return 0;
	sx_be64(k + n, (uint64_t)bucket);
	n += 8;
	if (vlen)
		memcpy(k + n, val, vlen);
	return n + vlen;
}

/* ---- records ---- */

int sx__ev_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *out)
{
	size_t off = 0;
	msgpack_unpack_return r = msgpack_unpack(data, len, &off, zone, out);
	if (r != MSGPACK_UNPACK_SUCCESS || off != len)
		return sx_diag_set(SX_ECORRUPT, "a stored events record does not decode");
	return 0;
}

const msgpack_object *sx__ev_map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (sx_obj_streq(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

roaring_bitmap_t *sx__ev_bitmap_decode(const void *data, size_t len)
{
	roaring_bitmap_t *b = len ? roaring_bitmap_portable_deserialize_safe(data, len) : NULL;
	if (!b || roaring_bitmap_portable_size_in_bytes(b) != len) {
		if (b)
			roaring_bitmap_free(b);
		sx_diag_set(SX_ECORRUPT, "a stored user bitmap does not decode");
		return NULL;
	}
	return b;
}

int sx__ev_bitmap_encode(const roaring_bitmap_t *b, msgpack_sbuffer *sb)
{
	msgpack_sbuffer_clear(sb);
	size_t n = roaring_bitmap_portable_size_in_bytes(b);
	char *p = malloc(n);
	if (!p)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	roaring_bitmap_portable_serialize(b, p);
	msgpack_sbuffer_write(sb, p, n);
	free(p);
	return 0;
}

static uint32_t le16(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p)
{
	return le16(p) | le16(p + 2) << 16;
}

/* CRoaring's SERIAL_COOKIE: the container count is in the cookie, run flags follow */
#define SX_EV_ROARING_RUN_COOKIE 12347

int sx__ev_bitmap_card(const void *data, size_t len, uint64_t *card)
{
	const uint8_t *p = data;
	*card = 0;
	if (!len)
		return 0;
	/* portable format: cookie, [run flags | container count], then (key, card - 1) per container */
	if (roaring_bitmap_portable_deserialize_size(data, len) != len)
		return sx_diag_set(SX_ECORRUPT, "a stored user bitmap does not decode");
	uint32_t cookie = le32(p), n;
	size_t off;
	if ((cookie & 0xffff) == SX_EV_ROARING_RUN_COOKIE) {
		n = (cookie >> 16) + 1;
		off = 4 + (n + 7) / 8;
	} else {
		n = le32(p + 4);
		off = 8;
	}
	if (off + (size_t)n * 4 > len)
		return sx_diag_set(SX_ECORRUPT, "a stored user bitmap does not decode");
	uint64_t c = 0;
	for (uint32_t i = 0; i < n; i++)
		c += le16(p + off + (size_t)i * 4 + 2) + 1;
	*card = c;
	return 0;
}

struct rd {
	const uint8_t *p, *end;
};

static int rd_be(struct rd *r, size_t n, uint64_t *v)
{
	if ((size_t)(r->end - r->p) < n)
		return -1;
	*v = 0;
	for (size_t i = 0; i < n; i++)
		*v = *v << 8 | r->p[i];
	r->p += n;
	return 0;
}

/* One MessagePack scalar of a counter record: u is its value if it is a
 * non-negative integer (else 0), d its value as a number (nil, booleans: 0). */
static int rd_num(struct rd *r, uint64_t *u, double *d)
{
	uint64_t v;
	if (r->p >= r->end)
		return -1;
	uint8_t t = *r->p++;
	*u = 0, *d = 0;
	if (t <= 0x7f) {
		*u = t, *d = t;
		return 0;
	}
	if (t >= 0xe0) {
		*d = (int8_t)t;
		return 0;
	}
	switch (t) {
	case 0xc0: case 0xc2: case 0xc3: return 0;
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		if (rd_be(r, (size_t)1 << (t - 0xcc), &v) < 0)
			return -1;
		*u = v, *d = (double)v;
		return 0;
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
		size_t bytes = (size_t)1 << (t - 0xd0);
		if (rd_be(r, bytes, &v) < 0)
			return -1;
		int64_t s = bytes == 1 ? (int8_t)v : bytes == 2 ? (int16_t)v : bytes == 4 ? (int32_t)v : (int64_t)v;
		if (s >= 0)
			*u = (uint64_t)s;
		*d = (double)s;
		return 0;
	}
	case 0xca: {
		if (rd_be(r, 4, &v) < 0)
			return -1;
		uint32_t w = (uint32_t)v;
		float f;
		memcpy(&f, &w, 4);
		*d = f;
		return 0;
	}
	case 0xcb:
		if (rd_be(r, 8, &v) < 0)
			return -1;
		memcpy(d, &v, 8);
		return 0;
	}
	return -1;
}

int sx__ev_counter_peek(const void *data, size_t len, struct sx_ev_record *rec)
{
	struct rd r = {data, (const uint8_t *)data + len};
	uint64_t n, u;
	double d;
	memset(rec, 0, sizeof(*rec));
	if (r.p == r.end)
		goto bad;
	if (*r.p == 0x94)
		r.p++, n = 4;
	else if (*r.p == 0xdc || *r.p == 0xdd) {
		r.p++;
		if (rd_be(&r, r.p[-1] == 0xdc ? 2 : 4, &n) < 0)
			goto bad;
	} else
		goto bad;
	if (n != 4 || rd_num(&r, &rec->count, &d) < 0 || rd_num(&r, &u, &rec->sum) < 0 ||
	    rd_num(&r, &rec->nsum, &d) < 0 || r.p >= r.end)
		goto bad;
	uint8_t t = *r.p++;
	if (t < 0xc4 || t > 0xc6 || rd_be(&r, (size_t)1 << (t - 0xc4), &n) < 0 || n != (size_t)(r.end - r.p))
		goto bad;
	rec->bitmap = r.p, rec->blen = (size_t)n;
	return sx__ev_bitmap_card(rec->bitmap, rec->blen, &rec->users);
bad:
	return sx_diag_set(SX_ECORRUPT, "a stored counter record does not decode");
}

int sx__ev_counter_merge(struct sx_ev_counter *c, const void *data, size_t len)
{
	struct sx_ev_record r;
	int rc = sx__ev_counter_peek(data, len, &r);
	if (rc < 0)
		return rc;
	c->count += r.count;
	c->sum += r.sum;
	c->nsum += r.nsum;
	if (!r.blen)
		return 0;
	roaring_bitmap_t *b = sx__ev_bitmap_decode(r.bitmap, r.blen);
	if (!b)
		return SX_ECORRUPT;
	if (!c->users)
		c->users = b;
	else {
		roaring_bitmap_or_inplace(c->users, b);
		roaring_bitmap_free(b);
	}
	return 0;
}

int sx__ev_counter_encode(const struct sx_ev_counter *c, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_sbuffer_clear(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, c->count);
	msgpack_pack_double(&pk, c->sum);
	msgpack_pack_uint64(&pk, c->nsum);
	if (!c->users || roaring_bitmap_is_empty(c->users)) {
		msgpack_pack_bin(&pk, 0);
		return 0;
	}
	roaring_bitmap_run_optimize(c->users);
	size_t n = roaring_bitmap_portable_size_in_bytes(c->users);
	msgpack_pack_bin(&pk, n);
	/* serialized in place, not through a copy */
	if (sb->alloc - sb->size < n) {
		size_t cap = sb->size + n + 64;
		char *d = realloc(sb->data, cap);
		if (!d)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		sb->data = d, sb->alloc = cap;
	}
	roaring_bitmap_portable_serialize(c->users, sb->data + sb->size);
	sb->size += n;
	return 0;
}

/* ---- reads ---- */

static int keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c ? c : (alen > blen) - (alen < blen);
}

int sx__ev_get(MDB_txn *txn, int table, const void *key, size_t klen, struct sx_val *out)
{
	if (!txn)
		return sx_store_get(sx__ev_eng->store, table, key, klen, out);
	MDB_val k = {klen, (void *)key}, v;
	int rc = mdb_get(txn, sx_store_dbi(sx__ev_eng->store, table), &k, &v);
	if (rc == MDB_NOTFOUND)
		return SX_ENOENT;
	if (rc)
		return sx_diag_set(SX_EIO, "store read: %s", mdb_strerror(rc));
	out->data = v.mv_data;
	out->len = v.mv_size;
	return 0;
}

int sx__ev_scan(MDB_txn *txn, int table, const void *lo, size_t lolen, const void *hi, size_t hilen,
		int reverse, sx__ev_scan_cb cb, void *ud)
{
	if (!txn)
		return sx_store_scan(sx__ev_eng->store, table, lo, lolen, hi, hilen, reverse, cb, ud);
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, sx_store_dbi(sx__ev_eng->store, table), &cur);
	if (rc)
		return sx_diag_set(SX_EIO, "store cursor: %s", mdb_strerror(rc));
	MDB_val k, v;
	if (!reverse) {
		k.mv_data = (void *)lo, k.mv_size = lolen;
		rc = lo ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	} else if (hi) {
		k.mv_data = (void *)hi, k.mv_size = hilen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		rc = rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
					: mdb_cursor_get(cur, &k, &v, MDB_PREV);
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	}
	int out = 0;
	while (rc == 0) {
		if (!reverse && hi && keycmp(k.mv_data, k.mv_size, hi, hilen) >= 0)
			break;
		if (reverse && lo && keycmp(k.mv_data, k.mv_size, lo, lolen) < 0)
			break;
		if (!reverse || !hi || keycmp(k.mv_data, k.mv_size, hi, hilen) < 0) {
			struct sx_val kv = {k.mv_data, k.mv_size}, vv = {v.mv_data, v.mv_size};
			out = cb(&kv, &vv, ud);
			if (out)
				break;
		}
		rc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND && out == 0)
		return sx_diag_set(SX_EIO, "store scan: %s", mdb_strerror(rc));
	return out < 0 ? out : 0;
}

/* ---- series bitmaps ---- */

int sx__ev_bitmap_or_lazy(roaring_bitmap_t *acc, const void *data, size_t len)
{
	if (!len)
		return 0;
	roaring_bitmap_t *b = sx__ev_bitmap_decode(data, len);
	if (!b)
		return SX_ECORRUPT;
	roaring_bitmap_lazy_or_inplace(acc, b, true);
	roaring_bitmap_free(b);
	return 0;
}

static int scan_range(MDB_txn *txn, int gran, const char *event, size_t elen, const char *dim, size_t dlen,
		      int64_t from, int64_t to, sx__ev_scan_cb cb, void *ud)
{
	uint8_t lo[512], hi[512];
	if (from >= to)
		return 0;
	size_t p = sx__ev_metric_prefix(lo, gran, event, elen, dim, dlen);
	if (!p)
		return sx_diag_set(SX_EINVAL, "event or dimension name too long");
	memcpy(hi, lo, p);
	sx_be64(lo + p, (uint64_t)from);
	sx_be64(hi + p, (uint64_t)to);
	return sx__ev_scan(txn, SX_T_COUNTERS, lo, p + 8, hi, p + 8, 0, cb, ud);
}

int sx__ev_series_cover(MDB_txn *txn, const char *event, size_t elen, const char *dim, size_t dlen,
			int64_t from, int64_t to, sx__ev_scan_cb cb, void *ud)
{
	from = sx__ev_floor(from, SX_EV_MIN_MS);
	to = sx__ev_floor(to, SX_EV_MIN_MS);
	if (from >= to)
		return 0;
	/* [from, h1) minutes, [h1, d1) hours, [d1, d2) days, [d2, h2) hours, [h2, to) minutes */
	int64_t h1 = -sx__ev_floor(-from, SX_EV_HOUR_MS), h2 = sx__ev_floor(to, SX_EV_HOUR_MS);
	if (h1 >= h2)
		return scan_range(txn, SX_EV_MINUTE, event, elen, dim, dlen, from, to, cb, ud);
	int64_t d1 = -sx__ev_floor(-h1, SX_EV_DAY_MS), d2 = sx__ev_floor(h2, SX_EV_DAY_MS);
	int rc = scan_range(txn, SX_EV_MINUTE, event, elen, dim, dlen, from, h1, cb, ud);
	if (rc == 0 && d1 >= d2) {
		rc = scan_range(txn, SX_EV_HOUR, event, elen, dim, dlen, h1, h2, cb, ud);
	} else if (rc == 0) {
		rc = scan_range(txn, SX_EV_HOUR, event, elen, dim, dlen, h1, d1, cb, ud);
		if (rc == 0)
			rc = scan_range(txn, SX_EV_DAY, event, elen, dim, dlen, d1, d2, cb, ud);
		if (rc == 0)
			rc = scan_range(txn, SX_EV_HOUR, event, elen, dim, dlen, d2, h2, cb, ud);
	}
	if (rc == 0)
		rc = scan_range(txn, SX_EV_MINUTE, event, elen, dim, dlen, h2, to, cb, ud);
	return rc;
}

struct or_acc {
	roaring_bitmap_t *acc;
	size_t voff; /* the value's offset in a key */
	const char *val;
	size_t vlen;
};

static int or_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct or_acc *a = ud;
	if (key->len != a->voff + a->vlen || (a->vlen && memcmp((const uint8_t *)key->data + a->voff, a->val, a->vlen)))
		return 0;
	struct sx_ev_record r;
	int rc = sx__ev_counter_peek(val->data, val->len, &r);
	return rc < 0 ? rc : sx__ev_bitmap_or_lazy(a->acc, r.bitmap, r.blen);
}

roaring_bitmap_t *sx__ev_series_users(MDB_txn *txn, const char *event, size_t elen, const char *dim,
				      size_t dlen, const char *val, size_t vlen, int64_t from,
				      int64_t to)
{
	struct or_acc a = {roaring_bitmap_create(), SX_EV_METRIC_VALUE_OFF(elen, dlen), val, vlen};
	if (!a.acc) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if (sx__ev_series_cover(txn, event, elen, dim, dlen, from, to, or_cb, &a) < 0) {
		roaring_bitmap_free(a.acc);
		return NULL;
	}
	roaring_bitmap_repair_after_lazy(a.acc);
	return a.acc;
}

/* ---- validation ---- */

static int check(const msgpack_object *o, const char *what, int depth, size_t *bytes)
{
	*bytes += 9;
	switch (o->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return sx_diag_set(SX_EINVAL, "%s holds NaN or an infinity", what);
		return 0;
	case MSGPACK_OBJECT_STR:
		*bytes += o->via.str.size;
		if (!sx_utf8_valid(o->via.str.ptr, o->via.str.size))
			return sx_diag_set(SX_EINVAL, "%s holds a string that is not valid UTF-8", what);
		return 0;
	case MSGPACK_OBJECT_BIN: *bytes += o->via.bin.size; return 0;
	case MSGPACK_OBJECT_EXT: return sx_diag_set(SX_EINVAL, "%s holds a MessagePack extension", what);
	case MSGPACK_OBJECT_ARRAY:
		if (depth >= SX_EV_NEST_MAX)
			return sx_diag_set(SX_EINVAL, "%s nests deeper than %d", what, SX_EV_NEST_MAX);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			int rc = check(&o->via.array.ptr[i], what, depth + 1, bytes);
			if (rc)
				return rc;
		}
		return 0;
	case MSGPACK_OBJECT_MAP:
		if (depth >= SX_EV_NEST_MAX)
			return sx_diag_set(SX_EINVAL, "%s nests deeper than %d", what, SX_EV_NEST_MAX);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			if (kv->key.type != MSGPACK_OBJECT_STR)
				return sx_diag_set(SX_EINVAL, "%s has a key that is not a string", what);
			int rc = check(&kv->key, what, depth + 1, bytes);
			if (rc == 0)
				rc = check(&kv->val, what, depth + 1, bytes);
			if (rc)
				return rc;
		}
		return 0;
	default: return 0;
	}
}

int sx__ev_check_value(const msgpack_object *o, const char *what, size_t max_bytes)
{
	size_t bytes = 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "%s must be a map", what);
	int rc = check(o, what, 0, &bytes);
	if (rc == 0 && bytes > max_bytes)
		return sx_diag_set(SX_EINVAL, "%s is larger than %zu bytes", what, max_bytes);
	return rc;
}

int sx__ev_check_id(const msgpack_object *o, const char *what)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "'%s' is required", what);
	if (o->type != MSGPACK_OBJECT_STR)
		return sx_diag_set(SX_EINVAL, "'%s' must be a string", what);
	if (o->via.str.size == 0 || o->via.str.size > SX_EVENTS_ID_MAX)
		return sx_diag_set(SX_EINVAL, "'%s' must be 1 to %d bytes", what, SX_EVENTS_ID_MAX);
	if (!sx_utf8_valid(o->via.str.ptr, o->via.str.size) || memchr(o->via.str.ptr, 0, o->via.str.size))
		return sx_diag_set(SX_EINVAL, "'%s' must be UTF-8 without NUL bytes", what);
	return 0;
}
