"""Surrey Face Model / eos ``.bin`` files (cereal binary archives), read and write.

Layout implemented (eos ``MorphableModel`` serialisation, little-endian, no padding):

::

    uint32 version                            # cereal class version of MorphableModel, 1..4
    PcaModel shape_model
    PcaModel color_model                      # may be empty (0 x 0 matrices): shape-only model
    if version >= 2:  optional<ExpressionModel> expression_model
    if version >= 3:  optional<map<string, int>> landmark_definitions
    vector<array<double, 2>> texture_coordinates
    if version == 4:  vector<array<int32, 3>> texture_triangle_indices

    PcaModel  := Matrix mean (3V x 1), Matrix orthonormal_basis (3V x K),
                 Matrix eigenvalues (K x 1), vector<array<int32, 3>> triangles
    Matrix    := int32 rows, int32 cols, rows*cols float32 in column-major order
    vector<T> := uint64 n, then n items
    optional  := uint8 is_empty (1 = nullopt), then the value if not empty
    ExpressionModel := int32 variant index; 0 = PcaModel, 1 = vector<Blendshape>
    Blendshape := string name, Matrix deformation (3V x 1)
    string    := uint64 n, n bytes
    map<string, int> := uint64 n, then n pairs (string key, int32 value)

The eigenvalues are variances, so ``std = sqrt(eigenvalues)``. Version 0 (the
pre-2017 OpenCV-matrix format) is not supported. SFM is in mm with facelab's axes
(y up, z toward the camera) and colours in [0, 1]. A blendshape expression model
(vector of offsets ``D (3V, K)``) is turned into a PCA block by the SVD
``D = U S W^T``: ``exp_basis = U``, ``exp_std = S`` (i.e. blendshape weights are
given a standard-normal prior). A PCA expression model's own mean is added
to the shape mean. ``landmark_definitions`` named ``"1"`` .. ``"68"`` (iBUG numbering) become
``model.landmarks``, with -1 for the numbers absent (a partial annotation, ``model.landmark_mask``).

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from facelab.io._build import (
    N_LANDMARKS, assemble_model, check_faces, mean_vertices, orthonormal_pca, std_from_variance,
)
from facelab.io._util import existing_file, to_numpy
from facelab.morphable.landmarks import UNMAPPED
from facelab.morphable.model import MorphableModel

SFM_VERSIONS = (1, 2, 3, 4)
SFM_WRITE_VERSION = 3
EXPRESSION_PCA, EXPRESSION_BLENDSHAPES = 0, 1
MAX_STRING_BYTES = 1 << 20  # a sanity bound: corrupt lengths fail fast instead of allocating


class _Reader:
    """Sequential little-endian reader whose errors name the file and the field."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated file while reading {what} (need {n} bytes at offset {self.pos}, file has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def matrix(self, what: str) -> np.ndarray:
        rows, cols = self.scalar("i", what + " rows"), self.scalar("i", what + " cols")
        if rows < 0 or cols < 0:
            raise ValueError(f"{self.path}: {what} has negative size ({rows} x {cols})")
        raw = self.take(4 * rows * cols, what + " values")
        return np.frombuffer(raw, dtype="<f4").reshape(cols, rows).T.astype(np.float64)  # column-major

    def count(self, what: str, item_bytes: int) -> int:
        n = self.scalar("Q", what + " length")
        if n * item_bytes > len(self.data) - self.pos:
            raise ValueError(f"{self.path}: truncated file: {what} claims {n} items, more than the file holds")
        return n

    def triangles(self, what: str) -> np.ndarray:
        n = self.count(what, 12)
        return np.frombuffer(self.take(12 * n, what), dtype="<i4").reshape(n, 3).astype(np.int64)

    def string(self, what: str) -> str:
        n = self.count(what, 1)
        if n > MAX_STRING_BYTES:
            raise ValueError(f"{self.path}: {what} has an implausible length {n}")
        return self.take(n, what).decode("utf-8", errors="replace")

    def flag(self, what: str) -> bool:
        b = self.scalar("B", what)
        if b not in (0, 1):
            raise ValueError(f"{self.path}: {what} must be a bool byte (0/1), got {b}")
        return bool(b)


def _read_pca(r: _Reader, what: str) -> dict:
    return {
        "mean": r.matrix(f"{what}.mean"),
        "basis": r.matrix(f"{what}.orthonormal_pca_basis"),
        "eigenvalues": r.matrix(f"{what}.eigenvalues"),
        "triangles": r.triangles(f"{what}.triangle_list"),
    }


def read_sfm(path) -> dict:
    """Parse an eos/SFM ``.bin`` into plain arrays (no unit or basis conversion).

    Returns:
        dict with ``version``; ``shape`` and ``color`` dicts (``mean (3V, 1)``,
        ``basis (3V, K)``, ``eigenvalues (K, 1)`` variances, ``triangles (F, 3)``);
        ``expression`` (a PCA dict, ``{"blendshapes": (3V, K), "names": [...]}`` or None);
        ``landmarks`` (dict name -> vertex or None); ``texcoords (V, 2)``.

    Raises:
        FileNotFoundError; ValueError naming the file and the field for a truncated
        file, an unknown version or trailing bytes.
    """
    path = existing_file(path, "SFM/eos model file")
    r = _Reader(path.read_bytes(), path)
    version = r.scalar("I", "version")
    if version not in SFM_VERSIONS:
        raise ValueError(f"{path}: unsupported eos MorphableModel version {version}; expected one of {SFM_VERSIONS}")
    out = {"version": version, "shape": _read_pca(r, "shape_model"), "color": _read_pca(r, "color_model")}
    out["expression"] = _read_expression(r) if version >= 2 else None
    out["landmarks"] = None
    if version >= 3 and not r.flag("landmark_definitions.nullopt"):
        n = r.count("landmark_definitions", 12)
        out["landmarks"] = {r.string("landmark name"): r.scalar("i", "landmark vertex") for _ in range(n)}
    n = r.count("texture_coordinates", 16)
    out["texcoords"] = np.frombuffer(r.take(16 * n, "texture_coordinates"), dtype="<f8").reshape(n, 2).copy()
    if version == 4:
        out["texture_triangles"] = r.triangles("texture_triangle_indices")
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} unexpected trailing bytes after the model (wrong version?)")
    return out


def _read_expression(r: _Reader):
    if r.flag("expression_model.nullopt"):
        return None
    index = r.scalar("i", "expression_model variant index")
    if index == EXPRESSION_PCA:
        return _read_pca(r, "expression_model")
    if index == EXPRESSION_BLENDSHAPES:
        n = r.count("blendshapes", 16)
        names, cols = [], []
        for k in range(n):
            names.append(r.string(f"blendshape {k} name"))
            cols.append(r.matrix(f"blendshape {k} deformation").reshape(-1))
        if len({c.shape for c in cols}) > 1:
            raise ValueError(f"{r.path}: blendshapes have different lengths")
        return {"blendshapes": np.stack(cols, axis=1) if cols else np.zeros((0, 0)), "names": names}
    raise ValueError(f"{r.path}: unknown expression_model variant index {index} (expected 0 or 1)")


def load_sfm(path, landmarks=None, face_mask=None) -> MorphableModel:
    """Load a Surrey Face Model / eos ``.bin`` (e.g. ``sfm_shape_3448.bin``) as a MorphableModel.

    Args:
        path: the cereal binary file (layout in the module docstring).
        landmarks: optional ``(68,)`` vertex indices; overrides those in the file.
        face_mask: optional ``(V,)`` bool; else all True.

    Returns:
        MorphableModel: mm, ``std = sqrt(eigenvalues)``, colour model if present
        (else grey), expression model if present (else empty).

    >>> import tempfile, os, torch
    >>> from facelab.morphable.model import MorphableModel
    >>> p = os.path.join(tempfile.mkdtemp(), "m.bin")
    >>> mean = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> _ = save_sfm(p, mean, torch.eye(9)[:, :2], torch.tensor([2., 1.]), torch.tensor([[0, 1, 2]]))
    >>> load_sfm(p).shape_std.tolist()
    [2.0, 1.0]
    """
    raw = read_sfm(path)
    path = Path(path)
    mean = mean_vertices(raw["shape"]["mean"], path, "shape_model.mean")
    V = mean.shape[0]
    shape = _pca_block(raw["shape"], V, path, "shape_model")
    faces = check_faces(raw["shape"]["triangles"], V, path, "shape_model.triangle_list", one_based=False)
    mean_albedo, albedo = None, None
    if raw["color"]["mean"].size:
        mean_albedo = mean_vertices(raw["color"]["mean"], path, "color_model.mean")
        if mean_albedo.shape[0] != V:
            raise ValueError(f"{path}: color_model.mean has {mean_albedo.shape[0]} vertices, the shape model {V}")
        albedo = _pca_block(raw["color"], V, path, "color_model")
    exp = None
    expression = raw["expression"]
    if expression is not None and "blendshapes" in expression:
        D = _check_rows(expression["blendshapes"], V, path, "expression_model blendshapes")
        exp = orthonormal_pca(D, np.ones(D.shape[1]), path, "expression_model blendshapes")
    elif expression is not None:
        exp = _pca_block(expression, V, path, "expression_model")
        mean = mean + expression["mean"].reshape(V, 3)  # fold the mean expression offset into the mean shape
    if landmarks is None and raw["landmarks"]:
        landmarks = _ibug_landmarks(raw["landmarks"])
    return assemble_model(
        path=path, fmt=f"eos-cereal-v{raw['version']}", name="sfm", mean_shape=mean, faces=faces,
        shape=shape, exp=exp, albedo=albedo, mean_albedo=mean_albedo, landmarks=landmarks, face_mask=face_mask,
    )


def _check_rows(B: np.ndarray, V: int, path: Path, what: str) -> np.ndarray:
    if B.ndim != 2 or B.shape[0] != 3 * V:
        raise ValueError(f"{path}: {what} must be (3V, K) = ({3 * V}, K), got shape {B.shape}")
    return B


def _pca_block(pca: dict, V: int, path: Path, what: str):
    B = _check_rows(pca["basis"], V, path, f"{what}.orthonormal_pca_basis")
    ev = pca["eigenvalues"]
    if ev.ndim != 2 or ev.shape[1] != 1 or ev.shape[0] != B.shape[1]:
        raise ValueError(f"{path}: {what}.eigenvalues must be ({B.shape[1]}, 1), got shape {ev.shape}")
    if pca["mean"].shape != (3 * V, 1):
        raise ValueError(f"{path}: {what}.mean must be ({3 * V}, 1), got shape {pca['mean'].shape}")
    std = std_from_variance(ev[:, 0], path, f"{what}.eigenvalues")
    return orthonormal_pca(B, std, path, f"{what}.orthonormal_pca_basis")


def _ibug_landmarks(definitions: dict) -> np.ndarray | None:
    """``(68,)`` vertices of the definitions named ``"1"`` .. ``"68"``, -1 for the absent ones (None if none)."""
    names = [str(i) for i in range(1, N_LANDMARKS + 1)]
    if not any(n in definitions for n in names):
        return None
    return np.array([definitions.get(n, UNMAPPED) for n in names], dtype=np.int64)


# ------------------------------------------------------------------- writing
def _matrix_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    return struct.pack("<ii", *a.shape) + a.T.astype("<f4").tobytes()  # column-major


def _pca_bytes(mean, basis, variances, triangles) -> bytes:
    tri = np.asarray(triangles, dtype="<i4").reshape(-1, 3)
    return (_matrix_bytes(np.asarray(mean).reshape(-1)) + _matrix_bytes(basis)
            + _matrix_bytes(np.asarray(variances).reshape(-1)) + struct.pack("<Q", len(tri)) + tri.tobytes())


def save_sfm(path, mean_shape, shape_basis, shape_std, faces, *, mean_albedo=None, albedo_basis=None,
             albedo_std=None, exp_basis=None, exp_std=None, landmarks: dict | None = None,
             version: int = SFM_WRITE_VERSION) -> Path:
    """Write a model in the eos cereal layout (see the module docstring).

    Args:
        path: destination ``.bin``.
        mean_shape: ``(V, 3)`` float, mm. shape_basis: ``(3V, K)``; shape_std: ``(K,)`` mm
            (written as variances ``std**2``). faces: ``(F, 3)`` int, 0-based.
        mean_albedo, albedo_basis, albedo_std: optional colour model (``(V, 3)`` in [0, 1]).
        exp_basis, exp_std: optional expression PCA model (needs ``version >= 2``).
        landmarks: optional ``{name: vertex}`` (needs ``version >= 3``).
        version: 1..4.

    Returns:
        The path written.
    """
    if version not in SFM_VERSIONS:
        raise ValueError(f"version: expected one of {SFM_VERSIONS}, got {version!r}")
    mean = to_numpy(mean_shape, "mean_shape")
    f = to_numpy(faces, "faces")
    out = struct.pack("<I", version)
    out += _pca_bytes(mean, to_numpy(shape_basis, "shape_basis"), to_numpy(shape_std, "shape_std") ** 2, f)
    if mean_albedo is not None:
        out += _pca_bytes(to_numpy(mean_albedo, "mean_albedo"), to_numpy(albedo_basis, "albedo_basis"),
                          to_numpy(albedo_std, "albedo_std") ** 2, f)
    else:
        out += _pca_bytes(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 3)))
    if version >= 2:
        if exp_basis is None:
            out += struct.pack("<B", 1)
        else:
            out += struct.pack("<Bi", 0, EXPRESSION_PCA) + _pca_bytes(
                np.zeros(mean.size), to_numpy(exp_basis, "exp_basis"), to_numpy(exp_std, "exp_std") ** 2, f)
    elif exp_basis is not None:
        raise ValueError("exp_basis: an expression model needs version >= 2")
    if version >= 3:
        if landmarks is None:
            out += struct.pack("<B", 1)
        else:
            out += struct.pack("<BQ", 0, len(landmarks))
            for name, vertex in landmarks.items():
                key = str(name).encode()
                out += struct.pack("<Q", len(key)) + key + struct.pack("<i", int(vertex))
    elif landmarks is not None:
        raise ValueError("landmarks: landmark definitions need version >= 3")
    out += struct.pack("<Q", 0)  # texture coordinates
    if version == 4:
        out += struct.pack("<Q", 0)  # texture triangle indices
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path
