"""The benchmark's sections, a module each (``--only <name>``; ``registry-scale`` and
``cold-sizes`` are ``registry_scale`` and ``cold_sizes`` here). Each has a ``section`` function
that runs it and puts its figures in ``run.sections``; bench/run.py decides which run, in what
order, and writes the report. What they share is bench/harness.py.
"""
