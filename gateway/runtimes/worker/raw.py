"""The flavor's own predict on a plain array, for the fast path: scikit-learn's estimator
method, a PyTorch module under inference mode, XGBoost's, LightGBM's and CatBoost's own
predict. Shared by the gateway (in-process versions) and the isolated worker
(its versions), so it imports nothing but the standard library and keeps to Python 3.8.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any


def raw_predict(pyfunc: Any, flavor: str, names: list[str] | None) -> Callable[[Any], Any] | None:
    """The loaded pyfunc's underlying predict for an array whose columns are ``names`` (the
    signature's, in order), or None where only pyfunc gives the model's answer."""
    if flavor == "sklearn":
        estimator = pyfunc.get_raw_model()
        method = pyfunc.metadata.flavors["python_function"].get("predict_fn", "predict")
        fitted_names = getattr(estimator, "feature_names_in_", None)
        if fitted_names is not None:
            if names is None or list(fitted_names) != names:
                return None  # pyfunc would pass a frame in schema order; the estimator wants another
            # pyfunc passes a frame with these names; an array of the same columns in the same
            # order gives the same numbers. Given an array, an estimator fitted with names warns
            # on every call; a twin that does not know the names predicts the same, silently.
            estimator = without_feature_names(estimator)
            if estimator is None:
                return None
        return getattr(estimator, method)  # type: ignore[no-any-return]
    if flavor == "pytorch":
        wrapper = pyfunc._model_impl  # mlflow.pytorch._PyTorchWrapper: the module and its device
        if getattr(wrapper, "_is_forecasting_model", True):
            return None
        return torch_predict(wrapper.pytorch_model, str(wrapper.device))
    if flavor in _TREE_PREDICTS and names is not None:
        return _TREE_PREDICTS[flavor](pyfunc.get_raw_model(), names)
    return None


def _xgboost_predict(model: Any, names: list[str]) -> Callable[[Any], Any] | None:
    """What MLflow's XGBoost pyfunc computes for a frame of ``names``, on the array of those
    columns: the model's predict (a Booster's, in place, without building a DMatrix)."""
    import xgboost

    booster = model if isinstance(model, xgboost.Booster) else model.get_booster()
    if booster.feature_names is not None and list(booster.feature_names) != names:
        return None  # pyfunc matches a frame's columns by name; an array goes by position
    if isinstance(model, xgboost.Booster):
        return functools.partial(model.inplace_predict, validate_features=False)
    if isinstance(model, xgboost.XGBModel):
        return functools.partial(model.predict, validate_features=False)
    return None


def _lightgbm_predict(model: Any, names: list[str]) -> Callable[[Any], Any] | None:
    """What MLflow's LightGBM pyfunc computes for a frame of ``names``, through the Booster
    (the scikit-learn wrapper warns on every array from a model fitted with names): a
    classifier's labels as LGBMClassifier.predict takes them, from its probabilities."""
    import lightgbm
    import numpy as np

    booster = model if isinstance(model, lightgbm.Booster) else getattr(model, "booster_", None)
    # LightGBM keeps names with their spaces as underscores; it takes columns by position
    if booster is None or list(booster.feature_name()) != [name.replace(" ", "_") for name in names]:
        return None
    if isinstance(model, lightgbm.LGBMClassifier):
        if callable(getattr(model, "objective_", None)) or callable(getattr(model, "objective", None)):
            return None  # a custom objective: predict answers raw scores, pyfunc knows
        classes = model.classes_

        def labels(array: Any) -> Any:
            scores = np.asarray(booster.predict(array))
            index = (scores > 0.5).astype(np.int64) if scores.ndim == 1 else np.argmax(scores, axis=1)
            return classes[index]

        return labels
    if isinstance(model, (lightgbm.Booster, lightgbm.LGBMRegressor)):
        return booster.predict  # type: ignore[no-any-return]
    return None


def _catboost_predict(model: Any, names: list[str]) -> Callable[[Any], Any] | None:
    """What MLflow's CatBoost pyfunc computes for a frame of ``names``: the model's predict, which
    takes an array's columns by position."""
    fitted = getattr(model, "feature_names_", None)
    if fitted is None or list(fitted) != names or getattr(model, "get_cat_feature_indices", list)():
        return None  # categorical features: a float array is not what pyfunc hands it
    return model.predict  # type: ignore[no-any-return]


_TREE_PREDICTS: dict[str, Callable[[Any, list[str]], Callable[[Any], Any] | None]] = {
    "xgboost": _xgboost_predict,
    "lightgbm": _lightgbm_predict,
    "catboost": _catboost_predict,
}


def torch_predict(module: Any, device: str) -> Callable[[Any], Any]:
    """What MLflow's PyTorch pyfunc computes for one array (``torch.from_numpy``, the module on
    ``device``, the output back as NumPy; a module that answers other than one tensor is an
    error), under ``torch.inference_mode`` rather than ``no_grad`` (no version counters, no
    autograd bookkeeping at all). On a GPU the batch crosses once each way: from pinned host
    memory without blocking, and back."""
    import torch

    target = torch.device(device)
    on_gpu = target.type == "cuda"

    def predict(array: Any) -> Any:
        with torch.inference_mode():
            tensor = torch.from_numpy(array)
            if on_gpu:
                tensor = tensor.pin_memory().to(target, non_blocking=True)
            elif target.type != "cpu":
                tensor = tensor.to(target)
            output = module(tensor)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Expected PyTorch model to output a single output tensor, but got output of type '{type(output)}'"
                )
            return output.to("cpu").numpy()  # on a GPU, waits for the batch

    return predict


def without_feature_names(estimator: Any) -> Any:
    """A shallow copy of a fitted estimator (or pipeline) that takes plain arrays: the same
    fitted arrays, less ``feature_names_in_``, which sklearn checks arrays against. None when
    the names are held somewhere this does not know to look (pyfunc serves those)."""
    if "feature_names_in_" in getattr(estimator, "__dict__", {}):
        twin = copy.copy(estimator)
        del twin.feature_names_in_
        return twin
    steps = getattr(estimator, "steps", None)  # a Pipeline: only its first step sees the columns
    if isinstance(steps, list) and steps:
        first_name, first = steps[0]
        first = without_feature_names(first)
        if first is None:
            return None
        twin = copy.copy(estimator)
        twin.steps = [(first_name, first), *steps[1:]]
        return twin
    return None
