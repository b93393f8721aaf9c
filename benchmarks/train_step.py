"""One PackNet self-supervised training step, reference ops vs packops' fused
ops, side by side in one process:

    python -m benchmarks.train_step [--device cpu|cuda] [--model PackNet01|PackNetSlim01]
                                    [--batch 1] [--height 64] [--width 192] [--amp]

The step: depth net (train mode, 4 inverse-depth scales), pose net (2 context
frames), pose vectors -> matrices, MultiViewPhotometricLoss (min-reprojection,
automask, smoothness) + VelocityLoss, backward, Adam. Providers:
  reference  PACKOPS backend "reference" and the loss's per-call composition
             (every scale and frame its own reproject / photometric_loss call)
  fused      backend "auto" (cpu on CPU, cuda/triton on CUDA) and the loss's
             batched path (one reproject and two photometric_loss calls)
Also times the photometric term alone (depth given), fused vs per-call, on
the fused backend. Writes benchmarks/results/train-step-<device>.json and .md.
"""
import argparse
import json
import os
import sys

import torch

import packops
from packnet import geometry, models
from packnet.losses import MultiViewPhotometricLoss, VelocityLoss, translation_norms

from . import harness, report

PROVIDERS = {"reference": ("reference", False), "fused": ("auto", True)}


def _batch(B, H, W, device, seed=0):
    g = torch.Generator().manual_seed(seed)

    def img():
        x = torch.rand(B, 3, H + 4, W + 4, generator=g)
        return torch.nn.functional.avg_pool2d(x, 5, 1).to(device)  # some texture, not noise

    K = torch.tensor([[0.58 * W, 0, W / 2 - 0.5], [0, 1.92 * H, H / 2 - 0.5], [0, 0, 1]])
    gt = torch.full((B, 2), 0.5)
    return img(), [img(), img()], K.expand(B, 3, 3).to(device), gt.to(device)


def make_step(depth_net, pose_net, fused_loss, batch, amp):
    image, contexts, K, gt_norms = batch
    loss_fn = MultiViewPhotometricLoss(fused=fused_loss)
    vel = VelocityLoss()
    params = list(depth_net.parameters()) + list(pose_net.parameters())
    opt = torch.optim.Adam(params, lr=2e-4)
    dev = image.device.type

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            inv_depths = depth_net(image)
            vec = pose_net(image, contexts)
        inv_depths = [d.float() for d in inv_depths]
        poses = [geometry.pose_vec2mat(vec[:, j].float()) for j in range(vec.shape[1])]
        loss = loss_fn(image, contexts, inv_depths, K, poses)["loss"] + vel(poses, gt_norms)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def run(args):
    device = torch.device(args.device)
    torch.manual_seed(0)
    depth_net = getattr(models, args.model)().to(device).train()
    pose_net = models.PoseNet(nb_ref_imgs=2).to(device).train()
    batch = _batch(args.batch, args.height, args.width, device)
    rows = []
    for name, (backend, fused_loss) in PROVIDERS.items():
        with packops.use_backend(backend):
            step = make_step(depth_net, pose_net, fused_loss, batch, args.amp)
            step()  # optimizer state, caches
            t = harness.time_fn(step, warmup=1, reps=args.reps, device=device)
            mem = harness.peak_memory(step, device)
        rows.append({"what": "training step", "provider": name, "median_ms": t["median"],
                     "p20_ms": t["p20"], "p80_ms": t["p80"], "reps": t["reps"],
                     "images_per_s": args.batch / (t["median"] * 1e-3), "peak_mem_mb": mem / 1e6})
        print(f"step {name}: {t['median']:.1f} ms, {mem / 1e6:.0f} MB", file=sys.stderr)
    # the photometric term alone, on the fused backend: batched vs per call
    image, contexts, K, _ = batch
    with torch.no_grad():
        inv = [d.detach() for d in depth_net(image)]
    poses = [geometry.pose_vec2mat(torch.tensor([[0.0, 0, -0.5, 0, 0.01, 0]], device=device)
                                   .expand(args.batch, 6))] * 2
    for fused in (False, True):
        invs = [d.clone().requires_grad_() for d in inv]
        crit = MultiViewPhotometricLoss(fused=fused)

        def loss_step():
            return torch.autograd.grad(crit(image, contexts, invs, K, poses)["loss"], invs)
        t = harness.time_fn(loss_step, warmup=1, reps=args.reps, device=device)
        mem = harness.peak_memory(loss_step, device)
        rows.append({"what": "photometric term fwd+bwd", "provider": "batched" if fused else "per-call",
                     "median_ms": t["median"], "p20_ms": t["p20"], "p80_ms": t["p80"],
                     "reps": t["reps"], "images_per_s": None, "peak_mem_mb": mem / 1e6})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", choices=("PackNet01", "PackNetSlim01"), default="PackNet01")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast for the networks")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = run(args)
    params = {n: models.count_params(getattr(models, n)() if n != "PoseNet" else models.PoseNet())
              for n in (args.model, "PoseNet")}
    head = {"device": report.device_name(device), "torch": torch.__version__,
            "git": report.git_revision(), "model": args.model,
            "input": f"{args.batch}x3x{args.height}x{args.width}, 2 context frames, 4 scales",
            "amp": args.amp, "params": params}
    lines = [f"# PackNet training step: {head['device']}", ""]
    lines += [f"- {k}: {v}" for k, v in head.items()] + [""]
    lines += ["| what | provider | median ms | p20/p80 ms | images/s | peak MB | speedup |",
              "|---|---|--:|--:|--:|--:|--:|"]
    base = {}
    for r in rows:
        base.setdefault(r["what"], r["median_ms"])
        ips = f"{r['images_per_s']:.2f}" if r["images_per_s"] else ""
        lines.append(f"| {r['what']} | {r['provider']} | {r['median_ms']:.1f} | "
                     f"{r['p20_ms']:.1f}/{r['p80_ms']:.1f} | {ips} | {r['peak_mem_mb']:.0f} | "
                     f"{base[r['what']] / r['median_ms']:.2f}x |")
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "train-step-" + report.slug(head["device"]))
    with open(stem + ".json", "w") as f:
        json.dump({"header": head, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
