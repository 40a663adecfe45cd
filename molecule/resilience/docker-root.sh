#!/usr/bin/env bash
# The simulated truck's disk for the resilience scenario: a size-limited tmpfs on the host,
# bind-mounted as the truck's /var/lib/docker (see molecule.yml). It survives `docker kill` +
# `docker start` of the truck (a power cut keeps the disk), is small enough to be filled in a
# test without touching the host's disk, and the nested engine's overlay2 works on it.
#   bash docker-root.sh mount    # idempotent: mounts when not mounted yet
#   bash docker-root.sh umount   # after the truck is destroyed
set -euo pipefail
DIR="${LINKEDGE_RESILIENCE_DOCKER_ROOT:-/var/lib/linkedge-resilience/truck-docker}"
SIZE="${LINKEDGE_RESILIENCE_DOCKER_ROOT_SIZE:-1200m}"
case "${1:-mount}" in
  mount)
    mkdir -p "$DIR"
    if ! mountpoint -q "$DIR"; then
      mount -t tmpfs -o "size=$SIZE,mode=0711" linkedge-resilience "$DIR"
    fi
    df -h "$DIR" | tail -1 >&2
    ;;
  umount)
    if mountpoint -q "$DIR"; then
      umount "$DIR" 2>/dev/null || umount --lazy "$DIR"
    fi
    ;;
  *)
    echo "usage: $0 mount|umount" >&2
    exit 2
    ;;
esac
