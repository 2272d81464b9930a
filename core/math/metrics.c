#include "core/math/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

static int sorted_unique(const int32_t *a, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (a[i] <= a[i - 1])
			return 0;
	return 1;
}

static int contains(const int32_t *a, size_t n, int32_t v)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] < v)
			lo = mid + 1;
		else if (a[mid] > v)
			hi = mid;
		else
			return 1;
	}
	return 0;
}

/* Whether rec[i] is a relevant id not already seen earlier in rec. */
static int is_hit(const int32_t *rec, size_t i, const int32_t *rel, size_t n_rel)
{
	if (!contains(rel, n_rel, rec[i]))
		return 0;
	for (size_t j = 0; j < i; j++)
		if (rec[j] == rec[i])
			return 0;
	return 1;
}

static size_t hits_at(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel, size_t k)
{
	size_t h = 0, m = n_rec < k ? n_rec : k;
	for (size_t i = 0; i < m; i++)
		h += (size_t)is_hit(rec, i, rel, n_rel);
	return h;
}

double sx_metrics_precision_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel,
				 size_t n_rel, size_t k)
{
	if (k == 0 || !sorted_unique(rel, n_rel))
		return NAN;
	return (double)hits_at(rec, n_rec, rel, n_rel, k) / (double)k;
}

double sx_metrics_recall_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			      size_t k)
{
	if (k == 0 || n_rel == 0 || !sorted_unique(rel, n_rel))
		return NAN;
	return (double)hits_at(rec, n_rec, rel, n_rel, k) / (double)n_rel;
}

double sx_metrics_ndcg_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			    size_t k)
{
	if (k == 0 || n_rel == 0 || !sorted_unique(rel, n_rel))
		return NAN;
	double dcg = 0, idcg = 0;
	size_t m = n_rec < k ? n_rec : k;
	for (size_t i = 0; i < m; i++)
		if (is_hit(rec, i, rel, n_rel))
			dcg += 1.0 / log2((double)i + 2);
	size_t ideal = n_rel < k ? n_rel : k;
	for (size_t i = 0; i < ideal; i++)
		idcg += 1.0 / log2((double)i + 2);
	return dcg / idcg;
}

double sx_metrics_map_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			   size_t k)
{
	if (k == 0 || n_rel == 0 || !sorted_unique(rel, n_rel))
		return NAN;
	double sum = 0;
	size_t h = 0, m = n_rec < k ? n_rec : k;
	for (size_t i = 0; i < m; i++) {
		if (is_hit(rec, i, rel, n_rel)) {
			h++;
			sum += (double)h / (double)(i + 1);
		}
	}
	return sum / (double)(n_rel < k ? n_rel : k);
}

int sx_metrics_coverage(const int32_t *lists, size_t n_lists, size_t list_len, size_t k,
			size_t n_items, double *out)
{
	if (n_items == 0 || !out)
		return SX_EINVAL;
	uint8_t *seen = calloc(n_items, 1);
	if (!seen)
		return SX_ENOMEM;
	size_t m = list_len < k ? list_len : k, covered = 0;
	for (size_t l = 0; l < n_lists; l++) {
		for (size_t i = 0; i < m; i++) {
			int32_t v = lists[l * list_len + i];
			if (v >= 0 && (size_t)v < n_items && !seen[v]) {
				seen[v] = 1;
				covered++;
			}
		}
	}
	free(seen);
	*out = (double)covered / (double)n_items;
	return 0;
}

static int by_score(const void *a, const void *b, void *keys)
{
	const double *k = keys;
	double x = k[*(const size_t *)a], y = k[*(const size_t *)b];
	return (x > y) - (x < y);
}

int sx_metrics_auc(const double *score, const uint8_t *y, size_t n, double *out)
{
	if (!out || n == 0)
		return SX_EINVAL;
	size_t n1 = 0;
	for (size_t i = 0; i < n; i++) {
		if (y[i] > 1 || isnan(score[i]))
			return SX_EINVAL;
		n1 += y[i];
	}
	size_t n0 = n - n1;
	if (n1 == 0 || n0 == 0)
		return SX_EINVAL;
	size_t *ord = malloc(n * sizeof *ord);
	if (!ord)
		return SX_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ord[i] = i;
	qsort_r(ord, n, sizeof *ord, by_score, (void *)score);
	/* Sum of the (tie-averaged, 1-based) ranks of the positives. */
	double rank_sum = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		size_t pos = 0;
		while (j < n && score[ord[j]] == score[ord[i]]) {
			pos += y[ord[j]];
			j++;
		}
		rank_sum += (double)pos * ((double)(i + 1) + (double)j) / 2.0;
		i = j;
	}
	free(ord);
	double u = rank_sum - (double)n1 * ((double)n1 + 1) / 2.0;
	*out = u / ((double)n1 * (double)n0);
	return 0;
}

int sx_metrics_log_loss(const double *p, const uint8_t *y, size_t n, double *out)
{
	if (!out || n == 0)
		return SX_EINVAL;
	const double eps = 1e-15;
	double s = 0;
	for (size_t i = 0; i < n; i++) {
		if (y[i] > 1 || isnan(p[i]))
			return SX_EINVAL;
		double q = fmin(fmax(p[i], eps), 1 - eps);
		s -= y[i] ? log(q) : log1p(-q);
	}
	*out = s / (double)n;
	return 0;
}

int sx_metrics_brier(const double *p, const uint8_t *y, size_t n, double *out)
{
	if (!out || n == 0)
		return SX_EINVAL;
	double s = 0;
	for (size_t i = 0; i < n; i++) {
		if (y[i] > 1 || isnan(p[i]))
			return SX_EINVAL;
		double d = p[i] - y[i];
		s += d * d;
	}
	*out = s / (double)n;
	return 0;
}

int sx_metrics_calibration(const double *p, const uint8_t *y, size_t n, size_t n_bins,
			   double *mean_pred, double *observed, size_t *count)
{
	if (n_bins == 0 || !mean_pred || !observed || !count)
		return SX_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (y[i] > 1 || !(p[i] >= 0 && p[i] <= 1))
			return SX_EINVAL;
	for (size_t b = 0; b < n_bins; b++) {
		mean_pred[b] = 0;
		observed[b] = 0;
		count[b] = 0;
	}
	/* Edges as numpy's linspace makes them (j * (1 / n)), so that values on
	 * an edge fall where calibration_curve puts them. */
	const double step = 1.0 / (double)n_bins;
	for (size_t i = 0; i < n; i++) {
		size_t b = (size_t)(p[i] * (double)n_bins);
		if (b > n_bins - 1)
			b = n_bins - 1;
		while (b > 0 && (double)b * step >= p[i])
			b--;
		while (b + 1 < n_bins && (double)(b + 1) * step < p[i])
			b++;
		mean_pred[b] += p[i];
		observed[b] += y[i];
		count[b]++;
	}
	for (size_t b = 0; b < n_bins; b++) {
		if (count[b] == 0) {
			mean_pred[b] = NAN;
			observed[b] = NAN;
		} else {
			mean_pred[b] /= (double)count[b];
			observed[b] /= (double)count[b];
		}
	}
	return 0;
}

double sx_metrics_accuracy(const int32_t *truth, const int32_t *pred, size_t n)
{
	if (n == 0)
		return NAN;
	size_t ok = 0;
	for (size_t i = 0; i < n; i++)
		ok += truth[i] == pred[i];
	return (double)ok / (double)n;
}

static int check_labels(const int32_t *truth, const int32_t *pred, size_t n, int32_t n_classes)
{
	if (n_classes < 1)
		return SX_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (truth[i] < 0 || truth[i] >= n_classes || pred[i] < 0 || pred[i] >= n_classes)
			return SX_EINVAL;
	return 0;
}

int sx_metrics_confusion(const int32_t *truth, const int32_t *pred, size_t n, int32_t n_classes,
			 uint64_t *cm)
{
	int rc = check_labels(truth, pred, n, n_classes);
	if (rc)
		return rc;
	memset(cm, 0, (size_t)n_classes * (size_t)n_classes * sizeof *cm);
	for (size_t i = 0; i < n; i++)
		cm[(size_t)truth[i] * (size_t)n_classes + (size_t)pred[i]]++;
	return 0;
}

int sx_metrics_macro_f1(const int32_t *truth, const int32_t *pred, size_t n, int32_t n_classes,
			double *out)
{
	if (n == 0 || !out)
		return SX_EINVAL;
	int rc = check_labels(truth, pred, n, n_classes);
	if (rc)
		return rc;
	/* per class: true positives, predicted count, true count */
	uint64_t *c = calloc(3 * (size_t)n_classes, sizeof *c);
	if (!c)
		return SX_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		c[3 * (size_t)pred[i] + 1]++;
		c[3 * (size_t)truth[i] + 2]++;
		if (truth[i] == pred[i])
			c[3 * (size_t)truth[i]]++;
	}
	double sum = 0;
	size_t present = 0;
	for (int32_t k = 0; k < n_classes; k++) {
		uint64_t tp = c[3 * (size_t)k], np = c[3 * (size_t)k + 1], nt = c[3 * (size_t)k + 2];
		if (np == 0 && nt == 0)
			continue;
		present++;
		sum += 2.0 * (double)tp / (double)(np + nt);
	}
	free(c);
	*out = sum / (double)present;
	return 0;
}
