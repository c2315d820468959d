"""The in-process baseline for a cold version: ``mlflow.pyfunc.load_model`` + one predict.

Run in a fresh process: ``--warm`` URIs are loaded first, untimed, so imports (mlflow,
sklearn) are paid before the clock starts, as they are in a gateway that already serves
a model. Prints JSON {uri: milliseconds}.
"""

from __future__ import annotations

import argparse
import json
import time

import mlflow.pyfunc
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm", action="append", default=[])
    parser.add_argument("--columns", required=True, help="JSON list of column names")
    parser.add_argument("--row", required=True, help="JSON list: one row")
    parser.add_argument("uris", nargs="+")
    args = parser.parse_args()
    frame = pd.DataFrame([json.loads(args.row)], columns=json.loads(args.columns))
    for uri in args.warm:
        mlflow.pyfunc.load_model(uri).predict(frame)
    timings = {}
    for uri in args.uris:
        started = time.perf_counter()
        mlflow.pyfunc.load_model(uri).predict(frame)
        timings[uri] = (time.perf_counter() - started) * 1000
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
