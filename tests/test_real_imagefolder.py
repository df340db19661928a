"""Photos in one folder per identity (CASIA-WebFace layout): export, read back, bad files, fit.

``facelab synth webface --format imagefolder`` writes a tiny suite; it is read back with
:class:`facelab.data.ImageFolderIdentities` and checked against the suite's own batch (the
8-bit rounding done here with numpy, the landmarks read with ``json``). A second folder is
built by hand with PIL and numpy (mixed sizes, JPEG and PNG, stray files). ``facelab fit``
on the exported folder is compared with the library's landmark fit of the same landmarks
and with the suite's true identity shapes.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelab.cli import main
from facelab.data import ImageFolderIdentities, make_suite
from facelab.fitting import (
    CollectionFitConfig, LandmarkFitConfig, fit_collection, fit_landmarks, load_fitted_targets,
)
from facelab.fitting.photometric import PhotometricFitConfig
from facelab.morphable import SynthFacesConfig, build_synthfaces

pytestmark = pytest.mark.usefixtures("one_thread")

N_IDS, PER_ID, SIZE = 3, 3, 48
SUITE = dict(n_identities=N_IDS, images_per_identity=PER_ID, image_size=SIZE, resolution="quick")
NAME = re.compile(r"^Synth_Person_\d{4}$")
FILE = re.compile(r"^(Synth_Person_\d{4})_(\d{4})\.png$")
# The multi-image landmark fit of 3 noiseless photos per person (quick mesh, 40 components) left
# 0.54 to 0.77 of the mean face's error per person, 0.61 on average; a fit to the wrong person's
# landmarks leaves more than all of it.
MAX_FIT_TO_MEAN_RATIO = 0.75


@pytest.fixture(scope="module")
def suite():
    return make_suite("webface", **SUITE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("casia") / "root"
    argv = ["synth", "webface", "--format", "imagefolder", "--out", str(root), "--quiet"]
    for key, value in SUITE.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    return root


def _copy(root, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(root, out)
    return out


# ------------------------------------------------------------------ the exported folder
def test_export_read_back_matches_suite(exported, suite):
    # an independent look at the layout: names, numbering, and the sidecar's keys
    people = sorted(p.name for p in exported.iterdir() if p.is_dir())
    assert people == [f"Synth_Person_{k:04d}" for k in range(N_IDS)]
    files = {}
    for person in people:
        names = sorted(f.name for f in (exported / person).iterdir())
        assert [FILE.match(n).group(2) for n in names] == [f"{i:04d}" for i in range(1, PER_ID + 1)]
        assert all(FILE.match(n).group(1) == person for n in names)
        files[person] = names
    sidecar = json.loads((exported / "landmarks.json").read_text())
    assert set(sidecar) == {f"{p}/{n}" for p, ns in files.items() for n in ns}

    ds = ImageFolderIdentities(exported)
    batch = suite.batch(torch.arange(len(suite)))
    assert len(ds) == len(suite) and ds.identities == people
    assert ds.labels.tolist() == batch["label"].tolist()
    got = ds.batch(torch.arange(len(ds)))
    assert set(got) == {"image", "label", "landmarks2d", "landmarks_inside"}
    expected = np.round(np.clip(batch["image"].numpy(), 0, 1) * 255) / 255  # the 8-bit photo, by numpy
    np.testing.assert_array_equal(got["image"].numpy(), expected.astype(np.float32))
    assert torch.equal(got["landmarks2d"], batch["landmarks2d"].float())
    assert got["landmarks_inside"].all() and ds.landmarks_outside == [] and ds.skipped == []
    # suite order is identity-major, as the folder's
    for i in range(len(ds)):
        key = ds.key(i)
        assert key == f"{people[batch['label'][i]]}/{files[people[batch['label'][i]]][i % PER_ID]}"
        np.testing.assert_array_equal(np.float32(sidecar[key]), batch["landmarks2d"][i].numpy())


def test_resize_scales_landmarks(exported):
    full = ImageFolderIdentities(exported)
    half = ImageFolderIdentities(exported, image_size=(SIZE // 2, SIZE // 3))
    a, b = full[4], half[4]
    assert b["image"].shape == (3, SIZE // 2, SIZE // 3)
    assert torch.allclose(b["landmarks2d"], a["landmarks2d"] * torch.tensor([1 / 3, 1 / 2]))


# ------------------------------------------------------------------ a folder built by hand
def _hand_folder(root: Path, people: dict, landmarks: dict | None = None):
    """``people``: ``{name: [(file name, (H, W), rgb), ...]}``; photos of one colour each."""
    for name, photos in people.items():
        (root / name).mkdir(parents=True)
        for fname, (h, w), rgb in photos:
            Image.fromarray(np.full((h, w, 3), rgb, dtype=np.uint8)).save(root / name / fname)
    if landmarks is not None:
        (root / "landmarks.json").write_text(json.dumps(landmarks))
    return root


def _points(h, w, seed, outside=False):
    pts = np.random.default_rng(seed).uniform(0, 1, (68, 2)) * [w, h]
    if outside:
        pts[8] = [w / 2, h + 3.0]  # the chin below the photo
    pts[0] = [float(w), float(h)]  # the bottom-right corner is still inside
    return pts.tolist()


@pytest.fixture
def hand(tmp_path):
    people = {  # created out of order; labels follow sorted names
        "n000003": [("0001_01.jpg", (40, 30), (200, 10, 10)), ("0002_01.png", (50, 60), (10, 200, 10))],
        "n000001": [("0001_01.png", (40, 30), (1, 2, 3)), ("0003_01.PNG", (40, 30), (4, 5, 6))],
        "n000002": [("a.png", (32, 32), (90, 90, 90)), ("b.jpeg", (32, 32), (30, 60, 90)), ("c.png", (32, 32), (7, 7, 7))],
    }
    lms = {f"{n}/{f}": _points(h, w, i) for i, (n, ps) in enumerate(people.items()) for f, (h, w), _ in ps}
    root = _hand_folder(tmp_path / "hand", people, lms)
    (root / "n000002" / "notes.txt").write_text("not a photo")
    (root / ".cache").mkdir()
    (root / "README").write_text("a file at the top is no identity")
    return root, people, lms


def test_hand_built_folder(hand):
    root, people, lms = hand
    ds = ImageFolderIdentities(root, image_size=(20, 16))
    assert ds.identities == ["n000001", "n000002", "n000003"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert [p.name for p in ds.paths[:2]] == ["0001_01.png", "0003_01.PNG"]
    for i in range(len(ds)):
        name, fname = ds.key(i).split("/")
        (h, w), rgb = next((s, c) for f, s, c in people[name] if f == fname)
        sample = ds[i]
        assert int(sample["label"]) == sorted(people).index(name)
        assert sample["image"].shape == (3, 20, 16)
        if not fname.lower().endswith((".jpg", ".jpeg")):  # PNG is exact; a resized flat colour stays flat
            assert torch.allclose(sample["image"], torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255, atol=1e-6)
        expected = np.asarray(lms[f"{name}/{fname}"]) * [16 / w, 20 / h]
        np.testing.assert_allclose(sample["landmarks2d"].numpy(), expected, rtol=1e-6)
        assert bool(sample["landmarks_inside"])
    assert ds.batch([0, 6])["image"].shape == (2, 3, 20, 16)
    # without a resize, photos of different sizes do not stack, and the error names both files
    with pytest.raises(ValueError, match=r"0001_01\.png is \(40, 30\).*0002_01\.png \(50, 60\).*image_size"):
        ImageFolderIdentities(root).batch([0, 6])
    assert "landmarks2d" not in ImageFolderIdentities(root, landmarks_path=False)[0]  # absent, not zero


def test_landmarks_outside_flagged(hand):
    root, people, lms = hand
    key = "n000002/b.jpeg"
    lms[key] = _points(32, 32, 9, outside=True)
    (root / "landmarks.json").write_text(json.dumps(lms))
    ds = ImageFolderIdentities(root)
    assert ds.landmarks_outside == [key]
    flags = {ds.key(i): bool(ds[i]["landmarks_inside"]) for i in range(len(ds))}
    assert flags.pop(key) is False and all(flags.values())


def test_missing_landmarks_named(hand):
    root, _, lms = hand
    del lms["n000003/0002_01.png"]
    (root / "landmarks.json").write_text(json.dumps(lms))
    with pytest.raises(ValueError, match=r"landmarks\.json: no landmarks for 1 of 7 images: n000003/0002_01\.png"):
        ImageFolderIdentities(root)


# ------------------------------------------------------------------ bad photos, small identities
def test_bad_image_raise_vs_skip(exported, tmp_path):
    root = _copy(exported, tmp_path)
    bad = root / "Synth_Person_0001" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    with pytest.raises(ValueError, match=r"broken\.jpg: not a readable image.*on_bad_image='skip'"):
        ImageFolderIdentities(root)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*broken\.jpg"):
        ds = ImageFolderIdentities(root, on_bad_image="skip")
    assert [p for p, _ in ds.skipped] == [bad] and len(ds) == N_IDS * PER_ID


def test_truncated_image_header_vs_decode(exported, tmp_path):
    root = _copy(exported, tmp_path)
    victim = root / "Synth_Person_0002" / "Synth_Person_0002_0003.png"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    ds = ImageFolderIdentities(root)  # the header reads: indexing keeps it ...
    with pytest.raises(ValueError, match=r"Synth_Person_0002_0003\.png: not a readable image"):
        ds[len(ds) - 1]  # ... and reading it names the file
    with pytest.warns(UserWarning, match="skipped 1"):
        decoded = ImageFolderIdentities(root, check="decode", on_bad_image="skip")
    assert len(decoded) == len(ds) - 1 and decoded.skipped[0][0] == victim


def test_identity_with_one_image_rejected_or_dropped(exported, tmp_path, capsys):
    root = _copy(exported, tmp_path)
    for f in sorted((root / "Synth_Person_0001").iterdir())[1:]:
        f.unlink()
    with pytest.raises(ValueError, match=r"Synth_Person_0001 \(1\).*min_images_per_identity=2.*small_identities='drop'"):
        ImageFolderIdentities(root)
    with pytest.warns(UserWarning, match=r"dropped 1 identity folder.*Synth_Person_0001"):
        ds = ImageFolderIdentities(root, small_identities="drop")
    assert ds.dropped_identities == ["Synth_Person_0001"]
    assert ds.identities == ["Synth_Person_0000", "Synth_Person_0002"] and ds.labels.tolist() == [0] * 3 + [1] * 3
    assert len(ImageFolderIdentities(root, min_images_per_identity=1)) == 7
    assert main(["fit", str(root), "--out", str(tmp_path / "fit"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"SUITE_OR_DIR {str(root)!r}" in err and "Synth_Person_0001 (1)" in err


def test_bad_image_reduces_an_identity_below_the_minimum(hand):
    root, _, _ = hand
    (root / "n000001" / "0003_01.PNG").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(ValueError, match=r"n000001 \(1\)"):
        ImageFolderIdentities(root, on_bad_image="skip")


def test_argument_errors(exported, tmp_path):
    with pytest.raises(ValueError, match="on_bad_image"):
        ImageFolderIdentities(exported, on_bad_image="ignore")
    with pytest.raises(ValueError, match="min_images_per_identity"):
        ImageFolderIdentities(exported, min_images_per_identity=0)
    with pytest.raises(FileNotFoundError, match="no such identity folder"):
        ImageFolderIdentities(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no identity folders"):
        ImageFolderIdentities(tmp_path / "empty")


# ------------------------------------------------------------------ facelab fit on the folder
def _mean_face_rmse(model, shapes, truth):
    """Face-region RMS vertex distance (mm), computed here with numpy."""
    face = model.face_mask.cpu().numpy().astype(bool)
    d2 = ((shapes.cpu().numpy() - truth.cpu().numpy())[:, face] ** 2).sum(-1)
    return np.sqrt(d2.mean(-1))


def test_cli_fit_equals_library_landmark_fit_and_recovers_shapes(exported, suite, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(exported), "--out", str(out), "--quiet", "--set", "n_steps=0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == N_IDS * PER_ID and summary["identities"] == N_IDS and summary["identity_rmse_mm"] is None
    with np.load(out / "targets.npz") as z:
        alpha_id, labels = torch.from_numpy(z["alpha_id"]), z["labels"]
        assert z["identity_labels"].tolist() == list(range(N_IDS))
    assert labels.tolist() == suite.table.label.tolist()

    # the same landmarks (read with json), fitted directly by the library's multi-image landmark fit
    sidecar = json.loads((exported / "landmarks.json").read_text())
    lm = torch.tensor([sidecar[k] for k in sorted(sidecar)], dtype=torch.float32)
    model = build_synthfaces(SynthFacesConfig(resolution="quick"))
    defaults, fit_cfg = PhotometricFitConfig(), CollectionFitConfig()
    lm_cfg = LandmarkFitConfig(**{**vars(defaults.landmark_fit), "n_shape": fit_cfg.n_shape,
                                  "landmark_std_px": defaults.landmark_std_px})
    direct = fit_landmarks(model, lm, torch.as_tensor(labels), config=lm_cfg)
    torch.testing.assert_close(alpha_id, direct.alpha_id, rtol=1e-5, atol=1e-5)

    # close to the suite's true identity shapes: much closer than the mean face
    truth = suite.identities(torch.stack([suite.table.identity[suite.table.label == k][0] for k in range(N_IDS)]))["shape"]
    fitted = load_fitted_targets(out / "targets.npz", ImageFolderIdentities(exported))
    per_id = fitted["shape_identity"][torch.arange(N_IDS) * PER_ID]
    err = _mean_face_rmse(model, per_id, truth)
    baseline = _mean_face_rmse(model, model.mean_shape.expand_as(truth), truth)
    assert (err < baseline).all() and err.mean() < MAX_FIT_TO_MEAN_RATIO * baseline.mean(), (err, baseline)


def test_cli_fit_equals_fit_collection_with_refinement(exported, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(exported), "--out", str(out), "--quiet", "--set", "n_steps=2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["identity_rmse_mm"] is None and report["n_steps"] == 2
    targets, _ = fit_collection(ImageFolderIdentities(exported), CollectionFitConfig(n_steps=2))
    with np.load(out / "targets.npz") as z:
        for key in ("alpha_id", "beta", "alpha_exp", "pose"):
            np.testing.assert_allclose(z[key], targets[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    # the targets name the folders they were fitted to: another person's folder is refused
    root = _copy(exported, tmp_path)
    (root / "Synth_Person_0002").rename(root / "Synth_Person_0009")
    sidecar = json.loads((root / "landmarks.json").read_text())
    renamed = {k.replace("Synth_Person_0002/", "Synth_Person_0009/"): v for k, v in sidecar.items()}
    (root / "landmarks.json").write_text(json.dumps(renamed))
    with pytest.raises(ValueError, match=r"another suite config.*identities"):
        load_fitted_targets(out / "targets.npz", ImageFolderIdentities(root))


def test_cli_fit_without_landmarks_says_they_are_needed(exported, tmp_path, capsys):
    root = _copy(exported, tmp_path)
    (root / "landmarks.json").unlink()
    assert main(["fit", str(root), "--out", str(tmp_path / "fit"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "needs 68 landmarks per photo" in err and "landmarks.json" in err
    assert "facelab[photo]" in err


def test_cli_fit_refusals(exported, tmp_path, capsys):
    assert main(["fit", str(exported), "--out", str(tmp_path / "a"), "--set", "n_identities=2"]) == 2
    assert "--set n_identities" in capsys.readouterr().err
    assert main(["fit", "webface", "--out", str(tmp_path / "b"), "--on-bad-image", "skip"]) == 2
    assert "--on-bad-image" in capsys.readouterr().err
