"""Speed of the equivariant velocity networks: forward + backward on LJ55-sized input (issue 6).

Measures the median wall time of one training-like step, ``v = model(x, t)``,
``v.pow(2).sum().backward()``, on a seeded batch of ``--batch`` configurations of
``--particles`` particles in 3-D (default 64 x 55, fully connected graphs: 190 080 edges), and
of the forward pass alone, for:

* ``egnn``: :class:`geoflow.nn.EGNNVelocity` with its defaults (hidden 64, 4 layers);
* ``tfn``: :class:`geoflow.nn.TFNVelocity` with its defaults (irreps 32x0e + 8x1o + 8x1e + 4x2e,
  3 gated layers, lmax 2);
* peers, in the same run, on the same input and the same fully connected graph:
  ``egnn_pytorch``: lucidrains' dense EGNN (``egnn_pytorch.EGNN``, MIT; 4 layers, dim 64,
  m_dim 64, velocity = x_L - x, centred), and ``e3nn_gate_points``: e3nn's reference gated
  point-convolution network (``e3nn.nn.models.v2106.gate_points_message_passing.MessagePassing``;
  irreps mul x (0e + 0o + 1e + 1o + 2e + 2o) with ``--e3nn-mul`` (default 8), 3 layers, output
  1x1o, our edges fed in).  A peer that is not installed is skipped with the reason.

Each model gets ``--warmup`` untimed steps, then ``--repeats`` timed ones; the JSON records every
time, the median, the machine, the thread count and the versions.

Usage (the real measurement; on a quiet machine):
    OMP_NUM_THREADS=2 python benchmarks/equivariant_speed.py --json benchmarks/results/equivariant_speed.json
On a GPU (times are taken after torch.cuda.synchronize):
    python benchmarks/equivariant_speed.py --device cuda --json benchmarks/results/equivariant_speed_cuda_h100.json
Smoke test:
    python benchmarks/equivariant_speed.py --small
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from geoflow.nn import EGNNVelocity, SinusoidalTimeEmbedding, TFNVelocity
from geoflow.nn._graph import as_flat_graph, build_edges
from geoflow.train import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _table_runs as _runs  # noqa: E402


class EGNNPytorchPeer(nn.Module):
    """lucidrains' egnn_pytorch EGNN layers as a velocity field: h_0 = W emb(t); v = x_L - x, centred."""

    def __init__(self, hidden=64, layers=4, time_dim=32):
        super().__init__()
        from egnn_pytorch import EGNN

        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.embed = nn.Linear(time_dim, hidden)
        self.layers = nn.ModuleList([EGNN(dim=hidden, m_dim=hidden) for _ in range(layers)])

    def forward(self, x, t):
        h = self.embed(self.time_embed(t))[:, None, :].expand(-1, x.shape[1], -1)
        pos = x
        for layer in self.layers:
            h, pos = layer(h, pos)
        v = pos - x
        return v - v.mean(dim=1, keepdim=True)


class E3nnGatePointsPeer(nn.Module):
    """e3nn's reference gate-points message passing (v2106) on our fully connected graph, output 1x1o, centred."""

    def __init__(self, mul=8, layers=3, lmax=2, max_radius=5.0, time_dim=32):
        super().__init__()
        from e3nn import o3
        from e3nn.nn.models.v2106.gate_points_message_passing import MessagePassing

        self.lmax, self.max_radius, self.num_basis = lmax, max_radius, 10
        hidden = o3.Irreps([(mul, (l, p)) for l in range(lmax + 1) for p in (-1, 1)])
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.mp = MessagePassing(
            irreps_node_sequence=[f"{time_dim}x0e"] + layers * [hidden] + ["1x1o"],
            irreps_node_attr="0e",
            irreps_edge_attr=o3.Irreps.spherical_harmonics(lmax),
            fc_neurons=[self.num_basis, 100],
            num_neighbors=54.0,
        )

    def forward(self, x, t):
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        g = as_flat_graph(x, t, None, cond_dim=0, dtype=x.dtype, device=x.device, where="peer")
        src, dst = build_edges(g, None)
        vec = g.pos[src] - g.pos[dst]
        sh = o3.spherical_harmonics(range(self.lmax + 1), vec, True, normalization="component")
        emb = soft_one_hot_linspace(vec.norm(dim=1), 0.0, self.max_radius, self.num_basis, basis="gaussian", cutoff=False)
        node_in = self.time_embed(g.t)
        out = self.mp(node_in, torch.ones_like(node_in[:, :1]), src, dst, sh, emb)
        return g.unflatten(g.remove_mean(out))


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torch-geometric", "e3nn", "egnn-pytorch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "gpu": gpu,
            "cuda_version": torch.version.cuda}


def _build(name: str, args):
    if name == "egnn":
        return EGNNVelocity()
    if name == "tfn":
        return TFNVelocity()
    if name == "egnn_pytorch":
        return EGNNPytorchPeer()
    if name == "e3nn_gate_points":
        return E3nnGatePointsPeer(mul=args.e3nn_mul)
    raise ValueError(f"unknown model {name!r}; use egnn, tfn, egnn_pytorch, e3nn_gate_points")


def _sync(device: torch.device) -> None:
    """Wait for the GPU (CUDA runs kernels asynchronously: a timer must not stop before they finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(model, x, t, *, warmup: int, repeats: int, backward: bool) -> list[float]:
    times = []
    for k in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        _sync(x.device)
        t0 = time.perf_counter()
        if backward:
            v = model(x, t)
            v.pow(2).sum().backward()
        else:
            with torch.no_grad():
                v = model(x, t)
        _sync(x.device)
        dt = time.perf_counter() - t0
        if k >= warmup:
            times.append(1e3 * dt)
    return times


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--particles", type=int, default=55)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--models", default="egnn,tfn,egnn_pytorch,e3nn_gate_points")
    p.add_argument("--e3nn-mul", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (GPU times wait for the kernels: synchronised)")
    p.add_argument("--small", action="store_true", help="smoke test: batch 4, 13 particles, 2 repeats, 1 warmup")
    p.add_argument("--seed", type=int, default=0)
    _runs.add_malloc_option(p)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.malloc == "keep":
        keep_freed_memory()
    if args.small:
        args.batch, args.particles, args.repeats, args.warmup = 4, 13, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    # LJ-like density: 55 particles in a ball of radius ~2.3 (reduced units)
    x = (1.2 * torch.randn(args.batch, args.particles, 3, generator=g)).to(dev)
    x = x - x.mean(dim=1, keepdim=True)
    t = torch.rand(args.batch, generator=g).to(dev)
    edges = args.batch * args.particles * (args.particles - 1)
    info = {"machine": _machine(), "versions": _versions(), "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "batch": args.batch, "particles": args.particles, "edges": edges, "repeats": args.repeats,
            "warmup": args.warmup, "seed": args.seed, "device": str(dev), "malloc": args.malloc, "results": {}}
    print(f"# {info['machine']['cpu']}, {info['machine']['cpu_count']} CPUs, torch threads {torch.get_num_threads()}, "
          f"device {dev}{' (' + info['machine']['gpu'] + ')' if dev.type == 'cuda' else ''}; {info['versions']}")
    print(f"# batch {args.batch} x {args.particles} particles (3-D), fully connected: {edges} edges; "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'model':<18} {'params':>9} {'fwd+bwd ms':>11} {'fwd ms':>9}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(args.seed)
        try:
            model = _build(name, args).to(dev)
        except ImportError as exc:
            print(f"{name:<18} skipped: {exc}")
            info["results"][name] = {"skipped": str(exc)}
            continue
        v = model(x, t)
        assert v.shape == x.shape and bool(torch.isfinite(v).all()), name
        fb = _time(model, x, t, warmup=args.warmup, repeats=args.repeats, backward=True)
        fw = _time(model, x, t, warmup=args.warmup, repeats=args.repeats, backward=False)
        n_params = sum(q.numel() for q in model.parameters())
        res = {"params": n_params, "fwd_bwd_ms_median": statistics.median(fb), "fwd_ms_median": statistics.median(fw),
               "fwd_bwd_ms": fb, "fwd_ms": fw}
        info["results"][name] = res
        print(f"{name:<18} {n_params:>9} {res['fwd_bwd_ms_median']:>11.1f} {res['fwd_ms_median']:>9.1f}", flush=True)
    if args.json:
        _runs.save(info, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return info


if __name__ == "__main__":
    main()
