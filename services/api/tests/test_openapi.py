"""The OpenAPI document is self-consistent: every reference in it resolves.

Found by the fault-injection suite's schemathesis run: the callback's body schema
referred to ``#/$defs/TaskStatus``, which does not exist in the OpenAPI document,
so tools could not read the body and never generated one.
"""

from __future__ import annotations

from typing import Any

from tasklab_api.config import Settings
from tasklab_api.main import create_app


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_reference_resolves() -> None:
    settings = Settings.model_validate(
        {"rmq_url": "amqp://nobody:nothing@127.0.0.1:1/", "callback_secret": "s" * 24}
    )
    doc = create_app(settings).openapi()
    found = refs(doc)
    assert found
    for ref in found:
        resolve(doc, ref)


def test_the_callback_body_is_described() -> None:
    settings = Settings.model_validate(
        {"rmq_url": "amqp://nobody:nothing@127.0.0.1:1/", "callback_secret": "s" * 24}
    )
    doc = create_app(settings).openapi()
    body = doc["paths"]["/update_task_status_api/"]["post"]["requestBody"]
    one, batch = body["content"]["application/json"]["schema"]["oneOf"]
    assert one["required"] == ["task_id", "status"]
    assert "DONE" in one["properties"]["status"]["enum"]
    assert (batch["type"], batch["items"], batch["minItems"]) == ("array", one, 1)
