"""The synthetic driving renderer (packnet.data.SyntheticDriving): the time to
render one frame (rgb + depth) on one thread, as a data loader worker does.

Sizes: 192x640 (the KITTI training size) and 64x192 (the main job's); every
timed call renders a new frame of a 200-frame sequence (no cache), cycling.
Suite "data": benchmarks/results/<device>/data.md. CPU only (the renderer
is torch on the CPU); on a GPU machine it still runs on the CPU.
"""
import time

import torch

from . import harness

OPS = ("render",)
SUITE = "data"
SIZES = ((192, 640), (64, 192))
QUICK_SIZES = ((32, 64),)
FRAMES = 200


class RenderItem:
    suite, op, provider = SUITE, "render", "1-thread"

    def __init__(self, size):
        self.size = tuple(size)
        self.group = f"render-{harness.shape_str(self.size)}"
        self.id = f"{self.group}-{self.provider}"

    def params(self):
        return {"what": "render", "size": harness.shape_str(self.size)}

    def prepare(self, device, copy_gbps=None):
        from packnet.data.synthetic import SyntheticDriving
        ds = SyntheticDriving("train", self.size, num_sequences=1, frames_per_sequence=FRAMES,
                              cache_frames=0)
        ds.sequence(0)  # the scene and trajectory: built once, not timed
        counter = iter(range(10 ** 9))

        def render():
            return ds.frame(0, next(counter) % FRAMES)

        threads = torch.get_num_threads()

        class _OneThread:
            def __enter__(self):
                torch.set_num_threads(1)

            def __exit__(self, *exc):
                torch.set_num_threads(threads)

        with _OneThread():
            t0 = time.perf_counter()
            render()
            first_s = time.perf_counter() - t0

        def extras(median_ms):
            with _OneThread():
                mem = harness.peak_memory(render, "cpu")
            return {**self.params(), "peak_mem_mb": mem / 1e6,
                    "frames_per_s": 1e3 / median_ms if median_ms else None}
        return harness.Run(fn=render, context=_OneThread, first_s=first_s, extras=extras,
                           device=torch.device("cpu"))


def cases(device, quick=False, ops=OPS):
    return [RenderItem(s) for s in (QUICK_SIZES if quick else SIZES)] if "render" in ops else []


def table(rows, head=None):
    lines = ["| what | size | threads | median ms | p20/p80 ms | frames/s | peak MB |",
             "|---|---|---|--:|--:|--:|--:|"]
    for r in rows:
        fps = "-" if r.get("frames_per_s") is None else f"{r['frames_per_s']:.2f}"
        lines.append(f"| {r['what']} | {r['size']} | {r['provider']} | {r['median_ms']:.1f} | "
                     f"{r['p20_ms']:.1f}/{r['p80_ms']:.1f} | {fps} | {r['peak_mem_mb']:.1f} |")
    return lines
