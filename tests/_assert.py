"""Comparison helpers with a verbose mismatch report."""
import torch

# Absolute error floor per dtype on top of the "at most 2x the error of the
# same-precision PyTorch reference" rule (flash-attention's rule).
ATOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def worst(actual, expected):
    """(max abs error, index, actual value, expected value), NaN-aware:
    a NaN where the other has none counts as an infinite error."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    diff = (a - e).abs().nan_to_num(0.0)
    diff[nan_mismatch] = float("inf")
    if diff.numel() == 0:
        return 0.0, (), None, None
    flat = int(diff.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return float(diff.max()), idx, float(a[idx]), float(e[idx])


def assert_close(actual, expected, atol, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != " \
                                           f"{tuple(expected.shape)}"
    err, idx, a, e = worst(actual, expected)
    assert err <= atol, (f"{what}: max abs error {err:.3e} > {atol:.3e} at index {idx}: "
                         f"got {a!r}, expected {e!r}")


def assert_as_accurate(actual, same_precision_ref, exact, what=""):
    """actual must be within 2x the same-precision reference's error of the
    float64 result `exact`, plus a small per-dtype floor."""
    ref_err = worst(same_precision_ref, exact)[0]
    assert_close(actual, exact, 2 * ref_err + ATOL[actual.dtype], what)
