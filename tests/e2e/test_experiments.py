"""The experiments plugin end to end: definitions and versions, the life cycle
and its audit trail, deterministic sticky assignment (also across a restart),
weights, traffic, holdout, layers and targeting, exposure dedup, results on
tracked events with exact counts (checked against SciPy), SRM, the automatic
winner, live results, the `experiments` script kind with hot reload, and bad
inputs."""
import math
import time

import pytest
from scipy import stats

from sxtest import RpcError, Server, wait_until

HOUR = 3_600_000


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def server():
    with Server(copy_scripts=False, scripts={"experiments/.keep": ""}) as s:
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=60) as cl:
        yield cl


def two_arms(key, **kw):
    d = {"key": key, "variants": [{"name": "control", "payload": {"color": "blue"}},
                                  {"name": "treatment", "payload": {"color": "green"}}],
         "stopping_rule": "none"}
    d.update(kw)
    return d


def assign_many(c, key, users, context=None):
    calls = [("experiment.assign", {"key": key, "user": u, **({"context": context} if context else {})})
             for u in users]
    out = []
    for i in range(0, len(calls), 1000):
        out += c.pipeline(calls[i:i + 1000], timeout=120)
    for r in out:
        assert not isinstance(r, RpcError), r
    return out


# ---- definitions, life cycle, audit ----

def test_create_get_list_lifecycle_and_history(c):
    r = c.call("experiment.create", two_arms("life", description="a test",
                                             metrics=[{"name": "buy", "event": "purchase"}]))
    assert r["state"] == "draft" and r["version"] == 1 and r["started_at"] is None
    d = r["definition"]
    assert d["variants"][0] == {"name": "control", "weight": 1.0, "payload": {"color": "blue"}}
    assert d["metrics"][0]["role"] == "primary" and d["metrics"][0]["kind"] == "conversion"
    assert d["metrics"][0]["window_ms"] == 7 * 24 * HOUR and d["salt"] == "life"
    assert c.call("experiment.assign", key="life", user="u1") == \
        {"key": "life", "enrolled": False, "reason": "not_running"}
    assert c.call("experiment.start", key="life")["state"] == "running"
    assert code_of(c.call, "experiment.start", key="life") == "failed_precondition"
    assert c.call("experiment.pause", key="life")["state"] == "paused"
    assert c.call("experiment.assign", key="life", user="u1")["reason"] == "not_running"
    assert c.call("experiment.start", key="life")["state"] == "running"
    r = c.call("experiment.update", key="life", description="changed")
    assert r["version"] == 2 and r["definition"]["description"] == "changed"
    # the same definition again is no new version
    assert c.call("experiment.update", key="life", description="changed")["version"] == 2
    assert c.call("experiment.get", key="life", version=1)["definition"]["description"] == "a test"
    assert code_of(c.call, "experiment.get", key="life", version=3) == "not_found"
    r = c.call("experiment.stop", key="life", reason="enough")
    assert r["state"] == "stopped" and r["reasons"] == ["enough"] and r["stopped_at"]
    assert code_of(c.call, "experiment.start", key="life") == "failed_precondition"
    assert code_of(c.call, "experiment.pause", key="life") == "failed_precondition"
    r = c.call("experiment.conclude", key="life", winner="treatment")
    assert r["state"] == "concluded" and r["winner"] == "treatment" and r["rollout"] is False
    assert code_of(c.call, "experiment.update", key="life", description="x") == "failed_precondition"
    h = c.call("experiment.history", key="life")
    assert [v["version"] for v in h["versions"]] == [1, 2]
    assert [a["what"] for a in h["audit"]] == ["create", "start", "pause", "start", "update", "stop", "conclude"]
    assert all(a["who"] == "admin" and a["key"] == "life" for a in h["audit"])
    assert h["audit"][4]["version"] == 2
    whens = [a["when"] for a in h["audit"]]
    assert whens == sorted(whens) and abs(whens[0] - now_ms()) < 60_000
    keys = [x["key"] for x in c.call("experiment.list")]
    assert "life" in keys
    assert [x["key"] for x in c.call("experiment.list", state="concluded")] == ["life"]


# ---- assignment ----

def test_assignment_is_sticky_deterministic_and_survives_restart():
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", two_arms("det", variants=[{"name": "a"}, {"name": "b"}, {"name": "c"}]))
        c.call("experiment.start", key="det")
        users = [f"user-{i}" for i in range(300)]
        first = {r["variant"] for r in assign_many(c, "det", users[:1])}
        a1 = [r["variant"] for r in assign_many(c, "det", users)]
        assert a1[0] in first
        assert set(a1) == {"a", "b", "c"}
        a2 = [r["variant"] for r in assign_many(c, "det", users)]
        assert a1 == a2
        # a second server with the same definition answers the same (hash, not state)
        with Server(copy_scripts=False) as s2:
            c2 = s2.client(timeout=60)
            c2.call("experiment.create", two_arms("det", variants=[{"name": "a"}, {"name": "b"}, {"name": "c"}]))
            c2.call("experiment.start", key="det")
            assert [r["variant"] for r in assign_many(c2, "det", users)] == a1
            c2.close()
        c.close()
        s.restart()
        c = s.client(timeout=60)
        assert c.call("experiment.get", key="det")["state"] == "running"
        a3 = assign_many(c, "det", users)
        assert [r["variant"] for r in a3] == a1
        assert not any(r["first"] for r in a3)
        c.close()


def test_weights_respected_over_10000_users(c):
    c.call("experiment.create", two_arms("weights", variants=[{"name": "a", "weight": 1},
                                                              {"name": "b", "weight": 3}]))
    c.call("experiment.start", key="weights")
    out = assign_many(c, "weights", [f"w{i}" for i in range(10_000)])
    share_b = sum(r["variant"] == "b" for r in out) / len(out)
    assert abs(share_b - 0.75) < 0.02, share_b
    res = c.call("experiment.results", key="weights")
    assert [v["users"] for v in res["variants"]] == \
        [sum(r["variant"] == n for r in out) for n in ("a", "b")]
    assert res["srm"]["mismatch"] is False


def test_editing_weights_keeps_assigned_users(c):
    c.call("experiment.create", two_arms("edit"))
    c.call("experiment.start", key="edit")
    old = [f"e{i}" for i in range(2000)]
    before = [r["variant"] for r in assign_many(c, "edit", old)]
    assert 0.45 < before.count("control") / 2000 < 0.55
    r = c.call("experiment.update", key="edit",
               variants=[{"name": "control", "weight": 1}, {"name": "treatment", "weight": 9}])
    assert r["version"] == 2 and r["state"] == "running"
    after = assign_many(c, "edit", old)
    assert [x["variant"] for x in after] == before and not any(x["first"] for x in after)
    new = [x["variant"] for x in assign_many(c, "edit", [f"n{i}" for i in range(2000)])]
    assert 0.87 < new.count("treatment") / 2000 < 0.93
    # a started experiment cannot lose or rename variants
    assert code_of(c.call, "experiment.update", key="edit",
                   variants=[{"name": "control"}, {"name": "other"}]) == "failed_precondition"
    # the observed split no longer matches the weights: SRM
    res = c.call("experiment.results", key="edit")
    assert res["srm"]["mismatch"] is True and res["srm"]["p_value"] < 1e-3
    assert res["decision"]["stop"] is True and "sample ratio" in res["decision"]["reasons"][0]


def test_holdout_and_traffic(c):
    c.call("experiment.create", two_arms("hold", traffic=0.3, holdout=0.2))
    c.call("experiment.start", key="hold")
    out = assign_many(c, "hold", [f"h{i}" for i in range(5000)])
    n = len(out)
    holdout = sum(r.get("reason") == "holdout" for r in out) / n
    outside = sum(r.get("reason") == "outside_traffic" for r in out) / n
    enrolled = sum(r["enrolled"] for r in out) / n
    assert abs(holdout - 0.2) < 0.025, holdout
    assert abs(outside - 0.8 * 0.7) < 0.03, outside
    assert abs(enrolled - 0.8 * 0.3) < 0.025, enrolled
    # only the enrolled are exposed
    res = c.call("experiment.results", key="hold")
    assert sum(v["users"] for v in res["variants"]) == sum(r["enrolled"] for r in out)
    # widening the traffic enrols some who were outside, keeps everyone enrolled
    c.call("experiment.update", key="hold", traffic=0.6)
    out2 = assign_many(c, "hold", [f"h{i}" for i in range(5000)])
    for a, b in zip(out, out2):
        if a["enrolled"]:
            assert b["variant"] == a["variant"]
        if a.get("reason") == "holdout":
            assert b.get("reason") == "holdout"
    assert sum(r["enrolled"] for r in out2) / n > enrolled + 0.15


def test_exposure_dedup(c):
    c.call("experiment.create", two_arms("dedup"))
    c.call("experiment.start", key="dedup")
    rs = [c.call("experiment.assign", key="dedup", user="same") for _ in range(5)]
    assert [r["first"] for r in rs] == [True, False, False, False, False]
    assert len({r["variant"] for r in rs}) == 1
    res = c.call("experiment.results", key="dedup")
    assert sum(v["users"] for v in res["variants"]) == 1


def test_layers_are_exclusive(c):
    for k in ("lay1", "lay2"):
        c.call("experiment.create", two_arms(k, layer="checkout"))
        c.call("experiment.start", key=k)
    users = [f"l{i}" for i in range(2000)]
    r1 = assign_many(c, "lay1", users)
    r2 = assign_many(c, "lay2", users)
    both = sum(a["enrolled"] and b["enrolled"] for a, b in zip(r1, r2))
    assert both == 0
    assert all(a["enrolled"] or b["enrolled"] for a, b in zip(r1, r2))
    assert 0.45 < sum(a["enrolled"] for a in r1) / 2000 < 0.55
    assert {a["reason"] for a in r1 if not a["enrolled"]} == {"layer"}
    all_ = c.call("experiment.assign_all", user="l0")
    assert all_["lay1"]["enrolled"] != all_["lay2"]["enrolled"]


def test_declarative_targeting(c):
    c.call("users.put", id="fr1", attributes={"country": "FR", "age": 31, "tags": ["vip", "beta"]})
    c.call("users.put", id="de1", attributes={"country": "DE", "age": 19})
    c.call("experiment.create", two_arms("tgt", targeting=[
        {"attr": "country", "op": "in", "value": ["FR", "IT"]},
        {"attr": "user.age", "op": "gte", "value": 21},
        {"any": [{"attr": "context.device", "op": "eq", "value": "ios"},
                 {"attr": "tags", "op": "contains", "value": "beta"}]}]))
    c.call("experiment.start", key="tgt")
    assert c.call("experiment.assign", key="tgt", user="fr1")["enrolled"] is True
    assert c.call("experiment.assign", key="tgt", user="de1")["reason"] == "not_targeted"
    assert c.call("experiment.assign", key="tgt", user="nobody")["reason"] == "not_targeted"
    c.call("users.put", id="it1", attributes={"country": "IT", "age": 40})
    assert c.call("experiment.assign", key="tgt", user="it1")["reason"] == "not_targeted"
    assert c.call("experiment.assign", key="tgt", user="it1", context={"device": "ios"})["enrolled"] is True


# ---- results ----

def test_results_exact_counts_and_figures(c):
    window = HOUR
    c.call("experiment.create", two_arms("res", metrics=[
        {"name": "buy", "event": "purchase", "window_ms": window},
        {"name": "revenue", "kind": "sum", "event": "purchase", "property": "amount", "window_ms": window},
        {"name": "views", "kind": "count", "event": "view", "window_ms": window, "role": "guardrail"}]))
    c.call("experiment.start", key="res")
    users = [f"r{i}" for i in range(200)]
    t_before = now_ms()
    variant = {u: r["variant"] for u, r in zip(users, assign_many(c, "res", users))}
    t_after = now_ms()
    events, expect = [], {v: {"buy": 0, "rev": [], "views": 0, "n": 0} for v in ("control", "treatment")}
    for i, u in enumerate(users):
        v = variant[u]
        e = expect[v]
        e["n"] += 1
        amount = 0
        # treatment converts more often: every 2nd user vs every 5th
        if (v == "treatment" and i % 2 == 0) or (v == "control" and i % 5 == 0):
            amount = 10 + i % 7
            events.append({"user": u, "name": "purchase", "time": t_after + 1000, "properties": {"amount": amount}})
            events.append({"user": u, "name": "purchase", "time": t_after + 2000, "properties": {"amount": 1}})
            e["buy"] += 1
            amount += 1
        e["rev"].append(amount)
        # outside the window and before exposure: not counted in the results
        events.append({"user": u, "name": "purchase", "time": t_before + window + 5000, "properties": {"amount": 99}})
        events.append({"user": u, "name": "view", "time": t_before - 10_000})
        if i % 3 == 0:
            events.append({"user": u, "name": "view", "time": t_after + 500})
            e["views"] += 1
    for i in range(0, len(events), 5000):
        assert c.call("events.track", events=events[i:i + 5000])["accepted"] == len(events[i:i + 5000])
    res = c.call("experiment.results", key="res")
    assert [v["users"] for v in res["variants"]] == [expect["control"]["n"], expect["treatment"]["n"]]
    buy, rev, views = res["metrics"]
    for i, name in enumerate(("control", "treatment")):
        e = expect[name]
        assert buy["variants"][i]["users"] == e["n"]
        assert buy["variants"][i]["conversions"] == e["buy"]
        assert buy["variants"][i]["value"] == pytest.approx(e["buy"] / e["n"], abs=1e-12)
        assert rev["variants"][i]["sum"] == sum(e["rev"])
        assert rev["variants"][i]["sum_sq"] == sum(a * a for a in e["rev"])
        assert views["variants"][i]["sum"] == e["views"]
        # every user viewed once before exposure: the CUPED covariate
        assert views["variants"][i]["pre_mean"] == 1.0
    # two-proportion z (pooled SE), as statsmodels' proportions_ztest
    n0, x0 = expect["control"]["n"], expect["control"]["buy"]
    n1, x1 = expect["treatment"]["n"], expect["treatment"]["buy"]
    p = (x0 + x1) / (n0 + n1)
    z = (x1 / n1 - x0 / n0) / math.sqrt(p * (1 - p) * (1 / n0 + 1 / n1))
    lift = buy["variants"][1]["lift"]
    assert lift["stat"] == pytest.approx(z, rel=1e-9)
    assert lift["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert lift["abs"] == pytest.approx(x1 / n1 - x0 / n0, rel=1e-12)
    assert lift["abs_lo"] < lift["abs"] < lift["abs_hi"]
    assert buy["variants"][1]["prob_better"] > 0.99
    # Welch on revenue, as scipy's ttest_ind_from_stats(equal_var=False)
    import statistics
    r0, r1 = expect["control"]["rev"], expect["treatment"]["rev"]
    t = stats.ttest_ind_from_stats(statistics.mean(r1), statistics.stdev(r1), len(r1),
                                   statistics.mean(r0), statistics.stdev(r0), len(r0), equal_var=False)
    assert rev["variants"][1]["p_value"] == pytest.approx(t.pvalue, rel=1e-6)
    assert rev["variants"][1]["lift"]["stat"] == pytest.approx(t.statistic, rel=1e-9)
    # Holm over the three comparisons
    ps = [m["variants"][1]["p_value"] for m in (buy, rev, views)]
    order = sorted(range(3), key=lambda j: ps[j])
    adj, run = [0.0] * 3, 0.0
    for rank, j in enumerate(order):
        run = max(run, min(1.0, (3 - rank) * ps[j]))
        adj[j] = run
    assert [m["variants"][1]["p_holm"] for m in (buy, rev, views)] == pytest.approx(adj, rel=1e-12)
    # the always-valid p-value pays for peeking: above the fixed-horizon one
    assert lift["p_value"] < buy["variants"][1]["msprt_p"] <= 1
    lo, hi = buy["variants"][1]["msprt_ci"]
    assert lo < lift["abs"] < hi and hi - lo > lift["abs_hi"] - lift["abs_lo"]
    # the report: same figures, a cumulative daily timeline, CSV
    rep = c.call("experiment.report", key="res", format="json")
    assert rep["results"]["metrics"][0]["variants"][1]["conversions"] == x1
    last = rep["timeline"][-1]["variants"]
    assert [v["users"] for v in last] == [n0, n1]
    assert last[1]["metrics"]["buy"]["conversions"] == x1
    assert last[0]["metrics"]["revenue"]["total"] == sum(r0)
    csv = c.call("experiment.report", key="res", format="csv")["csv"]
    lines = csv.splitlines()
    assert lines[0].startswith("section,metric,variant,users,conversions")
    row = [ln for ln in lines if ln.startswith('results,"buy","treatment"')][0].split(",")
    assert float(row[3]) == n1 and float(row[4]) == x1
    assert any(ln.startswith("timeline,") for ln in lines)


def test_winner_declared_on_clear_effect_with_rollout(c):
    c.call("experiment.create", two_arms("win", min_sample=100, metrics=[{"name": "buy", "event": "purchase"}],
                                         stopping_rule={"rule": "default", "rollout": True}))
    c.call("experiment.start", key="win")
    assert c.call("experiment.subscribe", key="win") == {"subscribed": "experiment.win"}
    users = [f"win{i}" for i in range(600)]
    variant = {u: r["variant"] for u, r in zip(users, assign_many(c, "win", users))}
    t = now_ms() + 1000
    events = [{"user": u, "name": "purchase", "time": t} for i, u in enumerate(users)
              if (variant[u] == "treatment" and i % 10 < 5) or (variant[u] == "control" and i % 10 == 0)]
    c.call("events.track", events=events)
    deadline = time.monotonic() + 20
    concluded = results = None
    while time.monotonic() < deadline and not (concluded and results):
        topic, params = c.notification("experiment.win", timeout=max(0.1, deadline - time.monotonic()))
        assert topic == "experiment.win"
        if params[0]["event"] == "results":
            results = params[0]["results"]
        elif params[0]["event"] == "concluded":
            concluded = params[0]
    assert results is not None and results["key"] == "win"
    assert concluded and concluded["winner"] == "treatment" and concluded["rollout"] is True
    assert any("primary metric buy" in r for r in concluded["reasons"])
    g = c.call("experiment.get", key="win")
    assert g["state"] == "concluded" and g["winner"] == "treatment"
    assert g["reasons"] == concluded["reasons"]
    assert c.call("experiment.history", key="win")["audit"][-1]["who"] == "monitor"
    # rolled out: everyone gets the winner, nobody is exposed any more
    r = c.call("experiment.assign", key="win", user="brand-new")
    assert r["enrolled"] is True and r["variant"] == "treatment" and r["rollout"] is True
    assert r["payload"] == {"color": "green"}


def test_subscribe_pushes_results_while_traffic_flows(c):
    c.call("experiment.create", two_arms("live"))
    c.call("experiment.start", key="live")
    c.call("experiment.subscribe", key="live")
    seen = []
    for step in range(3):
        assign_many(c, "live", [f"live{step}-{i}" for i in range(50)])
        while True:
            _, params = c.notification("experiment.live", timeout=5)
            total = sum(v["users"] for v in params[0]["results"]["variants"])
            if total == 50 * (step + 1):
                break
        seen.append(total)
    assert seen == [50, 100, 150]
    # no traffic, no change: no more pushes
    time.sleep(2.5)
    assert [m for m in c.notifications() if m[1] == "experiment.live"] == []
    with pytest.raises(TimeoutError):
        c.notification("experiment.live", timeout=1.5)


def test_guardrail_harm_stops(c):
    c.call("experiment.create", two_arms("guard", min_sample=10, stopping_rule="default", metrics=[
        {"name": "buy", "event": "purchase"},
        {"name": "errors", "event": "error", "direction": "decrease", "role": "guardrail"}]))
    c.call("experiment.start", key="guard")
    users = [f"g{i}" for i in range(400)]
    variant = {u: r["variant"] for u, r in zip(users, assign_many(c, "guard", users))}
    t = now_ms() + 1000
    c.call("events.track", events=[{"user": u, "name": "error", "time": t} for i, u in enumerate(users)
                                   if variant[u] == "treatment" and i % 10 < 6 or i % 10 == 0])
    assert wait_until(lambda: c.call("experiment.get", key="guard")["state"] == "stopped", 15)
    g = c.call("experiment.get", key="guard")
    assert "guardrail errors harmed by treatment" in g["reasons"][0]


def test_thompson_allocation_follows_the_better_arm(c):
    c.call("experiment.create", two_arms("bandit", allocation="thompson",
                                         variants=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
                                         metrics=[{"name": "buy", "event": "purchase"}]))
    c.call("experiment.start", key="bandit")
    users = [f"band{i}" for i in range(600)]
    variant = {u: r["variant"] for u, r in zip(users, assign_many(c, "bandit", users))}
    shares = [list(variant.values()).count(v) / 600 for v in "abc"]
    assert all(0.27 < x < 0.4 for x in shares), shares
    t = now_ms() + 1000
    c.call("events.track", events=[{"user": u, "name": "purchase", "time": t} for i, u in enumerate(users)
                                   if variant[u] == "c" and i % 2 == 0 or i % 20 == 0])
    res = c.call("experiment.results", key="bandit")
    alloc = {v["name"]: v["allocation"] for v in res["variants"]}
    assert alloc["c"] > 0.95 and min(alloc["a"], alloc["b"]) > 0.009, alloc
    assert res["srm"] is None  # the split follows the data, not fixed weights
    assert res["metrics"][0]["chi2"]["p_value"] < 1e-6  # > 2 variants: chi-square
    new = [r["variant"] for r in assign_many(c, "bandit", [f"band-new{i}" for i in range(500)])]
    assert new.count("c") / 500 > 0.9


def test_plan(c):
    r = c.call("experiment.plan", baseline=0.1, mde=0.1, alpha=0.05, power=0.8)
    # statsmodels: NormalIndPower on Cohen's h? no: the two-proportion formula with pooled null variance
    p1, p2 = 0.1, 0.11
    za, zb = stats.norm.isf(0.025), stats.norm.isf(0.2)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    assert r["n_per_variant"] == math.ceil(r["n_per_variant_exact"])
    assert r["n_per_variant_exact"] == pytest.approx(n, rel=0.02)
    r2 = c.call("experiment.plan", baseline=0.1, mde=0.1, daily_traffic=1000, variants=3)
    assert r2["days"] == math.ceil(r2["n_total"] / 1000) and r2["alpha_per_test"] == 0.025
    m = c.call("experiment.plan", kind="mean", baseline=50, mde=1, mde_kind="absolute", sd=10)
    assert m["n_per_variant_exact"] == pytest.approx(2 * (za + zb) ** 2 * 100, rel=1e-9)


# ---- scripts ----

SCRIPT = """
return {
  description = "promo banner",
  variants = { { name = "control" }, { name = "banner", weight = %s, payload = { text = "hi" } } },
  metrics = { { name = "buy", event = "purchase" } },
  stopping_rule = "none",
  autostart = true,
  targeting = function(user, context)
    return %s
  end,
}
"""


def test_script_kind_and_hot_reload(server, c):
    c.call("users.put", id="s-fr", attributes={"country": "FR"})
    c.call("users.put", id="s-de", attributes={"country": "DE"})
    r = c.call("script.put", kind="experiments", name="promo",
               source=SCRIPT % ("1", 'user.attributes.country == "FR"'))
    assert r["version"] == 1
    g = c.call("experiment.get", key="promo")
    assert g["state"] == "running" and g["script"] == "promo" and g["targeting_kind"] == "lua"
    assert g["definition"]["description"] == "promo banner"
    fr = c.call("experiment.assign", key="promo", user="s-fr")
    assert fr["enrolled"] is True
    assert c.call("experiment.assign", key="promo", user="s-de")["reason"] == "not_targeted"
    assert code_of(c.call, "experiment.update", key="promo", traffic=0.5) == "failed_precondition"
    # a new version: new weights and targeting; the FR user keeps the variant
    c.call("script.put", kind="experiments", name="promo",
           source=SCRIPT % ("1000", 'user.attributes.country == "DE" or context.force'))
    g = c.call("experiment.get", key="promo")
    assert g["version"] == 2 and g["state"] == "running"
    assert c.call("experiment.assign", key="promo", user="s-fr")["variant"] == fr["variant"]
    de = c.call("experiment.assign", key="promo", user="s-de")
    assert de["enrolled"] is True and de["variant"] == "banner" and de["payload"] == {"text": "hi"}
    assert c.call("experiment.assign", key="promo", user="x", context={"force": True})["enrolled"] is True
    assert [a["who"] for a in c.call("experiment.history", key="promo")["audit"]] == ["script"] * 3
    # a broken version is refused and the old one keeps serving
    with pytest.raises(RpcError) as e:
        c.call("script.put", kind="experiments", name="promo", source="return { variants = {} }")
    assert e.value.code == "script_error" and "variants" in e.value.message
    with pytest.raises(RpcError) as e:
        c.call("script.put", kind="experiments", name="promo",
               source="return { variants = { { name = 'a' }, { name = 'b' } } }")
    assert e.value.code == "script_error" and "variant" in e.value.message
    assert c.call("experiment.get", key="promo")["version"] == 2
    # a script raising in targeting is a script_error for that call
    c.call("script.put", kind="experiments", name="boom", source=SCRIPT % ("1", 'error("no")'))
    assert code_of(c.call, "experiment.assign", key="boom", user="s-fr") == "script_error"
    a = c.call("experiment.assign_all", user="s-fr")
    assert a["boom"]["reason"] == "error" and a["promo"]["enrolled"] is True


def test_script_file_hot_reload(server, c):
    path = server.write_script("experiments/filexp.lua", SCRIPT % ("1", "true"))
    assert wait_until(lambda: any(x["key"] == "filexp" for x in c.call("experiment.list")), 10)
    assert c.call("experiment.get", key="filexp")["version"] == 1
    with open(path, "w") as f:
        f.write(SCRIPT % ("3", "true"))
    assert wait_until(lambda: c.call("experiment.get", key="filexp")["version"] == 2, 10)
    assert c.call("experiment.get", key="filexp")["definition"]["variants"][1]["weight"] == 3.0


def test_script_experiment_survives_restart():
    with Server(copy_scripts=False, scripts={"experiments/kept.lua": SCRIPT % ("1", "context.ok == true")}) as s:
        c = s.client(timeout=60)
        g = c.call("experiment.get", key="kept")
        assert g["version"] == 1 and g["state"] == "running" and g["targeting_kind"] == "lua"
        first = c.call("experiment.assign", key="kept", user="k1", context={"ok": True})
        assert first["enrolled"] is True
        c.call("experiment.pause", key="kept")
        c.close()
        s.restart()
        c = s.client(timeout=60)
        g = c.call("experiment.get", key="kept")
        # reloading the same source is no new version, and the state is kept
        assert g["version"] == 1 and g["state"] == "paused" and g["targeting_kind"] == "lua"
        c.call("experiment.start", key="kept")
        assert c.call("experiment.assign", key="kept", user="k2")["reason"] == "not_targeted"
        again = c.call("experiment.assign", key="kept", user="k1")
        assert again["variant"] == first["variant"] and again["first"] is False
        assert [a["what"] for a in c.call("experiment.history", key="kept")["audit"]] == \
            ["create", "start", "pause", "start"]
        c.close()


# ---- bad inputs ----

def test_bad_inputs(c):
    bad_defs = [
        {"key": "b1"},
        {"key": "b1", "variants": [{"name": "only"}]},
        {"key": "b1", "variants": [{"name": "a"}, {"name": "a"}]},
        {"key": "b1", "variants": [{"name": "a", "weight": -1}, {"name": "b"}]},
        {"key": "b1", "variants": [{"name": "a", "weight": float("nan")}, {"name": "b"}]},
        {"key": "b1", "variants": [{"name": "a", "colour": 1}, {"name": "b"}]},
        {"key": "b1", "variants": [{"name": ""}, {"name": "b"}]},
        {"key": "b1", "variants": [{"name": "a", "payload": {"x": float("inf")}}, {"name": "b"}]},
        {"key": "b 1", "variants": [{"name": "a"}, {"name": "b"}]},
        {"key": "x" * 65, "variants": [{"name": "a"}, {"name": "b"}]},
        {"variants": [{"name": "a"}, {"name": "b"}]},
        two_arms("b1", traffic=2),
        two_arms("b1", traffic="all"),
        two_arms("b1", holdout=1),
        two_arms("b1", colour="red"),
        two_arms("b1", metrics=[{"name": "m", "event": "e", "kind": "ratio"}]),
        two_arms("b1", metrics=[{"name": "m"}]),
        two_arms("b1", metrics=[{"name": "m", "event": "e", "window_ms": 0}]),
        two_arms("b1", metrics=[{"name": "m", "event": "e", "property": "p"}]),
        two_arms("b1", metrics=[{"name": "m", "event": "e", "role": "primary"},
                                {"name": "n", "event": "e", "role": "primary"}]),
        two_arms("b1", targeting=[{"attr": "country", "op": "like", "value": "F%"}]),
        two_arms("b1", targeting=[{"attr": "country", "op": "in", "value": "FR"}]),
        two_arms("b1", targeting=[{"attr": "country", "op": "eq"}]),
        two_arms("b1", targeting={"all": [{"all": [{"all": [{"all": [{"attr": "a", "op": "exists"}]}]}]}]}),
        two_arms("b1", targeting="everyone"),
        two_arms("b1", stopping_rule="sometimes"),
        two_arms("b1", stopping_rule={"alpha": 2}),
        two_arms("b1", allocation="thompson"),
        two_arms("b1", min_sample=-1),
    ]
    for d in bad_defs:
        assert code_of(c.call, "experiment.create", d) == "invalid_argument", d
    assert code_of(c.call, "experiment.get", key="b1") == "not_found"
    c.call("experiment.create", two_arms("b1"))
    assert code_of(c.call, "experiment.create", two_arms("b1")) == "already_exists"
    for m in ("experiment.get", "experiment.start", "experiment.results", "experiment.assign",
              "experiment.history", "experiment.subscribe"):
        assert code_of(c.call, m, key="nope", user="u") in ("not_found", "invalid_argument")
        assert code_of(c.call, m, key="nope") in ("not_found", "invalid_argument")
    assert code_of(c.call, "experiment.get", key="nope") == "not_found"
    assert code_of(c.call, "experiment.assign", key="b1") == "invalid_argument"
    assert code_of(c.call, "experiment.assign", key="b1", user="") == "invalid_argument"
    assert code_of(c.call, "experiment.assign", key="b1", user="x" * 129) == "invalid_argument"
    assert code_of(c.call, "experiment.assign", key="b1", user="u", context=[1]) == "invalid_argument"
    assert code_of(c.call, "experiment.assign", key="b1", user="u", extra=1) == "invalid_argument"
    assert code_of(c.call, "experiment.pause", key="b1") == "failed_precondition"
    assert code_of(c.call, "experiment.conclude", key="b1", winner="control") == "failed_precondition"
    assert code_of(c.call, "experiment.conclude", key="b1", winner="zzz") == "invalid_argument"
    assert code_of(c.call, "experiment.update", key="b1", traffic=-1) == "invalid_argument"
    assert code_of(c.call, "experiment.report", key="b1", format="pdf") == "invalid_argument"
    assert code_of(c.call, "experiment.list", state="gone") == "invalid_argument"
    assert code_of(c.call, "experiment.plan", baseline=0.1) == "invalid_argument"
    assert code_of(c.call, "experiment.plan", baseline=2, mde=0.1) == "invalid_argument"
    assert code_of(c.call, "experiment.plan", baseline=0.1, mde=0.1, sides=3) == "invalid_argument"
    assert code_of(c.call, "experiment.plan", kind="mean", baseline=1, mde=0.1) == "invalid_argument"
    # nothing of the failures was stored
    assert c.call("experiment.get", key="b1")["version"] == 1
    assert [a["what"] for a in c.call("experiment.history", key="b1")["audit"]] == ["create"]
