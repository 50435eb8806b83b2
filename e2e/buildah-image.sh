#!/usr/bin/env bash
# buildah-image.sh — builds broker/Dockerfile on a machine that can pull no image and runs no
# Docker engine, with Debian's buildah (chroot isolation, vfs storage) and two base images made
# here: RUST_IMAGE from a debootstrap'ed Debian bookworm (gcc, libc6-dev, binutils) plus this
# machine's Rust toolchain, RUNTIME_BASE from that rootfs' glibc libraries and mkimage.py's
# passwd/group (nonroot = 65532). Writes a docker-archive for e2e/cluster/load-image.sh.
# Owns: ${STARLING_BUILDAH_WORK:-/var/tmp/starling-buildah} (rootfs, tarballs, buildah's own
#   storage) and buildah's cache mounts of the Dockerfile (/var/tmp/buildah-cache/starling-*);
#   `--clean` removes both. The e2e harness does not need this (it packs the release binary
#   directly, `cargo run -p e2e -- image`): this proves the Dockerfile itself builds.
# Measured on 2 cores: debootstrap ~2 min; the build ~11 min cold (the whole workspace compiles
#   inside buildah), ~3.5 min with the cache mounts warm. Run as root.
# Usage: e2e/buildah-image.sh [--clean] [-o OUT.tar]   (default OUT: target/e2e/broker-buildah.tar)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${STARLING_BUILDAH_WORK:-/var/tmp/starling-buildah}
TAG=${STARLING_E2E_IMAGE:-starling/broker:dev}
OUT=$ROOT/target/e2e/broker-buildah.tar
BUILDER=localhost/starling-rust-builder:local
RUNTIME=localhost/starling-runtime-base:local
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[buildah-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while (($# > 0)); do
  case $1 in
    --clean)
      rm -rf "$WORK" /var/tmp/buildah-cache/starling-cargo-registry /var/tmp/buildah-cache/starling-target
      rmdir /var/tmp/buildah-cache 2>/dev/null || true
      log "removed $WORK and the build's cache mounts"
      exit 0
      ;;
    -o) OUT=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, buildah)"
command -v rustc >/dev/null || die "rustc not on PATH"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bh() { buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs "$@"; }
mkdir -p "$WORK"

# --- RUST_IMAGE: Debian bookworm + gcc + this machine's toolchain -----------------------------
sysroot=$(rustc --print sysroot)
version=$(rustc --version)
stamp=$WORK/builder.stamp
if [[ ! -f $stamp || $(cat "$stamp") != "$version" ]]; then
  rm -rf "$WORK/rootfs"
  log "debootstrap bookworm (minbase + gcc, libc6-dev, binutils, ca-certificates)"
  debootstrap --variant=minbase --include=gcc,libc6-dev,binutils,ca-certificates \
    bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $WORK/debootstrap.log"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  log "adding $version from $sysroot"
  mkdir -p "$WORK/rootfs/usr/local/rust" "$WORK/rootfs/usr/local/cargo"
  cp -a "$sysroot/bin" "$sysroot/lib" "$WORK/rootfs/usr/local/rust/"
  python3 "$ROOT/e2e/cluster/mkimage.py" --tag "$BUILDER" --rootfs "$WORK/rootfs" --keep-owner \
    --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo --workdir / -o "$WORK/builder.tar"
  # RUNTIME_BASE: the same Debian's glibc, libm, libgcc_s and loader, plus passwd/group.
  rm -rf "$WORK/runtime"
  mkdir -p "$WORK/runtime/lib/x86_64-linux-gnu" "$WORK/runtime/lib64"
  for l in libc.so.6 libm.so.6 libgcc_s.so.1; do
    cp -L "$WORK/rootfs/lib/x86_64-linux-gnu/$l" "$WORK/runtime/lib/x86_64-linux-gnu/$l"
  done
  cp -L "$WORK/rootfs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$WORK/runtime/lib64/ld-linux-x86-64.so.2"
  python3 "$ROOT/e2e/cluster/mkimage.py" --tag "$RUNTIME" --rootfs "$WORK/runtime" --base-files -o "$WORK/runtime.tar"
  bh rmi -f "$BUILDER" "$RUNTIME" >/dev/null 2>&1 || true
  bh pull -q "docker-archive:$WORK/builder.tar" >/dev/null
  bh pull -q "docker-archive:$WORK/runtime.tar" >/dev/null
  echo "$version" >"$stamp"
fi

# --- the Dockerfile ---------------------------------------------------------------------------
# The host's CA bundle is mounted for the build only: where a TLS-inspecting proxy sits between
# this machine and crates.io, the Debian bundle in the builder would not trust it.
certs=()
if [[ -d /etc/ssl/certs ]]; then certs=(-v /etc/ssl/certs:/etc/ssl/certs:ro); fi
log "buildah bud -f broker/Dockerfile (RUST_IMAGE=$BUILDER RUNTIME_BASE=$RUNTIME)"
t0=$SECONDS
(cd "$ROOT" && nice -n 19 buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs \
  bud --isolation chroot --ignorefile broker/Dockerfile.dockerignore ${certs[@]+"${certs[@]}"} \
  --build-arg "RUST_IMAGE=$BUILDER" --build-arg "RUNTIME_BASE=$RUNTIME" \
  -f broker/Dockerfile -t "$TAG" .)
log "built $TAG in $((SECONDS - t0))s"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
bh push -q "$TAG" "docker-archive:$OUT:$TAG" >/dev/null
log "wrote $OUT (load with e2e/cluster/load-image.sh $OUT)"
echo "$OUT"
