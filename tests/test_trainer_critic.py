"""The Trainer's optional critic (adversarial training): n_critic updates per step, checkpointed
critic state, bitwise-exact resume, errors, and gradient averaging under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from crash import fit_until_crash
from facelab.train import distributed as D
from facelab.io.checkpoint import load_checkpoint
from facelab.train.trainer import CRITIC_STATE_KEY, CriticStep, NonFiniteLossError, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES, DIM, BATCH = 16, 2, 8
ADV_WEIGHT = 0.1
TORCHRUN_TIMEOUT_S = 300


def _data(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, DIM, generator=gen)
    return {"x": x, "y": x @ torch.tensor([[1.0, 2.0], [-1.0, 0.5]]), "real": torch.randn(N_SAMPLES, DIM, generator=gen) + 1}


def _batches(data: dict):
    return lambda step: {k: v[(step * BATCH) % N_SAMPLES:][:BATCH] for k, v in data.items()}


class RecordingCritic(CriticStep):
    """A linear critic with a WGAN-like loss; real samples get noise from the global RNG."""

    def __init__(self, n_critic: int = 1, lr: float = 0.05, noise: bool = True) -> None:
        critic = nn.Linear(DIM, 1)
        super().__init__(critic, torch.optim.RMSprop(critic.parameters(), lr=lr), n_critic=n_critic)
        self.calls: list[tuple[int, int]] = []
        self.noise = noise

    def loss(self, model, batch, step, k):
        self.calls.append((step, k))
        with torch.no_grad():
            fake = model(batch["x"])
        real = batch["real"] + (0.1 * torch.randn_like(batch["real"]) if self.noise else 0)
        d_real, d_fake = self.critic(real).mean(), self.critic(fake).mean()
        penalty = (self.critic.weight ** 2).sum()
        return d_fake - d_real + penalty, {"d_real": d_real.detach(), "d_fake": d_fake.detach()}


def _loss_fn(critic: CriticStep):
    def loss_fn(model, batch):
        pred = model(batch["x"])
        mse = ((pred - batch["y"]) ** 2).mean()
        adv = -critic.critic(pred).mean()
        return mse + ADV_WEIGHT * adv, {"mse": mse.detach(), "adv": adv.detach()}

    return loss_fn


def _run(out_dir, steps=12, n_critic=2, init_seed=0, ckpt_every=4, make_critic=None, **critic_kwargs):
    """A tiny adversarial run; the model and the critic are initialised from ``init_seed``."""
    torch.manual_seed(init_seed)
    model = nn.Linear(DIM, DIM)
    critic = (make_critic or RecordingCritic)(n_critic, **critic_kwargs)
    cfg = TrainConfig(steps=steps, batch_size=BATCH, log_every=1, ckpt_every=ckpt_every, out_dir=str(out_dir), progress=False)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), _batches(_data()), _loss_fn(critic), cfg,
                      model_name="lin", model_config={"dim": DIM}, critic=critic)
    return trainer, critic


def _rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ steps
@pytest.mark.parametrize("n_critic", [1, 3])
def test_critic_runs_n_critic_updates_per_step(tmp_path, n_critic):
    trainer, critic = _run(tmp_path, steps=5, n_critic=n_critic)
    before = critic.critic.weight.detach().clone()
    out = trainer.fit()
    assert critic.calls == [(s, k) for s in range(5) for k in range(n_critic)]
    assert critic.updates == 5 * n_critic and out["step"] == 5
    assert not torch.equal(critic.critic.weight, before)  # the critic was trained
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["extra"][CRITIC_STATE_KEY]["updates"] == 5 * n_critic
    assert torch.equal(ckpt["extra"][CRITIC_STATE_KEY]["critic"]["weight"], critic.critic.weight)
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert {"loss", "mse", "adv", "critic_loss", "d_real", "d_fake"} <= set(rows[0])


def test_critic_metrics_are_means_over_its_updates():
    """Hand value: a critic whose loss is the update index k logs the mean (n-1)/2."""
    critic = nn.Linear(1, 1)
    step = CriticStep(critic, torch.optim.SGD(critic.parameters(), lr=0.0), n_critic=4,
                      loss_fn=lambda c, m, b, s, k: (c(b).sum() * 0 + k, {"k2": torch.tensor(float(k * k))}))
    metrics = step.step(None, torch.ones(2, 1), 0)
    assert metrics == {"critic_loss": pytest.approx(1.5), "k2": pytest.approx((0 + 1 + 4 + 9) / 4)}


def test_generator_and_critic_updates_alternate(tmp_path):
    """Step s's critic sees the model *after* step s's update (the documented order)."""
    seen = []

    class Spy(RecordingCritic):
        def loss(self, model, batch, step, k):
            seen.append(model.weight.detach().clone())
            return super().loss(model, batch, step, k)

    trainer, critic = _run(tmp_path, steps=1, n_critic=1, make_critic=Spy)
    start = trainer.model.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(seen[0], start) and torch.equal(seen[0], trainer.model.weight)


# ----------------------------------------------------------------- resume
def test_resume_with_critic_is_bitwise_identical(tmp_path):
    straight, straight_critic = _run(tmp_path / "straight")
    straight.fit()

    fit_until_crash(_run(tmp_path / "resumed")[0], at_step=10)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 8
    # a fresh process: other initial weights (model and critic), other global RNG state
    torch.manual_seed(777)
    resumed, resumed_critic = _run(tmp_path / "resumed", init_seed=99)
    out = resumed.fit()
    assert out["resumed_from"] == 8 and out["step"] == 12
    assert resumed_critic.calls[0] == (8, 0) and resumed_critic.updates == straight_critic.updates == 24
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ca, cb = a["extra"][CRITIC_STATE_KEY], b["extra"][CRITIC_STATE_KEY]
    for k in ca["critic"]:
        assert torch.equal(ca["critic"][k], cb["critic"][k]), k
    for pid, state in ca["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(cb["optimizer"]["state"][pid][k])), (pid, k)
    # the logged critic metrics of the resumed steps are those of the uninterrupted run
    rows_a, rows_b = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in rows_b] == list(range(1, 13))
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k != "time_s"} == {k: v for k, v in rb.items() if k != "time_s"}


def test_resume_refuses_a_critic_mismatch(tmp_path):
    trainer, _ = _run(tmp_path / "with", steps=2)
    trainer.fit()
    model = nn.Linear(DIM, DIM)
    cfg = TrainConfig(steps=4, out_dir=str(tmp_path / "with"), progress=False)
    plain = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), _batches(_data()),
                    lambda m, b: (((m(b["x"]) - b["y"]) ** 2).mean(), {}), cfg, model_name="lin", model_config={"dim": DIM})
    with pytest.raises(ValueError, match="holds a critic state but this run is without a critic"):
        plain.fit()
    plain.config = TrainConfig(steps=2, out_dir=str(tmp_path / "without"), progress=False)
    plain.out_dir = tmp_path / "without"
    plain.fit()
    assert CRITIC_STATE_KEY not in load_checkpoint(tmp_path / "without" / "last.pt")["extra"]
    with_critic, _ = _run(tmp_path / "without", steps=4)
    with pytest.raises(ValueError, match="holds no critic state but this run is with a critic"):
        with_critic.fit()


# ----------------------------------------------------------------- errors
def test_critic_bad_input_raises(tmp_path):
    critic = nn.Linear(1, 1)
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="critic"):
        CriticStep("net", opt)
    with pytest.raises(TypeError, match="optimizer"):
        CriticStep(critic, "rmsprop")
    with pytest.raises(ValueError, match="n_critic"):
        CriticStep(critic, opt, n_critic=0)
    with pytest.raises(NotImplementedError, match="loss"):
        CriticStep(critic, opt).step(None, {}, 0)
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=2, out_dir=str(tmp_path), progress=False)
    with pytest.raises(TypeError, match="critic: expected an object with step"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda s: {}, lambda m, b: None, cfg, critic=critic)


def test_critic_nan_stops_before_touching_the_critic(tmp_path):
    class NanCritic(RecordingCritic):
        def loss(self, model, batch, step, k):
            loss, metrics = super().loss(model, batch, step, k)
            return (loss * float("nan") if step == 2 else loss), metrics

    trainer, critic = _run(tmp_path, steps=6, n_critic=1, ckpt_every=2, make_critic=NanCritic)
    weights = {}
    real_step = critic.optimizer.step

    def record():
        real_step()
        weights["last"] = critic.critic.weight.detach().clone()

    critic.optimizer.step = record
    with pytest.raises(NonFiniteLossError, match="step 3, critic update 1: the critic loss is nan"):
        trainer.fit()
    assert torch.equal(critic.critic.weight, weights["last"]) and torch.isfinite(critic.critic.weight).all()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_metric_name_clash_raises(tmp_path):
    class Clash(RecordingCritic):
        def loss(self, model, batch, step, k):
            loss, metrics = super().loss(model, batch, step, k)
            return loss, {**metrics, "mse": torch.tensor(0.0)}

    trainer, _ = _run(tmp_path, steps=1, make_critic=Clash)
    with pytest.raises(ValueError, match=r"critic: its metrics \['mse'\] clash"):
        trainer.fit()


def test_all_reduce_grads_is_a_no_op_on_one_process():
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, -2.0, 3.0])
    D.all_reduce_grads([p, q])
    assert p.grad.tolist() == [1.0, -2.0, 3.0] and q.grad is None


# --------------------------------------------------------------- torchrun
# The same critic run on 1 and 2 processes (real samples from the batch, no RNG): the critic's
# gradients are averaged over the ranks' halves, so both runs agree to float32 rounding.
WORKER = textwrap.dedent(f"""
    import sys, torch
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from test_trainer_critic import RecordingCritic, _run

    trainer, critic = _run(sys.argv[1], steps=6, n_critic=2, noise=False)
    trainer.fit()
""")


@pytest.mark.slow
def test_critic_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    runs = {"one": [sys.executable], "two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=2"]}
    for name, launcher in runs.items():
        res = subprocess.run(launcher + [str(script), str(tmp_path / name)], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=TORCHRUN_TIMEOUT_S)
        assert res.returncode == 0, res.stderr[-3000:]
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in runs)
    assert b["extra"]["world_size"] == 2 and b["extra"][CRITIC_STATE_KEY]["updates"] == 12
    for k, w in a["extra"][CRITIC_STATE_KEY]["critic"].items():
        assert torch.allclose(w, b["extra"][CRITIC_STATE_KEY]["critic"][k], rtol=1e-4, atol=1e-5), k
    for k, w in a["state_dict"].items():
        assert torch.allclose(w, b["state_dict"][k], rtol=1e-4, atol=1e-5), k
    rows_a, rows_b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    for ra, rb in zip(rows_a, rows_b):
        for key in ("critic_loss", "d_real", "d_fake", "loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
