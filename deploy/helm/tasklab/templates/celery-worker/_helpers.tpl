{{/* Helpers of the celery-worker's templates alone (its HPA and KEDA's). */}}

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
