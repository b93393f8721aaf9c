// ssim / photometric_loss: schemas, input checks and the CPU registration.
// The wrappers are ops/photometric.h; packops/photometric.py is the Python side.
#include "ops/photometric.h"

#include "cpu/photometric.h"

namespace packops {
namespace {

void check_pair(const char* op, const char* xn, const at::Tensor& x, const char* yn,
                const at::Tensor& y) {
  TORCH_CHECK(x.dim() == 4, op, ": ", xn, " must be [B,C,H,W], got shape ", shape_str(x));
  TORCH_CHECK(x.sizes() == y.sizes(), op, ": ", xn, " and ", yn,
              " must have the same shape, got ", shape_str(x), " and ", shape_str(y));
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), op, ": ", xn, " and ", yn,
              " must have the same dtype, got ", dtype_str(x), " and ", dtype_str(y));
  TORCH_CHECK(x.device() == y.device(), op, ": ", xn, " and ", yn,
              " must be on the same device, got ", device_str(x), " and ", device_str(y));
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, op, ": ", xn,
              " needs H >= 2 and W >= 2 (reflection padding), got shape ", shape_str(x));
}

}  // namespace

void check_constants(const char* op, double alpha, double C1, double C2) {
  check_finite(op, "alpha", alpha);
  check_finite(op, "C1", C1);
  check_finite(op, "C2", C2);
}

void check_channels(const char* op, const at::Tensor& p) {
  TORCH_CHECK(p.size(1) >= 1, op, ": pred needs at least one channel, got shape ", shape_str(p));
}

Pair prepare_pair(const char* op, bool photo, const at::Tensor& x, const at::Tensor& y,
                  double alpha, double C1, double C2) {
  check_pair(op, photo ? "pred" : "x", x, photo ? "target" : "y", y);
  check_constants(op, alpha, C1, C2);
  if (photo) check_channels(op, x);
  return {x.contiguous(), y.contiguous(), x.size(0), x.size(1), x.size(2), x.size(3)};
}

std::vector<int64_t> pair_out_shape(const at::Tensor& x, bool photo) {
  if (photo) return {x.size(0), 1, x.size(2), x.size(3)};
  return x.sizes().vec();
}

TORCH_LIBRARY_FRAGMENT(packops, m) {
  // x, y: [B,C,H,W] -> [B,C,H,W]
  m.def("ssim_fwd(Tensor x, Tensor y, float C1, float C2) -> Tensor");
  // grad: [B,C,H,W] -> (grad_x, grad_y); an input that needs no gradient gets an empty tensor
  m.def("ssim_bwd(Tensor grad, Tensor x, Tensor y, float C1, float C2, bool need_x, bool need_y)"
        " -> (Tensor, Tensor)");
  // pred, target: [B,C,H,W], C >= 1 -> [B,1,H,W]
  m.def("photometric_fwd(Tensor pred, Tensor target, float alpha, float C1, float C2) -> Tensor");
  // grad: [B,1,H,W] -> (grad_pred, grad_target)
  m.def("photometric_bwd(Tensor grad, Tensor pred, Tensor target, float alpha, float C1, float C2,"
        " bool need_pred, bool need_target) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) { register_photometric<CpuDevice>(m); }

}  // namespace packops
