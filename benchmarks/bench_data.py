"""Suite "data": the synthetic driving renderer (packnet.data.SyntheticDriving)
rendering one frame (rgb + depth) on one thread, as a data loader worker does.

Sizes: 192x640 (the KITTI training size) and 64x192 (the main job's); every
call renders a new frame of a 200-frame sequence (no cache), cycling. On the
CPU always, also in a GPU session (the renderer is torch on the CPU).
"""
import contextlib
import itertools

import torch

from . import measure
from .cases import Case, Run, shape_str

FRAMES = 200


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _case(size):
    def setup(device):
        from packnet.data.synthetic import SyntheticDriving
        ds = SyntheticDriving("train", size, num_sequences=1, frames_per_sequence=FRAMES,
                              cache_frames=0)
        ds.sequence(0)  # the scene and trajectory: built once, not timed
        counter = itertools.count()

        def render():
            return ds.frame(0, next(counter) % FRAMES)

        def metrics(median_s, first):
            return {"frames_per_s": 1 / median_s if median_s else None,
                    "peak_mem_mb": measure.memory(render, "cpu")[0] / 1e6}
        return Run(fn=render, metrics=metrics, context=one_thread, device=torch.device("cpu"),
                   warmup=1)
    group = f"render-{shape_str(size)}"
    return Case("data", group, "1-thread", {"what": "render", "size": shape_str(size)}, setup)


def cases(device, quick=False):
    return [_case(s) for s in (((32, 64),) if quick else ((192, 640), (64, 192)))]
