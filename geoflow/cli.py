"""The `geoflow` command line: train, sample, nll, plot.

Examples:
    geoflow train volcano --out runs/volcano
    geoflow nll runs/volcano/best.pt --split test
    geoflow sample runs/volcano/best.pt --n 1000 --out samples.pt
    geoflow plot runs/volcano/best.pt --out volcano.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

__all__ = ["main", "build_parser"]


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _dataset_names():
    from .data import available_datasets

    return available_datasets()


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="geoflow", description="Flow matching on manifolds.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a Riemannian flow-matching model on a dataset",
                       description="Train a flow on DATASET; writes OUT/last.pt, OUT/best.pt, OUT/metrics.json and a "
                                   "plot, prints the test NLL. Running the same command again resumes from OUT/last.pt.")
    t.add_argument("dataset", help=f"dataset name ({', '.join(_dataset_names())})")
    t.add_argument("--out", default=None, help="output folder (default runs/DATASET-seedSEED)")
    t.add_argument("--steps", type=_positive_int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    t.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (default 0)")
    t.add_argument("--warmup", type=int, default=d.warmup, help=f"warm-up steps (default {d.warmup})")
    t.add_argument("--grad-clip", type=float, default=d.grad_clip, help=f"gradient norm clip (default {d.grad_clip})")
    t.add_argument("--ema-decay", type=float, default=d.ema_decay, help=f"EMA decay (default {d.ema_decay})")
    t.add_argument("--hidden", type=_positive_int, default=d.hidden, help=f"MLP width (default {d.hidden})")
    t.add_argument("--depth", type=_positive_int, default=d.depth, help=f"MLP hidden layers (default {d.depth})")
    t.add_argument("--scheduler", choices=["condot", "cosine"], default=d.scheduler, help="kappa_t schedule")
    t.add_argument("--eval-every", type=_positive_int, default=d.eval_every, help=f"steps between validations (default {d.eval_every})")
    t.add_argument("--val-points", type=int, default=d.val_points, help="validation points per evaluation (0: all)")
    t.add_argument("--nll-steps", type=_positive_int, default=d.nll_steps, help=f"ODE steps for likelihoods (default {d.nll_steps})")
    t.add_argument("--nll-method", choices=["euler", "midpoint", "rk4"], default=d.nll_method, help="ODE method for likelihoods")
    t.add_argument("--n-samples", type=_positive_int, default=None, help="size of synthetic datasets")
    t.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    t.add_argument("--no-plot", action="store_true", help="skip the plot at the end")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained model",
                       description="Solve the ODE from base samples; writes a .pt (or .npy/.csv) file of points.")
    s.add_argument("checkpoint", help="a checkpoint written by `geoflow train` (best.pt or last.pt)")
    s.add_argument("--n", type=_positive_int, default=1000, help="number of samples (default 1000)")
    s.add_argument("--steps", type=_positive_int, default=50, help="ODE steps (default 50)")
    s.add_argument("--method", choices=["euler", "midpoint", "rk4"], default="rk4", help="ODE method (default rk4)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--out", default="samples.pt", help="output file: .pt, .npy or .csv (default samples.pt)")

    n = sub.add_parser("nll", help="negative log-likelihood of a split under a trained model",
                       description="Exact NLL (instantaneous change of variables, exact divergence) in nats per point.")
    n.add_argument("checkpoint")
    n.add_argument("--split", choices=["train", "val", "test"], default="test", help="data split (default test)")
    n.add_argument("--steps", type=_positive_int, default=None, help="ODE steps (default: the training config's)")
    n.add_argument("--method", choices=["euler", "midpoint", "rk4"], default=None, help="ODE method")
    n.add_argument("--json", action="store_true", help="print JSON")

    pl = sub.add_parser("plot", help="plot a trained model's density (sphere) or samples (torus)",
                        description="Sphere: model density on a Mollweide map with the data. Torus: histograms of "
                                    "angle pairs, model samples beside data.")
    pl.add_argument("checkpoint")
    pl.add_argument("--out", default=None, help="PNG file (default: next to the checkpoint)")
    pl.add_argument("--n", type=_positive_int, default=5000, help="samples for torus plots (default 5000)")
    pl.add_argument("--grid", type=_positive_int, default=30, help="latitude cells of the sphere map (default 30)")
    pl.add_argument("--steps", type=_positive_int, default=20, help="ODE steps (default 20)")
    return p


def _load_model(checkpoint):
    from .data import load_dataset
    from .nn import EMA
    from .train import TrainConfig, build_model, load_checkpoint

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    data = load_dataset(config.dataset, seed=config.seed, n_samples=config.n_samples)
    if state.get("manifold") not in (None, repr(data.manifold)):
        raise ValueError(f"checkpoint {checkpoint!r} is for {state['manifold']}, but its dataset is on {data.manifold!r}")
    model = build_model(config, data.manifold)
    if state.get("ema") is not None:
        ema = EMA(model, config.ema_decay)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        model.load_state_dict(state["model"])
    model.eval()
    return model, config, data


def _plot(model, config, data, out, *, n=5000, grid=30, steps=20):
    from manifolds import FlatTorus, Sphere

    from .plotting import plot_sphere_density, plot_torus_pairs
    from .solvers import log_likelihood, sample

    m = data.manifold
    if isinstance(m, Sphere) and m.n == 2:
        fn = lambda x: torch.cat([log_likelihood(model, c, m, steps=steps).detach() for c in x.split(2048)])  # noqa: E731
        return plot_sphere_density(fn, torch.cat([data.train, data.val, data.test]), out, n_lat=grid, n_lon=2 * grid, title=f"{config.dataset}: model density")
    if isinstance(m, FlatTorus):
        g = torch.Generator().manual_seed(0)
        x0 = m.random_base(n, generator=g)
        with torch.no_grad():
            xs = sample(model, x0, m, steps=steps)
        names = data.meta.get("columns") if isinstance(data.meta, dict) else None
        return plot_torus_pairs(xs, torch.cat([data.train, data.val, data.test]), out, names=names)
    raise ValueError(f"plot supports Sphere(2) and FlatTorus datasets, not {m!r}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"geoflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "train":
        from .train import TrainConfig, Trainer

        out = args.out or f"runs/{args.dataset}-seed{args.seed}"
        config = TrainConfig(
            dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
            hidden=args.hidden, depth=args.depth, scheduler=args.scheduler, eval_every=min(args.eval_every, args.steps),
            val_points=args.val_points, nll_steps=args.nll_steps, nll_method=args.nll_method, seed=args.seed, out=out,
            n_samples=args.n_samples,
        )
        trainer = Trainer(config, progress=not args.quiet)
        metrics = trainer.fit()
        if not args.no_plot:
            try:
                model, cfg, data = _load_model(Path(out) / "best.pt")
                png = _plot(model, cfg, data, Path(out) / f"{args.dataset}.png")
                print(f"plot: {png}")
            except ValueError as exc:
                print(f"(no plot: {exc})")
        print(f"test NLL {metrics['test_nll']:.4f} nats; checkpoints and metrics.json in {out}/")
        print(f"next: geoflow plot {out}/best.pt   |   geoflow sample {out}/best.pt --n 1000")
        return 0
    if args.command == "sample":
        from .solvers import sample

        model, config, data = _load_model(args.checkpoint)
        m = data.manifold
        g = torch.Generator().manual_seed(args.seed)
        x0 = m.random_base(args.n, generator=g)
        with torch.no_grad():
            x1 = sample(model, x0, m, method=args.method, steps=args.steps)
        out = Path(args.out)
        if out.suffix == ".npy":
            import numpy as np

            np.save(out, x1.numpy())
        elif out.suffix == ".csv":
            import numpy as np

            np.savetxt(out, x1.reshape(args.n, -1).numpy(), delimiter=",")
        else:
            torch.save(x1, out)
        print(f"wrote {args.n} samples on {m!r} to {out}")
        return 0
    if args.command == "nll":
        from .solvers import log_likelihood

        model, config, data = _load_model(args.checkpoint)
        x = getattr(data, args.split)
        steps, method = args.steps or config.nll_steps, args.method or config.nll_method
        nll = torch.cat([-log_likelihood(model, c, data.manifold, steps=steps, method=method).detach() for c in x.split(2048)])
        res = {"dataset": config.dataset, "split": args.split, "nll": float(nll.mean()),
               "sem": float(nll.std() / len(nll) ** 0.5), "n": len(nll), "steps": steps, "method": method}
        print(json.dumps(res) if args.json else f"{config.dataset} {args.split} NLL: {res['nll']:.4f} ± {res['sem']:.4f} nats ({len(nll)} points)")
        return 0
    if args.command == "plot":
        model, config, data = _load_model(args.checkpoint)
        out = args.out or str(Path(args.checkpoint).with_suffix(".png"))
        png = _plot(model, config, data, out, n=args.n, grid=args.grid, steps=args.steps)
        print(f"wrote {png}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
