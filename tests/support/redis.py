"""The Redis on 127.0.0.1:6379 (``GATEWAY_TEST_REDIS_URL`` names another): skip where none
answers, except in CI (``CI=true``), where the Redis tests must run and fail loudly instead."""

from __future__ import annotations

import os
from typing import Any

from tests.support.ci import missing

URL_VARIABLE = "GATEWAY_TEST_REDIS_URL"


def redis_url() -> str:
    return os.environ.get(URL_VARIABLE) or "redis://127.0.0.1:6379/0"


def redis_client() -> Any:
    """A client of the test Redis, after a ping (skips or fails as above)."""
    import redis

    url = redis_url()
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not available at {url} ({exc}); set {URL_VARIABLE} to a server's URL"
        missing(message)
    return client
