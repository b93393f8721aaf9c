// OpenMP reprojection-warp kernels; the per-pixel math is the shared
// csrc/include/packops/reproject.h (the CUDA kernels use the same functions).
//
// Forward: one target row per task; each pixel is projected once and all its
// channels sampled. Nothing but the output (and the optional mask) is written.
//
// Backward, deterministic by construction:
//  * depth and pose: one target row per task; the row's 12 pose-gradient sums
//    go to a [B*H, 12] buffer (double), summed per batch element in row order
//    afterwards, so the result does not depend on the thread count.
//  * image: one (batch, channel) plane per task, which owns its output plane:
//    the scatter of the bilinear weights needs no atomics, and each plane's
//    additions happen in pixel order. The projection is recomputed per plane
//    (a dozen flops against four scattered read-modify-writes). The caller
//    zero-fills the image gradient (the CUDA kernels accumulate with atomics).
#include "reproject.h"

#include "dispatch.h"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "packops/reproject.h"

namespace packops {
namespace cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

template <typename T>
void forward(const T* image, const T* depth, const T* P, bool border, T* out, T* mask, int64_t B,
             int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws) {
  const int64_t plane = Hs * Ws, HW = H * W;
#pragma omp parallel for collapse(2) schedule(static) if (B * HW * (C + 1) > kParallelGrain)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const T* Pb = P + b * 12;
      const T* img = image + b * C * plane;
      const int64_t row = h * W;
      for (int64_t w = 0; w < W; ++w) {
        const int64_t pix = row + w;
        const auto r = project<T>(Pb, depth[b * HW + pix], T(w), T(h));
        const auto sp = sample_point(r, Hs, Ws, border);
        Bilinear<T> s;
        const bool any = bilinear_setup(sp.x, sp.y, Hs, Ws, s);
        if (mask) mask[b * HW + pix] = any && inside(r.x, r.y, Hs, Ws) ? T(1) : T(0);
        T* o = out + b * C * HW + pix;
        if (!any) {
          const T e = empty_sample(r.x, r.y);
          for (int64_t c = 0; c < C; ++c) o[c * HW] = e;
          continue;
        }
        const int64_t i00 = s.y0 * Ws + s.x0;
        const T w00 = s.w00(), w01 = s.w01(), w10 = s.w10(), w11 = s.w11();
        if (s.in_x0 && s.in_x1 && s.in_y0 && s.in_y1) {  // the common case: no branches per tap
          for (int64_t c = 0; c < C; ++c) {
            const T* p = img + c * plane + i00;
            o[c * HW] = w00 * p[0] + w01 * p[1] + w10 * p[Ws] + w11 * p[Ws + 1];
          }
          continue;
        }
        for (int64_t c = 0; c < C; ++c) {
          const T* p = img + c * plane;
          T v = T(0);
          if (s.in_y0 && s.in_x0) v += w00 * p[i00];
          if (s.in_y0 && s.in_x1) v += w01 * p[i00 + 1];
          if (s.in_y1 && s.in_x0) v += w10 * p[i00 + Ws];
          if (s.in_y1 && s.in_x1) v += w11 * p[i00 + Ws + 1];
          o[c * HW] = v;
        }
      }
    }
  }
}

template <typename T>
void depth_pose_grads(const T* grad_out, const T* image, const T* depth, const T* P, bool border,
                      T* grad_depth, T* grad_P, int64_t B, int64_t C, int64_t H, int64_t W,
                      int64_t Hs, int64_t Ws) {
  using A = typename AccType<T>::type;
  const int64_t plane = Hs * Ws, HW = H * W;
  std::vector<double> rows(grad_P ? B * H * 12 : 0, 0.0);
#pragma omp parallel for collapse(2) schedule(static) if (B * HW * C > kParallelGrain)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const T* Pb = P + b * 12;
      const T* img = image + b * C * plane;
      const T* g = grad_out + b * C * HW;
      double acc[12] = {0};
      for (int64_t w = 0; w < W; ++w) {
        const int64_t pix = h * W + w;
        const T d = depth[b * HW + pix];
        const auto r = project<T>(Pb, d, T(w), T(h));
        const auto sp = sample_point(r, Hs, Ws, border);
        Bilinear<T> s;
        if (!bilinear_setup(sp.x, sp.y, Hs, Ws, s)) {
          if (grad_depth) grad_depth[b * HW + pix] = T(0);
          continue;
        }
        const int64_t i00 = s.y0 * Ws + s.x0;
        const bool k00 = s.in_y0 && s.in_x0, k01 = s.in_y0 && s.in_x1;
        const bool k10 = s.in_y1 && s.in_x0, k11 = s.in_y1 && s.in_x1;
        A gx = 0, gy = 0;
        const bool all_in = k00 && k11;  // then k01 and k10 hold too
        for (int64_t c = 0; c < C; ++c) {
          const T* p = img + c * plane;
          if (all_in) {
            const T* q = p + i00;
            const A v00 = q[0], v01 = q[1], v10 = q[Ws], v11 = q[Ws + 1];
            const A gc = g[c * HW + pix];
            gx += gc * ((v01 - v00) * (A(1) - s.fy) + (v11 - v10) * s.fy);
            gy += gc * ((v10 - v00) * (A(1) - s.fx) + (v11 - v01) * s.fx);
            continue;
          }
          const A v00 = k00 ? A(p[i00]) : A(0), v01 = k01 ? A(p[i00 + 1]) : A(0);
          const A v10 = k10 ? A(p[i00 + Ws]) : A(0), v11 = k11 ? A(p[i00 + Ws + 1]) : A(0);
          const A gc = g[c * HW + pix];
          gx += gc * ((v01 - v00) * (A(1) - s.fy) + (v11 - v10) * s.fy);
          gy += gc * ((v10 - v00) * (A(1) - s.fx) + (v11 - v01) * s.fx);
        }
        T dpx, dpy, dpz;
        grad_p<T>(r, T(gx) * sp.pass_x, T(gy) * sp.pass_y, dpx, dpy, dpz);
        if (grad_depth) grad_depth[b * HW + pix] = dpx * r.a0 + dpy * r.a1 + dpz * r.a2;
        if (grad_P) {
          const double dp[3] = {double(dpx), double(dpy), double(dpz)};
          const double q[3] = {double(d) * w, double(d) * h, double(d)};
          for (int i = 0; i < 3; ++i) {
            acc[i * 4 + 0] += dp[i] * q[0];
            acc[i * 4 + 1] += dp[i] * q[1];
            acc[i * 4 + 2] += dp[i] * q[2];
            acc[i * 4 + 3] += dp[i];
          }
        }
      }
      if (grad_P) std::copy(acc, acc + 12, rows.begin() + (b * H + h) * 12);
    }
  }
  if (!grad_P) return;
  for (int64_t b = 0; b < B; ++b) {
    double sum[12] = {0};
    for (int64_t h = 0; h < H; ++h)
      for (int k = 0; k < 12; ++k) sum[k] += rows[(b * H + h) * 12 + k];
    for (int k = 0; k < 12; ++k) grad_P[b * 12 + k] = T(sum[k]);
  }
}

// Scatters the gradient of channels [c0, c1) of batch element b into their
// planes, in pixel order; the caller gives each task planes of its own.
template <typename T>
void scatter_planes(const T* grad_out, const T* depth, const T* Pb, bool border, T* grad_image,
                    int64_t b, int64_t c0, int64_t c1, int64_t C, int64_t H, int64_t W, int64_t Hs,
                    int64_t Ws) {
  const int64_t plane = Hs * Ws, HW = H * W;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t w = 0; w < W; ++w) {
      const int64_t pix = h * W + w;
      const auto r = project<T>(Pb, depth[b * HW + pix], T(w), T(h));
      const auto sp = sample_point(r, Hs, Ws, border);
      Bilinear<T> s;
      if (!bilinear_setup(sp.x, sp.y, Hs, Ws, s)) continue;
      const int64_t i00 = s.y0 * Ws + s.x0;
      const T w00 = s.w00(), w01 = s.w01(), w10 = s.w10(), w11 = s.w11();
      const bool all_in = s.in_x0 && s.in_x1 && s.in_y0 && s.in_y1;
      for (int64_t c = c0; c < c1; ++c) {
        const T gc = grad_out[(b * C + c) * HW + pix];
        T* q = grad_image + (b * C + c) * plane + i00;
        if (all_in) {
          q[0] += gc * w00;
          q[1] += gc * w01;
          q[Ws] += gc * w10;
          q[Ws + 1] += gc * w11;
          continue;
        }
        if (s.in_y0 && s.in_x0) q[0] += gc * w00;
        if (s.in_y0 && s.in_x1) q[1] += gc * w01;
        if (s.in_y1 && s.in_x0) q[Ws] += gc * w10;
        if (s.in_y1 && s.in_x1) q[Ws + 1] += gc * w11;
      }
    }
  }
}

// One task per batch element (all its channels: the projection is computed
// once per pixel) when there are enough of them for the threads, else one per
// (batch, channel) plane. Either way each task owns its planes: no atomics,
// and the result does not depend on the thread count.
template <typename T>
void image_grad(const T* grad_out, const T* depth, const T* P, bool border, T* grad_image,
                int64_t B, int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws) {
  const bool big = B * C * H * W > kParallelGrain;
#ifdef _OPENMP
  const bool per_batch = B >= omp_get_max_threads();
#else
  const bool per_batch = true;
#endif
  if (per_batch) {
#pragma omp parallel for schedule(static) if (big)
    for (int64_t b = 0; b < B; ++b)
      scatter_planes(grad_out, depth, P + b * 12, border, grad_image, b, 0, C, C, H, W, Hs, Ws);
  } else {
#pragma omp parallel for schedule(static) if (big)
    for (int64_t bc = 0; bc < B * C; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      scatter_planes(grad_out, depth, P + b * 12, border, grad_image, b, c, c + 1, C, H, W, Hs,
                     Ws);
    }
  }
}

template <typename T>
void backward(const T* grad_out, const T* image, const T* depth, const T* P, bool border,
              T* grad_image, T* grad_depth, T* grad_P, int64_t B, int64_t C, int64_t H, int64_t W,
              int64_t Hs, int64_t Ws) {
  if (grad_depth || grad_P)
    depth_pose_grads(grad_out, image, depth, P, border, grad_depth, grad_P, B, C, H, W, Hs, Ws);
  if (grad_image) image_grad(grad_out, depth, P, border, grad_image, B, C, H, W, Hs, Ws);
}

// P [B,12] of batch element b's cameras (the CUDA kernels fold per thread).
template <typename T>
std::vector<T> fold_all(const GeometryArgs& geo, int64_t B) {
  const T *K = static_cast<const T*>(geo.K), *Tm = static_cast<const T*>(geo.T),
          *Ks = static_cast<const T*>(geo.Ks);
  std::vector<T> P(B * 12);
  for (int64_t b = 0; b < B; ++b)
    fold(K + b * geo.k_stride, Tm + b * geo.t_stride, Ks + b * geo.ks_stride, P.data() + b * 12);
  return P;
}

}  // namespace

int64_t reproject_blocks(int64_t, int64_t, Stream) { return 0; }

Status reproject_forward(DType dt, const void* image, const void* depth, GeometryArgs geo,
                         bool border, void* out, void* mask, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t Hs, int64_t Ws, Stream) {
  if (B == 0 || H == 0 || W == 0) return Status::kOk;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::vector<T> P = fold_all<T>(geo, B);
    forward<T>(static_cast<const T*>(image), static_cast<const T*>(depth), P.data(), border,
               static_cast<T*>(out), static_cast<T*>(mask), B, C, H, W, Hs, Ws);
  });
}

Status reproject_backward(DType dt, const void* grad_out, const void* image, const void* depth,
                          GeometryArgs geo, bool border, void* grad_image, void* grad_depth, void*,
                          void* grad_K, void* grad_T, int64_t t_rows, void* grad_Ks, int64_t B,
                          int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws, Stream) {
  if (t_rows != 3 && t_rows != 4) return Status::kInvalidShape;
  const bool need_pose = grad_K != nullptr || grad_T != nullptr || grad_Ks != nullptr;
  if (B == 0 || (grad_image == nullptr && grad_depth == nullptr && !need_pose)) return Status::kOk;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::vector<T> P = fold_all<T>(geo, B);
    std::vector<T> dP(need_pose ? B * 12 : 0, T(0));  // stays 0 when there are no pixels
    if (H * W > 0)
      backward<T>(static_cast<const T*>(grad_out), static_cast<const T*>(image),
                  static_cast<const T*>(depth), P.data(), border, static_cast<T*>(grad_image),
                  static_cast<T*>(grad_depth), need_pose ? dP.data() : nullptr, B, C, H, W, Hs,
                  Ws);
    if (!need_pose) return;
    const T *K = static_cast<const T*>(geo.K), *Tm = static_cast<const T*>(geo.T),
            *Ks = static_cast<const T*>(geo.Ks);
    for (int64_t b = 0; b < B; ++b) {
      T dK[9], dT[12], dKs[9];
      unfold_grad(K + b * geo.k_stride, Tm + b * geo.t_stride, Ks + b * geo.ks_stride,
                  dP.data() + b * 12, dK, dT, dKs);
      if (grad_K) std::copy(dK, dK + 9, static_cast<T*>(grad_K) + b * 9);
      if (grad_Ks) std::copy(dKs, dKs + 9, static_cast<T*>(grad_Ks) + b * 9);
      if (grad_T) std::copy(dT, dT + 12, static_cast<T*>(grad_T) + b * t_rows * 4);
    }
  });
}

}  // namespace cpu
}  // namespace packops
