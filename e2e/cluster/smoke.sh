#!/usr/bin/env bash
# smoke.sh — proves a cluster made by up.sh works. Needs the cluster up.
# Owns: the image starling-e2e/smoke:dev (built from images/smoke with Go, packed
# by mkimage.py, loaded by load-image.sh) and the namespace `smoke`, which it
# deletes again at the end. Talks only to addresses of the cluster's namespace
# (pod IPs, ClusterIPs, the DNS Service) from the host.
# Prints "smoke: N passed, M failed"; exits non-zero when anything failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_root
[[ -f $KUBECONFIG_FILE ]] || die "no $KUBECONFIG_FILE: is cluster $CLUSTER_NAME up (up.sh)?"
command -v go >/dev/null || die "go is needed to build the smoke image"
t_smoke=$SECONDS

NS=smoke
IMAGE=starling-e2e/smoke:dev
passed=0 failed=0
ok()   { passed=$((passed + 1)); log "ok   $*"; }
fail() { failed=$((failed + 1)); log "FAIL $*"; }
# check DESCRIPTION CMD...: one test
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
# eventually SECONDS CMD...: retry until CMD succeeds
eventually() { local t=$1; shift; wait_for "$t" "$*" "$@"; }
k() { kubectl -n "$NS" "$@"; }
# says URL TEXT: GET URL answers exactly TEXT
says() { [[ $(curl -fsS --max-time 5 "$1") == "$2" ]]; }
# exec_says POD TEXT CMD...: CMD run in POD prints a line equal to TEXT
# (output is captured first: with pipefail, `cmd | grep -q` can fail on SIGPIPE)
exec_says() { local pod=$1 text=$2 out; shift 2; out=$(k exec "$pod" -- "$@") && grep -qxF "$text" <<<"$out"; }
# exec_has POD TEXT CMD...: CMD run in POD prints something containing TEXT
exec_has() { local pod=$1 text=$2 out; shift 2; out=$(k exec "$pod" -- "$@") && grep -qF "$text" <<<"$out"; }

# --- image ------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
(cd "$CLUSTER_DIR/images/smoke" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
  nice -n 19 go build -trimpath -ldflags "-s -w" -o "$work/rootfs/smoke" .)
python3 "$CLUSTER_DIR/mkimage.py" --tag "$IMAGE" --rootfs "$work/rootfs" --base-files \
  --entrypoint /smoke --cmd serve --user 65532:65532 --expose 8080 -o "$work/smoke.tar"
check "load image $IMAGE" "$CLUSTER_DIR/load-image.sh" "$work/smoke.tar"

# --- the namespace is sealed: no default route ------------------------------------
check "no default route in netns $NETNS" test -z "$(in_ns ip route show default)"
routed_via_veth() { [[ $(ip route show "$1") == *"dev $HOST_VETH"* ]]; }
routes_ok() { routed_via_veth "$POD_CIDR" && routed_via_veth "$SERVICE_CIDR"; }
check "host routes $POD_CIDR and $SERVICE_CIDR only via $HOST_VETH" routes_ok

# --- Deployment + ClusterIP Service ------------------------------------------------
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
eventually 30 k get serviceaccount default
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: $IMAGE
        imagePullPolicy: Never
        args: [serve, ":8080"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
        securityContext:
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: http, name: http}]
EOF
t=$SECONDS
check "deployment echo available (2 replicas)" k rollout status deployment/echo --timeout=90s
log "deployment ready in $((SECONDS - t))s"

pods_json() { k get pods -l app=echo -o jsonpath='{range .items[?(@.status.podIP)]}{.metadata.name}={.status.podIP}{"\n"}{end}'; }
mapfile -t pods < <(pods_json)
check "two echo pods with IPs" test "${#pods[@]}" -eq 2
for p in "${pods[@]}"; do
  name=${p%%=*} ip=${p#*=}
  check "curl pod $name at $ip:8080 from the host" says "http://$ip:8080/" "hello from $name"
done

svc_ip=$(k get service echo -o jsonpath='{.spec.clusterIP}')
# kube-proxy programs a new Service within its sync period: wait for the first answer
svc_answers() { curl -fsS --max-time 2 "http://$svc_ip/" >/dev/null; }
t=$SECONDS
check "Service ClusterIP $svc_ip programmed by kube-proxy" eventually 30 svc_answers
log "service answered after $((SECONDS - t))s"
seen=$(for i in $(seq 1 20); do curl -sS --max-time 5 -f "http://$svc_ip/" 2>&1 || echo "error"; done | sort | uniq -c)
log "20 requests to Service echo ($svc_ip):"$'\n'"$seen"
check "Service ClusterIP $svc_ip answers from the host, no errors" test "$(grep -c error <<<"$seen")" -eq 0
check "Service balances over both pods" test "$(grep -c 'hello from' <<<"$seen")" -eq 2

first=${pods[0]%%=*}
logs_have() { local out; out=$(k logs "$1") && grep -qF "$2" <<<"$out"; }
check "kubectl logs $first shows requests" eventually 10 logs_have "$first" "request GET /"
check "kubectl exec into $first" exec_says "$first" "hello from $first" /smoke get http://127.0.0.1:8080/

# --- DNS --------------------------------------------------------------------------------
check "dig @$DNS_SVC_IP echo.$NS.svc.$CLUSTER_DOMAIN from the host" \
  test "$(dig +short +time=2 +tries=2 @"$DNS_SVC_IP" "echo.$NS.svc.$CLUSTER_DOMAIN" A)" = "$svc_ip"
check "pod resolves the short name echo (search path)" exec_says "$first" "echo $svc_ip" /smoke resolve echo
check "pod reaches Service echo by name" \
  exec_has "$first" "hello from echo-" /smoke get "http://echo.$NS.svc.$CLUSTER_DOMAIN/"
check "pod reaches the API server at $KUBERNETES_SVC_IP:443" \
  kubectl -n "$NS" exec "$first" -- /smoke connect "$KUBERNETES_SVC_IP:443"

# --- a deleted pod is replaced ------------------------------------------------------------
k delete pod "$first" --wait=false >/dev/null
replaced() {
  local names
  names=$(k get pods -l app=echo -o jsonpath='{range .items[?(@.status.containerStatuses[0].ready==true)]}{.metadata.name} {end}')
  [[ $(wc -w <<<"$names") -eq 2 && " $names " != *" $first "* ]]
}
t=$SECONDS
check "deleted pod $first replaced, 2 ready again" eventually 60 replaced
log "replacement ready in $((SECONDS - t))s"

# --- StatefulSet + headless Service, scaled 1 -> 3 -> 1 -------------------------------------
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080, name: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 1
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: $IMAGE
        imagePullPolicy: Never
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
EOF
sts_ready() { [[ $(k get statefulset web -o jsonpath='{.status.readyReplicas}') == "$1" ]]; }
check "statefulset web 1 ready" eventually 60 sts_ready 1
k scale statefulset web --replicas=3 >/dev/null
check "statefulset web scaled to 3 ready" eventually 60 sts_ready 3

# every web-N name resolves, inside a pod, to that pod's IP
names_match() {
  local i ip out
  for i in "$@"; do
    ip=$(k get pod "web-$i" -o jsonpath='{.status.podIP}')
    [[ -n $ip ]] || return 1
    out=$(k exec "$first_now" -- /smoke resolve "web-$i.web.$NS.svc.$CLUSTER_DOMAIN.") || return 1
    [[ $out == "web-$i.web.$NS.svc.$CLUSTER_DOMAIN. $ip" ]] || return 1
  done
}
first_now=$(k get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')
check "pod $first_now resolves web-0, web-1, web-2 to their pod IPs" eventually 30 names_match 0 1 2
headless=$(dig +short +time=2 +tries=2 @"$DNS_SVC_IP" "web.$NS.svc.$CLUSTER_DOMAIN" A | sort | tr '\n' ' ')
log "headless web.$NS -> $headless"
check "headless Service web has 3 A records (dig from host)" test "$(wc -w <<<"$headless")" -eq 3

k scale statefulset web --replicas=1 >/dev/null
gone() {
  sts_ready 1 && ! k get pod web-1 >/dev/null 2>&1 && ! k get pod web-2 >/dev/null 2>&1 &&
    [[ -z $(dig +short +time=2 +tries=1 @"$DNS_SVC_IP" "web-2.web.$NS.svc.$CLUSTER_DOMAIN" A) ]]
}
check "statefulset web scaled back to 1, web-2 gone from DNS" eventually 60 gone
check "web-0 still resolves" eventually 30 names_match 0

# --- cleanup ---------------------------------------------------------------------------
check "namespace $NS deleted" kubectl delete namespace "$NS" --wait=true --timeout=90s

log "smoke took $((SECONDS - t_smoke))s"
echo "smoke: $passed passed, $failed failed"
((failed == 0))
