{{/*
Names are fixed (one release per namespace): the StatefulSet, its Service and its
Secret are all called "rabbitmq", as the services' URLs and the docs say.
*/}}
{{- define "rabbitmq.name" -}}rabbitmq{{- end -}}

{{- define "rabbitmq.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "rabbitmq.selectorLabels" -}}
app.kubernetes.io/name: rabbitmq
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "rabbitmq.labels" -}}
{{ include "rabbitmq.selectorLabels" . }}
{{ include "rabbitmq.commonLabels" . }}
{{- end -}}

{{/* Labels of every object except the component (set by the caller). */}}
{{- define "rabbitmq.commonLabels" -}}
helm.sh/chart: {{ include "rabbitmq.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tasklab
{{- end -}}

{{/* The Secret holding username, password and erlang-cookie. */}}
{{- define "rabbitmq.secretName" -}}
{{- .Values.auth.existingSecret | default "rabbitmq" -}}
{{- end -}}

{{- define "rabbitmq.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- if .Values.image.digest -}}{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* rabbitmq.conf (the node's own settings; the user is added by the setup container). */}}
{{- define "rabbitmq.conf" -}}
## Listeners: AMQP, management UI/API, prometheus metrics.
listeners.tcp.default = 5672
management.tcp.port = 15672
prometheus.tcp.port = 15692
## No guest user: the only user comes from the Secret (definitions, 20-default-user.conf).
loopback_users.guest = true
## Logs to the container's output only (the root filesystem is read-only).
log.console = true
log.console.level = info
log.file = false
## Resource alarms.
vm_memory_high_watermark.absolute = {{ .Values.config.memoryHighWatermark }}
disk_free_limit.absolute = {{ .Values.config.diskFreeLimit }}
## A delivery unacknowledged for longer closes its channel (the message is requeued).
consumer_timeout = {{ int64 .Values.config.consumerTimeoutMs }}
## Queues, the dead-letter exchange and the policies, loaded at every boot.
definitions.import_backend = local_filesystem
definitions.local.path = /etc/rabbitmq/definitions.json
{{- with .Values.config.extra }}
## Extra settings (values: config.extra).
{{ . }}
{{- end }}
{{- end -}}

{{/* definitions.json: durable queues, the dead-letter exchange and queue, the cancel
exchange, policies. */}}
{{- define "rabbitmq.definitions" -}}
{{- $d := .Values.definitions -}}
{{- $queues := list -}}
{{- range $d.workQueues -}}
{{- $queues = append $queues (dict "name" . "vhost" "/" "durable" true "auto_delete" false "arguments" (dict)) -}}
{{- end -}}
{{- $queues = append $queues (dict "name" $d.deadLetterQueue "vhost" "/" "durable" true "auto_delete" false "arguments" (dict)) -}}
{{- $exchanges := list (dict "name" $d.deadLetterExchange "vhost" "/" "type" "fanout" "durable" true "auto_delete" false "internal" false "arguments" (dict)) -}}
{{- $exchanges = append $exchanges (dict "name" $d.cancelExchange "vhost" "/" "type" "fanout" "durable" true "auto_delete" false "internal" false "arguments" (dict)) -}}
{{- $bindings := list (dict "source" $d.deadLetterExchange "vhost" "/" "destination" $d.deadLetterQueue "destination_type" "queue" "routing_key" "" "arguments" (dict)) -}}
{{- $work := dict "max-length" (int64 $d.maxQueueLength) "overflow" "reject-publish" "dead-letter-exchange" $d.deadLetterExchange -}}
{{- $dead := dict "max-length" (int64 $d.deadLetterMaxLength) "overflow" "drop-head" -}}
{{- $quoted := list -}}
{{- range $d.workQueues -}}{{- $quoted = append $quoted (regexQuoteMeta .) -}}{{- end -}}
{{- $pattern := printf "^(%s)$" (join "|" $quoted) -}}
{{- $policies := list
      (dict "vhost" "/" "name" "tasklab-work-queues" "pattern" $pattern "apply-to" "queues" "priority" 10 "definition" $work)
      (dict "vhost" "/" "name" "tasklab-dead-letters" "pattern" (printf "^%s$" (regexQuoteMeta $d.deadLetterQueue)) "apply-to" "queues" "priority" 10 "definition" $dead) -}}
{{- /* The user is filled in by the setup container from the Secret (placeholders). */ -}}
{{- $users := list (dict "name" "__RABBITMQ_USERNAME__" "password_hash" "__RABBITMQ_PASSWORD_HASH__" "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list "administrator") "limits" (dict)) -}}
{{- $permissions := list (dict "user" "__RABBITMQ_USERNAME__" "vhost" "/" "configure" ".*" "write" ".*" "read" ".*") -}}
{{- dict "users" $users "permissions" $permissions "vhosts" (list (dict "name" "/")) "queues" $queues "exchanges" $exchanges "bindings" $bindings "policies" $policies | toPrettyJson -}}
{{- end -}}
