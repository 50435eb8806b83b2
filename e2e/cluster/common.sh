# common.sh — sourced by every script in e2e/cluster/.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Owns: pinned versions, cache/state locations, the address plan, and small
# helpers (logging, waiting). Holds no state of its own.
#
# Address plan (one cluster at a time per address plan; override the STARLING_*
# variables below to run a second cluster beside the first):
#   host side of the veth   10.250.0.1/30   (on the host, interface sth-<cluster>)
#   node side of the veth   10.250.0.2/30   (eth0 in netns starling-<cluster>);
#                                            node IP, apiserver, CoreDNS endpoint
#   pod CIDR / bridge cni0  10.244.0.0/24   (gateway 10.244.0.1, inside the netns)
#   cluster CIDR            10.244.0.0/16   (controller-manager allocates /24s)
#   service CIDR            10.96.0.0/16    (kubernetes 10.96.0.1, kube-dns 10.96.0.10)
# The host routes the pod and service CIDRs via 10.250.0.2. The netns has no
# default route and nothing masquerades: no traffic can leave the machine.

# --- pinned versions --------------------------------------------------------
K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.3
COREDNS_VERSION=v1.15.0
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
CRITOOLS_VERSION=v1.36.0
PAUSE_IMAGE=registry.k8s.io/pause:3.10

# --- locations --------------------------------------------------------------
CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${STARLING_CACHE:-$HOME/.cache/starling}
BIN_DIR=$CACHE_DIR/bin
IMAGES_DIR=$CACHE_DIR/images
CLUSTER_NAME=${STARLING_CLUSTER:-starling}
STATE_ROOT=${STARLING_STATE:-/var/lib/starling-e2e}
STATE=$STATE_ROOT/$CLUSTER_NAME

# --- address plan (see header) ------------------------------------------------
NETNS=${STARLING_NETNS:-starling-$CLUSTER_NAME}
HOST_VETH=${STARLING_HOST_VETH:-sth-${CLUSTER_NAME:0:11}}   # <= 15 chars
NODE_VETH=eth0
HOST_IP=${STARLING_HOST_IP:-10.250.0.1}
NODE_IP=${STARLING_NODE_IP:-10.250.0.2}
VETH_PREFIX=${STARLING_VETH_PREFIX:-30}
POD_CIDR=${STARLING_POD_CIDR:-10.244.0.0/24}
POD_GATEWAY=${STARLING_POD_GATEWAY:-10.244.0.1}
CLUSTER_CIDR=${STARLING_CLUSTER_CIDR:-10.244.0.0/16}
SERVICE_CIDR=${STARLING_SERVICE_CIDR:-10.96.0.0/16}
KUBERNETES_SVC_IP=${STARLING_KUBERNETES_SVC_IP:-10.96.0.1}
DNS_SVC_IP=${STARLING_DNS_SVC_IP:-10.96.0.10}
BRIDGE=cni0
NODE_NAME=${STARLING_NODE_NAME:-$CLUSTER_NAME-node}
CLUSTER_DOMAIN=cluster.local
CGROUP_ROOT=/starling-$CLUSTER_NAME
CONTAINERD_SOCK=$STATE/run/containerd.sock
KUBECONFIG_FILE=$STATE/kubeconfig

# --- helpers ------------------------------------------------------------------
log()  { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (uses network namespaces, mounts, cgroups)"; }

# in_ns CMD...: run a command inside the cluster's network namespace. nsenter
# (not `ip netns exec`, which would also make a private mount namespace).
in_ns() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

kubectl() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr_ns()  { "$(command -v ctr)" -n k8s.io -a "$CONTAINERD_SOCK" "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: retry CMD every 0.5 s until it succeeds.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for: $what"
      return 1
    fi
    sleep 0.5
  done
}
