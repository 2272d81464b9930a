"""The experiments plugin's incremental counters and the issue-8 parts: results from
counters equal the recompute from exposures and events (every metric kind, windows,
pre-exposure covariates, events before and after the exposure, out of order, across
days), after a restart, a metric edit (rebuild), an added variant, an erasure and a
failed batch; CUPED on a mean metric against a SciPy reference; the XLSX report;
experiment changes in the common audit log; pseudonymous ids; kill -9 during edits."""
import hashlib
import hmac
import io
import json
import math
import os
import threading
import time

import pytest

from sxtest import RpcError, Server

HOUR = 3_600_000
DAY = 24 * HOUR


def now_ms():
    return int(time.time() * 1000)


def same(a, b, path="", skip=("computed_at",)):
    """Recursive equality, numbers to 1e-9 relative (the counters add deltas)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, a, b)
        for k in a:
            if k not in skip:
                same(a[k], b[k], f"{path}.{k}", skip)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]", skip)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


def check_equal(c, key, timeline=True):
    got = c.call("experiment.results", key=key)
    ref = c.call("experiment.results", key=key, recompute=True)
    same(got, ref)
    if timeline:
        rep = c.call("experiment.report", key=key)
        rep_ref = c.call("experiment.report", key=key, recompute=True)
        same(rep["timeline"], rep_ref["timeline"])
    return got


METRICS = [
    {"name": "buy", "event": "purchase", "window_ms": 2 * DAY},
    {"name": "revenue", "kind": "sum", "event": "purchase", "property": "amount", "window_ms": DAY},
    {"name": "views", "kind": "count", "event": "view", "window_ms": 3 * DAY},
    {"name": "basket", "kind": "mean", "event": "purchase", "property": "amount", "window_ms": 2 * DAY},
    {"name": "errors", "event": "error", "window_ms": HOUR, "role": "guardrail", "direction": "decrease"},
]


def events_for(users, t, k):
    """A deterministic mix around time t for round k: every kind, some without amount."""
    ev = []
    for i, u in enumerate(users):
        h = (i * 31 + k * 17) % 97
        if h % 3 == 0:
            ev.append({"user": u, "name": "purchase", "time": t + (h % 50) * HOUR,
                       "properties": {"amount": (h % 11) + 0.25 * (k % 4)}})
        if h % 5 == 0:
            ev.append({"user": u, "name": "purchase", "time": t + (h % 7) * HOUR})  # no amount
        if h % 2 == 0:
            ev.append({"user": u, "name": "view", "time": t + (h % 90) * HOUR})
        if h % 13 == 0:
            ev.append({"user": u, "name": "error", "time": t + (h % 3) * 1_500_000})
    return ev


def track(c, ev):
    for i in range(0, len(ev), 5000):
        r = c.call("events.track", events=ev[i:i + 5000])
        assert r["accepted"] == len(ev[i:i + 5000]), r


def test_counters_equal_recompute_through_restart_edits_and_erasure():
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", key="eq", stopping_rule="none", metrics=METRICS,
               variants=[{"name": "control"}, {"name": "a"}, {"name": "b", "weight": 2}])
        c.call("experiment.start", key="eq")
        users = [f"u{i}" for i in range(400)]
        t = now_ms()
        # history before the exposure: pre-window covariates, and a few events already in the post window
        track(c, events_for(users, t - 3 * DAY, 0) + events_for(users[:50], t + 5 * HOUR, 1))
        c.pipeline([("experiment.assign", {"key": "eq", "user": u}) for u in users], timeout=60)
        # later events, out of order: far ones first, then earlier ones that move first conversions
        track(c, events_for(users, t + 30 * HOUR, 2))
        track(c, events_for(users, t + HOUR, 3))
        track(c, events_for(users, t - 2 * DAY, 4))  # late pre-window events
        res = check_equal(c, "eq")
        assert sum(v["users"] for v in res["variants"]) == 400
        buy, revenue, views, basket, errors = res["metrics"]
        assert sum(v["conversions"] for v in buy["variants"]) > 50
        assert sum(v["sum"] for v in revenue["variants"]) > 0
        assert all(v["pre_mean"] > 0 for v in views["variants"])
        assert basket["variants"][1]["cuped"] is not None  # CUPED on a mean metric
        rep = c.call("experiment.report", key="eq")
        assert len(rep["timeline"]) >= 1

        s.restart()
        c = s.client(timeout=60)
        check_equal(c, "eq")
        track(c, events_for(users, t + 2 * HOUR, 5))
        check_equal(c, "eq")

        # a metric edit (another window, another property) rebuilds the counters
        m = [dict(x) for x in METRICS]
        m[1]["window_ms"] = 3 * DAY
        m[3]["property"] = "price"
        c.call("experiment.update", key="eq", metrics=m)
        check_equal(c, "eq")
        track(c, events_for(users, t + 3 * HOUR, 6))
        check_equal(c, "eq")

        # an added variant: new users may land in it, the counters spread out
        c.call("experiment.update", key="eq", variants=[{"name": "control"}, {"name": "a"},
                                                        {"name": "b", "weight": 2}, {"name": "c"}])
        more = [f"w{i}" for i in range(200)]
        c.pipeline([("experiment.assign", {"key": "eq", "user": u}) for u in more], timeout=60)
        track(c, events_for(more + users[:20], t + 4 * HOUR, 7))
        res = check_equal(c, "eq")
        assert res["variants"][3]["users"] > 0

        # erasure takes the users' share out of the counters (the results stay exact;
        # the timeline's totals keep their final day exact)
        before = res
        for u in users[:10]:
            r = c.call("privacy.erase", user=u)
            assert r["removed"].get("exposures") == 1
        res = check_equal(c, "eq", timeline=False)
        assert sum(v["users"] for v in res["variants"]) == sum(v["users"] for v in before["variants"]) - 10
        rep, ref = c.call("experiment.report", key="eq"), c.call("experiment.report", key="eq", recompute=True)
        same(rep["timeline"][-1], ref["timeline"][-1])
        for d, e in zip(rep["timeline"], ref["timeline"]):
            assert [v["users"] for v in d["variants"]] == [v["users"] for v in e["variants"]]
            assert [v["metrics"]["buy"] for v in d["variants"]] == [v["metrics"]["buy"] for v in e["variants"]]


def test_counters_survive_a_failed_batch():
    with Server(copy_scripts=False, config={"map_size_mb": 1, "max_map_size_mb": 3}) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", key="fb", stopping_rule="none", metrics=METRICS,
               variants=[{"name": "control"}, {"name": "t"}])
        c.call("experiment.start", key="fb")
        users = [f"f{i}" for i in range(100)]
        c.pipeline([("experiment.assign", {"key": "fb", "user": u}) for u in users], timeout=60)
        t = now_ms()
        track(c, events_for(users, t, 1))
        check_equal(c, "fb")
        failed = False
        for k in range(200):
            ev = [{"user": u, "name": "purchase", "time": t + HOUR,
                   "properties": {"amount": k, "pad": "x" * 3000}} for u in users[:40]]
            try:
                c.call("events.track", events=ev)
            except RpcError as e:
                assert e.code == "storage_full", e
                failed = True
                break
        assert failed, "the map never filled"
        # what the failed batch counted went with it
        check_equal(c, "fb", timeline=True)
        track(c, events_for(users, t + 2 * HOUR, 2))
        check_equal(c, "fb")


def test_cuped_on_a_mean_metric_matches_scipy():
    ref = json.load(open(os.path.join(os.environ["SX_SOURCE_DIR"], "tests", "data", "xp_cuped_mean.json")))
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", key="cupedmean", variants=[{"name": "control"}, {"name": "treatment"}],
               stopping_rule="none",
               metrics=[{"name": "basket", "kind": "mean", "event": "purchase", "property": "amount",
                         "window_ms": DAY}])
        c.call("experiment.start", key="cupedmean")
        t0 = now_ms()
        ev = []
        for i in range(80):
            if i % 3 != 0:
                ev.append({"user": f"cm{i}", "name": "purchase", "time": t0 - HOUR,
                           "properties": {"amount": 10 + (7 * i) % 13}})
        track(c, ev)
        got = "".join("1" if c.call("experiment.assign", key="cupedmean", user=f"cm{i}")["variant"] == "treatment"
                      else "0" for i in range(80))
        assert got == ref["variants"]  # XXH3 buckets are pinned
        ev = []
        for i in range(80):
            tr = int(got[i])
            x = 10 + (7 * i) % 13 if i % 3 != 0 else 0
            y = 0.8 * x + (5 * i) % 7 + 2 * tr
            ev.append({"user": f"cm{i}", "name": "purchase", "time": t0 + HOUR, "properties": {"amount": y}})
            if i % 4 == 0:
                ev.append({"user": f"cm{i}", "name": "purchase", "time": t0 + 2 * HOUR,
                           "properties": {"amount": y + 2}})
        track(c, ev)
        res = check_equal(c, "cupedmean")
        m = res["metrics"][0]
        assert m["cuped_theta"] == pytest.approx(ref["theta"], rel=1e-6)
        ctl, trt = m["variants"]
        assert ctl["value"] == pytest.approx(ref["raw_control_mean"], rel=1e-6)
        assert trt["value"] == pytest.approx(ref["raw_treatment_mean"], rel=1e-6)
        assert ctl["pre_mean"] == pytest.approx(ref["pre_mean_control"], rel=1e-6)
        cu = trt["cuped"]
        assert cu["mean"] == pytest.approx(ref["treatment_mean"], rel=1e-6)
        assert cu["lift"]["abs"] == pytest.approx(ref["diff"], rel=1e-6)
        assert cu["lift"]["stat"] == pytest.approx(ref["stat"], rel=1e-6)
        assert cu["lift"]["p_value"] == pytest.approx(ref["p_value"], rel=1e-6)
        # the covariate explains most of the variance: a smaller p than without it
        assert cu["lift"]["p_value"] < trt["p_value"]


def test_xlsx_report_opens():
    import openpyxl
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", key="xl", stopping_rule="none", metrics=METRICS[:2],
               variants=[{"name": "control"}, {"name": "t"}])
        c.call("experiment.start", key="xl")
        users = [f"x{i}" for i in range(60)]
        c.pipeline([("experiment.assign", {"key": "xl", "user": u}) for u in users], timeout=60)
        track(c, events_for(users, now_ms(), 1))
        r = c.call("experiment.report", key="xl", format="xlsx")
        assert r["format"] == "xlsx" and isinstance(r["xlsx"], bytes) and r["xlsx"][:2] == b"PK"
        wb = openpyxl.load_workbook(io.BytesIO(r["xlsx"]), read_only=True)
        rows = list(wb["data"].iter_rows(values_only=True))
        head = rows[0]
        assert head[:4] == ("section", "day", "metric", "variant")
        res = c.call("experiment.results", key="xl")
        col = {h: i for i, h in enumerate(head)}
        results = [row for row in rows[1:] if row[0] == "results"]
        assert len(results) == 4
        for row in results:
            mi = [m["name"] for m in res["metrics"]].index(row[col["metric"]])
            vi = [v["name"] for v in res["variants"]].index(row[col["variant"]])
            v = res["metrics"][mi]["variants"][vi]
            assert row[col["users"]] == v["users"] and row[col["conversions"]] == v["conversions"]
            assert row[col["sum"]] == pytest.approx(v["sum"])
        assert any(row[0] == "timeline" for row in rows[1:])
        assert not [f for f in os.listdir(os.environ.get("TMPDIR", "/tmp")) if f.startswith("sx-xp-report-")]


def test_changes_in_the_common_audit_log():
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        t0 = now_ms()
        c.call("experiment.create", key="au", variants=[{"name": "control"}, {"name": "t"}])
        c.call("experiment.start", key="au")
        c.call("experiment.update", key="au", traffic=0.5)
        c.call("experiment.pause", key="au")
        entries = c.call("audit.query", **{"from": t0})["entries"]
        xs = [e for e in entries if e["action"].startswith("experiment.")]
        assert [e["action"] for e in xs] == ["experiment.create", "experiment.start", "experiment.update",
                                            "experiment.pause"]
        for e in xs:
            d = e["detail"]
            assert d["key"] == "au" and d["who"] == "admin" and t0 <= d["when"] <= now_ms()
            assert d["what"] == e["action"].split(".")[1]
        assert [e["detail"]["version"] for e in xs] == [1, 1, 2, 2]
        upd = c.call("audit.query", action="experiment.update")["entries"]
        assert len(upd) == 1 and upd[0]["detail"]["key"] == "au"
        # experiment.history shows the same trail
        h = c.call("experiment.history", key="au")
        assert [a["what"] for a in h["audit"]] == ["create", "start", "update", "pause"]


def test_pseudonymous_ids_key_assignment_and_erasure():
    secret = "s3cret-for-tests"
    pseudo = hmac.new(secret.encode(), b"alice", hashlib.sha256).hexdigest()
    d = {"key": "ps", "stopping_rule": "none", "metrics": [{"name": "buy", "event": "purchase"}],
         "variants": [{"name": "v%d" % i} for i in range(8)]}
    # the answer the pseudonym gets where ids are not mapped
    with Server(copy_scripts=False) as plain:
        c = plain.client()
        c.call("experiment.create", d)
        c.call("experiment.start", key="ps")
        want = c.call("experiment.assign", key="ps", user=pseudo)["variant"]
        ids = [f"p{i}" for i in range(40)]
        plain_answers = [c.call("experiment.assign", key="ps", user=u)["variant"] for u in ids]
    with Server(copy_scripts=False, config={"pseudonymize_secret": secret}) as s:
        c = s.client()
        c.call("experiment.create", d)
        c.call("experiment.start", key="ps")
        assert c.call("experiment.assign", key="ps", user="alice")["variant"] == want
        assert c.call("experiment.assign_all", user="alice")["ps"]["variant"] == want
        # the raw ids are never the bucketing input: over 40 users, answers differ somewhere
        answers = [c.call("experiment.assign", key="ps", user=u)["variant"] for u in ids]
        assert answers != plain_answers
        c.call("events.track", user="alice", name="purchase")
        res = c.call("experiment.results", key="ps")
        vi = [v["name"] for v in res["variants"]].index(want)
        assert res["metrics"][0]["variants"][vi]["conversions"] == 1
        exp = c.call("privacy.export", user="alice")
        assert exp["experiments"]["assignments"][0]["variant"] == want
        r = c.call("privacy.erase", user="alice")
        assert r["removed"]["exposures"] == 1
        res = check_equal(c, "ps")
        assert sum(v["users"] for v in res["variants"]) == 40
        assert res["metrics"][0]["variants"][vi]["conversions"] == 0
        assert c.call("experiment.assign", key="ps", user="alice")["first"] is True


def test_kill9_during_experiment_edits():
    with Server(copy_scripts=False) as s:
        c = s.client(timeout=60)
        c.call("experiment.create", key="k9", stopping_rule="none", metrics=METRICS[:3],
               variants=[{"name": "control"}, {"name": "t"}])
        c.call("experiment.start", key="k9")
        users = [f"k{i}" for i in range(300)]
        c.pipeline([("experiment.assign", {"key": "k9", "user": u}) for u in users], timeout=60)
        track(c, events_for(users, now_ms(), 1))
        acked = {}
        for rnd in range(4):
            stop_at = time.time() + 0.15 + 0.1 * rnd

            def editor(rnd=rnd):
                cl = s.client(timeout=30)
                i = 0
                try:
                    while True:
                        i += 1
                        w = 1 + (rnd * 1000 + i) % 97
                        m = [dict(x) for x in METRICS[:3]]
                        m[0]["window_ms"] = DAY + (i % 5) * HOUR  # every edit rebuilds the counters
                        r = cl.call("experiment.update", key="k9", traffic=w / 100, metrics=m)
                        acked[r["version"]] = (w / 100, m[0]["window_ms"])
                except Exception:  # noqa: BLE001 - the server died under us
                    pass

            th = threading.Thread(target=editor)
            th.start()
            while time.time() < stop_at:
                time.sleep(0.01)
            s.kill9()
            th.join()
            s.start()
            c = s.client(timeout=60)
            g = c.call("experiment.get", key="k9")
            last = max(acked)
            assert g["version"] >= last
            for v in sorted(acked)[-10:]:
                d = c.call("experiment.get", key="k9", version=v)["definition"]
                assert d["traffic"] == pytest.approx(acked[v][0]) and d["metrics"][0]["window_ms"] == acked[v][1]
            h = c.call("experiment.history", key="k9")
            assert [v["version"] for v in h["versions"]] == list(range(1, g["version"] + 1))
            assert sum(a["what"] == "update" for a in h["audit"]) == g["version"] - 1
            upd, cursor = [], None
            while True:
                page = c.call("audit.query", action="experiment.update", limit=1000,
                              **({"cursor": cursor} if cursor else {}))
                upd += page["entries"]
                cursor = page["cursor"]
                if cursor is None:
                    break
            assert len(upd) == g["version"] - 1
            check_equal(c, "k9")
        assert len(acked) > 5
