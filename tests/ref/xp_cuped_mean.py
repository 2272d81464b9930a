"""Reference for CUPED on a mean metric (tests/e2e/test_experiments_counters.py).

Experiment "cupedmean", variants control/treatment, metric basket = mean of
purchase.amount within one day; users cm0..cm79. VARIANTS is the server's
assignment of those users (1 = treatment; XXH3 buckets, pinned by the test).
Per user i (x: the pre-exposure purchase, y: the post-exposure ones):
  pre  : if i % 3 != 0, one purchase of amount 10 + (7 i) % 13
  post : amount 0.8 x + (5 i) % 7 + 2 * treatment (x = 0 without a pre one);
         if i % 4 == 0 a second one of that amount + 2 (the user's mean: + 1)
The unit value is the user's mean post amount, the covariate the user's mean
pre amount or 0. theta = cov(x, y) / var(x) over all units; adjusted
y - theta (x - mean x); Welch's t-test (SciPy) on the adjusted values.

    /usr/bin/python3 tests/ref/xp_cuped_mean.py > tests/data/xp_cuped_mean.json
"""
import json

import numpy as np
from scipy import stats

VARIANTS = "11011111100000100101111101011101101001000010011011101101000111000111011010110011"


def data():
    rows = []
    for i in range(80):
        t = int(VARIANTS[i])
        x = 10 + (7 * i) % 13 if i % 3 != 0 else None
        y = 0.8 * (x or 0) + (5 * i) % 7 + 2 * t
        post = [y, y + 2] if i % 4 == 0 else [y]
        rows.append((t, x, post))
    return rows


def main():
    rows = data()
    t = np.array([r[0] for r in rows])
    x = np.array([r[1] if r[1] is not None else 0.0 for r in rows], dtype=float)
    y = np.array([np.mean(r[2]) for r in rows])
    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj = y - theta * (x - x.mean())
    a0, a1 = adj[t == 0], adj[t == 1]
    w = stats.ttest_ind(a1, a0, equal_var=False)
    out = {
        "variants": VARIANTS,
        "theta": theta,
        "control_mean": a0.mean(), "treatment_mean": a1.mean(),
        "diff": a1.mean() - a0.mean(),
        "stat": float(w.statistic), "p_value": float(w.pvalue),
        "raw_control_mean": y[t == 0].mean(), "raw_treatment_mean": y[t == 1].mean(),
        "pre_mean_control": x[t == 0].mean(), "pre_mean_treatment": x[t == 1].mean(),
    }
    print(json.dumps({k: (float(v) if not isinstance(v, str) else v) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
