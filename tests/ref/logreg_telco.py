#!/usr/bin/python3
"""Reference coefficients for tests/c/math/test_logreg.c.

Run: /usr/bin/python3 tests/ref/logreg_telco.py [path/to/ibm_telco_churn.csv]
(default: ../shared/data/ibm_telco_churn.csv relative to the repo root).

Design matrix, one row per customer, columns in this order (the C test builds
the same matrix):
   0 tenure
   1 monthly_charges
   2 total_charges            (NA -> 0)
   3 senior_citizen
   4 female
   5 partner
   6 dependents
   7 phone_service
   8 paperless_billing
   9 online_security == "Yes"
  10 tech_support == "Yes"
  11 contract == "One year"
  12 contract == "Two year"
  13 internet_service == "Fiber optic"
  14 internet_service == "No"
  15 payment_method == "Credit card (automatic)"
  16 payment_method == "Electronic check"
  17 payment_method == "Mailed check"
then every column standardised (mean 0, population std 1, as StandardScaler).
Label: churn == "Yes".

Cases:
  plain     LogisticRegression(C=1)
  balanced  LogisticRegression(C=1, class_weight="balanced")
  weighted  LogisticRegression(C=0.1, class_weight={0: 1, 1: 2}),
            sample_weight[i] = 1 + 0.5 * (i % 3)
each fitted twice: solver="lbfgs" (tol=1e-12, max_iter=100000), as asked,
and solver="newton-cg" (tol=1e-10). scipy's L-BFGS stops on its relative
function-decrease test (ftol = 64 eps) with a gradient still around 1e-2 here,
up to ~1e-4 away from the optimum; newton-cg reaches the optimum (gradient
~1e-12; its "failed to converge" warning comes from the tiny tol and is
silenced). The C test holds its coefficients to 1e-6 of newton-cg and 1e-4
of lbfgs (1e-3 for "balanced", where lbfgs stops 5e-4 away); the printed
gradient norms show which is the optimum.
"""
import warnings
import os
import sys

import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

here = os.path.dirname(os.path.abspath(__file__))
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "..", "shared", "data", "ibm_telco_churn.csv")
df = pd.read_csv(path)

cols = [
    df.tenure, df.monthly_charges, df.total_charges.fillna(0), df.senior_citizen, df.female,
    df.partner, df.dependents, df.phone_service, df.paperless_billing,
    df.online_security == "Yes", df.tech_support == "Yes",
    df.contract == "One year", df.contract == "Two year",
    df.internet_service == "Fiber optic", df.internet_service == "No",
    df.payment_method == "Credit card (automatic)", df.payment_method == "Electronic check",
    df.payment_method == "Mailed check",
]
X = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
X = StandardScaler().fit_transform(X)
y = (df.churn == "Yes").to_numpy().astype(int)
n = len(y)
sw = 1 + 0.5 * (np.arange(n) % 3)

cases = [
    ("plain", dict(C=1.0), None),
    ("balanced", dict(C=1.0, class_weight="balanced"), None),
    ("weighted", dict(C=0.1, class_weight={0: 1, 1: 2}), sw),
]
rows = [0, 1, 2, 100, 1000, n - 1]
print(f"/* sklearn {sklearn.__version__}, n={n}, d={X.shape[1]}, positives={y.sum()} */")
warnings.simplefilter("ignore")


def max_grad(m, kw, w):
    """max |gradient| of sum s_i loss_i + |w|^2 / (2C) at m's solution"""
    s = np.ones(n) if w is None else w.copy()
    cw = kw.get("class_weight")
    if cw == "balanced":
        cw = {c: n / (2 * np.sum(y == c)) for c in (0, 1)}
    if cw:
        s *= np.where(y == 1, cw[1], cw[0])
    p = m.predict_proba(X)[:, 1]
    r = s * (p - y)
    g = np.r_[X.T @ r + m.coef_[0] / kw["C"], r.sum()]
    return np.abs(g).max()


for name, kw, w in cases:
    lb = LogisticRegression(solver="lbfgs", tol=1e-12, max_iter=100000, **kw)
    lb.fit(X, y, sample_weight=w)
    m = LogisticRegression(solver="newton-cg", tol=1e-10, max_iter=1000, **kw)
    m.fit(X, y, sample_weight=w)
    p = m.predict_proba(X)[:, 1]
    print(f"/* {name}: max |gradient| newton-cg {max_grad(m, kw, w):.1e}, lbfgs {max_grad(lb, kw, w):.1e} */")
    print(f"static const double ref_{name}_lbfgs_coef[D + 1] = {{")
    print("".join(f"\t{c:.12g},\n" for c in np.r_[lb.coef_[0], lb.intercept_]), end="")
    print("};")
    print(f"static const double ref_{name}_coef[D] = {{")
    print("".join(f"\t{c:.12g},\n" for c in m.coef_[0]), end="")
    print("};")
    print(f"static const double ref_{name}_intercept = {m.intercept_[0]:.12g};")
    print(f"static const double ref_{name}_proba[{len(rows)}] = {{"
          + ", ".join(f"{p[r]:.12g}" for r in rows) + "};")
print(f"static const size_t ref_rows[{len(rows)}] = {{" + ", ".join(str(r) for r in rows) + "};")
