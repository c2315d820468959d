"""Seeing inside the gateway: request context, traces, logs and inference records."""
