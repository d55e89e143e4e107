#!/usr/bin/env bash
# Counts the system calls of one proxy relaying SSE token streams: the
# release gateway (or nginx, `proxy_buffering off`) pinned to core 1 in
# front of the bench's simulator (core 0), 200 streams of 20 × 5 ms tokens
# at 2.5 streams/s per session (≈ 10,000 events/s), `strace -c -f` on the
# proxy for 4 s of it. Made the strace figures of
# bench/results/sse-relay/README.md.
#
#   cargo build --release -p agentmux -p agentmux-bench
#   bench/profile/syscalls.sh agentmux|nginx [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
who=${1:?agentmux or nginx}
out=${2:-$root/bench/results/tmp/syscalls}
mkdir -p "$out"
out=$(cd "$out" && pwd)
B=$root/target/release/agentmux-bench
cd "$out"
taskset -c 0 $B upstream --listen 127.0.0.1:19000 > up.log 2>&1 &
UP=$!
if [ "$who" = nginx ]; then
  cat > nginx.conf <<NG
worker_processes 1; daemon off; pid $out/nginx.pid; error_log $out/nginx-error.log warn; user root;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $out/b; proxy_temp_path $out/p; fastcgi_temp_path $out/f; uwsgi_temp_path $out/u; scgi_temp_path $out/s;
  upstream backend { server 127.0.0.1:19000; keepalive 64; }
  server { listen 127.0.0.1:19010; location / { proxy_pass http://backend; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; } } }
NG
  taskset -c 1 nginx -c "$out/nginx.conf" &
  sleep 1
  P=$(pgrep -f "nginx: worker")
else
  cat > am.toml <<TOML
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
cluster = "upstream"
[clusters.upstream]
endpoints = ["127.0.0.1:19000"]
TOML
  taskset -c 1 "$root/target/release/agentmux" run --config am.toml > am.log 2>&1 &
  sleep 1.5
  P=$!
fi
taskset -c 0 $B load --protocol sse 'http://127.0.0.1:19010/sse?tokens=20&delay_ms=5' -s 200 --rate 2.5 -d 7s -q > "load-$who.txt" 2>&1 &
L=$!
sleep 2
timeout 4 strace -c -f -p "$P" -o "strace-$who.txt" || true
wait $L
if [ "$who" = nginx ]; then kill "$(cat "$out/nginx.pid")"; else kill "$P"; fi
kill $UP
wait 2>/dev/null || true
grep -E "^throughput" "load-$who.txt"
head -8 "strace-$who.txt"
