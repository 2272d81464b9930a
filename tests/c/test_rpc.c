/* MessagePack-RPC framing, decoding, UTF-8 and argument helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "core/rpc.h"
#include "core/sx.h"

#define MAX_FRAME (1 << 20)

static long scan_all(const uint8_t *buf, size_t len, int depth)
{
	struct sx_frame_scan fs;
	sx_frame_scan_reset(&fs);
	return sx_frame_scan(&fs, buf, len, MAX_FRAME, depth);
}

static void pack_request(msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_uint32(&pk, 4000000000u);
	sx_pack_str(&pk, "echo.all");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 9);
	sx_pack_kv_int(&pk, "neg", -123456789012LL);
	sx_pack_kv_uint(&pk, "big", UINT64_MAX);
	sx_pack_kv_double(&pk, "pi", 3.14159);
	sx_pack_str(&pk, "f32");
	msgpack_pack_float(&pk, 1.5f);
	sx_pack_kv_bool(&pk, "yes", 1);
	sx_pack_kv_str(&pk, "nil", NULL);
	sx_pack_str(&pk, "bin");
	msgpack_pack_bin(&pk, 3);
	msgpack_pack_bin_body(&pk, "\0\1\2", 3);
	sx_pack_str(&pk, "ext");
	msgpack_pack_ext(&pk, 4, 7);
	msgpack_pack_ext_body(&pk, "abcd", 4);
	sx_pack_str(&pk, "list");
	msgpack_pack_array(&pk, 300);
	for (int i = 0; i < 300; i++)
		msgpack_pack_int(&pk, i - 150);
}

static void test_complete_and_split_frames(void **state)
{
	SX_UNUSED(state);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	pack_request(&sb);
	size_t len = sb.size;
	/* Two frames back to back: the scan stops at the end of the first. */
	msgpack_sbuffer_write(&sb, sb.data, len);
	assert_int_equal(scan_all((uint8_t *)sb.data, sb.size, 64), (long)len);

	/* Byte by byte, resumable: 0 until the last byte, then the length. */
	struct sx_frame_scan fs;
	sx_frame_scan_reset(&fs);
	for (size_t i = 1; i < len; i++)
		assert_int_equal(sx_frame_scan(&fs, (uint8_t *)sb.data, i, MAX_FRAME, 64), 0);
	assert_int_equal(sx_frame_scan(&fs, (uint8_t *)sb.data, len, MAX_FRAME, 64), (long)len);
	msgpack_sbuffer_destroy(&sb);
}

static void test_decode_matches_msgpack_c(void **state)
{
	SX_UNUSED(state);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	pack_request(&sb);
	msgpack_zone zone;
	msgpack_zone_init(&zone, 1024);
	msgpack_object mine;
	assert_int_equal(sx_frame_decode((uint8_t *)sb.data, sb.size, &zone, &mine), 0);

	msgpack_unpacked ref;
	msgpack_unpacked_init(&ref);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&ref, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	assert_true(msgpack_object_equal(mine, ref.data));

	/* Re-packing what we decoded gives the same bytes. */
	msgpack_sbuffer again;
	msgpack_packer pk;
	msgpack_sbuffer_init(&again);
	msgpack_packer_init(&pk, &again, msgpack_sbuffer_write);
	sx_pack_object(&pk, &mine);
	assert_int_equal(again.size, sb.size);
	assert_memory_equal(again.data, sb.data, sb.size);

	const msgpack_object *args = &mine.via.array.ptr[3].via.array.ptr[0];
	int64_t i64;
	double d;
	int b;
	const char *s;
	size_t n;
	assert_int_equal(sx_arg_int(args, "neg", 1, &i64), 0);
	assert_int_equal(i64, -123456789012LL);
	assert_int_equal(sx_arg_int(args, "big", 1, &i64), SX_EINVAL); /* beyond int64 */
	assert_int_equal(sx_arg_num(args, "pi", 1, &d), 0);
	assert_true(d == 3.14159);
	assert_int_equal(sx_arg_num(args, "f32", 1, &d), 0);
	assert_true(d == 1.5);
	assert_int_equal(sx_arg_bool(args, "yes", 1, &b), 0);
	assert_int_equal(b, 1);
	assert_int_equal(sx_arg_str(args, "nil", 1, &s, &n), SX_EINVAL); /* nil counts as missing */
	assert_int_equal(sx_arg_str(args, "nil", 0, &s, &n), 0);
	assert_int_equal(sx_arg_str(args, "pi", 1, &s, &n), SX_EINVAL);
	assert_string_equal(sx_diag_last(), "argument 'pi' must be a string");
	const msgpack_object *list;
	assert_int_equal(sx_arg_array(args, "list", 1, &list), 0);
	assert_int_equal(list->via.array.size, 300);
	static const char *const known[] = {"neg", "big", "pi", "f32", "yes", "nil", "bin", "ext", NULL};
	assert_int_equal(sx_arg_only(args, known), SX_EINVAL);
	assert_string_equal(sx_diag_last(), "unknown argument 'list'");

	msgpack_sbuffer_destroy(&again);
	msgpack_unpacked_destroy(&ref);
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sb);
}

static void test_not_messagepack(void **state)
{
	SX_UNUSED(state);
	const uint8_t c1[] = {0xc1};
	assert_int_equal(scan_all(c1, 1, 64), SX_EPARSE);
	const uint8_t inner[] = {0x93, 0x01, 0xc1, 0x02};
	assert_int_equal(scan_all(inner, sizeof(inner), 64), SX_EPARSE);
}

static void test_truncated_frames_wait(void **state)
{
	SX_UNUSED(state);
	const uint8_t t1[] = {0x94, 0x00, 0x01, 0xa4, 0x70, 0x69};
	const uint8_t t2[] = {0xcd, 0x01};
	const uint8_t t3[] = {0xcb, 0x3f, 0xf0};
	assert_int_equal(scan_all(t1, sizeof(t1), 64), 0);
	assert_int_equal(scan_all(t2, sizeof(t2), 64), 0);
	assert_int_equal(scan_all(t3, sizeof(t3), 64), 0);
}

static void test_declared_lengths_checked_before_bytes(void **state)
{
	SX_UNUSED(state);
	const uint8_t a32[] = {0xdd, 0xff, 0x00, 0x00, 0x00};
	const uint8_t m32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
	const uint8_t s32[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
	const uint8_t b32[] = {0xc6, 0xff, 0xff, 0xff, 0xff};
	const uint8_t e32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
	assert_int_equal(scan_all(a32, sizeof(a32), 64), SX_E2BIG);
	assert_int_equal(scan_all(m32, sizeof(m32), 64), SX_E2BIG);
	assert_int_equal(scan_all(s32, sizeof(s32), 64), SX_E2BIG);
	assert_int_equal(scan_all(b32, sizeof(b32), 64), SX_E2BIG);
	assert_int_equal(scan_all(e32, sizeof(e32), 64), SX_E2BIG);
	/* 65535-element arrays nested: each level's count is backed by nothing yet. */
	uint8_t nested[30];
	for (int i = 0; i < 10; i++) {
		nested[3 * i] = 0xdc;
		nested[3 * i + 1] = 0xff;
		nested[3 * i + 2] = 0xff;
	}
	assert_int_equal(scan_all(nested, sizeof(nested), 64), 0); /* waits, within the limit */
	struct sx_frame_scan fs;
	sx_frame_scan_reset(&fs);
	assert_int_equal(sx_frame_scan(&fs, nested, sizeof(nested), 60000, 64), SX_E2BIG);
}

static void test_depth_limit(void **state)
{
	SX_UNUSED(state);
	size_t n = 100000;
	uint8_t *deep = malloc(n + 1);
	memset(deep, 0x91, n);
	deep[n] = 0x00;
	assert_int_equal(scan_all(deep, n + 1, 64), SX_ELIMIT);
	/* 64 levels exactly are fine. */
	assert_int_equal(scan_all(deep + n - 64, 65, 64), 65);
	msgpack_zone zone;
	msgpack_object o;
	msgpack_zone_init(&zone, 1024);
	assert_int_equal(sx_frame_decode(deep + n - 64, 65, &zone, &o), 0);
	msgpack_zone_destroy(&zone);
	free(deep);
}

static void test_odd_extensions(void **state)
{
	SX_UNUSED(state);
	const uint8_t fx1[] = {0xd4, 0x02, 0x00};
	const uint8_t fx2[] = {0xd5, 0xff, 0x00, 0x00};
	msgpack_zone zone;
	msgpack_object o;
	msgpack_zone_init(&zone, 256);
	assert_int_equal(scan_all(fx1, sizeof(fx1), 64), 3);
	assert_int_equal(sx_frame_decode(fx1, sizeof(fx1), &zone, &o), 0);
	assert_int_equal(o.type, MSGPACK_OBJECT_EXT);
	assert_int_equal(o.via.ext.type, 2);
	assert_int_equal(o.via.ext.size, 1);
	assert_int_equal(scan_all(fx2, sizeof(fx2), 64), 4);
	assert_int_equal(sx_frame_decode(fx2, sizeof(fx2), &zone, &o), 0);
	assert_int_equal(o.via.ext.type, -1);
	/* Trailing bytes after one object are not one frame. */
	const uint8_t two[] = {0x01, 0x02};
	assert_int_equal(sx_frame_decode(two, 2, &zone, &o), SX_EPARSE);
	msgpack_zone_destroy(&zone);
}

static void test_utf8(void **state)
{
	SX_UNUSED(state);
	assert_true(sx_utf8_valid("ping", 4));
	assert_true(sx_utf8_valid("caf\xc3\xa9", 5));
	assert_true(sx_utf8_valid("\xf0\x9f\x98\x80", 4));
	assert_false(sx_utf8_valid("\xff", 1));
	assert_false(sx_utf8_valid("\xc3", 1));          /* truncated */
	assert_false(sx_utf8_valid("\xc0\xaf", 2));      /* overlong */
	assert_false(sx_utf8_valid("\xed\xa0\x80", 3));  /* surrogate */
	assert_false(sx_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
}

static int fb(const char *name, size_t len, struct sx_method *out, void *ud)
{
	SX_UNUSED(ud);
	if (len == 5 && memcmp(name, "dyn.x", 5) == 0) {
		out->name = NULL;
		out->role = SX_ROLE_READER;
		out->fn = NULL;
		return 0;
	}
	return SX_ENOMETHOD;
}

static void test_method_table(void **state)
{
	SX_UNUSED(state);
	struct sx_rpc *rpc = sx_rpc_new();
	struct sx_method m = {"a.b", SX_ROLE_WRITER, NULL, NULL, "doc"}, out;
	assert_int_equal(sx_rpc_register(rpc, &m), 0);
	m.role = SX_ROLE_ADMIN;
	assert_int_equal(sx_rpc_register(rpc, &m), 0); /* replaces */
	assert_int_equal(sx_rpc_count(rpc), 1);
	assert_int_equal(sx_rpc_resolve(rpc, "a.b", 3, &out), 0);
	assert_int_equal(out.role, SX_ROLE_ADMIN);
	assert_int_equal(sx_rpc_resolve(rpc, "a.bc", 4, &out), SX_ENOMETHOD);
	assert_int_equal(sx_rpc_resolve(rpc, "dyn.x", 5, &out), SX_ENOMETHOD);
	sx_rpc_set_fallback(rpc, fb, NULL);
	assert_int_equal(sx_rpc_resolve(rpc, "dyn.x", 5, &out), 0);
	assert_int_equal(out.role, SX_ROLE_READER);
	sx_rpc_free(rpc);

	/* Many names, through the table's growth: each is found as itself, an extension of
	 * one or a name of the same length differing in its last byte is not, and a re-registration replaces without adding. */
	static char names[300][16];
	rpc = sx_rpc_new();
	for (int i = 0; i < 300; i++) {
		snprintf(names[i], sizeof(names[i]), "svc%d.m%d", i % 7, i);
		struct sx_method mi = {names[i], i % 3, NULL, NULL, NULL};
		assert_int_equal(sx_rpc_register(rpc, &mi), 0);
	}
	struct sx_method again = {names[17], SX_ROLE_ADMIN, NULL, NULL, NULL};
	assert_int_equal(sx_rpc_register(rpc, &again), 0);
	assert_int_equal(sx_rpc_count(rpc), 300);
	for (int i = 0; i < 300; i++) {
		const struct sx_method *f = sx_rpc_find(rpc, names[i], strlen(names[i]));
		assert_non_null(f);
		assert_string_equal(f->name, names[i]);
		assert_int_equal(f->role, i == 17 ? SX_ROLE_ADMIN : i % 3);
		char longer[24];
		snprintf(longer, sizeof(longer), "%sx", names[i]);
		assert_null(sx_rpc_find(rpc, longer, strlen(longer)));
		longer[strlen(names[i]) - 1] = 'z'; /* same length, last byte differs */
		assert_null(sx_rpc_find(rpc, longer, strlen(names[i])));
	}
	sx_rpc_free(rpc);
	assert_string_equal(sx_error_code(SX_EINVAL), "invalid_argument");
	assert_string_equal(sx_error_code(SX_EBUDGET), "budget_exceeded");
	assert_int_equal(sx_error_from_code("storage_full"), SX_ENOSPC);
	assert_int_equal(sx_role_parse("writer"), SX_ROLE_WRITER);
	assert_int_equal(sx_role_parse("root"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_complete_and_split_frames),
		cmocka_unit_test(test_decode_matches_msgpack_c),
		cmocka_unit_test(test_not_messagepack),
		cmocka_unit_test(test_truncated_frames_wait),
		cmocka_unit_test(test_declared_lengths_checked_before_bytes),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_odd_extensions),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_method_table),
	};
	return cmocka_run_group_tests_name("rpc", tests, NULL, NULL);
}
