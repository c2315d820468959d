"""Compile the bytecode of every module in this interpreter's site-packages, once, saying what it
does and how far it is (`make install`: the first `make demo` spent three minutes here in
silence). Run with the environment's own python: ``.venv/bin/python envs/bytecode.py``.

One line before, then the packages done out of all, on one line rewritten in place on a
terminal and a line each tenth elsewhere (CI logs); a file that does not compile (torch's
Python 3.12 samples) is left to Python, as compileall's quiet mode does."""

import compileall
import sys
import sysconfig
import time
from pathlib import Path

site = Path(sysconfig.get_path("purelib"))
entries = sorted(p for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__")))
loose = sorted(p for p in site.glob("*.py"))
total = len(entries) + bool(loose)
print(f"Compiling the bytecode of {total} packages in {site} once (a few minutes on 2 cores; later runs skip it)")
started, tty, step = time.monotonic(), sys.stdout.isatty(), max(1, total // 10)
for done, entry in enumerate(entries, start=1):
    compileall.compile_dir(entry, quiet=2, workers=0)
    if tty:
        print(f"\r  {done}/{total} {entry.name[:40]:<40}", end="", flush=True)
    elif done % step == 0:
        print(f"  {done}/{total} ({time.monotonic() - started:.0f} s)", flush=True)
for path in loose:
    compileall.compile_file(path, quiet=2)
print(
    f"{chr(13) + '  ' if tty else '  '}{total}/{total} compiled in {time.monotonic() - started:.0f} s".ljust(
        50 if tty else 0
    )
)
