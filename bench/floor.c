/* bench_floor — the cheapest server that can answer bench_rpc's `ping`: one epoll loop,
 * level-triggered like libuv's and Redis's, one read per ready connection, the replies of a
 * turn written at its end (one write per connection), no allocation, no decoding beyond the
 * msgid. It is what the kernel's loopback TCP path alone costs a server on this machine; no
 * server that reads and writes sockets through epoll can be much faster than it.
 *
 *   bench_floor PORT        (listens on 127.0.0.1:PORT until killed)
 *
 * It accepts only [0, msgid, "ping", []] and closes a connection that sends anything else.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
#define MAX_EVENTS 1024

struct conn {
	int fd, dirty;
	size_t in_len, out_len;
	unsigned char in[BUF], out[BUF];
};

/* Answers the complete requests at the front of c->in; -1 on anything but a ping. */
static int answer(struct conn *c)
{
	static const unsigned char tail[] = {0xa4, 'p', 'i', 'n', 'g', 0x90};
	size_t off = 0;
	while (c->in_len - off >= 3) {
		const unsigned char *q = c->in + off;
		if (q[0] != 0x94 || q[1] != 0x00)
			return -1;
		size_t id = q[2] <= 0x7f ? 1 : q[2] == 0xcc ? 2 : q[2] == 0xcd ? 3 : q[2] == 0xce ? 5 : 0;
		if (!id)
			return -1;
		size_t len = 2 + id + sizeof(tail);
		if (c->in_len - off < len)
			break;
		if (memcmp(q + 2 + id, tail, sizeof(tail)) != 0 || BUF - c->out_len < 8 + id)
			return -1;
		unsigned char *o = c->out + c->out_len; /* [1, msgid, nil, "pong"] */
		o[0] = 0x94;
		o[1] = 0x01;
		memcpy(o + 2, q + 2, id);
		o[2 + id] = 0xc0;
		memcpy(o + 3 + id, "\xa4pong", 5);
		c->out_len += 8 + id;
		off += len;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return 0;
}

static void drop(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1; /* freed at the end of the turn: it may be on the dirty list */
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: bench_floor PORT\n");
		return 2;
	}
	int one = 1;
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 128) < 0) {
		perror("bench_floor: listen");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
	struct epoll_event evs[MAX_EVENTS];
	struct conn *dirty[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		int nd = 0;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
				if (fd < 0)
					continue;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				c = calloc(1, sizeof(*c));
				if (!c) {
					close(fd);
					continue;
				}
				c->fd = fd;
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				continue;
			}
			ssize_t r = read(c->fd, c->in + c->in_len, BUF - c->in_len);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0 || (c->in_len += (size_t)r, answer(c) < 0))
				drop(ep, c);
			if (!c->dirty) {
				c->dirty = 1;
				dirty[nd++] = c;
			}
		}
		for (int i = 0; i < nd; i++) {
			struct conn *c = dirty[i];
			if (c->fd >= 0 && c->out_len && write(c->fd, c->out, c->out_len) != (ssize_t)c->out_len)
				drop(ep, c); /* a benchmark client reads its replies: a short write is not expected */
			c->out_len = 0;
			c->dirty = 0;
			if (c->fd < 0)
				free(c);
		}
	}
}
