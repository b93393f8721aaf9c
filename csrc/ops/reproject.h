// reproject: the op wrappers, written once for every device (csrc/glue.h
// explains the Dev policy). Schemas, checks and the CPU registration:
// ops/reproject.cpp; the CUDA registration: cuda/reproject_register.cpp;
// kernels: cpu/reproject.cpp, cuda/reproject.cu (both fold the cameras into
// P = K_src [R K^-1 | t] themselves and carry the P gradient on to K, T, K_src).
#pragma once

#include <optional>
#include <tuple>

#include "glue.h"
#include "packops/reproject.h"

namespace packops {

// image: [B,C,Hs,Ws], Hs, Ws >= 2; depth: [B,1,H,W]; K, K_src: [B|1,3,3];
// T: [B|1,3|4,4]; depth and the cameras in the geometry type
// (acc_type(image)) on the image's device.
void check_reproject(const char* op, const at::Tensor& image, const at::Tensor& depth,
                     const at::Tensor& K, const at::Tensor& T,
                     const std::optional<at::Tensor>& K_src);

// [B,C,H,W]
std::vector<int64_t> reproject_out_shape(const at::Tensor& image, const at::Tensor& depth);

// The inputs after the checks, contiguous, and the cameras' batch strides.
struct ReprojectArgs {
  at::Tensor image, depth, K, T, Ks;  // Ks is K when K_src is absent
  bool has_src;
  int64_t B, C, H, W, Hs, Ws, t_rows;
  GeometryArgs geometry() const;
};
ReprojectArgs prepare_reproject(const char* op, const at::Tensor& image, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& T,
                                const std::optional<at::Tensor>& K_src);

// Per-batch-element camera gradients [B,...] -> the gradients of the inputs:
// summed over the batch where an input was broadcast, K's two roles added up
// when K also stands in for K_src; empty where not needed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> reduce_camera_grads(
    const ReprojectArgs& a, bool need_K, bool need_T, bool need_Ks, at::Tensor gK, at::Tensor gT,
    at::Tensor gKs);

template <class Dev>
std::tuple<at::Tensor, at::Tensor> reproject_fwd(const at::Tensor& image_in,
                                                 const at::Tensor& depth_in, const at::Tensor& K,
                                                 const at::Tensor& T,
                                                 const std::optional<at::Tensor>& K_src,
                                                 bool with_mask, bool border) {
  const char* op = "packops.reproject";
  const ReprojectArgs a = prepare_reproject(op, image_in, depth_in, K, T, K_src);
  const DType dt = Dev::dtype(op, a.image);
  const typename Dev::Guard guard(a.image.device());
  at::Tensor out = at::empty(reproject_out_shape(a.image, a.depth), a.image.options());
  at::Tensor mask = with_mask ? at::empty(a.depth.sizes(), a.image.options())
                              : at::empty({0}, a.image.options());
  if (a.depth.numel() == 0) return {out, mask};
  Dev::check(op, reproject_forward(dt, a.image.data_ptr(), a.depth.data_ptr(), a.geometry(),
                                   border, out.data_ptr(), data_or_null(with_mask, mask), a.B,
                                   a.C, a.H, a.W, a.Hs, a.Ws, Dev::stream()));
  return {out, mask};
}

template <class Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reproject_bwd(
    const at::Tensor& grad_in, const at::Tensor& image_in, const at::Tensor& depth_in,
    const at::Tensor& K, const at::Tensor& T, const std::optional<at::Tensor>& K_src, bool border,
    bool need_image, bool need_depth, bool need_K, bool need_T, bool need_Ks) {
  const char* op = "packops.reproject_backward";
  const ReprojectArgs a = prepare_reproject(op, image_in, depth_in, K, T, K_src);
  check_grad(op, grad_in, reproject_out_shape(image_in, depth_in), image_in);
  const DType dt = Dev::dtype(op, a.image);
  const typename Dev::Guard guard(a.image.device());
  const at::Tensor g = grad_in.contiguous();
  need_Ks = need_Ks && a.has_src;
  const bool need_pose = need_K || need_T || need_Ks;
  // K's gradient as K_src is needed to add into K's when K_src is absent.
  const bool want_Ks = need_Ks || (need_K && !a.has_src);
  const auto geo = a.K.options();
  // The image gradient accumulates in the geometry type (CUDA: atomics), then
  // is rounded to the image's dtype once; on the CPU the two types agree.
  at::Tensor gi_acc = need_image ? at::zeros(a.image.sizes(), geo) : at::empty({0}, geo);
  at::Tensor gd = maybe_grad(need_depth, a.depth);
  const int64_t blocks = need_pose ? reproject_blocks(a.H, a.W, Dev::stream()) : 0;
  at::Tensor partial = at::empty({need_pose ? a.B * blocks * 12 : 0}, geo);
  at::Tensor gK = need_K ? at::empty({a.B, 3, 3}, geo) : at::empty({0}, geo);
  at::Tensor gKs = want_Ks ? at::empty({a.B, 3, 3}, geo) : at::empty({0}, geo);
  // rows 0..2 are written; row 3 of a 4x4 transform gets no gradient
  at::Tensor gT = !need_T ? at::empty({0}, geo)
                          : (a.t_rows == 4 ? at::zeros({a.B, 4, 4}, geo) : at::empty({a.B, 3, 4}, geo));
  if (a.B > 0 && (need_image || need_depth || need_pose)) {
    Dev::check(op, reproject_backward(dt, g.data_ptr(), a.image.data_ptr(), a.depth.data_ptr(),
                                      a.geometry(), border, data_or_null(need_image, gi_acc),
                                      data_or_null(need_depth, gd), data_or_null(need_pose, partial),
                                      data_or_null(need_K, gK), data_or_null(need_T, gT), a.t_rows,
                                      data_or_null(want_Ks, gKs), a.B, a.C, a.H, a.W, a.Hs, a.Ws,
                                      Dev::stream()));
  }
  at::Tensor gi = !need_image ? at::empty({0}, a.image.options())
                              : (gi_acc.scalar_type() == a.image.scalar_type()
                                     ? gi_acc
                                     : gi_acc.to(a.image.scalar_type()));
  auto [rK, rT, rKs] = reduce_camera_grads(a, need_K, need_T, need_Ks, gK, gT, gKs);
  return {gi, gd, rK, rT, rKs};
}

template <class Dev>
void register_reproject(torch::Library& m) {
  m.impl("reproject_fwd", &reproject_fwd<Dev>);
  m.impl("reproject_bwd", &reproject_bwd<Dev>);
}

}  // namespace packops
