#!/usr/bin/env bash
# install.sh — installs what the local cluster harness needs. Idempotent.
# Owns: the Debian packages for the node, and the build cache
#   ${STARLING_CACHE:-$HOME/.cache/starling}/
#     bin/      kube-apiserver kube-controller-manager kube-scheduler kubelet
#               kube-proxy kubectl etcd coredns helm kubeconform crictl
#     bin/.stamps/NAME   the version each binary was built at (skip if equal)
#     src/      the Go wrapper modules the binaries are built from
#     images/pause.tar   the sandbox (pause) image as a docker-archive
# Usage: install.sh [--no-apt] [COMPONENT...]   (default: all components)
#   components: apt kubernetes etcd coredns helm kubeconform crictl pause
# Go builds run under `nice -n 19`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat
  iproute2 openssl util-linux curl dnsutils netcat-openbsd gcc libc6-dev python3)
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

do_apt=1
components=()
for arg in "$@"; do
  case $arg in
    --no-apt) do_apt=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) components+=("$arg") ;;
  esac
done
explicit=${#components[@]}
((explicit)) || components=(apt kubernetes etcd coredns helm kubeconform crictl pause)
((do_apt)) || components=("${components[@]/apt/}")

# --- preconditions (checked when needed: a full cache needs no Go) ----------
need_go() {
  command -v go >/dev/null 2>&1 && return
  log "missing: go on PATH (Go >= 1.26 builds Kubernetes $K8S_VERSION; needed to build: $1)"
  die "cannot go on"
}
[[ $(id -u) -eq 0 ]] || { log "missing: root (apt-get install, and the cluster scripts need root)"; die "cannot go on"; }

SRC_DIR=$CACHE_DIR/src
STAMPS=$BIN_DIR/.stamps
mkdir -p "$BIN_DIR" "$STAMPS" "$SRC_DIR" "$IMAGES_DIR"

# Go settings for every build: no cgo, no toolchain download, module mode.
export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"

is_current() { # is_current NAME VERSION
  [[ -x $BIN_DIR/$1 && -f $STAMPS/$1 && $(cat "$STAMPS/$1") == "$2" ]]
}
mark() { echo "$2" >"$STAMPS/$1"; }
gobuild() { nice -n 19 go build -trimpath "$@"; }

timed() { # timed NAME CMD...: run CMD, log how long it took
  local name=$1 t0=$SECONDS; shift
  "$@"
  log "built $name in $((SECONDS - t0))s"
}

# --- Debian packages ---------------------------------------------------------
install_apt() {
  local want=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
  done
  if ((${#want[@]} == 0)); then log "apt packages: all present"; return; fi
  log "apt-get install ${want[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# --- Kubernetes (wrapper module with one replace line per staging module) ---
k8s_module() {
  local dir=$SRC_DIR/k8s-$K8S_VERSION
  if [[ -f $dir/go.sum && -f $dir/.ready ]]; then echo "$dir"; return; fi
  mkdir -p "$dir"
  log "preparing Kubernetes $K8S_VERSION wrapper module in $dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  # go directive of kubernetes; staging modules = required at v0.0.0 AND replaced
  # to ./staging (31 for v1.37.2; sample-* are replaced but not required).
  local goversion
  goversion=$(awk '$1 == "go" {print $2; exit}' "$gomod")
  {
    echo "module example.local/k8sbin"
    echo
    echo "go $goversion"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk -v v="$K8S_STAGING_VERSION" '
      /^require[[:space:]]*\(/ {inreq=1; next}
      /^replace[[:space:]]*\(/ {inrep=1; next}
      /^\)/ {inreq=0; inrep=0; next}
      inreq && $2 == "v0.0.0" {req[$1]=1}
      inrep && $2 == "=>" && $3 ~ /^\.\/staging\// {rep[$1]=1}
      END {for (m in rep) if (m in req) printf "\t%s => %s %s\n", m, m, v}
    ' "$gomod" | sort
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<EOF
//go:build tools

package tools

import (
$(for b in "${K8S_BINARIES[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done)
)
EOF
  (cd "$dir" && GOFLAGS=-mod=mod nice -n 19 go mod tidy) >&2
  touch "$dir/.ready"
  echo "$dir"
}

build_kubernetes() {
  local todo=() b
  for b in "${K8S_BINARIES[@]}"; do is_current "$b" "$K8S_VERSION" || todo+=("$b"); done
  if ((${#todo[@]} == 0)); then log "kubernetes $K8S_VERSION: all binaries current"; return; fi
  local dir minor
  need_go "${todo[*]}"
  dir=$(k8s_module)
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for b in "${todo[@]}"; do
    log "building $b $K8S_VERSION"
    (cd "$dir" && timed "$b" gobuild -ldflags "$ldflags" -o "$BIN_DIR/.$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv -f "$BIN_DIR/.$b.tmp" "$BIN_DIR/$b"
    mark "$b" "$K8S_VERSION"
  done
}

# --- etcd (wrapper module pinning its sibling modules) -----------------------
build_etcd() {
  if is_current etcd "$ETCD_VERSION"; then log "etcd $ETCD_VERSION: current"; return; fi
  need_go etcd
  local dir=$SRC_DIR/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module example.local/etcdbin

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
EOF
  cat >"$dir/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod nice -n 19 go mod tidy >&2 &&
    timed etcd gobuild -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
      -o "$BIN_DIR/.etcd.tmp" go.etcd.io/etcd/server/v3)
  mv -f "$BIN_DIR/.etcd.tmp" "$BIN_DIR/etcd"
  mark etcd "$ETCD_VERSION"
}

# --- tools installed with `go install pkg@version` ---------------------------
goinstall() { # goinstall NAME PKG VERSION LDFLAGS
  local name=$1 pkg=$2 version=$3 ldflags=$4
  if is_current "$name" "$version"; then log "$name $version: current"; return; fi
  need_go "$name"
  local tmp=$SRC_DIR/gobin-$name
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building $name $version"
  GOBIN=$tmp timed "$name" nice -n 19 go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  mv -f "$tmp/$(basename "$pkg")" "$BIN_DIR/$name"
  rm -rf "$tmp"
  mark "$name" "$version"
}

build_coredns() {
  goinstall coredns github.com/coredns/coredns "$COREDNS_VERSION" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}
build_helm() {
  goinstall helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}
build_kubeconform() {
  goinstall kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" \
    "-s -w -X main.version=$KUBECONFORM_VERSION"
}

# --- crictl (cri-tools is missing from the checksum database) ----------------
build_crictl() {
  if is_current crictl "$CRITOOLS_VERSION"; then log "crictl $CRITOOLS_VERSION: current"; return; fi
  need_go crictl
  local dir=$SRC_DIR/critools-$CRITOOLS_VERSION
  mkdir -p "$dir"
  [[ -f $dir/go.mod ]] || (cd "$dir" && go mod init example.local/critools >/dev/null 2>&1)
  log "building crictl $CRITOOLS_VERSION"
  (cd "$dir" &&
    GONOSUMDB=sigs.k8s.io/cri-tools GOFLAGS=-mod=mod nice -n 19 go get "sigs.k8s.io/cri-tools@$CRITOOLS_VERSION" >&2 &&
    GONOSUMDB=sigs.k8s.io/cri-tools GOFLAGS=-mod=mod timed crictl gobuild \
      -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRITOOLS_VERSION" \
      -o "$BIN_DIR/.crictl.tmp" sigs.k8s.io/cri-tools/cmd/crictl)
  mv -f "$BIN_DIR/.crictl.tmp" "$BIN_DIR/crictl"
  mark crictl "$CRITOOLS_VERSION"
}

# --- pause image: static C program packed as a docker-archive ---------------
build_pause() {
  local src=$CLUSTER_DIR/images/pause/pause.c out=$IMAGES_DIR/pause.tar
  local want
  want="$PAUSE_IMAGE $(cat "$src" "$CLUSTER_DIR/mkimage.py" | sha256sum | cut -c1-16)"
  if [[ -f $out && -f $IMAGES_DIR/.pause.stamp && $(cat "$IMAGES_DIR/.pause.stamp") == "$want" ]]; then
    log "pause image: current"; return
  fi
  command -v gcc >/dev/null || die "gcc is needed to build the pause image (apt-get install gcc libc6-dev)"
  local work
  work=$(mktemp -d)
  mkdir -p "$work/rootfs"
  gcc -static -Os -Wall -o "$work/rootfs/pause" "$src"
  strip "$work/rootfs/pause"
  python3 "$CLUSTER_DIR/mkimage.py" --tag "$PAUSE_IMAGE" --rootfs "$work/rootfs" \
    --entrypoint /pause --user 65535:65535 --output "$out.tmp"
  mv -f "$out.tmp" "$out"
  rm -rf "$work"
  echo "$want" >"$IMAGES_DIR/.pause.stamp"
  log "pause image: $out"
}

t_start=$SECONDS
for c in "${components[@]}"; do
  case $c in
    "") ;;
    apt) install_apt ;;
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    coredns) build_coredns ;;
    helm) build_helm ;;
    kubeconform) build_kubeconform ;;
    crictl) build_crictl ;;
    pause) build_pause ;;
    *) die "unknown component: $c" ;;
  esac
done

# Report: what is in the cache and what is not.
absent=()
for b in "${K8S_BINARIES[@]}" etcd coredns helm kubeconform crictl; do
  [[ -x $BIN_DIR/$b ]] || absent+=("$b")
done
[[ -f $IMAGES_DIR/pause.tar ]] || absent+=("images/pause.tar")
if ((${#absent[@]})); then
  log "not built yet: ${absent[*]}"
  ((explicit)) || exit 1
  log "done with: ${components[*]} ($((SECONDS - t_start))s)"
else
  log "all present in $CACHE_DIR ($((SECONDS - t_start))s)"
fi
