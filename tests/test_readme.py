"""The README documents what the code has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.settings import GatewaySettings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for field in GatewaySettings.model_fields:
        assert f"`GATEWAY_{field.upper()}`" in README, f"GATEWAY_{field.upper()} is missing from the README"


def test_the_two_commands_are_there() -> None:
    assert "make demo" in README and "make test" in README


def test_every_file_the_readme_links_is_in_the_repository() -> None:
    # A clone has only the repository: a link to ../shared/... or a moved file is a dead end.
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", README) if "://" not in t]
    assert "docs/ARCHITECTURE.md" in targets
    for target in targets:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT.resolve()) and path.exists(), f"README links {target}, not in the repository"


# --- the table of errors --------------------------------------------------------------------

# Where an error's status and code are forwarded, not chosen: every other call that builds an
# error answer names both as literals, so that this test can read them.
_FORWARDING = {("gateway/http/errors.py", name) for name in ("_from", "error_response", "_http")}
_BUILDERS = {"HttpError", "error_answer", "error_response"}


def _answers_in_the_code() -> dict[tuple[int, str], list[str]]:
    """Every (status, error_code) the gateway's code can answer with, and where."""
    found: dict[tuple[int, str], list[str]] = {}
    computed = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for owner, call in _calls(ast.parse(path.read_text()), "<module>"):
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            if name not in _BUILDERS:
                continue
            status, code = [*call.args, None, None][:2]
            if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                found.setdefault((status.value, code.value), []).append(f"{relative}:{call.lineno}")
            elif (relative, owner) not in _FORWARDING:
                computed.append(f"{relative}:{call.lineno} ({owner})")
    assert not computed, f"error answers whose status or code is computed; name them as literals: {computed}"
    return found


def _calls(node: ast.AST, owner: str) -> list[tuple[str, ast.Call]]:
    """Each call under ``node`` with the name of the function it is in."""
    found = []
    for child in ast.iter_child_nodes(node):
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else owner
        if isinstance(child, ast.Call):
            found.append((owner, child))
        found.extend(_calls(child, inner))
    return found


def _answers_in_the_readme() -> set[tuple[int, str]]:
    section = README.split("### Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| `([A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert rows, "no table under ### Errors"
    return {(int(status), code) for status, code in rows}


def test_every_error_the_gateway_can_answer_is_in_the_readmes_table_and_nothing_else() -> None:
    in_code = _answers_in_the_code()
    in_readme = _answers_in_the_readme()
    missing = {answer: where for answer, where in in_code.items() if answer not in in_readme}
    assert not missing, f"README's ### Errors table lacks these (status, error_code), answered at: {missing}"
    stale = in_readme - set(in_code)
    assert not stale, f"README's ### Errors table lists what the gateway never answers: {sorted(stale)}"
