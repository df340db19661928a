"""facelab landmarks ROOT: dlib's 68 landmarks of a folder of photos -> its landmarks.json sidecar.

The folder holds scikit-image's astronaut photo (Eileen Collins, NASA; public domain) in two
identity folders, one copy shrunk, plus a blank photo (no face) in a nested folder, a corrupt
file and a copy in a hidden folder. The sidecar is checked against dlib called directly on each
file, the shrunk copy's points against the full photo's, and ImageFolderIdentities reads it.
"""

import contextlib
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib")  # the facelab[photo] extra; `make env` installs it
skimage_data = pytest.importorskip("skimage.data")

from facelab.apps import landmarks as L  # noqa: E402
from facelab.apps import photo as P  # noqa: E402
from facelab.cli import main  # noqa: E402
from facelab.data import ImageFolderIdentities  # noqa: E402
from facelab.io import read_landmarks  # noqa: E402

# The shrunk copy: 512 -> 384 px. Its face (about 70 px wide) is still well above HOG's
# 40 px floor with one doubling.
SHRINK = 0.75
# dlib's points on a resampled photo move by a pixel or two (the detector box is re-found on
# a coarser grid and the predictor is not scale-exact): 0.6 px mean, 1.4 px at most on this photo.
MEAN_SCALE_TOL_PX, MAX_SCALE_TOL_PX = 1.0, 3.0
FACES = ["A/astronaut.png", "B/astronaut_small.PNG"]
BLANK, CORRUPT = "B/unsorted/blank.png", "A/corrupt.jpg"


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def blank_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((160, 200, 3), 128, np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name in ("A", "B", ".cache"):
        (root / name).mkdir()
    photo = Image.fromarray(skimage_data.astronaut())
    photo.save(root / FACES[0])
    size = round(photo.width * SHRINK)
    photo.resize((size, size), Image.BILINEAR).save(root / FACES[1])
    photo.save(root / ".cache" / "astronaut.png")  # hidden: left out
    blank_png(root / BLANK)
    (root / CORRUPT).write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def run(folder):
    """``facelab landmarks ROOT``, run once: (stdout, stderr)."""
    code, text, err = run_cli("landmarks", folder)
    assert code == 0, err
    return text, err


def test_the_sidecar_holds_the_face_photos_only(folder, run):
    text, err = run
    table = read_landmarks(folder / "landmarks.json")
    assert sorted(table) == FACES
    report = json.loads((folder / "landmarks_report.json").read_text())
    assert report["n_images"] == 4 and report["n_landmarked"] == 2
    assert report["no_face"] == [BLANK]
    assert list(report["unreadable"]) == [CORRUPT] and CORRUPT in report["unreadable"][CORRUPT]
    assert "iBUG 300-W" in report["licence"] and "iBUG 300-W" in text
    assert "1 no face: " + BLANK in text and "1 unreadable: " + CORRUPT in text
    assert "landmarks " + folder.name in err  # the progress bar


def test_landmarks_equal_dlib_on_the_same_file(folder, run):
    table = read_landmarks(folder / "landmarks.json")
    for key in FACES:
        direct = P.detect_faces(folder / key)  # an independent call on the file
        largest = max(direct, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        assert torch.equal(table[key], largest["landmarks"]), key


def test_the_shrunk_copy_scales(folder, run):
    table = read_landmarks(folder / "landmarks.json")
    # pixel centres at half-integers: a resize by s maps a point x to s * x exactly
    scaled = table[FACES[0]] * SHRINK
    error = (table[FACES[1]] - scaled).norm(dim=-1)
    assert error.mean() < MEAN_SCALE_TOL_PX and error.max() < MAX_SCALE_TOL_PX, (float(error.mean()), float(error.max()))


def test_image_folder_identities_reads_the_sidecar(folder, run):
    # the corrupt file is skipped; the blank photo sits in a nested folder, which identity folders do not index
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        ds = ImageFolderIdentities(folder, min_images_per_identity=1, on_bad_image="skip")
    assert ds.identities == ["A", "B"] and ds.landmarks_path == folder / "landmarks.json"
    table = read_landmarks(folder / "landmarks.json")
    for i, key in enumerate(FACES):
        sample = ds[i]
        assert ds.key(i) == key and torch.equal(sample["landmarks2d"], table[key]) and bool(sample["landmarks_inside"])


def test_raise_names_the_photo_and_writes_nothing(tmp_path):
    blank_png(tmp_path / "C" / "blank.png")
    code, text, err = run_cli("landmarks", tmp_path, "--on-no-face", "raise", "--quiet")
    assert code == 2 and text == "" and str(tmp_path / "C" / "blank.png") in err and "no face" in err
    assert "landmarks " not in err  # --quiet: no progress bar
    (tmp_path / "C" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="bad.png"):
        L.landmark_folder(tmp_path, on_bad_image="raise")
    # skipping them all leaves nothing to write: exit 2, no sidecar
    code, _, err = run_cli("landmarks", tmp_path, "--quiet")
    assert code == 2 and "no face found" in err and "of its 2 photos (1 unreadable)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C"]


def test_out_elsewhere_keeps_keys_relative_to_root_and_the_largest_face(folder, run, tmp_path):
    out = tmp_path / "sidecars" / "webface.json"
    # min_score=0 keeps dlib's weak second HOG detection (the mission patch on her suit)
    report = L.landmark_folder(folder / "A", out=out, min_score=0)
    assert report["several_faces"] == {"astronaut.png": 2}
    assert read_landmarks(out).keys() == {"astronaut.png"}
    assert torch.equal(read_landmarks(out)["astronaut.png"], read_landmarks(folder / "landmarks.json")[FACES[0]])
    assert report["report"] == str(tmp_path / "sidecars" / "webface_report.json") and report["unreadable"]


def test_nothing_found_and_missing_extra_exit_2(tmp_path, monkeypatch, folder):
    code, _, err = run_cli("landmarks", tmp_path)
    assert code == 2 and "no photos" in err and str(tmp_path) in err
    code, _, err = run_cli("landmarks", tmp_path / "absent")
    assert code == 2 and "absent" in err
    code, _, err = run_cli("landmarks", folder, "--out", tmp_path)
    assert code == 2 and "out: " in err
    monkeypatch.setattr(P, "MODEL_PACKAGE", "no_such_models_package")
    code, _, err = run_cli("landmarks", folder)
    assert code == 2 and "pip install 'facelab[photo]'" in err
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with pytest.raises(P.MissingPhotoExtra, match="dlib is not installed"):
        L.landmark_folder(folder)
