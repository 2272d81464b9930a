"""sextant-cli against a real server, and its JSON <-> MessagePack mapping
against a scripted peer that sends exact bytes."""

import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time

import msgpack
import pytest

import sxtest
from sxtest import cli


ECHO = "return { echo = function(ctx, args) return args end }\n"


@pytest.fixture(scope="module")
def server():
    with sxtest.Server({"watch_scripts": True}, scripts={"methods/e2e.lua": ECHO}) as srv:
        yield srv


# -- against the real server -----------------------------------------------


def test_ping(server):
    r = cli("ping", port=server.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '"pong"\n'
    assert r.stderr == ""


def test_server_info_is_a_json_object(server):
    r = cli("server.info", port=server.port)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert isinstance(info, dict) and info
    # pretty: one member per line, two-space indent
    assert r.stdout.startswith("{\n  \"")


def test_args_from_stdin(server):
    r = cli("ping", "-", input='{}', port=server.port)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "pong"
    r = cli("subscribe", "-", input='{"topic": "script.events"}', port=server.port)
    assert r.returncode == 0, r.stderr


def test_unknown_method_exits_1(server):
    r = cli("no.such_method", '{"a": 1}', port=server.port)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("error: unknown_method: "), r.stderr
    assert r.stderr.endswith("\n") and r.stderr.count("\n") == 1


def test_wrong_argument_type_exits_1(server):
    r = cli("subscribe", '{"topic": 5}', port=server.port)
    assert r.returncode == 1
    assert r.stderr.startswith("error: invalid_argument: "), r.stderr


def test_connection_refused_exits_2():
    port = sxtest.free_port()
    r = cli("ping", port=port)
    assert r.returncode == 2
    assert "cannot connect" in r.stderr


def test_usage_errors_exit_3(server):
    assert cli("ping", "{not json", port=server.port).returncode == 3
    assert cli("ping", "5", port=server.port).returncode == 3
    assert cli("ping", '{"a":1,"a":2}', port=server.port).returncode == 3
    assert cli(port=server.port).returncode == 3
    assert cli("--count", "2", "ping", port=server.port).returncode == 3
    assert cli("--timeout", "soon", "ping", port=server.port).returncode == 3


def test_watch_script_events(server):
    """A reload of a changed script is announced on script.events."""
    proc = subprocess.Popen([sxtest.env_path("SX_CLI"), "--port", str(server.port),
                             "--watch", "script.events", "--count", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The CLI subscribes at its own pace: save new versions until one
        # reaches it.
        for i in range(30):
            server.write_script("methods/e2e_watch.lua",
                                "return { hello = function(ctx, args) return %d end }\n" % i)
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["topic"] == "script.events"
    assert event["data"]["event"] == "loaded"
    assert event["data"]["kind"] == "methods" and event["data"]["name"] == "e2e_watch"


def test_watch_then_call(server):
    """--watch with a METHOD: subscribe, call, print {"result":...}, then the
    notifications the call caused."""
    args = json.dumps({"kind": "methods", "name": "e2e_put", "source": ECHO})
    r = cli("--watch", "script.events", "--count", "1", "script.put", args,
            port=server.port, timeout=20)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2, r.stdout
    # the event may come before the reply: the reply waits for the commit
    (result,) = [x["result"] for x in lines if "result" in x]
    (event,) = [x for x in lines if "topic" in x]
    assert result["name"] == "e2e_put"
    assert event["topic"] == "script.events"
    assert event["data"]["event"] == "loaded" and event["data"]["name"] == "e2e_put"


def test_round_trip_through_a_script(server):
    args = {"n": 42, "neg": -7, "big": 2**40, "x": 0.25, "s": "ünï ☃", "l": [1, "two", [3]],
            "m": {"k": "v"}, "t": True}
    r = cli("e2e.echo", json.dumps(args, ensure_ascii=False), port=server.port)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == args


def test_token_against_real_server():
    token = "e2e-secret-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    with sxtest.Server({"tokens": [{"sha256": digest, "role": "admin"}]},
                       copy_scripts=False) as srv:
        r = cli("--token", token, "server.info", port=srv.port)
        assert r.returncode == 0, r.stderr
        assert isinstance(json.loads(r.stdout), dict)
        r = cli("--token", "wrong", "server.info", port=srv.port)
        assert r.returncode == 1
        assert r.stderr.startswith("error: unauthenticated: "), r.stderr
        r = cli("server.info", port=srv.port)  # a request before auth
        assert r.returncode == 1
        assert r.stderr.split(":")[:2] in (["error", " unauthenticated"],
                                           ["error", " permission_denied"]), r.stderr


# -- against a scripted peer: exact bytes both ways ------------------------


class Peer:
    """Accepts one connection and answers each request with handler(msg),
    which returns the bytes to send (or None to stay silent)."""

    def __init__(self, handler):
        self.handler = handler
        self.received = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.lsock.settimeout(20)
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        conn.settimeout(20)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                up.feed(data)
                for m in up:
                    self.received.append(m)
                    out = self.handler(m)
                    if out:
                        conn.sendall(out)

    def close(self):
        self.lsock.close()
        self.thread.join(5)


def reply_raw(msgid, result_bytes, error_bytes=b"\xc0"):
    return b"\x94\x01" + msgpack.packb(msgid) + error_bytes + result_bytes


def mapb(pairs):
    """A MessagePack map from already-encoded (key, value) byte pairs."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def p(x):
    return msgpack.packb(x, use_bin_type=True)


def test_output_mapping_exact():
    result = mapb([
        (p("u64max"), b"\xcf" + struct.pack(">Q", 2**64 - 1)),
        (p("i64min"), b"\xd3" + struct.pack(">q", -2**63)),
        (p("f64"), b"\xcb" + struct.pack(">d", 0.1)),
        (p("one"), b"\xcb" + struct.pack(">d", 1.0)),
        (p("f32"), b"\xca" + struct.pack(">f", 0.1)),
        (p("bin"), b"\xc4\x03\x00\xff\x10"),
        (p("text"), p("héllo ☃ \"q\" \\ \n")),
        (p("bad_utf8"), b"\xa3a\xff\xfe"),
        (p("ext"), b"\xd5\x05ab"),
        (p("nan"), b"\xcb" + struct.pack(">d", float("nan"))),
        (p(7), p("int key")),
        (p("nested"), p([[], {}, None, True, False, [1, [2]]])),
    ])
    peer = Peer(lambda m: reply_raw(m[1], result))
    try:
        r = cli("any.method", port=peer.port, timeout=20)
    finally:
        peer.close()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["u64max"] == 2**64 - 1 and isinstance(out["u64max"], int)
    assert out["i64min"] == -2**63
    assert out["f64"] == 0.1 and isinstance(out["f64"], float)
    assert out["one"] == 1.0 and isinstance(out["one"], float)
    assert '"one": 1.0' in r.stdout
    assert out["f32"] == 0.1 and '"f32": 0.1,' in r.stdout
    assert out["bin"] == "AP8Q"
    assert out["text"] == "héllo ☃ \"q\" \\ \n"
    assert "héllo ☃" in r.stdout  # UTF-8, not \u escapes
    assert out["bad_utf8"] == "a\ufffd\ufffd"
    assert out["ext"] == {"ext": 5, "data": "YWI="}
    assert out["nan"] == "NaN"
    assert out["7"] == "int key"
    assert out["nested"] == [[], {}, None, True, False, [1, [2]]]


def test_input_mapping_exact():
    seen = []

    def handler(m):
        seen.append(m)
        return p([1, m[1], None, True])

    peer = Peer(handler)
    args = ('{"big": 9223372036854775807, "neg": -5, "one": 1.0, "half": 0.5, '
            '"s": "é\\u0000x", "n": null, "l": [1, [2, "x"]], "o": {}}')
    try:
        r = cli("m.one", args, port=peer.port, timeout=20)
    finally:
        peer.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout == "true\n"
    (req,) = seen
    assert req[0] == 0 and req[2] == "m.one" and isinstance(req[1], int)
    (a,) = req[3]
    assert a["big"] == 2**63 - 1 and isinstance(a["big"], int)
    assert a["neg"] == -5
    assert a["one"] == 1.0 and isinstance(a["one"], float)
    assert a["half"] == 0.5
    assert a["s"] == "é\x00x"
    assert a["n"] is None
    assert a["l"] == [1, [2, "x"]]
    assert a["o"] == {}


def test_params_shapes():
    seen = []

    def handler(m):
        seen.append(m)
        return p([1, m[1], None, None])

    for argv, params in ((["m"], []), (["m", "[1, 2]"], [1, 2]), (["m", "{}"], [{}])):
        seen.clear()
        peer = Peer(handler)
        try:
            r = cli(*argv, port=peer.port, timeout=20)
        finally:
            peer.close()
        assert r.returncode == 0, r.stderr
        assert r.stdout == "null\n"
        assert seen[0][3] == params


def test_rpc_error_format_and_token():
    calls = []

    def handler(m):
        calls.append(m[2])
        if m[2] == "auth":
            if m[3] == [{"token": "good"}]:
                return p([1, m[1], None, {"role": "admin"}])
            return p([1, m[1], {"code": "unauthenticated", "message": "bad token"}, None])
        return p([1, m[1], {"code": "not_found", "message": "no such thing"}, None])

    peer = Peer(handler)
    try:
        r = cli("--token", "good", "thing.get", '{"id": "1"}', port=peer.port, timeout=20)
    finally:
        peer.close()
    assert calls == ["auth", "thing.get"]
    assert r.returncode == 1
    assert r.stderr == "error: not_found: no such thing\n"
    calls.clear()
    peer = Peer(handler)
    try:
        r = cli("--token", "bad", "thing.get", port=peer.port, timeout=20)
    finally:
        peer.close()
    assert calls == ["auth"]
    assert r.returncode == 1
    assert r.stderr == "error: unauthenticated: bad token\n"


def test_watch_prints_notifications_as_lines():
    def handler(m):
        if m[2] == "subscribe":
            # a notification may come before the reply to subscribe itself
            return (p([2, m[3][0]["topic"], [{"n": 1}]]) + p([1, m[1], None, True])
                    + p([2, m[3][0]["topic"], [5]]) + p([2, "other", ["x", "y"]]))
        return None

    peer = Peer(handler)
    try:
        r = cli("--watch", "alerts", "--count", "3", port=peer.port, timeout=20)
    finally:
        peer.close()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [json.loads(x) for x in lines] == [
        {"topic": "alerts", "data": {"n": 1}},
        {"topic": "alerts", "data": 5},
        {"topic": "other", "data": ["x", "y"]},
    ]
    assert lines[0] == '{"topic":"alerts","data":{"n":1}}'


def test_watch_ends_on_sigint_with_0():
    def handler(m):
        return p([1, m[1], None, True])

    peer = Peer(handler)
    proc = subprocess.Popen([sxtest.env_path("SX_CLI"), "--port", str(peer.port),
                             "--watch", "a", "--watch", "b"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sxtest.wait_until(lambda: len(peer.received) == 2, 10)
        assert [m[3] for m in peer.received] == [[{"topic": "a"}], [{"topic": "b"}]]
        proc.send_signal(2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        peer.close()
    assert proc.returncode == 0, err
    assert out == ""


def test_timeout_exits_2():
    peer = Peer(lambda m: None)
    try:
        t0 = time.monotonic()
        r = cli("--timeout", "0.5", "slow.method", port=peer.port, timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        peer.close()
    assert r.returncode == 2
    assert "timed out" in r.stderr
    assert elapsed < 5


def test_server_closing_exits_2():
    class Closer(Peer):
        def _run(self):
            conn, _ = self.lsock.accept()
            conn.recv(100)
            conn.close()

    peer = Closer(None)
    try:
        r = cli("ping", port=peer.port, timeout=20)
    finally:
        peer.close()
    assert r.returncode == 2
    assert "closed" in r.stderr


if __name__ == "__main__":
    raise SystemExit(pytest.main([os.path.abspath(__file__), "-q"]))
