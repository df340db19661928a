"""Face recognition loss of Gao et al. 2020: softmax + center loss (eq. 4).

Book chapter: ``book/06_losses.ipynb``.

``L_recog = L_soft + lambda_center * L_center`` (Gao et al. 2020, eq. 4). The softmax
term classifies each identity code into its training identity; the center loss of
Wen et al. 2016 pulls every code toward a learnable centre of its class, which makes
the codes compact per identity (what verification needs) rather than only separable.

* :func:`center_loss` / :class:`CenterLoss`: ``0.5 * mean_b ||f_b - c_{y_b}||^2``.
* :class:`RecognitionLoss`: a :class:`~facelab.losses.angular.SoftmaxLoss` head plus a
  :class:`CenterLoss`, returning the total and its parts.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.checks import check_positive, check_tensor
from facelab.losses.angular import SoftmaxLoss

#: ``lambda_center`` of eq. 4. Gao et al. do not report it; Wen et al. 2016 use 0.003
#: for faces and show that anything in [1e-3, 1e-1] works about as well.
CENTER_WEIGHT = 0.003


def _check_labels(labels: torch.Tensor, batch: int, n_classes: int) -> None:
    check_tensor(labels, "labels", (batch,), dtype_kind="int")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels: class indices must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Center loss (Wen et al. 2016): half the mean squared distance to the class centre.

    ``L_center = 0.5 * mean_b ||f_b - c_{y_b}||_2^2``, the second term of eq. 4 of
    Gao et al. 2020. Gradients flow to both the features and the centres, so plain
    gradient descent on ``centers`` moves each centre toward the mean of its features.

    Args:
        features: ``(B, D)`` float, identity codes (unitless).
        labels: ``(B,)`` long, class indices in ``[0, C)``.
        centers: ``(C, D)`` float, one centre per class.

    Returns:
        ``()`` scalar, in squared feature units.

    >>> center_loss(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([0, 1]),
    ...             torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    tensor(7.2500)
    """
    check_tensor(features, "features", ("B", "D"))
    check_tensor(centers, "centers", ("C", features.shape[1] if features.dim() == 2 else "D"))
    _check_labels(labels, features.shape[0], centers.shape[0])
    diff = features - centers[labels]
    return 0.5 * diff.pow(2).sum(dim=1).mean()


class CenterLoss(nn.Module):
    """:func:`center_loss` with learnable ``(n_classes, dim)`` centres (start at 0).

    Train the centres with the rest of the model (their gradient is
    ``-(1/B) sum_{b: y_b = j} (f_b - c_j)``, so each step moves ``c_j`` toward its features).

    >>> loss = CenterLoss(3, 4)(torch.ones(2, 4), torch.tensor([0, 2]))
    >>> loss
    tensor(2., grad_fn=<MulBackward0>)
    """

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        check_positive(n_classes, "n_classes", integer=True)
        check_positive(dim, "dim", integer=True)
        self.n_classes, self.dim = n_classes, dim
        # Zeros (as in Wen et al.'s release): deterministic, and the first updates move
        # every centre to its class mean whatever the feature scale.
        self.centers = nn.Parameter(torch.zeros(n_classes, dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``features (B, dim)``, ``labels (B,)`` -> ``()`` scalar."""
        return center_loss(features, labels, self.centers)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, dim={self.dim}"


class RecognitionLoss(nn.Module):
    """``L_recog = L_soft + lambda_center * L_center`` (Gao et al. 2020, eq. 4).

    Holds a :class:`~facelab.losses.angular.SoftmaxLoss` head (linear classifier with
    bias) and a :class:`CenterLoss`.

    Args:
        in_features: identity-code size D.
        n_classes: number of training identities C.
        lambda_center: weight of the center loss (default :data:`CENTER_WEIGHT`).

    ``forward(features (B, D), labels (B,))`` returns ``(loss, parts)`` with ``loss`` a
    ``()`` scalar and ``parts`` a dict of detached scalars ``softmax``, ``center`` and
    ``acc`` (training accuracy of the softmax head, in [0, 1]).

    >>> _ = torch.manual_seed(0)
    >>> loss, parts = RecognitionLoss(8, 3)(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    >>> loss.shape, sorted(parts)
    (torch.Size([]), ['acc', 'center', 'softmax'])
    """

    def __init__(self, in_features: int, n_classes: int, lambda_center: float = CENTER_WEIGHT) -> None:
        super().__init__()
        if not isinstance(lambda_center, (int, float)) or isinstance(lambda_center, bool) or lambda_center < 0:
            raise ValueError(f"lambda_center: expected a number >= 0, got {lambda_center!r}")
        self.lambda_center = float(lambda_center)
        self.softmax = SoftmaxLoss(in_features, n_classes)
        self.center = CenterLoss(n_classes, in_features)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_tensor(features, "features", ("B", self.softmax.in_features))
        _check_labels(labels, features.shape[0], self.softmax.n_classes)
        logits = self.softmax.logits(features, labels)
        soft = nn.functional.cross_entropy(logits, labels)
        cent = self.center(features, labels)
        acc = (logits.detach().argmax(dim=1) == labels).to(features.dtype).mean()
        loss = soft + self.lambda_center * cent
        return loss, {"softmax": soft.detach(), "center": cent.detach(), "acc": acc}

    def extra_repr(self) -> str:
        return f"lambda_center={self.lambda_center}"
