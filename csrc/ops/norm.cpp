// group_norm_elu: schemas, input checks and the CPU registration. The
// wrappers are ops/norm.h; packops/norm.py is the Python side.
#include "ops/norm.h"

#include "cpu/norm.h"

namespace packops {

void check_group_norm_elu(const char* op, const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& bias, int64_t groups, double eps, double alpha) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B,C,H,W], got shape ", shape_str(x));
  TORCH_CHECK(groups >= 1 && x.size(1) % groups == 0, op, ": the channels of x (",
              std::to_string(x.size(1)), ") must be divisible by groups = ",
              std::to_string(groups), ", got shape ", shape_str(x));
  check_finite(op, "eps", eps);
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", std::to_string(eps));
  check_finite(op, "alpha", alpha);
  for (const char* name : {"weight", "bias"}) {
    const at::Tensor& t = name[0] == 'w' ? weight : bias;
    TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(1), op, ": ", name, " must be [C] = [",
                std::to_string(x.size(1)), "] for x ", shape_str(x), ", got shape ",
                shape_str(t));
    TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), op,
                ": x and ", name, " must have the same dtype and device, got ", dtype_str(x),
                " on ", device_str(x), " and ", dtype_str(t), " on ", device_str(t));
  }
}

NormArgs prepare_group_norm_elu(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, int64_t groups, double eps,
                                double alpha) {
  check_group_norm_elu(op, x, weight, bias, groups, eps, alpha);
  return {x.contiguous(), weight.contiguous(), bias.contiguous(), x.size(0), x.size(1),
          x.size(2) * x.size(3), groups};
}

void check_stats(const char* op, const NormArgs& a, const at::Tensor& mean,
                 const at::Tensor& rstd) {
  for (const at::Tensor* t : {&mean, &rstd}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == a.B && t->size(1) == a.G &&
                    t->scalar_type() == acc_type(a.x.scalar_type()) &&
                    t->device() == a.x.device(),
                op, ": mean and rstd must be the forward's [B, groups] statistics, got ",
                shape_str(*t), " ", dtype_str(*t));
  }
}

TORCH_LIBRARY_FRAGMENT(packops, m) {
  // x: [B,C,H,W], weight, bias: [C], C divisible by groups
  //   -> (y [B,C,H,W], mean [B,groups], rstd [B,groups]; float64 for float64 x, else float32)
  m.def("group_norm_elu_fwd(Tensor x, Tensor weight, Tensor bias, int groups, float eps, "
        "float alpha) -> (Tensor, Tensor, Tensor)");
  // grad: [B,C,H,W] -> (grad_x, grad_weight, grad_bias); unneeded ones are empty
  m.def("group_norm_elu_bwd(Tensor grad, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
        "Tensor rstd, int groups, float alpha, bool need_x, bool need_weight, bool need_bias) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) { register_norm<CpuDevice>(m); }

}  // namespace packops
