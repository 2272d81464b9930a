/* The script registry's libs: require resolution, instances per requiring
 * script, cycles and nesting, budgets shared with the requiring load, the
 * reload of dependents and the refusal of a lib version that breaks one,
 * and host consumers of a lib (sx_scripts_use_lib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <msgpack.h>
#include <uv.h>

#include "core/config.h"
#include "core/lua/sandbox.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/scripts.h"
#include "core/sx.h"
#include "store/store.h"

struct fx {
	char dir[128];
	uv_loop_t loop;
	struct sx_config cfg;
	struct sx_engine e;
};

static void commit_cb(uint64_t seq, int rc, void *ud)
{
	(void)seq, (void)ud;
	assert_int_equal(rc, 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/sx-test-scripts-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	uv_loop_init(&f->loop);
	sx_config_defaults(&f->cfg);
	snprintf(f->cfg.scripts_dir, sizeof(f->cfg.scripts_dir), "%s/none", f->dir);
	f->cfg.watch_scripts = 0;
	struct sx_store_opts o = {.dir = f->dir, .relaxed = 1, .commit_cb = commit_cb, .ud = f};
	f->e.loop = &f->loop;
	f->e.cfg = &f->cfg;
	f->e.store = sx_store_open(&f->loop, &o);
	assert_non_null(f->e.store);
	f->e.rpc = sx_rpc_new();
	struct sx_lua_limits ll = {1000000, 64 << 20, 0, 5000};
	f->e.lua = sx_lua_new(&ll);
	assert_non_null(f->e.lua);
	f->e.scripts = sx_scripts_new(&f->e);
	assert_non_null(f->e.scripts);
	assert_int_equal(sx_scripts_register_methods(f->e.scripts), 0);
	assert_int_equal(sx_scripts_start(f->e.scripts), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	sx_scripts_free(f->e.scripts);
	sx_lua_free(f->e.lua);
	sx_store_read_end(f->e.store);
	sx_store_close(f->e.store);
	sx_rpc_free(f->e.rpc);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	uv_loop_close(&f->loop);
	sx_config_free(&f->cfg);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int put(struct fx *f, const char *kind, const char *name, const char *src)
{
	return sx_scripts_put(f->e.scripts, kind, name, src, strlen(src), "rpc");
}

/* methods/name.fn() as an integer; fails the test on an error. */
static int64_t call_int(struct fx *f, const char *name, const char *fn)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	int rc = sx_scripts_call(f->e.scripts, "methods", name, fn, NULL, &pk);
	if (rc < 0)
		fail_msg("%s.%s: %s", name, fn, sx_diag_last());
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_init(&z, 256);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	assert_true(o.type == MSGPACK_OBJECT_POSITIVE_INTEGER || o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
	int64_t v = o.via.i64;
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return v;
}

static void assert_diag(const char *want)
{
	if (!strstr(sx_diag_last(), want))
		fail_msg("expected '%s' in '%s'", want, sx_diag_last());
}

static void test_require_resolves_libs(void **state)
{
	struct fx *f = *state;
	assert_int_equal(put(f, "lib", "util", "return { x = 40, add = function(a, b) return a + b end }"), 1);
	assert_int_equal(put(f, "methods", "m", "local u = require 'util'\n"
					       "return { get = function() return u.add(u.x, 2) end }"), 1);
	assert_int_equal(call_int(f, "m", "get"), 42);
	/* a lib of libs */
	assert_int_equal(put(f, "lib", "two", "local u = require 'util'\nreturn { v = u.x * 2 }"), 1);
	assert_int_equal(put(f, "methods", "n", "local t = require 'two'\nreturn { get = function() return t.v end }"), 1);
	assert_int_equal(call_int(f, "n", "get"), 80);
	/* a lib returning nothing gives true, like Lua's require */
	assert_int_equal(put(f, "lib", "empty", "local x = 1"), 1);
	assert_int_equal(put(f, "methods", "e", "local e = require 'empty'\n"
					       "return { get = function() return e == true and 1 or 0 end }"), 1);
	assert_int_equal(call_int(f, "e", "get"), 1);
}

static void test_missing_builtin_and_late(void **state)
{
	struct fx *f = *state;
	assert_int_equal(put(f, "methods", "m", "\nlocal x = require 'nope'\nreturn { f = function() end }"), SX_ESCRIPT);
	assert_diag("methods/m.lua:2: module 'nope' not found: no lib script 'nope'");
	assert_int_equal(put(f, "lib", "sextant", "return {}"), SX_ESCRIPT);
	assert_diag("lib/sextant.lua: 'sextant' is a built-in module");
	assert_int_equal(put(f, "lib", "table", "return {}"), SX_ESCRIPT);
	assert_int_equal(put(f, "methods", "m", "local x = require 'Bad-Name'\nreturn { f = function() end }"), SX_ESCRIPT);
	assert_diag("module 'Bad-Name' is not available in the sandbox");
	assert_int_equal(put(f, "lib", "util", "return { x = 1 }"), 1);
	assert_int_equal(put(f, "methods", "late", "return { f = function() return require('util').x end }"), 1);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	assert_int_equal(sx_scripts_call(f->e.scripts, "methods", "late", "f", NULL, &pk), SX_ESCRIPT);
	assert_diag("methods/late.lua:1: require \"util\": a lib is required while the script loads");
	msgpack_sbuffer_destroy(&sb);
}

static void test_instances_are_per_script(void **state)
{
	struct fx *f = *state;
	assert_int_equal(put(f, "lib", "box", "local t = { n = 0 }\nfunction t.inc() t.n = t.n + 1; return t.n end\n"
					    "count = (count or 0) + 1\nreturn t"), 1);
	const char *src = "local b = require 'box'\nlocal again = require 'box'\n"
			  "return { inc = function() return b.inc() end,\n"
			  "  same = function() return b == again and 1 or 0 end,\n"
			  "  wipe = function() b.inc = nil; return 0 end }";
	assert_int_equal(put(f, "methods", "a", src), 1);
	assert_int_equal(put(f, "methods", "b", src), 1);
	assert_int_equal(call_int(f, "a", "same"), 1);
	assert_int_equal(call_int(f, "a", "inc"), 1);
	assert_int_equal(call_int(f, "a", "inc"), 2);
	assert_int_equal(call_int(f, "b", "inc"), 1);
	assert_int_equal(call_int(f, "a", "wipe"), 0);
	assert_int_equal(call_int(f, "b", "inc"), 2);
	/* the lib's globals live in its own environment, not in the requiring one */
	assert_int_equal(put(f, "methods", "g", "local b = require 'box'\n"
					       "return { get = function() return count == nil and 1 or 0 end }"), 1);
	assert_int_equal(call_int(f, "g", "get"), 1);
}

static void test_cycles_and_depth(void **state)
{
	struct fx *f = *state;
	assert_int_equal(put(f, "lib", "me", "return require 'me'"), SX_ESCRIPT);
	assert_diag("lib/me.lua: require cycle: me -> me"); /* a tail call: no line */
	assert_int_equal(put(f, "lib", "me", "local me = require 'me'\nreturn me"), SX_ESCRIPT);
	assert_diag("lib/me.lua:1: require cycle: me -> me");
	assert_int_equal(put(f, "lib", "a", "return { v = 1 }"), 1);
	assert_int_equal(put(f, "lib", "b", "return { v = require('a').v + 1 }"), 1);
	assert_int_equal(put(f, "lib", "c", "return { v = require('b').v + 1 }"), 1);
	assert_int_equal(put(f, "lib", "a", "local c = require 'c'\nreturn { v = 0 }"), SX_ESCRIPT);
	assert_diag("require cycle: a -> c -> b -> a");
	/* a methods script that requires a lib that would be cyclic never sees one:
	 * the cycle was refused when it was put */
	assert_int_equal(put(f, "methods", "m", "local c = require 'c'\nreturn { get = function() return c.v end }"), 1);
	assert_int_equal(call_int(f, "m", "get"), 3);
	/* nesting is bounded (16) */
	char name[16], src[128];
	for (int i = 0; i < 17; i++) {
		snprintf(name, sizeof(name), "d%d", i);
		if (i == 0)
			snprintf(src, sizeof(src), "return { d = 0 }");
		else
			snprintf(src, sizeof(src), "return { d = require('d%d').d + 1 }", i - 1);
		int rc = put(f, "lib", name, src);
		if (i < 16) {
			assert_int_equal(rc, 1);
		} else {
			assert_int_equal(rc, SX_ESCRIPT);
			assert_diag("libs nested more than 16 deep");
		}
	}
}

static void test_lib_runs_under_the_requiring_budget(void **state)
{
	struct fx *f = *state;
	/* about 6 instructions per iteration: 100k iterations fit 1e6 alone, not twice */
	const char *spin = "local s = 0\nfor i = 1, 100000 do s = s + i end\n";
	char src[256];
	snprintf(src, sizeof(src), "%sreturn { s = s }", spin);
	assert_int_equal(put(f, "lib", "heavy", src), 1);
	snprintf(src, sizeof(src), "%sreturn { f = function() return s end }", spin);
	assert_int_equal(put(f, "methods", "alone", src), 1);
	snprintf(src, sizeof(src), "local h = require 'heavy'\n%sreturn { f = function() return s end }", spin);
	assert_int_equal(put(f, "methods", "both", src), SX_EBUDGET);
	assert_diag("instruction budget exceeded");
	assert_int_equal(put(f, "lib", "forever", "while true do end"), SX_EBUDGET);
	assert_diag("lib/forever.lua:1: instruction budget exceeded");
	/* a version of a lib that exhausts the budget of a dependent's load is refused */
	assert_int_equal(put(f, "lib", "grow", "return { n = 1 }"), 1);
	assert_int_equal(put(f, "methods", "dep", "local g = require 'grow'\nreturn { f = function() return g.n end }"), 1);
	assert_int_equal(put(f, "lib", "grow", "local i = 0\nrepeat i = i + 1 until false"), SX_EBUDGET);
	assert_diag("lib/grow.lua:2: instruction budget exceeded");
	assert_int_equal(call_int(f, "dep", "f"), 1);
	/* the VM serves on */
	assert_int_equal(call_int(f, "alone", "f"), 5000050000LL);
}

static void test_dependents_reload_or_refuse(void **state)
{
	struct fx *f = *state;
	assert_int_equal(put(f, "lib", "k", "return { v = 1 }"), 1);
	assert_int_equal(put(f, "lib", "k2", "local k = require 'k'\nreturn { v = k.v * 10 }"), 1);
	assert_int_equal(put(f, "methods", "m",
			     "local k2 = require 'k2'\nlocal v = assert(k2.v, 'no v')\n"
			     "return { get = function() return v end }"), 1);
	assert_int_equal(call_int(f, "m", "get"), 10);
	assert_int_equal(put(f, "lib", "k", "return { v = 2 }"), 2);
	assert_int_equal(call_int(f, "m", "get"), 20);
	/* k2 fails with this k: refused, naming k2's file and line */
	assert_int_equal(put(f, "lib", "k", "return { v = 'x' }"), SX_ESCRIPT);
	assert_diag("lib/k2 does not load with this version of lib/k: lib/k2.lua:2: attempt to perform arithmetic");
	assert_int_equal(call_int(f, "m", "get"), 20);
	/* m fails with this k2: refused too */
	assert_int_equal(put(f, "lib", "k2", "return {}"), SX_ESCRIPT);
	assert_diag("methods/m does not load with this version of lib/k2: methods/m.lua:2: no v");
	assert_int_equal(call_int(f, "m", "get"), 20);
}

static int validated, installed_n;

static int use_validate(lua_State *L, int value, const char *name, void *ud)
{
	(void)name, (void)ud;
	validated++;
	lua_getfield(L, value, "ok");
	int ok = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return ok ? 0 : sx_diag_set(SX_ESCRIPT, "'ok' must be true");
}

static void use_installed(const char *name, int ref, void *ud)
{
	(void)ref, (void)ud;
	assert_string_equal(name, "conf");
	installed_n++;
}

static void test_use_lib(void **state)
{
	struct fx *f = *state;
	validated = installed_n = 0;
	struct sx_lib_use u = {"conf", use_validate, use_installed, NULL};
	assert_int_equal(sx_scripts_use_lib(f->e.scripts, &u), 0);
	assert_int_equal(put(f, "lib", "conf", "return { ok = false }"), SX_ESCRIPT);
	assert_diag("lib/conf.lua: 'ok' must be true");
	assert_int_equal(installed_n, 0);
	assert_int_equal(put(f, "lib", "conf", "return { ok = true }"), 1);
	assert_int_equal(installed_n, 1);
	/* a lib it requires changes: the consumer gets the new instance */
	assert_int_equal(put(f, "lib", "base", "return 1"), 1);
	assert_int_equal(put(f, "lib", "conf", "local b = require 'base'\nreturn { ok = b == 1 }"), 2);
	assert_int_equal(installed_n, 2);
	assert_int_equal(put(f, "lib", "base", "return 2"), SX_ESCRIPT);
	assert_diag("lib/conf does not load with this version of lib/base: lib/conf.lua: 'ok' must be true");
	assert_int_equal(installed_n, 2);
	assert_int_equal(put(f, "lib", "base", "return 1 + 0"), 2);
	assert_int_equal(installed_n, 3);
	/* registered after the lib serves: told at once */
	struct sx_lib_use u2 = {"conf", NULL, use_installed, NULL};
	assert_int_equal(sx_scripts_use_lib(f->e.scripts, &u2), 0);
	assert_int_equal(installed_n, 4);
	assert_true(validated >= 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_require_resolves_libs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_builtin_and_late, setup, teardown),
		cmocka_unit_test_setup_teardown(test_instances_are_per_script, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cycles_and_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lib_runs_under_the_requiring_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dependents_reload_or_refuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_use_lib, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
