"""What drift holds in memory for many versions (issue 51: "100 versions with references cost at
most a documented few MiB each"): ``.venv/bin/python bench/drift_memory.py [--versions 100]``.

In one process, as a serving process holds them: each version's reference profile (the
``ReferenceBook``'s, parsed from the JSON the state database keeps) and its sliding window at its
fullest (every one of its 12 slices holding counts), for ``--versions`` versions of a tabular
model of ``--numeric`` number columns and ``--categorical`` category columns (50 categories
each) with a class output. Measured with tracemalloc (Python's own allocations, NumPy's
arrays included), before and after; printed per version beside ``window_bytes``, the bound the
user guide states for a window.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pandas as pd  # noqa: E402

from gateway.drift.window import SLICES, Windows, window_bytes  # noqa: E402
from registry_sync.drift.profile import Profile, profile_columns  # noqa: E402
from registry_sync.drift.statistics import bin_frame  # noqa: E402
from registry_sync.drift.windows import WindowCounts  # noqa: E402
from registry_sync.identity import VersionId  # noqa: E402


def training(numeric: int, categorical: int, rows: int, seed: int) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    columns: dict[str, object] = {f"x{i}": generator.normal(size=rows) for i in range(numeric)}
    for i in range(categorical):
        columns[f"c{i}"] = generator.choice([f"v{k}" for k in range(50)], size=rows)
    return pd.DataFrame(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--numeric", type=int, default=10)
    parser.add_argument("--categorical", type=int, default=2)
    args = parser.parse_args()
    frame = training(args.numeric, args.categorical, 10_000, seed=0)
    outputs = pd.DataFrame({"prediction": np.random.default_rng(1).choice(["a", "b", "c"], size=len(frame))})
    stored = orjson.dumps(Profile(profile_columns(frame), profile_columns(outputs), len(frame), len(frame)).to_json())
    live = frame.sample(n=2000, replace=True, random_state=2)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book: dict[VersionId, Profile] = {}
    windows = Windows(seconds=float(SLICES), max_rows=10**9)
    for number in range(1, args.versions + 1):
        version = VersionId("bench-model", number, f"models:/m-{number}", number)
        profile = Profile.from_json(orjson.loads(stored))  # each version's own, as read from the database
        book[version] = profile
        counts = WindowCounts(
            bin_frame(profile.inputs, live), bin_frame(profile.outputs, outputs.iloc[:2000]), len(live), len(live)
        )
        for second in range(SLICES):  # a new slice each second: the window at its fullest
            windows.add(version, counts, now=float(second), reference=id(profile))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    bound = window_bytes(next(iter(book.values())))
    print(
        f"{args.versions} versions, {args.numeric} number and {args.categorical} category columns each: "
        f"{held / 2**20:.2f} MiB in all, {held / args.versions / 1024:.1f} KiB a version "
        f"(reference profile and full window; the window's stated bound: {bound / 1024:.1f} KiB; "
        f"the profile's JSON: {len(stored) / 1024:.1f} KiB)"
    )


if __name__ == "__main__":
    main()
