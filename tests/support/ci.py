"""Under CI every test must run: a missing tool or server fails there, and skips elsewhere.

``CI`` is set by .ci/run (``CI=true``) and by most CI services; any of ``true``, ``1``, ``yes``
(any case) counts, so a runner that exports ``CI=1`` or ``CI=True`` still gets the rule.
Every test that needs something the machine may lack (a binary, a server, an extra, a built
environment) goes through ``required()`` rather than its own ``pytest.skip``.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

TRUE = ("true", "1", "yes")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in TRUE


def missing(message: str, *, module: bool = False) -> NoReturn:
    """Skip with `message` on a developer's machine; under CI fail with it: it must run there."""
    if in_ci():
        pytest.fail(f"{message}. CI is set: this test must run in CI, not skip.", pytrace=False)
    pytest.skip(message, allow_module_level=module)


def importable(module: str, install: str) -> None:
    """``pytest.importorskip`` under the CI rule (call it at a module's top: it skips the module)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        missing(f"{module} is not installed ({install})", module=True)


def needs(available: bool, message: str) -> pytest.MarkDecorator:
    """A test's mark where a library or tool may be absent: skipped without it, except under
    CI, where the test runs (and fails on what is missing) rather than skip."""
    return pytest.mark.skipif(not available and not in_ci(), reason=message)
