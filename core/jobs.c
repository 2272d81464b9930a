#include "core/jobs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"

#define KEEP_FINISHED 100

enum { JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED };
static const char *const state_names[] = {"running", "done", "failed", "cancelled"};

struct sx_job {
	uv_work_t w;
	struct sx_jobs *jobs;
	uint64_t id;
	char kind[64];
	int state;
	atomic_int cancel;
	double progress;     /* under jobs->mu */
	char message[256];   /* under jobs->mu */
	int dirty;           /* under jobs->mu */
	sx_job_work_fn work;
	sx_job_done_fn done;
	void *ud;
	int rc;
	char error[256];
	msgpack_sbuffer result;
	int64_t started_ms, finished_ms;
	struct sx_job *next;
};

struct sx_jobs {
	uv_loop_t *loop;
	struct sx_server *srv;
	uv_async_t async;
	pthread_mutex_t mu;
	struct sx_job *list; /* newest first */
	uint64_t next_id;
	uint32_t running;
};

static void pack_status(struct sx_job *j, msgpack_packer *pk)
{
	int has_result = j->state == JOB_DONE && j->result.size;
	int has_error = j->state == JOB_FAILED || j->state == JOB_CANCELLED;
	msgpack_pack_map(pk, 7 + has_result + has_error);
	sx_pack_kv_uint(pk, "id", j->id);
	sx_pack_kv_str(pk, "kind", j->kind);
	sx_pack_kv_str(pk, "state", state_names[j->state]);
	pthread_mutex_lock(&j->jobs->mu);
	sx_pack_kv_double(pk, "progress", j->progress);
	sx_pack_kv_str(pk, "message", j->message);
	pthread_mutex_unlock(&j->jobs->mu);
	sx_pack_kv_int(pk, "started", j->started_ms);
	sx_pack_str(pk, "finished");
	if (j->finished_ms)
		msgpack_pack_int64(pk, j->finished_ms);
	else
		msgpack_pack_nil(pk);
	if (has_result) {
		sx_pack_str(pk, "result");
		msgpack_sbuffer_write(pk->data, j->result.data, j->result.size);
	}
	if (has_error) {
		sx_pack_str(pk, "error");
		sx_pack_error(pk, j->rc < 0 ? j->rc : SX_ECANCELED, j->error);
	}
}

static void publish(struct sx_jobs *jobs, struct sx_job *j)
{
	if (!jobs->srv)
		return;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_status(j, &pk);
	char topic[64];
	snprintf(topic, sizeof(topic), "job.%llu", (unsigned long long)j->id);
	sx_server_publish(jobs->srv, "jobs", sb.data, sb.size);
	sx_server_publish(jobs->srv, topic, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void async_cb(uv_async_t *a)
{
	struct sx_jobs *jobs = a->data;
	for (struct sx_job *j = jobs->list; j; j = j->next) {
		pthread_mutex_lock(&jobs->mu);
		int d = j->dirty;
		j->dirty = 0;
		pthread_mutex_unlock(&jobs->mu);
		if (d && j->state == JOB_RUNNING)
			publish(jobs, j);
	}
}

struct sx_jobs *sx_jobs_new(uv_loop_t *loop, struct sx_server *srv)
{
	struct sx_jobs *jobs = calloc(1, sizeof(*jobs));
	if (!jobs)
		return NULL;
	jobs->loop = loop;
	jobs->srv = srv;
	jobs->next_id = 1;
	pthread_mutex_init(&jobs->mu, NULL);
	uv_async_init(loop, &jobs->async, async_cb);
	jobs->async.data = jobs;
	return jobs;
}

void sx_jobs_set_server(struct sx_jobs *jobs, struct sx_server *srv) { jobs->srv = srv; }

static void job_free(struct sx_job *j)
{
	msgpack_sbuffer_destroy(&j->result);
	free(j);
}

void sx_jobs_free(struct sx_jobs *jobs)
{
	if (!jobs)
		return;
	for (struct sx_job *j = jobs->list; j; j = j->next)
		atomic_store(&j->cancel, 1);
	while (jobs->running)
		uv_run(jobs->loop, UV_RUN_ONCE);
	struct sx_job *j = jobs->list, *n;
	for (; j; j = n) {
		n = j->next;
		job_free(j);
	}
	uv_close((uv_handle_t *)&jobs->async, NULL);
	/* the loop finishes the close before the handle's memory goes */
	uv_run(jobs->loop, UV_RUN_NOWAIT);
	pthread_mutex_destroy(&jobs->mu);
	free(jobs);
}

static void work_cb(uv_work_t *w)
{
	struct sx_job *j = w->data;
	if (atomic_load(&j->cancel)) {
		j->rc = SX_ECANCELED;
		return;
	}
	j->rc = j->work(j, j->ud);
	if (j->rc < 0 && !j->error[0])
		snprintf(j->error, sizeof(j->error), "%s", sx_diag_last());
}

static void trim(struct sx_jobs *jobs)
{
	size_t kept = 0;
	for (struct sx_job **pp = &jobs->list; *pp;) {
		struct sx_job *j = *pp;
		if (j->state != JOB_RUNNING && ++kept > KEEP_FINISHED) {
			*pp = j->next;
			job_free(j);
		} else {
			pp = &j->next;
		}
	}
}

static void after_cb(uv_work_t *w, int status)
{
	struct sx_job *j = w->data;
	struct sx_jobs *jobs = j->jobs;
	msgpack_packer pk;
	if (status == UV_ECANCELED)
		j->rc = SX_ECANCELED;
	msgpack_packer_init(&pk, &j->result, msgpack_sbuffer_write);
	if (j->rc < 0)
		sx_diag_set(j->rc, "%s", j->error);
	j->done(j, j->rc, &pk, j->ud);
	if (j->rc == SX_ECANCELED || atomic_load(&j->cancel)) {
		if (j->rc < 0) {
			j->state = JOB_CANCELLED;
			if (!j->error[0])
				snprintf(j->error, sizeof(j->error), "cancelled");
		} else {
			j->state = JOB_DONE;
		}
	} else {
		j->state = j->rc < 0 ? JOB_FAILED : JOB_DONE;
	}
	if (j->state == JOB_DONE) {
		pthread_mutex_lock(&jobs->mu);
		j->progress = 1.0;
		pthread_mutex_unlock(&jobs->mu);
	}
	j->finished_ms = sx_wall_ms();
	jobs->running--;
	publish(jobs, j);
	trim(jobs);
}

int64_t sx_jobs_start(struct sx_jobs *jobs, const char *kind, sx_job_work_fn work,
		      sx_job_done_fn done, void *ud)
{
	/* A client pipelining job requests (each answered at once with an id) must not
	 * queue work and memory without bound, nor hold the shared pool for ever. */
	if (jobs->running >= SX_JOBS_MAX)
		return sx_diag_set(SX_EBUSY, "%d jobs are queued or running: retry when one has finished",
				   SX_JOBS_MAX);
	struct sx_job *j = calloc(1, sizeof(*j));
	if (!j)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	j->jobs = jobs;
	j->id = jobs->next_id++;
	snprintf(j->kind, sizeof(j->kind), "%s", kind);
	j->work = work;
	j->done = done;
	j->ud = ud;
	j->started_ms = sx_wall_ms();
	msgpack_sbuffer_init(&j->result);
	j->w.data = j;
	int rc = uv_queue_work(jobs->loop, &j->w, work_cb, after_cb);
	if (rc < 0) {
		job_free(j);
		return sx_diag_set(SX_EBUSY, "cannot queue the job: %s", uv_strerror(rc));
	}
	j->next = jobs->list;
	jobs->list = j;
	jobs->running++;
	publish(jobs, j);
	return (int64_t)j->id;
}

void sx_job_progress(struct sx_job *j, double fraction, const char *message)
{
	pthread_mutex_lock(&j->jobs->mu);
	j->progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
	if (message)
		snprintf(j->message, sizeof(j->message), "%s", message);
	j->dirty = 1;
	pthread_mutex_unlock(&j->jobs->mu);
	uv_async_send(&j->jobs->async);
}

int sx_job_cancelled(const struct sx_job *j) { return atomic_load(&j->cancel); }

void sx_job_fail(struct sx_job *j, const char *message)
{
	snprintf(j->error, sizeof(j->error), "%s", message);
}

static struct sx_job *find(struct sx_jobs *jobs, uint64_t id)
{
	for (struct sx_job *j = jobs->list; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

int sx_jobs_cancel(struct sx_jobs *jobs, uint64_t id)
{
	struct sx_job *j = find(jobs, id);
	if (!j)
		return sx_diag_set(SX_ENOENT, "no job %llu", (unsigned long long)id);
	if (j->state != JOB_RUNNING)
		return sx_diag_set(SX_ESTATE, "job %llu is %s", (unsigned long long)id, state_names[j->state]);
	atomic_store(&j->cancel, 1);
	uv_cancel((uv_req_t *)&j->w);
	return 0;
}

int sx_jobs_pack_status(struct sx_jobs *jobs, uint64_t id, msgpack_packer *pk)
{
	struct sx_job *j = find(jobs, id);
	if (!j)
		return sx_diag_set(SX_ENOENT, "no job %llu", (unsigned long long)id);
	pack_status(j, pk);
	return 0;
}

uint32_t sx_jobs_running(const struct sx_jobs *jobs) { return jobs->running; }

void sx_jobs_pack_list(struct sx_jobs *jobs, msgpack_packer *pk)
{
	uint32_t n = 0;
	for (struct sx_job *j = jobs->list; j; j = j->next)
		n++;
	msgpack_pack_array(pk, n);
	for (struct sx_job *j = jobs->list; j; j = j->next)
		pack_status(j, pk);
}
