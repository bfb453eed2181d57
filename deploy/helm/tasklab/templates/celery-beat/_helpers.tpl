{{/* Helpers of the celery-beat Deployment alone. */}}

{{/* The Celery beat's schedule file (--schedule), on the pod's /tmp volume. */}}
{{- define "tasklab.beatSchedule" -}}
/tmp/celerybeat-schedule
{{- end -}}

{{/*
Probe of the Celery beat, which serves no port: its schedule file must have been
written within the last 600 seconds. The beat writes it (a shelve database: one file
or several with suffixes, depending on Python's dbm module) when it starts, then at
each sync, which it does on waking up once 3 minutes have passed (celery's sync_every),
and it wakes up at least every 5 minutes (its default max interval): two writes are
at most 8 minutes apart.
*/}}
{{- define "tasklab.beatCommand" -}}
- python
- -c
- |
  import glob, os, sys, time
  ages = []
  for path in glob.glob("{{ include "tasklab.beatSchedule" . }}*"):
      try:
          ages.append(time.time() - os.stat(path).st_mtime)
      except OSError:
          pass
  sys.exit(not ages or min(ages) > 600)
{{- end -}}

{{- define "tasklab.beatProbes" -}}
startupProbe:
  exec:
    command:
      {{- include "tasklab.beatCommand" . | nindent 6 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 24
readinessProbe:
  exec:
    command:
      {{- include "tasklab.beatCommand" . | nindent 6 }}
  periodSeconds: 30
  timeoutSeconds: 5
  failureThreshold: 2
livenessProbe:
  exec:
    command:
      {{- include "tasklab.beatCommand" . | nindent 6 }}
  periodSeconds: 60
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}
