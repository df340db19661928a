"""Turn the arrays of a foreign model file into a facelab :class:`MorphableModel`.

Shared by every model loader (BFM2009, BFM2017, FLAME, SFM). The conventions are
those of ``facelab/morphable/model.py`` (book chapter ``book/02_morphable_models.ipynb``):
mm, x = subject's left, y up, z toward the camera, ``(3V, K)`` orthonormal-column
bases with rows ``3*v + c`` and unstandardised standard deviations.

**Bases.** A source model describes a Gaussian ``x = mean + B diag(s) a`` with
``a ~ N(0, I)``; its covariance is ``B diag(s^2) B^T``. :func:`orthonormal_pca`
returns an orthonormal ``U`` and ``std`` with the same covariance:

* ``"orthonormal"``: ``B^T B = I`` already (BFM2009, BFM2017, SFM): ``U = B``,
  ``std = s`` (columns re-sorted by decreasing ``std`` if needed);
* ``"prescaled"``: the columns are orthogonal with norms equal to ``s`` (a basis
  that was already multiplied by the standard deviations, as some exports do):
  ``U = B / norms``, ``std = norms``;
* ``"svd"``: anything else (FLAME's ``shapedirs``, blendshapes): the thin SVD
  ``B diag(s) = U S W^T`` gives ``std = S``, and a source coefficient vector ``a``
  maps to facelab's ``alpha = S W^T a``.

The transform used is recorded in ``model.meta["basis_transform"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facelab.io._util import check_finite, to_numpy
from facelab.io.landmark_mapping import landmark_indices
from facelab.morphable.landmarks import UNMAPPED, ibug_point_list
from facelab.morphable.model import MorphableModel

ORTHONORMAL_TOL = 1e-3  # max |B^T B - I| entry accepted as "already orthonormal" (float32 data)
PRESCALED_RTOL = 1e-2  # column norms within 1 % of the stds => basis was pre-scaled
NEGATIVE_VARIANCE_TOL = 1e-6  # relative; PCA round-off can give tiny negative eigenvalues
NOSE_CENTRE_FRACTION = 0.1  # nose-tip search: |x - centre| below this fraction of the face width
NEUTRAL_ALBEDO = 0.5
FRONT_FACING_MIN = 0.1  # net +z area fraction below which a mesh counts as a closed head
N_LANDMARKS = 68


def std_from_variance(var: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Standard deviations from variances; ``ValueError`` on clearly negative variances."""
    var = np.asarray(var, dtype=np.float64)
    floor = -NEGATIVE_VARIANCE_TOL * max(float(np.abs(var).max(initial=0.0)), 1.0)
    if (var < floor).any():
        raise ValueError(f"{path}: '{key}' holds negative variances (min {var.min():.3g})")
    return np.sqrt(np.clip(var, 0.0, None))


def orthonormal_pca(basis: np.ndarray, std: np.ndarray, path: Path, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    """An orthonormal ``(3V, K)`` basis and descending ``(K,)`` std with the source's covariance.

    Returns ``(U, std, transform)`` with ``transform`` one of ``"orthonormal"``,
    ``"prescaled"``, ``"svd"`` (see the module docstring) or ``"empty"``.
    """
    B = np.asarray(basis, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    if B.ndim != 2 or B.shape[1] != s.shape[0]:
        raise ValueError(f"{path}: '{key}' basis has shape {B.shape} but {s.shape[0]} standard deviations")
    check_finite(B, path, key)
    check_finite(s, path, key)
    if (s < 0).any():
        raise ValueError(f"{path}: '{key}' standard deviations must be >= 0")
    if B.shape[1] == 0:
        return B, s, "empty"
    gram = B.T @ B
    norms = np.sqrt(np.diag(gram))
    if np.abs(gram - np.eye(len(s))).max() < ORTHONORMAL_TOL:
        U, out, transform = B, s, "orthonormal"
    elif _orthogonal(gram, norms) and np.allclose(norms, s, rtol=PRESCALED_RTOL) and not np.allclose(s, 1.0):
        U, out, transform = B / norms, norms, "prescaled"
    else:
        U, out, _ = np.linalg.svd(B * s, full_matrices=False)
        return U, out, "svd"
    order = np.argsort(-out, kind="stable")
    return U[:, order], out[order], transform


def _orthogonal(gram: np.ndarray, norms: np.ndarray) -> bool:
    scale = np.outer(norms, norms) + 1e-300
    off = gram / scale - np.eye(len(norms))
    return bool(np.abs(off).max() < ORTHONORMAL_TOL)


def fix_winding(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, bool]:
    """Faces wound counter-clockwise seen from outside; returns ``(faces, flipped)``.

    A face shell (BFM, SFM) is judged by its projected area: its triangles must,
    on balance, face +z. A closed head (FLAME) has no net +z area, so there the
    area-weighted normals must point away from the centroid.
    """
    if len(faces) == 0:
        return faces, False
    a, b, c = (verts[faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)  # CCW seen from the tip of the normal
    total = np.linalg.norm(normals, axis=1).sum() + 1e-300
    facing = normals[:, 2].sum() / total
    if abs(facing) < FRONT_FACING_MIN:
        outward = (a + b + c) / 3.0 - verts.mean(axis=0)
        facing = (normals * outward).sum()
    if facing < 0:
        return faces[:, [0, 2, 1]].copy(), True
    return faces, False


def mirror_symmetry(verts: np.ndarray) -> np.ndarray:
    """``(V,)`` index of each vertex's mirror partner (nearest neighbour of x -> -x).

    The symmetry plane is estimated as ``x = mean(x)`` of the mean shape.
    """
    from scipy.spatial import cKDTree

    centre = verts[:, 0].mean()
    mirrored = verts.copy()
    mirrored[:, 0] = 2.0 * centre - mirrored[:, 0]
    return cKDTree(verts).query(mirrored)[1].astype(np.int64)


def find_nose_tip(verts: np.ndarray) -> int:
    """Index of the most forward (max z) vertex near the symmetry plane."""
    centre = verts[:, 0].mean()
    width = np.ptp(verts[:, 0])
    near = np.abs(verts[:, 0] - centre) <= NOSE_CENTRE_FRACTION * width
    if not near.any():
        near[:] = True
    z = np.where(near, verts[:, 2], -np.inf)
    return int(np.argmax(z))


def _landmark_tensor(landmarks, n_verts: int) -> torch.Tensor:
    """``(68,)`` int64 from indices (``-1`` = unmapped) or a mapping file's path; ``(0,)`` for None."""
    if landmarks is None:
        return torch.zeros(0, dtype=torch.int64)
    source = f"landmarks ({landmarks})" if isinstance(landmarks, (str, Path)) else "landmarks"
    lm = to_numpy(landmark_indices(landmarks), "landmarks")
    if lm.shape != (N_LANDMARKS,) or lm.dtype.kind not in "iu":
        raise ValueError(f"landmarks: expected ({N_LANDMARKS},) integer vertex indices, got shape {lm.shape} dtype {lm.dtype}")
    bad = np.flatnonzero((lm < UNMAPPED) | (lm >= n_verts))
    if bad.size:
        raise ValueError(f"{source}: iBUG points {ibug_point_list(bad)} (1-based) map to vertices "
                         f"{lm[bad].tolist()}; vertex indices must lie in [0, {n_verts}) ({UNMAPPED} = unmapped)")
    return torch.from_numpy(lm.astype(np.int64))


def _mask_tensor(face_mask, n_verts: int) -> torch.Tensor:
    if face_mask is None:
        return torch.ones(n_verts, dtype=torch.bool)
    m = to_numpy(face_mask, "face_mask")
    if m.shape != (n_verts,):
        raise ValueError(f"face_mask: expected shape ({n_verts},), got {m.shape}")
    return torch.from_numpy(m.astype(bool))


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def assemble_model(
    *,
    path: Path,
    fmt: str,
    name: str,
    mean_shape: np.ndarray,
    faces: np.ndarray,
    shape: tuple[np.ndarray, np.ndarray, str],
    exp: tuple[np.ndarray, np.ndarray, str] | None = None,
    albedo: tuple[np.ndarray, np.ndarray, str] | None = None,
    mean_albedo: np.ndarray | None = None,
    landmarks=None,
    face_mask=None,
    meta: dict | None = None,
) -> MorphableModel:
    """Build a validated :class:`MorphableModel` from converted arrays (mm, 0-based faces).

    ``shape``/``exp``/``albedo`` are ``(basis, std, transform)`` triples from
    :func:`orthonormal_pca`; missing parts become empty ``(3V, 0)`` bases.
    """
    V = mean_shape.shape[0]
    faces, flipped = fix_winding(mean_shape, faces)
    empty = (np.zeros((3 * V, 0)), np.zeros(0), "absent")
    exp = exp or empty
    albedo = albedo or empty
    if mean_albedo is None:
        mean_albedo = np.full((V, 3), NEUTRAL_ALBEDO)
    info = {
        "source": str(path),
        "format": fmt,
        "faces_flipped": flipped,
        "basis_transform": {"shape": shape[2], "expression": exp[2], "albedo": albedo[2]},
    }
    info.update(meta or {})
    lm = _landmark_tensor(landmarks, V)  # outside the try: its errors name the mapping file, not the model's
    if isinstance(landmarks, (str, Path)):
        info["landmark_mapping"] = str(landmarks)
    try:
        return MorphableModel(
            mean_shape=_f32(mean_shape),
            shape_basis=_f32(shape[0]), shape_std=_f32(shape[1]),
            exp_basis=_f32(exp[0]), exp_std=_f32(exp[1]),
            mean_albedo=_f32(mean_albedo),
            albedo_basis=_f32(albedo[0]), albedo_std=_f32(albedo[1]),
            faces=torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64)),
            landmarks=lm,
            symmetry=torch.from_numpy(mirror_symmetry(mean_shape)),
            face_mask=_mask_tensor(face_mask, V),
            nose_tip=find_nose_tip(mean_shape),
            name=name,
            meta=info,
        )
    except ValueError as err:
        if str(err).startswith(("landmarks:", "face_mask:")):
            raise
        raise ValueError(f"{path}: inconsistent model ({err})") from None


def check_faces(faces: np.ndarray, n_verts: int, path: Path, key: str, *, one_based: bool) -> np.ndarray:
    """``(F, 3)`` int64 0-based faces, checked against ``n_verts``."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{path}: '{key}' must be (F, 3) triangles, got shape {f.shape}")
    if f.dtype.kind == "f":
        if not np.isfinite(f).all() or (f != np.round(f)).any():
            raise ValueError(f"{path}: '{key}' holds non-integer vertex indices")
    f = f.astype(np.int64) - (1 if one_based else 0)
    if f.size and (f.min() < 0 or f.max() >= n_verts):
        base = 1 if one_based else 0
        raise ValueError(
            f"{path}: '{key}' vertex indices must lie in [{base}, {n_verts + base}), "
            f"got [{f.min() + base}, {f.max() + base}]"
        )
    return f


def mean_vertices(mean: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``(3V,)`` interleaved coordinates (any vector layout) -> ``(V, 3)`` float64."""
    m = np.asarray(mean, dtype=np.float64)
    if m.ndim > 2 or (m.ndim == 2 and min(m.shape) != 1):
        raise ValueError(f"{path}: '{key}' must be a (3V,) vector, got shape {m.shape}")
    m = m.reshape(-1)
    if m.size == 0 or m.size % 3:
        raise ValueError(f"{path}: '{key}' length {m.size} is not a positive multiple of 3")
    check_finite(m, path, key)
    return m.reshape(-1, 3)


def check_basis(basis: np.ndarray, n_rows: int, path: Path, key: str) -> np.ndarray:
    B = np.asarray(basis)
    if B.ndim != 2 or B.shape[0] != n_rows:
        raise ValueError(f"{path}: '{key}' must be (3V, K) = ({n_rows}, K), got shape {B.shape}")
    return B
