"""Helpers the tests share: real servers on loopback and models with controllable faults."""
