"""The engine end to end: scripted methods, hot reload, rollback, store durability,
auth and roles, backup, shutdown. A real server on a free port, real bytes."""
import os
import signal
import subprocess
import threading
import time

import pytest

from sxtest import RpcError, Server, request, wait_until

COUNTER = """
return {
  description = "a counter in the script's store",
  incr = function(ctx, args)
    local key = args.key or "n"
    local n = (ctx.store.get(key) or 0) + (args.by or 1)
    ctx.store.put(key, n)
    return n
  end,
  get = function(ctx, args) return ctx.store.get(args.key or "n") end,
  fail_after_write = function(ctx, args)
    ctx.store.put(args.key or "n", -1)
    error("boom")
  end,
  pair = function(ctx, args)
    ctx.store.put("a" .. args.i, args.i)
    ctx.store.put("b" .. args.i, args.i)
    return args.i
  end,
  roles = { get = "reader" },
}
"""

VERSIONED = 'return { which = function(ctx, args) return "%s" end }'


@pytest.fixture
def server():
    with Server(scripts={"methods/counter.lua": COUNTER}) as s:
        yield s


def test_scripted_method_reads_and_writes_the_store(server):
    c = server.client()
    assert c.call("counter.incr", by=5) == 5
    assert c.call("counter.incr") == 6
    assert c.call("counter.get") == 6
    with pytest.raises(RpcError) as e:
        c.call("counter.nothing")
    assert e.value.code == "unknown_method"


def test_failed_script_call_rolls_back_its_writes(server):
    c = server.client()
    c.call("counter.incr", key="k", by=3)
    with pytest.raises(RpcError) as e:
        c.call("counter.fail_after_write", key="k")
    assert e.value.code == "script_error"
    assert "boom" in e.value.message
    assert c.call("counter.get", key="k") == 3


def test_script_put_reload_failure_and_rollback(server):
    c = server.client()
    c.call("subscribe", topic="script.events")
    r = c.call("script.put", kind="methods", name="v", source=VERSIONED % "one")
    assert r["version"] == 1
    assert c.call("v.which") == "one"
    _, params = c.notification("script.events")
    ev = params[0]
    assert ev["event"] == "loaded" and ev["name"] == "v" and ev["version"] == 1

    assert c.call("script.put", kind="methods", name="v", source=VERSIONED % "two")["version"] == 2
    assert c.call("v.which") == "two"

    # A broken version is refused with its line; the old one goes on serving.
    with pytest.raises(RpcError) as e:
        c.call("script.put", kind="methods", name="v", source="return {\n which = function(\n}")
    assert e.value.code == "script_error"
    assert "methods/v.lua:3" in e.value.message
    with pytest.raises(RpcError) as e:
        c.call("script.put", kind="methods", name="v", source="return 42")
    assert e.value.code == "script_error"
    assert "table" in e.value.message
    with pytest.raises(RpcError) as e:
        c.call("script.put", kind="methods", name="v", source="error('at load')")
    assert "at load" in e.value.message
    assert c.call("v.which") == "two"

    hist = c.call("script.history", kind="methods", name="v")
    assert [h["version"] for h in hist] == [1, 2]
    assert hist[1]["current"] is True

    r = c.call("script.rollback", kind="methods", name="v")
    assert r["version"] == 1 and r["previous"] == 2
    assert c.call("v.which") == "one"
    got = c.call("script.get", kind="methods", name="v")
    assert got["version"] == 1 and got["current"] is True and "one" in got["source"]
    assert "two" in c.call("script.get", kind="methods", name="v", version=2)["source"]

    # Versions and the rollback survive a restart.
    server.restart()
    c = server.client()
    assert c.call("v.which") == "one"
    assert c.call("script.put", kind="methods", name="v", source=VERSIONED % "three")["version"] == 3


def test_script_put_bad_arguments(server):
    c = server.client()
    for args, code in [
        (dict(kind="nope", name="x", source="return {}"), "invalid_argument"),
        (dict(kind="methods", name="Bad-Name", source="return {}"), "invalid_argument"),
        (dict(kind="methods", name="x"), "invalid_argument"),
        (dict(kind="methods", name="x", source=5), "invalid_argument"),
        (dict(kind="methods", name="x", source="return {}", extra=1), "invalid_argument"),
        (dict(kind="methods", name="script", source="return {f = function() end}"), "script_error"),
        (dict(kind="methods", name="x", source="\x1bLJ\x02"), "script_error"),
    ]:
        with pytest.raises(RpcError) as e:
            c.call("script.put", **args)
        assert e.value.code == code, (args, e.value)
    with pytest.raises(RpcError) as e:
        c.call("script.rollback", kind="methods", name="never")
    assert e.value.code == "not_found"


def test_saving_a_file_reloads_it(server):
    c = server.client()
    server.write_script("methods/live.lua", VERSIONED % "first")
    wait_until(lambda: _answers(c, "live.which", "first"), 10)
    server.write_script("methods/live.lua", VERSIONED % "second")
    wait_until(lambda: _answers(c, "live.which", "second"), 10)
    server.write_script("methods/live.lua", "return {")  # broken: keeps serving
    time.sleep(0.5)
    assert c.call("live.which") == "second"
    listed = {(s["kind"], s["name"]): s for s in c.call("script.list")}
    assert listed[("methods", "live")]["error"]


def _answers(c, method, want):
    try:
        return c.call(method) == want
    except RpcError:
        return False


def test_reload_while_requests_are_in_flight(server):
    """Each reply comes from exactly one version; no unexpected errors."""
    c = server.client()
    c.call("script.put", kind="methods", name="flip", source=VERSIONED % "v0")
    stop = threading.Event()
    seen, errors = set(), []

    def load():
        cl = server.client()
        while not stop.is_set():
            try:
                replies = cl.pipeline([("flip.which", {})] * 20)
                seen.update(replies)
            except Exception as ex:  # noqa: BLE001
                errors.append(ex)
                return

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(1, 60):
        c.call("script.put", kind="methods", name="flip", source=VERSIONED % ("v%d" % i))
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen <= {"v%d" % i for i in range(60)}
    assert len(seen) > 3


@pytest.mark.parametrize("durability,rounds", [("full", 20), ("relaxed", 10)])
def test_kill9_loses_no_acknowledged_write(durability, rounds):
    """relaxed commits small batches on the loop thread and answers after the commit:
    a killed process (not a machine crash) loses nothing acknowledged either."""
    with Server(config={"durability": durability}, scripts={"methods/counter.lua": COUNTER}) as s:
        acked = {}
        for rnd in range(rounds):
            c = s.client()
            stop_at = time.time() + 0.05 + (rnd % 5) * 0.03

            def writer():
                i = rnd * 100000
                cl = s.client()
                try:
                    while True:
                        i += 1
                        cl.call("counter.pair", i=i)
                        acked[i] = True
                except Exception:  # noqa: BLE001 - the server died under us
                    pass

            t = threading.Thread(target=writer)
            t.start()
            while time.time() < stop_at:
                time.sleep(0.01)
            s.kill9()
            t.join()
            s.start()
            c = s.client()
            for i in list(acked)[-50:]:
                a = c.call("counter.get", key="a%d" % i)
                b = c.call("counter.get", key="b%d" % i)
                assert a == i and b == i, (rnd, i, a, b)
        assert len(acked) > 20


def test_tokens_and_roles():
    tok = {"admin": "adm-secret", "writer": "wr-secret", "reader": "rd-secret"}
    hashes = []
    for role, t in tok.items():
        h = subprocess.run([os.environ["SX_BIN"], "--hash-token", t], capture_output=True, text=True, check=True)
        hashes.append({"sha256": h.stdout.strip(), "role": role})
    with Server(config={"tokens": hashes}, scripts={"methods/counter.lua": COUNTER}) as s:
        c = s.client()
        assert c.call("ping") == "pong"
        with pytest.raises(RpcError) as e:
            c.call("server.info")
        assert e.value.code == "unauthenticated"
        t0 = time.time()
        with pytest.raises(RpcError) as e:
            c.call("auth", token="wrong")
        assert e.value.code == "unauthenticated"
        assert time.time() - t0 >= 0.09  # failures are slowed down

        # ten wrong tokens on one connection: each answered, then the connection is closed
        g = s.client()
        replies = g.pipeline([("auth", {"token": "guess%d" % i}) for i in range(10)], timeout=10)
        assert all(isinstance(r, RpcError) and r.code == "unauthenticated" for r in replies)
        assert g.is_closed(timeout=3)
        assert s.client().call("ping") == "pong"

        assert c.call("auth", token=tok["reader"])["role"] == "reader"
        assert c.call("server.info")["version"]
        assert c.call("counter.get") is None
        with pytest.raises(RpcError) as e:
            c.call("counter.incr")
        assert e.value.code == "permission_denied"

        w = s.client()
        w.call("auth", token=tok["writer"])
        assert w.call("counter.incr") == 1
        with pytest.raises(RpcError) as e:
            w.call("script.put", kind="methods", name="x", source="return {f=function() end}")
        assert e.value.code == "permission_denied"

        a = s.client()
        a.call("auth", token=tok["admin"])
        assert a.call("script.put", kind="methods", name="x", source="return {f=function() return 1 end}")


def test_server_info_and_backup(server, tmp_path):
    c = server.client()
    for _ in range(5):
        c.call("counter.incr")
    info = c.call("server.info")
    for key in ("version", "uptime_ms", "connections", "requests_per_second", "store", "scripts", "jobs"):
        assert key in info
    assert info["store"]["durability"] == "full"
    assert info["store"]["tables"]["kv"] >= 1
    assert any(s["name"] == "counter" for s in info["scripts"])

    dest = str(tmp_path / "backup")
    r = c.call("admin.backup", path=dest)
    assert r["path"] == dest
    assert os.path.getsize(os.path.join(dest, "data.mdb")) > 0
    with pytest.raises(RpcError) as e:
        c.call("admin.backup", path=dest)
    assert e.value.code == "already_exists"
    # The copy is a working store.
    with Server(config={"data_dir": dest}, copy_scripts=False) as b:
        bc = b.client()
        assert bc.call("counter.get") == 5
    jobs = c.call("job.list")
    assert jobs and jobs[0]["kind"] == "backup" and jobs[0]["state"] == "failed"


def test_second_server_on_same_directory_is_refused(server):
    p = subprocess.run([os.environ["SX_BIN"], "--data-dir", server.data_dir, "--listen", "127.0.0.1:0",
                        "--scripts-dir", server.scripts_dir], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "in use by another sextant process" in p.stderr


def test_corrupted_data_file_refused(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    junk = bytes((i * 31 + 7) % 256 for i in range(16384))
    (d / "data.mdb").write_bytes(junk)
    p = subprocess.run([os.environ["SX_BIN"], "--data-dir", str(d), "--listen", "127.0.0.1:0",
                        "--scripts-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "refusing to start" in p.stderr
    assert (d / "data.mdb").read_bytes() == junk


def test_sigterm_answers_in_flight_requests():
    slow = 'return { wait = function(ctx, args) local t = os.clock() while os.clock() - t < 0.2 do end return "done" end }'
    # A generous wall-clock budget: on a loaded machine 0.2 s of CPU can take much longer.
    with Server(config={"script_timeout_ms": 20000}, scripts={"methods/slow.lua": slow}) as s:
        c = s.client()
        msgids = [c.next_id() for _ in range(3)]
        c.send_raw(b"".join(request(m, "slow.wait") for m in msgids))
        time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        got = [c._wait_response(m, time.monotonic() + 30) for m in msgids]
        assert [(g[2], g[3]) for g in got] == [(None, "done")] * 3
        assert s.proc.wait(15) == 0
