"""`--only lane`: the gateway against the bare ASGI floor, access logs off on both, interleaved:
bench/lane.py."""

from __future__ import annotations

from pathlib import Path

import lane
from harness import QUIET_POLL, Contender, Run, floor, gateway, interleaved_points


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The gateway against the bare ASGI floor, access logs off on both, interleaved: bench/lane.py."""
    run.sections["lane"] = {"rows": [], "notes": []}
    quiet = gateway(tracking_uri, "lane", cpus=run.server_cpus, env={"GATEWAY_ACCESS_LOG": "false", **QUIET_POLL})
    logged = gateway(tracking_uri, "lane-logged", cpus=run.server_cpus, env=QUIET_POLL)
    bare = floor(run, bare=True, access_log=False)
    predicting = floor(run, access_log=False, predicting_from=tracking_uri)
    contenders = [
        Contender(lane.GATEWAY_32, quiet),
        Contender(lane.FLOOR_32, bare, path="/invocations"),
        Contender(lane.PREDICTING_32, predicting, path="/invocations"),
        Contender(lane.LOGGED_32, logged),
        Contender(lane.GATEWAY_1, quiet, connections=1),
        Contender(lane.FLOOR_1, bare, path="/invocations", connections=1),
        Contender(lane.PREDICTING_1, predicting, path="/invocations", connections=1),
    ]
    interleaved_points(run, "lane", contenders, bodies["iris"])
