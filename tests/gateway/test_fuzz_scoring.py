"""The predict body decoders (JSON, CSV, Parquet) under hypothesis, without HTTP (issue 12).

Whatever the body and whatever the model's signature, ``scoring.decode`` returns an input or
raises one of the gateway's own errors (which http_errors turns into a 4xx): never another
exception, which would be a 500. Memory stays bounded: with the decoded-size limit at 1 MiB,
no body of a few KiB may make the decoder allocate more than a small multiple of it, at the
peak in Python and numpy (tracemalloc) or in all in Arrow's pool. tests/gateway/test_errors.py fuzzes JSON
over HTTP against one model; this goes wider, into every parser and schema kind.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from gateway.errors import DecodedTooLarge, GatewayError
from gateway.wire.mlflow_scoring import CSV, INPUT_KEYS, JSON, LLM_KEYS, PARQUET, BodyLimits, ScoringInput, decode

LIMITS = BodyLimits(max_rows=1_000, max_decoded_bytes=1 << 20)
BOUND = 16 << 20  # what a decode may allocate, for bodies of a few KiB and a 1 MiB limit
COLUMNS = ["a", "b", "c", "d"]

SIGNATURES: dict[str, Model] = {
    "none": Model(),
    "columns": Model(
        signature=ModelSignature(
            inputs=Schema(
                [
                    ColSpec("double", "a"),
                    ColSpec("long", "b"),
                    ColSpec("string", "c"),
                    ColSpec("boolean", "d", required=False),
                ]
            ),
            params=ParamSchema([ParamSpec("temperature", "double", 0.5)]),
        )
    ),
    "tensor": Model(signature=ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]))),
    "named tensors": Model(
        signature=ModelSignature(
            inputs=Schema([TensorSpec(np.dtype("int64"), (-1,), "a"), TensorSpec(np.dtype("str"), (-1,), "c")])
        )
    ),
}
# A fixed seed and ~1 s a test for CI; GATEWAY_FUZZ_EXAMPLES (README, "Fuzzing") for longer runs.
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "0")) * 10 or 250
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def decoded_within_bounds(
    body: bytes, media_type: str, metadata: Model, limits: BodyLimits = LIMITS
) -> ScoringInput | GatewayError:
    """What ``decode`` gives, or the gateway error it raised; fails on any other exception or
    more memory than BOUND."""
    pool = pa.default_memory_pool()
    arrow_before = pool.total_bytes_allocated()  # ever allocated: the delta bounds the call's peak
    tracemalloc.start()
    try:
        return decode(body, media_type, metadata, limits)
    except GatewayError as exc:
        return exc
    finally:
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        arrow = pool.total_bytes_allocated() - arrow_before
        assert python_peak < BOUND, f"decoding {len(body)} bytes took {python_peak / 2**20:.1f} MiB at its peak"
        assert arrow < BOUND, f"decoding {len(body)} bytes allocated {arrow / 2**20:.1f} MiB in Arrow"


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too
    | st.floats()  # NaN and infinities as json writes them
    | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=16,
)


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()  # allows NaN, Infinity and big integers, as clients send them


_documents = st.one_of(
    _values,
    st.dictionaries(
        st.sampled_from([*INPUT_KEYS, *LLM_KEYS, "params", "temperature"]), _values, min_size=1, max_size=3
    ),
    st.builds(
        lambda data, columns: {"dataframe_split": {"columns": columns, "data": data}},
        _values,
        st.lists(st.sampled_from(COLUMNS), max_size=5),
    ),
    st.builds(
        lambda records: {"dataframe_records": records},
        st.lists(st.dictionaries(st.sampled_from(COLUMNS), _scalars, max_size=4), max_size=4),
    ),
    st.builds(
        lambda inputs, key: {key: inputs},
        st.dictionaries(st.sampled_from(COLUMNS), _values, max_size=3) | _values,
        st.sampled_from(["inputs", "instances"]),
    ),
)


@FUZZ
@given(signature=st.sampled_from(sorted(SIGNATURES)), document=_documents)
def test_json_documents_decode_or_raise_a_gateway_error(signature: str, document: Any) -> None:
    decoded_within_bounds(_json(document), JSON, SIGNATURES[signature])


@FUZZ
@given(
    signature=st.sampled_from(sorted(SIGNATURES)),
    body=st.binary(max_size=256),
    media_type=st.sampled_from([JSON, CSV, PARQUET]),
)
def test_arbitrary_bytes_decode_or_raise_a_gateway_error(signature: str, body: bytes, media_type: str) -> None:
    decoded_within_bounds(body, media_type, SIGNATURES[signature])


_cells = st.text(
    alphabet=st.sampled_from(list('0123456789.-+eE"\n\r,; aTrueFalsnNIf\\\x00é')), max_size=10
) | st.integers().map(str)


@FUZZ
@given(
    signature=st.sampled_from(sorted(SIGNATURES)),
    header=st.lists(st.sampled_from([*COLUMNS, "", "a.1", "Unnamed: 0"]), min_size=1, max_size=5),
    rows=st.lists(st.lists(_cells, max_size=6), max_size=8),
)
def test_csv_bodies_decode_or_raise_a_gateway_error(signature: str, header: list[str], rows: list[list[str]]) -> None:
    text = "\n".join(",".join(row) for row in [header, *rows])
    decoded_within_bounds(text.encode(), CSV, SIGNATURES[signature])


def _parquet(frame: pd.DataFrame, compression: str, row_group_size: int | None = None) -> bytes:
    out = io.BytesIO()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), out, compression=compression, row_group_size=row_group_size
    )
    return out.getvalue()


_frames = st.builds(
    lambda n, data: pd.DataFrame(
        {
            "a": data.draw(st.lists(st.floats(), min_size=n, max_size=n)),
            "b": data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
            "c": data.draw(st.lists(st.text(max_size=6) | st.none(), min_size=n, max_size=n)),
        }
    ),
    st.integers(0, 20),
    st.data(),
)


@FUZZ
@given(
    signature=st.sampled_from(sorted(SIGNATURES)),
    frame=_frames,
    compression=st.sampled_from(["none", "snappy", "zstd", "gzip"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
)
def test_parquet_files_and_corruptions_of_them_decode_or_raise_a_gateway_error(
    signature: str, frame: pd.DataFrame, compression: str, flips: list[tuple[float, int]]
) -> None:
    """Valid files, and the same files with bytes overwritten: the footer's row counts, sizes
    and offsets are what the limits read first, so a corrupt one must not get past them."""
    body = bytearray(_parquet(frame, compression, row_group_size=7))  # several row groups
    for where, value in flips:
        body[int(where * len(body))] = value
    outcome = decoded_within_bounds(bytes(body), PARQUET, SIGNATURES[signature])
    if not flips:
        assert isinstance(outcome, ScoringInput), outcome
        assert len(outcome.data) == len(frame)


def test_the_memory_bound_can_fail() -> None:
    """A check that cannot fail is none: a body that decodes past BOUND, under limits that let
    it, fails the bound (and the real limits refuse it)."""
    body = _parquet(pd.DataFrame({"s": [f"{i:032d}" for i in range(1 << 19)]}), "zstd")  # ~45 MiB as objects
    assert len(body) < 8 << 20
    with pytest.raises(AssertionError, match="took|allocated"):
        decoded_within_bounds(body, PARQUET, Model(), BodyLimits(max_rows=10**8, max_decoded_bytes=1 << 30))
    assert isinstance(decoded_within_bounds(body, PARQUET, Model()), DecodedTooLarge)
