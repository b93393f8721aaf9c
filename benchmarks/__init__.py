"""Benchmarks of packops ops: `python -m benchmarks.report` (see README.md here)."""
