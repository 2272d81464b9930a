/* The models plugin: training jobs, the registry (versions, aliases with
 * history), serving with swap-on-promote, monitoring with alerts, export and
 * import, and retraining policies. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/jobs.h"
#include "core/math/als.h"
#include "core/math/behaviour.h"
#include "core/math/metrics.h"
#include "core/math/text.h"
#include "core/plugin.h"
#include "core/audit.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/models/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

struct sx_engine *sx__models_eng;
static uint64_t alias_generation; /* 0 while stopped */

#define CACHE_MAX 16
#define LAT_BUCKETS 96
#define POLICY_TICK_MS 1000
#define PREDICT_INPUTS_MAX 1000
#define RECENT_EVENTS 500
#define TOPN_MAX 1000
#define PRED_RING 4096         /* served predictions kept per version for outcomes */
#define OUTCOME_WINDOW_MAX 10000
#define HISTORY_MAX 200        /* a behaviour prediction reads this many recent events */
#define PROBS_MAX 20           /* class probabilities returned per text prediction */

enum { PROMOTE_NONE, PROMOTE_ALWAYS, PROMOTE_NOT_WORSE };
static const char *const promote_names[] = {"never", "always", "not_worse"};

/* ---- state (loop thread) ---- */

struct cached {
	struct sx_model *m;
	uint64_t used;
	struct cached *next;
};

struct monitor {
	char name[SX_MODELS_NAME_MAX + 1];
	uint32_t version;
	uint64_t served, errors, scored;
	uint64_t lat[LAT_BUCKETS];
	double lat_sum_ms;
	double bins[SX_MODELS_PSI_BINS];
	int has_ref;
	double expected[SX_MODELS_PSI_BINS];
	int firing_drift, firing_latency, firing_accuracy, firing_auc;
	/* Served predictions by id (slot id % PRED_RING), for joining outcomes. */
	struct served_pred {
		uint64_t id;
		int32_t pred;  /* class; logistic: p >= 0.5 */
		float p1;      /* P(class 1) for binary models, else NAN */
		uint8_t joined;
	} *ring;
	/* The last outcomes (a circular window). */
	float *o_score;
	uint8_t *o_y, *o_right;
	size_t o_n, o_head;
	uint64_t o_total;
	struct monitor *next;
};

struct rules {
	char name[SX_MODELS_NAME_MAX + 1];
	double psi_above, p99_ms_above; /* 0: off */
	uint64_t min_samples;
	double accuracy_below, auc_below; /* 0: off */
	uint64_t min_outcomes, outcome_window;
	struct rules *next;
};

static uint64_t pred_seq; /* the last prediction id handed out */

static double monitor_psi(const struct monitor *mo);
static void pack_rolling(msgpack_packer *pk, const struct monitor *mo);

struct running {
	char name[SX_MODELS_NAME_MAX + 1];
	uint64_t job;
	struct running *next;
};

static struct cached *cache;
static uint64_t cache_tick;
static struct monitor *monitors;
static struct rules *rules;
static struct running *running;
static uv_timer_t policy_timer;
static int timer_started;

/* ---- small helpers ---- */

static int name_arg(const msgpack_object *args, const char *key, int required, char *buf, const char *dflt)
{
	const char *s;
	size_t len;
	int rc = sx_arg_str(args, key, required, &s, &len);
	if (rc < 0)
		return rc;
	if (!sx_arg(args, key) || sx_arg(args, key)->type == MSGPACK_OBJECT_NIL) {
		if (dflt)
			snprintf(buf, SX_MODELS_NAME_MAX + 1, "%s", dflt);
		else
			buf[0] = 0;
		return 0;
	}
	if (!sx__models_name_ok(s, len))
		return sx_diag_set(SX_EINVAL, "argument '%s' must be 1 to %d bytes of [A-Za-z0-9_.-]", key, SX_MODELS_NAME_MAX);
	memcpy(buf, s, len);
	buf[len] = 0;
	return 0;
}

static int version_arg(const msgpack_object *args, int required, uint32_t *v)
{
	int64_t x = 0;
	int rc = sx_arg_int(args, "version", required, &x);
	if (rc < 0)
		return rc;
	if (sx_arg(args, "version") && sx_arg(args, "version")->type != MSGPACK_OBJECT_NIL) {
		if (x < 1 || x > UINT32_MAX)
			return sx_diag_set(SX_EINVAL, "argument 'version' must be a version number >= 1");
		*v = (uint32_t)x;
	}
	return 0;
}

static const msgpack_object *mget(const msgpack_object *map, const char *key) { return sx_arg(map, key); }

static int64_t mint(const msgpack_object *map, const char *key, int64_t dflt)
{
	const msgpack_object *o = mget(map, key);
	if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (int64_t)o->via.u64;
	if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	return dflt;
}

static double mnum(const msgpack_object *map, const char *key, double dflt)
{
	const msgpack_object *o = mget(map, key);
	if (!o)
		return dflt;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
	default: return dflt;
	}
}

static int unpack(const void *data, size_t len, msgpack_zone *z, msgpack_object *o)
{
	size_t off = 0;
	if (msgpack_unpack(data, len, &off, z, o) != MSGPACK_UNPACK_SUCCESS || off != len)
		return sx_diag_set(SX_ECORRUPT, "a stored model record does not decode");
	return 0;
}

static int put_packed(int table, const uint8_t *k, size_t klen, msgpack_sbuffer *sb)
{
	return sx_store_put(sx__models_eng->store, table, k, klen, sb->data, sb->size);
}

static uint64_t events_count(void)
{
	struct sx_store_stats st;
	if (sx_store_stats(sx__models_eng->store, &st) < 0)
		return 0;
	return st.entries[SX_T_EVENTS];
}

/* ---- registry reads ---- */

struct head {
	int type;
	uint32_t next_version;
	int64_t created;
};

static int head_get(const char *name, struct head *h)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	struct sx_val v;
	msgpack_zone z;
	msgpack_object o;
	int rc = sx_store_get(sx__models_eng->store, SX_T_MODELS, k, sx__models_head_key(k, name), &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "no model '%s'", name);
	if (rc < 0)
		return rc;
	msgpack_zone_init(&z, 256);
	if ((rc = unpack(v.data, v.len, &z, &o)) == 0) {
		const msgpack_object *t = mget(&o, "type");
		h->type = t && t->type == MSGPACK_OBJECT_STR ? sx__model_type_parse(t->via.str.ptr, t->via.str.size) : 0;
		h->next_version = (uint32_t)mint(&o, "next_version", 1);
		h->created = mint(&o, "created", 0);
		if (!h->type)
			rc = sx_diag_set(SX_ECORRUPT, "model '%s': bad head record", name);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int head_put(const char *name, const struct head *h)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	sx_pack_kv_str(&pk, "name", name);
	sx_pack_kv_str(&pk, "type", sx__model_type_name(h->type));
	sx_pack_kv_uint(&pk, "next_version", h->next_version);
	sx_pack_kv_int(&pk, "created", h->created);
	int rc = put_packed(SX_T_MODELS, k, sx__models_head_key(k, name), &sb);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* The metadata record of a version, unpacked into z. */
static int meta_get(const char *name, uint32_t version, msgpack_zone *z, msgpack_object *o)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	struct sx_val v;
	int rc = sx_store_get(sx__models_eng->store, SX_T_MODELS, k, sx__models_version_key(k, name, version), &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "model '%s' has no version %u", name, version);
	if (rc < 0)
		return rc;
	return unpack(v.data, v.len, z, o);
}

struct alias {
	uint32_t version;
	int64_t updated;
	uint32_t prev[SX_MODELS_HIST_MAX];
	size_t nprev;
	struct {
		uint32_t version, from;
		int64_t at;
		char action[16];
	} hist[SX_MODELS_HIST_MAX];
	size_t nhist;
};

static int alias_get(const char *name, const char *alias, struct alias *a)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	struct sx_val v;
	msgpack_zone z;
	msgpack_object o;
	memset(a, 0, sizeof(*a));
	int rc = sx_store_get(sx__models_eng->store, SX_T_MODELS, k, sx__models_alias_key(k, name, alias), &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "model '%s' has no alias '%s'", name, alias);
	if (rc < 0)
		return rc;
	msgpack_zone_init(&z, 1024);
	if ((rc = unpack(v.data, v.len, &z, &o)) == 0) {
		a->version = (uint32_t)mint(&o, "version", 0);
		a->updated = mint(&o, "updated", 0);
		const msgpack_object *p = mget(&o, "previous"), *h = mget(&o, "history");
		if (p && p->type == MSGPACK_OBJECT_ARRAY)
			for (uint32_t i = 0; i < p->via.array.size && a->nprev < SX_MODELS_HIST_MAX; i++)
				if (p->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
					a->prev[a->nprev++] = (uint32_t)p->via.array.ptr[i].via.u64;
		if (h && h->type == MSGPACK_OBJECT_ARRAY)
			for (uint32_t i = 0; i < h->via.array.size && a->nhist < SX_MODELS_HIST_MAX; i++) {
				const msgpack_object *e = &h->via.array.ptr[i];
				a->hist[a->nhist].version = (uint32_t)mint(e, "version", 0);
				a->hist[a->nhist].from = (uint32_t)mint(e, "from", 0);
				a->hist[a->nhist].at = mint(e, "at", 0);
				const msgpack_object *act = mget(e, "action");
				snprintf(a->hist[a->nhist].action, sizeof(a->hist[0].action), "%.*s",
					 act && act->type == MSGPACK_OBJECT_STR ? (int)act->via.str.size : 0,
					 act && act->type == MSGPACK_OBJECT_STR ? act->via.str.ptr : "");
				a->nhist++;
			}
		if (!a->version)
			rc = sx_diag_set(SX_ECORRUPT, "model '%s': bad alias record '%s'", name, alias);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static void pack_alias_history(msgpack_packer *pk, const struct alias *a)
{
	msgpack_pack_array(pk, a->nhist);
	for (size_t i = 0; i < a->nhist; i++) {
		msgpack_pack_map(pk, 4);
		sx_pack_kv_uint(pk, "version", a->hist[i].version);
		sx_pack_key(pk, "from");
		if (a->hist[i].from)
			msgpack_pack_uint32(pk, a->hist[i].from);
		else
			msgpack_pack_nil(pk);
		sx_pack_kv_int(pk, "at", a->hist[i].at);
		sx_pack_kv_str(pk, "action", a->hist[i].action);
	}
}

static int alias_put(const char *name, const char *alias, const struct alias *a)
{
	alias_generation++;
	uint8_t k[SX_MODELS_KEY_MAX];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	sx_pack_kv_str(&pk, "alias", alias);
	sx_pack_kv_uint(&pk, "version", a->version);
	sx_pack_kv_int(&pk, "updated", a->updated);
	sx_pack_key(&pk, "previous");
	msgpack_pack_array(&pk, a->nprev);
	for (size_t i = 0; i < a->nprev; i++)
		msgpack_pack_uint32(&pk, a->prev[i]);
	sx_pack_key(&pk, "history");
	pack_alias_history(&pk, a);
	int rc = put_packed(SX_T_MODELS, k, sx__models_alias_key(k, name, alias), &sb);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* Aliases of a model, visited in name order. */
typedef int (*alias_cb)(const char *alias, uint32_t version, void *ud);
struct alias_scan {
	size_t plen;
	alias_cb cb;
	void *ud;
};

static int alias_scan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct alias_scan *s = ud;
	char alias[SX_MODELS_NAME_MAX + 1];
	size_t n = key->len - s->plen;
	msgpack_zone z;
	msgpack_object o;
	if (n == 0 || n > SX_MODELS_NAME_MAX)
		return 0;
	memcpy(alias, (const char *)key->data + s->plen, n);
	alias[n] = 0;
	msgpack_zone_init(&z, 512);
	int rc = unpack(val->data, val->len, &z, &o);
	uint32_t v = rc == 0 ? (uint32_t)mint(&o, "version", 0) : 0;
	msgpack_zone_destroy(&z);
	if (rc < 0)
		return rc;
	return s->cb(alias, v, s->ud);
}

static int aliases_each(const char *name, alias_cb cb, void *ud)
{
	uint8_t lo[SX_MODELS_KEY_MAX], hi[SX_MODELS_KEY_MAX];
	size_t n = sx__models_alias_key(lo, name, "");
	memcpy(hi, lo, n);
	hi[n - 1] = 1; /* the separator 0 + 1 */
	struct alias_scan s = {n, cb, ud};
	return sx_store_scan(sx__models_eng->store, SX_T_MODELS, lo, n, hi, n, 0, alias_scan_cb, &s);
}

struct points_to {
	uint32_t version;
	char alias[SX_MODELS_NAME_MAX + 1];
	int found;
};

static int points_cb(const char *alias, uint32_t version, void *ud)
{
	struct points_to *p = ud;
	if (version != p->version)
		return 0;
	snprintf(p->alias, sizeof(p->alias), "%s", alias);
	p->found = 1;
	return 1;
}

/* ---- the cache of loaded models ---- */

static struct sx_model *cache_find(const char *name, uint32_t version)
{
	for (struct cached *c = cache; c; c = c->next)
		if (c->m->version == version && strcmp(c->m->name, name) == 0) {
			c->used = ++cache_tick;
			return c->m;
		}
	return NULL;
}

static void cache_drop(const char *name, uint32_t version)
{
	for (struct cached **pp = &cache; *pp;) {
		struct cached *c = *pp;
		if (strcmp(c->m->name, name) == 0 && (!version || c->m->version == version)) {
			*pp = c->next;
			sx_model_unref(c->m);
			free(c);
		} else {
			pp = &c->next;
		}
	}
}

static void cache_add(struct sx_model *m)
{
	size_t n = 0;
	struct cached *c = malloc(sizeof(*c)), **lru = NULL;
	if (!c)
		return;
	for (struct cached **pp = &cache; *pp; pp = &(*pp)->next, n++)
		if (!lru || (*pp)->used < (*lru)->used)
			lru = pp;
	if (n >= CACHE_MAX && lru) {
		struct cached *old = *lru;
		*lru = old->next;
		sx_model_unref(old->m);
		free(old);
	}
	sx_model_ref(m);
	c->m = m;
	c->used = ++cache_tick;
	c->next = cache;
	cache = c;
}

static struct sx_model *load(const char *name, uint32_t version)
{
	struct sx_model *m = cache_find(name, version);
	if (m) {
		sx_model_ref(m);
		return m;
	}
	uint8_t k[SX_MODELS_KEY_MAX];
	struct sx_val v;
	msgpack_zone z;
	msgpack_object meta, w;
	msgpack_zone_init(&z, 4096);
	int rc = meta_get(name, version, &z, &meta);
	if (rc == 0) {
		rc = sx_store_get(sx__models_eng->store, SX_T_ARTIFACTS, k, sx__models_artifact_key(k, name, version), &v);
		if (rc == SX_ENOENT)
			rc = sx_diag_set(SX_ECORRUPT, "model '%s' version %u has no weights", name, version);
		if (rc == 0 && (rc = unpack(v.data, v.len, &z, &w)) == 0)
			m = sx__models_decode(&meta, &w, 1);
	}
	msgpack_zone_destroy(&z);
	if (!m)
		return NULL;
	cache_add(m);
	return m;
}

static int resolve(const char *name, const char *alias, uint32_t version, uint32_t *out)
{
	if (version) {
		*out = version;
		return 0;
	}
	struct alias a;
	int rc = alias_get(name, alias && alias[0] ? alias : "production", &a);
	if (rc < 0)
		return rc;
	*out = a.version;
	return 0;
}

struct sx_model *sx_models_acquire(const char *name, const char *alias, uint32_t version)
{
	uint32_t v;
	if (!sx__models_eng) {
		sx_diag_set(SX_ESTATE, "the models plugin has not started");
		return NULL;
	}
	if (!name || !sx__models_name_ok(name, strlen(name))) {
		sx_diag_set(SX_EINVAL, "bad model name");
		return NULL;
	}
	if (resolve(name, alias, version, &v) < 0)
		return NULL;
	return load(name, v);
}

uint64_t sx_models_generation(void) { return alias_generation; }

const char *sx_model_name(const struct sx_model *m) { return m->name; }

const struct sx_als *sx_model_als(const struct sx_model *m) { return m->type == SX_MODEL_ALS ? m->als : NULL; }

size_t sx_model_n_items(const struct sx_model *m) { return m->type == SX_MODEL_ALS ? (size_t)m->n_items : 0; }

const char *sx_model_item_id(const struct sx_model *m, size_t i, size_t *len)
{
	if (m->type != SX_MODEL_ALS || i >= (size_t)m->items.n)
		return NULL;
	*len = m->items.lens[i];
	return m->items.ids[i];
}

/* ---- training ---- */

struct tjob {
	struct sx_train *t;
	int type;
	char name[SX_MODELS_NAME_MAX + 1];
	char alias[SX_MODELS_NAME_MAX + 1];
	char trigger[32];
	int promote;
	uint32_t compared;
	uint64_t events_at;
	uint64_t job;
};

static void running_del(uint64_t job)
{
	for (struct running **pp = &running; *pp; pp = &(*pp)->next)
		if ((*pp)->job == job) {
			struct running *r = *pp;
			*pp = r->next;
			free(r);
			return;
		}
}

static int running_has(const char *name)
{
	for (struct running *r = running; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			return 1;
	return 0;
}

static int train_work(struct sx_job *job, void *ud)
{
	struct tjob *j = ud;
	int rc = sx__train_run(j->t, job);
	if (rc < 0)
		sx_job_fail(job, sx_diag_last());
	return rc;
}

static int promote(const char *name, const char *alias, uint32_t version, const char *action, uint32_t *previous);

/* Stores m as the next version of its name; sets m->version. */
static int register_version(struct sx_model *m)
{
	struct head h;
	int rc = head_get(m->name, &h);
	if (rc == SX_ENOENT) {
		h.type = m->type, h.next_version = 1, h.created = sx_wall_ms();
	} else if (rc < 0) {
		return rc;
	} else if (h.type != m->type) {
		return sx_diag_set(SX_ESTATE, "model '%s' is of type %s, not %s", m->name, sx__model_type_name(h.type),
				   sx__model_type_name(m->type));
	}
	m->version = h.next_version++;
	uint8_t k[SX_MODELS_KEY_MAX];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx__models_pack_meta(&pk, m);
	rc = put_packed(SX_T_MODELS, k, sx__models_version_key(k, m->name, m->version), &sb);
	msgpack_sbuffer_clear(&sb);
	sx__models_pack_weights(&pk, m, 1);
	if (rc == 0)
		rc = put_packed(SX_T_ARTIFACTS, k, sx__models_artifact_key(k, m->name, m->version), &sb);
	msgpack_sbuffer_destroy(&sb);
	if (rc == 0)
		rc = head_put(m->name, &h);
	return rc;
}

static void train_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct tjob *j = ud;
	SX_UNUSED(job);
	running_del(j->job);
	if (rc == 0) {
		struct sx_model *m = sx__train_result(j->t);
		struct alias cur;
		int promoted = 0;
		double cand, prod;
		m->trained_at = sx_wall_ms();
		m->events_at_train = j->events_at;
		snprintf(m->trigger, sizeof(m->trigger), "%s", j->trigger);
		if (alias_get(m->name, "production", &cur) == 0)
			m->parent = cur.version;
		int not_worse = sx__train_not_worse(j->t, &cand, &prod);
		if (j->promote == PROMOTE_ALWAYS || (j->promote == PROMOTE_NOT_WORSE && not_worse)) {
			promoted = 1;
		} else if (j->promote == PROMOTE_NOT_WORSE) {
			snprintf(m->status, sizeof(m->status), "candidate");
			static const char *const metric[] = {"", "ndcg", "auc", "accuracy", "ndcg"};
			snprintf(m->reason, sizeof(m->reason), "%s %.6g is below version %u's %.6g on the same holdout",
				 metric[j->type], cand, j->compared, prod);
		}
		int wrc = register_version(m);
		uint32_t prev = 0;
		if (wrc == 0 && promoted)
			wrc = promote(m->name, j->alias, m->version, "promote", &prev);
		sx_store_read_end(sx__models_eng->store);
		if (wrc < 0) {
			msgpack_pack_map(pk, 2);
			sx_pack_kv_str(pk, "name", j->name);
			sx_pack_kv_str(pk, "error", sx_diag_last());
		} else {
			cache_add(m);
			msgpack_pack_map(pk, 6);
			sx_pack_kv_str(pk, "name", m->name);
			sx_pack_kv_uint(pk, "version", m->version);
			sx_pack_kv_str(pk, "status", m->status);
			sx_pack_kv_bool(pk, "promoted", promoted);
			sx_pack_key(pk, "reason");
			if (m->reason[0])
				sx_pack_str(pk, m->reason);
			else
				msgpack_pack_nil(pk);
			sx_pack_key(pk, "metrics");
			msgpack_sbuffer_write(pk->data, m->metrics.data, m->metrics.size);
		}
		sx_model_unref(m);
	}
	sx__train_free(j->t);
	free(j);
}

/* Checks and copies everything, then starts the job. */
/* ---- privacy ----
 * An ALS version keeps a factor row per training user under its id. Erasure
 * removes the row and the id from the stored weights (the other rows keep
 * their values; indexes after it shift by one) and drops the loaded copy from
 * the cache, so the next acquire serves the rewritten version. A holder of a
 * reference keeps the old copy until it releases it. The only user of a
 * version cannot be removed (a model has at least one row): its id becomes
 * ERASED_ID and its row zeros. Versions are immutable otherwise. */

#define ERASED_ID "~erased~"

struct erase_scan {
	const char *id;
	size_t len;
	int erase;            /* else export */
	msgpack_packer *pk;   /* export: names and versions holding the user */
	uint64_t n;
};

/* The weights map w rewritten without row `row` into sb. */
static int weights_without(const msgpack_object *w, int32_t row, int32_t n_users, int k, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	int keep = n_users > 1;
	msgpack_pack_map(&pk, w->via.map.size);
	for (uint32_t i = 0; i < w->via.map.size; i++) {
		const msgpack_object *key = &w->via.map.ptr[i].key, *val = &w->via.map.ptr[i].val;
		sx_pack_object(&pk, key);
#define IS(name) (key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(name) && \
		  memcmp(key->via.str.ptr, name, strlen(name)) == 0)
		if (IS("n_users")) {
			msgpack_pack_int32(&pk, keep ? n_users - 1 : n_users);
		} else if (IS("users")) {
			msgpack_pack_array(&pk, keep ? val->via.array.size - 1 : val->via.array.size);
			for (uint32_t j = 0; j < val->via.array.size; j++)
				if ((int32_t)j != row)
					sx_pack_object(&pk, &val->via.array.ptr[j]);
				else if (!keep)
					sx_pack_str(&pk, ERASED_ID);
		} else if (IS("user_factors") && val->type == MSGPACK_OBJECT_BIN) {
			size_t rb = (size_t)k * 4;
			if (val->via.bin.size != (size_t)n_users * rb)
				return sx_diag_set(SX_ECORRUPT, "weights.user_factors has the wrong size");
			const char *b = val->via.bin.ptr;
			if (keep) {
				msgpack_pack_bin(&pk, val->via.bin.size - rb);
				msgpack_pack_bin_body(&pk, b, (size_t)row * rb);
				msgpack_pack_bin_body(&pk, b + (size_t)(row + 1) * rb, val->via.bin.size - (size_t)(row + 1) * rb);
			} else {
				char zero[4096] = {0};
				msgpack_pack_bin(&pk, rb);
				for (size_t o = 0; o < rb; o += sizeof(zero))
					msgpack_pack_bin_body(&pk, zero, rb - o < sizeof(zero) ? rb - o : sizeof(zero));
			}
		} else if (IS("user_factors") && val->type == MSGPACK_OBJECT_ARRAY) {
			msgpack_pack_array(&pk, keep ? val->via.array.size - 1 : val->via.array.size);
			for (uint32_t j = 0; j < val->via.array.size; j++)
				if ((int32_t)j != row) {
					sx_pack_object(&pk, &val->via.array.ptr[j]);
				} else if (!keep) {
					msgpack_pack_array(&pk, (size_t)k);
					for (int q = 0; q < k; q++)
						msgpack_pack_double(&pk, 0);
				}
		} else {
			sx_pack_object(&pk, val);
		}
#undef IS
	}
	return 0;
}

static int erase_version_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct erase_scan *es = ud;
	SX_UNUSED(val);
	const uint8_t *k = key->data;
	if (key->len < 1 + 1 + 1 + 4 || k[key->len - 5] != 0 || key->len - 6 > SX_MODELS_NAME_MAX)
		return 0;
	char name[SX_MODELS_NAME_MAX + 1];
	memcpy(name, k + 1, key->len - 6);
	name[key->len - 6] = 0;
	uint32_t version = sx_get_be32(k + key->len - 4);
	uint8_t ak[SX_MODELS_KEY_MAX];
	size_t akl = sx__models_artifact_key(ak, name, version);
	struct sx_val v;
	int rc = sx_store_get(sx__models_eng->store, SX_T_ARTIFACTS, ak, akl, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object w;
	msgpack_zone_init(&z, 4096);
	if ((rc = unpack(v.data, v.len, &z, &w)) < 0 || w.type != MSGPACK_OBJECT_MAP) {
		msgpack_zone_destroy(&z);
		return 0; /* not ours to judge here: serving reports it */
	}
	const msgpack_object *users = mget(&w, "users");
	int32_t row = -1;
	if (users && users->type == MSGPACK_OBJECT_ARRAY)
		for (uint32_t j = 0; j < users->via.array.size && row < 0; j++) {
			const msgpack_object *u = &users->via.array.ptr[j];
			if (u->type == MSGPACK_OBJECT_STR && u->via.str.size == es->len && memcmp(u->via.str.ptr, es->id, es->len) == 0)
				row = (int32_t)j;
		}
	if (row >= 0 && !es->erase) {
		if (es->pk) {
			msgpack_pack_map(es->pk, 2);
			sx_pack_kv_str(es->pk, "model", name);
			sx_pack_kv_uint(es->pk, "version", version);
		}
		es->n++;
	} else if (row >= 0) {
		int32_t n_users = (int32_t)users->via.array.size;
		int64_t kk = mint(&w, "k", 0);
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		if (kk < 1 || kk > 1024 || mint(&w, "n_users", 0) != n_users)
			rc = sx_diag_set(SX_ECORRUPT, "model '%s' version %u: weights do not decode", name, version);
		else if ((rc = weights_without(&w, row, n_users, (int)kk, &sb)) == 0)
			rc = sb.data ? put_packed(SX_T_ARTIFACTS, ak, akl, &sb) : sx_diag_set(SX_ENOMEM, "out of memory");
		msgpack_sbuffer_destroy(&sb);
		if (rc == 0) {
			cache_drop(name, version);
			es->n++;
		}
	}
	msgpack_zone_destroy(&z);
	return rc < 0 ? rc : 0;
}

static int erase_user(const char *id, size_t len, uint32_t idx, int has_idx, struct sx_privacy_receipt *r, void *ud)
{
	struct erase_scan es = {id, len, 1, NULL, 0};
	uint8_t lo = 'v', hi = 'w';
	SX_UNUSED(idx), SX_UNUSED(has_idx), SX_UNUSED(ud);
	int rc = sx_store_scan(sx__models_eng->store, SX_T_MODELS, &lo, 1, &hi, 1, 0, erase_version_cb, &es);
	if (rc < 0)
		return rc;
	if (es.n)
		sx_privacy_receipt_add(r, "artifacts", es.n);
	return 0;
}

static int export_user(const char *id, size_t len, uint32_t idx, int has_idx, msgpack_packer *pk, void *ud)
{
	struct erase_scan es = {id, len, 0, NULL, 0};
	uint8_t lo = 'v', hi = 'w';
	SX_UNUSED(idx), SX_UNUSED(has_idx), SX_UNUSED(ud);
	int rc = sx_store_scan(sx__models_eng->store, SX_T_MODELS, &lo, 1, &hi, 1, 0, erase_version_cb, &es);
	if (rc < 0)
		return rc;
	if (es.n == 0) {
		msgpack_pack_nil(pk);
		return 0;
	}
	msgpack_pack_map(pk, 1);
	sx_pack_key(pk, "factor_rows");
	msgpack_pack_array(pk, (uint32_t)es.n);
	es.n = 0;
	es.pk = pk;
	return sx_store_scan(sx__models_eng->store, SX_T_MODELS, &lo, 1, &hi, 1, 0, erase_version_cb, &es);
}

static int64_t start_training(int type, const char *name, const msgpack_object *params, const msgpack_object *data,
			      int promote_mode, const char *alias, const char *trigger)
{
	struct head h;
	int rc = head_get(name, &h);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	if (rc == 0 && h.type != type)
		return sx_diag_set(SX_ESTATE, "model '%s' is of type %s, not %s", name, sx__model_type_name(h.type),
				   sx__model_type_name(type));
	struct tjob *j = calloc(1, sizeof(*j));
	struct running *r = calloc(1, sizeof(*r));
	if (!j || !r) {
		free(j), free(r);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	if (!(j->t = sx__train_prepare(type, name, params, data))) {
		free(j), free(r);
		return sx_diag_last_code() ? sx_diag_last_code() : SX_EINVAL;
	}
	j->type = type;
	snprintf(j->name, sizeof(j->name), "%s", name);
	snprintf(j->alias, sizeof(j->alias), "%s", alias && alias[0] ? alias : "production");
	snprintf(j->trigger, sizeof(j->trigger), "%s", trigger);
	j->promote = promote_mode;
	j->events_at = events_count();
	if (promote_mode == PROMOTE_NOT_WORSE) {
		struct sx_model *prod = sx_models_acquire(name, j->alias, 0);
		if (prod) {
			j->compared = prod->version;
			sx__train_compare_with(j->t, prod);
			sx_model_unref(prod);
		} else if (sx_diag_last_code() != SX_ENOENT) {
			sx__train_free(j->t);
			free(j), free(r);
			return sx_diag_last_code();
		}
	}
	char kind[96];
	snprintf(kind, sizeof(kind), "model.train:%s", name);
	int64_t id = sx_jobs_start(sx__models_eng->jobs, kind, train_work, train_done, j);
	if (id < 0) {
		sx__train_free(j->t);
		free(j), free(r);
		return id;
	}
	j->job = (uint64_t)id;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->job = (uint64_t)id;
	r->next = running;
	running = r;
	return id;
}

static int promote_parse(const msgpack_object *args, const char *key, int dflt, int *out)
{
	const char *s;
	size_t len;
	int rc = sx_arg_str(args, key, 0, &s, &len);
	if (rc < 0)
		return rc;
	*out = dflt;
	if (!sx_arg(args, key) || sx_arg(args, key)->type == MSGPACK_OBJECT_NIL)
		return 0;
	for (int i = 0; i < 3; i++)
		if (strlen(promote_names[i]) == len && memcmp(promote_names[i], s, len) == 0) {
			*out = i;
			return 0;
		}
	return sx_diag_set(SX_EINVAL, "argument '%s' must be \"never\", \"always\" or \"not_worse\"", key);
}

int64_t sx_models_train(const char *type, const char *name, const msgpack_object *params, const msgpack_object *data)
{
	int t = type ? sx__model_type_parse(type, strlen(type)) : 0;
	if (!t)
		return sx_diag_set(SX_EINVAL, "type must be \"als\", \"logistic\", \"text\" or \"behaviour\"");
	if (!name || !sx__models_name_ok(name, strlen(name)))
		return sx_diag_set(SX_EINVAL, "bad model name");
	return start_training(t, name, params, data, PROMOTE_NONE, NULL, "manual");
}

static int m_train(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"type", "name", "params", "data", "promote_if", "alias", "recipe", "args", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1], recipe[SX_EVENTS_ID_MAX + 1] = "";
	const char *type = NULL;
	size_t tlen = 0;
	int rc, prom;
	msgpack_sbuffer rsb;
	msgpack_zone z;
	msgpack_object ro;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_cstr(args, "recipe", 0, recipe, sizeof(recipe))) < 0 ||
	    (rc = sx_arg_str(args, "type", !recipe[0], &type, &tlen)) < 0)
		return rc;
	const msgpack_object *params = sx_arg(args, "params"), *data = sx_arg(args, "data");
	const msgpack_object *na = sx_arg(args, "name"), *pa = sx_arg(args, "promote_if"), *aa = sx_arg(args, "alias");
	msgpack_sbuffer_init(&rsb);
	msgpack_zone_init(&z, 4096);
	if (recipe[0]) {
		const msgpack_object *ra = sx_arg(args, "args");
		size_t off = 0;
		if (ra && ra->type != MSGPACK_OBJECT_NIL && ra->type != MSGPACK_OBJECT_MAP) {
			rc = sx_diag_set(SX_EINVAL, "argument 'args' must be a map");
			goto out;
		}
		if (data && data->type != MSGPACK_OBJECT_NIL) {
			rc = sx_diag_set(SX_EINVAL, "a recipe selects the data: give 'args', not 'data'");
			goto out;
		}
		if (params && params->type != MSGPACK_OBJECT_NIL && params->type != MSGPACK_OBJECT_MAP) {
			rc = sx_diag_set(SX_EINVAL, "argument 'params' must be a map");
			goto out;
		}
		if ((rc = sx__models_recipe_run(recipe, params && params->type == MSGPACK_OBJECT_MAP ? params : NULL,
						ra && ra->type == MSGPACK_OBJECT_MAP ? ra : NULL, &rsb)) < 0)
			goto out;
		if (msgpack_unpack(rsb.data, rsb.size, &off, &z, &ro) != MSGPACK_UNPACK_SUCCESS) {
			rc = sx_diag_set(SX_EINTERNAL, "recipe result does not decode");
			goto out;
		}
		const msgpack_object *rt = sx_arg(&ro, "type");
		if (type && !(rt && rt->type == MSGPACK_OBJECT_STR && rt->via.str.size == tlen && !memcmp(rt->via.str.ptr, type, tlen))) {
			rc = sx_diag_set(SX_EINVAL, "recipe '%s' trains another type than 'type'", recipe);
			goto out;
		}
		type = rt->via.str.ptr, tlen = rt->via.str.size;
		params = sx_arg(&ro, "params"), data = sx_arg(&ro, "data");
		if (!na || na->type == MSGPACK_OBJECT_NIL)
			na = sx_arg(&ro, "name");
		if (!pa || pa->type == MSGPACK_OBJECT_NIL)
			pa = sx_arg(&ro, "promote_if");
		if (!aa || aa->type == MSGPACK_OBJECT_NIL)
			aa = sx_arg(&ro, "alias");
	} else if (sx_arg(args, "args")) {
		rc = sx_diag_set(SX_EINVAL, "argument 'args' goes with 'recipe'");
		goto out;
	}
	/* name, alias and promote_if from the request, else the recipe */
	{
		msgpack_object_kv kv[3];
		msgpack_object m3;
		uint32_t nk = 0;
		msgpack_object ks[3];
		const char *keys[3] = {"name", "promote_if", "alias"};
		const msgpack_object *vals[3] = {na, pa, aa};
		for (int i = 0; i < 3; i++)
			if (vals[i]) {
				ks[nk].type = MSGPACK_OBJECT_STR;
				ks[nk].via.str.ptr = keys[i], ks[nk].via.str.size = (uint32_t)strlen(keys[i]);
				kv[nk].key = ks[nk], kv[nk].val = *vals[i];
				nk++;
			}
		m3.type = MSGPACK_OBJECT_MAP;
		m3.via.map.size = nk, m3.via.map.ptr = kv;
		int dflt_ok = recipe[0] && sx__models_name_ok(recipe, strlen(recipe));
		if ((rc = name_arg(&m3, "name", !dflt_ok, name, dflt_ok ? recipe : NULL)) < 0 ||
		    (rc = name_arg(&m3, "alias", 0, alias, "production")) < 0 ||
		    (rc = promote_parse(&m3, "promote_if", PROMOTE_NONE, &prom)) < 0)
			goto out;
	}
	int t = sx__model_type_parse(type, tlen);
	if (!t) {
		rc = sx_diag_set(SX_EINVAL, "argument 'type' must be \"als\", \"logistic\", \"text\" or \"behaviour\"");
		goto out;
	}
	/* A CSV file is read on the server: like writing files, an admin's call. */
	if (t == SX_MODEL_TEXT && data && sx_arg(data, "csv") && sx_arg(data, "csv")->type != MSGPACK_OBJECT_NIL &&
	    req->role < SX_ROLE_ADMIN) {
		rc = sx_diag_set(SX_EACCES, "reading files on the server ('data.csv') needs the admin role");
		goto out;
	}
	int64_t id = start_training(t, name, params, data, prom, alias, recipe[0] ? "recipe" : "manual");
	if (id < 0) {
		rc = (int)id;
		goto out;
	}
	msgpack_pack_map(pk, 2);
	sx_pack_kv_int(pk, "job", id);
	sx_pack_kv_str(pk, "name", name);
	rc = 0;
out:
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&rsb);
	return rc;
}

/* ---- aliases ---- */

static int promote(const char *name, const char *alias, uint32_t version, const char *action, uint32_t *previous)
{
	struct alias a;
	int rc = alias_get(name, alias, &a);
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	*previous = rc == 0 ? a.version : 0;
	if (rc == 0 && strcmp(action, "promote") == 0 && a.version != version) {
		if (a.nprev == SX_MODELS_HIST_MAX)
			memmove(a.prev, a.prev + 1, (--a.nprev) * sizeof(a.prev[0]));
		a.prev[a.nprev++] = a.version;
	}
	if (a.nhist == SX_MODELS_HIST_MAX)
		memmove(a.hist, a.hist + 1, (--a.nhist) * sizeof(a.hist[0]));
	a.hist[a.nhist].version = version;
	a.hist[a.nhist].from = *previous;
	a.hist[a.nhist].at = sx_wall_ms();
	snprintf(a.hist[a.nhist].action, sizeof(a.hist[0].action), "%s", action);
	a.nhist++;
	a.version = version;
	a.updated = sx_wall_ms();
	return alias_put(name, alias, &a);
}

static int version_status(const char *name, uint32_t version, char *status, size_t size)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	int rc = meta_get(name, version, &z, &o);
	if (rc == 0) {
		const msgpack_object *s = mget(&o, "status");
		snprintf(status, size, "%.*s", s && s->type == MSGPACK_OBJECT_STR ? (int)s->via.str.size : 0,
			 s && s->type == MSGPACK_OBJECT_STR ? s->via.str.ptr : "");
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static void pack_move(msgpack_packer *pk, const char *name, const char *alias, uint32_t version, uint32_t prev)
{
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_str(pk, "alias", alias);
	sx_pack_kv_uint(pk, "version", version);
	sx_pack_key(pk, "previous");
	if (prev)
		msgpack_pack_uint32(pk, prev);
	else
		msgpack_pack_nil(pk);
}

static int m_promote(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "version", "alias", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1], status[16];
	uint32_t version = 0, prev;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = version_arg(args, 1, &version)) < 0 || (rc = name_arg(args, "alias", 0, alias, "production")) < 0)
		return rc;
	if ((rc = version_status(name, version, status, sizeof(status))) < 0)
		return rc;
	if (strcmp(status, "archived") == 0)
		return sx_diag_set(SX_ESTATE, "model '%s' version %u is archived", name, version);
	/* Loading first means a broken artifact cannot go live. */
	struct sx_model *m = load(name, version);
	if (!m)
		return sx_diag_last_code();
	sx_model_unref(m);
	if ((rc = promote(name, alias, version, "promote", &prev)) < 0)
		return rc;
	pack_move(pk, name, alias, version, prev);
	return 0;
}

static int m_rollback(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "alias", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1], status[16];
	struct alias a;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = name_arg(args, "alias", 0, alias, "production")) < 0)
		return rc;
	if ((rc = alias_get(name, alias, &a)) < 0)
		return rc;
	/* The latest earlier target that still exists and is not archived. */
	while (a.nprev > 0) {
		uint32_t v = a.prev[--a.nprev];
		rc = version_status(name, v, status, sizeof(status));
		if (rc == SX_ENOENT || (rc == 0 && strcmp(status, "archived") == 0))
			continue;
		if (rc < 0)
			return rc;
		uint32_t from = a.version;
		if (a.nhist == SX_MODELS_HIST_MAX)
			memmove(a.hist, a.hist + 1, (--a.nhist) * sizeof(a.hist[0]));
		a.hist[a.nhist].version = v;
		a.hist[a.nhist].from = from;
		a.hist[a.nhist].at = sx_wall_ms();
		snprintf(a.hist[a.nhist].action, sizeof(a.hist[0].action), "rollback");
		a.nhist++;
		a.version = v;
		a.updated = sx_wall_ms();
		if ((rc = alias_put(name, alias, &a)) < 0)
			return rc;
		pack_move(pk, name, alias, v, from);
		return 0;
	}
	return sx_diag_set(SX_ESTATE, "alias '%s' of model '%s' has no earlier version to return to", alias, name);
}

static int m_aliases(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud);

/* ---- listing ---- */

struct alias_list {
	msgpack_packer *pk;
	char names[32][SX_MODELS_NAME_MAX + 1];
	uint32_t versions[32];
	size_t n;
};

static int alias_list_cb(const char *alias, uint32_t version, void *ud)
{
	struct alias_list *l = ud;
	if (l->n == 32)
		return 1;
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", alias);
	l->versions[l->n++] = version;
	return 0;
}

static void pack_alias_map(msgpack_packer *pk, const struct alias_list *l, uint32_t only)
{
	size_t n = 0;
	for (size_t i = 0; i < l->n; i++)
		n += !only || l->versions[i] == only;
	if (only) {
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < l->n; i++)
			if (l->versions[i] == only)
				sx_pack_str(pk, l->names[i]);
		return;
	}
	msgpack_pack_map(pk, n);
	for (size_t i = 0; i < l->n; i++)
		sx_pack_kv_uint(pk, l->names[i], l->versions[i]);
}

/* Packs a stored metadata map plus `aliases` (those pointing at it). */
static void pack_meta_with_aliases(msgpack_packer *pk, const msgpack_object *meta, const struct alias_list *al,
				   uint32_t extra)
{
	uint32_t v = (uint32_t)mint(meta, "version", 0);
	msgpack_pack_map(pk, meta->via.map.size + 1 + extra);
	for (uint32_t i = 0; i < meta->via.map.size; i++) {
		sx_pack_object(pk, &meta->via.map.ptr[i].key);
		sx_pack_object(pk, &meta->via.map.ptr[i].val);
	}
	sx_pack_key(pk, "aliases");
	pack_alias_map(pk, al, v ? v : UINT32_MAX);
}

struct ver_list {
	msgpack_packer *pk;
	const struct alias_list *al;
	size_t n;
	int count_only;
	msgpack_zone *z;
};

static int ver_list_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct ver_list *l = ud;
	SX_UNUSED(key);
	l->n++;
	if (l->count_only)
		return 0;
	msgpack_object o;
	msgpack_zone_clear(l->z);
	if (unpack(val->data, val->len, l->z, &o) < 0 || o.type != MSGPACK_OBJECT_MAP)
		return SX_ECORRUPT;
	pack_meta_with_aliases(l->pk, &o, l->al, 0);
	return 0;
}

static int versions_each(const char *name, struct ver_list *l)
{
	uint8_t lo[SX_MODELS_KEY_MAX], hi[SX_MODELS_KEY_MAX];
	size_t n = sx__models_version_key(lo, name, 0) - 4;
	memcpy(hi, lo, n);
	hi[n - 1] = 1;
	return sx_store_scan(sx__models_eng->store, SX_T_MODELS, lo, n, hi, n, 0, ver_list_cb, l);
}

static int pack_model_entry(msgpack_packer *pk, const char *name, int with_versions)
{
	struct head h;
	struct alias_list al = {0};
	msgpack_zone z;
	int rc;
	if ((rc = head_get(name, &h)) < 0 || (rc = aliases_each(name, alias_list_cb, &al)) < 0)
		return rc;
	msgpack_zone_init(&z, 4096);
	struct ver_list count = {pk, &al, 0, 1, &z};
	if ((rc = versions_each(name, &count)) < 0) {
		msgpack_zone_destroy(&z);
		return rc;
	}
	msgpack_pack_map(pk, 6 + with_versions);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_str(pk, "type", sx__model_type_name(h.type));
	sx_pack_kv_uint(pk, "versions_count", count.n);
	sx_pack_kv_uint(pk, "latest", h.next_version - 1);
	sx_pack_kv_int(pk, "created", h.created);
	sx_pack_key(pk, "aliases");
	pack_alias_map(pk, &al, 0);
	if (with_versions) {
		sx_pack_key(pk, "versions");
		msgpack_pack_array(pk, count.n);
		struct ver_list l = {pk, &al, 0, 0, &z};
		rc = versions_each(name, &l);
	}
	msgpack_zone_destroy(&z);
	return rc;
}

struct name_list {
	char (*names)[SX_MODELS_NAME_MAX + 1];
	size_t n, cap;
};

static int names_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct name_list *l = ud;
	SX_UNUSED(val);
	size_t n = key->len - 1;
	if (n == 0 || n > SX_MODELS_NAME_MAX)
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		void *p = realloc(l->names, cap * sizeof(*l->names));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		l->names = p, l->cap = cap;
	}
	memcpy(l->names[l->n], (const char *)key->data + 1, n);
	l->names[l->n++][n] = 0;
	return 0;
}

static int names_with(char tag, struct name_list *l)
{
	uint8_t lo = (uint8_t)tag, hi = (uint8_t)(tag + 1);
	return sx_store_scan(sx__models_eng->store, SX_T_MODELS, &lo, 1, &hi, 1, 0, names_cb, l);
}

static int m_list(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 0, name, NULL)) < 0)
		return rc;
	if (name[0])
		return pack_model_entry(pk, name, 1);
	struct name_list l = {0};
	if ((rc = names_with('n', &l)) < 0) {
		free(l.names);
		return rc;
	}
	msgpack_pack_array(pk, l.n);
	for (size_t i = 0; i < l.n && rc == 0; i++)
		rc = pack_model_entry(pk, l.names[i], 0);
	free(l.names);
	return rc;
}

/* name + version|alias (default: the "production" alias, else the latest). */
static int target_args(const msgpack_object *args, char *name, char *alias, uint32_t *version, int latest_ok)
{
	int rc;
	*version = 0;
	if ((rc = name_arg(args, "name", 1, name, NULL)) < 0 || (rc = version_arg(args, 0, version)) < 0 ||
	    (rc = name_arg(args, "alias", 0, alias, NULL)) < 0)
		return rc;
	if (*version && alias[0])
		return sx_diag_set(SX_EINVAL, "give 'version' or 'alias', not both");
	if (*version)
		return 0;
	struct alias a;
	rc = alias_get(name, alias[0] ? alias : "production", &a);
	if (rc == 0) {
		*version = a.version;
		return 0;
	}
	if (rc != SX_ENOENT || alias[0] || !latest_ok)
		return rc;
	struct head h;
	if ((rc = head_get(name, &h)) < 0)
		return rc;
	if (h.next_version <= 1)
		return sx_diag_set(SX_ENOENT, "model '%s' has no version", name);
	*version = h.next_version - 1;
	return 0;
}

static int m_get(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "version", "alias", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	uint32_t version;
	struct alias_list al = {0};
	msgpack_zone z;
	msgpack_object o;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = target_args(args, name, alias, &version, 1)) < 0)
		return rc;
	msgpack_zone_init(&z, 4096);
	if ((rc = meta_get(name, version, &z, &o)) == 0 && (rc = aliases_each(name, alias_list_cb, &al)) == 0) {
		pack_meta_with_aliases(pk, &o, &al, 1);
		/* What this server has seen of the version since it started. */
		const struct monitor *mo = NULL;
		for (const struct monitor *x = monitors; x && !mo; x = x->next)
			if (x->version == version && strcmp(x->name, name) == 0)
				mo = x;
		sx_pack_key(pk, "monitoring");
		if (mo) {
			msgpack_pack_map(pk, 4);
			sx_pack_kv_uint(pk, "predictions", mo->served);
			sx_pack_key(pk, "psi");
			sx__pack_num(pk, monitor_psi(mo));
			sx_pack_key(pk, "outcomes");
			pack_rolling(pk, mo);
			sx_pack_kv_bool(pk, "alerting", mo->firing_drift || mo->firing_latency || mo->firing_accuracy ||
						       mo->firing_auc);
		} else {
			msgpack_pack_nil(pk);
		}
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int guard_unaliased(const char *name, uint32_t version, const char *what)
{
	struct points_to p = {version, "", 0};
	int rc = aliases_each(name, points_cb, &p);
	if (rc < 0)
		return rc;
	if (p.found)
		return sx_diag_set(SX_ESTATE, "cannot %s model '%s' version %u: alias '%s' points to it", what, name,
				   version, p.alias);
	return 0;
}

static int m_archive(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "version", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	uint32_t version = 0;
	msgpack_zone z;
	msgpack_object o;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = version_arg(args, 1, &version)) < 0)
		return rc;
	msgpack_zone_init(&z, 4096);
	if ((rc = meta_get(name, version, &z, &o)) == 0 && (rc = guard_unaliased(name, version, "archive")) == 0) {
		msgpack_sbuffer sb;
		msgpack_packer p2;
		uint8_t k[SX_MODELS_KEY_MAX];
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&p2, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&p2, o.via.map.size);
		for (uint32_t i = 0; i < o.via.map.size; i++) {
			sx_pack_object(&p2, &o.via.map.ptr[i].key);
			if (sx_obj_streq(&o.via.map.ptr[i].key, "status"))
				sx_pack_str(&p2, "archived");
			else
				sx_pack_object(&p2, &o.via.map.ptr[i].val);
		}
		rc = put_packed(SX_T_MODELS, k, sx__models_version_key(k, name, version), &sb);
		msgpack_sbuffer_destroy(&sb);
		cache_drop(name, version);
	}
	msgpack_zone_destroy(&z);
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 3);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", version);
	sx_pack_kv_str(pk, "status", "archived");
	return 0;
}

static int m_delete(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "version", NULL};
	char name[SX_MODELS_NAME_MAX + 1], status[16];
	uint32_t version = 0;
	uint8_t k[SX_MODELS_KEY_MAX];
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = version_arg(args, 1, &version)) < 0)
		return rc;
	if ((rc = version_status(name, version, status, sizeof(status))) < 0 ||
	    (rc = guard_unaliased(name, version, "delete")) < 0)
		return rc;
	if ((rc = sx_store_del(sx__models_eng->store, SX_T_MODELS, k, sx__models_version_key(k, name, version))) < 0 ||
	    (rc = sx_store_del(sx__models_eng->store, SX_T_ARTIFACTS, k, sx__models_artifact_key(k, name, version))) < 0)
		return rc;
	cache_drop(name, version);
	msgpack_pack_map(pk, 3);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", version);
	sx_pack_kv_bool(pk, "deleted", 1);
	return 0;
}

/* ---- monitoring ---- */

static struct monitor *monitor_of(const struct sx_model *m)
{
	for (struct monitor *mo = monitors; mo; mo = mo->next)
		if (mo->version == m->version && strcmp(mo->name, m->name) == 0)
			return mo;
	struct monitor *mo = calloc(1, sizeof(*mo));
	if (!mo)
		return NULL;
	snprintf(mo->name, sizeof(mo->name), "%s", m->name);
	mo->version = m->version;
	mo->has_ref = m->has_ref;
	memcpy(mo->expected, m->ref_expected, sizeof(mo->expected));
	mo->next = monitors;
	monitors = mo;
	return mo;
}

static void monitor_free(struct monitor *mo)
{
	free(mo->ring);
	free(mo->o_score), free(mo->o_y), free(mo->o_right);
	free(mo);
}

static void monitors_drop(const char *name)
{
	for (struct monitor **pp = &monitors; *pp;) {
		struct monitor *mo = *pp;
		if (strcmp(mo->name, name) == 0) {
			*pp = mo->next;
			monitor_free(mo);
		} else {
			pp = &mo->next;
		}
	}
}

/* Bucket b holds latencies up to 2^(b/4) microseconds. */
static int lat_bucket(double us)
{
	int b = us <= 1 ? 0 : (int)ceil(4.0 * log2(us));
	return b < 0 ? 0 : b >= LAT_BUCKETS ? LAT_BUCKETS - 1 : b;
}

static double lat_quantile_ms(const struct monitor *mo, double q)
{
	uint64_t total = 0, acc = 0;
	for (int b = 0; b < LAT_BUCKETS; b++)
		total += mo->lat[b];
	if (!total)
		return NAN;
	uint64_t want = (uint64_t)ceil(q * (double)total);
	for (int b = 0; b < LAT_BUCKETS; b++) {
		acc += mo->lat[b];
		if (acc >= want && acc > 0)
			return pow(2.0, b / 4.0) / 1000.0;
	}
	return pow(2.0, (LAT_BUCKETS - 1) / 4.0) / 1000.0;
}

static double monitor_psi(const struct monitor *mo)
{
	return mo->has_ref && mo->scored ? sx__models_psi(mo->expected, mo->bins, SX_MODELS_PSI_BINS) : NAN;
}

static struct rules *rules_find(const char *name)
{
	for (struct rules *r = rules; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			return r;
	return NULL;
}

static void alert(const char *type, const struct monitor *mo, double value, double threshold, int firing)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 7);
	sx_pack_kv_str(&pk, "type", type);
	sx_pack_kv_str(&pk, "state", firing ? "firing" : "resolved");
	sx_pack_kv_str(&pk, "name", mo->name);
	sx_pack_kv_uint(&pk, "version", mo->version);
	sx_pack_kv_double(&pk, "value", value);
	sx_pack_kv_double(&pk, "threshold", threshold);
	sx_pack_kv_int(&pk, "at", sx_wall_ms());
	sx_server_publish(sx__models_eng->srv, "alerts", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- outcomes ---- */

struct rolling {
	uint64_t count;
	double accuracy, auc;
};

static struct rolling rolling_of(const struct monitor *mo)
{
	struct rolling r = {mo->o_n, NAN, NAN};
	if (!mo->o_n)
		return r;
	double *sc = malloc(mo->o_n * sizeof(double));
	uint8_t *y = malloc(mo->o_n);
	size_t right = 0, nb = 0;
	for (size_t i = 0; i < mo->o_n; i++) {
		right += mo->o_right[i];
		if (sc && y && !isnan(mo->o_score[i]) && mo->o_y[i] <= 1)
			sc[nb] = mo->o_score[i], y[nb++] = mo->o_y[i];
	}
	r.accuracy = (double)right / (double)mo->o_n;
	double a;
	if (nb && sx_metrics_auc(sc, y, nb, &a) == 0)
		r.auc = a;
	free(sc), free(y);
	return r;
}

static void pack_rolling(msgpack_packer *pk, const struct monitor *mo)
{
	struct rolling r = rolling_of(mo);
	msgpack_pack_map(pk, 4);
	sx_pack_kv_uint(pk, "count", r.count);
	sx_pack_kv_uint(pk, "total", mo->o_total);
	sx_pack_key(pk, "accuracy");
	sx__pack_num(pk, r.accuracy);
	sx_pack_key(pk, "auc");
	sx__pack_num(pk, r.auc);
}

static void check_rules(struct monitor *mo)
{
	struct rules *r = rules_find(mo->name);
	if (!r || mo->served < r->min_samples)
		return;
	if (r->psi_above > 0) {
		double psi = monitor_psi(mo);
		int f = !isnan(psi) && psi > r->psi_above;
		if (f != mo->firing_drift) {
			mo->firing_drift = f;
			alert("model.drift", mo, isnan(psi) ? 0 : psi, r->psi_above, f);
		}
	}
	if (r->p99_ms_above > 0) {
		double p99 = lat_quantile_ms(mo, 0.99);
		int f = !isnan(p99) && p99 > r->p99_ms_above;
		if (f != mo->firing_latency) {
			mo->firing_latency = f;
			alert("model.latency", mo, isnan(p99) ? 0 : p99, r->p99_ms_above, f);
		}
	}
}

/* Accuracy and AUC over the outcome window against their floors. */
static void check_outcome_rules(struct monitor *mo)
{
	struct rules *r = rules_find(mo->name);
	if (!r || mo->o_n < r->min_outcomes)
		return;
	struct rolling ro = rolling_of(mo);
	if (r->accuracy_below > 0) {
		int f = !isnan(ro.accuracy) && ro.accuracy < r->accuracy_below;
		if (f != mo->firing_accuracy) {
			mo->firing_accuracy = f;
			alert("model.accuracy", mo, isnan(ro.accuracy) ? 0 : ro.accuracy, r->accuracy_below, f);
		}
	}
	if (r->auc_below > 0) {
		int f = !isnan(ro.auc) && ro.auc < r->auc_below;
		if (f != mo->firing_auc) {
			mo->firing_auc = f;
			alert("model.auc", mo, isnan(ro.auc) ? 0 : ro.auc, r->auc_below, f);
		}
	}
}

static void pack_monitor(msgpack_packer *pk, const struct monitor *mo)
{
	msgpack_pack_map(pk, 11);
	sx_pack_kv_uint(pk, "version", mo->version);
	sx_pack_kv_uint(pk, "predictions", mo->served);
	sx_pack_kv_uint(pk, "errors", mo->errors);
	sx_pack_key(pk, "latency_ms");
	msgpack_pack_map(pk, 3);
	sx_pack_key(pk, "p50");
	sx__pack_num(pk, lat_quantile_ms(mo, 0.5));
	sx_pack_key(pk, "p99");
	sx__pack_num(pk, lat_quantile_ms(mo, 0.99));
	sx_pack_key(pk, "mean");
	sx__pack_num(pk, mo->served ? mo->lat_sum_ms / (double)mo->served : NAN);
	sx_pack_key(pk, "psi");
	sx__pack_num(pk, monitor_psi(mo));
	sx_pack_key(pk, "scores");
	msgpack_pack_map(pk, 3);
	sx_pack_kv_uint(pk, "count", mo->scored);
	sx_pack_key(pk, "actual");
	msgpack_pack_array(pk, SX_MODELS_PSI_BINS);
	for (int b = 0; b < SX_MODELS_PSI_BINS; b++)
		sx__pack_num(pk, mo->scored ? mo->bins[b] / (double)mo->scored : 0);
	sx_pack_key(pk, "expected");
	msgpack_pack_array(pk, SX_MODELS_PSI_BINS);
	for (int b = 0; b < SX_MODELS_PSI_BINS; b++)
		sx__pack_num(pk, mo->expected[b]);
	sx_pack_kv_bool(pk, "drift_alert", mo->firing_drift);
	sx_pack_kv_bool(pk, "latency_alert", mo->firing_latency);
	sx_pack_key(pk, "outcomes");
	pack_rolling(pk, mo);
	sx_pack_kv_bool(pk, "accuracy_alert", mo->firing_accuracy);
	sx_pack_kv_bool(pk, "auc_alert", mo->firing_auc);
}

static int m_monitor(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	struct head h;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = head_get(name, &h)) < 0)
		return rc;
	size_t n = 0;
	for (struct monitor *mo = monitors; mo; mo = mo->next)
		n += strcmp(mo->name, name) == 0;
	struct rules *r = rules_find(name);
	msgpack_pack_map(pk, 3);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_key(pk, "rules");
	if (r) {
		msgpack_pack_map(pk, 7);
		sx_pack_kv_double(pk, "psi_above", r->psi_above);
		sx_pack_kv_double(pk, "p99_ms_above", r->p99_ms_above);
		sx_pack_kv_uint(pk, "min_samples", r->min_samples);
		sx_pack_kv_double(pk, "accuracy_below", r->accuracy_below);
		sx_pack_kv_double(pk, "auc_below", r->auc_below);
		sx_pack_kv_uint(pk, "min_outcomes", r->min_outcomes);
		sx_pack_kv_uint(pk, "outcome_window", r->outcome_window);
	} else {
		msgpack_pack_nil(pk);
	}
	sx_pack_key(pk, "versions");
	msgpack_pack_array(pk, n);
	for (struct monitor *mo = monitors; mo; mo = mo->next)
		if (strcmp(mo->name, name) == 0)
			pack_monitor(pk, mo);
	return 0;
}

static int rules_load_one(const char *name, const void *data, size_t len)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 256);
	int rc = unpack(data, len, &z, &o);
	if (rc == 0) {
		struct rules *r = rules_find(name);
		if (!r) {
			if (!(r = calloc(1, sizeof(*r)))) {
				msgpack_zone_destroy(&z);
				return sx_diag_set(SX_ENOMEM, "out of memory");
			}
			snprintf(r->name, sizeof(r->name), "%s", name);
			r->next = rules;
			rules = r;
		}
		r->psi_above = mnum(&o, "psi_above", 0);
		r->p99_ms_above = mnum(&o, "p99_ms_above", 0);
		r->min_samples = (uint64_t)mint(&o, "min_samples", 100);
		r->accuracy_below = mnum(&o, "accuracy_below", 0);
		r->auc_below = mnum(&o, "auc_below", 0);
		r->min_outcomes = (uint64_t)mint(&o, "min_outcomes", 50);
		r->outcome_window = (uint64_t)mint(&o, "outcome_window", 500);
		if (r->outcome_window < 1 || r->outcome_window > OUTCOME_WINDOW_MAX)
			r->outcome_window = 500;
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static int m_alerts(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "psi_above", "p99_ms_above", "min_samples", "accuracy_below",
		"auc_below", "min_outcomes", "outcome_window", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	struct head h;
	double psi = 0, p99 = 0, acc = 0, auc = 0;
	int64_t mins = 100, mino = 50, win = 500;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = sx_arg_num(args, "psi_above", 0, &psi)) < 0 || (rc = sx_arg_num(args, "p99_ms_above", 0, &p99)) < 0 ||
	    (rc = sx_arg_int(args, "min_samples", 0, &mins)) < 0 || (rc = sx_arg_num(args, "accuracy_below", 0, &acc)) < 0 ||
	    (rc = sx_arg_num(args, "auc_below", 0, &auc)) < 0 || (rc = sx_arg_int(args, "min_outcomes", 0, &mino)) < 0 ||
	    (rc = sx_arg_int(args, "outcome_window", 0, &win)) < 0)
		return rc;
	if (!isfinite(psi) || psi < 0 || !isfinite(p99) || p99 < 0 || mins < 1 || mins > 1000000000)
		return sx_diag_set(SX_EINVAL, "thresholds must be >= 0 and min_samples in 1..1e9");
	if (!(acc >= 0 && acc <= 1) || !(auc >= 0 && auc <= 1) || mino < 1 || win < 1 || win > OUTCOME_WINDOW_MAX ||
	    mino > win)
		return sx_diag_set(SX_EINVAL, "accuracy_below and auc_below must be in [0, 1], outcome_window in 1..%d and "
				   "min_outcomes in 1..outcome_window", OUTCOME_WINDOW_MAX);
	if ((rc = head_get(name, &h)) < 0)
		return rc;
	msgpack_sbuffer sb;
	msgpack_packer p2;
	uint8_t k[SX_MODELS_KEY_MAX];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&p2, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&p2, 7);
	sx_pack_kv_double(&p2, "psi_above", psi);
	sx_pack_kv_double(&p2, "p99_ms_above", p99);
	sx_pack_kv_int(&p2, "min_samples", mins);
	sx_pack_kv_double(&p2, "accuracy_below", acc);
	sx_pack_kv_double(&p2, "auc_below", auc);
	sx_pack_kv_int(&p2, "min_outcomes", mino);
	sx_pack_kv_int(&p2, "outcome_window", win);
	rc = put_packed(SX_T_MODELS, k, sx__models_rules_key(k, name), &sb);
	if (rc == 0)
		rc = rules_load_one(name, sb.data, sb.size);
	if (rc == 0)
		msgpack_sbuffer_write(pk->data, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* ---- served predictions and outcomes ---- */

/* Records a served prediction of a classifier; returns its id. */
static uint64_t served_record(struct monitor *mo, int32_t pred, double p1)
{
	uint64_t id = ++pred_seq;
	if (mo && (mo->ring || (mo->ring = calloc(PRED_RING, sizeof(*mo->ring))))) {
		struct served_pred *sp = &mo->ring[id % PRED_RING];
		sp->id = id, sp->pred = pred, sp->p1 = (float)p1, sp->joined = 0;
	}
	return id;
}

static void pack_pred_id(msgpack_packer *pk, uint64_t id)
{
	char b[24];
	snprintf(b, sizeof(b), "%016llx", (unsigned long long)id);
	sx_pack_kv_str(pk, "prediction_id", b);
}

/* Adds an outcome to the window: the score for AUC (NAN: none), the true
 * class as 0/1 for AUC (2: not binary) and whether the prediction was right. */
static int outcome_add(struct monitor *mo, double score, int y, int right)
{
	struct rules *r = rules_find(mo->name);
	size_t w = r ? (size_t)r->outcome_window : 500;
	if (!mo->o_score) {
		mo->o_score = malloc(OUTCOME_WINDOW_MAX * sizeof(float));
		mo->o_y = malloc(OUTCOME_WINDOW_MAX), mo->o_right = malloc(OUTCOME_WINDOW_MAX);
		if (!mo->o_score || !mo->o_y || !mo->o_right) {
			free(mo->o_score), free(mo->o_y), free(mo->o_right);
			mo->o_score = NULL, mo->o_y = mo->o_right = NULL;
			return sx_diag_set(SX_ENOMEM, "out of memory");
		}
	}
	/* A window made smaller since keeps its first entries. */
	if (mo->o_head >= w)
		mo->o_head = 0;
	if (mo->o_n > w)
		mo->o_n = w;
	mo->o_score[mo->o_head] = (float)score;
	mo->o_y[mo->o_head] = (uint8_t)y;
	mo->o_right[mo->o_head] = (uint8_t)right;
	mo->o_head = (mo->o_head + 1) % w;
	if (mo->o_n < w)
		mo->o_n++;
	mo->o_total++;
	check_outcome_rules(mo);
	return 0;
}

/* ---- prediction ---- */

struct recent {
	const struct sx_model *m;
	int32_t *items;
	float *w;
	size_t n;
};

static int recent_cb(const struct sx_event *ev, void *ud)
{
	struct recent *r = ud;
	if (!ev->item)
		return 0;
	float w = 0;
	for (size_t i = 0; i < r->m->nweights; i++)
		if (strlen(r->m->weights[i].name) == ev->name_len && !memcmp(r->m->weights[i].name, ev->name, ev->name_len)) {
			w = r->m->weights[i].w;
			break;
		}
	if (w <= 0)
		return 0;
	int32_t it = sx__idmap_get((struct sx_idmap *)&r->m->items, ev->item, ev->item_len, 0);
	if (it < 0)
		return 0;
	r->items[r->n] = it;
	r->w[r->n] = w;
	return ++r->n >= RECENT_EVENTS;
}

static int predict_als(struct sx_model *m, struct monitor *mo, const msgpack_object *inputs, msgpack_packer *pk)
{
	static const char *const known[] = {"user", "n", "exclude_seen", NULL};
	const msgpack_object *list = inputs;
	size_t n = 1;
	if (inputs->type == MSGPACK_OBJECT_ARRAY)
		n = inputs->via.array.size;
	else if (inputs->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must be {user, n?, exclude_seen?} or an array of them");
	if (n == 0 || n > PREDICT_INPUTS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must hold 1 to %d entries", PREDICT_INPUTS_MAX);
	int rc;
	/* Check everything before packing anything. */
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *in = inputs->type == MSGPACK_OBJECT_ARRAY ? &list->via.array.ptr[i] : inputs;
		const char *u;
		size_t ulen;
		int64_t topn = 10;
		int ex = 1;
		if (in->type != MSGPACK_OBJECT_MAP)
			return sx_diag_set(SX_EINVAL, "inputs[%zu] must be a map {user, n?, exclude_seen?}", i);
		if ((rc = sx_arg_only(in, known)) < 0 || (rc = sx_arg_str(in, "user", 1, &u, &ulen)) < 0 ||
		    (rc = sx_arg_int(in, "n", 0, &topn)) < 0 || (rc = sx_arg_bool(in, "exclude_seen", 0, &ex)) < 0)
		{
			char what[32];
			snprintf(what, sizeof(what), "inputs[%zu]", i);
			return sx__diag_prefix(rc, what);
		}
		if (ulen == 0 || ulen > SX_EVENTS_ID_MAX || topn < 1 || topn > TOPN_MAX)
			return sx_diag_set(SX_EINVAL, "inputs[%zu]: 'user' must be an id and 'n' in 1..%d", i, TOPN_MAX);
	}
	int32_t *items = malloc(RECENT_EVENTS * sizeof(int32_t)), *out = malloc(TOPN_MAX * sizeof(int32_t));
	float *w = malloc(RECENT_EVENTS * sizeof(float)), *scores = malloc(TOPN_MAX * sizeof(float));
	float *vec = malloc((size_t)m->k * sizeof(float));
	if (!items || !out || !w || !scores || !vec) {
		free(items), free(out), free(w), free(scores), free(vec);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	sx_pack_key(pk, "results");
	msgpack_pack_array(pk, n);
	rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const msgpack_object *in = inputs->type == MSGPACK_OBJECT_ARRAY ? &list->via.array.ptr[i] : inputs;
		const char *u;
		size_t ulen;
		int64_t topn = 10;
		int ex = 1;
		sx_arg_str(in, "user", 1, &u, &ulen);
		sx_arg_int(in, "n", 0, &topn);
		sx_arg_bool(in, "exclude_seen", 0, &ex);
		struct recent r = {m, items, w, 0};
		uint32_t uidx;
		char pbuf[SX_PRIVACY_ID_BUF];
		size_t idlen;
		/* Ids are stored (and the model keyed) by their pseudonym. */
		const char *id = sx_privacy_user_id(u, ulen, pbuf, &idlen);
		/* Without personalization consent neither the user's row nor
		 * their history is used. */
		int allowed = sx_privacy_allowed(id, idlen, SX_PURPOSE_PERSONALIZATION);
		if (allowed && sx_events_user_index(NULL, id, idlen, &uidx) == 0 &&
		    (rc = sx_events_user_scan(NULL, uidx, 0, SX_EVENTS_TIME_MAX + 1, 1, recent_cb, &r)) < 0)
			break;
		int32_t known_u = allowed ? sx__idmap_get(&m->users, id, idlen, 0) : -1;
		const char *source = "factors";
		if (!allowed) {
			source = "no_consent";
		} else if (known_u >= 0) {
			memcpy(vec, sx_als_user_factors(m->als) + (size_t)known_u * (size_t)m->k, (size_t)m->k * sizeof(float));
		} else if (r.n > 0) {
			source = "fold_in";
			if ((rc = sx_als_fold_in(m->als, items, w, r.n, vec)) < 0) {
				sx_diag_set(rc, "fold-in failed");
				break;
			}
		} else {
			source = "cold";
		}
		int got = 0;
		if (known_u >= 0 || r.n > 0) {
			got = sx_als_recommend(m->als, vec, ex ? items : NULL, ex ? r.n : 0, (size_t)topn, out, scores);
			if (got < 0) {
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				break;
			}
		}
		msgpack_pack_map(pk, 3);
		sx_pack_key(pk, "user");
		sx_pack_strn(pk, u, ulen);
		sx_pack_kv_str(pk, "source", source);
		sx_pack_key(pk, "items");
		msgpack_pack_array(pk, (size_t)got);
		for (int j = 0; j < got; j++) {
			msgpack_pack_map(pk, 2);
			sx_pack_key(pk, "item");
			sx_pack_strn(pk, m->items.ids[out[j]], m->items.lens[out[j]]);
			sx_pack_kv_double(pk, "score", scores[j]);
			if (mo && mo->has_ref) {
				mo->bins[sx__models_bin(m->ref_edges, scores[j])] += 1;
				mo->scored++;
			}
		}
	}
	free(items), free(out), free(w), free(scores), free(vec);
	return rc;
}

/* 0 and *v for an integer or a float, -1 for anything else. */
static int num_val(const msgpack_object *o, double *v)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		*v = (double)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*v = (double)o->via.i64;
	else if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
		*v = o->via.f64;
	else
		return -1;
	return 0;
}

static int row_of(const struct sx_model *m, const msgpack_object *row, size_t i, double *x)
{
	if (row->type == MSGPACK_OBJECT_ARRAY) {
		if (row->via.array.size != m->d)
			return sx_diag_set(SX_EINVAL, "inputs[%zu] has %u values, the model has %zu features", i,
					   row->via.array.size, m->d);
		for (size_t j = 0; j < m->d; j++) {
			const msgpack_object *o = &row->via.array.ptr[j];
			double v;
			if (num_val(o, &v) < 0)
				return sx_diag_set(SX_EINVAL, "inputs[%zu][%zu] is not a number", i, j);
			if (!isfinite(v))
				return sx_diag_set(SX_EINVAL, "inputs[%zu][%zu] is not finite", i, j);
			x[j] = v;
		}
		return 0;
	}
	if (row->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "inputs[%zu] must be an array of numbers or a map feature -> number", i);
	if (row->via.map.size != m->d)
		return sx_diag_set(SX_EINVAL, "inputs[%zu] has %u features, the model has %zu", i, row->via.map.size, m->d);
	for (size_t j = 0; j < m->d; j++) {
		const msgpack_object *o = sx_arg(row, m->features[j]);
		double v;
		if (!o)
			return sx_diag_set(SX_EINVAL, "inputs[%zu] lacks feature '%s'", i, m->features[j]);
		if (num_val(o, &v) < 0)
			return sx_diag_set(SX_EINVAL, "inputs[%zu].%s is not a number", i, m->features[j]);
		if (!isfinite(v))
			return sx_diag_set(SX_EINVAL, "inputs[%zu].%s is not finite", i, m->features[j]);
		x[j] = v;
	}
	return 0;
}

static int predict_logistic(struct sx_model *m, struct monitor *mo, const msgpack_object *inputs, msgpack_packer *pk)
{
	size_t n = 1;
	int single = inputs->type == MSGPACK_OBJECT_MAP;
	if (!single) {
		if (inputs->type != MSGPACK_OBJECT_ARRAY)
			return sx_diag_set(SX_EINVAL, "argument 'inputs' must be a row or an array of rows");
		n = inputs->via.array.size;
		/* One row given as a flat array of numbers. */
		if (n > 0 && inputs->via.array.ptr[0].type != MSGPACK_OBJECT_ARRAY &&
		    inputs->via.array.ptr[0].type != MSGPACK_OBJECT_MAP)
			single = 1, n = 1;
	}
	if (n == 0 || n > PREDICT_INPUTS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must hold 1 to %d rows", PREDICT_INPUTS_MAX);
	double *X = malloc(n * m->d * sizeof(double)), *c = malloc(m->d * sizeof(double));
	int rc = 0;
	if (!X || !c) {
		free(X), free(c);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = row_of(m, single ? inputs : &inputs->via.array.ptr[i], i, X + i * m->d);
	if (rc == 0) {
		sx_pack_key(pk, "predictions");
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < n; i++) {
			double p, b;
			sx_model_predict_proba(m, X + i * m->d, c, &b, &p);
			msgpack_pack_map(pk, 4);
			pack_pred_id(pk, served_record(mo, p >= 0.5, p));
			sx_pack_kv_double(pk, "probability", p);
			sx_pack_kv_double(pk, "intercept", b);
			sx_pack_key(pk, "contributions");
			msgpack_pack_map(pk, m->d);
			for (size_t j = 0; j < m->d; j++)
				sx_pack_kv_double(pk, m->features[j], c[j]);
			if (mo && mo->has_ref) {
				mo->bins[sx__models_bin(m->ref_edges, p)] += 1;
				mo->scored++;
			}
		}
	}
	free(X), free(c);
	return rc;
}

/* The text of one text input: "..." or {text = "..."}. */
static int text_input(const msgpack_object *in, size_t i, const char **s, size_t *n)
{
	const msgpack_object *t = in;
	if (in->type == MSGPACK_OBJECT_MAP) {
		static const char *const known[] = {"text", NULL};
		if (sx_arg_only(in, known) < 0)
			return sx_diag_set(SX_EINVAL, "inputs[%zu] must be {text}", i);
		t = sx_arg(in, "text");
	}
	if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size > 65536)
		return sx_diag_set(SX_EINVAL, "inputs[%zu] must be a string or {text = string} of up to 65536 bytes", i);
	*s = t->via.str.ptr, *n = t->via.str.size;
	return 0;
}

struct prob_ix {
	double p;
	int32_t c;
};

static int prob_cmp(const void *a, const void *b)
{
	const struct prob_ix *x = a, *y = b;
	if (x->p != y->p)
		return x->p > y->p ? -1 : 1;
	return x->c < y->c ? -1 : x->c > y->c;
}

static int predict_text(struct sx_model *m, struct monitor *mo, const msgpack_object *inputs, msgpack_packer *pk)
{
	int single = inputs->type != MSGPACK_OBJECT_ARRAY;
	size_t n = single ? 1 : inputs->via.array.size;
	if (n == 0 || n > PREDICT_INPUTS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must hold 1 to %d texts", PREDICT_INPUTS_MAX);
	const char *s;
	size_t len;
	int rc;
	for (size_t i = 0; i < n; i++)
		if ((rc = text_input(single ? inputs : &inputs->via.array.ptr[i], i, &s, &len)) < 0)
			return rc;
	size_t k = (size_t)m->n_classes;
	double *p = malloc(k * sizeof(double));
	struct prob_ix *ix = malloc(k * sizeof(*ix));
	if (!p || !ix) {
		free(p), free(ix);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	sx_pack_key(pk, "predictions");
	msgpack_pack_array(pk, n);
	rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		text_input(single ? inputs : &inputs->via.array.ptr[i], i, &s, &len);
		if ((rc = sx__text_predict(m, s, len, p)) < 0)
			break;
		int32_t best = sx_text_argmax(p, m->n_classes);
		for (size_t c = 0; c < k; c++)
			ix[c] = (struct prob_ix){p[c], (int32_t)c};
		size_t shown = k <= PROBS_MAX ? k : PROBS_MAX;
		if (k > PROBS_MAX)
			qsort(ix, k, sizeof(*ix), prob_cmp);
		msgpack_pack_map(pk, 4);
		sx_pack_kv_str(pk, "label", m->classes[best]);
		sx_pack_kv_double(pk, "probability", p[best]);
		sx_pack_key(pk, "probabilities");
		msgpack_pack_map(pk, shown);
		for (size_t c = 0; c < shown; c++)
			sx_pack_kv_double(pk, m->classes[ix[c].c], ix[c].p);
		pack_pred_id(pk, served_record(mo, best, k == 2 ? p[1] : NAN));
		if (mo && mo->has_ref) {
			mo->bins[sx__models_bin(m->ref_edges, p[best])] += 1;
			mo->scored++;
		}
	}
	free(p), free(ix);
	return rc;
}

/* ---- behaviour ---- */

struct history {
	const struct sx_model *m;
	int32_t names[HISTORY_MAX], items[HISTORY_MAX];
	size_t nn, ni, seen;
};

/* Newest first: kept newest first, reversed by the caller. */
static int history_cb(const struct sx_event *ev, void *ud)
{
	struct history *h = ud;
	int32_t a = sx__idmap_get((struct sx_idmap *)&h->m->names, ev->name, ev->name_len, 0);
	if (a >= 0 && h->nn < HISTORY_MAX)
		h->names[h->nn++] = a;
	if (ev->item && h->ni < HISTORY_MAX) {
		int32_t it = sx__idmap_get((struct sx_idmap *)&h->m->items, ev->item, ev->item_len, 0);
		if (it >= 0)
			h->items[h->ni++] = it;
	}
	return ++h->seen >= HISTORY_MAX ? 1 : 0;
}

static void reverse_i32(int32_t *a, size_t n)
{
	for (size_t i = 0; i < n / 2; i++) {
		int32_t t = a[i];
		a[i] = a[n - 1 - i], a[n - 1 - i] = t;
	}
}

static int behaviour_input_check(const msgpack_object *in, size_t i)
{
	static const char *const known[] = {"user", "events", "n", "actions", NULL};
	const char *u;
	size_t ulen;
	int64_t topn = 10, na = 5;
	int rc;
	char what[32];
	snprintf(what, sizeof(what), "inputs[%zu]", i);
	if (in->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "%s must be a map {user | events, n?, actions?}", what);
	if ((rc = sx_arg_only(in, known)) < 0 || (rc = sx_arg_str(in, "user", 0, &u, &ulen)) < 0 ||
	    (rc = sx_arg_int(in, "n", 0, &topn)) < 0 || (rc = sx_arg_int(in, "actions", 0, &na)) < 0)
		return sx__diag_prefix(rc, what);
	const msgpack_object *us = sx_arg(in, "user"), *ev = sx_arg(in, "events");
	int has_u = us && us->type != MSGPACK_OBJECT_NIL, has_e = ev && ev->type != MSGPACK_OBJECT_NIL;
	if (has_u == has_e)
		return sx_diag_set(SX_EINVAL, "%s: give 'user' or 'events' (one of them)", what);
	if (has_u && (ulen == 0 || ulen > SX_EVENTS_ID_MAX))
		return sx_diag_set(SX_EINVAL, "%s: 'user' must be 1 to %d bytes", what, SX_EVENTS_ID_MAX);
	if (topn < 0 || topn > TOPN_MAX || na < 0 || na > TOPN_MAX)
		return sx_diag_set(SX_EINVAL, "%s: 'n' and 'actions' must be in 0..%d", what, TOPN_MAX);
	if (has_e) {
		if (ev->type != MSGPACK_OBJECT_ARRAY || ev->via.array.size > HISTORY_MAX)
			return sx_diag_set(SX_EINVAL, "%s: 'events' must be a list of up to %d {name, item?} (oldest first)",
					   what, HISTORY_MAX);
		for (uint32_t j = 0; j < ev->via.array.size; j++) {
			const msgpack_object *e = &ev->via.array.ptr[j], *nm = sx_arg(e, "name"), *it = sx_arg(e, "item");
			if (e->type != MSGPACK_OBJECT_MAP || !nm || nm->type != MSGPACK_OBJECT_STR ||
			    (it && it->type != MSGPACK_OBJECT_STR && it->type != MSGPACK_OBJECT_NIL))
				return sx_diag_set(SX_EINVAL, "%s: events[%u] must be {name = string, item? = string}", what, j);
		}
	}
	return 0;
}

static int predict_behaviour(struct sx_model *m, struct monitor *mo, const msgpack_object *inputs, msgpack_packer *pk)
{
	int single = inputs->type == MSGPACK_OBJECT_MAP;
	size_t n = single ? 1 : inputs->type == MSGPACK_OBJECT_ARRAY ? inputs->via.array.size : 0;
	if (!single && inputs->type != MSGPACK_OBJECT_ARRAY)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must be {user | events, n?, actions?} or an array of them");
	if (n == 0 || n > PREDICT_INPUTS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' must hold 1 to %d entries", PREDICT_INPUTS_MAX);
	int rc;
	for (size_t i = 0; i < n; i++)
		if ((rc = behaviour_input_check(single ? inputs : &inputs->via.array.ptr[i], i)) < 0)
			return rc;
	size_t ns = (size_t)m->names.n;
	double *p = malloc(ns * sizeof(double)), *sc = malloc(TOPN_MAX * sizeof(double));
	struct prob_ix *ix = malloc(ns * sizeof(*ix));
	int32_t *out = malloc(TOPN_MAX * sizeof(int32_t));
	struct history *h = malloc(sizeof(*h));
	if (!p || !sc || !ix || !out || !h) {
		free(p), free(sc), free(ix), free(out), free(h);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	sx_pack_key(pk, "results");
	msgpack_pack_array(pk, n);
	rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const msgpack_object *in = single ? inputs : &inputs->via.array.ptr[i];
		const msgpack_object *us = sx_arg(in, "user"), *ev = sx_arg(in, "events");
		int64_t topn = 10, na = 5;
		sx_arg_int(in, "n", 0, &topn);
		sx_arg_int(in, "actions", 0, &na);
		memset(h, 0, sizeof(*h));
		h->m = m;
		const char *source = "events";
		if (us && us->type == MSGPACK_OBJECT_STR) {
			char pbuf[SX_PRIVACY_ID_BUF];
			size_t idlen;
			uint32_t uidx;
			const char *id = sx_privacy_user_id(us->via.str.ptr, us->via.str.size, pbuf, &idlen);
			source = "history";
			if (!sx_privacy_allowed(id, idlen, SX_PURPOSE_PERSONALIZATION))
				source = "no_consent";
			else if (sx_events_user_index(NULL, id, idlen, &uidx) < 0)
				source = "cold";
			else if ((rc = sx_events_user_scan(NULL, uidx, 0, SX_EVENTS_TIME_MAX + 1, 1, history_cb, h)) < 0)
				break;
			else if (!h->nn && !h->ni)
				source = "cold";
			reverse_i32(h->names, h->nn);
			reverse_i32(h->items, h->ni);
		} else {
			for (uint32_t j = 0; j < ev->via.array.size; j++) {
				const msgpack_object *e = &ev->via.array.ptr[j], *nm = sx_arg(e, "name"), *it = sx_arg(e, "item");
				int32_t a = sx__idmap_get(&m->names, nm->via.str.ptr, nm->via.str.size, 0);
				if (a >= 0)
					h->names[h->nn++] = a;
				if (it && it->type == MSGPACK_OBJECT_STR) {
					int32_t b = sx__idmap_get(&m->items, it->via.str.ptr, it->via.str.size, 0);
					if (b >= 0)
						h->items[h->ni++] = b;
				}
			}
		}
		if ((rc = sx__behaviour_next(m, h->names, h->nn, p)) < 0)
			break;
		for (size_t c = 0; c < ns; c++)
			ix[c] = (struct prob_ix){p[c], (int32_t)c};
		qsort(ix, ns, sizeof(*ix), prob_cmp);
		size_t shown = (size_t)na < ns ? (size_t)na : ns;
		int got = 0;
		if (h->ni && topn > 0 && (got = sx__behaviour_items(m, h->items, h->ni, (size_t)topn, out, sc)) < 0) {
			rc = got;
			break;
		}
		msgpack_pack_map(pk, 4 - !(us && us->type == MSGPACK_OBJECT_STR));
		if (us && us->type == MSGPACK_OBJECT_STR) {
			sx_pack_key(pk, "user");
			sx_pack_strn(pk, us->via.str.ptr, us->via.str.size);
		}
		sx_pack_kv_str(pk, "source", source);
		sx_pack_key(pk, "next_actions");
		msgpack_pack_array(pk, shown);
		for (size_t c = 0; c < shown; c++) {
			msgpack_pack_map(pk, 2);
			sx_pack_key(pk, "action");
			sx_pack_strn(pk, m->names.ids[ix[c].c], m->names.lens[ix[c].c]);
			sx_pack_kv_double(pk, "probability", ix[c].p);
		}
		sx_pack_key(pk, "items");
		msgpack_pack_array(pk, (size_t)got);
		for (int j = 0; j < got; j++) {
			msgpack_pack_map(pk, 2);
			sx_pack_key(pk, "item");
			sx_pack_strn(pk, m->items.ids[out[j]], m->items.lens[out[j]]);
			sx_pack_kv_double(pk, "score", sc[j]);
		}
		if (mo && mo->has_ref) {
			mo->bins[sx__models_bin(m->ref_edges, ix[0].p)] += 1;
			mo->scored++;
		}
	}
	free(p), free(sc), free(ix), free(out), free(h);
	return rc;
}

static int m_predict(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "alias", "version", "inputs", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	uint32_t version;
	int rc;
	SX_UNUSED(ud);
	uint64_t t0 = sx_now_ns();
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = target_args(args, name, alias, &version, 0)) < 0)
		return rc;
	const msgpack_object *inputs = sx_arg(args, "inputs");
	if (!inputs || inputs->type == MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "argument 'inputs' is required");
	struct sx_model *m = load(name, version);
	if (!m)
		return sx_diag_last_code();
	struct monitor *mo = monitor_of(m);
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", m->version);
	sx_pack_key(pk, "alias");
	if (alias[0] || !sx_arg(args, "version"))
		sx_pack_str(pk, alias[0] ? alias : "production");
	else
		msgpack_pack_nil(pk);
	switch (m->type) {
	case SX_MODEL_ALS: rc = predict_als(m, mo, inputs, pk); break;
	case SX_MODEL_LOGISTIC: rc = predict_logistic(m, mo, inputs, pk); break;
	case SX_MODEL_TEXT: rc = predict_text(m, mo, inputs, pk); break;
	default: rc = predict_behaviour(m, mo, inputs, pk); break;
	}
	if (mo) {
		if (rc < 0) {
			mo->errors++;
		} else {
			double us = (double)(sx_now_ns() - t0) / 1000.0;
			mo->served++;
			mo->lat[lat_bucket(us)]++;
			mo->lat_sum_ms += us / 1000.0;
			check_rules(mo);
		}
	}
	sx_model_unref(m);
	SX_UNUSED(req);
	return rc;
}

/* ---- outcomes ---- */

static int parse_pred_id(const msgpack_object *o, uint64_t *id)
{
	char b[17];
	if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size != 16)
		return sx_diag_set(SX_EINVAL, "argument 'prediction_id' must be the 16-character id a prediction returned");
	memcpy(b, o->via.str.ptr, 16);
	b[16] = 0;
	for (int i = 0; i < 16; i++)
		if (!((b[i] >= '0' && b[i] <= '9') || (b[i] >= 'a' && b[i] <= 'f')))
			return sx_diag_set(SX_EINVAL, "argument 'prediction_id' must be the 16-character id a prediction returned");
	*id = strtoull(b, NULL, 16);
	return 0;
}

/* The class of an outcome label: logistic 0/1 (or a boolean); text one of
 * the model's labels (-1: a label the model does not know). */
static int outcome_class(const struct sx_model *m, const msgpack_object *o, int32_t *y)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "argument 'label' is required");
	if (m->type == SX_MODEL_LOGISTIC) {
		if (o->type == MSGPACK_OBJECT_BOOLEAN)
			*y = o->via.boolean;
		else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= 1)
			*y = (int32_t)o->via.u64;
		else
			return sx_diag_set(SX_EINVAL, "argument 'label' must be 0, 1, true or false for a logistic model");
		return 0;
	}
	char buf[32];
	const char *s;
	size_t n;
	switch (o->type) {
	case MSGPACK_OBJECT_STR: s = o->via.str.ptr, n = o->via.str.size; break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: n = (size_t)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)o->via.u64), s = buf; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: n = (size_t)snprintf(buf, sizeof(buf), "%lld", (long long)o->via.i64), s = buf; break;
	case MSGPACK_OBJECT_BOOLEAN: s = o->via.boolean ? "true" : "false", n = strlen(s); break;
	default: return sx_diag_set(SX_EINVAL, "argument 'label' must be a string, an integer or a boolean");
	}
	*y = -1;
	for (int32_t c = 0; c < m->n_classes; c++)
		if (strlen(m->classes[c]) == n && memcmp(m->classes[c], s, n) == 0)
			*y = c;
	return 0;
}

static int m_outcome(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "alias", "version", "prediction_id", "inputs", "label", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	uint32_t version = 0;
	uint64_t id = 0;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0)
		return rc;
	const msgpack_object *pid = sx_arg(args, "prediction_id"), *inputs = sx_arg(args, "inputs");
	int by_id = pid && pid->type != MSGPACK_OBJECT_NIL, by_inputs = inputs && inputs->type != MSGPACK_OBJECT_NIL;
	if (by_id == by_inputs)
		return sx_diag_set(SX_EINVAL, "give 'prediction_id' or 'inputs' (one of them)");
	if (!sx_arg(args, "label") || sx_arg(args, "label")->type == MSGPACK_OBJECT_NIL)
		return sx_diag_set(SX_EINVAL, "argument 'label' is required");
	struct monitor *mo = NULL;
	struct served_pred *sp = NULL;
	struct sx_model *m;
	if (by_id) {
		if ((rc = parse_pred_id(pid, &id)) < 0)
			return rc;
		if (sx_arg(args, "version") || sx_arg(args, "alias"))
			return sx_diag_set(SX_EINVAL, "'prediction_id' names its version: no 'version' or 'alias'");
		for (struct monitor *x = monitors; x && !sp; x = x->next)
			if (x->ring && strcmp(x->name, name) == 0 && x->ring[id % PRED_RING].id == id)
				mo = x, sp = &x->ring[id % PRED_RING];
		if (!sp)
			return sx_diag_set(SX_ENOENT, "model '%s' served no prediction '%.16s' since the start, or it is older "
					   "than the last %d of its version", name, pid->via.str.ptr, PRED_RING);
		if (sp->joined)
			return sx_diag_set(SX_EEXIST, "prediction '%.16s' has its outcome already", pid->via.str.ptr);
		version = mo->version;
		if (!(m = load(name, version)))
			return sx_diag_last_code();
	} else {
		if ((rc = target_args(args, name, alias, &version, 0)) < 0)
			return rc;
		if (!(m = load(name, version)))
			return sx_diag_last_code();
	}
	int32_t y = -1, pred = 0;
	double p1 = NAN;
	if (m->type != SX_MODEL_LOGISTIC && m->type != SX_MODEL_TEXT) {
		rc = sx_diag_set(SX_ESTATE, "model '%s' is %s: outcomes are for logistic and text models", name,
				 sx__model_type_name(m->type));
		goto out;
	}
	if ((rc = outcome_class(m, sx_arg(args, "label"), &y)) < 0)
		goto out;
	if (by_id) {
		pred = sp->pred, p1 = sp->p1;
	} else if (m->type == SX_MODEL_LOGISTIC) {
		double *x = malloc(m->d * sizeof(double));
		const msgpack_object *row = inputs;
		/* [[x...]] or [{...}]: one row, as model.predict takes it */
		if (row->type == MSGPACK_OBJECT_ARRAY && row->via.array.size == 1 &&
		    (row->via.array.ptr[0].type == MSGPACK_OBJECT_ARRAY || row->via.array.ptr[0].type == MSGPACK_OBJECT_MAP))
			row = &row->via.array.ptr[0];
		rc = x ? row_of(m, row, 0, x) : sx_diag_set(SX_ENOMEM, "out of memory");
		if (rc == 0)
			rc = sx_model_predict_proba(m, x, NULL, NULL, &p1);
		free(x);
		if (rc < 0)
			goto out;
		pred = p1 >= 0.5;
	} else {
		const char *s;
		size_t len;
		double *p = malloc((size_t)m->n_classes * sizeof(double));
		rc = p ? text_input(inputs, 0, &s, &len) : sx_diag_set(SX_ENOMEM, "out of memory");
		if (rc == 0)
			rc = sx__text_predict(m, s, len, p);
		if (rc == 0) {
			pred = sx_text_argmax(p, m->n_classes);
			p1 = m->n_classes == 2 ? p[1] : NAN;
		}
		free(p);
		if (rc < 0)
			goto out;
	}
	if (!mo && !(mo = monitor_of(m))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	int binary = m->type == SX_MODEL_LOGISTIC || m->n_classes == 2;
	if ((rc = outcome_add(mo, binary ? p1 : NAN, binary && y >= 0 ? y : 2, pred == y)) < 0)
		goto out;
	if (sp)
		sp->joined = 1;
	msgpack_pack_map(pk, 6);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_uint(pk, "version", m->version);
	sx_pack_key(pk, "prediction_id");
	if (by_id)
		sx_pack_strn(pk, pid->via.str.ptr, pid->via.str.size);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "predicted");
	if (m->type == SX_MODEL_LOGISTIC)
		msgpack_pack_int32(pk, pred);
	else
		sx_pack_str(pk, m->classes[pred]);
	sx_pack_kv_bool(pk, "correct", pred == y);
	sx_pack_key(pk, "outcomes");
	pack_rolling(pk, mo);
out:
	sx_model_unref(m);
	return rc;
}

/* ---- export and import ---- */

static int write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return sx_diag_set(SX_EIO, "cannot write '%s': %s", path, strerror(errno));
	int ok = fwrite(data, 1, len, f) == len;
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : sx_diag_set(SX_EIO, "cannot write '%s': %s", path, strerror(errno));
}

static int export_npy(const struct sx_model *m, const char *dir, msgpack_packer *pk)
{
	char path[1200];
	int rc;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return sx_diag_set(SX_EIO, "cannot create '%s': %s", dir, strerror(errno));
	/* The metadata and id lists go beside the arrays, as JSON. */
	char *json = sx__models_bundle_json(m);
	if (!json)
		return SX_ENOMEM;
	snprintf(path, sizeof(path), "%s/model.json", dir);
	rc = write_file(path, json, strlen(json));
	free(json);
	if (rc < 0)
		return rc;
	const char *files[3];
	size_t nf = 0;
	if (m->type == SX_MODEL_ALS) {
		snprintf(path, sizeof(path), "%s/user_factors.npy", dir);
		if ((rc = sx__npy_write(path, sx_als_user_factors(m->als), 4, (uint64_t)m->n_users, (uint64_t)m->k, 2)) < 0)
			return rc;
		snprintf(path, sizeof(path), "%s/item_factors.npy", dir);
		if ((rc = sx__npy_write(path, sx_als_item_factors(m->als), 4, (uint64_t)m->n_items, (uint64_t)m->k, 2)) < 0)
			return rc;
		files[nf++] = "user_factors.npy", files[nf++] = "item_factors.npy";
	} else {
		snprintf(path, sizeof(path), "%s/coef.npy", dir);
		if ((rc = sx__npy_write(path, m->coef, 8, m->d, 0, 1)) < 0)
			return rc;
		files[nf++] = "coef.npy";
	}
	files[nf++] = "model.json";
	msgpack_pack_map(pk, 5);
	sx_pack_kv_str(pk, "name", m->name);
	sx_pack_kv_uint(pk, "version", m->version);
	sx_pack_kv_str(pk, "format", "npy");
	sx_pack_kv_str(pk, "path", dir);
	sx_pack_key(pk, "files");
	msgpack_pack_array(pk, nf);
	for (size_t i = 0; i < nf; i++)
		sx_pack_str(pk, files[i]);
	return 0;
}

static int m_export(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "version", "alias", "format", "path", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1], format[16] = "msgpack", path[1024] = "";
	uint32_t version;
	int rc;
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = target_args(args, name, alias, &version, 1)) < 0 ||
	    (rc = sx_arg_cstr(args, "format", 0, format, sizeof(format))) < 0 ||
	    (rc = sx_arg_cstr(args, "path", 0, path, sizeof(path))) < 0)
		return rc;
	int fmt = !strcmp(format, "msgpack") ? 0 : !strcmp(format, "json") ? 1 : !strcmp(format, "npy") ? 2 : -1;
	if (fmt < 0)
		return sx_diag_set(SX_EINVAL, "argument 'format' must be \"msgpack\", \"json\" or \"npy\"");
	if (path[0] && req->role < SX_ROLE_ADMIN)
		return sx_diag_set(SX_EACCES, "writing files on the server ('path') needs the admin role");
	if (fmt == 2 && !path[0])
		return sx_diag_set(SX_EINVAL, "format \"npy\" needs 'path', a directory on the server");
	struct sx_model *m = load(name, version);
	if (!m)
		return sx_diag_last_code();
	if (fmt == 2 && m->type != SX_MODEL_ALS && m->type != SX_MODEL_LOGISTIC) {
		sx_model_unref(m);
		return sx_diag_set(SX_EINVAL, "format \"npy\" is for als and logistic models");
	}
	if (fmt == 2) {
		rc = export_npy(m, path, pk);
	} else {
		msgpack_sbuffer sb;
		msgpack_packer p2;
		char *json = NULL;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&p2, &sb, msgpack_sbuffer_write);
		if (fmt == 1)
			rc = (json = sx__models_bundle_json(m)) ? 0 : SX_ENOMEM;
		else
			sx__models_pack_bundle(&p2, m, 1);
		const void *data = fmt ? (const void *)json : (const void *)sb.data;
		size_t len = fmt ? (json ? strlen(json) : 0) : sb.size;
		if (rc == 0 && path[0])
			rc = write_file(path, data, len);
		if (rc == 0) {
			msgpack_pack_map(pk, 5);
			sx_pack_kv_str(pk, "name", name);
			sx_pack_kv_uint(pk, "version", version);
			sx_pack_kv_str(pk, "format", format);
			sx_pack_kv_uint(pk, "bytes", len);
			if (path[0]) {
				sx_pack_kv_str(pk, "path", path);
			} else {
				sx_pack_key(pk, "bundle");
				if (fmt)
					sx_pack_strn(pk, json, len);
				else {
					msgpack_pack_bin(pk, len);
					msgpack_pack_bin_body(pk, data, len);
				}
			}
		}
		free(json);
		msgpack_sbuffer_destroy(&sb);
	}
	sx_model_unref(m);
	return rc;
}

static int m_import(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"bundle", "name", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o;
	const msgpack_object *b;
	struct sx_model *m = NULL;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 0, name, NULL)) < 0)
		return rc;
	if (!(b = sx_arg(args, "bundle")))
		return sx_diag_set(SX_EINVAL, "argument 'bundle' is required");
	msgpack_sbuffer_init(&sb);
	msgpack_zone_init(&z, 4096);
	if (b->type == MSGPACK_OBJECT_STR) {
		if ((rc = sx__models_json_to_msgpack(b->via.str.ptr, b->via.str.size, &sb)) == 0 &&
		    msgpack_unpack(sb.data, sb.size, NULL, &z, &o) != MSGPACK_UNPACK_SUCCESS)
			rc = sx_diag_set(SX_EINVAL, "bundle: bad JSON");
		b = &o;
	} else if (b->type == MSGPACK_OBJECT_BIN) {
		size_t off = 0;
		if (msgpack_unpack(b->via.bin.ptr, b->via.bin.size, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
		    off != b->via.bin.size)
			rc = sx_diag_set(SX_EINVAL, "bundle: the bytes are not one MessagePack object");
		b = &o;
	} else if (b->type != MSGPACK_OBJECT_MAP) {
		rc = sx_diag_set(SX_EINVAL, "argument 'bundle' must be a map, MessagePack bytes or JSON text");
	}
	if (rc == 0 && !(m = sx__models_decode_bundle(b)))
		rc = sx_diag_last_code() ? sx_diag_last_code() : SX_EINVAL;
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return rc;
	uint32_t from_version = m->version;
	if (name[0])
		snprintf(m->name, sizeof(m->name), "%s", name);
	snprintf(m->status, sizeof(m->status), "ready");
	snprintf(m->trigger, sizeof(m->trigger), "import");
	m->parent = 0;
	if ((rc = register_version(m)) < 0) {
		sx_model_unref(m);
		return rc;
	}
	cache_add(m);
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "name", m->name);
	sx_pack_kv_uint(pk, "version", m->version);
	sx_pack_kv_str(pk, "type", sx__model_type_name(m->type));
	sx_pack_kv_uint(pk, "imported_from_version", from_version);
	sx_model_unref(m);
	return 0;
}

/* ---- retraining policies ---- */

struct policy {
	double every_hours, drift_above;
	int64_t after_events;
	int promote_if;
	char alias[SX_MODELS_NAME_MAX + 1];
	int64_t last_run;
	uint64_t events_at_last;
	int enabled;
	char last_error[200];
};

static int policy_get(const char *name, struct policy *p, msgpack_sbuffer *params)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	struct sx_val v;
	msgpack_zone z;
	msgpack_object o;
	int rc = sx_store_get(sx__models_eng->store, SX_T_MODELS, k, sx__models_policy_key(k, name), &v);
	if (rc == SX_ENOENT)
		return sx_diag_set(SX_ENOENT, "model '%s' has no retraining policy", name);
	if (rc < 0)
		return rc;
	memset(p, 0, sizeof(*p));
	msgpack_zone_init(&z, 1024);
	if ((rc = unpack(v.data, v.len, &z, &o)) == 0) {
		p->every_hours = mnum(&o, "every_hours", 0);
		p->drift_above = mnum(&o, "drift_above", 0);
		p->after_events = mint(&o, "after_events", 0);
		p->promote_if = PROMOTE_NOT_WORSE;
		const msgpack_object *s = mget(&o, "promote_if");
		for (int i = 0; s && i < 3; i++)
			if (sx_obj_streq(s, promote_names[i]))
				p->promote_if = i;
		s = mget(&o, "alias");
		snprintf(p->alias, sizeof(p->alias), "%.*s", s && s->type == MSGPACK_OBJECT_STR ? (int)s->via.str.size : 10,
			 s && s->type == MSGPACK_OBJECT_STR ? s->via.str.ptr : "production");
		p->last_run = mint(&o, "last_run", 0);
		p->events_at_last = (uint64_t)mint(&o, "events_at_last", 0);
		p->enabled = !mget(&o, "enabled") || mget(&o, "enabled")->type != MSGPACK_OBJECT_BOOLEAN ||
			     mget(&o, "enabled")->via.boolean;
		s = mget(&o, "last_error");
		snprintf(p->last_error, sizeof(p->last_error), "%.*s",
			 s && s->type == MSGPACK_OBJECT_STR ? (int)s->via.str.size : 0,
			 s && s->type == MSGPACK_OBJECT_STR ? s->via.str.ptr : "");
		const msgpack_object *pa = mget(&o, "params");
		if (params) {
			msgpack_packer pk;
			msgpack_packer_init(&pk, params, msgpack_sbuffer_write);
			if (pa && pa->type == MSGPACK_OBJECT_MAP)
				sx_pack_object(&pk, pa);
			else
				msgpack_pack_map(&pk, 0);
		}
	}
	msgpack_zone_destroy(&z);
	return rc;
}

static void pack_policy(msgpack_packer *pk, const char *name, const struct policy *p, const msgpack_sbuffer *params)
{
	msgpack_pack_map(pk, 11);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_key(pk, "every_hours");
	if (p->every_hours > 0)
		msgpack_pack_double(pk, p->every_hours);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "after_events");
	if (p->after_events > 0)
		msgpack_pack_int64(pk, p->after_events);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "drift_above");
	if (p->drift_above > 0)
		msgpack_pack_double(pk, p->drift_above);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_str(pk, "promote_if", promote_names[p->promote_if]);
	sx_pack_kv_str(pk, "alias", p->alias);
	sx_pack_key(pk, "params");
	if (params && params->size)
		msgpack_sbuffer_write(pk->data, params->data, params->size);
	else
		msgpack_pack_map(pk, 0);
	sx_pack_kv_int(pk, "last_run", p->last_run);
	sx_pack_kv_uint(pk, "events_at_last", p->events_at_last);
	sx_pack_kv_bool(pk, "enabled", p->enabled);
	sx_pack_key(pk, "last_error");
	if (p->last_error[0])
		sx_pack_str(pk, p->last_error);
	else
		msgpack_pack_nil(pk);
}

static int policy_put(const char *name, const struct policy *p, const msgpack_sbuffer *params)
{
	uint8_t k[SX_MODELS_KEY_MAX];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_policy(&pk, name, p, params);
	int rc = put_packed(SX_T_MODELS, k, sx__models_policy_key(k, name), &sb);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* 1 if string key k is among the first no keys of map over. */
static int replaced(const msgpack_object *k, const msgpack_object *over, uint32_t no)
{
	int r = 0;
	for (uint32_t j = 0; j < no; j++) {
		const msgpack_object *ko = &over->via.map.ptr[j].key;
		r |= k->type == MSGPACK_OBJECT_STR && ko->type == MSGPACK_OBJECT_STR && k->via.str.size == ko->via.str.size &&
		     !memcmp(k->via.str.ptr, ko->via.str.ptr, k->via.str.size);
	}
	return r;
}

/* Base params of the aliased version with the policy's overrides on top. */
static int merged_params(const msgpack_object *base, const msgpack_object *over, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	uint32_t n = 0;
	uint32_t nb = base && base->type == MSGPACK_OBJECT_MAP ? base->via.map.size : 0;
	uint32_t no = over && over->type == MSGPACK_OBJECT_MAP ? over->via.map.size : 0;
	for (uint32_t i = 0; i < nb; i++)
		n += !replaced(&base->via.map.ptr[i].key, over, no);
	msgpack_pack_map(&pk, n + no);
	for (uint32_t i = 0; i < nb; i++) {
		const msgpack_object *k = &base->via.map.ptr[i].key;
		if (!replaced(k, over, no)) {
			sx_pack_object(&pk, k);
			sx_pack_object(&pk, &base->via.map.ptr[i].val);
		}
	}
	for (uint32_t j = 0; j < no; j++) {
		sx_pack_object(&pk, &over->via.map.ptr[j].key);
		sx_pack_object(&pk, &over->via.map.ptr[j].val);
	}
	return 0;
}

/* Starts the retraining of a policy; returns the job id. */
static int64_t retrain(const char *name, struct policy *p, const msgpack_sbuffer *over, const char *trigger)
{
	uint32_t version;
	struct head h;
	msgpack_zone z;
	msgpack_object meta, ov;
	msgpack_sbuffer params;
	int rc;
	if ((rc = head_get(name, &h)) < 0)
		return rc;
	if (h.type != SX_MODEL_ALS && h.type != SX_MODEL_BEHAVIOUR)
		return sx_diag_set(SX_ESTATE, "model '%s' is %s: only als and behaviour models retrain from events", name,
				   sx__model_type_name(h.type));
	if (running_has(name))
		return sx_diag_set(SX_EBUSY, "model '%s' is training already", name);
	if ((rc = resolve(name, p->alias, 0, &version)) < 0) {
		if (rc != SX_ENOENT || h.next_version <= 1)
			return rc;
		version = h.next_version - 1;
	}
	msgpack_sbuffer dsb;
	msgpack_zone_init(&z, 4096);
	msgpack_sbuffer_init(&params);
	msgpack_sbuffer_init(&dsb);
	int64_t id;
	if ((rc = meta_get(name, version, &z, &meta)) < 0) {
		id = rc;
		goto out;
	}
	ov.type = MSGPACK_OBJECT_NIL;
	if (over && over->size && (rc = unpack(over->data, over->size, &z, &ov)) < 0) {
		id = rc;
		goto out;
	}
	merged_params(mget(&meta, "params"), &ov, &params);
	msgpack_object po, data;
	if ((rc = unpack(params.data, params.size, &z, &po)) < 0) {
		id = rc;
		goto out;
	}
	/* The same window start; up to now. */
	msgpack_packer dpk;
	msgpack_packer_init(&dpk, &dsb, msgpack_sbuffer_write);
	const msgpack_object *from = mget(mget(&meta, "data"), "from");
	msgpack_pack_map(&dpk, 1);
	sx_pack_key(&dpk, "from");
	if (from)
		sx_pack_object(&dpk, from);
	else
		msgpack_pack_nil(&dpk);
	rc = unpack(dsb.data, dsb.size, &z, &data);
	if (rc < 0) {
		id = rc;
		goto out;
	}
	id = start_training(h.type, name, &po, &data, p->promote_if, p->alias, trigger);
out:
	msgpack_sbuffer_destroy(&params);
	msgpack_sbuffer_destroy(&dsb);
	msgpack_zone_destroy(&z);
	return id;
}

static int m_policy(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", "every_hours", "after_events", "drift_above", "promote_if",
		"alias", "params", "enabled", NULL};
	char name[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	struct policy p;
	struct head h;
	msgpack_sbuffer params;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = name_arg(args, "alias", 0, alias, NULL)) < 0 || (rc = head_get(name, &h)) < 0)
		return rc;
	msgpack_sbuffer_init(&params);
	rc = policy_get(name, &p, &params);
	if (rc == SX_ENOENT) {
		memset(&p, 0, sizeof(p));
		p.promote_if = PROMOTE_NOT_WORSE;
		snprintf(p.alias, sizeof(p.alias), "production");
		p.enabled = 1;
		p.last_run = sx_wall_ms();
		p.events_at_last = events_count();
		msgpack_sbuffer_clear(&params);
		rc = 0;
	}
	if (rc < 0)
		goto out;
	int changed = args && args->type == MSGPACK_OBJECT_MAP && args->via.map.size > 1;
	double eh = p.every_hours, da = p.drift_above;
	int64_t ae = p.after_events;
	if ((rc = sx_arg_num(args, "every_hours", 0, &eh)) < 0 || (rc = sx_arg_num(args, "drift_above", 0, &da)) < 0 ||
	    (rc = sx_arg_int(args, "after_events", 0, &ae)) < 0 || (rc = promote_parse(args, "promote_if", p.promote_if, &p.promote_if)) < 0 ||
	    (rc = sx_arg_bool(args, "enabled", 0, &p.enabled)) < 0)
		goto out;
	if (!isfinite(eh) || eh < 0 || eh > 24 * 366 || !isfinite(da) || da < 0 || ae < 0) {
		rc = sx_diag_set(SX_EINVAL, "every_hours must be in [0, 8784], drift_above and after_events >= 0");
		goto out;
	}
	p.every_hours = eh, p.drift_above = da, p.after_events = ae;
	if (alias[0])
		snprintf(p.alias, sizeof(p.alias), "%s", alias);
	const msgpack_object *po = NULL;
	if ((rc = sx_arg_map(args, "params", 0, &po)) < 0)
		goto out;
	if (po) {
		/* Checked now so that a bad override fails here, not at every tick. */
		struct sx_train *t = sx__train_prepare(h.type, name, po, NULL);
		if (!t && (h.type == SX_MODEL_ALS || h.type == SX_MODEL_BEHAVIOUR)) {
			rc = sx_diag_last_code();
			goto out;
		}
		sx__train_free(t);
		msgpack_sbuffer_clear(&params);
		msgpack_packer p2;
		msgpack_packer_init(&p2, &params, msgpack_sbuffer_write);
		sx_pack_object(&p2, po);
	}
	if (changed && (rc = policy_put(name, &p, &params)) < 0)
		goto out;
	pack_policy(pk, name, &p, &params);
out:
	msgpack_sbuffer_destroy(&params);
	return rc;
}

static int m_retrain(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	struct policy p;
	msgpack_sbuffer params;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0)
		return rc;
	msgpack_sbuffer_init(&params);
	if ((rc = policy_get(name, &p, &params)) < 0) {
		msgpack_sbuffer_destroy(&params);
		return rc;
	}
	int64_t id = retrain(name, &p, &params, "manual");
	if (id >= 0) {
		p.last_run = sx_wall_ms();
		p.events_at_last = events_count();
		rc = policy_put(name, &p, &params);
	}
	msgpack_sbuffer_destroy(&params);
	if (id < 0)
		return (int)id;
	if (rc < 0)
		return rc;
	msgpack_pack_map(pk, 2);
	sx_pack_kv_int(pk, "job", id);
	sx_pack_kv_str(pk, "name", name);
	return 0;
}

static double production_psi(const char *name, const char *alias)
{
	uint32_t v;
	if (resolve(name, alias, 0, &v) < 0)
		return NAN;
	for (struct monitor *mo = monitors; mo; mo = mo->next)
		if (mo->version == v && strcmp(mo->name, name) == 0 && mo->served >= 100)
			return monitor_psi(mo);
	return NAN;
}

static void policy_tick(uv_timer_t *t)
{
	SX_UNUSED(t);
	struct name_list l = {0};
	if (names_with('p', &l) < 0) {
		free(l.names);
		sx_store_read_end(sx__models_eng->store);
		return;
	}
	uint64_t events = 0;
	int have_events = 0;
	for (size_t i = 0; i < l.n; i++) {
		struct policy p;
		msgpack_sbuffer params;
		const char *name = l.names[i];
		msgpack_sbuffer_init(&params);
		if (policy_get(name, &p, &params) < 0 || !p.enabled || running_has(name)) {
			msgpack_sbuffer_destroy(&params);
			continue;
		}
		if (!have_events)
			events = events_count(), have_events = 1;
		const char *why = NULL;
		int64_t now = sx_wall_ms();
		double psi;
		if (p.every_hours > 0 && (double)(now - p.last_run) >= p.every_hours * 3600000.0)
			why = "schedule";
		else if (p.after_events > 0 && events >= p.events_at_last + (uint64_t)p.after_events)
			why = "events";
		else if (p.drift_above > 0 && !isnan(psi = production_psi(name, p.alias)) && psi > p.drift_above)
			why = "drift";
		if (why) {
			int64_t id = retrain(name, &p, &params, why);
			p.last_run = now;
			p.events_at_last = events;
			if (id < 0)
				snprintf(p.last_error, sizeof(p.last_error), "%s", sx_diag_last());
			else
				p.last_error[0] = 0;
			if (id >= 0 && !strcmp(why, "drift"))
				monitors_drop(name);
			policy_put(name, &p, &params);
		}
		msgpack_sbuffer_destroy(&params);
	}
	free(l.names);
	sx_store_read_end(sx__models_eng->store);
}

/* ---- aliases listing ---- */

struct alias_hist_list {
	msgpack_packer *pk;
	const char *name;
	size_t n;
	int pack;
};

static int alias_hist_cb(const char *alias, uint32_t version, void *ud)
{
	struct alias_hist_list *l = ud;
	struct alias a;
	SX_UNUSED(version);
	l->n++;
	if (!l->pack)
		return 0;
	int rc = alias_get(l->name, alias, &a);
	if (rc < 0)
		return rc;
	msgpack_pack_map(l->pk, 4);
	sx_pack_kv_str(l->pk, "alias", alias);
	sx_pack_kv_uint(l->pk, "version", a.version);
	sx_pack_kv_int(l->pk, "updated", a.updated);
	sx_pack_key(l->pk, "history");
	pack_alias_history(l->pk, &a);
	return 0;
}

static int m_aliases(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"name", NULL};
	char name[SX_MODELS_NAME_MAX + 1];
	struct head h;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = name_arg(args, "name", 1, name, NULL)) < 0 ||
	    (rc = head_get(name, &h)) < 0)
		return rc;
	struct alias_hist_list l = {pk, name, 0, 0};
	if ((rc = aliases_each(name, alias_hist_cb, &l)) < 0)
		return rc;
	msgpack_pack_array(pk, l.n);
	l.pack = 1;
	return aliases_each(name, alias_hist_cb, &l);
}

/* ---- plugin ---- */

static int rules_scan_cb(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	char name[SX_MODELS_NAME_MAX + 1];
	SX_UNUSED(ud);
	size_t n = key->len - 1;
	if (n == 0 || n > SX_MODELS_NAME_MAX)
		return 0;
	memcpy(name, (const char *)key->data + 1, n);
	name[n] = 0;
	return rules_load_one(name, val->data, val->len) < 0 ? 0 : 0;
}

/* Alias moves, archives and deletions are admin actions: each success is
 * recorded in the audit log with its arguments (model names and versions
 * only). ud is the method's real handler. */
static int m_audited(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	sx_method_fn fn = *(sx_method_fn *)ud;
	int rc = fn(req, args, pk, NULL);
	if (rc == 0)
		rc = sx_audit_record(sx__models_eng, req->method, args && args->type == MSGPACK_OBJECT_MAP ? args : NULL);
	return rc;
}

static const sx_method_fn m_promote_fn = m_promote;
static const sx_method_fn m_rollback_fn = m_rollback;
static const sx_method_fn m_archive_fn = m_archive;
static const sx_method_fn m_delete_fn = m_delete;

static int start(struct sx_engine *e)
{
	sx__models_eng = e;
	alias_generation = 1;
	/* Ids grow across restarts, so an id from before one never joins a
	 * prediction made after it. */
	pred_seq = (uint64_t)sx_wall_ms() << 10;
	uint8_t lo = 'r', hi = 's';
	int rc = sx_store_scan(e->store, SX_T_MODELS, &lo, 1, &hi, 1, 0, rules_scan_cb, NULL);
	sx_store_read_end(e->store);
	if (rc < 0)
		return rc;
	const struct sx_method methods[] = {
		{"model.train", SX_ROLE_WRITER, m_train, NULL, "train a model on the thread pool {type, name, params?, data?, promote_if?, alias?} or {recipe, args?, name?, params?, ...}"},
		{"model.list", SX_ROLE_READER, m_list, NULL, "models, or one model's versions {name?}"},
		{"model.get", SX_ROLE_READER, m_get, NULL, "a version's metadata {name, version|alias}"},
		{"model.promote", SX_ROLE_WRITER, m_audited, (void *)&m_promote_fn, "point an alias at a version {name, version, alias?}"},
		{"model.rollback", SX_ROLE_WRITER, m_audited, (void *)&m_rollback_fn, "return an alias to its previous version {name, alias?}"},
		{"model.aliases", SX_ROLE_READER, m_aliases, NULL, "a model's aliases with their history {name}"},
		{"model.archive", SX_ROLE_WRITER, m_audited, (void *)&m_archive_fn, "archive a version {name, version}"},
		{"model.delete", SX_ROLE_WRITER, m_audited, (void *)&m_delete_fn, "delete a version no alias points to {name, version}"},
		{"model.predict", SX_ROLE_READER, m_predict, NULL, "serve a version {name, alias?|version?, inputs}"},
		{"model.monitor", SX_ROLE_READER, m_monitor, NULL, "predictions, latency, drift, outcomes per version {name}"},
		{"model.alerts", SX_ROLE_WRITER, m_alerts, NULL, "alert thresholds {name, psi_above?, p99_ms_above?, min_samples?, accuracy_below?, auc_below?, min_outcomes?, outcome_window?}"},
		{"model.outcome", SX_ROLE_WRITER, m_outcome, NULL, "the true label of a served prediction {name, prediction_id | inputs, label, alias?|version?}"},
		{"model.export", SX_ROLE_READER, m_export, NULL, "a bundle {name, version|alias, format?, path?}"},
		{"model.import", SX_ROLE_WRITER, m_import, NULL, "register a bundle as a new version {bundle, name?}"},
		{"model.policy", SX_ROLE_WRITER, m_policy, NULL, "retraining policy {name, every_hours?, after_events?, drift_above?, promote_if?, params?}"},
		{"model.retrain", SX_ROLE_WRITER, m_retrain, NULL, "run a model's retraining policy now {name}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0)
			return SX_ENOMEM;
	if ((rc = sx__models_recipes_start(e)) < 0)
		return rc;
	if ((rc = sx_privacy_register_eraser("models", erase_user, NULL)) < 0 ||
	    (rc = sx_privacy_register_exporter("models", export_user, NULL)) < 0)
		return rc;
	uv_timer_init(e->loop, &policy_timer);
	uv_timer_start(&policy_timer, policy_tick, POLICY_TICK_MS, POLICY_TICK_MS);
	uv_unref((uv_handle_t *)&policy_timer);
	timer_started = 1;
	return 0;
}

static void stop(struct sx_engine *e)
{
	alias_generation = 0;
	if (timer_started) {
		uv_timer_stop(&policy_timer);
		uv_close((uv_handle_t *)&policy_timer, NULL);
		timer_started = 0;
	}
	for (struct running *r = running; r; r = r->next)
		sx_jobs_cancel(e->jobs, r->job);
	while (running)
		uv_run(e->loop, UV_RUN_ONCE);
	while (cache) {
		struct cached *c = cache;
		cache = c->next;
		sx_model_unref(c->m);
		free(c);
	}
	while (monitors) {
		struct monitor *mo = monitors;
		monitors = mo->next;
		monitor_free(mo);
	}
	while (rules) {
		struct rules *r = rules;
		rules = r->next;
		free(r);
	}
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	size_t n = 0, t = 0;
	SX_UNUSED(e);
	for (struct cached *c = cache; c; c = c->next)
		n++;
	for (struct running *r = running; r; r = r->next)
		t++;
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "loaded", n);
	sx_pack_kv_uint(pk, "training", t);
}

const struct sx_plugin sx_plugin_models = {"models", start, stop, info};
