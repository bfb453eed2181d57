{{/*
NetworkPolicy pieces. Peers inside the release are selected by the labels the chart
sets on its pods (name, instance and component), never by part-of, which any pod may
carry. Every component's egress is listed: DNS, then only what it connects to.
*/}}

{{/* A tasklab component's pods as a peer: (dict "root" $ "component" "api"). */}}
{{- define "tasklab.np.component" -}}
podSelector:
  matchLabels:
    {{- include "tasklab.selectorLabels" . | nindent 4 }}
{{- end -}}

{{/* TCP ports of a rule from a list of numbers. */}}
{{- define "tasklab.np.tcpPorts" -}}
{{- range . }}
- port: {{ . }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* Egress: DNS queries to the cluster DNS (networkPolicy.egress.dns). */}}
{{- define "tasklab.np.dnsEgress" -}}
{{- with .Values.networkPolicy.egress.dns }}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- toYaml .ports | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
Egress to the broker: AMQP, and with "management" true the management API:
(dict "root" $ "management" true). The bundled broker's pod, or the external broker's
addresses (networkPolicy.egress.externalRabbitmq) on its AMQP ports and the port of
externalRabbitmq.managementUrl.
*/}}
{{- define "tasklab.np.brokerEgress" -}}
{{- $root := .root }}
{{- if $root.Values.rabbitmq.enabled }}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/name: rabbitmq
          app.kubernetes.io/instance: {{ $root.Release.Name }}
          app.kubernetes.io/component: broker
  ports:
    {{- include "tasklab.np.tcpPorts" (ternary (list 5672 15672) (list 5672) .management) | trim | nindent 4 }}
{{- else }}
{{- $ext := $root.Values.networkPolicy.egress.externalRabbitmq }}
{{- $ports := $ext.amqpPorts }}
{{- with and .management $root.Values.externalRabbitmq.managementUrl }}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- $ports = append $ports ($port | default (ternary "443" "80" (eq $url.scheme "https")) | int) }}
{{- end }}
- to:
    {{- toYaml $ext.to | nindent 4 }}
  ports:
    {{- include "tasklab.np.tcpPorts" ($ports | uniq) | trim | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Egress of a worker to the api's internal port (its signed routes). */}}
{{- define "tasklab.np.callbackEgress" -}}
- to:
    - {{ include "tasklab.np.component" (dict "root" . "component" "api") | nindent 6 | trim }}
  ports:
    {{- include "tasklab.np.tcpPorts" (list (include "tasklab.internalPort" . | int)) | trim | nindent 4 }}
{{- end -}}

{{/* Egress rules given in values as {to: [...], ports: [numbers]}. */}}
{{- define "tasklab.np.valuesEgress" -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- include "tasklab.np.tcpPorts" .ports | trim | nindent 4 }}
{{- end -}}
