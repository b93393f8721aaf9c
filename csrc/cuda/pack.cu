// CUDA kernels of pack3d() and unpack3d(), forward and backward.
//
// Deliberately simple: one thread per element, grid-stride loops, every
// index computed by the shared csrc/include/packops/pack.h functions (which
// the CPU kernels use too, so the CPU tests exercise this index math).
//   forward      one thread per conv output V(b, o*Cu + c, y, x): 27 taps of
//                U read through the space-to-depth map (pack) or directly
//                (unpack); written directly (pack) or pixel-shuffled (unpack).
//   grad input   one thread per U(b, c, y, x): the 27*d outputs that read it.
//   grad weight  kChunks blocks per output o; each thread sums 28 products
//                (27 taps + bias) over a strided share of (b, c, y, x), the
//                block reduces them in shared memory and writes one partial
//                per chunk; a second kernel sums the chunks in a fixed order
//                (deterministic, no atomics).
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cstdint>

#include "element.cuh"
#include "packops/pack.h"
#include "pack.h"

namespace packops {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunks = 256;               // weight-gradient blocks per output channel
constexpr int64_t kMaxBlocks = 1 << 20;    // grid-stride beyond this

// ===========================================================================
// The packed volumes: U [Cu, h, w] (conv input), V [d*Cu, h, w] (conv output)
// ===========================================================================
struct Volume {
  int64_t B, Cu, h, w, d, r;
  bool unpack;
  __device__ __forceinline__ int64_t u_off(int64_t c, int64_t y, int64_t x) const {
    return unpack ? packed_offset(c, y, x, h, w) : unpacked_offset(c, y, x, h, w, r);
  }
  __device__ __forceinline__ int64_t v_off(int64_t q, int64_t y, int64_t x) const {
    return unpack ? unpacked_offset(q, y, x, h, w, r) : packed_offset(q, y, x, h, w);
  }
  __host__ __device__ __forceinline__ int64_t u_size() const { return Cu * h * w; }
  __host__ __device__ __forceinline__ int64_t v_size() const { return d * Cu * h * w; }
};

// ===========================================================================
// Forward
// ===========================================================================
template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ in, const T* __restrict__ weight, const T* __restrict__ bias,
               T* __restrict__ out, Volume vol) {
  using A = typename AccType<T>::type;
  const int64_t n = vol.B * vol.v_size();
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    // k = ((b * d*Cu + q) * h + y) * w + x, q = o*Cu + c
    const int64_t x = k % vol.w;
    const int64_t y = (k / vol.w) % vol.h;
    const int64_t q = (k / (vol.w * vol.h)) % (vol.d * vol.Cu);
    const int64_t b = k / vol.v_size();
    const int64_t o = q / vol.Cu, c = q % vol.Cu;
    const T* ub = in + b * vol.u_size();
    A acc = to_acc(bias[o]);
    for (int i = 0; i < 3; ++i) {
      const int64_t cc = c + i - 1;
      if (cc < 0 || cc >= vol.Cu) continue;
      for (int j = 0; j < 3; ++j) {
        const int64_t yy = y + j - 1;
        if (yy < 0 || yy >= vol.h) continue;
        for (int l = 0; l < 3; ++l) {
          const int64_t xx = x + l - 1;
          if (xx < 0 || xx >= vol.w) continue;
          acc += to_acc(weight[tap_index(o, i, j, l)]) * to_acc(ub[vol.u_off(cc, yy, xx)]);
        }
      }
    }
    store(out + b * vol.v_size() + vol.v_off(q, y, x), acc);
  }
}

// ===========================================================================
// Backward: gradient of the input
// ===========================================================================
// dL/dU(c, y, x) = sum_{o,i,j,l} w[o,i,j,l] * dL/dV(o*Cu + c-i+1, y-j+1, x-l+1)
template <typename T>
__global__ void __launch_bounds__(kThreads)
grad_input_kernel(const T* __restrict__ grad, const T* __restrict__ weight,
                  T* __restrict__ grad_in, Volume vol) {
  using A = typename AccType<T>::type;
  const int64_t n = vol.B * vol.u_size();
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    // k = ((b * Cu + c) * h + y) * w + x
    const int64_t x = k % vol.w;
    const int64_t y = (k / vol.w) % vol.h;
    const int64_t c = (k / (vol.w * vol.h)) % vol.Cu;
    const int64_t b = k / vol.u_size();
    const T* gb = grad + b * vol.v_size();
    A acc = A(0);
    for (int64_t o = 0; o < vol.d; ++o) {
      for (int i = 0; i < 3; ++i) {
        const int64_t cc = c - i + 1;
        if (cc < 0 || cc >= vol.Cu) continue;
        for (int j = 0; j < 3; ++j) {
          const int64_t yy = y - j + 1;
          if (yy < 0 || yy >= vol.h) continue;
          for (int l = 0; l < 3; ++l) {
            const int64_t xx = x - l + 1;
            if (xx < 0 || xx >= vol.w) continue;
            acc += to_acc(weight[tap_index(o, i, j, l)]) *
                   to_acc(gb[vol.v_off(o * vol.Cu + cc, yy, xx)]);
          }
        }
      }
    }
    store(grad_in + b * vol.u_size() + vol.u_off(c, y, x), acc);
  }
}

// ===========================================================================
// Backward: gradient of the weight and bias
// ===========================================================================
// Block (chunk, o). partial[(o * kChunks + chunk) * kGradSlots + s]:
//   s < 27: sum over this chunk's (b, c, y, x) of dL/dV(o, c, y, x) * U(tap s)
//   s = 27: sum of dL/dV(o, c, y, x) (the bias)
template <typename T>
__global__ void __launch_bounds__(kThreads)
grad_weight_partial_kernel(const T* __restrict__ grad, const T* __restrict__ in,
                           typename AccType<T>::type* __restrict__ partial, Volume vol) {
  using A = typename AccType<T>::type;
  __shared__ A red[kThreads];
  const int64_t o = blockIdx.y;
  const int64_t n = vol.B * vol.u_size();
  A acc[kGradSlots];
  for (int s = 0; s < kGradSlots; ++s) acc[s] = A(0);
  const int64_t stride = int64_t(kChunks) * kThreads;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < n; k += stride) {
    const int64_t x = k % vol.w;
    const int64_t y = (k / vol.w) % vol.h;
    const int64_t c = (k / (vol.w * vol.h)) % vol.Cu;
    const int64_t b = k / vol.u_size();
    const A g = to_acc(grad[b * vol.v_size() + vol.v_off(o * vol.Cu + c, y, x)]);
    const T* ub = in + b * vol.u_size();
    acc[kTaps] += g;
    for (int i = 0; i < 3; ++i) {
      const int64_t cc = c + i - 1;
      if (cc < 0 || cc >= vol.Cu) continue;
      for (int j = 0; j < 3; ++j) {
        const int64_t yy = y + j - 1;
        if (yy < 0 || yy >= vol.h) continue;
        for (int l = 0; l < 3; ++l) {
          const int64_t xx = x + l - 1;
          if (xx < 0 || xx >= vol.w) continue;
          acc[i * 9 + j * 3 + l] += g * to_acc(ub[vol.u_off(cc, yy, xx)]);
        }
      }
    }
  }
  // Tree reduction per slot; the loop bounds are uniform, so the barriers are safe.
  for (int s = 0; s < kGradSlots; ++s) {
    red[threadIdx.x] = acc[s];
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (static_cast<int>(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) partial[(o * kChunks + blockIdx.x) * kGradSlots + s] = red[0];
    __syncthreads();  // red is overwritten by the next slot
  }
}

// One thread per (o, s): the chunks in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
grad_weight_final_kernel(const typename AccType<T>::type* __restrict__ partial,
                         T* __restrict__ grad_w, T* __restrict__ grad_b, int64_t d) {
  using A = typename AccType<T>::type;
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= d * kGradSlots) return;
  const int64_t o = k / kGradSlots;
  const int s = static_cast<int>(k % kGradSlots);
  A total = A(0);
  for (int chunk = 0; chunk < kChunks; ++chunk) total += partial[(o * kChunks + chunk) * kGradSlots + s];
  if (s < kTaps) {
    if (grad_w != nullptr) store(grad_w + o * kTaps + s, total);
  } else if (grad_b != nullptr) {
    store(grad_b + o, total);
  }
}

// ===========================================================================
// Launch helpers
// ===========================================================================
unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

// The packed volume of an op on x [B,C,H,W]; false for invalid shapes.
bool make_volume(bool unpack, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                 Volume* vol) {
  if (B < 0 || C < 0 || H < 0 || W < 0 || d < 1 || r < 1) return false;
  if (unpack) {
    if ((d * C) % (r * r) != 0) return false;
    *vol = Volume{B, C, H, W, d, r, true};
  } else {
    if (H % r != 0 || W % r != 0) return false;
    *vol = Volume{B, C * r * r, H / r, W / r, d, r, false};
  }
  return true;
}

template <typename T>
cudaError_t launch_forward(bool unpack, const void* x, const void* weight, const void* bias,
                           void* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                           int64_t r, cudaStream_t stream) {
  Volume vol;
  if (!make_volume(unpack, B, C, H, W, d, r, &vol)) return cudaErrorInvalidValue;
  const int64_t n = vol.B * vol.v_size();
  if (n == 0) return cudaSuccess;
  forward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
      static_cast<T*>(out), vol);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(bool unpack, const void* grad, const void* x, const void* weight,
                            void* grad_x, void* grad_w, void* grad_b, void* workspace,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                            cudaStream_t stream) {
  using A = typename AccType<T>::type;
  Volume vol;
  if (!make_volume(unpack, B, C, H, W, d, r, &vol)) return cudaErrorInvalidValue;
  const int64_t n = vol.B * vol.u_size();
  if (n == 0) return cudaSuccess;
  if (grad_x != nullptr) {
    grad_input_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(weight), static_cast<T*>(grad_x), vol);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_w != nullptr || grad_b != nullptr) {
    if (workspace == nullptr || d > 65535) return cudaErrorInvalidValue;
    A* partial = static_cast<A*>(workspace);
    grad_weight_partial_kernel<T><<<dim3(kChunks, static_cast<unsigned>(d)), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(x), partial, vol);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    grad_weight_final_kernel<T><<<blocks_for(d * kGradSlots), kThreads, 0, stream>>>(
        partial, static_cast<T*>(grad_w), static_cast<T*>(grad_b), d);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

// ===========================================================================
// Public launchers (pack.h)
// ===========================================================================
int64_t pack_workspace_elems(int64_t d, Stream) { return d * kChunks * kGradSlots; }

cudaError_t pack_forward(DType dt, bool unpack, const void* x, const void* weight,
                         const void* bias, void* out, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t d, int64_t r, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return launch_forward<T>(unpack, x, weight, bias, out, B, C, H, W, d, r, stream);
  });
}

cudaError_t pack_backward(DType dt, bool unpack, const void* grad, const void* x,
                          const void* weight, void* grad_x, void* grad_w, void* grad_b,
                          void* workspace, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                          int64_t r, Stream s) {
  const auto stream = static_cast<cudaStream_t>(s.handle);
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return launch_backward<T>(unpack, grad, x, weight, grad_x, grad_w, grad_b, workspace, B, C,
                              H, W, d, r, stream);
  });
}

}  // namespace cuda
}  // namespace packops
