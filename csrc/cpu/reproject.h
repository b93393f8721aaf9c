// OpenMP kernels of the reprojection warp on raw pointers. Same contract as
// csrc/cuda/reproject.h: dense NCHW; image, depth and P share the element
// type T (float or double, explicitly instantiated); nullptr outputs are
// skipped. Deterministic: no result depends on the number of threads.
#pragma once

#include <cstdint>

namespace packops {
namespace cpu {

// image: [B,C,Hs,Ws]; depth: [B,1,H,W]; P: [B,3,4]
//   -> out: [B,C,H,W]; mask: [B,1,H,W] or nullptr
template <typename T>
void reproject_forward(const T* image, const T* depth, const T* P, T* out, T* mask,
                       int64_t B, int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws);

// grad_out: [B,C,H,W] -> grad_image: [B,C,Hs,Ws], grad_depth: [B,1,H,W],
// grad_P: [B,3,4], each nullptr when not needed. grad_image is overwritten
// (the kernel zero-fills it).
template <typename T>
void reproject_backward(const T* grad_out, const T* image, const T* depth, const T* P,
                        T* grad_image, T* grad_depth, T* grad_P, int64_t B, int64_t C,
                        int64_t H, int64_t W, int64_t Hs, int64_t Ws);

}  // namespace cpu
}  // namespace packops
