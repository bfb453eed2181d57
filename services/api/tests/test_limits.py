"""The per-client token buckets (submissions, wrong credentials) and their keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasklab_api.limits import RateLimiter, client_key


def test_a_flood_of_new_addresses_cannot_lift_a_lockout() -> None:
    """10,000 guesses from other addresses (the size of the table) used to clear every
    bucket, the locked-out one too."""
    limiter = RateLimiter(rate=1 / 60, burst=3, max_keys=100)
    for _ in range(3):
        assert limiter.allow("203.0.113.7") == 0
    assert limiter.allow("203.0.113.7") > 0  # locked out
    for i in range(10_000):
        limiter.allow(f"198.51.{i // 256 % 256}.{i % 256}")
    assert len(limiter) <= 101
    assert limiter.allow("203.0.113.7") > 0  # still locked out


def test_refilled_buckets_make_room_least_recently_used_first() -> None:
    limiter = RateLimiter(rate=1000.0, burst=2, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.allow(key)
    limiter._buckets["a"].stamp -= 1  # refilled long ago
    limiter._buckets["b"].stamp -= 1
    limiter.allow("a")  # "a" used again: now the most recent
    limiter._buckets["a"].stamp -= 1
    limiter.allow("d")
    assert set(limiter._buckets) == {"a", "c", "d"}  # "b" went: refilled, least recent


def test_when_every_bucket_is_in_use_new_keys_share_one() -> None:
    limiter = RateLimiter(rate=1 / 3600, burst=1, max_keys=2)
    assert limiter.allow("a") == 0 and limiter.allow("b") == 0
    assert limiter.allow("c") == 0  # the overflow bucket's one token
    assert limiter.allow("d") > 0  # shares it with "c"
    assert limiter.allow("a") > 0 and limiter.allow("b") > 0  # remembered


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.10", "192.0.2.10"),
        ("testclient", "testclient"),
    ],
)
def test_ipv6_clients_count_by_their_64(host: str, key: str) -> None:
    conn = SimpleNamespace(client=SimpleNamespace(host=host))
    assert client_key(conn) == key  # type: ignore[arg-type]
