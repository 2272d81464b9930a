"""Recommendation quality and latency benchmark (a program, not a test).

  quality:  MovieLens ratings (ratings >= 4 as `view` interactions, genres as
            tags and as a one-hot content vector) and a synthetic set with
            structure; recommend.evaluate for each strategy (k=10, holdout 0.2).
  latency:  recommend.items n=20 over TCP on a catalogue of ITEMS items and
            USERS users (three interactions each): first sequential on one
            connection, then open loop: CONNS connections share a schedule
            of RATE requests/s (request i is due at t0 + i / RATE, sent then
            whatever the earlier ones are doing; latency counts from the due
            time, so a stalled server is not hidden by a waiting client).
  factors:  train ALS on the MovieLens interactions in a server (model.train),
            export it (model.export format npy) and write the item factors as an
            ANN set (users as queries, inner-product truth) for bench_hnsw and
            bench/hnsw_compare.py with BENCH_METRIC=ip (bench/run_hnsw.sh).

Run:  SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/recommend_bench.py quality [SET,...]
      ... recommend_bench.py latency [ITEMS USERS [RATE CONNS SECONDS]]
      ... recommend_bench.py factors OUT_DIR
"""
import csv
import os
import random
import socket
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server  # noqa: E402

# hybrid as it was before tuning (issue 5 figures: 1.29x / 1.18x popular): the old
# weights, pools of 50 personal / n trending and popular, seen items inside the pools,
# MMR lambda 0.9, ALS k 32, 12 iterations, lambda 0.05, alpha 10.
BEFORE = {"options": {"weights": {"collaborative": 1.0, "content": 0.4, "covisit": 0.5, "trending": 0.25,
                                  "offers": 0.2, "popular": 0.15},
                      "pool": 50, "top_pool": 10, "popularity": 0, "seen_in_pool": True,
                      "calibrate": False, "affinity": 0},
          "diversity": 0.1, "params": {"k": 32, "iterations": 12, "lambda": 0.05, "alpha": 10}}
# the default of 2026-11-26 (1.74x / 1.76x / 0.82x): no calibrated popularity weight, no tag affinity
PREVIOUS = {"options": {"calibrate": False, "affinity": 0}}
RUNS = [("popular", "popular", {}), ("collaborative", "collaborative", {}), ("content", "content", {}),
        ("hybrid before", "hybrid", BEFORE), ("hybrid 2026-11-26", "hybrid", PREVIOUS), ("hybrid", "hybrid", {}),
        ("hybrid div 0.1", "hybrid", {"diversity": 0.1}), ("hybrid div 0.3", "hybrid", {"diversity": 0.3})]


def evaluate(c, label, split="time", kind=None):
    pop = None
    for name, strategy, extra in RUNS:
        t = time.monotonic()
        if kind:
            extra = dict(extra, kind=kind)
        r = c.call("recommend.evaluate", strategy=strategy, k=10, holdout=0.2, max_users=1000, split=split,
                   _timeout=600, **extra)
        pop = r["ndcg"] if name == "popular" else pop
        print(f"{label:9s} {split:4s} {name:17s} users={r['users']:4d} P@10={r['precision']:.4f} "
              f"R@10={r['recall']:.4f} NDCG@10={r['ndcg']:.4f} ({r['ndcg'] / pop:.2f}x popular) "
              f"coverage={r['coverage']:.4f} novelty={r['novelty']:.2f} ({time.monotonic() - t:.1f} s)", flush=True)


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


def demo(c):
    r = c.call("demo.load", users=2000, days=60, seed=42, end=1_767_225_600_000, _timeout=600)
    print(f"demo: {r['items']} items, {r['events']} events ({r['users']} users, {r['days']} days)", flush=True)


def quality(sets=None):
    for name in sets or ("movielens", "synthetic", "demo"):
        with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
            globals()[name](c)
            for split in ("time", "user"):
                evaluate(c, name, split)
            if name == "demo":  # only destinations are viewed there
                evaluate(c, "demo dest", "time", kind="destination")


def open_loop(port, users, rate, conns, seconds, extra=None):
    """Open-loop load: request i is due at t0 + i / rate on connection i % conns."""
    n = int(rate * seconds)
    due = {}
    lat = []
    errors = [0]
    lock = threading.Lock()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    for sk in socks:
        sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rnd = random.Random(9)
    reqs = [msgpack.packb([0, i, "recommend.items", [dict(user=f"u{rnd.randrange(users)}", n=20, **(extra or {}))]])
            for i in range(n)]
    t0 = time.perf_counter() + 0.2
    done = threading.Event()

    def sender(ci):
        sk = socks[ci]
        for i in range(ci, n, conns):
            at = t0 + i / rate
            d = at - time.perf_counter()
            if d > 0:
                time.sleep(d)
            due[i] = at
            sk.sendall(reqs[i])

    def receiver(ci):
        sk = socks[ci]
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        want = len(range(ci, n, conns))
        got = 0
        sk.settimeout(30)
        while got < want:
            try:
                data = sk.recv(1 << 16)
            except TimeoutError:
                break  # counted below as unanswered
            if not data:
                break
            up.feed(data)
            now = time.perf_counter()
            for m in up:
                got += 1
                with lock:
                    lat.append((now - due[m[1]]) * 1000)
                    if m[2] is not None:
                        errors[0] += 1
    threads = [threading.Thread(target=f, args=(ci,)) for ci in range(conns) for f in (sender, receiver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    for sk in socks:
        sk.close()
    lat.sort()
    answered = len(lat)
    if len(lat) < n:  # unanswered within 30 s: count them as 30 s late
        lat += [30_000.0] * (n - len(lat))
    q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))]  # noqa: E731
    print(f"recommend.items n=20, open loop {rate}/s offered over {conns} connections, {seconds} s: "
          f"{n} sent, {answered} answered ({errors[0]} errors), throughput={answered / (end - t0):.0f}/s "
          f"p50={q(0.5):.2f} ms p90={q(0.9):.2f} ms p99={q(0.99):.2f} ms p99.9={q(0.999):.2f} ms "
          f"max={lat[-1]:.2f} ms", flush=True)
    print(f"RESULT metric=recommend.items.open_loop rate={rate} conns={conns} p50_ms={q(0.5):.3f} "
          f"p99_ms={q(0.99):.3f} throughput={answered / (end - t0):.0f} errors={errors[0]}", flush=True)


def populate(c, n_items, n_users):
    rnd = random.Random(5)
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


def latency(n_items, n_users, rate=1000, conns=8, seconds=20):
    """$SX_BENCH_KEEP=DIR keeps the populated data directory there and reuses it
    on later runs with the same ITEMS and USERS (a restart instead of the set-up)."""
    keep = os.environ.get("SX_BENCH_KEEP")
    cfg = {"durability": "relaxed"}
    marker = None
    if keep:
        cfg["data_dir"] = os.path.join(keep, "data")
        marker = os.path.join(keep, f"populated-{n_items}-{n_users}")
    with Server(cfg) as srv, srv.client(timeout=600) as c:
        if not marker or not os.path.exists(marker):
            populate(c, n_items, n_users)
            if marker:
                open(marker, "w").close()
        rnd = random.Random(7)
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
        if os.environ.get("SX_BENCH_PAUSE"):
            # for a profiler or an external load generator: the server stays up until stdin closes
            print(f"server pid={srv.pid} port={srv.port}; press Enter to stop", flush=True)
            sys.stdin.readline()
        for r in (rate if isinstance(rate, list) else [rate]):
            if r > 0:
                open_loop(srv.port, n_users, r, conns, seconds)


def factors(out_dir, k=32):
    """ALS item factors learnt from the MovieLens interactions (model.train, then
    model.export format npy) as an ANN set: items as base, users as queries, the
    exact inner-product top 100 as truth. Files: OUT_DIR/movielens-als-k<k>.*"""
    import numpy as np
    os.makedirs(out_dir, exist_ok=True)
    with Server({"durability": "relaxed"}) as srv, srv.client(timeout=600) as c:
        movielens(c)
        j = c.call("model.train", type="als", name="ml", params={"factors": k, "iterations": 15, "refit": True})
        while c.call("job.status", id=j["job"])["state"] == "running":
            time.sleep(0.2)
        st = c.call("job.status", id=j["job"])
        assert st["state"] == "done", st
        print("model.train:", st["result"]["metrics"], flush=True)
        exp = os.path.join(out_dir, f"ml-export-k{k}")
        os.makedirs(exp, exist_ok=True)
        c.call("model.export", name="ml", format="npy", path=exp)
    items = np.load(os.path.join(exp, "item_factors.npy")).astype(np.float32)
    users = np.load(os.path.join(exp, "user_factors.npy")).astype(np.float32)
    items = items[np.linalg.norm(items, axis=1) > 0]
    users = users[np.linalg.norm(users, axis=1) > 0]
    truth = np.argsort(-(users @ items.T), axis=1)[:, :100].astype(np.int32)

    def write(path, a, dtype):
        a = np.ascontiguousarray(a, dtype=dtype)
        out = np.empty((a.shape[0], a.shape[1] + 1), dtype=np.int32)
        out[:, 0] = a.shape[1]
        out[:, 1:] = a.view(np.int32)
        out.tofile(path)
    prefix = os.path.join(out_dir, f"movielens-als-k{k}")
    write(prefix + ".base.fvecs", items, np.float32)
    write(prefix + ".query.fvecs", users, np.float32)
    write(prefix + ".gt.ivecs", truth, np.int32)
    print(f"{prefix}: {items.shape[0]} items x {k}, {users.shape[0]} queries (users), inner-product truth", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "quality"
    if what == "quality":
        quality(sys.argv[2].split(",") if len(sys.argv) > 2 else None)
    elif what == "factors":
        factors(sys.argv[2] if len(sys.argv) > 2 else "/tmp/sx-ann", int(sys.argv[3]) if len(sys.argv) > 3 else 32)
    else:
        a = sys.argv[2:]
        latency(int(a[0]) if a else 100_000, int(a[1]) if len(a) > 1 else 100_000,
                [int(x) for x in a[2].split(",")] if len(a) > 2 else 1000, int(a[3]) if len(a) > 3 else 8,
                float(a[4]) if len(a) > 4 else 20)
