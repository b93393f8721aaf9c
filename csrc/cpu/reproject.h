// Launchers of the reprojection-warp OpenMP kernels on raw pointers: the same
// functions, arguments and contract as csrc/cuda/reproject.h, with a
// cpu::Stream and a cpu::Status result. The launcher folds the cameras into
// P = K_src [R K^-1 | t] per batch element and carries the P gradient on to K,
// T and K_src (csrc/include/packops/reproject.h), as the CUDA launcher does on
// the device. Float32 and float64; the geometry (depth, cameras, their
// gradients) has the image's type. Deterministic: no result depends on the
// number of threads.
#pragma once

#include <cstdint>

#include "packops/common.h"
#include "packops/reproject.h"  // GeometryArgs

namespace packops {
namespace cpu {

// image: [B,C,Hs,Ws]; depth: [B,1,H,W]; border: padding_mode "border" (the
// sample point clamped into the image) instead of "zeros"
//   -> out: [B,C,H,W]; mask: [B,1,H,W] or nullptr
Status reproject_forward(DType dt, const void* image, const void* depth, GeometryArgs geo,
                         bool border, void* out, void* mask, int64_t B, int64_t C, int64_t H,
                         int64_t W, int64_t Hs, int64_t Ws, Stream stream);

// Rows of the pose-gradient scratch buffer `partial` per batch element: 0, the
// CPU kernels reduce in a double-precision buffer of their own (the argument
// is accepted and ignored).
int64_t reproject_blocks(int64_t H, int64_t W, Stream device);

// grad_out: [B,C,H,W] ->
//   grad_image: [B,C,Hs,Ws], zero-filled by the caller, accumulated into (or nullptr);
//   grad_depth: [B,1,H,W] (or nullptr);
//   grad_K, grad_Ks: [B,3,3] and grad_T: [B,t_rows,4] (rows 0..2 written, the
//   caller zero-fills the rest), per batch element, not reduced over a
//   broadcast; each nullptr when not needed.
Status reproject_backward(DType dt, const void* grad_out, const void* image, const void* depth,
                          GeometryArgs geo, bool border, void* grad_image, void* grad_depth,
                          void* partial, void* grad_K, void* grad_T, int64_t t_rows,
                          void* grad_Ks, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Hs,
                          int64_t Ws, Stream stream);

}  // namespace cpu
}  // namespace packops
