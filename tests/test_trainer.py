"""facelab.train.trainer and the regressor recipe (facelab.train.regressor)."""

import csv
import json

import pytest
import torch

from crash import fit_until_crash
from facelab.models.regressor import CoefficientRegressor, RegressorConfig
from facelab.io.checkpoint import load_checkpoint
from facelab.train.regressor import RegressorLoss, pool_batches, render_pool
from facelab.train.trainer import NonFiniteLossError, StepLoader, TrainConfig, Trainer, step_indices

SIZE = (32, 32)
N_SHAPE, N_EXP = 10, 5


@pytest.fixture(scope="module")
def lp():
    from facelab.data import make_suite

    suite = make_suite("lp", image_size=SIZE, resolution="quick", n_identities=16, images_per_identity=4)
    return suite, render_pool(suite, cache=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(lp, out_dir, steps, seed=0, ckpt_every=4, log_every=1, lr=3e-3, init_seed=None):
    suite, pool = lp
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = CoefficientRegressor(RegressorConfig(n_shape=N_SHAPE, n_exp=N_EXP, image_size=SIZE), morphable=suite.model)
    model.set_target_statistics(pool["pose"], pool["sh"])
    loss_fn = RegressorLoss(suite.model, N_SHAPE, N_EXP, SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    cfg = TrainConfig(steps=steps, batch_size=16, lr=lr, log_every=log_every, ckpt_every=ckpt_every, seed=seed,
                      out_dir=str(out_dir), progress=False)
    return Trainer(model, opt, pool_batches(pool, 16, seed), loss_fn, cfg, model_name="regressor")


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_loss_decreases_and_logs(lp, tmp_path):
    out = make_run(lp, tmp_path, steps=30, ckpt_every=10).fit()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    jsonl = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in jsonl] == list(range(1, 31)) and {"loss", "id", "lmk_px", "lr"} <= set(jsonl[0])
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["train"]["steps"] == 30 and record["model_name"] == "regressor" and record["model"]["n_shape"] == N_SHAPE
    assert out["step"] == 30 and load_checkpoint(tmp_path / "last.pt")["step"] == 30


def test_resume_after_interruption_is_bitwise_identical(lp, tmp_path):
    make_run(lp, tmp_path / "straight", steps=12).fit()

    fit_until_crash(make_run(lp, tmp_path / "resumed", steps=12), at_step=10)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 8
    # a fresh process: other initial weights, other global RNG state
    torch.manual_seed(1234)
    resumed = make_run(lp, tmp_path / "resumed", steps=12, init_seed=99)
    out = resumed.fit()
    assert out["resumed_from"] == 8 and out["step"] == 12
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # logs were cut back to the checkpoint and continued: one row per step
    assert [int(r["step"]) for r in read_csv(tmp_path / "resumed" / "metrics.csv")] == list(range(1, 13))
    # a finished run resumes to a no-op
    assert make_run(lp, tmp_path / "resumed", steps=12).fit()["resumed_from"] == 12


def test_heldout_curve_is_logged_and_changes_nothing(lp, tmp_path):
    """heldout_every logs the callable's figures at its interval and the last step, in eval mode,
    and the trained weights are bitwise those of a run without it."""
    suite, pool = lp
    held = pool["image"][:8].float() / 255
    seen = []

    def heldout(model):
        seen.append(model.training)
        return {"abs_mean": model(held)["alpha_id"].abs().mean()}

    plain = make_run(lp, tmp_path / "plain", steps=10, log_every=2)
    plain.fit()
    watched = make_run(lp, tmp_path / "watched", steps=10, log_every=2)
    watched.config.heldout_every, watched.heldout = 4, heldout
    watched.fit()
    rows = read_csv(tmp_path / "watched" / "metrics.csv")
    logged = {int(r["step"]): float(r["heldout/abs_mean"]) for r in rows if r.get("heldout/abs_mean")}
    assert sorted(logged) == [4, 8, 10] and seen == [False, False, False]
    with torch.no_grad():
        assert logged[10] == pytest.approx(float(watched.model.eval()(held)["alpha_id"].abs().mean()), rel=1e-5)
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["state_dict"] for name in ("plain", "watched"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="heldout_every"):
        TrainConfig(heldout_every=-1)


def test_nan_loss_stops_and_keeps_last_checkpoint(lp, tmp_path):
    trainer = make_run(lp, tmp_path, steps=10, ckpt_every=5)
    real_loss = trainer.loss_fn

    def nan_at_step_7(model, batch):
        loss, metrics = real_loss(model, batch)
        return (loss * float("nan") if trainer.step == 6 else loss), metrics

    trainer.loss_fn = nan_at_step_7
    with pytest.raises(NonFiniteLossError, match=r"step 7: the loss is NaN.*last\.pt \(step 5\)"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    # the bad step did not touch the weights: they are those after step 6
    assert trainer.step == 6
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_trainer_bad_input_raises(lp, tmp_path):
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="profile"):
        TrainConfig(profile="huge")
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    cfg = TrainConfig(steps=2, out_dir=str(tmp_path), progress=False)
    with pytest.raises(TypeError, match="model"):
        Trainer("net", opt, lambda s: {}, lambda m, b: None, cfg)
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(net, "sgd", lambda s: {}, lambda m, b: None, cfg)
    with pytest.raises(TypeError, match="batches"):
        Trainer(net, opt, 3, lambda m, b: None, cfg)
    trainer = Trainer(net, opt, iter([{"x": torch.ones(1, 1)}]), lambda m, b: (m(b["x"]).sum() ** 2, {}), cfg)
    with pytest.raises(ValueError, match="ran out at step 1"):
        trainer.fit()


def test_step_indices_cover_each_epoch_once():
    n, bs = 10, 3
    first_epoch = torch.cat([step_indices(n, bs, s, seed=5) for s in range(3)])
    assert first_epoch.unique().numel() == 9  # 3 full batches, one sample left for next epoch
    assert torch.equal(step_indices(n, bs, 4, seed=5), step_indices(n, bs, 4, seed=5))
    assert not torch.equal(step_indices(n, bs, 0, seed=5), step_indices(n, bs, 0, seed=6))
    with pytest.raises(ValueError, match="batch_size"):
        step_indices(3, 4, 0)


def test_step_loader_matches_step_indices_and_restarts():
    class Toy:
        def __len__(self):
            return 12

        def batch(self, idx):
            return {"idx": idx}

    load = StepLoader(Toy(), 4, total_steps=6, seed=2)
    got = [load(s)["idx"] for s in (0, 1, 2, 5)]
    expected = [step_indices(12, 4, s, seed=2) for s in (0, 1, 2, 5)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_regressor_loss_landmarks_are_exact_for_true_parameters(lp):
    """With the true coefficients and pose, the projected landmarks are the data's (independent check)."""
    suite, pool = lp
    morph = suite.model
    loss_fn = RegressorLoss(morph, morph.n_shape, morph.n_exp, SIZE)
    batch = {k: v[:4] for k, v in pool.items()}
    lm3d = loss_fn.landmarks3d(batch["alpha_id"], batch["alpha_exp"])
    full = morph.shape(batch["alpha_id"], batch["alpha_exp"])[:, morph.landmarks]
    assert torch.allclose(lm3d, full, atol=1e-3)
    from facelab.fitting import project_landmarks

    # the data's shapes are not exactly in the model's span, so allow a fraction of a pixel
    assert (project_landmarks(lm3d, batch["pose"]) - batch["landmarks2d"]).norm(dim=-1).mean() < 0.5


def test_regressor_loss_gradcheck():
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    morph = build_synthfaces(SynthFacesConfig(resolution="quick")).to(dtype=torch.float64)
    loss_fn = RegressorLoss(morph, 3, 2, SIZE).double()
    a = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, e: loss_fn.landmarks3d(a, e), (a, e))


def test_device_auto_resolves_and_bad_names_raise():
    """device="auto" (the default everywhere) is CUDA when available, else the CPU, and is saved resolved."""
    from facelab.metrics.model_eval import ModelEvalConfig
    from facelab.train.liu2018 import Liu2018TrainConfig

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig().device == expected and Liu2018TrainConfig().train.device == expected
    assert ModelEvalConfig().resolved("quick").device == expected
    assert TrainConfig(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu0")
