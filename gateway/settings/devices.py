"""Where PyTorch versions compute."""

from __future__ import annotations

from pydantic import field_validator

from gateway.runtimes.worker import devices
from gateway.settings.section import SettingsSection


class DeviceSettings(SettingsSection):
    """Where PyTorch versions compute."""

    device: str = "auto"
    """Where PyTorch versions compute: ``auto`` (CUDA's first device where this host has one,
    else the CPU; ``MLFLOW_DEFAULT_PREDICTION_DEVICE``, when set, decides instead), ``cpu``,
    ``cuda`` or ``cuda:N``. A version's MLflow tag ``gateway.device`` overrides it. Only ``auto``
    falls back to the CPU (with the reason in the version's status, ``runtime.device_reason``):
    ``cuda``/``cuda:N`` on a host without that device stops the gateway at start, and a version
    tagged for a device it cannot have fails to load, saying why. Other flavors run on the CPU."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return devices.parse(value)
