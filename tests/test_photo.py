"""facelab photo: dlib's 68 landmarks -> 3DMM fit -> Liu et al.'s shape, on scikit-image's astronaut photo.

The astronaut (Eileen Collins, NASA; public domain) ships with scikit-image, so nothing is
downloaded. The landmark error is recomputed here from the JSON's two arrays, the detected
landmarks are compared with dlib's own output, and the fitted landmarks with the projection of
the mesh written to face.obj.
"""

import contextlib
import dataclasses
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib")  # the facelab[photo] extra; `make env` installs it
skimage_data = pytest.importorskip("skimage.data")

from facelab.apps import photo as P  # noqa: E402
from facelab.cli import main  # noqa: E402
from facelab.fitting import fit_landmarks, project_landmarks  # noqa: E402
from facelab.io import read_mesh  # noqa: E402
from facelab.morphable import SynthFacesConfig, build_synthfaces  # noqa: E402

# The acceptance bound on the mean distance between dlib's 68 points and the fitted model's
# projected ones on the astronaut photo (her face is about 90 px wide).
MAX_MEAN_ERROR_PX = 4.0
# JSON rounding (angles 0.01 deg, translation 0.01 px, scale 1e-4 px/mm over ~100 mm) moves
# a reprojected landmark by a few hundredths of a pixel.
REPROJECTION_TOL_PX = 0.1


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def astronaut_run(astronaut_png, tmp_path_factory):
    """``facelab photo astronaut.png --out DIR --json``, run once: (exit code, JSON, DIR)."""
    out = tmp_path_factory.mktemp("astronaut_out")
    code, text, err = run_cli("photo", astronaut_png, "--out", out, "--json")
    assert code == 0, err
    return json.loads(text), out


def test_photo_writes_the_three_files(astronaut_run, astronaut_png):
    summary, out = astronaut_run
    assert summary["n_faces"] == 1 and len(summary["faces"]) == 1
    assert "iBUG 300-W" in summary["licence"] and "commercial" in summary["licence"]
    for name in ("face.obj", "overlay.png", "render.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert summary["faces"][0]["files"]["obj"] == str(out / "face.obj")
    photo = Image.open(astronaut_png)
    x0, y0, x1, y1 = (round(v) for v in summary["faces"][0]["box"])
    for name, least in (("overlay.png", 0.05), ("render.png", 0.5)):  # share of the face box drawn over
        image = Image.open(out / name)
        assert image.size == photo.size and image.mode == "RGB"
        changed = np.abs(np.asarray(image, float) - np.asarray(photo, float)).sum(-1) > 30
        assert changed[y0:y1, x0:x1].mean() > least, f"{name}: {changed[y0:y1, x0:x1].mean():.3f} of the face box drawn"
        assert changed.mean() < 0.2, f"{name} changed the photo away from the face"
    mesh = read_mesh(out / "face.obj")
    model = build_synthfaces(SynthFacesConfig())
    assert mesh.verts.shape == (model.n_verts, 3) and torch.equal(mesh.faces, model.faces)
    assert mesh.colors is not None and mesh.colors.std() > 0.02, "vertex colours should come from the photo"


def test_landmark_error_measured_independently(astronaut_run, astronaut_png):
    summary, out = astronaut_run
    face = summary["faces"][0]
    detected = np.asarray(face["landmarks_detected"], float)
    fitted = np.asarray(face["landmarks_fitted"], float)
    assert detected.shape == fitted.shape == (68, 2)
    error = np.linalg.norm(detected - fitted, axis=1).mean()
    assert error <= MAX_MEAN_ERROR_PX, f"mean landmark error {error:.2f} px"
    assert error == pytest.approx(face["landmark_error_px"], abs=0.01)  # the reported number is this one

    # the detected points are dlib's own, moved to facelab's pixel centres (+0.5 px)
    pixels = np.asarray(Image.open(astronaut_png).convert("RGB"))
    rects = dlib.get_frontal_face_detector()(pixels, 1)
    predictor = dlib.shape_predictor(str(P.dlib_model_file(P.LANDMARKS_68_FILE)))
    best = max(rects, key=lambda r: -abs(r.left() + 0.5 - face["box"][0]) - abs(r.top() + 0.5 - face["box"][1]))
    dlib_points = np.array([[p.x, p.y] for p in predictor(pixels, best).parts()], float) + 0.5
    np.testing.assert_allclose(detected, dlib_points, atol=1e-3)

    # the fitted points are the landmark vertices of face.obj, projected with the reported pose
    model = build_synthfaces(SynthFacesConfig())
    verts = read_mesh(out / "face.obj").verts.double()
    p = face["pose"]
    pose = torch.tensor([[np.radians(p["pitch_deg"]), np.radians(p["yaw_deg"]), np.radians(p["roll_deg"]),
                          p["tx_px"], p["ty_px"], p["scale_px_per_mm"]]], dtype=torch.float64)
    reprojected = project_landmarks(verts[model.landmarks][None], pose)[0].numpy()
    assert np.abs(reprojected - fitted).max() < REPROJECTION_TOL_PX

    # Liu et al.'s shape: a distance from the mean face, on the scale of a SynthFaces identity
    assert 0 < face["liu_identity_rms_from_mean_mm"] < 5 * face["typical_identity_rms_mm"]
    assert summary["liu_checkpoint"].endswith("phase3.pt")


def test_several_faces_are_suffixed_and_largest_keeps_one(astronaut_png, tmp_path):
    # min-score 0 keeps dlib's second, weak HOG detection (the mission patch on her suit)
    code, text, err = run_cli("photo", astronaut_png, "--out", tmp_path / "all", "--json", "--no-liu", "--min-score", "0")
    assert code == 0, err
    summary = json.loads(text)
    assert summary["n_faces"] == 2 and summary["faces"][0]["score"] > summary["faces"][1]["score"]
    assert summary["faces"][0]["liu_identity_rms_from_mean_mm"] is None
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "face_0.obj", "face_1.obj", "overlay_0.png", "overlay_1.png", "render_0.png", "render_1.png"]
    code, text, err = run_cli("photo", astronaut_png, "--out", tmp_path / "one", "--no-liu", "--min-score", "0", "--largest")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["face.obj", "overlay.png", "render.png"]
    assert "iBUG 300-W" in text  # the human-readable output states the licence too


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face_exits_2(tmp_path, kind):
    rng = np.random.default_rng(0)
    pixels = (rng.random((160, 200, 3)) * 255).astype(np.uint8) if kind == "noise" else np.full((160, 200, 3), 128, np.uint8)
    path = tmp_path / f"{kind}.png"
    Image.fromarray(pixels).save(path)
    code, text, err = run_cli("photo", path, "--out", tmp_path / "out", "--no-liu")
    assert code == 2 and text == ""
    assert "no face found" in err and str(path) in err
    assert not (tmp_path / "out" / "face.obj").exists()


def test_bad_arguments_name_the_argument(astronaut_png, tmp_path):
    photo = skimage_data.astronaut()
    with pytest.raises(ValueError, match="detector"):
        P.reconstruct_photo(photo, detector="dnn")
    with pytest.raises(TypeError, match="model"):
        P.reconstruct_photo(photo, model=123)
    with pytest.raises(FileNotFoundError, match="model: .*missing.npz"):
        P.reconstruct_photo(photo, model=tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="liu_checkpoint"):
        P.reconstruct_photo(photo, liu_checkpoint=tmp_path / "phase3.pt")
    with pytest.raises(ValueError, match="image"):
        P.reconstruct_photo(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="image"):
        P.reconstruct_photo(torch.full((3, 32, 32), 2.0))
    with pytest.raises(TypeError, match="image"):
        P.reconstruct_photo([1, 2, 3])
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        P.reconstruct_photo(tmp_path / "nothere.png")
    with pytest.raises(TypeError, match="largest"):
        P.reconstruct_photo(photo, largest="yes", run_liu=False)
    with pytest.raises(ValueError, match="upsample"):
        P.detect_faces(photo, upsample=-1)
    with pytest.raises(ValueError, match="min_score"):
        P.detect_faces(photo, min_score="high")
    no_landmarks = build_synthfaces(SynthFacesConfig(resolution="quick"))
    no_landmarks = dataclasses.replace(no_landmarks, landmarks=torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="model: .*68"):
        P.reconstruct_photo(photo, model=no_landmarks, run_liu=False)
    # the command line: argparse refuses an unknown detector, an unreadable image names the file
    with pytest.raises(SystemExit):
        run_cli("photo", astronaut_png, "--out", tmp_path, "--detector", "dnn")
    code, _, err = run_cli("photo", tmp_path / "nothere.png", "--out", tmp_path)
    assert code == 2 and "nothere.png" in err


def test_model_files_are_found_without_importing_their_package():
    for name in (P.LANDMARKS_68_FILE, P.CNN_DETECTOR_FILE):
        path = P.dlib_model_file(name)
        assert path.is_file() and path.name == name and path.stat().st_size > 100_000
    assert P.MODEL_PACKAGE not in sys.modules  # its __init__ needs pkg_resources


def test_a_missing_extra_names_it(monkeypatch, astronaut_png, tmp_path):
    monkeypatch.setattr(P, "MODEL_PACKAGE", "no_such_models_package")
    with pytest.raises(P.MissingPhotoExtra, match=r"facelab\[photo\]"):
        P.dlib_model_file(P.LANDMARKS_68_FILE)
    code, _, err = run_cli("photo", astronaut_png, "--out", tmp_path, "--no-liu")
    assert code == 2 and "pip install 'facelab[photo]'" in err
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with pytest.raises(P.MissingPhotoExtra, match="dlib is not installed.*facelab\\[photo\\]"):
        P._dlib()


@pytest.mark.slow
def test_a_saved_model_and_the_cnn_detector(tmp_path):
    photo = skimage_data.astronaut()
    path = build_synthfaces(SynthFacesConfig(resolution="quick")).save(tmp_path / "quick.npz")
    for detector in ("hog", "cnn"):
        (face,) = P.reconstruct_photo(photo, model=path, detector=detector, run_liu=False)
        error = (face["landmarks_detected"] - face["landmarks_fitted"]).norm(dim=-1).mean()
        assert error <= MAX_MEAN_ERROR_PX, (detector, float(error))
        assert face["shape"].shape == (1353, 3) and face["liu"] is None
        x0, y0, x1, y1 = face["box"]
        inside = ((face["landmarks_detected"][:, 0] > x0 - 10) & (face["landmarks_detected"][:, 0] < x1 + 10)).all()
        assert inside, "the landmarks lie around the detection box"


def test_a_pose_only_fit_of_the_mean_face_on_the_photo():
    """``fit_landmarks(..., n_shape=0, n_exp=0)``: the mean face, posed; worse than the full fit."""
    model = build_synthfaces(SynthFacesConfig(resolution="quick"))
    (face,) = P.detect_faces(skimage_data.astronaut())
    detected = face["landmarks"][None].double()
    errors = {}
    for n in (0, None):
        fit = fit_landmarks(model.to(dtype=torch.float64), detected, n_shape=n, n_exp=n)
        if n == 0:
            assert fit.alpha_id.abs().max() == 0 and fit.alpha_exp.abs().max() == 0
        projected = project_landmarks(fit.shapes[:, model.landmarks], fit.pose)
        errors[n] = float((projected - detected).norm(dim=-1).mean())
    assert np.isfinite(errors[0]) and errors[None] < errors[0] < 4 * MAX_MEAN_ERROR_PX
