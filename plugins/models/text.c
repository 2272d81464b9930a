/* Text classifier training: rows from the request, a CSV file on the server
 * or events with a text property; hashed n-grams, optional TF-IDF, naive
 * Bayes or softmax logistic regression (core/math/text.h); validated on a
 * holdout with accuracy, macro-F1 and the confusion matrix. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jobs.h"
#include "core/math/metrics.h"
#include "core/math/text.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/events/events.h"
#include "plugins/models/internal.h"
#include "store/store.h"

#define TEXT_MAX 65536             /* bytes of one document */
#define ROWS_MAX 2000000
#define CSV_MAX_BYTES (512u << 20) /* a CSV file on the server */
#define DIM_CLASSES_MAX ((size_t)1 << 23)

/* ---- rows ---- */

static int row_push(struct sx_train *t, const char *text, size_t tlen, const char *label, size_t llen)
{
	if (t->nrows + t->ntest == t->rows_cap) {
		size_t cap = t->rows_cap ? t->rows_cap * 2 : 1024;
		char **a = realloc(t->texts, cap * sizeof(char *));
		if (a)
			t->texts = a;
		char **b = a ? realloc(t->labels, cap * sizeof(char *)) : NULL;
		if (!a || !b)
			return sx_diag_set(SX_ENOMEM, "out of memory");
		t->labels = b, t->rows_cap = cap;
	}
	size_t i = t->nrows + t->ntest;
	t->texts[i] = strndup(text, tlen);
	t->labels[i] = t->texts[i] ? strndup(label, llen) : NULL;
	if (!t->texts[i] || !t->labels[i]) {
		free(t->texts[i]);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	return 0;
}

static int label_ok(const char *s, size_t n)
{
	return n > 0 && n <= SX_TEXT_LABEL_MAX && !memchr(s, 0, n) && sx_utf8_valid(s, n);
}

/* A label given as a string, an integer or a boolean, as text. */
static int label_of(const msgpack_object *o, char *buf, const char **s, size_t *n)
{
	if (!o)
		return -1;
	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		*s = o->via.str.ptr, *n = o->via.str.size;
		return label_ok(*s, *n) ? 0 : -1;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		*n = (size_t)snprintf(buf, 32, "%llu", (unsigned long long)o->via.u64), *s = buf;
		return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		*n = (size_t)snprintf(buf, 32, "%lld", (long long)o->via.i64), *s = buf;
		return 0;
	case MSGPACK_OBJECT_BOOLEAN:
		*s = o->via.boolean ? "true" : "false", *n = strlen(*s);
		return 0;
	default: return -1;
	}
}

static int rows_copy(struct sx_train *t, const msgpack_object *a, const char *what, int test)
{
	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0 || a->via.array.size > ROWS_MAX)
		return sx_diag_set(SX_EINVAL, "data: '%s' must be an array of 1 to %d rows {text, label}", what, ROWS_MAX);
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *r = &a->via.array.ptr[i], *tx = sx_arg(r, "text");
		char buf[32];
		const char *ls;
		size_t ln;
		if (r->type != MSGPACK_OBJECT_MAP || r->via.map.size != 2 || !tx || tx->type != MSGPACK_OBJECT_STR ||
		    tx->via.str.size > TEXT_MAX || label_of(sx_arg(r, "label"), buf, &ls, &ln) < 0)
			return sx_diag_set(SX_EINVAL,
					   "data: %s[%u] must be {text = string (up to %d bytes), label = string (1 to %d bytes), integer or boolean}",
					   what, i, TEXT_MAX, SX_TEXT_LABEL_MAX);
		int rc = row_push(t, tx->via.str.ptr, tx->via.str.size, ls, ln);
		if (rc < 0)
			return rc;
		if (test)
			t->ntest++;
		else
			t->nrows++;
	}
	return 0;
}

static int cstr_arg(const msgpack_object *o, const char *key, char *buf, size_t size, const char *dflt)
{
	const msgpack_object *v = sx_arg(o, key);
	if (!v || v->type == MSGPACK_OBJECT_NIL) {
		snprintf(buf, size, "%s", dflt);
		return 0;
	}
	if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 || v->via.str.size >= size ||
	    memchr(v->via.str.ptr, 0, v->via.str.size))
		return sx_diag_set(SX_EINVAL, "data: '%s' must be a string of 1 to %zu bytes", key, size - 1);
	memcpy(buf, v->via.str.ptr, v->via.str.size);
	buf[v->via.str.size] = 0;
	return 0;
}

int sx__text_prepare(struct sx_train *t, const msgpack_object *p, const msgpack_object *data)
{
	static const char *const pk_known[] = {"algorithm", "bits", "word_ngrams", "char_ngrams", "tfidf", "alpha",
		"epochs", "learning_rate", "l2", "batch", "seed", "holdout", "refit", NULL};
	static const char *const dk_known[] = {"rows", "test", "csv", "text_column", "label_column", "events",
		"text_property", "label_property", "from", "to", NULL};
	int64_t bits = 18, wng = 2, epochs = 10, batch = 16, seed = 42, cmin = -1, cmax = -1;
	double alpha = 0.1, lr = 0.5, l2 = 1e-4, holdout = 0.2;
	int refit = 1, tfidf = -1, rc;
	if ((rc = sx__train_check_only(p, "params", pk_known)) < 0)
		return rc;
	t->algorithm = SX_TEXT_LOGREG;
	const msgpack_object *alg = sx_arg(p, "algorithm");
	if (alg && alg->type != MSGPACK_OBJECT_NIL) {
		if (sx_obj_streq(alg, "nb"))
			t->algorithm = SX_TEXT_NB;
		else if (!sx_obj_streq(alg, "logreg"))
			return sx_diag_set(SX_EINVAL, "params: 'algorithm' must be \"logreg\" or \"nb\"");
	}
	if ((rc = sx__train_opt_int(p, "bits", 10, 22, &bits)) < 0 || (rc = sx__train_opt_int(p, "word_ngrams", 0, 5, &wng)) < 0 ||
	    (rc = sx__train_opt_int(p, "epochs", 1, 1000, &epochs)) < 0 ||
	    (rc = sx__train_opt_int(p, "batch", 1, 100000, &batch)) < 0 ||
	    (rc = sx__train_opt_int(p, "seed", 0, INT64_MAX, &seed)) < 0 ||
	    (rc = sx__train_opt_num(p, "alpha", 1e-9, 1e6, &alpha)) < 0 ||
	    (rc = sx__train_opt_num(p, "learning_rate", 1e-9, 1e3, &lr)) < 0 ||
	    (rc = sx__train_opt_num(p, "l2", 0, 1e3, &l2)) < 0 || (rc = sx__train_opt_num(p, "holdout", 0, 0.9, &holdout)) < 0)
		return rc;
	if ((rc = sx_arg_bool(p, "refit", 0, &refit)) < 0)
		return sx__diag_prefix(rc, "params");
	const msgpack_object *tf = sx_arg(p, "tfidf");
	if (tf && tf->type != MSGPACK_OBJECT_NIL) {
		if (tf->type != MSGPACK_OBJECT_BOOLEAN)
			return sx_diag_set(SX_EINVAL, "params: 'tfidf' must be a boolean");
		tfidf = tf->via.boolean;
	}
	const msgpack_object *cn = sx_arg(p, "char_ngrams");
	if (cn && cn->type != MSGPACK_OBJECT_NIL) {
		if (cn->type != MSGPACK_OBJECT_ARRAY || cn->via.array.size != 2 ||
		    cn->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    cn->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return sx_diag_set(SX_EINVAL, "params: 'char_ngrams' must be [min, max] (0 <= min <= max <= 8; [0, 0]: none)");
		cmin = (int64_t)cn->via.array.ptr[0].via.u64, cmax = (int64_t)cn->via.array.ptr[1].via.u64;
		if (cmax > 8 || cmin > cmax || (cmin == 0) != (cmax == 0))
			return sx_diag_set(SX_EINVAL, "params: 'char_ngrams' must be [min, max] (1 <= min <= max <= 8, or [0, 0])");
	}
	int nb = t->algorithm == SX_TEXT_NB;
	if (cmin < 0)
		cmin = nb ? 0 : 2, cmax = nb ? 0 : 4;
	if (tfidf < 0)
		tfidf = !nb;
	if (!wng && !cmin)
		return sx_diag_set(SX_EINVAL, "params: no features: 'word_ngrams' and 'char_ngrams' are both off");
	sx_text_feat_opts_default(&t->fo);
	t->fo.bits = (int)bits, t->fo.word_ngrams = (int)wng, t->fo.char_min = (int)cmin, t->fo.char_max = (int)cmax;
	t->fo.alternate_sign = !nb; /* naive Bayes needs counts >= 0 */
	t->fo.seed = 0;
	t->tfidf = tfidf;
	t->nb_alpha = alpha;
	sx_text_lr_opts_default(&t->tlo);
	t->tlo.lr = lr, t->tlo.l2 = l2, t->tlo.epochs = (int)epochs, t->tlo.batch = (size_t)batch, t->tlo.seed = (uint64_t)seed;
	t->holdout = holdout, t->refit = refit;

	if (!data || data->type != MSGPACK_OBJECT_MAP)
		return sx_diag_set(SX_EINVAL, "argument 'data' must be a map: {rows}, {csv} or {events}");
	if ((rc = sx__train_check_only(data, "data", dk_known)) < 0)
		return rc;
	const msgpack_object *rows = sx_arg(data, "rows"), *csv = sx_arg(data, "csv"), *evs = sx_arg(data, "events");
	int nsrc = (rows && rows->type != MSGPACK_OBJECT_NIL) + (csv && csv->type != MSGPACK_OBJECT_NIL) +
		   (evs && evs->type != MSGPACK_OBJECT_NIL);
	if (nsrc != 1)
		return sx_diag_set(SX_EINVAL, "data: give exactly one of 'rows', 'csv' and 'events'");
	t->from = t->to = -1;
	if (rows && rows->type != MSGPACK_OBJECT_NIL) {
		if ((rc = rows_copy(t, rows, "rows", 0)) < 0)
			return rc;
		const msgpack_object *test = sx_arg(data, "test");
		if (test && test->type != MSGPACK_OBJECT_NIL && (rc = rows_copy(t, test, "test", 1)) < 0)
			return rc;
	} else if (csv && csv->type != MSGPACK_OBJECT_NIL) {
		if (csv->type != MSGPACK_OBJECT_STR || csv->via.str.size == 0 || csv->via.str.size >= 4096 ||
		    memchr(csv->via.str.ptr, 0, csv->via.str.size))
			return sx_diag_set(SX_EINVAL, "data: 'csv' must be a path on the server");
		if (!(t->csv = strndup(csv->via.str.ptr, csv->via.str.size)))
			return sx_diag_set(SX_ENOMEM, "out of memory");
		if ((rc = cstr_arg(data, "text_column", t->text_col, sizeof(t->text_col), "text")) < 0 ||
		    (rc = cstr_arg(data, "label_column", t->label_col, sizeof(t->label_col), "label")) < 0)
			return rc;
	} else {
		if (evs->type != MSGPACK_OBJECT_STR || evs->via.str.size == 0 || evs->via.str.size > SX_EVENTS_ID_MAX)
			return sx_diag_set(SX_EINVAL, "data: 'events' must be an event name");
		if ((rc = cstr_arg(data, "events", t->ev_name, sizeof(t->ev_name), "")) < 0 ||
		    (rc = cstr_arg(data, "text_property", t->text_col, sizeof(t->text_col), "text")) < 0 ||
		    (rc = cstr_arg(data, "label_property", t->label_col, sizeof(t->label_col), "label")) < 0 ||
		    (rc = sx__train_window(data, &t->from, &t->to)) < 0)
			return rc;
		t->from_events = 1;
	}
	if (!t->from_events && (sx_arg(data, "from") || sx_arg(data, "to")))
		return sx_diag_set(SX_EINVAL, "data: 'from' and 'to' go with 'events'");

	msgpack_packer pk;
	msgpack_packer_init(&pk, &t->params, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 13);
	sx_pack_kv_str(&pk, "algorithm", nb ? "nb" : "logreg");
	sx_pack_kv_int(&pk, "bits", bits);
	sx_pack_kv_int(&pk, "word_ngrams", wng);
	sx_pack_key(&pk, "char_ngrams");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int64(&pk, cmin);
	msgpack_pack_int64(&pk, cmax);
	sx_pack_kv_bool(&pk, "tfidf", tfidf);
	sx_pack_kv_double(&pk, "alpha", alpha);
	sx_pack_kv_int(&pk, "epochs", epochs);
	sx_pack_kv_double(&pk, "learning_rate", lr);
	sx_pack_kv_double(&pk, "l2", l2);
	sx_pack_kv_int(&pk, "batch", batch);
	sx_pack_kv_int(&pk, "seed", seed);
	sx_pack_kv_double(&pk, "holdout", holdout);
	sx_pack_kv_bool(&pk, "refit", refit);
	return 0;
}

void sx__text_free(struct sx_train *t)
{
	for (size_t i = 0; i < t->nrows + t->ntest; i++)
		free(t->texts[i]), free(t->labels[i]);
	free(t->texts), free(t->labels), free(t->csv);
	t->texts = t->labels = NULL;
	t->csv = NULL;
	t->nrows = t->ntest = 0;
}

/* ---- sources read on the pool ---- */

/* One RFC 4180 field at *p; *eol says whether the record ended. The field
 * is unquoted into out (which has room for end - *p bytes). */
static size_t csv_field(const char **p, const char *end, char *out, int *eol)
{
	const char *s = *p;
	size_t n = 0;
	int quoted = s < end && *s == '"';
	if (quoted)
		s++;
	for (; s < end; s++) {
		char c = *s;
		if (quoted) {
			if (c == '"') {
				if (s + 1 < end && s[1] == '"') {
					s++;
				} else {
					quoted = 0;
					continue;
				}
			}
		} else if (c == ',' || c == '\n' || c == '\r') {
			break;
		}
		out[n++] = c;
	}
	*eol = s >= end || *s != ',';
	if (s < end && *s == '\r')
		s++;
	if (s < end)
		s++;
	*p = s;
	return n;
}

static int read_csv(struct sx_train *t)
{
	FILE *f = fopen(t->csv, "rb");
	if (!f)
		return sx_diag_set(errno == ENOENT ? SX_ENOENT : SX_EIO, "data: cannot open '%s': %s", t->csv, strerror(errno));
	char *buf = NULL, *fld = NULL;
	int rc = 0;
	if (fseek(f, 0, SEEK_END) != 0) {
		fclose(f);
		return sx_diag_set(SX_EIO, "data: cannot read '%s'", t->csv);
	}
	long sz = ftell(f);
	if (sz < 0 || (unsigned long)sz > CSV_MAX_BYTES) {
		fclose(f);
		return sx_diag_set(SX_EINVAL, "data: '%s' is larger than %u MiB", t->csv, CSV_MAX_BYTES >> 20);
	}
	rewind(f);
	buf = malloc((size_t)sz + 1), fld = malloc((size_t)sz + 1);
	if (!buf || !fld || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
		fclose(f);
		free(buf), free(fld);
		return sx_diag_set(buf && fld ? SX_EIO : SX_ENOMEM, "data: cannot read '%s'", t->csv);
	}
	fclose(f);
	const char *p = buf, *end = buf + sz;
	if (sz >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	int tcol = -1, lcol = -1, line = 0;
	while (p < end && rc == 0) {
		int eol = 0, col = 0;
		const char *text = NULL, *label = NULL;
		size_t tl = 0, ll = 0;
		char *o = fld;
		line++;
		while (!eol) {
			size_t n = csv_field(&p, end, o, &eol);
			if (line == 1) {
				if (n == strlen(t->text_col) && memcmp(o, t->text_col, n) == 0)
					tcol = col;
				if (n == strlen(t->label_col) && memcmp(o, t->label_col, n) == 0)
					lcol = col;
			} else if (col == tcol) {
				text = o, tl = n;
			} else if (col == lcol) {
				label = o, ll = n;
			}
			o += n, col++;
		}
		if (line == 1) {
			if (tcol < 0 || lcol < 0)
				rc = sx_diag_set(SX_EINVAL, "data: '%s' has no column '%s' or '%s' in its header", t->csv,
						 tcol < 0 ? t->text_col : "", lcol < 0 ? t->label_col : "");
			continue;
		}
		if (col == 1 && (o == fld))
			continue; /* a blank line */
		if (!text || !label)
			rc = sx_diag_set(SX_EINVAL, "data: '%s' line %d lacks the text or the label", t->csv, line);
		else if (tl > TEXT_MAX || !label_ok(label, ll))
			rc = sx_diag_set(SX_EINVAL, "data: '%s' line %d: text over %d bytes or a bad label", t->csv, line, TEXT_MAX);
		else if (t->nrows >= ROWS_MAX)
			rc = sx_diag_set(SX_EINVAL, "data: '%s' has more than %d rows", t->csv, ROWS_MAX);
		else if ((rc = row_push(t, text, tl, label, ll)) == 0)
			t->nrows++;
		if ((line & 4095) == 0 && sx_job_cancelled(t->job))
			rc = sx_diag_set(SX_ECANCELED, "cancelled");
	}
	free(buf), free(fld);
	return rc;
}

static const msgpack_object *prop(const msgpack_object *map, const char *key)
{
	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	return sx_arg(map, key);
}

struct ev_collect {
	struct sx_train *t;
	size_t seen;
	msgpack_zone z;
};

static int ev_cb(const struct sx_event *ev, void *ud)
{
	struct ev_collect *c = ud;
	struct sx_train *t = c->t;
	if ((++c->seen & 4095) == 0 && sx_job_cancelled(t->job))
		return sx_diag_set(SX_ECANCELED, "cancelled");
	if (ev->name_len != strlen(t->ev_name) || memcmp(ev->name, t->ev_name, ev->name_len) != 0 || !ev->props)
		return 0;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_clear(&c->z);
	if (msgpack_unpack(ev->props, ev->props_len, &off, &c->z, &o) != MSGPACK_UNPACK_SUCCESS)
		return 0;
	const msgpack_object *tx = prop(&o, t->text_col);
	char buf[32];
	const char *ls;
	size_t ln;
	if (!tx || tx->type != MSGPACK_OBJECT_STR || tx->via.str.size > TEXT_MAX ||
	    label_of(prop(&o, t->label_col), buf, &ls, &ln) < 0)
		return 0;
	if (t->nrows >= ROWS_MAX)
		return 1;
	int rc = row_push(t, tx->via.str.ptr, tx->via.str.size, ls, ln);
	if (rc == 0)
		t->nrows++;
	return rc;
}

static int read_events(struct sx_train *t)
{
	MDB_txn *txn;
	struct ev_collect c = {.t = t};
	int rc = sx_store_rtxn_begin(sx__models_eng->store, &txn);
	if (rc < 0)
		return rc;
	msgpack_zone_init(&c.z, 4096);
	rc = sx_events_range_scan(txn, t->from < 0 ? 0 : t->from, t->to < 0 ? SX_EVENTS_TIME_MAX + 1 : t->to, ev_cb, &c);
	msgpack_zone_destroy(&c.z);
	sx_store_rtxn_end(sx__models_eng->store, txn);
	if (rc == 0 && t->nrows == 0)
		rc = sx_diag_set(SX_ESTATE, "no event '%s' in the window has a string '%s' and a label '%s'", t->ev_name,
				 t->text_col, t->label_col);
	return rc;
}

/* ---- fitting ---- */

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int sparse_copy(const struct sx_text_sparse *a, struct sx_text_sparse *b)
{
	b->n = a->n;
	b->idx = malloc((a->n ? a->n : 1) * sizeof(uint32_t));
	b->val = malloc((a->n ? a->n : 1) * sizeof(double));
	if (!b->idx || !b->val) {
		sx_text_sparse_close(b);
		return sx_diag_set(SX_ENOMEM, "out of memory");
	}
	memcpy(b->idx, a->idx, a->n * sizeof(uint32_t));
	memcpy(b->val, a->val, a->n * sizeof(double));
	return 0;
}

static void model_clear(struct sx_model *m)
{
	sx_text_tfidf_free(m->tfidf), m->tfidf = NULL;
	sx_text_nb_free(m->nb), m->nb = NULL;
	sx_text_lr_free(m->tlr), m->tlr = NULL;
}

/* Fits m on raw rows [0, n) (vectors copied, as TF-IDF works in place). */
static int fit(struct sx_train *t, struct sx_model *m, const struct sx_text_sparse *raw, const int32_t *y, size_t n)
{
	size_t dim = (size_t)1 << m->fo.bits;
	struct sx_text_sparse *X = calloc(n, sizeof(*X));
	int rc = 0;
	model_clear(m);
	if (!X)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = sparse_copy(&raw[i], &X[i]);
	if (rc == 0 && t->tfidf) {
		if (!(m->tfidf = sx_text_tfidf_new(dim)))
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
		else
			rc = sx_text_tfidf_fit(m->tfidf, X, n);
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = sx_text_tfidf_transform(m->tfidf, &X[i]);
	}
	if (rc == 0 && m->algorithm == SX_TEXT_NB) {
		if (!(m->nb = sx_text_nb_new(m->n_classes, dim)))
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
		else
			rc = sx_text_nb_fit(m->nb, X, y, n, t->nb_alpha);
	} else if (rc == 0) {
		if (!(m->tlr = sx_text_lr_new(m->n_classes, dim)))
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
		else
			rc = sx_text_lr_fit(m->tlr, X, y, n, &t->tlo);
	}
	for (size_t i = 0; i < n; i++)
		sx_text_sparse_close(&X[i]);
	free(X);
	if (rc == 0 && sx_job_cancelled(t->job))
		rc = sx_diag_set(SX_ECANCELED, "cancelled");
	return rc;
}

/* Predicted classes (and the top probability) of raw rows. */
static int predict_rows(const struct sx_model *m, const struct sx_text_sparse *raw, size_t n, int32_t *pred,
			double *top, double *ll, const int32_t *truth)
{
	double *p = malloc((size_t)m->n_classes * sizeof(double));
	int rc = 0;
	if (!p)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	if (ll)
		*ll = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct sx_text_sparse v;
		if ((rc = sparse_copy(&raw[i], &v)) < 0)
			break;
		if (m->tfidf)
			rc = sx_text_tfidf_transform(m->tfidf, &v);
		if (rc == 0)
			rc = m->algorithm == SX_TEXT_NB ? sx_text_nb_predict_proba(m->nb, &v, p)
							: sx_text_lr_predict_proba(m->tlr, &v, p);
		sx_text_sparse_close(&v);
		if (rc < 0)
			break;
		pred[i] = sx_text_argmax(p, m->n_classes);
		if (top)
			top[i] = p[pred[i]];
		if (ll)
			*ll -= log(p[truth[i]] > 1e-15 ? p[truth[i]] : 1e-15);
	}
	free(p);
	if (ll && n)
		*ll /= (double)n;
	return rc;
}

static void pack_cm(msgpack_packer *pk, const uint64_t *cm, size_t k)
{
	msgpack_pack_array(pk, k);
	for (size_t a = 0; a < k; a++) {
		msgpack_pack_array(pk, k);
		for (size_t b = 0; b < k; b++)
			msgpack_pack_uint64(pk, cm[a * k + b]);
	}
}

int sx__text_run(struct sx_train *t)
{
	struct sx_model *m = sx__model_new(SX_MODEL_TEXT, t->name);
	struct sx_text_sparse *raw = NULL;
	int32_t *y = NULL, *pred = NULL;
	double *top = NULL;
	uint64_t *cm = NULL;
	size_t n = 0;
	int rc = 0;
	if (!m)
		return SX_ENOMEM;
	sx_job_progress(t->job, 0.0, "reading rows");
	if (t->csv)
		rc = read_csv(t);
	else if (t->from_events)
		rc = read_events(t);
	if (rc < 0)
		goto out;
	n = t->nrows + t->ntest;
	if (n < 2) {
		rc = sx_diag_set(SX_EINVAL, "data: fewer than 2 rows");
		goto out;
	}
	/* Classes: the distinct labels, sorted. */
	char **sorted = malloc((n ? n : 1) * sizeof(char *));
	if (!sorted) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	memcpy(sorted, t->labels, n * sizeof(char *));
	qsort(sorted, n, sizeof(char *), str_cmp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
			sorted[k++] = sorted[i];
	if (k < 2 || k > SX_TEXT_CLASSES_MAX || k * ((size_t)1 << t->fo.bits) > DIM_CLASSES_MAX) {
		free(sorted);
		rc = sx_diag_set(SX_EINVAL, "data: %zu distinct labels; need 2 to %d, and classes x 2^bits <= 2^23", k,
				 SX_TEXT_CLASSES_MAX);
		goto out;
	}
	m->classes = calloc(k, sizeof(char *));
	for (size_t c = 0; m->classes && c < k; c++)
		m->classes[c] = strdup(sorted[c]);
	m->n_classes = (int32_t)k;
	y = malloc(n * sizeof(int32_t)), pred = malloc(n * sizeof(int32_t)), top = malloc(n * sizeof(double));
	raw = calloc(n, sizeof(*raw));
	if (!m->classes || !y || !pred || !top || !raw) {
		free(sorted);
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char **hit = bsearch(&t->labels[i], sorted, k, sizeof(char *), str_cmp);
		y[i] = (int32_t)(hit - sorted);
	}
	free(sorted);
	for (size_t c = 0; c < k; c++)
		if (!m->classes[c]) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
	m->algorithm = t->algorithm;
	m->fo = t->fo;
	sx_job_progress(t->job, 0.1, "featurizing");
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = sx_text_features(&t->fo, t->texts[i], strlen(t->texts[i]), &raw[i]);
		if (rc == 0 && (i & 1023) == 1023 && sx_job_cancelled(t->job))
			rc = sx_diag_set(SX_ECANCELED, "cancelled");
	}
	if (rc < 0)
		goto out;
	/* The holdout: the test rows given, else the last `holdout` share. */
	size_t ntr = t->ntest ? t->nrows : n - (size_t)floor((double)n * t->holdout), nte = n - ntr;
	if (ntr < 2) {
		rc = sx_diag_set(SX_EINVAL, "data: too few training rows after the holdout");
		goto out;
	}
	sx_job_progress(t->job, 0.2, "fitting");
	if ((rc = fit(t, m, raw, y, ntr)) < 0)
		goto out;
	double acc = NAN, f1 = NAN, ll = NAN, bacc = NAN, bf1 = NAN;
	int32_t major = 0;
	if (!(cm = calloc(k * k, sizeof(uint64_t)))) {
		rc = sx_diag_set(SX_ENOMEM, "out of memory");
		goto out;
	}
	{
		size_t *cnt = calloc(k, sizeof(size_t));
		if (!cnt) {
			rc = sx_diag_set(SX_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < ntr; i++)
			cnt[y[i]]++;
		for (size_t c = 1; c < k; c++)
			if (cnt[c] > cnt[major])
				major = (int32_t)c;
		free(cnt);
	}
	if (nte) {
		sx_job_progress(t->job, 0.55, "evaluating");
		if ((rc = predict_rows(m, raw + ntr, nte, pred, NULL, &ll, y + ntr)) < 0)
			goto out;
		acc = sx_metrics_accuracy(y + ntr, pred, nte);
		sx_metrics_macro_f1(y + ntr, pred, nte, (int32_t)k, &f1);
		sx_metrics_confusion(y + ntr, pred, nte, (int32_t)k, cm);
		for (size_t i = 0; i < nte; i++)
			pred[i] = major;
		bacc = sx_metrics_accuracy(y + ntr, pred, nte);
		sx_metrics_macro_f1(y + ntr, pred, nte, (int32_t)k, &bf1);
		/* The model it may replace, scored on the same rows by label. */
		if (t->prod && t->prod->type == SX_MODEL_TEXT) {
			double *p = malloc((size_t)t->prod->n_classes * sizeof(double));
			size_t right = 0, done = 0;
			for (size_t i = 0; p && i < nte; i++) {
				const char *s = t->texts[ntr + i];
				if (sx__text_predict(t->prod, s, strlen(s), p) < 0)
					break;
				right += strcmp(t->prod->classes[sx_text_argmax(p, t->prod->n_classes)], t->labels[ntr + i]) == 0;
				done++;
			}
			free(p);
			if (done == nte) {
				t->cmp_cand = acc;
				t->cmp_prod = (double)right / (double)nte;
			}
		}
	}
	size_t nfit = ntr;
	if (nte && t->refit) {
		sx_job_progress(t->job, 0.6, "refitting on all rows");
		if ((rc = fit(t, m, raw, y, n)) < 0)
			goto out;
		nfit = n;
	}
	sx_job_progress(t->job, 0.9, "reference scores");
	if ((rc = predict_rows(m, raw, nfit, pred, top, NULL, NULL)) < 0)
		goto out;
	sx__models_ref_fit(top, nfit, m->ref_edges, m->ref_expected);
	m->has_ref = 1;

	msgpack_packer pk;
	msgpack_packer_init(&pk, &m->metrics, msgpack_sbuffer_write);
	int has_cmp = !isnan(t->cmp_prod);
	msgpack_pack_map(&pk, 9 + has_cmp);
	sx_pack_kv_uint(&pk, "n_train", ntr);
	sx_pack_kv_uint(&pk, "n_test", nte);
	sx_pack_key(&pk, "classes");
	msgpack_pack_array(&pk, k);
	for (size_t c = 0; c < k; c++)
		sx_pack_str(&pk, m->classes[c]);
	sx_pack_key(&pk, "accuracy");
	sx__pack_num(&pk, acc);
	sx_pack_key(&pk, "macro_f1");
	sx__pack_num(&pk, f1);
	sx_pack_key(&pk, "log_loss");
	sx__pack_num(&pk, ll);
	sx_pack_key(&pk, "confusion");
	if (nte)
		pack_cm(&pk, cm, k);
	else
		msgpack_pack_nil(&pk);
	sx_pack_key(&pk, "per_class");
	msgpack_pack_array(&pk, nte ? k : 0);
	for (size_t c = 0; nte && c < k; c++) {
		uint64_t tp = cm[c * k + c], col = 0, row = 0;
		for (size_t o = 0; o < k; o++)
			col += cm[o * k + c], row += cm[c * k + o];
		double pr = col ? (double)tp / (double)col : 0, rcl = row ? (double)tp / (double)row : 0;
		msgpack_pack_map(&pk, 5);
		sx_pack_kv_str(&pk, "label", m->classes[c]);
		sx_pack_kv_double(&pk, "precision", pr);
		sx_pack_kv_double(&pk, "recall", rcl);
		sx_pack_kv_double(&pk, "f1", pr + rcl > 0 ? 2 * pr * rcl / (pr + rcl) : 0);
		sx_pack_kv_uint(&pk, "support", row);
	}
	sx_pack_key(&pk, "baseline");
	msgpack_pack_map(&pk, 4);
	sx_pack_kv_str(&pk, "name", "majority");
	sx_pack_kv_str(&pk, "label", m->classes[major]);
	sx_pack_key(&pk, "accuracy");
	sx__pack_num(&pk, bacc);
	sx_pack_key(&pk, "macro_f1");
	sx__pack_num(&pk, bf1);
	if (has_cmp)
		sx__pack_comparison(&pk, t, "accuracy");
	rc = 0;
out:
	if (raw)
		for (size_t i = 0; i < n; i++)
			sx_text_sparse_close(&raw[i]);
	free(raw), free(y), free(pred), free(top), free(cm);
	if (rc < 0)
		sx_model_unref(m);
	else
		t->out = m;
	return rc;
}
