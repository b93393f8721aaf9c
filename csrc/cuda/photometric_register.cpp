// The CUDA registration of ssim / photometric_loss: the wrappers of
// ops/photometric.h with the CUDA device policy and cuda/photometric.cu's launchers.
#include "cuda/device.h"
#include "cuda/photometric.h"
#include "ops/photometric.h"

namespace packops {

TORCH_LIBRARY_IMPL(packops, CUDA, m) { register_photometric<CudaDevice>(m); }

}  // namespace packops
