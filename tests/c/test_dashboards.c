/* The export writers: CSV quoting per RFC 4180, JSON escaping, the other
 * formats, chunked output that concatenates to the whole, XLSX files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/sx.h"
#include "plugins/dashboards/export.h"

static msgpack_object s_(const char *s)
{
	msgpack_object o = {.type = MSGPACK_OBJECT_STR};
	o.via.str.ptr = s, o.via.str.size = (uint32_t)strlen(s);
	return o;
}
static msgpack_object i_(int64_t v)
{
	msgpack_object o = {.type = v < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER : MSGPACK_OBJECT_POSITIVE_INTEGER};
	o.via.i64 = v;
	return o;
}
static msgpack_object d_(double v)
{
	msgpack_object o = {.type = MSGPACK_OBJECT_FLOAT64};
	o.via.f64 = v;
	return o;
}
static msgpack_object nil_(void) { msgpack_object o = {.type = MSGPACK_OBJECT_NIL}; return o; }

static char *csv_of(const char *s)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	sx_csv_field(&sb, s, strlen(s));
	char *out = strndup(sb.data ? sb.data : "", sb.size);
	msgpack_sbuffer_destroy(&sb);
	return out;
}

static void test_csv_quoting(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{"plain", "plain"},
		{"", ""},
		{"a,b", "\"a,b\""},
		{"say \"hi\"", "\"say \"\"hi\"\"\""},
		{"\"", "\"\"\"\""},
		{"line\nbreak", "\"line\nbreak\""},
		{"cr\rlf", "\"cr\rlf\""},
		{" lead", "\" lead\""},
		{"trail ", "\"trail \""},
		{"mid dle", "mid dle"},
		{"caf\xc3\xa9;tab\t", "caf\xc3\xa9;tab\t"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = csv_of(cases[i][0]);
		assert_string_equal(got, cases[i][1]);
		free(got);
	}
}

static void test_json_string(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	const char in[] = "q\"b\\s\n\x01\xff\xc3\xa9";
	sx_json_string(&sb, in, sizeof(in) - 1);
	const char want[] = "\"q\\\"b\\\\s\\n\\u0001\\ufffd\xc3\xa9\"";
	assert_int_equal(sb.size, sizeof(want) - 1);
	assert_memory_equal(sb.data, want, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void test_iso8601(void **state)
{
	(void)state;
	char buf[40];
	sx_iso8601(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	sx_iso8601(1709210096789LL, buf, sizeof(buf)); /* a leap day */
	assert_string_equal(buf, "2024-02-29T12:34:56.789Z");
	sx_iso8601(253402300799999LL, buf, sizeof(buf));
	assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
}

static const char *const cols[] = {"id", "name", "value", "note"};

static void row_of(int i, msgpack_object *cells, char *name, size_t size)
{
	snprintf(name, size, i % 3 == 0 ? "row \"%d\", quoted" : "row%d", i);
	cells[0] = i_(i);
	cells[1] = s_(name);
	cells[2] = i % 5 == 0 ? nil_() : d_(i * 0.1);
	cells[3] = i % 2 ? s_("x\r\ny") : i_(-i);
}

static char *whole(int fmt, int rows, size_t *len)
{
	struct sx_tabw *w = sx_tabw_new(fmt, NULL);
	assert_non_null(w);
	assert_int_equal(sx_tabw_columns(w, cols, 4), 0);
	for (int i = 0; i < rows; i++) {
		msgpack_object c[4];
		char name[64];
		row_of(i, c, name, sizeof(name));
		assert_int_equal(sx_tabw_row(w, c), 0);
	}
	assert_int_equal(sx_tabw_end(w), 0);
	const char *d = sx_tabw_data(w, len);
	char *out = malloc(*len + 1);
	memcpy(out, d, *len);
	out[*len] = 0;
	sx_tabw_free(w);
	return out;
}

static void test_csv_table(void **state)
{
	(void)state;
	size_t n;
	char *out = whole(SX_FMT_CSV, 4, &n);
	assert_string_equal(out, "id,name,value,note\r\n"
				 "0,\"row \"\"0\"\", quoted\",,0\r\n"
				 "1,row1,0.1,\"x\r\ny\"\r\n"
				 "2,row2,0.2,-2\r\n"
				 "3,\"row \"\"3\"\", quoted\",0.30000000000000004,\"x\r\ny\"\r\n");
	free(out);
}

static void test_json_ndjson_msgpack(void **state)
{
	(void)state;
	size_t n;
	char *j = whole(SX_FMT_JSON, 2, &n);
	assert_string_equal(j, "[\n{\"id\":0,\"name\":\"row \\\"0\\\", quoted\",\"value\":null,\"note\":0},\n"
			       "{\"id\":1,\"name\":\"row1\",\"value\":0.1,\"note\":\"x\\r\\ny\"}\n]\n");
	free(j);
	char *nd = whole(SX_FMT_NDJSON, 2, &n);
	assert_string_equal(nd, "{\"id\":0,\"name\":\"row \\\"0\\\", quoted\",\"value\":null,\"note\":0}\n"
				"{\"id\":1,\"name\":\"row1\",\"value\":0.1,\"note\":\"x\\r\\ny\"}\n");
	free(nd);
	char *mp = whole(SX_FMT_MSGPACK, 3, &n);
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		msgpack_object o;
		msgpack_unpack_return r = msgpack_unpack(mp, n, &off, &z, &o);
		assert_true(r == MSGPACK_UNPACK_SUCCESS || r == MSGPACK_UNPACK_EXTRA_BYTES);
		assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
		assert_int_equal(o.via.map.size, 4);
		assert_int_equal(o.via.map.ptr[0].val.via.u64, (uint64_t)i);
	}
	assert_int_equal(off, n);
	msgpack_zone_destroy(&z);
	free(mp);
	/* an empty JSON table is still a valid array */
	char *e = whole(SX_FMT_JSON, 0, &n);
	assert_string_equal(e, "[\n]\n");
	free(e);
}

/* Draining whenever the buffer passes a threshold gives chunks that end on a
 * row and concatenate to the whole output. */
static void test_chunking(void **state)
{
	(void)state;
	for (int fmt = SX_FMT_CSV; fmt <= SX_FMT_MSGPACK; fmt++) {
		size_t wn;
		char *all = whole(fmt, 500, &wn);
		struct sx_tabw *w = sx_tabw_new(fmt, NULL);
		assert_int_equal(sx_tabw_columns(w, cols, 4), 0);
		char *cat = malloc(wn + 1);
		size_t cn = 0, chunks = 0, threshold = 1000;
		for (int i = 0; i <= 500; i++) {
			if (i < 500) {
				msgpack_object c[4];
				char name[64];
				row_of(i, c, name, sizeof(name));
				assert_int_equal(sx_tabw_row(w, c), 0);
			} else {
				assert_int_equal(sx_tabw_end(w), 0);
			}
			size_t n;
			const char *d = sx_tabw_data(w, &n);
			if (n >= threshold || i == 500) {
				assert_true(n < threshold + 200); /* one row past the threshold at most */
				assert_true(cn + n <= wn);
				if (fmt == SX_FMT_CSV && i < 500)
					assert_memory_equal(d + n - 2, "\r\n", 2);
				if (fmt == SX_FMT_NDJSON)
					assert_int_equal(d[n - 1], '\n');
				memcpy(cat + cn, d, n);
				cn += n;
				chunks++;
				sx_tabw_clear(w);
			}
		}
		assert_true(chunks > 10);
		assert_int_equal(cn, wn);
		assert_memory_equal(cat, all, wn);
		assert_int_equal(sx_tabw_rows(w), 500);
		sx_tabw_free(w);
		free(cat);
		free(all);
	}
}

static void test_xlsx_file(void **state)
{
	(void)state;
	char path[] = "/tmp/sx-test-dash-XXXXXX.xlsx";
	int fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	close(fd);
	assert_null(sx_tabw_new(SX_FMT_XLSX, NULL));
	struct sx_tabw *w = sx_tabw_new(SX_FMT_XLSX, path);
	assert_non_null(w);
	assert_int_equal(sx_tabw_columns(w, cols, 4), 0);
	for (int i = 0; i < 100; i++) {
		msgpack_object c[4];
		char name[64];
		row_of(i, c, name, sizeof(name));
		c[3] = s_("bad \x01 bytes \xff end");
		assert_int_equal(sx_tabw_row(w, c), 0);
	}
	assert_int_equal(sx_tabw_end(w), 0);
	size_t n;
	sx_tabw_data(w, &n);
	assert_int_equal(n, 0);
	sx_tabw_free(w);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char magic[4];
	assert_int_equal(fread(magic, 1, 4, f), 4);
	fclose(f);
	assert_memory_equal(magic, "PK\x03\x04", 4); /* a zip container */
	unlink(path);
}

static void test_bad_inputs(void **state)
{
	(void)state;
	assert_int_equal(sx_export_format_parse("csv", 3), SX_FMT_CSV);
	assert_int_equal(sx_export_format_parse("xlsx", 4), SX_FMT_XLSX);
	assert_int_equal(sx_export_format_parse("xls", 3), -1);
	assert_int_equal(sx_export_format_parse("csvx", 4), -1);
	assert_null(sx_tabw_new(99, NULL));
	struct sx_tabw *w = sx_tabw_new(SX_FMT_CSV, NULL);
	msgpack_object c[4] = {i_(1), i_(2), i_(3), i_(4)};
	assert_int_equal(sx_tabw_row(w, c), SX_EINVAL); /* no columns yet */
	assert_int_equal(sx_tabw_columns(w, cols, 0), SX_EINVAL);
	assert_int_equal(sx_tabw_columns(w, cols, 4), 0);
	assert_int_equal(sx_tabw_columns(w, cols, 4), SX_EINVAL); /* once */
	c[2].type = MSGPACK_OBJECT_BIN;
	c[2].via.bin.ptr = "x", c[2].via.bin.size = 1;
	assert_int_equal(sx_tabw_row(w, c), SX_EINVAL);
	assert_int_equal(sx_tabw_rows(w), 0);
	sx_tabw_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csv_quoting),
		cmocka_unit_test(test_json_string),
		cmocka_unit_test(test_iso8601),
		cmocka_unit_test(test_csv_table),
		cmocka_unit_test(test_json_ndjson_msgpack),
		cmocka_unit_test(test_chunking),
		cmocka_unit_test(test_xlsx_file),
		cmocka_unit_test(test_bad_inputs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
