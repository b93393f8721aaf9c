"""The `packnet` command: train, eval, infer, export-onnx.

    packnet train [--config run.yaml] [--set key=value ...] [--steps N] [--resume] ...
    packnet eval --checkpoint runs/NAME/checkpoint.pt [--data synthetic] [--split test]
    packnet infer IMAGE_OR_DIR --checkpoint C [--out DIR]
    packnet export-onnx --checkpoint C --out depth.onnx [--size H W]

`packnet train` with no arguments trains the small default preset on the
built-in synthetic driving data, evaluates on its held-out test sequences and
writes checkpoints, logs and depth previews to runs/<name>/.
"""
import argparse
import dataclasses
import json
import os
import sys

import torch


def _parse_value(text):
    import yaml
    return yaml.safe_load(text)


def _config(args):
    from .train import TrainConfig
    values = {}
    if args.config:
        import yaml
        with open(args.config) as f:
            values.update(yaml.safe_load(f) or {})
    for item in args.set or []:
        if "=" not in item:
            raise SystemExit(f"packnet train: --set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = _parse_value(v)
    for flag in ("name", "steps", "batch_size", "model", "ops", "data", "out_dir", "device",
                 "seed", "lr"):
        v = getattr(args, flag, None)
        if v is not None:
            values[flag] = v
    if args.size:
        values["size"] = tuple(args.size)
    if args.no_velocity:
        values["velocity_weight"] = 0.0
    if args.data_root:
        values.setdefault("data_kwargs", {})["root"] = args.data_root
    return TrainConfig.from_dict(values).validate()


def _abs_rel_line(result):
    return (f"abs_rel: metric (no scaling) {result['metric']['abs_rel']:.4f}, median-scaled "
            f"{result['median_scaled']['abs_rel']:.4f}, median scale factor {result['scale']:.3f}")


def cmd_train(args):
    from .train import Trainer
    cfg = _config(args)
    print("config:\n" + json.dumps(dataclasses.asdict(cfg), indent=1, default=list), flush=True)
    trainer = Trainer(cfg)
    trainer.fit(resume=args.resume)
    if trainer.rank != 0 or args.no_eval:
        return 0
    from .evaluate import evaluate, format_metrics
    from .train import make_dataset
    test = make_dataset(cfg, split="test")
    loader = torch.utils.data.DataLoader(test, batch_size=cfg.batch_size)
    result = evaluate(trainer.depth_net, loader, trainer.device)
    summary = {"step": trainer.step, "skipped_steps": trainer.skipped_steps,
               "train_seconds": round(trainer.train_seconds, 1),
               "images_per_s": round(trainer.images_per_s, 2), "eval": result,
               "checkpoint": trainer.ckpt_path}
    with open(os.path.join(trainer.run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    print(format_metrics(result))
    print(_abs_rel_line(result))
    print(f"trained {trainer.step} steps in {trainer.train_seconds / 60:.1f} min "
          f"({trainer.images_per_s:.1f} images/s); {trainer.skipped_steps} skipped")
    print(f"wrote {trainer.run_dir}/ (checkpoint.pt, log.csv, previews/, summary.json)")
    return 0


def _load_for_eval(path):
    from .infer import load_depth_net
    return load_depth_net(path)


def cmd_eval(args):
    from .evaluate import evaluate, format_metrics
    from .train import TrainConfig, load_checkpoint, make_dataset
    ck = load_checkpoint(args.checkpoint)
    cfg = TrainConfig.from_dict(ck["config"])
    kwargs = dict(cfg.data_kwargs)
    if args.data and args.data != cfg.data:  # another data set: the run's settings do not apply
        cfg, kwargs = dataclasses.replace(cfg, data=args.data), {}
    if args.data_root:
        kwargs["root"] = args.data_root
    if args.split_file:
        kwargs.pop("split_files", None)
        kwargs["split_file"] = args.split_file
    if cfg.data == "kitti" and "split_file" not in kwargs and "split_files" not in kwargs:
        raise SystemExit("packnet eval: KITTI needs --split-file (e.g. eigen_test_files.txt)")
    if cfg.data in ("kitti", "folder") and "root" not in kwargs:
        raise SystemExit(f"packnet eval: --data {cfg.data} needs --data-root")
    cfg = dataclasses.replace(cfg, data_kwargs=kwargs)
    net = _load_for_eval(args.checkpoint)
    device = torch.device(args.device)
    data = make_dataset(cfg, split=args.split)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size)
    crop = "garg" if cfg.data == "kitti" else None
    result = evaluate(net.to(device), loader, device, crop=crop)
    print(format_metrics(result))
    print(_abs_rel_line(result) + (" (Garg crop)" if crop else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "data": cfg.data, "split": args.split,
                       "crop": crop, "eval": result}, f, indent=1, default=float)
    return 0


def cmd_infer(args):
    from .infer import infer
    written = infer(args.input, args.checkpoint, args.out, device=torch.device(args.device))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_export(args):
    from .export import export_onnx
    net = _load_for_eval(args.checkpoint)
    diff = export_onnx(net, args.out, size=tuple(args.size))
    print(f"wrote {args.out}" + ("" if diff is None else f" (max |onnx - torch| = {diff:.2e})"))
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog="packnet", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="self-supervised training (default: synthetic data preset)")
    t.add_argument("--config", help="YAML file with TrainConfig fields")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any TrainConfig field")
    t.add_argument("--name")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    t.add_argument("--model")
    t.add_argument("--ops", choices=("fused", "reference"))
    t.add_argument("--data", choices=("synthetic", "kitti", "folder"))
    t.add_argument("--data-root")
    t.add_argument("--out-dir", dest="out_dir")
    t.add_argument("--device")
    t.add_argument("--seed", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--no-velocity", action="store_true", help="turn the velocity loss off")
    t.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint.pt")
    t.add_argument("--no-eval", action="store_true")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="depth metrics of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", choices=("synthetic", "kitti", "folder"))
    e.add_argument("--data-root")
    e.add_argument("--split", default="test", help="train | val | test (synthetic, or the "
                   "run's KITTI split_files)")
    e.add_argument("--split-file", dest="split_file", help="KITTI: a split file (Eigen/Zhou)")
    e.add_argument("--json", help="also write the metrics to this JSON file")
    e.add_argument("--batch-size", type=int, default=4, dest="batch_size")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.set_defaults(fn=cmd_eval)

    i = sub.add_parser("infer", help="colourised depth PNGs and raw .npy depth")
    i.add_argument("input", help="an image or a directory of images")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--out", default="depth_out")
    i.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    i.set_defaults(fn=cmd_infer)

    x = sub.add_parser("export-onnx", help="ONNX export of the depth network (reference ops)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--size", type=int, nargs=2, default=(192, 640), metavar=("H", "W"))
    x.set_defaults(fn=cmd_export)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
