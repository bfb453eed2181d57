"""Every rendered object: valid against its schema, "restricted" pods, resources, probes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from tasklab_devtools import chart
from tasklab_devtools.chart import CHART_DIR, Obj
from tasklab_devtools.netpol import selects

SET_NAMES = [s.name for s in chart.value_sets()]
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and kind's node.
KUBERNETES_VERSIONS = ("1.27.0", "1.34.0")
#: Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def _is_custom(doc: Obj) -> bool:
    return doc["apiVersion"].split("/")[0] in chart.CRD_PACKAGES


@pytest.mark.parametrize("name", SET_NAMES)
def test_objects_match_the_kubernetes_schemas(rendered: dict[str, list[Obj]], name: str) -> None:
    """Strict schemas (unknown fields are errors); an object without a schema fails."""
    problems = []
    for doc in rendered[name]:
        if _is_custom(doc):
            continue
        for version in KUBERNETES_VERSIONS:
            errors = chart.k8s_schema_errors(doc, version)
            if errors is None:
                problems.append(f"{chart.label(doc)}: no schema for {doc['apiVersion']}")
            elif errors:
                problems.append(f"{chart.label(doc)} (Kubernetes {version}): {errors}")
    assert not problems, "\n".join(problems)


def test_custom_resources_match_their_models(rendered: dict[str, list[Obj]]) -> None:
    """ScaledObject, TriggerAuthentication, ServiceMonitor, PrometheusRule: types, enums,
    required fields and (strict) field names; a custom resource without a model fails."""
    entries = [(n, d) for n, docs in rendered.items() for d in docs if _is_custom(d)]
    kinds = {d["kind"] for _, d in entries}
    assert kinds == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    results = chart.crd_errors([d for _, d in entries])
    problems = [
        f"{n}: {chart.label(d)}: {'no model' if errors is None else errors}"
        for (n, d), errors in zip(entries, results, strict=True)
        if errors is None or errors
    ]
    assert not problems, "\n".join(problems)


def test_the_crd_check_catches_mistakes(rendered: dict[str, list[Obj]]) -> None:
    """The strict check of custom resources is not a no-op."""
    scaled = chart.find(rendered["keda"], "ScaledObject")[0]
    bad = {**scaled, "spec": {**scaled["spec"], "pollingIntervall": 5, "minReplicaCount": "1"}}
    (errors,) = chart.crd_errors([bad])
    assert errors is not None
    assert any("pollingIntervall" in e for e in errors), errors
    assert any("minReplicaCount" in e for e in errors), errors


def _restricted_problems(spec: Obj) -> list[str]:
    problems = []
    pod_ctx = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(flag)
    for volume in spec.get("volumes", []):
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {types}")
    for c in chart.containers(spec):
        ctx = c.get("securityContext", {})
        where = f"container {c['name']}"
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot not set")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{where}: runs as uid 0")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccomp profile {seccomp}")
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = ctx.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities not dropped")
        if not set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{where}: hostPort")
    return problems


@pytest.mark.parametrize("name", SET_NAMES)
def test_every_pod_meets_the_restricted_standard(rendered: dict[str, list[Obj]], name: str) -> None:
    """Non-root, no privilege escalation, ALL capabilities dropped, RuntimeDefault
    seccomp, only the allowed volume types, and a read-only root filesystem."""
    specs = list(chart.pod_specs(rendered[name]))
    assert len(specs) >= 4
    problems = [
        f"{chart.label(obj)}: {problem}"
        for obj, spec in specs
        for problem in _restricted_problems(spec)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", SET_NAMES)
def test_resources_probes_and_service_accounts(rendered: dict[str, list[Obj]], name: str) -> None:
    docs = rendered[name]
    problems = []
    accounts = {d["metadata"]["name"]: d for d in chart.find(docs, "ServiceAccount")}
    for obj, spec in chart.pod_specs(docs):
        where = chart.label(obj)
        # Only the api reads the Kubernetes API (its workers view), as tasklab-api.
        is_api = obj["kind"] == "Deployment" and obj["metadata"]["name"] == "api"
        if spec.get("automountServiceAccountToken") is not False and not (
            is_api and spec.get("serviceAccountName") == "tasklab-api"
        ):
            problems.append(f"{where}: mounts a service account token")
        account = accounts.get(spec.get("serviceAccountName", ""))
        if account is None or account.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: not on a rendered token-less ServiceAccount")
        for c in chart.containers(spec):
            for part in ("requests", "limits"):
                got = set(c.get("resources", {}).get(part, {}))
                if not {"cpu", "memory"} <= got:
                    problems.append(f"{where}/{c['name']}: {part} {sorted(got)}")
            probes = str([c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")])
            if "inspect" in probes:
                problems.append(f"{where}/{c['name']}: a probe runs celery inspect")
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for c in spec["containers"]:
                if not (c.get("livenessProbe") and c.get("readinessProbe")):
                    problems.append(f"{where}/{c['name']}: no liveness or readiness probe")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", SET_NAMES)
def test_no_service_link_variables(rendered: dict[str, list[Obj]], name: str) -> None:
    """Kubernetes would give every pod API_PORT=tcp://... for Service "api" (and the
    like for each Service of the namespace), which the api reads as its port: found on
    the real cluster, where the api's migration refused to start."""
    specs = list(chart.pod_specs(rendered[name]))
    assert specs
    linked = [
        chart.label(obj) for obj, spec in specs if spec.get("enableServiceLinks") is not False
    ]
    assert not linked, f"pods with service link variables: {linked}"


@pytest.mark.parametrize("name", SET_NAMES)
def test_only_the_api_reads_the_kubernetes_api(rendered: dict[str, list[Obj]], name: str) -> None:
    """One Role, bound to the api's own ServiceAccount, namespaced: get/list/watch on
    Deployments, pods and HPAs; no ClusterRole, no write unless scaleFromUi is set."""
    docs = rendered[name]
    assert not chart.find(docs, "ClusterRole") and not chart.find(docs, "ClusterRoleBinding")
    (role,) = chart.find(docs, "Role")
    (binding,) = chart.find(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "tasklab-api"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tasklab-api", "namespace": chart.NAMESPACE}
    ]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    reads = {
        (group, resource, verb)
        for group, resource in (
            ("apps", "deployments"),
            ("", "pods"),
            ("autoscaling", "horizontalpodautoscalers"),
        )
        for verb in ("get", "list", "watch")
    }
    assert granted == reads


def test_scaling_from_the_ui_grants_patch_on_the_two_workers_only(tools: None) -> None:
    docs = chart.render(["--set", "api.kubernetes.scaleFromUi=true"])
    (role,) = chart.find(docs, "Role")
    writes = [r for r in role["rules"] if set(r["verbs"]) - {"get", "list", "watch"}]
    assert writes == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["celery-worker", "consumer"],
            "verbs": ["get", "patch"],
        }
    ]
    (api,) = chart.find(docs, "Deployment", "api")
    env = {
        e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["K8S_SCALE_FROM_UI"] == "true"


def test_the_workers_view_can_be_turned_off(tools: None) -> None:
    docs = chart.render(["--set", "api.kubernetes.enabled=false"])
    assert not chart.find(docs, "Role") and not chart.find(docs, "RoleBinding")
    (api,) = chart.find(docs, "Deployment", "api")
    assert api["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --------------------------------------------------------------------- the Celery beat

#: Value sets without the Celery beat (celeryBeat.enabled=false).
WITHOUT_BEAT = {"no-beat"}


def _beat_objects(docs: list[Obj]) -> list[Obj]:
    return [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "celery-beat"
        or d["metadata"]["name"] == "celery-beat"
    ]


@pytest.mark.parametrize("name", SET_NAMES)
def test_exactly_one_beat(rendered: dict[str, list[Obj]], name: str) -> None:
    """One beat pod, always: a fixed single replica, replaced with Recreate (the old pod
    is gone before the new one starts), never the target of an autoscaler, and no
    disruption budget that would block a node drain on its only pod."""
    docs = rendered[name]
    if name in WITHOUT_BEAT:
        assert not _beat_objects(docs)
        return
    (beat,) = chart.find(docs, "Deployment", "celery-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert {d["kind"] for d in _beat_objects(docs)} == {"Deployment", "NetworkPolicy"}
    for scaler in chart.find(docs, "ScaledObject") + chart.find(docs, "HorizontalPodAutoscaler"):
        assert scaler["spec"]["scaleTargetRef"]["name"] != "celery-beat"
    labels = chart.pod_labels(beat)
    assert labels["app.kubernetes.io/component"] == "celery-beat"
    assert beat["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for pdb in chart.find(docs, "PodDisruptionBudget"):
        assert not selects(pdb["spec"]["selector"], labels), chart.label(pdb)
    # No other workload's selector takes the beat's pods, and the beat's none of theirs.
    for obj, _ in chart.pod_specs(docs):
        if obj["kind"] in ("Deployment", "StatefulSet") and obj is not beat:
            assert not selects(obj["spec"]["selector"], labels), chart.label(obj)
            assert not selects(beat["spec"]["selector"], chart.pod_labels(obj))


@pytest.mark.parametrize("name", [n for n in SET_NAMES if n not in WITHOUT_BEAT])
def test_beat_pod(rendered: dict[str, list[Obj]], name: str) -> None:
    """The chart's restricted security contexts, its resources, a writable /tmp on an
    emptyDir for the schedule file, the worker's image, and a short grace period."""
    docs = rendered[name]
    values = chart_values()
    (beat,) = chart.find(docs, "Deployment", "celery-beat")
    (worker,) = chart.find(docs, "Deployment", "celery-worker")
    spec = beat["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert not spec.get("initContainers")
    assert spec["securityContext"] == values["podSecurityContext"]
    assert container["securityContext"] == values["containerSecurityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"] == values["celeryBeat"]["resources"]
    assert spec["terminationGracePeriodSeconds"] <= 60
    assert not container.get("ports")
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = spec["volumes"]
    assert volume["name"] == mount["name"]
    assert set(volume) == {"name", "emptyDir"}
    assert volume["emptyDir"].get("sizeLimit")
    worker_container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == worker_container["image"]
    assert container["imagePullPolicy"] == worker_container["imagePullPolicy"]
    assert spec.get("imagePullSecrets") == worker["spec"]["template"]["spec"].get(
        "imagePullSecrets"
    )


def test_beat_image_and_pod_overrides(tools: None) -> None:
    """celeryBeat.image overrides the worker's image (each part on its own), and the
    beat's own scheduling values reach its pod."""

    def beat_spec(*args: str) -> Obj:
        (beat,) = chart.find(chart.render(args), "Deployment", "celery-beat")
        spec: Obj = beat["spec"]["template"]["spec"]
        return {**spec, "annotations": beat["spec"]["template"]["metadata"].get("annotations")}

    def image(*args: str) -> str:
        image: str = beat_spec(*args)["containers"][0]["image"]
        return image

    assert image("--set", "image.tag=abc") == "tasklab/celery-worker:abc"
    assert image("--set", "celeryWorker.image.tag=w1") == "tasklab/celery-worker:w1"
    assert image("--set", "celeryWorker.image.repository=x/worker") == "x/worker:0.1.0"
    assert (
        image("--set", "celeryBeat.image.repository=x/beat", "--set", "celeryWorker.image.tag=w1")
        == "x/beat:w1"
    )
    assert (
        image("--set", "image.registry=r.example", "--set", "celeryBeat.image.tag=b1")
        == "r.example/tasklab/celery-worker:b1"
    )
    spec = beat_spec(
        "--set",
        "celeryBeat.nodeSelector.pool=small",
        "--set",
        "celeryBeat.podAnnotations.note=x",
        "--set",
        "celeryBeat.terminationGracePeriodSeconds=20",
        "--set",
        "celeryBeat.extraEnv.LOG_LEVEL=DEBUG",
    )
    assert spec["nodeSelector"] == {"pool": "small"}
    assert spec["annotations"] == {"note": "x"}
    assert spec["terminationGracePeriodSeconds"] == 20
    # extraEnv comes last and wins over the chart's own (a log level for the beat
    # alone), which is then left out: a name twice is refused by server-side apply.
    env = spec["containers"][0]["env"]
    assert env[-1] == {"name": "LOG_LEVEL", "value": "DEBUG"}
    assert [e["name"] for e in env].count("LOG_LEVEL") == 1


def test_extra_env_replaces_the_charts_own_entries(default_docs: list[Obj]) -> None:
    """Every chart-set variable a component's extraEnv may set (all but the reserved
    ones the schema refuses) ends up once in the container, with extraEnv's value."""
    components = {
        "api": "api",
        "celeryWorker": "celery-worker",
        "consumer": "consumer",
        "celeryBeat": "celery-beat",
    }
    plain = default_docs
    own = {
        key: [
            e["name"]
            for e in chart.find(plain, "Deployment", name)[0]["spec"]["template"]["spec"][
                "containers"
            ][0]["env"]
            if "value" in e
        ]
        for key, name in components.items()
    }
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    reserved = set(schema["definitions"]["extraEnv"]["propertyNames"]["not"]["enum"])
    args = [
        f"--set-string={key}.extraEnv.{var}=from-extra"
        for key, names in own.items()
        for var in names
        if var not in reserved
    ]
    assert len(args) > 10, own
    docs = chart.render(args)
    for key, name in components.items():
        (deployment,) = chart.find(docs, "Deployment", name)
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), (name, names)
        for var in own[key]:
            if var not in reserved:
                assert {"name": var, "value": "from-extra"} in env, (name, var)


def test_beat_disabled_renders_nothing_of_it(tools: None) -> None:
    docs = chart.render(
        ["--set", "celeryBeat.enabled=false", "--set", "celeryWorker.autoscaling.mode=keda"]
    )
    assert not _beat_objects(docs)
    assert chart.find(docs, "Deployment", "celery-worker")


@pytest.mark.parametrize(
    ("service", "allow", "open_"),
    [
        ("ClusterIP", None, False),
        ("NodePort", None, True),
        ("LoadBalancer", None, True),
        ("LoadBalancer", "false", False),  # kept closed on purpose (extraFrom lists peers)
        ("ClusterIP", "true", True),
    ],
)
def test_a_published_api_service_is_reachable_through_the_network_policy(
    tools: None, service: str, allow: str | None, open_: bool
) -> None:
    """A NodePort or LoadBalancer api Service is meant to be reached from outside the
    namespace: unless told otherwise, the NetworkPolicy must not drop that traffic."""
    args = ["--set", f"api.service.type={service}"]
    if allow is not None:
        args += ["--set", f"api.networkPolicy.allowExternal={allow}"]
    (policy,) = chart.find(chart.render(args), "NetworkPolicy", "api")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert ({"ipBlock": {"cidr": "0.0.0.0/0"}} in peers) == open_, peers


def test_the_brokers_two_scrapes_are_two_targets(default_docs: list[Obj]) -> None:
    """Both endpoints scrape one port under one job: a label must tell them apart, or
    their `up` and `scrape_*` series are one series written by two scrapes."""
    (monitor,) = chart.find(default_docs, "ServiceMonitor", "rabbitmq")
    endpoints = monitor["spec"]["endpoints"]
    assert len(endpoints) == 2
    marks = [
        (r["targetLabel"], r["replacement"])
        for e in endpoints
        for r in e.get("relabelings", [])
        if r.get("targetLabel") == "scrape"
    ]
    assert len(marks) == 2 and len(set(marks)) == 2, endpoints
