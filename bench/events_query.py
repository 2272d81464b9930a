"""Analytics queries over a large event set, against SQLite in the same run.

Generates USERS users and about EVENTS events over 13 weeks (seeded, numpy): every user
has a first session on a signup day and further sessions whose gaps from signup grow
(a retention curve); a session is search (1-2) -> view (1-4) -> create_trip (25%) ->
book (40% of those). The events go to a fresh sextant through events.track (batches of
10,000 over 4 connections, durability relaxed for the load) and to SQLite (Debian's
python3 sqlite3 module, a file in the temporary directory, indexed on (user, name, time)
and (name, time), plus a users table with the first-seen time, as sextant keeps it).
Then each query runs REPEAT times on both sides and the medians are reported:

  metrics.query  event "search", last 30 days by hour (720 points)       sextant only
  retention      12 weekly cohorts (first seen) x 12 weekly periods, any event
  funnel         search -> view -> create_trip -> book, 30 days, window 1 day: the first
                 query (which builds the in-memory hour blocks it reads), the median of the
                 next REPEAT, and the median with one new event tracked into the last hour
                 before each query (that hour's block is rebuilt: a live dashboard's case);
                 then, after restarting the server on the same store, the first query at once
                 (it waits for the warm-up build, funnel_warm_days) and after the warm-up, and
                 with the warm-up off (funnel_warm_days = 0: the query builds every block)

The SQLite funnel has the same meaning as funnel.query (every search in the range may
start a run; a user counts at the deepest step any run reaches; the first such run gives
the times), so both sides must give the same step counts: the script checks it, and
checks the retention matrices are equal.

    SX_BIN=build/sextant /usr/bin/python3 bench/events_query.py [--users N] [--events N] [--repeat R]
        [--keep DIR]

--keep DIR keeps both stores in DIR and, when DIR holds a complete load of the same size and
seed, reuses them instead of generating and loading again.
"""
import argparse
import multiprocessing as mp
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time

import msgpack
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from sxtest import Server  # noqa: E402

MIN, HOUR, DAY, WEEK = 60_000, 3_600_000, 86_400_000, 7 * 86_400_000
END = 1_735_516_800_000  # 2024-12-30T00:00:00Z, a Monday
WEEKS = 13
START = END - WEEKS * WEEK
NAMES = ["search", "view", "create_trip", "book"]
BATCH, CONNS, DEPTH = 10_000, 4, 2
FUNNEL_WINDOW = DAY


def generate(users, events, seed):
    """Arrays (user, name index, time ms, item) sorted by time."""
    rng = np.random.default_rng(seed)
    per_session = 3.2  # 1.4 + 2 + 0.25 + 0.1 per session, less the sessions past the end
    sessions = max(users, int(events / per_session))
    signup = (np.sqrt(rng.random(users)) * (WEEKS * 7)).astype(np.int64)  # more users later
    activity = rng.lognormal(0.0, 1.0, users)
    extra = sessions - users
    su = np.concatenate([np.arange(users), rng.choice(users, extra, p=activity / activity.sum())])
    gap = np.concatenate([np.zeros(users, np.int64), np.floor(rng.exponential(12.0, extra)).astype(np.int64)])
    day = signup[su] + gap
    keep = day < WEEKS * 7
    su, day = su[keep], day[keep]
    n = len(su)
    hw = np.array([1, .6, .4, .3, .3, .5, 1, 2, 3, 3.5, 3.5, 3.5, 4, 3.8, 3.5, 3.5, 3.8, 4.2, 5, 6, 6.5, 6, 4.5, 2.5])
    hour = rng.choice(24, n, p=hw / hw.sum())
    t0 = START + day * DAY + hour * HOUR + rng.integers(0, 40 * MIN, n)
    ns = 1 + (rng.random(n) < 0.4)
    nv = 1 + np.minimum(3, rng.poisson(1.0, n))
    nc = (rng.random(n) < 0.25).astype(np.int64)
    nb = nc * (rng.random(n) < 0.4)
    cnt = ns + nv + nc + nb
    total = int(cnt.sum())
    sess = np.repeat(np.arange(n), cnt)
    pos = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    name = np.where(pos < ns[sess], 0, np.where(pos < (ns + nv)[sess], 1,
                    np.where(pos < (ns + nv + nc)[sess], 2, 3))).astype(np.int8)
    step = rng.integers(20_000, 180_000, total)
    step[pos == 0] = 0
    cs = np.cumsum(step)
    t = t0[sess] + cs - cs[np.cumsum(cnt) - cnt][sess]  # offsets from the session's first event
    user = su[sess]
    item = rng.zipf(1.3, total) % 1000
    order = np.argsort(t, kind="stable")
    return user[order], name[order], t[order], item[order]


def send_worker(port, lo, hi, arrays, q):
    user, name, t, item = arrays
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unp = msgpack.Unpacker(raw=False)
    starts = list(range(lo, hi, BATCH))
    sent = done = accepted = 0

    def send():
        nonlocal sent
        a = starts[sent]
        b = min(a + BATCH, hi)
        evs = []
        for i in range(a, b):
            nm = NAMES[name[i]]
            ev = {"user": f"u{user[i]}", "name": nm, "time": int(t[i])}
            if nm != "search":
                ev["item"] = f"d{item[i]}"
            if nm == "book":
                ev["properties"] = {"value": int(50 + item[i])}
            evs.append(ev)
        s.sendall(msgpack.packb([0, sent, "events.track", [{"events": evs}]], use_bin_type=True))
        sent += 1

    while sent < min(DEPTH, len(starts)):
        send()
    while done < sent:
        data = s.recv(1 << 16)
        if not data:
            raise SystemExit("connection closed")
        unp.feed(data)
        for m in unp:
            if m[2] is not None:
                raise SystemExit(f"error: {m[2]}")
            accepted += m[3]["accepted"]
            done += 1
            if sent < len(starts):
                send()
    q.put(accepted)


def load_sextant(port, arrays):
    n = len(arrays[0])
    q = mp.Queue()
    cuts = [n * i // CONNS for i in range(CONNS + 1)]
    ps = [mp.Process(target=send_worker, args=(port, cuts[i], cuts[i + 1], arrays, q)) for i in range(CONNS)]
    for p in ps:
        p.start()
    got = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return got


def load_sqlite(path, arrays):
    user, name, t, _ = arrays
    db = sqlite3.connect(path)
    db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-1000000;"
                     "CREATE TABLE events(user INTEGER, name INTEGER, time INTEGER);")
    db.executemany("INSERT INTO events VALUES (?,?,?)",
                   zip(user.tolist(), name.tolist(), t.tolist()))
    db.executescript("CREATE INDEX ev_user ON events(user, name, time);"
                     "CREATE INDEX ev_name ON events(name, time);"
                     "CREATE TABLE users AS SELECT user, MIN(time) AS first_seen FROM events GROUP BY user;"
                     "CREATE INDEX users_first ON users(first_seen);"
                     "ANALYZE;")
    db.commit()
    return db


def sqlite_retention(db, w0):
    rows = db.execute(
        "SELECT (u.first_seen - ?1) / ?2 AS c, (e.time - ?1) / ?2 AS p, COUNT(DISTINCT e.user) "
        "FROM users u JOIN events e ON e.user = u.user "
        "WHERE u.first_seen >= ?1 AND u.first_seen < ?1 + 12 * ?2 AND e.time >= u.first_seen - (u.first_seen - ?1) % ?2 "
        "AND e.time < ?1 + 24 * ?2 GROUP BY c, p", (w0, WEEK)).fetchall()
    sizes = dict(db.execute("SELECT (first_seen - ?1) / ?2, COUNT(*) FROM users WHERE first_seen >= ?1 "
                            "AND first_seen < ?1 + 12 * ?2 GROUP BY 1", (w0, WEEK)).fetchall())
    m = {}
    for c, p, n in rows:
        if 0 <= p - c < 12:
            m[(c, p - c)] = n
    return [(sizes.get(c, 0), [m.get((c, k), 0) for k in range(12)]) for c in range(12)]


FUNNEL_SQL = """
WITH s AS (SELECT user, time AS t0 FROM events WHERE name = 0 AND time >= :from AND time < :to),
a AS (SELECT user, t0, (SELECT MIN(time) FROM events e WHERE e.user = s.user AND e.name = 1
                         AND e.time >= s.t0 AND e.time <= s.t0 + :w AND e.time < :end) AS t1 FROM s),
b AS (SELECT user, t0, t1, (SELECT MIN(time) FROM events e WHERE e.user = a.user AND e.name = 2
                             AND e.time >= a.t1 AND e.time <= a.t0 + :w AND e.time < :end) AS t2 FROM a),
c AS (SELECT user, t0, t1, t2, (SELECT MIN(time) FROM events e WHERE e.user = b.user AND e.name = 3
                                 AND e.time >= b.t2 AND e.time <= b.t0 + :w AND e.time < :end) AS t3 FROM b),
d AS (SELECT user, t0, t1, t2, t3,
             1 + (t1 IS NOT NULL) + (t2 IS NOT NULL) + (t3 IS NOT NULL) AS depth FROM c),
r AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY user ORDER BY depth DESC, t0) AS rn FROM d)
SELECT depth, t0, t1, t2, t3 FROM r WHERE rn = 1
"""


def sqlite_funnel(db, frm, to):
    rows = db.execute(FUNNEL_SQL, {"from": frm, "to": to, "w": FUNNEL_WINDOW,
                                   "end": to + FUNNEL_WINDOW}).fetchall()
    users = [sum(1 for r in rows if r[0] > k) for k in range(4)]
    med = [None] + [statistics.median([r[k + 1] - r[k] for r in rows if r[0] > k]) if users[k] else None
                    for k in range(1, 4)]
    return users, med


def timed(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return out, statistics.median(times), times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args()

    tmp = args.keep or tempfile.mkdtemp(prefix="sx-bench-q-")
    os.makedirs(tmp, exist_ok=True)
    marker = os.path.join(tmp, "loaded")
    want = f"{args.users} {args.events} {args.seed}"
    reuse = args.keep and os.path.exists(marker) and open(marker).read().split("\n")[0] == want
    try:
        if reuse:
            n = int(open(marker).read().split("\n")[1])
            db = sqlite3.connect(os.path.join(tmp, "events.db"))
            print(f"reusing the stores in {tmp}: {n} events", flush=True)
        else:
            if os.path.exists(marker):
                os.remove(marker)
            for f in ("events.db",):
                if os.path.exists(os.path.join(tmp, f)):
                    os.remove(os.path.join(tmp, f))
            shutil.rmtree(os.path.join(tmp, "sextant"), ignore_errors=True)
            t = time.perf_counter()
            arrays = generate(args.users, args.events, args.seed)
            n = len(arrays[0])
            print(f"generated {n} events, {len(np.unique(arrays[0]))} users in {time.perf_counter() - t:.1f} s",
                  flush=True)
            t = time.perf_counter()
            db = load_sqlite(os.path.join(tmp, "events.db"), arrays)
            print(f"sqlite: loaded and indexed in {time.perf_counter() - t:.1f} s", flush=True)
        os.makedirs(os.path.join(tmp, "sextant"), exist_ok=True)
        with Server({"durability": "relaxed", "log_level": "warn", "data_dir": os.path.join(tmp, "sextant")},
                    copy_scripts=False) as srv:
            if not reuse:
                t = time.perf_counter()
                got = load_sextant(srv.port, arrays)
                dt = time.perf_counter() - t
                print(f"sextant: {got} events tracked in {dt:.1f} s ({got / dt:.0f}/s)", flush=True)
                assert got == n
                if args.keep:
                    with open(marker, "w") as f:
                        f.write(f"{want}\n{n}\n")
            with srv.client(timeout=600) as c:
                frm, to = END - 30 * DAY, END
                w0 = END - 12 * WEEK
                _, m_ms, _ = timed(lambda: c.call("metrics.query", event="search", interval="hour",
                                                   **{"from": frm, "to": to}), args.repeat)
                ret, r_ms, _ = timed(lambda: c.call("cohort.retention", cohort_by="week", period="week",
                                                    periods=12, **{"from": w0, "to": END}), args.repeat)
                # the first funnel builds the hour blocks it reads (cold); the others reuse them
                fun, _, f_all = timed(lambda: c.call("funnel.query", steps=NAMES, window_ms=FUNNEL_WINDOW,
                                                     **{"from": frm, "to": to}), args.repeat + 1)
                f_cold, f_ms = f_all[0], statistics.median(f_all[1:])
                # a dashboard's view: one event arrives in the last hour before each query, so
                # that hour's block is rebuilt every time (a name no step has: a kept store
                # answers the same funnel next time)
                live, live_events = [], []
                for i in range(args.repeat):
                    c.call("events.track", user=f"u{i}", name="live", time=to - 1000 - i)
                    live_events.append((i, len(NAMES), to - 1000 - i))
                    t = time.perf_counter()
                    c.call("funnel.query", steps=NAMES, window_ms=FUNNEL_WINDOW, **{"from": frm, "to": to})
                    live.append((time.perf_counter() - t) * 1000)
                f_live = statistics.median(live)
            fargs = dict(steps=NAMES, window_ms=FUNNEL_WINDOW, **{"from": frm, "to": to})
            # a server just started: the first query waits for the warm-up build
            srv.restart()
            with srv.client(timeout=600) as c:
                t = time.perf_counter()
                assert c.call("funnel.query", **fargs) == fun
                f_restart = (time.perf_counter() - t) * 1000
                warm_info = c.call("server.info")["plugins"]["events"]["funnel_blocks"]
            # started a while ago: the warm-up is done
            srv.restart()
            with srv.client(timeout=600) as c:
                for _ in range(600):
                    b = c.call("server.info")["plugins"]["events"]["funnel_blocks"]
                    if b["warm_builds"] and not b["warming"]:
                        break
                    time.sleep(0.05)
                warm_ms = b["warm_last_ms"]
                t = time.perf_counter()
                assert c.call("funnel.query", **fargs) == fun
                f_after_warm = (time.perf_counter() - t) * 1000
            # no warm-up: the first query builds every block itself
            srv.config["funnel_warm_days"] = 0
            srv.restart()
            with srv.client(timeout=600) as c:
                t = time.perf_counter()
                assert c.call("funnel.query", **fargs) == fun
                f_nowarm = (time.perf_counter() - t) * 1000
            sx_ret = [(x["size"], [v or 0 for v in x["returning"]]) for x in ret["cohorts"]]
            sx_fun = [s["users"] for s in fun["steps"]]
            sx_med = [s["median_ms"] for s in fun["steps"]]
        sq_ret, sr_ms, _ = timed(lambda: sqlite_retention(db, w0), args.repeat)
        (sq_fun, sq_med), sf_ms, sf_all = timed(lambda: sqlite_funnel(db, frm, to), max(1, args.repeat // 3))
        if args.keep:
            # the kept sextant store holds the live events now: so does the kept SQLite one
            db.executemany("INSERT INTO events VALUES (?,?,?)", live_events)
            db.commit()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmachine load average: {os.getloadavg()[0]:.1f}; {n} events, {args.users} users, "
          f"median of {args.repeat} (SQLite funnel: {max(1, args.repeat // 3)})")
    print(f"funnel steps: sextant {sx_fun} medians {sx_med}")
    print(f"              sqlite  {sq_fun} medians {sq_med}")
    print(f"retention cohort sizes: {[s for s, _ in sx_ret]}")
    same_f = sx_fun == sq_fun and sx_med == sq_med
    same_r = sx_ret == sq_ret
    print(f"same funnel: {same_f}; same retention matrix: {same_r}")
    print("| query | target | sextant ms | sqlite ms | ratio |")
    print("|---|---|---|---|---|")
    print(f"| metrics.query 30 days by hour | < 5 | {m_ms:.2f} | - | - |")
    print(f"| retention 12x12 weekly | < 50 | {r_ms:.2f} | {sr_ms:.1f} | {sr_ms / r_ms:.0f}x |")
    print(f"| funnel 4 steps, 30 days | < 200 | {f_ms:.1f} | {sf_ms:.0f} | {sf_ms / f_ms:.0f}x |")
    first = "waits for the warm-up of a kept store" if reuse else "builds the blocks"
    print(f"| funnel, first ({first}) | - | {f_cold:.0f} | {sf_ms:.0f} | {sf_ms / f_cold:.1f}x |")
    print(f"| funnel, a new event before each | - | {f_live:.1f} | - | - |")
    print(f"| funnel, first after a restart (waits for the warm-up) | - | {f_restart:.0f} | {sf_ms:.0f} | "
          f"{sf_ms / f_restart:.0f}x |")
    print(f"| funnel, first after the warm-up ({warm_ms} ms) | - | {f_after_warm:.0f} | {sf_ms:.0f} | "
          f"{sf_ms / f_after_warm:.0f}x |")
    print(f"| funnel, first with funnel_warm_days = 0 (builds its blocks) | - | {f_nowarm:.0f} | {sf_ms:.0f} | "
          f"{sf_ms / f_nowarm:.0f}x |")
    print(f"warm-up after the first restart: {warm_info}")
    print(f"funnel runs ms: sextant {[round(x, 1) for x in f_all]}, sqlite {[round(x) for x in sf_all]}")
    if not (same_f and same_r):
        sys.exit(1)


if __name__ == "__main__":
    main()
