{{/*
Workload names are fixed by the project's contract (design notes): api, celery-worker,
consumer, rabbitmq. One release per namespace.
*/}}

{{- define "tasklab.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api") */}}
{{- define "tasklab.selectorLabels" -}}
app.kubernetes.io/name: tasklab
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component: (dict "root" $ "component" "api") */}}
{{- define "tasklab.labels" -}}
helm.sh/chart: {{ include "tasklab.chart" .root }}
{{ include "tasklab.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tasklab
{{- end -}}

{{/* An image reference: (dict "root" $ "image" .Values.api.image) */}}
{{- define "tasklab.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- $repo := .image.repository -}}
{{- with .root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "tasklab.callbackSecretName" -}}
{{- .Values.callbackSecret.existingSecret | default "tasklab-callback" -}}
{{- end -}}

{{/* The api's callback URL, as the workers call it (API_URL). */}}
{{- define "tasklab.apiUrl" -}}
http://api.{{ .Release.Namespace }}.svc:8080/update_task_status_api/
{{- end -}}

{{/* The broker's management API base URL, or "" when there is none. */}}
{{- define "tasklab.managementUrl" -}}
{{- if .Values.rabbitmq.enabled -}}
http://rabbitmq.{{ .Release.Namespace }}.svc:15672/
{{- else -}}
{{- .Values.externalRabbitmq.managementUrl -}}
{{- end -}}
{{- end -}}

{{/*
Environment every service needs: RMQ_URL (composed from the bundled broker's Secret,
or read whole from the external broker's Secret), CALLBACK_SECRET, logging.
*/}}
{{- define "tasklab.commonEnv" -}}
{{- if .Values.rabbitmq.enabled }}
{{- $secret := .Values.rabbitmq.auth.existingSecret | default "rabbitmq" }}
- name: RMQ_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: username
- name: RMQ_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: password
- name: RMQ_URL
  value: amqp://$(RMQ_USERNAME):$(RMQ_PASSWORD)@rabbitmq.{{ .Release.Namespace }}.svc:5672/
{{- else }}
- name: RMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRabbitmq.existingSecret }}
      key: {{ .Values.externalRabbitmq.urlKey }}
{{- end }}
- name: CALLBACK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "tasklab.callbackSecretName" . }}
      key: callback-secret
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/* Environment of the two workers (on top of tasklab.commonEnv). */}}
{{- define "tasklab.workerEnv" -}}
- name: API_URL
  value: {{ include "tasklab.apiUrl" . | quote }}
- name: MAX_RETRIES
  value: {{ .Values.retries.maxRetries | quote }}
- name: RETRY_BACKOFF
  value: {{ .Values.retries.backoff | quote }}
- name: RETRY_BACKOFF_MAX
  value: {{ .Values.retries.backoffMax | quote }}
{{- end -}}

{{/* extraEnv map as an env list (sorted by name). */}}
{{- define "tasklab.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
Heartbeat probe of a worker: the file named by HEARTBEAT_FILE must have been touched
within the last 60 seconds (the worker's main loop touches it every 10 s).
*/}}
{{- define "tasklab.heartbeatCommand" -}}
- python
- -c
- "import os, sys, time; sys.exit(time.time() - os.stat(os.environ['HEARTBEAT_FILE']).st_mtime > 60)"
{{- end -}}

{{- define "tasklab.heartbeatProbes" -}}
startupProbe:
  exec:
    command:
      {{- include "tasklab.heartbeatCommand" . | nindent 6 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 36
readinessProbe:
  exec:
    command:
      {{- include "tasklab.heartbeatCommand" . | nindent 6 }}
  periodSeconds: 30
  timeoutSeconds: 5
  failureThreshold: 2
livenessProbe:
  exec:
    command:
      {{- include "tasklab.heartbeatCommand" . | nindent 6 }}
  periodSeconds: 30
  timeoutSeconds: 5
  failureThreshold: 4
{{- end -}}

{{/* Pod-level fields shared by every tasklab pod: (dict "root" $ "values" .Values.api) */}}
{{- define "tasklab.podCommon" -}}
serviceAccountName: tasklab
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The api's credentials (API_KEYS, AUTH_BASIC_USER, AUTH_BASIC_PASSWORD) from
api.auth.existingSecret; nothing when authentication is off. The api and the helm
test pod take them. A key missing from the Secret stops the pod from starting.
*/}}
{{- define "tasklab.authEnv" -}}
{{- with .Values.api.auth }}
{{- if .existingSecret }}
{{- if .apiKeys }}
- name: API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: api-keys
{{- end }}
{{- if .basicLogin }}
- name: AUTH_BASIC_USER
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: basic-user
- name: AUTH_BASIC_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: basic-password
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* DATABASE_URL of the api: the SQLite file on the data volume, or from a Secret. */}}
{{- define "tasklab.databaseEnv" -}}
- name: DATABASE_URL
{{- if eq .Values.database.type "sqlite" }}
  value: sqlite:////data/tasklab.db
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.external.existingSecret }}
      key: {{ .Values.database.external.key }}
{{- end }}
{{- end -}}

{{- define "tasklab.apiVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.database.type "sqlite" }}
- name: data
  mountPath: /data
{{- end }}
{{- end -}}

{{/*
Scaling behaviour of the worker's HPA (plain or KEDA's): add pods at once, remove them
only after scaleDownStabilizationSeconds of lower demand, one pod a minute (each one
drains its running tasks first, see terminationGracePeriodSeconds).
*/}}
{{- define "tasklab.hpaBehavior" -}}
behavior:
  scaleUp:
    stabilizationWindowSeconds: 0
    policies:
      - type: Pods
        value: 4
        periodSeconds: 30
  scaleDown:
    stabilizationWindowSeconds: {{ .Values.celeryWorker.autoscaling.scaleDownStabilizationSeconds }}
    policies:
      - type: Pods
        value: 1
        periodSeconds: 60
{{- end -}}

{{/* Checks that need two values at once (the schema checks each value alone). */}}
{{- define "tasklab.validate" -}}
{{- $a := .Values.celeryWorker.autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "celeryWorker.autoscaling: minReplicas (%d) is above maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if lt (int .Values.celeryWorker.terminationGracePeriodSeconds) 30 -}}
{{- fail "celeryWorker.terminationGracePeriodSeconds: at least 30 s, so that a stopping worker can finish its report" -}}
{{- end -}}
{{- $auth := .Values.api.auth -}}
{{- if and $auth.existingSecret (not (or $auth.apiKeys $auth.basicLogin)) -}}
{{- fail "api.auth: existingSecret is set but apiKeys and basicLogin are both false; turn one on, or empty existingSecret to turn authentication off" -}}
{{- end -}}
{{- end -}}
