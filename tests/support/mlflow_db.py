"""New MLflow sqlite databases, copied from one migrated once per test process.

MLflow brings every new database to its schema by running all of its migrations (68 alembic
revisions: 3-9 s of CPU each time on 2 cores), and the suite makes a few dozen registries.
The copy is the database MLflow would make itself, less the Default experiment: whoever
opens it first (a client, an `mlflow server`) creates that one with its own artifact root,
as it does on a database it has just created.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_template: Path | None = None


def _migrated() -> Path:
    global _template
    with _lock:
        if _template is None:
            import sqlalchemy
            from mlflow.store.db.utils import _all_tables_exist, _initialize_tables

            directory = Path(tempfile.mkdtemp(prefix="mlflow-db-template-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = directory / "mlflow.db"
            engine = sqlalchemy.create_engine(f"sqlite:///{path}")
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
            _template = path
        return _template


def new_mlflow_db(path: Path) -> str:
    """An empty MLflow database at ``path`` (its directory made); returns its tracking URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path} exists: a new registry needs a new database")
    shutil.copyfile(_migrated(), path)
    return f"sqlite:///{path}"
