"""The ``landmarks.json`` sidecar for a folder of real photos, from dlib's 68-point detector.

``facelab landmarks ROOT`` runs :func:`landmark_folder`. Identity folders
(:class:`facelab.data.ImageFolderIdentities`, ``ROOT/<identity>/<image>.jpg``), LFW folders
(:class:`facelab.data.LFWFolder`) and MICC frame folders (:class:`facelab.data.MICCVideos`)
read their 68 iBUG landmarks from a ``landmarks.json`` sidecar (:func:`facelab.io.write_landmarks`:
image path relative to ``ROOT`` -> 68 ``[x, y]`` px, pixel centres at half-integers); the real
data sets come without one. :func:`landmark_folder` walks ``ROOT`` (sub-folders included,
hidden ones left out), runs :func:`facelab.apps.photo.detect_faces` on every photo, keeps the
face with the largest detection box and writes the sidecar, plus a report next to it
(``landmarks_report.json``) that lists the photos without a face, the unreadable ones and
those with several faces.

The points are in the pixels of the file as stored (no EXIF rotation), as the readers load it.
A photo left out of the sidecar (no face, unreadable) is also refused by the readers, which
want landmarks for every photo they index: move the listed files out of ``ROOT``.

**Licence.** dlib's 68-point model was trained on the iBUG 300-W data set, whose licence
excludes commercial use: the sidecar's landmarks (and what is fitted or trained on them) are
for non-commercial use only (:data:`facelab.apps.photo.LICENCE_NOTE`, recorded in the report).
Needs the ``facelab[photo]`` extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facelab.apps.photo import (
    CNN_DETECTOR_FILE, DETECTORS, LANDMARKS_68_FILE, LICENCE_NOTE, NoFaceError, _dlib, detect_faces, dlib_model_file,
)
from facelab.checks import check_choice
from facelab.data.image_folder import IMAGE_SUFFIXES
from facelab.io import read_image, write_landmarks
from facelab.io._util import existing_dir
from facelab.io.lfw import LFW_LANDMARKS_FILE
from facelab.io.micc import FRAME_SUFFIXES

__all__ = ["landmark_folder", "find_photos", "largest_face", "PHOTO_SUFFIXES", "REPORT_SUFFIX"]

#: file endings read as photos (compared in lower case): every format a folder reader indexes
PHOTO_SUFFIXES = tuple(dict.fromkeys(IMAGE_SUFFIXES + FRAME_SUFFIXES))
#: the report sits next to the sidecar: ``landmarks.json`` -> ``landmarks_report.json``
REPORT_SUFFIX = "_report.json"
#: what a photo without a face, or an unreadable one, does: leave it out (listed in the report) or stop
ON_NO_FACE = ("skip", "raise")
ON_BAD_IMAGE = ("skip", "raise")
#: how many file names the command line prints per list (the report has them all)
MAX_NAMED = 5
# detect_faces refuses photos with a side below this (px); far below dlib's 80 px HOG window,
# so such a file is a photo without a face, not an error
MIN_PHOTO_PX = 8


def find_photos(root) -> list[str]:
    """The photos under ``root``, as sorted ``/``-separated paths relative to it (the sidecar's keys).

    Sub-folders are walked (symbolic links followed, each real folder once); hidden folders
    and files (names starting with ``.``) are left out; a photo ends in one of
    :data:`PHOTO_SUFFIXES`, in any case.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("b/2.JPG", "a/1.png", "a/notes.txt", ".cache/3.png"):
    ...     (root / name).parent.mkdir(exist_ok=True); _ = (root / name).write_bytes(b"")
    >>> find_photos(root)
    ['a/1.png', 'b/2.JPG']
    """
    root = existing_dir(root, "photo folder")
    keys, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: walk each folder once
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        keys += [(rel / f).as_posix() for f in files
                 if not f.startswith(".") and Path(f).suffix.lower() in PHOTO_SUFFIXES]
    return sorted(keys)


def largest_face(faces: list[dict]) -> dict:
    """The face of :func:`~facelab.apps.photo.detect_faces` with the largest detection box.

    >>> largest_face([{"box": [0, 0, 10, 10]}, {"box": [5, 5, 30, 20]}])["box"]
    [5, 5, 30, 20]
    """
    if not faces:
        raise ValueError("faces: expected at least one face")
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def landmark_folder(root, out=None, detector: str = "hog", on_no_face: str = "skip", on_bad_image: str = "skip",
                    progress: bool = False, upsample: int | None = None, min_score: float | None = None) -> dict:
    """Detect the 68 iBUG landmarks of every photo under ``root`` and write the ``landmarks.json`` sidecar.

    Args:
        root: the folder (an identity, LFW or MICC folder); every photo under it
            (:func:`find_photos`) is read as the folder readers read it
            (:func:`facelab.io.read_image`).
        out: the sidecar to write (default ``root/landmarks.json``); its keys are relative to
            ``root`` either way (pass ``landmarks_path=out`` to a reader).
        detector: ``"hog"`` or ``"cnn"`` (:func:`~facelab.apps.photo.detect_faces`).
        on_no_face: ``"skip"`` leaves a photo without a face out of the sidecar (listed in the
            report) or ``"raise"`` stops with a :class:`~facelab.apps.photo.NoFaceError` naming it.
        on_bad_image: the same for a file that is not a readable image (``ValueError``).
        progress: show a tqdm progress bar.
        upsample, min_score: passed to :func:`~facelab.apps.photo.detect_faces`.

    Returns:
        The report, also written next to the sidecar (``landmarks_report.json``): ``root``,
        ``landmarks`` and ``report`` (the two files), ``detector``, ``licence``, ``n_images``,
        ``n_landmarked``, ``no_face`` (keys), ``unreadable`` (key -> reason) and
        ``several_faces`` (key -> faces found; the largest is kept).

    Raises:
        ValueError: no photo under ``root``; no face in any photo (nothing is written); a bad
            argument (named); with ``"raise"``, the first photo without a face or unreadable.
        MissingPhotoExtra: dlib or its model files are missing (``pip install 'facelab[photo]'``).

    The 68-point model is trained on iBUG 300-W: non-commercial use only (:data:`~facelab.apps.photo.LICENCE_NOTE`).

    >>> import tempfile
    >>> landmark_folder(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ValueError: ...: no photos (.jpg, .jpeg, .png, .bmp) in it or its sub-folders
    """
    check_choice(detector, "detector", DETECTORS)
    check_choice(on_no_face, "on_no_face", ON_NO_FACE)
    check_choice(on_bad_image, "on_bad_image", ON_BAD_IMAGE)
    root = existing_dir(root, "photo folder")
    out = root / LFW_LANDMARKS_FILE if out is None else Path(out)
    if out.is_dir():
        raise ValueError(f"out: {out} is a folder; expected the sidecar's file name (e.g. {out / LFW_LANDMARKS_FILE})")
    keys = find_photos(root)
    if not keys:
        raise ValueError(f"{root}: no photos ({', '.join(PHOTO_SUFFIXES)}) in it or its sub-folders")
    _dlib()  # a missing extra stops before the first photo, not after an hour of reading
    dlib_model_file(LANDMARKS_68_FILE)
    if detector == "cnn":
        dlib_model_file(CNN_DETECTOR_FILE)

    landmarks, no_face, unreadable, several = {}, [], {}, {}
    todo = keys
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(keys, desc=f"landmarks {root.name}", unit="image")
    for key in todo:
        path = root / key
        try:
            photo = read_image(path)
        except (ValueError, OSError) as err:  # OSError: the file vanished or cannot be opened
            if on_bad_image == "raise":
                raise ValueError(f"{err}; on_bad_image='skip' leaves such files out") from None
            unreadable[key] = str(err)
            continue
        small = min(photo.shape[1:]) < MIN_PHOTO_PX
        faces = [] if small else detect_faces(photo, detector, upsample, min_score)
        if not faces:
            if on_no_face == "raise":
                raise NoFaceError(f"{path}: no face found by the {detector} detector; on_no_face='skip' "
                                  "leaves such photos out")
            no_face.append(key)
            continue
        if len(faces) > 1:
            several[key] = len(faces)
        landmarks[key] = largest_face(faces)["landmarks"]
    if not landmarks:
        raise NoFaceError(f"{root}: no face found by the {detector} detector in any of its {len(keys)} photos "
                          f"({len(unreadable)} unreadable); nothing written")

    out.parent.mkdir(parents=True, exist_ok=True)
    report_path = out.with_name(out.stem + REPORT_SUFFIX)
    # write beside, then rename: an interrupted run leaves the previous sidecar whole
    partial = out.with_name(out.name + ".partial")
    write_landmarks(partial, landmarks)
    os.replace(partial, out)
    report = {"root": str(root), "landmarks": str(out), "report": str(report_path), "detector": detector,
              "licence": LICENCE_NOTE, "n_images": len(keys), "n_landmarked": len(landmarks),
              "no_face": no_face, "unreadable": unreadable, "several_faces": several}
    report_path.write_text(json.dumps(report, indent=2))
    return report
