// The CUDA registration of reproject: the wrappers of ops/reproject.h with the
// CUDA device policy and cuda/reproject.cu's launchers.
#include "cuda/device.h"
#include "cuda/reproject.h"
#include "ops/reproject.h"

namespace packops {

TORCH_LIBRARY_IMPL(packops, CUDA, m) { register_reproject<CudaDevice>(m); }

}  // namespace packops
