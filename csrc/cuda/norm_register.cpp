// The CUDA registration of group_norm_elu: the wrappers of ops/norm.h with the
// CUDA device policy and cuda/norm.cu's launchers.
#include "cuda/device.h"
#include "cuda/norm.h"
#include "ops/norm.h"

namespace packops {

TORCH_LIBRARY_IMPL(packops, CUDA, m) { register_norm<CudaDevice>(m); }

}  // namespace packops
