"""Tests of the Gao et al. 2020 two-step recipe (facelab.train.gao2020)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from facelab.train import gao2020 as G
from facelab.io.checkpoint import load_checkpoint
from facelab.train.stages import read_summary
from facelab.models.registry import load_model
from facelab.train.gao2020 import (
    SOURCE_COL, SOURCE_LP, Gao2020Loss, Gao2020TrainConfig, build_trainee, hybrid_batches, merge_hybrid, render_pools,
    train_gao2020,
)
from facelab.train.trainer import CRITIC_STATE_KEY, LoopConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(image_size=(32, 32), lp_identities=4, lp_images_per_identity=4, col_identities=4, col_images_per_identity=4,
            batch_lp=4, batch_col=4, steps=(8, 4), warmup_steps=4, batch_warmup=4, cache_pool=False, num_threads=1,
            train=LoopConfig(log_every=1, ckpt_every=2, progress=False))
RECOG_KEYS = {"recog", "softmax", "center", "acc"}
ADV_KEYS = {"adv", "critic_loss", "d_wdist", "d_penalty"}
ALWAYS_KEYS = {"loss", "photo", "gdl", "lmk", "lmk_gdl", "smooth", "symm", "shape", "pair"}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _equal_states(a[k], b[k])
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = Gao2020TrainConfig(out_dir=str(tmp_path_factory.mktemp("gao") / "run"), **TINY)
    return cfg, train_gao2020(cfg)


@pytest.fixture(scope="module")
def tiny_data():
    cfg = Gao2020TrainConfig(out_dir="unused", **TINY)
    lp, col = G._suites(cfg)
    return cfg, lp.model, render_pools(cfg, lp, col)


# ----------------------------------------------------------------- config
def test_config_profiles_and_defaults():
    quick, full = Gao2020TrainConfig(), Gao2020TrainConfig(profile="full")
    assert (quick.backbone, quick.image_size, quick.resolution, quick.pool) == ("resnet_tiny", (64, 64), "quick", True)
    assert (full.backbone, full.train.lr, full.pool) == ("resnet50", 1e-4, False)
    assert quick.critic_lr == 5e-5 and quick.n_critic == 1 and (quick.batch_lp, quick.batch_col) == (16, 16)
    assert len(quick.steps) == 2 and quick.out_dir == "runs/gao2020-quick"
    tcfg = quick.train_config("step2")
    assert tcfg.steps == quick.steps[1] and tcfg.out_dir.endswith("step2") and tcfg.batch_size == 32


def test_standard_profile_shares_a_long_warmup_on_many_labelled_people():
    quick, standard = Gao2020TrainConfig(), Gao2020TrainConfig(profile="standard")
    assert quick.share_warmup and standard.share_warmup  # one warm-up per seed, every variant continues from it
    assert standard.warmup_steps > quick.warmup_steps and standard.lp_identities > 100 * quick.lp_identities
    assert standard.lp_images_per_identity == 1
    assert (quick.n_critic, quick.critic_p) == (1, 6.0) and (standard.n_critic, standard.critic_p) == (1, 2.0)
    assert standard.w_recog > quick.w_recog and standard.w_adv > quick.w_adv and standard.w_smooth > quick.w_smooth
    assert (quick.w_photo_step2, standard.w_photo_step2) == (1.0, 10.0) and standard.w_photo == 1.0
    # an unshared warm-up's batches hold the collections' images too (the recognition loss sees them)
    unshared = Gao2020TrainConfig(profile="standard", share_warmup=False)
    assert unshared.train_config("warmup").batch_size == unshared.batch_warmup + unshared.batch_col
    assert standard.train_config("warmup").batch_size == standard.batch_warmup
    assert Gao2020TrainConfig(profile="standard", w_adv=0.0).w_adv == 0.0  # an explicit value beats the profile's


def test_standard_profile_gives_every_variant_four_times_its_adaptation_step():
    """Each variant's own steps: step 1 four times step 2, and together more than the shared warm-up's
    share of the quick profile (the removed terms need thousands of own steps to pull)."""
    quick, standard = Gao2020TrainConfig(), Gao2020TrainConfig(profile="standard")
    assert standard.steps == (3200, 800) and standard.steps[0] == 4 * standard.steps[1]
    assert sum(standard.steps) > standard.warmup_steps > sum(quick.steps)
    assert standard.w_smooth == 4.0


@pytest.mark.parametrize("bad", [dict(profile="huge"), dict(smoothness="cot"), dict(steps=(1,)), dict(steps=(1, 0)),
                                 dict(batch_lp=1), dict(batch_col=0), dict(lr=-1.0), dict(critic_lr=0.0),
                                 dict(n_critic=0), dict(critic_p=0.0), dict(w_adv=-0.1), dict(w_photo=float("nan")),
                                 dict(grad_clip=float("inf")), dict(batch_size=8)])
def test_config_bad_values_raise(bad):
    from facelab.config import replace_fields

    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):  # lr, grad_clip, batch_size: fields of the nested loop options
        replace_fields(Gao2020TrainConfig(), bad)


# -------------------------------------------------------------------- data
def test_merge_hybrid_layout_and_errors():
    lp = {"x": torch.arange(4)}
    col = {"x": torch.arange(10, 16)}
    assert merge_hybrid(lp, col)["x"].tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 14, 15]
    # two ranks: each contiguous half holds half of each part
    assert merge_hybrid(lp, col, 2)["x"].tolist() == [0, 1, 10, 11, 12, 2, 3, 13, 14, 15]
    with pytest.raises(ValueError, match="multiples of the 3 processes"):
        merge_hybrid(lp, col, 3)


def test_hybrid_batches_fields_and_determinism(tiny_data):
    cfg, morphable, (lp_pool, col_pool) = tiny_data
    get = hybrid_batches(lp_pool, col_pool, cfg, morphable)
    b = get(3)
    B = cfg.batch_lp + cfg.batch_col
    assert b["image"].shape == (B, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["photo_mask"].shape == (B, 1, 32, 32) and 0 <= float(b["photo_mask"].min()) <= float(b["photo_mask"].max()) <= 1
    assert b["source"].tolist() == [SOURCE_LP] * cfg.batch_lp + [SOURCE_COL] * cfg.batch_col
    assert b["alpha_id"].shape == (B, morphable.n_shape) and b["alpha_exp"].shape == (B, morphable.n_exp)
    assert torch.count_nonzero(b["alpha_id"][cfg.batch_lp:]) == 0 and torch.count_nonzero(b["alpha_id"][:cfg.batch_lp]) > 0
    assert b["label"].max() < cfg.col_identities
    again = hybrid_batches(lp_pool, col_pool, cfg, morphable)(3)
    assert all(torch.equal(b[k], again[k]) for k in b)
    assert not torch.equal(get(4)["image"], b["image"])
    # the mask is the data's face mask without occluders (an independent recomputation)
    one = G._suites(cfg)[1].batch(torch.arange(4))
    want = one["face_mask"] * (1 - one["occlusion_mask"])
    got = col_pool["photo_mask"][:4].float() / G.MASK_LEVELS
    assert torch.allclose(got, want, atol=0.5 / G.MASK_LEVELS + 1e-6)


def test_streamed_batches_match_the_pool(tiny_data):
    """pool=False (the full profile) renders the same hybrid batches on the fly."""
    cfg, morphable, pools = tiny_data
    stream_cfg = dataclasses.replace(cfg, pool=False, num_workers=0)
    lp, col = G._suites(stream_cfg)
    streamed = hybrid_batches(lp, col, stream_cfg, morphable)(2)
    assert torch.is_grad_enabled()  # streaming in this process must not switch gradients off
    pooled = hybrid_batches(*pools, cfg, morphable)(2)
    assert streamed.keys() == pooled.keys()
    for k in ("source", "label", "alpha_id", "alpha_exp", "landmarks2d"):
        assert torch.allclose(streamed[k].float(), pooled[k].float(), rtol=1e-4, atol=1e-3), k
    # the pool stores images and masks as uint8
    assert (streamed["image"] - pooled["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert (streamed["photo_mask"] - pooled["photo_mask"]).abs().max() <= 0.5 / G.MASK_LEVELS + 1e-6


# ------------------------------------------------------------------ losses
def test_loss_terms_at_a_fresh_model_match_hand_values(tiny_data):
    """A fresh model reconstructs the template: shape L1 and smoothness have closed forms."""
    cfg, morphable, (lp_pool, col_pool) = tiny_data
    batch = hybrid_batches(lp_pool, col_pool, cfg, morphable)(0)
    trainee, critic = build_trainee(cfg, "step1", morphable, cfg.col_identities)
    loss, m = Gao2020Loss(cfg, morphable, critic)(trainee, batch)
    assert ALWAYS_KEYS - {"loss"} | RECOG_KEYS | {"adv"} <= set(m)
    assert all(math.isfinite(float(v)) for v in m.values())
    # template smoothness of the template is 0; albedo = mean albedo, whose asymmetry is known
    assert float(m["smooth"]) == 0.0
    template = morphable.mean_shape
    mirror = morphable.mean_albedo[morphable.symmetry]
    assert float(m["symm"]) == pytest.approx(float((morphable.mean_albedo - mirror).abs().mean()), abs=1e-6)
    # shape: mean |template - 3DMM shape| over the face region of the lp rows
    lp = batch["source"] == SOURCE_LP
    target = template + (morphable.shape_basis @ batch["alpha_id"][lp].T + morphable.exp_basis @ batch["alpha_exp"][lp].T
                         ).T.reshape(-1, template.shape[0], 3)
    err = (template - target).abs().mean(-1)[:, morphable.face_mask]
    assert float(m["shape"]) == pytest.approx(float(err.mean()), rel=1e-4)
    # the total is the weighted sum of the logged terms
    total = sum(getattr(cfg, f"w_{k}") * float(m[k]) for k in ("photo", "gdl", "lmk", "lmk_gdl", "smooth", "symm",
                                                                "shape", "pair", "recog", "adv"))
    assert float(loss.detach()) == pytest.approx(total, rel=1e-5)
    assert critic.fake is not None and critic.fake.shape == (batch["image"].shape[0], template.shape[0], 3)
    assert not critic.fake.requires_grad
    # the generator's backward leaves no gradient in the discriminator
    loss.backward()
    assert all(p.grad is None for p in critic.critic.parameters())
    assert trainee.model.encoder.conv1.weight.grad is not None


def test_laplacian_smoothness_is_not_zero_at_the_template(tiny_data):
    cfg, morphable, (lp_pool, col_pool) = tiny_data
    lap = dataclasses.replace(cfg, smoothness="laplacian")
    batch = hybrid_batches(lp_pool, col_pool, cfg, morphable)(0)
    trainee, critic = build_trainee(lap, "step1", morphable, cfg.col_identities)
    _, m = Gao2020Loss(lap, morphable, critic)(trainee, batch)
    from facelab.losses.shape import uniform_laplacian

    want = uniform_laplacian(morphable.mean_shape[None], trainee.model.edge_index).abs().sum(-1).mean()
    assert float(m["smooth"]) == pytest.approx(float(want), rel=1e-5) and float(want) > 0


def test_loss_and_parent_errors(tiny_data, tmp_path):
    from facelab.io.checkpoint import save_checkpoint

    cfg, morphable, _ = tiny_data
    with pytest.raises(ValueError, match="critic: use_adv=True needs the ShapeCritic"):
        Gao2020Loss(cfg, morphable, None)
    trainee, critic = build_trainee(cfg, "step2", morphable, cfg.col_identities)
    # a step-1 checkpoint trained without the identity head / the discriminator cannot start this step 2
    path = save_checkpoint(tmp_path / "step1.pt", model_name="gao2020", model_config=G.model_config(cfg),
                           state_dict=trainee.model.state_dict(), step=1,
                           extra={"recognition": None, CRITIC_STATE_KEY: critic.state_dict()})
    with pytest.raises(ValueError, match="no identity head"):
        G._load_parent(trainee, critic, path)
    path = save_checkpoint(tmp_path / "step1.pt", model_name="gao2020", model_config=G.model_config(cfg),
                           state_dict=trainee.model.state_dict(), step=1,
                           extra={"recognition": trainee.recognition.state_dict()})
    with pytest.raises(ValueError, match="no discriminator"):
        G._load_parent(trainee, critic, path)


def test_critic_step_uses_the_losss_fakes(tiny_data):
    cfg, morphable, (lp_pool, col_pool) = tiny_data
    batch = hybrid_batches(lp_pool, col_pool, cfg, morphable)(1)
    trainee, critic = build_trainee(cfg, "step1", morphable, cfg.col_identities)
    Gao2020Loss(cfg, morphable, critic)(trainee, batch)
    before = [p.detach().clone() for p in critic.critic.parameters()]
    metrics = critic.step(trainee, batch, 0)
    assert set(metrics) == {"critic_loss", "d_wdist", "d_penalty"} and critic.fake is None and critic.updates == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, critic.critic.parameters()))
    # without the loss's fakes the critic reconstructs the batch itself
    assert critic.step(trainee, batch, 1).keys() == metrics.keys()


# -------------------------------------------------------------- tiny run
def test_tiny_run_writes_loadable_checkpoints(tiny_run):
    cfg, out = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    for k, stage in enumerate(("step1", "step2")):
        model, ckpt = load_model(out / f"{stage}.pt", expect_model="gao2020")
        assert ckpt["step"] == cfg.steps[k] and summary[stage]["step"] == cfg.steps[k]
        assert model.config.albedo == ("gcn", "cnn")[k] and model.config.image_size == (32, 32)
        with torch.no_grad():
            rec = model(torch.rand(2, 3, 32, 32))
        assert rec["shape"].shape == (2, model.n_verts, 3) and torch.isfinite(rec["shape"]).all()
        extra = ckpt["extra"]
        assert extra["recognition"]["softmax.weight"].shape == (cfg.col_identities, model.config.id_dim)
        # the discriminator continues across the steps: its update count runs on
        assert extra[CRITIC_STATE_KEY]["updates"] == sum(cfg.steps[:k + 1]) * cfg.n_critic
        rows = _rows(out / stage)
        assert [r["step"] for r in rows] == list(range(1, cfg.steps[k] + 1))
        assert ALWAYS_KEYS | RECOG_KEYS | ADV_KEYS <= set(rows[0])
        assert all(math.isfinite(v) for r in rows for v in r.values())


def test_step2_starts_from_step1(tiny_run):
    cfg, out = tiny_run
    s1, s2 = (load_checkpoint(out / f"{s}.pt")["state_dict"] for s in ("step1", "step2"))
    torch.manual_seed(cfg.train.seed)
    fresh = build_trainee(cfg, "step1", G._suites(cfg)[0].model, cfg.col_identities)[0].model.state_dict()
    # step 2 does not use the GCN albedo decoder: it keeps step 1's trained weights exactly
    key = "albedo_decoder.fc.weight"
    assert torch.equal(s2[key], s1[key]) and not torch.equal(s1[key], fresh[key])
    # ... and trains the CNN albedo decoder, which step 1 left at its initialisation
    key = "cnn_albedo.fc.weight"
    assert torch.equal(s1[key], fresh[key]) and not torch.equal(s2[key], s1[key])


def test_rerun_skips_finished_steps(tiny_run, tmp_path):
    cfg, out = tiny_run
    stamp = (out / "step2.pt").stat().st_mtime_ns
    train_gao2020(cfg)
    assert (out / "step2.pt").stat().st_mtime_ns == stamp
    # a run that kept its final model alone (an artifact without step 1 or the warm-up) is finished too
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "step2.pt", alone / "step2.pt")
    train_gao2020(dataclasses.replace(cfg, out_dir=str(alone)))
    assert sorted(p.name for p in alone.iterdir()) == ["step2.pt"]


def test_interrupted_and_deleted_runs_reproduce_bitwise(tiny_run, tmp_path, monkeypatch):
    cfg, out = tiny_run
    run = dataclasses.replace(cfg, out_dir=str(tmp_path / "run"))
    real_save = Trainer.save

    def crash_after_step2_checkpoint(self):
        path = real_save(self)
        if self.out_dir.name == "step2" and self.step == 2:
            raise KeyboardInterrupt("simulated crash")
        return path

    monkeypatch.setattr(Trainer, "save", crash_after_step2_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_gao2020(run)
    monkeypatch.setattr(Trainer, "save", real_save)
    assert (tmp_path / "run" / "step1.pt").exists() and not (tmp_path / "run" / "step2.pt").exists()
    torch.manual_seed(1234)  # another global RNG state, as in a fresh process
    train_gao2020(run)

    def compare(stage):
        a = load_checkpoint(out / f"{stage}.pt")
        b = load_checkpoint(tmp_path / "run" / f"{stage}.pt")
        _equal_states(a["state_dict"], b["state_dict"])
        _equal_states(a["extra"]["recognition"], b["extra"]["recognition"])
        _equal_states(a["extra"][CRITIC_STATE_KEY], b["extra"][CRITIC_STATE_KEY])

    compare("step2")
    # deleting the final checkpoint and its run folder retrains the step: the same weights again
    (tmp_path / "run" / "step2.pt").unlink()
    for f in sorted((tmp_path / "run" / "step2").iterdir()):
        f.unlink()
    train_gao2020(run)
    compare("step2")
    compare("step1")


# --------------------------------------------------------------- ablations
@pytest.mark.parametrize("switch, removed", [("use_recog", RECOG_KEYS), ("use_adv", ADV_KEYS)])
def test_ablation_switches_remove_their_losses(tmp_path, switch, removed):
    cfg = Gao2020TrainConfig(out_dir=str(tmp_path / "run"), **{**TINY, "steps": (2, 1)}, **{switch: False})
    out = train_gao2020(cfg)
    for stage in ("step1", "step2"):
        rows = _rows(out / stage)
        assert not removed & set(rows[0]) and ALWAYS_KEYS <= set(rows[0])
        ckpt = load_checkpoint(out / f"{stage}.pt")
        if switch == "use_recog":
            assert ckpt["extra"]["recognition"] is None and CRITIC_STATE_KEY in ckpt["extra"]
        else:
            assert CRITIC_STATE_KEY not in ckpt["extra"] and ckpt["extra"]["recognition"] is not None


def test_smoothness_switch_changes_the_term(tmp_path):
    short = {**TINY, "steps": (1, 1), "warmup_steps": 0}
    template = train_gao2020(Gao2020TrainConfig(out_dir=str(tmp_path / "t"), **short))
    lap = train_gao2020(Gao2020TrainConfig(out_dir=str(tmp_path / "l"), **short, smoothness="laplacian"))
    # without a warm-up step 1 starts at the template: eq. 9 is exactly 0 there, the conventional Laplacian is not
    assert _rows(template / "step1")[0]["smooth"] == 0.0
    assert _rows(lap / "step1")[0]["smooth"] > 0.01


def test_cli_train_gao2020_tiny(tmp_path):
    from facelab.cli import main

    sets = ["image_size=32,32", "lp_identities=2", "lp_images_per_identity=2", "col_identities=2",
            "col_images_per_identity=2", "batch_lp=2", "batch_col=2", "steps=1,1", "warmup_steps=1", "batch_warmup=2",
            "progress=false", "cache_pool=false"]
    argv = ["train", "gao2020", "--out", str(tmp_path / "cli")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert load_model(tmp_path / "cli" / "step2.pt", expect_model="gao2020")[0].config.albedo == "cnn"
    assert (tmp_path / "cli" / "warmup.pt").exists()


# --------------------------------------------------------------- torchrun
DDP_WORKER = textwrap.dedent(f"""
    import sys
    from facelab.train.gao2020 import Gao2020TrainConfig, train_gao2020
    from facelab.train.trainer import LoopConfig

    tiny = {TINY!r}
    tiny["steps"] = (2, 1)
    train_gao2020(Gao2020TrainConfig(out_dir=sys.argv[1], **tiny))
""")


@pytest.mark.slow
def test_two_processes_train_both_steps(tmp_path):
    """Under torchrun every rank trains on labelled and unlabelled rows and the critic stays in sync."""
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "step2.pt")
    assert ckpt["extra"]["world_size"] == 2 and ckpt["extra"][CRITIC_STATE_KEY]["updates"] == 3
    rows = _rows(tmp_path / "run" / "step1")
    assert ALWAYS_KEYS | RECOG_KEYS | ADV_KEYS <= set(rows[0]) and all(math.isfinite(v) for v in rows[-1].values())


# ----------------------------------------------------------------- warm-up
def test_warmup_trains_first_and_step1_starts_from_it(tiny_run):
    cfg, out = tiny_run
    root = Path(cfg.out_dir)
    warm = load_checkpoint(root / "warmup.pt", expect_model="gao2020")
    assert warm["step"] == cfg.warmup_steps and warm["extra"]["recognition"] is None
    rows = _rows(root / "warmup")
    assert set(G.WARMUP_TERMS) <= set(rows[-1]) and not (RECOG_KEYS | ADV_KEYS) & set(rows[-1])
    # the albedo decoder and the light head get no gradient in the warm-up: still the initial weights
    init, _ = build_trainee(cfg, "step1", G._suites(cfg)[0].model, cfg.col_identities)
    state = warm["state_dict"]
    for name, value in init.model.state_dict().items():
        if name.startswith(("albedo_decoder", "light_head")):
            assert torch.equal(state[name], value), name
    assert not torch.equal(state["shape_decoder.head.weight"], init.model.state_dict()["shape_decoder.head.weight"])
    # step1's first logged row comes after loading the warm-up weights, not the initial ones
    first = _rows(root / "step1")[0]
    assert "warmup" in read_summary(out) and math.isfinite(first["shape"])


@pytest.fixture(scope="module")
def unshared_run(tmp_path_factory):
    loop = dataclasses.replace(TINY["train"], diagnose_every=2)
    cfg = Gao2020TrainConfig(out_dir=str(tmp_path_factory.mktemp("gao") / "unshared"),
                             **{**TINY, "steps": (2, 2), "share_warmup": False, "n_critic": 2, "critic_p": 2.0, "train": loop})
    return cfg, train_gao2020(cfg)


def test_unshared_warmup_trains_the_ablated_terms_and_hands_them_on(unshared_run):
    cfg, out = unshared_run
    rows = _rows(out / "warmup")
    # every term that needs no rasterising: the recognition and adversarial losses and the smoothness prior
    assert {"shape", "pair", "lmk", "smooth", "recog", "acc", "adv", "d_wdist"} <= set(rows[-1])
    assert not {"photo", "gdl", "lmk_gdl", "symm"} & set(rows[-1])
    diag = read_summary(out)["warmup"]["diagnostics"]
    assert {"recog", "adv", "smooth"} <= set(diag["terms"]) and "albedo_decoder" not in diag["terms"]["shape"]
    assert diag["accuracy"]["chance"] == pytest.approx(1 / cfg.col_identities)
    # the warm-up's identity head and critic are step1's starting point (not fresh ones)
    warm = load_checkpoint(out / "warmup.pt", expect_model="gao2020")
    assert warm["extra"]["recognition"] and warm["extra"][CRITIC_STATE_KEY]
    data = G._prepare(cfg)
    trainer = G._build_stage(cfg, G.Stage("step1", parent="warmup"), data, out / "warmup.pt")
    head = trainer.model.recognition.state_dict()
    _equal_states(head, warm["extra"]["recognition"])
    _equal_states(trainer.critic.critic.state_dict(), warm["extra"][CRITIC_STATE_KEY]["critic"])
    assert trainer.critic.p == 2.0 and trainer.critic.n_critic == 2


def test_geometric_loss_is_the_full_loss_without_the_rendered_terms(tiny_data):
    cfg, mm, (lp, col) = tiny_data
    batch = hybrid_batches(lp, col, cfg, mm)(0)
    trainee, critic = build_trainee(cfg, "step1", mm, cfg.col_identities)
    _, full = Gao2020Loss(cfg, mm, critic)(trainee, batch)
    loss, geometric = Gao2020Loss(cfg, mm, critic, render=False)(trainee, batch)
    assert set(full) - set(geometric) == {"photo", "gdl", "lmk_gdl", "symm"}
    for name in ("smooth", "shape", "pair", "recog", "adv"):
        assert float(geometric[name]) == pytest.approx(float(full[name]), rel=1e-5), name
    total = sum(getattr(cfg, f"w_{k}") * float(geometric[k]) for k in ("lmk", "smooth", "shape", "pair", "recog", "adv"))
    assert float(loss.detach()) == pytest.approx(total, rel=1e-5)


def test_warmup_loss_matches_hand_terms(tiny_data):
    cfg, mm, (lp, _) = tiny_data
    trainee, _ = build_trainee(dataclasses.replace(cfg, use_recog=False, use_adv=False), "step1", mm, 0)
    batch = G.warmup_batches(lp, cfg, mm)(0)
    loss, metrics = G.WarmupLoss(cfg, mm)(trainee, batch)
    model = trainee.model
    # a fresh model decodes the template (zero-initialised last layer): the shape term is the template's L1
    target = mm.shape(batch["alpha_id"], batch["alpha_exp"])
    face = model.face_mask.bool()
    hand = (model.template - target)[:, face].abs().mean()
    assert metrics["shape"].item() == pytest.approx(hand.item(), rel=1e-5)
    total = cfg.w_shape * metrics["shape"] + cfg.w_pair * metrics["pair"] + cfg.w_lmk * metrics["lmk"]
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    loss.backward()
    assert model.shape_decoder.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.light_head.parameters())


def test_warmup_from_copies_and_checks_the_model(tiny_run, tmp_path):
    cfg, _ = tiny_run
    source = Path(cfg.out_dir) / "warmup.pt"
    other = dataclasses.replace(cfg, out_dir=str(tmp_path / "other"), warmup_from=str(source), use_recog=False,
                                steps=(2, 1))
    train_gao2020(other)
    assert (tmp_path / "other" / "warmup.pt").read_bytes() == source.read_bytes()
    assert not (tmp_path / "other" / "warmup").exists()  # not retrained
    with pytest.raises(FileNotFoundError, match="warmup_from"):
        train_gao2020(dataclasses.replace(other, out_dir=str(tmp_path / "x"), warmup_from=str(tmp_path / "nope.pt")))
    with pytest.raises(ValueError, match="warmup_from"):
        train_gao2020(dataclasses.replace(other, out_dir=str(tmp_path / "y"), cheb_k=2))


@pytest.mark.parametrize("bad", [dict(warmup_steps=-2), dict(batch_warmup=0), dict(warmup_lr=0.0)])
def test_warmup_config_bad_values_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Gao2020TrainConfig(**bad)


def test_term_diagnostics_cover_every_term_and_module(tmp_path):
    from facelab.train.stages import read_summary

    loop = dataclasses.replace(TINY["train"], diagnose_every=2)
    cfg = Gao2020TrainConfig(out_dir=str(tmp_path / "run"), **{**TINY, "steps": (4, 2), "train": loop})
    out = train_gao2020(cfg)
    summary = read_summary(out)
    assert "diagnostics" not in summary["warmup"]  # the warm-up has no ablated term to watch
    for stage in ("step1", "step2"):
        diag = summary[stage]["diagnostics"]
        assert {"photo", "shape", "recog", "adv"} <= set(diag["terms"])
        assert set(diag["terms"]["photo"]) == {"encoder", "shape_decoder", "albedo_decoder"}
        assert diag["accuracy"]["chance"] == pytest.approx(1 / cfg.col_identities)
        row = next(r for r in _rows(out / stage) if any(k.startswith("share/") for k in r))
        encoder = [v for k, v in row.items() if k.startswith("share/") and k.endswith("@encoder")]
        assert sum(encoder) == pytest.approx(1.0)
    # the adversarial term reaches the shape decoder and never the albedo decoder
    assert "albedo_decoder" not in summary["step1"]["diagnostics"]["terms"]["adv"] or \
        summary["step1"]["diagnostics"]["terms"]["adv"]["albedo_decoder"]["mean_share"] == 0.0


# ------------------------------------------------------------- held-out curve
HELDOUT_COLUMNS = {"heldout/rmse_mm", "heldout/mean_face_rmse_mm", "heldout/shape"}


def test_heldout_curve_is_on_in_the_standard_profile_only():
    """quick keeps its timings and numbers (no held-out measurement); standard measures every 100 steps."""
    quick, standard = Gao2020TrainConfig(), Gao2020TrainConfig(profile="standard")
    assert [quick.train_config(s).heldout_every for s in ("warmup",) + G.STEPS] == [0, 0, 0]
    assert [standard.train_config(s).heldout_every for s in ("warmup",) + G.STEPS] == [100, 100, 100]


def test_heldout_curve_is_logged_in_every_stage_and_changes_nothing(tmp_path):
    """heldout_every logs the held-out error in the warm-up and both steps and leaves the weights,
    the identity head and the critic as a run without it trains them."""
    from facelab.train import read_metrics

    runs = {}
    for every in (0, 1):
        loop = dataclasses.replace(TINY["train"], heldout_every=every)
        cfg = Gao2020TrainConfig(out_dir=str(tmp_path / f"every{every}"), **{**TINY, "warmup_steps": 2,
                                                                             "steps": (2, 1), "train": loop})
        runs[every] = train_gao2020(cfg)
    for stage in ("warmup", "step1", "step2"):
        logged = read_metrics(runs[1] / stage)
        assert HELDOUT_COLUMNS <= set(logged), stage
        assert (logged["heldout/rmse_mm"] > 0).all() and (logged["heldout/mean_face_rmse_mm"] > 0).all()
        assert not HELDOUT_COLUMNS & set(read_metrics(runs[0] / stage))
        with_hook, without = (load_checkpoint(runs[k] / f"{stage}.pt") for k in (1, 0))
        _equal_states(with_hook["state_dict"], without["state_dict"])
        if stage != "warmup":
            _equal_states(with_hook["extra"]["recognition"], without["extra"]["recognition"])
            _equal_states(with_hook["extra"][CRITIC_STATE_KEY], without["extra"][CRITIC_STATE_KEY])


def test_heldout_error_of_the_mean_face_is_its_floor(tiny_data):
    """A fresh model decodes the mean face for every photo: its held-out error is the floor; the
    held-out photos are of lp identities the run never trains on."""
    from facelab.data.suites import ID_RANGES, ID_RANGE_SIZE
    from facelab.train.heldout import HELDOUT_IDENTITIES

    cfg, morphable, (lp_pool, _) = tiny_data
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, heldout_every=10))
    photos = G.heldout_set(cfg)
    ids = photos["identity"]
    assert ids.numel() == HELDOUT_IDENTITIES == ids.unique().numel()
    assert not set(ids.tolist()) & set(G._suites(cfg)[0].table.identity.tolist())
    assert ((ids >= ID_RANGES["lp"]) & (ids < ID_RANGES["lp"] + ID_RANGE_SIZE)).all()
    assert photos["image"].shape[1:] == lp_pool["image"].shape[1:]
    assert torch.equal(photos["image"] * 255, (photos["image"] * 255).round())  # 8-bit, as the pools store them

    measure = G.heldout_shape_error(cfg, morphable, photos=photos)
    trainee = build_trainee(cfg, "step1", morphable, cfg.col_identities)[0].eval()
    out = measure(trainee)
    assert out["rmse_mm"] == pytest.approx(out["mean_face_rmse_mm"], rel=1e-6) and out["shape"] > 0
    assert measure(trainee.model) == out  # the bare model measures the same
    with torch.no_grad():  # a non-rigid change of every decoded face: no longer the floor
        trainee.model.template.mul_(1.05)
    assert measure(trainee)["rmse_mm"] > out["mean_face_rmse_mm"] + 0.1
    assert G.heldout_shape_error(dataclasses.replace(cfg, train=TINY["train"]), morphable) is None  # heldout_every 0
    real = dataclasses.replace(cfg, data=G.Gao2020DataConfig(kind="real", labelled="LP", collections="COL"))
    assert G.heldout_shape_error(real, morphable) is None


def test_stage_weights_photometric_weight_per_step():
    from facelab.train.gao2020 import Gao2020TrainConfig, stage_weights

    cfg = Gao2020TrainConfig(profile="quick", w_photo=2.0, w_photo_step2=5.0)
    assert [stage_weights(cfg, s).w_photo for s in ("warmup", "step1", "step2")] == [2.0, 2.0, 5.0]
    assert stage_weights(cfg, "step2").w_gdl == cfg.w_gdl  # only the photometric weight changes
    assert Gao2020TrainConfig(profile="quick").w_photo_step2 == 1.0  # the profile's
    with pytest.raises(ValueError, match="stage"):
        stage_weights(cfg, "step3")
    with pytest.raises(ValueError, match="w_photo_step2"):
        Gao2020TrainConfig(profile="quick", w_photo_step2=-1.0)
