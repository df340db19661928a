"""Tests of five-point face alignment (facelab.data.align)."""

from __future__ import annotations

import math

import pytest
import torch

from facelab.data.align import FIVE_POINT_GROUPS, align_faces, five_points, similarity_2d, template

pytestmark = pytest.mark.usefixtures("one_thread")


def _landmarks_from_points(points: torch.Tensor) -> torch.Tensor:
    """(B, 5, 2) -> (B, 68, 2) landmarks whose five alignment points are ``points``."""
    lm = torch.zeros(points.shape[0], 68, 2, dtype=points.dtype)
    for k, group in enumerate(FIVE_POINT_GROUPS):
        lm[:, list(group)] = points[:, k:k + 1]
    return lm


def _similarity(points, angle, scale, shift):
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=points.dtype)
    return scale * points @ R.T + torch.tensor(shift, dtype=points.dtype)


def test_smoke_and_shapes():
    crops, lm = align_faces(torch.rand(3, 3, 40, 30), torch.rand(3, 68, 2) * 20 + 5, (24, 20))
    assert crops.shape == (3, 3, 24, 20) and lm.shape == (3, 68, 2)
    assert five_points(torch.rand(2, 68, 2)).shape == (2, 5, 2)
    assert template((56, 48)).shape == (5, 2)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="landmarks2d"):
        align_faces(torch.rand(2, 3, 8, 8), torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="images"):
        align_faces(torch.rand(3, 8, 8), torch.rand(1, 68, 2))
    with pytest.raises(ValueError, match="coincide"):
        similarity_2d(torch.ones(1, 3, 2), torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="at least 2"):
        similarity_2d(torch.ones(1, 1, 2), torch.rand(1, 1, 2))


def test_similarity_recovers_a_known_transform():
    src = torch.randn(4, 7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dst = _similarity(src, 0.3, 1.7, (2.0, -5.0))
    A, b = similarity_2d(src, dst)
    c, s = math.cos(0.3), math.sin(0.3)
    torch.testing.assert_close(A[0], 1.7 * torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
    torch.testing.assert_close(b[0], torch.tensor([2.0, -5.0], dtype=torch.float64))


def test_template_is_sphereface_at_112x96_and_centred_elsewhere():
    t = template((112, 96))
    assert t[0].tolist() == pytest.approx([30.2946, 51.6963], abs=1e-4)
    # square crop: scale min(64/112, 64/96) = 4/7, centred horizontally
    t64 = template((64, 64))
    assert t64[:, 0].mean().item() == pytest.approx(t[:, 0].mean().item() * 4 / 7 + (64 - 96 * 4 / 7) / 2, abs=1e-4)


def test_exact_similarity_lands_on_the_template_and_moves_pixels_correctly():
    """A photo that is an exact similarity image of the template is aligned exactly."""
    H = W = 64
    tpl = template((H, W)).double()
    pts = _similarity(tpl, -0.4, 0.6, (10.0, 20.0))[None]
    lm = _landmarks_from_points(pts)
    # a smooth image: a Gaussian blob centred at the photo point that maps to crop point (32, 30)
    A, b = similarity_2d(pts, tpl[None])
    centre_photo = torch.linalg.solve(A[0], torch.tensor([32.0, 30.0], dtype=torch.float64) - b[0])
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    img = torch.exp(-((xs - centre_photo[0]) ** 2 + (ys - centre_photo[1]) ** 2) / (2 * 3.0 ** 2)).double()
    crops, lm_out = align_faces(img[None, None], lm, (H, W))
    torch.testing.assert_close(five_points(lm_out)[0], tpl, atol=1e-9, rtol=0)
    w = crops[0, 0]
    com = torch.stack([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    torch.testing.assert_close(com, torch.tensor([32.0, 30.0], dtype=torch.float64), atol=0.05, rtol=0)


def test_gradcheck_images():
    img = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    lm = torch.rand(1, 68, 2, dtype=torch.float64) * 5 + 1.5
    assert torch.autograd.gradcheck(lambda x: align_faces(x, lm, (8, 8))[0], (img,))
