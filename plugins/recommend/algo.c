/* Pure maths of the recommendation plugin: decay, profiles, MMR. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/math/vec.h"
#include "core/sx.h"
#include "plugins/recommend/recommend.h"

double sx_rec_decay(double w, int64_t dt, double half_life)
{
	if (dt <= 0)
		return w;
	return w * exp2(-(double)dt / half_life);
}

void sx_rec_profile_add(float *sum, size_t dim, double *weight, int64_t *t, const float *vec, double w,
			int64_t at, double half_life)
{
	double f = 1.0;
	if (*t == INT64_MIN) {
		memset(sum, 0, dim * sizeof(float));
		*weight = 0;
		*t = at;
	} else if (at > *t) {
		double d = sx_rec_decay(1.0, at - *t, half_life);
		for (size_t i = 0; i < dim; i++)
			sum[i] = (float)(sum[i] * d);
		*weight *= d;
		*t = at;
	} else {
		f = sx_rec_decay(1.0, *t - at, half_life);
	}
	for (size_t i = 0; i < dim; i++)
		sum[i] += (float)(w * f * vec[i]);
	*weight += w * f;
}

int sx_rec_mmr(const double *rel, const float *vecs, size_t n, size_t dim, size_t k, double lambda,
	       uint32_t *out)
{
	if (!(lambda >= 0 && lambda <= 1))
		return SX_EINVAL;
	if (k > n)
		k = n;
	if (!k)
		return 0;
	float *unit = malloc(n * dim * sizeof(float) + 1);
	double *maxsim = malloc(n * sizeof(double) + 1);
	uint8_t *used = calloc(n + 1, 1);
	if (!unit || !maxsim || !used) {
		free(unit), free(maxsim), free(used);
		return SX_ENOMEM;
	}
	memcpy(unit, vecs, n * dim * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		/* rows without a vector stay zero: similarity 0 to everything */
		float *r = unit + i * dim;
		if (sx_vec_norm(r, dim) > 0)
			sx_vec_normalize(r, dim);
		maxsim[i] = 0;
	}
	size_t m = 0;
	for (; m < k; m++) {
		size_t best = n;
		double bv = -INFINITY;
		for (size_t i = 0; i < n; i++) {
			if (used[i])
				continue;
			double v = lambda * rel[i] - (1 - lambda) * maxsim[i];
			if (v > bv) {
				bv = v;
				best = i;
			}
		}
		if (best == n)
			break;
		used[best] = 1;
		out[m] = (uint32_t)best;
		const float *b = unit + best * dim;
		for (size_t i = 0; i < n; i++) {
			if (used[i])
				continue;
			double s = sx_vec_dot(unit + i * dim, b, dim);
			if (s > maxsim[i])
				maxsim[i] = s;
		}
	}
	free(unit), free(maxsim), free(used);
	return (int)m;
}
