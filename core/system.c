/* The system methods: ping, auth, server.info, subscribe/unsubscribe, jobs, backup. */
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/jobs.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/server.h"
#include "core/sx.h"
#include "core/lua/sandbox.h"
#include "store/store.h"

static struct sx_engine *eng;

static const char *const no_args[] = {NULL};

static int m_ping(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(req), SX_UNUSED(ud);
	int rc = sx_arg_only(args, no_args);
	if (rc < 0)
		return rc;
	sx_pack_str(pk, "pong");
	return 0;
}

struct auth_delay {
	uv_timer_t t;
	struct sx_req *req;
	int failure; /* this attempt's number among the connection's failures */
};

static void auth_close_cb(uv_handle_t *h) { free(h->data); }

/* A connection that keeps guessing is dropped after its 10th wrong token. */
#define AUTH_MAX_FAILURES 10

static void auth_delay_cb(uv_timer_t *t)
{
	struct auth_delay *d = t->data;
	struct sx_conn *c = d->req->conn;
	if (c)
		sx_conn_ref(c); /* finishing the request may drop its reference */
	sx_diag_set(SX_EAUTH, "invalid token");
	sx_req_finish(d->req, SX_EAUTH);
	if (c) {
		if (d->failure >= AUTH_MAX_FAILURES)
			sx_conn_close_after_reply(c);
		sx_conn_unref(c);
	}
	uv_close((uv_handle_t *)&d->t, auth_close_cb);
}

static int m_auth(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"token", NULL};
	const char *tok;
	size_t len;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_str(args, "token", 1, &tok, &len)) < 0)
		return rc;
	if (!req->conn)
		return sx_diag_set(SX_EAUTH, "connection closed");
	if (eng->cfg->ntokens == 0) {
		/* No tokens: loopback clients are admins already. */
		msgpack_pack_map(pk, 1);
		sx_pack_kv_str(pk, "role", sx_role_name(sx_conn_role(req->conn)));
		return 0;
	}
	if (sx_server_auth(eng->srv, req->conn, tok, len) < 0) {
		/* Slow down guessing: each failure on a connection doubles the wait. */
		static const int delays[] = {100, 200, 400, 800, 1600};
		struct auth_delay *d = malloc(sizeof(*d));
		if (!d)
			return SX_EAUTH;
		int fails = sx_conn_auth_failures(req->conn);
		fails = fails > (int)SX_ARRAY_SIZE(delays) ? (int)SX_ARRAY_SIZE(delays) : fails;
		d->req = req;
		d->failure = sx_conn_auth_failures(req->conn);
		uv_timer_init(eng->loop, &d->t);
		d->t.data = d;
		uv_timer_start(&d->t, auth_delay_cb, (uint64_t)delays[fails - 1], 0);
		return SX_RPC_DEFER;
	}
	msgpack_pack_map(pk, 1);
	sx_pack_kv_str(pk, "role", sx_role_name(sx_conn_role(req->conn)));
	return 0;
}

static int m_info(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	struct sx_server_stats ss;
	struct sx_store_stats st;
	SX_UNUSED(req), SX_UNUSED(ud);
	int rc = sx_arg_only(args, no_args);
	if (rc < 0)
		return rc;
	sx_server_stats(eng->srv, &ss);
	rc = sx_store_stats(eng->store, &st);
	if (rc < 0)
		return rc;
	int nplugins = 0;
	for (int i = 0; sx_plugins[i]; i++)
		nplugins += sx_plugins[i]->info != NULL;
	msgpack_pack_map(pk, 11 + (nplugins > 0));
	sx_pack_kv_str(pk, "version", SX_VERSION);
	sx_pack_kv_uint(pk, "uptime_ms", ss.uptime_ms);
	sx_pack_kv_int(pk, "started", (int64_t)eng->started_wall_ms);
	sx_pack_kv_uint(pk, "connections", ss.connections);
	sx_pack_kv_uint(pk, "connections_total", ss.connections_total);
	sx_pack_kv_uint(pk, "requests_total", ss.requests_total);
	sx_pack_kv_uint(pk, "errors_total", ss.errors_total);
	sx_pack_str(pk, "requests_per_second");
	msgpack_pack_map(pk, 2);
	sx_pack_kv_double(pk, "last_second", ss.requests_per_second);
	sx_pack_kv_double(pk, "last_10s", ss.requests_per_second_10s);
	sx_pack_str(pk, "store");
	msgpack_pack_map(pk, 11);
	sx_pack_kv_str(pk, "path", eng->cfg->data_dir);
	sx_pack_kv_str(pk, "durability", st.relaxed ? "relaxed" : "full");
	sx_pack_kv_uint(pk, "map_size", st.map_size);
	sx_pack_kv_uint(pk, "used_bytes", st.used_bytes);
	sx_pack_kv_double(pk, "usage", st.map_size ? (double)st.used_bytes / (double)st.map_size : 0);
	sx_pack_kv_uint(pk, "commits", st.commits);
	sx_pack_kv_uint(pk, "batches_failed", st.batches_failed);
	sx_pack_kv_bool(pk, "sync_failed", st.sync_failed);
	sx_pack_kv_uint(pk, "syncs", st.syncs);
	sx_pack_kv_uint(pk, "oldest_reader_ms", st.oldest_reader_ms);
	sx_pack_str(pk, "tables");
	msgpack_pack_map(pk, SX_T_COUNT);
	for (int i = 0; i < SX_T_COUNT; i++)
		sx_pack_kv_uint(pk, sx_store_table_name(i), st.entries[i]);
	sx_pack_str(pk, "scripts");
	sx_scripts_pack_list(eng->scripts, NULL, pk);
	sx_pack_str(pk, "jobs");
	msgpack_pack_map(pk, 1);
	sx_pack_kv_uint(pk, "running", sx_jobs_running(eng->jobs));
	if (nplugins) {
		sx_pack_str(pk, "plugins");
		msgpack_pack_map(pk, (size_t)nplugins);
		for (int i = 0; sx_plugins[i]; i++)
			if (sx_plugins[i]->info) {
				sx_pack_str(pk, sx_plugins[i]->name);
				sx_plugins[i]->info(eng, pk);
			}
	}
	return 0;
}

static int topic_arg(const msgpack_object *args, char *topic)
{
	static const char *const known[] = {"topic", NULL};
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "topic", 1, topic, 201)) < 0)
		return rc;
	if (!topic[0])
		return sx_diag_set(SX_EINVAL, "argument 'topic' must not be empty");
	return 0;
}

/* subscribe and unsubscribe: ud is non-NULL for subscribe. */
static int m_subscription(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	char topic[201];
	int rc;
	if ((rc = topic_arg(args, topic)) < 0)
		return rc;
	if (!req->conn)
		return sx_diag_set(SX_ECANCELED, "connection closed");
	rc = ud ? sx_server_subscribe(eng->srv, req->conn, topic) : sx_server_unsubscribe(eng->srv, req->conn, topic);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 1);
	sx_pack_kv_str(pk, ud ? "subscribed" : "unsubscribed", topic);
	return 0;
}

static int job_id_arg(const msgpack_object *args, uint64_t *id)
{
	static const char *const known[] = {"id", NULL};
	int64_t v;
	int rc;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "id", 1, &v)) < 0)
		return rc;
	if (v < 1)
		return sx_diag_set(SX_EINVAL, "argument 'id' must be a job id");
	*id = (uint64_t)v;
	return 0;
}

static int m_job_status(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	uint64_t id;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = job_id_arg(args, &id)) < 0)
		return rc;
	return sx_jobs_pack_status(eng->jobs, id, pk);
}

static int m_job_cancel(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	uint64_t id;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = job_id_arg(args, &id)) < 0 || (rc = sx_jobs_cancel(eng->jobs, id)) < 0)
		return rc;
	return sx_jobs_pack_status(eng->jobs, id, pk);
}

static int m_job_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(req), SX_UNUSED(ud);
	int rc = sx_arg_only(args, no_args);
	if (rc < 0)
		return rc;
	sx_jobs_pack_list(eng->jobs, pk);
	return 0;
}

static int method_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct sx_method *const *)a)->name, (*(const struct sx_method *const *)b)->name);
}

static int m_methods(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(req), SX_UNUSED(ud);
	int rc = sx_arg_only(args, no_args);
	if (rc < 0)
		return rc;
	size_t n = sx_rpc_count(eng->rpc);
	const struct sx_method **all = malloc((n ? n : 1) * sizeof(*all));
	if (!all)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		all[i] = sx_rpc_at(eng->rpc, i);
	qsort(all, n, sizeof(*all), method_cmp);
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_map(pk, 3);
		sx_pack_kv_str(pk, "name", all[i]->name);
		sx_pack_kv_str(pk, "role", sx_role_name(all[i]->role));
		sx_pack_kv_str(pk, "doc", all[i]->doc ? all[i]->doc : "");
	}
	free(all);
	return 0;
}

struct backup {
	char path[1024];
	struct sx_req *req;
	int64_t started;
};

static int backup_work(struct sx_job *job, void *ud)
{
	struct backup *b = ud;
	sx_job_progress(job, 0.0, "copying");
	int rc = sx_store_backup(eng->store, b->path);
	if (rc < 0)
		sx_job_fail(job, sx_diag_last());
	return rc;
}

static void backup_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct backup *b = ud;
	SX_UNUSED(job);
	if (rc == 0) {
		msgpack_pack_map(pk, 2);
		sx_pack_kv_str(pk, "path", b->path);
		sx_pack_kv_int(pk, "ms", sx_wall_ms() - b->started);
		/* The requester waits for the copy: answer with the same result. */
		msgpack_pack_map(&b->req->pk, 2);
		sx_pack_kv_str(&b->req->pk, "path", b->path);
		sx_pack_kv_int(&b->req->pk, "ms", sx_wall_ms() - b->started);
	}
	sx_req_finish(b->req, rc);
	free(b);
}

static int m_backup(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"path", NULL};
	struct backup *b = calloc(1, sizeof(*b));
	int rc;
	SX_UNUSED(pk), SX_UNUSED(ud);
	if (!b)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "path", 1, b->path, sizeof(b->path))) < 0 ||
	    (!b->path[0] && (rc = sx_diag_set(SX_EINVAL, "argument 'path' must not be empty")))) {
		free(b);
		return rc;
	}
	b->req = req;
	b->started = sx_wall_ms();
	int64_t id = sx_jobs_start(eng->jobs, "backup", backup_work, backup_done, b);
	if (id < 0) {
		free(b);
		return (int)id;
	}
	return SX_RPC_DEFER;
}

static int start(struct sx_engine *e)
{
	eng = e;
	const struct sx_method methods[] = {
		{"ping", SX_ROLE_NONE, m_ping, NULL, "liveness: answers \"pong\""},
		{"auth", SX_ROLE_NONE, m_auth, NULL, "authenticate the connection with a token"},
		{"server.info", SX_ROLE_READER, m_info, NULL, "version, uptime, load, store, scripts, jobs"},
		{"server.methods", SX_ROLE_READER, m_methods, NULL, "every built-in method with its role"},
		{"subscribe", SX_ROLE_READER, m_subscription, "subscribe", "receive notifications of a topic"},
		{"unsubscribe", SX_ROLE_READER, m_subscription, NULL, "stop notifications of a topic"},
		{"job.status", SX_ROLE_READER, m_job_status, NULL, "a job's state, progress and result"},
		{"job.cancel", SX_ROLE_WRITER, m_job_cancel, NULL, "ask a running job to stop"},
		{"job.list", SX_ROLE_READER, m_job_list, NULL, "running and recent jobs"},
		{"admin.backup", SX_ROLE_ADMIN, m_backup, NULL, "a compacted, consistent copy of the store"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	return sx_scripts_register_methods(e->scripts);
}

const struct sx_plugin sx_plugin_system = {"system", start, NULL, NULL};
