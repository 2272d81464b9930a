"""Forecast accuracy tracking: the cost of joining logged forecast periods with
their actuals in the accuracy sweep, against the peer a client would run
without it (one metrics.query {where} per series and period over RPC, then the
same error sums in Python). A recipe returns N synthetic series keyed by
destination; forecast.run logs them (horizon 7, daily); each predict.sweep
{now = origin + d days} joins one period of every series.

    SX_BIN=$PWD/build/sextant SX_SOURCE_DIR=$PWD /usr/bin/python3 bench/forecast_sweep.py [N] [repeats]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from sxtest import Server, wait_until  # noqa: E402

DAY = 86_400_000
H = 7


def recipe(n):
    return """
return { horizon = %d, season = 7,
  series = function(ctx, args)
    local out = {}
    for k = 1, %d do
      local v = {}
      for i = 1, 28 do v[i] = 5 + (i %% 7) + (k %% 3) end
      out["d" .. k] = v
    end
    return out
  end,
  actual = { event = "bk", group_by = "destination" } }
""" % (H, n)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sweep, peer, acc = [], [], []
    for _ in range(repeats):
        with Server(config={"durability": "relaxed"}, scripts={"forecasts/many.lua": recipe(n)}) as s, \
                s.client(timeout=600) as c:
            c.call("metrics.dimensions", event="bk", dimensions=["destination"])
            c.call("events.track", events=[{"user": "u", "name": "bk", "time": int(time.time() * 1000),
                                            "properties": {"destination": f"d{k}"}} for k in range(1, 101)])
            r = c.call("forecast.run", recipe="many")
            st = wait_until(lambda: (lambda x: x if x["state"] != "running" else None)(
                c.call("job.status", id=r["job"])), 600)
            res = st["result"]
            origin = res["tracked"]["origin"]
            fc = {x["name"]: x for x in res["series"]}
            for d in range(1, H + 1):
                t = time.perf_counter()
                x = c.call("predict.sweep", now=origin + d * DAY, limit=1000000)
                sweep.append((time.perf_counter() - t) / n)
                assert x["forecasts"]["periods"] == n, x
                # the peer: the same period of every series joined from the client
                t = time.perf_counter()
                ae = 0.0
                for k, f in fc.items():
                    q = c.call("metrics.query", **{"event": "bk", "from": origin + (d - 1) * DAY,
                                                   "to": origin + d * DAY, "interval": "day",
                                                   "where": {"destination": k}})
                    ae += abs(q["total"]["count"] - f["mean"][d - 1])
                peer.append((time.perf_counter() - t) / n)
            t = time.perf_counter()
            a = c.call("forecast.accuracy", recipe="many", at=origin + H * DAY)
            acc.append(time.perf_counter() - t)
            assert a["n"] == n * H
    ms, mp = statistics.median(sweep), statistics.median(peer)
    print(f"series {n}, horizon {H}, {repeats} runs: sweep {ms * 1e6:.1f} us/period (median of {len(sweep)} passes); "
          f"client peer {mp * 1e6:.1f} us/period; ratio {mp / ms:.1f}x; "
          f"forecast.accuracy over {n * H} periods, 200 keys listed: {statistics.median(acc) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
