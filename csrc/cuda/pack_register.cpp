// The CUDA registration of pack3d / unpack3d: the wrappers of ops/pack.h with
// the CUDA device policy and cuda/pack.cu's launchers.
#include "cuda/device.h"
#include "cuda/pack.h"
#include "ops/pack.h"

namespace packops {

TORCH_LIBRARY_IMPL(packops, CUDA, m) { register_pack<CudaDevice>(m); }

}  // namespace packops
