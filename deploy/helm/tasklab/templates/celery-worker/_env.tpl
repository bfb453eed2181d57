{{/* The celeryWorker container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.celeryWorker.env" -}}
{{ include "tasklab.commonEnv" . }}
{{ include "tasklab.workerEnv" . }}
{{- if .Values.celeryWorker.heartbeatProbes }}
- name: HEARTBEAT_FILE
  value: /tmp/heartbeat
{{- end }}
{{- end -}}
