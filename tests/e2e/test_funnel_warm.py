"""The funnel hour blocks' warm-up (config funnel_warm_days): after a restart the blocks of
the latest days are built on the pool without a query, a funnel.query over them builds
nothing and answers as before the restart; 0 turns it off; server.info shows it."""
import os
import subprocess
import time

from sxtest import Server

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
STEPS = ["search", "view", "create_trip", "book"]


def events():
    """200 users, sessions every 7 hours over 5 days; the latest event in the last hour of day 5."""
    out = []
    for u in range(200):
        for s in range(u % 5, 120, 7):
            t = T0 + s * HOUR + (u * 7919) % (40 * 60_000)
            for k, name in enumerate(STEPS[:1 + (u + s) % 4]):
                out.append({"user": f"w{u}", "name": name, "time": t + k * 60_000})
    out.append({"user": "last", "name": "search", "time": T0 + 5 * DAY - 1})
    return out


def blocks(c):
    return c.call("server.info")["plugins"]["events"]["funnel_blocks"]


def wait_warm(c, runs=1):
    for _ in range(600):
        b = blocks(c)
        if b["warm_builds"] >= runs and not b["warming"]:
            return b
        time.sleep(0.05)
    raise AssertionError(f"no warm-up build: {blocks(c)}")


def test_restart_warms_the_latest_days():
    evs = events()
    args = {"steps": STEPS, "from": T0 + 2 * DAY, "to": T0 + 5 * DAY - HOUR, "window_ms": HOUR}
    with Server({"funnel_warm_days": 3}, copy_scripts=False) as srv:
        with srv.client() as c:
            for i in range(0, len(evs), 1000):
                assert c.call("events.track", events=evs[i:i + 1000])["accepted"] == len(evs[i:i + 1000])
            before = c.call("funnel.query", **args)
            assert before["steps"][0]["users"] > 100 and before["steps"][3]["users"] > 10
        srv.restart()
        with srv.client() as c:
            # at once: waits for the warm-up build if it is still running
            assert c.call("funnel.query", **args) == before
            b = wait_warm(c)
            assert b["warm_days"] == 3 and b["warm_failed"] == 0
            assert b["warm_range"] == [T0 + 2 * DAY, T0 + 5 * DAY]
            hours = len({e["time"] // HOUR for e in evs if e["time"] >= T0 + 2 * DAY})
            assert b["built"] == hours > 40
            assert b["entries"] == sum(1 for e in evs if e["time"] >= T0 + 2 * DAY)
            after = c.call("funnel.query", **args)
            assert after == before
            b2 = blocks(c)
            assert b2["built"] == hours and b2["reused"] == b["reused"] + hours
            # an event in the latest hour: the next check extends that hour alone (at most a
            # minute later; the test does not wait for it), and the query sees it at once
            c.call("events.track", user="w1", name="view", time=T0 + 5 * DAY - 2)
            assert c.call("funnel.query", **args)["steps"][1]["users"] >= after["steps"][1]["users"]


def test_zero_days_builds_nothing():
    with Server({"funnel_warm_days": 0}, copy_scripts=False) as srv:
        with srv.client() as c:
            c.call("events.track", events=events()[:2000])
        srv.restart()
        with srv.client() as c:
            time.sleep(0.3)
            b = blocks(c)
            assert b["warm_days"] == 0 and b["warm_builds"] == 0 and b["entries"] == 0
            assert b["warm_range"] is None


def test_bad_value_is_refused(tmp_path):
    p = subprocess.run([os.environ["SX_BIN"], "--data-dir", str(tmp_path / "d"), "--funnel-warm-days", "400"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "funnel_warm_days" in p.stderr or "funnel-warm-days" in p.stderr
