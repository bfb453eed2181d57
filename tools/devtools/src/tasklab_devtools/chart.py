"""The Helm chart's offline checks: render it, and validate what it renders.

Used by ``tests/chart`` (``make chart-check``). Tools come from ``.tools/`` (installed by
``scripts/k8s-tools.sh``): the real ``helm`` binary renders the chart; the rendered
objects are checked against the Kubernetes OpenAPI schemas in strict mode (PyPI
``kubernetes-validate``, every error, a missing schema is an error), and custom
resources against the validators of the npm ``@kubernetes-models`` packages plus a
strict check of their field names (read from the packages' type declarations).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "BROKER_CLIENTS",
    "CHART_DIR",
    "REPO_ROOT",
    "ChartError",
    "Obj",
    "ToolsMissing",
    "ValueSet",
    "container_env",
    "containers",
    "crd_errors",
    "find",
    "helm",
    "k8s_schema_errors",
    "pod_specs",
    "render",
    "render_all",
    "secret_value",
    "tool",
    "value_sets",
]

REPO_ROOT = Path(__file__).resolve().parents[4]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "tasklab"
TOOLS_DIR = REPO_ROOT / ".tools"
NAMESPACE = "tasklab"
RELEASE = "tasklab"

Obj = dict[str, Any]
"""A rendered Kubernetes object."""

#: The chart's Deployments that log in to the broker, each as its own user (the keys of
#: their users in the bundled broker's Secret rabbitmq-users; KEDA's is "keda").
BROKER_CLIENTS = ("api", "celery-worker", "consumer", "celery-beat")


class ToolsMissing(RuntimeError):
    """A tool of ``.tools/`` is not installed."""


class ChartError(RuntimeError):
    """helm failed (its output is the message)."""


def tool(name: str) -> Path:
    """``.tools/bin/<name>`` (helm, kubectl), or ToolsMissing saying how to install it."""
    path = TOOLS_DIR / "bin" / name
    if not path.is_file():
        raise ToolsMissing(f"{path} is missing: run scripts/k8s-tools.sh (make k8s-tools)")
    return path


def install_tools() -> None:
    """Run ``scripts/k8s-tools.sh`` (idempotent; quick when everything is there)."""
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "k8s-tools.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ToolsMissing(f"scripts/k8s-tools.sh failed:\n{done.stdout}{done.stderr}")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm with a private, empty configuration (no repos, no cluster)."""
    home = TOOLS_DIR / "helm-home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    done = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=env, check=False
    )
    if check and done.returncode != 0:
        raise ChartError(f"helm {shlex.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


# --------------------------------------------------------------------- value sets


@dataclass(frozen=True)
class ValueSet:
    """A named set of helm arguments (-f FILE, --set ...) the chart is checked with."""

    name: str
    args: tuple[str, ...]
    #: make kind-up installs exactly these values.
    kind: bool = False


def kind_up_args(**env: str) -> tuple[str, ...]:
    """The chart arguments ``scripts/kind-up.sh`` passes, for these switches."""
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "kind-up.sh"), "--print-helm-args"],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGE_TAG": "0123abc", **env},
        cwd=REPO_ROOT,
        check=True,
    )
    args = done.stdout.splitlines()
    # Paths relative to the repository root, as the script runs there.
    return tuple(str(REPO_ROOT / a) if a.endswith(".yaml") else a for a in args)


@cache
def value_sets() -> tuple[ValueSet, ...]:
    """Every value set the chart keeps (ci/*.yaml) and every variant of make kind-up."""
    sets = [ValueSet("default", ())]
    for path in sorted((CHART_DIR / "ci").glob("*-values.yaml")):
        sets.append(ValueSet(path.name.removesuffix("-values.yaml"), ("-f", str(path))))
    sets.append(ValueSet("kind-up", kind_up_args(), kind=True))
    sets.append(ValueSet("kind-up-keda-1", kind_up_args(KEDA="1"), kind=True))
    sets.append(ValueSet("kind-up-monitoring-0", kind_up_args(MONITORING="0"), kind=True))
    return tuple(sets)


#: What ``helm template`` tells the chart the cluster serves by default: the Prometheus
#: Operator's CRDs, as on the kind cluster (the chart leaves its ServiceMonitors and
#: PrometheusRule out where they are missing).
CLUSTER_APIS = ("monitoring.coreos.com/v1",)


def render(
    args: Iterable[str] = (),
    namespace: str = NAMESPACE,
    api_versions: Iterable[str] = CLUSTER_APIS,
) -> list[Obj]:
    """``helm template`` (tests included) as a list of objects."""
    apis = [f"--api-versions={api}" for api in api_versions]
    done = helm("template", RELEASE, str(CHART_DIR), "--namespace", namespace, *apis, *args)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_all(sets: Iterable[ValueSet]) -> dict[str, list[Obj]]:
    """Render several value sets at once (helm is single-threaded; renders overlap)."""
    items = list(sets)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rendered = list(pool.map(lambda s: render(s.args), items))
    return {s.name: docs for s, docs in zip(items, rendered, strict=True)}


# --------------------------------------------------------------------- queries


def find(docs: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    """Objects of a kind (and name)."""
    return [
        d
        for d in docs
        if d.get("kind") == kind and (name is None or d.get("metadata", {}).get("name") == name)
    ]


def pod_specs(docs: Iterable[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """``(object, pod spec)`` of every pod the objects create."""
    for d in docs:
        kind = d.get("kind")
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            yield d, d["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield d, d["spec"]


def pod_labels(obj: Obj) -> dict[str, str]:
    """Labels of the pods an object creates."""
    if obj["kind"] == "Pod":
        labels: dict[str, str] = obj["metadata"].get("labels", {})
        return labels
    template_labels: dict[str, str] = obj["spec"]["template"]["metadata"].get("labels", {})
    return template_labels


def containers(spec: Obj) -> list[Obj]:
    """Init and regular containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


#: What the chart runs each of tasklab's services under: the image's tini as PID 1 (exit
#: 143, the service ended by the SIGTERM it was sent, counted as 0).
INIT_COMMAND = ["tini", "-e", "143", "--"]


def service_command(container: Obj) -> list[str]:
    """A tasklab container's command without its init (``tini -e 143 --``), which it must
    have."""
    command: list[str] = container.get("command", [])
    if command[: len(INIT_COMMAND)] != INIT_COMMAND:
        raise AssertionError(f"{container.get('name')}: {command} does not run under tini")
    return command[len(INIT_COMMAND) :]


def label(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def secret_value(
    docs: Iterable[Obj], name: str, key: str, given: Mapping[tuple[str, str], str] = {}
) -> str:
    """A key of a Secret: rendered by the chart, or else one of ``given`` (the Secrets a
    value set expects to exist, by ``(name, key)``); AssertionError when neither has it."""
    for secret in find(docs, "Secret", name):
        data = secret.get("data", {})
        assert key in data, f"Secret {name} has no key {key}"
        return base64.b64decode(data[key]).decode()
    assert (name, key) in given, f"Secret {name} (key {key}) is neither rendered nor given"
    return given[(name, key)]


def container_env(
    docs: Iterable[Obj],
    container: Obj,
    given: Mapping[tuple[str, str], str] = {},
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: Secrets resolved (see
    :func:`secret_value`), ``$(VAR)`` references expanded, the pod's namespace."""
    docs = list(docs)
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
        elif "fieldRef" in item["valueFrom"]:
            # The downward API: the only field the chart reads is the pod's namespace.
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[item["name"]] = namespace
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_value(docs, ref["name"], ref["key"], given)
    return env


# --------------------------------------------------------------------- Kubernetes schemas


@cache
def _schema_files(version: str) -> tuple[Path, Path]:
    import kubernetes_validate  # type: ignore[import-untyped,import-not-found,unused-ignore]

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    directory = base / f"v{version}-local-strict"
    if not directory.is_dir():
        raise ValueError(f"kubernetes-validate has no strict schemas for {version}")
    return directory, directory / "_definitions.json"


@cache
def _validator(version: str, kind: str, api_version: str) -> Any:
    import jsonschema  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from referencing import (  # type: ignore[import-not-found,unused-ignore]
        Registry,
        Resource,
    )

    directory, definitions = _schema_files(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = directory / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry: Registry[Any] = Registry()
    registry = Resource.from_contents(schema) @ registry
    registry = Resource.from_contents(json.loads(definitions.read_text())) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def k8s_schema_errors(obj: Obj, version: str) -> list[str] | None:
    """Every error of an object against Kubernetes' strict schema; None: no schema."""
    validator = _validator(version, obj["kind"], obj["apiVersion"])
    if validator is None:
        return None
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


# --------------------------------------------------------------------- custom resources

NODE_DIR = TOOLS_DIR / "node"
#: API groups whose resources the chart renders, and the npm package that models them.
CRD_PACKAGES = {
    "keda.sh": "@kubernetes-models/keda",
    "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
}

_VALIDATE_MJS = """\
// Validates custom resources (JSON array on stdin) with @kubernetes-models; prints a
// JSON array with one list of error messages per object (null: no model for it).
const PACKAGES = %s;
const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (c) => (text += c));
  process.stdin.on("end", () => resolve(text));
}));
const out = [];
for (const obj of input) {
  const [group, version] = obj.apiVersion.split("/");
  const pkg = PACKAGES[group];
  let model;
  try {
    model = pkg && (await import(`${pkg}/${group}/${version}/${obj.kind}`))[obj.kind];
  } catch (e) {
    model = undefined;
  }
  if (!model) { out.push(null); continue; }
  try {
    new model(obj).validate();
    out.push([]);
  } catch (e) {
    const errors = e.errors ?? e.details ?? [{ instancePath: "", message: String(e.message) }];
    out.push(errors.map((x) => `${x.instancePath || "(root)"}: ${x.message}`));
  }
}
process.stdout.write(JSON.stringify(out));
"""


def _node_validate(objs: list[Obj]) -> list[list[str] | None]:
    if not (NODE_DIR / "node_modules").is_dir():
        raise ToolsMissing(f"{NODE_DIR} is missing: run scripts/k8s-tools.sh")
    script = NODE_DIR / "validate.mjs"
    script.write_text(_VALIDATE_MJS % json.dumps(CRD_PACKAGES))
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps(objs),
        capture_output=True,
        text=True,
        cwd=NODE_DIR,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"CRD validation failed to run:\n{done.stderr}")
    result: list[list[str] | None] = json.loads(done.stdout)
    return result


def crd_errors(objs: list[Obj]) -> list[list[str] | None]:
    """Per object: type/enum/required errors and unknown fields; None: no model."""
    checked = _node_validate(objs)
    out: list[list[str] | None] = []
    for obj, errors in zip(objs, checked, strict=True):
        if errors is None:
            out.append(None)
            continue
        root = _model_declaration(obj)
        out.append(errors + (_unknown_fields(obj, root, "") if root else ["no type declaration"]))
    return out


# Strict field names, read from the packages' TypeScript declarations (.d.ts): an
# interface lists the fields of an object; a field's type names another interface
# (imported from another file), an array or a map of one, or a primitive.

_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_IMPORT = re.compile(r'import \{ (\w+) \} from "([^"]+)";')
_ALIAS = re.compile(r"export type \{ (\w+) as (\w+)")


@dataclass(frozen=True)
class _Type:
    kind: str  # "object", "array", "map", "leaf"
    file: Path | None = None
    body: str = ""
    extends: tuple[str, ...] = ()
    item: _Type | None = None


def _model_declaration(obj: Obj) -> _Type | None:
    group, _, version = obj["apiVersion"].partition("/")
    package = CRD_PACKAGES.get(group)
    if package is None:
        return None
    path = NODE_DIR / "node_modules" / package / group / version / f"{obj['kind']}.d.ts"
    return _interface(path, None) if path.is_file() else None


@cache
def _source(path: Path) -> str:
    return _COMMENT.sub("", path.read_text())


def _resolve_module(base: Path, spec: str) -> Path:
    if spec.startswith("."):
        target = (base.parent / spec).resolve()
    else:
        target = NODE_DIR / "node_modules" / spec
    return target.with_suffix(".d.ts") if target.suffix == ".js" else Path(f"{target}.d.ts")


def _block(text: str, start: int) -> str:
    """The text between the brace at ``start`` and its match."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise ValueError("unbalanced braces")


@cache
def _interface(path: Path, name: str | None) -> _Type | None:
    text = _source(path)
    aliases = {alias: real for real, alias in _ALIAS.findall(text)}
    wanted = aliases.get(name, name) if name else None
    ident = re.escape(wanted) if wanted else r"\w+"
    pattern = r"export interface (" + ident + r")(?: extends ([^{]+))?\s*\{"
    match = re.search(pattern, text)
    if match is None:
        return None
    extends = tuple(p.strip() for p in (match.group(2) or "").split(",") if p.strip())
    return _Type("object", path, _block(text, match.end() - 1), extends)


def _type_named(path: Path, name: str) -> _Type:
    text = _source(path)
    imports = dict(_IMPORT.findall(text))
    if name in imports:
        target = _resolve_module(path, imports[name])
        if target.is_file():
            found = _interface(target, name)
            if found is not None:
                return found
            # `export type IX = IOther;` (an alias of another model)
            target_text = _source(target)
            real = {alias: r for r, alias in _ALIAS.findall(target_text)}.get(name, name)
            alias = re.search(rf"export type {re.escape(real)} = (I\w+);", target_text)
            if alias:
                return _type_named(target, alias.group(1))
        return _Type("leaf")  # an alias of a primitive (IntOrString, Quantity...)
    found = _interface(path, name)
    return found if found is not None else _Type("leaf")


def _split_top(body: str, sep: str = ";") -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in body:
        if ch in "{<([":
            depth += 1
        elif ch in "}>)]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _parse_type(path: Path, text: str) -> _Type:
    text = text.strip()
    if text.startswith("Array<") and text.endswith(">"):
        return _Type("array", item=_parse_type(path, text[6:-1]))
    if text.startswith("{"):
        inner = _block(text, 0).strip()
        if inner.startswith("["):
            value = inner.split(":", 2)[-1].rstrip(";")
            return _Type("map", item=_parse_type(path, value))
        return _Type("object", path, inner)
    if re.fullmatch(r"I\w+", text):
        return _type_named(path, text)
    return _Type("leaf")


def _fields(t: _Type) -> dict[str, _Type]:
    assert t.file is not None
    fields: dict[str, _Type] = {}
    for parent in t.extends:
        base = _type_named(t.file, parent)
        if base.kind == "object":
            fields.update(_fields(base))
    for statement in _split_top(t.body):
        match = re.match(r'"([^"]+)"\??\s*:\s*(.*)', statement, re.S)
        if match:
            fields[match.group(1)] = _parse_type(t.file, match.group(2))
    return fields


def _unknown_fields(data: Any, t: _Type, path: str) -> list[str]:
    errors: list[str] = []
    if t.kind == "object" and isinstance(data, dict):
        fields = _fields(t)
        for key, value in data.items():
            if key not in fields:
                errors.append(f"{path or '(root)'}: unknown field {key!r}")
            else:
                errors += _unknown_fields(value, fields[key], f"{path}/{key}")
    elif t.kind == "array" and isinstance(data, list) and t.item is not None:
        for i, value in enumerate(data):
            errors += _unknown_fields(value, t.item, f"{path}/{i}")
    elif t.kind == "map" and isinstance(data, dict) and t.item is not None:
        for key, value in data.items():
            errors += _unknown_fields(value, t.item, f"{path}/{key}")
    return errors
