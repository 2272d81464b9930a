/* sx.h — error codes and per-thread diagnostics shared by every Sextant module.
 *
 * Functions return 0 on success or a negative SX_E* code. Pointer-returning
 * functions return NULL and leave the reason in the diagnostics slot.
 * The message of the last failure on this thread is kept by sx_diag_set()
 * and read with sx_diag_last(); it stays valid until the next sx_diag_set()
 * on the same thread.
 *
 * Every SX_E* code maps to exactly one stable RPC error code string
 * (sx_error_code()); docs/API.md lists them. This file is the only place that
 * mapping lives.
 */
#ifndef SX_H
#define SX_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifndef SX_VERSION
#define SX_VERSION "0.0.0"
#endif

enum {
	SX_OK = 0,
	/* errno-valued codes */
	SX_EINVAL = -EINVAL,       /* invalid_argument */
	SX_ENOMEM = -ENOMEM,       /* resource_exhausted */
	SX_ENOENT = -ENOENT,       /* not_found */
	SX_EEXIST = -EEXIST,       /* already_exists */
	SX_EACCES = -EACCES,       /* permission_denied */
	SX_E2BIG = -E2BIG,         /* too_large */
	SX_EBUSY = -EBUSY,         /* unavailable */
	SX_EIO = -EIO,             /* io_error */
	SX_ENOSPC = -ENOSPC,       /* storage_full */
	SX_ETIMEDOUT = -ETIMEDOUT, /* deadline_exceeded */
	SX_ECANCELED = -ECANCELED, /* cancelled */
	SX_EPROTO = -EPROTO,       /* invalid_request */
	/* Sextant's own range */
	SX_EBASE = -10000,
	SX_EPARSE = -10001,    /* parse_error: bytes that are not MessagePack */
	SX_ENOMETHOD = -10002, /* unknown_method */
	SX_EAUTH = -10003,     /* unauthenticated */
	SX_ESCRIPT = -10004,   /* script_error: a script raised or returned garbage */
	SX_EBUDGET = -10005,   /* budget_exceeded: instructions, memory or time */
	SX_ESTATE = -10006,    /* failed_precondition */
	SX_ECORRUPT = -10007,  /* data_corrupted */
	SX_EINTERNAL = -10008, /* internal */
	SX_ELIMIT = -10009,    /* limit_exceeded: a configured protocol limit */
	SX_ECONFLICT = -10010, /* conflict: a concurrent change won */
	SX_ELAST = -10011
};

/* The stable RPC error code for rc ("invalid_argument", ...). Never NULL. */
const char *sx_error_code(int rc);

/* The SX_E* code of an RPC error code string, or SX_EINTERNAL if unknown. */
int sx_error_from_code(const char *code);

/* Record the reason for a failure on this thread; returns rc so that
 * `return sx_diag_set(SX_EINVAL, "...")` reads naturally. */
int sx_diag_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *sx_diag_last(void);

/* The code recorded with the last message on this thread (0 if none). */
int sx_diag_last_code(void);

void sx_diag_clear(void);

/* Monotonic clock, milliseconds and nanoseconds; wall clock in milliseconds. */
uint64_t sx_now_ms(void);
uint64_t sx_now_ns(void);
int64_t sx_wall_ms(void);

/* A macro's value as a string literal. */
#define SX_STR_(x) #x
#define SX_STR(x) SX_STR_(x)
#define SX_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SX_UNUSED(x) ((void)(x))

#endif
