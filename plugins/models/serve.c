/* Scoring with text and behaviour models (any thread while the model is
 * referenced). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/behaviour.h"
#include "core/math/text.h"
#include "core/sx.h"
#include "plugins/models/internal.h"

int sx__text_predict(const struct sx_model *m, const char *s, size_t n, double *proba)
{
	struct sx_text_sparse v;
	if (m->type != SX_MODEL_TEXT)
		return sx_diag_set(SX_EINVAL, "model '%s' is not a text model", m->name);
	int rc = sx_text_features(&m->fo, s, n, &v);
	if (rc < 0)
		return rc;
	if (m->tfidf && (rc = sx_text_tfidf_transform(m->tfidf, &v)) < 0) {
		sx_text_sparse_close(&v);
		return rc;
	}
	rc = m->algorithm == SX_TEXT_NB ? sx_text_nb_predict_proba(m->nb, &v, proba)
					: sx_text_lr_predict_proba(m->tlr, &v, proba);
	sx_text_sparse_close(&v);
	return rc;
}

int sx__behaviour_next(const struct sx_model *m, const int32_t *names, size_t n, double *out)
{
	if (m->type != SX_MODEL_BEHAVIOUR)
		return sx_diag_set(SX_EINVAL, "model '%s' is not a behaviour model", m->name);
	size_t take = n < (size_t)m->order ? n : (size_t)m->order;
	return sx_markov_predict(m->markov, names + (n - take), take, m->smoothing, m->decay, out);
}

int sx__behaviour_items(const struct sx_model *m, const int32_t *items, size_t n, size_t k, int32_t *out,
			double *scores)
{
	if (m->type != SX_MODEL_BEHAVIOUR)
		return sx_diag_set(SX_EINVAL, "model '%s' is not a behaviour model", m->name);
	size_t take = n < (size_t)m->recent_items ? n : (size_t)m->recent_items;
	double *rw = malloc((take ? take : 1) * sizeof(double));
	if (!rw)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	double w = 1;
	for (size_t i = take; i-- > 0; w *= m->item_decay)
		rw[i] = w;
	/* Everything recent is excluded, not just the part that scores. */
	int got = sx_covisit_recommend(m->covisit, items + (n - take), rw, take, items, n, k, out, scores);
	free(rw);
	return got;
}
