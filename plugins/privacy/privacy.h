/* privacy.h — consent, erasure, export, pseudonymous ids: the privacy plugin's C API.
 *
 * Other plugins use it to honour consent on every path and to take part in
 * privacy.erase and privacy.export. Everything here runs on the loop thread
 * (reads see the filling batch, like every loop-thread read of store.h).
 * Before the privacy plugin starts, or in a program that does not start it,
 * every purpose is allowed (the built-in default of `consent_default`), ids
 * are not pseudonymized and no eraser runs.
 *
 * Consent. Per user and purpose, granted or not, with the time and source of
 * the last change (consent.set). With no record for a purpose, the config key
 * `consent_default` decides (default true: allowed).
 *
 * Ids. With `pseudonymize_secret` set, every user id that enters the server
 * (events.track, users.*, consent.*, privacy.*) is replaced by the lowercase
 * hex HMAC-SHA256 of the id keyed with the secret (64 bytes) before anything
 * is stored or looked up; a plugin that takes user ids from clients must
 * pass them through sx_privacy_user_id() too.
 */
#ifndef SX_PRIVACY_H
#define SX_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

enum sx_purpose {
	SX_PURPOSE_ANALYTICS,       /* events feed per-user analytics and metrics */
	SX_PURPOSE_PERSONALIZATION, /* personal recommendations */
	SX_PURPOSE_EXPERIMENTS,     /* enrollment in experiments */
	SX_PURPOSE_NOTIFICATIONS,   /* notifications */
	SX_PURPOSES
};

/* "analytics", ...; NULL for an unknown purpose. */
const char *sx_privacy_purpose_name(int purpose);

/* 1 if user `id` allows `purpose`, 0 if not. A store read error counts as
 * "not allowed" (fail closed). `id` is the id as stored (already mapped by
 * sx_privacy_user_id). */
int sx_privacy_allowed(const char *id, size_t len, int purpose);
/* Changes whenever an answer of sx_privacy_allowed() may change: a consent
 * record written or deleted (consent.set, privacy.erase), such a write undone
 * (a rolled-back request, a failed batch), the plugin started or stopped.
 * A caller may keep answers and reuse them while the version is the same
 * (consent_default is read at start and does not change while running). */
uint64_t sx_privacy_consent_version(void);
/* The same for a user index of the events plugin (0 for an unknown index). */
int sx_privacy_allowed_index(uint32_t idx, int purpose);

/* A snapshot of one purpose's answers by user index, for work off the loop
 * (training jobs): taken on the loop thread, read from any thread, blind to
 * changes made after it was taken. It lists the users whose answer differs
 * from the default (only users with a consent record can), so taking it costs
 * one lookup per consent record. 0, SX_ENOMEM or a store error. */
struct sx_privacy_snapshot {
	int dflt;
	uint32_t *idx; /* sorted */
	size_t n;
};
int sx_privacy_snapshot_take(int purpose, struct sx_privacy_snapshot *out);
int sx_privacy_snapshot_allows(const struct sx_privacy_snapshot *s, uint32_t idx);
void sx_privacy_snapshot_free(struct sx_privacy_snapshot *s);

#define SX_PRIVACY_ID_BUF 65

/* The id to store and look up for a client's user id: `id` itself (returned
 * as is) or, when pseudonymization is on, its pseudonym written into buf
 * (SX_PRIVACY_ID_BUF bytes, NUL-terminated) and returned. *outlen gets the
 * length. Never fails. */
const char *sx_privacy_user_id(const char *id, size_t len, char *buf, size_t *outlen);

/* ---- erasure ---- */

struct sx_privacy_receipt;
/* Adds n to the count of `table` (a static string) in the erasure receipt. */
void sx_privacy_receipt_add(struct sx_privacy_receipt *r, const char *table, uint64_t n);

/* An eraser removes what its plugin keeps about one user, by writes into the
 * store's filling batch (so that the whole erasure commits as one batch), and
 * reports counts with sx_privacy_receipt_add(). `id` is the stored id; `idx`
 * the user's index, valid when has_idx (the events plugin's part runs
 * first but the index is read before it). Returns 0 or a negative SX_E*: any
 * failure fails the whole erasure and rolls it back. */
typedef int (*sx_privacy_eraser_fn)(const char *id, size_t len, uint32_t idx, int has_idx,
				    struct sx_privacy_receipt *r, void *ud);
/* Registers an eraser (name: static string, for the receipt and logs). At
 * most 32. Call from the plugin's start(). 0, SX_EEXIST or SX_ENOMEM. */
int sx_privacy_register_eraser(const char *name, sx_privacy_eraser_fn fn, void *ud);

/* ---- export ---- */

/* An exporter packs exactly one object (a map, or nil if it holds nothing
 * about the user); privacy.export puts it under key `name`. Errors as above. */
typedef int (*sx_privacy_exporter_fn)(const char *id, size_t len, uint32_t idx, int has_idx,
				      msgpack_packer *pk, void *ud);
int sx_privacy_register_exporter(const char *name, sx_privacy_exporter_fn fn, void *ud);

#endif
