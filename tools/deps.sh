#!/bin/sh
# Installs the Debian 12 packages Sextant needs to build, test and benchmark.
set -eu
PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev
libuv1-dev libmsgpack-dev liblmdb-dev lmdb-utils libluajit-5.1-dev luajit
libopenblas-dev liblapacke-dev libroaring-dev libxxhash-dev libjansson-dev
libxlsxwriter-dev libsodium-dev libcmocka-dev lua-busted
python3 python3-pytest python3-msgpack python3-numpy python3-scipy python3-sklearn
python3-statsmodels python3-pandas python3-hnswlib python3-faiss python3-openpyxl redis-server sqlite3"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
