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

{{/* The Secret holding the administrator's username and password, and the erlang-cookie. */}}
{{- define "rabbitmq.secretName" -}}
{{- .Values.auth.existingSecret | default "rabbitmq" -}}
{{- end -}}

{{/* The Secret holding each service's broker user (<key>-username, <key>-password). */}}
{{- define "rabbitmq.usersSecretName" -}}
{{- .Values.auth.users.existingSecret | default "rabbitmq-users" -}}
{{- end -}}

{{/*
The broker's users besides the administrator: one per client of the broker, with only
the permissions on vhost "/" that what it does needs (YAML list; `key` names its keys
in the users Secret). RabbitMQ checks `configure` to declare an exchange or a queue,
`write` to publish to an exchange (the default one is "amq.default") and to bind a
queue, `read` to consume, fetch or purge a queue and to bind from an exchange; the
regexes match exchange and queue names alike. No user has the management tag but the
api and KEDA, which read queue figures from the management API (`monitoring`: read
only, every connection's name, nothing they may change).

- api: declares the two work queues, publishes tasks through the default exchange,
  broadcasts a cancelled Celery task's revoke (celery.pidbox, no reply), and declares
  and publishes to the cancel exchange (definitions.cancelExchange) a cancelled
  rabbitmq task's notice.
- celery-worker: consumes and acknowledges queue celery and publishes retries to its
  exchange; Celery's remote control (its mailbox queue celery@<pod>.celery.pidbox on
  the celery.pidbox broadcast exchange, replies on reply.celery.pidbox to
  <uuid>.reply.celery.pidbox queues: `celery inspect`, mingle at start) and events
  (heartbeats and gossip: celeryev, celeryev.<uuid>); the rpc:// result backend of a
  guide-style call made in the pod (`process_task.delay(...).get()`: a <uuid> reply
  queue, results published through the default exchange); `celery purge` (queue
  celery only).
- consumer: declares, consumes and settles queue direct_tasks; it publishes nothing.
  It reads the cancel notices: declares the cancel exchange and a queue of its own that
  the broker names (amq.gen-..., exclusive, auto-delete), binds it to the exchange
  (write on the queue, read on the exchange) and consumes it.
- celery-beat: publishes the housekeeping task to exchange celery, declaring the queue
  and its binding first as Celery does (the binding needs read on the exchange, which
  shares the queue's name).
- keda: access to vhost "/" (which the management API needs to show its queues) with
  no permission on anything in it: the `monitoring` tag lets it read queue celery's
  figures.
*/}}
{{- define "rabbitmq.serviceUsers" -}}
{{- $uuid := `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}` -}}
{{- /* Celery's names: its exchange and queue, the remote-control exchanges and queues,
the events exchange and a worker's gossip queue. */ -}}
{{- $celery := printf `celery|celery\.pidbox|reply\.celery\.pidbox|celery@[^/]+\.celery\.pidbox|%s\.reply\.celery\.pidbox|celeryev|celeryev\.%s` $uuid $uuid -}}
{{- /* The cancel notices' exchange, and the queues the broker names (a consumer's
queue of notices). */ -}}
{{- $cancel := regexQuoteMeta .Values.definitions.cancelExchange -}}
{{- $brokerNamed := `amq\.gen-.*` -}}
- key: api
  tags: [monitoring]
  configure: '^(celery|direct_tasks|celery\.pidbox|{{ $cancel }})$'
  write: '^(amq\.default|celery\.pidbox|{{ $cancel }})$'
  read: '^$'
- key: celery-worker
  tags: []
  configure: '^({{ $celery }}|{{ $uuid }})$'
  write: '^(amq\.default|{{ $celery }})$'
  read: '^({{ $celery }}|{{ $uuid }})$'
- key: consumer
  tags: []
  configure: '^(direct_tasks|{{ $cancel }}|{{ $brokerNamed }})$'
  write: '^({{ $brokerNamed }})$'
  read: '^(direct_tasks|{{ $cancel }}|{{ $brokerNamed }})$'
- key: celery-beat
  tags: []
  configure: '^celery$'
  write: '^celery$'
  read: '^celery$'
- key: keda
  tags: [monitoring]
  configure: '^$'
  write: '^$'
  read: '^$'
{{- end -}}

{{/* A user's placeholder in the definitions: (list "NAME" "celery-worker") -> __USER_CELERY_WORKER_NAME__ */}}
{{- define "rabbitmq.placeholder" -}}
__USER_{{ index . 1 | upper | replace "-" "_" }}_{{ index . 0 }}__
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
{{- /* The users are filled in by the setup container from the Secrets (placeholders):
the administrator, for operators, and one user per service (rabbitmq.serviceUsers). */ -}}
{{- $hashing := "rabbit_password_hashing_sha256" -}}
{{- $users := list (dict "name" "__RABBITMQ_USERNAME__" "password_hash" "__RABBITMQ_PASSWORD_HASH__" "hashing_algorithm" $hashing "tags" (list "administrator") "limits" (dict)) -}}
{{- $permissions := list (dict "user" "__RABBITMQ_USERNAME__" "vhost" "/" "configure" ".*" "write" ".*" "read" ".*") -}}
{{- range include "rabbitmq.serviceUsers" . | fromYamlArray -}}
{{- $name := include "rabbitmq.placeholder" (list "NAME" .key) -}}
{{- $users = append $users (dict "name" $name "password_hash" (include "rabbitmq.placeholder" (list "HASH" .key)) "hashing_algorithm" $hashing "tags" .tags "limits" (dict)) -}}
{{- $permissions = append $permissions (dict "user" $name "vhost" "/" "configure" .configure "write" .write "read" .read) -}}
{{- end -}}
{{- dict "users" $users "permissions" $permissions "vhosts" (list (dict "name" "/")) "queues" $queues "exchanges" $exchanges "bindings" $bindings "policies" $policies | toPrettyJson -}}
{{- end -}}

{{/*
Labels of one tasklab component's pods (set by the parent chart):
(dict "root" $ "component" "api").
*/}}
{{- define "rabbitmq.clientLabels" -}}
app.kubernetes.io/name: tasklab
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
