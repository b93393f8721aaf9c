// ssim and photometric_loss: the op wrappers, written once for every device
// (csrc/glue.h explains the Dev policy). Schemas, checks and the CPU
// registration: ops/photometric.cpp; the CUDA registration:
// cuda/photometric_register.cpp; kernels: cpu/photometric.cpp, cuda/photometric.cu.
#pragma once

#include <tuple>

#include "glue.h"

namespace packops {

// x, y: [B,C,H,W], same shape, dtype and device, H, W >= 2 (reflection padding).
void check_pair(const char* op, const char* xn, const at::Tensor& x, const char* yn,
                const at::Tensor& y);

// The inputs after the checks, as the kernels read them (dense NCHW).
struct Pair {
  at::Tensor x, y;
  int64_t B, C, H, W;
};
Pair prepare_pair(const char* op, const char* xn, const at::Tensor& x, const char* yn,
                  const at::Tensor& y);

// C1, C2 (and alpha) finite.
void check_constants(const char* op, double alpha, double C1, double C2);

// photometric_loss also needs C >= 1 (its channel mean).
void check_channels(const char* op, const at::Tensor& pred);

// [B,1,H,W]: the photometric loss of x [B,C,H,W].
std::vector<int64_t> loss_shape(const at::Tensor& x);

template <class Dev>
at::Tensor ssim_fwd(const at::Tensor& x_in, const at::Tensor& y_in, double C1, double C2) {
  const char* op = "packops.ssim";
  const Pair p = prepare_pair(op, "x", x_in, "y", y_in);
  check_constants(op, 0.0, C1, C2);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  at::Tensor out = at::empty(p.x.sizes(), p.x.options());
  if (out.numel() == 0) return out;
  Dev::check(op, ssim_forward(dt, p.x.data_ptr(), p.y.data_ptr(), out.data_ptr(), p.B, p.C, p.H,
                              p.W, C1, C2, Dev::stream()));
  return out;
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor> ssim_bwd(const at::Tensor& grad_in, const at::Tensor& x_in,
                                            const at::Tensor& y_in, double C1, double C2,
                                            bool need_x, bool need_y) {
  const char* op = "packops.ssim_backward";
  const Pair p = prepare_pair(op, "x", x_in, "y", y_in);
  check_constants(op, 0.0, C1, C2);
  check_grad(op, grad_in, x_in.sizes(), x_in);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, p.x), gy = maybe_grad(need_y, p.y);
  if (p.x.numel() == 0 || !(need_x || need_y)) return {gx, gy};
  Dev::check(op, ssim_backward(dt, g.data_ptr(), p.x.data_ptr(), p.y.data_ptr(),
                               data_or_null(need_x, gx), data_or_null(need_y, gy), p.B, p.C, p.H,
                               p.W, C1, C2, Dev::stream()));
  return {gx, gy};
}

template <class Dev>
at::Tensor photometric_fwd(const at::Tensor& p_in, const at::Tensor& t_in, double alpha,
                           double C1, double C2) {
  const char* op = "packops.photometric_loss";
  const Pair p = prepare_pair(op, "pred", p_in, "target", t_in);
  check_channels(op, p_in);
  check_constants(op, alpha, C1, C2);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  at::Tensor out = at::empty(loss_shape(p.x), p.x.options());
  if (out.numel() == 0) return out;
  Dev::check(op, photometric_forward(dt, p.x.data_ptr(), p.y.data_ptr(), out.data_ptr(), p.B,
                                     p.C, p.H, p.W, alpha, C1, C2, Dev::stream()));
  return out;
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor> photometric_bwd(const at::Tensor& grad_in,
                                                   const at::Tensor& p_in, const at::Tensor& t_in,
                                                   double alpha, double C1, double C2,
                                                   bool need_p, bool need_t) {
  const char* op = "packops.photometric_loss_backward";
  const Pair p = prepare_pair(op, "pred", p_in, "target", t_in);
  check_channels(op, p_in);
  check_constants(op, alpha, C1, C2);
  check_grad(op, grad_in, loss_shape(p_in), p_in);
  const DType dt = Dev::dtype(op, p.x);
  const typename Dev::Guard guard(p.x.device());
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gp = maybe_grad(need_p, p.x), gt = maybe_grad(need_t, p.y);
  if (p.x.numel() == 0 || !(need_p || need_t)) return {gp, gt};
  Dev::check(op, photometric_backward(dt, g.data_ptr(), p.x.data_ptr(), p.y.data_ptr(),
                                      data_or_null(need_p, gp), data_or_null(need_t, gt), p.B,
                                      p.C, p.H, p.W, alpha, C1, C2, Dev::stream()));
  return {gp, gt};
}

// Registers the four wrappers for one dispatch key (CPU here, CUDA in
// cuda/photometric_register.cpp).
template <class Dev>
void register_photometric(torch::Library& m) {
  m.impl("ssim_fwd", &ssim_fwd<Dev>);
  m.impl("ssim_bwd", &ssim_bwd<Dev>);
  m.impl("photometric_fwd", &photometric_fwd<Dev>);
  m.impl("photometric_bwd", &photometric_bwd<Dev>);
}

}  // namespace packops
