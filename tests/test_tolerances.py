"""The accuracy rule itself (tests/_assert.py): the rounding floor holds for a
float32 sum taken in any order, and still fails a sum that drops one term."""
import torch

from _assert import rounding_floor


def _orders(t):
    """The float32 sum of t taken in several orders."""
    seq = torch.zeros((), dtype=torch.float32)
    for v in t:
        seq = seq + v
    rev = torch.zeros((), dtype=torch.float32)
    for v in t.flip(0):
        rev = rev + v
    by_size = torch.zeros((), dtype=torch.float32)
    for v in t[t.abs().argsort(descending=True)]:
        by_size = by_size + v
    return {"sequential": seq, "reversed": rev, "largest first": by_size,
            "torch.sum": t.sum(), "blocks of 16": t.view(-1, 16).sum(0).sum()}


def test_floor_holds_in_every_order_and_fails_a_dropped_term():
    g = torch.Generator().manual_seed(0)
    n = 4096
    for trial in range(5):
        # an offset makes partial sums grow (the hard case for rounding)
        t = (torch.randn(n, generator=g, dtype=torch.float64) + 0.5 * trial).float()
        exact = t.double().sum()
        floor = float(rounding_floor(t.double().abs().sum(), torch.tensor(float(n)),
                                     torch.float32))
        for name, s in _orders(t).items():
            assert abs(float(s) - float(exact)) <= floor, (trial, name)
        # a kernel that misses one term of average size
        k = int((t.double().abs() - t.double().abs().mean()).abs().argmin())
        missed = exact - t.double()[k]
        assert abs(float(missed - exact)) > 10 * floor, trial


def test_floor_scales_with_precision():
    s, n = torch.tensor([10.0]), torch.tensor([100.0])
    assert float(rounding_floor(s, n, torch.float64)) < 1e-12
    assert float(rounding_floor(s, n, torch.float32)) == 10 * 10 * torch.finfo(torch.float32).eps
