"""Seeing inside the gateway: inference records, and beside them logs and traces."""
