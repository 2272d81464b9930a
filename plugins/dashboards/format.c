/* Table writers: CSV (RFC 4180), JSON, NDJSON, MessagePack, XLSX. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xlsxwriter.h>

#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/dashboards/export.h"

#define XLSX_STR_MAX 32767
#define XLSX_ROWS (LXW_ROW_MAX - 1) /* data rows per sheet under the header */

static const char *const fmt_names[SX_FMT_COUNT] = {"csv", "json", "ndjson", "msgpack", "xlsx"};

int sx_export_format_parse(const char *s, size_t len)
{
	for (int i = 0; i < SX_FMT_COUNT; i++)
		if (strlen(fmt_names[i]) == len && memcmp(fmt_names[i], s, len) == 0)
			return i;
	return -1;
}

const char *sx_export_format_name(int fmt) { return fmt >= 0 && fmt < SX_FMT_COUNT ? fmt_names[fmt] : NULL; }

int sx_export_format_is_text(int fmt) { return fmt == SX_FMT_CSV || fmt == SX_FMT_JSON || fmt == SX_FMT_NDJSON; }

struct sx_tabw {
	int fmt;
	size_t ncols;
	char *cols[SX_TABW_COLS_MAX];
	size_t collen[SX_TABW_COLS_MAX];
	uint64_t rows;
	msgpack_sbuffer out;
	msgpack_packer pk;
	msgpack_sbuffer scratch;
	char *path;
	lxw_workbook *wb;
	lxw_worksheet *ws;
	uint32_t sheet_row, nsheets;
	int ended;
};

static void put(msgpack_sbuffer *sb, const char *s, size_t n)
{
	if (n) /* an empty sbuffer has no data to copy 0 bytes to */
		msgpack_sbuffer_write(sb, s, n);
}
static void puts_(msgpack_sbuffer *sb, const char *s) { put(sb, s, strlen(s)); }

size_t sx_iso8601(int64_t ms, char *buf, size_t size)
{
	int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
	int64_t rem = ms - days * 86400000;
	/* civil_from_days, H. Hinnant */
	int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097, doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365, y = yoe + era * 400;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int d = (int)(doy - (153 * mp + 2) / 5 + 1), m = (int)(mp < 10 ? mp + 3 : mp - 9);
	y += m <= 2;
	int n = snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
			 (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60), (int)(rem % 1000));
	return n < 0 ? 0 : (size_t)n;
}

/* Shortest text that reads back as the same double. */
static size_t fmt_double(double v, char *buf, size_t size)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return strlen(buf);
}

void sx_csv_field(msgpack_sbuffer *sb, const char *s, size_t n)
{
	int quote = n > 0 && (s[0] == ' ' || s[n - 1] == ' ');
	for (size_t i = 0; i < n && !quote; i++)
		quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
	if (!quote) {
		put(sb, s, n);
		return;
	}
	put(sb, "\"", 1);
	size_t from = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '"') {
			put(sb, s + from, i + 1 - from);
			put(sb, "\"", 1);
			from = i + 1;
		}
	put(sb, s + from, n - from);
	put(sb, "\"", 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
	if (!len || len > n || s[0] > 0xf4)
		return 0;
	return sx_utf8_valid((const char *)s, len) ? len : 0;
}

void sx_json_string(msgpack_sbuffer *sb, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	put(sb, "\"", 1);
	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			put(sb, e, 2);
			i++;
		} else if (c < 0x20) {
			char e[8];
			const char *sh = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
			if (sh)
				puts_(sb, sh);
			else {
				snprintf(e, sizeof(e), "\\u%04x", c);
				put(sb, e, 6);
			}
			i++;
		} else {
			size_t k = utf8_seq(u + i, n - i);
			if (k)
				put(sb, s + i, k), i += k;
			else
				puts_(sb, "\\ufffd"), i++;
		}
	}
	put(sb, "\"", 1);
}

void sx_json_value(msgpack_sbuffer *sb, const msgpack_object *o)
{
	char buf[40];
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: puts_(sb, "null"); break;
	case MSGPACK_OBJECT_BOOLEAN: puts_(sb, o->via.boolean ? "true" : "false"); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		put(sb, buf, (size_t)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)o->via.u64));
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		put(sb, buf, (size_t)snprintf(buf, sizeof(buf), "%lld", (long long)o->via.i64));
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (isfinite(o->via.f64))
			put(sb, buf, fmt_double(o->via.f64, buf, sizeof(buf)));
		else
			puts_(sb, "null");
		break;
	case MSGPACK_OBJECT_STR: sx_json_string(sb, o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN: sx_json_string(sb, o->via.bin.ptr, o->via.bin.size); break;
	case MSGPACK_OBJECT_ARRAY:
		put(sb, "[", 1);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				put(sb, ",", 1);
			sx_json_value(sb, &o->via.array.ptr[i]);
		}
		put(sb, "]", 1);
		break;
	case MSGPACK_OBJECT_MAP:
		put(sb, "{", 1);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			if (i)
				put(sb, ",", 1);
			if (k->type == MSGPACK_OBJECT_STR)
				sx_json_string(sb, k->via.str.ptr, k->via.str.size);
			else {
				/* JSON keys are strings: other keys are written as their JSON text, quoted */
				msgpack_sbuffer t;
				msgpack_sbuffer_init(&t);
				sx_json_value(&t, k);
				sx_json_string(sb, t.data ? t.data : "", t.size);
				msgpack_sbuffer_destroy(&t);
			}
			put(sb, ":", 1);
			sx_json_value(sb, &o->via.map.ptr[i].val);
		}
		put(sb, "}", 1);
		break;
	default: puts_(sb, "null"); break;
	}
}

struct sx_tabw *sx_tabw_new(int fmt, const char *xlsx_path)
{
	if (fmt < 0 || fmt >= SX_FMT_COUNT) {
		sx_diag_set(SX_EINVAL, "unknown export format");
		return NULL;
	}
	if (fmt == SX_FMT_XLSX && (!xlsx_path || !xlsx_path[0])) {
		sx_diag_set(SX_EINVAL, "an xlsx writer needs a file path");
		return NULL;
	}
	struct sx_tabw *w = calloc(1, sizeof(*w));
	if (!w) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	w->fmt = fmt;
	msgpack_sbuffer_init(&w->out);
	msgpack_sbuffer_init(&w->scratch);
	msgpack_packer_init(&w->pk, &w->out, msgpack_sbuffer_write);
	if (fmt == SX_FMT_XLSX && !(w->path = strdup(xlsx_path))) {
		free(w);
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	return w;
}

static int xlsx_sheet(struct sx_tabw *w)
{
	char name[32];
	w->nsheets++;
	if (w->nsheets == 1)
		snprintf(name, sizeof(name), "data");
	else
		snprintf(name, sizeof(name), "data%u", w->nsheets);
	w->ws = workbook_add_worksheet(w->wb, name);
	if (!w->ws)
		return sx_diag_set(SX_EIO, "xlsx: cannot add a worksheet");
	for (size_t i = 0; i < w->ncols; i++)
		worksheet_write_string(w->ws, 0, (lxw_col_t)i, w->cols[i], NULL);
	w->sheet_row = 1;
	return 0;
}

int sx_tabw_columns(struct sx_tabw *w, const char *const *names, size_t n)
{
	if (n < 1 || n > SX_TABW_COLS_MAX || w->ncols)
		return sx_diag_set(SX_EINVAL, "a table has 1 to %d columns, set once", SX_TABW_COLS_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!(w->cols[i] = strdup(names[i])))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		w->collen[i] = strlen(names[i]);
		w->ncols = i + 1;
	}
	switch (w->fmt) {
	case SX_FMT_CSV:
		for (size_t i = 0; i < n; i++) {
			if (i)
				put(&w->out, ",", 1);
			sx_csv_field(&w->out, w->cols[i], w->collen[i]);
		}
		put(&w->out, "\r\n", 2);
		break;
	case SX_FMT_JSON: put(&w->out, "[", 1); break;
	case SX_FMT_XLSX: {
		lxw_workbook_options opt = {.constant_memory = LXW_TRUE, .tmpdir = NULL, .use_zip64 = LXW_TRUE};
		w->wb = workbook_new_opt(w->path, &opt);
		if (!w->wb)
			return sx_diag_set(SX_EIO, "xlsx: cannot create '%s'", w->path);
		return xlsx_sheet(w);
	}
	}
	return 0;
}

/* A cell's text for CSV and XLSX (nested values as JSON). */
static void cell_text(struct sx_tabw *w, const msgpack_object *o, const char **s, size_t *n)
{
	char buf[40];
	msgpack_sbuffer_clear(&w->scratch);
	switch (o->type) {
	case MSGPACK_OBJECT_STR: *s = o->via.str.ptr, *n = o->via.str.size; return;
	case MSGPACK_OBJECT_NIL: *s = "", *n = 0; return;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64)) {
			*s = "", *n = 0;
			return;
		}
		put(&w->scratch, buf, fmt_double(o->via.f64, buf, sizeof(buf)));
		break;
	default: sx_json_value(&w->scratch, o); break;
	}
	*s = w->scratch.data ? w->scratch.data : "";
	*n = w->scratch.size;
}

static int xlsx_cell(struct sx_tabw *w, lxw_col_t col, const msgpack_object *o)
{
	lxw_error e = LXW_NO_ERROR;
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return 0;
	case MSGPACK_OBJECT_BOOLEAN: e = worksheet_write_boolean(w->ws, w->sheet_row, col, o->via.boolean, NULL); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: e = worksheet_write_number(w->ws, w->sheet_row, col, (double)o->via.u64, NULL); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: e = worksheet_write_number(w->ws, w->sheet_row, col, (double)o->via.i64, NULL); break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return 0;
		e = worksheet_write_number(w->ws, w->sheet_row, col, o->via.f64, NULL);
		break;
	default: {
		const char *s;
		size_t n;
		cell_text(w, o, &s, &n);
		if (n > XLSX_STR_MAX)
			n = XLSX_STR_MAX;
		char *c = malloc(n + 1);
		if (!c)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		const unsigned char *u = (const unsigned char *)s;
		size_t j = 0;
		for (size_t i = 0; i < n;) {
			size_t k = utf8_seq(u + i, n - i);
			if (k == 1 && u[i] < 0x20 && u[i] != '\t' && u[i] != '\n' && u[i] != '\r')
				k = 0;
			if (k) {
				memcpy(c + j, s + i, k);
				j += k, i += k;
			} else {
				c[j++] = '?', i++;
			}
		}
		c[j] = 0;
		e = worksheet_write_string(w->ws, w->sheet_row, col, c, NULL);
		free(c);
	}
	}
	if (e != LXW_NO_ERROR)
		return sx_diag_set(SX_EIO, "xlsx: %s", lxw_strerror(e));
	return 0;
}

int sx_tabw_row(struct sx_tabw *w, const msgpack_object *cells)
{
	if (!w->ncols)
		return sx_diag_set(SX_EINVAL, "columns must be set before rows");
	for (size_t i = 0; i < w->ncols; i++)
		if (cells[i].type == MSGPACK_OBJECT_EXT || cells[i].type == MSGPACK_OBJECT_BIN)
			return sx_diag_set(SX_EINVAL, "column '%s': binary values have no place in a table", w->cols[i]);
	switch (w->fmt) {
	case SX_FMT_CSV:
		for (size_t i = 0; i < w->ncols; i++) {
			const char *s;
			size_t n;
			if (i)
				put(&w->out, ",", 1);
			cell_text(w, &cells[i], &s, &n);
			sx_csv_field(&w->out, s, n);
		}
		put(&w->out, "\r\n", 2);
		break;
	case SX_FMT_JSON:
	case SX_FMT_NDJSON:
		if (w->fmt == SX_FMT_JSON)
			put(&w->out, w->rows ? ",\n" : "\n", w->rows ? 2 : 1);
		put(&w->out, "{", 1);
		for (size_t i = 0; i < w->ncols; i++) {
			if (i)
				put(&w->out, ",", 1);
			sx_json_string(&w->out, w->cols[i], w->collen[i]);
			put(&w->out, ":", 1);
			sx_json_value(&w->out, &cells[i]);
		}
		put(&w->out, w->fmt == SX_FMT_JSON ? "}" : "}\n", w->fmt == SX_FMT_JSON ? 1 : 2);
		break;
	case SX_FMT_MSGPACK:
		msgpack_pack_map(&w->pk, w->ncols);
		for (size_t i = 0; i < w->ncols; i++) {
			sx_pack_strn(&w->pk, w->cols[i], w->collen[i]);
			if ((cells[i].type == MSGPACK_OBJECT_FLOAT64 || cells[i].type == MSGPACK_OBJECT_FLOAT32) &&
			    !isfinite(cells[i].via.f64))
				msgpack_pack_nil(&w->pk);
			else
				sx_pack_object(&w->pk, &cells[i]);
		}
		break;
	case SX_FMT_XLSX:
		if (w->sheet_row > XLSX_ROWS) {
			int rc = xlsx_sheet(w);
			if (rc < 0)
				return rc;
		}
		for (size_t i = 0; i < w->ncols; i++) {
			int rc = xlsx_cell(w, (lxw_col_t)i, &cells[i]);
			if (rc < 0)
				return rc;
		}
		w->sheet_row++;
		break;
	}
	w->rows++;
	return 0;
}

int sx_tabw_end(struct sx_tabw *w)
{
	if (w->ended)
		return 0;
	w->ended = 1;
	if (w->fmt == SX_FMT_JSON)
		puts_(&w->out, w->ncols ? "\n]\n" : "[]\n");
	if (w->fmt == SX_FMT_XLSX && w->wb) {
		lxw_error e = workbook_close(w->wb);
		w->wb = NULL;
		if (e != LXW_NO_ERROR)
			return sx_diag_set(SX_EIO, "xlsx: %s", lxw_strerror(e));
	}
	return 0;
}

const char *sx_tabw_data(const struct sx_tabw *w, size_t *len)
{
	*len = w->out.size;
	return w->out.data ? w->out.data : "";
}

void sx_tabw_clear(struct sx_tabw *w) { msgpack_sbuffer_clear(&w->out); }

uint64_t sx_tabw_rows(const struct sx_tabw *w) { return w->rows; }

void sx_tabw_free(struct sx_tabw *w)
{
	if (!w)
		return;
	if (w->wb)
		workbook_close(w->wb);
	for (size_t i = 0; i < w->ncols; i++)
		free(w->cols[i]);
	msgpack_sbuffer_destroy(&w->out);
	msgpack_sbuffer_destroy(&w->scratch);
	free(w->path);
	free(w);
}
