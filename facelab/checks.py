"""Input validation shared by every public function.

Errors name the argument and say what is wrong, so that a bad call fails at the
boundary with a readable message instead of deep inside torch.
"""

from __future__ import annotations

from typing import Sequence

import torch


def check_tensor(
    x,
    name: str,
    shape: Sequence[int | str | None] | None = None,
    *,
    dtype_kind: str | None = "float",
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the given shape pattern and return it.

    ``shape`` entries are ints (exact size), strings (named sizes that must agree
    with each other within one call) or ``None`` (any size). A leading ``...`` is
    not supported; give the full rank.

    >>> check_tensor(torch.zeros(2, 5, 3), "verts", ("B", "V", 3)).shape
    torch.Size([2, 5, 3])
    >>> check_tensor(torch.zeros(2, 5), "verts", ("B", "V", 3))
    Traceback (most recent call last):
    ...
    ValueError: verts: expected shape (B, V, 3), got (2, 5)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        pattern = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        got = "(" + ", ".join(str(s) for s in x.shape) + ")"
        if x.dim() != len(shape):
            raise ValueError(f"{name}: expected shape {pattern}, got {got}")
        named: dict[str, int] = {}
        for want, have in zip(shape, x.shape):
            if isinstance(want, int) and want != have:
                raise ValueError(f"{name}: expected shape {pattern}, got {got}")
            if isinstance(want, str):
                if named.setdefault(want, have) != have:
                    raise ValueError(f"{name}: expected shape {pattern}, got {got} ({want} differs)")
    if dtype_kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if dtype_kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got {x.dtype}")
    # One reduction is much cheaper than an elementwise mask on hot paths; a
    # non-finite sum (NaN/Inf, or a finite overflow) triggers the exact check.
    if finite and x.is_floating_point() and x.numel() and not torch.isfinite(x.detach().sum()):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or Inf")
    return x


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``.

    >>> check_choice("torch", "backend", ["torch", "pytorch3d", "auto"])
    'torch'
    >>> check_choice("opengl", "backend", ["torch", "pytorch3d", "auto"])
    Traceback (most recent call last):
    ...
    ValueError: backend: unknown value 'opengl'; expected one of 'torch', 'pytorch3d', 'auto'
    """
    if value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {opts}")
    return value


def check_positive(value, name: str, *, integer: bool = False):
    """Check that ``value`` is a positive number (an int if ``integer``).

    >>> check_positive(64, "image_size", integer=True)
    64
    """
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name}: must be positive, got {value}")
    return value


def check_image_size(value, name: str = "image_size", minimum: int = 8) -> tuple[int, int]:
    """Normalise an image size to ``(H, W)`` px: an int or a 1-tuple means square.

    >>> check_image_size(64), check_image_size((112, 96)), check_image_size([32])
    ((64, 64), (112, 96), (32, 32))
    >>> check_image_size((4, 4))
    Traceback (most recent call last):
    ...
    ValueError: image_size: expected (H, W) with both >= 8, got (4, 4)
    """
    size = (value,) if isinstance(value, int) else tuple(value)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise TypeError(f"{name}: expected ints, got {value!r}")
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < minimum:
        raise ValueError(f"{name}: expected (H, W) with both >= {minimum}, got {size}")
    return size


def check_nonnegative_int(value, name: str) -> int:
    """Check that ``value`` is an int >= 0 (not a bool).

    >>> check_nonnegative_int(0, "n_refine")
    0
    >>> check_nonnegative_int(-1, "n_refine")
    Traceback (most recent call last):
    ...
    ValueError: n_refine: expected an int >= 0, got -1
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return value
