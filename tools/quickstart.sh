#!/bin/sh
# Installs what Sextant needs, builds it, and starts the engine on ./data with the default
# scripts and, on a new store, the demo data (2,000 travellers over 60 days). Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target sextant sextant-cli sextant_module >/dev/null
cat <<MSG
Sextant is starting on 127.0.0.1:7878 (data in ./data, scripts in ./scripts).
Try, in another terminal:
  build/sextant-cli ping
  build/sextant-cli counter.incr '{"key": "visits"}'
  build/sextant-cli server.info
  build/sextant-cli metrics.query "{\"event\": \"book\", \"from\": $(( ($(date +%s) - 7*86400) * 1000 )), \"to\": $(( $(date +%s) * 1000 )), \"interval\": \"day\"}"
  build/sextant-cli dashboard.render '{"name": "overview"}'
  build/sextant-cli recommend.items '{"user": "u0000001", "n": 5}'
  build/sextant-cli export '{"what": "funnel", "steps": ["search", "view", "create_trip", "book"], "from": 0, "to": 4102444800000, "format": "csv"}'
MSG
exec build/sextant --listen 127.0.0.1:7878 --data-dir ./data --scripts-dir ./scripts --demo true "$@"
