"""Tiny triangles on a mesh, to measure the area change (log-Jacobian) of a map of the surface."""

import torch


def tiny_triangles(m, x: torch.Tensor, h: float, generator: torch.Generator) -> torch.Tensor:
    """Corners x, x + h e1, x + h e2 of right triangles in the planes of x's faces, stacked: ``(3 n, 3)``.

    e1 is a random unit vector in the face plane (drawn from ``generator``), e2 = n_f x e1, so each
    triangle has area h^2 / 2.
    """
    face, _ = m.locate(x)
    nf = m.face_normals[face].to(x.dtype)
    e1 = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    e1 = e1 - (e1 * nf).sum(-1, keepdim=True) * nf
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    return torch.cat([x, x + h * e1, x + h * torch.linalg.cross(nf, e1, dim=-1)])


def log_area_change(y: torch.Tensor, h: float) -> torch.Tensor:
    """log(area of the image triangles / area h^2 / 2) for the images ``y`` ``(3 n, 3)`` of :func:`tiny_triangles`."""
    y0, y1, y2 = y.chunk(3)
    return torch.log(torch.linalg.cross(y1 - y0, y2 - y0, dim=-1).norm(dim=-1) / h**2)
