"""facelab.train.diagnostics and the trainer's diagnose_every.

Shares are checked against hand-computed gradient norms; the trainer with diagnostics must
train exactly as without them; bad input names the argument.
"""

import math

import pytest
import torch
from torch import nn

from facelab.train import TrainConfig, Trainer
from facelab.train.diagnostics import summarize_shares, term_gradient_shares


def test_shares_match_hand_computed_gradient_norms():
    enc, dec = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        enc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        dec.weight.copy_(torch.tensor([[3.0, 4.0]]))
    x = torch.tensor([[1.0, 1.0]])
    h = enc(x)  # (1, 2) = [1, 2]
    a, b = dec(h).sum(), 2.0 * (h**2).sum()
    # d a / d enc.W = dec.W^T x^T: [[3, 3], [4, 4]], norm sqrt(50); d b / d enc.W = 4 h^T x: [[4, 4], [8, 8]], norm sqrt(160)
    out = term_gradient_shares({"a": a, "b": b}, {"encoder": enc, "decoder": dec})
    na, nb = math.sqrt(50.0), math.sqrt(160.0)
    assert out["share/a@encoder"] == pytest.approx(na / (na + nb))
    assert out["share/b@encoder"] == pytest.approx(nb / (na + nb))
    assert out["share/a@decoder"] == pytest.approx(1.0) and out["share/b@decoder"] == 0.0


def test_shares_bad_input():
    m = nn.Linear(1, 1)
    y = m(torch.ones(1, 1))
    with pytest.raises(ValueError, match="terms: nothing"):
        term_gradient_shares({}, {"m": m})
    with pytest.raises(ValueError, match="terms: 'v' must be a 0-d"):
        term_gradient_shares({"v": y}, {"m": m})
    with pytest.raises(ValueError, match="modules: 'frozen'"):
        term_gradient_shares({"s": y.sum()}, {"frozen": nn.Linear(1, 1).requires_grad_(False)})


def test_summarize_shares_and_accuracy_against_chance():
    rows = [{"share/L_C@encoder": s, "share/L_R@encoder": 1 - s, "acc": a}
            for s, a in [(0.02, 0.01), (0.2, 0.05), (0.3, 0.2), (0.4, 0.3), (0.5, 0.4)]]
    out = summarize_shares(rows, chance=1 / 100)
    lc = out["terms"]["L_C"]["encoder"]
    assert lc["active_fraction"] == 0.8 and lc["active"] is True
    assert lc["mean_share"] == pytest.approx(0.284)
    assert out["accuracy"] == {"final": 0.4, "chance": 0.01, "active_fraction": 0.8}
    assert summarize_shares(rows[:1])["terms"]["L_C"]["encoder"]["active"] is False


def _run(tmp_path, diagnose_every: int):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    g = torch.Generator().manual_seed(1)
    data = [{"x": torch.randn(8, 3, generator=g), "y": torch.randn(8, 2, generator=g)} for _ in range(6)]

    def loss_fn(model, batch):
        out = model(batch["x"])
        fit, reg = ((out - batch["y"]) ** 2).mean(), 0.1 * (out**2).mean()
        return fit + reg, {"fit": fit.detach()}, {"fit": fit, "reg": reg}

    cfg = TrainConfig(steps=6, log_every=3, ckpt_every=6, out_dir=str(tmp_path / f"d{diagnose_every}"), progress=False,
                      diagnose_every=diagnose_every)
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda s: data[s], loss_fn, cfg,
                      model_name="toy", model_config={}, diagnostic_modules={"first": net[0], "last": net[2]})
    return trainer.fit(), net


def test_trainer_logs_shares_without_changing_training(tmp_path):
    plain, net_plain = _run(tmp_path, 0)
    diag, net_diag = _run(tmp_path, 2)
    for a, b in zip(net_plain.parameters(), net_diag.parameters()):
        assert torch.equal(a, b)  # measuring never touches the weights or their gradients
    assert "diagnostics" not in plain and "share/fit@first" not in plain["metrics"]
    row = diag["metrics"]
    assert row["share/fit@first"] + row["share/reg@first"] == pytest.approx(1.0)
    assert row["fit"] == plain["metrics"]["fit"]  # other metrics still averaged over every step
    assert set(diag["diagnostics"]["terms"]) == {"fit", "reg"}


def test_trainer_diagnostics_need_terms_and_modules(tmp_path):
    net = nn.Linear(1, 1)
    cfg = TrainConfig(steps=2, log_every=1, ckpt_every=2, out_dir=str(tmp_path), progress=False, diagnose_every=1)
    batch = {"x": torch.ones(2, 1)}
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), lambda s: batch,
                      lambda m, b: (m(b["x"]).mean(), {}), cfg, model_name="toy", model_config={})
    with pytest.raises(ValueError, match="diagnose_every: needs a loss"):
        trainer.fit()
    with pytest.raises(ValueError, match="diagnose_every"):
        TrainConfig(diagnose_every=-1)
