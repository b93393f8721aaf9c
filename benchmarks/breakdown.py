"""Where a training step's time goes, from torch.profiler events.

The one place that maps op names to categories (`RULES`, `BACKWARD_RULES`)
and does the accounting, host and device; unit-tested on synthetic event
lists in tests/test_benchmark_harness.py. Pure Python: it reads the
attributes of torch.profiler's FunctionEvents (name, time_range, device_type,
cpu_parent, id, linked_correlation_id, sequence_nr) and imports no torch.

Each profiled step runs inside `record_function(ROOT)`; on CUDA it ends
with a synchronize inside `record_function(SYNC)`, so the step's window
closes when its last kernel has. That synchronize is the benchmark's own
and is never counted as the step's.

Category of a host op, and of a kernel (that of the host op that launched it):

1. Ranges: the trainer's `packnet.loss` is loss, `packnet.clip` and
   `packnet.optimizer` are optimizer (torch's `Optimizer.step#...` and
   `Optimizer.zero_grad#...` too): everything inside takes the range's
   category. `packnet.forward` and `packnet.backward` decide nothing.
2. Otherwise the OUTERMOST enclosing op whose name matches a rule decides, so
   the copies inside `aten::conv2d` count as convolution and a bare
   `aten::copy_` as a copy.
3. Backward: the outermost `autograd::engine::evaluate_function: <Node>`
   decides, with the category of the forward op that created the node
   (matched by autograd sequence number): the backward of a loss op is
   loss, of a 3-D convolution packing, of a 2-D convolution conv bwd.
   Without a forward match the node's name decides (`BACKWARD_RULES`); a node
   that matches neither (a compiled graph's backward) leaves it to the ops
   inside.
4. Nothing matched: other.

Host (`device=False`, CPU steps): the self CPU time of every event nested in
a step (same thread) goes to its category, the step's own self time (Python
between ops) to other: the parts add up to the steps' duration exactly.

Device (`device=True`): device time comes only from the device's own
activity records (kernels, memcpy, memset), each counted once: never from an
op's "device time" (which repeats the kernels it launched) nor from ranges
(record_function leaves a GPU-side annotation spanning its kernels; it is
not work). Per step window, the union of the activity intervals on every
stream is the busy time; where k activities overlap, each gets 1/k of that
stretch, so the categories add up to the busy time and, with `idle` (the
window minus the union), to the step's wall time. Also counted per step:
`launches` (host calls that launch a kernel or a CUDA graph), `kernels`
(device kernels run), `syncs` (host calls that wait for the device:
device/stream/event synchronize, synchronous memcpy), on any host thread
within the window (backward runs on the autograd engine's device thread).

3-D convolutions and pixel (un)shuffle are "packing" (PackNet has them only
in its packing layers, so the reference and fused providers compare like
for like); the packing layers' 2-D convolutions are convolution.
"""
import re

ROOT = "bench::train_step"
SYNC = "bench::sync"
PHASES = ("packnet.forward", "packnet.loss", "packnet.backward", "packnet.clip",
          "packnet.optimizer")

CATEGORIES = ("conv_fwd", "conv_bwd", "norm_act", "packing", "loss", "optimizer", "copy_fill",
              "other")
LABELS = {"conv_fwd": "conv fwd", "conv_bwd": "conv bwd", "norm_act": "norm + act",
          "packing": "packing", "loss": "loss", "optimizer": "optimizer",
          "copy_fill": "copy/fill", "other": "other", "idle": "GPU idle"}

# (regex on the event name, category), first match wins; forward ops and ranges
RULES = [
    (r"^packnet\.loss$", "loss"),
    (r"^packnet\.(clip|optimizer)$", "optimizer"),
    (r"^Optimizer\.(step|zero_grad)#", "optimizer"),
    # packops' ops, and the autograd kernels their forward runs inside
    # ("GeneratedBackwardFor_packops_<op>_fwd_default" holds the CPU kernel's time)
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

# host runtime calls (CUDA runtime and driver API names as the profiler records them)
LAUNCH_CALLS = re.compile(r"^cu(da)?(LaunchKernel(Ex|ExC)?|LaunchCooperativeKernel\w*"
                          r"|GraphLaunch)(_v\d+)?$")
SYNC_CALLS = re.compile(r"^(cudaDeviceSynchronize|cudaStreamSynchronize|cudaEventSynchronize"
                        r"|cudaMemcpy|cudaMemcpy2D|cudaMemcpyFromSymbol|cudaMemcpyToSymbol"
                        r"|cuCtxSynchronize|cuStreamSynchronize|cuEventSynchronize"
                        r"|cuMemcpy(DtoH|HtoD)(_v2)?)$")
# device-side records that are not work (CUPTI's synchronisation records)
_NOT_WORK = {"Event Sync", "Stream Sync", "Context Sync", "Stream Wait Event"}
_NOT_WORK_TYPES = {"gpu_user_annotation", "cuda_sync"}


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


def _host(e):
    t = e.device_type
    return getattr(t, "name", str(t)).split(".")[-1] == "CPU"


def _dur(e):
    return e.time_range.end - e.time_range.start


def _chain(event):
    """Ancestors of event from the outermost down to event itself."""
    out = []
    while event is not None:
        out.append(event)
        event = event.cpu_parent
    return out[::-1]


class Activity:
    """One device record: kernel, memcpy or memset, and the host op that launched it."""
    __slots__ = ("name", "start", "end", "kind", "op")

    def __init__(self, name, start, end, kind, op):
        self.name, self.start, self.end, self.kind, self.op = name, start, end, kind, op


def device_activities(events):
    """The device's work records in events, each once (see the module doc)."""
    events = list(events)
    ops = {e.id: e for e in events if _host(e) and not getattr(e, "linked_correlation_id", 0)}
    host_names = {e.name for e in events if _host(e)}
    out = []
    for e in events:
        if (_host(e) or getattr(e, "is_user_annotation", False) or e.name in host_names
                or e.name in _NOT_WORK or getattr(e, "activity_type", None) in _NOT_WORK_TYPES):
            continue
        kind = ("memcpy" if e.name.startswith("Memcpy") else
                "memset" if e.name.startswith("Memset") else "kernel")
        link = getattr(e, "linked_correlation_id", 0)
        out.append(Activity(e.name, e.time_range.start, e.time_range.end, kind,
                            ops.get(link) if link else None))
    return out


def _forward_categories(events, chains):
    """Forward category of every autograd node, by sequence number: the last
    outermost op of that number is the one that created the node (ops that
    created none before it peeked the same number)."""
    fwd = {}
    for e in sorted((e for e in events if _host(e)), key=lambda e: e.time_range.start):
        chain = chains[id(e)]
        seq = e.sequence_nr
        if seq is None or seq < 0 or any(a.name.startswith(_BWD_PREFIX) for a in chain):
            continue
        if e.cpu_parent is not None and e.cpu_parent.sequence_nr == seq:
            continue
        fwd[seq] = next((c for c in map(categorize_name, (a.name for a in chain if a.name != ROOT))
                         if c is not None), None)
    return fwd


def _category(chain, fwd):
    """Category of the last event of chain (outermost deciding, see the module doc)."""
    for a in chain:
        if a.name == ROOT:
            continue
        if a.name.startswith(_BWD_PREFIX):
            f = fwd.get(a.sequence_nr) if a.sequence_nr is not None else None
            cat = _TO_BACKWARD.get(f, f) if f is not None else \
                categorize_backward_node(a.name[len(_BWD_PREFIX):])
            if cat is not None:
                return cat
            continue  # e.g. a compiled graph's backward: the ops inside decide
        cat = categorize_name(a.name)
        if cat is not None:
            return cat
    return None


def breakdown(events, device=False):
    """Split the profiled steps' time into CATEGORIES (+ "idle" on a device).

    Returns {"steps", "total_us" (the steps' wall time), "us": {category: us},
    "other_top": [(name, us)] (what "other" is made of), "phase_us": {range:
    host us} of the trainer's PHASES}, and with device=True also "busy_us",
    "idle_us", "device_us" (the activities' summed durations: above busy_us
    where streams overlap), "launches", "kernels", "syncs"; with
    device=False "other_threads_us" (host time outside the steps, not
    counted). Times and counts are totals over the steps.
    """
    events = list(events)
    roots = sorted((e for e in events if e.name == ROOT and _host(e)),
                   key=lambda e: e.time_range.start)
    if not roots:
        raise ValueError(f"breakdown: no {ROOT!r} range in the profile")
    chains = {id(e): _chain(e) for e in events if _host(e)}
    fwd = _forward_categories(events, chains)
    windows = [(r.time_range.start, r.time_range.end) for r in roots]
    out = (_device(events, windows, chains, fwd) if device else
           _host_time(events, roots, chains, fwd))
    out["steps"] = len(roots)
    out["total_us"] = sum(e - s for s, e in windows)
    out["phase_us"] = {p: sum(_dur(e) for e in events if e.name == p and _host(e)
                              and _within(e.time_range.start, windows)) for p in PHASES}
    return out


def _within(t, windows):
    return any(s <= t < e for s, e in windows)


def _top(d, n=12):
    return sorted(d.items(), key=lambda kv: -kv[1])[:n]


def _host_time(events, roots, chains, fwd):
    root_ids = {id(r) for r in roots}
    child_us = {}
    for e in events:
        if _host(e) and e.cpu_parent is not None:
            child_us[id(e.cpu_parent)] = child_us.get(id(e.cpu_parent), 0.0) + _dur(e)
    us = dict.fromkeys(CATEGORIES, 0.0)
    other, other_threads = {}, 0.0
    for e in events:
        if not _host(e) or getattr(e, "is_async", False):  # async: no parent, no children
            continue
        t = _dur(e) - child_us.get(id(e), 0.0)  # self time
        chain = chains[id(e)]
        if not any(id(a) in root_ids for a in chain):
            other_threads += t
            continue
        if id(e) in root_ids:
            cat, name = "other", "(outside any op)"
        else:
            cat, name = _category(chain, fwd) or "other", e.name
        us[cat] += t
        if cat == "other":
            other[name] = other.get(name, 0.0) + t
    return {"us": us, "other_top": _top(other), "other_threads_us": other_threads}


def _device(events, windows, chains, fwd):
    acts = device_activities(events)
    us = dict.fromkeys(CATEGORIES + ("idle",), 0.0)
    other, cat_of = {}, {}
    busy = device_us = 0.0
    kernels = 0

    def category(a):
        if a.op is None:
            return "other"
        if id(a.op) not in cat_of:
            cat_of[id(a.op)] = _category(chains[id(a.op)], fwd) or "other"
        return cat_of[id(a.op)]

    for s, e in windows:
        inside = [a for a in acts if a.end > s and a.start < e]
        kernels += sum(a.kind == "kernel" and s <= a.start < e for a in inside)
        device_us += sum(min(a.end, e) - max(a.start, s) for a in inside)
        # sweep the clipped intervals: between two consecutive boundaries the
        # active set is fixed, and each active record gets an equal share
        marks = sorted([(max(a.start, s), 1, i) for i, a in enumerate(inside)] +
                       [(min(a.end, e), -1, i) for i, a in enumerate(inside)])
        active, last = set(), None
        for t, step, i in marks:
            if active and t > last:
                share = (t - last) / len(active)
                busy += t - last
                for j in active:
                    cat = category(inside[j])
                    us[cat] += share
                    if cat == "other":
                        other[inside[j].name] = other.get(inside[j].name, 0.0) + share
            (active.add if step > 0 else active.discard)(i)
            last = t
    total = sum(e - s for s, e in windows)
    us["idle"] = total - busy
    # the benchmark's own synchronize, by time: a runtime call not linked to an
    # op may not be nested under the range on the profiler's thread ids
    own = [(e.time_range.start, e.time_range.end) for e in events if e.name == SYNC and _host(e)]
    launches = syncs = 0
    for e in events:
        if not _host(e) or not _within(e.time_range.start, windows):
            continue
        if LAUNCH_CALLS.match(e.name):
            launches += 1
        elif SYNC_CALLS.match(e.name) and not _within(e.time_range.start, own):
            syncs += 1
    return {"us": us, "other_top": _top(other), "busy_us": busy, "idle_us": total - busy,
            "device_us": device_us, "launches": launches, "kernels": kernels, "syncs": syncs}


def percentages(result):
    """{category: % of the steps' wall time}; they sum to 100."""
    total = result["total_us"] or 1.0
    return {c: 100.0 * v / total for c, v in result["us"].items()}


# ----------------------------------------------------------- achieved FLOP/s
# Dense (no sparsity) peak TFLOP/s. Source: NVIDIA's H100 and H200 datasheets
# (SXM form factor), which quote tensor-core figures with 2:4 sparsity; dense
# is half of those: TF32 989 -> 494.7, BF16/FP16 1979 -> 989.4. FP32 is the
# non-tensor-core rate. The H200 has the H100 SXM's GH100 compute (only the
# memory differs); the H100 PCIe is listed because it shares the H100 name.
PEAK_TFLOPS = {
    "H100 SXM": {"tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
    "H100 PCIe": {"tf32": 378.0, "bf16": 756.0, "fp16": 756.0, "fp32": 51.2},
    "H200": {"tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
}


def peak_tflops(device_name, precision):
    """Dense peak of a device (torch.cuda.get_device_name) in a precision, or None."""
    name = device_name.upper()
    if "H200" in name and "NVL" not in name:
        key = "H200"
    elif "H100" in name:
        key = "H100 PCIe" if "PCIE" in name else "H100 SXM"  # "H100 80GB HBM3" is the SXM part
    else:
        return None
    return PEAK_TFLOPS[key][precision]


def achieved(flops, step_s, peak=None):
    """(TFLOP/s, % of peak or None) of `flops` done in `step_s` seconds."""
    tflops = flops / step_s / 1e12
    return tflops, (100.0 * tflops / peak if peak else None)
