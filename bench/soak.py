"""Soak: a bounded mixed load against one server for MINUTES minutes (default 10).

Workers (each its own connection, closed loop):
  - track: events.track batches of 100 events of the demo users and items
  - assign: experiment.assign of random users to 4 running experiments
  - recommend: recommend.items n=20 for random demo users
  - dashboards: 3 connections subscribed to dashboard "overview" (refresh 1 s), reading pushes
  - reload: a methods script re-uploaded every 10 s (script.put), and called in between
Every 30 s it records each operation's count, errors and p50/p99 latency for that window,
and the server's RSS, total and anonymous (the LMDB file is mapped, so total RSS grows with
the data while anonymous memory is the server's own). It stops by itself; the server is stopped at the end.

    SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/soak.py [MINUTES]
    SOAK_DASHBOARDS=0 ...     # without the dashboard subscribers
    SOAK_LOG=/tmp/soak.log ...  # debug log level (per-panel query times), server log copied there
"""
import os
import random
import shutil
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from sxtest import RpcError, Server  # noqa: E402

MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
WINDOW = 30.0
USERS = [f"u{i:07d}" for i in range(2000)]

lock = threading.Lock()
stats = {}  # op -> {"lat": [...], "err": n}


def record(op, seconds, ok=True):
    with lock:
        s = stats.setdefault(op, {"lat": [], "err": 0})
        if ok:
            s["lat"].append(seconds)
        else:
            s["err"] += 1


def timed(op, fn):
    t = time.perf_counter()
    try:
        fn()
        record(op, time.perf_counter() - t)
    except RpcError as e:
        record(op, 0, ok=False)
        print(f"{op}: {e}", file=sys.stderr)


def anon_kb(pid):
    """The server's own memory: anonymous RSS (the mapped LMDB file is file-backed)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def main():
    config = {"demo": True, "script_timeout_ms": 5000}
    if os.environ.get("SOAK_LOG"):
        config["log_level"] = "debug"
    with Server(config=config, copy_scripts=True) as srv:
        print(f"server pid {srv.pid}", flush=True)
        c = srv.client()
        time.sleep(3)  # the demo data loads
        items = [i["id"] for i in c.call("items.list", limit=200)["items"]]
        for k in range(4):
            key = f"soak{k}"
            c.call("experiment.create", {"key": key, "layer": f"layer{k % 2}", "stopping_rule": "none",
                                         "variants": [{"name": "control"}, {"name": "treatment"}]})
            c.call("experiment.start", key=key)
        stop = threading.Event()
        deadline = time.monotonic() + MINUTES * 60

        def track():
            cl = srv.client()
            rnd = random.Random(1)
            while not stop.is_set():
                evs = [{"user": rnd.choice(USERS), "name": rnd.choice(["search", "view", "click", "book"]),
                        "item": rnd.choice(items), "properties": {"value": rnd.randrange(1000)}}
                       for _ in range(100)]
                timed("events.track x100", lambda: cl.call("events.track", events=evs))

        def assign():
            cl = srv.client()
            rnd = random.Random(2)
            while not stop.is_set():
                timed("experiment.assign", lambda: cl.call("experiment.assign", key=f"soak{rnd.randrange(4)}",
                                                           user=rnd.choice(USERS)))

        def recommend():
            cl = srv.client()
            rnd = random.Random(3)
            while not stop.is_set():
                timed("recommend.items", lambda: cl.call("recommend.items", user=rnd.choice(USERS), n=20))

        def dashboard():
            cl = srv.client()
            cl.call("dashboard.subscribe", name="overview", refresh_ms=1000)
            while not stop.is_set():
                try:
                    t = time.perf_counter()
                    cl.notification(timeout=5)
                    record("dashboard push", time.perf_counter() - t)
                except TimeoutError:
                    record("dashboard push", 0, ok=False)

        def reload():
            cl = srv.client()
            n = 0
            while not stop.is_set():
                n += 1
                src = "return { v = function() return %d end }" % n
                timed("script.put", lambda: cl.call("script.put", kind="methods", name="soak", source=src))
                t_end = time.monotonic() + 10
                while time.monotonic() < t_end and not stop.is_set():
                    timed("soak.v", lambda: cl.call("soak.v"))
                    time.sleep(0.05)

        threads = [threading.Thread(target=f) for f in (track, assign, recommend, reload)]
        threads += [threading.Thread(target=dashboard) for _ in range(int(os.environ.get("SOAK_DASHBOARDS", "3")))]
        for t in threads:
            t.start()
        rows = []
        start = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(min(WINDOW, max(0.0, deadline - time.monotonic())))
            with lock:
                snap = {op: s for op, s in stats.items()}
                stats.clear()
            rss = srv.rss_kb()
            anon = anon_kb(srv.pid)
            t = time.monotonic() - start
            for op, s in sorted(snap.items()):
                lat = sorted(s["lat"])
                p50 = lat[len(lat) // 2] * 1000 if lat else 0
                p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0
                rows.append((t, op, len(lat), s["err"], p50, p99, rss, anon))
            print(f"t={t:5.0f}s rss={rss / 1024:.0f} MiB anon={anon / 1024:.0f} MiB " + ", ".join(
                f"{op}: {len(s['lat'])} ok {s['err']} err" for op, s in sorted(snap.items())), flush=True)
        stop.set()
        for t in threads:
            t.join(10)
        if os.environ.get("SOAK_LOG"):
            shutil.copy(srv.stderr_path, os.environ["SOAK_LOG"])
        print("\n| t (s) | operation | calls | errors | p50 ms | p99 ms | RSS MiB | anonymous MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for t, op, n, err, p50, p99, rss, anon in rows:
            print(f"| {t:.0f} | {op} | {n} | {err} | {p50:.2f} | {p99:.2f} | {rss / 1024:.0f} | {anon / 1024:.0f} |")


if __name__ == "__main__":
    main()
