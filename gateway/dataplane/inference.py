"""Score a batch of requests for one loaded version, in one inference thread.

Each request is decoded on its own, so a bad one fails only itself. Requests the fast
path can read are stacked into one array and predicted with one call of the flavor's
own predict; the rest go through pyfunc (MLflow's parsing and schema enforcement).
A version that batches through pyfunc (tagged ``gateway.batching=true``) gets its
frames concatenated into one pyfunc call. Whenever a batched call fails, or its output
does not split back into the requests' rows, each request is predicted on its own, so a
batch never changes which requests succeed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from gateway.dataplane.agreement import ULP_TOLERANCE, answer_dtype, compare
from gateway.dataplane.batching import Outcome, Request, Stages, TensorCall
from gateway.dataplane.fastpath import split_rows
from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.warmup import warmup_request
from gateway.errors import PredictFailed
from gateway.wire.mlflow_scoring import ScoringInput, decode, encode_predictions
from registry_sync.errors import described

log = logging.getLogger(__name__)

Encoder = Callable[[Any], bytes]  # a request's rows of the predictions -> its answer


def score(model: LoadedModel, body: bytes, media_type: str, stages: Stages | None = None, index: int = 0) -> bytes:
    """One request through pyfunc: decode, predict, encode (``index``: its place in a batch,
    for its rows)."""
    stages = stages or Stages()
    began = time.perf_counter()
    request = decode(body, media_type, model.metadata, model.body_limits)
    stages.decode += time.perf_counter() - began
    if isinstance(request.data, pd.DataFrame | np.ndarray):
        stages.rows[index] = len(request.data)
    return _pyfunc_one(model, request, stages)


def score_batch(model: LoadedModel, requests: list[Request], stages: Stages) -> tuple[list[Outcome], int]:
    """Each request's answer (or its error), and how many took the fast path; ``stages`` adds
    up the seconds spent decoding, predicting and encoding. A request another protocol's
    adapter runs whole (its own decode, predict and encode in one call) counts as predict."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    fast: list[tuple[int, np.ndarray, Encoder]] = []
    slow: list[int] = []
    began = time.perf_counter()
    whole = 0.0  # seconds of adapters' calls run whole, taken out of the decoding loop's time
    for index, request in enumerate(requests):
        if isinstance(request, TensorCall):  # another protocol's tensors: fast if they fit
            try:
                array = _tensor_array(model, request)
            except Exception as exc:  # the adapter's own error for a bad request
                outcomes[index] = exc
                continue
            if array is not None:
                fast.append((index, array, functools.partial(request.encode, model)))
                stages.rows[index] = len(array)
            else:
                whole -= time.perf_counter()
                outcomes[index] = _attempt(request.alone, model)
                whole += time.perf_counter()
            continue
        if not isinstance(request, tuple):  # an adapter's call: alone, as it was written
            whole -= time.perf_counter()
            outcomes[index] = _attempt(request, model)
            whole += time.perf_counter()
            continue
        array = model.fast.decode(*request) if model.fast is not None else None
        if array is not None:
            fast.append((index, array, encode_predictions))
            stages.rows[index] = len(array)
        else:
            slow.append(index)
    stages.decode += time.perf_counter() - began - whole
    stages.compute += whole
    if fast:
        _predict_fast(model, fast, outcomes, stages)
    if len(slow) > 1 and model.batching:
        _predict_frames(model, requests, slow, outcomes, stages)
    else:
        for index in slow:
            request = requests[index]
            assert isinstance(request, tuple)
            outcomes[index] = _attempt(score, model, *request, stages, index)
    missing = PredictFailed(model.name, model.version, "no answer was produced for this request")
    return [missing if outcome is None else outcome for outcome in outcomes], len(fast)


def _tensor_array(model: LoadedModel, request: TensorCall) -> np.ndarray | None:
    if model.fast is None:
        return None
    tensors = request.tensors(model)
    if isinstance(tensors, np.ndarray):
        return model.fast.from_rows(tensors)
    return model.fast.from_tensors(tensors) if tensors is not None else None


def _predict_fast(
    model: LoadedModel, items: list[tuple[int, np.ndarray, Encoder]], outcomes: list[Outcome | None], stages: Stages
) -> None:
    if len(items) > 1:
        began = time.perf_counter()
        try:
            output = model.predict_fast(np.concatenate([array for _, array, _ in items]))
            pieces = split_rows(output, [len(array) for _, array, _ in items])
        except Exception:
            pieces = None
        encoding = time.perf_counter()
        stages.compute += encoding - began
        if pieces is not None:
            for (index, _, encode), piece in zip(items, pieces, strict=True):
                outcomes[index] = _attempt(encode, piece)
            stages.encode += time.perf_counter() - encoding
            return

    for index, array, encode in items:  # alone, or the batch failed: each on its own
        outcomes[index] = _attempt(_timed, model.predict_fast, array, encode, stages)


def _predict_frames(
    model: LoadedModel, requests: list[Request], indexes: list[int], outcomes: list[Outcome | None], stages: Stages
) -> None:
    frames: list[tuple[int, pd.DataFrame]] = []
    for index in indexes:
        request = requests[index]
        assert isinstance(request, tuple)
        body, media_type = request
        began = time.perf_counter()
        try:
            decoded = decode(body, media_type, model.metadata, model.body_limits)
        except Exception as exc:
            outcomes[index] = exc
            continue
        finally:
            stages.decode += time.perf_counter() - began
        # Only frames with the very same columns share a call: concatenating others would
        # fill gaps with NaN and turn one request's "missing column" error into an answer.
        # A frame of no rows is refused by most models alone, and would be an empty slice
        # of a batch's answer: it never joins one.
        data = decoded.data
        if isinstance(data, pd.DataFrame | np.ndarray):
            stages.rows[index] = len(data)
        joins = isinstance(data, pd.DataFrame) and len(data) > 0 and not decoded.params and not decoded.unwrapped
        if joins and frames and list(data.columns) != list(frames[0][1].columns):
            joins = False
        if joins:
            frames.append((index, decoded.data))
        else:
            outcomes[index] = _attempt(_pyfunc_one, model, decoded, stages)
    if not frames:
        return
    pieces = None
    if len(frames) > 1:
        began = time.perf_counter()
        try:
            output = model.predict(ScoringInput(pd.concat([f for _, f in frames], ignore_index=True), None))
            pieces = _split_any(output, [len(f) for _, f in frames])
        except Exception:
            pieces = None
        stages.compute += time.perf_counter() - began
    if pieces is None:
        for index, frame in frames:
            outcomes[index] = _attempt(_pyfunc_one, model, ScoringInput(frame, None), stages)
        return
    began = time.perf_counter()
    for (index, _), piece in zip(frames, pieces, strict=True):
        outcomes[index] = encode_predictions(piece)
    stages.encode += time.perf_counter() - began


def _split_any(output: Any, counts: list[int]) -> list[Any] | None:
    if isinstance(output, pd.DataFrame | pd.Series) and len(output) == sum(counts):
        bounds = np.cumsum([0, *counts])
        return [output.iloc[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    if isinstance(output, list) and len(output) == sum(counts):
        bounds = np.cumsum([0, *counts])
        return [output[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    return split_rows(np.asarray(output) if not isinstance(output, np.ndarray) else output, counts)


def _pyfunc_one(model: LoadedModel, request: ScoringInput, stages: Stages) -> bytes:
    encode = functools.partial(encode_predictions, unwrapped=request.unwrapped)
    return _timed(model.predict, request, encode, stages)


def _timed(predict: Callable[[Any], Any], data: Any, encode: Encoder, stages: Stages) -> bytes:
    """``encode(predict(data))``, its two parts' seconds added to ``stages`` (failed or not)."""
    began = time.perf_counter()
    try:
        output = predict(data)
    finally:
        encoding = time.perf_counter()
        stages.compute += encoding - began
    try:
        return encode(output)
    finally:
        stages.encode += time.perf_counter() - encoding


def _attempt(work: Callable[..., bytes], *args: Any) -> Outcome:
    try:
        return work(*args)
    except Exception as exc:
        return exc


def check_fast_path(model: LoadedModel) -> LoadedModel:
    """Right after a load: the warm-up request through both paths must give the same answer,
    to within :data:`~gateway.dataplane.agreement.ULP_TOLERANCE` ulps for floats (see
    :mod:`gateway.dataplane.agreement` for why not the same bytes), else the fast path is
    switched off for this version. ``model.fast_reason`` and the log say what was found."""
    if model.fast is None:
        return model
    request = warmup_request(model)
    array = model.fast.decode(*request) if request is not None else None
    if request is None or array is None:
        unchecked = "no warm-up request" if request is None else "the fast path does not read the warm-up request"
        model.fast_reason = f"{model.fast_reason or 'fast path'}; not compared with pyfunc: {unchecked}"
        return model
    try:
        raw = model.predict_fast(array)
        fast = encode_predictions(raw)
    except Exception as exc:
        return _fast_path_off(model, f"the fast path failed on the warm-up request ({described(exc)})")
    try:
        pyfunc = score(model, *request)
    except Exception as exc:
        return _fast_path_off(
            model, f"pyfunc failed on the warm-up request, so nothing checks the fast path ({described(exc)})"
        )
    comparison = compare(fast, pyfunc, dtype=answer_dtype(raw))
    if not comparison.agrees:
        return _fast_path_off(
            model, f"the fast path disagreed with pyfunc on the warm-up request: {comparison.difference}"
        )
    if comparison.exact:
        found = "the warm-up request answered as through pyfunc"
    else:
        found = (
            f"the warm-up request answered within {comparison.ulps} ulp{'s' if comparison.ulps > 1 else ''} "
            f"({comparison.dtype.name}) of pyfunc, at most {ULP_TOLERANCE} agree"
        )
        log.info("%s version %s: fast path kept: %s", model.name, model.version, found)
    model.fast_reason = f"{model.fast_reason or 'fast path'}; {found}"
    return model


def _fast_path_off(model: LoadedModel, why: str) -> LoadedModel:
    model.fast = None
    model.fast_reason = f"pyfunc: {why}"
    log.warning("%s version %s: fast path off, pyfunc serves it: %s", model.name, model.version, why)
    return model
