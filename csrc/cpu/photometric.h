// OpenMP kernels of the SSIM / photometric-loss op on raw pointers.
// Same contract as csrc/cuda/photometric.h: dense NCHW, nullptr gradient
// outputs are skipped, T is float or double (explicitly instantiated).
#pragma once

#include <cstdint>

namespace packops {
namespace cpu {

// x, y: [B,C,H,W] -> out: [B,C,H,W]
template <typename T>
void ssim_forward(const T* x, const T* y, T* out, int64_t B, int64_t C, int64_t H,
                  int64_t W, double C1, double C2);

// grad: [B,C,H,W] -> grad_x, grad_y: [B,C,H,W] or nullptr
template <typename T>
void ssim_backward(const T* grad, const T* x, const T* y, T* grad_x, T* grad_y,
                   int64_t B, int64_t C, int64_t H, int64_t W, double C1, double C2);

// pred, target: [B,C,H,W] -> out: [B,1,H,W]
template <typename T>
void photometric_forward(const T* pred, const T* target, T* out, int64_t B, int64_t C,
                         int64_t H, int64_t W, double alpha, double C1, double C2);

// grad: [B,1,H,W] -> grad_pred, grad_target: [B,C,H,W] or nullptr
template <typename T>
void photometric_backward(const T* grad, const T* pred, const T* target, T* grad_pred,
                          T* grad_target, int64_t B, int64_t C, int64_t H, int64_t W,
                          double alpha, double C1, double C2);

}  // namespace cpu
}  // namespace packops
