#!/usr/bin/env bash
# kind.sh — Starling's e2e suite on kind, for users with Docker and kind (Linux).
# Owns: the kind cluster $KIND_CLUSTER_NAME (default starling-e2e), its kubeconfig in
#   target/e2e/kind-kubeconfig, the images starling/broker:dev and starling/operator:dev built
#   from broker/Dockerfile and operator/Dockerfile, and two host routes (the cluster's pod and Service subnets via the kind node's address) so
#   the suite reaches pod IPs, ClusterIPs and the cluster DNS from this machine, exactly as on
#   the local cluster (e2e/cluster). Everything is removed at exit unless --keep is given
#   (then the cluster, its kubeconfig and the routes stay, and how to remove them is printed).
# Steps: create the cluster, `docker build` both images, `kind load docker-image`, then run the
#   same suite as `cargo test -p e2e` with STARLING_E2E_KUBECONFIG pointing at kind (its cases
#   `helm install` charts/starling and apply e2e/samples/quickstart.yaml themselves).
# Needs: docker, kind, kubectl, helm, cargo, ip (iproute2); root or sudo for the routes.
# Usage: e2e/kind.sh [--keep] [-- TEST-ARGS...]   (e.g. -- statefulset)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-starling-e2e}
IMAGE=${STARLING_E2E_IMAGE:-starling/broker:dev}
# The chart is installed with this tag (e2e/src/demo.rs, chart_values).
OPERATOR_IMAGE=starling/operator:dev
# Subnets apart from the local cluster's (10.244.0.0/16, 10.96.0.0/16) so both can coexist.
POD_SUBNET=${KIND_POD_SUBNET:-10.245.0.0/16}
SERVICE_SUBNET=${KIND_SERVICE_SUBNET:-10.97.0.0/16}
KUBECONFIG_FILE=$ROOT/target/e2e/kind-kubeconfig

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

keep=0
test_args=()
while (($# > 0)); do
  case $1 in
    --keep) keep=1 ;;
    --) shift; test_args=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

for c in docker kind kubectl helm cargo ip; do
  command -v "$c" >/dev/null || die "$c not found on PATH"
done
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  die "adding routes to the kind node needs root or sudo"
fi
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"

k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

routes_added=()
cleanup() {
  local rc=$? r
  if ((keep)); then
    log "kept cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG_FILE"
    for r in ${routes_added[@]+"${routes_added[@]}"}; do log "kept route $r (remove: ip route del $r)"; done
    log "remove the cluster with: kind delete cluster --name $CLUSTER"
  else
    for r in ${routes_added[@]+"${routes_added[@]}"}; do
      as_root ip route del "$r" 2>/dev/null || true
    done
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG_FILE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cluster -------------------------------------------------------------------------------
mkdir -p "$(dirname "$KUBECONFIG_FILE")"
if kind get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  log "deleting leftover kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER" >/dev/null
fi
log "creating kind cluster $CLUSTER (pods $POD_SUBNET, services $SERVICE_SUBNET)"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: "$POD_SUBNET"
  serviceSubnet: "$SERVICE_SUBNET"
EOF

# --- images ----------------------------------------------------------------------------------
log "docker build -f broker/Dockerfile -t $IMAGE"
DOCKER_BUILDKIT=1 docker build -f "$ROOT/broker/Dockerfile" -t "$IMAGE" "$ROOT"
log "docker build -f operator/Dockerfile -t $OPERATOR_IMAGE"
DOCKER_BUILDKIT=1 docker build -f "$ROOT/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
kind load docker-image "$IMAGE" "$OPERATOR_IMAGE" --name "$CLUSTER"

# --- routes: pod and Service IPs via the node, as on the local cluster ------------------------
node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")
[[ $node_ip =~ ^[0-9]+(\.[0-9]+){3}$ ]] || die "cannot read the kind node's IPv4 address (got '$node_ip')"
for subnet in "$POD_SUBNET" "$SERVICE_SUBNET"; do
  [[ -z $(ip route show "$subnet") ]] || die "this host already has a route for $subnet: $(ip route show "$subnet")"
  as_root ip route add "$subnet" via "$node_ip"
  routes_added+=("$subnet")
done
log "routed $POD_SUBNET and $SERVICE_SUBNET via the kind node $node_ip"
# This host as the pods see it (the kind network's gateway): the Bridge case's Mosquitto
# listens there.
host_ip=$(docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}')

# --- the e2e suite ----------------------------------------------------------------------------
log "running the e2e suite against kind"
cd "$ROOT"
STARLING_E2E_KUBECONFIG=$KUBECONFIG_FILE STARLING_E2E_KUBECTL=$(command -v kubectl) \
  STARLING_E2E_HELM=$(command -v helm) STARLING_E2E_IMAGE=$IMAGE STARLING_E2E_HOST_IP=$host_ip \
  cargo test -p e2e --test e2e -- ${test_args[@]+"${test_args[@]}"}
log "e2e suite passed on kind"
