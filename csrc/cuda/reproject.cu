// CUDA kernels of reproject(): one thread per target pixel, forward and
// backward, all in one launch each. The per-pixel math is
// packops/reproject.h, shared with the CPU kernels; this file does indexing,
// the image-gradient scatter and the per-block pose-gradient reduction.
//
// The 3x4 projection P = K_src [R K^-1 | t] is folded per thread from the
// camera matrices (a few dozen flops, broadcast loads), so a call is one launch
// forward and two backward, with no host-side matrix work. Backward: the pose
// gradient is reduced in registers and shared memory to one partial sum per
// block ([B, blocks, 12]); a second kernel sums those in a fixed order and
// applies the chain rule to K, T and K_src, so it is deterministic. The image gradient is a scatter of bilinear
// weights: float (double) atomics into an accumulator the caller zero-fills.
// Neighbouring target pixels land on neighbouring source pixels, so each
// source pixel takes only a handful of additions and the atomics resolve in
// L2 without serialising on hot addresses; the branch is skipped entirely
// when the image needs no gradient (the training case).
#include <cstdint>

#include "element.cuh"
#include "packops/reproject.h"
#include "reproject.h"

namespace packops {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGridY = 65535;

template <typename G> struct Geometry {
  const G* K;
  const G* T;
  const G* Ks;
  int64_t k_stride, t_stride, ks_stride;

  __device__ __forceinline__ void projection(int64_t b, G* P) const {
    fold(K + b * k_stride, T + b * t_stride, Ks + b * ks_stride, P);
  }
};

template <typename G> Geometry<G> typed(const GeometryArgs& g) {
  return {static_cast<const G*>(g.K), static_cast<const G*>(g.T), static_cast<const G*>(g.Ks),
          g.k_stride, g.t_stride, g.ks_stride};
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ image, const typename AccType<T>::type* __restrict__ depth,
               Geometry<typename AccType<T>::type> geo, bool border, T* __restrict__ out,
               T* __restrict__ mask, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Hs,
               int64_t Ws) {
  using G = typename AccType<T>::type;
  const int64_t HW = H * W, plane = Hs * Ws;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (pix >= HW) return;
  const G u = static_cast<G>(pix % W), v = static_cast<G>(pix / W);
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    G P[12];
    geo.projection(b, P);
    const auto r = project<G>(P, depth[b * HW + pix], u, v);
    const auto sp = sample_point(r, Hs, Ws, border);
    Bilinear<G> s;
    const bool any = bilinear_setup(sp.x, sp.y, Hs, Ws, s);
    if (mask) store(mask + b * HW + pix, G(any && inside(r.x, r.y, Hs, Ws) ? 1 : 0));
    T* o = out + b * C * HW + pix;
    if (!any) {
      const G e = empty_sample(r.x, r.y);
      for (int64_t c = 0; c < C; ++c) store(o + c * HW, e);
      continue;
    }
    const T* img = image + b * C * plane + s.y0 * Ws + s.x0;
    const bool k00 = s.in_y0 && s.in_x0, k01 = s.in_y0 && s.in_x1;
    const bool k10 = s.in_y1 && s.in_x0, k11 = s.in_y1 && s.in_x1;
    const G w00 = s.w00(), w01 = s.w01(), w10 = s.w10(), w11 = s.w11();
    for (int64_t c = 0; c < C; ++c) {
      const T* p = img + c * plane;
      G acc = G(0);
      if (k00) acc += w00 * to_acc(p[0]);
      if (k01) acc += w01 * to_acc(p[1]);
      if (k10) acc += w10 * to_acc(p[Ws]);
      if (k11) acc += w11 * to_acc(p[Ws + 1]);
      store(o + c * HW, acc);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ image,
                const typename AccType<T>::type* __restrict__ depth,
                Geometry<typename AccType<T>::type> geo, bool border,
                typename AccType<T>::type* __restrict__ grad_image,
                typename AccType<T>::type* __restrict__ grad_depth,
                typename AccType<T>::type* __restrict__ grad_P, int64_t B, int64_t C, int64_t H,
                int64_t W, int64_t Hs, int64_t Ws) {
  using G = typename AccType<T>::type;
  __shared__ G partial[kWarps][12];
  const int64_t HW = H * W, plane = Hs * Ws;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool need_geometry = grad_depth != nullptr || grad_P != nullptr;
  const G u = static_cast<G>(pix % W), v = static_cast<G>(pix / W);
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    G acc[12];
#pragma unroll
    for (int k = 0; k < 12; ++k) acc[k] = G(0);
    if (pix < HW) {
      const G d = depth[b * HW + pix];
      G P[12];
      geo.projection(b, P);
      const auto r = project<G>(P, d, u, v);
      const auto sp = sample_point(r, Hs, Ws, border);
      Bilinear<G> s;
      G gx = G(0), gy = G(0);
      const bool any = bilinear_setup(sp.x, sp.y, Hs, Ws, s);
      if (any) {
        const int64_t i00 = s.y0 * Ws + s.x0;
        const bool k00 = s.in_y0 && s.in_x0, k01 = s.in_y0 && s.in_x1;
        const bool k10 = s.in_y1 && s.in_x0, k11 = s.in_y1 && s.in_x1;
        const G w00 = s.w00(), w01 = s.w01(), w10 = s.w10(), w11 = s.w11();
        for (int64_t c = 0; c < C; ++c) {
          const int64_t bc = b * C + c;
          const G g = to_acc(grad_out[bc * HW + pix]);
          if (need_geometry) {
            const T* p = image + bc * plane + i00;
            const G v00 = k00 ? to_acc(p[0]) : G(0), v01 = k01 ? to_acc(p[1]) : G(0);
            const G v10 = k10 ? to_acc(p[Ws]) : G(0), v11 = k11 ? to_acc(p[Ws + 1]) : G(0);
            gx += g * ((v01 - v00) * (G(1) - s.fy) + (v11 - v10) * s.fy);
            gy += g * ((v10 - v00) * (G(1) - s.fx) + (v11 - v01) * s.fx);
          }
          if (grad_image != nullptr) {
            G* gi = grad_image + bc * plane + i00;
            if (k00) atomicAdd(gi, g * w00);
            if (k01) atomicAdd(gi + 1, g * w01);
            if (k10) atomicAdd(gi + Ws, g * w10);
            if (k11) atomicAdd(gi + Ws + 1, g * w11);
          }
        }
      }
      if (need_geometry) {
        G dpx = G(0), dpy = G(0), dpz = G(0);
        if (any) grad_p<G>(r, gx * sp.pass_x, gy * sp.pass_y, dpx, dpy, dpz);
        if (grad_depth != nullptr) grad_depth[b * HW + pix] = dpx * r.a0 + dpy * r.a1 + dpz * r.a2;
        if (any) {
          const G dp[3] = {dpx, dpy, dpz};
#pragma unroll
          for (int i = 0; i < 3; ++i) {
            acc[i * 4 + 0] = dp[i] * d * u;
            acc[i * 4 + 1] = dp[i] * d * v;
            acc[i * 4 + 2] = dp[i] * d;
            acc[i * 4 + 3] = dp[i];
          }
        }
      }
    }
    if (grad_P == nullptr) continue;  // uniform across the block
    // Block sum of the 12 pose terms: warp shuffles, then one warp-partial
    // per warp in shared memory, summed in warp order (deterministic).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < 12; ++k) {
      G val = acc[k];
      for (int off = 16; off > 0; off >>= 1) val += __shfl_down_sync(0xffffffffu, val, off);
      if (lane == 0) partial[warp][k] = val;
    }
    __syncthreads();
    if (threadIdx.x < 12) {
      G sum = G(0);
      for (int w = 0; w < kWarps; ++w) sum += partial[w][threadIdx.x];
      grad_P[(b * gridDim.x + blockIdx.x) * 12 + threadIdx.x] = sum;
    }
    __syncthreads();  // partial is reused by the next batch element
  }
}

// One block per batch element: warp k sums component k of the per-block
// partials (lanes stride over the blocks, then a fixed shuffle tree), and one
// thread applies the chain rule from P to K, T and K_src.
template <typename G>
__global__ void __launch_bounds__(12 * 32)
geometry_backward_kernel(const G* __restrict__ partial, int64_t blocks, Geometry<G> geo,
                         G* __restrict__ grad_K, G* __restrict__ grad_T, int64_t t_rows,
                         G* __restrict__ grad_Ks, int64_t B) {
  __shared__ G dP[12];
  const int lane = threadIdx.x & 31, k = threadIdx.x >> 5;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    G sum = G(0);
    for (int64_t i = lane; i < blocks; i += 32) sum += partial[(b * blocks + i) * 12 + k];
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off);
    if (lane == 0) dP[k] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      G dK[9], dT[12], dKs[9];
      unfold_grad(geo.K + b * geo.k_stride, geo.T + b * geo.t_stride, geo.Ks + b * geo.ks_stride,
                  dP, dK, dT, dKs);
      for (int i = 0; i < 9; ++i) {
        if (grad_K != nullptr) grad_K[b * 9 + i] = dK[i];
        if (grad_Ks != nullptr) grad_Ks[b * 9 + i] = dKs[i];
      }
      if (grad_T != nullptr)
        for (int i = 0; i < 12; ++i) grad_T[b * t_rows * 4 + i] = dT[i];
    }
    __syncthreads();  // dP is reused by the next batch element
  }
}

int64_t pixel_blocks(int64_t H, int64_t W) { return (H * W + kThreads - 1) / kThreads; }

bool valid(int64_t B, int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws) {
  return B >= 0 && C >= 0 && H >= 0 && W >= 0 && Hs >= 1 && Ws >= 1 &&
         (H * W + kThreads - 1) / kThreads < (int64_t(1) << 31);
}

dim3 make_grid(int64_t B, int64_t H, int64_t W) {
  return dim3(static_cast<unsigned>(pixel_blocks(H, W)),
              static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY));
}

}  // namespace

int64_t reproject_blocks(int64_t H, int64_t W, Stream) { return pixel_blocks(H, W); }

cudaError_t reproject_forward(DType dt, const void* image, const void* depth, GeometryArgs geo,
                              bool border, void* out, void* mask, int64_t B, int64_t C,
                              int64_t H, int64_t W, int64_t Hs, int64_t Ws, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  if (!valid(B, C, H, W, Hs, Ws)) return cudaErrorInvalidValue;
  if (B == 0 || H == 0 || W == 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using G = typename AccType<T>::type;
    forward_kernel<T><<<make_grid(B, H, W), kThreads, 0, stream>>>(
        static_cast<const T*>(image), static_cast<const G*>(depth), typed<G>(geo), border,
        static_cast<T*>(out), static_cast<T*>(mask), B, C, H, W, Hs, Ws);
    return cudaGetLastError();
  });
}

cudaError_t reproject_backward(DType dt, const void* grad_out, const void* image,
                               const void* depth, GeometryArgs geo, bool border,
                               void* grad_image, void* grad_depth, void* partial, void* grad_K,
                               void* grad_T, int64_t t_rows, void* grad_Ks, int64_t B, int64_t C, int64_t H,
                               int64_t W, int64_t Hs, int64_t Ws, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  if (!valid(B, C, H, W, Hs, Ws) || (t_rows != 3 && t_rows != 4)) return cudaErrorInvalidValue;
  const bool need_pose = grad_K != nullptr || grad_T != nullptr || grad_Ks != nullptr;
  if (need_pose && partial == nullptr && H * W > 0) return cudaErrorInvalidValue;
  if (B == 0 || (grad_image == nullptr && grad_depth == nullptr && !need_pose)) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using G = typename AccType<T>::type;
    const Geometry<G> g = typed<G>(geo);
    const int64_t blocks = pixel_blocks(H, W);
    if (H * W > 0) {
      backward_kernel<T><<<make_grid(B, H, W), kThreads, 0, stream>>>(
          static_cast<const T*>(grad_out), static_cast<const T*>(image),
          static_cast<const G*>(depth), g, border, static_cast<G*>(grad_image),
          static_cast<G*>(grad_depth), need_pose ? static_cast<G*>(partial) : nullptr, B, C, H,
          W, Hs, Ws);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    if (!need_pose) return cudaSuccess;
    // With no pixels there are no partials: the pose gradient is zero.
    geometry_backward_kernel<G><<<static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY), 12 * 32,
                                  0, stream>>>(
        static_cast<const G*>(partial), H * W > 0 ? blocks : 0, g, static_cast<G*>(grad_K),
        static_cast<G*>(grad_T), t_rows, static_cast<G*>(grad_Ks), B);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace packops
