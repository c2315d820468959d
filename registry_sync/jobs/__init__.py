"""The durable job queue in the state database: jobs and their chunks (``store.py``), and what
a job looks like to its readers (``records.py``)."""
