#!/usr/bin/env bash
# load-image.sh — imports docker-archive tarballs (e.g. from mkimage.py) into the
# running cluster's private containerd, namespace k8s.io, where the kubelet
# finds them. Pods must use imagePullPolicy: Never (or IfNotPresent): nothing
# can be pulled here. Owns nothing; the image lives in the cluster's containerd
# until down.sh/up.sh.
# Usage: load-image.sh IMAGE.tar [IMAGE.tar...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(($# > 0)) || die "usage: $0 IMAGE.tar [IMAGE.tar...]"
need_root
[[ -S $CONTAINERD_SOCK ]] || die "no containerd socket at $CONTAINERD_SOCK: is cluster $CLUSTER_NAME up (up.sh)?"
for tar in "$@"; do
  [[ -f $tar ]] || die "$tar: no such file"
  ctr_ns images import "$tar" >&2
  log "imported $tar into cluster $CLUSTER_NAME"
done
