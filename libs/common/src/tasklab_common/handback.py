"""Handing a running task back when its worker must stop (a scale-down, a rollout).

A stopping worker takes no new task and lets the running ones finish; a task still
running ``HAND_BACK_AFTER`` seconds after the stop began (set below the pod's grace
period, so it happens before the SIGKILL) is *handed back*: its work is interrupted
(:class:`HandedBack` raised where it sleeps), the worker reports it ``RETRYING`` with
:data:`HAND_BACK_ERROR` and gives its message back to the broker. Another worker then
runs it as the next attempt: :func:`tasklab_common.protocol.start_attempt` sees the api's
``RETRYING`` at the attempt it proposed and takes the one after. The user sees one
task, a second attempt, never ``FAILED``. A handed-back attempt is an attempt like a
failed one: a task has ``MAX_RETRIES + 1`` attempts in all, whatever ended them.

A worker that dies without handing back (SIGKILL, a crash) is not this: its message
is redelivered and runs the *same* attempt again, which the api's delivery limit
watches (a poison task).
"""

from __future__ import annotations

from typing import Final

__all__ = ["HAND_BACK_ERROR", "HandedBack"]

#: The error of the ``RETRYING`` report of a handed-back attempt.
HAND_BACK_ERROR: Final = (
    "handed back: its worker was stopping (scale-down or rollout) before the task ended; "
    "another worker runs it again"
)


class HandedBack(BaseException):
    """Raised into a running task's work when its worker hands it back.

    A ``BaseException``: the work's own ``except Exception`` must not take it for a
    failure of the attempt.
    """
