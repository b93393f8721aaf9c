// CUDA kernels of group_norm_elu; the per-element math is the shared
// csrc/include/packops/norm.h (the CPU kernels use the same functions).
//
// A group of (C/G) H W values can be far larger than one block's share (a
// PackNet01 group at 192x640 holds half a million), so each reduction is
// split over kChunks blocks per group (forward) or channel (backward) that
// write partial sums, which a second kernel adds in a fixed order:
// deterministic, and enough blocks to fill the GPU at batch 1.
//   forward:  partial moments -> mean, rstd -> y (elementwise)
//   backward: partial (sum dz, sum dz x_hat) per channel -> per-channel sums ->
//             weight/bias gradients and the group terms m1, m2 -> dx (elementwise)
// The normalised value and the ELU's derivative are recomputed from x, mean
// and rstd; nothing but the statistics is kept from the forward.
// Every sum (partials, statistics, channel and group terms) is kept in double
// (Red), whatever the element type: float sums of a half-million-value group
// lost up to 10 ulp against PyTorch's own float32 group_norm on the H200,
// and these kernels are memory-bound, so the wider adds cost nothing seen.
#include <cstdint>

#include "element.cuh"
#include "norm.h"
#include "packops/norm.h"

namespace packops {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunks = 32;
using Red = double;  // the type of every sum
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxBlocks = 65535;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

unsigned grid_y(int64_t n) { return static_cast<unsigned>(n < kMaxGridY ? n : kMaxGridY); }

// Sum of v over the block (tree in shared memory, fixed order); every thread
// must call it. Valid in thread 0.
template <typename A> __device__ A block_sum(A v, A* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
    __syncthreads();
  }
  const A total = red[0];
  __syncthreads();  // red is reused
  return total;
}

// Block-reduces the two per-thread sums and stores them as the chunk's pair
// pair[0], pair[1] (thread 0); the chunked reductions below share this form.
template <typename A> __device__ void store_pair_sum(A s1, A s2, A* red, A* pair) {
  s1 = block_sum(s1, red);
  s2 = block_sum(s2, red);
  if (threadIdx.x == 0) {
    pair[0] = s1;
    pair[1] = s2;
  }
}

// Sums row `row`'s kChunks pairs: partial[(row * kChunks + chunk) * 2 + {0, 1}].
template <typename A> __device__ void sum_pairs(const A* partial, int64_t row, A& s1, A& s2) {
  s1 = A(0);
  s2 = A(0);
  for (int chunk = 0; chunk < kChunks; ++chunk) {
    s1 += partial[(row * kChunks + chunk) * 2];
    s2 += partial[(row * kChunks + chunk) * 2 + 1];
  }
}

// partial[(bg * kChunks + chunk) * 2 + {0, 1}] = sums of (x - k), (x - k)^2 over
// the chunk's share of group bg, k = the group's first value
template <typename T>
__global__ void __launch_bounds__(kThreads)
fwd_partial_kernel(const T* __restrict__ x, Red* __restrict__ partial, int64_t BG, int64_t n) {
  __shared__ Red red[kThreads];
  const int64_t len = (n + kChunks - 1) / kChunks;
  for (int64_t bg = blockIdx.y; bg < BG; bg += gridDim.y) {
    const T* xg = x + bg * n;
    const Red k = to_acc(xg[0]);
    const int64_t begin = blockIdx.x * len, end = begin + len < n ? begin + len : n;
    Red s1 = Red(0), s2 = Red(0);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const Red d = Red(to_acc(xg[i])) - k;
      s1 += d;
      s2 += d * d;
    }
    store_pair_sum(s1, s2, red, partial + (bg * kChunks + blockIdx.x) * 2);
  }
}

template <typename T>
__global__ void fwd_stats_kernel(const T* __restrict__ x, const Red* __restrict__ partial,
                                 typename AccType<T>::type* __restrict__ mean,
                                 typename AccType<T>::type* __restrict__ rstd, int64_t BG,
                                 int64_t n, double eps) {
  using A = typename AccType<T>::type;
  const int64_t bg = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (bg >= BG) return;
  Red s1, s2, m, r;
  sum_pairs(partial, bg, s1, s2);
  group_stats<Red>(s1, s2, to_acc(x[bg * n]), Red(n), eps, m, r);
  mean[bg] = A(m);
  rstd[bg] = A(r);
}

// Element i of [B, C, HW]: its group, the group's rstd, the channel's weight,
// x_hat = (x - mean) * rstd and z = x_hat * w + bias (the ELU's input).
template <typename A> struct Affine {
  int64_t bg;
  A r, wc, xh, z;
};
template <typename T, typename A>
__device__ Affine<A> affine_at(int64_t i, const T* x, const T* w, const T* bias, const A* mean,
                               const A* rstd, int64_t C, int64_t HW, int64_t Cg) {
  const int64_t bc = i / HW, c = bc % C, bg = bc / Cg;
  Affine<A> a;
  a.bg = bg;
  a.r = rstd[bg];
  a.wc = to_acc(w[c]);
  a.xh = (to_acc(x[i]) - mean[bg]) * a.r;
  a.z = a.xh * a.wc + to_acc(bias[c]);
  return a;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
fwd_apply_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                 const typename AccType<T>::type* __restrict__ mean,
                 const typename AccType<T>::type* __restrict__ rstd, T* __restrict__ y,
                 int64_t total, int64_t C, int64_t HW, int64_t Cg, double alpha) {
  using A = typename AccType<T>::type;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * kThreads) {
    const Affine<A> a = affine_at(i, x, w, bias, mean, rstd, C, HW, Cg);
    store(y + i, elu<A>(a.z, A(alpha)));
  }
}

// partial[(bc * kChunks + chunk) * 2 + {0, 1}] = sums of dz, dz x_hat over the
// chunk's share of channel bc's plane
template <typename T>
__global__ void __launch_bounds__(kThreads)
bwd_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                   const T* __restrict__ bias, const typename AccType<T>::type* __restrict__ mean,
                   const typename AccType<T>::type* __restrict__ rstd,
                   Red* __restrict__ partial, int64_t BC, int64_t C,
                   int64_t HW, int64_t Cg, double alpha) {
  using A = typename AccType<T>::type;
  __shared__ Red red[kThreads];
  const int64_t len = (HW + kChunks - 1) / kChunks;
  for (int64_t bc = blockIdx.y; bc < BC; bc += gridDim.y) {
    const int64_t c = bc % C, bg = bc / Cg;
    const A m = mean[bg], r = rstd[bg], wc = to_acc(w[c]), b = to_acc(bias[c]);
    const int64_t begin = blockIdx.x * len, end = begin + len < HW ? begin + len : HW;
    Red s1 = Red(0), s2 = Red(0);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const A xh = (to_acc(x[bc * HW + i]) - m) * r;
      const A dz = to_acc(dy[bc * HW + i]) * elu_grad<A>(xh * wc + b, A(alpha));
      s1 += Red(dz);
      s2 += Red(dz) * Red(xh);
    }
    store_pair_sum(s1, s2, red, partial + (bc * kChunks + blockIdx.x) * 2);
  }
}

__global__ void bwd_channel_kernel(const Red* __restrict__ partial, Red* __restrict__ S,
                                   int64_t BC) {
  const int64_t bc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (bc >= BC) return;
  Red s1, s2;
  sum_pairs(partial, bc, s1, s2);
  S[bc * 2] = s1;
  S[bc * 2 + 1] = s2;
}

// Threads [0, C): the weight and bias gradients (sums over the batch in order);
// threads [C, C + B*G): the group terms M[bg] = (m1, m2).
template <typename T>
__global__ void bwd_reduce_kernel(const Red* __restrict__ S, const T* __restrict__ w,
                                  T* __restrict__ dw, T* __restrict__ db, Red* __restrict__ M,
                                  int64_t B, int64_t C, int64_t G, int64_t n) {
  using A = typename AccType<T>::type;
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t Cg = C / G;
  if (t < C) {
    Red s1 = Red(0), s2 = Red(0);
    for (int64_t b = 0; b < B; ++b) {
      s1 += S[(b * C + t) * 2];
      s2 += S[(b * C + t) * 2 + 1];
    }
    if (db != nullptr) store(db + t, A(s1));
    if (dw != nullptr) store(dw + t, A(s2));
  } else if (t < C + B * G) {
    const int64_t bg = t - C, b = bg / G, g = bg % G;
    Red m1 = Red(0), m2 = Red(0);
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const int64_t c = g * Cg + cc;
      const Red wc = to_acc(w[c]);
      m1 += wc * S[(b * C + c) * 2];
      m2 += wc * S[(b * C + c) * 2 + 1];
    }
    M[bg * 2] = m1 / Red(n);
    M[bg * 2 + 1] = m2 / Red(n);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bwd_apply_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                 const T* __restrict__ bias, const typename AccType<T>::type* __restrict__ mean,
                 const typename AccType<T>::type* __restrict__ rstd,
                 const Red* __restrict__ M, T* __restrict__ dx,
                 int64_t total, int64_t C, int64_t HW, int64_t Cg, double alpha) {
  using A = typename AccType<T>::type;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * kThreads) {
    const Affine<A> a = affine_at(i, x, w, bias, mean, rstd, C, HW, Cg);
    const int64_t bg = a.bg;
    const A r = a.r, wc = a.wc, xh = a.xh;
    const A dz = to_acc(dy[i]) * elu_grad<A>(a.z, A(alpha));
    store(dx + i, r * (wc * dz - A(M[bg * 2]) - xh * A(M[bg * 2 + 1])));
  }
}

}  // namespace

// In elements of the accumulation type (float or double) the caller allocates:
// twice the Red (double) values needed, enough for either.
int64_t group_norm_elu_workspace_elems(int64_t B, int64_t C, int64_t, int64_t G, bool backward,
                                       Stream) {
  const int64_t reds = backward ? B * C * kChunks * 2 + B * C * 2 + B * G * 2 : B * G * kChunks * 2;
  return 2 * reds;
}

cudaError_t group_norm_elu_forward(DType dt, const void* x, const void* weight, const void* bias,
                                   void* y, void* mean, void* rstd, void* workspace, int64_t B,
                                   int64_t C, int64_t HW, int64_t G, double eps, double alpha,
                                   Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  if (G < 1 || C % G != 0) return cudaErrorInvalidValue;
  if (B == 0 || C == 0 || HW == 0) return cudaSuccess;  // the caller fills the statistics
  if (workspace == nullptr) return cudaErrorInvalidValue;
  const int64_t BG = B * G, n = (C / G) * HW;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccType<T>::type;
    Red* partial = static_cast<Red*>(workspace);
    fwd_partial_kernel<T><<<dim3(kChunks, grid_y(BG)), kThreads, 0, stream>>>(
        static_cast<const T*>(x), partial, BG, n);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    fwd_stats_kernel<T><<<blocks_for(BG), kThreads, 0, stream>>>(
        static_cast<const T*>(x), partial, static_cast<A*>(mean), static_cast<A*>(rstd), BG, n,
        eps);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    fwd_apply_kernel<T><<<blocks_for(B * C * HW), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
        static_cast<const A*>(mean), static_cast<const A*>(rstd), static_cast<T*>(y),
        B * C * HW, C, HW, C / G, alpha);
    return cudaGetLastError();
  });
}

cudaError_t group_norm_elu_backward(DType dt, const void* grad, const void* x,
                                    const void* weight, const void* bias, const void* mean,
                                    const void* rstd, void* grad_x, void* grad_weight,
                                    void* grad_bias, void* workspace, int64_t B, int64_t C,
                                    int64_t HW, int64_t G, double alpha, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  if (G < 1 || C % G != 0) return cudaErrorInvalidValue;
  if (grad_x == nullptr && grad_weight == nullptr && grad_bias == nullptr) return cudaSuccess;
  if (C == 0) return cudaSuccess;
  // an empty batch needs no workspace (its size is 0): no sums are read
  if (workspace == nullptr && B > 0) return cudaErrorInvalidValue;
  const int64_t BC = B * C, Cg = C / G, n = Cg * HW;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccType<T>::type;
    Red* partial = static_cast<Red*>(workspace);
    Red* S = partial + BC * kChunks * 2;
    Red* M = S + BC * 2;
    cudaError_t err;
    if (BC > 0) {
      bwd_partial_kernel<T><<<dim3(kChunks, grid_y(BC)), kThreads, 0, stream>>>(
          static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const T*>(weight),
          static_cast<const T*>(bias), static_cast<const A*>(mean), static_cast<const A*>(rstd),
          partial, BC, C, HW, Cg, alpha);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
      bwd_channel_kernel<<<blocks_for(BC), kThreads, 0, stream>>>(partial, S, BC);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    // with an empty batch the weight and bias gradients are sums over nothing: 0
    bwd_reduce_kernel<T><<<blocks_for(C + B * G), kThreads, 0, stream>>>(
        S, static_cast<const T*>(weight), static_cast<T*>(grad_weight),
        static_cast<T*>(grad_bias), M, B, C, G, n);
    err = cudaGetLastError();
    if (err != cudaSuccess || grad_x == nullptr || BC * HW == 0) return err;
    bwd_apply_kernel<T><<<blocks_for(BC * HW), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const T*>(weight),
        static_cast<const T*>(bias), static_cast<const A*>(mean), static_cast<const A*>(rstd), M,
        static_cast<T*>(grad_x), BC * HW, C, HW, Cg, alpha);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace packops
