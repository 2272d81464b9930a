/* Experiment results: attribution of events to exposures, statistics,
 * the decision rule, the report and its timeline. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/dashboards/export.h"
#include "plugins/events/events.h"
#include "plugins/experiments/internal.h"
#include "store/store.h"

#define DAY_MS 86400000LL
#define TIMELINE_DAYS_MAX 400

struct expo {
	size_t off; /* into the id buffer */
	uint32_t len;
	int variant;
	int64_t t;
};

struct collect {
	const struct xp_def *d;
	struct expo *e;
	size_t n, cap;
	char *ids;
	size_t idlen, idcap;
	double other;
	msgpack_zone zone;
	size_t klen;
};

static int collect_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct collect *c = ud;
	msgpack_object o;
	msgpack_zone_clear(&c->zone);
	if (sx_frame_decode(v->data, v->len, &c->zone, &o) < 0 || o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 2 ||
	    o.via.array.ptr[0].type != MSGPACK_OBJECT_STR)
		return 0;
	const msgpack_object *name = &o.via.array.ptr[0], *t = &o.via.array.ptr[1];
	int vi = -1;
	for (int i = 0; i < c->d->nv; i++)
		if (c->d->v[i].nlen == name->via.str.size && memcmp(c->d->v[i].name, name->via.str.ptr, name->via.str.size) == 0)
			vi = i;
	if (vi < 0) {
		c->other++;
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		void *p = realloc(c->e, cap * sizeof(*c->e));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		c->e = p;
		c->cap = cap;
	}
	size_t ulen = k->len - c->klen - 1;
	if (c->idlen + ulen > c->idcap) {
		size_t cap = c->idcap ? c->idcap * 2 : 65536;
		while (cap < c->idlen + ulen)
			cap *= 2;
		void *p = realloc(c->ids, cap);
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		c->ids = p;
		c->idcap = cap;
	}
	memcpy(c->ids + c->idlen, (const char *)k->data + c->klen + 1, ulen);
	struct expo *e = &c->e[c->n++];
	e->off = c->idlen;
	e->len = (uint32_t)ulen;
	e->variant = vi;
	e->t = t->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)t->via.u64 : 0;
	c->idlen += ulen;
	return 0;
}

/* One user's events, gathered per metric. */
struct unit {
	const struct xp_def *d;
	int64_t t0;
	int variant;
	struct xp_results *r;
	msgpack_zone *zone;
	double post_cnt[XP_METRICS_MAX], post_sum[XP_METRICS_MAX], post_nval[XP_METRICS_MAX];
	double pre_cnt[XP_METRICS_MAX], pre_sum[XP_METRICS_MAX], pre_nval[XP_METRICS_MAX];
};

int sx__xp_prop_value(const struct sx_event *ev, const struct xp_metric *m, msgpack_zone *zone, double *out)
{
	msgpack_object o;
	if (!ev->props)
		return 0;
	msgpack_zone_clear(zone);
	if (sx_frame_decode(ev->props, ev->props_len, zone, &o) < 0 || o.type != MSGPACK_OBJECT_MAP)
		return 0;
	for (uint32_t i = 0; i < o.via.map.size; i++) {
		const msgpack_object *k = &o.via.map.ptr[i].key, *v = &o.via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != m->plen || memcmp(k->via.str.ptr, m->prop, m->plen) != 0)
			continue;
		switch (v->type) {
		case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)v->via.u64; return 1;
		case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)v->via.i64; return 1;
		case MSGPACK_OBJECT_FLOAT32:
		case MSGPACK_OBJECT_FLOAT64: *out = v->via.f64; return isfinite(v->via.f64);
		default: return 0;
		}
	}
	return 0;
}

static int event_cb(const struct sx_event *ev, void *ud)
{
	struct unit *u = ud;
	const struct xp_def *d = u->d;
	for (int i = 0; i < d->nm; i++) {
		const struct xp_metric *m = &d->m[i];
		if (m->elen != ev->name_len || memcmp(m->event, ev->name, m->elen) != 0)
			continue;
		int post = ev->time >= u->t0 && ev->time < u->t0 + m->window_ms;
		int pre = ev->time < u->t0 && ev->time >= u->t0 - m->window_ms;
		if (!post && !pre)
			continue;
		double val = 1;
		int has = 1;
		if (m->kind == XP_SUM || m->kind == XP_MEAN)
			has = sx__xp_prop_value(ev, m, u->zone, &val);
		if (post) {
			if (u->r->days) {
				int64_t di = (ev->time - u->r->day0) / DAY_MS;
				di = di < 0 ? 0 : di >= u->r->ndays ? u->r->ndays - 1 : di;
				struct xp_day *day = &u->r->days[di];
				if (u->post_cnt[i] == 0)
					day->conv[i][u->variant] += 1;
				if (has) {
					day->total[i][u->variant] += m->kind == XP_CONVERSION ? 0 : val;
					day->nev[i][u->variant] += 1;
				}
			}
			u->post_cnt[i] += 1;
			if (has) {
				u->post_sum[i] += val;
				u->post_nval[i] += 1;
			}
		} else {
			u->pre_cnt[i] += 1;
			if (has) {
				u->pre_sum[i] += val;
				u->pre_nval[i] += 1;
			}
		}
	}
	return 0;
}

static void add_unit(struct xp_results *r, const struct xp_def *d, const struct unit *u)
{
	for (int i = 0; i < d->nm; i++) {
		struct xp_arm *a = &r->ms[i].arm[u->variant];
		double y, x;
		switch (d->m[i].kind) {
		case XP_CONVERSION:
			y = u->post_cnt[i] > 0;
			x = u->pre_cnt[i] > 0;
			break;
		case XP_COUNT:
			y = u->post_cnt[i];
			x = u->pre_cnt[i];
			break;
		case XP_SUM:
			y = u->post_sum[i];
			x = u->pre_sum[i];
			break;
		default:
			if (u->post_nval[i] == 0)
				continue;
			y = u->post_sum[i] / u->post_nval[i];
			x = u->pre_nval[i] > 0 ? u->pre_sum[i] / u->pre_nval[i] : 0;
		}
		a->n += 1;
		a->conv += u->post_cnt[i] > 0;
		a->sum += y;
		a->sumsq += y * y;
		a->sx += x;
		a->sxx += x * x;
		a->sxy += x * y;
	}
}

static void summary(const struct xp_arm *a, struct sx_abtest_summary *s)
{
	s->n = a->n;
	s->mean = a->n > 0 ? a->sum / a->n : 0;
	double v = a->n > 1 ? (a->sumsq - a->sum * a->sum / a->n) / (a->n - 1) : 0;
	s->var = v > 0 ? v : 0;
}

static void reason(struct xp_results *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(struct xp_results *r, const char *fmt, ...)
{
	if (r->nreasons >= XP_REASONS_MAX)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->reasons[r->nreasons++], 200, fmt, ap);
	va_end(ap);
}

/* The mixture's variance: the experiment's tau, or 10% of the pooled mean
 * (at least 1% of a unit's standard deviation), fixed at the first look with data. */
static double tau2_of(const struct xp_def *d, const struct xp_arm *a, const struct xp_arm *b)
{
	if (d->tau > 0)
		return d->tau * d->tau;
	double n = a->n + b->n;
	if (n < 2)
		return 0;
	double mean = (a->sum + b->sum) / n;
	double var = ((a->sumsq + b->sumsq) - (a->sum + b->sum) * (a->sum + b->sum) / n) / (n - 1);
	double t2 = 0.01 * mean * mean;
	if (t2 < 1e-4 * var)
		t2 = 1e-4 * var;
	return t2;
}

static void stats(struct xp *x, struct xp_results *r)
{
	const struct xp_def *d = x->def;
	int k = d->nv;
	double alpha = d->alpha;
	double pv[XP_METRICS_MAX * XP_VARIANTS_MAX];
	int pidx[XP_METRICS_MAX * XP_VARIANTS_MAX][2];
	int np = 0;
	if (!x->ms_ready) {
		memset(x->ms, 0, sizeof(x->ms));
		x->ms_ready = 1;
	}
	for (int mi = 0; mi < d->nm; mi++) {
		const struct xp_metric *m = &d->m[mi];
		struct xp_metric_stats *ms = &r->ms[mi];
		const struct xp_arm *c = &ms->arm[0];
		struct sx_abtest_summary sc, st;
		summary(c, &sc);
		double n[XP_VARIANTS_MAX], conv[XP_VARIANTS_MAX];
		int all_n = 1;
		for (int i = 0; i < k; i++) {
			n[i] = ms->arm[i].n;
			conv[i] = ms->arm[i].conv;
			all_n &= n[i] >= 2;
		}
		struct sx_abtest_bayes_arm bayes[XP_VARIANTS_MAX];
		int have_bayes = m->kind == XP_CONVERSION && sx_abtest_bayes_beta_control(n, conv, (size_t)k, 1, 1, bayes) == 0;
		struct sx_abtest_summary adj[XP_VARIANTS_MAX];
		int have_cuped = 0;
		if (all_n) {
			struct sx_abtest_cuped_sums cs[XP_VARIANTS_MAX];
			for (int i = 0; i < k; i++) {
				const struct xp_arm *a = &ms->arm[i];
				cs[i] = (struct sx_abtest_cuped_sums){a->n, a->sx, a->sum, a->sxx, a->sumsq, a->sxy};
			}
			have_cuped = sx_abtest_cuped(cs, (size_t)k, &ms->cuped_theta, adj) == 0;
		}
		if (m->kind == XP_CONVERSION && k > 2 && all_n)
			ms->have_chi2 = sx_abtest_chi2_indep(n, conv, (size_t)k, 1, &ms->chi2) == 0;
		for (int i = 1; i < k; i++) {
			const struct xp_arm *t = &ms->arm[i];
			struct xp_arm_stats *s = &ms->st[i];
			summary(t, &st);
			s->msprt_p = NAN;
			s->msprt_lo = -INFINITY;
			s->msprt_hi = INFINITY;
			s->prob_better = NAN;
			s->expected_loss = NAN;
			s->p_holm = NAN;
			if (m->kind == XP_CONVERSION) {
				if (c->n > 0 && t->n > 0)
					s->have_lift = sx_abtest_prop_ztest(c->n, c->conv, t->n, t->conv, alpha,
									    SX_ABTEST_TWO_SIDED, &s->lift) == 0;
			} else if (c->n >= 2 && t->n >= 2 && (sc.var > 0 || st.var > 0)) {
				s->have_lift = sx_abtest_welch(&sc, &st, alpha, SX_ABTEST_TWO_SIDED, &s->lift) == 0;
			}
			/* sequential test: one look */
			struct sx_abtest_msprt *q = &x->ms[mi][i];
			if (q->tau2 == 0) {
				double t2 = tau2_of(d, c, t);
				if (t2 > 0 && isfinite(t2))
					sx_abtest_msprt_init(q, t2, alpha, 0);
			}
			if (q->tau2 > 0 && c->n >= 2 && t->n >= 2) {
				if (m->kind == XP_CONVERSION)
					sx_abtest_msprt_update_props(q, c->n, c->conv, t->n, t->conv);
				else
					sx_abtest_msprt_update_means(q, &sc, &st);
				s->msprt_p = q->p_value;
				s->msprt_lo = q->ci_lo;
				s->msprt_hi = q->ci_hi;
			}
			if (have_bayes) {
				s->prob_better = m->decrease ? 1 - bayes[i].prob_beat_control : bayes[i].prob_beat_control;
				s->expected_loss = m->decrease ? bayes[i].mean - bayes[0].mean + bayes[i].loss_vs_control
							       : bayes[i].loss_vs_control;
				if (s->expected_loss < 0)
					s->expected_loss = 0;
			} else if (m->kind != XP_CONVERSION && c->n >= 1 && t->n >= 1) {
				struct sx_abtest_bayes_normal bn;
				if (sx_abtest_bayes_normal(&sc, &st, &bn) == 0) {
					s->prob_better = m->decrease ? 1 - bn.prob_beat : bn.prob_beat;
					s->expected_loss = m->decrease ? bn.loss_keep : bn.loss_choose;
				}
			}
			if (have_cuped && (adj[0].var > 0 || adj[i].var > 0)) {
				s->have_cuped = sx_abtest_welch(&adj[0], &adj[i], alpha, SX_ABTEST_TWO_SIDED, &s->cuped) == 0;
				s->cuped_mean = adj[i].mean;
			}
			if (s->have_lift && isfinite(s->lift.p_value)) {
				pv[np] = s->lift.p_value;
				pidx[np][0] = mi;
				pidx[np][1] = i;
				np++;
			}
		}
	}
	sx_diag_clear();
	if (np > 0) {
		double adjp[XP_METRICS_MAX * XP_VARIANTS_MAX];
		if (sx_abtest_holm(pv, (size_t)np, adjp) == 0)
			for (int j = 0; j < np; j++)
				r->ms[pidx[j][0]].st[pidx[j][1]].p_holm = adjp[j];
	}
	double tot = 0, w[XP_VARIANTS_MAX];
	for (int i = 0; i < k; i++) {
		tot += r->users[i];
		w[i] = d->v[i].weight;
	}
	if (!d->thompson && tot > 0)
		r->have_srm = sx_abtest_srm(r->users, w, (size_t)k, 0, &r->srm) == 0;
	if (d->thompson && d->primary >= 0) {
		double s[XP_VARIANTS_MAX], f[XP_VARIANTS_MAX], prob[XP_VARIANTS_MAX];
		const struct xp_metric_stats *pm = &r->ms[d->primary];
		for (int i = 0; i < k; i++) {
			s[i] = pm->arm[i].conv;
			f[i] = pm->arm[i].n - pm->arm[i].conv;
		}
		if (sx_abtest_thompson_mc(s, f, (size_t)k, 1, 1, 20000, (uint64_t)tot, prob) == 0) {
			/* a floor keeps every arm learning */
			double z = 0;
			for (int i = 0; i < k; i++)
				z += prob[i] = prob[i] < 0.01 ? 0.01 : prob[i];
			for (int i = 0; i < k; i++)
				x->alloc[i] = prob[i] / z;
			x->alloc_ready = 1;
		}
	}
}

static void decide(struct xp *x, struct xp_results *r)
{
	const struct xp_def *d = x->def;
	int k = d->nv;
	double alpha = d->alpha;
	r->winner = -1;
	r->ready = x->started_at > 0 && r->computed_at - x->started_at >= d->min_duration_ms;
	for (int i = 0; i < k; i++)
		r->ready &= r->users[i] >= (double)d->min_sample;
	if (r->have_srm && r->srm.mismatch) {
		r->stop = 1;
		reason(r, "sample ratio mismatch: chi-square p = %.3g < %g", r->srm.p_value, SX_ABTEST_SRM_THRESHOLD);
	}
	for (int mi = 0; mi < d->nm; mi++) {
		const struct xp_metric *m = &d->m[mi];
		if (m->role != XP_GUARDRAIL)
			continue;
		for (int i = 1; i < k; i++) {
			const struct xp_arm_stats *s = &r->ms[mi].st[i];
			double diff = x->ms[mi][i].diff;
			if (s->msprt_p < alpha && (m->decrease ? diff > 0 : diff < 0)) {
				r->stop = 1;
				reason(r, "guardrail %.*s harmed by %.*s: always-valid p = %.3g", (int)m->nlen, m->name,
				       (int)d->v[i].nlen, d->v[i].name, s->msprt_p);
			}
		}
	}
	if (r->stop || d->primary < 0)
		return;
	const struct xp_metric *m = &d->m[d->primary];
	const struct xp_metric_stats *pm = &r->ms[d->primary];
	int best = -1, worse = 0;
	double best_mean = 0;
	for (int i = 1; i < k; i++) {
		const struct xp_arm_stats *s = &pm->st[i];
		double diff = x->ms[d->primary][i].diff;
		if (!(s->msprt_p < alpha))
			continue;
		int good = m->decrease ? diff < 0 : diff > 0;
		if (!good) {
			worse++;
			continue;
		}
		double mean = pm->arm[i].n > 0 ? pm->arm[i].sum / pm->arm[i].n : 0;
		if (best < 0 || (m->decrease ? mean < best_mean : mean > best_mean)) {
			best = i;
			best_mean = mean;
		}
	}
	if (best < 0 && worse == k - 1)
		best = 0;
	if (best < 0)
		return;
	r->winner = best;
	if (best > 0)
		reason(r, "primary metric %.*s: %.*s beats %.*s (always-valid p = %.3g)", (int)m->nlen, m->name,
		       (int)d->v[best].nlen, d->v[best].name, (int)d->v[0].nlen, d->v[0].name, pm->st[best].msprt_p);
	else
		reason(r, "primary metric %.*s: every treatment is worse than %.*s", (int)m->nlen, m->name,
		       (int)d->v[0].nlen, d->v[0].name);
	reason(r, "no guardrail harmed");
	if (r->have_srm)
		reason(r, "sample ratio ok (p = %.3g)", r->srm.p_value);
	if (r->ready)
		reason(r, "minimum sample (%lld per variant) and duration (%lld ms) reached", (long long)d->min_sample,
		       (long long)d->min_duration_ms);
	else
		reason(r, "waiting for the minimum sample (%lld per variant) and duration (%lld ms)",
		       (long long)d->min_sample, (long long)d->min_duration_ms);
}

static int gather_scan(struct xp *x, int with_timeline, struct xp_results *r)
{
	const struct xp_def *d = x->def;
	struct collect c = {0};
	int rc;
	c.d = d;
	c.klen = x->klen;
	if (!msgpack_zone_init(&c.zone, 4096))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	uint8_t lo[XP_KEY_MAX + 1], hi[XP_KEY_MAX + 1];
	memcpy(lo, x->key, x->klen);
	memcpy(hi, x->key, x->klen);
	lo[x->klen] = 0;
	hi[x->klen] = 1;
	rc = sx_store_scan(sx__xp_eng->store, SX_T_EXPOSURES, lo, x->klen + 1, hi, x->klen + 1, 0, collect_cb, &c);
	r->other_users = c.other;
	if (rc >= 0 && with_timeline) {
		int64_t first = r->computed_at;
		for (size_t i = 0; i < c.n; i++)
			if (c.e[i].t < first)
				first = c.e[i].t;
		if (x->started_at && x->started_at < first)
			first = x->started_at;
		r->day0 = first - first % DAY_MS;
		int64_t nd = (r->computed_at - r->day0) / DAY_MS + 1;
		if (nd > TIMELINE_DAYS_MAX) {
			r->day0 = r->computed_at - r->computed_at % DAY_MS - (TIMELINE_DAYS_MAX - 1) * DAY_MS;
			nd = TIMELINE_DAYS_MAX;
		}
		r->ndays = (int)nd;
		r->days = calloc((size_t)nd, sizeof(*r->days));
		if (!r->days)
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
	}
	int64_t maxw = 1;
	for (int i = 0; i < d->nm; i++)
		if (d->m[i].window_ms > maxw)
			maxw = d->m[i].window_ms;
	for (size_t i = 0; rc >= 0 && i < c.n; i++) {
		const struct expo *e = &c.e[i];
		struct unit u;
		memset(&u, 0, sizeof(u));
		u.d = d;
		u.t0 = e->t;
		u.variant = e->variant;
		u.r = r;
		u.zone = &c.zone;
		r->users[e->variant] += 1;
		if (r->days) {
			int64_t di = (e->t - r->day0) / DAY_MS;
			r->days[di < 0 ? 0 : di >= r->ndays ? r->ndays - 1 : di].users[e->variant] += 1;
		}
		uint32_t idx;
		if (d->nm > 0 && sx_events_user_index(NULL, c.ids + e->off, e->len, &idx) == 0) {
			int64_t from = e->t - maxw < 0 ? 0 : e->t - maxw;
			rc = sx_events_user_scan(NULL, idx, from, e->t + maxw, 0, event_cb, &u);
		}
		add_unit(r, d, &u);
	}
	msgpack_zone_destroy(&c.zone);
	free(c.e);
	free(c.ids);
	if (rc < 0) {
		free(r->days);
		r->days = NULL;
		return rc;
	}
	return 0;
}

static void timeline_span(struct xp *x, struct xp_results *r, int64_t first)
{
	if (x->started_at && x->started_at < first)
		first = x->started_at;
	r->day0 = first - first % DAY_MS;
	int64_t nd = (r->computed_at - r->day0) / DAY_MS + 1;
	if (nd > TIMELINE_DAYS_MAX) {
		r->day0 = r->computed_at - r->computed_at % DAY_MS - (TIMELINE_DAYS_MAX - 1) * DAY_MS;
		nd = TIMELINE_DAYS_MAX;
	}
	r->ndays = (int)nd;
}

static int gather_counters(struct xp *x, int with_timeline, struct xp_results *r)
{
	const struct xp_def *d = x->def;
	struct xp_day_rec *days;
	size_t nd;
	double *a;
	int rc = sx__xp_counters_read(x, &days, &nd, &a);
	if (rc < 0)
		return rc;
	int64_t first = r->computed_at;
	for (size_t i = 0; i < nd; i++) {
		int any = 0;
		for (int v = 0; v < d->nv; v++) {
			r->users[v] += days[i].v[v];
			any |= days[i].v[v] > 0;
		}
		if (any && (int64_t)days[i].day * DAY_MS < first)
			first = (int64_t)days[i].day * DAY_MS;
	}
	r->other_users = a[0];
	for (int m = 0; m < d->nm; m++)
		for (int v = 0; v < d->nv; v++) {
			struct xp_arm *arm = &r->ms[m].arm[v];
			const double *c = a + sx__xp_a_at(d, m, v, 0);
			arm->n = d->m[m].kind == XP_MEAN ? c[0] : r->users[v];
			arm->conv = c[1];
			arm->sum = c[2];
			arm->sumsq = c[3];
			arm->sx = c[4];
			arm->sxx = c[5];
			arm->sxy = c[6];
		}
	if (with_timeline) {
		timeline_span(x, r, first);
		r->days = calloc((size_t)r->ndays, sizeof(*r->days));
		if (!r->days)
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
		for (size_t i = 0; rc >= 0 && i < nd; i++) {
			int64_t di = (int64_t)days[i].day - r->day0 / DAY_MS;
			struct xp_day *day = &r->days[di < 0 ? 0 : di >= r->ndays ? r->ndays - 1 : di];
			const double *t = days[i].v;
			for (int v = 0; v < d->nv; v++) {
				day->users[v] += t[v];
				for (int m = 0; m < d->nm; m++) {
					day->conv[m][v] += t[sx__xp_t_at(d, m, v, 0)];
					day->total[m][v] += t[sx__xp_t_at(d, m, v, 1)];
					day->nev[m][v] += t[sx__xp_t_at(d, m, v, 2)];
				}
			}
		}
	}
	for (size_t i = 0; i < nd; i++)
		free(days[i].v);
	free(days);
	free(a);
	return rc < 0 ? rc : 0;
}

int sx__xp_results(struct xp *x, int with_timeline, int recompute, struct xp_results *r)
{
	const struct xp_def *d = x->def;
	memset(r, 0, sizeof(*r));
	r->computed_at = sx_wall_ms();
	r->winner = -1;
	int rc = recompute ? gather_scan(x, with_timeline, r) : gather_counters(x, with_timeline, r);
	if (rc < 0) {
		free(r->days);
		r->days = NULL;
		return rc;
	}
	if (r->days)
		for (int i = 1; i < r->ndays; i++)
			for (int v = 0; v < d->nv; v++) {
				r->days[i].users[v] += r->days[i - 1].users[v];
				for (int m = 0; m < d->nm; m++) {
					r->days[i].conv[m][v] += r->days[i - 1].conv[m][v];
					r->days[i].total[m][v] += r->days[i - 1].total[m][v];
					r->days[i].nev[m][v] += r->days[i - 1].nev[m][v];
				}
			}
	stats(x, r);
	decide(x, r);
	return 0;
}

/* ---- packing ---- */

static void pack_num(msgpack_packer *pk, const char *k, double v)
{
	sx_pack_key(pk, k);
	if (isfinite(v))
		msgpack_pack_double(pk, v);
	else
		msgpack_pack_nil(pk);
}

static void pack_lift(msgpack_packer *pk, const struct sx_abtest_lift *l)
{
	msgpack_pack_map(pk, 8);
	pack_num(pk, "abs", l->diff);
	pack_num(pk, "abs_lo", l->diff_lo);
	pack_num(pk, "abs_hi", l->diff_hi);
	pack_num(pk, "rel", l->rel);
	pack_num(pk, "rel_lo", l->rel_lo);
	pack_num(pk, "rel_hi", l->rel_hi);
	pack_num(pk, "stat", l->stat);
	pack_num(pk, "p_value", l->p_value);
}

static double value_of(int kind, const struct xp_arm *a)
{
	if (a->n <= 0)
		return NAN;
	return (kind == XP_CONVERSION ? a->conv : a->sum) / a->n;
}

void sx__xp_pack_results(struct xp *x, const struct xp_results *r, msgpack_packer *pk)
{
	const struct xp_def *d = x->def;
	msgpack_pack_map(pk, 9);
	sx_pack_key(pk, "key");
	sx_pack_strn(pk, x->key, x->klen);
	sx_pack_kv_uint(pk, "version", x->version);
	sx_pack_kv_str(pk, "state", sx__xp_state_name(x->state));
	sx_pack_kv_int(pk, "computed_at", r->computed_at);
	sx_pack_key(pk, "variants");
	msgpack_pack_array(pk, (uint32_t)d->nv);
	for (int i = 0; i < d->nv; i++) {
		msgpack_pack_map(pk, 4);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, d->v[i].name, d->v[i].nlen);
		sx_pack_kv_double(pk, "users", r->users[i]);
		sx_pack_kv_double(pk, "weight", d->v[i].weight);
		sx_pack_kv_double(pk, "allocation", x->alloc[i]);
	}
	sx_pack_kv_double(pk, "other_users", r->other_users);
	sx_pack_key(pk, "srm");
	if (r->have_srm) {
		msgpack_pack_map(pk, 4);
		sx_pack_kv_double(pk, "stat", r->srm.stat);
		sx_pack_kv_double(pk, "df", r->srm.df);
		sx_pack_kv_double(pk, "p_value", r->srm.p_value);
		sx_pack_kv_bool(pk, "mismatch", r->srm.mismatch);
	} else {
		msgpack_pack_nil(pk);
	}
	sx_pack_key(pk, "metrics");
	msgpack_pack_array(pk, (uint32_t)d->nm);
	for (int mi = 0; mi < d->nm; mi++) {
		const struct xp_metric *m = &d->m[mi];
		const struct xp_metric_stats *ms = &r->ms[mi];
		msgpack_pack_map(pk, 8);
		sx_pack_key(pk, "name");
		sx_pack_strn(pk, m->name, m->nlen);
		sx_pack_kv_str(pk, "kind", sx__xp_kind_name(m->kind));
		sx_pack_kv_str(pk, "role", sx__xp_role_name(m->role));
		sx_pack_kv_str(pk, "direction", m->decrease ? "decrease" : "increase");
		sx_pack_kv_int(pk, "window_ms", m->window_ms);
		sx_pack_key(pk, "chi2");
		if (ms->have_chi2) {
			msgpack_pack_map(pk, 3);
			sx_pack_kv_double(pk, "stat", ms->chi2.stat);
			sx_pack_kv_double(pk, "df", ms->chi2.df);
			sx_pack_kv_double(pk, "p_value", ms->chi2.p_value);
		} else {
			msgpack_pack_nil(pk);
		}
		pack_num(pk, "cuped_theta", ms->cuped_theta);
		sx_pack_key(pk, "variants");
		msgpack_pack_array(pk, (uint32_t)d->nv);
		for (int i = 0; i < d->nv; i++) {
			const struct xp_arm *a = &ms->arm[i];
			const struct xp_arm_stats *s = &ms->st[i];
			struct sx_abtest_summary su;
			summary(a, &su);
			msgpack_pack_map(pk, 17);
			sx_pack_key(pk, "name");
			sx_pack_strn(pk, d->v[i].name, d->v[i].nlen);
			sx_pack_kv_double(pk, "users", a->n);
			sx_pack_kv_double(pk, "conversions", a->conv);
			sx_pack_kv_double(pk, "sum", a->sum);
			sx_pack_kv_double(pk, "sum_sq", a->sumsq);
			pack_num(pk, "value", value_of(m->kind, a));
			pack_num(pk, "sd", a->n > 1 ? sqrt(su.var) : NAN);
			pack_num(pk, "pre_mean", a->n > 0 ? a->sx / a->n : NAN);
			sx_pack_key(pk, "lift");
			if (i > 0 && s->have_lift)
				pack_lift(pk, &s->lift);
			else
				msgpack_pack_nil(pk);
			pack_num(pk, "p_value", i > 0 && s->have_lift ? s->lift.p_value : NAN);
			pack_num(pk, "p_holm", i > 0 ? s->p_holm : NAN);
			pack_num(pk, "msprt_p", i > 0 ? s->msprt_p : NAN);
			sx_pack_key(pk, "msprt_ci");
			if (i > 0 && isfinite(s->msprt_p)) {
				msgpack_pack_array(pk, 2);
				isfinite(s->msprt_lo) ? msgpack_pack_double(pk, s->msprt_lo) : msgpack_pack_nil(pk);
				isfinite(s->msprt_hi) ? msgpack_pack_double(pk, s->msprt_hi) : msgpack_pack_nil(pk);
			} else {
				msgpack_pack_nil(pk);
			}
			pack_num(pk, "prob_better", i > 0 ? s->prob_better : NAN);
			pack_num(pk, "expected_loss", i > 0 ? s->expected_loss : NAN);
			sx_pack_key(pk, "cuped");
			if (i > 0 && s->have_cuped) {
				msgpack_pack_map(pk, 2);
				pack_num(pk, "mean", s->cuped_mean);
				sx_pack_key(pk, "lift");
				pack_lift(pk, &s->cuped);
			} else {
				msgpack_pack_nil(pk);
			}
			sx_pack_kv_bool(pk, "control", i == 0);
		}
	}
	sx_pack_key(pk, "decision");
	msgpack_pack_map(pk, 5);
	sx_pack_key(pk, "winner");
	if (r->winner >= 0)
		sx_pack_strn(pk, d->v[r->winner].name, d->v[r->winner].nlen);
	else
		msgpack_pack_nil(pk);
	sx_pack_kv_bool(pk, "ready", r->ready);
	sx_pack_kv_bool(pk, "stop", r->stop);
	sx_pack_kv_str(pk, "rule", d->rule == XP_RULE_NONE ? "none" : "default");
	sx_pack_key(pk, "reasons");
	msgpack_pack_array(pk, (uint32_t)r->nreasons);
	for (int i = 0; i < r->nreasons; i++)
		sx_pack_str(pk, r->reasons[i]);
}

static double day_value(int kind, const struct xp_day *day, int m, int v)
{
	switch (kind) {
	case XP_CONVERSION: return day->users[v] > 0 ? day->conv[m][v] / day->users[v] : NAN;
	case XP_MEAN: return day->nev[m][v] > 0 ? day->total[m][v] / day->nev[m][v] : NAN;
	default: return day->users[v] > 0 ? day->total[m][v] / day->users[v] : NAN;
	}
}

void sx__xp_pack_timeline(struct xp *x, const struct xp_results *r, msgpack_packer *pk)
{
	const struct xp_def *d = x->def;
	msgpack_pack_array(pk, (uint32_t)r->ndays);
	for (int i = 0; i < r->ndays; i++) {
		const struct xp_day *day = &r->days[i];
		msgpack_pack_map(pk, 2);
		sx_pack_kv_int(pk, "day", r->day0 + i * DAY_MS);
		sx_pack_key(pk, "variants");
		msgpack_pack_array(pk, (uint32_t)d->nv);
		for (int v = 0; v < d->nv; v++) {
			msgpack_pack_map(pk, 3);
			sx_pack_key(pk, "name");
			sx_pack_strn(pk, d->v[v].name, d->v[v].nlen);
			sx_pack_kv_double(pk, "users", day->users[v]);
			sx_pack_key(pk, "metrics");
			msgpack_pack_map(pk, (uint32_t)d->nm);
			for (int m = 0; m < d->nm; m++) {
				sx_pack_strn(pk, d->m[m].name, d->m[m].nlen);
				msgpack_pack_map(pk, 3);
				sx_pack_kv_double(pk, "conversions", day->conv[m][v]);
				sx_pack_kv_double(pk, "total", d->m[m].kind == XP_CONVERSION ? day->conv[m][v] : day->total[m][v]);
				pack_num(pk, "value", day_value(d->m[m].kind, day, m, v));
			}
		}
	}
}

static void csv_num(msgpack_sbuffer *sb, double v)
{
	char buf[40];
	int n = isfinite(v) ? snprintf(buf, sizeof(buf), ",%.10g", v) : snprintf(buf, sizeof(buf), ",");
	msgpack_sbuffer_write(sb, buf, (size_t)n);
}

static void csv_str(msgpack_sbuffer *sb, const char *s, size_t n, int comma)
{
	if (comma)
		msgpack_sbuffer_write(sb, ",", 1);
	msgpack_sbuffer_write(sb, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			msgpack_sbuffer_write(sb, "\"", 1);
		msgpack_sbuffer_write(sb, s + i, 1);
	}
	msgpack_sbuffer_write(sb, "\"", 1);
}

void sx__xp_report_csv(struct xp *x, const struct xp_results *r, msgpack_sbuffer *sb)
{
	const struct xp_def *d = x->def;
	static const char head[] =
		"section,metric,variant,users,conversions,sum,value,abs_lift,abs_lo,abs_hi,rel_lift,rel_lo,rel_hi,"
		"p_value,p_holm,msprt_p,prob_better,expected_loss,cuped_mean,cuped_p_value,srm_p_value\n";
	msgpack_sbuffer_write(sb, head, sizeof(head) - 1);
	for (int mi = 0; mi < d->nm; mi++) {
		const struct xp_metric_stats *ms = &r->ms[mi];
		for (int i = 0; i < d->nv; i++) {
			const struct xp_arm *a = &ms->arm[i];
			const struct xp_arm_stats *s = &ms->st[i];
			int l = i > 0 && s->have_lift, cu = i > 0 && s->have_cuped;
			msgpack_sbuffer_write(sb, "results", 7);
			csv_str(sb, d->m[mi].name, d->m[mi].nlen, 1);
			csv_str(sb, d->v[i].name, d->v[i].nlen, 1);
			csv_num(sb, a->n);
			csv_num(sb, a->conv);
			csv_num(sb, a->sum);
			csv_num(sb, value_of(d->m[mi].kind, a));
			csv_num(sb, l ? s->lift.diff : NAN);
			csv_num(sb, l ? s->lift.diff_lo : NAN);
			csv_num(sb, l ? s->lift.diff_hi : NAN);
			csv_num(sb, l ? s->lift.rel : NAN);
			csv_num(sb, l ? s->lift.rel_lo : NAN);
			csv_num(sb, l ? s->lift.rel_hi : NAN);
			csv_num(sb, l ? s->lift.p_value : NAN);
			csv_num(sb, i > 0 ? s->p_holm : NAN);
			csv_num(sb, i > 0 ? s->msprt_p : NAN);
			csv_num(sb, i > 0 ? s->prob_better : NAN);
			csv_num(sb, i > 0 ? s->expected_loss : NAN);
			csv_num(sb, cu ? s->cuped_mean : NAN);
			csv_num(sb, cu ? s->cuped.p_value : NAN);
			csv_num(sb, r->have_srm ? r->srm.p_value : NAN);
			msgpack_sbuffer_write(sb, "\n", 1);
		}
	}
	static const char head2[] = "\nsection,day,metric,variant,users,conversions,total,value\n";
	msgpack_sbuffer_write(sb, head2, sizeof(head2) - 1);
	for (int i = 0; i < r->ndays; i++)
		for (int mi = 0; mi < d->nm; mi++)
			for (int v = 0; v < d->nv; v++) {
				const struct xp_day *day = &r->days[i];
				char buf[48];
				int n = snprintf(buf, sizeof(buf), "timeline,%lld", (long long)(r->day0 + i * DAY_MS));
				msgpack_sbuffer_write(sb, buf, (size_t)n);
				csv_str(sb, d->m[mi].name, d->m[mi].nlen, 1);
				csv_str(sb, d->v[v].name, d->v[v].nlen, 1);
				csv_num(sb, day->users[v]);
				csv_num(sb, day->conv[mi][v]);
				csv_num(sb, d->m[mi].kind == XP_CONVERSION ? day->conv[mi][v] : day->total[mi][v]);
				csv_num(sb, day_value(d->m[mi].kind, day, mi, v));
				msgpack_sbuffer_write(sb, "\n", 1);
			}
}

/* ---- XLSX ---- */

static msgpack_object cell_num(double v)
{
	msgpack_object o = {.type = MSGPACK_OBJECT_NIL};
	if (isfinite(v)) {
		o.type = MSGPACK_OBJECT_FLOAT64;
		o.via.f64 = v;
	}
	return o;
}

static msgpack_object cell_str(const char *s, size_t n)
{
	msgpack_object o = {.type = MSGPACK_OBJECT_STR};
	o.via.str.ptr = s;
	o.via.str.size = (uint32_t)n;
	return o;
}

enum {
	C_SECTION, C_DAY, C_METRIC, C_VARIANT, C_USERS, C_CONV, C_SUM, C_TOTAL, C_VALUE, C_ABS, C_ABS_LO, C_ABS_HI,
	C_REL, C_REL_LO, C_REL_HI, C_P, C_P_HOLM, C_MSPRT_P, C_PROB, C_LOSS, C_CUPED_MEAN, C_CUPED_P, C_SRM_P, C_COUNT
};

int sx__xp_report_xlsx(struct xp *x, const struct xp_results *r, msgpack_sbuffer *sb)
{
	static const char *const cols[C_COUNT] = {
		"section", "day", "metric", "variant", "users", "conversions", "sum", "total", "value", "abs_lift",
		"abs_lo", "abs_hi", "rel_lift", "rel_lo", "rel_hi", "p_value", "p_holm", "msprt_p", "prob_better",
		"expected_loss", "cuped_mean", "cuped_p_value", "srm_p_value"};
	const struct xp_def *d = x->def;
	const char *dir = getenv("TMPDIR");
	char path[4200];
	snprintf(path, sizeof(path), "%s/sx-xp-report-XXXXXX.xlsx", dir && dir[0] ? dir : "/tmp");
	int fd = mkstemps(path, 5);
	if (fd < 0)
		return sx_diag_set(SX_EIO, "report: cannot create a temporary file in %s: %s", dir && dir[0] ? dir : "/tmp",
				   strerror(errno));
	close(fd);
	struct sx_tabw *w = sx_tabw_new(SX_FMT_XLSX, path);
	int rc = w ? sx_tabw_columns(w, cols, C_COUNT) : sx_diag_last_code();
	msgpack_object c[C_COUNT];
	for (int mi = 0; rc == 0 && mi < d->nm; mi++) {
		const struct xp_metric_stats *ms = &r->ms[mi];
		for (int i = 0; rc == 0 && i < d->nv; i++) {
			const struct xp_arm *a = &ms->arm[i];
			const struct xp_arm_stats *s = &ms->st[i];
			int l = i > 0 && s->have_lift, cu = i > 0 && s->have_cuped;
			for (int j = 0; j < C_COUNT; j++)
				c[j].type = MSGPACK_OBJECT_NIL;
			c[C_SECTION] = cell_str("results", 7);
			c[C_METRIC] = cell_str(d->m[mi].name, d->m[mi].nlen);
			c[C_VARIANT] = cell_str(d->v[i].name, d->v[i].nlen);
			c[C_USERS] = cell_num(a->n);
			c[C_CONV] = cell_num(a->conv);
			c[C_SUM] = cell_num(a->sum);
			c[C_VALUE] = cell_num(value_of(d->m[mi].kind, a));
			c[C_ABS] = cell_num(l ? s->lift.diff : NAN);
			c[C_ABS_LO] = cell_num(l ? s->lift.diff_lo : NAN);
			c[C_ABS_HI] = cell_num(l ? s->lift.diff_hi : NAN);
			c[C_REL] = cell_num(l ? s->lift.rel : NAN);
			c[C_REL_LO] = cell_num(l ? s->lift.rel_lo : NAN);
			c[C_REL_HI] = cell_num(l ? s->lift.rel_hi : NAN);
			c[C_P] = cell_num(l ? s->lift.p_value : NAN);
			c[C_P_HOLM] = cell_num(i > 0 ? s->p_holm : NAN);
			c[C_MSPRT_P] = cell_num(i > 0 ? s->msprt_p : NAN);
			c[C_PROB] = cell_num(i > 0 ? s->prob_better : NAN);
			c[C_LOSS] = cell_num(i > 0 ? s->expected_loss : NAN);
			c[C_CUPED_MEAN] = cell_num(cu ? s->cuped_mean : NAN);
			c[C_CUPED_P] = cell_num(cu ? s->cuped.p_value : NAN);
			c[C_SRM_P] = cell_num(r->have_srm ? r->srm.p_value : NAN);
			rc = sx_tabw_row(w, c);
		}
	}
	for (int i = 0; rc == 0 && i < r->ndays; i++) {
		char day[32];
		size_t dl = sx_iso8601(r->day0 + i * DAY_MS, day, sizeof(day));
		for (int mi = 0; rc == 0 && mi < d->nm; mi++)
			for (int v = 0; rc == 0 && v < d->nv; v++) {
				const struct xp_day *dy = &r->days[i];
				for (int j = 0; j < C_COUNT; j++)
					c[j].type = MSGPACK_OBJECT_NIL;
				c[C_SECTION] = cell_str("timeline", 8);
				c[C_DAY] = cell_str(day, dl > 10 ? 10 : dl);
				c[C_METRIC] = cell_str(d->m[mi].name, d->m[mi].nlen);
				c[C_VARIANT] = cell_str(d->v[v].name, d->v[v].nlen);
				c[C_USERS] = cell_num(dy->users[v]);
				c[C_CONV] = cell_num(dy->conv[mi][v]);
				c[C_TOTAL] = cell_num(d->m[mi].kind == XP_CONVERSION ? dy->conv[mi][v] : dy->total[mi][v]);
				c[C_VALUE] = cell_num(day_value(d->m[mi].kind, dy, mi, v));
				rc = sx_tabw_row(w, c);
			}
	}
	if (rc == 0)
		rc = sx_tabw_end(w);
	sx_tabw_free(w);
	if (rc == 0) {
		FILE *f = fopen(path, "rb");
		char buf[65536];
		size_t n;
		if (!f)
			rc = sx_diag_set(SX_EIO, "report: cannot read %s: %s", path, strerror(errno));
		while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0)
			msgpack_sbuffer_write(sb, buf, n);
		if (f && ferror(f))
			rc = sx_diag_set(SX_EIO, "report: cannot read %s", path);
		if (f)
			fclose(f);
	}
	unlink(path);
	return rc;
}
