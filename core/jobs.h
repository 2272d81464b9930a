/* jobs.h — heavy work on the libuv thread pool, with ids, progress, cancel and results.
 *
 * A job's work function runs on a pool thread; it must not touch Lua, the
 * server or the store's loop-thread API (it may read the store with
 * sx_store_rtxn_begin). It reports progress with sx_job_progress() and should
 * return SX_ECANCELED soon after sx_job_cancelled() turns true. The done
 * function runs on the loop thread and packs the job's result (one object).
 * Subscribers of topic "jobs" get a notification for every progress step and
 * for the end of every job: {id, kind, state, progress, message, result?, error?}.
 */
#ifndef SX_JOBS_H
#define SX_JOBS_H

#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

struct sx_server;
struct sx_job;
struct sx_jobs;

typedef int (*sx_job_work_fn)(struct sx_job *job, void *ud);
/* rc is what work returned; pack the result with pk (on success) and free ud. */
typedef void (*sx_job_done_fn)(struct sx_job *job, int rc, msgpack_packer *pk, void *ud);

struct sx_jobs *sx_jobs_new(uv_loop_t *loop, struct sx_server *srv);
/* Cancels what runs and waits for it (runs the loop). */
void sx_jobs_free(struct sx_jobs *jobs);
void sx_jobs_set_server(struct sx_jobs *jobs, struct sx_server *srv);

/* At most this many jobs queued or running at once. */
#define SX_JOBS_MAX 32

/* Starts a job; returns its id (> 0) or a negative error (SX_EBUSY with
 * SX_JOBS_MAX jobs queued or running); on error done is not called and ud is
 * the caller's. kind is copied. */
int64_t sx_jobs_start(struct sx_jobs *jobs, const char *kind, sx_job_work_fn work,
		      sx_job_done_fn done, void *ud);

/* Pool thread. */
void sx_job_progress(struct sx_job *job, double fraction, const char *message);
int sx_job_cancelled(const struct sx_job *job);
/* Message for a failing job (pool thread; copied). */
void sx_job_fail(struct sx_job *job, const char *message);

/* Loop thread. */
int sx_jobs_cancel(struct sx_jobs *jobs, uint64_t id);
/* Packs {id, kind, state, progress, message, started, finished, result?, error?}. */
int sx_jobs_pack_status(struct sx_jobs *jobs, uint64_t id, msgpack_packer *pk);
uint32_t sx_jobs_running(const struct sx_jobs *jobs);
/* Packs the list of jobs known (running first, then the last finished ones). */
void sx_jobs_pack_list(struct sx_jobs *jobs, msgpack_packer *pk);

#endif
