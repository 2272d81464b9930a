"""Funnel panels served stale-while-revalidate: a dashboard's funnel is computed on the loop
only the first time its arguments are seen, then answered from the cache (with computed_at)
while a recomputation on the pool follows new events; privacy.erase drops the cache."""
import time

import pytest

from sxtest import Server

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
STEPS = ["search", "view", "create_trip", "book"]
ARGS = {"steps": STEPS, "from": T0, "to": T0 + 3 * DAY, "window_ms": DAY}

DASH = """
return {
  title = "fc", refresh_ms = 60000, variables = { from = 0, to = 1 },
  panels = {
    { id = "f", title = "f", kind = "funnel",
      query = function(ctx, vars)
        local r = ctx.analytics.funnel { window_ms = 86400000, to = vars.to,
                                         steps = { "search", "view", "create_trip", "book" }, from = vars.from }
        return { steps = r.steps, computed_at = r.computed_at }
      end },
  },
}
"""

# the same arguments built in another key order
SRC_ORDER = """return { title = "o", refresh_ms = 60000, variables = {}, panels = { { id = "f", title = "f",
  kind = "funnel", query = function(ctx, vars)
    local a = {}
    a.from = %d; a.steps = { "search", "view", "create_trip", "book" }; a.window_ms = 86400000; a.to = %d
    return { steps = ctx.analytics.funnel(a).steps } end } } }""" % (ARGS["from"], ARGS["to"])
SRC_BAD = """return { title = "b", refresh_ms = 60000, variables = {}, panels = { { id = "f", title = "f",
  kind = "funnel", query = function(ctx, vars)
    return ctx.analytics.funnel { steps = {}, from = 0, to = 1 } end } } }"""


def evs_of(user, t, names):
    return [{"user": user, "name": n, "time": t + i * 60_000} for i, n in enumerate(names)]


@pytest.fixture(scope="module")
def server():
    with Server(copy_scripts=False, scripts={"dashboards/fc.lua": DASH, "dashboards/fc2.lua": SRC_ORDER,
                                             "dashboards/fcbad.lua": SRC_BAD}) as s:
        yield s


def stats(c):
    return c.call("server.info")["plugins"]["events"]["funnel_cache"]


def render(c):
    p = c.call("dashboard.render", name="fc", vars={"from": ARGS["from"], "to": ARGS["to"]})["panels"][0]
    assert p["error"] is None
    return p["data"]


def users(steps):
    return [s["users"] for s in steps]


def wait_for(c, want, timeout=10):
    """Renders until the panel shows `want` (the revalidation landed); returns the panel."""
    end = time.time() + timeout
    while True:
        d = render(c)
        if users(d["steps"]) == want or time.time() > end:
            return d
        time.sleep(0.2)


def test_second_render_is_served_from_the_cache(server):
    with server.client(timeout=60) as c:
        evs = evs_of("a1", T0 + 1000, STEPS) + evs_of("a2", T0 + 5000, STEPS[:2])
        assert c.call("events.track", events=evs)["accepted"] == len(evs)
        s0 = stats(c)
        d1 = render(c)
        s1 = stats(c)
        assert s1["sync"] == s0["sync"] + 1
        assert users(d1["steps"]) == [2, 2, 1, 1] == users(c.call("funnel.query", **ARGS)["steps"])
        assert abs(d1["computed_at"] - time.time() * 1000) < 10_000
        d2 = render(c)
        s2 = stats(c)
        assert s2["sync"] == s1["sync"] and s2["hits"] == s1["hits"] + 1
        assert d2 == d1  # nothing changed: no revalidation, same answer and age
        time.sleep(1.1)
        assert users(render(c)["steps"]) == users(d1["steps"])
        assert stats(c)["sync"] == s1["sync"]


def test_new_events_reach_the_panel_after_revalidation(server):
    with server.client(timeout=60) as c:
        before = users(c.call("funnel.query", **ARGS)["steps"])
        d0 = render(c)
        assert users(d0["steps"]) == before
        assert c.call("events.track", events=evs_of("b1", T0 + 9000, STEPS))["accepted"] == 4
        want = c.call("funnel.query", **ARGS)
        assert users(want["steps"]) == [before[0] + 1, before[1] + 1, before[2] + 1, before[3] + 1]
        s0 = stats(c)
        # within the fresh second the old answer is served as is
        if time.time() * 1000 - d0["computed_at"] < 900:
            assert users(render(c)["steps"]) == before
        time.sleep(1.1)
        d = wait_for(c, users(want["steps"]))
        assert d["steps"] == [{k: v for k, v in s.items() if v is not None} for s in want["steps"]]
        assert d["computed_at"] > d0["computed_at"]
        s1 = stats(c)
        assert s1["sync"] == s0["sync"] and s1["revalidations"] >= s0["revalidations"] + 1


def test_argument_order_and_bad_arguments(server):
    with server.client(timeout=60) as c:
        render(c)
        s0 = stats(c)
        # the same arguments built in another key order hit the same entry
        p = c.call("dashboard.render", name="fc2")["panels"][0]
        assert p["error"] is None and stats(c)["sync"] == s0["sync"]
        for _ in range(2):
            p = c.call("dashboard.render", name="fcbad")["panels"][0]
            assert "invalid_argument" in p["error"]
        assert stats(c)["entries"] == s0["entries"]  # errors are not cached


def test_erase_invalidates(server):
    with server.client(timeout=60) as c:
        d0 = render(c)
        n = users(d0["steps"])
        r = c.call("privacy.erase", user="a1")
        assert r["found"] is True
        assert stats(c)["entries"] == 0
        s0 = stats(c)
        d = render(c)  # recomputed at once, without the erased user
        assert stats(c)["sync"] == s0["sync"] + 1
        assert users(d["steps"]) == [n[0] - 1, n[1] - 1, n[2] - 1, n[3] - 1]
        assert users(d["steps"]) == users(c.call("funnel.query", **ARGS)["steps"])
