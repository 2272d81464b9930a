/* Incremental results: per-user metric state in the exposure record, per
 * experiment sums ('A') and per-day sums ('T') in the experiments table, kept
 * current by assignment, the events plugin's track observer and erasure.
 * Everything is written through the store's filling batch, so a rolled-back
 * request or a failed batch takes the counters with it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/experiments/internal.h"
#include "plugins/privacy/privacy.h"
#include "store/store.h"

#define DAY_MS 86400000LL
#define HDR 12 /* u32 magic, u32 spec, u16 nv, u16 nm */
#define A_MAGIC 0x58504131u /* "XPA1" */
#define T_MAGIC 0x58505431u /* "XPT1" */
#define AF 7 /* n, conv, sum, sumsq, sx, sxx, sxy */
#define TF 3 /* conv, total, nev */

/* One user's state for one metric: post (p) and pre (q) window. */
struct ust {
	uint32_t day1; /* 1 + the day of the earliest post-window event; 0: none */
	uint32_t pc, qc, pn, qn;
	double ps, qs;
};

/* ---- layout ---- */

static size_t a_len(const struct xp_def *d) { return 1 + (size_t)d->nm * d->nv * AF; }
static size_t a_at(const struct xp_def *d, int m, int v, int f) { return 1 + ((size_t)m * d->nv + v) * AF + f; }
static size_t t_len(const struct xp_def *d) { return (size_t)d->nv + (size_t)d->nm * d->nv * TF; }
static size_t t_at(const struct xp_def *d, int m, int v, int f) { return d->nv + ((size_t)m * d->nv + v) * TF + f; }

uint32_t sx__xp_spec(const struct xp_def *d)
{
	XXH3_state_t *s = XXH3_createState();
	if (!s)
		return 0;
	XXH3_64bits_reset(s);
	for (int i = 0; i < d->nm; i++) {
		const struct xp_metric *m = &d->m[i];
		int32_t kind = m->kind;
		uint32_t el = (uint32_t)m->elen, pl = m->kind == XP_SUM || m->kind == XP_MEAN ? (uint32_t)m->plen : 0;
		XXH3_64bits_update(s, &kind, sizeof(kind));
		XXH3_64bits_update(s, &m->window_ms, sizeof(m->window_ms));
		XXH3_64bits_update(s, &el, sizeof(el));
		XXH3_64bits_update(s, m->event, el);
		XXH3_64bits_update(s, &pl, sizeof(pl));
		XXH3_64bits_update(s, m->prop, pl);
	}
	uint32_t h = (uint32_t)XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return h;
}

static size_t akey(uint8_t *k, const struct xp *x)
{
	k[0] = 'A';
	memcpy(k + 1, x->key, x->klen);
	return 1 + x->klen;
}

static size_t tkey(uint8_t *k, const struct xp *x, uint32_t day)
{
	k[0] = 'T';
	memcpy(k + 1, x->key, x->klen);
	k[1 + x->klen] = 0;
	sx_be32(k + 2 + x->klen, day);
	return 6 + x->klen;
}

/* Decodes a stored A or T record into out (zeroed, sized for d). A record of
 * another metric spec counts as empty; one with fewer variants (variants are
 * only ever appended) is spread out. */
static int rec_decode(const struct xp_def *d, int t, uint32_t spec, const struct sx_val *v, double *out)
{
	size_t n = t ? t_len(d) : a_len(d);
	memset(out, 0, n * sizeof(double));
	const uint8_t *p = v->data;
	if (v->len < HDR || sx_get_be32(p) != (t ? T_MAGIC : A_MAGIC))
		return sx_diag_set(SX_ECORRUPT, "experiment counters: malformed record");
	if (sx_get_be32(p + 4) != spec)
		return 0;
	int nv = p[8] << 8 | p[9], nm = p[10] << 8 | p[11];
	size_t have = t ? (size_t)nv + (size_t)nm * nv * TF : 1 + (size_t)nm * nv * AF;
	if (nm != d->nm || nv > d->nv || nv < 1 || v->len != HDR + have * sizeof(double))
		return sx_diag_set(SX_ECORRUPT, "experiment counters: record of %d variants and %d metrics", nv, nm);
	const uint8_t *q = p + HDR;
	double x;
#define RD(i) (memcpy(&x, q + (size_t)(i) * sizeof(double), sizeof(double)), x)
	if (t) {
		for (int j = 0; j < nv; j++)
			out[j] = RD(j);
		for (int m = 0; m < nm; m++)
			for (int j = 0; j < nv; j++)
				for (int f = 0; f < TF; f++)
					out[t_at(d, m, j, f)] = RD(nv + ((size_t)m * nv + j) * TF + f);
	} else {
		out[0] = RD(0);
		for (int m = 0; m < nm; m++)
			for (int j = 0; j < nv; j++)
				for (int f = 0; f < AF; f++)
					out[a_at(d, m, j, f)] = RD(1 + ((size_t)m * nv + j) * AF + f);
	}
#undef RD
	return 0;
}

static int rec_put(const struct xp_def *d, int t, uint32_t spec, const uint8_t *k, size_t kl, const double *val)
{
	size_t n = t ? t_len(d) : a_len(d);
	uint8_t *buf = malloc(HDR + n * sizeof(double));
	if (!buf)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	sx_be32(buf, t ? T_MAGIC : A_MAGIC);
	sx_be32(buf + 4, spec);
	buf[8] = (uint8_t)(d->nv >> 8), buf[9] = (uint8_t)d->nv;
	buf[10] = (uint8_t)(d->nm >> 8), buf[11] = (uint8_t)d->nm;
	memcpy(buf + HDR, val, n * sizeof(double));
	int rc = sx_store_put(sx__xp_eng->store, SX_T_EXPERIMENTS, k, kl, buf, HDR + n * sizeof(double));
	free(buf);
	return rc;
}

/* ---- per-user state ---- */

static size_t ust_size(int kind)
{
	switch (kind) {
	case XP_CONVERSION: return 5;
	case XP_COUNT: return 12;
	case XP_SUM: return 20;
	default: return 28;
	}
}

static int ust_zero(const struct ust *s) { return !s->day1 && !s->pc && !s->qc && !s->pn && !s->qn && s->ps == 0 && s->qs == 0; }

static uint8_t *put_f64(uint8_t *p, double v)
{
	memcpy(p, &v, 8);
	return p + 8;
}

static double get_f64(const uint8_t **p)
{
	double v;
	memcpy(&v, *p, 8);
	*p += 8;
	return v;
}

static uint32_t get_u32(const uint8_t **p)
{
	uint32_t v = sx_get_be32(*p);
	*p += 4;
	return v;
}

/* Packs the states of d's metrics: the bytes in buf (size >= 28 * nm), or 0
 * when every state is empty (nothing to store). */
static size_t ust_encode(const struct xp_def *d, const struct ust *s, uint8_t *buf)
{
	int any = 0;
	for (int i = 0; i < d->nm; i++)
		any |= !ust_zero(&s[i]);
	if (!any)
		return 0;
	uint8_t *p = buf;
	for (int i = 0; i < d->nm; i++) {
		sx_be32(p, s[i].day1);
		p += 4;
		switch (d->m[i].kind) {
		case XP_CONVERSION: *p++ = s[i].qc > 0; break;
		case XP_COUNT:
			sx_be32(p, s[i].pc), sx_be32(p + 4, s[i].qc);
			p += 8;
			break;
		case XP_SUM:
			p = put_f64(p, s[i].ps);
			p = put_f64(p, s[i].qs);
			break;
		default:
			p = put_f64(p, s[i].ps);
			sx_be32(p, s[i].pn);
			p = put_f64(p + 4, s[i].qs);
			sx_be32(p, s[i].qn);
			p += 4;
		}
	}
	return (size_t)(p - buf);
}

static int ust_decode(const struct xp_def *d, const void *data, size_t len, struct ust *s)
{
	memset(s, 0, sizeof(*s) * (size_t)d->nm);
	if (!len)
		return 0;
	size_t need = 0;
	for (int i = 0; i < d->nm; i++)
		need += ust_size(d->m[i].kind);
	if (len != need)
		return sx_diag_set(SX_ECORRUPT, "exposure state of %zu bytes, expected %zu", len, need);
	const uint8_t *p = data;
	for (int i = 0; i < d->nm; i++) {
		s[i].day1 = get_u32(&p);
		switch (d->m[i].kind) {
		case XP_CONVERSION: s[i].qc = *p++; break;
		case XP_COUNT:
			s[i].pc = get_u32(&p);
			s[i].qc = get_u32(&p);
			break;
		case XP_SUM:
			s[i].ps = get_f64(&p);
			s[i].qs = get_f64(&p);
			break;
		default:
			s[i].ps = get_f64(&p);
			s[i].pn = get_u32(&p);
			s[i].qs = get_f64(&p);
			s[i].qn = get_u32(&p);
		}
	}
	return 0;
}

/* The unit's contribution to the sums, as the recompute path's add_unit. */
static void contrib(int kind, const struct ust *s, double c[AF])
{
	double y, x, inc = 1;
	switch (kind) {
	case XP_CONVERSION:
		y = s->day1 != 0;
		x = s->qc > 0;
		break;
	case XP_COUNT:
		y = s->pc;
		x = s->qc;
		break;
	case XP_SUM:
		y = s->ps;
		x = s->qs;
		break;
	default:
		if (!s->pn) {
			memset(c, 0, sizeof(double) * AF);
			return;
		}
		y = s->ps / s->pn;
		x = s->qn ? s->qs / s->qn : 0;
	}
	c[0] = inc;
	c[1] = s->day1 != 0;
	c[2] = y;
	c[3] = y * y;
	c[4] = x;
	c[5] = x * x;
	c[6] = x * y;
}

/* Where a step's day deltas go. */
struct sink {
	void (*day)(struct sink *k, uint32_t day, size_t at, double delta);
	void (*sum)(struct sink *k, size_t at, double delta);
};

/* Folds one event into the states s[] of a user exposed at t0 in variant v.
 * Returns 1 if a state changed. */
static int apply(const struct xp_def *d, int v, int64_t t0, struct ust *s, const struct sx_event *ev, msgpack_zone *zone,
		 struct sink *k)
{
	int changed = 0;
	for (int i = 0; i < d->nm; i++) {
		const struct xp_metric *m = &d->m[i];
		if (m->elen != ev->name_len || memcmp(m->event, ev->name, m->elen) != 0)
			continue;
		int post = ev->time >= t0 && ev->time < t0 + m->window_ms;
		int pre = ev->time < t0 && ev->time >= t0 - m->window_ms;
		if (!post && !pre)
			continue;
		double val = 1;
		int has = 1;
		if (m->kind == XP_SUM || m->kind == XP_MEAN)
			has = sx__xp_prop_value(ev, m, zone, &val);
		double before[AF], after[AF];
		contrib(m->kind, &s[i], before);
		if (post) {
			uint32_t day = (uint32_t)(ev->time / DAY_MS);
			if (!s[i].day1) {
				k->day(k, day, t_at(d, i, v, 0), 1);
				s[i].day1 = day + 1;
			} else if (day + 1 < s[i].day1) {
				k->day(k, s[i].day1 - 1, t_at(d, i, v, 0), -1);
				k->day(k, day, t_at(d, i, v, 0), 1);
				s[i].day1 = day + 1;
			}
			if (has && m->kind != XP_CONVERSION)
				k->day(k, day, t_at(d, i, v, 1), val);
			if (has && m->kind == XP_MEAN)
				k->day(k, day, t_at(d, i, v, 2), 1);
			s[i].pc++;
			if (has) {
				s[i].ps += val;
				s[i].pn++;
			}
		} else {
			s[i].qc++;
			if (has) {
				s[i].qs += val;
				s[i].qn++;
			}
		}
		contrib(m->kind, &s[i], after);
		for (int f = 0; f < AF; f++)
			if (after[f] != before[f])
				k->sum(k, a_at(d, i, v, f), after[f] - before[f]);
		changed = 1;
	}
	return changed;
}

/* ---- pending deltas, flushed into the store at the end of an operation ---- */

struct pend {
	struct xp *x;
	int64_t day; /* -1: the A record */
	double *d;
};

static struct pend *pend;
static size_t npend, cappend;

static double *pend_get(struct xp *x, int64_t day)
{
	for (size_t i = npend; i-- > 0;)
		if (pend[i].x == x && pend[i].day == day)
			return pend[i].d;
	if (npend == cappend) {
		size_t cap = cappend ? cappend * 2 : 16;
		struct pend *p = realloc(pend, cap * sizeof(*p));
		if (!p)
			return NULL;
		pend = p;
		cappend = cap;
	}
	double *d = calloc(day < 0 ? a_len(x->def) : t_len(x->def), sizeof(double));
	if (!d)
		return NULL;
	pend[npend++] = (struct pend){x, day, d};
	return d;
}

struct psink {
	struct sink k;
	struct xp *x;
	int failed;
};

static void psink_day(struct sink *k, uint32_t day, size_t at, double delta)
{
	struct psink *p = (struct psink *)k;
	double *d = pend_get(p->x, day);
	if (d)
		d[at] += delta;
	else
		p->failed = 1;
}

static void psink_sum(struct sink *k, size_t at, double delta)
{
	struct psink *p = (struct psink *)k;
	double *d = pend_get(p->x, -1);
	if (d)
		d[at] += delta;
	else
		p->failed = 1;
}

static void pend_drop(void)
{
	for (size_t i = 0; i < npend; i++)
		free(pend[i].d);
	npend = 0;
}

static int pend_flush(void)
{
	int rc = 0;
	for (size_t i = 0; i < npend && rc >= 0; i++) {
		struct xp *x = pend[i].x;
		const struct xp_def *d = x->def;
		int t = pend[i].day >= 0;
		uint8_t k[8 + XP_KEY_MAX];
		size_t kl = t ? tkey(k, x, (uint32_t)pend[i].day) : akey(k, x);
		size_t n = t ? t_len(d) : a_len(d);
		double *cur = malloc(n * sizeof(double));
		struct sx_val v;
		if (!cur) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			break;
		}
		rc = sx_store_get(sx__xp_eng->store, SX_T_EXPERIMENTS, k, kl, &v);
		if (rc == SX_ENOENT) {
			memset(cur, 0, n * sizeof(double));
			rc = 0;
		} else if (rc == 0) {
			rc = rec_decode(d, t, x->spec, &v, cur);
		}
		if (rc == 0) {
			for (size_t j = 0; j < n; j++)
				cur[j] += pend[i].d[j];
			rc = rec_put(d, t, x->spec, k, kl, cur);
		}
		free(cur);
	}
	pend_drop();
	return rc;
}

/* ---- exposure records ---- */

static size_t expkey(uint8_t *k, const struct xp *x, const char *user, size_t ulen)
{
	memcpy(k, x->key, x->klen);
	k[x->klen] = 0;
	memcpy(k + x->klen + 1, user, ulen);
	return x->klen + 1 + ulen;
}

struct expo_rec {
	int variant; /* -1: a variant the definition does not have */
	int64_t t0;
	uint32_t version;
	const void *state;
	size_t state_len;
};

static int expo_decode(const struct xp_def *d, const void *data, size_t len, msgpack_zone *zone, struct expo_rec *e)
{
	msgpack_object o;
	if (sx_frame_decode(data, len, zone, &o) < 0 || o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 2 ||
	    o.via.array.ptr[0].type != MSGPACK_OBJECT_STR)
		return sx_diag_set(SX_ECORRUPT, "exposure record is malformed");
	const msgpack_object *a = o.via.array.ptr;
	e->variant = -1;
	for (int i = 0; i < d->nv; i++)
		if (d->v[i].nlen == a[0].via.str.size && memcmp(d->v[i].name, a[0].via.str.ptr, d->v[i].nlen) == 0)
			e->variant = i;
	e->t0 = a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)a[1].via.u64 : 0;
	e->version = o.via.array.size > 2 && a[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (uint32_t)a[2].via.u64 : 0;
	e->state = NULL;
	e->state_len = 0;
	if (o.via.array.size > 3 && a[3].type == MSGPACK_OBJECT_BIN) {
		e->state = a[3].via.bin.ptr;
		e->state_len = a[3].via.bin.size;
	}
	return 0;
}

static int expo_put(const struct xp *x, const char *user, size_t ulen, const char *vname, size_t vlen, int64_t t0,
		    uint32_t version, const uint8_t *state, size_t slen)
{
	uint8_t k[XP_KEY_MAX + 1 + SX_EVENTS_ID_MAX];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, slen ? 4 : 3);
	sx_pack_strn(&pk, vname, vlen);
	msgpack_pack_int64(&pk, t0);
	msgpack_pack_uint32(&pk, version);
	if (slen) {
		msgpack_pack_bin(&pk, slen);
		msgpack_pack_bin_body(&pk, state, slen);
	}
	int rc = sb.data ? sx_store_put(sx__xp_eng->store, SX_T_EXPOSURES, k, expkey(k, x, user, ulen), sb.data, sb.size)
			 : sx_diag_set(SX_ENOMEM, "out of memory");
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int64_t max_window(const struct xp_def *d)
{
	int64_t w = 1;
	for (int i = 0; i < d->nm; i++)
		if (d->m[i].window_ms > w)
			w = d->m[i].window_ms;
	return w;
}

struct scan_ud {
	const struct xp_def *d;
	int v;
	int64_t t0;
	struct ust *s;
	msgpack_zone *zone;
	struct sink *k;
};

static int scan_cb(const struct sx_event *ev, void *ud)
{
	struct scan_ud *u = ud;
	apply(u->d, u->v, u->t0, u->s, ev, u->zone, u->k);
	return 0;
}

/* The states of a user exposed at t0 from the events stored now. */
static int user_states(const struct xp_def *d, const char *user, size_t ulen, int v, int64_t t0, struct ust *s,
		       msgpack_zone *zone, struct sink *k)
{
	uint32_t idx;
	memset(s, 0, sizeof(*s) * (size_t)d->nm);
	if (d->nm == 0)
		return 0;
	int rc = sx_events_user_index(NULL, user, ulen, &idx);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	int64_t w = max_window(d), from = t0 - w < 0 ? 0 : t0 - w;
	struct scan_ud u = {d, v, t0, s, zone, k};
	return sx_events_user_scan(NULL, idx, from, t0 + w, 0, scan_cb, &u);
}

int sx__xp_expose(struct xp *x, const char *user, size_t ulen, int v, int64_t t0)
{
	const struct xp_def *d = x->def;
	struct ust s[XP_METRICS_MAX];
	uint8_t st[28 * XP_METRICS_MAX];
	msgpack_zone zone;
	struct psink k = {{psink_day, psink_sum}, x, 0};
	if (!msgpack_zone_init(&zone, 1024))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = user_states(d, user, ulen, v, t0, s, &zone, &k.k);
	msgpack_zone_destroy(&zone);
	double *day = rc < 0 ? NULL : pend_get(x, t0 / DAY_MS);
	if (rc >= 0 && (!day || k.failed))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc >= 0) {
		day[v] += 1;
		size_t sl = ust_encode(d, s, st);
		rc = expo_put(x, user, ulen, d->v[v].name, d->v[v].nlen, t0, x->version, st, sl);
	}
	if (rc < 0) {
		pend_drop();
		return rc;
	}
	return pend_flush();
}

int sx__xp_unexpose(struct xp *x, const char *user, size_t ulen, int *found)
{
	const struct xp_def *d = x->def;
	uint8_t k[XP_KEY_MAX + 1 + SX_EVENTS_ID_MAX];
	size_t kl = expkey(k, x, user, ulen);
	struct sx_val v;
	struct expo_rec e;
	struct ust s[XP_METRICS_MAX];
	msgpack_zone zone;
	*found = 0;
	int rc = sx_store_get(sx__xp_eng->store, SX_T_EXPOSURES, k, kl, &v);
	if (rc == SX_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	if (!msgpack_zone_init(&zone, 256))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	rc = expo_decode(d, v.data, v.len, &zone, &e);
	if (rc == 0 && e.variant >= 0)
		rc = ust_decode(d, e.state, e.state_len, s);
	if (rc == 0) {
		if (e.variant < 0) {
			double *a = pend_get(x, -1);
			if (a)
				a[0] -= 1;
			else
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
		} else {
			double *day = pend_get(x, e.t0 / DAY_MS), *a = pend_get(x, -1);
			if (!day || !a)
				rc = sx_diag_set(SX_ENOMEM, "out of memory");
			else
				day[e.variant] -= 1;
			for (int i = 0; rc == 0 && i < d->nm; i++) {
				double c[AF];
				contrib(d->m[i].kind, &s[i], c);
				for (int f = 0; f < AF; f++)
					a[a_at(d, i, e.variant, f)] -= c[f];
				if (!s[i].day1)
					continue;
				/* the user's post-window totals leave at their first day: the
				 * per-event days are not kept */
				double *fd = pend_get(x, s[i].day1 - 1);
				if (!fd) {
					rc = sx_diag_set(SX_ENOMEM, "out of memory");
					break;
				}
				int kind = d->m[i].kind;
				fd[t_at(d, i, e.variant, 0)] -= 1;
				fd[t_at(d, i, e.variant, 1)] -= kind == XP_CONVERSION ? 0 : kind == XP_COUNT ? s[i].pc : s[i].ps;
				fd[t_at(d, i, e.variant, 2)] -= kind == XP_MEAN ? s[i].pn : 0;
			}
		}
	}
	msgpack_zone_destroy(&zone);
	if (rc == 0)
		rc = sx_store_del(sx__xp_eng->store, SX_T_EXPOSURES, k, kl);
	if (rc < 0) {
		pend_drop();
		return rc;
	}
	*found = 1;
	return pend_flush();
}

/* ---- the track observer ---- */

static int wants(const struct xp_def *d, const struct sx_event *ev)
{
	for (int i = 0; i < d->nm; i++)
		if (d->m[i].elen == ev->name_len && memcmp(d->m[i].event, ev->name, ev->name_len) == 0)
			return 1;
	return 0;
}

static int observe_one(struct xp *x, const char *user, size_t ulen, const struct sx_event *ev, msgpack_zone *zone)
{
	const struct xp_def *d = x->def;
	uint8_t k[XP_KEY_MAX + 1 + SX_EVENTS_ID_MAX];
	struct sx_val v;
	struct expo_rec e;
	struct ust s[XP_METRICS_MAX];
	uint8_t st[28 * XP_METRICS_MAX];
	int rc = sx_store_get(sx__xp_eng->store, SX_T_EXPOSURES, k, expkey(k, x, user, ulen), &v);
	if (rc == SX_ENOENT)
		return 0;
	msgpack_zone_clear(zone);
	if (rc < 0 || (rc = expo_decode(d, v.data, v.len, zone, &e)) < 0)
		return rc;
	if (e.variant < 0)
		return 0;
	if ((rc = ust_decode(d, e.state, e.state_len, s)) < 0)
		return rc;
	struct psink p = {{psink_day, psink_sum}, x, 0};
	/* the event's props decode into a zone of their own: e's views live in zone */
	msgpack_zone pz;
	if (!msgpack_zone_init(&pz, 512))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int changed = apply(d, e.variant, e.t0, s, ev, &pz, &p.k);
	msgpack_zone_destroy(&pz);
	if (p.failed)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (!changed)
		return 0;
	size_t sl = ust_encode(d, s, st);
	return expo_put(x, user, ulen, d->v[e.variant].name, d->v[e.variant].nlen, e.t0, e.version, st, sl);
}

void sx__xp_observe(struct xp **xs, size_t n, const struct sx_event *ev)
{
	if (!ev) {
		if (npend && pend_flush() < 0)
			sx_log_error("experiments: counters not updated: %s", sx_diag_last());
		return;
	}
	int any = 0;
	for (size_t i = 0; i < n && !any; i++)
		any = xs[i]->started_at && wants(xs[i]->def, ev);
	/* without analytics consent the event was only counted anonymously: no user's event */
	if (!any || !sx_privacy_allowed_index(ev->user, SX_PURPOSE_ANALYTICS))
		return;
	char id[SX_EVENTS_ID_MAX + 1];
	size_t len;
	if (sx_events_user_id(NULL, ev->user, id, sizeof(id), &len) < 0)
		return;
	msgpack_zone zone;
	if (!msgpack_zone_init(&zone, 512))
		return;
	for (size_t i = 0; i < n; i++)
		if (xs[i]->started_at && wants(xs[i]->def, ev) && observe_one(xs[i], id, len, ev, &zone) < 0)
			sx_log_error("experiment %s: counters not updated: %s", xs[i]->key, sx_diag_last());
	msgpack_zone_destroy(&zone);
}

/* ---- rebuild from the exposures and events ---- */

struct rb {
	struct xp *x;
	const struct xp_def *d;
	uint32_t spec;
	double *a;
	double *t;     /* span days × t_len */
	int64_t day_lo, day_hi;
	size_t span;
	msgpack_zone zone, ezone;
	int rc;
	uint64_t n, rewritten;
};

struct rsink {
	struct sink k;
	struct rb *b;
};

static void rsink_day(struct sink *k, uint32_t day, size_t at, double delta)
{
	struct rb *b = ((struct rsink *)k)->b;
	int64_t i = (int64_t)day - b->day_lo;
	if (i < 0 || (size_t)i >= b->span) {
		b->rc = sx_diag_set(SX_EINTERNAL, "rebuild: day out of range");
		return;
	}
	b->t[(size_t)i * t_len(b->d) + at] += delta;
}

static void rsink_sum(struct sink *k, size_t at, double delta) { ((struct rsink *)k)->b->a[at] += delta; }

static int span_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct rb *b = ud;
	struct expo_rec e;
	SX_UNUSED(k);
	msgpack_zone_clear(&b->zone);
	if (expo_decode(b->d, v->data, v->len, &b->zone, &e) < 0)
		return 0;
	int64_t day = e.t0 / DAY_MS;
	if (!b->span || day < b->day_lo)
		b->day_lo = day;
	if (!b->span || day > b->day_hi)
		b->day_hi = day;
	b->span = 1;
	return 0;
}

static int rebuild_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct rb *b = ud;
	const struct xp_def *d = b->d;
	struct expo_rec e;
	struct ust s[XP_METRICS_MAX];
	uint8_t st[28 * XP_METRICS_MAX];
	size_t ulen = k->len - b->x->klen - 1;
	const char *user = (const char *)k->data + b->x->klen + 1;
	msgpack_zone_clear(&b->zone);
	if (expo_decode(d, v->data, v->len, &b->zone, &e) < 0)
		return 0;
	b->n++;
	if (e.variant < 0) {
		b->a[0] += 1;
		return 0;
	}
	b->t[(size_t)(e.t0 / DAY_MS - b->day_lo) * t_len(d) + e.variant] += 1;
	struct rsink rs = {{rsink_day, rsink_sum}, b};
	int rc = user_states(d, user, ulen, e.variant, e.t0, s, &b->ezone, &rs.k);
	if (rc < 0)
		return rc;
	if (b->rc < 0)
		return b->rc;
	size_t sl = ust_encode(d, s, st);
	if (sl == e.state_len && (sl == 0 || memcmp(st, e.state, sl) == 0))
		return 0;
	b->rewritten++;
	return expo_put(b->x, user, ulen, d->v[e.variant].name, d->v[e.variant].nlen, e.t0, e.version, st, sl);
}

struct del_ud {
	uint8_t (*keys)[8 + XP_KEY_MAX];
	size_t n, cap, kl;
};

static int del_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct del_ud *u = ud;
	SX_UNUSED(v);
	if (k->len != u->kl)
		return 0;
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 64;
		void *p = realloc(u->keys, cap * sizeof(*u->keys));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		u->keys = p;
		u->cap = cap;
	}
	memcpy(u->keys[u->n++], k->data, k->len);
	return 0;
}

int sx__xp_rebuild(struct xp *x, const struct xp_def *d)
{
	struct sx_store *st = sx__xp_eng->store;
	struct rb b = {0};
	uint8_t lo[XP_KEY_MAX + 1], hi[XP_KEY_MAX + 1], k[8 + XP_KEY_MAX];
	int rc;
	uint64_t t0 = sx_now_ms();
	b.x = x;
	b.d = d;
	b.spec = sx__xp_spec(d);
	if (!msgpack_zone_init(&b.zone, 1024))
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (!msgpack_zone_init(&b.ezone, 1024)) {
		msgpack_zone_destroy(&b.zone);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	/* the old day records go first */
	struct del_ud du = {0};
	uint8_t tlo[8 + XP_KEY_MAX], thi[8 + XP_KEY_MAX];
	du.kl = tkey(tlo, x, 0);
	tkey(thi, x, 0);
	thi[1 + x->klen] = 1;
	rc = sx_store_scan(st, SX_T_EXPERIMENTS, tlo, du.kl - 4, thi, du.kl - 4, 0, del_cb, &du);
	for (size_t i = 0; rc >= 0 && i < du.n; i++)
		rc = sx_store_del(st, SX_T_EXPERIMENTS, du.keys[i], du.kl);
	free(du.keys);
	memcpy(lo, x->key, x->klen);
	memcpy(hi, x->key, x->klen);
	lo[x->klen] = 0;
	hi[x->klen] = 1;
	if (rc >= 0)
		rc = sx_store_scan(st, SX_T_EXPOSURES, lo, x->klen + 1, hi, x->klen + 1, 0, span_cb, &b);
	/* post-window events fall at most one window after the last exposure */
	if (rc >= 0 && b.span)
		b.span = (size_t)(b.day_hi - b.day_lo) + (size_t)(max_window(d) / DAY_MS) + 2;
	b.a = rc >= 0 ? calloc(a_len(d), sizeof(double)) : NULL;
	b.t = rc >= 0 ? calloc((b.span ? b.span : 1) * t_len(d), sizeof(double)) : NULL;
	if (rc >= 0 && (!b.a || !b.t))
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
	if (rc >= 0)
		rc = sx_store_scan(st, SX_T_EXPOSURES, lo, x->klen + 1, hi, x->klen + 1, 0, rebuild_cb, &b);
	if (rc >= 0)
		rc = rec_put(d, 0, b.spec, k, akey(k, x), b.a);
	for (size_t i = 0; rc >= 0 && i < b.span; i++) {
		const double *row = b.t + i * t_len(d);
		int any = 0;
		for (size_t j = 0; j < t_len(d) && !any; j++)
			any = row[j] != 0;
		if (any)
			rc = rec_put(d, 1, b.spec, k, tkey(k, x, (uint32_t)(b.day_lo + (int64_t)i)), row);
	}
	free(b.a);
	free(b.t);
	msgpack_zone_destroy(&b.zone);
	msgpack_zone_destroy(&b.ezone);
	if (rc >= 0) {
		x->spec = b.spec;
		sx_log_info("experiment %s: counters rebuilt from %llu exposures (%llu states rewritten) in %llu ms", x->key,
			    (unsigned long long)b.n, (unsigned long long)b.rewritten,
			    (unsigned long long)(sx_now_ms() - t0));
	}
	return rc < 0 ? rc : 0;
}

int sx__xp_counters_check(struct xp *x)
{
	uint8_t k[1 + XP_KEY_MAX];
	struct sx_val v;
	x->spec = sx__xp_spec(x->def);
	if (!x->started_at)
		return 0;
	int rc = sx_store_get(sx__xp_eng->store, SX_T_EXPERIMENTS, k, akey(k, x), &v);
	if (rc == 0 && v.len >= HDR && sx_get_be32((const uint8_t *)v.data + 4) == x->spec)
		return 0;
	if (rc < 0 && rc != SX_ENOENT)
		return rc;
	return sx__xp_rebuild(x, x->def);
}

/* ---- results from the counters ---- */

struct tl_ud {
	struct xp *x;
	struct xp_day_rec *days;
	size_t n, cap;
};

static int tl_cb(const struct sx_val *k, const struct sx_val *v, void *ud)
{
	struct tl_ud *u = ud;
	const struct xp_def *d = u->x->def;
	if (k->len != 6 + u->x->klen)
		return 0;
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 64;
		void *p = realloc(u->days, cap * sizeof(*u->days));
		if (!p)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		u->days = p;
		u->cap = cap;
	}
	struct xp_day_rec *dr = &u->days[u->n];
	dr->day = sx_get_be32((const uint8_t *)k->data + k->len - 4);
	dr->v = malloc(t_len(d) * sizeof(double));
	if (!dr->v)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = rec_decode(d, 1, u->x->spec, v, dr->v);
	if (rc < 0) {
		free(dr->v);
		return rc;
	}
	u->n++;
	return 0;
}

int sx__xp_counters_read(struct xp *x, struct xp_day_rec **days, size_t *ndays, double **a)
{
	const struct xp_def *d = x->def;
	uint8_t k[8 + XP_KEY_MAX], lo[8 + XP_KEY_MAX], hi[8 + XP_KEY_MAX];
	struct sx_val v;
	struct tl_ud u = {x, NULL, 0, 0};
	*days = NULL;
	*ndays = 0;
	*a = calloc(a_len(d), sizeof(double));
	if (!*a)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = sx_store_get(sx__xp_eng->store, SX_T_EXPERIMENTS, k, akey(k, x), &v);
	if (rc == 0)
		rc = rec_decode(d, 0, x->spec, &v, *a);
	else if (rc == SX_ENOENT)
		rc = 0;
	size_t kl = tkey(lo, x, 0);
	tkey(hi, x, 0);
	hi[1 + x->klen] = 1;
	if (rc >= 0)
		rc = sx_store_scan(sx__xp_eng->store, SX_T_EXPERIMENTS, lo, kl - 4, hi, kl - 4, 0, tl_cb, &u);
	if (rc < 0) {
		for (size_t i = 0; i < u.n; i++)
			free(u.days[i].v);
		free(u.days);
		free(*a);
		*a = NULL;
		return rc;
	}
	*days = u.days;
	*ndays = u.n;
	return 0;
}

size_t sx__xp_a_at(const struct xp_def *d, int m, int v, int f) { return a_at(d, m, v, f); }
size_t sx__xp_t_at(const struct xp_def *d, int m, int v, int f) { return t_at(d, m, v, f); }

void sx__xp_counters_stop(void)
{
	pend_drop();
	free(pend);
	pend = NULL;
	cappend = 0;
}

int sx__xp_counters_init(struct xp *x)
{
	uint8_t k[1 + XP_KEY_MAX];
	double *a = calloc(a_len(x->def), sizeof(double));
	if (!a)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	x->spec = sx__xp_spec(x->def);
	int rc = rec_put(x->def, 0, x->spec, k, akey(k, x), a);
	free(a);
	return rc;
}
