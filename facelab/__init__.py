"""facelab: joint 3D face reconstruction and recognition with disentangled identity features.

The package is organised by concept (``morphable``, ``camera``, ``render``, ``data``, ...);
each sub-package is imported on first use so that ``import facelab`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "morphable", "camera", "render", "data", "models", "losses", "train",
    "metrics", "fitting", "viz", "io", "bench", "reproduce", "config", "checks", "apps", "teach",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"facelab.{name}")
    raise AttributeError(f"module 'facelab' has no attribute {name!r}")


__all__ = ["__version__", *_SUBMODULES]
