"""300W-LP and AFLW2000-3D annotation files (``.mat``, one per image; Zhu et al. 2016).

Keys and the tensors they become (``None`` when an optional key is absent):

==============  ==========  ============  =================================================
key             in file     returned as   meaning
==============  ==========  ============  =================================================
Pose_Para       (1, 7)      pose (7,)     [pitch, yaw, roll] radians, [tx, ty, tz], scale
Shape_Para      (199, 1)    shape (K,)    BFM identity coefficients (required)
Exp_Para        (29, 1)     exp (K,)      expression coefficients (required)
pt2d            (2, N)      pt2d (N, 2)   2-D landmarks, pixels; N = 68 (300W-LP) or 21 (AFLW2000)
pt3d_68         (3, 68)     pt3d_68       (68, 3): x, y image pixels and depth of the 68 landmarks
Tex_Para        (199, 1)    tex (K,)      texture coefficients
Illum_Para      (1, 10)     illum (10,)   illumination parameters
Color_Para      (1, 7)      color (7,)    colour-transform parameters
roi             (1, 4)      roi (4,)      face box
==============  ==========  ============  =================================================

The dict also holds ``angles (3,)`` (= ``pose[:3]``, radians, pitch/yaw/roll),
``translation (3,)`` and ``scale`` (a float), and ``path``. Landmarks are
returned point-major ``(N, 2)``/``(68, 3)`` (transposed from the file) as elsewhere
in facelab.

**Projection** (Zhu et al.'s MATLAB code, ``ParaMap_Pose``/``RotationMatrix``, and face3d's
``transform_3ddfa``). With ``Pose_Para = [phi, gamma, theta, tx, ty, tz, s]`` and a vertex ``v``
in the model's own units (BFM: micrometres)::

    p = s * R3 @ v + [tx, ty, tz]
    R3 = Rx'(phi) @ Ry'(gamma) @ Rz'(theta)     # each factor the transpose of the right-handed one
    pixel = (p_x, H + 1 - p_y)                   # H: image height; MATLAB's 1-based pixels

so pixel ``(row i, col j)`` (0-based) has its centre at ``(j + 1, i + 1)`` in the file, and
``pt2d``/``pt3d_68`` are in that convention; ``pt3d_68``'s third row is ``p_z`` (px, larger =
nearer the camera). ``R3`` equals ``euler_to_rotation([phi, gamma, theta]).T``, facelab's
rotation transposed, so a pure 300W-LP yaw ``gamma`` is a facelab yaw of ``-gamma``. In facelab's
conventions (:mod:`facelab.camera.projection`: pixel centres at ``(j + 0.5, i + 0.5)``, y down)
the same projection is the weak-perspective pose (:func:`pose_to_facelab`)::

    angles = rotation_to_euler(R3), tx' = tx - 0.5, ty' = H + 0.5 - ty, scale = s / unit_mm

with ``unit_mm`` the model's length unit in mm (``1e-3`` for BFM's micrometres). File landmarks
become facelab pixels by subtracting 0.5 (:func:`pixels_from_file`).

**Missing points.** AFLW2000-3D's 21-point ``pt2d`` marks a point that was not annotated with
``-1`` coordinates; any point with a negative coordinate (a 1-based pixel position is at least
0.5) is returned as missing by :func:`landmark_visibility`.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.camera.projection import weak_perspective
from facelab.camera.rotation import euler_to_rotation, rotate_points, rotation_to_euler
from facelab.checks import check_tensor
from facelab.io._util import as_vector, check_finite, existing_file, read_mat
from facelab.io.bfm import BFM2009_UNIT_TO_MM

LP_REQUIRED = ("Pose_Para", "Shape_Para", "Exp_Para")
LP_OPTIONAL = ("pt2d", "pt3d_68", "Tex_Para", "Illum_Para", "Color_Para", "roi")
POSE_LENGTH = 7
PT2D_COUNTS = (68, 21)
N_LANDMARKS_3D = 68
FILE_PIXEL_OFFSET = 0.5  # file pixel centres lie at j + 1 (MATLAB), facelab's at j + 0.5
MISSING_BELOW = 0.0  # a 1-based pixel position is >= 0.5; AFLW2000-3D writes -1 for a missing point
OPTIONAL_VECTORS = {"Tex_Para": ("tex", None), "Illum_Para": ("illum", None), "Color_Para": ("color", None), "roi": ("roi", 4)}


def load_300wlp(path) -> dict:
    """Read one 300W-LP / AFLW2000-3D annotation ``.mat``.

    Args:
        path: the ``.mat`` file next to the image (e.g. ``AFW_134212_1_0.mat``).

    Returns:
        dict of float32 tensors (see the module table): ``pose (7,)``, ``angles (3,)`` rad,
        ``translation (3,)``, ``scale`` float, ``shape (K,)``, ``exp (K,)``, ``pt2d (N, 2)``
        or None, ``pt3d_68 (68, 3)`` or None, ``tex``, ``illum``, ``color``, ``roi`` or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .mat file, a missing required key or a wrongly shaped array
            (the message names the file and the key).

    >>> import tempfile, os, numpy as np, scipy.io
    >>> p = os.path.join(tempfile.mkdtemp(), "x.mat")
    >>> scipy.io.savemat(p, {"Pose_Para": [[0.1, 0.5, 0, 1, 2, 3, 0.002]], "Shape_Para": np.zeros((199, 1)), "Exp_Para": np.zeros((29, 1))})
    >>> a = load_300wlp(p)
    >>> a["angles"].shape, round(a["scale"], 6), a["pt2d"] is None
    (torch.Size([3]), 0.002, True)
    """
    path = existing_file(path, "300W-LP annotation file")
    raw = read_mat(path, LP_REQUIRED, LP_OPTIONAL)
    for k, a in raw.items():
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{path}: '{k}' must be numeric, got dtype {a.dtype}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, and are refused
            check_finite(a.astype(np.float32), path, k)
    pose = as_vector(raw["Pose_Para"], path, "Pose_Para", length=POSE_LENGTH)
    out = {
        "path": str(path),
        "pose": _t(pose),
        "angles": _t(pose[:3]),
        "translation": _t(pose[3:6]),
        "scale": float(pose[6]),
        "shape": _t(as_vector(raw["Shape_Para"], path, "Shape_Para")),
        "exp": _t(as_vector(raw["Exp_Para"], path, "Exp_Para")),
        "pt2d": None,
        "pt3d_68": None,
    }
    if "pt2d" in raw:
        pt = raw["pt2d"]
        if pt.ndim != 2 or pt.shape[0] != 2 or pt.shape[1] not in PT2D_COUNTS:
            raise ValueError(f"{path}: 'pt2d' must be (2, N) with N in {PT2D_COUNTS}, got shape {pt.shape}")
        out["pt2d"] = _t(pt.T)
    if "pt3d_68" in raw:
        pt = raw["pt3d_68"]
        if pt.shape != (3, N_LANDMARKS_3D):
            raise ValueError(f"{path}: 'pt3d_68' must be (3, {N_LANDMARKS_3D}), got shape {pt.shape}")
        out["pt3d_68"] = _t(pt.T)
    for key, (name, length) in OPTIONAL_VECTORS.items():
        out[name] = _t(as_vector(raw[key], path, key, length=length)) if key in raw else None
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# ------------------------------------------------------------------ projection conventions
def _batched(x, name: str, width: int) -> tuple[torch.Tensor, bool]:
    t = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not isinstance(x, torch.Tensor) else x
    single = t.dim() == 1
    t = t[None] if single else t
    check_tensor(t, name, ("B", width))
    return t, single


def _heights(image_height, batch: int, like: torch.Tensor) -> torch.Tensor:
    h = torch.as_tensor(image_height, dtype=like.dtype, device=like.device).reshape(-1)
    if h.numel() not in (1, batch) or not bool((h > 0).all()):
        raise ValueError(f"image_height: expected a positive number or {batch} of them, got {image_height!r}")
    return h.expand(batch)


def _check_unit(unit_mm: float) -> float:
    if not float(unit_mm) > 0:
        raise ValueError(f"unit_mm: the model's length unit in mm must be > 0, got {unit_mm!r}")
    return float(unit_mm)


def pose_to_facelab(pose_para, image_height, unit_mm: float = BFM2009_UNIT_TO_MM) -> torch.Tensor:
    """A 300W-LP ``Pose_Para`` as facelab's weak-perspective pose (module docstring, "Projection").

    Args:
        pose_para: ``(7,)`` or ``(B, 7)`` float: pitch, yaw, roll (rad, 300W-LP's), tx, ty, tz
            (px, 1-based, y up), scale (px per model unit).
        image_height: the image height ``H`` in px (a number, or ``(B,)``).
        unit_mm: the model's length unit in mm (BFM: ``1e-3``, micrometres; a facelab model: 1).

    Returns:
        ``(6,)`` or ``(B, 6)`` float: facelab's ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px with
        pixel centres at half-integers and y down, px/mm); ``tz`` is dropped (it only shifts depth).

    >>> pose_to_facelab(torch.tensor([0.0, 0.0, 0.0, 10.0, 20.0, 0.0, 1e-3]), 100).tolist()
    [0.0, 0.0, 0.0, 9.5, 80.5, 1.0]
    """
    unit_mm = _check_unit(unit_mm)
    p, single = _batched(pose_para, "pose_para", 7)
    rotation = euler_to_rotation(p[:, :3]).transpose(1, 2)  # 300W-LP's R3 is facelab's rotation transposed
    h = _heights(image_height, p.shape[0], p)
    out = torch.cat([
        rotation_to_euler(rotation),
        (p[:, 3] - FILE_PIXEL_OFFSET)[:, None],
        (h + FILE_PIXEL_OFFSET - p[:, 4])[:, None],
        (p[:, 6] / unit_mm)[:, None],
    ], dim=1)
    return out[0] if single else out


def pose_from_facelab(pose, image_height, unit_mm: float = BFM2009_UNIT_TO_MM) -> torch.Tensor:
    """Inverse of :func:`pose_to_facelab`: a facelab pose as a 300W-LP ``Pose_Para`` (``tz = 0``).

    Args:
        pose: ``(6,)`` or ``(B, 6)`` float, facelab's ``[pitch, yaw, roll, tx, ty, scale]``.
        image_height: ``H`` in px. unit_mm: the model's length unit in mm.

    Returns:
        ``(7,)`` or ``(B, 7)`` float Pose_Para.

    >>> p = torch.tensor([0.1, -0.7, 0.2, 30.0, 40.0, 2.0])
    >>> torch.allclose(pose_to_facelab(pose_from_facelab(p, 64, 1.0), 64, 1.0), p, atol=1e-5)
    True
    """
    unit_mm = _check_unit(unit_mm)
    p, single = _batched(pose, "pose", 6)
    angles = rotation_to_euler(euler_to_rotation(p[:, :3]).transpose(1, 2))
    h = _heights(image_height, p.shape[0], p)
    out = torch.cat([
        angles,
        (p[:, 3] + FILE_PIXEL_OFFSET)[:, None],
        (h + FILE_PIXEL_OFFSET - p[:, 4])[:, None],
        torch.zeros_like(p[:, :1]),
        (p[:, 5] * unit_mm)[:, None],
    ], dim=1)
    return out[0] if single else out


def project_300wlp(verts: torch.Tensor, pose_para, image_height, unit_mm: float = BFM2009_UNIT_TO_MM) -> torch.Tensor:
    """Project vertices with a 300W-LP pose, in facelab's screen space.

    Args:
        verts: ``(B, V, 3)`` float, mm, model frame (e.g. :func:`facelab.io.lp300w_vertices`).
        pose_para: ``(B, 7)`` (or ``(7,)``) 300W-LP Pose_Para. image_height: ``H`` px.
        unit_mm: the length unit ``Pose_Para``'s scale refers to (BFM: ``1e-3``).

    Returns:
        ``(B, V, 3)`` float: x, y in px (facelab's convention: :func:`pixels_to_file` gives the
        file's ``pt3d_68`` x, y) and depth in mm (larger = farther).

    >>> v = torch.tensor([[[0.0, 10.0, 0.0]]])
    >>> project_300wlp(v, torch.tensor([0.0, 0, 0, 50, 50, 0, 1e-3]), 100)[0, 0, :2].tolist()
    [49.5, 40.5]
    """
    check_tensor(verts, "verts", ("B", "V", 3))
    pose = pose_to_facelab(pose_para, image_height, unit_mm)
    pose = pose[None].expand(verts.shape[0], 6) if pose.dim() == 1 else pose
    rotation = euler_to_rotation(pose[:, :3])
    return weak_perspective(verts, rotation, pose[:, 5], pose[:, 3:5])


def pixels_from_file(points) -> torch.Tensor:
    """File landmarks (1-based pixel centres) in facelab's convention: x, y minus 0.5.

    Args:
        points: ``(..., N, 2)`` or ``(..., N, 3)`` float, e.g. ``pt2d`` or ``pt3d_68`` as
            :func:`load_300wlp` returns them; a third column (depth) is left as it is.

    Returns:
        the same shape, float.

    >>> pixels_from_file(torch.tensor([[1.0, 1.0, 7.0]])).tolist()
    [[0.5, 0.5, 7.0]]
    """
    out = torch.as_tensor(points, dtype=torch.get_default_dtype()).clone()
    out[..., :2] -= FILE_PIXEL_OFFSET
    return out


def pixels_to_file(points) -> torch.Tensor:
    """Inverse of :func:`pixels_from_file`: facelab pixels as the file's 1-based ones (x, y plus 0.5).

    >>> pixels_to_file(torch.tensor([[0.5, 0.5]])).tolist()
    [[1.0, 1.0]]
    """
    out = torch.as_tensor(points, dtype=torch.get_default_dtype()).clone()
    out[..., :2] += FILE_PIXEL_OFFSET
    return out


def landmark_visibility(points) -> torch.Tensor:
    """Which file landmarks were annotated: ``(..., N)`` bool, False where a coordinate is
    negative (AFLW2000-3D's ``-1`` marker) or not finite.

    Args:
        points: ``(..., N, 2)`` (or ``(..., N, 3)``: only x, y are read), the file's 1-based pixels.

    >>> landmark_visibility(torch.tensor([[3.0, 4.0], [-1.0, -1.0], [-1.0, 452.0]])).tolist()
    [True, False, False]
    """
    xy = torch.as_tensor(points)[..., :2]
    return (torch.isfinite(xy) & (xy >= MISSING_BELOW)).all(dim=-1)
