"""Batch-invariant float primitives: a sample's result never depends on its batch.

SynthFaces promises that an identity, an expression or a photo depends only on its own
seed, whatever batch it is generated in. Plain PyTorch does not keep that promise on
CPU, at the level of the last bit:

* **Matrix products** (``@``, ``einsum``, ``bmm``, ``conv2d``) go to BLAS/oneDNN, which
  choose blockings, micro-kernels and thread splits from the *whole* operand shapes, so
  the order in which one row's products are summed changes with the batch size.
* **Some element-wise ops** run a SIMD kernel over most of a tensor and a scalar libm
  loop over the last few elements (and at each thread's chunk boundary). Where the two
  disagree in the last bit, an element's value depends on where it sits in the batch.
  Measured on x86-64 (AVX-512, AVX2 and the no-SIMD path, float32 and float64; see
  ``tests/test_numerics.py``): ``sigmoid``, ``softplus``, ``atan2`` and ``pow`` with an
  exponent other than 2, 3 or ±0.5 disagree; ``exp``, ``log``, ``log1p``, ``sin``,
  ``cos``, ``tanh``, ``sqrt``, ``rsqrt``, ``erfinv`` and the correctly rounded
  arithmetic (``+ - * /``) compute every element with one kernel and agree.

The functions here rebuild the first group from the second: products as sums in a fixed
order of element-wise multiply-adds (no fused multiply-add, whose rounding differs), and
the transcendental functions from ``exp``/``log``. Each equals its PyTorch counterpart to
a few ulp, and each output element is a function of its own inputs only.

What this does *not* give is identical bits on different CPUs: the SIMD ``exp`` of
AVX-512, AVX2 and ARM differ in the last ulp, and :func:`rowwise_matmul` sums in lanes
as wide as the vector unit. See the README's determinism section for the measured
cross-machine tolerance.

>>> x = torch.linspace(-3, 3, 7)
>>> torch.allclose(sigmoid(x), torch.sigmoid(x))
True
"""

from __future__ import annotations

import torch

__all__ = ["sigmoid", "softplus", "power", "ordered_matmul", "rowwise_matmul"]

#: Integer exponents that :func:`power` computes by repeated multiplication.
MAX_INTEGER_POWER = 16
#: Rows per chunk in :func:`rowwise_matmul`; bounds the ``(chunk, K, D)`` temporary.
ROWWISE_CHUNK = 8
#: Output elements per slice in :func:`ordered_matmul` (1 MB of float32: stays in L2).
ORDERED_CHUNK_ELEMENTS = 1 << 18


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))``, element by element, with no overflow.

    Args:
        x: any shape, float.

    Returns:
        same shape, in (0, 1); within 2 ulp of :func:`torch.sigmoid`, with finite gradients
        everywhere (``exp`` only ever sees ``-|x|``).

    >>> sigmoid(torch.tensor([-200.0, 0.0, 200.0]))
    tensor([0.0000, 0.5000, 1.0000])
    """
    e = torch.exp(torch.where(x >= 0, -x, x))  # -|x|, with a gradient at 0
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``log(1 + exp(beta x)) / beta``, element by element, with no overflow.

    >>> torch.allclose(softplus(torch.tensor([-30.0, 0.0, 30.0]), beta=0.2),
    ...                torch.nn.functional.softplus(torch.tensor([-30.0, 0.0, 30.0]), beta=0.2))
    True
    """
    bx = beta * x
    positive = bx >= 0
    relu, neg_abs = torch.where(positive, bx, torch.zeros_like(bx)), torch.where(positive, -bx, bx)
    return (relu + torch.log1p(torch.exp(neg_abs))) / beta


def power(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x ** p`` element by element.

    Integer ``p`` (``|p| <= MAX_INTEGER_POWER``) is a fixed chain of multiplications
    (square-and-multiply), exact for any real ``x``. Any other ``p`` needs ``x >= 0`` and is
    ``exp(p log x)`` evaluated in float64, then rounded once to ``x``'s dtype.

    >>> power(torch.tensor([-2.0, 3.0]), 4)
    tensor([16., 81.])
    >>> power(torch.tensor([0.0, 4.0]), 0.5)
    tensor([0., 2.])
    """
    p = float(p)
    if p.is_integer() and abs(p) <= MAX_INTEGER_POWER:
        n = int(abs(p))
        out, base = torch.ones_like(x), x
        while n:
            if n & 1:
                out = out * base
            n >>= 1
            if n:
                base = base * base
        return out if p >= 0 else 1 / out
    if bool((x < 0).any()):
        raise ValueError(f"x: a non-integer power {p} needs x >= 0, got min {float(x.min()):.4g}")
    return torch.exp(p * torch.log(x.to(torch.float64))).to(x.dtype)


def ordered_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` summed over the inner dimension in a fixed order, for short inner dims.

    Args:
        a: ``(..., R, K)`` float.
        b: ``(..., K, C)`` float; leading dims broadcast as in :func:`torch.matmul`.

    Returns:
        ``(..., R, C)``: ``sum_k a[..., :, k] b[..., k, :]``, accumulated for k = 0, 1, ...
        with separate multiplies and adds. Costs K passes over the output, so use it for
        K up to about a hundred (blendshape weights, SH bands, separable fields).

    >>> a, b = torch.randn(4, 2, 5), torch.randn(5, 3)
    >>> torch.allclose(ordered_matmul(a, b), a @ b, atol=1e-6)
    True
    """
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(f"a, b: need at least 2 dims each, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"a, b: inner dimensions differ, {tuple(a.shape)} @ {tuple(b.shape)}")
    # Slices of a's leading dim keep each running sum in cache across the K passes; an
    # element's operations, hence its bits, are the same whatever the slicing.
    n, per_row = a.shape[0], a[:1].shape[:-1].numel() * b.shape[-1]
    step = max(1, ORDERED_CHUNK_ELEMENTS // max(per_row, 1))
    if n <= step:
        return _ordered_matmul(a, b)
    b_batched = a.dim() >= 3 and b.dim() == a.dim() and b.shape[0] == n
    return torch.cat([_ordered_matmul(a[i : i + step], b[i : i + step] if b_batched else b) for i in range(0, n, step)])


def _ordered_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def rowwise_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` with each output an independent, fixed-shape reduction, for long inner dims.

    Args:
        x: ``(N, D)`` float.
        w: ``(D, K)`` float.

    Returns:
        ``(N, K)``: entry ``(n, k)`` is ``(x[n] * w[:, k]).sum()``, a reduction over one
        contiguous row of length D whose order depends on D alone, never on N or on which
        rows share the batch.

    >>> x, w = torch.randn(3, 50), torch.randn(50, 4)
    >>> torch.allclose(rowwise_matmul(x, w), x @ w, atol=1e-5)
    True
    """
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x, w: expected (N, D) and (D, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    wt = w.t().contiguous()  # (K, D): each output reduces one contiguous row
    rows = [(chunk[:, None, :] * wt[None]).sum(-1) for chunk in x.split(ROWWISE_CHUNK)]
    return torch.cat(rows) if rows else x.new_zeros(0, w.shape[1])
