"""Work that does not fit a request: asynchronous predictions (one predict body, answered
later) and batch scoring jobs over files, run by every serving process of the fleet.

The queue is the state database's (registry_sync/jobs/store.py); :mod:`.submission` turns a
``POST /models/<name>/jobs`` into a job with its chunks, :mod:`.runner` claims and runs chunks in
a serving process, :mod:`.scoring` scores one file chunk, :mod:`.callback` tells a caller's URL
that a job ended, :mod:`.service` is what the routes call. :mod:`.files` finds, splits, reads
and writes the files.
"""
