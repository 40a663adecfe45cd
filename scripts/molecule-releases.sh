#!/usr/bin/env bash
# Build the small releases the Molecule scenarios ship to simulated trucks:
#   build/releases/v1  (30 boosting rounds)   build/releases/v2  (40 boosting rounds)
#   build/releases/v3  (50 boosting rounds; the pull scenario's third version, and the fleet
#                       scenario's mixed fleet: an amd64 and an arm64 image, one release)
# all signed with the development key build/keys/release-signing.key (created if missing).
# Each is an `inference_image export` directory (image archive, .sha256, model_card.json,
# manifest.json) plus the model bundle it was built from in <release>/bundle (the tests read the
# smoke vectors from there). Idempotent: a release whose manifest.json and archive are present,
# whose archive size matches and that was built from the current inference_image sources is
# kept as is; FORCE=1 rebuilds them all.
# Usage: bash scripts/molecule-releases.sh   (from the repository root; uses .venv when present)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
PYTHON="${PYTHON:-$BIN/python}"
[ -x "$PYTHON" ] || PYTHON=python3
RELEASES="${LINKEDGE_RELEASES_DIR:-build/releases}"
DATA="${LINKEDGE_DATA_DIR:-../shared/aps}"
IMAGE_NAME="${LINKEDGE_MOLECULE_IMAGE:-linkedge/aps-classifier}"
log() { printf '[molecule-releases] %s\n' "$*" >&2; }
cli() { "$PYTHON" -m inference_image "$@"; }

present() { # release dir [platform] -> 0 when complete (manifest.json, each archive of its
  # size, the bundle) and holding an image for the platform, when one is named
  "$PYTHON" -c 'import json, sys; from pathlib import Path
from inference_image.contract import architecture_named, release_images
from inference_image.release import release_present
release = Path(sys.argv[1])
ok = release_present(release, with_bundle=True, signed=False)
if ok and sys.argv[2:]:
    images = release_images(json.loads((release / "manifest.json").read_text()))
    ok = architecture_named(sys.argv[2]) in images
sys.exit(0 if ok else 1)' "$@"
}

# What the images are built from: a release built from other sources is stale (rebuilt).
SOURCES=$(find inference_image -type f \( -name '*.py' -o -name 'Dockerfile' -o -name '*.txt' -o -name '*.sh' \) \
  -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)

release() { # name n_estimators [extra platform, e.g. linux/arm64]
  local name="$1" rounds="$2" extra="${3:-}" out="$RELEASES/$1"
  if [ "${FORCE:-0}" != 1 ] && present "$out" ${extra:+"$extra"} \
     && [ "$(cat "$out/.sources-sha256" 2>/dev/null)" = "$SOURCES" ]; then
    log "$name: present ($out), skipped"
    return 0
  fi
  log "$name: train ($rounds rounds, no evaluation), build, export"
  mkdir -p "$RELEASES"
  work=$(mktemp -d "$RELEASES/.$name.XXXXXX")
  cli train --data "$DATA" --out "$work/bundle" --skip-evaluation --n-estimators "$rounds" >"$work/train.json"
  cli build --bundle "$work/bundle" --tag "$IMAGE_NAME:molecule-$name" --no-pull >"$work/build.json"
  local images=(--image "$IMAGE_NAME:molecule-$name")
  if [ -n "$extra" ]; then # the same bundle for another architecture (built under QEMU)
    local tag="$IMAGE_NAME:molecule-$name-${extra#linux/}"
    cli build --bundle "$work/bundle" --tag "$tag" --platform "$extra" --no-pull >"$work/build-${extra#linux/}.json"
    images+=(--image "$tag")
  fi
  cli export "${images[@]}" --out "$work/export" >/dev/null
  mv "$work/bundle" "$work/export/bundle"
  echo "$SOURCES" >"$work/export/.sources-sha256"
  [ ! -e "$out" ] || { chmod -R u+w "$out"; rm -rf "$out"; }
  mv "$work/export" "$out"
  cleanup
  work=""
  log "$name: $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$out/manifest.json") in $out"
}

work=""
cleanup() { [ -z "$work" ] || { chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"; }; }
trap cleanup EXIT
release v1 30
release v2 40
release v3 50 linux/arm64

# Sign them with the project's development key (trucks verify the signature before loading;
# molecule.yml gives them build/keys/release-signing.pub). Idempotent: signed releases stay.
KEYS="${LINKEDGE_KEYS_DIR:-build/keys}"
[ -f "$KEYS/release-signing.key" ] || cli keygen --out "$KEYS" >/dev/null
for name in v1 v2 v3; do
  cli sign --release "$RELEASES/$name" --signing-key "$KEYS/release-signing.key" >/dev/null
done
log "v1, v2, v3 signed with $KEYS/release-signing.key"
