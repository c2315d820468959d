"""The cost of API keys on the hot path (issue 12): ``--only auth``.

Load on the default route (``/models/iris/predict``, ``champion`` -> v1) at 32 connections,
interleaved (bench/interleaved.py): one gateway with keys off and one with ``GATEWAY_AUTH=keys``
(read at start), both running, visited in turn for several rounds. On the keyed gateway two
contenders: a key (``predict:*``, no limits) sent as ``Authorization: Bearer``, and a second key
whose per-key rate (``--rate 1000000``) never trips, to price the limiter. Keys are made with
``registry-gateway keys create`` against the gateway's ``GATEWAY_DATABASE_URL`` before it
starts; the secret is the last line of its output.

This module holds the pure parts (the secret, verdicts, report); bench/sections/auth.py drives.
"""

from __future__ import annotations

from typing import Any

import interleaved

MODEL = "iris"
CONNECTIONS = 32
SCOPES = "predict:*"
KEY = "bench"
LIMITED_KEY = "bench-limited"
RATE = 1_000_000  # requests a second: a per-key limit that never trips
OFF, KEYS, LIMITED = "keys off", "keys on", "keys on + rate limit"
TARGET = 0.95  # keys on within 5% of keys off


def secret_from(output: str) -> str:
    """The secret ``registry-gateway keys create`` prints alone on its last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines or " " in lines[-1]:
        raise ValueError(f"no secret on the last line of: {output!r}")
    return lines[-1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 12: keys on within 5% of keys off; the rate limiter's point is information."""
    if not data:
        return []
    return [
        interleaved.verdict(data, KEYS, OFF, TARGET, f"auth: keys on at {CONNECTIONS} conns within 5% of keys off"),
        interleaved.verdict(
            data, LIMITED, OFF, None, f"auth: keys on + a per-key rate limit at {CONNECTIONS} conns (information)"
        ),
    ]


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## The cost of API keys (issue 12)", ""]
    lines += [
        f"`POST /models/{MODEL}/predict` (the default route: `champion` → v1) at {CONNECTIONS} conns, "
        "interleaved: a gateway with keys off and one with `GATEWAY_AUTH=keys` (read at start) run at "
        "once and are visited in turn, round after round (bench/interleaved.py). **Keys on**: a key made "
        f"with `registry-gateway keys create {KEY} --scopes '{SCOPES}'` sent as `Authorization: Bearer`; "
        f"**+ rate limit**: the same gateway, a second key made with `--rate {RATE}` (a per-key token "
        "bucket that never trips: the limiter's cost). ÷ keys off: the median over the rounds of each "
        "round's ratio to that round's keys-off point.",
        "",
    ]
    lines += interleaved.table(data, OFF, "÷ keys off")
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
