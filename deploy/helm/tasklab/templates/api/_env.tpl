{{/* The api container's own environment (tasklab.env adds extraEnv). */}}
{{- define "tasklab.api.env" -}}
{{ include "tasklab.commonEnv" (dict "root" . "user" "api") }}
{{ include "tasklab.databaseEnv" . }}
- name: API_HOST
  value: 0.0.0.0
- name: API_PORT
  value: "8080"
# The workers' signed routes (status callbacks, housekeeping) on a port of their own,
# which only the worker pods may reach (Service api-internal, NetworkPolicy api); the
# api refuses them on API_PORT.
- name: API_INTERNAL_PORT
  value: {{ include "tasklab.internalPort" . | quote }}
- name: SYNC_WAIT_SECONDS
  value: {{ .Values.api.syncWaitSeconds | quote }}
- name: DELIVERY_LIMIT
  value: {{ .Values.api.deliveryLimit | quote }}
# Housekeeping (requested by the celery-beat's periodic task).
- name: STUCK_GRACE_SECONDS
  value: {{ .Values.api.stuckGraceSeconds | quote }}
- name: HISTORY_RETENTION_DAYS
  value: {{ .Values.api.historyRetentionDays | quote }}
- name: AUTH_FAILURE_LIMIT
  value: {{ .Values.api.auth.failureLimit | quote }}
# The Host names the api answers to (DNS rebinding): its Service's, and the
# ingress's; IP addresses (probes, Prometheus) and localhost (port-forward) always.
- name: ALLOWED_HOSTS
  value: {{ include "tasklab.api.allowedHosts" . | quote }}
{{- with .Values.api.trustedProxies }}
# Proxies whose X-Forwarded-For names the client (the per-client limits' key).
- name: FORWARDED_ALLOW_IPS
  value: {{ join "," . | quote }}
{{- end }}
{{- with include "tasklab.managementUrl" . }}
- name: RMQ_MANAGEMENT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.api.kubernetes.enabled }}
# The workers view: the Deployments of this namespace (workloads.py, rbac.yaml).
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_WORKLOADS
  value: "celery-worker,consumer"
- name: K8S_SCALE_FROM_UI
  value: {{ .Values.api.kubernetes.scaleFromUi | quote }}
{{- end }}
{{- with include "tasklab.authEnv" . | trim }}
{{ . }}
{{- end }}
{{- end -}}


{{/* ALLOWED_HOSTS: the DNS names of the api's Services (api, api-internal) and api.allowedHosts. */}}
{{- define "tasklab.api.allowedHosts" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range list "api" "api-internal" -}}
{{- $names = concat $names (list . (printf "%s.%s" . $ns) (printf "%s.%s.svc" . $ns) (printf "%s.%s.svc.cluster.local" . $ns)) -}}
{{- end -}}
{{- join "," (concat $names (.Values.api.allowedHosts | default list)) -}}
{{- end -}}
