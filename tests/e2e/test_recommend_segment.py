"""Segment popularity over TCP: what users of one country (the user attribute
`country`) take ranks first for a new user from that country, through
ctx.sources.segment_popular and the default strategy `hybrid`, with a reason a
person can read; users without the attribute fall back to the global list;
the counts survive a clean restart and kill -9 (snapshot + journal); with the
table of values full, an idle value makes room for a new one."""
import time

import pytest

from sxtest import RpcError, Server

PEEK = """
return {
  name = "segpeek",
  recommend = function(ctx, req)
    local o = req.options or {}
    local l = ctx.sources.segment_popular{user = req.user, segment = o.segment, kind = req.kind,
                                          n = req.n, fallback = o.fallback}
    return l
  end,
}
"""


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


def load(c, now):
    # fr-* are the French favourites, de-* the Germans'; gl-0 is liked by both
    # (and most popular overall), so global popularity ranks it first
    for i in range(3):
        for p in ("fr", "de"):
            c.call("items.put", id=f"{p}-{i}", kind="destination", attributes={"name": f"{p.upper()} place {i}"})
    c.call("items.put", id="gl-0", kind="destination", attributes={"name": "Everyone's place"})
    c.call("items.put", id="act-0", kind="activity", attributes={"name": "A French activity"})
    evs = []

    def views(user, items):
        for j, item in enumerate(items):
            evs.append({"user": user, "name": "view", "item": item, "time": now - 3_600_000 + j * 1000})

    # France: fr-0 by 8 users, gl-0 by 6, fr-1 by 5, act-0 by 3
    for u in range(8):
        c.call("users.put", id=f"fr{u}", attributes={"country": "FR"})
        views(f"fr{u}", ["fr-0"] + ["gl-0"] * (u < 6) + ["fr-1"] * (u < 5) + ["act-0"] * (u < 3))
    # Germany: de-0 by 6, gl-0 by 5, de-1 by 4, de-2 by 2
    for u in range(6):
        c.call("users.put", id=f"de{u}", attributes={"country": "DE"})
        views(f"de{u}", ["de-0"] + ["gl-0"] * (u < 5) + (["de-1"] if u < 4 else ["de-2"]))
    # no country: counted in the global popularity only
    for u in range(3):
        evs.append({"user": f"anon{u}", "name": "view", "item": "gl-0", "time": now - 1_000})
    assert c.call("events.track", events=evs)["accepted"] == len(evs)
    c.call("users.put", id="newfr", attributes={"country": "fr"})
    c.call("users.put", id="newde", attributes={"country": "DE", "device": "ios"})
    c.call("users.put", id="newxx", attributes={"device": "ios"})


def peek(c, user, **options):
    return c.call("recommend.items", user=user, strategy="segpeek", n=10, options=options)


def ids(recs):
    return [r["item"] for r in recs]


def assert_same_list(got, want):
    """The same items in the same order, scores as before a crash (float32 journal)."""
    assert ids(got) == ids(want)
    for a, b in zip(got, want):
        assert a["score"] == pytest.approx(b["score"], rel=1e-3)


def check(c):
    fr = peek(c, "newfr")
    de = peek(c, "newde")
    assert ids(fr) == ["fr-0", "gl-0", "fr-1", "act-0"]
    assert {r["source"] for r in fr} == {"segment_popular"}
    assert ids(de) == ["de-0", "gl-0", "de-1", "de-2"]
    # scores are the decayed weighted views of the segment's users (8 French users viewed fr-0)
    assert fr[0]["score"] == pytest.approx(8, rel=1e-3)
    # kind, an explicit segment value, and the fallback to the global list
    assert ids(c.call("recommend.items", user="newfr", strategy="segpeek", kind="activity", n=10)) == ["act-0"]
    assert ids(peek(c, "newxx", segment="DE")) == ids(de)
    glob = peek(c, "newxx")
    assert ids(glob)[0] == "gl-0" and {r["source"] for r in glob} == {"popular"}
    assert peek(c, "newxx", fallback=False) == []
    assert peek(c, "newfr", segment="IT", fallback=False) == []
    return fr, de


def test_segment_source_hybrid_and_restarts():
    now = int(time.time() * 1000)
    with Server(scripts={"strategies/segpeek.lua": PEEK}) as s:
        with s.client(timeout=60) as c:
            load(c, now)
            fr, de = check(c)
            # the default strategy: a new French user gets the French
            # favourites first, a new German user the German ones
            hf = c.call("recommend.items", user="newfr", n=4)
            hd = c.call("recommend.items", user="newde", n=4)
            assert ids(hf) != ids(hd)
            assert ids(hf).index("fr-0") < min(ids(hf).index(i) if i in ids(hf) else 9 for i in ("de-0", "de-1"))
            assert ids(hd).index("de-0") < min(ids(hd).index(i) if i in ids(hd) else 9 for i in ("fr-0", "fr-1"))
            rf = hf[ids(hf).index("fr-0")]["reasons"]
            # the value as first seen ("FR"; newfr wrote "fr")
            assert "popular with travellers from FR" in rf and "popular with travellers" not in rf, rf
            rd = hd[ids(hd).index("de-0")]["reasons"]
            assert "popular with travellers from DE" in rd, rd
            # without a country: the global ranking
            assert ids(c.call("recommend.items", user="newxx", n=1)) == ["gl-0"]
            # a bad segment value is the strategy's error
            assert code_of(peek, c, "newfr", segment="") == "script_error"
            # users.put moves a user: their next events count for the new country
            c.call("users.put", id="de5", attributes={"country": "FR"})
            c.call("events.track", user="de5", name="view", item="de-2", time=now - 500)
            assert "de-2" in ids(peek(c, "newfr"))
            fr2 = peek(c, "newfr")
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert_same_list(peek(c, "newfr"), fr2)
            assert ids(peek(c, "newde")) == ids(de)
            c.call("events.track", user="fr7", name="view", item="fr-2", time=now - 100)
            fr3 = peek(c, "newfr")
            assert "fr-2" in ids(fr3)
        s.restart()
        with s.client(timeout=60) as c:
            assert ids(peek(c, "newfr")) == ids(fr3)
            assert ids(peek(c, "newde")) == ids(de)
            hf = c.call("recommend.items", user="newfr", n=4)
            assert ids(hf).index("fr-0") < (ids(hf).index("de-0") if "de-0" in ids(hf) else 9)
            # snapshot + journal tail
            c.call("events.track", user="fr6", name="view", item="de-1", time=now - 50)
            fr4 = peek(c, "newfr")
            assert "de-1" in ids(fr4) and "de-1" not in ids(fr3)
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert_same_list(peek(c, "newfr"), fr4)


def test_segment_attribute_is_configured():
    now = int(time.time() * 1000)
    with Server(scripts={"strategies/segpeek.lua": PEEK}) as s:
        with s.client(timeout=60) as c:
            assert c.call("recommend.config")["segment"] == "country"
            load(c, now)
            assert ids(peek(c, "newfr", fallback=False))[0] == "fr-0"
            for bad in (3, "x" * 33, ["country"]):
                assert code_of(c.call, "recommend.config", segment=bad) == "invalid_argument"
            assert c.call("recommend.config", segment="device")["segment"] == "device"
            # counts under the old attribute are dropped; new events count per device
            assert peek(c, "newfr", segment="FR", fallback=False) == []
            assert peek(c, "newde", fallback=False) == []
            c.call("users.put", id="fr0", attributes={"country": "FR", "device": "iOS"})
            c.call("users.put", id="de0", attributes={"country": "DE", "device": "android"})
            c.call("events.track", user="fr0", name="view", item="fr-2", time=now - 100)
            c.call("events.track", user="de0", name="view", item="de-2", time=now - 100)
            assert ids(peek(c, "newde", fallback=False)) == ["fr-2"]  # newde has device ios
            assert ids(peek(c, "newfr", fallback=False)) == []        # newfr has no device
            # "" turns segments off: everyone gets the global list
            c.call("recommend.config", segment="")
            assert peek(c, "newde", fallback=False) == []
            c.call("recommend.config", segment="device")
            c.call("events.track", user="fr0", name="view", item="fr-1", time=now - 90)
        s.restart()
        with s.client(timeout=60) as c:
            assert c.call("recommend.config")["segment"] == "device"
            assert ids(peek(c, "newde", fallback=False)) == ["fr-1"]


def test_full_segment_table_frees_idle_values():
    # 256 values (the table's size) last seen ten half-lives ago: a new value
    # frees the least active of them, is counted and served, and stays so
    # after kill -9 (snapshot + journal)
    now = int(time.time() * 1000)
    old = now - 300 * 86_400_000
    with Server(scripts={"strategies/segpeek.lua": PEEK}) as s:
        with s.client(timeout=60) as c:
            for i in range(3):
                c.call("items.put", id=f"it-{i}", kind="destination", attributes={"name": f"IT place {i}"})
            c.call("items.put", id="old-0", kind="destination", attributes={"name": "An old favourite"})
            evs = []
            for i in range(256):
                c.call("users.put", id=f"c{i}", attributes={"country": f"C{i}"})
                evs += [{"user": f"c{i}", "name": "view", "item": "old-0", "time": old}] * (1 if i == 5 else 2)
            assert c.call("events.track", events=evs)["accepted"] == len(evs)
            assert ids(peek(c, "c5", fallback=False)) == ["old-0"]
            c.call("users.put", id="it1", attributes={"country": "IT"})
            c.call("users.put", id="newit", attributes={"country": "it"})
            c.call("events.track", events=[{"user": "it1", "name": "view", "item": "it-1", "time": now - 1000},
                                           {"user": "it1", "name": "view", "item": "it-0", "time": now - 900},
                                           {"user": "it1", "name": "view", "item": "it-1", "time": now - 800}])
            it = peek(c, "newit", fallback=False)
            assert ids(it) == ["it-1", "it-0"] and {r["source"] for r in it} == {"segment_popular"}
            # C5 (one view) was the least active: it made room
            assert peek(c, "c5", fallback=False) == []
            assert ids(peek(c, "c6", fallback=False)) == ["old-0"]
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert ids(peek(c, "newit", fallback=False)) == ids(it)
            for a, b in zip(peek(c, "newit"), it):
                assert a["score"] == pytest.approx(b["score"], rel=1e-6)
            assert peek(c, "c5", fallback=False) == []
