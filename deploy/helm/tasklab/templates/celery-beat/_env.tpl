{{/* The celeryBeat container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.celeryBeat.env" -}}
{{ include "tasklab.rmqEnv" . }}
{{ include "tasklab.logEnv" . }}
- name: HOUSEKEEPING_INTERVAL
  value: {{ .Values.celeryBeat.housekeepingInterval | quote }}
{{- end -}}
