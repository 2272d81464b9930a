#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/jobs.h"
#include "core/sx.h"

static atomic_int release;

static int wait_work(struct sx_job *job, void *ud)
{
	SX_UNUSED(ud);
	while (!atomic_load(&release) && !sx_job_cancelled(job))
		usleep(1000);
	return 0;
}

static void count_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	SX_UNUSED(job), SX_UNUSED(rc);
	msgpack_pack_nil(pk);
	(*(int *)ud)++;
}

/* Job requests beyond SX_JOBS_MAX queued or running are refused, not queued
 * without bound; once some have finished, new ones start again. */
static void test_jobs_are_bounded(void **state)
{
	SX_UNUSED(state);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct sx_jobs *jobs = sx_jobs_new(&loop, NULL);
	assert_non_null(jobs);
	int done = 0;
	atomic_store(&release, 0);
	for (int i = 0; i < SX_JOBS_MAX; i++)
		assert_true(sx_jobs_start(jobs, "wait", wait_work, count_done, &done) > 0);
	assert_int_equal(sx_jobs_start(jobs, "wait", wait_work, count_done, &done), SX_EBUSY);
	assert_non_null(strstr(sx_diag_last(), "retry"));
	atomic_store(&release, 1);
	for (int i = 0; i < 10000 && sx_jobs_running(jobs) > 0; i++)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(done, SX_JOBS_MAX);
	assert_true(sx_jobs_start(jobs, "wait", wait_work, count_done, &done) > 0);
	sx_jobs_free(jobs);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jobs_are_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
