"""Tests of manifolds.spd: SPD(n) with the affine-invariant and log-Euclidean metrics, and the
symmetric matrix functions with Daleckii-Krein derivatives.

References are independent of the code under test: scipy.linalg (logm, expm, sqrtm, and
block-matrix Frechet derivatives), torch.linalg.matrix_exp, mpmath divided differences,
finite differences (gradcheck) and closed forms.
"""

import functools
import math
import warnings

import geoopt
import numpy as np
import pytest
import scipy.linalg as sla
import torch

import manifolds.spd as spd
from manifolds.spd import SPD, sym_expm, sym_logm, sym_sqrtm
from manifolds.testing import assert_manifold, check_normalised

from ..conftest import TOL

METRICS = ["affine", "log-euclidean"]
F64 = torch.float64


@pytest.fixture(params=["jacobi", "lapack"])
def kernel(request, monkeypatch):
    """Run a test through the batched Jacobi eigensolver or through torch.linalg.eigh."""
    monkeypatch.setattr(spd, "_SMALL_BATCH", 1 if request.param == "jacobi" else 10**9)
    return request.param


def rand_spd(n, batch=(), *, dtype=F64, gen=None, log_cond=3.0, eigs=None):
    """Random SPD matrices Q diag(lambda) Q^T with log-uniform eigenvalues (condition <= e^log_cond)."""
    gen = gen or torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=gen, dtype=F64))
    if eigs is None:
        lam = torch.exp(log_cond * (torch.rand(*batch, n, generator=gen, dtype=F64) - 0.5))
    else:
        lam = torch.as_tensor(eigs, dtype=F64).expand(*batch, n)
    return ((q * lam.unsqueeze(-2)) @ q.transpose(-1, -2)).to(dtype)


def rand_sym(n, batch=(), *, dtype=F64, gen=None, scale=1.0):
    gen = gen or torch.Generator().manual_seed(2)
    a = torch.randn(*batch, n, n, generator=gen, dtype=F64) * scale
    return (0.5 * (a + a.transpose(-1, -2))).to(dtype)


def _scipy(fn, m):
    with warnings.catch_warnings():  # logm's "result may be inaccurate" fires at error estimates ~1e-13
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.real(fn(m))


def np_apply(fn, x):
    """Apply a scipy matrix function to each matrix of a batch (real part)."""
    a = x.detach().to(F64).numpy()
    out = np.stack([_scipy(fn, m) for m in a.reshape(-1, *a.shape[-2:])]).reshape(a.shape)
    return torch.from_numpy(out)


def np_frechet(fn, p, e):
    """Frechet derivative L_f(P, E) from f([[P, E], [0, P]])[:n, n:] (Higham, Functions of Matrices, 3.2)."""
    n = p.shape[-1]
    ps, es = p.to(F64).numpy().reshape(-1, n, n), e.to(F64).numpy().reshape(-1, n, n)
    out = []
    for a, b in zip(ps, es):
        blk = np.block([[a, b], [np.zeros_like(a), a]])
        out.append(_scipy(fn, blk)[:n, n:])
    return torch.from_numpy(np.stack(out)).reshape(p.shape)


def affine_dist_ref(p, q):
    out = []
    for a, b in zip(p.to(F64).numpy(), q.to(F64).numpy()):
        s = np.linalg.inv(_scipy(sla.sqrtm, a))
        out.append(np.linalg.norm(_scipy(sla.logm, s @ b @ s), "fro"))
    return torch.tensor(out, dtype=F64)


def finite(*ts):
    return all(bool(torch.isfinite(t).all()) for t in ts)


# ------------------------------------------------------------------------ construction
def test_constructor_validation_and_attributes():
    with pytest.raises(ValueError, match="`n`"):
        SPD(0)
    with pytest.raises(TypeError, match="`n`"):
        SPD(2.5)
    with pytest.raises(ValueError) as exc:
        SPD(3, metric="euclidean")
    assert "'affine'" in str(exc.value) and "'log-euclidean'" in str(exc.value) and "'euclidean'" in str(exc.value)
    with pytest.raises(TypeError):
        SPD(3, "affine")  # metric is keyword-only
    for n in range(1, 5):
        m = SPD(n, metric="log-euclidean")
        assert m.dim == n * (n + 1) // 2 and m.point_shape == (n, n) and m.ndim == 2
    m = SPD(3)
    assert isinstance(m, geoopt.SymmetricPositiveDefinite)
    assert repr(m) == "SPD(n=3, metric='affine')"
    assert torch.equal(m.base_origin(dtype=F64), torch.eye(3, dtype=F64))
    assert set(spd.__all__) == {"SPD", "sym_expm", "sym_logm", "sym_sqrtm"}
    assert all(hasattr(spd, name) for name in spd.__all__)


# ------------------------------------------------------------------- matrix functions
@functools.lru_cache(maxsize=None)
def _matrix_function_refs(n):
    """Inputs and scipy references (scipy's logm costs milliseconds per matrix: computed once)."""
    p, s = rand_spd(n, (5,), log_cond=4.0), rand_sym(n, (5,))
    return p, s, {"logm": np_apply(sla.logm, p), "sqrtm": np_apply(sla.sqrtm, p), "expm": np_apply(sla.expm, s)}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_matrix_functions_match_scipy(kernel, dtype, n):
    p, s, refs = _matrix_function_refs(n)
    tol = 100 * TOL[dtype]
    got = {"logm": sym_logm(p.to(dtype)), "sqrtm": sym_sqrtm(p.to(dtype)), "expm": sym_expm(s.to(dtype))}
    for name, a in got.items():
        ref = refs[name]
        assert a.dtype == dtype and a.shape == ref.shape
        err = float(((a.to(F64) - ref).abs() / (1 + ref.abs())).max())
        assert err < tol, (name, err)


@pytest.mark.parametrize("grain", [None, 64], ids=["one_chunk", "many_chunks"])
def test_jacobi_eigensolver_accuracy(dtype, grain, monkeypatch):
    """Batched Jacobi vs LAPACK: eigenvalues, orthonormal vectors, reconstruction, repeated/tiny eigenvalues."""
    if grain is not None:  # chunks of 16 3x3 matrices: 100 = 6 * 16 + 4
        monkeypatch.setattr(spd, "_GRAIN", grain)
    cases = [
        rand_spd(3, (100,), log_cond=6.0),
        rand_sym(3, (100,)),
        rand_spd(3, (100,), eigs=[2.0, 2.0, 5.0]),
        torch.eye(3, dtype=F64).expand(100, 3, 3),
        rand_spd(4, (100,), eigs=[1e-6, 1e-3, 1.0, 1.0]),
    ]
    for s in cases:
        n = s.shape[-1]
        w, v = spd._jacobi_eigh(spd._bl(s.to(dtype), 1))
        w, v = w.movedim(0, -1).to(F64), v.movedim((0, 1), (-2, -1)).to(F64)
        ref = torch.linalg.eigvalsh(s)
        scale = s.abs().amax((-1, -2), keepdim=True).squeeze(-1)
        assert float(((w.sort(-1).values - ref).abs() / scale).max()) < 10 * torch.finfo(dtype).eps
        assert float((v.transpose(-1, -2) @ v - torch.eye(n, dtype=F64)).abs().max()) < 20 * torch.finfo(dtype).eps
        rec = (v * w.unsqueeze(-2)) @ v.transpose(-1, -2)
        assert float(((rec - s) / scale.unsqueeze(-1)).abs().max()) < 20 * torch.finfo(dtype).eps
    # relative accuracy of tiny eigenvalues of a positive definite matrix (Demmel & Veselic)
    p = rand_spd(3, (100,), eigs=[1e-12, 1e-6, 1.0])
    w, _ = spd._jacobi_eigh(spd._bl(p, 1))
    if dtype == F64:
        assert float((w.movedim(0, -1).sort(-1).values[:, 0] / 1e-12 - 1).abs().max()) < 1e-3


def _gradcheck_cases(n):
    """A batch: generic, identity, 3 I, repeated and nearly repeated eigenvalues."""
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    conj = lambda lam: q @ torch.diag(torch.tensor(lam, dtype=F64)) @ q.T  # noqa: E731
    eye = torch.eye(n, dtype=F64)
    return torch.stack(
        [rand_spd(n, gen=g), eye, 3.0 * eye, conj([1.0] * (n - 1) + [2.5]), conj([1.0 + 1e-9 * i for i in range(n)])]
    )


@pytest.mark.parametrize("fn", [sym_logm, sym_expm, sym_sqrtm], ids=["logm", "expm", "sqrtm"])
def test_matrix_function_gradcheck(kernel, fn):
    """First (reverse and forward mode) and second derivatives, including repeated eigenvalues.

    Full Jacobians through LAPACK's eigh; random projections (fast mode) through the Jacobi kernel,
    which feeds the same derivative code.
    """
    x = _gradcheck_cases(3).requires_grad_()
    fast = kernel == "jacobi"
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6, rtol=1e-5, check_forward_ad=True, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_torch_func_transforms_agree():
    """Hessians by forward-over-forward, reverse-over-reverse and mixed modes agree (2 I: repeated eigenvalue)."""
    y = torch.tensor([[1.5, 0.2], [0.2, 0.7]], dtype=F64)
    m = SPD(2)
    fs = [lambda a: sym_logm(a)[0, 1] * sym_logm(a)[1, 1] + sym_expm(a)[0, 0] ** 3, lambda a: m.dist(a, y) ** 2]
    for f in fs:
        for x in (2 * torch.eye(2, dtype=F64), y.flip(0).flip(1)):
            ref = torch.func.jacrev(torch.func.jacrev(f))(x)
            assert torch.allclose(torch.func.jacfwd(torch.func.jacfwd(f))(x), ref, atol=1e-12)
            assert torch.allclose(torch.func.jacfwd(torch.func.jacrev(f))(x), ref, atol=1e-12)
    out = torch.func.vmap(lambda a: m.logmap(a, y))(torch.stack([torch.eye(2, dtype=F64), y]))
    assert torch.allclose(out, m.logmap(torch.stack([torch.eye(2, dtype=F64), y]), y), atol=1e-12)


def test_matrix_function_gradient_is_finite_where_eigh_is_not():
    """torch.linalg.eigh's backward divides by lambda_i - lambda_j; ours does not."""
    x = torch.eye(3, dtype=F64, requires_grad=True)
    naive = lambda a: (lambda w, v: v @ torch.diag_embed(torch.log(w)) @ v.T)(*torch.linalg.eigh(a))  # noqa: E731
    g_naive = torch.autograd.grad((naive(x) ** 2).sum() + naive(x)[0, 1], x)[0]
    assert not finite(g_naive)  # the failure mode this module avoids
    g = torch.autograd.grad((sym_logm(x) ** 2).sum() + sym_logm(x)[0, 1], x)[0]
    # d logm at I is the identity map: gradient of |logm X|^2 is 0 at I, of logm(X)_01 is sym(E_01)
    expect = torch.zeros(3, 3, dtype=F64)
    expect[0, 1] = expect[1, 0] = 0.5
    assert torch.allclose(g, expect, atol=1e-12)


def test_third_order_derivative_raises():
    x = rand_spd(3).requires_grad_()
    (g,) = torch.autograd.grad(sym_logm(x).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g * g).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative order is not implemented"):
        torch.autograd.grad(h.sum(), x)


def test_divided_differences_against_mpmath():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    fs = {"exp": mp.exp, "log": mp.log, "sqrt": mp.sqrt}

    def dd(f, xs):  # divided difference of distinct (or equal) points via high-precision derivatives
        xs = [mp.mpf(float(x)) for x in xs]
        if len(set(xs)) < len(xs):
            return None
        return sum(f(xi) / mp.fprod([xi - xj for xj in xs if xj is not xi]) for xi in xs)

    pts = [(0.7, 0.7 + 3e-9), (2.0, 2.0 * (1 + 1e-5)), (1e-6, 3.0), (0.3, 0.3 + 0.02), (50.0, 1e-3)]
    triples = [(1.0, 1.0 + 1e-5, 1.0 + 2.5e-5), (0.5, 0.5 + 1e-3, 0.9), (1.3, 1.3 + 0.05, 1.3 + 0.07), (0.2, 4.0, 9.0)]
    for dtype in (torch.float32, F64):
        tol1 = 4 * torch.finfo(dtype).eps
        tol2 = 3e-5 if dtype == torch.float32 else 1e-11
        for kind, f in fs.items():
            for a, b in pts:
                if kind == "exp":
                    a, b = math.log(a), math.log(b)
                got = float(spd._dd1(kind, torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype), 1e-30))
                a32, b32 = float(torch.tensor(a, dtype=dtype)), float(torch.tensor(b, dtype=dtype))
                ref = dd(f, (a32, b32)) if a32 != b32 else mp.diff(f, mp.mpf(a32))
                assert abs(got / float(ref) - 1) < tol1, (kind, dtype, a, b, got, float(ref))
            for tri in triples:
                w = torch.tensor(tri, dtype=dtype)
                if kind == "exp":
                    w = torch.log(w)
                f3 = spd._dd2(kind, w, 1e-30)
                ref = dd(f, w.tolist())
                for i, j, k in [(0, 1, 2), (2, 0, 1), (1, 1, 1)]:
                    r = ref if len({i, j, k}) == 3 else mp.diff(f, mp.mpf(float(w[1])), 2) / 2
                    assert abs(float(f3[i, j, k]) / float(r) - 1) < tol2, (kind, dtype, tri, (i, j, k))


def test_logm_nearly_singular_float32():
    """Eigenvalues 1e-8 in float32 (below what eigh resolves; may come out negative): finite values and gradients."""
    for kern in (1, 10**9):
        spd._SMALL_BATCH, old = kern, spd._SMALL_BATCH
        try:
            p = rand_spd(3, (70,), eigs=[1e-8, 1e-8, 1.0], dtype=torch.float32).requires_grad_()
            y = sym_logm(p)
            (g,) = torch.autograd.grad(y.square().sum(), p)
            assert finite(y, g)
            assert float(y.detach().abs().max()) < 40
        finally:
            spd._SMALL_BATCH = old


# ------------------------------------------------------------------------- geometry
@functools.lru_cache(maxsize=None)
def _dist_refs():
    p, q = rand_spd(3, (5,), log_cond=5.0), rand_spd(3, (5,), log_cond=5.0, gen=torch.Generator().manual_seed(7))
    le = (np_apply(sla.logm, p) - np_apply(sla.logm, q)).flatten(-2).norm(dim=-1)
    return p, q, {"affine": affine_dist_ref(p, q), "log-euclidean": le}


@pytest.mark.parametrize("metric", METRICS)
def test_dist_matches_scipy(kernel, metric):
    p, q, refs = _dist_refs()
    assert torch.allclose(SPD(3, metric=metric).dist(p, q), refs[metric], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_exp_log_match_scipy(metric):
    p, q = rand_spd(3, (4,), log_cond=4.0), rand_spd(3, (4,), log_cond=4.0, gen=torch.Generator().manual_seed(3))
    u = rand_sym(3, (4,))
    m = SPD(3, metric=metric)
    if metric == "affine":
        h = np_apply(sla.sqrtm, p)
        hi = torch.linalg.inv(h)
        exp_ref = h @ np_apply(sla.expm, hi @ u @ hi) @ h
        log_ref = h @ np_apply(sla.logm, hi @ q @ hi) @ h
    else:
        lp = np_apply(sla.logm, p)
        exp_ref = np_apply(sla.expm, lp + np_frechet(sla.logm, p, u))
        log_ref = np_frechet(sla.expm, lp, np_apply(sla.logm, q) - lp)
    assert torch.allclose(m.expmap(p, u), exp_ref, rtol=1e-9, atol=1e-9)
    assert torch.allclose(m.logmap(p, q), log_ref, rtol=1e-9, atol=1e-9)


def test_invariances(dtype):
    g = torch.Generator().manual_seed(11)
    p, q = rand_spd(3, (70,), gen=g, dtype=dtype), rand_spd(3, (70,), gen=g, dtype=dtype)
    tol = 10 * TOL[dtype]
    # affine: d(A P A^T, A Q A^T) = d(P, Q) for any invertible A; exp commutes with the action
    aff = SPD(3)
    a = (torch.randn(70, 3, 3, generator=g, dtype=F64) + 2 * torch.eye(3, dtype=F64)).to(dtype)
    act = lambda x: a @ x @ a.transpose(-1, -2)  # noqa: E731
    assert torch.allclose(aff.dist(act(p), act(q)), aff.dist(p, q), rtol=tol, atol=tol)
    u = rand_sym(3, (70,), dtype=dtype, scale=0.5)
    lhs, rhs = aff.expmap(act(p), act(u)), act(aff.expmap(p, u))
    assert float(((lhs - rhs).abs() / (1 + rhs.abs())).max()) < tol
    # log-Euclidean: invariant under orthogonal conjugation and scaling
    le = SPD(3, metric="log-euclidean")
    r, _ = torch.linalg.qr(torch.randn(70, 3, 3, generator=g, dtype=F64))
    r = r.to(dtype)
    rot = lambda x: r @ x @ r.transpose(-1, -2)  # noqa: E731
    assert torch.allclose(le.dist(rot(p), rot(q)), le.dist(p, q), rtol=tol, atol=tol)
    assert torch.allclose(le.dist(2.5 * p, 2.5 * q), le.dist(p, q), rtol=tol, atol=tol)
    assert not torch.allclose(le.dist(act(p), act(q)), le.dist(p, q), rtol=1e-2)  # not affine-invariant


@pytest.mark.parametrize("metric", METRICS)
def test_metric_consistency(metric):
    """norm(log_P Q) = d(P, Q); inner against finite differences of scipy's logm (log-Euclidean)."""
    m = SPD(3, metric=metric)
    p, q = rand_spd(3, (70,)), rand_spd(3, (70,), gen=torch.Generator().manual_seed(4))
    assert torch.allclose(m.norm(p, m.logmap(p, q)), m.dist(p, q), rtol=1e-9, atol=1e-9)
    p = p[:4]
    u, v = rand_sym(3, (4,)), rand_sym(3, (4,), gen=torch.Generator().manual_seed(9))
    if metric == "affine":
        pi = torch.linalg.inv(p)
        ref = (pi @ u @ pi @ v).diagonal(dim1=-2, dim2=-1).sum(-1)
    else:
        h = 1e-5
        du = (np_apply(sla.logm, p + h * u) - np_apply(sla.logm, p - h * u)) / (2 * h)
        dv = (np_apply(sla.logm, p + h * v) - np_apply(sla.logm, p - h * v)) / (2 * h)
        ref = (du * dv).sum((-1, -2))
    assert torch.allclose(m.inner(p, u, v), ref, rtol=1e-7, atol=1e-7)
    assert m.inner(p, u, v, keepdim=True).shape == (4, 1, 1)


@pytest.mark.parametrize("metric", METRICS)
def test_geodesic_closed_form(metric, dtype):
    m = SPD(3, metric=metric)
    p, q = rand_spd(3, (70,), dtype=dtype), rand_spd(3, (70,), gen=torch.Generator().manual_seed(4), dtype=dtype)
    t = torch.linspace(-0.5, 1.5, 70, dtype=dtype)
    ref = m.expmap(p, t[:, None, None] * m.logmap(p, q))
    got = m.geodesic(p, q, t)
    assert float(((got - ref).abs() / (1 + ref.abs())).max()) < 100 * TOL[dtype]
    # commuting matrices: both metrics give the geometric interpolation P^(1-t) Q^t
    a, b = torch.tensor([0.5, 2.0, 7.0], dtype=dtype), torch.tensor([3.0, 0.1, 7.0], dtype=dtype)
    mid = m.geodesic(torch.diag(a), torch.diag(b), 0.5)
    assert torch.allclose(mid, torch.diag(torch.sqrt(a * b)), rtol=10 * TOL[dtype], atol=10 * TOL[dtype])


@pytest.mark.parametrize("metric", METRICS)
def test_egrad2rgrad_is_the_riemannian_gradient(metric):
    m = SPD(3, metric=metric)
    p, gr = rand_spd(3, (70,)), torch.randn(70, 3, 3, dtype=F64)
    h = rand_sym(3, (70,))
    rg = m.egrad2rgrad(p, gr)
    m.check_vector(p, rg)
    assert torch.allclose(m.inner(p, rg, h), (gr * h).sum((-1, -2)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_chunked_evaluation_matches(metric, monkeypatch):
    """Multi-threaded runs evaluate the maps in chunks of the batch (see _map_batch): same values and gradients."""
    m = SPD(3, metric=metric)
    g = torch.Generator().manual_seed(21)
    x, y = rand_spd(3, (70,), gen=g).requires_grad_(), rand_spd(3, gen=g).requires_grad_()  # y broadcasts
    u, t = rand_sym(3, (70,), gen=g).requires_grad_(), torch.rand(70, generator=g, dtype=F64)

    def run():
        outs = [m.expmap(x, u), m.logmap(y, x), m.dist(x, y), m.geodesic(y, x, t), m.inner(x, u, u)]
        grads = torch.autograd.grad(sum(o.sum() for o in outs), (x, y, u))
        return outs + list(grads)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref = run()
        monkeypatch.setattr(spd, "_GRAIN", 9 * 8 + 1)  # chunks of 8 matrices: 70 = 8 * 8 + 6
        got = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_broadcasting_and_shapes():
    m = SPD(3)
    p, q = rand_spd(3), rand_spd(3, (5,))
    assert m.dist(p, q).shape == (5,) and m.dist(q, p, keepdim=True).shape == (5, 1, 1)
    assert m.logmap(p, q).shape == (5, 3, 3) and m.expmap(q, m.logmap(q, p)).shape == (5, 3, 3)
    assert torch.allclose(m.logmap(p, q)[2], m.logmap(p, q[2]), atol=1e-12)
    assert m.geodesic(p, q, torch.rand(5, dtype=F64)).shape == (5, 3, 3)
    assert m.random_base(4, 2, dtype=F64).shape == (4, 2, 3, 3)
    assert m.base_log_prob(q).shape == (5,)


@pytest.mark.parametrize("metric", METRICS)
def test_no_nan_at_hard_points(kernel, metric, dtype):
    """x == y, identity, c I, repeated eigenvalues, nearly singular (cond 1e6 float32, 1e12 float64)."""
    m = SPD(3, metric=metric)
    cond = 1e6 if dtype == torch.float32 else 1e12
    eye = torch.eye(3, dtype=F64)
    sing = rand_spd(3, eigs=[1.0 / cond, 0.5, 1.0])
    hard = [
        (rand_spd(3), None),  # None: y = x
        (eye, None),
        (eye, 4.0 * eye),
        (rand_spd(3, eigs=[2.0, 2.0, 3.0]), rand_spd(3, eigs=[1.0, 1.0, 1.0 + 1e-9])),
        (sing, None),
        (sing, rand_spd(3, eigs=[1.0 / cond, 1.0 / cond, 1.0], gen=torch.Generator().manual_seed(8))),
        (eye, sing),
    ]
    x = torch.stack([a for a, _ in hard]).to(dtype).requires_grad_()
    y_other = torch.stack([a if b is None else b for a, b in hard]).to(dtype).requires_grad_()
    same = torch.tensor([b is None for _, b in hard])
    y = torch.where(same[:, None, None], x, y_other)  # y is x itself where b is None
    xd = x.detach()
    u = (0.3 * xd @ rand_sym(3, (len(hard),), dtype=dtype) @ xd).requires_grad_()  # |u|_x <= 0.3 |S|_F |x|
    t = torch.tensor(0.3, dtype=dtype, requires_grad=True)
    outs = {
        "dist": m.dist(x, y),
        "logmap": m.logmap(x, y),
        "expmap": m.expmap(x, u),
        "geodesic": m.geodesic(x, y, t),
        "inner": m.inner(x, u),
        "norm": m.norm(x, m.logmap(x, y)),
        "base_log_prob": m.base_log_prob(x),
    }
    for name, out in outs.items():
        grads = torch.autograd.grad(out.sum(), (x, y_other, u, t), allow_unused=True, retain_graph=True)
        assert finite(out, *[g for g in grads if g is not None]), (name, metric, dtype)
    assert torch.equal(m.dist(x, x).detach(), torch.zeros(len(hard), dtype=dtype))


# ---------------------------------------------------------------- base distribution
@pytest.mark.parametrize("n", [2, 3])
def test_affine_volume_element_matches_numerical_jacobian(n):
    """log sqrt det(J^T G J) of S -> expm(S) in an orthonormal basis of Sym(n) == sum_{i<j} log sinhc(delta_ij / 2)."""
    basis = []
    for i in range(n):
        for j in range(i, n):
            e = torch.zeros(n, n, dtype=F64)
            e[i, j] = e[j, i] = 1.0 if i == j else 1.0 / math.sqrt(2.0)
            basis.append(e)
    basis = torch.stack(basis)  # orthonormal for the Frobenius inner product
    m = SPD(n)
    g = torch.Generator().manual_seed(n)
    for scale in (0.3, 1.0, 2.5):
        c = torch.randn(len(basis), generator=g, dtype=F64) * scale
        chart = lambda coords: torch.linalg.matrix_exp(torch.tensordot(coords, basis, dims=1))  # noqa: E731
        jac = torch.autograd.functional.jacobian(chart, c)  # (n, n, d)
        p = chart(c)
        pinv = torch.linalg.inv(p)
        cols = jac.permute(2, 0, 1)
        gram = torch.einsum("ab,kbc,cd,lda->kl", pinv, cols, pinv, cols)  # tr(P^-1 J_k P^-1 J_l)
        log_vol = 0.5 * torch.logdet(gram)
        lam = torch.linalg.eigvalsh(torch.tensordot(c, basis, dims=1))
        delta = (lam[:, None] - lam[None, :])[torch.triu_indices(n, n, 1).unbind()]
        expected = torch.log(torch.sinh(delta / 2) / (delta / 2)).sum()
        assert torch.allclose(log_vol, expected, rtol=1e-7, atol=1e-8)
        lp = m.base_log_prob(p)
        assert torch.allclose(lp, -0.5 * len(basis) * math.log(2 * math.pi) - 0.5 * (c * c).sum() - log_vol, rtol=1e-7, atol=1e-8)


def test_log_euclidean_base_log_prob_closed_form():
    p = rand_spd(3, (5,), log_cond=6.0)
    ref = -3 * math.log(2 * math.pi) - 0.5 * np_apply(sla.logm, p).square().sum((-1, -2))
    assert torch.allclose(SPD(3, metric="log-euclidean").base_log_prob(p), ref, rtol=1e-10, atol=1e-10)


def test_random_base_is_standard_normal_in_sym():
    m = SPD(3)
    x = m.random_base(10000, generator=torch.Generator().manual_seed(0), dtype=F64)
    m.check_point(x)
    assert torch.allclose(sym_logm(x[:3]), np_apply(sla.logm, x[:3]), atol=1e-10)
    s = sym_logm(x)
    iu = torch.triu_indices(3, 3, 1)
    diag, off = s.diagonal(dim1=-2, dim2=-1), s[:, iu[0], iu[1]]
    assert float(s.mean(0).abs().max()) < 0.04  # standard errors: 0.01 (mean), 0.014 and 0.007 (variances)
    assert torch.allclose(diag.var(0), torch.ones(3, dtype=F64), atol=0.06)
    assert torch.allclose(off.var(0), torch.full((3,), 0.5, dtype=F64), atol=0.03)
    assert float(torch.corrcoef(torch.cat([diag, off], 1).T).fill_diagonal_(0).abs().max()) < 0.05


@pytest.mark.parametrize("metric", METRICS)
def test_base_distribution_is_normalised(metric):
    """Monte Carlo integral of exp(base_log_prob) against the Riemannian volume (forward-mode autodiff of expmap under vmap)."""
    est = check_normalised(SPD(2, metric=metric), n_samples=4000, seed=1, rtol=0.05)
    assert abs(est - 1) < 0.05


# ------------------------------------------------------------- suite, checks, optimiser
@pytest.mark.parametrize("metric", METRICS)
def test_property_suite(metric, dtype):
    # normalisation: test_base_distribution_is_normalised; gradcheck: test_map_derivatives (cheaper, both kernels)
    assert_manifold(SPD(3, metric=metric), dtype=dtype, normalisation=False, gradcheck=False)


@pytest.mark.parametrize("metric", METRICS)
def test_map_derivatives(kernel, metric):
    """gradcheck (reverse and forward mode, random projections) of every map; second order for affine maps."""
    m = SPD(3, metric=metric)
    g = torch.Generator().manual_seed(12)
    x, y, u = rand_spd(3, gen=g), rand_spd(3, gen=g), rand_sym(3, gen=g)
    t = torch.tensor(0.3, dtype=F64)
    cases = [
        (m.expmap, (x, u)),
        (m.logmap, (x, y)),
        (m.dist, (x, y)),
        (lambda a, b: m.inner(a, b, b), (x, u)),
        (m.geodesic, (x, y, t)),
        (m.base_log_prob, (x,)),
        (m.logmap, (x, x.clone())),  # at y == x
        (m.expmap, (torch.eye(3, dtype=F64), torch.zeros(3, 3, dtype=F64))),  # repeated eigenvalues, u = 0
    ]
    for fn, inputs in cases:
        inputs = tuple(z.clone().requires_grad_() for z in inputs)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True, check_forward_ad=True)
    if metric == "affine" and kernel == "jacobi":  # (the derivative code does not depend on the kernel)
        for fn, inputs in cases[:3]:
            inputs = tuple(z.clone().requires_grad_() for z in inputs)
            assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    elif metric == "log-euclidean":  # the maps differentiate a Frechet derivative: second order in P raises
        xs = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(m.inner(xs, u), xs, create_graph=True)
        with pytest.raises(RuntimeError, match="derivative order is not implemented"):
            torch.autograd.grad(gx.sum(), xs)


def test_check_point_and_vector_messages():
    m = SPD(3)
    p = rand_spd(3, (4,))
    m.check_point(p)
    bad = p.clone()
    bad[1, 0, 2] += 0.1
    with pytest.raises(ValueError, match=r"max \|x - x\^T\| = 0\.1 .* smallest eigenvalue .* is 0\.\d+ .*projx"):
        m.check_point(bad)
    neg = rand_spd(3, (4,), eigs=[-0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"max \|x - x\^T\| = \d.* smallest eigenvalue of \(x \+ x\^T\)/2 is -0\.5 .*projx"):
        m.check_point(neg)
    with pytest.raises(ValueError, match=r"trailing shape \(3, 3\)"):
        m.check_point(torch.eye(2, dtype=F64))
    u = rand_sym(3, (4,))
    m.check_vector(p, u)
    u[0, 0, 1] += 0.2
    with pytest.raises(ValueError, match=r"max \|u - u\^T\| = 0\.2.*proju"):
        m.check_vector(p, u)


def test_projx(dtype):
    m = SPD(3)
    x = torch.randn(70, 3, 3, dtype=F64).to(dtype)  # asymmetric and indefinite
    y = m.projx(x)
    m.check_point(y)
    assert torch.allclose(m.projx(y), y, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])
    p = rand_spd(3, (70,), dtype=dtype)
    assert torch.allclose(m.projx(p), p, rtol=TOL[dtype], atol=TOL[dtype])
    # nearest PSD matrix in Frobenius norm: negative eigenvalues clipped
    s = rand_sym(3, (70,), dtype=dtype)
    w, v = torch.linalg.eigh(s.to(F64))
    ref = (v * w.clamp_min(0).unsqueeze(-2)) @ v.transpose(-1, -2)
    assert torch.allclose(m.projx(s).to(F64), ref, atol=10 * TOL[dtype])


@pytest.mark.parametrize("metric", METRICS)
def test_frechet_mean_with_riemannian_adam(metric):
    m = SPD(3, metric=metric)
    g = torch.Generator().manual_seed(3)
    pts = m.expmap(rand_spd(3, gen=g), 0.5 * rand_sym(3, (8,), gen=g))
    x = geoopt.ManifoldParameter(torch.eye(3, dtype=F64), manifold=m)
    opt = geoopt.optim.RiemannianAdam([x], lr=0.1, betas=(0.5, 0.9))
    for _ in range(60):
        opt.zero_grad()
        loss = m.dist(x, pts).square().mean()
        loss.backward()
        opt.step()
    m.check_point(x.detach())
    with torch.no_grad():
        if metric == "log-euclidean":
            ref = sym_expm(sym_logm(pts).mean(0))  # closed form
            assert torch.allclose(x, ref, atol=1e-6)
        # first-order condition of the Karcher mean: sum_k log_x(p_k) = 0 (it is ~1 at the start)
        assert float(m.norm(x, m.logmap(x, pts).mean(0))) < 1e-6


def test_affine_geodesic_from_the_nearer_end():
    """gamma(t) is evaluated from x0 for t <= 1/2 and from x1 beyond: the same curve (float64), continuous with
    its velocity across t = 1/2, and in float32 a near-singular end point stays positive definite near t = 1."""
    m = SPD(3)
    g = torch.Generator().manual_seed(31)
    p, q = rand_spd(3, (40,), gen=g), rand_spd(3, (40,), gen=g)
    t = torch.cat([torch.linspace(-0.5, 1.5, 37, dtype=F64), torch.tensor([0.5 - 1e-12, 0.5 + 1e-12, 0.0], dtype=F64)])
    fwd, back = m.geodesic(p, q, t), m.geodesic(q, p, 1 - t)
    torch.testing.assert_close(fwd, back, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.geodesic(p, q, torch.ones(40, dtype=F64)), q, rtol=1e-13, atol=1e-13)
    # one end point broadcast against a batch of times on both sides of 1/2, velocity included
    x, v = m.geodesic_and_velocity(p[0], q[0], t)
    x_ref, v_ref = m.geodesic_and_velocity(p[:1].expand(40, 3, 3), q[:1].expand(40, 3, 3), t)
    torch.testing.assert_close(x, x_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v[37], v[38], rtol=1e-9, atol=1e-9)  # t = 1/2 -+ 1e-12
    # float32, x1 with eigenvalues ~1e-6 (condition 1e6) and x0 with eigenvalues up to ~36 (the fuzz draw that
    # came back indefinite at t = 1 from x0's frame)
    rot = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0]
    q32 = (rot @ torch.diag(torch.tensor([1e-6, 1.0e-6, 1.0], dtype=F64)) @ rot.T)
    p32 = rand_spd(3, gen=g) * 10
    for s in (0.9, 0.999, 0.999999, 1.0):
        ref = m.geodesic(p32, q32, s)
        got = m.geodesic(p32.float(), q32.float(), s).double()
        lam, lam_ref = torch.linalg.eigvalsh(got), torch.linalg.eigvalsh(ref)
        assert float(lam.min()) > 0, s
        # eigenvalues within two float32 spacings of the matrix's scale (rounding x1 itself costs ~1e-8 here;
        # evaluated from x0's frame the t = 1 point was off by 1.1e-6, an eigenvalue of -7.7e-8)
        assert float((lam - lam_ref).abs().max()) < 2 * torch.finfo(torch.float32).eps * float(lam_ref.max()), s
