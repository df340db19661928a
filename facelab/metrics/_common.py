"""Input conversion shared by the metrics: torch or numpy in, validated float64 numpy out.

Metrics are computed in float64 numpy/scipy (KD-trees, sklearn) so that reported
numbers do not depend on the dtype or device the model ran in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from facelab.checks import check_tensor


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (np.ndarray, list, tuple, float, int, np.generic)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name}: cannot convert to an array ({err})") from None
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def as_float_array(
    x, name: str, shape: Sequence[int | str | None] | None = None, *, allow_empty: bool = False
) -> np.ndarray:
    """Validate ``x`` (tensor, array or list) and return it as float64 numpy.

    >>> as_float_array([[0, 1, 2]], "pts", ("N", 3)).dtype
    dtype('float64')
    >>> as_float_array([[0, float("nan"), 2]], "pts", ("N", 3))
    Traceback (most recent call last):
    ...
    ValueError: pts: contains NaN or Inf
    """
    t = _as_tensor(x, name)
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise TypeError(f"{name}: expected a real-valued array, got {t.dtype}")
    t = check_tensor(t.to(torch.float64), name, shape)
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)})")
    return t.cpu().numpy()


def as_index_array(x, name: str, shape: Sequence[int | str | None] | None, upper: int) -> np.ndarray:
    """Validate an integer index array with entries in ``[0, upper)`` and return int64 numpy.

    >>> as_index_array([[0, 1, 2]], "faces", ("F", 3), upper=3)
    array([[0, 1, 2]])
    """
    t = _as_tensor(x, name)
    t = check_tensor(t, name, shape, dtype_kind="int")
    if t.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)})")
    arr = t.cpu().numpy().astype(np.int64)
    if arr.min() < 0 or arr.max() >= upper:
        raise ValueError(f"{name}: indices must lie in [0, {upper}), got range [{arr.min()}, {arr.max()}]")
    return arr


def as_label_array(x, name: str, n: int | None = None) -> np.ndarray:
    """Validate a 1-D label array (ints or strings) and return it as numpy.

    >>> as_label_array(["a", "b"], "labels", 2)
    array(['a', 'b'], dtype='<U1')
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels, got {arr.shape[0]}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return arr


def as_bool_array(x, name: str, n: int) -> np.ndarray:
    """Validate a ``(n,)`` boolean (or 0/1) array and return it as numpy bool.

    >>> as_bool_array([1, 0, 1], "issame", 3)
    array([ True, False,  True])
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: expected booleans (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def as_mask(mask, name: str, n: int) -> np.ndarray:
    """A vertex selection given as ``(n,)`` bool or as integer indices -> int64 indices.

    >>> as_mask([True, False, True], "mask", 3)
    array([0, 2])
    >>> as_mask([2, 0], "mask", 3)
    array([2, 0])
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"{name}: a boolean mask must have shape ({n},), got {arr.shape}")
        idx = np.flatnonzero(arr)
    elif arr.dtype.kind in "iu" and arr.ndim == 1:
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name}: indices must lie in [0, {n})")
        idx = arr.astype(np.int64)
    else:
        raise TypeError(f"{name}: expected a boolean mask or 1-D integer indices, got {arr.dtype} {arr.shape}")
    if idx.size == 0:
        raise ValueError(f"{name}: selects no vertices")
    return idx


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_optional_sizes(cfg, names) -> None:
    """Each field of ``cfg`` in ``names`` is None ("the profile's size") or an int >= 1.

    >>> from types import SimpleNamespace
    >>> check_optional_sizes(SimpleNamespace(n=None, m=3), ("n", "m"))
    >>> check_optional_sizes(SimpleNamespace(n=0), ("n",))
    Traceback (most recent call last):
    ...
    ValueError: n: must be >= 1 (None: the profile's size), got 0
    """
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}: must be >= 1 (None: the profile's size), got {value}")
