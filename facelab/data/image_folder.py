"""Identity folders of photos (the CASIA-WebFace / VGGFace2 layout) as a Dataset, and a suite written as one.

The layout, one folder per person, any file names::

    ROOT/landmarks.json                     optional: 68 landmarks per image (below)
    ROOT/0000045/001.jpg                    CASIA-WebFace
    ROOT/n000002/0001_01.jpg                VGGFace2
    ROOT/Synth_Person_0007/Synth_Person_0007_0001.png    facelab synth webface --format imagefolder

* Identities: the sub-folders of ``ROOT`` (hidden ones, starting with ``.``, left out), in
  sorted name order; label ``k`` is the ``k``-th kept folder (:attr:`ImageFolderIdentities.identities`).
* Images: the files of an identity folder ending in ``.jpg``, ``.jpeg`` or ``.png`` (any
  case), sorted by name; other files and nested folders are left out.
* ``landmarks.json``: the sidecar of :func:`facelab.io.write_landmarks` (also LFW's): the
  image's path relative to ``ROOT`` with ``/`` separators -> its 68 iBUG landmarks in pixels of
  that file, the centre of pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``.

:func:`export_image_folder` (``facelab synth SUITE --format imagefolder --out ROOT``) writes a
SynthFaces suite in this layout: 8-bit PNG photos named as :func:`export_lfw` names them
(``Synth_Person_%04d``, images numbered from 1) and the landmarks of a perfect detector.
``facelab fit ROOT`` fits one 3DMM identity per folder to all its photos (Liu et al.'s
training targets), from the landmarks.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from facelab.checks import check_choice, check_image_size
from facelab.data.lfw_folder import lfw_layout, resize_photo, write_photos
from facelab.io import read_image, read_landmarks
from facelab.io._util import existing_dir
from facelab.io.lfw import LFW_LANDMARKS_FILE

__all__ = ["ImageFolderIdentities", "export_image_folder", "IMAGE_SUFFIXES"]

#: file endings read as photos (compared in lower case)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: what an unreadable photo does: leave it out (counted, warned) or stop
ON_BAD_IMAGE = ("raise", "skip")
#: what an identity with too few photos does: stop, or leave the folder out (counted, warned)
SMALL_IDENTITIES = ("raise", "drop")
#: how photos are checked while indexing: the file header (format and size), or a full decode
CHECKS = ("header", "decode")
#: recognition training (a softmax over identities, a pair loss) needs two photos of a person at least
DEFAULT_MIN_IMAGES = 2
#: how many file names an error or warning lists
MAX_NAMED = 5
FOLDER_FORMAT = "imagefolder"


def _probe(path: Path, decode: bool) -> tuple[int, int]:
    """``(H, W)`` px of an image file; ``ValueError`` naming it when PIL cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if decode:
                im.load()  # a truncated file passes the header check and fails here
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    return h, w


def _named(items: list[str]) -> str:
    more = f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else ""
    return ", ".join(items[:MAX_NAMED]) + more


class ImageFolderIdentities(Dataset):
    """Photos in one folder per identity (CASIA-WebFace / VGGFace2 layout, module docstring).

    Each sample is a dict with the keys of a SynthFaces sample that such a folder can give
    (:class:`facelab.data.PhotoCollection`); truth the folder does not hold is absent, not zero:

    ====================  ====================  ============================================
    key                   shape                 meaning
    ====================  ====================  ============================================
    image                 (3, H, W) float [0,1] the photo (resized to ``image_size`` if given)
    label                 () long               identity label, 0..K-1 in sorted folder order
    landmarks2d           (68, 2) float, px     from the sidecar, scaled with the resize
    landmarks_inside      () bool               all 68 points within the image
    ====================  ====================  ============================================

    The last two only with a landmarks sidecar. Points outside the image (a detector's guess
    for a cut-off chin) are kept and flagged: ``landmarks_inside`` is False and the image's
    key is listed in :attr:`landmarks_outside`; no warning is raised.

    Args:
        root: the folder of identity folders.
        image_size: ``(H, W)`` px (or an int: square) to resize every photo to (bilinear,
            antialiased; landmarks scaled by the same factors); None keeps each file's size
            (then :meth:`batch` needs photos of one size).
        landmarks_path: a ``landmarks.json`` sidecar (default ``root/landmarks.json`` when it
            exists; ``False``: none). Every kept image needs an entry.
        on_bad_image: ``"raise"``: an unreadable photo stops indexing with an error naming
            it; ``"skip"``: it is left out, listed in :attr:`skipped` and counted in a warning.
        min_images_per_identity: fewest photos (after skipping) an identity folder needs.
        small_identities: ``"raise"``: a folder with fewer stops indexing with an error naming
            it; ``"drop"``: such folders are left out (before labels are given), listed in
            :attr:`dropped_identities` and counted in a warning.
        check: ``"header"`` (default; reads each file's header: catches non-images and empty
            files, quick) or ``"decode"`` (decodes every photo: also catches truncated files,
            slower). A file that passes the header check but cannot be decoded raises a
            ``ValueError`` naming it when the sample is read.
        progress: a progress bar while indexing (useful for hundreds of thousands of photos).

    Attributes:
        identities: ``K`` folder names; ``identities[k]`` has label ``k``.
        paths: ``N`` image files, identity-major. labels: ``(N,)`` long.
        sizes: ``N`` ``(H, W)`` px of the files. landmarks: ``{key: (68, 2) px}`` or None.
        skipped: ``(path, reason)`` of each unreadable photo left out.
        dropped_identities: folder names left out for having too few photos.
        landmarks_outside: keys of the images whose landmarks leave the image.

    Raises:
        FileNotFoundError: no such folder, or no such sidecar.
        ValueError: no identity folders with photos, an unreadable photo or small identity
            (in ``"raise"`` mode), a malformed sidecar, or images without landmarks
            (the message names the files).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> root = export_image_folder(make_suite("webface", n_identities=2, images_per_identity=2, image_size=16,
    ...                                       resolution="quick"), tempfile.mkdtemp())["out"]
    >>> ds = ImageFolderIdentities(root, image_size=32)
    >>> len(ds), ds.identities, ds.labels.tolist()
    (4, ['Synth_Person_0000', 'Synth_Person_0001'], [0, 0, 1, 1])
    >>> s = ds[2]; s["image"].shape, int(s["label"]), s["landmarks2d"].shape, bool(s["landmarks_inside"])
    (torch.Size([3, 32, 32]), 1, torch.Size([68, 2]), True)
    """

    def __init__(self, root, image_size=None, landmarks_path=None, on_bad_image: str = "raise",
                 min_images_per_identity: int = DEFAULT_MIN_IMAGES, small_identities: str = "raise",
                 check: str = "header", progress: bool = False) -> None:
        self.root = existing_dir(root, "identity folder")
        self.image_size = check_image_size(image_size, "image_size", minimum=1) if image_size is not None else None
        check_choice(on_bad_image, "on_bad_image", ON_BAD_IMAGE)
        check_choice(small_identities, "small_identities", SMALL_IDENTITIES)
        check_choice(check, "check", CHECKS)
        if isinstance(min_images_per_identity, bool) or not isinstance(min_images_per_identity, int) \
                or min_images_per_identity < 1:
            raise ValueError(f"min_images_per_identity: expected an int >= 1, got {min_images_per_identity!r}")
        self.min_images_per_identity = min_images_per_identity
        folders = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise ValueError(f"{self.root}: no identity folders (expected {self.root}/<identity>/<image>.jpg)")

        found = {d.name: sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                                and f.suffix.lower() in IMAGE_SUFFIXES) for d in folders}
        files = [f for name in found for f in found[name]]
        if progress:
            from tqdm.auto import tqdm

            files = tqdm(files, desc=f"index {self.root.name}", unit="image")
        self.skipped: list[tuple[Path, str]] = []
        size_of: dict[Path, tuple[int, int]] = {}
        for f in files:
            try:
                size_of[f] = _probe(f, decode=check == "decode")
            except ValueError as err:
                if on_bad_image == "raise":
                    raise ValueError(f"{err}; on_bad_image='skip' leaves such files out") from None
                self.skipped.append((f, str(err)))
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} unreadable image(s): "
                          f"{_named([str(p) for p, _ in self.skipped])}", stacklevel=2)

        kept = {name: [f for f in fs if f in size_of] for name, fs in found.items()}
        small = [name for name, fs in kept.items() if len(fs) < min_images_per_identity]
        if small and small_identities == "raise":
            detail = _named([f"{self.root / n} ({len(kept[n])})" for n in small])
            raise ValueError(f"{detail}: {len(small)} identity folder(s) with fewer than min_images_per_identity="
                             f"{min_images_per_identity} readable images (count in brackets); "
                             f"small_identities='drop' leaves them out")
        self.dropped_identities = small
        if small:
            warnings.warn(f"{self.root}: dropped {len(small)} identity folder(s) with fewer than "
                          f"{min_images_per_identity} readable images: {_named(small)}", stacklevel=2)
        self.identities = [name for name in kept if name not in set(small)]
        if not self.identities:
            raise ValueError(f"{self.root}: no identity folder holds {min_images_per_identity} readable "
                             f"image(s) ({', '.join(IMAGE_SUFFIXES)})")
        self.paths = [f for name in self.identities for f in kept[name]]
        self.labels = torch.tensor([k for k, name in enumerate(self.identities) for _ in kept[name]], dtype=torch.long)
        self.sizes = [size_of[f] for f in self.paths]
        self.landmarks_path, self.landmarks = self._read_landmarks(landmarks_path)
        self._inside = [self._landmarks_inside(i) for i in range(len(self))]
        self.landmarks_outside = [self.key(i) for i in range(len(self)) if not self._inside[i]]

    def _read_landmarks(self, landmarks_path):
        if landmarks_path is False:
            return None, None
        if landmarks_path is None:
            landmarks_path = self.root / LFW_LANDMARKS_FILE
            if not landmarks_path.is_file():
                return None, None
        landmarks_path = Path(landmarks_path)
        table = read_landmarks(landmarks_path)
        missing = [self.key(i) for i in range(len(self)) if self.key(i) not in table]
        if missing:
            example = next(iter(table), None)
            raise ValueError(f"{landmarks_path}: no landmarks for {len(missing)} of {len(self)} images: "
                             f"{_named(missing)} (keys are paths relative to {self.root} with '/', "
                             f"such as {missing[0]!r}; the file's first key is {example!r})")
        return landmarks_path, {self.key(i): table[self.key(i)] for i in range(len(self))}

    def _landmarks_inside(self, i: int) -> bool:
        if self.landmarks is None:
            return True
        lm, (H, W) = self.landmarks[self.key(i)], self.sizes[i]
        # pixel centres at j + 0.5: the image covers [0, W] x [0, H]
        return bool(((lm >= 0) & (lm <= torch.tensor([float(W), float(H)]))).all())

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_identities(self) -> int:
        return len(self.identities)

    def __repr__(self) -> str:
        size = "x".join(map(str, self.image_size)) if self.image_size else "as stored"
        return (f"ImageFolderIdentities({str(self.root)!r}, images={len(self)}, identities={self.n_identities}, "
                f"size={size}, landmarks={self.landmarks is not None})")

    def key(self, i: int) -> str:
        """Image ``i``'s path relative to the folder, ``/``-separated (its ``landmarks.json`` key)."""
        return self.paths[i].relative_to(self.root).as_posix()

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images of {self.root}")
        i %= len(self)
        lm = self.landmarks[self.key(i)].clone() if self.landmarks is not None else None
        image, lm = resize_photo(read_image(self.paths[i]), lm, self.image_size)
        sample = {"image": image, "label": self.labels[i].clone()}
        if lm is not None:
            sample["landmarks2d"] = lm
            sample["landmarks_inside"] = torch.tensor(self._inside[i])
        return sample

    def batch(self, index) -> dict[str, torch.Tensor]:
        """Samples ``index`` ``(B,)`` stacked: ``image (B, 3, H, W)``, ``label (B,)`` and, with a
        sidecar, ``landmarks2d (B, 68, 2)`` px and ``landmarks_inside (B,)``.

        Raises:
            ValueError: the photos differ in size and no ``image_size`` was given (files named).
        """
        index = [int(i) for i in torch.as_tensor(index).reshape(-1)]
        if self.image_size is None:
            sizes = {self.sizes[i] for i in index}
            if len(sizes) > 1:
                a = next(i for i in index if self.sizes[i] != self.sizes[index[0]])
                raise ValueError(f"{self.paths[index[0]]} is {self.sizes[index[0]]} px, {self.paths[a]} "
                                 f"{self.sizes[a]} px (H, W): give image_size to batch photos of different sizes")
        items = [self[i] for i in index]
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    def require_landmarks(self, what: str) -> None:
        """Raise a ``ValueError`` saying that ``what`` needs the landmarks sidecar, if there is none."""
        if self.landmarks is None:
            raise ValueError(f"{self.root}: {what} needs 68 landmarks per photo, and the folder has no "
                             f"{LFW_LANDMARKS_FILE} (the format of facelab.io.write_landmarks: relative image path "
                             f"-> 68 [x, y] px). A 68-point detector gives them, such as dlib's in "
                             f"facelab.apps.photo.detect_faces (pip install 'facelab[photo]')")

    def describe(self) -> dict:
        """What defines the samples, JSON-ready: format, identity names, ``image_size``, landmarks or not.

        >>> import tempfile
        >>> from facelab.data import make_suite
        >>> root = export_image_folder(make_suite("webface", n_identities=2, images_per_identity=2, image_size=16,
        ...                                       resolution="quick"), tempfile.mkdtemp())["out"]
        >>> ImageFolderIdentities(root).describe()["identities"]
        ['Synth_Person_0000', 'Synth_Person_0001']
        """
        return {"format": FOLDER_FORMAT, "identities": list(self.identities),
                "image_size": list(self.image_size) if self.image_size else None,
                "landmarks": self.landmarks is not None}


def export_image_folder(collection, out_dir, batch_size: int = 128, progress: bool = False) -> dict:
    """Render every image of a suite into ``out_dir`` in the identity-folder layout (module docstring).

    Args:
        collection: a suite (:func:`facelab.data.make_suite`), or anything with its ``table``
            (``label (N,)``), ``config.n_identities`` and ``batches(batch_size)`` yielding
            ``image (B, 3, H, W)`` float [0, 1] and ``landmarks2d (B, 68, 2)`` px in image order.
        out_dir: the folder (created; files already there are overwritten, others kept).
        batch_size: images per render call. progress: a progress bar.

    Returns:
        ``{"out", "images", "identities", "image_size"}`` (``image_size`` ``[H, W]`` px).
        Suite label ``k`` is the folder ``Synth_Person_%04d % k``, so reading the folder back
        with :class:`ImageFolderIdentities` gives the suite's labels when every identity has photos.

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("webface", n_identities=3, images_per_identity=2, image_size=16, resolution="quick")
    >>> info = export_image_folder(s, tempfile.mkdtemp())
    >>> info["images"], info["identities"], sorted(p.name for p in Path(info["out"]).iterdir())
    (6, 3, ['Synth_Person_0000', 'Synth_Person_0001', 'Synth_Person_0002', 'landmarks.json'])
    """
    layout = lfw_layout(collection.table.label, collection.config.n_identities)
    out = Path(out_dir)
    n, size = write_photos(collection, out, layout, batch_size, progress)
    return {"out": str(out), "images": n, "identities": len({name for name, _ in layout}), "image_size": size}
