"""Alembic migrations of the state database: the only way its schema changes.

Run them with ``registry-gateway db upgrade`` (``serve`` does it itself on sqlite).
"""
