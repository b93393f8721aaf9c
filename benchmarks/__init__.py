"""Benchmarks of packops' ops, their call overhead, the training step and the
data renderer: one case list (cases.py, from bench_*.py) run by one runner,
`pytest benchmarks/ --benchmark-only`, results in one schema (results.py);
see README.md here."""
