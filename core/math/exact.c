#include "core/math/exact.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/blas.h"
#include "core/math/vec.h"
#include "core/sx.h"

#define QBLOCK 64
#define NBLOCK 4096

struct cand {
	float d;
	uint32_t id;
};

static inline int worse(struct cand a, struct cand b) { return a.d > b.d || (a.d == b.d && a.id > b.id); }

/* Bounded max-heap: keeps the k best seen. */
static void offer(struct cand *hp, size_t *n, size_t k, struct cand x)
{
	size_t i;
	if (*n < k) {
		i = (*n)++;
		while (i > 0 && worse(x, hp[(i - 1) / 2])) {
			hp[i] = hp[(i - 1) / 2];
			i = (i - 1) / 2;
		}
		hp[i] = x;
		return;
	}
	if (!worse(hp[0], x))
		return;
	i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= k)
			break;
		if (c + 1 < k && worse(hp[c + 1], hp[c]))
			c++;
		if (!worse(hp[c], x))
			break;
		hp[i] = hp[c];
		i = c;
	}
	hp[i] = x;
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return worse(*x, *y) ? 1 : worse(*y, *x) ? -1 : 0;
}

int sx_exact_search(int metric, const float *base, size_t n, size_t dim, const float *queries, size_t nq,
		    size_t k, uint32_t *ids, float *dists)
{
	if (k == 0 || dim == 0 || (n && !base) || (nq && (!queries || !ids)) || metric < 0 ||
	    metric >= SX_METRIC_COUNT)
		return sx_diag_set(SX_EINVAL, "exact: bad arguments");
	if (n >= UINT32_MAX)
		return sx_diag_set(SX_E2BIG, "exact: more than 2^32 - 1 base rows");
	if (!sx_vec_finite(base, n * dim) || !sx_vec_finite(queries, nq * dim))
		return sx_diag_set(SX_EINVAL, "exact: NaN or infinite component");
	if (nq == 0)
		return 0;

	int rc = 0;
	size_t qb = nq < QBLOCK ? nq : QBLOCK;
	size_t nb = n < NBLOCK ? (n ? n : 1) : NBLOCK;
	float *bnorm = malloc((n ? n : 1) * sizeof(float)); /* |x|^2 for L2, 1/|x| for cosine */
	float *qn = malloc(qb * dim * sizeof(float));
	float *qsq = malloc(qb * sizeof(float));
	float *sc = malloc(qb * nb * sizeof(float));
	struct cand *heaps = malloc(qb * k * sizeof *heaps);
	size_t *hn = malloc(qb * sizeof *hn);
	if (!bnorm || !qn || !qsq || !sc || !heaps || !hn) {
		rc = sx_diag_set(SX_ENOMEM, "exact: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		float s = sx_vec_dot(base + i * dim, base + i * dim, dim);
		if (metric == SX_METRIC_COSINE) {
			if (!(s > 0.0f)) {
				rc = sx_diag_set(SX_EINVAL, "exact: zero base vector %zu under cosine", i);
				goto out;
			}
			s = 1.0f / sqrtf(s);
		}
		bnorm[i] = s;
	}

	for (size_t q0 = 0; q0 < nq; q0 += qb) {
		size_t m = nq - q0 < qb ? nq - q0 : qb;
		memcpy(qn, queries + q0 * dim, m * dim * sizeof(float));
		for (size_t i = 0; i < m; i++) {
			qsq[i] = sx_vec_dot(qn + i * dim, qn + i * dim, dim);
			if (metric == SX_METRIC_COSINE && sx_vec_normalize(qn + i * dim, dim) < 0) {
				rc = sx_diag_set(SX_EINVAL, "exact: zero query %zu under cosine", q0 + i);
				goto out;
			}
			hn[i] = 0;
		}
		for (size_t b0 = 0; b0 < n; b0 += nb) {
			size_t c = n - b0 < nb ? n - b0 : nb;
			if (m == 1)
				cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)c, (blasint)dim, 1.0f, base + b0 * dim,
					    (blasint)dim, qn, 1, 0.0f, sc, 1);
			else
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m, (blasint)c, (blasint)dim,
					    1.0f, qn, (blasint)dim, base + b0 * dim, (blasint)dim, 0.0f, sc, (blasint)c);
			for (size_t i = 0; i < m; i++) {
				const float *row = sc + i * c;
				struct cand *hp = heaps + i * k;
				for (size_t j = 0; j < c; j++) {
					float d;
					if (metric == SX_METRIC_L2)
						d = bnorm[b0 + j] - 2.0f * row[j] + qsq[i];
					else if (metric == SX_METRIC_IP)
						d = 1.0f - row[j];
					else
						d = 1.0f - row[j] * bnorm[b0 + j];
					offer(hp, &hn[i], k, (struct cand){d, (uint32_t)(b0 + j)});
				}
			}
		}
		for (size_t i = 0; i < m; i++) {
			struct cand *hp = heaps + i * k;
			qsort(hp, hn[i], sizeof *hp, cmp_cand);
			for (size_t j = 0; j < k; j++) {
				ids[(q0 + i) * k + j] = j < hn[i] ? hp[j].id : UINT32_MAX;
				if (dists)
					dists[(q0 + i) * k + j] = j < hn[i] ? hp[j].d : INFINITY;
			}
		}
	}
out:
	free(bnorm);
	free(qn);
	free(qsq);
	free(sc);
	free(heaps);
	free(hn);
	return rc;
}
