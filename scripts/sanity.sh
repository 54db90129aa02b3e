#!/usr/bin/env bash
# `ansible-test sanity` on the collection's plugins (plugins/ and meta/), offline-capable: the only
# host it needs is PyPI, for the sanity tests' own pinned requirements, and only until they are
# cached. No Docker, Galaxy or ci-files.testing.ansible.com.
#
# Usage: scripts/sanity.sh [more ansible-test sanity arguments, e.g. --test validate-modules -v]
# `make sanity` (and so `make lint` / `make test`) runs it after `scripts/setup.sh --dev`.
# Accepted findings are in tests/sanity/ignore-2.19.txt, each with its reason.
#
# How it works:
#  - ansible-test needs the collection at .../ansible_collections/tenantforge/platform and resolves
#    symlinks, so the files git knows about (tracked, and untracked but not ignored) are copied to
#    .local/sanity/ansible_collections/tenantforge/platform, wiped first. The collections ours
#    depends on (galaxy.yml `dependencies`) are linked beside it from the `ansible` package pinned in
#    requirements.txt, as ansible-test only looks for them there.
#  - It runs with --local on the virtualenv's Python: no Docker, no --venv and no --requirements
#    (the controller needs nothing besides ansible-core, which is installed).
#  - ansible-test still gives each sanity test that has requirements a virtualenv of its own. It
#    creates it without pip and bootstraps pip with a script downloaded from
#    ci-files.testing.ansible.com, which is unreachable here, unless the script is in its cache.
#    So ansible-test gets HOME=.local/sanity-home, whose cache holds a stand-in for that script that
#    installs the same pip release with the standard library's ensurepip and then pip from PyPI.
#    The sanity virtualenvs stay in .local/sanity-home, so later runs install nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
case $venv in /*) ;; *) venv=$root/$venv ;; esac
python=$venv/bin/python

log() { printf '==> %s\n' "$*"; }

if [ ! -x "$venv/bin/ansible-test" ]; then
  echo "ansible-test not found in $venv: run scripts/setup.sh --dev (or make setup-dev) first" >&2
  exit 1
fi
if ! git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  echo "$root is not a git checkout: the files to test are taken from git ls-files" >&2
  exit 1
fi
python_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Tests that are not run, and why. Every other test of `ansible-test sanity --list-tests` runs.
skip_tests=(
  # PowerShell modules only; needs pwsh, which neither PyPI nor Debian ships. We have no .ps1/.psm1.
  pslint
  # Shell scripts only; there are none under plugins/ or meta/ (the scripts/ ones are not collection
  # content), and the shellcheck binary is not installed by setup.sh.
  shellcheck
)
# The Python-version dependent ones (compile, import) run for the virtualenv's Python only (3.11:
# the controller, the local target and Debian 12 hosts), the one Python every machine here has.

# --- the copy of the collection --------------------------------------------------------------------
scratch=$root/.local/sanity
collection=$scratch/ansible_collections/tenantforge/platform
log "Copying the collection to $collection"
mkdir -p "$root/.local"
chmod 0700 "$root/.local"
rm -rf "$scratch"
mkdir -p "$collection"
# Tracked files plus untracked ones that are not ignored; files deleted in the work tree are left out.
(
  cd "$root"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      if [ -e "$file" ] || [ -L "$file" ]; then printf '%s\0' "$file"; fi
    done |
    tar --null --no-recursion -T - -cf - |
    tar -C "$collection" -xf -
)
# ansible-test lists the collection's files with git when it finds a .git in the collection or above
# it. Without one here it would find this checkout's, which ignores .local/, and test nothing.
git -C "$collection" init -q

# Collections this one depends on, from the `ansible` package in the virtualenv (no Galaxy).
site_collections=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections
"$python" - "$root/galaxy.yml" <<'PY' |
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as handle:
    for name in yaml.safe_load(handle).get("dependencies") or {}:
        print(name)
PY
  while read -r dependency; do
    namespace=${dependency%%.*} name=${dependency#*.}
    if [ ! -d "$site_collections/$namespace/$name" ]; then
      echo "$dependency (galaxy.yml dependencies) is not in $site_collections" >&2
      exit 1
    fi
    mkdir -p "$scratch/ansible_collections/$namespace"
    ln -s "$site_collections/$namespace/$name" "$scratch/ansible_collections/$namespace/$name"
  done

# --- offline bootstrap of the sanity tests' virtualenvs -------------------------------------------
# pip keeps the configuration and download cache of the real home.
export XDG_CONFIG_HOME=${XDG_CONFIG_HOME:-$HOME/.config}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
if [ -z "${PIP_CONFIG_FILE:-}" ] && [ -f "$HOME/.pip/pip.conf" ]; then
  export PIP_CONFIG_FILE=$HOME/.pip/pip.conf
fi
export HOME=$root/.local/sanity-home
# The pip release ansible-test bootstraps (24.2 for ansible-core 2.19) names the cached script.
pip_version=$("$python" -c '
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"])' "$python_version")
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
# ansible-test runs it as `python quiet_pip.py ARGS` with GET_PIP=<this file>, in the new virtualenv
# (created without pip). ARGS are pip install arguments (pip==X.Y) plus get-pip's --no-setuptools
# and --no-wheel.
cat >"$cache/get_pip_${pip_version//./_}.py" <<'PY'
"""Stand-in for get-pip.py, written by scripts/sanity.sh: ensurepip, then pip install from PyPI."""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *args])
PY

# --- the tests -------------------------------------------------------------------------------------
skip_args=()
for test in "${skip_tests[@]}"; do skip_args+=(--skip-test "$test"); done
cd "$collection"
log "ansible-test sanity on Python $python_version (skipped: ${skip_tests[*]})"
"$venv/bin/ansible-test" sanity --local --python "$python_version" "${skip_args[@]}" "$@" plugins/ meta/
