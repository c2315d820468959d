"""How many threads the BLAS libraries of a gateway process use (GATEWAY_BLAS_THREADS).

OpenBLAS, MKL and BLIS start a pool of threads a core, and OpenBLAS's spin for a while after
each call waiting for the next. In a process that also runs an event loop, reads and writes
files and talks to its state database, on as many cores as the pool, the spinning threads take
the cores those need: a 1-million-row job on a 2-core host spent 0.87-0.99 s of CPU with the
pool against 0.28-0.41 s with one thread (issue 52, bench/jobs.py). A server gets its
parallelism from concurrent requests and processes, as Ray Serve's replicas do
(``OMP_NUM_THREADS=1`` unless set), so one thread a call is the default.

The variables are read when a BLAS library loads: set here, they hold for the libraries this
process loads later (numpy's and scipy's on the first model) and for the processes it starts
(uvicorn's workers, isolated versions' workers, which the sandbox passes them to); threadpoolctl
limits the ones already loaded.
"""

from __future__ import annotations

import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def limit_blas_threads(threads: int) -> None:
    """At most ``threads`` threads a BLAS call in this process and the ones it starts; 0 leaves
    the libraries and their variables as they are."""
    if threads == 0:
        return
    for name in VARIABLES:
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")  # not a context: the limit stays
