"""Consent and erasure across every plugin: a consenting user who tracked
events, got recommendations, was assigned to a running experiment, was scored
by predict.user, got a notification and is a row of a trained ALS model is
erased; a compacted copy of the store (admin.backup) then holds no byte of
the id in any key or value of any table. privacy.export holds every
plugin's part; refusals per purpose behave as docs/notes-integ-privacy.md
says."""
import os
import time

import numpy as np
import pytest

from sxtest import RpcError, Server, wait_until

DAY = 86_400_000
N_USERS = 120


def uid(u):
    return f"u-{u}-zq"  # no id is a substring of another


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def wait_job(c, job, timeout=120):
    st = wait_until(lambda: (lambda s: s if s["state"] != "running" else None)(c.call("job.status", id=job)),
                    timeout)
    assert st and st["state"] == "done", st
    return st["result"]


def population(now, seed=5):
    rng = np.random.default_rng(seed)
    evs = []
    for u in range(N_USERS):
        churn = u % 2 == 0
        d = float(200 - int(rng.integers(0, 20)))
        stop = int(rng.integers(61, 100)) if churn else 0
        while d > stop:
            t = now - int(d * DAY) + int(rng.integers(0, 3_600_000))
            name = ["search", "view", "view", "create_trip", "book"][int(rng.integers(0, 5))]
            ev = {"user": uid(u), "name": name, "time": t, "item": f"dest{int(rng.integers(0, 8))}"}
            if name == "book":
                ev["properties"] = {"value": float(rng.integers(100, 900))}
            evs.append(ev)
            d -= rng.exponential(8.0 if churn else 3.0) + 0.2
    return evs


def backup_bytes(c, server, name):
    path = os.path.join(server.tmp, name)
    c.call("admin.backup", path=path)
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def server():
    with Server() as s, s.client(timeout=120) as c:
        now = int(time.time() * 1000)
        evs = population(now)
        for i in range(0, len(evs), 5000):
            assert c.call("events.track", events=evs[i:i + 5000])["rejected"] == []
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=120) as cl:
        yield cl


def test_erase_reaches_every_plugin(c, server):
    als = c.call("model.train", type="als", name="recs", params={"factors": 4, "iterations": 3})
    wait_job(c, als["job"])
    churn = c.call("predict.train", target="churn_60d")
    res = wait_job(c, churn["job"])
    assert wait_until(lambda: any(t["name"] == "churn_60d" and t["version"] == res["version"]
                                  for t in c.call("predict.config")["targets"]), 5)
    g = c.call("notifications.generate", rule="inspiration")
    assert g["created"] > 0
    pulled = c.call("notifications.pull", limit=1000)["notifications"]
    users = sorted({n["user"] for n in pulled})
    victim = users[0]
    c.call("consent.set", user=victim, purposes={"analytics": True, "personalization": True,
                                                 "experiments": True, "notifications": True})
    c.call("events.track", user=victim, name="view", item="dest1", time=int(time.time() * 1000))
    assert c.call("recommend.items", user=victim, n=3) is not None
    c.call("experiment.create", {"key": "xp", "variants": [{"name": "a"}, {"name": "b"}], "stopping_rule": "none"})
    c.call("experiment.start", key="xp")
    assert c.call("experiment.assign", key="xp", user=victim)["enrolled"] is True
    p = c.call("predict.user", user=victim, targets=["churn_60d"])
    assert 0 <= p["predictions"]["churn_60d"]["probability"] <= 1
    c.call("predict.accuracy", target="churn_60d")  # flushes the prediction log
    m = c.call("model.predict", name="recs", version=1, inputs={"user": victim})
    assert m["results"][0]["source"] == "factors"
    assert victim.encode() in backup_bytes(c, server, "before")

    ex = c.call("privacy.export", user=victim)
    for part in ("events", "recommend", "experiments", "predict", "models"):
        assert part in ex, part
    assert ex["experiments"]["assignments"][0]["experiment"] == "xp"
    assert ex["models"]["factor_rows"] == [{"model": "recs", "version": 1}]
    assert any(n["user"] == victim for n in ex["predict"]["notifications"])
    assert len(ex["predict"]["predictions"]) >= 1
    assert ex["recommend"] is not None and "recent" in ex["recommend"]

    r = c.call("privacy.erase", user=victim)
    assert r["found"] is True
    rm = r["removed"]
    assert rm["exposures"] == 1 and rm["artifacts"] == 1 and rm["notifications"] >= 1 and rm["series"] >= 1
    assert victim.encode() not in backup_bytes(c, server, "after")
    # the rewritten model still serves others, and no longer knows the victim
    other = users[1] if len(users) > 1 else uid(1)
    assert c.call("model.predict", name="recs", version=1, inputs={"user": other})["results"][0]["source"] == "factors"
    assert c.call("model.predict", name="recs", version=1,
                  inputs={"user": victim})["results"][0]["source"] in ("cold", "fold_in")
    assert code_of(c.call, "privacy.export", user=victim) == "not_found"


def test_refusals_per_purpose(c):
    u = uid(3)
    c.call("experiment.create", {"key": "xp2", "variants": [{"name": "a"}, {"name": "b"}], "stopping_rule": "none"})
    c.call("experiment.start", key="xp2")
    c.call("consent.set", user=u, purposes={"experiments": False, "personalization": False,
                                            "notifications": False})
    assert c.call("experiment.assign", key="xp2", user=u) == {"key": "xp2", "enrolled": False, "reason": "no_consent"}
    ex = c.call("privacy.export", user=u)
    assert ex["experiments"] is None  # no exposure was logged
    assert code_of(c.call, "profile.get", user=u) == "failed_precondition"
    assert c.call("model.predict", name="recs", version=1, inputs={"user": u})["results"][0]["source"] == "no_consent"
    recs = c.call("recommend.items", user=u, n=5)
    srcs = {x.get("source") for x in (recs if isinstance(recs, list) else recs.get("items", []))}
    assert srcs <= {"popular", "trending", None}, srcs
    assert ex["recommend"] is None
    g = c.call("notifications.generate", rule="inspiration")
    assert g["no_consent"] >= 0
    pulled = c.call("notifications.pull", limit=1000)["notifications"]
    assert all(n["user"] != u for n in pulled if n["created"] >= 0 and n["id"] > max(g["ids"] or [0]) + 10**9)
    # granting again enrolls
    c.call("consent.set", user=u, purposes={"experiments": True})
    assert c.call("experiment.assign", key="xp2", user=u)["enrolled"] is True
