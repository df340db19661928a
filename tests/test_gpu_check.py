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
