/* Per-user summaries, windows, labels, holdout hashing and frequency caps:
 * the predict plugin's pure parts (no store, no Lua). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"

const int sx__pred_windows[SX_PRED_WINDOWS] = {7, 30, 90};
const char *const sx__pred_counts[6] = {"events", "sessions", "searches", "trips", "bookings", "spend"};

void sx__pred_conf_default(struct sx_pred_conf *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->search, "search");
	strcpy(c->trip, "create_trip");
	strcpy(c->booking, "book");
	strcpy(c->spend_event, "book");
	strcpy(c->spend_prop, "value");
	c->session_gap_ms = 30 * 60000LL;
}

void sx__pred_sum_init(struct sx_pred_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->first = s->last = s->signup = -1;
}

void sx__pred_sum_free(struct sx_pred_sum *s)
{
	free(s->d);
	s->d = NULL;
	s->nd = s->cap = 0;
}

static int name_is(const char *name, size_t nlen, const char *want)
{
	return want[0] && strlen(want) == nlen && memcmp(name, want, nlen) == 0;
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* The bucket of `day`, inserted if missing; NULL if it is too old to keep or
 * on allocation failure (*rc). */
static struct sx_pred_day *day_get(struct sx_pred_sum *s, int32_t day, int *rc)
{
	*rc = 0;
	if (s->nd && day < s->d[s->nd - 1].day - SX_PRED_KEEP_DAYS)
		return NULL;
	uint32_t i = s->nd;
	while (i > 0 && s->d[i - 1].day > day)
		i--;
	if (i > 0 && s->d[i - 1].day == day)
		return &s->d[i - 1];
	if (s->nd == s->cap) {
		uint32_t nc = s->cap ? s->cap * 2 : 4;
		struct sx_pred_day *nd = realloc(s->d, nc * sizeof(*nd));
		if (!nd) {
			*rc = SX_ENOMEM;
			return NULL;
		}
		s->d = nd, s->cap = nc;
	}
	memmove(s->d + i + 1, s->d + i, (s->nd - i) * sizeof(*s->d));
	memset(&s->d[i], 0, sizeof(s->d[i]));
	s->d[i].day = day;
	s->nd++;
	/* drop what fell out of the kept range behind the newest day */
	int32_t newest = s->d[s->nd - 1].day;
	uint32_t drop = 0;
	while (drop < s->nd && s->d[drop].day < newest - SX_PRED_KEEP_DAYS)
		drop++;
	if (drop) {
		memmove(s->d, s->d + drop, (s->nd - drop) * sizeof(*s->d));
		s->nd -= drop;
		if (i < drop)
			return NULL;
		i -= drop;
	}
	return &s->d[i];
}

static double prop_num(const void *props, size_t plen, const char *key)
{
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	double v = NAN;
	if (!props || !key[0])
		return NAN;
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(props, plen, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *x = sx_arg(&o, key);
		if (x && x->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			v = (double)x->via.u64;
		else if (x && x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			v = (double)x->via.i64;
		else if (x && (x->type == MSGPACK_OBJECT_FLOAT32 || x->type == MSGPACK_OBJECT_FLOAT64))
			v = x->via.f64;
	}
	msgpack_zone_destroy(&z);
	return isfinite(v) ? v : NAN;
}

static uint16_t sat16(uint16_t v) { return v == UINT16_MAX ? v : (uint16_t)(v + 1); }

int sx__pred_sum_add(struct sx_pred_sum *s, const struct sx_pred_conf *c, const char *name,
		     size_t nlen, int64_t time, const void *props, size_t plen)
{
	/* A session starts after a silence of session_gap_ms; an event older than
	 * the newest one seen (late arrival) never starts one. */
	int session = s->last < 0 || time - s->last > c->session_gap_ms;
	int search = name_is(name, nlen, c->search), trip = name_is(name, nlen, c->trip);
	int booking = name_is(name, nlen, c->booking);
	double spend = name_is(name, nlen, c->spend_event) ? prop_num(props, plen, c->spend_prop) : NAN;
	int rc;
	s->events++;
	s->sessions += session;
	s->searches += search, s->trips += trip, s->bookings += booking;
	if (!isnan(spend))
		s->spend += spend;
	if (s->first < 0 || time < s->first)
		s->first = time;
	if (time > s->last)
		s->last = time;
	struct sx_pred_day *d = day_get(s, (int32_t)floor_div(time, SX_PRED_DAY_MS), &rc);
	if (!d)
		return rc;
	d->events = sat16(d->events);
	if (session)
		d->sessions = sat16(d->sessions);
	if (search)
		d->searches = sat16(d->searches);
	if (trip)
		d->trips = sat16(d->trips);
	if (booking)
		d->bookings = sat16(d->bookings);
	if (!isnan(spend))
		d->spend += (float)spend;
	return 0;
}

void sx__pred_sum_view(const struct sx_pred_sum *s, int64_t at, struct sx_pred_view *v)
{
	memset(v, 0, sizeof(*v));
	int64_t since = s->signup >= 0 ? s->signup : s->first;
	v->days_since_signup = since >= 0 ? (double)(at - since) / SX_PRED_DAY_MS : NAN;
	v->days_since_first = s->first >= 0 ? (double)(at - s->first) / SX_PRED_DAY_MS : NAN;
	v->days_since_last = s->last >= 0 ? (double)(at - s->last) / SX_PRED_DAY_MS : NAN;
	v->total[0] = (double)s->events, v->total[1] = (double)s->sessions;
	v->total[2] = (double)s->searches, v->total[3] = (double)s->trips;
	v->total[4] = (double)s->bookings, v->total[5] = s->spend;
	int32_t aday = (int32_t)floor_div(at, SX_PRED_DAY_MS);
	for (uint32_t i = s->nd; i-- > 0;) {
		const struct sx_pred_day *d = &s->d[i];
		if (d->day > aday)
			continue;
		for (int w = 0; w < SX_PRED_WINDOWS; w++) {
			if (d->day <= aday - sx__pred_windows[w])
				continue;
			v->win[w][0] += d->events, v->win[w][1] += d->sessions;
			v->win[w][2] += d->searches, v->win[w][3] += d->trips;
			v->win[w][4] += d->bookings, v->win[w][5] += d->spend;
		}
		if (d->day <= aday - sx__pred_windows[SX_PRED_WINDOWS - 1])
			break;
	}
}

int sx__pred_label_cb(const struct sx_event *ev, void *ud)
{
	struct sx_pred_label *l = ud;
	if (strcmp(l->t->event, "*") == 0 || name_is(ev->name, ev->name_len, l->t->event)) {
		l->hit = 1;
		return 1;
	}
	return 0;
}

int sx__pred_holdout(const char *rule, const char *user, size_t ulen, double share)
{
	if (!(share > 0))
		return 0;
	uint8_t buf[2 * SX_EVENTS_ID_MAX + 2];
	size_t rl = strlen(rule);
	if (rl > SX_EVENTS_ID_MAX)
		rl = SX_EVENTS_ID_MAX;
	if (ulen > SX_EVENTS_ID_MAX)
		ulen = SX_EVENTS_ID_MAX;
	memcpy(buf, rule, rl);
	buf[rl] = 0;
	memcpy(buf + rl + 1, user, ulen);
	return (double)(XXH64(buf, rl + 1 + ulen, 0x5e7a47) % 1000000) < share * 1000000;
}

int sx__pred_cap_ok(const int64_t *times, size_t n, int64_t now, int max, int64_t per_ms)
{
	int recent = 0;
	for (size_t i = 0; i < n; i++)
		recent += times[i] > now - per_ms && times[i] <= now;
	return recent < max;
}

const char *sx__pred_band(double p, double medium, double high)
{
	return p >= high ? "high" : p >= medium ? "medium" : "low";
}
