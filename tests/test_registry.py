"""facelab.models.registry: every committed checkpoint loads as an Evaluable; legacy names; errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.io.checkpoint import save_checkpoint
from facelab.models import registry
from facelab.models.registry import Evaluable, build_model, load_evaluable, model_entry, register_model
from facelab.reproduce import artifacts as A

pytestmark = pytest.mark.usefixtures("one_thread")

CHECKPOINTS = sorted(str(p.relative_to(A.ARTIFACTS_DIR)) for p in A.ARTIFACTS_DIR.glob("*/**/*.pt"))
TINY_REGRESSOR = {"backbone": "resnet_tiny", "image_size": [16, 16], "resolution": "quick", "n_shape": 4, "n_exp": 2}


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_committed_checkpoint_is_evaluable(checkpoint):
    model = load_evaluable(A.ARTIFACTS_DIR / checkpoint)
    assert isinstance(model, Evaluable) and not model.training
    h, w = model.config.image_size
    spread = torch.rand(2, 68, 2, generator=torch.Generator().manual_seed(0))  # any non-degenerate points
    landmarks = spread * torch.tensor([w / 2.0, h / 2.0]) + torch.tensor([w / 4.0, h / 4.0])
    batch = {"image": torch.rand(2, 3, h, w), "landmarks2d": landmarks}
    prepare = getattr(model, "prepare_images", None)
    out = model.reconstruct(prepare(batch) if prepare else batch["image"], None)
    assert out["shape"].shape[0] == 2 and out["shape"].shape[-1] == 3
    assert torch.isfinite(out["identity_shape"]).all()
    neutral = model.decode_identity(out["embedding"], None)
    assert neutral.shape == out["identity_shape"].shape


def test_committed_checkpoints_cover_every_trained_model():
    names = {torch.load(A.ARTIFACTS_DIR / c, weights_only=True)["model_name"] for c in CHECKPOINTS}
    assert names == {"liu2018", "gao2020", "sir"}


def test_legacy_name_builds_its_successor(monkeypatch):
    monkeypatch.setitem(registry.LEGACY_NAMES, "coefficient_regressor", "regressor")
    assert model_entry("coefficient_regressor").name == "regressor"
    assert build_model("coefficient_regressor", TINY_REGRESSOR).n_shape == 4


def test_unknown_model_name_raises_naming_it(tmp_path):
    path = save_checkpoint(tmp_path / "x.pt", model_name="no_such_model", model_config={}, state_dict={}, step=0)
    with pytest.raises(ValueError, match="model_name: unknown model 'no_such_model'"):
        load_evaluable(path)


def test_evaluable_must_offer_the_interface(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model("bare_linear", lambda cfg: nn.Linear(2, 1))
    path = save_checkpoint(tmp_path / "l.pt", model_name="bare_linear", model_config={},
                           state_dict=nn.Linear(2, 1).state_dict(), step=0)
    with pytest.raises(TypeError, match="bare_linear: its evaluable is a Linear"):
        load_evaluable(path)


@pytest.mark.parametrize("bad, match", [(dict(name=""), "name"), (dict(build=3), "build"), (dict(evaluable=3), "evaluable")])
def test_register_model_bad_input_raises_naming_it(bad, match):
    args = {"name": "x", "build": lambda cfg: nn.Linear(1, 1), "evaluable": None, **bad}
    with pytest.raises((ValueError, TypeError), match=match):
        register_model(args["name"], args["build"], args["evaluable"], overwrite=True)
