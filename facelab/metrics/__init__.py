"""facelab.metrics: the evaluation protocols of the book (``book/07_evaluation.ipynb``).

* :mod:`~facelab.metrics.verification`: LFW verification (10 folds, VAL@FAR, TAR@FAR,
  ROC/AUC/EER) and rank-1 identification.
* :mod:`~facelab.metrics.alignment`: Umeyama/Procrustes and closest-point ICP.
* :mod:`~facelab.metrics.surface`: exact point-to-mesh and point-to-plane distances.
* :mod:`~facelab.metrics.reconstruction`: aligned per-vertex RMSE, interocular NME.
* :mod:`~facelab.metrics.landmarks`: 2D landmark NME by yaw bucket.
* :mod:`~facelab.metrics.protocols`: MICC-style and NoW-style scan protocols.
* :mod:`~facelab.metrics.sir`: discriminability of reconstructed geometry.
* :mod:`~facelab.metrics.shape_models`: the Sphere Face Model against PCA (:func:`sfm_vs_pca`).
* :mod:`~facelab.metrics.model_eval`: score a trained model (:func:`evaluate_model`).
* :mod:`~facelab.metrics.lfw_folder`: score it on an LFW-layout folder on disk (:func:`evaluate_lfw_folder`).
* :mod:`~facelab.metrics.stats`: paired bootstrap intervals and claim verdicts.
* :mod:`~facelab.metrics.albedo`: decoded albedos against the true ones, up to the light's scale.

Inputs may be torch tensors or numpy arrays; everything is computed in float64 and
returned as Python floats, numpy arrays or dataclasses/dicts ready for JSON.
"""

from facelab.metrics.albedo import albedo_agreement
from facelab.metrics.alignment import Similarity, apply, icp, procrustes, procrustes_batched
from facelab.metrics.landmarks import landmark_nme, nme_by_yaw
from facelab.metrics.protocols import crop_around, micc_error, micc_table, now_error, now_summary
from facelab.metrics.reconstruction import nme_interocular, rmse
from facelab.metrics.sir import aligned_rmse, geometric_rank1, sir_ratio
from facelab.metrics.stats import claim, paired_bootstrap, term_active, verdict
from facelab.metrics.surface import SurfaceIndex, SurfaceQuery, point_to_plane, point_to_surface
from facelab.metrics.verification import (
    VerificationResult,
    pair_distances,
    rank1_identification,
    roc,
    verify,
)

__all__ = [
    "albedo_agreement", "Similarity", "apply", "icp", "procrustes", "procrustes_batched",
    "landmark_nme", "nme_by_yaw",
    "crop_around", "micc_error", "micc_table", "now_error", "now_summary",
    "nme_interocular", "rmse",
    "aligned_rmse", "geometric_rank1", "sir_ratio",
    "claim", "paired_bootstrap", "term_active", "verdict",
    "SurfaceIndex", "SurfaceQuery", "point_to_plane", "point_to_surface",
    "VerificationResult", "pair_distances", "rank1_identification", "roc", "verify",
]
