/* config.h — the server's configuration: defaults, a Lua config file, flags.
 *
 * The config file is Lua that returns a table (it runs in a plain LuaJIT
 * state with no engine access; it is the operator's file, trusted). Every key
 * is also a command-line flag: `max_frame_bytes` is `--max-frame-bytes`.
 * Flags override the file. docs/OPERATIONS.md lists every key.
 */
#ifndef SX_CONFIG_H
#define SX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/server.h"

struct sx_config {
	char listen[256];
	char data_dir[1024];
	char scripts_dir[1024];
	char log_level[16];
	int relaxed;               /* durability = "relaxed" */
	uint32_t sync_interval_ms; /* relaxed: fsync at least this often */
	uint32_t max_reader_age_ms; /* off-loop read transactions give up after this */
	size_t map_size;           /* initial LMDB map, bytes (map_size_mb) */
	size_t max_map_size;       /* growth limit, bytes (max_map_size_mb) */
	struct sx_server_limits limits;
	uint64_t script_instructions;
	size_t script_memory;      /* bytes (script_memory_mb) */
	uint32_t script_timeout_ms;
	uint32_t shutdown_grace_ms;
	int watch_scripts;         /* reload scripts_dir on change */
	int demo;                  /* load the demo data set into an empty store */
	/* privacy (plugins/privacy) */
	int consent_default;            /* no consent record: purposes allowed (1) or not (0) */
	uint32_t retention_days;        /* events older than this are swept (0: kept) */
	uint32_t retention_interval_ms; /* how often the retention sweep starts */
	char pseudonymize_secret[256];  /* non-empty: user ids become HMAC-SHA256 hex at ingest */
	uint32_t funnel_warm_days;      /* funnels' hour blocks kept built for this many recent days */
	struct sx_token *tokens;
	size_t ntokens;
};

void sx_config_defaults(struct sx_config *cfg);
/* Loads a Lua config file over cfg. SX_EINVAL with the reason (unknown key,
 * wrong type, Lua error with its line) in the diagnostics. */
int sx_config_load_file(struct sx_config *cfg, const char *path);
/* Sets one key from a string (a flag's value). */
int sx_config_set(struct sx_config *cfg, const char *key, const char *value);
void sx_config_free(struct sx_config *cfg);

/* Hex SHA-256 of a token, as the config's tokens list wants it (65 bytes out). */
void sx_config_hash_token(const char *token, char out[65]);

#endif
