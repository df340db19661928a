"""`make gpu-check DRY_RUN=1`: the GPU machine's script, run on the CPU with tiny sizes."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from facelab.bench.gpu_check import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_dry_run_passes(tmp_path):
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(["make", "-s", "gpu-check", "DRY_RUN=1", f"GPU_CHECK_OUT={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["dry_run"] and report["device"] == "cpu"
    assert report["torchrun"]["backend"] == "gloo" and report["torchrun"]["max_weight_gap"] == 0.0
    assert {"liu2018", "gao2020"} <= set(report["recipes"])
    assert all(report["recipes"][r]["steps_per_s"] > 0 for r in ("liu2018", "gao2020"))
    assert "passed" in report["tests"]["summary"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_how_to_dry_run(tmp_path):
    with pytest.raises(RuntimeError, match="DRY_RUN=1"):
        gpu_check(tmp_path / "x.json")


def test_training_hours_from_a_report():
    """Hours = the profile's steps of one run / the measured steps/s; a report without rates is refused."""
    from facelab.bench.gpu_check import recipe_steps, training_hours
    from facelab.train.gao2020 import Gao2020TrainConfig
    from facelab.train.sir import SIRTrainConfig

    gao, sir = Gao2020TrainConfig(profile="full"), SIRTrainConfig(profile="full")
    assert recipe_steps("liu2018") == 20000 + 5000 + 20000  # the full profile's three phases
    assert recipe_steps("gao2020") == gao.warmup_steps + gao.steps[0] + gao.steps[1]
    assert recipe_steps("sir") == sir.base_steps + sir.steps
    assert recipe_steps("liu2018", "quick") < recipe_steps("liu2018")
    report = {"recipes": {"ok": True, "seconds": 30.0, "liu2018": {"steps_per_s": 5.0, "images_per_s": 320.0},
                          "gao2020": {"steps_per_s": 2.0, "images_per_s": 64.0}}}
    hours = training_hours(report)
    assert set(hours) == {"liu2018", "gao2020"}
    assert hours["liu2018"]["hours"] == pytest.approx(45000 / 5.0 / 3600)
    assert hours["gao2020"]["hours"] == pytest.approx(recipe_steps("gao2020") / 2.0 / 3600)
    with pytest.raises(ValueError, match="report: its 'recipes' check did not pass"):
        training_hours({"recipes": {"ok": False, "error": "boom"}})
    with pytest.raises(ValueError, match=r"recipes\.liu2018\.steps_per_s must be > 0"):
        training_hours({"recipes": {"ok": True, "liu2018": {"steps_per_s": 0.0}}})
    with pytest.raises(ValueError, match="recipe: expected one of"):
        recipe_steps("nope")
