"""Accuracy tracking of served predictions end to end: predictions served at
t0, outcome events with explicit times inside and outside the 30-day label
window of booking_30d, predict.sweep at a chosen `now` (the test hook), and
the rolling AUC, calibration, lift and segments that predict.accuracy reads
back, compared with the same quantities computed here by hand from the served
probabilities; alerts on topic `alerts`; state across a restart; the Lua API
(require "predict" in a methods script, ctx.predict in the `predictions`
dashboard); bad inputs."""
import random
import time

import pytest
from sklearn.metrics import roc_auc_score

from sxtest import RpcError, Server, wait_until

DAY = 86_400_000
N = 60
BINS = 100


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def binned_auc(ps, ys):
    """AUC over scores rounded down to 1/100 bins, ties in a bin counted half."""
    pos = [0] * BINS
    neg = [0] * BINS
    for p, y in zip(ps, ys):
        b = min(int(p * BINS), BINS - 1)
        (pos if y else neg)[b] += 1
    below, s = 0, 0.0
    for b in range(BINS):
        s += pos[b] * (below + 0.5 * neg[b])
        below += neg[b]
    return s / (sum(pos) * sum(neg))


def binned_lift(ps, ys, share=0.1):
    cnt = [0] * BINS
    pos = [0] * BINS
    for p, y in zip(ps, ys):
        b = min(int(p * BINS), BINS - 1)
        cnt[b] += 1
        pos[b] += y
    k = share * len(ps)
    taken = hits = 0.0
    for b in reversed(range(BINS)):
        if taken >= k or not cnt[b]:
            continue
        t = min(cnt[b], k - taken)
        hits += pos[b] * t / cnt[b]
        taken += t
    return (hits / k) / (sum(ys) / len(ys))


def population(now):
    """Users b0..b59 active over the last 120 days at rates from 0.1 to 1
    event a day; the more active book more often, so that booking_30d learns
    something and its scores spread."""
    rng = random.Random(7)
    evs = []
    for u in range(N):
        rate = 0.1 + 0.9 * rng.random()
        for d in range(120, 0, -1):
            t = now - d * DAY + rng.randrange(3_600_000)
            if rng.random() < rate:
                evs.append({"user": f"b{u}", "name": rng.choice(["search", "view"]), "time": t})
            if rng.random() < 0.04 * rate:
                evs.append({"user": f"b{u}", "name": "book", "time": t + 1, "properties": {"value": 300}})
    return evs


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        with s.client(timeout=120) as c:
            now = int(time.time() * 1000)
            assert c.call("events.track", events=population(now))["rejected"] == []
            for u in range(N):
                c.call("users.put", id=f"b{u}", attributes={"country": "FR" if u % 2 == 0 else "DE"})
            r = c.call("predict.train", target="booking_30d")
            st = wait_until(lambda: (lambda x: x if x["state"] != "running" else None)(c.call("job.status", id=r["job"])), 60)
            assert st and st["state"] == "done", st
            assert wait_until(lambda: any(t["name"] == "booking_30d" and t["version"]
                                          for t in c.call("predict.config")["targets"]), 5)
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=120) as cl:
        yield cl


def test_sweep_joins_closed_windows_and_auc_matches(c, server):
    c.call("predict.config", sample=1.0, segment_attribute="country")
    c.call("predict.alerts", target="booking_30d", auc_below=0.999, min_samples=10)
    t0 = int(time.time() * 1000)
    probs = {}
    for u in range(N):
        p = c.call("predict.user", user=f"b{u}", targets=["booking_30d"])["predictions"]["booking_30d"]
        probs[u] = p["probability"]
    # outcomes: users u % 4 == 0 book 5 days after t0 (inside the window);
    # users u % 4 == 1 book 31 days after (outside); the rest do nothing
    evs = []
    labels = {}
    for u in range(N):
        labels[u] = 1 if u % 4 == 0 else 0
        if u % 4 == 0:
            evs.append({"user": f"b{u}", "name": "book", "time": t0 + 5 * DAY, "properties": {"value": 100}})
        elif u % 4 == 1:
            evs.append({"user": f"b{u}", "name": "book", "time": t0 + 31 * DAY, "properties": {"value": 100}})
    assert c.call("events.track", events=evs)["rejected"] == []

    # before the windows close: nothing is joined
    r = c.call("predict.sweep", now=t0 + 29 * DAY)
    assert r["folded"] == 0 and r["open"] == N and r["done"] is True
    a = c.call("predict.accuracy", target="booking_30d", at=t0 + 29 * DAY)
    assert a["samples"] == 0 and a["auc"] is None

    with server.client() as sub:
        sub.call("subscribe", topic="alerts")
        r = c.call("predict.sweep", now=t0 + 31 * DAY)
        assert r["folded"] == N and r["open"] == 0 and r["done"] is True and r["alerts_fired"] == 1
        note = sub.notification("alerts", timeout=5)
    ps = [probs[u] for u in range(N)]
    ys = [labels[u] for u in range(N)]
    want = binned_auc(ps, ys)
    a = c.call("predict.accuracy", target="booking_30d", window=30, at=t0 + 31 * DAY)
    assert a["samples"] == N and a["positives"] == sum(ys)
    assert a["auc"] == pytest.approx(want, abs=1e-12)
    assert abs(a["auc"] - roc_auc_score(ys, ps)) < 0.05  # only pairs inside one bin differ
    assert a["lift_top_decile"] == pytest.approx(binned_lift(ps, ys), abs=1e-12)
    assert a["mean_predicted"] == pytest.approx(sum(ps) / N, abs=1e-12)
    assert a["brier"] == pytest.approx(sum((p - y) ** 2 for p, y in zip(ps, ys)) / N, abs=1e-12)
    cal = a["calibration"]
    assert len(cal) == 10 and sum(b["count"] for b in cal) == N
    for b in cal:
        inbin = [i for i in range(N) if min(int(ps[i] * 100), 99) // 10 == round(b["lo"] * 10)]
        assert b["count"] == len(inbin)
        if inbin:
            assert b["observed"] == pytest.approx(sum(ys[i] for i in inbin) / len(inbin), abs=1e-12)
    # segments: bands served and the country attribute
    seg = {s["segment"]: s for s in a["segments"]}
    band = lambda p: "high" if p >= 0.6 else "medium" if p >= 0.3 else "low"
    for b in ("low", "medium", "high"):
        n = sum(1 for p in ps if band(p) == b)
        assert seg.get(f"band:{b}", {"samples": 0})["samples"] == n
    assert seg["country:FR"]["samples"] == 30 and seg["country:DE"]["samples"] == 30
    fr = [i for i in range(N) if i % 2 == 0]
    a_fr = c.call("predict.accuracy", target="booking_30d", segment="country:FR", at=t0 + 31 * DAY)
    assert a_fr["auc"] == pytest.approx(binned_auc([ps[i] for i in fr], [ys[i] for i in fr]), abs=1e-12)
    # a window that ends before the close day sees nothing
    assert c.call("predict.accuracy", target="booking_30d", at=t0 + 29 * DAY)["samples"] == 0
    # the alert (AUC below 0.999) went out once and shows in the state
    assert note[0] == "alerts"
    msg = note[1][0]
    assert msg["type"] == "predict.accuracy" and msg["state"] == "firing" and msg["rule"] == "auc_below"
    assert msg["target"] == "booking_30d" and msg["value"] == pytest.approx(want, abs=1e-12)
    assert a["alert"]["state"] == "firing" and a["alert"]["threshold"] == 0.999
    al = c.call("predict.alert_list")
    assert [x["target"] for x in al] == ["booking_30d"] and al[0]["state"] == "firing"
    # joined entries left the log: a second pass has nothing to do
    r = c.call("predict.sweep", now=t0 + 40 * DAY)
    assert r["folded"] == 0 and r["visited"] == 0 and r["alerts_fired"] == 0
    server.auc_want = want
    server.t0 = t0


def test_state_survives_restart(server):
    server.restart()
    with server.client() as c:
        a = c.call("predict.accuracy", target="booking_30d", window=30, at=server.t0 + 31 * DAY)
        assert a["samples"] == N and a["auc"] == pytest.approx(server.auc_want, abs=1e-12)
        assert a["alert"]["state"] == "firing"
        cfg = c.call("predict.config")
        assert cfg["segment_attribute"] == "country" and cfg["sweep_ms"] == 300000


def test_timer_sweep_with_config_interval(c, server):
    """The timer runs passes at the configured interval (server.info shows
    them); a pass folds what predict.sweep would (same code), here nothing
    since every window closes in the future."""
    sweep = lambda: c.call("server.info")["plugins"]["predict"]["sweep"]
    before = sweep()
    assert before["interval_ms"] == 300000
    c.call("predict.config", sweep_ms=50)
    try:
        c.call("predict.user", user="b0", targets=["booking_30d"])
        assert wait_until(lambda: sweep()["passes"] >= before["passes"] + 3, 10)
        s = sweep()
        assert s["interval_ms"] == 50 and s["last_folded"] == 0 and s["folded_total"] == 0
        assert abs(s["last_now"] - time.time() * 1000) < 5000
    finally:
        c.call("predict.config", sweep_ms=300000)


def test_lua_api_in_methods_script(c, server):
    src = """
    return {
      user = function(ctx, args) return require("predict").user(args.user, { "booking_30d" }) end,
      dist = function(ctx, args) return require("predict").distribution(args.target, args.bins) end,
      acc = function(ctx, args) return require("predict").accuracy(args.target, { at = args.at }) end,
      missing = function(ctx, args)
        local r, err = require("predict").user("nobody")
        return { found = r ~= nil, err = err }
      end,
      badbins = function(ctx, args) return require("predict").distribution("booking_30d", 0) end,
      badtarget = function(ctx, args) return require("predict").distribution("nope") end,
      roles = { user = "reader", dist = "reader", acc = "reader", missing = "reader" },
    }"""
    c.call("script.put", kind="methods", name="scores", source=src)
    c.call("predict.config", sample=0.0)  # do not add to the log
    try:
        u = c.call("scores.user", user="b3")
        p = c.call("predict.user", user="b3", targets=["booking_30d"])["predictions"]["booking_30d"]
        assert u["booking_30d"]["band"] == p["band"]
        assert abs(u["booking_30d"]["probability"] - p["probability"]) < 1e-6
        risk = c.call("predict.churn_risk", target="booking_30d", limit=10000)["users"]
        d = c.call("scores.dist", target="booking_30d", bins=4)
        assert d["scored"] == len(risk) and len(d["bins"]) == 4
        want = [0] * 4
        for x in risk:
            want[min(int(x["probability"] * 4), 3)] += 1
        assert [b["count"] for b in d["bins"]] == want
        a = c.call("scores.acc", target="booking_30d", at=server.t0 + 31 * DAY)
        assert a["samples"] == N and a["auc"] == pytest.approx(server.auc_want, abs=1e-12)
        m = c.call("scores.missing")
        assert m["found"] is False and "nobody" in m["err"]
        assert code_of(c.call, "scores.badbins") == "script_error"
        assert code_of(c.call, "scores.badtarget") == "script_error"
    finally:
        c.call("predict.config", sample=1.0)


def test_predictions_dashboard_renders_distribution(c, server):
    r = c.call("dashboard.render", name="predictions",
               vars={"target": "booking_30d", "bins": 5, "at": server.t0 + 31 * DAY})
    panels = {p["id"]: p for p in r["panels"]}
    assert all(p["error"] is None for p in r["panels"]), r["panels"]
    dist = panels["risk_distribution"]
    assert dist["kind"] == "distribution"
    risk = c.call("predict.churn_risk", target="booking_30d", limit=10000)["users"]
    want = [0] * 5
    for x in risk:
        want[min(int(x["probability"] * 5), 4)] += 1
    assert [b["count"] for b in dist["data"]["bins"]] == want
    assert dist["data"]["scored"] == len(risk) and dist["data"]["target"] == "booking_30d"
    assert panels["auc"]["data"]["value"] == pytest.approx(server.auc_want, abs=1e-12)
    assert panels["auc"]["data"]["samples"] == N
    assert any(row["segment"] == "country:FR" for row in panels["segments"]["data"]["rows"])
    assert panels["alerts"]["data"]["rows"][0]["state"] == "firing"
    # an untrained target renders an empty histogram, not an error
    r = c.call("dashboard.render", name="predictions", vars={"target": "trip_14d"})
    d = {p["id"]: p for p in r["panels"]}["risk_distribution"]
    assert d["error"] is None and d["data"]["scored"] == 0 and "no trained model" in d["data"]["note"]


def test_drop_rule_and_bad_inputs(c):
    r = c.call("predict.alerts", target="booking_30d", drop=0.1, window=7, baseline=28, min_samples=5)
    assert r == {"target": "booking_30d", "auc_below": 0.999, "min_samples": 5, "drop": 0.1,
                 "window": 7, "baseline": 28}
    bad = [
        ("predict.accuracy", {"target": "booking_30d", "window": 0}),
        ("predict.accuracy", {"target": "booking_30d", "window": 1.5}),
        ("predict.accuracy", {"target": "booking_30d", "bins": 7}),
        ("predict.accuracy", {"target": "booking_30d", "segment": ""}),
        ("predict.accuracy", {"target": "booking_30d", "segment": "x" * 101}),
        ("predict.accuracy", {"target": "booking_30d", "segment": 3}),
        ("predict.accuracy", {"target": "booking_30d", "at": -1}),
        ("predict.accuracy", {"target": 5}),
        ("predict.accuracy", {"target": "booking_30d", "bogus": 1}),
        ("predict.accuracy", {}),
        ("predict.alerts", {"target": "booking_30d", "drop": 1.5}),
        ("predict.alerts", {"target": "booking_30d", "window": 0}),
        ("predict.alerts", {"target": "booking_30d", "baseline": 5000}),
        ("predict.alerts", {"target": "booking_30d", "min_samples": 0}),
        ("predict.sweep", {"now": -5}),
        ("predict.sweep", {"limit": 0}),
        ("predict.sweep", {"limit": "x"}),
        ("predict.sweep", {"bogus": 1}),
        ("predict.config", {"sweep_ms": 5}),
        ("predict.config", {"sweep_ms": -1}),
        ("predict.config", {"segment_attribute": "band"}),
        ("predict.config", {"segment_attribute": "Not-OK"}),
        ("predict.config", {"segment_attribute": 7}),
        ("predict.alert_list", {"x": 1}),
    ]
    for method, args in bad:
        assert code_of(c.call, method, **args) == "invalid_argument", (method, args)
    assert code_of(c.call, "predict.accuracy", target="nope") == "not_found"
    assert code_of(c.call, "predict.alerts", target="nope") == "not_found"
    # a segment without data is empty, not an error
    a = c.call("predict.accuracy", target="booking_30d", segment="country:XX")
    assert a["samples"] == 0 and a["auc"] is None
    # the sweep is audited
    e = c.call("audit.query", action="predict.sweep")["entries"][-1]
    assert "now" in e["detail"]
