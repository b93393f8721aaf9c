"""Builds packops._C: the CPU kernels always, the CUDA kernels when torch is a
CUDA build and nvcc is found (PACKOPS_CUDA=0 forces a CPU-only build).

    pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    if os.environ.get("PACKOPS_CUDA", "1") == "0":
        return False
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def extension():
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
    # csrc/ops.cpp (global), csrc/autograd.cpp (the kernel ops' autograd, every op),
    # csrc/ops/<op>.cpp (schemas, checks, CPU registration),
    # csrc/cpu/<op>.cpp (kernels); with CUDA also csrc/cuda/<op>.cu (kernels) and
    # csrc/cuda/<op>_register.cpp (the CUDA registration)
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp"] + sorted(glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -fno-trapping-math: no kernel relies on floating-point traps, and without
    # it GCC will not vectorise a loop with a select over a float-to-int
    # conversion (group_norm_elu's exp); IEEE results are unchanged (no
    # reassociation, NaN and inf kept).
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-fno-trapping-math"]
    if not want_cuda():
        return cpp_extension.CppExtension(
            "packops._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"],
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    return cpp_extension.CUDAExtension(
        "packops._C", sources, include_dirs=include_dirs,
        define_macros=[("PACKOPS_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx + ["-DPACKOPS_WITH_CUDA"],
                            "nvcc": ["-O3", "-std=c++17", "-lineinfo", "-DPACKOPS_WITH_CUDA"]},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="packops",
    version="0.1.0",
    description="Fused CUDA/Triton/CPU kernels for self-supervised monocular depth (PackNet-SfM)",
    packages=find_packages(include=["packops", "packops.*", "packnet", "packnet.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "tqdm", "pillow>=10.1"],
    entry_points={"console_scripts": ["packnet = packnet.cli:main"]},
)
