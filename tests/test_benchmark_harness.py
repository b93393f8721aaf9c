"""The benchmark's measuring tools measure what they claim (memory accounting,
timer units). Speed itself is never asserted."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402


def test_harness_selftest():
    ok, lines = harness.selftest("cpu")
    assert ok, "\n".join(lines)
