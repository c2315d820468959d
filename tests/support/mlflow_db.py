"""New MLflow sqlite databases, copied from one migrated once per test run.

MLflow brings every new database to its schema by running all of its migrations (68 alembic
revisions: 3-9 s of CPU each time on 2 cores), and the suite makes a few dozen registries.
Migrated once for all the run's processes (pytest-xdist's workers: tests/support/run_once.py).
The copy is the database MLflow would make itself, less the Default experiment: whoever
opens it first (a client, an `mlflow server`) creates that one with its own artifact root,
as it does on a database it has just created.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path

from tests.support.run_once import built_once

_lock = threading.Lock()
_template: Path | None = None


def _migrate(directory: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{directory / 'mlflow.db'}")
    try:
        with warnings.catch_warnings():  # one of MLflow's migrations uses a deprecated loader
            warnings.simplefilter("ignore", sqlalchemy.exc.SADeprecationWarning)
            _initialize_tables(engine)  # what MLflow's store does on a new database
        assert _all_tables_exist(engine), "MLflow's migrations left tables out"
        with engine.connect() as connection:
            experiments = connection.execute(sqlalchemy.text("SELECT COUNT(*) FROM experiments")).scalar()
        assert experiments == 0, "the template must leave the Default experiment to its owner"
    finally:
        engine.dispose()


def _migrated() -> Path:
    global _template
    with _lock:
        if _template is None:
            _template = built_once("mlflow-db-template", _migrate) / "mlflow.db"
        return _template


def new_mlflow_db(path: Path) -> str:
    """An empty MLflow database at ``path`` (its directory made); returns its tracking URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path} exists: a new registry needs a new database")
    shutil.copyfile(_migrated(), path)
    return f"sqlite:///{path}"
