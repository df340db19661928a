"""Morphable face models: the :class:`MorphableModel` container, the SynthFaces world and the
Sphere Face Model (:mod:`facelab.morphable.sphere`)."""

from facelab.morphable.grid import GRID_PRESETS, MeshHierarchy, grid_faces, grid_shape, grid_symmetry
from facelab.morphable.landmarks import IBUG_MIRROR, LANDMARK_GROUPS, SEVEN_LANDMARKS
from facelab.morphable.model import MorphableModel, load_npz
from facelab.morphable.sphere import (
    SFMConfig, SphereFaceModel, fit_pca, fit_sfm_stage1, noisy_identity_shapes, split_radius,
)
from facelab.morphable.synthfaces import (
    POPULATION_ID_START, FaceWorld, SynthFacesConfig, build_synthfaces, load_world, mesh_hierarchy,
)

__all__ = [
    "MorphableModel", "load_npz",
    "SynthFacesConfig", "FaceWorld", "build_synthfaces", "load_world", "mesh_hierarchy", "POPULATION_ID_START",
    "GRID_PRESETS", "MeshHierarchy", "grid_faces", "grid_shape", "grid_symmetry",
    "IBUG_MIRROR", "LANDMARK_GROUPS", "SEVEN_LANDMARKS",
    # Sphere Face Model (book/10_sir.ipynb)
    "SphereFaceModel", "SFMConfig", "fit_pca", "fit_sfm_stage1", "noisy_identity_shapes", "split_radius",
]
