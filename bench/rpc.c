/* bench_rpc — closed-loop load over TCP: C connections, each keeping D requests in
 * flight, for a duration; prints requests/s and latency percentiles.
 *
 *   bench_rpc --proto sextant|redis [--host 127.0.0.1] --port P --conns 50 --depth 16 --seconds 5 --op ping|counter
 *
 * --host (an IPv4 address) lets the load run from another machine, so that it does not
 * share the server's cores.
 *
 * sextant: `ping`, or `counter.incr {key}` (a methods script; scripts/methods/counter.lua).
 * redis:   PING, or EVALSHA of a script doing the same read-modify-write (GET, +1, SET),
 *          loaded with SCRIPT LOAD first.
 * Each connection increments its own key, so both servers do the same work. The
 * requests a read's replies free are sent together in one write, for both servers.
 *
 * sextant only: --op assign [--experiments E] [--users N] sends experiment.assign
 * {key = "x<i mod E>", user, context = {country = "FR"}} (bench/run_experiments.sh); with
 * --users 0 every request is a new user (its first assignment writes an exposure), with
 * --users N users come from a pool of N (after the first pass, sticky reads only).
 *
 * sextant only: --op track [--batch 1000] [--users 100000] [--method events.track] sends
 * events.track batches as bench/events_ingest.py does (names, items, times over the last
 * 24 h, or over --spread-ms, properties {value, device}); each connection packs 16 batches
 * once and replays them. --session L: events come in user sessions of 1 .. 2L - 1 events
 * (mean L) 30 s apart, as a platform's stream does; the default 1 draws a user and a time per
 * event (the worst case for the store: every event lands on a page of its own).
 * --method ping sends the same frames to `ping`: the ceiling of client, transport and
 * frame decoding. Prints events/s (accepted events; with ping, events sent).
 *
 * sextant only: --op recommend [--users N] [--n 20] sends recommend.items {user = "u<r>", n}
 * with r uniform in [0, N) (bench/recommend_bench.py latency's users).
 *
 * Open loop (sextant only): --rate R sends request i at t0 + i / R whatever the earlier
 * ones are doing, round-robin over the connections (--depth is ignored), for --seconds,
 * then waits up to 10 s for the last replies. Latency counts from the due time, so a
 * stalled server (or a late sender) is not hidden. One sender thread sleeps to each due
 * time; one receiver thread reads every connection (epoll). Prints answered requests/s
 * and p50/p90/p99/p99.9/max in microseconds; requests without a reply count as errors.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <uv.h>

#include "core/rpc.h"
#include "core/sx.h"

struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	int idx;
	uint64_t *sent_at; /* ring of send times, depth entries */
	size_t head, tail; /* replies arrive in order on one connection for both servers */
	char *rbuf;
	size_t rlen, rcap;
	char key[32];
	msgpack_sbuffer req;
	char sha[41];
	msgpack_sbuffer *batches; /* OP_TRACK: packed params, TRACK_BATCHES of them */
	uint64_t nsent;
};

enum { OP_PING, OP_COUNTER, OP_ASSIGN, OP_TRACK, OP_RECOMMEND };

#define TRACK_BATCHES 16

static struct {
	int redis, op, conns, depth, experiments, batch, n;
	double rate;
	uint64_t rng;
	long users;
	uint64_t spread_ms; /* OP_TRACK: event times spread over the last spread_ms */
	long session;       /* OP_TRACK: mean events per user session (1: every event a random user) */
	const char *method;
	uint64_t accepted;
	uint64_t next_user, next_key;
	double seconds;
	const char *host;
	int port;
	uv_loop_t *loop;
	uint64_t start_ns, stop_ns;
	uint64_t done, errors;
	uint32_t *lat_us;
	size_t nlat, caplat;
	char sha[41];
} B;

/* now: the time the reply's read came back (one clock read per read, not per reply) */
static void record(uint64_t t0, uint64_t now)
{
	if (now > B.stop_ns)
		return;
	B.done++;
	if (B.nlat == B.caplat) {
		B.caplat = B.caplat ? B.caplat * 2 : 1 << 20;
		B.lat_us = realloc(B.lat_us, B.caplat * sizeof(*B.lat_us));
	}
	B.lat_us[B.nlat++] = (uint32_t)((now - t0) / 1000);
}

static void write_done(uv_write_t *w, int status)
{
	if (status < 0)
		B.errors++;
	free(w->data);
	free(w);
}

static uint32_t msgid;

/* Appends one request to buf; now is recorded as its send time. */
static void pack_one(struct conn *c, msgpack_sbuffer *buf, uint64_t now)
{
	if (B.redis) {
		char tmp[256];
		int len;
		if (B.op == OP_COUNTER)
			len = snprintf(tmp, sizeof(tmp), "*4\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%zu\r\n%s\r\n",
				       B.sha, strlen(c->key), c->key);
		else
			len = snprintf(tmp, sizeof(tmp), "*1\r\n$4\r\nPING\r\n");
		msgpack_sbuffer_write(buf, tmp, (size_t)len);
	} else {
		msgpack_packer pk;
		msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
		msgpack_pack_array(&pk, 4);
		msgpack_pack_uint8(&pk, 0);
		msgpack_pack_uint32(&pk, ++msgid);
		if (B.op == OP_COUNTER) {
			msgpack_pack_str(&pk, 12);
			msgpack_pack_str_body(&pk, "counter.incr", 12);
			msgpack_pack_array(&pk, 1);
			msgpack_pack_map(&pk, 1);
			sx_pack_str(&pk, "key");
			sx_pack_str(&pk, c->key);
		} else if (B.op == OP_TRACK) {
			sx_pack_str(&pk, B.method);
			const msgpack_sbuffer *p = &c->batches[c->nsent++ % TRACK_BATCHES];
			msgpack_sbuffer_write(buf, p->data, p->size);
		} else if (B.op == OP_ASSIGN) {
			char user[32], key[16];
			uint64_t n = B.next_user++;
			if (B.users)
				n = (n * 2654435761u) % (uint64_t)B.users; /* a fixed pool, in scattered order */
			snprintf(user, sizeof(user), "user-%llu", (unsigned long long)n);
			snprintf(key, sizeof(key), "x%d", (int)(B.next_key++ % (uint64_t)B.experiments));
			sx_pack_str(&pk, "experiment.assign");
			msgpack_pack_array(&pk, 1);
			msgpack_pack_map(&pk, 3);
			sx_pack_kv_str(&pk, "key", key);
			sx_pack_kv_str(&pk, "user", user);
			sx_pack_str(&pk, "context");
			msgpack_pack_map(&pk, 1);
			sx_pack_kv_str(&pk, "country", "FR");
		} else if (B.op == OP_RECOMMEND) {
			char user[32];
			B.rng ^= B.rng << 13, B.rng ^= B.rng >> 7, B.rng ^= B.rng << 17;
			snprintf(user, sizeof(user), "u%llu", (unsigned long long)(B.rng % (uint64_t)B.users));
			sx_pack_str(&pk, "recommend.items");
			msgpack_pack_array(&pk, 1);
			msgpack_pack_map(&pk, 2);
			sx_pack_kv_str(&pk, "user", user);
			sx_pack_kv_int(&pk, "n", B.n);
		} else {
			sx_pack_str(&pk, "ping");
			msgpack_pack_array(&pk, 0);
		}
	}
	c->sent_at[c->head++ % (size_t)B.depth] = now;
}

/* Sends what buf holds in one write, as a pipelining client would; straight to the socket
 * when it takes it all (the usual case), through libuv's queue otherwise. */
static void send_buf(struct conn *c, msgpack_sbuffer *buf)
{
	if (!buf->size)
		return;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
		uv_buf_t b = uv_buf_init(buf->data, (unsigned)buf->size);
		int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (n == (int)buf->size) {
			buf->size = 0;
			return;
		}
		if (n > 0) {
			memmove(buf->data, buf->data + n, buf->size - (size_t)n);
			buf->size -= (size_t)n;
		}
	}
	uv_write_t *w = malloc(sizeof(*w));
	w->data = buf->data;
	uv_buf_t b = uv_buf_init(buf->data, (unsigned)buf->size);
	uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, write_done);
	msgpack_sbuffer_release(buf);
}

/* Length of one complete reply at p, 0 if incomplete. */
static size_t redis_reply(const char *p, size_t n, int *err)
{
	const char *nl = memchr(p, '\n', n);
	if (!nl)
		return 0;
	*err = p[0] == '-';
	if (p[0] == '$') {
		long l = atol(p + 1);
		size_t need = (size_t)(nl - p + 1) + (l >= 0 ? (size_t)l + 2 : 0);
		return need <= n ? need : 0;
	}
	return (size_t)(nl - p + 1);
}

/* The reply's length found by the server's own frame scanner (no allocation);
 * an error reply is one whose third element is not nil. */
static size_t sextant_reply(const char *p, size_t n, int *err)
{
	struct sx_frame_scan fs;
	sx_frame_scan_reset(&fs);
	long len = sx_frame_scan(&fs, (const uint8_t *)p, n, 1u << 30, 64);
	if (len <= 0)
		return 0;
	const uint8_t *b = (const uint8_t *)p;
	size_t i = 2; /* 0x94, 0x01 */
	i += b[i] <= 0x7f ? 1 : b[i] == 0xcc ? 2 : b[i] == 0xcd ? 3 : 5; /* msgid */
	*err = b[0] != 0x94 || b[1] != 0x01 || b[i] != 0xc0;
	return (size_t)len;
}

/* Adds the reply's "accepted" (events.track) or the batch size (ping) to B.accepted. */
static void count_accepted(const char *p, size_t len)
{
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, p, len, NULL) == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_ARRAY &&
	    u.data.via.array.size == 4) {
		const msgpack_object *r = &u.data.via.array.ptr[3];
		if (r->type == MSGPACK_OBJECT_STR)
			B.accepted += (uint64_t)B.batch;
		for (uint32_t i = 0; r->type == MSGPACK_OBJECT_MAP && i < r->via.map.size; i++) {
			const msgpack_object_kv *kv = &r->via.map.ptr[i];
			if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 8 &&
			    !memcmp(kv->key.via.str.ptr, "accepted", 8) && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
				B.accepted += kv->val.via.u64;
		}
	}
	msgpack_unpacked_destroy(&u);
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
	return *s;
}

/* TRACK_BATCHES packed params [{events = [...]}] for connection c. */
static void make_batches(struct conn *c)
{
	static const char *const names[] = {"search", "view", "click", "create_trip", "book", "rate"};
	uint64_t rs = 0x9E3779B97F4A7C15ull * (uint64_t)(c->idx + 1), now = (uint64_t)sx_wall_ms();
	c->batches = calloc(TRACK_BATCHES, sizeof(*c->batches));
	for (int b = 0; b < TRACK_BATCHES; b++) {
		msgpack_packer pk;
		char s[32];
		msgpack_sbuffer_init(&c->batches[b]);
		msgpack_packer_init(&pk, &c->batches[b], msgpack_sbuffer_write);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 1);
		sx_pack_str(&pk, "events");
		msgpack_pack_array(&pk, (size_t)B.batch);
		uint64_t user = 0, t = 0;
		long left = 0;
		for (int i = 0; i < B.batch; i++, left--, t += 30000) {
			if (left <= 0) { /* a new session: 1 .. 2 x session - 1 events, 30 s apart */
				user = rng_next(&rs) % (uint64_t)B.users;
				t = now - rng_next(&rs) % B.spread_ms;
				left = B.session > 1 ? 1 + (long)(rng_next(&rs) % (uint64_t)(2 * B.session - 1)) : 1;
			}
			msgpack_pack_map(&pk, 5);
			snprintf(s, sizeof(s), "u%llu", (unsigned long long)user);
			sx_pack_kv_str(&pk, "user", s);
			sx_pack_kv_str(&pk, "name", names[rng_next(&rs) % 6]);
			snprintf(s, sizeof(s), "i%llu", (unsigned long long)(rng_next(&rs) % 1000));
			sx_pack_kv_str(&pk, "item", s);
			sx_pack_kv_int(&pk, "time", (int64_t)(t < now ? t : now));
			sx_pack_str(&pk, "properties");
			msgpack_pack_map(&pk, 2);
			sx_pack_kv_int(&pk, "value", (int64_t)(rng_next(&rs) % 500));
			sx_pack_kv_str(&pk, "device", rng_next(&rs) % 2 ? "ios" : "web");
		}
	}
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct conn *c = h->data;
	SX_UNUSED(sz);
	if (c->rcap - c->rlen < 65536) {
		c->rcap = c->rcap ? c->rcap * 2 : 131072;
		c->rbuf = realloc(c->rbuf, c->rcap);
	}
	*b = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	SX_UNUSED(b);
	if (n < 0) {
		fprintf(stderr, "connection %d closed: %s\n", c->idx, uv_strerror((int)n));
		B.errors++;
		uv_close((uv_handle_t *)s, NULL);
		return;
	}
	c->rlen += (size_t)n;
	uint64_t now = sx_now_ns();
	size_t off = 0;
	msgpack_sbuffer out;
	msgpack_sbuffer_init(&out);
	for (;;) {
		int err = 0;
		size_t len = B.redis ? redis_reply(c->rbuf + off, c->rlen - off, &err)
				     : sextant_reply(c->rbuf + off, c->rlen - off, &err);
		if (!len)
			break;
		/* ping refuses the batch as arguments (invalid_argument) after decoding
		 * the whole frame: for the ceiling that reply counts like "pong" */
		int ping_ceiling = B.op == OP_TRACK && strcmp(B.method, "ping") == 0;
		if (ping_ceiling && err && now <= B.stop_ns)
			B.accepted += (uint64_t)B.batch;
		else if (B.op == OP_TRACK && !err && now <= B.stop_ns)
			count_accepted(c->rbuf + off, len);
		off += len;
		if (err && !ping_ceiling)
			B.errors++;
		record(c->sent_at[c->tail++ % (size_t)B.depth], now);
		if (now < B.stop_ns)
			pack_one(c, &out, now);
		else if (c->tail == c->head)
			uv_close((uv_handle_t *)s, NULL);
	}
	send_buf(c, &out);
	msgpack_sbuffer_destroy(&out);
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static void connect_cb(uv_connect_t *r, int status)
{
	struct conn *c = r->data;
	if (status < 0) {
		fprintf(stderr, "connect: %s\n", uv_strerror(status));
		exit(1);
	}
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
	msgpack_sbuffer out;
	msgpack_sbuffer_init(&out);
	uint64_t now = sx_now_ns();
	for (int i = 0; i < B.depth; i++)
		pack_one(c, &out, now);
	send_buf(c, &out);
	msgpack_sbuffer_destroy(&out);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Blocking one-shot command for SCRIPT LOAD. */
static void redis_script_load(void)
{
	const char *script = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') + 1 "
			     "redis.call('SET', KEYS[1], v) return v";
	char port[16];
	snprintf(port, sizeof(port), "%d", B.port);
	FILE *p;
	char shcmd[1024];
	snprintf(shcmd, sizeof(shcmd), "redis-cli -h %s -p %s SCRIPT LOAD \"%s\"", B.host, port, script);
	p = popen(shcmd, "r");
	if (!p || !fgets(B.sha, sizeof(B.sha), p)) {
		fprintf(stderr, "SCRIPT LOAD failed\n");
		exit(1);
	}
	pclose(p);
}

/* ---- open loop (--rate) ---- */

struct oconn {
	int fd;
	uint64_t *due;           /* due times of the requests sent on it, in order */
	size_t cap;
	_Atomic size_t head;      /* written by the sender */
	size_t tail;              /* read by the receiver */
	char *rbuf;
	size_t rlen, rcap;
};

static struct oconn *oc;
static uint64_t o_t0, o_n;
static _Atomic int o_sent_all;

static void sleep_until(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *o_sender(void *arg)
{
	SX_UNUSED(arg);
	struct conn dummy;
	memset(&dummy, 0, sizeof(dummy));
	uint64_t slot = 0;
	dummy.sent_at = &slot;
	int depth = B.depth;
	B.depth = 1; /* pack_one's ring is not used here */
	for (uint64_t i = 0; i < o_n; i++) {
		uint64_t due = o_t0 + (uint64_t)((double)i * 1e9 / B.rate);
		if (mono_ns() < due)
			sleep_until(due);
		struct oconn *c = &oc[i % (uint64_t)B.conns];
		msgpack_sbuffer buf;
		msgpack_sbuffer_init(&buf);
		pack_one(&dummy, &buf, due);
		size_t h = atomic_load_explicit(&c->head, memory_order_relaxed);
		c->due[h] = due;
		atomic_store_explicit(&c->head, h + 1, memory_order_release);
		for (size_t off = 0; off < buf.size;) {
			ssize_t w = send(c->fd, buf.data + off, buf.size - off, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				perror("send");
				exit(1);
			}
			off += (size_t)w;
		}
		msgpack_sbuffer_destroy(&buf);
	}
	B.depth = depth;
	atomic_store(&o_sent_all, 1);
	return NULL;
}

static int open_loop(void)
{
	o_n = (uint64_t)(B.rate * B.seconds);
	if (o_n == 0)
		return 0;
	oc = calloc((size_t)B.conns, sizeof(*oc));
	int ep = epoll_create1(0);
	struct sockaddr_in addr;
	uv_ip4_addr(B.host, B.port, &addr);
	for (int i = 0; i < B.conns; i++) {
		struct oconn *c = &oc[i];
		c->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			perror("connect");
			return 1;
		}
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->cap = (size_t)(o_n / (uint64_t)B.conns) + 2;
		c->due = malloc(c->cap * sizeof(uint64_t));
		c->rcap = 1 << 20;
		c->rbuf = malloc(c->rcap);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	B.lat_us = malloc(o_n * sizeof(*B.lat_us));
	o_t0 = mono_ns() + 100000000u;
	pthread_t th;
	pthread_create(&th, NULL, o_sender, NULL);
	uint64_t got = 0, last_due = o_t0 + (uint64_t)((double)(o_n - 1) * 1e9 / B.rate), last_reply = 0;
	uint64_t give_up = last_due + 10000000000ull;
	while (got < o_n) {
		struct epoll_event evs[64];
		int ne = epoll_wait(ep, evs, 64, 100);
		uint64_t now = mono_ns();
		if (ne <= 0) {
			if (atomic_load(&o_sent_all) && now > give_up)
				break;
			continue;
		}
		for (int e = 0; e < ne; e++) {
			struct oconn *c = &oc[evs[e].data.u32];
			if (c->rcap - c->rlen < 65536) {
				c->rcap *= 2;
				c->rbuf = realloc(c->rbuf, c->rcap);
			}
			ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
			if (r <= 0) {
				fprintf(stderr, "connection closed\n");
				return 1;
			}
			c->rlen += (size_t)r;
			size_t off = 0;
			for (;;) {
				int err = 0;
				size_t len = sextant_reply(c->rbuf + off, c->rlen - off, &err);
				if (!len)
					break;
				off += len;
				if (err)
					B.errors++;
				if (c->tail >= atomic_load_explicit(&c->head, memory_order_acquire)) {
					fprintf(stderr, "a reply before its request\n");
					return 1;
				}
				uint64_t due = c->due[c->tail++];
				B.lat_us[B.nlat++] = (uint32_t)((now > due ? now - due : 0) / 1000);
				got++;
				last_reply = now;
			}
			memmove(c->rbuf, c->rbuf + off, c->rlen - off);
			c->rlen -= off;
		}
	}
	pthread_join(th, NULL);
	double span = (double)((last_reply > o_t0 ? last_reply : last_due) - o_t0) / 1e9;
	qsort(B.lat_us, B.nlat, sizeof(*B.lat_us), cmp_u32);
#define PCT(f) (B.nlat ? B.lat_us[(size_t)((double)B.nlat * (f)) < B.nlat ? (size_t)((double)B.nlat * (f)) : B.nlat - 1] : 0)
	static const char *const ops[] = {"ping", "counter", "assign", "track", "recommend"};
	printf("{\"proto\":\"sextant\",\"op\":\"%s\",\"mode\":\"open\",\"rate\":%.0f,\"conns\":%d,\"seconds\":%.1f,"
	       "\"sent\":%llu,\"answered\":%llu,\"throughput\":%.0f,\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,"
	       "\"p999_us\":%u,\"max_us\":%u,\"errors\":%llu}\n",
	       ops[B.op], B.rate, B.conns, B.seconds, (unsigned long long)o_n, (unsigned long long)got,
	       span > 0 ? (double)got / span : 0.0, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999),
	       B.nlat ? B.lat_us[B.nlat - 1] : 0, (unsigned long long)(B.errors + (o_n - got)));
#undef PCT
	for (int i = 0; i < B.conns; i++) {
		close(oc[i].fd);
		free(oc[i].due);
		free(oc[i].rbuf);
	}
	free(oc);
	close(ep);
	free(B.lat_us);
	return B.errors || got < o_n ? 1 : 0;
}

int main(int argc, char **argv)
{
	B.conns = 50;
	B.depth = 1;
	B.seconds = 5;
	B.host = "127.0.0.1";
	B.port = 7878;
	B.experiments = 20;
	B.batch = 1000;
	B.method = "events.track";
	B.n = 20;
	B.rng = 0x2545F4914F6CDD1Dull;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--proto"))
			B.redis = !strcmp(argv[i + 1], "redis");
		else if (!strcmp(argv[i], "--host"))
			B.host = argv[i + 1];
		else if (!strcmp(argv[i], "--port"))
			B.port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--conns"))
			B.conns = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--depth"))
			B.depth = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			B.seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--op"))
			B.op = !strcmp(argv[i + 1], "counter")  ? OP_COUNTER
			       : !strcmp(argv[i + 1], "assign") ? OP_ASSIGN
			       : !strcmp(argv[i + 1], "track")  ? OP_TRACK
			       : !strcmp(argv[i + 1], "recommend") ? OP_RECOMMEND
								: OP_PING;
		else if (!strcmp(argv[i], "--experiments"))
			B.experiments = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--users"))
			B.users = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--batch"))
			B.batch = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--method"))
			B.method = argv[i + 1];
		else if (!strcmp(argv[i], "--spread-ms"))
			B.spread_ms = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--session"))
			B.session = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--rate"))
			B.rate = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--n"))
			B.n = atoi(argv[i + 1]);
	}
	if (!B.spread_ms)
		B.spread_ms = 86400000u;
	if (B.op == OP_RECOMMEND && B.users <= 0)
		B.users = 1000000;
	if (B.op == OP_TRACK && B.users <= 0)
		B.users = 100000;
	if (B.batch < 1)
		B.batch = 1;
	if (B.redis && (B.op == OP_ASSIGN || B.op == OP_TRACK || B.op == OP_RECOMMEND || B.rate > 0)) {
		fprintf(stderr, "bench_rpc: --op assign, track, recommend and --rate are for sextant\n");
		return 2;
	}
	if (B.rate > 0)
		return open_loop();
	if (B.redis && B.op == OP_COUNTER)
		redis_script_load();
	B.loop = uv_default_loop();
	struct sockaddr_in addr;
	uv_ip4_addr(B.host, B.port, &addr);
	struct conn *cs = calloc((size_t)B.conns, sizeof(*cs));
	B.start_ns = sx_now_ns();
	B.stop_ns = B.start_ns + (uint64_t)(B.seconds * 1e9);
	for (int i = 0; i < B.conns; i++) {
		struct conn *c = &cs[i];
		c->idx = i;
		c->sent_at = calloc((size_t)B.depth, sizeof(uint64_t));
		snprintf(c->key, sizeof(c->key), "bench:%d", i);
		if (B.op == OP_TRACK)
			make_batches(c);
		uv_tcp_init(B.loop, &c->tcp);
		uv_tcp_nodelay(&c->tcp, 1);
		c->tcp.data = c;
		c->creq.data = c;
		uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, connect_cb);
	}
	uv_run(B.loop, UV_RUN_DEFAULT);
	double secs = (double)(B.stop_ns - B.start_ns) / 1e9;
	qsort(B.lat_us, B.nlat, sizeof(*B.lat_us), cmp_u32);
	uint32_t p50 = B.nlat ? B.lat_us[B.nlat / 2] : 0, p99 = B.nlat ? B.lat_us[B.nlat * 99 / 100] : 0;
	static const char *const ops[] = {"ping", "counter", "assign", "track", "recommend"};
	printf("{\"proto\":\"%s\",\"op\":\"%s\",\"conns\":%d,\"depth\":%d,\"users\":%ld,\"rps\":%.0f,"
	       "\"p50_us\":%u,\"p99_us\":%u,\"errors\":%llu",
	       B.redis ? "redis" : "sextant", ops[B.op], B.conns, B.depth, B.users, (double)B.done / secs, p50, p99,
	       (unsigned long long)B.errors);
	if (B.op == OP_TRACK)
		printf(",\"method\":\"%s\",\"batch\":%d,\"events_per_s\":%.0f", B.method, B.batch,
		       (double)B.accepted / secs);
	printf("}\n");
	for (int i = 0; i < B.conns; i++) {
		for (int b = 0; cs[i].batches && b < TRACK_BATCHES; b++)
			msgpack_sbuffer_destroy(&cs[i].batches[b]);
		free(cs[i].batches);
		free(cs[i].sent_at);
		free(cs[i].rbuf);
	}
	free(cs);
	free(B.lat_us);
	return B.errors ? 1 : 0;
}
