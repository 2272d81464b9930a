/* exact.h — brute-force k-nearest-neighbour search, the reference for the ANN index.
 *
 * Scores come from OpenBLAS (sgemv for one query, sgemm over blocks of queries and
 * base rows), so distances are float32 with the usual rounding of the expansion
 * |x - q|^2 = |x|^2 - 2 x·q + |q|^2 (may be slightly negative for near-duplicates).
 * Metrics and distances are those of core/math/vec.h: squared L2, 1 - dot, 1 - cos
 * (cosine normalises base rows and queries on the fly; inputs are not modified).
 *
 * All pointers are borrowed for the call. Thread-safe; OpenBLAS may use its own
 * threads inside a call.
 */
#ifndef SX_MATH_EXACT_H
#define SX_MATH_EXACT_H

#include <stddef.h>
#include <stdint.h>

/* For each of the nq queries (row-major, nq x dim) finds the k nearest of the n
 * base rows (row-major, n x dim). Writes, per query, k row indexes into ids[q*k ..]
 * and k distances into dists[q*k ..] (dists may be NULL), nearest first, ties by
 * row index; when n < k the rest are UINT32_MAX and +INFINITY.
 * SX_EINVAL: k = 0, dim = 0, an unknown metric, a NaN/Inf anywhere, or a zero
 * vector under cosine; SX_E2BIG: n >= 2^32; SX_ENOMEM. */
int sx_exact_search(int metric, const float *base, size_t n, size_t dim, const float *queries, size_t nq,
		    size_t k, uint32_t *ids, float *dists);

#endif
