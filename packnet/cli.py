"""The `packnet` command: train, eval, infer, export-onnx.

    packnet train [--config run.yaml] [--set key=value ...] [--steps N] [--resume] ...
    packnet eval --checkpoint runs/NAME/checkpoint.pt [--data synthetic] [--split test]
    packnet infer IMAGE_OR_DIR --checkpoint C [--out DIR]
    packnet export-onnx --checkpoint C --out depth.onnx [--size H W]

`packnet train` with no arguments trains the small default preset on the
built-in synthetic driving data, evaluates on its held-out test sequences and
writes checkpoints, logs and depth previews to runs/<name>/.

A user error (a bad setting, file or data set) prints one line,
"packnet <command>: error: ...", naming the thing, the value and what to do,
and exits with status 2; a run that stops (divergence, images that could not
be read) exits with 1. PACKNET_DEBUG=1 shows the Python traceback instead.
"""
import argparse
import dataclasses
import json
import os
import sys

import torch

EXIT_USAGE = 2      # a bad setting, file or data set
EXIT_FAILED = 1     # the work started and did not finish (divergence, unreadable images)


class UsageError(ValueError):
    """A command-line mistake: main() prints it as one line and exits with 2."""


# ------------------------------------------------------------------ settings
def _field_types():
    from .config import TrainConfig
    return {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _parse_set(item, types):
    """--set KEY=VALUE -> (key, value): text for str settings (a run named
    'yes' stays 'yes'), YAML for the others (TrainConfig converts the type)."""
    import yaml

    from .config import yaml_loader
    if "=" not in item:
        raise UsageError(f"--set takes KEY=VALUE, got {item!r} (settings: packnet train "
                         f"--list-settings)")
    k, v = (x.strip() for x in item.split("=", 1))
    if types.get(k) is str:
        return k, v
    try:
        return k, yaml.load(v, Loader=yaml_loader())
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise UsageError(f"--set {k}={v}: not valid YAML ({problem})") from None


def _read_config_file(path):
    import yaml

    from .config import yaml_loader
    if os.path.isdir(path):
        raise UsageError(f"--config {path}: is a directory; give a YAML file, e.g. "
                         f"configs/packnet01-kitti.yaml")
    if not os.path.isfile(path):
        raise UsageError(f"config file not found: {path}")
    try:
        with open(path) as f:
            values = yaml.load(f, Loader=yaml_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read the config file ({' '.join(str(e).split())})") \
            from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a config file is a mapping of TrainConfig settings "
                         f"(name: value), got a {type(values).__name__}")
    return values


TRAIN_FLAGS = ("name", "steps", "batch_size", "model", "ops", "data", "out_dir", "device",
               "seed", "lr")


def _explicit_settings(args):
    """The settings this command line gives: config file, then --set, then flags."""
    types = _field_types()
    values = {}
    if args.config:
        values.update(_read_config_file(args.config))
    for item in args.set or []:
        k, v = _parse_set(item, types)
        values[k] = v
    for flag in TRAIN_FLAGS:
        v = getattr(args, flag, None)
        if v is not None:
            values[flag] = v
    if args.size:
        values["size"] = tuple(args.size)
    if args.no_velocity:
        values["velocity_weight"] = 0.0
    if getattr(args, "init", None):
        values["init"] = os.path.abspath(os.path.expanduser(args.init))
    return values


def _config(args, base=None):
    """TrainConfig from `base` (a resumed run's saved settings) overridden by
    the command line; --data-root goes into data_kwargs; validated."""
    from .config import TrainConfig
    values = dict(base or {})
    explicit = _explicit_settings(args)
    values.update(explicit)
    if args.data_root:
        kw = values.get("data_kwargs")
        values["data_kwargs"] = {**(kw if isinstance(kw, dict) else {}), "root": args.data_root}
    return TrainConfig.from_dict(values, validate=True)


# ------------------------------------------------------------------ commands
def cmd_train(args):
    from .checkpoint import TRAINING_KEYS, load_checkpoint
    from .config import (ADJUSTABLE_ON_RESUME, TrainConfig, format_changes, resume_changes,
                         saved_settings, settings_help)
    from .rundir import RunDir
    if args.list_settings:
        print(settings_help())
        return 0
    explicit = _explicit_settings(args)
    defaults = TrainConfig()
    run = RunDir(explicit.get("out_dir", defaults.out_dir), explicit.get("name", defaults.name))
    # one writer per run directory (rank 0 writes it): locked before an existing
    # run is read, so nobody trains it between our reading and our writing
    lock = run.lock(log=print) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        if lock is not None and os.path.isdir(run.path):
            lock.acquire()
        run.check(resume=args.resume, overwrite=args.overwrite)
        base, saved, state = None, None, None
        if args.resume and os.path.isfile(run.checkpoint):
            # the run's own settings, overridden by what this command line changes
            state = load_checkpoint(run.checkpoint, trust=args.trust_checkpoint,
                                    require=TRAINING_KEYS)
            saved = saved_settings(state["config"])
            base = {k: v for k, v in saved.items() if k in _field_types()}
        cfg = _config(args, base)
        files = cfg.data_kwargs.get("split_files") if cfg.data == "kitti" else None
        if files and "test" not in files and not args.no_eval:
            raise UsageError(f"data_kwargs split_files = {files}: no test entry, the split that "
                             f"is evaluated after training; add test: FILE, or train with "
                             f"--no-eval")
        if saved is not None:
            fixed, _ = resume_changes(saved, cfg)
            if fixed:
                raise UsageError(f"cannot resume {run.path} with changed settings: "
                                 f"{format_changes(fixed)}. These are fixed for a run: drop them "
                                 f"to continue it, or start a new run with --name NEW (--resume "
                                 f"may change: {', '.join(ADJUSTABLE_ON_RESUME)})")
            at = int(state["step"])
            if cfg.steps < at:
                raise UsageError(f"--steps {cfg.steps}: run {run.name!r} is already at step {at} "
                                 f"and does not go back; give --steps {at} or more, or leave "
                                 f"--steps out (nothing was changed)")
            from .run import nothing_to_do
            if nothing_to_do(cfg, evaluate=not args.no_eval, state=state):
                return 0
        init = None
        if cfg.init and saved is None:  # checked before the networks and data are built
            from .release import check_init
            init = load_checkpoint(cfg.init, trust=args.trust_checkpoint, require=())
            check_init(init, cfg.init, cfg.model, cfg.model_kwargs.get("version", "1A"))
        if lock is not None:
            lock.acquire()  # a new run: its directory is made now, the settings being good
        loaded = [state, init]  # handed over, not kept alive here during training
        del state, init
        return _train(args, cfg, loaded)
    finally:
        if lock is not None:
            lock.release()


def _train(args, cfg, loaded):
    """cmd_train's work, under the run's lock: train_and_evaluate."""
    from .run import train_and_evaluate
    print("config:\n" + json.dumps(dataclasses.asdict(cfg), indent=1, default=list), flush=True)
    train_and_evaluate(cfg, evaluate=not args.no_eval, resume=args.resume,
                       overwrite=args.overwrite, trust=args.trust_checkpoint,
                       state=loaded.pop(0), init_state=loaded.pop(0))
    return 0


def _write_json(path, obj):
    from .run import write_summary_json
    write_summary_json(path, obj)


def _device(name):
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}: no CUDA device is available here; use cpu")
    return dev


def cmd_eval(args):
    from .evaluate import evaluate, format_metrics
    from .run import abs_rel_line, no_ground_truth, pose_eval
    from .infer import depth_net_from_checkpoint, pose_net_from_checkpoint
    from .checkpoint import load_checkpoint
    from .config import TrainConfig, packops_backend, saved_settings
    from .release import checkpoint_format, checkpoint_info, describe
    from .train import make_dataset
    device = _device(args.device)
    backend = packops_backend(device=device)  # PACKOPS_BACKEND's, checked before any work
    ck = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint, require=())
    release = None
    if checkpoint_format(ck, args.checkpoint) == "release":
        release = checkpoint_info(ck, args.checkpoint)
        if not args.data:  # no data settings of ours in the file: the command line gives them
            raise UsageError(f"{args.checkpoint} is a PackNet-SfM release, which has no packnet "
                             f"data settings: give --data kitti --data-root DIR --split-file "
                             f"FILE (or --data folder --data-root DIR, or --data synthetic)")
        cfg = TrainConfig(model=release["depth_net"], model_kwargs={"version": release["version"]},
                          data=args.data, size=release["image_shape"] or (192, 640))
        print(describe(release, cfg.size))
    else:
        try:
            cfg = TrainConfig.from_dict(saved_settings(ck["config"]))
        except ValueError as e:
            raise UsageError(f"{args.checkpoint}: the checkpoint's config is not usable ({e})") \
                from None
    if args.json:
        _check_writable(args.json, "--json")
    kwargs = dict(cfg.data_kwargs)
    if args.data and args.data != cfg.data:  # another data set: the run's settings do not apply
        cfg, kwargs = dataclasses.replace(cfg, data=args.data), {}
    _check_eval_options(args, cfg.data, kwargs.get("split_files"))
    if args.data_root:
        kwargs["root"] = args.data_root
    if args.split_file:
        kwargs.pop("split_files", None)
        kwargs["split_file"] = args.split_file
    if cfg.data == "kitti" and "split_file" not in kwargs and "split_files" not in kwargs:
        raise UsageError("KITTI needs --split-file (e.g. eigen_test_files.txt)")
    if cfg.data in ("kitti", "folder") and "root" not in kwargs:
        raise UsageError(f"--data {cfg.data} needs --data-root")
    cfg = dataclasses.replace(cfg, data_kwargs=kwargs)
    data = make_dataset(cfg, split=args.split)
    why = no_ground_truth(data) or (None if len(data) else
                                     f"the {args.split} split of {cfg.data} has no samples")
    crop = "garg" if cfg.data == "kitti" else None
    if why:
        print(f"evaluation skipped: {why}")
        result = None
    else:
        net = depth_net_from_checkpoint(ck, args.checkpoint, trust=args.trust_checkpoint)
        loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size)
        result = evaluate(net.to(device), loader, device, crop=crop)
        print(format_metrics(result))
        print(abs_rel_line(result) + (" (Garg crop)" if crop else ""))
    pose_net = pose_net_from_checkpoint(ck, args.checkpoint)
    pose = pose_eval(pose_net, data, device) if pose_net is not None else None
    if args.json:
        from .provenance import provenance
        out = {"checkpoint": args.checkpoint, "data": cfg.data, "split": args.split,
               "crop": crop, "eval": result, "pose_eval": pose,
               "provenance": provenance(cfg, data, device, backend=backend)}
        if release:
            out["release"] = release
        if why:
            out["skipped"] = why
        replaced = os.path.exists(args.json)
        _write_json(args.json, out)
        print(f"wrote {args.json}" + (" (replaced the existing file)" if replaced else ""))
    return 0


def _check_eval_options(args, data, split_files):
    """Refuse, by name, what the data set does not take: a data directory for
    the built-in synthetic data, a split file for anything but KITTI, a split
    name it does not have."""
    from .specs import SPLITS
    if data == "synthetic":
        for flag, value in (("--data-root", args.data_root), ("--split-file", args.split_file)):
            if value:
                raise UsageError(f"{flag} {value}: synthetic data is built in and takes no "
                                 f"{'data directory' if flag == '--data-root' else 'split file'}; "
                                 f"drop {flag}, or evaluate on --data kitti or --data folder")
    elif data == "folder" and args.split_file:
        raise UsageError(f"--split-file {args.split_file}: folder data has no split files (one "
                         f"sequence: every split is the whole folder); drop --split-file")
    names = SPLITS
    if data == "kitti" and not args.split_file and isinstance(split_files, dict):
        names = tuple(split_files)
    if args.split not in names:
        where = "the run's split_files" if names is not SPLITS else f"{data} data"
        raise UsageError(f"--split {args.split!r}: {where} has the splits {', '.join(names)}"
                         + ("; or give a split file with --split-file FILE"
                            if data == "kitti" else ""))


def _check_writable(path, flag):
    """Refuse now an output file that could only fail to be written after the work."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; give a file name, e.g. "
                         f"{os.path.join(path, 'metrics.json')}")
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise UsageError(f"{flag} {path}: its directory {parent} {what}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path}: not writable here; give another path")


def cmd_infer(args):
    from .infer import InferenceError, infer, list_images
    device = _device(args.device)
    list_images(args.input)  # a missing input is named before the network is read
    net, size = _depth_net(args)
    existing = set(os.listdir(args.out)) if os.path.isdir(args.out) else set()

    def report(written):
        replaced = sum(os.path.basename(p) in existing for p in written)
        print(f"wrote {len(written)} files to {args.out}"
              + (f" ({replaced} replaced existing files)" if replaced else ""))

    try:
        written = infer(args.input, net, args.out, size=size, device=device,
                        log=lambda m: print(f"packnet infer: {m}", file=sys.stderr))
    except InferenceError as e:
        report(e.written)
        print(f"packnet infer: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    report(written)
    return 0


def _depth_net(args):
    """(depth network, input size) of --checkpoint: a packnet checkpoint, or a
    PackNet-SfM release (its network; its image_shape unless --size is given)."""
    from .release import describe, load_release
    net, _, info = load_release(args.checkpoint, pose=False, trust=args.trust_checkpoint)
    if info["format"] == "release":
        print(describe(info, args.size))
        return net, args.size or info["image_shape"]
    return net, args.size


def cmd_export(args):
    from .export import ExportError, export_onnx
    net, size = _depth_net(args)
    replaced = os.path.exists(args.out)
    try:
        diff = export_onnx(net, args.out, size=tuple(size or (192, 640)))
    except ExportError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.out}" + (" (replaced the existing file)" if replaced else "")
          + ("" if diff is None else f" (max |onnx - torch| = {diff:.2e})"))
    return 0


# -------------------------------------------------------------------- parser
def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _setting_help(name, what):
    """A train flag's help: what it is and TrainConfig's default."""
    from .config import TrainConfig
    default = getattr(TrainConfig(), name)
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    return f"{what} (default: {default})"


DEVICE_DEFAULT = "cuda" if torch.cuda.is_available() else "cpu"
TRUST_HELP = ("load a checkpoint that needs Python's full unpickler, which can run code stored "
              "in the file; only for files you made or trust (default: off, such files are "
              "refused)")


def build_parser():
    from .specs import DATASETS, DEPTH_MODELS
    ap = argparse.ArgumentParser(
        prog="packnet", description=__doc__.split("\n\n")[0],
        epilog="packnet COMMAND --help lists a command's options. A bad setting, file or data "
               "set prints one line naming it and exits with 2; a run that stops (divergence, "
               "unreadable images) exits with 1; PACKNET_DEBUG=1 shows the traceback.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="self-supervised training (default: synthetic data preset)",
                       description="Self-supervised training. Every setting is a TrainConfig "
                       "field (packnet/train.py): list them with --list-settings, set them with "
                       "--config or --set; the flags below are shortcuts. The run goes to "
                       "OUT_DIR/NAME/.")
    t.add_argument("--config", metavar="YAML",
                   help="YAML file of TrainConfig settings, e.g. configs/packnet01-kitti.yaml "
                        "(default: none)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any TrainConfig field, repeatable, over --config: --set lr=1e-3 "
                        "--set size=64x192 --set 'data_kwargs={num_sequences: 4}'; fields, "
                        "types, defaults: --list-settings (documented in TrainConfig, "
                        "packnet/train.py) (default: none)")
    t.add_argument("--list-settings", action="store_true",
                   help="print every TrainConfig setting with its type, default and help, "
                        "then exit (default: off)")
    t.add_argument("--name", help=_setting_help("name", "run name; files go to OUT_DIR/NAME/"))
    t.add_argument("--out-dir", dest="out_dir", metavar="DIR",
                   help=_setting_help("out_dir", "directory of the runs"))
    t.add_argument("--steps", type=int, metavar="N", help=_setting_help("steps", "training steps"))
    t.add_argument("--batch-size", type=int, dest="batch_size", metavar="N",
                   help=_setting_help("batch_size", "samples per step"))
    t.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help=_setting_help("size", "training image size, multiples of 32"))
    t.add_argument("--lr", type=_number, help=_setting_help("lr", "Adam learning rate"))
    t.add_argument("--model", help=_setting_help("model", "depth network: "
                                                 + ", ".join(DEPTH_MODELS)))
    t.add_argument("--ops", choices=("fused", "reference"),
                   help=_setting_help("ops", "packops' fused kernels or the plain-PyTorch "
                                             "reference"))
    t.add_argument("--data", choices=DATASETS,
                   help=_setting_help("data", "data set"))
    t.add_argument("--data-root", metavar="DIR",
                   help="data directory (data_kwargs root): KITTI raw root, or a folder of "
                        "frames with intrinsics.txt (+ speed.txt) (default: none)")
    t.add_argument("--device", help=_setting_help("device", "auto, cpu, cuda or cuda:N"))
    t.add_argument("--seed", type=int, help=_setting_help("seed", "random seed"))
    t.add_argument("--no-velocity", action="store_true",
                   help="turn the velocity loss off (velocity_weight=0; the scale is then left "
                        "free) (default: on)")
    t.add_argument("--resume", action="store_true",
                   help="continue OUT_DIR/NAME/checkpoint.pt with the run's settings; steps, "
                        "lr, logging and the device may change, the rest is fixed (default: off)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of this name (its checkpoint, log, summary, "
                        "previews; default: off, an existing run is refused)")
    t.add_argument("--init", metavar="FILE",
                   help="start a new run from the network weights of FILE: a packnet "
                        "checkpoint or a PackNet-SfM release .ckpt, whose depth network must "
                        "be this run's --model and version; fresh optimizer and schedule "
                        "(--resume continues a run instead) (default: random initialisation)")
    t.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    t.add_argument("--no-eval", action="store_true",
                   help="skip the evaluation on the test split after training (default: "
                        "evaluate when the data has ground-truth depth)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="depth metrics of a checkpoint",
                       description="Depth metrics (abs_rel, ..., a3; metric and median-scaled) "
                       "of a checkpoint on a data set with ground-truth depth.")
    e.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a packnet train checkpoint (runs/NAME/checkpoint.pt) or a PackNet-SfM "
                        "release .ckpt (required, no default)")
    e.add_argument("--data", choices=DATASETS,
                   help="data set (default: the run's own; needed for a release file)")
    e.add_argument("--data-root", metavar="DIR",
                   help="data directory for kitti or folder (default: the run's own)")
    e.add_argument("--split", default="test",
                   help="train | val | test (synthetic, or the run's KITTI split_files) "
                        "(default: test)")
    e.add_argument("--split-file", dest="split_file", metavar="FILE",
                   help="KITTI: a split file such as eigen_test_files.txt (default: the run's)")
    e.add_argument("--json", metavar="FILE",
                   help="also write the metrics to this JSON file (default: none)")
    e.add_argument("--batch-size", type=_positive_int, default=4, dest="batch_size",
                   metavar="N", help="evaluation batch size (default: 4)")
    e.add_argument("--device", default=DEVICE_DEFAULT,
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    e.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    e.set_defaults(fn=cmd_eval)

    i = sub.add_parser("infer", help="colourised depth PNGs and raw .npy depth",
                       description="Depth for images: <name>_depth.png (colourised inverse "
                       "depth) and <name>_depth.npy (float32 depth) per image; inputs that share "
                       "a name get <name>_<ext>_depth.* (a.png, a.jpg), and inputs that would "
                       "still write one file (a.png, a.PNG) are refused before any work. With "
                       "--out the input directory, earlier *_depth.png outputs there are left "
                       "out. An image that cannot be read or processed is skipped with a "
                       "warning; the exit status is then 1.")
    i.add_argument("input", help="an image, or a directory of images (.png .jpg .jpeg .bmp "
                                 ".ppm, not recursive)")
    i.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a packnet train checkpoint or a PackNet-SfM release .ckpt (required, "
                        "no default)")
    i.add_argument("--out", default="depth_out", metavar="DIR",
                   help="output directory (default: depth_out)")
    i.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="network input size, multiples of 32 (default: a release file's "
                        "image_shape, else each image's size rounded to multiples of 32)")
    i.add_argument("--device", default=DEVICE_DEFAULT,
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    i.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    i.set_defaults(fn=cmd_infer)

    x = sub.add_parser("export-onnx", help="ONNX export of the depth network (reference ops)",
                       description="ONNX export of a checkpoint's depth network for a fixed "
                       "input size (needs: pip install onnx onnxruntime).")
    x.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a packnet train checkpoint or a PackNet-SfM release .ckpt (required, "
                        "no default)")
    x.add_argument("--out", required=True, metavar="FILE",
                   help="the .onnx file to write (required, no default)")
    x.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size of the graph, multiples of 32 (default: a release file's "
                        "image_shape, else 192 640)")
    x.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    x.set_defaults(fn=cmd_export)
    return ap


def _user_errors():
    import yaml

    from .data import DataError
    return (ValueError, OSError, DataError, yaml.YAMLError)


def main(argv=None):
    args = build_parser().parse_args(argv)
    name = f"packnet {args.command}"
    if os.environ.get("PACKNET_DEBUG"):
        return args.fn(args)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `packnet ... | head`: the reader is gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FloatingPointError as e:  # the trainer stopped: too many non-finite steps
        print(f"{name}: error: {e}. Lower the learning rate (--lr) or raise max_bad_steps; the "
              f"last checkpoint (if any) is in the run directory", file=sys.stderr)
        return EXIT_FAILED
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        # the library's own prefixes repeat what "packnet <command>:" says
        for prefix in (f"{args.command}: ", "load_depth_net: ", "export_onnx: "):
            message = message[len(prefix):] if message.startswith(prefix) else message
        print(f"{name}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
