"""MICC-Florence-style folders of videos and scans as a dataset, and the micc suite written as one.

The layout is that of :class:`facelab.io.MICCDataset` (scans) with the frames' sidecars at
the root::

    ROOT/landmarks.json                          optional: 68 landmarks per frame (px)
    ROOT/yaw.json                                optional: each frame's yaw (degrees)
    ROOT/subject_01/scan.obj                     the neutral scan, mm (or .ply; or the folder's only mesh)
    ROOT/subject_01/landmarks.txt                points on the scan, mm, one "x y z" per line:
                                                 the 68 iBUG points, or the nose tip alone
    ROOT/subject_01/cooperative/frame_0001.png   one folder of frames per video
    ROOT/subject_01/indoor/frame_0001.png
    ROOT/subject_01/outdoor/frame_0001.png
    ROOT/subject_02/...

* Subjects: the sub-folders of ``ROOT`` in sorted name order; label ``k`` is the ``k``-th.
  The real MICC release has one folder per subject (``subject_01`` .. ``subject_53``); convert
  its VRML scan to ``scan.obj`` or ``.ply`` (e.g. with ``trimesh`` or MeshLab) and its three
  videos (indoor cooperative, indoor, outdoor) to frames, e.g. ``ffmpeg -i VIDEO
  ROOT/subject_01/indoor/frame_%04d.png``.
* Frames: the files of ``ROOT/SUBJECT/CONDITION/`` ending in ``.png``, ``.jpg``, ``.jpeg``
  or ``.bmp``, sorted by name. A condition without a folder is a missing video, not an error.
* Scan landmarks (:class:`facelab.io.MICCDataset`: ``landmarks.txt`` or ``.npy``): the MICC
  protocol crops the scan to 95 mm around its nose tip (iBUG point 30 of 68 points, or the
  single point) and, with 68 points, starts its alignment from them; real MICC scans come
  without them, so mark at least the nose tip.
* ``landmarks.json``: :func:`facelab.io.write_landmarks`: a frame's path relative to ``ROOT``
  with ``/`` separators -> its 68 iBUG landmarks in pixels of that file (facelab's convention:
  the centre of pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``). Models that cut their
  input from the landmarks (Liu et al.'s aligned crop) need it; a 68-point detector gives it.
* ``yaw.json``: one JSON object, a frame's path relative to ``ROOT`` -> its yaw in degrees
  (the sign of the suites' ``yaw_deg``; a head-pose estimator gives it). The three-view row picks the leftmost, most frontal
  and rightmost frame of a video by it; without the file that row is left out.

:func:`export_micc` (``facelab synth micc --format micc --out ROOT``) writes the micc suite
in this layout: subject ``k`` (suite label ``k``) as ``subject_%02d % (k + 1)``, frames
numbered from 1 in the suite's order, 8-bit PNG (lossless, as :func:`export_lfw`), the true
neutral shape as ``scan.obj`` (exact float32) with its 68 landmark vertices, and the frames'
true landmarks and yaws. :class:`MICCVideos` reads such a folder with the batch keys of the
suite, so :func:`facelab.metrics.model_eval.score_micc` scores it as it scores the suite.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facelab.checks import check_choice, check_image_size
from facelab.data.image_folder import ON_BAD_IMAGE, _named, _probe
from facelab.data.lfw_folder import resize_photo, write_photos
from facelab.io import read_image, read_landmarks
from facelab.io._util import existing_file
from facelab.io.lfw import LFW_LANDMARKS_FILE
from facelab.io.mesh import FLOAT_FORMAT, write_mesh
from facelab.io.micc import FRAME_SUFFIXES, LANDMARK_STEM, MICC_CONDITIONS, SCAN_STEM, MICCDataset

__all__ = ["MICCVideos", "export_micc", "read_yaw", "write_yaw", "subject_name", "frame_key"]

YAW_FILE = "yaw.json"
SCAN_FILE = f"{SCAN_STEM}.obj"
SCAN_LANDMARKS_FILE = f"{LANDMARK_STEM}.txt"
SUBJECT_PREFIX = "subject_"
MIN_SUBJECT_DIGITS = 2  # MICC's subject_01 .. subject_53
FRAME_PREFIX = "frame_"
FRAME_DIGITS = 4  # ffmpeg's frame_%04d.png
EXPORT_SUFFIX = ".png"  # lossless: see facelab.data.lfw_folder
IBUG68_NOSE_TIP = 30  # the nose tip among the 68 iBUG points
SCAN_LANDMARK_COUNTS = (1, 68)  # the nose tip alone, or the iBUG points


def subject_name(label: int, n_subjects: int) -> str:
    """The folder name of suite subject ``label`` (of ``n_subjects``), numbered from 1 as MICC's.

    >>> subject_name(0, 53), subject_name(99, 150)
    ('subject_01', 'subject_100')
    """
    width = max(MIN_SUBJECT_DIGITS, len(str(n_subjects)))
    return f"{SUBJECT_PREFIX}{int(label) + 1:0{width}d}"


def frame_key(video: str, number: int) -> str:
    """A frame's path relative to the root (its sidecar key): ``video`` is ``SUBJECT/CONDITION``,
    ``number`` counts from 1.

    >>> frame_key("subject_01/indoor", 3)
    'subject_01/indoor/frame_0003.png'
    """
    return f"{video}/{FRAME_PREFIX}{int(number):0{FRAME_DIGITS}d}{EXPORT_SUFFIX}"


def write_yaw(path, yaw: dict) -> Path:
    """Write a ``yaw.json`` sidecar: ``{frame key: yaw in degrees}`` (float32 values read back exactly).

    >>> import tempfile, os
    >>> p = write_yaw(os.path.join(tempfile.mkdtemp(), "yaw.json"), {"s/indoor/frame_0001.png": -12.5})
    >>> read_yaw(p)
    {'s/indoor/frame_0001.png': -12.5}
    """
    path = Path(path)
    path.write_text(json.dumps({str(k): float(v) for k, v in yaw.items()}))
    return path


def read_yaw(path) -> dict[str, float]:
    """Read a ``yaw.json`` sidecar (module docstring): ``{frame key: yaw in degrees}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a JSON object of finite numbers (file and key named).
    """
    path = existing_file(path, "yaw file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON yaw file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping frame paths to degrees, got a {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: entry {key!r}: expected a finite yaw in degrees, got {value!r}")
    return {k: float(v) for k, v in data.items()}


class MICCVideos(Dataset):
    """The frames and scans of a MICC-style folder (layout in the module docstring).

    Each sample is one frame, a dict with the keys of a SynthFaces ``micc`` sample that the
    folder can give (:class:`facelab.data.PhotoCollection`); truth the folder does not hold
    is absent, not zero:

    ==============  =====================  ==================================================
    key             shape                  meaning
    ==============  =====================  ==================================================
    image           (3, H, W) float [0,1]  the frame (resized to ``image_size`` if given)
    label           () long                subject, 0..K-1 in sorted folder order
    condition       () long                index into :attr:`condition_names`
    frame           () long                the frame's place in its video, from 0
    landmarks2d     (68, 2) float, px      with ``landmarks.json``, scaled with the resize
    yaw_deg         () float, degrees      with ``yaw.json``
    ==============  =====================  ==================================================

    Frames come subject-major, then by condition, then by name, as the suite's. The scans are
    read on demand: :meth:`scan` and :meth:`scan_landmarks`.

    Args:
        root: the folder of subject folders.
        image_size: ``(H, W)`` px (or an int) to resize every frame to (bilinear, antialiased,
            landmarks scaled alike); None keeps each file's size.
        landmarks_path, yaw_path: the sidecars (default ``root/landmarks.json`` and
            ``root/yaw.json`` when they exist; ``False``: none). Every kept frame needs an entry.
        on_bad_image: ``"raise"``: an unreadable frame stops indexing with an error naming it;
            ``"skip"``: it is left out, listed in :attr:`skipped` and counted in a warning.
        morphable: the :class:`~facelab.morphable.MorphableModel` a scorer hands the model
            (``self.model``, as a suite's); None: none.
        conditions: the video folders looked for, in this order.

    Attributes:
        subjects: the :class:`facelab.io.MICCDataset` (scan paths, subject names).
        paths: ``N`` frame files. labels, conditions, frames: ``(N,)`` long.
        landmarks: ``{key: (68, 2) px}`` or None. yaw: ``{key: degrees}`` or None.
        skipped: ``(path, reason)`` of each unreadable frame left out.

    Raises:
        FileNotFoundError: no such folder or sidecar.
        ValueError: a subject folder without a scan, no frames at all, an unreadable frame
            (``"raise"`` mode), a malformed sidecar or frames missing from one (files named).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> root = export_micc(make_suite("micc", n_identities=2, frames_per_video=2, image_size=16,
    ...                               resolution="quick"), tempfile.mkdtemp())["out"]
    >>> ds = MICCVideos(root)
    >>> len(ds), ds.n_identities, ds.labels.tolist()[:7], ds.conditions.tolist()[:7]
    (12, 2, [0, 0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 2, 2, 0])
    >>> s = ds[1]; s["image"].shape, s["landmarks2d"].shape, int(s["frame"]), sorted(s)
    (torch.Size([3, 16, 16]), torch.Size([68, 2]), 1, ['condition', 'frame', 'image', 'label', 'landmarks2d', 'yaw_deg'])
    >>> ds.scan(1).shape, ds.scan_landmarks(1).shape
    (torch.Size([1353, 3]), torch.Size([68, 3]))
    """

    def __init__(self, root, image_size=None, landmarks_path=None, yaw_path=None, on_bad_image: str = "raise",
                 morphable=None, conditions: tuple[str, ...] = MICC_CONDITIONS) -> None:
        check_choice(on_bad_image, "on_bad_image", ON_BAD_IMAGE)
        self.subjects = MICCDataset(root, tuple(conditions))  # names a subject folder without a scan
        self.root = self.subjects.root
        self.condition_names = tuple(conditions)
        self.image_size = check_image_size(image_size, "image_size", minimum=1) if image_size is not None else None
        self.model = morphable
        self.skipped: list[tuple[Path, str]] = []
        paths, labels, conds, frames = [], [], [], []
        for k, folder in enumerate(self.subjects.subject_dirs):
            for c, condition in enumerate(self.condition_names):
                video = folder / condition
                files = sorted(p for p in video.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES) \
                    if video.is_dir() else []
                n = 0
                for f in files:
                    try:
                        _probe(f, decode=False)
                    except ValueError as err:
                        if on_bad_image == "raise":
                            raise ValueError(f"{err}; on_bad_image='skip' leaves such frames out") from None
                        self.skipped.append((f, str(err)))
                        continue
                    paths.append(f)
                    labels.append(k)
                    conds.append(c)
                    frames.append(n)
                    n += 1
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} unreadable frame(s): "
                          f"{_named([str(p) for p, _ in self.skipped])}", stacklevel=2)
        if not paths:
            raise ValueError(f"{self.root}: no readable frames (expected {self.root}/<subject>/<condition>/"
                             f"frame_0001.png with <condition> one of {', '.join(self.condition_names)})")
        self.paths = paths
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.conditions = torch.tensor(conds, dtype=torch.long)
        self.frames = torch.tensor(frames, dtype=torch.long)
        self.landmarks_path, self.landmarks = self._sidecar(landmarks_path, LFW_LANDMARKS_FILE, read_landmarks)
        self.yaw_path, self.yaw = self._sidecar(yaw_path, YAW_FILE, read_yaw)
        self._scans: dict[int, object] = {}

    def _sidecar(self, path, default: str, reader):
        if path is False:
            return None, None
        if path is None:
            path = self.root / default
            if not path.is_file():
                return None, None
        path = Path(path)
        table = reader(path)
        missing = [self.key(i) for i in range(len(self)) if self.key(i) not in table]
        if missing:
            raise ValueError(f"{path}: no entry for {len(missing)} of {len(self)} frames: {_named(missing)} "
                             f"(keys are paths relative to {self.root} with '/', such as {missing[0]!r})")
        return path, {self.key(i): table[self.key(i)] for i in range(len(self))}

    # ------------------------------------------------------------ frames
    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_identities(self) -> int:
        return len(self.subjects)

    @property
    def names(self) -> list[str]:
        """The subject folder names; ``names[k]`` has label ``k``."""
        return self.subjects.names

    def __repr__(self) -> str:
        size = "x".join(map(str, self.image_size)) if self.image_size else "as stored"
        return (f"MICCVideos({str(self.root)!r}, frames={len(self)}, subjects={self.n_identities}, size={size}, "
                f"landmarks={self.landmarks is not None}, yaw={self.yaw is not None})")

    def key(self, i: int) -> str:
        """Frame ``i``'s path relative to the root, ``/``-separated (its sidecar key)."""
        return self.paths[i].relative_to(self.root).as_posix()

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames of {self.root}")
        i %= len(self)
        lm = self.landmarks[self.key(i)].clone() if self.landmarks is not None else None
        image, lm = resize_photo(read_image(self.paths[i]), lm, self.image_size)
        sample = {"image": image, "label": self.labels[i].clone(), "condition": self.conditions[i].clone(),
                  "frame": self.frames[i].clone()}
        if lm is not None:
            sample["landmarks2d"] = lm
        if self.yaw is not None:
            sample["yaw_deg"] = torch.tensor(self.yaw[self.key(i)], dtype=torch.float32)
        return sample

    def batch(self, index) -> dict[str, torch.Tensor]:
        """Frames ``index`` ``(B,)`` stacked (keys of a sample with a leading ``B``).

        Raises:
            ValueError: the frames differ in size and no ``image_size`` was given (files named).
        """
        items = [self[int(i)] for i in torch.as_tensor(index).reshape(-1)]
        sizes = {tuple(item["image"].shape) for item in items}
        if len(sizes) > 1:
            raise ValueError(f"{self.root}: frames {_named([str(self.paths[int(i)]) for i in index])} differ in size "
                             f"{sorted(sizes)}; give image_size=(H, W)")
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    def batches(self, batch_size: int = 64, indices=None, progress: bool = False):
        """Yield :meth:`batch` over ``indices`` (default: every frame, in order)."""
        indices = torch.arange(len(self)) if indices is None else torch.as_tensor(indices)
        chunks = torch.split(indices, batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"frames {self.root.name}", unit="batch")
        for chunk in chunks:
            yield self.batch(chunk)

    # ------------------------------------------------------------- scans
    def _subject(self, label: int):
        if not 0 <= label < self.n_identities:
            raise IndexError(f"label {label} out of range [0, {self.n_identities})")
        if label not in self._scans:
            self._scans[label] = self.subjects[label]
        return self._scans[label]

    def scan(self, label: int) -> torch.Tensor:
        """The scan vertices ``(V, 3)`` float32 mm of subject ``label``."""
        return self._subject(label).scan.verts

    def scan_faces(self, label: int) -> torch.Tensor:
        """The scan's triangles ``(F, 3)`` long."""
        return self._subject(label).scan.faces

    def scan_landmarks(self, label: int) -> torch.Tensor:
        """Points on subject ``label``'s scan ``(L, 3)`` float32 mm: the 68 iBUG landmarks, or
        ``L = 1``: the nose tip alone.

        Raises:
            ValueError: the subject folder has no landmarks file, or another number of points.
        """
        sub = self._subject(label)
        folder = self.subjects.subject_dirs[label]
        if sub.landmarks is None:
            raise ValueError(f"{folder}: no {SCAN_LANDMARKS_FILE} (or .npy); the MICC protocol crops the scan "
                             f"around its nose tip: give the 68 iBUG points or the nose tip alone, one 'x y z' "
                             f"line in mm each")
        if sub.landmarks.shape[0] not in SCAN_LANDMARK_COUNTS:
            raise ValueError(f"{folder}: {sub.landmarks.shape[0]} scan landmarks; expected the 68 iBUG points "
                             f"or 1 (the nose tip)")
        return sub.landmarks

    def nose_tip(self, label: int) -> torch.Tensor:
        """The nose tip ``(3,)`` mm on subject ``label``'s scan (iBUG point 30, or the single point)."""
        lm = self.scan_landmarks(label)
        return lm[IBUG68_NOSE_TIP] if lm.shape[0] > 1 else lm[0]


class _YawRecorder:
    """Passes a collection's batches through, keeping each photo's ``yaw_deg``."""

    def __init__(self, collection) -> None:
        self.collection = collection
        self.yaw: list[torch.Tensor] = []

    def batches(self, batch_size: int = 128, progress: bool = False):
        for batch in self.collection.batches(batch_size, progress=progress):
            self.yaw.append(batch["yaw_deg"].detach().cpu())
            yield batch


def export_micc(collection, out_dir, batch_size: int = 128, progress: bool = False) -> dict:
    """Render every frame of a ``micc`` suite into ``out_dir`` in the MICC layout (module docstring).

    Args:
        collection: a ``micc`` suite (:func:`facelab.data.make_suite`), or anything with its
            ``table`` (``label, condition, frame (N,)``), ``condition_names``, ``n_identities``,
            ``model`` (faces, landmarks), ``scan(label) (V, 3)`` mm and ``batches(batch_size)``
            yielding ``image (B, 3, H, W)`` float [0, 1], ``landmarks2d (B, 68, 2)`` px and
            ``yaw_deg (B,)`` in image order.
        out_dir: the folder (created; files already there are overwritten, others kept).
        batch_size: images per render call. progress: a progress bar.

    Returns:
        ``{"out", "subjects", "videos", "frames", "image_size"}`` (``image_size`` ``[H, W]`` px).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("micc", n_identities=2, frames_per_video=1, image_size=16, resolution="quick")
    >>> info = export_micc(s, tempfile.mkdtemp())
    >>> info["subjects"], info["videos"], info["frames"], sorted(p.name for p in Path(info["out"]).iterdir())
    (2, 6, 6, ['landmarks.json', 'subject_01', 'subject_02', 'yaw.json'])
    """
    table = collection.table
    if tuple(collection.condition_names) != MICC_CONDITIONS:
        raise ValueError(f"collection: only the micc suite has videos and scans (conditions "
                         f"{MICC_CONDITIONS}), got conditions {tuple(collection.condition_names)}")
    n = collection.n_identities
    names = [subject_name(k, n) for k in range(n)]
    layout = [(f"{names[k]}/{collection.condition_names[c]}", f + 1)
              for k, c, f in zip(table.label.tolist(), table.condition.tolist(), table.frame.tolist())]
    out = Path(out_dir)
    recorder = _YawRecorder(collection)
    count, size = write_photos(recorder, out, layout, batch_size, progress, key=frame_key)
    write_yaw(out / YAW_FILE, dict(zip((frame_key(*v) for v in layout), torch.cat(recorder.yaw).tolist())))
    morphable = collection.model
    faces = morphable.faces.detach().cpu()
    for k in range(n):
        scan = collection.scan(k).detach().cpu()
        write_mesh(out / names[k] / SCAN_FILE, scan, faces)
        # the truth's landmark vertices; %.9g gives the float32 values back exactly
        lm = morphable.require_landmarks("the scans' landmark files").cpu()
        np.savetxt(out / names[k] / SCAN_LANDMARKS_FILE, scan[lm].numpy(), fmt=FLOAT_FORMAT)
    return {"out": str(out), "subjects": n, "videos": len({v for v, _ in layout}), "frames": count,
            "image_size": size}
