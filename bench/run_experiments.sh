#!/bin/sh
# The issue-7 benchmarks: experiment.assign over 50 pipelined connections with 20 running
# experiments (15 in 3 layers, all with Lua targeting), durability full and relaxed, new users
# (each assignment writes its exposure) and a warm pool (sticky reads); then the time of
# experiment.results with N exposed users and 5 metrics.
#   sh bench/run_experiments.sh [BUILD_DIR] [SECONDS] [RESULTS_USERS]
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
SECS=${2:-5}
NRES=${3:-100000}
cmake --build "$B" --target sextant bench_rpc -j2 >/dev/null
TMP=$(mktemp -d)
PIDS=""
trap 'kill $PIDS 2>/dev/null; rm -rf "$TMP"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_sextant() { # durability port
	mkdir -p "$TMP/$1/scripts/experiments"
	for i in $(seq 0 19); do
		if [ "$i" -lt 15 ]; then layer="layer = \"l$((i % 3))\","; else layer=""; fi
		cat >"$TMP/$1/scripts/experiments/x$i.lua" <<LUA
return {
  variants = { { name = "control" }, { name = "a" }, { name = "b", weight = 2 } },
  metrics = { { name = "buy", event = "purchase" } },
  stopping_rule = "none", autostart = true, $layer
  targeting = function(user, context) return context.country ~= "XX" end,
}
LUA
	done
	"$B/sextant" --listen 127.0.0.1:$2 --data-dir "$TMP/$1/data" --scripts-dir "$TMP/$1/scripts" \
		--durability "$1" --log-level warn >"$TMP/$1.out" 2>"$TMP/$1.log" &
	PIDS="$PIDS $!"
}
SF=$(port)
SR=$(port)
start_sextant full "$SF"
start_sextant relaxed "$SR"
sleep 1.5
run() { "$B/bench_rpc" --proto sextant --op assign --port "$1" --users "$2" --depth "$3" --conns 50 --seconds "$SECS"; }
echo "| durability | users | depth | assignments/s | p50 us | p99 us |"
echo "|---|---|---|---|---|---|"
for d in full relaxed; do
	if [ $d = full ]; then P=$SF; else P=$SR; fi
	for users in 0 100000; do
		for depth in 1 16; do
			r=$(run "$P" $users $depth)
			/usr/bin/python3 - $d "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
users = "new" if r["users"] == 0 else r["users"]
print(f"| {sys.argv[1]} | {users} | {r['depth']} | {r['rps']:.0f} | {r['p50_us']} | {r['p99_us']} |")
PY
		done
	done
done
/usr/bin/python3 bench/experiments_results.py "$SR" "$NRES"
