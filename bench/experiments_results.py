"""Time of experiment.results with N exposed users, 5 metrics, ~2 events per user:
from the incremental counters (median of 5) and, as the peer, recomputed from the
exposures and events (recompute = true, median of 3); both must agree.
    /usr/bin/python3 bench/experiments_results.py PORT N"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Client  # noqa: E402

port, n = int(sys.argv[1]), int(sys.argv[2])
c = Client(port, timeout=600)
key = f"res{n}"
c.call("experiment.create", key=key, variants=[{"name": "control"}, {"name": "t"}], stopping_rule="none",
       metrics=[{"name": "buy", "event": "purchase"},
                {"name": "revenue", "kind": "sum", "event": "purchase", "property": "amount"},
                {"name": "views", "kind": "count", "event": "view"},
                {"name": "basket", "kind": "mean", "event": "purchase", "property": "amount"},
                {"name": "errors", "kind": "conversion", "event": "error", "role": "guardrail"}])
c.call("experiment.start", key=key)
t0 = time.monotonic()
for i in range(0, n, 2000):
    c.pipeline([("experiment.assign", {"key": key, "user": f"r{j}"}) for j in range(i, min(n, i + 2000))], timeout=600)
t1 = time.monotonic()
now = int(time.time() * 1000) + 1000
for i in range(0, n, 5000):
    ev = []
    for j in range(i, min(n, i + 5000)):
        ev.append({"user": f"r{j}", "name": "view", "time": now})
        if j % 4 == 0:
            ev.append({"user": f"r{j}", "name": "purchase", "time": now + 10, "properties": {"amount": j % 50}})
    c.call("events.track", events=ev)
t2 = time.monotonic()
times, rtimes = [], []
for _ in range(5):
    s = time.monotonic()
    r = c.call("experiment.results", key=key)
    times.append((time.monotonic() - s) * 1000)
for _ in range(3):
    s = time.monotonic()
    ref = c.call("experiment.results", key=key, recompute=True)
    rtimes.append((time.monotonic() - s) * 1000)
assert sum(v["users"] for v in r["variants"]) == n
for m, mr in zip(r["metrics"], ref["metrics"]):
    for v, vr in zip(m["variants"], mr["variants"]):
        for f in ("users", "conversions", "sum", "sum_sq"):
            assert abs(v[f] - vr[f]) <= 1e-9 * max(1, abs(vr[f])), (m["name"], f, v[f], vr[f])
med, rmed = statistics.median(times), statistics.median(rtimes)
print(f"results with {n} exposed users, 5 metrics: counters median {med:.2f} ms (min {min(times):.2f}); "
      f"recompute median {rmed:.0f} ms ({rmed / med:.0f}x); setup: {n / (t1 - t0):.0f} assignments/s "
      f"from one pipelining client, events {t2 - t1:.1f} s ({(n + n // 4) / (t2 - t1):.0f} events/s)")
