#!/usr/bin/env bash
# Make this machine able to build and run the images with podman, with no Docker engine
# and no registry: podman from Debian, runc, a containers.conf for this host, a local
# Python base image made with debootstrap, and podman-compose in its own venv.
#
# Prints the environment to use (eval "$(scripts/podman-setup.sh)") on stdout; progress
# goes to stderr. Fails loudly when something cannot be installed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${MODELGEN_PODMAN_STATE:-$ROOT/.podman}"
BASE_IMAGE="${BASE_IMAGE:-localhost/pybase:bookworm}"
say() { echo "podman-setup: $*" >&2; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing podman, runc and debootstrap from Debian"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap; } >&2; then
    say "FAILED: podman could not be installed; the container tests cannot run"
    exit 1
  fi
fi

mkdir -p "$STATE"
# crun refuses this host's hybrid cgroups and the default ulimits exceed the sandbox's.
cat > "$STATE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$STATE/containers.conf"

if ! podman image exists "$BASE_IMAGE"; then
  say "building the local base image $BASE_IMAGE with debootstrap (about a minute)"
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$rootfs" "$mirror" > "$STATE/debootstrap.log" 2>&1; then
    tail -20 "$STATE/debootstrap.log" >&2
    say "FAILED: debootstrap could not make the base image"
    exit 1
  fi
  # Downloads inside builds go through a proxy that re-signs TLS: trust its CA in the image.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >&2
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >&2
fi

if [ ! -x "$STATE/venv/bin/podman-compose" ]; then
  say "installing podman-compose"
  python3 -m venv "$STATE/venv" >&2
  "$STATE/venv/bin/pip" install --quiet podman-compose >&2
fi

echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
echo "export BASE_IMAGE=$BASE_IMAGE"
echo "export PATH=$STATE/venv/bin:\$PATH"
