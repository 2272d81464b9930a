#!/bin/sh
# The issue-3 ingest benchmark with the C load generator: events.track batches of 1,000
# events over 4 connections (DEPTH batches in flight each), durability relaxed and full, a fresh
# server per run; events/s (accepted), the store's bytes per event (used_bytes / events) and
# the server's CPU time (user + system, all threads) per accepted event, which a machine
# shared with other work disturbs much less than events/s.
# The same frames sent to `ping` give the ceiling of client, transport and frame decoding.
# With PEER_BUILD, that build's server runs each case too, interleaved (before/after).
#   sh bench/run_ingest.sh [BUILD_DIR] [SECONDS] [RUNS] [PEER_BUILD] [MODES]
# MODES: which cases, default "relaxed ping full" (e.g. "relaxed" alone while iterating).
# SPREAD_MS=60000 in the environment: event times over the last minute instead of 24 h;
# DEPTH=8: 8 batches in flight per connection instead of 2.
# SESSION=6: events in user sessions of 6 on average (a platform's stream) instead of each
# event from a random user at a random time (bench_rpc --session).
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
SECS=${2:-5}
RUNS=${3:-3}
PEER=${4:-}
MODES=${5:-relaxed ping full}
# event times spread over the last SPREAD_MS (default 24 h; 60000: a live stream's last minute)
SPREAD_MS=${SPREAD_MS:-86400000}
# batches in flight per connection
DEPTH=${DEPTH:-2}
# mean events per user session
SESSION=${SESSION:-1}
cmake --build "$B" --target sextant bench_rpc -j2 >/dev/null
TMP=$(mktemp -d)
SP=""
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf "$TMP"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port: up to 10 s for the server to listen
	/usr/bin/python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("the server did not start")
PY
}
used_bytes() { # port
	/usr/bin/python3 - "$1" <<'PY'
import socket, sys, msgpack
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(msgpack.packb([0, 1, "server.info", []]))
u = msgpack.Unpacker(raw=False)
while True:
    u.feed(s.recv(1 << 16))
    for m in u:
        print(m[3]["store"]["used_bytes"])
        sys.exit(0)
PY
}
one() { # bin durability method -> "events_per_s bytes_per_event cpu_us_per_event"
	P=$(port)
	rm -rf "$TMP/data"
	mkdir -p "$TMP/scripts"
	"$1/sextant" --listen 127.0.0.1:$P --data-dir "$TMP/data" --scripts-dir "$TMP/scripts" \
		--durability "$2" --log-level warn >/dev/null 2>"$TMP/log" &
	SP=$!
	wait_port $P
	c0=$(cpu_ticks $SP)
	r=$("$B/bench_rpc" --proto sextant --op track --method "$3" --port $P --conns 4 --depth "$DEPTH" --seconds "$SECS" \
		--spread-ms "$SPREAD_MS" --session "$SESSION")
	c1=$(cpu_ticks $SP)
	u=$(used_bytes $P)
	kill $SP
	wait $SP 2>/dev/null || true
	SP=""
	/usr/bin/python3 -c 'import json,sys,os; r=json.loads(sys.argv[1]); e=r["events_per_s"]; s=float(sys.argv[3]); t=(int(sys.argv[5])-int(sys.argv[4]))/os.sysconf("SC_CLK_TCK"); print(round(e), round(int(sys.argv[2])/(e*s)) if e else 0, round(t*1e6/(e*s), 1) if e else 0)' "$r" "$u" "$SECS" "$c0" "$c1"
}
# user + system CPU ticks of a process so far (both threads: loop and store writer)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| server | durability | method | runs (events/s) | median events/s | store bytes/event (median) | server CPU µs/event (median) |"
echo "|---|---|---|---|---|---|---|"
for mode in $MODES; do
	d=$mode m=events.track
	[ $mode = ping ] && d=relaxed m=ping
	for m in $m; do
		: >"$TMP/a"; : >"$TMP/b"
		for i in $(seq "$RUNS"); do
			[ -n "$PEER" ] && one "$PEER" $d $m >>"$TMP/b"
			one "$B" $d $m >>"$TMP/a"
		done
		for x in a b; do
			[ $x = b ] && [ -z "$PEER" ] && continue
			bin=$B; [ $x = b ] && bin=$PEER
			runs=$(cut -d' ' -f1 "$TMP/$x" | tr '\n' ' ')
			med=$(cut -d' ' -f1 "$TMP/$x" | median)
			bpe=$(cut -d' ' -f2 "$TMP/$x" | median)
			cpe=$(cut -d' ' -f3 "$TMP/$x" | median)
			[ $m = ping ] && bpe="—"
			echo "| $bin | $d | $m | $runs| $med | $bpe | $cpe |"
		done
	done
done
