{{/* Chart name, overridable. */}}
{{- define "codetether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the operator's objects: "<release>-operator", or the release name when it already says operator. */}}
{{- define "codetether.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains "operator" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "codetether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release, without the component. */}}
{{- define "codetether.baseLabels" -}}
helm.sh/chart: {{ include "codetether.chart" . }}
app.kubernetes.io/name: {{ include "codetether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codetether
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "codetether.labels" -}}
{{ include "codetether.baseLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of the operator pods; never change it on upgrade (Deployment selectors are immutable). */}}
{{- define "codetether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codetether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "codetether.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "codetether.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "codetether.workerServiceAccountName" -}}
{{- default (printf "%s-worker" .Release.Name | trunc 63 | trimSuffix "-") .Values.workerServiceAccount.name }}
{{- end }}

{{/* Operator image: digest wins over tag; tag defaults to the chart's appVersion. */}}
{{- define "codetether.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "codetether.workerImage" -}}
{{- printf "%s:%s" .Values.workerDefaults.repository (default .Chart.AppVersion .Values.workerDefaults.tag) }}
{{- end }}

{{/* Namespaces the operator watches in "namespaces" scope, as a list; the release namespace by default. */}}
{{- define "codetether.watchNamespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces | default (list .Release.Namespace) }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{- define "codetether.clusterScoped" -}}
{{- if eq .Values.operator.scope "cluster" }}true{{ end }}
{{- end }}

{{/* Refuse value combinations that would run two active operators. */}}
{{- define "codetether.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled=true: without peering every replica would reconcile the same objects" }}
{{- end }}
{{- if and (not .Values.rbac.create) (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.name is required when serviceAccount.create is false" }}
{{- end }}
{{- end }}

{{/* Extra command-line arguments; the image's entrypoint is codetether-operator. */}}
{{- define "codetether.operatorCommand" -}}
{{- with .Values.operator.extraArgs }}
args:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The operator's settings, as the CODETETHER_OPERATOR_* variables codetether_operator.settings reads. */}}
{{- define "codetether.operatorEnv" -}}
{{- if not (include "codetether.clusterScoped" .) }}
- name: CODETETHER_OPERATOR_NAMESPACES
  value: {{ include "codetether.watchNamespaces" . | fromJsonArray | join "," | quote }}
{{- end }}
{{- if .Values.peering.enabled }}
- name: CODETETHER_OPERATOR_PEERING
  value: {{ .Values.peering.name | quote }}
{{- else }}
- name: CODETETHER_OPERATOR_STANDALONE
  value: "true"
{{- end }}
- name: CODETETHER_OPERATOR_LIVENESS_PORT
  value: {{ .Values.operator.healthPort | quote }}
- name: CODETETHER_OPERATOR_METRICS_PORT
  value: {{ .Values.operator.metricsPort | quote }}
- name: CODETETHER_OPERATOR_LOG_LEVEL
  value: {{ .Values.operator.logLevel | upper | quote }}
{{- end }}

{{/*
RBAC, least privilege: exactly the calls codetether_operator.kube declares (API_CALLS: the operator's
own; KOPF_API_CALLS: kopf's), split by where they can be granted. tests/unit/install/test_rbac.py
derives the expected rules from those lists and compares.
*/}}
{{- define "codetether.namespacedRules" -}}
- apiGroups: ["codetether.run"]
  resources: ["codetetherworkerpools"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["codetether.run"]
  resources: ["codebases"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["codetether.run"]
  resources: ["codetetherworkerpools/status", "codebases/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.peering.enabled (not (include "codetether.clusterScoped" .)) }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
Cluster-scoped resources, granted only in cluster mode. In "namespaces" mode kopf gets 403 for
them and falls back (no CRD re-discovery until restart); kopf lists namespaces only in that mode,
so the cluster mode needs no namespace permission.
*/}}
{{- define "codetether.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Labels the operator puts on every worker pod it creates (codetether_operator.build). */}}
{{- define "codetether.workerPodSelector" -}}
matchExpressions:
  - key: codetether.run/pool
    operator: Exists
matchLabels:
  codetether.run/component: worker
{{- end }}
