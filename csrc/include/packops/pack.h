// Index math of pack3d / unpack3d, shared by the CPU and CUDA kernels.
//
// Both ops are a Conv3d(1 -> d, 3x3x3, padding 1) over a "packed" volume
// U [B, Cu, h, w] whose channel axis is the 3D depth axis; the conv output V
// [B, d*Cu, h, w] has channel o*Cu + c (docs/design.md).
//   pack3d:   U = space-to-depth(x) (x: [B, Cu/(r*r), h*r, w*r]), V is the output.
//   unpack3d: U = x, and the output is pixel_shuffle(V) ([B, d*Cu/(r*r), h*r, w*r]).
// Neither U (pack) nor V (unpack) is ever stored: the kernels read and write
// the unpacked tensor through unpacked_offset().
#pragma once

#include "packops/common.h"

namespace packops {

// Offset, inside one batch item, of packed element (channel q, row y, col x)
// in the unpacked tensor [Q/(r*r), h*r, w*r]: the space-to-depth / pixel
// shuffle channel order q = c*r*r + i*r + j <-> (c, y*r + i, x*r + j).
// Consecutive x are r elements apart.
PACKOPS_HD int64_t unpacked_offset(int64_t q, int64_t y, int64_t x, int64_t h, int64_t w,
                                   int64_t r) {
  const int64_t c = q / (r * r), i = (q / r) % r, j = q % r;
  return (c * h * r + y * r + i) * (w * r) + x * r + j;
}

// unpacked_offset(q, y, x) = unpacked_base(q) + y * r*r*w + x * r: a channel's
// offset once, then rows and columns by steps (what the CUDA kernels use, in
// 32-bit arithmetic where the sizes allow it).
template <typename I> PACKOPS_HD I unpacked_base(I q, I h, I w, I r) {
  const I c = q / (r * r), i = (q / r) % r, j = q % r;
  return (c * h * r + i) * (w * r) + j;
}

// Offset of packed element (q, y, x) in a dense [Q, h, w] batch item.
PACKOPS_HD int64_t packed_offset(int64_t q, int64_t y, int64_t x, int64_t h, int64_t w) {
  return (q * h + y) * w + x;
}

// Weight [d,1,3,3,3] index of output o, tap (i: depth/channel, j: row, l: col).
PACKOPS_HD int64_t tap_index(int64_t o, int i, int j, int l) {
  return o * 27 + i * 9 + j * 3 + l;
}

// Number of taps per output channel, and the per-output slots of the weight
// gradient partial sums: 27 weight taps + 1 bias.
constexpr int kTaps = 27;
constexpr int kGradSlots = kTaps + 1;

}  // namespace packops
