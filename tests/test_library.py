"""The registration written once (packops/_library.py): every fused op has one
schema across backends, and every variant has its fake and autograd. The ops
checked are read from the registry that fused_op fills (_library.SPECS), and
the registry is checked against what the dispatcher holds and what the op
contract tests, so an op left out of one of them fails here."""
import glob
import importlib
import os

import pytest
import torch

import packops  # imports every op module, which registers its FusedOp specs
from packops import _library

SPECS = _library.SPECS


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


def test_the_registry_holds_every_kernel_op():
    """Every op in the packops namespace (the C++ ops when packops._C is
    loaded, the Triton ops always) belongs to a registered FusedOp, and every
    registered FusedOp's ops exist: a C++ op without a Python spec would never
    have its schema compared."""
    registered = {str(s.name).split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
                  if str(s.name).startswith("packops::")}
    registered = {n for n in registered if not n.startswith("_")}  # module-level helpers
    expected = set()
    for spec in SPECS.values():
        for name in (spec.fwd_name, spec.bwd_name):
            expected |= {name + "_triton"} | ({name} if packops.has_cpu_ext() else set())
    assert SPECS and registered == expected


def _contract_classes():
    """Every OpContract subclass of the test files (tests/contract.py)."""
    import contract
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "test_*.py"))):
        with open(path) as f:
            if "OpContract" in f.read():
                importlib.import_module(os.path.basename(path)[:-3])
    found, todo = [], list(contract.OpContract.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_fused_op_has_a_contract_test():
    """Each registered kernel op is named in the KERNELS of an op test class,
    so the contract (accuracy, gradients, opcheck, dtypes, ...) runs on it."""
    tested = {k for cls in _contract_classes() for k in cls.KERNELS}
    assert tested == set(SPECS), (f"no contract test for {sorted(set(SPECS) - tested)}; "
                                  f"not registered: {sorted(tested - set(SPECS))}")


def test_every_public_op_with_a_backend_has_a_contract_test():
    """_dispatch.OPS (the ops backend_for knows) are the ops the contract tests."""
    from packops import _dispatch
    assert {cls.fn.__name__ for cls in _contract_classes() if cls.fn} == set(_dispatch.OPS)


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
