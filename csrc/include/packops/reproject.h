// Per-pixel math of the reprojection warp, shared by the CPU (.cpp) and CUDA
// (.cu) kernels. No torch headers.
//
// The op's geometry is folded, outside the kernels, into one 3x4 matrix per
// batch element (row-major, 12 numbers):
//     P = K_src [R K^-1 | t]          p = depth * P[:, :3] q + P[:, 3]
// with q = [u, v, 1] the target pixel. Autograd of that tiny product gives the
// gradients to K, K_src and T from the kernels' gradient to P, so the kernels
// only ever see (image, depth, P).
//
// Then z = max(p_z, 1e-5), (x, y) = (p_x / z, p_y / z) in source pixels, and
// a bilinear sample with align_corners=True semantics (pixel centres at
// integers) and zeros outside: each of the four neighbours contributes only if
// it lies inside the image. A point whose 2x2 footprint misses the image
// samples nothing: output 0, mask 0, no gradient. A coordinate that is NaN or
// infinite (NaN or inf depth) gives NaN, as grid_sample does, with mask 0 and
// no gradient.
//
// Backward of one pixel, with g_c the output gradient of channel c:
//   dL/dx = sum_c g_c [(v01 - v00)(1 - fy) + (v11 - v10) fy]
//   dL/dy = sum_c g_c [(v10 - v00)(1 - fx) + (v11 - v01) fx]
//   dL/dp_x = dL/dx / z,  dL/dp_y = dL/dy / z,
//   dL/dp_z = -(dL/dx x + dL/dy y) / z  if p_z >= 1e-5 (clamp's subgradient), else 0
//   dL/ddepth = dL/dp . (P[:, :3] q),   dL/dP[i, j<3] += dL/dp_i depth q_j,
//   dL/dP[i, 3] += dL/dp_i
// and the image gradient scatters g_c times each corner's weight.
#pragma once

#include "packops/common.h"

namespace packops {

constexpr double kMinDepth = 1e-5;

// Where one target pixel lands in the source image.
template <typename G> struct Projection {
  G a0, a1, a2;  // P[:, :3] q: the ray, before scaling by depth
  G pz;          // unclamped p_z
  G z;           // max(p_z, 1e-5)
  G x, y;        // source pixel coordinates
};

template <typename G>
PACKOPS_HD Projection<G> project(const G* P, G depth, G u, G v) {
  Projection<G> r;
  r.a0 = P[0] * u + P[1] * v + P[2];
  r.a1 = P[4] * u + P[5] * v + P[6];
  r.a2 = P[8] * u + P[9] * v + P[10];
  const G px = depth * r.a0 + P[3];
  const G py = depth * r.a1 + P[7];
  r.pz = depth * r.a2 + P[11];
  // Written so that NaN stays NaN (a NaN p_z is not clamped to 1e-5).
  r.z = r.pz < G(kMinDepth) ? G(kMinDepth) : r.pz;
  r.x = px / r.z;
  r.y = py / r.z;
  return r;
}

// The 2x2 neighbourhood of a sample point and its bilinear weights. Corners
// outside the image have `in_*` false and must be neither read nor written.
template <typename G> struct Bilinear {
  int64_t x0, y0;  // top-left corner; the others are +1
  G fx, fy;        // fractional offsets in [0, 1)
  bool in_x0, in_x1, in_y0, in_y1;

  PACKOPS_HD G w00() const { return (G(1) - fx) * (G(1) - fy); }
  PACKOPS_HD G w01() const { return fx * (G(1) - fy); }
  PACKOPS_HD G w10() const { return (G(1) - fx) * fy; }
  PACKOPS_HD G w11() const { return fx * fy; }
};

// false when (x, y) is not finite or farther than one pixel outside the image
// (nothing to sample, no gradient). The range test also keeps the integer
// conversion below in range for any input.
template <typename G>
PACKOPS_HD bool bilinear_setup(G x, G y, int64_t Hs, int64_t Ws, Bilinear<G>& b) {
  if (!(x >= G(-1) && x <= G(Ws) && y >= G(-1) && y <= G(Hs))) return false;
  // floor without <cmath>: truncation toward zero, corrected for negatives
  int64_t ix = static_cast<int64_t>(x);
  if (G(ix) > x) --ix;
  int64_t iy = static_cast<int64_t>(y);
  if (G(iy) > y) --iy;
  b.x0 = ix;
  b.y0 = iy;
  b.fx = x - G(ix);
  b.fy = y - G(iy);
  b.in_x0 = ix >= 0 && ix < Ws;
  b.in_x1 = ix + 1 >= 0 && ix + 1 < Ws;
  b.in_y0 = iy >= 0 && iy < Hs;
  b.in_y1 = iy + 1 >= 0 && iy + 1 < Hs;
  return true;
}

// The value of a point that samples nothing: 0 where (x, y) is finite, NaN
// where it is not (x - x is NaN exactly for NaN and +-inf; no fast-math here).
template <typename G> PACKOPS_HD G empty_sample(G x, G y) { return (x - x) + (y - y); }

// The validity mask: the sample point itself lies inside the image.
template <typename G> PACKOPS_HD bool inside(G x, G y, int64_t Hs, int64_t Ws) {
  return x >= G(0) && x <= G(Ws - 1) && y >= G(0) && y <= G(Hs - 1);
}

// Chain rule from (dL/dx, dL/dy) of the sample point to dL/dp (3 numbers).
template <typename G>
PACKOPS_HD void grad_p(const Projection<G>& r, G gx, G gy, G& dpx, G& dpy, G& dpz) {
  dpx = gx / r.z;
  dpy = gy / r.z;
  dpz = r.pz >= G(kMinDepth) ? -(gx * r.x + gy * r.y) / r.z : G(0);
}

}  // namespace packops
