"""What computing one drift reference costs: a 1-million-row Parquet file profiled (issue 51).

The sync leader computes a version's reference once (registry_sync/drift/builder.py): read the
file (only the signature's columns), sample it to GATEWAY_DRIFT_REFERENCE_ROWS with the fixed
seed, then profile every column (quantile bins, mean, range, missing share; category shares).
This times exactly those calls (``sources.read_local`` and ``profile.profile_columns``) on a
generated file of ``--rows`` rows: eight numeric columns (two with missing values) and two
categorical ones (12 and 200 categories), as a training table of tabular features looks. The
output profile is not in it: its cost is the version's own predict on GATEWAY_DRIFT_OUTPUT_ROWS
rows.

``python bench/drift_reference.py`` prints the file's size and the seconds each step took
(best of ``--repeat``), and the profile's size as JSON (what the state database keeps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_file(path: Path, rows: int) -> list[str]:
    import numpy as np
    import pandas as pd

    generator = np.random.default_rng(7)
    frame = pd.DataFrame({f"x{index}": generator.normal(index, 1 + index, rows) for index in range(8)})
    frame.loc[generator.random(rows) < 0.05, "x1"] = np.nan
    frame.loc[generator.random(rows) < 0.01, "x5"] = np.nan
    frame["city"] = generator.choice([f"city-{index}" for index in range(12)], rows)
    frame["product"] = generator.choice([f"p{index}" for index in range(200)], rows)
    frame.to_parquet(path)
    return list(frame.columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000, help="GATEWAY_DRIFT_REFERENCE_ROWS")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()

    from registry_sync.drift.profile import Profile, profile_columns
    from registry_sync.drift.sources import read_local

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "reference.parquet"
        columns = write_file(path, arguments.rows)
        reads, profiles = [], []
        for _ in range(arguments.repeat):
            started = time.perf_counter()
            table = read_local(path, columns=columns, rows=arguments.sample, max_bytes=2**40)
            read = time.perf_counter()
            profiled = profile_columns(table.frame)
            reads.append(read - started)
            profiles.append(time.perf_counter() - read)
        size = path.stat().st_size
    profile = Profile(profiled, (), rows=len(table.frame), sampled_from=table.sampled_from)
    stored = len(json.dumps(profile.to_json()))
    print(
        f"{arguments.rows:,} rows x {len(columns)} columns, Parquet {size / 2**20:.1f} MiB, "
        f"sampled to {len(table.frame):,}: read+sample {min(reads):.2f} s, profile {min(profiles):.2f} s, "
        f"total {min(r + p for r, p in zip(reads, profiles, strict=True)):.2f} s (best of {arguments.repeat}); "
        f"profile JSON {stored / 1024:.1f} KiB"
    )


if __name__ == "__main__":
    main()
