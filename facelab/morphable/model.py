"""The :class:`MorphableModel`: a linear 3D face model in BFM's conventions.

Conventions (book chapter "3D morphable models", ``book/02_morphable_models.ipynb``):

* Coordinates are millimetres. x is the subject's left, y is up, z points toward the camera.
* Bases are stored as ``(3V, K)`` matrices with rows interleaved per vertex
  (``3*v + c``), like BFM's ``shapePC``. Columns are orthonormal.
* Coefficients ``alpha`` are *unstandardised*: ``alpha ~ N(0, diag(std**2))``, so the
  geometric distance between two shapes is ``||alpha_1 - alpha_2||`` (mm, summed over
  vertices) and the standardised coefficients are ``a = alpha / std``.
* Triangles are counter-clockwise seen from the front (+z), so face normals point
  out of the face.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.checks import check_tensor
from facelab.morphable.landmarks import N_LANDMARKS, UNMAPPED, ibug_point_list
from facelab.numerics import rowwise_matmul

NPZ_FORMAT = "facelab-morphable"
NPZ_VERSION = 1

_TENSOR_FIELDS = (
    "mean_shape", "shape_basis", "shape_std",
    "exp_basis", "exp_std",
    "mean_albedo", "albedo_basis", "albedo_std",
    "faces", "landmarks", "symmetry", "face_mask",
)
#: the dtype of each integer / bool field in the ``.npz`` (the others are float32)
_NPZ_DTYPES = {"faces": np.int64, "landmarks": np.int64, "symmetry": np.int64, "face_mask": bool}


@dataclass
class MorphableModel:
    """A linear morphable model of shape, expression and albedo.

    Attributes (V vertices, F triangles):
        mean_shape: ``(V, 3)`` float, mm.
        shape_basis: ``(3V, K_id)`` float, orthonormal columns (identity shape).
        shape_std: ``(K_id,)`` float, mm, sorted descending.
        exp_basis: ``(3V, K_exp)`` float, orthonormal columns (expression); K_exp may be 0.
        exp_std: ``(K_exp,)`` float, mm, sorted descending.
        mean_albedo: ``(V, 3)`` float, linear RGB in [0, 1].
        albedo_basis: ``(3V, K_alb)`` float, orthonormal columns.
        albedo_std: ``(K_alb,)`` float, sorted descending.
        faces: ``(F, 3)`` long, counter-clockwise from the front.
        landmarks: ``(68,)`` long, iBUG-68 vertex indices (``(0,)`` when unknown). A model that
            maps only some iBUG points (eos's ``ibug_to_sfm.txt`` leaves out the jaw contour) holds
            ``-1`` at the others: :attr:`landmark_mask` says which are mapped, and
            :meth:`require_landmarks` is how a consumer that needs particular points gets them.
        symmetry: ``(V,)`` long, the mirror partner of each vertex (x -> -x).
        face_mask: ``(V,)`` bool, the face region used by metrics and losses.
        nose_tip: vertex index of the nose tip.
        grid_shape: ``(rows, cols)`` when the mesh is a regular (u, v) grid, else None.
        name: a short label; meta: free-form provenance (seed, resolution, source file).
    """

    mean_shape: torch.Tensor
    shape_basis: torch.Tensor
    shape_std: torch.Tensor
    exp_basis: torch.Tensor
    exp_std: torch.Tensor
    mean_albedo: torch.Tensor
    albedo_basis: torch.Tensor
    albedo_std: torch.Tensor
    faces: torch.Tensor
    landmarks: torch.Tensor
    symmetry: torch.Tensor
    face_mask: torch.Tensor
    nose_tip: int
    grid_shape: tuple[int, int] | None = None
    name: str = "model"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ sizes
    @property
    def n_verts(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def n_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shape_basis.shape[1]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[1]

    @property
    def n_albedo(self) -> int:
        return self.albedo_basis.shape[1]

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean_shape.dtype

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        V = self.mean_shape.shape[0] if self.mean_shape.dim() == 2 else -1
        check_tensor(self.mean_shape, "mean_shape", ("V", 3))
        for basis, std, what in (
            ("shape_basis", "shape_std", "shape"),
            ("exp_basis", "exp_std", "expression"),
            ("albedo_basis", "albedo_std", "albedo"),
        ):
            b, s = getattr(self, basis), getattr(self, std)
            check_tensor(b, basis, (3 * V, "K"))
            check_tensor(s, std, (b.shape[1],))
            if (s < 0).any():
                raise ValueError(f"{std}: {what} standard deviations must be >= 0")
        check_tensor(self.mean_albedo, "mean_albedo", (V, 3))
        check_tensor(self.faces, "faces", (None, 3), dtype_kind="int")
        if self.landmarks.numel():  # an empty tensor means "no landmark annotation" (e.g. a loaded FLAME)
            check_tensor(self.landmarks, "landmarks", (N_LANDMARKS,), dtype_kind="int")
            bad = ((self.landmarks < UNMAPPED) | (self.landmarks >= V)).nonzero()[:, 0].tolist()
            if bad:
                raise ValueError(f"landmarks: iBUG points {ibug_point_list(bad)} (1-based) hold "
                                 f"{[int(self.landmarks[i]) for i in bad]}; expected vertex indices in "
                                 f"[0, {V}) or {UNMAPPED} for an unmapped point")
        check_tensor(self.symmetry, "symmetry", (V,), dtype_kind="int")
        check_tensor(self.face_mask, "face_mask", (V,), dtype_kind=None)
        for name in ("faces", "symmetry"):
            t = getattr(self, name)
            if t.numel() and (t.min() < 0 or t.max() >= V):
                raise ValueError(f"{name}: vertex indices must lie in [0, {V}), got [{int(t.min())}, {int(t.max())}]")
        if not 0 <= int(self.nose_tip) < V:
            raise ValueError(f"nose_tip: vertex index {self.nose_tip} outside [0, {V})")
        if self.grid_shape is not None and int(np.prod(self.grid_shape)) != V:
            raise ValueError(f"grid_shape: {tuple(self.grid_shape)} does not have {V} vertices")

    # ------------------------------------------------------------- landmarks
    @property
    def landmark_mask(self) -> torch.Tensor:
        """``(68,)`` bool: which iBUG points the model maps to a vertex (all False without landmarks).

        >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
        >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
        >>> int(m.landmark_mask.sum())
        68
        >>> lm = m.landmarks.clone(); lm[:17] = -1  # no jaw contour, as eos's SFM mapping
        >>> int(dataclasses.replace(m, landmarks=lm).landmark_mask.sum())
        51
        """
        if not self.landmarks.numel():
            return torch.zeros(N_LANDMARKS, dtype=torch.bool, device=self.landmarks.device)
        return self.landmarks != UNMAPPED

    def require_landmarks(self, what: str, points=None) -> torch.Tensor:
        """The ``(68,)`` long landmark vertices, or ``ValueError`` if any of ``points`` is unmapped.

        For consumers that index particular iBUG points (indexing with ``-1`` would silently pick
        the last vertex). ``points``: 0-based iBUG indices that must be mapped (None: all 68).
        The message names ``what`` and the missing points (1-based, as mapping files number them).

        >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
        >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
        >>> lm = m.landmarks.clone(); lm[[0, 1, 2, 60]] = -1
        >>> partial = dataclasses.replace(m, landmarks=lm)
        >>> partial.require_landmarks("alignment", points=[36, 45]).shape
        torch.Size([68])
        >>> partial.require_landmarks("alignment")
        Traceback (most recent call last):
        ...
        ValueError: alignment: model 'synthfaces-quick' maps no vertex to iBUG points 1-3, 61 (1-based); it needs all 68 ...
        """
        needed = torch.arange(N_LANDMARKS) if points is None else torch.as_tensor(points, dtype=torch.long).reshape(-1)
        if not self.landmarks.numel():
            raise ValueError(f"{what}: model {self.name!r} has no iBUG-68 landmark annotation; load it with "
                             "landmarks=(68 vertex indices or a mapping file, facelab.io.read_landmark_mapping)")
        missing = needed[~self.landmark_mask.cpu()[needed]].tolist()
        if missing:
            need = "all 68" if points is None else f"iBUG points {ibug_point_list(needed.tolist())}"
            raise ValueError(f"{what}: model {self.name!r} maps no vertex to iBUG points {ibug_point_list(missing)} "
                             f"(1-based); it needs {need} (landmarks=68 vertex indices)")
        return self.landmarks

    def landmark_points(self, points: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
        """``(B, 68, C)``: the landmark vertices' rows of ``points (B, V, C)``, ``fill`` where unmapped.

        Safe with a partial annotation, where ``points[:, model.landmarks]`` would silently
        return the last vertex for each ``-1``. NaN marks an unmapped point by default.

        >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
        >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
        >>> lm = m.landmarks.clone(); lm[:17] = -1
        >>> out = dataclasses.replace(m, landmarks=lm).landmark_points(m.mean_shape[None])
        >>> out.shape, bool(out[0, :17].isnan().all()), bool(out[0, 17:].isfinite().all())
        (torch.Size([1, 68, 3]), True, True)
        """
        if not self.landmarks.numel():
            raise ValueError(f"model: {self.name!r} has no iBUG-68 landmark annotation")
        mapped = self.landmark_mask.to(points.device)
        out = points[:, self.landmarks.to(points.device).clamp_min(0)]
        return torch.where(mapped[None, :, None], out, out.new_tensor(fill))

    # -------------------------------------------------------------- geometry
    @staticmethod
    def _apply(basis: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return (coeffs @ basis.T).reshape(coeffs.shape[0], -1, 3)

    def shape(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices of ``mean + shape_basis @ alpha_id + exp_basis @ alpha_exp``.

        Args:
            alpha_id: ``(B, K_id)`` float, unstandardised identity coefficients.
            alpha_exp: ``(B, K_exp)`` float or None (neutral).

        Returns:
            ``(B, V, 3)`` float, mm.
        """
        check_tensor(alpha_id, "alpha_id", ("B", self.n_shape))
        out = self.mean_shape + self._apply(self.shape_basis, alpha_id)
        if alpha_exp is not None:
            check_tensor(alpha_exp, "alpha_exp", (alpha_id.shape[0], self.n_exp))
            out = out + self._apply(self.exp_basis, alpha_exp)
        return out

    def identity_offset(self, alpha_id: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` mm: the identity displacement ``shape_basis @ alpha_id``."""
        check_tensor(alpha_id, "alpha_id", ("B", self.n_shape))
        return self._apply(self.shape_basis, alpha_id)

    def expression_offset(self, alpha_exp: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` mm: the expression displacement ``exp_basis @ alpha_exp``."""
        check_tensor(alpha_exp, "alpha_exp", ("B", self.n_exp))
        return self._apply(self.exp_basis, alpha_exp)

    def albedo(self, beta: torch.Tensor) -> torch.Tensor:
        """Per-vertex albedo ``mean_albedo + albedo_basis @ beta``.

        Args:
            beta: ``(B, K_alb)`` float, unstandardised albedo coefficients.

        Returns:
            ``(B, V, 3)`` float, linear RGB (not clamped; the renderer clamps).
        """
        check_tensor(beta, "beta", ("B", self.n_albedo))
        return self.mean_albedo + self._apply(self.albedo_basis, beta)

    def project_shape(self, verts: torch.Tensor) -> torch.Tensor:
        """Least-squares identity coefficients of ``verts`` (orthogonal projection).

        Args:
            verts: ``(B, V, 3)`` float, mm, in the model's frame.

        Returns:
            ``(B, K_id)`` float: ``shape_basis.T @ (verts - mean)``.
        """
        check_tensor(verts, "verts", ("B", self.n_verts, 3))
        return rowwise_matmul((verts - self.mean_shape).reshape(verts.shape[0], -1), self.shape_basis)

    def project_expression(self, verts: torch.Tensor) -> torch.Tensor:
        """``(B, K_exp)``: expression coefficients of an offset ``verts`` ``(B, V, 3)``."""
        check_tensor(verts, "verts", ("B", self.n_verts, 3))
        return rowwise_matmul(verts.reshape(verts.shape[0], -1), self.exp_basis)

    def project_albedo(self, albedo: torch.Tensor) -> torch.Tensor:
        """``(B, K_alb)``: least-squares albedo coefficients of ``albedo`` ``(B, V, 3)``."""
        check_tensor(albedo, "albedo", ("B", self.n_verts, 3))
        return rowwise_matmul((albedo - self.mean_albedo).reshape(albedo.shape[0], -1), self.albedo_basis)

    def sample(self, n: int, generator: torch.Generator | None = None, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Draw ``n`` coefficient sets from the model's Gaussian prior.

        Returns a dict with ``alpha_id (n, K_id)``, ``alpha_exp (n, K_exp)`` and
        ``beta (n, K_alb)``, each ``N(0, (scale * std)**2)``.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")

        def draw(std: torch.Tensor) -> torch.Tensor:
            z = torch.randn(n, std.shape[0], generator=generator, dtype=std.dtype)
            return (z.to(std.device) * std * scale)

        return {"alpha_id": draw(self.shape_std), "alpha_exp": draw(self.exp_std), "beta": draw(self.albedo_std)}

    # ---------------------------------------------------------------- device
    def to(self, device=None, dtype: torch.dtype | None = None) -> "MorphableModel":
        """A copy on ``device``; floating fields are cast to ``dtype`` if given."""
        changes = {}
        for name in _TENSOR_FIELDS:
            t = getattr(self, name)
            changes[name] = t.to(device=device, dtype=dtype) if (dtype is not None and t.is_floating_point()) else t.to(device)
        return dataclasses.replace(self, **changes)

    def truncate(self, n_shape: int | None = None, n_exp: int | None = None, n_albedo: int | None = None) -> "MorphableModel":
        """A copy keeping only the leading components of each basis."""
        changes = {}
        for n, basis, std in ((n_shape, "shape_basis", "shape_std"), (n_exp, "exp_basis", "exp_std"), (n_albedo, "albedo_basis", "albedo_std")):
            if n is not None:
                have = getattr(self, basis).shape[1]
                if not 0 < n <= have:
                    raise ValueError(f"{basis}: cannot keep {n} of {have} components")
                changes[basis] = getattr(self, basis)[:, :n]
                changes[std] = getattr(self, std)[:n]
        return dataclasses.replace(self, **changes)

    def content_sha256(self) -> str:
        """A hex SHA-256 of the model's arrays and ``nose_tip``, as :meth:`save` stores them.

        Two models hash alike when their arrays do, whatever their ``name``, ``meta``, device or
        file: a model and its :meth:`save`-d ``.npz`` read back agree. Each array enters as its
        field name, shape and bytes in the ``.npz`` dtypes (float32, int64, bool), so a float64
        copy hashes like the float32 one.

        >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
        >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
        >>> h = m.content_sha256(); len(h), h == m.to(dtype=torch.float64).content_sha256()
        (64, True)
        >>> h == m.truncate(n_shape=10).content_sha256()
        False
        """
        import hashlib

        digest = hashlib.sha256(f"{NPZ_FORMAT}/{NPZ_VERSION}/nose_tip={int(self.nose_tip)}".encode())
        for name in _TENSOR_FIELDS:
            t = getattr(self, name).detach().cpu()
            a = t.numpy().astype(_NPZ_DTYPES.get(name, np.float32), copy=False)
            digest.update(f"|{name}{list(a.shape)}|".encode())
            digest.update(np.ascontiguousarray(a).tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write the documented ``.npz`` (see :func:`load_npz`)."""
        path = Path(path)
        arrays = {name: getattr(self, name).detach().cpu().numpy() for name in _TENSOR_FIELDS}
        arrays["face_mask"] = arrays["face_mask"].astype(bool)
        header = {
            "format": NPZ_FORMAT,
            "version": NPZ_VERSION,
            "name": self.name,
            "nose_tip": int(self.nose_tip),
            "grid_shape": list(self.grid_shape) if self.grid_shape is not None else None,
            "meta": self.meta,
        }
        import json

        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MorphableModel":
        """Read a model written by :meth:`save`. See :func:`load_npz`."""
        return load_npz(path)


def load_npz(path: str | Path) -> MorphableModel:
    """Load a facelab morphable-model ``.npz``.

    The file holds one array per tensor field of :class:`MorphableModel`
    (float32 except ``faces``/``landmarks``/``symmetry`` int64 and ``face_mask``
    bool) plus ``header``: UTF-8 JSON bytes with ``format`` (``"facelab-morphable"``),
    ``version``, ``name``, ``nose_tip``, ``grid_shape`` and ``meta``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable npz, lacks a field, has the wrong
            format or version, or holds inconsistent arrays. The message names the
            file and the problem.
    """
    import json
    import zipfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such morphable-model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    if "header" not in arrays:
        raise ValueError(f"{path}: missing 'header'; not a facelab morphable-model file")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt header ({err})") from None
    if header.get("format") != NPZ_FORMAT:
        raise ValueError(f"{path}: format {header.get('format')!r}, expected {NPZ_FORMAT!r}")
    if header.get("version") != NPZ_VERSION:
        raise ValueError(f"{path}: format version {header.get('version')!r} is not supported (this facelab reads version {NPZ_VERSION})")
    missing = [k for k in _TENSOR_FIELDS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    tensors = {}
    for k in _TENSOR_FIELDS:
        a = arrays[k]
        if k in ("faces", "landmarks", "symmetry"):
            tensors[k] = torch.from_numpy(a.astype(np.int64))
        elif k == "face_mask":
            tensors[k] = torch.from_numpy(a.astype(bool))
        else:
            tensors[k] = torch.from_numpy(a.astype(np.float32))
    grid = header.get("grid_shape")
    try:
        return MorphableModel(
            **tensors,
            nose_tip=int(header["nose_tip"]),
            grid_shape=tuple(grid) if grid is not None else None,
            name=header.get("name", "model"),
            meta=header.get("meta", {}),
        )
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: inconsistent model ({err})") from None
