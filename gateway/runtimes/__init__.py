"""Where a loaded version runs: the seam (``base.py``), the in-process runtime, the isolated
runtime with its worker processes and uv-built environments, and the per-version decision
between them (``placement.py``)."""
