// pack3d / unpack3d: schemas, input checks and the CPU registration. The
// wrappers are ops/pack.h; packops/pack.py is the Python side.
#include "ops/pack.h"

#include "cpu/pack.h"

namespace packops {

void check_pack(const char* op, const at::Tensor& x, const at::Tensor& weight,
                const at::Tensor& bias, int64_t r, bool unpack) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B,C,H,W], got shape ", shape_str(x));
  TORCH_CHECK(r >= 1, op, ": r must be >= 1, got ", std::to_string(r));
  TORCH_CHECK(weight.dim() == 5 && weight.size(0) >= 1 && weight.size(1) == 1 &&
                  weight.size(2) == 3 && weight.size(3) == 3 && weight.size(4) == 3,
              op, ": weight must be [d,1,3,3,3], got shape ", shape_str(weight));
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be [d] = [",
              std::to_string(weight.size(0)), "] for weight ", shape_str(weight), ", got shape ",
              shape_str(bias));
  for (const at::Tensor* t : {&weight, &bias}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(), op,
                ": x, weight and bias must have the same dtype and device, got ", dtype_str(x),
                " on ", device_str(x), " and ", dtype_str(*t), " on ", device_str(*t));
  }
  if (unpack) {
    TORCH_CHECK((weight.size(0) * x.size(1)) % (r * r) == 0, op, ": d*C = ",
                std::to_string(weight.size(0)), "*", std::to_string(x.size(1)),
                " must be divisible by r*r = ", std::to_string(r * r), " (x ", shape_str(x),
                ", weight ", shape_str(weight), ")");
  } else {
    TORCH_CHECK(x.size(2) % r == 0 && x.size(3) % r == 0, op,
                ": H and W of x must be divisible by r = ", std::to_string(r), ", got shape ",
                shape_str(x));
  }
}

std::vector<int64_t> pack_out_shape(const at::Tensor& x, int64_t d, int64_t r, bool unpack) {
  if (unpack) return {x.size(0), d * x.size(1) / (r * r), x.size(2) * r, x.size(3) * r};
  return {x.size(0), d * r * r * x.size(1), x.size(2) / r, x.size(3) / r};
}

PackArgs prepare_pack(const char* op, const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias, int64_t r, bool unpack) {
  check_pack(op, x, weight, bias, r, unpack);
  return {x.contiguous(), weight.contiguous(), bias.contiguous(), x.size(0), x.size(1),
          x.size(2), x.size(3), weight.size(0)};
}

TORCH_LIBRARY_FRAGMENT(packops, m) {
  // x: [B,C,H,W], weight: [d,1,3,3,3], bias: [d] -> [B, d*r*r*C, H/r, W/r]
  m.def("pack3d_fwd(Tensor x, Tensor weight, Tensor bias, int r) -> Tensor");
  // grad: [B, d*r*r*C, H/r, W/r] -> (grad_x, grad_weight, grad_bias), empty when not needed
  m.def("pack3d_bwd(Tensor grad, Tensor x, Tensor weight, int r, bool need_x, bool need_weight,"
        " bool need_bias) -> (Tensor, Tensor, Tensor)");
  // x: [B,C,H,W] -> [B, d*C/(r*r), H*r, W*r]
  m.def("unpack3d_fwd(Tensor x, Tensor weight, Tensor bias, int r) -> Tensor");
  // grad: [B, d*C/(r*r), H*r, W*r] -> (grad_x, grad_weight, grad_bias)
  m.def("unpack3d_bwd(Tensor grad, Tensor x, Tensor weight, int r, bool need_x, bool need_weight,"
        " bool need_bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) { register_pack<CpuDevice>(m); }

}  // namespace packops
