"""A small U-Net velocity field for images (flat space)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .conditioning import ConditionalMixin, _check_spec
from .embedding import DEFAULT_TIME_MAX_FREQ, SinusoidalTimeEmbedding

__all__ = ["UNetVelocity"]


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + embedding (scale and shift), GroupNorm -> SiLU -> dropout -> conv3x3, + skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(self.act(h)))
        return h + self.skip(x)


class UNetVelocity(ConditionalMixin, nn.Module):
    """A small U-Net vector field v(x, t, cond) on images (Ronneberger et al. 2015; Ho et al. 2020).

    conv3x3 -> per level: ``num_res_blocks`` residual blocks (GroupNorm, SiLU, conv3x3; the
    embedding enters as a scale and shift after the second GroupNorm) then a stride-2 conv
    (not after the last level) -> two middle blocks -> per level in reverse: residual blocks on
    [h, skip] and a nearest-neighbour upsampling + conv3x3 -> GroupNorm, SiLU, conv3x3.  The
    embedding is e = MLP(sinusoidal(t)) + E(cond), with E a learned table of
    ``num_classes + 1`` rows (the last is the null label of classifier-free guidance) or a
    linear map of [vector, null flag] (see :mod:`geoflow.nn.conditioning`).

    Two levels (``channel_mults=(1, 2)``) suit 8x8 images; H and W must be divisible by
    2^(levels - 1).  The output is a velocity in R^(C x H x W) (flat space needs no projection).

    Args:
        in_channels: image channels C (default 1).
        base: channels of the first level (default 32).
        channel_mults: channel multiplier of each level (default ``(1, 2)``).
        num_res_blocks: residual blocks per level (default 1).
        time_dim: size of the sinusoidal time embedding (default 64); the embedding MLP has
            width ``4 * base``.
        time_max_freq: the embedding's highest frequency (see :class:`SinusoidalTimeEmbedding`).
        num_classes: if set, ``cond`` is an integer label in [0, num_classes) (``num_classes``
            is the null label; ``cond=None`` means null).
        cond_dim: if set, ``cond`` is a real vector of this size.
        groups: GroupNorm groups (at most; reduced to a divisor of the channels).
        dropout: dropout rate inside the residual blocks (default 0).

    Shapes: x ``(batch, C, H, W)``, t ``(batch,)`` or scalar, cond ``(batch,)`` (labels) or
    ``(batch, cond_dim)`` -> ``(batch, C, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        base: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        time_dim: int = 64,
        time_max_freq: float = DEFAULT_TIME_MAX_FREQ,
        num_classes: Optional[int] = None,
        cond_dim: Optional[int] = None,
        groups: int = 8,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("base", base), ("num_res_blocks", num_res_blocks),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}")
        if isinstance(time_dim, bool) or not isinstance(time_dim, int) or time_dim < 2 or time_dim % 2:
            raise ValueError(f"`time_dim` must be an even int >= 2, got {time_dim!r}")
        mults = tuple(channel_mults) if isinstance(channel_mults, (tuple, list)) else None
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"`channel_mults` must be a non-empty sequence of positive ints, got {channel_mults!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}")
        if num_classes is not None or cond_dim is not None:
            _check_spec(num_classes, cond_dim)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.cond_dim = cond_dim
        self.levels = len(mults)
        emb_dim = 4 * base
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim, time_max_freq), nn.Linear(time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.class_embed = nn.Embedding(num_classes + 1, emb_dim)
        elif cond_dim is not None:
            self.cond_embed = nn.Linear(cond_dim + 1, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        chans = [base * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [], base
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c, ch, emb_dim, groups, dropout))
                c = ch
                skips.append(c)
            self.down.append(blocks)
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(chans) - 1 else nn.Identity())
        self.mid = nn.ModuleList([_ResBlock(c, c, emb_dim, groups, dropout), _ResBlock(c, c, emb_dim, groups, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c + skips.pop(), ch, emb_dim, groups, dropout))
                c = ch
            self.up.append(blocks)
            self.upsample.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, chans[i - 1], 3, padding=1))
                if i > 0 else nn.Identity()
            )
            if i > 0:
                c = chans[i - 1]
        self.out = nn.Sequential(nn.GroupNorm(_groups(c, groups), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        self.config = dict(in_channels=in_channels, base=base, channel_mults=mults, num_res_blocks=num_res_blocks,
                           time_dim=time_dim, time_max_freq=float(time_max_freq), num_classes=num_classes, cond_dim=cond_dim, groups=groups,
                           dropout=dropout)

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`x` must have shape (batch, {self.in_channels}, H, W), got {got}")
        f = 2 ** (self.levels - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"image height and width must be divisible by {f} for {self.levels} levels, got {tuple(x.shape[2:])}"
            )
        batch = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"`t` must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        emb = self.time_embed[0](t).to(x.dtype)
        emb = self.time_embed[1:](emb)
        c = self._embed_cond_input(cond, batch, x.device, x.dtype)
        if self.num_classes is not None:
            emb = emb + self.class_embed(c)
        elif self.cond_dim is not None:
            emb = emb + self.cond_embed(c)
        h = self.conv_in(x)
        hs = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            h = up(h)
        return self.out(h)
