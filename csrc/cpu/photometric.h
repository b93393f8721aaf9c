// Launchers of the SSIM / photometric-loss OpenMP kernels on raw pointers:
// the same functions, arguments and contract as csrc/cuda/photometric.h, with
// a cpu::Stream (the kernels are synchronous) and a cpu::Status result.
// Dense NCHW; nullptr gradient outputs are skipped; float32 and float64
// (accumulation in the element type's AccType); empty inputs do nothing.
#pragma once

#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cpu {

// photo = false, ssim:             x, y: [B,C,H,W] -> out: [B,C,H,W] (alpha unused)
// photo = true,  photometric loss: x, y: [B,C,H,W] -> out: [B,1,H,W]
Status photometric_forward(DType dt, bool photo, const void* x, const void* y, void* out,
                           int64_t B, int64_t C, int64_t H, int64_t W, double alpha, double C1,
                           double C2, Stream stream);

// grad: the forward output's shape -> grad_x, grad_y: [B,C,H,W] or nullptr
Status photometric_backward(DType dt, bool photo, const void* grad, const void* x, const void* y,
                            void* grad_x, void* grad_y, int64_t B, int64_t C, int64_t H,
                            int64_t W, double alpha, double C1, double C2, Stream stream);

}  // namespace cpu
}  // namespace packops
