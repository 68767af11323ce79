{{/* The chart name, or nameOverride. */}}
{{- define "shmdb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object-name prefix: fullnameOverride, or <release>-<name> (the release alone when it already contains the name). */}}
{{- define "shmdb.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "shmdb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "shmdb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shmdb
{{- end }}

{{/* Selector labels of one component (pass a dict with "ctx" and "component"). */}}
{{- define "shmdb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shmdb.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "shmdb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "shmdb.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image:tag, the tag defaulting to the appVersion. */}}
{{- define "shmdb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* What the operator writes in a namespace that holds databases (ClusterRole or Role rules). */}}
{{- define "shmdb.manageRules" }}
# Finalizer and owner references (blockOwnerDeletion) on the databases.
- apiGroups: ["shmdb.io"]
  resources: ["sharedmemdatabases"]
  verbs: ["patch", "update"]
- apiGroups: ["shmdb.io"]
  resources: ["sharedmemdatabases/finalizers"]
  verbs: ["update"]
- apiGroups: ["shmdb.io"]
  resources: ["sharedmemdatabases/status"]
  verbs: ["get", "patch", "update"]
# Server-side apply of the tiers' objects.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
# HPAs are deleted again when autoscaling is switched off.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch", "delete"]
# Monitors, when the Prometheus Operator's CRDs are installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "podmonitors"]
  verbs: ["get", "create", "patch"]
# The placement manager: its Lease and the partition map (compare-and-swap by replace).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "update"]
# Events on the databases.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
