// Per-pixel math of the reprojection warp, shared by the CPU (.cpp) and CUDA
// (.cu) kernels. No torch headers.
//
// The op's geometry folds into one 3x4 matrix per batch element (row-major,
// 12 numbers; fold() below):
//     P = K_src [R K^-1 | t]          p = depth * P[:, :3] q + P[:, 3]
// with q = [u, v, 1] the target pixel. The pixel kernels reduce the gradient
// to P per batch element; unfold_grad() carries it on to K, T and K_src.
//
// Then z = max(p_z, 1e-5), (x, y) = (p_x / z, p_y / z) in source pixels, and
// a bilinear sample with align_corners=True semantics (pixel centres at
// integers) and zeros outside: each of the four neighbours contributes only if
// it lies inside the image. With padding_mode "border" the sample point is
// first clamped into the image (sample_point below), as grid_sample does. A point whose 2x2 footprint misses the image
// samples nothing: output 0, mask 0, no gradient. A coordinate that is NaN or
// infinite (NaN or inf depth) gives NaN, as grid_sample does, with mask 0 and
// no gradient.
//
// Backward of one pixel, with g_c the output gradient of channel c:
//   dL/dx = pass_x sum_c g_c [(v01 - v00)(1 - fy) + (v11 - v10) fy]
//   dL/dy = pass_y sum_c g_c [(v10 - v00)(1 - fx) + (v11 - v01) fx]
// (pass_x = pass_y = 1 with zeros padding; fx, fy those of the sample point)
//   dL/dp_x = dL/dx / z,  dL/dp_y = dL/dy / z,
//   dL/dp_z = -(dL/dx x + dL/dy y) / z  if p_z >= 1e-5 (clamp's subgradient), else 0
//   dL/ddepth = dL/dp . (P[:, :3] q),   dL/dP[i, j<3] += dL/dp_i depth q_j,
//   dL/dP[i, 3] += dL/dp_i
// and the image gradient scatters g_c times each corner's weight.
#pragma once

#include "packops/common.h"

namespace packops {

constexpr double kMinDepth = 1e-5;

// The camera geometry of a batch, in the geometry type (float64 for float64 images, else float32): K, Ks [Bk,3,3] and
// T [Bt,R,4] (R = 3 or 4; only rows 0..2 are read), each contiguous. A batch
// stride of 0 broadcasts one matrix over the batch. Ks may equal K.
struct GeometryArgs {
  const void* K;
  const void* T;
  const void* Ks;
  int64_t k_stride, t_stride, ks_stride;  // elements between batch entries (0: broadcast)
};


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

// Where the bilinear sample is taken: the projected point itself
// (padding_mode "zeros"), or with "border" the point clamped into
// [0, Ws-1] x [0, Hs-1] as grid_sample's clip_coordinates does, so outside
// points repeat the edge pixels. pass_x, pass_y are the factors the gradient
// of x, y passes through the clamp: grid_sample's subgradient, 1 strictly
// inside and 0 where the point was clamped (on the edge too). A projection
// that is not finite (NaN or inf depth) is not clamped, so in both modes it
// samples nothing and gives NaN (empty_sample); grid_sample's border clamp
// would turn it into an edge pixel, which depends on the order of the
// arithmetic on infinities (folded P or not) and hides the bad depth.
template <typename G> struct SamplePoint {
  G x, y, pass_x, pass_y;
};

template <typename G> PACKOPS_HD G clamp_to_border(G v, int64_t n, G& pass) {
  const G hi = G(n - 1);
  if (v <= G(0)) {
    pass = G(0);
    return G(0);
  }
  if (v >= hi) {
    pass = G(0);
    return hi;
  }
  pass = G(1);
  return v;
}

template <typename G>
PACKOPS_HD SamplePoint<G> sample_point(const Projection<G>& r, int64_t Hs, int64_t Ws,
                                       bool border) {
  SamplePoint<G> p{r.x, r.y, G(1), G(1)};
  // v - v is 0 exactly for finite v (NaN for inf and NaN; no fast-math here)
  if (border && (r.x - r.x) == G(0) && (r.y - r.y) == G(0)) {
    p.x = clamp_to_border(r.x, Ws, p.pass_x);
    p.y = clamp_to_border(r.y, Hs, p.pass_y);
  }
  return p;
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

// ---------------------------------------------------------------- geometry
// K, Ks: 3x3 row-major; T: the first three rows of a 3x4 or 4x4 row-major
// transform ([R | t], row stride 4).

// General 3x3 inverse by the adjugate. A singular K gives inf/NaN (and so NaN
// samples) rather than an error: checking would need a device-host sync.
template <typename G> PACKOPS_HD void inverse3(const G* A, G* X) {
  const G c00 = A[4] * A[8] - A[5] * A[7];
  const G c01 = A[5] * A[6] - A[3] * A[8];
  const G c02 = A[3] * A[7] - A[4] * A[6];
  const G r = G(1) / (A[0] * c00 + A[1] * c01 + A[2] * c02);
  X[0] = c00 * r;
  X[1] = (A[2] * A[7] - A[1] * A[8]) * r;
  X[2] = (A[1] * A[5] - A[2] * A[4]) * r;
  X[3] = c01 * r;
  X[4] = (A[0] * A[8] - A[2] * A[6]) * r;
  X[5] = (A[2] * A[3] - A[0] * A[5]) * r;
  X[6] = c02 * r;
  X[7] = (A[1] * A[6] - A[0] * A[7]) * r;
  X[8] = (A[0] * A[4] - A[1] * A[3]) * r;
}

// P = Ks [R K^-1 | t]
template <typename G> PACKOPS_HD void fold(const G* K, const G* T, const G* Ks, G* P) {
  G Ki[9], A[9];
  inverse3(K, Ki);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      A[i * 3 + j] = T[i * 4 + 0] * Ki[j] + T[i * 4 + 1] * Ki[3 + j] + T[i * 4 + 2] * Ki[6 + j];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j)
      P[i * 4 + j] = Ks[i * 3 + 0] * A[j] + Ks[i * 3 + 1] * A[3 + j] + Ks[i * 3 + 2] * A[6 + j];
    P[i * 4 + 3] = Ks[i * 3 + 0] * T[3] + Ks[i * 3 + 1] * T[7] + Ks[i * 3 + 2] * T[11];
  }
}

// Gradients of fold() for one batch element, from dP (12). With M = Ks A,
// A = R K^-1, v = Ks t and (dM | dv) = dP:
//   dKs = dM A^T + dv t^T,  dA = Ks^T dM,  dt = Ks^T dv,  dR = dA K^-T,
//   dK = -K^-T (R^T dA) K^-T.
// dK, dT (12, the [R | t] rows) and dKs are written (not accumulated).
template <typename G>
PACKOPS_HD void unfold_grad(const G* K, const G* T, const G* Ks, const G* dP, G* dK, G* dT,
                            G* dKs) {
  G Ki[9], A[9], dA[9], dKi[9], tmp[9];
  inverse3(K, Ki);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      A[i * 3 + j] = T[i * 4 + 0] * Ki[j] + T[i * 4 + 1] * Ki[3 + j] + T[i * 4 + 2] * Ki[6 + j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      dKs[i * 3 + j] = dP[i * 4 + 0] * A[j * 3 + 0] + dP[i * 4 + 1] * A[j * 3 + 1] +
                       dP[i * 4 + 2] * A[j * 3 + 2] + dP[i * 4 + 3] * T[j * 4 + 3];
      dA[i * 3 + j] = Ks[0 * 3 + i] * dP[0 * 4 + j] + Ks[1 * 3 + i] * dP[1 * 4 + j] +
                      Ks[2 * 3 + i] * dP[2 * 4 + j];
    }
  for (int i = 0; i < 3; ++i) {
    dT[i * 4 + 3] = Ks[0 * 3 + i] * dP[3] + Ks[1 * 3 + i] * dP[7] + Ks[2 * 3 + i] * dP[11];
    for (int j = 0; j < 3; ++j) {
      dT[i * 4 + j] = dA[i * 3 + 0] * Ki[j * 3 + 0] + dA[i * 3 + 1] * Ki[j * 3 + 1] +
                      dA[i * 3 + 2] * Ki[j * 3 + 2];
      dKi[i * 3 + j] = T[0 * 4 + i] * dA[0 * 3 + j] + T[1 * 4 + i] * dA[1 * 3 + j] +
                       T[2 * 4 + i] * dA[2 * 3 + j];
    }
  }
  // dK = -Ki^T dKi Ki^T
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      tmp[i * 3 + j] = Ki[0 * 3 + i] * dKi[0 * 3 + j] + Ki[1 * 3 + i] * dKi[1 * 3 + j] +
                       Ki[2 * 3 + i] * dKi[2 * 3 + j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      dK[i * 3 + j] = -(tmp[i * 3 + 0] * Ki[j * 3 + 0] + tmp[i * 3 + 1] * Ki[j * 3 + 1] +
                        tmp[i * 3 + 2] * Ki[j * 3 + 2]);
}

}  // namespace packops
