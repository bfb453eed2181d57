{{/* The celeryWorker container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.celeryWorker.env" -}}
{{ include "tasklab.commonEnv" (dict "root" . "user" "celery-worker") }}
{{ include "tasklab.workerEnv" . }}
- name: HAND_BACK_AFTER
  value: {{ include "tasklab.handBackAfter" .Values.celeryWorker | quote }}
{{- if .Values.celeryWorker.heartbeatProbes }}
- name: HEARTBEAT_FILE
  value: /tmp/heartbeat
{{- end }}
{{- end -}}
