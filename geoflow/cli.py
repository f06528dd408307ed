"""The `geoflow` command line: train, sample, nll, plot.

Examples:
    geoflow train volcano --out runs/volcano
    geoflow nll runs/volcano/best.pt --split test
    geoflow sample runs/volcano/best.pt --n 1000 --out samples.pt
    geoflow plot runs/volcano/best.pt --out volcano.png
    geoflow train digits --out runs/digits            # class-conditional U-Net, a few minutes on a CPU
    geoflow sample runs/digits/best.pt --guidance 2 --out grid.png          # rows: digits 0..9
    geoflow sample runs/digits/best.pt --label 3 --guidance 2 --out threes.png
    torchrun --nproc_per_node 2 -m geoflow.cli train earthquake   # 2 processes (DDP); --batch-size stays global

Environment: GEOFLOW_MALLOC=default leaves glibc's allocator as it is; by default geoflow keeps freed CPU
memory for reuse (large CPU tensors then skip fresh page faults; geoflow.train.malloc).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

__all__ = ["main", "build_parser"]


def _int_at_least(lo: int, what: str):
    """An argparse type: an integer >= ``lo`` (``what`` names it in the error)."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s}")
    return v


_DEVICE_HELP = ("where the ODE is solved: auto (default: cuda:0 if CUDA is available, else cpu), cpu, cuda or cuda:N; "
                "base samples are drawn on the CPU from --seed, so every device starts from the same noise")


def _dataset_names():
    from .data import available_datasets

    return available_datasets() + ["qm9"]


def build_parser() -> argparse.ArgumentParser:
    from .train import DATASET_DEFAULTS, TrainConfig

    d = TrainConfig()

    def dflt(name: str) -> str:
        """"default X" plus the per-dataset defaults that differ."""
        extra = "; ".join(f"{ds}: {v[name]}" for ds, v in DATASET_DEFAULTS.items() if name in v)
        return f"default {getattr(d, name)}" + (f"; {extra}" if extra else "")

    p = argparse.ArgumentParser(prog="geoflow", description="Flow matching on manifolds.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a Riemannian flow-matching model on a dataset",
                       description="Train a flow on DATASET; writes OUT/last.pt, OUT/best.pt, OUT/metrics.json and a "
                                   "plot, prints the test NLL (image datasets: the test flow-matching loss; labelled ones train a "
                                   "class-conditional model). Running the same command again resumes from OUT/last.pt.")
    t.add_argument("dataset", help=f"dataset name ({', '.join(_dataset_names())})")
    t.add_argument("--out", default=None, help="output folder (default runs/DATASET-seedSEED)")
    t.add_argument("--steps", type=_positive_int, default=None, help=f"optimisation steps ({dflt('steps')})")
    t.add_argument("--batch-size", type=_positive_int, default=None, help=f"batch size ({dflt('batch_size')})")
    t.add_argument("--lr", type=float, default=None, help=f"peak learning rate ({dflt('lr')})")
    t.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay ({dflt('weight_decay')})")
    t.add_argument("--warmup", type=int, default=None, help=f"warm-up steps ({dflt('warmup')})")
    t.add_argument("--grad-clip", type=float, default=None, help=f"gradient norm clip ({dflt('grad_clip')})")
    t.add_argument("--ema-decay", type=float, default=None, help=f"EMA decay ({dflt('ema_decay')})")
    t.add_argument("--time-max-freq", type=float, default=None,
                   help=f"highest frequency of the sinusoidal time embedding ({dflt('time_max_freq')})")
    t.add_argument("--hidden", type=_positive_int, default=None, help=f"MLP width ({dflt('hidden')})")
    t.add_argument("--depth", type=_positive_int, default=None, help=f"MLP hidden layers ({dflt('depth')})")
    t.add_argument("--model", choices=["auto", "mlp", "unet", "egnn", "tfn"], default=None,
                   help="velocity network (default auto: U-Net for image datasets, EGNN for particle systems, MLP otherwise)")
    t.add_argument("--unet-channels", type=_positive_int, default=None, help=f"U-Net base channels ({dflt('unet_channels')})")
    t.add_argument("--path", choices=["auto", "geodesic", "affine", "premetric"], default=None,
                   help="probability path (default auto: affine Gaussian path + CFM loss on flat space, premetric "
                        "(Chen & Lipman 2023) + RCFM loss on triangle meshes, geodesic + RCFM loss on other manifolds)")
    t.add_argument("--premetric", choices=["biharmonic", "diffusion"], default=None,
                   help=f"mesh datasets: spectral premetric of the premetric path ({dflt('premetric')})")
    t.add_argument("--premetric-steps", type=_positive_int, default=None,
                   help=f"projected Euler steps that draw x_t on the premetric path ({dflt('premetric_steps')})")
    t.add_argument("--chiral", action="store_true", default=None,
                   help="particle and molecule datasets: an SE(3)-equivariant EGNN that tells mirror images apart, "
                        "and rotation-only alignment couplings (default: E(3))")
    t.add_argument("--premetric-times", type=_positive_int, default=None,
                   help="times drawn on each simulated pair of the premetric path: the simulation is shared by that "
                        f"many training points ({dflt('premetric_times')}; --batch-size must be a multiple)")
    t.add_argument("--premetric-tail", type=_nonneg_int, default=None,
                   help="extra premetric path steps that bring the paths onto x1 in the last grid interval "
                        f"({dflt('premetric_tail')})")
    t.add_argument("--premetric-chunk", type=_positive_int, default=None,
                   help="with --premetric-times > 1, steps whose premetric paths are simulated together (the same "
                        f"batches; larger calls cost less per pair) ({dflt('premetric_chunk')})")
    t.add_argument("--normal-weight", type=_nonneg_float, default=None,
                   help=f"penalty on the normal part of the MLP's raw output in the RCFM loss; keeps mesh flows free of "
                        f"face-scale density ripples ({dflt('normal_weight')})")
    t.add_argument("--fourier-features", type=int, default=None,
                   help=f"random Fourier features of the point added to the MLP's input; they let it fit targets that "
                        f"vary on short length scales, such as high mesh eigenfunctions ({dflt('fourier_features')})")
    t.add_argument("--fourier-scale", type=float, default=None,
                   help=f"frequency scale of the Fourier features, cycles per unit of the coordinates "
                        f"({dflt('fourier_scale')})")
    t.add_argument("--cond-drop", type=_nonneg_float, default=None,
                   help=f"labelled datasets: probability of replacing the label by the null label during training, so "
                        f"the model also learns the unconditional field for classifier-free guidance ({dflt('cond_drop')})")
    t.add_argument("--coupling", choices=["independent", "ot", "ot-sinkhorn", "alignment", "ot-align", "alignment-perm"],
                   default=None,
                   help="pairing of noise and data: independent (default), exact minibatch OT, Sinkhorn OT "
                        "(squared geodesic cost on manifolds; within labels on labelled data), or alignment "
                        "(particles: best rotation/reflection and permutation per pair, then OT), or ot-align (particles: OT on the "
                        "unaligned clouds, then the chosen pairs aligned; batch instead of batch^2 alignments), or alignment-perm "
                        "(particles: as alignment with the particle order only, no rotation)")
    t.add_argument("--ot-reg", type=float, default=None, help=f"Sinkhorn regularisation of --coupling ot-sinkhorn ({dflt('ot_reg')})")
    t.add_argument("--align-starts", type=int, default=None,
                   help=f"--coupling alignment / ot-align: starting rotations per pair ({dflt('align_starts')}; 1 is faster)")
    t.add_argument("--align-iters", type=int, default=None,
                   help=f"--coupling alignment / ot-align: Kabsch <-> Hungarian refinement rounds ({dflt('align_iters')}; "
                        "0 is faster, at a few %% more transport cost)")
    t.add_argument("--nll-divergence", choices=["auto", "exact", "hutchinson"], default=None,
                   help="divergence of likelihoods (auto: exact up to 64 dimensions, Hutchinson above)")
    t.add_argument("--test-points", type=int, default=None,
                   help=f"test points for the final NLL, a seeded subset ({dflt('test_points')}; 0: all)")
    t.add_argument("--ess-samples", type=int, default=None,
                   help=f"particle datasets: model samples for the effective sample size ({dflt('ess_samples')}; 0: skip)")
    t.add_argument("--scheduler", choices=["condot", "cosine"], default=None, help="kappa_t (or alpha_t, sigma_t) schedule")
    t.add_argument("--eval-every", type=_positive_int, default=None, help=f"steps between validations ({dflt('eval_every')})")
    t.add_argument("--val-points", type=int, default=None, help="validation points per evaluation (0: all)")
    t.add_argument("--nll-steps", type=_positive_int, default=None, help=f"ODE steps for likelihoods ({dflt('nll_steps')})")
    t.add_argument("--nll-method", choices=["euler", "midpoint", "rk4"], default=None, help="ODE method for likelihoods")
    t.add_argument("--n-samples", type=_positive_int, default=None, help="size of synthetic datasets")
    t.add_argument("--seed", type=int, default=None, help=f"random seed ({dflt('seed')})")
    t.add_argument("--no-plot", action="store_true", help="skip the plot at the end")
    t.add_argument("--device", default=None,
                   help="where a single process trains: auto (default: cuda:0 if CUDA is available, else cpu), cpu, "
                        "cuda or cuda:N; under torchrun every process trains on its backend's device (gloo: cpu, "
                        "nccl: cuda:LOCAL_RANK) and only auto or that device are accepted")
    t.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend when launched by torchrun (default auto: nccl if CUDA is available, "
                        "gloo on CPU); --batch-size is the global batch, split evenly over the processes")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained model",
                       description="Solve the ODE from base samples; writes a .pt (or .npy/.csv) file of points, or for "
                                   "image datasets (digits) a PNG grid of images.")
    s.add_argument("checkpoint", help="a checkpoint written by `geoflow train` (best.pt or last.pt)")
    s.add_argument("--n", type=_positive_int, default=None,
                   help="number of samples (default 1000); image datasets: samples per label (default 10)")
    s.add_argument("--label", type=int, default=None,
                   help="class-conditional models (digits): sample this class only (0..9). Without it, image grids get "
                        "one row per class 0..9")
    s.add_argument("--guidance", type=float, default=1.0,
                   help="class-conditional models: classifier-free guidance weight w in v = v(x,t,null) + w (v(x,t,y) - "
                        "v(x,t,null)); 0 samples the unconditional model, 1 (default) the conditional one, w > 1 gives "
                        "more typical, less diverse images (try 2)")
    s.add_argument("--steps", type=_positive_int, default=50, help="ODE steps (default 50)")
    s.add_argument("--method", choices=["euler", "midpoint", "rk4"], default="rk4", help="ODE method (default rk4)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--device", default="auto", help=_DEVICE_HELP)
    s.add_argument("--out", default=None,
                   help="output file: .pt, .npy or .csv (default samples.pt), or .png for image datasets (default "
                        "samples.png)")

    n = sub.add_parser("nll", help="negative log-likelihood of a split under a trained model",
                       description="NLL by the instantaneous change of variables, in nats per point (exact divergence "
                                   "up to 64 dimensions, Hutchinson's estimator above, as in training; see --divergence).")
    n.add_argument("checkpoint")
    n.add_argument("--split", choices=["train", "val", "test"], default="test", help="data split (default test)")
    n.add_argument("--steps", type=_positive_int, default=None, help="ODE steps (default: the training config's)")
    n.add_argument("--method", choices=["euler", "midpoint", "rk4"], default=None, help="ODE method")
    n.add_argument("--points", type=_positive_int, default=None,
                   help="only the first N points of the split (default all; e.g. to check that the NLL has "
                        "converged in --steps on a few points before paying for the whole split)")
    n.add_argument("--divergence", choices=["auto", "exact", "hutchinson"], default=None,
                   help="divergence of the likelihood ODE (default: the training config's nll_divergence; auto: exact "
                        "up to 64 dimensions, Hutchinson above: one Gaussian probe per point, fixed over the solve, from --seed)")
    n.add_argument("--seed", type=int, default=0, help="seed of the Hutchinson probes (default 0)")
    n.add_argument("--json", action="store_true", help="print JSON")
    n.add_argument("--device", default="auto", help=_DEVICE_HELP)

    pl = sub.add_parser("plot", help="plot a trained model's density (sphere, mesh) or samples (torus)",
                        description="Sphere: model density on a Mollweide map with the data. Torus: histograms of "
                                    "angle pairs, model samples beside data. Mesh: the surface coloured by the model "
                                    "density with model samples, beside the target density.")
    pl.add_argument("checkpoint")
    pl.add_argument("--out", default=None, help="PNG file (default: next to the checkpoint)")
    pl.add_argument("--n", type=_positive_int, default=5000,
                    help="samples for torus plots (default 5000; mesh plots scatter at most 2000)")
    pl.add_argument("--grid", type=_positive_int, default=30, help="latitude cells of the sphere map (default 30)")
    pl.add_argument("--steps", type=_positive_int, default=20, help="ODE steps (default 20)")
    pl.add_argument("--device", default="auto", help=_DEVICE_HELP)
    return p


def _load_model(checkpoint, device="cpu"):
    """(model in eval mode on ``device``, its TrainConfig, its dataset); the file is read onto the CPU first."""
    from .data import load_dataset
    from .train import TrainConfig, build_model, load_checkpoint
    from .train.checkpoint import eval_weights
    from .train.distributed import resolve_device

    device = device if isinstance(device, torch.device) else resolve_device(device, None, name="--device")
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    data = load_dataset(config.dataset, seed=config.seed, n_samples=config.n_samples)
    if state.get("manifold") not in (None, repr(data.manifold)):
        raise ValueError(f"checkpoint {checkpoint!r} is for {state['manifold']}, but its dataset is on {data.manifold!r}")
    model = build_model(config, data.manifold, num_classes=data.num_classes)
    try:
        model = eval_weights(model, state, config.ema_decay)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: its weights do not fit the model its config builds ({' '.join(str(exc).split())})") from None
    return model.to(device), config, data


def _device(model) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a parameterless callable)."""
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def _is_image(data) -> bool:
    return len(data.manifold.point_shape) == 3


def _image_samples(model, data, *, n_per_label, label=None, guidance=1.0, steps=50, method="rk4", seed=0):
    """Images from the flow: ``n_per_label`` per class (rows 0..K-1), or of ``label`` only; returns (images, row labels)."""
    from .guidance import CFGVelocity
    from .solvers import sample

    conditional = getattr(model, "is_conditional", False)
    if label is not None or guidance != 1.0:
        if not conditional or data.num_classes is None:
            raise ValueError(f"--label and --guidance need a class-conditional model; dataset {data.name!r} has no labels")
    if label is not None and not 0 <= label < data.num_classes:
        raise ValueError(f"--label must lie in [0, {data.num_classes - 1}], got {label}")
    if conditional:
        rows = [label] if label is not None else list(range(data.num_classes))
        cond = torch.tensor(rows).repeat_interleave(n_per_label)
    else:
        rows, cond = None, None
    n = n_per_label * (len(rows) if rows else 1)
    g = torch.Generator().manual_seed(seed)
    device = _device(model)
    x0 = data.manifold.random_base(n, generator=g).to(device)
    cond = cond.to(device) if cond is not None else None
    velocity = CFGVelocity(model, guidance) if conditional else model
    with torch.no_grad():
        x1 = sample(velocity, x0, data.manifold, method=method, steps=steps, cond=cond)
    return x1.cpu(), rows


def _plot_images(model, config, data, out, *, n_per_label=10, label=None, guidance=1.0, steps=50, method="rk4", seed=0):
    from .plotting import plot_image_grid

    x, rows = _image_samples(model, data, n_per_label=n_per_label, label=label, guidance=guidance, steps=steps,
                             method=method, seed=seed)
    ncol = n_per_label if (rows is None or len(rows) > 1) else min(n_per_label, 10)
    row_labels = None
    if rows is not None:
        row_labels = rows if len(rows) > 1 else [rows[0]] * (-(-x.shape[0] // ncol))
    title = f"{config.dataset}: " + (f"label {label}, " if label is not None else "") + f"guidance w = {guidance:g}"
    return plot_image_grid(x, out, ncol=ncol, row_labels=row_labels, title=title)


def _plot(model, config, data, out, *, n=5000, grid=30, steps=20):
    from manifolds import CoMFree, Euclidean, FlatTorus, Mesh, Sphere

    from .plotting import plot_particles, plot_plane, plot_sphere_density, plot_torus_pairs
    from .solvers import log_likelihood, sample

    if _is_image(data):
        return _plot_images(model, config, data, out, steps=max(steps, 20))
    m = data.manifold
    device = _device(model)

    def flow(x0):  # base points drawn on the CPU -> samples on the CPU
        with torch.no_grad():
            return sample(model, x0.to(device), m, steps=steps).cpu()

    if isinstance(m, CoMFree):
        g = torch.Generator().manual_seed(0)
        xs = flow(m.random_base(min(n, 2000), generator=g))
        return plot_particles(xs, data.test, out, energy=data.energy, title=config.dataset)
    if isinstance(m, Euclidean) and m.point_shape == (2,):
        g = torch.Generator().manual_seed(0)
        xs = flow(m.random_base(n, generator=g))
        return plot_plane(xs, torch.cat([data.train, data.val, data.test]), out, title=config.dataset)
    if isinstance(m, Sphere) and m.n == 2:
        fn = lambda x: torch.cat([log_likelihood(model, c.to(device), m, steps=steps).detach().cpu()  # noqa: E731
                                  for c in x.split(2048)])
        return plot_sphere_density(fn, torch.cat([data.train, data.val, data.test]), out, n_lat=grid, n_lon=2 * grid, title=f"{config.dataset}: model density")
    if isinstance(m, Mesh):
        return _plot_mesh(model, config, data, out, n=min(n, 2000), steps=steps)
    if isinstance(m, FlatTorus):
        g = torch.Generator().manual_seed(0)
        xs = flow(m.random_base(n, generator=g))
        names = data.meta.get("columns") if isinstance(data.meta, dict) else None
        return plot_torus_pairs(xs, torch.cat([data.train, data.val, data.test]), out, names=names)
    raise ValueError(f"plot supports Sphere(2), FlatTorus, R^2, mesh, particle and image datasets, not {m!r}")


def _plot_mesh(model, config, data, out, *, n=2000, steps=20):
    """Model density at the mesh vertices and model samples, beside the target density (mesh datasets)."""
    from .plotting import plot_mesh_density
    from .solvers import log_likelihood, sample

    m = data.manifold
    dtype, device = next(model.parameters()).dtype, _device(model)
    verts = m.vertices.to(dtype)
    logp = torch.cat([log_likelihood(model, c.to(device), m, steps=steps).detach().cpu() for c in verts.split(2048)])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        xs = sample(model, m.random_base(n, generator=g, dtype=dtype).to(device), m, steps=steps).cpu()
    target = None
    meta = data.meta if isinstance(data.meta, dict) else {}
    if "mesh" in meta and "k" in meta:
        from .data.meshes import target_face_density

        target = target_face_density(meta["mesh"], meta["k"], upsample=meta.get("upsample", 3))
    return plot_mesh_density(m.vertices, m.faces, logp.exp(), out, samples=xs, target_face_density=target,
                             data=data.test, title=config.dataset)


def _tune_malloc() -> None:
    """Keep freed CPU memory for reuse (geoflow.train.malloc) unless GEOFLOW_MALLOC=default."""
    mode = os.environ.get("GEOFLOW_MALLOC", "keep")
    if mode not in ("keep", "default"):
        raise ValueError(f"environment variable GEOFLOW_MALLOC must be 'keep' (the default: geoflow keeps freed "
                         f"CPU memory for reuse) or 'default' (the C library's own settings), got {mode!r}")
    if mode == "keep":
        from .train.malloc import keep_freed_memory

        keep_freed_memory()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _tune_malloc()
        return _run(args)
    except (ValueError, FileNotFoundError) as exc:
        rank = int(os.environ.get("RANK") or 0) if os.environ.get("WORLD_SIZE") else 0
        if rank == 0 or not getattr(exc, "geoflow_relayed", False):  # rank 0 prints what it relayed to the others
            print(f"geoflow {args.command}: error: {'' if rank == 0 else f'[rank {rank}] '}{exc}", file=sys.stderr)
        return 2


def _train_qm9(config, args, dist) -> int:
    """`geoflow train qm9`: hybrid coordinate + atom-type transport with an EGNN (one process)."""
    from .train.molecules import MoleculeTrainer

    if dist.world_size > 1:
        raise ValueError("`geoflow train qm9` runs in one process; launch it without torchrun")
    trainer = MoleculeTrainer(config, progress=not args.quiet)
    metrics = trainer.fit()
    out = Path(config.out)
    if not args.no_plot and getattr(trainer, "samples", None) is not None:
        from .plotting import plot_molecules

        print(f"plot: {plot_molecules(*trainer.samples, out / 'qm9.png', title='qm9 samples (NFE 200)')}")
    print(f"test flow-matching loss {metrics['test_loss']:.4f}; checkpoints and metrics.json in {out}/")
    return 0


def _train(args, dist) -> int:
    """`geoflow train` (one process, or one of several under torchrun)."""
    from .train import TrainConfig, Trainer

    given = dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay, hidden=args.hidden,
        depth=args.depth, scheduler=args.scheduler, eval_every=args.eval_every, val_points=args.val_points,
        nll_steps=args.nll_steps, nll_method=args.nll_method, seed=args.seed, n_samples=args.n_samples,
        model=args.model, path=args.path, cond_drop=args.cond_drop, unet_channels=args.unet_channels,
        time_max_freq=args.time_max_freq, coupling=args.coupling, ot_reg=args.ot_reg,
        align_starts=args.align_starts, align_iters=args.align_iters,
        nll_divergence=args.nll_divergence, ess_samples=args.ess_samples, test_points=args.test_points,
        premetric=args.premetric, premetric_steps=args.premetric_steps,
        premetric_times=args.premetric_times, premetric_chunk=args.premetric_chunk, chiral=args.chiral,
        premetric_tail=args.premetric_tail,
        device=args.device,
        normal_weight=args.normal_weight, fourier_features=args.fourier_features, fourier_scale=args.fourier_scale,
    )
    config = TrainConfig.for_dataset(args.dataset, **{k: v for k, v in given.items() if v is not None})
    out = args.out or f"runs/{args.dataset}-seed{config.seed}"
    config = dataclasses.replace(config, out=out, eval_every=min(config.eval_every, config.steps))
    if args.dataset == "qm9":
        return _train_qm9(config, args, dist)
    trainer = Trainer(config, progress=not args.quiet, dist=dist)
    metrics = trainer.fit()
    if not dist.is_main:  # rank 0 plots and reports
        return 0
    if not args.no_plot:
        try:
            model, cfg, data = _load_model(Path(out) / "best.pt", device=trainer.device)
            png = _plot(model, cfg, data, Path(out) / f"{args.dataset}.png")
            print(f"plot: {png}")
        except ValueError as exc:
            print(f"(no plot: {exc})")
    if metrics.get("test_nll") is not None:
        print(f"test NLL {metrics['test_nll']:.4f} nats; checkpoints and metrics.json in {out}/")
        print(f"next: geoflow plot {out}/best.pt   |   geoflow sample {out}/best.pt --n 1000")
    else:
        print(f"test CFM loss {metrics['test_loss']:.4f}; checkpoints and metrics.json in {out}/")
        print(f"next: geoflow sample {out}/best.pt --guidance 2 --out grid.png")
    return 0


def _run(args) -> int:
    if args.command == "train":
        from .train.distributed import close_distributed, init_distributed

        dist = init_distributed(args.backend)
        try:
            return _train(args, dist)
        finally:
            if dist.enabled:
                close_distributed()
    if args.command == "sample":
        from .solvers import sample

        model, config, data = _load_model(args.checkpoint, device=args.device)
        m = data.manifold
        if _is_image(data):
            out = Path(args.out or "samples.png")
            n_per = args.n or 10
            if out.suffix == ".png":
                png = _plot_images(model, config, data, out, n_per_label=n_per, label=args.label, guidance=args.guidance,
                                   steps=args.steps, method=args.method, seed=args.seed)
                print(f"wrote {png}")
                return 0
            x1, _ = _image_samples(model, data, n_per_label=n_per, label=args.label, guidance=args.guidance,
                                   steps=args.steps, method=args.method, seed=args.seed)
        else:
            if args.label is not None or args.guidance != 1.0:
                raise ValueError(f"--label and --guidance need a class-conditional model; dataset {data.name!r} has no labels")
            out = Path(args.out or "samples.pt")
            if out.suffix == ".png":
                raise ValueError("PNG grids are for image datasets; use `geoflow plot` or a .pt/.npy/.csv file")
            g = torch.Generator().manual_seed(args.seed)
            x0 = m.random_base(args.n or 1000, generator=g).to(_device(model))
            with torch.no_grad():
                x1 = sample(model, x0, m, method=args.method, steps=args.steps).cpu()
        if out.suffix == ".npy":
            import numpy as np

            np.save(out, x1.numpy())
        elif out.suffix == ".csv":
            import numpy as np

            np.savetxt(out, x1.reshape(x1.shape[0], -1).numpy(), delimiter=",")
        else:
            torch.save(x1, out)
        print(f"wrote {x1.shape[0]} samples on {m!r} to {out}")
        return 0
    if args.command == "nll":
        from .solvers import log_likelihood
        from .train.trainer import resolve_divergence

        model, config, data = _load_model(args.checkpoint, device=args.device)
        x = getattr(data, args.split)
        x = x[: args.points] if args.points is not None else x
        steps, method = args.steps or config.nll_steps, args.method or config.nll_method
        divergence = resolve_divergence(args.divergence or config.nll_divergence, data.manifold)
        device = _device(model)
        gen = torch.Generator(device=device).manual_seed(args.seed) if divergence != "exact" else None
        nll = torch.cat([-log_likelihood(model, c.to(device), data.manifold, steps=steps, method=method,
                                         divergence=divergence, generator=gen).detach().cpu()
                         for c in x.split(2048)])
        res = {"dataset": config.dataset, "split": args.split, "nll": float(nll.mean()),
               "sem": float(nll.std() / len(nll) ** 0.5), "n": len(nll), "steps": steps, "method": method,
               "divergence": divergence}
        print(json.dumps(res) if args.json else f"{config.dataset} {args.split} NLL: {res['nll']:.4f} ± {res['sem']:.4f} nats ({len(nll)} points)")
        return 0
    if args.command == "plot":
        model, config, data = _load_model(args.checkpoint, device=args.device)
        out = args.out or str(Path(args.checkpoint).with_suffix(".png"))
        png = _plot(model, config, data, out, n=args.n, grid=args.grid, steps=args.steps)
        print(f"wrote {png}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
