#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/math/metrics.h"
#include "core/math/text.h"
#include "core/sx.h"

static void near_at(double a, double b, int line)
{
	if (!(fabs(a - b) <= 1e-12 * (1 + fabs(b))))
		fail_msg("line %d: %.17g != %.17g", line, a, b);
}
#define near(a, b) near_at((a), (b), __LINE__)

/* Tokens of s joined by '|'. */
static void toks_at(const char *s, size_t n, const char *want, int line)
{
	struct sx_text_tokens t;
	if (sx_text_tokenize(s, n, &t) != 0)
		fail_msg("line %d: tokenize failed", line);
	char got[512] = "";
	size_t w = 0;
	for (size_t i = 0; i < t.n; i++) {
		if (strlen(t.buf + t.off[i]) != t.len[i])
			fail_msg("line %d: token %zu length", line, i);
		w += (size_t)snprintf(got + w, sizeof got - w, "%s%s", i ? "|" : "", t.buf + t.off[i]);
	}
	sx_text_tokens_close(&t);
	if (strcmp(got, want) != 0)
		fail_msg("line %d: got \"%s\" want \"%s\"", line, got, want);
}
#define toks(s, want) toks_at((s), strlen(s), (want), __LINE__)
#define toksn(s, n, want) toks_at((s), (n), (want), __LINE__)

static void test_tokenizer(void **state)
{
	(void)state;
	toks("Hello, WORLD! it's 2024.", "hello|world|it|s|2024");
	/* Latin-1 capitals fold; the em dash (U+2014) and the emoji separate. */
	toks("Héllo ÀÉÎÕÜ naïve\xe2\x80\x94" "café \xf0\x9f\x98\x80ok", "héllo|àéîõü|naïve|café|ok");
	/* U+00D7 and U+00BF are separators, U+00DF (sharp s) is a letter. */
	toks("3\xc3\x97" "4 \xc2\xbfqu\xc3\xa9? stra\xc3\x9f" "e", "3|4|qué|straße");
	/* Greek and CJK are word characters; Greek keeps its case. */
	toks("ΑΒΓ 日本語。テスト", "ΑΒΓ|日本語|テスト");
	/* Invalid UTF-8: stray continuation, 0xFF, overlong '/', surrogate,
	 * truncated sequence at the end. */
	toks("ab\x80" "cd\xff" "ef\xc0\xafgh\xed\xa0\x80ij\xe2\x82", "ab|cd|ef|gh|ij");
	toksn("x\0y", 3, "x|y");
	toks("", "");
	toks(" ,.;!? ", "");
	toks("a1b2_c3", "a1b2|c3");

	struct sx_text_tokens t;
	assert_int_equal(sx_text_tokenize(NULL, 3, &t), SX_EINVAL);
	assert_int_equal(sx_text_tokenize("a", 1, NULL), SX_EINVAL);
}


/* Random bytes: every token is non-empty valid UTF-8 without separators, and
 * features never fail. */
static void test_tokenizer_random_bytes(void **state)
{
	(void)state;
	uint64_t r = 12345;
	char s[64];
	for (int it = 0; it < 3000; it++) {
		size_t n = (size_t)(it % 64);
		for (size_t i = 0; i < n; i++) {
			r = r * 6364136223846793005ULL + 1442695040888963407ULL;
			s[i] = (char)(r >> 56);
		}
		struct sx_text_tokens t;
		assert_int_equal(sx_text_tokenize(s, n, &t), 0);
		for (size_t i = 0; i < t.n; i++) {
			assert_true(t.len[i] > 0);
			struct sx_text_tokens u;
			assert_int_equal(sx_text_tokenize(t.buf + t.off[i], t.len[i], &u), 0);
			assert_int_equal(u.n, 1);
			assert_int_equal(u.len[0], t.len[i]);
			assert_memory_equal(u.buf, t.buf + t.off[i], t.len[i]);
			sx_text_tokens_close(&u);
		}
		sx_text_tokens_close(&t);
		struct sx_text_feat_opts o;
		sx_text_feat_opts_default(&o);
		o.char_min = 1;
		o.char_max = 4;
		struct sx_text_sparse v;
		assert_int_equal(sx_text_features(&o, s, n, &v), 0);
		sx_text_sparse_close(&v);
	}
}

static void test_hashing(void **state)
{
	(void)state;
	/* Published FNV-1a 64 test vectors. */
	assert_true(sx_text_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
	assert_true(sx_text_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
	assert_true(sx_text_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
	assert_true(sx_text_hash("good", 4, 0) == sx_text_hash("good", 4, 0));
	assert_true(sx_text_hash("good", 4, 0) != sx_text_hash("good", 4, 1));
	assert_true(sx_text_hash("good", 4, 0) != sx_text_hash("gooe", 4, 0));

	struct sx_text_feat_opts o;
	sx_text_feat_opts_default(&o);
	o.word_ngrams = 1;
	struct sx_text_sparse a, b;
	assert_int_equal(sx_text_features(&o, "Good good GOOD", 14, &a), 0);
	assert_int_equal(a.n, 1);
	near(fabs(a.val[0]), 3);
	assert_true(a.idx[0] < (1u << 18));
	/* Case and punctuation do not change features. */
	assert_int_equal(sx_text_features(&o, "good; GOOD!good", 15, &b), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(a.idx[0], b.idx[0]);
	near(a.val[0], b.val[0]);
	sx_text_sparse_close(&a);
	sx_text_sparse_close(&b);

	/* Bigrams: 3 unigrams + 2 bigrams; unsigned counts sum to 5. */
	o.word_ngrams = 2;
	o.alternate_sign = 0;
	o.bits = 24;
	assert_int_equal(sx_text_features(&o, "not bad at", 10, &a), 0);
	double s = 0;
	for (size_t k = 0; k < a.n; k++) {
		assert_true(a.val[k] > 0);
		if (k)
			assert_true(a.idx[k] > a.idx[k - 1]);
		s += a.val[k];
	}
	near(s, 5);
	sx_text_sparse_close(&a);

	/* Char n-grams 1..3 of "<ab>" (4 code points): 4 + 3 + 2; of "<é>"
	 * (3 code points, é is 2 bytes): 3 + 2 + 1. */
	o.word_ngrams = 0;
	o.char_min = 1;
	o.char_max = 3;
	assert_int_equal(sx_text_features(&o, "AB", 2, &a), 0);
	s = 0;
	for (size_t k = 0; k < a.n; k++)
		s += a.val[k];
	near(s, 9);
	sx_text_sparse_close(&a);
	assert_int_equal(sx_text_features(&o, "\xc3\x89", 2, &a), 0);
	s = 0;
	for (size_t k = 0; k < a.n; k++)
		s += a.val[k];
	near(s, 6);
	sx_text_sparse_close(&a);

	/* Same text, same options: same vector; another seed: other buckets. */
	o.char_min = o.char_max = 0;
	o.word_ngrams = 2;
	o.alternate_sign = 1;
	const char *txt = "The food was great, the service was not.";
	assert_int_equal(sx_text_features(&o, txt, strlen(txt), &a), 0);
	assert_int_equal(sx_text_features(&o, txt, strlen(txt), &b), 0);
	assert_int_equal(a.n, b.n);
	assert_memory_equal(a.idx, b.idx, a.n * sizeof *a.idx);
	assert_memory_equal(a.val, b.val, a.n * sizeof *a.val);
	sx_text_sparse_close(&b);
	o.seed = 7;
	assert_int_equal(sx_text_features(&o, txt, strlen(txt), &b), 0);
	assert_false(a.n == b.n && memcmp(a.idx, b.idx, a.n * sizeof *a.idx) == 0);
	sx_text_sparse_close(&a);
	sx_text_sparse_close(&b);

	o.bits = 25;
	assert_int_equal(sx_text_features(&o, "a", 1, &a), SX_EINVAL);
	o.bits = 10;
	o.char_min = 3;
	o.char_max = 2;
	assert_int_equal(sx_text_features(&o, "a", 1, &a), SX_EINVAL);
}

static struct sx_text_sparse sv(size_t n, const uint32_t *idx, const double *val)
{
	struct sx_text_sparse v = {malloc(n * sizeof(uint32_t)), malloc(n * sizeof(double)), n};
	memcpy(v.idx, idx, n * sizeof *idx);
	memcpy(v.val, val, n * sizeof *val);
	return v;
}

static void test_tfidf_hand(void **state)
{
	(void)state;
	struct sx_text_sparse d[3];
	d[0] = sv(2, (uint32_t[]){0, 1}, (double[]){1, 2});
	d[1] = sv(2, (uint32_t[]){1, 2}, (double[]){1, 1});
	d[2] = sv(2, (uint32_t[]){0, 3}, (double[]){1, 3});
	struct sx_text_tfidf *t = sx_text_tfidf_new(5);
	assert_non_null(t);
	assert_int_equal(sx_text_tfidf_transform(t, &d[0]), SX_ESTATE);
	assert_int_equal(sx_text_tfidf_fit(t, d, 3), 0);
	/* df = 2, 2, 1, 1, 0 over n = 3 documents. */
	double i01 = log(4.0 / 3) + 1, i23 = log(2.0) + 1;
	near(sx_text_tfidf_idf(t, 0), i01);
	near(sx_text_tfidf_idf(t, 1), i01);
	near(sx_text_tfidf_idf(t, 2), i23);
	near(sx_text_tfidf_idf(t, 3), i23);
	near(sx_text_tfidf_idf(t, 4), log(4.0) + 1);
	assert_true(isnan(sx_text_tfidf_idf(t, 5)));
	for (int i = 0; i < 3; i++)
		assert_int_equal(sx_text_tfidf_transform(t, &d[i]), 0);
	near(d[0].val[0], 1 / sqrt(5));
	near(d[0].val[1], 2 / sqrt(5));
	double n1 = sqrt(i01 * i01 + i23 * i23);
	near(d[1].val[0], i01 / n1);
	near(d[1].val[1], i23 / n1);
	double n2 = sqrt(i01 * i01 + 9 * i23 * i23);
	near(d[2].val[0], i01 / n2);
	near(d[2].val[1], 3 * i23 / n2);
	struct sx_text_sparse bad = sv(1, (uint32_t[]){5}, (double[]){1});
	assert_int_equal(sx_text_tfidf_transform(t, &bad), SX_EINVAL);
	assert_int_equal(sx_text_tfidf_fit(t, d, 0), SX_EINVAL);
	sx_text_sparse_close(&bad);
	for (int i = 0; i < 3; i++)
		sx_text_sparse_close(&d[i]);
	sx_text_tfidf_free(t);
	assert_null(sx_text_tfidf_new(0));
}

static void test_nb_hand(void **state)
{
	(void)state;
	struct sx_text_sparse X[3];
	X[0] = sv(2, (uint32_t[]){0, 1}, (double[]){2, 1});
	X[1] = sv(1, (uint32_t[]){0}, (double[]){1});
	X[2] = sv(2, (uint32_t[]){1, 2}, (double[]){1, 2});
	int32_t y[3] = {0, 0, 1};
	struct sx_text_nb *m = sx_text_nb_new(2, 3);
	assert_non_null(m);
	struct sx_text_sparse x = sv(2, (uint32_t[]){0, 2}, (double[]){1, 1});
	double p[2];
	assert_int_equal(sx_text_nb_predict_proba(m, &x, p), SX_ESTATE);
	assert_int_equal(sx_text_nb_fit(m, X, y, 3, 1.0), 0);
	/* Class 0 counts 3, 1, 0 (total 4), class 1 counts 0, 1, 2 (total 3),
	 * alpha 1 over 3 buckets: P(j|0) = 4/7, 2/7, 1/7; P(j|1) = 1/6, 2/6, 3/6;
	 * priors 2/3, 1/3. x = feature 0 and 2 once each. */
	double j0 = 2.0 / 3 * 4.0 / 7 * 1.0 / 7, j1 = 1.0 / 3 * 1.0 / 6 * 3.0 / 6;
	assert_int_equal(sx_text_nb_predict_proba(m, &x, p), 0);
	near(p[0], j0 / (j0 + j1));
	near(p[1], j1 / (j0 + j1));
	assert_int_equal(sx_text_argmax(p, 2), 0);

	int32_t bad_y[3] = {0, 2, 1};
	assert_int_equal(sx_text_nb_fit(m, X, bad_y, 3, 1.0), SX_EINVAL);
	assert_int_equal(sx_text_nb_fit(m, X, y, 3, 0.0), SX_EINVAL);
	X[1].val[0] = -1;
	assert_int_equal(sx_text_nb_fit(m, X, y, 3, 1.0), SX_EINVAL);
	/* The failed fits left the model as it was. */
	assert_int_equal(sx_text_nb_predict_proba(m, &x, p), 0);
	near(p[0], j0 / (j0 + j1));
	sx_text_sparse_close(&x);
	for (int i = 0; i < 3; i++)
		sx_text_sparse_close(&X[i]);
	sx_text_nb_free(m);
	assert_null(sx_text_nb_new(1, 3));
}

static void test_lr_small(void **state)
{
	(void)state;
	/* Three separable classes, one bucket each: the model must learn them,
	 * and two fits with the same seed must agree bit for bit. */
	struct sx_text_sparse X[6];
	int32_t y[6];
	for (int i = 0; i < 6; i++) {
		X[i] = sv(2, (uint32_t[]){(uint32_t)(i % 3), 3}, (double[]){1, 0.5});
		y[i] = i % 3;
	}
	struct sx_text_lr_opts o;
	sx_text_lr_opts_default(&o);
	o.batch = 2;
	o.epochs = 50;
	struct sx_text_lr *a = sx_text_lr_new(3, 4), *b = sx_text_lr_new(3, 4);
	assert_int_equal(sx_text_lr_predict_proba(a, &X[0], (double[3]){0}), SX_ESTATE);
	assert_int_equal(sx_text_lr_fit(a, X, y, 6, &o), 0);
	assert_int_equal(sx_text_lr_fit(b, X, y, 6, &o), 0);
	for (int i = 0; i < 3; i++) {
		double pa[3], pb[3];
		assert_int_equal(sx_text_lr_predict_proba(a, &X[i], pa), 0);
		assert_int_equal(sx_text_lr_predict_proba(b, &X[i], pb), 0);
		assert_memory_equal(pa, pb, sizeof pa);
		near(pa[0] + pa[1] + pa[2], 1);
		assert_int_equal(sx_text_argmax(pa, 3), i);
		assert_true(pa[i] > 0.9);
	}
	o.lr = 0;
	assert_int_equal(sx_text_lr_fit(a, X, y, 6, &o), SX_EINVAL);
	for (int i = 0; i < 6; i++)
		sx_text_sparse_close(&X[i]);
	sx_text_lr_free(a);
	sx_text_lr_free(b);
}

/* ---- sentiment corpus ---- */

struct corpus {
	char **text;
	int32_t *label;
	size_t n;
};

/* One CSV field at *p (RFC 4180 quoting, "" inside quotes). Returns a
 * malloc'd copy; *p moves past the field and its comma or line end, *eol
 * says whether the record ended. */
static char *csv_field(const char **p, const char *end, int *eol)
{
	const char *s = *p;
	size_t cap = 64, n = 0;
	char *o = malloc(cap);
	assert_non_null(o);
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
		if (n + 2 > cap) {
			cap *= 2;
			o = realloc(o, cap);
			assert_non_null(o);
		}
		o[n++] = c;
	}
	o[n] = 0;
	*eol = s >= end || *s != ',';
	if (s < end && *s == '\r')
		s++;
	if (s < end)
		s++;
	*p = s;
	return o;
}

static void load_corpus(struct corpus *c)
{
	const char *root = getenv("SX_SOURCE_DIR");
	if (!root)
		fail_msg("SX_SOURCE_DIR is not set");
	char path[4096];
	snprintf(path, sizeof path, "%s/../shared/data/uci_sentiment_labelled_sentences.csv", root);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *data = malloc((size_t)sz + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)sz, f), (size_t)sz);
	fclose(f);
	const char *p = data, *end = data + sz;
	size_t cap = 4096;
	c->text = malloc(cap * sizeof *c->text);
	c->label = malloc(cap * sizeof *c->label);
	c->n = 0;
	int header = 1;
	while (p < end) {
		char *fld[3] = {0};
		int nf = 0, eol = 0;
		while (!eol) {
			char *v = csv_field(&p, end, &eol);
			if (nf < 3)
				fld[nf] = v;
			else
				free(v);
			nf++;
		}
		if (header) {
			assert_int_equal(nf, 3);
			assert_string_equal(fld[2], "text");
			header = 0;
		} else if (nf == 3) {
			assert_true(c->n < cap);
			assert_true(strcmp(fld[1], "0") == 0 || strcmp(fld[1], "1") == 0);
			c->label[c->n] = fld[1][0] - '0';
			c->text[c->n] = fld[2];
			fld[2] = NULL;
			c->n++;
		} else if (!(nf == 1 && fld[0][0] == 0)) {
			fail_msg("row %zu has %d fields", c->n + 1, nf);
		}
		for (int i = 0; i < 3; i++)
			free(fld[i]);
	}
	free(data);
	assert_int_equal(c->n, 3000);
}

static void free_corpus(struct corpus *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->text[i]);
	free(c->text);
	free(c->label);
}

/* Every 5th row (i % 5 == 4) is the test set. */
static void featurize(const struct corpus *c, const struct sx_text_feat_opts *o,
		      struct sx_text_sparse *tr, int32_t *ytr, size_t *ntr, struct sx_text_sparse *te,
		      int32_t *yte, size_t *nte)
{
	*ntr = *nte = 0;
	for (size_t i = 0; i < c->n; i++) {
		int test = i % 5 == 4;
		struct sx_text_sparse *v = test ? &te[*nte] : &tr[*ntr];
		assert_int_equal(sx_text_features(o, c->text[i], strlen(c->text[i]), v), 0);
		if (test)
			yte[(*nte)++] = c->label[i];
		else
			ytr[(*ntr)++] = c->label[i];
	}
}

#define NB_MIN_ACC 0.80
#define LR_MIN_ACC 0.81
#define LR_CHAR_MIN 2
#define LR_CHAR_MAX 4

static void test_sentiment(void **state)
{
	(void)state;
	struct corpus c;
	load_corpus(&c);
	struct sx_text_sparse *tr = calloc(c.n, sizeof *tr), *te = calloc(c.n, sizeof *te);
	int32_t *ytr = calloc(c.n, sizeof *ytr), *yte = calloc(c.n, sizeof *yte),
		*pred = calloc(c.n, sizeof *pred);
	size_t ntr, nte;
	struct sx_text_feat_opts fo;
	sx_text_feat_opts_default(&fo);
	fo.bits = 18;
	fo.word_ngrams = 2;
	fo.alternate_sign = 0;

	featurize(&c, &fo, tr, ytr, &ntr, te, yte, &nte);
	assert_int_equal(nte, 600);
	struct sx_text_nb *nb = sx_text_nb_new(2, (size_t)1 << fo.bits);
	assert_int_equal(sx_text_nb_fit(nb, tr, ytr, ntr, 0.1), 0);
	for (size_t i = 0; i < nte; i++) {
		double p[2];
		assert_int_equal(sx_text_nb_predict_proba(nb, &te[i], p), 0);
		pred[i] = sx_text_argmax(p, 2);
	}
	double acc_nb = sx_metrics_accuracy(yte, pred, nte), f1_nb;
	assert_int_equal(sx_metrics_macro_f1(yte, pred, nte, 2, &f1_nb), 0);
	sx_text_nb_free(nb);
	for (size_t i = 0; i < ntr; i++)
		sx_text_sparse_close(&tr[i]);
	for (size_t i = 0; i < nte; i++)
		sx_text_sparse_close(&te[i]);

	fo.alternate_sign = 1;
	fo.char_min = LR_CHAR_MIN;
	fo.char_max = LR_CHAR_MAX;
	featurize(&c, &fo, tr, ytr, &ntr, te, yte, &nte);
	struct sx_text_tfidf *tf = sx_text_tfidf_new((size_t)1 << fo.bits);
	assert_int_equal(sx_text_tfidf_fit(tf, tr, ntr), 0);
	for (size_t i = 0; i < ntr; i++)
		assert_int_equal(sx_text_tfidf_transform(tf, &tr[i]), 0);
	for (size_t i = 0; i < nte; i++)
		assert_int_equal(sx_text_tfidf_transform(tf, &te[i]), 0);
	struct sx_text_lr_opts lo;
	sx_text_lr_opts_default(&lo);
	lo.seed = 42;
	struct sx_text_lr *lr = sx_text_lr_new(2, (size_t)1 << fo.bits);
	assert_int_equal(sx_text_lr_fit(lr, tr, ytr, ntr, &lo), 0);
	for (size_t i = 0; i < nte; i++) {
		double p[2];
		assert_int_equal(sx_text_lr_predict_proba(lr, &te[i], p), 0);
		pred[i] = sx_text_argmax(p, 2);
	}
	double acc_lr = sx_metrics_accuracy(yte, pred, nte), f1_lr;
	assert_int_equal(sx_metrics_macro_f1(yte, pred, nte, 2, &f1_lr), 0);
	print_message("sentiment: NB accuracy %.4f macro-F1 %.4f; LR accuracy %.4f macro-F1 %.4f\n",
		      acc_nb, f1_nb, acc_lr, f1_lr);
	assert_true(acc_nb >= NB_MIN_ACC);
	assert_true(acc_lr >= LR_MIN_ACC);

	sx_text_lr_free(lr);
	sx_text_tfidf_free(tf);
	for (size_t i = 0; i < ntr; i++)
		sx_text_sparse_close(&tr[i]);
	for (size_t i = 0; i < nte; i++)
		sx_text_sparse_close(&te[i]);
	free(tr), free(te), free(ytr), free(yte), free(pred);
	free_corpus(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokenizer), cmocka_unit_test(test_tokenizer_random_bytes),   cmocka_unit_test(test_hashing),
		cmocka_unit_test(test_tfidf_hand),  cmocka_unit_test(test_nb_hand),
		cmocka_unit_test(test_lr_small),    cmocka_unit_test(test_sentiment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
