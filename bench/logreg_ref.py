#!/usr/bin/python3
"""scikit-learn peer of bench_logreg: same data file, same objective.

Usage: /usr/bin/python3 bench/logreg_ref.py <data.bin> [fits]

LogisticRegression(C=1, solver="lbfgs", default tol=1e-4, max_iter=1000),
fitted `fits` times (default 5). Prints each fit's wall and CPU time, then the
medians, iterations and evaluations of the objective (from scipy's result,
captured around scipy.optimize.minimize), why scipy stopped, the training AUC,
and the objective (loss + |w|^2 / 2C) / n and its max |gradient| / n at the
solution, scaled as bench_logreg prints them.
"""
import statistics
import sys
import time

import numpy as np
import sklearn
import sklearn.linear_model._logistic as sk_logistic
from scipy import optimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

results = []
_minimize = optimize.minimize


def minimize(*args, **kwargs):
    r = _minimize(*args, **kwargs)
    results.append(r)
    return r


sk_logistic.optimize.minimize = minimize

path = sys.argv[1]
fits = int(sys.argv[2]) if len(sys.argv) > 2 else 5
raw = open(path, "rb").read()
n, d, size = (int(v) for v in np.frombuffer(raw, dtype="<i8", count=3))
dtype = "<f4" if size == 4 else "<f8"
X = np.frombuffer(raw, dtype=dtype, count=n * d, offset=24).reshape(n, d).astype(np.float64)
y = np.frombuffer(raw, dtype=np.uint8, count=n, offset=24 + size * n * d).astype(np.int64)
walls, cpus = [], []
for rep in range(fits):
    m = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)
    t, c = time.perf_counter(), time.process_time()
    m.fit(X, y)
    t, c = time.perf_counter() - t, time.process_time() - c
    walls.append(t)
    cpus.append(c)
    r = results[-1]
    print(f"fit {rep + 1}: {t:.3f} s wall, {c:.3f} s cpu, {r.nit} iterations, {r.nfev} evaluations",
          flush=True)
r = results[-1]
auc = roc_auc_score(y, m.predict_proba(X)[:, 1])
print(f"stopped: {r.message}")
print("coef[0..3] " + " ".join(f"{c:.6f}" for c in m.coef_[0][:4]) + f" intercept {m.intercept_[0]:.6f}")
print(f"RESULT sklearn {sklearn.__version__} logreg n={n} d={d} x=f{8 * size} fits={fits} "
      f"median_wall_s={statistics.median(walls):.3f} median_cpu_s={statistics.median(cpus):.3f} "
      f"iters={r.nit} evals={r.nfev} f={r.fun / n:.12f} max_grad={np.abs(r.jac).max() / n:.2e} "
      f"auc={auc:.6f}")
