// Launchers of the pack3d / unpack3d OpenMP kernels on raw pointers: the same
// functions, arguments and contract as csrc/cuda/pack.h, with a cpu::Stream
// and a cpu::Status result. Dense, contiguous; weight [d,1,3,3,3], bias [d];
// nullptr gradient outputs are skipped; float32 and float64. Results do not
// depend on the thread count.
#pragma once

#include <cstdint>

#include "packops/common.h"

namespace packops {
namespace cpu {

// Elements of the backward workspace: 0, the CPU kernels reduce the weight
// gradient in their own buffers (the argument is accepted and ignored).
int64_t pack_workspace_elems(int64_t d, Stream device);

// unpack = false, pack3d:   x: [B,C,H,W], H and W divisible by r -> out: [B, d*r*r*C, H/r, W/r]
// unpack = true,  unpack3d: x: [B,C,H,W], d*C divisible by r*r  -> out: [B, d*C/(r*r), H*r, W*r]
Status pack_forward(DType dt, bool unpack, const void* x, const void* weight, const void* bias,
                    void* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                    Stream stream);

// grad: the forward output's shape -> grad_x: [B,C,H,W], grad_w: [d,1,3,3,3], grad_b: [d]
Status pack_backward(DType dt, bool unpack, const void* grad, const void* x, const void* weight,
                     void* grad_x, void* grad_w, void* grad_b, void* workspace, int64_t B,
                     int64_t C, int64_t H, int64_t W, int64_t d, int64_t r, Stream stream);

}  // namespace cpu
}  // namespace packops
