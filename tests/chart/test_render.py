"""helm lint --strict and helm template over every value set; the schema refuses bad values."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tasklab_devtools import chart
from tasklab_devtools.chart import CHART_DIR, Obj

VALUE_SETS = chart.value_sets()
SET_NAMES = [s.name for s in VALUE_SETS]
#: Value sets without the Celery beat (celeryBeat.enabled=false).
WITHOUT_BEAT = {"no-beat"}

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def test_every_values_file_of_the_chart_is_checked() -> None:
    files = {p.name for p in (CHART_DIR / "ci").iterdir()}
    assert files == {f"{s.name}-values.yaml" for s in VALUE_SETS if s.args and not s.kind}


def test_lint_strict(tools: None) -> None:
    """Every value set, and the broker subchart on its own."""
    runs = [(s.name, ("lint", "--strict", str(CHART_DIR), *s.args)) for s in VALUE_SETS]
    runs.append(("subchart", ("lint", "--strict", str(CHART_DIR / "charts" / "rabbitmq"))))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda run: chart.helm(*run[1], check=False), runs))
    failed = {
        name: done.stdout + done.stderr
        for (name, _), done in zip(runs, results, strict=True)
        if done.returncode != 0 or "[WARNING]" in done.stdout
    }
    assert not failed, failed


@pytest.mark.parametrize("name", SET_NAMES)
def test_workloads_names_and_labels(rendered: dict[str, list[Obj]], name: str) -> None:
    docs = rendered[name]
    beat = set() if name in WITHOUT_BEAT else {"celery-beat"}
    assert {d["metadata"]["name"] for d in chart.find(docs, "Deployment")} == {
        "api",
        "celery-worker",
        "consumer",
        *beat,
    }
    bundled = name != "external"
    assert bool(chart.find(docs, "StatefulSet", "rabbitmq")) == bundled
    for doc in docs:
        meta = doc["metadata"]
        assert meta.get("namespace") == "tasklab", chart.label(doc)
        missing = [key for key in RECOMMENDED_LABELS if key not in meta.get("labels", {})]
        assert not missing, (chart.label(doc), missing)


def test_resource_names_are_unique(rendered: dict[str, list[Obj]]) -> None:
    for name, docs in rendered.items():
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), name


# (id, helm arguments, a fragment of the expected error)
BAD_VALUES: list[tuple[str, list[str], str]] = [
    ("typo-top-level", ["--set", "apii.replicaCount=1"], "additional properties 'apii'"),
    ("typo-nested", ["--set", "celeryWorker.concurency=3"], "'concurency' not allowed"),
    ("typo-subchart", ["--set", "rabbitmq.persistance.size=1Gi"], "'persistance' not allowed"),
    ("sqlite-two-api-replicas", ["--set", "api.replicaCount=2"], "/api/replicaCount"),
    ("unknown-database", ["--set", "database.type=postgres"], "/database/type"),
    ("external-db-without-secret", ["--set", "database.type=external"], "existingSecret"),
    ("no-broker-at-all", ["--set", "rabbitmq.enabled=false"], "/externalRabbitmq/existingSecret"),
    (
        "keda-without-management-url",
        [
            "--set",
            "rabbitmq.enabled=false",
            "--set",
            "externalRabbitmq.existingSecret=mq",
            "--set",
            "celeryWorker.autoscaling.mode=keda",
        ],
        "/externalRabbitmq/managementUrl",
    ),
    ("unknown-autoscaler", ["--set", "celeryWorker.autoscaling.mode=kedaa"], "/mode"),
    ("image-tag-latest", ["--set", "image.tag=latest"], "/image/tag"),
    ("broker-image-latest", ["--set", "rabbitmq.image.tag=latest"], "/image/tag"),
    (
        "writable-root-fs",
        ["--set", "containerSecurityContext.readOnlyRootFilesystem=false"],
        "readOnlyRootFilesystem",
    ),
    ("root-pod", ["--set", "podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    ("no-limits", ["--set", "api.resources.limits=null"], "limits"),
    ("bad-quantity", ["--set", "consumer.resources.limits.memory=lots"], "memory"),
    ("zero-concurrency", ["--set", "celeryWorker.concurrency=0"], "/concurrency"),
    ("too-many-retries", ["--set", "retries.maxRetries=11"], "/retries/maxRetries"),
    (
        "short-consumer-timeout",
        ["--set", "rabbitmq.config.consumerTimeoutMs=60000"],
        "/config/consumerTimeoutMs",
    ),
    ("bad-secret-name", ["--set", "rabbitmq.auth.existingSecret=Bad_Name"], "existingSecret"),
    ("reserved-extra-env", ["--set", "api.extraEnv.RMQ_URL=amqp://x"], "propertyName 'RMQ_URL'"),
    ("bad-log-format", ["--set", "logFormat=yaml"], "/logFormat"),
    ("auth-bad-secret-name", ["--set", "api.auth.existingSecret=Bad_Name"], "existingSecret"),
    ("auth-typo", ["--set", "api.auth.apiKey=true"], "'apiKey' not allowed"),
    ("credentials-in-extra-env", ["--set", "api.extraEnv.API_KEYS=x"], "'API_KEYS'"),
    (
        "auth-without-credentials",
        ["--set", "api.auth.existingSecret=auth,api.auth.apiKeys=false,api.auth.basicLogin=false"],
        "api.auth: existingSecret is set but apiKeys and basicLogin are both false",
    ),
    ("interval-not-a-duration", ["--set", "monitoring.interval=30"], "/monitoring/interval"),
    ("node-port-out-of-range", ["--set", "api.service.nodePort=80"], "/api/service/nodePort"),
    (
        "min-above-max-replicas",
        ["--set", "celeryWorker.autoscaling.minReplicas=5,celeryWorker.autoscaling.maxReplicas=2"],
        "minReplicas (5) is above maxReplicas (2)",
    ),
    (
        "grace-too-short",
        ["--set", "celeryWorker.terminationGracePeriodSeconds=10"],
        "terminationGracePeriodSeconds",
    ),
    ("delivery-limit-zero", ["--set", "api.deliveryLimit=0"], "/api/deliveryLimit"),
    ("delivery-limit-huge", ["--set", "api.deliveryLimit=101"], "/api/deliveryLimit"),
    ("stuck-grace-zero", ["--set", "api.stuckGraceSeconds=0"], "/api/stuckGraceSeconds"),
    (
        "consumer-timeout-below-retries",
        ["--set", "retries.maxRetries=6"],
        "is not above the longest delivery a consumer may hold (37980 s",
    ),
    (
        "consumer-timeout-below-one-attempt",
        ["--set", "rabbitmq.config.consumerTimeoutMs=3900000"],
        "rabbitmq.config.consumerTimeoutMs (3900 s) is not above the longest delivery",
    ),
    (
        "stuck-grace-below-report-retries",
        ["--set", "api.stuckGraceSeconds=600"],
        "api.stuckGraceSeconds (600) is below celeryWorker's CALLBACK_MAX_WAIT",
    ),
    (
        "negative-retention",
        ["--set", "api.historyRetentionDays=-1"],
        "/api/historyRetentionDays",
    ),
    ("no-delivery-limit", ["--set", "api.deliveryLimit=null"], "deliveryLimit"),
    # Exactly one beat: no replica count, no autoscaling to set.
    ("beat-replicas", ["--set", "celeryBeat.replicaCount=2"], "'replicaCount' not allowed"),
    (
        "beat-autoscaling",
        ["--set", "celeryBeat.autoscaling.mode=keda"],
        "'autoscaling' not allowed",
    ),
    (
        "beat-interval-zero",
        ["--set", "celeryBeat.housekeepingInterval=0"],
        "/celeryBeat/housekeepingInterval",
    ),
    (
        "beat-interval-over-a-day",
        ["--set", "celeryBeat.housekeepingInterval=86401"],
        "/celeryBeat/housekeepingInterval",
    ),
    ("beat-image-latest", ["--set", "celeryBeat.image.tag=latest"], "/celeryBeat/image/tag"),
    (
        "beat-reserved-extra-env",
        ["--set", "celeryBeat.extraEnv.HOUSEKEEPING_INTERVAL=5"],
        "propertyName 'HOUSEKEEPING_INTERVAL'",
    ),
    # The broker admits components by the chart's labels, not by any label set.
    ("broker-peer-unknown", ["--set", "rabbitmq.networkPolicy.amqpFrom[0]=debug"], "amqpFrom"),
    (
        "broker-client-labels",
        ["--set", "rabbitmq.networkPolicy.clientPodLabels.a=b"],
        "'clientPodLabels' not allowed",
    ),
    ("users-secret-bad-name", ["--set", "rabbitmq.auth.users.existingSecret=Bad_Name"], "users"),
    ("url-key-bad", ["--set", "externalRabbitmq.urlKeys.api=a b"], "/externalRabbitmq/urlKeys/api"),
    ("url-key-unknown", ["--set", "externalRabbitmq.urlKeys.flower=x"], "'flower' not allowed"),
    ("egress-port-zero", ["--set-json", "networkPolicy.egress.database.ports=[0]"], "ports"),
    (
        "egress-to-nowhere",
        ["--set-json", "networkPolicy.egress.kubernetesApi.to=[]"],
        "/networkPolicy/egress/kubernetesApi/to",
    ),
    (
        "dns-bad-protocol",
        ["--set-json", 'networkPolicy.egress.dns.ports=[{"port":53,"protocol":"ICMP"}]'],
        "protocol",
    ),
    (
        "keda-operator-nowhere",
        ["--set-json", "celeryWorker.autoscaling.keda.operatorFrom=[]"],
        "operatorFrom",
    ),
    (
        "beat-long-grace",
        ["--set", "celeryBeat.terminationGracePeriodSeconds=3900"],
        "/celeryBeat/terminationGracePeriodSeconds",
    ),
]


def test_schema_refuses_bad_values(tools: None) -> None:
    def attempt(case: tuple[str, list[str], str]) -> str | None:
        name, args, expected = case
        done = chart.helm("template", "t", str(CHART_DIR), *args, check=False)
        output = done.stdout + done.stderr
        if done.returncode == 0:
            return f"{name}: accepted"
        if expected not in output:
            return f"{name}: refused, but not for {expected!r}:\n{output[-600:]}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(attempt, BAD_VALUES) if p]
    assert not problems, "\n".join(problems)


def test_notes_show_the_port_forwards(tools: None) -> None:
    """NOTES.txt renders for every value set and says how to reach the UI and the broker."""

    def notes(args: tuple[str, ...]) -> str:
        done = chart.helm(
            "install", "tasklab", str(CHART_DIR), "-n", "tasklab", "--dry-run=client", *args
        )
        return done.stdout.split("NOTES:", 1)[1]

    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = dict(zip(SET_NAMES, pool.map(notes, [s.args for s in VALUE_SETS]), strict=True))
    for name, text in texts.items():
        assert "kubectl -n tasklab port-forward svc/api 8080:8080" in text, name
        rollout = next(line for line in text.splitlines() if "rollout status" in line)
        assert ("deployment/celery-beat" in rollout) == (name not in WITHOUT_BEAT), name
        assert ("logs deploy/celery-beat" in text) == (name not in WITHOUT_BEAT), name
        if name != "external":
            assert "port-forward svc/rabbitmq 15672:15672" in text, name
        assert "helm test tasklab" in text, name
        assert ("Authentication is on" in text) == (name == "external"), name
        # The Secrets the chart generates, and what a GitOps render needs instead.
        assert ("Generated Secrets: tasklab-callback, rabbitmq, rabbitmq-users." in text) == (
            name != "external"
        ), name


def test_monitoring_objects_need_the_prometheus_operator(default_docs: list[Obj]) -> None:
    """A default install on a cluster without the Prometheus Operator's CRDs must not
    fail on an unknown kind: the ServiceMonitors and the PrometheusRule are left out
    (the dashboards are plain ConfigMaps and stay), and the notes say why."""
    operator_kinds = {"ServiceMonitor", "PrometheusRule"}
    with_crds = {d["kind"] for d in default_docs}
    without = chart.render(api_versions=())
    assert operator_kinds <= with_crds
    assert not operator_kinds & {d["kind"] for d in without}
    assert chart.find(without, "ConfigMap")  # dashboards

    def notes(*args: str) -> str:
        done = chart.helm(
            "install", "tasklab", str(CHART_DIR), "-n", "tasklab", "--dry-run=client", *args
        )
        return done.stdout.split("NOTES:", 1)[1]

    # A client-side dry run knows no CRDs.
    missing = "this cluster has no Prometheus Operator"
    assert missing in notes()
    assert missing not in notes(
        "--set=monitoring.enabled=false", "--set=rabbitmq.metrics.serviceMonitor.enabled=false"
    )


def test_with_existing_secrets_every_render_is_the_same(tools: None) -> None:
    """GitOps tools render with `helm template`, where lookup sees no cluster: the
    generated Secrets would get new values on every render. With every existingSecret
    set the chart generates none, and two renders are identical."""
    existing = [
        "--set", "callbackSecret.existingSecret=tasklab-callback-gitops",
        "--set", "rabbitmq.auth.existingSecret=rabbitmq-gitops",
        "--set", "rabbitmq.auth.users.existingSecret=rabbitmq-users-gitops",
    ]  # fmt: skip
    first, second = chart.render(existing), chart.render(existing)
    assert first == second
    assert not chart.find(first, "Secret")
    names = {
        ref["name"]
        for _, spec in chart.pod_specs(first)
        for c in chart.containers(spec)
        for e in c.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert names == {"tasklab-callback-gitops", "rabbitmq-gitops", "rabbitmq-users-gitops"}
    # Without them, only the generated Secrets' values differ between two renders.
    plain, again = chart.render(), chart.render()
    generated = {"tasklab-callback", "rabbitmq", "rabbitmq-users"}
    changed = {d["metadata"]["name"] for d, e in zip(plain, again, strict=True) if d != e}
    assert changed == generated
    assert {d["metadata"]["name"] for d in chart.find(plain, "Secret")} == generated
