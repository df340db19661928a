"""facelab.losses: the training losses of the book's models.

* :mod:`~facelab.losses.angular`: A-Softmax (SphereFace), CosFace, ArcFace and plain softmax.
* :mod:`~facelab.losses.recognition`: softmax + center loss (Gao et al. 2020, eq. 4).
* :mod:`~facelab.losses.photometric`: masked photometric loss + gradient difference loss (eq. 5).
* :mod:`~facelab.losses.landmark`: 2D landmark loss + landmark GDL (eq. 6).
* :mod:`~facelab.losses.shape`: shape L1, pairwise shape, template smoothness, albedo symmetry (eqs. 7-10).
* :mod:`~facelab.losses.adversarial`: WGAN-div critic and generator losses (eq. 11).
* :mod:`~facelab.losses.sir`: the SIR loss in the geometry-weighted space (facelab's definition; ``book/10_sir.ipynb``).

Book chapter: ``book/06_losses.ipynb``.
"""

from facelab.losses.adversarial import (
    WGAN_DIV_K, WGAN_DIV_P, WGANDivCriticLoss, WGANDivGeneratorLoss,
    sample_real_shapes, wgan_div_critic_loss, wgan_div_generator_loss,
)
from facelab.losses.angular import (
    LOSSES, ArcFaceLoss, AnnealingSchedule, ASoftmaxLoss, CosFaceLoss, SoftmaxLoss,
    a_softmax_logits, arcface_logits, build_classifier_loss, cosface_logits, psi, softmax_logits,
)
from facelab.losses.landmark import LANDMARK_GDL_PAIRS, LandmarkLoss, landmark_gdl, landmark_loss
from facelab.losses.photometric import PhotometricLoss, gradient_difference_loss, image_gradients, photometric_loss
from facelab.losses.recognition import CENTER_WEIGHT, CenterLoss, RecognitionLoss, center_loss
from facelab.losses.shape import (
    AlbedoSymmetryLoss, LaplacianSmoothnessLoss, PairwiseShapeLoss, ShapeL1Loss, TemplateSmoothnessLoss,
    albedo_symmetry, laplacian_smoothness, pairwise_shape_loss, shape_l1, swap_partners,
    template_smoothness, uniform_laplacian,
)
from facelab.losses.sir import SIR_MARGIN_MM, SIRLoss, geometry_weighted, sir_loss, sir_loss_terms

__all__ = [
    "psi", "a_softmax_logits", "cosface_logits", "arcface_logits", "softmax_logits",
    "AnnealingSchedule", "ASoftmaxLoss", "CosFaceLoss", "ArcFaceLoss", "SoftmaxLoss",
    "LOSSES", "build_classifier_loss",
    # Gao et al. 2020
    "CENTER_WEIGHT", "center_loss", "CenterLoss", "RecognitionLoss",
    "image_gradients", "gradient_difference_loss", "photometric_loss", "PhotometricLoss",
    "LANDMARK_GDL_PAIRS", "landmark_loss", "landmark_gdl", "LandmarkLoss",
    "shape_l1", "swap_partners", "pairwise_shape_loss", "uniform_laplacian", "template_smoothness",
    "laplacian_smoothness", "albedo_symmetry", "ShapeL1Loss", "PairwiseShapeLoss", "TemplateSmoothnessLoss",
    "LaplacianSmoothnessLoss", "AlbedoSymmetryLoss",
    "WGAN_DIV_K", "WGAN_DIV_P", "wgan_div_critic_loss", "wgan_div_generator_loss", "sample_real_shapes",
    "WGANDivCriticLoss", "WGANDivGeneratorLoss",
    # SIR (identity-aware shape), book/10_sir.ipynb
    "SIR_MARGIN_MM", "geometry_weighted", "sir_loss_terms", "sir_loss", "SIRLoss",
]
