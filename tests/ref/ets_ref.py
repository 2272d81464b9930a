#!/usr/bin/python3
"""Reference values for tests/c/math/test_ets.c, computed once with
statsmodels 0.13 (Debian 12 python3-statsmodels) and checked in as
tests/data/ets_ref.csv.

Run: /usr/bin/python3 tests/ref/ets_ref.py > tests/data/ets_ref.csv

Each line is `key,value,value,...`.  Model names follow the ETS taxonomy
(error, trend, season; "Ad" is the damped additive trend).  For every fitted
model we record the log-likelihood, alpha/beta/gamma/phi (absent ones as 0,
phi 1 when undamped), the AICc as statsmodels computes it, the 12-step (or
14-step) point forecast and 95% prediction limits, and the initial states
(level, trend, seasonal s_{-m}..s_{-1}) so that the C test can evaluate our
likelihood at statsmodels' optimum.
"""
import os
import sys
import warnings

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.holtwinters import ExponentialSmoothing

warnings.filterwarnings("ignore")

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")
ERR = {"A": "add", "M": "mul"}
SEAS = {"N": None, "A": "add", "M": "mul"}


def candidates():
    # R forecast::ets(restrict = TRUE) without multiplicative trends:
    # additive error with multiplicative season is excluded as unstable.
    out = []
    for e in "AM":
        for t in ("N", "A", "Ad"):
            for s in "NAM":
                if e == "A" and s == "M":
                    continue
                out.append(e + t + s)
    return out


def split(name):
    e, rest = name[0], name[1:]
    if rest.startswith("Ad"):
        return e, "A", True, rest[2]
    return e, rest[0], False, rest[1]


def ets_fit(y, name, m):
    e, t, damped, s = split(name)
    mod = ETSModel(pd.Series(y), error=ERR[e], trend=None if t == "N" else "add",
                   damped_trend=damped, seasonal=SEAS[s],
                   seasonal_periods=m if s != "N" else None)
    return mod.fit(disp=False, maxiter=10000)


def ok_for(y, name, m):
    e, _, _, s = split(name)
    if (e == "M" or s == "M") and np.min(y) <= 0:
        return False
    if s != "N" and len(y) < 2 * m:
        return False
    return True


def put(key, vals):
    print(key + "," + ",".join(repr(float(v)) for v in np.atleast_1d(vals)))


def record_fit(tag, y, name, m, h):
    r = ets_fit(y, name, m)
    _, t, damped, s = split(name)
    put(f"{tag}.{name}.llf", r.llf)
    put(f"{tag}.{name}.aicc", r.aicc)
    put(f"{tag}.{name}.par", [r.smoothing_level,
                              r.smoothing_trend if t != "N" else 0,
                              r.smoothing_seasonal if s != "N" else 0,
                              r.damping_trend if damped else 1])
    put(f"{tag}.{name}.fc", np.asarray(r.forecast(h)))
    put(f"{tag}.{name}.init", np.concatenate([[r.initial_level],
                                              [r.initial_trend if t != "N" else 0],
                                              r.initial_seasonal if s != "N" else []]))
    # Simulated intervals (non-linear models) with 20000 paths, seeded, so
    # that the reference's own sampling noise is small.
    pr = r.get_prediction(start=len(y), end=len(y) + h - 1, simulate_repetitions=20000,
                          random_state=12345)
    sf = pr.summary_frame(alpha=0.05)
    put(f"{tag}.{name}.lo", sf["pi_lower"].values)
    put(f"{tag}.{name}.hi", sf["pi_upper"].values)
    return r


def auto(tag, y, m, h):
    """Fit all admissible candidates on y[:-h], pick the smallest AICc,
    report its MAPE on the held-out h points."""
    train, test = y[:-h], y[-h:]
    best = None
    for name in candidates():
        if not ok_for(train, name, m):
            continue
        try:
            r = ets_fit(train, name, m)
        except Exception:
            continue
        if not np.isfinite(r.aicc):
            continue
        if best is None or r.aicc < best[1]:
            best = (name, r.aicc, r)
    fc = np.asarray(best[2].forecast(h))
    mape = 100 * np.mean(np.abs((test - fc) / test))
    print(f"# {tag}: statsmodels best AICc model {best[0]} aicc={best[1]:.4f}")
    put(f"{tag}.auto.mape", mape)
    put(f"{tag}.auto.llf", best[2].llf)
    put(f"{tag}.auto.is.{best[0]}", best[2].llf)


def main():
    ap = pd.read_csv(os.path.join(DATA, "airpassengers_monthly.csv"))["value"].values.astype(float)
    print("# statsmodels ETSModel / ExponentialSmoothing references, tests/ref/ets_ref.py")
    for name in ("ANN", "AAN", "AAdN", "ANA", "AAA", "AAdA", "MNM", "MAM", "MAdM", "MAA", "MNA"):
        record_fit("air", ap, name, 12, 12)
    auto("air", ap, 12, 12)

    # Plain Holt-Winters, least squares (ExponentialSmoothing).
    for trend, damped, seas, tag in (("add", False, "add", "AA"), ("add", True, "add", "AdA"),
                                     ("add", False, "mul", "AM"), ("add", True, "mul", "AdM")):
        r = ExponentialSmoothing(ap, trend=trend, damped_trend=damped, seasonal=seas,
                                 seasonal_periods=12, initialization_method="estimated").fit()
        put(f"air.hw.{tag}.sse", r.sse)
        put(f"air.hw.{tag}.par", [r.params["smoothing_level"], r.params["smoothing_trend"],
                                  r.params["smoothing_seasonal"],
                                  r.params["damping_trend"] if damped else 1])
        put(f"air.hw.{tag}.fc", r.forecast(12))

    fl = pd.read_csv(os.path.join(DATA, "us_flights_2001h1_daily_by_origin.csv"))
    fl = fl[fl["date"] <= "2001-06-30"]
    for code in ("ORD", "LAX", "PHX", "STL"):
        y = fl[fl["origin"] == code].sort_values("date")["flights"].values.astype(float)
        assert len(y) == 181
        for name in ("ANA", "AAdA", "MNM", "MAdM"):
            record_fit(f"fl.{code}", y, name, 7, 14)
        auto(f"fl.{code}", y, 7, 14)


if __name__ == "__main__":
    sys.exit(main())
