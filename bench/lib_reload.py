"""Lib hot reload cost: script.put of a lib that N methods scripts require
(each is compiled again against the new version before the lib switches),
against script.put of a methods script of the same size (the peer: one
compile), and a call through a lib function against the same function
inlined in the methods script. Timed at the client (loopback included),
durability relaxed.

    SX_BIN=build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/lib_reload.py [reps]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server  # noqa: E402

LIB = "local M = {}\nfunction M.f(x) return x * %d + 1 end\nreturn M\n"
DEP = 'local lib = require "shared"\nreturn { f = function(ctx, a) return lib.f(a.x or 1) end }\n'
INLINE = "local M = {}\nfunction M.f(x) return x * %d + 1 end\nreturn { f = function(ctx, a) return M.f(a.x or 1) end }\n"


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with Server(copy_scripts=False, config={"durability": "relaxed"}) as s, s.client(timeout=120) as c:
        c.call("script.put", kind="lib", name="shared", source=LIB % 2)
        c.call("script.put", kind="methods", name="inline", source=INLINE % 2)
        k = [0]

        def put_lib():
            k[0] += 1
            c.call("script.put", kind="lib", name="shared", source=LIB % (k[0] % 7 + 2))

        def put_methods():
            k[0] += 1
            c.call("script.put", kind="methods", name="inline", source=INLINE % (k[0] % 7 + 2))

        print("dependents  lib put ms  methods put ms (peer)  ratio")
        made = 0
        for n in (0, 10, 100):
            while made < n:
                c.call("script.put", kind="methods", name="dep%d" % made, source=DEP)
                made += 1
            a, b = timed(put_lib, reps), timed(put_methods, reps)
            print(f"{n:10d}  {a:10.3f}  {b:21.3f}  {a / b:5.1f}")
        calls = 2000
        via = timed(lambda: [c.call("dep0.f", x=3) for _ in range(calls)], 3) / calls
        inl = timed(lambda: [c.call("inline.f", x=3) for _ in range(calls)], 3) / calls
        print(f"call through the lib {via * 1000:.1f} us, inlined {inl * 1000:.1f} us (ratio {via / inl:.2f})")


if __name__ == "__main__":
    main()
