"""Where a training step's time goes: torch.profiler events -> categories.

The one place that maps op names to categories (`RULES`, `BACKWARD_RULES`),
used by `benchmarks.train_step` and unit-tested in
tests/test_benchmarks_smoke.py (the categories add up to the step).

How an event is attributed (CPU: its self CPU time; GPU: its self device
time, i.e. the kernels it launched):

1. Ranges the benchmark opens (`ROOT` around each step, `LOSS` around the
   loss modules' forward, `OPTIMIZER` around gradient clipping and the LR
   scheduler) and torch's own `Optimizer.step#...` / `Optimizer.zero_grad#...`
   ranges: everything inside belongs to the range's category.
2. Otherwise the OUTERMOST enclosing op whose name matches a rule decides,
   so the allocations and copies inside `aten::conv2d` count as convolution
   and a bare `aten::copy_` at the top level counts as a copy.
3. Backward: the outermost `autograd::engine::evaluate_function: <Node>`
   event decides for everything inside it. Its category is that of the
   forward op that created the node (matched by the autograd sequence number):
   the backward of a loss op is loss, of a 3-D convolution packing, of a 2-D
   convolution "conv bwd". Without a forward match the node's name decides
   (`BACKWARD_RULES`); a node that matches neither (a torch.compile graph's
   CompiledFunctionBackward) leaves it to the ops inside, as in forward.
4. Whatever matches nothing is "other", and so is the time inside the step
   that no op covers (Python, the trainer's bookkeeping): on CPU, the root
   range's self time; on a GPU, the step's wall time minus all kernel time
   (the GPU idling while the host launches).

3-D convolutions (conv3d, conv_transpose3d) and pixel (un)shuffle are
"packing": in PackNet they occur only inside the packing layers, so the
reference provider (which packs with conv3d) and the fused one
(packops::pack3d*) are compared like for like. The 2-D convolution of a
packing layer (and the folded convolution of the fused pack_conv) counts as
convolution. Under torch.compile, inductor's generated kernels run inside
"## Call CompiledFxGraph ##" ranges and mix categories (a fused group norm +
ELU, say): their own time is "other" (see "other_top" in the JSON), while the
aten ops they call (convolutions) keep their category.
"""
import re

ROOT = "bench::train_step"
LOSS = "bench::loss"
OPTIMIZER = "bench::optimizer"

CATEGORIES = ("conv_fwd", "conv_bwd", "norm_act", "packing", "loss", "optimizer", "copy_fill",
              "other")
LABELS = {"conv_fwd": "conv fwd", "conv_bwd": "conv bwd", "norm_act": "norm + act",
          "packing": "packing", "loss": "loss", "optimizer": "optimizer",
          "copy_fill": "copy/fill", "other": "other"}

# (regex on the event name, category), first match wins; forward ops and ranges
RULES = [
    (r"^bench::loss", "loss"),
    (r"^bench::optimizer", "optimizer"),
    (r"^Optimizer\.(step|zero_grad)#", "optimizer"),
    # packops' ops, and the autograd kernels their forward runs inside
    # ("GeneratedBackwardFor_packops_<op>_fwd_default", which holds the
    # CPU kernel's time in its self time)
    (r"^(packops::|GeneratedBackwardFor_packops_)(pack3d|unpack3d|pack_conv)", "packing"),
    (r"^(packops::|GeneratedBackwardFor_packops_)group_norm_elu", "norm_act"),
    (r"^(packops::|GeneratedBackwardFor_packops_)(photometric|ssim|reproject)", "loss"),
    (r"^aten::(conv3d|conv_transpose3d|pixel_shuffle|pixel_unshuffle)$", "packing"),
    (r"^aten::(grid_sampler|avg_pool2d|reflection_pad)", "loss"),
    (r"^aten::(conv1d|conv2d|convolution|_convolution|mkldnn_convolution|cudnn_convolution"
     r"|_slow_conv2d_forward|thnn_conv2d|_nnpack_spatial_convolution|conv_transpose2d)$",
     "conv_fwd"),
    (r"^aten::(\w*convolution_backward\w*|_slow_conv2d_backward)$", "conv_bwd"),
    (r"^aten::(group_norm|native_group_norm(_backward)?|batch_norm|native_batch_norm"
     r"(_backward)?|layer_norm|native_layer_norm(_backward)?|elu_?|elu_backward|sigmoid_?"
     r"|sigmoid_backward|relu_?|threshold_backward)$", "norm_act"),
    (r"^aten::(_foreach_\w+|_fused_adam\w*|adam\w*)$", "optimizer"),
    (r"^aten::(copy_|_to_copy|to|clone|contiguous|fill_|zero_|zeros|zeros_like|ones|ones_like"
     r"|full|full_like|new_zeros|new_full|cat|_cat|stack|pad|constant_pad_nd)$", "copy_fill"),
]
# backward nodes without a matching forward op: on the node's name
BACKWARD_RULES = [
    (r"Convolution\w*Backward", "conv_bwd"),
    (r"(NativeGroupNorm|GroupNorm|NativeBatchNorm|NativeLayerNorm|Elu|Sigmoid|Relu)Backward"
     r"|packops_group_norm_elu", "norm_act"),
    (r"packops_(pack3d|unpack3d|pack_conv)", "packing"),
    (r"(PixelShuffle|PixelUnshuffle)Backward", "packing"),
    (r"packops_(photometric|ssim|reproject)|GridSampler\w*Backward|AvgPool2D\w*Backward"
     r"|ReflectionPad\w*Backward", "loss"),
    (r"(Copy\w*|Clone|Cat|Stack|ToCopy|ConstantPadNd)Backward", "copy_fill"),
]
_RULES = [(re.compile(p), c) for p, c in RULES]
_BACKWARD_RULES = [(re.compile(p), c) for p, c in BACKWARD_RULES]
_BWD_PREFIX = "autograd::engine::evaluate_function: "
_TO_BACKWARD = {"conv_fwd": "conv_bwd"}  # every other category keeps its name backward


def categorize_name(name):
    """Category of a forward op or range name, or None."""
    for pattern, category in _RULES:
        if pattern.search(name):
            return category
    return None


def categorize_backward_node(node):
    """Category of an autograd node name (e.g. ConvolutionBackward0) without a forward match."""
    for pattern, category in _BACKWARD_RULES:
        if pattern.search(node):
            return category
    return None


def _chain(event):
    """Ancestors of event from the outermost down to event itself."""
    out = []
    while event is not None:
        out.append(event)
        event = event.cpu_parent
    return out[::-1]


def _self_device_us(event):
    t = getattr(event, "self_device_time_total", None)
    return getattr(event, "self_cuda_time_total", 0.0) if t is None else t


def breakdown(events, device=False, root=ROOT):
    """Split the profiled steps' time into CATEGORIES.

    events: `prof.events()` of a profile whose steps each ran inside a
    `record_function(root)`. device=False: self CPU time of every event
    nested in a root range (same thread), which sums exactly to the roots'
    duration; device=True: self device time of every event of any thread
    (the autograd engine runs backward on its own thread there), with the
    roots' wall time minus the device time put into "other".

    Returns {"total_us", "steps", "us": {category: us}, "other_top": [(name, us)]
    (the largest contributors to "other"), "outside_ops_us" (root self time,
    part of other), "other_threads_us" (CPU only: op time on threads outside
    the step ranges, not counted)}.
    """
    roots = [e for e in events if e.name == root]
    if not roots:
        raise ValueError(f"breakdown: no {root!r} range in the profile")
    us = dict.fromkeys(CATEGORIES, 0.0)
    other_by_name = {}
    total = sum(r.cpu_time_total for r in roots)
    root_ids = {id(r) for r in roots}

    # forward category of every autograd node, by sequence number: the last
    # outermost op of that number is the one that created the node (ops that
    # created none before it peeked the same number)
    chains = {}
    fwd_by_seq = {}
    for e in sorted(events, key=lambda e: e.time_range.start):
        chain = _chain(e)
        chains[id(e)] = chain
        if e.sequence_nr is None or e.sequence_nr < 0 or any(
                a.name.startswith(_BWD_PREFIX) for a in chain):
            continue
        parent = e.cpu_parent
        if parent is not None and parent.sequence_nr == e.sequence_nr:
            continue
        fwd_by_seq[e.sequence_nr] = _forward_category(chain)

    in_step_us = other_threads = 0.0
    for e in events:
        chain = chains[id(e)]
        inside = any(id(a) in root_ids for a in chain)
        t = _self_device_us(e) if device else e.self_cpu_time_total
        if not device and not inside:
            other_threads += t
            continue
        if id(e) in root_ids:
            cat = "other"  # the step's own time outside any op
        else:
            cat = _category(chain, fwd_by_seq) or "other"
        us[cat] += t
        in_step_us += t
        if cat == "other":
            name = "(outside any op)" if id(e) in root_ids else e.name
            other_by_name[name] = other_by_name.get(name, 0.0) + t
    outside = other_by_name.get("(outside any op)", 0.0)
    if device:  # the GPU's idle time within the steps
        idle = max(total - in_step_us, 0.0)
        us["other"] += idle
        other_by_name["(GPU idle)"] = idle
        total = max(total, in_step_us)
    top = sorted(other_by_name.items(), key=lambda kv: -kv[1])[:12]
    return {"total_us": total, "steps": len(roots), "us": us, "other_top": top,
            "outside_ops_us": outside, "other_threads_us": other_threads}


def _forward_category(chain):
    for a in chain:
        if a.name == ROOT:
            continue
        cat = categorize_name(a.name)
        if cat is not None:
            return cat
    return None


def _category(chain, fwd_by_seq):
    """Category of the last event of chain (outermost deciding, see the module doc)."""
    for a in chain:
        if a.name == ROOT:
            continue
        if a.name.startswith(_BWD_PREFIX):
            fwd = fwd_by_seq.get(a.sequence_nr) if a.sequence_nr is not None else None
            cat = _TO_BACKWARD.get(fwd, fwd) if fwd is not None else \
                categorize_backward_node(a.name[len(_BWD_PREFIX):])
            if cat is not None:
                return cat
            continue  # e.g. a compiled graph's backward: the ops inside decide
        cat = categorize_name(a.name)
        if cat is not None:
            return cat
    return None


def percentages(result):
    """{category: % of the step} from breakdown(); sums to 100."""
    total = result["total_us"] or 1.0
    return {c: 100.0 * result["us"][c] / total for c in CATEGORIES}
