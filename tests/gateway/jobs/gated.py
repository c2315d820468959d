"""A job whose predicts wait at a gate: a registry with the ``gated`` model
(tests.support.models.FileGated) and a Parquet input of ``rows`` rows (``row_id``, ``x``) in
row groups of 50, for tests that must act while chunks are being scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Registry, empty_registry
from tests.support.models import FileGated, log_pyfunc


def gated_job(tmp_path: Path, rows: int) -> tuple[Registry, Path, Path]:
    """The registry, the gate (a file: predicts of x != 0 wait until it exists) and the folder
    where each waiting predict leaves a mark; the input is ``tmp_path / "in.parquet"``."""
    registry = empty_registry(tmp_path / "registry")
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    entered.mkdir()
    registry.log(log_pyfunc, "gated", FileGated(str(gate), str(entered)))
    ids = np.arange(rows)
    table = pa.table({"row_id": pa.array(ids, pa.int64()), "x": pa.array(ids + 1.0, pa.float64())})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=50)
    return registry, gate, entered
