/* vec.h — float32 vector kernels: dot product, squared L2, cosine, normalisation.
 *
 * Every kernel exists in a plain SSE2/scalar form and, on x86-64, in AVX2+FMA and
 * AVX-512F forms; the widest one the CPU supports is picked at run time
 * (__builtin_cpu_supports), so one binary runs on any x86-64 machine. Results of
 * the different forms differ only by float rounding (summation order). The
 * environment variable SX_VEC_ISA=sse or =avx2, read once at the first call, caps
 * the choice (e.g. to compare, or to avoid AVX-512 clock throttling).
 *
 * Pointers are borrowed for the call; no alignment is required. n may be 0.
 * All functions are thread-safe (no state beyond the CPU feature probe).
 */
#ifndef SX_MATH_VEC_H
#define SX_MATH_VEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sx_metric {
	SX_METRIC_L2 = 0,     /* distance = squared Euclidean distance */
	SX_METRIC_IP = 1,     /* distance = 1 - a·b (inner product; smaller is closer) */
	SX_METRIC_COSINE = 2, /* distance = 1 - cos(a, b); vectors are normalised first */
	SX_METRIC_COUNT
};

/* A distance between two n-vectors, smaller is closer. For SX_METRIC_COSINE the
 * kernel is the inner-product one and assumes both inputs are already unit-norm. */
typedef float (*sx_vec_dist_fn)(const float *a, const float *b, size_t n);

float sx_vec_dot(const float *a, const float *b, size_t n);
float sx_vec_l2sq(const float *a, const float *b, size_t n);
float sx_vec_norm(const float *a, size_t n);

/* cos(a, b); 0 when either vector is all zeros. */
float sx_vec_cosine(const float *a, const float *b, size_t n);

/* Scales a to unit Euclidean norm in place. SX_EINVAL (a untouched) if a has a
 * zero norm or a non-finite component. */
int sx_vec_normalize(float *a, size_t n);

/* true if every component is finite (no NaN, no ±Inf). */
bool sx_vec_finite(const float *a, size_t n);

/* The distance kernel of a metric for this CPU, or NULL for an unknown metric.
 * Callers resolve it once (e.g. when an index is created) and keep the pointer. */
sx_vec_dist_fn sx_vec_dist_kernel(int metric);

/* Distances (as sx_vec_dist_fn for the metric) from q (dim floats) to n rows of
 * a strided array: row i is the dim floats at (const char *)base + ids[i] * stride;
 * written to out[0 .. n). Rows need 4-byte alignment only. One call for a whole
 * neighbour list amortises the horizontal sums and the indirect call. */
typedef void (*sx_vec_dist_batch_fn)(const float *q, const void *base, size_t stride, const uint32_t *ids,
				     size_t n, size_t dim, float *out);

/* The batch kernel of a metric for this CPU (the same instruction set as
 * sx_vec_dist_kernel), or NULL for an unknown metric. */
sx_vec_dist_batch_fn sx_vec_dist_batch_kernel(int metric);

/* Name of the instruction set the kernels above use: "avx512", "avx2" or "sse". */
const char *sx_vec_isa(void);

/* Internal, for tests and benchmarks: the kernel of a metric for an explicit
 * instruction set (0 = sse/scalar, 1 = avx2, 2 = avx512), or NULL when this CPU
 * lacks it. */
enum { SX__VEC_SSE = 0, SX__VEC_AVX2 = 1, SX__VEC_AVX512 = 2 };
sx_vec_dist_fn sx__vec_kernel_isa(int metric, int isa);
sx_vec_dist_batch_fn sx__vec_batch_kernel_isa(int metric, int isa);

#endif
