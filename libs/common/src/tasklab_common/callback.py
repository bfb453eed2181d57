"""The workers' status callback client: signed, retried with backoff.

Used by the Celery worker and the legacy consumer (both synchronous code). A report
is retried while the api is unreachable or answers 5xx/429, for at most
``max_wait`` seconds, or ``stopping_wait`` seconds once the worker is stopping (an
uninstalled api would otherwise keep a stopping pod up for ``max_wait``; the caller
then gives the task's message back to the broker, and the task runs again). The same
``event_id`` is kept across retries, so a report that was applied but whose answer was
lost is recognised as a duplicate. Each try is signed anew (a fresh nonce). The
retrying is tenacity's: exponential backoff with jitter, never sleeping past the
deadline. Reports go over one kept-alive connection per thread (:mod:`tasklab_common.httpconn`).

With ``batching`` (a worker reporting from several threads: the consumer), the reports
that threads make while another report is on its way go together in the next request,
a JSON array (:mod:`tasklab_common.batching`); a report alone goes alone, as before. An
api that refuses a batch (422 or 413: one that predates batches, or a smaller body
limit) gets every report alone from then on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urljoin

import httpx
from tenacity import (
    Future,
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential,
)

from tasklab_common.batching import Combiner, fitting
from tasklab_common.httpconn import KeepAlive, Reply, TransportError
from tasklab_common.messages import (
    MAX_REPORTS_PER_REQUEST,
    UNKNOWN_TASK_HEADER,
    CallbackReplies,
    CallbackReply,
    HousekeepingReport,
    HousekeepingRequest,
    StatusUpdate,
)
from tasklab_common.settings import HOUSEKEEPING_PATH, WorkerSettings
from tasklab_common.signing import sign_headers

log = logging.getLogger("tasklab.callback")

T = TypeVar("T")
#: Largest batch body the client sends (a larger report goes alone): well under the
#: api's default body limit (1 MiB).
MAX_BATCH_BYTES = 256 * 1024


class CallbackError(Exception):
    """The api refused a report for good (4xx other than 404/429), or never answered."""


class CallbackClient:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        max_wait: float = 900.0,
        backoff: float = 0.2,
        backoff_max: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        stopping: Callable[[], bool] = lambda: False,
        stopping_wait: float = 30.0,
        batching: bool = False,
    ) -> None:
        KeepAlive(url, timeout)  # (checks the URL now rather than at the first report)
        self.url = url
        self._secret = secret
        self._max_wait = max_wait
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._stopping = stopping
        self._stopping_wait = stopping_wait
        self._local = threading.local()
        self._timeout = timeout
        self._batches: Combiner[tuple[StatusUpdate, bytes], CallbackReply] | None = (
            Combiner(self._send, max_items=MAX_REPORTS_PER_REQUEST, max_size=MAX_BATCH_BYTES)
            if batching
            else None
        )

    @classmethod
    def from_settings(
        cls,
        settings: WorkerSettings,
        stopping: Callable[[], bool] = lambda: False,
        *,
        batching: bool = False,
    ) -> CallbackClient:
        """The client of a worker: ``API_URL``, ``CALLBACK_SECRET`` and its limits;
        ``stopping`` tells whether the worker is stopping (a SIGTERM)."""
        return cls(
            settings.api_url,
            settings.callback_secret.get_secret_value(),
            timeout=settings.callback_timeout,
            max_wait=settings.callback_max_wait,
            stopping=stopping,
            stopping_wait=settings.callback_stopping_wait,
            batching=batching,
        )

    def _connection(self) -> KeepAlive:
        # One kept-alive connection per thread: a connection carries one request at a time.
        conn: KeepAlive | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = KeepAlive(self.url, self._timeout)
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next report opens another)."""
        conn: KeepAlive | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def report(self, update: StatusUpdate) -> CallbackReply:
        """Send ``update`` until the api answers; return its reply.

        The api's 404 for a task it does not know (marked by ``UNKNOWN_TASK_HEADER``)
        is answered as "do not proceed", with ``unknown`` set; any other 404 (a wrong
        ``API_URL``, a proxy) raises ``CallbackError``, as does any other refusal, or a
        report still not delivered after ``max_wait`` seconds, or ``stopping_wait``
        seconds after the worker was found stopping. With batching, the report may
        travel with other threads' reports: the outcome is the same.
        """
        body = update.model_dump_json().encode()
        if self._batches is None:
            return self._deliver_one(update, body)
        return self._batches.call((update, body), len(body))

    def report_together(
        self, reports: Sequence[tuple[StatusUpdate, bytes]]
    ) -> list[CallbackReply | CallbackError]:
        """Reports made at once (each with its JSON body), sent together in as few
        requests as the batch limits allow (one at a time when the client does not batch,
        or once the api refused a batch); each report's outcome, in order: its reply, or
        the :class:`CallbackError` of the request that carried it. For one caller that
        gathers reports itself (the report relay), without :meth:`report`'s threads."""
        outcomes: list[CallbackReply | CallbackError] = []
        while len(outcomes) < len(reports):
            rest = reports[len(outcomes) :]
            count = (
                fitting([len(body) for _, body in rest], MAX_REPORTS_PER_REQUEST, MAX_BATCH_BYTES)
                if self._batches is not None
                else 1
            )
            try:
                outcomes.extend(self._send(rest[:count]))
            except CallbackError as exc:
                outcomes.extend([exc] * count)
        return outcomes

    def _send(self, reports: Sequence[tuple[StatusUpdate, bytes]]) -> list[CallbackReply]:
        """The reports of one batch (one alone: as a single report)."""
        if len(reports) > 1 and self._batches is not None:
            try:
                return self._deliver_many(reports)
            except _BatchRefused as refusal:
                log.warning(
                    "the api refused a batch of reports (%s); reporting one at a time", refusal
                )
                self._batches = None
        return [self._deliver_one(update, body) for update, body in reports]

    def _deliver_one(self, update: StatusUpdate, body: bytes) -> CallbackReply:
        what = f"task {update.task_id} ({update.status})"
        return self._deliver(what, lambda: self._parse_one(update, self._post(body)))

    def _deliver_many(self, reports: Sequence[tuple[StatusUpdate, bytes]]) -> list[CallbackReply]:
        body = b"[" + b",".join(body for _, body in reports) + b"]"
        ids = ", ".join(update.task_id for update, _ in reports)
        what = f"{len(reports)} reports (tasks {ids})"
        updates = [update for update, _ in reports]
        return self._deliver(what, lambda: _parse_many(updates, self._post(body)))

    def _deliver(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it delivers: retried on :class:`_NotDelivered` with
        backoff, within ``max_wait`` (``stopping_wait`` once the worker stops)."""
        past_max_wait = stop_before_delay(self._max_wait)
        stopping_since: float | None = None  # when this report first saw the worker stopping

        def stop(state: RetryCallState) -> bool:
            nonlocal stopping_since
            if past_max_wait(state):
                return True
            if stopping_since is None:
                if not self._stopping():
                    return False
                stopping_since = time.monotonic()
            upcoming = state.upcoming_sleep or 0.0
            return time.monotonic() + upcoming - stopping_since > self._stopping_wait

        def warn(state: RetryCallState) -> None:
            log.warning(
                "callback for %s failed (%s); retrying in %.1fs",
                what,
                _problem(state.outcome),
                state.upcoming_sleep,
            )

        backoff = wait_exponential(multiplier=self._backoff, max=self._backoff_max)
        retrying = Retrying(
            retry=retry_if_exception_type(_NotDelivered),
            # Jittered, so that the retries of many workers that failed at the same
            # moment spread out.
            wait=lambda state: backoff(state) * random.uniform(0.8, 1.2),
            stop=stop,
            sleep=self._sleep,
            before_sleep=warn,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:
            tries = exc.last_attempt.attempt_number
            while_stopping = " (the worker is stopping)" if stopping_since is not None else ""
            raise CallbackError(
                f"callback for {what} not delivered after {tries} tries{while_stopping}: "
                f"{_problem(exc.last_attempt)}"
            ) from None

    def _post(self, body: bytes) -> Reply:
        """One try: the answer; :class:`_NotDelivered` when none came, or 5xx or 429."""
        headers = {"Content-Type": "application/json", **sign_headers(self._secret, body)}
        try:
            resp = self._connection().post(body, headers)
        except TransportError as exc:
            raise _NotDelivered(f"{type(exc).__name__}: {exc}") from exc
        if resp.status == 429 or resp.status >= 500:
            raise _NotDelivered(f"HTTP {resp.status}")
        return resp

    @staticmethod
    def _parse_one(update: StatusUpdate, resp: Reply) -> CallbackReply:
        """A single report's reply; CallbackError for a refusal."""
        if resp.status == 200:
            return CallbackReply.model_validate_json(resp.body)
        if resp.status == 404 and resp.header(UNKNOWN_TASK_HEADER) == "1":
            log.info("task %s is unknown to the api", update.task_id)
            return CallbackReply.unknown_task()
        text = resp.body[:300].decode(errors="replace")
        raise CallbackError(f"callback for task {update.task_id} refused: {resp.status} {text}")


def _parse_many(updates: Sequence[StatusUpdate], resp: Reply) -> list[CallbackReply]:
    """A batch's replies; :class:`_BatchRefused` when the api does not take batches (or
    not that large), CallbackError for another refusal."""
    if resp.status in (413, 422):
        raise _BatchRefused(f"HTTP {resp.status}")
    if resp.status != 200:
        text = resp.body[:300].decode(errors="replace")
        raise CallbackError(f"callback for {len(updates)} reports refused: {resp.status} {text}")
    replies = CallbackReplies.validate_json(resp.body)
    if len(replies) != len(updates):
        raise CallbackError(f"the api answered {len(replies)} replies to {len(updates)} reports")
    for update, reply in zip(updates, replies, strict=True):
        if reply.unknown:
            log.info("task %s is unknown to the api", update.task_id)
    return replies


class _BatchRefused(Exception):
    """The api refused a batch as such (422, 413): send its reports alone."""


class _NotDelivered(Exception):
    """One try did not deliver the report (no answer, 5xx, 429): try again."""


def _problem(outcome: Future | None) -> str:
    """Why a try (its outcome) did not deliver the report."""
    exc = outcome.exception() if outcome is not None else None
    return str(exc) if exc is not None else "unknown"


def housekeeping_url(api_url: str) -> str:
    """``.../internal/housekeeping`` next to ``.../update_task_status_api/``.

    Relative, so an api served under a path prefix is reached under the same prefix.
    """
    base = api_url if api_url.endswith("/") else api_url + "/"
    return urljoin(base, f"..{HOUSEKEEPING_PATH}")


def request_housekeeping(
    api_url: str,
    secret: str,
    *,
    requested_by: str | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> HousekeepingReport:
    """Ask the api to run its housekeeping once (one signed request, not retried: the
    next scheduled run tries again). Raises ``httpx.HTTPError`` on failure."""
    body = HousekeepingRequest(requested_by=requested_by).model_dump_json().encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, body)}
    with httpx.Client(timeout=timeout, transport=transport) as client:
        resp = client.post(housekeeping_url(api_url), content=body, headers=headers)
    resp.raise_for_status()
    return HousekeepingReport.model_validate_json(resp.content)
