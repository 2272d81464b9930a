#include "core/sx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct {
	int rc;
	const char *code;
} codes[] = {
	{SX_EINVAL, "invalid_argument"},
	{SX_ENOMEM, "resource_exhausted"},
	{SX_ENOENT, "not_found"},
	{SX_EEXIST, "already_exists"},
	{SX_EACCES, "permission_denied"},
	{SX_E2BIG, "too_large"},
	{SX_EBUSY, "unavailable"},
	{SX_EIO, "io_error"},
	{SX_ENOSPC, "storage_full"},
	{SX_ETIMEDOUT, "deadline_exceeded"},
	{SX_ECANCELED, "cancelled"},
	{SX_EPROTO, "invalid_request"},
	{SX_EPARSE, "parse_error"},
	{SX_ENOMETHOD, "unknown_method"},
	{SX_EAUTH, "unauthenticated"},
	{SX_ESCRIPT, "script_error"},
	{SX_EBUDGET, "budget_exceeded"},
	{SX_ESTATE, "failed_precondition"},
	{SX_ECORRUPT, "data_corrupted"},
	{SX_EINTERNAL, "internal"},
	{SX_ELIMIT, "limit_exceeded"},
	{SX_ECONFLICT, "conflict"},
};

const char *sx_error_code(int rc)
{
	for (size_t i = 0; i < SX_ARRAY_SIZE(codes); i++)
		if (codes[i].rc == rc)
			return codes[i].code;
	return "internal";
}

int sx_error_from_code(const char *code)
{
	for (size_t i = 0; i < SX_ARRAY_SIZE(codes); i++)
		if (strcmp(codes[i].code, code) == 0)
			return codes[i].rc;
	return SX_EINTERNAL;
}

static _Thread_local char diag_msg[512];
static _Thread_local int diag_code;

int sx_diag_set(int rc, const char *fmt, ...)
{
	/* Callers often wrap the last message ("argument %s", sx_diag_last()):
	 * format aside, as vsnprintf must not write over its own argument. */
	char tmp[sizeof(diag_msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(diag_msg, tmp, sizeof(tmp));
	diag_code = rc;
	return rc;
}

const char *sx_diag_last(void) { return diag_msg; }
int sx_diag_last_code(void) { return diag_code; }

void sx_diag_clear(void)
{
	diag_msg[0] = '\0';
	diag_code = 0;
}

uint64_t sx_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sx_now_ms(void) { return sx_now_ns() / 1000000u; }

int64_t sx_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
