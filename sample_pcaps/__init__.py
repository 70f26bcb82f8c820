"""Deterministic sample captures for pcapsense tests: generator, writers, packet builders and scenarios.

The captures are committed next to this file; `python -m sample_pcaps.generate` rebuilds them byte for byte.
"""
