"""How errors read, in one line: a task's error, a configuration's problems.

:func:`validation_problems` is the one formatter of a pydantic ``ValidationError``
(a malformed message, bad task arguments, bad settings): it names each problem and
never echoes the input (it may be a secret, or huge).
"""

from __future__ import annotations

from pydantic import ValidationError

from tasklab_common.messages import MAX_ERROR_CHARS


def validation_problems(
    exc: ValidationError, *, settings: bool = False, whole: str = "value"
) -> str:
    """``where: why; ...`` for each problem (``whole`` names a problem of no field).

    ``settings``: the places are environment variables (upper case, the first part of
    the location) and a missing one is "not set".
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error["loc"]
        if settings:
            where = str(loc[0]).upper() if loc else ""
        else:
            where = ".".join(str(part) for part in loc)
        why = error["msg"].removeprefix("Value error, ")
        if settings and error["type"] == "missing":
            why = "not set"
        problems.append(f"{where or whole}: {why}")
    return "; ".join(problems)


def error_text(exc: BaseException) -> str:
    """An exception as a task's error, within the status report's size limit: its type
    and message, or for a validation error each bad field."""
    if isinstance(exc, ValidationError):
        text = f"{exc.title}: {validation_problems(exc)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]
