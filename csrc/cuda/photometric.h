// Launchers of the SSIM / photometric-loss CUDA kernels. Raw pointers and a
// stream only, no torch types, so the .cu compiles with plain nvcc.
//
// Every tensor is dense NCHW (contiguous) of element type `dt`; gradient
// outputs that are nullptr are skipped (the input needs no gradient).
// Accumulation is float32 for float/half/bfloat16 and float64 for double.
// Empty inputs (B*C*H*W == 0) launch nothing and return cudaSuccess.
// The return value is the launch error (cudaGetLastError after the launch).
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cuda {

// photo = false, ssim:             x, y: [B,C,H,W] -> out: [B,C,H,W] (alpha unused)
// photo = true,  photometric loss: x, y: [B,C,H,W] -> out: [B,1,H,W]
cudaError_t photometric_forward(DType dt, bool photo, const void* x, const void* y, void* out,
                                int64_t B, int64_t C, int64_t H, int64_t W, double alpha,
                                double C1, double C2, Stream stream);

// grad: the forward output's shape -> grad_x, grad_y: [B,C,H,W] or nullptr
cudaError_t photometric_backward(DType dt, bool photo, const void* grad, const void* x,
                                 const void* y, void* grad_x, void* grad_y, int64_t B, int64_t C,
                                 int64_t H, int64_t W, double alpha, double C1, double C2,
                                 Stream stream);

}  // namespace cuda
}  // namespace packops
