#include "core/config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <sodium.h>

#include "core/rpc.h"
#include "core/sx.h"

enum kind { K_STR, K_U32, K_U64, K_MB, K_BYTES, K_BOOL, K_DURABILITY, K_INT };

struct key {
	const char *name;
	enum kind kind;
	size_t off, size;
	double min, max;
};

#define F(field) offsetof(struct sx_config, field), sizeof(((struct sx_config *)0)->field)

static const struct key keys[] = {
	{"listen", K_STR, F(listen), 0, 0},
	{"data_dir", K_STR, F(data_dir), 0, 0},
	{"scripts_dir", K_STR, F(scripts_dir), 0, 0},
	{"log_level", K_STR, F(log_level), 0, 0},
	{"durability", K_DURABILITY, F(relaxed), 0, 0},
	{"sync_interval_ms", K_U32, F(sync_interval_ms), 1, 3600000},
	{"max_reader_age_ms", K_U32, F(max_reader_age_ms), 0, 86400000},
	{"map_size_mb", K_MB, F(map_size), 1, 1 << 24},
	{"max_map_size_mb", K_MB, F(max_map_size), 1, 1 << 24},
	{"max_frame_bytes", K_BYTES, F(limits.max_frame_bytes), 64, 1u << 30},
	{"max_depth", K_INT, F(limits.max_depth), 2, SX_MAX_DEPTH_LIMIT},
	{"max_inflight", K_U32, F(limits.max_inflight), 1, 1 << 20},
	{"max_connections", K_U32, F(limits.max_connections), 1, 1 << 20},
	{"idle_timeout_ms", K_U32, F(limits.idle_timeout_ms), 10, 86400000},
	{"frame_timeout_ms", K_U32, F(limits.frame_timeout_ms), 10, 86400000},
	{"max_output_bytes", K_BYTES, F(limits.max_output_bytes), 4096, (double)(1ull << 40)},
	{"script_instructions", K_U64, F(script_instructions), 1000, 1e15},
	{"script_memory_mb", K_MB, F(script_memory), 1, 1 << 16},
	{"script_timeout_ms", K_U32, F(script_timeout_ms), 1, 3600000},
	{"shutdown_grace_ms", K_U32, F(shutdown_grace_ms), 0, 3600000},
	{"watch_scripts", K_BOOL, F(watch_scripts), 0, 0},
	{"demo", K_BOOL, F(demo), 0, 0},
	{"consent_default", K_BOOL, F(consent_default), 0, 0},
	{"retention_days", K_U32, F(retention_days), 0, 365000},
	{"retention_interval_ms", K_U32, F(retention_interval_ms), 10, 86400000},
	{"pseudonymize_secret", K_STR, F(pseudonymize_secret), 0, 0},
	{"funnel_warm_days", K_U32, F(funnel_warm_days), 0, 366},
};

void sx_config_defaults(struct sx_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:7878");
	snprintf(cfg->data_dir, sizeof(cfg->data_dir), "./data");
	snprintf(cfg->scripts_dir, sizeof(cfg->scripts_dir), "./scripts");
	snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
	cfg->sync_interval_ms = 1000;
	cfg->max_reader_age_ms = 600000;
	cfg->map_size = (size_t)64 << 20;
	cfg->max_map_size = (size_t)1 << 40;
	cfg->limits.max_frame_bytes = 16u << 20;
	cfg->limits.max_depth = 64;
	cfg->limits.max_inflight = 1024;
	cfg->limits.max_connections = 1024;
	cfg->limits.idle_timeout_ms = 300000;
	cfg->limits.frame_timeout_ms = 10000;
	cfg->limits.max_output_bytes = (size_t)64 << 20;
	cfg->script_instructions = 100000000;
	cfg->script_memory = (size_t)64 << 20;
	cfg->script_timeout_ms = 1000;
	cfg->shutdown_grace_ms = 5000;
	cfg->watch_scripts = 1;
	cfg->consent_default = 1;
	cfg->retention_interval_ms = 60000;
	cfg->funnel_warm_days = 30;
}

void sx_config_free(struct sx_config *cfg)
{
	free(cfg->tokens);
	cfg->tokens = NULL;
	cfg->ntokens = 0;
}

static const struct key *find_key(const char *name)
{
	for (size_t i = 0; i < SX_ARRAY_SIZE(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int set_number(struct sx_config *cfg, const struct key *k, double v)
{
	char *p = (char *)cfg + k->off;
	if (v != v || v < k->min || v > k->max)
		return sx_diag_set(SX_EINVAL, "config: %s must be between %.0f and %.0f", k->name, k->min, k->max);
	switch (k->kind) {
	case K_U32: *(uint32_t *)p = (uint32_t)v; break;
	case K_INT: *(int *)p = (int)v; break;
	case K_U64: *(uint64_t *)p = (uint64_t)v; break;
	case K_MB: *(size_t *)p = (size_t)v << 20; break;
	case K_BYTES: *(size_t *)p = (size_t)v; break;
	default: return SX_EINVAL;
	}
	return 0;
}

int sx_config_set(struct sx_config *cfg, const char *name, const char *value)
{
	const struct key *k = find_key(name);
	char *p;
	if (!k)
		return sx_diag_set(SX_EINVAL, "config: unknown key '%s'", name);
	p = (char *)cfg + k->off;
	switch (k->kind) {
	case K_STR:
		if (strlen(value) >= k->size)
			return sx_diag_set(SX_EINVAL, "config: %s is too long", name);
		strcpy(p, value);
		return 0;
	case K_BOOL:
		if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes"))
			*(int *)p = 1;
		else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no"))
			*(int *)p = 0;
		else
			return sx_diag_set(SX_EINVAL, "config: %s must be true or false", name);
		return 0;
	case K_DURABILITY:
		if (!strcmp(value, "full"))
			*(int *)p = 0;
		else if (!strcmp(value, "relaxed"))
			*(int *)p = 1;
		else
			return sx_diag_set(SX_EINVAL, "config: durability must be \"full\" or \"relaxed\"");
		return 0;
	default: {
		char *end;
		double v = strtod(value, &end);
		if (end == value || *end)
			return sx_diag_set(SX_EINVAL, "config: %s must be a number (got '%s')", name, value);
		return set_number(cfg, k, v);
	}
	}
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int load_tokens(struct sx_config *cfg, lua_State *L, int idx)
{
	if (!lua_istable(L, idx))
		return sx_diag_set(SX_EINVAL, "config: tokens must be a list of {sha256 = HEX, role = ROLE}");
	size_t n = lua_objlen(L, idx);
	struct sx_token *t = calloc(n ? n : 1, sizeof(*t));
	if (!t)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, idx, (int)i + 1);
		lua_getfield(L, -1, "sha256");
		lua_getfield(L, -2, "role");
		const char *hex = lua_tostring(L, -2), *role = lua_tostring(L, -1);
		int r = role ? sx_role_parse(role) : -1;
		int ok = hex && strlen(hex) == 64 && r > 0;
		for (int j = 0; ok && j < 32; j++) {
			int hi = hexval(hex[2 * j]), lo = hexval(hex[2 * j + 1]);
			ok = hi >= 0 && lo >= 0;
			t[i].sha256[j] = (uint8_t)(hi << 4 | lo);
		}
		t[i].role = r;
		lua_pop(L, 3);
		if (!ok) {
			free(t);
			return sx_diag_set(SX_EINVAL,
					   "config: tokens[%zu] needs sha256 (64 hex digits: sextant --hash-token TOKEN) "
					   "and role (admin, writer or reader)", i + 1);
		}
	}
	free(cfg->tokens);
	cfg->tokens = t;
	cfg->ntokens = n;
	return 0;
}

int sx_config_load_file(struct sx_config *cfg, const char *path)
{
	lua_State *L = luaL_newstate();
	int rc = 0;
	if (!L)
		return sx_diag_set(SX_ENOMEM, "config: out of memory");
	luaL_openlibs(L);
	if (luaL_loadfile(L, path) || lua_pcall(L, 0, 1, 0)) {
		rc = sx_diag_set(SX_EINVAL, "config: %s", lua_tostring(L, -1));
		goto out;
	}
	if (!lua_istable(L, -1)) {
		rc = sx_diag_set(SX_EINVAL, "config: %s must return a table", path);
		goto out;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			rc = sx_diag_set(SX_EINVAL, "config: keys must be strings");
			goto out;
		}
		const char *name = lua_tostring(L, -2);
		const struct key *k = find_key(name);
		if (strcmp(name, "tokens") == 0) {
			rc = load_tokens(cfg, L, lua_gettop(L));
		} else if (!k) {
			rc = sx_diag_set(SX_EINVAL, "config: unknown key '%s'", name);
		} else if (k->kind == K_BOOL) {
			if (lua_type(L, -1) != LUA_TBOOLEAN)
				rc = sx_diag_set(SX_EINVAL, "config: %s must be a boolean", name);
			else
				*(int *)((char *)cfg + k->off) = lua_toboolean(L, -1);
		} else if (k->kind == K_STR || k->kind == K_DURABILITY) {
			if (lua_type(L, -1) != LUA_TSTRING)
				rc = sx_diag_set(SX_EINVAL, "config: %s must be a string", name);
			else
				rc = sx_config_set(cfg, name, lua_tostring(L, -1));
		} else {
			if (lua_type(L, -1) != LUA_TNUMBER)
				rc = sx_diag_set(SX_EINVAL, "config: %s must be a number", name);
			else
				rc = set_number(cfg, k, lua_tonumber(L, -1));
		}
		lua_pop(L, 1);
		if (rc) {
			lua_pop(L, 1);
			goto out;
		}
	}
out:
	lua_close(L);
	return rc;
}

void sx_config_hash_token(const char *token, char out[65])
{
	uint8_t h[32];
	crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}
