"""The SIR loss (facelab.losses.sir): smoke, bad input, shapes, hand values, gradcheck,
and the required property: a gradient step moves same-identity shapes together in vertex space."""

import math

import pytest
import torch

from facelab.losses import SIR_MARGIN_MM, SIRLoss, geometry_weighted, sir_loss, sir_loss_terms

D64 = torch.float64


def _orthonormal_basis(n_verts: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3 * n_verts, k, generator=g, dtype=D64))
    return q


def _decode(basis: torch.Tensor, std: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``(B, V, 3)`` mm offsets from the mean: ``U (sigma * a)``."""
    return ((a * std) @ basis.T).reshape(a.shape[0], -1, 3)


def _vertex_rms(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x - y) ** 2).sum(-1).mean(-1).sqrt()


def test_smoke_and_module_match_function():
    a = torch.randn(6, 4)
    labels = torch.tensor([3, 3, 7, 7, 1, 1])
    std = torch.tensor([4.0, 3.0, 2.0, 1.0])
    out = sir_loss(a, labels, std, n_verts=10)
    assert out.shape == () and torch.isfinite(out) and out >= 0
    module = SIRLoss(std, n_verts=10)
    assert torch.equal(module(a, labels), out)
    pull, push = module.terms(a, labels)
    assert torch.allclose(pull + push, out)


def test_geometry_distance_equals_vertex_rms_for_orthonormal_basis():
    V, K = 50, 6
    basis = _orthonormal_basis(V, K)
    std = torch.tensor([30.0, 20.0, 10.0, 5.0, 2.0, 1.0], dtype=D64)
    a = torch.randn(2, K, dtype=D64, generator=torch.Generator().manual_seed(1))
    g = geometry_weighted(a, std, n_verts=V)
    shapes = _decode(basis, std, a)
    assert torch.allclose((g[0] - g[1]).norm(), _vertex_rms(shapes[0], shapes[1]), atol=1e-12)


def test_hand_value_pull_and_push():
    # V = 4 -> g = sigma * a / 2. sigma = (2, 2): g = a.
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0], [9.0, 9.0]], dtype=D64)
    labels = torch.tensor([5, 5, 8, 8, 2])
    # centres: id5 (1, 0), id8 (1, 2), id2 (9, 9)
    # pull: |(-1,0)|^2 + |(1,0)|^2 + |(0,-1)|^2 + |(0,1)|^2 + 0 = 4, mean over 5 -> 0.8
    # centre distances: 5-8: 2; 5-2: sqrt(64+81); 8-2: sqrt(64+49) -> only 5-8 inside margin 3
    # push: (3 - 2)^2 / 3 pairs = 1/3
    pull, push = sir_loss_terms(a, labels, torch.tensor([2.0, 2.0], dtype=D64), margin_mm=3.0, n_verts=4)
    assert pull.item() == pytest.approx(0.8, abs=1e-12)
    assert push.item() == pytest.approx(1.0 / 3.0, abs=1e-12)
    total = sir_loss(a, labels, torch.tensor([2.0, 2.0], dtype=D64), margin_mm=3.0, n_verts=4)
    assert total.item() == pytest.approx(0.8 + 1.0 / 3.0, abs=1e-12)


def test_single_identity_has_no_push_and_singletons_no_pull():
    a = torch.randn(3, 2, dtype=D64, requires_grad=True)
    pull, push = sir_loss_terms(a, torch.tensor([0, 0, 0]), torch.ones(2, dtype=D64), n_verts=1)
    assert push.item() == 0.0 and pull.item() > 0
    pull, _ = sir_loss_terms(a, torch.tensor([0, 1, 2]), torch.ones(2, dtype=D64), n_verts=1)
    assert pull.item() == 0.0
    (pull + push).backward()  # the zero push still belongs to the graph
    assert a.grad is not None


def test_scaling_with_sigma_and_vertex_count():
    # Doubling sigma doubles g (x4 on the pull); 4x the vertices halves g (x1/4 on the pull).
    a = torch.tensor([[0.0], [1.0]], dtype=D64)
    labels = torch.tensor([0, 0])
    base = sir_loss(a, labels, torch.tensor([1.0], dtype=D64), n_verts=1)
    assert sir_loss(a, labels, torch.tensor([2.0], dtype=D64), n_verts=1).item() == pytest.approx(4 * base.item())
    assert sir_loss(a, labels, torch.tensor([1.0], dtype=D64), n_verts=4).item() == pytest.approx(base.item() / 4)


def test_default_margin_is_positive_mm():
    assert SIR_MARGIN_MM > 0


def test_gradcheck_double():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(7, 3, generator=g, dtype=D64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 4])
    std = torch.tensor([3.0, 1.5, 0.5], dtype=D64)
    # margin 5 mm: some centre pairs inside the margin, some outside (both hinge branches)
    dist = torch.pdist(torch.stack([geometry_weighted(a[labels == c], std, 1).mean(0) for c in (0, 1, 2, 4)]))
    assert (dist < 5.0).any() and (dist > 5.0).any()
    assert torch.autograd.gradcheck(lambda x: sir_loss(x, labels, std, margin_mm=5.0, n_verts=1), (a,))


def test_gradient_step_moves_same_identity_shapes_together_in_vertex_space():
    """THE required property: decode through an orthonormal basis, step on sir_loss, measure vertex RMSE."""
    V, K = 40, 5
    basis = _orthonormal_basis(V, K, seed=3)
    std = torch.tensor([60.0, 30.0, 12.0, 4.0, 1.0], dtype=D64)  # mm, root-sum over 3V coords
    gen = torch.Generator().manual_seed(4)
    # two samples of identity 0 that differ mostly along the small-sigma components (far apart
    # in a, closer in geometry), plus one sample of another identity
    a = torch.tensor([[0.5, -0.2, 0.8, 2.0, -3.0], [0.6, -0.1, 0.5, -1.5, 2.5], [-1.0, 1.0, 0.0, 0.3, 0.1]], dtype=D64)
    a = a + 0.01 * torch.randn(3, K, generator=gen, dtype=D64)
    labels = torch.tensor([0, 0, 1])
    a = a.clone().requires_grad_(True)
    before = _vertex_rms(*_decode(basis, std, a.detach())[:2])
    sir_loss(a, labels, std, n_verts=V).backward()
    # the pull's curvature along component k is ~ 2 sigma_k^2 / (B V): keep the step well inside it
    lr = 0.1 * V / float(std.max()) ** 2
    stepped = a.detach() - lr * a.grad
    after = _vertex_rms(*_decode(basis, std, stepped)[:2])
    assert after < before
    # and a hand check of the geometry: the decoded distance equals ||g_0 - g_1||
    g = geometry_weighted(stepped, std, V)
    assert torch.allclose(after, (g[0] - g[1]).norm(), atol=1e-10)


def test_push_step_moves_different_identities_apart_in_vertex_space():
    V, K = 40, 3
    basis = _orthonormal_basis(V, K, seed=5)
    std = torch.tensor([20.0, 10.0, 5.0], dtype=D64)
    a = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], dtype=D64, requires_grad=True)
    labels = torch.tensor([0, 1])
    before = _vertex_rms(*_decode(basis, std, a.detach()))
    sir_loss(a, labels, std, margin_mm=3.0, n_verts=V).backward()
    after = _vertex_rms(*_decode(basis, std, a.detach() - 0.01 * a.grad))
    assert before < 3.0 and after > before


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(alpha_std=torch.zeros(4)), "alpha_std"),
        (dict(labels=torch.zeros(3, dtype=torch.long)), "labels"),
        (dict(labels=torch.zeros(4)), "labels"),
        (dict(shape_std=torch.ones(3)), "shape_std"),
        (dict(shape_std=-torch.ones(2)), "shape_std"),
        (dict(n_verts=None), "n_verts"),
        (dict(n_verts=0), "n_verts"),
        (dict(margin_mm=-1.0), "margin_mm"),
        (dict(alpha_std=torch.tensor([[math.nan, 0.0]] * 4)), "alpha_std"),
    ],
)
def test_bad_input_raises(args, match):
    kwargs = dict(alpha_std=torch.zeros(4, 2), labels=torch.tensor([0, 0, 1, 1]), shape_std=torch.ones(2), n_verts=5)
    kwargs.update(args)
    with pytest.raises((ValueError, TypeError), match=match):
        sir_loss(**kwargs)


def test_module_bad_input_raises():
    with pytest.raises(ValueError, match="n_verts"):
        SIRLoss(torch.ones(2), n_verts=0)
    with pytest.raises(ValueError, match="shape_std"):
        SIRLoss(torch.ones(2, 2), n_verts=3)
