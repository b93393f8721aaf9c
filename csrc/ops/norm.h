// group_norm_elu: the op wrappers, written once for every device (csrc/glue.h
// explains the Dev policy). Schemas, checks and the CPU registration:
// ops/norm.cpp; the CUDA registration: cuda/norm_register.cpp; kernels:
// cpu/norm.cpp, cuda/norm.cu; per-element math: include/packops/norm.h.
#pragma once

#include <tuple>

#include "glue.h"

namespace packops {

// x: [B,C,H,W], C divisible by groups; weight, bias: [C], x's dtype and device;
// eps > 0 and alpha finite.
void check_group_norm_elu(const char* op, const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& bias, int64_t groups, double eps, double alpha);

// The inputs after the checks, contiguous.
struct NormArgs {
  at::Tensor x, weight, bias;
  int64_t B, C, HW, G;
};
NormArgs prepare_group_norm_elu(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, int64_t groups, double eps, double alpha);

// mean, rstd: [B, G] in the accumulation type, on x's device
void check_stats(const char* op, const NormArgs& a, const at::Tensor& mean,
                 const at::Tensor& rstd);

template <class Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_elu_fwd(
    const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in, int64_t groups,
    double eps, double alpha) {
  const char* op = "packops.group_norm_elu";
  const NormArgs a = prepare_group_norm_elu(op, x_in, w_in, b_in, groups, eps, alpha);
  const DType dt = Dev::dtype(op, a.x);
  const typename Dev::Guard guard(a.x.device());
  const auto acc = a.x.options().dtype(acc_type(a.x.scalar_type()));
  at::Tensor y = at::empty(a.x.sizes(), a.x.options());
  at::Tensor mean = at::empty({a.B, a.G}, acc), rstd = at::empty({a.B, a.G}, acc);
  if (a.x.numel() == 0) {  // no values: no statistics to compute
    mean.zero_();
    rstd.zero_();
    return {y, mean, rstd};
  }
  const int64_t ws_elems = group_norm_elu_workspace_elems(a.B, a.C, a.HW, a.G, false,
                                                          Dev::stream());
  at::Tensor ws = at::empty({ws_elems}, acc);
  Dev::check(op, group_norm_elu_forward(dt, a.x.data_ptr(), a.weight.data_ptr(),
                                        a.bias.data_ptr(), y.data_ptr(), mean.data_ptr(),
                                        rstd.data_ptr(), data_or_null(ws_elems > 0, ws), a.B,
                                        a.C, a.HW, a.G, eps, alpha, Dev::stream()));
  return {y, mean, rstd};
}

// grad: [B,C,H,W] -> (grad_x, grad_weight, grad_bias); an input that needs no
// gradient gets an empty tensor.
template <class Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_elu_bwd(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& w_in,
    const at::Tensor& b_in, const at::Tensor& mean, const at::Tensor& rstd, int64_t groups,
    double alpha, bool need_x, bool need_w, bool need_b) {
  const char* op = "packops.group_norm_elu_backward";
  const NormArgs a = prepare_group_norm_elu(op, x_in, w_in, b_in, groups, 1.0, alpha);
  check_stats(op, a, mean, rstd);
  check_grad(op, grad_in, x_in.sizes(), x_in);
  const DType dt = Dev::dtype(op, a.x);
  const typename Dev::Guard guard(a.x.device());
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, a.x), gw = maybe_grad(need_w, a.weight),
             gb = maybe_grad(need_b, a.bias);
  if (!(need_x || need_w || need_b)) return {gx, gw, gb};
  const int64_t ws_elems = group_norm_elu_workspace_elems(a.B, a.C, a.HW, a.G, true,
                                                          Dev::stream());
  at::Tensor ws = at::empty({ws_elems}, mean.options());
  Dev::check(op, group_norm_elu_backward(dt, g.data_ptr(), a.x.data_ptr(), a.weight.data_ptr(),
                                         a.bias.data_ptr(), mean.contiguous().data_ptr(),
                                         rstd.contiguous().data_ptr(), data_or_null(need_x, gx),
                                         data_or_null(need_w, gw), data_or_null(need_b, gb),
                                         data_or_null(ws_elems > 0, ws), a.B, a.C, a.HW, a.G,
                                         alpha, Dev::stream()));
  return {gx, gw, gb};
}

template <class Dev>
void register_norm(torch::Library& m) {
  m.impl("group_norm_elu_fwd", &group_norm_elu_fwd<Dev>);
  m.impl("group_norm_elu_bwd", &group_norm_elu_bwd<Dev>);
}

}  // namespace packops
