"""recommend.evaluate on the demo generator over several seeds and sizes (a program,
not a test): NDCG@10 of popular, collaborative, content and hybrid, time and user splits,
and the median ratio to popular.

Run:  SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/demo_quality.py
"""
import os
import statistics
import sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server
END = 1_767_225_600_000
cases = [(2000, 60, 42), (2000, 60, 7), (2000, 60, 1234), (5000, 60, 42), (5000, 90, 3)]
strats = ["popular", "collaborative", "content", "hybrid"]
ratios = {}
for users, days, seed in cases:
    with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
        r = c.call("demo.load", users=users, days=days, seed=seed, end=END, _timeout=600)
        for split in ("time", "user"):
            pop = None
            line = []
            for s in strats:
                e = c.call("recommend.evaluate", strategy=s, k=10, holdout=0.2, max_users=1000, split=split, _timeout=600)
                pop = pop or e["ndcg"]
                ratios.setdefault((split, s), []).append(e["ndcg"] / pop)
                line.append(f"{s} {e['ndcg']:.4f} ({e['ndcg'] / pop:.2f}x)")
            print(f"users={users} days={days} seed={seed} events={r['events']} {split}: " + ", ".join(line), flush=True)
for (split, s), v in ratios.items():
    print(f"median {split} {s}: {statistics.median(v):.2f}x (min {min(v):.2f}, max {max(v):.2f})")
