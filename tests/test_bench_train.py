"""facelab bench train: steps/s read off a real training log; the speed options keep the numbers."""

import json

import pytest
import torch

from facelab.bench.train import bench_train, steps_per_second
from facelab.cli import main
from facelab.train.speed import speed_up_encoder


def test_steps_per_second_skips_warmup_and_rejects_short_logs(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,time_s\n10,5.0\n20,6.0\n40,8.0\n")
    assert steps_per_second(tmp_path) == pytest.approx(10.0)  # (40 - 10) / (8 - 5)
    (tmp_path / "metrics.csv").write_text("step,time_s\n10,5.0\n")
    with pytest.raises(ValueError, match="stage_dir"):
        steps_per_second(tmp_path)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="recipe"):
        bench_train("resnet")
    with pytest.raises(ValueError, match="steps"):
        bench_train("liu2018", steps=12)
    with pytest.raises(ValueError, match="variants"):
        bench_train("liu2018", variants=("fp8",))


def test_speed_options_agree_with_float32():
    """channels_last computes the same encoder to float32 rounding; bfloat16 to bfloat16's ~3 digits."""
    from facelab.models.sphereface import sphere_tiny

    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    ref = sphere_tiny(16, (32, 32)).eval()
    state = ref.state_dict()
    with torch.no_grad():
        want = ref(x)
        fast = sphere_tiny(16, (32, 32)).eval()
        fast.load_state_dict(state)
        torch.testing.assert_close(speed_up_encoder(fast, channels_last=True)(x), want, rtol=1e-4, atol=1e-4)
        half = sphere_tiny(16, (32, 32)).eval()
        half.load_state_dict(state)
        got = speed_up_encoder(half, precision="bfloat16")(x)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() <= 0.05 * want.abs().max()
    assert set(half.state_dict()) == set(state)  # checkpoints unchanged


@pytest.mark.slow
def test_cli_times_liu_phase3(capsys):
    assert main(["bench", "train", "liu2018", "--steps", "30", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["profile"], r["variant"]): r for r in out["rows"]}
    assert {("quick", "float32"), ("standard", "bfloat16")} <= set(rows)
    assert all(r["steps_per_s"] > 0 and r["images_per_s"] == pytest.approx(64 * r["steps_per_s"], rel=0.01)
               for r in rows.values())
    assert rows[("quick", "float32")]["ratio"] == 1.0


@pytest.mark.slow
def test_cli_times_sir_base_stage(capsys):
    """SIR's base stage on aligned crops (standard) and whole photos (quick), with the speed options."""
    assert main(["bench", "train", "sir", "--steps", "30", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["profile"], r["variant"]): r for r in out["rows"]}
    assert {(p, v) for p in ("quick", "standard") for v in ("float32", "channels_last", "bfloat16")} == set(rows)
    batch = {"quick": 64, "standard": 96}  # batch_lp + batch_id
    assert all(r["steps_per_s"] > 0 and r["images_per_s"] == pytest.approx(batch[p] * r["steps_per_s"], rel=0.01)
               for (p, _), r in rows.items())
    assert rows[("standard", "float32")]["ratio"] == 1.0


def test_sir_speed_options_reach_the_backbone(tmp_path):
    """The options change the regressor's backbone only; a bad precision names the field."""
    from facelab.io.checkpoint import load_checkpoint
    from facelab.train import LoopConfig
    from facelab.models.sir import SIRNet
    from facelab.train.sir import SIRTrainConfig, model_config, recipe_morphable, train_sir

    with pytest.raises(ValueError, match="encoder_precision"):
        SIRTrainConfig(encoder_precision="half")
    cfg = SIRTrainConfig(out_dir=str(tmp_path), variants=(), base_steps=2, lp_identities=8, lp_images_per_identity=2,
                         n_identities=8, images_per_identity=4, batch_lp=8, batch_id=8, ids_per_batch=2,
                         channels_last=True, cache_pool=False,
                         train=LoopConfig(log_every=1, diagnose_every=0, progress=False))

    train_sir(cfg)
    recipe = json.loads((tmp_path / "base" / "config.json").read_text())["recipe"]
    assert recipe["channels_last"] is True and recipe["encoder_precision"] == "float32"
    weights = load_checkpoint(tmp_path / "base" / "last.pt")["state_dict"]
    assert set(weights) == set(SIRNet(model_config(cfg, recipe_morphable(cfg)[0]), recipe_morphable(cfg)[0]).state_dict())
