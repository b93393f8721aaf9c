// Launchers of the reprojection-warp CUDA kernels. Raw pointers and a stream
// only, no torch types, so the .cu compiles with plain nvcc.
//
// Tensors are dense NCHW. The image (and out, mask, grad_out) have element
// type `dt`; the geometry (depth, P, grad_depth, grad_P partials) is float64
// when dt is Float64 and float32 otherwise, which is also the type all
// arithmetic runs in. P: [B,3,4] row-major, p = depth * P[:, :3] [u,v,1] + P[:, 3]
// (csrc/include/packops/reproject.h). Outputs that are nullptr are skipped.
// Empty inputs launch nothing and return cudaSuccess. The return value is
// the launch error (cudaGetLastError after the last launch).
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

#include "packops/common.h"
#include "packops/reproject.h"  // GeometryArgs

namespace packops {
namespace cuda {

// image: [B,C,Hs,Ws]; depth: [B,1,H,W]; border: padding_mode "border" (the
// sample point clamped into the image) instead of "zeros"
//   -> out: [B,C,H,W]; mask: [B,1,H,W] (dt) or nullptr
cudaError_t reproject_forward(DType dt, const void* image, const void* depth, GeometryArgs geo,
                              bool border, void* out, void* mask, int64_t B, int64_t C,
                              int64_t H, int64_t W, int64_t Hs, int64_t Ws, Stream stream);

// Number of pixel blocks per batch element: the pose-gradient scratch buffer
// `partial` has [B, reproject_blocks(H, W), 12] entries of the geometry type.
// (The Stream argument only selects the device, as for every launcher.)
int64_t reproject_blocks(int64_t H, int64_t W, Stream device);

// grad_out: [B,C,H,W] (dt) ->
//   grad_image: [B,C,Hs,Ws] accumulator of the geometry type, zero-filled by
//               the caller, accumulated with atomics (or nullptr);
//   grad_depth: [B,1,H,W] (or nullptr);
//   grad_K, grad_Ks: [B,3,3] and grad_T: [B,t_rows,4] (rows 0..2 written,
//               the caller zero-fills the rest), per batch element, not
//               reduced over a broadcast; each nullptr when not needed.
//   partial: scratch for the pose gradient, needed when any of grad_K,
//               grad_T, grad_Ks is requested. Its per-block sums are reduced
//               in a fixed order by a second kernel: deterministic.
cudaError_t reproject_backward(DType dt, const void* grad_out, const void* image,
                               const void* depth, GeometryArgs geo, bool border,
                               void* grad_image, void* grad_depth, void* partial, void* grad_K, void* grad_T,
                               int64_t t_rows, void* grad_Ks, int64_t B, int64_t C, int64_t H,
                               int64_t W, int64_t Hs, int64_t Ws, Stream stream);

}  // namespace cuda
}  // namespace packops
