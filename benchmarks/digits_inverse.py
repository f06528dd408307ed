"""Inverse problems on the 8x8 digits with the paired coupling (issue 5, couplings).

``PairedCoupling(sigma, degrade)``: the flow starts at the noisy observation x0 = y + sigma eps,
y = degrade(x1), and ends at the clean digit x1; the CFM loss is unchanged (straight path
x_t = (1 - t) x0 + t x1), the network is an unconditional ``UNetVelocity`` (it sees only x_t and t).
Two tasks, one model each:

* ``sr``: super-resolution from 4x4: y = ``downsample_upsample(x, 2)`` (2x2 block means shown at
  8x8 by nearest-neighbour repetition);
* ``inpaint``: the bottom half masked: y = ``mask_half(x, "bottom")`` (masked pixels set to 0, the
  middle of the [-1, 1] pixel range).

Held-out truth: the test split of ``load_dataset("digits", seed=...)`` (179 digits, never seen in
training; the flow trains on the 1439 train digits).  For every test digit, ``--k`` reconstructions
are drawn from x0 = y + sigma eps (rk4, ``--sample-steps`` steps) and clipped to [-1, 1].

Reported (pixels in [-1, 1]): MSE per pixel (mean over digits, with its standard error) and PSNR =
10 log10(2^2 / MSE) averaged over digits, over the whole image and, for inpainting, over the masked
half only; for the flow both "one sample" (the average score of single reconstructions) and "mean of
k samples" (the score of their average, an estimate of the posterior mean E[x | y], which minimises
the expected MSE); and the data consistency |degrade(x_hat) - y|^2.  Baselines on the same digits:

* the observation y itself;
* sr: bilinear and bicubic upsampling of the 4x4 image (``F.interpolate``, align_corners=False);
* inpaint: the masked half filled with the background value -1, and with the train-mean image;
* both: nearest neighbours in the training set on the observation (the training digit whose
  degraded version is closest to y; and the mean of the 8 nearest), a strong non-parametric baseline.

Writes ``--json`` and a small PNG of examples (``--png``).

Usage:
    python benchmarks/digits_inverse.py --json benchmarks/results/digits_inverse.json \\
        --png benchmarks/results/digits_inverse.png
    python benchmarks/digits_inverse.py --quick            # smoke check, about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _flowbench as fb  # noqa: E402

from geoflow.couplings import PairedCoupling, downsample_upsample, mask_half  # noqa: E402
from geoflow.data import load_dataset  # noqa: E402
from geoflow.nn import UNetVelocity  # noqa: E402


def sr_degrade(x):
    return downsample_upsample(x, 2)


def inpaint_degrade(x):
    return mask_half(x, "bottom")


TASKS = {"sr": sr_degrade, "inpaint": inpaint_degrade}


def scores(x_hat: torch.Tensor, truth: torch.Tensor, region: torch.Tensor | None = None) -> dict:
    """MSE per pixel (mean, standard error over digits) and mean per-digit PSNR (peak-to-peak 2)."""
    sq = (x_hat - truth).pow(2)
    if region is not None:
        per = (sq * region).flatten(1).sum(1) / region.flatten(1).sum(1)
    else:
        per = sq.flatten(1).mean(1)
    psnr = 10 * torch.log10(4.0 / per.clamp_min(1e-12))
    return {"mse": float(per.mean()), "mse_se": float(per.std() / math.sqrt(per.numel())), "psnr": float(psnr.mean())}


def knn(y_test: torch.Tensor, y_train: torch.Tensor, x_train: torch.Tensor, k: int) -> tuple:
    d = torch.cdist(y_test.flatten(1).double(), y_train.flatten(1).double())
    idx = d.topk(k, largest=False).indices  # (n, k)
    return x_train[idx[:, 0]], x_train[idx].mean(1)


@torch.no_grad()
def reconstruct(model, y: torch.Tensor, sigma: float, k: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """k reconstructions per observation, shape (k, n, 1, 8, 8), clipped to [-1, 1]."""
    space = fb.Space("digits", None, tuple(y.shape[1:]))
    x0 = (y.unsqueeze(0) + sigma * torch.randn((k, *y.shape), generator=g)).flatten(0, 1)
    return fb.solve(model, x0, space, "rk4", steps).clamp(-1, 1).reshape(k, *y.shape)


def run_task(name: str, ds, args) -> tuple[dict, dict]:
    degrade = TASKS[name]
    space = fb.Space("digits", None, tuple(ds.train.shape[1:]))
    coupling = PairedCoupling(args.sigma, degrade, generator=torch.Generator().manual_seed(args.seed + 1))
    train = ds.train

    def draw(g):
        return None, train[torch.randint(train.shape[0], (args.batch,), generator=g)]

    torch.manual_seed(args.seed)
    model = UNetVelocity(base=args.base, channel_mults=(1, 2))
    model, stats = fb.train(model, space, draw, coupling, steps=args.steps, lr=args.lr, seed=args.seed, warmup=100,
                            ema_decay=args.ema, label=name, log_every=args.log_every)  # fmt: skip
    truth = ds.test
    y = degrade(truth)
    t0 = time.perf_counter()
    samples = reconstruct(model, y, args.sigma, args.k, args.sample_steps, torch.Generator().manual_seed(args.seed + 2))
    sample_s = time.perf_counter() - t0
    mean = samples.mean(0)
    region = None
    if name == "inpaint":
        region = (mask_half(torch.ones_like(truth), "bottom") == 0).to(truth.dtype)  # the masked (unknown) half
    single = [scores(s, truth) for s in samples]
    methods = {
        "flow, one sample": {"mse": sum(s["mse"] for s in single) / len(single),
                             "mse_se": sum(s["mse_se"] for s in single) / len(single),
                             "psnr": sum(s["psnr"] for s in single) / len(single)},
        f"flow, mean of {args.k} samples": scores(mean, truth),
        "observation y": scores(y, truth),
    }  # fmt: skip
    if name == "sr":
        low = F.avg_pool2d(truth, 2)
        for mode in ("bilinear", "bicubic"):
            up = F.interpolate(low, size=truth.shape[-2:], mode=mode, align_corners=False).clamp(-1, 1)
            methods[f"{mode} upsampling"] = scores(up, truth)
    else:
        methods["masked half = -1 (background)"] = scores(torch.where(region.bool(), -1.0, y), truth)
        methods["masked half = train mean"] = scores(torch.where(region.bool(), train.mean(0), y), truth)
    nn1, nn8 = knn(y, degrade(train), train, 8)
    methods["nearest train digit (1-NN on y)"] = scores(nn1, truth)
    methods["mean of 8 nearest train digits"] = scores(nn8, truth)
    if region is not None:
        masked = {"flow, one sample": None}
        singles = [scores(s, truth, region) for s in samples]
        masked["flow, one sample"] = {k: sum(s[k] for s in singles) / len(singles) for k in ("mse", "mse_se", "psnr")}
        masked[f"flow, mean of {args.k} samples"] = scores(mean, truth, region)
        masked["observation y"] = scores(y, truth, region)
        masked["masked half = -1 (background)"] = scores(torch.where(region.bool(), -1.0, y), truth, region)
        masked["masked half = train mean"] = scores(torch.where(region.bool(), train.mean(0), y), truth, region)
        masked["nearest train digit (1-NN on y)"] = scores(nn1, truth, region)
        masked["mean of 8 nearest train digits"] = scores(nn8, truth, region)
    consistency = float((degrade(samples.flatten(0, 1)) - y.repeat(args.k, 1, 1, 1)).pow(2).mean())
    out = {
        "task": name,
        "degradation": "downsample_upsample(x, 2): 4x4 block means, nearest upsampling" if name == "sr"
        else "mask_half(x, 'bottom'): rows 4..7 set to 0",
        "n_test": truth.shape[0],
        "train": stats,
        "sampling": f"rk4, {args.sample_steps} steps, {args.k} samples per digit, {sample_s:.1f} s",
        "whole_image": methods,
        "masked_half_only": masked if region is not None else None,
        "flow_data_consistency_mse": consistency,
    }  # fmt: skip
    best_baseline = "bicubic upsampling" if name == "sr" else "mean of 8 nearest train digits"
    show = slice(0, args.n_show)
    examples = {"truth": truth[show], "y": y[show], "baseline": None, "sample": samples[0, show],
                "sample2": samples[1, show], "mean": mean[show], "baseline_name": best_baseline}
    if name == "sr":
        low = F.avg_pool2d(truth[show], 2)
        examples["baseline"] = F.interpolate(low, size=truth.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    else:
        examples["baseline"] = nn8[: args.n_show]
    print_task(out, args.k)
    return out, examples


def print_task(out: dict, k: int) -> None:
    print(f"\n## {out['task']}: {out['degradation']}; {out['n_test']} held-out test digits; training "
          f"{out['train']['seconds']:.0f} s, final loss {out['train']['final_loss']:.4f}; sampling {out['sampling']}")
    masked = out["masked_half_only"]
    head = f"{'method':<34} {'MSE':>8} {'+-':>6} {'PSNR dB':>8}"
    if masked:
        head += f" | masked half: {'MSE':>7} {'PSNR dB':>8}"
    print(head)
    for name, s in out["whole_image"].items():
        line = f"{name:<34} {s['mse']:8.4f} {s['mse_se']:6.4f} {s['psnr']:8.2f}"
        if masked and name in masked:
            line += f" | {'':13}{masked[name]['mse']:7.4f} {masked[name]['psnr']:8.2f}"
        print(line)
    print(f"flow data consistency |degrade(x_hat) - y|^2 = {out['flow_data_consistency_mse']:.4f}")


def write_png(path: str, examples: dict, k: int) -> None:
    from geoflow.plotting import plot_image_grid

    rows, labels = [next(iter(examples.values()))["truth"]], ["truth"]
    for name, ex in examples.items():
        rows += [ex["y"], ex["baseline"], ex["sample"], ex["sample2"], ex["mean"]]
        labels += [f"{name}: input", f"{name}: {ex['baseline_name'].split(' (')[0]}", f"{name}: flow sample",
                   f"{name}: flow sample", f"{name}: flow mean of {k}"]  # fmt: skip
    n = rows[0].shape[0]
    plot_image_grid(torch.cat(rows), path, ncol=n, row_labels=labels,
                    title="held-out digits: super-resolution from 4x4 and inpainting (PairedCoupling)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sr,inpaint", help="comma-separated subset of sr, inpaint")
    ap.add_argument("--sigma", type=float, default=0.25, help="noise of the source x0 = y + sigma eps")
    ap.add_argument("--steps", type=int, default=2500, help="training steps per task")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--base", type=int, default=32, help="U-Net base channels")
    ap.add_argument("--k", type=int, default=8, help="reconstructions per test digit")
    ap.add_argument("--sample-steps", type=int, default=20, help="rk4 steps of the reconstruction ODE")
    ap.add_argument("--n-show", type=int, default=10, help="digits in the PNG")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--log-every", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke check: 150 steps, base 16, 2 samples, 5 rk4 steps")
    ap.add_argument("--json", default=None, help="write the results here (e.g. benchmarks/results/digits_inverse.json)")
    ap.add_argument("--png", default=None,
                    help="write example reconstructions here (e.g. benchmarks/results/digits_inverse.png)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.base, args.k, args.sample_steps, args.ema = 150, 16, 2, 5, 0.95
    tasks = [s.strip() for s in args.tasks.split(",") if s.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        ap.error(f"--tasks must be a comma-separated subset of {', '.join(TASKS)}, got {args.tasks!r}")
    if args.k < 2:
        ap.error("--k must be >= 2")
    fb.set_threads(args.threads)
    res = fb.header(args.threads, args.seed)
    res["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "png")}
    t0 = time.perf_counter()
    ds = load_dataset("digits", seed=args.seed)
    print(f"# digits inverse problems with PairedCoupling(sigma={args.sigma}): {args.threads} thread(s), "
          f"U-Net base {args.base}, {args.steps} steps{', QUICK' if args.quick else ''}")  # fmt: skip
    res["tasks"], examples = {}, {}
    for name in tasks:
        res["tasks"][name], examples[name] = run_task(name, ds, args)
    res["total_seconds"] = time.perf_counter() - t0
    print(f"# total {res['total_seconds']:.0f} s")
    if args.png:
        write_png(args.png, examples, args.k)
        print(f"wrote {args.png}")
    if args.json:
        fb.write_json(args.json, res)


if __name__ == "__main__":
    main()
