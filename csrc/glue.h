// The torch glue shared by every op wrapper (csrc/ops/<op>.h): messages, the
// gradient helpers and the CPU device policy. The CUDA policy is
// csrc/cuda/device.h; kernels never see a torch type.
//
// An op wrapper is written once as a template over a device policy `Dev`:
//   Dev::dtype(op, t)   the kernels' DType for t, or a clear error
//   Dev::Guard g(dev)   makes device dev current (CUDA) for the wrapper's scope
//   Dev::stream()       the launchers' last argument; its namespace picks the
//                       launcher (packops::cpu::f or packops::cuda::f)
//   Dev::check(op, r)   turns a launcher's result into an error
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "packops/common.h"

namespace packops {

// Messages are built from C strings and std::string only: streaming an
// integer (or c10's ArrayRef / Device, which stream integers) into the
// ostream of TORCH_CHECK segfaulted on the GPU machine's image, where the
// extension and torch come from different compilers. Numbers go through
// std::to_string.
inline std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}
inline std::string shape_str(const at::Tensor& t) { return shape_str(t.sizes()); }

inline std::string device_str(const at::Tensor& t) {
  return t.is_cuda() ? "cuda:" + std::to_string(t.get_device()) : (t.is_cpu() ? "cpu" : "other");
}

inline std::string dtype_str(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

// `grad` is the incoming gradient of an output of shape `expected`.
inline void check_grad(const char* op, const at::Tensor& grad, at::IntArrayRef expected,
                       const at::Tensor& x) {
  TORCH_CHECK(grad.sizes() == expected, op, ": grad must have shape ", shape_str(expected),
              ", got ", shape_str(grad));
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.device() == x.device(), op,
              ": grad must match the inputs' dtype and device, got ", dtype_str(grad), " on ",
              device_str(grad));
}

// A scalar parameter (alpha, C1, C2) must be a finite number.
inline void check_finite(const char* op, const char* name, double v) {
  TORCH_CHECK(std::isfinite(v), op, ": ", name, " must be a finite number, got ",
              std::to_string(v));
}

// The gradient of an input that needs none is an empty tensor: the autograd
// formula in Python (packops/_library.py) maps it to None.
inline at::Tensor maybe_grad(bool need, const at::Tensor& like) {
  return need ? at::empty(like.sizes(), like.options()) : at::empty({0}, like.options());
}

// The launchers skip an output whose pointer is null.
inline void* data_or_null(bool need, const at::Tensor& t) {
  return need && t.numel() ? t.data_ptr() : nullptr;
}

// float64 images run their geometry (reproject) and accumulate in float64,
// everything else in float32.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline DType to_dtype(at::ScalarType t, bool* ok) {
  *ok = true;
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: *ok = false; return DType::Float32;
  }
}

struct CpuDevice {
  struct Guard {
    explicit Guard(const at::Device&) {}
  };
  static cpu::Stream stream() { return {}; }
  static DType dtype(const char* op, const at::Tensor& t) {
    bool ok = false;
    const DType dt = to_dtype(t.scalar_type(), &ok);
    TORCH_CHECK(ok && (dt == DType::Float32 || dt == DType::Float64), op,
                ": the cpu backend supports float32 and float64, got ", dtype_str(t),
                "; use the reference or triton backend for this dtype");
    return dt;
  }
  static void check(const char* op, cpu::Status s) {
    TORCH_CHECK(s == cpu::Status::kOk, op, ": the cpu kernel refused its arguments (status ",
                std::to_string(static_cast<int>(s)), ")");
  }
};

}  // namespace packops
