"""Basel Face Model loaders: BFM2009 (``01_MorphableModel.mat``) and BFM2017 (``.h5``).

Both return a facelab :class:`~facelab.morphable.model.MorphableModel` (book chapter
``book/02_morphable_models.ipynb``; basis conventions in :mod:`facelab.io._build`).
BFM's axes already match facelab's (x = subject's left, y up, z toward the camera),
so only units change.

**BFM2009** ``01_MorphableModel.mat`` (MATLAB v5, or v7.3/HDF5):

=========  =========  ===========================================================
key        shape      meaning
=========  =========  ===========================================================
shapeMU    (3V, 1)    mean shape, µm, rows ``3*v + c``
shapePC    (3V, K)    orthonormal columns
shapeEV    (K, 1)     standard deviations, µm
texMU      (3V, 1)    mean colour, 0..255
texPC      (3V, K)    orthonormal columns
texEV      (K, 1)     standard deviations, 0..255
tl         (F, 3)     triangles, 1-based
=========  =========  ===========================================================

Lengths are divided by 1000 (µm -> mm), colours by 255. BFM2009 has no expression
model (``exp_basis`` is ``(3V, 0)``).

**BFM2017** h5 (statismo layout): ``shape``, ``color`` and optional ``expression``
groups, each with ``model/mean (3V,)``, ``model/pcaBasis (3V, K)`` with orthonormal
columns and ``model/pcaVariance (K,)`` variances; ``shape/representer/points (3, V)``
and ``shape/representer/cells (3, F)`` (0-based). Units are mm; colours are in [0, 1]. The expression model's own ``mean`` (an
average expression offset) is added to the shape mean, so that zero coefficients
give the mean of the combined model, as in statismo.
Orthonormality is verified at load; a basis that is not orthonormal is
re-orthonormalised (``meta["basis_transform"]`` says which case applied).

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facelab.io._build import (
    assemble_model, check_basis, check_faces, mean_vertices, orthonormal_pca, std_from_variance,
)
from facelab.io._util import as_vector, check_finite, existing_file, read_mat
from facelab.morphable.model import MorphableModel

BFM2009_UNIT_TO_MM = 1e-3  # BFM2009 coordinates are micrometres
BFM2009_COLOUR_MAX = 255.0
BFM2009_REQUIRED = ("shapeMU", "shapePC", "shapeEV", "tl")
BFM2009_OPTIONAL = ("texMU", "texPC", "texEV")
BFM2017_COLOUR_MAX = 1.0


def load_bfm2009(path, landmarks=None, face_mask=None) -> MorphableModel:
    """Load the Basel Face Model 2009 ``01_MorphableModel.mat``.

    Args:
        path: the ``.mat`` file.
        landmarks: optional ``(68,)`` int vertex indices (iBUG order); else empty ``(0,)``.
        face_mask: optional ``(V,)`` bool face region; else all True.

    Returns:
        MorphableModel with ``mean_shape (V, 3)`` mm, ``shape_basis (3V, K)``,
        ``shape_std (K,)`` mm, ``mean_albedo (V, 3)`` in [0, 1], ``albedo_std (K,)``
        in [0, 1] units, an empty expression basis, 0-based CCW ``faces (F, 3)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .mat file, a missing key or a wrongly shaped array; the
            message names the file and the key.

    >>> import tempfile, os, numpy as np, scipy.io
    >>> p = os.path.join(tempfile.mkdtemp(), "01_MorphableModel.mat")
    >>> mu = np.array([[0, 0, 0], [1000, 0, 0], [0, 1000, 0]], float).reshape(-1, 1)
    >>> scipy.io.savemat(p, {"shapeMU": mu, "shapePC": np.eye(9)[:, :2], "shapeEV": [[2000.], [1000.]], "tl": [[1, 2, 3]]})
    >>> m = load_bfm2009(p)
    >>> m.mean_shape[1].tolist(), m.shape_std.tolist(), m.faces.tolist()
    ([1.0, 0.0, 0.0], [2.0, 1.0], [[0, 1, 2]])
    """
    path = existing_file(path, "BFM2009 model file")
    raw = read_mat(path, BFM2009_REQUIRED, BFM2009_OPTIONAL)
    mean = mean_vertices(raw["shapeMU"], path, "shapeMU") * BFM2009_UNIT_TO_MM
    V = mean.shape[0]
    shape = _pca(raw["shapePC"], as_vector(raw["shapeEV"], path, "shapeEV"), 3 * V, path, "shapePC", BFM2009_UNIT_TO_MM)
    faces = check_faces(raw["tl"], V, path, "tl", one_based=True)
    mean_albedo, albedo = None, None
    present = [k for k in BFM2009_OPTIONAL if k in raw]
    if present and len(present) != len(BFM2009_OPTIONAL):
        missing = sorted(set(BFM2009_OPTIONAL) - set(present))
        raise ValueError(f"{path}: texture model incomplete, missing key(s) {missing}")
    if present:
        mean_albedo = _colour_mean(raw["texMU"], V, path, "texMU") / BFM2009_COLOUR_MAX
        albedo = _pca(raw["texPC"], as_vector(raw["texEV"], path, "texEV"), 3 * V, path, "texPC", 1 / BFM2009_COLOUR_MAX)
    return assemble_model(
        path=path, fmt="bfm2009-mat", name="bfm2009", mean_shape=mean, faces=faces,
        shape=shape, albedo=albedo, mean_albedo=mean_albedo, landmarks=landmarks, face_mask=face_mask,
    )


def load_bfm2017(path, landmarks=None, face_mask=None) -> MorphableModel:
    """Load a Basel Face Model 2017 (or 2019) ``.h5`` file.

    Args:
        path: the ``.h5`` file (e.g. ``model2017-1_face12_nomouth.h5``).
        landmarks: optional ``(68,)`` int vertex indices; else empty ``(0,)``.
        face_mask: optional ``(V,)`` bool face region; else all True.

    Returns:
        MorphableModel: shape, expression (if the file has one) and colour models,
        mm, std = sqrt(pcaVariance), 0-based CCW faces from ``shape/representer/cells``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an HDF5 file, a missing dataset or a wrongly shaped array.

    >>> import tempfile, os, numpy as np, h5py
    >>> p = os.path.join(tempfile.mkdtemp(), "bfm2017.h5")
    >>> with h5py.File(p, "w") as f:
    ...     f["shape/model/mean"] = np.array([0, 0, 0, 1, 0, 0, 0, 1, 0], "f4")
    ...     f["shape/model/pcaBasis"] = np.eye(9, 2, dtype="f4")
    ...     f["shape/model/pcaVariance"] = np.array([4, 1], "f4")
    ...     f["shape/representer/points"] = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], "f4")
    ...     f["shape/representer/cells"] = np.array([[0], [1], [2]])
    >>> load_bfm2017(p).shape_std.tolist()
    [2.0, 1.0]
    """
    import h5py

    path = existing_file(path, "BFM2017 model file")
    try:
        fh = h5py.File(path, "r")
    except (OSError, KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
    # corrupt HDF5 metadata surfaces as KeyError / OSError / RuntimeError from any h5py call
    try:
        with fh:
            mean_flat = _h5(fh, path, "shape/model/mean")
            mean = mean_vertices(mean_flat, path, "shape/model/mean")
            V = mean.shape[0]
            shape = _h5_pca(fh, path, "shape", V)
            cells = _h5(fh, path, "shape/representer/cells")
            if cells.ndim != 2 or cells.shape[0] != 3:
                raise ValueError(f"{path}: 'shape/representer/cells' must be (3, F), got shape {cells.shape}")
            faces = check_faces(cells.T, V, path, "shape/representer/cells", one_based=False)
            points = _h5(fh, path, "shape/representer/points") if "shape/representer/points" in fh else None
            if points is not None and points.shape != (3, V):
                raise ValueError(f"{path}: 'shape/representer/points' must be (3, {V}), got shape {points.shape}")
            exp = None
            if "expression" in fh:
                exp = _h5_pca(fh, path, "expression", V)
                # statismo expression models carry their own mean offset; fold it into the mean shape
                mean = mean + _h5_mean(fh, path, "expression", V)
            mean_albedo, albedo = None, None
            if "color" in fh:
                mean_albedo = _h5_mean(fh, path, "color", V) / BFM2017_COLOUR_MAX
                albedo = _h5_pca(fh, path, "color", V)
    except (OSError, KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: corrupt HDF5 file ({type(err).__name__}: {err})") from None
    return assemble_model(
        path=path, fmt="bfm2017-h5", name="bfm2017", mean_shape=mean, faces=faces,
        shape=shape, exp=exp, albedo=albedo, mean_albedo=mean_albedo, landmarks=landmarks, face_mask=face_mask,
    )


# ------------------------------------------------------------------ helpers
def _pca(basis, std, n_rows: int, path: Path, key: str, unit: float):
    B = check_basis(basis, n_rows, path, key)
    U, s, how = orthonormal_pca(B, std, path, key)
    return U, s * unit, how


def _colour_mean(mu, V: int, path: Path, key: str) -> np.ndarray:
    m = as_vector(np.asarray(mu, dtype=np.float64), path, key, length=3 * V)
    return check_finite(m, path, key).reshape(V, 3)


def _h5(fh, path: Path, key: str) -> np.ndarray:
    import h5py

    if key not in fh or not isinstance(fh[key], h5py.Dataset):
        raise ValueError(f"{path}: missing dataset '{key}'")
    try:
        return np.asarray(fh[key][()])
    except (OSError, ValueError) as err:  # truncated or corrupt chunk
        raise ValueError(f"{path}: cannot read dataset '{key}' ({err})") from None


def _h5_mean(fh, path: Path, group: str, V: int) -> np.ndarray:
    key = f"{group}/model/mean"
    m = as_vector(_h5(fh, path, key).astype(np.float64), path, key, length=3 * V)
    return check_finite(m, path, key).reshape(V, 3)


def _h5_pca(fh, path: Path, group: str, V: int):
    basis = check_basis(_h5(fh, path, f"{group}/model/pcaBasis"), 3 * V, path, f"{group}/model/pcaBasis")
    var = as_vector(_h5(fh, path, f"{group}/model/pcaVariance"), path, f"{group}/model/pcaVariance", length=basis.shape[1])
    std = std_from_variance(var, path, f"{group}/model/pcaVariance")
    return orthonormal_pca(basis, std, path, f"{group}/model/pcaBasis")
