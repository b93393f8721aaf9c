// OpenMP kernels of group_norm_elu; the per-element math is the shared
// csrc/include/packops/norm.h (the CUDA kernels use the same functions).
//
// One task per (batch element, group): the forward reads the group twice
// (the statistics in double, from sums shifted by the group's first value,
// then the output), the backward twice (the per-channel sums S1, S2 while
// writing dz = dy elu'(z) into the input gradient's buffer, then the input
// gradient from dz in place), recomputing the normalised value and the ELU's
// derivative instead of storing them. The loops are compiled for AVX2 + FMA
// and the baseline (run_vectorized) with a vectorisable exponential. The
// weight and bias gradients are the per-task sums reduced over the batch in a
// fixed order: deterministic.
#include "norm.h"

#include <vector>

#include "dispatch.h"
#include "packops/norm.h"

namespace packops {
namespace cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

// Shifted sums of one group's n values, in double (vectorised: the simd
// reduction fixes the order per build, not per thread count).
template <typename T>
inline void moments(const T* x, int64_t n, double k, double& s1, double& s2) {
  double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - k;
    a += d;
    b += d * d;
  }
  s1 = a;
  s2 = b;
}

// y = elu((x - mean) scale + shift) over one channel plane
template <typename T, typename A>
inline void apply_row(const T* x, T* y, int64_t n, A mean, A scale, A shift, A alpha) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = T(elu<A>((A(x[i]) - mean) * scale + shift, alpha));
}

// (sum dz, sum dz x_hat) over one channel plane, dz = dy elu'(z) recomputed;
// dz is also written to `dz_out` when given (the input gradient pass reads it
// back instead of taking the exponential again). Sums in the accumulation
// type over blocks of kBlock values, then in double.
constexpr int64_t kBlock = 1024;

template <typename T, typename A>
inline void grad_sums(const T* dy, const T* x, T* dz_out, int64_t n, A mean, A rstd,
                                  A w, A b, A alpha, double& s1, double& s2) {
  double t1 = 0, t2 = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = i0 + kBlock < n ? i0 + kBlock : n;
    A a = 0, c = 0;
    if (dz_out) {
#pragma omp simd reduction(+ : a, c)
      for (int64_t i = i0; i < i1; ++i) {
        const A xh = (A(x[i]) - mean) * rstd;
        const A dz = A(dy[i]) * elu_grad<A>(xh * w + b, alpha);
        dz_out[i] = T(dz);
        a += dz;
        c += dz * xh;
      }
    } else {
#pragma omp simd reduction(+ : a, c)
      for (int64_t i = i0; i < i1; ++i) {
        const A xh = (A(x[i]) - mean) * rstd;
        const A dz = A(dy[i]) * elu_grad<A>(xh * w + b, alpha);
        a += dz;
        c += dz * xh;
      }
    }
    t1 += double(a);
    t2 += double(c);
  }
  s1 = t1;
  s2 = t2;
}

// dx = rstd (w dz - m1 - x_hat m2) over one channel plane, dz read from dx
// (grad_sums wrote it there; the CPU dtypes are their own accumulation type,
// so dz round-trips exactly).
template <typename T, typename A>
inline void grad_input_row(const T* x, T* dx, int64_t n, A mean, A rstd, A w, A m1,
                                       A m2) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A xh = (A(x[i]) - mean) * rstd;
    dx[i] = T(rstd * (w * A(dx[i]) - m1 - xh * m2));
  }
}

template <typename T>
void forward(const T* x, const T* w, const T* bias, T* y, typename AccType<T>::type* mean_out,
             typename AccType<T>::type* rstd_out, int64_t B, int64_t C, int64_t HW, int64_t G,
             double eps, double alpha) {
  using A = typename AccType<T>::type;
  const int64_t Cg = C / G, n = Cg * HW;
#pragma omp parallel for schedule(static) if (B * C * HW > kParallelGrain)
  for (int64_t bg = 0; bg < B * G; ++bg) {
    const int64_t b = bg / G, g = bg % G;
    const T* xg = x + (b * C + g * Cg) * HW;
    T* yg = y + (b * C + g * Cg) * HW;
    const double k = double(xg[0]);
    double s1, s2, mean, rstd;
    run_vectorized([&] { moments(xg, n, k, s1, s2); });
    group_stats<double>(s1, s2, k, double(n), eps, mean, rstd);
    mean_out[bg] = A(mean);
    rstd_out[bg] = A(rstd);
    // (x - mean) first, as torch does: folding mean into the shift cancels
    // badly when rstd is large (a near-constant group)
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const int64_t c = g * Cg + cc;
      run_vectorized([&] {
        apply_row<T, A>(xg + cc * HW, yg + cc * HW, HW, A(mean), A(rstd * double(w[c])),
                        A(bias[c]), A(alpha));
      });
    }
  }
}

template <typename T>
void backward(const T* dy, const T* x, const T* w, const T* bias,
              const typename AccType<T>::type* mean_in, const typename AccType<T>::type* rstd_in,
              T* dx, T* dw, T* db, int64_t B, int64_t C, int64_t HW, int64_t G, double alpha) {
  using A = typename AccType<T>::type;
  const int64_t Cg = C / G, n = Cg * HW;
  std::vector<double> S(B * C * 2);  // [b, c, (dz, dz x_hat)]
#pragma omp parallel for schedule(static) if (B * C * HW > kParallelGrain)
  for (int64_t bg = 0; bg < B * G; ++bg) {
    const int64_t b = bg / G, g = bg % G;
    const A mean = mean_in[bg], rstd = rstd_in[bg], al = A(alpha);
    double m1 = 0, m2 = 0;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const int64_t c = g * Cg + cc, off = (b * C + c) * HW;
      double s1, s2;
      run_vectorized([&] {
        grad_sums<T, A>(dy + off, x + off, dx ? dx + off : nullptr, HW, mean, rstd, A(w[c]),
                        A(bias[c]), al, s1, s2);
      });
      S[(b * C + c) * 2] = s1;
      S[(b * C + c) * 2 + 1] = s2;
      m1 += double(w[c]) * s1;
      m2 += double(w[c]) * s2;
    }
    if (!dx) continue;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const int64_t c = g * Cg + cc, off = (b * C + c) * HW;
      run_vectorized([&] {
        grad_input_row<T, A>(x + off, dx + off, HW, mean, rstd, A(w[c]), A(m1 / double(n)),
                             A(m2 / double(n)));
      });
    }
  }
  for (int64_t c = 0; c < C; ++c) {  // over the batch, in order
    double s1 = 0, s2 = 0;
    for (int64_t b = 0; b < B; ++b) {
      s1 += S[(b * C + c) * 2];
      s2 += S[(b * C + c) * 2 + 1];
    }
    if (db) db[c] = T(s1);
    if (dw) dw[c] = T(s2);
  }
}

}  // namespace

int64_t group_norm_elu_workspace_elems(int64_t, int64_t, int64_t, int64_t, bool, Stream) {
  return 0;
}

Status group_norm_elu_forward(DType dt, const void* x, const void* weight, const void* bias,
                              void* y, void* mean, void* rstd, void*, int64_t B, int64_t C,
                              int64_t HW, int64_t G, double eps, double alpha, Stream) {
  if (G < 1 || C % G != 0) return Status::kInvalidShape;
  if (B == 0 || C == 0 || HW == 0) return Status::kOk;  // the caller fills the statistics
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccType<T>::type;
    forward<T>(static_cast<const T*>(x), static_cast<const T*>(weight),
               static_cast<const T*>(bias), static_cast<T*>(y), static_cast<A*>(mean),
               static_cast<A*>(rstd), B, C, HW, G, eps, alpha);
  });
}

Status group_norm_elu_backward(DType dt, const void* grad, const void* x, const void* weight,
                               const void* bias, const void* mean, const void* rstd,
                               void* grad_x, void* grad_weight, void* grad_bias, void*,
                               int64_t B, int64_t C, int64_t HW, int64_t G, double alpha,
                               Stream) {
  if (G < 1 || C % G != 0) return Status::kInvalidShape;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccType<T>::type;
    backward<T>(static_cast<const T*>(grad), static_cast<const T*>(x),
                static_cast<const T*>(weight), static_cast<const T*>(bias),
                static_cast<const A*>(mean), static_cast<const A*>(rstd), static_cast<T*>(grad_x),
                static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), B, C, HW, G, alpha);
  });
}

}  // namespace cpu
}  // namespace packops
