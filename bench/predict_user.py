"""predict.user latency: a real server, 2000 users (~60 events each),
a churn model trained through predict.train, then sequential predict.user
calls (all three default targets scored when trained; here churn_60d and
booking_30d) timed from the client (loopback round trip included).

    SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/predict_user.py [calls]
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import numpy as np  # noqa: E402

from sxtest import Server, wait_until  # noqa: E402

DAY = 86_400_000


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rng = np.random.default_rng(1)
    now = int(time.time() * 1000)
    with Server(config={"durability": "relaxed"}) as s, s.client(timeout=300) as c:
        evs = []
        for u in range(2000):
            stop = int(rng.integers(0, 120))
            d = 200.0
            while d > stop:
                name = ["search", "view", "view", "create_trip", "book"][int(rng.integers(0, 5))]
                ev = {"user": f"u{u}", "name": name, "time": now - int(d * DAY)}
                if name == "book":
                    ev["properties"] = {"value": 300.0}
                evs.append(ev)
                d -= rng.exponential(3.0) + 0.2
        for i in range(0, len(evs), 10000):
            c.call("events.track", events=evs[i:i + 10000])
        for target in ("churn_60d", "booking_30d"):
            r = c.call("predict.train", target=target)
            wait_until(lambda: c.call("job.status", id=r["job"])["state"] != "running", 120)
        assert wait_until(lambda: sum(1 for t in c.call("predict.config")["targets"] if t["version"]) == 2, 10)
        assert set(c.call("predict.user", user="u1")["predictions"]) == {"churn_60d", "booking_30d"}
        c.call("predict.config", sample=0.1)
        for u in range(200):  # warm the summaries of the users timed
            c.call("predict.user", user=f"u{u}")
        lat = []
        for i in range(calls):
            t0 = time.perf_counter_ns()
            c.call("predict.user", user=f"u{i % 200}")
            lat.append((time.perf_counter_ns() - t0) / 1e6)
        cold = []
        for u in range(200, 400):  # first call for a user: summary built from the store
            t0 = time.perf_counter_ns()
            c.call("predict.user", user=f"u{u}")
            cold.append((time.perf_counter_ns() - t0) / 1e6)
        ping = []
        for i in range(calls):
            t0 = time.perf_counter_ns()
            c.call("ping")
            ping.append((time.perf_counter_ns() - t0) / 1e6)
        q = lambda a, p: float(np.percentile(a, p))  # noqa: E731
        print(f"events {len(evs)}  calls {calls}")
        print(f"predict.user warm  p50 {q(lat, 50):.3f} ms  p99 {q(lat, 99):.3f} ms  max {max(lat):.3f} ms")
        print(f"predict.user cold  p50 {q(cold, 50):.3f} ms  p99 {q(cold, 99):.3f} ms")
        print(f"ping (round trip)  p50 {q(ping, 50):.3f} ms  p99 {q(ping, 99):.3f} ms")


if __name__ == "__main__":
    main()
