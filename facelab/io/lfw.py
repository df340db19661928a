"""LFW verification pairs: ``pairs.txt`` and the image folder.

``pairs.txt`` (the official protocol file, also ``pairsDevTest.txt``):

* first line: ``n_folds n_per_half`` (``10 300``), or a single count for the
  one-fold development files (``pairsDevTest.txt``: ``500``);
* then, for each fold, ``n_per_half`` matched lines ``name i j`` followed by
  ``n_per_half`` mismatched lines ``name1 i name2 j``; image numbers are 1-based.

Images live at ``root/<name>/<name>_<%04d>.jpg``. Folds are contiguous blocks of
``2 * n_per_half`` pairs, as the LFW protocol in ``book/07_evaluation.ipynb`` expects.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from facelab.checks import check_positive
from facelab.io._util import existing_dir, existing_file, read_image

LFW_IMAGE_SIZE = (112, 96)  # (H, W) of the SphereFace/CosFace aligned crops
LFW_IMAGE_PATTERN = "{name}/{name}_{index:04d}.jpg"


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
        pairs.append(_pair(parts, matched, fold, path, lineno))
    return pairs


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


def lfw_image_path(root, name: str, index: int) -> Path:
    """``root/name/name_%04d.jpg``.

    >>> lfw_image_path("lfw", "Ann_Lee", 3).as_posix()
    'lfw/Ann_Lee/Ann_Lee_0003.jpg'
    """
    return Path(root) / LFW_IMAGE_PATTERN.format(name=name, index=index)


class LFWPairs(Dataset):
    """LFW verification pairs as a ``torch.utils.data.Dataset``.

    Item ``i`` is ``(image1, image2, issame)``: two ``(3, H, W)`` float32 tensors in
    [0, 1] (resized to ``image_size``, then passed through ``transform`` if given)
    and a bool. ``self.pairs`` holds the :class:`Pair` list and ``self.folds`` the
    ``(N,)`` long fold index of each pair.

    Args:
        root: the image folder (``root/name/name_0001.jpg``).
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
                    f = lfw_image_path(self.root, name, idx)
                    if not f.is_file():
                        raise FileNotFoundError(f"{f}: LFW image listed in {pairs_path} is missing")

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, name: str, idx: int) -> torch.Tensor:
        img = read_image(lfw_image_path(self.root, name, idx), self.image_size)
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, i: int):
        p = self.pairs[i]
        return self._image(p.name1, p.idx1), self._image(p.name2, p.idx2), p.issame

    @property
    def issame(self) -> torch.Tensor:
        """``(N,)`` bool: whether each pair shows the same person."""
        return torch.tensor([p.issame for p in self.pairs], dtype=torch.bool)
