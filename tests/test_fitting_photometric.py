"""Tests of facelab.fitting.photometric: multi-image photometric 3DMM fitting and the webface study."""

import json

import numpy as np
import pytest
import torch

from facelab.fitting import (
    CollectionFitConfig,
    PhotometricFitConfig,
    fit_collection_study,
    fit_landmarks,
    fit_photometric,
    identity_rmse,
)
from facelab.fitting.photometric import _fit_sh
from facelab.render.sh import sh_basis

N_IDS, N_IMAGES = 4, 4


@pytest.fixture(scope="module")
def webface():
    """A tiny webface suite (quick model, 64 px): 4 identities x 4 images, one batch."""
    from facelab.data import make_suite

    suite = make_suite("webface", n_identities=N_IDS, images_per_identity=N_IMAGES, image_size=64, resolution="quick", seed=3)
    return suite, suite.batch(torch.arange(N_IDS * N_IMAGES))


@pytest.fixture(scope="module")
def multi_fit(webface):
    suite, b = webface
    return fit_photometric(suite.model, b["image"], b["landmarks2d"], b["label"], masks=b["occlusion_mask"], n_steps=40)


def face_rmse(suite, fit, batch):
    return identity_rmse(fit.identity_shapes[fit.group_index], batch["shape_identity"], suite.model.face_mask)


# ------------------------------------------------------------------ smoke + shapes
def test_fit_photometric_shapes(webface, multi_fit):
    suite, b = webface
    m, B, G = suite.model, N_IDS * N_IMAGES, N_IDS
    f = multi_fit
    assert f.alpha_id.shape == (G, m.n_shape) and f.beta.shape == (G, m.n_albedo)
    assert f.alpha_exp.shape == (B, m.n_exp) and f.pose.shape == (B, 6) and f.sh.shape == (B, 27)
    assert f.identity_shapes.shape == (G, m.n_verts, 3) and f.shapes.shape == (B, m.n_verts, 3)
    assert f.photo_rmse.shape == (B,) and f.residual_px.shape == (B,)
    assert torch.equal(f.group_labels, torch.arange(G))
    assert len(f.losses["total"]) == 40 and all(np.isfinite(f.losses["total"]))
    # only the leading components are fitted (quick defaults: 40 shape, 20 albedo)
    assert (f.alpha_id[:, 40:] == 0).all() and (f.beta[:, 20:] == 0).all() and f.beta[:, :20].abs().sum() > 0
    # images of one identity share its shape: shapes minus expression = the group's identity shape
    expr = m.expression_offset(f.alpha_exp)
    torch.testing.assert_close(f.shapes - expr, f.identity_shapes[f.group_index], atol=1e-3, rtol=0)


# ------------------------------------------------------------------ numerical behaviour
def test_photometric_fit_reduces_photometric_error_and_keeps_identity(webface, multi_fit):
    suite, b = webface
    start = fit_photometric(suite.model, b["image"], b["landmarks2d"], b["label"], masks=b["occlusion_mask"],
                            init=multi_fit.init, n_steps=0)
    # the photometric error of the landmark fit (with its best closed-form light) drops strongly
    assert multi_fit.photo_rmse.mean() < 0.8 * start.photo_rmse.mean()
    # and the identity is no worse than the landmark-only fit (allowing 5 %)
    landmark_only = face_rmse(suite, start, b).mean()
    assert face_rmse(suite, multi_fit, b).mean() < 1.05 * landmark_only
    # landmarks stay fitted (exact synthetic landmarks)
    assert multi_fit.residual_px.mean() < 1.0


def test_multi_image_identity_beats_single_image(webface, multi_fit):
    suite, b = webface
    single = fit_photometric(suite.model, b["image"], b["landmarks2d"], None, masks=b["occlusion_mask"], n_steps=40)
    assert single.alpha_id.shape[0] == N_IDS * N_IMAGES
    multi_err, single_err = face_rmse(suite, multi_fit, b), face_rmse(suite, single, b)
    assert multi_err.mean() < single_err.mean()


def test_fit_sh_recovers_lighting_closed_form():
    g = torch.Generator().manual_seed(0)
    B, H, W = 2, 16, 16
    normals = torch.nn.functional.normalize(torch.randn(B, 3, H, W, generator=g, dtype=torch.float64), dim=1)
    albedo = 0.3 + 0.5 * torch.rand(B, 3, H, W, generator=g, dtype=torch.float64)
    sh = torch.randn(B, 27, generator=g, dtype=torch.float64)
    Y = sh_basis(normals.permute(0, 2, 3, 1))  # (B, H, W, 9)
    image = albedo * torch.einsum("bhwk,bck->bchw", Y, sh.reshape(B, 3, 9))
    got = _fit_sh(image, albedo, normals, torch.ones(B, 1, H, W, dtype=torch.float64))
    torch.testing.assert_close(got, sh, atol=1e-3, rtol=1e-3)


def test_identity_rmse_hand_example():
    a = torch.zeros(1, 3, 3)
    b = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    assert identity_rmse(a, b, torch.tensor([True, True, False])).item() == pytest.approx((9 / 2) ** 0.5)


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise(webface):
    suite, b = webface
    m, img, lm = suite.model, b["image"][:2], b["landmarks2d"][:2]
    with pytest.raises(TypeError, match="model"):
        fit_photometric("bfm", img, lm)
    with pytest.raises(ValueError, match="images"):
        fit_photometric(m, img[:, :1], lm)
    with pytest.raises(ValueError, match="landmarks2d"):
        fit_photometric(m, img, lm[:, :10])
    with pytest.raises(ValueError, match="landmarks2d"):
        fit_photometric(m, img, lm[:1])
    with pytest.raises(ValueError, match="masks"):
        fit_photometric(m, img, lm, masks=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="groups"):
        fit_photometric(m, img, lm, groups=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="init"):
        fit_photometric(m, img, lm, init="landmarks")
    with pytest.raises(ValueError, match="init"):
        fit_photometric(m, img, lm, init=fit_landmarks(m, b["landmarks2d"][:3]))
    with pytest.raises(ValueError, match="n_steps"):
        fit_photometric(m, img, lm, n_steps=-1)
    with pytest.raises(ValueError, match="lr_coeff"):
        fit_photometric(m, img, lm, config=PhotometricFitConfig(lr_coeff=0.0))
    with pytest.raises(TypeError, match="unknown option"):
        fit_photometric(m, img, lm, n_stepz=3)
    with pytest.raises(ValueError, match="vertex_mask"):
        identity_rmse(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="profile"):
        CollectionFitConfig(profile="huge")


# ------------------------------------------------------------------ the study / CLI
def test_collection_study_and_cli(tmp_path):
    from facelab.cli import main

    out = tmp_path / "fit"
    rc = main(["fit", "webface", "--out", str(out), "--quiet", "--set", "n_identities=2", "--set", "images_per_identity=2",
               "--set", "image_size=32", "--set", "n_steps=3"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["images_per_subject"] for row in report["study"]] == [1, 2]
    row1 = report["study"][0]
    # with one image per subject, single- and multi-image fitting are the same problem
    assert row1["multi_image_rmse_mm"] == pytest.approx(row1["single_image_rmse_mm"], rel=1e-3)
    targets = np.load(out / "targets.npz")
    assert targets["alpha_id"].shape[0] == 2 and targets["alpha_exp"].shape[0] == 4
    assert targets["pose"].shape == (4, 6) and targets["sh"].shape == (4, 27)
    assert list(targets["labels"]) == [0, 0, 1, 1]


def test_cli_fit_rejects_unknown_key(tmp_path, capsys):
    from facelab.cli import main

    assert main(["fit", "webface", "--out", str(tmp_path), "--set", "n_identitiez=2"]) == 2
    assert "n_identitiez" in capsys.readouterr().err
