/* The recommend plugin: methods, observers, training job, evaluation, profiles. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/jobs.h"
#include "core/lua/sandbox.h"
#include "core/scripts.h"
#include "core/log.h"
#include "core/math/metrics.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/experiments/experiments.h"
#include "plugins/privacy/privacy.h"
#include "plugins/recommend/internal.h"
#include "store/store.h"

struct rec *sx__rec;

_Static_assert(SX_REC_ID_MAX == SX_EVENTS_ID_MAX, "item ids of sx_recommend_items");

int64_t sx_rec_item_index(const char *id, size_t len) { return sx__rec ? sx__rec_item_find(id, len) : -1; }

static const struct rec_weight default_weights[] = {{"view", 1}, {"click", 2}, {"create_trip", 3}, {"book", 5}};

static void params_default(struct rec_params *p)
{
	/* tuned with recommend.evaluate on MovieLens and the synthetic set
	 * (bench/README.md, Recommendations): few factors and a mild confidence
	 * generalise best on both */
	p->k = 8, p->iterations = 12, p->cg_steps = 3;
	p->lambda = 1.0f, p->alpha = 5.0f;
	p->nweights = (int)SX_ARRAY_SIZE(default_weights);
	memcpy(p->weights, default_weights, sizeof(default_weights));
}

/* ---- observers ---- */

struct pending {
	uint32_t user, item;
	float w;
	int book;
	int64_t t;
};
static struct pending *pend;
static size_t npend, cappend;

static void track_cb(const struct sx_event *ev, void *ud)
{
	struct rec *R = sx__rec;
	SX_UNUSED(ud);
	if (ev) {
		float w;
		int64_t item;
		if (!ev->item || (w = sx__rec_weight(ev->name, ev->name_len)) <= 0 ||
		    (item = sx__rec_item_find(ev->item, ev->item_len)) < 0)
			return;
		if (npend == cappend) {
			size_t nc = cappend ? cappend * 2 : 256;
			struct pending *np = realloc(pend, nc * sizeof(*np));
			if (!np)
				return;
			pend = np, cappend = nc;
		}
		pend[npend++] = (struct pending){ev->user, (uint32_t)item, w, sx__rec_is_book(ev->name, ev->name_len), ev->time};
		return;
	}
	/* A user seen for the first time is loaded from the store, which already
	 * holds this call's events: only the others get them added one by one. */
	struct rec_state *s = &R->live;
	uint8_t *had = calloc(npend + 1, 1);
	if (!had) {
		npend = 0;
		return;
	}
	for (size_t i = 0; i < npend; i++)
		had[i] = pend[i].user < s->nusers && s->users[pend[i].user];
	for (size_t i = 0; i < npend; i++)
		sx__rec_observe(s, pend[i].user, pend[i].item, pend[i].w, pend[i].book, pend[i].t, had[i]);
	free(had);
	npend = 0;
	sx__rec_flush_dirty(s);
	if (sx__rec_journal_commit(s) < 0)
		sx_log_warn("recommend: cannot journal popularity and co-visitation: %s", sx_diag_last());
}

/* users.put may change the segment attribute */
static void user_cb(uint32_t idx, void *ud)
{
	SX_UNUSED(ud);
	if (sx__rec)
		sx__rec_segment_invalidate(idx);
}

/* A rolled-back request or a failed batch may take back a users.put whose
 * attribute a later event of the batch already cached. */
static void undo_cb(uint64_t tables, void *ud)
{
	SX_UNUSED(ud);
	if (sx__rec && (tables & (uint64_t)1 << SX_T_USERS))
		sx__rec_segment_invalidate(UINT32_MAX);
	/* A journal record (or snapshot) taken back leaves the live counts ahead of what a
	 * replay would rebuild, and segment reclaims depend on the whole table: the next
	 * journal commit writes a snapshot of what is live. */
	if (sx__rec && (tables & (uint64_t)1 << SX_T_ARTIFACTS))
		sx__rec->live.jbytes = SIZE_MAX / 2;
}

static void item_cb(const char *id, size_t len, const struct sx_item *it, void *ud)
{
	SX_UNUSED(ud);
	int64_t idx = it ? sx__rec_item_intern(id, len) : sx__rec_item_find(id, len);
	if (idx < 0)
		return;
	sx__rec_item_update((uint32_t)idx, it);
}

/* ---- argument helpers ---- */

static int id_arg(const msgpack_object *args, const char *key, int required, const char **s, size_t *len)
{
	int rc = sx_arg_str(args, key, required, s, len);
	if (rc < 0)
		return rc;
	if (*s && (*len == 0 || *len > SX_EVENTS_ID_MAX || !sx_utf8_valid(*s, *len) || memchr(*s, 0, *len)))
		return sx_diag_set(SX_EINVAL, "argument '%s' must be 1 to %d bytes of UTF-8", key, SX_EVENTS_ID_MAX);
	return 0;
}

static int n_arg(const msgpack_object *args, const char *key, int64_t def, int64_t max, size_t *out)
{
	int64_t n = def;
	int rc = sx_arg_int(args, key, 0, &n);
	if (rc < 0)
		return rc;
	if (n < 1 || n > max)
		return sx_diag_set(SX_EINVAL, "argument '%s' must be 1..%lld", key, (long long)max);
	*out = (size_t)n;
	return 0;
}

static int kind_arg(const msgpack_object *args, int *kind)
{
	const char *ks = NULL;
	size_t kl = 0;
	int rc = sx_arg_str(args, "kind", 0, &ks, &kl);
	if (rc < 0)
		return rc;
	*kind = -1;
	if (ks && (*kind = sx_item_kind_parse(ks, kl)) < 0)
		return sx_diag_set(SX_EINVAL, "argument 'kind' must be trip, destination, activity or offer");
	return 0;
}

static int item_arg(const msgpack_object *args, uint32_t *out)
{
	const char *id;
	size_t len;
	int rc = id_arg(args, "item", 1, &id, &len);
	if (rc < 0)
		return rc;
	int64_t i = sx__rec_item_find(id, len);
	if (i < 0 || sx__rec->items[i].kind < 0)
		return sx_diag_set(SX_ENOENT, "no item '%.*s'", (int)len, id);
	*out = (uint32_t)i;
	return 0;
}

static int check_context(const msgpack_object *ctx)
{
	static const char *const known[] = {"location", "dates", "budget", "exclude", NULL};
	const msgpack_object *d = NULL, *ex = NULL;
	const char *loc = NULL;
	size_t ll = 0;
	double budget;
	int rc;
	if ((rc = sx_arg_only(ctx, known)) < 0 || (rc = sx_arg_str(ctx, "location", 0, &loc, &ll)) < 0 ||
	    (rc = sx_arg_map(ctx, "dates", 0, &d)) < 0 || (rc = sx_arg_array(ctx, "exclude", 0, &ex)) < 0)
		return sx_diag_set(rc, "context: %s", sx_diag_last());
	if (sx_arg(ctx, "budget")) {
		if ((rc = sx_arg_num(ctx, "budget", 1, &budget)) < 0)
			return sx_diag_set(rc, "context: %s", sx_diag_last());
		if (!(budget >= 0) || !isfinite(budget))
			return sx_diag_set(SX_EINVAL, "context: 'budget' must be a finite number >= 0");
	}
	if (d) {
		static const char *const dk[] = {"from", "to", NULL};
		int64_t from = 0, to = 0;
		if ((rc = sx_arg_only(d, dk)) < 0 || (rc = sx_arg_int(d, "from", 1, &from)) < 0 ||
		    (rc = sx_arg_int(d, "to", 1, &to)) < 0)
			return sx_diag_set(rc, "context.dates: %s", sx_diag_last());
		if (from > to || from < 0 || to > SX_EVENTS_TIME_MAX)
			return sx_diag_set(SX_EINVAL, "context.dates: need 0 <= from <= to (ms since 1970)");
	}
	if (ex) {
		if (ex->via.array.size > 1000)
			return sx_diag_set(SX_EINVAL, "context.exclude: at most 1000 ids");
		for (uint32_t i = 0; i < ex->via.array.size; i++)
			if (ex->via.array.ptr[i].type != MSGPACK_OBJECT_STR)
				return sx_diag_set(SX_EINVAL, "context.exclude: ids must be strings");
	}
	return 0;
}

static int strategy_arg(const msgpack_object *args, char *name, size_t size)
{
	int rc = sx_arg_cstr(args, "strategy", 0, name, size);
	if (rc < 0)
		return rc;
	if (!name[0])
		snprintf(name, size, "%s", sx__rec->default_strategy);
	if (sx_scripts_push(sx__rec->e->scripts, "strategies", name) < 0)
		return sx_diag_set(SX_ENOENT, "no strategy '%s'", name);
	lua_pop(sx_lua_state(sx__rec->e->lua), 1);
	return 0;
}

/* ---- methods ---- */

static int strategy_exists(const char *name)
{
	if (sx_scripts_push(sx__rec->e->scripts, "strategies", name) < 0)
		return 0;
	lua_pop(sx_lua_state(sx__rec->e->lua), 1);
	return 1;
}

/* The strategy an experiment's variant names ({strategy = NAME} in its
 * payload); "" when none. */
static void payload_strategy(const msgpack_object *payload, char *name, size_t size)
{
	const msgpack_object *v = payload && payload->type == MSGPACK_OBJECT_MAP ? sx_arg(payload, "strategy") : NULL;
	name[0] = 0;
	if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > 0 && v->via.str.size < size &&
	    !memchr(v->via.str.ptr, 0, v->via.str.size)) {
		memcpy(name, v->via.str.ptr, v->via.str.size);
		name[v->via.str.size] = 0;
	}
}

/* diversity? (0..1) and options? (a map): what a strategy may read from req. */
static int tuning_args(const msgpack_object *args, double *diversity, const msgpack_object **options)
{
	int rc;
	*diversity = NAN;
	if ((rc = sx_arg_map(args, "options", 0, options)) < 0)
		return rc;
	if (sx_arg(args, "diversity")) {
		if ((rc = sx_arg_num(args, "diversity", 1, diversity)) < 0)
			return rc;
		if (!(*diversity >= 0 && *diversity <= 1))
			return sx_diag_set(SX_EINVAL, "argument 'diversity' must be a number in [0, 1]");
	}
	return 0;
}

static int m_items(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "kind", "n", "context", "strategy", "include_seen", "experiment",
					    "diversity", "options", NULL};
	const char *user, *xkey = NULL;
	size_t ulen, xlen = 0, n = 10;
	int kind, rc, seen = 0;
	double diversity;
	const msgpack_object *ctx = NULL, *options = NULL;
	char strategy[64] = "", ubuf[SX_PRIVACY_ID_BUF];
	SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = id_arg(args, "user", 1, &user, &ulen)) < 0 ||
	    (rc = kind_arg(args, &kind)) < 0 || (rc = n_arg(args, "n", 10, 1000, &n)) < 0 ||
	    (rc = sx_arg_map(args, "context", 0, &ctx)) < 0 || (ctx && (rc = check_context(ctx)) < 0) ||
	    (rc = sx_arg_bool(args, "include_seen", 0, &seen)) < 0 ||
	    (rc = tuning_args(args, &diversity, &options)) < 0 ||
	    (rc = strategy_arg(args, strategy, sizeof(strategy))) < 0 ||
	    (rc = sx_arg_str(args, "experiment", 0, &xkey, &xlen)) < 0)
		return rc;
	if (xkey && (xlen == 0 || xlen > 64))
		return sx_diag_set(SX_EINVAL, "argument 'experiment' must be an experiment key");
	/* the experiment maps the client's id itself */
	const char *client = user;
	size_t client_len = ulen;
	user = sx_privacy_user_id(user, ulen, ubuf, &ulen);
	sx__rec_registry_sync();
	sx__rec->cur = &sx__rec->live;
	if (!xkey)
		return sx__rec_run_strategy(strategy, args, user, ulen, n, pk);

	/* the experiment decides; the request's (or the default) strategy serves
	 * users it does not enrol */
	struct sx_experiment_assignment a;
	if ((rc = sx_experiments_assign(xkey, xlen, client, client_len, ctx, &req->zone, &a)) < 0)
		return rc;
	char chosen[64] = "", fallback[160] = "";
	if (a.enrolled) {
		payload_strategy(a.payload, chosen, sizeof(chosen));
		if (!chosen[0])
			snprintf(fallback, sizeof(fallback), "variant has no payload.strategy");
		else if (!strategy_exists(chosen))
			snprintf(fallback, sizeof(fallback), "no strategy '%s'", chosen);
	}
	if (!chosen[0] || fallback[0]) {
		if (fallback[0])
			sx_log_warn("recommend: experiment '%.*s' variant '%.*s': %s; serving '%s'", (int)xlen, xkey,
				    (int)a.variant_len, a.variant, fallback, strategy);
		snprintf(chosen, sizeof(chosen), "%s", strategy);
	}
	msgpack_sbuffer sb;
	msgpack_packer ip;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&ip, &sb, msgpack_sbuffer_write);
	if ((rc = sx__rec_run_strategy(chosen, args, user, ulen, n, &ip)) < 0) {
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	msgpack_pack_map(pk, fallback[0] ? 7 : 6);
	sx_pack_key(pk, "items");
	pk->callback(pk->data, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	sx_pack_key(pk, "experiment");
	sx_pack_strn(pk, xkey, xlen);
	sx_pack_kv_bool(pk, "enrolled", a.enrolled);
	sx_pack_key(pk, "variant");
	if (a.enrolled)
		sx_pack_strn(pk, a.variant, a.variant_len);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_str(pk, "reason", a.reason);
	sx_pack_kv_str(pk, "strategy", chosen);
	if (fallback[0])
		sx_pack_kv_str(pk, "fallback", fallback);
	return 0;
}

int sx_recommend_items(const char *user, size_t ulen, const char *kind, size_t n, const char *strategy,
		       struct sx_recommendation *out)
{
	struct rec *R = sx__rec;
	if (!R)
		return sx_diag_set(SX_ESTATE, "the recommend plugin has not started");
	if (!user || ulen == 0 || ulen > SX_EVENTS_ID_MAX || n < 1 || n > 1000)
		return sx_diag_set(SX_EINVAL, "need a user id and 1 <= n <= 1000");
	if (kind && sx_item_kind_parse(kind, strlen(kind)) < 0)
		return sx_diag_set(SX_EINVAL, "kind must be trip, destination, activity or offer");
	const char *name = strategy ? strategy : R->default_strategy;
	if (!strategy_exists(name))
		return sx_diag_set(SX_ENOENT, "no strategy '%s'", name);
	sx__rec_registry_sync();
	R->cur = &R->live;
	msgpack_sbuffer sb;
	msgpack_packer p;
	msgpack_zone z;
	msgpack_object req, res;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&p, kind ? 3 : 2);
	sx_pack_key(&p, "user");
	sx_pack_strn(&p, user, ulen);
	sx_pack_kv_uint(&p, "n", n);
	if (kind)
		sx_pack_kv_str(&p, "kind", kind);
	/* decoded objects point into their buffer: the result gets its own */
	msgpack_sbuffer rb;
	msgpack_packer rp;
	msgpack_sbuffer_init(&rb);
	msgpack_packer_init(&rp, &rb, msgpack_sbuffer_write);
	msgpack_zone_init(&z, 2048);
	res.type = MSGPACK_OBJECT_NIL;
	int rc = sx_frame_decode((const uint8_t *)sb.data, sb.size, &z, &req);
	if (rc == 0)
		rc = sx__rec_run_strategy(name, &req, user, ulen, n, &rp);
	if (rc == 0 && sx_frame_decode((const uint8_t *)rb.data, rb.size, &z, &res) < 0)
		rc = sx_diag_set(SX_EINTERNAL, "a strategy result that does not decode");
	int m = 0;
	for (uint32_t i = 0; rc == 0 && res.type == MSGPACK_OBJECT_ARRAY && i < res.via.array.size && (size_t)m < n; i++) {
		const msgpack_object *e = &res.via.array.ptr[i];
		const msgpack_object *it = sx_arg(e, "item"), *sc = sx_arg(e, "score"), *so = sx_arg(e, "source");
		if (!it || it->type != MSGPACK_OBJECT_STR || it->via.str.size > SX_REC_ID_MAX)
			continue;
		struct sx_recommendation *o = &out[m++];
		memcpy(o->item, it->via.str.ptr, it->via.str.size);
		o->item[it->via.str.size] = 0;
		o->len = it->via.str.size;
		o->score = sc && (sc->type == MSGPACK_OBJECT_FLOAT64 || sc->type == MSGPACK_OBJECT_FLOAT32) ? sc->via.f64
			   : sc && sc->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)sc->via.u64
			   : sc && sc->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (double)sc->via.i64 : 0;
		o->source[0] = 0;
		if (so && so->type == MSGPACK_OBJECT_STR)
			snprintf(o->source, sizeof(o->source), "%.*s", (int)so->via.str.size, so->via.str.ptr);
	}
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&rb);
	return rc < 0 ? rc : m;
}

static void pack_cands(msgpack_packer *pk, const struct rec_cand *c, int m, int with_meta, int64_t via)
{
	struct rec *R = sx__rec;
	msgpack_pack_array(pk, (uint32_t)m);
	for (int i = 0; i < m; i++) {
		const struct rec_item *it = &R->items[c[i].item];
		msgpack_pack_map(pk, with_meta ? 6 : 4);
		sx_pack_key(pk, "item");
		sx_pack_strn(pk, it->id, it->len);
		sx_pack_kv_double(pk, "score", c[i].score);
		sx_pack_kv_str(pk, "source", sx__rec_source_names[c[i].source]);
		if (with_meta) {
			sx_pack_kv_str(pk, "kind", sx_item_kind_name(it->kind));
			sx_pack_kv_str(pk, "region", it->region[0] ? it->region : NULL);
		}
		char reasons[4][160];
		int nr = sx__rec_reasons(NULL, c[i].item, 1u << c[i].source, c[i].via >= 0 ? c[i].via : via, NAN, NULL, NULL, NULL,
					 reasons, 4);
		sx_pack_key(pk, "reasons");
		msgpack_pack_array(pk, (uint32_t)nr);
		for (int k = 0; k < nr; k++)
			sx_pack_str(pk, reasons[k]);
	}
}

static int m_similar(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"item", "n", NULL};
	uint32_t item;
	size_t n = 10;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = item_arg(args, &item)) < 0 ||
	    (rc = n_arg(args, "n", 10, 1000, &n)) < 0)
		return rc;
	sx__rec_registry_sync();
	struct rec_cand *c = malloc(n * sizeof(*c));
	if (!c)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int m = sx__rec_src_similar(&sx__rec->live, item, n, c);
	if (m < 0) {
		free(c);
		return sx_diag_set(m, "similar items failed");
	}
	msgpack_pack_array(pk, (uint32_t)m);
	for (int i = 0; i < m; i++) {
		const struct rec_item *it = &sx__rec->items[c[i].item];
		msgpack_pack_map(pk, 4);
		sx_pack_key(pk, "item");
		sx_pack_strn(pk, it->id, it->len);
		sx_pack_kv_double(pk, "score", c[i].score);
		sx_pack_kv_str(pk, "source", "similar");
		sx_pack_key(pk, "reasons");
		msgpack_pack_array(pk, 1);
		char buf[200];
		const struct rec_item *src = &sx__rec->items[item];
		snprintf(buf, sizeof(buf), "similar to %s", src->name[0] ? src->name : src->id);
		sx_pack_str(pk, buf);
	}
	free(c);
	return 0;
}

static int m_trending(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"kind", "region", "window", "n", NULL};
	int kind, rc, window = REC_W_WEEK;
	char region[48] = "", wname[16] = "";
	size_t n = 10;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = kind_arg(args, &kind)) < 0 ||
	    (rc = sx_arg_cstr(args, "region", 0, region, sizeof(region))) < 0 ||
	    (rc = sx_arg_cstr(args, "window", 0, wname, sizeof(wname))) < 0 || (rc = n_arg(args, "n", 10, 1000, &n)) < 0)
		return rc;
	if (wname[0]) {
		if (!strcmp(wname, "day"))
			window = REC_W_DAY;
		else if (!strcmp(wname, "month"))
			window = REC_W_MONTH;
		else if (strcmp(wname, "week") != 0)
			return sx_diag_set(SX_EINVAL, "argument 'window' must be day, week or month");
	}
	for (char *p = region; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	struct rec_cand *c = malloc(n * sizeof(*c));
	if (!c)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int m = sx__rec_src_top(&sx__rec->live, kind, region[0] ? region : NULL, window, n, REC_SRC_TRENDING, c);
	if (m < 0) {
		free(c);
		return sx_diag_set(m, "trending failed");
	}
	pack_cands(pk, c, m, 1, -1);
	free(c);
	return 0;
}

/* The user argument as stored (buf: SX_PRIVACY_ID_BUF bytes) and its index. */
static int user_lookup(const msgpack_object *args, char *buf, const char **id, size_t *len, uint32_t *idx)
{
	int rc = id_arg(args, "user", 1, id, len);
	if (rc < 0)
		return rc;
	*id = sx_privacy_user_id(*id, *len, buf, len);
	if (sx_events_user_index(NULL, *id, *len, idx) < 0)
		return sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)*len, *id);
	return 0;
}

static int in_cands(const struct rec_cand *c, int m, uint32_t item, int64_t *via)
{
	for (int i = 0; i < m; i++)
		if (c[i].item == item) {
			if (via && c[i].via >= 0)
				*via = c[i].via;
			return 1;
		}
	return 0;
}

static int m_explain(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", "item", NULL};
	struct rec *R = sx__rec;
	struct rec_state *s = &R->live;
	const char *id;
	char ubuf[SX_PRIVACY_ID_BUF];
	size_t len;
	uint32_t uidx, item;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = user_lookup(args, ubuf, &id, &len, &uidx)) < 0 ||
	    (rc = item_arg(args, &item)) < 0)
		return rc;
	sx__rec_registry_sync();
	R->cur = s;
	struct rec_user *u = sx__rec_user(s, uidx);
	enum { N = 200 };
	struct rec_cand *c = malloc(N * sizeof(*c));
	if (!c)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	uint32_t mask = 0;
	int64_t via = -1;
	int m;
	if ((m = sx__rec_src_collab(s, u, N, c)) > 0 && in_cands(c, m, item, NULL))
		mask |= 1u << REC_SRC_COLLAB;
	if ((m = sx__rec_src_content(s, u, N, c)) > 0 && in_cands(c, m, item, NULL))
		mask |= 1u << REC_SRC_CONTENT;
	if ((m = sx__rec_src_covisit(s, u, N, c)) > 0 && in_cands(c, m, item, &via))
		mask |= 1u << REC_SRC_COVISIT;
	if ((m = sx__rec_src_top(s, -1, NULL, REC_W_DAY, N, REC_SRC_TRENDING, c)) > 0 && in_cands(c, m, item, NULL))
		mask |= 1u << REC_SRC_TRENDING;
	if ((m = sx__rec_src_top(s, -1, NULL, REC_W_MONTH, N, REC_SRC_POPULAR, c)) > 0 && in_cands(c, m, item, NULL))
		mask |= 1u << REC_SRC_POPULAR;
	int sg = u ? sx__rec_user_segment(uidx) : -1;
	if (sg >= 0 && (m = sx__rec_src_segment(s, R->segnames[sg].h, -1, N, c)) > 0 && in_cands(c, m, item, NULL))
		mask |= 1u << REC_SRC_SEGMENT;
	if (R->items[item].kind == SX_ITEM_OFFER)
		mask |= 1u << REC_SRC_OFFERS;
	free(c);

	msgpack_pack_map(pk, 6);
	sx_pack_key(pk, "user");
	sx_pack_strn(pk, id, len);
	sx_pack_key(pk, "item");
	sx_pack_strn(pk, R->items[item].id, R->items[item].len);
	sx_pack_key(pk, "sources");
	msgpack_pack_array(pk, (uint32_t)__builtin_popcount(mask));
	for (int i = 0; i < REC_SRC_COUNT; i++)
		if (mask >> i & 1)
			sx_pack_str(pk, sx__rec_source_names[i]);
	/* ALS: score and the past items that contributed most */
	sx_pack_key(pk, "als");
	const float *x = sx__rec_user_als(s, u);
	if (x && item < s->fs->n_items && u) {
		int32_t items[512], top[5];
		float w[512], contrib[5];
		double total = 0;
		size_t n = 0;
		for (uint32_t i = 0; i < u->ninter && n < 512; i++)
			if (u->inter[i].item < s->fs->n_items)
				items[n] = (int32_t)u->inter[i].item, w[n++] = u->inter[i].w;
		int k = s->fs->explain(s->fs->ud, items, w, n, (int32_t)item, 5, top, contrib, &total);
		if (k < 0)
			k = 0;
		msgpack_pack_map(pk, 2);
		sx_pack_kv_double(pk, "score", total);
		sx_pack_key(pk, "contributions");
		msgpack_pack_array(pk, (uint32_t)k);
		for (int i = 0; i < k; i++) {
			msgpack_pack_map(pk, 2);
			sx_pack_key(pk, "item");
			sx_pack_strn(pk, R->items[top[i]].id, R->items[top[i]].len);
			sx_pack_kv_double(pk, "contribution", contrib[i]);
		}
	} else {
		msgpack_pack_nil(pk);
	}
	/* matched attributes: the item's tags and region among the user's */
	const struct rec_item *it = &R->items[item];
	const char *matched[REC_TAGS_MAX + 1];
	uint32_t nm = 0;
	for (int t = 0; t < it->ntags; t++) {
		int hit = 0;
		for (uint32_t i = 0; u && i < u->ninter && !hit; i++) {
			const struct rec_item *o = &R->items[u->inter[i].item];
			for (int q = 0; q < o->ntags && !hit; q++)
				hit = strcmp(o->tags[q], it->tags[t]) == 0;
		}
		if (hit)
			matched[nm++] = it->tags[t];
	}
	int region_hit = 0;
	for (uint32_t i = 0; u && it->region[0] && i < u->ninter && !region_hit; i++)
		region_hit = strcmp(R->items[u->inter[i].item].region, it->region) == 0;
	if (region_hit)
		matched[nm++] = it->region;
	sx_pack_key(pk, "matched");
	msgpack_pack_array(pk, nm);
	for (uint32_t i = 0; i < nm; i++)
		sx_pack_str(pk, matched[i]);
	char reasons[12][160];
	int nr = sx__rec_reasons(u, item, mask, via, NAN, NULL, NULL, sg >= 0 ? R->segnames[sg].name : NULL, reasons, 12);
	sx_pack_key(pk, "reasons");
	msgpack_pack_array(pk, (uint32_t)nr);
	for (int i = 0; i < nr; i++)
		sx_pack_str(pk, reasons[i]);
	return 0;
}

/* ---- profile ---- */

#define PB_NAMES 8
struct bucket {
	char value[64];
	double w;
	int nnames;
	char names[PB_NAMES][32];
	uint32_t counts[PB_NAMES];
};

struct buckets {
	struct bucket *b;
	int n, cap;
};

static void bucket_add(struct buckets *bs, const char *value, double w, const char *name, size_t nlen)
{
	int i;
	for (i = 0; i < bs->n; i++)
		if (strcmp(bs->b[i].value, value) == 0)
			break;
	if (i == bs->n) {
		if (bs->n == bs->cap) {
			int nc = bs->cap ? bs->cap * 2 : 8;
			if (nc > 256)
				return;
			struct bucket *nb = realloc(bs->b, (size_t)nc * sizeof(*nb));
			if (!nb)
				return;
			bs->b = nb, bs->cap = nc;
		}
		memset(&bs->b[i], 0, sizeof(bs->b[i]));
		snprintf(bs->b[i].value, sizeof(bs->b[i].value), "%s", value);
		bs->n++;
	}
	struct bucket *b = &bs->b[i];
	b->w += w;
	if (nlen >= sizeof(b->names[0]))
		nlen = sizeof(b->names[0]) - 1;
	int k;
	for (k = 0; k < b->nnames; k++)
		if (strlen(b->names[k]) == nlen && memcmp(b->names[k], name, nlen) == 0)
			break;
	if (k == b->nnames) {
		if (k == PB_NAMES)
			return;
		memcpy(b->names[k], name, nlen);
		b->names[k][nlen] = 0;
		b->nnames++;
	}
	b->counts[k]++;
}

static int bucket_cmp(const void *a, const void *b)
{
	const struct bucket *x = a, *y = b;
	if (x->w != y->w)
		return x->w > y->w ? -1 : 1;
	return strcmp(x->value, y->value);
}

static void pack_buckets(msgpack_packer *pk, const char *key, struct buckets *bs, int as_number)
{
	double total = 0;
	for (int i = 0; i < bs->n; i++)
		total += bs->b[i].w;
	if (bs->n > 1)
		qsort(bs->b, (size_t)bs->n, sizeof(*bs->b), bucket_cmp);
	int n = bs->n < 10 ? bs->n : 10;
	sx_pack_key(pk, key);
	msgpack_pack_array(pk, (uint32_t)n);
	for (int i = 0; i < n; i++) {
		struct bucket *b = &bs->b[i];
		msgpack_pack_map(pk, 3);
		sx_pack_key(pk, "value");
		if (as_number)
			msgpack_pack_int(pk, atoi(b->value));
		else
			sx_pack_str(pk, b->value);
		sx_pack_kv_double(pk, "weight", total > 0 ? b->w / total : 0);
		sx_pack_key(pk, "events");
		msgpack_pack_map(pk, (uint32_t)b->nnames);
		for (int k = 0; k < b->nnames; k++)
			sx_pack_kv_uint(pk, b->names[k], b->counts[k]);
	}
	free(bs->b);
	bs->b = NULL;
	bs->n = bs->cap = 0;
}

struct prof {
	struct buckets kinds, tags, regions, months, events;
	double pw, psum, pmin, pmax;
	int64_t latest;
	uint32_t n;
	int pass;
};

static int month_of(int64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	return tm.tm_mon + 1;
}

static int prof_cb(const struct sx_event *ev, void *ud)
{
	struct prof *p = ud;
	struct rec *R = sx__rec;
	float ew;
	int64_t item;
	if (!ev->item || (ew = sx__rec_weight(ev->name, ev->name_len)) <= 0 ||
	    (item = sx__rec_item_find(ev->item, ev->item_len)) < 0 || R->items[item].kind < 0)
		return 0;
	if (p->pass == 0) {
		if (ev->time > p->latest)
			p->latest = ev->time;
		return 0;
	}
	const struct rec_item *it = &R->items[item];
	double w = sx_rec_decay(ew, p->latest - ev->time, REC_PROFILE_HALF_LIFE);
	char name[SX_EVENTS_ID_MAX + 1];
	snprintf(name, sizeof(name), "%.*s", (int)ev->name_len, ev->name);
	p->n++;
	bucket_add(&p->events, name, 1, "n", 1);
	bucket_add(&p->kinds, sx_item_kind_name(it->kind), w, ev->name, ev->name_len);
	for (int t = 0; t < it->ntags; t++)
		bucket_add(&p->tags, it->tags[t], w, ev->name, ev->name_len);
	if (it->region[0])
		bucket_add(&p->regions, it->region, w, ev->name, ev->name_len);
	if (!isnan(it->price)) {
		p->pw += w, p->psum += w * it->price;
		if (it->price < p->pmin)
			p->pmin = it->price;
		if (it->price > p->pmax)
			p->pmax = it->price;
	}
	/* travel month: the event's own date if it carries one, else the item's months */
	int month = 0;
	if (ev->props) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 1024);
		if (msgpack_unpack(ev->props, ev->props_len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
			static const char *const keys[] = {"travel_date", "date", "start"};
			for (int k = 0; k < 3 && !month; k++) {
				const msgpack_object *v = sx_arg(&o, keys[k]);
				if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= SX_EVENTS_TIME_MAX)
					month = month_of((int64_t)v->via.u64);
			}
			const msgpack_object *v = sx_arg(&o, "month");
			if (!month && v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 >= 1 && v->via.u64 <= 12)
				month = (int)v->via.u64;
		}
		msgpack_zone_destroy(&z);
	}
	char mb[12];
	if (month) {
		snprintf(mb, sizeof(mb), "%d", month);
		bucket_add(&p->months, mb, w, ev->name, ev->name_len);
	} else if (it->months) {
		int nm = __builtin_popcount(it->months);
		for (int m = 0; m < 12; m++)
			if (it->months >> m & 1) {
				snprintf(mb, sizeof(mb), "%d", m + 1);
				bucket_add(&p->months, mb, w / nm, ev->name, ev->name_len);
			}
	}
	return 0;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int sx__rec_pack_profile(struct rec_state *s, const char *id, size_t len, msgpack_packer *pk)
{
	struct rec *R = sx__rec;
	uint32_t uidx;
	if (sx_events_user_index(NULL, id, len, &uidx) < 0)
		return sx_diag_set(SX_ENOENT, "no user '%.*s'", (int)len, id);
	struct prof p;
	memset(&p, 0, sizeof(p));
	p.pmin = INFINITY, p.pmax = -INFINITY, p.latest = INT64_MIN;
	int rc;
	if ((rc = sx_events_user_scan(NULL, uidx, 0, s->horizon, 0, prof_cb, &p)) < 0)
		return rc;
	p.pass = 1;
	if ((rc = sx_events_user_scan(NULL, uidx, 0, s->horizon, 0, prof_cb, &p)) < 0)
		return rc;
	msgpack_pack_map(pk, 8);
	sx_pack_key(pk, "user");
	sx_pack_strn(pk, id, len);
	sx_pack_kv_uint(pk, "interactions", p.n);
	sx_pack_key(pk, "events");
	msgpack_pack_map(pk, (uint32_t)p.events.n);
	for (int i = 0; i < p.events.n; i++)
		sx_pack_kv_uint(pk, p.events.b[i].value, p.events.b[i].counts[0]);
	free(p.events.b);
	pack_buckets(pk, "kinds", &p.kinds, 0);
	pack_buckets(pk, "tags", &p.tags, 0);
	pack_buckets(pk, "regions", &p.regions, 0);
	pack_buckets(pk, "months", &p.months, 1);
	sx_pack_key(pk, "price");
	if (p.pw > 0) {
		double mean = p.psum / p.pw;
		/* the band: where the mean falls among the catalogue's prices (tertiles) */
		size_t np = 0;
		double *prices = malloc((R->nitems + 1) * sizeof(double));
		const char *band = "mid";
		if (prices) {
			for (uint32_t i = 0; i < R->nitems; i++)
				if (R->items[i].kind >= 0 && !isnan(R->items[i].price))
					prices[np++] = R->items[i].price;
			qsort(prices, np, sizeof(double), dbl_cmp);
			if (np >= 3)
				band = mean <= prices[np / 3] ? "low" : mean <= prices[2 * np / 3] ? "mid" : "high";
			free(prices);
		}
		msgpack_pack_map(pk, 4);
		sx_pack_kv_double(pk, "min", p.pmin);
		sx_pack_kv_double(pk, "max", p.pmax);
		sx_pack_kv_double(pk, "mean", mean);
		sx_pack_kv_str(pk, "band", band);
	} else {
		msgpack_pack_nil(pk);
	}
	return 0;
}

static int m_profile(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"user", NULL};
	const char *id;
	char ubuf[SX_PRIVACY_ID_BUF];
	size_t len;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = id_arg(args, "user", 1, &id, &len)) < 0)
		return rc;
	id = sx_privacy_user_id(id, len, ubuf, &len);
	if (!sx_privacy_allowed(id, len, SX_PURPOSE_PERSONALIZATION))
		return sx_diag_set(SX_ESTATE, "user '%.*s' has not consented to personalization", (int)len, id);
	return sx__rec_pack_profile(&sx__rec->live, id, len, pk);
}

/* ---- privacy ---- */

/* Per-user state is in memory only (rebuilt from the user's events, which
 * the events plugin erases in the same request); popularity, segment
 * popularity and co-visitation are anonymous aggregates and stay. */
static int erase_user(const char *id, size_t len, uint32_t idx, int has_idx, struct sx_privacy_receipt *r, void *ud)
{
	struct rec_state *s = &sx__rec->live;
	SX_UNUSED(id), SX_UNUSED(len), SX_UNUSED(ud);
	if (has_idx)
		sx__rec_segment_invalidate(idx);
	if (has_idx && idx < s->nusers && s->users[idx]) {
		sx__rec_user_forget(s, idx);
		sx_privacy_receipt_add(r, "recommend_state", 1);
	}
	return 0;
}

static int export_user(const char *id, size_t len, uint32_t idx, int has_idx, msgpack_packer *pk, void *ud)
{
	struct rec *R = sx__rec;
	SX_UNUSED(id), SX_UNUSED(len), SX_UNUSED(ud);
	struct rec_user *u = has_idx ? sx__rec_user(&R->live, idx) : NULL;
	if (!u) {
		msgpack_pack_nil(pk);
		return 0;
	}
	msgpack_pack_map(pk, 4);
	sx_pack_kv_uint(pk, "interactions", u->ninter);
	sx_pack_key(pk, "recent");
	msgpack_pack_array(pk, (uint32_t)u->nrecent);
	for (int i = 0; i < u->nrecent; i++)
		sx_pack_strn(pk, R->items[u->recent[i]].id ? R->items[u->recent[i]].id : "",
			     R->items[u->recent[i]].id ? R->items[u->recent[i]].len : 0);
	sx_pack_kv_bool(pk, "als_vector", u->als != NULL);
	sx_pack_kv_bool(pk, "content_profile", u->has_prof);
	return 0;
}

/* ---- training ---- */

static int params_arg(const msgpack_object *args, struct rec_params *p)
{
	static const char *const known[] = {"k", "iterations", "lambda", "alpha", "cg_steps", "weights", NULL};
	const msgpack_object *po = NULL, *w = NULL;
	int rc;
	int64_t v;
	double d;
	if ((rc = sx_arg_map(args, "params", 0, &po)) < 0)
		return rc;
	if (!po)
		return 0;
	if ((rc = sx_arg_only(po, known)) < 0)
		return sx_diag_set(rc, "params: %s", sx_diag_last());
	v = p->k;
	if ((rc = sx_arg_int(po, "k", 0, &v)) < 0 || v < 1 || v > 256)
		return sx_diag_set(SX_EINVAL, "params: 'k' must be 1..256");
	p->k = (int)v;
	v = p->iterations;
	if ((rc = sx_arg_int(po, "iterations", 0, &v)) < 0 || v < 1 || v > 100)
		return sx_diag_set(SX_EINVAL, "params: 'iterations' must be 1..100");
	p->iterations = (int)v;
	v = p->cg_steps;
	if ((rc = sx_arg_int(po, "cg_steps", 0, &v)) < 0 || v < 1 || v > 100)
		return sx_diag_set(SX_EINVAL, "params: 'cg_steps' must be 1..100");
	p->cg_steps = (int)v;
	d = p->lambda;
	if ((rc = sx_arg_num(po, "lambda", 0, &d)) < 0 || !(d > 0 && d < 1e6))
		return sx_diag_set(SX_EINVAL, "params: 'lambda' must be a number in (0, 1e6)");
	p->lambda = (float)d;
	d = p->alpha;
	if ((rc = sx_arg_num(po, "alpha", 0, &d)) < 0 || !(d >= 0 && d < 1e6))
		return sx_diag_set(SX_EINVAL, "params: 'alpha' must be a number in [0, 1e6)");
	p->alpha = (float)d;
	if ((rc = sx_arg_map(po, "weights", 0, &w)) < 0)
		return sx_diag_set(rc, "params: %s", sx_diag_last());
	if (w) {
		if (w->via.map.size == 0 || w->via.map.size > REC_WEIGHTS_MAX)
			return sx_diag_set(SX_EINVAL, "params: 'weights' must map 1 to %d event names to weights", REC_WEIGHTS_MAX);
		p->nweights = 0;
		for (uint32_t i = 0; i < w->via.map.size; i++) {
			const msgpack_object *k = &w->via.map.ptr[i].key, *val = &w->via.map.ptr[i].val;
			double x;
			if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 || k->via.str.size > SX_EVENTS_ID_MAX ||
			    memchr(k->via.str.ptr, 0, k->via.str.size))
				return sx_diag_set(SX_EINVAL, "params: 'weights' keys must be event names");
			if (val->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
				x = (double)val->via.u64;
			else if (val->type == MSGPACK_OBJECT_FLOAT32 || val->type == MSGPACK_OBJECT_FLOAT64)
				x = val->via.f64;
			else
				x = -1;
			if (!(x > 0 && x < 1e6))
				return sx_diag_set(SX_EINVAL, "params: weights must be numbers in (0, 1e6)");
			struct rec_weight *rw = &p->weights[p->nweights++];
			memcpy(rw->name, k->via.str.ptr, k->via.str.size);
			rw->name[k->via.str.size] = 0;
			rw->w = (float)x;
		}
	}
	return 0;
}

struct train {
	struct rec_params p;
	int64_t from, to;
	uint32_t n_items;
	struct rec_triplets tr;
	struct rec_model *m;
	double loss;
	int64_t started;
	MDB_txn *txn;
	MDB_dbi dbi;
	struct sx_store *store; /* the pool thread must not reach sx__rec */
	struct sx_job *job;
	struct sx_privacy_snapshot consent; /* personalization, as of the start */
	uint64_t skipped;		    /* events of users without it */
};

static float weight_in(const struct rec_params *p, const char *name, size_t len)
{
	for (int i = 0; i < p->nweights; i++)
		if (strlen(p->weights[i].name) == len && memcmp(p->weights[i].name, name, len) == 0)
			return p->weights[i].w;
	return 0;
}

static int train_scan_cb(const struct sx_event *ev, void *ud)
{
	struct train *t = ud;
	float w;
	if (!ev->item || (w = weight_in(&t->p, ev->name, ev->name_len)) <= 0)
		return 0;
	if (!sx_privacy_snapshot_allows(&t->consent, ev->user)) {
		t->skipped++;
		return 0;
	}
	uint8_t k[6 + SX_EVENTS_ID_MAX];
	memcpy(k, "rec/i/", 6);
	memcpy(k + 6, ev->item, ev->item_len);
	MDB_val key = {6 + ev->item_len, k}, val;
	if (mdb_get(t->txn, t->dbi, &key, &val) != 0 || val.mv_size != 4)
		return 0;
	uint32_t item = sx_get_be32(val.mv_data);
	if (item >= t->n_items)
		return 0;
	if ((t->tr.n & 0xffff) == 0 && sx_job_cancelled(t->job))
		return SX_ECANCELED;
	return sx__rec_triplets_add(&t->tr, ev->user, item, w, ev->time);
}

static int train_work(struct sx_job *job, void *ud)
{
	struct train *t = ud;
	int rc;
	t->job = job;
	sx_job_progress(job, 0.0, "reading events");
	if ((rc = sx_store_rtxn_begin(t->store, &t->txn)) < 0)
		return rc;
	t->dbi = sx_store_dbi(t->store, SX_T_ARTIFACTS);
	rc = sx_events_range_scan(t->txn, t->from, t->to, train_scan_cb, t);
	sx_store_rtxn_end(t->store, t->txn);
	if (rc < 0) {
		sx_job_fail(job, sx_diag_last());
		return rc;
	}
	if (t->tr.n_items < t->n_items)
		t->tr.n_items = t->n_items;
	sx_job_progress(job, 0.2, "training");
	t->m = sx__rec_model_train(&t->tr, &t->p, 2, 2, NULL, &t->loss);
	if (!t->m) {
		sx_job_fail(job, sx_diag_last());
		return sx_diag_last_code() ? sx_diag_last_code() : SX_EINTERNAL;
	}
	return 0;
}

static void train_done(struct sx_job *job, int rc, msgpack_packer *pk, void *ud)
{
	struct train *t = ud;
	struct rec *R = sx__rec;
	SX_UNUSED(job);
	if (R)
		R->training = 0;
	if (rc == 0 && R) {
		R->params = t->p;
		sx__rec_own_model_install(t->m);
		int src = sx__rec_model_save(t->m);
		if (src < 0)
			sx_log_warn("recommend: cannot store the model: %s", sx_diag_last());
		sx__rec_counts_save(&R->live);
		sx__rec_content_save();
		msgpack_pack_map(pk, 3);
		sx_pack_kv_int(pk, "ms", sx_wall_ms() - t->started);
		sx_pack_kv_uint(pk, "skipped_events_no_consent", t->skipped);
		sx_pack_key(pk, "model");
		sx__rec_model_pack_info(t->m, pk);
		t->m = NULL;
	}
	sx__rec_model_free(t->m);
	sx__rec_triplets_free(&t->tr);
	sx_privacy_snapshot_free(&t->consent);
	free(t);
}

static int m_train(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"params", "from", "to", NULL};
	struct rec *R = sx__rec;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	struct train *t = calloc(1, sizeof(*t));
	if (!t)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	t->p = R->params;
	t->from = 0, t->to = SX_EVENTS_TIME_MAX + 1;
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = params_arg(args, &t->p)) < 0 ||
	    (rc = sx_arg_int(args, "from", 0, &t->from)) < 0 || (rc = sx_arg_int(args, "to", 0, &t->to)) < 0 ||
	    (t->from < 0 || t->to <= t->from ? (rc = sx_diag_set(SX_EINVAL, "need 0 <= from < to")) : 0) < 0) {
		free(t);
		return rc;
	}
	if (R->training) {
		free(t);
		return sx_diag_set(SX_ESTATE, "a recommend.train job is already running");
	}
	if (!R->nitems) {
		free(t);
		return sx_diag_set(SX_ESTATE, "no items to train on");
	}
	t->n_items = R->nitems;
	t->store = R->e->store;
	t->started = sx_wall_ms();
	if ((rc = sx_privacy_snapshot_take(SX_PURPOSE_PERSONALIZATION, &t->consent)) < 0) {
		free(t);
		return rc;
	}
	int64_t id = sx_jobs_start(R->e->jobs, "recommend.train", train_work, train_done, t);
	if (id < 0) {
		sx_privacy_snapshot_free(&t->consent);
		free(t);
		return (int)id;
	}
	R->training = 1;
	msgpack_pack_map(pk, 1);
	sx_pack_kv_int(pk, "job", id);
	return 0;
}

/* ---- evaluation ---- */

struct ev_row {
	uint32_t user, item;
	float w;
	uint8_t book;
	int64_t t;
};
struct ev_rows {
	struct ev_row *r;
	size_t n, cap;
	const struct rec_params *p;
};

static int eval_scan_cb(const struct sx_event *ev, void *ud)
{
	struct ev_rows *rs = ud;
	float w;
	int64_t item;
	if (!ev->item || (w = weight_in(rs->p, ev->name, ev->name_len)) <= 0 ||
	    (item = sx__rec_item_find(ev->item, ev->item_len)) < 0 || sx__rec->items[item].kind < 0)
		return 0;
	if (rs->n == rs->cap) {
		size_t nc = rs->cap ? rs->cap * 2 : 4096;
		struct ev_row *nr = realloc(rs->r, nc * sizeof(*nr));
		if (!nr)
			return SX_ENOMEM;
		rs->r = nr, rs->cap = nc;
	}
	rs->r[rs->n++] = (struct ev_row){ev->user, (uint32_t)item, w, (uint8_t)sx__rec_is_book(ev->name, ev->name_len), ev->time};
	return 0;
}

static int i32_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return x < y ? -1 : x > y;
}

static int m_evaluate(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"strategy", "k", "holdout", "max_users", "split", "params",
					    "diversity", "options", "kind", NULL};
	struct rec *R = sx__rec;
	char strategy[64] = "", split[8] = "time";
	size_t k = 10, max_users = 1000;
	double holdout = 0.2, diversity;
	const msgpack_object *options = NULL;
	struct rec_params params = R->params;
	int rc, kind;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = strategy_arg(args, strategy, sizeof(strategy))) < 0 ||
	    (rc = kind_arg(args, &kind)) < 0 ||
	    (rc = n_arg(args, "k", 10, 100, &k)) < 0 || (rc = n_arg(args, "max_users", 1000, 100000, &max_users)) < 0 ||
	    (rc = sx_arg_num(args, "holdout", 0, &holdout)) < 0 || (rc = params_arg(args, &params)) < 0 ||
	    (rc = tuning_args(args, &diversity, &options)) < 0 ||
	    (rc = sx_arg_cstr(args, "split", 0, split, sizeof(split))) < 0)
		return rc;
	if (!(holdout > 0 && holdout < 1))
		return sx_diag_set(SX_EINVAL, "argument 'holdout' must be a fraction in (0, 1)");
	int per_user = strcmp(split, "user") == 0;
	if (!per_user && strcmp(split, "time") != 0)
		return sx_diag_set(SX_EINVAL, "argument 'split' must be time or user");
	struct ev_rows rs = {0};
	rs.p = &params;
	if ((rc = sx_events_range_scan(NULL, 0, SX_EVENTS_TIME_MAX + 1, eval_scan_cb, &rs)) < 0) {
		free(rs.r);
		return rc;
	}
	if (rs.n < 10) {
		free(rs.r);
		return sx_diag_set(SX_ESTATE, "too few interactions to evaluate (%zu)", rs.n);
	}
	uint32_t ubound = 0;
	for (size_t i = 0; i < rs.n; i++)
		if (rs.r[i].user >= ubound)
			ubound = rs.r[i].user + 1;
	/* time: everything before the (1 - holdout) quantile of times trains;
	 * user: each user's first (1 - holdout) share of their interactions */
	uint8_t *held = calloc(rs.n, 1);
	uint32_t *cnt = calloc(ubound + 1, sizeof(uint32_t));
	if (!held || !cnt) {
		free(held), free(cnt), free(rs.r);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	int64_t cut = rs.r[(size_t)((1 - holdout) * (double)rs.n)].t, last_train = INT64_MIN;
	if (per_user) {
		uint32_t *seen = calloc(ubound + 1, sizeof(uint32_t));
		if (!seen) {
			free(held), free(cnt), free(rs.r);
			return sx_diag_set(SX_ENOMEM, "out of memory");
		}
		for (size_t i = 0; i < rs.n; i++)
			cnt[rs.r[i].user]++;
		for (size_t i = 0; i < rs.n; i++) {
			uint32_t u = rs.r[i].user;
			held[i] = seen[u]++ >= cnt[u] - (uint32_t)(holdout * cnt[u]);
		}
		free(seen);
		memset(cnt, 0, (ubound + 1) * sizeof(uint32_t));
	} else {
		for (size_t i = 0; i < rs.n; i++)
			held[i] = rs.r[i].t >= cut;
	}
	for (size_t i = 0; i < rs.n; i++)
		if (!held[i] && rs.r[i].t > last_train)
			last_train = rs.r[i].t;
	/* the world as it was at the cut */
	struct rec_state es;
	sx__rec_state_init(&es, 0, per_user ? INT64_MAX : cut);
	es.now = per_user ? last_train : cut;
	struct rec_triplets tr = {0};
	size_t ntrain = 0;
	for (size_t i = 0; i < rs.n; i++) {
		if (held[i])
			continue;
		ntrain++;
		sx__rec_observe(&es, rs.r[i].user, rs.r[i].item, rs.r[i].w, rs.r[i].book, rs.r[i].t, 1);
		if (sx__rec_triplets_add(&tr, rs.r[i].user, rs.r[i].item, rs.r[i].w, rs.r[i].t) < 0) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (tr.n_items < R->nitems)
		tr.n_items = R->nitems;
	double loss = 0;
	struct rec_model *m = ntrain ? sx__rec_model_train(&tr, &params, 2, 1, NULL, &loss) : NULL;
	if (m)
		sx__rec_set_own_model(&es, m);
	es.ndirty = 0;

	/* held-out items per user: interactions after the cut with items not seen before it */
	int32_t **rel = calloc(ubound + 1, sizeof(int32_t *));
	int32_t *recs = malloc(max_users * k * sizeof(int32_t) + 1);
	if (!rel || !recs) {
		free(rel), free(recs);
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < rs.n; i++)
		cnt[rs.r[i].user] += held[i];
	for (size_t i = 0; i < rs.n; i++) {
		uint32_t u = rs.r[i].user;
		if (!held[i])
			continue;
		struct rec_user *eu = u < es.nusers ? es.users[u] : NULL;
		if (!eu)
			continue;
		int known_before = 0;
		for (uint32_t q = 0; q < eu->ninter && !known_before; q++)
			known_before = eu->inter[q].item == rs.r[i].item;
		if (known_before)
			continue;
		if (!rel[u] && !(rel[u] = calloc(cnt[u] + 1, sizeof(int32_t))))
			continue;
		rel[u][0]++;
		rel[u][rel[u][0]] = (int32_t)rs.r[i].item;
	}
	double sp = 0, sr = 0, sn = 0, nov = 0;
	size_t users = 0, nrec = 0, test = 0;
	int32_t *out = malloc(k * sizeof(int32_t));
	R->cur = &es;
	for (uint32_t u = 0; u < ubound && users < max_users && out; u++) {
		if (!rel[u])
			continue;
		int32_t *set = rel[u] + 1;
		size_t ns = (size_t)rel[u][0];
		qsort(set, ns, sizeof(int32_t), i32_cmp);
		size_t w = 0;
		for (size_t i = 0; i < ns; i++)
			if (!w || set[w - 1] != set[i])
				set[w++] = set[i];
		ns = w;
		char id[SX_EVENTS_ID_MAX + 1];
		size_t idlen;
		if (sx_events_user_id(NULL, u, id, sizeof(id), &idlen) < 0)
			continue;
		int m = sx__rec_run_strategy_ids(strategy, id, idlen, kind, k, options, diversity, out);
		if (m < 0) {
			rc = m;
			break;
		}
		sp += sx_metrics_precision_at_k(out, (size_t)m, set, ns, k);
		sr += sx_metrics_recall_at_k(out, (size_t)m, set, ns, k);
		sn += sx_metrics_ndcg_at_k(out, (size_t)m, set, ns, k);
		for (int i = 0; i < m; i++) {
			double c = out[i] < (int32_t)es.ncounts ? es.counts[out[i]].users : 0;
			nov += -log2((c + 1) / ((double)ntrain + 1));
			nrec++;
		}
		for (size_t i = 0; i < k; i++)
			recs[users * k + i] = i < (size_t)m ? out[i] : -1;
		test += ns;
		users++;
	}
	R->cur = &R->live;
	free(out);
	double coverage = 0;
	if (rc >= 0 && users)
		sx_metrics_coverage(recs, users, k, k, R->nitems, &coverage);
	for (uint32_t u = 0; u <= ubound; u++)
		free(rel[u]);
	free(rel), free(recs);
	if (rc >= 0) {
		if (!users) {
			rc = sx_diag_set(SX_ESTATE, "no user has interactions both before and after the cut");
			goto out;
		}
		msgpack_pack_map(pk, 13);
		sx_pack_kv_str(pk, "strategy", strategy);
		sx_pack_kv_str(pk, "split", split);
		sx_pack_kv_uint(pk, "k", k);
		sx_pack_kv_double(pk, "holdout", holdout);
		sx_pack_kv_int(pk, "cut", cut);
		sx_pack_kv_uint(pk, "users", users);
		sx_pack_kv_uint(pk, "train_interactions", ntrain);
		sx_pack_kv_uint(pk, "test_items", test);
		sx_pack_kv_double(pk, "precision", sp / (double)users);
		sx_pack_kv_double(pk, "recall", sr / (double)users);
		sx_pack_kv_double(pk, "ndcg", sn / (double)users);
		sx_pack_kv_double(pk, "coverage", coverage);
		sx_pack_kv_double(pk, "novelty", nrec ? nov / (double)nrec : 0);
		rc = 0;
	}
out:
	R->cur = &R->live;
	sx__rec_state_close(&es);
	sx__rec_top_cache_clear();
	sx__rec_triplets_free(&tr);
	free(rs.r), free(held), free(cnt);
	return rc;
}

static int m_info(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {NULL};
	struct rec *R = sx__rec;
	int rc;
	SX_UNUSED(req), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0)
		return rc;
	sx__rec_registry_sync();
	uint32_t live = 0, cached = 0;
	for (uint32_t i = 0; i < R->nitems; i++)
		live += R->items[i].kind >= 0;
	for (uint32_t i = 0; i < R->live.nusers; i++)
		cached += R->live.users[i] != NULL;
	msgpack_pack_map(pk, 8);
	sx_pack_kv_uint(pk, "items", live);
	sx_pack_key(pk, "counts");
	msgpack_pack_map(pk, 3);
	sx_pack_kv_uint(pk, "snapshot_bytes", R->live.snap_bytes);
	sx_pack_kv_uint(pk, "journal_records", R->live.jseq_next > R->live.jseq_snap ? R->live.jseq_next - 1 - R->live.jseq_snap : 0);
	sx_pack_kv_uint(pk, "journal_bytes", R->live.jbytes);
	sx_pack_kv_uint(pk, "content_indexed", R->content ? sx_hnsw_count(R->content) : 0);
	sx_pack_kv_uint(pk, "users_cached", cached);
	sx_pack_kv_str(pk, "default_strategy", R->default_strategy);
	sx_pack_kv_bool(pk, "training", R->training);
	sx_pack_key(pk, "model");
	if (R->live.own)
		sx__rec_model_pack_info(R->live.own, pk);
	else if (R->live.fs)
		sx_pack_str(pk, R->live.fs->description ? R->live.fs->description : "external");
	else
		msgpack_pack_nil(pk);
	sx_pack_key(pk, "factors");
	sx__rec_registry_pack_info(pk);
	return 0;
}

/* ---- plugin ---- */

static void rec_free(struct rec *R)
{
	if (!R)
		return;
	sx__rec_state_close(&R->live);
	for (uint32_t i = 0; i < R->capitems; i++) {
		for (int t = 0; t < R->items[i].ntags; t++)
			free(R->items[i].tags[t]);
		free(R->items[i].id);
	}
	sx__rec_regions_free();
	sx__rec_segments_free();
	sx__rec_lua_marks_free();
	free(R->items);
	free(R->hash);
	sx_hnsw_free(R->content);
	free(R);
}

static int start(struct sx_engine *e)
{
	int rc;
	struct rec *R = calloc(1, sizeof(*R));
	if (!R)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	sx__rec = R;
	R->e = e;
	params_default(&R->params);
	snprintf(R->default_strategy, sizeof(R->default_strategy), "hybrid");
	snprintf(R->seg_attr, sizeof(R->seg_attr), "country");
	sx__rec_state_init(&R->live, 1, INT64_MAX);
	R->cur = &R->live;
	if ((rc = sx__rec_catalog_load()) < 0)
		goto fail;
	if ((rc = sx__rec_counts_load(&R->live)) < 0) {
		sx_store_read_end(e->store);
		goto fail;
	}
	struct rec_model *m = sx__rec_model_load();
	if (m)
		sx__rec_set_own_model(&R->live, m);
	if ((rc = sx__rec_registry_start()) < 0) {
		sx_store_read_end(e->store);
		goto fail;
	}
	sx_store_read_end(e->store);
	if ((rc = sx_events_on_track(track_cb, NULL)) < 0 || (rc = sx_events_on_item(item_cb, NULL)) < 0 ||
	    (rc = sx_events_on_user(user_cb, NULL)) < 0 || (rc = sx_store_on_undo(e->store, undo_cb, NULL)) < 0 ||
	    (rc = sx_privacy_register_eraser("recommend", erase_user, NULL)) < 0 ||
	    (rc = sx_privacy_register_exporter("recommend", export_user, NULL)) < 0 || (rc = sx__rec_lua_start(e)) < 0)
		goto fail;
	const struct sx_method methods[] = {
		{"recommend.items", SX_ROLE_READER, m_items, NULL, "recommendations {user, kind?, n?, context?, strategy?}"},
		{"recommend.similar", SX_ROLE_READER, m_similar, NULL, "items like an item {item, n?}"},
		{"recommend.trending", SX_ROLE_READER, m_trending, NULL, "time-decayed popularity {kind?, region?, window?, n?}"},
		{"recommend.explain", SX_ROLE_READER, m_explain, NULL, "why an item for a user {user, item}"},
		{"recommend.train", SX_ROLE_WRITER, m_train, NULL, "train the ALS model from events (a job) {params?, from?, to?}"},
		{"recommend.evaluate", SX_ROLE_WRITER, m_evaluate, NULL, "offline metrics of a strategy on a time holdout {strategy?, k?, holdout?}"},
		{"recommend.config", SX_ROLE_WRITER, sx__rec_m_config, NULL, "the registry model that serves collaborative filtering {model?, alias?, pool_above?}"},
		{"recommend.info", SX_ROLE_READER, m_info, NULL, "catalogue, index and model state"},
		{"profile.get", SX_ROLE_READER, m_profile, NULL, "a user's inferred preferences {user}"},
	};
	for (size_t i = 0; i < SX_ARRAY_SIZE(methods); i++)
		if (sx_rpc_register(e->rpc, &methods[i]) < 0) {
			rc = SX_ENOMEM;
			goto fail;
		}
	return 0;
fail:
	rec_free(R);
	sx__rec = NULL;
	return rc;
}

static void stop(struct sx_engine *e)
{
	struct rec *R = sx__rec;
	SX_UNUSED(e);
	if (!R)
		return;
	if (sx__rec_content_save() < 0 || sx__rec_counts_save(&R->live) < 0)
		sx_log_warn("recommend: cannot save the indexes: %s", sx_diag_last());
	sx__rec_top_cache_clear();
	sx__rec_registry_stop();
	rec_free(R);
	sx__rec = NULL;
	free(pend);
	pend = NULL;
	npend = cappend = 0;
}

static void info(struct sx_engine *e, msgpack_packer *pk)
{
	SX_UNUSED(e);
	struct rec *R = sx__rec;
	msgpack_pack_map(pk, 2);
	sx_pack_kv_uint(pk, "items", R ? R->nitems : 0);
	sx_pack_kv_bool(pk, "model", R && R->live.fs);
}

const struct sx_plugin sx_plugin_recommend = {"recommend", start, stop, info};
