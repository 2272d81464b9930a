/* fsync_fault.c — an LD_PRELOAD shim for the end-to-end tests: fsync and
 * fdatasync fail with EIO while the file named by $SX_FAULT_FSYNC exists, after
 * $SX_FAULT_FSYNC_DELAY_MS (default 0) as a slow failing disk would.
 * LMDB syncs through fdatasync, so a test can make a disk "fail" and "heal"
 * under a running server by creating and removing that file. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void)
{
	const char *path = getenv("SX_FAULT_FSYNC");
	if (!path || !*path || access(path, F_OK) != 0)
		return 0;
	const char *delay = getenv("SX_FAULT_FSYNC_DELAY_MS");
	if (delay && atoi(delay) > 0)
		usleep((useconds_t)atoi(delay) * 1000u);
	return 1;
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (failing()) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (failing()) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
