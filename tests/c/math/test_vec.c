#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/math/vec.h"
#include "core/sx.h"

static uint64_t rng = 12345;

static float frand(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static void test_known_values(void **state)
{
	(void)state;
	const float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
	assert_float_equal(sx_vec_dot(a, b, 3), 32.0f, 0.0f);
	assert_float_equal(sx_vec_l2sq(a, b, 3), 27.0f, 0.0f);
	assert_float_equal(sx_vec_norm(a, 3), sqrtf(14.0f), 1e-6f);
	assert_float_equal(sx_vec_cosine(a, b, 3), 32.0f / sqrtf(14.0f * 77.0f), 1e-6f);
	const float z[3] = {0, 0, 0};
	assert_float_equal(sx_vec_cosine(a, z, 3), 0.0f, 0.0f);
	assert_float_equal(sx_vec_dot(a, b, 0), 0.0f, 0.0f);
	assert_float_equal(sx_vec_l2sq(a, b, 0), 0.0f, 0.0f);
}

/* Every instruction-set variant agrees with a double-precision reference at
 * lengths that exercise each unrolled body and every tail. */
static void test_kernels_all_isas(void **state)
{
	(void)state;
	static const size_t dims[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 128, 130, 257, 1000};
	float *a = malloc(1000 * sizeof *a), *b = malloc(1000 * sizeof *b);
	int tested = 0;
	for (int isa = SX__VEC_SSE; isa <= SX__VEC_AVX512; isa++) {
		sx_vec_dist_fn l2 = sx__vec_kernel_isa(SX_METRIC_L2, isa);
		sx_vec_dist_fn ip = sx__vec_kernel_isa(SX_METRIC_IP, isa);
		if (!l2) {
			assert_null(ip);
			continue;
		}
		tested++;
		assert_ptr_equal(ip, sx__vec_kernel_isa(SX_METRIC_COSINE, isa));
		for (size_t t = 0; t < SX_ARRAY_SIZE(dims); t++) {
			size_t n = dims[t];
			double dot = 0, l2ref = 0, mag = 0;
			for (size_t i = 0; i < n; i++) {
				a[i] = frand();
				b[i] = frand();
				dot += (double)a[i] * b[i];
				l2ref += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
				mag += fabs((double)a[i] * b[i]);
			}
			assert_true(fabs(l2(a, b, n) - l2ref) <= 1e-5 * l2ref + 1e-6);
			assert_true(fabs((1.0 - ip(a, b, n)) - dot) <= 1e-5 * mag + 1e-6);
		}
	}
	assert_true(tested >= 1);
	assert_null(sx__vec_kernel_isa(SX_METRIC_L2, 7));
	assert_null(sx__vec_kernel_isa(99, SX__VEC_SSE));
	free(a);
	free(b);
}

/* The batch kernels of every instruction set give the scalar kernel's distance
 * (as a double-precision reference) for each row of a strided array, at
 * dimensions that are and are not multiples of 8 and 16, for any number of rows
 * (the groups of four and every remainder), and in the order of ids. */
static void test_batch_kernels(void **state)
{
	(void)state;
	static const size_t dims[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 63, 64, 65, 100, 130};
	enum { ROWS = 50 };
	size_t stride = 140 * sizeof(float) + 4; /* rows 4-byte aligned only */
	char *base = malloc(ROWS * stride);
	float q[130], out[ROWS + 1];
	uint32_t ids[ROWS];
	int tested = 0;
	for (int isa = SX__VEC_SSE; isa <= SX__VEC_AVX512; isa++) {
		sx_vec_dist_batch_fn l2 = sx__vec_batch_kernel_isa(SX_METRIC_L2, isa);
		sx_vec_dist_batch_fn ip = sx__vec_batch_kernel_isa(SX_METRIC_IP, isa);
		if (!l2) {
			assert_null(ip);
			assert_null(sx__vec_kernel_isa(SX_METRIC_L2, isa));
			continue;
		}
		tested++;
		assert_ptr_equal(ip, sx__vec_batch_kernel_isa(SX_METRIC_COSINE, isa));
		for (size_t t = 0; t < SX_ARRAY_SIZE(dims); t++) {
			size_t dim = dims[t];
			for (size_t i = 0; i < dim; i++)
				q[i] = frand();
			for (size_t r = 0; r < ROWS; r++) {
				float *v = (float *)(base + r * stride);
				for (size_t i = 0; i < 140; i++)
					v[i] = frand();
			}
			for (size_t n = 0; n <= ROWS; n += (n < 9 ? 1 : 7)) {
				for (size_t j = 0; j < n; j++)
					ids[j] = (uint32_t)((j * 17 + t) % ROWS);
				out[n] = 12345.0f;
				for (int m = 0; m < 2; m++) {
					(m ? ip : l2)(q, base, stride, ids, n, dim, out);
					assert_float_equal(out[n], 12345.0f, 0.0f); /* nothing past n */
					for (size_t j = 0; j < n; j++) {
						const float *v = (const float *)(base + (size_t)ids[j] * stride);
						double dot = 0, l2ref = 0, mag = 0;
						for (size_t i = 0; i < dim; i++) {
							dot += (double)q[i] * v[i];
							l2ref += ((double)q[i] - v[i]) * ((double)q[i] - v[i]);
							mag += fabs((double)q[i] * v[i]);
						}
						if (m)
							assert_true(fabs((1.0 - out[j]) - dot) <= 1e-5 * mag + 1e-6);
						else
							assert_true(fabs(out[j] - l2ref) <= 1e-5 * l2ref + 1e-6);
					}
				}
			}
		}
	}
	assert_true(tested >= 1);
	assert_null(sx__vec_batch_kernel_isa(SX_METRIC_L2, 7));
	assert_null(sx__vec_batch_kernel_isa(99, SX__VEC_SSE));
	assert_non_null(sx_vec_dist_batch_kernel(SX_METRIC_IP));
	assert_null(sx_vec_dist_batch_kernel(SX_METRIC_COUNT));
	free(base);
}

static void test_dispatch(void **state)
{
	(void)state;
	const char *isa = sx_vec_isa();
	assert_true(strcmp(isa, "sse") == 0 || strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0);
	assert_non_null(sx_vec_dist_kernel(SX_METRIC_L2));
	assert_non_null(sx_vec_dist_kernel(SX_METRIC_IP));
	assert_non_null(sx_vec_dist_kernel(SX_METRIC_COSINE));
	assert_null(sx_vec_dist_kernel(-1));
	assert_null(sx_vec_dist_kernel(SX_METRIC_COUNT));
	const float a[2] = {0.6f, 0.8f}, b[2] = {0.8f, 0.6f};
	assert_float_equal(sx_vec_dist_kernel(SX_METRIC_IP)(a, b, 2), 1.0f - 0.96f, 1e-6f);
	assert_float_equal(sx_vec_dist_kernel(SX_METRIC_L2)(a, b, 2), 0.08f, 1e-6f);
}

static void test_finite(void **state)
{
	(void)state;
	float v[5] = {1, -2, FLT_MAX, -FLT_MAX, FLT_MIN / 4};
	assert_true(sx_vec_finite(v, 5));
	assert_true(sx_vec_finite(v, 0));
	v[3] = NAN;
	assert_false(sx_vec_finite(v, 5));
	v[3] = INFINITY;
	assert_false(sx_vec_finite(v, 5));
	v[3] = -INFINITY;
	assert_false(sx_vec_finite(v, 5));
	assert_true(sx_vec_finite(v, 3));
}

static void test_normalize(void **state)
{
	(void)state;
	float v[4] = {3, 0, 4, 0};
	assert_int_equal(sx_vec_normalize(v, 4), 0);
	assert_float_equal(v[0], 0.6f, 1e-7f);
	assert_float_equal(v[2], 0.8f, 1e-7f);
	float big[2] = {FLT_MAX, FLT_MAX};
	assert_int_equal(sx_vec_normalize(big, 2), 0);
	assert_float_equal(big[0], sqrtf(0.5f), 1e-6f);
	float z[3] = {0, 0, 0};
	assert_int_equal(sx_vec_normalize(z, 3), SX_EINVAL);
	float bad[3] = {1, NAN, 2};
	assert_int_equal(sx_vec_normalize(bad, 3), SX_EINVAL);
	assert_float_equal(bad[0], 1.0f, 0.0f);
	assert_float_equal(bad[2], 2.0f, 0.0f);
	float tiny[2] = {FLT_MIN / 8, 0};
	assert_int_equal(sx_vec_normalize(tiny, 2), 0);
	assert_float_equal(tiny[0], 1.0f, 1e-6f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_values), cmocka_unit_test(test_kernels_all_isas),
		cmocka_unit_test(test_batch_kernels),
		cmocka_unit_test(test_dispatch),     cmocka_unit_test(test_finite),
		cmocka_unit_test(test_normalize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
