"""facelab.train.stages: the stage runner shared by the multi-stage recipes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from facelab.io.checkpoint import load_checkpoint
from facelab.train.stages import SUMMARY_JSON, Stage, copy_atomic, read_summary, run_stages
from facelab.train.trainer import TrainConfig, Trainer

STAGES = [Stage("first"), Stage("second", parent="first")]


def _toy_build(root, calls):
    """``build`` of a two-stage toy recipe: a linear model fitting y = 2x; the child starts from its parent."""

    def build(stage, data, parent):
        calls.append((stage.name, data, None if parent is None else parent.name))
        torch.manual_seed(0)
        model = nn.Linear(1, 1)
        if parent is not None:
            model.load_state_dict(load_checkpoint(parent)["state_dict"])
        x = torch.linspace(-1, 1, 8)[:, None]
        loss = lambda m, b: (((m(b["x"]) - 2 * b["x"]) ** 2).mean(), {})  # noqa: E731
        cfg = TrainConfig(steps=3, log_every=1, ckpt_every=3, out_dir=str(root / stage.name), progress=False)
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda step: {"x": x}, loss, cfg,
                       model_name="toy", model_config={})

    return build


def test_runs_stages_in_order_and_writes_checkpoints_and_summary(tmp_path):
    calls, prepared = [], []
    summary = run_stages(tmp_path, STAGES, _toy_build(tmp_path, calls), prepare=lambda: prepared.append(1) or "data")
    assert calls == [("first", "data", None), ("second", "data", "first.pt")]
    assert prepared == [1]
    assert load_checkpoint(tmp_path / "second.pt")["step"] == 3
    assert set(summary) == {"first", "second"} == set(json.loads((tmp_path / SUMMARY_JSON).read_text()))


def test_done_stages_are_skipped_and_nothing_is_prepared(tmp_path):
    run_stages(tmp_path, STAGES, _toy_build(tmp_path, []))
    stamp = (tmp_path / "second.pt").stat().st_mtime_ns
    calls = []
    summary = run_stages(tmp_path, STAGES, _toy_build(tmp_path, calls), prepare=lambda: pytest.fail("prepared"))
    assert calls == [] and (tmp_path / "second.pt").stat().st_mtime_ns == stamp
    assert summary == read_summary(tmp_path)


def test_only_missing_stages_run(tmp_path):
    run_stages(tmp_path, STAGES, _toy_build(tmp_path, []))
    (tmp_path / "second.pt").unlink()
    calls = []
    run_stages(tmp_path, STAGES, _toy_build(tmp_path, calls))
    assert [c[0] for c in calls] == ["second"]


def test_missing_parent_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"second starts from .*first\.pt; train 'first' first"):
        run_stages(tmp_path, STAGES[1:], _toy_build(tmp_path, []))


def test_publish_writes_the_final_checkpoint(tmp_path):
    published = []

    def publish(stage, src, dst):
        published.append((stage.name, src.name, dst.name))
        copy_atomic(src, dst)

    run_stages(tmp_path, STAGES[:1], _toy_build(tmp_path, []), publish=publish)
    assert published == [("first", "last.pt", "first.pt")]


@pytest.mark.parametrize("name", ["", "a/b"])
def test_bad_stage_name_raises(name):
    with pytest.raises(ValueError, match="name"):
        Stage(name)
