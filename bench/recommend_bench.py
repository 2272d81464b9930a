"""Recommendation quality and latency benchmark (a program, not a test).

  quality:  MovieLens ratings (ratings >= 4 as `view` interactions, genres as
            tags and as a one-hot content vector) and a synthetic set with
            structure; recommend.evaluate for each strategy (k=10, holdout 0.2).
  latency:  recommend.items n=20 over TCP on a catalogue of ITEMS items and
            USERS users (one interaction each, plus a history for a subset).

Run:  SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/recommend_bench.py [quality|latency] [ITEMS USERS]
"""
import csv
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server  # noqa: E402

STRATS = ("popular", "collaborative", "content", "hybrid")


def evaluate(c, label):
    for s in STRATS:
        t = time.monotonic()
        r = c.call("recommend.evaluate", strategy=s, k=10, holdout=0.2, max_users=1000, _timeout=600)
        print(f"{label:10s} {s:14s} users={r['users']:4d} P@10={r['precision']:.4f} R@10={r['recall']:.4f} "
              f"NDCG@10={r['ndcg']:.4f} coverage={r['coverage']:.4f} novelty={r['novelty']:.2f} "
              f"({time.monotonic() - t:.1f} s)", flush=True)


def movielens(c):
    path = os.path.join(os.environ["SX_SOURCE_DIR"], "..", "shared", "data", "movielens_small_ratings.csv")
    rows = list(csv.DictReader(open(path)))
    genres = sorted({g for r in rows for g in r["genres"].split("|")})
    seen = set()
    for r in rows:
        if r["movieId"] in seen:
            continue
        seen.add(r["movieId"])
        gs = r["genres"].split("|")
        c.call("items.put", id="m" + r["movieId"], kind="activity",
               attributes={"name": r["title"], "tags": gs},
               vector=[1.0 if g in gs else 0.0 for g in genres])
    evs = [{"user": "u" + r["userId"], "name": "view", "item": "m" + r["movieId"],
            "time": int(float(r["timestamp"])) * 1000} for r in rows if float(r["rating"]) >= 4]
    for i in range(0, len(evs), 10000):
        c.call("events.track", events=evs[i:i + 10000], _timeout=600)
    print(f"movielens: {len(seen)} items, {len(evs)} interactions", flush=True)


def synthetic(c, users=2000, per_theme=100, themes=5):
    rnd = random.Random(3)
    for t in range(themes):
        for i in range(per_theme):
            v = [rnd.gauss(0, 0.3) for _ in range(16)]
            v[t] += 1
            c.call("items.put", id=f"t{t}-{i}", kind="destination", attributes={"tags": [f"theme{t}"]}, vector=v)
    t0 = 1_700_000_000_000
    evs = []
    for u in range(users):
        fav = rnd.sample(range(themes), 2)
        for j in range(20):
            t = fav[0] if rnd.random() < 0.7 else fav[1] if rnd.random() < 0.7 else rnd.randrange(themes)
            # a Zipf-like pick inside the theme: some items are popular everywhere
            i = min(int(rnd.paretovariate(1.2)) - 1, per_theme - 1)
            evs.append({"user": f"s{u}", "name": rnd.choice(("view", "view", "click", "book")),
                        "item": f"t{t}-{i}", "time": t0 + j * 86_400_000 + u})
    for i in range(0, len(evs), 10000):
        c.call("events.track", events=evs[i:i + 10000], _timeout=600)
    print(f"synthetic: {themes * per_theme} items, {len(evs)} interactions", flush=True)


def quality():
    with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
        movielens(c)
        evaluate(c, "movielens")
    with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
        synthetic(c)
        evaluate(c, "synthetic")


def latency(n_items, n_users):
    rnd = random.Random(5)
    with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
        t = time.monotonic()
        for i in range(n_items):
            v = [rnd.gauss(0, 1) for _ in range(16)]
            c.call("items.put", id=f"i{i}", kind=("trip", "destination", "activity", "offer")[i % 4],
                   attributes={"price": 100 + i % 2000, "region": f"r{i % 50}", "tags": [f"g{i % 30}"]}, vector=v)
        print(f"{n_items} items in {time.monotonic() - t:.0f} s", flush=True)
        t = time.monotonic()
        batch = []
        for u in range(n_users):
            for _ in range(3):
                batch.append({"user": f"u{u}", "name": "view", "item": f"i{int(rnd.paretovariate(0.8)) % n_items}"})
            if len(batch) >= 9000:
                c.call("events.track", events=batch, _timeout=600)
                batch = []
        if batch:
            c.call("events.track", events=batch, _timeout=600)
        print(f"{n_users} users x 3 events in {time.monotonic() - t:.0f} s", flush=True)
        st = c.call("recommend.train", params={"k": 32, "iterations": 8})
        while c.call("job.status", id=st["job"])["state"] == "running":
            time.sleep(0.5)
        print("trained:", c.call("job.status", id=st["job"])["state"], flush=True)
        for warm in range(2000):
            c.call("recommend.items", user=f"u{rnd.randrange(n_users)}", n=20)
        lat = []
        t = time.monotonic()
        for q in range(5000):
            s = time.perf_counter()
            c.call("recommend.items", user=f"u{rnd.randrange(n_users)}", n=20)
            lat.append((time.perf_counter() - s) * 1000)
        el = time.monotonic() - t
        lat.sort()
        print(f"recommend.items n=20, 1 connection, sequential: p50={lat[len(lat) // 2]:.2f} ms "
              f"p99={lat[int(len(lat) * 0.99)]:.2f} ms throughput={len(lat) / el:.0f}/s", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "quality"
    if what == "quality":
        quality()
    else:
        latency(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000, int(sys.argv[3]) if len(sys.argv) > 3 else 100_000)
