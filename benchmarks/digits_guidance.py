"""Guidance trade-off on the 8x8 digits (issue 5, "the Euclidean image path").

A class-conditional flow trained by ``geoflow train digits`` (U-Net, affine CondOT path, condition
dropout) is sampled with classifier-free guidance at weights w = 0, 1, 2, 4 (N samples per class,
the same base noise for every w).  Each sample set is scored by a CNN classifier that we train on
the real digits' train split (its test accuracy is reported):

* accuracy: the fraction of samples that the classifier assigns to the requested label (for w = 0
  the model is unconditional, so this is about 10 %, the chance level);
* FD: the Frechet distance between Gaussians fitted to the classifier's penultimate features
  (Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", the FID recipe with our
  own classifier instead of Inception) of the samples and of the held-out real test digits,

  .. math:: FD = |\\mu_s - \\mu_r|^2 + \\mathrm{Tr}\\big(\\Sigma_s + \\Sigma_r - 2 (\\Sigma_s \\Sigma_r)^{1/2}\\big)

  with the matrix square root from ``scipy.linalg.sqrtm`` (its real part) of
  (Sigma_s + eps I)(Sigma_r + eps I), eps = 1e-6 (ReLU features that are always zero make the
  covariances singular).  The test split has only 179 digits and FD is biased upwards for small
  sets, so compare it with the reference rows: "real train digits" (a stratified subset of the
  train split of the same size as the generated set) and "real val digits" (179 images) are real
  images scored the same way and show the floor;
* diversity: the mean pairwise L2 distance in the classifier's feature space between images that
  the classifier puts in the same class (guidance trades it for accuracy).

Optionally (``--cg-scales``) classifier guidance (Dhariwal & Nichol 2021) is measured too: a
time-conditioned CNN p(y | x_t, t) is trained on noisy points of the same affine path, and its
log-probability gradient is added to the score of the *unconditional* model (the null label),
``geoflow.guidance.ClassifierGuidance``.

Samples are clipped to the data range [-1, 1] before they are scored.

Usage:
    geoflow train digits --out runs/digits
    python benchmarks/digits_guidance.py runs/digits/best.pt [--n-per-class 100] [--cg-scales 1 4] \\
        [--json benchmarks/results/digits_guidance.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from geoflow.data import load_dataset
from geoflow.guidance import CFGVelocity, ClassifierGuidance
from geoflow.nn import EMA
from geoflow.paths import AffinePath, CondOTScheduler, CosineScheduler
from geoflow.solvers import sample
from geoflow.train import TrainConfig, build_model, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- classifiers
class DigitCNN(nn.Module):
    """conv32-conv64-pool-conv64 -> 1024 -> ``feat`` (penultimate features, ReLU) -> 10 logits.

    With ``time_input`` the time t enters as a constant extra input channel (for p(y | x_t, t)).
    """

    def __init__(self, feat: int = 64, time_input: bool = False):
        super().__init__()
        self.time_input = time_input
        c_in = 2 if time_input else 1
        self.body = nn.Sequential(
            nn.Conv2d(c_in, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.25),
            nn.Linear(64 * 16, feat), nn.ReLU(),
        )
        self.head = nn.Linear(feat, 10)

    def features(self, x, t=None):
        if self.time_input:
            x = torch.cat([x, t.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]).to(x.dtype)], dim=1)
        return self.body(x)

    def forward(self, x, t=None):
        return self.head(self.features(x, t))


def _accuracy(clf, x, y, t=None, batch=2048):
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(xb, None if t is None else tb).argmax(-1)
                          for xb, tb in zip(x.split(batch), (t if t is not None else x).split(batch))])
    return float((pred == y).double().mean())


def _shift_augment(x, g):
    """Random shifts by up to one pixel (zero = background -1 padding): cheap augmentation for 1439 images."""
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    i, j = (int(v) for v in torch.randint(0, 3, (2,), generator=g))
    return pad[:, :, i:i + 8, j:j + 8]


def train_classifier(data, *, noisy: bool, path=None, steps: int = 1500, seed: int = 0, log=print):
    """Train on the real train split (noisy: on x_t of ``path`` with t ~ U(0, 1)); pick the best val checkpoint."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    clf = DigitCNN(time_input=noisy)
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    x, y = data.train, data.labels["train"]
    xv, yv = data.val, data.labels["val"]
    gv = torch.Generator().manual_seed(seed + 1)
    tv = torch.rand(xv.shape[0] * 4, generator=gv) if noisy else None
    if noisy:  # fixed noisy validation set: 4 noise draws per val image
        xv4, yv4 = xv.repeat(4, 1, 1, 1), yv.repeat(4)
        xv_in = path.sample(torch.randn(xv4.shape, generator=gv), xv4, tv).x_t
    best, best_state = -1.0, None
    for step in range(1, steps + 1):
        clf.train()
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        xb, yb = _shift_augment(x[idx], g), y[idx]
        tb = None
        if noisy:
            tb = torch.rand(128, generator=g)
            xb = path.sample(torch.randn(xb.shape, generator=g), xb, tb).x_t
        loss = nn.functional.cross_entropy(clf(xb, tb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            acc = _accuracy(clf, xv_in, yv4, tv) if noisy else _accuracy(clf, xv, yv)
            if acc >= best:
                best, best_state = acc, {k: v.clone() for k, v in clf.state_dict().items()}
    clf.load_state_dict(best_state)
    clf.eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf, best


# ----------------------------------------------------------------------------- metrics
def frechet_distance(f1: np.ndarray, f2: np.ndarray, eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm((S1 + eps I)(S2 + eps I))) between Gaussian fits of two feature sets."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    ridge = eps * np.eye(s1.shape[0])
    covmean = scipy.linalg.sqrtm((s1 + ridge) @ (s2 + ridge))
    if not np.isfinite(covmean).all():
        raise FloatingPointError("sqrtm of the covariance product is not finite")
    if np.iscomplexobj(covmean):
        if np.abs(covmean.imag).max() > 1e-3 * max(1.0, np.abs(covmean.real).max()):
            print(f"  warning: sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.2e}); keeping the real part")
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _features(clf, x, batch=2048):
    with torch.no_grad():
        return torch.cat([clf.features(xb) for xb in x.split(batch)]).double().numpy()


def _diversity(feats: np.ndarray, labels: np.ndarray) -> float:
    out = []
    for k in np.unique(labels):
        f = torch.from_numpy(feats[labels == k])
        if f.shape[0] > 1:
            d = torch.cdist(f, f)
            out.append(float(d.sum() / (f.shape[0] * (f.shape[0] - 1))))
    return float(np.mean(out))


def score(clf, x, requested, ref_feats):
    x = x.clamp(-1, 1)
    feats = _features(clf, x)
    with torch.no_grad():
        pred = clf.head(torch.from_numpy(feats).float()).argmax(-1)
    return {
        "accuracy": float((pred == requested).double().mean()),
        "fd": frechet_distance(feats, ref_feats),
        "diversity": _diversity(feats, pred.numpy()),
        "n": int(x.shape[0]),
    }


def _stratified_subset(y, n_per_class, seed):
    g = torch.Generator().manual_seed(seed)
    idx = []
    for k in y.unique():
        members = (y == k).nonzero().squeeze(1)
        idx.append(members[torch.randperm(members.numel(), generator=g)[:n_per_class]])
    return torch.cat(idx)


# ----------------------------------------------------------------------------- flow
def load_flow(checkpoint):
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    data = load_dataset(config.dataset, seed=config.seed, n_samples=config.n_samples)
    if data.labels is None:
        raise SystemExit(f"{checkpoint}: dataset {config.dataset!r} has no labels; train with `geoflow train digits`")
    model = build_model(config, data.manifold, num_classes=data.num_classes)
    if state.get("ema") is not None:
        ema = EMA(model, config.ema_decay)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        model.load_state_dict(state["model"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config, data, int(state["step"])


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()], "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("Usage:")[1])
    ap.add_argument("checkpoint", help="a checkpoint of `geoflow train digits` (best.pt)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0], help="CFG weights w")
    ap.add_argument("--cg-scales", type=float, nargs="*", default=[], help="classifier-guidance scales (default: none)")
    ap.add_argument("--n-per-class", type=int, default=100, help="samples per class (default 100)")
    ap.add_argument("--steps", type=int, default=20, help="ODE steps (default 20)")
    ap.add_argument("--method", default="midpoint", help="ODE method (default midpoint: 2 NFE per step)")
    ap.add_argument("--classifier-steps", type=int, default=1500, help="training steps of each classifier")
    ap.add_argument("--classifier", default=None,
                    help="cache file of the trained classifiers (default: classifiers.pt next to the checkpoint)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=str(RESULTS / "digits_guidance.json"), help="results file ('' to skip)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise SystemExit(f"{ckpt} does not exist: train it first with `geoflow train digits --out {ckpt.parent}`")
    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cpus']} CPUs, torch {info['torch']} with {info['torch_threads']} "
          f"threads, load average {info['load_average_1_5_15min']}")
    model, config, data, flow_step = load_flow(ckpt)
    kappa = CondOTScheduler() if config.scheduler == "condot" else CosineScheduler()
    path = AffinePath(kappa)
    print(f"flow: {ckpt} (step {flow_step}, U-Net channels {config.unet_channels}, cond_drop {config.cond_drop})")

    # ---- classifiers (cached next to the checkpoint)
    cache = Path(args.classifier) if args.classifier else ckpt.parent / "classifiers.pt"
    want_noisy = bool(args.cg_scales)
    key = {"data_seed": config.seed, "seed": args.seed, "steps": args.classifier_steps, "path": repr(path)}
    cached = torch.load(cache, weights_only=False) if cache.exists() else {}
    if cached.get("key") != key:
        cached = {"key": key}
    t0 = time.perf_counter()
    clf = DigitCNN()
    if cached.get("clean") is not None:
        clf.load_state_dict(cached["clean"])
        clf.eval()
        val_acc = cached["clean_val_acc"]
    else:
        clf, val_acc = train_classifier(data, noisy=False, steps=args.classifier_steps, seed=args.seed)
        cached.update(clean=clf.state_dict(), clean_val_acc=val_acc)
    noisy = None
    if want_noisy:
        noisy = DigitCNN(time_input=True)
        if cached.get("noisy") is not None:
            noisy.load_state_dict(cached["noisy"])
            noisy.eval()
            noisy_val = cached["noisy_val_acc"]
        else:
            noisy, noisy_val = train_classifier(data, noisy=True, path=path, steps=2 * args.classifier_steps,
                                                seed=args.seed)
            cached.update(noisy=noisy.state_dict(), noisy_val_acc=noisy_val)
    torch.save(cached, cache)
    for p in clf.parameters():
        p.requires_grad_(False)
    test_acc = _accuracy(clf, data.test, data.labels["test"])
    print(f"classifier: test accuracy {test_acc:.4f} (val {val_acc:.4f}; {data.test.shape[0]} test digits; "
          f"{time.perf_counter() - t0:.1f} s incl. training if not cached)")
    if noisy is not None:
        print(f"noisy classifier p(y | x_t, t): val accuracy over t ~ U(0, 1) {noisy_val:.4f}")

    ref = _features(clf, data.test)
    rows = []
    sub = _stratified_subset(data.labels["train"], args.n_per_class, args.seed)
    for name, x_real, y_real in [("real train digits", data.train[sub], data.labels["train"][sub]),
                                 ("real val digits", data.val, data.labels["val"])]:
        r = score(clf, x_real, y_real, ref)
        rows.append({"method": name, "w": None, **r, "seconds": 0.0})

    # ---- guided samples: the same base noise for every weight
    n_cls = data.num_classes
    labels = torch.arange(n_cls).repeat_interleave(args.n_per_class)
    x0 = data.manifold.random_base(labels.shape[0], generator=torch.Generator().manual_seed(args.seed))
    nfe_per_step = {"euler": 1, "midpoint": 2, "rk4": 4}.get(args.method)
    for w in args.weights:
        t0 = time.perf_counter()
        with torch.no_grad():
            x1 = sample(CFGVelocity(model, w), x0, data.manifold, method=args.method, steps=args.steps, cond=labels)
        r = score(clf, x1, labels, ref)
        rows.append({"method": "CFG", "w": w, **r, "seconds": time.perf_counter() - t0})
        print(f"  CFG w={w:g}: accuracy {r['accuracy']:.3f}  FD {r['fd']:.2f}  diversity {r['diversity']:.2f}  "
              f"({rows[-1]['seconds']:.1f} s)")
    for s in args.cg_scales:
        t0 = time.perf_counter()
        guided = ClassifierGuidance(model, noisy, path, s)  # the model without labels: the null label, p(x)
        with torch.no_grad():
            x1 = sample(guided, x0, data.manifold, method=args.method, steps=args.steps, cond=labels)
        r = score(clf, x1, labels, ref)
        rows.append({"method": "classifier guidance", "w": s, **r, "seconds": time.perf_counter() - t0})
        print(f"  CG scale={s:g}: accuracy {r['accuracy']:.3f}  FD {r['fd']:.2f}  diversity {r['diversity']:.2f}  "
              f"({rows[-1]['seconds']:.1f} s)")

    print()
    print(f"digits guidance trade-off: {args.n_per_class} samples per class, {args.method} x {args.steps} steps "
          f"({(nfe_per_step or 0) * args.steps} NFE; CFG evaluates 2 batches per NFE for w not in {{0, 1}})")
    print(f"classifier test accuracy on real digits: {test_acc:.4f}; FD against the {data.test.shape[0]} test digits "
          f"in its {ref.shape[1]}-d penultimate features")
    print(f"{'method':<22}{'w / scale':>10}{'accuracy':>10}{'FD':>9}{'diversity':>11}{'n':>6}{'time s':>8}")
    for r in rows:
        w = "" if r["w"] is None else f"{r['w']:g}"
        print(f"{r['method']:<22}{w:>10}{r['accuracy']:>10.3f}{r['fd']:>9.2f}{r['diversity']:>11.2f}{r['n']:>6}"
              f"{r['seconds']:>8.1f}")
    if args.json:
        out = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": info,
            "checkpoint": str(ckpt),
            "flow_step": flow_step,
            "flow_config": config.to_dict(),
            "settings": {"n_per_class": args.n_per_class, "steps": args.steps, "method": args.method,
                         "seed": args.seed, "classifier_steps": args.classifier_steps},
            "classifier": {"test_accuracy": test_acc, "val_accuracy": val_acc, "feature_dim": int(ref.shape[1]),
                           "n_test": int(data.test.shape[0])},
            "fd_formula": "|mu_s - mu_r|^2 + Tr(S_s + S_r - 2 sqrtm(S_s S_r)), scipy.linalg.sqrtm, real part",
            "rows": rows,
        }
        if noisy is not None:
            out["noisy_classifier_val_accuracy"] = noisy_val
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
