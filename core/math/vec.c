#include "core/math/vec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

#if defined(__x86_64__) || defined(__i386__)
#define SX_VEC_X86 1
#include <immintrin.h>
#endif

/* Several independent accumulators keep the FP add latency off the critical path;
 * the scalar tails handle any n. */

#ifdef SX_VEC_X86
static inline float hsum128(__m128 v)
{
	__m128 sh = _mm_movehl_ps(v, v);
	v = _mm_add_ps(v, sh);
	sh = _mm_shuffle_ps(v, v, 0x55);
	v = _mm_add_ss(v, sh);
	return _mm_cvtss_f32(v);
}

static float dot_sse(const float *a, const float *b, size_t n)
{
	__m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps();
	__m128 s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
		s1 = _mm_add_ps(s1, _mm_mul_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
		s2 = _mm_add_ps(s2, _mm_mul_ps(_mm_loadu_ps(a + i + 8), _mm_loadu_ps(b + i + 8)));
		s3 = _mm_add_ps(s3, _mm_mul_ps(_mm_loadu_ps(a + i + 12), _mm_loadu_ps(b + i + 12)));
	}
	for (; i + 4 <= n; i += 4)
		s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
	float r = hsum128(_mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
}

static float l2_sse(const float *a, const float *b, size_t n)
{
	__m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps();
	__m128 s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m128 d0 = _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i));
		__m128 d1 = _mm_sub_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4));
		__m128 d2 = _mm_sub_ps(_mm_loadu_ps(a + i + 8), _mm_loadu_ps(b + i + 8));
		__m128 d3 = _mm_sub_ps(_mm_loadu_ps(a + i + 12), _mm_loadu_ps(b + i + 12));
		s0 = _mm_add_ps(s0, _mm_mul_ps(d0, d0));
		s1 = _mm_add_ps(s1, _mm_mul_ps(d1, d1));
		s2 = _mm_add_ps(s2, _mm_mul_ps(d2, d2));
		s3 = _mm_add_ps(s3, _mm_mul_ps(d3, d3));
	}
	for (; i + 4 <= n; i += 4) {
		__m128 d = _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i));
		s0 = _mm_add_ps(s0, _mm_mul_ps(d, d));
	}
	float r = hsum128(_mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)));
	for (; i < n; i++) {
		float d = a[i] - b[i];
		r += d * d;
	}
	return r;
}

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
	return hsum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
}

__attribute__((target("avx2,fma"))) static float l2_avx2(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		__m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
		__m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
		__m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	for (; i + 8 <= n; i += 8) {
		__m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		s0 = _mm256_fmadd_ps(d, d, s0);
	}
	float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
	for (; i < n; i++) {
		float d = a[i] - b[i];
		r += d * d;
	}
	return r;
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
	if (i < n) {
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1);
		s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) static float l2_avx512(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		__m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
	}
	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		s0 = _mm512_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
		s1 = _mm512_fmadd_ps(d, d, s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static float ipd_sse(const float *a, const float *b, size_t n) { return 1.0f - dot_sse(a, b, n); }
__attribute__((target("avx2,fma"))) static float ipd_avx2(const float *a, const float *b, size_t n)
{
	return 1.0f - dot_avx2(a, b, n);
}
__attribute__((target("avx512f"))) static float ipd_avx512(const float *a, const float *b, size_t n)
{
	return 1.0f - dot_avx512(a, b, n);
}

/* ---- batch kernels: one query against n rows of a strided block array ----
 *
 * Each row gets one accumulator; groups of four rows are reduced together
 * (halving the vector width twice, then two rounds of hadd), which costs about
 * a third of four separate horizontal sums and no call per row. */

static void ipb_sse(const float *q, const void *base, size_t stride, const uint32_t *ids, size_t n, size_t dim,
		    float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = 1.0f - dot_sse(q, (const float *)((const char *)base + (size_t)ids[i] * stride), dim);
}

static void l2b_sse(const float *q, const void *base, size_t stride, const uint32_t *ids, size_t n, size_t dim,
		    float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = l2_sse(q, (const float *)((const char *)base + (size_t)ids[i] * stride), dim);
}

__attribute__((target("avx2,fma"))) static inline __m128 reduce4_256(__m256 a, __m256 b, __m256 c, __m256 d)
{
	__m128 x0 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	__m128 x1 = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
	__m128 x2 = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
	__m128 x3 = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
	return _mm_hadd_ps(_mm_hadd_ps(x0, x1), _mm_hadd_ps(x2, x3));
}

static const int32_t tail_mask8[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* AVX2 row accumulator: sum over dim of q*v (l2 = 0) or (q-v)^2 (l2 = 1). */
__attribute__((target("avx2,fma"))) static inline __m256 acc_avx2(const float *q, const float *v, size_t dim,
								   __m256i tail, int l2)
{
	__m256 s = _mm256_setzero_ps();
	size_t c = 0;
	for (; c + 8 <= dim; c += 8) {
		__m256 a = _mm256_loadu_ps(q + c), b = _mm256_loadu_ps(v + c);
		if (l2) {
			__m256 d = _mm256_sub_ps(a, b);
			s = _mm256_fmadd_ps(d, d, s);
		} else {
			s = _mm256_fmadd_ps(a, b, s);
		}
	}
	if (c < dim) {
		__m256 a = _mm256_maskload_ps(q + c, tail), b = _mm256_maskload_ps(v + c, tail);
		if (l2) {
			__m256 d = _mm256_sub_ps(a, b);
			s = _mm256_fmadd_ps(d, d, s);
		} else {
			s = _mm256_fmadd_ps(a, b, s);
		}
	}
	return s;
}

__attribute__((target("avx2,fma"))) static inline void batch_avx2(const float *q, const void *base, size_t stride,
								   const uint32_t *ids, size_t n, size_t dim,
								   float *out, int l2)
{
	const char *b = base;
	__m256i tail = _mm256_loadu_si256((const __m256i *)(tail_mask8 + 8 - (dim & 7)));
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		__m256 a0 = acc_avx2(q, (const float *)(b + (size_t)ids[i] * stride), dim, tail, l2);
		__m256 a1 = acc_avx2(q, (const float *)(b + (size_t)ids[i + 1] * stride), dim, tail, l2);
		__m256 a2 = acc_avx2(q, (const float *)(b + (size_t)ids[i + 2] * stride), dim, tail, l2);
		__m256 a3 = acc_avx2(q, (const float *)(b + (size_t)ids[i + 3] * stride), dim, tail, l2);
		__m128 r = reduce4_256(a0, a1, a2, a3);
		if (!l2)
			r = _mm_sub_ps(_mm_set1_ps(1.0f), r);
		_mm_storeu_ps(out + i, r);
	}
	if (i < n) {
		__m256 z = _mm256_setzero_ps();
		__m256 a0 = acc_avx2(q, (const float *)(b + (size_t)ids[i] * stride), dim, tail, l2);
		__m256 a1 = i + 1 < n ? acc_avx2(q, (const float *)(b + (size_t)ids[i + 1] * stride), dim, tail, l2) : z;
		__m256 a2 = i + 2 < n ? acc_avx2(q, (const float *)(b + (size_t)ids[i + 2] * stride), dim, tail, l2) : z;
		float r[4];
		__m128 x = reduce4_256(a0, a1, a2, z);
		if (!l2)
			x = _mm_sub_ps(_mm_set1_ps(1.0f), x);
		_mm_storeu_ps(r, x);
		for (size_t j = 0; i + j < n; j++)
			out[i + j] = r[j];
	}
}

__attribute__((target("avx2,fma"))) static void ipb_avx2(const float *q, const void *base, size_t stride,
							  const uint32_t *ids, size_t n, size_t dim, float *out)
{
	batch_avx2(q, base, stride, ids, n, dim, out, 0);
}

__attribute__((target("avx2,fma"))) static void l2b_avx2(const float *q, const void *base, size_t stride,
							  const uint32_t *ids, size_t n, size_t dim, float *out)
{
	batch_avx2(q, base, stride, ids, n, dim, out, 1);
}

__attribute__((target("avx512f"))) static inline __m512 acc_avx512(const float *q, const float *v, size_t dim,
								    __mmask16 tail, int l2)
{
	__m512 s = _mm512_setzero_ps();
	size_t c = 0;
	for (; c + 16 <= dim; c += 16) {
		__m512 a = _mm512_loadu_ps(q + c), b = _mm512_loadu_ps(v + c);
		if (l2) {
			__m512 d = _mm512_sub_ps(a, b);
			s = _mm512_fmadd_ps(d, d, s);
		} else {
			s = _mm512_fmadd_ps(a, b, s);
		}
	}
	if (c < dim) {
		__m512 a = _mm512_maskz_loadu_ps(tail, q + c), b = _mm512_maskz_loadu_ps(tail, v + c);
		if (l2) {
			__m512 d = _mm512_sub_ps(a, b);
			s = _mm512_fmadd_ps(d, d, s);
		} else {
			s = _mm512_fmadd_ps(a, b, s);
		}
	}
	return s;
}

__attribute__((target("avx512f"))) static inline __m256 half512(__m512 a)
{
	return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

__attribute__((target("avx512f"))) static inline __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d)
{
	__m256 y0 = half512(a), y1 = half512(b), y2 = half512(c), y3 = half512(d);
	__m128 x0 = _mm_add_ps(_mm256_castps256_ps128(y0), _mm256_extractf128_ps(y0, 1));
	__m128 x1 = _mm_add_ps(_mm256_castps256_ps128(y1), _mm256_extractf128_ps(y1, 1));
	__m128 x2 = _mm_add_ps(_mm256_castps256_ps128(y2), _mm256_extractf128_ps(y2, 1));
	__m128 x3 = _mm_add_ps(_mm256_castps256_ps128(y3), _mm256_extractf128_ps(y3, 1));
	return _mm_hadd_ps(_mm_hadd_ps(x0, x1), _mm_hadd_ps(x2, x3));
}

__attribute__((target("avx512f"))) static inline void batch_avx512(const float *q, const void *base, size_t stride,
								    const uint32_t *ids, size_t n, size_t dim,
								    float *out, int l2)
{
	const char *b = base;
	__mmask16 tail = (__mmask16)((1u << (dim & 15)) - 1);
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		__m512 a0 = acc_avx512(q, (const float *)(b + (size_t)ids[i] * stride), dim, tail, l2);
		__m512 a1 = acc_avx512(q, (const float *)(b + (size_t)ids[i + 1] * stride), dim, tail, l2);
		__m512 a2 = acc_avx512(q, (const float *)(b + (size_t)ids[i + 2] * stride), dim, tail, l2);
		__m512 a3 = acc_avx512(q, (const float *)(b + (size_t)ids[i + 3] * stride), dim, tail, l2);
		__m128 r = reduce4_512(a0, a1, a2, a3);
		if (!l2)
			r = _mm_sub_ps(_mm_set1_ps(1.0f), r);
		_mm_storeu_ps(out + i, r);
	}
	if (i < n) {
		__m512 z = _mm512_setzero_ps();
		__m512 a0 = acc_avx512(q, (const float *)(b + (size_t)ids[i] * stride), dim, tail, l2);
		__m512 a1 = i + 1 < n ? acc_avx512(q, (const float *)(b + (size_t)ids[i + 1] * stride), dim, tail, l2) : z;
		__m512 a2 = i + 2 < n ? acc_avx512(q, (const float *)(b + (size_t)ids[i + 2] * stride), dim, tail, l2) : z;
		float r[4];
		__m128 x = reduce4_512(a0, a1, a2, z);
		if (!l2)
			x = _mm_sub_ps(_mm_set1_ps(1.0f), x);
		_mm_storeu_ps(r, x);
		for (size_t j = 0; i + j < n; j++)
			out[i + j] = r[j];
	}
}

/* The common dimensions get bodies with the length known at compile time:
 * the inner loop disappears. */
#define BATCH512(name, l2)                                                                                             \
	__attribute__((target("avx512f"))) static void name(const float *q, const void *base, size_t stride,      \
							      const uint32_t *ids, size_t n, size_t dim, float *out) \
	{                                                                                                              \
		switch (dim) {                                                                                         \
		case 16:                                                                                               \
			batch_avx512(q, base, stride, ids, n, 16, out, l2);                                            \
			break;                                                                                         \
		case 32:                                                                                               \
			batch_avx512(q, base, stride, ids, n, 32, out, l2);                                            \
			break;                                                                                         \
		case 64:                                                                                               \
			batch_avx512(q, base, stride, ids, n, 64, out, l2);                                            \
			break;                                                                                         \
		default:                                                                                               \
			batch_avx512(q, base, stride, ids, n, dim, out, l2);                                           \
		}                                                                                                      \
	}
BATCH512(ipb_avx512, 0)
BATCH512(l2b_avx512, 1)
#undef BATCH512

static int hw_isa(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return SX__VEC_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return SX__VEC_AVX2;
	return SX__VEC_SSE;
}

static int isa_cached = -1;

static int best_isa(void)
{
	int v = __atomic_load_n(&isa_cached, __ATOMIC_RELAXED);
	if (v >= 0)
		return v;
	v = hw_isa();
	const char *cap = getenv("SX_VEC_ISA");
	if (cap && strcmp(cap, "sse") == 0)
		v = SX__VEC_SSE;
	else if (cap && strcmp(cap, "avx2") == 0 && v > SX__VEC_AVX2)
		v = SX__VEC_AVX2;
	__atomic_store_n(&isa_cached, v, __ATOMIC_RELAXED);
	return v;
}

static const struct {
	sx_vec_dist_fn dot, l2, ipd;
	sx_vec_dist_batch_fn l2b, ipb;
} kernels[] = {
	[SX__VEC_SSE] = {dot_sse, l2_sse, ipd_sse, l2b_sse, ipb_sse},
	[SX__VEC_AVX2] = {dot_avx2, l2_avx2, ipd_avx2, l2b_avx2, ipb_avx2},
	[SX__VEC_AVX512] = {dot_avx512, l2_avx512, ipd_avx512, l2b_avx512, ipb_avx512},
};

#else /* not x86 */

static float dot_plain(const float *a, const float *b, size_t n)
{
	float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		s0 += a[i] * b[i];
		s1 += a[i + 1] * b[i + 1];
		s2 += a[i + 2] * b[i + 2];
		s3 += a[i + 3] * b[i + 3];
	}
	for (; i < n; i++)
		s0 += a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

static float l2_plain(const float *a, const float *b, size_t n)
{
	float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
		float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
		s0 += d0 * d0;
		s1 += d1 * d1;
		s2 += d2 * d2;
		s3 += d3 * d3;
	}
	for (; i < n; i++) {
		float d = a[i] - b[i];
		s0 += d * d;
	}
	return (s0 + s1) + (s2 + s3);
}

static float ipd_plain(const float *a, const float *b, size_t n) { return 1.0f - dot_plain(a, b, n); }

static void ipb_plain(const float *q, const void *base, size_t stride, const uint32_t *ids, size_t n, size_t dim,
		      float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = 1.0f - dot_plain(q, (const float *)((const char *)base + (size_t)ids[i] * stride), dim);
}

static void l2b_plain(const float *q, const void *base, size_t stride, const uint32_t *ids, size_t n, size_t dim,
		      float *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = l2_plain(q, (const float *)((const char *)base + (size_t)ids[i] * stride), dim);
}

static int hw_isa(void) { return SX__VEC_SSE; }
static int best_isa(void) { return SX__VEC_SSE; }

static const struct {
	sx_vec_dist_fn dot, l2, ipd;
	sx_vec_dist_batch_fn l2b, ipb;
} kernels[] = {
	[SX__VEC_SSE] = {dot_plain, l2_plain, ipd_plain, l2b_plain, ipb_plain},
};
#endif

sx_vec_dist_fn sx__vec_kernel_isa(int metric, int isa)
{
	if (isa < 0 || isa > hw_isa() || (size_t)isa >= SX_ARRAY_SIZE(kernels))
		return NULL;
	switch (metric) {
	case SX_METRIC_L2:
		return kernels[isa].l2;
	case SX_METRIC_IP:
	case SX_METRIC_COSINE:
		return kernels[isa].ipd;
	default:
		return NULL;
	}
}

sx_vec_dist_fn sx_vec_dist_kernel(int metric) { return sx__vec_kernel_isa(metric, best_isa()); }

sx_vec_dist_batch_fn sx__vec_batch_kernel_isa(int metric, int isa)
{
	if (isa < 0 || isa > hw_isa() || (size_t)isa >= SX_ARRAY_SIZE(kernels))
		return NULL;
	switch (metric) {
	case SX_METRIC_L2:
		return kernels[isa].l2b;
	case SX_METRIC_IP:
	case SX_METRIC_COSINE:
		return kernels[isa].ipb;
	default:
		return NULL;
	}
}

sx_vec_dist_batch_fn sx_vec_dist_batch_kernel(int metric) { return sx__vec_batch_kernel_isa(metric, best_isa()); }

const char *sx_vec_isa(void)
{
	static const char *const names[] = {"sse", "avx2", "avx512"};
	return names[best_isa()];
}

float sx_vec_dot(const float *a, const float *b, size_t n) { return kernels[best_isa()].dot(a, b, n); }

float sx_vec_l2sq(const float *a, const float *b, size_t n) { return kernels[best_isa()].l2(a, b, n); }

float sx_vec_norm(const float *a, size_t n) { return sqrtf(sx_vec_dot(a, a, n)); }

float sx_vec_cosine(const float *a, const float *b, size_t n)
{
	float na = sx_vec_norm(a, n), nb = sx_vec_norm(b, n);
	if (na == 0.0f || nb == 0.0f)
		return 0.0f;
	return sx_vec_dot(a, b, n) / (na * nb);
}

bool sx_vec_finite(const float *a, size_t n)
{
	/* Exponent bits all ones <=> NaN or Inf; a bit test vectorises, isfinite() may not. */
	uint32_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		__builtin_memcpy(&u, a + i, 4);
		bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
	}
	return bad == 0;
}

int sx_vec_normalize(float *a, size_t n)
{
	if (!sx_vec_finite(a, n))
		return sx_diag_set(SX_EINVAL, "vector has a NaN or infinite component");
	/* Sum in double: float overflows for components near FLT_MAX^(1/2). */
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * a[i];
	if (!(s > 0.0) || !isfinite(s))
		return sx_diag_set(SX_EINVAL, "vector has zero norm");
	double inv = 1.0 / sqrt(s);
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(a[i] * inv);
	return 0;
}
