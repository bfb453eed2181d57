"""The worker Deployments as Kubernetes sees them, read with the official client.

Flower and the broker see Celery workers and consumers; Kubernetes sees the pods that
run them. On a cluster (the pod's service account token and ``KUBERNETES_SERVICE_HOST``
present) the api reads, in its own namespace only, each of ``K8S_WORKLOADS``
(celery-worker and consumer): the Deployment's desired and ready replicas, its pods
(name, phase, readiness, restarts, age) and the HorizontalPodAutoscaler that targets
it (KEDA's is one too). With ``K8S_SCALE_FROM_UI`` it may also set a Deployment's
replicas, refused while an autoscaler owns the count. The chart's Role grants exactly
that (get/list/watch on Deployments, pods and HPAs; patch on the two Deployments'
scale). Outside a cluster :attr:`ClusterView.available` is false with the reason.

The client is synchronous: each read runs in a thread, and a snapshot is cached for a
few seconds, so the UI's polling costs the apiserver one round of reads per interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasklab_api.schemas import AutoscalerOut, ClusterOut, PodOut, WorkloadOut

log = logging.getLogger("tasklab.api")

__all__ = ["ClusterView", "ScaleRefused"]

TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Seconds a snapshot is reused.
CACHE_SECONDS = 3.0
#: Most replicas the UI may set.
MAX_UI_REPLICAS = 20


class ScaleRefused(Exception):
    """A scale request that is not carried out: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _age(since: datetime | None) -> float | None:
    if since is None:
        return None
    return max(0.0, (datetime.now(UTC) - since).total_seconds())


class ClusterView:
    """The release's worker Deployments, their pods and autoscalers."""

    def __init__(
        self, namespace: str | None, workloads: tuple[str, ...], scale_from_ui: bool
    ) -> None:
        self.workloads = workloads
        self.scale_from_ui = scale_from_ui
        self.namespace = namespace
        self.reason: str | None = None
        self._apps: Any = None
        self._core: Any = None
        self._autoscaling: Any = None
        self._cached: tuple[float, ClusterOut] | None = None
        self._lock = asyncio.Lock()
        if not os.environ.get("KUBERNETES_SERVICE_HOST") or not TOKEN.exists():
            self.reason = "not running in a Kubernetes pod with a service account token"
            return
        try:
            import kubernetes

            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except Exception as exc:  # the client's config errors have no common base
            self.reason = f"cannot use the Kubernetes API: {exc}"
            return
        if self.namespace is None and NAMESPACE_FILE.exists():
            self.namespace = NAMESPACE_FILE.read_text().strip()
        if not self.namespace:
            self.reason = "no namespace (set K8S_NAMESPACE)"
            return
        self._apps = kubernetes.client.AppsV1Api()
        self._core = kubernetes.client.CoreV1Api()
        self._autoscaling = kubernetes.client.AutoscalingV2Api()

    @property
    def available(self) -> bool:
        return self.reason is None

    def summary(self) -> str:
        """What the view shows and may do, for the startup log."""
        if not self.available:
            return f"off ({self.reason})"
        scale = "scaling from the UI on" if self.scale_from_ui else "scaling from the UI off"
        return f"namespace {self.namespace}, {', '.join(self.workloads)}; {scale}"

    # ------------------------------------------------------------------ reads

    async def snapshot(self) -> ClusterOut:
        """What the UI's workers view shows (cached for :data:`CACHE_SECONDS`)."""
        if not self.available:
            return ClusterOut(available=False, reason=self.reason)
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            try:
                found = await asyncio.to_thread(self._read)
            except Exception as exc:  # the apiserver away, RBAC missing: say so, no 500
                log.warning("reading the worker Deployments failed: %s", exc)
                return ClusterOut(available=False, namespace=self.namespace, reason=_short(exc))
            self._cached = (now, found)
            return found

    def _read(self) -> ClusterOut:
        hpas = self._autoscaling.list_namespaced_horizontal_pod_autoscaler(self.namespace).items
        by_target = {h.spec.scale_target_ref.name: h for h in hpas}
        workloads = []
        for name in self.workloads:
            deployment = self._apps.read_namespaced_deployment(name, self.namespace)
            selector = ",".join(
                f"{k}={v}" for k, v in (deployment.spec.selector.match_labels or {}).items()
            )
            pods = self._core.list_namespaced_pod(self.namespace, label_selector=selector).items
            hpa = by_target.get(name)
            workloads.append(
                WorkloadOut(
                    name=name,
                    desired=deployment.spec.replicas or 0,
                    ready=deployment.status.ready_replicas or 0,
                    updated=deployment.status.updated_replicas or 0,
                    autoscaler=None if hpa is None else _autoscaler(hpa),
                    pods=sorted((_pod(p) for p in pods), key=lambda p: p.name),
                )
            )
        return ClusterOut(
            available=True,
            namespace=self.namespace,
            scale_from_ui=self.scale_from_ui,
            workloads=workloads,
        )

    # ------------------------------------------------------------------ scale

    async def scale(self, name: str, replicas: int) -> ClusterOut:
        """Set a worker Deployment's replicas, as ``kubectl scale`` does."""
        if not self.available:
            raise ScaleRefused(409, f"not on Kubernetes: {self.reason}")
        if not self.scale_from_ui:
            raise ScaleRefused(
                403,
                "scaling from the UI is off (chart value api.kubernetes.scaleFromUi, "
                "K8S_SCALE_FROM_UI); use kubectl scale",
            )
        if name not in self.workloads:
            raise ScaleRefused(404, f"no such worker Deployment: {name}")
        current = await self.snapshot()
        owned = next((w.autoscaler for w in current.workloads if w.name == name), None)
        if owned is not None:
            raise ScaleRefused(
                409,
                f"the autoscaler {owned.kind} {owned.name} owns the replica count of {name} "
                f"({owned.min_replicas}-{owned.max_replicas}); change it there (with KEDA, "
                "pause the ScaledObject)",
            )
        try:
            await asyncio.to_thread(
                self._apps.patch_namespaced_deployment_scale,
                name,
                self.namespace,
                {"spec": {"replicas": replicas}},
            )
        except Exception as exc:
            raise ScaleRefused(502, f"the Kubernetes API refused: {_short(exc)}") from exc
        log.info("scaled deployment %s to %d replicas from the UI", name, replicas)
        self._cached = None
        return await self.snapshot()


def _short(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{status} {reason}"
    return str(exc)[:200]


def _pod(pod: Any) -> PodOut:
    statuses = pod.status.container_statuses or []
    conditions = pod.status.conditions or []
    return PodOut(
        name=pod.metadata.name,
        phase=pod.status.phase or "Unknown",
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        restarts=sum(s.restart_count or 0 for s in statuses),
        age_seconds=_age(pod.status.start_time),
        terminating=pod.metadata.deletion_timestamp is not None,
    )


def _autoscaler(hpa: Any) -> AutoscalerOut:
    owners = [o.kind for o in hpa.metadata.owner_references or []]
    return AutoscalerOut(
        kind="KEDA ScaledObject" if "ScaledObject" in owners else "HorizontalPodAutoscaler",
        name=hpa.metadata.name,
        min_replicas=hpa.spec.min_replicas or 1,
        max_replicas=hpa.spec.max_replicas,
        current=hpa.status.current_replicas or 0,
        desired=hpa.status.desired_replicas or 0,
    )
