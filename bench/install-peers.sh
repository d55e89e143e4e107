#!/usr/bin/env bash
# Installs the peers `agentmux-bench compare` measures against (nginx,
# haproxy) and wrk, from Debian's packages, and makes sure the system
# services they ship are stopped: compare runs its own instances with
# generated configs, pinned to one core, and a system nginx on port 80
# would only add noise.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nginx haproxy wrk util-linux

for service in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        $SUDO systemctl stop "$service" || true
    elif command -v service >/dev/null 2>&1; then
        $SUDO service "$service" stop >/dev/null 2>&1 || true
    fi
done

nginx -v
haproxy -v | head -n 1
command -v wrk
command -v taskset
