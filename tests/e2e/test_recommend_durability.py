"""Popularity, trending and co-visitation survive kill -9: each events.track
call journals the count updates it made in its own store batch, and a start
replays the journal after the last snapshot. Checked against the answers the
server gave before it was killed (recommend.trending for popularity,
recommend.similar for co-visitation: the items have no content vector and no
model is trained, so similar items come from co-visitation only)."""
import random
import time

import pytest

from sxtest import Server

ITEMS = 30


def load_items(c):
    for i in range(ITEMS):
        c.call("items.put", id=f"it{i}", kind="destination",
               attributes={"name": f"Item {i}", "region": ("spain", "france")[i % 2]})


def track(c, rnd, users, per_user, now):
    """Each user views a few items close in time; returns the events sent."""
    evs = []
    for u in users:
        base = rnd.randrange(ITEMS)
        for j in range(per_user):
            evs.append({"user": f"u{u}", "name": rnd.choice(("view", "view", "click")),
                        "item": f"it{(base + rnd.randrange(4)) % ITEMS}", "time": now - 3_600_000 + j * 1000})
    r = c.call("events.track", events=evs)
    assert r["accepted"] == len(evs)
    return evs


def snapshot(c):
    trending = {w: c.call("recommend.trending", window=w, n=ITEMS) for w in ("day", "week", "month")}
    trending["spain"] = c.call("recommend.trending", region="spain", n=ITEMS)
    assert trending["spain"] and {r["region"] for r in trending["spain"]} == {"spain"}
    similar = {f"it{i}": c.call("recommend.similar", item=f"it{i}", n=20) for i in range(ITEMS)}
    return trending, similar


def assert_same(before, after):
    tb, sb = before
    ta, sa = after
    for w in tb:
        # all items with any weight (n = ITEMS): the same items, the same
        # decayed weights (near-ties may swap as the clock moves on)
        got = {r["item"]: r["score"] for r in ta[w]}
        assert set(got) == {r["item"] for r in tb[w]}, w
        for r in tb[w]:
            assert got[r["item"]] == pytest.approx(r["score"], rel=1e-3), (w, r)
    for item in sb:
        assert {r["item"] for r in sa[item]} == {r["item"] for r in sb[item]}, item
        got = {r["item"]: r["score"] for r in sa[item]}
        for r in sb[item]:
            assert got[r["item"]] == pytest.approx(r["score"], rel=1e-3), (item, r)


def test_counts_survive_kill9_snapshot_and_journal():
    rnd = random.Random(17)
    now = int(time.time() * 1000)
    with Server() as s:
        with s.client(timeout=60) as c:
            load_items(c)
            # many small calls: many journal records
            for batch in range(10):
                track(c, rnd, range(batch * 5, batch * 5 + 5), 4, now)
            before = snapshot(c)
            assert any(before[1][k] for k in before[1]), "co-visitation should have neighbours"
            assert before[0]["day"] and before[0]["day"][0]["score"] > 0
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            after = snapshot(c)
            assert_same(before, after)
            # a clean stop writes a snapshot (and drops the journal it covers);
            # then more events, and a kill: snapshot + journal tail
            s.restart()
        with s.client(timeout=60) as c:
            assert_same(before, snapshot(c))
            for batch in range(5):
                track(c, rnd, range(100 + batch * 5, 105 + batch * 5), 3, now)
            before2 = snapshot(c)
            assert before2[0]["month"] != before[0]["month"]
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert_same(before2, snapshot(c))
            # the journal goes on after a replay: one more call, one more kill
            track(c, rnd, range(200, 210), 3, now)
            before3 = snapshot(c)
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert_same(before3, snapshot(c))


def test_first_pair_survives_kill9():
    """Two single-event calls: the second one's co-visitation is journaled."""
    with Server() as s:
        with s.client(timeout=60) as c:
            load_items(c)
            c.call("events.track", user="journal-person@example.com", name="view", item="it1")
            c.call("events.track", user="journal-person@example.com", name="view", item="it2")
            assert c.call("recommend.similar", item="it1", n=5)[0]["item"] == "it2"
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert c.call("recommend.similar", item="it1", n=5)[0]["item"] == "it2"


def test_journal_turns_into_a_snapshot_when_it_grows():
    """Over 4 MiB of journal (about 250,000 count operations): a snapshot is
    written in that call's batch and the journal it covers dropped; a kill
    after it still restores everything (snapshot + the journal since)."""
    rnd = random.Random(5)
    now = int(time.time() * 1000)
    with Server({"durability": "relaxed"}) as s:
        with s.client(timeout=120) as c:
            load_items(c)
            info0 = c.call("recommend.info")["counts"]
            assert info0["snapshot_bytes"] == 0 and info0["journal_records"] == 0
            u = 0
            for _ in range(8):
                # 10 views each within minutes: 1 popularity + up to 9 pair operations per event
                evs = []
                for _ in range(900):
                    for j in range(10):
                        evs.append({"user": f"w{u}", "name": "view", "item": f"it{rnd.randrange(ITEMS)}",
                                    "time": now - 7_200_000 + j * 60_000})
                    u += 1
                c.call("events.track", events=evs)
                info = c.call("recommend.info")["counts"]
                if info["snapshot_bytes"]:
                    break
            assert info["snapshot_bytes"] > 0, info
            assert info["journal_bytes"] < 4 << 20
            track(c, rnd, range(5), 3, now)
            info = c.call("recommend.info")["counts"]
            assert info["journal_records"] == 1, info
            before = snapshot(c)
        s.kill9()
        s.start()
        with s.client(timeout=60) as c:
            assert c.call("recommend.info")["counts"]["journal_records"] == 1
            assert_same(before, snapshot(c))
