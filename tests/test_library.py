"""The registration written once (packops/_library.py): every fused op has one
schema across backends, and every variant has its fake and autograd."""
import pytest
import torch

import packops
from packops import _library
from packops.pack import PACK3D, UNPACK3D
from packops.photometric import PHOTOMETRIC, SSIM
from packops.norm import GROUP_NORM_ELU
from packops.reproject import REPROJECT

SPECS = {"ssim": SSIM, "photometric": PHOTOMETRIC, "pack3d": PACK3D, "unpack3d": UNPACK3D,
         "reproject": REPROJECT, "group_norm_elu": GROUP_NORM_ELU}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS)
def test_triton_schema_is_the_cpp_schema(spec):
    for schema in (spec.fwd, spec.bwd):
        name = schema.split("(", 1)[0]
        triton = str(getattr(torch.ops.packops, name + "_triton").default._schema)
        assert triton == f"packops::{name}_triton(" + schema.split("(", 1)[1]
        if packops.has_cpu_ext():
            assert str(getattr(torch.ops.packops, name).default._schema) == "packops::" + schema


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS)
def test_spec_names_match_the_schemas(spec):
    fwd, bwd = _library._arg_names(spec.fwd), _library._arg_names(spec.bwd)
    assert bwd[0] == "grad"
    assert bwd[1:1 + len(spec.saved)] == list(spec.saved)
    first_param = 1 + len(spec.saved) + len(spec.saved_outputs)
    assert bwd[first_param:first_param + len(spec.params)] == list(spec.params)
    assert bwd[-len(spec.grads):] == ["need_" + g for g in spec.grads]
    assert set(spec.saved + spec.params + spec.grads) <= set(fwd)


def test_kernel_maps_backends():
    assert _library.kernel("ssim_fwd", "triton") is torch.ops.packops.ssim_fwd_triton.default
    if packops.has_cpu_ext():
        assert _library.kernel("ssim_fwd", "cpu") is torch.ops.packops.ssim_fwd.default
        assert _library.kernel("ssim_fwd", "cuda") is torch.ops.packops.ssim_fwd.default


def test_every_triton_launch_has_a_device_context():
    """All Triton launches go through _launch.launch (which makes the
    tensors' CUDA device current): no module indexes a kernel directly."""
    import pathlib
    import re
    root = pathlib.Path(packops.__file__).parent / "_triton"
    for path in root.glob("*.py"):
        if path.name == "_launch.py":
            continue
        assert not re.search(r"_kernel\[", path.read_text()), f"{path.name} launches directly"
