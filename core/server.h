/* server.h — the libuv TCP server: connections, dispatch, replies, backpressure,
 * notifications.
 *
 * Everything here runs on the loop thread. A request is decoded into its own
 * zone, dispatched to its method, and answered once the store batch it
 * depends on is durable (see store.h). Replies to one connection may leave out
 * of order; msgid pairs them.
 */
#ifndef SX_SERVER_H
#define SX_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "core/rpc.h"

struct sx_store;

struct sx_server_limits {
	size_t max_frame_bytes;   /* largest request frame */
	int max_depth;            /* deepest nesting in a frame */
	uint32_t max_inflight;    /* requests in flight per connection */
	uint32_t max_connections;
	uint32_t idle_timeout_ms;  /* a connection with nothing in flight, silent this long, is closed */
	uint32_t frame_timeout_ms; /* a partial frame older than this closes the connection */
	size_t max_output_bytes;   /* per connection: reading stops above half, dropped above it */
};

struct sx_token {
	uint8_t sha256[32];
	int role;
};

struct sx_server_opts {
	const char *listen; /* "host:port" */
	struct sx_server_limits limits;
	const struct sx_token *tokens; /* copied */
	size_t ntokens;
};

struct sx_server;
struct sx_conn;

struct sx_req {
	struct sx_server *srv;
	struct sx_conn *conn; /* referenced until the request ends, closed or not (sx_conn_open);
			       * NULL for a request made inside the engine (tests, fuzzer) */
	uint64_t msgid;
	int notification;     /* no reply wanted */
	int role;             /* the connection's role when the request arrived */
	const char *method;   /* NUL-terminated, in the zone */
	msgpack_zone zone;    /* owns the decoded request */
	msgpack_sbuffer out;  /* the reply being built */
	msgpack_packer pk;
	size_t result_off;
	uint64_t wait_seq;
	struct sx_req *next, *prev; /* on the connection's or the server's waiting list */
	struct sx_req *cnext;       /* on the connection's list of live requests */
};

/* Creates the server on loop, bound and listening. NULL on failure (diag). */
struct sx_server *sx_server_new(uv_loop_t *loop, struct sx_rpc *rpc, struct sx_store *store,
				const struct sx_server_opts *opts);
/* Stops accepting, stops reading, lets in-flight requests finish (up to
 * grace_ms), then closes every connection. Runs the loop while it waits. */
void sx_server_shutdown(struct sx_server *srv, uint32_t grace_ms);
void sx_server_free(struct sx_server *srv);

/* For the store's commit callback: answers the requests waiting on seq. */
void sx_server_commit_cb(uint64_t seq, int rc, void *srv);

/* Called at the end of every loop turn (the caller wires it to a uv_check). */
void sx_server_turn_end(struct sx_server *srv);

/* A handler that returned SX_RPC_DEFER answers later: rc 0 sends what was
 * packed in req->pk, a negative rc sends an error with sx_diag_last(). */
void sx_req_finish(struct sx_req *req, int rc);

/* Subscriptions. Topics are plain strings ("script.events", "job.<id>", ...). */
int sx_server_subscribe(struct sx_server *srv, struct sx_conn *conn, const char *topic);
int sx_server_unsubscribe(struct sx_server *srv, struct sx_conn *conn, const char *topic);
/* Sends [2, topic, [payload]] to every connection subscribed to topic;
 * payload is one packed MessagePack object. Returns how many received it. */
int sx_server_publish(struct sx_server *srv, const char *topic, const void *payload, size_t len);
/* Same, to one connection (if it is still open). */
int sx_conn_notify(struct sx_conn *conn, const char *topic, const void *payload, size_t len);

/* Marks the connection with the role of a token; 0 or SX_EAUTH. */
int sx_server_auth(struct sx_server *srv, struct sx_conn *conn, const char *token, size_t len);
int sx_conn_role(const struct sx_conn *conn);
/* Failed auth attempts on this connection. */
int sx_conn_auth_failures(const struct sx_conn *conn);
/* Closes the connection once what is queued for it has been written. */
void sx_conn_close_after_reply(struct sx_conn *conn);
/* Connections are reference counted so that deferred work can hold one. */
void sx_conn_ref(struct sx_conn *conn);
void sx_conn_unref(struct sx_conn *conn);
int sx_conn_open(const struct sx_conn *conn);

struct sx_server_stats {
	uint64_t uptime_ms, connections, connections_total, requests_total, errors_total;
	double requests_per_second; /* over the last full second */
	double requests_per_second_10s;
	uint64_t waiting_replies;
};
void sx_server_stats(const struct sx_server *srv, struct sx_server_stats *out);

/* The address the server listens on (after binding port 0, the real port). */
int sx_server_port(const struct sx_server *srv);

#endif
