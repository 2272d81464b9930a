/* libFuzzer target: the script loader (core/lua/sandbox.c) and the source
 * instrumenter (core/lua/instrument.c) on arbitrary source text.
 *
 * The instrumenter must accept anything (or refuse the reserved identifier)
 * without reading outside the source, and must never add lines. The loader
 * runs the chunk under small budgets; whatever it does, it must come back
 * with 0 or a clean error, and the VM must stay usable: a trivial chunk loads
 * after every input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "core/lua/instrument.h"
#include "core/lua/sandbox.h"
#include "core/sx.h"

static struct sx_lua *lx;
static size_t baseline;
static unsigned long runs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	struct sx_lua_limits l = {200000, 8u << 20, 8, 200};
	lx = sx_lua_new(&l);
	if (!lx)
		abort();
	lua_gc(sx_lua_state(lx), LUA_GCCOLLECT, 0);
	baseline = sx_lua_memory(lx);
	return 0;
}

static size_t lines(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += s[i] == '\n';
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	char *src = malloc(size ? size : 1);
	if (!src)
		return 0;
	memcpy(src, data, size);

	char *out = NULL;
	size_t outlen = 0;
	int rc = sx__lua_instrument("=fuzz", src, size, &out, &outlen);
	if (rc == 0) {
		if (lines(out, outlen) != lines(src, size))
			abort(); /* line numbers in errors must stay those of the source */
		free(out);
	} else if (rc != SX_ESCRIPT && rc != SX_ENOMEM) {
		abort();
	}

	lua_State *L = sx_lua_state(lx);
	int top = lua_gettop(L);
	rc = sx_lua_load(lx, "=fuzz", src, size);
	if (rc == 0)
		lua_pop(L, 2);
	else if (rc != SX_ESCRIPT && rc != SX_EBUDGET && rc != SX_ENOMEM)
		abort();
	if (lua_gettop(L) != top)
		abort();
	free(src);

	if (sx_lua_load(lx, "=probe", "return 1 + 1", 12) != 0 || lua_tointeger(L, -2) != 2)
		abort();
	lua_pop(L, 2);
	/* LeakSanitizer cannot see into the VM (tests/fuzz/lsan.supp): the
	 * allocator's own count must come back down after a full collection. */
	if (++runs % 64 == 0) {
		lua_gc(L, LUA_GCCOLLECT, 0);
		if (sx_lua_memory(lx) > baseline + (32u << 20)) {
			fprintf(stderr, "fuzz_lua: the VM holds %zu bytes (baseline %zu)\n", sx_lua_memory(lx), baseline);
			abort();
		}
	}
	return 0;
}
