"""The LFW-style suite as a folder in the real LFW layout, and such a folder read back.

:func:`export_lfw` (``facelab synth lfw --format lfw --out ROOT``) writes::

    ROOT/pairs.txt                                   the suite's pairs, LFW's format
    ROOT/landmarks.json                              68 landmarks per image (px)
    ROOT/Synth_Person_0007/Synth_Person_0007_0001.png
    ROOT/Synth_Person_0007/Synth_Person_0007_0002.png
    ...

* Names: identity label ``k`` of the suite is the person ``Synth_Person_%04d % k`` (more
  digits when the suite has more than 10,000 identities). A person's images are numbered
  from 1 in the suite's image order.
* ``pairs.txt``: :func:`facelab.io.write_pairs`: header ``n_folds n_per_half``, then per fold
  the suite's matched pairs (``name n1 n2``) followed by its mismatched pairs
  (``name1 n1 name2 n2``), all in the suite's pair order.
* ``landmarks.json``: :func:`facelab.io.write_landmarks`: relative image path -> the image's
  68 projected iBUG landmarks (a perfect detector), facelab's pixel convention (the centre
  of pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``).
* Images: 8-bit **PNG**, not LFW's JPEG. PNG stores the 8-bit photo exactly, so a folder
  scored with :func:`facelab.metrics.lfw_folder.score_lfw_folder` gives the very embeddings
  the suite path gives on the same 8-bit photos (:class:`StoredSuite`), and the equality
  check is exact. A JPEG round trip, even at quality 100 without chroma subsampling, moved the
  committed ``liu2018-quick`` model's embeddings 3 to 4 times more than the 8-bit
  quantisation alone (quality 95: about 10 times) and flipped more pairs. facelab's LFW
  readers (:func:`facelab.io.find_lfw_image`) accept ``.jpg`` and ``.png`` alike.

8-bit storage is not free: the suite path scores the renderer's float photos, and rounding
them to 8 bits flips a few pairs of a model as small as ``liu2018-quick`` (0 to 4 of 60 to
600 pairs measured: within about 1.7 points on 60 pairs, 0.7 points on 300 or more).

:class:`LFWFolder` reads any pairs file over such a folder (or over the real LFW): which
images, where, with their landmarks, and errors that name the file and the pairs line.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelab.io import Pair, find_lfw_image, format_pair, read_image, read_landmarks, read_pairs_with_lines, write_landmarks, write_pairs
from facelab.io._util import existing_dir
from facelab.io.lfw import LFW_LANDMARKS_FILE

PERSON_PREFIX = "Synth_Person_"
MIN_NAME_DIGITS = 4  # as LFW's image numbers; more digits only when the suite needs them
EXPORT_SUFFIX = ".png"  # lossless: see the module docstring
PAIRS_FILE = "pairs.txt"
PIXEL_LEVELS = 255  # 8-bit images: values k / 255
#: ``LFWFolder(landmarks_path=CENTRE)``: no sidecar, the fixed centre template for every image
CENTRE = "centre"
#: what an image missing from the sidecar gets: an error, or the centre template (after detection)
MISSING_LANDMARKS = ("raise", CENTRE)
#: The 68 iBUG landmarks of the fixed centre crop, ``(x, y)`` relative to the image centre in units
#: of the shorter image side (y down). Why these: real LFW comes without landmarks, and its
#: deep-funnelled 250x250 images hold one roughly centred, upright face, so a common pipeline crops
#: a fixed central box instead of detecting. A model that cuts its input from landmarks (Liu et al.'s
#: five-point alignment) then needs landmarks that place that box; these are the mean SynthFaces
#: face's landmarks (``build_synthfaces(SynthFacesConfig())``) projected frontally, framed as the
#: SynthFaces suites frame a face (:data:`facelab.data.synth.FACE_FILL`: brow-to-chin height 0.52 of
#: the shorter side, centred as ``PhotoCollection`` centres it), so the crop is the one a frontal,
#: centred suite photo gets (tests/test_lfw_landmarks.py re-derives them). On real LFW the face is
#: framed somewhat differently and turned faces are not followed: a fixed crop, not a detection.
CENTRE_TEMPLATE = (
    (-0.2962, -0.0970), (-0.2962, -0.0295), (-0.2963, 0.0353), (-0.2940, 0.1037), (-0.2494, 0.2331),
    (-0.2427, 0.2611), (-0.1998, 0.2908), (-0.1137, 0.3224), (0.0000, 0.3224), (0.1137, 0.3224),
    (0.1998, 0.2908), (0.2427, 0.2611), (0.2494, 0.2331), (0.2940, 0.1037), (0.2963, 0.0353),
    (0.2962, -0.0295), (0.2962, -0.0970),                                                      # jaw 0-16
    (-0.1968, -0.1733), (-0.1788, -0.1853), (-0.1466, -0.1976), (-0.1016, -0.1976), (-0.0680, -0.1853),
    (0.0680, -0.1853), (0.1016, -0.1976), (0.1466, -0.1976), (0.1788, -0.1853), (0.1968, -0.1733),  # brows
    (0.0000, -0.1283), (0.0000, -0.0772), (0.0000, -0.0300), (0.0000, 0.0161),                 # nose bridge
    (-0.0488, 0.0536), (-0.0234, 0.0632), (0.0000, 0.0632), (0.0234, 0.0632), (0.0488, 0.0536),  # nostrils
    (-0.1746, -0.1072), (-0.1435, -0.1283), (-0.1098, -0.1283), (-0.0749, -0.1072), (-0.1114, -0.0970),
    (-0.1465, -0.0970),                                                                          # right eye
    (0.0749, -0.1072), (0.1098, -0.1283), (0.1435, -0.1283), (0.1746, -0.1072), (0.1465, -0.0970),
    (0.1114, -0.0970),                                                                           # left eye
    (-0.1017, 0.1462), (-0.0714, 0.1241), (-0.0235, 0.1134), (0.0000, 0.1240), (0.0235, 0.1134),
    (0.0714, 0.1241), (0.1017, 0.1462), (0.0811, 0.1693), (0.0461, 0.1813), (0.0000, 0.1813),
    (-0.0461, 0.1813), (-0.0811, 0.1693),                                                      # outer lips
    (-0.0903, 0.1462), (-0.0338, 0.1461), (0.0000, 0.1460), (0.0338, 0.1461), (0.0903, 0.1462),
    (0.0344, 0.1575), (0.0000, 0.1575), (-0.0344, 0.1575),                                     # inner lips
)


def person_name(label: int, n_identities: int) -> str:
    """The LFW-style person name of suite identity ``label`` (of ``n_identities``).

    >>> person_name(7, 150), person_name(7, 20_000)
    ('Synth_Person_0007', 'Synth_Person_00007')
    """
    width = max(MIN_NAME_DIGITS, len(str(max(n_identities - 1, 0))))
    return f"{PERSON_PREFIX}{int(label):0{width}d}"


def lfw_layout(labels, n_identities: int) -> list[tuple[str, int]]:
    """Per image, in suite order, its LFW ``(name, number)``; numbers start at 1 per person.

    Args:
        labels: ``(N,)`` int, each image's identity label.
        n_identities: the suite's number of identities (sets the names' width).

    >>> lfw_layout(torch.tensor([3, 1, 3]), 5)
    [('Synth_Person_0003', 1), ('Synth_Person_0001', 1), ('Synth_Person_0003', 2)]
    """
    seen: dict[int, int] = {}
    out = []
    for label in torch.as_tensor(labels).tolist():
        seen[label] = seen.get(label, 0) + 1
        out.append((person_name(label, n_identities), seen[label]))
    return out


def image_key(name: str, number: int, suffix: str = EXPORT_SUFFIX) -> str:
    """The path of an image relative to the folder, ``/``-separated: the ``landmarks.json`` key.

    >>> image_key("Synth_Person_0003", 2)
    'Synth_Person_0003/Synth_Person_0003_0002.png'
    """
    return f"{name}/{name}_{number:04d}{suffix}"


def suite_pairs(table, layout: list[tuple[str, int]]) -> list[Pair]:
    """The pairs of an LFW-style suite's :class:`~facelab.data.ImageTable` as LFW :class:`Pair` rows.

    Args:
        table: the suite's table (``pairs (P, 2)`` image indices, ``issame (P,)``, ``fold (P,)``).
        layout: :func:`lfw_layout` of its images.

    >>> from facelab.data import SuiteConfig, build_table
    >>> t = build_table(SuiteConfig(suite="lfw", n_identities=4, pairs_per_fold=1, n_folds=2))
    >>> [p.issame for p in suite_pairs(t, lfw_layout(t.label, 4))]
    [True, False, True, False]
    """
    if table.pairs is None:
        raise ValueError("table: has no pairs; only the lfw suite can be written in the LFW layout")
    out = []
    for (i, j), same, fold in zip(table.pairs.tolist(), table.issame.tolist(), table.fold.tolist()):
        (n1, k1), (n2, k2) = layout[i], layout[j]
        out.append(Pair(n1, k1, n2, k2, bool(same), int(fold)))
    return out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Photos as the 8-bit pixels an image file stores.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1] (values outside are clamped).

    Returns:
        ``(B, H, W, 3)`` uint8 array, ``round(255 * x)``.

    >>> to_uint8(torch.tensor([0.0, 0.5, 1.0]).reshape(1, 3, 1, 1)).tolist()
    [[[[0, 128, 255]]]]
    """
    img = (images.detach().clamp(0, 1) * PIXEL_LEVELS).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()


def as_stored(images: torch.Tensor) -> torch.Tensor:
    """``images (B, 3, H, W)`` float [0, 1] rounded to 8 bits, as read back from a PNG: same shape,
    bit-equal to :func:`facelab.io.read_image` of the file (``k / 255`` in float32).

    >>> bool(as_stored(torch.full((1, 3, 1, 1), 0.5))[0, 0, 0, 0] == torch.tensor(128.0) / 255)
    True
    """
    return images.detach().clamp(0, 1).mul(PIXEL_LEVELS).round().div(PIXEL_LEVELS)


class StoredSuite:
    """A suite whose batches carry the 8-bit photos :func:`export_lfw` stores (:func:`as_stored`),
    for the exact reference score of an exported folder. Other attributes come from the suite.

    >>> from facelab.data import make_suite
    >>> s = StoredSuite(make_suite("lfw", n_identities=4, pairs_per_fold=1, n_folds=2, image_size=16, resolution="quick"))
    >>> b = next(s.batches(8)); bool((b["image"] * 255 - (b["image"] * 255).round()).abs().max() < 1e-4), len(s)
    (True, 8)
    """

    def __init__(self, suite) -> None:
        self.suite = suite

    def batches(self, batch_size: int = 64, indices=None, progress: bool = False):
        for batch in self.suite.batches(batch_size, indices, progress):
            yield {**batch, "image": as_stored(batch["image"])}

    def __getattr__(self, name: str):
        return getattr(self.__dict__["suite"], name)

    def __len__(self) -> int:
        return len(self.suite)


def write_photos(collection, out_dir, layout: list[tuple[str, int]], batch_size: int = 128,
                 progress: bool = False, key=image_key) -> tuple[int, list[int] | None]:
    """Render a collection's photos as 8-bit PNGs at ``out_dir/NAME/NAME_0001.png`` (:func:`image_key`)
    and their landmarks as ``out_dir/landmarks.json`` (:func:`facelab.io.write_landmarks`).

    Args:
        collection: anything whose ``batches(batch_size, progress=...)`` yields ``image
            (B, 3, H, W)`` float [0, 1] and ``landmarks2d (B, 68, 2)`` px, in image order.
        out_dir: the folder (created; files already there are overwritten, others kept).
        layout: per image, its ``(name, number)`` (:func:`lfw_layout`).
        batch_size: images per render call. progress: a progress bar.
        key: ``(name, number) -> relative path`` of each file and its ``landmarks.json`` key
            (default :func:`image_key`; sub-folders are created).

    Returns:
        ``(images written, [H, W] px of the last one)``.

    Raises:
        ValueError: the batches gave another number of images than ``layout`` lists.

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("webface", n_identities=2, images_per_identity=2, image_size=16, resolution="quick")
    >>> write_photos(s, tempfile.mkdtemp(), lfw_layout(s.table.label, 2))
    (4, [16, 16])
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    landmarks, n, size = {}, 0, None
    for batch in collection.batches(batch_size, progress=progress):
        pixels = to_uint8(batch["image"])
        for img, lm in zip(pixels, batch["landmarks2d"].detach().cpu()):
            if n >= len(layout):
                raise ValueError(f"collection: its batches gave more images than the {len(layout)} its table lists")
            name, number = layout[n]
            rel = key(name, number)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / rel)
            landmarks[rel] = lm
            size = list(img.shape[:2])
            n += 1
    if n != len(layout):
        raise ValueError(f"collection: its batches gave {n} images, its table lists {len(layout)}")
    write_landmarks(out / LFW_LANDMARKS_FILE, landmarks)
    return n, size


def resize_photo(image: torch.Tensor, landmarks: torch.Tensor | None,
                 image_size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A photo and its landmarks resized to ``image_size``.

    Args:
        image: ``(3, H, W)`` float in [0, 1].
        landmarks: ``(68, 2)`` float px (facelab's convention) or None.
        image_size: ``(h, w)`` px, or None (unchanged). Bilinear, antialiased; the landmarks
            are scaled by ``(w / W, h / H)``, exact with half-integer pixel centres.

    Returns:
        ``image (3, h, w)`` float in [0, 1] and the scaled landmarks (None stays None).

    >>> img, lm = resize_photo(torch.rand(3, 32, 32), torch.full((68, 2), 8.0), (16, 16))
    >>> img.shape, float(lm[0, 0])
    (torch.Size([3, 16, 16]), 4.0)
    """
    H, W = image.shape[1:]
    if image_size is None or tuple(image_size) == (H, W):
        return image, landmarks
    h, w = image_size
    image = F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    if landmarks is not None:
        landmarks = landmarks * torch.tensor([w / W, h / H])
    return image.clamp(0, 1), landmarks


def centre_landmarks(height: int, width: int) -> torch.Tensor:
    """The fixed centre-crop landmarks (:data:`CENTRE_TEMPLATE`) of an ``height x width`` px image.

    Returns:
        ``(68, 2)`` float32 px, facelab's convention (pixel ``(i, j)``'s centre at ``(j + 0.5, i + 0.5)``):
        ``(W / 2, H / 2) + min(H, W) * CENTRE_TEMPLATE``.

    >>> lm = centre_landmarks(250, 250)
    >>> lm.shape, [round(v, 1) for v in lm[30].tolist()], round(float(lm[45, 0] - lm[36, 0]), 1)
    (torch.Size([68, 2]), [125.0, 129.0], 87.3)
    """
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive ints, got {height!r}, {width!r}")
    rel = torch.tensor(CENTRE_TEMPLATE, dtype=torch.float64)
    return (torch.tensor([width / 2, height / 2], dtype=torch.float64) + min(height, width) * rel).float()


def export_lfw(collection, out_dir, batch_size: int = 128, progress: bool = False) -> dict:
    """Render every image of an LFW-style suite into ``out_dir`` in the LFW layout (module docstring).

    Args:
        collection: a ``lfw`` suite (:func:`facelab.data.make_suite`), or anything with its
            ``table``, ``config.n_identities`` and ``batches(batch_size)`` yielding ``image
            (B, 3, H, W)`` float [0, 1] and ``landmarks2d (B, 68, 2)`` px in image order
            (e.g. a :class:`facelab.metrics.model_eval.RenderedSuite`).
        out_dir: the folder (created; files already there are overwritten, others kept).
        batch_size: images per render call. progress: a progress bar.

    Returns:
        ``{"out", "images", "identities", "pairs", "folds", "pairs_per_half", "image_size"}``
        (``image_size`` ``[H, W]`` px).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("lfw", n_identities=4, pairs_per_fold=1, n_folds=2, image_size=16, resolution="quick")
    >>> info = export_lfw(s, tempfile.mkdtemp())
    >>> info["images"], info["pairs"], info["folds"], sorted(p.name for p in Path(info["out"]).iterdir())[:2]
    (8, 4, 2, ['Synth_Person_0000', 'Synth_Person_0001'])
    """
    table = collection.table
    layout = lfw_layout(table.label, collection.config.n_identities)
    pairs = suite_pairs(table, layout)  # checks that the suite has pairs before rendering anything
    out = Path(out_dir)
    n, size = write_photos(collection, out, layout, batch_size, progress)
    write_pairs(out / PAIRS_FILE, pairs)
    per_half = len(pairs) // (2 * (pairs[-1].fold + 1))
    return {"out": str(out), "images": n, "identities": len({name for name, _ in layout}), "pairs": len(pairs),
            "folds": pairs[-1].fold + 1, "pairs_per_half": per_half, "image_size": size}


class LFWFolder:
    """The images of an LFW-layout folder that a pairs file lists, with their landmarks.

    Args:
        root: the image folder (``root/NAME/NAME_0001.jpg`` or ``.png``).
        pairs_path: an LFW ``pairs.txt`` over it (default ``root/pairs.txt``); any subset
            or hand-written file in the format works.
        landmarks_path: a ``landmarks.json`` sidecar (default ``root/landmarks.json`` when it
            exists; ``False``: none; :data:`CENTRE` (``"centre"``): no sidecar, every image gets
            the fixed centre template, :func:`centre_landmarks`). When given, every listed image
            needs an entry, unless ``missing_landmarks="centre"``.
        missing_landmarks: ``"raise"`` (default), or ``"centre"``: an image absent from the
            sidecar (a photo where detection found no face) gets the centre template; such
            images are listed in :attr:`centre_filled`.

    Attributes:
        pairs: the :class:`~facelab.io.Pair` rows; ``lines``: their line numbers in the file.
        paths: ``(M,)`` the distinct image files, in order of first use.
        index1, index2: ``(P,)`` long, the pairs' images as indices into ``paths``.
        issame: ``(P,)`` bool. n_folds: the pairs file's number of folds.
        landmarks: ``{key: (68, 2) float32 px}`` or None.
        landmark_source: ``"sidecar"``, ``"centre"`` or None (no landmarks).
        centre_filled: keys of the images that get the centre template instead of sidecar points.

    Raises:
        FileNotFoundError: no folder or pairs file, or a listed image is missing (named with
            the pairs file and line).
        ValueError: a malformed pairs line (line number named), or an image without landmarks.

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> root = export_lfw(make_suite("lfw", n_identities=4, pairs_per_fold=1, n_folds=2, image_size=16,
    ...                              resolution="quick"), tempfile.mkdtemp())["out"]
    >>> f = LFWFolder(root)
    >>> len(f.paths), f.index2.tolist(), f.photo(0)[0].shape, f.photo(0)[1].shape
    (8, [1, 3, 5, 7], torch.Size([3, 16, 16]), torch.Size([68, 2]))
    """

    def __init__(self, root, pairs_path=None, landmarks_path=None, missing_landmarks: str = "raise") -> None:
        if missing_landmarks not in MISSING_LANDMARKS:
            raise ValueError(f"missing_landmarks: expected one of {MISSING_LANDMARKS}, got {missing_landmarks!r}")
        self.root = existing_dir(root, "LFW image folder")
        self.pairs_path = Path(pairs_path) if pairs_path is not None else self.root / PAIRS_FILE
        numbered = read_pairs_with_lines(self.pairs_path)
        self.lines = [n for n, _ in numbered]
        self.pairs = [p for _, p in numbered]
        self.n_folds = self.pairs[-1].fold + 1
        index: dict[tuple[str, int], int] = {}
        self.paths: list[Path] = []
        both = []
        for lineno, p in numbered:
            ids = []
            for name, number in ((p.name1, p.idx1), (p.name2, p.idx2)):
                if (name, number) not in index:
                    path = find_lfw_image(self.root, name, number)
                    if not path.is_file():
                        raise FileNotFoundError(f"{path}: no such image (nor .png); listed on line {lineno} of "
                                                f"{self.pairs_path}: {format_pair(p, ' ')!r}")
                    index[(name, number)] = len(self.paths)
                    self.paths.append(path)
                ids.append(index[(name, number)])
            both.append(ids)
        pairs_idx = torch.tensor(both, dtype=torch.long)
        self.index1, self.index2 = pairs_idx[:, 0], pairs_idx[:, 1]
        self.issame = torch.tensor([p.issame for p in self.pairs], dtype=torch.bool)
        centre = isinstance(landmarks_path, str) and landmarks_path == CENTRE
        self.landmarks_path = None if centre else self._landmarks_path(landmarks_path)
        self.landmarks = None
        self.centre_filled: list[str] = [self.key(i) for i in range(len(self.paths))] if centre else []
        if self.landmarks_path is not None:
            self.landmarks = read_landmarks(self.landmarks_path)
            for i, path in enumerate(self.paths):
                if self.key(i) in self.landmarks:
                    continue
                if missing_landmarks == CENTRE:
                    self.centre_filled.append(self.key(i))
                else:
                    raise ValueError(f"{self.landmarks_path}: no landmarks for {path} (key {self.key(i)!r})")
        self.landmark_source = "sidecar" if self.landmarks is not None else (CENTRE if centre else None)

    def _landmarks_path(self, landmarks_path):
        if landmarks_path is False:
            return None
        if landmarks_path is None:
            default = self.root / LFW_LANDMARKS_FILE
            return default if default.is_file() else None
        return Path(landmarks_path)

    def __len__(self) -> int:
        """The number of distinct images."""
        return len(self.paths)

    def key(self, i: int) -> str:
        """Image ``i``'s path relative to the folder, ``/``-separated (its ``landmarks.json`` key)."""
        return self.paths[i].relative_to(self.root).as_posix()

    def photo(self, i: int, image_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image ``i`` and its landmarks, optionally resized.

        Args:
            i: index into :attr:`paths`.
            image_size: ``(H, W)`` px to resize to (bilinear, antialiased; the landmarks are
                scaled with it, exact with half-integer pixel centres); None keeps the file's size.

        Returns:
            ``image (3, H, W)`` float in [0, 1] and ``landmarks (68, 2)`` float px (None
            without landmarks; the centre template with ``"centre"``). An unreadable file raises
            ``ValueError`` naming it.
        """
        image = read_image(self.paths[i])
        key = self.key(i)
        if self.landmarks is not None and key in self.landmarks:
            lm = self.landmarks[key].clone()
        elif self.landmark_source is not None:  # the centre template, at this file's size
            lm = centre_landmarks(int(image.shape[1]), int(image.shape[2]))
        else:
            lm = None
        return resize_photo(image, lm, image_size)
