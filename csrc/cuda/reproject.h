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

namespace packops {
namespace cuda {

// image: [B,C,Hs,Ws]; depth: [B,1,H,W]; P: [B,3,4]
//   -> out: [B,C,H,W]; mask: [B,1,H,W] (dt) or nullptr
cudaError_t reproject_forward(DType dt, const void* image, const void* depth, const void* P,
                              void* out, void* mask, int64_t B, int64_t C, int64_t H, int64_t W,
                              int64_t Hs, int64_t Ws, cudaStream_t stream);

// Number of pixel blocks per batch element: grad_P_partial has
// [B, reproject_blocks(H, W), 12] entries, one partial sum per block.
int64_t reproject_blocks(int64_t H, int64_t W);

// grad_out: [B,C,H,W] (dt) ->
//   grad_image: [B,C,Hs,Ws] accumulator (float64 if dt is Float64, else
//               float32), zero-filled by the caller, accumulated with atomics;
//   grad_depth: [B,1,H,W];  grad_P_partial: [B, reproject_blocks(H,W), 12]
//               (the caller sums over dim 1: a fixed-order, deterministic sum).
cudaError_t reproject_backward(DType dt, const void* grad_out, const void* image,
                               const void* depth, const void* P, void* grad_image,
                               void* grad_depth, void* grad_P_partial, int64_t B, int64_t C,
                               int64_t H, int64_t W, int64_t Hs, int64_t Ws,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace packops
