// OpenMP SSIM / photometric-loss kernels. The per-pixel math is the shared
// csrc/include/packops/ssim.h (the CUDA kernels use the same functions), so
// the CPU tests exercise it.
//
// Forward: one pass, one output row per task; the 3x3 window sums are split
// into a vertical pass (three reflected rows -> five row buffers) and a
// horizontal pass, so each input element is read three times from cache.
//
// Backward: one pass over bands of rows. For a band, the four SSIM coefficient
// rows (ssim.h: d_mx, d_my, d_e2, d_exy) of every window centre the band needs
// (the band plus one halo row each side) are computed, immediately box-summed
// horizontally with the reflection adjoint weights into a small per-thread
// buffer, and then box-summed vertically into the output gradients. Nothing
// the size of the image is ever stored; the halo rows are recomputed by the
// neighbouring band (2 / kBandRows extra work).
#include "photometric.h"

#include "dispatch.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "packops/ssim.h"

namespace packops {
namespace cpu {
namespace {

constexpr int64_t kBandRows = 32;
// Below this many output elements, threads cost more than they save.
constexpr int64_t kParallelGrain = 1 << 14;

// The five vertical window sums of one centre row: buffers of W each.
template <typename A> struct ColumnSums {
  std::vector<A> x, y, xx, yy, xy;
  explicit ColumnSums(int64_t W) : x(W), y(W), xx(W), yy(W), xy(W) {}

  // Rows r0, r1, r2 of the x / y planes (r0 and r2 already reflected).
  template <typename T>
  void fill(const T* xp, const T* yp, int64_t r0, int64_t r1, int64_t r2, int64_t W) {
    const T *x0 = xp + r0 * W, *x1 = xp + r1 * W, *x2 = xp + r2 * W;
    const T *y0 = yp + r0 * W, *y1 = yp + r1 * W, *y2 = yp + r2 * W;
    for (int64_t w = 0; w < W; ++w) {
      const A a0 = x0[w], a1 = x1[w], a2 = x2[w];
      const A b0 = y0[w], b1 = y1[w], b2 = y2[w];
      x[w] = a0 + a1 + a2;
      y[w] = b0 + b1 + b2;
      xx[w] = a0 * a0 + a1 * a1 + a2 * a2;
      yy[w] = b0 * b0 + b1 * b1 + b2 * b2;
      xy[w] = a0 * b0 + a1 * b1 + a2 * b2;
    }
  }

  // Window moments of centre column w, whose reflected neighbours are wl, wr.
  SsimMoments<A> moments(int64_t wl, int64_t w, int64_t wr) const {
    const A k = A(1) / A(9);
    return {(x[wl] + x[w] + x[wr]) * k, (y[wl] + y[w] + y[wr]) * k,
            (xx[wl] + xx[w] + xx[wr]) * k, (yy[wl] + yy[w] + yy[wr]) * k,
            (xy[wl] + xy[w] + xy[wr]) * k};
  }
};

// Calls f(wl, w, wr) for every column with reflected neighbours; the interior
// loop has no branches so the compiler can vectorise it.
template <typename F> inline void for_each_column(int64_t W, F&& f) {
  f(int64_t(1), int64_t(0), int64_t(1));
  for (int64_t w = 1; w < W - 1; ++w) f(w - 1, w, w + 1);
  f(W - 2, W - 1, W - 2);
}

// out[q] = sum_o adjoint_weight(q, o, W) * in[q + o], skipping zero weights so
// that a NaN centre outside the image can never leak into the sum.
template <typename A> inline void adjoint_box_row(const A* in, A* out, int64_t W) {
  auto general = [&](int64_t q) {
    A s = 0;
    for (int o = -1; o <= 1; ++o) {
      const int wgt = adjoint_weight(int(q), o, int(W));
      if (wgt) s += A(wgt) * in[q + o];
    }
    out[q] = s;
  };
  const int64_t lo = std::min<int64_t>(2, W), hi = std::max<int64_t>(W - 2, lo);
  for (int64_t q = 0; q < lo; ++q) general(q);
  for (int64_t q = lo; q < hi; ++q) out[q] = in[q - 1] + in[q] + in[q + 1];
  for (int64_t q = hi; q < W; ++q) general(q);
}

// ---------------------------------------------------------------- forward
template <typename T, bool PHOTO>
void forward(const T* x, const T* y, T* out, int64_t B, int64_t C, int64_t H, int64_t W,
             double alpha_d, double C1_d, double C2_d) {
  using A = typename AccType<T>::type;
  const A alpha = A(alpha_d), C1 = A(C1_d), C2 = A(C2_d);
  const A inv_c = A(1) / A(C);
  const int64_t plane = H * W;
#pragma omp parallel if (B * C * plane > kParallelGrain)
  {
    ColumnSums<A> cs(W);
    std::vector<A> acc(PHOTO ? W : 0);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      run_vectorized_nofma([&] {
        const int64_t b = bh / H, h = bh % H;
        const int64_t r0 = reflect1(int(h - 1), int(H)), r2 = reflect1(int(h + 1), int(H));
        if (PHOTO) std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t c = 0; c < C; ++c) {
          const int64_t base = (b * C + c) * plane;
          const T* xp = x + base;
          const T* yp = y + base;
          cs.fill(xp, yp, r0, h, r2, W);
          const T* xr = xp + h * W;
          const T* yr = yp + h * W;
          T* orow = out + base + h * W;
          for_each_column(W, [&](int64_t wl, int64_t w, int64_t wr) {
            const A s = ssim_value(cs.moments(wl, w, wr), C1, C2);
            if (PHOTO) {
              const A l1 = std::abs(A(xr[w]) - A(yr[w]));
              acc[w] += alpha * photo_ssim_term(s) + (A(1) - alpha) * l1;
            } else {
              orow[w] = T(s);
            }
          });
        }
        if (PHOTO) {
          T* orow = out + b * plane + h * W;
          for (int64_t w = 0; w < W; ++w) orow[w] = T(acc[w] * inv_c);
        }
      });
    }
  }
}

// --------------------------------------------------------------- backward
template <typename T, bool PHOTO>
void backward(const T* grad, const T* x, const T* y, T* gx, T* gy, int64_t B, int64_t C,
              int64_t H, int64_t W, double alpha_d, double C1_d, double C2_d) {
  using A = typename AccType<T>::type;
  const A alpha = A(alpha_d), C1 = A(C1_d), C2 = A(C2_d);
  const A inv_c = A(1) / A(C), ninth = A(1) / A(9);
  const int64_t plane = H * W;
  const int64_t nbands = (H + kBandRows - 1) / kBandRows;
  const int64_t max_rows = std::min<int64_t>(kBandRows + 2, H);
#pragma omp parallel if (B * C * plane > kParallelGrain)
  {
    ColumnSums<A> cs(W);
    std::vector<A> coef(4 * W);             // one centre row of coefficients
    std::vector<A> hsum(4 * max_rows * W);  // the band's rows, summed horizontally
    std::vector<A> svec(4 * W);             // one output row's full adjoint sums
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * nbands; ++task) {
      run_vectorized_nofma([&] {
        const int64_t b = task / nbands;
        const int64_t q0 = (task % nbands) * kBandRows, q1 = std::min(q0 + kBandRows, H);
        const int64_t p0 = std::max<int64_t>(q0 - 1, 0), p1 = std::min(q1 + 1, H);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t base = (b * C + c) * plane;
          const T* xp = x + base;
          const T* yp = y + base;
          const T* gp = PHOTO ? grad + b * plane : grad + base;

          // ---- coefficients of the window centres p0..p1-1, summed horizontally
          for (int64_t p = p0; p < p1; ++p) {
            cs.fill(xp, yp, reflect1(int(p - 1), int(H)), p, reflect1(int(p + 1), int(H)), W);
            const T* grow = gp + p * W;
            A *c_mx = coef.data(), *c_my = c_mx + W, *c_e2 = c_my + W, *c_xy = c_e2 + W;
            for_each_column(W, [&](int64_t wl, int64_t w, int64_t wr) {
              const SsimMoments<A> m = cs.moments(wl, w, wr);
              A gs;
              if (PHOTO) {
                gs = photo_ssim_grad(ssim_value(m, C1, C2), A(grow[w]) * alpha * inv_c);
              } else {
                gs = A(grow[w]);
              }
              const SsimGrad<A> g = ssim_backward(m, C1, C2, gs);
              c_mx[w] = g.d_mx;
              c_my[w] = g.d_my;
              c_e2[w] = g.d_e2;
              c_xy[w] = g.d_exy;
            });
            for (int k = 0; k < 4; ++k)
              adjoint_box_row(coef.data() + k * W, hsum.data() + (k * max_rows + p - p0) * W, W);
          }

          // ---- vertical adjoint sum and the gradient formula, per output row
          for (int64_t q = q0; q < q1; ++q) {
            // S_k(q) = sum of the non-zero-weighted horizontal sums of rows q-1..q+1
            for (int k = 0; k < 4; ++k) {
              A* s = svec.data() + k * W;
              std::fill(s, s + W, A(0));
              for (int o = -1; o <= 1; ++o) {
                const int wgt = adjoint_weight(int(q), o, int(H));
                if (!wgt) continue;
                const A* row = hsum.data() + (k * max_rows + q + o - p0) * W;
                for (int64_t w = 0; w < W; ++w) s[w] += A(wgt) * row[w];
              }
            }
            const A *s_mx = svec.data(), *s_my = s_mx + W, *s_e2 = s_my + W, *s_xy = s_e2 + W;
            const T* xr = xp + q * W;
            const T* yr = yp + q * W;
            const T* grow = gp + q * W;
            const A l1_scale = (A(1) - alpha) * inv_c;
            if (gx) {
              T* out = gx + base + q * W;
              for (int64_t w = 0; w < W; ++w) {
                const A xv = xr[w], yv = yr[w];
                const A l1 = PHOTO ? A(grow[w]) * l1_scale * sign0(xv - yv) : A(0);
                out[w] = T((s_mx[w] + A(2) * xv * s_e2[w] + yv * s_xy[w]) * ninth + l1);
              }
            }
            if (gy) {
              T* out = gy + base + q * W;
              for (int64_t w = 0; w < W; ++w) {
                const A xv = xr[w], yv = yr[w];
                const A l1 = PHOTO ? A(grow[w]) * l1_scale * sign0(xv - yv) : A(0);
                out[w] = T((s_my[w] + A(2) * yv * s_e2[w] + xv * s_xy[w]) * ninth - l1);
              }
            }
          }
        }
      });
    }
  }
}

}  // namespace

Status photometric_forward(DType dt, bool photo, const void* x, const void* y, void* out,
                           int64_t B, int64_t C, int64_t H, int64_t W, double alpha, double C1,
                           double C2, Stream) {
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *xp = static_cast<const T*>(x), *yp = static_cast<const T*>(y);
    if (photo)
      forward<T, true>(xp, yp, static_cast<T*>(out), B, C, H, W, alpha, C1, C2);
    else
      forward<T, false>(xp, yp, static_cast<T*>(out), B, C, H, W, 0.0, C1, C2);
  });
}

Status photometric_backward(DType dt, bool photo, const void* grad, const void* x, const void* y,
                            void* grad_x, void* grad_y, int64_t B, int64_t C, int64_t H,
                            int64_t W, double alpha, double C1, double C2, Stream) {
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *gp = static_cast<const T*>(grad), *xp = static_cast<const T*>(x),
            *yp = static_cast<const T*>(y);
    T *gx = static_cast<T*>(grad_x), *gy = static_cast<T*>(grad_y);
    if (photo)
      backward<T, true>(gp, xp, yp, gx, gy, B, C, H, W, alpha, C1, C2);
    else
      backward<T, false>(gp, xp, yp, gx, gy, B, C, H, W, 0.0, C1, C2);
  });
}

}  // namespace cpu
}  // namespace packops
