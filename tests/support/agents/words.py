"""The one behaviour every test model shares: the words to stream, and the options."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any


def stream_words(text: str, options: dict[str, Any] | None, chunk: Callable[[int, str], Any]) -> Iterator[Any]:
    options = options or {}
    words = text.split() * int(options.get("repeat", 1))
    sent = 0
    ended = "cancelled"
    try:
        for index, word in enumerate(words):
            if options.get("fail_at") is not None and int(options["fail_at"]) == index:
                raise ValueError(f"the model failed before word {index}")
            if index == 1 and options.get("stall"):
                time.sleep(float(options["stall"]))
            if options.get("delay"):
                time.sleep(float(options["delay"]))
            sent += 1
            yield chunk(index, word if index == len(words) - 1 else word + " ")
        ended = "finished"
    except Exception:
        ended = "failed"
        raise
    finally:
        if options.get("closed_file"):  # whole or not at all: a test waits for it to exist
            # a bare name: in TMPDIR (a sandboxed worker's scratch folder, the one place it may write)
            closed = os.path.join(tempfile.gettempdir(), options["closed_file"])
            partial = f"{closed}.partial"
            with open(partial, "w") as handle:
                handle.write(f"{ended} {sent}")
            os.replace(partial, closed)
