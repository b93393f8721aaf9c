// Launchers of the pack3d / unpack3d CUDA kernels. Raw pointers and a stream
// only, no torch types, so the .cu compiles with plain nvcc.
//
// Every tensor is dense and contiguous, of element type `dt` (weight [d,1,3,3,3]
// and bias [d] too). Gradient outputs that are nullptr are skipped. Accumulation
// is float32 for float/half/bfloat16 and float64 for double. Empty inputs launch
// nothing and return cudaSuccess. The return value is the launch error.
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cuda {

// Elements of the backward workspace (weight/bias gradient partial sums):
// float32, or float64 when dt is Float64. The caller allocates it. (The
// Stream argument only selects the device, as for every launcher.)
int64_t pack_workspace_elems(int64_t d, Stream device);

// unpack = false, pack3d:   x: [B,C,H,W], H and W divisible by r -> out: [B, d*r*r*C, H/r, W/r]
// unpack = true,  unpack3d: x: [B,C,H,W], d*C divisible by r*r  -> out: [B, d*C/(r*r), H*r, W*r]
cudaError_t pack_forward(DType dt, bool unpack, const void* x, const void* weight,
                         const void* bias, void* out, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t d, int64_t r, Stream stream);

// grad: the forward output's shape -> grad_x: [B,C,H,W], grad_w: [d,1,3,3,3], grad_b: [d]
cudaError_t pack_backward(DType dt, bool unpack, const void* grad, const void* x,
                          const void* weight, void* grad_x, void* grad_w, void* grad_b,
                          void* workspace, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                          int64_t r, Stream stream);

}  // namespace cuda
}  // namespace packops
