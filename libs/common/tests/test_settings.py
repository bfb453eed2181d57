"""The workers' settings refuse a callback URL that cannot be the api's route."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasklab_common.settings import WorkerSettings

BASE = {"rmq_url": "amqp://u:p@localhost:5672/", "callback_secret": "s" * 32}


@pytest.mark.parametrize(
    "url",
    [
        "http://api:8080/update_task_status_api/",
        "https://tasks.example/prefix/update_task_status_api/",
    ],
)
def test_callback_urls_accepted(url: str) -> None:
    assert WorkerSettings(api_url=url, **BASE).api_url == url  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://api:8080/",  # the api's root: every report would be a 404
        "http://api:8080/update_task_status_api",  # answered 307, which is not followed
        "http://api:8080/api/update_task_status",
        "api:8080/update_task_status_api/",
        "ftp://api/update_task_status_api/",
        "http:///update_task_status_api/",
    ],
)
def test_wrong_callback_urls_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="API_URL must be the api's callback URL"):
        WorkerSettings(api_url=url, **BASE)  # type: ignore[arg-type]
