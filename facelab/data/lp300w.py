"""300W-LP / AFLW2000-3D folders as a dataset, and a SynthFaces suite written in that layout.

**Reading.** :class:`LP300W` is a ``torch.utils.data.Dataset`` over a folder of image +
annotation pairs, ``NAME.jpg`` (or ``.jpeg``, ``.png``) next to ``NAME.mat``, in any subfolders
(300W-LP's ``AFW/``, ``HELEN_Flip/``, ...; AFLW2000-3D's flat folder). An image without a
``.mat`` is not a sample (300W-LP's ``landmarks/`` folder holds ``.mat`` files only and is
ignored too). Each sample uses SynthFaces' keys (:class:`facelab.data.PhotoCollection`) where
the files hold that truth; truth they lack is absent from the dict, never zero:

============================  ===================  ==============================================
key                           shape                from
============================  ===================  ==============================================
image                         (3, H, W) float      the image, RGB in [0, 1]
landmarks2d                   (68, 2) float, px    ``pt3d_68`` x, y (else a 68-point ``pt2d``)
landmarks_visible             (68,) bool           False for a missing point (its landmarks2d: NaN)
landmarks2d_annotated         (N, 2) float, px     ``pt2d`` (68 points in 300W-LP, 21 in AFLW2000)
landmarks_annotated_visible   (N,) bool            ``pt2d``'s ``-1`` marker (AFLW2000-3D)
pose                          (6,) float           ``Pose_Para`` in facelab's convention
yaw_deg                       () float             facelab's yaw (the negative of 300W-LP's)
pose_300wlp                   (7,) float           the file's ``Pose_Para`` as it is
alpha_id, alpha_exp           (K,) float, mm       with a model: the coefficients in its basis
shape                         (V, 3) float, mm     with a model: identity + expression, model frame
shape_identity                (V, 3) float, mm     with a model: the neutral shape
shape_expression              (V, 3) float, mm     with a model: the expression offset
landmarks3d                   (68, 3) float, mm    with a model that has landmarks
path                          str                  the image file
============================  ===================  ==============================================

Pixels follow facelab's convention (the centre of pixel ``(row i, col j)`` at ``(j + 0.5,
i + 0.5)``); the files' 1-based MATLAB pixels are converted (:mod:`facelab.io.lp300w`). The
model the coefficients refer to is 3DDFA's ``BFM.mat`` for the real data
(:func:`facelab.io.load_bfm_3ddfa`) or the ``model.npz`` of an exported folder.

**Writing.** :func:`export_lp300w` (``facelab synth lp --format lp300w --out ROOT``) writes::

    ROOT/model.npz                              the suite's morphable model (MorphableModel.save)
    ROOT/Synth_Person_0007_0001.png             photo 1 of identity 7 (names as export_lfw's)
    ROOT/Synth_Person_0007_0001.mat             its annotation, 300W-LP's fields
    ...

* ``.mat`` fields (:func:`facelab.io.load_300wlp`'s table): ``Pose_Para (1, 7)``,
  ``Shape_Para (K_id, 1)``, ``Exp_Para (K_exp, 1)``, ``pt2d (2, 68)``, ``pt3d_68 (3, 68)``, in
  300W-LP's conventions (rotation, 1-based pixels, y flipped by ``H + 1 - y``).
* Units: the coefficients are ``model.npz``'s own ``alpha_id``/``alpha_exp`` (raw, mm, on its
  orthonormal bases), so ``Pose_Para``'s scale is px/mm, not BFM's px/µm; ``model.npz`` says so in
  ``meta["lp300w"]["unit_mm"] = 1``, which :class:`LP300W` reads when given that model.
* ``pt2d`` and ``pt3d_68`` x, y are the suite's projected landmarks (a perfect detector);
  ``pt3d_68``'s depth is ``scale * (R v)_z`` (``tz = 0``). Photos are 8-bit PNG, for the reason
  :mod:`facelab.data.lfw_folder` gives.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from facelab.camera import euler_to_rotation, image_hw, rotate_points
from facelab.io import (
    landmark_visibility, load_300wlp, load_morphable, lp300w_coefficients, pixels_from_file, pixels_to_file,
    pose_from_facelab, pose_to_facelab, read_image,
)
from facelab.io._util import existing_dir
from facelab.io.bfm import BFM2009_UNIT_TO_MM
from facelab.io.bfm3ddfa import META_KEY, lp300w_meta
from facelab.data.lfw_folder import EXPORT_SUFFIX, lfw_layout, to_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ANNOTATION_SUFFIX = ".mat"
BAD_IMAGE_POLICIES = ("raise", "skip")
MODEL_FILE = "model.npz"
N_LANDMARKS = 68
UNIFORM_RTOL = 1e-6  # a resize keeps the pose only when it scales x and y alike


def _image_problem(path: Path) -> str | None:
    """Why PIL cannot read ``path`` (None when it can): reads the header and checks the file's structure."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


class LP300W(Dataset):
    """A 300W-LP / AFLW2000-3D folder: images, landmarks, pose and (with a model) 3D shape.

    Args:
        root: the folder (searched recursively for ``NAME.jpg``/``.png`` next to ``NAME.mat``).
        model: optional morphable model the coefficients refer to: a
            :class:`~facelab.morphable.model.MorphableModel` with ``meta["lp300w"]`` or a file for
            :func:`facelab.io.load_morphable` (3DDFA's ``BFM.mat``, an exported ``model.npz``).
        image_size: optional ``(H, W)`` or int px; images are resized (bilinear, antialiased) and
            landmarks scaled with them; the pose is kept only for a resize that keeps the aspect.
        on_bad_image: ``"raise"`` (default): an unreadable image raises ``ValueError`` naming it;
            ``"skip"``: it is left out, listed in :attr:`skipped` and counted in a warning.
        unit_mm: the length unit of ``Pose_Para``'s scale in mm; default: the model's
            ``meta["lp300w"]["unit_mm"]``, else BFM's micrometres (``1e-3``).

    Attributes:
        pairs: ``[(image, annotation), ...]`` paths, sorted. skipped: ``[(path, reason), ...]``.
        unpaired: the number of images without a ``.mat``.

    Raises:
        FileNotFoundError: no folder, or no image with an annotation in it.
        ValueError: a bad argument, or (``on_bad_image="raise"``) an unreadable image.

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("lp", n_identities=1, images_per_identity=2, image_size=16, resolution="quick")
    >>> root = export_lp300w(s, tempfile.mkdtemp())["out"]
    >>> d = LP300W(root, model=Path(root) / "model.npz")
    >>> len(d), d[0]["image"].shape, d[0]["landmarks2d"].shape, d[0]["shape"].shape[1]
    (2, torch.Size([3, 16, 16]), torch.Size([68, 2]), 3)
    """

    def __init__(self, root, model=None, image_size=None, on_bad_image: str = "raise", unit_mm: float | None = None) -> None:
        self.root = existing_dir(root, "300W-LP folder")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image: expected one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.model = load_morphable(model) if isinstance(model, (str, Path)) else model
        self.image_size = image_hw(image_size) if image_size is not None else None
        self.unit_mm = self._unit(unit_mm)
        self.pairs: list[tuple[Path, Path]] = []
        self.skipped: list[tuple[str, str]] = []
        self.unpaired = 0
        images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for image in images:
            annotation = image.with_suffix(ANNOTATION_SUFFIX)
            if not annotation.is_file():
                self.unpaired += 1
                continue
            problem = _image_problem(image)
            if problem is None:
                self.pairs.append((image, annotation))
            elif on_bad_image == "raise":
                raise ValueError(f"{image}: not a readable image ({problem}); pass on_bad_image='skip' to leave it out")
            else:
                self.skipped.append((str(image), problem))
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} unreadable image(s), e.g. "
                          f"{self.skipped[0][0]} ({self.skipped[0][1]})", stacklevel=2)
        if not self.pairs:
            raise FileNotFoundError(f"{self.root}: no readable image with a {ANNOTATION_SUFFIX} annotation next to it "
                                    f"({len(images)} image(s), {self.unpaired} without annotation, "
                                    f"{len(self.skipped)} skipped)")

    def _unit(self, unit_mm):
        if unit_mm is not None:
            if not float(unit_mm) > 0:
                raise ValueError(f"unit_mm: must be > 0, got {unit_mm!r}")
            return float(unit_mm)
        info = self.model.meta.get(META_KEY) if self.model is not None else None
        return float(info["unit_mm"]) if isinstance(info, dict) and "unit_mm" in info else BFM2009_UNIT_TO_MM

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"LP300W({str(self.root)!r}, images={len(self)}, skipped={len(self.skipped)}, model={self.model is not None})"

    def __getitem__(self, index: int) -> dict:
        """Sample ``index`` (module table). A .mat or image that cannot be read raises ``ValueError`` naming it."""
        image_path, mat_path = self.pairs[index]
        ann = load_300wlp(mat_path)
        image = read_image(image_path)
        H, W = image.shape[1:]
        scale = torch.ones(2)
        if self.image_size is not None and self.image_size != (H, W):
            h, w = self.image_size
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
            scale = torch.tensor([w / W, h / H])  # exact for half-integer pixel centres
        sample: dict = {"image": image}

        dense = ann["pt3d_68"][:, :2] if ann["pt3d_68"] is not None else None
        if dense is None and ann["pt2d"] is not None and ann["pt2d"].shape[0] == N_LANDMARKS:
            dense = ann["pt2d"]
        if dense is not None:
            sample["landmarks2d"], sample["landmarks_visible"] = _landmarks(dense, scale)
        if ann["pt2d"] is not None:
            sample["landmarks2d_annotated"], sample["landmarks_annotated_visible"] = _landmarks(ann["pt2d"], scale)

        pose = pose_to_facelab(ann["pose"], H, self.unit_mm)
        if math.isclose(float(scale[0]), float(scale[1]), rel_tol=UNIFORM_RTOL):
            sample["pose"] = torch.cat([pose[:3], pose[3:5] * scale, pose[5:] * scale[0]])
        sample["yaw_deg"] = torch.rad2deg(pose[1])
        sample["pose_300wlp"] = ann["pose"]

        if self.model is not None:
            sample.update(self._shape(ann, mat_path))
        sample["path"] = str(image_path)
        return sample

    def _shape(self, ann: dict, mat_path: Path) -> dict:
        model = self.model
        try:
            alpha_id, alpha_exp = lp300w_coefficients(model, ann["shape"], ann["exp"])
        except ValueError as err:
            raise ValueError(f"{mat_path}: {err}") from None
        with torch.no_grad():
            identity = model.shape(alpha_id[None])[0]
            expression = model.expression_offset(alpha_exp[None])[0]
        out = {"alpha_id": alpha_id, "alpha_exp": alpha_exp, "shape": identity + expression,
               "shape_identity": identity, "shape_expression": expression}
        if model.landmarks.numel() and bool(model.landmark_mask.all()):  # a partial annotation has no 68 points
            out["landmarks3d"] = out["shape"][model.landmarks]
        return out


def _landmarks(points: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """File points ``(N, 2)`` -> facelab px (missing ones NaN) and their ``(N,)`` visibility."""
    visible = landmark_visibility(points)
    px = pixels_from_file(points[:, :2]) * scale
    px[~visible] = float("nan")  # a missing point must not pass for a position
    return px, visible


def export_lp300w(collection, out_dir, batch_size: int = 128, progress: bool = False) -> dict:
    """Render every image of a suite into ``out_dir`` in the 300W-LP layout (module docstring).

    Args:
        collection: a suite (:func:`facelab.data.make_suite`; ``lp`` is the 300W-LP stand-in), or
            anything with ``model``, ``table`` (``label``), ``config.n_identities``,
            ``config.image_size`` and ``batches(batch_size)`` yielding ``image (B, 3, H, W)``,
            ``landmarks2d (B, 68, 2)`` px, ``landmarks3d (B, 68, 3)`` mm, ``pose (B, 6)``,
            ``alpha_id (B, K_id)`` and ``alpha_exp (B, K_exp)`` in image order.
        out_dir: the folder (created; files already there are overwritten, others kept).
        batch_size: images per render call. progress: a progress bar.

    Returns:
        ``{"out", "images", "identities", "image_size", "model"}`` (``image_size`` ``[H, W]`` px,
        ``model`` the path of ``model.npz``).

    >>> import tempfile
    >>> from facelab.data import make_suite
    >>> s = make_suite("lp", n_identities=1, images_per_identity=2, image_size=16, resolution="quick")
    >>> info = export_lp300w(s, tempfile.mkdtemp())
    >>> info["images"], sorted(p.name for p in Path(info["out"]).iterdir())[:3]
    (2, ['Synth_Person_0000_0001.mat', 'Synth_Person_0000_0001.png', 'Synth_Person_0000_0002.mat'])
    """
    import scipy.io
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = collection.model.to("cpu")
    model = dataclasses.replace(model, meta={**model.meta, META_KEY: lp300w_meta(1.0)})  # coefficients in mm
    model_path = model.save(out / MODEL_FILE)
    H, W = image_hw(collection.config.image_size)
    layout = lfw_layout(collection.table.label, collection.config.n_identities)
    n = 0
    for batch in collection.batches(batch_size, progress=progress):
        pixels = to_uint8(batch["image"])
        pose = batch["pose"].detach().cpu().double()
        pose_para = pose_from_facelab(pose, H, 1.0)
        # the file's depth: scale * (R v)_z with tz = 0 (weak perspective has no depth offset)
        cam = rotate_points(batch["landmarks3d"].detach().cpu().double(), euler_to_rotation(pose[:, :3]))
        depth = cam[..., 2:] * pose[:, 5, None, None]
        pt2d = pixels_to_file(batch["landmarks2d"].detach().cpu().double())
        pt3d = torch.cat([pt2d, depth], dim=-1)
        alpha_id = batch["alpha_id"].detach().cpu().double()
        alpha_exp = batch["alpha_exp"].detach().cpu().double()
        for b in range(pixels.shape[0]):
            name, number = layout[n]
            stem = f"{name}_{number:04d}"
            Image.fromarray(pixels[b]).save(out / f"{stem}{EXPORT_SUFFIX}")
            scipy.io.savemat(out / f"{stem}{ANNOTATION_SUFFIX}", {
                "Pose_Para": pose_para[b].numpy()[None],
                "Shape_Para": alpha_id[b].numpy()[:, None],
                "Exp_Para": alpha_exp[b].numpy()[:, None],
                "pt2d": np.ascontiguousarray(pt2d[b].numpy().T),
                "pt3d_68": np.ascontiguousarray(pt3d[b].numpy().T),
            })
            n += 1
    if n != len(layout):
        raise ValueError(f"collection: its batches gave {n} images, its table lists {len(layout)}")
    return {"out": str(out), "images": n, "identities": len({name for name, _ in layout}), "image_size": [H, W],
            "model": str(model_path)}
