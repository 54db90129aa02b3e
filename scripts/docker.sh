#!/usr/bin/env bash
# Prepare Docker for the Molecule scenarios (molecule/) on a Debian 12 machine, with or without
# systemd as PID 1: Debian's docker.io and debootstrap when missing, the Docker daemon started when it
# does not answer, and the local Debian 12 image the scenarios run in, built once with debootstrap
# from a Debian mirror and `docker import`, so no registry (Docker Hub) is needed. Safe to run again.
#
# Exit codes: 0 ready; 3 Docker cannot be started on this machine (not root and no sudo, or the
# daemon does not come up), so the caller may skip; anything else is a failure.
set -euo pipefail

image=${MOLECULE_IMAGE:-tenantforge/debian12-molecule:local}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
dockerd_log=${DOCKERD_LOG:-/var/log/tenantforge-dockerd.log}
# What the image contains: Python for Ansible, python3-apt for the apt module (also in check mode),
# systemd to boot as the container's PID 1, and what Debian's EC2 image has too (ca-certificates,
# kmod, procps).
packages=python3,python3-apt,systemd,systemd-sysv,dbus,ca-certificates,kmod,procps
# The image is rebuilt when the recipe changes: its hash is in the image's environment (Debian's
# Docker 20.10 imports no LABEL or STOPSIGNAL; the scenarios set the stop signal).
recipe=$(printf '%s\n' bookworm "$mirror" "$packages" 1 | sha256sum | cut -c1-16)

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cannot() {
  printf 'docker.sh: %s\n' "$*" >&2
  exit 3
}

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    cannot "needs root (or password-less sudo) to install and start Docker"
  fi
fi

# One preparation at a time (two test workers, or a person and a test run).
exec 9>/tmp/tenantforge-docker.lock
flock 9

docker_answers() { "${as_root[@]}" docker info >/dev/null 2>&1; }

start_dockerd() {
  if [ -d /run/systemd/system ]; then
    log "Starting docker.service"
    "${as_root[@]}" systemctl start docker.service
  else
    # No systemd (a container or a sandbox): the daemon runs detached, in its own session, so it
    # outlives this script and the shell that ran it; it must not inherit the lock (fd 9), or the
    # next run would wait for it forever.
    log "Starting dockerd in the background (log: $dockerd_log)"
    "${as_root[@]}" setsid sh -c "exec dockerd >>'$dockerd_log' 2>&1" </dev/null >/dev/null 2>&1 9>&- &
  fi
  for _ in $(seq 1 60); do
    docker_answers && return 0
    sleep 1
  done
  cannot "the Docker daemon did not answer within 60 s (see $dockerd_log)"
}

build_image() {
  local rootfs replaced
  replaced=$("${as_root[@]}" docker image inspect --format '{{ .Id }}' "$image" 2>/dev/null || true)
  rootfs=$(mktemp -d /var/tmp/tenantforge-rootfs.XXXXXX)
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "${as_root[*]} rm -rf '$rootfs'" EXIT
  log "Building $image with debootstrap bookworm from $mirror (a few minutes)"
  "${as_root[@]}" debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    exit 1
  }
  rm -f "$rootfs.log"
  # A fresh machine id per container; no package lists or caches in the image.
  "${as_root[@]}" sh -c ": >'$rootfs/etc/machine-id'; rm -rf '$rootfs'/var/lib/apt/lists/* '$rootfs'/var/cache/apt/*.bin"
  "${as_root[@]}" tar -C "$rootfs" -c . | "${as_root[@]}" docker import \
    --change 'ENV container=docker' \
    --change "ENV TENANTFORGE_IMAGE_RECIPE=$recipe" \
    --change 'CMD ["/lib/systemd/systemd"]' \
    - "$image" >/dev/null
  "${as_root[@]}" rm -rf "$rootfs"
  trap - EXIT
  # The image of the previous recipe, unless a container still uses it.
  [ -z "$replaced" ] || "${as_root[@]}" docker image rm "$replaced" >/dev/null 2>&1 || true
}

apt_install docker.io debootstrap
docker_answers || start_dockerd
have=$("${as_root[@]}" docker image inspect --format '{{ range .Config.Env }}{{ println . }}{{ end }}' "$image" 2>/dev/null || true)
if ! grep -qx "TENANTFORGE_IMAGE_RECIPE=$recipe" <<<"$have"; then
  build_image
fi
log "Docker $("${as_root[@]}" docker version --format '{{ .Server.Version }}') is ready with $image"
