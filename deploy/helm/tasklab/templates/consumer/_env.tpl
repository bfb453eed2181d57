{{/* The consumer container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.consumer.env" -}}
{{ include "tasklab.commonEnv" (dict "root" . "user" "consumer") }}
{{ include "tasklab.workerEnv" . }}
- name: HAND_BACK_AFTER
  value: {{ include "tasklab.handBackAfter" .Values.consumer | quote }}
- name: CONSUMER_CONCURRENCY
  value: {{ .Values.consumer.concurrency | quote }}
- name: CONSUMER_ISOLATION_WAIT
  value: {{ .Values.consumer.isolationWaitSeconds | quote }}
{{- if .Values.consumer.heartbeatProbes }}
- name: HEARTBEAT_FILE
  value: /tmp/heartbeat
{{- end }}
{{- end -}}
