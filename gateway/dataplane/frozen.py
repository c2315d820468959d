"""The cyclic GC's permanent generation: what ``gc.freeze()`` put out of reach, and when.

The process freezes everything alive at the end of startup (gateway.process), so that full
collections stop walking the libraries' millions of objects. A model alive at a freeze has
its reference cycles frozen with it: once unloaded, only a collection that thaws first frees
them. The gc's state is the process's, whichever cache or app froze it, so the moment of the
last freeze is kept here, beside the calls that change it, and not in any one cache.
"""

from __future__ import annotations

import gc
import time

_last_freeze: float | None = None


def freeze() -> None:
    """``gc.freeze()``: everything alive now moves to the permanent generation."""
    global _last_freeze
    gc.freeze()
    _last_freeze = time.time()


def may_be_frozen(created_at: float) -> bool:
    """Whether something alive since ``created_at`` (``time.time()``) may sit frozen."""
    return _last_freeze is not None and created_at <= _last_freeze


def collect(*, thaw: bool) -> int:
    """A full collection; with ``thaw``, of the permanent generation too (then everything
    still alive is frozen again: one walk over every object, for the rare unload that needs it)."""
    if not thaw:
        return gc.collect()
    gc.unfreeze()
    found = gc.collect()
    freeze()
    return found


def forget() -> None:
    """``gc.unfreeze()`` with nothing frozen afterwards (tests that froze on purpose)."""
    global _last_freeze
    gc.unfreeze()
    _last_freeze = None
