/* Behaviour model training: a recency-weighted Markov chain over event names
 * (next-action probabilities) and item-to-item co-visitation with time
 * decay (core/math/behaviour.h), from the events plugin's per-user history,
 * validated on a time-based holdout against popularity baselines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jobs.h"
#include "core/math/behaviour.h"
#include "core/math/metrics.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/models/internal.h"
#include "store/store.h"

#define NAMES_MAX 64 /* entries of params.names / params.item_events */
#define REF_USERS 2000
#define MINUTE 60000.0
#define DAY 86400000.0

typedef char name_buf[SX_TEXT_LABEL_MAX + 1];

static int names_arg(const msgpack_object *p, const char *key, name_buf **out, size_t *n)
{
	const msgpack_object *a = sx_arg(p, key);
	*out = NULL, *n = 0;
	if (!a || a->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0 || a->via.array.size > NAMES_MAX)
		return sx_diag_set(SX_EINVAL, "params: '%s' must be a list of 1 to %d event names", key, NAMES_MAX);
	if (!(*out = calloc(a->via.array.size, sizeof(name_buf))))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *s = &a->via.array.ptr[i];
		if (s->type != MSGPACK_OBJECT_STR || s->via.str.size == 0 || s->via.str.size > SX_EVENTS_ID_MAX ||
		    memchr(s->via.str.ptr, 0, s->via.str.size))
			return sx_diag_set(SX_EINVAL, "params: %s[%u] must be an event name", key, i);
		memcpy((*out)[i], s->via.str.ptr, s->via.str.size);
	}
	*n = a->via.array.size;
	return 0;
}

static void pack_names(msgpack_packer *pk, const char *key, name_buf *v, size_t n)
{
	sx_pack_key(pk, key);
	if (!v) {
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		sx_pack_str(pk, v[i]);
}

int sx__behaviour_prepare(struct sx_train *t, const msgpack_object *p, const msgpack_object *data)
{
	static const char *const pk_known[] = {"names", "item_events", "half_life_days", "max_gap_minutes", "smoothing",
		"decay", "order", "window_minutes", "gap_half_life_minutes", "age_half_life_days", "lookback", "neighbors",
		"recent_items", "item_decay", "holdout", "k", "refit", NULL};
	static const char *const dk_known[] = {"from", "to", NULL};
	double half = 30, gap = 30, smooth = 1, decay = 0.5, window = 1440, ghalf = 60, ahalf = 30, idecay = 0.8,
	       holdout = 0.2;
	int64_t order = 3, lookback = 10, neighbors = 50, recent = 10, k = 10;
	int refit = 1, rc;
	if ((rc = sx__train_check_only(p, "params", pk_known)) < 0 ||
	    (rc = sx__train_check_only(data, "data", dk_known)) < 0)
		return rc;
	if ((rc = sx__train_opt_num(p, "half_life_days", 0, 36500, &half)) < 0 ||
	    (rc = sx__train_opt_num(p, "max_gap_minutes", 0, 5256000, &gap)) < 0 ||
	    (rc = sx__train_opt_num(p, "smoothing", 0, 1e6, &smooth)) < 0 ||
	    (rc = sx__train_opt_num(p, "decay", 0, 1, &decay)) < 0 ||
	    (rc = sx__train_opt_num(p, "window_minutes", 0, 5256000, &window)) < 0 ||
	    (rc = sx__train_opt_num(p, "gap_half_life_minutes", 0, 5256000, &ghalf)) < 0 ||
	    (rc = sx__train_opt_num(p, "age_half_life_days", 0, 36500, &ahalf)) < 0 ||
	    (rc = sx__train_opt_num(p, "item_decay", 0, 1, &idecay)) < 0 ||
	    (rc = sx__train_opt_num(p, "holdout", 0, 0.9, &holdout)) < 0 ||
	    (rc = sx__train_opt_int(p, "order", 1, 100, &order)) < 0 ||
	    (rc = sx__train_opt_int(p, "lookback", 1, 1000, &lookback)) < 0 ||
	    (rc = sx__train_opt_int(p, "neighbors", 1, 1000, &neighbors)) < 0 ||
	    (rc = sx__train_opt_int(p, "recent_items", 1, 1000, &recent)) < 0 ||
	    (rc = sx__train_opt_int(p, "k", 1, 1000, &k)) < 0)
		return rc;
	if ((rc = sx_arg_bool(p, "refit", 0, &refit)) < 0)
		return sx__diag_prefix(rc, "params");
	if ((rc = names_arg(p, "names", &t->bnames, &t->nbnames)) < 0 ||
	    (rc = names_arg(p, "item_events", &t->inames, &t->ninames)) < 0 ||
	    (rc = sx__train_window(data, &t->from, &t->to)) < 0)
		return rc;
	t->half_life_ms = half * DAY, t->max_gap_ms = (int64_t)(gap * MINUTE), t->smoothing = smooth, t->decay = decay;
	t->window_ms = (int64_t)(window * MINUTE), t->gap_half_life_ms = ghalf * MINUTE, t->age_half_life_ms = ahalf * DAY;
	t->item_decay = idecay, t->holdout = holdout, t->order = (int)order, t->lookback = (int)lookback;
	t->top_n = (int)neighbors, t->recent_items = (int)recent, t->eval_k = (int)k, t->refit = refit;

	msgpack_packer pk;
	msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 17);
	pack_names(&pk, "names", t->bnames, t->nbnames);
	pack_names(&pk, "item_events", t->inames, t->ninames);
	sx_pack_kv_double(&pk, "half_life_days", half);
	sx_pack_kv_double(&pk, "max_gap_minutes", gap);
	sx_pack_kv_double(&pk, "smoothing", smooth);
	sx_pack_kv_double(&pk, "decay", decay);
	sx_pack_kv_int(&pk, "order", order);
	sx_pack_kv_double(&pk, "window_minutes", window);
	sx_pack_kv_double(&pk, "gap_half_life_minutes", ghalf);
	sx_pack_kv_double(&pk, "age_half_life_days", ahalf);
	sx_pack_kv_int(&pk, "lookback", lookback);
	sx_pack_kv_int(&pk, "neighbors", neighbors);
	sx_pack_kv_int(&pk, "recent_items", recent);
	sx_pack_kv_double(&pk, "item_decay", idecay);
	sx_pack_kv_double(&pk, "holdout", holdout);
	sx_pack_kv_int(&pk, "k", k);
	sx_pack_kv_bool(&pk, "refit", refit);
	return 0;
}

/* ---- reading events ---- */

struct brec {
	uint32_t user;
	int32_t name, item; /* -1: not used */
	int64_t time;
	uint64_t seq;
};

struct bcollect {
	struct sx_train *t;
	struct sx_model *m;
	struct brec *r;
	size_t n, cap, seen;
	uint32_t *skipped; /* users without consent, with repeats */
	size_t nskipped, skcap;
	int64_t tmax;
};

static int listed(name_buf *v, size_t n, const char *s, size_t len)
{
	if (!v)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (strlen(v[i]) == len && memcmp(v[i], s, len) == 0)
			return 1;
	return 0;
}

static int bcollect_cb(const struct sx_event *ev, void *ud)
{
	struct bcollect *c = ud;
	struct sx_train *t = c->t;
	if ((++c->seen & 4095) == 0 && sx_job_cancelled(t->job))
		return sx_diag_set(SX_ECANCELED, "cancelled");
	if (!sx_privacy_snapshot_allows(&t->consent, ev->user)) {
		if (c->nskipped == c->skcap) {
			size_t cap = c->skcap ? c->skcap * 2 : 256;
			uint32_t *a = realloc(c->skipped, cap * sizeof(uint32_t));
			if (!a)
				return sx_diag_set(SX_ENOMEM, "out of memory");
			c->skipped = a, c->skcap = cap;
		}
		if (!c->nskipped || c->skipped[c->nskipped - 1] != ev->user)
			c->skipped[c->nskipped++] = ev->user;
		return 0;
	}
	int32_t name = -1, item = -1;
	if (listed(t->bnames, t->nbnames, ev->name, ev->name_len)) {
		if ((name = sx__idmap_get(&c->m->names, ev->name, ev->name_len, 1)) < -1)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		if (c->m->names.n > SX_MARKOV_MAX_STATES)
			return sx_diag_set(SX_EINVAL, "more than %d distinct event names: list the ones to model in params.names",
					   SX_MARKOV_MAX_STATES);
	}
	if (ev->item && listed(t->inames, t->ninames, ev->name, ev->name_len) &&
	    (item = sx__idmap_get(&c->m->items, ev->item, ev->item_len, 1)) < -1)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (name < 0 && item < 0)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4096;
		struct brec *r = realloc(c->r, cap * sizeof(*r));
		if (!r)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		c->r = r, c->cap = cap;
	}
	c->r[c->n++] = (struct brec){ev->user, name, item, ev->time, ev->seq};
	if (ev->time > c->tmax)
		c->tmax = ev->time;
	return 0;
}

static int brec_cmp(const void *a, const void *b)
{
	const struct brec *x = a, *y = b;
	if (x->user != y->user)
		return x->user < y->user ? -1 : 1;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int i64_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int i32_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return x < y ? -1 : x > y;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* ---- fitting ---- */

struct seqs {
	int32_t *names, *items;
	int64_t *ntimes, *itimes;
};

/* Fits a chain and co-visitation lists on each user's events before `cut`
 * (all when cut < 0). */
static int fit(struct sx_train *t, const struct brec *r, const size_t *ustart, size_t nu, int64_t cut, int64_t t_ref,
	       int32_t nnames, int32_t nitems, struct seqs *s, struct sx_markov **mk, struct sx_covisit **cv)
{
	struct sx_markov_opts mo = {t_ref, t->half_life_ms, t->max_gap_ms};
	struct sx_covisit_opts co = {t_ref, t->window_ms, t->gap_half_life_ms, t->age_half_life_ms, (size_t)t->lookback,
				     (size_t)t->top_n};
	*mk = sx_markov_new(nnames);
	*cv = sx_covisit_new(nitems > 0 ? nitems : 1, &co);
	if (!*mk || !*cv)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = 0;
	for (size_t u = 0; u < nu && rc == 0; u++) {
		size_t nn = 0, ni = 0;
		for (size_t i = ustart[u]; i < ustart[u + 1]; i++) {
			if (cut >= 0 && r[i].time >= cut)
				break;
			if (r[i].name >= 0)
				s->names[nn] = r[i].name, s->ntimes[nn++] = r[i].time;
			if (r[i].item >= 0)
				s->items[ni] = r[i].item, s->itimes[ni++] = r[i].time;
		}
		if ((rc = sx_markov_add(*mk, s->names, s->ntimes, nn, &mo)) == 0)
			rc = sx_covisit_add(*cv, s->items, s->itimes, ni);
		if (rc == 0 && (u & 1023) == 1023 && sx_job_cancelled(t->job))
			rc = sx_diag_set(SX_ECANCELED, "cancelled");
	}
	if (rc == 0)
		rc = sx_covisit_finish(*cv);
	return rc;
}

struct actions {
	double acc, hit, mrr, ll;
	size_t n;
};

static void action_add(struct actions *a, const double *p, int32_t n, int32_t truth, int32_t k)
{
	int32_t rank = 1;
	for (int32_t b = 0; b < n; b++)
		rank += p[b] > p[truth] || (p[b] == p[truth] && b < truth);
	a->acc += rank == 1;
	a->hit += rank <= k;
	a->mrr += 1.0 / rank;
	a->ll -= log(p[truth] > 1e-15 ? p[truth] : 1e-15);
	a->n++;
}

static void pack_actions(msgpack_packer *pk, const struct actions *a, int32_t k)
{
	double n = a->n ? (double)a->n : NAN;
	sx_pack_kv_uint(pk, "k", (uint64_t)k);
	sx_pack_key(pk, "accuracy");
	sx__pack_num(pk, a->acc / n);
	sx_pack_key(pk, "hit_rate");
	sx__pack_num(pk, a->hit / n);
	sx_pack_key(pk, "mrr");
	sx__pack_num(pk, a->mrr / n);
	sx_pack_key(pk, "log_loss");
	sx__pack_num(pk, a->ll / n);
}

/* NDCG@k on the evaluated users of another behaviour model, mapping item
 * ids through their strings. */
static double other_ndcg(const struct sx_model *o, const struct sx_idmap *items, int32_t *const *train, const size_t *ntrain,
			 int32_t *const *rel, const size_t *nrel, size_t nev, size_t k)
{
	double sum = 0;
	size_t n = 0;
	for (size_t e = 0; e < nev; e++) {
		int32_t *mi = malloc((ntrain[e] ? ntrain[e] : 1) * sizeof(int32_t)), *out = malloc(k * sizeof(int32_t));
		size_t nm = 0;
		int got = -1;
		if (mi && out) {
			for (size_t i = 0; i < ntrain[e]; i++) {
				int32_t it = train[e][i];
				int32_t j = sx__idmap_get((struct sx_idmap *)&o->items, items->ids[it], items->lens[it], 0);
				if (j >= 0)
					mi[nm++] = j;
			}
			got = sx__behaviour_items(o, mi, nm, k, out, NULL);
			for (int i = 0; i < got; i++)
				out[i] = sx__idmap_get((struct sx_idmap *)items, o->items.ids[out[i]], o->items.lens[out[i]], 0);
		}
		if (got >= 0) {
			sum += sx_metrics_ndcg_at_k(out, (size_t)got, rel[e], nrel[e], k);
			n++;
		}
		free(mi), free(out);
	}
	return n ? sum / (double)n : NAN;
}

int sx__behaviour_run(struct sx_train *t)
{
	struct sx_model *m = sx__model_new(SX_MODEL_BEHAVIOUR, t->name);
	struct bcollect c = {0};
	MDB_txn *txn = NULL;
	size_t *ustart = NULL, nu = 0, nev = 0;
	struct seqs s = {0};
	struct sx_markov *vm = NULL;
	struct sx_covisit *vc = NULL;
	int64_t *times = NULL;
	double *p = NULL, *pop = NULL, *refs = NULL;
	int32_t *lists = NULL, *out = NULL, *pop_order = NULL, **etrain = NULL, **erel = NULL;
	size_t *entrain = NULL, *enrel = NULL;
	int rc;
	if (!m)
		return SX_ENOMEM;
	c.t = t, c.m = m, c.tmax = -1;
	sx_job_progress(t->job, 0.0, "reading events");
	if ((rc = sx_store_rtxn_begin(sx__models_eng->store, &txn)) < 0)
		goto out;
	rc = sx_events_range_scan(txn, t->from < 0 ? 0 : t->from, t->to < 0 ? SX_EVENTS_TIME_MAX + 1 : t->to, bcollect_cb,
				  &c);
	sx_store_rtxn_end(sx__models_eng->store, txn);
	if (rc < 0)
		goto out;
	if (c.n == 0 || m->names.n == 0) {
		rc = sx_diag_set(SX_ESTATE, "no events: nothing in the window passes params.names");
		goto out;
	}
	qsort(c.r, c.n, sizeof(*c.r), brec_cmp);
	if (c.nskipped)
		qsort(c.skipped, c.nskipped, sizeof(uint32_t), u32_cmp);
	size_t skipped_users = 0;
	for (size_t i = 0; i < c.nskipped; i++)
		skipped_users += i == 0 || c.skipped[i] != c.skipped[i - 1];
	for (size_t i = 0; i < c.n; i++)
		nu += i == 0 || c.r[i].user != c.r[i - 1].user;
	int32_t nn = m->names.n, ni = m->items.n;
	ustart = malloc((nu + 1) * sizeof(size_t));
	s.names = malloc(c.n * sizeof(int32_t)), s.items = malloc(c.n * sizeof(int32_t));
	s.ntimes = malloc(c.n * sizeof(int64_t)), s.itimes = malloc(c.n * sizeof(int64_t));
	times = malloc(c.n * sizeof(int64_t));
	p = malloc((size_t)nn * sizeof(double));
	if (!ustart || !s.names || !s.items || !s.ntimes || !s.itimes || !times || !p) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0, u = 0; i < c.n; i++)
		if (i == 0 || c.r[i].user != c.r[i - 1].user)
			ustart[u++] = i;
	ustart[nu] = c.n;
	int64_t t_end = t->to >= 0 ? t->to : c.tmax + 1;
	/* Time-based holdout: events at or after `cut` are the test period. */
	int64_t cut = -1;
	if (t->holdout > 0) {
		for (size_t i = 0; i < c.n; i++)
			times[i] = c.r[i].time;
		qsort(times, c.n, sizeof(int64_t), i64_cmp);
		size_t ci = (size_t)floor((double)c.n * (1 - t->holdout));
		cut = ci < c.n && times[ci] > times[0] ? times[ci] : -1;
	}
	size_t K = (size_t)t->eval_k;
	int32_t KA = (int32_t)(K < (size_t)nn ? K : (size_t)nn);
	struct actions am = {0}, ab = {0};
	struct sx_models_ranking rm = {0}, rb = {0};
	size_t test_events = 0;
	if (cut >= 0) {
		sx_job_progress(t->job, 0.2, "fitting on the training period");
		if ((rc = fit(t, c.r, ustart, nu, cut, cut, nn, ni, &s, &vm, &vc)) < 0)
			goto out;
		sx_job_progress(t->job, 0.45, "evaluating");
		double *base = malloc((size_t)nn * sizeof(double));
		if (!base || (rc = sx_markov_predict(vm, NULL, 0, t->smoothing, t->decay, base)) < 0) {
			free(base);
			if (!rc)
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
			if (rc == SX_ESTATE)
				rc = 0, cut = -1; /* nothing before the cut */
			goto eval_done;
		}
		/* Popularity: the number of training users per item. */
		pop = calloc((size_t)(ni > 0 ? ni : 1), sizeof(double));
		pop_order = malloc((size_t)(ni > 0 ? ni : 1) * sizeof(int32_t));
		etrain = calloc(nu, sizeof(int32_t *)), erel = calloc(nu, sizeof(int32_t *));
		entrain = calloc(nu, sizeof(size_t)), enrel = calloc(nu, sizeof(size_t));
		out = malloc((K + 1) * sizeof(int32_t));
		if (!pop || !pop_order || !etrain || !erel || !entrain || !enrel || !out) {
			free(base);
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t u = 0; u < nu; u++) {
			size_t nti = 0;
			for (size_t i = ustart[u]; i < ustart[u + 1] && c.r[i].time < cut; i++)
				if (c.r[i].item >= 0)
					s.items[nti++] = c.r[i].item;
			qsort(s.items, nti, sizeof(int32_t), i32_cmp);
			for (size_t i = 0; i < nti; i++)
				if (i == 0 || s.items[i] != s.items[i - 1])
					pop[s.items[i]] += 1;
		}
		for (int32_t i = 0; i < ni; i++)
			pop_order[i] = i;
		{
			/* Most popular first, ties by id: a stable insertion by count. */
			int32_t *tmp = malloc((size_t)(ni > 0 ? ni : 1) * sizeof(int32_t));
			size_t *bucket = NULL;
			if (tmp) {
				double maxp = 0;
				for (int32_t i = 0; i < ni; i++)
					maxp = pop[i] > maxp ? pop[i] : maxp;
				bucket = calloc((size_t)maxp + 2, sizeof(size_t));
			}
			if (!tmp || !bucket) {
				free(tmp), free(bucket), free(base);
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			size_t maxc = 0;
			for (int32_t i = 0; i < ni; i++)
				maxc = (size_t)pop[i] > maxc ? (size_t)pop[i] : maxc;
			for (int32_t i = 0; i < ni; i++)
				bucket[maxc - (size_t)pop[i] + 1]++;
			for (size_t b = 1; b <= maxc + 1; b++)
				bucket[b] += bucket[b - 1];
			for (int32_t i = 0; i < ni; i++)
				tmp[bucket[maxc - (size_t)pop[i]]++] = i;
			memcpy(pop_order, tmp, (size_t)ni * sizeof(int32_t));
			free(tmp), free(bucket);
		}
		lists = malloc((nu * K + 1) * sizeof(int32_t) * 2);
		if (!lists) {
			free(base);
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		int32_t *blists = lists + nu * K;
		for (size_t u = 0; u < nu; u++) {
			size_t nh = 0, nti = 0, ntest = 0;
			/* next actions: every test event after at least one event */
			for (size_t i = ustart[u]; i < ustart[u + 1]; i++) {
				if (c.r[i].name < 0)
					continue;
				if (c.r[i].time >= cut && nh > 0) {
					size_t take = nh < (size_t)t->order ? nh : (size_t)t->order;
					if (sx_markov_predict(vm, s.names + nh - take, take, t->smoothing, t->decay, p) == 0) {
						action_add(&am, p, nn, c.r[i].name, KA);
						action_add(&ab, base, nn, c.r[i].name, KA);
					}
					test_events++;
				}
				s.names[nh++] = c.r[i].name;
			}
			/* items: held-out items the user had not met before the cut */
			for (size_t i = ustart[u]; i < ustart[u + 1]; i++) {
				if (c.r[i].item < 0)
					continue;
				if (c.r[i].time < cut)
					s.items[nti++] = c.r[i].item;
				else
					s.ntimes[ntest++] = c.r[i].item; /* test items, in the spare array */
			}
			if (!nti || !ntest)
				continue;
			int32_t *tr = malloc(nti * sizeof(int32_t)), *rel = malloc(ntest * sizeof(int32_t));
			if (!tr || !rel) {
				free(tr), free(rel), free(base);
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			memcpy(tr, s.items, nti * sizeof(int32_t));
			int32_t *seen = malloc(nti * sizeof(int32_t));
			if (!seen) {
				free(tr), free(rel), free(base);
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			memcpy(seen, tr, nti * sizeof(int32_t));
			qsort(seen, nti, sizeof(int32_t), i32_cmp);
			size_t nrel = 0;
			for (size_t i = 0; i < ntest; i++) {
				int32_t it = (int32_t)s.ntimes[i];
				if (!bsearch(&it, seen, nti, sizeof(int32_t), i32_cmp))
					rel[nrel++] = it;
			}
			qsort(rel, nrel, sizeof(int32_t), i32_cmp);
			size_t uq = 0;
			for (size_t i = 0; i < nrel; i++)
				if (i == 0 || rel[i] != rel[i - 1])
					rel[uq++] = rel[i];
			nrel = uq;
			if (!nrel) {
				free(tr), free(rel), free(seen);
				continue;
			}
			/* the model: co-visited items of the latest training items */
			size_t take = nti < (size_t)t->recent_items ? nti : (size_t)t->recent_items;
			double *rw = malloc(take * sizeof(double));
			int got = -1;
			if (rw) {
				double w = 1;
				for (size_t i = take; i-- > 0; w *= t->item_decay)
					rw[i] = w;
				got = sx_covisit_recommend(vc, tr + nti - take, rw, take, seen, nti, K, out, NULL);
			}
			free(rw);
			if (got < 0) {
				free(tr), free(rel), free(seen), free(base);
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
				goto out;
			}
			for (size_t i = 0; i < K; i++)
				lists[nev * K + i] = i < (size_t)got ? out[i] : -1;
			sx__models_ranking_add(&rm, out, (size_t)got, rel, nrel, K);
			size_t gb = 0;
			for (int32_t i = 0; i < ni && gb < K; i++)
				if (!bsearch(&pop_order[i], seen, nti, sizeof(int32_t), i32_cmp))
					out[gb++] = pop_order[i];
			for (size_t i = 0; i < K; i++)
				blists[nev * K + i] = i < gb ? out[i] : -1;
			sx__models_ranking_add(&rb, out, gb, rel, nrel, K);
			free(seen);
			etrain[nev] = tr, entrain[nev] = nti, erel[nev] = rel, enrel[nev] = nrel;
			nev++;
		}
		free(base);
		if (nev) {
			sx_metrics_coverage(lists, nev, K, K, (size_t)ni, &rm.coverage);
			sx_metrics_coverage(blists, nev, K, K, (size_t)ni, &rb.coverage);
			double dn = (double)nev;
			rm.precision /= dn, rm.recall /= dn, rm.ndcg /= dn, rm.map /= dn;
			rb.precision /= dn, rb.recall /= dn, rb.ndcg /= dn, rb.map /= dn;
		}
	}
eval_done:
	if (rc < 0)
		goto out;
	if (!nev)
		rm.precision = rm.recall = rm.ndcg = rm.map = rm.coverage = NAN, rb = rm;
	if (cut >= 0 && !t->refit) {
		m->markov = vm, m->covisit = vc;
		vm = NULL, vc = NULL;
	} else {
		sx_job_progress(t->job, 0.7, "fitting on all events");
		if ((rc = fit(t, c.r, ustart, nu, -1, t_end, nn, ni, &s, &m->markov, &m->covisit)) < 0)
			goto out;
	}
	m->smoothing = t->smoothing, m->decay = t->decay, m->item_decay = t->item_decay;
	m->order = t->order, m->recent_items = t->recent_items;
	/* Reference scores: the top next-action probability after the last
	 * events of up to REF_USERS users. */
	sx_job_progress(t->job, 0.9, "reference scores");
	size_t nref = nu < REF_USERS ? nu : REF_USERS, got_ref = 0;
	if (!(refs = malloc((nref ? nref : 1) * sizeof(double)))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nref; i++) {
		size_t u = i * nu / nref, nh = 0;
		for (size_t j = ustart[u]; j < ustart[u + 1]; j++)
			if (c.r[j].name >= 0)
				s.names[nh++] = c.r[j].name;
		if (sx__behaviour_next(m, s.names, nh, p) < 0)
			continue;
		refs[got_ref++] = p[sx_text_argmax(p, nn)];
	}
	sx__models_ref_fit(refs, got_ref, m->ref_edges, m->ref_expected);
	m->has_ref = got_ref > 0;
	if (t->prod && t->prod->type == SX_MODEL_BEHAVIOUR && nev) {
		sx_job_progress(t->job, 0.95, "comparing with production");
		t->cmp_cand = other_ndcg(m, &m->items, etrain, entrain, erel, enrel, nev, K);
		t->cmp_prod = other_ndcg(t->prod, &m->items, etrain, entrain, erel, enrel, nev, K);
	}

	msgpack_packer pk;
	msgpack_packer_init(&pk, &m->metrics, msgpack_sbuffer_write);
	int has_cmp = !isnan(t->cmp_prod);
	msgpack_pack_map(&pk, 17 + has_cmp);
	sx_pack_kv_uint(&pk, "users", nu);
	sx_pack_kv_uint(&pk, "events", c.n);
	sx_pack_kv_uint(&pk, "names", (uint64_t)nn);
	sx_pack_kv_uint(&pk, "items", (uint64_t)ni);
	sx_pack_kv_uint(&pk, "pairs", sx_covisit_pairs(m->covisit));
	sx_pack_kv_uint(&pk, "skipped_users_no_consent", skipped_users);
	sx_pack_key(&pk, "cut");
	if (cut >= 0)
		msgpack_pack_int64(&pk, cut);
	else
		msgpack_pack_nil(&pk);
	sx_pack_kv_uint(&pk, "test_events", test_events);
	sx_pack_kv_int(&pk, "k", (int64_t)K);
	sx_pack_kv_uint(&pk, "users_evaluated", nev);
	sx__models_ranking_pack(&pk, &rm);
	sx_pack_key(&pk, "baseline");
	msgpack_pack_map(&pk, 6);
	sx_pack_kv_str(&pk, "name", "popularity");
	sx__models_ranking_pack(&pk, &rb);
	sx_pack_key(&pk, "next_action");
	msgpack_pack_map(&pk, 7);
	sx_pack_kv_uint(&pk, "events_evaluated", am.n);
	pack_actions(&pk, &am, KA);
	sx_pack_key(&pk, "baseline");
	msgpack_pack_map(&pk, 6);
	sx_pack_kv_str(&pk, "name", "marginal");
	pack_actions(&pk, &ab, KA);
	if (has_cmp)
		sx__pack_comparison(&pk, t, "ndcg");
	rc = 0;
out:
	free(c.r), free(c.skipped), free(ustart), free(times), free(p), free(pop), free(refs), free(lists), free(out);
	free(pop_order), free(s.names), free(s.items), free(s.ntimes), free(s.itimes);
	for (size_t e = 0; e < nev; e++)
		free(etrain[e]), free(erel[e]);
	free(etrain), free(erel), free(entrain), free(enrel);
	sx_markov_free(vm);
	sx_covisit_free(vc);
	if (rc < 0)
		sx_model_unref(m);
	else
		t->out = m;
	return rc;
}
