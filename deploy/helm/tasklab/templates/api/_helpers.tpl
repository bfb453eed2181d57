{{/* Helpers of the api's templates alone. */}}

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
