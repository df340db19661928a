"""Losses of Gao et al. 2020 (facelab.losses.{recognition,photometric,landmark,shape,adversarial}).

One template per loss: smoke, bad input raises naming the argument, shapes, a
hand-computed value (arithmetic in the comments), gradcheck in double.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facelab.losses import (
    CENTER_WEIGHT, LANDMARK_GDL_PAIRS, WGAN_DIV_K, WGAN_DIV_P, AlbedoSymmetryLoss, CenterLoss,
    LandmarkLoss, LaplacianSmoothnessLoss, PairwiseShapeLoss, PhotometricLoss, RecognitionLoss, ShapeL1Loss,
    TemplateSmoothnessLoss, WGANDivCriticLoss, WGANDivGeneratorLoss, albedo_symmetry, center_loss,
    gradient_difference_loss, image_gradients, landmark_gdl, landmark_loss, laplacian_smoothness,
    pairwise_shape_loss, photometric_loss, sample_real_shapes, shape_l1, swap_partners, template_smoothness,
    uniform_laplacian, wgan_div_critic_loss, wgan_div_generator_loss,
)
from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces, mesh_hierarchy

D64 = torch.float64


@pytest.fixture(scope="module")
def morphable():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


@pytest.fixture(scope="module")
def edges(morphable):
    return mesh_hierarchy(morphable).levels[0].edge_index


def _path_graph():
    """Vertices 0 at the origin, 1 at (2,0,0), 2 at (0,4,0); edges 1 - 0 - 2 (both directions)."""
    verts = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0.0, 4.0, 0]]], dtype=D64)
    edge_index = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])
    return verts, edge_index


# =================================================================== recognition (eq. 4)
def test_center_loss_hand_value(device, dtype):
    f = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]], device=device, dtype=dtype)
    labels = torch.tensor([0, 1, 0], device=device)
    c = torch.tensor([[1.0, 0.0], [3.0, 4.0]], device=device, dtype=dtype)
    # ||(0,2)||^2 = 4, ||(-3,-4)||^2 = 25, ||(2,3)||^2 = 13 -> 0.5 * (42 / 3) = 7
    loss = center_loss(f, labels, c)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(7.0)


@pytest.mark.parametrize("bad, match", [
    ({"features": torch.zeros(3)}, "features"),
    ({"labels": torch.tensor([0, 2, 0])}, "labels"),
    ({"labels": torch.tensor([0.0, 1.0, 0.0])}, "labels"),
    ({"centers": torch.zeros(2, 3)}, "centers"),
])
def test_center_loss_bad_input_raises(bad, match):
    args = {"features": torch.zeros(3, 2), "labels": torch.tensor([0, 1, 0]), "centers": torch.zeros(2, 2)}
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        center_loss(**args)


def test_center_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 3, generator=g, dtype=D64, requires_grad=True)
    c = torch.randn(4, 3, generator=g, dtype=D64, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1, 0])
    assert torch.autograd.gradcheck(lambda a, b: center_loss(a, labels, b), (f, c))


def test_center_loss_module_moves_centre_toward_its_features():
    module = CenterLoss(3, 2)
    assert module.centers.shape == (3, 2) and module.centers.abs().sum() == 0
    f = torch.tensor([[2.0, 2.0], [4.0, 4.0], [-1.0, 5.0]])
    labels = torch.tensor([0, 0, 1])
    module(f, labels).backward()
    # dL/dc_j = -(1/B) sum_{b: y_b = j} (f_b - c_j): class 0 -> -(6, 6)/3, class 1 -> -(-1, 5)/3, class 2 -> 0
    expected = -torch.tensor([[6.0, 6.0], [-1.0, 5.0], [0.0, 0.0]]) / 3
    assert torch.allclose(module.centers.grad, expected)
    before = (module.centers.detach()[0] - f[:2].mean(0)).norm()
    torch.optim.SGD(module.parameters(), lr=0.5).step()
    after = (module.centers.detach()[0] - f[:2].mean(0)).norm()
    assert after < before
    assert module.centers[2].abs().sum() == 0  # no samples, no move


def test_recognition_loss_parts_and_accuracy():
    head = RecognitionLoss(3, 3, lambda_center=0.5)
    with torch.no_grad():  # an identity classifier: feature e_k is class k
        head.softmax.weight.copy_(torch.eye(3))
        head.center.centers.copy_(torch.ones(3, 3))
    features = 4.0 * torch.eye(3)[[0, 2, 1, 2]]
    labels = torch.tensor([0, 2, 1, 2])
    loss, parts = head(features, labels)
    assert loss.shape == () and set(parts) == {"softmax", "center", "acc"}
    soft = F.cross_entropy(features @ torch.eye(3).T, labels)
    # every feature is 4 e_k, its centre (1,1,1): 0.5 * (9 + 1 + 1) = 5.5
    assert parts["center"].item() == pytest.approx(5.5)
    assert parts["softmax"].item() == pytest.approx(soft.item())
    assert loss.item() == pytest.approx(soft.item() + 0.5 * 5.5)
    assert parts["acc"].item() == 1.0
    _, parts = head(features, torch.tensor([1, 0, 2, 0]))
    assert parts["acc"].item() == 0.0
    assert RecognitionLoss(3, 3).lambda_center == CENTER_WEIGHT


def test_recognition_loss_bad_input_raises():
    with pytest.raises(ValueError, match="lambda_center"):
        RecognitionLoss(3, 3, lambda_center=-1.0)
    head = RecognitionLoss(3, 3)
    with pytest.raises(ValueError, match="features"):
        head(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        head(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_recognition_loss_trains_features_and_both_heads():
    torch.manual_seed(0)
    head = RecognitionLoss(4, 3)
    f = torch.randn(6, 4, requires_grad=True)
    loss, _ = head(f, torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert f.grad.abs().sum() > 0
    assert head.softmax.weight.grad.abs().sum() > 0 and head.center.centers.grad.abs().sum() > 0


# =================================================================== photometric (eq. 5)
def _gdl_case(dtype=D64):
    pred = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]], dtype=dtype)
    target = torch.tensor([[[[0.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]], dtype=dtype)
    return pred, target


def test_image_gradients_shapes_and_values():
    pred, _ = _gdl_case()
    dx, dy = image_gradients(pred)
    assert dx.shape == (1, 1, 2, 2) and dy.shape == (1, 1, 1, 3)
    assert dx.flatten().tolist() == [1.0, 2.0, 0.0, 0.0]
    assert dy.flatten().tolist() == [2.0, 1.0, -1.0]
    with pytest.raises(ValueError, match="img"):
        image_gradients(torch.zeros(2, 3, 4))


def test_gradient_difference_loss_hand_values():
    pred, target = _gdl_case()
    # dx pred (1, 2 | 0, 0), dx target (2, 0 | 0, 0): ||.|-|.|| = 1, 2, 0, 0 -> 3/4
    # dy pred (2, 1, -1), dy target (2, 0, 0): 0, 1, 1 -> 2/3
    assert gradient_difference_loss(pred, target).item() == pytest.approx(0.75 + 2 / 3)
    # alpha = 2: (1 + 4) / 4 + (0 + 1 + 1) / 3
    assert gradient_difference_loss(pred, target, alpha=2).item() == pytest.approx(1.25 + 2 / 3)
    # mask off the last column: dx keeps (row 0, cols 0-1) = 1 and (row 1) = 0 -> 1/2;
    # dy keeps columns 0, 1 -> (0 + 1) / 2
    mask = torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]]], dtype=D64)
    assert gradient_difference_loss(pred, target, mask).item() == pytest.approx(1.0)
    assert gradient_difference_loss(pred, target, mask.bool()).item() == pytest.approx(1.0)
    # mask off the top-left pixel: a gradient needs both its pixels, so dx keeps 2 (row 0) and 0, 0
    # (row 1) -> 2/3; dy keeps columns 1, 2 -> (1 + 1) / 2
    mask = torch.tensor([[[[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]], dtype=D64)
    assert gradient_difference_loss(pred, target, mask).item() == pytest.approx(2 / 3 + 1.0)


def test_gdl_ignores_a_constant_shift_but_not_blur():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=g, dtype=D64)
    assert gradient_difference_loss(target + 0.2, target).item() == pytest.approx(0.0, abs=1e-12)
    blurred = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    assert gradient_difference_loss(blurred, target).item() > 0.1


def test_photometric_loss_hand_values():
    pred = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]], [[0.5, 0.0]]]], dtype=D64)  # (1, 3, 1, 2)
    target = torch.zeros_like(pred)
    half = torch.tensor([[[[1.0, 0.0]]]], dtype=D64)
    # only pixel 0: ||(0.5,0.5,0.5)||^2 = 0.75; GDL has no pair of masked pixels -> 0
    assert photometric_loss(pred, target, half).item() == pytest.approx(0.75)
    # both pixels: (0.75 + 1) / 2 = 0.875; GDL: |dx| = (0.5, 0.5, 0.5) summed over RGB = 1.5
    full = torch.ones_like(half)
    assert photometric_loss(pred, target, full, gdl_weight=0).item() == pytest.approx(0.875)
    assert photometric_loss(pred, target, full).item() == pytest.approx(0.875 + 1.5)
    assert photometric_loss(pred, target, None, gdl_weight=0.5).item() == pytest.approx(0.875 + 0.75)
    assert PhotometricLoss(gdl_weight=0.5)(pred, target, full).item() == pytest.approx(0.875 + 0.75)
    assert photometric_loss(pred, target, torch.zeros_like(half)).item() == 0.0  # empty mask


@pytest.mark.parametrize("bad, match", [
    ({"target": torch.zeros(1, 3, 4, 5)}, "target"),
    ({"pred": torch.zeros(3, 4, 4)}, "pred"),
    ({"mask": torch.ones(1, 3, 4, 4)}, "mask"),
    ({"gdl_weight": -1.0}, "gdl_weight"),
    ({"alpha": 0.0}, "alpha"),
])
def test_photometric_loss_bad_input_raises(bad, match):
    args = {"pred": torch.zeros(1, 3, 4, 4), "target": torch.zeros(1, 3, 4, 4), "mask": torch.ones(1, 1, 4, 4)}
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        photometric_loss(**args)


def test_photometric_gradcheck():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 3, 5, 6, generator=g, dtype=D64, requires_grad=True)
    target = torch.rand(2, 3, 5, 6, generator=g, dtype=D64)
    mask = torch.rand(2, 1, 5, 6, generator=g, dtype=D64)
    assert torch.autograd.gradcheck(lambda p: photometric_loss(p, target, mask), (pred,))
    assert torch.autograd.gradcheck(lambda p: gradient_difference_loss(p, target, mask, alpha=2), (pred,))


# =================================================================== landmarks (eq. 6)
def test_landmark_gdl_pairs_cover_eyes_lips_and_face_size():
    pairs = {tuple(p) for p in LANDMARK_GDL_PAIRS.tolist()}
    assert LANDMARK_GDL_PAIRS.dtype == torch.long and LANDMARK_GDL_PAIRS.shape[1] == 2
    assert len(pairs) == LANDMARK_GDL_PAIRS.shape[0]  # no duplicates
    for need in [(37, 41), (38, 40), (43, 47), (44, 46), (61, 67), (62, 66), (63, 65),
                 (50, 58), (51, 57), (52, 56), (36, 45), (48, 54), (27, 8)]:
        assert need in pairs
    assert all(0 <= i < 68 and 0 <= j < 68 and i != j for i, j in pairs)


def test_landmark_loss_hand_values(device, dtype):
    pred = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]], device=device, dtype=dtype)
    target = torch.zeros_like(pred)
    # squared distances 0, 25, 2 -> mean 9; weights (1, 1, 0) -> 25 / 2
    assert landmark_loss(pred, target).item() == pytest.approx(9.0)
    assert landmark_loss(pred, target, torch.tensor([1.0, 1.0, 0.0], device=device)).item() == pytest.approx(12.5)
    assert landmark_loss(pred, target, torch.tensor([[0.0, 1.0, 1.0]], device=device)).item() == pytest.approx(13.5)


def test_landmark_gdl_hand_value():
    pred = torch.tensor([[[0.0, 0.0], [0.0, 3.0], [6.0, 8.0]]], dtype=D64)
    target = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 0.0]]], dtype=D64)
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2]])
    # pred distances 3, 10, |(6, 5)| = sqrt(61); target 4, 0, 4
    # (3-4)^2 + (10-0)^2 + (sqrt61-4)^2 = 1 + 100 + 77 - 8 sqrt61 -> mean (178 - 8 sqrt61) / 3
    expected = (178 - 8 * math.sqrt(61)) / 3
    assert landmark_gdl(pred, target, pairs).item() == pytest.approx(expected)
    # LandmarkLoss = point term + gdl_weight * GDL; point term (0 + 25 + 100) / 3 px^2
    module = LandmarkLoss(gdl_weight=0.5, pairs=pairs)
    assert module(pred, target).item() == pytest.approx(125 / 3 + 0.5 * expected)


def test_landmark_gdl_is_invariant_to_rigid_motion_and_finite_at_a_closed_eye():
    g = torch.Generator().manual_seed(0)
    pred = 64 * torch.rand(2, 68, 2, generator=g, dtype=D64)
    target = 64 * torch.rand(2, 68, 2, generator=g, dtype=D64)
    a = 0.7
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=D64)
    moved = pred @ rot.T + torch.tensor([5.0, -3.0], dtype=D64)
    assert landmark_gdl(moved, target).item() == pytest.approx(landmark_gdl(pred, target).item())
    closed = pred.clone()
    closed[:, 41] = closed[:, 37]  # upper and lower lid on the same point
    closed.requires_grad_(True)
    landmark_gdl(closed, target).backward()
    assert torch.isfinite(closed.grad).all()


@pytest.mark.parametrize("bad, match", [
    ({"pred": torch.zeros(2, 68)}, "pred"),
    ({"target": torch.zeros(2, 67, 2)}, "target"),
    ({"pairs": torch.tensor([[0, 68]])}, "pairs"),
    ({"pairs": torch.tensor([[0.0, 1.0]])}, "pairs"),
])
def test_landmark_gdl_bad_input_raises(bad, match):
    args = {"pred": torch.zeros(2, 68, 2), "target": torch.zeros(2, 68, 2), "pairs": LANDMARK_GDL_PAIRS}
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        landmark_gdl(**args)


def test_landmark_loss_bad_weight_raises():
    with pytest.raises(ValueError, match="weight"):
        landmark_loss(torch.zeros(2, 68, 2), torch.zeros(2, 68, 2), torch.ones(67))
    with pytest.raises(ValueError, match="weight"):
        landmark_loss(torch.zeros(2, 68, 2), torch.zeros(2, 68, 2), -torch.ones(68))
    with pytest.raises(ValueError, match="gdl_weight"):
        LandmarkLoss(gdl_weight=-1)


def test_landmark_gradcheck():
    g = torch.Generator().manual_seed(2)
    pred = 10 * torch.rand(2, 68, 2, generator=g, dtype=D64)
    target = 10 * torch.rand(2, 68, 2, generator=g, dtype=D64)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: LandmarkLoss()(p, target), (pred,))


# =================================================================== shape L1 (eq. 7)
def test_shape_l1_hand_values(device, dtype):
    pred = torch.tensor([[[1.0, -2.0, 0.0], [0.0, 0.0, 6.0]]], device=device, dtype=dtype)
    target = torch.zeros_like(pred)
    # (1 + 2 + 0 + 0 + 0 + 6) / 6 = 1.5 mm; vertex 0 only: 3/3; vertex 1 only: 6/3
    assert shape_l1(pred, target).item() == pytest.approx(1.5)
    assert shape_l1(pred, target, torch.tensor([True, False], device=device)).item() == pytest.approx(1.0)
    assert ShapeL1Loss(torch.tensor([0.0, 1.0])).to(device)(pred, target).item() == pytest.approx(2.0)


def test_shape_l1_bad_input_raises_and_gradcheck():
    with pytest.raises(ValueError, match="target"):
        shape_l1(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="vertex_mask"):
        shape_l1(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.zeros(5, dtype=torch.bool))
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 6, 3, generator=g, dtype=D64, requires_grad=True)
    mask = torch.tensor([1.0, 0.5, 0, 1, 1, 0], dtype=D64)
    assert torch.autograd.gradcheck(lambda p: shape_l1(p, torch.zeros_like(p), mask), (pred,))


# =================================================================== pairwise shape (eq. 8)
def test_swap_partners():
    assert swap_partners(4).tolist() == [1, 2, 3, 0]
    assert swap_partners(1).tolist() == [0]
    with pytest.raises(ValueError, match="n"):
        swap_partners(0)


def _labelled(morphable, n=4, seed=0):
    s = morphable.sample(n, torch.Generator().manual_seed(seed))
    return s["alpha_id"], s["alpha_exp"]


def test_pairwise_shape_loss_is_zero_when_perfectly_disentangled(morphable):
    alpha_id, alpha_exp = _labelled(morphable)
    decode = lambda ci, ce: morphable.shape(ci, ce)  # noqa: E731 - the linear model *is* the decoder
    loss = pairwise_shape_loss(decode, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable)
    assert loss.shape == () and loss.item() == 0.0
    perm = torch.tensor([2, 0, 3, 1])
    assert pairwise_shape_loss(decode, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable, partner=perm).item() == 0.0


def test_pairwise_shape_loss_detects_expression_leaking_into_identity(morphable):
    alpha_id, alpha_exp = _labelled(morphable)
    pad = morphable.n_shape - morphable.n_exp

    def leaky(ci, ce):  # identity code also carries half the expression
        return morphable.shape(ci + 0.5 * F.pad(ce, (0, pad)), ce)

    plain = pairwise_shape_loss(leaky, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable)
    assert plain.item() > 0.1  # mm; a disentangled decoder gives exactly 0
    # Worse: codes that reconstruct every image exactly (c_id absorbs -0.5 * its own expression)
    # pass the per-image shape loss; only swapping expressions between images exposes the leak.
    leaky_id = alpha_id - 0.5 * F.pad(alpha_exp, (0, pad))  # c_id that reconstructs each image exactly
    own = pairwise_shape_loss(leaky, leaky_id, alpha_exp, alpha_id, alpha_exp, morphable,
                              partner=torch.arange(4), neutral=False)
    assert own.item() == pytest.approx(0.0, abs=1e-4)
    swapped = pairwise_shape_loss(leaky, leaky_id, alpha_exp, alpha_id, alpha_exp, morphable, neutral=False)
    neutral = pairwise_shape_loss(leaky, leaky_id, alpha_exp, alpha_id, alpha_exp, morphable)
    assert swapped.item() > 0.1  # mm
    assert neutral.item() > swapped.item()  # the neutral partner exposes it too


def test_pairwise_shape_loss_hand_value_and_module(morphable):
    alpha_id, alpha_exp = _labelled(morphable)
    shift = torch.tensor([1.0, 0.0, 0.0])

    def offset(ci, ce):  # right identity and expression, everything 1 mm off along x
        return morphable.shape(ci, ce) + shift

    # each term: |dx| = 1 on one coordinate of three -> 1/3 mm; with the neutral partner 2/3
    args = (offset, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable)
    assert pairwise_shape_loss(*args, neutral=False).item() == pytest.approx(1 / 3, abs=1e-5)
    assert pairwise_shape_loss(*args).item() == pytest.approx(2 / 3, abs=1e-5)
    module = PairwiseShapeLoss(morphable)
    assert module(offset, alpha_id, alpha_exp, alpha_id, alpha_exp).item() == pytest.approx(2 / 3, abs=1e-5)
    assert set(module.state_dict()) == {"linear.mean_shape", "linear.shape_basis", "linear.exp_basis"}


def test_pairwise_shape_loss_matches_a_direct_reference(morphable):
    alpha_id, alpha_exp = _labelled(morphable, n=3, seed=5)
    g = torch.Generator().manual_seed(1)
    c_id = alpha_id + 5 * torch.randn(alpha_id.shape, generator=g)
    c_exp = alpha_exp + 2 * torch.randn(alpha_exp.shape, generator=g)
    partner = torch.tensor([2, 2, 0])
    mask = morphable.face_mask
    loss = pairwise_shape_loss(morphable.shape, c_id, c_exp, alpha_id, alpha_exp, morphable, partner, vertex_mask=mask)
    swap = (morphable.shape(c_id, c_exp[partner]) - morphable.shape(alpha_id, alpha_exp[partner])).abs()
    neut = (morphable.shape(c_id, 0 * c_exp) - morphable.shape(alpha_id, 0 * alpha_exp)).abs()
    expected = swap[:, mask].mean() + neut[:, mask].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pairwise_shape_loss_bad_input_raises(morphable):
    alpha_id, alpha_exp = _labelled(morphable)
    with pytest.raises(TypeError, match="decode_shape"):
        pairwise_shape_loss(None, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable)
    with pytest.raises(ValueError, match="c_exp"):
        pairwise_shape_loss(morphable.shape, alpha_id, alpha_exp[:3], alpha_id, alpha_exp, morphable)
    with pytest.raises(ValueError, match="partner"):
        pairwise_shape_loss(morphable.shape, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable,
                            partner=torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="decode_shape output"):
        pairwise_shape_loss(lambda ci, ce: ci, alpha_id, alpha_exp, alpha_id, alpha_exp, morphable)


def test_pairwise_shape_loss_gradcheck(morphable):
    m64 = morphable.to(dtype=D64)
    alpha_id, alpha_exp = (a.to(D64) for a in _labelled(m64, n=2))
    g = torch.Generator().manual_seed(4)
    c_id = (alpha_id + torch.randn(alpha_id.shape, generator=g, dtype=D64)).requires_grad_(True)
    c_exp = (alpha_exp + torch.randn(alpha_exp.shape, generator=g, dtype=D64)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: pairwise_shape_loss(m64.shape, a, b, alpha_id, alpha_exp, m64), (c_id, c_exp))


# =================================================================== smoothness (eq. 9)
def test_uniform_laplacian_hand_value_and_isolated_vertex():
    verts, edge_index = _path_graph()
    # vertex 0: 0 - mean((2,0,0), (0,4,0)) = (-1,-2,0); vertices 1, 2 have the single neighbour 0
    expected = torch.tensor([[-1.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]], dtype=D64)
    assert torch.equal(uniform_laplacian(verts, edge_index)[0], expected)
    lone = torch.cat([verts, torch.ones(1, 1, 3, dtype=D64)], dim=1)  # vertex 3 has no edge
    assert uniform_laplacian(lone, edge_index)[0, 3].abs().sum() == 0


def test_uniform_laplacian_matches_dense_numpy(morphable, edges):
    V = morphable.n_verts
    verts = morphable.mean_shape[None].to(D64) + torch.randn(2, V, 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    A = np.zeros((V, V))
    A[edges[0].numpy(), edges[1].numpy()] = 1.0
    L = np.eye(V) - A / A.sum(1, keepdims=True)  # I - D^-1 A
    expected = np.einsum("ij,bjc->bic", L, verts.numpy())
    out = uniform_laplacian(verts, edges)
    assert out.shape == (2, V, 3)
    assert np.allclose(out.numpy(), expected, atol=1e-10)


def test_template_smoothness_zero_for_template_and_translations(morphable, edges):
    template = morphable.mean_shape
    assert template_smoothness(template[None], template, edges).item() == 0.0
    t64 = template.to(D64)
    moved = t64[None] + torch.tensor([[[10.0, -25.0, 3.0]], [[0.0, 0.0, -100.0]]], dtype=D64)
    assert template_smoothness(moved, t64, edges).item() == pytest.approx(0.0, abs=1e-10)
    assert TemplateSmoothnessLoss(template, edges)(template[None]).item() == 0.0
    # the conventional Laplacian loss is NOT zero for the template: it would flatten the face
    assert laplacian_smoothness(template[None], edges).item() > 0.1  # mm per vertex
    assert LaplacianSmoothnessLoss(edges)(template[None]).item() == pytest.approx(
        laplacian_smoothness(template[None], edges).item())
    noisy = t64[None] + 0.5 * torch.randn(1, template.shape[0], 3, generator=torch.Generator().manual_seed(1), dtype=D64)
    assert template_smoothness(noisy, t64, edges).item() > 0.1


def test_smoothness_hand_values():
    template, edge_index = _path_graph()
    verts = template.clone()
    verts[0, 0] += torch.tensor([3.0, 0.0, 0.0], dtype=D64)
    # moving vertex 0 by (3,0,0) changes L by (3,0,0) at 0 and (-3,0,0) at 1 and 2: (3 + 3 + 3) / 3
    assert template_smoothness(verts, template[0], edge_index).item() == pytest.approx(3.0)
    assert template_smoothness(verts, template[0], edge_index, torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(3.0)
    # conventional: L1 norms of (-1,-2,0), (2,0,0), (0,4,0) -> (3 + 2 + 4) / 3
    assert laplacian_smoothness(template, edge_index).item() == pytest.approx(3.0)
    assert laplacian_smoothness(template, edge_index, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(2.5)


@pytest.mark.parametrize("call, match", [
    (lambda e: template_smoothness(torch.zeros(1, 3, 3), torch.zeros(4, 3), e), "template"),
    (lambda e: template_smoothness(torch.zeros(3, 3), torch.zeros(3, 3), e), "verts"),
    (lambda e: uniform_laplacian(torch.zeros(1, 3, 3), torch.tensor([[0, 3], [3, 0]])), "edge_index"),
    (lambda e: uniform_laplacian(torch.zeros(1, 3, 3), e.double()), "edge_index"),
    (lambda e: laplacian_smoothness(torch.zeros(1, 3, 3), e, torch.zeros(3)), "vertex_mask"),
])
def test_smoothness_bad_input_raises(call, match):
    _, edge_index = _path_graph()
    with pytest.raises((ValueError, TypeError), match=match):
        call(edge_index)


def test_smoothness_gradcheck():
    from facelab.morphable.grid import edges_from_faces, grid_faces

    edge_index = edges_from_faces(grid_faces(3, 4))
    g = torch.Generator().manual_seed(5)
    template = torch.randn(12, 3, generator=g, dtype=D64)
    verts = torch.randn(2, 12, 3, generator=g, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: template_smoothness(v, template, edge_index), (verts,))
    assert torch.autograd.gradcheck(lambda v: laplacian_smoothness(v, edge_index), (verts,))


# =================================================================== albedo symmetry (eq. 10)
def test_albedo_symmetry_zero_for_mirror_symmetric_albedo(morphable):
    sym = morphable.symmetry
    albedo = torch.rand(2, morphable.n_verts, 3, generator=torch.Generator().manual_seed(0))
    symmetric = 0.5 * (albedo + albedo[:, sym])  # sym is an involution, so this is its own mirror image
    assert albedo_symmetry(symmetric, sym).item() == 0.0
    assert albedo_symmetry(albedo, sym).item() > 0.1
    assert albedo_symmetry(morphable.mean_albedo[None], sym, morphable.face_mask).item() < 1e-3
    assert AlbedoSymmetryLoss(sym, morphable.face_mask)(symmetric).item() == 0.0


def test_albedo_symmetry_hand_value():
    albedo = torch.tensor([[[0.2, 0.4, 0.0], [0.5, 0.5, 0.5], [0.8, 0.4, 0.3]]], dtype=D64)
    sym = torch.tensor([2, 1, 0])
    # vertices 0 and 2: |0.2-0.8| + 0 + |0-0.3| = 0.9 each over 3 channels; vertex 1: 0 -> 1.8 / 9
    assert albedo_symmetry(albedo, sym).item() == pytest.approx(0.2)
    # only vertex 0: 0.9 / 3
    assert albedo_symmetry(albedo, sym, torch.tensor([True, False, False])).item() == pytest.approx(0.3)


def test_albedo_symmetry_bad_input_raises_and_gradcheck():
    with pytest.raises(ValueError, match="symmetry"):
        albedo_symmetry(torch.zeros(1, 3, 3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="symmetry"):
        albedo_symmetry(torch.zeros(1, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="albedo"):
        albedo_symmetry(torch.zeros(3, 3), torch.tensor([0, 1, 2]))
    albedo = torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(6), dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: albedo_symmetry(a, torch.tensor([3, 2, 1, 0])), (albedo,))


# =================================================================== WGAN-div (eq. 11)
def test_constants_are_the_papers():
    assert (WGAN_DIV_K, WGAN_DIV_P) == (2.0, 6.0)


def test_wgan_div_critic_loss_hand_value_with_a_linear_critic(device):
    w = torch.tensor([0.3, 0.4], dtype=D64, device=device)  # ||grad D|| = ||w|| = 0.5 everywhere
    real = torch.eye(2, dtype=D64, device=device)
    fake = torch.tensor([[2.0, 2.0], [-1.0, 0.0]], dtype=D64, device=device)
    critic = lambda x: x @ w  # noqa: E731
    # E[D(fake)] = (1.4 - 0.3) / 2 = 0.55, E[D(real)] = (0.3 + 0.4) / 2 = 0.35
    # k = 2, p = 6: 0.55 - 0.35 + 2 * 0.5**6 = 0.2 + 0.03125
    assert wgan_div_critic_loss(critic, real, fake).item() == pytest.approx(0.23125)
    # k = 1, p = 2: 0.2 + 0.25
    assert wgan_div_critic_loss(critic, real, fake, k=1, p=2).item() == pytest.approx(0.45)
    loss, parts = wgan_div_critic_loss(critic, real, fake, return_parts=True)
    assert parts["wdist"].item() == pytest.approx(-0.2) and parts["penalty"].item() == pytest.approx(0.03125)
    assert WGANDivCriticLoss()(critic, real, fake).item() == pytest.approx(0.23125)


def test_wgan_div_critic_loss_on_shapes_and_parameter_gradient():
    torch.manual_seed(0)
    B, V = 3, 5
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * V, 1, bias=True)).double()
    real = torch.randn(B, V, 3, dtype=D64)
    fake = torch.randn(B, V, 3, dtype=D64, requires_grad=True)
    loss = wgan_div_critic_loss(critic, real, fake)
    assert loss.shape == ()
    loss.backward()
    assert fake.grad is None  # the critic loss trains only the critic
    w = critic[1].weight.detach()[0]
    # d/dw [E fake.w - E real.w + k ||w||^p] = E fake - E real + k p ||w||^(p-2) w
    expected = (fake.detach().mean(0) - real.mean(0)).reshape(-1) + 2 * 6 * w.norm() ** 4 * w
    assert torch.allclose(critic[1].weight.grad[0], expected)
    assert critic[1].bias.grad.abs().item() < 1e-12  # E[1] - E[1]


def test_wgan_div_critic_loss_is_deterministic_given_a_generator():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    a = wgan_div_critic_loss(critic, real, fake, generator=torch.Generator().manual_seed(3))
    b = wgan_div_critic_loss(critic, real, fake, generator=torch.Generator().manual_seed(3))
    c = wgan_div_critic_loss(critic, real, fake, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()


def test_wgan_div_gradcheck_through_the_penalty():
    g = torch.Generator().manual_seed(7)
    real = torch.randn(4, 3, generator=g, dtype=D64)
    fake = torch.randn(4, 3, generator=g, dtype=D64)
    w1 = torch.randn(3, 5, generator=g, dtype=D64, requires_grad=True)
    w2 = torch.randn(5, generator=g, dtype=D64, requires_grad=True)

    def loss(a, b):  # a non-linear critic, so the penalty's double backward matters
        critic = lambda x: torch.tanh(x @ a) @ b  # noqa: E731
        return wgan_div_critic_loss(critic, real, fake, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(loss, (w1, w2))


def test_wgan_div_generator_step_lowers_its_loss():
    torch.manual_seed(1)
    critic = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ELU(), torch.nn.Linear(16, 1))
    fake = torch.nn.Parameter(torch.randn(8, 6))
    opt = torch.optim.SGD([fake], lr=0.05)
    before = wgan_div_generator_loss(critic, fake)
    assert before.item() == pytest.approx(-critic(fake).mean().item())
    opt.zero_grad()
    before.backward()
    opt.step()
    after = WGANDivGeneratorLoss()(critic, fake)
    assert after.item() < before.item()


@pytest.mark.parametrize("kwargs, match", [
    ({"fake": torch.zeros(3, 4)}, "fake"),
    ({"k": -1.0}, "k"),
    ({"p": 1.0}, "p"),
    ({"critic": lambda x: x}, "critic"),
    ({"real": torch.zeros(0, 5)}, "real"),
])
def test_wgan_div_bad_input_raises(kwargs, match):
    args = {"critic": lambda x: x.sum(1), "real": torch.zeros(2, 5), "fake": torch.zeros(2, 5)}
    args.update(kwargs)
    if args["real"].shape[0] == 0:
        args["fake"] = torch.zeros(0, 5)
    with pytest.raises(ValueError, match=match):
        wgan_div_critic_loss(**args)


def test_sample_real_shapes(morphable):
    a = sample_real_shapes(morphable, 3, torch.Generator().manual_seed(0))
    b = sample_real_shapes(morphable, 3, torch.Generator().manual_seed(0))
    c = sample_real_shapes(morphable, 3, torch.Generator().manual_seed(1))
    assert a.shape == (3, morphable.n_verts, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    n = 4000
    many = sample_real_shapes(morphable, n, torch.Generator().manual_seed(2)).double()
    # per-coordinate std of the prior: sqrt(sum_k basis^2 std^2) (identity and expression)
    var = (morphable.shape_basis.double() ** 2) @ morphable.shape_std.double() ** 2
    var = var + (morphable.exp_basis.double() ** 2) @ morphable.exp_std.double() ** 2
    err = (many.mean(0) - morphable.mean_shape.double()).reshape(-1)
    # the sample mean's error is std / sqrt(n) per coordinate; allow 3x on the RMS
    assert err.pow(2).mean().sqrt() < 3 * var.mean().sqrt() / math.sqrt(n)
    assert torch.allclose(many.std(0).reshape(-1).pow(2).mean(), var.mean(), rtol=0.1)
    with pytest.raises(ValueError, match="n"):
        sample_real_shapes(morphable, 0)
