// What is global to packops._C: the Python module and the library itself.
//
// Each op lives in its own files (docs/adding-an-op.md): csrc/ops/<op>.cpp
// holds its schemas (a TORCH_LIBRARY_FRAGMENT), input checks and CPU
// registration, csrc/ops/<op>.h its wrappers, written once for every device,
// csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu its kernels, and
// csrc/cuda/<op>_register.cpp its CUDA registration (CUDA builds only).
#include <Python.h>

#include <torch/library.h>

// Importing packops._C runs the static initialisers of every op file (the
// registrations); the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace packops {
namespace {

bool built_with_cuda() {
#ifdef PACKOPS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(packops, m) { m.def("_built_with_cuda() -> bool", &built_with_cuda); }

}  // namespace packops
