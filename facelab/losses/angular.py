"""Angular-margin classification losses for face recognition.

Book chapter: ``book/06_losses.ipynb``. Each loss is a plain function that turns
features and a class weight matrix into logits, plus a thin ``nn.Module`` that owns
the weight matrix and applies cross-entropy:

* :func:`a_softmax_logits` / :class:`ASoftmaxLoss`: SphereFace's A-Softmax (Liu et al.
  2017), a *multiplicative* angular margin ``cos(m theta)`` made monotone by
  :func:`psi`, with the annealing ``lambda`` that blends it with the plain cosine
  early in training. Weights are normalised, features are not, there is no bias.
* :func:`cosface_logits` / :class:`CosFaceLoss`: an *additive cosine* margin,
  ``s (cos theta - m)`` for the target class (Wang et al. 2018).
* :func:`arcface_logits` / :class:`ArcFaceLoss`: an *additive angular* margin,
  ``s cos(theta + m)`` for the target class (Deng et al. 2019).
* :func:`softmax_logits` / :class:`SoftmaxLoss`: the plain linear softmax classifier.

Angles are radians. ``theta_j`` is the angle between a feature ``x`` and the class
weight ``w_j``. All heads offer ``scores(features) -> (B, C)``, the margin-free
cosines whose ``argmax`` is the predicted class (for :class:`SoftmaxLoss`, the plain
linear logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facelab.checks import check_choice, check_positive, check_tensor

A_SOFTMAX_DEFAULT_M = 4
COSFACE_DEFAULT_S = 30.0
COSFACE_DEFAULT_M = 0.35
ARCFACE_DEFAULT_S = 64.0
ARCFACE_DEFAULT_M = 0.5
# Norms below this are treated as zero when normalising, so a zero feature gives
# cos = 0 instead of NaN.
NORM_EPS = 1e-12
# acos and sqrt(1 - c^2) have infinite slope at c = +-1: clamp slightly inside.
COS_CLAMP = 1.0 - 1e-7


# ------------------------------------------------------------------ validation
def _check_inputs(features, weight, labels=None):
    check_tensor(features, "features", ("B", "D"))
    check_tensor(weight, "weight", ("C", features.shape[1] if features.dim() == 2 else "D"))
    if labels is None:
        return
    check_tensor(labels, "labels", (features.shape[0],), dtype_kind="int")
    n_classes = weight.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels: class indices must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def _check_margin_m(m) -> int:
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m: A-Softmax margin must be a positive int, got {m!r}")
    return m


def _cosine(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` cosines between rows of ``features`` and rows of ``weight``."""
    return F.normalize(features, dim=1, eps=NORM_EPS) @ F.normalize(weight, dim=1, eps=NORM_EPS).T


def _one_hot(labels: torch.Tensor, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, n_classes).to(dtype=like.dtype, device=like.device)


# ------------------------------------------------------------------ A-Softmax
def _chebyshev_cos_multiple(cos_theta: torch.Tensor, m: int) -> torch.Tensor:
    """``cos(m theta)`` from ``cos theta`` by the Chebyshev recurrence ``T_m``.

    Avoids differentiating ``acos``, whose slope is infinite at ``cos = +-1``.
    """
    t_prev, t = torch.ones_like(cos_theta), cos_theta
    for _ in range(m - 1):
        t_prev, t = t, 2 * cos_theta * t - t_prev
    return t


def psi(theta: torch.Tensor, m: int = A_SOFTMAX_DEFAULT_M) -> torch.Tensor:
    """SphereFace's monotone extension of ``cos(m theta)`` to ``[0, pi]``.

    ``psi(theta) = (-1)^k cos(m theta) - 2k`` for ``theta`` in ``[k pi/m, (k+1) pi/m]``,
    ``k = 0..m-1``. It is continuous, decreases monotonically from 1 to ``1 - 2m``, and
    equals ``cos(m theta)`` on the first interval.

    Args:
        theta: any shape, float, radians in ``[0, pi]``.
        m: the margin, a positive int (``m = 1`` gives ``cos theta``).

    Returns:
        the same shape as ``theta``.

    >>> psi(torch.tensor([0.0, math.pi / 3, math.pi]), m=4)
    tensor([ 1.0000, -1.5000, -7.0000])
    """
    check_tensor(theta, "theta")
    _check_margin_m(m)
    k = torch.floor(theta.detach() * m / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * torch.cos(m * theta) - 2.0 * k


def _psi_from_cos(cos_theta: torch.Tensor, m: int) -> torch.Tensor:
    theta = torch.acos(cos_theta.detach().clamp(-1.0, 1.0))
    k = torch.floor(theta * m / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * _chebyshev_cos_multiple(cos_theta, m) - 2.0 * k


def a_softmax_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    m: int = A_SOFTMAX_DEFAULT_M,
    lambda_: float = 0.0,
) -> torch.Tensor:
    """A-Softmax logits (SphereFace): a multiplicative angular margin on the target class.

    With ``theta_j`` the angle between ``x`` and the normalised weight ``w_j``:

    * non-target class ``j``: ``||x|| cos theta_j``;
    * target class ``y``: ``||x|| (lambda cos theta_y + psi(theta_y)) / (1 + lambda)``,

    where :func:`psi` is the monotone ``cos(m theta)``. ``lambda = 0`` is the pure
    A-Softmax of the paper; a large ``lambda`` (early in training, see
    :class:`AnnealingSchedule`) makes it the margin-free normalised-weight softmax.

    Args:
        features: ``(B, D)`` float, not normalised (its norm scales the logits).
        weight: ``(C, D)`` float, class weights (normalised here; their norm is ignored).
        labels: ``(B,)`` long, class indices in ``[0, C)``.
        m: the angular margin, a positive int.
        lambda_: the annealing weight, ``>= 0``.

    Returns:
        ``(B, C)`` logits for ``F.cross_entropy``.

    >>> x = torch.tensor([[1.0, 0.0]])
    >>> w = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)], [0.0, -1.0]])
    >>> a_softmax_logits(2 * x, w, torch.tensor([0]), m=4)  # target at 60 deg: 2 * psi = -3
    tensor([[-3.,  0.]])
    """
    _check_inputs(features, weight, labels)
    _check_margin_m(m)
    if not lambda_ >= 0:
        raise ValueError(f"lambda_: must be >= 0, got {lambda_}")
    cos_theta = _cosine(features, weight).clamp(-1.0, 1.0)
    x_norm = features.norm(dim=1, keepdim=True)
    target = (lambda_ * cos_theta + _psi_from_cos(cos_theta, m)) / (1.0 + lambda_)
    mask = _one_hot(labels, weight.shape[0], cos_theta)
    return x_norm * (cos_theta + mask * (target - cos_theta))


@dataclass
class AnnealingSchedule:
    """The A-Softmax annealing ``lambda(it) = max(lambda_min, base (1 + gamma it)^-power)``.

    Defaults are SphereFace's (``base=1000, gamma=0.12, power=1, lambda_min=5``).

    >>> AnnealingSchedule().lambda_at(0), round(AnnealingSchedule().lambda_at(100), 3)
    (1000.0, 76.923)
    """

    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    lambda_min: float = 5.0

    def __post_init__(self) -> None:
        for name in ("base", "gamma", "power", "lambda_min"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")

    def lambda_at(self, iteration: int) -> float:
        """The annealing weight at training ``iteration`` (an int ``>= 0``)."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration: expected an int >= 0, got {iteration!r}")
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))


# ------------------------------------------------------------------ additive margins
def cosface_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    s: float = COSFACE_DEFAULT_S,
    m: float = COSFACE_DEFAULT_M,
) -> torch.Tensor:
    """CosFace (large-margin cosine) logits: ``s (cos theta_j - m [j = y])``.

    Args:
        features: ``(B, D)`` float (normalised here).
        weight: ``(C, D)`` float (normalised here).
        labels: ``(B,)`` long in ``[0, C)``.
        s: the scale (the radius of the hypersphere), ``> 0``.
        m: the cosine margin, ``>= 0``.

    Returns:
        ``(B, C)`` logits.

    >>> cosface_logits(torch.tensor([[1.0, 0.0]]), torch.eye(2), torch.tensor([0]), s=10.0, m=0.5)
    tensor([[5., 0.]])
    """
    _check_inputs(features, weight, labels)
    check_positive(s, "s")
    if not m >= 0:
        raise ValueError(f"m: the cosine margin must be >= 0, got {m}")
    cos_theta = _cosine(features, weight)
    return s * (cos_theta - m * _one_hot(labels, weight.shape[0], cos_theta))


def arcface_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    s: float = ARCFACE_DEFAULT_S,
    m: float = ARCFACE_DEFAULT_M,
) -> torch.Tensor:
    """ArcFace (additive angular margin) logits: ``s cos(theta_y + m)`` for the target.

    Non-target classes get ``s cos theta_j``. When ``theta_y + m > pi`` the target
    logit ``cos(theta + m)`` would start increasing again; as in insightface it is then
    replaced by the linear continuation ``cos theta - m sin(m)``, which keeps it
    monotone in ``theta``.

    Args:
        features: ``(B, D)`` float (normalised here).
        weight: ``(C, D)`` float (normalised here).
        labels: ``(B,)`` long in ``[0, C)``.
        s: the scale, ``> 0``.
        m: the angular margin, radians in ``[0, pi/2)``.

    Returns:
        ``(B, C)`` logits.

    >>> w = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)], [0.0, 1.0]])
    >>> arcface_logits(torch.tensor([[1.0, 0.0]]), w, torch.tensor([0]), s=2.0, m=math.pi / 6)  # 2 cos(90 deg)
    tensor([[0., 0.]])
    """
    _check_inputs(features, weight, labels)
    check_positive(s, "s")
    if not 0 <= m < math.pi / 2:
        raise ValueError(f"m: the angular margin must lie in [0, pi/2) radians, got {m}")
    cos_theta = _cosine(features, weight).clamp(-COS_CLAMP, COS_CLAMP)
    sin_theta = torch.sqrt(1.0 - cos_theta**2)
    cos_theta_m = cos_theta * math.cos(m) - sin_theta * math.sin(m)
    # theta + m > pi  <=>  cos theta < cos(pi - m)
    target = torch.where(cos_theta > math.cos(math.pi - m), cos_theta_m, cos_theta - m * math.sin(m))
    mask = _one_hot(labels, weight.shape[0], cos_theta)
    return s * (cos_theta + mask * (target - cos_theta))


def softmax_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain linear classifier logits ``features @ weight.T + bias``.

    Args:
        features: ``(B, D)`` float.
        weight: ``(C, D)`` float.
        bias: ``(C,)`` float or None.

    Returns:
        ``(B, C)`` logits.

    >>> softmax_logits(torch.tensor([[1.0, 2.0]]), torch.eye(2), torch.tensor([0.5, 0.0]))
    tensor([[1.5000, 2.0000]])
    """
    _check_inputs(features, weight)
    if bias is not None:
        check_tensor(bias, "bias", (weight.shape[0],))
    return F.linear(features, weight, bias)


# ------------------------------------------------------------------ modules
class _ClassifierHead(nn.Module):
    """Owns a ``(C, D)`` class weight matrix; ``forward`` returns the mean cross-entropy."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        check_positive(in_features, "in_features", integer=True)
        check_positive(n_classes, "n_classes", integer=True)
        self.in_features, self.n_classes = in_features, n_classes
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` logits with the head's margin; each concrete head defines it."""
        raise TypeError(f"{type(self).__name__}: a classifier head must define logits()")

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``features (B, D)`` against ``labels (B,)``: a scalar."""
        return F.cross_entropy(self.logits(features, labels), labels)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` margin-free class scores (cosines ``cos theta_j``); argmax is the prediction."""
        _check_inputs(features, self.weight)
        return _cosine(features, self.weight)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """``(B,)`` long: the predicted class of each feature row."""
        return self.scores(features).argmax(dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_classes={self.n_classes}"


class ASoftmaxLoss(_ClassifierHead):
    """SphereFace's A-Softmax loss with the annealing schedule.

    Holds the class weights ``(C, D)`` and an ``iteration`` counter (a buffer, so it
    is saved with the state dict). Each call in training mode uses
    ``lambda = schedule.lambda_at(iteration)`` and then advances the counter; in
    eval mode the counter is left alone. See :func:`a_softmax_logits`.

    >>> _ = torch.manual_seed(0)
    >>> head = ASoftmaxLoss(8, 3)
    >>> loss = head(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    >>> loss.shape, int(head.iteration), head.current_lambda
    (torch.Size([]), 1, 892.8571428571428)
    """

    def __init__(self, in_features: int, n_classes: int, m: int = A_SOFTMAX_DEFAULT_M,
                 schedule: AnnealingSchedule | None = None) -> None:
        super().__init__(in_features, n_classes)
        self.m = _check_margin_m(m)
        self.schedule = schedule if schedule is not None else AnnealingSchedule()
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def current_lambda(self) -> float:
        """The annealing weight the next call will use."""
        return self.schedule.lambda_at(int(self.iteration))

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` A-Softmax logits at the current ``lambda`` (does not advance it)."""
        return a_softmax_logits(features, self.weight, labels, m=self.m, lambda_=self.current_lambda)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = super().forward(features, labels)
        if self.training:
            self.iteration += 1
        return loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


class CosFaceLoss(_ClassifierHead):
    """CosFace loss: cross-entropy on :func:`cosface_logits`.

    >>> CosFaceLoss(8, 3)(torch.randn(4, 8), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([])
    """

    def __init__(self, in_features: int, n_classes: int, s: float = COSFACE_DEFAULT_S, m: float = COSFACE_DEFAULT_M) -> None:
        super().__init__(in_features, n_classes)
        self.s, self.m = s, m

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_logits(features, self.weight, labels, s=self.s, m=self.m)


class ArcFaceLoss(_ClassifierHead):
    """ArcFace loss: cross-entropy on :func:`arcface_logits`.

    >>> ArcFaceLoss(8, 3)(torch.randn(4, 8), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([])
    """

    def __init__(self, in_features: int, n_classes: int, s: float = ARCFACE_DEFAULT_S, m: float = ARCFACE_DEFAULT_M) -> None:
        super().__init__(in_features, n_classes)
        self.s, self.m = s, m

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return arcface_logits(features, self.weight, labels, s=self.s, m=self.m)


class SoftmaxLoss(_ClassifierHead):
    """Plain softmax loss: a linear layer with bias, then cross-entropy.

    ``scores`` returns the linear logits here (their argmax is the prediction).

    >>> SoftmaxLoss(8, 3)(torch.randn(4, 8), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([])
    """

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__(in_features, n_classes)
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def logits(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            _check_inputs(features, self.weight, labels)
        return softmax_logits(features, self.weight, self.bias)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return softmax_logits(features, self.weight, self.bias)


LOSSES = {"asoftmax": ASoftmaxLoss, "cosface": CosFaceLoss, "arcface": ArcFaceLoss, "softmax": SoftmaxLoss}


def build_classifier_loss(name: str, in_features: int, n_classes: int, **kwargs) -> _ClassifierHead:
    """The classification loss module called ``name`` (one of :data:`LOSSES`).

    >>> build_classifier_loss("cosface", 16, 5)
    CosFaceLoss(in_features=16, n_classes=5)
    """
    check_choice(name, "loss", list(LOSSES))
    return LOSSES[name](in_features, n_classes, **kwargs)
