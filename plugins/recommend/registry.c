/* The model registry's ALS as the factor source: recommend.config, the
 * re-acquisition when an alias moves, the item-factor index built on the
 * swap (on the pool for large catalogues), and the plugin's own model kept
 * aside as the fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/jobs.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/models/models.h"
#include "plugins/recommend/internal.h"
#include "store/store.h"

#define CONFIG_KEY "rec/config"
#define DEFAULT_MODEL "recommend"
#define DEFAULT_ALIAS "production"
#define DEFAULT_POOL_ABOVE 20000

struct reg_source {
	struct sx_rec_factor_source fs;
	struct sx_model *m; /* referenced on the loop thread */
	struct sx_hnsw *index;
	int32_t *rec2m;     /* fs.n_items: the model row of each catalogue item, or -1 */
	int32_t *m2rec;     /* n_rows: the catalogue item of each model row, or -1 */
	size_t n_rows;
	uint32_t mapped;
	uint32_t version;
	char desc[SX_MODELS_NAME_MAX + 64];
};

static struct {
	char model[SX_MODELS_NAME_MAX + 1]; /* "": the own model only */
	char alias[SX_MODELS_NAME_MAX + 1];
	int64_t pool_above;
	uint64_t seen;                /* sx_models_generation() at the last sync; 0: sync due */
	struct reg_source *live;      /* serving, owned by the live state */
	struct rec_model *own_aside;  /* the own model while the registry's serves */
	struct reg_source *building;  /* in a job; owned by it */
	int64_t job;
	char status[256];
} G;

/* ---- the source ---- */

static void reg_free(struct reg_source *r)
{
	if (!r)
		return;
	sx_hnsw_free(r->index);
	free(r->rec2m), free(r->m2rec);
	sx_model_unref(r->m);
	free(r);
}

static void fs_release(void *ud)
{
	struct reg_source *r = ud;
	if (G.live == r)
		G.live = NULL;
	reg_free(r);
}

/* Catalogue indexes -> model rows; items without factors are dropped. */
static size_t translate(const struct reg_source *r, const int32_t *items, const float *w, size_t n, int32_t *mi,
			float *mw)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (items[i] >= 0 && (uint32_t)items[i] < r->fs.n_items && r->rec2m[items[i]] >= 0)
			mi[k] = r->rec2m[items[i]], mw[k++] = w[i];
	return k;
}

static int fs_fold_in(void *ud, const int32_t *items, const float *w, size_t n, float *out)
{
	struct reg_source *r = ud;
	int32_t *mi = malloc(n * sizeof(int32_t) + 1);
	float *mw = malloc(n * sizeof(float) + 1);
	int rc = SX_ENOMEM;
	if (mi && mw)
		rc = sx_als_fold_in(sx_model_als(r->m), mi, mw, translate(r, items, w, n, mi, mw), out);
	free(mi), free(mw);
	return rc;
}

static int fs_explain(void *ud, const int32_t *items, const float *w, size_t n, int32_t item, size_t top,
		      int32_t *oi, float *oc, double *total)
{
	struct reg_source *r = ud;
	*total = 0;
	if (item < 0 || (uint32_t)item >= r->fs.n_items || r->rec2m[item] < 0)
		return 0;
	int32_t *mi = malloc(n * sizeof(int32_t) + 1);
	float *mw = malloc(n * sizeof(float) + 1);
	int rc = SX_ENOMEM;
	if (mi && mw) {
		size_t k = translate(r, items, w, n, mi, mw);
		rc = k ? sx_als_explain(sx_model_als(r->m), mi, mw, k, r->rec2m[item], top, oi, oc, total) : 0;
		/* every contributor is one of the inputs, so each maps back */
		for (int i = 0; i < rc; i++)
			oi[i] = r->m2rec[oi[i]];
	}
	free(mi), free(mw);
	return rc;
}

static int fs_explain_many(void *ud, const int32_t *items, const float *w, size_t n, const int32_t *targets,
			   size_t nt, size_t top, int32_t *oi, float *oc, double *total, int *count)
{
	struct reg_source *r = ud;
	int32_t *mi = malloc(n * sizeof(int32_t) + 1);
	float *mw = malloc(n * sizeof(float) + 1);
	int32_t *mt = malloc(nt * sizeof(int32_t) + 1);
	size_t *at = malloc(nt * sizeof(size_t) + 1);
	int rc = SX_ENOMEM;
	if (mi && mw && mt && at) {
		size_t k = translate(r, items, w, n, mi, mw), m = 0;
		for (size_t t = 0; t < nt; t++) {
			total[t] = 0, count[t] = 0;
			if (targets[t] >= 0 && (uint32_t)targets[t] < r->fs.n_items && r->rec2m[targets[t]] >= 0)
				at[m] = t, mt[m++] = r->rec2m[targets[t]];
		}
		rc = 0;
		if (k && m) {
			/* results land at the compacted positions, then move to their targets' */
			rc = sx_als_explain_many(sx_model_als(r->m), mi, mw, k, mt, m, top, oi, oc, total, count);
			for (size_t j = m; rc == 0 && j-- > 0;) {
				size_t t = at[j];
				total[t] = total[j], count[t] = count[j];
				memmove(oi + t * top, oi + j * top, top * sizeof(*oi));
				memmove(oc + t * top, oc + j * top, top * sizeof(*oc));
				for (int i = 0; i < count[t]; i++)
					oi[t * top + i] = r->m2rec[oi[t * top + i]];
				if (t != j)
					total[j] = 0, count[j] = 0;
			}
		}
	}
	free(mi), free(mw), free(mt), free(at);
	return rc;
}

/* Loop thread: the id maps (the catalogue is the loop's). */
static struct reg_source *reg_new(struct sx_model *m)
{
	struct rec *R = sx__rec;
	const struct sx_als *als = sx_model_als(m);
	struct reg_source *r = calloc(1, sizeof(*r));
	if (!r || !als) {
		free(r);
		sx_model_unref(m);
		sx_diag_set(als ? SX_ENOMEM : SX_ESTATE, als ? "out of memory" : "model '%s' is not an ALS model",
			    sx_model_name(m));
		return NULL;
	}
	r->m = m;
	r->version = sx_model_version(m);
	r->n_rows = sx_model_n_items(m);
	r->fs.k = sx_als_k(als);
	r->fs.n_items = R->nitems;
	r->rec2m = malloc(R->nitems * sizeof(int32_t) + 1);
	r->m2rec = malloc(r->n_rows * sizeof(int32_t) + 1);
	if (!r->rec2m || !r->m2rec) {
		reg_free(r);
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	for (uint32_t i = 0; i < R->nitems; i++)
		r->rec2m[i] = -1;
	for (size_t j = 0; j < r->n_rows; j++) {
		size_t len;
		const char *id = sx_model_item_id(m, j, &len);
		int64_t x = id ? sx__rec_item_find(id, len) : -1;
		r->m2rec[j] = x >= 0 && R->items[x].kind >= 0 ? (int32_t)x : -1;
		if (r->m2rec[j] >= 0) {
			r->rec2m[x] = (int32_t)j;
			r->mapped++;
		}
	}
	r->fs.fold_in = fs_fold_in;
	r->fs.explain = fs_explain;
	r->fs.explain_many = fs_explain_many;
	r->fs.release = fs_release;
	r->fs.ud = r;
	snprintf(r->desc, sizeof(r->desc), "als (registry %s v%u)", sx_model_name(m), r->version);
	r->fs.description = r->desc;
	return r;
}

/* Any thread: the inner-product index over the mapped items' factors. */
static int reg_index(struct reg_source *r, int nthreads)
{
	const struct sx_als *als = sx_model_als(r->m);
	size_t k = (size_t)r->fs.k;
	struct sx_hnsw_params hp;
	sx_hnsw_params_init(&hp, SX_METRIC_IP, (uint32_t)k);
	hp.ef_construction = 100;
	hp.ef_search = 64;
	hp.capacity = r->fs.n_items + 1;
	if (!(r->index = sx_hnsw_new(&hp)))
		return SX_ENOMEM;
	const float *y = sx_als_item_factors((struct sx_als *)als);
	uint64_t *labels = malloc(r->n_rows * sizeof(uint64_t) + 1);
	float *v = malloc(r->n_rows * k * sizeof(float) + 1);
	size_t n = 0;
	int rc = SX_ENOMEM;
	if (labels && v) {
		for (size_t j = 0; j < r->n_rows; j++) {
			const float *row = y + j * k;
			if (r->m2rec[j] < 0 || sx_vec_norm(row, k) == 0)
				continue;
			labels[n] = (uint64_t)r->m2rec[j];
			memcpy(v + n * k, row, k * sizeof(float));
			n++;
		}
		rc = n ? sx_hnsw_add_batch(r->index, labels, v, n, k, nthreads) : 0;
	}
	free(labels), free(v);
	r->fs.index = r->index;
	return rc;
}

/* ---- which source serves ---- */

static void use_registry(struct reg_source *r)
{
	struct rec_state *s = &sx__rec->live;
	if (s->own) {
		/* detach without releasing: it is the fallback */
		sx__rec_model_free(G.own_aside);
		G.own_aside = s->own;
		s->own = NULL, s->fs = NULL;
	}
	sx_rec_set_factor_source(&r->fs);
	G.live = r;
	snprintf(G.status, sizeof(G.status), "serving %s", r->desc);
}

static void use_own(const char *why)
{
	if (G.live) {
		sx__rec_set_own_model(&sx__rec->live, G.own_aside);
		G.own_aside = NULL;
	}
	snprintf(G.status, sizeof(G.status), "%s", why);
}

void sx__rec_own_model_install(struct rec_model *m)
{
	if (G.live) {
		sx__rec_model_free(G.own_aside);
		G.own_aside = m;
	} else {
		sx__rec_set_own_model(&sx__rec->live, m);
	}
}

struct build {
	struct reg_source *r;
	uint64_t seen;
};

static int build_work(struct sx_job *job, void *ud)
{
	struct build *b = ud;
	sx_job_progress(job, 0.0, "indexing item factors");
	int rc = reg_index(b->r, 2);
	if (rc < 0)
		sx_job_fail(job, "cannot index the item factors");
	return rc;
}

static void build_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct build *b = ud;
	SX_UNUSED(job);
	int current = sx__rec && G.building == b->r;
	if (current)
		G.building = NULL, G.job = 0;
	if (rc == 0 && current) {
		msgpack_pack_map(pk, 3);
		sx_pack_kv_str(pk, "model", sx_model_name(b->r->m));
		sx_pack_kv_uint(pk, "version", b->r->version);
		sx_pack_kv_uint(pk, "items", b->r->mapped);
		use_registry(b->r);
	} else {
		if (current)
			snprintf(G.status, sizeof(G.status), "indexing %s failed", b->r->desc);
		reg_free(b->r);
	}
	free(b);
}

void sx__rec_registry_sync(void)
{
	struct rec *R = sx__rec;
	uint64_t gen = sx_models_generation();
	if (!R || (G.seen && G.seen == gen))
		return;
	G.seen = gen;
	if (!G.model[0]) {
		use_own("no registry model configured");
		return;
	}
	if (!gen) {
		use_own("the models plugin is not running");
		return;
	}
	struct sx_model *m = sx_models_acquire(G.model, G.alias, 0);
	if (!m) {
		char why[sizeof(G.status)];
		snprintf(why, sizeof(why), "registry: %s", sx_diag_last());
		use_own(why);
		return;
	}
	uint32_t v = sx_model_version(m);
	if ((G.live && G.live->m == m) || (G.building && G.building->m == m)) {
		sx_model_unref(m);
		return;
	}
	if (sx_model_type(m) != SX_MODEL_ALS) {
		char why[sizeof(G.status)];
		snprintf(why, sizeof(why), "registry: model '%s' v%u is not an ALS model", G.model, v);
		sx_model_unref(m);
		use_own(why);
		return;
	}
	struct reg_source *r = reg_new(m);
	if (!r) {
		sx_log_warn("recommend: cannot use model '%s' v%u: %s", G.model, v, sx_diag_last());
		G.seen = 0;
		return;
	}
	if (G.building) /* a job for an older version: its result is dropped when done */
		G.building = NULL, G.job = 0;
	if ((int64_t)r->mapped > G.pool_above) {
		struct build *b = malloc(sizeof(*b));
		if (b)
			b->r = r, b->seen = gen;
		int64_t id = b ? sx_jobs_start(R->e->jobs, "recommend.index", build_work, build_done, b) : SX_ENOMEM;
		if (id < 0) {
			free(b);
			reg_free(r);
			G.seen = 0;
			return;
		}
		G.building = r, G.job = id;
		snprintf(G.status, sizeof(G.status), "indexing %s (job %lld)", r->desc, (long long)id);
		return;
	}
	if (reg_index(r, 1) < 0) {
		sx_log_warn("recommend: cannot index model '%s' v%u", G.model, v);
		reg_free(r);
		G.seen = 0;
		return;
	}
	use_registry(r);
}

/* ---- configuration ---- */

/* segment: the user attribute of segment popularity (REC_SEG_ATTR_MAX + 1 bytes) */
static int config_parse(const msgpack_object *o, char *model, char *alias, int64_t *pool_above, char *segment)
{
	static const char *const known[] = {"model", "alias", "pool_above", "segment", NULL};
	char mb[SX_MODELS_NAME_MAX + 2] = "", ab[SX_MODELS_NAME_MAX + 2] = "", sb[REC_SEG_ATTR_MAX + 2] = "";
	int rc;
	if ((rc = sx_arg_only(o, known)) < 0 || (rc = sx_arg_cstr(o, "model", 0, mb, sizeof(mb))) < 0 ||
	    (sx_arg(o, "segment") && sx_arg_cstr(o, "segment", 0, sb, sizeof(sb)) < 0) ||
	    strlen(sb) > REC_SEG_ATTR_MAX || !sx_utf8_valid(sb, strlen(sb)))
		return rc < 0 ? rc : sx_diag_set(SX_EINVAL, "argument 'segment' must be a string of 0 to %d bytes", REC_SEG_ATTR_MAX);
	if (sx_arg(o, "segment"))
		memcpy(segment, sb, strlen(sb) + 1);
	if (
	    (rc = sx_arg_cstr(o, "alias", 0, ab, sizeof(ab))) < 0 || (rc = sx_arg_int(o, "pool_above", 0, pool_above)) < 0)
		return rc;
	const char *names[2] = {mb, ab};
	for (int i = 0; i < 2; i++) {
		for (const char *p = names[i]; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
			      *p == '.' || *p == '-'))
				return sx_diag_set(SX_EINVAL, "argument '%s' must be 1 to %d bytes of [A-Za-z0-9_.-]",
						   i ? "alias" : "model", SX_MODELS_NAME_MAX);
		if (strlen(names[i]) > SX_MODELS_NAME_MAX)
			return sx_diag_set(SX_EINVAL, "argument '%s' must be 1 to %d bytes of [A-Za-z0-9_.-]",
					   i ? "alias" : "model", SX_MODELS_NAME_MAX);
	}
	if (sx_arg(o, "model"))
		snprintf(model, SX_MODELS_NAME_MAX + 1, "%s", mb);
	if (sx_arg(o, "alias")) {
		if (!ab[0])
			return sx_diag_set(SX_EINVAL, "argument 'alias' must be 1 to %d bytes of [A-Za-z0-9_.-]",
					   SX_MODELS_NAME_MAX);
		snprintf(alias, SX_MODELS_NAME_MAX + 1, "%s", ab);
	}
	if (*pool_above < 0)
		return sx_diag_set(SX_EINVAL, "argument 'pool_above' must be >= 0");
	return 0;
}

int sx__rec_registry_start(void)
{
	struct rec *R = sx__rec;
	memset(&G, 0, sizeof(G));
	snprintf(G.model, sizeof(G.model), DEFAULT_MODEL);
	snprintf(G.alias, sizeof(G.alias), DEFAULT_ALIAS);
	G.pool_above = DEFAULT_POOL_ABOVE;
	struct sx_val v;
	int rc = sx_store_get(R->e->store, SX_T_ARTIFACTS, CONFIG_KEY, strlen(CONFIG_KEY), &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 512);
	char model[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	int64_t pool = G.pool_above;
	char segment[REC_SEG_ATTR_MAX + 1];
	memcpy(model, G.model, sizeof(model));
	memcpy(alias, G.alias, sizeof(alias));
	memcpy(segment, R->seg_attr, sizeof(segment));
	if (sx_frame_decode(v.data, v.len, &z, &o) < 0 || o.type != MSGPACK_OBJECT_MAP ||
	    config_parse(&o, model, alias, &pool, segment) < 0) {
		sx_log_warn("recommend: the stored recommend.config does not decode; using the defaults");
	} else {
		memcpy(G.model, model, sizeof(model));
		memcpy(G.alias, alias, sizeof(alias));
		G.pool_above = pool;
		memcpy(R->seg_attr, segment, sizeof(segment));
	}
	msgpack_zone_destroy(&z);
	return 0;
}

void sx__rec_registry_stop(void)
{
	struct rec *R = sx__rec;
	if (G.job && R) {
		int64_t job = G.job;
		sx_jobs_cancel(R->e->jobs, (uint64_t)job);
		while (G.building)
			uv_run(R->e->loop, UV_RUN_ONCE);
	}
	sx__rec_model_free(G.own_aside);
	G.own_aside = NULL;
}

void sx__rec_registry_pack_info(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 6);
	sx_pack_kv_str(pk, "source", G.live ? "registry" : sx__rec->live.fs ? "own" : "none");
	sx_pack_key(pk, "model");
	if (G.live)
		sx_pack_str(pk, sx_model_name(G.live->m));
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "version");
	if (G.live)
		msgpack_pack_uint32(pk, G.live->version);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_uint(pk, "items_mapped", G.live ? G.live->mapped : 0);
	sx_pack_kv_bool(pk, "indexing", G.building != NULL);
	sx_pack_kv_str(pk, "status", G.status);
}

int sx__rec_m_config(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	struct rec *R = sx__rec;
	char model[SX_MODELS_NAME_MAX + 1], alias[SX_MODELS_NAME_MAX + 1];
	char segment[REC_SEG_ATTR_MAX + 1];
	int64_t pool = G.pool_above;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	memcpy(model, G.model, sizeof(model));
	memcpy(alias, G.alias, sizeof(alias));
	memcpy(segment, R->seg_attr, sizeof(segment));
	if ((rc = config_parse(args, model, alias, &pool, segment)) < 0)
		return rc;
	if (args && args->type == MSGPACK_OBJECT_MAP && args->via.map.size) {
		msgpack_sbuffer sb;
		msgpack_packer p;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&p, 4);
		sx_pack_kv_str(&p, "segment", segment);
		sx_pack_kv_str(&p, "model", model);
		sx_pack_kv_str(&p, "alias", alias);
		sx_pack_kv_int(&p, "pool_above", pool);
		rc = sx_store_put(R->e->store, SX_T_ARTIFACTS, CONFIG_KEY, strlen(CONFIG_KEY), sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		if (rc < 0)
			return rc;
		int changed = strcmp(model, G.model) || strcmp(alias, G.alias);
		memcpy(G.model, model, sizeof(model));
		memcpy(G.alias, alias, sizeof(alias));
		G.pool_above = pool;
		if (changed)
			G.seen = 0;
		if (strcmp(segment, R->seg_attr) != 0) {
			/* counts under the old attribute match no user any more */
			memcpy(R->seg_attr, segment, sizeof(segment));
			sx__rec_segments_reset(&R->live);
			/* in this request's batch: a crash cannot bring the old counts back */
			if ((rc = sx__rec_counts_save(&R->live)) < 0)
				return rc;
		}
	}
	sx__rec_registry_sync();
	msgpack_pack_map(pk, 5);
	sx_pack_kv_str(pk, "model", G.model);
	sx_pack_kv_str(pk, "segment", R->seg_attr);
	sx_pack_kv_str(pk, "alias", G.alias);
	sx_pack_kv_int(pk, "pool_above", G.pool_above);
	sx_pack_key(pk, "serving");
	sx__rec_registry_pack_info(pk);
	return 0;
}
