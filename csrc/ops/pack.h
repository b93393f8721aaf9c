// pack3d and unpack3d: the op wrappers, written once for every device
// (csrc/glue.h explains the Dev policy). Schemas, checks and the CPU
// registration: ops/pack.cpp; the CUDA registration: cuda/pack_register.cpp;
// kernels: cpu/pack.cpp, cuda/pack.cu. pack_conv is composed in Python
// (packops/pack.py) from pack3d and conv2d.
#pragma once

#include <tuple>

#include "glue.h"

namespace packops {

// x: [B,C,H,W], weight: [d,1,3,3,3], bias: [d], one dtype and device.
// pack: H, W divisible by r; unpack: d*C divisible by r*r.
void check_pack(const char* op, const at::Tensor& x, const at::Tensor& weight,
                const at::Tensor& bias, int64_t r, bool unpack);

// pack: [B, d*r*r*C, H/r, W/r]; unpack: [B, d*C/(r*r), H*r, W*r]
std::vector<int64_t> pack_out_shape(const at::Tensor& x, int64_t d, int64_t r, bool unpack);

// The inputs after the checks, as the kernels read them (contiguous).
struct PackArgs {
  at::Tensor x, weight, bias;
  int64_t B, C, H, W, d;
};
PackArgs prepare_pack(const char* op, const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias, int64_t r, bool unpack);

template <class Dev, bool UNPACK>
at::Tensor pack_fwd(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in,
                    int64_t r) {
  const char* op = UNPACK ? "packops.unpack3d" : "packops.pack3d";
  const PackArgs a = prepare_pack(op, x_in, w_in, b_in, r, UNPACK);
  const DType dt = Dev::dtype(op, a.x);
  const typename Dev::Guard guard(a.x.device());
  at::Tensor out = at::empty(pack_out_shape(a.x, a.d, r, UNPACK), a.x.options());
  if (out.numel() == 0) return out;
  Dev::check(op, pack_forward(dt, UNPACK, a.x.data_ptr(), a.weight.data_ptr(), a.bias.data_ptr(),
                              out.data_ptr(), a.B, a.C, a.H, a.W, a.d, r, Dev::stream()));
  return out;
}

// grad: the forward output's shape -> (grad_x, grad_weight, grad_bias); an
// input that needs no gradient gets an empty tensor.
template <class Dev, bool UNPACK>
std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_bwd(const at::Tensor& grad_in,
                                                        const at::Tensor& x_in,
                                                        const at::Tensor& w_in, int64_t r,
                                                        bool need_x, bool need_w, bool need_b) {
  const char* op = UNPACK ? "packops.unpack3d_backward" : "packops.pack3d_backward";
  // the bias does not enter the backward: a stand-in of its shape for the checks
  const at::Tensor bias = at::empty({w_in.dim() > 0 ? w_in.size(0) : 0}, w_in.options());
  const PackArgs a = prepare_pack(op, x_in, w_in, bias, r, UNPACK);
  check_grad(op, grad_in, pack_out_shape(x_in, a.d, r, UNPACK), x_in);
  const DType dt = Dev::dtype(op, a.x);
  const typename Dev::Guard guard(a.x.device());
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, a.x), gw = maybe_grad(need_w, a.weight),
             gb = maybe_grad(need_b, a.bias);
  if (!(need_x || need_w || need_b)) return {gx, gw, gb};
  if (g.numel() == 0) {  // the kernels write every gradient element, but launch nothing here
    for (at::Tensor* t : {&gx, &gw, &gb}) t->zero_();
    return {gx, gw, gb};
  }
  // Per-block partial sums of the weight/bias gradient, reduced in a fixed
  // order (deterministic), in the accumulation type; none on the CPU.
  const int64_t ws_elems = (need_w || need_b) ? pack_workspace_elems(a.d, Dev::stream()) : 0;
  at::Tensor ws = at::empty({ws_elems}, a.x.options().dtype(acc_type(a.x.scalar_type())));
  Dev::check(op, pack_backward(dt, UNPACK, g.data_ptr(), a.x.data_ptr(), a.weight.data_ptr(),
                               data_or_null(need_x, gx), data_or_null(need_w, gw),
                               data_or_null(need_b, gb), data_or_null(ws_elems > 0, ws), a.B, a.C,
                               a.H, a.W, a.d, r, Dev::stream()));
  return {gx, gw, gb};
}

template <class Dev>
void register_pack(torch::Library& m) {
  m.impl("pack3d_fwd", &pack_fwd<Dev, false>);
  m.impl("pack3d_bwd", &pack_bwd<Dev, false>);
  m.impl("unpack3d_fwd", &pack_fwd<Dev, true>);
  m.impl("unpack3d_bwd", &pack_bwd<Dev, true>);
}

}  // namespace packops
