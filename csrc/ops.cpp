// Every packops schema in one TORCH_LIBRARY, the CPU implementations, and the
// CUDA implementations when built with CUDA (PACKOPS_WITH_CUDA). Kernels take
// raw pointers; this file owns the tensor checks, contiguity, dtype dispatch,
// device guard and stream.
#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <optional>
#include <tuple>

#include "cpu/photometric.h"
#include "cpu/reproject.h"
#include "packops/reproject.h"

#ifdef PACKOPS_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/photometric.h"
#include "cuda/reproject.h"
#endif

// Importing packops._C runs the static initialisers below (the op
// registrations); the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace packops {
namespace {

// Messages are built from C strings and std::string only: streaming an
// integer (or c10's ArrayRef / Device, which stream integers) into the
// ostream of TORCH_CHECK segfaulted on the GPU machine's image, where the
// extension and torch come from different compilers. Numbers go through
// std::to_string.
std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}
std::string shape_str(const at::Tensor& t) { return shape_str(t.sizes()); }

std::string device_str(const at::Tensor& t) {
  return t.is_cuda() ? "cuda:" + std::to_string(t.get_device()) : (t.is_cpu() ? "cpu" : "other");
}

// Checks shared by all SSIM-family entry points; messages name the argument.
void check_pair(const char* op, const char* xn, const at::Tensor& x, const char* yn,
                const at::Tensor& y) {
  TORCH_CHECK(x.dim() == 4, op, ": ", xn, " must be [B,C,H,W], got shape ", shape_str(x));
  TORCH_CHECK(x.sizes() == y.sizes(), op, ": ", xn, " and ", yn,
              " must have the same shape, got ", shape_str(x), " and ", shape_str(y));
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), op, ": ", xn, " and ", yn,
              " must have the same dtype, got ", x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK(x.device() == y.device(), op, ": ", xn, " and ", yn,
              " must be on the same device, got ", device_str(x), " and ", device_str(y));
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, op, ": ", xn,
              " needs H >= 2 and W >= 2 (reflection padding), got shape ", shape_str(x));
}

// The channel mean of photometric_loss is undefined for C == 0.
void check_channels(const char* op, const at::Tensor& p) {
  TORCH_CHECK(p.size(1) >= 1, op, ": pred needs at least one channel, got shape ", shape_str(p));
}

void check_grad(const char* op, const at::Tensor& grad, at::IntArrayRef expected,
                const at::Tensor& x) {
  TORCH_CHECK(grad.sizes() == expected, op, ": grad must have shape ", shape_str(expected), ", got ",
              shape_str(grad));
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.device() == x.device(), op,
              ": grad must match the inputs' dtype and device, got ", grad.scalar_type(),
              " on ", device_str(grad));
}

std::vector<int64_t> loss_shape(const at::Tensor& x) {
  return {x.size(0), 1, x.size(2), x.size(3)};
}

// The gradient of an input that needs none is an empty tensor: the autograd
// formula in Python maps it to None.
at::Tensor maybe_grad(bool need, const at::Tensor& like) {
  return need ? at::empty(like.sizes(), like.options()) : at::empty({0}, like.options());
}

template <typename T> T* ptr_or_null(bool need, at::Tensor& t) {
  return need && t.numel() ? t.data_ptr<T>() : nullptr;
}

// ------------------------------------------------------------------- CPU
#define PACKOPS_CPU_DTYPES(op, t, ...)                                                     \
  do {                                                                                     \
    if (t.scalar_type() == at::kFloat) {                                                   \
      using scalar_t = float;                                                              \
      __VA_ARGS__();                                                                       \
    } else if (t.scalar_type() == at::kDouble) {                                           \
      using scalar_t = double;                                                             \
      __VA_ARGS__();                                                                       \
    } else {                                                                               \
      TORCH_CHECK(false, op, ": the cpu backend supports float32 and float64, got ",       \
                  t.scalar_type(), "; use the reference or triton backend for this dtype"); \
    }                                                                                      \
  } while (0)

at::Tensor ssim_fwd_cpu(const at::Tensor& x_in, const at::Tensor& y_in, double C1, double C2) {
  check_pair("packops.ssim", "x", x_in, "y", y_in);
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  PACKOPS_CPU_DTYPES("packops.ssim", x, [&] {
    cpu::ssim_forward<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                out.data_ptr<scalar_t>(), x.size(0), x.size(1), x.size(2),
                                x.size(3), C1, C2);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> ssim_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                const at::Tensor& y_in, double C1, double C2,
                                                bool need_x, bool need_y) {
  check_pair("packops.ssim_backward", "x", x_in, "y", y_in);
  check_grad("packops.ssim_backward", grad_in, x_in.sizes(), x_in);
  const at::Tensor g = grad_in.contiguous(), x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, x), gy = maybe_grad(need_y, y);
  if (x.numel() == 0 || !(need_x || need_y)) return {gx, gy};
  PACKOPS_CPU_DTYPES("packops.ssim_backward", x, [&] {
    cpu::ssim_backward<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                 y.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(need_x, gx),
                                 ptr_or_null<scalar_t>(need_y, gy), x.size(0), x.size(1),
                                 x.size(2), x.size(3), C1, C2);
  });
  return {gx, gy};
}

at::Tensor photometric_fwd_cpu(const at::Tensor& p_in, const at::Tensor& t_in, double alpha,
                               double C1, double C2) {
  check_pair("packops.photometric_loss", "pred", p_in, "target", t_in);
  check_channels("packops.photometric_loss", p_in);
  const at::Tensor p = p_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = at::empty(loss_shape(p), p.options());
  if (p.numel() == 0) return out;
  PACKOPS_CPU_DTYPES("packops.photometric_loss", p, [&] {
    cpu::photometric_forward<scalar_t>(p.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
                                       out.data_ptr<scalar_t>(), p.size(0), p.size(1),
                                       p.size(2), p.size(3), alpha, C1, C2);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> photometric_bwd_cpu(const at::Tensor& grad_in,
                                                       const at::Tensor& p_in,
                                                       const at::Tensor& t_in, double alpha,
                                                       double C1, double C2, bool need_p,
                                                       bool need_t) {
  check_pair("packops.photometric_loss_backward", "pred", p_in, "target", t_in);
  check_grad("packops.photometric_loss_backward", grad_in, loss_shape(p_in), p_in);
  const at::Tensor g = grad_in.contiguous(), p = p_in.contiguous(), t = t_in.contiguous();
  at::Tensor gp = maybe_grad(need_p, p), gt = maybe_grad(need_t, t);
  if (p.numel() == 0 || !(need_p || need_t)) return {gp, gt};
  PACKOPS_CPU_DTYPES("packops.photometric_loss_backward", p, [&] {
    cpu::photometric_backward<scalar_t>(g.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                                        t.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(need_p, gp),
                                        ptr_or_null<scalar_t>(need_t, gt), p.size(0), p.size(1),
                                        p.size(2), p.size(3), alpha, C1, C2);
  });
  return {gp, gt};
}

// ------------------------------------------------------------- reproject
// image: [B,C,Hs,Ws]; depth: [B,1,H,W]; K, K_src: [B|1,3,3]; T: [B|1,3|4,4].
// `geometry` is the dtype depth, K, T and K_src must have: the image's on CPU;
// float64 for float64 images, else float32, on CUDA.
void check_matrix(const char* op, const char* name, const at::Tensor& m, int64_t B,
                  bool transform) {
  const bool rows_ok = transform ? (m.dim() == 3 && (m.size(1) == 3 || m.size(1) == 4) && m.size(2) == 4)
                                 : (m.dim() == 3 && m.size(1) == 3 && m.size(2) == 3);
  TORCH_CHECK(rows_ok && (m.size(0) == B || m.size(0) == 1), op, ": ", name, " must be ",
              transform ? "[B,4,4] or [B,3,4]" : "[B,3,3]", " (or batch 1) with B=", std::to_string(B), ", got ",
              shape_str(m));
}

void check_reproject(const char* op, const at::Tensor& image, const at::Tensor& depth,
                     const at::Tensor& K, const at::Tensor& T,
                     const std::optional<at::Tensor>& K_src, at::ScalarType geometry) {
  TORCH_CHECK(image.dim() == 4, op, ": image must be [B,C,Hs,Ws], got shape ", shape_str(image));
  const int64_t B = image.size(0);
  TORCH_CHECK(depth.dim() == 4 && depth.size(1) == 1 && depth.size(0) == B, op,
              ": depth must be [B,1,H,W] with the image's batch size, got ", shape_str(depth),
              " for image ", shape_str(image));
  TORCH_CHECK(image.size(2) >= 1 && image.size(3) >= 1, op,
              ": image must not be empty in H or W, got ", shape_str(image));
  check_matrix(op, "K", K, B, false);
  check_matrix(op, "T", T, B, true);
  if (K_src) check_matrix(op, "K_src", *K_src, B, false);
  for (const at::Tensor* t : {&depth, &K, &T}) {
    TORCH_CHECK(t->scalar_type() == geometry, op, ": depth, K, T and K_src must be ", geometry,
                " for a ", image.scalar_type(), " image, got ", t->scalar_type());
    TORCH_CHECK(t->device() == image.device(), op, ": image, depth, K, T and K_src must be on "
                "one device, got ", device_str(image), " and ", device_str(*t));
  }
  if (K_src) {
    TORCH_CHECK(K_src->scalar_type() == geometry && K_src->device() == image.device(), op,
                ": K_src must be ", geometry, " on ", device_str(image), ", got ",
                K_src->scalar_type(), " on ", device_str(*K_src));
  }
}

std::vector<int64_t> reproject_out_shape(const at::Tensor& image, const at::Tensor& depth) {
  return {image.size(0), image.size(1), depth.size(2), depth.size(3)};
}

// The camera matrices, contiguous, with their batch strides (0 = broadcast).
struct Cameras {
  at::Tensor K, T, Ks;  // Ks is K when K_src is absent
  int64_t k_stride, t_stride, ks_stride, t_rows;
};

Cameras cameras(const at::Tensor& K, const at::Tensor& T, const std::optional<at::Tensor>& K_src) {
  Cameras c;
  c.K = K.contiguous();
  c.T = T.contiguous();
  c.Ks = K_src ? K_src->contiguous() : c.K;
  c.t_rows = T.size(1);
  c.k_stride = c.K.size(0) == 1 ? 0 : 9;
  c.t_stride = c.T.size(0) == 1 ? 0 : c.t_rows * 4;
  c.ks_stride = c.Ks.size(0) == 1 ? 0 : 9;
  return c;
}

// Per-batch-element gradients [B,...] -> the gradients of the camera inputs:
// summed over the batch where the input was broadcast, and K's two roles
// added up when K also stands in for K_src.
std::tuple<at::Tensor, at::Tensor, at::Tensor> reduce_camera_grads(
    const Cameras& c, bool has_src, bool need_K, bool need_T, bool need_Ks, at::Tensor gK,
    at::Tensor gT, at::Tensor gKs) {
  auto fit = [](at::Tensor g, const at::Tensor& like) {
    return like.size(0) == 1 && g.size(0) != 1 ? g.sum(0, true) : g;
  };
  if (!has_src && need_K) gK = gK + gKs;
  return {need_K ? fit(gK, c.K) : at::empty({0}, c.K.options()),
          need_T ? fit(gT, c.T) : at::empty({0}, c.T.options()),
          has_src && need_Ks ? fit(gKs, c.Ks) : at::empty({0}, c.K.options())};
}

std::tuple<at::Tensor, at::Tensor> reproject_fwd_cpu(
    const at::Tensor& image_in, const at::Tensor& depth_in, const at::Tensor& K,
    const at::Tensor& T, const std::optional<at::Tensor>& K_src, bool with_mask) {
  const char* op = "packops.reproject";
  check_reproject(op, image_in, depth_in, K, T, K_src, image_in.scalar_type());
  const at::Tensor image = image_in.contiguous(), depth = depth_in.contiguous();
  const Cameras c = cameras(K, T, K_src);
  const int64_t B = image.size(0);
  at::Tensor out = at::empty(reproject_out_shape(image, depth), image.options());
  at::Tensor mask = with_mask ? at::empty(depth.sizes(), image.options()) : at::empty({0}, image.options());
  if (depth.numel() == 0) return {out, mask};
  PACKOPS_CPU_DTYPES(op, image, [&] {
    std::vector<scalar_t> P(B * 12);
    const scalar_t *Kp = c.K.data_ptr<scalar_t>(), *Tp = c.T.data_ptr<scalar_t>(),
                   *Ksp = c.Ks.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b)
      fold(Kp + b * c.k_stride, Tp + b * c.t_stride, Ksp + b * c.ks_stride, P.data() + b * 12);
    cpu::reproject_forward<scalar_t>(image.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
                                     P.data(), out.data_ptr<scalar_t>(),
                                     ptr_or_null<scalar_t>(with_mask, mask), B, image.size(1),
                                     depth.size(2), depth.size(3), image.size(2), image.size(3));
  });
  return {out, mask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reproject_bwd_cpu(
    const at::Tensor& grad_in, const at::Tensor& image_in, const at::Tensor& depth_in,
    const at::Tensor& K, const at::Tensor& T, const std::optional<at::Tensor>& K_src,
    bool need_image, bool need_depth, bool need_K, bool need_T, bool need_Ks) {
  const char* op = "packops.reproject_backward";
  check_reproject(op, image_in, depth_in, K, T, K_src, image_in.scalar_type());
  check_grad(op, grad_in, reproject_out_shape(image_in, depth_in), image_in);
  const at::Tensor g = grad_in.contiguous(), image = image_in.contiguous(),
                   depth = depth_in.contiguous();
  const Cameras c = cameras(K, T, K_src);
  const bool has_src = K_src.has_value();
  need_Ks = need_Ks && has_src;
  const bool need_pose = need_K || need_T || need_Ks;
  const int64_t B = image.size(0);
  // The kernel writes every element of grad_image; with no pixels it is zero.
  at::Tensor gi = maybe_grad(need_image, image);
  if (need_image && depth.numel() == 0) gi.zero_();
  at::Tensor gd = maybe_grad(need_depth, depth);
  at::Tensor gK = at::zeros({B, 3, 3}, c.K.options()), gKs = at::zeros({B, 3, 3}, c.K.options());
  at::Tensor gT = at::zeros({B, c.t_rows, 4}, c.T.options());
  if (depth.numel() > 0 && (need_image || need_depth || need_pose)) {
    PACKOPS_CPU_DTYPES(op, image, [&] {
      std::vector<scalar_t> P(B * 12), dP(need_pose ? B * 12 : 0);
      const scalar_t *Kp = c.K.data_ptr<scalar_t>(), *Tp = c.T.data_ptr<scalar_t>(),
                     *Ksp = c.Ks.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        fold(Kp + b * c.k_stride, Tp + b * c.t_stride, Ksp + b * c.ks_stride, P.data() + b * 12);
      cpu::reproject_backward<scalar_t>(
          g.data_ptr<scalar_t>(), image.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
          P.data(), ptr_or_null<scalar_t>(need_image, gi), ptr_or_null<scalar_t>(need_depth, gd),
          need_pose ? dP.data() : nullptr, B, image.size(1), depth.size(2), depth.size(3),
          image.size(2), image.size(3));
      if (!need_pose) return;
      scalar_t *gKp = gK.data_ptr<scalar_t>(), *gTp = gT.data_ptr<scalar_t>(),
               *gKsp = gKs.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        scalar_t dT[12];
        unfold_grad(Kp + b * c.k_stride, Tp + b * c.t_stride, Ksp + b * c.ks_stride,
                    dP.data() + b * 12, gKp + b * 9, dT, gKsp + b * 9);
        std::copy(dT, dT + 12, gTp + b * c.t_rows * 4);
      }
    });
  }
  auto [rK, rT, rKs] = reduce_camera_grads(c, has_src, need_K, need_T, need_Ks, gK, gT, gKs);
  return {gi, gd, rK, rT, rKs};
}


// ------------------------------------------------------------------ CUDA
#ifdef PACKOPS_WITH_CUDA
DType to_dtype(const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default:
      TORCH_CHECK(false, op, ": the cuda backend supports float32, float64, float16 and bfloat16, got ",
                  t.scalar_type());
  }
}

void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

void* ptr_or_null(bool need, at::Tensor& t) { return need && t.numel() ? t.data_ptr() : nullptr; }

at::Tensor ssim_fwd_cuda(const at::Tensor& x_in, const at::Tensor& y_in, double C1, double C2) {
  check_pair("packops.ssim", "x", x_in, "y", y_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  check_launch("packops.ssim",
               cuda::ssim_forward(to_dtype("packops.ssim", x), x.data_ptr(), y.data_ptr(),
                                  out.data_ptr(), x.size(0), x.size(1), x.size(2), x.size(3), C1,
                                  C2, at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> ssim_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                 const at::Tensor& y_in, double C1, double C2,
                                                 bool need_x, bool need_y) {
  check_pair("packops.ssim_backward", "x", x_in, "y", y_in);
  check_grad("packops.ssim_backward", grad_in, x_in.sizes(), x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor g = grad_in.contiguous(), x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, x), gy = maybe_grad(need_y, y);
  if (x.numel() == 0 || !(need_x || need_y)) return {gx, gy};
  check_launch("packops.ssim_backward",
               cuda::ssim_backward(to_dtype("packops.ssim_backward", x), g.data_ptr(),
                                   x.data_ptr(), y.data_ptr(), ptr_or_null(need_x, gx),
                                   ptr_or_null(need_y, gy), x.size(0), x.size(1), x.size(2),
                                   x.size(3), C1, C2, at::cuda::getCurrentCUDAStream()));
  return {gx, gy};
}

at::Tensor photometric_fwd_cuda(const at::Tensor& p_in, const at::Tensor& t_in, double alpha,
                                double C1, double C2) {
  check_pair("packops.photometric_loss", "pred", p_in, "target", t_in);
  check_channels("packops.photometric_loss", p_in);
  const c10::cuda::CUDAGuard guard(p_in.device());
  const at::Tensor p = p_in.contiguous(), t = t_in.contiguous();
  at::Tensor out = at::empty(loss_shape(p), p.options());
  if (p.numel() == 0) return out;
  check_launch("packops.photometric_loss",
               cuda::photometric_forward(to_dtype("packops.photometric_loss", p), p.data_ptr(),
                                         t.data_ptr(), out.data_ptr(), p.size(0), p.size(1),
                                         p.size(2), p.size(3), alpha, C1, C2,
                                         at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> photometric_bwd_cuda(const at::Tensor& grad_in,
                                                        const at::Tensor& p_in,
                                                        const at::Tensor& t_in, double alpha,
                                                        double C1, double C2, bool need_p,
                                                        bool need_t) {
  check_pair("packops.photometric_loss_backward", "pred", p_in, "target", t_in);
  check_grad("packops.photometric_loss_backward", grad_in, loss_shape(p_in), p_in);
  const c10::cuda::CUDAGuard guard(p_in.device());
  const at::Tensor g = grad_in.contiguous(), p = p_in.contiguous(), t = t_in.contiguous();
  at::Tensor gp = maybe_grad(need_p, p), gt = maybe_grad(need_t, t);
  if (p.numel() == 0 || !(need_p || need_t)) return {gp, gt};
  check_launch("packops.photometric_loss_backward",
               cuda::photometric_backward(to_dtype("packops.photometric_loss_backward", p),
                                          g.data_ptr(), p.data_ptr(), t.data_ptr(),
                                          ptr_or_null(need_p, gp), ptr_or_null(need_t, gt),
                                          p.size(0), p.size(1), p.size(2), p.size(3), alpha, C1,
                                          C2, at::cuda::getCurrentCUDAStream()));
  return {gp, gt};
}
at::ScalarType cuda_geometry(const at::Tensor& image) {
  return image.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

cuda::GeometryArgs geometry_args(const Cameras& c) {
  return {c.K.data_ptr(), c.T.data_ptr(), c.Ks.data_ptr(), c.k_stride, c.t_stride, c.ks_stride};
}

std::tuple<at::Tensor, at::Tensor> reproject_fwd_cuda(
    const at::Tensor& image_in, const at::Tensor& depth_in, const at::Tensor& K,
    const at::Tensor& T, const std::optional<at::Tensor>& K_src, bool with_mask) {
  const char* op = "packops.reproject";
  check_reproject(op, image_in, depth_in, K, T, K_src, cuda_geometry(image_in));
  const c10::cuda::CUDAGuard guard(image_in.device());
  const at::Tensor image = image_in.contiguous(), depth = depth_in.contiguous();
  const Cameras c = cameras(K, T, K_src);
  at::Tensor out = at::empty(reproject_out_shape(image, depth), image.options());
  at::Tensor mask = with_mask ? at::empty(depth.sizes(), image.options()) : at::empty({0}, image.options());
  if (depth.numel() == 0) return {out, mask};
  check_launch(op, cuda::reproject_forward(to_dtype(op, image), image.data_ptr(), depth.data_ptr(),
                                           geometry_args(c), out.data_ptr(),
                                           ptr_or_null(with_mask, mask), image.size(0),
                                           image.size(1), depth.size(2), depth.size(3),
                                           image.size(2), image.size(3),
                                           at::cuda::getCurrentCUDAStream()));
  return {out, mask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reproject_bwd_cuda(
    const at::Tensor& grad_in, const at::Tensor& image_in, const at::Tensor& depth_in,
    const at::Tensor& K, const at::Tensor& T, const std::optional<at::Tensor>& K_src,
    bool need_image, bool need_depth, bool need_K, bool need_T, bool need_Ks) {
  const char* op = "packops.reproject_backward";
  check_reproject(op, image_in, depth_in, K, T, K_src, cuda_geometry(image_in));
  check_grad(op, grad_in, reproject_out_shape(image_in, depth_in), image_in);
  const c10::cuda::CUDAGuard guard(image_in.device());
  const at::Tensor g = grad_in.contiguous(), image = image_in.contiguous(),
                   depth = depth_in.contiguous();
  const Cameras c = cameras(K, T, K_src);
  const bool has_src = K_src.has_value();
  need_Ks = need_Ks && has_src;
  const bool need_pose = need_K || need_T || need_Ks;
  const int64_t B = image.size(0), H = depth.size(2), W = depth.size(3);
  const auto geo_opts = c.K.options();
  // The image gradient accumulates in the geometry type (atomics), then is
  // rounded to the image's dtype once.
  at::Tensor gi_acc = need_image ? at::zeros(image.sizes(), geo_opts) : at::empty({0}, geo_opts);
  at::Tensor gd = maybe_grad(need_depth, depth);
  at::Tensor partial = need_pose ? at::empty({B, cuda::reproject_blocks(H, W), 12}, geo_opts)
                                 : at::empty({0}, geo_opts);
  // K's gradient as K_src is needed to add into K's when K_src is absent.
  const bool want_Ks = need_Ks || (need_K && !has_src);
  at::Tensor gK = need_K ? at::empty({B, 3, 3}, geo_opts) : at::empty({0}, geo_opts);
  at::Tensor gKs = want_Ks ? at::empty({B, 3, 3}, geo_opts) : at::empty({0}, geo_opts);
  at::Tensor gT = need_T ? (c.t_rows == 4 ? at::zeros({B, 4, 4}, geo_opts) : at::empty({B, 3, 4}, geo_opts))
                         : at::empty({0}, geo_opts);
  if (B > 0 && (need_image || need_depth || need_pose)) {
    check_launch(op, cuda::reproject_backward(
                         to_dtype(op, image), g.data_ptr(), image.data_ptr(), depth.data_ptr(),
                         geometry_args(c), ptr_or_null(need_image, gi_acc),
                         ptr_or_null(need_depth, gd), ptr_or_null(need_pose, partial),
                         ptr_or_null(need_K, gK), ptr_or_null(need_T, gT), c.t_rows,
                         ptr_or_null(want_Ks, gKs), B, image.size(1), H, W, image.size(2),
                         image.size(3), at::cuda::getCurrentCUDAStream()));
  }
  at::Tensor gi = need_image ? gi_acc.to(image.scalar_type()) : at::empty({0}, image.options());
  auto [rK, rT, rKs] = reduce_camera_grads(c, has_src, need_K, need_T, need_Ks, gK, gT, gKs);
  return {gi, gd, rK, rT, rKs};
}
#endif  // PACKOPS_WITH_CUDA

bool built_with_cuda() {
#ifdef PACKOPS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(packops, m) {
  m.def("_built_with_cuda() -> bool", &built_with_cuda);
  // x, y: [B,C,H,W] -> [B,C,H,W]
  m.def("ssim_fwd(Tensor x, Tensor y, float C1, float C2) -> Tensor");
  // grad: [B,C,H,W] -> (grad_x, grad_y); an input that needs no gradient gets an empty tensor
  m.def("ssim_bwd(Tensor grad, Tensor x, Tensor y, float C1, float C2, bool need_x, bool need_y)"
        " -> (Tensor, Tensor)");
  // pred, target: [B,C,H,W] -> [B,1,H,W]
  m.def("photometric_fwd(Tensor pred, Tensor target, float alpha, float C1, float C2) -> Tensor");
  // grad: [B,1,H,W] -> (grad_pred, grad_target)
  m.def("photometric_bwd(Tensor grad, Tensor pred, Tensor target, float alpha, float C1, float C2,"
        " bool need_pred, bool need_target) -> (Tensor, Tensor)");
  // image: [B,C,Hs,Ws], depth: [B,1,H,W], K, K_src: [B|1,3,3], T: [B|1,3|4,4]
  //   -> (out [B,C,H,W], mask [B,1,H,W] or empty)
  m.def("reproject_fwd(Tensor image, Tensor depth, Tensor K, Tensor T, Tensor? K_src,"
        " bool with_mask) -> (Tensor, Tensor)");
  // grad: [B,C,H,W] -> (grad_image, grad_depth, grad_K, grad_T, grad_K_src); unneeded ones
  // (and grad_K_src without K_src) are empty
  m.def("reproject_bwd(Tensor grad, Tensor image, Tensor depth, Tensor K, Tensor T, Tensor? K_src,"
        " bool need_image, bool need_depth, bool need_K, bool need_T, bool need_K_src)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) {
  m.impl("ssim_fwd", &ssim_fwd_cpu);
  m.impl("ssim_bwd", &ssim_bwd_cpu);
  m.impl("photometric_fwd", &photometric_fwd_cpu);
  m.impl("photometric_bwd", &photometric_bwd_cpu);
  m.impl("reproject_fwd", &reproject_fwd_cpu);
  m.impl("reproject_bwd", &reproject_bwd_cpu);
}

#ifdef PACKOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(packops, CUDA, m) {
  m.impl("ssim_fwd", &ssim_fwd_cuda);
  m.impl("ssim_bwd", &ssim_bwd_cuda);
  m.impl("photometric_fwd", &photometric_fwd_cuda);
  m.impl("photometric_bwd", &photometric_bwd_cuda);
  m.impl("reproject_fwd", &reproject_fwd_cuda);
  m.impl("reproject_bwd", &reproject_bwd_cuda);
}
#endif

}  // namespace packops

// ===========================================================================
// pack: pack3d (space-to-depth + Conv3d) and unpack3d (Conv3d + pixel
// shuffle). Schemas in a TORCH_LIBRARY_FRAGMENT so this section stands alone.
// ===========================================================================
#include "cpu/pack.h"
#ifdef PACKOPS_WITH_CUDA
#include "cuda/pack.h"
#endif

namespace packops {
namespace {

// x: [B,C,H,W], weight: [d,1,3,3,3], bias: [d]. pack: H, W divisible by r;
// unpack: d*C divisible by r*r. Messages name the argument and the shapes.
void check_pack(const char* op, const at::Tensor& x, const at::Tensor& weight,
                const at::Tensor& bias, int64_t r, bool unpack) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B,C,H,W], got shape ", shape_str(x));
  TORCH_CHECK(r >= 1, op, ": r must be >= 1, got ", std::to_string(r));
  TORCH_CHECK(weight.dim() == 5 && weight.size(1) == 1 && weight.size(2) == 3 &&
                  weight.size(3) == 3 && weight.size(4) == 3,
              op, ": weight must be [d,1,3,3,3], got shape ", shape_str(weight));
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be [d] = [",
              std::to_string(weight.size(0)), "] for weight ", shape_str(weight), ", got shape ", shape_str(bias));
  for (const at::Tensor* t : {&weight, &bias}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(), op,
                ": x, weight and bias must have the same dtype and device, got ", x.scalar_type(),
                " on ", device_str(x), " and ", t->scalar_type(), " on ", device_str(*t));
  }
  if (unpack) {
    TORCH_CHECK((weight.size(0) * x.size(1)) % (r * r) == 0, op, ": d*C = ", std::to_string(weight.size(0)),
                "*", std::to_string(x.size(1)), " must be divisible by r*r = ", std::to_string(r * r), " (x ", shape_str(x),
                ", weight ", shape_str(weight), ")");
  } else {
    TORCH_CHECK(x.size(2) % r == 0 && x.size(3) % r == 0, op, ": H and W of x must be divisible by r = ",
                std::to_string(r), ", got shape ", shape_str(x));
  }
}

std::vector<int64_t> pack_out_shape(const at::Tensor& x, int64_t d, int64_t r, bool unpack) {
  if (unpack) return {x.size(0), d * x.size(1) / (r * r), x.size(2) * r, x.size(3) * r};
  return {x.size(0), d * r * r * x.size(1), x.size(2) / r, x.size(3) / r};
}

struct PackArgs {
  at::Tensor x, weight, bias;
};

PackArgs pack_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return {x.contiguous(), weight.contiguous(), bias.contiguous()};
}


template <bool UNPACK>
at::Tensor pack_fwd_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in,
                        int64_t r) {
  const char* op = UNPACK ? "packops.unpack3d" : "packops.pack3d";
  check_pack(op, x_in, w_in, b_in, r, UNPACK);
  const PackArgs a = pack_inputs(x_in, w_in, b_in);
  const int64_t d = a.weight.size(0);
  at::Tensor out = at::empty(pack_out_shape(a.x, d, r, UNPACK), a.x.options());
  if (out.numel() == 0) return out;
  PACKOPS_CPU_DTYPES(op, a.x, [&] {
    auto fn = UNPACK ? &cpu::unpack3d_forward<scalar_t> : &cpu::pack3d_forward<scalar_t>;
    fn(a.x.data_ptr<scalar_t>(), a.weight.data_ptr<scalar_t>(), a.bias.data_ptr<scalar_t>(),
       out.data_ptr<scalar_t>(), a.x.size(0), a.x.size(1), a.x.size(2), a.x.size(3), d, r);
  });
  return out;
}

// grad: the forward output's shape -> (grad_x, grad_weight, grad_bias); an
// input that needs no gradient gets an empty tensor.
template <bool UNPACK>
std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_bwd_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& w_in, int64_t r,
    bool need_x, bool need_w, bool need_b) {
  const char* op = UNPACK ? "packops.unpack3d_backward" : "packops.pack3d_backward";
  const at::Tensor b_shape = at::empty({w_in.dim() > 0 ? w_in.size(0) : 0}, w_in.options());
  check_pack(op, x_in, w_in, b_shape, r, UNPACK);
  check_grad(op, grad_in, pack_out_shape(x_in, w_in.size(0), r, UNPACK), x_in);
  const at::Tensor g = grad_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, x), gw = maybe_grad(need_w, w), gb = maybe_grad(need_b, b_shape);
  if (need_w) gw.zero_();
  if (need_b) gb.zero_();
  if (g.numel() == 0 || !(need_x || need_w || need_b)) {
    if (need_x) gx.zero_();
    return {gx, gw, gb};
  }
  PACKOPS_CPU_DTYPES(op, x, [&] {
    auto fn = UNPACK ? &cpu::unpack3d_backward<scalar_t> : &cpu::pack3d_backward<scalar_t>;
    fn(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
       ptr_or_null<scalar_t>(need_x, gx), ptr_or_null<scalar_t>(need_w, gw),
       ptr_or_null<scalar_t>(need_b, gb), x.size(0), x.size(1), x.size(2), x.size(3),
       w.size(0), r);
  });
  return {gx, gw, gb};
}

#undef PACKOPS_CPU_DTYPES

#ifdef PACKOPS_WITH_CUDA
template <bool UNPACK>
at::Tensor pack_fwd_cuda(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in,
                         int64_t r) {
  const char* op = UNPACK ? "packops.unpack3d" : "packops.pack3d";
  check_pack(op, x_in, w_in, b_in, r, UNPACK);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const PackArgs a = pack_inputs(x_in, w_in, b_in);
  const int64_t d = a.weight.size(0);
  at::Tensor out = at::empty(pack_out_shape(a.x, d, r, UNPACK), a.x.options());
  if (out.numel() == 0) return out;
  auto fn = UNPACK ? &cuda::unpack3d_forward : &cuda::pack3d_forward;
  check_launch(op, fn(to_dtype(op, a.x), a.x.data_ptr(), a.weight.data_ptr(), a.bias.data_ptr(),
                      out.data_ptr(), a.x.size(0), a.x.size(1), a.x.size(2), a.x.size(3), d, r,
                      at::cuda::getCurrentCUDAStream()));
  return out;
}

template <bool UNPACK>
std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_bwd_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& w_in, int64_t r,
    bool need_x, bool need_w, bool need_b) {
  const char* op = UNPACK ? "packops.unpack3d_backward" : "packops.pack3d_backward";
  const at::Tensor b_shape = at::empty({w_in.dim() > 0 ? w_in.size(0) : 0}, w_in.options());
  check_pack(op, x_in, w_in, b_shape, r, UNPACK);
  check_grad(op, grad_in, pack_out_shape(x_in, w_in.size(0), r, UNPACK), x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor g = grad_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous();
  at::Tensor gx = maybe_grad(need_x, x), gw = maybe_grad(need_w, w), gb = maybe_grad(need_b, b_shape);
  if (need_w) gw.zero_();
  if (need_b) gb.zero_();
  if (g.numel() == 0 || !(need_x || need_w || need_b)) {
    if (need_x) gx.zero_();
    return {gx, gw, gb};
  }
  // Per-block partial sums of the weight/bias gradient, reduced in a fixed
  // order by a second kernel (deterministic): accumulation dtype.
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor ws = at::empty({cuda::pack_workspace_elems(w.size(0))}, x.options().dtype(acc));
  auto fn = UNPACK ? &cuda::unpack3d_backward : &cuda::pack3d_backward;
  check_launch(op, fn(to_dtype(op, x), g.data_ptr(), x.data_ptr(), w.data_ptr(),
                      ptr_or_null(need_x, gx), ptr_or_null(need_w, gw), ptr_or_null(need_b, gb),
                      ws.data_ptr(), x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), r,
                      at::cuda::getCurrentCUDAStream()));
  return {gx, gw, gb};
}
#endif  // PACKOPS_WITH_CUDA

}  // namespace

TORCH_LIBRARY_FRAGMENT(packops, m) {
  // x: [B,C,H,W], weight: [d,1,3,3,3], bias: [d] -> [B, d*r*r*C, H/r, W/r]
  m.def("pack3d_fwd(Tensor x, Tensor weight, Tensor bias, int r) -> Tensor");
  // grad: [B, d*r*r*C, H/r, W/r] -> (grad_x, grad_weight, grad_bias), empty when not needed
  m.def("pack3d_bwd(Tensor grad, Tensor x, Tensor weight, int r, bool need_x, bool need_weight,"
        " bool need_bias) -> (Tensor, Tensor, Tensor)");
  // x: [B,C,H,W] -> [B, d*C/(r*r), H*r, W*r]
  m.def("unpack3d_fwd(Tensor x, Tensor weight, Tensor bias, int r) -> Tensor");
  // grad: [B, d*C/(r*r), H*r, W*r] -> (grad_x, grad_weight, grad_bias)
  m.def("unpack3d_bwd(Tensor grad, Tensor x, Tensor weight, int r, bool need_x, bool need_weight,"
        " bool need_bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(packops, CPU, m) {
  m.impl("pack3d_fwd", &pack_fwd_cpu<false>);
  m.impl("pack3d_bwd", &pack_bwd_cpu<false>);
  m.impl("unpack3d_fwd", &pack_fwd_cpu<true>);
  m.impl("unpack3d_bwd", &pack_bwd_cpu<true>);
}

#ifdef PACKOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(packops, CUDA, m) {
  m.impl("pack3d_fwd", &pack_fwd_cuda<false>);
  m.impl("pack3d_bwd", &pack_bwd_cuda<false>);
  m.impl("unpack3d_fwd", &pack_fwd_cuda<true>);
  m.impl("unpack3d_bwd", &pack_bwd_cuda<true>);
}
#endif

}  // namespace packops

#undef PACKOPS_CPU_DTYPES
