#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (run from anywhere).

frame:   valid and broken MessagePack-RPC frames.
lua:     scripts (valid ones of each shape, and some of RELIABILITY.md's L section).
methods: "METHOD\\0" + a MessagePack argument map, for fuzz_methods.
"""
import os
import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pk(o):
    return msgpack.packb(o, use_bin_type=True)


frames = {
    "ping": pk([0, 1, "ping", []]),
    "notify": pk([2, "ping", []]),
    "track": pk([0, 7, "events.track", [{"user": "u1", "name": "view", "time": 1700000000000,
                                          "properties": {"value": 1.5, "tags": ["a", "b"]}}]]),
    "nested": pk([0, 2, "x", [{"a": [[[{"b": None}]]], "f": 1.0, "n": -3, "bin": b"\x00\x01"}]]),
    "two_frames": pk([0, 1, "ping", []]) + pk([0, 2, "ping", [None]]),
    "ext": pk([0, 3, "y", [{"e": msgpack.ExtType(5, b"abcd")}]]),
    "truncated": bytes.fromhex("9400 01a4 7069"),
    "huge_len": bytes.fromhex("dd ff 00 00 00"),
    "reserved": bytes.fromhex("c1"),
    "deep": b"\x91" * 80 + b"\xc0",
    "f32": bytes.fromhex("94 00 05 a1 7a 91 81 a1 76 ca 7f c0 00 00"),
}
for k, v in frames.items():
    write("frame", k, v)

scripts = {
    "methods": b"local M = {}\nfunction M.hello(ctx, args) return {hi = args.name} end\nreturn M\n",
    "loops": b"local s = 0\nfor i = 1, 100 do s = s + i end\nwhile s > 0 do s = s - 1 end\n"
             b"repeat s = s + 1 until s > 3\nreturn s\n",
    "goto": b"for i = 1, 3 do\n  if i == 2 then goto continue end\n  ::continue::\nend\nreturn true\n",
    "runaway": b"while true do end\n",
    "pcall_loop": b"while true do pcall(function() while true do end end) end\n",
    "strings": b"local t = {}\nfor w in ('a b c'):gmatch('%a') do t[#t+1] = w end\n"
               b"return table.concat(t, ','):rep(3):upper()\n",
    "coroutine": b"local function f() coroutine.wrap(f)() end\nf()\n",
    "memory": b"local s = 'x'\nfor i = 1, 40 do s = s .. s end\nreturn s\n",
    "escape": b"return os.execute, io, require('ffi'), debug, string.dump, load\n",
    "long_string": b"local s = [==[\nmultiline ]] still\n]==]\n-- comment\n--[[ block\ncomment ]]\nreturn #s\n",
    "bytecode": b"\x1bLJ\x02\x00",
    "bom": b"\xef\xbb\xbf#!shebang\nreturn 1\n",
}
for k, v in scripts.items():
    write("lua", k, v)

calls = {
    "ping": ("ping", None),
    "info": ("server.info", {}),
    "users_put": ("users.put", {"id": "alice", "attributes": {"tier": "gold", "n": [1, 2]},
                                 "signup_time": 1700000000000}),
    "users_get": ("users.get", {"id": "alice"}),
    "users_events": ("users.events", {"id": "alice", "from": 0, "limit": 5}),
    "items_put": ("items.put", {"id": "d1", "kind": "destination", "attributes": {"country": "IT"},
                                 "vector": [0.5, -1.0, 3.25]}),
    "items_list": ("items.list", {"kind": "destination", "limit": 2}),
    "track_one": ("events.track", {"user": "alice", "name": "view", "item": "d1", "time": 1700000000000,
                                    "properties": {"value": 3, "device": "ios"}}),
    "track_batch": ("events.track", {"events": [{"user": "bob", "name": "book", "time": 1700000600000},
                                                 {"user": "", "name": 5}], "client_id": "c-1"}),
    "dims": ("metrics.dimensions", {"event": "view", "dimensions": ["device", "item.country", "user.tier"],
                                     "value": "value"}),
    "query": ("metrics.query", {"event": "view", "from": 1699990000000, "to": 1700090000000,
                                 "interval": "hour", "group_by": "device"}),
    "active": ("metrics.active", {"window": "week", "at": 1700000000000}),
    "funnel": ("funnel.query", {"steps": ["view", "book"], "from": 0, "to": 1800000000000,
                                 "group_by": "user.tier"}),
    "retention": ("cohort.retention", {"cohort_by": "day", "periods": 3, "from": 1699900000000,
                                        "to": 1700100000000}),
    "cohort_save": ("cohort.save", {"name": "gold", "rule": {"any": [{"attribute": {"name": "tier", "value": "gold"}},
                                                                      {"did": {"event": "view", "days": 3}}]}}),
    "cohort_users": ("cohort.users", {"name": "gold", "limit": 10}),
    "script_put": ("script.put", {"kind": "methods", "name": "demo",
                                   "source": "return {hi = function(ctx, a) return 1 end}"}),
    "script_list": ("script.list", {"kind": "methods"}),
    "job_status": ("job.status", {"id": 1}),
    "consent_set": ("consent.set", {"user": "alice", "purposes": {"analytics": False, "personalization": True},
                                     "source": "banner"}),
    "consent_get": ("consent.get", {"user": "alice"}),
    "erase": ("privacy.erase", {"user": "bob"}),
    "export": ("privacy.export", {"user": "alice"}),
    "audit": ("audit.query", {"from": 0, "action": "privacy.erase", "limit": 10}),
    "nil_args": ("users.get", None),
    "bad_types": ("items.put", {"id": 5, "kind": [], "vector": [float("nan")]}),
}
for k, (m, a) in calls.items():
    write("methods", k, m.encode() + b"\0" + (b"" if a is None and k == "ping" else pk(a)))
