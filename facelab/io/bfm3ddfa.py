"""The Basel Face Model as trimmed by 3DDFA (``BFM.mat``, the model of 300W-LP and AFLW2000-3D).

3DDFA (Zhu et al. 2016) cut BFM2009 down to the face (V = 53215 vertices, ``trimIndex``) and
added a 29-component expression model built from FaceWarehouse; face3d's ``generate.py``
saves the result as one MATLAB struct ``model`` (``BFM.mat``):

=========  ==========  ============================================================
field      shape       meaning
=========  ==========  ============================================================
shapeMU    (3V, 1)     mean shape, µm, rows ``3*v + c``
shapePC    (3V, 199)   identity basis, orthonormal columns
shapeEV    (199, 1)    identity standard deviations, µm
expMU      (3V, 1)     mean expression offset, µm
expPC      (3V, 29)    expression basis (columns not necessarily orthonormal)
expEV      (29, 1)     expression coefficient standard deviations
texMU      (3V, 1)     mean colour, 0..255 (optional, with texPC (3V, 199) and texEV (199, 1))
tri        (3, F)      triangles, 1-based (an ``(F, 3)`` array is accepted too)
kpt_ind    (68,)       iBUG-68 landmark vertices, 1-based (``(1, 68)`` in the file)
tri_mouth  (3, 114)    extra triangles closing the mouth; not read
=========  ==========  ============================================================

:func:`load_bfm_3ddfa` returns a facelab :class:`~facelab.morphable.model.MorphableModel`:

* **Units.** Lengths are divided by 1000 (µm -> mm, as :func:`facelab.io.load_bfm2009`), colours by 255.
* **Mean.** ``expMU`` is folded into the mean, ``mean = shapeMU + expMU``, as face3d's
  ``load_BFM`` and 3DDFA do: the 300W-LP coefficients are fitted around that mean.
* **Indices.** ``tri`` and ``kpt_ind`` are 1-based (MATLAB); they become 0-based ``faces`` and
  ``landmarks``.
* **Bases.** ``shapePC`` is orthonormal, so facelab's identity basis is ``shapePC`` itself;
  ``expPC`` need not be, and is re-orthonormalised keeping the covariance
  ``expPC diag(expEV^2) expPC^T`` (:func:`facelab.io._build.orthonormal_pca`).

**300W-LP coefficients.** ``Shape_Para (199, 1)`` and ``Exp_Para (29, 1)`` of a 300W-LP /
AFLW2000-3D file are *raw* coefficients on ``shapePC`` and ``expPC`` (not divided by
``shapeEV``/``expEV``; face3d's ``generate_vertices`` and its fitting prior
``N(0, diag(EV^2))`` use them so)::

    vertices_um = shapeMU + expMU + shapePC @ Shape_Para + expPC @ Exp_Para

:func:`lp300w_coefficients` turns them into the model's ``alpha_id``/``alpha_exp`` (mm) and
:func:`lp300w_vertices` into vertices (mm). The linear maps it needs are stored in
``model.meta["lp300w"]`` (``unit_mm``: the file's length unit in mm; ``shape_map``/``exp_map``:
``None`` for "multiply by ``unit_mm``", else a ``(K, K_file)`` matrix), so they survive
:meth:`MorphableModel.save`. A model written by :func:`facelab.data.export_lp300w` carries the
same entry with ``unit_mm = 1``. (``Tex_Para`` is, in face3d's ``generate_colors``, a
*standardised* coefficient, multiplied by ``texEV``; it is not converted here.)

:func:`facelab.io.load_morphable` reads this layout from a ``.mat`` holding a struct named
``model`` (:func:`is_bfm_3ddfa`); any other ``.mat`` is read as BFM2009.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facelab.io._build import assemble_model, check_basis, check_faces, mean_vertices, orthonormal_pca
from facelab.io._util import as_vector, check_finite, existing_file
from facelab.io.bfm import BFM2009_COLOUR_MAX, BFM2009_UNIT_TO_MM, _colour_mean, _pca
from facelab.morphable.model import MorphableModel

STRUCT_NAME = "model"
BFM3DDFA_REQUIRED = ("shapeMU", "shapePC", "shapeEV", "expMU", "expPC", "expEV", "tri", "kpt_ind")
BFM3DDFA_TEXTURE = ("texMU", "texPC", "texEV")
N_VERTICES_3DDFA = 53215  # the trimmed BFM of 3DDFA (documentation; any V is read)
N_KEYPOINTS = 68
META_KEY = "lp300w"
MAP_RTOL = 1e-4  # relative error above which a basis's coefficients cannot be carried over exactly
IDENTITY_ATOL = 1e-6  # |map / unit - I| below this: store None ("multiply by unit_mm")


def is_bfm_3ddfa(path) -> bool:
    """Whether a ``.mat`` file holds 3DDFA's ``model`` struct (the ``BFM.mat`` layout).

    Reads the variable list only (MATLAB v5 via scipy, v7.3 via h5py).

    >>> import tempfile, os, scipy.io
    >>> p = os.path.join(tempfile.mkdtemp(), "m.mat")
    >>> scipy.io.savemat(p, {"shapeMU": [[0.0]]})
    >>> is_bfm_3ddfa(p)
    False
    """
    import scipy.io

    path = existing_file(path, "model file")
    try:
        return any(name == STRUCT_NAME and cls == "struct" for name, _, cls in scipy.io.whosmat(str(path)))
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return isinstance(f.get(STRUCT_NAME), h5py.Group)
        except OSError:
            return False
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, AssertionError):
        return False


def _read_struct(path: Path) -> dict[str, np.ndarray]:
    """The fields of the ``model`` struct as arrays in MATLAB's orientation."""
    import zlib

    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        raw = scipy.io.loadmat(str(path), variable_names=[STRUCT_NAME])
    except NotImplementedError:  # MATLAB v7.3
        return _read_struct73(path)
    except (MatReadError, zlib.error, ValueError, TypeError, OSError, EOFError, IndexError, KeyError, AssertionError) as err:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(err).__name__}: {err})") from None
    if STRUCT_NAME not in raw or raw[STRUCT_NAME].dtype.names is None or raw[STRUCT_NAME].size != 1:
        raise ValueError(f"{path}: no 1x1 struct '{STRUCT_NAME}'; not 3DDFA's BFM.mat layout")
    record = raw[STRUCT_NAME].reshape(-1)[0]
    return {name: np.asarray(record[name]) for name in raw[STRUCT_NAME].dtype.names}


def _read_struct73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            group = f.get(STRUCT_NAME)
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{path}: no struct '{STRUCT_NAME}'; not 3DDFA's BFM.mat layout")
            for k, d in group.items():
                if isinstance(d, h5py.Dataset):
                    a = d[()]
                    out[k] = a.T if a.ndim == 2 else a  # HDF5 stores MATLAB arrays transposed
    except OSError as err:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 .mat file ({err})") from None
    return out


def _coefficient_map(U: np.ndarray, B: np.ndarray, unit: float, path: Path, key: str):
    """``M`` with ``U @ M = unit * B``: facelab coefficients of the file's raw ones (None: ``unit * I``)."""
    M = U.T @ B * unit
    err = np.linalg.norm(U @ M - unit * B) / max(np.linalg.norm(unit * B), 1e-300)
    if err > MAP_RTOL:
        raise ValueError(f"{path}: '{key}' is rank-deficient (a raw coefficient has no exact equivalent; "
                         f"relative error {err:.2g})")
    if M.shape[0] == M.shape[1] and np.abs(M / unit - np.eye(M.shape[0])).max() < IDENTITY_ATOL:
        return None
    return M.tolist()


def load_bfm_3ddfa(path, landmarks=None, face_mask=None) -> MorphableModel:
    """Load 3DDFA's trimmed Basel Face Model ``BFM.mat`` (module docstring).

    Args:
        path: the ``.mat`` file holding the ``model`` struct.
        landmarks: optional ``(68,)`` int vertex indices replacing the file's ``kpt_ind``.
        face_mask: optional ``(V,)`` bool face region; else all True.

    Returns:
        MorphableModel: ``mean_shape (V, 3)`` mm (``shapeMU + expMU``), identity basis
        ``(3V, 199)`` with ``shape_std`` mm, expression basis ``(3V, 29)`` with ``exp_std`` mm,
        colour model when the file has one, 0-based CCW ``faces (F, 3)``, ``landmarks (68,)`` from
        ``kpt_ind``; ``meta["lp300w"]`` for :func:`lp300w_coefficients`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .mat file, no ``model`` struct, a missing field or a wrongly shaped
            array (the message names the file and the field).

    >>> import tempfile, os, numpy as np, scipy.io
    >>> p = os.path.join(tempfile.mkdtemp(), "BFM.mat")
    >>> V = 70; rng = np.random.default_rng(0)
    >>> mu = rng.normal(0, 5e4, (3 * V, 1)); pc = np.linalg.qr(rng.normal(size=(3 * V, 4)))[0]
    >>> tri = np.array([[1, 2, 3], [2, 4, 3]]).T
    >>> scipy.io.savemat(p, {"model": {"shapeMU": mu, "shapePC": pc, "shapeEV": [[3e5], [2e5], [1e5], [5e4]],
    ...     "expMU": np.zeros((3 * V, 1)), "expPC": 2 * pc[:, :2], "expEV": [[1.0], [0.5]], "tri": tri,
    ...     "kpt_ind": np.arange(1, 69)[None]}})
    >>> m = load_bfm_3ddfa(p)
    >>> m.n_verts, m.shape_std.tolist()[0], m.n_exp, m.landmarks[:3].tolist()
    (70, 300.0, 2, [0, 1, 2])
    """
    path = existing_file(path, "3DDFA BFM model file")
    raw = _read_struct(path)
    missing = [k for k in BFM3DDFA_REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: struct '{STRUCT_NAME}' lacks field(s) {missing}")
    for k in BFM3DDFA_REQUIRED + BFM3DDFA_TEXTURE:
        if k in raw and raw[k].dtype.kind not in "fiu":
            raise ValueError(f"{path}: '{k}' must be numeric, got dtype {raw[k].dtype}")
    unit = BFM2009_UNIT_TO_MM
    shape_mu = mean_vertices(raw["shapeMU"], path, "shapeMU")
    V = shape_mu.shape[0]
    exp_mu = mean_vertices(raw["expMU"], path, "expMU")
    if exp_mu.shape != shape_mu.shape:
        raise ValueError(f"{path}: 'expMU' has {exp_mu.shape[0]} vertices, 'shapeMU' {V}")
    mean = (shape_mu + exp_mu) * unit  # 300W-LP's coefficients are fitted around this mean

    shape_pc = check_finite(check_basis(raw["shapePC"], 3 * V, path, "shapePC").astype(np.float64), path, "shapePC")
    exp_pc = check_finite(check_basis(raw["expPC"], 3 * V, path, "expPC").astype(np.float64), path, "expPC")
    shape = _pca(shape_pc, as_vector(raw["shapeEV"], path, "shapeEV", length=shape_pc.shape[1]), 3 * V, path, "shapePC", unit)
    U, s, how = orthonormal_pca(exp_pc, as_vector(raw["expEV"], path, "expEV", length=exp_pc.shape[1]), path, "expPC")
    exp = (U, s * unit, how)

    tri = np.asarray(raw["tri"])
    if tri.ndim == 2 and tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T  # the file's (3, F)
    faces = check_faces(tri, V, path, "tri", one_based=True)
    if landmarks is None:
        kpt = as_vector(raw["kpt_ind"], path, "kpt_ind", length=N_KEYPOINTS)
        if kpt.dtype.kind == "f" and (not np.isfinite(kpt).all() or (kpt != np.round(kpt)).any()):
            raise ValueError(f"{path}: 'kpt_ind' holds non-integer vertex indices")
        landmarks = kpt.astype(np.int64) - 1  # MATLAB's 1-based indices
        if landmarks.min() < 0 or landmarks.max() >= V:
            raise ValueError(f"{path}: 'kpt_ind' vertex indices must lie in [1, {V}], "
                             f"got [{landmarks.min() + 1}, {landmarks.max() + 1}]")

    mean_albedo, albedo = None, None
    present = [k for k in BFM3DDFA_TEXTURE if k in raw]
    if present and len(present) != len(BFM3DDFA_TEXTURE):
        raise ValueError(f"{path}: texture model incomplete, missing field(s) {sorted(set(BFM3DDFA_TEXTURE) - set(present))}")
    if present:
        mean_albedo = _colour_mean(raw["texMU"], V, path, "texMU") / BFM2009_COLOUR_MAX
        albedo = _pca(raw["texPC"], as_vector(raw["texEV"], path, "texEV"), 3 * V, path, "texPC", 1 / BFM2009_COLOUR_MAX)

    meta = {META_KEY: {
        "unit_mm": unit,
        "shape_map": _coefficient_map(shape[0], shape_pc, unit, path, "shapePC"),
        "exp_map": _coefficient_map(U, exp_pc, unit, path, "expPC"),
        "n_shape_para": int(shape_pc.shape[1]),
        "n_exp_para": int(exp_pc.shape[1]),
    }}
    return assemble_model(
        path=path, fmt="bfm-3ddfa-mat", name="bfm_3ddfa", mean_shape=mean, faces=faces, shape=shape, exp=exp,
        albedo=albedo, mean_albedo=mean_albedo, landmarks=landmarks, face_mask=face_mask, meta=meta,
    )


def lp300w_meta(unit_mm: float = 1.0) -> dict:
    """The ``meta["lp300w"]`` entry of a model whose own coefficients are the files' coefficients.

    That is a model whose ``Shape_Para``/``Exp_Para`` are its ``alpha_id``/``alpha_exp`` in units of
    ``unit_mm`` mm (:func:`facelab.data.export_lp300w` writes its model with ``unit_mm = 1``).

    >>> lp300w_meta()
    {'unit_mm': 1.0, 'shape_map': None, 'exp_map': None}
    """
    if not float(unit_mm) > 0:
        raise ValueError(f"unit_mm: must be > 0, got {unit_mm!r}")
    return {"unit_mm": float(unit_mm), "shape_map": None, "exp_map": None}


def _map(entry, n_model: int, n_file: int, unit: float, what: str, model: MorphableModel) -> torch.Tensor:
    if entry is None:
        if n_file > n_model:
            raise ValueError(f"{what}: {n_file} coefficients, but the model '{model.name}' has {n_model} components")
        return torch.eye(n_model, n_file, dtype=model.dtype) * unit
    M = torch.tensor(entry, dtype=model.dtype)
    if M.shape[1] != n_file:
        raise ValueError(f"{what}: {n_file} coefficients, but the model '{model.name}' reads {M.shape[1]}")
    return M[:n_model]  # a truncated model keeps its leading components


def lp300w_coefficients(model: MorphableModel, shape_para, exp_para) -> tuple[torch.Tensor, torch.Tensor]:
    """300W-LP raw coefficients as the model's own (unstandardised, mm) coefficients.

    Args:
        model: a model with ``meta["lp300w"]`` (:func:`load_bfm_3ddfa`, or a model saved by
            :func:`facelab.data.export_lp300w`).
        shape_para: ``(B, K_file)`` or ``(K_file,)`` float, the files' ``Shape_Para``.
        exp_para: ``(B, K_exp_file)`` or ``(K_exp_file,)`` float, ``Exp_Para``.

    Returns:
        ``alpha_id (B, K_id)`` and ``alpha_exp (B, K_exp)`` float, mm (unbatched in, unbatched out);
        ``model.shape(alpha_id, alpha_exp)`` are the files' vertices in mm.

    Raises:
        ValueError: the model has no ``meta["lp300w"]``, or the lengths do not match.

    >>> m = _toy_model()
    >>> a_id, a_exp = lp300w_coefficients(m, torch.tensor([1000.0, 0, 0]), torch.tensor([0.0, 0]))
    >>> a_id.tolist()
    [1.0, 0.0, 0.0]
    """
    info = model.meta.get(META_KEY)
    if not isinstance(info, dict) or "unit_mm" not in info:
        raise ValueError(f"model: '{model.name}' has no meta['{META_KEY}'] (load 3DDFA's BFM.mat with "
                         "load_bfm_3ddfa, or use the model.npz written next to an exported folder)")
    sp = torch.as_tensor(shape_para, dtype=model.dtype)
    ep = torch.as_tensor(exp_para, dtype=model.dtype)
    single = sp.dim() == 1
    sp, ep = (sp[None], ep[None]) if single else (sp, ep)
    if sp.dim() != 2 or ep.dim() != 2 or sp.shape[0] != ep.shape[0]:
        raise ValueError(f"shape_para, exp_para: expected (B, K) and (B, K_exp), got {tuple(sp.shape)} and {tuple(ep.shape)}")
    unit = float(info["unit_mm"])
    shape_map = _map(info.get("shape_map"), model.n_shape, sp.shape[1], unit, "shape_para", model).to(model.device)
    exp_map = _map(info.get("exp_map"), model.n_exp, ep.shape[1], unit, "exp_para", model).to(model.device)
    alpha_id, alpha_exp = sp.to(model.device) @ shape_map.T, ep.to(model.device) @ exp_map.T
    return (alpha_id[0], alpha_exp[0]) if single else (alpha_id, alpha_exp)


def lp300w_vertices(model: MorphableModel, shape_para, exp_para) -> torch.Tensor:
    """Vertices of 300W-LP coefficients: ``shapeMU + expMU + shapePC @ Shape_Para + expPC @ Exp_Para``, in mm.

    Args:
        model: as in :func:`lp300w_coefficients`.
        shape_para: ``(B, K_file)`` float. exp_para: ``(B, K_exp_file)`` float.

    Returns:
        ``(B, V, 3)`` float, mm, model frame (x = subject's left, y up, z toward the camera).

    >>> lp300w_vertices(_toy_model(), torch.zeros(1, 3), torch.zeros(1, 2)).shape
    torch.Size([1, 70, 3])
    """
    alpha_id, alpha_exp = lp300w_coefficients(model, shape_para, exp_para)
    if alpha_id.dim() == 1:
        raise ValueError("shape_para: expected a batch (B, K); use shape_para[None] for one face")
    return model.shape(alpha_id, alpha_exp)


def _toy_model() -> MorphableModel:
    """A 70-vertex model read from a tiny ``BFM.mat`` (for the examples)."""
    import os
    import tempfile

    import scipy.io

    rng = np.random.default_rng(0)
    V = 70
    pc = np.linalg.qr(rng.normal(size=(3 * V, 3)))[0]
    p = os.path.join(tempfile.mkdtemp(), "BFM.mat")
    scipy.io.savemat(p, {"model": {
        "shapeMU": rng.normal(0, 5e4, (3 * V, 1)), "shapePC": pc, "shapeEV": [[3e5], [2e5], [1e5]],
        "expMU": np.zeros((3 * V, 1)), "expPC": 3 * pc[:, :2], "expEV": [[1.0], [0.5]],
        "tri": np.array([[1, 2, 3], [2, 4, 3]]).T, "kpt_ind": np.arange(1, 69)[None],
    }})
    return load_bfm_3ddfa(p)
