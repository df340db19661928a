"""facelab.io.checkpoint (atomic writes, checked reads, RNG state) and facelab.models.registry."""

import os
import random

import numpy as np
import pytest
import torch

from facelab.io.checkpoint import (
    FORMAT_VERSION, atomic_torch_save, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
)
from facelab.models.regressor import CoefficientRegressor, RegressorConfig
from facelab.models.registry import build_model, load_model, register_model, registered_models

CFG = RegressorConfig(n_shape=6, n_exp=3, image_size=(16, 16))


pytestmark = pytest.mark.usefixtures("one_thread")


def trained_pair(seed=0):
    torch.manual_seed(seed)
    model = CoefficientRegressor(CFG)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = model(torch.rand(4, 3, 16, 16))["alpha_id"].sub(1).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def save(path, model, opt=None, **kw):
    kw.setdefault("step", 2)
    return save_checkpoint(path, model_name="regressor", model_config=CFG, state_dict=model.state_dict(),
                           optimizer=opt, train_config={"lr": 1e-2}, **kw)


def test_round_trip_model_and_optimizer(tmp_path):
    model, opt = trained_pair()
    path = save(tmp_path / "a.pt", model, opt, epoch=1, extra={"note": "x"})
    ckpt = load_checkpoint(path, expect_model="regressor")
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["step"] == 2 and ckpt["epoch"] == 1
    assert ckpt["extra"] == {"note": "x"} and ckpt["train_config"] == {"lr": 1e-2}
    assert ckpt["model_config"]["image_size"] == [16, 16]
    loaded, _ = load_model(path)
    assert isinstance(loaded, CoefficientRegressor) and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["optimizer"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[k][name], s2[k][name])
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model.eval()(x)["pose"], loaded(x)["pose"])


def test_rng_state_round_trip():
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_atomic_write_survives_a_crash(tmp_path, monkeypatch):
    model, _ = trained_pair()
    path = save(tmp_path / "last.pt", model, step=1)
    # a crash mid-write: a partial temp file next to the old checkpoint
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"PK\x03\x04 partial")
    assert load_checkpoint(path)["step"] == 1
    # a crash inside torch.save: the target keeps the old content, no temp file is left
    def boom(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save(path, model, step=7)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.abc.tmp", "last.pt"]


def test_save_calls_fsync_and_replace(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    assert calls.index("fsync") < calls.index("replace")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    model, _ = trained_pair()
    good = save(tmp_path / "good.pt", model).read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    for name in ("trunc.pt", "junk.pt"):
        with pytest.raises(ValueError, match=rf"{name}.*truncated or corrupt"):
            load_checkpoint(tmp_path / name)


def test_not_a_facelab_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    for name in ("other.pt", "list.pt"):
        with pytest.raises(ValueError, match=rf"{name}: not a facelab checkpoint"):
            load_checkpoint(tmp_path / name)


def test_other_format_version(tmp_path):
    model, _ = trained_pair()
    path = save(tmp_path / "v.pt", model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=rf"v.pt: checkpoint format version {FORMAT_VERSION + 1}"):
        load_checkpoint(path)


def test_wrong_model_name(tmp_path):
    model, _ = trained_pair()
    path = save(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match=r"m.pt: holds a 'regressor' model, expected 'liu2018'"):
        load_checkpoint(path, expect_model="liu2018")


def test_weights_that_do_not_fit_the_config(tmp_path):
    model, _ = trained_pair()
    bad = {**CFG.__dict__, "n_shape": 7}
    path = save_checkpoint(tmp_path / "w.pt", model_name="regressor", model_config=bad,
                           state_dict=model.state_dict(), step=0)
    with pytest.raises(ValueError, match="w.pt: the weights do not match"):
        load_model(path)


def test_registry():
    assert "regressor" in registered_models()
    net = build_model("regressor", CFG)
    assert isinstance(net, CoefficientRegressor) and net.n_shape == 6
    register_model("test_identity", lambda cfg: torch.nn.Identity(), overwrite=True)
    assert isinstance(build_model("test_identity", {}), torch.nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_identity", lambda cfg: torch.nn.Identity())
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", {})


def test_save_bad_input_raises(tmp_path):
    model, _ = trained_pair()
    with pytest.raises(ValueError, match="step"):
        save(tmp_path / "a.pt", model, step=-1)
    with pytest.raises(ValueError, match="model_name"):
        save_checkpoint(tmp_path / "a.pt", model_name="", model_config=CFG, state_dict={}, step=0)
    with pytest.raises(TypeError, match="state_dict"):
        save_checkpoint(tmp_path / "a.pt", model_name="x", model_config=CFG, state_dict=model, step=0)
