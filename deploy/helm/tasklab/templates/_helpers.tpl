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

{{/*
The api's port for the workers' signed routes (the status callback and housekeeping),
served by Service api-internal; the api refuses those routes on its public port 8080.
*/}}
{{- define "tasklab.internalPort" -}}8081{{- end -}}

{{/* The api's callback URL, as the workers call it (API_URL): its internal port. */}}
{{- define "tasklab.apiUrl" -}}
http://api-internal.{{ .Release.Namespace }}.svc:{{ include "tasklab.internalPort" . }}/update_task_status_api/
{{- end -}}

{{/* The broker's management API base URL, or "" when there is none. */}}
{{- define "tasklab.managementUrl" -}}
{{- if .Values.rabbitmq.enabled -}}
http://rabbitmq.{{ .Release.Namespace }}.svc:15672/
{{- else -}}
{{- .Values.externalRabbitmq.managementUrl -}}
{{- end -}}
{{- end -}}

{{/* The bundled broker's Secret of service users (keys <user>-username, <user>-password). */}}
{{- define "tasklab.brokerUsersSecret" -}}
{{- .Values.rabbitmq.auth.users.existingSecret | default "rabbitmq-users" -}}
{{- end -}}

{{/*
RMQ_URL of one service, with its own broker user: (dict "root" $ "user" "celery-worker").
Bundled broker: composed from that user's name and password in the users Secret.
External broker: read whole from the external Secret, under the service's key in
externalRabbitmq.urlKeys (default: urlKey, one URL shared by every service).
*/}}
{{- define "tasklab.rmqEnv" -}}
{{- $root := .root }}
{{- if $root.Values.rabbitmq.enabled }}
{{- $secret := include "tasklab.brokerUsersSecret" $root }}
- name: RMQ_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .user }}-username
- name: RMQ_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .user }}-password
- name: RMQ_URL
  value: amqp://$(RMQ_USERNAME):$(RMQ_PASSWORD)@rabbitmq.{{ $root.Release.Namespace }}.svc:5672/
{{- else }}
{{- $ext := $root.Values.externalRabbitmq }}
- name: RMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret }}
      key: {{ get $ext.urlKeys (get (dict "api" "api" "celery-worker" "celeryWorker" "consumer" "consumer" "celery-beat" "celeryBeat") .user) | default $ext.urlKey }}
{{- end }}
{{- end -}}

{{/* Logging (LOG_LEVEL, LOG_FORMAT) and Python's own switch. */}}
{{- define "tasklab.logEnv" -}}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/*
Environment of the api and the workers: RMQ_URL (the service's own broker user),
CALLBACK_SECRET, logging: (dict "root" $ "user" "api"). (The Celery beat gets only the
broker and logging: tasklab.rmqEnv and tasklab.logEnv.)
*/}}
{{- define "tasklab.commonEnv" -}}
{{ include "tasklab.rmqEnv" . }}
- name: CALLBACK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "tasklab.callbackSecretName" .root }}
      key: callback-secret
{{ include "tasklab.logEnv" .root }}
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

{{/*
A container's env list: the chart's own entries (`env`, rendered YAML), then the
component's extraEnv map (sorted by name), which wins: an entry of the chart's with a
name extraEnv sets is left out rather than listed twice (a duplicate name is refused by
server-side apply and breaks three-way merges).
*/}}
{{- define "tasklab.env" -}}
{{- $extra := .extra | default dict }}
{{- $own := list }}
{{- range fromYamlArray .env }}
{{- if not (hasKey $extra .name) }}
{{- $own = append $own . }}
{{- end }}
{{- end }}
{{- with $own }}
{{ toYaml . }}
{{- end }}
{{- range $name, $value := $extra }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
Heartbeat probe of a worker: the file named by HEARTBEAT_FILE must have been touched
within the last 60 seconds (the worker's main loop touches it every 10 s).
*/}}
{{/*
HAND_BACK_AFTER of a worker component: its grace period less its hand-back margin, so
that a running task is handed back (RETRYING, requeued) before the kubelet's SIGKILL.
*/}}
{{- define "tasklab.handBackAfter" -}}
{{- if le (int .terminationGracePeriodSeconds) (int .handBackMarginSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be above handBackMarginSeconds (%v): running tasks are handed back that long before the grace period ends" .terminationGracePeriodSeconds .handBackMarginSeconds) -}}
{{- end -}}
{{- sub (int .terminationGracePeriodSeconds) (int .handBackMarginSeconds) -}}
{{- end -}}

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

{{/*
Pod-level fields shared by every tasklab pod: (dict "root" $ "values" .Values.api).
Only the api may be given the Kubernetes API ("serviceAccount" "tasklab-api" "token"
true: its workers view, templates/api/rbac.yaml); every other pod mounts no token.
*/}}
{{- define "tasklab.podCommon" -}}
serviceAccountName: {{ .serviceAccount | default "tasklab" }}
automountServiceAccountToken: {{ .token | default false }}
# No docker-link variables for the namespace's Services: Service "api" would set
# API_PORT=tcp://... in every pod, which the api reads as its port.
enableServiceLinks: false
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

{{/* Checks that need two values at once (the schema checks each value alone). */}}
{{/*
Non-empty when the cluster serves the Prometheus Operator's CRDs (ServiceMonitor,
PrometheusRule). Without them those objects are left out (the install would fail on
an unknown kind) and NOTES.txt says so; `helm template` needs
`--api-versions monitoring.coreos.com/v1` to render them.
*/}}
{{- define "tasklab.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{- define "tasklab.validate" -}}
{{- $a := .Values.celeryWorker.autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "celeryWorker.autoscaling: minReplicas (%d) is above maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if lt (int .Values.celeryWorker.terminationGracePeriodSeconds) 30 -}}
{{- fail "celeryWorker.terminationGracePeriodSeconds: at least 30 s, so that a stopping worker can finish its report" -}}
{{- end -}}
{{- /* A task is given up as stuck only after its worker stopped retrying its report. */ -}}
{{- range $name := list "celeryWorker" "consumer" -}}
{{- $wait := dig "CALLBACK_MAX_WAIT" 900 ((index $.Values $name).extraEnv | default dict) | float64 -}}
{{- if lt (float64 $.Values.api.stuckGraceSeconds) $wait -}}
{{- fail (printf "api.stuckGraceSeconds (%v) is below %s's CALLBACK_MAX_WAIT (%v s, how long a worker retries a report): a task whose report is still on its way would be marked FAILED" $.Values.api.stuckGraceSeconds $name $wait) -}}
{{- end -}}
{{- end -}}
{{- /* The bundled broker must not time out a delivery a worker may rightly hold: the
consumer runs every attempt of a task (up to 3600 s of work and two reports retried up
to CALLBACK_MAX_WAIT each) in one delivery. */ -}}
{{- if .Values.rabbitmq.enabled -}}
{{- $r := .Values.retries -}}
{{- $wait := dig "CALLBACK_MAX_WAIT" 900 (.Values.consumer.extraEnv | default dict) | float64 -}}
{{- $attempts := add1 (int $r.maxRetries) | float64 -}}
{{- $longest := addf (mulf $attempts (addf 3600 (mulf 2 $wait))) (mulf (float64 $r.maxRetries) (float64 $r.backoffMax)) -}}
{{- $timeout := divf (float64 .Values.rabbitmq.config.consumerTimeoutMs) 1000 -}}
{{- if le $timeout $longest -}}
{{- fail (printf "rabbitmq.config.consumerTimeoutMs (%v s) is not above the longest delivery a consumer may hold (%v s with retries.maxRetries=%v and CALLBACK_MAX_WAIT=%v): the broker would close its channel mid-task and the task would run again" $timeout $longest $r.maxRetries $wait) -}}
{{- end -}}
{{- end -}}
{{- $auth := .Values.api.auth -}}
{{- if and $auth.existingSecret (not (or $auth.apiKeys $auth.basicLogin)) -}}
{{- fail "api.auth: existingSecret is set but apiKeys and basicLogin are both false; turn one on, or empty existingSecret to turn authentication off" -}}
{{- end -}}
{{- end -}}
