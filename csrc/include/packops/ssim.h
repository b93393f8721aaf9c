// Per-pixel SSIM math shared by the CPU and CUDA kernels.
//
// Definitions (docs/design.md): both inputs are reflection-padded by 1 and averaged
// over a 3x3 window. With window means mx = E[x], my = E[y] and raw second
// moments exx = E[x^2], eyy = E[y^2], exy = E[xy]:
//   sx = exx - mx^2, sy = eyy - my^2, sxy = exy - mx*my
//   ssim = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx + sy + C2))
// The moment form (not the centred one) is what the reference computes, so the
// rounding matches it.
//
// Backward: the loss reaches x only through the five window moments of every
// window that contains x. For window p and upstream gradient gs = dL/dssim(p),
// ssim_backward() returns the gradient with respect to the moments:
//   d_mx, d_my, d_e2 (= d_exx = d_eyy, they are equal), d_exy.
// Since d(exx)/dx_q = 2 x_q / 9 and d(exy)/dx_q = y_q / 9 inside the window,
//   dL/dx_q = 1/9 sum_{p: q in win(p)} w(p,q) [d_mx(p) + 2 x_q d_e2(p) + y_q d_exy(p)]
//   dL/dy_q = 1/9 sum_{p: q in win(p)} w(p,q) [d_my(p) + 2 y_q d_e2(p) + x_q d_exy(p)]
// where w(p,q) counts how often the reflected window of p hits q (see
// adjoint_weight). So a backward kernel needs four coefficient maps, box-summed
// with those weights, and never any per-tap storage.
#pragma once

#include "packops/common.h"

namespace packops {

template <typename A> struct SsimMoments {
  A mx, my, exx, eyy, exy;  // window means of x, y, x^2, y^2, x*y
};

template <typename A> struct SsimGrad {
  A d_mx, d_my, d_e2, d_exy;
};

template <typename A>
PACKOPS_HD A ssim_value(const SsimMoments<A>& m, A C1, A C2) {
  const A sx = m.exx - m.mx * m.mx;
  const A sy = m.eyy - m.my * m.my;
  const A sxy = m.exy - m.mx * m.my;
  const A n = (A(2) * m.mx * m.my + C1) * (A(2) * sxy + C2);
  const A d = (m.mx * m.mx + m.my * m.my + C1) * (sx + sy + C2);
  return n / d;
}

// Gradient of gs * ssim(moments) with respect to the five moments.
template <typename A>
PACKOPS_HD SsimGrad<A> ssim_backward(const SsimMoments<A>& m, A C1, A C2, A gs) {
  const A sx = m.exx - m.mx * m.mx;
  const A sy = m.eyy - m.my * m.my;
  const A sxy = m.exy - m.mx * m.my;
  const A n1 = A(2) * m.mx * m.my + C1;
  const A n2 = A(2) * sxy + C2;
  const A d1 = m.mx * m.mx + m.my * m.my + C1;
  const A d2 = sx + sy + C2;
  const A inv_d = A(1) / (d1 * d2);
  const A s = n1 * n2 * inv_d;
  // Partials of s with respect to n1, n2, d1, d2, each scaled by gs.
  const A g_n1 = gs * n2 * inv_d;
  const A g_n2 = gs * n1 * inv_d;
  const A g_d1 = -gs * s / d1;
  const A g_d2 = -gs * s / d2;
  SsimGrad<A> g;
  g.d_e2 = g_d2;          // d2 = exx + eyy - mx^2 - my^2 + C2
  g.d_exy = A(2) * g_n2;  // n2 = 2 (exy - mx my) + C2
  g.d_mx = A(2) * m.my * g_n1 + A(2) * m.mx * g_d1 - A(2) * m.mx * g_d2 - m.my * g.d_exy;
  g.d_my = A(2) * m.mx * g_n1 + A(2) * m.my * g_d1 - A(2) * m.my * g_d2 - m.mx * g.d_exy;
  return g;
}

// How many times the reflection-padded 3x3 window centred at p = q + o hits
// pixel q along one axis of length n (o in {-1, 0, 1}). Zero when p is outside
// the image. Reflection sends the pad tap at -1 to 1 and the one at n to n-2,
// so the border windows hit q = 1 (from p = 0) and q = n-2 (from p = n-1) twice.
PACKOPS_HD int adjoint_weight(int q, int o, int n) {
  const int p = q + o;
  if (p < 0 || p >= n) return 0;
  return 1 + (o == -1 && q == 1) + (o == 1 && q == n - 2);
}

// The L1 part of photometric_loss and the derivative of its SSIM part:
// loss = alpha * clamp((1 - ssim) / 2, 0, 1) + (1 - alpha) * |x - y|, averaged
// over channels by the caller. torch.clamp passes the gradient on the closed
// interval, so the mask is inclusive.
template <typename A>
PACKOPS_HD A photo_ssim_term(A ssim) {
  return clamp_nan((A(1) - ssim) / A(2), A(0), A(1));
}
template <typename A>
PACKOPS_HD A photo_ssim_grad(A ssim, A g_term) {
  const A t = (A(1) - ssim) / A(2);
  return (t >= A(0) && t <= A(1)) ? -g_term / A(2) : A(0);
}

}  // namespace packops
