"""What a flavor's library needs from the process before MLflow loads a version with it.

Keras 3 chooses its backend (``KERAS_BACKEND``: tensorflow, jax, torch) once, when first
imported, and MLflow's keras loader does not choose it: a version saved on the torch backend,
in a process where nothing set ``KERAS_BACKEND``, fails to load (Keras reaches for TensorFlow)
under ``mlflow models serve`` too. The gateway sets it from the version's own ``MLmodel``
(``keras_backend``) when Keras is not imported yet and the operator did not set it; a version
saved on another backend than the one this process's Keras runs is refused in words, not
served by the wrong backend.
"""

from __future__ import annotations

import os
import sys

from mlflow.models import Model


class BackendMismatch(RuntimeError):
    """The version needs a library set up otherwise than this process already has it."""


def prepare(metadata: Model) -> None:
    """Set up the process for the library of ``metadata``'s flavor, before MLflow loads it."""
    keras = metadata.flavors.get("keras")
    if not isinstance(keras, dict) or not keras.get("keras_backend"):
        return
    wanted = str(keras["keras_backend"])
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", wanted)
    chosen = os.environ.get("KERAS_BACKEND", wanted)
    if "keras" in sys.modules:
        chosen = str(sys.modules["keras"].backend.backend())
    if chosen != wanted:
        raise BackendMismatch(
            f"it was saved on Keras's {wanted} backend and Keras here runs on {chosen} (KERAS_BACKEND): "
            f"Keras takes one backend per process; serve it from a gateway with KERAS_BACKEND={wanted}"
        )
