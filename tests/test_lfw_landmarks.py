"""LFW folders without a landmarks sidecar: ``--landmarks centre`` (a fixed centre crop) and
``--landmarks auto`` (detect first), and the unchanged sidecar path."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from facelab.cli import main
from facelab.data import LFWFolder
from facelab.data.lfw_folder import CENTRE_TEMPLATE, centre_landmarks
from facelab.io import read_landmarks, write_landmarks

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "book" / "artifacts" / "liu2018-quick" / "phase3.pt"
SIZE = 64  # px: small photos, resized to the checkpoint's size by the folder reader


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A folder written by ``facelab synth lfw --format lfw`` (with its landmarks.json)."""
    assert CKPT.is_file(), f"{CKPT}: the committed liu2018-quick checkpoint is missing"
    root = tmp_path_factory.mktemp("lfw") / "root"
    rc = main(["synth", "lfw", "--format", "lfw", "--out", str(root), "--quiet", "--set", "n_identities=6",
               "--set", "pairs_per_fold=2", "--set", "n_folds=2", "--set", f"image_size={SIZE},{SIZE}",
               "--set", "resolution=quick"])
    assert rc == 0 and (root / "landmarks.json").is_file()
    return root


@pytest.fixture()
def bare(exported, tmp_path):
    """The same folder with its landmarks.json removed, as real LFW comes."""
    root = tmp_path / "bare"
    shutil.copytree(exported, root)
    (root / "landmarks.json").unlink()
    return root


def _score(capsys, *argv):
    rc = main(["eval", "model", str(CKPT), *argv, "--json", "--set", "device=cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_template_is_the_framed_mean_synthfaces_face():
    """Re-derive the constant: the mean SynthFaces landmarks, frontal, framed as the suites frame a face."""
    from facelab.data.synth import FACE_FILL
    from facelab.morphable import SynthFacesConfig, build_synthfaces

    m = build_synthfaces(SynthFacesConfig())
    lm = m.mean_shape[m.landmarks].double()
    height = float(lm[[19, 24], 1].mean() - lm[8, 1])  # brow to chin, mm
    centre_y = 0.5 * (lm[[19, 24], 1].mean() + lm[8, 1]) + 0.12 * height  # as PhotoCollection centres a face
    x = (lm[:, 0] - lm[:, 0].mean()) * FACE_FILL / height
    y = -(lm[:, 1] - centre_y) * FACE_FILL / height  # image y points down
    assert torch.allclose(torch.tensor(CENTRE_TEMPLATE, dtype=torch.float64), torch.stack([x, y], 1), atol=6e-5)
    # in pixels: centred, and the brow-to-chin height is FACE_FILL of the shorter side
    px = centre_landmarks(250, 300)
    assert px.shape == (68, 2) and px.dtype == torch.float32
    assert float(px[8, 1] - px[[19, 24], 1].mean()) == pytest.approx(FACE_FILL * 250, abs=0.05)
    assert float(px[:, 0].mean()) == pytest.approx(150.0, abs=1e-3)  # symmetric about the vertical centre line
    with pytest.raises(ValueError, match="height, width"):
        centre_landmarks(0, 10)


def test_template_near_the_exported_faces(exported):
    """The suites' faces sit where the template puts them, up to pose and shift jitter."""
    lm = torch.stack(list(read_landmarks(exported / "landmarks.json").values()))
    gap = (lm.mean(0) - centre_landmarks(SIZE, SIZE)).norm(dim=-1).mean()
    assert gap < 0.05 * SIZE


def test_missing_sidecar_names_both_options(bare, capsys):
    assert main(["eval", "model", str(CKPT), "--lfw", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "--landmarks auto" in err and "--landmarks centre" in err and "landmarks.json" in err


def test_centre_scores(bare, capsys):
    result = _score(capsys, "--lfw", str(bare), "--landmarks", "centre")
    scores = result["lfw"]["liu2018"]
    assert math.isfinite(scores["accuracy_mean"]) and 0.0 <= scores["accuracy_mean"] <= 1.0
    assert len(scores["best_thresholds"]) == 2 and math.isfinite(scores["auc"])
    assert result["landmarks_source"] == "centre" and result["landmarks_file"] is None
    assert result["n_centre_landmarks"] == result["n_images"] == 16
    # each image is given the template at its own size, scaled with the photo
    folder = LFWFolder(bare, landmarks_path="centre")
    image, lm = folder.photo(0)
    assert image.shape == (3, SIZE, SIZE) and torch.equal(lm, centre_landmarks(SIZE, SIZE))
    _, lm128 = folder.photo(0, (128, 128))
    assert torch.allclose(lm128, centre_landmarks(128, 128), atol=1e-4)


def test_sidecar_result_unchanged(exported, bare, capsys):
    default = _score(capsys, "--lfw", str(exported))
    explicit = _score(capsys, "--lfw", str(exported), "--landmarks", str(exported / "landmarks.json"))
    auto = _score(capsys, "--lfw", str(exported), "--landmarks", "auto")  # a sidecar is there: no detection
    assert default["landmarks_source"] == "sidecar" and default["n_centre_landmarks"] == 0
    assert default["landmarks_file"] == str(exported / "landmarks.json") == auto["landmarks_file"]
    for other in (explicit, auto):
        assert other["lfw"] == default["lfw"]
    # the detected landmarks matter: the centre crop is another input, so other distances
    from facelab.metrics.lfw_folder import embed_lfw_folder
    from facelab.models import load_evaluable

    model = load_evaluable(CKPT)
    with_sidecar = embed_lfw_folder(model, LFWFolder(exported))
    centred = embed_lfw_folder(model, LFWFolder(bare, landmarks_path="centre"))
    assert not torch.allclose(with_sidecar, centred, atol=1e-3)


def test_auto_detects_and_fills_the_rest(exported, bare, tmp_path, capsys, monkeypatch):
    """``auto`` on a bare folder writes the sidecar through landmark_folder (stubbed: the true
    landmarks but one photo without a face) and gives the faceless photo the centre template."""
    import facelab.apps.landmarks as apps_landmarks

    truth = read_landmarks(exported / "landmarks.json")
    faceless = sorted(truth)[0]
    calls = []

    def fake_landmark_folder(root, out=None, **kwargs):
        calls.append((Path(root), Path(out)))
        write_landmarks(out, {k: v for k, v in truth.items() if k != faceless})
        return {"n_landmarked": len(truth) - 1, "n_images": len(truth), "landmarks": str(out)}

    monkeypatch.setattr(apps_landmarks, "landmark_folder", fake_landmark_folder)
    out = tmp_path / "report"
    result = _score(capsys, "--lfw", str(bare), "--landmarks", "auto", "--out", str(out))
    assert calls == [(bare, out / "landmarks.json")]
    assert result["landmarks_source"] == "auto" and result["landmarks_file"] == str(out / "landmarks.json")
    assert result["n_centre_landmarks"] == 1
    assert math.isfinite(result["lfw"]["liu2018"]["accuracy_mean"])
    assert not (bare / "landmarks.json").exists()  # with --out the folder is left as it was
    folder = LFWFolder(bare, landmarks_path=out / "landmarks.json", missing_landmarks="centre")
    assert folder.centre_filled == [faceless]
    with pytest.raises(ValueError, match=f"no landmarks for .*{faceless.split('/')[-1]}"):
        LFWFolder(bare, landmarks_path=out / "landmarks.json")  # without the fallback: refused, as before


def test_auto_without_dlib_points_to_centre(bare, capsys, monkeypatch):
    import facelab.apps.landmarks as apps_landmarks
    from facelab.apps.photo import MissingPhotoExtra

    def no_dlib(*args, **kwargs):
        raise MissingPhotoExtra("dlib is not installed: pip install 'facelab[photo]'")

    monkeypatch.setattr(apps_landmarks, "landmark_folder", no_dlib)
    assert main(["eval", "model", str(CKPT), "--lfw", str(bare), "--landmarks", "auto"]) == 2
    err = capsys.readouterr().err
    assert "facelab[photo]" in err and "--landmarks centre" in err


def test_refusals(bare, capsys):
    assert main(["eval", "model", str(CKPT), "--micc", str(bare), "--landmarks", "centre"]) == 2
    assert "--landmarks centre: belongs to --lfw" in capsys.readouterr().err
    with pytest.raises(ValueError, match="missing_landmarks"):
        LFWFolder(bare, missing_landmarks="guess")


def test_auto_with_dlib(tmp_path, capsys):
    """The real detector: a sidecar is written next to the report, faceless photos get the template."""
    pytest.importorskip("dlib")
    root = tmp_path / "root"
    assert main(["synth", "lfw", "--format", "lfw", "--out", str(root), "--quiet", "--set", "n_identities=6",
                 "--set", "pairs_per_fold=2", "--set", "n_folds=2", "--set", "image_size=128,128",
                 "--set", "resolution=quick"]) == 0
    (root / "landmarks.json").unlink()
    capsys.readouterr()
    result = _score(capsys, "--lfw", str(root), "--landmarks", "auto", "--out", str(tmp_path / "out"))
    detected = read_landmarks(tmp_path / "out" / "landmarks.json")
    assert result["landmarks_source"] == "auto" and 0 < len(detected) <= 16
    assert result["n_centre_landmarks"] == 16 - len(detected)
    assert math.isfinite(result["lfw"]["liu2018"]["accuracy_mean"])
