#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (or refresh an existing checkout) for `make run` / `make test`:
# OS packages that are missing, the virtualenv with the pinned Python packages, with --dev the npm
# packages of the tests, and the link that makes this checkout resolvable as the collection
# tenantforge.platform. Safe to run again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}
with_dev=${1:-}

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

if command -v apt-get >/dev/null 2>&1; then
  os_packages=(ca-certificates git openssh-client postgresql-15 pgbouncer rabbitmq-server)
  # Debian's own python3 needs python3-venv for `python -m venv`; a separately installed CPython
  # (pyenv, python.org) ships venv and ensurepip already.
  "$python" -c 'import ensurepip, venv' 2>/dev/null || os_packages+=(python3-venv)
  apt_install "${os_packages[@]}"
fi

stamp=$venv/.tenantforge-installed
want=$(cat "$root/requirements.txt" "$root/constraints.txt" "$root/requirements-dev.txt" | sha256sum | cut -c1-16)$with_dev
if [ ! -x "$venv/bin/python" ]; then
  log "Creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
have=$(cat "$stamp" 2>/dev/null || true)
# A dev install is a superset of the runtime one.
if [ "$have" != "$want" ] && [ "$have" != "$want--dev" ]; then
  log "Installing pinned Python packages"
  reqs=(-r "$root/requirements.txt")
  [ "$with_dev" = "--dev" ] && reqs+=(-r "$root/requirements-dev.txt")
  "$venv/bin/pip" install -q --disable-pip-version-check "${reqs[@]}" -c "$root/constraints.txt"
  echo "$want" >"$stamp"
fi

# The tests read prisma/schema.prisma with Prisma's WebAssembly engines (package.json): Node.js and
# npm (Debian's, when there is no node at all), and node_modules exactly as package-lock.json pins it,
# installed again whenever the lock file changes.
if [ "$with_dev" = "--dev" ]; then
  if ! command -v node >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || { echo "Node.js and npm are needed (package.json): install them" >&2; exit 1; }
    apt_install nodejs npm
  fi
  node_stamp=$root/node_modules/.tenantforge-installed
  node_want=$(sha256sum <"$root/package-lock.json" | cut -c1-16)
  if [ "$(cat "$node_stamp" 2>/dev/null || true)" != "$node_want" ]; then
    log "Installing the pinned npm packages"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$node_want" >"$node_stamp"
  fi
fi

# The checkout is the collection: link it where ansible.cfg's collections_path looks.
link=$root/.local/collections/ansible_collections/tenantforge/platform
mkdir -p "$(dirname "$link")" "$root/.local"
chmod 0700 "$root/.local"
[ -L "$link" ] || ln -s ../../../.. "$link"
