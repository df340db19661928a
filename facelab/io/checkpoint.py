"""Checkpoint files: atomic writes, checked reads and RNG state.

Rebuilding a model from a checkpoint is :func:`facelab.models.load_model`'s job (the
model registry); this module only reads and writes the files.

A facelab checkpoint is a ``torch.save`` file holding one dict:

=================  =========================================================
key                content
=================  =========================================================
format             ``"facelab-checkpoint"``
format_version     :data:`FORMAT_VERSION`
facelab_version    the package version that wrote it
torch_version      the torch version that wrote it
model_name         the registry name (e.g. ``"regressor"``), see :func:`facelab.models.build_model`
model_config       the model's config as a JSON-ready dict
state_dict         the model's ``state_dict()``
optimizer          ``optimizer.state_dict()`` or None
scheduler          ``scheduler.state_dict()`` or None
step, epoch        training progress (ints)
train_config       the training config as a JSON-ready dict
rng                torch / CUDA / numpy / Python RNG states (or None); rank 0's under torchrun
rng_per_rank       a list of such states, one per rank (absent in older files)
extra              free-form JSON-ready dict (the trainer stores ``recipe``, ``data_position``
                   and ``world_size`` here)
=================  =========================================================

Only tensors and plain Python values are stored, so :func:`load_checkpoint` reads with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.

Writes are atomic: the file is written to a temporary file in the same folder, flushed
and ``fsync``-ed, then moved over the target with ``os.replace``. A crash mid-write leaves
the previous checkpoint intact (and at worst a stray ``.tmp`` file).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "facelab-checkpoint"
FORMAT_VERSION = 1
TMP_SUFFIX = ".tmp"

# ---------------------------------------------------------------- helpers
def config_dict(cfg) -> dict:
    """A config (dataclass instance, dict or None) as the JSON-ready dict a checkpoint stores.

    >>> config_dict({"size": (64, 64)})
    {'size': [64, 64]}
    """
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        d = dataclasses.asdict(cfg)
    elif isinstance(cfg, dict):
        d = dict(cfg)
    else:
        raise TypeError(f"config: expected a dataclass instance or a dict, got {type(cfg).__name__}")
    # tuples become lists: plain JSON-like values load under weights_only
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def get_rng_state() -> dict:
    """The torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain values.

    >>> s = get_rng_state(); sorted(s)
    ['cuda', 'numpy', 'python', 'torch']
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(state), "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    """Restore RNG states saved by :func:`get_rng_state`.

    >>> s = get_rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.rand(1) == a)
    True
    """
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same folder, fsync, replace).

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> atomic_torch_save({"a": 1}, d + "/x.pt").name
    'x.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.chmod(tmp, _DEFAULT_FILE_MODE & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


_DEFAULT_FILE_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | Path,
    *,
    model_name: str,
    model_config,
    state_dict: dict,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    step: int,
    epoch: int = 0,
    train_config=None,
    rng_state: bool = True,
    rng_per_rank: list | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a facelab checkpoint atomically (see the module docstring for the layout).

    Args:
        path: the file to write (its folder is created).
        model_name: registry name of the model (see :func:`facelab.models.register_model`).
        model_config: the model's config (dataclass or dict).
        state_dict: ``model.state_dict()``.
        optimizer, scheduler: saved through their ``state_dict()`` when given.
        step, epoch: training progress.
        train_config: the training config (dataclass, dict or None).
        rng_state: also store the RNG states (for exact resumption).
        rng_per_rank: the RNG states of every rank (:func:`get_rng_state` gathered from each
            process); replaces this process's state when given.
        extra: more JSON-ready values.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> p = save_checkpoint(d + "/a.pt", model_name="toy", model_config={"n": 1},
    ...                     state_dict={"w": torch.ones(2)}, step=3)
    >>> load_checkpoint(p)["step"]
    3
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name: expected a non-empty string, got {model_name!r}")
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict: expected a dict (model.state_dict()), got {type(state_dict).__name__}")
    for name, value in (("step", step), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    from facelab import __version__

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "facelab_version": __version__,
        "torch_version": str(torch.__version__),
        "model_name": model_name,
        "model_config": config_dict(model_config),
        "state_dict": state_dict,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "epoch": epoch,
        "train_config": config_dict(train_config),
        "rng": (rng_per_rank[0] if rng_per_rank else get_rng_state()) if rng_state else None,
        "extra": dict(extra or {}),
    }
    if rng_state and rng_per_rank:
        payload["rng_per_rank"] = list(rng_per_rank)
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, expect_model: str | None = None, map_location="cpu") -> dict:
    """Read and check a facelab checkpoint.

    Args:
        path: the checkpoint file.
        expect_model: if given, the ``model_name`` it must hold.
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint dict (keys in the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated or corrupt, is not a facelab checkpoint, has
            another format version, or holds another model than ``expect_model``. Each
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise ValueError(f"{path}: cannot read the checkpoint; the file is truncated or corrupt ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a facelab checkpoint (no format {FORMAT!r} header)")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version!r} (written by facelab "
                         f"{ckpt.get('facelab_version', '?')}); this facelab reads version {FORMAT_VERSION}")
    missing = [k for k in ("model_name", "model_config", "state_dict", "step") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}")
    if expect_model is not None and ckpt["model_name"] != expect_model:
        raise ValueError(f"{path}: holds a {ckpt['model_name']!r} model, expected {expect_model!r}")
    return ckpt
