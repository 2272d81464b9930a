/* text.h — text classification: tokenizer, hashed n-gram features, TF-IDF,
 * multinomial naive Bayes and softmax logistic regression over sparse vectors.
 *
 * Tokenizer rule. Input is UTF-8. A byte sequence that is not valid UTF-8
 * (stray continuation byte, truncated sequence, overlong form, surrogate,
 * code point above U+10FFFF) is a separator, one byte at a time. A code point
 * is a word character if it is ASCII [0-9A-Za-z], or it is >= U+00C0 except
 *   U+00D7, U+00F7                (multiplication and division signs)
 *   U+2000-U+2BFF                 (general punctuation, symbols, arrows,
 *                                  maths operators, box drawing, dingbats)
 *   U+3000-U+303F                 (CJK punctuation)
 *   U+FE00-U+FE0F, U+FEFF         (variation selectors, BOM)
 *   U+FF00-U+FF0F                 (full-width punctuation)
 *   U+1F000-U+1FAFF               (emoji and pictographs)
 *   U+E0000-U+E007F               (tag characters)
 * Everything else (ASCII punctuation and controls, U+0080-U+00BF) separates.
 * So an emoji separates; a CJK ideograph, a Greek or Cyrillic letter is a
 * word character (no segmentation inside runs of ideographs). Lower-casing
 * covers ASCII A-Z and U+00C0-U+00DE (not U+00D7) -> +0x20; other scripts keep
 * their case. Tokens are re-encoded as valid UTF-8.
 *
 * Features. A document becomes a sparse vector in a space of 2^bits buckets:
 * every word n-gram (n = 1..word_ngrams, tokens joined by byte 0x01) and every
 * character n-gram (n = char_min..char_max code points) of each token padded
 * as "<token>" is hashed with sx_text_hash; the low `bits` bits choose the
 * bucket, and with alternate_sign the top bit chooses +1 or -1 (so collisions
 * cancel in expectation). Word and char n-grams are hashed in separate
 * namespaces (a leading byte 'w' or 'c'). Values are counts (signed).
 *
 * Errors: functions return 0 or a negative SX_E* code (core/sx.h) with a
 * message in sx_diag_set(); SX_EINVAL for bad arguments, SX_ENOMEM.
 */
#ifndef SX_MATH_TEXT_H
#define SX_MATH_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* ---- hashing ---- */

/* Plain 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3). */
uint64_t sx_text_fnv1a64(const void *p, size_t n);

/* FNV-1a started from basis ^ seed, then passed through the splitmix64
 * finaliser so that low bits are usable as bucket numbers. Stable across
 * platforms and releases: models store buckets computed with it. */
uint64_t sx_text_hash(const void *p, size_t n, uint64_t seed);

/* ---- tokenizer ---- */

/* Tokens of one string. buf holds them NUL-terminated back to back; token i
 * is buf + off[i], len[i] bytes. Owned by the struct: release with
 * sx_text_tokens_close(). */
struct sx_text_tokens {
	char *buf;
	size_t *off;
	size_t *len;
	size_t n;
};

/* Tokenize s[0..n-1] (need not be NUL-terminated; NUL bytes separate).
 * On success *out owns fresh memory (n may be 0). On error *out is zeroed.
 * SX_EINVAL if s is NULL with n > 0 or out is NULL; SX_ENOMEM. */
int sx_text_tokenize(const char *s, size_t n, struct sx_text_tokens *out);
void sx_text_tokens_close(struct sx_text_tokens *t);

/* ---- sparse vectors ---- */

/* Entries sorted by idx ascending, no duplicates, no zero values. Owned by
 * the struct; release with sx_text_sparse_close(). */
struct sx_text_sparse {
	uint32_t *idx;
	double *val;
	size_t n;
};

void sx_text_sparse_close(struct sx_text_sparse *v);

struct sx_text_feat_opts {
	int bits;          /* 1..24; dimension 2^bits. Default 18. */
	int word_ngrams;   /* 0..5; 0 means no word features. Default 2. */
	int char_min;      /* char n-grams char_min..char_max code points; */
	int char_max;      /* 0 = none, else 1 <= min <= max <= 8. Default 0, 0. */
	int alternate_sign;/* default 1; naive Bayes needs 0 (non-negative counts) */
	uint64_t seed;     /* hash seed, default 0 */
};

void sx_text_feat_opts_default(struct sx_text_feat_opts *o);

/* Hashed features of s[0..n-1] into *out (fresh memory; zeroed on error).
 * opts NULL means the defaults. SX_EINVAL on bad opts, SX_ENOMEM. */
int sx_text_features(const struct sx_text_feat_opts *opts, const char *s, size_t n,
		     struct sx_text_sparse *out);

/* ---- TF-IDF ---- */

struct sx_text_tfidf;

/* A transform over dim buckets (dim >= 1; 2^bits of the features). NULL on
 * dim == 0 or out of memory. */
struct sx_text_tfidf *sx_text_tfidf_new(size_t dim);
void sx_text_tfidf_free(struct sx_text_tfidf *t);

/* Document frequencies from n documents: df[j] = documents with a nonzero in
 * bucket j; idf[j] = ln((1 + n) / (1 + df[j])) + 1 (scikit-learn's smooth_idf,
 * sublinear_tf off). Replaces an earlier fit. SX_EINVAL if n == 0 or an index
 * is >= dim. */
int sx_text_tfidf_fit(struct sx_text_tfidf *t, const struct sx_text_sparse *docs, size_t n);

/* idf of bucket j (NAN before fit or if j >= dim). */
double sx_text_tfidf_idf(const struct sx_text_tfidf *t, size_t j);

/* In place: val[k] *= idf[idx[k]], then divide by the l2 norm (a zero vector
 * stays zero). SX_ESTATE before fit, SX_EINVAL if an index is >= dim. */
int sx_text_tfidf_transform(const struct sx_text_tfidf *t, struct sx_text_sparse *v);

/* Saving and restoring a fitted transform. The idf vector (dim values,
 * borrowed, valid until the next fit or set) or NULL before fit. set copies
 * idf[0..dim) (each finite and > 0) and marks t fitted; SX_EINVAL otherwise
 * (t unchanged). */
const double *sx_text_tfidf_idf_vec(const struct sx_text_tfidf *t);
int sx_text_tfidf_set(struct sx_text_tfidf *t, const double *idf);

/* ---- multinomial naive Bayes ---- */

struct sx_text_nb;

/* NULL if n_classes < 2, dim == 0 or out of memory. Memory: n_classes * dim
 * doubles. */
struct sx_text_nb *sx_text_nb_new(int32_t n_classes, size_t dim);
void sx_text_nb_free(struct sx_text_nb *m);

/* Fit from scratch: prior_c = n_c / n (a class absent from y gets prior 0 and
 * is never predicted); P(j | c) = (N_cj + alpha) / (N_c + alpha * dim), N_cj
 * the sum of feature j over class c. SX_EINVAL if n == 0, alpha <= 0 or not
 * finite, a label outside [0, n_classes), a negative or non-finite value, or
 * an index >= dim. On error the model is unchanged. */
int sx_text_nb_fit(struct sx_text_nb *m, const struct sx_text_sparse *X, const int32_t *y,
		   size_t n, double alpha);

/* proba[0..n_classes-1] = P(c | x). SX_ESTATE before fit, SX_EINVAL as fit. */
int sx_text_nb_predict_proba(const struct sx_text_nb *m, const struct sx_text_sparse *x,
			     double *proba);

/* Saving and restoring a fitted model (borrowed views, NULL before fit):
 * log_prior[k] (-INFINITY for a class absent from training) and log_prob
 * (k * dim, class c's row at c * dim). set copies both and marks m fitted;
 * SX_EINVAL (m unchanged) if a log_prob value is not finite, a log_prior is
 * NAN or +inf, or every class has prior -INFINITY. */
const double *sx_text_nb_log_prior(const struct sx_text_nb *m);
const double *sx_text_nb_log_prob(const struct sx_text_nb *m);
int sx_text_nb_set(struct sx_text_nb *m, const double *log_prior, const double *log_prob);

/* ---- softmax logistic regression ---- */

struct sx_text_lr_opts {
	double lr;      /* Adagrad step, > 0. Default 0.5. */
	double l2;      /* >= 0, per-example penalty (l2/2)|W|^2. Default 1e-4. */
	int epochs;     /* >= 1. Default 10. */
	size_t batch;   /* >= 1. Default 16. */
	uint64_t seed;  /* shuffling; same seed, same data -> same model. */
};

void sx_text_lr_opts_default(struct sx_text_lr_opts *o);

struct sx_text_lr;

/* NULL if n_classes < 2, dim == 0 or out of memory. Binary problems are the
 * n_classes == 2 case of the softmax. Memory: 3 * n_classes * (dim + 1)
 * doubles. */
struct sx_text_lr *sx_text_lr_new(int32_t n_classes, size_t dim);
void sx_text_lr_free(struct sx_text_lr *m);

/* Fit from zero by mini-batch Adagrad on the mean cross-entropy of each batch
 * plus l2/2 |W|^2 (bias not penalised). The penalty is applied lazily, only to
 * the features present in a batch, as usual for sparse SGD. The row order of
 * every epoch is a Fisher-Yates shuffle from opts->seed, so the result is
 * bit-for-bit reproducible. opts NULL means the defaults. SX_EINVAL (n == 0,
 * bad opts, a label outside [0, n_classes), non-finite value, index >= dim),
 * SX_ENOMEM. */
int sx_text_lr_fit(struct sx_text_lr *m, const struct sx_text_sparse *X, const int32_t *y,
		   size_t n, const struct sx_text_lr_opts *opts);

/* proba[0..n_classes-1] = softmax(W x + b). SX_ESTATE before fit. */
int sx_text_lr_predict_proba(const struct sx_text_lr *m, const struct sx_text_sparse *x,
			     double *proba);

/* Saving and restoring a fitted model: the weights ((dim + 1) * k values; row
 * j, k values, is feature j's, row dim the biases), borrowed, NULL before
 * fit. set copies them (all finite, else SX_EINVAL and m unchanged) and
 * marks m fitted; the Adagrad state is not part of a model. */
const double *sx_text_lr_weights(const struct sx_text_lr *m);
int sx_text_lr_set(struct sx_text_lr *m, const double *w);

/* argmax of proba (lowest class on ties). */
int32_t sx_text_argmax(const double *proba, int32_t n_classes);

#endif
