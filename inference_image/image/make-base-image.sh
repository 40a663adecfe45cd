#!/usr/bin/env bash
# Idempotent: make sure a Debian bookworm base image exists in the local engine.
# Usage: ensure-base-image.sh [IMAGE]   (default: linkedge/debian-base:bookworm)
# Tries `docker pull debian:bookworm-slim` first when online; otherwise builds one with
# debootstrap (minbase) and `docker import`, which needs only Debian's package mirror.
set -euo pipefail

image="${1:-linkedge/debian-base:bookworm}"
suite="${LINKEDGE_BASE_SUITE:-bookworm}"
mirror="${LINKEDGE_DEBIAN_MIRROR:-}"
log() { printf '[ensure-base-image] %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

if [ "${LINKEDGE_TRY_PULL:-1}" = 1 ] && timeout 20 docker pull -q "debian:${suite}-slim" >/dev/null 2>&1; then
  docker tag "debian:${suite}-slim" "$image"
  log "tagged debian:${suite}-slim as $image"
  exit 0
fi

if [ -z "$mirror" ]; then
  # Reuse the host's own Debian mirror so this works wherever apt works.
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -vE '^\s*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

command -v debootstrap >/dev/null 2>&1 || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

rootfs=$(mktemp -d /tmp/linkedge-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/linkedge-debootstrap.log 2>&1 || {
  tail -n 20 /tmp/linkedge-debootstrap.log >&2
  exit 1
}
# Same trims as the official slim images: no apt lists, no docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$image" >/dev/null
log "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
