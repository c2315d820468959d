"""What live quality's read costs as labels pile up (issue 50: "memory bounded whatever the label
backlog"; the monitor reads every interval, on every replica).

Self-contained (not part of ``bench/run.py``)::

    .venv/bin/python bench/quality_read.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/EMPTY_DB
    .venv/bin/python bench/quality_read.py --labels 1000000 --pairs 150   # sqlite, in a temporary folder

Fills ``--labels`` labels over ``--pairs`` (version, arm) pairs with one INSERT ... SELECT (at
schema 0012, before the pairs had a table), upgrades to the newest schema (0013 fills
``feedback_arms`` from them: timed), then times, best of three, what the monitor does each
interval: the pairs that have labels (``FeedbackStore.labelled``, from ``feedback_arms``) beside
the DISTINCT over every label it replaced, and every pair's window of 1,000 labels. A PostgreSQL
URL must name a database that exists and is empty.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's own packages

from alembic import command  # noqa: E402
from sqlalchemy import Engine, select, text  # noqa: E402

from registry_sync.database import _config, make_engine  # noqa: E402
from registry_sync.feedback import FeedbackStore  # noqa: E402
from registry_sync.state import FeedbackLabelRow  # noqa: E402


def best_of_three(step: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def migrate(engine: Engine, revision: str) -> float:
    config = _config(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return time.perf_counter() - started


def fill(engine: Engine, labels: int, pairs: int) -> None:
    series = (
        f"generate_series(1, {labels}) AS s(g)"
        if engine.dialect.name == "postgresql"
        else f"(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {labels}) SELECT g FROM s)"
    )
    models = max(pairs // 3, 1)  # three pairs a model: two versions' default arms and a canary
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feedback_labels (request_id, name, version, source, created_ms, arm, task, prediction, "
                "probabilities, label, received_at) "
                f"SELECT 'r' || g, 'model-' || (g % {models}), 1 + (g % 2), 'models:/m-bench', 1, "
                "CASE WHEN g % 3 = 0 THEN 'canary' ELSE 'default' END, 'classification', '1', NULL, '1', "
                f"1.0e9 + g * 0.001 FROM {series}"
            )
        )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE feedback_labels"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a sqlite file)")
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(args.database_url or f"sqlite:///{Path(folder) / 'state.db'}")
        migrate(engine, "0012")
        fill(engine, args.labels, args.pairs)
        upgraded = migrate(engine, "head")
        store = FeedbackStore(engine)
        found = store.labelled()
        columns = (
            FeedbackLabelRow.name,
            FeedbackLabelRow.version,
            FeedbackLabelRow.source,
            FeedbackLabelRow.created_ms,
        )
        distinct = select(*columns, FeedbackLabelRow.arm).distinct()

        def scan() -> object:
            with engine.connect() as connection:
                return connection.execute(distinct).all()

        print(f"{engine.dialect.name}, {args.labels:,} labels over {len(found)} (version, arm) pairs")
        print(f"  upgrade to the newest schema (fills feedback_arms): {upgraded:.2f} s, once")
        print(f"  the pairs with labels, from feedback_arms: {best_of_three(store.labelled) * 1000:.1f} ms")
        print(f"  the same by DISTINCT over every label (before): {best_of_three(scan) * 1000:.1f} ms")
        windows = best_of_three(lambda: [store.window(v, arm=arm, window=1000) for v, arm in found])
        print(
            f"  every pair's window of 1,000 labels: {windows * 1000:.0f} ms"
            f" ({windows / len(found) * 1000:.1f} ms a pair)"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
