"""Forecast error as actuals arrive, end to end: forecast.run of the
bookings_by_destination recipe (which declares `actual`) logs each series;
events with explicit times make the actuals of the forecast days; predict.sweep
at a chosen `now` joins the days that have closed; forecast.accuracy returns
MAPE, sMAPE, MAE, RMSE, bias and coverage equal to the values computed here by
hand from the served forecast; the log and the sums survive a restart; alert
rules publish on `alerts`; the Lua API and the predictions dashboard; bad
inputs."""
import math
import random
import time

import pytest

from sxtest import RpcError, Server, wait_until

DAY = 86_400_000
RECIPE = "bookings_by_destination"
EVENT = "fbook"
H = 7
# actuals of the 7 forecast days; rome has a zero day (left out of MAPE) and
# a day far outside any interval of a series of about 3 a day (coverage < 1)
ACTUAL = {"paris": [8, 6, 5, 7, 9, 6, 4], "rome": [3, 0, 4, 2, 25, 3, 1]}

SCRIPTS = {
    "forecasts/untracked.lua": """
return { horizon = 3, series = function(ctx, args) return { 1, 2, 3, 4, 5, 6, 7, 8 } end }
""",
    "forecasts/bad_period.lua": """
return { horizon = 3, series = function(ctx, args) return { 1, 2, 3, 4, 5, 6, 7, 8 } end,
         actual = { event = "fbook", period = "fortnight" } }
""",
    "forecasts/no_group.lua": """
return { horizon = 3, series = function(ctx, args) return { a = { 1, 2, 3, 4, 5 }, b = { 2, 3, 4, 5, 6 } } end,
         actual = { event = "fbook" } }
""",
    # one ungrouped series (the event's total per hour) whose forecast starts 5
    # hours ago: its periods are closed at once, so the timer's pass joins them
    "forecasts/past_hours.lua": """
local H = 3600000
return { horizon = 3, transform = "log",
         series = function(ctx, args) return { 4, 5, 4, 6, 5, 4, 5, 6, 5, 4 } end,
         actual = function(ctx, args)
           return { event = "fpast", field = "sum", period = "hour",
                    origin = math.floor(ctx.now() / H) * H - 5 * H }
         end }
""",
}


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def wait_job(c, job, timeout=120):
    st = wait_until(lambda: (lambda s: s if s["state"] != "running" else None)(c.call("job.status", id=job)),
                    timeout)
    assert st, f"job {job} still running"
    return st


def errors(points):
    """The metrics by hand: points = [(actual, mean, lo, hi)]."""
    n = len(points)
    nz = [(a, f) for a, f, _, _ in points if a != 0]
    sape = [2 * abs(a - f) / (abs(a) + abs(f)) if abs(a) + abs(f) > 0 else 0.0 for a, f, _, _ in points]
    return {
        "n": n,
        "n_ape": len(nz),
        "mape": 100 * sum(abs(a - f) / abs(a) for a, f in nz) / len(nz) if nz else None,
        "smape": 100 * sum(sape) / n,
        "mae": sum(abs(a - f) for a, f, _, _ in points) / n,
        "rmse": math.sqrt(sum((a - f) ** 2 for a, f, _, _ in points) / n),
        "bias": sum(f - a for a, f, _, _ in points) / n,
        "coverage": sum(1 for a, _, lo, hi in points if lo <= a <= hi) / n,
    }


def check(got, want):
    for k, v in want.items():
        if v is None:
            assert got[k] is None, k
        elif isinstance(v, int):
            assert got[k] == v, (k, got[k], v)
        else:
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (k, got[k], v)


def points(fc, keys, days):
    return [(ACTUAL[k][j], fc[k]["mean"][j], fc[k]["lo"][j], fc[k]["hi"][j]) for k in keys for j in days]


@pytest.fixture(scope="module")
def server():
    with Server(scripts=SCRIPTS) as s:
        with s.client(timeout=120) as c:
            c.call("metrics.dimensions", event=EVENT, dimensions=["destination"])
            today = int(time.time() * 1000) // DAY * DAY
            rng = random.Random(3)
            evs = []
            for d in range(1, 57):
                for dest, base in (("paris", 6), ("rome", 3)):
                    for i in range(base + 2 * (d % 7 == 0) + rng.randrange(2)):
                        evs.append({"user": f"h{d}_{i}", "name": EVENT, "time": today - d * DAY + 3_600_000 + i,
                                    "properties": {"destination": dest}})
            assert c.call("events.track", events=evs)["rejected"] == []
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=120) as cl:
        yield cl


def test_serve_then_actuals_then_sweep(c, server):
    t_req = int(time.time() * 1000)
    r = c.call("forecast.run", recipe=RECIPE, args={"event": EVENT}, horizon=H)
    st = wait_job(c, r["job"])
    assert st["state"] == "done", st
    res = st["result"]
    tr = res["tracked"]
    origin = tr["origin"]
    assert origin in (t_req // DAY * DAY, t_req // DAY * DAY + DAY)
    assert tr["period"] == DAY and tr["logged"] == 2 and tr["unlogged"] == 0 and tr["run"] >= 1
    fc = {s["name"]: s for s in res["series"]}
    assert set(fc) == {"paris", "rome"} and all(len(s["mean"]) == H for s in fc.values())

    # the actuals: events inside each forecast day, one at its last millisecond,
    # and some outside the horizon that must not count
    evs = []
    for dest, counts in ACTUAL.items():
        for j, n in enumerate(counts):
            for i in range(n):
                t = origin + j * DAY + 7_200_000 + i * 60_000 if i else origin + (j + 1) * DAY - 1
                evs.append({"user": f"a{dest}{j}_{i}", "name": EVENT, "time": t, "properties": {"destination": dest}})
        evs.append({"user": "late", "name": EVENT, "time": origin + H * DAY, "properties": {"destination": dest}})
    evs.append({"user": "other", "name": EVENT, "time": origin + DAY, "properties": {"destination": "lyon"}})
    assert c.call("events.track", events=evs)["rejected"] == []

    # no day has closed yet: nothing is joined
    s = c.call("predict.sweep", now=origin + DAY - 1)["forecasts"]
    assert s == {"visited": 0, "periods": 0, "skipped": 0, "finished": 0, "dropped": 0, "done": True}
    a = c.call("forecast.accuracy", recipe=RECIPE, at=origin + DAY - 1)
    assert a["n"] == 0 and a["mape"] is None and a["keys"] == [] and a["alert"] is None

    # three days closed: 2 series x 3 days
    s = c.call("predict.sweep", now=origin + 3 * DAY)["forecasts"]
    assert s["visited"] == 2 and s["periods"] == 6 and s["finished"] == 0 and s["done"] is True
    a = c.call("forecast.accuracy", recipe=RECIPE, at=origin + 3 * DAY)
    assert a["recipe"] == RECIPE and a["key"] is None and a["window"] == 30
    check(a, errors(points(fc, ["paris", "rome"], range(3))))
    assert [k["key"] for k in a["keys"]] == ["paris", "rome"]
    check(a["keys"][1], errors(points(fc, ["rome"], range(3))))
    rome = c.call("forecast.accuracy", recipe=RECIPE, key="rome", at=origin + 3 * DAY)
    assert rome["key"] == "rome" and rome["n"] == 3 and rome["n_ape"] == 2 and rome["keys"] == []
    check(rome, errors(points(fc, ["rome"], range(3))))
    # a second pass at the same time has nothing to do
    s = c.call("predict.sweep", now=origin + 3 * DAY)["forecasts"]
    assert s["visited"] == 0 and s["periods"] == 0
    server.fc, server.origin = fc, origin


def test_log_and_sums_survive_restart(server):
    fc, origin = server.fc, server.origin
    server.restart()
    with server.client(timeout=60) as c:
        a = c.call("forecast.accuracy", recipe=RECIPE, at=origin + 3 * DAY)
        check(a, errors(points(fc, ["paris", "rome"], range(3))))
        with server.client() as sub:
            sub.call("subscribe", topic="alerts")
            want = errors(points(fc, ["paris", "rome"], range(H)))
            rule = c.call("forecast.alerts", recipe=RECIPE, mape_above=want["mape"] * 0.999, min_samples=5)
            assert rule == {"recipe": RECIPE, "mape_above": want["mape"] * 0.999, "rise": 0.0,
                            "coverage_below": 0.0, "min_samples": 5, "window": 30, "baseline": 90}
            # the remaining 4 days of each series; both entries finish
            r = c.call("predict.sweep", now=origin + 8 * DAY)
            assert r["forecasts"]["periods"] == 8 and r["forecasts"]["finished"] == 2 and r["alerts_fired"] == 1
            note = sub.notification("alerts", timeout=5)
        msg = note[1][0]
        assert msg["type"] == "forecast.accuracy" and msg["state"] == "firing" and msg["rule"] == "mape_above"
        assert msg["recipe"] == RECIPE and msg["samples"] == 14
        assert msg["value"] == pytest.approx(want["mape"], rel=1e-12)
        a = c.call("forecast.accuracy", recipe=RECIPE, at=origin + 8 * DAY)
        check(a, want)
        assert a["n"] == 14 and a["n_ape"] == 13
        assert a["alert"]["state"] == "firing" and a["alert"]["rule"] == "mape_above"
        for k in ("paris", "rome"):
            check(next(x for x in a["keys"] if x["key"] == k), errors(points(fc, [k], range(H))))
        # periods are filed under the day they closed: day 7 closed at origin + 7 days
        assert c.call("forecast.accuracy", recipe=RECIPE, at=origin + 8 * DAY, window=1)["n"] == 0
        w2 = c.call("forecast.accuracy", recipe=RECIPE, at=origin + 8 * DAY, window=2)
        check(w2, errors(points(fc, ["paris", "rome"], [6])))
        al = c.call("forecast.alert_list")
        assert [x["recipe"] for x in al] == [RECIPE] and al[0]["state"] == "firing"
        # the log is empty now; a looser threshold resolves the alert at the next pass
        with server.client() as sub:
            sub.call("subscribe", topic="alerts")
            c.call("forecast.alerts", recipe=RECIPE, mape_above=want["mape"] + 1)
            r = c.call("predict.sweep", now=origin + 9 * DAY)
            assert r["forecasts"]["visited"] == 0 and r["alerts_fired"] == 0
            note = sub.notification("alerts", timeout=5)
        assert note[1][0]["state"] == "resolved" and note[1][0]["recipe"] == RECIPE
        assert c.call("forecast.alert_list")[0]["state"] == "ok"
        # coverage rule: fires when the share of actuals inside the intervals is low
        assert want["coverage"] < 1
        c.call("forecast.alerts", recipe=RECIPE, mape_above=0, coverage_below=1)
        r = c.call("predict.sweep", now=origin + 9 * DAY)
        assert r["alerts_fired"] == 1
        st = c.call("forecast.alert_list")[0]
        assert st["rule"] == "coverage_below" and st["value"] == pytest.approx(want["coverage"], rel=1e-12)
        c.call("forecast.alerts", recipe=RECIPE, coverage_below=0)
        server.want = want


def test_lua_api_and_dashboard(c, server):
    origin, want = server.origin, server.want
    src = """
    local predict = require "predict"
    return {
      acc = function(ctx, args) return predict.forecast_accuracy(args.recipe, { at = args.at, key = args.key }) end,
      missing = function(ctx, args)
        local r, err = predict.forecast_accuracy(args.recipe)
        return { found = r ~= nil, err = err }
      end,
      alerts = function(ctx, args) return predict.forecast_alerts() end,
      bad = function(ctx, args) return predict.forecast_accuracy(args.recipe, { window = 0 }) end,
      roles = { acc = "reader", missing = "reader", alerts = "reader", bad = "reader" },
    }"""
    c.call("script.put", kind="methods", name="fcacc", source=src)
    a = c.call("fcacc.acc", recipe=RECIPE, at=origin + 8 * DAY)
    check(a, want)
    p = c.call("fcacc.acc", recipe=RECIPE, at=origin + 8 * DAY, key="paris")
    assert p["key"] == "paris" and p["n"] == 7
    m = c.call("fcacc.missing", recipe="nope")
    assert m["found"] is False and "nope" in m["err"]
    m = c.call("fcacc.missing", recipe="untracked")
    assert m["found"] is False and "actual" in m["err"]
    assert [x["recipe"] for x in c.call("fcacc.alerts")] == [RECIPE]
    assert code_of(c.call, "fcacc.bad", recipe=RECIPE) == "script_error"

    r = c.call("dashboard.render", name="predictions",
               vars={"target": "churn_60d", "recipe": RECIPE, "at": origin + 8 * DAY})
    panels = {x["id"]: x for x in r["panels"]}
    assert panels["forecast_accuracy"]["error"] is None, panels["forecast_accuracy"]
    rows = panels["forecast_accuracy"]["data"]["rows"]
    assert [x["key"] for x in rows] == ["(all)", "paris", "rome"]
    assert rows[0]["n"] == 14 and rows[0]["mape"] == pytest.approx(want["mape"], rel=1e-12)
    assert rows[0]["coverage"] == pytest.approx(want["coverage"], rel=1e-12)
    fa = panels["forecast_alerts"]
    assert fa["error"] is None and fa["data"]["rows"][0]["recipe"] == RECIPE
    # a recipe without tracking renders a note, not an error
    r = c.call("dashboard.render", name="predictions", vars={"recipe": "untracked"})
    d = {x["id"]: x for x in r["panels"]}["forecast_accuracy"]
    assert d["error"] is None and d["data"]["rows"] == [] and "actual" in d["data"]["note"]


def test_untracked_forecasts_are_not_logged(c, server):
    # inline values have no actuals
    r = c.call("forecast.run", series=[float(i % 7) + 5 for i in range(40)], horizon=5, season=7)
    assert "tracked" not in r and len(r["mean"]) == 5
    # a recipe without `actual`
    st = wait_job(c, c.call("forecast.run", recipe="untracked")["job"])
    assert st["state"] == "done" and st["result"]["tracked"] is None
    s = c.call("predict.sweep", now=server.origin + 400 * DAY)["forecasts"]
    assert s["visited"] == 0 and s["periods"] == 0


def test_bad_inputs(c):
    bad = [
        ("forecast.accuracy", {}),
        ("forecast.accuracy", {"recipe": 5}),
        ("forecast.accuracy", {"recipe": ""}),
        ("forecast.accuracy", {"recipe": RECIPE, "window": 0}),
        ("forecast.accuracy", {"recipe": RECIPE, "window": 1.5}),
        ("forecast.accuracy", {"recipe": RECIPE, "window": 4000}),
        ("forecast.accuracy", {"recipe": RECIPE, "key": ""}),
        ("forecast.accuracy", {"recipe": RECIPE, "key": 7}),
        ("forecast.accuracy", {"recipe": RECIPE, "key": "x" * 201}),
        ("forecast.accuracy", {"recipe": RECIPE, "at": -1}),
        ("forecast.accuracy", {"recipe": RECIPE, "bogus": 1}),
        ("forecast.alerts", {"mape_above": 5}),
        ("forecast.alerts", {"recipe": RECIPE, "mape_above": -1}),
        ("forecast.alerts", {"recipe": RECIPE, "rise": -1}),
        ("forecast.alerts", {"recipe": RECIPE, "coverage_below": 2}),
        ("forecast.alerts", {"recipe": RECIPE, "window": 0}),
        ("forecast.alerts", {"recipe": RECIPE, "baseline": 5000}),
        ("forecast.alerts", {"recipe": RECIPE, "min_samples": 0}),
        ("forecast.alerts", {"recipe": RECIPE, "mape_above": "x"}),
        ("forecast.alerts", {"recipe": RECIPE, "bogus": 1}),
        ("forecast.alert_list", {"x": 1}),
    ]
    for method, args in bad:
        assert code_of(c.call, method, **args) == "invalid_argument", (method, args)
    assert code_of(c.call, "forecast.accuracy", recipe="nope") == "not_found"
    assert code_of(c.call, "forecast.alerts", recipe="nope", mape_above=5) == "not_found"
    assert code_of(c.call, "forecast.accuracy", recipe="untracked") == "failed_precondition"
    assert code_of(c.call, "forecast.alerts", recipe="untracked", mape_above=5) == "failed_precondition"
    # a bad `actual` fails the run before any job starts
    assert code_of(c.call, "forecast.run", recipe="bad_period") == "script_error"
    assert code_of(c.call, "forecast.run", recipe="no_group") == "script_error"
    # the rule change is audited
    e = c.call("audit.query", action="forecast.alerts")["entries"][-1]
    assert RECIPE in str(e["detail"])


def test_timer_joins_closed_periods(c):
    """The accuracy timer's pass (not predict.sweep) joins forecast periods;
    here an ungrouped recipe whose `actual` sums a property over the event's
    total, with an origin in the past and a log transform."""
    H = 3_600_000
    before = c.call("server.info")["plugins"]["predict"]["sweep"]
    st = wait_job(c, c.call("forecast.run", recipe="past_hours")["job"])
    assert st["state"] == "done", st
    tr, fc = st["result"]["tracked"], st["result"]["series"][0]
    assert tr["period"] == H and tr["logged"] == 1 and fc["name"] == "1"
    sums = [12.5, 3, 7]  # sum of "value" per hour; an event outside the hours does not count
    evs = [{"user": "p", "name": "fpast", "time": tr["origin"] + j * H + 1000 * i, "properties": {"value": v}}
           for j, parts in enumerate([[10, 2.5], [3], [4, 3]]) for i, v in enumerate(parts)]
    evs.append({"user": "p", "name": "fpast", "time": tr["origin"] + 3 * H, "properties": {"value": 100}})
    assert c.call("events.track", events=evs)["rejected"] == []
    c.call("predict.config", sweep_ms=50)
    try:
        assert wait_until(lambda: c.call("server.info")["plugins"]["predict"]["sweep"]["forecast_periods_total"]
                          >= before["forecast_periods_total"] + 3, 10)
    finally:
        c.call("predict.config", sweep_ms=300000)
    a = c.call("forecast.accuracy", recipe="past_hours")
    check(a, errors([(sums[j], fc["mean"][j], fc["lo"][j], fc["hi"][j]) for j in range(3)]))
    assert [k["key"] for k in a["keys"]] == ["1"]
