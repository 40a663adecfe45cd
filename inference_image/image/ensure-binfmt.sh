#!/usr/bin/env bash
# Idempotent: let this x86_64 host (and its Docker engine) run arm64 binaries under QEMU user
# emulation, for building and smoke-testing the arm64 serving image.
#
# Debian's qemu-user-static and binfmt-support; the binfmt_misc file system; the qemu-aarch64
# entry with the F flag (the kernel opens the interpreter once, so containers use it without a
# copy inside them). Exit 0 when the entry is registered (the arm64 base image's first
# container is the real proof that aarch64 code runs). Exit 3 with one line saying why when
# this machine refuses (the packages cannot be installed, no binfmt_misc, no right to mount or
# register it): the callers then skip arm64 with that reason instead of failing.
set -euo pipefail

log() { printf '[ensure-binfmt] %s\n' "$*" >&2; }
skip() {
  log "arm64 emulation is not available here: $*"
  exit 3
}

BINFMT=/proc/sys/fs/binfmt_misc
ENTRY=$BINFMT/qemu-aarch64

registered() {
  [ -r "$ENTRY" ] && grep -qx 'enabled' <(head -n1 "$ENTRY") && grep -q '^flags: .*F' "$ENTRY"
}

if [ "$(uname -m)" = aarch64 ]; then
  log "this host is aarch64: nothing to emulate"
  exit 0
fi

if ! registered; then
  if [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null 2>&1; then
    log "installing qemu-user-static and binfmt-support from the distribution's packages"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq qemu-user-static binfmt-support >/dev/null; } \
      || skip "qemu-user-static and binfmt-support could not be installed (not root, or no package mirror)"
  fi
  if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
      || skip "the kernel refuses to mount binfmt_misc on $BINFMT (not root, or a sandbox without it)"
  fi
  # The package's entry carries the F flag (fix-binary): the interpreter works in containers.
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
    || skip "update-binfmts could not register qemu-aarch64 (is $BINFMT writable here?)"
  registered || skip "qemu-aarch64 is registered without the F flag (another tool registered it: update-binfmts --disable qemu-aarch64, then run this again)"
fi

log "qemu-aarch64 registered (flags: $(sed -n 's/^flags: //p' "$ENTRY"))"
