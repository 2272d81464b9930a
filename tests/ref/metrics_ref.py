#!/usr/bin/python3
"""Reference values for tests/c/math/test_metrics.c (the same arrays are
written there). Run: /usr/bin/python3 tests/ref/metrics_ref.py"""
import numpy as np
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, brier_score_loss, confusion_matrix, f1_score,
                             log_loss, roc_auc_score)

# Scores with ties across classes (0.4 x3, 0.7 x2, 0.9 x2) and values on the
# calibration bin edges (0.2, 0.4, 0.6, 0.8 with 5 bins).
y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0])
p = np.array([0.9, 0.1, 0.4, 0.7, 0.4, 0.2, 0.9, 0.3, 0.8, 0.7,
              0.55, 0.6, 0.05, 0.4, 0.35, 0.65, 0.15, 0.95, 0.5, 0.25])
print(f"/* sklearn {sklearn.__version__} */")
print(f"auc = {roc_auc_score(y, p):.17g}")
print(f"log_loss = {log_loss(y, p):.17g}")
print(f"brier = {brier_score_loss(y, p):.17g}")
prob_true, prob_pred = calibration_curve(y, p, n_bins=5, strategy="uniform")
print("calibration (non-empty bins) observed:", ", ".join(f"{v:.17g}" for v in prob_true))
print("calibration (non-empty bins) mean_pred:", ", ".join(f"{v:.17g}" for v in prob_pred))
bins = np.searchsorted(np.linspace(0, 1, 6)[1:-1], p)
print("calibration counts:", np.bincount(bins, minlength=5).tolist())

t = np.array([0, 1, 2, 2, 1, 0, 3, 1, 2, 0, 1, 1])
q = np.array([0, 2, 2, 1, 1, 0, 1, 1, 2, 1, 0, 1])
print(f"accuracy = {accuracy_score(t, q):.17g}")
print(f"macro_f1 = {f1_score(t, q, average='macro'):.17g}")
print("confusion =", confusion_matrix(t, q, labels=[0, 1, 2, 3]).ravel().tolist())
