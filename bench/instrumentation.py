#!/usr/bin/env python3
"""Instrumentation overhead of the WebSocket relay (issue 6).

Runs the release gateway pinned to one core in front of the bench's echo
simulator twice per round, alternating:

  on:  message metrics on, OTLP tracing on (sampling 1%) to a local sink,
       access log on
  off: message metrics off, no tracing, no access log

and the same fixed-rate WebSocket load each time. CPU time of the gateway
process (utime + stime from /proc) per relayed message is compared; the
rounds alternate so machine noise hits both sides alike.

    cargo build --release -p agentmux -p agentmux-bench
    python3 bench/instrumentation.py --rounds 3 --rate 200 --sessions 50 --duration 10

Figures are ratios on a shared machine; see bench/README.md.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "agentmux-bench")
GATEWAY = os.path.join(ROOT, "target", "release", "agentmux")
TICK = os.sysconf("SC_CLK_TCK")

CONFIG = """
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
worker_threads = 1
[[listeners]]
listen = "127.0.0.1:{port}"
[[routes]]
name = "bench"
mode = "websocket"
cluster = "up"
[clusters.up]
endpoints = ["127.0.0.1:{upstream}"]
[clusters.up.pool]
min_connections = 8
max_connections = 2000
[analytics]
enabled = false
{extra}
"""

# What the "on" arm turns on, by part (`--parts` picks; all by default).
PARTS = {
    "metrics": "message_metrics = true\n",
    "tracing": 'otlp_endpoint = "http://127.0.0.1:{upstream}"\nsampling_ratio = 0.01\n',
    "access": None,  # the [log] table below
}

OFF = """
[telemetry]
message_metrics = false
"""


def on_config(parts):
    text = "\n[telemetry]\n"
    text += PARTS["metrics"] if "metrics" in parts else "message_metrics = false\n"
    if "tracing" in parts:
        text += PARTS["tracing"]
    if "access" in parts:
        text += '[log]\naccess_log = true\nlevel = "warn,access=info"\n'
    return text


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, limit=20):
    import socket

    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def run_once(mode, args, upstream, port, admin, workdir):
    extra = (on_config(args.parts) if mode == "on" else OFF).format(upstream=upstream)
    path = os.path.join(workdir, f"{mode}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(admin=admin, port=port, upstream=upstream, extra=extra))
    log = open(os.path.join(workdir, f"{mode}.log"), "a")
    gw = subprocess.Popen(
        ["taskset", "-c", str(args.core), GATEWAY, "run", "--config", path],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_port(port)
        time.sleep(1.0)
        before = cpu_seconds(gw.pid)
        out = subprocess.run(
            [
                "taskset", "-c", str(args.load_core), BENCH, "load", f"ws://127.0.0.1:{port}/ws",
                "--sessions", str(args.sessions), "--rate", str(args.rate),
                "--duration", f"{args.duration}s", "--json", "-q",
            ],
            check=True, capture_output=True, text=True,
        )
        after = cpu_seconds(gw.pid)
        report = json.loads(out.stdout)
        relayed = report["messages"]["received"] * 2  # each echo crosses the gateway twice
        return (after - before) * 1e6 / max(relayed, 1), report["messages"]["mismatched"]
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--rate", type=float, default=200.0, help="messages/s per session")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--core", type=int, default=1, help="core the gateway is pinned to")
    p.add_argument("--load-core", type=int, default=0)
    p.add_argument("--out", default=None, help="write a JSON report here")
    p.add_argument(
        "--parts", default="metrics,tracing,access",
        help="what the 'on' arm turns on: comma-separated metrics, tracing, access (default all)",
    )
    args = p.parse_args()
    args.parts = [x for x in args.parts.split(",") if x]
    for part in args.parts:
        if part not in PARTS:
            p.error(f"--parts: unknown part {part!r} (expected metrics, tracing, access)")
    for exe in (BENCH, GATEWAY):
        if not os.path.exists(exe):
            sys.exit(f"{exe} missing: cargo build --release -p agentmux -p agentmux-bench")
    upstream, port, admin = 28080, 28443, 29901
    sim = subprocess.Popen(
        ["taskset", "-c", str(args.load_core), BENCH, "upstream", "--listen", f"127.0.0.1:{upstream}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    results = {"on": [], "off": []}
    try:
        wait_port(upstream)
        with tempfile.TemporaryDirectory() as workdir:
            for r in range(args.rounds):
                for mode in ("off", "on") if r % 2 else ("on", "off"):
                    us, bad = run_once(mode, args, upstream, port, admin, workdir)
                    if bad:
                        sys.exit(f"{bad} mismatched echoes in mode {mode}")
                    results[mode].append(us)
                    print(f"round {r + 1} {mode:>3}: {us:.2f} µs CPU per relayed message", flush=True)
    finally:
        sim.terminate()
    on = sum(results["on"]) / len(results["on"])
    off = sum(results["off"]) / len(results["off"])
    print()
    print("| instrumentation | CPU µs per relayed message (mean of %d) |" % args.rounds)
    print("|---|---:|")
    print(f"| off | {off:.2f} |")
    label = {"metrics": "metrics", "tracing": "tracing 1%", "access": "access log"}
    print(f"| on ({', '.join(label[x] for x in args.parts)}) | {on:.2f} |")
    print(f"| overhead (ratio of means) | {100 * (on / off - 1):+.1f}% |")
    # Each round ran both arms back to back: the median of the per-round
    # ratios is less sensitive to the machine drifting between rounds.
    ratios = sorted(a / b for a, b in zip(results["on"], results["off"]))
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    print(f"| overhead (median of per-round ratios) | {100 * (median - 1):+.1f}% |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "on": results["on"],
                    "off": results["off"],
                    "overhead": on / off - 1,
                    "median_round_overhead": median - 1,
                },
                f,
                indent=2,
            )

if __name__ == "__main__":
    main()
