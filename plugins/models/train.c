/* Training jobs: inputs checked and copied on the loop thread, data read and
 * models fitted and validated on a pool thread. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/jobs.h"
#include "core/math/als.h"
#include "core/math/behaviour.h"
#include "core/math/logreg.h"
#include "core/math/metrics.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/models/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"


#define MAX_FEATURES 10000
#define REF_USERS 2000


/* ---- preparation (loop thread) ---- */

int sx__train_check_only(const msgpack_object *o, const char *what, const char *const *known)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "argument '%s' must be a map", what);
	int rc = sx_arg_only(o, known);
	if (rc < 0)
		return sx__diag_prefix(rc, what);
	return 0;
}

int sx__train_opt_int(const msgpack_object *p, const char *key, int64_t lo, int64_t hi, int64_t *v)
{
	int rc = sx_arg_int(p, key, 0, v);
	if (rc < 0)
		return sx__diag_prefix(rc, "params");
	if (*v < lo || *v > hi)
		return sx_diag_set(SX_EINVAL, "params: '%s' must be in %lld..%lld", key, (long long)lo, (long long)hi);
	return 0;
}

int sx__train_opt_num(const msgpack_object *p, const char *key, double lo, double hi, double *v)
{
	int rc = sx_arg_num(p, key, 0, v);
	if (rc < 0)
		return sx__diag_prefix(rc, "params");
	if (!isfinite(*v) || *v < lo || *v > hi)
		return sx_diag_set(SX_EINVAL, "params: '%s' must be in [%g, %g]", key, lo, hi);
	return 0;
}

#define check_only sx__train_check_only
#define opt_int sx__train_opt_int
#define opt_num sx__train_opt_num

void sx__pack_comparison(msgpack_packer *pk, const struct sx_train *t, const char *metric)
{
	sx_pack_key(pk, "comparison");
	msgpack_pack_map(pk, 4);
	sx_pack_kv_str(pk, "metric", metric);
	sx_pack_kv_uint(pk, "against", t->prod->version);
	sx_pack_key(pk, "candidate");
	sx__pack_num(pk, t->cmp_cand);
	sx_pack_key(pk, "production");
	sx__pack_num(pk, t->cmp_prod);
}

static int num_of(const msgpack_object *o, double *out)
{
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(*out) ? 0 : -1;
	default: return -1;
	}
}

static int time_of(const msgpack_object *data, const char *key, int64_t *out)
{
	int64_t v;
	if (!sx_arg(data, key) || sx_arg(data, key)->type == MSGPACK_OBJECT_NIL)
		return 0;
	int rc = sx_arg_int(data, key, 0, &v);
	if (rc < 0)
		return sx__diag_prefix(rc, "data");
	if (sx_arg(data, key) && sx_arg(data, key)->type != MSGPACK_OBJECT_NIL) {
		if (v < 0 || v > SX_EVENTS_TIME_MAX + 1)
			return sx_diag_set(SX_EINVAL, "data: '%s' must be a time in ms since the epoch", key);
		*out = v;
	}
	return 0;
}

int sx__train_window(const msgpack_object *data, int64_t *from, int64_t *to)
{
	int rc;
	*from = *to = -1;
	if ((rc = time_of(data, "from", from)) < 0 || (rc = time_of(data, "to", to)) < 0)
		return rc;
	if (*from >= 0 && *to >= 0 && *from >= *to)
		return sx_diag_set(SX_EINVAL, "data: 'from' must be before 'to'");
	return 0;
}

static int prepare_als(struct sx_train *t, const msgpack_object *p, const msgpack_object *data)
{
	static const char *const pk_known[] = {"factors", "iterations", "lambda", "alpha", "cg_steps", "seed",
		"threads", "holdout", "k", "refit", "weights", NULL};
	static const char *const dk_known[] = {"from", "to", NULL};
	int64_t factors = 32, iterations = 15, cg = 3, seed = 42, threads = 1, k = 10;
	double lambda = 0.1, alpha = 2.0, holdout = 0.2;
	int refit = 1, rc;
	if ((rc = check_only(p, "params", pk_known)) < 0 || (rc = check_only(data, "data", dk_known)) < 0)
		return rc;
	if ((rc = opt_int(p, "factors", 1, 1024, &factors)) < 0 || (rc = opt_int(p, "iterations", 1, 100000, &iterations)) < 0 ||
	    (rc = opt_int(p, "cg_steps", 1, 100, &cg)) < 0 || (rc = opt_int(p, "seed", 0, INT64_MAX, &seed)) < 0 ||
	    (rc = opt_int(p, "threads", 1, 16, &threads)) < 0 || (rc = opt_int(p, "k", 1, 1000, &k)) < 0 ||
	    (rc = opt_num(p, "lambda", 0, 1e6, &lambda)) < 0 || (rc = opt_num(p, "alpha", 0, 1e6, &alpha)) < 0 ||
	    (rc = opt_num(p, "holdout", 0, 0.9, &holdout)) < 0)
		return rc;
	if ((rc = sx_arg_bool(p, "refit", 0, &refit)) < 0)
		return sx__diag_prefix(rc, "params");
	const msgpack_object *w = NULL;
	if ((rc = sx_arg_map(p, "weights", 0, &w)) < 0)
		return sx__diag_prefix(rc, "params");
	if (w) {
		if (w->via.map.size == 0 || w->via.map.size > MAX_EVENT_WEIGHTS)
			return sx_diag_set(SX_EINVAL, "params: 'weights' must map 1 to %d event names to weights", MAX_EVENT_WEIGHTS);
		for (uint32_t i = 0; i < w->via.map.size; i++) {
			const msgpack_object *key = &w->via.map.ptr[i].key;
			double v;
			if (key->type != MSGPACK_OBJECT_STR || key->via.str.size == 0 || key->via.str.size > SX_EVENTS_ID_MAX ||
			    memchr(key->via.str.ptr, 0, key->via.str.size))
				return sx_diag_set(SX_EINVAL, "params: 'weights' keys must be event names");
			if (num_of(&w->via.map.ptr[i].val, &v) < 0 || v <= 0 || v > 1e6)
				return sx_diag_set(SX_EINVAL, "params: weights must be numbers in (0, 1e6]");
			memcpy(t->weights[i].name, key->via.str.ptr, key->via.str.size);
			t->weights[i].name[key->via.str.size] = 0;
			t->weights[i].w = (float)v;
		}
		t->nweights = w->via.map.size;
	} else {
		static const struct sx_model_weight defaults[] = {{"view", 1}, {"click", 2}, {"create_trip", 3}, {"book", 5}};
		memcpy(t->weights, defaults, sizeof(defaults));
		t->nweights = SX_ARRAY_SIZE(defaults);
	}
	t->from = t->to = -1;
	if ((rc = time_of(data, "from", &t->from)) < 0 || (rc = time_of(data, "to", &t->to)) < 0)
		return rc;
	if (t->from >= 0 && t->to >= 0 && t->from >= t->to)
		return sx_diag_set(SX_EINVAL, "data: 'from' must be before 'to'");
	t->k = (int)factors, t->iterations = (int)iterations, t->cg_steps = (int)cg, t->seed = (uint64_t)seed;
	t->threads = (int)threads, t->eval_k = (int)k, t->lambda = (float)lambda, t->alpha = (float)alpha;
	t->holdout = holdout, t->refit = refit;

	msgpack_packer pk;
	msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 11);
	sx_pack_kv_int(&pk, "factors", t->k);
	sx_pack_kv_int(&pk, "iterations", t->iterations);
	sx_pack_kv_double(&pk, "lambda", lambda);
	sx_pack_kv_double(&pk, "alpha", alpha);
	sx_pack_kv_int(&pk, "cg_steps", t->cg_steps);
	sx_pack_kv_int(&pk, "seed", (int64_t)t->seed);
	sx_pack_kv_int(&pk, "threads", t->threads);
	sx_pack_kv_double(&pk, "holdout", holdout);
	sx_pack_kv_int(&pk, "k", t->eval_k);
	sx_pack_kv_bool(&pk, "refit", refit);
	sx_pack_key(&pk, "weights");
	msgpack_pack_map(&pk, t->nweights);
	for (size_t i = 0; i < t->nweights; i++)
		sx_pack_kv_double(&pk, t->weights[i].name, t->weights[i].w);
	return 0;
}

/* Copies an array of rows of numbers; *d is set by the first row when 0. */
static int rows_of(const msgpack_object *a, const char *what, size_t *d, double **X, size_t *n)
{
	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0)
		return sx_diag_set(SX_EINVAL, "data: '%s' must be a non-empty array of rows", what);
	size_t rows = a->via.array.size;
	for (size_t i = 0; i < rows; i++) {
		const msgpack_object *r = &a->via.array.ptr[i];
		if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size == 0)
			return sx_diag_set(SX_EINVAL, "data: %s[%zu] must be a non-empty array of numbers", what, i);
		if (!*d) {
			if (r->via.array.size > MAX_FEATURES)
				return sx_diag_set(SX_EINVAL, "data: at most %d features", MAX_FEATURES);
			*d = r->via.array.size;
		}
		if (r->via.array.size != *d)
			return sx_diag_set(SX_EINVAL, "data: %s[%zu] has %u values, expected %zu", what, i, r->via.array.size, *d);
	}
	if (!(*X = malloc(rows * *d * sizeof(double))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < *d; j++)
			if (num_of(&a->via.array.ptr[i].via.array.ptr[j], &(*X)[i * *d + j]) < 0)
				return sx_diag_set(SX_EINVAL, "data: %s[%zu][%zu] is not a finite number", what, i, j);
	*n = rows;
	return 0;
}

static int labels_of(const msgpack_object *a, const char *what, size_t n, uint8_t **y)
{
	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != n)
		return sx_diag_set(SX_EINVAL, "data: '%s' must be an array of %zu labels (0/1)", what, n);
	if (!(*y = malloc(n)))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];
		if (o->type == MSGPACK_OBJECT_BOOLEAN)
			(*y)[i] = o->via.boolean;
		else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= 1)
			(*y)[i] = (uint8_t)o->via.u64;
		else
			return sx_diag_set(SX_EINVAL, "data: %s[%zu] must be 0, 1, true or false", what, i);
	}
	return 0;
}

static int prepare_logistic(struct sx_train *t, const msgpack_object *p, const msgpack_object *data)
{
	static const char *const pk_known[] = {"l2", "class_weight", "max_iter", "tol", "holdout", "refit", "threads", NULL};
	static const char *const dk_known[] = {"features", "labels", "feature_names", "test", NULL};
	static const char *const tk_known[] = {"features", "labels", NULL};
	int64_t max_iter = 1000, threads = 1;
	double l2 = 1.0, tol = 1e-8, holdout = 0.2;
	int refit = 1, rc;
	if ((rc = check_only(p, "params", pk_known)) < 0)
		return rc;
	if (!data || data->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "argument 'data' must be a map {features, labels, feature_names?, test?}");
	if ((rc = check_only(data, "data", dk_known)) < 0)
		return rc;
	if ((rc = opt_int(p, "max_iter", 1, 100000, &max_iter)) < 0 || (rc = opt_int(p, "threads", 1, 16, &threads)) < 0 ||
	    (rc = opt_num(p, "l2", 0, 1e12, &l2)) < 0 || (rc = opt_num(p, "tol", 0, 1, &tol)) < 0 ||
	    (rc = opt_num(p, "holdout", 0, 0.9, &holdout)) < 0)
		return rc;
	if ((rc = sx_arg_bool(p, "refit", 0, &refit)) < 0)
		return sx__diag_prefix(rc, "params");
	sx_logreg_opts_default(&t->lo);
	const msgpack_object *cw = sx_arg(p, "class_weight");
	if (cw && cw->type != MSGPACK_OBJECT_NIL) {
		double a, b;
		if (sx_obj_streq(cw, "balanced"))
			t->balanced = 1;
		else if (cw->type == MSGPACK_OBJECT_ARRAY && cw->via.array.size == 2 && num_of(&cw->via.array.ptr[0], &a) == 0 &&
			 num_of(&cw->via.array.ptr[1], &b) == 0 && a > 0 && b > 0)
			t->lo.class_weight[0] = a, t->lo.class_weight[1] = b;
		else
			return sx_diag_set(SX_EINVAL, "params: 'class_weight' must be \"balanced\" or [w0, w1] (positive)");
	}
	t->lo.l2 = l2, t->lo.tol = tol, t->lo.max_iter = (int)max_iter, t->lo.nthreads = (int)threads;
	t->holdout = holdout, t->refit = refit, t->threads = (int)threads;

	if ((rc = rows_of(sx_arg(data, "features"), "features", &t->d, &t->X, &t->n)) < 0 ||
	    (rc = labels_of(sx_arg(data, "labels"), "labels", t->n, &t->y)) < 0)
		return rc;
	const msgpack_object *test = sx_arg(data, "test");
	if (test && test->type != MSGPACK_OBJECT_NIL) {
		if ((rc = check_only(test, "data.test", tk_known)) < 0 ||
		    (rc = rows_of(sx_arg(test, "features"), "test.features", &t->d, &t->Xt, &t->nt)) < 0 ||
		    (rc = labels_of(sx_arg(test, "labels"), "test.labels", t->nt, &t->yt)) < 0)
			return rc;
	}
	if (!(t->names = calloc(t->d, sizeof(char *))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	const msgpack_object *fn = sx_arg(data, "feature_names");
	if (fn && fn->type != MSGPACK_OBJECT_NIL) {
		if (fn->type != MSGPACK_OBJECT_ARRAY || fn->via.array.size != t->d)
			return sx_diag_set(SX_EINVAL, "data: 'feature_names' must be an array of %zu names", t->d);
		for (size_t j = 0; j < t->d; j++) {
			const msgpack_object *s = &fn->via.array.ptr[j];
			if (s->type != MSGPACK_OBJECT_STR || !s->via.str.size || s->via.str.size > 128 ||
			    memchr(s->via.str.ptr, 0, s->via.str.size) || !sx_utf8_valid(s->via.str.ptr, s->via.str.size))
				return sx_diag_set(SX_EINVAL, "data: feature_names[%zu] must be 1 to 128 bytes of UTF-8", j);
			for (size_t i = 0; i < j; i++)
				if (strlen(t->names[i]) == s->via.str.size && !memcmp(t->names[i], s->via.str.ptr, s->via.str.size))
					return sx_diag_set(SX_EINVAL, "data: feature name '%s' repeats", t->names[i]);
			if (!(t->names[j] = strndup(s->via.str.ptr, s->via.str.size)))
				return sx_diag_set(SX_ENOMEM, "out of memory");
		}
	} else {
		for (size_t j = 0; j < t->d; j++) {
			char b[32];
			snprintf(b, sizeof(b), "f%zu", j);
			if (!(t->names[j] = strdup(b)))
				return sx_diag_set(SX_ENOMEM, "out of memory");
		}
	}
	size_t ntrain = t->nt ? t->n : t->n - (size_t)floor((double)t->n * holdout);
	if (ntrain < 2)
		return sx_diag_set(SX_EINVAL, "data: too few training rows after the holdout");

	msgpack_packer pk;
	msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 7);
	sx_pack_kv_double(&pk, "l2", l2);
	sx_pack_key(&pk, "class_weight");
	if (t->balanced) {
		sx_pack_str(&pk, "balanced");
	} else {
		msgpack_pack_array(&pk, 2);
		msgpack_pack_double(&pk, t->lo.class_weight[0]);
		msgpack_pack_double(&pk, t->lo.class_weight[1]);
	}
	sx_pack_kv_int(&pk, "max_iter", max_iter);
	sx_pack_kv_double(&pk, "tol", tol);
	sx_pack_kv_double(&pk, "holdout", holdout);
	sx_pack_kv_bool(&pk, "refit", refit);
	sx_pack_kv_int(&pk, "threads", threads);
	return 0;
}

struct sx_train *sx__train_prepare(int type, const char *name, const msgpack_object *params,
				   const msgpack_object *data)
{
	struct sx_train *t = calloc(1, sizeof(*t));
	if (!t) {
		sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	t->type = type;
	snprintf(t->name, sizeof(t->name), "%s", name);
	msgpack_sbuffer_init(&t->params);
	t->cmp_cand = t->cmp_prod = NAN;
	if (params && params->type != MSGPACK_OBJECT_NIL && params->type != MSGPACK_OBJECT_MAP) {
		sx_diag_set(SX_EINVAL, "argument 'params' must be a map");
		goto fail;
	}
	if (params && params->type == MSGPACK_OBJECT_NIL)
		params = NULL;
	if (data && data->type == MSGPACK_OBJECT_NIL)
		data = NULL;
	int rc;
	switch (type) {
	case SX_MODEL_ALS: rc = prepare_als(t, params, data); break;
	case SX_MODEL_LOGISTIC: rc = prepare_logistic(t, params, data); break;
	case SX_MODEL_TEXT: rc = sx__text_prepare(t, params, data); break;
	default: rc = sx__behaviour_prepare(t, params, data); break;
	}
	if (rc < 0)
		goto fail;
	if ((type == SX_MODEL_ALS || type == SX_MODEL_BEHAVIOUR) && sx_privacy_snapshot_take(SX_PURPOSE_PERSONALIZATION, &t->consent) < 0)
		goto fail;
	return t;
fail:
	sx__train_free(t);
	return NULL;
}

void sx__train_free(struct sx_train *t)
{
	if (!t)
		return;
	msgpack_sbuffer_destroy(&t->params);
	sx_privacy_snapshot_free(&t->consent);
	sx__text_free(t);
	free(t->bnames), free(t->inames);
	free(t->X), free(t->Xt), free(t->y), free(t->yt);
	if (t->names)
		for (size_t j = 0; j < t->d; j++)
			free(t->names[j]);
	free(t->names);
	sx_model_unref(t->prod);
	sx_model_unref(t->out);
	free(t);
}

void sx__train_compare_with(struct sx_train *t, struct sx_model *prod)
{
	if (prod)
		sx_model_ref(prod);
	sx_model_unref(t->prod);
	t->prod = prod;
}

struct sx_model *sx__train_result(struct sx_train *t)
{
	struct sx_model *m = t->out;
	t->out = NULL;
	return m;
}

const msgpack_sbuffer *sx__train_params(const struct sx_train *t) { return &t->params; }

int sx__train_not_worse(const struct sx_train *t, double *cand, double *prod)
{
	*cand = t->cmp_cand, *prod = t->cmp_prod;
	if (!t->prod || isnan(t->cmp_prod))
		return 1;
	return !isnan(t->cmp_cand) && t->cmp_cand >= t->cmp_prod - 1e-9;
}

/* ---- ALS (pool thread) ---- */

struct rec {
	uint32_t user;
	int32_t item;
	float w;
	int64_t time;
	uint64_t seq;
};

struct collect {
	struct sx_train *t;
	struct rec *r;
	size_t n, cap;
	struct sx_idmap *items;
	size_t seen, skipped;
};

static int collect_cb(const struct sx_event *ev, void *ud)
{
	struct collect *c = ud;
	if ((++c->seen & 4095) == 0 && sx_job_cancelled(c->t->job))
		return sx_diag_set(SX_ECANCELED, "cancelled");
	if (!ev->item)
		return 0;
	if (!sx_privacy_snapshot_allows(&c->t->consent, ev->user)) {
		c->skipped++;
		return 0;
	}
	float w = 0;
	for (size_t i = 0; i < c->t->nweights; i++)
		if (strlen(c->t->weights[i].name) == ev->name_len && !memcmp(c->t->weights[i].name, ev->name, ev->name_len)) {
			w = c->t->weights[i].w;
			break;
		}
	if (w <= 0)
		return 0;
	int32_t item = sx__idmap_get(c->items, ev->item, ev->item_len, 1);
	if (item < 0)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4096;
		struct rec *r = realloc(c->r, cap * sizeof(*r));
		if (!r)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		c->r = r, c->cap = cap;
	}
	c->r[c->n++] = (struct rec){ev->user, item, w, ev->time, ev->seq};
	return 0;
}

static int rec_cmp(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	if (x->user != y->user)
		return x->user < y->user ? -1 : 1;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct iw {
	int32_t item;
	float w;
};

static int iw_cmp(const void *a, const void *b)
{
	const struct iw *x = a, *y = b;
	return x->item < y->item ? -1 : x->item > y->item;
}

struct csr {
	int64_t *indptr;
	int32_t *indices;
	float *w;
};

static void csr_free(struct csr *c) { free(c->indptr), free(c->indices), free(c->w); }

/* Rows of users: events ustart[u] .. ustart[u] + take[u], duplicates merged. */
static int csr_build(const struct rec *r, const size_t *ustart, const size_t *take, int32_t nu, size_t nrec,
		     struct csr *c)
{
	struct iw *tmp = malloc((nrec ? nrec : 1) * sizeof(*tmp));
	c->indptr = malloc(((size_t)nu + 1) * sizeof(int64_t));
	c->indices = malloc((nrec ? nrec : 1) * sizeof(int32_t));
	c->w = malloc((nrec ? nrec : 1) * sizeof(float));
	if (!tmp || !c->indptr || !c->indices || !c->w) {
		free(tmp);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	int64_t o = 0;
	c->indptr[0] = 0;
	for (int32_t u = 0; u < nu; u++) {
		size_t m = take[u];
		for (size_t i = 0; i < m; i++)
			tmp[i] = (struct iw){r[ustart[u] + i].item, r[ustart[u] + i].w};
		qsort(tmp, m, sizeof(*tmp), iw_cmp);
		for (size_t i = 0; i < m; i++) {
			if (o > c->indptr[u] && c->indices[o - 1] == tmp[i].item) {
				c->w[o - 1] += tmp[i].w;
			} else {
				c->indices[o] = tmp[i].item;
				c->w[o] = tmp[i].w;
				o++;
			}
		}
		c->indptr[u + 1] = o;
	}
	free(tmp);
	return 0;
}

static int i32_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return x < y ? -1 : x > y;
}

static int in_sorted(const int32_t *a, size_t n, int32_t v)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (a[mid] == v)
			return 1;
		if (a[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

struct prog {
	struct sx_train *t;
	double base, span;
	int it, iters;
};

static void als_progress_cb(void *ud, int phase, size_t done, size_t total)
{
	struct prog *p = ud;
	if (sx_job_cancelled(p->t->job))
		atomic_store(&p->t->cancel, 1);
	if (total == 0)
		return;
	double f = (p->it + (phase + (double)done / (double)total) / 2.0) / p->iters;
	char msg[64];
	snprintf(msg, sizeof(msg), "%s iteration %d/%d", p->base < 0.45 ? "validation" : "fit", p->it + 1, p->iters);
	sx_job_progress(p->t->job, p->base + p->span * f, msg);
}

static struct sx_als *als_fit(struct sx_train *t, int32_t nu, int32_t ni, const struct csr *c, double base,
			      double span, int *rc)
{
	struct sx_als *als = sx_als_new(nu, ni, t->k, t->lambda, t->alpha, t->cg_steps, t->seed);
	if (!als) {
		*rc = sx_diag_set(SX_ENOMEM, "out of memory");
		return NULL;
	}
	if ((*rc = sx_als_set_data(als, c->indptr, c->indices, c->w)) < 0) {
		sx_diag_set(*rc, "als: bad training data");
		sx_als_free(als);
		return NULL;
	}
	struct prog p = {t, base, span, 0, t->iterations};
	for (int it = 0; it < t->iterations; it++) {
		p.it = it;
		if (sx_job_cancelled(t->job))
			atomic_store(&t->cancel, 1);
		*rc = sx_als_fit_iteration(als, t->threads, &t->cancel, als_progress_cb, &p);
		if (*rc < 0) {
			sx_diag_set(*rc, *rc == SX_ECANCELED ? "cancelled" : "als: iteration failed");
			sx_als_free(als);
			return NULL;
		}
	}
	return als;
}

/* Most popular first, ties by ascending id. */
static int pop_cmp(const void *a, const void *b, void *ud)
{
	const double *pop = ud;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	if (pop[x] != pop[y])
		return pop[x] > pop[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

struct eval_user {
	int32_t u;
	const int32_t *train; /* sorted, into the train CSR */
	size_t ntrain;
	const float *trainw;
	int32_t *rel; /* sorted */
	size_t nrel;
};

void sx__models_ranking_add(struct sx_models_ranking *r, const int32_t *rec, size_t n, const int32_t *rel, size_t nrel,
			    size_t k)
{
	r->precision += sx_metrics_precision_at_k(rec, n, rel, nrel, k);
	r->recall += sx_metrics_recall_at_k(rec, n, rel, nrel, k);
	r->ndcg += sx_metrics_ndcg_at_k(rec, n, rel, nrel, k);
	r->map += sx_metrics_map_at_k(rec, n, rel, nrel, k);
}

void sx__models_ranking_pack(msgpack_packer *pk, const struct sx_models_ranking *r)
{
	sx_pack_key(pk, "precision");
	sx__pack_num(pk, r->precision);
	sx_pack_key(pk, "recall");
	sx__pack_num(pk, r->recall);
	sx_pack_key(pk, "ndcg");
	sx__pack_num(pk, r->ndcg);
	sx_pack_key(pk, "map");
	sx__pack_num(pk, r->map);
	sx_pack_key(pk, "coverage");
	sx__pack_num(pk, r->coverage);
}

/* NDCG@k of model m (any item ids) on the eval users, by folding in each
 * user's train items (ids of `items`, mapped through strings). */
static double foldin_ndcg(const struct sx_model *m, const struct sx_idmap *items, const struct eval_user *ev,
			  size_t nev, size_t k)
{
	size_t cap = 0;
	int32_t *mi = NULL, *out = NULL, *mapped = NULL;
	float *mw = NULL, *vec = malloc((size_t)m->k * sizeof(float));
	double sum = 0;
	size_t n = 0;
	if (!vec)
		return NAN;
	for (size_t e = 0; e < nev; e++) {
		if (ev[e].ntrain + k > cap) {
			cap = (ev[e].ntrain + k) * 2;
			free(mi), free(out), free(mapped), free(mw);
			mi = malloc(cap * sizeof(int32_t)), out = malloc(cap * sizeof(int32_t));
			mapped = malloc(cap * sizeof(int32_t)), mw = malloc(cap * sizeof(float));
			if (!mi || !out || !mapped || !mw) {
				sum = NAN;
				break;
			}
		}
		size_t nm = 0;
		for (size_t i = 0; i < ev[e].ntrain; i++) {
			int32_t it = ev[e].train[i];
			int32_t j = sx__idmap_get((struct sx_idmap *)&m->items, items->ids[it], items->lens[it], 0);
			if (j >= 0)
				mi[nm] = j, mw[nm] = ev[e].trainw[i], nm++;
		}
		if (sx_als_fold_in(m->als, mi, mw, nm, vec) < 0)
			continue;
		int got = sx_als_recommend(m->als, vec, mi, nm, k, out, NULL);
		if (got < 0)
			continue;
		for (int i = 0; i < got; i++) {
			const struct sx_idmap *mm = &m->items;
			mapped[i] = sx__idmap_get((struct sx_idmap *)items, mm->ids[out[i]], mm->lens[out[i]], 0);
		}
		sum += sx_metrics_ndcg_at_k(mapped, (size_t)got, ev[e].rel, ev[e].nrel, k);
		n++;
	}
	free(mi), free(out), free(mapped), free(mw), free(vec);
	return n ? sum / (double)n : NAN;
}

static int als_run(struct sx_train *t)
{
	struct sx_model *m = sx__model_new(SX_MODEL_ALS, t->name);
	struct collect c = {t, NULL, 0, 0, NULL, 0, 0};
	struct csr train = {0}, full = {0};
	size_t *ustart = NULL, *ucnt = NULL, *utrain = NULL;
	struct eval_user *ev = NULL;
	size_t nev = 0;
	int32_t *lists = NULL, *rec = NULL, *pop_order = NULL;
	struct sx_als *val = NULL, *fin = NULL;
	double *refscores = NULL;
	MDB_txn *txn = NULL;
	size_t nu = 0;
	int rc;
	if (!m)
		return SX_ENOMEM;
	c.items = &m->items;
	sx_job_progress(t->job, 0.0, "reading events");
	if ((rc = sx_store_rtxn_begin(sx__models_eng->store, &txn)) < 0)
		goto out;
	rc = sx_events_range_scan(txn, t->from < 0 ? 0 : t->from, t->to < 0 ? SX_EVENTS_TIME_MAX + 1 : t->to,
				  collect_cb, &c);
	if (rc < 0)
		goto out;
	if (c.n == 0) {
		rc = sx_diag_set(SX_ESTATE, "no interactions: no event in the window has an item and a weighted name");
		goto out;
	}
	qsort(c.r, c.n, sizeof(*c.r), rec_cmp);
	/* Users become dense in index order. */
	for (size_t i = 0; i < c.n; i++)
		nu += i == 0 || c.r[i].user != c.r[i - 1].user;
	ustart = malloc(nu * sizeof(size_t)), ucnt = calloc(nu, sizeof(size_t)), utrain = malloc(nu * sizeof(size_t));
	if (!ustart || !ucnt || !utrain) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	size_t u = 0;
	for (size_t i = 0; i < c.n; i++) {
		if (i > 0 && c.r[i].user != c.r[i - 1].user)
			u++;
		if (ucnt[u]++ == 0) {
			char id[SX_EVENTS_ID_MAX + 1];
			size_t len;
			ustart[u] = i;
			if ((rc = sx_events_user_id(txn, c.r[i].user, id, sizeof(id), &len)) < 0)
				goto out;
			if (sx__idmap_get(&m->users, id, len, 1) != (int32_t)u) {
				rc = sx_diag_set(SX_ECORRUPT, "user '%s' has two indexes", id);
				goto out;
			}
		}
	}
	sx_store_rtxn_end(sx__models_eng->store, txn);
	txn = NULL;
	int32_t ni = m->items.n;
	size_t ntest_total = 0;
	for (u = 0; u < nu; u++) {
		size_t nt = 0;
		if (t->holdout > 0 && ucnt[u] >= 2) {
			nt = (size_t)floor((double)ucnt[u] * t->holdout);
			nt = nt < 1 ? 1 : nt > ucnt[u] - 1 ? ucnt[u] - 1 : nt;
		}
		utrain[u] = ucnt[u] - nt;
		ntest_total += nt;
	}
	if ((rc = csr_build(c.r, ustart, utrain, (int32_t)nu, c.n, &train)) < 0 ||
	    (rc = csr_build(c.r, ustart, ucnt, (int32_t)nu, c.n, &full)) < 0)
		goto out;
	/* Held-out items a user had not met in training are the relevant set. */
	if (!(ev = calloc(nu, sizeof(*ev)))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (u = 0; u < nu; u++) {
		size_t nt = ucnt[u] - utrain[u];
		if (!nt)
			continue;
		struct eval_user *e = &ev[nev];
		e->u = (int32_t)u;
		e->train = train.indices + train.indptr[u];
		e->trainw = train.w + train.indptr[u];
		e->ntrain = (size_t)(train.indptr[u + 1] - train.indptr[u]);
		if (!(e->rel = malloc(nt * sizeof(int32_t)))) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < nt; i++) {
			int32_t it = c.r[ustart[u] + utrain[u] + i].item;
			if (!in_sorted(e->train, e->ntrain, it))
				e->rel[e->nrel++] = it;
		}
		qsort(e->rel, e->nrel, sizeof(int32_t), i32_cmp);
		size_t uniq = 0;
		for (size_t i = 0; i < e->nrel; i++)
			if (i == 0 || e->rel[i] != e->rel[i - 1])
				e->rel[uniq++] = e->rel[i];
		e->nrel = uniq;
		nev += e->nrel > 0;
		if (!e->nrel)
			free(e->rel), e->rel = NULL;
	}
	size_t K = (size_t)t->eval_k;
	struct sx_models_ranking rm = {0}, rb = {0};
	if (nev) {
		if (!(val = als_fit(t, (int32_t)nu, ni, &train, 0.0, t->refit ? 0.45 : 0.9, &rc)))
			goto out;
		sx_job_progress(t->job, t->refit ? 0.46 : 0.91, "evaluating");
		lists = malloc(nev * K * sizeof(int32_t)), rec = malloc(K * sizeof(int32_t));
		pop_order = malloc((size_t)ni * sizeof(int32_t));
		double *pop = calloc((size_t)ni, sizeof(double));
		if (!lists || !rec || !pop_order || !pop) {
			free(pop);
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		for (int64_t i = 0; i < train.indptr[nu]; i++)
			pop[train.indices[i]] += 1;
		for (int32_t i = 0; i < ni; i++)
			pop_order[i] = i;
		qsort_r(pop_order, (size_t)ni, sizeof(int32_t), pop_cmp, pop);
		free(pop);
		float *uf = sx_als_user_factors(val);
		for (size_t e = 0; e < nev; e++) {
			int got = sx_als_recommend(val, uf + (size_t)ev[e].u * (size_t)t->k, ev[e].train, ev[e].ntrain, K,
						   rec, NULL);
			if (got < 0) {
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			for (size_t i = 0; i < K; i++)
				lists[e * K + i] = i < (size_t)got ? rec[i] : -1;
			sx__models_ranking_add(&rm, rec, (size_t)got, ev[e].rel, ev[e].nrel, K);
		}
		sx_metrics_coverage(lists, nev, K, K, (size_t)ni, &rm.coverage);
		for (size_t e = 0; e < nev; e++) {
			size_t got = 0;
			for (int32_t i = 0; i < ni && got < K; i++)
				if (!in_sorted(ev[e].train, ev[e].ntrain, pop_order[i]))
					rec[got++] = pop_order[i];
			for (size_t i = 0; i < K; i++)
				lists[e * K + i] = i < got ? rec[i] : -1;
			sx__models_ranking_add(&rb, rec, got, ev[e].rel, ev[e].nrel, K);
		}
		sx_metrics_coverage(lists, nev, K, K, (size_t)ni, &rb.coverage);
		double dn = (double)nev;
		rm.precision /= dn, rm.recall /= dn, rm.ndcg /= dn, rm.map /= dn;
		rb.precision /= dn, rb.recall /= dn, rb.ndcg /= dn, rb.map /= dn;
	}
	if (!nev || t->refit) {
		if (!(fin = als_fit(t, (int32_t)nu, ni, &full, nev ? 0.5 : 0.0, nev ? 0.45 : 0.9, &rc)))
			goto out;
	} else {
		fin = val, val = NULL;
	}
	sx_job_progress(t->job, 0.96, "building the model");
	m->n_users = (int32_t)nu, m->n_items = ni, m->k = t->k, m->lambda = t->lambda, m->alpha = t->alpha;
	if (!(m->als = sx_als_new(m->n_users, ni, t->k, t->lambda, t->alpha, 1, 1)) ||
	    sx_als_set_factors(m->als, sx_als_user_factors(fin), sx_als_item_factors(fin)) < 0) {
		rc = sx_diag_set(SX_ENOMEM, "cannot build the model");
		goto out;
	}
	if (!(m->weights = malloc(t->nweights * sizeof(*m->weights)))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	memcpy(m->weights, t->weights, t->nweights * sizeof(*m->weights));
	m->nweights = t->nweights;
	/* Reference score distribution: the top-k scores served to training users. */
	size_t nref = nu < REF_USERS ? nu : REF_USERS, got_ref = 0;
	refscores = malloc(nref * K * sizeof(double) + 1);
	int32_t *ri = malloc(K * sizeof(int32_t));
	float *rs = malloc(K * sizeof(float));
	if (!refscores || !ri || !rs) {
		free(ri), free(rs);
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	float *fuf = sx_als_user_factors(m->als);
	for (size_t i = 0; i < nref; i++) {
		size_t uu = i * nu / nref;
		int got = sx_als_recommend(m->als, fuf + uu * (size_t)t->k, full.indices + full.indptr[uu],
					   (size_t)(full.indptr[uu + 1] - full.indptr[uu]), K, ri, rs);
		for (int j = 0; j < got; j++)
			refscores[got_ref++] = rs[j];
	}
	free(ri), free(rs);
	sx__models_ref_fit(refscores, got_ref, m->ref_edges, m->ref_expected);
	m->has_ref = got_ref > 0;
	if (t->prod && t->prod->type == SX_MODEL_ALS && nev) {
		sx_job_progress(t->job, 0.98, "comparing with production");
		t->cmp_cand = foldin_ndcg(m, &m->items, ev, nev, K);
		t->cmp_prod = foldin_ndcg(t->prod, &m->items, ev, nev, K);
	}

	msgpack_packer pk;
	msgpack_packer_init(&pk, &m->metrics, msgpack_sbuffer_write);
	int has_cmp = !isnan(t->cmp_prod);
	msgpack_pack_map(&pk, 14 + has_cmp);
	sx_pack_kv_int(&pk, "k", (int64_t)K);
	sx_pack_kv_uint(&pk, "skipped_events_no_consent", c.skipped);
	sx_pack_kv_uint(&pk, "users", nu);
	sx_pack_kv_uint(&pk, "items", (uint64_t)ni);
	sx_pack_kv_uint(&pk, "interactions", c.n);
	sx_pack_kv_uint(&pk, "train_interactions", c.n - ntest_total);
	sx_pack_kv_uint(&pk, "test_interactions", ntest_total);
	sx_pack_kv_uint(&pk, "users_evaluated", nev);
	if (!nev) {
		rm.precision = rm.recall = rm.ndcg = rm.map = rm.coverage = NAN;
		rb = rm;
	}
	sx__models_ranking_pack(&pk, &rm);
	sx_pack_key(&pk, "baseline");
	msgpack_pack_map(&pk, 6);
	sx_pack_kv_str(&pk, "name", "popularity");
	sx__models_ranking_pack(&pk, &rb);
	if (has_cmp)
		sx__pack_comparison(&pk, t, "ndcg_foldin");
	rc = 0;
out:
	if (txn)
		sx_store_rtxn_end(sx__models_eng->store, txn);
	free(c.r), free(ustart), free(ucnt), free(utrain), free(lists), free(rec), free(pop_order), free(refscores);
	if (ev)
		for (size_t i = 0; i < nu; i++)
			free(ev[i].rel);
	free(ev);
	csr_free(&train), csr_free(&full);
	sx_als_free(val), sx_als_free(fin);
	if (rc < 0)
		sx_model_unref(m);
	else
		t->out = m;
	return rc;
}

/* ---- logistic regression ---- */

/* Fits a standardised model on X[n][d] (copied). Fills m's mean, scale,
 * coef, intercept and lr. */
static int logistic_fit(struct sx_model *m, const double *X, const uint8_t *y, size_t n, size_t d,
			const struct sx_logreg_opts *opts, int balanced, int *n_iter, int *converged)
{
	struct sx_logreg_opts o;
	double *Z = malloc(n * d * sizeof(double));
	if (!Z)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (!m->mean)
		m->mean = malloc(d * sizeof(double)), m->scale = malloc(d * sizeof(double)), m->coef = malloc(d * sizeof(double));
	if (!m->lr)
		m->lr = sx_logreg_new(d);
	if (!m->mean || !m->scale || !m->coef || !m->lr) {
		free(Z);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	m->d = d;
	if (opts)
		o = *opts;
	else
		sx_logreg_opts_default(&o);
	int rc;
	if (balanced && (rc = sx_logreg_balanced_weights(y, n, o.class_weight)) < 0) {
		free(Z);
		return sx_diag_set(rc, "class_weight \"balanced\" needs both classes in the training rows");
	}
	memcpy(Z, X, n * d * sizeof(double));
	sx_logreg_standardize_fit(Z, n, d, m->mean, m->scale);
	sx_logreg_standardize_apply(Z, n, d, m->mean, m->scale);
	rc = sx_logreg_fit(m->lr, Z, y, NULL, n, &o);
	free(Z);
	if (rc < 0)
		return sx_diag_set(rc, "logistic regression: invalid training data or options");
	memcpy(m->coef, sx_logreg_coef(m->lr), d * sizeof(double));
	m->intercept = sx_logreg_intercept(m->lr);
	if (n_iter)
		*n_iter = sx_logreg_n_iter(m->lr);
	if (converged)
		*converged = sx_logreg_converged(m->lr);
	return 0;
}

static int set_names(struct sx_model *m, const char *const *names, size_t d)
{
	if (!(m->features = calloc(d, sizeof(char *))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	m->d = d;
	for (size_t j = 0; j < d; j++) {
		char b[32];
		if (!names)
			snprintf(b, sizeof(b), "f%zu", j);
		if (!(m->features[j] = strdup(names ? names[j] : b)))
			return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	return 0;
}

struct sx_model *sx_models_logistic_fit(const char *name, const double *X, const uint8_t *y, size_t n, size_t d,
					const char *const *names, const struct sx_logreg_opts *opts)
{
	if (!name || !sx__models_name_ok(name, strlen(name)) || !X || !y || n == 0 || d == 0) {
		sx_diag_set(SX_EINVAL, "logistic fit: bad arguments");
		return NULL;
	}
	struct sx_model *m = sx__model_new(SX_MODEL_LOGISTIC, name);
	if (!m)
		return NULL;
	if (set_names(m, names, d) < 0 || logistic_fit(m, X, y, n, d, opts, 0, NULL, NULL) < 0) {
		sx_model_unref(m);
		return NULL;
	}
	return m;
}

static void proba(const struct sx_model *m, const double *X, size_t n, double *p)
{
	for (size_t i = 0; i < n; i++)
		sx_model_predict_proba(m, X + i * m->d, NULL, NULL, &p[i]);
}

static double auc_or_nan(const double *p, const uint8_t *y, size_t n)
{
	double a;
	return sx_metrics_auc(p, y, n, &a) == 0 ? a : NAN;
}

static int logistic_run(struct sx_train *t)
{
	struct sx_model *m = sx__model_new(SX_MODEL_LOGISTIC, t->name);
	double *Xall = NULL, *p = NULL, *ref = NULL;
	uint8_t *yall = NULL;
	int rc, n_iter = 0, conv = 0;
	if (!m)
		return SX_ENOMEM;
	if ((rc = set_names(m, (const char *const *)t->names, t->d)) < 0)
		goto out;
	/* The holdout is the last rows unless a test set was given. */
	const double *Xtr = t->X, *Xte = t->Xt;
	const uint8_t *ytr = t->y, *yte = t->yt;
	size_t ntr = t->n, nte = t->nt, d = t->d;
	if (!t->Xt) {
		nte = (size_t)floor((double)t->n * t->holdout);
		ntr = t->n - nte;
		Xte = t->X + ntr * d, yte = t->y + ntr;
	}
	sx_job_progress(t->job, 0.1, "fitting");
	if ((rc = logistic_fit(m, Xtr, ytr, ntr, d, &t->lo, t->balanced, &n_iter, &conv)) < 0)
		goto out;
	if (sx_job_cancelled(t->job)) {
		rc = sx_diag_set(SX_ECANCELED, "cancelled");
		goto out;
	}
	msgpack_packer pk;
	msgpack_packer_init(&pk, &m->metrics, msgpack_sbuffer_write);
	double base = 0;
	for (size_t i = 0; i < ntr; i++)
		base += ytr[i];
	base /= (double)ntr;
	double auc = NAN, ll = NAN, brier = NAN, acc = NAN, bll = NAN, bbrier = NAN;
	double mp[10], ob[10];
	size_t cnt[10];
	int has_test = nte > 0;
	if (has_test) {
		sx_job_progress(t->job, 0.5, "evaluating");
		if (!(p = malloc(nte * sizeof(double)))) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		proba(m, Xte, nte, p);
		auc = auc_or_nan(p, yte, nte);
		sx_metrics_log_loss(p, yte, nte, &ll);
		sx_metrics_brier(p, yte, nte, &brier);
		sx_metrics_calibration(p, yte, nte, 10, mp, ob, cnt);
		size_t right = 0;
		for (size_t i = 0; i < nte; i++)
			right += (p[i] >= 0.5) == (yte[i] == 1);
		acc = (double)right / (double)nte;
		for (size_t i = 0; i < nte; i++)
			p[i] = base;
		sx_metrics_log_loss(p, yte, nte, &bll);
		sx_metrics_brier(p, yte, nte, &bbrier);
	}
	size_t nall = ntr;
	const double *Xfit = Xtr;
	const uint8_t *yfit = ytr;
	if (has_test && t->refit) {
		sx_job_progress(t->job, 0.6, "refitting on all rows");
		nall = ntr + nte;
		if (t->Xt) {
			Xall = malloc(nall * d * sizeof(double)), yall = malloc(nall);
			if (!Xall || !yall) {
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			memcpy(Xall, t->X, ntr * d * sizeof(double));
			memcpy(Xall + ntr * d, t->Xt, nte * d * sizeof(double));
			memcpy(yall, t->y, ntr);
			memcpy(yall + ntr, t->yt, nte);
			Xfit = Xall, yfit = yall;
		} else {
			Xfit = t->X, yfit = t->y;
		}
		if ((rc = logistic_fit(m, Xfit, yfit, nall, d, &t->lo, t->balanced, &n_iter, &conv)) < 0)
			goto out;
	}
	if (!(ref = malloc(nall * sizeof(double)))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	proba(m, Xfit, nall, ref);
	sx__models_ref_fit(ref, nall, m->ref_edges, m->ref_expected);
	m->has_ref = 1;
	/* Same test rows for the candidate and the model it may replace. */
	if (t->prod && t->prod->type == SX_MODEL_LOGISTIC && t->prod->d == d && has_test) {
		int same = 1;
		for (size_t j = 0; j < d; j++)
			same &= strcmp(t->prod->features[j], m->features[j]) == 0;
		if (same) {
			proba(m, Xte, nte, p);
			t->cmp_cand = auc_or_nan(p, yte, nte);
			proba(t->prod, Xte, nte, p);
			t->cmp_prod = auc_or_nan(p, yte, nte);
		}
	}
	int has_cmp = !isnan(t->cmp_prod);
	msgpack_pack_map(&pk, 12 + has_cmp);
	sx_pack_kv_uint(&pk, "n_train", ntr);
	sx_pack_kv_uint(&pk, "n_test", nte);
	sx_pack_kv_double(&pk, "base_rate", base);
	sx_pack_kv_int(&pk, "n_iter", n_iter);
	sx_pack_kv_bool(&pk, "converged", conv);
	sx_pack_key(&pk, "auc");
	sx__pack_num(&pk, auc);
	sx_pack_key(&pk, "log_loss");
	sx__pack_num(&pk, ll);
	sx_pack_key(&pk, "brier");
	sx__pack_num(&pk, brier);
	sx_pack_key(&pk, "accuracy");
	sx__pack_num(&pk, acc);
	sx_pack_key(&pk, "calibration");
	if (has_test) {
		msgpack_pack_array(&pk, 10);
		for (int b = 0; b < 10; b++) {
			msgpack_pack_map(&pk, 5);
			sx_pack_kv_double(&pk, "lo", b / 10.0);
			sx_pack_kv_double(&pk, "hi", (b + 1) / 10.0);
			sx_pack_kv_uint(&pk, "count", cnt[b]);
			sx_pack_key(&pk, "mean_predicted");
			sx__pack_num(&pk, mp[b]);
			sx_pack_key(&pk, "observed");
			sx__pack_num(&pk, ob[b]);
		}
	} else {
		msgpack_pack_nil(&pk);
	}
	sx_pack_key(&pk, "baseline");
	msgpack_pack_map(&pk, 3);
	sx_pack_kv_str(&pk, "name", "base_rate");
	sx_pack_key(&pk, "log_loss");
	sx__pack_num(&pk, bll);
	sx_pack_key(&pk, "brier");
	sx__pack_num(&pk, bbrier);
	sx_pack_key(&pk, "features");
	msgpack_pack_array(&pk, d);
	for (size_t j = 0; j < d; j++)
		sx_pack_str(&pk, m->features[j]);
	if (has_cmp)
		sx__pack_comparison(&pk, t, "auc");
	rc = 0;
out:
	free(Xall), free(yall), free(p), free(ref);
	if (rc < 0)
		sx_model_unref(m);
	else
		t->out = m;
	return rc;
}

int sx__train_run(struct sx_train *t, struct sx_job *job)
{
	t->job = job;
	int64_t t0 = (int64_t)sx_now_ms();
	int rc;
	switch (t->type) {
	case SX_MODEL_ALS: rc = als_run(t); break;
	case SX_MODEL_LOGISTIC: rc = logistic_run(t); break;
	case SX_MODEL_TEXT: rc = sx__text_run(t); break;
	default: rc = sx__behaviour_run(t); break;
	}
	if (rc < 0)
		return rc;
	struct sx_model *m = t->out;
	m->train_ms = (int64_t)sx_now_ms() - t0;
	int windowed = t->type == SX_MODEL_ALS || t->type == SX_MODEL_BEHAVIOUR || (t->type == SX_MODEL_TEXT && t->from_events);
	m->data_from = windowed ? t->from : -1;
	m->data_to = windowed ? t->to : -1;
	msgpack_sbuffer_write(&m->params, t->params.data, t->params.size);
	return 0;
}
