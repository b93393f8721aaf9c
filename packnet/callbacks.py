"""What a training run does around its steps, as callbacks: the log (CSV and
TensorBoard), the progress bar, depth previews and checkpoints.

Trainer.fit owns only the loop: it runs a step (device tensors in, device
tensors out: packnet/step.py), reads the loss terms on the host every
`log_every` steps (`values`; None on the other steps, which never wait for
the device) and hands both to every callback. A new side task is a new
Callback, not an edit of the loop.

    class MyCallback(packnet.callbacks.Callback):
        def on_step_end(self, trainer, batch, out, values):
            if values is not None:
                print(trainer.step, values["loss"])

    Trainer(cfg, callbacks=[*default_callbacks(cfg), MyCallback()]).fit()
"""
import csv
import os
import sys

import torch

from . import geometry
from .checkpoint import first_line

__all__ = ["Callback", "CSVLog", "TensorBoardLog", "ProgressBar", "Previews", "Checkpoints",
           "EvalCurve", "default_callbacks", "write_preview", "predicted_depth"]


class Callback:
    """Hooks of a training run; each gets the Trainer (step, run_dir, nets).

    on_fit_start(trainer)                     before the first step of fit()
    on_step_end(trainer, batch, out, values)  after each step: the host batch,
        the step's device tensors, and on log steps the host values
        {loss, photometric, smoothness, velocity?, supervised?, lr,
        images_per_s} (else None)
    on_fit_end(trainer)                       after the last step, also when
        the run stops with an error (then before the error propagates)
    """

    def on_fit_start(self, trainer):
        pass

    def on_step_end(self, trainer, batch, out, values):
        pass

    def on_fit_end(self, trainer):
        pass


class CSVLog(Callback):
    """log.csv: one row every log_every steps (rundir.LOG_COLUMNS); a resumed
    run's rows after its checkpoint are dropped first (they are replayed)."""

    def on_fit_start(self, trainer):
        from .rundir import LOG_COLUMNS
        path = trainer.run.log
        trainer.run.trim_log(trainer.step, trainer.log)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(LOG_COLUMNS)

    def on_step_end(self, trainer, batch, out, values):
        if values is None:
            return
        self.writer.writerow([trainer.step, values["loss"], values["photometric"],
                              values["smoothness"], values.get("velocity", ""), values["lr"],
                              f"{values['images_per_s']:.2f}"])
        self.file.flush()

    def on_fit_end(self, trainer):
        self.file.close()


class TensorBoardLog(Callback):
    """tensorboard/: the same values as log.csv (skipped when tensorboard is
    not installed; a resumed run's later events are purged)."""

    def on_fit_start(self, trainer):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the CSV log has the same numbers
            self.writer = None
            return
        self.writer = SummaryWriter(trainer.run.tensorboard,
                                    purge_step=trainer.step + 1 if trainer.step else None)

    def on_step_end(self, trainer, batch, out, values):
        if self.writer is None or values is None:
            return
        for k, v in values.items():
            tag = "train/images_per_s" if k == "images_per_s" else f"train/{k}"
            self.writer.add_scalar(tag, v, trainer.step)

    def on_fit_end(self, trainer):
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar on stderr, moved every step (no device read), its loss and
    images/s refreshed on log steps."""

    def on_fit_start(self, trainer):
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
            return
        self.bar = tqdm(total=trainer.target, initial=trainer.step, desc="train", unit="step",
                        file=sys.stderr)

    def on_step_end(self, trainer, batch, out, values):
        if self.bar is None:
            return
        self.bar.update(1)
        if values is not None:
            self.bar.set_postfix(loss=f"{values['loss']:.4f}",
                                 img_s=f"{values['images_per_s']:.1f}")

    def on_fit_end(self, trainer):
        if self.bar is not None:
            self.bar.close()


class Previews(Callback):
    """previews/step_<N>.png every `every` steps: the batch's first frame, its
    predicted depth and, when the batch has it, the ground truth."""

    def __init__(self, every):
        self.every = every

    def on_step_end(self, trainer, batch, out, values):
        if self.every and trainer.step % self.every == 0:
            write_preview(trainer, batch)


@torch.no_grad()
def predicted_depth(trainer, rgb):
    """The depth net's full-resolution depth of host images rgb [N,3,H,W] ->
    [N,1,H,W] on the host, in eval mode (the net's mode is restored)."""
    was_training = trainer.depth_net.training
    trainer.depth_net.eval()
    try:
        return geometry.inv2depth(trainer.depth_net(rgb.to(trainer.device)).float()).cpu()
    finally:
        trainer.depth_net.train(was_training)


def drawing_failed(trainer, path, error):
    """A picture that could not be made is a warning: the run's results
    (checkpoint, log, summary) never depend on it. PACKNET_DEBUG=1 raises."""
    if os.environ.get("PACKNET_DEBUG"):
        raise error
    trainer.log(f"warning: could not write {path} ({type(error).__name__}: "
                f"{first_line(str(error))}); training and its results are not affected")


def write_preview(trainer, batch):
    """previews/step_<N>.png: the input, the colourised predicted depth and,
    when the batch has it, the ground truth. Returns the path, or None when
    the picture could not be made (a warning; training goes on)."""
    from . import visualize
    from .image import write_image
    path = trainer.run.preview(trainer.step)
    try:
        depth = predicted_depth(trainer, batch["rgb"][:1])[0]
        gt = batch["depth"][0] if "depth" in batch else None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_image(path, visualize.labelled_preview(batch["rgb"][0], depth, gt))
    except Exception as e:  # noqa: BLE001 - any failure to draw only costs the picture
        drawing_failed(trainer, path, e)
        return None
    return path


class Checkpoints(Callback):
    """checkpoint.pt every `every` steps and at the end (Trainer.save reads the
    device counters first, so a run that must stop stops before saving)."""

    def __init__(self, every):
        self.every = every

    def on_step_end(self, trainer, batch, out, values):
        if trainer.step % self.every == 0:
            trainer.save()


class EvalCurve(Callback):
    """Depth accuracy against training time: every `minutes` of training wall
    time (the evaluations themselves not counted), evaluate the depth net on
    `dataset` and append a row to curve.csv in the run directory (minutes,
    step, abs_rel metric and median-scaled, median scale). The rows of a
    resumed run continue the file. tools/plot_curve.py draws the curves of
    several runs in one picture."""

    COLUMNS = ["minutes", "step", "abs_rel", "abs_rel_median_scaled", "median_scale"]

    def __init__(self, dataset, minutes=1.0, batch_size=4):
        self.dataset, self.every, self.batch_size = dataset, 60.0 * minutes, batch_size

    def on_fit_start(self, trainer):
        import time
        self.path = trainer.run.file(trainer.run.CURVE)
        self.paused = 0.0
        self.t0 = time.perf_counter() - trainer.seconds_before  # a resume continues the clock
        self.next = (int((trainer.seconds_before) // self.every) + 1) * self.every
        if trainer.step == 0:
            self._evaluate(trainer, 0.0)

    def _clock(self):
        import time
        return time.perf_counter() - self.t0 - self.paused

    def on_step_end(self, trainer, batch, out, values):
        if self._clock() >= self.next:
            self._evaluate(trainer, self._clock())
            self.next += self.every * max(1, int((self._clock() - self.next) // self.every) + 1)

    def on_fit_end(self, trainer):
        if trainer.step >= trainer.target:
            self._evaluate(trainer, self._clock())

    def _evaluate(self, trainer, seconds):
        import time

        from .evaluate import evaluate
        start = time.perf_counter()
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size)
        r = evaluate(trainer.depth_net, loader, trainer.device, progress=False)
        trainer.depth_net.train()
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.COLUMNS)
            w.writerow([f"{seconds / 60:.3f}", trainer.step, f"{r['metric']['abs_rel']:.5f}",
                        f"{r['median_scaled']['abs_rel']:.5f}", f"{r['scale']:.4f}"])
        self.paused += time.perf_counter() - start


def default_callbacks(cfg, rank=0):
    """What `packnet train` runs with: on rank 0 the CSV and TensorBoard logs,
    the progress bar (cfg.progress), previews (cfg.preview_every) and, on
    every rank, checkpoints (rank 0 writes them)."""
    cbs = []
    if rank == 0:
        cbs += [CSVLog(), TensorBoardLog()]
        if cfg.progress:
            cbs.append(ProgressBar())
        if cfg.preview_every:
            cbs.append(Previews(cfg.preview_every))
    cbs.append(Checkpoints(cfg.ckpt_every))
    return cbs
