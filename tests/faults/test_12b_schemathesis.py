"""Scenario 12, generated: schemathesis builds requests from the api's own OpenAPI
document, valid ones and invalid ones, for every operation; none may get a 5xx.

Generated submissions that the api accepts are real tasks: their durations and sync
waits are capped (keeping them valid) so that they end within seconds, and the
invariant checker then follows them like any other scenario's tasks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Err

from .faultkit import ANY_FINAL, Scenario

#: Examples per operation and generation mode (valid, invalid).
EXAMPLES = 30
#: The live stream never ends: it cannot be called like the other operations.
STREAMS = ("/api/events",)


def tame(case: Case[Any]) -> None:
    """Cap a submission's duration and sync wait, without making a valid body invalid."""
    body = case.body
    if case.path != "/api/tasks" or case.method != "POST" or not isinstance(body, dict):
        return
    for key, cap in (("duration", 0.2), ("wait", 3.0)):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
            body[key] = cap


@pytest.mark.scenario("12 schemathesis (OpenAPI)")
def test_generated_requests_get_no_server_error(scenario: Scenario) -> None:
    base = scenario.fx.base_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    codes: Counter[int] = Counter()
    errors: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            errors.append(f"an operation the schema does not describe well: {result.err()}")
            continue
        operation = result.ok()
        if operation.path in STREAMS:
            continue
        operations += 1
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Case[Any]) -> None:
                tame(case)
                resp = case.call(base_url=base, timeout=30)
                codes[resp.status_code] += 1
                if resp.status_code >= 500:
                    errors.append(f"{resp.status_code} {case.as_curl_command()}\n{resp.text[:300]}")
                    return
                if case.path == "/api/tasks" and case.method == "POST":
                    record(scenario, resp.status_code, resp.json())

            try:
                call()
            except Unsatisfiable:
                # No invalid request exists for an operation without any input.
                assert mode is GenerationMode.NEGATIVE, operation.label
    scenario.note(
        f"{sum(codes.values())} generated requests on {operations} operations: "
        f"{dict(sorted(codes.items()))}"
    )
    assert not errors, "\n\n".join(errors[:5])
    assert operations >= 8 and sum(codes.values()) >= 100, codes
    # Whatever the generated submissions started ends, any final status will do.
    scenario.check(timeout=120)


def record(scenario: Scenario, code: int, body: Any) -> None:
    if code in (200, 202, 504) and isinstance(body, dict) and "id" in body:
        scenario.accepted[str(body["id"])] = ANY_FINAL
