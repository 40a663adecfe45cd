#!/usr/bin/env bash
# Idempotent: Debian packages the tests drive for real (a local registry for the push test, the
# Mosquitto broker and clients the mqtt_passwd module tests start and connect to, nginx as the
# depot of the pull-mode and depot-load tests, Prometheus and promtool for the fleet's alert
# rules, Chromium to render the fleet report).
set -euo pipefail
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
{ [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; } || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Debian's Docker SDK (5.0.3): the module tests also run against the SDK trucks really have.
/usr/bin/python3 -c 'import docker' 2>/dev/null || missing+=(python3-docker)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[ensure-test-tools] installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
