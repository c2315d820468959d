"""Deciding, per version, where it runs: in this process, or in a worker of its own environment.

Decided when a version is first loaded on this host (a warm alias moving to it, a request),
from its verified files: the control plane never downloads (docs/ARCHITECTURE.md, invariant 9).
The decision is remembered per version, for /models once the version is evicted or refused.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlflow.models import Model

from gateway.runtimes.base import DeviceRequest, Loaded, Placement, flavor_of
from gateway.runtimes.environments import EnvironmentRefused, EnvironmentStore, loader_needs
from gateway.runtimes.inprocess import InProcessRuntime
from gateway.runtimes.isolated import IsolatedRuntime, WorkerSharing
from gateway.runtimes.requirements import Match, RequirementsUnreadable, Verdict, check, read_requirements
from gateway.runtimes.sandbox import SandboxPolicy, SandboxUnavailable, network_choice
from gateway.runtimes.worker import devices
from registry_sync.identity import VersionId

log = logging.getLogger(__name__)

# A version's device, overriding GATEWAY_DEVICE: auto, cpu, cuda or cuda:N.
DEVICE_TAG = "gateway.device"


class PlacementRefused(Exception):
    """The version needs an environment this host cannot give it; ``policy`` names the setting."""

    def __init__(self, policy: str, reason: str) -> None:
        self.policy = policy
        self.reason = reason
        super().__init__(f"{reason} ({policy})")


@dataclass(frozen=True, slots=True)
class EnvironmentPolicy:
    manager: Literal["uv", "local"] = "uv"
    isolate: Literal["mismatched", "always"] = "mismatched"
    match: Match = "minor"


class Placer:
    """Decides where each version runs and loads it there."""

    def __init__(
        self,
        policy: EnvironmentPolicy,
        *,
        in_process: InProcessRuntime,
        isolated: IsolatedRuntime | None,
        device: str = "auto",
    ) -> None:
        self.policy = policy
        self.device = device  # GATEWAY_DEVICE, parsed
        self.in_process = in_process
        self.isolated = isolated
        self._decided: dict[VersionId, Placement] = {}  # for /models, also once evicted or refused
        self._warned: set[str] = set()  # digests whose mismatch a local manager already logged
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        policy: EnvironmentPolicy,
        store: EnvironmentStore | None,
        *,
        max_workers: int,
        processes: int = 1,
        sharing: WorkerSharing = "model",
        device: str = "auto",
        sandbox: SandboxPolicy | None = None,
    ) -> Placer:
        isolated = None
        if policy.manager == "uv" and store is not None:
            isolated = IsolatedRuntime(
                store, max_workers=max_workers, processes=processes, sharing=sharing, sandbox=sandbox
            )
        return cls(policy, in_process=InProcessRuntime(), isolated=isolated, device=device)

    def placement(self, version: VersionId) -> Placement | None:
        return self._decided.get(version)

    def load(
        self, version: VersionId, path: Path, digest: str, metadata: Model, tags: dict[str, str] | None = None
    ) -> tuple[Loaded, Placement]:
        """Decide, then load there (``metadata``: the version's MLmodel, as the loader read it;
        ``tags``: its registry tags). Blocks (an environment build can take minutes): loader
        threads only."""
        device = self.device_request(version, tags or {}) if flavor_of(metadata) == "pytorch" else None
        loaded, placement = self._place_and_load(version, path, digest, metadata, device, tags or {})
        placement = dataclasses.replace(placement, device=loaded.device, device_reason=loaded.device_reason)
        self._remember(version, placement)
        return loaded, placement

    def device_request(self, version: VersionId, tags: dict[str, str]) -> DeviceRequest:
        """The device a version asks for: its ``gateway.device`` tag, else GATEWAY_DEVICE."""
        default = DeviceRequest(self.device, f"GATEWAY_DEVICE={self.device}")
        tagged = str(tags.get(DEVICE_TAG, "")).strip()
        if not tagged:
            return default
        try:
            return DeviceRequest(devices.parse(tagged), f"tagged {DEVICE_TAG}={tagged}")
        except ValueError as exc:
            log.warning("%s: %s; GATEWAY_DEVICE=%s applies", version, exc, self.device)
            return DeviceRequest(self.device, f"GATEWAY_DEVICE={self.device} (its tag {DEVICE_TAG}: {exc})")

    def _place_and_load(
        self,
        version: VersionId,
        path: Path,
        digest: str,
        metadata: Model,
        device: DeviceRequest | None,
        tags: dict[str, str],
    ) -> tuple[Loaded, Placement]:
        try:
            requirements = read_requirements(path)
        except RequirementsUnreadable as exc:
            raise PlacementRefused("environment files", str(exc)) from exc
        verdict = check(requirements, match=self.policy.match)
        if self.policy.manager == "local" or self.isolated is None:
            placement = self._local(version, verdict, digest)
            self._remember(version, placement)
            return self.in_process.load(path, metadata, device), placement
        if verdict.satisfied and self.policy.isolate == "mismatched":
            placement = Placement("in_process", verdict.reason, python=_running())
            self._remember(version, placement)
            return self.in_process.load(path, metadata, device), placement
        reason = verdict.reason if not verdict.satisfied else "GATEWAY_ENV_ISOLATE=always"
        try:
            env = self.isolated.store.ensure(requirements, loader_needs=loader_needs(metadata))
        except EnvironmentRefused as exc:
            reason = f"its environment could not be built: {exc.reason}"
            self._remember(
                version,
                Placement(
                    "isolated",
                    f"refused: {exc.reason}",
                    mismatches=verdict.mismatches,
                    refused=f"{reason} (GATEWAY_ENV_MANAGER=uv)",  # as the 409's message words it
                ),
            )
            raise PlacementRefused("GATEWAY_ENV_MANAGER=uv", reason) from exc
        placement = Placement(
            "isolated",
            reason,
            environment=env.key,
            python=env.python_version,
            note=env.note,
            mismatches=verdict.mismatches,
        )
        self._remember(version, placement)
        network = network_choice(self.isolated.sandbox, tags)
        try:
            return self.isolated.load(version, path, env, metadata, device, network), placement
        except SandboxUnavailable as exc:
            raise PlacementRefused("GATEWAY_SANDBOX=required", str(exc)) from exc

    def _local(self, version: VersionId, verdict: Verdict, digest: str) -> Placement:
        if verdict.satisfied:
            return Placement("in_process", verdict.reason, python=_running())
        with self._lock:
            first = digest not in self._warned
            self._warned.add(digest)
        if first:
            log.warning(
                "%s is served in this process although its environment differs (GATEWAY_ENV_MANAGER=local): %s",
                version,
                verdict.reason,
            )
        return Placement(
            "in_process",
            f"GATEWAY_ENV_MANAGER=local serves every version in this process, although: {verdict.reason}",
            python=_running(),
            mismatches=verdict.mismatches,
        )

    def _remember(self, version: VersionId, placement: Placement) -> None:
        with self._lock:
            self._decided[version] = placement
            while len(self._decided) > 4096:  # bounded, whatever the registry's size
                self._decided.pop(next(iter(self._decided)))

    def close(self) -> None:
        if self.isolated is not None:
            self.isolated.close()


def _running() -> str:
    import sys

    return "{}.{}.{}".format(*sys.version_info[:3])
