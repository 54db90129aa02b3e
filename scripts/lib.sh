# Shell functions shared by scripts/setup.sh and scripts/docker.sh (sourced, not run).

log() { printf '==> %s\n' "$*"; }

# apt_install PACKAGE...: install only what is missing; needs root (or sudo) only when something is.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  local as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  log "Installing OS packages: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
