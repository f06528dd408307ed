"""Tensor-field network velocity (e3nn): E(3)-equivariant convolutions with spherical harmonics and gates."""

from __future__ import annotations

import math
from typing import Optional

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch_geometric.nn import MessagePassing

from manifolds._math import sqrt_safe

from ._graph import as_flat_graph, build_edges, check_graph_options, envelope
from .embedding import SinusoidalTimeEmbedding

__all__ = ["TFNVelocity", "TFNLayer"]


def _pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {v!r}")
    return int(v)


class TFNLayer(MessagePassing):
    """One tensor-field convolution (Thomas et al. 2018), in the NequIP form (Batzner et al. 2022).

    .. math::
        \\tilde h_i = \\frac{1}{\\sqrt{k_i}} \\sum_j w_{ij}\\,
            \\big(W_1 h_j\\big) \\otimes_{R(|r_{ij}|)} Y(\\hat r_{ij}),
        \\qquad h_i' = W_2 \\tilde h_i + W_{sc} h_i,
        \\qquad k_i = \\max(1, \\textstyle\\sum_j w_{ij})

    with r_ij = x_j - x_i, Y the spherical harmonics up to ``irreps_sh``, the ``uvu`` tensor
    product (one weight per channel and path) whose weights R(|r_ij|) come from a radial MLP
    on a Gaussian embedding of the distance (``e3nn.math.soft_one_hot_linspace``), W_1, W_2,
    W_sc equivariant linear maps (``e3nn.o3.Linear``) and w_ij the edge envelope (1 on fully
    connected graphs).

    Shapes: h ``(N, irreps_in.dim)``, edge_sh ``(E, irreps_sh.dim)``, edge_emb ``(E, num_basis)``,
    edge_weight ``(E, 1)`` or None, norm ``(N, 1)`` -> ``(N, irreps_out.dim)``.
    """

    def __init__(self, irreps_in, irreps_sh, irreps_out, *, num_basis: int, radial_hidden: int):
        super().__init__(aggr="add", node_dim=0)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        wanted = {ir for _, ir in self.irreps_out}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        irreps_mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
        self.irreps_mid = irreps_mid
        self.lin1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(
            self.irreps_in, self.irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = FullyConnectedNet([num_basis, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.lin2 = o3.Linear(irreps_mid.simplify(), self.irreps_out)
        self.sc = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, h, edge_index, edge_sh, edge_emb, edge_weight, norm):
        w = self.radial(edge_emb)
        agg = self.propagate(edge_index, h=self.lin1(h), edge_sh=edge_sh, w=w, edge_weight=edge_weight)
        return self.lin2(agg / norm) + self.sc(h)

    def message(self, h_j, edge_sh, w, edge_weight):
        m = self.tp(h_j, edge_sh, w)
        return m if edge_weight is None else m * edge_weight


def _gate(irreps_hidden: o3.Irreps) -> Gate:
    """Gate whose output is ``irreps_hidden``: SiLU (even) / tanh (odd) on scalars, sigmoid gates on l > 0."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)


class TFNVelocity(nn.Module):
    """An E(3)-equivariant tensor-field-network velocity field on 3-D point clouds (e3nn).

    Thomas et al. 2018, "Tensor field networks: Rotation- and translation-equivariant neural
    networks for 3D point clouds"; built from e3nn (Geiger & Smidt 2022) as in NequIP
    (Batzner et al. 2022).  Scalar node features h_0 = W [emb(t), c] (time embedding and
    per-particle features ``cond``); ``layers`` :class:`TFNLayer` convolutions, each followed
    by a gated nonlinearity (``e3nn.nn.Gate``: SiLU on even scalars, tanh on odd ones, sigmoid
    gates on l > 0 features) with a residual connection when the irreps match; a last
    convolution to one ``1o`` vector per particle, from which the per-configuration mean is
    subtracted:

    .. math:: v_i = u_i - \\frac{1}{n} \\sum_k u_k, \\qquad u = \\mathrm{Conv}_{1o}(h_L).

    Every map is written with e3nn irreps, so v(x Q^T) = v(x) Q^T for all Q in O(3) (proper
    vectors ``1o`` are odd under inversion), v(x + c) = v(x), and v is permutation-equivariant
    and centre-of-mass free.  ``irreps_in``/``irreps_out`` are set so that
    ``e3nn.util.test.assert_equivariant`` can check the model (x as ``"cartesian_points"``).

    Graphs as in :class:`~geoflow.nn.EGNNVelocity`: fully connected (``cutoff=None``) or a
    ``torch.cdist`` radius graph with a smooth envelope.  Distances are embedded with
    ``num_basis`` Gaussians on [0, ``max_radius``]; pairs much farther apart than
    ``max_radius`` get a near-zero embedding, so set it to the size of the system
    (default 5, e.g. LJ55 in reduced units).

    Args:
        irreps_hidden: node feature irreps (default ``"32x0e + 8x1o + 8x1e + 4x2e"``).
        layers: number of gated convolutions (default 3).
        lmax: maximum degree of the spherical harmonics of r_ij (default 2).
        num_basis: number of radial basis functions (default 16).
        max_radius: range of the radial basis (default 5.0).
        radial_hidden: width of the radial MLP (default 64).
        time_dim: size of the sinusoidal time embedding (default 32).
        cond_dim: number of per-particle features (0: unconditional); ``cond`` is an int tensor
            of types in [0, cond_dim) (one-hot encoded inside) or float features.
        cutoff: None (fully connected) or the radius of the neighbour graph.
        taper: fraction of the cutoff over which messages fade to zero (default 0.2).

    Shapes: dense ``x`` ``(B, n, 3)``, ``t`` ``(B,)`` or scalar, ``cond`` ``(B, n)`` int or
    ``(B, n, cond_dim)`` -> ``(B, n, 3)``; PyG ``Data``/``Batch`` with ``pos`` ``(N, 3)``,
    ``batch`` ``(N,)``, optional ``x`` used as ``cond``, ``t`` ``(num_graphs,)`` -> ``(N, 3)``.
    """

    def __init__(
        self,
        *,
        irreps_hidden: str = "32x0e + 8x1o + 8x1e + 4x2e",
        layers: int = 3,
        lmax: int = 2,
        num_basis: int = 16,
        max_radius: float = 5.0,
        radial_hidden: int = 64,
        time_dim: int = 32,
        cond_dim: int = 0,
        cutoff: Optional[float] = None,
        taper: float = 0.2,
    ):
        super().__init__()
        try:
            hidden = o3.Irreps(irreps_hidden).simplify()
        except (ValueError, AssertionError, TypeError) as exc:
            raise ValueError(f"`irreps_hidden` must be an e3nn Irreps string like '16x0e + 8x1o', got {irreps_hidden!r}") from exc
        n_scalars = sum(mul for mul, ir in hidden if ir == o3.Irrep("0e"))
        if n_scalars == 0:
            raise ValueError(f"`irreps_hidden` needs even scalars (0e) for the time embedding, got {irreps_hidden!r}")
        layers = _pos_int("layers", layers)
        lmax = _pos_int("lmax", lmax)
        num_basis = _pos_int("num_basis", num_basis, 2)
        radial_hidden = _pos_int("radial_hidden", radial_hidden)
        time_dim = _pos_int("time_dim", time_dim, 2)
        if time_dim % 2:
            raise ValueError(f"`time_dim` must be even, got {time_dim}")
        cond_dim = _pos_int("cond_dim", cond_dim, 0)
        if isinstance(max_radius, bool) or not isinstance(max_radius, (int, float)) or not (math.isfinite(max_radius) and max_radius > 0):
            raise ValueError(f"`max_radius` must be a finite number > 0, got {max_radius!r}")
        cutoff, taper = check_graph_options(cutoff, taper)

        # e3nn computes its Clebsch-Gordan buffers in the default dtype: build in float64 and keep
        # those exact values, so that model.double() is equivariant to round-off (1e-16), not to
        # float32 precision (1e-7) as a float32 build cast to float64 would be.
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self._build(hidden, n_scalars, layers, lmax, num_basis, radial_hidden, time_dim, cond_dim)
        finally:
            torch.set_default_dtype(prev)
        self._exact_buffers = {k: b.detach().clone() for k, b in self.named_buffers() if b.is_floating_point()}
        self.to(prev)
        self.irreps_hidden = hidden
        #: For ``e3nn.util.test.assert_equivariant`` (positions in, one vector per particle out).
        self.irreps_in = ["cartesian_points"]
        self.irreps_out = [o3.Irreps("1x1o")]
        self.num_basis = num_basis
        self.max_radius = float(max_radius)
        self.cond_dim = cond_dim
        self.cutoff = cutoff
        self.taper = taper
        self.config = dict(irreps_hidden=str(hidden), layers=layers, lmax=lmax, num_basis=num_basis,
                           max_radius=float(max_radius), radial_hidden=radial_hidden, time_dim=time_dim,
                           cond_dim=cond_dim, cutoff=cutoff, taper=taper)

    def _build(self, hidden, n_scalars, layers, lmax, num_basis, radial_hidden, time_dim, cond_dim):
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.embed = nn.Linear(time_dim + cond_dim, n_scalars)
        irreps = o3.Irreps(f"{n_scalars}x0e")
        self.convs = nn.ModuleList()
        self.gates = nn.ModuleList()
        self._residual = []
        for _ in range(layers):
            gate = _gate(hidden)
            self.convs.append(TFNLayer(irreps, self.irreps_sh, gate.irreps_in, num_basis=num_basis, radial_hidden=radial_hidden))
            self.gates.append(gate)
            self._residual.append(irreps == gate.irreps_out)
            irreps = gate.irreps_out
        self.out = TFNLayer(irreps, self.irreps_sh, "1x1o", num_basis=num_basis, radial_hidden=radial_hidden)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        with torch.no_grad():
            for k, exact in getattr(self, "_exact_buffers", {}).items():
                b = self.get_buffer(k)
                if b.dtype == torch.float64:
                    b.copy_(exact.to(device=b.device, dtype=torch.float64))
        return out

    def forward(self, x, t, cond=None):
        w = self.embed.weight
        g = as_flat_graph(x, t, cond, cond_dim=self.cond_dim, dtype=w.dtype, device=w.device, where="TFNVelocity", dim=3)
        edge_index = build_edges(g, self.cutoff)
        src, dst = edge_index
        rel = g.pos[src] - g.pos[dst]
        dist = sqrt_safe((rel * rel).sum(-1, keepdim=True))
        edge_sh = self.sh(rel)
        edge_emb = soft_one_hot_linspace(
            dist[:, 0], 0.0, self.max_radius, self.num_basis, basis="gaussian", cutoff=False
        ).to(w.dtype)
        weight = envelope(dist, self.cutoff, self.taper)
        ones = torch.ones_like(dist) if weight is None else weight
        deg = torch.zeros(g.pos.shape[0], 1, dtype=w.dtype, device=w.device).index_add_(0, dst, ones)
        norm = deg.clamp_min(1.0).sqrt()
        h = [self.time_embed(g.t).to(w.dtype)]
        if g.feats is not None:
            h.append(g.feats)
        h = self.embed(torch.cat(h, dim=-1))
        for conv, gate, residual in zip(self.convs, self.gates, self._residual):
            out = gate(conv(h, edge_index, edge_sh, edge_emb, weight, norm))
            h = out + h if residual else out
        u = self.out(h, edge_index, edge_sh, edge_emb, weight, norm)
        return g.unflatten(g.remove_mean(u))
