#!/usr/bin/env bash
# up.sh — brings up the single-node cluster $STARLING_CLUSTER (default starling).
# Owns, per cluster name:
#   the network namespace starling-<name> and the veth pair to it, the host
#   routes to the pod and service CIDRs, the cgroup dirs /starling-<name> in
#   every cgroup v1 hierarchy, and the state dir ${STARLING_STATE}/<name>:
#     pki/ kubeconfigs/ etc/   certificates (openssl), kubeconfigs, configs
#     logs/NAME.log            one log per daemon
#     pids/NAME.pid            one pid file per daemon (read by down.sh)
#     etcd/ containerd/ kubelet/ cni/ pod-logs/ run/   private daemon state
#     kubeconfig               admin kubeconfig (server https://10.250.0.2:6443)
# Every daemon (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, kubelet, kube-proxy, CoreDNS) runs inside the namespace via
# `nsenter --net=/run/netns/NAME`, started with setsid so it outlives this script.
# Any leftovers of the same cluster name are removed first (down.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_root
t_up=$SECONDS

# --- preconditions ----------------------------------------------------------
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns; do
  [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b missing: run e2e/cluster/install.sh first"
done
[[ -f $IMAGES_DIR/pause.tar ]] || die "$IMAGES_DIR/pause.tar missing: run e2e/cluster/install.sh first"
for c in containerd containerd-shim-runc-v2 runc ctr nsenter setsid ip iptables openssl dig curl; do
  command -v "$c" >/dev/null || die "$c not found: run e2e/cluster/install.sh first"
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || die "CNI plugins missing in /usr/lib/cni (containernetworking-plugins)"

# --- 0. leftovers of the same cluster -----------------------------------------
"$CLUSTER_DIR/down.sh" --quiet
if [[ " $(ip -o -4 addr show | tr -s ' \n/' ' ') " == *" inet $HOST_IP "* ]]; then
  die "$HOST_IP is already on a host interface ($(ip -o addr show | awk -v ip="inet $HOST_IP" '$0 ~ ip {print $2}')): another cluster uses this address plan; set STARLING_HOST_IP/STARLING_NODE_IP/STARLING_*_CIDR"
fi
for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
  [[ -z $(ip route show "$cidr") ]] || die "host already has a route for $cidr: $(ip route show "$cidr")"
done

if awk -v s="$STATE" '$5 == s || index($5, s "/") == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
  die "mounts are still left under $STATE after down.sh; see: grep $STATE /proc/self/mountinfo"
fi
rm -rf --one-file-system "$STATE"
mkdir -p "$STATE"/{pki,kubeconfigs,etc,logs,pids,run,etcd,containerd/root,containerd/state,runc,cni/net.d,cni/ipam,kubelet,kubelet-plugins,pod-logs}
chmod 700 "$STATE/pki" "$STATE/kubeconfigs"

# --- 1. network: namespace, veth, bridge, routes ------------------------------
log "network: netns $NETNS, $HOST_VETH $HOST_IP <-> $NODE_VETH $NODE_IP, pods $POD_CIDR, services $SERVICE_CIDR"
ip netns add "$NETNS"
ip link add "$HOST_VETH" type veth peer name "$NODE_VETH" netns "$NETNS"
sysctl -qw "net.ipv6.conf.$HOST_VETH.disable_ipv6=1"
ip addr add "$HOST_IP/$VETH_PREFIX" dev "$HOST_VETH"
ip link set "$HOST_VETH" up
in_ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
in_ns ip link set lo up
in_ns ip addr add "$NODE_IP/$VETH_PREFIX" dev "$NODE_VETH"
in_ns ip link set "$NODE_VETH" up
# The pod bridge exists before any pod so the service CIDR can be routed to it:
# a locally originated packet to a ClusterIP needs a route before kube-proxy's
# DNAT in OUTPUT rewrites it. The CNI bridge plugin adopts the existing bridge.
in_ns ip link add "$BRIDGE" type bridge
in_ns ip addr add "$POD_GATEWAY/${POD_CIDR#*/}" dev "$BRIDGE"
in_ns ip link set "$BRIDGE" up
in_ns ip route add "$SERVICE_CIDR" dev "$BRIDGE"
# No default route in the namespace: anything not on the machine is unreachable.
in_ns sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH"
ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_VETH"

# --- 2. cgroups -------------------------------------------------------------
# The kubelet's cgroupRoot must exist in every v1 hierarchy beforehand.
for h in /sys/fs/cgroup/*/; do
  h=${h%/}
  mountpoint -q "$h" || continue
  mkdir -p "$h$CGROUP_ROOT"
  if [[ -f $h/cpuset.cpus ]]; then
    cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
  fi
done

# --- 3. PKI -----------------------------------------------------------------
PKI=$STATE/pki
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
newca() { # newca NAME CN
  newkey "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}
newcert() { # newcert NAME CA SUBJECT USAGE(client|server|both) [SAN]
  local name=$1 ca=$2 subj=$3 usage=$4 san=${5:-} eku
  case $usage in client) eku=clientAuth ;; server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;; esac
  newkey "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
log "pki: certificates and keys in $PKI"
newca ca "starling-$CLUSTER_NAME-ca"
newca front-proxy-ca "starling-$CLUSTER_NAME-front-proxy-ca"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
newcert apiserver ca "/CN=kube-apiserver" server \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP,IP:127.0.0.1"
newcert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" client
newcert front-proxy-client front-proxy-ca "/CN=front-proxy-client" client
newcert admin ca "/O=system:masters/CN=kubernetes-admin" client
newcert controller-manager ca "/CN=system:kube-controller-manager" client
newcert scheduler ca "/CN=system:kube-scheduler" client
newcert kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" client
newcert kubelet-serving ca "/CN=$NODE_NAME" server "DNS:$NODE_NAME,IP:$NODE_IP"
newcert kube-proxy ca "/CN=system:kube-proxy" client
newcert coredns ca "/CN=starling:coredns" client

# kubeconfig FILE USER SERVER: a kubeconfig with the certificates embedded.
write_kubeconfig() {
  local file=$1 user=$2 server=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$user.crt")
    client-key-data: $(base64 -w0 "$PKI/$user.key")
contexts:
- name: $CLUSTER_NAME
  context:
    cluster: $CLUSTER_NAME
    user: $user
current-context: $CLUSTER_NAME
EOF
  chmod 600 "$file"
}
KC=$STATE/kubeconfigs
APISERVER=https://$NODE_IP:6443
write_kubeconfig "$KUBECONFIG_FILE" admin "$APISERVER"
write_kubeconfig "$KC/controller-manager.conf" controller-manager https://127.0.0.1:6443
write_kubeconfig "$KC/scheduler.conf" scheduler https://127.0.0.1:6443
write_kubeconfig "$KC/kubelet.conf" kubelet "$APISERVER"
write_kubeconfig "$KC/kube-proxy.conf" kube-proxy "$APISERVER"
write_kubeconfig "$KC/coredns.conf" coredns "$APISERVER"

# --- daemon helpers ------------------------------------------------------------
# start NAME CMD...: start CMD in the namespace, in its own session, logging to
# logs/NAME.log; setsid does not fork here, so $! is the daemon's own pid.
start() {
  local name=$1; shift
  setsid nsenter --net="/run/netns/$NETNS" -- "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}
alive() { kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }
# wait_daemon NAME SECONDS WHAT CMD...: wait for CMD; fail early if NAME died.
wait_daemon() {
  local name=$1 timeout=$2 what=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name exited (log: $STATE/logs/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "timed out after ${timeout}s waiting for $what (log: $STATE/logs/$name.log)"
    fi
    sleep 0.3
  done
  log "$what ($((SECONDS - t_up))s)"
}
on_exit() {
  local rc=$?
  ((rc == 0)) || log "up failed (rc=$rc); logs in $STATE/logs; run down.sh to clean up"
}
trap on_exit EXIT

# --- 4. etcd ----------------------------------------------------------------------
start etcd "$BIN_DIR/etcd" --name=default --data-dir="$STATE/etcd" \
  --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
  --initial-cluster=default=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
wait_daemon etcd 30 "etcd healthy" in_ns curl -fsS http://127.0.0.1:2379/health

# --- 5. kube-apiserver --------------------------------------------------------------
start kube-apiserver "$BIN_DIR/kube-apiserver" \
  --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
  --etcd-servers=http://127.0.0.1:2379 \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-username-headers=X-Remote-User \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --profiling=false --event-ttl=1h --v=1
wait_daemon kube-apiserver 60 "kube-apiserver ready" kubectl get --raw /readyz

# --- 6. controller-manager and scheduler ---------------------------------------------
start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$KC/controller-manager.conf" \
  --authentication-kubeconfig="$KC/controller-manager.conf" \
  --authorization-kubeconfig="$KC/controller-manager.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --cluster-name="$CLUSTER_NAME" \
  --use-service-account-credentials=true \
  --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --profiling=false --v=1
start kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$KC/scheduler.conf" \
  --authentication-kubeconfig="$KC/scheduler.conf" \
  --authorization-kubeconfig="$KC/scheduler.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

# --- 7. containerd ---------------------------------------------------------------------
cat >"$STATE/etc/containerd.toml" <<EOF
# containerd for cluster $CLUSTER_NAME: private socket, root, state and runc root.
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # no CAP_SYS_RESOURCE here: without this every sandbox fails on oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # pod network namespaces under the state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
cat >"$STATE/cni/net.d/10-starling.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "starling",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
start containerd "$(command -v containerd)" --config "$STATE/etc/containerd.toml" --log-level warn
wait_daemon containerd 30 "containerd serving" ctr_ns version
ctr_ns images import "$IMAGES_DIR/pause.tar" >/dev/null
log "imported $PAUSE_IMAGE"

# --- 8. kubelet --------------------------------------------------------------------------
printf 'nameserver %s\noptions ndots:1\n' "$NODE_IP" >"$STATE/etc/resolv.conf"
cat >"$STATE/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: ["$DNS_SVC_IP"]
resolvConf: $STATE/etc/resolv.conf
podCIDR: $POD_CIDR
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/kubelet-plugins
staticPodPath: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
maxPods: 110
EOF
start kubelet "$BIN_DIR/kubelet" --config="$STATE/etc/kubelet.yaml" \
  --kubeconfig="$KC/kubelet.conf" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
wait_daemon kubelet 60 "node $NODE_NAME registered" kubectl get node "$NODE_NAME"

# --- 9. kube-proxy ---------------------------------------------------------------------------
cat >"$STATE/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: $KC/kube-proxy.conf
conntrack:
  # 0 = leave the (partly machine-wide) conntrack sysctls alone
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  masqueradeAll: false
nodePortAddresses: ["$NODE_IP/32"]
EOF
start kube-proxy "$BIN_DIR/kube-proxy" --config="$STATE/etc/kube-proxy.yaml" --v=1

# --- 10. cluster objects: CoreDNS RBAC and the kube-dns Service --------------------------------
# CoreDNS runs as a process in the namespace on $NODE_IP:53; the kube-dns Service
# ($DNS_SVC_IP) has no selector and one hand-made EndpointSlice pointing at it.
wait_for 30 "default namespaces" kubectl get namespace kube-system || die "kube-system namespace never appeared"
kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: starling:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: starling:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: starling:coredns
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: starling:coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  clusterIP: $DNS_SVC_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: starling-e2e
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
  nodeName: $NODE_NAME
EOF

# --- 11. CoreDNS ------------------------------------------------------------------------------------
cat >"$STATE/etc/Corefile" <<EOF
# Cluster names only; everything else is NXDOMAIN (there is no upstream).
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $KC/coredns.conf $CLUSTER_NAME
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
}
.:53 {
    bind $NODE_IP
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
start coredns "$BIN_DIR/coredns" -conf "$STATE/etc/Corefile"

# --- 12. wait for a usable cluster ------------------------------------------------------------------
node_ready() { [[ $(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
wait_daemon kubelet 60 "node $NODE_NAME Ready" node_ready
dns_ok() {
  [[ $(dig +short +time=1 +tries=1 @"$DNS_SVC_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" A) == "$KUBERNETES_SVC_IP" ]]
}
wait_daemon coredns 60 "CoreDNS answers kubernetes.default.svc.$CLUSTER_DOMAIN via $DNS_SVC_IP" dns_ok
wait_daemon kube-controller-manager 60 "default service account" kubectl -n default get serviceaccount default

for d in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns; do
  alive "$d" || die "$d is not running (log: $STATE/logs/$d.log)"
done
log "cluster $CLUSTER_NAME up in $((SECONDS - t_up))s"
echo "export KUBECONFIG=$KUBECONFIG_FILE"
