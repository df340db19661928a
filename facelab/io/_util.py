"""Small helpers shared by the loaders: path checks, array conversion, .mat reading.

Every error raised here names the file, so that a loader's caller sees *which*
file is wrong and *what* is wrong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch


def existing_file(path, what: str = "file") -> Path:
    """``path`` as a :class:`Path`; ``FileNotFoundError`` naming it if it is not a file."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def existing_dir(path, what: str = "folder") -> Path:
    """``path`` as a :class:`Path`; ``FileNotFoundError`` naming it if it is not a folder."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy view/copy of a tensor, array or nested list; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array ({err})") from None


def as_vector(a: np.ndarray, path: Path, key: str, length: int | None = None) -> np.ndarray:
    """Flatten a ``(n,)``, ``(n, 1)`` or ``(1, n)`` array, checking its length.

    MATLAB stores vectors as ``(n, 1)`` or ``(1, n)`` matrices; both are accepted.
    """
    a = np.asarray(a)
    if a.ndim > 2 or (a.ndim == 2 and min(a.shape) != 1 and a.size):
        raise ValueError(f"{path}: '{key}' must be a vector, got shape {a.shape}")
    a = a.reshape(-1)
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{path}: '{key}' must have {length} entries, got {a.shape[0]}")
    return a


def check_finite(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{path}: '{key}' contains NaN or Inf")
    return a


def read_mat(path: Path, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read named arrays from a MATLAB ``.mat`` (v5 via scipy, v7.3 via h5py).

    Missing ``required`` keys raise ``ValueError`` naming the file and the key;
    missing ``optional`` keys are left out of the result. v7.3 files are HDF5 and
    store arrays transposed (MATLAB is column-major), so 2-D arrays are
    transposed back to MATLAB's orientation.
    """
    import zlib

    import scipy.io
    from scipy.io.matlab import MatReadError

    required, optional = list(required), list(optional)
    try:
        raw = scipy.io.loadmat(str(path), variable_names=required + optional)
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file
        raw = _read_mat73(path, required + optional)
    except (MatReadError, zlib.error, ValueError, TypeError, OSError, EOFError, IndexError, KeyError, AssertionError) as err:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(err).__name__}: {err})") from None
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing required key(s) {missing}")
    return {k: np.asarray(raw[k]) for k in required + optional if k in raw}


def _read_mat73(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for k in keys:
                if k in f and isinstance(f[k], h5py.Dataset):
                    a = f[k][()]
                    out[k] = a.T if a.ndim == 2 else a
    except OSError as err:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 .mat file ({err})") from None
    return out


def read_image(path, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Load an image file as a float tensor.

    Args:
        path: an image file readable by PIL (jpg, png, ...).
        image_size: optional ``(H, W)`` in pixels; the image is resized (bilinear) to it.

    Returns:
        ``(3, H, W)`` float32 RGB in [0, 1].

    >>> import tempfile, os
    >>> from PIL import Image
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.new("RGB", (4, 2), (255, 0, 0)).save(p)
    >>> read_image(p).shape, float(read_image(p)[0, 0, 0])
    (torch.Size([3, 2, 4]), 1.0)
    """
    from PIL import Image, UnidentifiedImageError

    path = existing_file(path, "image file")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if image_size is not None:
                h, w = image_size
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
