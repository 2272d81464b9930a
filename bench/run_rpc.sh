#!/bin/sh
# The issue-2 benchmark: ping and a read-modify-write counter script over 50 connections at
# pipeline depth 1 and 16, Sextant (durability relaxed and full) against redis-server without
# persistence (PING, and the same logic as a Lua script through EVALSHA), in one run. For
# ping, bench_floor (bench/floor.c: an epoll loop that only answers ping) gives the machine's
# floor: what reading and writing the sockets alone allows any server.
#   sh bench/run_rpc.sh [BUILD_DIR] [SECONDS]
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
SECS=${2:-5}
cmake --build "$B" --target sextant bench_rpc bench_floor -j2 >/dev/null
TMP=$(mktemp -d)
PIDS=""
trap 'kill $PIDS 2>/dev/null; rm -rf "$TMP"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RP=$(port)
redis-server --port "$RP" --save "" --appendonly no --daemonize no --logfile "$TMP/redis.log" >/dev/null 2>&1 &
PIDS="$PIDS $!"
start_sextant() { # durability port
	mkdir -p "$TMP/$1/scripts/methods"
	cp scripts/methods/counter.lua "$TMP/$1/scripts/methods/"
	"$B/sextant" --listen 127.0.0.1:$2 --data-dir "$TMP/$1/data" --scripts-dir "$TMP/$1/scripts" \
		--durability "$1" --log-level warn >/dev/null 2>"$TMP/$1.log" &
	PIDS="$PIDS $!"
}
FP=$(port)
"$B/bench_floor" "$FP" &
PIDS="$PIDS $!"
SR=$(port)
SF=$(port)
start_sextant relaxed "$SR"
start_sextant full "$SF"
sleep 1
run() { "$B/bench_rpc" --proto "$1" --port "$2" --op "$3" --depth "$4" --conns 50 --seconds "$SECS"; }
echo "| op | depth | redis rps | floor rps (ratio) | sextant relaxed rps | ratio | sextant full rps | redis p50/p99 us | relaxed p50/p99 us | full p50/p99 us |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for op in ping counter; do
	for d in 1 16; do
		r=$(run redis "$RP" $op $d)
		fl=null
		[ $op = ping ] && fl=$(run sextant "$FP" $op $d)
		s=$(run sextant "$SR" $op $d)
		f=$(run sextant "$SF" $op $d)
		/usr/bin/python3 - "$op" "$d" "$r" "$fl" "$s" "$f" <<'PY'
import json, sys
op, d, r, fl, s, f = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
bad = [x for x in (r, fl, s, f) if x and x["errors"]]
if bad:  # error replies are fast: a run with any is not a measurement
    sys.exit(f"{op} depth {d}: error replies: {bad}")
floor = f"{fl['rps']:.0f} ({fl['rps']/r['rps']:.2f})" if fl else "—"
print(f"| {op} | {d} | {r['rps']:.0f} | {floor} | {s['rps']:.0f} | {s['rps']/r['rps']:.2f} | {f['rps']:.0f} | "
      f"{r['p50_us']}/{r['p99_us']} | {s['p50_us']}/{s['p99_us']} | {f['p50_us']}/{f['p99_us']} |")
PY
	done
done
