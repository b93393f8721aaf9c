// CUDA kernels of pack3d() and unpack3d(), forward and backward.
//
// One thread per element, grid-stride loops; a channel's offset is computed
// once (csrc/include/packops/pack.h's unpacked_base, whose equality with the
// CPU kernels' unpacked_offset tests/test_pack_index.py checks), then rows
// and columns are steps, in int arithmetic where the sizes allow it.
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
// The packed volumes: U [Cu, h, w] (conv input), V [d*Cu, h, w] (conv output),
// one of them stored unpacked (pack: U, unpack: V). I is the index type: int
// where every offset and the grid-stride loops fit in it (launchers check),
// else int64_t; 64-bit division costs tens of instructions on the GPU, and
// an index computed per tap made the first version 7x slower than cuDNN.
// ===========================================================================
template <typename I>
struct Volume {
  I B, Cu, h, w, d, r;
  bool unpack;
  I u_size, v_size;  // one batch item
  I u_row, u_col, v_row, v_col;  // steps of a row and a column in the stored tensor
  __device__ __forceinline__ I u_base(I q) const {
    return unpack ? q * h * w : unpacked_base<I>(q, h, w, r);
  }
  __device__ __forceinline__ I v_base(I q) const {
    return unpack ? unpacked_base<I>(q, h, w, r) : q * h * w;
  }
};

// ===========================================================================
// Forward
// ===========================================================================
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ in, const T* __restrict__ weight, const T* __restrict__ bias,
               T* __restrict__ out, Volume<I> vol) {
  using A = typename AccType<T>::type;
  const I n = vol.B * vol.v_size, dCu = vol.d * vol.Cu;
  for (I k = blockIdx.x * I(blockDim.x) + threadIdx.x; k < n; k += I(gridDim.x) * blockDim.x) {
    // k = ((b * d*Cu + q) * h + y) * w + x, q = o*Cu + c
    const I x = k % vol.w;
    I t = k / vol.w;
    const I y = t % vol.h;
    t /= vol.h;
    const I q = t % dCu, b = t / dCu;
    const I o = q / vol.Cu, c = q - o * vol.Cu;
    const T* ub = in + b * vol.u_size;
    const T* wo = weight + o * kTaps;
    A acc = to_acc(bias[o]);
    for (int i = 0; i < 3; ++i) {
      const I cc = c + i - 1;
      if (cc < 0 || cc >= vol.Cu) continue;
      const T* uc = ub + vol.u_base(cc);
      for (int j = 0; j < 3; ++j) {
        const I yy = y + j - 1;
        if (yy < 0 || yy >= vol.h) continue;
        const T* ur = uc + yy * vol.u_row;
        for (int l = 0; l < 3; ++l) {
          const I xx = x + l - 1;
          if (xx < 0 || xx >= vol.w) continue;
          acc += to_acc(wo[i * 9 + j * 3 + l]) * to_acc(ur[xx * vol.u_col]);
        }
      }
    }
    store(out + b * vol.v_size + vol.v_base(q) + y * vol.v_row + x * vol.v_col, acc);
  }
}

// ===========================================================================
// Backward: gradient of the input
// ===========================================================================
// dL/dU(c, y, x) = sum_{o,i,j,l} w[o,i,j,l] * dL/dV(o*Cu + c-i+1, y-j+1, x-l+1)
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
grad_input_kernel(const T* __restrict__ grad, const T* __restrict__ weight,
                  T* __restrict__ grad_in, Volume<I> vol) {
  using A = typename AccType<T>::type;
  const I n = vol.B * vol.u_size;
  for (I k = blockIdx.x * I(blockDim.x) + threadIdx.x; k < n; k += I(gridDim.x) * blockDim.x) {
    // k = ((b * Cu + c) * h + y) * w + x
    const I x = k % vol.w;
    I t = k / vol.w;
    const I y = t % vol.h;
    t /= vol.h;
    const I c = t % vol.Cu, b = t / vol.Cu;
    const T* gb = grad + b * vol.v_size;
    A acc = A(0);
    for (I o = 0; o < vol.d; ++o) {
      const T* wo = weight + o * kTaps;
      for (int i = 0; i < 3; ++i) {
        const I cc = c - i + 1;
        if (cc < 0 || cc >= vol.Cu) continue;
        const T* gc = gb + vol.v_base(o * vol.Cu + cc);
        for (int j = 0; j < 3; ++j) {
          const I yy = y - j + 1;
          if (yy < 0 || yy >= vol.h) continue;
          const T* gr = gc + yy * vol.v_row;
          for (int l = 0; l < 3; ++l) {
            const I xx = x - l + 1;
            if (xx < 0 || xx >= vol.w) continue;
            acc += to_acc(wo[i * 9 + j * 3 + l]) * to_acc(gr[xx * vol.v_col]);
          }
        }
      }
    }
    store(grad_in + b * vol.u_size + vol.u_base(c) + y * vol.u_row + x * vol.u_col, acc);
  }
}

// ===========================================================================
// Backward: gradient of the weight and bias
// ===========================================================================
// Block (chunk, o). partial[(o * kChunks + chunk) * kGradSlots + s]:
//   s < 27: sum over this chunk's (b, c, y, x) of dL/dV(o, c, y, x) * U(tap s)
//   s = 27: sum of dL/dV(o, c, y, x) (the bias)
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
grad_weight_partial_kernel(const T* __restrict__ grad, const T* __restrict__ in,
                           typename AccType<T>::type* __restrict__ partial, Volume<I> vol) {
  using A = typename AccType<T>::type;
  __shared__ A red[kThreads];
  const I o = blockIdx.y;
  const I n = vol.B * vol.u_size;
  A acc[kGradSlots];
  for (int s = 0; s < kGradSlots; ++s) acc[s] = A(0);
  const I stride = I(kChunks) * kThreads;
  for (I k = I(blockIdx.x) * kThreads + threadIdx.x; k < n; k += stride) {
    const I x = k % vol.w;
    I t = k / vol.w;
    const I y = t % vol.h;
    t /= vol.h;
    const I c = t % vol.Cu, b = t / vol.Cu;
    const A g = to_acc(grad[b * vol.v_size + vol.v_base(o * vol.Cu + c) + y * vol.v_row +
                            x * vol.v_col]);
    const T* ub = in + b * vol.u_size;
    acc[kTaps] += g;
    for (int i = 0; i < 3; ++i) {
      const I cc = c + i - 1;
      if (cc < 0 || cc >= vol.Cu) continue;
      const T* uc = ub + vol.u_base(cc);
      for (int j = 0; j < 3; ++j) {
        const I yy = y + j - 1;
        if (yy < 0 || yy >= vol.h) continue;
        const T* ur = uc + yy * vol.u_row;
        for (int l = 0; l < 3; ++l) {
          const I xx = x + l - 1;
          if (xx < 0 || xx >= vol.w) continue;
          acc[i * 9 + j * 3 + l] += g * to_acc(ur[xx * vol.u_col]);
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
template <typename I>
bool make_volume(bool unpack, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                 Volume<I>* vol) {
  if (B < 0 || C < 0 || H < 0 || W < 0 || d < 1 || r < 1) return false;
  int64_t Cu, h, w;
  if (unpack) {
    if ((d * C) % (r * r) != 0) return false;
    Cu = C, h = H, w = W;
  } else {
    if (H % r != 0 || W % r != 0) return false;
    Cu = C * r * r, h = H / r, w = W / r;
  }
  Volume<I> v;
  v.B = I(B), v.Cu = I(Cu), v.h = I(h), v.w = I(w), v.d = I(d), v.r = I(r);
  v.unpack = unpack;
  v.u_size = I(Cu * h * w);
  v.v_size = I(d * Cu * h * w);
  // the unpacked tensor: a row of the packed plane is r rows of r*w values apart
  const I packed_row = I(w), unpacked_row = I(r * r * w);
  v.u_row = unpack ? packed_row : unpacked_row;
  v.u_col = unpack ? I(1) : I(r);
  v.v_row = unpack ? unpacked_row : packed_row;
  v.v_col = unpack ? I(r) : I(1);
  *vol = v;
  return true;
}

// int indices when the largest tensor and the grid-stride overshoot (at most
// kMaxBlocks * kThreads = 2^28) stay below 2^31
bool fits_int(int64_t B, int64_t C, int64_t H, int64_t W, int64_t d) {
  const int64_t largest = B * d * C * H * W;  // V, the larger volume (d >= 1), either op
  return largest <= (int64_t(1) << 30);
}

template <typename T, typename I>
cudaError_t launch_forward_as(bool unpack, const void* x, const void* weight, const void* bias,
                              void* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                              int64_t r, cudaStream_t stream) {
  Volume<I> vol;
  if (!make_volume(unpack, B, C, H, W, d, r, &vol)) return cudaErrorInvalidValue;
  const int64_t n = int64_t(vol.B) * vol.v_size;
  if (n == 0) return cudaSuccess;
  forward_kernel<T, I><<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
      static_cast<T*>(out), vol);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_forward(bool unpack, const void* x, const void* weight, const void* bias,
                           void* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                           int64_t r, cudaStream_t stream) {
  return fits_int(B, C, H, W, d)
      ? launch_forward_as<T, int>(unpack, x, weight, bias, out, B, C, H, W, d, r, stream)
      : launch_forward_as<T, int64_t>(unpack, x, weight, bias, out, B, C, H, W, d, r, stream);
}

template <typename T, typename I>
cudaError_t launch_backward_as(bool unpack, const void* grad, const void* x, const void* weight,
                               void* grad_x, void* grad_w, void* grad_b, void* workspace,
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                               cudaStream_t stream) {
  using A = typename AccType<T>::type;
  Volume<I> vol;
  if (!make_volume(unpack, B, C, H, W, d, r, &vol)) return cudaErrorInvalidValue;
  const int64_t n = int64_t(vol.B) * vol.u_size;
  if (n == 0) return cudaSuccess;
  if (grad_x != nullptr) {
    grad_input_kernel<T, I><<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(weight), static_cast<T*>(grad_x), vol);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_w != nullptr || grad_b != nullptr) {
    if (workspace == nullptr || d > 65535) return cudaErrorInvalidValue;
    A* partial = static_cast<A*>(workspace);
    grad_weight_partial_kernel<T, I>
        <<<dim3(kChunks, static_cast<unsigned>(d)), kThreads, 0, stream>>>(
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

template <typename T>
cudaError_t launch_backward(bool unpack, const void* grad, const void* x, const void* weight,
                            void* grad_x, void* grad_w, void* grad_b, void* workspace,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                            cudaStream_t stream) {
  return fits_int(B, C, H, W, d)
      ? launch_backward_as<T, int>(unpack, grad, x, weight, grad_x, grad_w, grad_b, workspace,
                                   B, C, H, W, d, r, stream)
      : launch_backward_as<T, int64_t>(unpack, grad, x, weight, grad_x, grad_w, grad_b,
                                       workspace, B, C, H, W, d, r, stream);
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
