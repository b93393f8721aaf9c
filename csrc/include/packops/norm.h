// Per-element math of group_norm_elu (GroupNorm + ELU), shared by the CPU
// (.cpp) and CUDA (.cu) kernels. No torch headers.
//
// Forward, per batch element b and group g of n = (C/G) H W values:
//   mean = E[x],  rstd = 1 / sqrt(E[x^2] - mean^2 + eps)      (biased variance)
//   x_hat = (x - mean) rstd,  z = w_c x_hat + b_c,  y = elu(z)
// Backward, from dy: dz = dy elu'(z) (recomputed from x, mean, rstd), and with
//   S1[b,c] = sum_hw dz,  S2[b,c] = sum_hw dz x_hat,
//   m1 = sum_{c in g} w_c S1[b,c] / n,  m2 = sum_{c in g} w_c S2[b,c] / n:
//   dx = rstd (w_c dz - m1 - x_hat m2),  dw_c = sum_b S2[b,c],  db_c = sum_b S1[b,c].
#pragma once

#include "packops/common.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

// Forced inline on the host: the CPU loops that call these are compiled for
// several instruction sets (cpu/dispatch.h run_vectorized), and a call would
// stop them from vectorising.
#if defined(__CUDACC__)
#define PACKOPS_NORM_HD PACKOPS_HD
#else
#define PACKOPS_NORM_HD inline __attribute__((always_inline))
#endif

namespace packops {

#if !defined(__CUDACC__)
// e^v for float on the CPU, written so the compiler vectorises it (std::exp
// is a call per element): v = k ln2 + r, |r| <= ln2/2, e^r by its Taylor
// series to r^6 (relative error below 2e-7), times 2^k built in the exponent
// bits. NaN stays NaN; v is clamped to [-87, 88] (e^-87 is 1.6e-38).
PACKOPS_NORM_HD float fast_exp(float v) {
  const float x = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
  const float kf = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  const float r = (x - kf * 0.693145752f) - kf * 1.42860677e-06f;  // ln2 in two parts
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
                                                                r * (8.33333333e-3f + r * 1.38888889e-3f)))));
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
#endif

template <typename A> PACKOPS_NORM_HD A exp_acc(A v) {
#if defined(__CUDACC__)
  return exp(v);
#else
  return std::exp(v);
#endif
}
#if !defined(__CUDACC__)
template <> PACKOPS_NORM_HD float exp_acc<float>(float v) { return fast_exp(v); }
#endif

template <typename A> PACKOPS_NORM_HD A sqrt_acc(A v) {
#if defined(__CUDACC__)
  return sqrt(v);
#else
  return std::sqrt(v);
#endif
}

// ELU(z) = z for z > 0, alpha (e^z - 1) otherwise; NaN stays NaN. The
// exponential is taken for every z (of min(z, 0)), so the select is
// branch-free and the CPU loops vectorise.
template <typename A> PACKOPS_NORM_HD A elu(A z, A alpha) {
  const A e = exp_acc(z > A(0) ? A(0) : z);
  return z > A(0) ? z : alpha * (e - A(1));
}

// dELU/dz (torch's elu_backward: alpha e^z for z <= 0, 1 above).
template <typename A> PACKOPS_NORM_HD A elu_grad(A z, A alpha) {
  const A e = exp_acc(z > A(0) ? A(0) : z);
  return z > A(0) ? A(1) : alpha * e;
}

// mean and rstd of a group from shifted sums: s1 = sum (x - k), s2 = sum (x - k)^2
// over n values (the shift k, any value of the group, keeps E[x^2] - E[x]^2
// from cancelling when the mean is large against the spread).
template <typename A> PACKOPS_HD void group_stats(A s1, A s2, A k, A n, A eps, A& mean, A& rstd) {
  const A m = s1 / n;
  A var = s2 / n - m * m;
  var = var < A(0) ? A(0) : var;
  mean = k + m;
  rstd = A(1) / sqrt_acc(var + eps);
}

}  // namespace packops
