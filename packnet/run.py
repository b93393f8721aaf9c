"""A whole training run, as `packnet train` does it, in one call:

    summary = packnet.train_and_evaluate(cfg)

trains (Trainer.fit: resume, overwrite and init as the CLI's flags), then
evaluates depth on the test split, draws test-strip.png, evaluates the pose
network's trajectories and writes summary.json (metrics and provenance) in
the run directory; returns the summary. The CLI only parses the command
line and prints.
"""
import os

import torch

from .callbacks import drawing_failed, predicted_depth
from .rundir import RunDir

__all__ = ["train_and_evaluate", "nothing_to_do", "evaluate_run", "write_test_strip", "no_ground_truth",
           "pose_eval", "abs_rel_line", "write_summary_json"]


def train_and_evaluate(cfg, evaluate=True, resume=False, overwrite=False, trust=False,
                       dataset=None, callbacks=None, log=print, state=None, init_state=None):
    """Train `cfg` to its steps, then (evaluate=True) evaluate it and write
    summary.json; returns the summary dict ({step, skipped_steps,
    train_seconds, images_per_s, eval, pose_eval, checkpoint, provenance}).

    resume / overwrite / trust: as Trainer.fit (continue the run in
    OUT_DIR/NAME/, replace it, load a checkpoint that needs the full
    unpickler). A resume with nothing to do (the run is at its last step and
    its summary.json exists, or evaluate=False) changes nothing and returns
    None. dataset, callbacks: Trainer's (the training data, what runs around
    the steps). state / init_state: checkpoint.pt's / cfg.init's contents
    when the caller has already loaded them. log: where messages go.
    """
    from .train import Trainer
    run = RunDir.of(cfg)
    if resume and nothing_to_do(cfg, evaluate, state, log):
        return None
    if evaluate and cfg.eval_every_minutes > 0:  # curve.csv: accuracy against training time
        from .callbacks import EvalCurve, default_callbacks
        from .train import make_dataset
        callbacks = list(default_callbacks(cfg) if callbacks is None else callbacks)
        callbacks.append(EvalCurve(make_dataset(cfg, split="test"), cfg.eval_every_minutes,
                                   cfg.batch_size))
    trainer = Trainer(cfg, dataset=dataset, log=log, callbacks=callbacks)
    trainer.fit(resume=resume, overwrite=overwrite, trust=trust, state=state,
                init_state=init_state)
    if trainer.rank != 0:
        return None
    summary = evaluate_run(trainer, evaluate=evaluate, log=log)
    log(f"trained {trainer.step} steps in {trainer.train_seconds / 60:.1f} min "
        f"({trainer.images_per_s:.1f} images/s); {trainer.skipped_steps} skipped")
    log(f"wrote {run.path}/ ({', '.join(run.holds(summary.pop('_strip')))})")
    return summary


def nothing_to_do(cfg, evaluate=True, state=None, log=print):
    """Whether a resume of cfg's run has nothing to do: it is at its last step
    and would evaluate nothing (evaluate off, or summary.json written). Then
    it says so and changes nothing (True). state: checkpoint.pt's contents
    when already loaded."""
    from .checkpoint import TRAINING_KEYS, load_checkpoint
    run = RunDir.of(cfg)
    if not os.path.isfile(run.checkpoint):
        return False
    if state is None:
        state = load_checkpoint(run.checkpoint, require=TRAINING_KEYS)
    at = int(state["step"])
    if cfg.steps > at or (evaluate and not os.path.isfile(run.summary)):
        return False
    log(f"resume: run {run.name!r} is at step {at} of {cfg.steps}: nothing to train"
        + (f", and {run.summary} is written" if evaluate else "")
        + f"; nothing was changed. Raise --steps to train further; packnet eval --checkpoint "
          f"{run.checkpoint} evaluates it again")
    return True


def evaluate_run(trainer, evaluate=True, log=print):
    """After fit: depth metrics on the test split, test-strip.png, pose
    trajectories, summary.json. Returns the summary (its `_strip` key: the
    test strip's path or None, for the caller's last line)."""
    from .provenance import describe_data, provenance
    from .train import make_dataset
    cfg = trainer.cfg
    summary = {"step": trainer.step, "skipped_steps": trainer.skipped_steps,
               "train_seconds": round(trainer.run_seconds, 1),   # the run's, over resumes
               "images_per_s": round(trainer.run_images_per_s, 2),
               "eval": None, "pose_eval": None, "checkpoint": trainer.ckpt_path}
    strip = test = None
    if evaluate:
        test = make_dataset(cfg, split="test")
        why = no_ground_truth(test) or (None if len(test) else "the test split has no samples")
        if why:
            log(f"evaluation skipped: {why}")
            summary["eval_skipped"] = why
        else:
            from .evaluate import evaluate as evaluate_depth, format_metrics
            loader = torch.utils.data.DataLoader(test, batch_size=cfg.batch_size)
            result = evaluate_depth(trainer.depth_net, loader, trainer.device,
                                    progress=cfg.progress)
            summary["eval"] = result
            log(format_metrics(result))
            log(abs_rel_line(result))
            strip = write_test_strip(trainer, test)   # None, with a warning, if it cannot draw
        summary["pose_eval"] = pose_eval(trainer.pose_net, test, trainer.device, log)
    summary["provenance"] = provenance(cfg, trainer.dataset, trainer.device)
    if trainer.init_info is not None:   # the file the weights started from (--init)
        summary["provenance"]["init"] = trainer.init_info
    if test is not None:
        summary["provenance"]["test_data"] = describe_data(test)
    write_summary_json(trainer.run.summary, summary, log)
    summary["_strip"] = strip
    return summary


def write_test_strip(trainer, dataset, frames=4):
    """test-strip.png in the run directory: `frames` test frames spread over
    `dataset` (input, predicted depth, ground truth, error), on one colour
    scale. Returns the path, or None when the data has no depth or the
    picture could not be made (a warning naming the error)."""
    from . import visualize
    from .image import write_image
    n = len(dataset)
    if n == 0:
        return None
    path = trainer.run.test_strip
    picks = sorted({round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)})
    items = []
    try:
        for i in picks:
            sample = dataset[i]
            if "depth" not in sample:
                return None
            depth = predicted_depth(trainer, sample["rgb"][None])[0]
            items.append((sample["rgb"], depth, sample["depth"]))
        write_image(path, visualize.test_strip(items))
    except Exception as e:  # noqa: BLE001 - any failure to draw only costs the picture
        drawing_failed(trainer, path, e)
        return None
    return path


def no_ground_truth(data):
    """Why `data` cannot be evaluated (no depth), or None."""
    if getattr(data, "has_depth", True):
        return None
    from .data import FolderDataset
    if isinstance(data, FolderDataset):
        return (f"folder data has no ground-truth depth (give {data.root}/depth/ with one "
                f"<frame>.npy in metres, or a 16-bit <frame>.png in 1/256 m, per frame)")
    return f"{type(data).__name__} has no ground-truth depth (depth_gt is off)"


def pose_eval(pose_net, data, device, log=print):
    """evaluate_pose's result (logged), or None with a note when the data set
    has no ground-truth poses."""
    from .evaluate import evaluate_pose, format_pose
    if data is None or not (hasattr(data, "sequence") and hasattr(data, "frame")):
        if data is not None:
            log(f"pose evaluation skipped: {type(data).__name__} has no ground-truth poses")
        return None
    if tuple(getattr(data, "context", ())) != (-1, 1) or data.frames_per_sequence < 5:
        log("pose evaluation skipped: needs context (-1, 1) and sequences of at least 5 frames")
        return None
    result = evaluate_pose(pose_net.to(device), data, device)
    log(format_pose(result))
    return result


def abs_rel_line(result):
    return (f"abs_rel: metric (no scaling) {result['metric']['abs_rel']:.4f}, median-scaled "
            f"{result['median_scaled']['abs_rel']:.4f}, median scale factor {result['scale']:.3f}")


def write_summary_json(path, obj, log=print):
    """Strict JSON (evaluate.write_json), saying which values were not finite."""
    from .evaluate import write_json
    found = write_json(path, obj)
    if found:
        log(f"{path}: {', '.join(found)} not finite, written as null (see its note)")
