// ssim and photometric_loss: the op wrappers, written once for every device
// (csrc/glue.h explains the Dev policy) and for both ops (PHOTO selects the
// loss: a [B,1,H,W] channel mean with alpha). Schemas, checks and the CPU
// registration: ops/photometric.cpp; the CUDA registration:
// cuda/photometric_register.cpp; kernels: cpu/photometric.cpp, cuda/photometric.cu.
#pragma once

#include <tuple>

#include "glue.h"

namespace packops {

// C1, C2 (and alpha) finite; photometric_loss also needs C >= 1 (its channel mean).
void check_constants(const char* op, double alpha, double C1, double C2);
void check_channels(const char* op, const at::Tensor& pred);

// The inputs after the checks (x, y: [B,C,H,W], same shape, dtype and
// device, H, W >= 2 for the reflection padding), as the kernels read them.
struct Pair {
  at::Tensor x, y;
  int64_t B, C, H, W;
};
Pair prepare_pair(const char* op, bool photo, const at::Tensor& x, const at::Tensor& y,
                  double alpha, double C1, double C2);

// ssim: [B,C,H,W]; photometric_loss: [B,1,H,W]
std::vector<int64_t> pair_out_shape(const at::Tensor& x, bool photo);

template <class Dev, bool PHOTO>
at::Tensor pair_fwd(const at::Tensor& x_in, const at::Tensor& y_in, double alpha, double C1,
                    double C2) {
  const char* op = PHOTO ? "packops.photometric_loss" : "packops.ssim";
  const Pair p = prepare_pair(op, PHOTO, x_in, y_in, alpha, C1, C2);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  at::Tensor out = at::empty(pair_out_shape(p.x, PHOTO), p.x.options());
  if (p.x.numel() == 0) return out;
  Dev::check(op, photometric_forward(dt, PHOTO, p.x.data_ptr(), p.y.data_ptr(), out.data_ptr(),
                                     p.B, p.C, p.H, p.W, alpha, C1, C2, Dev::stream()));
  return out;
}

template <class Dev, bool PHOTO>
std::tuple<at::Tensor, at::Tensor> pair_bwd(const at::Tensor& grad_in, const at::Tensor& x_in,
                                            const at::Tensor& y_in, double alpha, double C1,
                                            double C2, bool need_x, bool need_y) {
  const char* op = PHOTO ? "packops.photometric_loss_backward" : "packops.ssim_backward";
  const Pair p = prepare_pair(op, PHOTO, x_in, y_in, alpha, C1, C2);
  check_grad(op, grad_in, pair_out_shape(x_in, PHOTO), x_in);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, p.x), gy = maybe_grad(need_y, p.y);
  if (p.x.numel() == 0 || !(need_x || need_y)) return {gx, gy};
  Dev::check(op, photometric_backward(dt, PHOTO, g.data_ptr(), p.x.data_ptr(), p.y.data_ptr(),
                                      data_or_null(need_x, gx), data_or_null(need_y, gy), p.B,
                                      p.C, p.H, p.W, alpha, C1, C2, Dev::stream()));
  return {gx, gy};
}

// The schemas' signatures: ssim has no alpha.
template <class Dev>
at::Tensor ssim_fwd(const at::Tensor& x, const at::Tensor& y, double C1, double C2) {
  return pair_fwd<Dev, false>(x, y, 0.0, C1, C2);
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor> ssim_bwd(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& y, double C1, double C2,
                                            bool need_x, bool need_y) {
  return pair_bwd<Dev, false>(grad, x, y, 0.0, C1, C2, need_x, need_y);
}

// Registers the four wrappers for one dispatch key (CPU here, CUDA in
// cuda/photometric_register.cpp).
template <class Dev>
void register_photometric(torch::Library& m) {
  m.impl("ssim_fwd", &ssim_fwd<Dev>);
  m.impl("ssim_bwd", &ssim_bwd<Dev>);
  m.impl("photometric_fwd", &pair_fwd<Dev, true>);
  m.impl("photometric_bwd", &pair_bwd<Dev, true>);
}

}  // namespace packops
