"""MLP velocity fields on any manifold."""

from __future__ import annotations

import torch
from torch import nn

from manifolds import Manifold

from .conditioning import ConditionalMixin, _check_spec
from .embedding import DEFAULT_TIME_MAX_FREQ, ManifoldFeatures, SinusoidalTimeEmbedding

__all__ = ["MLPVelocity"]

_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class MLPVelocity(ConditionalMixin, nn.Module):
    """A time-dependent MLP vector field on a manifold, v(x, t, cond) in T_x M.

    The input is [features(x), emb(t), emb(cond)] (manifold-aware features: sin/cos on tori,
    ambient coordinates otherwise); ``depth`` hidden layers of width ``hidden``; the output is
    reshaped to the point shape and projected onto the tangent space with ``manifold.proju``
    (Chen & Lipman 2023, Sec. 4).

    Args:
        manifold: the manifold the field lives on.
        hidden: width of the hidden layers (default 512).
        depth: number of hidden layers (default 6).
        time_dim: size of the sinusoidal time embedding (default 64).
        time_max_freq: its highest frequency (see :class:`SinusoidalTimeEmbedding`).
        activation: "silu" (default), "gelu", "relu", "tanh" or "softplus".
        num_classes: if set, ``cond`` is an integer label in [0, num_classes) embedded with a
            learned table (label ``num_classes`` is reserved as the "null" label for
            classifier-free guidance; ``cond=None`` means null).
        cond_dim: if set, ``cond`` is a real vector of this size, concatenated to the input
            together with a null flag (``cond=None`` or rows of zeros with flag 1 are the null
            condition; see :mod:`geoflow.nn.conditioning`).
        fourier_features: random Fourier features of the point appended to its features
            (default 0: none; see :class:`ManifoldFeatures`).
        fourier_scale: their frequency scale (cycles per unit of the coordinates; default 1).

    Shapes: x ``(batch, *point_shape)``, t ``(batch,)`` or scalar -> ``(batch, *point_shape)``.
    """

    def __init__(
        self,
        manifold: Manifold,
        *,
        hidden: int = 512,
        depth: int = 6,
        time_dim: int = 64,
        time_max_freq: float = DEFAULT_TIME_MAX_FREQ,
        activation: str = "silu",
        num_classes: int | None = None,
        cond_dim: int | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        if not isinstance(manifold, Manifold):
            raise TypeError(f"`manifold` must be a manifolds.Manifold, got {type(manifold).__name__}")
        for name, v in (("hidden", hidden), ("depth", depth), ("time_dim", time_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if num_classes is not None or cond_dim is not None:
            _check_spec(num_classes, cond_dim)
        self.manifold = manifold
        self.features = ManifoldFeatures(manifold, fourier_features, fourier_scale)
        self.time_embed = SinusoidalTimeEmbedding(time_dim, time_max_freq)
        self.num_classes = num_classes
        self.cond_dim = cond_dim
        extra = 0
        if num_classes is not None:
            self.class_embed = nn.Embedding(num_classes + 1, time_dim)
            extra = time_dim
        elif cond_dim is not None:
            extra = cond_dim + 1  # the vector and its null flag
        d_in = self.features.out_dim + time_dim + extra
        d_out = int(torch.Size(manifold.point_shape).numel())
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), act()]
            d = hidden
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)
        self.config = dict(hidden=hidden, depth=depth, time_dim=time_dim, time_max_freq=float(time_max_freq), activation=activation,
                           num_classes=num_classes, cond_dim=cond_dim, fourier_features=fourier_features,
                           fourier_scale=float(fourier_scale))

    @property
    def _first_weight(self) -> torch.Tensor:
        return self.net[0].weight

    def forward(self, x: torch.Tensor, t, cond=None, *, project: bool = True) -> torch.Tensor:
        m = self.manifold
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"MLPVelocity: `x` must be a tensor, got {type(x).__name__}")
        if x.dim() < m.ndim or tuple(x.shape[x.dim() - m.ndim :]) != tuple(m.point_shape):
            raise ValueError(f"MLPVelocity on {m!r}: `x` must have shape (batch, *{tuple(m.point_shape)}), got {tuple(x.shape)}")
        w = self._first_weight
        if x.dtype != w.dtype:
            raise TypeError(f"MLPVelocity: `x` has dtype {x.dtype} but the parameters are {w.dtype}; use model.to({x.dtype}) or cast x")
        if x.device != w.device:
            raise ValueError(f"MLPVelocity: `x` is on {x.device} but the parameters are on {w.device}; move one of them")
        batch = x.shape[: x.dim() - m.ndim]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(batch)
        h = [self.features(x), self.time_embed(t).to(x.dtype)]
        if len(batch) != 1 and self.is_conditional:
            raise ValueError(f"a conditional MLPVelocity needs x of shape (batch, *point_shape), got {tuple(x.shape)}")
        c = self._embed_cond_input(cond, batch[0] if batch else 1, x.device, x.dtype)
        if self.num_classes is not None:
            h.append(self.class_embed(c).to(x.dtype))
        elif self.cond_dim is not None:
            h.append(c)
        out = self.net(torch.cat(h, dim=-1)).reshape(x.shape)
        return m.proju(x, out) if project else out
