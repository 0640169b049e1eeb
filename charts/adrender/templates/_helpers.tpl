{{/* the chart's name and the release's objects' base name */}}
{{- define "adrender.name" -}}adrender{{- end -}}

{{- define "adrender.fullname" -}}
{{- if contains "adrender" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-adrender" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* app.kubernetes.io labels: every object */}}
{{- define "adrender.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "adrender.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: adrender
{{- end -}}

{{- define "adrender.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adrender.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* the project image, by digest */}}
{{- define "adrender.image" -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- end -}}

{{/* ADRENDER_STORE: s3://bucket/prefix */}}
{{- define "adrender.store" -}}
{{- if .Values.store.prefix -}}s3://{{ .Values.store.bucket }}/{{ .Values.store.prefix | trimAll "/" }}
{{- else -}}s3://{{ .Values.store.bucket }}{{- end -}}
{{- end -}}

{{- define "adrender.pushgateway" -}}
{{- if .Values.metrics.pushgatewayAddress -}}{{ .Values.metrics.pushgatewayAddress }}
{{- else if .Values.pushgateway.enabled -}}{{ include "adrender.fullname" . }}-pushgateway.{{ .Release.Namespace }}.svc:9091
{{- end -}}
{{- end -}}

{{/* restricted Pod Security Standard: pod and container security contexts */}}
{{- define "adrender.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "adrender.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "adrender.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}
