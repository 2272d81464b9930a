"""Recommendations wired to the model registry, experiments and notifications,
end to end over TCP: collaborative filtering served by the registry's ALS
behind an alias (and following promotions and rollbacks, also when the
index is built on the pool), strategies chosen by an experiment's variant,
and notification content made of each user's recommended destinations."""
import time

import pytest

from sxtest import RpcError, Server, same_recs, wait_until

DAY = 86_400_000
THEMES = ("beach", "mountain", "city")


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def wait_job(c, job, timeout=60):
    st = wait_until(lambda: (lambda s: s if s["state"] != "running" else None)(c.call("job.status", id=job)),
                    timeout)
    assert st and st["state"] == "done", st
    return st


def vec_of(theme, i):
    v = [0.05 * ((i * 7 + k * 3) % 5) for k in range(8)]
    v[THEMES.index(theme)] += 1.0
    return v


NOW = int(time.time() * 1000)
CUT = NOW - 7 * DAY


def populate(c):
    for theme in THEMES:
        for i in range(10):
            c.call("items.put", id=f"{theme}-{i}", kind="destination",
                   attributes={"name": f"{theme} {i}", "tags": [theme], "price": 300 + 10 * i},
                   vector=vec_of(theme, i))
    evs = []
    # before CUT: whoever views beach-0/1 views beaches; after: mountains
    for u in range(30):
        theme = THEMES[u % 3]
        t0 = NOW - 10 * DAY + u * 1000
        for i in range(6):
            evs.append({"user": f"old-{u}", "name": "view", "item": f"{theme}-{(u + i) % 10}", "time": t0 + i})
        if theme == "beach":
            t1 = NOW - 5 * DAY + u * 1000
            for i, item in enumerate(["beach-0", "beach-1"] + [f"mountain-{(u + k) % 10}" for k in range(5)]):
                evs.append({"user": f"new-{u}", "name": "view", "item": item, "time": t1 + i})
        else:
            t1 = NOW - 5 * DAY + u * 1000
            for i in range(6):
                evs.append({"user": f"new-{u}", "name": "view", "item": f"city-{(u + i) % 10}", "time": t1 + i})
    r = c.call("events.track", events=evs)
    assert r["accepted"] == len(evs)


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        with s.client(timeout=60) as c:
            populate(c)
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=60) as cl:
        yield cl


def train(c, data, promote="always"):
    r = c.call("model.train", type="als", name="recommend", data=data, promote_if=promote,
               params={"factors": 8, "iterations": 12, "holdout": 0.2, "threads": 1, "lambda": 0.1})
    return wait_job(c, r["job"])["result"]


def collab(c, user, n=5):
    """The collaborative part of the `collaborative` strategy (it tops up with popular items)."""
    recs = c.call("recommend.items", user=user, n=n, strategy="collaborative")
    return [r["item"] for r in recs if r["source"] == "collaborative"]


def registry_top(c, user, n=5):
    r = c.call("model.predict", name="recommend", inputs={"user": user, "n": n})
    res = r["results"][0]
    assert res["source"] == "fold_in"
    return [i["item"] for i in res["items"]]


def themes(items):
    return [i.split("-")[0] for i in items]


def test_registry_model_serves_and_follows_the_alias(c):
    # no own model and no registry model yet: collaborative has nothing
    info = c.call("recommend.info")["factors"]
    assert info["source"] == "none" and "registry" in info["status"]
    c.call("events.track", events=[{"user": "probe", "name": "view", "item": "beach-0"},
                                   {"user": "probe", "name": "view", "item": "beach-1"}])
    assert collab(c, "probe") == []

    v1 = train(c, {"to": CUT})
    assert v1["promoted"] and v1["version"] == 1
    got = collab(c, "probe")
    assert len(got) == 5 and set(got) == set(registry_top(c, "probe"))
    assert themes(got).count("beach") >= 4
    f = c.call("recommend.info")["factors"]
    assert f["source"] == "registry" and f["model"] == "recommend" and f["version"] == 1
    assert f["items_mapped"] == 30
    assert "registry recommend v1" in c.call("recommend.info")["model"]

    v2 = train(c, {"from": CUT, "to": NOW})  # after CUT, beach viewers go to the mountains
    assert v2["promoted"] and v2["version"] == 2
    got2 = collab(c, "probe")
    assert set(got2) == set(registry_top(c, "probe"))
    assert themes(got2).count("mountain") >= 4
    assert c.call("recommend.info")["factors"]["version"] == 2

    # explain uses the registry's factors too
    e = c.call("recommend.explain", user="probe", item=got2[0])
    assert e["als"] and e["als"]["score"] > 0
    assert {x["item"] for x in e["als"]["contributions"]} <= {"beach-0", "beach-1"}

    c.call("model.rollback", name="recommend")
    assert c.call("recommend.info")["factors"]["version"] == 1
    assert themes(collab(c, "probe")).count("beach") >= 4

    # the index built on the pool: the swap happens when the job is done
    cfg = c.call("recommend.config", pool_above=0)
    assert cfg["pool_above"] == 0 and cfg["model"] == "recommend" and cfg["alias"] == "production"
    c.call("model.promote", name="recommend", version=2)
    c.call("recommend.info")
    assert wait_until(lambda: c.call("recommend.info")["factors"]["version"] == 2, 20)
    assert c.call("recommend.info")["factors"]["indexing"] is False
    assert themes(collab(c, "probe")).count("mountain") >= 4
    c.call("recommend.config", pool_above=20000)


def test_config_names_another_model_or_alias(c):
    if c.call("recommend.info")["factors"]["source"] != "registry":
        train(c, {"to": CUT})
    r = c.call("recommend.config", model="nothing-here")
    assert r["model"] == "nothing-here" and r["serving"]["source"] == "none"
    assert collab(c, "probe") == []
    r = c.call("recommend.config", model="recommend", alias="staging")
    assert r["serving"]["source"] == "none"
    c.call("model.promote", name="recommend", version=1, alias="staging")
    assert c.call("recommend.info")["factors"]["version"] == 1
    r = c.call("recommend.config", alias="production")
    assert r["serving"]["source"] == "registry" and r["serving"]["model"] == "recommend"
    assert c.call("recommend.config") == r  # no arguments: read
    assert code_of(c.call, "recommend.config", model="bad name") == "invalid_argument"
    assert code_of(c.call, "recommend.config", alias="") == "invalid_argument"
    assert code_of(c.call, "recommend.config", pool_above=-1) == "invalid_argument"
    assert code_of(c.call, "recommend.config", colour="red") == "invalid_argument"


def test_recommend_train_model_is_the_fallback(c):
    if c.call("recommend.info")["factors"]["source"] != "registry":
        train(c, {"to": CUT})
    st = wait_job(c, c.call("recommend.train", params={"k": 8, "iterations": 5})["job"])
    assert st["result"]["model"]["k"] == 8
    # the registry's model keeps serving; the own one waits aside
    assert c.call("recommend.info")["factors"]["source"] == "registry"
    c.call("recommend.config", model="")
    info = c.call("recommend.info")
    assert info["factors"]["source"] == "own" and isinstance(info["model"], dict) and info["model"]["k"] == 8
    assert len(collab(c, "probe")) == 5
    c.call("recommend.config", model="recommend")
    assert c.call("recommend.info")["factors"]["source"] == "registry"


def test_experiment_chooses_the_strategy(c):
    c.call("experiment.create", {"key": "reco", "stopping_rule": "none",
                                 "variants": [{"name": "pop", "payload": {"strategy": "popular"}},
                                              {"name": "cf", "payload": {"strategy": "collaborative"}}]})
    c.call("experiment.start", key="reco")
    users = [f"old-{u}" for u in range(30)]
    seen = {}
    for u in users:
        r = c.call("recommend.items", user=u, n=4, experiment="reco")
        assert r["experiment"] == "reco" and r["enrolled"] is True and r["reason"] == ""
        want = {"pop": "popular", "cf": "collaborative"}[r["variant"]]
        assert r["strategy"] == want
        assert same_recs(r["items"], c.call("recommend.items", user=u, n=4, strategy=want))
        # sticky, and the same answer experiment.assign gives
        assert c.call("experiment.assign", key="reco", user=u)["variant"] == r["variant"]
        seen[r["variant"]] = seen.get(r["variant"], 0) + 1
    assert set(seen) == {"pop", "cf"}
    cf = next(u for u in users if c.call("experiment.assign", key="reco", user=u)["variant"] == "cf")
    assert "collaborative" in {i["source"] for i in c.call("recommend.items", user=cf, n=4, experiment="reco")["items"]}

    # not enrolled: the request's strategy (or the default) serves
    c.call("experiment.create", {"key": "reco-draft", "variants": [{"name": "a", "payload": {"strategy": "popular"}},
                                                                    {"name": "b"}]})
    r = c.call("recommend.items", user="old-1", n=3, experiment="reco-draft")
    assert r["enrolled"] is False and r["variant"] is None and r["reason"] == "not_running"
    assert r["strategy"] == "hybrid" and same_recs(r["items"], c.call("recommend.items", user="old-1", n=3))
    r = c.call("recommend.items", user="old-1", n=3, experiment="reco-draft", strategy="content")
    assert r["strategy"] == "content"

    # a variant naming no (or an unknown) strategy falls back, and says so
    c.call("experiment.create", {"key": "reco-bad", "stopping_rule": "none",
                                 "variants": [{"name": "x", "payload": {"strategy": "nope"}},
                                              {"name": "y", "payload": {"colour": 1}}]})
    c.call("experiment.start", key="reco-bad")
    for u in users[:6]:
        r = c.call("recommend.items", user=u, n=3, experiment="reco-bad")
        assert r["enrolled"] and r["strategy"] == "hybrid" and r["fallback"]

    assert code_of(c.call, "recommend.items", user="old-1", experiment="missing") == "not_found"
    assert code_of(c.call, "recommend.items", user="old-1", experiment="") == "invalid_argument"
    assert code_of(c.call, "recommend.items", user="old-1", experiment=5) == "invalid_argument"


RULE = """
return {
  content_items = 3,
  cap = { max = 5, days = 1 },
  condition = function(user) return string.sub(user.id, 1, 6) == "probe-" end,
  message = function(user, content)
    local names = {}
    for i, c in ipairs(content) do names[i] = c.item .. "=" .. c.source end
    return { title = "for " .. user.id, body = table.concat(names, ",") }
  end,
}
"""


def test_notifications_carry_the_users_recommendations(c):
    probes = {"probe-beach": "beach", "probe-city": "city", "probe-mountain": "mountain"}
    evs = []
    for u, theme in probes.items():
        evs += [{"user": u, "name": "view", "item": f"{theme}-{i}"} for i in (2, 3, 4)]
    c.call("events.track", events=evs)
    expected = {u: [r["item"] for r in c.call("recommend.items", user=u, kind="destination", n=3)]
                for u in probes}
    for u, items in expected.items():
        assert len(items) == 3
    assert len({tuple(v) for v in expected.values()}) == 3  # per user, not one list for all
    c.call("script.put", kind="notifications", name="recs", source=RULE)
    g = c.call("notifications.generate", rule="recs")
    assert g["matched"] == 3 and g["created"] == 3
    pulled = [n for n in c.call("notifications.pull", limit=1000)["notifications"] if n["rule"] == "recs"]
    assert {n["user"] for n in pulled} == set(probes)
    for n in pulled:
        assert n["content"] == expected[n["user"]]
        body = n["message"]["body"].split(",")
        assert [b.split("=")[0] for b in body] == expected[n["user"]]
        assert all(b.split("=")[1] not in ("recent_popular", "") for b in body)
    c.call("notifications.ack", ids=[n["id"] for n in pulled])
