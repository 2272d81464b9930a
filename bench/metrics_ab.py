"""metrics.query and metrics.active on one store, server binaries side by side.

bench/events_query.py measures each query once per fresh load; this loads the same data
(its generator, seed 1) once into DATA_DIR, then starts each binary on that store in turn,
ROUNDS times, and times each query REPEAT times per round after one warm-up call (wall
time from the client; server CPU per call from /proc). The answers of every binary must be
identical, or the script fails. A store loaded by an older binary also checks that the new
one reads what the old one wrote.

    SX_BIN=build/sextant /usr/bin/python3 bench/metrics_ab.py load DATA_DIR [--users N] [--events N]
    /usr/bin/python3 bench/metrics_ab.py query DATA_DIR BIN_A,BIN_B[,...] [--rounds 3] [--repeat 30]
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import events_query as eq  # noqa: E402
from sxtest import Server  # noqa: E402

DAY, HOUR, MIN = eq.DAY, eq.HOUR, eq.MIN
QUERIES = {
    "search, 30 days by hour": ("metrics.query", dict(event="search", interval="hour",
                                                      **{"from": eq.END - 30 * DAY, "to": eq.END})),
    "*, 30 days by hour": ("metrics.query", dict(event="*", interval="hour",
                                                 **{"from": eq.END - 30 * DAY, "to": eq.END})),
    "view, ragged 30 days by hour": ("metrics.query", dict(event="view", interval="hour",
                                                           **{"from": eq.END - 30 * DAY - 5 * HOUR - 7,
                                                              "to": eq.END - 3 * HOUR})),
    "book, 91 days by day": ("metrics.query", dict(event="book", interval="day",
                                                   **{"from": eq.START, "to": eq.END})),
    "search, 1 day by minute": ("metrics.query", dict(event="search", interval="minute",
                                                      **{"from": eq.END - DAY - 30 * MIN, "to": eq.END})),
    "metrics.active month": ("metrics.active", dict(window="month", at=eq.END - 1)),
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def load(data_dir, users, events):
    arrays = eq.generate(users, events, 1)
    os.makedirs(data_dir, exist_ok=True)
    with Server({"durability": "relaxed", "log_level": "warn", "data_dir": data_dir}, copy_scripts=False) as srv:
        t = time.perf_counter()
        got = eq.load_sextant(srv.port, arrays)
        print(f"{got} events tracked in {time.perf_counter() - t:.0f} s")


def query(data_dir, bins, rounds, repeat):
    wall = {b: {q: [] for q in QUERIES} for b in bins}
    cpu = {b: {q: [] for q in QUERIES} for b in bins}
    answers, same = {}, True
    for _ in range(rounds):
        for b in bins:
            os.environ["SX_BIN"] = b
            with Server({"log_level": "warn", "data_dir": data_dir}, copy_scripts=False) as srv:
                with srv.client(timeout=600) as c:
                    for name, (method, args) in QUERIES.items():
                        out = c.call(method, **args)
                        c0 = cpu_seconds(srv.pid)
                        for _ in range(repeat):
                            t = time.perf_counter()
                            out = c.call(method, **args)
                            wall[b][name].append((time.perf_counter() - t) * 1000)
                        cpu[b][name].append((cpu_seconds(srv.pid) - c0) * 1000 / repeat)
                        key = json.dumps(out, sort_keys=True)
                        if answers.setdefault(name, key) != key:
                            print(f"different answer: {name} from {b}")
                            same = False
    print(f"load average {os.getloadavg()[0]:.1f}; medians over {rounds} rounds x {repeat} calls; "
          f"ms wall (client) / ms server CPU per call")
    print("| query | " + " | ".join(bins) + " |")
    print("|---|" + "---|" * len(bins))
    for name in QUERIES:
        print(f"| {name} | " + " | ".join(f"{statistics.median(wall[b][name]):.2f} / "
                                          f"{statistics.median(cpu[b][name]):.2f}" for b in bins) + " |")
    print(f"same answers: {same}")
    if not same:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "query"])
    ap.add_argument("data_dir")
    ap.add_argument("bins", nargs="?")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=30)
    a = ap.parse_args()
    if a.mode == "load":
        load(a.data_dir, a.users, a.events)
    else:
        if not a.bins:
            ap.error("query needs BIN_A,BIN_B")
        query(a.data_dir, a.bins.split(","), a.rounds, a.repeat)


if __name__ == "__main__":
    main()
