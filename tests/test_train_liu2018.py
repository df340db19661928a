"""Tests of the Liu et al. 2018 three-phase recipe (facelab.train.liu2018)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from facelab.models.liu2018 import build_liu2018_model
from facelab.models.registry import load_model
from facelab.train.liu2018 import (
    Liu2018TrainConfig, Phase3Loss, phase1_loss, phase2_loss, phase_parameters, pool_batches,
    render_pool, train_liu2018, _fitted, training_suite,
)
from facelab.train.trainer import LoopConfig

TINY = dict(image_size=(32, 32), render_size=(48, 48), resolution="quick", n_identities=16, images_per_identity=4,
            phase_steps=(30, 20, 30), embedding_dim=32, cache_pool=False,
            train=LoopConfig(batch_size=16, log_every=5, progress=False))
EVAL_STEPS = (0, 1, 2)  # fixed pool batches the phase objectives are compared on


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = Liu2018TrainConfig(out_dir=str(tmp_path_factory.mktemp("liu") / "run"), loss="softmax", **TINY)
    out = train_liu2018(cfg)
    return cfg, out


def _initial_model(out, seed: int):
    """The run's untrained model: the recipe builds it right after seeding."""
    model_config = load_model(out / "phase1.pt")[1]["model_config"]
    torch.manual_seed(seed)
    return build_liu2018_model(model_config)


def _objective(model, loss_fn, batches) -> float:
    model.train(False)
    with torch.no_grad():
        return sum(float(loss_fn(model, batches(s))[0]) for s in EVAL_STEPS) / len(EVAL_STEPS)


# ----------------------------------------------------------------- config
def test_config_profiles_and_defaults():
    quick, full = Liu2018TrainConfig(), Liu2018TrainConfig(profile="full")
    assert (quick.depth, quick.image_size, quick.resolution) == ("sphere_tiny", (64, 64), "quick")
    assert (full.depth, full.image_size, full.resolution) == ("sphere20", (112, 96), "default")
    assert quick.targets == "truth" and quick.out_dir == "runs/liu2018-quick"
    assert len(quick.phase_steps) == 3
    standard = Liu2018TrainConfig(profile="standard")
    assert standard.image_size == quick.image_size and standard.phase_steps[2] > quick.phase_steps[2]
    assert standard.lambda_r < quick.lambda_r == 1.0  # so that L_C has a share of the encoder's gradient
    assert Liu2018TrainConfig(profile="standard", lambda_r=1.0).lambda_r == 1.0  # an explicit value wins


@pytest.mark.parametrize("bad", [dict(profile="huge"), dict(targets="fit"), dict(loss="arcface"),
                                 dict(phase_steps=(1, 2)), dict(phase_steps=(1, 0, 1)), dict(lambda_r=-1.0),
                                 dict(phase_lr=(1e-3, -1.0, 1e-3))])
def test_config_bad_values_raise(bad):
    with pytest.raises(ValueError):
        Liu2018TrainConfig(**bad)


def test_phase_parameters_partition():
    model = build_liu2018_model({"resolution": "quick", "model": {
        "encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": (32, 32)}, "n_classes": 4}})
    p1 = {id(p) for p in phase_parameters(model, 1)}
    p2 = {id(p) for p in phase_parameters(model, 2)}
    assert not p1 & p2
    assert {id(p) for p in model.id_decoder.parameters()} <= p2
    assert {id(p) for p in model.encoder.parameters()} <= p1
    assert len(phase_parameters(model, 3)) == len(list(model.parameters()))
    with pytest.raises(ValueError):
        phase_parameters(model, 4)


# ------------------------------------------------------------------ losses
def test_phase1_loss_is_zero_at_targets_and_matches_hand_value():
    model = build_liu2018_model({"resolution": "quick", "model": {
        "encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": (32, 32)}}})
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        c_id, c_res = model.encode(images)
    # coefficients whose standardised codes equal the prediction: loss 0
    batch = {"image": images, "alpha_id": c_id * model.shape_std, "alpha_exp": c_res * model.exp_std}
    for metric in ("basis", "code"):
        loss, _ = phase1_loss(model, batch, metric)
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    # shifting every target code by 1 gives loss exactly 1 on the codes...
    batch = {"image": images, "alpha_id": (c_id + 1) * model.shape_std, "alpha_exp": (c_res + 1) * model.exp_std}
    loss, metrics = phase1_loss(model, batch, "code")
    assert float(loss.detach()) == pytest.approx(1.0, rel=1e-4)
    assert float(metrics["id"]) == pytest.approx(1.0, rel=1e-4)
    # ...and sum_k std_k^2 / V mm^2 per part in the basis metric (orthonormal bases)
    loss, metrics = phase1_loss(model, batch, "basis")
    n_verts = model.mean_shape.shape[0]
    want_id = float((model.shape_std.double() ** 2).sum() / n_verts)
    want_res = float((model.exp_std.double() ** 2).sum() / n_verts)
    assert float(metrics["id"]) == pytest.approx(want_id, rel=1e-3)
    assert float(loss.detach()) == pytest.approx(want_id + want_res, rel=1e-3)
    with pytest.raises(ValueError, match="metric"):
        phase1_loss(model, batch, "cosine")


def test_phase2_and_phase3_losses_hand_values():
    model = build_liu2018_model({"resolution": "quick", "model": {
        "encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": (32, 32)}, "n_classes": 3,
        "loss": "softmax"}})
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
    shift = torch.tensor([1.0, 2.0, 2.0])  # |shift|^2 = 9 mm^2 at every vertex
    batch = {"image": images, "shape_identity": out["shape_id"] + shift, "shape": out["shape"] + 2 * shift,
             "label": torch.tensor([0, 2])}
    loss, metrics = phase2_loss(model, batch)
    # identity part off by shift, residual part off by shift as well
    assert float(metrics["id"]) == pytest.approx(9.0, rel=1e-4)
    assert float(metrics["res"]) == pytest.approx(9.0, rel=1e-4)
    assert float(metrics["rmse_id_mm"]) == pytest.approx(3.0, rel=1e-4)
    loss3, m3 = Phase3Loss(lambda_r=0.5)(model, batch)
    assert float(m3["rec"]) == pytest.approx(36.0, rel=1e-4)
    expected_cls = float(model.classification_loss(out["c_id"], batch["label"]).detach())
    assert float(loss3.detach()) == pytest.approx(0.5 * 36.0 + expected_cls, rel=1e-4)
    # the controls: without L_C the loss is lambda_R L_R alone; without L_R it is L_C alone
    loss_no_lc, _, terms = Phase3Loss(lambda_r=0.5, lambda_c=0.0, return_terms=True)(model, batch)
    assert float(loss_no_lc.detach()) == pytest.approx(0.5 * 36.0, rel=1e-4) and float(terms["L_C"].detach()) == 0.0
    loss_no_lr, _ = Phase3Loss(lambda_r=0.0)(model, batch)
    assert float(loss_no_lr.detach()) == pytest.approx(expected_cls, rel=1e-4)
    with pytest.raises(ValueError, match="lambda_r"):
        Phase3Loss(lambda_r=-1)
    with pytest.raises(ValueError, match="lambda_c"):
        Phase3Loss(lambda_c=float("nan"))


def test_phase2_does_not_train_the_encoder():
    model = build_liu2018_model({"resolution": "quick", "model": {
        "encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": (32, 32)}}})
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(images)
    loss, _ = phase2_loss(model, {"image": images, "shape": out["shape"] + 1, "shape_identity": out["shape_id"] + 1})
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.id_decoder.linear.bias.grad is not None


# -------------------------------------------------------------- tiny run
def test_tiny_run_writes_phase_checkpoints(tiny_run):
    cfg, out = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    for phase in (1, 2, 3):
        path = out / f"phase{phase}.pt"
        assert path.exists()
        model, ckpt = load_model(path, expect_model="liu2018")
        assert ckpt["step"] == cfg.phase_steps[phase - 1]
        assert model.n_id > 0 and model.classifier is not None
        assert (out / f"phase{phase}" / "metrics.csv").exists()
        assert summary[f"phase{phase}"]["step"] == cfg.phase_steps[phase - 1]


def test_tiny_run_each_phase_lowers_its_objective(tiny_run):
    cfg, out = tiny_run
    collection = training_suite(cfg)
    batches = pool_batches(render_pool(collection, cache=False, align_to=cfg.image_size), cfg.train.batch_size, seed=123)
    before = _initial_model(out, cfg.train.seed)
    models = [before] + [load_model(out / f"phase{p}.pt")[0] for p in (1, 2, 3)]
    objectives = {1: phase1_loss, 2: phase2_loss, 3: Phase3Loss(cfg.lambda_r)}
    for phase, loss_fn in objectives.items():
        start = _objective(models[phase - 1], loss_fn, batches)
        end = _objective(models[phase], loss_fn, batches)
        assert end < start, f"phase {phase}: objective {start:.4f} -> {end:.4f}"


def test_tiny_run_freezes_the_right_parts(tiny_run):
    cfg, out = tiny_run
    init = _initial_model(out, cfg.train.seed).state_dict()
    s1, s2 = (load_model(out / f"phase{p}.pt")[0].state_dict() for p in (1, 2))
    # Phase I leaves the decoders at the basis initialisation; Phase II leaves the encoder alone
    assert torch.equal(s1["id_decoder.linear.weight"], init["id_decoder.linear.weight"])
    assert not torch.equal(s1["id_head.weight"], init["id_head.weight"])
    assert torch.equal(s2["id_head.weight"], s1["id_head.weight"])
    assert not torch.equal(s2["id_decoder.linear.bias"], s1["id_decoder.linear.bias"])


def test_rerun_skips_finished_phases(tiny_run):
    cfg, out = tiny_run
    stamp = (out / "phase3.pt").stat().st_mtime_ns
    train_liu2018(cfg)
    assert (out / "phase3.pt").stat().st_mtime_ns == stamp


def test_cli_train_liu2018_tiny(tmp_path):
    from facelab.cli import main

    # the loop's options dotted (train.batch_size) or by their short name (progress)
    sets = ["image_size=[32,32]", "n_identities=8", "images_per_identity=4", "train.batch_size=8", "phase_steps=[3,2,3]",
            "embedding_dim=16", "progress=False", "cache_pool=False"]
    argv = ["train", "liu2018", "--out", str(tmp_path / "cli")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert (tmp_path / "cli" / "phase3.pt").exists()


def test_vertex_loss_gradcheck():
    from facelab.train.liu2018 import _vertex_mse

    gen = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda p: _vertex_mse(p, target), (pred,))
    # hand value: every vertex 1 mm off along x, y and z -> squared distance 3 mm^2
    assert float(_vertex_mse(torch.zeros(2, 5, 3), torch.ones(2, 5, 3))) == pytest.approx(3.0)


def test_fitted_targets_replace_the_truth(tmp_path):
    """targets='fitted' trains on a `facelab fit` result of the same suite, not on the truth."""
    from facelab.fitting import CollectionFitConfig, fit_collection, save_fitted_targets

    loop = dataclasses.replace(TINY["train"], batch_size=2)
    cfg = Liu2018TrainConfig(out_dir=str(tmp_path / "run"), **{**TINY, "n_identities": 2, "images_per_identity": 2,
                                                               "phase_steps": (1, 1, 1), "train": loop})
    collection = training_suite(cfg)
    targets, _ = fit_collection(collection, CollectionFitConfig(n_steps=2, n_shape=4, n_albedo=2))
    path = save_fitted_targets(tmp_path / "targets.npz", targets)
    fitted = dataclasses.replace(cfg, targets="fitted", targets_path=str(path))
    pool = render_pool(collection, cache=False, align_to=cfg.image_size)
    got = _fitted(pool, fitted, collection)
    assert not torch.allclose(got["shape_identity"], pool["shape_identity"])
    assert torch.equal(got["image"], pool["image"]) and got["alpha_id"].shape == pool["alpha_id"].shape
    # only the 4 fitted identity components are non-zero
    assert torch.count_nonzero(got["alpha_id"][:, 4:]) == 0
    train_liu2018(fitted)
    assert (Path(fitted.out_dir) / "phase3.pt").exists()
    with pytest.raises(ValueError, match="targets_path"):
        Liu2018TrainConfig(targets="fitted")
    with pytest.raises(ValueError, match="pool"):
        train_liu2018(dataclasses.replace(fitted, pool=False, out_dir=str(tmp_path / "stream")))


def test_phase3_reports_how_much_each_term_pulls(tiny_run):
    cfg, out = tiny_run[0], tiny_run[1]
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert all("diagnostics" not in summary[s] for s in ("phase1", "phase2"))  # one loss term each
    diag = summary["phase3"]["diagnostics"]
    assert set(diag["terms"]) == {"L_R", "L_C"}
    for module in ("encoder", "decoders"):
        total = diag["terms"]["L_R"][module]["mean_share"] + diag["terms"]["L_C"].get(module, {"mean_share": 0.0})["mean_share"]
        assert total == pytest.approx(1.0)
    assert diag["accuracy"]["chance"] == pytest.approx(1 / 16)


# ------------------------------------------------------------- held-out curve
HELDOUT_COLUMNS = {"heldout/rmse_mm", "heldout/mean_face_rmse_mm", "heldout/rmse_id_mm"}


def test_heldout_curve_is_on_in_the_standard_profile_only():
    """quick keeps its timings and numbers (no held-out measurement); standard measures every 100 steps."""
    quick, standard = Liu2018TrainConfig(), Liu2018TrainConfig(profile="standard")
    assert [quick.train_config(p).heldout_every for p in (1, 2, 3)] == [0, 0, 0]
    assert [standard.train_config(p).heldout_every for p in (1, 2, 3)] == [100, 100, 100]


def test_heldout_curve_is_logged_in_every_stage_and_changes_nothing(tmp_path):
    """heldout_every logs the held-out error in each stage (the joint ablation too) and leaves
    every stage's weights as a run without it trains them."""
    from facelab.train import read_metrics

    stages = ("phase1", "phase2", "phase3", "phase2_joint")
    tiny = dict(TINY, n_identities=4, images_per_identity=2, phase_steps=(2, 1, 2), stages=stages)
    runs = {}
    for every in (0, 1):
        loop = dataclasses.replace(TINY["train"], batch_size=4, log_every=1, heldout_every=every)
        cfg = Liu2018TrainConfig(out_dir=str(tmp_path / f"every{every}"), **{**tiny, "train": loop})
        runs[every] = train_liu2018(cfg)
    for stage in stages:
        logged = read_metrics(runs[1] / stage)
        assert HELDOUT_COLUMNS <= set(logged), stage
        assert (logged["heldout/rmse_mm"] > 0).all() and (logged["heldout/mean_face_rmse_mm"] > 0).all()
        assert not HELDOUT_COLUMNS & set(read_metrics(runs[0] / stage))
        with_hook, without = (load_model(runs[k] / f"{stage}.pt")[0].state_dict() for k in (1, 0))
        assert all(torch.equal(with_hook[k], without[k]) for k in without), stage


def test_heldout_error_of_the_mean_face_is_its_floor():
    """A network whose identity code is always zero decodes the mean face: its held-out error is
    the floor; the held-out photos are aligned crops of identities the run never trains on."""
    from facelab.data.suites import ID_RANGES, ID_RANGE_SIZE
    from facelab.morphable import SynthFacesConfig, build_synthfaces
    from facelab.train.heldout import HELDOUT_IDENTITIES
    from facelab.train.liu2018 import heldout_set, heldout_shape_error

    cfg = Liu2018TrainConfig(**{**TINY, "train": dataclasses.replace(TINY["train"], heldout_every=10)})
    photos = heldout_set(cfg)
    ids = photos["identity"]
    assert ids.numel() == HELDOUT_IDENTITIES == ids.unique().numel()
    assert not set(ids.tolist()) & set(training_suite(cfg).table.identity.tolist())
    assert ((ids >= ID_RANGES["webface"]) & (ids < ID_RANGES["webface"] + ID_RANGE_SIZE)).all()
    assert photos["image"].shape == (HELDOUT_IDENTITIES, 3, *cfg.image_size)  # crops, not the 48 px photos
    assert torch.equal(photos["image"] * 255, (photos["image"] * 255).round())  # 8-bit, as the pool stores them

    morphable = build_synthfaces(SynthFacesConfig(resolution="quick"))
    measure = heldout_shape_error(cfg, morphable, photos=photos)
    net = build_liu2018_model({"resolution": "quick", "model": {
        "encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": list(cfg.image_size)}}}).eval()
    with torch.no_grad():
        net.id_head.weight.zero_()
        net.id_head.bias.zero_()
    out = measure(net)
    assert out["rmse_mm"] == pytest.approx(out["mean_face_rmse_mm"], rel=1e-6) and out["rmse_id_mm"] > 0
    with torch.no_grad():  # a non-rigid change of every decoded face: no longer the floor
        net.id_decoder.linear.bias.copy_(morphable.mean_shape.reshape(-1) * 0.05)
    assert measure(net)["rmse_mm"] > out["mean_face_rmse_mm"] + 0.1
    assert heldout_shape_error(Liu2018TrainConfig(**TINY), morphable) is None  # heldout_every 0
    folder = Liu2018TrainConfig(**{**TINY, "train": dataclasses.replace(TINY["train"], heldout_every=10)},
                                data={"kind": "imagefolder", "train": "DIR"}, targets="fitted", targets_path="T")
    assert heldout_shape_error(folder, morphable) is None
