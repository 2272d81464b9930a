"""Time of experiment.results with N exposed users, 5 metrics, ~2 events per user.
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
times = []
for _ in range(5):
    s = time.monotonic()
    r = c.call("experiment.results", key=key)
    times.append((time.monotonic() - s) * 1000)
assert sum(v["users"] for v in r["variants"]) == n
print(f"results with {n} exposed users, 5 metrics: median {statistics.median(times):.0f} ms "
      f"(min {min(times):.0f}); setup: {n / (t1 - t0):.0f} assignments/s from one pipelining client, "
      f"events {t2 - t1:.1f} s")
