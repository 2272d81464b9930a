/* ets_lanes.h — the four-lane ETS recursion, included by ets.c once per
 * instruction set (SSE2 baseline, AVX2 when the CPU has it). Not a public
 * header: it defines static functions and has no include guard.
 *
 * Before including, ets.c defines
 *   LN_W       lanes per vector (2: 16-byte SSE2 vectors, 4: 32-byte AVX)
 *   LN_SFX     suffix of the functions defined here
 *   LN_TARGET  attributes of every function here (the target ISA)
 * and has struct lanes, struct kres, NL and SX_ETS_MAX_M in scope.
 * NL / LN_W groups of vectors run side by side (at most 2).
 *
 * The ISAs differ only in vector width: no FMA, no contraction, the same
 * operations in the same order, so both give the same bits.
 */

#define LN_CAT2(a, b) a##b
#define LN_CAT(a, b) LN_CAT2(a, b)
#define LN_G (NL / LN_W)
#define LN_VT LN_CAT(lnv_, LN_SFX)
#define LN_VLT LN_CAT(lnvl_, LN_SFX)
#define LN_VUT LN_CAT(lnvu_, LN_SFX)
#define LN_GROUP LN_CAT(lngroup_, LN_SFX)

_Static_assert(LN_G * LN_W == NL && LN_G <= 2, "ets_lanes.h steps one or two vector groups");

typedef double LN_VT __attribute__((vector_size(LN_W * sizeof(double))));
typedef long long LN_VLT __attribute__((vector_size(LN_W * sizeof(double))));
typedef unsigned long long LN_VUT __attribute__((vector_size(LN_W * sizeof(double))));

struct LN_GROUP {
	LN_VT alpha, beta, gamma, phi, l, b, sse_r, sse_e, mant;
	LN_VLT bad;
	LN_VUT expo;
};

LN_TARGET static inline __attribute__((always_inline)) LN_VT
LN_CAT(ln_load_, LN_SFX)(const double *p)
{
	LN_VT v;
	memcpy(&v, p, sizeof(v));
	return v;
}

LN_TARGET static inline __attribute__((always_inline)) LN_VT
LN_CAT(ln_sel_, LN_SFX)(LN_VLT mask, LN_VT a, LN_VT b)
{
	return (LN_VT)(((LN_VLT)a & mask) | ((LN_VLT)b & ~mask));
}

/* One observation for one group of lanes. s and is are this step's seasonal
 * state and its reciprocal (multiplicative season only). */
LN_TARGET static inline __attribute__((always_inline)) void
LN_CAT(ln_step_, LN_SFX)(struct LN_GROUP *P, LN_VT *s, LN_VT *is, double yv, int renorm,
			 int trend, int seas, int mulerr)
{
	LN_VT zero = {0}, one = zero + 1, yt = zero + yv;
	LN_VT B = trend ? P->phi * P->b : zero, L = P->l + B, S = *s, Y, r;
	if (seas == SX_ETS_MUL) {
		/* The level and trend chain carries only add, sub, mul: r/S =
		 * y/S - L with 1/S kept beside S (computed m steps earlier).
		 * The one division per step, for 1/L and the next 1/s, feeds
		 * only the seasonal state m steps later and e. */
		P->bad |= ~((S > 0) & (L > 0));
		LN_VT iS = *is, q = yt * iS - L;
		P->l = L + P->alpha * q;
		if (trend)
			P->b = B + P->beta * q;
		/* s = S + gamma r/L = S g/L with g = L + gamma q;
		 * R = 1/(L g): 1/L = g R, 1/g = L R */
		LN_VT g = L + P->gamma * q, R = one / (L * g), iL = g * R;
		*s = S * g * iL;
		*is = iS * L * (L * R);
		Y = L * S;
		r = q * S;
		if (mulerr) {
			LN_VT e = q * iL;
			P->sse_e += e * e;
		}
	} else {
		Y = L + S;
		r = (yt - S) - L;
		P->l = L + P->alpha * r;
		if (trend)
			P->b = B + P->beta * r;
		if (seas)
			*s = S + P->gamma * r;
		if (mulerr) {
			LN_VT e = r / Y;
			P->sse_e += e * e;
		}
	}
	P->sse_r += r * r;
	if (mulerr) {
		/* sum log yhat as the exponent and mantissa of the product: the
		 * exponent moves to expo every fourth step by bit operations
		 * (exact, no branch), one log per pass */
		P->bad |= ~(Y > 0);
		P->mant *= Y;
		if (renorm) {
			LN_VUT bits;
			/* four steps overflowed or underflowed: |y| beyond 1e76 */
			P->bad |= ~((P->mant <= 0x1.fffffffffffffp+1023) & (P->mant >= 0x1p-1022));
			memcpy(&bits, &P->mant, sizeof(bits));
			P->expo += (bits >> 52) & 0x7ff;
			bits = (bits & 0x800fffffffffffffULL) | 0x3ff0000000000000ULL;
			memcpy(&P->mant, &bits, sizeof(bits));
		}
	}
}

LN_TARGET static inline __attribute__((always_inline)) void
LN_CAT(ln_kernel_, LN_SFX)(const double *y, size_t n, int m, const struct lanes *in,
			   struct kres *kr, int trend, int seas, int mulerr)
{
	LN_VT zero = {0}, one = zero + 1;
	struct LN_GROUP P[LN_G];
	LN_VT ring[SX_ETS_MAX_M][LN_G], iring[SX_ETS_MAX_M][LN_G];
	long renorms = 0;
	for (int h = 0; h < LN_G; h++) {
		P[h] = (struct LN_GROUP){
			.alpha = LN_CAT(ln_load_, LN_SFX)(in->alpha + LN_W * h),
			.beta = LN_CAT(ln_load_, LN_SFX)(in->beta + LN_W * h),
			.gamma = LN_CAT(ln_load_, LN_SFX)(in->gamma + LN_W * h),
			.phi = LN_CAT(ln_load_, LN_SFX)(in->phi + LN_W * h),
			.l = LN_CAT(ln_load_, LN_SFX)(in->l0 + LN_W * h),
			.b = trend ? LN_CAT(ln_load_, LN_SFX)(in->b0 + LN_W * h) : zero,
			.mant = one,
		};
		for (int j = 0; j < m; j++) {
			ring[j][h] = seas ? LN_CAT(ln_load_, LN_SFX)(in->s0[j] + LN_W * h) : zero;
			if (seas == SX_ETS_MUL)
				iring[j][h] = one / ring[j][h];
		}
	}
	int j = 0;
	for (size_t t = 0; t < n; t++) {
		int renorm = mulerr && ((t & 3) == 3 || t + 1 == n);
		renorms += renorm;
		LN_CAT(ln_step_, LN_SFX)(&P[0], &ring[j][0], &iring[j][0], y[t], renorm, trend,
					 seas, mulerr);
		if (LN_G > 1)
			LN_CAT(ln_step_, LN_SFX)(&P[LN_G - 1], &ring[j][LN_G - 1],
						 &iring[j][LN_G - 1], y[t], renorm, trend, seas,
						 mulerr);
		if (++j == m)
			j = 0;
		if ((seas == SX_ETS_MUL || mulerr) && (t & 7) == 7) {
			/* an inadmissible lane's states run to NaN, infinities and
			 * subnormals (slow): stop when every lane is out, else reset
			 * the lost lanes to harmless values */
			LN_VLT all = P[0].bad & P[LN_G - 1].bad, any = P[0].bad | P[LN_G - 1].bad;
			int alln = 1, anyn = 0;
			for (int k = 0; k < LN_W; k++)
				alln &= all[k] != 0, anyn |= any[k] != 0;
			if (alln)
				break;
			if (anyn) {
				for (int h = 0; h < LN_G; h++) {
					LN_VLT bad = P[h].bad;
					P[h].l = LN_CAT(ln_sel_, LN_SFX)(bad, one, P[h].l);
					P[h].b = LN_CAT(ln_sel_, LN_SFX)(bad, zero, P[h].b);
					for (int i = 0; i < m; i++) {
						ring[i][h] = LN_CAT(ln_sel_, LN_SFX)(bad, one, ring[i][h]);
						if (seas == SX_ETS_MUL)
							iring[i][h] =
								LN_CAT(ln_sel_, LN_SFX)(bad, one, iring[i][h]);
					}
				}
			}
		}
	}
	for (int k = 0; k < NL; k++) {
		const struct LN_GROUP *p = &P[k / LN_W];
		int i = k % LN_W;
		int bk = p->bad[i] != 0 || !isfinite(p->sse_r[i]) || !isfinite(p->l[i]) ||
			 !isfinite(p->b[i]);
		kr[k].sse_r = p->sse_r[i];
		kr[k].sse_e = p->sse_e[i];
		kr[k].slog = mulerr && !bk ? log(p->mant[i]) +
						 ((double)(long long)p->expo[i] - 1023.0 * (double)renorms) *
							 M_LN2
					   : 0;
		kr[k].bad = bk;
	}
}

#define LN_CASE(tr, se, me)                                                                        \
	if (trend == tr && seas == se && mulerr == me) {                                           \
		LN_CAT(ln_kernel_, LN_SFX)(y, n, m, P, kr, tr, se, me);                            \
		return;                                                                            \
	}

LN_TARGET static void LN_CAT(kernel_lanes_, LN_SFX)(const double *y, size_t n, int m, int trend,
						    int seas, int mulerr, const struct lanes *P,
						    struct kres *kr)
{
	LN_CASE(0, 0, 0) LN_CASE(0, 0, 1) LN_CASE(0, 1, 0) LN_CASE(0, 1, 1) LN_CASE(0, 2, 0)
	LN_CASE(0, 2, 1) LN_CASE(1, 0, 0) LN_CASE(1, 0, 1) LN_CASE(1, 1, 0) LN_CASE(1, 1, 1)
	LN_CASE(1, 2, 0) LN_CASE(1, 2, 1)
}

#undef LN_CASE
#undef LN_GROUP
#undef LN_VUT
#undef LN_VLT
#undef LN_VT
#undef LN_G
#undef LN_CAT
#undef LN_CAT2
