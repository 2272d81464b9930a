/* The models plugin's codecs: id maps, keys, the bundle (MessagePack and
 * JSON), NPY files, and the drift statistics. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "core/math/als.h"
#include "core/math/behaviour.h"
#include "core/math/logreg.h"
#include "core/math/text.h"
#include "core/json.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/models/internal.h"
#include "store/store.h"

int sx__diag_prefix(int rc, const char *prefix)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", sx_diag_last());
	return sx_diag_set(rc, "%s: %s", prefix, msg);
}

/* ---- id maps ---- */

void sx__idmap_init(struct sx_idmap *m) { memset(m, 0, sizeof(*m)); }

void sx__idmap_close(struct sx_idmap *m)
{
	for (int32_t i = 0; i < m->n; i++)
		free(m->ids[i]);
	free(m->ids);
	free(m->lens);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static int idmap_grow(struct sx_idmap *m)
{
	uint32_t ns = m->nslots ? m->nslots * 2 : 64;
	int32_t *slots = malloc(ns * sizeof(*slots));
	if (!slots)
		return -1;
	for (uint32_t i = 0; i < ns; i++)
		slots[i] = -1;
	for (int32_t i = 0; i < m->n; i++) {
		uint32_t h = (uint32_t)XXH64(m->ids[i], m->lens[i], 0) & (ns - 1);
		while (slots[h] >= 0)
			h = (h + 1) & (ns - 1);
		slots[h] = i;
	}
	free(m->slots);
	m->slots = slots;
	m->nslots = ns;
	return 0;
}

int32_t sx__idmap_get(struct sx_idmap *m, const char *s, size_t len, int add)
{
	if (m->nslots) {
		uint32_t h = (uint32_t)XXH64(s, len, 0) & (m->nslots - 1);
		for (; m->slots[h] >= 0; h = (h + 1) & (m->nslots - 1)) {
			int32_t i = m->slots[h];
			if (m->lens[i] == len && memcmp(m->ids[i], s, len) == 0)
				return i;
		}
	}
	if (!add)
		return -1;
	if (m->n == INT32_MAX)
		return -2;
	if ((uint32_t)(m->n + 1) * 2 > m->nslots && idmap_grow(m) < 0)
		return -2;
	if (m->n == m->cap) {
		int32_t cap = m->cap ? m->cap * 2 : 64;
		char **ids = realloc(m->ids, (size_t)cap * sizeof(*ids));
		if (!ids)
			return -2;
		m->ids = ids;
		uint32_t *lens = realloc(m->lens, (size_t)cap * sizeof(*lens));
		if (!lens)
			return -2;
		m->lens = lens;
		m->cap = cap;
	}
	char *c = malloc(len + 1);
	if (!c)
		return -2;
	memcpy(c, s, len);
	c[len] = 0;
	int32_t id = m->n++;
	m->ids[id] = c;
	m->lens[id] = (uint32_t)len;
	uint32_t h = (uint32_t)XXH64(s, len, 0) & (m->nslots - 1);
	while (m->slots[h] >= 0)
		h = (h + 1) & (m->nslots - 1);
	m->slots[h] = id;
	return id;
}

/* ---- models ---- */

struct sx_model *sx__model_new(int type, const char *name)
{
	struct sx_model *m = calloc(1, sizeof(*m));
	if (!m) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	m->refs = 1;
	m->type = type;
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->data_from = m->data_to = -1;
	snprintf(m->status, sizeof(m->status), "ready");
	msgpack_sbuffer_init(&m->params);
	msgpack_sbuffer_init(&m->metrics);
	sx__idmap_init(&m->users);
	sx__idmap_init(&m->items);
	sx__idmap_init(&m->names);
	return m;
}

static void model_free(struct sx_model *m)
{
	msgpack_sbuffer_destroy(&m->params);
	msgpack_sbuffer_destroy(&m->metrics);
	if (m->features)
		for (size_t j = 0; j < m->d; j++)
			free(m->features[j]);
	free(m->features);
	free(m->mean);
	free(m->scale);
	free(m->coef);
	sx_logreg_free(m->lr);
	sx_als_free(m->als);
	sx__idmap_close(&m->users);
	sx__idmap_close(&m->items);
	sx__idmap_close(&m->names);
	free(m->weights);
	if (m->classes)
		for (int32_t c = 0; c < m->n_classes; c++)
			free(m->classes[c]);
	free(m->classes);
	sx_text_tfidf_free(m->tfidf);
	sx_text_nb_free(m->nb);
	sx_text_lr_free(m->tlr);
	sx_markov_free(m->markov);
	sx_covisit_free(m->covisit);
	free(m);
}

void sx_model_ref(struct sx_model *m) { m->refs++; }

void sx_model_unref(struct sx_model *m)
{
	if (m && --m->refs == 0)
		model_free(m);
}

int sx_model_type(const struct sx_model *m) { return m->type; }
uint32_t sx_model_version(const struct sx_model *m) { return m->version; }
size_t sx_model_n_features(const struct sx_model *m) { return m->type == SX_MODEL_LOGISTIC ? m->d : 0; }

const char *sx_model_feature_name(const struct sx_model *m, size_t j)
{
	return m->type == SX_MODEL_LOGISTIC && j < m->d ? m->features[j] : NULL;
}

int sx_model_predict_proba(const struct sx_model *m, const double *x, double *contrib,
			   double *intercept, double *p)
{
	if (m->type != SX_MODEL_LOGISTIC)
		return sx_diag_set(SX_EINVAL, "model '%s' is not a logistic model", m->name);
	double z = m->intercept;
	for (size_t j = 0; j < m->d; j++) {
		if (!isfinite(x[j]))
			return sx_diag_set(SX_EINVAL, "feature '%s' is not a finite number", m->features[j]);
		double c = m->coef[j] * ((x[j] - m->mean[j]) / m->scale[j]);
		if (contrib)
			contrib[j] = c;
		z += c;
	}
	if (intercept)
		*intercept = m->intercept;
	*p = z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
	return 0;
}

static const char *const type_names[] = {NULL, "als", "logistic", "text", "behaviour"};

const char *sx__model_type_name(int type)
{
	return type >= SX_MODEL_ALS && type <= SX_MODEL_BEHAVIOUR ? type_names[type] : "unknown";
}

int sx__model_type_parse(const char *s, size_t len)
{
	for (int t = SX_MODEL_ALS; t <= SX_MODEL_BEHAVIOUR; t++)
		if (strlen(type_names[t]) == len && memcmp(type_names[t], s, len) == 0)
			return t;
	return 0;
}

int sx__models_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > SX_MODELS_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

/* ---- keys ---- */

static size_t key_name(uint8_t *k, char tag, const char *name)
{
	size_t n = strlen(name), o = 0;
	if (tag)
		k[o++] = (uint8_t)tag;
	memcpy(k + o, name, n);
	return o + n;
}

size_t sx__models_head_key(uint8_t *k, const char *name) { return key_name(k, 'n', name); }
size_t sx__models_policy_key(uint8_t *k, const char *name) { return key_name(k, 'p', name); }
size_t sx__models_rules_key(uint8_t *k, const char *name) { return key_name(k, 'r', name); }

size_t sx__models_version_key(uint8_t *k, const char *name, uint32_t version)
{
	size_t o = key_name(k, 'v', name);
	k[o++] = 0;
	sx_be32(k + o, version);
	return o + 4;
}

size_t sx__models_alias_key(uint8_t *k, const char *name, const char *alias)
{
	size_t o = key_name(k, 'a', name);
	k[o++] = 0;
	size_t n = strlen(alias);
	memcpy(k + o, alias, n);
	return o + n;
}

size_t sx__models_artifact_key(uint8_t *k, const char *name, uint32_t version)
{
	size_t o = key_name(k, 0, name);
	k[o++] = 0;
	sx_be32(k + o, version);
	return o + 4;
}

/* ---- packing ---- */

void sx__pack_num(msgpack_packer *pk, double v)
{
	if (isfinite(v))
		msgpack_pack_double(pk, v);
	else
		msgpack_pack_nil(pk);
}

static void pack_raw_or_map(msgpack_packer *pk, const msgpack_sbuffer *sb)
{
	if (sb->size)
		msgpack_sbuffer_write(pk->data, sb->data, sb->size);
	else
		msgpack_pack_map(pk, 0);
}

static void pack_opt_int(msgpack_packer *pk, const char *k, int64_t v, int present)
{
	sx_pack_key(pk, k);
	if (present)
		msgpack_pack_int64(pk, v);
	else
		msgpack_pack_nil(pk);
}

static void pack_meta_keys(msgpack_packer *pk, const struct sx_model *m)
{
	sx_pack_kv_str(pk, "name", m->name);
	sx_pack_kv_uint(pk, "version", m->version);
	sx_pack_kv_str(pk, "type", sx__model_type_name(m->type));
	sx_pack_key(pk, "params");
	pack_raw_or_map(pk, &m->params);
	sx_pack_key(pk, "metrics");
	pack_raw_or_map(pk, &m->metrics);
	sx_pack_key(pk, "data");
	msgpack_pack_map(pk, 2);
	pack_opt_int(pk, "from", m->data_from, m->data_from >= 0);
	pack_opt_int(pk, "to", m->data_to, m->data_to >= 0);
	sx_pack_kv_int(pk, "trained_at", m->trained_at);
	sx_pack_kv_int(pk, "train_ms", m->train_ms);
	pack_opt_int(pk, "parent", m->parent, m->parent > 0);
	sx_pack_kv_str(pk, "status", m->status);
	sx_pack_key(pk, "reason");
	if (m->reason[0])
		sx_pack_str(pk, m->reason);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_str(pk, "trigger", m->trigger[0] ? m->trigger : "manual");
	sx_pack_kv_uint(pk, "events_at_train", m->events_at_train);
}
#define META_KEYS 13

void sx__models_pack_meta(msgpack_packer *pk, const struct sx_model *m)
{
	msgpack_pack_map(pk, META_KEYS);
	pack_meta_keys(pk, m);
}

static void pack_doubles(msgpack_packer *pk, const double *v, size_t n)
{
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		sx__pack_num(pk, v[i]);
}

static void pack_factors(msgpack_packer *pk, const float *f, int32_t rows, int k, int binary)
{
	if (binary) {
		size_t n = (size_t)rows * (size_t)k;
		msgpack_pack_bin(pk, n * 4);
		uint8_t buf[4096];
		size_t o = 0;
		for (size_t i = 0; i < n; i++) {
			uint32_t u;
			memcpy(&u, &f[i], 4);
			buf[o++] = (uint8_t)u, buf[o++] = (uint8_t)(u >> 8);
			buf[o++] = (uint8_t)(u >> 16), buf[o++] = (uint8_t)(u >> 24);
			if (o == sizeof(buf)) {
				msgpack_pack_bin_body(pk, buf, o);
				o = 0;
			}
		}
		if (o)
			msgpack_pack_bin_body(pk, buf, o);
		return;
	}
	msgpack_pack_array(pk, (size_t)rows);
	for (int32_t r = 0; r < rows; r++) {
		msgpack_pack_array(pk, (size_t)k);
		for (int j = 0; j < k; j++)
			msgpack_pack_double(pk, f[(size_t)r * (size_t)k + (size_t)j]);
	}
}

static void pack_ids(msgpack_packer *pk, const struct sx_idmap *m)
{
	msgpack_pack_array(pk, (size_t)m->n);
	for (int32_t i = 0; i < m->n; i++)
		sx_pack_strn(pk, m->ids[i], m->lens[i]);
}

/* Doubles as bin (float64 little-endian) or as an array. */
static void pack_f64s(msgpack_packer *pk, const double *v, size_t n, int binary)
{
	if (!binary) {
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < n; i++)
			msgpack_pack_double(pk, v[i]);
		return;
	}
	msgpack_pack_bin(pk, n * 8);
	uint8_t buf[4096];
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t u;
		memcpy(&u, &v[i], 8);
		for (int b = 0; b < 8; b++)
			buf[o++] = (uint8_t)(u >> (8 * b));
		if (o == sizeof(buf)) {
			msgpack_pack_bin_body(pk, buf, o);
			o = 0;
		}
	}
	if (o)
		msgpack_pack_bin_body(pk, buf, o);
}

static void pack_u32s(msgpack_packer *pk, const uint32_t *v, size_t n)
{
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_uint32(pk, v[i]);
}

/* Text weights are stored sparse: only the buckets some training document
 * touched differ from a per-class (or global) default. */
static void pack_text(msgpack_packer *pk, const struct sx_model *m, int binary)
{
	size_t dim = (size_t)1 << m->fo.bits, k = (size_t)m->n_classes, nidx = 0;
	uint32_t *idx = malloc(dim * sizeof(uint32_t));
	double *rows = malloc(dim * k * sizeof(double) + 1), *dflt = malloc(k * sizeof(double) + 1);
	msgpack_pack_map(pk, 10 + 1); /* + reference */
	sx_pack_key(pk, "classes");
	msgpack_pack_array(pk, k);
	for (size_t c = 0; c < k; c++)
		sx_pack_str(pk, m->classes[c]);
	sx_pack_kv_str(pk, "algorithm", m->algorithm == SX_TEXT_NB ? "nb" : "logreg");
	sx_pack_kv_int(pk, "bits", m->fo.bits);
	sx_pack_kv_int(pk, "word_ngrams", m->fo.word_ngrams);
	sx_pack_kv_int(pk, "char_min", m->fo.char_min);
	sx_pack_kv_int(pk, "char_max", m->fo.char_max);
	sx_pack_kv_bool(pk, "alternate_sign", m->fo.alternate_sign);
	sx_pack_kv_uint(pk, "seed", m->fo.seed);
	if (!idx || !rows || !dflt) {
		/* Out of memory here leaves a bundle that does not decode rather
		 * than a wrong one. */
		sx_pack_kv_str(pk, "idf", "out of memory");
		sx_pack_kv_str(pk, "params", "out of memory");
		free(idx), free(rows), free(dflt);
		return;
	}
	sx_pack_key(pk, "idf");
	const double *idf = m->tfidf ? sx_text_tfidf_idf_vec(m->tfidf) : NULL;
	if (idf) {
		double d = idf[0];
		for (size_t j = 1; j < dim; j++)
			d = idf[j] > d ? idf[j] : d;
		for (size_t j = 0; j < dim; j++)
			if (idf[j] != d)
				idx[nidx] = (uint32_t)j, rows[nidx++] = idf[j];
		msgpack_pack_map(pk, 3);
		sx_pack_kv_double(pk, "default", d);
		sx_pack_key(pk, "idx");
		pack_u32s(pk, idx, nidx);
		sx_pack_key(pk, "val");
		pack_f64s(pk, rows, nidx, binary);
	} else {
		msgpack_pack_nil(pk);
	}
	sx_pack_key(pk, "params");
	nidx = 0;
	if (m->algorithm == SX_TEXT_NB) {
		const double *lp = sx_text_nb_log_prob(m->nb), *prior = sx_text_nb_log_prior(m->nb);
		for (size_t c = 0; c < k; c++) {
			dflt[c] = lp[c * dim];
			for (size_t j = 1; j < dim; j++)
				dflt[c] = lp[c * dim + j] < dflt[c] ? lp[c * dim + j] : dflt[c];
		}
		for (size_t j = 0; j < dim; j++) {
			int keep = 0;
			for (size_t c = 0; c < k && !keep; c++)
				keep = lp[c * dim + j] != dflt[c];
			if (!keep)
				continue;
			for (size_t c = 0; c < k; c++)
				rows[nidx * k + c] = lp[c * dim + j];
			idx[nidx++] = (uint32_t)j;
		}
		msgpack_pack_map(pk, 4);
		sx_pack_key(pk, "log_prior");
		msgpack_pack_array(pk, k);
		for (size_t c = 0; c < k; c++)
			sx__pack_num(pk, prior[c]); /* -inf: nil */
		sx_pack_key(pk, "default");
		pack_f64s(pk, dflt, k, 0);
	} else {
		const double *w = sx_text_lr_weights(m->tlr);
		for (size_t j = 0; j < dim; j++) {
			int keep = 0;
			for (size_t c = 0; c < k && !keep; c++)
				keep = w[j * k + c] != 0;
			if (!keep)
				continue;
			memcpy(rows + nidx * k, w + j * k, k * sizeof(double));
			idx[nidx++] = (uint32_t)j;
		}
		msgpack_pack_map(pk, 3);
		sx_pack_key(pk, "bias");
		pack_f64s(pk, w + dim * k, k, 0);
	}
	sx_pack_key(pk, "idx");
	pack_u32s(pk, idx, nidx);
	sx_pack_key(pk, "rows");
	pack_f64s(pk, rows, nidx * k, binary);
	free(idx), free(rows), free(dflt);
}

static void pack_behaviour(msgpack_packer *pk, const struct sx_model *m, int binary)
{
	int32_t n = m->names.n, ni = m->items.n;
	msgpack_pack_map(pk, 12 + 1); /* + reference */
	sx_pack_key(pk, "names");
	pack_ids(pk, &m->names);
	sx_pack_key(pk, "counts");
	pack_f64s(pk, sx_markov_counts(m->markov), (size_t)n * (size_t)n, binary);
	sx_pack_key(pk, "marginal");
	pack_f64s(pk, sx_markov_marginal(m->markov), (size_t)n, 0);
	sx_pack_key(pk, "items");
	pack_ids(pk, &m->items);
	/* A model without item events still has a (one-row, empty) list. */
	int32_t nc = sx_covisit_n_items(m->covisit);
	const int64_t *ip = sx_covisit_indptr(m->covisit);
	SX_UNUSED(ni);
	sx_pack_key(pk, "indptr");
	msgpack_pack_array(pk, (size_t)nc + 1);
	for (int32_t i = 0; i <= nc; i++)
		msgpack_pack_int64(pk, ip[i]);
	size_t nnz = (size_t)ip[nc];
	const int32_t *ids = sx_covisit_ids(m->covisit);
	const float *w = sx_covisit_weights(m->covisit);
	sx_pack_key(pk, "neighbors");
	msgpack_pack_array(pk, nnz);
	for (size_t i = 0; i < nnz; i++)
		msgpack_pack_int32(pk, ids[i]);
	sx_pack_key(pk, "weights");
	pack_factors(pk, w, 1, (int)nnz, binary);
	sx_pack_kv_double(pk, "smoothing", m->smoothing);
	sx_pack_kv_double(pk, "decay", m->decay);
	sx_pack_kv_double(pk, "item_decay", m->item_decay);
	sx_pack_kv_int(pk, "order", m->order);
	sx_pack_kv_int(pk, "recent_items", m->recent_items);
}

void sx__models_pack_weights(msgpack_packer *pk, const struct sx_model *m, int binary)
{
	if (m->type == SX_MODEL_TEXT) {
		pack_text(pk, m, binary);
	} else if (m->type == SX_MODEL_BEHAVIOUR) {
		pack_behaviour(pk, m, binary);
	} else if (m->type == SX_MODEL_LOGISTIC) {
		msgpack_pack_map(pk, 6);
		sx_pack_key(pk, "features");
		msgpack_pack_array(pk, m->d);
		for (size_t j = 0; j < m->d; j++)
			sx_pack_str(pk, m->features[j]);
		sx_pack_key(pk, "coef");
		pack_doubles(pk, m->coef, m->d);
		sx_pack_kv_double(pk, "intercept", m->intercept);
		sx_pack_key(pk, "mean");
		pack_doubles(pk, m->mean, m->d);
		sx_pack_key(pk, "scale");
		pack_doubles(pk, m->scale, m->d);
	} else {
		msgpack_pack_map(pk, 11);
		sx_pack_kv_int(pk, "k", m->k);
		sx_pack_kv_double(pk, "lambda", m->lambda);
		sx_pack_kv_double(pk, "alpha", m->alpha);
		sx_pack_kv_int(pk, "n_users", m->n_users);
		sx_pack_kv_int(pk, "n_items", m->n_items);
		sx_pack_key(pk, "users");
		pack_ids(pk, &m->users);
		sx_pack_key(pk, "items");
		pack_ids(pk, &m->items);
		sx_pack_key(pk, "user_factors");
		pack_factors(pk, sx_als_user_factors(m->als), m->n_users, m->k, binary);
		sx_pack_key(pk, "item_factors");
		pack_factors(pk, sx_als_item_factors(m->als), m->n_items, m->k, binary);
		sx_pack_key(pk, "event_weights");
		msgpack_pack_map(pk, m->nweights);
		for (size_t i = 0; i < m->nweights; i++)
			sx_pack_kv_double(pk, m->weights[i].name, m->weights[i].w);
	}
	sx_pack_key(pk, "reference");
	if (m->has_ref) {
		msgpack_pack_map(pk, 2);
		sx_pack_key(pk, "edges");
		pack_doubles(pk, m->ref_edges, SX_MODELS_PSI_BINS - 1);
		sx_pack_key(pk, "expected");
		pack_doubles(pk, m->ref_expected, SX_MODELS_PSI_BINS);
	} else {
		msgpack_pack_nil(pk);
	}
}

void sx__models_pack_bundle(msgpack_packer *pk, const struct sx_model *m, int binary)
{
	msgpack_pack_map(pk, META_KEYS + 3);
	sx_pack_kv_str(pk, "format", "sextant.model");
	sx_pack_kv_int(pk, "format_version", 1);
	pack_meta_keys(pk, m);
	sx_pack_key(pk, "weights");
	sx__models_pack_weights(pk, m, binary);
}

/* ---- decoding ---- */

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t n = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static int is_nil(const msgpack_object *o) { return !o || o->type == MSGPACK_OBJECT_NIL; }

static int num(const msgpack_object *o, double *out)
{
	if (!o)
		return -1;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(o->via.f64) ? 0 : -1;
	default: return -1;
	}
}

static int int64_of(const msgpack_object *o, int64_t *out)
{
	if (!o)
		return -1;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
		*out = (int64_t)o->via.u64;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = o->via.i64;
		return 0;
	}
	/* JSON round trips may turn integers into floats. */
	if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) &&
	    o->via.f64 == floor(o->via.f64) && fabs(o->via.f64) < 9e15) {
		*out = (int64_t)o->via.f64;
		return 0;
	}
	return -1;
}

static int str_copy(const msgpack_object *o, char *buf, size_t size)
{
	if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size)
		return -1;
	memcpy(buf, o->via.str.ptr, o->via.str.size);
	buf[o->via.str.size] = 0;
	return memchr(buf, 0, o->via.str.size) ? -1 : 0;
}

static int doubles(const msgpack_object *o, double *out, size_t n)
{
	if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != n)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (num(&o->via.array.ptr[i], &out[i]) < 0)
			return -1;
	return 0;
}

static int copy_obj(const msgpack_object *o, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	if (is_nil(o))
		msgpack_pack_map(&pk, 0);
	else if (o->type == MSGPACK_OBJECT_MAP)
		sx_pack_object(&pk, o);
	else
		return -1;
	return 0;
}

static int factors(const msgpack_object *o, float *out, int32_t rows, int k)
{
	size_t n = (size_t)rows * (size_t)k;
	if (!o)
		return -1;
	if (o->type == MSGPACK_OBJECT_BIN) {
		if (o->via.bin.size != n * 4)
			return -1;
		const uint8_t *p = (const uint8_t *)o->via.bin.ptr;
		for (size_t i = 0; i < n; i++, p += 4) {
			uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
			memcpy(&out[i], &u, 4);
			if (!isfinite(out[i]))
				return -1;
		}
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)rows)
		return -1;
	for (int32_t r = 0; r < rows; r++) {
		const msgpack_object *row = &o->via.array.ptr[r];
		if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != (uint32_t)k)
			return -1;
		for (int j = 0; j < k; j++) {
			double v;
			if (num(&row->via.array.ptr[j], &v) < 0 || fabs(v) > 3.4e38)
				return -1;
			out[(size_t)r * (size_t)k + (size_t)j] = (float)v;
		}
	}
	return 0;
}

static int ids(const msgpack_object *o, struct sx_idmap *m, int32_t n)
{
	if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
		return -1;
	for (int32_t i = 0; i < n; i++) {
		const msgpack_object *s = &o->via.array.ptr[i];
		if (s->type != MSGPACK_OBJECT_STR || s->via.str.size == 0 || s->via.str.size > 128)
			return -1;
		if (sx__idmap_get(m, s->via.str.ptr, s->via.str.size, 0) >= 0)
			return -1; /* duplicate */
		if (sx__idmap_get(m, s->via.str.ptr, s->via.str.size, 1) < 0)
			return -1;
	}
	return 0;
}

#define BAD(what) do { sx_diag_set(code, "model record: bad '%s'", what); goto fail; } while (0)

/* Doubles from bin (float64 little-endian) or an array of numbers; with
 * nil_ok, nil reads as -INFINITY. */
static int f64s(const msgpack_object *o, double *out, size_t n, int nil_ok)
{
	if (!o)
		return -1;
	if (o->type == MSGPACK_OBJECT_BIN) {
		if (o->via.bin.size != n * 8)
			return -1;
		const uint8_t *p = (const uint8_t *)o->via.bin.ptr;
		for (size_t i = 0; i < n; i++, p += 8) {
			uint64_t u = 0;
			for (int b = 0; b < 8; b++)
				u |= (uint64_t)p[b] << (8 * b);
			memcpy(&out[i], &u, 8);
			if (!isfinite(out[i]))
				return -1;
		}
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (nil_ok && o->via.array.ptr[i].type == MSGPACK_OBJECT_NIL)
			out[i] = -INFINITY;
		else if (num(&o->via.array.ptr[i], &out[i]) < 0)
			return -1;
	}
	return 0;
}

/* Strictly ascending indexes below `below`; *n gets the count. */
static int idx_list(const msgpack_object *o, uint32_t **out, size_t *n, uint64_t below)
{
	if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > below)
		return -1;
	*n = o->via.array.size;
	if (!(*out = malloc((*n ? *n : 1) * sizeof(uint32_t))))
		return -1;
	for (size_t i = 0; i < *n; i++) {
		int64_t v;
		if (int64_of(&o->via.array.ptr[i], &v) < 0 || v < 0 || (uint64_t)v >= below ||
		    (i && (uint32_t)v <= (*out)[i - 1]))
			return -1;
		(*out)[i] = (uint32_t)v;
	}
	return 0;
}

static int int_in(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *v)
{
	return int64_of(o, v) == 0 && *v >= lo && *v <= hi ? 0 : -1;
}

#define TBAD(what) do { sx_diag_set(code, "model record: bad '%s'", what); goto out; } while (0)

static int decode_text(struct sx_model *m, const msgpack_object *w, int code)
{
	uint32_t *idx = NULL;
	double *rows = NULL, *dense = NULL, *small = NULL;
	size_t nidx = 0;
	int64_t v;
	int rc = -1;
	const msgpack_object *cl = get(w, "classes"), *alg = get(w, "algorithm");
	if (!cl || cl->type != MSGPACK_OBJECT_ARRAY || cl->via.array.size < 2 || cl->via.array.size > SX_TEXT_CLASSES_MAX)
		TBAD("weights.classes");
	m->n_classes = (int32_t)cl->via.array.size;
	if (!(m->classes = calloc((size_t)m->n_classes, sizeof(char *))))
		TBAD("weights.classes");
	for (int32_t c = 0; c < m->n_classes; c++) {
		const msgpack_object *sc = &cl->via.array.ptr[c];
		if (sc->type != MSGPACK_OBJECT_STR || !sc->via.str.size || sc->via.str.size > SX_TEXT_LABEL_MAX ||
		    memchr(sc->via.str.ptr, 0, sc->via.str.size) || !(m->classes[c] = strndup(sc->via.str.ptr, sc->via.str.size)))
			TBAD("weights.classes");
		if (c && strcmp(m->classes[c - 1], m->classes[c]) >= 0)
			TBAD("weights.classes (sorted, distinct)");
	}
	if (alg && sx_obj_streq(alg, "nb"))
		m->algorithm = SX_TEXT_NB;
	else if (alg && sx_obj_streq(alg, "logreg"))
		m->algorithm = SX_TEXT_LOGREG;
	else
		TBAD("weights.algorithm");
	sx_text_feat_opts_default(&m->fo);
	if (int_in(get(w, "bits"), 1, 22, &v) < 0)
		TBAD("weights.bits");
	m->fo.bits = (int)v;
	if (int_in(get(w, "word_ngrams"), 0, 5, &v) < 0)
		TBAD("weights.word_ngrams");
	m->fo.word_ngrams = (int)v;
	if (int_in(get(w, "char_min"), 0, 8, &v) < 0)
		TBAD("weights.char_min");
	m->fo.char_min = (int)v;
	if (int_in(get(w, "char_max"), 0, 8, &v) < 0)
		TBAD("weights.char_max");
	m->fo.char_max = (int)v;
	const msgpack_object *as = get(w, "alternate_sign");
	if (!as || as->type != MSGPACK_OBJECT_BOOLEAN)
		TBAD("weights.alternate_sign");
	m->fo.alternate_sign = as->via.boolean;
	if (int_in(get(w, "seed"), 0, INT64_MAX, &v) < 0)
		TBAD("weights.seed");
	m->fo.seed = (uint64_t)v;
	if ((m->fo.char_min == 0) != (m->fo.char_max == 0) || m->fo.char_min > m->fo.char_max ||
	    (!m->fo.word_ngrams && !m->fo.char_min) || (m->algorithm == SX_TEXT_NB && m->fo.alternate_sign))
		TBAD("weights: feature options");
	size_t dim = (size_t)1 << m->fo.bits, k = (size_t)m->n_classes;
	if (k * dim > ((size_t)1 << 23))
		TBAD("weights: classes x 2^bits above 2^23");
	const msgpack_object *idf = get(w, "idf");
	if (!is_nil(idf)) {
		double d;
		if (num(get(idf, "default"), &d) < 0 || !(d > 0) || idx_list(get(idf, "idx"), &idx, &nidx, dim) < 0 ||
		    !(rows = malloc((nidx ? nidx : 1) * sizeof(double))) || f64s(get(idf, "val"), rows, nidx, 0) < 0 ||
		    !(dense = malloc(dim * sizeof(double))))
			TBAD("weights.idf");
		for (size_t j = 0; j < dim; j++)
			dense[j] = d;
		for (size_t i = 0; i < nidx; i++)
			dense[idx[i]] = rows[i];
		if (!(m->tfidf = sx_text_tfidf_new(dim)) || sx_text_tfidf_set(m->tfidf, dense) < 0)
			TBAD("weights.idf");
		free(idx), free(rows), free(dense);
		idx = NULL, rows = NULL, dense = NULL;
	}
	const msgpack_object *p = get(w, "params");
	if (idx_list(get(p, "idx"), &idx, &nidx, dim) < 0 || !(rows = malloc((nidx * k > 0 ? nidx * k : 1) * sizeof(double))) ||
	    f64s(get(p, "rows"), rows, nidx * k, 0) < 0 || !(small = malloc(2 * k * sizeof(double))))
		TBAD("weights.params");
	if (m->algorithm == SX_TEXT_NB) {
		if (f64s(get(p, "log_prior"), small, k, 1) < 0 || f64s(get(p, "default"), small + k, k, 0) < 0 ||
		    !(dense = malloc(k * dim * sizeof(double))))
			TBAD("weights.params");
		for (size_t c = 0; c < k; c++)
			for (size_t j = 0; j < dim; j++)
				dense[c * dim + j] = small[k + c];
		for (size_t i = 0; i < nidx; i++)
			for (size_t c = 0; c < k; c++)
				dense[c * dim + idx[i]] = rows[i * k + c];
		if (!(m->nb = sx_text_nb_new((int32_t)k, dim)) || sx_text_nb_set(m->nb, small, dense) < 0)
			TBAD("weights.params");
	} else {
		if (f64s(get(p, "bias"), small, k, 0) < 0 || !(dense = calloc((dim + 1) * k, sizeof(double))))
			TBAD("weights.params");
		for (size_t i = 0; i < nidx; i++)
			memcpy(dense + (size_t)idx[i] * k, rows + i * k, k * sizeof(double));
		memcpy(dense + dim * k, small, k * sizeof(double));
		if (!(m->tlr = sx_text_lr_new((int32_t)k, dim)) || sx_text_lr_set(m->tlr, dense) < 0)
			TBAD("weights.params");
	}
	rc = 0;
out:
	free(idx), free(rows), free(dense), free(small);
	return rc;
}

static int decode_behaviour(struct sx_model *m, const msgpack_object *w, int code)
{
	double *c = NULL, *q = NULL;
	int64_t *ip = NULL, v;
	int32_t *nb = NULL;
	float *wt = NULL;
	int rc = -1;
	const msgpack_object *names = get(w, "names"), *items = get(w, "items");
	if (!names || names->type != MSGPACK_OBJECT_ARRAY || names->via.array.size < 1 ||
	    names->via.array.size > SX_MARKOV_MAX_STATES || ids(names, &m->names, (int32_t)names->via.array.size) < 0)
		TBAD("weights.names");
	size_t n = (size_t)m->names.n;
	if (!(c = malloc(n * n * sizeof(double))) || !(q = malloc(n * sizeof(double))) ||
	    f64s(get(w, "counts"), c, n * n, 0) < 0 || f64s(get(w, "marginal"), q, n, 0) < 0 ||
	    !(m->markov = sx_markov_new((int32_t)n)) || sx_markov_set(m->markov, c, q) < 0)
		TBAD("weights.counts");
	if (!items || items->type != MSGPACK_OBJECT_ARRAY || items->via.array.size > 50000000 ||
	    ids(items, &m->items, (int32_t)items->via.array.size) < 0)
		TBAD("weights.items");
	int32_t nc = m->items.n > 0 ? m->items.n : 1;
	const msgpack_object *ipo = get(w, "indptr"), *nbo = get(w, "neighbors");
	if (!ipo || ipo->type != MSGPACK_OBJECT_ARRAY || ipo->via.array.size != (uint32_t)nc + 1 ||
	    !(ip = malloc(((size_t)nc + 1) * sizeof(int64_t))))
		TBAD("weights.indptr");
	for (int32_t i = 0; i <= nc; i++)
		if (int_in(&ipo->via.array.ptr[i], 0, INT32_MAX, &ip[i]) < 0)
			TBAD("weights.indptr");
	size_t nnz = (size_t)ip[nc];
	if (!nbo || nbo->type != MSGPACK_OBJECT_ARRAY || nbo->via.array.size != nnz ||
	    !(nb = malloc((nnz ? nnz : 1) * sizeof(int32_t))) || !(wt = malloc((nnz ? nnz : 1) * sizeof(float))))
		TBAD("weights.neighbors");
	size_t top = 1;
	for (int32_t i = 0; i < nc; i++)
		if (ip[i + 1] >= ip[i] && (size_t)(ip[i + 1] - ip[i]) > top)
			top = (size_t)(ip[i + 1] - ip[i]);
	for (size_t i = 0; i < nnz; i++) {
		if (int_in(&nbo->via.array.ptr[i], 0, nc - 1, &v) < 0)
			TBAD("weights.neighbors");
		nb[i] = (int32_t)v;
	}
	if (factors(get(w, "weights"), wt, 1, (int)nnz) < 0)
		TBAD("weights.weights");
	struct sx_covisit_opts co = {0, 0, 0, 0, 1, top};
	if (!(m->covisit = sx_covisit_new(nc, &co)) || sx_covisit_set(m->covisit, ip, nb, wt) < 0)
		TBAD("weights.neighbors");
	double d;
	if (num(get(w, "smoothing"), &d) < 0 || d < 0)
		TBAD("weights.smoothing");
	m->smoothing = d;
	if (num(get(w, "decay"), &d) < 0 || d < 0 || d > 1)
		TBAD("weights.decay");
	m->decay = d;
	if (num(get(w, "item_decay"), &d) < 0 || d < 0 || d > 1)
		TBAD("weights.item_decay");
	m->item_decay = d;
	if (int_in(get(w, "order"), 1, 100, &v) < 0)
		TBAD("weights.order");
	m->order = (int)v;
	if (int_in(get(w, "recent_items"), 1, 1000, &v) < 0)
		TBAD("weights.recent_items");
	m->recent_items = (int)v;
	rc = 0;
out:
	free(c), free(q), free(ip), free(nb), free(wt);
	return rc;
}

struct sx_model *sx__models_decode(const msgpack_object *meta, const msgpack_object *w, int corrupt)
{
	int code = corrupt ? SX_ECORRUPT : SX_EINVAL;
	char name[SX_MODELS_NAME_MAX + 1], type[16];
	float *uf = NULL, *itf = NULL;
	int64_t iv;
	double dv;
	if (!meta || meta->type != MSGPACK_OBJECT_MAP) {
		sx_diag_set(code, "model record: not a map");
		return NULL;
	}
	if (str_copy(get(meta, "name"), name, sizeof(name)) < 0 || !sx__models_name_ok(name, strlen(name))) {
		sx_diag_set(code, "model record: bad 'name'");
		return NULL;
	}
	if (str_copy(get(meta, "type"), type, sizeof(type)) < 0 || !sx__model_type_parse(type, strlen(type))) {
		sx_diag_set(code, "model record: bad 'type'");
		return NULL;
	}
	struct sx_model *m = sx__model_new(sx__model_type_parse(type, strlen(type)), name);
	if (!m)
		return NULL;
	if (int64_of(get(meta, "version"), &iv) < 0 || iv < 0 || iv > UINT32_MAX)
		BAD("version");
	m->version = (uint32_t)iv;
	if (copy_obj(get(meta, "params"), &m->params) < 0)
		BAD("params");
	if (copy_obj(get(meta, "metrics"), &m->metrics) < 0)
		BAD("metrics");
	const msgpack_object *data = get(meta, "data");
	if (!is_nil(get(data, "from")) && (int64_of(get(data, "from"), &m->data_from) < 0 || m->data_from < 0))
		BAD("data.from");
	if (!is_nil(get(data, "to")) && (int64_of(get(data, "to"), &m->data_to) < 0 || m->data_to < 0))
		BAD("data.to");
	if (!is_nil(get(meta, "trained_at")) && int64_of(get(meta, "trained_at"), &m->trained_at) < 0)
		BAD("trained_at");
	if (!is_nil(get(meta, "train_ms")) && int64_of(get(meta, "train_ms"), &m->train_ms) < 0)
		BAD("train_ms");
	if (!is_nil(get(meta, "parent"))) {
		if (int64_of(get(meta, "parent"), &iv) < 0 || iv < 0 || iv > UINT32_MAX)
			BAD("parent");
		m->parent = (uint32_t)iv;
	}
	if (!is_nil(get(meta, "events_at_train"))) {
		if (int64_of(get(meta, "events_at_train"), &iv) < 0 || iv < 0)
			BAD("events_at_train");
		m->events_at_train = (uint64_t)iv;
	}
	if (!is_nil(get(meta, "status")) && str_copy(get(meta, "status"), m->status, sizeof(m->status)) < 0)
		BAD("status");
	if (!is_nil(get(meta, "reason")) && str_copy(get(meta, "reason"), m->reason, sizeof(m->reason)) < 0)
		BAD("reason");
	if (!is_nil(get(meta, "trigger")) && str_copy(get(meta, "trigger"), m->trigger, sizeof(m->trigger)) < 0)
		BAD("trigger");
	if (!w || w->type != MSGPACK_OBJECT_MAP)
		BAD("weights");
	const msgpack_object *ref = get(w, "reference");
	if (!is_nil(ref)) {
		if (doubles(get(ref, "edges"), m->ref_edges, SX_MODELS_PSI_BINS - 1) < 0 ||
		    doubles(get(ref, "expected"), m->ref_expected, SX_MODELS_PSI_BINS) < 0)
			BAD("reference");
		m->has_ref = 1;
	}
	if (m->type == SX_MODEL_LOGISTIC) {
		const msgpack_object *f = get(w, "features");
		if (!f || f->type != MSGPACK_OBJECT_ARRAY || f->via.array.size == 0 || f->via.array.size > 100000)
			BAD("weights.features");
		m->d = f->via.array.size;
		m->features = calloc(m->d, sizeof(char *));
		m->coef = malloc(m->d * sizeof(double));
		m->mean = malloc(m->d * sizeof(double));
		m->scale = malloc(m->d * sizeof(double));
		if (!m->features || !m->coef || !m->mean || !m->scale) {
			sx_diag_set(SX_ENOMEM, "out of memory");
			goto fail;
		}
		for (size_t j = 0; j < m->d; j++) {
			const msgpack_object *s = &f->via.array.ptr[j];
			if (s->type != MSGPACK_OBJECT_STR || !s->via.str.size || s->via.str.size > 128 ||
			    memchr(s->via.str.ptr, 0, s->via.str.size))
				BAD("weights.features");
			if (!(m->features[j] = strndup(s->via.str.ptr, s->via.str.size))) {
				sx_diag_set(SX_ENOMEM, "out of memory");
				goto fail;
			}
		}
		if (doubles(get(w, "coef"), m->coef, m->d) < 0)
			BAD("weights.coef");
		if (doubles(get(w, "mean"), m->mean, m->d) < 0)
			BAD("weights.mean");
		if (doubles(get(w, "scale"), m->scale, m->d) < 0)
			BAD("weights.scale");
		for (size_t j = 0; j < m->d; j++)
			if (!(m->scale[j] > 0))
				BAD("weights.scale");
		if (num(get(w, "intercept"), &m->intercept) < 0)
			BAD("weights.intercept");
		if (!(m->lr = sx_logreg_new(m->d)) || sx_logreg_set(m->lr, m->coef, m->intercept) < 0) {
			sx_diag_set(SX_ENOMEM, "out of memory");
			goto fail;
		}
		return m;
	}
	if (m->type == SX_MODEL_TEXT || m->type == SX_MODEL_BEHAVIOUR) {
		if ((m->type == SX_MODEL_TEXT ? decode_text(m, w, code) : decode_behaviour(m, w, code)) < 0)
			goto fail;
		return m;
	}
	if (int64_of(get(w, "k"), &iv) < 0 || iv < 1 || iv > 1024)
		BAD("weights.k");
	m->k = (int)iv;
	if (int64_of(get(w, "n_users"), &iv) < 0 || iv < 1 || iv > INT32_MAX)
		BAD("weights.n_users");
	m->n_users = (int32_t)iv;
	if (int64_of(get(w, "n_items"), &iv) < 0 || iv < 1 || iv > INT32_MAX)
		BAD("weights.n_items");
	m->n_items = (int32_t)iv;
	if (num(get(w, "lambda"), &dv) < 0 || dv < 0)
		BAD("weights.lambda");
	m->lambda = (float)dv;
	if (num(get(w, "alpha"), &dv) < 0 || dv < 0)
		BAD("weights.alpha");
	m->alpha = (float)dv;
	if ((uint64_t)m->n_users * (uint64_t)m->k > (1ULL << 31) || (uint64_t)m->n_items * (uint64_t)m->k > (1ULL << 31))
		BAD("weights: too large");
	if (ids(get(w, "users"), &m->users, m->n_users) < 0)
		BAD("weights.users");
	if (ids(get(w, "items"), &m->items, m->n_items) < 0)
		BAD("weights.items");
	uf = malloc((size_t)m->n_users * (size_t)m->k * sizeof(float));
	itf = malloc((size_t)m->n_items * (size_t)m->k * sizeof(float));
	if (!uf || !itf) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		goto fail;
	}
	if (factors(get(w, "user_factors"), uf, m->n_users, m->k) < 0)
		BAD("weights.user_factors");
	if (factors(get(w, "item_factors"), itf, m->n_items, m->k) < 0)
		BAD("weights.item_factors");
	const msgpack_object *ew = get(w, "event_weights");
	if (!is_nil(ew)) {
		if (ew->type != MSGPACK_OBJECT_MAP || ew->via.map.size > 64)
			BAD("weights.event_weights");
		m->weights = calloc(ew->via.map.size + 1, sizeof(*m->weights));
		if (!m->weights) {
			sx_diag_set(SX_ENOMEM, "out of memory");
			goto fail;
		}
		for (uint32_t i = 0; i < ew->via.map.size; i++) {
			if (str_copy(&ew->via.map.ptr[i].key, m->weights[i].name, sizeof(m->weights[i].name)) < 0 ||
			    num(&ew->via.map.ptr[i].val, &dv) < 0 || dv < 0)
				BAD("weights.event_weights");
			m->weights[i].w = (float)dv;
		}
		m->nweights = ew->via.map.size;
	}
	m->als = sx_als_new(m->n_users, m->n_items, m->k, m->lambda, m->alpha, 1, 1);
	if (!m->als) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		goto fail;
	}
	if (sx_als_set_factors(m->als, uf, itf) < 0)
		BAD("weights: factors");
	free(uf);
	free(itf);
	return m;
fail:
	free(uf);
	free(itf);
	sx_model_unref(m);
	return NULL;
}

struct sx_model *sx__models_decode_bundle(const msgpack_object *b)
{
	const msgpack_object *f = get(b, "format");
	int64_t v;
	if (!f || !sx_obj_streq(f, "sextant.model")) {
		sx_diag_set(SX_EINVAL, "bundle: 'format' is not \"sextant.model\"");
		return NULL;
	}
	if (int64_of(get(b, "format_version"), &v) < 0 || v != 1) {
		sx_diag_set(SX_EINVAL, "bundle: unsupported 'format_version'");
		return NULL;
	}
	return sx__models_decode(b, get(b, "weights"), 0);
}

/* ---- JSON ---- */

static json_t *to_json(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return json_null();
	case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
	case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_ARRAY: {
		json_t *a = json_array();
		for (uint32_t i = 0; a && i < o->via.array.size; i++)
			if (json_array_append_new(a, to_json(&o->via.array.ptr[i])) < 0) {
				json_decref(a);
				return NULL;
			}
		return a;
	}
	case MSGPACK_OBJECT_MAP: {
		json_t *m = json_object();
		for (uint32_t i = 0; m && i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			if (k->type != MSGPACK_OBJECT_STR ||
			    json_object_setn_new(m, k->via.str.ptr, k->via.str.size, to_json(&o->via.map.ptr[i].val)) < 0) {
				json_decref(m);
				return NULL;
			}
		}
		return m;
	}
	default: return NULL;
	}
}

char *sx__models_bundle_json(const struct sx_model *m)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	char *out = NULL;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx__models_pack_bundle(&pk, m, 0);
	msgpack_zone_init(&z, 4096);
	if (msgpack_unpack(sb.data, sb.size, NULL, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
		json_t *j = to_json(&o);
		if (j)
			out = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_PRESERVE_ORDER);
		json_decref(j);
	}
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	if (!out)
		sx_diag_set(SX_ENOMEM, "cannot encode the bundle as JSON");
	return out;
}

int sx__models_json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *sb)
{
	json_error_t err;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	if (!j)
		return sx_diag_set(SX_EINVAL, "bundle: JSON line %d: %s", err.line, err.text);
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	sx_pack_json(&pk, j);
	json_decref(j);
	return 0;
}

/* ---- NPY ---- */

size_t sx__npy_header(char *buf, size_t size, const char *descr, const uint64_t *shape, int ndim)
{
	char dict[256];
	int n;
	if (ndim == 1)
		n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (%llu,), }",
			     descr, (unsigned long long)shape[0]);
	else
		n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (%llu, %llu), }",
			     descr, (unsigned long long)shape[0], (unsigned long long)shape[1]);
	if (n < 0 || (size_t)n >= sizeof(dict))
		return 0;
	/* magic (6) + version (2) + header length (2) + dict + padding + '\n',
	 * padded to 64 bytes as numpy writes it. */
	size_t total = 10 + (size_t)n + 1;
	total = (total + 63) / 64 * 64;
	size_t hlen = total - 10;
	if (total > size || hlen > 65535)
		return 0;
	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = 1, buf[7] = 0;
	buf[8] = (char)(hlen & 0xff), buf[9] = (char)(hlen >> 8);
	memcpy(buf + 10, dict, (size_t)n);
	memset(buf + 10 + n, ' ', hlen - (size_t)n - 1);
	buf[total - 1] = '\n';
	return total;
}

int sx__npy_write(const char *path, const void *data, int elsize, uint64_t rows, uint64_t cols, int ndim)
{
	char hdr[256];
	uint64_t shape[2] = {rows, cols};
	size_t h = sx__npy_header(hdr, sizeof(hdr), elsize == 4 ? "<f4" : "<f8", shape, ndim);
	if (!h)
		return sx_diag_set(SX_EINVAL, "npy: bad shape");
	FILE *f = fopen(path, "wb");
	if (!f)
		return sx_diag_set(SX_EIO, "cannot write '%s': %s", path, strerror(errno));
	int ok = fwrite(hdr, 1, h, f) == h;
	const uint8_t *p = data;
	uint64_t n = rows * (ndim == 2 ? cols : 1);
	for (uint64_t i = 0; ok && i < n; i++, p += elsize) {
		uint8_t le[8];
		/* Little-endian whatever the host. */
		if (elsize == 4) {
			uint32_t u;
			memcpy(&u, p, 4);
			for (int b = 0; b < 4; b++)
				le[b] = (uint8_t)(u >> (8 * b));
		} else {
			uint64_t u;
			memcpy(&u, p, 8);
			for (int b = 0; b < 8; b++)
				le[b] = (uint8_t)(u >> (8 * b));
		}
		ok = fwrite(le, 1, (size_t)elsize, f) == (size_t)elsize;
	}
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : sx_diag_set(SX_EIO, "cannot write '%s': %s", path, strerror(errno));
}

/* ---- drift ---- */

double sx__models_psi(const double *expected, const double *actual, size_t n)
{
	double se = 0, sa = 0, psi = 0;
	for (size_t i = 0; i < n; i++)
		se += expected[i], sa += actual[i];
	if (!(se > 0) || !(sa > 0))
		return NAN;
	for (size_t i = 0; i < n; i++) {
		double e = expected[i] / se, a = actual[i] / sa;
		if (e < 1e-4)
			e = 1e-4;
		if (a < 1e-4)
			a = 1e-4;
		psi += (a - e) * log(a / e);
	}
	return psi;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int sx__models_bin(const double *edges, double s)
{
	int b = 0;
	while (b < SX_MODELS_PSI_BINS - 1 && s > edges[b])
		b++;
	return b;
}

void sx__models_ref_fit(double *scores, size_t n, double *edges, double *expected)
{
	for (int b = 0; b < SX_MODELS_PSI_BINS; b++)
		expected[b] = 0;
	if (n == 0) {
		for (int b = 0; b < SX_MODELS_PSI_BINS - 1; b++)
			edges[b] = (b + 1.0) / SX_MODELS_PSI_BINS;
		return;
	}
	qsort(scores, n, sizeof(double), cmp_double);
	for (int b = 0; b < SX_MODELS_PSI_BINS - 1; b++) {
		size_t i = (size_t)((double)(b + 1) * (double)n / SX_MODELS_PSI_BINS);
		edges[b] = scores[i >= n ? n - 1 : i];
	}
	for (size_t i = 0; i < n; i++)
		expected[sx__models_bin(edges, scores[i])] += 1.0 / (double)n;
}
