"""Benchmarks of packops ops, the training step and the data renderer: one case
list (cases.py) run by `python -m benchmarks.report`, `python -m benchmarks.train_step`
and `pytest benchmarks/ --benchmark-only` (see README.md here)."""
