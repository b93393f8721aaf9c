// The DType -> C++ type switch of the CPU launchers (the CUDA twin is
// dispatch() in cuda/element.cuh). The CPU kernels serve float and double.
#pragma once

#include "packops/common.h"

namespace packops {
namespace cpu {

template <typename T> struct Tag { using type = T; };

// Runs fn(Tag<T>{}) for the element type dt names; kUnsupportedDType for
// half and bfloat16 (the op wrappers refuse those before launching).
template <typename Fn>
inline Status dispatch(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::Float32: fn(Tag<float>{}); return Status::kOk;
    case DType::Float64: fn(Tag<double>{}); return Status::kOk;
    default: return Status::kUnsupportedDType;
  }
}

}  // namespace cpu
}  // namespace packops
