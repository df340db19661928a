"""Fitting a 3D morphable model to images: landmark-based, single- and multi-image.

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
    CollectionFitConfig,
    PhotometricFit,
    PhotometricFitConfig,
    fit_collection_study,
    fit_photometric,
    identity_rmse,
)

__all__ = [
    "estimate_pose", "fit_landmarks", "project_landmarks", "LandmarkFit", "LandmarkFitConfig",
    "fit_photometric", "PhotometricFit", "PhotometricFitConfig", "identity_rmse",
    "fit_collection_study", "CollectionFitConfig",
]
