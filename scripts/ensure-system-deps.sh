#!/usr/bin/env bash
# Installs the real servers the test suite talks to (VictoriaMetrics, Prometheus/promtool) from Debian
# packages when they are missing and we are root. Otherwise it says what is missing; the tests that need
# them are then skipped locally and fail under CI=true.
set -euo pipefail
missing=()
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian packages start their daemons via systemd where there is one; the tests start their own.
    exit 0
fi
echo "Missing system packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})" >&2
exit 0
