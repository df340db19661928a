"""Fitting a 3D morphable model to images: landmark-based, single- and multi-image, and the
training targets of Liu et al. 2018 (``facelab fit``, :func:`load_fitted_targets`).

Book chapter: ``book/04_fitting.ipynb`` ("Fitting a 3DMM to a photo collection").
"""

from facelab.fitting.landmarks import (
    LandmarkFit,
    LandmarkFitConfig,
    estimate_pose,
    fit_landmarks,
    project_landmarks,
)
from facelab.fitting.photometric import (
    FIT_SUITES,
    CollectionFitConfig,
    PhotometricFit,
    PhotometricFitConfig,
    fit_collection,
    fit_collection_study,
    fit_photometric,
    identity_rmse,
)
from facelab.fitting.targets import CollectionView, load_fitted_targets, save_fitted_targets

__all__ = [
    "estimate_pose", "fit_landmarks", "project_landmarks", "LandmarkFit", "LandmarkFitConfig",
    "fit_photometric", "PhotometricFit", "PhotometricFitConfig", "identity_rmse",
    "fit_collection_study", "fit_collection", "CollectionFitConfig", "FIT_SUITES",
    "save_fitted_targets", "load_fitted_targets", "CollectionView",
]
