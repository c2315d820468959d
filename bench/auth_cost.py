"""The cost of API keys on the hot path (issue 12): ``--only auth``.

Load on the default route (``/models/iris/predict``, ``champion`` -> v1) at 32 connections,
one gateway worker pinned like the other sections. Points, in this order, each on a gateway
of its own (``GATEWAY_AUTH`` is read at start): keys off; ``GATEWAY_AUTH=keys`` with a key
(``predict:*``, no limits) sent as ``Authorization: Bearer``; the same gateway with a second
key whose per-key rate (``--rate 1000000``) never trips, to price the limiter; keys off
again. Keys are made with ``registry-gateway keys create`` against the gateway's
``GATEWAY_DATABASE_URL`` before it starts; the secret is the last line of its output. The
baseline is the mean of the two keys-off points, so that drift over the run shows.

This module holds the pure parts (the secret, verdicts, report); bench/run.py drives.
"""

from __future__ import annotations

from typing import Any

from report import mean_rate, point, rate, ratio_table, ratio_target

MODEL = "iris"
CONNECTIONS = 32
SCOPES = "predict:*"
KEY = "bench"
LIMITED_KEY = "bench-limited"
RATE = 1_000_000  # requests a second: a per-key limit that never trips
OFF_BEFORE, KEYS, LIMITED, OFF_AFTER = "keys off", "keys on", "keys on + rate limit", "keys off (again)"
TARGET = 0.95  # keys on within 5% of keys off


def secret_from(output: str) -> str:
    """The secret ``registry-gateway keys create`` prints alone on its last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines or " " in lines[-1]:
        raise ValueError(f"no secret on the last line of: {output!r}")
    return lines[-1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def baseline(data: dict[str, Any]) -> float | None:
    """The mean req/s of the keys-off points that were measured."""
    return mean_rate(data, (OFF_BEFORE, OFF_AFTER))


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 12: keys on within 5% of keys off; the rate limiter's point is information."""
    if not data:
        return []
    base = baseline(data)
    name = f"auth: keys on at {CONNECTIONS} conns within 5% of keys off's req/s"
    out = [ratio_target(data, KEYS, base, TARGET, name)]
    limited = rate(point(data, LIMITED))
    if base is not None and limited is not None:
        out.append(
            (
                f"auth: keys on + a per-key rate limit at {CONNECTIONS} conns (information)",
                f"{limited / base:.2f}×",
                None,
            )
        )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    base = baseline(data)
    lines = ["", "## The cost of API keys (issue 12)", ""]
    lines += [
        f"`POST /models/{MODEL}/predict` (the default route: `champion` → v1) at {CONNECTIONS} conns, "
        "each point on a gateway of its own (`GATEWAY_AUTH` is read at start). **Keys on**: "
        f"`GATEWAY_AUTH=keys`, a key made with `registry-gateway keys create {KEY} --scopes '{SCOPES}'` "
        "sent as `Authorization: Bearer`; **+ rate limit**: the same gateway, a second key made with "
        f"`--rate {RATE}` (a per-key token bucket that never trips: the limiter's cost). "
        "÷ keys off: over the mean of the two keys-off points.",
        "",
    ]
    lines += ratio_table(data, base, "÷ keys off")
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
