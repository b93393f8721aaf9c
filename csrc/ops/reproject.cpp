// reproject: schemas, input checks and the CPU registration. The wrappers are
// ops/reproject.h; packops/reproject.py is the Python side.
#include "ops/reproject.h"

#include "cpu/reproject.h"

namespace packops {
namespace {

void check_matrix(const char* op, const char* name, const at::Tensor& m, int64_t B,
                  bool transform) {
  const bool rows_ok =
      transform ? (m.dim() == 3 && (m.size(1) == 3 || m.size(1) == 4) && m.size(2) == 4)
                : (m.dim() == 3 && m.size(1) == 3 && m.size(2) == 3);
  TORCH_CHECK(rows_ok && (m.size(0) == B || m.size(0) == 1), op, ": ", name, " must be ",
              transform ? "[B,4,4] or [B,3,4]" : "[B,3,3]", " (or batch 1) with B=",
              std::to_string(B), ", got ", shape_str(m));
}

}  // namespace

void check_reproject(const char* op, const at::Tensor& image, const at::Tensor& depth,
                     const at::Tensor& K, const at::Tensor& T,
                     const std::optional<at::Tensor>& K_src) {
  TORCH_CHECK(image.dim() == 4, op, ": image must be [B,C,Hs,Ws], got shape ", shape_str(image));
  const int64_t B = image.size(0);
  TORCH_CHECK(depth.dim() == 4 && depth.size(1) == 1 && depth.size(0) == B, op,
              ": depth must be [B,1,H,W] with the image's batch size, got ", shape_str(depth),
              " for image ", shape_str(image));
  TORCH_CHECK(image.size(2) >= 2 && image.size(3) >= 2, op,
              ": image needs H >= 2 and W >= 2, got shape ", shape_str(image));
  check_matrix(op, "K", K, B, false);
  check_matrix(op, "T", T, B, true);
  if (K_src) check_matrix(op, "K_src", *K_src, B, false);
  const at::ScalarType geometry = acc_type(image.scalar_type());
  for (const at::Tensor* t : {&depth, &K, &T, K_src ? &*K_src : &K}) {
    TORCH_CHECK(t->scalar_type() == geometry, op, ": depth, K, T and K_src must be ",
                c10::toString(geometry), " for a ", dtype_str(image), " image, got ",
                dtype_str(*t));
    TORCH_CHECK(t->device() == image.device(), op,
                ": image, depth, K, T and K_src must be on one device, got ", device_str(image),
                " and ", device_str(*t));
  }
}

std::vector<int64_t> reproject_out_shape(const at::Tensor& image, const at::Tensor& depth) {
  return {image.size(0), image.size(1), depth.size(2), depth.size(3)};
}

GeometryArgs ReprojectArgs::geometry() const {
  return {K.data_ptr(), T.data_ptr(), Ks.data_ptr(), K.size(0) == 1 ? 0 : 9,
          T.size(0) == 1 ? 0 : t_rows * 4, Ks.size(0) == 1 ? 0 : 9};
}

ReprojectArgs prepare_reproject(const char* op, const at::Tensor& image, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& T,
                                const std::optional<at::Tensor>& K_src) {
  check_reproject(op, image, depth, K, T, K_src);
  ReprojectArgs a;
  a.image = image.contiguous();
  a.depth = depth.contiguous();
  a.K = K.contiguous();
  a.T = T.contiguous();
  a.has_src = K_src.has_value();
  a.Ks = a.has_src ? K_src->contiguous() : a.K;
  a.B = image.size(0);
  a.C = image.size(1);
  a.H = depth.size(2);
  a.W = depth.size(3);
  a.Hs = image.size(2);
  a.Ws = image.size(3);
  a.t_rows = T.size(1);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reduce_camera_grads(
    const ReprojectArgs& a, bool need_K, bool need_T, bool need_Ks, at::Tensor gK, at::Tensor gT,
    at::Tensor gKs) {
  auto fit = [](at::Tensor g, const at::Tensor& like) {
    return like.size(0) == 1 && g.size(0) != 1 ? g.sum(0, true) : g;
  };
  if (!a.has_src && need_K) gK = gK + gKs;
  const auto none = at::empty({0}, a.K.options());
  return {need_K ? fit(gK, a.K) : none, need_T ? fit(gT, a.T) : none,
          a.has_src && need_Ks ? fit(gKs, a.Ks) : none};
}

TORCH_LIBRARY_FRAGMENT(packops, m) {
  // image: [B,C,Hs,Ws], depth: [B,1,H,W], K, K_src: [B|1,3,3], T: [B|1,3|4,4];
  // border: padding_mode "border" instead of "zeros"
  //   -> (out [B,C,H,W], mask [B,1,H,W] or empty)
  m.def("reproject_fwd(Tensor image, Tensor depth, Tensor K, Tensor T, Tensor? K_src,"
        " bool with_mask, bool border) -> (Tensor, Tensor)");
  // grad: [B,C,H,W] -> (grad_image, grad_depth, grad_K, grad_T, grad_K_src); unneeded ones
  // (and grad_K_src without K_src) are empty
  m.def("reproject_bwd(Tensor grad, Tensor image, Tensor depth, Tensor K, Tensor T, Tensor? K_src,"
        " bool border, bool need_image, bool need_depth, bool need_K, bool need_T,"
        " bool need_K_src) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) { register_reproject<CpuDevice>(m); }

}  // namespace packops
