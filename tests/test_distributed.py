"""facelab.train.distributed and the Trainer under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from facelab.train import distributed as D
from facelab.models import load_evaluable
from facelab.io.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_TIMEOUT_S = 300
# Measured (2 vs 1 process, tiny Liu et al. run, 8+4+8 Adam steps at lr 1e-3, float32):
# * Phases I and II: logged losses agree to 1e-7 relative, the codes to 2e-4 and the shapes to
#   1e-6; weight tensors to 3e-3 of their norm (biases, whose gradients are tiny: the rounding of
#   the split-batch mean then picks the sign of Adam's lr-sized steps).
# * Phase III (A-Softmax, 16 identities): the margin function amplifies those differences; the
#   loss agrees to 7e-5, the codes to 1e-2 and the shapes to 4e-5. Weights are not compared there:
#   a few near-zero biases differ by 10 % of their (tiny) norm without changing any output.
LOSS_RTOL = {"phase1": 1e-5, "phase2": 1e-5, "phase3": 5e-4}
OUTPUT_RTOL = {"phase1": 1e-3, "phase2": 1e-3, "phase3": 5e-2}
WEIGHT_RTOL = 2e-2
WEIGHT_ATOL = 1e-4  # absolute floor for near-zero tensors
# Metrics are averaged over ranks. A nonlinear one (an RMSE, the sqrt of a batch mean) is then
# the mean of the shares' RMSEs, which is <= the global one (Jensen; 0.2 % to 17 % below here).

# The recipe, exactly as a user calls it: nothing in it knows about torchrun.
LIU_WORKER = textwrap.dedent("""
    import json, os, sys
    from facelab.train import distributed as D
    from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018
    from facelab.train.trainer import LoopConfig

    out = sys.argv[1]
    seen = []
    real_shard = D.shard_batch

    def recording_shard(batch, rank, world):  # records how many rows each rank trains on
        part = real_shard(batch, rank, world)
        seen.append([batch["image"].shape[0], part["image"].shape[0]])
        return part

    D.shard_batch = recording_shard
    cfg = Liu2018TrainConfig(out_dir=out, image_size=(32, 32), render_size=(48, 48), resolution="quick",
                             n_identities=16, images_per_identity=4, phase_steps=(8, 4, 8), embedding_dim=32,
                             cache_pool=False, pool=True, num_threads=1, phase_lr=(1e-3, 1e-3, 1e-3),
                             train=LoopConfig(batch_size=16, log_every=2, ckpt_every=4, progress=False))
    train_liu2018(cfg)
    with open(os.path.join(out, f"rows-rank{os.environ.get('RANK', 'single')}.json"), "w") as fh:
        json.dump(seen, fh)
""")

# A Trainer whose rank 1 sees a NaN loss at step 3: both ranks must stop, none may hang.
NAN_WORKER = textwrap.dedent("""
    import os, sys, torch
    from facelab.train.trainer import NonFiniteLossError, TrainConfig, Trainer

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    batch = {"x": x, "y": x.sum(1, keepdim=True)}

    def loss_fn(model, b):
        loss = ((model(b["x"]) - b["y"]) ** 2).mean()
        if trainer.step == 2 and os.environ["RANK"] == "1":
            loss = loss * float("nan")
        return loss, {}

    cfg = TrainConfig(steps=6, ckpt_every=2, log_every=1, out_dir=sys.argv[1], progress=False)
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda s: batch, loss_fn, cfg, model_name="lin")
    try:
        trainer.fit()
    except NonFiniteLossError as err:
        print(f"rank {os.environ['RANK']} stopped: {err}")
        sys.exit(3)
""")


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(script: Path, out: Path, nproc: int | None) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc is None else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(launcher + [str(script), str(out)], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT_S)


# ------------------------------------------------------------------ helpers
def test_shard_batch_values_and_cover():
    batch = {"image": torch.arange(12).reshape(6, 2), "label": torch.arange(6), "scale": torch.tensor(2.0),
             "name": "x", "pair": (torch.arange(6), torch.zeros(6, 1))}
    parts = [D.shard_batch(batch, r, 3) for r in range(3)]
    assert [p["label"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(torch.cat([p["image"] for p in parts]), batch["image"])
    assert all(p["scale"] is batch["scale"] and p["name"] == "x" for p in parts)
    assert parts[2]["pair"][0].tolist() == [4, 5] and parts[2]["pair"][1].shape == (2, 1)
    assert D.shard_batch(batch, 0, 1) is batch


def test_shard_batch_bad_input_raises():
    with pytest.raises(ValueError, match="batch_size: the global batch of 5 rows"):
        D.shard_batch({"x": torch.zeros(5)}, 0, 2)
    with pytest.raises(ValueError, match=r"\['y'\] has 3"):
        D.shard_batch({"x": torch.zeros(4), "y": torch.zeros(3)}, 0, 2)
    with pytest.raises(ValueError, match="rank"):
        D.shard_batch({"x": torch.zeros(4)}, 2, 2)
    with pytest.raises(ValueError, match="no tensor"):
        D.shard_batch({"n": 3}, 0, 2)


def test_mean_of_equal_shares_is_the_global_mean_gradient():
    """The identity DDP relies on: averaging per-share mean-loss gradients = global mean-loss gradient."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2).double()
    batch = {"x": torch.randn(8, 4, dtype=torch.float64), "y": torch.randn(8, 2, dtype=torch.float64)}
    fwd = D.LossForward(net, lambda m, b: (((m(b["x"]) - b["y"]) ** 2).mean(), {}))
    full = torch.autograd.grad(fwd(batch)[0], list(net.parameters()))
    shares = [torch.autograd.grad(fwd(D.shard_batch(batch, r, 4))[0], list(net.parameters())) for r in range(4)]
    for k, g in enumerate(full):
        assert torch.allclose(sum(s[k] for s in shares) / 4, g, rtol=1e-12, atol=1e-14)


def test_loss_forward_registers_module_losses():
    net = torch.nn.Linear(2, 1)

    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.ones(1))

        def forward(self, model, batch):
            return (model(batch) * self.w).sum(), {}

    fwd = D.LossForward(net, WithBuffer())
    assert "loss_module.w" in dict(fwd.named_buffers()) and "model.weight" in dict(fwd.named_parameters())
    fn = D.LossForward(net, lambda m, b: (m(b).sum(), {}))
    assert set(dict(fn.named_parameters())) == {"model.weight", "model.bias"}


def test_single_process_helpers_are_no_ops(monkeypatch):
    for key in D.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert D.init_distributed("cpu") == D.DistInfo(0, 0, 1)
    assert D.all_reduce_mean({"a": torch.tensor(1.5), "b": 2}) == {"a": 1.5, "b": 2.0}
    assert D.all_gather_objects({"x": 1}) == [{"x": 1}] and D.broadcast_object(5) == 5
    assert D.is_main_process()
    D.barrier()


def test_dist_env_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert D.dist_env() == D.DistInfo(rank=2, local_rank=0, world_size=4)
    assert D.rank_device("cuda") == torch.device("cuda", 0) and D.rank_device("cpu").type == "cpu"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK/WORLD_SIZE"):
        D.dist_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK: expected an integer"):
        D.dist_env()


# --------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_liu2018_two_processes_match_one(tmp_path):
    script = tmp_path / "liu_worker.py"
    script.write_text(LIU_WORKER)
    one, two = tmp_path / "one", tmp_path / "two"
    res = _run(script, one, None)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _run(script, two, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    # each rank trained on its half of every global batch of 16
    for rank in (0, 1):
        rows = json.loads((two / f"rows-rank{rank}.json").read_text())
        assert len(rows) == 8 + 4 + 8 and all(r == [16, 8] for r in rows)
    assert not (one / "rows-ranksingle.json").read_text().strip("[]")  # one process: nothing sharded
    for stage in ("phase1", "phase2", "phase3"):
        a = load_checkpoint(one / f"{stage}.pt")
        b = load_checkpoint(two / f"{stage}.pt")
        assert a["step"] == b["step"] and len(b["rng_per_rank"]) == 2 and b["extra"]["world_size"] == 2
        for k, wa in a["state_dict"].items():
            wb = b["state_dict"][k]
            if wa.is_floating_point():
                diff, size = float((wa - wb).norm()), float(wa.norm())
                if stage != "phase3":
                    assert diff <= WEIGHT_RTOL * size + WEIGHT_ATOL, (stage, k, diff, size)
            else:
                assert torch.equal(wa, wb), (stage, k)  # e.g. the A-Softmax iteration counter
        # the function the weights compute: the codes and shapes of fixed images
        images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out_a, out_b = (load_evaluable(d / f"{stage}.pt").model(images) for d in (one, two))
        for key in ("c_id", "c_res", "shape"):
            err = float((out_a[key] - out_b[key]).norm() / out_a[key].norm().clamp_min(1e-12))
            assert err < OUTPUT_RTOL[stage], (stage, key, err)
        rows_a = [json.loads(x) for x in (one / stage / "metrics.jsonl").read_text().splitlines()]
        rows_b = [json.loads(x) for x in (two / stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
        for ra, rb in zip(rows_a, rows_b):
            # metrics are reduced over ranks: the logged loss is the global-batch loss
            assert rb.keys() == ra.keys()
            for key in ra:
                if key.startswith("rmse"):
                    # sqrt of a mean: the mean over ranks of sqrt(share mean) is at most sqrt(global mean)
                    assert 0 < rb[key] <= ra[key] * (1 + LOSS_RTOL[stage]), (stage, key)
                elif key not in ("time_s", "step"):
                    assert rb[key] == pytest.approx(ra[key], rel=LOSS_RTOL[stage], abs=1e-7), (stage, key)


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "nan_worker.py"
    script.write_text(NAN_WORKER)
    res = _run(script, tmp_path / "run", 2)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "rank 0 stopped: step 3: the loss is NaN" in out and "rank 1 stopped: step 3" in out
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
