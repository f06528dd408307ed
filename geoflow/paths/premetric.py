"""Premetric conditional flows for general geometries (Chen & Lipman 2023)."""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from manifolds import Manifold, Mesh

from ._validate import check_on_manifold, check_pair, check_path_args
from .path_sample import PathSample
from .schedulers import Scheduler

__all__ = ["PremetricPath", "TAIL_RATIO"]

#: Ratio of the distances to x1 of successive tail points of :meth:`PremetricPath.solve_grid`.
TAIL_RATIO = 0.3


class PremetricPath:
    """Premetric conditional flow (Chen & Lipman 2023, "Flow Matching on General Geometries", eqs. 13-14).

    The conditional flow x_t = psi_t(x0 | x1) moves x0 so that the premetric to x1 shrinks as
    d(x_t, x1) = kappa~(t) d(x0, x1), kappa~(t) = 1 - kappa(t), along the steepest descent of d:

    .. math::
        u_t(x \\mid x_1) = \\frac{d \\log \\tilde\\kappa(t)}{dt}\\, d(x, x_1)\\,
            \\frac{\\nabla_x d(x, x_1)}{\\lVert \\nabla_x d(x, x_1) \\rVert_g^2}
          = -\\frac{\\dot\\kappa(t)}{1 - \\kappa(t)}\\, d(x, x_1)\\, \\frac{g}{|g|^2},
          \\qquad g = \\nabla_x d(x, x_1)

    (kappa_t = alpha_t of the scheduler).  There is no closed form: x_t is obtained by
    integrating the flow from x0, in the variable s = kappa, with ``steps`` projected Euler
    steps (batched; each sample takes ``steps`` steps of its own size h = kappa(t) / steps):

    .. math::
        x_{k+1} = \\exp_{x_k}\\Big(-\\frac{h}{1 - s_k}\\, d(x_k, x_1)\\, \\frac{g_k}{|g_k|^2}\\Big), \\qquad s_k = k h

    (``manifold.expmap``; on a :class:`manifolds.Mesh` the projected step projx(x + u), cheaper
    than ``Mesh.expmap``'s walk over the faces and enough for the path's own accuracy, with the
    closest face taken among the candidates of ``Mesh.locate(..., certify=False)``).  In
    this form Euler is exact for the distance when d is locally linear along the step:
    d_{k+1} = d_k (1 - s_{k+1}) / (1 - s_k), so d(x_t, x1) = kappa~(t) d(x0, x1) holds to second
    order and the last step of a t = 1 sample is a Newton step onto x1; h / (1 - s_k) <= 1,
    so nothing is singular.  Samples with kappa(t) = 1 return x1 exactly, kappa(t) = 0 x0.

    The returned velocity is the flow's velocity on the exact path, where d(x_t, x1) / kappa~(t)
    = d(x0, x1): dx_t = -kappa'(t) d(x0, x1) g / |g|^2 at the simulated x_t (Chen & Lipman's own
    implementation uses the same form).  Along it the premetric falls at exactly the rate of the
    identity, <g, dx_t> = -kappa'(t) d(x0, x1).  The other form, -kappa'/kappa~ d(x_t, x1) g / |g|^2,
    equals it on the exact path but divides the small path error of d(x_t, x1) by kappa~(t): with
    8 steps on the bunny a few samples in a thousand near t = 1 got targets 10-60x too large, and
    such heavy tails dominated the regression loss.  Where x_t == x1 (gradient zero) the gradient
    of the last iterate is used, so values are finite everywhere.

    On a :class:`manifolds.Mesh` with a spectral premetric (and ``premetric=None``) distances
    and gradients come in closed form from the barycentric interpolation of the spectral
    embedding: d = |E(x) - E(x1)|, g = sum_i <E(v_i), E(x) - E(x1)> grad b_i(x) / d, one
    closest-point search per step.  Any other premetric is differentiated with autograd and
    its gradient projected with ``proju``.

    Args:
        manifold: a :class:`manifolds.Manifold`.
        premetric: None (``manifold.dist``), on a Mesh a premetric name (``"biharmonic"``,
            ``"diffusion"``, ``"geodesic"``), or a callable ``d(x, y) -> (batch,)``,
            differentiable in x.
        scheduler: kappa_t = alpha_t with alpha_0 = 0, alpha_1 = 1 (default CondOT: kappa_t = t).
        steps: number of projected Euler steps per sample (default 8; see the benchmark and
            tests for the error against a 512-step solve).
        tail: extra steps of :meth:`solve_grid` (so of :meth:`sample_times`) in the last grid
            interval, at s = 1 - q^i / steps (i = 1..tail, q = ``TAIL_RATIO`` = 0.3), before the
            final Newton step (default 0).  The uniform grid's last steps reduce d by 1/3, 1/2
            and 1 of itself, which converges only where d is linear over that scale: on Spot
            with the diffusion premetric 23.6 % of 32-step paths ended more than 2 % of the mesh
            size from x1, 1.8 % with a tail of 6 (``benchmarks/mesh_path_ends.py``).  States and
            samples below s = 1 - 1/steps are unaffected.
        validate: check x0 and x1 lie on the manifold in :meth:`sample` (default True).

    Shapes: x0, x1 ``(batch, *point_shape)``; t ``(batch,)``.
    """

    def __init__(
        self,
        manifold: Manifold,
        premetric: Union[None, str, Callable] = None,
        scheduler: Optional[Scheduler] = None,
        *,
        steps: int = 8,
        tail: int = 0,
        validate: bool = True,
    ):
        scheduler = check_path_args("PremetricPath", manifold, scheduler)
        is_mesh = isinstance(manifold, Mesh)
        if isinstance(premetric, str):
            if not is_mesh:
                raise ValueError(f"a premetric name ({premetric!r}) needs a manifolds.Mesh; pass a callable d(x, y) instead")
            from manifolds.mesh import PREMETRICS

            if premetric not in PREMETRICS:
                raise ValueError(f"`premetric` must be one of {list(PREMETRICS)}, a callable or None, got {premetric!r}")
        elif premetric is not None and not callable(premetric):
            raise TypeError(f"`premetric` must be None, a premetric name or a callable d(x, y), got {type(premetric).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"`steps` must be an int, got {type(steps).__name__} {steps!r}")
        if steps < 1:
            raise ValueError(f"`steps` must be >= 1, got {steps}")
        if isinstance(tail, bool) or not isinstance(tail, int):
            raise TypeError(f"`tail` must be an int, got {type(tail).__name__} {tail!r}")
        if tail < 0:
            raise ValueError(f"`tail` must be >= 0, got {tail}")
        if not isinstance(validate, bool):
            raise TypeError(f"`validate` must be a bool, got {validate!r}")
        self.manifold = manifold
        self.premetric = premetric
        self.scheduler = scheduler
        self.steps = steps
        self.tail = tail
        self.validate = validate
        name = premetric if isinstance(premetric, str) else (manifold.premetric if is_mesh and premetric is None else None)
        self._spectral = name if (is_mesh and name in ("biharmonic", "diffusion")) else None
        self._mesh = is_mesh

    def __repr__(self) -> str:
        p = "" if self.premetric is None else f", premetric={self.premetric!r}"
        tail = f", tail={self.tail}" if self.tail else ""
        return f"PremetricPath({self.manifold!r}{p}, {self.scheduler!r}, steps={self.steps}{tail})"

    def s_grid(self, steps: Optional[int] = None, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """The s-grid of :meth:`solve_grid`: j / n for j < n, then 1 - q^i / n (i = 1..tail), then 1."""
        n = self.steps if steps is None else steps
        s = torch.arange(n, dtype=torch.float64) / n
        tail = 1 - TAIL_RATIO ** torch.arange(1, self.tail + 1, dtype=torch.float64) / n
        return torch.cat([s, tail, torch.ones(1, dtype=torch.float64)]).to(dtype=dtype, device=device)

    # ------------------------------------------------------------ premetric
    def distance(self, x: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The premetric d(x, x1), shape ``(batch,)``."""
        if self.premetric is None:
            return self.manifold.dist(x, x1)
        if isinstance(self.premetric, str):
            return self.manifold.dist(x, x1, premetric=self.premetric)
        return self.premetric(x, x1)

    def dist_and_grad(self, x: torch.Tensor, x1: torch.Tensor, *, _face=None, _e1=None):
        """d(x, x1) ``(batch,)`` and its Riemannian gradient in x ``(batch, *point_shape)`` (tangent at x)."""
        if self._spectral is not None:
            m = self.manifold
            E = m._table(self._spectral, x.dtype, x.device)
            F = m._table("F", None, x.device)
            e1 = m.spectral_embedding(x1, self._spectral) if _e1 is None else _e1
            face, b = m.barycentric(x, _face)
            Ev = E[F[face]]  # (B, 3, K)
            r = (b.unsqueeze(-1) * Ev).sum(-2) - e1
            d = r.norm(dim=-1)
            w = (Ev @ r.unsqueeze(-1)).squeeze(-1) / torch.where(d > 0, d, 1.0).unsqueeze(-1)  # (B, 3)
            G = m._table("bgrad", x.dtype, x.device)[face]  # (B, 3, 3): grad b_i
            g = (w.unsqueeze(-1) * G).sum(-2)
            return d, torch.where((d > 0).unsqueeze(-1), g, 0.0)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            d = self.distance(xr, x1.detach())
            (g,) = torch.autograd.grad(d.sum(), xr)
        if self._mesh:  # the in-face gradient: the path moves inside the faces (projected steps)
            face, _ = self.manifold.locate(x)
            n = self.manifold._table("normals", g.dtype, g.device)[face]
            return d.detach(), g - (g * n).sum(-1, keepdim=True) * n
        return d.detach(), self.manifold.proju(x, g)

    def _step_dir(self, d, g):
        """d g / |g|^2 (0 where g == 0), shape of g."""
        k = self.manifold.ndim
        g2 = (g * g).reshape(g.shape[0], -1).sum(-1)
        scale = torch.where(g2 > 0, d / torch.where(g2 > 0, g2, 1.0), 0.0)
        return scale.reshape(scale.shape + (1,) * k) * g

    def _move(self, x, u):
        """expmap(x, u), and on a Mesh also the face of the result (saves one closest-point search)."""
        m = self.manifold
        if self._mesh:
            y = x + u
            face, _ = m.locate(y, certify=False)  # a surface point near y, not a certified closest one
            V = m._table("V", x.dtype, x.device)
            tri = V[m._table("F", None, x.device)[face]]
            from manifolds.mesh import closest_point_on_triangles

            return closest_point_on_triangles(y, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]), face
        return m.expmap(x, u), None

    # --------------------------------------------------------------- sample
    @torch.no_grad()
    def solve(self, x0: torch.Tensor, x1: torch.Tensor, kappa: torch.Tensor, steps: Optional[int] = None):
        """Integrate the conditional flow from x0 to s = kappa (per sample).

        Returns ``(x, d0, last)``: the end points, d(x0, x1) ``(batch,)`` and the last iterate
        before the end (for the velocity guard at x == x1).
        """
        n = self.steps if steps is None else steps
        k = self.manifold.ndim
        e1 = self.manifold.spectral_embedding(x1, self._spectral) if self._spectral is not None else None
        states, _, d0 = self._euler(x0, x1, kappa / n, n, e1)
        x, last = states[-1], states[-2]
        shape = kappa.shape + (1,) * k
        x = torch.where((kappa <= 0).reshape(shape), x0, x)
        return torch.where((kappa >= 1).reshape(shape), x1, x), d0, last

    @torch.no_grad()
    def solve_grid(self, x0: torch.Tensor, x1: torch.Tensor, steps: Optional[int] = None):
        """The whole conditional flow from x0 to x1 on the grid :meth:`s_grid` (s_j = j / n, n = ``steps``,
        default ``self.steps``, then the ``tail`` points, then 1).

        Returns ``(states, faces, d0, e1, face1)``: ``states`` ``(n + 1 + tail, batch, *point_shape)``
        with states[0] = x0 and states[j] the flow at s = grid[j] (the last is the Newton step onto
        x1); on a Mesh ``faces`` ``(n + 1 + tail, batch)`` holds each state's face and ``face1``
        x1's (else None); ``d0`` = d(x0, x1) ``(batch,)``; ``e1`` x1's spectral embedding (or None).
        """
        n = self.steps if steps is None else steps
        m = self.manifold
        e1 = face1 = None
        if self._spectral is not None:
            face1, _ = m.locate(x1)
            e1 = m.spectral_embedding(x1, self._spectral, face=face1)
        grid = self.s_grid(n, dtype=x0.dtype, device=x0.device)
        states, faces, d0 = self._euler(x0, x1, None, grid.numel() - 1, e1, grid=grid)
        return torch.stack(states), (torch.stack(faces) if self._mesh else None), d0, e1, face1

    def _euler(self, x0, x1, h, n, e1, *, grid=None):
        """n projected Euler steps of size h ``(batch,)`` in s from x0 (step i: c = h / (1 - s_i) <= 1),
        or along ``grid`` (s_0 = 0 < ... < s_n = 1: c = (s_{i+1} - s_i) / (1 - s_i)).

        Returns ``(states, faces, d0)``: the n + 1 iterates (x0 first), on a Mesh their faces (else
        Nones) and d(x0, x1); x0 is located once, and the first dist_and_grad reuses its face.
        """
        m, k = self.manifold, self.manifold.ndim
        states, faces = [x0], [m.locate(x0)[0] if self._mesh else None]
        d0 = None
        for i in range(n):
            x, face = states[-1], faces[-1]
            d, g = self.dist_and_grad(x, x1, _face=face, _e1=e1)
            d0 = d if d0 is None else d0
            c = h / (1 - i * h) if grid is None else ((grid[i + 1] - grid[i]) / (1 - grid[i])).expand(x.shape[:1])
            x, face = self._move(x, -c.reshape(c.shape + (1,) * k) * self._step_dir(d, g))
            states.append(x)
            faces.append(face)
        return states, faces, d0

    @staticmethod
    def grid_rows(grid, rows):
        """Rows ``rows`` (an index tensor or a slice) of a :meth:`solve_grid` result: the grid of those pairs.

        Simulating many pairs in one :meth:`solve_grid` call and handing each step its rows
        (``sample_times(..., grid=grid_rows(grid, rows))``) gives each pair the path it would
        get alone (the rows do not interact) at a fraction of the cost: the Euler steps'
        closest-point searches cost ~3.6 ms per pair for 32 pairs and ~0.6 ms per pair for 512
        on the bunny (what :class:`geoflow.train.Trainer` does with ``premetric_chunk``).
        """
        states, faces, d0, e1, face1 = grid
        return (states[:, rows], None if faces is None else faces[:, rows], d0[rows],
                None if e1 is None else e1[rows], None if face1 is None else face1[rows])

    @torch.no_grad()
    def sample_times(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, *, grid=None) -> PathSample:
        """Several times on each conditional path: one simulation per pair, reused for all its times.

        Each pair's flow is integrated once to s = 1 on the grid s_j = j / n (:meth:`solve_grid`,
        n = ``steps``, plus the ``tail`` points in the last interval); x_t for kappa(t) in
        [s_j, s_{j+1}) is one more projected Euler step of size h = kappa(t) - s_j <= 1 / n from
        the grid state s_j (the same step as :meth:`solve`'s,
        c = h / (1 - s_j)), and the velocity is :meth:`sample`'s at that point.  The path costs n
        closest-point searches per pair plus one per time instead of n + 2 per time, which is
        what makes simulation-based training on a mesh affordable with several times per pair.

        ``grid``: these pairs' :meth:`solve_grid` result (``solve_grid(x0, x1)``, or rows of a
        larger call through :meth:`grid_rows`), to reuse a simulation done in advance; default
        None: simulate here.  It is checked for its shapes, not recomputed.

        Shapes: x0, x1 ``(pairs, *point_shape)``, t ``(pairs, r)``; the returned sample has
        ``pairs * r`` rows, pair-major (row p r + i is pair p at time t[p, i]; x0 and x1 repeated).
        """
        m, k = self.manifold, self.manifold.ndim
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] < 1:
            raise ValueError("`t` must be a tensor of shape (pairs, r) with r >= 1 times per pair, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        check_pair(x0, x1, t[:, 0], ndim=m.ndim, finite=False)  # types, shapes, devices and t.shape[0]
        r = t.shape[1]
        tf = check_pair(x0[:1].expand(t.numel(), *x0.shape[1:]), x1[:1].expand(t.numel(), *x1.shape[1:]),
                        t.reshape(-1), ndim=m.ndim, finite=False)  # every time in [0, 1]
        ok, reason = m._check_shape(x0.shape, "x0")
        if not ok:
            raise ValueError(reason)
        if self.validate:
            check_on_manifold(m, x0, x1, where="PremetricPath.sample_times")
        kappa, d_kappa = self.scheduler.kappa(tf)
        kappa = kappa.clamp(0.0, 1.0)
        if grid is None:
            grid = self.solve_grid(x0, x1)
        else:
            self._check_grid(grid, x0)
        states, faces, d0, e1, face1 = grid
        pair = torch.arange(x0.shape[0], device=x0.device).repeat_interleave(r)
        sg = self.s_grid(dtype=kappa.dtype, device=kappa.device)
        j = (torch.searchsorted(sg, kappa, right=True) - 1).clamp(0, sg.numel() - 2)  # s_j <= kappa < s_{j+1}
        xs, x1r, d0r = states[j, pair], x1[pair], d0[pair]
        fs = faces[j, pair] if faces is not None else None
        e1r = e1[pair] if e1 is not None else None
        s_j = sg[j]
        c = (kappa - s_j) / (1 - s_j)
        shape = kappa.shape + (1,) * k
        d, g = self.dist_and_grad(xs, x1r, _face=fs, _e1=e1r)
        x_t, face_t = self._move(xs, -c.reshape(shape) * self._step_dir(d, g))
        at0, at1 = (kappa <= 0), (kappa >= 1)
        x_t = torch.where(at0.reshape(shape), x0[pair], x_t)
        x_t = torch.where(at1.reshape(shape), x1r, x_t)
        if face_t is not None:
            face_t = torch.where(at0, faces[0, pair], torch.where(at1, face1[pair] if face1 is not None else face_t, face_t))
            if face1 is None:  # a non-spectral premetric: locate the points moved onto x1
                face_t = torch.where(at1, m.locate(x1r)[0], face_t)
        # the step started from the grid state xs: its gradient guards x_t == x1
        dx_t = self._velocity(x_t, x1r, xs, d0r, d_kappa, face=face_t, last_face=fs, e1=e1r)
        return PathSample(x_t=x_t, dx_t=dx_t, t=tf, x0=x0[pair], x1=x1r)

    def _check_grid(self, grid, x0):
        """``grid`` must look like ``self.solve_grid(x0, x1)``'s result."""
        n, p = self.steps + self.tail, x0.shape[0]
        if not (isinstance(grid, tuple) and len(grid) == 5):
            raise TypeError("`grid` must be the 5-tuple that PremetricPath.solve_grid returns, got "
                            f"{type(grid).__name__}")
        states, faces, d0, e1, face1 = grid
        want = (n + 1, *x0.shape)
        if not isinstance(states, torch.Tensor) or tuple(states.shape) != want:
            got = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
            raise ValueError(f"`grid` states must have shape {want} (steps + tail + 1 = {n + 1} states of the {p} pairs), "
                             f"got {got}")
        if not isinstance(d0, torch.Tensor) or tuple(d0.shape) != (p,):
            raise ValueError(f"`grid` d0 must have shape ({p},), got "
                             f"{tuple(d0.shape) if isinstance(d0, torch.Tensor) else type(d0).__name__}")
        if self._mesh and (not isinstance(faces, torch.Tensor) or tuple(faces.shape) != (n + 1, p)):
            raise ValueError(f"`grid` faces must have shape ({n + 1}, {p}) on a Mesh, got "
                             f"{tuple(faces.shape) if isinstance(faces, torch.Tensor) else faces!r}")
        if self._spectral is not None and (e1 is None or face1 is None or e1.shape[0] != p or face1.shape != (p,)):
            raise ValueError(f"`grid` must carry x1's spectral embedding and faces for the {p} pairs "
                             f"(the {self._spectral} premetric)")

    @torch.no_grad()
    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """Draw x_t of the conditional flow from x0 towards x1 and its velocity dx_t = u_t(x_t | x1)."""
        m = self.manifold
        t = check_pair(x0, x1, t, ndim=m.ndim, finite=False)
        ok, reason = m._check_shape(x0.shape, "x0")
        if not ok:
            raise ValueError(reason)
        if self.validate:
            check_on_manifold(m, x0, x1, where="PremetricPath.sample")
        kappa, d_kappa = self.scheduler.kappa(t)
        kappa = kappa.clamp(0.0, 1.0)
        x_t, d0, last = self.solve(x0, x1, kappa)
        return PathSample(x_t=x_t, dx_t=self._velocity(x_t, x1, last, d0, d_kappa), t=t, x0=x0, x1=x1)

    def _velocity(self, x_t, x1, last, d0, d_kappa, *, face=None, last_face=None, e1=None):
        """The exact-path velocity -kappa'(t) d(x0, x1) g / |g|^2 at x_t, g = grad d(., x1) there.

        Where x_t == x1 (t = 1, or x0 == x1) g vanishes: the gradient at ``last``, the iterate the
        final step started from, is used instead.  ``face``, ``last_face``, ``e1``: known faces of
        x_t and last and x1's spectral embedding (saves closest-point searches).
        """
        m, k = self.manifold, self.manifold.ndim
        _, g = self.dist_and_grad(x_t, x1, _face=face, _e1=e1)
        g2 = (g * g).reshape(g.shape[0], -1).sum(-1)
        flat = (g2 <= 0).reshape(g2.shape + (1,) * k)
        if bool(flat.any()):
            _, gl = self.dist_and_grad(last, x1, _face=last_face, _e1=e1)
            g = torch.where(flat, m.proju(x_t, gl), g)
        dx_t = -d_kappa.reshape(d_kappa.shape + (1,) * k) * self._step_dir(d0, g)
        if self._mesh:  # the premetric gradient lies in the face plane; the model's outputs in the smooth tangent plane
            dx_t = m.proju(x_t, dx_t)
        return dx_t
