"""Privacy end to end over TCP: consent honoured by events.track, erasure that leaves
no byte of the user in a compacted copy of the store, export (right of access), the
retention sweep, the audit log, pseudonymous ids, and the inputs that fuzzing found."""
import glob
import os
import time

import msgpack
import pytest

from sxtest import RpcError, Server, wait_until

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
VICTIM = "erase-me-9c1d"


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


def backup_bytes(c, server, name):
    path = os.path.join(server.tmp, name)
    c.call("admin.backup", path=path)
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return f.read()


def day_count(c, event, day):
    r = c.call("metrics.query", event=event, **{"from": day, "to": day + DAY}, interval="day")
    return r["total"]["count"], r["total"]["users"]


def test_consent_is_honoured_by_events_track(c):
    r = c.call("consent.set", user="shy", purposes={"analytics": False, "notifications": True}, source="settings")
    assert r["purposes"]["analytics"]["granted"] is False
    assert r["purposes"]["analytics"]["source"] == "settings"
    assert r["purposes"]["personalization"] == {"granted": True, "time": None, "source": None}
    before = day_count(c, "cview", T0)
    t = c.call("events.track", events=[{"user": "shy", "name": "cview", "time": T0 + 5},
                                       {"user": "open", "name": "cview", "time": T0 + 6}])
    assert t["accepted"] == 2 and t["rejected"] == []
    # counted only as an anonymous total: no user, no index, no per-user bitmap
    assert code_of(c.call, "users.get", id="shy") == "not_found"
    assert day_count(c, "cview", T0) == (before[0] + 2, before[1] + 1)
    g = c.call("consent.get", user="shy")
    assert g["recorded"] is True and g["purposes"]["notifications"]["granted"] is True
    assert c.call("consent.get", user="stranger")["recorded"] is False
    assert code_of(c.call, "consent.set", user="shy", purposes={"analytics": "no"}) == "invalid_argument"
    assert code_of(c.call, "consent.set", user="shy", purposes=[]) == "invalid_argument"
    assert code_of(c.call, "consent.get") == "invalid_argument"


def test_erase_leaves_nothing_in_a_compacted_copy(c, server):
    c.call("users.put", id=VICTIM, attributes={"email": VICTIM + "@example.com"})
    c.call("metrics.dimensions", event="eview", dimensions=["device"])
    evs = [{"user": VICTIM, "name": "eview", "time": T0 + d * DAY, "properties": {"device": "ios", "note": VICTIM}}
           for d in range(4)]
    evs += [{"user": "bystander", "name": "eview", "time": T0 + d * DAY} for d in range(4)]
    c.call("events.track", events=evs, client_id="erase-batch")
    c.call("cohort.save", name="everyone", rule={"first_seen": {"from": T0 - DAY, "to": T0 + 10 * DAY}})
    c.call("consent.set", user=VICTIM, purposes={"experiments": False})
    idx = c.call("users.get", id=VICTIM)["index"]
    assert VICTIM.encode() in backup_bytes(c, server, "before")
    count0, users0 = day_count(c, "eview", T0)

    r = c.call("privacy.erase", user=VICTIM)
    assert r["user_index"] == idx and r["found"] is True
    assert r["removed"]["events"] == 4 and r["removed"]["events_by_time"] == 4
    assert r["removed"]["users"] == 1 and r["removed"]["consent"] == 1 and r["removed"]["cohorts"] == 1
    assert len(r["user_hash"]) == 32

    # gone for every reader, at once
    assert code_of(c.call, "users.get", id=VICTIM) == "not_found"
    assert code_of(c.call, "users.events", id=VICTIM) == "not_found"
    assert code_of(c.call, "privacy.export", user=VICTIM) == "not_found"
    assert VICTIM not in c.call("cohort.users", name="everyone")["users"]
    assert c.call("cohort.size", name="everyone")["size"] == c.call("cohort.users", name="everyone")["size"]
    # aggregates keep the anonymous count, lose the user
    assert day_count(c, "eview", T0) == (count0, users0 - 1)
    # a compacted copy (admin.backup) holds no byte of the id
    assert VICTIM.encode() not in backup_bytes(c, server, "after")
    # the audit entry names the user by hash only
    a = c.call("audit.query", action="privacy.erase")["entries"][-1]
    assert a["detail"]["user"] == r["user_hash"] and a["detail"]["removed"]["events"] == 4
    assert VICTIM not in repr(a)
    # a new user never gets the erased index
    assert c.call("users.put", id="after-erase")["index"] > idx


def test_export_has_everything(c):
    c.call("users.put", id="exp", attributes={"tier": "gold"}, signup_time=T0)
    c.call("events.track", events=[{"user": "exp", "name": "xview", "time": T0 + 1, "item": "d9",
                                    "properties": {"price": 12.5}},
                                   {"user": "exp", "name": "xbook", "time": T0 + 2}])
    c.call("cohort.save", name="gold-x", rule={"attribute": {"name": "tier", "value": "gold"}})
    c.call("consent.set", user="exp", purposes={"personalization": False}, source="app")
    r = c.call("privacy.export", user="exp")
    assert r["user"] == "exp" and r["index"] == c.call("users.get", id="exp")["index"]
    assert r["consent"]["recorded"] is True
    assert r["consent"]["purposes"]["personalization"]["granted"] is False
    assert r["consent"]["purposes"]["personalization"]["source"] == "app"
    e = r["events"]
    assert e["profile"]["attributes"] == {"tier": "gold"} and e["profile"]["signup_time"] == T0
    assert e["first_seen"] == T0 + 1
    assert "gold-x" in e["cohorts"]
    assert e["events"] == [{"name": "xview", "time": T0 + 1, "item": "d9", "properties": {"price": 12.5}},
                           {"name": "xbook", "time": T0 + 2, "item": None, "properties": {}}]
    assert code_of(c.call, "privacy.export", user="never-seen") == "not_found"


def test_audit_records_script_changes(c):
    c.call("script.put", kind="methods", name="aud", source="return {f = function() return 1 end}")
    c.call("script.put", kind="methods", name="aud", source="return {f = function() return 2 end}")
    c.call("script.rollback", kind="methods", name="aud")
    puts = [e for e in c.call("audit.query", action="script.put")["entries"] if e["detail"]["name"] == "aud"]
    assert [e["detail"]["version"] for e in puts] == [1, 2]
    assert puts[0]["detail"] == {"kind": "methods", "name": "aud", "version": 1, "origin": "rpc"}
    rb = c.call("audit.query", action="script.rollback")["entries"]
    assert rb[-1]["detail"]["version"] == 1 and rb[-1]["action"] == "script.rollback"
    page = c.call("audit.query", limit=1)
    assert len(page["entries"]) == 1 and page["cursor"]
    rest = c.call("audit.query", cursor=page["cursor"], limit=1000)["entries"]
    assert rest and rest[0] != page["entries"][0]
    assert code_of(c.call, "audit.query", limit=0) == "invalid_argument"


def test_retention_sweep_removes_old_events_keeps_aggregates():
    now = int(time.time() * 1000)
    old = now - 10 * DAY
    cfg = {"retention_days": 2, "retention_interval_ms": 100}
    with Server(copy_scripts=False, config=cfg) as s, s.client(timeout=60) as c:
        c.call("events.track", events=[{"user": "r", "name": "rview", "time": old + i} for i in range(2500)]
               + [{"user": "r", "name": "rview", "time": now}])
        day = old - old % DAY
        wait_until(lambda: len(c.call("users.events", id="r")["events"]) == 1, 20)
        assert c.call("users.events", id="r")["events"][0]["time"] == now
        assert day_count(c, "rview", day)[0] == 2500  # the aggregate stays
        info = c.call("server.info")["plugins"]["privacy"]
        assert info["retention_days"] == 2 and info["retention_swept"] == 2500


def test_pseudonymous_ids(tmp_path):
    with Server(copy_scripts=False, config={"pseudonymize_secret": "pepper-123"}) as s, s.client() as c:
        c.call("events.track", user="alice@example.com", name="pview", time=T0)
        g = c.call("users.get", id="alice@example.com")
        assert len(g["id"]) == 64 and all(ch in "0123456789abcdef" for ch in g["id"])
        assert c.call("users.events", id="alice@example.com")["events"][0]["name"] == "pview"
        c.call("consent.set", user="alice@example.com", purposes={"analytics": True})
        assert c.call("privacy.export", user="alice@example.com")["user"] == g["id"]
        path = str(tmp_path / "bk")
        c.call("admin.backup", path=path)
        with open(os.path.join(path, "data.mdb"), "rb") as f:
            assert b"alice@example.com" not in f.read()
        assert c.call("privacy.erase", user="alice@example.com")["removed"]["events"] == 1


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(
    os.environ.get("SX_SOURCE_DIR", "."), "tests/fuzz/regressions/methods/*"))), ids=os.path.basename)
def test_fuzz_regressions(c, path):
    """Each file is METHOD NUL ARGS (fuzz_methods' input): it gets a reply, the server lives."""
    data = open(path, "rb").read()
    name, _, args = data.partition(b"\0")
    params = [msgpack.unpackb(args, raw=False)] if args else []
    try:
        c.call_params(name.decode(), params)
    except RpcError as e:
        assert e.code not in ("internal",), e
    assert c.call("ping") == "pong"


def test_fuzz_regressions_exist():
    assert len(glob.glob(os.path.join(os.environ["SX_SOURCE_DIR"], "tests/fuzz/regressions/methods/*"))) >= 2


def test_metrics_query_error_names_its_interval(c):
    """Fuzzing found the message printing the interval past its end (not NUL-terminated)."""
    with pytest.raises(RpcError) as e:
        c.call("metrics.query", event="view", **{"from": 0, "to": 10 ** 13}, interval="hour", limit=5)
    assert e.value.code == "invalid_argument"
    assert " hours; at most" in e.value.message, e.value.message


def test_wrapped_messages_are_not_garbled(c):
    """sx_diag_set() formatted over its own argument ("argument %s", sx_diag_last())."""
    with pytest.raises(RpcError) as e:
        c.call("events.track", events=[], client_id=5)
    assert e.value.message == "argument 'client_id' must be a string", e.value.message
