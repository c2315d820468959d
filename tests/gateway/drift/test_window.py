"""The live side's pieces on their own: the sliding window (time and count), the sampler's
draw, bounded queue and binning, and the verdict's flags and tags."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from gateway.drift.baseline import Baselines
from gateway.drift.book import BASELINE, KnownReference
from gateway.drift.sampler import DriftSampler
from gateway.drift.window import SLICES, SlidingWindow, Windows, window_bytes
from gateway.metrics import GatewayMetrics
from registry_sync.drift.profile import Profile, profile_columns
from registry_sync.drift.references import NONE, READY
from registry_sync.drift.statistics import bin_frame
from registry_sync.drift.verdict import COLUMNS, Thresholds, judge
from registry_sync.drift.windows import WindowCounts
from registry_sync.identity import VersionId

pytestmark = pytest.mark.anyio

VERSION = VersionId("drifting", 1, "models:/m-1", 1)
RNG = np.random.default_rng(7)
TRAIN = pd.DataFrame({"x": RNG.normal(0, 1, 5000), "y": RNG.normal(10, 2, 5000), "c": RNG.choice(["a", "b"], 5000)})
PROFILE = Profile(
    profile_columns(TRAIN), profile_columns(pd.DataFrame({"prediction": RNG.integers(0, 3, 5000)})), 5000, 5000
)


def counts_of(frame: pd.DataFrame) -> WindowCounts:
    return WindowCounts(bin_frame(PROFILE.inputs, frame), {}, rows=len(frame), requests=len(frame))


def test_the_window_keeps_its_time_then_its_latest_rows_in_slices() -> None:
    window = SlidingWindow(seconds=120.0, max_rows=1000)
    step = 120.0 / SLICES
    for i in range(SLICES):
        window.add(counts_of(TRAIN.iloc[:100]), now=i * step)
    assert window.total(now=(SLICES - 1) * step).rows == 1000  # 12 slices of 100: the oldest two left by count
    assert len(window) == 10
    # A window's time later, nothing older than the window is left.
    assert window.total(now=(SLICES - 1) * step + 120.0).rows == 0
    assert len(window) == 0


def test_a_window_is_bins_whatever_the_traffic() -> None:
    windows = Windows(seconds=3600, max_rows=10**9)
    for _ in range(20):
        windows.add(VERSION, counts_of(TRAIN), now=0.0)
    total = windows.totals(now=1.0)[VERSION]
    assert total.rows == 20 * len(TRAIN)
    # The counts are arrays of one int64 per bin, however many rows went in.
    assert all(c.counts.dtype == np.int64 and len(c.counts) <= 11 for c in total.inputs.values())
    assert window_bytes(PROFILE) < 64 * 1024


def sampler(reference: KnownReference | None, *, sample: float = 1.0, max_bytes: int = 2**20) -> DriftSampler:
    class Book:
        def get(self, version: VersionId) -> KnownReference | None:
            return reference

    baselines = Baselines(rows=50, columns=lambda version: ["x", "y", "c"])
    return DriftSampler(
        GatewayMetrics(),
        Book(),  # type: ignore[arg-type]
        Windows(seconds=3600, max_rows=10**6),
        baselines,
        sample=sample,
        max_bytes=max_bytes,
        clock=lambda: 100.0,
    )


READY_REFERENCE = KnownReference(READY, "dataset", "file:///train.parquet", None, PROFILE, 5000, 0.0)


def body(frame: pd.DataFrame, shape: str = "dataframe_split") -> bytes:
    if shape == "dataframe_split":
        return orjson.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})
    return orjson.dumps({shape: frame.to_dict(orient="records")})


def answer(rows: int) -> bytes:
    return orjson.dumps({"predictions": [1] * rows})


async def test_sampled_requests_are_binned_off_the_path_and_odd_ones_counted_never_raised() -> None:
    drift = sampler(READY_REFERENCE)
    good = TRAIN.iloc[:10]
    for shape in ("dataframe_split", "dataframe_records", "inputs", "instances"):
        drift.offer(
            VERSION, protocol="mlflow", media_type="application/json", request=body(good, shape), response=answer(10)
        )
    drift.offer(
        VERSION,
        protocol="mlflow",
        media_type="text/csv",
        request=good.to_csv(index=False).encode(),
        response=answer(10),
    )
    drift.offer(VERSION, protocol="mlflow", media_type="application/json", request=b"{not json", response=b"")
    extra = good.assign(z=1.0)
    drift.offer(VERSION, protocol="mlflow", media_type="application/json", request=body(extra), response=answer(10))
    missing = good.drop(columns=["y"])
    drift.offer(VERSION, protocol="mlflow", media_type="application/json", request=body(missing), response=answer(10))
    drift.offer(
        VERSION, protocol="mlflow", media_type="application/json", request=body(good.assign(x="text")), response=b"[]"
    )
    oip = {
        "inputs": [
            {"name": n, "shape": [10], "datatype": "BYTES" if n == "c" else "FP64", "data": good[n].tolist()}
            for n in good
        ]
    }
    drift.offer(VERSION, protocol="oip", media_type="application/json", request=orjson.dumps(oip), response=b"{}")
    assert drift.queued_bytes > 0
    assert await drift.flush() == 10
    assert drift.queued_bytes == 0
    total = drift.windows.totals(now=100.0)[VERSION]
    assert (total.rows, total.requests, total.unreadable, total.mismatched) == (90, 10, 1, 2)
    assert total.inputs["y"].missing == 10  # the request without y
    assert total.inputs["x"].outliers == 10  # "text" is no number
    assert (
        total.outputs["prediction"].rows == 90 and total.outputs["prediction"].missing == 20
    )  # answers not one per row


async def test_the_draw_and_the_bound_drop_rather_than_wait() -> None:
    none_drawn = sampler(READY_REFERENCE, sample=0.0)
    none_drawn.offer(
        VERSION, protocol="mlflow", media_type="application/json", request=body(TRAIN.iloc[:1]), response=answer(1)
    )
    assert none_drawn.queued_bytes == 0
    small = sampler(READY_REFERENCE, max_bytes=600)
    for _ in range(3):
        small.offer(
            VERSION, protocol="mlflow", media_type="application/json", request=body(TRAIN.iloc[:1]), response=answer(1)
        )
    assert await small.flush() == 1  # one fits; the others were dropped and counted
    dropped = small._metrics.drift_dropped.labels("buffer_full")._value.get()
    assert dropped == 2


async def test_a_version_without_a_source_profiles_a_baseline_from_its_first_rows() -> None:
    drift = sampler(KnownReference(NONE, None, None, "no training dataset", None, 0, None))
    for start in range(0, 60, 10):
        frame = TRAIN.iloc[start : start + 10]
        drift.offer(VERSION, protocol="mlflow", media_type="application/json", request=body(frame), response=answer(10))
    await drift.flush()
    finished = drift.baselines.finished()
    assert list(finished) == [VERSION]
    profile = finished[VERSION]
    assert profile.rows == 50 and [c.name for c in profile.inputs] == ["x", "y", "c"]
    assert [c.name for c in profile.outputs] == ["prediction"]
    assert not drift.windows.totals(now=100.0)  # nothing binned while there was no reference
    assert BASELINE == "baseline"


def test_one_shifted_feature_is_flagged_and_only_that_one() -> None:
    thresholds = Thresholds(psi=0.2, p_value=0.001, outlier_share=0.05, min_rows=200)
    live = pd.DataFrame({"x": RNG.normal(0, 1, 2000), "y": RNG.normal(10, 2, 2000), "c": RNG.choice(["a", "b"], 2000)})
    calm = judge(VERSION, PROFILE, counts_of(live), thresholds)
    assert calm.enough and not calm.drifting
    shifted = judge(VERSION, PROFILE, counts_of(live.assign(y=live.y + 4.0)), thresholds)
    assert shifted.flagged == ("y",)
    assert shifted.worst_first()[0][1].name == "y"
    few = judge(VERSION, PROFILE, counts_of(live.assign(y=live.y + 4.0).iloc[:100]), thresholds)
    assert not few.enough and not few.drifting
    # Tags override the settings; a tag that is no number is ignored.
    tagged = thresholds.tagged({"gateway.drift.psi_threshold": "50", "gateway.drift.min_rows": "x"})
    assert (tagged.psi, tagged.min_rows) == (50.0, 200)
    assert not judge(VERSION, PROFILE, counts_of(live.assign(y=live.y + 4.0)), tagged).drifting
    mismatched = counts_of(live)
    mismatched = WindowCounts(mismatched.inputs, {}, mismatched.rows, 100, 10, 0)
    assert judge(VERSION, PROFILE, mismatched, thresholds).flagged == (COLUMNS,)


def test_window_counts_survive_json_and_add_up() -> None:
    one = counts_of(TRAIN.iloc[:100])
    assert WindowCounts.from_json(orjson.loads(orjson.dumps(one.to_json()))) == one
    two = one + one
    assert two.rows == 200 and all(two.inputs[n].rows == 200 for n in ("x", "y", "c"))


def test_a_windows_memory_stays_under_its_bound_and_the_guide_states_the_bound() -> None:
    import tracemalloc
    from pathlib import Path

    from gateway.demo import iris_frame
    from gateway.drift.window import SLICES

    features, target = iris_frame()
    profile = Profile(
        profile_columns(features), profile_columns(pd.DataFrame({"prediction": target.astype(str)})), 150, 150
    )
    frame = features.sample(n=2000, replace=True, random_state=0)
    counts = WindowCounts(
        bin_frame(profile.inputs, frame),
        bin_frame(profile.outputs, pd.DataFrame({"prediction": ["0"] * 2000})),
        2000,
        200,
    )
    window = SlidingWindow(seconds=SLICES, max_rows=10**9)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for second in range(SLICES):
        window.add(counts + counts, now=float(second))  # a new slice each time: the window at its fullest
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(window) == SLICES
    bound = window_bytes(profile)
    assert held <= bound, (held, bound)
    guide = (Path(__file__).resolve().parents[3] / "docs" / "user-guide.md").read_text()
    assert f"{bound:,} bytes" in guide


def test_a_new_reference_starts_the_window_again() -> None:
    windows = Windows(seconds=3600, max_rows=10**9)
    windows.add(VERSION, counts_of(TRAIN.iloc[:100]), now=0.0, reference=("baseline", 1.0))
    windows.add(VERSION, counts_of(TRAIN.iloc[:100]), now=1.0, reference=("baseline", 1.0))
    assert windows.totals(now=2.0)[VERSION].rows == 200
    windows.add(VERSION, counts_of(TRAIN.iloc[:30]), now=3.0, reference=("dataset", 2.0))
    assert windows.totals(now=4.0)[VERSION].rows == 30


async def test_an_unseen_category_is_counted_as_an_outlier_of_its_feature() -> None:
    drift = sampler(READY_REFERENCE)
    unseen = TRAIN.iloc[:10].assign(c=["z"] * 4 + ["a"] * 6)
    drift.offer(VERSION, protocol="mlflow", media_type="application/json", request=body(unseen), response=answer(10))
    await drift.flush()
    counts = drift.windows.totals(now=100.0)[VERSION].inputs["c"]
    assert (counts.outliers, counts.rows) == (4, 10)
    assert counts.counts[-1] == 4  # in the "other" slot, which the reference never had
