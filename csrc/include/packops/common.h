// Portability macros and small helpers shared by the CPU (.cpp) and CUDA (.cu)
// kernels. No torch headers here: the .cu files must compile with plain nvcc.
#pragma once

#if defined(__CUDACC__)
#define PACKOPS_HD __host__ __device__ __forceinline__
#else
#define PACKOPS_HD inline
#endif

#include <cstdint>

namespace packops {

// Element types a launcher can be asked to handle. The torch-side code maps
// at::ScalarType onto this so that kernels never see a torch type.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// The last argument of every kernel launcher: the stream names the device, so
// one generic op wrapper (csrc/ops/<op>.h) calls `launcher(..., Device::stream())`
// and argument-dependent lookup picks packops::cpu::launcher or
// packops::cuda::launcher by the stream's namespace.
namespace cpu {
struct Stream {};  // the CPU kernels are synchronous (OpenMP)
// What a CPU launcher returns; the CUDA launchers return cudaError_t.
enum class Status : int { kOk = 0, kUnsupportedDType = 1, kInvalidShape = 2 };
}  // namespace cpu
namespace cuda {
struct Stream {
  void* handle;  // a cudaStream_t (kept as void* so this header needs no CUDA header)
};
}  // namespace cuda

// Accumulation type: double for double inputs, float for everything else
// (float, half, bfloat16), as the op contract requires.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// Reflection padding of width 1 (ReflectionPad2d(1)): -1 -> 1, n -> n-2.
// Valid for i in [-1, n] and n >= 2.
PACKOPS_HD int reflect1(int i, int n) {
  return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
}

// NaN-propagating clamp to [lo, hi]. std::min/max and fminf/fmaxf drop NaN,
// but the contract is "NaN in, NaN out", like torch.clamp.
template <typename A> PACKOPS_HD A clamp_nan(A v, A lo, A hi) {
  return v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
}

// sign(x) with sign(0) = 0, the subgradient torch.abs uses.
template <typename A> PACKOPS_HD A sign0(A v) {
  return static_cast<A>((v > A(0)) - (v < A(0)));
}

}  // namespace packops
