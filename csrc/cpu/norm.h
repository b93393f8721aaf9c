// Launchers of the group_norm_elu OpenMP kernels on raw pointers: the same
// functions, arguments and contract as csrc/cuda/norm.h, with a cpu::Stream
// and a cpu::Status result. Dense NCHW; float32 and float64; the statistics
// (mean, rstd) have the accumulation type (float64 for float64, else
// float32); nullptr gradient outputs are skipped. Results do not depend on
// the thread count.
#pragma once

#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cpu {

// Elements (of the accumulation type) of the scratch buffer each pass needs:
// 0, the CPU kernels use their own (the argument is accepted and ignored).
int64_t group_norm_elu_workspace_elems(int64_t B, int64_t C, int64_t HW, int64_t G,
                                       bool backward, Stream device);

// x: [B,C,H,W] (HW = H*W), weight, bias: [C], C divisible by G
//   -> y: [B,C,H,W]; mean, rstd: [B,G]
Status group_norm_elu_forward(DType dt, const void* x, const void* weight, const void* bias,
                              void* y, void* mean, void* rstd, void* workspace, int64_t B,
                              int64_t C, int64_t HW, int64_t G, double eps, double alpha,
                              Stream stream);

// grad: [B,C,H,W]; mean, rstd: the forward's -> grad_x: [B,C,H,W], grad_weight,
// grad_bias: [C] (written, not accumulated), each nullptr when not needed
Status group_norm_elu_backward(DType dt, const void* grad, const void* x, const void* weight,
                               const void* bias, const void* mean, const void* rstd,
                               void* grad_x, void* grad_weight, void* grad_bias,
                               void* workspace, int64_t B, int64_t C, int64_t HW, int64_t G,
                               double alpha, Stream stream);

}  // namespace cpu
}  // namespace packops
