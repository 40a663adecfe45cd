#!/usr/bin/env bash
# Idempotent: build the simulated-truck image (Debian 12, systemd as PID 1, no Docker) once.
# Rebuilt only when it is missing or this directory's Dockerfile changed (label
# io.linkedge.sim-truck.dockerfile-sha256). Needs only the local base image and a Debian mirror.
# Usage: bash molecule/resources/sim-truck/build.sh [IMAGE]   (default linkedge/sim-truck:bookworm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
image="${1:-${LINKEDGE_SIM_TRUCK_IMAGE:-linkedge/sim-truck:bookworm}}"
base="${LINKEDGE_SIM_TRUCK_BASE:-linkedge/debian-base:bookworm}"
log() { printf '[sim-truck] %s\n' "$*" >&2; }

# Every simulated truck's systemd (and its nested dockerd) takes inotify instances from the
# host's per-user limit, which all containers share (128 by default): the eight trucks make test's
# lanes run at once exhaust it (a truck's units fail with "Too many open files").
inotify=/proc/sys/fs/inotify/max_user_instances
if [ -r "$inotify" ] && [ "$(cat "$inotify")" -lt 1024 ]; then
  if echo 1024 >"$inotify" 2>/dev/null; then
    log "raised fs.inotify.max_user_instances to 1024 (simulated trucks' systemd)"
  else
    log "warning: fs.inotify.max_user_instances is $(cat "$inotify") and cannot be raised here: run fewer trucks at once"
  fi
fi

digest=$(sha256sum <"$here/Dockerfile" | cut -d" " -f1)
current=$(docker image inspect -f '{{ index .Config.Labels "io.linkedge.sim-truck.dockerfile-sha256" }}' "$image" 2>/dev/null || true)
if [ "$current" = "$digest" ]; then
  log "$image is up to date"
  exit 0
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  log "base image $base missing: building it"
  bash "$here/../../../inference_image/image/make-base-image.sh" "$base"
fi
log "building $image from $base"
docker build -q --build-arg "BASE_IMAGE=$base" \
  --label "io.linkedge.sim-truck.dockerfile-sha256=$digest" -t "$image" "$here" >/dev/null
log "built $image"
echo "changed"
