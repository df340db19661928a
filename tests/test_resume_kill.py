"""Exact resume after SIGKILL: a tiny Liu et al. run through the CLI, killed at a random step and
again in the middle of a checkpoint write, ends bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from facelab.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("phase1", "phase2", "phase3")
PHASE_STEPS = (12, 6, 12)
CKPT_EVERY = 3
RUN_TIMEOUT_S = 300
POLL_S = 0.02
SLOW_WRITE_S = 60  # a checkpoint write paused half-way, long enough to be killed inside it

# `facelab train liu2018` with a tiny config. SLOW_SAVE=1 makes every checkpoint write stop
# half-way for a while, so the test can SIGKILL the process inside the write.
WORKER = textwrap.dedent(f"""
    import io, os, sys, time
    import torch

    if os.environ.get("SLOW_SAVE"):
        real_save = torch.save

        def slow_save(obj, f, *args, **kwargs):
            if not hasattr(f, "write"):
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep({SLOW_WRITE_S})
            f.write(data[len(data) // 2:])

        torch.save = slow_save

    from facelab.cli import main

    sys.exit(main(["train", "liu2018", "--out", sys.argv[1],
                   "--set", "image_size=32,32", "--set", "render_size=48,48", "--set", "n_identities=16",
                   "--set", "images_per_identity=4", "--set", "batch_size=16", "--set", "embedding_dim=32",
                   "--set", "phase_steps={','.join(map(str, PHASE_STEPS))}", "--set", "log_every=1",
                   "--set", "ckpt_every={CKPT_EVERY}", "--set", "progress=false", "--set", "cache_pool=false",
                   "--set", "num_threads=1"]))
""")


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _start(script: Path, out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out)], env=_env(**env), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps_done(out: Path) -> int:
    """Optimisation steps logged so far over all phases (one row per step)."""
    total = 0
    for stage in STAGES:
        path = out / stage / "metrics.jsonl"
        if path.exists():
            total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def _partial_writes(out: Path) -> list[Path]:
    return [p for stage in STAGES for p in (out / stage).glob(".last.pt.*.tmp") if p.exists()] if out.exists() else []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place meanwhile
        return 0


def _kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: rc={proc.returncode}\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _rows(out: Path, stage: str) -> list[dict]:
    rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.mark.slow
def test_sigkill_at_random_step_and_mid_write_then_resume_is_bitwise_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    total = sum(PHASE_STEPS)
    kill_after = random.Random(os.urandom(8)).randint(CKPT_EVERY + 1, total - CKPT_EVERY)

    ref = subprocess.run([sys.executable, str(script), str(tmp_path / "ref")], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "run"
    # 1. SIGKILL at a random step (the loop is running; the last checkpoint is up to 2 steps old)
    _kill_when(_start(script, run), lambda: _steps_done(run) >= kill_after, f"step {kill_after}")
    killed_at = _steps_done(run)
    # 2. resume, and SIGKILL inside the next checkpoint write: a half-written temp file is left
    _kill_when(_start(script, run, SLOW_SAVE="1"), lambda: any(_size(p) for p in _partial_writes(run)),
               "a checkpoint write")
    partial = _partial_writes(run)
    assert partial and partial[0].stat().st_size > 0
    stage_dir = partial[0].parent
    half_written_at = load_checkpoint(stage_dir / "last.pt")["step"] if (stage_dir / "last.pt").exists() else None
    # 3. resume to the end
    done = subprocess.run([sys.executable, str(script), str(run)], env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not _partial_writes(run), "the resumed run should remove stale partial checkpoints"

    msg = f"killed after {killed_at} steps (target {kill_after}), then mid-write in {stage_dir.name} (last.pt at {half_written_at})"
    for stage in STAGES:
        a, b = load_checkpoint(tmp_path / "ref" / f"{stage}.pt"), load_checkpoint(run / f"{stage}.pt")
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for k in a["state_dict"]:
            assert torch.equal(a["state_dict"][k], b["state_dict"][k]), (msg, stage, k)
        for pid, state in a["optimizer"]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b["optimizer"]["state"][pid][name]), (msg, stage, pid, name)
        assert a["scheduler"] == b["scheduler"], (msg, stage)
        # the logs were cut back to the checkpoint and continued: the same rows, bit for bit
        assert _rows(tmp_path / "ref", stage) == _rows(run, stage), (msg, stage)


# ------------------------------------------- a run folder of another model
def _linear_run(out: Path, n_in: int, name: str = "linear", steps: int = 2):
    from facelab.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    net = torch.nn.Linear(n_in, 1)
    batch = {"x": torch.ones(4, n_in), "y": torch.zeros(4, 1)}
    cfg = TrainConfig(steps=steps, ckpt_every=1, log_every=1, out_dir=str(out), progress=False)
    return Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda s: batch,
                   lambda m, b: (((m(b["x"]) - b["y"]) ** 2).mean(), {}), cfg, model_name=name,
                   model_config={"n_in": n_in})


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    _linear_run(tmp_path, 1).fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert len(ckpt["rng_per_rank"]) == 1 and ckpt["extra"]["data_position"] == {"step": 2, "stateless": True}
    with pytest.raises(ValueError, match=r"last\.pt: holds a 'linear' model, expected 'other'"):
        _linear_run(tmp_path, 1, name="other").fit()
    with pytest.raises(ValueError, match=r"last\.pt: was written for another 'linear' model config \(differs in \['n_in'\]\)"):
        _linear_run(tmp_path, 2).fit()
    # same config, weights of another shape (e.g. a hand-edited file): named, not a torch traceback
    trainer = _linear_run(tmp_path, 2)
    trainer.model_config = {"n_in": 1}
    with pytest.raises(ValueError, match=r"last\.pt: the weights do not fit this 'linear' model"):
        trainer.fit()
    # a stale partial write is cleaned up and the finished run resumes to a no-op
    (tmp_path / ".last.pt.x1.tmp").write_bytes(b"partial")
    assert _linear_run(tmp_path, 1).fit()["resumed_from"] == 2
    assert not (tmp_path / ".last.pt.x1.tmp").exists()
