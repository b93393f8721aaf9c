// Element-type plumbing shared by the .cu files: widening loads, rounding
// stores and the DType -> C++ type switch. No torch headers.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "packops/common.h"

namespace packops {
namespace cuda {

// Half and bfloat16 are widened to float on load and rounded once on store, so
// all arithmetic happens in AccType<T>.
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T> struct Tag { using type = T; };

// Runs fn(Tag<T>{}) for the element type dt names.
template <typename Fn>
inline cudaError_t dispatch(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::Float32: return fn(Tag<float>{});
    case DType::Float64: return fn(Tag<double>{});
    case DType::Float16: return fn(Tag<__half>{});
    case DType::BFloat16: return fn(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace packops
