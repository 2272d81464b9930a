"""Demo data, dashboards and exports end to end: demo.load through the ingest
path, the shipped dashboards rendered against it, the live view after new
events, hot reload of a dashboard script, exports in every format parsed back
(csv, json, ndjson, msgpack, xlsx read from its sheet XML), a streamed export
with acknowledgements, a large events export to a file in bounded memory, and
bad inputs."""
import csv
import io
import json
import os
import re
import threading
import time
import zipfile

import msgpack
import pytest

from sxtest import RpcError, Server, sanitized, wait_until

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
END = 1_718_409_600_000  # 2024-06-15T00:00:00Z
FROM7 = END - 7 * DAY
FORMATS = ("csv", "json", "ndjson", "msgpack", "xlsx")


def code_of(fn, *a, **kw):
    with pytest.raises(RpcError) as e:
        fn(*a, **kw)
    return e.value.code


@pytest.fixture(scope="module")
def server():
    with Server(copy_scripts=True, config={"watch_scripts": True}) as s:
        with s.client(timeout=120) as c:
            r = c.call("demo.load", users=800, days=42, seed=3, end=END)
            assert r["users"] == 800 and r["from"] == END - 42 * DAY and r["to"] == END
            s.demo = r
        yield s


@pytest.fixture
def c(server):
    with server.client(timeout=120) as cl:
        yield cl


def list_items(c, kind):
    out, cursor = [], None
    while True:
        r = c.call("items.list", kind=kind, limit=1000, **({"cursor": cursor} if cursor else {}))
        out += r["items"]
        cursor = r.get("cursor")
        if not cursor:
            return out


def total(c, event, frm, to, **kw):
    return c.call("metrics.query", event=event, **{"from": frm, "to": to}, interval="hour", **kw)["total"]


# ---- demo data ----

def test_demo_metrics_plausible(server, c):
    frm = END - 42 * DAY
    t = {e: total(c, e, frm, END) for e in ("signup", "search", "view", "create_trip", "book", "*")}
    assert t["*"]["count"] == server.demo["events"]
    assert t["*"]["count"] == sum(t[e]["count"] for e in ("signup", "search", "view", "create_trip", "book"))
    assert 0 < t["signup"]["users"] <= 800
    # a funnel's shape: many searches and views, fewer trips, fewer bookings
    assert t["search"]["count"] > 5 * t["create_trip"]["count"] > 0
    assert t["view"]["count"] > t["search"]["count"] / 2
    assert 0 < t["book"]["count"] < t["create_trip"]["count"]
    assert 0.15 < t["book"]["count"] / t["create_trip"]["count"] < 0.7
    assert 300 < t["book"]["avg"] < 5000  # EUR per booking
    assert t["book"]["sum"] == pytest.approx(t["book"]["avg"] * t["book"]["count"])
    a = c.call("metrics.active", at=END - 1)
    assert 0 < a["dau"] <= a["wau"] <= a["mau"] <= 800
    # weekends are busier than weekdays (weekly cycle), over six weeks
    s = c.call("metrics.query", event="search", **{"from": frm, "to": END}, interval="day")["series"]
    wd = [p["count"] for p in s if time.gmtime(p["t"] / 1000).tm_wday < 5]
    we = [p["count"] for p in s if time.gmtime(p["t"] / 1000).tm_wday >= 5]
    assert sum(we) / len(we) > sum(wd) / len(wd)
    # popularity is skewed: the top destination has several times the median's bookings
    g = c.call("metrics.query", event="view", **{"from": frm, "to": END}, interval="day",
               group_by="item.name", limit=100)["groups"]
    counts = sorted((x["total"]["count"] for x in g), reverse=True)
    assert len(counts) >= 30 and counts[0] > 4 * counts[len(counts) // 2]
    # items and users carry attributes and vectors
    d = c.call("items.get", id="dest:lisbon")
    assert d["kind"] == "destination" and d["attributes"]["country"] == "PT" and len(d["vector"]) == 16
    items = {k: list_items(c, k) for k in ("destination", "activity", "offer", "trip")}
    assert {k: len(v) for k, v in items.items()} == {"destination": 303, "activity": 2127, "offer": 151, "trip": 202}
    dests = {x["id"]: x["attributes"] for x in items["destination"]}
    assert len({a["region"] for a in dests.values()}) >= 15 and len({a["country"] for a in dests.values()}) >= 80
    assert all(2 <= len(a["tags"]) <= 4 and 40 <= a["price"] <= 500 for a in dests.values())
    # each destination has 5-9 activities of kinds that fit its tags; trips stay in one region
    per = {}
    for x in items["activity"]:
        a = x["attributes"]
        per.setdefault(a["destination"], []).append(a)
        assert a["tags"] and set(a["tags"]) <= set(dests[a["destination"]]["tags"]), x
    assert set(per) == set(dests) and all(5 <= len(v) <= 9 for v in per.values())
    assert len({a["kind"] for v in per.values() for a in v}) >= 25
    assert "ski pass" in {a["kind"] for a in per["dest:zermatt"]} and "ski pass" not in {a["kind"] for a in per["dest:lisbon"]}
    assert all(dests[x["attributes"]["destinations"][0]]["region"] == dests[x["attributes"]["destinations"][1]]["region"]
               for x in items["trip"])
    u = c.call("users.get", id="u0000001")
    assert set(u["attributes"]) == {"country", "device", "interest", "interests", "budget"}
    assert u["signup_time"] is not None
    a = u["attributes"]
    assert 1 <= len(a["interests"]) <= 3 and a["interest"] == a["interests"][0] and 20 < a["budget"] < 1000


def test_demo_travellers_have_personal_taste():
    """Each user's taste (home, budget, interests) shapes their sessions: searches
    carry the searched tag and region and the views follow them; Japanese users
    look at Asia, Germans at Europe."""
    with Server(copy_scripts=False) as s, s.client(timeout=120) as c:
        c.call("demo.load", users=600, days=30, seed=7, end=END)
        evs = json.loads(c.call("export", what="events", **{"from": END - 30 * DAY, "to": END}, format="json")["data"])
        users = {}
        for e in evs:
            if e["user"] not in users:
                users[e["user"]] = c.call("users.get", id=e["user"])["attributes"]
        dests = {d["id"]: d["attributes"] for d in list_items(c, "destination")}
    searches = [e for e in evs if e["name"] == "search"]
    with_region = [e for e in searches if "region" in e["properties"]]
    assert 0.2 < len(with_region) / len(searches) < 0.5
    assert {e["properties"]["region"] for e in with_region} <= {d["region"] for d in dests.values()}
    # the views after a search stay mostly on its tag, and on its region when it has one
    on_tag = on_region = n_tag = n_region = 0
    focus = {}
    for e in sorted(evs, key=lambda e: (e["user"], e["time"])):
        if e["name"] == "search":
            focus[e["user"]] = e["properties"]
        elif e["name"] == "view" and e["item"] in dests and e["user"] in focus:
            f, d = focus[e["user"]], dests[e["item"]]
            n_tag += 1
            on_tag += f["query"] in d["tags"]
            if "region" in f:
                n_region += 1
                on_region += f["region"] == d["region"]
    assert on_tag / n_tag > 0.6 and on_region / n_region > 0.6, (on_tag / n_tag, on_region / n_region)
    # home matters: the share of views in Asia by home country
    asia = {}
    for e in evs:
        if e["name"] == "view" and e["item"] in dests:
            k = users[e["user"]]["country"]
            a = asia.setdefault(k, [0, 0])
            a[0] += dests[e["item"]]["region"] in ("East Asia", "Southeast Asia", "South Asia")
            a[1] += 1
    assert asia["JP"][0] / asia["JP"][1] > max(0.3, 10 * asia["DE"][0] / asia["DE"][1]), asia
    # a user's interests show in the tags of what they view (lift over everyone's views)
    lift = []
    for tag in ("beach", "ski", "culture"):
        fans = [e for e in evs if e["name"] == "view" and e["item"] in dests and tag in users[e["user"]]["interests"]]
        every = [e for e in evs if e["name"] == "view" and e["item"] in dests]
        share = lambda xs: sum(tag in dests[e["item"]]["tags"] for e in xs) / len(xs)  # noqa: E731
        lift.append(share(fans) / share(every))
    assert min(lift) > 1.3, lift


def test_demo_seeded_and_bad_inputs(c):
    with Server(copy_scripts=False) as a, Server(copy_scripts=False) as b:
        ra = a.client().call("demo.load", users=60, days=10, seed=11, end=END)
        rb = b.client().call("demo.load", users=60, days=10, seed=11, end=END)
        assert ra["events"] == rb["events"] > 0
        ea = a.client().call("export", what="events", **{"from": END - 10 * DAY, "to": END}, format="csv")
        eb = b.client().call("export", what="events", **{"from": END - 10 * DAY, "to": END}, format="csv")
        assert ea["data"] == eb["data"] and ea["rows"] == ra["events"]
        # a second load while one runs
        ca = a.client(timeout=60)
        r = ca.pipeline([("demo.load", {"users": 3000, "days": 30, "seed": 1, "end": END}),
                         ("demo.load", {"users": 10, "days": 1})])
        assert isinstance(r[1], RpcError) and r[1].code == "failed_precondition"
        assert r[0]["users"] == 3000
    for bad in ({"users": 0}, {"users": 10**8}, {"days": 0}, {"days": 5000}, {"seed": -1},
                {"end": 5}, {"users": "many"}, {"colour": 1}):
        assert code_of(c.call, "demo.load", **bad) == "invalid_argument", bad


# ---- dashboards ----

def panels(r):
    return {p["id"]: p for p in r["panels"]}


def test_list(c):
    ds = {d["name"]: d for d in c.call("dashboard.list")}
    assert {"overview", "retention"} <= set(ds)
    o = ds["overview"]
    assert o["title"] == "Overview" and o["variables"] == {"days": 7, "to": False}
    assert [p["id"] for p in o["panels"]][:3] == ["active_users", "events_per_minute", "funnel"]
    assert {p["kind"] for p in o["panels"]} >= {"number", "timeseries", "funnel", "table", "forecast"}


def test_render_overview(c):
    before = int(time.time() * 1000)
    r = c.call("dashboard.render", name="overview", vars={"to": END})
    assert r["name"] == "overview" and r["title"] == "Overview" and r["rendered_at"] >= before
    assert r["vars"] == {"days": 7, "to": END}
    p = panels(r)
    assert all(x["error"] is None for x in r["panels"]), [x["error"] for x in r["panels"]]
    book = total(c, "book", FROM7, END)
    prev = total(c, "book", FROM7 - 7 * DAY, FROM7)
    b = p["bookings"]["data"]
    assert b["value"] == book["count"] and b["previous"] == prev["count"]
    assert b["change"] == book["count"] - prev["count"]
    if prev["count"]:
        assert b["change_ratio"] == pytest.approx((book["count"] - prev["count"]) / prev["count"])
    assert p["revenue"]["data"]["value"] == pytest.approx(book["sum"])
    a = c.call("metrics.active", at=END - 1)
    assert p["active_users"]["data"]["value"] == a["dau"] and p["active_users"]["data"]["mau"] == a["mau"]
    f = c.call("funnel.query", steps=["search", "view", "create_trip", "book"], **{"from": FROM7, "to": END},
               window_ms=DAY)
    # through Lua: nil fields vanish and 1.0 reads back as 1
    assert [{k: v for k, v in s.items() if v is not None} for s in f["steps"]] == p["funnel"]["data"]["steps"]
    assert len(p["events_per_minute"]["data"]["points"]) == 60
    top = p["top_destinations"]["data"]["rows"]
    assert 0 < len(top) <= 10 and sum(x["bookings"] for x in top) <= book["count"]
    assert top == sorted(top, key=lambda x: -x["bookings"])
    fc = p["bookings_forecast"]["data"]
    assert len(fc["forecast"]) == 7 and all(x["lo"] <= x["mean"] <= x["hi"] for x in fc["forecast"])
    # the days variable changes the period
    r3 = c.call("dashboard.render", name="overview", vars={"to": END, "days": 3})
    assert panels(r3)["bookings"]["data"]["value"] == total(c, "book", END - 3 * DAY, END)["count"]


def test_render_retention(c):
    r = c.call("dashboard.render", name="retention", vars={"to": END, "weeks": 4})
    p = panels(r)
    assert all(x["error"] is None for x in r["panels"]), [x["error"] for x in r["panels"]]
    w = p["weekly"]["data"]
    ref = c.call("cohort.retention", cohort_by="week", periods=4, **{"from": END - 4 * 7 * DAY, "to": END})
    assert w["cohorts"] == ref["cohorts"] and len(w["cohorts"]) >= 4
    assert all(co["rates"][0] == 1 for co in w["cohorts"] if co["size"])
    assert 0 < p["week1"]["data"]["value"] < 1
    assert [x["value"] for x in p["new_users"]["data"]["points"]] == [co["size"] for co in ref["cohorts"]]


def test_render_bad_inputs(c):
    assert code_of(c.call, "dashboard.render", name="nope") == "not_found"
    assert code_of(c.call, "dashboard.render", name="Bad Name") == "invalid_argument"
    assert code_of(c.call, "dashboard.render", name="x" * 80) == "invalid_argument"
    assert code_of(c.call, "dashboard.render") == "invalid_argument"
    assert code_of(c.call, "dashboard.render", name="overview", vars={"colour": 1}) == "invalid_argument"
    assert code_of(c.call, "dashboard.render", name="overview", vars={"days": "seven"}) == "invalid_argument"
    assert code_of(c.call, "dashboard.render", name="overview", vars=[1]) == "invalid_argument"
    assert code_of(c.call, "dashboard.render", name="overview", extra=1) == "invalid_argument"
    assert code_of(c.call, "dashboard.subscribe", name="nope") == "not_found"
    assert code_of(c.call, "dashboard.subscribe", name="overview", refresh_ms=5) == "invalid_argument"
    assert code_of(c.call, "dashboard.unsubscribe", name="overview") == "not_found"


def test_subscribe_sees_new_events(server, c):
    to = END + DAY
    r = c.call("dashboard.subscribe", name="overview", vars={"to": to}, refresh_ms=200)
    assert r["topic"] == "dashboard.overview" and r["refresh_ms"] == 200
    first = panels(r["render"])
    n0 = first["bookings"]["data"]["value"]
    with server.client() as w:
        w.call("events.track", events=[
            {"user": "live-1", "name": "book", "item": "dest:rome", "time": END + HOUR, "properties": {"value": 1000}},
            {"user": "live-2", "name": "book", "item": "dest:rome", "time": END + HOUR, "properties": {"value": 500}},
        ])
    deadline = time.monotonic() + 20
    changed = {}
    while "bookings" not in changed:
        topic, params = c.notification("dashboard.overview", timeout=max(0.1, deadline - time.monotonic()))
        note = params[0]
        assert note["name"] == "overview" and note["vars"] == {"days": 7, "to": to}
        assert note["changed"] == len(note["panels"]) > 0
        changed.update(panels(note))
    assert changed["bookings"]["data"]["value"] == n0 + 2
    assert changed["revenue"]["data"]["value"] == pytest.approx(first["revenue"]["data"]["value"] + 1500)
    assert "funnel" not in changed  # nobody new searched
    # a second subscriber of the same view joins the same group and gets the current render
    with server.client() as c2:
        r2 = c2.call("dashboard.subscribe", name="overview", vars={"to": to}, refresh_ms=200)
        assert panels(r2["render"])["bookings"]["data"]["value"] == n0 + 2
    assert c.call("dashboard.unsubscribe", name="overview") == {"name": "overview", "removed": 1}
    assert code_of(c.call, "dashboard.unsubscribe", name="overview") == "not_found"
    time.sleep(0.5)
    c.notifications()
    time.sleep(0.5)
    assert not [m for m in c.notifications() if m[1] == "dashboard.overview"]


HOT = """return {
  title = "%s", refresh_ms = 1000, variables = { n = 1 },
  panels = {
    { id = "a", kind = "number", query = function(ctx, vars) return vars.n * %d end },
    { id = "boom", kind = "table", query = function(ctx, vars) error("no data") end },
  },
}"""


def test_hot_reload(server, c):
    server.write_script("dashboards/hot.lua", HOT % ("One", 1))
    wait_until(lambda: any(d["name"] == "hot" for d in c.call("dashboard.list")), 10)
    r = c.call("dashboard.render", name="hot", vars={"n": 5})
    p = panels(r)
    assert r["title"] == "One" and p["a"]["data"] == {"value": 5}
    assert p["boom"]["data"] is None and "no data" in p["boom"]["error"]
    server.write_script("dashboards/hot.lua", HOT % ("Two", 10))
    wait_until(lambda: c.call("dashboard.render", name="hot")["title"] == "Two", 10)
    assert panels(c.call("dashboard.render", name="hot", vars={"n": 2}))["a"]["data"] == {"value": 20}
    # a broken version does not replace the serving one
    c.call("subscribe", topic="script.events")
    server.write_script("dashboards/hot.lua", "return { title = 'Three', panels = {} }")
    while True:
        ev = c.notification("script.events", timeout=10)[1][0]
        if ev["name"] == "hot" and ev["event"] == "failed":
            break
    assert "panels" in ev["error"]
    assert c.call("dashboard.render", name="hot")["title"] == "Two"
    for src in ("return 1", "return { title = 1, panels = {} }",
                "return { title = 't', panels = { { id = 'x', kind = 'pie', query = function() end } } }",
                "return { title = 't', panels = { { id = 'x', kind = 'number' } } }",
                "return { title = 't', refresh_ms = 1, panels = { { id = 'x', kind = 'number', query = print } } }",
                "return { title = 't', panels = { { id = 'x', kind = 'number', query = print },"
                " { id = 'x', kind = 'table', query = print } } }"):
        assert code_of(c.call, "script.put", kind="dashboards", name="bad", source=src) == "script_error", src


# ---- exports ----

def parse(fmt, data):
    """Rows as lists of dicts (all values as the format gives them)."""
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data, newline="")))
    if fmt == "json":
        return json.loads(data)
    if fmt == "ndjson":
        return [json.loads(line) for line in data.splitlines()]
    if fmt == "msgpack":
        return list(msgpack.Unpacker(io.BytesIO(data), raw=False))
    if fmt == "xlsx":
        return xlsx_rows(data)
    raise ValueError(fmt)


def xlsx_rows(data):
    z = zipfile.ZipFile(io.BytesIO(data))
    xml = z.read("xl/worksheets/sheet1.xml").decode()
    rows = []
    for row in re.findall(r"<row [^>]*>(.*?)</row>", xml, re.S):
        cells = {}
        for ref, attrs, body in re.findall(r'<c r="([A-Z]+)\d+"([^>]*)>(.*?)</c>', row, re.S):
            if 't="inlineStr"' in attrs:
                v = re.search(r"<t[^>]*>(.*?)</t>", body, re.S).group(1)
                v = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), v)  # OOXML escapes
                v = v.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
            elif 't="b"' in attrs:
                v = re.search(r"<v>(.*?)</v>", body).group(1) == "1"
            else:
                v = float(re.search(r"<v>(.*?)</v>", body).group(1))
            cells[ref] = v
        rows.append(cells)
    header = rows[0]
    cols = sorted(header, key=lambda r: (len(r), r))
    return [{header[k]: r.get(k) for k in cols} for r in rows[1:]]


def num(v):
    return None if v in ("", None) else float(v)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_metrics_every_format(c, fmt):
    q = c.call("metrics.query", event="book", **{"from": FROM7, "to": END}, interval="day")
    e = c.call("export", what="metrics", event="book", **{"from": FROM7, "to": END}, interval="day", format=fmt)
    assert e["what"] == "metrics" and e["format"] == fmt and e["rows"] == 7 and e["bytes"] == len(e["data"])
    assert isinstance(e["data"], str if fmt in ("csv", "json", "ndjson") else bytes)
    rows = parse(fmt, e["data"])
    assert len(rows) == 7
    for row, p in zip(rows, q["series"]):
        assert num(row["t"]) == p["t"] and num(row["count"]) == p["count"] and num(row["users"]) == p["users"]
        assert num(row["sum"]) == pytest.approx(p["sum"])
        assert (num(row["avg"]) is None) == (p["avg"] is None)
        assert row["time"].endswith("T00:00:00.000Z")


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_tables_every_format(c, fmt):
    ret = c.call("cohort.retention", cohort_by="week", periods=3, **{"from": END - 21 * DAY, "to": END})
    rows = parse(fmt, c.call("export", what="retention", cohort_by="week", periods=3,
                             **{"from": END - 21 * DAY, "to": END}, format=fmt)["data"])
    assert len(rows) == 3 * len(ret["cohorts"])
    assert [num(r["returning"]) for r in rows[:3]] == ret["cohorts"][0]["returning"]
    steps = ["search", "view", "create_trip", "book"]
    f = c.call("funnel.query", steps=steps, **{"from": FROM7, "to": END})
    rows = parse(fmt, c.call("export", what="funnel", steps=steps, **{"from": FROM7, "to": END}, format=fmt)["data"])
    assert [r["name"] for r in rows] == steps and [num(r["users"]) for r in rows] == [s["users"] for s in f["steps"]]
    c.call("cohort.save", name="de", rule={"attribute": {"name": "country", "value": "DE"}})
    size = c.call("cohort.size", name="de")["size"]
    rows = parse(fmt, c.call("export", what="cohort", name="de", format=fmt)["data"])
    assert len(rows) == size > 0 and all(r["user"].startswith("u") for r in rows)
    rows = parse(fmt, c.call("export", what="dashboard", name="overview", vars={"to": END}, format=fmt)["data"])
    by = {(r["panel"], r["path"]): r["value"] for r in rows}
    assert num(by[("bookings", "value")]) == total(c, "book", FROM7, END)["count"]
    assert by[("top_destinations", "columns[1]")] == "destination"
    ev = c.call("export", what="events", **{"from": END - HOUR * 6, "to": END}, format=fmt)
    rows = parse(fmt, ev["data"])
    assert len(rows) == ev["rows"] == total(c, "*", END - 6 * HOUR, END)["count"] > 0
    assert all(END - 6 * HOUR <= num(r["time"]) < END for r in rows)
    props = rows[0]["properties"]
    assert "device" in (json.loads(props) if isinstance(props, str) else props)


def test_export_quoting_roundtrip(server, c):
    tricky = 'say "hi", then\r\nleave; caf\u00e9 <b>&</b>'
    with server.client() as w:
        w.call("events.track", user="q,uo\"te", name="note", time=END - 10 * DAY, item=tricky,
               properties={"text": tricky})
    for fmt in FORMATS:
        rows = parse(fmt, c.call("export", what="events", name="note", format=fmt,
                                 **{"from": END - 10 * DAY, "to": END - 10 * DAY + 1})["data"])
        assert len(rows) == 1, fmt
        assert rows[0]["user"] == 'q,uo"te' and rows[0]["item"] == tricky, fmt
        p = rows[0]["properties"]
        assert (json.loads(p) if isinstance(p, str) else p) == {"text": tricky}, fmt


def test_export_stream_with_acks(c):
    args = {"from": END - 3 * DAY, "to": END}
    whole = c.call("export", what="events", format="ndjson", **args)
    r = c.call("export", what="events", format="ndjson", stream=True, chunk_bytes=4096, **args)
    assert r["topic"] == f"export.{r['id']}" and r["window"] >= 1
    parts, seqs = [], []
    while True:
        _, params = c.notification(r["topic"], timeout=20)
        n = params[0]
        assert "error" not in n, n
        parts.append(n["data"])
        seqs.append(n["seq"])
        if n["last"]:  # the stream is over: nothing to acknowledge
            break
        c.call("export.ack", id=r["id"], seq=n["seq"])
    assert seqs == list(range(len(seqs))) and len(seqs) > 5
    assert all(p.endswith("\n") for p in parts if p)
    assert "".join(parts) == whole["data"] and n["rows"] == whole["rows"]
    # without acks the server stops after the window, and cancel ends it
    r = c.call("export", what="events", format="csv", stream=True, chunk_bytes=1024, **args)
    got = []
    while len(got) < r["window"]:
        got.append(c.notification(r["topic"], timeout=20)[1][0])
    time.sleep(0.5)
    assert not [m for m in c.notifications() if m[1] == r["topic"]]
    assert c.call("export.cancel", id=r["id"])["cancelled"] is True
    assert c.notification(r["topic"], timeout=5)[1][0]["error"]["code"] == "cancelled"
    assert c.call("export.ack", id=r["id"], seq=0) == {"id": r["id"], "ended": True}
    assert code_of(c.call, "export.cancel", id=r["id"]) == "not_found"
    # a small table streams too
    r = c.call("export", what="metrics", event="book", **{"from": FROM7, "to": END}, interval="day", format="json", stream=True,
               chunk_bytes=1024)
    parts = []
    while True:
        n = c.notification(r["topic"], timeout=20)[1][0]
        parts.append(n["data"])
        if n["last"]:
            break
        c.call("export.ack", id=r["id"], seq=n["seq"])
    assert len(json.loads("".join(parts))) == 7


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(key)


def test_large_events_export_to_file_bounded_memory(server, c, tmp_path):
    frm = END - 60 * DAY
    n = c.call("demo.load", users=5000, days=60, seed=5, end=END)["events"]
    expected = total(c, "*", frm, END)["count"]
    assert expected >= n > 80_000
    path = str(tmp_path / "events.ndjson")
    # anonymous memory only: LMDB's map makes the pages of the data file read count in RSS
    anon0 = status_kb(server.pid, "RssAnon")
    peak = [anon0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kb(server.pid, "RssAnon"))
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    try:
        e = c.call("export", what="events", **{"from": frm, "to": END}, format="ndjson", path=path, _timeout=300)
    finally:
        done.set()
        th.join()
    assert e["path"] == path and e["rows"] == expected and e["bytes"] == os.path.getsize(path)
    assert e["bytes"] > 15 << 20
    grew = (peak[0] - anon0) * 1024
    # the file is far larger than what the server's heap grew by while writing it
    # (ASan's quarantine keeps up to 16 MiB of freed blocks: a looser bound there)
    assert grew < (40 << 20 if sanitized() else e["bytes"] / 4), (grew, e["bytes"])
    lines = 0
    last = 0
    with open(path) as f:
        for line in f:
            t = json.loads(line)["time"]
            assert t >= last
            last = t
            lines += 1
    assert lines == expected
    # xlsx of the same range goes to disk through libxlsxwriter's constant-memory mode
    xp = str(tmp_path / "events.xlsx")
    e = c.call("export", what="events", **{"from": END - 2 * DAY, "to": END}, format="xlsx", path=xp)
    assert zipfile.ZipFile(xp).read("xl/worksheets/sheet1.xml").count(b"<row ") == e["rows"] + 1
    assert code_of(c.call, "export", what="events", **{"from": frm, "to": END}, format="csv", path=path) \
        == "already_exists"
    assert not os.path.exists(path + ".part")
    # too large inline
    assert code_of(c.call, "export", what="events", **{"from": frm, "to": END}, format="ndjson") == "too_large"


def test_export_bad_inputs(c, tmp_path):
    rng = {"from": FROM7, "to": END}
    cases = [
        ({}, "invalid_argument"),
        ({"what": "everything"}, "invalid_argument"),
        ({"what": "metrics", "event": "book", **rng, "format": "pdf"}, "invalid_argument"),
        ({"what": "metrics", "event": "book", **rng, "colour": 1}, "invalid_argument"),
        ({"what": "metrics", "event": "book", "from": END, "to": FROM7}, "invalid_argument"),
        ({"what": "events", "to": END}, "invalid_argument"),
        ({"what": "events", **rng, "user": "nobody"}, "not_found"),
        ({"what": "cohort", "name": "missing"}, "not_found"),
        ({"what": "dashboard", "name": "missing"}, "not_found"),
        ({"what": "events", **rng, "format": "xlsx", "stream": True}, "invalid_argument"),
        ({"what": "events", **rng, "stream": True, "path": str(tmp_path / "x")}, "invalid_argument"),
        ({"what": "events", **rng, "stream": True, "chunk_bytes": 10}, "invalid_argument"),
        ({"what": "events", **rng, "path": "relative/file.csv"}, "invalid_argument"),
        ({"what": "events", **rng, "path": "/nonexistent-dir/x.csv"}, "invalid_argument"),
        ({"what": "events", **rng, "stream": "yes"}, "invalid_argument"),
    ]
    for args, code in cases:
        assert code_of(c.call, "export", **args) == code, args
    assert code_of(c.call, "export.ack", id=999, seq=0) == "not_found"
    assert code_of(c.call, "export.cancel", id=999) == "not_found"
    assert code_of(c.call, "export.ack", id="x", seq=0) == "invalid_argument"


def test_demo_flag_loads_into_an_empty_store():
    with Server(copy_scripts=False, args=["--demo", "true"]) as s:
        c = s.client(timeout=60)
        wait_until(lambda: "demo: 2000 users" in s.stderr_text(), 60)
        now = int(time.time() * 1000)
        assert c.call("users.get", id="u0001999")["index"] == 1999
        assert total(c, "book", now - 60 * DAY, now + DAY)["count"] > 100
        s.stop()
        s.start()  # the store has users now: no second load
        time.sleep(0.5)
        assert "demo:" not in s.stderr_text()  # this run's log
        assert c.__class__(s.port).call("users.get", id="u0001999")["index"] == 1999
