"""facelab.io: readers for the real data and models of the papers, and checkpoint files.

Each loader checks its file and raises ``FileNotFoundError``/``ValueError`` naming
the file and the problem; model loaders return a
:class:`~facelab.morphable.model.MorphableModel` in facelab's conventions (mm,
x = subject's left, y up, z toward the camera, orthonormal bases with std).

* meshes: :func:`read_mesh`, :func:`write_mesh` (``.obj``, ``.ply``)
* models: :func:`load_bfm2009`, :func:`load_bfm2017`, :func:`load_bfm_3ddfa` (3DDFA's ``BFM.mat``),
  :func:`load_flame`, :func:`load_sfm`, and :func:`load_morphable`, which picks one of them (or a
  facelab ``.npz``) by the file's suffix; :func:`read_landmark_mapping` reads which vertex each
  iBUG point is (eos's ``ibug_to_sfm.txt``, or a JSON sidecar), ``-1`` where a model maps none
* checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint` (:mod:`facelab.io.checkpoint`;
  rebuilding the model is :func:`facelab.models.load_model`)
* annotations and datasets: :func:`load_300wlp` (with 300W-LP's projection: :func:`pose_to_facelab`,
  :func:`project_300wlp`, :func:`pixels_from_file`; its coefficients: :func:`lp300w_vertices`),
  :func:`read_pairs` / :func:`write_pairs`,
  :func:`read_landmarks` / :func:`write_landmarks` (LFW's ``landmarks.json`` sidecar), :class:`LFWPairs`,
  :class:`MICCDataset`

Book chapter: ``book/12_real_data.ipynb``.
"""

from facelab.io._util import read_image
from facelab.io.bfm import load_bfm2009, load_bfm2017
from facelab.io.bfm3ddfa import is_bfm_3ddfa, load_bfm_3ddfa, lp300w_coefficients, lp300w_vertices
from facelab.io.checkpoint import load_checkpoint, save_checkpoint
from facelab.io.flame import load_flame, read_flame_pickle
from facelab.io.lfw import (
    LFWPairs, Pair, find_lfw_image, format_pair, lfw_image_path, read_landmarks, read_pairs, read_pairs_with_lines,
    write_landmarks, write_pairs,
)
from facelab.io.landmark_mapping import read_landmark_mapping
from facelab.io.lp300w import (
    landmark_visibility, load_300wlp, pixels_from_file, pixels_to_file, pose_from_facelab, pose_to_facelab,
    project_300wlp,
)
from facelab.io.mesh import Mesh, read_mesh, write_mesh
from facelab.io.micc import MICC_CONDITIONS, MICCDataset, MICCSubject
from facelab.io.models import load_morphable
from facelab.io.sfm import load_sfm, read_sfm, save_sfm

__all__ = [
    "save_checkpoint", "load_checkpoint",
    "Mesh", "read_mesh", "write_mesh", "read_image",
    "read_landmark_mapping",
    "load_bfm2009", "load_bfm2017", "load_flame", "read_flame_pickle", "load_sfm", "read_sfm", "save_sfm",
    "load_bfm_3ddfa", "is_bfm_3ddfa", "lp300w_coefficients", "lp300w_vertices",
    "load_300wlp", "pose_to_facelab", "pose_from_facelab", "project_300wlp", "pixels_from_file", "pixels_to_file",
    "landmark_visibility", "Pair", "read_pairs", "read_pairs_with_lines", "write_pairs", "format_pair", "lfw_image_path",
    "find_lfw_image",
    "read_landmarks", "write_landmarks", "LFWPairs",
    "MICC_CONDITIONS", "MICCDataset", "MICCSubject",
]
