"""The Dockerfiles' shape, read without a container engine: pinned bases, a numeric non-root
user, a health check, what the gateway's image serves."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.files import DEPLOY, ROOT, instructions


@pytest.mark.parametrize("name", ["Dockerfile", "mlflow.Dockerfile"])
def test_dockerfiles_pin_their_bases_and_run_as_a_numeric_non_root_user(name: str) -> None:
    steps = instructions(DEPLOY / name)
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    stages: set[str] = set()
    final_stage: list[tuple[str, str]] = []
    for op, arguments in steps:
        if op == "FROM":
            image, *alias = arguments.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            if image not in stages:
                tag = image.rsplit(":", 1)[1] if ":" in image else ""
                assert tag and tag != "latest", f"{name}: FROM {image} is not pinned"
            stages.update(alias[1:] if alias and alias[0].upper() == "AS" else [])
            final_stage = []
        final_stage.append((op, arguments))

    (user,) = [a for op, a in final_stage if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {user} must be a numeric non-root UID"
    (healthcheck,) = [a for op, a in final_stage if op == "HEALTHCHECK"]
    assert "urllib.request" in healthcheck, "slim images have no curl"


def test_gateway_dockerfile_serves_on_8000_with_a_liveness_check() -> None:
    steps = dict(instructions(DEPLOY / "Dockerfile"))
    assert "/health/live" in steps["HEALTHCHECK"]
    assert steps["EXPOSE"] == "8000"
    assert json.loads(steps["ENTRYPOINT"]) == ["registry-gateway"]
    assert json.loads(steps["CMD"])[:3] == ["serve", "--host", "0.0.0.0"]
    assert any("[postgres]" in a for op, a in instructions(DEPLOY / "Dockerfile") if op == "RUN")

    # The build context is the repository root: keep the virtualenv and the demo out.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore or {".venv", "demo"} <= set(ignore)
