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

``--whole`` times the sync leader's whole pass instead, once, on a gateway of its own: an iris
version (scikit-learn) whose run logged a Parquet file of ``--rows`` iris-like rows as its
training dataset, in a sqlite registry made for it; the pass reads its MLmodel and run, reads
and samples the file, profiles it, loads the version and predicts on GATEWAY_DRIFT_OUTPUT_ROWS
of the rows, and saves the reference.
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
    parser.add_argument("--whole", action="store_true", help="the leader's whole pass, on a gateway")
    arguments = parser.parse_args()
    if arguments.whole:
        whole_pass(arguments.rows)
        return

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


def whole_pass(rows: int) -> None:
    import asyncio

    import mlflow
    import mlflow.data
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from gateway.app import create_app
    from gateway.demo import iris_frame, using_registry
    from gateway.settings import GatewaySettings
    from registry_sync.registry import RegistryReader

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        features, target = iris_frame()
        generator = np.random.default_rng(7)
        picked = generator.integers(0, len(features), rows)
        noise = generator.normal(0, 0.1, (rows, features.shape[1]))
        training = pd.DataFrame(features.to_numpy()[picked] + noise, columns=features.columns)
        path = root / "train.parquet"
        training.to_parquet(path)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        with using_registry(tracking_uri, root / "artifacts") as client:
            model = LogisticRegression(max_iter=1000).fit(features, target)
            with mlflow.start_run():
                mlflow.log_input(mlflow.data.from_pandas(training.head(1000), source=str(path)), context="training")
                info = mlflow.sklearn.log_model(
                    model, name="model", registered_model_name="iris", input_example=features.head(2)
                )
            client.set_registered_model_alias("iris", "champion", str(info.registered_model_version))
        settings = GatewaySettings(
            artifact_cache_dir=root / "cache",
            database_url=f"sqlite:///{root / 'state.db'}",
            poll_interval_seconds=3600,
            warm_aliases=[],
            drift_reference_interval_seconds=0,
        )

        async def run() -> None:
            app = create_app(settings, reader=RegistryReader(tracking_uri=tracking_uri))
            async with app.router.lifespan_context(app):
                builder = app.state.services.rooms.drift.builder
                started = time.perf_counter()
                (reference,) = await builder.run_once()
                seconds = time.perf_counter() - started
            profile = reference.profile
            print(
                f"the leader's whole pass: {rows:,}-row Parquet ({path.stat().st_size / 2**20:.1f} MiB) "
                f"-> {reference.status} from {reference.source_kind}, {profile.rows if profile else 0:,} rows "
                f"profiled, outputs {'yes' if profile and profile.outputs else reference.outputs_reason}, "
                f"{seconds:.2f} s (including the version's load)"
            )

        asyncio.run(run())


if __name__ == "__main__":
    main()
