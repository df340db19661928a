"""``make gpu-check``: everything a GPU machine should confirm, in one script and one JSON file.

Three checks, each timed, each recorded whether it passed or not (a failing check does not
stop the others):

1. **tests**: the unit tests that take a device (the ``device`` fixture of ``tests/conftest.py``)
   with ``FACELAB_TEST_DEVICE=cuda``, slow ones left out;
2. **torchrun**: two processes train a tiny model with :class:`~facelab.train.trainer.Trainer`
   under ``torch.distributed.run`` (``nccl`` with two GPUs or more; with one, ``gloo`` on the
   CPU, and the report says so), and their final weights must agree;
3. **recipes**: :data:`STEPS` steps of the main stage of each recipe's ``full`` profile
   (:func:`facelab.bench.train.bench_train`), steps/s and images/s.

``dry_run=True`` runs the same script on the CPU with tiny sizes (``quick`` profiles, a test
subset, ``gloo``), so that it is tested where no GPU is lent. On one H100 the whole check is
meant to take under 8 minutes.

Usage::

    make gpu-check                 # on a GPU machine: writes gpu-check.json
    make gpu-check DRY_RUN=1       # on any machine, CPU, tiny sizes
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

__all__ = ["gpu_check", "STEPS", "DRY_RUN_STEPS", "recipe_steps", "training_hours"]

ROOT = Path(__file__).resolve().parents[2]
STEPS = 200  # per recipe on the GPU: enough to pass kernel selection and time a steady state
DRY_RUN_STEPS = 30
RECIPES = ("liu2018", "gao2020")
# the tests whose functions take the device fixture: data, fitting, trainer, a recipe and evaluation
# first (a dry run keeps two fast files: seconds, not minutes)
DEVICE_TESTS = ("tests/test_device_tier.py", "tests/test_rasterize.py", "tests/test_camera.py", "tests/test_render.py",
                "tests/test_losses_angular.py", "tests/test_metrics_verification.py", "tests/test_numerics.py")
DRY_RUN_TESTS = DEVICE_TESTS[1:3]
SUBPROCESS_TIMEOUT_S = 420

TORCHRUN_WORKER = textwrap.dedent("""
    import os, sys, torch
    from facelab.train.trainer import TrainConfig, Trainer

    device = sys.argv[2]
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 1)
    x = torch.randn(32, 8)
    batch = {"x": x, "y": x.sum(1, keepdim=True)}
    loss_fn = lambda model, b: (((model(b["x"]) - b["y"]) ** 2).mean(), {})
    cfg = TrainConfig(steps=20, batch_size=32, log_every=5, ckpt_every=20, out_dir=sys.argv[1], device=device, progress=False)
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.05), lambda step: batch, loss_fn, cfg, model_name="lin")
    trainer.fit()
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
""")


def recipe_steps(recipe: str, profile: str = "full") -> int:
    """Optimiser steps of one training run of ``recipe`` at ``profile``: every stage of one model.

    Liu et al.: the three phases; Gao et al.: the geometric warm-up and both steps of one variant
    (an ablation trains each variant again); SIR: the shared base stage and one row's stage.

    >>> recipe_steps("liu2018", "full")
    45000
    """
    from facelab.train.gao2020 import Gao2020TrainConfig
    from facelab.train.liu2018 import Liu2018TrainConfig
    from facelab.train.sir import SIRTrainConfig

    if recipe == "liu2018":
        return int(sum(Liu2018TrainConfig(profile=profile).phase_steps))
    if recipe == "gao2020":
        cfg = Gao2020TrainConfig(profile=profile)
        return int(cfg.warmup_steps + sum(cfg.steps))
    if recipe == "sir":
        cfg = SIRTrainConfig(profile=profile)
        return int(cfg.base_steps + cfg.steps)
    raise ValueError(f"recipe: expected one of liu2018, gao2020, sir, got {recipe!r}")


def training_hours(report: dict, profile: str = "full") -> dict[str, dict]:
    """Estimated hours of one ``profile`` training run per recipe, from a ``gpu-check.json`` report.

    An estimate, not a measurement: the check times :data:`STEPS` steps of each recipe's *main*
    stage, and every stage is assumed to run at that rate (Gao et al.'s geometric warm-up, which
    rasterises nothing, is faster; evaluation and data preparation are not counted).

    Args:
        report: the dict :func:`gpu_check` writes (its ``"recipes"`` entry: ``{recipe:
            {"steps_per_s", ...}}``).
        profile: the profile whose step counts are used (:func:`recipe_steps`).

    Returns:
        ``{recipe: {"steps": int, "steps_per_s": float, "hours": float}}`` for the recipes the
        report timed.

    >>> training_hours({"recipes": {"ok": True, "seconds": 9.0, "liu2018": {"steps_per_s": 12.5}}})
    {'liu2018': {'steps': 45000, 'steps_per_s': 12.5, 'hours': 1.0}}
    """
    recipes = report.get("recipes")
    if not isinstance(recipes, dict) or not recipes.get("ok"):
        raise ValueError("report: its 'recipes' check did not pass, so it has no steps/s to estimate from")
    out = {}
    for recipe, row in recipes.items():
        if isinstance(row, dict) and "steps_per_s" in row:
            rate = float(row["steps_per_s"])
            if not rate > 0:
                raise ValueError(f"report: recipes.{recipe}.steps_per_s must be > 0, got {rate}")
            steps = recipe_steps(recipe, profile)
            out[recipe] = {"steps": steps, "steps_per_s": rate, "hours": steps / rate / 3600.0}
    return out


def _timed(fn) -> dict:
    start = time.perf_counter()
    try:
        out = {"ok": True, **fn()}
    except Exception as err:  # recorded, and the other checks still run
        out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _env(device: str) -> dict:
    env = {**os.environ, "FACELAB_TEST_DEVICE": device, "PYTHONPATH": str(ROOT)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _tests(device: str, dry_run: bool) -> dict:
    files = DRY_RUN_TESTS if dry_run else DEVICE_TESTS
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-m", "not slow and not browser", *files]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(device), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exited {proc.returncode}: {summary}")
    return {"files": list(files), "summary": summary}


def _torchrun(device: str) -> dict:
    note = None
    if device == "cuda" and torch.cuda.device_count() < 2:
        # nccl needs one GPU per process: on a one-GPU machine the two ranks use gloo on the CPU
        device, note = "cpu", f"{torch.cuda.device_count()} GPU: nccl needs two; gloo on the CPU instead"
    with tempfile.TemporaryDirectory(prefix="facelab-gpu-check-") as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(TORCHRUN_WORKER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), tmp, device]
        proc = subprocess.run(cmd, cwd=ROOT, env={**_env(device), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        weights = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
        gap = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
        if gap != 0.0:  # DDP keeps the replicas identical: any gap is a broken all-reduce
            raise RuntimeError(f"the two ranks' weights differ by {gap:.3g} after training")
        return {"backend": "nccl" if device == "cuda" else "gloo", "processes": 2, "max_weight_gap": gap, "note": note}


def _recipes(device: str, dry_run: bool) -> dict:
    from facelab.bench.train import bench_train

    profile, steps = ("quick", DRY_RUN_STEPS) if dry_run else ("full", STEPS)
    out = {}
    for recipe in RECIPES:
        result = bench_train(recipe, steps=steps, threads=(torch.get_num_threads(),), variants=("float32",),
                             profiles=(profile,), device=device)
        out[recipe] = result["rows"][0]
    return out


def gpu_check(out_json: str | Path = "gpu-check.json", dry_run: bool = False) -> dict:
    """Run the three checks (module docstring) and write their JSON to ``out_json``; returns it.

    Raises:
        RuntimeError: no CUDA device and not ``dry_run``.
    """
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here: run `make gpu-check` on a GPU machine, or `make gpu-check DRY_RUN=1`")
    device = "cpu" if dry_run else "cuda"
    report: dict = {"dry_run": dry_run, "device": device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    start = time.perf_counter()
    report["tests"] = _timed(lambda: _tests(device, dry_run))
    report["torchrun"] = _timed(lambda: _torchrun(device))
    report["recipes"] = _timed(lambda: _recipes(device, dry_run))
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["ok"] = all(report[k]["ok"] for k in ("tests", "torchrun", "recipes"))
    Path(out_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m facelab.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.json", help="the JSON report")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (no GPU needed)")
    args = parser.parse_args(argv)
    report = gpu_check(args.out, dry_run=args.dry_run)
    for name in ("tests", "torchrun", "recipes"):
        part = report[name]
        print(f"{name:9s} {'ok' if part['ok'] else 'FAILED'} in {part['seconds']} s" + ("" if part["ok"] else f": {part['error']}"))
    if report["recipes"]["ok"]:
        for recipe, row in report["recipes"].items():
            if isinstance(row, dict):
                print(f"  {recipe}: {row['steps_per_s']:.2f} steps/s, {row['images_per_s']:.0f} images/s ({row['profile']})")
    print(f"wrote {args.out} ({report['seconds']} s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
