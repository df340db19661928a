"""Your own photo to a 3D face: dlib's face detector and landmarks, a 3DMM fit, Liu et al.'s network.

``facelab photo IMAGE --out DIR`` runs :func:`reconstruct_photo` and :func:`write_photo`
(book chapter ``book/12_real_data.ipynb``, section "Your own photo"). For each face:

1. **detect** it with dlib's HOG detector (or its CNN detector, ``mmod_human_face_detector.dat``)
   and place the 68 iBUG points with dlib's shape predictor
   (``shape_predictor_68_face_landmarks.dat``): :func:`detect_faces`;
2. **fit** the morphable model (SynthFaces unless you bring one) to those 68 points with
   :func:`facelab.fitting.fit_landmarks`, each point weighed by the error a 68-point detector
   makes there (:func:`facelab.metrics.baselines.detector_std`: the jaw contour counts least):
   :func:`fit_photo_landmarks`;
3. **colour** the fitted mesh from the photo: a vertex that the z-buffer shows takes the photo's
   colour under it, a hidden one its mirror partner's;
4. **encode** the face with Liu et al.'s network (the committed ``book/artifacts/liu2018-quick``
   Phase III model), from the five-point aligned crop its training used: :func:`liu_identity`.
   Its identity shape's RMS distance from the mean face, next to that of a typical SynthFaces
   identity, says how far the network moves away from the average face on this photo.

**Licence.** dlib's 68-point model was trained on the iBUG 300-W data set, whose licence
excludes commercial use, so these landmarks (and everything fitted to them) are for
non-commercial use only. The detectors and model files come with the ``facelab[photo]`` extra
(``dlib-bin``, ``face-recognition-models``, ``scikit-image``). The ``face_recognition_models``
package is never imported (its ``__init__`` needs ``pkg_resources``): :func:`dlib_model_file`
finds its files by path.

**Domain gap.** The SynthFaces model and Liu et al.'s network have only seen SynthFaces renders.
A landmark fit needs only 68 points and transfers to a photograph; the network's shape is a
prediction from pixels it was never trained on and should be read with that in mind.

Pixel convention (as :mod:`facelab.render`): x right, y down, pixel ``(row i, col j)`` has its
centre at ``(j + 0.5, i + 0.5)``. dlib puts that centre at ``(j, i)``, so its points are moved
by half a pixel (:data:`DLIB_PIXEL_OFFSET`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelab.checks import check_choice, check_nonnegative_int, check_tensor
from facelab.data.align import five_points, similarity_2d, template
from facelab.fitting.landmarks import LandmarkFit, fit_landmarks, project_landmarks
from facelab.io import read_image, write_mesh
from facelab.io.models import load_morphable
from facelab.metrics.baselines import detector_std
from facelab.morphable.model import MorphableModel
from facelab.render import RenderSettings, render

__all__ = ["detect_faces", "dlib_model_file", "fit_photo_landmarks", "liu_identity", "reconstruct_photo",
           "write_photo", "photo_summary", "MissingPhotoExtra", "NoFaceError", "DETECTORS", "LICENCE_NOTE"]

PHOTO_EXTRA = "facelab[photo]"
INSTALL_HINT = f"pip install '{PHOTO_EXTRA}'"
#: the package that ships dlib's model files (found by path, never imported)
MODEL_PACKAGE = "face_recognition_models"
LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
DETECTORS = ("hog", "cnn")
LICENCE_NOTE = ("dlib's 68-point landmark model is trained on the iBUG 300-W data set, whose licence excludes "
                "commercial use: use these landmarks and the faces fitted to them for non-commercial purposes only")
# How often dlib doubles the photo before detecting. HOG scans an 80 x 80 px window, so one
# doubling finds faces down to about 40 px. The CNN detector takes about six times as long as
# HOG on the same photo (2 s vs 0.35 s for the 512 px astronaut photo on one core), and four
# times that again per doubling, so it runs on the photo as it is.
DEFAULT_UPSAMPLE = {"hog": 1, "cnn": 0}
# Detections scoring below this are dropped. HOG scores are SVM margins, and dlib keeps
# everything above 0: on the astronaut photo that includes the mission patch on her suit
# (0.12, beside 1.16 for her face). For the CNN detector, dlib's own threshold. Pass
# min_score=0 to see every candidate.
DEFAULT_MIN_SCORE = {"hog": 0.5, "cnn": 0.0}
#: dlib's pixel centres are at integer coordinates, facelab's at half-integers
DLIB_PIXEL_OFFSET = 0.5
# Landmark-fit passes: the detector-error model scales with the face's frontal size, which
# needs its yaw; the first pass assumes a frontal face, the second uses the fitted yaw.
YAW_PASSES = 2
# Crop px per photo px (the similarity's scale) of Liu et al.'s training crops: 64 px crops of
# 128 px renders, median 0.64 (0.55 to 0.74) on the webface suite. A photo whose face is larger
# is first shrunk with an antialiasing filter until its crop has this scale, so the network sees
# the resampling it was trained on (bilinear sampling alone would alias a large face).
LIU_CROP_SCALE = 0.64
LIU_ARTIFACT = ("liu2018-quick", "phase3.pt")
# A vertex is visible when it lies at most this far behind the z-buffer's surface at its
# pixel: the surface there is sampled up to half a pixel away (about 1 mm at the scale of a
# face 100 px wide), on cheeks that slope away from the camera.
DEPTH_TOLERANCE_MM = 3.0
#: the fitted mesh's grey albedo in render.png, and how opaque it is over the photo
RENDER_GREY = 0.8
RENDER_OPACITY = 0.75
#: overlay colours (RGB): dlib's landmarks, the fitted model's projected landmarks, the box
DETECTED_RGB, FITTED_RGB, BOX_RGB = (40, 220, 60), (235, 40, 40), (250, 220, 0)
#: landmark dot radius as a fraction of the detection box's width (at least 1 px)
DOT_FRACTION = 1 / 90


class MissingPhotoExtra(ImportError):
    """dlib or its model files are not installed: ``pip install 'facelab[photo]'``."""


class NoFaceError(ValueError):
    """The detector found no face in the photo."""


# ---------------------------------------------------------------------------- dlib
def _dlib():
    try:
        import dlib
    except ImportError:
        raise MissingPhotoExtra(f"dlib is not installed; facelab photo needs the {PHOTO_EXTRA} extra: "
                                f"{INSTALL_HINT}") from None
    return dlib


def dlib_model_file(filename: str) -> Path:
    """The path of one of dlib's model files from the ``face_recognition_models`` package.

    The package is located without importing it: first its folder
    (``importlib.util.find_spec(...).submodule_search_locations``), then the files its
    distribution records (``importlib.metadata``).

    Args:
        filename: e.g. :data:`LANDMARKS_68_FILE` or :data:`CNN_DETECTOR_FILE`.

    Raises:
        MissingPhotoExtra: the package, or that file in it, is not installed.

    >>> dlib_model_file(LANDMARKS_68_FILE).name
    'shape_predictor_68_face_landmarks.dat'
    """
    if not isinstance(filename, str) or not filename:
        raise TypeError(f"filename: expected a file name, got {filename!r}")
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # top-level: finds, does not execute
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for candidate in (Path(folder) / "models" / filename, Path(folder) / filename):
            if candidate.is_file():
                return candidate
    try:
        recorded = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        recorded = []
    for entry in recorded:
        if entry.name == filename and Path(entry.locate()).is_file():
            return Path(entry.locate())
    raise MissingPhotoExtra(f"{filename}: not found; it comes with the {MODEL_PACKAGE} package of the "
                            f"{PHOTO_EXTRA} extra: {INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def _shape_predictor(path: str):
    return _dlib().shape_predictor(path)  # 100 MB: loaded once per process


@functools.lru_cache(maxsize=None)
def _cnn_detector(path: str):
    return _dlib().cnn_face_detection_model_v1(path)


@functools.lru_cache(maxsize=None)
def _hog_detector():
    return _dlib().get_frontal_face_detector()


# ---------------------------------------------------------------------------- inputs
def _as_photo(image) -> torch.Tensor:
    """``(3, H, W)`` float32 in [0, 1] from a path, an ``(H, W, 3)`` / ``(H, W)`` array or a ``(3, H, W)`` tensor."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        arr = image[..., None].repeat(3, -1) if image.ndim == 2 else image
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"image: expected an (H, W, 3) or (H, W) array, got shape {image.shape}")
        if arr.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
        if arr.dtype.kind != "f":
            raise TypeError(f"image: expected a uint8 or float array, got {arr.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a path, an (H, W, 3) array or a (3, H, W) tensor, got {type(image).__name__}")
    check_tensor(image, "image", (3, None, None))
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"image: expected values in [0, 1], got [{float(image.min()):.3g}, {float(image.max()):.3g}]")
    if min(image.shape[1:]) < 8:
        raise ValueError(f"image: too small to hold a face, got {tuple(image.shape[1:])} px")
    return image.detach().float().cpu()


def _uint8(photo: torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8, contiguous: what dlib reads."""
    return np.ascontiguousarray((photo.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def _morphable(model) -> MorphableModel:
    if model is None:
        from facelab.morphable import SynthFacesConfig, build_synthfaces

        model = build_synthfaces(SynthFacesConfig())
    elif isinstance(model, (str, Path)):
        try:
            model = load_morphable(model)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"model: {err}") from None
    if not isinstance(model, MorphableModel):
        raise TypeError(f"model: expected a MorphableModel, a model file or None, got {type(model).__name__}")
    if model.landmarks.numel() != 68:
        raise ValueError(f"model: {model.name!r} has no iBUG-68 landmark annotation ({model.landmarks.numel()} "
                         "landmarks); load it with landmarks=(68 vertex indices) and save it as .npz (MorphableModel.save)")
    return model


# ---------------------------------------------------------------------------- detection
def detect_faces(image, detector: str = "hog", upsample: int | None = None, min_score: float | None = None) -> list[dict]:
    """Faces and their 68 iBUG landmarks in a photo, found by dlib.

    Args:
        image: the photo: a file path, an ``(H, W, 3)`` uint8 array or a ``(3, H, W)`` float
            tensor in [0, 1].
        detector: ``"hog"`` (dlib's frontal HOG + linear SVM) or ``"cnn"`` (its MMOD CNN,
            slower, finds turned faces too).
        upsample: how many times to double the photo before detecting (None:
            :data:`DEFAULT_UPSAMPLE`).
        min_score: drop detections below this score (None: :data:`DEFAULT_MIN_SCORE`).

    Returns:
        One dict per face, highest score first: ``box`` ``[x0, y0, x1, y1]`` px, ``score``
        (float), ``landmarks`` ``(68, 2)`` float px (facelab's pixel convention).

    The 68-point model is trained on iBUG 300-W: non-commercial use only (:data:`LICENCE_NOTE`).

    >>> from skimage.data import astronaut
    >>> faces = detect_faces(astronaut())
    >>> len(faces), faces[0]["landmarks"].shape
    (1, torch.Size([68, 2]))
    """
    check_choice(detector, "detector", DETECTORS)
    upsample = DEFAULT_UPSAMPLE[detector] if upsample is None else check_nonnegative_int(upsample, "upsample")
    if min_score is None:
        min_score = DEFAULT_MIN_SCORE[detector]
    elif isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not np.isfinite(min_score):
        raise ValueError(f"min_score: expected a finite number, got {min_score!r}")
    pixels = _uint8(_as_photo(image))
    predictor = _shape_predictor(str(dlib_model_file(LANDMARKS_68_FILE)))
    if detector == "hog":
        rects, scores, _ = _hog_detector().run(pixels, upsample, 0.0)
        found = list(zip(rects, scores))
    else:
        found = [(d.rect, d.confidence) for d in _cnn_detector(str(dlib_model_file(CNN_DETECTOR_FILE)))(pixels, upsample)]
    faces = []
    for rect, score in sorted(found, key=lambda rs: -rs[1]):
        if score < min_score:
            continue
        parts = predictor(pixels, rect).parts()
        landmarks = torch.tensor([[p.x, p.y] for p in parts], dtype=torch.float32) + DLIB_PIXEL_OFFSET
        box = [rect.left() + DLIB_PIXEL_OFFSET, rect.top() + DLIB_PIXEL_OFFSET,
               rect.right() + DLIB_PIXEL_OFFSET, rect.bottom() + DLIB_PIXEL_OFFSET]
        faces.append({"box": [float(b) for b in box], "score": float(score), "landmarks": landmarks})
    return faces


# ---------------------------------------------------------------------------- fitting
def fit_photo_landmarks(model: MorphableModel, landmarks2d: torch.Tensor, passes: int = YAW_PASSES) -> LandmarkFit:
    """Fit ``model`` to detected landmarks, each point weighed by a 68-point detector's error there.

    The MAP fit of :func:`~facelab.fitting.fit_landmarks` with per-point noise
    :func:`~facelab.metrics.baselines.detector_std` (3.5 % of the frontal inter-ocular
    distance on average; the jaw contour noisiest, the eye corners least noisy). That std
    needs the face's yaw: the first pass assumes a frontal face, each later one the fitted yaw.

    Args:
        model: a :class:`MorphableModel` with an iBUG-68 annotation (a partial one is fitted on
            its mapped points, :func:`~facelab.fitting.fit_landmarks`).
        landmarks2d: ``(B, 68, 2)`` float, px.
        passes: fits, at least 1.

    Returns:
        The last pass's :class:`~facelab.fitting.LandmarkFit` (float64).

    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> m = build_synthfaces(SynthFacesConfig(resolution="quick"))
    >>> pose = torch.tensor([[0.1, 0.3, 0.0, 100.0, 90.0, 0.8]])
    >>> fit = fit_photo_landmarks(m, project_landmarks(m.mean_shape[m.landmarks][None], pose))
    >>> round(float(torch.rad2deg(fit.pose[0, 1])))  # yaw, degrees
    17
    """
    check_tensor(landmarks2d, "landmarks2d", ("B", 68, 2))
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes: expected an int >= 1, got {passes!r}")
    lm = landmarks2d.double()
    model = model.to(dtype=torch.float64)
    yaw_deg = torch.zeros(lm.shape[0], dtype=torch.float64)
    for _ in range(passes):
        std = detector_std(lm, yaw_deg)  # (B, 68) px per axis
        # weights 1/std^2 with a unit landmark_std_px: the exact MAP with each point's own noise
        fit = fit_landmarks(model, lm, weights=std.pow(-2), landmark_std_px=1.0)
        yaw_deg = torch.rad2deg(fit.pose[:, 1])
    return fit


# ---------------------------------------------------------------------------- Liu et al.
def _default_liu_checkpoint() -> Path:
    from facelab.reproduce.artifacts import ARTIFACTS_DIR

    return ARTIFACTS_DIR.joinpath(*LIU_ARTIFACT)


@functools.lru_cache(maxsize=4)
def _load_liu(path: str):
    from facelab.models.registry import load_evaluable

    return load_evaluable(path, expect_model="liu2018")


def liu_identity(liu, photo: torch.Tensor, landmarks2d: torch.Tensor) -> dict:
    """Liu et al.'s identity shape of one face, from the crop its training pipeline cuts.

    The crop is the five-point similarity warp of
    :meth:`~facelab.models.liu2018.Liu2018Evaluable.prepare_images` (SphereFace's template);
    a face larger than the training crops' scale (:data:`LIU_CROP_SCALE`) is first shrunk
    with an antialiasing filter.

    Args:
        liu: a Liu et al. evaluable (:func:`facelab.models.load_evaluable` of a ``liu2018``
            checkpoint trained on aligned crops).
        photo: ``(3, H, W)`` float in [0, 1].
        landmarks2d: ``(68, 2)`` float px in ``photo``.

    Returns:
        ``crop (3, h, w)`` (the network's input), ``identity_shape (V, 3)`` mm (the
        network's own mesh), ``rms_from_mean_mm`` (its RMS distance from the network's mean
        face over the vertices) and ``typical_identity_rms_mm`` (the same for a random
        identity of the network's morphable model, ``sqrt(sum std^2 / V)``).
    """
    check_tensor(photo, "photo", (3, "H", "W"))
    check_tensor(landmarks2d, "landmarks2d", (68, 2))
    lm = landmarks2d.float()[None]
    A, _ = similarity_2d(five_points(lm), template(liu.input_size)[None])
    scale = float(A[0, 0].norm())  # crop px per photo px
    image = photo[None].float()
    if scale < LIU_CROP_SCALE:
        H, W = photo.shape[1:]
        size = (max(8, round(H * scale / LIU_CROP_SCALE)), max(8, round(W * scale / LIU_CROP_SCALE)))
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
        # with pixel centres at half-integers, a resize scales coordinates exactly
        lm = lm * torch.tensor([size[1] / W, size[0] / H])
    crop = liu.prepare_images({"image": image, "landmarks2d": lm})
    shape_id = liu.reconstruct(crop)["identity_shape"][0]
    net = liu.model
    rms = (shape_id - net.mean_shape).pow(2).sum(-1).mean().sqrt()
    typical = (net.shape_std[:net.n_id].pow(2).sum() / net.mean_shape.shape[0]).sqrt()
    return {"crop": crop[0], "identity_shape": shape_id, "rms_from_mean_mm": float(rms),
            "typical_identity_rms_mm": float(typical)}


# ---------------------------------------------------------------------------- render and colour
def _render_over(photo: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, pose: torch.Tensor):
    """Render the grey mesh inside its own bounding box and paste it over ``photo``.

    Returns ``(composite (3, H, W), visible (V,) bool, screen (V, 3))``.
    """
    from facelab.viz import view_light

    H, W = photo.shape[1:]
    screen = project_landmarks(verts[None], pose[None])[0]  # (V, 2) px: the whole mesh, not only landmarks
    x0, y0 = (screen.amin(0).floor() - 1).clamp_min(0).long().tolist()
    x1 = int(min(W, float(screen[:, 0].max().ceil()) + 1))
    y1 = int(min(H, float(screen[:, 1].max().ceil()) + 1))
    composite = photo.clone()
    visible = torch.zeros(verts.shape[0], dtype=torch.bool)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the mesh lies outside the photo
        return composite, visible, screen
    # render only the box: a weak-perspective pose moves with the box's corner
    box_pose = pose.clone()
    box_pose[3:5] -= torch.tensor([x0, y0], dtype=pose.dtype)
    out = render(verts[None], faces, torch.full_like(verts[None], RENDER_GREY), view_light(1).to(verts.dtype),
                 box_pose[None], settings=RenderSettings(image_size=(y1 - y0, x1 - x0), backend="torch"))
    alpha = RENDER_OPACITY * out.mask[0]
    composite[:, y0:y1, x0:x1] = alpha * out.image[0] + (1 - alpha) * photo[:, y0:y1, x0:x1]
    # visibility: a vertex no farther than the z-buffer's surface at its pixel
    vs = out.verts_screen[0]
    col, row = vs[:, 0].floor().long(), vs[:, 1].floor().long()
    inside = (col >= 0) & (col < x1 - x0) & (row >= 0) & (row < y1 - y0)
    c, r = col.clamp(0, x1 - x0 - 1), row.clamp(0, y1 - y0 - 1)
    covered = out.mask[0, 0, r, c] > 0
    visible = inside & covered & (vs[:, 2] <= out.depth[0, 0, r, c] + DEPTH_TOLERANCE_MM)
    return composite, visible, screen


def _vertex_colours(photo: torch.Tensor, screen: torch.Tensor, visible: torch.Tensor, symmetry: torch.Tensor) -> torch.Tensor:
    """``(V, 3)`` photo colours at ``screen (V, 2)`` px; hidden vertices take their mirror partner's
    colour, or the visible vertices' mean when the partner is hidden too."""
    H, W = photo.shape[1:]
    grid = (2 * screen / torch.tensor([W, H], dtype=screen.dtype) - 1).float()[None, None]  # align_corners=False
    colours = F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    if not visible.any():
        return colours
    fallback = colours[visible].mean(0)
    mirror = symmetry.long()
    return torch.where(visible[:, None], colours,
                       torch.where(visible[mirror][:, None], colours[mirror], fallback.expand_as(colours)))


# ---------------------------------------------------------------------------- the pipeline
def reconstruct_photo(image, model=None, detector: str = "hog", largest: bool = False, liu_checkpoint=None, *,
                      run_liu: bool = True, upsample: int | None = None, min_score: float | None = None) -> list[dict]:
    """3D faces from a photo: detection, landmark fit, photo colours and Liu et al.'s identity shape.

    Args:
        image: a file path, an ``(H, W, 3)`` uint8 array or a ``(3, H, W)`` float tensor in [0, 1].
        model: the morphable model to fit: None (SynthFaces, default mesh), a
            :class:`MorphableModel` or a model file (:func:`facelab.io.load_morphable`); it
            needs 68 landmark vertices.
        detector: ``"hog"`` or ``"cnn"`` (:func:`detect_faces`).
        largest: keep only the face with the largest detection box.
        liu_checkpoint: Liu et al.'s ``phase3.pt`` (None: the committed
            ``book/artifacts/liu2018-quick/phase3.pt``).
        run_liu: False skips Liu et al.'s network.
        upsample, min_score: passed to :func:`detect_faces`.

    Returns:
        One dict per face, highest detection score first: ``box``, ``score``,
        ``landmarks_detected`` and ``landmarks_fitted`` ``(68, 2)`` px (NaN where a model with a
        partial annotation maps no vertex; the fit uses the mapped points only),
        ``landmark_error_px`` (their mean distance over the mapped points), ``pose (6,)`` (pitch, yaw, roll rad; tx,
        ty px; scale px/mm), ``shape`` and ``identity_shape`` ``(V, 3)`` mm (model frame),
        ``identity_rms_from_mean_mm``, ``colors (V, 3)`` in [0, 1], ``visible (V,)`` bool,
        ``faces (F, 3)``, ``render (3, H, W)`` (the fitted mesh over the photo) and ``liu``
        (:func:`liu_identity`'s dict plus ``checkpoint``, or None).

    Raises:
        NoFaceError: no face was found (a ``ValueError``; ``facelab photo`` exits with 2).
        MissingPhotoExtra: dlib or its model files are missing (``pip install 'facelab[photo]'``).

    The 68-point model is trained on iBUG 300-W: non-commercial use only (:data:`LICENCE_NOTE`).
    """
    check_choice(detector, "detector", DETECTORS)  # before the slow steps
    photo = _as_photo(image)
    model = _morphable(model)
    if not isinstance(largest, bool):
        raise TypeError(f"largest: expected a bool, got {type(largest).__name__}")
    liu = None
    if run_liu:
        path = _default_liu_checkpoint() if liu_checkpoint is None else Path(liu_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"liu_checkpoint: {path}: no such file (a phase3.pt of `facelab reproduce "
                                    "liu2018`; or skip the network)")
        liu = _load_liu(str(path.resolve()))
    found = detect_faces(photo, detector, upsample, min_score)
    if not found:
        where = f"{image}" if isinstance(image, (str, Path)) else "image"
        raise NoFaceError(f"{where}: no face found by the {detector} detector; try a larger, frontal, well-lit "
                          "face" + (", or the cnn detector" if detector == "hog" else ""))
    if largest:
        found = [max(found, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))]
    detected = torch.stack([f["landmarks"] for f in found]).double()
    fit = fit_photo_landmarks(model, detected)
    mapped = model.landmark_mask
    fitted = project_landmarks(model.landmark_points(fit.shapes, fill=0.0), fit.pose)
    fitted[:, ~mapped] = float("nan")  # a point the model does not map has no fitted position
    mean = model.mean_shape.double()
    results = []
    for k, face in enumerate(found):
        shape = fit.shapes[k].float()
        composite, visible, screen = _render_over(photo, shape, model.faces, fit.pose[k].float())
        liu_out = None
        if liu is not None:
            liu_out = liu_identity(liu, photo, face["landmarks"])
            liu_out["checkpoint"] = str(path)
        results.append({
            "box": face["box"], "score": face["score"],
            "landmarks_detected": face["landmarks"].float(), "landmarks_fitted": fitted[k].float(),
            "landmark_error_px": float((fitted[k] - detected[k])[mapped].norm(dim=-1).mean()),
            "pose": fit.pose[k].float(), "shape": shape, "identity_shape": fit.identity_shapes[k].float(),
            "identity_rms_from_mean_mm": float((fit.identity_shapes[k] - mean).pow(2).sum(-1).mean().sqrt()),
            "colors": _vertex_colours(photo, screen, visible, model.symmetry), "visible": visible,
            "faces": model.faces, "render": composite, "liu": liu_out,
        })
    return results


# ---------------------------------------------------------------------------- outputs
def _overlay(photo: torch.Tensor, result: dict):
    """The photo with the detection box, dlib's landmarks (green) and the fitted ones (red), as a PIL image."""
    from PIL import Image, ImageDraw

    from facelab.viz import LANDMARK_GROUPS

    canvas = Image.fromarray(_uint8(photo))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = result["box"]
    r = max(1.0, (x1 - x0) * DOT_FRACTION)
    width = max(1, round(r / 2))
    draw.rectangle([x0, y0, x1, y1], outline=BOX_RGB, width=width)
    fitted = result["landmarks_fitted"].tolist()
    for start, stop, closed in LANDMARK_GROUPS:  # the fitted model's outline, as a line drawing
        points = [tuple(p) for p in fitted[start:stop] if np.isfinite(p).all()]  # unmapped points are NaN
        draw.line(points + points[:1] if closed else points, fill=FITTED_RGB, width=width)
    for (x, y), colour in [(p, DETECTED_RGB) for p in result["landmarks_detected"].tolist()] + \
                          [(p, FITTED_RGB) for p in fitted if np.isfinite(p).all()]:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return canvas


def write_photo(results: list[dict], image, out_dir) -> list[dict[str, Path]]:
    """Write each face of :func:`reconstruct_photo`: ``face.obj``, ``overlay.png``, ``render.png``.

    ``face.obj`` is the fitted mesh (mm, model frame: x the subject's left, y up) with
    per-vertex colours from the photo; ``overlay.png`` the photo with dlib's landmarks (green)
    and the fitted model's projected landmarks (red); ``render.png`` the fitted mesh rendered
    over the photo. With more than one face the names get the face's index: ``face_0.obj``, ...

    Args:
        results: :func:`reconstruct_photo`'s list.
        image: the same photo (path, array or tensor).
        out_dir: folder (created).

    Returns:
        One dict per face: ``obj``, ``overlay``, ``render`` paths.
    """
    from facelab.viz import save_image

    if not isinstance(results, list) or not results:
        raise ValueError("results: expected the non-empty list of reconstruct_photo")
    photo = _as_photo(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, result in enumerate(results):
        suffix = "" if len(results) == 1 else f"_{k}"
        files = {"obj": out / f"face{suffix}.obj", "overlay": out / f"overlay{suffix}.png",
                 "render": out / f"render{suffix}.png"}
        write_mesh(files["obj"], result["shape"], result["faces"], colors=result["colors"])
        _overlay(photo, result).save(files["overlay"])
        save_image(result["render"], files["render"])
        written.append(files)
    return written


def photo_summary(results: list[dict], image=None, files: list[dict] | None = None, **meta) -> dict:
    """One JSON-ready dict of :func:`reconstruct_photo`'s results (``facelab photo --json``).

    Per face: ``box``, ``score``, ``landmarks_detected`` and ``landmarks_fitted`` (68 ``[x, y]``
    px, x right, y down, pixel centres at half-integers; ``null`` where the model maps no vertex),
    ``landmark_error_px`` (their mean
    distance), ``pose`` (degrees, px, px/mm), ``fit_identity_rms_from_mean_mm``,
    ``liu_identity_rms_from_mean_mm`` and ``typical_identity_rms_mm`` (None without the
    network) and, given ``files``, the paths written. ``meta`` is copied to the top level.
    """
    def points(t: torch.Tensor) -> list:  # null for a point the model does not map (NaN)
        return [[round(float(x), 3), round(float(y), 3)] if np.isfinite([x, y]).all() else None for x, y in t.tolist()]

    faces = []
    for k, r in enumerate(results):
        pitch, yaw, roll, tx, ty, scale = r["pose"].tolist()
        liu = r["liu"] or {}
        entry = {
            "index": k, "box": [round(b, 1) for b in r["box"]], "score": round(r["score"], 4),
            "landmarks_detected": points(r["landmarks_detected"]), "landmarks_fitted": points(r["landmarks_fitted"]),
            "landmark_error_px": round(r["landmark_error_px"], 4),
            "pose": {"pitch_deg": round(float(np.degrees(pitch)), 2), "yaw_deg": round(float(np.degrees(yaw)), 2),
                     "roll_deg": round(float(np.degrees(roll)), 2), "tx_px": round(tx, 2), "ty_px": round(ty, 2),
                     "scale_px_per_mm": round(scale, 4)},
            "fit_identity_rms_from_mean_mm": round(r["identity_rms_from_mean_mm"], 4),
            "liu_identity_rms_from_mean_mm": round(liu["rms_from_mean_mm"], 4) if liu else None,
            "typical_identity_rms_mm": round(liu["typical_identity_rms_mm"], 4) if liu else None,
        }
        if files is not None:
            entry["files"] = {key: str(path) for key, path in files[k].items()}
        faces.append(entry)
    head = {"image": str(image) if isinstance(image, (str, Path)) else None, **meta}
    if results and results[0]["liu"]:
        head["liu_checkpoint"] = results[0]["liu"]["checkpoint"]
    return {**head, "licence": LICENCE_NOTE, "n_faces": len(faces), "faces": faces}
