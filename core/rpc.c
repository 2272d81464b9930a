#include "core/rpc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/sx.h"

/* ---- framing ---- */

void sx_frame_scan_reset(struct sx_frame_scan *fs)
{
	fs->pos = 0;
	fs->depth = 0;
	fs->left[0] = 1;
}

static uint64_t rd_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The header of the object at p: its size in bytes, then either a payload
 * length (*payload) or a number of child objects (*children). Returns the
 * header length, 0 if more bytes are needed, -1 if the byte is not MessagePack. */
static inline __attribute__((always_inline)) int header(const uint8_t *p, size_t avail, uint64_t *payload,
						  uint64_t *children)
{
	uint8_t b = p[0];
	*payload = 0;
	*children = 0;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return 1;
	if (b >= 0x80 && b <= 0x8f) {
		*children = 2u * (b & 0x0f);
		return 1;
	}
	if (b >= 0x90 && b <= 0x9f) {
		*children = b & 0x0f;
		return 1;
	}
	if (b >= 0xa0 && b <= 0xbf) {
		*payload = b & 0x1f;
		return 1;
	}
	int lenbytes = 0, hdr;
	switch (b) {
	case 0xc1:
		return -1;
	case 0xc4: case 0xd9: lenbytes = 1; break;
	case 0xc5: case 0xda: lenbytes = 2; break;
	case 0xc6: case 0xdb: lenbytes = 4; break;
	case 0xc7: case 0xc8: case 0xc9:
		lenbytes = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
		hdr = 1 + lenbytes + 1;
		if (avail < (size_t)hdr)
			return 0;
		*payload = rd_be(p + 1, lenbytes);
		return hdr;
	case 0xca: *payload = 4; return 1;
	case 0xcb: *payload = 8; return 1;
	case 0xcc: case 0xd0: *payload = 1; return 1;
	case 0xcd: case 0xd1: *payload = 2; return 1;
	case 0xce: case 0xd2: *payload = 4; return 1;
	case 0xcf: case 0xd3: *payload = 8; return 1;
	case 0xd4: *payload = 2; return 1;
	case 0xd5: *payload = 3; return 1;
	case 0xd6: *payload = 5; return 1;
	case 0xd7: *payload = 9; return 1;
	case 0xd8: *payload = 17; return 1;
	case 0xdc: case 0xdd: case 0xde: case 0xdf: {
		int n = (b == 0xdc || b == 0xde) ? 2 : 4;
		if (avail < (size_t)(1 + n))
			return 0;
		uint64_t c = rd_be(p + 1, n);
		*children = (b >= 0xde) ? 2 * c : c;
		return 1 + n;
	}
	default:
		return -1;
	}
	hdr = 1 + lenbytes;
	if (avail < (size_t)hdr)
		return 0;
	*payload = rd_be(p + 1, lenbytes);
	return hdr;
}

long sx_frame_scan(struct sx_frame_scan *fs, const uint8_t *buf, size_t len, size_t max_frame,
		   int max_depth)
{
	if (max_depth > SX_MAX_DEPTH_LIMIT)
		max_depth = SX_MAX_DEPTH_LIMIT;
	while (fs->depth >= 0) {
		if (fs->left[fs->depth] == 0) {
			fs->depth--;
			continue;
		}
		if (fs->pos >= len)
			return 0;
		uint64_t payload, children;
		int h = header(buf + fs->pos, len - fs->pos, &payload, &children);
		if (h < 0)
			return sx_diag_set(SX_EPARSE, "byte 0x%02x at offset %zu is not MessagePack",
					   buf[fs->pos], fs->pos);
		if (h == 0)
			return 0;
		uint64_t end = fs->pos + (uint64_t)h + payload;
		/* Every child needs at least one byte: a count the frame cannot hold is too big. */
		if (end > max_frame || children > max_frame || end + children > max_frame)
			return sx_diag_set(SX_E2BIG, "frame larger than the limit of %zu bytes", max_frame);
		if (end > len)
			return 0;
		fs->pos = (size_t)end;
		fs->left[fs->depth]--;
		if (children) {
			if (fs->depth + 1 > max_depth)
				return sx_diag_set(SX_ELIMIT, "nesting deeper than the limit of %d", max_depth);
			fs->left[++fs->depth] = children;
		}
	}
	return (long)fs->pos;
}

struct dec {
	const uint8_t *p, *end;
	msgpack_zone *zone;
	int depth;
};

static int decode_obj(struct dec *d, msgpack_object *o);

static int decode_children(struct dec *d, msgpack_object *o, uint64_t n, int map)
{
	if (++d->depth > SX_MAX_DEPTH_LIMIT)
		return SX_ELIMIT;
	if (map) {
		o->type = MSGPACK_OBJECT_MAP;
		o->via.map.size = (uint32_t)n;
		o->via.map.ptr = NULL;
		if (n) {
			o->via.map.ptr = msgpack_zone_malloc(d->zone, n * sizeof(msgpack_object_kv));
			if (!o->via.map.ptr)
				return SX_ENOMEM;
		}
		for (uint64_t i = 0; i < n; i++) {
			int rc;
			if ((rc = decode_obj(d, &o->via.map.ptr[i].key)) ||
			    (rc = decode_obj(d, &o->via.map.ptr[i].val)))
				return rc;
		}
	} else {
		o->type = MSGPACK_OBJECT_ARRAY;
		o->via.array.size = (uint32_t)n;
		o->via.array.ptr = NULL;
		if (n) {
			o->via.array.ptr = msgpack_zone_malloc(d->zone, n * sizeof(msgpack_object));
			if (!o->via.array.ptr)
				return SX_ENOMEM;
		}
		for (uint64_t i = 0; i < n; i++) {
			int rc = decode_obj(d, &o->via.array.ptr[i]);
			if (rc)
				return rc;
		}
	}
	d->depth--;
	return 0;
}

static void set_int(msgpack_object *o, int64_t v)
{
	if (v >= 0) {
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = (uint64_t)v;
	} else {
		o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
		o->via.i64 = v;
	}
}

static int decode_obj(struct dec *d, msgpack_object *o)
{
	if (d->p >= d->end)
		return SX_EPARSE;
	const uint8_t *p = d->p;
	uint8_t b = *p;
	uint64_t payload, children;
	int h = header(p, (size_t)(d->end - p), &payload, &children);
	if (h <= 0 || (uint64_t)(d->end - p) < h + payload)
		return SX_EPARSE;
	d->p += h + payload;
	const uint8_t *pl = p + h;
	if (b <= 0x7f) {
		set_int(o, b);
	} else if (b >= 0xe0) {
		set_int(o, (int8_t)b);
	} else if (b <= 0x8f) {
		return decode_children(d, o, children / 2, 1);
	} else if (b <= 0x9f) {
		return decode_children(d, o, children, 0);
	} else if (b <= 0xbf || b == 0xd9 || b == 0xda || b == 0xdb) {
		o->type = MSGPACK_OBJECT_STR;
		o->via.str.size = (uint32_t)payload;
		o->via.str.ptr = (const char *)pl;
	} else {
		switch (b) {
		case 0xc0: o->type = MSGPACK_OBJECT_NIL; break;
		case 0xc2: case 0xc3:
			o->type = MSGPACK_OBJECT_BOOLEAN;
			o->via.boolean = b == 0xc3;
			break;
		case 0xc4: case 0xc5: case 0xc6:
			o->type = MSGPACK_OBJECT_BIN;
			o->via.bin.size = (uint32_t)payload;
			o->via.bin.ptr = (const char *)pl;
			break;
		case 0xc7: case 0xc8: case 0xc9:
			o->type = MSGPACK_OBJECT_EXT;
			o->via.ext.type = (int8_t)p[h - 1];
			o->via.ext.size = (uint32_t)payload;
			o->via.ext.ptr = (const char *)pl;
			break;
		case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
			o->type = MSGPACK_OBJECT_EXT;
			o->via.ext.type = (int8_t)pl[0];
			o->via.ext.size = (uint32_t)payload - 1;
			o->via.ext.ptr = (const char *)pl + 1;
			break;
		case 0xca: {
			uint32_t u = (uint32_t)rd_be(pl, 4);
			float f;
			memcpy(&f, &u, 4);
			o->type = MSGPACK_OBJECT_FLOAT32;
			o->via.f64 = f;
			break;
		}
		case 0xcb: {
			uint64_t u = rd_be(pl, 8);
			double f;
			memcpy(&f, &u, 8);
			o->type = MSGPACK_OBJECT_FLOAT64;
			o->via.f64 = f;
			break;
		}
		case 0xcc: case 0xcd: case 0xce: case 0xcf:
			o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
			o->via.u64 = rd_be(pl, (int)payload);
			break;
		case 0xd0: set_int(o, (int8_t)pl[0]); break;
		case 0xd1: set_int(o, (int16_t)rd_be(pl, 2)); break;
		case 0xd2: set_int(o, (int32_t)rd_be(pl, 4)); break;
		case 0xd3: set_int(o, (int64_t)rd_be(pl, 8)); break;
		case 0xdc: case 0xdd: return decode_children(d, o, children, 0);
		case 0xde: case 0xdf: return decode_children(d, o, children / 2, 1);
		default: return SX_EPARSE;
		}
	}
	return 0;
}

int sx_frame_decode(const uint8_t *buf, size_t len, msgpack_zone *zone, msgpack_object *out)
{
	struct dec d = {buf, buf + len, zone, 0};
	int rc = decode_obj(&d, out);
	if (rc == 0 && d.p != d.end)
		rc = SX_EPARSE;
	if (rc)
		return sx_diag_set(rc, "malformed MessagePack frame");
	return 0;
}

int sx_utf8_valid(const char *str, size_t len)
{
	const uint8_t *s = (const uint8_t *)str, *e = s + len;
	while (s < e) {
		uint8_t c = *s;
		int n;
		uint32_t cp;
		if (c < 0x80) {
			s++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (e - s <= n)
			return 0;
		for (int i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		s += n + 1;
	}
	return 1;
}

/* ---- roles ---- */

static const char *const role_names[] = {"none", "reader", "writer", "admin"};

const char *sx_role_name(int role)
{
	return role >= 0 && role <= SX_ROLE_ADMIN ? role_names[role] : "none";
}

int sx_role_parse(const char *s)
{
	for (int i = 1; i <= SX_ROLE_ADMIN; i++)
		if (strcmp(s, role_names[i]) == 0)
			return i;
	return -1;
}

/* ---- method table ---- */

struct sx_rpc {
	struct sx_method *m;
	size_t *len; /* strlen of each name, compared first */
	size_t n, cap;
	/* Open addressing over m: slot = index + 1, 0 empty; at most half full. Every request
	 * looks its method up here, and the table holds a hundred names. */
	uint32_t *slot;
	size_t nslot;
	sx_rpc_fallback_fn fallback;
	void *fallback_ud;
};

struct sx_rpc *sx_rpc_new(void) { return calloc(1, sizeof(struct sx_rpc)); }

void sx_rpc_free(struct sx_rpc *rpc)
{
	if (rpc) {
		free(rpc->m);
		free(rpc->len);
		free(rpc->slot);
	}
	free(rpc);
}

static size_t name_slot(const struct sx_rpc *rpc, const char *name, size_t len)
{
	return (size_t)XXH3_64bits(name, len) & (rpc->nslot - 1);
}

const struct sx_method *sx_rpc_find(const struct sx_rpc *rpc, const char *name, size_t len)
{
	if (!rpc->nslot)
		return NULL;
	for (size_t h = name_slot(rpc, name, len);; h = (h + 1) & (rpc->nslot - 1)) {
		uint32_t s = rpc->slot[h];
		if (!s)
			return NULL;
		if (rpc->len[s - 1] == len && memcmp(rpc->m[s - 1].name, name, len) == 0)
			return &rpc->m[s - 1];
	}
}

/* Rebuilds the index for cap methods (registration is rare: at start and on plugin load). */
static int index_methods(struct sx_rpc *rpc, size_t cap)
{
	size_t nslot = 2 * cap;
	uint32_t *slot = calloc(nslot, sizeof(*slot));
	if (!slot)
		return SX_ENOMEM;
	free(rpc->slot);
	rpc->slot = slot;
	rpc->nslot = nslot;
	for (size_t i = 0; i < rpc->n; i++) {
		size_t h = name_slot(rpc, rpc->m[i].name, rpc->len[i]);
		while (slot[h])
			h = (h + 1) & (nslot - 1);
		slot[h] = (uint32_t)i + 1;
	}
	return 0;
}

int sx_rpc_register(struct sx_rpc *rpc, const struct sx_method *m)
{
	struct sx_method *old = (struct sx_method *)sx_rpc_find(rpc, m->name, strlen(m->name));
	if (old) {
		*old = *m;
		return 0;
	}
	if (rpc->n == rpc->cap) {
		size_t cap = rpc->cap ? rpc->cap * 2 : 32;
		struct sx_method *nm = realloc(rpc->m, cap * sizeof(*nm));
		if (!nm)
			return SX_ENOMEM;
		rpc->m = nm;
		size_t *nl = realloc(rpc->len, cap * sizeof(*nl));
		if (!nl)
			return SX_ENOMEM;
		rpc->len = nl;
		rpc->cap = cap;
	}
	rpc->len[rpc->n] = strlen(m->name);
	rpc->m[rpc->n++] = *m;
	int rc = index_methods(rpc, rpc->cap);
	if (rc < 0)
		rpc->n--; /* not findable, so not registered */
	return rc;
}

void sx_rpc_set_fallback(struct sx_rpc *rpc, sx_rpc_fallback_fn fn, void *ud)
{
	rpc->fallback = fn;
	rpc->fallback_ud = ud;
}

int sx_rpc_resolve(const struct sx_rpc *rpc, const char *name, size_t len, struct sx_method *out)
{
	const struct sx_method *m = sx_rpc_find(rpc, name, len);
	if (m) {
		*out = *m;
		return 0;
	}
	if (rpc->fallback && rpc->fallback(name, len, out, rpc->fallback_ud) == 0)
		return 0;
	return sx_diag_set(SX_ENOMETHOD, "no method '%.*s'", (int)(len > 100 ? 100 : len), name);
}

size_t sx_rpc_count(const struct sx_rpc *rpc) { return rpc->n; }
const struct sx_method *sx_rpc_at(const struct sx_rpc *rpc, size_t i) { return &rpc->m[i]; }

/* ---- packing ---- */

void sx_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void sx_pack_str(msgpack_packer *pk, const char *s) { sx_pack_strn(pk, s, strlen(s)); }
void sx_pack_key(msgpack_packer *pk, const char *k) { sx_pack_str(pk, k); }

void sx_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	sx_pack_str(pk, k);
	if (v)
		sx_pack_str(pk, v);
	else
		msgpack_pack_nil(pk);
}

void sx_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
	sx_pack_str(pk, k);
	msgpack_pack_int64(pk, v);
}

void sx_pack_kv_uint(msgpack_packer *pk, const char *k, uint64_t v)
{
	sx_pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

void sx_pack_kv_double(msgpack_packer *pk, const char *k, double v)
{
	sx_pack_str(pk, k);
	msgpack_pack_double(pk, v);
}

void sx_pack_kv_bool(msgpack_packer *pk, const char *k, int v)
{
	sx_pack_str(pk, k);
	v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

void sx_pack_error(msgpack_packer *pk, int rc, const char *message)
{
	msgpack_pack_map(pk, 2);
	sx_pack_kv_str(pk, "code", sx_error_code(rc));
	sx_pack_kv_str(pk, "message", message && *message ? message : sx_error_code(rc));
}

void sx_pack_object(msgpack_packer *pk, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: msgpack_pack_nil(pk); break;
	case MSGPACK_OBJECT_BOOLEAN: o->via.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: msgpack_pack_uint64(pk, o->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: msgpack_pack_int64(pk, o->via.i64); break;
	case MSGPACK_OBJECT_FLOAT32: msgpack_pack_float(pk, (float)o->via.f64); break;
	case MSGPACK_OBJECT_FLOAT64: msgpack_pack_double(pk, o->via.f64); break;
	case MSGPACK_OBJECT_STR: sx_pack_strn(pk, o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN:
		msgpack_pack_bin(pk, o->via.bin.size);
		msgpack_pack_bin_body(pk, o->via.bin.ptr, o->via.bin.size);
		break;
	case MSGPACK_OBJECT_EXT:
		msgpack_pack_ext(pk, o->via.ext.size, o->via.ext.type);
		msgpack_pack_ext_body(pk, o->via.ext.ptr, o->via.ext.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		msgpack_pack_array(pk, o->via.array.size);
		for (uint32_t i = 0; i < o->via.array.size; i++)
			sx_pack_object(pk, &o->via.array.ptr[i]);
		break;
	case MSGPACK_OBJECT_MAP:
		msgpack_pack_map(pk, o->via.map.size);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			sx_pack_object(pk, &o->via.map.ptr[i].key);
			sx_pack_object(pk, &o->via.map.ptr[i].val);
		}
		break;
	default: msgpack_pack_nil(pk); break;
	}
}

/* ---- arguments ---- */

int sx_obj_streq(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

const msgpack_object *sx_arg(const msgpack_object *args, const char *key)
{
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < args->via.map.size; i++)
		if (sx_obj_streq(&args->via.map.ptr[i].key, key))
			return args->via.map.ptr[i].val.type == MSGPACK_OBJECT_NIL ? NULL
										 : &args->via.map.ptr[i].val;
	return NULL;
}

static int missing(const char *key, int required)
{
	return required ? sx_diag_set(SX_EINVAL, "argument '%s' is required", key) : 0;
}

static int wrong(const char *key, const char *what)
{
	return sx_diag_set(SX_EINVAL, "argument '%s' must be %s", key, what);
}

int sx_arg_str(const msgpack_object *args, const char *key, int required, const char **s, size_t *len)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	if (o->type != MSGPACK_OBJECT_STR)
		return wrong(key, "a string");
	*s = o->via.str.ptr;
	if (len)
		*len = o->via.str.size;
	return 0;
}

int sx_arg_cstr(const msgpack_object *args, const char *key, int required, char *buf, size_t size)
{
	const char *s;
	size_t n;
	int rc = sx_arg_str(args, key, required, &s, &n);
	if (rc || !sx_arg(args, key))
		return rc;
	if (n >= size)
		return sx_diag_set(SX_EINVAL, "argument '%s' is longer than %zu bytes", key, size - 1);
	if (memchr(s, 0, n))
		return wrong(key, "a string without NUL bytes");
	memcpy(buf, s, n);
	buf[n] = '\0';
	return 0;
}

int sx_arg_int(const msgpack_object *args, const char *key, int required, int64_t *out)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > INT64_MAX)
			return wrong(key, "an integer within int64");
		*out = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = o->via.i64;
	} else if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) &&
		   isfinite(o->via.f64) && o->via.f64 == floor(o->via.f64) && fabs(o->via.f64) < 9.0e15) {
		*out = (int64_t)o->via.f64;
	} else {
		return wrong(key, "an integer");
	}
	return 0;
}

int sx_arg_num(const msgpack_object *args, const char *key, int required, double *out)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return wrong(key, "a finite number");
		*out = o->via.f64;
		break;
	default: return wrong(key, "a number");
	}
	return 0;
}

int sx_arg_bool(const msgpack_object *args, const char *key, int required, int *out)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return wrong(key, "a boolean");
	*out = o->via.boolean;
	return 0;
}

int sx_arg_map(const msgpack_object *args, const char *key, int required, const msgpack_object **out)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	if (o->type != MSGPACK_OBJECT_MAP)
		return wrong(key, "a map");
	*out = o;
	return 0;
}

int sx_arg_array(const msgpack_object *args, const char *key, int required, const msgpack_object **out)
{
	const msgpack_object *o = sx_arg(args, key);
	if (!o)
		return missing(key, required);
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return wrong(key, "an array");
	*out = o;
	return 0;
}

int sx_arg_only(const msgpack_object *args, const char *const *known)
{
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return 0;
	for (uint32_t i = 0; i < args->via.map.size; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		int ok = 0;
		for (const char *const *n = known; *n && !ok; n++)
			ok = sx_obj_streq(k, *n);
		if (!ok) {
			if (k->type != MSGPACK_OBJECT_STR)
				return sx_diag_set(SX_EINVAL, "argument names must be strings");
			return sx_diag_set(SX_EINVAL, "unknown argument '%.*s'",
					   (int)(k->via.str.size > 64 ? 64 : k->via.str.size), k->via.str.ptr);
		}
	}
	return 0;
}
