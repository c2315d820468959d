"""CSV and Parquet bodies are capped in rows and decoded size: 413, before decoding where the
format says how much it holds (a small compressed Parquet file can decode to gigabytes)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.models import Model

from gateway.demo import IRIS
from gateway.errors import DecodedTooLarge
from gateway.settings import GatewaySettings
from gateway.wire.mlflow_scoring import CSV, PARQUET, BodyLimits, decode
from tests.conftest import IRIS_COLUMNS, Registry, running_gateway

PARQUET_TYPE = {"content-type": PARQUET}


def zeros_parquet(row_groups: int, rows_per_group: int = 1 << 20) -> bytes:
    """int64 zeros, ``row_groups`` of ``rows_per_group`` rows: 8 MiB a group once decoded,
    a few hundred bytes a group on the wire (dictionary and run-length encoded, zstd)."""
    table = pa.table({"x": np.zeros(rows_per_group, dtype=np.int64)})
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, compression="zstd") as writer:
        for _ in range(row_groups):
            writer.write_table(table)
    return out.getvalue()


def test_a_parquet_bomb_is_refused_from_its_metadata_before_decoding() -> None:
    body = zeros_parquet(128)  # 1 GiB decoded
    assert len(body) < 1 << 20
    with pytest.raises(DecodedTooLarge, match=r"1024\.0 MiB decoded.*GATEWAY_MAX_DECODED_MB") as refused:
        decode(body, PARQUET, Model(), BodyLimits(max_rows=10**9))
    assert refused.value.fields == {"limit": "GATEWAY_MAX_DECODED_MB"}
    with pytest.raises(DecodedTooLarge, match=r"134,217,728 rows.*GATEWAY_MAX_BODY_ROWS"):
        decode(body, PARQUET, Model(), BodyLimits())


def test_repeated_strings_that_the_metadata_undercounts_stop_within_a_batch() -> None:
    # Dictionary encoding stores one 64 KiB string once: the metadata says ~64 KiB, and
    # decoding makes a copy per row (128 MiB for 2048 rows).
    table = pa.table({"s": pa.array(["a" * (64 << 10)] * 2048)})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    column = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    assert "RLE_DICTIONARY" in column.encodings and column.total_uncompressed_size < 1 << 20
    limits = BodyLimits(max_rows=10**6, max_decoded_bytes=8 << 20)
    with pytest.raises(DecodedTooLarge, match="GATEWAY_MAX_DECODED_MB"):
        decode(out.getvalue(), PARQUET, Model(), limits)


def test_bodies_within_the_limits_decode_as_pandas_reads_them() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    body = io.BytesIO()
    frame.to_parquet(body)
    pd.testing.assert_frame_equal(
        decode(body.getvalue(), PARQUET, Model(), BodyLimits(max_rows=3)).data, pd.read_parquet(body)
    )
    csv = frame.to_csv(index=False).encode()
    pd.testing.assert_frame_equal(decode(csv, CSV, Model(), BodyLimits(max_rows=3)).data, pd.read_csv(io.BytesIO(csv)))
    with pytest.raises(DecodedTooLarge, match="more than 2 rows"):
        decode(csv, CSV, Model(), BodyLimits(max_rows=2))


@pytest.mark.anyio
async def test_the_gateway_answers_413_for_bodies_past_the_limits(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(max_body_rows=5, max_decoded_mb=1)
    rows = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]] * 6, columns=IRIS_COLUMNS)
    path = f"/models/{IRIS}/versions/1/predict"
    async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
        client = gateway.client
        ok = await client.post(path, content=rows.head(5).to_csv(index=False), headers={"content-type": CSV})
        assert ok.status_code == 200, ok.text
        too_many = await client.post(path, content=rows.to_csv(index=False), headers={"content-type": CSV})
        assert too_many.status_code == 413 and too_many.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert too_many.json()["limit"] == "GATEWAY_MAX_BODY_ROWS"
        bomb = await client.post(path, content=zeros_parquet(16, rows_per_group=4), headers=PARQUET_TYPE)
        assert bomb.status_code == 413 and bomb.json()["limit"] == "GATEWAY_MAX_BODY_ROWS"
        wide = io.BytesIO()  # 4 rows of 1 MiB strings: 4 MiB decoded, a few KiB sent
        pq.write_table(pa.table({"s": ["a" * (1 << 20)] * 4}), wide, compression="zstd")
        assert len(wide.getvalue()) < 64 << 10
        big = await client.post(path, content=wide.getvalue(), headers=PARQUET_TYPE)
        assert big.status_code == 413 and big.json()["limit"] == "GATEWAY_MAX_DECODED_MB", big.text
