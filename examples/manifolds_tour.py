"""A two-minute tour of the `manifolds` package (the README's quick-start job until `geoflow train` lands).

For every manifold: draw base samples, compute their Frechet mean with geoopt's RiemannianAdam on a
ManifoldParameter, walk the geodesic from one sample to another, and check the exp/log round trip.
Run:  python examples/manifolds_tour.py --seed 0
"""

from __future__ import annotations

import argparse
import importlib

import geoopt
import torch

import manifolds as M


def _maybe(module, name, *args, **kwargs):
    try:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    except (ImportError, AttributeError):
        return None


def frechet_mean(m, pts, steps=300, lr=0.05):
    p = geoopt.ManifoldParameter(pts[0].clone(), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (m.dist(p, pts) ** 2).mean()
        loss.backward()
        opt.step()
    return p.detach(), float(loss.detach())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--samples", type=int, default=64, help="points per manifold (default 64)")
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    cases = [
        M.Euclidean(3),
        M.Sphere(2),
        M.FlatTorus(2),
        _maybe("manifolds", "PoincareBall", 2),
        _maybe("manifolds", "Lorentz", 2),
        _maybe("manifolds", "SPD", 3),
        _maybe("manifolds", "SO3"),
        M.Product(M.Sphere(2), M.FlatTorus(1)),
    ]
    print(f"{'manifold':48s} {'dim':>3s} {'mean sq. dist':>13s} {'|log(exp)-u|':>12s} {'log p(mean)':>11s}")
    for m in [c for c in cases if c is not None]:
        pts = m.random_base(args.samples, generator=g, dtype=torch.float64)
        # a concentrated cloud: move every point a third of the way towards the first one
        pts = m.geodesic(pts, pts[:1].expand_as(pts), 0.66)
        mean, loss = frechet_mean(m, pts)
        m.check_point(mean)
        u = m.logmap(pts[:1], pts[1:])
        err = float((m.logmap(pts[:1], m.expmap(pts[:1], u)) - u).abs().max())
        lp = float(m.base_log_prob(mean))
        print(f"{repr(m):48s} {m.dim:3d} {loss:13.4f} {err:12.2e} {lp:11.3f}")
    print("\nNext: read README.md for the API, or run the tests with `pytest`.")


if __name__ == "__main__":
    main()
