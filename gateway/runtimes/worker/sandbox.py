"""The sandbox a worker puts itself in before it loads any model: stdlib only (this file runs on
the interpreter of a model's own environment, beside ``server.py``), applied once, never lifted.

The gateway chose the policy (``gateway/runtimes/sandbox.py``) and built the worker's
environment from an allow list before starting it; here the worker, still single-threaded and
holding nothing of any model, applies the layers the kernel offers, in this order:

1. **limits**: ``RLIMIT_NOFILE``, ``RLIMIT_NPROC`` (it binds within the worker's own user
   namespace, never for root), ``RLIMIT_CORE`` 0, ``RLIMIT_FSIZE``, ``RLIMIT_AS`` at a ceiling
   (what it maps now, its budget and a start-up allowance: :func:`startup_bytes`), lowered at
   ``hello`` (:func:`limit_memory`), once the interpreter and MLflow are imported, so that the
   budget is what models may add.
2. **network**: a user and network namespace of its own (only a loopback, down): nothing it
   opens reaches any host, loopback included. Where unprivileged namespaces are refused,
   Landlock's TCP rules (ABI 4) deny every ``connect`` and ``bind`` instead. Then a mount
   namespace of its own (:func:`mount_namespace`), where ``scratch`` is a tmpfs of
   ``disk_bytes`` and ``view`` a read-only bind mount.
3. **filesystem** (Landlock): read-only the interpreter, its environment, this folder, the
   system's libraries (``/usr``, ``/lib``, ``/sys``), what of ``/etc`` they read (``_ETC``: not
   ``/etc/shadow``), its own ``/proc/<pid>`` and the machine's ``/proc`` files (``_PROC``: no
   other process's) and the versions' verified files as the gateway links them into ``view``,
   itself a read-only bind mount in a mount namespace of the worker's own (no chmod, utime or
   setxattr reaches the artifact cache's blobs through those hard links); read-write its own ``scratch``
   (``HOME``, ``TMPDIR``); nothing else, so no state database, no other version's files, no
   configuration. Since ABI 6 it can neither signal nor connect to the abstract sockets of
   processes outside its sandbox, and Landlock denies ptrace of them at any ABI, which is
   what keeps ``/proc/<gateway>/environ`` and ``/proc/<gateway>/mem`` closed.
4. **system calls** (seccomp, x86-64): ``ptrace``, ``mount``, ``bpf``, ``unshare``, module
   and key management, ``io_uring``, ``memfd_create``, ``memfd_secret`` and SysV shared memory... fail with
   ``EPERM``; so do ``prlimit64``, ``setpriority``, ``sched_setaffinity``... naming any process
   but the worker itself (``_SELF_ONLY``); with no processes allowed, so do
   ``fork``, a ``clone`` that is not a thread, and ``execve``; with no network, creating any
   socket (a Unix socket's path, such as PostgreSQL's, is not a network namespace's to hide,
   and Landlock's rules, where they stand in for the namespace, cover TCP only).

Each layer reports ``{"enforced": bool, "how" or "why_not": str}``; a missing one is the
gateway's to accept (``best-effort``) or refuse (``required``).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import struct
import sys
from typing import Any

EXIT_OVER_MEMORY = 86  # the worker's exit status when a model went past its address-space limit

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# --- Landlock (linux/landlock.h) ---
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# --- namespaces and mounts ---
_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
# statvfs's ST_* flag -> mount's MS_* flag, for the flags a bind mount must keep in a user namespace
_KEPT_FLAGS = ((8, _MS_NOEXEC), (1024, 1024), (2048, 2048), (4096, 1 << 21))  # noexec, noatime, nodiratime, relatime

# --- seccomp (x86-64 only: the numbers below are that architecture's) ---
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_PRIO_PROCESS, _IOPRIO_WHO_PROCESS = 0, 1
_DENIED = {  # name -> x86-64 number: what no model needs, and what a model breaking out would
    "ptrace": 101, "syslog": 103, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "chroot": 161, "pivot_root": 155, "adjtimex": 159,
    "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
    # another process by a handle: signal it, take its files, reclaim or advise its memory
    "pidfd_send_signal": 424, "pidfd_open": 434, "process_madvise": 440, "process_mrelease": 448,
    # memory RLIMIT_AS does not count (written, never mapped), and SysV's outlives the worker
    "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "mq_open": 240,
}  # fmt: skip
# name -> (x86-64 number, ((argument, the only value allowed), ...)): allowed on the worker itself
# (pid 0, "who" 0), refused on any other process (the gateway, another model's worker), which
# keeps the gateway's uid and so would pass the kernel's own permission check. Arguments are
# compared on their low 32 bits: each is an int (pid_t), which the kernel truncates the same way.
_SELF_ONLY = {
    "prlimit64": (302, ((0, 0),)),  # libc's getrlimit and setrlimit pass pid 0
    "sched_setaffinity": (203, ((0, 0),)),  # BLAS and PyTorch pin with pid 0
    "sched_setscheduler": (144, ((0, 0),)),
    "sched_setparam": (142, ((0, 0),)),
    "sched_setattr": (314, ((0, 0),)),
    "migrate_pages": (256, ((0, 0),)),
    "move_pages": (279, ((0, 0),)),
    "get_robust_list": (274, ((0, 0),)),  # another's futex list: Landlock's ptrace rule, where there is Landlock
    "setpriority": (141, ((0, _PRIO_PROCESS), (1, 0))),  # not a process group, not a user
    "getpriority": (140, ((0, _PRIO_PROCESS), (1, 0))),
    "ioprio_set": (251, ((0, _IOPRIO_WHO_PROCESS), (1, 0))),
    "ioprio_get": (252, ((0, _IOPRIO_WHO_PROCESS), (1, 0))),
    # posix_fallocate (mode 0) stays within RLIMIT_FSIZE; FALLOC_FL_KEEP_SIZE would reserve
    # blocks past it, on a scratch folder that is not a tmpfs of its own
    "fallocate": (285, ((1, 0),)),
}
_PROCESSES = {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322}
_CLONE, _CLONE3, _SOCKET = 56, 435, 41
_BYTES_PER_INODE, _MIN_INODES = 16384, 1024  # the scratch tmpfs's files: one per 16 KiB of its size


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    abi = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(abi), 0)


def _enforced(how: str, **more: Any) -> dict[str, Any]:
    return {"enforced": True, "how": how, **more}


def _missing(why: str, **more: Any) -> dict[str, Any]:
    return {"enforced": False, "why_not": why, **more}


def apply_from_arguments(argv: list[str]) -> tuple[dict[str, Any] | None, int]:
    """``--sandbox <policy JSON>`` among the worker's arguments: applied, and what was enforced
    with the memory budget for :func:`limit_memory`; (None, 0) without it."""
    if "--sandbox" not in argv or argv.index("--sandbox") + 1 >= len(argv):
        return None, 0
    policy = json.loads(argv[argv.index("--sandbox") + 1])
    if "--environment" in argv:  # read, not written: the interpreter is the base one, not its
        policy["environment"] = argv[argv.index("--environment") + 1]
    return apply(policy), int(policy.get("memory_bytes") or 0)


def announce(argv: list[str], confined: dict[str, Any] | None) -> None:
    """Send the gateway, on the socket of ``--fd``, what :func:`apply` enforced, framed as
    ``wire.send`` frames a message without buffers (``wire`` imports NumPy: not yet).

    Called before ``site`` runs anything of the environment: no .pth file can have changed it."""
    fd = int(argv[argv.index("--fd") + 1])
    head = json.dumps({"op": "confined", "sandbox": confined}, separators=(",", ":")).encode()
    frame = struct.pack("!II", len(head), 0) + head
    while frame:
        frame = frame[os.write(fd, frame) :]


def apply(policy: dict[str, Any]) -> dict[str, Any]:
    """Apply every layer ``policy`` asks for, as far as this kernel allows; what was enforced.

    ``policy``: ``network`` ("deny" | "allow"), ``view`` and ``scratch`` (folders), ``devices``
    (paths given read-write, e.g. a GPU's), ``max_open_files``, ``max_processes`` (0: none).
    Must run before any thread starts (a multi-threaded process cannot enter a user namespace).
    """
    report: dict[str, Any] = {}
    report["limits"] = _limits(policy)
    if not sys.platform.startswith("linux"):  # Landlock, namespaces and seccomp are Linux's
        why = f"not Linux ({sys.platform})"
        report.update({name: _missing(why) for name in ("network", "filesystem", "capabilities", "syscalls")})
        return report
    net_via_namespace = False
    if policy.get("network") == "deny":
        report["network"], net_via_namespace = _network_namespace()
    else:
        report["network"] = {"enforced": False, "why_not": "allowed: " + str(policy.get("network_reason", "tagged"))}
    mounts = mount_namespace(in_user_namespace=net_via_namespace)
    if report["limits"]["disk"]["enforced"]:
        scratch = _scratch_tmpfs(policy, mounts)
        if scratch["enforced"]:
            report["limits"]["disk"]["how"] = scratch["how"] + "; " + report["limits"]["disk"]["how"]
        else:  # each file is bounded, their total is not
            report["limits"]["disk"] = _missing(
                scratch["why_not"] + "; " + report["limits"]["disk"]["how"] + " only, their total unbounded"
            )
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    view = _read_only_view(policy, mounts)
    report["filesystem"], landlock_net = _landlock(policy, deny_tcp=policy.get("network") == "deny")
    if isinstance(report["filesystem"], dict):
        report["filesystem"]["view"] = view
    if policy.get("network") == "deny":
        if net_via_namespace and landlock_net:
            report["network"]["how"] += "; Landlock denies TCP connect and bind too"
        elif landlock_net:
            report["network"] = _enforced(
                "Landlock denies every TCP connect and bind (no network namespace: "
                + report["network"]["why_not"]
                + "); UDP is left to the seccomp layer, which refuses new sockets"
            )
    report["capabilities"] = _drop_capabilities()
    report["syscalls"] = _seccomp(policy)
    return report


def _drop_capabilities() -> dict[str, Any]:
    """No capability left, in any namespace: a worker started by a root gateway keeps uid 0 but
    cannot override file permissions or read another process's memory with it."""
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails past the last capability: fine
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)  # two (effective, permitted, inheritable) sets, all zero
    if _libc.capset(ctypes.c_char_p(header), data) != 0:
        return _missing(f"capset failed ({os.strerror(ctypes.get_errno())})")
    return _enforced("none: bounding, permitted and effective sets emptied")


def _limits(policy: dict[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    files = int(policy.get("max_open_files") or 0)
    if files > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        files = min(files, hard) if hard != resource.RLIM_INFINITY else files
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        limits["open_files"] = _enforced(f"RLIMIT_NOFILE {files}")
    else:
        limits["open_files"] = _missing("GATEWAY_SANDBOX_MAX_OPEN_FILES=0")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    memory = int(policy.get("memory_bytes") or 0)
    limits["memory"] = _memory_ceiling(memory) if memory > 0 else _missing("GATEWAY_SANDBOX_MEMORY_MB=0")
    disk = int(policy.get("disk_bytes") or 0)
    if disk > 0:  # a write past it fails with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
        limits["disk"] = _enforced(f"no file over {disk // 2**20} MiB (RLIMIT_FSIZE)", bytes=disk)
    else:
        limits["disk"] = _missing("GATEWAY_SANDBOX_DISK_MB=0")
    processes = int(policy.get("max_processes") or 0)
    if processes > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        if os.geteuid() == 0:
            limits["processes"] = _missing(f"RLIMIT_NPROC {processes} set, but it does not bind root")
        else:
            limits["processes"] = _enforced(f"RLIMIT_NPROC {processes} (threads too, in its own user namespace)")
    # processes == 0 is seccomp's (no fork, no clone but threads, no execve): reported there
    return limits


def startup_bytes() -> int:
    """Address space a worker may add while it starts (site, NumPy and its BLAS threads, MLflow),
    beside its budget: its hard RLIMIT_AS until ``hello`` is what it maps before ``site`` plus
    both, so a requirement's code that runs in ``site`` is bounded too (issue 48)."""
    return 2**30 + (os.cpu_count() or 1) * 96 * 2**20


def _mapped() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _memory_ceiling(budget_bytes: int) -> dict[str, Any]:
    """RLIMIT_AS, soft and hard, before anything of the environment runs: :func:`limit_memory`
    can only lower it (a .pth file that stubs that out leaves this in place, and the gateway
    holds the limit it sees to this figure, which it got before any such file ran)."""
    mapped = _mapped()
    ceiling = mapped + budget_bytes + startup_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    return _enforced(
        f"RLIMIT_AS {ceiling // 2**20} MiB until started: {mapped // 2**20} MiB mapped before site "
        f"+ {budget_bytes // 2**20} MiB + {startup_bytes() // 2**20} MiB to start",
        bytes=ceiling,
    )


def limit_memory(budget_bytes: int) -> dict[str, Any]:
    """RLIMIT_AS at what the worker maps now (the interpreter, MLflow) plus ``budget_bytes``,
    never above the ceiling set before ``site`` ran (:func:`_memory_ceiling`)."""
    if budget_bytes <= 0:
        return _missing("GATEWAY_SANDBOX_MEMORY_MB=0")
    mapped = _mapped()
    _, ceiling = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + budget_bytes if ceiling == resource.RLIM_INFINITY else min(mapped + budget_bytes, ceiling)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return _enforced(
        f"RLIMIT_AS {limit // 2**20} MiB: {mapped // 2**20} MiB mapped at start + {budget_bytes // 2**20} MiB; "
        "past it the worker exits and its callers are answered 503",
        bytes=limit,
    )


def _network_namespace() -> tuple[dict[str, Any], bool]:
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        return _missing(f"no user and network namespace: unshare failed ({os.strerror(errno)})"), False
    try:
        _map_ids(uid, gid)
    except OSError as exc:  # still in a network namespace of its own; ids show as nobody
        return _enforced(f"a network namespace of its own (ids unmapped: {exc.strerror})"), True
    return _enforced("a user and network namespace of its own: no interface but a loopback, down"), True


def _map_ids(uid: int, gid: int) -> None:
    """The same ids inside a new user namespace: files keep their owners, and RLIMIT_NPROC
    counts this namespace only. The kernel compares these ids, not the namespace's, when the
    worker names another process: seccomp, not the namespace, keeps it off the gateway's."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def mount_namespace(*, in_user_namespace: bool) -> str | None:
    """Enter a mount namespace of the worker's own, its mounts private (nothing mounted here
    reaches the gateway's namespace): None, or why not. Before Landlock (which forbids
    mounting) and seccomp; inside the user namespace of :func:`_network_namespace` where there
    is one, else in one of its own (a version allowed the network has none), where mounting
    needs no privilege. :func:`_scratch_tmpfs` and :func:`_read_only_view` mount in it."""
    if _libc.unshare(_CLONE_NEWNS) != 0:  # no CAP_SYS_ADMIN here: in a user namespace of its own
        uid, gid = os.geteuid(), os.getegid()
        if in_user_namespace or _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            return f"no mount namespace: unshare failed ({os.strerror(ctypes.get_errno())})"
        try:
            _map_ids(uid, gid)
        except OSError as exc:
            return f"no mount namespace: its user namespace's ids could not be mapped ({exc.strerror})"
    if _libc.mount(b"none", b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0:
        return f"mount namespace: making its mounts private failed ({os.strerror(ctypes.get_errno())})"
    return None


def _scratch_tmpfs(policy: dict[str, Any], mounts: str | None) -> dict[str, Any]:
    """Its ``scratch`` folder a tmpfs of ``disk_bytes``: what it writes there (``HOME``,
    ``TMPDIR``) is bounded in total, never reaches the artifact cache's disk, and is gone with
    the worker. ``mounts``: :func:`mount_namespace`'s answer."""
    disk, scratch = int(policy.get("disk_bytes") or 0), str(policy.get("scratch") or "")
    if disk <= 0 or not scratch:
        return _missing("GATEWAY_SANDBOX_DISK_MB=0: its scratch folder is on the artifact cache's disk")
    if mounts is not None:
        return _missing(mounts)
    # Its inodes too: empty files take no size, yet each takes kernel memory tmpfs does not count
    inodes = max(_MIN_INODES, disk // _BYTES_PER_INODE)
    options = f"size={disk},nr_inodes={inodes},mode=0700".encode()
    flags = ctypes.c_ulong(_MS_NOSUID | _MS_NODEV)
    if _libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", flags, options) != 0:
        return _missing(f"mount namespace: no tmpfs on its scratch folder ({os.strerror(ctypes.get_errno())})")
    return _enforced(
        f"its scratch folder a tmpfs of {disk // 2**20} MiB of its own (memory, not the disk's), {inodes} files at most"
    )


def _read_only_view(policy: dict[str, Any], mounts: str | None) -> dict[str, Any]:
    """Its models' files (hard links to the artifact cache's verified blobs, which share their
    inode's mode, times and extended attributes) on a read-only bind mount of the view: chmod,
    utime and setxattr fail there, and the blobs keep theirs. Landlock does not cover a file's
    metadata; a mount does. ``mounts``: :func:`mount_namespace`'s answer."""
    view = str(policy.get("view") or "")
    if not view or not os.path.isdir(view):
        return _missing("no view folder")
    if mounts is not None:
        return _missing(mounts)
    kept = os.statvfs(view).f_flag  # a bind's flags locked by the mount it comes from must stay
    flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    flags |= sum(ms for st, ms in _KEPT_FLAGS if kept & st)
    for source, target, kind, how in (
        (view.encode(), view.encode(), _MS_BIND | _MS_REC, "binding the view"),
        (None, view.encode(), flags, "remounting the view read-only"),
    ):
        if _libc.mount(source, target, None, ctypes.c_ulong(kind), None) != 0:
            return _missing(f"{how} failed ({os.strerror(ctypes.get_errno())})")
    return _enforced("its models' files on a read-only bind mount: no chmod, utime or setxattr reaches the cache")


def _landlock(policy: dict[str, Any], *, deny_tcp: bool) -> tuple[dict[str, Any], bool]:
    abi = landlock_abi()
    if abi < 1:
        return _missing("the kernel has no Landlock (or it is disabled)"), False
    handled_fs = (1 << 13) - 1  # ABI 1: bits 0-12
    if abi >= 2:
        handled_fs |= _FS_REFER
    if abi >= 3:
        handled_fs |= _FS_TRUNCATE
    if abi >= 5:
        handled_fs |= _FS_IOCTL_DEV
    handled_net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if deny_tcp and abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buf = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return _missing(f"landlock_create_ruleset failed ({os.strerror(ctypes.get_errno())})"), False
    readable, writable = [], []
    # A rule holds the inode of /proc/<pid>; procfs makes a new one if the dentry is ever evicted
    # (memory pressure), which would lock the worker out of its own /proc: an open fd pins it.
    if not _pinned:
        _pinned.append(os.open(f"/proc/{os.getpid()}", os.O_PATH | os.O_CLOEXEC))
    try:
        for path in read_only_paths(policy):
            if _allow(ruleset, path, _READ & handled_fs):
                readable.append(path)
        everything = handled_fs & ~(_FS_IOCTL_DEV | _FS_MAKE_CHAR | _FS_MAKE_BLOCK)
        for path in [str(policy.get("scratch") or "")] + list(policy.get("writable") or []):
            if path and _allow(ruleset, path, everything):
                writable.append(path)
        for path in ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"] + list(
            policy.get("devices") or []
        ):
            if _allow(ruleset, path, (_FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV) & handled_fs):
                writable.append(path)
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return _missing(f"landlock_restrict_self failed ({os.strerror(ctypes.get_errno())})"), False
    finally:
        os.close(ruleset)
    scope = "; no signal to, nor abstract socket of, any process outside it" if scoped else ""
    return (
        _enforced(
            f"Landlock ABI {abi}: read-only {len(readable)} paths, read-write its scratch{scope}",
            read_only=readable,
            read_write=writable,
        ),  # fmt: skip
        bool(handled_net),
    )


# What of /etc the interpreter, NumPy's and SciPy's libraries, SSL and name lookups read: of
# /etc/ssl and /etc/pki the certificates and OpenSSL's configuration, never their private keys.
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "ssl/certs",
    "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf", "pki/tls/certs", "pki/tls/cert.pem",
    "pki/tls/openssl.cnf", "pki/ca-trust", "crypto-policies", "gnutls", "hosts", "host.conf", "resolv.conf",
    "nsswitch.conf", "gai.conf", "services", "protocols", "passwd", "group", "mime.types", "os-release",
    "lsb-release", "debian_version", "fonts", "OpenCL", "nvidia", "magic",
)  # fmt: skip
# What of /proc, beside its own /proc/<pid>: the machine's, not another process's.
_PROC = ("cpuinfo", "meminfo", "stat", "loadavg", "uptime", "version", "filesystems", "devices", "sys", "driver/nvidia")
_pinned: list[int] = []  # its own /proc/<pid>, held open: see _landlock


def read_only_paths(policy: dict[str, Any]) -> list[str]:
    """The interpreter, its environment, this folder, the system's libraries, what of /etc
    they read (not /etc/shadow: with a root gateway the worker's uid could), its own /proc
    entries and the machine's (not another process's: cmdline, environ, open files), the view."""
    here = os.path.dirname(os.path.realpath(__file__))
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)), here]
    paths += [os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    # its environment: under -S, sys.prefix is still the base interpreter's until site runs
    paths += [os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))]
    if policy.get("environment"):  # started on the base interpreter: its environment is apart
        paths.append(str(policy["environment"]))
    paths += ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sys"]
    paths += [f"/etc/{name}" for name in _ETC]  # not /etc/shadow, nor any other secret a root gateway reads
    paths += [f"/proc/{os.getpid()}"] + [f"/proc/{name}" for name in _PROC]  # no other process's entries
    if policy.get("view"):
        paths.append(str(policy["view"]))
    seen: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen and os.path.exists(real):
            seen.append(real)
    return seen


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _allow(ruleset: int, path: str, access: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not os.path.isdir(path):  # a file takes only the rights that apply to files
            access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
        rule = _PathBeneath(access, fd)
        done = _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                             ctypes.byref(rule), ctypes.c_uint32(0))  # fmt: skip
        return bool(done == 0)
    finally:
        os.close(fd)


def _seccomp(policy: dict[str, Any]) -> dict[str, Any]:
    if platform.machine() != "x86_64":
        return _missing(f"the seccomp filter knows only x86-64's system calls, not {platform.machine()}'s")
    no_processes = int(policy.get("max_processes") or 0) == 0
    no_sockets = policy.get("network") == "deny"
    program = _filter(no_processes=no_processes, no_sockets=no_sockets)
    blob = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(blob, len(blob))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(len(program), ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return _missing(f"seccomp refused the filter ({os.strerror(ctypes.get_errno())})")
    denied = sorted(_DENIED) + (sorted(_PROCESSES) + ["clone (but threads)", "clone3"] if no_processes else [])
    if no_sockets:
        denied.append("socket (any family: UDP, Unix, netlink too)")
    on_others = sorted(name for name in _SELF_ONLY if name != "fallocate")
    how = (
        "seccomp: " + ", ".join(denied) + " fail with EPERM; so do " + ", ".join(on_others)
        + " on any process but the worker itself, and fallocate but posix_fallocate's"
    )  # fmt: skip
    report = _enforced(how, denied=denied, self_only=on_others)
    if no_processes:
        report["processes"] = "none: fork, vfork, clone of a process and execve fail"
    return report


_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data; the arguments start at 16, 8 bytes each


def _arg(index: int) -> int:
    """The offset of an argument's low 32 bits (x86-64 is little-endian)."""
    return 16 + 8 * index


def _refuse(nr: int, errno: int = _EPERM) -> list[tuple[int, int, int, int]]:
    return [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, _RET_ERRNO | errno)]


def _only_when(nr: int, equal: tuple[tuple[int, int], ...]) -> list[tuple[int, int, int, int]]:
    """``nr`` allowed when every (argument, value) holds, refused otherwise: a block that
    returns once the number matched (the accumulator is reloaded only inside it)."""
    checks: list[tuple[int, int, int, int]] = []
    for k, (index, value) in enumerate(equal):  # a failed comparison jumps to the refusal at the end
        checks += [(_LD_W_ABS, 0, 0, _arg(index)), (_JEQ_K, 0, 2 * (len(equal) - k) - 1, value)]
    block = [*checks, (_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | _EPERM)]
    return [(_JEQ_K, 0, len(block), nr), *block]


def _filter(*, no_processes: bool, no_sockets: bool) -> list[tuple[int, int, int, int]]:
    """A classic BPF program: (code, jt, jf, k) per instruction, jumps relative. The system
    call's number stays in the accumulator from one rule to the next; a rule that loads an
    argument returns before the next rule."""
    out: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR),
        (_JGE_K, 0, 1, 0x40000000),  # the x32 ABI: none of it
        (_RET_K, 0, 0, _RET_ERRNO | _EPERM),
    ]
    for nr in sorted(_DENIED.values()) + (sorted(_PROCESSES.values()) if no_processes else []):
        out += _refuse(nr)
    if no_sockets:  # its socket to the gateway is inherited; socketpair() reaches no one
        out += _refuse(_SOCKET)
    if no_processes:
        out += _refuse(_CLONE3, _ENOSYS)  # glibc falls back to clone
        out += [
            (_JEQ_K, 0, 4, _CLONE),
            (_LD_W_ABS, 0, 0, _arg(0)),  # flags (low half)
            (_JSET_K, 1, 0, _CLONE_THREAD),
            (_RET_K, 0, 0, _RET_ERRNO | _EPERM),
            (_RET_K, 0, 0, _RET_ALLOW),  # a thread
        ]
    for nr, equal in sorted(_SELF_ONLY.values()):
        out += _only_when(nr, equal)
    out.append((_RET_K, 0, 0, _RET_ALLOW))
    return out
