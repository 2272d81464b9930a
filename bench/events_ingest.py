"""events.track ingest benchmark: events per second with batches of 1,000 over 4 connections
(one process each, 2 batches in flight per connection), durability full and relaxed, and the
store's bytes per event. Events: 100,000 users, 6 names, 1,000 items, times over the last
24 hours, properties {value, device}; batches are packed once and replayed.

    SX_BIN=build/sextant /usr/bin/python3 bench/events_ingest.py [SECONDS] [METHOD]

METHOD ping sends the same frames to `ping`: the ceiling of these Python clients (the
server decodes the frame and answers "pong"). bench/run_ingest.sh does the same with a C
client (bench_rpc --op track), which is not the bottleneck.
"""
import multiprocessing as mp
import os
import random
import socket
import sys
import time

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from sxtest import Server  # noqa: E402

CONNS, BATCH, DEPTH = 4, 1000, 2
NAMES = ["search", "view", "click", "create_trip", "book", "rate"]


def make_batches(seed, n):
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for _ in range(n):
        evs = [{"user": f"u{rnd.randrange(100000)}", "name": rnd.choice(NAMES),
                "item": f"i{rnd.randrange(1000)}", "time": now - rnd.randrange(86_400_000),
                "properties": {"value": rnd.randrange(500), "device": rnd.choice(["ios", "web"])}}
               for _ in range(BATCH)]
        out.append(msgpack.packb([{"events": evs}], use_bin_type=True))
    return out


def worker(port, seed, seconds, q, method="events.track"):
    batches = make_batches(seed, 16)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unp = msgpack.Unpacker(raw=False)
    sent = done = accepted = 0
    deadline = time.monotonic() + seconds

    def send():
        nonlocal sent
        # [0, msgid, method, params] with params packed once
        head = b"\x94" + msgpack.packb(0) + msgpack.packb(sent & 0xFFFFFFFF) + msgpack.packb(method)
        s.sendall(head + batches[sent % len(batches)])
        sent += 1

    for _ in range(DEPTH):
        send()
    t0 = time.monotonic()
    while done < sent:
        data = s.recv(1 << 16)
        if not data:
            break
        unp.feed(data)
        for m in unp:
            if m[2] is not None:
                raise SystemExit(f"error: {m[2]}")
            accepted += BATCH if m[3] == "pong" else m[3]["accepted"]
            done += 1
            if time.monotonic() < deadline:
                send()
    q.put((accepted, time.monotonic() - t0))


def run(durability, seconds, method="events.track"):
    with Server({"durability": durability, "log_level": "warn"}, copy_scripts=False) as srv:
        q = mp.Queue()
        ps = [mp.Process(target=worker, args=(srv.port, i, seconds, q, method)) for i in range(CONNS)]
        for p in ps:
            p.start()
        res = [q.get() for _ in ps]
        for p in ps:
            p.join()
        events = sum(r[0] for r in res)
        wall = max(r[1] for r in res)
        info = srv.client().call("server.info")
        used = info["store"]["used_bytes"]
        return events, wall, used


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    method = sys.argv[2] if len(sys.argv) > 2 else "events.track"
    print("| durability | method | events | seconds | events/s | store bytes/event |")
    print("|---|---|---|---|---|---|")
    for d in ("relaxed",) if method == "ping" else ("relaxed", "full"):
        ev, wall, used = run(d, seconds, method)
        print(f"| {d} | {method} | {ev} | {wall:.2f} | {ev / wall:,.0f} | {used / ev:.0f} |")


if __name__ == "__main__":
    main()
