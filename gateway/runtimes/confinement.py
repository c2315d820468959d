"""What confines a worker, as the kernel shows it to the gateway: read from ``/proc/<pid>``,
never from anything the worker says.

A worker reports the layers it applied (``worker/sandbox.py``), before any code of its
environment runs; a model's code runs later in the same process and could rewrite what the
worker says after that, and a worker whose start was subverted could say anything. So each
layer the kernel exposes is checked here from outside: its namespaces (``/proc/<pid>/ns``,
against the gateway's own), ``NoNewPrivs``, ``Seccomp`` and the capability sets
(``/proc/<pid>/status``), its limits (``/proc/<pid>/limits``), the read-only mount of its
view (``/proc/<pid>/mountinfo``). A layer the worker claims and
the kernel contradicts is missing. Landlock shows nowhere outside the process: the
filesystem layer stands on the report sent before the environment's code ran, and on
``NoNewPrivs`` (without it, or CAP_SYS_ADMIN, Landlock cannot be entered).

The same files give the worker's memory (``VmRSS``), which the gateway counts as a version's
size instead of the figure the worker sends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_UNLIMITED = "unlimited"


@dataclass(frozen=True, slots=True)
class Observed:
    """The facts about one worker process that the kernel shows the gateway."""

    own_namespaces: dict[str, bool] = field(default_factory=dict)  # "net" -> differs from the gateway's
    status: dict[str, str] = field(default_factory=dict)  # /proc/<pid>/status, field -> value
    limits: dict[str, tuple[str, str]] = field(default_factory=dict)  # "Max open files" -> (soft, hard)
    read_only_mounts: frozenset[str] = frozenset()  # mount points, as /proc/<pid>/mountinfo shows them
    error: str | None = None  # why nothing could be read


def observe(pid: int) -> Observed:
    """Read what the kernel shows of ``pid`` (the gateway may read a child's ``/proc`` entries:
    it owns the worker's user namespace)."""
    try:
        namespaces = {
            kind: os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
            for kind in ("user", "net", "mnt")
        }
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        with open(f"/proc/{pid}/limits") as f:
            limits = {line[:26].strip(): (line[26:47].strip(), line[47:68].strip()) for line in list(f)[1:]}
        with open(f"/proc/{pid}/mountinfo") as f:  # mount point (octal escapes), then its options
            fields = [line.split() for line in f]
    except OSError as exc:
        return Observed(error=f"/proc of the worker unreadable ({exc.strerror})")
    read_only = frozenset(
        _unescape(row[4]) for row in fields if len(row) > 5 and "ro" in row[5].split(",")
    )  # fmt: skip
    return Observed(namespaces, {k: v.strip() for k, v in status.items()}, limits, read_only)


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape") if "\\" in path else path


def rss_bytes(pid: int | None) -> int | None:
    """The process's resident memory (``VmRSS``), or None where it cannot be read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def contradictions(
    report: dict[str, Any],
    seen: Observed,
    *,
    open_files: int,
    memory_bytes: int,
    view: str,
    memory_ceiling: int | None = None,
) -> dict[str, str]:
    """Each layer ``report`` says is enforced and the kernel says is not: why not. A limit, soft
    and hard, is held to what the gateway asked for (``open_files``; ``memory_bytes`` beyond the
    most the worker ever mapped, ``VmPeak``, and never past ``memory_ceiling``, the limit it set
    before its environment's code ran), not to the figure the worker claims."""
    claimed = [(name, layer) for name, layer in layers(report) if layer.get("enforced")]
    if seen.error:
        return {name: seen.error for name, _ in claimed}
    found: dict[str, str] = {}
    no_new_privs = seen.status.get("NoNewPrivs") == "1"
    for name, layer in claimed:
        why = None
        if name == "network" and "namespace" in str(layer.get("how", "")) and not seen.own_namespaces.get("net"):
            why = "claimed a network namespace of its own; /proc shows the gateway's"
        elif name == "syscalls" and (seen.status.get("Seccomp") != "2" or not no_new_privs):
            why = f"claimed a seccomp filter; /proc shows Seccomp {seen.status.get('Seccomp', '?')}"
        elif name == "capabilities" and any(int(seen.status.get(s, "1"), 16) for s in ("CapEff", "CapPrm", "CapBnd")):
            why = "claimed no capability; /proc shows some left"
        elif name == "filesystem.view" and not (
            seen.own_namespaces.get("mnt") and os.path.realpath(view) in seen.read_only_mounts
        ):
            why = "claimed a read-only mount of its view; /proc/<pid>/mountinfo shows none"
        elif name == "filesystem" and not no_new_privs:
            why = "claimed Landlock; /proc shows NoNewPrivs 0, without which Landlock cannot be entered"
        elif name == "limits.open_files":
            why = _over(seen, "Max open files", open_files)
        elif name == "limits.memory":
            peak = int(seen.status.get("VmPeak", "0 kB").split()[0]) * 1024
            most = peak + memory_bytes if memory_ceiling is None else min(peak + memory_bytes, memory_ceiling)
            why = _over(seen, "Max address space", most)
        if why:
            found[name] = why
    return found


def _over(seen: Observed, row: str, most: int) -> str | None:
    soft, hard = seen.limits.get(row, (_UNLIMITED, _UNLIMITED))
    if soft == _UNLIMITED or hard == _UNLIMITED:
        return f"claimed; /proc shows {row} unlimited"
    if int(soft) > most or int(hard) > most:  # a hard limit above lets the soft one be raised later
        return f"claimed; /proc shows {row} {soft} (hard {hard}), over the {most} asked for"
    return None


def layers(report: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each layer of a sandbox's report, by name (a limit as ``limits.<name>``)."""
    for name in ("filesystem", "network", "capabilities", "syscalls"):
        if isinstance(report.get(name), dict):
            yield name, report[name]
            for part, layer in report[name].items():  # e.g. filesystem.view, its read-only mount
                if isinstance(layer, dict):
                    yield f"{name}.{part}", layer
    for name, layer in (report.get("limits") or {}).items():
        if isinstance(layer, dict):
            yield f"limits.{name}", layer
