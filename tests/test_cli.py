"""The registry-gateway command as a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import BIN


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "registry-gateway"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "demo-registry" in result.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for option in ("--host", "--port", "--workers", "--role"):
        assert option in serve.stdout


def test_an_unknown_role_is_refused() -> None:
    result = run("serve", "--role", "leader")
    assert result.returncode != 0 and "--role" in result.stderr
    result = run("serve", env={"GATEWAY_ROLE": "leader"})
    assert result.returncode != 0 and "GATEWAY_ROLE" in result.stderr


def test_invalid_settings_fail_fast_naming_the_variable() -> None:
    result = run("serve", env={"GATEWAY_MAX_LOADED_MODELS": "zero"})
    assert result.returncode != 0
    assert "GATEWAY_MAX_LOADED_MODELS" in result.stderr


@pytest.mark.parametrize(("variable", "value"), [("GATEWAY_DATABASE_URL", "notaurl"), ("GATEWAY_LOG_LEVEL", "loud")])
def test_a_bad_setting_is_one_line_not_a_traceback(variable: str, value: str) -> None:
    result = run("serve", env={variable: value})
    assert result.returncode != 0
    assert result.stderr.startswith(f"Error: {variable}: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelled_setting_and_a_digit_warm_alias_are_warned_about(tmp_path: Path) -> None:
    result = run(
        "db",
        "current",
        env={
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "GATEWAY_MAX_LODED_MODELS": "3",
            "GATEWAY_WARM_ALIASES": "champion,2",
        },
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert any("GATEWAY_MAX_LODED_MODELS" in line and "GATEWAY_MAX_LOADED_MODELS?" in line for line in warnings)
    assert any("GATEWAY_WARM_ALIASES" in line and "'2'" in line for line in warnings), result.stderr


def test_every_command_on_the_state_database_says_which_and_keys_list_has_a_header(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"GATEWAY_DATABASE_URL": url}
    for args in (("db", "upgrade"), ("db", "current"), ("keys", "create", "app", "--scopes", "read"), ("keys", "list")):
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert f"state database: {url} (GATEWAY_DATABASE_URL)" in result.stderr, (args, result.stderr)
    listed = run("keys", "list", env=env).stdout.splitlines()
    assert listed[0].split("\t") == ["NAME", "PREFIX", "SCOPES", "LIMITS", "CREATED", "STATE"]
    assert listed[1].startswith("app\t")
    secret = run("keys", "create", "other", "--scopes", "read", env=env).stdout.strip().splitlines()[-1]
    assert " " not in secret  # the secret is still alone on stdout's last line
    hidden = run("db", "current", env={"GATEWAY_DATABASE_URL": "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"})
    assert "s3cret" not in hidden.stderr and "postgresql+psycopg://u:***@127.0.0.1:1/x" in hidden.stderr


def test_serve_keys_and_db_run_from_one_directory_share_its_state_database(tmp_path: Path) -> None:
    """Without GATEWAY_DATABASE_URL every command opens gateway-state.db where it runs: a key
    made there is the key the gateway started there checks (the trap of issue 25: keys went to
    one database, the gateway served from another, and nothing said so)."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "GATEWAY_DATABASE_URL"}
    expected = f"state database: sqlite:///{here / 'gateway-state.db'} (GATEWAY_DATABASE_URL)"

    def run_here(*args: str, cwd: Path = here) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "registry-gateway"), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
        )
        assert result.returncode == 0, result.stderr
        return result

    for args in (("db", "upgrade"), ("keys", "create", "app", "--scopes", "predict:*"), ("db", "current")):
        assert expected in run_here(*args).stderr, args
    assert (here / "gateway-state.db").is_file()
    assert run_here("keys", "list").stdout.splitlines()[1].startswith("app\t")
    assert run_here("keys", "list", cwd=elsewhere).stdout.splitlines()[1:] == []  # another directory's own
    serving = subprocess.Popen(
        [str(BIN / "registry-gateway"), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=here,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    try:
        assert serving.stderr is not None
        first = serving.stderr.readline()  # the first thing serve says, before it starts anything
    finally:
        serving.kill()
        serving.wait(timeout=30)
    assert expected in first, first


def test_status_reads_a_running_gateway_and_says_when_none_answers(tmp_path: Path) -> None:
    from gateway.demo import IRIS, log_iris_version
    from tests.conftest import empty_registry, settings_under
    from tests.gateway.protocols.conftest import served
    from tests.support.servers import free_port

    registry = empty_registry(tmp_path / "registry")
    first = registry.log(log_iris_version, IRIS, c=1.0)
    registry.client.set_registered_model_alias(IRIS, "champion", str(first))
    settings = settings_under(tmp_path / "gw", warm_aliases=["champion"])
    with served(settings, registry) as address:
        result = run("status", "--url", f"http://{address}")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"gateway http://{address}: ok") and "sync leader yes" in lines[0]
        row = next(line for line in lines if line.startswith(f"{IRIS}\t{first}\t"))
        assert "champion (default)" in row and "loaded" in row and row.endswith("in process")
        assert any(" warmed " in line or " swapped " in line or " alias_set " in line for line in lines)
        as_json = run("status", "--url", f"http://{address}", "--json")
        assert as_json.returncode == 0
        import json

        report = json.loads(as_json.stdout)
        assert report["health"]["status"] == "ok" and report["models"][0]["name"] == IRIS
    port = free_port()
    gone = run("status", "--url", f"http://127.0.0.1:{port}")
    assert gone.returncode != 0 and f"no gateway answered at http://127.0.0.1:{port}" in gone.stderr


def test_quotas_are_set_listed_and_deleted_and_usage_is_a_table_or_an_export(tmp_path: Path) -> None:
    """Issue 53's commands on the state database: quotas set, list and delete (bad input one line
    and a non-zero exit), and usage as a table, CSV and Parquet."""
    import pandas as pd

    from registry_sync.database import make_engine, upgrade
    from registry_sync.usage import Tally, UsageStore

    url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"GATEWAY_DATABASE_URL": url}
    engine = make_engine(url)
    upgrade(engine)
    UsageStore(engine).add({("app", "iris", 1, "2026-11-26"): Tally(requests=3, rows=7, tokens=0)})
    engine.dispose()
    made = run("quotas", "set", "daily", "--caller", "app", "--models", "iris*", "--requests", "100", env=env)
    assert made.returncode == 0 and "100 requests a day of iris* for app" in made.stdout, made.stderr
    listed = run("quotas", "list", env=env).stdout.splitlines()
    assert listed[0].split("\t") == ["NAME", "CALLER", "MODELS", "AMOUNT", "UNIT", "PER"]
    assert listed[1].split("\t") == ["daily", "app", "iris*", "100", "requests", "day"]
    for bad in (("--requests", "1", "--rows", "2"), ("--per", "week", "--requests", "1"), ("--requests", "0")):
        refused = run("quotas", "set", "q", "--caller", "app", *bad, env=env)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert run("quotas", "delete", "daily", env=env).returncode == 0
    gone = run("quotas", "delete", "daily", env=env)
    assert gone.returncode == 1 and "No quota named 'daily'" in gone.stderr

    table = run("usage", "--since", "2026-11-01", env=env).stdout.splitlines()
    assert table[0].split("\t")[:5] == ["DAY", "CALLER", "MODEL", "VERSION", "REQUESTS"]
    assert table[1].split("\t")[:6] == ["2026-11-26", "app", "iris", "1", "3", "7"]
    assert run("usage", "--since", "2026-11-27", env=env).stdout.startswith("no usage")
    assert run("usage", "--since", "someday", env=env).returncode == 2
    csv, parquet = tmp_path / "usage.csv", tmp_path / "usage.parquet"
    assert run("usage", "--csv", str(csv), "--parquet", str(parquet), env=env).returncode == 0
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert frame.to_dict("records")[0] | {"predict_seconds": 0.0} == {
            "day": "2026-11-26",
            "caller": "app",
            "model": "iris",
            "version": 1,
            "requests": 3,
            "rows": 7,
            "errors": 0,
            "predict_seconds": 0.0,
            "tokens": 0,
        }


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        ((), {"GATEWAY_JOBS_ENABLED": "false"}, "GATEWAY_JOBS_ENABLED=false"),
        ((), {"GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS": "0"}, "GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS=0"),
        (("--grpc-port", "0"), {}, "takes no requests"),
    ],
)
def test_the_jobs_role_refuses_settings_that_leave_it_nothing_to_do(
    args: tuple[str, ...], env: dict[str, str], said: str, tmp_path: Path
) -> None:
    result = run("serve", "--role", "jobs", *args, env={"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/s.db", **env})
    assert result.returncode != 0 and said in result.stderr, result.stderr


def test_a_jobs_process_lowers_its_priority_by_the_setting_and_others_keep_theirs() -> None:
    code = (
        "import os; from gateway.jobs.role import lower_priority; from gateway.settings import GatewaySettings; "
        "before = os.nice(0); after = lower_priority(GatewaySettings(role=os.environ['ROLE'], jobs_nice=7)); "
        "print(after - before)"
    )
    for role, lowered in (("jobs", "7"), ("all", "0"), ("gateway", "0")):
        result = subprocess.run(
            [str(BIN / "python"), "-c", code], capture_output=True, text=True, env={**os.environ, "ROLE": role}
        )
        assert result.returncode == 0 and result.stdout.strip() == lowered, (role, result.stdout, result.stderr)


def test_blas_threads_are_limited_in_the_libraries_loaded_before_and_after_and_in_children() -> None:
    """GATEWAY_BLAS_THREADS: numpy's BLAS, loaded before the limit, scipy's, loaded after it,
    and a process started afterwards all run at the limit (1, where the libraries' own default
    is a thread a core; OpenBLAS takes no more than the cores from its variable); 0 sets nothing.
    On a host of one core the limit cannot show against the default: CI's has two."""
    code = (
        "import json, os, subprocess, sys; import numpy; from gateway.runtimes.blas import limit_blas_threads; "
        "limit_blas_threads(int(os.environ['THREADS'])); import scipy.linalg; "
        "from threadpoolctl import threadpool_info; "
        "child = 'from threadpoolctl import threadpool_info; import numpy, scipy.linalg, json; "
        'print(json.dumps(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})))\'; '
        "print(json.dumps({'here': sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}), "
        "'libraries': len([i for i in threadpool_info() if i['user_api'] == 'blas']), "
        "'child': json.loads(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True).stdout), "
        "'variable': os.environ.get('OPENBLAS_NUM_THREADS')}))"
    )
    environment = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
    }
    limited = subprocess.run(
        [str(BIN / "python"), "-c", code], capture_output=True, text=True, env={**environment, "THREADS": "1"}
    )
    assert limited.returncode == 0, limited.stderr
    seen = json.loads(limited.stdout)
    assert seen["libraries"] >= 2  # numpy's and scipy's own OpenBLAS
    assert (seen["here"], seen["child"], seen["variable"]) == ([1], [1], "1"), seen
    left = subprocess.run(
        [str(BIN / "python"), "-c", code], capture_output=True, text=True, env={**environment, "THREADS": "0"}
    )
    assert left.returncode == 0, left.stderr
    assert json.loads(left.stdout)["variable"] is None
    if (os.cpu_count() or 1) > 1:  # one core: the libraries' own default is one thread too
        assert 1 not in json.loads(left.stdout)["here"]
