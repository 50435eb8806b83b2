{{/* Chart name, overridable with nameOverride. */}}
{{- define "starling.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, else <release>-<name> (or <release> when it contains the name). */}}
{{- define "starling.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "starling.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "starling.selectorLabels" -}}
app.kubernetes.io/name: {{ include "starling.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "starling.labels" -}}
helm.sh/chart: {{ include "starling.chart" . }}
{{ include "starling.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: starling
{{- end }}

{{- define "starling.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "starling.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "starling.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The operator's RBAC rules, exactly what operator/README.md lists (namespaces and Leases apart):
used by the ClusterRole, or by the Role in each watched namespace.
*/}}
{{- define "starling.rules" -}}
- apiGroups: ["starling.dev"]
  resources: ["brokerclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["starling.dev"]
  resources: ["brokerclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: ["starling.dev"]
  resources: ["bridges", "rules", "trafficrules"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["starling.dev"]
  resources: ["bridges/status", "rules/status", "trafficrules/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Checks that cannot be said in values.schema.json. */}}
{{- define "starling.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true (two operators without a Lease would fight over every object)" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.watchNamespaces }}
{{- if hasKey $seen . }}
{{- fail (printf "watchNamespaces lists %q twice" .) }}
{{- end }}
{{- $_ := set $seen . true }}
{{- end }}
{{- end }}
