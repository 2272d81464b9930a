/* sextant-cli — call one Sextant RPC method, or watch notification topics.
 *
 * JSON in (jansson) is packed to MessagePack (msgpack-c); MessagePack out is
 * printed as JSON. Output is written by hand rather than through json_t
 * because jansson integers are int64 only and a uint64 above INT64_MAX must
 * print exactly; jansson still does the string escaping. The mapping and the
 * exit codes are documented in docs/notes-cli.md.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "core/json.h"
#include "core/sx.h"

enum {
	EXIT_RPC = 1,   /* the server answered with an error */
	EXIT_CONN = 2,  /* connect failed, connection lost, timeout, garbage */
	EXIT_USAGE = 3, /* bad flags or bad JSON arguments */
};

/* A reply larger than this is treated as garbage rather than buffered. */
#define CLI_MAX_MESSAGE (1024u * 1024u * 1024u)
#define CLI_MAX_WATCH 64

struct cli_conn {
	int fd;
	msgpack_unpacker up;
	uint32_t next_msgid;
	int timeout_ms; /* per call; < 0 means none */
	bool watch;     /* print notifications that arrive while waiting */
	long notified;  /* notifications printed so far */
	long max_notify;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	SX_UNUSED(sig);
	interrupted = 1;
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fputs("sextant-cli: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : (int64_t)sx_now_ms() + timeout_ms;
}

/* Milliseconds left before deadline for poll(): -1 forever, 0 expired. */
static int remaining_ms(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - (int64_t)sx_now_ms();
	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* ---- JSON output ------------------------------------------------------ */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_base64(FILE *out, const unsigned char *p, size_t n)
{
	fputc('"', out);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		fputc(b64_alphabet[(v >> 18) & 63], out);
		fputc(b64_alphabet[(v >> 12) & 63], out);
		fputc(i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=', out);
		fputc(i + 2 < n ? b64_alphabet[v & 63] : '=', out);
	}
	fputc('"', out);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	uint32_t c;
	size_t len;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		c = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		c = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		c = p[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return len;
}

/* Invalid UTF-8 cannot be JSON: each bad byte becomes U+FFFD. */
static char *utf8_sanitize(const char *s, size_t n, size_t *outlen)
{
	char *buf = malloc(n * 3 + 1);
	if (!buf)
		die(EXIT_CONN, "out of memory");
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t len = utf8_seq((const unsigned char *)s + i, n - i);
		if (len == 0) {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(buf + o, s + i, len);
			o += len;
			i += len;
		}
	}
	*outlen = o;
	return buf;
}

static void put_string(FILE *out, const char *s, size_t n)
{
	char *fixed = NULL;
	size_t len = n;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq((const unsigned char *)s + i, n - i);
		if (l == 0) {
			fixed = utf8_sanitize(s, n, &len);
			break;
		}
		i += l;
	}
	json_t *js = json_stringn_nocheck(fixed ? fixed : s, len);
	if (!js || json_dumpf(js, out, JSON_ENCODE_ANY) != 0)
		die(EXIT_CONN, "cannot write a string");
	json_decref(js);
	free(fixed);
}

/* Shortest text that reads back as the same value, always with a '.' or
 * an exponent so that a float never reads back as an integer. */
static void put_float(FILE *out, double v, bool single)
{
	char buf[64];
	if (isnan(v)) {
		fputs("\"NaN\"", out);
		return;
	}
	if (isinf(v)) {
		fputs(v > 0 ? "\"Infinity\"" : "\"-Infinity\"", out);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
			break;
	}
	fputs(buf, out);
	if (!strpbrk(buf, ".eE"))
		fputs(".0", out);
}

static void put_indent(FILE *out, int indent, int depth)
{
	if (indent < 0)
		return;
	fputc('\n', out);
	for (int i = 0; i < indent * depth; i++)
		fputc(' ', out);
}

static void put_value(FILE *out, const msgpack_object *o, int indent, int depth);

/* JSON keys are strings: a non-string key is written as its compact JSON
 * text inside a string (1 -> "1"). */
static void put_key(FILE *out, const msgpack_object *k)
{
	if (k->type == MSGPACK_OBJECT_STR) {
		put_string(out, k->via.str.ptr, k->via.str.size);
		return;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);
	if (!mem)
		die(EXIT_CONN, "out of memory");
	put_value(mem, k, -1, 0);
	fclose(mem);
	put_string(out, text, len);
	free(text);
}

static void put_value(FILE *out, const msgpack_object *o, int indent, int depth)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", out);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", out);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(out, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(out, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
		put_float(out, o->via.f64, true);
		break;
	case MSGPACK_OBJECT_FLOAT64:
		put_float(out, o->via.f64, false);
		break;
	case MSGPACK_OBJECT_STR:
		put_string(out, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_BIN:
		put_base64(out, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
		break;
	case MSGPACK_OBJECT_EXT:
		fprintf(out, indent < 0 ? "{\"ext\":%d,\"data\":" : "{\"ext\": %d, \"data\": ",
			(int)o->via.ext.type);
		put_base64(out, (const unsigned char *)o->via.ext.ptr, o->via.ext.size);
		fputc('}', out);
		break;
	case MSGPACK_OBJECT_ARRAY:
		if (o->via.array.size == 0) {
			fputs("[]", out);
			break;
		}
		fputc('[', out);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				fputc(',', out);
			put_indent(out, indent, depth + 1);
			put_value(out, &o->via.array.ptr[i], indent, depth + 1);
		}
		put_indent(out, indent, depth);
		fputc(']', out);
		break;
	case MSGPACK_OBJECT_MAP:
		if (o->via.map.size == 0) {
			fputs("{}", out);
			break;
		}
		fputc('{', out);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			if (i)
				fputc(',', out);
			put_indent(out, indent, depth + 1);
			put_key(out, &o->via.map.ptr[i].key);
			fputs(indent < 0 ? ":" : ": ", out);
			put_value(out, &o->via.map.ptr[i].val, indent, depth + 1);
		}
		put_indent(out, indent, depth);
		fputc('}', out);
		break;
	default:
		fputs("null", out);
		break;
	}
}

/* ---- JSON input ------------------------------------------------------- */

/* Params on the wire: an object becomes [object], an array is sent as the
 * params array itself, no argument at all becomes []. */
static json_t *parse_args(const char *text, bool from_stdin)
{
	json_error_t err;
	size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY;
	json_t *j = from_stdin ? json_loadf(stdin, flags, &err) : json_loads(text, flags, &err);
	if (!j)
		die(EXIT_USAGE, "invalid JSON arguments (line %d, column %d): %s", err.line,
		    err.column, err.text);
	if (!json_is_object(j) && !json_is_array(j))
		die(EXIT_USAGE, "arguments must be a JSON object (or an array of params)");
	return j;
}

/* ---- connection ------------------------------------------------------- */

static void conn_open(struct cli_conn *c, const char *host, const char *port, int timeout_ms)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		die(EXIT_CONN, "cannot resolve %s: %s", host, gai_strerror(rc));
	int64_t deadline = deadline_after(timeout_ms);
	int last_errno = 0;
	c->fd = -1;
	for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
			last_errno = errno;
			close(fd);
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int n;
		do
			n = poll(&p, 1, remaining_ms(deadline));
		while (n < 0 && errno == EINTR && !interrupted);
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (n <= 0) {
			last_errno = n == 0 ? ETIMEDOUT : errno;
			close(fd);
			continue;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			last_errno = soerr;
			close(fd);
			continue;
		}
		c->fd = fd;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		die(EXIT_CONN, "cannot connect to %s:%s: %s", host, port, strerror(last_errno));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!msgpack_unpacker_init(&c->up, 64 * 1024))
		die(EXIT_CONN, "out of memory");
	c->next_msgid = 1;
}

static void conn_send(struct cli_conn *c, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};
			int r = poll(&p, 1, remaining_ms(deadline));
			if (r == 0)
				die(EXIT_CONN, "timed out sending the request");
			if (r < 0 && errno != EINTR)
				die(EXIT_CONN, "poll: %s", strerror(errno));
			if (interrupted)
				exit(EXIT_CONN);
			continue;
		}
		die(EXIT_CONN, "connection lost while sending: %s", strerror(errno));
	}
}

/* Next whole message into *msg. Returns false on timeout or interruption;
 * dies when the connection is lost or the bytes are not MessagePack. */
static bool conn_read(struct cli_conn *c, msgpack_unpacked *msg, int64_t deadline)
{
	for (;;) {
		msgpack_unpack_return r = msgpack_unpacker_next(&c->up, msg);
		if (r == MSGPACK_UNPACK_SUCCESS)
			return true;
		if (r == MSGPACK_UNPACK_PARSE_ERROR)
			die(EXIT_CONN, "the server sent bytes that are not MessagePack");
		if (r == MSGPACK_UNPACK_NOMEM_ERROR)
			die(EXIT_CONN, "out of memory decoding a reply");
		if (msgpack_unpacker_message_size(&c->up) > CLI_MAX_MESSAGE)
			die(EXIT_CONN, "a reply exceeds %u bytes", CLI_MAX_MESSAGE);
		if (interrupted)
			return false;
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int n = poll(&p, 1, remaining_ms(deadline));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_CONN, "poll: %s", strerror(errno));
		}
		if (n == 0)
			return false;
		if (!msgpack_unpacker_reserve_buffer(&c->up, 64 * 1024))
			die(EXIT_CONN, "out of memory");
		ssize_t got = recv(c->fd, msgpack_unpacker_buffer(&c->up),
				   msgpack_unpacker_buffer_capacity(&c->up), 0);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0)
			die(EXIT_CONN, "connection lost: %s", strerror(errno));
		if (got == 0)
			die(EXIT_CONN, "connection closed by the server");
		msgpack_unpacker_buffer_consumed(&c->up, (size_t)got);
	}
}

static bool is_str(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
	       memcmp(o->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (is_str(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static void print_rpc_error(const msgpack_object *err)
{
	const msgpack_object *code = map_get(err, "code");
	const msgpack_object *message = map_get(err, "message");
	fputs("error: ", stderr);
	if (code && code->type == MSGPACK_OBJECT_STR)
		fwrite(code->via.str.ptr, 1, code->via.str.size, stderr);
	else
		put_value(stderr, err, -1, 0);
	fputs(": ", stderr);
	if (message && message->type == MSGPACK_OBJECT_STR)
		fwrite(message->via.str.ptr, 1, message->via.str.size, stderr);
	fputc('\n', stderr);
}

static void print_notification(struct cli_conn *c, const msgpack_object *m)
{
	if (c->max_notify > 0 && c->notified >= c->max_notify)
		return;
	const msgpack_object *params = &m->via.array.ptr[2];
	const msgpack_object *data = params;
	if (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 1)
		data = &params->via.array.ptr[0];
	fputs("{\"topic\":", stdout);
	put_key(stdout, &m->via.array.ptr[1]);
	fputs(",\"data\":", stdout);
	put_value(stdout, data, -1, 0);
	fputs("}\n", stdout);
	fflush(stdout);
	c->notified++;
}

static bool is_notification(const msgpack_object *m)
{
	return m->type == MSGPACK_OBJECT_ARRAY && m->via.array.size == 3 &&
	       m->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	       m->via.array.ptr[0].via.u64 == 2;
}

/* Sends [0, msgid, method, params] and waits for its response, printing
 * notifications met on the way in watch mode. On return *msg holds the
 * response; *err points at its error (nil when none) and *result at its
 * result, both inside *msg. Dies on timeout. */
static void conn_call(struct cli_conn *c, const char *method, const json_t *args,
		      msgpack_unpacked *msg, const msgpack_object **err,
		      const msgpack_object **result)
{
	uint32_t msgid = c->next_msgid++;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint32(&pk, 0);
	msgpack_pack_uint32(&pk, msgid);
	msgpack_pack_str(&pk, strlen(method));
	msgpack_pack_str_body(&pk, method, strlen(method));
	if (!args) {
		msgpack_pack_array(&pk, 0);
	} else if (json_is_array(args)) {
		sx_pack_json(&pk, args);
	} else {
		msgpack_pack_array(&pk, 1);
		sx_pack_json(&pk, args);
	}
	int64_t deadline = deadline_after(c->timeout_ms);
	conn_send(c, sb.data, sb.size, deadline);
	msgpack_sbuffer_destroy(&sb);

	for (;;) {
		if (!conn_read(c, msg, deadline)) {
			if (interrupted)
				exit(EXIT_CONN);
			die(EXIT_CONN, "timed out waiting for the reply to %s", method);
		}
		const msgpack_object *m = &msg->data;
		if (is_notification(m)) {
			if (c->watch)
				print_notification(c, m);
			continue;
		}
		if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size != 4 ||
		    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    m->via.array.ptr[0].via.u64 != 1)
			die(EXIT_CONN, "the server sent a message that is not an RPC response");
		const msgpack_object *id = &m->via.array.ptr[1];
		const msgpack_object *e = &m->via.array.ptr[2];
		if (id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && id->via.u64 == msgid) {
			*err = e;
			*result = &m->via.array.ptr[3];
			return;
		}
		/* An error tied to no request of ours: the server is about to
		 * drop the connection, so say why. */
		if (e->type != MSGPACK_OBJECT_NIL) {
			print_rpc_error(e);
			exit(EXIT_RPC);
		}
	}
}

/* ---- main ------------------------------------------------------------- */

static void usage(FILE *out)
{
	fputs("usage: sextant-cli [--host H] [--port P] [--token T] [--timeout S]\n"
	      "                   METHOD ['{json args}' | -]\n"
	      "       sextant-cli [options] --watch TOPIC [--watch TOPIC ...] [--count N]\n"
	      "                   [METHOD ['{json args}' | -]]\n"
	      "\n"
	      "Calls METHOD and prints its result as JSON. '-' reads the arguments from\n"
	      "stdin. --watch subscribes to TOPIC and prints each notification as one\n"
	      "JSON line {\"topic\":...,\"data\":...} until interrupted or N arrived.\n"
	      "Defaults: --host 127.0.0.1 --port 7878 --timeout 30 (0: no timeout).\n"
	      "Exit: 0 ok, 1 RPC error, 2 connection failure or timeout, 3 usage.\n",
	      out);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	const char *port = "7878";
	const char *token = NULL;
	double timeout_s = 30;
	const char *topics[CLI_MAX_WATCH];
	int ntopics = 0;
	long count = -1;
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"token", required_argument, NULL, 't'},
		{"timeout", required_argument, NULL, 'T'},
		{"watch", required_argument, NULL, 'w'},
		{"count", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	char *end;
	while ((opt = getopt_long(argc, argv, "+H:p:t:T:w:n:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'H':
			host = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 't':
			token = optarg;
			break;
		case 'T':
			timeout_s = strtod(optarg, &end);
			if (*end || end == optarg || !(timeout_s >= 0) || timeout_s > 1e6)
				die(EXIT_USAGE, "--timeout wants seconds >= 0, not '%s'", optarg);
			break;
		case 'w':
			if (ntopics == CLI_MAX_WATCH)
				die(EXIT_USAGE, "at most %d --watch topics", CLI_MAX_WATCH);
			topics[ntopics++] = optarg;
			break;
		case 'n':
			count = strtol(optarg, &end, 10);
			if (*end || end == optarg || count < 1)
				die(EXIT_USAGE, "--count wants a positive integer, not '%s'", optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sextant-cli %s\n", SX_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	const char *method = optind < argc ? argv[optind++] : NULL;
	const char *argtext = optind < argc ? argv[optind++] : NULL;
	if (optind < argc || (!method && ntopics == 0)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (count > 0 && ntopics == 0)
		die(EXIT_USAGE, "--count only makes sense with --watch");
	json_t *args = argtext ? parse_args(argtext, strcmp(argtext, "-") == 0) : NULL;

	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct cli_conn c = {.timeout_ms = timeout_s > 0 ? (int)(timeout_s * 1000) : -1,
			     .watch = ntopics > 0,
			     .max_notify = count};
	conn_open(&c, host, port, c.timeout_ms);

	msgpack_unpacked msg;
	msgpack_unpacked_init(&msg);
	const msgpack_object *err, *result;
	int rc = 0;
	if (token) {
		json_t *a = json_pack("{s:s}", "token", token);
		conn_call(&c, "auth", a, &msg, &err, &result);
		json_decref(a);
		if (err->type != MSGPACK_OBJECT_NIL)
			goto rpc_error;
	}
	for (int i = 0; i < ntopics; i++) {
		json_t *a = json_pack("{s:s}", "topic", topics[i]);
		conn_call(&c, "subscribe", a, &msg, &err, &result);
		json_decref(a);
		if (err->type != MSGPACK_OBJECT_NIL)
			goto rpc_error;
	}
	if (method) {
		conn_call(&c, method, args, &msg, &err, &result);
		if (err->type != MSGPACK_OBJECT_NIL)
			goto rpc_error;
		if (c.watch) {
			fputs("{\"result\":", stdout);
			put_value(stdout, result, -1, 0);
			fputs("}\n", stdout);
		} else {
			put_value(stdout, result, 2, 0);
			fputc('\n', stdout);
		}
		fflush(stdout);
	}

	while (c.watch && (c.max_notify < 0 || c.notified < c.max_notify) && !interrupted) {
		if (!conn_read(&c, &msg, -1))
			break;
		const msgpack_object *m = &msg.data;
		if (is_notification(m)) {
			print_notification(&c, m);
		} else if (m->type == MSGPACK_OBJECT_ARRAY && m->via.array.size == 4 &&
			   m->via.array.ptr[2].type != MSGPACK_OBJECT_NIL) {
			err = &m->via.array.ptr[2];
			goto rpc_error;
		}
	}
	goto done;
rpc_error:
	print_rpc_error(err);
	rc = EXIT_RPC;
done:
	json_decref(args);
	msgpack_unpacked_destroy(&msg);
	msgpack_unpacker_destroy(&c.up);
	close(c.fd);
	if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout)))
		rc = EXIT_CONN;
	return rc;
}
