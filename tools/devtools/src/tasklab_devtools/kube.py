"""A tasklab release on a Kubernetes cluster, for the e2e suite (``make e2e-kind``).

:class:`Release` waits for the rollouts with the ``kubernetes`` client, reads the
callback secret from the release's Secret, forwards a local port to the ``api``
Service (``kubectl port-forward``) and pins the number of Celery workers, whichever
way they are scaled (a plain Deployment, a KEDA ScaledObject or an HPA).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasklab_devtools.procs import ManagedProcess, free_port, wait_http_ok

__all__ = ["Release"]

#: KEDA's annotation that pauses a ScaledObject at a fixed replica count.
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def _client() -> Any:
    """The kubernetes client module, configured from the kubeconfig (current context)."""
    try:
        import kubernetes  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the e2e suite on a cluster needs the `kubernetes` package") from exc
    context = os.environ.get("TASKLAB_E2E_CONTEXT") or None
    kubernetes.config.load_kube_config(context=context)  # type: ignore[no-untyped-call,unused-ignore]
    return kubernetes


@dataclass
class Release:
    """The tasklab release in one namespace of the current kubeconfig context."""

    namespace: str = "tasklab"
    _k8s: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._k8s = _client()
        self.core = self._k8s.client.CoreV1Api()
        self.apps = self._k8s.client.AppsV1Api()
        self.custom = self._k8s.client.CustomObjectsApi()
        self.autoscaling = self._k8s.client.AutoscalingV2Api()

    # ------------------------------------------------------------------ state

    def wait_rollouts(self, timeout: float = 300) -> None:
        """Until every Deployment and StatefulSet of the namespace is rolled out."""
        deadline = time.monotonic() + timeout
        while True:
            pending = self._pending_rollouts()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not rolled out after {timeout:g} s: {pending}")
            time.sleep(2)

    def _pending_rollouts(self) -> list[str]:
        pending = []
        workloads = [
            *self.apps.list_namespaced_deployment(self.namespace).items,
            *self.apps.list_namespaced_stateful_set(self.namespace).items,
        ]
        if not workloads:
            return [f"no workloads in namespace {self.namespace}"]
        for w in workloads:
            want = w.spec.replicas if w.spec.replicas is not None else 1
            status = w.status
            done = (
                (status.observed_generation or 0) >= w.metadata.generation
                and (status.updated_replicas or 0) == want
                and (status.ready_replicas or 0) == want
                and (status.replicas or 0) == want
            )
            if not done:
                pending.append(f"{w.kind or type(w).__name__}/{w.metadata.name}")
        return pending

    def secret_value(self, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, self.namespace)
        return base64.b64decode(secret.data[key]).decode()

    def callback_secret(self) -> str:
        """CALLBACK_SECRET, from the Secret the api's Deployment reads it from."""
        deployment = self.apps.read_namespaced_deployment("api", self.namespace)
        container = deployment.spec.template.spec.containers[0]
        (env,) = [e for e in container.env if e.name == "CALLBACK_SECRET"]
        ref = env.value_from.secret_key_ref
        return self.secret_value(ref.name, ref.key)

    def pods(self, component: str) -> list[Any]:
        """Every pod of a component (e.g. consumer), terminating ones included."""
        items: list[Any] = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/component={component}"
        ).items
        return items

    def pod_names(self, component: str) -> list[str]:
        """Running, ready pods of a component (e.g. celery-worker), not terminating."""
        names = []
        for pod in self.pods(component):
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            if pod.metadata.deletion_timestamp is None and pod.status.phase == "Running" and ready:
                names.append(pod.metadata.name)
        return sorted(names)

    # ------------------------------------------------------------------ api access

    @contextlib.contextmanager
    def port_forward(
        self,
        service: str = "api",
        port: int = 8080,
        log_dir: Path | None = None,
        ready_path: str | None = "/readyz",
    ) -> Iterator[str]:
        """``kubectl port-forward svc/<service>`` on a free local port; yields its URL
        once ``ready_path`` answers 200 there (None: once the port accepts).

        kubectl ends for good on the first error a forwarded connection meets (one reset
        by the pod, the pod replaced): it is started again on the same port, as
        ``make port-forward`` does. Its output goes to
        ``log_dir/port-forward-<service>.log`` when given.
        """
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("kubectl not found on PATH")
        local = free_port()
        argv = [
            kubectl,
            "-n",
            self.namespace,
            "port-forward",
            f"service/{service}",
            f"{local}:{port}",
        ]
        context = os.environ.get("TASKLAB_E2E_CONTEXT")
        if context:
            argv[1:1] = ["--context", context]
        name = f"port-forward-{service}"
        log_path = None if log_dir is None else log_dir / f"{name}.log"
        proc = ManagedProcess(name, argv, dict(os.environ), log_path=log_path)
        proc.start()
        stop = threading.Event()

        def keep_up() -> None:
            while not stop.wait(0.5):
                if not proc.running():
                    proc.start()

        keeper = threading.Thread(target=keep_up, name=f"{name}-keeper", daemon=True)
        try:
            _wait_port(local, 30, proc)
            url = f"http://127.0.0.1:{local}"
            if ready_path is not None:
                wait_http_ok(f"{url}{ready_path}", 60, process=proc)
            keeper.start()
            yield url
        finally:
            stop.set()
            if keeper.is_alive():
                keeper.join(5)
            proc.terminate(5)

    # ------------------------------------------------------------------ scaling

    @contextlib.contextmanager
    def worker_replicas(self, replicas: int, timeout: float = 300) -> Iterator[list[str]]:
        """Pin celery-worker at ``replicas`` ready pods; restore the scaling afterwards.

        With KEDA the ScaledObject is paused at that count (a plain ``kubectl scale``
        would be undone by its HPA); with an HPA its minimum and maximum are pinned;
        otherwise the Deployment is scaled, as ``kubectl scale`` does.
        """
        restore = self._pin_workers(replicas)
        try:
            deadline = time.monotonic() + timeout
            while len(pods := self.pod_names("celery-worker")) != replicas:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"celery-worker has {pods}, not {replicas} pods")
                time.sleep(2)
            yield pods
        finally:
            restore()

    def _pin_workers(self, replicas: int) -> Any:
        name, ns = "celery-worker", self.namespace
        scaled = self._scaled_object(name)
        if scaled is not None:
            before = scaled["metadata"].get("annotations", {}).get(PAUSED_REPLICAS)
            self._annotate_scaled_object(name, str(replicas))
            return lambda: self._annotate_scaled_object(name, before)
        hpa = self._hpa(name)
        if hpa is not None:
            old = {"minReplicas": hpa.spec.min_replicas, "maxReplicas": hpa.spec.max_replicas}
            pinned = {"spec": {"minReplicas": replicas, "maxReplicas": replicas}}
            self.autoscaling.patch_namespaced_horizontal_pod_autoscaler(name, ns, pinned)
            return lambda: self.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                name, ns, {"spec": old}
            )
        old_count = self.apps.read_namespaced_deployment_scale(name, ns).spec.replicas
        self.apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
        return lambda: self.apps.patch_namespaced_deployment_scale(
            name, ns, {"spec": {"replicas": old_count}}
        )

    def _scaled_object(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                "keda.sh", "v1alpha1", self.namespace, "scaledobjects", name
            )
        except self._k8s.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _annotate_scaled_object(self, name: str, value: str | None) -> None:
        patch = {"metadata": {"annotations": {PAUSED_REPLICAS: value}}}
        self.custom.patch_namespaced_custom_object(
            "keda.sh", "v1alpha1", self.namespace, "scaledobjects", name, patch
        )

    def _hpa(self, name: str) -> Any:
        try:
            return self.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, self.namespace)
        except self._k8s.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _wait_port(port: int, timeout: float, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not proc.running():
            detail = proc.log_tail() if proc.log_path is not None else ""
            raise RuntimeError(f"kubectl port-forward exited:\n{detail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"port-forward to 127.0.0.1:{port} not up after {timeout:g} s")
        time.sleep(0.2)
