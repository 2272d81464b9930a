#include "core/math/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

#define FNV_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

uint64_t sx_text_fnv1a64(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = FNV_BASIS;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= FNV_PRIME;
	}
	return h;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t fnv_step(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= FNV_PRIME;
	}
	return h;
}

uint64_t sx_text_hash(const void *p, size_t n, uint64_t seed)
{
	return mix64(fnv_step(FNV_BASIS ^ seed, p, n));
}

/* ---- tokenizer ---- */

/* Decodes one code point at s[i..n); returns its length, or 0 if the bytes
 * there are not valid UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t i, size_t n, uint32_t *cp)
{
	unsigned c = s[i];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t len;
	uint32_t v, min;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2, v = c & 0x1F, min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3, v = c & 0x0F, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4, v = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n - i < len)
		return 0;
	for (size_t k = 1; k < len; k++) {
		if ((s[i + k] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (s[i + k] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*cp = v;
	return len;
}

static int is_word_cp(uint32_t c)
{
	if (c < 0x80)
		return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
	if (c < 0xC0 || c == 0xD7 || c == 0xF7)
		return 0;
	if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) ||
	    (c >= 0xFE00 && c <= 0xFE0F) || c == 0xFEFF || (c >= 0xFF00 && c <= 0xFF0F) ||
	    (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0xE0000 && c <= 0xE007F))
		return 0;
	return 1;
}

static uint32_t lower_cp(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 0x20;
	if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
		return c + 0x20;
	return c;
}

static size_t utf8_encode(uint32_t c, char *o)
{
	if (c < 0x80) {
		o[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (char)(0xC0 | (c >> 6));
		o[1] = (char)(0x80 | (c & 0x3F));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (char)(0xE0 | (c >> 12));
		o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		o[2] = (char)(0x80 | (c & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (c >> 18));
	o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
	o[3] = (char)(0x80 | (c & 0x3F));
	return 4;
}

void sx_text_tokens_close(struct sx_text_tokens *t)
{
	if (!t)
		return;
	free(t->buf);
	free(t->off);
	free(t->len);
	memset(t, 0, sizeof *t);
}

int sx_text_tokenize(const char *s, size_t n, struct sx_text_tokens *out)
{
	if (!out)
		return sx_diag_set(SX_EINVAL, "text: tokenize: out is NULL");
	memset(out, 0, sizeof *out);
	if (!s && n > 0)
		return sx_diag_set(SX_EINVAL, "text: tokenize: NULL string");
	/* Lower-casing never lengthens a code point's encoding and every token
	 * adds one NUL after at least one byte, so n + 1 bytes and n / 2 + 1
	 * tokens are enough. */
	size_t max_tok = n / 2 + 1;
	out->buf = malloc(n + 1);
	out->off = malloc(max_tok * sizeof *out->off);
	out->len = malloc(max_tok * sizeof *out->len);
	if (!out->buf || !out->off || !out->len) {
		sx_text_tokens_close(out);
		return sx_diag_set(SX_ENOMEM, "text: tokenize: out of memory");
	}
	const unsigned char *u = (const unsigned char *)s;
	size_t w = 0, i = 0;
	int in_tok = 0;
	while (i < n) {
		uint32_t cp;
		size_t l = utf8_decode(u, i, n, &cp);
		int word = l > 0 && is_word_cp(cp);
		if (word) {
			if (!in_tok) {
				out->off[out->n] = w;
				in_tok = 1;
			}
			w += utf8_encode(lower_cp(cp), out->buf + w);
		} else if (in_tok) {
			out->len[out->n] = w - out->off[out->n];
			out->buf[w++] = 0;
			out->n++;
			in_tok = 0;
		}
		i += l ? l : 1;
	}
	if (in_tok) {
		out->len[out->n] = w - out->off[out->n];
		out->buf[w++] = 0;
		out->n++;
	}
	return 0;
}

/* ---- sparse vectors and features ---- */

void sx_text_sparse_close(struct sx_text_sparse *v)
{
	if (!v)
		return;
	free(v->idx);
	free(v->val);
	memset(v, 0, sizeof *v);
}

void sx_text_feat_opts_default(struct sx_text_feat_opts *o)
{
	o->bits = 18;
	o->word_ngrams = 2;
	o->char_min = 0;
	o->char_max = 0;
	o->alternate_sign = 1;
	o->seed = 0;
}

struct hits {
	uint64_t *h;
	size_t n, cap;
};

static int hits_push(struct hits *a, uint64_t h)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		uint64_t *p = realloc(a->h, cap * sizeof *p);
		if (!p)
			return SX_ENOMEM;
		a->h = p;
		a->cap = cap;
	}
	a->h[a->n++] = h;
	return 0;
}

/* Sort key: bucket in the high bits, sign in bit 0, so equal buckets meet. */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static int word_grams(const struct sx_text_feat_opts *o, const struct sx_text_tokens *t,
		      struct hits *a)
{
	static const unsigned char sep = 1;
	for (size_t i = 0; i < t->n; i++) {
		uint64_t h = fnv_step(FNV_BASIS ^ o->seed, "w", 1);
		for (int g = 0; g < o->word_ngrams && i + (size_t)g < t->n; g++) {
			if (g > 0)
				h = fnv_step(h, &sep, 1);
			h = fnv_step(h, t->buf + t->off[i + g], t->len[i + g]);
			if (hits_push(a, mix64(h)))
				return SX_ENOMEM;
		}
	}
	return 0;
}

static int char_grams(const struct sx_text_feat_opts *o, const struct sx_text_tokens *t,
		      struct hits *a)
{
	size_t cap = 0;
	size_t *start = NULL;
	char *pad = NULL;
	int rc = 0;
	for (size_t i = 0; i < t->n && !rc; i++) {
		size_t len = t->len[i] + 2;
		if (len + 1 > cap) {
			cap = len + 1;
			size_t *s2 = realloc(start, cap * sizeof *s2);
			if (s2)
				start = s2;
			char *p2 = realloc(pad, cap);
			if (p2)
				pad = p2;
			if (!s2 || !p2) {
				rc = SX_ENOMEM;
				break;
			}
		}
		pad[0] = '<';
		memcpy(pad + 1, t->buf + t->off[i], t->len[i]);
		pad[len - 1] = '>';
		size_t ncp = 0;
		for (size_t k = 0; k < len; k++)
			if (((unsigned char)pad[k] & 0xC0) != 0x80)
				start[ncp++] = k;
		start[ncp] = len;
		for (int g = o->char_min; g <= o->char_max && !rc; g++)
			for (size_t k = 0; k + (size_t)g <= ncp; k++) {
				uint64_t h = fnv_step(FNV_BASIS ^ o->seed, "c", 1);
				h = fnv_step(h, pad + start[k], start[k + g] - start[k]);
				if (hits_push(a, mix64(h))) {
					rc = SX_ENOMEM;
					break;
				}
			}
	}
	free(start);
	free(pad);
	return rc;
}

int sx_text_features(const struct sx_text_feat_opts *opts, const char *s, size_t n,
		     struct sx_text_sparse *out)
{
	struct sx_text_feat_opts d;
	if (!opts) {
		sx_text_feat_opts_default(&d);
		opts = &d;
	}
	if (!out)
		return sx_diag_set(SX_EINVAL, "text: features: out is NULL");
	memset(out, 0, sizeof *out);
	if (opts->bits < 1 || opts->bits > 24 || opts->word_ngrams < 0 || opts->word_ngrams > 5)
		return sx_diag_set(SX_EINVAL, "text: features: bits must be 1..24, word_ngrams 0..5");
	if (!(opts->char_min == 0 && opts->char_max == 0) &&
	    !(opts->char_min >= 1 && opts->char_min <= opts->char_max && opts->char_max <= 8))
		return sx_diag_set(SX_EINVAL, "text: features: need 1 <= char_min <= char_max <= 8");
	struct sx_text_tokens t;
	int rc = sx_text_tokenize(s, n, &t);
	if (rc)
		return rc;
	struct hits a = {0};
	if (opts->word_ngrams > 0)
		rc = word_grams(opts, &t, &a);
	if (!rc && opts->char_max > 0)
		rc = char_grams(opts, &t, &a);
	sx_text_tokens_close(&t);
	if (rc) {
		free(a.h);
		return sx_diag_set(rc, "text: features: out of memory");
	}
	uint64_t mask = (1ULL << opts->bits) - 1;
	for (size_t k = 0; k < a.n; k++) {
		uint64_t sign = opts->alternate_sign ? a.h[k] >> 63 : 0;
		a.h[k] = ((a.h[k] & mask) << 1) | sign;
	}
	if (a.n)
		qsort(a.h, a.n, sizeof *a.h, cmp_u64);
	if (a.n) {
		out->idx = malloc(a.n * sizeof *out->idx);
		out->val = malloc(a.n * sizeof *out->val);
		if (!out->idx || !out->val) {
			free(a.h);
			sx_text_sparse_close(out);
			return sx_diag_set(SX_ENOMEM, "text: features: out of memory");
		}
	}
	for (size_t k = 0; k < a.n;) {
		uint32_t b = (uint32_t)(a.h[k] >> 1);
		double v = 0;
		for (; k < a.n && (uint32_t)(a.h[k] >> 1) == b; k++)
			v += (a.h[k] & 1) ? -1.0 : 1.0;
		if (v != 0) {
			out->idx[out->n] = b;
			out->val[out->n] = v;
			out->n++;
		}
	}
	free(a.h);
	return 0;
}

static int check_vec(const struct sx_text_sparse *v, size_t dim, int nonneg)
{
	for (size_t k = 0; k < v->n; k++) {
		if (v->idx[k] >= dim)
			return sx_diag_set(SX_EINVAL, "text: index %u outside dimension %zu",
					   (unsigned)v->idx[k], dim);
		if (!isfinite(v->val[k]) || (nonneg && v->val[k] < 0))
			return sx_diag_set(SX_EINVAL, "text: value %g not allowed", v->val[k]);
	}
	return 0;
}

/* ---- TF-IDF ---- */

struct sx_text_tfidf {
	size_t dim;
	int fitted;
	double *idf;
};

struct sx_text_tfidf *sx_text_tfidf_new(size_t dim)
{
	if (dim == 0)
		return NULL;
	struct sx_text_tfidf *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->dim = dim;
	t->idf = calloc(dim, sizeof *t->idf);
	if (!t->idf) {
		free(t);
		return NULL;
	}
	return t;
}

void sx_text_tfidf_free(struct sx_text_tfidf *t)
{
	if (!t)
		return;
	free(t->idf);
	free(t);
}

int sx_text_tfidf_fit(struct sx_text_tfidf *t, const struct sx_text_sparse *docs, size_t n)
{
	if (!t || !docs || n == 0)
		return sx_diag_set(SX_EINVAL, "text: tfidf: no documents");
	for (size_t i = 0; i < n; i++) {
		int rc = check_vec(&docs[i], t->dim, 0);
		if (rc)
			return rc;
	}
	double *df = calloc(t->dim, sizeof *df);
	if (!df)
		return sx_diag_set(SX_ENOMEM, "text: tfidf: out of memory");
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < docs[i].n; k++)
			if (docs[i].val[k] != 0)
				df[docs[i].idx[k]] += 1;
	for (size_t j = 0; j < t->dim; j++)
		t->idf[j] = log((1.0 + (double)n) / (1.0 + df[j])) + 1.0;
	free(df);
	t->fitted = 1;
	return 0;
}

double sx_text_tfidf_idf(const struct sx_text_tfidf *t, size_t j)
{
	if (!t || !t->fitted || j >= t->dim)
		return NAN;
	return t->idf[j];
}

int sx_text_tfidf_transform(const struct sx_text_tfidf *t, struct sx_text_sparse *v)
{
	if (!t || !v)
		return sx_diag_set(SX_EINVAL, "text: tfidf: NULL argument");
	if (!t->fitted)
		return sx_diag_set(SX_ESTATE, "text: tfidf: not fitted");
	int rc = check_vec(v, t->dim, 0);
	if (rc)
		return rc;
	double ss = 0;
	for (size_t k = 0; k < v->n; k++) {
		v->val[k] *= t->idf[v->idx[k]];
		ss += v->val[k] * v->val[k];
	}
	if (ss > 0) {
		double inv = 1.0 / sqrt(ss);
		for (size_t k = 0; k < v->n; k++)
			v->val[k] *= inv;
	}
	return 0;
}

/* ---- shared ---- */

int32_t sx_text_argmax(const double *proba, int32_t n_classes)
{
	int32_t best = 0;
	for (int32_t c = 1; c < n_classes; c++)
		if (proba[c] > proba[best])
			best = c;
	return best;
}

static void softmax(double *z, int32_t k)
{
	double mx = -INFINITY;
	for (int32_t c = 0; c < k; c++)
		if (z[c] > mx)
			mx = z[c];
	if (mx == -INFINITY) {
		for (int32_t c = 0; c < k; c++)
			z[c] = 1.0 / k;
		return;
	}
	double s = 0;
	for (int32_t c = 0; c < k; c++) {
		z[c] = exp(z[c] - mx);
		s += z[c];
	}
	for (int32_t c = 0; c < k; c++)
		z[c] /= s;
}

static int check_labels(const int32_t *y, size_t n, int32_t k)
{
	for (size_t i = 0; i < n; i++)
		if (y[i] < 0 || y[i] >= k)
			return sx_diag_set(SX_EINVAL, "text: label %d outside [0, %d)", (int)y[i],
					   (int)k);
	return 0;
}

/* ---- naive Bayes ---- */

struct sx_text_nb {
	int32_t k;
	size_t dim;
	int fitted;
	double *log_prior;  /* k */
	double *log_prob;   /* k * dim */
};

struct sx_text_nb *sx_text_nb_new(int32_t n_classes, size_t dim)
{
	if (n_classes < 2 || dim == 0 || dim > SIZE_MAX / sizeof(double) / (size_t)n_classes)
		return NULL;
	struct sx_text_nb *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->k = n_classes;
	m->dim = dim;
	m->log_prior = calloc((size_t)n_classes, sizeof(double));
	m->log_prob = calloc((size_t)n_classes * dim, sizeof(double));
	if (!m->log_prior || !m->log_prob) {
		sx_text_nb_free(m);
		return NULL;
	}
	return m;
}

void sx_text_nb_free(struct sx_text_nb *m)
{
	if (!m)
		return;
	free(m->log_prior);
	free(m->log_prob);
	free(m);
}

int sx_text_nb_fit(struct sx_text_nb *m, const struct sx_text_sparse *X, const int32_t *y,
		   size_t n, double alpha)
{
	if (!m || !X || !y || n == 0 || !(alpha > 0) || !isfinite(alpha))
		return sx_diag_set(SX_EINVAL, "text: nb: need n > 0 and finite alpha > 0");
	int rc = check_labels(y, n, m->k);
	for (size_t i = 0; i < n && !rc; i++)
		rc = check_vec(&X[i], m->dim, 1);
	if (rc)
		return rc;
	size_t kd = (size_t)m->k * m->dim;
	double *cnt = calloc(kd, sizeof *cnt);
	double *tot = calloc((size_t)m->k, sizeof *tot);
	double *nc = calloc((size_t)m->k, sizeof *nc);
	if (!cnt || !tot || !nc) {
		free(cnt), free(tot), free(nc);
		return sx_diag_set(SX_ENOMEM, "text: nb: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		double *row = cnt + (size_t)y[i] * m->dim;
		nc[y[i]] += 1;
		for (size_t k = 0; k < X[i].n; k++) {
			row[X[i].idx[k]] += X[i].val[k];
			tot[y[i]] += X[i].val[k];
		}
	}
	for (int32_t c = 0; c < m->k; c++) {
		m->log_prior[c] = nc[c] > 0 ? log(nc[c] / (double)n) : -INFINITY;
		double lden = log(tot[c] + alpha * (double)m->dim);
		double *row = cnt + (size_t)c * m->dim;
		double *lp = m->log_prob + (size_t)c * m->dim;
		for (size_t j = 0; j < m->dim; j++)
			lp[j] = log(row[j] + alpha) - lden;
	}
	free(cnt), free(tot), free(nc);
	m->fitted = 1;
	return 0;
}

int sx_text_nb_predict_proba(const struct sx_text_nb *m, const struct sx_text_sparse *x,
			     double *proba)
{
	if (!m || !x || !proba)
		return sx_diag_set(SX_EINVAL, "text: nb: NULL argument");
	if (!m->fitted)
		return sx_diag_set(SX_ESTATE, "text: nb: not fitted");
	int rc = check_vec(x, m->dim, 1);
	if (rc)
		return rc;
	for (int32_t c = 0; c < m->k; c++) {
		const double *lp = m->log_prob + (size_t)c * m->dim;
		double z = m->log_prior[c];
		if (z != -INFINITY)
			for (size_t k = 0; k < x->n; k++)
				z += x->val[k] * lp[x->idx[k]];
		proba[c] = z;
	}
	softmax(proba, m->k);
	return 0;
}

/* ---- logistic regression ---- */

struct sx_text_lr {
	int32_t k;
	size_t dim;
	int fitted;
	double *w;  /* (dim + 1) * k: feature j's k weights together; row dim is the bias */
	double *g2; /* Adagrad accumulators, same shape */
	double *gr; /* batch gradient, same shape */
};

void sx_text_lr_opts_default(struct sx_text_lr_opts *o)
{
	o->lr = 0.5;
	o->l2 = 1e-4;
	o->epochs = 10;
	o->batch = 16;
	o->seed = 0;
}

struct sx_text_lr *sx_text_lr_new(int32_t n_classes, size_t dim)
{
	if (n_classes < 2 || dim == 0 || dim >= SIZE_MAX / sizeof(double) / (size_t)n_classes)
		return NULL;
	struct sx_text_lr *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	size_t sz = (dim + 1) * (size_t)n_classes;
	m->k = n_classes;
	m->dim = dim;
	m->w = calloc(sz, sizeof(double));
	m->g2 = calloc(sz, sizeof(double));
	m->gr = calloc(sz, sizeof(double));
	if (!m->w || !m->g2 || !m->gr) {
		sx_text_lr_free(m);
		return NULL;
	}
	return m;
}

void sx_text_lr_free(struct sx_text_lr *m)
{
	if (!m)
		return;
	free(m->w);
	free(m->g2);
	free(m->gr);
	free(m);
}

static void lr_scores(const struct sx_text_lr *m, const struct sx_text_sparse *x, double *z)
{
	const double *b = m->w + m->dim * (size_t)m->k;
	for (int32_t c = 0; c < m->k; c++)
		z[c] = b[c];
	for (size_t t = 0; t < x->n; t++) {
		const double *wj = m->w + (size_t)x->idx[t] * (size_t)m->k;
		for (int32_t c = 0; c < m->k; c++)
			z[c] += x->val[t] * wj[c];
	}
	softmax(z, m->k);
}

static uint64_t splitmix(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ULL;
	return mix64(*s);
}

int sx_text_lr_fit(struct sx_text_lr *m, const struct sx_text_sparse *X, const int32_t *y,
		   size_t n, const struct sx_text_lr_opts *opts)
{
	struct sx_text_lr_opts d;
	if (!opts) {
		sx_text_lr_opts_default(&d);
		opts = &d;
	}
	if (!m || !X || !y || n == 0)
		return sx_diag_set(SX_EINVAL, "text: lr: no rows");
	if (!(opts->lr > 0) || !isfinite(opts->lr) || !(opts->l2 >= 0) || !isfinite(opts->l2) ||
	    opts->epochs < 1 || opts->batch < 1)
		return sx_diag_set(SX_EINVAL, "text: lr: bad options");
	int rc = check_labels(y, n, m->k);
	for (size_t i = 0; i < n && !rc; i++)
		rc = check_vec(&X[i], m->dim, 0);
	if (rc)
		return rc;
	size_t k = (size_t)m->k;
	size_t *order = malloc(n * sizeof *order);
	uint32_t *touched = malloc((m->dim + 1) * sizeof *touched);
	unsigned char *mark = calloc(m->dim + 1, 1);
	double *p = malloc(k * sizeof *p);
	if (!order || !touched || !mark || !p) {
		free(order), free(touched), free(mark), free(p);
		return sx_diag_set(SX_ENOMEM, "text: lr: out of memory");
	}
	size_t sz = (m->dim + 1) * k;
	memset(m->w, 0, sz * sizeof(double));
	memset(m->g2, 0, sz * sizeof(double));
	memset(m->gr, 0, sz * sizeof(double));
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	uint64_t rs = opts->seed;
	const uint32_t bias = (uint32_t)m->dim;
	for (int e = 0; e < opts->epochs; e++) {
		for (size_t i = n - 1; i > 0; i--) {
			size_t j = (size_t)(splitmix(&rs) % (i + 1));
			size_t tmp = order[i];
			order[i] = order[j];
			order[j] = tmp;
		}
		for (size_t s = 0; s < n; s += opts->batch) {
			size_t end = s + opts->batch < n ? s + opts->batch : n;
			double inv = 1.0 / (double)(end - s);
			size_t nt = 0;
			touched[nt++] = bias;
			mark[bias] = 1;
			for (size_t r = s; r < end; r++) {
				const struct sx_text_sparse *x = &X[order[r]];
				lr_scores(m, x, p);
				p[y[order[r]]] -= 1.0;
				double *gb = m->gr + (size_t)bias * k;
				for (size_t c = 0; c < k; c++)
					gb[c] += p[c] * inv;
				for (size_t t = 0; t < x->n; t++) {
					uint32_t j = x->idx[t];
					if (!mark[j]) {
						mark[j] = 1;
						touched[nt++] = j;
					}
					double *gj = m->gr + (size_t)j * k;
					for (size_t c = 0; c < k; c++)
						gj[c] += p[c] * x->val[t] * inv;
				}
			}
			for (size_t t = 0; t < nt; t++) {
				uint32_t j = touched[t];
				double l2 = j == bias ? 0 : opts->l2;
				double *wj = m->w + (size_t)j * k, *gj = m->gr + (size_t)j * k,
				       *aj = m->g2 + (size_t)j * k;
				for (size_t c = 0; c < k; c++) {
					double g = gj[c] + l2 * wj[c];
					aj[c] += g * g;
					if (aj[c] > 0)
						wj[c] -= opts->lr * g / sqrt(aj[c]);
					gj[c] = 0;
				}
				mark[j] = 0;
			}
		}
	}
	free(order), free(touched), free(mark), free(p);
	m->fitted = 1;
	return 0;
}

int sx_text_lr_predict_proba(const struct sx_text_lr *m, const struct sx_text_sparse *x,
			     double *proba)
{
	if (!m || !x || !proba)
		return sx_diag_set(SX_EINVAL, "text: lr: NULL argument");
	if (!m->fitted)
		return sx_diag_set(SX_ESTATE, "text: lr: not fitted");
	int rc = check_vec(x, m->dim, 0);
	if (rc)
		return rc;
	lr_scores(m, x, proba);
	return 0;
}

/* ---- saving and restoring ---- */

const double *sx_text_tfidf_idf_vec(const struct sx_text_tfidf *t)
{
	return t && t->fitted ? t->idf : NULL;
}

int sx_text_tfidf_set(struct sx_text_tfidf *t, const double *idf)
{
	if (!t || !idf)
		return sx_diag_set(SX_EINVAL, "text: tfidf: NULL argument");
	for (size_t j = 0; j < t->dim; j++)
		if (!isfinite(idf[j]) || !(idf[j] > 0))
			return sx_diag_set(SX_EINVAL, "text: tfidf: idf[%zu] is not a finite positive number", j);
	memcpy(t->idf, idf, t->dim * sizeof *t->idf);
	t->fitted = 1;
	return 0;
}

const double *sx_text_nb_log_prior(const struct sx_text_nb *m) { return m && m->fitted ? m->log_prior : NULL; }
const double *sx_text_nb_log_prob(const struct sx_text_nb *m) { return m && m->fitted ? m->log_prob : NULL; }

int sx_text_nb_set(struct sx_text_nb *m, const double *log_prior, const double *log_prob)
{
	if (!m || !log_prior || !log_prob)
		return sx_diag_set(SX_EINVAL, "text: nb: NULL argument");
	int any = 0;
	for (int32_t c = 0; c < m->k; c++) {
		if (isnan(log_prior[c]) || log_prior[c] == INFINITY)
			return sx_diag_set(SX_EINVAL, "text: nb: log_prior[%d] is not a log-probability", (int)c);
		any |= log_prior[c] != -INFINITY;
	}
	if (!any)
		return sx_diag_set(SX_EINVAL, "text: nb: every class has prior 0");
	size_t kd = (size_t)m->k * m->dim;
	for (size_t i = 0; i < kd; i++)
		if (!isfinite(log_prob[i]))
			return sx_diag_set(SX_EINVAL, "text: nb: log_prob[%zu] is not finite", i);
	memcpy(m->log_prior, log_prior, (size_t)m->k * sizeof(double));
	memcpy(m->log_prob, log_prob, kd * sizeof(double));
	m->fitted = 1;
	return 0;
}

const double *sx_text_lr_weights(const struct sx_text_lr *m) { return m && m->fitted ? m->w : NULL; }

int sx_text_lr_set(struct sx_text_lr *m, const double *w)
{
	if (!m || !w)
		return sx_diag_set(SX_EINVAL, "text: lr: NULL argument");
	size_t sz = (m->dim + 1) * (size_t)m->k;
	for (size_t i = 0; i < sz; i++)
		if (!isfinite(w[i]))
			return sx_diag_set(SX_EINVAL, "text: lr: weight %zu is not finite", i);
	memcpy(m->w, w, sz * sizeof(double));
	memset(m->g2, 0, sz * sizeof(double));
	m->fitted = 1;
	return 0;
}
