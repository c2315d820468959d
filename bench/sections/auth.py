"""`--only auth`: keys off, keys on and keys on with a per-key rate limit that never trips,
interleaved: bench/auth_cost.py."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import auth_cost
from harness import QUIET_POLL, Contender, Run, create_key, gateway, interleaved_points, post


def _refused_without_key(url: str, body: bytes) -> int | None:
    """The status of a request sent without a key (401 when keys are on), None if it passed."""
    try:
        post(url, body)
    except urllib.error.HTTPError as exc:
        return exc.code
    return None


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Keys off, keys on and keys on with a per-key rate limit that never trips, interleaved:
    bench/auth_cost.py."""
    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["auth"] = data
    off = gateway(tracking_uri, "auth-off", cpus=run.server_cpus, env=QUIET_POLL)
    keyed = gateway(tracking_uri, "auth-keys", cpus=run.server_cpus, env={"GATEWAY_AUTH": "keys", **QUIET_POLL})
    secret = create_key(keyed, auth_cost.KEY)  # before start: the gateway reads its keys at start
    limited = create_key(keyed, auth_cost.LIMITED_KEY, "--rate", str(auth_cost.RATE))
    contenders = [
        Contender(auth_cost.OFF, off),
        Contender(auth_cost.KEYS, keyed, auth_cost.bearer(secret)),
        Contender(auth_cost.LIMITED, keyed, auth_cost.bearer(limited)),
    ]

    def refuses_keyless() -> None:  # a keyed gateway that lets a request through prices nothing
        status = _refused_without_key(f"{keyed.url}/models/{auth_cost.MODEL}/predict", bodies["iris"].read_bytes())
        if status != 401:
            raise RuntimeError(f"keys on, but a request without a key answered {status or '2xx'}, not 401")

    interleaved_points(run, "auth", contenders, bodies["iris"], when_ready=refuses_keyless)
