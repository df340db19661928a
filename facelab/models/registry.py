"""The model registry: checkpoint name -> how to build the model and how to evaluate it.

Each model module registers itself once, at import, with :func:`register_model`:
``(name, build, evaluable)``. ``build(config_dict) -> nn.Module`` makes an untrained model
from the ``model_config`` a checkpoint stores; ``evaluable(model, checkpoint) -> Evaluable``
wraps a loaded model into the interface the evaluation code scores (:class:`Evaluable`).
Importing any ``facelab.models`` module imports the package first, and the package imports
every model module, so the table is complete whenever this module is usable.

:func:`load_model` and :func:`load_evaluable` rebuild a trained model from a checkpoint
file (read by :func:`facelab.io.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from facelab.io.checkpoint import config_dict, load_checkpoint

#: Names older checkpoints may carry -> the registry name that builds them today.
#: Every name facelab ever wrote is still registered under itself; add a row here when one
#: is renamed, so the committed artifacts keep loading.
LEGACY_NAMES: dict[str, str] = {}


@runtime_checkable
class Evaluable(Protocol):
    """What :func:`facelab.metrics.evaluate_model` needs of a model.

    * ``config``: has ``image_size`` ``(H, W)`` px of the photos to render and ``resolution``
      (the SynthFaces mesh preset);
    * ``reconstruct(images, morphable)``: images ``(B, 3, H, W)`` float in [0, 1] -> a dict with
      ``shape``, ``identity_shape`` ``(B, V, 3)`` mm, ``embedding`` ``(B, D)`` and optionally
      ``landmarks2d`` ``(B, 68, 2)`` px. ``morphable`` is the suite's
      :class:`~facelab.morphable.model.MorphableModel`; models that carry their own ignore it;
    * ``decode_identity(embedding, morphable)``: ``(B, D)`` -> neutral shapes ``(B, V, 3)`` mm.

    A model may also offer ``prepare_images(batch) -> images`` (e.g. aligned crops).
    """

    config: Any

    def reconstruct(self, images: torch.Tensor, morphable) -> dict[str, torch.Tensor]: ...

    def decode_identity(self, embedding: torch.Tensor, morphable) -> torch.Tensor: ...


def _as_is(model: nn.Module, checkpoint: dict) -> nn.Module:
    return model


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its ``build(config_dict)`` and its ``evaluable(model, checkpoint)``."""

    name: str
    build: Callable[[dict], nn.Module]
    evaluable: Callable[[nn.Module, dict], Evaluable] = _as_is


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[[dict], nn.Module],
                   evaluable: Callable[[nn.Module, dict], Evaluable] | None = None, overwrite: bool = False) -> None:
    """Make ``build_model(name, config_dict)`` call ``build(config_dict)``.

    ``evaluable(model, checkpoint)`` wraps a loaded model for evaluation (default: the model
    itself, which then must be an :class:`Evaluable`).

    >>> register_model("toy_linear", lambda cfg: nn.Linear(cfg["n"], 1), overwrite=True)
    >>> build_model("toy_linear", {"n": 3}).in_features
    3
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(build):
        raise TypeError(f"build: expected a callable config_dict -> nn.Module, got {type(build).__name__}")
    if evaluable is not None and not callable(evaluable):
        raise TypeError(f"evaluable: expected a callable (model, checkpoint) -> Evaluable, got {type(evaluable).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"name: model {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = ModelEntry(name, build, evaluable or _as_is)


def registered_models() -> list[str]:
    """Names :func:`build_model` knows.

    >>> {"regressor", "liu2018", "gao2020", "sir"} <= set(registered_models())
    True
    """
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name`` (or of its :data:`LEGACY_NAMES` successor).

    >>> model_entry("sir").name
    'sir'
    """
    name = LEGACY_NAMES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"model_name: unknown model {name!r}; registered: {', '.join(registered_models())}")
    return _REGISTRY[name]


def build_model(name: str, config: dict | Any) -> nn.Module:
    """A fresh (untrained) model from its registry name and config (dict or dataclass).

    >>> build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"}).n_shape
    80
    """
    return model_entry(name).build(config_dict(config))


def load_model(path: str | Path, expect_model: str | None = None, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a checkpoint: ``(model in eval mode, checkpoint dict)``.

    Raises the errors of :func:`~facelab.io.checkpoint.load_checkpoint`, and ``ValueError``
    naming the file when the weights do not fit the model the config describes.

    >>> import tempfile; from facelab.io.checkpoint import save_checkpoint
    >>> net = build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"})
    >>> p = save_checkpoint(tempfile.mkdtemp() + "/r.pt", model_name="regressor", model_config=net.config,
    ...                     state_dict=net.state_dict(), step=0)
    >>> load_model(p)[0].training
    False
    """
    ckpt = load_checkpoint(path, expect_model=expect_model, map_location=map_location)
    model = build_model(ckpt["model_name"], ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not match a {ckpt['model_name']!r} model with the stored config ({err})") from None
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval(), ckpt


def evaluable_model(model: nn.Module, checkpoint: dict) -> Evaluable:
    """``model`` (loaded from ``checkpoint``) wrapped by its registered ``evaluable``, in eval mode."""
    wrapped = model_entry(checkpoint["model_name"]).evaluable(model, checkpoint)
    if not isinstance(wrapped, Evaluable):
        raise TypeError(f"{checkpoint['model_name']}: its evaluable is a {type(wrapped).__name__}, which lacks "
                        "config / reconstruct / decode_identity")
    return wrapped.eval()


def load_evaluable(path: str | Path, expect_model: str | None = None, map_location="cpu") -> Evaluable:
    """A checkpoint as an :class:`Evaluable` in eval mode on ``map_location``.

    >>> import tempfile; from facelab.io.checkpoint import save_checkpoint
    >>> net = build_model("regressor", {"backbone": "resnet_tiny", "image_size": [32, 32], "resolution": "quick"})
    >>> p = save_checkpoint(tempfile.mkdtemp() + "/r.pt", model_name="regressor", model_config=net.config,
    ...                     state_dict=net.state_dict(), step=0)
    >>> isinstance(load_evaluable(p), Evaluable)
    True
    """
    model, ckpt = load_model(path, expect_model=expect_model, map_location=map_location)
    return evaluable_model(model, ckpt).to(model_device(model))


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters).

    >>> model_device(nn.Linear(2, 1)).type
    'cpu'
    """
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
