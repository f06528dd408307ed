"""The manifolds every generic test runs over (one place to add a new one)."""

import manifolds as M


_CASES = {
    "euclidean3": lambda: M.Euclidean(3),
    "euclidean_shape2x3": lambda: M.Euclidean(shape=(2, 3), std=2.0),
    "comfree4x2": lambda: M.CoMFree(4, 2),
    "comfree5x3_std1.5": lambda: M.CoMFree(5, 3, std=1.5),
    "sphere1": lambda: M.Sphere(1),
    "sphere2": lambda: M.Sphere(2),
    "sphere5": lambda: M.Sphere(5),
    "torus2": lambda: M.FlatTorus(2),
    "torus7": lambda: M.FlatTorus(7),
    "poincare2": lambda: M.PoincareBall(2),
    "poincare3_c0.5": lambda: M.PoincareBall(3, c=0.5),
    "lorentz2": lambda: M.Lorentz(2),
    "lorentz3_k2": lambda: M.Lorentz(3, k=2.0),
    "spd2_affine": lambda: M.SPD(2),
    "spd3_affine": lambda: M.SPD(3),
    "spd3_logeuclidean": lambda: M.SPD(3, metric="log-euclidean"),
    "so3": lambda: M.SO3(),
    "product_sphere_torus_euclid": lambda: M.Product(M.Sphere(2), M.FlatTorus(2), M.Euclidean(1)),
}

CASES = dict(_CASES)
