#!/usr/bin/env bash
# ansible-test sanity for the collection's modules and module_utils.
#
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>, so the
# repository is copied (without venv, build products, archives or git metadata) to
# build/ansible_collections/linkedge/edge and tested there. `--venv` makes ansible-test install
# each test's pinned requirements from PyPI into its own virtual environments (first run: a
# few minutes; then cached under ~/.ansible/test); `--docker` would need to pull images.
#
#   bash scripts/ansible-sanity.sh                 # every sanity test for plugins/
#   bash scripts/ansible-sanity.sh --test pylint   # extra arguments go to ansible-test sanity
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
DEST="$REPO/build/ansible_collections/linkedge/edge"
PYTHONS="$REPO/build/sanity-pythons"

log() { printf '[ansible-sanity] %s\n' "$*" >&2; }

# ansible-test reads tests/sanity/ignore-<major.minor>.txt for its own ansible-core version only.
# meta/runtime.yml's requires_ansible covers the versions that have an ignore file (2.19): with
# another ansible-core in $BIN, stop instead of reporting every ignored error as new.
CORE_VERSION="$("$BIN/python" -c 'from ansible.release import __version__; print(".".join(__version__.split(".")[:2]))')"
if [ ! -f "$REPO/tests/sanity/ignore-$CORE_VERSION.txt" ]; then
  log "ansible-core $CORE_VERSION has no tests/sanity/ignore-$CORE_VERSION.txt: test with the version" \
      "meta/runtime.yml requires, or add the file (and widen requires_ansible) once it passes"
  exit 2
fi

# ansible-test bootstraps pip into each sanity virtualenv with a get-pip script it downloads
# from ci-files.testing.ansible.com. When that host cannot be reached (PyPI can), cache a
# stand-in that does the same from PyPI: ensurepip, then pip install the pinned packages.
PIP_VERSION="$("$BIN/python" - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages


class Python:  # get_venv_packages() only reads .version
    version = "3.11"


print(get_venv_packages(Python())["pip"])
PY
)"
GET_PIP="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [ ! -s "$GET_PIP" ]; then
  mkdir -p "$(dirname "$GET_PIP")"
  if ! curl -fsS --max-time 20 -o "$GET_PIP.download" \
      "https://ci-files.testing.ansible.com/ansible-test/get-pip-$PIP_VERSION.py"; then
    log "ci-files.testing.ansible.com unreachable: caching an ensurepip + PyPI stand-in at $GET_PIP"
    cat >"$GET_PIP.download" <<'PY'
"""Stand-in for ansible-test's get-pip script (written by scripts/ansible-sanity.sh)."""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
# In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own environment, which
# would hide the machine's pip configuration (index, CA certificates) from the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
if "--no-setuptools" in sys.argv[1:]:
    subprocess.call([sys.executable, "-m", "pip", "uninstall", "--quiet", "-y", "setuptools"])
PY
  fi
  mv "$GET_PIP.download" "$GET_PIP"
fi

rm -rf "$DEST"
mkdir -p "$DEST"
tar -C "$REPO" \
    --exclude=./.venv --exclude=./build --exclude=./collections --exclude=./.git \
    --exclude='*.tar' --exclude='*.tar.gz' --exclude=__pycache__ --exclude='*.pyc' \
    --exclude=.pytest_cache --exclude=.ruff_cache --exclude='*.egg-info' \
    -cf - . | tar -C "$DEST" -xf -

# The modules run on the trucks' Python (3.8 and newer), so compile and import are tested on
# every Python 3.8-3.13 this machine has (on PATH or under pyenv), linked into one directory.
# Interpreters that do not run (pyenv shims of versions not selected) are left off PATH.
# PYTHON_VERSION=3.11 restricts the run to one version.
rm -rf "$PYTHONS"
mkdir -p "$PYTHONS"
versions=()
for version in 3.8 3.9 3.10 3.11 3.12 3.13; do
  for candidate in "$(command -v "python$version" || true)" \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    real="$("$candidate" -c 'import sys, venv; print(sys.executable)' 2>/dev/null)" || continue
    ln -s "$real" "$PYTHONS/python$version"
    versions+=("$version")
    break
  done
done
PATH="$PYTHONS:$BIN:$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '/shims$' | paste -sd:)"
export PATH
python_args=()
if [ -n "${PYTHON_VERSION:-}" ]; then
  python_args=(--python "$PYTHON_VERSION")
fi

cd "$DEST"
# Without its own git repository, ansible-test would list files with the checkout's git, which
# ignores build/: an empty repository makes it see the copy's files (untracked ones count).
git init -q .
log "ansible-test sanity --venv in $DEST, Python ${PYTHON_VERSION:-${versions[*]}}"
exec "$BIN/ansible-test" sanity --venv "${python_args[@]}" --color no \
    "$@" plugins/
