"""Tests of the mixed-label SIR recipe (facelab.train.sir)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from facelab.camera import WeakPerspectiveCamera
from facelab.losses.sir import sir_loss
from facelab.morphable import MorphableModel, SynthFacesConfig, build_synthfaces
from facelab.morphable.sphere import SphereFaceModel
from facelab.losses.mixed_label import MixedLabelLoss
from facelab.models import load_model
from facelab.models.sir import SIRNet, SIRNetConfig, sfm_identity
from facelab.train.sir import (
    BASE, VARIANTS, SIRTrainConfig, identity_indices, init_class_weights, mixed_batches, reparametrise_head,
    stage_loss, train_sir,
)
from facelab.train import read_metrics
from facelab.train.trainer import LoopConfig

pytestmark = pytest.mark.usefixtures("one_thread")

LOOP = dict(log_every=5, progress=False, lr=3e-3)
TINY = dict(image_size=(32, 32), n_shape=8, n_exp=4, base_steps=20, steps=3, batch_lp=8, batch_id=8, ids_per_batch=4,
            n_identities=6, images_per_identity=4, lp_identities=4, lp_images_per_identity=4, sfm_identities=10,
            sfm_samples=3, sfm_steps=5, cache_pool=False, train=LoopConfig(**LOOP))


@pytest.fixture(scope="module")
def morphable():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = SIRTrainConfig(out_dir=str(tmp_path_factory.mktemp("sir") / "run"), **TINY)
    return cfg, train_sir(cfg)


def _net(morphable, shape_model="pca", sfm=None, n_shape=8, n_classes=3):
    torch.manual_seed(0)
    cfg = SIRNetConfig(n_shape=n_shape, n_exp=4, image_size=(32, 32), n_classes=n_classes, shape_model=shape_model)
    return SIRNet(cfg, morphable, sfm=sfm)


def _batch(n_lp=2, labels=(0, 0, 1, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_lp + len(labels)
    label = torch.tensor([-1] * n_lp + list(labels))
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "landmarks2d": 16 + 4 * torch.randn(n, 68, 2, generator=g),
            "label": label, "has_landmarks": label < 0}


# ----------------------------------------------------------------- config
def test_config_profiles_and_defaults():
    quick, full = SIRTrainConfig(), SIRTrainConfig(profile="full")
    assert (quick.backbone, quick.image_size, quick.resolution) == ("resnet_tiny", (64, 64), "quick")
    assert full.backbone == "resnet50" and quick.variants == VARIANTS and quick.out_dir == "runs/sir-quick"
    assert quick.batch_id % quick.ids_per_batch == 0
    assert quick.train_config(BASE).out_dir.endswith("base") and quick.train_config(BASE).steps == quick.base_steps


@pytest.mark.parametrize("bad", [dict(profile="huge"), dict(variants=("nope",)), dict(recog_loss="softmax"),
                                 dict(batch_id=10, ids_per_batch=4), dict(w_sir=-1.0), dict(sir_margin_mm=float("nan")),
                                 dict(ids_per_batch=300), dict(steps=-2)])
def test_config_bad_values_raise(bad):
    with pytest.raises(ValueError):
        SIRTrainConfig(**bad)


# ----------------------------------------------------------------- batches
def test_identity_indices_groups_and_is_deterministic():
    labels = torch.arange(10).repeat_interleave(5)
    idx = identity_indices(labels, 4, 3, step=2, seed=1)
    assert idx.shape == (12,)
    groups = labels[idx].reshape(4, 3)
    assert (groups == groups[:, :1]).all() and groups[:, 0].unique().numel() == 4  # 4 identities x 3 images
    assert all(idx.reshape(4, 3)[k].unique().numel() == 3 for k in range(4))  # no repeats when enough images
    assert torch.equal(idx, identity_indices(labels, 4, 3, step=2, seed=1))
    # one epoch (10 // 4 = 2 steps) visits distinct identities
    seen = torch.cat([labels[identity_indices(labels, 4, 3, s)].unique() for s in range(2)])
    assert seen.unique().numel() == 8


def test_identity_indices_bad_input_raises():
    with pytest.raises(ValueError, match="ids_per_batch"):
        identity_indices(torch.arange(3), 4, 2, step=0)
    with pytest.raises(ValueError, match="per_id"):
        identity_indices(torch.arange(3), 2, 0, step=0)


def test_mixed_batches_fields():
    lp = {"image": torch.full((6, 3, 4, 4), 255, dtype=torch.uint8), "landmarks2d": torch.ones(6, 68, 2)}
    wf = {"image": torch.zeros(12, 3, 4, 4, dtype=torch.uint8), "label": torch.arange(6).repeat_interleave(2)}
    b = mixed_batches(lp, wf, 3, 4, ids_per_batch=2, seed=0)(5)
    assert b["image"].shape == (7, 3, 4, 4) and b["image"].dtype == torch.float32
    assert b["has_landmarks"].tolist() == [True] * 3 + [False] * 4
    assert (b["label"][:3] == -1).all() and (b["label"][3:] >= 0).all()
    assert (b["image"][:3] == 1).all() and (b["image"][3:] == 0).all()
    only_lp = mixed_batches(lp, None, 3)(0)
    assert only_lp["image"].shape[0] == 3 and (only_lp["label"] == -1).all()
    with pytest.raises(ValueError, match="batch_id"):
        mixed_batches(lp, wf, 3, 3, ids_per_batch=2)


# ----------------------------------------------------------------- model
def test_sirnet_shapes_and_geometry_is_vertex_rms(morphable):
    net = _net(morphable)
    out = net.reconstruct(torch.rand(3, 3, 32, 32))
    assert out["identity_shape"].shape == (3, morphable.n_verts, 3) and out["embedding"].shape == (3, 8)
    assert out["landmarks2d"].shape == (3, 68, 2)
    a = torch.randn(2, 8, dtype=torch.float64)
    net = net.double()
    x, scale = net.geometry(a)
    g = x * scale / math.sqrt(morphable.n_verts)
    shapes = net.decode_identity(a)
    rms = (shapes[0] - shapes[1]).pow(2).sum(-1).mean().sqrt()
    torch.testing.assert_close((g[0] - g[1]).norm(), rms)  # orthonormal basis: exact


def test_sirnet_bad_input_raises(morphable):
    with pytest.raises(ValueError, match="morphable"):
        SIRNet(SIRNetConfig(n_shape=500, n_exp=4, image_size=(32, 32)), morphable)
    with pytest.raises(ValueError, match="shape_model"):
        SIRNetConfig(shape_model="bfm")
    with pytest.raises(ValueError, match="sfm"):
        SIRNet(SIRNetConfig(n_shape=6, n_exp=4, image_size=(32, 32), shape_model="sfm"), morphable,
               sfm=SphereFaceModel.from_morphable(morphable, n_shape=5))


def test_sfm_net_decodes_and_geometry_matches(morphable):
    sfm = SphereFaceModel.from_morphable(morphable, n_shape=8)
    net = _net(morphable, "sfm", sfm=sfm).double()
    a = torch.randn(2, 8, dtype=torch.float64)
    torch.testing.assert_close(net.decode_identity(a), sfm.double().decode_alpha(a))
    lm = sfm_identity(net.sfm, a, vertices=morphable.landmarks)
    torch.testing.assert_close(lm, net.decode_identity(a)[:, morphable.landmarks])
    x, scale = net.geometry(a)
    shapes = net.decode_identity(a)
    rms = (shapes[0] - shapes[1]).pow(2).sum(-1).mean().sqrt()
    torch.testing.assert_close((x[0] - x[1]).norm() / math.sqrt(morphable.n_verts), rms)


def test_sfm_geometry_gradcheck(morphable):
    sfm = SphereFaceModel.from_morphable(morphable, n_shape=3)
    net = _net(morphable, "sfm", sfm=sfm, n_shape=3).double()
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])

    def f(a):
        x, scale = net.geometry(a)
        return sir_loss(x, labels, scale, margin_mm=50.0, n_verts=net.n_verts)

    assert torch.autograd.gradcheck(f, (a,))


@pytest.mark.parametrize("rotate", [False, True])
def test_reparametrise_head_keeps_the_shapes(morphable, rotate):
    pca = _net(morphable)
    with torch.no_grad():
        pca.regressor.head.weight.normal_(0, 0.01)
        pca.regressor.head.bias.normal_(0, 0.5)
    sfm = SphereFaceModel.from_morphable(morphable, n_shape=8)
    if rotate:  # an SFM basis is any full-rank mix of the columns
        with torch.no_grad():
            q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))
            sfm.basis.copy_(sfm.basis @ (q * torch.linspace(0.5, 2.0, 8)))
    with torch.no_grad():  # an SFM has its own mean (here off the PCA mean, inside the basis' span)
        sfm.mean.add_((sfm.basis @ torch.linspace(-1.0, 1.0, 8)).reshape(-1, 3))
    net = _net(morphable, "sfm", sfm=sfm)
    reparametrise_head(pca, net)
    images = torch.rand(2, 3, 32, 32)
    pca.eval(), net.eval()
    p, s = pca.reconstruct(images), net.reconstruct(images)
    torch.testing.assert_close(s["identity_shape"], p["identity_shape"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(s["shape"], p["shape"], atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError):
        reparametrise_head(net, pca)


def test_init_class_weights_are_mean_directions(morphable):
    net = _net(morphable, n_classes=2)
    with torch.no_grad():
        net.regressor.head.bias.normal_()
        net.regressor.head.weight.normal_(0, 0.1)
    pool = {"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), "label": torch.tensor([0, 1, 0, 1])}
    init_class_weights(net, pool)
    net.eval()
    with torch.no_grad():
        a = net(pool["image"].float() / 255)["a_id"]
    u = a / a.norm(dim=1, keepdim=True)
    ref = torch.stack([u[[0, 2]].sum(0), u[[1, 3]].sum(0)])
    torch.testing.assert_close(net.head.weight, ref / ref.norm(dim=1, keepdim=True), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------- loss
def test_mixed_loss_value_against_hand_computation(morphable):
    net = _net(morphable).eval()
    with torch.no_grad():  # an untrained head predicts all zeros: make every term non-trivial
        net.regressor.head.weight.normal_(0, 0.05)
        net.regressor.head.bias.normal_(0, 0.5)
    batch = _batch()
    loss_fn = MixedLabelLoss((32, 32), w_landmark=2.0, w_prior=0.5, w_recog=0.7, w_sir=0.3, sir_margin_mm=4.0)
    loss, m = loss_fn(net, batch)
    with torch.no_grad():
        out = net(batch["image"])
        rec = net.reconstruct(batch["image"])
        lm3d = rec["shape"][:, morphable.landmarks]  # the full decoded shape's landmark vertices
        lm2d = WeakPerspectiveCamera.from_pose(out["pose"]).project(lm3d)[..., :2]
        lmk_px = (lm2d[:2] - batch["landmarks2d"][:2]).norm(dim=-1).mean()
        prior = out["a_id"][:2].pow(2).mean() + out["a_exp"][:2].pow(2).mean()
        recog = net.head(out["a_id"][2:], batch["label"][2:])
        sir = sir_loss(out["a_id"][2:], batch["label"][2:], morphable.shape_std[:8], 4.0, n_verts=morphable.n_verts)
        expected = 2.0 * lmk_px / 32 + 0.5 * prior + 0.7 * recog + 0.3 * sir
    assert min(float(prior), float(recog), float(sir), float(lmk_px)) > 0
    torch.testing.assert_close(m["lmk_px"], lmk_px, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-4, rtol=1e-4)


def test_mixed_loss_shape_term_is_mean_vertex_distance(morphable):
    """The 3D term against a hand computation, only on ``has_shape`` rows, and absent when off."""
    net = _net(morphable).eval()
    batch = _batch()
    gen = torch.Generator().manual_seed(3)
    truth = morphable.mean_shape[None].repeat(6, 1, 1) + torch.randn(6, morphable.n_verts, 3, generator=gen)
    batch.update(shape_identity=truth, has_shape=batch["has_landmarks"].clone())  # 2 labelled rows, 4 identity rows
    base_loss, base_m = MixedLabelLoss((32, 32))(net, batch)
    assert "shape" not in base_m  # w_shape = 0: no zero column
    loss, m = MixedLabelLoss((32, 32), w_shape=2.5)(net, batch)
    with torch.no_grad():
        decoded = net.reconstruct(batch["image"][:2])["identity_shape"]
        expected = torch.sqrt(((decoded - truth[:2]) ** 2).sum(-1)).mean()
    torch.testing.assert_close(m["shape"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.detach(), base_loss.detach() + 2.5 * expected, atol=1e-4, rtol=1e-5)
    moved = dict(batch, shape_identity=truth.clone())
    moved["shape_identity"][2:] += 50.0  # rows without a 3D label: ignored
    torch.testing.assert_close(MixedLabelLoss((32, 32), w_shape=2.5)(net, moved)[0], loss)
    with pytest.raises(KeyError, match="shape_identity"):
        MixedLabelLoss((32, 32), w_shape=1.0)(net, _batch())
    with pytest.raises(ValueError, match="w_shape"):
        MixedLabelLoss((32, 32), w_shape=-1.0)


def test_mixed_batches_carry_the_labelled_shapes():
    lp = {"image": torch.zeros(6, 3, 4, 4, dtype=torch.uint8), "landmarks2d": torch.ones(6, 68, 2),
          "shape_identity": torch.arange(6.0)[:, None, None].expand(6, 5, 3).clone()}
    wf = {"image": torch.zeros(12, 3, 4, 4, dtype=torch.uint8), "label": torch.arange(6).repeat_interleave(2)}
    b = mixed_batches(lp, wf, 3, 4, ids_per_batch=2, seed=0)(1)
    assert b["shape_identity"].shape == (7, 5, 3) and b["has_shape"].tolist() == [True] * 3 + [False] * 4
    assert set(b["shape_identity"][:3, 0, 0].tolist()) <= set(range(6)) and (b["shape_identity"][3:] == 0).all()
    assert "has_shape" not in mixed_batches({k: lp[k] for k in ("image", "landmarks2d")}, wf, 3, 4, 2)(1)


def test_standard_profile_turns_the_shape_term_on():
    quick, standard = SIRTrainConfig(), SIRTrainConfig(profile="standard")
    assert quick.w_shape == 0.0 and standard.w_shape > 0 and stage_loss(BASE, standard).w_shape == standard.w_shape
    assert not quick.align and standard.align and standard.render_size == (128, 128)
    assert standard.base_steps > quick.base_steps and standard.n_identities > quick.n_identities
    with pytest.raises(ValueError, match="w_shape"):
        SIRTrainConfig(w_shape=-0.5)


def test_aligned_network_crops_like_the_library(morphable):
    """prepare_images cuts the same crops as facelab.data.align.align_faces, and the regressor takes the crop size."""
    from facelab.data.align import align_faces

    net = SIRNet(SIRNetConfig(n_shape=8, n_exp=4, image_size=(48, 48), crop_size=(32, 32), n_classes=3), morphable)
    assert net.config.input_size == (32, 32) and net.regressor.config.image_size == (32, 32)
    batch = _batch()
    photos = torch.nn.functional.interpolate(batch["image"], size=(48, 48))
    crops = net.prepare_images({"image": photos, "landmarks2d": batch["landmarks2d"] * 1.5})
    torch.testing.assert_close(crops, align_faces(photos, batch["landmarks2d"] * 1.5, (32, 32))[0])
    assert net.reconstruct(crops)["identity_shape"].shape == (6, morphable.n_verts, 3)
    with pytest.raises(KeyError, match="landmarks2d"):
        net.prepare_images({"image": photos})
    assert _net(morphable).prepare_images({"image": batch["image"]}) is batch["image"]  # whole photos


def test_aligned_recipe_trains_on_crops_and_scores_photos(tmp_path):
    from facelab.data import make_suite
    from facelab.metrics.model_eval import predict_suite
    from facelab.models.registry import load_evaluable

    tiny = dict(TINY, base_steps=2, steps=1, variants=("params_recog",), align=True, render_size=(48, 48), w_shape=1.0,
                train=LoopConfig(**LOOP, heldout_every=1))
    run = train_sir(SIRTrainConfig(out_dir=str(tmp_path / "run"), **tiny))
    net = load_evaluable(run / "params_recog.pt", expect_model="sir")
    logged = read_metrics(run / "base")
    assert {"heldout/shape_mm", "heldout/rmse_mm", "heldout/mean_face_rmse_mm"} <= set(logged)
    assert (logged["heldout/mean_face_rmse_mm"] > 0).all()
    assert net.config.image_size == (48, 48) and net.config.crop_size == (32, 32)
    suite = make_suite("micc", n_identities=2, frames_per_video=1, image_size=48, resolution="quick")
    assert predict_suite(net, suite, 8)["identity_shape"].shape == (6, net.n_verts, 3)
    with pytest.raises(ValueError, match="render_size"):
        SIRTrainConfig(align=True)
    with pytest.raises(ValueError, match="align"):
        SIRTrainConfig(align=True, render_size=(48, 48), data={"kind": "real", "labelled": "LP", "identities": "IDS"})


def test_heldout_curve_of_the_mean_face_is_its_floor(morphable):
    """A network whose code is always zero decodes the mean face: its held-out error is the floor,
    and the held-out photos are of identities past the training ones."""
    from facelab.train.sir import HELDOUT_IDENTITIES, heldout_shape_error

    cfg = SIRTrainConfig(**dict(TINY, n_shape=8))
    measure = heldout_shape_error(cfg, morphable)
    net = _net(morphable).eval()
    with torch.no_grad():
        net.regressor.head.weight.zero_()
        net.regressor.head.bias.zero_()
    out = measure(net)
    assert out["rmse_mm"] == pytest.approx(out["mean_face_rmse_mm"], rel=1e-6) and out["shape_mm"] > 0
    assert HELDOUT_IDENTITIES > 0 and heldout_shape_error(
        SIRTrainConfig(**dict(TINY, data={"kind": "real", "labelled": "L", "identities": "I"})), morphable) is None


def test_mixed_loss_uses_each_label_only_where_it_exists(morphable):
    net = _net(morphable).eval()
    batch = _batch()
    loss_fn = MixedLabelLoss((32, 32), w_sir=1.0)
    base, _ = loss_fn(net, batch)
    other = dict(batch)
    other["landmarks2d"] = batch["landmarks2d"].clone()
    other["landmarks2d"][2:] += 100.0  # landmarks of identity-only rows: ignored
    torch.testing.assert_close(loss_fn(net, other)[0], base)
    only_lp = {k: v[:2] for k, v in batch.items()}
    loss, m = loss_fn(net, only_lp)
    assert float(m["recog"]) == 0.0 and float(m["sir"]) == 0.0 and float(m["lmk"]) > 0
    only_id = {k: v[2:] for k, v in batch.items()}
    loss, m = loss_fn(net, only_id)
    assert float(m["lmk"]) == 0.0 and float(m["prior"]) == 0.0 and float(m["recog"]) > 0


def test_mixed_loss_bad_input_raises(morphable):
    with pytest.raises(ValueError, match="w_sir"):
        MixedLabelLoss((32, 32), w_sir=-1.0)
    batch = _batch()
    batch.pop("has_landmarks")
    with pytest.raises(KeyError, match="has_landmarks"):
        MixedLabelLoss((32, 32))(_net(morphable), batch)


def test_stage_losses():
    cfg = SIRTrainConfig(**TINY)
    assert stage_loss("params_recog", cfg).w_sir == 0.0 and stage_loss(BASE, cfg).w_sir == 0.0
    assert stage_loss("params_recog_sir", cfg).w_sir == cfg.w_sir and stage_loss("sfm_sir", cfg).w_sir == cfg.w_sir
    with pytest.raises(ValueError, match="stage"):
        stage_loss("phase3", cfg)


def test_sir_gradient_step_pulls_same_identity_geometry_together(morphable):
    """One step on the SIR term alone brings two images of one identity closer in vertex space."""
    net = _net(morphable, n_classes=2)
    with torch.no_grad():
        net.regressor.head.weight.normal_(0, 0.05)
    batch = _batch(n_lp=0, labels=(0, 0))
    loss_fn = MixedLabelLoss((32, 32), w_landmark=0.0, w_prior=0.0, w_recog=0.0, w_sir=1.0)

    def distance():
        net.eval()
        with torch.no_grad():
            s = net.reconstruct(batch["image"])["identity_shape"]
        net.train()
        return float((s[0] - s[1]).pow(2).sum(-1).mean().sqrt())

    before = distance()
    opt = torch.optim.SGD([net.regressor.head.weight, net.regressor.head.bias], lr=0.05)
    net.eval()  # fixed batch-norm statistics: the step moves only the head
    loss, _ = loss_fn(net, batch)
    loss.backward()
    opt.step()
    assert distance() < before


# ----------------------------------------------------------------- recipe
def test_train_sir_writes_every_stage(tiny_run):
    cfg, out = tiny_run
    for stage in (BASE,) + VARIANTS:
        assert (out / f"{stage}.pt").is_file() and (out / stage / "metrics.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {BASE, *VARIANTS}
    assert summary["params_recog"]["sir"] == 0.0 and summary["params_recog_sir"]["sir"] > 0.0
    sfm = SphereFaceModel.from_morphable(MorphableModel.load(out / "sfm_stage1.npz"))
    assert sfm.n_shape == 8
    net = load_model(out / "sfm_sir.pt", expect_model="sir")[0]
    assert net.config.shape_model == "sfm" and not torch.equal(net.sfm.basis, sfm.basis)  # stage 2 moved it
    assert load_model(out / "params_recog.pt", expect_model="sir")[0].config.shape_model == "pca"


def test_train_sir_lowers_the_landmark_error(tiny_run):
    _, out = tiny_run
    rows = (out / BASE / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    lmk = [float(r.split(",")[header.index("lmk_px")]) for r in rows[1:]]
    assert lmk[-1] < lmk[0]


def test_train_sir_skips_finished_stages(tiny_run):
    cfg, out = tiny_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    train_sir(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps


def test_variants_start_from_base():
    from facelab.train.sir import recipe_stages

    stages = recipe_stages(SIRTrainConfig(**TINY))
    assert stages[0].name == BASE and stages[0].parent is None
    assert [s.parent for s in stages[1:]] == [BASE] * (len(stages) - 1)


def test_cli_train_sir(tmp_path, capsys):
    from facelab.cli import main

    sets = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items() if k != "train"]
    sets += [f"train.{k}={v}" for k, v in LOOP.items()] + ["base_steps=2", "steps=1", "variants=params_recog"]
    argv = ["train", "sir", "--out", str(tmp_path / "run")] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "sir" and (tmp_path / "run" / "params_recog.pt").is_file()


def test_term_diagnostics_of_the_mixed_label_loss(tmp_path):
    from facelab.train.stages import read_summary

    cfg = SIRTrainConfig(out_dir=str(tmp_path / "run"), variants=("params_recog_sir",),
                         **{**TINY, "base_steps": 4, "steps": 2, "train": LoopConfig(**LOOP, diagnose_every=2)})
    summary = read_summary(train_sir(cfg))
    sir_stage = summary["params_recog_sir"]["diagnostics"]
    assert set(sir_stage["terms"]) == {"lmk", "prior", "recog", "sir"}
    assert set(sir_stage["terms"]["sir"]) == {"regressor"}
    assert sir_stage["accuracy"]["chance"] == pytest.approx(1 / cfg.n_identities)
    # the base stage has no SIR term: its share is exactly 0
    assert summary["base"]["diagnostics"]["terms"]["sir"]["regressor"]["mean_share"] == 0.0
