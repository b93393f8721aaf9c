"""Comparison helpers with a verbose mismatch report.

How a float32 (or lower) result is judged against the exact (float64) one:

  error <= 2 x the same-precision reference's error   (flash-attention's rule)
           + ATOL[dtype]                               (a small absolute floor)
           + floor                                     (per element, optional)

The first term adapts to the op but is one particular summation order's luck:
oneDNN sums in another order on an AVX-512 CPU than on an AVX2 one, so for a
long reduction (a bias gradient summed over the batch and the image) that term
alone can fail on one machine and pass on the next. `floor` is a bound fixed a
priori instead: `rounding_floor` (Higham and Mary's probabilistic bound on the
rounding error of a sum of n terms in any order, 2 sqrt(n) u sum |terms|, with
u = eps / 2), which no summation order exceeds in practice and which still
fails, in float32, a kernel that drops one average-sized term of a sum of
fewer than 40,000 (an index bug the float64 runs catch at any size).
"""
import torch

# Absolute error floor per dtype on top of the "at most 2x the error of the
# same-precision PyTorch reference" rule (flash-attention's rule).
ATOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def rounding_floor(abs_sum, n_terms, dtype):
    """Per-element bound on the rounding error of a sum of `n_terms` terms
    whose absolute values add up to `abs_sum`, in any order: sqrt(n) eps
    sum|terms| (tensors of the output's shape, float64)."""
    eps = torch.finfo(dtype).eps
    return eps * n_terms.clamp(min=1).sqrt() * abs_sum


def worst(actual, expected, tol=None):
    """(max abs error, index, actual value, expected value), NaN-aware:
    a NaN where the other has none counts as an infinite error. With `tol`
    (a tensor of per-element tolerances), the element that exceeds its own
    tolerance by the most."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    diff = (a - e).abs().nan_to_num(0.0)
    diff[nan_mismatch] = float("inf")
    if diff.numel() == 0:
        return 0.0, (), None, None
    score = diff if tol is None else diff - tol.detach().double().cpu()
    flat = int(score.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return float(diff[idx]), idx, float(a[idx]), float(e[idx])


def assert_close(actual, expected, atol, what=""):
    """Every element within `atol` (a number, or a tensor of per-element
    tolerances broadcastable to the shape)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != " \
                                           f"{tuple(expected.shape)}"
    if torch.is_tensor(atol):
        tol = torch.broadcast_to(atol.detach().double().cpu(), actual.shape)
        err, idx, a, e = worst(actual, expected, tol)
        bound = float(tol[idx]) if idx else 0.0
    else:
        err, idx, a, e = worst(actual, expected)
        bound = atol
    assert err <= bound, (f"{what}: max abs error {err:.3e} > {bound:.3e} at index {idx}: "
                          f"got {a!r}, expected {e!r}")


def assert_as_accurate(actual, same_precision_ref, exact, what="", floor=None):
    """actual must be within 2x the same-precision reference's error of the
    float64 result `exact`, plus a small per-dtype floor, plus `floor` (per
    element: rounding_floor of the terms each element sums) when given."""
    ref_err = worst(same_precision_ref, exact)[0]
    tol = 2 * ref_err + ATOL[actual.dtype]
    if floor is not None:
        tol = floor.detach().double().cpu() + tol
    assert_close(actual, exact, tol, what)
