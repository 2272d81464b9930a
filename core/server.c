#include "core/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <sodium.h>

#include "core/log.h"
#include "core/sx.h"
#include "store/store.h"

#define READ_CHUNK (64 * 1024)

struct sub {
	struct sub *next;
	char topic[];
};

struct sx_conn {
	uv_tcp_t tcp;
	struct sx_server *srv;
	int refs;
	int open;      /* not yet closing */
	int reading;
	int eof;
	int close_after_write;
	int loopback;
	int role;
	int auth_failures;
	uint8_t *rbuf;
	size_t roff, rlen, rcap;
	struct sx_frame_scan fs;
	uint64_t last_read_ms, partial_since_ms, closing_since_ms;
	size_t closing_queued; /* libuv's write queue when closing_since_ms was set */
	uint64_t stalled_since_ms; /* reading paused because the peer does not read */
	msgpack_sbuffer obuf;
	size_t out_pending;
	uint32_t inflight;
	int dirty;
	struct sub *subs;
	struct sx_req *live; /* requests not answered yet */
	struct sx_conn *next, *prev, *dnext;
};

struct wreq {
	uv_write_t w;
	struct sx_conn *c;
	size_t len;
	char *data;
};

struct sx_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_timer_t sweep;
	struct sx_rpc *rpc;
	struct sx_store *store;
	struct sx_server_limits lim;
	struct sx_token *tokens;
	size_t ntokens;
	int port;
	int listening, shutting_down;
	struct sx_conn *conns;
	struct sx_conn *dirty;
	/* replies waiting for a durable batch, oldest first: a commit releases them in the
	 * order their requests came */
	struct sx_req *waiting, *waiting_tail;
	struct sx_req *pool;    /* finished requests kept for reuse */
	uint32_t npool;
	uint64_t nconns, conns_total, requests_total, errors_total, nwaiting;
	uint64_t started_ms;
	uint64_t sec_start_ms;
	uint64_t sec_counts[11];
	int sec_idx;
};

static void conn_process(struct sx_conn *c);
static void conn_flush(struct sx_conn *c);
static void conn_close(struct sx_conn *c);
static void conn_update_reading(struct sx_conn *c);

/* ---- requests ---- */

static void req_unlink_live(struct sx_req *req)
{
	struct sx_conn *c = req->conn;
	if (!c)
		return;
	for (struct sx_req **pp = &c->live; *pp; pp = &(*pp)->cnext)
		if (*pp == req) {
			*pp = req->cnext;
			break;
		}
	req->cnext = NULL;
}

#define REQ_POOL_MAX 1024
#define REQ_KEEP_OUT (64 * 1024)

static void req_destroy(struct sx_req *req)
{
	msgpack_zone_destroy(&req->zone);
	msgpack_sbuffer_destroy(&req->out);
	free(req);
}

/* Finished requests go back to a pool with their zone and reply buffer, so
 * that serving a request allocates nothing in the common case. */
static void req_free(struct sx_req *req)
{
	struct sx_server *srv = req->srv;
	if (req->conn)
		sx_conn_unref(req->conn);
	if (srv->npool >= REQ_POOL_MAX || req->out.alloc > REQ_KEEP_OUT) {
		req_destroy(req);
		return;
	}
	msgpack_zone_clear(&req->zone);
	msgpack_sbuffer_clear(&req->out);
	req->next = srv->pool;
	srv->pool = req;
	srv->npool++;
}

static struct sx_req *req_new(struct sx_conn *c)
{
	struct sx_server *srv = c->srv;
	struct sx_req *req = srv->pool;
	if (req) {
		srv->pool = req->next;
		srv->npool--;
		msgpack_zone zone = req->zone;
		msgpack_sbuffer out = req->out;
		memset(req, 0, sizeof(*req));
		req->zone = zone;
		req->out = out;
	} else {
		req = calloc(1, sizeof(*req));
		if (!req)
			return NULL;
		if (!msgpack_zone_init(&req->zone, 2048)) {
			free(req);
			return NULL;
		}
		msgpack_sbuffer_init(&req->out);
	}
	msgpack_packer_init(&req->pk, &req->out, msgpack_sbuffer_write);
	req->srv = c->srv;
	req->conn = c;
	req->role = c->role;
	sx_conn_ref(c);
	req->cnext = c->live;
	c->live = req;
	return req;
}

static void mark_dirty(struct sx_conn *c)
{
	if (!c->dirty) {
		c->dirty = 1;
		c->dnext = c->srv->dirty;
		c->srv->dirty = c;
	}
}

/* Packs an error reply for msgid (nil when msgid_valid is 0) into buf. */
static void pack_error_reply(msgpack_packer *pk, int has_id, uint64_t msgid, int rc, const char *msg)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint8(pk, 1);
	if (has_id)
		msgpack_pack_uint64(pk, msgid);
	else
		msgpack_pack_nil(pk);
	sx_pack_error(pk, rc, msg);
	msgpack_pack_nil(pk);
}

/* [1, msgid, nil, — the result follows — in one write: every request pays for it. The
 * msgid is packed as msgpack_pack_uint32 would (its smallest form). */
static void pack_reply_head(msgpack_sbuffer *out, uint32_t msgid)
{
	uint8_t h[8] = {0x94, 0x01};
	size_t n = 2;
	if (msgid <= 0x7f) {
		h[n++] = (uint8_t)msgid;
	} else {
		int w = msgid <= 0xff ? 1 : msgid <= 0xffff ? 2 : 4;
		h[n++] = w == 1 ? 0xcc : w == 2 ? 0xcd : 0xce;
		for (int i = w - 1; i >= 0; i--)
			h[n++] = (uint8_t)(msgid >> (8 * i));
	}
	h[n++] = 0xc0;
	msgpack_sbuffer_write(out, (const char *)h, n);
}

static void send_reply(struct sx_req *req)
{
	struct sx_conn *c = req->conn;
	req_unlink_live(req);
	if (c) {
		c->inflight--;
		if (c->open && !req->notification) {
			msgpack_sbuffer_write(&c->obuf, req->out.data, req->out.size);
			mark_dirty(c);
		}
		if (c->eof && c->inflight == 0)
			c->close_after_write = 1;
		conn_update_reading(c);
	}
	req_free(req);
}

static void wait_add(struct sx_server *srv, struct sx_req *req)
{
	req->next = NULL;
	req->prev = srv->waiting_tail;
	if (srv->waiting_tail)
		srv->waiting_tail->next = req;
	else
		srv->waiting = req;
	srv->waiting_tail = req;
	srv->nwaiting++;
}

static void wait_del(struct sx_server *srv, struct sx_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		srv->waiting = req->next;
	if (req->next)
		req->next->prev = req->prev;
	else
		srv->waiting_tail = req->prev;
	srv->nwaiting--;
}

static void reply_error(struct sx_req *req, int rc, const char *msg)
{
	req->srv->errors_total++;
	msgpack_sbuffer_clear(&req->out);
	pack_error_reply(&req->pk, 1, req->msgid, rc, msg);
}

static void complete(struct sx_req *req, int rc)
{
	struct sx_server *srv = req->srv;
	if (rc < 0) {
		reply_error(req, rc, sx_diag_last());
	} else if (req->out.size == req->result_off) {
		msgpack_pack_nil(&req->pk); /* a handler that packed nothing answers nil */
	}
	if (req->wait_seq && req->wait_seq > sx_store_durable_seq(srv->store))
		wait_add(srv, req);
	else
		send_reply(req);
}

void sx_req_finish(struct sx_req *req, int rc)
{
	struct sx_server *srv = req->srv;
	if (rc < 0) {
		req->wait_seq = 0;
	} else {
		/* The deferred work may have written, in this turn or an earlier one whose
		 * batch is still being committed: wait for the newest batch there is. */
		uint64_t f = sx_store_newest_seq(srv->store);
		if (f > req->wait_seq)
			req->wait_seq = f;
	}
	complete(req, rc);
}

void sx_server_commit_cb(uint64_t seq, int rc, void *ud)
{
	struct sx_server *srv = ud;
	struct sx_req *req = srv->waiting, *next;
	for (; req; req = next) {
		next = req->next;
		if (rc == 0 ? req->wait_seq <= seq : req->wait_seq == seq) {
			wait_del(srv, req);
			if (rc < 0)
				reply_error(req, rc, sx_diag_last());
			send_reply(req);
		}
	}
}

/* ---- dispatch ---- */

static int has_dup_keys(const msgpack_object *map)
{
	uint32_t n = map->via.map.size;
	if (n > 64)
		return 0; /* argument maps are small; a big one is the method's to judge */
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i + 1; j < n; j++) {
			const msgpack_object *a = &map->via.map.ptr[i].key, *b = &map->via.map.ptr[j].key;
			if (a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR &&
			    a->via.str.size == b->via.str.size &&
			    memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0)
				return 1;
		}
	return 0;
}

static void dispatch(struct sx_conn *c, const uint8_t *frame, size_t len)
{
	struct sx_server *srv = c->srv;
	struct sx_req *req = req_new(c);
	if (!req) {
		conn_close(c);
		return;
	}
	srv->requests_total++;
	srv->sec_counts[srv->sec_idx]++;
	c->inflight++;

	uint8_t *copy = msgpack_zone_malloc(&req->zone, len);
	msgpack_object msg;
	if (!copy || sx_frame_decode(memcpy(copy, frame, len), len, &req->zone, &msg) < 0) {
		reply_error(req, SX_EPARSE, "malformed MessagePack frame");
		c->close_after_write = 1;
		send_reply(req);
		return;
	}

	int rc = SX_EPROTO;
	const char *why = "a message must be [0, msgid, method, params] or [2, method, params]";
	const msgpack_object *a = msg.via.array.ptr, *mname = NULL, *params = NULL;
	int has_id = 0;
	/* Echo a usable msgid even when the rest of the message is wrong. */
	if (msg.type == MSGPACK_OBJECT_ARRAY && msg.via.array.size >= 2 &&
	    a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[0].via.u64 != 2 &&
	    a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX) {
		req->msgid = a[1].via.u64;
		has_id = 1;
	}
	if (msg.type == MSGPACK_OBJECT_ARRAY && msg.via.array.size >= 3 &&
	    a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (a[0].via.u64 == 0 && msg.via.array.size == 4) {
			if (has_id) {
				mname = &a[2];
				params = &a[3];
			} else {
				why = "msgid must be an unsigned 32-bit integer";
			}
		} else if (a[0].via.u64 == 2 && msg.via.array.size == 3) {
			req->notification = 1;
			mname = &a[1];
			params = &a[2];
		} else if (a[0].via.u64 == 1) {
			why = "the server does not accept responses";
		}
	}
	if (mname) {
		if (mname->type != MSGPACK_OBJECT_STR || mname->via.str.size == 0 || mname->via.str.size > 256)
			why = "method must be a string of 1 to 256 bytes", mname = NULL;
		else if (!sx_utf8_valid(mname->via.str.ptr, mname->via.str.size) ||
			 memchr(mname->via.str.ptr, 0, mname->via.str.size))
			why = "method name is not valid UTF-8", mname = NULL;
		else if (params->type != MSGPACK_OBJECT_ARRAY)
			why = "params must be an array", mname = NULL;
	}
	if (!mname) {
		if (req->notification) {
			send_reply(req);
			return;
		}
		srv->errors_total++;
		msgpack_sbuffer_clear(&req->out);
		pack_error_reply(&req->pk, has_id, req->msgid, rc, why);
		send_reply(req);
		return;
	}
	char *name = msgpack_zone_malloc(&req->zone, mname->via.str.size + 1);
	memcpy(name, mname->via.str.ptr, mname->via.str.size);
	name[mname->via.str.size] = '\0';
	req->method = name;

	pack_reply_head(&req->out, (uint32_t)req->msgid);
	req->result_off = req->out.size;

	struct sx_method m;
	const msgpack_object *args = NULL;
	if ((rc = sx_rpc_resolve(srv->rpc, name, mname->via.str.size, &m)) < 0) {
		complete(req, rc);
		return;
	}
	if (req->role < m.role) {
		if (req->role == SX_ROLE_NONE)
			sx_diag_set(rc = SX_EAUTH, "'%s' needs authentication (call auth first)", name);
		else
			sx_diag_set(rc = SX_EACCES, "'%s' needs the %s role; this connection is %s", name,
				    sx_role_name(m.role), sx_role_name(req->role));
		complete(req, rc);
		return;
	}
	if (params->via.array.size == 1 && (params->via.array.ptr[0].type == MSGPACK_OBJECT_MAP ||
					    params->via.array.ptr[0].type == MSGPACK_OBJECT_NIL)) {
		args = &params->via.array.ptr[0];
		if (args->type == MSGPACK_OBJECT_MAP && has_dup_keys(args)) {
			complete(req, sx_diag_set(SX_EINVAL, "the argument map repeats a key"));
			return;
		}
	} else if (params->via.array.size != 0) {
		complete(req, sx_diag_set(SX_EPROTO, "params must be [] or [{named arguments}]"));
		return;
	}

	sx_diag_clear();
	sx_store_req_begin(srv->store);
	uint64_t sp = sx_store_savepoint(srv->store);
	rc = m.fn(req, args, &req->pk, m.ud);
	if (rc < 0)
		sx_store_rollback(srv->store, sp);
	req->wait_seq = sx_store_req_end(srv->store);
	if (rc < 0)
		req->wait_seq = 0; /* its writes are undone: an error depends on nothing pending */
	if (rc == SX_RPC_DEFER)
		return;
	if (rc < 0 && !*sx_diag_last())
		sx_diag_set(rc, "%s", sx_error_code(rc));
	complete(req, rc);
}

/* ---- connections ---- */

void sx_conn_ref(struct sx_conn *c) { c->refs++; }

static void conn_free(struct sx_conn *c)
{
	struct sub *s, *n;
	for (s = c->subs; s; s = n) {
		n = s->next;
		free(s);
	}
	msgpack_sbuffer_destroy(&c->obuf);
	free(c->rbuf);
	free(c);
}

void sx_conn_unref(struct sx_conn *c)
{
	if (--c->refs == 0)
		conn_free(c);
}

int sx_conn_open(const struct sx_conn *c) { return c->open; }
int sx_conn_role(const struct sx_conn *c) { return c->role; }
int sx_conn_auth_failures(const struct sx_conn *c) { return c->auth_failures; }

void sx_conn_close_after_reply(struct sx_conn *c)
{
	if (!c->open)
		return;
	c->close_after_write = 1;
	mark_dirty(c);
}

static void close_cb(uv_handle_t *h)
{
	struct sx_conn *c = h->data;
	sx_conn_unref(c);
}

static void conn_close(struct sx_conn *c)
{
	if (!c->open)
		return;
	struct sx_server *srv = c->srv;
	c->open = 0;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	/* Requests still running keep their own reference; their replies are dropped. */
	uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static void write_cb(uv_write_t *w, int status)
{
	struct wreq *wr = (struct wreq *)w;
	struct sx_conn *c = wr->c;
	c->out_pending -= wr->len;
	free(wr->data);
	free(wr);
	if (status < 0)
		conn_close(c);
	else if (c->open) {
		if (c->close_after_write && c->out_pending == 0 && c->obuf.size == 0)
			conn_close(c);
		else
			conn_update_reading(c);
	}
	sx_conn_unref(c);
}

/* Writes what c has to write. c->dirty is cleared only where the dirty list
 * drops c (sx_server_turn_end): a connection flushed early (the sweep, accept)
 * stays on the list, and a second mark_dirty must not push it twice, which
 * would cut the list and strand the connections behind it. */
static void conn_flush(struct sx_conn *c)
{
	if (!c->open)
		return;
	/* With nothing queued in libuv, write at once: most replies fit the socket
	 * buffer, and uv_write would re-arm the poll watcher for every reply. */
	if (c->obuf.size && c->out_pending == 0) {
		uv_buf_t b = uv_buf_init(c->obuf.data, (unsigned)c->obuf.size);
		int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (n < 0 && n != UV_EAGAIN) {
			conn_close(c);
			return;
		}
		if (n > 0) {
			memmove(c->obuf.data, c->obuf.data + n, c->obuf.size - (size_t)n);
			c->obuf.size -= (size_t)n;
		}
	}
	if (c->obuf.size) {
		struct wreq *wr = malloc(sizeof(*wr));
		if (!wr) {
			conn_close(c);
			return;
		}
		wr->c = c;
		wr->len = c->obuf.size;
		wr->data = msgpack_sbuffer_release(&c->obuf);
		uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
		c->out_pending += wr->len;
		sx_conn_ref(c);
		if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
			c->out_pending -= wr->len;
			free(wr->data);
			free(wr);
			sx_conn_unref(c);
			conn_close(c);
			return;
		}
		if (c->out_pending > c->srv->lim.max_output_bytes) {
			sx_log_warn("dropping a connection whose unread replies exceed %zu bytes",
				 c->srv->lim.max_output_bytes);
			conn_close(c);
			return;
		}
	} else if (c->close_after_write && c->out_pending == 0) {
		conn_close(c);
		return;
	}
	conn_update_reading(c);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct sx_conn *c = h->data;
	SX_UNUSED(hint);
	if (c->roff && c->roff == c->rlen)
		c->roff = c->rlen = 0;
	if (c->rcap - c->rlen < READ_CHUNK) {
		if (c->roff) {
			memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
			c->rlen -= c->roff;
			c->roff = 0;
		}
		if (c->rcap - c->rlen < READ_CHUNK) {
			size_t cap = c->rcap ? c->rcap : READ_CHUNK;
			while (cap - c->rlen < READ_CHUNK)
				cap *= 2;
			uint8_t *nb = realloc(c->rbuf, cap);
			if (!nb) {
				buf->base = NULL;
				buf->len = 0;
				return;
			}
			c->rbuf = nb;
			c->rcap = cap;
		}
	}
	buf->base = (char *)c->rbuf + c->rlen;
	buf->len = c->rcap - c->rlen;
}

static void protocol_error(struct sx_conn *c, int rc)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, &c->obuf, msgpack_sbuffer_write);
	pack_error_reply(&pk, 0, 0, rc, sx_diag_last());
	c->srv->errors_total++;
	c->close_after_write = 1;
	c->roff = c->rlen = 0;
	mark_dirty(c);
	conn_update_reading(c);
}

static int can_process(const struct sx_conn *c)
{
	return c->open && !c->close_after_write && c->inflight < c->srv->lim.max_inflight &&
	       c->out_pending + c->obuf.size <= c->srv->lim.max_output_bytes / 2;
}

static void conn_process(struct sx_conn *c)
{
	sx_conn_ref(c);
	while (c->rlen > c->roff && can_process(c)) {
		long n = sx_frame_scan(&c->fs, c->rbuf + c->roff, c->rlen - c->roff,
				       c->srv->lim.max_frame_bytes, c->srv->lim.max_depth);
		if (n < 0) {
			protocol_error(c, (int)n);
			break;
		}
		if (n == 0) {
			if (!c->partial_since_ms)
				c->partial_since_ms = sx_now_ms();
			break;
		}
		const uint8_t *frame = c->rbuf + c->roff;
		c->roff += (size_t)n;
		sx_frame_scan_reset(&c->fs);
		c->partial_since_ms = 0;
		dispatch(c, frame, (size_t)n);
	}
	if (c->roff == c->rlen)
		c->roff = c->rlen = 0;
	conn_update_reading(c);
	sx_conn_unref(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct sx_conn *c = s->data;
	SX_UNUSED(buf);
	if (nread < 0) {
		if (nread == UV_EOF) {
			c->eof = 1;
			uv_read_stop(s);
			c->reading = 0;
			if (c->inflight == 0) {
				c->close_after_write = 1;
				mark_dirty(c);
			}
		} else {
			conn_close(c);
		}
		return;
	}
	if (nread == 0)
		return;
	c->rlen += (size_t)nread;
	c->last_read_ms = sx_now_ms();
	conn_process(c);
}

/* Reads only while the connection can take more: bounded requests in flight
 * and bounded unread output. */
static void conn_update_reading(struct sx_conn *c)
{
	if (!c->open || c->eof)
		return;
	int want = can_process(c);
	int stalled = c->out_pending + c->obuf.size > c->srv->lim.max_output_bytes / 2;
	if (!stalled)
		c->stalled_since_ms = 0;
	else if (!c->stalled_since_ms)
		c->stalled_since_ms = sx_now_ms();
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = 1;
		if (c->rlen > c->roff)
			conn_process(c);
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

static int is_loopback(uv_tcp_t *t)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 1;
		return memcmp(in6->sin6_addr.s6_addr, v4mapped, 12) == 0 && in6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

static void accept_cb(uv_stream_t *ls, int status)
{
	struct sx_server *srv = ls->data;
	if (status < 0)
		return;
	struct sx_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->srv = srv;
	c->refs = 1;
	msgpack_sbuffer_init(&c->obuf);
	sx_frame_scan_reset(&c->fs);
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, close_cb);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->open = 1;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	srv->conns_total++;
	c->last_read_ms = sx_now_ms();
	c->loopback = is_loopback(&c->tcp);
	c->role = srv->ntokens ? SX_ROLE_NONE : SX_ROLE_ADMIN;
	if (!srv->ntokens && !c->loopback) {
		sx_diag_set(SX_EACCES, "no tokens are configured: only loopback clients are served");
		protocol_error(c, SX_EACCES);
		conn_flush(c);
		return;
	}
	if (srv->nconns > srv->lim.max_connections || srv->shutting_down) {
		sx_diag_set(SX_ELIMIT, srv->shutting_down ? "the server is shutting down"
							  : "too many connections (max_connections)");
		protocol_error(c, SX_ELIMIT);
		conn_flush(c);
		return;
	}
	conn_update_reading(c);
}

/* What c has still to deliver: libuv's queue and the kernel's send queue. The
 * kernel's counts too: libuv writes again only once a good part of the socket
 * buffer is free, which at a slow reader's pace can take longer than a second. */
static size_t unsent_bytes(struct sx_conn *c)
{
	size_t n = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
	uv_os_fd_t fd;
	int k = 0;
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, TIOCOUTQ, &k) == 0 && k > 0)
		n += (size_t)k;
	return n;
}

static void sweep_cb(uv_timer_t *t)
{
	struct sx_server *srv = t->data;
	uint64_t now = sx_now_ms();
	if (now - srv->sec_start_ms >= 1000) {
		srv->sec_start_ms = now;
		srv->sec_idx = (srv->sec_idx + 1) % 11;
		srv->sec_counts[srv->sec_idx] = 0;
	}
	struct sx_conn *c = srv->conns, *next;
	for (; c; c = next) {
		next = c->next;
		if (c->close_after_write) {
			/* closed once nothing has been written for a second (the peer does not
			 * read, e.g. its error); a half-closed peer still reading a large reply
			 * keeps the queue shrinking and is given its time */
			size_t queued = unsent_bytes(c);
			if (!c->closing_since_ms || queued < c->closing_queued) {
				c->closing_since_ms = now;
				c->closing_queued = queued;
			} else if (now - c->closing_since_ms > 1000) {
				conn_close(c);
			}
			continue;
		}
		if (c->stalled_since_ms && now - c->stalled_since_ms > srv->lim.idle_timeout_ms) {
			sx_log_warn("dropping a connection that has not read its replies for %u ms",
				    srv->lim.idle_timeout_ms);
			conn_close(c);
		} else if (c->partial_since_ms && now - c->partial_since_ms > srv->lim.frame_timeout_ms) {
			sx_diag_set(SX_ETIMEDOUT, "a frame took longer than %u ms to arrive", srv->lim.frame_timeout_ms);
			protocol_error(c, SX_ETIMEDOUT);
			conn_flush(c);
		} else if (c->inflight == 0 && !c->partial_since_ms && c->out_pending == 0 && !c->subs &&
			   now - c->last_read_ms > srv->lim.idle_timeout_ms) {
			conn_close(c);
		}
	}
}

void sx_server_turn_end(struct sx_server *srv)
{
	/* first: a batch committed on the loop answers its writers right here */
	sx_store_flush(srv->store);
	while (srv->dirty) {
		struct sx_conn *c = srv->dirty;
		srv->dirty = c->dnext;
		c->dnext = NULL;
		c->dirty = 0;
		conn_flush(c);
	}
}

/* ---- subscriptions and notifications ---- */

int sx_server_subscribe(struct sx_server *srv, struct sx_conn *c, const char *topic)
{
	SX_UNUSED(srv);
	int n = 0;
	for (struct sub *s = c->subs; s; s = s->next, n++)
		if (strcmp(s->topic, topic) == 0)
			return 0;
	if (n >= 256)
		return sx_diag_set(SX_ELIMIT, "a connection may hold at most 256 subscriptions");
	size_t len = strlen(topic);
	struct sub *s = malloc(sizeof(*s) + len + 1);
	if (!s)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	memcpy(s->topic, topic, len + 1);
	s->next = c->subs;
	c->subs = s;
	return 0;
}

int sx_server_unsubscribe(struct sx_server *srv, struct sx_conn *c, const char *topic)
{
	SX_UNUSED(srv);
	for (struct sub **pp = &c->subs; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->topic, topic) == 0) {
			struct sub *s = *pp;
			*pp = s->next;
			free(s);
			return 0;
		}
	return sx_diag_set(SX_ENOENT, "not subscribed to '%s'", topic);
}

int sx_conn_notify(struct sx_conn *c, const char *topic, const void *payload, size_t len)
{
	if (!c->open || c->close_after_write)
		return 0;
	msgpack_packer pk;
	msgpack_packer_init(&pk, &c->obuf, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint8(&pk, 2);
	sx_pack_str(&pk, topic);
	msgpack_pack_array(&pk, 1);
	msgpack_sbuffer_write(&c->obuf, payload, len);
	mark_dirty(c);
	return 1;
}

int sx_server_publish(struct sx_server *srv, const char *topic, const void *payload, size_t len)
{
	int n = 0;
	for (struct sx_conn *c = srv->conns; c; c = c->next)
		for (struct sub *s = c->subs; s; s = s->next)
			if (strcmp(s->topic, topic) == 0) {
				n += sx_conn_notify(c, topic, payload, len);
				break;
			}
	return n;
}

int sx_server_auth(struct sx_server *srv, struct sx_conn *c, const char *token, size_t len)
{
	uint8_t h[32];
	crypto_hash_sha256(h, (const unsigned char *)token, len);
	for (size_t i = 0; i < srv->ntokens; i++)
		if (sodium_memcmp(h, srv->tokens[i].sha256, 32) == 0) {
			c->role = srv->tokens[i].role;
			c->auth_failures = 0;
			return 0;
		}
	c->auth_failures++;
	return sx_diag_set(SX_EAUTH, "invalid token");
}

/* ---- server ---- */

static int parse_listen(const char *listen, struct sockaddr_storage *ss)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host))
		return sx_diag_set(SX_EINVAL, "listen must be HOST:PORT (got '%s')", listen);
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return sx_diag_set(SX_EINVAL, "bad port in '%s'", listen);
	char *h = host;
	if (h[0] == '[') {
		h++;
		h[strlen(h) - 1] = '\0';
	}
	if (uv_ip4_addr(h, (int)port, (struct sockaddr_in *)ss) == 0)
		return 0;
	if (uv_ip6_addr(h, (int)port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
	return sx_diag_set(SX_EINVAL, "listen: '%s' is not an IP address", host);
}

struct sx_server *sx_server_new(uv_loop_t *loop, struct sx_rpc *rpc, struct sx_store *store,
				const struct sx_server_opts *o)
{
	if (sodium_init() < 0) {
		sx_diag_set(SX_EINTERNAL, "libsodium failed to initialise");
		return NULL;
	}
	struct sx_server *srv = calloc(1, sizeof(*srv));
	struct sockaddr_storage ss;
	int rc;
	if (!srv) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->rpc = rpc;
	srv->store = store;
	srv->lim = o->limits;
	srv->started_ms = srv->sec_start_ms = sx_now_ms();
	if (o->ntokens) {
		srv->tokens = malloc(o->ntokens * sizeof(*srv->tokens));
		if (!srv->tokens) {
			free(srv);
			sx_diag_set(SX_ENOMEM, "out of memory");
			return NULL;
		}
		memcpy(srv->tokens, o->tokens, o->ntokens * sizeof(*srv->tokens));
		srv->ntokens = o->ntokens;
	}
	if (parse_listen(o->listen, &ss) < 0)
		goto fail;
	uv_tcp_init(loop, &srv->listener);
	srv->listener.data = srv;
	if ((rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0)) < 0 ||
	    (rc = uv_listen((uv_stream_t *)&srv->listener, 511, accept_cb)) < 0) {
		sx_diag_set(SX_EIO, "cannot listen on %s: %s", o->listen, uv_strerror(rc));
		uv_close((uv_handle_t *)&srv->listener, NULL);
		uv_run(loop, UV_RUN_NOWAIT);
		goto fail;
	}
	srv->listening = 1;
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
	srv->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
						     : ((struct sockaddr_in6 *)&bound)->sin6_port);
	uv_timer_init(loop, &srv->sweep);
	srv->sweep.data = srv;
	uint64_t every = srv->lim.frame_timeout_ms < srv->lim.idle_timeout_ms ? srv->lim.frame_timeout_ms
									     : srv->lim.idle_timeout_ms;
	every /= 4;
	if (every < 20)
		every = 20;
	if (every > 250)
		every = 250;
	uv_timer_start(&srv->sweep, sweep_cb, every, every);
	return srv;
fail:
	free(srv->tokens);
	free(srv);
	return NULL;
}

int sx_server_port(const struct sx_server *srv) { return srv->port; }

void sx_server_shutdown(struct sx_server *srv, uint32_t grace_ms)
{
	srv->shutting_down = 1;
	if (srv->listening) {
		uv_close((uv_handle_t *)&srv->listener, NULL);
		srv->listening = 0;
	}
	/* every connection, also one paused by its in-flight or output bound: it must not
	 * start reading again when its replies drain */
	for (struct sx_conn *c = srv->conns; c; c = c->next) {
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->reading = 0;
		}
		c->eof = 1;
	}
	uint64_t deadline = sx_now_ms() + grace_ms;
	for (;;) {
		uint64_t busy = 0;
		for (struct sx_conn *c = srv->conns; c; c = c->next)
			busy += c->inflight + c->out_pending + c->obuf.size;
		if ((!busy && !srv->waiting) || sx_now_ms() > deadline)
			break;
		sx_server_turn_end(srv);
		uv_run(srv->loop, UV_RUN_ONCE);
	}
	while (srv->conns)
		conn_close(srv->conns);
	uv_timer_stop(&srv->sweep);
	uv_close((uv_handle_t *)&srv->sweep, NULL);
}

void sx_server_free(struct sx_server *srv)
{
	if (!srv)
		return;
	/* Requests whose batch never became durable are dropped with their connection. */
	while (srv->waiting) {
		struct sx_req *r = srv->waiting;
		wait_del(srv, r);
		req_unlink_live(r);
		req_free(r);
	}
	while (srv->pool) {
		struct sx_req *r = srv->pool;
		srv->pool = r->next;
		req_destroy(r);
	}
	free(srv->tokens);
	free(srv);
}

void sx_server_stats(const struct sx_server *srv, struct sx_server_stats *out)
{
	out->uptime_ms = sx_now_ms() - srv->started_ms;
	out->connections = srv->nconns;
	out->connections_total = srv->conns_total;
	out->requests_total = srv->requests_total;
	out->errors_total = srv->errors_total;
	out->waiting_replies = srv->nwaiting;
	int prev = (srv->sec_idx + 10) % 11;
	out->requests_per_second = (double)srv->sec_counts[prev];
	uint64_t sum = 0;
	for (int i = 0; i < 11; i++)
		if (i != srv->sec_idx)
			sum += srv->sec_counts[i];
	out->requests_per_second_10s = (double)sum / 10.0;
}
