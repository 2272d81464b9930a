"""The recommend plugin end to end over TCP: a catalogue of beach, mountain and
city destinations with content vectors; popular results for a new user that
turn personal after the first event; a user who views three beaches and then
gets beaches; exclusions, budget and kind filters; reasons; strategies chosen
per request and hot-reloaded; explain; profile; training; evaluation beating
`popular` on a set with structure; restart; bad inputs."""
import random
import time

import pytest

from sxtest import RpcError, Server, same_recs

DAY = 86_400_000
THEMES = ("beach", "mountain", "city")
REGIONS = {"beach": "spain", "mountain": "switzerland", "city": "france"}


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def vec_of(theme, i):
    """8-d content vector: the theme's axis dominates, a little per-item spread."""
    v = [0.05 * ((i * 7 + k * 3) % 5) for k in range(8)]
    v[THEMES.index(theme)] += 1.0
    return v


def load_catalogue(c, per_theme=10):
    for theme in THEMES:
        for i in range(per_theme):
            c.call("items.put", id=f"{theme}-{i}", kind="destination",
                   attributes={"name": f"{theme.title()} {i}", "tags": [theme, "sun" if theme == "beach" else "view"],
                               "region": REGIONS[theme], "price": 300 + 100 * i, "currency": "EUR"},
                   vector=vec_of(theme, i))
    c.call("items.put", id="offer-ski", kind="offer",
           attributes={"name": "Ski week", "tags": ["mountain"], "region": "switzerland", "price": 500},
           vector=vec_of("mountain", 99))
    c.call("items.put", id="closed-beach", kind="destination",
           attributes={"name": "Closed", "tags": ["beach"], "region": "spain", "price": 100, "available": False},
           vector=vec_of("beach", 42))


def background(c, users=20):
    """Crowd activity on mountains and cities only, so `popular` has no beach."""
    rnd = random.Random(7)
    evs = []
    for u in range(users):
        for _ in range(6):
            theme = rnd.choice(("mountain", "city"))
            evs.append({"user": f"crowd-{u}", "name": "view", "item": f"{theme}-{rnd.randrange(10)}"})
    r = c.call("events.track", events=evs)
    assert r["accepted"] == len(evs)


def themes_of(recs):
    return [r["item"].split("-")[0] for r in recs]


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        with s.client(timeout=60) as c:
            load_catalogue(c)
            background(c)
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=60) as cl:
        yield cl


def test_new_user_popular_then_personal(c):
    recs = c.call("recommend.items", user="newbie", n=6)
    assert len(recs) == 6
    assert {r["source"] for r in recs} <= {"popular", "trending", "offers"}
    assert "beach" not in themes_of(recs)  # the crowd never touched beaches
    for r in recs:
        assert r["reasons"] and all(isinstance(x, str) and x for x in r["reasons"])
    # one beach view: the very next call already reflects it (content + profile)
    c.call("events.track", user="newbie", name="view", item="beach-3")
    recs = c.call("recommend.items", user="newbie", n=6)
    th = themes_of(recs)
    assert th.count("beach") >= 3, recs
    assert "beach-3" not in [r["item"] for r in recs]  # seen items are not repeated
    assert "closed-beach" not in [r["item"] for r in recs]  # unavailable
    assert any(r["source"] == "content" for r in recs)


def test_beach_views_shift_recommendations(c):
    before = themes_of(c.call("recommend.items", user="surfer", n=5))
    for i in (1, 4, 7):
        c.call("events.track", user="surfer", name="view", item=f"beach-{i}")
    after = c.call("recommend.items", user="surfer", n=5)
    assert themes_of(after).count("beach") > before.count("beach")
    assert themes_of(after)[:3] == ["beach"] * 3
    assert any("beach" in reason for r in after for reason in r["reasons"])


def test_filters_exclusions_budget_kind(c):
    for i in (2, 5):
        c.call("events.track", user="saver", name="view", item=f"beach-{i}")
    c.call("events.track", user="saver", name="book", item="beach-8")
    recs = c.call("recommend.items", user="saver", n=10,
                  context={"budget": 800, "exclude": ["beach-0", "beach-1"], "location": "Spain"})
    items = [r["item"] for r in recs]
    assert recs and not {"beach-0", "beach-1", "beach-8", "beach-2", "beach-5"} & set(items)
    # prices are 300 + 100 i: under 800 means i <= 5
    assert all(int(i.split("-")[1]) <= 5 for i in items if i[0] in "bmc" and i.split("-")[0] in THEMES), items
    assert any("under 800 EUR" in r["reasons"] for r in recs)
    offers = c.call("recommend.items", user="saver", n=5, kind="offer")
    assert [r["item"] for r in offers] == ["offer-ski"]
    # dates: an item available only in winter is dropped for a summer trip
    c.call("items.put", id="beach-winter", kind="destination",
           attributes={"tags": ["beach"], "region": "spain", "price": 200, "months": [12, 1, 2]},
           vector=vec_of("beach", 77))
    summer = {"from": 1719792000000, "to": 1720396800000}  # 2024-07-01 .. 07-08
    recs = c.call("recommend.items", user="saver", n=30, context={"dates": summer})
    assert "beach-winter" not in [r["item"] for r in recs]
    recs = c.call("recommend.items", user="saver", n=30, include_seen=True)
    assert "beach-winter" in [r["item"] for r in recs]


def test_per_request_strategy_and_hot_reload(c, server):
    recs = c.call("recommend.items", user="surfer", n=5, strategy="popular")
    assert {r["source"] for r in recs} == {"popular"}
    src = 'return {name = "fixed", recommend = function(ctx, req) return {{item = "city-0", score = 1, source = "rule", reasons = {"v1"}}} end}'
    c.call("script.put", kind="strategies", name="fixed", source=src)
    assert c.call("recommend.items", user="surfer", strategy="fixed") == [
        {"item": "city-0", "score": 1.0, "source": "rule", "reasons": ["v1"]}]
    server.write_script("strategies/fixed.lua", src.replace("v1", "v2").replace("city-0", "city-1"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c.call("recommend.items", user="surfer", strategy="fixed")
        if r[0]["reasons"] == ["v2"]:
            break
        time.sleep(0.1)
    assert r == [{"item": "city-1", "score": 1.0, "source": "rule", "reasons": ["v2"]}]
    # a broken version is refused and the old one keeps serving
    assert code_of(c.call, "script.put", kind="strategies", name="fixed", source="return {name = 1}") == "script_error"
    assert code_of(c.call, "script.put", kind="strategies", name="fixed", source="return {}") == "script_error"
    assert c.call("recommend.items", user="surfer", strategy="fixed")[0]["item"] == "city-1"
    # a strategy that raises or returns garbage is a script_error
    c.call("script.put", kind="strategies", name="bad", source='return {recommend = function() error("boom") end}')
    assert code_of(c.call, "recommend.items", user="surfer", strategy="bad") == "script_error"
    c.call("script.put", kind="strategies", name="bad", source='return {recommend = function() return {{score = 1}} end}')
    assert code_of(c.call, "recommend.items", user="surfer", strategy="bad") == "script_error"


def wait_job(c, job):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = c.call("job.status", id=job)
        if st["state"] != "running":
            return st
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_train_explain_similar_trending(c):
    r = c.call("recommend.train", params={"k": 8, "iterations": 8})
    st = wait_job(c, r["job"])
    assert st["state"] == "done", st
    assert st["result"]["model"]["k"] == 8 and st["result"]["model"]["interactions"] > 100
    info = c.call("recommend.info")
    assert info["model"]["k"] == 8 and info["content_indexed"] >= 32
    recs = c.call("recommend.items", user="crowd-0", n=5, strategy="collaborative")
    assert recs and recs[0]["source"] == "collaborative"
    assert any(x.startswith("because you liked") for x in recs[0]["reasons"])
    ex = c.call("recommend.explain", user="surfer", item="beach-2")
    assert "content" in ex["sources"]
    assert "beach" in ex["matched"] and "spain" in ex["matched"]
    assert ex["als"] is not None and ex["als"]["contributions"]
    assert {x["item"] for x in ex["als"]["contributions"]} <= {"beach-1", "beach-4", "beach-7"}
    assert any("beach" in x for x in ex["reasons"])
    sim = c.call("recommend.similar", item="beach-0", n=5)
    assert len(sim) == 5 and themes_of(sim) == ["beach"] * 5
    assert "beach-0" not in [s["item"] for s in sim]
    tr = c.call("recommend.trending", region="France", n=3)
    assert len(tr) == 3 and all(t["region"] == "france" for t in tr)
    assert tr[0]["score"] >= tr[1]["score"] >= tr[2]["score"] > 0
    assert all(t["reasons"] == ["trending in france"] for t in tr)
    assert c.call("recommend.trending", kind="activity") == []


def test_profile(c):
    c.call("events.track", user="prof", name="view", item="beach-1", properties={"travel_date": 1719792000000})
    c.call("events.track", user="prof", name="book", item="beach-2", properties={"travel_date": 1719792000000})
    c.call("events.track", user="prof", name="view", item="city-1")
    p = c.call("profile.get", user="prof")
    assert p["user"] == "prof" and p["interactions"] == 3
    assert p["events"] == {"view": 2, "book": 1}
    assert p["tags"][0]["value"] == "beach" and p["tags"][0]["events"] == {"view": 1, "book": 1}
    assert p["regions"][0]["value"] == "spain"
    assert p["kinds"] == [{"value": "destination", "weight": 1.0, "events": {"view": 2, "book": 1}}]
    assert p["months"][0]["value"] == 7
    assert p["price"]["min"] == 400 and p["price"]["max"] == 500
    assert p["price"]["band"] in ("low", "mid", "high")
    assert abs(sum(t["weight"] for t in p["tags"]) - 1) < 1e-9


def test_bad_inputs(c):
    bad = [
        ("recommend.items", {}),
        ("recommend.items", {"user": ""}),
        ("recommend.items", {"user": 5}),
        ("recommend.items", {"user": "u", "n": 0}),
        ("recommend.items", {"user": "u", "n": 5000}),
        ("recommend.items", {"user": "u", "kind": "ship"}),
        ("recommend.items", {"user": "u", "context": {"weather": 1}}),
        ("recommend.items", {"user": "u", "context": {"budget": -1}}),
        ("recommend.items", {"user": "u", "context": {"budget": "cheap"}}),
        ("recommend.items", {"user": "u", "context": {"exclude": "x"}}),
        ("recommend.items", {"user": "u", "context": {"exclude": [1]}}),
        ("recommend.items", {"user": "u", "context": {"dates": {"from": 5, "to": 1}}}),
        ("recommend.items", {"user": "u", "bogus": 1}),
        ("recommend.similar", {"item": ""}),
        ("recommend.trending", {"window": "year"}),
        ("recommend.train", {"params": {"k": 0}}),
        ("recommend.train", {"params": {"weights": {"view": -1}}}),
        ("recommend.train", {"from": 10, "to": 5}),
        ("recommend.evaluate", {"holdout": 1.5}),
        ("recommend.evaluate", {"k": 0}),
        ("recommend.evaluate", {"split": "random"}),
        ("recommend.evaluate", {"params": {"k": 0}}),
        ("recommend.evaluate", {"params": {"bogus": 1}}),
        ("recommend.evaluate", {"diversity": 1.5}),
        ("recommend.items", {"user": "u", "diversity": -0.1}),
        ("recommend.items", {"user": "u", "diversity": "much"}),
        ("recommend.items", {"user": "u", "options": [1]}),
        ("profile.get", {}),
    ]
    for method, args in bad:
        assert code_of(c.call, method, **args) == "invalid_argument", (method, args)
    assert code_of(c.call, "recommend.items", user="u", strategy="nope") == "not_found"
    assert code_of(c.call, "recommend.similar", item="nope") == "not_found"
    assert code_of(c.call, "recommend.explain", user="nobody", item="beach-1") == "not_found"
    assert code_of(c.call, "recommend.explain", user="surfer", item="nope") == "not_found"
    assert code_of(c.call, "profile.get", user="nobody") == "not_found"
    # an unknown user is not an error for recommend.items: they get popular items
    assert c.call("recommend.items", user="never-seen", n=3)


def test_restart_keeps_indexes_and_model(server):
    with server.client(timeout=60) as c:
        before = c.call("recommend.items", user="surfer", n=5)
        info = c.call("recommend.info")
    server.restart()
    with server.client(timeout=60) as c:
        info2 = c.call("recommend.info")
        assert info2["content_indexed"] == info["content_indexed"]
        assert info2["model"]["k"] == info["model"]["k"]
        after = c.call("recommend.items", user="surfer", n=5)
        assert [r["item"] for r in after] == [r["item"] for r in before]
        assert c.call("recommend.trending", region="france", n=3)


def structured(c, users=150):
    rnd = random.Random(11)
    load_catalogue(c, per_theme=20)
    t0 = 1_700_000_000_000
    evs = []
    for u in range(users):
        theme = THEMES[u % 3]
        for j in range(12):
            th = theme if rnd.random() < 0.9 else rnd.choice(THEMES)
            evs.append({"user": f"u{u}", "name": rnd.choice(("view", "view", "click", "book")),
                        "item": f"{th}-{rnd.randrange(20)}", "time": t0 + j * DAY + u * 1000})
    c.call("events.track", events=evs)


def test_evaluate_beats_popular_on_structured_data():
    """150 users, each faithful to one theme (90%); popularity is flat across
    themes, so only personal strategies can find the held-out items."""
    with Server() as srv, srv.client(timeout=120) as c:
        structured(c)
        pop = c.call("recommend.evaluate", strategy="popular", k=10, holdout=0.2)
        hyb = c.call("recommend.evaluate", k=10, holdout=0.2)
        assert hyb["strategy"] == "hybrid" and pop["users"] == hyb["users"] > 50
        for m in ("precision", "recall", "ndcg", "coverage"):
            assert 0 <= hyb[m] <= 1 and 0 <= pop[m] <= 1
        assert hyb["ndcg"] > 1.5 * pop["ndcg"], (hyb, pop)
        assert hyb["precision"] > pop["precision"]
        assert hyb["coverage"] > pop["coverage"]
        assert hyb["novelty"] > 0


def test_options_and_diversity(c):
    """req.options overrides hybrid's tunables per request; diversity turns MMR on."""
    for i in (1, 4):
        c.call("events.track", user="tuner", name="view", item=f"beach-{i}")
    zero = {"collaborative": 0, "content": 0, "covisit": 0, "trending": 0, "offers": 0, "popular": 0}
    # only the content source: the nearest content vectors, all beaches
    content = c.call("recommend.items", user="tuner", n=6, options={"weights": dict(zero, content=1)})
    assert themes_of(content) == ["beach"] * 6 and {r["source"] for r in content} == {"content"}
    # only the popular source without the tag affinity: what the crowd viewed
    # (no beach), in popularity order
    only_pop = c.call("recommend.items", user="tuner", n=6, options={"weights": dict(zero, popular=1), "affinity": 0})
    assert {r["source"] for r in only_pop} == {"popular"}, only_pop
    assert "beach" not in themes_of(only_pop)
    assert only_pop == sorted(only_pop, key=lambda r: -r["score"])
    # with it (the default), popular items sharing the user's tags move up
    tagged = c.call("recommend.items", user="tuner", n=6, options={"weights": dict(zero, popular=1)})
    assert {r["source"] for r in tagged} == {"popular"}, tagged
    assert themes_of(tagged)[0] == "beach", tagged
    # full diversity: MMR takes the least similar next, so themes mix
    div = c.call("recommend.items", user="tuner", n=6, diversity=1.0, options={"weights": dict(zero, content=1)})
    assert len(set(themes_of(div))) == 3, div
    half = c.call("recommend.items", user="tuner", n=6, options={"weights": dict(zero, content=1), "diversity": 0.5})
    assert half != content
    plain = c.call("recommend.items", user="tuner", n=6)
    assert same_recs(c.call("recommend.items", user="tuner", n=6, diversity=0), plain)


def test_evaluate_options_params_split():
    with Server() as srv, srv.client(timeout=120) as c:
        structured(c, users=60)
        evaluate_options_params_split(c)


def evaluate_options_params_split(c):
    base = c.call("recommend.evaluate", k=5, holdout=0.3)
    assert base["split"] == "time"
    same = c.call("recommend.evaluate", k=5, holdout=0.3)
    assert same == base  # deterministic: one thread builds the evaluation's index
    per_user = c.call("recommend.evaluate", k=5, holdout=0.3, split="user")
    assert per_user["split"] == "user" and per_user["users"] >= base["users"]
    only = {"collaborative": 0, "content": 0, "covisit": 0, "trending": 0, "offers": 0, "popular": 1}
    pop_only = c.call("recommend.evaluate", k=5, holdout=0.3, options={"weights": only, "affinity": 0})
    popular = c.call("recommend.evaluate", strategy="popular", k=5, holdout=0.3)
    for m in ("precision", "recall", "ndcg"):
        assert pop_only[m] == pytest.approx(popular[m]), m
    # the tag affinity: popularity within the user's themes beats popularity
    tagged = c.call("recommend.evaluate", k=5, holdout=0.3, options={"weights": only})
    assert tagged["ndcg"] > 1.5 * popular["ndcg"], (tagged, popular)
    small = c.call("recommend.evaluate", k=5, holdout=0.3, strategy="collaborative", params={"k": 2, "iterations": 2})
    assert small["users"] == base["users"]
    assert small["ndcg"] != base["ndcg"]
    # an evaluation trains its own model: none is served afterwards
    assert c.call("recommend.info")["model"] is None


def test_pseudonymized_user_ids():
    """With pseudonymize_secret, recommend.items/explain/profile.get take the
    client's id and map it as events.track did."""
    with Server(config={"pseudonymize_secret": "salt-42"}) as s, s.client(timeout=60) as c:
        load_catalogue(c)
        background(c)
        for i in (1, 4, 7):
            c.call("events.track", user="ana@example.com", name="view", item=f"beach-{i}")
        stored = c.call("users.get", id="ana@example.com")["id"]
        assert stored != "ana@example.com" and len(stored) == 64
        recs = c.call("recommend.items", user="ana@example.com", n=5)
        assert themes_of(recs)[:3] == ["beach"] * 3, recs
        assert not {"beach-1", "beach-4", "beach-7"} & {r["item"] for r in recs}
        # the stored id is not a client id: passed back in, it names nobody
        anon = c.call("recommend.items", user=stored, n=5)
        assert "beach" not in themes_of(anon)
        ex = c.call("recommend.explain", user="ana@example.com", item="beach-2")
        assert ex["user"] == stored and "content" in ex["sources"] and "beach" in ex["matched"]
        assert code_of(c.call, "recommend.explain", user=stored, item="beach-2") == "not_found"
        p = c.call("profile.get", user="ana@example.com")
        assert p["user"] == stored and p["interactions"] == 3
        assert p["tags"][0]["value"] == "beach"
        assert code_of(c.call, "profile.get", user=stored) == "not_found"
        # an experiment chosen through recommend.items sees the same user as experiment.assign
        c.call("experiment.create", {"key": "px", "stopping_rule": "none",
                                     "variants": [{"name": "a", "payload": {"strategy": "popular"}},
                                                  {"name": "b", "payload": {"strategy": "content"}}]})
        c.call("experiment.start", key="px")
        for u in ["ana@example.com"] + [f"p{i}@example.com" for i in range(20)]:
            r = c.call("recommend.items", user=u, n=3, experiment="px")
            assert r["variant"] == c.call("experiment.assign", key="px", user=u)["variant"], u
        assert sum(v["users"] for v in c.call("experiment.results", key="px")["variants"]) == 21


def test_trending_follows_an_item_that_changes_region(c):
    """Trending in a region reads that region's item list, kept up to date by items.put/delete."""
    c.call("items.put", id="mover", kind="destination", attributes={"region": "Portugal", "price": 10})
    c.call("events.track", user="mover-fan", name="book", item="mover")
    assert [r["item"] for r in c.call("recommend.trending", region="portugal", n=5)] == ["mover"]
    c.call("items.put", id="mover", kind="destination", attributes={"region": "Greece", "price": 10})
    assert c.call("recommend.trending", region="portugal", n=5) == []
    assert [r["item"] for r in c.call("recommend.trending", region="greece", n=5)] == ["mover"]
    c.call("items.delete", id="mover")
    assert c.call("recommend.trending", region="greece", n=5) == []
    assert c.call("recommend.trending", region="nowhere", n=5) == []


def test_train_leaves_out_users_without_personalization_consent():
    with Server() as s, s.client(timeout=60) as c:
        load_catalogue(c)
        background(c)
        c.call("consent.set", user="shy", purposes={"personalization": False})
        for i in range(4):
            c.call("events.track", user="shy", name="view", item=f"beach-{i}")
        st = wait_job(c, c.call("recommend.train", params={"k": 4, "iterations": 2})["job"])
        assert st["state"] == "done", st
        assert st["result"]["skipped_events_no_consent"] == 4, st["result"]
        # granted again: the next training takes their events
        c.call("consent.set", user="shy", purposes={"personalization": True})
        st = wait_job(c, c.call("recommend.train", params={"k": 4, "iterations": 2})["job"])
        assert st["result"]["skipped_events_no_consent"] == 0, st["result"]
