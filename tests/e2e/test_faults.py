"""RELIABILITY.md group S and the limits: a full disk, a full map, descriptor exhaustion,
requests in flight over the limit. Each time: a clear error, no partial write, the server
goes on serving reads and recovers."""
import resource
import socket
import time

import pytest

from sxtest import RpcError, Server, request

BLOB = """
return {
  put = function(ctx, args) ctx.store.put(args.key, string.rep("x", args.size)) return args.size end,
  pair = function(ctx, args)
    ctx.store.put(args.key .. ".a", string.rep("a", args.size))
    ctx.store.put(args.key .. ".b", string.rep("b", args.size))
    return true
  end,
  len = function(ctx, args) local v = ctx.store.get(args.key) return v and #v end,
  slow = function(ctx, args) local t = os.clock() while os.clock() - t < 0.02 do end return args.i end,
}
"""


def test_full_disk_refuses_writes_and_keeps_reading():
    with Server(scripts={"methods/blob.lua": BLOB}) as s:
        c = s.client()
        c.call("blob.put", key="small", size=100)
        # Let the data file grow by little more than what it has now.
        import os
        size = os.path.getsize(os.path.join(s.data_dir, "data.mdb"))
        resource.prlimit(s.pid, resource.RLIMIT_FSIZE, (size + 256 * 1024, resource.RLIM_INFINITY))
        with pytest.raises(RpcError) as e:
            for i in range(50):
                c.call("blob.pair", key="big%d" % i, size=200_000)
        assert e.value.code in ("storage_full", "io_error"), e.value
        failed = i
        # Reads go on; the failed write left no half (both or neither).
        assert c.call("blob.len", key="small") == 100
        a = c.call("blob.len", key="big%d.a" % failed)
        b = c.call("blob.len", key="big%d.b" % failed)
        assert a is None and b is None
        assert c.call("ping") == "pong"
        # Space returns: writes succeed again, and are durable.
        resource.prlimit(s.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        c.call("blob.pair", key="after", size=200_000)
        s.restart()
        c = s.client()
        assert c.call("blob.len", key="after.a") == 200_000
        assert c.call("blob.len", key="after.b") == 200_000
        assert c.call("blob.len", key="small") == 100
        assert c.call("blob.len", key="big%d.a" % failed) is None


def fsync_fault_env(trigger):
    """Environment that runs the server over the shim of tests/fault: fsync and
    fdatasync fail with EIO while `trigger` exists."""
    import os
    lib = os.environ.get("SX_FAULT_LIB")
    assert lib and os.path.exists(lib), "SX_FAULT_LIB must name the built fsync shim"
    env = {"LD_PRELOAD": lib, "SX_FAULT_FSYNC": trigger}
    if os.environ.get("SX_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE"):
        # the shim is preloaded ahead of the ASan runtime
        env["ASAN_OPTIONS"] = "abort_on_error=0:detect_leaks=1:verify_asan_link_order=0"
    return env


def test_failing_fsync_refuses_the_write_and_recovers(tmp_path):
    trigger = str(tmp_path / "fail-fsync")
    with Server(scripts={"methods/blob.lua": BLOB}, env=fsync_fault_env(trigger)) as s:
        c = s.client()
        c.call("blob.pair", key="before", size=1000)
        open(trigger, "w").close()
        with pytest.raises(RpcError) as e:
            c.call("blob.pair", key="during", size=1000)
        assert e.value.code == "io_error", e.value
        assert "commit" in e.value.message
        # Reads go on, and the refused write is not visible (never acknowledged).
        assert c.call("blob.len", key="before.a") == 1000
        assert c.call("blob.len", key="during.a") is None
        assert c.call("server.info")["store"]["batches_failed"] >= 1
        # The device heals: new writes are durable again; the failed one is not retried.
        import os
        os.unlink(trigger)
        c.call("blob.pair", key="after", size=1000)
        s.restart()
        c = s.client()
        assert c.call("blob.len", key="before.b") == 1000
        assert c.call("blob.len", key="after.b") == 1000
        assert c.call("blob.len", key="during.a") is None
        assert c.call("blob.len", key="during.b") is None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_demo_load_reports_a_batch_that_failed_midway(tmp_path):
    """demo.load writes over many batches: one that fails while later ones succeed makes
    the reply an error, not a success over incomplete data."""
    trigger = str(tmp_path / "fail-fsync")
    with Server(scripts={"methods/blob.lua": BLOB}, env=fsync_fault_env(trigger)) as s:
        c, c2 = s.client(timeout=120), s.client(timeout=120)
        c.call("blob.put", key="before", size=10)  # answered once durable: nothing else pending
        base = c.call("server.info")["store"]["batches_failed"]
        open(trigger, "w").close()
        c.send_raw(request(1, "demo.load", [{"users": 2000, "days": 60, "seed": 5}]))
        deadline = time.monotonic() + 60
        while c2.call("server.info")["store"]["batches_failed"] == base:  # a demo batch failed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        import os
        os.unlink(trigger)
        m = c.recv_msg(timeout=120)
        assert m[2] is not None and m[2]["code"] == "io_error", m
        assert c.call("server.info")["store"]["batches_failed"] >= 1
        c.call("blob.put", key="after", size=10)  # the disk is back: writes go on
        assert c.call("blob.len", key="after") == 10


def test_failing_fsync_in_relaxed_mode_stops_writes_until_restart(tmp_path):
    trigger = str(tmp_path / "fail-fsync")
    env = dict(fsync_fault_env(trigger), SX_FAULT_FSYNC_DELAY_MS="30")
    with Server(config={"durability": "relaxed", "sync_interval_ms": 20},
                scripts={"methods/blob.lua": BLOB}, env=env) as s:
        c = s.client()
        c.call("blob.put", key="before", size=10)
        time.sleep(0.1)
        open(trigger, "w").close()
        c.call("blob.put", key="unsynced", size=10)  # acknowledged before its sync fails
        deadline = time.monotonic() + 10
        i = 0
        while not c.call("server.info")["store"]["sync_failed"]:
            assert time.monotonic() < deadline, "the failed periodic sync was not noticed"
            try:  # writes during the slow failing sync
                c.call("blob.put", key=f"during{i}", size=10)
            except RpcError as e:
                assert e.code == "io_error"
            i += 1
            time.sleep(0.005)
        # Nothing is due once a sync has failed: the writer sleeps, it does not spin.
        cpu0 = cpu_seconds(s.pid)
        time.sleep(1.0)
        assert cpu_seconds(s.pid) - cpu0 < 0.3
        import os
        os.unlink(trigger)
        # A later sync would succeed with the lost pages: writes stay refused.
        with pytest.raises(RpcError) as e:
            c.call("blob.put", key="later", size=10)
        assert e.value.code == "io_error" and "fsync failed" in e.value.message
        assert c.call("blob.len", key="before") == 10
        assert "fsync failed" in s.stderr_text()
        s.restart()
        c = s.client()
        assert not c.call("server.info")["store"]["sync_failed"]
        c.call("blob.put", key="later", size=10)
        assert c.call("blob.len", key="before") == 10


def test_map_at_its_limit_gives_storage_full():
    with Server(config={"map_size_mb": 1, "max_map_size_mb": 2}, scripts={"methods/blob.lua": BLOB}) as s:
        c = s.client()
        c.call("blob.put", key="first", size=1000)
        with pytest.raises(RpcError) as e:
            for i in range(100):
                c.call("blob.put", key="k%d" % i, size=100_000)
        assert e.value.code == "storage_full"
        assert "max_map_size" in e.value.message
        assert c.call("blob.len", key="first") == 1000
        # Small writes that fit still succeed afterwards.
        c.call("blob.put", key="tiny", size=10)
        assert c.call("blob.len", key="tiny") == 10


def test_out_of_descriptors_then_recovers():
    with Server(scripts={"methods/blob.lua": BLOB}) as s:
        resource.prlimit(s.pid, resource.RLIMIT_NOFILE, (48, 48))
        socks = []
        for _ in range(80):
            try:
                socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=2))
            except OSError:
                break
        time.sleep(0.3)
        for k in socks:
            k.close()
        time.sleep(0.5)
        c = s.client()
        assert c.call("ping") == "pong"
        assert s.alive()


def test_requests_over_max_inflight_wait_their_turn():
    with Server(config={"max_inflight": 4}, scripts={"methods/blob.lua": BLOB}) as s:
        c = s.client()
        replies = c.pipeline([("blob.slow", {"i": i}) for i in range(40)], timeout=30)
        assert replies == list(range(40))


def test_limits_are_validated_at_start(tmp_path):
    import os
    import subprocess
    for flag, value in [("--max-depth", "1000"), ("--max-frame-bytes", "x"), ("--durability", "fast"),
                        ("--no-such-key", "1")]:
        p = subprocess.run([os.environ["SX_BIN"], "--data-dir", str(tmp_path / "d"), flag, value],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (flag, p.stderr)
        assert "sextant:" in p.stderr


def test_long_reader_gives_up_at_its_age_limit():
    """A training job's read transaction past max_reader_age_ms fails the job with a
    clear reason (it would otherwise hold back map growth); the server goes on."""
    with Server(config={"max_reader_age_ms": 1}) as s:
        c = s.client()
        loaded = c.call("demo.load", users=800, days=30, seed=3)
        assert loaded["events"] > 8192
        job = c.call("recommend.train")["job"]
        deadline = time.monotonic() + 60
        while (st := c.call("job.status", id=job))["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert st["state"] == "failed", st
        assert st["error"]["code"] == "deadline_exceeded", st
        assert "max_reader_age_ms" in st["error"]["message"], st
        assert c.call("server.info")["store"]["oldest_reader_ms"] == 0
        assert c.call("ping") == "pong"


def test_kill9_during_training_leaves_no_partial_version():
    with Server() as s:
        c = s.client()
        c.call("demo.load", users=2000, days=30, seed=1)

        def train(iterations, factors):
            return c.call("model.train", type="als", name="m", params={"iterations": iterations, "factors": factors})["job"]

        job = train(2, 8)
        while (st := c.call("job.status", id=job))["state"] == "running":
            time.sleep(0.05)
        assert st["state"] == "done" and st["result"]["version"] == 1
        before = c.call("model.predict", name="m", version=1, inputs={"user": "u0000001"})
        job = train(200, 64)
        deadline = time.monotonic() + 30
        while "iteration" not in (c.call("job.status", id=job)["message"] or ""):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        s.kill9()
        s.start()
        c = s.client()
        m = c.call("model.get", name="m")
        assert m["version"] == 1 and m["status"] == "ready"
        assert [x["latest"] for x in c.call("model.list") if x["name"] == "m"] == [1]
        assert c.call("model.predict", name="m", version=1, inputs={"user": "u0000001"}) == before
        # Training after the restart goes on from the last complete version.
        job = train(2, 8)
        while (st := c.call("job.status", id=job))["state"] == "running":
            time.sleep(0.05)
        assert st["state"] == "done" and st["result"]["version"] == 2, st


def test_kill9_during_ingest_loses_no_acknowledged_batch():
    """Batches of events with client ids, kill -9 at a random moment, ten rounds. After
    each restart every batch is sent again: acknowledged ones must come back as
    duplicates, and the event and metric counts must be exact — an acknowledged batch
    lost, or a batch half applied (its client id kept without all its events, or events
    counted twice), would show."""
    import random
    import threading
    rng = random.Random(7)
    t0 = 1_790_000_000_000
    per_batch = 40
    with Server() as s:
        acked, sent = set(), []
        for rnd in range(10):
            def ingest():
                cl = s.client()
                try:
                    while True:
                        b = len(sent)
                        sent.append(b)
                        events = [{"user": "k%d" % (b % 7), "name": "view", "item": "i%d" % j,
                                   "time": t0 + b * 1000 + j} for j in range(per_batch)]
                        r = cl.call("events.track", events=events, client_id="b%d" % b)
                        assert r["accepted"] == per_batch and not r["duplicate"]
                        acked.add(b)
                except Exception:  # noqa: BLE001 - the server died under us
                    pass

            t = threading.Thread(target=ingest)
            t.start()
            time.sleep(0.05 + rng.random() * 0.15)
            s.kill9()
            t.join()
            s.start()
            c = s.client()
            for b in sent:
                events = [{"user": "k%d" % (b % 7), "name": "view", "item": "i%d" % j,
                           "time": t0 + b * 1000 + j} for j in range(per_batch)]
                r = c.call("events.track", events=events, client_id="b%d" % b)
                if b in acked:
                    assert r["duplicate"], (rnd, b, r)
            total = c.call("metrics.query", event="view", interval="day",
                           **{"from": t0 - 86_400_000, "to": t0 + len(sent) * 1000 + 86_400_000})["total"]
            assert total["count"] == len(sent) * per_batch, (rnd, total, len(sent))
        assert len(acked) > 10
        # Per user, the stored events are exactly the batches sent for that user.
        for u in range(7):
            n, frm = 0, None
            while True:
                page = c.call("users.events", id="k%d" % u, limit=10000, **({"from": frm} if frm else {}))
                n += len(page["events"])
                frm = page["next_from"]
                if frm is None:
                    break
            assert n == sum(per_batch for b in sent if b % 7 == u), u
