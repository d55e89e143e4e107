#!/usr/bin/env bash
# Profiles the gateway's HTTP path: the release gateway (one worker, core 1)
# in front of the bench's HTTP echo (core 0), wrk -c64 keep-alive GETs,
# `perf record --call-graph dwarf` on the gateway for 6 s; then a flame
# graph (inferno: `cargo install inferno`) and the breakdown of
# breakdown.py. Made bench/results/profiles/http-*.svg and the table in
# bench/results/http-path/README.md.
#
# With LOAD=sse the load is 200 concurrent SSE token streams instead (the
# bench's own client, 20 events of 5 ms each per stream): the SSE relay.
#
#   cargo build --release -p agentmux -p agentmux-bench
#   bench/profile/http.sh [OUT_DIR]        # BIN=path/to/agentmux to profile another build
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/bench/results/tmp/profile}
mkdir -p "$out"
BIN=${BIN:-$root/target/release/agentmux}
B=$root/target/release/agentmux-bench
cat > "$out/am.toml" <<TOML
[admin]
listen = "127.0.0.1:19011"
[runtime]
worker_threads = 1
[[listeners]]
name = "bench"
listen = "127.0.0.1:19010"
max_connections = 20000
[[routes]]
name = "bench"
match = { path_prefix = "/" }
mode = "http"
cluster = "upstream"
[clusters.upstream]
endpoints = ["127.0.0.1:19000"]
TOML
cd "$out"
taskset -c 0 $B upstream --listen 127.0.0.1:19000 > up.log 2>&1 &
UP=$!
taskset -c 1 $BIN run --config am.toml > am.log 2>&1 &
AM=$!
sleep 1.5
load() {
  case ${LOAD:-http} in
    sse) taskset -c 0 $B load --protocol sse 'http://127.0.0.1:19010/sse?tokens=20&delay_ms=5' -s 200 -d "$1" -q ;;
    *) taskset -c 0 wrk -t1 -c64 -d"$1" http://127.0.0.1:19010/ ;;
  esac
}
title="agentmux HTTP/1.1 keep-alive (wrk -c64)"
[ "${LOAD:-http}" = sse ] && title="agentmux SSE relay (200 streams, 20 × 5 ms tokens)"
load 3s > /dev/null
perf record -F 1999 --call-graph dwarf,16384 -p $AM -o perf.data -- sleep 6 > perf.log 2>&1 &
PR=$!
load 8s | tee wrk.txt
wait $PR
kill $AM $UP; wait || true
perf script -i perf.data > perf.txt 2>/dev/null
inferno-collapse-perf perf.txt > perf.folded
inferno-flamegraph --title "$title" perf.folded > "${LOAD:-http}.svg"
python3 "$root/bench/profile/breakdown.py" perf.txt
