/* bench_experiments — closed-loop experiment.assign load over TCP: C connections, each
 * keeping D requests in flight, for a duration; prints assignments/s and latency
 * percentiles. The server must hold running experiments x0 .. x{E-1} (bench/run_experiments.sh
 * writes them as scripts with Lua targeting, in layers).
 *
 *   bench_experiments --port P --conns 50 --depth 16 --seconds 5 --experiments 20 --users 0
 *
 * --users 0: every request is a new user (first assignment: an exposure is written);
 * --users N: users come from a pool of N (after the first pass, sticky reads only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <uv.h>

#include "core/sx.h"

struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	int idx;
	uint64_t *sent_at;
	size_t head, tail;
	char *rbuf;
	size_t rlen, rcap;
};

static struct {
	int conns, depth, experiments;
	long users;
	double seconds;
	const char *host;
	int port;
	uv_loop_t *loop;
	uint64_t start_ns, stop_ns;
	uint64_t done, errors, next_user, next_key;
	uint32_t *lat_us;
	size_t nlat, caplat;
} B;

static void record(uint64_t t0)
{
	uint64_t now = sx_now_ns();
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

static void send_one(struct conn *c)
{
	uv_write_t *w = malloc(sizeof(*w));
	char user[32], key[16];
	uint64_t n = B.next_user++;
	if (B.users)
		n = (n * 2654435761u) % (uint64_t)B.users; /* a fixed pool, visited in scattered order */
	int ul = snprintf(user, sizeof(user), "user-%llu", (unsigned long long)n);
	int kl = snprintf(key, sizeof(key), "x%d", (int)(B.next_key++ % (uint64_t)B.experiments));
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_uint32(&pk, ++msgid);
	msgpack_pack_str(&pk, 17);
	msgpack_pack_str_body(&pk, "experiment.assign", 17);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "key", 3);
	msgpack_pack_str(&pk, (size_t)kl);
	msgpack_pack_str_body(&pk, key, (size_t)kl);
	msgpack_pack_str(&pk, 4);
	msgpack_pack_str_body(&pk, "user", 4);
	msgpack_pack_str(&pk, (size_t)ul);
	msgpack_pack_str_body(&pk, user, (size_t)ul);
	msgpack_pack_str(&pk, 7);
	msgpack_pack_str_body(&pk, "context", 7);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str(&pk, 7);
	msgpack_pack_str_body(&pk, "country", 7);
	msgpack_pack_str(&pk, 2);
	msgpack_pack_str_body(&pk, "FR", 2);
	size_t len = sb.size;
	char *buf = msgpack_sbuffer_release(&sb);
	w->data = buf;
	uv_buf_t b = uv_buf_init(buf, (unsigned)len);
	c->sent_at[c->head++ % (size_t)B.depth] = sx_now_ns();
	uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, write_done);
}

static size_t sextant_reply(const char *p, size_t n, int *err)
{
	msgpack_unpacked u;
	size_t off = 0;
	msgpack_unpacked_init(&u);
	int rc = msgpack_unpack_next(&u, p, n, &off);
	if (rc != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&u);
		return 0;
	}
	*err = u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 4 ||
	       u.data.via.array.ptr[2].type != MSGPACK_OBJECT_NIL;
	msgpack_unpacked_destroy(&u);
	return off;
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
	size_t off = 0;
	for (;;) {
		int err = 0;
		size_t len = sextant_reply(c->rbuf + off, c->rlen - off, &err);
		if (!len)
			break;
		off += len;
		if (err)
			B.errors++;
		record(c->sent_at[c->tail++ % (size_t)B.depth]);
		if (sx_now_ns() < B.stop_ns)
			send_one(c);
		else if (c->tail == c->head)
			uv_close((uv_handle_t *)s, NULL);
	}
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
	for (int i = 0; i < B.depth; i++)
		send_one(c);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	B.conns = 50;
	B.depth = 16;
	B.seconds = 5;
	B.experiments = 20;
	B.host = "127.0.0.1";
	B.port = 7878;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--port"))
			B.port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--conns"))
			B.conns = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--depth"))
			B.depth = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			B.seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--experiments"))
			B.experiments = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--users"))
			B.users = atol(argv[i + 1]);
	}
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
	printf("{\"conns\":%d,\"depth\":%d,\"users\":%ld,\"rps\":%.0f,\"p50_us\":%u,\"p99_us\":%u,\"errors\":%llu}\n",
	       B.conns, B.depth, B.users, (double)B.done / secs, p50, p99, (unsigned long long)B.errors);
	for (int i = 0; i < B.conns; i++) {
		free(cs[i].sent_at);
		free(cs[i].rbuf);
	}
	free(cs);
	free(B.lat_us);
	return B.errors ? 1 : 0;
}
