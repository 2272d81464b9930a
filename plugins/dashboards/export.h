/* export.h — one table (named columns, rows of scalar or nested cells) written
 * as CSV, JSON, NDJSON, MessagePack or XLSX, a chunk at a time.
 *
 * Formats:
 *   csv      RFC 4180: a header line, CRLF line ends; a field is quoted when
 *            it holds a comma, a double quote, CR or LF, or starts or ends
 *            with a space, and quotes inside are doubled. nil is an empty
 *            field, booleans true/false, maps and arrays their JSON text.
 *   json     one array of objects {column: value}; nil is null.
 *   ndjson   one object per line (LF).
 *   msgpack  a sequence of maps {column: value}, one per row (no enclosing
 *            array, so that it can be streamed: read it with an Unpacker).
 *   xlsx     a workbook written by libxlsxwriter in constant-memory mode
 *            (rows go to disk as they come): sheet "data" with the header in
 *            row 1; past 1,048,575 rows the table continues on "data2", ...
 *            Numbers are cells of type number, strings are inline strings
 *            (bytes that are not UTF-8 or are XML-forbidden control
 *            characters become '?'; longer than 32,767 bytes: cut).
 * Floats are written with the fewest digits that read back to the same
 * double; NaN and infinities are null (JSON), empty (CSV), nil (msgpack).
 *
 * Memory: text and MessagePack output accumulates in the writer's buffer
 * until the caller takes it (sx_tabw_data + sx_tabw_clear); rows are never
 * split across two takes. XLSX goes to its file; its buffer stays empty.
 *
 * Errors: 0 or SX_EINVAL (a cell type that has no place in a table: bin,
 * ext), SX_EIO (xlsx file), SX_ENOMEM, with the reason in sx_diag_last().
 * A writer is used by one thread at a time.
 */
#ifndef SX_DASHBOARDS_EXPORT_H
#define SX_DASHBOARDS_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

enum { SX_FMT_CSV, SX_FMT_JSON, SX_FMT_NDJSON, SX_FMT_MSGPACK, SX_FMT_XLSX, SX_FMT_COUNT };

/* "csv" ... "xlsx" -> SX_FMT_*, or -1. */
int sx_export_format_parse(const char *s, size_t len);
const char *sx_export_format_name(int fmt);
/* Text formats (csv, json, ndjson) give str payloads, the others bin. */
int sx_export_format_is_text(int fmt);

#define SX_TABW_COLS_MAX 64

struct sx_tabw;

/* A writer for format fmt. xlsx_path (NUL-terminated, copied) is the file
 * the XLSX workbook is created at (required for XLSX, ignored otherwise).
 * NULL on failure (diag). */
struct sx_tabw *sx_tabw_new(int fmt, const char *xlsx_path);
/* Sets the columns (1..SX_TABW_COLS_MAX names, copied) and writes the header
 * where the format has one. Once, before the first row. */
int sx_tabw_columns(struct sx_tabw *w, const char *const *names, size_t n);
/* Writes one row: cells[0..n) for the n columns, borrowed for the call. */
int sx_tabw_row(struct sx_tabw *w, const msgpack_object *cells);
/* Finishes the table (JSON's closing bracket; XLSX: writes and closes the
 * workbook, after which the file is complete). */
int sx_tabw_end(struct sx_tabw *w);
/* The output not yet taken; valid until the next call on w. */
const char *sx_tabw_data(const struct sx_tabw *w, size_t *len);
void sx_tabw_clear(struct sx_tabw *w);
uint64_t sx_tabw_rows(const struct sx_tabw *w);
/* Frees the writer; an XLSX workbook not ended is closed (its file is then
 * whatever libxlsxwriter wrote: the caller removes it). */
void sx_tabw_free(struct sx_tabw *w);

/* Appends one CSV field per RFC 4180 (quoted only when needed). */
void sx_csv_field(msgpack_sbuffer *sb, const char *s, size_t n);
/* Appends a JSON string literal; bytes that are not UTF-8 become U+FFFD. */
void sx_json_string(msgpack_sbuffer *sb, const char *s, size_t n);
/* Appends o as JSON text. */
void sx_json_value(msgpack_sbuffer *sb, const msgpack_object *o);
/* "2024-01-31T12:00:00.000Z" for ms since the epoch (buf >= 32 bytes). */
size_t sx_iso8601(int64_t ms, char *buf, size_t size);

#endif
