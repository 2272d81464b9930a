"""The events plugin end to end: users, items, events.track (batches, bad events,
idempotent retries), live metrics (exact numbers, restart), DAU/WAU/MAU, funnels,
retention and saved cohorts, all over TCP with hand-made event sets whose answers
are worked out in the comments."""
import time

import pytest

from sxtest import RpcError, Server

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


@pytest.fixture(scope="module")
def server():
    with Server(copy_scripts=False) as s:
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=60) as cl:
        yield cl


# ---- users ----

def test_users_put_get(c):
    r = c.call("users.put", id="alice", attributes={"country": "FR", "tags": ["a", "b"]}, signup_time=T0)
    assert r["created"] is True and r["id"] == "alice"
    idx = r["index"]
    g = c.call("users.get", id="alice")
    assert g == {"id": "alice", "index": idx, "attributes": {"country": "FR", "tags": ["a", "b"]},
                 "signup_time": T0, "first_seen": None, "created": g["created"]}
    # an update keeps the index and the signup time, replaces the attributes
    r = c.call("users.put", id="alice", attributes={"country": "DE"})
    assert r == {"id": "alice", "index": idx, "created": False}
    g = c.call("users.get", id="alice")
    assert g["attributes"] == {"country": "DE"} and g["signup_time"] == T0
    r2 = c.call("users.put", id="bob")
    assert r2["index"] == idx + 1
    assert c.call("users.get", id="bob")["attributes"] == {}


def test_users_bad_inputs(c):
    assert code_of(c.call, "users.get", id="nobody") == "not_found"
    for bad in (5, "", "x" * 129, b"\xff\xfe", None):
        assert code_of(c.call, "users.put", id=bad) == "invalid_argument", bad
    assert code_of(c.call, "users.put", id="u", attributes=[1]) == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", attributes={"x": float("nan")}) == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", attributes={"x": {"y": float("inf")}}) == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", attributes={"x": "y" * 70000}) == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", signup_time=-1) == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", signup_time="soon") == "invalid_argument"
    assert code_of(c.call, "users.put", id="u", colour="red") == "invalid_argument"
    assert code_of(c.call, "users.get", id="nobody") == "not_found"  # nothing was created


# ---- items ----

def test_items_crud_and_list(c):
    assert c.call("items.put", id="it:rome", kind="destination",
                  attributes={"country": "IT", "price": 120.5}, vector=[0.5, -1, 2]) == \
        {"id": "it:rome", "kind": "destination"}
    g = c.call("items.get", id="it:rome")
    assert g["kind"] == "destination" and g["attributes"] == {"country": "IT", "price": 120.5}
    assert g["vector"] == [0.5, -1.0, 2.0]
    for i in range(5):
        c.call("items.put", id=f"it:act{i}", kind="activity", attributes={"n": i})
    c.call("items.put", id="it:trip", kind="trip")
    assert c.call("items.get", id="it:trip")["vector"] is None
    page = c.call("items.list", kind="activity", limit=2)
    assert [i["id"] for i in page["items"]] == ["it:act0", "it:act1"] and page["cursor"] == "it:act1"
    page = c.call("items.list", kind="activity", limit=2, cursor=page["cursor"])
    assert [i["id"] for i in page["items"]] == ["it:act2", "it:act3"]
    page = c.call("items.list", kind="activity", limit=2, cursor=page["cursor"])
    assert [i["id"] for i in page["items"]] == ["it:act4"] and page["cursor"] is None
    # changing the kind moves the item between the kind indexes
    c.call("items.put", id="it:act4", kind="offer")
    assert [i["id"] for i in c.call("items.list", kind="offer")["items"]] == ["it:act4"]
    assert "it:act4" not in [i["id"] for i in c.call("items.list", kind="activity")["items"]]
    assert c.call("items.delete", id="it:act4") == {"id": "it:act4", "deleted": True}
    assert code_of(c.call, "items.get", id="it:act4") == "not_found"
    assert code_of(c.call, "items.delete", id="it:act4") == "not_found"
    assert c.call("items.list", kind="offer")["items"] == []
    ids = [i["id"] for i in c.call("items.list", limit=1000)["items"]]
    assert ids == sorted(ids) and "it:rome" in ids and "it:trip" in ids


def test_items_bad_inputs(c):
    assert code_of(c.call, "items.put", id="x", kind="hotel") == "invalid_argument"
    assert code_of(c.call, "items.put", id="x") == "invalid_argument"
    assert code_of(c.call, "items.put", id="x", kind="trip", vector=[1, float("nan")]) == "invalid_argument"
    assert code_of(c.call, "items.put", id="x", kind="trip", vector=[1, "2"]) == "invalid_argument"
    assert code_of(c.call, "items.put", id="x", kind="trip", vector=[]) == "invalid_argument"
    assert code_of(c.call, "items.put", id="x", kind="trip", vector=[1e39]) == "invalid_argument"
    assert code_of(c.call, "items.put", id="x", kind="trip", vector=[0.0] * 4097) == "invalid_argument"
    assert code_of(c.call, "items.list", kind="hotel") == "invalid_argument"
    assert code_of(c.call, "items.list", limit=0) == "invalid_argument"
    assert code_of(c.call, "items.get", id="x") == "not_found"


# ---- events.track ----

def test_track_reports_bad_events_and_keeps_good_ones(c):
    evs = [
        {"user": "t1", "name": "view", "time": T0 + 5 * DAY},
        {"user": "t1", "name": "*view"},                                    # reserved name
        {"user": 7, "name": "view"},                                        # user not a string
        {"user": "t1", "name": "view", "time": -5},                         # before 1970
        {"user": "t1", "name": "view", "properties": {"v": float("nan")}},  # NaN
        {"user": "t1", "name": "view", "colour": "red"},                    # unknown key
        {"user": "t1"},                                                      # no name
        "not a map",
        {"user": "t1", "name": "view", "properties": {"blob": "x" * 20000}},  # too big
        {"user": "t1", "name": "view", "time": T0 + 5 * DAY + 1, "item": "it:rome"},
    ]
    r = c.call("events.track", events=evs)
    assert r["accepted"] == 2 and r["duplicate"] is False
    assert [x["index"] for x in r["rejected"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(x["code"] == "invalid_argument" and x["message"] for x in r["rejected"])
    assert "NaN" in r["rejected"][3]["message"]
    evs = c.call("users.events", id="t1")["events"]
    assert [(e["name"], e["time"], e["item"]) for e in evs] == \
        [("view", T0 + 5 * DAY, None), ("view", T0 + 5 * DAY + 1, "it:rome")]


def test_track_whole_request_errors(c):
    assert code_of(c.call, "events.track", events="x") == "invalid_argument"
    assert code_of(c.call, "events.track", events=[{}] * 10001) == "invalid_argument"
    assert code_of(c.call, "events.track", events=[], extra=1) == "invalid_argument"
    assert code_of(c.call, "events.track", events=[], client_id="") == "invalid_argument"
    # the single-event form fails as a whole
    assert code_of(c.call, "events.track", user="t2", name="x", time=1.5) == "invalid_argument"
    assert code_of(c.call, "users.get", id="t2") == "not_found"
    assert code_of(c.call, "events.track") == "invalid_argument"


def test_track_single_event_and_time_order(c):
    for t in (3, 1, 2):
        assert c.call("events.track", user="ord", name="e", time=T0 + t * MIN, properties={"i": t}) == \
            {"accepted": 1, "rejected": [], "duplicate": False}
    evs = c.call("users.events", id="ord")["events"]
    assert [e["properties"]["i"] for e in evs] == [1, 2, 3]
    page = c.call("users.events", id="ord", limit=2)
    assert len(page["events"]) == 2 and page["next_from"] == T0 + 3 * MIN
    assert [e["time"] for e in c.call("users.events", id="ord", **{"from": T0 + 2 * MIN})["events"]] == \
        [T0 + 2 * MIN, T0 + 3 * MIN]
    assert c.call("users.get", id="ord")["first_seen"] == T0 + MIN
    # no time: now
    before = int(time.time() * 1000)
    c.call("events.track", user="now", name="e")
    t = c.call("users.events", id="now")["events"][0]["time"]
    assert before - 5000 <= t <= int(time.time() * 1000) + 5000


def test_track_client_id_counts_once(c):
    t = T0 + 40 * DAY
    batch = [{"user": f"r{i}", "name": "retry", "time": t + i} for i in range(5)] + [{"user": "r0"}]
    r1 = c.call("events.track", events=batch, client_id="batch-1")
    assert r1["accepted"] == 5 and len(r1["rejected"]) == 1 and r1["duplicate"] is False
    r2 = c.call("events.track", events=batch, client_id="batch-1")
    assert r2["accepted"] == 5 and r2["rejected"] == r1["rejected"] and r2["duplicate"] is True
    q = c.call("metrics.query", event="retry", **{"from": t, "to": t + DAY}, interval="day")
    assert q["total"]["count"] == 5 and q["total"]["users"] == 5
    # another client id is another batch
    assert c.call("events.track", events=batch[:1], client_id="batch-2")["accepted"] == 1
    q = c.call("metrics.query", event="retry", **{"from": t, "to": t + DAY}, interval="day")
    assert q["total"]["count"] == 6 and q["total"]["users"] == 5


def test_track_10000_event_batch(c):
    t = T0 + 50 * DAY
    evs = [{"user": f"big{i % 1000}", "name": "bulk", "time": t + (i % 60) * MIN,
            "properties": {"value": 1}} for i in range(10000)]
    r = c.call("events.track", events=evs)
    assert r["accepted"] == 10000 and r["rejected"] == []
    q = c.call("metrics.query", event="bulk", **{"from": t, "to": t + HOUR}, interval="minute")
    assert len(q["series"]) == 60
    assert sum(p["count"] for p in q["series"]) == 10000
    # event i goes to minute i % 60 and user big{i % 1000}: 50 distinct users a minute
    want = [len({i % 1000 for i in range(10000) if i % 60 == m}) for m in range(60)]
    assert [p["users"] for p in q["series"]] == want and want[0] == 50
    assert q["total"] == {"count": 10000, "users": 1000, "sum": 10000.0, "avg": 1.0}


# ---- live metrics ----

def load_metrics_set(c):
    """Bookings on day T0+60d: hour 10: ann 100 (IT, ios), ben 50 (FR, web), ann 30 (IT, web);
    hour 11: cat 20 (FR, ios) and one without a value; day +1: ben 10 (IT)."""
    d = T0 + 60 * DAY
    c.call("items.put", id="m:rome", kind="destination", attributes={"country": "IT"})
    c.call("items.put", id="m:paris", kind="destination", attributes={"country": "FR"})
    c.call("metrics.dimensions", event="mbook", dimensions=["item.country", "device", "user.tier"])
    c.call("users.put", id="ann", attributes={"tier": "gold"})
    evs = [
        {"user": "ann", "name": "mbook", "item": "m:rome", "time": d + 10 * HOUR, "properties": {"value": 100, "device": "ios"}},
        {"user": "ben", "name": "mbook", "item": "m:paris", "time": d + 10 * HOUR + 5 * MIN, "properties": {"value": 50, "device": "web"}},
        {"user": "ann", "name": "mbook", "item": "m:rome", "time": d + 10 * HOUR + 59 * MIN, "properties": {"value": 30, "device": "web"}},
        {"user": "cat", "name": "mbook", "item": "m:paris", "time": d + 11 * HOUR, "properties": {"value": 20, "device": "ios"}},
        {"user": "cat", "name": "mbook", "time": d + 11 * HOUR + 1},
        {"user": "ben", "name": "mbook", "item": "m:rome", "time": d + DAY + HOUR, "properties": {"value": 10.5}},
    ]
    assert c.call("events.track", events=evs)["accepted"] == 6
    return d


def test_metrics_exact_numbers(server, c):
    d = load_metrics_set(c)
    q = c.call("metrics.query", event="mbook", **{"from": d + 10 * HOUR, "to": d + 12 * HOUR}, interval="hour")
    assert q["series"] == [
        {"t": d + 10 * HOUR, "count": 3, "users": 2, "sum": 180.0, "avg": 60.0},
        {"t": d + 11 * HOUR, "count": 2, "users": 1, "sum": 20.0, "avg": 20.0},
    ]
    assert q["total"] == {"count": 5, "users": 3, "sum": 200.0, "avg": 50.0}
    q = c.call("metrics.query", event="mbook", **{"from": d, "to": d + 2 * DAY}, interval="day")
    assert [(p["count"], p["users"], p["sum"]) for p in q["series"]] == [(5, 3, 200.0), (1, 1, 10.5)]
    assert q["total"]["users"] == 3
    q = c.call("metrics.query", event="mbook", **{"from": d + 10 * HOUR, "to": d + 10 * HOUR + 10 * MIN},
               interval="minute")
    assert len(q["series"]) == 10
    assert [p["count"] for p in q["series"]] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    # group by an item attribute
    g = c.call("metrics.query", event="mbook", **{"from": d, "to": d + 2 * DAY}, interval="day",
               group_by="item.country")
    assert [(x["value"], x["total"]["count"], x["total"]["users"], x["total"]["sum"]) for x in g["groups"]] == \
        [("IT", 3, 2, 140.5), ("FR", 2, 2, 70.0)]
    assert [p["count"] for p in g["groups"][0]["series"]] == [2, 1]
    # group by an event property and by a user attribute
    g = c.call("metrics.query", event="mbook", **{"from": d, "to": d + DAY}, interval="day", group_by="device")
    assert [(x["value"], x["total"]["count"], x["total"]["sum"]) for x in g["groups"]] == \
        [("ios", 2, 120.0), ("web", 2, 80.0)]
    g = c.call("metrics.query", event="mbook", **{"from": d, "to": d + 2 * DAY}, interval="day", group_by="user.tier")
    assert [(x["value"], x["total"]["count"]) for x in g["groups"]] == [("gold", 2)]
    # where
    w = c.call("metrics.query", event="mbook", **{"from": d, "to": d + DAY}, interval="hour",
               where={"item.country": "FR"})
    assert w["total"] == {"count": 2, "users": 2, "sum": 70.0, "avg": 35.0}
    # any event
    a = c.call("metrics.query", event="*", **{"from": d, "to": d + DAY}, interval="day")
    assert a["total"]["count"] == 5 and a["total"]["users"] == 3


def test_metrics_bad_inputs(c):
    ok = {"event": "mbook", "from": T0, "to": T0 + DAY}
    assert code_of(c.call, "metrics.query", ok, interval="week") == "invalid_argument"
    assert code_of(c.call, "metrics.query", ok, **{"to": T0}) == "invalid_argument"
    assert code_of(c.call, "metrics.query", ok, **{"to": T0 + 30 * DAY}, interval="minute") == "invalid_argument"
    assert code_of(c.call, "metrics.query", ok, group_by="colour") == "invalid_argument"
    assert code_of(c.call, "metrics.query", ok, where={"a": 1, "b": 2}) == "invalid_argument"
    assert code_of(c.call, "metrics.query", ok, where={"device": 1.5}) == "invalid_argument"
    assert code_of(c.call, "metrics.query", {"from": T0, "to": T0 + 1}) == "invalid_argument"
    assert code_of(c.call, "metrics.dimensions", event="x", dimensions=["a"] * 9) == "invalid_argument"
    assert code_of(c.call, "metrics.dimensions", event="x", dimensions=["a", "a"]) == "invalid_argument"
    assert code_of(c.call, "metrics.dimensions", event="x", dimensions=["item."]) == "invalid_argument"
    assert code_of(c.call, "metrics.dimensions", event="x", dimensions=[3]) == "invalid_argument"
    assert code_of(c.call, "metrics.dimensions", event="*") == "invalid_argument"
    assert code_of(c.call, "metrics.active", window="year") == "invalid_argument"
    r = c.call("metrics.dimensions", event="nothing-yet")
    assert r == {"event": "nothing-yet", "dimensions": [], "value": "value"}
    r = c.call("metrics.dimensions", event="nothing-yet", value="amount")
    assert r == {"event": "nothing-yet", "dimensions": [], "value": "amount"}


def test_metrics_active(c):
    d = T0 + 100 * DAY  # today = d + 29 days
    at = d + 29 * DAY + 12 * HOUR
    evs = [{"user": "act1", "name": "ping", "time": at - HOUR},           # today
           {"user": "act2", "name": "ping", "time": at - DAY},            # yesterday
           {"user": "act3", "name": "pong", "time": d + 20 * DAY},        # 9 days ago
           {"user": "act4", "name": "ping", "time": d},                   # 29 days ago: in the month
           {"user": "act5", "name": "ping", "time": d - DAY}]             # 30 days ago: out
    assert c.call("events.track", events=evs)["accepted"] == 5
    r = c.call("metrics.active", at=at, window="week")
    assert (r["dau"], r["wau"], r["mau"], r["active"]) == (1, 2, 4, 2)
    assert r["stickiness"] == 0.25 and r["day"] == d + 29 * DAY


def test_metrics_survive_restart():
    with Server(copy_scripts=False) as s:
        c = s.client()
        d = load_metrics_set(c)
        before = c.call("metrics.query", event="mbook", **{"from": d, "to": d + 2 * DAY}, interval="hour",
                        group_by="item.country")
        idx = c.call("users.get", id="cat")["index"]
        s.restart()
        c = s.client()
        after = c.call("metrics.query", event="mbook", **{"from": d, "to": d + 2 * DAY}, interval="hour",
                       group_by="item.country")
        assert after == before
        # new events add to the persisted counters, new users continue the index
        c.call("events.track", user="dan", name="mbook", item="m:rome", time=d + 10 * HOUR,
               properties={"value": 1})
        q = c.call("metrics.query", event="mbook", **{"from": d, "to": d + DAY}, interval="day")
        assert q["total"] == {"count": 6, "users": 4, "sum": 201.0, "avg": 201.0 / 5}
        assert c.call("users.get", id="dan")["index"] == idx + 1
        assert c.call("events.track", events=[{"user": "x", "name": "y", "time": d}],
                      client_id="persisted")["duplicate"] is False
        s.restart()
        c = s.client()
        assert c.call("events.track", events=[{"user": "x", "name": "y", "time": d}],
                      client_id="persisted")["duplicate"] is True


# ---- funnels ----

def load_funnel_set(c):
    """a: search, view +1m, create_trip +5m, book +10m       -> 4 steps
    b: search, view +2m, book +3m (no create_trip)          -> 2 steps
    c: search, view 8 days later (outside the 7-day window) -> 1 step
    d: view only                                             -> not in the funnel
    e: search +1h, view +4m, create_trip +6m                 -> 3 steps"""
    t = T0 + 200 * DAY
    for u, country in (("fa", "FR"), ("fb", "FR"), ("fc", "DE"), ("fe", "DE")):
        c.call("users.put", id=u, attributes={"country": country})
    evs = [
        ("fa", "search", 0, "ios"), ("fa", "view", MIN, None), ("fa", "create_trip", 5 * MIN, None),
        ("fa", "book", 10 * MIN, None),
        ("fb", "search", 0, "web"), ("fb", "view", 2 * MIN, None), ("fb", "book", 3 * MIN, None),
        ("fc", "search", 0, "web"), ("fc", "view", 8 * DAY, None),
        ("fd", "view", 0, None),
        ("fe", "search", HOUR, "ios"), ("fe", "view", HOUR + 4 * MIN, None),
        ("fe", "create_trip", HOUR + 6 * MIN, None),
    ]
    batch = [{"user": u, "name": n, "time": t + dt, **({"properties": {"device": dev}} if dev else {})}
             for u, n, dt, dev in evs]
    assert c.call("events.track", events=batch)["accepted"] == len(batch)
    return t


def test_funnel_known_answer(c):
    t = load_funnel_set(c)
    steps = ["search", "view", "create_trip", "book"]
    r = c.call("funnel.query", steps=steps, **{"from": t, "to": t + DAY}, window_ms=7 * DAY)
    got = [(s["name"], s["users"], s["drop_off"], s["median_ms"]) for s in r["steps"]]
    assert got == [("search", 4, 0, None), ("view", 3, 1, 120000.0),
                   ("create_trip", 2, 1, 180000.0), ("book", 1, 1, 300000.0)]
    assert [s["conversion"] for s in r["steps"]] == [1.0, 0.75, 0.5, 0.25]
    assert [round(s["conversion_from_previous"], 6) for s in r["steps"]] == [1.0, 0.75, 0.666667, 0.5]
    # by user attribute: FR = a, b; DE = c, e
    r = c.call("funnel.query", steps=steps, **{"from": t, "to": t + DAY}, window_ms=7 * DAY,
               group_by="user.country")
    by = {g["value"]: [s["users"] for s in g["steps"]] for g in r["groups"]}
    assert by == {"FR": [2, 2, 1, 1], "DE": [2, 1, 1, 0]}
    # by a property of the first step: ios = a, e; web = b, c
    r = c.call("funnel.query", steps=steps, **{"from": t, "to": t + DAY}, window_ms=7 * DAY, group_by="device")
    by = {g["value"]: [s["users"] for s in g["steps"]] for g in r["groups"]}
    assert by == {"ios": [2, 2, 2, 1], "web": [2, 1, 0, 0]}
    # a window of 9 days lets c's late view count; a window of 3 minutes cuts a's and e's later steps
    r = c.call("funnel.query", steps=steps, **{"from": t, "to": t + DAY}, window_ms=9 * DAY)
    assert [s["users"] for s in r["steps"]] == [4, 4, 2, 1]
    r = c.call("funnel.query", steps=steps, **{"from": t, "to": t + DAY}, window_ms=3 * MIN)
    assert [s["users"] for s in r["steps"]] == [4, 2, 0, 0]
    # a range that starts after the first searches holds only e
    r = c.call("funnel.query", steps=steps, **{"from": t + 30 * MIN, "to": t + DAY})
    assert [s["users"] for s in r["steps"]] == [1, 1, 1, 0]


def test_funnel_bad_inputs(c):
    ok = {"steps": ["a", "b"], "from": T0, "to": T0 + DAY}
    assert code_of(c.call, "funnel.query", ok, steps=[]) == "invalid_argument"
    assert code_of(c.call, "funnel.query", ok, steps=["x"] * 17) == "invalid_argument"
    assert code_of(c.call, "funnel.query", ok, steps=["a", 3]) == "invalid_argument"
    assert code_of(c.call, "funnel.query", ok, window_ms=0) == "invalid_argument"
    assert code_of(c.call, "funnel.query", ok, **{"from": T0 + DAY}) == "invalid_argument"
    assert code_of(c.call, "funnel.query", {"steps": ["a"]}) == "invalid_argument"
    r = c.call("funnel.query", ok)
    assert [s["users"] for s in r["steps"]] == [0, 0]


# ---- retention ----

def load_retention_set(c):
    """Weeks from W = T0 + 300 days floored to a Monday.
    u1: first seen week 0, back in weeks 1 and 2 (books in week 2)
    u2: first seen week 0, back in week 2
    u3: first seen week 1, back in week 2
    u4: first seen week 1, never back"""
    w = T0 + 301 * DAY  # T0 is a Monday and 301 = 43 * 7: a Monday
    evs = [("ret1", "open", 1), ("ret1", "open", 8), ("ret1", "book", 15),
           ("ret2", "open", 2), ("ret2", "open", 16),
           ("ret3", "open", 9), ("ret3", "open", 16),
           ("ret4", "open", 10)]
    batch = [{"user": u, "name": n, "time": w + d * DAY + HOUR} for u, n, d in evs]
    assert c.call("events.track", events=batch)["accepted"] == len(batch)
    return w


def test_retention_known_answer(c):
    w = load_retention_set(c)
    r = c.call("cohort.retention", cohort_by="week", period="week", periods=3, **{"from": w, "to": w + 14 * DAY})
    assert [(x["start"], x["size"], x["returning"]) for x in r["cohorts"]] == \
        [(w, 2, [2, 1, 2]), (w + 7 * DAY, 2, [2, 1, 0])]
    assert r["cohorts"][0]["rates"] == [1.0, 0.5, 1.0]
    r = c.call("cohort.retention", cohort_by="week", period="week", periods=3, returning_event="book",
               **{"from": w, "to": w + 7 * DAY})
    assert [(x["size"], x["returning"]) for x in r["cohorts"]] == [(2, [0, 0, 1])]
    # daily periods of the week-0 cohort: u1 on day 1 and 8, u2 on day 2
    r = c.call("cohort.retention", cohort_by="week", period="day", periods=9, **{"from": w, "to": w + 7 * DAY})
    assert r["cohorts"][0]["returning"] == [0, 1, 1, 0, 0, 0, 0, 0, 1]
    # broken down by a saved cohort: u1 and u3
    c.call("users.put", id="ret1", attributes={"plan": "pro"})
    c.call("users.put", id="ret3", attributes={"plan": "pro"})
    c.call("cohort.save", name="pro", rule={"attribute": {"name": "plan", "value": "pro"}})
    r = c.call("cohort.retention", cohort_by="week", periods=3, cohort="pro", **{"from": w, "to": w + 14 * DAY})
    assert [(x["size"], x["returning"]) for x in r["cohorts"]] == [(1, [1, 1, 1]), (1, [1, 1, 0])]
    # future periods are not observed yet
    now = int(time.time() * 1000)
    r = c.call("cohort.retention", cohort_by="day", periods=3, **{"from": now - 1000, "to": now})
    assert r["cohorts"][0]["returning"][1:] == [None, None]


def test_retention_bad_inputs(c):
    assert code_of(c.call, "cohort.retention", cohort_by="year") == "invalid_argument"
    assert code_of(c.call, "cohort.retention", periods=0) == "invalid_argument"
    assert code_of(c.call, "cohort.retention", periods=121) == "invalid_argument"
    assert code_of(c.call, "cohort.retention", cohort_by="day", **{"from": T0, "to": T0 + 200 * DAY}) == \
        "invalid_argument"
    assert code_of(c.call, "cohort.retention", cohort="nope", **{"from": T0, "to": T0 + DAY}) == "not_found"


# ---- saved cohorts ----

def test_cohorts(c):
    now = int(time.time() * 1000)
    evs = [{"user": "co1", "name": "cbook", "time": now - DAY},
           {"user": "co1", "name": "cbook", "time": now - 2 * DAY},
           {"user": "co2", "name": "cbook", "time": now - 3 * DAY},
           {"user": "co3", "name": "cbook", "time": now - 40 * DAY},
           {"user": "co3", "name": "cbook", "time": now - 41 * DAY}]
    assert c.call("events.track", events=evs)["accepted"] == 5
    c.call("users.put", id="co2", attributes={"country": "ES"})
    c.call("users.put", id="co3", attributes={"country": "ES"})
    r = c.call("cohort.save", name="twice", rule={"did": {"event": "cbook", "min_count": 2, "days": 30}})
    assert r["size"] == 1
    assert c.call("cohort.users", name="twice")["users"] == ["co1"]
    assert c.call("cohort.save", name="once", rule={"did": {"event": "cbook", "days": 30}})["size"] == 2
    assert c.call("cohort.save", name="twice60", rule={"did": {"event": "cbook", "min_count": 2, "days": 60}})["size"] == 2
    assert c.call("cohort.save", name="es", rule={"attribute": {"name": "country", "value": "ES"}},
                  description="Spain")["size"] == 2
    r = c.call("cohort.save", name="es_recent", rule={"all": [{"attribute": {"name": "country", "value": "ES"}},
                                                               {"did": {"event": "cbook", "days": 30}}]})
    assert r["size"] == 1
    assert c.call("cohort.users", name="es_recent")["users"] == ["co2"]
    r = c.call("cohort.save", name="either", rule={"any": [{"attribute": {"name": "country", "value": "ES"}},
                                                            {"did": {"event": "cbook", "days": 30}}]})
    assert r["size"] == 3
    # paging by user index
    p1 = c.call("cohort.users", name="either", limit=2)
    assert p1["size"] == 3 and len(p1["users"]) == 2 and p1["cursor"] is not None
    p2 = c.call("cohort.users", name="either", limit=2, cursor=p1["cursor"])
    assert len(p2["users"]) == 1 and p2["cursor"] is None
    assert sorted(p1["users"] + p2["users"]) == ["co1", "co2", "co3"]
    # first seen
    w = T0 + 301 * DAY
    assert c.call("cohort.save", name="w0", rule={"first_seen": {"from": w, "to": w + 7 * DAY}})["size"] == 2
    # refresh sees new data; size and list
    c.call("events.track", user="co4", name="cbook", time=now - HOUR)
    assert c.call("cohort.size", name="once")["size"] == 2
    assert c.call("cohort.refresh", name="once")["size"] == 3
    assert c.call("cohort.size", name="once")["size"] == 3
    lst = {x["name"]: x for x in c.call("cohort.list")}
    assert lst["es"]["description"] == "Spain" and lst["es"]["rule"] == {"attribute": {"name": "country", "value": "ES"}}
    assert lst["once"]["size"] == 3
    assert c.call("cohort.delete", name="once") == {"name": "once", "deleted": True}
    assert code_of(c.call, "cohort.size", name="once") == "not_found"
    assert code_of(c.call, "cohort.users", name="once") == "not_found"
    assert code_of(c.call, "cohort.refresh", name="once") == "not_found"


def test_cohort_bad_rules(c):
    for rule in ({}, {"x": {}}, {"did": {"event": "a", "min_count": 0}}, {"did": {}},
                 {"first_seen": {"from": 5, "to": 5}}, {"attribute": {"name": "a"}},
                 {"attribute": {"name": "a", "value": [1]}}, {"all": []},
                 {"all": [{"all": [{"all": [{"all": [{"all": [{"all": [{"did": {"event": "a"}}]}]}]}]}]}]},
                 {"did": {"event": "a"}, "attribute": {"name": "a", "value": 1}}):
        assert code_of(c.call, "cohort.save", name="bad", rule=rule) == "invalid_argument", rule
    assert code_of(c.call, "cohort.save", name="", rule={"did": {"event": "a"}}) == "invalid_argument"
    assert code_of(c.call, "cohort.users", name="x", limit=0) == "invalid_argument"
    assert code_of(c.call, "cohort.size", name="bad") == "not_found"
