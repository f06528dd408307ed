"""Shared input handling of the equivariant networks: dense tensors or PyG batches -> one flat graph.

Both :class:`~geoflow.nn.EGNNVelocity` and :class:`~geoflow.nn.TFNVelocity` accept

* a dense batch ``x`` of shape ``(batch, n_particles, d)`` with ``t`` of shape ``(batch,)``
  (or a scalar) and optional per-particle features ``cond`` of shape ``(batch, n_particles)``
  (integer types) or ``(batch, n_particles, cond_dim)`` (float features, e.g. one-hot);
* a :class:`torch_geometric.data.Data` / ``Batch`` with ``pos`` ``(N, d)``, optional ``x``
  (per-node features, used as ``cond``) and ``batch`` ``(N,)`` (sorted graph index), with
  ``t`` of shape ``(num_graphs,)`` (or a scalar).

Either way the networks see one flat graph of N nodes with ``edge_index`` of shape ``(2, E)``
in torch-geometric's convention (row 0 = source j, row 1 = target i; messages flow j -> i),
built inside each graph: all ordered pairs i != j (``cutoff=None``), or the pairs closer than
``cutoff`` (a radius graph from ``torch.cdist`` on the padded batch, since
``torch_geometric.nn.radius_graph`` needs pyg-lib).  A radius graph comes with a smooth
envelope per edge (1 below (1 - taper) cutoff, a cosine down to 0 at the cutoff) so that the
velocity field stays continuous when a pair crosses the cutoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["FlatGraph", "as_flat_graph", "build_edges", "envelope", "check_graph_options"]


@dataclass
class FlatGraph:
    """A batch of point clouds as one graph.

    Attributes:
        pos: node positions ``(N, d)``.
        batch: graph index of each node ``(N,)``, sorted.
        num_graphs: number of graphs B.
        t: time per node ``(N,)``.
        feats: per-node float features ``(N, cond_dim)`` or None.
        dense_shape: ``(B, n)`` when the input was a dense tensor (to reshape the output), else None.
        pos_pad, mask, index: the padded view ``(B, n_max, d)``, its validity mask ``(B, n_max)``
            and the flat node index of each padded slot ``(B, n_max)`` (-1 for padding).
    """

    pos: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    t: torch.Tensor
    feats: Optional[torch.Tensor]
    dense_shape: Optional[tuple]
    pos_pad: torch.Tensor
    mask: Optional[torch.Tensor]
    index: torch.Tensor

    def unflatten(self, v: torch.Tensor) -> torch.Tensor:
        """Node-level output ``(N, k)`` back to the input layout (``(B, n, k)`` for dense input)."""
        if self.dense_shape is None:
            return v
        return v.reshape(*self.dense_shape, v.shape[-1])

    def remove_mean(self, v: torch.Tensor) -> torch.Tensor:
        """Subtract the per-graph mean of node vectors ``v`` ``(N, d)`` (the CoM-free projection)."""
        if self.dense_shape is not None:
            B, n = self.dense_shape
            v3 = v.reshape(B, n, -1)
            return (v3 - v3.mean(dim=1, keepdim=True)).reshape(v.shape)
        counts = torch.bincount(self.batch, minlength=self.num_graphs).clamp_min(1).to(v.dtype)
        sums = torch.zeros(self.num_graphs, v.shape[-1], dtype=v.dtype, device=v.device).index_add_(0, self.batch, v)
        return v - (sums / counts[:, None])[self.batch]


def check_graph_options(cutoff, taper) -> tuple[Optional[float], float]:
    """Validate ``cutoff`` (None or > 0) and ``taper`` (in [0, 1))."""
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not (math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"`cutoff` must be None (fully connected) or a finite number > 0, got {cutoff!r}")
        cutoff = float(cutoff)
    if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0.0 <= float(taper) < 1.0:
        raise ValueError(f"`taper` must lie in [0, 1), got {taper!r}")
    return cutoff, float(taper)


def _is_pyg(x) -> bool:
    return hasattr(x, "pos") and not isinstance(x, torch.Tensor)


def _cond_to_feats(cond, cond_dim: int, lead: tuple, dtype, device, where: str) -> Optional[torch.Tensor]:
    """Per-particle conditions -> float features ``(*lead, cond_dim)``; ints are one-hot encoded."""
    if cond is None:
        if cond_dim:
            raise ValueError(
                f"{where}: the model was built with cond_dim={cond_dim} and needs per-particle features "
                f"`cond` (shape {(*lead,)} ints or {(*lead, cond_dim)} floats), got None"
            )
        return None
    if not cond_dim:
        raise ValueError(
            f"{where}: the model is unconditional (cond_dim=0) but got per-particle features; "
            "build it with cond_dim=<number of features or atom types>"
        )
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"{where}: `cond` must be a torch.Tensor, got {type(cond).__name__}")
    if cond.dtype == torch.bool or cond.is_complex():
        raise TypeError(f"{where}: `cond` must be integer types or float features, got dtype {cond.dtype}")
    if not cond.is_floating_point():
        if tuple(cond.shape) != tuple(lead):
            raise ValueError(f"{where}: integer `cond` (particle types) must have shape {tuple(lead)}, got {tuple(cond.shape)}")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) >= cond_dim):
            raise ValueError(
                f"{where}: particle types must lie in [0, {cond_dim - 1}] (cond_dim={cond_dim}), "
                f"got values in [{int(cond.min())}, {int(cond.max())}]"
            )
        return torch.nn.functional.one_hot(cond.long(), cond_dim).to(dtype=dtype, device=device)
    if tuple(cond.shape) != (*lead, cond_dim):
        raise ValueError(
            f"{where}: float `cond` must have shape {(*lead, cond_dim)} (per-particle features), got {tuple(cond.shape)}"
        )
    if not bool(torch.isfinite(cond).all()):
        raise ValueError(f"{where}: `cond` contains NaN or inf")
    return cond.to(dtype=dtype, device=device)


def _time(t, B: int, dtype, device, where: str) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.expand(B)
    elif t.dim() == 2 and t.shape[-1] == 1:
        t = t[:, 0]
    if tuple(t.shape) != (B,):
        raise ValueError(f"{where}: `t` must be a scalar or have shape ({B},) (one time per configuration), got {tuple(t.shape)}")
    return t


def as_flat_graph(x, t, cond, *, cond_dim: int, dtype, device, where: str, dim: Optional[int] = None) -> FlatGraph:
    """Dense ``(B, n, d)`` tensor or PyG ``Data``/``Batch`` -> :class:`FlatGraph` (validated)."""
    if _is_pyg(x):
        pos = x.pos
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2:
            raise ValueError(f"{where}: a PyG input needs `pos` of shape (num_nodes, d), got {getattr(pos, 'shape', pos)!r}")
        N = pos.shape[0]
        batch = getattr(x, "batch", None)
        if batch is None:
            batch = torch.zeros(N, dtype=torch.long, device=pos.device)
        if batch.shape != (N,):
            raise ValueError(f"{where}: `batch` must have shape ({N},), got {tuple(batch.shape)}")
        if N and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(f"{where}: the `batch` vector must be sorted (as torch_geometric's Batch makes it)")
        B = int(batch.max()) + 1 if N else 0
        B = max(B, int(getattr(x, "num_graphs", B) or B))
        if cond is None:
            cond = getattr(x, "x", None)
        lead_cond = (N,)
        dense_shape = None
    else:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: `x` must be a tensor (batch, n_particles, d) or a torch_geometric Data/Batch, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"{where}: `x` must have shape (batch, n_particles, d), got {tuple(x.shape)}")
        B, n, _ = x.shape
        pos = x.reshape(B * n, x.shape[-1])
        N = B * n
        batch = torch.arange(B, device=x.device).repeat_interleave(n)
        lead_cond = (B, n)
        dense_shape = (B, n)
    if not pos.is_floating_point():
        raise TypeError(f"{where}: positions must have a floating dtype, got {pos.dtype}")
    if pos.dtype != dtype:
        raise TypeError(f"{where}: positions have dtype {pos.dtype} but the parameters are {dtype}; use model.to({pos.dtype}) or cast x")
    if pos.device != device:
        raise ValueError(f"{where}: positions are on {pos.device} but the parameters are on {device}; move one of them")
    if dim is not None and pos.shape[-1] != dim:
        raise ValueError(f"{where}: this network works in {dim}-D only, got points of dimension {pos.shape[-1]}")
    if not bool(torch.isfinite(pos.detach()).all()):
        raise ValueError(f"{where}: positions contain NaN or inf")
    t = _time(t, B, dtype, device, where)
    feats = _cond_to_feats(cond, cond_dim, lead_cond, dtype, device, where)
    if feats is not None and dense_shape is not None:
        feats = feats.reshape(N, cond_dim)
    if dense_shape is not None:
        pos_pad = pos.reshape(B, dense_shape[1], -1)
        mask = None
        index = torch.arange(N, device=pos.device).reshape(B, dense_shape[1])
    else:
        from torch_geometric.utils import to_dense_batch

        pos_pad, mask = to_dense_batch(pos, batch, batch_size=B)
        index, _ = to_dense_batch(torch.arange(N, device=pos.device), batch, fill_value=-1, batch_size=B)
    return FlatGraph(pos=pos, batch=batch, num_graphs=B, t=t[batch], feats=feats, dense_shape=dense_shape,
                     pos_pad=pos_pad, mask=mask, index=index)


def build_edges(g: FlatGraph, cutoff: Optional[float]) -> torch.Tensor:
    """``edge_index`` ``(2, E)`` (source j, target i) of all pairs i != j within each graph, closer than ``cutoff`` if given.

    The neighbour search runs on the padded ``(B, n_max, d)`` view with ``torch.cdist`` (no
    gradient flows through the choice of edges).
    """
    B, n = g.pos_pad.shape[:2]
    adj = ~torch.eye(n, dtype=torch.bool, device=g.pos.device)
    adj = adj.expand(B, n, n)
    if g.mask is not None:
        adj = adj & g.mask[:, :, None] & g.mask[:, None, :]
    if cutoff is not None:
        with torch.no_grad():
            adj = adj & (torch.cdist(g.pos_pad, g.pos_pad) < cutoff)
    b, i, j = adj.nonzero(as_tuple=True)
    return torch.stack([g.index[b, j], g.index[b, i]])


def envelope(dist: torch.Tensor, cutoff: Optional[float], taper: float) -> Optional[torch.Tensor]:
    """Smooth edge weight: 1 for dist <= (1 - taper) cutoff, (1 + cos(pi s)) / 2 on the taper, 0 past the cutoff.

    ``s = (dist - r0) / (cutoff - r0)`` with ``r0 = (1 - taper) cutoff``.  None (all ones) for
    fully connected graphs; with ``taper = 0`` the weight is the indicator of dist < cutoff.
    """
    if cutoff is None or taper == 0.0:
        return None
    r0 = (1.0 - taper) * cutoff
    s = ((dist - r0) / (cutoff - r0)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * s))
