"""Where a version's reference data is, and reading it: a Parquet or CSV file, local or in S3.

The sources, in the order the sync leader tries them (``builder.py``):

1. the dataset the version's run logged with ``mlflow.log_input(..., context="training")``
   (MLflow keeps it on the run: ``run.inputs.dataset_inputs``, the tag ``mlflow.data.context``,
   the source as JSON ``{"uri": ...}``) when its source is a local file or S3
   (``source_type`` ``local`` or ``s3``); a training dataset of another kind (a Delta table,
   Hugging Face, a URL) is passed over;
2. the file the version tag ``gateway.drift.reference`` names (``s3://bucket/key``,
   ``file:///path`` or a path);
3. the version's artifact ``drift/reference.parquet`` (or ``drift/reference.csv``).

A file ending in ``.csv`` (or ``.csv.gz``) is CSV, anything else Parquet (a directory of
Parquet files too, locally). S3 is read with boto3 under MLflow's own variables
(``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``): the artifact store's credentials. A file is read
whole, then sampled to ``rows`` rows uniformly without replacement with :data:`SEED`, so the
same file always gives the same profile; its columns must be the signature's inputs,
exactly, or the reference fails: drift is then measured on the features the version takes.
A file over ``max_bytes`` is not read.

What goes wrong is a :class:`Unusable` naming it (missing, unreadable, empty, too large, a
scheme we cannot read, columns that do not match): the builder keeps it as the reference's
reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd

from registry_sync.drift.references import SourceKind

TAG = "gateway.drift.reference"
"""The version tag that names a reference file."""
ARTIFACT_PATHS = ("drift/reference.parquet", "drift/reference.csv")
"""The version's artifacts read as its reference, the first present."""
TRAINING = "training"
CONTEXT_TAG = "mlflow.data.context"
READABLE_SOURCE_TYPES = ("local", "s3")
NO_SIGNATURE = "no tabular signature"
SEED = 0
"""The sampling seed: the same file always gives the same sample."""


@dataclass(frozen=True, slots=True)
class Located:
    kind: SourceKind
    uri: str


class Unusable(Exception):
    """A reference source that was found and cannot be used; the message says why."""

    def __init__(self, message: str, located: Located | None = None) -> None:
        super().__init__(message)
        self.located = located  # the source it is about, once known


class NoTabularSignature(Exception):
    """The version's signature names no input columns, so there is nothing to bin on."""


@dataclass(frozen=True, slots=True)
class Table:
    frame: pd.DataFrame
    """The sample, its columns in the signature's order."""
    sampled_from: int
    """Rows the file had."""


def signature_columns(model: Any) -> list[str]:
    """The input column names of an MLflow ``Model``'s signature, or NoTabularSignature."""
    signature = getattr(model, "signature", None)
    if signature is None or signature.inputs is None:
        raise NoTabularSignature(f"{NO_SIGNATURE}: the version was logged without an input signature")
    inputs = signature.inputs
    if inputs.is_tensor_spec():
        raise NoTabularSignature(f"{NO_SIGNATURE}: its inputs are tensors, not named columns")
    if not inputs.has_input_names():
        raise NoTabularSignature(f"{NO_SIGNATURE}: its input columns have no names")
    return [str(name) for name in inputs.input_names()]


def training_dataset(run: Any) -> Located | None:
    """The first dataset logged on ``run`` with context ``training`` whose source is a local
    or S3 file; None when there is none."""
    inputs = getattr(run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or ():
        tags = {tag.key: tag.value for tag in dataset_input.tags or ()}
        dataset = dataset_input.dataset
        if tags.get(CONTEXT_TAG) != TRAINING or dataset.source_type not in READABLE_SOURCE_TYPES:
            continue
        try:
            uri = json.loads(dataset.source).get("uri")
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(uri, str) and uri:
            return Located("dataset", uri)
    return None


def check_columns(found: Sequence[str], signature: Sequence[str]) -> None:
    """Unusable unless the file's columns are the signature's inputs (in any order)."""
    missing = [name for name in signature if name not in found]
    extra = [name for name in found if name not in signature]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks the signature's {_names(missing)}")
        if extra:
            parts.append(f"has {_names(extra)}, which the signature does not name")
        raise Unusable(f"its columns do not match the version's signature: it {' and '.join(parts)}")


def _names(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(repr(name) for name in names[:most])
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"column{'s' if len(names) > 1 else ''} {shown}{more}"


def read_reference(
    uri: str, *, columns: Sequence[str], rows: int, max_bytes: int, scratch: Path, name: str | None = None
) -> Table:
    """The file at ``uri`` (local or S3), checked against ``columns`` and sampled to ``rows``.
    ``name``: the file's name when ``uri`` is a downloaded copy (for its format)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        with tempfile.TemporaryDirectory(dir=scratch, prefix="drift-") as directory:
            local = _download_s3(parts.netloc, parts.path.lstrip("/"), Path(directory), max_bytes=max_bytes)
            return read_local(local, columns=columns, rows=rows, max_bytes=max_bytes, name=name or parts.path)
    if parts.scheme in ("", "file"):
        path = Path(unquote(parts.path)) if parts.scheme else Path(uri)
        return read_local(path, columns=columns, rows=rows, max_bytes=max_bytes, name=name)
    raise Unusable(f"cannot read {parts.scheme}: URIs (a reference is a local or S3 Parquet or CSV file)")


def _download_s3(bucket: str, key: str, directory: Path, *, max_bytes: int) -> Path:
    import boto3
    import botocore.exceptions

    if not bucket or not key:
        raise Unusable("an S3 URI names a bucket and a key: s3://bucket/key")
    client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        _check_size(size, max_bytes)
        local = directory / "reference"
        client.download_file(bucket, key, str(local))
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise Unusable(f"s3://{bucket}/{key} does not exist") from exc
        raise Unusable(f"s3://{bucket}/{key} could not be read: {code or exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise Unusable(f"s3://{bucket}/{key} could not be read: {type(exc).__name__}: {exc}") from exc
    return local


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise Unusable(
            f"the file is {size / 2**20:.1f} MiB, over GATEWAY_DRIFT_REFERENCE_MAX_MB ({max_bytes / 2**20:g} MiB)"
        )


def read_local(path: Path, *, columns: Sequence[str], rows: int, max_bytes: int, name: str | None = None) -> Table:
    """A local Parquet or CSV file (or a directory of Parquet files), as for read_reference."""
    import pyarrow as pa

    if not path.exists():
        raise Unusable(f"{path} does not exist")
    size = (
        sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.is_dir() else path.stat().st_size
    )
    _check_size(size, max_bytes)
    shown = name or str(path)
    try:
        table = _read_csv(path) if _is_csv(shown) else _read_parquet(path, columns)
    except Unusable:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        kind = "CSV" if _is_csv(shown) else "Parquet"
        raise Unusable(f"not a readable {kind} file: {type(exc).__name__}: {_first_line(exc)}") from exc
    check_columns(table.column_names, columns)
    if table.num_rows == 0:
        raise Unusable("the file has no rows")
    total = table.num_rows
    if total > rows:
        chosen = np.sort(np.random.default_rng(SEED).choice(total, size=rows, replace=False))
        table = table.take(pa.array(chosen))
    frame = table.select(list(columns)).to_pandas()
    return Table(frame, total)


def _is_csv(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(".csv") or lowered.endswith(".csv.gz")


def _read_csv(path: Path) -> Any:
    from pyarrow import csv

    return csv.read_csv(path)


def _read_parquet(path: Path, columns: Sequence[str]) -> Any:
    """Only the signature's columns are read; the schema is checked first (a file with other
    columns fails before its data is read)."""
    import pyarrow.parquet as pq

    dataset = pq.ParquetDataset(path)
    names = [name for name in dataset.schema.names if not name.startswith("__index_level_")]
    check_columns(names, columns)
    return dataset.read(columns=list(columns))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
