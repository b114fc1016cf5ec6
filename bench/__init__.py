"""Benchmarks: ``make bench`` (or ``python -m bench [NAME...]``) prints one table.

Each benchmark is a function returning rows; timing uses :func:`bench.harness.measure` (median of repeated
runs). Benchmarks are never part of the test suite: speed is measured here, not asserted in tests.
"""
