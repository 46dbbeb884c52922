#!/usr/bin/env bash
# Builds docker/Dockerfile's linux/amd64 image with podman where no container registry is
# reachable: the base image is made here from Debian bookworm's packages (Python 3.11, as in
# python:3.11-slim-bookworm) instead of being pulled. Run from anywhere, after `make models`.
#   docker/build_local.sh [IMAGE]      IMAGE: default localhost/ie-serving:amd64
# Environment: IE_BASE_IMAGE (default localhost/ie-base:bookworm-py311; made once, then reused),
# DEBIAN_MIRROR (default: the host's apt mirror, else deb.debian.org), IE_BUILD_CA_BUNDLE (below).
# Exit codes: 3 podman or debootstrap missing and not installable, 4 no demo models.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-localhost/ie-serving:amd64}
base=${IE_BASE_IMAGE:-localhost/ie-base:bookworm-py311}
work="$here/build/docker"

need_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  [ ${#missing[@]} = 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "build_local.sh: needs ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root on Debian" >&2
    exit 3
  fi
  echo "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || { echo "build_local.sh: apt-get could not install ${missing[*]}" >&2; exit 3; }
}

host_mirror() {
  local uri
  uri=$(grep -hsoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_base() {
  # The stand-in for python:3.11-slim-bookworm: Debian's python3 in a venv at /usr/local/python,
  # first on PATH (the official image's `python` is /usr/local/bin/python), pip inside it.
  local rootfs="$work/base-rootfs" mirror
  mirror=${DEBIAN_MIRROR:-$(host_mirror)}
  echo "making the base image $base (debootstrap bookworm from $mirror)"
  rm -rf "$rootfs"
  mkdir -p "$work"
  debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  chroot "$rootfs" /usr/bin/python3 -m venv /usr/local/python
  # Mount points for the build's pip settings (see below), here so that mounting leaves nothing.
  echo "# docker/build_local.sh mounts its build-time pip settings here" >"$rootfs/etc/pip.conf"
  chroot "$rootfs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log'
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" >/dev/null
  rm -rf "$rootfs"
}

need_tools
[ -f "$here/serving_model/parity.json" ] || { echo "build_local.sh: no demo models: run \`make models\` first" >&2; exit 4; }
start=$SECONDS
if podman image exists "$base"; then
  echo "base image $base: present"
else
  make_base
fi
# pip inside the build trusts the CAs this host trusts (as pip here does, e.g. behind a
# TLS-inspecting proxy): mounted for the RUN steps only, not kept in the image.
# Both files exist in the base this script makes, so there the mounts leave no trace in a layer.
ca=${IE_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
volumes=()
if [ -f "$ca" ]; then
  mkdir -p "$work"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
  volumes=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro" -v "$work/pip.conf:/etc/pip.conf:ro")
fi
echo "building $image (linux/amd64; docker format: OCI images have no HEALTHCHECK)"
podman build --isolation chroot --network host --platform linux/amd64 --layers --format docker "${volumes[@]}" \
  --build-arg BASE_IMAGE="$base" -f "$here/docker/Dockerfile" -t "$image" "$here"
echo "built $image in $((SECONDS - start)) s"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"
echo "size: $(podman image inspect --format '{{.Size}}' "$image") bytes"
