#!/usr/bin/python3
"""statsmodels side of bench/run_ets.sh: same series, same split, same models.
Times are process CPU time (the machine is shared), as on the C side.

usage: /usr/bin/python3 bench/ets_ref.py SHARED_DATA_DIR SAMPLE_CSV [nsample=200] [nauto=10]
"""
import sys
import time
import warnings

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.holtwinters import ExponentialSmoothing

warnings.filterwarnings("ignore")
H = 14


def fit(y, name, m):
    e, rest = name[0], name[1:]
    damped = rest.startswith("Ad")
    t, s = rest[0], rest[-1]
    return ETSModel(pd.Series(y), error={"A": "add", "M": "mul"}[e],
                    trend=None if t == "N" else "add", damped_trend=damped,
                    seasonal={"N": None, "A": "add", "M": "mul"}[s],
                    seasonal_periods=m if s != "N" else None).fit(disp=False)


CANDS = ["ANN", "AAN", "AAdN", "ANA", "AAA", "AAdA", "MNN", "MAN", "MAdN", "MNA", "MAA",
         "MAdA", "MNM", "MAM", "MAdM"]


def auto(y, m):
    best = None
    for c in CANDS:
        r = fit(y, c, m)
        if np.isfinite(r.aicc) and (best is None or r.aicc < best.aicc):
            best = r
    return best


def mape(a, f):
    return 100 * np.mean(np.abs((a - f) / a))


def main():
    data, sample = sys.argv[1], sys.argv[2]
    nsample = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    nauto = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    air = pd.read_csv(data + "/airpassengers_monthly.csv")["value"].values.astype(float)
    for name in ("MAM", "AAA"):
        ts = []
        for _ in range(5):
            t0 = time.process_time()
            r = fit(air, name, 12)
            r.get_prediction(start=144, end=155).summary_frame(alpha=0.05)
            ts.append(time.process_time() - t0)
        print(f"statsmodels single air {name} fit+forecast(PI): median {1e3 * np.median(ts):.3f} ms"
              f"  llf {r.llf:.3f}")
    t0 = time.process_time()
    r = auto(air, 12)
    r.get_prediction(start=144, end=155).summary_frame(alpha=0.05)
    print(f"statsmodels single air auto (15 models) fit+forecast: {1e3 * (time.process_time() - t0):.3f} ms"
          f" -> {r.model.short_name}")

    ys = np.loadtxt(sample, delimiter=",")[:nsample]
    for name in ("AAA", "MAM"):
        t0 = time.process_time()
        ms, llf = [], []
        for y in ys:
            r = fit(y[:-H], name, 7)
            ms.append(mape(y[-H:], np.asarray(r.forecast(H))))
            llf.append(r.llf)
        dt = time.process_time() - t0
        print(f"statsmodels ets {name} sample {len(ys)}: {1e3 * dt / len(ys):.3f} ms/series, "
              f"MAPE {np.mean(ms):.3f}; 10000 series extrapolated: {dt / len(ys) * 1e4:.0f} s")
        try:
            ours = np.loadtxt(f"{sample}.{name}.llf")[:len(ys)]
            d = ours - np.array(llf)
            print(f"  llf ours - statsmodels over {len(d)} series: >= -0.05 in {np.mean(d >= -0.05):.1%},"
                  f" > +0.05 in {np.mean(d > 0.05):.1%}, min {d.min():.3f}, median {np.median(d):.4f}")
        except OSError:
            pass
    t0 = time.process_time()
    ms = [mape(y[-H:], np.asarray(auto(y[:-H], 7).forecast(H))) for y in ys[:nauto]]
    dt = time.process_time() - t0
    print(f"statsmodels ets auto sample {nauto}: {1e3 * dt / nauto:.3f} ms/series, "
          f"MAPE {np.mean(ms):.3f} (first {nauto} series only)")
    t0 = time.process_time()
    ms = []
    for y in ys:
        r = ExponentialSmoothing(y[:-H], trend="add", seasonal="add", seasonal_periods=7,
                                 initialization_method="estimated").fit()
        ms.append(mape(y[-H:], r.forecast(H)))
    dt = time.process_time() - t0
    print(f"statsmodels hw AA sample {len(ys)}: {1e3 * dt / len(ys):.3f} ms/series, MAPE {np.mean(ms):.3f}")


if __name__ == "__main__":
    main()
