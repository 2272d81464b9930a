/* export: metrics, cohorts, retention, funnels, dashboards and raw events as
 * CSV, JSON, NDJSON, MessagePack or XLSX — inline, to a file on the server,
 * or streamed to the connection in chunks.
 *
 * Raw events are the large case. To a file they are written by a job on the
 * pool that reads in read transactions of at most EV_TXN_ROWS events each
 * (short, so LMDB's file does not grow) and writes every chunk out before the
 * next, so memory stays bounded whatever the size. Streamed, they are read on
 * the loop one chunk per turn, and at most STREAM_WINDOW chunks may be sent
 * and not yet acknowledged (export.ack): a client that stops reading stops
 * the export, not the server's memory. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/jobs.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/dashboards/dashboards.h"
#include "plugins/dashboards/export.h"
#include "plugins/events/events.h"
#include "store/store.h"

#define INLINE_BYTES_MAX (8u << 20)
#define INLINE_ROWS_MAX 200000
#define EV_TXN_ROWS 20000
#define FILE_FLUSH_BYTES (1u << 20)
#define CHUNK_DEFAULT (256u << 10)
#define CHUNK_MIN 1024
#define CHUNK_MAX (4u << 20)
#define STREAM_WINDOW 4
#define STREAM_ACK_TIMEOUT_MS 60000
#define STREAMS_MAX 16

enum { W_METRICS, W_COHORT, W_RETENTION, W_FUNNEL, W_DASHBOARD, W_EVENTS, W_COUNT };
static const char *const what_names[W_COUNT] = {"metrics", "cohort", "retention", "funnel", "dashboard", "events"};
static const char *const export_keys[] = {"what", "format", "path", "stream", "chunk_bytes", NULL};

/* ---- cells ---- */

static msgpack_object c_nil(void) { msgpack_object o = {.type = MSGPACK_OBJECT_NIL}; return o; }
static msgpack_object c_int(int64_t v)
{
	msgpack_object o;
	if (v >= 0)
		o.type = MSGPACK_OBJECT_POSITIVE_INTEGER, o.via.u64 = (uint64_t)v;
	else
		o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER, o.via.i64 = v;
	return o;
}
static msgpack_object c_str(const char *s, size_t n)
{
	msgpack_object o = {.type = MSGPACK_OBJECT_STR};
	o.via.str.ptr = s, o.via.str.size = (uint32_t)n;
	return o;
}
static msgpack_object c_obj(const msgpack_object *x) { return x ? *x : c_nil(); }

static const msgpack_object *mget(const msgpack_object *m, const char *k)
{
	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (sx_obj_streq(&m->via.map.ptr[i].key, k))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static int64_t oint(const msgpack_object *o)
{
	if (!o)
		return 0;
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64
	       : o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64 : 0;
}

/* ---- tables from query results ---- */

typedef int (*query_fn)(const msgpack_object *args, msgpack_packer *pk);

/* Runs fn into sb and unpacks its result into z. */
static int run_query(query_fn fn, const msgpack_object *args, msgpack_sbuffer *sb, msgpack_zone *z, msgpack_object *out)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	int rc = fn(args, &pk);
	if (rc < 0)
		return rc;
	size_t off = 0;
	if (msgpack_unpack(sb->data, sb->size, &off, z, out) != MSGPACK_UNPACK_SUCCESS)
		return sx_diag_set(SX_EINTERNAL, "a query result does not decode");
	return 0;
}

static int series_rows(struct sx_tabw *w, const msgpack_object *group, const msgpack_object *series, int grouped)
{
	char iso[40];
	for (uint32_t i = 0; series && series->type == MSGPACK_OBJECT_ARRAY && i < series->via.array.size; i++) {
		const msgpack_object *p = &series->via.array.ptr[i];
		msgpack_object cells[7];
		int n = 0;
		if (grouped)
			cells[n++] = c_obj(group);
		int64_t t = oint(mget(p, "t"));
		size_t il = sx_iso8601(t, iso, sizeof(iso));
		cells[n++] = c_int(t);
		cells[n++] = c_str(iso, il);
		cells[n++] = c_obj(mget(p, "count"));
		cells[n++] = c_obj(mget(p, "users"));
		cells[n++] = c_obj(mget(p, "sum"));
		cells[n++] = c_obj(mget(p, "avg"));
		int rc = sx_tabw_row(w, cells);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int table_metrics(const msgpack_object *r, struct sx_tabw *w)
{
	static const char *const cols[] = {"group", "t", "time", "count", "users", "sum", "avg"};
	const msgpack_object *groups = mget(r, "groups");
	int rc = sx_tabw_columns(w, groups ? cols : cols + 1, groups ? 7 : 6);
	if (rc < 0 || !groups)
		return rc < 0 ? rc : series_rows(w, NULL, mget(r, "series"), 0);
	for (uint32_t i = 0; groups->type == MSGPACK_OBJECT_ARRAY && i < groups->via.array.size; i++) {
		const msgpack_object *g = &groups->via.array.ptr[i];
		if ((rc = series_rows(w, mget(g, "value"), mget(g, "series"), 1)) < 0)
			return rc;
	}
	return 0;
}

static int table_retention(const msgpack_object *r, struct sx_tabw *w)
{
	static const char *const cols[] = {"cohort_start", "cohort", "size", "period", "returning", "rate"};
	const msgpack_object *cs = mget(r, "cohorts");
	char iso[40];
	int rc = sx_tabw_columns(w, cols, 6);
	for (uint32_t i = 0; rc == 0 && cs && cs->type == MSGPACK_OBJECT_ARRAY && i < cs->via.array.size; i++) {
		const msgpack_object *c = &cs->via.array.ptr[i], *ret = mget(c, "returning"), *rates = mget(c, "rates");
		int64_t start = oint(mget(c, "start"));
		size_t il = sx_iso8601(start, iso, sizeof(iso));
		for (uint32_t k = 0; rc == 0 && ret && ret->type == MSGPACK_OBJECT_ARRAY && k < ret->via.array.size; k++) {
			msgpack_object cells[6] = {c_int(start), c_str(iso, il), c_obj(mget(c, "size")), c_int(k),
						   ret->via.array.ptr[k],
						   rates && k < rates->via.array.size ? rates->via.array.ptr[k] : c_nil()};
			rc = sx_tabw_row(w, cells);
		}
	}
	return rc;
}

static int step_rows(struct sx_tabw *w, const msgpack_object *group, const msgpack_object *steps, int grouped)
{
	for (uint32_t i = 0; steps && steps->type == MSGPACK_OBJECT_ARRAY && i < steps->via.array.size; i++) {
		const msgpack_object *s = &steps->via.array.ptr[i];
		msgpack_object cells[8];
		int n = 0;
		if (grouped)
			cells[n++] = c_obj(group);
		cells[n++] = c_int(i + 1);
		cells[n++] = c_obj(mget(s, "name"));
		cells[n++] = c_obj(mget(s, "users"));
		cells[n++] = c_obj(mget(s, "conversion"));
		cells[n++] = c_obj(mget(s, "conversion_from_previous"));
		cells[n++] = c_obj(mget(s, "drop_off"));
		cells[n++] = c_obj(mget(s, "median_ms"));
		int rc = sx_tabw_row(w, cells);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int table_funnel(const msgpack_object *r, struct sx_tabw *w)
{
	static const char *const cols[] = {"group", "step", "name", "users", "conversion", "conversion_from_previous",
					   "drop_off", "median_ms"};
	const msgpack_object *groups = mget(r, "groups");
	int rc = sx_tabw_columns(w, groups ? cols : cols + 1, groups ? 8 : 7);
	if (rc < 0)
		return rc;
	msgpack_object all = c_str("(all)", 5);
	if ((rc = step_rows(w, &all, mget(r, "steps"), groups != NULL)) < 0 || !groups)
		return rc;
	for (uint32_t i = 0; groups->type == MSGPACK_OBJECT_ARRAY && i < groups->via.array.size; i++)
		if ((rc = step_rows(w, mget(&groups->via.array.ptr[i], "value"), mget(&groups->via.array.ptr[i], "steps"), 1)) < 0)
			return rc;
	return 0;
}

/* Flattens a panel's data into (path, value) rows. */
static int flatten(struct sx_tabw *w, const msgpack_object *panel, const msgpack_object *kind, const msgpack_object *o,
		   char *path, size_t plen, size_t cap, int depth)
{
	int rc = 0;
	if (depth < 16 && o->type == MSGPACK_OBJECT_MAP && o->via.map.size) {
		for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			size_t n = plen;
			if (k->type == MSGPACK_OBJECT_STR)
				n += (size_t)snprintf(path + plen, cap - plen, "%s%.*s", plen ? "." : "", (int)k->via.str.size, k->via.str.ptr);
			else
				n += (size_t)snprintf(path + plen, cap - plen, "%s%lld", plen ? "." : "", (long long)oint(k));
			if (n >= cap)
				n = cap - 1;
			rc = flatten(w, panel, kind, &o->via.map.ptr[i].val, path, n, cap, depth + 1);
		}
		path[plen] = 0;
		return rc;
	}
	if (depth < 16 && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size) {
		for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++) {
			size_t n = plen + (size_t)snprintf(path + plen, cap - plen, "[%u]", i + 1);
			if (n >= cap)
				n = cap - 1;
			rc = flatten(w, panel, kind, &o->via.array.ptr[i], path, n, cap, depth + 1);
		}
		path[plen] = 0;
		return rc;
	}
	msgpack_object cells[4] = {*panel, c_obj(kind), c_str(path, plen), *o};
	if (o->type == MSGPACK_OBJECT_BIN || o->type == MSGPACK_OBJECT_EXT)
		cells[3] = c_str(o->via.bin.ptr, o->via.bin.size);
	return sx_tabw_row(w, cells);
}

static int table_dashboard(const msgpack_object *r, struct sx_tabw *w)
{
	static const char *const cols[] = {"panel", "kind", "path", "value"};
	const msgpack_object *ps = mget(r, "panels");
	char path[1024];
	int rc = sx_tabw_columns(w, cols, 4);
	for (uint32_t i = 0; rc == 0 && ps && ps->type == MSGPACK_OBJECT_ARRAY && i < ps->via.array.size; i++) {
		const msgpack_object *p = &ps->via.array.ptr[i], *id = mget(p, "id"), *err = mget(p, "error");
		msgpack_object pid = c_obj(id);
		path[0] = 0;
		if (err && err->type == MSGPACK_OBJECT_STR) {
			msgpack_object cells[4] = {pid, c_obj(mget(p, "kind")), c_str("error", 5), *err};
			rc = sx_tabw_row(w, cells);
		} else {
			const msgpack_object *d = mget(p, "data");
			msgpack_object nil = c_nil();
			rc = flatten(w, &pid, mget(p, "kind"), d ? d : &nil, path, 0, sizeof(path), 0);
		}
	}
	return rc;
}

static int table_cohort(const msgpack_object *args, struct sx_tabw *w)
{
	static const char *const known[] = {"name", NULL};
	static const char *const cols[] = {"user", "index"};
	const char *name;
	size_t nlen;
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "name", 1, &name, &nlen)) < 0)
		return rc;
	roaring_bitmap_t *b = sx_events_cohort_users(NULL, name, nlen);
	if (!b)
		return sx_diag_last_code() ? sx_diag_last_code() : SX_ENOENT;
	rc = sx_tabw_columns(w, cols, 2);
	roaring_uint32_iterator_t *it = roaring_create_iterator(b);
	for (; rc == 0 && it->has_value; roaring_advance_uint32_iterator(it)) {
		char id[SX_EVENTS_ID_MAX + 1];
		size_t len;
		if (sx_tabw_rows(w) >= INLINE_ROWS_MAX * 10) {
			rc = sx_diag_set(SX_E2BIG, "cohort too large to export");
			break;
		}
		if (sx_events_user_id(NULL, it->current_value, id, sizeof(id), &len) < 0)
			continue;
		msgpack_object cells[2] = {c_str(id, len), c_int(it->current_value)};
		rc = sx_tabw_row(w, cells);
	}
	roaring_free_uint32_iterator(it);
	roaring_bitmap_free(b);
	return rc;
}

/* Writes the whole table of a small `what` into w (not ended). */
static int table_fill(int what, const msgpack_object *args, struct sx_tabw *w)
{
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object r;
	int rc;
	if (what == W_COHORT)
		return table_cohort(args, w);
	msgpack_sbuffer_init(&sb);
	msgpack_zone_init(&z, 4096);
	switch (what) {
	case W_METRICS:
		if ((rc = run_query(sx_events_metrics_query, args, &sb, &z, &r)) == 0)
			rc = table_metrics(&r, w);
		break;
	case W_RETENTION:
		if ((rc = run_query(sx_events_retention, args, &sb, &z, &r)) == 0)
			rc = table_retention(&r, w);
		break;
	case W_FUNNEL:
		if ((rc = run_query(sx_events_funnel_query, args, &sb, &z, &r)) == 0)
			rc = table_funnel(&r, w);
		break;
	case W_DASHBOARD: {
		static const char *const known[] = {"name", "vars", NULL};
		char name[64];
		msgpack_packer pk;
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		size_t off = 0;
		if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "name", 1, name, sizeof(name))) < 0 ||
		    (rc = sx_dashboards_render(name, sx_arg(args, "vars"), &pk)) < 0)
			break;
		if (msgpack_unpack(sb.data, sb.size, &off, &z, &r) != MSGPACK_UNPACK_SUCCESS) {
			rc = sx_diag_set(SX_EINTERNAL, "a render does not decode");
			break;
		}
		rc = table_dashboard(&r, w);
		break;
	}
	default: rc = sx_diag_set(SX_EINTERNAL, "no table for this export");
	}
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&z);
	return rc;
}

/* ---- raw events, a chunk at a time ---- */

struct evcur {
	int64_t from, to;
	char name[SX_EVENTS_ID_MAX + 1];
	size_t nlen; /* 0: every event */
	int by_user;
	uint32_t user;
	int started, done;
	int64_t t;   /* the last event written: (t, seq) */
	uint64_t seq;
	/* per chunk */
	MDB_txn *txn;
	struct sx_tabw *w;
	size_t max_rows, max_bytes, rows;
	msgpack_zone zone;
};

static const char *const ev_cols[] = {"time", "iso", "user", "name", "item", "properties"};

static int ev_cb(const struct sx_event *ev, void *ud)
{
	struct evcur *c = ud;
	if (c->started && (ev->time < c->t || (ev->time == c->t && ev->seq <= c->seq)))
		return 0;
	c->t = ev->time, c->seq = ev->seq, c->started = 1;
	if (c->nlen && (ev->name_len != c->nlen || memcmp(ev->name, c->name, c->nlen) != 0))
		return 0;
	char uid[SX_EVENTS_ID_MAX + 1], iso[40];
	size_t ulen = 0;
	if (sx_events_user_id(c->txn, ev->user, uid, sizeof(uid), &ulen) < 0)
		ulen = (size_t)snprintf(uid, sizeof(uid), "#%u", ev->user);
	msgpack_object props = c_nil();
	if (ev->props) {
		size_t off = 0;
		if (msgpack_unpack(ev->props, ev->props_len, &off, &c->zone, &props) != MSGPACK_UNPACK_SUCCESS)
			props = c_nil();
	}
	size_t il = sx_iso8601(ev->time, iso, sizeof(iso));
	msgpack_object cells[6] = {c_int(ev->time), c_str(iso, il), c_str(uid, ulen), c_str(ev->name, ev->name_len),
				   ev->item ? c_str(ev->item, ev->item_len) : c_nil(), props};
	int rc = sx_tabw_row(c->w, cells);
	if (rc < 0)
		return rc;
	size_t blen;
	sx_tabw_data(c->w, &blen);
	return ++c->rows >= c->max_rows || blen >= c->max_bytes ? 1 : 0;
}

/* Writes the next events into w: stops after max_rows, or once w holds
 * max_bytes, or at the end of the range (c->done). */
static int ev_chunk(struct evcur *c, MDB_txn *txn, struct sx_tabw *w, size_t max_rows, size_t max_bytes)
{
	c->txn = txn, c->w = w, c->max_rows = max_rows, c->max_bytes = max_bytes, c->rows = 0;
	int64_t from = c->started ? c->t : c->from;
	int rc = c->by_user ? sx_events_user_scan(txn, c->user, from, c->to, 0, ev_cb, c)
			    : sx_events_range_scan(txn, from, c->to, ev_cb, c);
	msgpack_zone_clear(&c->zone);
	if (rc < 0)
		return rc;
	if (c->rows < max_rows) {
		size_t blen;
		sx_tabw_data(w, &blen);
		if (blen < max_bytes)
			c->done = 1;
	}
	return 0;
}

static int ev_parse(const msgpack_object *args, struct evcur *c)
{
	static const char *const known[] = {"from", "to", "name", "user", NULL};
	const char *user = NULL;
	size_t ulen = 0;
	int rc;
	memset(c, 0, sizeof(*c));
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "from", 1, &c->from)) < 0 ||
	    (rc = sx_arg_int(args, "to", 1, &c->to)) < 0 ||
	    (rc = sx_arg_str(args, "user", 0, &user, &ulen)) < 0)
		return rc;
	if (c->from < 0 || c->to > SX_EVENTS_TIME_MAX + 1 || c->from >= c->to)
		return sx_diag_set(SX_EINVAL, "arguments 'from' < 'to' must be ms since 1970 (before the year 10000)");
	rc = sx_arg_cstr(args, "name", 0, c->name, sizeof(c->name));
	if (rc < 0)
		return sx_diag_set(SX_EINVAL, "argument 'name' must be an event name of 1 to %d bytes", SX_EVENTS_ID_MAX);
	c->nlen = strlen(c->name);
	if (user) {
		if (ulen < 1 || ulen > SX_EVENTS_ID_MAX)
			return sx_diag_set(SX_EINVAL, "argument 'user' must be a user id of 1 to %d bytes", SX_EVENTS_ID_MAX);
		if (sx_events_user_index(NULL, user, ulen, &c->user) < 0)
			return sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)ulen, user);
		c->by_user = 1;
	}
	msgpack_zone_init(&c->zone, 8192);
	return 0;
}

/* ---- files ---- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return sx_diag_set(SX_EIO, "write: %s", strerror(errno));
		}
		p += k, n -= (size_t)k;
	}
	return 0;
}

static int drain(int fd, struct sx_tabw *w, uint64_t *bytes)
{
	size_t n;
	const char *d = sx_tabw_data(w, &n);
	int rc = n ? write_all(fd, d, n) : 0;
	*bytes += n;
	sx_tabw_clear(w);
	return rc;
}

static int path_check(const char *path)
{
	struct stat st;
	if (path[0] != '/')
		return sx_diag_set(SX_EINVAL, "argument 'path' must be an absolute path");
	if (stat(path, &st) == 0)
		return sx_diag_set(SX_EEXIST, "'%s' exists already", path);
	return 0;
}

/* ---- the export request ---- */

struct export {
	int what, fmt;
	char path[1024], tmp[1100];
	int fd;
	uint64_t bytes;
	struct sx_tabw *w;
	struct evcur cur;
	int has_cur;
	struct sx_req *req;
	int64_t started;
	/* streams */
	uint64_t id;
	struct sx_conn *conn;
	uv_timer_t timer;
	uint32_t seq, acked;
	size_t chunk;
	uint64_t last_ack_ms;
	msgpack_sbuffer all; /* small tables: the whole output */
	size_t sent;
	int ended;
	struct export *next;
};

static struct export *streams;
static int nstreams;
static uint64_t next_stream_id;

static void export_free(struct export *x)
{
	if (!x)
		return;
	sx_tabw_free(x->w);
	if (x->has_cur)
		msgpack_zone_destroy(&x->cur.zone);
	if (x->fd >= 0)
		close(x->fd);
	if (x->tmp[0])
		unlink(x->tmp);
	msgpack_sbuffer_destroy(&x->all);
	free(x);
}

static struct export *export_new(void)
{
	struct export *x = calloc(1, sizeof(*x));
	if (!x) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	x->fd = -1;
	x->started = sx_wall_ms();
	msgpack_sbuffer_init(&x->all);
	return x;
}

/* A writer to x->tmp (xlsx) or to memory. For files, x->tmp is opened. */
static int open_output(struct export *x, int to_file)
{
	if (to_file) {
		snprintf(x->tmp, sizeof(x->tmp), "%s.part", x->path);
		if (x->fmt != SX_FMT_XLSX) {
			x->fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (x->fd < 0) {
				x->tmp[0] = 0;
				return sx_diag_set(errno == ENOENT || errno == ENOTDIR ? SX_EINVAL : SX_EIO,
						   "cannot create '%s.part': %s", x->path, strerror(errno));
			}
		}
	} else if (x->fmt == SX_FMT_XLSX) {
		const char *dir = getenv("TMPDIR");
		snprintf(x->tmp, sizeof(x->tmp), "%s/sx-export-XXXXXX.xlsx", dir && dir[0] ? dir : "/tmp");
		int fd = mkstemps(x->tmp, 5);
		if (fd < 0) {
			x->tmp[0] = 0;
			return sx_diag_set(SX_EIO, "cannot create a temporary file: %s", strerror(errno));
		}
		close(fd);
	}
	x->w = sx_tabw_new(x->fmt, x->tmp);
	return x->w ? 0 : sx_diag_last_code();
}

/* The finished file: rename the .part into place. */
static int commit_file(struct export *x)
{
	if (x->fd >= 0) {
		if (fsync(x->fd) < 0 || close(x->fd) < 0) {
			x->fd = -1;
			return sx_diag_set(SX_EIO, "cannot write '%s': %s", x->tmp, strerror(errno));
		}
		x->fd = -1;
	}
	struct stat st;
	if (stat(x->tmp, &st) == 0)
		x->bytes = (uint64_t)st.st_size;
	if (link(x->tmp, x->path) < 0) /* fails if the path appeared meanwhile: never overwrite */
		return sx_diag_set(errno == EEXIST ? SX_EEXIST : SX_EIO, "cannot create '%s': %s", x->path, strerror(errno));
	unlink(x->tmp);
	x->tmp[0] = 0;
	return 0;
}

static void pack_file_result(msgpack_packer *pk, const struct export *x)
{
	msgpack_pack_map(pk, 6);
	sx_pack_kv_str(pk, "what", what_names[x->what]);
	sx_pack_kv_str(pk, "format", sx_export_format_name(x->fmt));
	sx_pack_kv_str(pk, "path", x->path);
	sx_pack_kv_uint(pk, "rows", sx_tabw_rows(x->w));
	sx_pack_kv_uint(pk, "bytes", x->bytes);
	sx_pack_kv_int(pk, "ms", sx_wall_ms() - x->started);
}

/* events to a file: the job */
static int file_work(struct sx_job *job, void *ud)
{
	struct export *x = ud;
	int rc = 0;
	while (rc == 0 && !x->cur.done) {
		MDB_txn *txn;
		if (sx_job_cancelled(job))
			return SX_ECANCELED;
		if ((rc = sx_store_rtxn_begin(sx__dash_eng->store, &txn)) < 0)
			break;
		rc = ev_chunk(&x->cur, txn, x->w, EV_TXN_ROWS, FILE_FLUSH_BYTES);
		sx_store_rtxn_end(sx__dash_eng->store, txn);
		if (rc == 0 && x->fd >= 0)
			rc = drain(x->fd, x->w, &x->bytes);
		if (x->cur.started && x->cur.to > x->cur.from) {
			char msg[64];
			snprintf(msg, sizeof(msg), "%llu rows", (unsigned long long)sx_tabw_rows(x->w));
			sx_job_progress(job, (double)(x->cur.t - x->cur.from) / (double)(x->cur.to - x->cur.from), msg);
		}
	}
	if (rc == 0 && (rc = sx_tabw_end(x->w)) == 0 && x->fd >= 0)
		rc = drain(x->fd, x->w, &x->bytes);
	if (rc == 0)
		rc = commit_file(x);
	if (rc < 0)
		sx_job_fail(job, sx_diag_last());
	return rc;
}

static void file_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct export *x = ud;
	char msg[256];
	SX_UNUSED(job);
	if (rc == 0) {
		pack_file_result(pk, x);
		pack_file_result(&x->req->pk, x);
	} else {
		snprintf(msg, sizeof(msg), "%s", sx_diag_last());
		sx_diag_set(rc, "%s", msg);
	}
	sx_req_finish(x->req, rc);
	export_free(x);
}

/* ---- streams ---- */

static void stream_close_cb(uv_handle_t *h)
{
	struct export *x = h->data;
	sx_conn_unref(x->conn);
	export_free(x);
}

static void stream_end(struct export *x)
{
	for (struct export **pp = &streams; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	nstreams--;
	uv_timer_stop(&x->timer);
	uv_close((uv_handle_t *)&x->timer, stream_close_cb);
}

static void stream_send(struct export *x, const char *data, size_t len, int last, int rc)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char topic[48];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	sx_pack_kv_uint(&pk, "id", x->id);
	sx_pack_kv_uint(&pk, "seq", x->seq);
	sx_pack_kv_uint(&pk, "rows", sx_tabw_rows(x->w));
	sx_pack_kv_bool(&pk, "last", last);
	if (rc < 0) {
		sx_pack_key(&pk, "error");
		sx_pack_error(&pk, rc, sx_diag_last());
	} else {
		sx_pack_key(&pk, "data");
		if (sx_export_format_is_text(x->fmt)) {
			msgpack_pack_str(&pk, len);
			msgpack_pack_str_body(&pk, data, len);
		} else {
			msgpack_pack_bin(&pk, len);
			msgpack_pack_bin_body(&pk, data, len);
		}
	}
	snprintf(topic, sizeof(topic), "export.%llu", (unsigned long long)x->id);
	sx_conn_notify(x->conn, topic, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	x->seq++;
}

static void stream_tick(uv_timer_t *t)
{
	struct export *x = t->data;
	if (!sx_conn_open(x->conn)) {
		stream_end(x);
		return;
	}
	if (x->seq - x->acked >= STREAM_WINDOW) {
		if (sx_now_ms() - x->last_ack_ms > STREAM_ACK_TIMEOUT_MS) {
			sx_diag_set(SX_ETIMEDOUT, "no export.ack for %d s", STREAM_ACK_TIMEOUT_MS / 1000);
			stream_send(x, NULL, 0, 1, SX_ETIMEDOUT);
			stream_end(x);
			return;
		}
		uv_timer_start(&x->timer, stream_tick, 1000, 0); /* re-checked on ack, and for the timeout */
		return;
	}
	int rc = 0;
	if (x->has_cur) {
		rc = ev_chunk(&x->cur, NULL, x->w, (size_t)-1, x->chunk);
		sx_store_read_end(sx__dash_eng->store);
		if (rc == 0 && x->cur.done)
			rc = sx_tabw_end(x->w);
		if (rc < 0) {
			stream_send(x, NULL, 0, 1, rc);
			stream_end(x);
			return;
		}
		size_t n;
		const char *d = sx_tabw_data(x->w, &n);
		stream_send(x, d, n, x->cur.done, 0);
		sx_tabw_clear(x->w);
		if (x->cur.done) {
			stream_end(x);
			return;
		}
	} else {
		size_t n = x->all.size - x->sent < x->chunk ? x->all.size - x->sent : x->chunk;
		int last = x->sent + n == x->all.size;
		stream_send(x, x->all.data ? x->all.data + x->sent : "", n, last, 0);
		x->sent += n;
		if (last) {
			stream_end(x);
			return;
		}
	}
	/* 1 ms: re-armed with 0 from its own callback, libuv 1.44 runs it again in the same
	 * pass, and the chunks would go out without the loop serving anything else */
	uv_timer_start(&x->timer, stream_tick, 1, 0);
}

static struct export *stream_find(struct sx_req *req, const msgpack_object *args, int64_t *seq)
{
	static const char *const known[] = {"id", "seq", NULL};
	int64_t id;
	if (sx_arg_only(args, known) < 0 || sx_arg_int(args, "id", 1, &id) < 0 ||
	    (seq && sx_arg_int(args, "seq", 1, seq) < 0))
		return NULL;
	for (struct export *x = streams; x; x = x->next)
		if ((int64_t)x->id == id && x->conn == req->conn)
			return x;
	sx_diag_set(SX_ENOENT, "no export stream %lld on this connection", (long long)id);
	return NULL;
}

static int m_ack(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	int64_t seq, id;
	SX_UNUSED(ud);
	struct export *x = stream_find(req, args, &seq);
	if (!x && sx_diag_last_code() == SX_ENOENT && sx_arg_int(args, "id", 1, &id) == 0 && id >= 1 &&
	    (uint64_t)id <= next_stream_id) {
		/* acks race the end of the stream: one for a stream that has ended is fine */
		msgpack_pack_map(pk, 2);
		sx_pack_kv_int(pk, "id", id);
		sx_pack_kv_bool(pk, "ended", 1);
		return 0;
	}
	if (!x)
		return sx_diag_last_code();
	if (seq < 0 || seq >= (int64_t)x->seq)
		return sx_diag_set(SX_EINVAL, "argument 'seq' must be a chunk already sent (0 to %u)", x->seq ? x->seq - 1 : 0);
	if ((uint32_t)seq + 1 > x->acked)
		x->acked = (uint32_t)seq + 1;
	x->last_ack_ms = sx_now_ms();
	uv_timer_start(&x->timer, stream_tick, 0, 0);
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "id", x->id);
	sx_pack_kv_bool(pk, "ended", 0);
	return 0;
}

static int m_cancel(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(ud);
	struct export *x = stream_find(req, args, NULL);
	if (!x)
		return sx_diag_last_code();
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "id", x->id);
	sx_pack_kv_bool(pk, "cancelled", 1);
	sx_diag_set(SX_ECANCELED, "cancelled");
	stream_send(x, NULL, 0, 1, SX_ECANCELED);
	stream_end(x);
	return 0;
}

/* ---- export ---- */

/* The arguments without the export's own keys: the query's arguments. */
static int query_args(const msgpack_object *args, msgpack_zone *z, msgpack_object *out)
{
	uint32_t n = 0, size = args && args->type == MSGPACK_OBJECT_MAP ? args->via.map.size : 0;
	msgpack_object_kv *kv = size ? msgpack_zone_malloc(z, size * sizeof(*kv)) : NULL;
	if (size && !kv)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < size; i++) {
		int mine = 0;
		for (int k = 0; export_keys[k]; k++)
			mine |= sx_obj_streq(&args->via.map.ptr[i].key, export_keys[k]);
		if (!mine)
			kv[n++] = args->via.map.ptr[i];
	}
	out->type = MSGPACK_OBJECT_MAP;
	out->via.map.size = n;
	out->via.map.ptr = kv;
	return 0;
}

static int read_file_into(const char *path, msgpack_sbuffer *sb, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sx_diag_set(SX_EIO, "cannot read '%s': %s", path, strerror(errno));
	char buf[65536];
	ssize_t k;
	int rc = 0;
	while ((k = read(fd, buf, sizeof(buf))) > 0) {
		if (sb->size + (size_t)k > max) {
			rc = sx_diag_set(SX_E2BIG, "the export is larger than %zu bytes: pass 'path' or 'stream'", max);
			break;
		}
		msgpack_sbuffer_write(sb, buf, (size_t)k);
	}
	if (k < 0 && rc == 0)
		rc = sx_diag_set(SX_EIO, "cannot read '%s': %s", path, strerror(errno));
	close(fd);
	return rc;
}

static int m_export(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	const char *what, *fmt = "json";
	size_t wlen, flen = 4;
	int stream = 0;
	int64_t chunk = CHUNK_DEFAULT;
	msgpack_zone z;
	msgpack_object qargs;
	int rc;
	SX_UNUSED(ud);
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "export needs {what, format?, ...}");
	if ((rc = sx_arg_str(args, "what", 1, &what, &wlen)) < 0 || (rc = sx_arg_str(args, "format", 0, &fmt, &flen)) < 0 ||
	    (rc = sx_arg_bool(args, "stream", 0, &stream)) < 0 || (rc = sx_arg_int(args, "chunk_bytes", 0, &chunk)) < 0)
		return rc;
	struct export *x = export_new();
	if (!x)
		return SX_ENOMEM;
	x->what = -1;
	for (int i = 0; i < W_COUNT; i++)
		if (strlen(what_names[i]) == wlen && !memcmp(what_names[i], what, wlen))
			x->what = i;
	x->fmt = sx_export_format_parse(fmt, flen);
	rc = sx_arg_cstr(args, "path", 0, x->path, sizeof(x->path));
	if (rc == 0 && x->what < 0)
		rc = sx_diag_set(SX_EINVAL, "argument 'what' must be metrics, cohort, retention, funnel, dashboard or events");
	else if (rc == 0 && x->fmt < 0)
		rc = sx_diag_set(SX_EINVAL, "argument 'format' must be csv, json, ndjson, msgpack or xlsx");
	else if (rc == 0 && (chunk < CHUNK_MIN || chunk > CHUNK_MAX))
		rc = sx_diag_set(SX_EINVAL, "argument 'chunk_bytes' must be %d to %u", CHUNK_MIN, CHUNK_MAX);
	else if (rc == 0 && x->path[0] && stream)
		rc = sx_diag_set(SX_EINVAL, "arguments 'path' and 'stream' exclude each other");
	else if (rc == 0 && stream && x->fmt == SX_FMT_XLSX)
		rc = sx_diag_set(SX_EINVAL, "xlsx is not streamed: pass 'path', or ask for it inline");
	else if (rc == 0 && x->path[0] && req->role < SX_ROLE_ADMIN)
		rc = sx_diag_set(SX_EACCES, "exports to a server path need the admin role");
	else if (rc == 0 && x->path[0])
		rc = path_check(x->path);
	else if (rc == 0 && stream && !req->conn)
		rc = sx_diag_set(SX_ECANCELED, "connection closed");
	else if (rc == 0 && stream && nstreams >= STREAMS_MAX)
		rc = sx_diag_set(SX_EBUSY, "at most %d export streams at a time", STREAMS_MAX);
	if (rc < 0) {
		export_free(x);
		return rc == SX_E2BIG ? sx_diag_set(SX_EINVAL, "argument 'path' is too long") : rc;
	}
	msgpack_zone_init(&z, 1024);
	if ((rc = query_args(args, &z, &qargs)) == 0 && x->what == W_EVENTS && (rc = ev_parse(&qargs, &x->cur)) == 0)
		x->has_cur = 1;
	if (rc == 0)
		rc = open_output(x, x->path[0] != 0);
	if (rc == 0 && x->what == W_EVENTS)
		rc = sx_tabw_columns(x->w, ev_cols, SX_ARRAY_SIZE(ev_cols));
	if (rc == 0 && x->what != W_EVENTS)
		rc = table_fill(x->what, &qargs, x->w);
	else if (rc == 0 && x->fmt != SX_FMT_XLSX && !x->path[0] && !stream) {
		/* raw events inline: bounded by the inline limits */
		while (rc == 0 && !x->cur.done) {
			size_t n;
			rc = ev_chunk(&x->cur, NULL, x->w, INLINE_ROWS_MAX + 1, INLINE_BYTES_MAX + 1);
			sx_tabw_data(x->w, &n);
			if (rc == 0 && (n > INLINE_BYTES_MAX || sx_tabw_rows(x->w) > INLINE_ROWS_MAX))
				rc = sx_diag_set(SX_E2BIG, "more than %d rows or %u bytes: pass 'path' or 'stream'",
						 INLINE_ROWS_MAX, INLINE_BYTES_MAX);
		}
	} else if (rc == 0 && x->fmt == SX_FMT_XLSX && !x->path[0]) {
		while (rc == 0 && !x->cur.done) {
			rc = ev_chunk(&x->cur, NULL, x->w, INLINE_ROWS_MAX + 1, (size_t)-1);
			if (rc == 0 && sx_tabw_rows(x->w) > INLINE_ROWS_MAX)
				rc = sx_diag_set(SX_E2BIG, "more than %d rows: pass 'path'", INLINE_ROWS_MAX);
		}
	}
	msgpack_zone_destroy(&z);
	if (rc < 0) {
		export_free(x);
		return rc;
	}
	if (x->path[0] && x->what == W_EVENTS) {
		x->req = req;
		int64_t id = sx_jobs_start(sx__dash_eng->jobs, "export", file_work, file_done, x);
		if (id < 0) {
			export_free(x);
			return (int)id;
		}
		return SX_RPC_DEFER;
	}
	if (x->path[0]) {
		if ((rc = sx_tabw_end(x->w)) == 0 && x->fd >= 0)
			rc = drain(x->fd, x->w, &x->bytes);
		if (rc == 0)
			rc = commit_file(x);
		if (rc == 0)
			pack_file_result(pk, x);
		export_free(x);
		return rc;
	}
	if (stream) {
		if (!x->has_cur) {
			if ((rc = sx_tabw_end(x->w)) < 0) {
				export_free(x);
				return rc;
			}
			size_t n;
			const char *d = sx_tabw_data(x->w, &n);
			if (n)
				msgpack_sbuffer_write(&x->all, d, n);
			sx_tabw_clear(x->w);
		}
		x->id = ++next_stream_id;
		x->conn = req->conn;
		sx_conn_ref(x->conn);
		x->chunk = (size_t)chunk;
		x->last_ack_ms = sx_now_ms();
		uv_timer_init(sx__dash_eng->loop, &x->timer);
		x->timer.data = x;
		uv_timer_start(&x->timer, stream_tick, 0, 0);
		x->next = streams;
		streams = x;
		nstreams++;
		char topic[48];
		snprintf(topic, sizeof(topic), "export.%llu", (unsigned long long)x->id);
		msgpack_pack_map(pk, 6);
		sx_pack_kv_uint(pk, "id", x->id);
		sx_pack_kv_str(pk, "topic", topic);
		sx_pack_kv_str(pk, "what", what_names[x->what]);
		sx_pack_kv_str(pk, "format", sx_export_format_name(x->fmt));
		sx_pack_kv_uint(pk, "chunk_bytes", x->chunk);
		sx_pack_kv_uint(pk, "window", STREAM_WINDOW);
		return 0;
	}
	/* inline */
	if ((rc = sx_tabw_end(x->w)) == 0 && x->fmt == SX_FMT_XLSX)
		rc = read_file_into(x->tmp, &x->all, INLINE_BYTES_MAX);
	size_t n;
	const char *d = x->fmt == SX_FMT_XLSX ? x->all.data : sx_tabw_data(x->w, &n);
	if (x->fmt == SX_FMT_XLSX)
		n = x->all.size;
	if (rc == 0 && n > INLINE_BYTES_MAX)
		rc = sx_diag_set(SX_E2BIG, "the export is larger than %u bytes: pass 'path' or 'stream'", INLINE_BYTES_MAX);
	if (rc == 0) {
		msgpack_pack_map(pk, 5);
		sx_pack_kv_str(pk, "what", what_names[x->what]);
		sx_pack_kv_str(pk, "format", sx_export_format_name(x->fmt));
		sx_pack_kv_uint(pk, "rows", sx_tabw_rows(x->w));
		sx_pack_kv_uint(pk, "bytes", n);
		sx_pack_key(pk, "data");
		if (sx_export_format_is_text(x->fmt)) {
			msgpack_pack_str(pk, n);
			msgpack_pack_str_body(pk, d ? d : "", n);
		} else {
			msgpack_pack_bin(pk, n);
			msgpack_pack_bin_body(pk, d ? d : "", n);
		}
	}
	export_free(x);
	return rc;
}

int sx__dash_export_start(struct sx_engine *e)
{
	streams = NULL;
	nstreams = 0;
	const struct sx_method methods[] = {
		{"export", SX_ROLE_READER, m_export, NULL,
		 "metrics|cohort|retention|funnel|dashboard|events as csv|json|ndjson|msgpack|xlsx, inline, to a path or streamed"},
		{"export.ack", SX_ROLE_READER, m_ack, NULL, "acknowledge a streamed export's chunks {id, seq}"},
		{"export.cancel", SX_ROLE_READER, m_cancel, NULL, "stop a streamed export {id}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return 0;
}

void sx__dash_export_stop(struct sx_engine *e)
{
	SX_UNUSED(e);
	while (streams)
		stream_end(streams);
}
