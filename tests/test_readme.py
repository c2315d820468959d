"""The README guides, and the documents it leads to say what the code has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from gateway.settings import GatewaySettings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
USER_GUIDE = (ROOT / "docs" / "user-guide.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GUIDE_LINES = 300  # issue 25: the README is what it is, the two commands, a tour, where to read on


def test_every_setting_is_in_the_settings_reference() -> None:
    reference = (ROOT / "docs" / "settings.md").read_text()
    for field in GatewaySettings.model_fields:
        assert f"`GATEWAY_{field.upper()}`" in reference, f"GATEWAY_{field.upper()} is missing from docs/settings.md"


def _options(command: click.Command) -> list[str]:
    return [opt for p in command.params if isinstance(p, click.Option) for opt in p.opts if opt != "--help"]


def test_the_user_guide_lists_every_command_and_its_options() -> None:
    from gateway.cli import main

    start = USER_GUIDE.index("<!-- the commands of gateway/cli.py")
    listed = USER_GUIDE[start : USER_GUIDE.index("<!-- end of the commands -->", start)]
    named = set(re.findall(r"`([a-z][a-z-]*(?: [a-z-]+)?)`", listed))
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", {})
        if not subcommands:
            assert name in named, f"registry-gateway {name} is missing from docs/user-guide.md's list"
        for sub in subcommands:
            assert f"{name} {sub}" in named, f"registry-gateway {name} {sub} is missing from docs/user-guide.md"
        for inner in [command, *subcommands.values()]:
            for option in _options(inner):
                assert f"`{option}`" in listed, f"{name}'s {option} is missing from docs/user-guide.md's list"
    known = set(main.commands) | {f"{n} {s}" for n, c in main.commands.items() for s in getattr(c, "commands", {})}
    listed_commands = {n for n in named if n.split()[0] not in ("registry-gateway", "make")}
    assert listed_commands <= known, (
        f"docs/user-guide.md lists commands gateway/cli.py lacks: {listed_commands - known}"
    )


def test_the_test_counts_in_the_docs_are_the_suites(request: pytest.FixtureRequest) -> None:
    """The README's "about N tests" (and docs/development.md's) within 5% of what this run
    collected, when it collected the whole suite (make test, CI); any other run skips."""
    config = request.config
    here = Path(config.invocation_params.dir)
    whole = all((here / arg.split("::")[0]).resolve() in (ROOT, ROOT / "tests") for arg in config.args) and not (
        config.option.keyword or config.option.markexpr or config.option.deselect or getattr(config.option, "lf", False)
    )
    if not whole:
        pytest.skip("only a run of the whole suite knows its count (make test)")
    collected = len(request.session.items)
    for page in ("README.md", "docs/development.md"):
        stated = [int(n.replace(",", "")) for n in re.findall(r"about ([\d,]+) tests", (ROOT / page).read_text())]
        assert stated, f"{page} states no 'about N tests'"
        for count in stated:
            assert abs(count - collected) <= 0.05 * collected, f"{page} says about {count} tests; {collected} collected"


def test_the_readme_is_a_guide_with_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
    assert len(README.splitlines()) <= GUIDE_LINES
    for page in ("user-guide", "protocols", "operations", "security", "performance", "troubleshooting", "settings"):
        assert f"(docs/{page}.md)" in README, f"the README does not lead to docs/{page}.md"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_file_a_page_links_is_in_the_repository(page: Path) -> None:
    # A clone has only the repository: a link to ../shared/... or a moved file is a dead end.
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", page.read_text()) if "://" not in t]
    for target in targets:
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT.resolve()) and path.exists(), (
            f"{page.name} links {target}, not in the repository"
        )


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
    section = USER_GUIDE.split("### Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| `([A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert rows, "no table under ### Errors"
    return {(int(status), code) for status, code in rows}


def test_every_error_the_gateway_can_answer_is_in_the_guides_table_and_nothing_else() -> None:
    in_code = _answers_in_the_code()
    in_readme = _answers_in_the_readme()
    missing = {answer: where for answer, where in in_code.items() if answer not in in_readme}
    assert not missing, (
        f"docs/user-guide.md's ### Errors table lacks these (status, error_code), answered at: {missing}"
    )
    stale = in_readme - set(in_code)
    assert not stale, f"docs/user-guide.md's ### Errors table lists what the gateway never answers: {sorted(stale)}"
