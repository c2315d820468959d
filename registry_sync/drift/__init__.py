"""Drift: how far a version's live traffic is from the data it was trained on.

``profile.py`` is a reference (bins, shares, ranges; JSON), ``statistics.py`` bins live values
on it and gives the figures (PSI, Kolmogorov-Smirnov or chi-square, missing and outlier
shares). Both are NumPy/pandas/SciPy only, with no I/O. Where a reference comes from and where
it is kept: ``reference.py`` and ``references.py``.
"""
