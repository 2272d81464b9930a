#!/bin/sh
# Installs what Sextant needs, builds it, and starts the engine on ./data with the default
# scripts (and the demo data, once the events service provides it). Ctrl-C stops it.
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
MSG
exec build/sextant --listen 127.0.0.1:7878 --data-dir ./data --scripts-dir ./scripts "$@"
