"""Parley's benchmarks: ``python -m bench.run [suite ...]`` (see docs/BENCHMARKS.md)."""
