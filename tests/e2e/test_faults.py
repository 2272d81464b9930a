"""RELIABILITY.md group S and the limits: a full disk, a full map, descriptor exhaustion,
requests in flight over the limit. Each time: a clear error, no partial write, the server
goes on serving reads and recovers."""
import resource
import socket
import time

import pytest

from sxtest import RpcError, Server

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
        resource.prlimit(s.pid, resource.RLIMIT_FSIZE, (size + 256 * 1024, size + 256 * 1024))
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
