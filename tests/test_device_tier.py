"""The device tier: data, fitting, training, a recipe and evaluation on ``FACELAB_TEST_DEVICE``.

On the default CPU these agree with themselves; ``FACELAB_TEST_DEVICE=cuda pytest -m "not slow"``
(run by ``make gpu-check``) checks that each stage runs on the GPU and agrees with the CPU to
float32 rounding.
"""

from __future__ import annotations

import pytest
import torch

from facelab.data import make_suite
from facelab.fitting.landmarks import fit_landmarks

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32


def test_suite_renders_on_the_device_and_matches_the_cpu(device):
    on_device = make_suite("lfw", n_identities=20, pairs_per_fold=2, image_size=SIZE, resolution="quick", device=device)
    on_cpu = make_suite("lfw", n_identities=20, pairs_per_fold=2, image_size=SIZE, resolution="quick", device="cpu")
    idx = torch.arange(4)
    a, b = on_device.batch(idx), on_cpu.batch(idx)
    assert a["image"].device.type == device.type and a["image"].shape == (4, 3, SIZE, SIZE)
    torch.testing.assert_close(a["landmarks2d"].cpu(), b["landmarks2d"], rtol=1e-4, atol=1e-3)
    assert (a["image"].cpu() - b["image"]).abs().mean() < 1e-3  # rasterisation edges may flip a pixel


def test_landmark_fit_on_the_device_matches_the_cpu(device):
    suite = make_suite("micc", n_identities=1, frames_per_video=2, image_size=SIZE, resolution="quick")
    batch = suite.batch(torch.arange(len(suite)))
    model = suite.model
    got = fit_landmarks(model.to(device), batch["landmarks2d"].to(device), n_iter=5)
    want = fit_landmarks(model.to("cpu"), batch["landmarks2d"], n_iter=5)
    assert got.shapes.device.type == device.type
    torch.testing.assert_close(got.residual_px.cpu(), want.residual_px, rtol=1e-3, atol=1e-3)


def test_trainer_steps_on_the_device(device, tmp_path):
    from facelab.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4)
    batch = {"x": x, "y": x.sum(1, keepdim=True)}
    loss_fn = lambda model, b: (((model(b["x"]) - b["y"]) ** 2).mean(), {})  # noqa: E731
    cfg = TrainConfig(steps=30, batch_size=16, lr=0.1, log_every=10, ckpt_every=30, out_dir=str(tmp_path),
                      device=str(device), progress=False)
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda step: batch, loss_fn, cfg, model_name="lin")
    out = trainer.fit()
    assert next(net.parameters()).device.type == device.type
    assert out["rows"][-1]["loss"] < 0.1 * out["rows"][0]["loss"]


def test_liu_recipe_and_evaluation_on_the_device(device, tmp_path):
    """A tiny Liu et al. run trains on the device and scores there; the result file says where."""
    from facelab.metrics.model_eval import evaluate_model
    from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018
    from facelab.train.trainer import LoopConfig

    cfg = Liu2018TrainConfig(out_dir=str(tmp_path), image_size=(32, 32), render_size=(48, 48), n_identities=16,
                             images_per_identity=4, phase_steps=(4, 2, 4), embedding_dim=16, cache_pool=False,
                             train=LoopConfig(batch_size=16, log_every=2, progress=False, device=str(device)))
    run = train_liu2018(cfg)
    result = evaluate_model(run / "phase3.pt", "lfw", lfw_identities=20, lfw_pairs_per_fold=3, device=str(device))
    assert result["config"]["device"] == str(device)
    assert 0.0 <= next(iter(result["lfw"].values()))["accuracy_mean"] <= 1.0
