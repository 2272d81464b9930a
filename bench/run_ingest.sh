#!/bin/sh
# The issue-3 ingest benchmark with the C load generator: events.track batches of 1,000
# events over 4 connections (2 batches in flight each), durability relaxed and full, a fresh
# server per run; events/s (accepted) and the store's bytes per event (used_bytes / events).
# The same frames sent to `ping` give the ceiling of client, transport and frame decoding.
# With PEER_BUILD, that build's server runs each case too, interleaved (before/after).
#   sh bench/run_ingest.sh [BUILD_DIR] [SECONDS] [RUNS] [PEER_BUILD]
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
SECS=${2:-5}
RUNS=${3:-3}
PEER=${4:-}
cmake --build "$B" --target sextant bench_rpc -j2 >/dev/null
TMP=$(mktemp -d)
SP=""
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf "$TMP"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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
one() { # bin durability method -> "events_per_s bytes_per_event"
	P=$(port)
	rm -rf "$TMP/data"
	mkdir -p "$TMP/scripts"
	"$1/sextant" --listen 127.0.0.1:$P --data-dir "$TMP/data" --scripts-dir "$TMP/scripts" \
		--durability "$2" --log-level warn >/dev/null 2>"$TMP/log" &
	SP=$!
	sleep 0.7
	r=$("$B/bench_rpc" --proto sextant --op track --method "$3" --port $P --conns 4 --depth 2 --seconds "$SECS")
	u=$(used_bytes $P)
	kill $SP
	wait $SP 2>/dev/null || true
	SP=""
	/usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); e=r["events_per_s"]; print(round(e), round(int(sys.argv[2])/(e*float(sys.argv[3]))) if e else 0)' "$r" "$u" "$SECS"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| server | durability | method | runs (events/s) | median events/s | store bytes/event (median) |"
echo "|---|---|---|---|---|---|"
for d in relaxed full; do
	for m in events.track ping; do
		[ $m = ping ] && [ $d = full ] && continue
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
			[ $m = ping ] && bpe="—"
			echo "| $bin | $d | $m | $runs| $med | $bpe |"
		done
	done
done
