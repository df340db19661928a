"""facelab.losses: classification losses for face recognition.

* :mod:`~facelab.losses.angular`: A-Softmax (SphereFace), CosFace, ArcFace and plain softmax.
"""

from facelab.losses.angular import (
    LOSSES, ArcFaceLoss, AnnealingSchedule, ASoftmaxLoss, CosFaceLoss, SoftmaxLoss,
    a_softmax_logits, arcface_logits, build_classifier_loss, cosface_logits, psi, softmax_logits,
)

__all__ = [
    "psi", "a_softmax_logits", "cosface_logits", "arcface_logits", "softmax_logits",
    "AnnealingSchedule", "ASoftmaxLoss", "CosFaceLoss", "ArcFaceLoss", "SoftmaxLoss",
    "LOSSES", "build_classifier_loss",
]
