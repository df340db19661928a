"""LFW verification pairs: ``pairs.txt`` and the image folder.

``pairs.txt`` (the official protocol file, also ``pairsDevTest.txt``):

* first line: ``n_folds n_per_half`` (``10 300``), or a single count for the
  one-fold development files (``pairsDevTest.txt``: ``500``);
* then, for each fold, ``n_per_half`` matched lines ``name i j`` followed by
  ``n_per_half`` mismatched lines ``name1 i name2 j``; image numbers are 1-based.

Images live at ``root/<name>/<name>_<%04d>.jpg``. Folds are contiguous blocks of
``2 * n_per_half`` pairs, as the LFW protocol in ``book/07_evaluation.ipynb`` expects.
:func:`find_lfw_image` also accepts ``.png`` in place of ``.jpg`` (facelab's own exports,
:func:`facelab.data.lfw_folder.export_lfw`, are lossless PNG). :func:`write_pairs` writes
the format :func:`read_pairs` reads.

``landmarks.json`` (facelab's sidecar, not part of LFW; :func:`read_landmarks`,
:func:`write_landmarks`): one JSON object mapping each image's path relative to the
image folder, with ``/`` separators (``"Ann_Lee/Ann_Lee_0001.jpg"``), to its 68 iBUG
landmarks as a list of 68 ``[x, y]`` pairs in pixels of that image file: x to the
right, y down, from the image's top-left corner, with the centre of pixel ``(row i,
col j)`` at ``(j + 0.5, i + 0.5)`` (facelab's convention; add 0.5 to the points of a
detector that puts pixel centres on integers, such as dlib)::

    {"Ann_Lee/Ann_Lee_0001.jpg": [[31.5, 60.25], [32.0, 71.5], ...68 points...], ...}

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import torch
from torch.utils.data import Dataset

from facelab.checks import check_positive
from facelab.io._util import existing_dir, existing_file, read_image

LFW_IMAGE_SIZE = (112, 96)  # (H, W) of the SphereFace/CosFace aligned crops
LFW_IMAGE_PATTERN = "{name}/{name}_{index:04d}.jpg"
# Suffixes find_lfw_image tries, in order: the real LFW's JPEG first, then the lossless
# PNG facelab exports (an 8-bit JPEG round trip moves a model's embeddings several times
# more than the 8-bit quantisation alone; see facelab.data.lfw_folder).
LFW_IMAGE_SUFFIXES = (".jpg", ".png")
LFW_LANDMARKS_FILE = "landmarks.json"
N_LANDMARKS = 68  # iBUG-68: the points facelab.data.align takes its five alignment points from


class Pair(NamedTuple):
    """One verification pair: images ``name1_idx1`` and ``name2_idx2`` (1-based), fold number."""

    name1: str
    idx1: int
    name2: str
    idx2: int
    issame: bool
    fold: int


def read_pairs(path) -> list[Pair]:
    """Parse an LFW ``pairs.txt``.

    Args:
        path: the pairs file.

    Returns:
        list of :class:`Pair` in file order; ``fold`` is 0-based.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad header, a malformed line (file and line number named),
            or a pair count that disagrees with the header.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "pairs.txt")
    >>> _ = open(p, "w").write("1\\t1\\nAnn\\t1\\t2\\nAnn\\t1\\tBob\\t3\\n")
    >>> [tuple(q) for q in read_pairs(p)]
    [('Ann', 1, 'Ann', 2, True, 0), ('Ann', 1, 'Bob', 3, False, 0)]
    """
    return [pair for _, pair in read_pairs_with_lines(path)]


def read_pairs_with_lines(path) -> list[tuple[int, Pair]]:
    """:func:`read_pairs`, each pair with its 1-based line number in the file (for error messages).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "pairs.txt")
    >>> _ = open(p, "w").write("1 1\\n\\nAnn 1 2\\nAnn 1 Bob 3\\n")
    >>> [(n, q.issame) for n, q in read_pairs_with_lines(p)]
    [(3, True), (4, False)]
    """
    path = existing_file(path, "LFW pairs file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    lines = [ln.split() for ln in text.splitlines()]
    lines = [(n, ln) for n, ln in enumerate(lines, 1) if ln]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    n_folds, per_half = _header(lines[0][1], path)
    body = lines[1:]
    if len(body) != 2 * n_folds * per_half:
        raise ValueError(f"{path}: header promises {n_folds} x 2 x {per_half} = {2 * n_folds * per_half} pairs, found {len(body)}")
    pairs = []
    for k, (lineno, parts) in enumerate(body):
        fold, within = divmod(k, 2 * per_half)
        matched = within < per_half
        pairs.append((lineno, _pair(parts, matched, fold, path, lineno)))
    return pairs


def write_pairs(path, pairs: Sequence[Pair]) -> Path:
    """Write ``pairs`` as an LFW ``pairs.txt`` that :func:`read_pairs` reads back equal.

    Args:
        path: the file to write (its folder must exist).
        pairs: :class:`Pair` in file order: folds ``0, 1, ...`` contiguous, each holding
            ``n_per_half`` matched pairs then ``n_per_half`` mismatched ones, the same
            ``n_per_half`` in every fold (the LFW layout; ``issame`` must agree with the names).

    Returns:
        ``path`` as a :class:`Path`. The header is ``n_folds n_per_half``; fields are tab
        separated, as in the real file.

    Raises:
        ValueError: ``pairs`` do not follow the layout (the first offending pair named).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "pairs.txt")
    >>> ps = [Pair("Ann", 1, "Ann", 2, True, 0), Pair("Ann", 1, "Bob", 3, False, 0)]
    >>> read_pairs(write_pairs(p, ps)) == ps
    True
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one pair")
    n_folds = max(p.fold for p in pairs) + 1
    per_half, rest = divmod(len(pairs), 2 * n_folds)
    if rest or per_half < 1:
        raise ValueError(f"pairs: {len(pairs)} pairs cannot fill {n_folds} folds of matched + mismatched halves of equal size")
    lines = [f"{n_folds}\t{per_half}"]
    for k, p in enumerate(pairs):
        fold, within = divmod(k, 2 * per_half)
        matched = within < per_half
        if p.fold != fold or p.issame != matched or (p.name1 == p.name2) != matched:
            want = "matched (same name, issame True)" if matched else "mismatched (two names, issame False)"
            raise ValueError(f"pairs[{k}]: expected a {want} pair of fold {fold}, got {tuple(p)}")
        if min(p.idx1, p.idx2) < 1:
            raise ValueError(f"pairs[{k}]: image numbers start at 1, got {tuple(p)}")
        for name in (p.name1, p.name2):
            if not name or any(ch.isspace() for ch in name):
                raise ValueError(f"pairs[{k}]: a name must be non-empty without white space, got {name!r}")
        lines.append(format_pair(p))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def format_pair(pair: Pair, sep: str = "\t") -> str:
    """``pair`` as its pairs-file line: ``name i j`` (matched) or ``name1 i name2 j``.

    >>> format_pair(Pair("Ann", 1, "Bob", 3, False, 0), " ")
    'Ann 1 Bob 3'
    """
    p = pair
    fields = (p.name1, p.idx1, p.idx2) if p.issame else (p.name1, p.idx1, p.name2, p.idx2)
    return sep.join(str(f) for f in fields)


def _header(parts: list[str], path: Path) -> tuple[int, int]:
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{path}:1: header must be 'n_folds n_per_half' integers, got {' '.join(parts)!r}") from None
    if len(nums) == 1:
        nums = [1, nums[0]]
    if len(nums) != 2 or min(nums) < 1:
        raise ValueError(f"{path}:1: header must be 'n_folds n_per_half' (positive), got {' '.join(parts)!r}")
    return nums[0], nums[1]


def _pair(parts: list[str], matched: bool, fold: int, path: Path, lineno: int) -> Pair:
    want = 3 if matched else 4
    if len(parts) != want:
        kind = "matched 'name i j'" if matched else "mismatched 'name1 i name2 j'"
        raise ValueError(f"{path}:{lineno}: expected a {kind} line, got {' '.join(parts)!r}")
    try:
        if matched:
            pair = Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold)
        else:
            pair = Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: image numbers must be integers, got {' '.join(parts)!r}") from None
    if pair.idx1 < 1 or pair.idx2 < 1:  # LFW numbers images from 1; 0 or -3 would name no file
        raise ValueError(f"{path}:{lineno}: image numbers must be >= 1, got {' '.join(parts)!r}")
    return pair


def lfw_image_path(root, name: str, index: int, suffix: str = ".jpg") -> Path:
    """``root/name/name_%04d.jpg`` (or another ``suffix``).

    >>> lfw_image_path("lfw", "Ann_Lee", 3).as_posix(), lfw_image_path("lfw", "Ann_Lee", 3, ".png").name
    ('lfw/Ann_Lee/Ann_Lee_0003.jpg', 'Ann_Lee_0003.png')
    """
    path = Path(root) / LFW_IMAGE_PATTERN.format(name=name, index=index)
    return path if suffix == ".jpg" else path.with_suffix(suffix)


def find_lfw_image(root, name: str, index: int) -> Path:
    """The image file of ``name``'s ``index``-th photo: the first of
    :data:`LFW_IMAGE_SUFFIXES` (``.jpg``, ``.png``) that exists, else the ``.jpg`` path
    (so that an error about the missing file names the file LFW would have).

    >>> find_lfw_image("nowhere", "Ann_Lee", 3).name
    'Ann_Lee_0003.jpg'
    """
    for suffix in LFW_IMAGE_SUFFIXES:
        path = lfw_image_path(root, name, index, suffix)
        if path.is_file():
            return path
    return lfw_image_path(root, name, index)


def read_landmarks(path) -> dict[str, torch.Tensor]:
    """Read a ``landmarks.json`` sidecar (format in the module docstring).

    Returns:
        ``{relative image path: (68, 2) float32 tensor}``, pixels of that image.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object, or an entry that is not 68 finite ``[x, y]``
            pairs (file and image key named).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "landmarks.json")
    >>> _ = write_landmarks(p, {"Ann/Ann_0001.jpg": torch.full((68, 2), 2.5)})
    >>> read_landmarks(p)["Ann/Ann_0001.jpg"].shape
    torch.Size([68, 2])
    """
    path = existing_file(path, "landmarks file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON landmarks file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping image paths to {N_LANDMARKS} [x, y] points, "
                         f"got a {type(data).__name__}")
    out = {}
    for key, points in data.items():
        ok = (isinstance(points, list) and len(points) == N_LANDMARKS
              and all(isinstance(pt, list) and len(pt) == 2 for pt in points)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for pt in points for v in pt))
        if not ok:
            raise ValueError(f"{path}: entry {key!r} must be a list of {N_LANDMARKS} [x, y] pairs of finite numbers (px)")
        out[key] = torch.tensor(points, dtype=torch.float32)
    return out


def write_landmarks(path, landmarks: Mapping[str, object]) -> Path:
    """Write a ``landmarks.json`` sidecar (format in the module docstring).

    Args:
        path: the file to write.
        landmarks: ``{relative image path: (68, 2) px}`` (tensor, array or nested list).
            Coordinates are written with full float precision (float32 values read back
            bit-equal).

    Returns:
        ``path`` as a :class:`Path`.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "landmarks.json")
    >>> lm = torch.rand(68, 2) * 64
    >>> torch.equal(read_landmarks(write_landmarks(p, {"a/a_0001.png": lm}))["a/a_0001.png"], lm)
    True
    """
    out = {}
    for key, points in landmarks.items():
        pts = torch.as_tensor(points, dtype=torch.float64)
        if pts.shape != (N_LANDMARKS, 2) or not torch.isfinite(pts).all():
            raise ValueError(f"landmarks[{key!r}]: expected {N_LANDMARKS} finite [x, y] points, got shape {tuple(pts.shape)}")
        out[str(key)] = pts.tolist()
    path = Path(path)
    path.write_text(json.dumps(out))
    return path


class LFWPairs(Dataset):
    """LFW verification pairs as a ``torch.utils.data.Dataset``.

    Item ``i`` is ``(image1, image2, issame)``: two ``(3, H, W)`` float32 tensors in
    [0, 1] (resized to ``image_size``, then passed through ``transform`` if given)
    and a bool. ``self.pairs`` holds the :class:`Pair` list and ``self.folds`` the
    ``(N,)`` long fold index of each pair.

    Args:
        root: the image folder (``root/name/name_0001.jpg``, or ``.png``: :func:`find_lfw_image`).
        pairs_path: ``pairs.txt``.
        image_size: ``(H, W)`` pixels; default ``(112, 96)``.
        transform: optional callable on each image tensor.
        check_files: verify at construction that every image exists (one ``stat``
            per image); a missing image raises ``FileNotFoundError`` naming it.
    """

    def __init__(self, root, pairs_path, image_size: tuple[int, int] = LFW_IMAGE_SIZE, transform=None,
                 check_files: bool = True):
        self.root = existing_dir(root, "LFW image folder")
        if len(image_size) != 2:
            raise ValueError(f"image_size: expected (H, W), got {image_size!r}")
        for v in image_size:
            check_positive(v, "image_size", integer=True)
        self.image_size = tuple(image_size)
        self.transform = transform
        self.pairs = read_pairs(pairs_path)
        self.folds = torch.tensor([p.fold for p in self.pairs], dtype=torch.long)
        if check_files:
            for p in self.pairs:
                for name, idx in ((p.name1, p.idx1), (p.name2, p.idx2)):
                    f = find_lfw_image(self.root, name, idx)
                    if not f.is_file():
                        raise FileNotFoundError(f"{f}: LFW image listed in {pairs_path} is missing")

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, name: str, idx: int) -> torch.Tensor:
        img = read_image(find_lfw_image(self.root, name, idx), self.image_size)
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, i: int):
        p = self.pairs[i]
        return self._image(p.name1, p.idx1), self._image(p.name2, p.idx2), p.issame

    @property
    def issame(self) -> torch.Tensor:
        """``(N,)`` bool: whether each pair shows the same person."""
        return torch.tensor([p.issame for p in self.pairs], dtype=torch.bool)
