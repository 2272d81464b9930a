"""recommend.items latency on the demo with and without the segment source (a program, not a
test): 5,000 demo users, 2 x 2,000 sequential calls per setting, client-side p50/p99.

Run:  SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/recommend_segment_latency.py
"""
import os, sys, time, random
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server
END = 1_767_225_600_000
with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
    c.call("demo.load", users=5000, days=60, seed=42, end=END, _timeout=600)
    try:
        j = c.call("recommend.train", _timeout=600)
        time.sleep(5)
    except Exception as e:
        print("train", e)
    rnd = random.Random(1)
    for seg in ("country", ""):
        c.call("recommend.config", segment=seg)
        for rep in range(2):
            lat = []
            for _ in range(2000):
                u = f"u{rnd.randrange(5000):07d}"
                t0 = time.perf_counter(); c.call("recommend.items", user=u, n=20); lat.append((time.perf_counter() - t0) * 1e3)
            lat.sort()
            print(f"segment={seg!r}: p50 {lat[1000]:.3f} ms p99 {lat[1980]:.3f} ms")
