"""End-to-end test harness: a real `sextant` on a free loopback port and a
MessagePack-RPC client speaking real bytes to it.

Environment (set by ctest): SX_BIN (server binary), SX_CLI (sextant-cli),
SX_SOURCE_DIR (repo root), SX_SANITIZE (ON when built with ASan/UBSan).
SX_KEEP_TMP=1 keeps the temporary directories for a post-mortem.

    with Server({"max_frame_bytes": 1 << 20}) as srv:
        c = Client(srv.port)
        assert c.call("ping") == "pong"
"""

import collections
import errno
import itertools
import math
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LISTEN_RE = re.compile(rb"sextant listening on (\S+):(\d+)")
SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:")


def env_path(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the e2e tests through ctest "
                           f"or export {name} by hand")
    return value


def sanitized():
    return os.environ.get("SX_SANITIZE", "").upper() in ("ON", "1", "TRUE", "YES")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lua_literal(value, indent=""):
    """A Python value as Lua source (dicts become tables with ["key"] = ...)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("no NaN or infinity in a config")
        return repr(value)
    if isinstance(value, (bytes, str)):
        raw = value.encode() if isinstance(value, str) else value
        return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92)
                             else f"\\{b:03d}" for b in raw) + '"'
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}[{lua_literal(k)}] = {lua_literal(v, inner)}," for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [f"{inner}{lua_literal(v, inner)}," for v in value]
    else:
        raise TypeError(f"cannot write {type(value).__name__} as Lua")
    if not items:
        return "{}"
    return "{\n" + "\n".join(items) + "\n" + indent + "}"


class ServerError(AssertionError):
    pass


class Server:
    """A sextant process with its own data and scripts directories.

    config: keys of the Lua config file (listen, data_dir and scripts_dir
    are filled in unless given). args: extra command line arguments.
    copy_scripts: copy SX_SOURCE_DIR/scripts into the scripts dir.
    scripts: {relative path: source} written into the scripts dir before
    the start (e.g. {"methods/echo.lua": "return {...}"}).
    """

    def __init__(self, config=None, args=None, copy_scripts=True, scripts=None,
                 env=None, start_timeout=START_TIMEOUT):
        self.bin = env_path("SX_BIN")
        self.config = dict(config or {})
        self.args = list(args or [])
        self.env_extra = dict(env or {})
        self.start_timeout = start_timeout
        self.tmp = tempfile.mkdtemp(prefix="sx-e2e-")
        self.data_dir = self.config.setdefault("data_dir", os.path.join(self.tmp, "data"))
        self.scripts_dir = self.config.setdefault("scripts_dir", os.path.join(self.tmp, "scripts"))
        os.makedirs(self.data_dir, exist_ok=True)
        src = os.path.join(os.environ.get("SX_SOURCE_DIR", ""), "scripts")
        if copy_scripts and os.path.isdir(src) and not os.path.exists(self.scripts_dir):
            shutil.copytree(src, self.scripts_dir)
        os.makedirs(self.scripts_dir, exist_ok=True)
        for rel, text in (scripts or {}).items():
            self.write_script(rel, text)
        self.config_path = os.path.join(self.tmp, "sextant.lua")
        self.proc = None
        self.pid = None
        self.port = None
        self.host = "127.0.0.1"
        self.runs = 0
        self.stderr_path = None
        self._fixed_port = "listen" in self.config

    # -- lifecycle -----------------------------------------------------------

    def write_script(self, rel, text):
        path = os.path.join(self.scripts_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _write_config(self):
        with open(self.config_path, "w") as f:
            f.write("return " + lua_literal(self.config) + "\n")

    def start(self):
        assert self.proc is None, "already running"
        for attempt in range(3):
            if not self._fixed_port:
                self.config["listen"] = f"127.0.0.1:{free_port()}"
            self._write_config()
            if self._spawn():
                return self
            if self._fixed_port or b"in use" not in self.stderr_bytes():
                break
        raise ServerError(f"server did not start:\n{self.stderr_tail()}")

    def _spawn(self):
        env = dict(os.environ)
        # ASan's default 256 MiB quarantine would hide what RSS checks look for.
        asan = env.get("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        if "quarantine_size_mb" not in asan:
            asan += ":quarantine_size_mb=16"
        env["ASAN_OPTIONS"] = asan
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env_extra)
        self.stderr_path = os.path.join(self.tmp, f"stderr.{self.runs}.log")
        self.runs += 1
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([self.bin, "--config", self.config_path] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=env, cwd=self.tmp)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.stderr_bytes())
            if m:
                self.host = m.group(1).decode()
                self.port = int(m.group(2))
                return True
            if self.proc.poll() is not None:
                self.proc = None
                return False
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        raise ServerError(f"no 'sextant listening on' line within {self.start_timeout} s:\n"
                          f"{self.stderr_tail()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; asserts a clean exit 0 and, under sanitizers, a clean log."""
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ServerError(f"server did not exit within {timeout} s of SIGTERM:\n"
                              f"{self.stderr_tail()}")
        if rc != 0:
            raise ServerError(f"server exited with {rc} after SIGTERM:\n{self.stderr_tail()}")
        self.check_sanitizer()
        return rc

    def kill9(self):
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()

    def restart(self):
        """Stops (cleanly) if running, then starts again on the same directories."""
        if self.proc is not None:
            self.stop()
        self._fixed_port = True  # clients may hold the port number
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_sanitizer(self):
        if not sanitized():
            return
        text = self.stderr_bytes()
        for mark in SANITIZER_MARKS:
            if mark in text:
                raise ServerError(f"sanitizer report in the server log:\n{self.stderr_tail(200)}")

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                # pytest shows this with the failure
                print(f"--- server log (tail) ---\n{self.stderr_tail()}")
            if self.proc is not None:
                if exc_type is None:
                    self.stop()
                else:
                    try:
                        self.stop()
                    except ServerError as e:
                        print(e)
        finally:
            if not os.environ.get("SX_KEEP_TMP"):
                shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    # -- observation ---------------------------------------------------------

    def stderr_bytes(self):
        if not self.stderr_path:
            return b""
        with open(self.stderr_path, "rb") as f:
            return f.read()

    def stderr_text(self):
        return self.stderr_bytes().decode(errors="replace")

    def stderr_tail(self, lines=60):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise ServerError("no VmRSS")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def client(self, **kw):
        return Client(self.port, host=self.host, **kw)


class RpcError(Exception):
    def __init__(self, code, message, msgid=None, error=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.msgid = msgid
        self.error = error

    @classmethod
    def from_error(cls, error, msgid=None):
        if isinstance(error, dict):
            return cls(error.get("code"), error.get("message"), msgid, error)
        return cls(None, repr(error), msgid, error)


class ConnectionClosed(Exception):
    pass


def request(msgid, method, params=()):
    return msgpack.packb([0, msgid, method, list(params)], use_bin_type=True)


def is_response(m):
    return isinstance(m, list) and len(m) == 4 and m[0] == 1


def is_notification(m):
    return isinstance(m, list) and len(m) == 3 and m[0] == 2


class Client:
    """A blocking MessagePack-RPC connection.

    Messages read but not yet claimed wait in an inbox, so a call can read
    past notifications and other replies without losing them.
    """

    def __init__(self, port, host="127.0.0.1", timeout=10.0, rcvbuf=None, connect=True):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.closed = False
        self.inbox = collections.deque()
        self.ids = itertools.count(1)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         unicode_errors="surrogateescape",
                                         max_buffer_size=256 << 20)
        self.arrival = []  # msgids in the order their responses arrived
        if connect:
            self.connect(rcvbuf)

    def connect(self, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        self.sock = s
        return self

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def reset(self):
        """Closes with an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- raw bytes -----------------------------------------------------------

    def send_raw(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        """Reads once from the socket into the unpacker. Raises TimeoutError
        at the deadline and ConnectionClosed on EOF or reset."""
        if self.closed:
            raise ConnectionClosed("closed by the server")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no message in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError("no message in time") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            self.closed = True
            raise ConnectionClosed(str(e)) from None
        if not data:
            self.closed = True
            raise ConnectionClosed("closed by the server")
        self.unpacker.feed(data)

    def _read_one(self, deadline):
        while True:
            try:
                m = next(self.unpacker)
            except StopIteration:
                self._fill(deadline)
                continue
            if is_response(m):
                self.arrival.append(m[1])
            return m

    def recv_msg(self, timeout=None):
        """The next message not yet claimed, in arrival order."""
        if self.inbox:
            return self.inbox.popleft()
        return self._read_one(time.monotonic() + (self.timeout if timeout is None else timeout))

    def recv_all(self, timeout=1.0):
        """Every message until the connection closes or `timeout` passes
        without one; returns (messages, closed)."""
        out = list(self.inbox)
        self.inbox.clear()
        while True:
            try:
                out.append(self._read_one(time.monotonic() + timeout))
            except TimeoutError:
                return out, False
            except ConnectionClosed:
                return out, True

    # -- RPC -----------------------------------------------------------------

    def next_id(self):
        return next(self.ids) & 0xFFFFFFFF

    def _wait_response(self, msgid, deadline):
        for i, m in enumerate(self.inbox):
            if is_response(m) and m[1] == msgid:
                del self.inbox[i]
                return m
        while True:
            m = self._read_one(deadline)
            if is_response(m) and m[1] == msgid:
                return m
            self.inbox.append(m)

    def call(self, method, _args=None, *, _timeout=None, **args):
        """Result of method(args); raises RpcError on an error reply.
        Args go as keywords, or as a dict in _args; no args sends []."""
        merged = dict(_args or {})
        merged.update(args)
        return self.call_params(method, [merged] if merged else [], timeout=_timeout)

    def call_params(self, method, params, timeout=None):
        msgid = self.next_id()
        self.send_raw(request(msgid, method, params))
        m = self._wait_response(msgid, time.monotonic() + (timeout or self.timeout))
        if m[2] is not None:
            raise RpcError.from_error(m[2], msgid)
        return m[3]

    def pipeline(self, calls, timeout=None):
        """Sends every (method, args) of calls in one write, then pairs the
        replies by msgid. Returns one entry per call, in call order: the
        result, or an RpcError instance (not raised)."""
        ids, chunks = [], []
        for method, args in calls:
            msgid = self.next_id()
            ids.append(msgid)
            chunks.append(request(msgid, method, [args] if args else []))
        self.send_raw(b"".join(chunks))
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        for msgid in ids:
            m = self._wait_response(msgid, deadline)
            out.append(RpcError.from_error(m[2], msgid) if m[2] is not None else m[3])
        return out

    def notification(self, topic=None, timeout=None):
        """The next notification (optionally on topic) as (topic, params)."""
        for i, m in enumerate(self.inbox):
            if is_notification(m) and (topic is None or m[1] == topic):
                del self.inbox[i]
                return m[1], m[2]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            m = self._read_one(deadline)
            if is_notification(m) and (topic is None or m[1] == topic):
                return m[1], m[2]
            self.inbox.append(m)

    def notifications(self):
        """Notifications already read, removed from the inbox."""
        out = [m for m in self.inbox if is_notification(m)]
        self.inbox = collections.deque(m for m in self.inbox if not is_notification(m))
        return out

    def is_closed(self, timeout=2.0):
        """True once the server closed or reset the connection within
        timeout; messages arriving meanwhile are kept in the inbox."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.inbox.append(self._read_one(deadline))
            except TimeoutError:
                return False
            except ConnectionClosed:
                return True


def same_recs(a, b, rel=1e-6):
    """Two recommendation lists agree: the same items, sources and reasons in the same
    order, scores equal to `rel` (time-decayed sources move scores between two calls
    a millisecond apart)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if {k: v for k, v in x.items() if k != "score"} != {k: v for k, v in y.items() if k != "score"}:
            return False
        if not math.isclose(x["score"], y["score"], rel_tol=rel, abs_tol=1e-12):
            return False
    return True


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def cli(*args, input=None, timeout=30, port=None):
    """Runs sextant-cli; returns the CompletedProcess (text mode)."""
    argv = [env_path("SX_CLI")]
    if port is not None:
        argv += ["--port", str(port)]
    return subprocess.run(argv + [str(a) for a in args], input=input, capture_output=True,
                          text=True, timeout=timeout)


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def tcp_state(sock):
    """(state, send queue bytes, receive queue bytes) of our end of an IPv4
    socket, from /proc/net/tcp, without reading from it; None if gone."""
    port = sock.getsockname()[1]
    peer = sock.getpeername()[1]
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, st, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer:
                tx, rx = (int(x, 16) for x in queues.split(":"))
                return TCP_STATES.get(int(st, 16), st), tx, rx
    return None


def socket_open(sock):
    """False if the peer has closed or reset sock (without consuming data)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return True
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError as e:
        if e.errno in (errno.EAGAIN,):
            return True
        return False
