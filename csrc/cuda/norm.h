// Launchers of the group_norm_elu CUDA kernels. Raw pointers and a stream
// only, no torch types, so the .cu compiles with plain nvcc.
//
// Dense NCHW tensors of element type `dt` (weight, bias [C] too); the
// statistics mean, rstd [B,G] and the workspace have the accumulation type
// (float64 for Float64, else float32). Gradient outputs that are nullptr are
// skipped. All reductions are per-chunk partial sums reduced in a fixed
// order: deterministic. Empty inputs launch nothing. The return value is the
// launch error (cudaGetLastError after the last launch).
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cuda {

// Elements (of the accumulation type) of the workspace the forward
// (backward = false) or the backward needs; the caller allocates it. (The
// Stream argument only selects the device, as for every launcher.)
int64_t group_norm_elu_workspace_elems(int64_t B, int64_t C, int64_t HW, int64_t G,
                                       bool backward, Stream device);

// x: [B,C,H,W] (HW = H*W), weight, bias: [C], C divisible by G
//   -> y: [B,C,H,W]; mean, rstd: [B,G]
cudaError_t group_norm_elu_forward(DType dt, const void* x, const void* weight, const void* bias,
                                   void* y, void* mean, void* rstd, void* workspace, int64_t B,
                                   int64_t C, int64_t HW, int64_t G, double eps, double alpha,
                                   Stream stream);

// grad: [B,C,H,W]; mean, rstd: the forward's -> grad_x: [B,C,H,W], grad_weight,
// grad_bias: [C] (written, not accumulated), each nullptr when not needed
cudaError_t group_norm_elu_backward(DType dt, const void* grad, const void* x,
                                    const void* weight, const void* bias, const void* mean,
                                    const void* rstd, void* grad_x, void* grad_weight,
                                    void* grad_bias, void* workspace, int64_t B, int64_t C,
                                    int64_t HW, int64_t G, double alpha, Stream stream);

}  // namespace cuda
}  // namespace packops
