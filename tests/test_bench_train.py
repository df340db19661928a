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


def test_compiled_encoder_agrees_and_keeps_the_checkpoint():
    """torch.compile fuses the encoder's kernels: same numbers to float32 rounding, same state dict."""
    from facelab.models.resnet import resnet_tiny
    from facelab.models.sphereface import sphere_tiny

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    ref = sphere_tiny(16, (32, 32))
    fast = sphere_tiny(16, (32, 32))
    fast.load_state_dict(ref.state_dict())
    speed_up_encoder(fast, compile=True)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)
    assert set(fast.state_dict()) == set(ref.state_dict())
    # a ResNet whose stage outputs the model reads: the option follows the named method
    net = resnet_tiny().eval()
    want = [m.detach() for m in net.feature_maps(x)]
    speed_up_encoder(net, compile=True, method="feature_maps")
    for got, exp in zip(net.feature_maps(x), want):
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        speed_up_encoder(net, method="features")


def test_without_a_working_compiler_training_runs_eagerly(monkeypatch):
    """compile_available probes once; a failing toolchain warns and leaves the encoder eager."""
    from facelab.train import speed

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    speed.compile_available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="compile_encoder: .*no C\\+\\+ compiler"):
            assert speed.compile_available() is False
        net = torch.nn.Conv2d(3, 4, 3)
        forward = net.forward
        assert speed.compile_method(net) is False and net.forward == forward
    finally:
        speed.compile_available.cache_clear()


def test_fused_optimizer_makes_the_same_update():
    """fused=True is the same AdamW step as the per-tensor loop, to float32 rounding."""
    from facelab.train.speed import optimizer_options

    torch.manual_seed(0)
    weights = [torch.randn(50, 20), torch.randn(20)]
    params = {fused: [torch.nn.Parameter(w.clone()) for w in weights] for fused in (False, True)}
    opts = {fused: torch.optim.AdamW(params[fused], lr=1e-2, weight_decay=1e-4, **optimizer_options(fused))
            for fused in (False, True)}
    for step in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for fused in (False, True):
            for p, g in zip(params[fused], grads):
                p.grad = g.clone()
            opts[fused].step()
    for a, b in zip(params[False], params[True]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(params[True][0], weights[0])  # it did move


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
    assert {(p, v) for p in ("quick", "standard") for v in ("float32", "channels_last", "bfloat16", "compiled")} == set(rows)
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
                         channels_last=True, fused_optimizer=True, cache_pool=False,
                         train=LoopConfig(log_every=1, diagnose_every=0, progress=False))

    train_sir(cfg)
    recipe = json.loads((tmp_path / "base" / "config.json").read_text())["recipe"]
    assert recipe["channels_last"] is True and recipe["encoder_precision"] == "float32"
    assert recipe["fused_optimizer"] is True and recipe["compile_encoder"] is False
    weights = load_checkpoint(tmp_path / "base" / "last.pt")["state_dict"]
    assert set(weights) == set(SIRNet(model_config(cfg, recipe_morphable(cfg)[0]), recipe_morphable(cfg)[0]).state_dict())


@pytest.mark.slow
def test_liu_compiled_encoder_trains_and_saves_an_eager_checkpoint(tmp_path):
    """Phase III with every speed option: it learns, and its checkpoint loads into the eager model."""
    from facelab.io.checkpoint import load_checkpoint
    from facelab.train import LoopConfig
    from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018

    cfg = Liu2018TrainConfig(out_dir=str(tmp_path), stages=("phase1", "phase2", "phase3"), phase_steps=(1, 1, 6),
                             n_identities=8, images_per_identity=4, cache_pool=False, encoder_precision="bfloat16",
                             compile_encoder=True, fused_optimizer=True,
                             train=LoopConfig(log_every=1, diagnose_every=0, progress=False, batch_size=8))
    train_liu2018(cfg)
    recipe = json.loads((tmp_path / "phase3" / "config.json").read_text())["recipe"]
    assert recipe["compile_encoder"] is True and recipe["fused_optimizer"] is True
    state = load_checkpoint(tmp_path / "phase3" / "last.pt")["state_dict"]
    phase2 = load_checkpoint(tmp_path / "phase2" / "last.pt")["state_dict"]
    assert set(state) == set(phase2) and not any("_orig_mod" in k for k in state)
    assert not torch.equal(state["encoder.fc.weight"], phase2["encoder.fc.weight"])  # the encoder trained
