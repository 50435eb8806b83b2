#!/usr/bin/env bash
# charts/test.sh — lints, renders and validates the Helm chart charts/starling. Idempotent; no
# network except the Go module proxy the first time (the prometheus-operator module, for the
# ServiceMonitor schema). Exits non-zero on any failure.
#
#   1. helm and kubeconform from ${STARLING_CACHE:-~/.cache/starling}/bin (built by
#      e2e/cluster/install.sh when missing; that needs root and Go)
#   2. strict JSON schemas for kubeconform, generated locally (charts/kubeconform-schemas.py)
#      from the Kubernetes $K8S_VERSION OpenAPI (swagger.json of the k8s.io/kubernetes Go
#      module), the chart's CRDs and the prometheus-operator ServiceMonitor CRD
#   3. helm lint with the default values and with ci/custom-values.yaml
#   4. helm template (CRDs included) with both, kubeconform -strict on both renders
#   5. negative checks: invalid values fail helm template because of values.schema.json, an
#      impossible combination fails the chart's own check, and kubeconform rejects a render
#      with an unknown field (so the validation is not a no-op)
set -euo pipefail
cd "$(dirname "$0")/.."
# Pinned versions and the cache location (K8S_VERSION, BIN_DIR, CACHE_DIR, ...).
source e2e/cluster/common.sh

CHART=charts/starling
CUSTOM_VALUES=$CHART/ci/custom-values.yaml
RELEASE=starling
NAMESPACE=starling-system
PROMETHEUS_OPERATOR_VERSION=v0.85.0
HELM=$BIN_DIR/helm
KUBECONFORM=$BIN_DIR/kubeconform

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'charts/test.sh: FAILED: %s\n' "$*" >&2; exit 1; }
# go_module_dir MODULE@VERSION: the module's directory in the Go module cache (downloaded when
# missing; go prints the cached copy without any network access when it is there).
go_module_dir() {
  local json
  json=$(GOTOOLCHAIN=local go mod download -json "$1") || fail "go mod download $1: $json"
  python3 -c 'import json, sys
d = json.load(sys.stdin)
if d.get("Error") or not d.get("Dir"):
    sys.exit("go mod download: " + d.get("Error", "no Dir"))
print(d["Dir"])' <<<"$json" || fail "cannot get $1 from the Go module cache or proxy"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "tools: helm $HELM_VERSION and kubeconform $KUBECONFORM_VERSION in $BIN_DIR"
if [[ ! -x $HELM || ! -x $KUBECONFORM ]]; then
  echo "missing; running e2e/cluster/install.sh --no-apt helm kubeconform"
  e2e/cluster/install.sh --no-apt helm kubeconform
fi
"$HELM" version --short
"$KUBECONFORM" -v

step "kubeconform schemas (local only)"
command -v go >/dev/null || fail "go is needed to find the Kubernetes OpenAPI in the Go module cache"
python3 -c 'import yaml' 2>/dev/null || {
  echo "PyYAML missing (reads the CRD YAML): pip install pyyaml"
  python3 -m pip install -q pyyaml 2>/dev/null || python3 -m pip install -q --break-system-packages pyyaml
}
k8s_dir=$(go_module_dir "k8s.io/kubernetes@$K8S_VERSION")
swagger=$k8s_dir/api/openapi-spec/swagger.json
[[ -f $swagger ]] || fail "no $swagger"
promop_dir=$(go_module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
servicemonitor_crd=$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
[[ -f $servicemonitor_crd ]] || fail "no $servicemonitor_crd"
crds=("$CHART"/crds/*.yaml "$servicemonitor_crd")
schemas=$CACHE_DIR/kubeconform-schemas/$K8S_VERSION
# Regenerate only when an input changed (the swagger, a CRD, the generator).
inputs_hash=$(cat "$swagger" "${crds[@]}" charts/kubeconform-schemas.py | sha256sum | cut -d' ' -f1)
if [[ -f $schemas/.inputs && $(cat "$schemas/.inputs") == "$inputs_hash" ]]; then
  echo "up to date: $schemas"
else
  echo "generating into $schemas"
  rm -rf "$schemas"
  mkdir -p "$schemas"
  crd_args=()
  for c in "${crds[@]}"; do crd_args+=(--crd "$c"); done
  python3 charts/kubeconform-schemas.py --swagger "$swagger" "${crd_args[@]}" --out "$schemas"
  echo "$inputs_hash" >"$schemas/.inputs"
fi
schema_location="$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json"
kubeconform() { # kubeconform FILE...: strict, local schemas only, no skips
  "$KUBECONFORM" -schema-location "$schema_location" -strict -summary "$@"
}

step "helm lint $CHART (default values)"
"$HELM" lint --strict "$CHART"
step "helm lint $CHART -f $CUSTOM_VALUES"
"$HELM" lint --strict "$CHART" -f "$CUSTOM_VALUES"

step "helm template (default values) | kubeconform"
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --include-crds >"$work/default.yaml"
grep '^kind:' "$work/default.yaml" | sort | uniq -c
kubeconform "$work/default.yaml"

step "helm template -f $CUSTOM_VALUES | kubeconform"
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --include-crds -f "$CUSTOM_VALUES" >"$work/custom.yaml"
grep '^kind:' "$work/custom.yaml" | sort | uniq -c
kubeconform "$work/custom.yaml"
# What the custom values must have produced.
for want in 'kind: ServiceMonitor' 'kind: Role$' 'replicas: 2' '"--log-format=json"' \
  '"--namespace=mqtt,mqtt-staging"' 'memory: 512Mi'; do
  grep -q -- "$want" "$work/custom.yaml" || fail "custom render lacks: $want"
done
if grep -q '^kind: ClusterRole$' "$work/default.yaml"; then :; else fail "default render lacks the ClusterRole"; fi
if grep -q 'kind: ServiceMonitor' "$work/default.yaml"; then fail "default render has a ServiceMonitor"; fi
echo "custom render has the ServiceMonitor, per-namespace Roles, 2 replicas, JSON logs, custom resources"
for want in 'runAsNonRoot: true' 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' \
  '- ALL' 'type: RuntimeDefault' 'path: /healthz' 'path: /readyz' 'port: http$'; do
  grep -q -- "$want" "$work/default.yaml" || fail "default render lacks: $want"
done
echo "default render: non-root, read-only root fs, no privilege escalation, caps dropped, seccomp, probes"

step "RBAC: exactly the permissions operator/README.md lists"
python3 - "$work/default.yaml" "$work/custom.yaml" "$NAMESPACE" <<'EOF'
import sys, yaml

def grants(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}

def expand(groups, resources, verbs):
    return {(g, r, v) for g in groups for r in resources for v in verbs}

crud = ["get", "list", "watch", "create", "patch", "delete"]
operator = (
    expand(["starling.dev"], ["brokerclusters"], ["get", "list", "watch"])
    | expand(["starling.dev"], ["brokerclusters/status"], ["get", "patch"])
    | expand(["starling.dev"], ["bridges", "rules", "trafficrules"], ["get", "list", "watch", "patch"])
    | expand(["starling.dev"], ["bridges/status", "rules/status", "trafficrules/status"], ["get", "patch"])
    | expand(["apps"], ["statefulsets"], crud)
    | expand([""], ["services", "configmaps"], crud)
    | expand(["policy"], ["poddisruptionbudgets"], crud)
    | expand([""], ["secrets"], ["get", "list", "watch", "create", "patch"])
    | expand([""], ["pods"], ["get", "list", "watch"])
    | expand(["events.k8s.io"], ["events"], ["create", "patch"])
)
namespaces = expand([""], ["namespaces"], ["get"])
leases = expand(["coordination.k8s.io"], ["leases"], ["get", "create", "patch", "update"])

def roles(path):
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] in ("ClusterRole", "Role"):
            out[(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])] = grants(d["rules"])
    return out

release_ns = sys.argv[3]
default = roles(sys.argv[1])
want = {
    ("ClusterRole", None, "starling"): operator | namespaces,
    ("Role", release_ns, "starling-leader-election"): leases,
}
assert default == want, f"default RBAC differs:\n{default}\nwant:\n{want}"
custom = roles(sys.argv[2])
want = {
    ("Role", "mqtt", "starling"): operator,
    ("Role", "mqtt-staging", "starling"): operator,
    ("ClusterRole", None, "starling-namespaces"): namespaces,
    ("Role", release_ns, "starling-leader-election"): leases,
}
assert custom == want, f"custom RBAC differs:\n{custom}\nwant:\n{want}"
print(f"default: ClusterRole ({len(operator | namespaces)} grants) + leader-election Role; "
      f"custom: a Role per watched namespace + namespaces-get ClusterRole + leader-election Role")
EOF

step "NOTES.txt renders (helm template skips it; rendered here through tpl in a copy of the chart)"
cp -r "$CHART" "$work/notes-chart"
cp "$CHART/templates/NOTES.txt" "$work/notes-chart/notes.txt"
echo 'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}' >"$work/notes-chart/templates/notes-render.yaml"
for values in "" "$CUSTOM_VALUES"; do
  "$HELM" template "$RELEASE" "$work/notes-chart" --namespace "$NAMESPACE" ${values:+-f "$values"} \
    --show-only templates/notes-render.yaml >"$work/notes.yaml"
  python3 -c 'import sys, yaml
notes = yaml.safe_load(open(sys.argv[1]))["notes"]
assert "rollout status deployment/" in notes, notes
print("    " + notes.splitlines()[2])' "$work/notes.yaml" || fail "NOTES.txt with ${values:-the default values}"
done

step "negative: invalid values fail helm template (values.schema.json)"
expect_template_failure() { # expect_template_failure WHAT PATTERN HELM-ARGS...
  local what=$1 pattern=$2 out
  shift 2
  if out=$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" 2>&1); then
    fail "helm template accepted $what"
  fi
  grep -q -- "$pattern" <<<"$out" || { printf '%s\n' "$out" >&2; fail "$what failed for another reason than: $pattern"; }
  echo "rejected as expected: $what"
  grep -m3 -e 'at ' -e 'Error' <<<"$out" | sed 's/^/    /'
}
printf 'replicas: "many"\n' >"$work/invalid-values.yaml"
expect_template_failure 'replicas: "many"' "values don't meet the specifications of the schema" -f "$work/invalid-values.yaml"
expect_template_failure 'logFormat=xml' "values don't meet the specifications of the schema" --set logFormat=xml
expect_template_failure 'an unknown key (replica=2)' "additional properties 'replica' not allowed" --set replica=2
expect_template_failure 'replicas=2 without leader election' 'needs leaderElection.enabled' \
  --set replicas=2 --set leaderElection.enabled=false

step "negative: kubeconform rejects an unknown field"
sed 's/^  revisionHistoryLimit: 3$/  revisionHistoryLimit: 3\n  notAField: true/' "$work/default.yaml" >"$work/broken.yaml"
grep -q 'notAField' "$work/broken.yaml" || fail "could not inject the unknown field"
if kubeconform "$work/broken.yaml" >"$work/broken.out" 2>&1; then
  cat "$work/broken.out"
  fail "kubeconform accepted a Deployment with an unknown field"
fi
grep -q "additional properties 'notAField' not allowed" "$work/broken.out" || { cat "$work/broken.out"; fail "unexpected kubeconform error"; }
echo "rejected as expected: $(grep -o "additional properties 'notAField' not allowed" "$work/broken.out")"

printf '\ncharts/test.sh: all chart checks passed\n'
