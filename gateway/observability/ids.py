"""The random bits behind the ids the gateway makes for every request or record: request ids,
CloudEvent ids and new trace ids.

From a generator of the gateway's own (a Mersenne Twister seeded from the OS when this module
is imported, and again in a forked child), not from ``os.urandom`` (a system call each, which
in a thread lets go of the GIL and takes it back from the event loop) and not from the
``random`` module's shared generator: a model, a library or a test that calls
``random.seed(...)`` would make every later id of this process, and of every worker seeded
alike, the same sequence. An id names something; it guards nothing, so it need not be
unpredictable, only unique.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()
os.register_at_fork(after_in_child=_generator.seed)  # no argument: from the OS again

# ``random_bits(n)``: n random bits as an integer. The generator's own C method, bound once:
# no Python frame of ours on the request path; it holds the GIL throughout, so it is
# thread-safe, and a reseed after fork reseeds this same generator.
random_bits = _generator.getrandbits
