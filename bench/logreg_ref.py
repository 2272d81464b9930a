#!/usr/bin/python3
"""scikit-learn peer of bench_logreg: same data file, same objective.

Usage: /usr/bin/python3 bench/logreg_ref.py <data.bin> [tol]

LogisticRegression(C=1, solver="lbfgs", tol=1e-4 by default, max_iter=1000);
prints the best of 3 fit times, iterations, training AUC and the leading
coefficients, to compare with bench_logreg's.
"""
import sys
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

path = sys.argv[1]
tol = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-4
raw = open(path, "rb").read()
n, d = np.frombuffer(raw, dtype="<i8", count=2)
X = np.frombuffer(raw, dtype="<f4", count=n * d, offset=16).reshape(n, d).astype(np.float64)
y = np.frombuffer(raw, dtype=np.uint8, count=n, offset=16 + 4 * n * d).astype(np.int64)
best = best_cpu = 1e9
for rep in range(3):
    m = LogisticRegression(C=1.0, solver="lbfgs", tol=tol, max_iter=1000)
    t, c = time.perf_counter(), time.process_time()
    m.fit(X, y)
    t, c = time.perf_counter() - t, time.process_time() - c
    best, best_cpu = min(best, t), min(best_cpu, c)
    print(f"fit {rep + 1}: {t:.3f} s wall, {c:.3f} s cpu, {m.n_iter_[0]} iterations", flush=True)
auc = roc_auc_score(y, m.predict_proba(X)[:, 1])
print("coef[0..3] " + " ".join(f"{c:.6f}" for c in m.coef_[0][:4]) + f" intercept {m.intercept_[0]:.6f}")
print(f"RESULT sklearn {sklearn.__version__} logreg n={n} d={d} tol={tol:g} best_fit_s={best:.3f} best_cpu_s={best_cpu:.3f} "
      f"iters={m.n_iter_[0]} auc={auc:.6f}")
