// CUDA kernels of ssim() and photometric_loss(), forward and backward.
//
// Each op is one fused pass: a block stages a reflected halo tile of both
// inputs in shared memory, channel by channel, and computes everything from
// there, so no intermediate map (moments, SSIM, coefficient maps) ever goes
// through global memory. The per-pixel math lives in packops/ssim.h and is
// shared with the CPU kernels; this file only does tiling and indexing.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cstdint>

#include "element.cuh"
#include "packops/ssim.h"
#include "photometric.h"

namespace packops {
namespace cuda {
namespace {

// ===========================================================================
// Tiling constants
// ===========================================================================
// One block covers a TH x TW output tile with one thread per output pixel. A
// warp spans one tile row, so the row-wise global reads and writes coalesce.
constexpr int TW = 32;
constexpr int TH = 8;
constexpr int NT = TW * TH;
// gridDim.y / gridDim.z limit; larger extents are covered by grid-stride loops.
constexpr int64_t kMaxGridYZ = 65535;
// Keeps every padded coordinate (tile origin - 2 ... + TH + 2) and the tile
// count comfortably inside int.
constexpr int64_t kMaxDim = int64_t(1) << 30;

// |v| that keeps NaN (a compare-based version would too, but this is one op).
__device__ __forceinline__ float abs_acc(float v) { return fabsf(v); }
__device__ __forceinline__ double abs_acc(double v) { return fabs(v); }

// ===========================================================================
// Shared-memory staging
// ===========================================================================
// Source index of padded coordinate i along an axis of length n. reflect1 is
// exact on [-1, n], which covers every tap of every in-image window. Other
// positions (past the edge of a partial tile, or the second halo ring the
// backward loads for windows centred just outside the image) are read by no
// in-image window; the clamp only keeps their loads inside the plane.
__device__ __forceinline__ int src_index(int i, int n) {
  const int r = reflect1(i, n);
  return r < 0 ? 0 : (r >= n ? n - 1 : r);
}

// Loads the R x S region of one x/y plane pair whose top-left padded
// coordinate is (r0, c0). Consecutive threads take consecutive columns so the
// global reads coalesce along rows.
template <int R, int S, typename T, typename A>
__device__ __forceinline__ void load_pair(A (*sx)[S], A (*sy)[S], const T* __restrict__ x,
                                          const T* __restrict__ y, int64_t plane, int r0, int c0,
                                          int H, int W) {
  const int tid = threadIdx.y * TW + threadIdx.x;
  for (int k = tid; k < R * S; k += NT) {
    const int i = k / S, j = k % S;
    const int64_t off = plane + static_cast<int64_t>(src_index(r0 + i, H)) * W + src_index(c0 + j, W);
    sx[i][j] = to_acc(x[off]);
    sy[i][j] = to_acc(y[off]);
  }
}

// The five 3x3 window means of the window whose top-left tap is (i, j) in the
// staged tile. Mean = sum / 9, as avg_pool2d computes it.
template <typename A, int S>
__device__ __forceinline__ SsimMoments<A> window_moments(A (*sx)[S], A (*sy)[S], int i, int j) {
  A s_x = A(0), s_y = A(0), s_xx = A(0), s_yy = A(0), s_xy = A(0);
#pragma unroll
  for (int dy = 0; dy < 3; ++dy) {
#pragma unroll
    for (int dx = 0; dx < 3; ++dx) {
      const A a = sx[i + dy][j + dx];
      const A b = sy[i + dy][j + dx];
      s_x += a;
      s_y += b;
      s_xx += a * a;
      s_yy += b * b;
      s_xy += a * b;
    }
  }
  SsimMoments<A> m;
  m.mx = s_x / A(9);
  m.my = s_y / A(9);
  m.exx = s_xx / A(9);
  m.eyy = s_yy / A(9);
  m.exy = s_xy / A(9);
  return m;
}

// ===========================================================================
// Forward: ssim (PHOTO = false) and photometric loss (PHOTO = true)
// ===========================================================================
// Per channel the tile plus a one-pixel reflected halo is staged; each thread
// then reads its window from shared memory. The photometric loss keeps its
// channel sum in a register and writes a single [B,1,H,W] value per pixel.
template <typename T, bool PHOTO>
__global__ void __launch_bounds__(NT)
forward_kernel(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ out,
               int64_t B, int64_t C, int H, int W, int tiles_h,
               typename AccType<T>::type C1, typename AccType<T>::type C2,
               typename AccType<T>::type alpha) {
  using A = typename AccType<T>::type;
  __shared__ A sx[TH + 2][TW + 2];
  __shared__ A sy[TH + 2][TW + 2];

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int w0 = blockIdx.x * TW;
  const int qw = w0 + tx;
  const int64_t HW = static_cast<int64_t>(H) * W;

  // Both loops are uniform across the block, so the barriers inside are safe.
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int t = blockIdx.y; t < tiles_h; t += gridDim.y) {
      const int h0 = t * TH;
      const int qh = h0 + ty;
      const bool inside = qh < H && qw < W;
      const int64_t pix = static_cast<int64_t>(qh) * W + qw;
      A acc = A(0);

      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * HW;
        // Tile origin shifted by -1: pixel (ty, tx) has its window at (ty, tx).
        load_pair<TH + 2, TW + 2>(sx, sy, x, y, plane, h0 - 1, w0 - 1, H, W);
        __syncthreads();
        if (inside) {
          const A s = ssim_value(window_moments(sx, sy, ty, tx), C1, C2);
          if constexpr (PHOTO) {
            const A d = sx[ty + 1][tx + 1] - sy[ty + 1][tx + 1];
            acc += alpha * photo_ssim_term(s) + (A(1) - alpha) * abs_acc(d);
          } else {
            store(out + plane + pix, s);
          }
        }
        // The next channel overwrites the tile other threads may still read.
        __syncthreads();
      }
      if constexpr (PHOTO) {
        if (inside) store(out + b * HW + pix, acc / A(C));
      }
    }
  }
}

// ===========================================================================
// Backward: ssim (PHOTO = false) and photometric loss (PHOTO = true)
// ===========================================================================
// dL/dx_q gathers from the nine windows centred at q + (oh, ow), weighted by
// adjoint_weight (ssim.h). A TH x TW output tile therefore needs the
// coefficient maps of the (TH+2) x (TW+2) centres around it, and those
// windows need the (TH+4) x (TW+4) input region around the tile. Per channel:
//   1. stage the input region (origin -2),
//   2. compute the four coefficient maps for all centres (origin -1) into
//      shared memory, zero for centres outside the image,
//   3. gather the weighted 3x3 sums per output pixel and write the grads.
// The centre ring recomputes (TH+2)(TW+2)/(TH*TW) = 1.33x the windows, in
// exchange for no global round trip of the coefficient maps.
template <typename T, bool PHOTO>
__global__ void __launch_bounds__(NT)
backward_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ y,
                T* __restrict__ gx, T* __restrict__ gy,
                int64_t B, int64_t C, int H, int W, int tiles_h,
                typename AccType<T>::type C1, typename AccType<T>::type C2,
                typename AccType<T>::type alpha) {
  using A = typename AccType<T>::type;
  constexpr int CR = TH + 2, CS = TW + 2;  // centre region
  __shared__ A sx[TH + 4][TW + 4];
  __shared__ A sy[TH + 4][TW + 4];
  __shared__ A c_mx[CR][CS];
  __shared__ A c_my[CR][CS];
  __shared__ A c_e2[CR][CS];
  __shared__ A c_exy[CR][CS];
  // Photometric upstream grad is [B,1,H,W]: staged once per tile for the
  // centre region and shared by all channels. Unused (1 element) for ssim.
  __shared__ A sg[PHOTO ? CR : 1][PHOTO ? CS : 1];

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * TW + tx;
  const int w0 = blockIdx.x * TW;
  const int qw = w0 + tx;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const bool want_x = gx != nullptr, want_y = gy != nullptr;

  // Column adjoint weights depend only on qw.
  int ww[3];
#pragma unroll
  for (int o = 0; o < 3; ++o) ww[o] = adjoint_weight(qw, o - 1, W);

  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int t = blockIdx.y; t < tiles_h; t += gridDim.y) {
      const int h0 = t * TH;
      const int qh = h0 + ty;
      const bool inside = qh < H && qw < W;
      const int64_t pix = static_cast<int64_t>(qh) * W + qw;
      int wh[3];
#pragma unroll
      for (int o = 0; o < 3; ++o) wh[o] = adjoint_weight(qh, o - 1, H);

      if constexpr (PHOTO) {
        // Safe without a barrier here: the previous tile's last reader of sg
        // finished before its trailing __syncthreads, and the first reader
        // below comes after the channel loop's first barrier.
        for (int k = tid; k < CR * CS; k += NT) {
          const int ph = h0 - 1 + k / CS, pw = w0 - 1 + k % CS;
          const bool in = ph >= 0 && ph < H && pw >= 0 && pw < W;
          sg[k / CS][k % CS] = in ? to_acc(g[b * HW + static_cast<int64_t>(ph) * W + pw]) : A(0);
        }
      }

      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * HW;

        // --- 1. input region, origin (h0 - 2, w0 - 2) -------------------
        load_pair<TH + 4, TW + 4>(sx, sy, x, y, plane, h0 - 2, w0 - 2, H, W);
        __syncthreads();

        // --- 2. coefficient maps, centre (i, j) is pixel (h0-1+i, w0-1+j) -
        // Its window's top-left tap (h0-2+i, w0-2+j) is input-tile (i, j).
        for (int k = tid; k < CR * CS; k += NT) {
          const int i = k / CS, j = k % CS;
          const int ph = h0 - 1 + i, pw = w0 - 1 + j;
          SsimGrad<A> d{};
          if (ph >= 0 && ph < H && pw >= 0 && pw < W) {
            const SsimMoments<A> m = window_moments(sx, sy, i, j);
            A gs;
            if constexpr (PHOTO) {
              gs = photo_ssim_grad(ssim_value(m, C1, C2), sg[i][j] * alpha / A(C));
            } else {
              gs = to_acc(g[plane + static_cast<int64_t>(ph) * W + pw]);
            }
            d = ssim_backward(m, C1, C2, gs);
          }
          if (want_x) c_mx[i][j] = d.d_mx;
          if (want_y) c_my[i][j] = d.d_my;
          c_e2[i][j] = d.d_e2;
          c_exy[i][j] = d.d_exy;
        }
        __syncthreads();

        // --- 3. gather: centre q + (o-1) sits at coefficient (ty+o, tx+o') -
        if (inside) {
          A s_mx = A(0), s_my = A(0), s_e2 = A(0), s_exy = A(0);
#pragma unroll
          for (int oh = 0; oh < 3; ++oh) {
#pragma unroll
            for (int ow = 0; ow < 3; ++ow) {
              const A w = A(wh[oh] * ww[ow]);
              const int i = ty + oh, j = tx + ow;
              if (want_x) s_mx += w * c_mx[i][j];
              if (want_y) s_my += w * c_my[i][j];
              s_e2 += w * c_e2[i][j];
              s_exy += w * c_exy[i][j];
            }
          }
          const A xq = sx[ty + 2][tx + 2], yq = sy[ty + 2][tx + 2];
          A l1 = A(0);
          if constexpr (PHOTO) {
            l1 = sg[ty + 1][tx + 1] * (A(1) - alpha) / A(C) * sign0(xq - yq);
          }
          if (want_x) {
            A v = (s_mx + A(2) * xq * s_e2 + yq * s_exy) / A(9);
            if constexpr (PHOTO) v += l1;
            store(gx + plane + pix, v);
          }
          if (want_y) {
            A v = (s_my + A(2) * yq * s_e2 + xq * s_exy) / A(9);
            if constexpr (PHOTO) v -= l1;
            store(gy + plane + pix, v);
          }
        }
        // The next channel overwrites the input tile and coefficient maps.
        __syncthreads();
      }
    }
  }
}

// ===========================================================================
// Launch helpers
// ===========================================================================
// Grid over (column tiles, row tiles, batch). Returns false for shapes the
// kernels do not support (negative or too large extents).
bool make_grid(int64_t B, int64_t C, int64_t H, int64_t W, dim3* grid, int* tiles_h) {
  if (B < 0 || C < 0 || H < 0 || W < 0 || H > kMaxDim || W > kMaxDim) return false;
  const int64_t th = (H + TH - 1) / TH;
  const int64_t tw = (W + TW - 1) / TW;
  *tiles_h = static_cast<int>(th);
  *grid = dim3(static_cast<unsigned>(tw), static_cast<unsigned>(th < kMaxGridYZ ? th : kMaxGridYZ),
               static_cast<unsigned>(B < kMaxGridYZ ? B : kMaxGridYZ));
  return true;
}

bool is_empty(int64_t B, int64_t C, int64_t H, int64_t W) {
  return B == 0 || C == 0 || H == 0 || W == 0;
}

template <typename T, bool PHOTO>
cudaError_t launch_forward(const void* x, const void* y, void* out, int64_t B, int64_t C,
                           int64_t H, int64_t W, double alpha, double C1, double C2,
                           cudaStream_t stream) {
  using A = typename AccType<T>::type;
  dim3 grid;
  int tiles_h = 0;
  if (!make_grid(B, C, H, W, &grid, &tiles_h)) return cudaErrorInvalidValue;
  if (is_empty(B, C, H, W)) return cudaSuccess;
  forward_kernel<T, PHOTO><<<grid, dim3(TW, TH), 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(out), B, C,
      static_cast<int>(H), static_cast<int>(W), tiles_h, static_cast<A>(C1),
      static_cast<A>(C2), static_cast<A>(alpha));
  return cudaGetLastError();
}

template <typename T, bool PHOTO>
cudaError_t launch_backward(const void* g, const void* x, const void* y, void* gx, void* gy,
                            int64_t B, int64_t C, int64_t H, int64_t W, double alpha,
                            double C1, double C2, cudaStream_t stream) {
  using A = typename AccType<T>::type;
  dim3 grid;
  int tiles_h = 0;
  if (!make_grid(B, C, H, W, &grid, &tiles_h)) return cudaErrorInvalidValue;
  // Nothing requested is nothing to do.
  if (is_empty(B, C, H, W) || (gx == nullptr && gy == nullptr)) return cudaSuccess;
  backward_kernel<T, PHOTO><<<grid, dim3(TW, TH), 0, stream>>>(
      static_cast<const T*>(g), static_cast<const T*>(x), static_cast<const T*>(y),
      static_cast<T*>(gx), static_cast<T*>(gy), B, C, static_cast<int>(H), static_cast<int>(W),
      tiles_h, static_cast<A>(C1), static_cast<A>(C2), static_cast<A>(alpha));
  return cudaGetLastError();
}

}  // namespace

// ===========================================================================
// Public launchers (photometric.h)
// ===========================================================================
cudaError_t photometric_forward(DType dt, bool photo, const void* x, const void* y, void* out,
                                int64_t B, int64_t C, int64_t H, int64_t W, double alpha,
                                double C1, double C2, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return photo ? launch_forward<T, true>(x, y, out, B, C, H, W, alpha, C1, C2, stream)
                 : launch_forward<T, false>(x, y, out, B, C, H, W, 0.0, C1, C2, stream);
  });
}

cudaError_t photometric_backward(DType dt, bool photo, const void* grad, const void* x,
                                 const void* y, void* grad_x, void* grad_y, int64_t B, int64_t C,
                                 int64_t H, int64_t W, double alpha, double C1, double C2,
                                 Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return photo ? launch_backward<T, true>(grad, x, y, grad_x, grad_y, B, C, H, W, alpha, C1,
                                            C2, stream)
                 : launch_backward<T, false>(grad, x, y, grad_x, grad_y, B, C, H, W, 0.0, C1, C2,
                                             stream);
  });
}

}  // namespace cuda
}  // namespace packops
