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

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.io._util import as_vector, check_finite, existing_file, read_mat

LP_REQUIRED = ("Pose_Para", "Shape_Para", "Exp_Para")
LP_OPTIONAL = ("pt2d", "pt3d_68", "Tex_Para", "Illum_Para", "Color_Para", "roi")
POSE_LENGTH = 7
PT2D_COUNTS = (68, 21)
N_LANDMARKS_3D = 68
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
