// The CUDA device policy of the op wrappers (see csrc/glue.h): device guard,
// current stream, the four DTypes, launch errors. Included only by the
// csrc/cuda/<op>_register.cpp files, which are compiled in CUDA builds only.
#pragma once

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "glue.h"

namespace packops {

struct CudaDevice {
  using Guard = c10::cuda::CUDAGuard;  // constructed from the inputs' device
  static cuda::Stream stream() { return {c10::cuda::getCurrentCUDAStream().stream()}; }
  static DType dtype(const char* op, const at::Tensor& t) {
    bool ok = false;
    const DType dt = to_dtype(t.scalar_type(), &ok);
    TORCH_CHECK(ok, op, ": the cuda backend supports float32, float64, float16 and bfloat16, got ",
                dtype_str(t));
    return dt;
  }
  static void check(const char* op, cudaError_t err) {
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  }
};

}  // namespace packops
