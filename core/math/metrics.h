/* metrics.h — ranking and classification metrics.
 *
 * Ranking metrics score one user's ranked list rec[0..n_rec-1] (best first)
 * against that user's held-out set rel[0..n_rel-1], with binary relevance.
 * Only the first k entries of rec count; an id repeated in rec counts once
 * (at its first position). rel must be sorted ascending without duplicates
 * (it is binary-searched); if it is not, the result is NAN. Average over users
 * yourself: these return NAN when the held-out set is empty (recall, NDCG,
 * MAP) or k == 0 (all four), so that such users cannot be averaged in by
 * mistake.
 *
 * Classification metrics take labels 0/1 (uint8_t) with double scores or
 * probabilities; multi-class ones take int32 labels in [0, n_classes).
 * Errors are negative SX_E* codes (core/sx.h); the diagnostics slot is not used.
 */
#ifndef SX_MATH_METRICS_H
#define SX_MATH_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* hits in the top k / k. */
double sx_metrics_precision_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel,
				 size_t n_rel, size_t k);
/* hits in the top k / |rel|. */
double sx_metrics_recall_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			      size_t k);
/* DCG / ideal DCG, gains 1 / log2(rank + 1) with ranks from 1; the ideal list
 * puts min(k, |rel|) hits first. */
double sx_metrics_ndcg_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			    size_t k);
/* Average precision at k: sum over hit ranks r <= k of precision@r, divided
 * by min(k, |rel|). */
double sx_metrics_map_at_k(const int32_t *rec, size_t n_rec, const int32_t *rel, size_t n_rel,
			   size_t k);

/* Catalogue coverage: the share of n_items ids in [0, n_items) that appear in
 * the first k entries of at least one of n_lists lists, each list_len long,
 * stored back to back in lists. Ids outside the range are ignored.
 * Returns SX_EINVAL if n_items == 0, SX_ENOMEM. */
int sx_metrics_coverage(const int32_t *lists, size_t n_lists, size_t list_len, size_t k,
			size_t n_items, double *out);

/* Area under the ROC curve as the Mann-Whitney statistic: the probability that
 * a random positive scores above a random negative, ties counting one half
 * (equal to scikit-learn's roc_auc_score). Returns SX_EINVAL if a class is
 * absent, a label is not 0/1 or a score is NaN; SX_ENOMEM. */
int sx_metrics_auc(const double *score, const uint8_t *y, size_t n, double *out);

/* Mean of -(y log p + (1 - y) log(1 - p)), p clipped to [1e-15, 1 - 1e-15].
 * Returns SX_EINVAL if n == 0, a label is not 0/1 or p is NaN. */
int sx_metrics_log_loss(const double *p, const uint8_t *y, size_t n, double *out);

/* Mean of (p - y)^2. Returns SX_EINVAL as sx_metrics_log_loss. */
int sx_metrics_brier(const double *p, const uint8_t *y, size_t n, double *out);

/* Calibration table over n_bins equal-width bins of [0, 1]. Bin b holds
 * b/n < p <= (b+1)/n, the first one also p = 0 (scikit-learn's
 * calibration_curve, strategy "uniform"). For each bin: mean predicted
 * probability, observed rate of y = 1, and count; an empty bin has count 0 and
 * NAN means. Arrays have n_bins entries. Returns SX_EINVAL if n_bins == 0, a
 * label is not 0/1 or p is outside [0, 1]. */
int sx_metrics_calibration(const double *p, const uint8_t *y, size_t n, size_t n_bins,
			   double *mean_pred, double *observed, size_t *count);

/* Share of i with pred[i] == truth[i]. NAN if n == 0. */
double sx_metrics_accuracy(const int32_t *truth, const int32_t *pred, size_t n);

/* cm[t * n_classes + p] = number of rows with truth t predicted p (rows are
 * the truth, as scikit-learn's confusion_matrix). Returns SX_EINVAL if a label
 * is outside [0, n_classes). */
int sx_metrics_confusion(const int32_t *truth, const int32_t *pred, size_t n, int32_t n_classes,
			 uint64_t *cm);

/* Unweighted mean of per-class F1 over the classes present in truth or pred
 * (scikit-learn's f1_score(average="macro") with its default labels); a class
 * with no true positive has F1 0. Returns SX_EINVAL as sx_metrics_confusion or
 * if n == 0; SX_ENOMEM. */
int sx_metrics_macro_f1(const int32_t *truth, const int32_t *pred, size_t n, int32_t n_classes,
			double *out);

#endif
