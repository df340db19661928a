"""MICC-Florence-style scan folders (Bagdanov et al. 2011), in a documented layout.

The raw MICC release ships VRML scans and MJPEG videos; convert it once (meshes to
``.obj``/``.ply``, videos to frame images) into this layout, which
:class:`MICCDataset` reads (book chapter ``book/07_evaluation.ipynb``)::

    root/
      subject_01/                 # one folder per subject (any name; sorted)
        scan.obj | scan.ply       # the neutral ground-truth scan, mm; if there is no
                                  # file named scan.*, the folder must hold exactly one mesh
        landmarks.npy | .txt      # optional (L, 3) float, mm (txt: one "x y z" per line)
        cooperative/  *.png|*.jpg # optional frame folders, one per condition,
        indoor/       ...         # frames sorted by file name
        outdoor/      ...
      subject_02/ ...

Folders without any mesh file raise an error naming them (nothing is skipped silently).

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from facelab.io._util import existing_dir, read_image
from facelab.io.mesh import MESH_SUFFIXES, Mesh, read_mesh

MICC_CONDITIONS = ("cooperative", "indoor", "outdoor")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SCAN_STEM = "scan"
LANDMARK_STEM = "landmarks"


class MICCSubject(NamedTuple):
    """One subject.

    Attributes:
        name: folder name.
        scan: the neutral scan :class:`~facelab.io.mesh.Mesh` (mm).
        landmarks: ``(L, 3)`` float32 mm, or None.
        frames: ``{condition: [frame paths sorted by name]}`` (empty lists when absent).
    """

    name: str
    scan: Mesh
    landmarks: torch.Tensor | None
    frames: dict[str, list[Path]]


class MICCDataset:
    """Subjects of a MICC-style folder (layout in the module docstring).

    ``len(ds)`` is the number of subjects; ``ds[i]`` loads subject ``i`` as a
    :class:`MICCSubject`; ``ds.load_frames(i, "indoor")`` loads that condition's frames
    as ``(T, 3, H, W)`` float32 in [0, 1] (frames must share one size, or give
    ``image_size=(H, W)``).

    >>> import tempfile, torch
    >>> from facelab.io.mesh import write_mesh
    >>> root = tempfile.mkdtemp()
    >>> _ = write_mesh(f"{root}/s1/scan.ply", torch.eye(3), torch.tensor([[0, 1, 2]]))
    >>> ds = MICCDataset(root)
    >>> len(ds), ds.names, ds[0].scan.verts.shape, ds[0].frames["indoor"]
    (1, ['s1'], torch.Size([3, 3]), [])
    """

    def __init__(self, root, conditions: tuple[str, ...] = MICC_CONDITIONS):
        self.root = existing_dir(root, "MICC root folder")
        self.conditions = tuple(conditions)
        self.subject_dirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not self.subject_dirs:
            raise ValueError(f"{self.root}: no subject folders found")
        self.scan_paths = [_scan_path(d) for d in self.subject_dirs]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.subject_dirs]

    def __len__(self) -> int:
        return len(self.subject_dirs)

    def __getitem__(self, i: int) -> MICCSubject:
        if not -len(self) <= i < len(self):
            raise IndexError(f"subject index {i} out of range for {len(self)} subjects")
        folder = self.subject_dirs[i]
        frames = {c: _frames(folder / c) for c in self.conditions}
        return MICCSubject(folder.name, read_mesh(self.scan_paths[i]), _landmarks(folder), frames)

    def load_frames(self, i: int, condition: str, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``(T, 3, H, W)`` float32 frames of subject ``i`` under ``condition``."""
        if condition not in self.conditions:
            raise ValueError(f"condition: unknown value {condition!r}; expected one of {self.conditions}")
        paths = _frames(self.subject_dirs[i] / condition)
        if not paths:
            raise FileNotFoundError(f"{self.subject_dirs[i] / condition}: no frames ({', '.join(FRAME_SUFFIXES)})")
        images = [read_image(p, image_size) for p in paths]
        if len({im.shape for im in images}) > 1:
            raise ValueError(f"{self.subject_dirs[i] / condition}: frames differ in size; pass image_size=(H, W)")
        return torch.stack(images)


def _scan_path(folder: Path) -> Path:
    meshes = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    named = [p for p in meshes if p.stem == SCAN_STEM]
    if named:
        return named[0]
    if len(meshes) != 1:
        found = ", ".join(p.name for p in meshes) or "none"
        raise ValueError(f"{folder}: expected one scan mesh ({'/'.join(MESH_SUFFIXES)}) or a file named {SCAN_STEM}.*, found {found}")
    return meshes[0]


def _frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _landmarks(folder: Path) -> torch.Tensor | None:
    npy, txt = folder / f"{LANDMARK_STEM}.npy", folder / f"{LANDMARK_STEM}.txt"
    if npy.is_file():
        try:
            lm = np.load(npy, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{npy}: not a readable .npy file ({err})") from None
        path = npy
    elif txt.is_file():
        try:
            lm = np.loadtxt(txt, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{txt}: not a table of numbers ({err})") from None
        path = txt
    else:
        return None
    if lm.ndim != 2 or lm.shape[1] != 3 or lm.dtype.kind not in "fiu" or not np.isfinite(lm).all():
        raise ValueError(f"{path}: landmarks must be a finite (L, 3) array, got shape {lm.shape}")
    return torch.from_numpy(lm.astype(np.float32))
