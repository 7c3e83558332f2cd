{{/*
Object names are fixed (wattpack-operator, wattpack-agent, wattpack-config), as in manifests/:
a cluster has one wattpack scheduler, and the operator finds its ConfigMap and Lease by name.
*/}}

{{- define "wattpack.labels" -}}
app.kubernetes.io/part-of: wattpack
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "wattpack.operatorLabels" -}}
app.kubernetes.io/name: wattpack-operator
{{ include "wattpack.labels" . }}
{{- end }}

{{- define "wattpack.agentLabels" -}}
app.kubernetes.io/name: wattpack-agent
{{ include "wattpack.labels" . }}
{{- end }}

{{- define "wattpack.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "wattpack.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
