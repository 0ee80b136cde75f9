{{/* Names and labels shared by every template. */}}

{{- define "healthbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "healthbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "healthbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "healthbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: healthbridge
{{- end -}}

{{- define "healthbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "healthbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "healthbridge.serviceAccountName" -}}
{{- default (include "healthbridge.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "healthbridge.certSecretName" -}}
{{- default (printf "%s-tls" (include "healthbridge.fullname" .)) .Values.certs.secretName -}}
{{- end -}}

{{- define "healthbridge.leaseName" -}}
{{- printf "%s-controller" (include "healthbridge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* image reference: repository, then @digest or :tag (default appVersion). */}}
{{- define "healthbridge.imageRef" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces never injected: the cluster's own and the release's. */}}
{{- define "healthbridge.excludedNamespaces" -}}
- kube-system
- kube-public
- kube-node-lease
{{- $builtin := list "kube-system" "kube-public" "kube-node-lease" }}
{{- if not (has .Release.Namespace $builtin) }}
- {{ .Release.Namespace }}
{{- end }}
{{- range (.Values.webhook.excludeNamespaces | uniq) }}
{{- if not (or (has . $builtin) (eq . $.Release.Namespace)) }}
- {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Label carried by the webhook's own pods and excluded by the objectSelector. */}}
{{- define "healthbridge.selfLabelKey" -}}healthbridge.io/component{{- end -}}
{{- define "healthbridge.selfLabelValue" -}}webhook{{- end -}}

{{- define "healthbridge.tlsFromFiles" -}}
{{- if ne .Values.certs.mode "self-managed" }}true{{ end -}}
{{- end -}}
