#!/usr/bin/env bash
# Idempotent: make sure a Debian bookworm base image exists in the local engine.
# Usage: make-base-image.sh [IMAGE] [ARCH]   (default: linkedge/debian-base:bookworm, the
# host's Debian architecture; ARCH arm64 on an x86_64 host runs debootstrap's second stage
# under QEMU, set up by ensure-binfmt.sh beside this script).
# Tries `docker pull debian:bookworm-slim` first when online (the host's architecture only);
# otherwise builds one with debootstrap (minbase) and `docker import`, which needs only
# Debian's package mirror. The image's config names ARCH (`docker import --platform`).
set -euo pipefail

image="${1:-linkedge/debian-base:bookworm}"
host_arch=$(dpkg --print-architecture 2>/dev/null || { [ "$(uname -m)" = aarch64 ] && echo arm64 || echo amd64; })
arch="${2:-$host_arch}"
suite="${LINKEDGE_BASE_SUITE:-bookworm}"
mirror="${LINKEDGE_DEBIAN_MIRROR:-}"
log() { printf '[ensure-base-image] %s\n' "$*" >&2; }

if [ "$(docker image inspect -f '{{.Architecture}}' "$image" 2>/dev/null)" = "$arch" ]; then
  exit 0
fi

if [ "$arch" != "$host_arch" ]; then
  bash "$(dirname "$0")/ensure-binfmt.sh" \
    || { log "cannot build a $arch base on this $host_arch host without emulation"; exit 3; }
elif [ "${LINKEDGE_TRY_PULL:-1}" = 1 ] && timeout 20 docker pull -q "debian:${suite}-slim" >/dev/null 2>&1; then
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
log "debootstrap --arch=$arch --variant=minbase $suite from $mirror"
debootstrap --arch="$arch" --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/linkedge-debootstrap.log 2>&1 || {
  tail -n 20 /tmp/linkedge-debootstrap.log >&2
  exit 1
}
# Same trims as the official slim images: no apt lists, no docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import --platform "linux/$arch" -c 'CMD ["bash"]' - "$image" >/dev/null
# An engine without multi-platform support records its own architecture whatever --platform
# says: the builder then rewrites the config (inference_image/image/architecture.py).
log "built $image for $arch ($(docker image inspect -f '{{.Size}}' "$image") bytes; config says $(docker image inspect -f '{{.Architecture}}' "$image"))"
