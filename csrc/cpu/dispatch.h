// The DType -> C++ type switch of the CPU launchers (the CUDA twin is
// dispatch() in cuda/element.cuh). The CPU kernels serve float and double.
#pragma once

#include "packops/common.h"

// run_vectorized(fn): fn() compiled for AVX2 + FMA when the CPU has them,
// else for the x86-64 baseline (SSE2). `flatten` inlines fn and its callees
// into each variant, so their `omp simd` loops are vectorised for that
// instruction set; the build needs no -march flag and runs anywhere. (GCC's
// target_clones("arch=haswell") dispatches on the CPU model and picked the
// baseline on the AMD EPYC we develop on; this checks the features.) Call it
// inside an OpenMP region, around the loops: the region's outlined body does
// not inherit a caller's target.
// run_vectorized_nofma(fn): AVX2 without FMA, for code whose accuracy rests
// on cancellations (SSIM's variances E[x^2] - mu^2 and their gradients): the
// compiler contracts a*b - c*d into fma(a, b, -c*d), which rounds the two
// products differently, and SSIM's float32 gradient then lost about 3x the
// accuracy of the unfused PyTorch reference (measured, tests/test_photometric.py).
#if defined(__x86_64__) && defined(__GNUC__)
template <class Fn>
__attribute__((target("avx2,fma"), flatten)) void run_avx2_fma(const Fn& fn) { fn(); }
template <class Fn>
__attribute__((target("avx2"), flatten)) void run_avx2(const Fn& fn) { fn(); }
template <class Fn> __attribute__((flatten)) void run_baseline(const Fn& fn) { fn(); }
inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
inline bool has_avx2_fma() {
  static const bool yes = has_avx2() && __builtin_cpu_supports("fma");
  return yes;
}
template <class Fn> inline void run_vectorized(const Fn& fn) {
  if (has_avx2_fma())
    run_avx2_fma(fn);
  else
    run_baseline(fn);
}
template <class Fn> inline void run_vectorized_nofma(const Fn& fn) {
  if (has_avx2())
    run_avx2(fn);
  else
    run_baseline(fn);
}
#else
template <class Fn> inline void run_vectorized(const Fn& fn) { fn(); }
template <class Fn> inline void run_vectorized_nofma(const Fn& fn) { fn(); }
#endif

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
