"""Plots people would rather look at than read: densities on S^2 and on triangle meshes, pairs of
angles on tori, 2-D samples, image grids, and particle systems (energy and distance histograms,
configurations)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = [
    "plot_sphere_density",
    "plot_torus_pairs",
    "plot_image_grid",
    "plot_plane",
    "plot_particles",
    "plot_molecules",
    "plot_mesh_density",
    "latlon_to_sphere",
]


def latlon_to_sphere(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(lat, lon) in radians to unit vectors (cos lat cos lon, cos lat sin lon, sin lat)."""
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


def _sphere_to_latlon(x: torch.Tensor):
    lat = torch.asin(x[..., 2].clamp(-1, 1))
    lon = torch.atan2(x[..., 1], x[..., 0])
    return lat, lon


def plot_sphere_density(log_prob_fn, data: torch.Tensor, path, *, n_lat: int = 45, n_lon: int = 90, title: str = ""):
    """Model density on a Mollweide map of S^2 with the data points on top; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = torch.linspace(-math.pi / 2, math.pi / 2, n_lat + 2, dtype=torch.float64)[1:-1]
    lon = torch.linspace(-math.pi, math.pi, n_lon + 1, dtype=torch.float64)[:-1] + math.pi / n_lon
    LA, LO = torch.meshgrid(lat, lon, indexing="ij")
    grid = latlon_to_sphere(LA.reshape(-1), LO.reshape(-1)).float()
    logp = log_prob_fn(grid).reshape(n_lat, n_lon).double()
    fig = plt.figure(figsize=(10, 5))
    ax = fig.add_subplot(111, projection="mollweide")
    im = ax.pcolormesh(LO.numpy(), LA.numpy(), logp.exp().numpy(), shading="auto", cmap="viridis")
    dlat, dlon = _sphere_to_latlon(data.double())
    ax.scatter(dlon.numpy(), dlat.numpy(), s=2, c="red", alpha=0.5, label="data")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "model density on S^2 (Mollweide) with data points")
    fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.08, label="density")
    ax.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_torus_pairs(samples: torch.Tensor, data: torch.Tensor, path, *, names=None, max_pairs: int = 6, bins: int = 60):
    """2-D histograms of angle pairs, model samples above and data below; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = samples.shape[-1]
    pairs = [(i, i + 1) for i in range(n - 1)][:max_pairs] if n > 1 else [(0, 0)]
    names = names or [f"angle {i}" for i in range(n)]
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.2 * len(pairs), 6.4), squeeze=False)
    rng = [[-math.pi, math.pi], [-math.pi, math.pi]]
    for k, (i, j) in enumerate(pairs):
        for row, (pts, label) in enumerate([(samples, "model"), (data, "data")]):
            ax = axes[row, k]
            ax.hist2d(pts[:, i].numpy(), pts[:, j].numpy(), bins=bins, range=rng, cmap="magma", density=True)
            ax.set_xlabel(names[i])
            ax.set_ylabel(names[j])
            ax.set_title(f"{label}: {names[i]} vs {names[j]}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_image_grid(images: torch.Tensor, path, *, ncol: int, row_labels=None, title: str = "",
                    value_range: tuple[float, float] = (-1.0, 1.0)):
    """A grid of images (one row per ``ncol`` images, gray scale); writes ``path`` (PNG).

    Pixel values are clipped to ``value_range`` (default [-1, 1], geoflow's image scaling) and
    shown dark-on-light as in the usual digit plots.  ``row_labels`` names each row on the left.

    Shapes: images ``(n, C, H, W)`` with C = 1 (gray) or 3 (RGB).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must have shape (n, 1 or 3, H, W), got {got}")
    if isinstance(ncol, bool) or not isinstance(ncol, int) or ncol < 1:
        raise ValueError(f"`ncol` must be a positive int, got {ncol!r}")
    lo, hi = value_range
    n, c, h, w = images.shape
    nrow = math.ceil(n / ncol)
    x = ((images.detach().double().clamp(lo, hi) - lo) / (hi - lo)).cpu()
    pad = 1
    canvas = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.25, dtype=torch.float64)  # light frame
    for k in range(n):
        r, q = divmod(k, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[k]
    fig, ax = plt.subplots(figsize=(max(2.0, 0.45 * ncol + 0.6), max(1.2, 0.45 * nrow + (0.4 if title else 0.1))))
    if c == 1:
        ax.imshow(canvas[0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(nrow)])
        ax.set_yticklabels([str(lab) for lab in row_labels][:nrow])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _save(fig, path):
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_plane(samples: torch.Tensor, data: torch.Tensor, path, *, bins: int = 100, title: str = ""):
    """2-D histograms of model samples and data side by side on a common square range; writes ``path`` (PNG).

    Shapes: samples ``(n, 2)``, data ``(m, 2)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, x in (("samples", samples), ("data", data)):
        if x.dim() != 2 or x.shape[-1] != 2:
            raise ValueError(f"`{name}` must have shape (n, 2), got {tuple(x.shape)}")
    lim = float(torch.quantile(data.abs().max(-1).values.double(), 0.995)) * 1.15
    rng = [[-lim, lim], [-lim, lim]]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, (pts, label) in zip(axes, [(samples, "model samples"), (data, "data")]):
        pts = pts.detach().cpu()
        ax.hist2d(pts[:, 0].numpy(), pts[:, 1].numpy(), bins=bins, range=rng, cmap="magma", density=True)
        ax.set_title(f"{title + ': ' if title else ''}{label} ({pts.shape[0]})", fontsize=9)
        ax.set_aspect("equal")
    fig.tight_layout()
    return _save(fig, path)


def plot_particles(samples: torch.Tensor, data: torch.Tensor, path, *, energy=None, n_configs: int = 3,
                   title: str = "", weights=None):
    """Particle systems: energy histogram (samples, reweighted samples, data), pair-distance
    histogram, and a few sampled configurations (first two coordinates); writes ``path`` (PNG).

    Args:
        samples, data: configurations ``(n, n_particles, dim)``.
        energy: callable E(x) -> (n,) (omitted: no energy panel).
        weights: importance weights of ``samples`` (an extra, reweighted energy histogram).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, x in (("samples", samples), ("data", data)):
        if x.dim() != 3:
            raise ValueError(f"`{name}` must have shape (n, n_particles, dim), got {tuple(x.shape)}")
    samples, data = samples.detach().cpu().double(), data.detach().cpu().double()
    panels = (1 if energy is not None else 0) + 1 + n_configs
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.4), squeeze=False)
    axes = list(axes[0])
    if energy is not None:
        ax = axes.pop(0)
        e_s, e_d = energy(samples), energy(data)
        lo, hi = torch.quantile(e_d, 0.001).item(), torch.quantile(e_d, 0.999).item()
        pad = 0.25 * (hi - lo)
        bins = torch.linspace(lo - pad, hi + pad, 60).numpy()
        ax.hist(e_d.numpy(), bins=bins, density=True, alpha=0.5, label="data")
        ax.hist(e_s[torch.isfinite(e_s)].numpy(), bins=bins, density=True, histtype="step", lw=1.5, label="samples")
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64)
            ok = torch.isfinite(e_s) & torch.isfinite(w)
            ax.hist(e_s[ok].numpy(), bins=bins, weights=w[ok].numpy(), density=True, histtype="step", lw=1.5,
                    ls="--", label="reweighted")
        ax.set_xlabel("energy (k_B T)")
        ax.legend(fontsize=8)
        ax.set_title(f"{title + ': ' if title else ''}energy", fontsize=9)
    ax = axes.pop(0)
    iu = torch.triu_indices(samples.shape[1], samples.shape[1], 1)
    d_s = torch.cdist(samples, samples)[:, iu[0], iu[1]].reshape(-1)
    d_d = torch.cdist(data, data)[:, iu[0], iu[1]].reshape(-1)
    bins = torch.linspace(0, float(torch.quantile(d_d[: 10 ** 6], 0.999)) * 1.2, 80).numpy()
    ax.hist(d_d.numpy(), bins=bins, density=True, alpha=0.5, label="data")
    ax.hist(d_s.numpy(), bins=bins, density=True, histtype="step", lw=1.5, label="samples")
    ax.set_xlabel("pair distance")
    ax.legend(fontsize=8)
    ax.set_title("interparticle distances", fontsize=9)
    lim = float(data.abs().max()) * 1.1
    for k, ax in enumerate(axes):
        c = samples[k]
        ax.scatter(c[:, 0].numpy(), c[:, 1].numpy(), c=range(c.shape[0]), cmap="tab20", s=60, edgecolors="k")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"sample {k} (x, y)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


_ELEMENT_COLOURS = ("#dddddd", "#333333", "#3050f8", "#ff0d0d", "#90e050")  # H C N O F (CPK)


def plot_molecules(positions, types, path, *, n: int = 8, title: str = ""):
    """A grid of 3-D molecules (atoms coloured by element, bonds from EDM's distance rule); writes ``path`` (PNG).

    Args:
        positions: list of ``(n_i, 3)`` tensors (Angstrom).
        types: list of ``(n_i,)`` indices into ``geoflow.data.molecules.QM9_ELEMENTS``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.molecules import bond_orders

    n = min(n, len(positions))
    if n < 1:
        raise ValueError("`positions` is empty: nothing to plot")
    cols = min(4, n)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows))
    for k in range(n):
        x, t = positions[k].detach().double().cpu(), types[k].cpu()
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        order = bond_orders(x, t)
        for i, j in zip(*torch.nonzero(torch.triu(order), as_tuple=True)):
            ax.plot(*[[float(x[i, c]), float(x[j, c])] for c in range(3)], color="k", lw=float(order[i, j]))
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), x[:, 2].numpy(), s=60,
                   c=[_ELEMENT_COLOURS[int(e)] for e in t], edgecolors="k", depthshade=False)
        ax.set_axis_off()
        ax.set_title(f"{x.shape[0]} atoms", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_mesh_density(vertices, faces, vertex_density, path, *, samples=None, target_face_density=None, data=None,
                      title: str = "", up: str = "y", view: tuple[float, float] = (15.0, -60.0), max_points: int = 2000):
    """A triangle mesh coloured by a model density, with samples, beside the target density; writes ``path`` (PNG).

    Left: every face coloured by the mean of ``vertex_density`` over its 3 corners (the model
    density p(x) = exp(log_likelihood) evaluated at the vertices), model ``samples`` scattered
    on top.  Right (when ``target_face_density`` is given): the target density per face, with
    ``data`` points.  Both panels share one colour scale (0 to the 99.5th percentile of the
    values shown), so equal colours mean equal densities.  Matplotlib draws points without
    depth tests: points on the far side of the surface show through.

    Args:
        vertices: ``(V, 3)`` positions; faces: ``(F, 3)`` vertex indices.
        vertex_density: ``(V,)`` density w.r.t. area at the vertices.
        samples, data: ``(n, 3)`` points on the surface (at most ``max_points`` drawn each).
        target_face_density: ``(F,)`` density per face (e.g. :func:`geoflow.data.meshes.target_face_density`).
        up: the axis drawn vertically: "x", "y" (default; the shipped meshes are y-up) or "z".
        view: (elevation, azimuth) of the camera in degrees.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    V = torch.as_tensor(vertices).detach().cpu().double()
    F = torch.as_tensor(faces).detach().cpu().long()
    if V.dim() != 2 or V.shape[1] != 3 or F.dim() != 2 or F.shape[1] != 3:
        raise ValueError(f"`vertices` must be (V, 3) and `faces` (F, 3), got {tuple(V.shape)} and {tuple(F.shape)}")
    dens = torch.as_tensor(vertex_density).detach().cpu().double()
    if dens.shape != (V.shape[0],):
        raise ValueError(f"`vertex_density` must have shape ({V.shape[0]},), got {tuple(dens.shape)}")
    if up not in ("x", "y", "z"):
        raise ValueError(f"`up` must be 'x', 'y' or 'z', got {up!r}")
    order = {"x": [1, 2, 0], "y": [2, 0, 1], "z": [0, 1, 2]}[up]  # drawn (horizontal, depth, vertical)
    panels = [("model density" + (" and samples" if samples is not None else ""), dens[F].mean(-1), samples)]
    if target_face_density is not None:
        tf = torch.as_tensor(target_face_density).detach().cpu().double()
        if tf.shape != (F.shape[0],):
            raise ValueError(f"`target_face_density` must have shape ({F.shape[0]},), got {tuple(tf.shape)}")
        panels.append(("target density" + (" and data" if data is not None else ""), tf, data))
    finite = torch.cat([v[torch.isfinite(v)] for _, v, _ in panels])
    vmax = float(torch.quantile(finite, 0.995)) if finite.numel() else 1.0
    norm = colors.Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    cmap = matplotlib.colormaps["viridis"]
    Vd = V[:, order]
    tris = Vd[F].numpy()
    lo, hi = Vd.min(0).values, Vd.max(0).values
    fig = plt.figure(figsize=(5.2 * len(panels) + 0.8, 5.2))
    for i, (name, values, pts) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        fc = cmap(norm(torch.nan_to_num(values, nan=0.0).numpy()))
        ax.add_collection3d(Poly3DCollection(tris, facecolors=fc, edgecolors="none", linewidths=0))
        if pts is not None:
            p = torch.as_tensor(pts).detach().cpu().double()[:max_points][:, order]
            ax.scatter(p[:, 0].numpy(), p[:, 1].numpy(), p[:, 2].numpy(), s=1.5, c="red", alpha=0.6, depthshade=False)
        for setter, a, b in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), lo.tolist(), hi.tolist()):
            setter(a, b)
        ax.set_box_aspect((hi - lo).tolist())
        ax.view_init(*view)
        ax.set_axis_off()
        ax.set_title(f"{title + ': ' if title else ''}{name}", fontsize=9)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=fig.axes, shrink=0.6, label="density (1 / area)")
    return _save(fig, path)
