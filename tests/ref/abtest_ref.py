#!/usr/bin/python3
"""Reference figures for tests/c/math/test_stats.c and test_abtest.c.

    /usr/bin/python3 tests/ref/abtest_ref.py stats   > tables for test_stats.c
    /usr/bin/python3 tests/ref/abtest_ref.py abtest  > tables for test_abtest.c

Each prints C initialisers that are pasted between the GENERATED markers of
the test file. SciPy 1.10 / statsmodels 0.13 (Debian 12) give the figures.
For the distributions each point also carries its 50-digit mpmath value (the
series are summed here where mpmath's own routines fail to converge), and a
point is kept only where SciPy agrees with mpmath to 1e-9 relative (1e-7 for
SciPy's t quantile, which cdflib stops at ~1e-8): the C code is held to
mpmath tightly and to SciPy at SciPy's own precision. REF_VERBOSE=1 lists the
points left out on stderr.

Figures with no SciPy/statsmodels routine (mSPRT mixture likelihood ratio,
Bayesian probabilities and expected losses, the normal-posterior losses) are
computed here by numerical integration (scipy.integrate.quad) of their
defining integrals, not by the closed forms the C code uses.
"""
import csv
import math
import os
import sys

import mpmath
import numpy as np
from scipy import integrate, special, stats
from statsmodels.stats import multitest, proportion, weightstats
from statsmodels.stats.power import normal_sample_size_one_tail

mpmath.mp.dps = 50
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "data",
                    "resume_names_callback_experiment.csv")


def f(v):
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    v = float(v)
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    if math.isnan(v):
        return "NAN"
    return "%.17g" % v


def cval(v):
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(cval(x) for x in v) + "}"
    return f(v)


def table(name, ctype, rows):
    print("static const %s %s[] = {" % (ctype, name))
    for r in rows:
        print("\t" + cval(r) + ",")
    print("};")


def drop(what, *info):
    if os.environ.get("REF_VERBOSE"):
        print("dropped", what, *info, file=sys.stderr)


def close(a, b, rel=1e-13):
    a, b = float(a), float(b)
    if b == 0:
        return abs(a) < 1e-300
    return abs(a - b) <= rel * abs(b)


# ---------------------------------------------------------------- stats

def mp_norm_cdf(x):
    return mpmath.ncdf(x)


def _cheaper_side(a, b, x, y):
    """True when the series for I_x(a, b) needs fewer terms than the one for
    I_y(b, a); both are stepped in lockstep, so the cost is the smaller one."""
    if x == 0 or y == 0:
        return x == 0
    lx = ly = 0.0
    n = 0
    while True:
        rx = x * (a + b + n) / (a + 1 + n)
        ry = y * (a + b + n) / (b + 1 + n)
        lx += math.log(rx)
        ly += math.log(ry)
        n += 1
        if lx < -140 and rx < 0.999:
            return True
        if ly < -140 and ry < 0.999:
            return False


def _mp_ibeta_series(a, b, x):
    # I_x(a, b) = x^a (1-x)^b / (a B(a, b)) 2F1(a + b, 1; a + 1; x), summed
    # term by term: every term is positive, so nothing cancels.
    if x == 0:
        return mpmath.mpf(0)
    front = mpmath.exp(a * mpmath.log(x) + b * mpmath.log1p(-x) - mpmath.log(a) -
                       mpmath.log(mpmath.beta(a, b)))
    term, total, n = mpmath.mpf(1), mpmath.mpf(1), 0
    while True:
        term *= x * (a + b + n) / (a + 1 + n)
        total += term
        n += 1
        if term < total * mpmath.mpf(10) ** -55 and x * (a + b + n) / (a + 1 + n) < 0.999:
            return front * total


def mp_ibeta(a, b, x):
    """I_x(a, b) in 50 digits, summed on whichever side converges sooner."""
    a, b, x = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(x)
    y = 1 - x
    if _cheaper_side(float(a), float(b), float(x), float(y)):
        return _mp_ibeta_series(a, b, x)
    v = 1 - _mp_ibeta_series(b, a, y)
    if v > mpmath.mpf(10) ** -35:
        return v
    # The complement cancelled to nothing: sum the slower direct series when
    # it ends in reasonable time, else give up (the point is left out).
    if 140 / -math.log(float(x)) > 30000:
        return mpmath.mpf("nan")
    return _mp_ibeta_series(a, b, x)


def mp_t_cdf(t, df):
    t, df = mpmath.mpf(t), mpmath.mpf(df)
    x = df / (df + t * t)
    tail = mp_ibeta(df / 2, mpmath.mpf(1) / 2, x) / 2
    return tail if t < 0 else 1 - tail


def mp_t_sf(t, df):
    return mp_t_cdf(-t, df)


def mp_gamma_pq(a, x):
    """P(a, x), Q(a, x) in 50 digits: the positive series for P where it
    converges fast, mpmath's upper gamma otherwise."""
    a, x = mpmath.mpf(a), mpmath.mpf(x)
    if x < a + 1:
        term = total = 1 / a
        n = 0
        while term > total * mpmath.mpf(10) ** -55:
            n += 1
            term *= x / (a + n)
            total += term
        p = total * mpmath.exp(a * mpmath.log(x) - x - mpmath.loggamma(a))
        return p, 1 - p
    q = mpmath.gammainc(a, x, mpmath.inf, regularized=True)
    return 1 - q, q


def mp_t_pdf(t, df):
    t, df = mpmath.mpf(t), mpmath.mpf(df)
    return mpmath.exp(mpmath.loggamma((df + 1) / 2) - mpmath.loggamma(df / 2)
                      - mpmath.log(df * mpmath.pi) / 2 - (df + 1) / 2 * mpmath.log1p(t * t / df))


def mp_polish(cdf, pdf, p, q):
    """One 50-digit Newton step on the log of the nearer tail from SciPy's
    quantile q: from a start good to 1e-12 it lands within ~1e-24."""
    p, q = mpmath.mpf(p), mpmath.mpf(q)
    if p == 0.5:
        return mpmath.mpf(0)
    if p < 0.5:
        c = cdf(q)
        return q - (mpmath.log(c) - mpmath.log(p)) * c / pdf(q)
    s = 1 - cdf(q)
    return q + (mpmath.log(s) - mpmath.log(1 - p)) * s / pdf(q)


def keep(what, info, pairs, rel=1e-9):
    """Keep a point when SciPy agrees with mpmath to rel on every (scipy, mp)
    pair and nothing underflows; the C test then holds each figure to mpmath
    at 1e-12 and to SciPy at rel."""
    for sp, mp in pairs:
        if not (abs(float(sp)) > 1e-300 or float(sp) == 0 == float(mp)) or not close(sp, mp, rel):
            drop(what, *info, float(sp), float(mp))
            return False
    return True


def emit_stats():
    print("/* Columns: the argument(s), then SciPy's value and the 50-digit mpmath value")
    print("   of each figure. Points where SciPy is off by more than 1e-9 are left out. */")
    xs = [-38, -37, -30, -20, -10, -5, -3, -1.96, -1, -0.5, -1e-3, 0, 1e-3, 0.5, 1,
          1.6448536269514722, 2, 3, 5, 8, 10, 20, 37]
    rows = []
    for x in xs:
        c, s = stats.norm.cdf(x), stats.norm.sf(x)
        mc, ms = mp_norm_cdf(x), mp_norm_cdf(-x)
        if keep("norm", (x,), [(c, mc), (s, ms)]):
            rows.append((x, c, mc, s, ms, stats.norm.pdf(x)))
    table("norm_ref", "struct ref_norm", rows)

    ps = [1e-300, 1e-200, 1e-100, 1e-50, 1e-20, 1e-12, 1e-6, 1e-3, 0.025, 0.05, 0.1, 0.3,
          0.49, 0.4999, 0.5, 0.5001, 0.51, 0.7, 0.9, 0.95, 0.975, 0.999, 1 - 1e-6, 1 - 1e-12]
    rows = []
    for p in ps:
        q = stats.norm.ppf(p)
        exact = mp_polish(mpmath.ncdf, mpmath.npdf, p, q)
        if keep("normppf", (p,), [(q, exact)]):
            rows.append((p, q, exact, stats.norm.isf(p)))
    table("norm_ppf_ref", "struct ref_ppf", rows)

    dfs = [0.5, 1, 1.5, 2, 3, 4.5, 5, 10, 29.3, 100, 1000, 1e4, 1e5, 1e6]
    ts = [-1e6, -200, -50, -10, -4, -2, -1, -0.1, -1e-4, 0, 1e-4, 0.1, 1, 2, 4, 10, 50, 200]
    rows = []
    for df in dfs:
        for t in ts:
            c, s = stats.t.cdf(t, df), stats.t.sf(t, df)
            mc, ms = mp_t_cdf(t, df), mp_t_sf(t, df)
            if keep("t", (t, df), [(c, mc), (s, ms)]):
                rows.append((t, df, c, mc, s, ms, stats.t.pdf(t, df)))
    table("t_ref", "struct ref_t", rows)

    ps = [1e-300, 1e-100, 1e-20, 1e-12, 1e-6, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4,
          0.45, 0.55, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.999, 1 - 1e-6]
    rows = []
    for df in [1, 2, 2.5, 3, 5, 7.7, 10, 30, 100, 1e3, 1e5]:
        for p in ps:
            q = stats.t.ppf(p, df)
            if not np.isfinite(q):
                drop("tppf", p, df, q)
                continue
            exact = mp_polish(lambda z: mp_t_cdf(z, df), lambda z: mp_t_pdf(z, df), p, q)
            # SciPy 1.10's stdtrit (cdflib) stops at ~1e-8: held to 1e-7 here.
            if keep("tppf", (p, df), [(q, exact)], rel=1e-7):
                rows.append((p, df, q, exact))
    table("t_ppf_ref", "struct ref_tppf", rows)

    rows = []
    for k in [1, 2, 3, 4.5, 10, 50, 100, 1000, 1e4, 1e5]:
        for m in [1e-6, 0.01, 0.3, 0.8, 1, 1.2, 2, 5, 10, 30]:
            x = k * m
            if k < 10 and m >= 10:
                x = k * m * 10
            c, s = stats.chi2.cdf(x, k), stats.chi2.sf(x, k)
            mc, ms = mp_gamma_pq(mpmath.mpf(k) / 2, mpmath.mpf(x) / 2)
            if keep("chi2", (x, k), [(c, mc), (s, ms)]):
                rows.append((x, k, c, mc, s, ms))
    table("chi2_ref", "struct ref_chi2", rows)

    rows = []
    for a in [0.1, 0.5, 1, 2.5, 10, 37.2, 300, 5e3, 2e5]:
        for b in [0.3, 1, 4, 55.5, 1000, 1e5]:
            mean = a / (a + b)
            sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
            for x in sorted({1e-8, 1e-3, 0.2, 0.5, 0.9, 1 - 1e-6,
                             min(max(mean - 3 * sd, 1e-12), 1 - 1e-12), min(mean, 1 - 1e-12),
                             min(mean + 5 * sd, 1 - 1e-12)}):
                i = special.betainc(a, b, x)
                mi = mp_ibeta(a, b, x)
                # SciPy 1.10 has no betaincc, and 1 - betainc cancels: the
                # complement is held to mpmath only.
                mic = 1 - mi if mi < 0.5 else mp_ibeta(b, a, 1 - mpmath.mpf(x))
                if not float(mic) > 1e-300 or not float(mi) >= 0:
                    drop("ibetac", a, b, x)
                    continue
                if keep("ibeta", (a, b, x), [(i, mi)]):
                    rows.append((a, b, x, i, mi, mic, special.betaln(a, b),
                                 mpmath.log(mpmath.beta(a, b))))
    table("ibeta_ref", "struct ref_ibeta", rows)

    rows = []
    for a in [0.2, 1, 3.5, 10, 100, 2500, 1e6]:
        for m in [1e-3, 0.5, 0.9, 1, 1.1, 2, 4]:
            x = a * m
            p, q = special.gammainc(a, x), special.gammaincc(a, x)
            mp, mq = mp_gamma_pq(a, x)
            if keep("gamma", (a, x), [(p, mp), (q, mq)]):
                rows.append((a, x, p, mp, q, mq))
    table("gamma_ref", "struct ref_gamma", rows)


# ---------------------------------------------------------------- A/B tests

def prop_case(na, xa, nb, xb, alpha, alt):
    """Pooled z for the test, unpooled Wald CI for the difference, delta
    method CI for the relative lift (b/a - 1)."""
    sm_alt = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}[alt]
    z, p = proportion.proportions_ztest([xb, xa], [nb, na], alternative=sm_alt)
    pa, pb = xa / na, xb / nb
    va, vb = pa * (1 - pa) / na, pb * (1 - pb) / nb
    se = math.sqrt(va + vb)
    if alt == "two-sided":
        lo, hi = proportion.confint_proportions_2indep(xb, nb, xa, na, method="wald",
                                                       compare="diff", alpha=alpha)
        zq = stats.norm.isf(alpha / 2)
    else:
        lo2, hi2 = proportion.confint_proportions_2indep(xb, nb, xa, na, method="wald",
                                                         compare="diff", alpha=2 * alpha)
        lo, hi = (lo2, math.inf) if alt == "greater" else (-math.inf, hi2)
        zq = stats.norm.isf(alpha)
    rel = pb / pa - 1
    se_rel = math.sqrt(vb / pa ** 2 + pb ** 2 * va / pa ** 4)
    rlo, rhi = rel - zq * se_rel, rel + zq * se_rel
    if alt == "greater":
        rhi = math.inf
    if alt == "less":
        rlo = -math.inf
    return (na, xa, nb, xb, alpha, {"two-sided": 0, "greater": 1, "less": -1}[alt],
            pa, pb, pb - pa, rel, z, p, se, lo, hi, rlo, rhi)


def welch_case(na, ma, va, nb, mb, vb, alpha, alt):
    t, p = stats.ttest_ind_from_stats(mb, math.sqrt(vb), nb, ma, math.sqrt(va), na,
                                      equal_var=False, alternative=alt)
    sa, sb = va / na, vb / nb
    se = math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa ** 2 / (na - 1) + sb ** 2 / (nb - 1))
    d = mb - ma
    tq = stats.t.isf(alpha / 2 if alt == "two-sided" else alpha, df)
    lo, hi = d - tq * se, d + tq * se
    rel = mb / ma - 1
    se_rel = math.sqrt(sb / ma ** 2 + mb ** 2 * sa / ma ** 4)
    rlo, rhi = rel - tq * se_rel, rel + tq * se_rel
    if alt == "greater":
        hi = rhi = math.inf
    if alt == "less":
        lo = rlo = -math.inf
    return (na, ma, va, nb, mb, vb, alpha, {"two-sided": 0, "greater": 1, "less": -1}[alt],
            d, rel, t, df, p, se, lo, hi, rlo, rhi)


def welch_ci_statsmodels(b, a, alpha=0.05):
    """SciPy 1.10 has no ttest_ind CI: statsmodels' CompareMeans gives it."""
    cm = weightstats.CompareMeans(weightstats.DescrStatsW(b), weightstats.DescrStatsW(a))
    return cm.tconfint_diff(alpha=alpha, usevar="unequal")


def welch_raw_check():
    """The summary formula against scipy on raw data, including its CI."""
    rng = np.random.default_rng(7)
    a = rng.normal(10, 3, 57)
    b = rng.normal(11, 5, 83)
    r = stats.ttest_ind(b, a, equal_var=False)
    lo, hi = welch_ci_statsmodels(b, a)
    return (len(a), a.mean(), a.var(ddof=1), len(b), b.mean(), b.var(ddof=1),
            r.statistic, r.pvalue, lo, hi)


def read_resume():
    counts = {}
    with open(DATA, newline="") as fh:
        for row in csv.DictReader(fh):
            n, x = counts.get(row["ethnicity"], (0, 0))
            counts[row["ethnicity"]] = (n + 1, x + (row["call"] == "yes"))
    return counts


def mixture_lambda(d, v, tau2, theta0):
    """Lambda = int N(d; th, v) / N(d; theta0, v) dN(th; theta0, tau2), by quad."""
    sd = math.sqrt(v)

    def integrand(th):
        return math.exp(stats.norm.logpdf(d, th, sd) - stats.norm.logpdf(d, theta0, sd)
                        + stats.norm.logpdf(th, theta0, math.sqrt(tau2)))
    centre = (d * tau2 + theta0 * v) / (tau2 + v)
    width = math.sqrt(tau2 * v / (tau2 + v))
    val, _ = integrate.quad(integrand, centre - 40 * width, centre + 40 * width,
                            epsabs=0, epsrel=1e-13, limit=400, points=[centre])
    return val


def msprt_cases():
    """A stream of cumulative summaries; reference p_n = min(p_{n-1}, 1/Lambda_n)
    with Lambda by quad, and the CI as the running intersection of
    {theta0 : Lambda_n(theta0) < 1/alpha}, each bound found by brentq on the
    quad-integrated Lambda."""
    from scipy.optimize import brentq
    tau2, alpha = 0.01, 0.05
    rng = np.random.default_rng(11)
    a = rng.normal(1.0, 1.0, 4000)
    b = rng.normal(1.08, 1.2, 4000)
    rows = []
    p = 1.0
    lo, hi = -math.inf, math.inf
    for n in [50, 100, 200, 400, 800, 1600, 2400, 3200, 4000]:
        xa, xb = a[:n], b[:n]
        d = xb.mean() - xa.mean()
        v = xa.var(ddof=1) / n + xb.var(ddof=1) / n
        lam = mixture_lambda(d, v, tau2, 0.0)
        p = min(p, 1 / lam)

        def g(th):
            return math.log(mixture_lambda(d, v, tau2, th)) - math.log(1 / alpha)
        r = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
        clo = brentq(g, d - 2 * r, d, xtol=1e-15, rtol=1e-14)
        chi = brentq(g, d, d + 2 * r, xtol=1e-15, rtol=1e-14)
        lo, hi = max(lo, clo), min(hi, chi)
        rows.append((n, xa.mean(), xa.var(ddof=1), n, xb.mean(), xb.var(ddof=1), lam, p, lo, hi))
    return tau2, alpha, rows


def msprt_prop_cases():
    tau2, alpha = 0.0004, 0.05
    rng = np.random.default_rng(5)
    a = rng.random(20000) < 0.10
    b = rng.random(20000) < 0.115
    rows = []
    p = 1.0
    for n in [500, 1000, 2000, 5000, 10000, 20000]:
        xa, xb = a[:n].sum(), b[:n].sum()
        pa, pb = xa / n, xb / n
        v = pa * (1 - pa) / n + pb * (1 - pb) / n
        lam = mixture_lambda(pb - pa, v, tau2, 0.0)
        p = min(p, 1 / lam)
        rows.append((n, xa, n, xb, lam, p))
    return tau2, alpha, rows


def beta_prob_greater(a1, b1, a2, b2):
    """P(X2 > X1), X_i ~ Beta(a_i, b_i), by quad over the density of X1."""
    m = a1 / (a1 + b1)
    sd = math.sqrt(a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1)))
    lo, hi = max(0.0, m - 40 * sd), min(1.0, m + 40 * sd)
    val, _ = integrate.quad(lambda x: stats.beta.pdf(x, a1, b1) * stats.beta.sf(x, a2, b2),
                            lo, hi, epsabs=1e-14, epsrel=1e-12, limit=500, points=[m])
    return val


def beta_loss(a_keep, b_keep, a_other, b_other):
    """E[max(X_other - X_keep, 0)] by quad: the integral over the density of
    X_keep = y of E[(X_other - y)+] = m_o S_{o+1}(y) - y S_o(y)."""
    m_o = a_other / (a_other + b_other)
    m = a_keep / (a_keep + b_keep)
    sd = math.sqrt(a_keep * b_keep / ((a_keep + b_keep) ** 2 * (a_keep + b_keep + 1)))
    lo, hi = max(0.0, m - 40 * sd), min(1.0, m + 40 * sd)

    def inner(y):
        return (m_o * stats.beta.sf(y, a_other + 1, b_other) - y * stats.beta.sf(y, a_other, b_other))
    val, _ = integrate.quad(lambda y: stats.beta.pdf(y, a_keep, b_keep) * inner(y), lo, hi,
                            epsabs=1e-15, epsrel=1e-12, limit=500, points=[m])
    return val


def beta_prob_best(ab):
    out = []
    for i, (ai, bi) in enumerate(ab):
        m = ai / (ai + bi)
        sd = math.sqrt(ai * bi / ((ai + bi) ** 2 * (ai + bi + 1)))
        lo, hi = max(0.0, m - 40 * sd), min(1.0, m + 40 * sd)

        def integrand(x):
            v = stats.beta.pdf(x, ai, bi)
            for j, (aj, bj) in enumerate(ab):
                if j != i:
                    v *= stats.beta.cdf(x, aj, bj)
            return v
        val, _ = integrate.quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=500,
                                points=[m])
        out.append(val)
    return out


def normal_post(na, ma, va, nb, mb, vb):
    """P(B > A) and E[(A - B)+], E[(B - A)+] for the posteriors
    N(mean, var / n), by quad on the density of D = B - A."""
    mu, s = mb - ma, math.sqrt(va / na + vb / nb)
    pdf = lambda d: stats.norm.pdf(d, mu, s)
    lo, hi = mu - 40 * s, mu + 40 * s
    pb = integrate.quad(pdf, 0, hi, epsabs=1e-15, epsrel=1e-13, limit=400)[0] if hi > 0 else 0.0
    loss_b = integrate.quad(lambda d: -d * pdf(d), lo, 0, epsabs=1e-15, epsrel=1e-13,
                            limit=400)[0] if lo < 0 else 0.0
    loss_a = integrate.quad(lambda d: d * pdf(d), 0, hi, epsabs=1e-15, epsrel=1e-13,
                            limit=400)[0] if hi > 0 else 0.0
    return pb, loss_b, loss_a


def beta_expected_max(ab):
    """E[max_j X_j] = int x sum_i f_i(x) prod_{j != i} F_j(x) dx, by quad."""
    lo = min(max(0.0, a / (a + b) - 40 * math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))))
             for a, b in ab)
    hi = max(min(1.0, a / (a + b) + 40 * math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))))
             for a, b in ab)

    def dens(x):
        tot = 0.0
        for i, (ai, bi) in enumerate(ab):
            v = stats.beta.pdf(x, ai, bi)
            for j, (aj, bj) in enumerate(ab):
                if j != i:
                    v *= stats.beta.cdf(x, aj, bj)
            tot += v
        return x * tot
    pts = [a / (a + b) for a, b in ab]
    return integrate.quad(dens, lo, hi, epsabs=1e-15, epsrel=1e-13, limit=800, points=pts)[0]


def cuped_case():
    """Raw data: CUPED by hand (theta from all units together), then Welch by
    scipy on the adjusted values."""
    rng = np.random.default_rng(3)
    groups = []
    for k, (n, lift) in enumerate([(1500, 0.0), (1400, 0.6), (1600, 0.2)]):
        x = rng.normal(20, 4, n)
        y = 5 + 0.8 * x + rng.normal(lift, 2, n)
        groups.append((x, y))
    allx = np.concatenate([g[0] for g in groups])
    ally = np.concatenate([g[1] for g in groups])
    theta = np.cov(ally, allx, ddof=1)[0, 1] / allx.var(ddof=1)
    mx = allx.mean()
    sums = []
    adj = []
    for x, y in groups:
        sums.append((len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()))
        ya = y - theta * (x - mx)
        adj.append(ya)
    rows = []
    for i in range(1, len(groups)):
        r = stats.ttest_ind(adj[i], adj[0], equal_var=False)
        lo, hi = welch_ci_statsmodels(adj[i], adj[0])
        rows.append((i, adj[0].mean(), adj[0].var(ddof=1), adj[i].mean(), adj[i].var(ddof=1),
                     r.statistic, r.pvalue, lo, hi))
    return theta, sums, rows


def emit_abtest():
    rows = [
        prop_case(1000, 100, 1000, 130, 0.05, "two-sided"),
        prop_case(20000, 1000, 21000, 1120, 0.05, "two-sided"),
        prop_case(20000, 1000, 21000, 1120, 0.05, "greater"),
        prop_case(20000, 1000, 21000, 1120, 0.01, "less"),
        prop_case(50, 3, 60, 12, 0.1, "two-sided"),
        prop_case(1e6, 31000, 1e6, 30500, 0.05, "two-sided"),
        prop_case(400, 40, 400, 40, 0.05, "two-sided"),
    ]
    counts = read_resume()
    print("/* resume_names_callback_experiment.csv, call-back by ethnicity: control = cauc"
          " n=%d x=%d, treatment = afam n=%d x=%d */" % (counts["cauc"] + counts["afam"]))
    rows.append(prop_case(*counts["cauc"], *counts["afam"], 0.05, "two-sided"))
    table("prop_ref", "struct ref_prop", rows)

    rows = [
        welch_case(100, 10.0, 4.0, 120, 10.8, 9.0, 0.05, "two-sided"),
        welch_case(8, 3.2, 1.1, 5, 4.9, 6.3, 0.05, "two-sided"),
        welch_case(8, 3.2, 1.1, 5, 4.9, 6.3, 0.1, "greater"),
        welch_case(8, 3.2, 1.1, 5, 4.9, 6.3, 0.1, "less"),
        welch_case(50000, 52.1, 400.0, 48000, 52.0, 380.0, 0.05, "two-sided"),
        welch_case(2, 1.0, 0.5, 3, 1.5, 0.25, 0.05, "two-sided"),
    ]
    table("welch_ref", "struct ref_welch", rows)
    r = welch_raw_check()
    print("/* Welch from raw data: scipy.stats.ttest_ind, CI from statsmodels CompareMeans */")
    table("welch_raw_ref", "struct ref_welch_raw", [r])

    chi_cases = [
        ([1000, 1000], [100, 130]),
        ([1000, 1100, 950, 1200], [100, 130, 90, 150]),
        ([30, 40, 35], [3, 12, 9]),
    ]
    rows = []
    for n, x in chi_cases:
        tab = np.array([[xi, ni - xi] for ni, xi in zip(n, x)])
        for corr in (False, True):
            chi2, p, dof, _ = stats.chi2_contingency(tab, correction=corr)
            rows.append((len(n), list(n) + [0] * (4 - len(n)), list(x) + [0] * (4 - len(x)),
                         int(corr), chi2, dof, p))
    n, x = zip(*[counts["cauc"], counts["afam"]])
    tab = np.array([[xi, ni - xi] for ni, xi in zip(n, x)])
    chi2, p, dof, _ = stats.chi2_contingency(tab, correction=False)
    rows.append((2, [n[0], n[1], 0, 0], [x[0], x[1], 0, 0], 0, chi2, dof, p))
    table("chi2_ind_ref", "struct ref_chi2_ind", rows)

    pvs = [
        [0.01, 0.04, 0.03, 0.005],
        [0.5, 0.2, 0.9, 0.01, 0.01, 0.049, 1e-12],
        [0.3],
        [0.02, 0.02, 0.02],
    ]
    print("static const double holm_in[][8] = {")
    for p in pvs:
        print("\t{" + ", ".join(f(v) for v in p + [0] * (8 - len(p))) + "},")
    print("};")
    print("static const size_t holm_len[] = {" + ", ".join(str(len(p)) for p in pvs) + "};")
    print("static const double holm_out[][8] = {")
    for p in pvs:
        adj = multitest.multipletests(p, method="holm")[1]
        print("\t{" + ", ".join(f(v) for v in list(adj) + [0] * (8 - len(p))) + "},")
    print("};")

    srm = [
        ([5000, 5000], [1, 1]),
        ([5100, 4900], [0.5, 0.5]),
        ([5300, 4700], [1, 1]),
        ([3400, 3300, 3300], [1, 1, 1]),
        ([2010, 5990], [0.25, 0.75]),
        ([1000, 1100, 900, 1000], [1, 1, 1, 1]),
    ]
    rows = []
    for c, w in srm:
        w = np.asarray(w, float)
        exp_ = np.sum(c) * w / w.sum()
        chi2, p = stats.chisquare(c, exp_)
        rows.append((len(c), list(c) + [0] * (4 - len(c)), list(w) + [0] * (4 - len(w)),
                     chi2, p, p < 0.001))
    table("srm_ref", "struct ref_srm", rows)

    # Planning: statsmodels' one-tail normal sample size (pooled SE under the
    # null, unpooled under the alternative), Bonferroni over variants - 1.
    rows = []
    for base, mde, rel, alpha, power, sides, variants in [
            (0.10, 0.05, 1, 0.05, 0.8, 2, 2), (0.10, 0.01, 0, 0.05, 0.8, 2, 2),
            (0.03, 0.10, 1, 0.05, 0.9, 1, 2), (0.25, 0.02, 0, 0.01, 0.8, 2, 4),
            (0.5, -0.04, 0, 0.05, 0.8, 2, 3)]:
        diff = base * mde if rel else mde
        a = alpha / (variants - 1)
        n = proportion.samplesize_proportions_2indep_onetail(
            diff, base, power, ratio=1, alpha=a,
            alternative="two-sided" if sides == 2 else "larger")
        rows.append((base, mde, rel, alpha, power, sides, variants, n))
    table("plan_prop_ref", "struct ref_plan", rows)
    rows = []
    for base, mde, rel, alpha, power, sides, variants, sd in [
            (100.0, 0.02, 1, 0.05, 0.8, 2, 2, 30.0), (100.0, 1.5, 0, 0.05, 0.9, 1, 2, 25.0),
            (12.0, 0.5, 0, 0.01, 0.8, 2, 5, 4.0)]:
        diff = base * mde if rel else mde
        a = alpha / (variants - 1)
        a1 = a / 2 if sides == 2 else a
        n = normal_sample_size_one_tail(diff, power, a1, std_null=sd * math.sqrt(2),
                                        std_alternative=sd * math.sqrt(2))
        rows.append((base, mde, rel, alpha, power, sides, variants, sd, n))
    table("plan_mean_ref", "struct ref_plan_mean", rows)

    tau2, alpha, rows = msprt_cases()
    print("/* mSPRT, means: Lambda by quad, CI bounds by brentq on it */")
    print("static const double msprt_tau2 = %s, msprt_alpha = %s;" % (f(tau2), f(alpha)))
    table("msprt_ref", "struct ref_msprt", rows)
    tau2p, alphap, rows = msprt_prop_cases()
    print("static const double msprt_prop_tau2 = %s, msprt_prop_alpha = %s;"
          % (f(tau2p), f(alphap)))
    table("msprt_prop_ref", "struct ref_msprt_prop", rows)

    # Bayesian Beta-Binomial, Beta(1, 1) prior unless stated; by quad.
    cases = [
        (1, 1, 1000, 100, 1000, 130),
        (1, 1, 20000, 1000, 21000, 1120),
        (0.5, 0.5, 40, 0, 45, 2),
        (1, 1, 10, 3, 12, 4),
        (2, 8, 300, 31, 280, 30),
        (1, 1, 1e6, 31000, 1e6, 30500),
        (0.2, 0.2, 5, 0, 5, 5),
        (1, 1, 50000, 25000, 50000, 25400),
        (1, 1, 3, 3, 200000, 2),
    ]
    c, t = counts["cauc"], counts["afam"]
    cases.append((1, 1, c[0], c[1], t[0], t[1]))
    rows = []
    for a0, b0, na, xa, nb, xb in cases:
        aa, ba = a0 + xa, b0 + na - xa
        ab_, bb = a0 + xb, b0 + nb - xb
        rows.append((a0, b0, na, xa, nb, xb, beta_prob_greater(aa, ba, ab_, bb),
                     beta_loss(ab_, bb, aa, ba), beta_loss(aa, ba, ab_, bb)))
    table("bayes_ref", "struct ref_bayes", rows)

    # Four arms, Beta(1, 1) prior: successes and failures, P(best) and
    # E[max_j p_j] - mean_i, all by quad.
    succ, fail = [120, 130, 100, 128], [880, 870, 900, 872]
    arms = [(1 + x, 1 + y) for x, y in zip(succ, fail)]
    emax = beta_expected_max(arms)
    print("static const double best_s[] = {" + ", ".join(f(v) for v in succ) + "};")
    print("static const double best_f[] = {" + ", ".join(f(v) for v in fail) + "};")
    print("static const double best_ref[] = {" + ", ".join(f(v) for v in beta_prob_best(arms))
          + "};")
    print("static const double best_loss_ref[] = {" +
          ", ".join(f(emax - a / (a + b)) for a, b in arms) + "};")

    rows = []
    for na, ma, va, nb, mb, vb in [(100, 10.0, 4.0, 120, 10.3, 6.0), (1e4, 5.0, 1.0, 1e4, 4.99, 2.0),
                                   (50, 0.0, 1.0, 50, 0.0, 1.0), (10, 1.0, 0.1, 10, 2.0, 0.1)]:
        rows.append((na, ma, va, nb, mb, vb) + normal_post(na, ma, va, nb, mb, vb))
    table("normal_post_ref", "struct ref_normal_post", rows)

    theta, sums, rows = cuped_case()
    print("static const double cuped_theta = %s;" % f(theta))
    table("cuped_sums", "struct ref_cuped_sums", sums)
    table("cuped_ref", "struct ref_cuped", rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "abtest"
    if what == "stats":
        emit_stats()
    else:
        emit_abtest()
