"""E(n)-equivariant graph neural network velocity field (EGNN) on torch-geometric's MessagePassing."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from manifolds._math import sqrt_safe

from ._graph import as_flat_graph, build_edges, check_graph_options, envelope
from .embedding import SinusoidalTimeEmbedding

__all__ = ["EGNNVelocity", "EGNNLayer", "ChiralEGNNLayer"]


def _pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {v!r}")
    return int(v)


def _coord_head(hidden: int) -> nn.Module:
    """The per-edge scalar gate of a coordinate update: Linear-SiLU-Linear(hidden -> 1), the last layer
    initialised near zero so that a fresh layer starts near the identity map (EGNN reference code)."""
    last = nn.Linear(hidden, 1, bias=False)
    nn.init.xavier_uniform_(last.weight, gain=0.001)
    return nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)


class EGNNLayer(MessagePassing):
    """One equivariant graph convolution layer (Satorras, Hoogeboom & Welling 2021, Eq. 3-6).

    .. math::
        m_{ij} = w_{ij}\\, \\phi_e(h_i, h_j, |x_i - x_j|^2) \\;[\\cdot\\, \\sigma(\\phi_a(\\cdot))]

        x_i' = x_i + \\frac{1}{k_i} \\sum_{j} w_{ij}\\, \\frac{x_i - x_j}{|x_i - x_j| + 1}\\, s(\\phi_x(m_{ij})),
        \\qquad s = \\texttt{coords\\_range} \\cdot \\tanh \\text{ (or the identity)}

        h_i' = h_i + \\phi_h\\Big(h_i, \\frac{1}{k_i} \\sum_j m_{ij}\\Big), \\qquad k_i = \\max(1, \\textstyle\\sum_j w_{ij})

    with w_ij the smooth edge envelope (1 on fully connected graphs, so 1/k_i is the paper's
    C = 1/(M - 1)), the optional attention gate sigma(phi_a) and the (|x_i - x_j| + 1)
    normalisation and tanh of EDM/EquiFM (Hoogeboom et al. 2022; Song et al. 2023) that keep
    coordinate updates bounded.

    Shapes: h ``(N, hidden)``, pos ``(N, d)``, edge_index ``(2, E)``, edge_weight ``(E, 1)`` or
    None -> (h', pos').
    """

    def __init__(self, hidden: int, *, attention: bool = True, tanh: bool = True, coords_range: float = 15.0):
        super().__init__(aggr="add", node_dim=0)
        act = nn.SiLU
        self.hidden = hidden
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), act(), nn.Linear(hidden, hidden), act())
        self.phi_a = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()) if attention else None
        self.phi_x = _coord_head(hidden)
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden, hidden), act(), nn.Linear(hidden, hidden))
        self.tanh = tanh
        self.coords_range = float(coords_range)

    def forward(self, h, pos, edge_index, edge_weight=None, cpos=None):
        # phi_e's first linear map on [h_i, h_j, d2] is split: W_i h_i and W_j h_j are computed per
        # node (N rows) instead of per edge (E ~ N n rows); same values, ~3x fewer flops there.
        lin = self.phi_e[0]
        H = self.hidden
        a = h @ lin.weight[:, :H].T + lin.bias
        b = h @ lin.weight[:, H : 2 * H].T
        extra = {} if cpos is None else {"cpos": cpos}  # centred positions: ChiralEGNNLayer only
        out = self.propagate(edge_index, a=a, b=b, pos=pos, edge_weight=edge_weight, **extra)
        H, d = self.hidden, pos.shape[-1]
        k = out[:, H + d :].clamp_min(1.0)
        m, dx = out[:, :H] / k, out[:, H : H + d] / k
        return h + self.phi_h(torch.cat([h, m], dim=-1)), pos + dx

    def message(self, a_i, b_j, pos_i, pos_j, edge_weight):
        m, trans, d2 = self._parts(a_i, b_j, pos_i, pos_j)
        return self._weighted(m, trans, d2, edge_weight)

    def _parts(self, a_i, b_j, pos_i, pos_j):
        """Per edge: the message m_ij, the coordinate update of x_i and |x_i - x_j|^2."""
        rel = pos_i - pos_j
        d2 = (rel * rel).sum(-1, keepdim=True)
        w_d = self.phi_e[0].weight[:, 2 * self.hidden]
        m = self.phi_e[1:](a_i + b_j + d2 * w_d)  # = phi_e([h_i, h_j, d2])
        if self.phi_a is not None:
            m = m * self.phi_a(m)
        return m, rel / (sqrt_safe(d2) + 1.0) * self._bound(self.phi_x(m)), d2

    def _bound(self, s):
        return torch.tanh(s) * self.coords_range if self.tanh else s

    @staticmethod
    def _weighted(m, trans, d2, edge_weight):
        if edge_weight is None:
            w = torch.ones_like(d2)
        else:
            w = edge_weight
            m, trans = m * w, trans * w
        return torch.cat([m, trans, w], dim=-1)


class ChiralEGNNLayer(EGNNLayer):
    """An SE(3)-equivariant EGNN layer: :class:`EGNNLayer` plus a cross-product coordinate update.

    .. math::
        x_i' = x_i + \\frac{1}{k_i} \\sum_j w_{ij} \\Big[\\frac{x_i - x_j}{|x_i - x_j| + 1}\\, s(\\phi_x(m_{ij}))
             + \\frac{c_i \\times c_j}{|c_i \\times c_j| + 1}\\, s(\\phi_c(m_{ij}))\\Big],
        \\qquad c_i = x_i - \\bar x

    (c the positions centred on their configuration's mean).  R c_i x R c_j = det(R) R (c_i x c_j),
    so the update follows proper rotations, translations and permutations but changes sign
    relative to the rest under a reflection: stacked layers tell a configuration from its
    mirror image (distances after the first layer depend on the handedness), as a
    chirality-aware (SE(3)) model of molecules must, where an E(3) model gives enantiomers the
    same density.  The cross-product construction is that of ClofNet-style SE(3) graph
    networks (Du et al. 2022, "SE(3) Equivariant Graph Neural Networks with Complete Local
    Frames"), reduced to one extra scalar gate per edge.  3-D only.
    """

    def __init__(self, hidden: int, **kw):
        super().__init__(hidden, **kw)
        self.phi_c = _coord_head(hidden)

    def message(self, a_i, b_j, pos_i, pos_j, edge_weight, cpos_i, cpos_j):
        m, trans, d2 = self._parts(a_i, b_j, pos_i, pos_j)
        cross = torch.linalg.cross(cpos_i, cpos_j, dim=-1)
        nc = sqrt_safe((cross * cross).sum(-1, keepdim=True))
        trans = trans + cross / (nc + 1.0) * self._bound(self.phi_c(m))
        return self._weighted(m, trans, d2, edge_weight)


class EGNNVelocity(nn.Module):
    """An E(n)-equivariant velocity field on point clouds: v(x, t, cond) = EGNN(x)_L - x, centred.

    Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks", ICML; used as
    the velocity of equivariant flow matching by Klein, Krämer & Noé 2023 and Song et al. 2023
    (EquiFM).  Node features start as h_0 = W [emb(t), c] (sinusoidal time embedding of the
    configuration's t, concatenated with the per-particle features c = ``cond``); L
    :class:`EGNNLayer` update (h, x); the velocity is

    .. math:: v_i = (x_i^{(L)} - x_i) - \\frac{1}{n} \\sum_k (x_k^{(L)} - x_k),

    which is E(n)-equivariant (rotations and reflections: v(x Q^T) = v(x) Q^T), invariant
    under translations (v(x + c) = v(x)), permutation-equivariant, and centre-of-mass free
    (a tangent vector of :class:`manifolds.CoMFree`).  Works in any dimension d (d = 2 for
    DW4, 3 for LJ and molecules).  With ``chiral=True`` (3-D) it is SE(3)- instead of E(3)-equivariant
    (:class:`ChiralEGNNLayer`): reflections are no symmetry, so mirror images get different densities.

    Graphs: ``cutoff=None`` (default) connects every pair in each configuration, which suits
    small systems (DW4, LJ13, LJ55, QM9); a float gives a radius graph (pairs closer than
    ``cutoff``, found with ``torch.cdist``) whose messages fade out smoothly over the last
    ``taper`` fraction of the cutoff, for larger systems.

    Args:
        hidden: width of node features and messages (default 64).
        layers: number of EGNN layers (default 4).
        time_dim: size of the sinusoidal time embedding (default 32).
        cond_dim: number of per-particle features (0: unconditional).  ``cond`` is then an int
            tensor of particle types in [0, cond_dim) (one-hot encoded inside) or float
            features with last dimension ``cond_dim``.
        feature_out_dim: if > 0, the network also returns an invariant per-particle output of
            this size (a linear read-out of h_L), e.g. the velocity of atom-type features in
            EquiFM's hybrid transport; ``forward`` then returns ``(v, f)``.
        attention: sigmoid attention gate on messages (default True).
        tanh: bound coordinate updates by ``coords_range * tanh`` (default True).
        coords_range: see ``tanh`` (default 15).
        cutoff: None (fully connected) or the radius of the neighbour graph.
        taper: fraction of the cutoff over which messages fade to zero (default 0.2).
        chiral: :class:`ChiralEGNNLayer` layers (3-D only): equivariant under proper rotations,
            translations and permutations but not reflections, so enantiomers get different
            densities (default False: E(n)-equivariant).

    Shapes: dense ``x`` ``(B, n, d)``, ``t`` ``(B,)`` or scalar, ``cond`` ``(B, n)`` int or
    ``(B, n, cond_dim)`` -> ``(B, n, d)``; PyG ``Data``/``Batch`` with ``pos`` ``(N, d)``,
    ``batch`` ``(N,)``, optional ``x`` ``(N, cond_dim)`` or ``(N,)`` used as ``cond``, ``t``
    ``(num_graphs,)`` -> ``(N, d)``.
    """

    def __init__(
        self,
        *,
        hidden: int = 64,
        layers: int = 4,
        time_dim: int = 32,
        cond_dim: int = 0,
        feature_out_dim: int = 0,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        cutoff: Optional[float] = None,
        taper: float = 0.2,
        chiral: bool = False,
    ):
        super().__init__()
        if not isinstance(chiral, bool):
            raise TypeError(f"`chiral` must be a bool, got {type(chiral).__name__}")
        hidden = _pos_int("hidden", hidden)
        layers = _pos_int("layers", layers)
        time_dim = _pos_int("time_dim", time_dim, 2)
        if time_dim % 2:
            raise ValueError(f"`time_dim` must be even, got {time_dim}")
        cond_dim = _pos_int("cond_dim", cond_dim, 0)
        feature_out_dim = _pos_int("feature_out_dim", feature_out_dim, 0)
        if isinstance(coords_range, bool) or not isinstance(coords_range, (int, float)) or not coords_range > 0:
            raise ValueError(f"`coords_range` must be a number > 0, got {coords_range!r}")
        cutoff, taper = check_graph_options(cutoff, taper)
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.embed = nn.Linear(time_dim + cond_dim, hidden)
        layer = ChiralEGNNLayer if chiral else EGNNLayer
        self.layers = nn.ModuleList(
            [layer(hidden, attention=attention, tanh=tanh, coords_range=coords_range) for _ in range(layers)]
        )
        self.chiral = chiral
        self.feature_out = nn.Linear(hidden, feature_out_dim) if feature_out_dim else None
        self.cond_dim = cond_dim
        self.feature_out_dim = feature_out_dim
        self.cutoff = cutoff
        self.taper = taper
        self.config = dict(hidden=hidden, layers=layers, time_dim=time_dim, cond_dim=cond_dim,
                           feature_out_dim=feature_out_dim, attention=attention, tanh=tanh,
                           coords_range=float(coords_range), cutoff=cutoff, taper=taper, chiral=chiral)

    def forward(self, x, t, cond=None):
        w = self.embed.weight
        g = as_flat_graph(x, t, cond, cond_dim=self.cond_dim, dtype=w.dtype, device=w.device, where="EGNNVelocity")
        edge_index = build_edges(g, self.cutoff)
        pos0 = g.pos
        if self.chiral and pos0.shape[-1] != 3:
            raise ValueError(f"EGNNVelocity(chiral=True) needs 3-D positions (cross products), got dimension "
                             f"{pos0.shape[-1]}; use chiral=False")
        h = [self.time_embed(g.t).to(w.dtype)]
        if g.feats is not None:
            h.append(g.feats)
        h = self.embed(torch.cat(h, dim=-1))
        pos = pos0
        weight = None
        if self.cutoff is not None:
            src, dst = edge_index
            rel = pos0[dst] - pos0[src]
            weight = envelope(sqrt_safe((rel * rel).sum(-1, keepdim=True)), self.cutoff, self.taper)
        for layer in self.layers:
            h, pos = layer(h, pos, edge_index, weight, g.remove_mean(pos) if self.chiral else None)
        v = g.unflatten(g.remove_mean(pos - pos0))
        if self.feature_out is None:
            return v
        return v, g.unflatten(self.feature_out(h))
