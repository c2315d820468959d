"""What the gateway agrees to load: the flavors it allows and whether pickled code may run.

Loading an MLflow model runs code the model's author chose (an unpickler, a custom loader
module, a models-from-code file): the registry and its artifact store are trusted, and this
policy narrows that trust. It is decided from the version's own files, before MLflow loads
them: the MLmodel's flavors and serialization keys, and for PyTorch which file holds the model.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import this module: no MLflow import for a constant
    from mlflow.models import Model

# The flavors the gateway is tested with, each served and compared with MLflow's own pyfunc
# (tests/flavors; docs/user-guide.md: "Flavors"; docs/security.md: "What the gateway loads").
TESTED_FLAVORS = (
    "sklearn",
    "pytorch",
    "python_function",
    "xgboost",
    "lightgbm",
    "catboost",
    "statsmodels",
    "prophet",
    "onnx",
    "keras",
    "transformers",
    "sentence_transformers",
)
ANY_FLAVOR = "*"
# A pyfunc whose loader module is the model's own (``mlflow.pyfunc.save_model(loader_module=...)``,
# shipped in its code_paths): code the gateway has never seen, admitted only by name.
CUSTOM_LOADER = "custom_loader"
_PICKLE_FORMATS = frozenset({"pickle", "cloudpickle", "joblib"})
# Files a flavor's weights or objects are pickled in (torch.save, joblib...), by suffix.
_PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt")


class PolicyViolation(Exception):
    """The policy refuses a model; the loader turns it into PolicyRefused naming the version."""

    def __init__(self, policy: str, reason: str) -> None:
        self.policy = policy  # the setting that refuses it
        self.reason = reason
        super().__init__(f"{reason} ({policy})")


@dataclass(frozen=True, slots=True)
class LoadingPolicy:
    allowed_flavors: frozenset[str] = frozenset(TESTED_FLAVORS)
    allow_pickle: bool = True

    @classmethod
    def of(cls, flavors: Iterable[str], *, allow_pickle: bool) -> LoadingPolicy:
        return cls(frozenset(flavors), allow_pickle)

    def check(self, metadata: Model, path: Path) -> None:
        """PolicyViolation unless this policy lets the model in ``path`` (described by
        ``metadata``, its MLmodel) load."""
        flavor = loading_flavor(metadata)
        if ANY_FLAVOR not in self.allowed_flavors and flavor not in self.allowed_flavors:
            allowed = ", ".join(sorted(self.allowed_flavors)) or "none"
            raise PolicyViolation(
                "GATEWAY_ALLOWED_FLAVORS", f"its flavor '{flavor}' is not one of the allowed flavors ({allowed})"
            )
        if not self.allow_pickle and (why := pickled(metadata, path, flavor)) is not None:
            raise PolicyViolation("GATEWAY_ALLOW_PICKLE", f"{why}, and loading pickled models is off")


def loading_flavor(metadata: Model) -> str:
    """The flavor whose loader MLflow runs: ``sklearn``, ``pytorch``... for MLflow's own
    loader modules, ``python_function`` for a PythonModel or models-from-code, and
    ``custom_loader`` for a loader module of the model's own."""
    conf = metadata.flavors.get("python_function")
    if conf is None:
        others = [name for name in metadata.flavors if name != "python_function"]
        return others[0] if others else "python_function"
    module = str(conf.get("loader_module", ""))
    if module == "mlflow.pyfunc" or module.startswith("mlflow.pyfunc."):
        # a PythonModel (mlflow.pyfunc.model) or models-from-code (mlflow.pyfunc.loaders.code_model,
        # and the chat/agent loaders beside it): pyfunc's own loaders, not a flavor called "pyfunc"
        return "python_function"
    if module.startswith("mlflow."):
        return module.removeprefix("mlflow.").split(".")[0]
    return CUSTOM_LOADER if module else "python_function"


def pickled(metadata: Model, path: Path, flavor: str) -> str | None:
    """Why loading this model unpickles bytes (or trusts types the model names itself); None
    when its format does neither."""
    conf = metadata.flavors.get(flavor) or {}
    if flavor == "sklearn":
        fmt = str(conf.get("serialization_format", "cloudpickle"))
        if fmt in _PICKLE_FORMATS:
            return f"it is a scikit-learn model serialized with {fmt}"
        if fmt == "skops" and conf.get("skops_trusted_types"):
            # skops refuses unknown types unless trusted, and this list comes from the MLmodel:
            # the model vouches for itself.
            return "it is a skops model that trusts types its own MLmodel lists"
        return None
    if flavor == "pytorch":
        data = path / str(conf.get("model_data", "data"))
        if (data / "model.pth").exists():
            return "it is a PyTorch model saved with torch.save (pickle)"
        if (data / "model.pt2").exists():
            return _pt2_pickles(data / "model.pt2")
        return "it is a PyTorch model in no format the gateway can check"
    if flavor == "lightgbm":
        if str(conf.get("data", "")).endswith(".lgb"):
            return None  # a Booster, in LightGBM's own text format
        fmt = str(conf.get("serialization_format", "cloudpickle"))
        if fmt != "skops":
            return f"it is a LightGBM scikit-learn model serialized with {fmt}"
        return (
            "it is a skops model that trusts types its own MLmodel lists" if conf.get("skops_trusted_types") else None
        )
    if flavor in ("xgboost", "catboost", "prophet", "onnx", "keras"):
        # their own formats: UBJSON/JSON trees, CatBoost's binary, Prophet's JSON, ONNX
        # protobuf, a .keras archive Keras loads in its safe mode
        return None
    if flavor == CUSTOM_LOADER:
        return None  # code, kept out by GATEWAY_ALLOWED_FLAVORS alone (custom_loader)
    if flavor == "statsmodels":
        return "it is a statsmodels model, which statsmodels saves with pickle"
    if flavor in ("transformers", "sentence_transformers"):
        found = _pickled_files(path)
        return f"its weights include {found}, saved with torch.save (pickle)" if found else None
    if flavor == "python_function":
        pyfunc = metadata.flavors.get("python_function") or {}
        model_file = str(pyfunc.get("python_model", ""))
        if model_file.endswith(".py") or pyfunc.get("model_code_path"):
            # models-from-code: code, allowed or not by GATEWAY_ALLOWED_FLAVORS (MLflow notes a
            # cloudpickle_version for these too, though nothing is pickled)
            return None
        if model_file or "cloudpickle_version" in pyfunc:
            return "it is a Python model pickled with cloudpickle"
        return None
    fmt = str(conf.get("serialization_format", ""))
    if fmt and fmt not in _PICKLE_FORMATS:
        return None
    return f"its flavor '{flavor}' is not known to load without pickle"


def _pickled_files(path: Path) -> str | None:
    """The first file under ``path`` whose suffix says it is pickled (a ``pytorch_model.bin``
    beside or instead of safetensors), as a path relative to it."""
    for file in sorted(path.rglob("*")):
        if file.suffix in _PICKLED_SUFFIXES and file.is_file():
            return str(file.relative_to(path))
    return None


def _pt2_pickles(archive: Path) -> str | None:
    """torch.export archives unpickle their weights; MLflow's own check admits an archive only
    if torch's restricted (weights-only) unpickler accepts every record."""
    try:
        check = importlib.import_module("mlflow.pytorch")._validate_pt2_archive_is_pickle_free
    except (ImportError, AttributeError):
        return "it is a torch.export archive, which this MLflow cannot check for pickled objects"
    try:
        check(str(archive))
    except Exception:
        return "it is a torch.export archive holding pickled objects beyond tensors"
    return None
