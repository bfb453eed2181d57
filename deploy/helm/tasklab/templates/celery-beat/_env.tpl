{{/* The celeryBeat container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.celeryBeat.env" -}}
{{ include "tasklab.rmqEnv" (dict "root" . "user" "celery-beat") }}
{{ include "tasklab.logEnv" . }}
- name: HOUSEKEEPING_INTERVAL
  value: {{ .Values.celeryBeat.housekeepingInterval | quote }}
{{- end -}}
