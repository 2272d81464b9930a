"""Issue 8's systematic sweep: RELIABILITY.md's bad inputs applied to every built-in method.

The methods come from the server itself (server.methods), their argument names from
docs/API.md. Each method gets: an unknown extra field; no arguments; every documented
argument filled with a plausible value, then each argument in turn replaced by a hostile
value (wrong types, empty and huge strings, NaN and infinities, integer extremes, long
arrays, deep maps, binary and extension values). Every reply must come back within the
timeout with a result or an error whose code is in docs/API.md's table (never `internal`),
and the server must stay up, with a clean sanitizer log at the end.
"""
import math
import os
import re

import msgpack
import pytest

from sxtest import RpcError, Server

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "..", "docs", "API.md")

# Names in the argument column of docs/API.md that are not argument names.
NOT_ARGS = {"true", "false", "nil", "or", "and", "the", "a", "an", "of", "to", "default",
            "with", "in", "by", "is", "per", "each", "at", "as", "if", "for", "ms", "none"}

NUMERIC = re.compile(r"^(n|k|limit|from|to|horizon|folds|size|users|days|seed|version|weight|"
                     r"min_risk|level|season|offset|threshold|periods|window_ms|after|before|"
                     r"time|ts|traffic|holdout|baseline|mde|alpha|power|max|min|count|id|job|"
                     r"page|cursor|sample|rate|budget|timeout_ms|interval_ms)$")


def documented_codes():
    text = open(API).read()
    section = text[text.index("## Errors"):]
    section = section[:section.index("\n## ", 5)]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def documented_args():
    """{method: [argument names]} from the method tables of docs/API.md."""
    out = {}
    for line in open(API):
        m = re.match(r"^\| `([a-z_]+\.[a-z_.]+|[a-z_]+)` \| ([a-z][^|]*) \| (.*?[^\\]) \|", line)
        if not m:
            continue
        names = []
        for tok in re.findall(r"\b([a-z_][a-z0-9_]*)\b", re.sub(r"\(.*?\)|\".*?\"", "", m.group(3))):
            if tok not in NOT_ARGS and tok not in names:
                names.append(tok)
        out.setdefault(m.group(1), names[:12])
    return out


# Ids that exist once the demo data is loaded, so that checks past the look-ups run too.
KNOWN = {"user": "u0000001", "item": "dest:algarve", "event": "view", "name": "overview",
         "kind": "destination", "format": "json", "what": "events", "type": "logistic",
         "target": "churn", "window": "day", "period": "week", "interval": "hour"}


def plausible(name):
    if name in KNOWN:
        return KNOWN[name]
    return 1 if NUMERIC.match(name) else "x"


def deep(n):
    v = 1
    for _ in range(n):
        v = {"a": v}
    return v


HOSTILE = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -1e308, 1e308,
    math.nan, math.inf, -math.inf, "", "x" * 200_000, "\u00e9\u4e2d\U0001F600", "a\x00b",
    b"\xff\xfe\x00", [], [None] * 3, list(range(20_000)), ["x"] * 1000, {}, {"": None},
    {"x": math.nan}, deep(20), msgpack.ExtType(5, b"abc"),
]


def check(c, codes, method, args, seen):
    try:
        c.call(method, args, _timeout=30)
        seen["ok"] += 1
    except RpcError as e:
        assert e.code in codes, f"{method}({short(args)}): undocumented code {e.code}: {e.message}"
        assert e.code != "internal", f"{method}({short(args)}): {e.message}"
        assert e.message, f"{method}({short(args)}): an error without a message"
        seen[e.code] = seen.get(e.code, 0) + 1


def short(args):
    return repr(args)[:120]


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        s.client().call("demo.load", users=50, days=5, seed=1)
        yield s


def test_every_method_rejects_an_unknown_field(server):
    c = server.client()
    methods = c.call("server.methods")
    assert len(methods) > 90
    for m in methods:
        with pytest.raises(RpcError) as e:
            c.call(m["name"], {"zz_not_an_argument": 1}, _timeout=30)
        assert e.value.code == "invalid_argument", (m["name"], e.value)


def test_every_method_survives_hostile_arguments(server):
    codes = documented_codes()
    assert {"invalid_argument", "not_found", "internal"} <= codes
    docs = documented_args()
    c = server.client()
    methods = [m["name"] for m in c.call("server.methods")]
    undocumented = [m for m in methods if m not in docs]
    assert not undocumented, f"methods missing from docs/API.md: {undocumented}"
    seen = {"ok": 0}
    for name in methods:
        args = docs[name]
        check(c, codes, name, {}, seen)
        base = {a: plausible(a) for a in args}
        check(c, codes, name, base, seen)
        for a in args:
            for bad in HOSTILE:
                check(c, codes, name, dict(base, **{a: bad}), seen)
        assert c.call("ping") == "pong", f"the server stopped answering after {name}"
    # The sweep reached validation deep inside the methods, not only the first check.
    assert seen.get("invalid_argument", 0) > 1000, seen
    assert server.alive()
