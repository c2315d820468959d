"""A version's predictions joined with their labels from the inference tables, and scored by
``mlflow.models.evaluate`` (``registry-gateway evaluate``; docs/user-guide.md: Evaluate a
version on production traffic).

The tables' layout (issue 50): one row per request under
``<root>/predictions/model=<name>/version=<v>/date=<YYYY-MM-DD>/*.parquet`` (``request_id``,
``time``, ``status``, ``error_code``, ``outputs``: the answer as JSON text, records orient: a
list of rows), and the labels under ``<root>/labels/date=<YYYY-MM-DD>/*.parquet``
(``request_id``, ``row``, ``model``, ``version``, ``label``: one output row as JSON text,
``received_at``). ``root`` is a directory or any URI pyarrow's filesystems read (``s3://``...).
The Delta sink's tables (``delta.py``: the same rows, ``date`` a column) are read through
deltalake: ``delta+file:///dir``, ``delta+s3://bucket/prefix``, or a root whose ``predictions``
has a ``_delta_log``.

What is scored, and what is left out (counted in :class:`Joined`):
- each row of the answers of requests answered 2xx (an answer of 50 rows is 50 predictions),
  by its index in the answer (``row``);
- that has a label for that model and version and that row (a label without a model or version
  counts for the request it names; a label file without ``row``, written before labels had
  one, is for row 0); the latest received wins when a row was labelled more than once;
- a row or label that is an object is read at ``column`` (``--column``), or at its only key.

Nothing here runs a model: MLflow scores the predictions the gateway already made
(``predictions=``), and logs the metrics to a run, linked to the version's LoggedModel when it
has one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlparse

import pandas as pd

ModelType = Literal["classifier", "regressor"]
PREDICTION, LABEL, ROW = "prediction", "label", "row"


class TablesUnavailable(Exception):
    """The tables cannot be read, or hold nothing to evaluate; the message says which."""


@dataclass(frozen=True, slots=True)
class Joined:
    """The rows to score (``request_id``, ``row``, ``time``, ``arm``, ``prediction``, ``label``)
    and what was left out, by reason."""

    frame: pd.DataFrame
    requests: int  # requests read (within --since)
    failed: int  # answered with an error: no prediction
    unreadable: int  # answered, but not with a list of rows this reader understands
    rows: int  # the answered rows, all requests together
    unlabelled: int  # rows without a label

    def describe(self) -> str:
        return (
            f"{len(self.frame)} labelled rows of {self.rows} answered in {self.requests} requests read "
            f"({self.failed} failed, {self.unreadable} unreadable, {self.unlabelled} rows without a label)"
        )


def joined(root: str, model: str, version: str, *, since: datetime | None = None, column: str | None = None) -> Joined:
    """The version's predictions since ``since`` (UTC), joined with their labels. ``root`` is
    Parquet tables, or Delta tables (``delta+file:///dir``, ``delta+s3://bucket/prefix``, or a
    root whose ``predictions`` has a ``_delta_log``)."""
    tables = _tables(root)
    predictions = tables.predictions(model, version, since)
    if predictions.empty:
        raise TablesUnavailable(f"no predictions of {model} version {version} under {root}" + _since(since))
    if "time" in predictions:
        predictions["time"] = _utc(predictions["time"])
        if since is not None:
            predictions = predictions[predictions["time"] >= pd.Timestamp(since)]
    requests = len(predictions)
    ok = predictions["status"].astype(int).between(200, 299)
    if "error_code" in predictions:
        ok &= predictions["error_code"].isna() | (predictions["error_code"].astype(str) == "")
    answered = predictions[ok].copy()
    answered[PREDICTION] = [_answer_rows(text, column) for text in answered["outputs"]]
    # a mask, not a list: an empty list would select no columns rather than no rows
    readable = answered[
        pd.Series([value is not None for value in answered[PREDICTION]], index=answered.index, dtype=bool)
    ]
    keep = [c for c in ("request_id", "time", "arm", PREDICTION) if c in readable]
    # one frame row per answered row, numbered within its answer as a label names it
    # (by answer, not request id: an id sent twice is two answers, each labelled by its rows)
    rows = readable[keep].explode(PREDICTION)
    rows.insert(1, ROW, rows.groupby(level=0).cumcount())
    rows = rows.reset_index(drop=True)
    labels = tables.labels()
    if labels.empty:
        raise TablesUnavailable(f"no labels under {root}/labels")
    labels[ROW] = labels[ROW].fillna(0).astype(int) if ROW in labels else 0
    mine = labels["request_id"].isin(set(readable["request_id"]))
    if "model" in labels:
        mine &= labels["model"].isna() | (labels["model"].astype(str) == model)
    if "version" in labels:
        mine &= labels["version"].isna() | (labels["version"].astype(str) == str(version))
    labels = labels[mine]
    if "received_at" in labels:
        labels = labels.assign(received_at=_utc(labels["received_at"])).sort_values("received_at")
    labels = labels.drop_duplicates(["request_id", ROW], keep="last")
    labels = labels.assign(**{LABEL: [_label(text, column) for text in labels["label"]]})[["request_id", ROW, LABEL]]
    frame = rows.merge(labels, on=["request_id", ROW], how="inner").reset_index(drop=True)
    return Joined(
        frame=frame,
        requests=requests,
        failed=requests - len(answered),
        unreadable=len(answered) - len(readable),
        rows=len(rows),
        unlabelled=len(rows) - len(frame),
    )


def model_type_of(frame: pd.DataFrame) -> ModelType:
    """``regressor`` when a label is a non-integral number, ``classifier`` otherwise (classes:
    integers, strings, booleans)."""
    for value in frame[LABEL]:
        if isinstance(value, float) and not float(value).is_integer():
            return "regressor"
    return "classifier"


def evaluate(
    rows: Joined,
    *,
    model: str,
    version: str,
    model_type: ModelType,
    experiment: str,
    model_id: str | None,
    described: dict[str, str],
) -> tuple[str, dict[str, float]]:
    """``mlflow.models.evaluate`` on the joined rows (predictions already made), in a new run of
    ``experiment``, linked to ``model_id`` (the version's LoggedModel) when given: the run's id
    and the metrics."""
    import mlflow

    if rows.frame.empty:
        raise TablesUnavailable(f"no labelled predictions of {model} version {version}: {rows.describe()}")
    # Values read from JSON sit in object columns: typed here (int64 classes, float64 numbers),
    # as scikit-learn, which MLflow scores with, takes no object column of numbers.
    data = rows.frame[[PREDICTION, LABEL]].infer_objects()
    if model_type == "regressor":
        data = data.astype(float)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"evaluate {model} v{version}") as run:
        mlflow.set_tags({"gateway.evaluate.model": model, "gateway.evaluate.version": str(version)})
        mlflow.log_params({**described, "rows": len(data), "model_type": model_type})
        result = mlflow.models.evaluate(  # type: ignore[no-untyped-call]
            data=data, predictions=PREDICTION, targets=LABEL, model_type=model_type, model_id=model_id
        )
    return run.info.run_id, {key: float(value) for key, value in result.metrics.items()}


# --- reading ------------------------------------------------------------------------

DELTA = "delta+"
# The columns read: a row's typed columns (``input_*``, ``output_*``) are not needed here.
_PREDICTION_COLUMNS = ["request_id", "time", "arm", "status", "error_code", "outputs"]
_LABEL_COLUMNS = ["request_id", "row", "model", "version", "label", "received_at"]


class _Tables(Protocol):
    def predictions(self, model: str, version: str, since: datetime | None) -> pd.DataFrame: ...

    def labels(self) -> pd.DataFrame: ...


def _tables(root: str) -> _Tables:
    """The reader of the tables at ``root``: Delta when named so (``delta+``) or when the
    ``predictions`` table has a Delta log (a Parquet reader would read every file in its folders,
    the uncommitted and the removed too), Parquet otherwise."""
    if root.startswith(DELTA):
        return _DeltaTables(root.removeprefix(DELTA))
    try:
        filesystem, base = _filesystem(root)
    except Exception as exc:  # pyarrow raises ArrowInvalid or OSError for a URI it cannot open
        raise TablesUnavailable(f"cannot open the tables at {root}: {exc}") from exc
    base = base.rstrip("/")
    if _is_directory(filesystem, f"{base}/predictions/_delta_log"):
        return _DeltaTables(root)
    return _ParquetTables(filesystem, base)


@dataclass(frozen=True, slots=True)
class _ParquetTables:
    """The Parquet sink's tables: every file under a version's (the labels') folders."""

    filesystem: Any
    base: str

    def predictions(self, model: str, version: str, since: datetime | None) -> pd.DataFrame:
        try:
            return _read(self.filesystem, _version_dir(self.filesystem, self.base, model, version), since)
        except OSError as exc:  # the store unreachable, or refusing: say so, not a traceback
            raise TablesUnavailable(f"cannot read the tables at {self.base}: {exc}") from exc

    def labels(self) -> pd.DataFrame:
        try:
            return _read(self.filesystem, f"{self.base}/labels", since=None)
        except OSError as exc:
            raise TablesUnavailable(f"cannot read the tables at {self.base}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _DeltaTables:
    """The Delta sink's tables (``delta.py``), read through deltalake: the files of each table's
    latest version only (a file whose commit failed, or one a compaction replaced, is not read),
    and of ``predictions`` only those of the version's ``model``/``version`` partitions and of
    ``date`` partitions from ``since``'s day on."""

    root: str  # file:///dir, s3://bucket/prefix or a directory

    def predictions(self, model: str, version: str, since: datetime | None) -> pd.DataFrame:
        partitions: list[tuple[str, str, Any]] = [("model", "=", model), ("version", "=", str(version))]
        if since is not None:
            partitions.append(("date", ">=", since.astimezone(UTC).date()))
        return self._read("predictions", _PREDICTION_COLUMNS, partitions)

    def labels(self) -> pd.DataFrame:
        return self._read("labels", _LABEL_COLUMNS, None)

    def _read(self, name: str, columns: list[str], partitions: list[tuple[str, str, Any]] | None) -> pd.DataFrame:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from gateway.observability.records.delta import storage_options

        uri = f"{self.root.rstrip('/')}/{name}"
        try:
            table = DeltaTable(uri, storage_options=storage_options(self.root))
        except TableNotFoundError:
            return pd.DataFrame()
        except Exception as exc:  # unreachable store, bad credentials: say where
            raise TablesUnavailable(f"cannot open the Delta table {uri}: {exc}") from exc
        present = set(table.schema().to_arrow().names)
        try:
            # filters on partition columns: only the matching partitions' files are opened
            return table.to_pandas(filters=partitions, columns=[c for c in columns if c in present])
        except Exception as exc:  # a data file gone or unreadable
            raise TablesUnavailable(f"cannot read the Delta table {uri}: {exc}") from exc


def _is_directory(filesystem: Any, path: str) -> bool:
    from pyarrow import fs as pafs

    try:
        return bool(filesystem.get_file_info(path).type == pafs.FileType.Directory)
    except OSError:
        return False


def _filesystem(root: str) -> tuple[Any, str]:
    """The filesystem the tables are on, and their root's path there. ``s3://`` with
    ``MLFLOW_S3_ENDPOINT_URL`` set goes to that endpoint, as the artifact store's clients do
    (credentials: the standard ``AWS_*`` variables)."""
    from pyarrow import fs as pafs

    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    if root.startswith("s3://") and endpoint:
        parsed = urlparse(endpoint)
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        s3 = pafs.S3FileSystem(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https", region=region)
        return s3, root.removeprefix("s3://")
    if "://" in root:
        filesystem, path = pafs.FileSystem.from_uri(root)
        return filesystem, str(path)
    return pafs.LocalFileSystem(), root


def _version_dir(filesystem: Any, base: str, model: str, version: str) -> str:
    from pyarrow import fs as pafs

    for name in (model, quote(model, safe="")):  # as written, or escaped as hive writers do
        path = f"{base}/predictions/model={name}/version={version}"
        if filesystem.get_file_info(path).type == pafs.FileType.Directory:
            return path
    return f"{base}/predictions/model={model}/version={version}"


def _read(filesystem: Any, directory: str, since: datetime | None) -> pd.DataFrame:
    """Every Parquet file under ``directory``'s ``date=`` partitions (those from ``since``'s day
    on), as one frame; empty when there are none."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    if filesystem.get_file_info(directory).type != pafs.FileType.Directory:
        return pd.DataFrame()
    first = since.astimezone(UTC).date() if since is not None else None
    frames = []
    for info in filesystem.get_file_info(pafs.FileSelector(directory, recursive=True)):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        day = _partition_day(info.path)
        if first is not None and day is not None and day < first:
            continue
        try:
            frames.append(pq.read_table(info.path, filesystem=filesystem).to_pandas())
        except Exception as exc:  # a file that is not Parquet: say which
            raise TablesUnavailable(f"cannot read {info.path}: {exc}") from exc
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _partition_day(path: str) -> date | None:
    for part in path.split("/"):
        if part.startswith("date="):
            try:
                return date.fromisoformat(part[len("date=") :])
            except ValueError:
                return None
    return None


def _utc(column: pd.Series) -> pd.Series:
    """Times as UTC timestamps, whether written as timestamps, epoch seconds or ISO text."""
    if pd.api.types.is_numeric_dtype(column):
        return pd.to_datetime(column, unit="s", utc=True)
    return pd.to_datetime(column, utc=True)


def _answer_rows(text: Any, column: str | None) -> list[Any] | None:
    """Each row's prediction, in order; None for an answer this reader does not understand."""
    try:
        rows = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return None
    if isinstance(rows, dict) and "predictions" in rows:
        rows = rows["predictions"]
    if not isinstance(rows, list):
        return [_value(rows, column)]
    return [_value(row, column) for row in rows] or None


def _label(text: Any, column: str | None) -> Any:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        value = text  # a bare class name, not quoted as JSON
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _value(value, column)


def _value(row: Any, column: str | None) -> Any:
    if isinstance(row, dict):
        if column is not None and column in row:
            return row[column]
        if len(row) == 1:
            return next(iter(row.values()))
        raise TablesUnavailable(f"a row has the columns {sorted(row)}: name the one to score with --column")
    if isinstance(row, float) and math.isnan(row):
        return None
    return row


def _since(since: datetime | None) -> str:
    return f" since {since.isoformat()}" if since is not None else ""
