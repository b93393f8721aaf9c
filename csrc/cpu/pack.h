// OpenMP kernels of pack3d / unpack3d on raw pointers. Same contract as
// csrc/cuda/pack.h: dense NCHW, weight [d,1,3,3,3], bias [d], nullptr
// gradient outputs are skipped, T is float or double (explicitly
// instantiated). Results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace packops {
namespace cpu {

// x: [B,C,H,W], H and W divisible by r -> out: [B, d*r*r*C, H/r, W/r]
template <typename T>
void pack3d_forward(const T* x, const T* weight, const T* bias, T* out, int64_t B, int64_t C,
                    int64_t H, int64_t W, int64_t d, int64_t r);

// grad: [B, d*r*r*C, H/r, W/r] -> grad_x: [B,C,H,W], grad_w: [d,1,3,3,3], grad_b: [d]
template <typename T>
void pack3d_backward(const T* grad, const T* x, const T* weight, T* grad_x, T* grad_w,
                     T* grad_b, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                     int64_t r);

// x: [B,C,H,W], d*C divisible by r*r -> out: [B, d*C/(r*r), H*r, W*r]
template <typename T>
void unpack3d_forward(const T* x, const T* weight, const T* bias, T* out, int64_t B, int64_t C,
                      int64_t H, int64_t W, int64_t d, int64_t r);

// grad: [B, d*C/(r*r), H*r, W*r] -> grad_x: [B,C,H,W], grad_w: [d,1,3,3,3], grad_b: [d]
template <typename T>
void unpack3d_backward(const T* grad, const T* x, const T* weight, T* grad_x, T* grad_w,
                       T* grad_b, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d,
                       int64_t r);

}  // namespace cpu
}  // namespace packops
