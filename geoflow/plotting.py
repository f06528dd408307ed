"""Plots people would rather look at than read: densities on S^2 and pairs of angles on tori."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["plot_sphere_density", "plot_torus_pairs", "latlon_to_sphere"]


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
