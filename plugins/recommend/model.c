/* The plugin's own implicit-ALS model: training, the factor source over it,
 * and its image in the store. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/recommend/internal.h"
#include "store/store.h"

struct rec_model {
	struct sx_als *als;
	struct sx_hnsw *index;
	struct sx_rec_factor_source fs;
	struct rec_params p;
	uint32_t n_items, n_users;
	size_t interactions;
	int64_t trained_at;
	double loss;
};

int sx__rec_triplets_add(struct rec_triplets *tr, uint32_t u, uint32_t i, float w, int64_t t)
{
	if (tr->n == tr->cap) {
		size_t nc = tr->cap ? tr->cap * 2 : 4096;
		uint32_t *nu = realloc(tr->user, nc * sizeof(uint32_t));
		if (nu)
			tr->user = nu;
		uint32_t *ni = realloc(tr->item, nc * sizeof(uint32_t));
		if (ni)
			tr->item = ni;
		float *nw = realloc(tr->w, nc * sizeof(float));
		if (nw)
			tr->w = nw;
		int64_t *nt = realloc(tr->t, nc * sizeof(int64_t));
		if (nt)
			tr->t = nt;
		if (!nu || !ni || !nw || !nt)
			return SX_ENOMEM;
		tr->cap = nc;
	}
	tr->user[tr->n] = u, tr->item[tr->n] = i, tr->w[tr->n] = w, tr->t[tr->n] = t;
	tr->n++;
	if (u >= tr->n_users)
		tr->n_users = u + 1;
	if (i >= tr->n_items)
		tr->n_items = i + 1;
	return 0;
}

void sx__rec_triplets_free(struct rec_triplets *tr)
{
	free(tr->user), free(tr->item), free(tr->w), free(tr->t);
	memset(tr, 0, sizeof(*tr));
}

static int fs_fold_in(void *ud, const int32_t *items, const float *w, size_t n, float *out)
{
	struct rec_model *m = ud;
	return sx_als_fold_in(m->als, items, w, n, out);
}

static int fs_explain(void *ud, const int32_t *items, const float *w, size_t n, int32_t item, size_t top,
		      int32_t *oi, float *oc, double *total)
{
	struct rec_model *m = ud;
	return sx_als_explain(m->als, items, w, n, item, top, oi, oc, total);
}

static int fs_explain_many(void *ud, const int32_t *items, const float *w, size_t n, const int32_t *targets,
			   size_t nt, size_t top, int32_t *oi, float *oc, double *total, int *count)
{
	struct rec_model *m = ud;
	return sx_als_explain_many(m->als, items, w, n, targets, nt, top, oi, oc, total, count);
}

static void fs_release(void *ud) { sx__rec_model_free(ud); }

static void source_init(struct rec_model *m)
{
	m->fs.k = m->p.k;
	m->fs.n_items = m->n_items;
	m->fs.index = m->index;
	m->fs.fold_in = fs_fold_in;
	m->fs.explain = fs_explain;
	m->fs.explain_many = fs_explain_many;
	m->fs.release = fs_release;
	m->fs.ud = m;
	m->fs.description = "als (recommend.train)";
}

struct sx_rec_factor_source *sx__rec_model_source(struct rec_model *m) { return &m->fs; }

void sx__rec_model_free(struct rec_model *m)
{
	if (!m)
		return;
	sx_als_free(m->als);
	sx_hnsw_free(m->index);
	free(m);
}

/* The HNSW over the factors of items that have any (the others are zero). */
static int build_index(struct rec_model *m, int nthreads, const uint8_t *seen)
{
	struct sx_hnsw_params hp;
	sx_hnsw_params_init(&hp, SX_METRIC_IP, (uint32_t)m->p.k);
	hp.ef_construction = 100;
	hp.ef_search = 64;
	hp.capacity = m->n_items + 1;
	m->index = sx_hnsw_new(&hp);
	if (!m->index)
		return SX_ENOMEM;
	const float *y = sx_als_item_factors(m->als);
	size_t n = 0;
	uint64_t *labels = malloc(m->n_items * sizeof(uint64_t) + 1);
	float *v = malloc((size_t)m->n_items * (size_t)m->p.k * sizeof(float) + 1);
	if (!labels || !v) {
		free(labels), free(v);
		return SX_ENOMEM;
	}
	for (uint32_t i = 0; i < m->n_items; i++) {
		if (seen && !seen[i])
			continue;
		const float *r = y + (size_t)i * (size_t)m->p.k;
		if (sx_vec_norm(r, (size_t)m->p.k) == 0)
			continue;
		labels[n] = i;
		memcpy(v + n * (size_t)m->p.k, r, (size_t)m->p.k * sizeof(float));
		n++;
	}
	int rc = n ? sx_hnsw_add_batch(m->index, labels, v, n, (size_t)m->p.k, nthreads) : 0;
	free(labels), free(v);
	return rc;
}

struct rec_model *sx__rec_model_train(const struct rec_triplets *tr, const struct rec_params *p, int nthreads,
				      int index_threads, const atomic_int *cancel, double *loss)
{
	if (!tr->n) {
		sx_diag_set(SX_ESTATE, "no interactions to train on");
		return NULL;
	}
	struct rec_model *m = calloc(1, sizeof(*m));
	int64_t *indptr = calloc(tr->n_users + 1, sizeof(int64_t));
	int32_t *indices = malloc(tr->n * sizeof(int32_t));
	float *weights = malloc(tr->n * sizeof(float));
	uint8_t *seen = calloc(tr->n_items + 1, 1);
	int rc = SX_ENOMEM;
	if (!m || !indptr || !indices || !weights || !seen)
		goto fail;
	m->p = *p;
	m->n_items = tr->n_items;
	m->n_users = tr->n_users;
	m->interactions = tr->n;
	for (size_t i = 0; i < tr->n; i++)
		indptr[tr->user[i] + 1]++;
	for (uint32_t u = 0; u < tr->n_users; u++)
		indptr[u + 1] += indptr[u];
	int64_t *fill = malloc((tr->n_users + 1) * sizeof(int64_t));
	if (!fill)
		goto fail;
	memcpy(fill, indptr, (tr->n_users + 1) * sizeof(int64_t));
	for (size_t i = 0; i < tr->n; i++) {
		int64_t at = fill[tr->user[i]]++;
		indices[at] = (int32_t)tr->item[i];
		weights[at] = tr->w[i];
		seen[tr->item[i]] = 1;
	}
	free(fill);
	m->als = sx_als_new((int32_t)tr->n_users, (int32_t)tr->n_items, p->k, p->lambda, p->alpha, p->cg_steps, 42);
	if (!m->als) {
		rc = SX_EINVAL;
		goto fail;
	}
	if ((rc = sx_als_set_data(m->als, indptr, indices, weights)) < 0)
		goto fail;
	for (int it = 0; it < p->iterations; it++)
		if ((rc = sx_als_fit_iteration(m->als, nthreads, cancel, NULL, NULL)) < 0)
			goto fail;
	if (loss && sx_als_loss(m->als, nthreads, loss) < 0)
		*loss = NAN;
	m->loss = loss ? *loss : NAN;
	if ((rc = build_index(m, index_threads, seen)) < 0)
		goto fail;
	m->trained_at = sx_wall_ms();
	source_init(m);
	free(indptr), free(indices), free(weights), free(seen);
	return m;
fail:
	free(indptr), free(indices), free(weights), free(seen);
	sx__rec_model_free(m);
	sx_diag_set(rc, "training failed: %s", rc == SX_ECANCELED ? "cancelled" : sx_error_code(rc));
	return NULL;
}

void sx__rec_model_pack_info(struct rec_model *m, msgpack_packer *pk)
{
	msgpack_pack_map(pk, 11);
	sx_pack_kv_int(pk, "k", m->p.k);
	sx_pack_kv_int(pk, "iterations", m->p.iterations);
	sx_pack_kv_double(pk, "lambda", m->p.lambda);
	sx_pack_kv_double(pk, "alpha", m->p.alpha);
	sx_pack_kv_uint(pk, "items", m->n_items);
	sx_pack_kv_uint(pk, "users", m->n_users);
	sx_pack_kv_uint(pk, "interactions", m->interactions);
	sx_pack_kv_uint(pk, "indexed_items", m->index ? sx_hnsw_count(m->index) : 0);
	sx_pack_kv_int(pk, "trained_at", m->trained_at);
	sx_pack_key(pk, "loss");
	if (isfinite(m->loss))
		msgpack_pack_double(pk, m->loss);
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "weights");
	msgpack_pack_map(pk, (uint32_t)m->p.nweights);
	for (int i = 0; i < m->p.nweights; i++)
		sx_pack_kv_double(pk, m->p.weights[i].name, m->p.weights[i].w);
}

int sx__rec_model_save(struct rec_model *m)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct sx_store *st = sx__rec->e->store;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	sx__rec_model_pack_info(m, &pk);
	size_t fl = (size_t)m->n_items * (size_t)m->p.k * sizeof(float);
	msgpack_pack_bin(&pk, fl);
	msgpack_pack_bin_body(&pk, sx_als_item_factors(m->als), fl);
	int rc = sx_store_put(st, SX_T_ARTIFACTS, "rec/model", 9, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return rc;
	void *buf;
	size_t len;
	if ((rc = sx_hnsw_save_buf(m->index, &buf, &len)) < 0)
		return rc;
	rc = sx_store_put(st, SX_T_ARTIFACTS, "rec/model_index", 15, buf, len);
	free(buf);
	return rc;
}

static int get_num(const msgpack_object *map, const char *key, double *out)
{
	const msgpack_object *o = sx_arg(map, key);
	if (!o)
		return 0;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 1;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 1;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(*out);
	default: return 0;
	}
}

struct rec_model *sx__rec_model_load(void)
{
	struct sx_store *st = sx__rec->e->store;
	struct sx_val v, vi;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	struct rec_model *m = NULL;
	if (sx_store_get(st, SX_T_ARTIFACTS, "rec/model", 9, &v) < 0 ||
	    sx_store_get(st, SX_T_ARTIFACTS, "rec/model_index", 15, &vi) < 0)
		return NULL;
	msgpack_zone_init(&z, 4096);
	if (msgpack_unpack(v.data, v.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_ARRAY ||
	    o.via.array.size != 2 || o.via.array.ptr[1].type != MSGPACK_OBJECT_BIN)
		goto bad;
	const msgpack_object *info = &o.via.array.ptr[0], *bin = &o.via.array.ptr[1];
	double k, items, users, iters, lambda, alpha, ta, inter;
	if (!get_num(info, "k", &k) || !get_num(info, "items", &items) || !get_num(info, "users", &users) ||
	    !get_num(info, "iterations", &iters) || !get_num(info, "lambda", &lambda) ||
	    !get_num(info, "alpha", &alpha) || !get_num(info, "trained_at", &ta) ||
	    !get_num(info, "interactions", &inter) || k < 1 || k > 1024 || items < 1 || items > 1e9 ||
	    bin->via.bin.size != (size_t)items * (size_t)k * sizeof(float))
		goto bad;
	m = calloc(1, sizeof(*m));
	if (!m)
		goto bad;
	m->p = sx__rec->params;
	m->p.k = (int)k, m->p.iterations = (int)iters, m->p.lambda = (float)lambda, m->p.alpha = (float)alpha;
	m->n_items = (uint32_t)items, m->n_users = (uint32_t)users, m->interactions = (size_t)inter;
	m->trained_at = (int64_t)ta;
	m->loss = NAN;
	get_num(info, "loss", &m->loss);
	const msgpack_object *w = sx_arg(info, "weights");
	if (w && w->type == MSGPACK_OBJECT_MAP && w->via.map.size <= REC_WEIGHTS_MAX) {
		m->p.nweights = 0;
		for (uint32_t i = 0; i < w->via.map.size; i++) {
			const msgpack_object_kv *kv = &w->via.map.ptr[i];
			double d;
			if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > SX_EVENTS_ID_MAX)
				continue;
			msgpack_object one = {.type = MSGPACK_OBJECT_MAP, .via.map = {1, (msgpack_object_kv *)kv}};
			char name[SX_EVENTS_ID_MAX + 1];
			memcpy(name, kv->key.via.str.ptr, kv->key.via.str.size);
			name[kv->key.via.str.size] = 0;
			if (!get_num(&one, name, &d))
				continue;
			struct rec_weight *rw = &m->p.weights[m->p.nweights++];
			memcpy(rw->name, name, sizeof(rw->name));
			rw->w = (float)d;
		}
	}
	m->als = sx_als_new(1, (int32_t)items, (int)k, (float)lambda, (float)alpha, m->p.cg_steps, 42);
	if (!m->als)
		goto bad;
	float *y = malloc(bin->via.bin.size);
	if (!y)
		goto bad;
	memcpy(y, bin->via.bin.ptr, bin->via.bin.size);
	int rc = sx_als_set_factors(m->als, NULL, y);
	free(y);
	if (rc < 0)
		goto bad;
	m->index = sx_hnsw_load(vi.data, vi.len);
	if (!m->index || sx_hnsw_dim(m->index) != (uint32_t)k)
		goto bad;
	source_init(m);
	msgpack_zone_destroy(&z);
	return m;
bad:
	msgpack_zone_destroy(&z);
	sx__rec_model_free(m);
	sx_log_warn("recommend: the stored model does not decode; train again with recommend.train");
	return NULL;
}

void sx__rec_set_own_model(struct rec_state *s, struct rec_model *m)
{
	if (s->fs && s->fs->release)
		s->fs->release(s->fs->ud);
	s->fs = m ? &m->fs : NULL;
	s->own = m;
	s->calib_fs = NULL;
	for (uint32_t i = 0; i < s->nusers; i++)
		if (s->users[i])
			s->users[i]->als_ok = 0;
	if (s->fs)
		for (uint32_t i = 0; i < s->nusers; i++)
			if (s->users[i]) {
				free(s->users[i]->als);
				s->users[i]->als = NULL;
			}
}

int sx_rec_set_factor_source(struct sx_rec_factor_source *fs)
{
	if (!sx__rec)
		return sx_diag_set(SX_ESTATE, "the recommend plugin has not started");
	struct rec_state *s = &sx__rec->live;
	if (s->fs && s->fs->release)
		s->fs->release(s->fs->ud);
	s->fs = fs;
	s->calib_fs = NULL;
	s->own = NULL;
	for (uint32_t i = 0; i < s->nusers; i++)
		if (s->users[i]) {
			s->users[i]->als_ok = 0;
			free(s->users[i]->als);
			s->users[i]->als = NULL;
		}
	return 0;
}
