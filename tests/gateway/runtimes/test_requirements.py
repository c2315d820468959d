"""What "satisfied" means: a model's requirements against a set of installed releases."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.runtimes.requirements import Requirements, check, read_requirements

INSTALLED = {
    "scikit-learn": "1.9.1",
    "numpy": "2.4.6",
    "torch": "2.13.0+cpu",
    "mlflow": "3.17.2",
    "pandas": "3.1.1rc1",
}


def verdict(*lines: str, match: str = "minor", python: str | None = "3.11.7"):  # type: ignore[no-untyped-def]
    return check(
        Requirements(python, lines, "requirements.txt"),
        match=match,  # type: ignore[arg-type]
        installed=INSTALLED.get,
        python="3.11.4",
        environment={"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"},
    )


@pytest.mark.parametrize(
    ("line", "minor", "exact"),
    [
        ("scikit-learn==1.9.1", True, True),
        ("scikit-learn==1.9.0", True, False),  # a patch release apart: minor mode takes it
        ("scikit-learn==1.5.2", False, False),
        ("scikit_learn==1.9.1", True, True),  # names compare canonicalized
        ("scikit-learn>=1.4,<2", True, True),
        ("scikit-learn<1.9", False, False),
        ("scikit-learn==1.9.*", True, True),
        ("numpy~=2.4.0", True, True),
        ("torch==2.13.0", True, True),  # a local label here (+cpu) names a build of the same release
        ("torch==2.13.0+cu121", True, True),  # ... and there
        ("mlflow==3.3.0", True, True),  # MLflow's own pin: the same major version
        ("mlflow==2.22.0", False, False),
        ("pandas==3.1.1", True, False),  # an installed pre-release is not the final release
        ("pandas>=3.1", True, True),
        ("tabulate==0.9.0", False, False),  # not installed
        ("scikit-learn[extra]==1.9.1", True, True),  # extras are not checked
    ],
)
def test_a_requirement_line_is_met_as_documented(line: str, minor: bool, exact: bool) -> None:
    assert verdict(line).satisfied is minor
    assert verdict(line, match="exact").satisfied is exact


def test_a_false_marker_skips_the_line_and_a_true_one_keeps_it() -> None:
    assert verdict('tabulate==0.9.0; python_version < "3.10"').satisfied
    assert not verdict('tabulate==0.9.0; python_version >= "3.10"').satisfied


@pytest.mark.parametrize(
    "line",
    ["-e ./local", "--index-url https://example.invalid/simple", "pkg @ https://example.invalid/pkg.whl", "not a req!"],
)
def test_what_is_not_a_plain_requirement_is_a_mismatch(line: str) -> None:
    result = verdict(line)
    assert not result.satisfied and result.mismatches[0].startswith(line)


def test_python_is_compared_by_major_and_minor() -> None:
    assert verdict(python="3.11.9").satisfied
    other = verdict(python="3.10.13")
    assert not other.satisfied and other.mismatches == ("python 3.10 (this process runs 3.11)",)
    assert verdict(python=None).satisfied  # nothing logged: nothing to compare


def test_every_mismatch_is_named_in_the_reason() -> None:
    result = verdict("scikit-learn==1.5.2", "tabulate==0.9.0", "numpy==2.4.6")
    assert result.mismatches == ("scikit-learn==1.5.2 (installed: 1.9.1)", "tabulate==0.9.0 (not installed)")
    assert "scikit-learn==1.5.2 (installed: 1.9.1); tabulate==0.9.0 (not installed)" == result.reason


def test_requirements_come_from_requirements_txt_else_conda_yaml(tmp_path: Path) -> None:
    (tmp_path / "python_env.yaml").write_text("python: 3.10.13\ndependencies:\n- -r requirements.txt\n")
    (tmp_path / "conda.yaml").write_text(
        "dependencies:\n- python=3.10.13\n- pip:\n  - mlflow==3.17.2\n  - tabulate==0.9.0\n"
    )
    (tmp_path / "requirements.txt").write_text("# logged by MLflow\nmlflow==3.17.2\n\nscikit-learn==1.5.2  # pinned\n")
    assert read_requirements(tmp_path) == Requirements(
        "3.10.13", ("mlflow==3.17.2", "scikit-learn==1.5.2"), "requirements.txt"
    )
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "python_env.yaml").unlink()
    assert read_requirements(tmp_path) == Requirements("3.10.13", ("mlflow==3.17.2", "tabulate==0.9.0"), "conda.yaml")
    (tmp_path / "conda.yaml").unlink()
    assert read_requirements(tmp_path) == Requirements(None, (), "none")
