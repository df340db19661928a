"""``facelab fit ROOT --set morphable=PATH``: photos in identity folders fitted with a model file that
is not SynthFaces', the targets' record of it, and Liu et al.'s recipe trained on those targets."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.data import ImageFolderIdentities, SavedCollection, make_suite, save_collection
from facelab.fitting import CollectionFitConfig, fit_collection, fit_collection_study
from facelab.fitting.landmarks import LandmarkFitConfig, fit_landmarks
from facelab.fitting.photometric import PhotometricFitConfig
from facelab.fitting.targets import (
    PER_IDENTITY_KEYS, PER_IMAGE_KEYS, TARGETS_VERSION, TARGETS_VERSION_MORPHABLE, fitted_model, load_fitted_targets,
)
from facelab.io import load_morphable
from facelab.models.registry import load_model
from facelab.morphable import SynthFacesConfig, build_synthfaces

N_IDS, PER_ID, PHOTO_PX = 3, 3, 48
#: components kept of the other model's identity and expression bases
OTHER_COMPONENTS = 20
#: mm: the other model's mean face is SynthFaces' moved by this much
MEAN_SHIFT_MM = (1.5, -2.0, 3.0)
#: a tiny Liu et al. run (as tests/test_real_train_liu.py's)
TINY = ["image_size=32,32", "render_size=48,48", "phase_steps=3,2,3", "embedding_dim=16", "batch_size=8",
        "log_every=2", "progress=false", "num_threads=1", "cache_pool=false"]
#: the keys of a targets file without a model record (version 1), as `facelab fit` always wrote them
VERSION1_KEYS = {"format", "version", "n_images", "suite_config", *PER_IMAGE_KEYS, *PER_IDENTITY_KEYS}


def _set(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _other_model(seed: int = 0):
    """Quick SynthFaces with its identity and expression bases rotated within their leading
    :data:`OTHER_COMPONENTS` (a fixed random orthogonal matrix) and its mean face shifted."""
    base = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=OTHER_COMPONENTS,
                                                                             n_exp=OTHER_COMPONENTS)
    gen = torch.Generator().manual_seed(seed)
    q_id, _ = torch.linalg.qr(torch.randn(OTHER_COMPONENTS, OTHER_COMPONENTS, generator=gen, dtype=torch.float64))
    q_exp, _ = torch.linalg.qr(torch.randn(OTHER_COMPONENTS, OTHER_COMPONENTS, generator=gen, dtype=torch.float64))
    dt = base.shape_basis.dtype
    return dataclasses.replace(
        base, name="rotated-quick",
        shape_basis=base.shape_basis @ q_id.to(dt), exp_basis=base.exp_basis @ q_exp.to(dt),
        mean_shape=base.mean_shape + torch.tensor(MEAN_SHIFT_MM, dtype=dt),
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("fit_morphable")


@pytest.fixture(scope="module")
def photos(root):
    out = root / "photos"
    argv = ["synth", "webface", "--format", "imagefolder", "--out", str(out), "--quiet"]
    for key, value in dict(n_identities=N_IDS, images_per_identity=PER_ID, image_size=PHOTO_PX, resolution="quick").items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def other(root):
    return _other_model().save(root / "models" / "other.npz")


@pytest.fixture(scope="module")
def fit_other(photos, other, root):
    out = root / "fit_other"
    assert main(["fit", str(photos), "--out", str(out), "--quiet", "--set", f"morphable={other}", "--set", "n_steps=0"]) == 0
    return out


def _landmarks_and_labels(photos):
    """The photos' landmarks (read with json) ``(N, 68, 2)`` and identity labels in folder order."""
    sidecar = json.loads((photos / "landmarks.json").read_text())
    keys = sorted(sidecar)
    names = sorted({k.split("/")[0] for k in keys})
    return (torch.tensor([sidecar[k] for k in keys], dtype=torch.float32),
            torch.tensor([names.index(k.split("/")[0]) for k in keys]))


def _direct_alpha_id(model, photos) -> torch.Tensor:
    """The multi-image landmark fit of the photos, called here with the settings `facelab fit` uses."""
    lm, labels = _landmarks_and_labels(photos)
    defaults, fit_cfg = PhotometricFitConfig(), CollectionFitConfig()
    cfg = LandmarkFitConfig(**{**vars(defaults.landmark_fit), "n_shape": min(fit_cfg.n_shape, model.n_shape),
                               "landmark_std_px": defaults.landmark_std_px})
    return fit_landmarks(model, lm, labels, config=cfg).alpha_id


# ------------------------------------------------------------------ the fit with another model
def test_fit_with_model_file_equals_direct_landmark_fit(photos, other, fit_other):
    model = load_morphable(other)
    quick = build_synthfaces(SynthFacesConfig(resolution="quick"))
    assert model.content_sha256() != quick.content_sha256()
    with np.load(fit_other / "targets.npz") as z:
        assert int(z["version"]) == TARGETS_VERSION_MORPHABLE
        record = json.loads(str(z["morphable"]))
        alpha_id, labels = torch.from_numpy(z["alpha_id"]), z["labels"]
        assert z["alpha_exp"].shape == (N_IDS * PER_ID, OTHER_COMPONENTS)
        assert "resolution" not in json.loads(str(z["suite_config"]))
    # the model lies beside the targets' folder: recorded relative to it, with the absolute path too
    assert record["path"] == "../models/other.npz" and record["absolute_path"] == str(other.resolve())
    assert record["sha256"] == model.content_sha256()
    assert (record["n_shape"], record["n_exp"], record["n_verts"]) == (OTHER_COMPONENTS, OTHER_COMPONENTS, quick.n_verts)
    assert alpha_id.shape == (N_IDS, OTHER_COMPONENTS)
    assert labels.tolist() == _landmarks_and_labels(photos)[1].tolist()
    torch.testing.assert_close(alpha_id, _direct_alpha_id(model, photos), rtol=1e-5, atol=1e-5)
    report = json.loads((fit_other / "report.json").read_text())
    assert report["morphable"]["sha256"] == model.content_sha256()

    # read back: the model is the recorded file's, the shapes its mean + basis sum (computed here)
    folder = ImageFolderIdentities(photos)
    assert fitted_model(fit_other / "targets.npz", folder).content_sha256() == model.content_sha256()
    t = load_fitted_targets(fit_other / "targets.npz", folder)
    mean, basis = model.mean_shape.double().numpy(), model.shape_basis.double().numpy()
    neutral = mean + (basis @ alpha_id[0].double().numpy()).reshape(-1, 3)
    np.testing.assert_allclose(t["shape_identity"][0].numpy(), neutral, atol=1e-3)


def test_model_file_changed_or_missing_is_named(photos, other, fit_other, tmp_path):
    """The record names the file: same content elsewhere reads, changed or gone is refused with both hashes."""
    moved = tmp_path / "moved.npz"
    shutil.copy(other, moved)
    with np.load(fit_other / "targets.npz") as z:
        arrays = {k: z[k] for k in z.files}
    record = json.loads(str(arrays["morphable"]))
    arrays["morphable"] = np.array(json.dumps({**record, "path": str(moved)}))
    targets = tmp_path / "targets.npz"
    np.savez(targets, **arrays)
    folder = ImageFolderIdentities(photos)
    assert fitted_model(targets, folder).content_sha256() == record["sha256"]

    changed = _other_model(seed=1)
    changed.save(moved)
    for read in (lambda: fitted_model(targets, folder), lambda: load_fitted_targets(targets, folder)):
        with pytest.raises(ValueError, match=rf"moved\.npz: the morphable model now has sha256 {changed.content_sha256()}"
                                              rf", but .*targets\.npz was fitted with .* sha256 {record['sha256']}"):
            read()
    quick = build_synthfaces(SynthFacesConfig(resolution="quick"))
    with pytest.raises(ValueError, match=rf"model: .* sha256 {quick.content_sha256()}, .* sha256 {record['sha256']}"):
        load_fitted_targets(targets, folder, model=quick)
    assert load_fitted_targets(targets, folder, model=load_morphable(other))["alpha_id"].shape[1] == OTHER_COMPONENTS
    moved.unlink()
    with pytest.raises(FileNotFoundError, match=rf"moved\.npz: the morphable model .*targets\.npz was fitted with"):
        fitted_model(targets, folder)


def _fit(photos, model, out):
    assert main(["fit", str(photos), "--out", str(out), "--quiet", "--set", f"morphable={model}", "--set", "n_steps=0"]) == 0
    with np.load(out / "targets.npz") as z:
        return json.loads(str(z["morphable"])), torch.from_numpy(z["alpha_id"])


def test_folder_moved_with_its_model_still_reads(photos, other, tmp_path):
    """A model inside or beside the targets' folder is found relative to the targets file after the
    tree moves; one elsewhere keeps its absolute path; the content hash is checked either way."""
    before = tmp_path / "before"
    shutil.copytree(photos, before / "photos")
    shutil.copy(other, before / "model.npz")
    beside, alpha_id = _fit(before / "photos", before / "model.npz", before / "fit")
    assert beside["path"] == "../model.npz"
    shutil.copy(other, before / "fit" / "own.npz")
    inside, _ = _fit(before / "photos", before / "fit" / "own.npz", before / "fit_inside")
    assert inside["path"] == "../fit/own.npz"
    elsewhere, _ = _fit(before / "photos", other, before / "fit_elsewhere")
    assert elsewhere["path"] == str(other.resolve()) and "absolute_path" not in elsewhere

    after = tmp_path / "after"
    (before).rename(after)  # nothing is left at the recorded absolute paths
    folder = ImageFolderIdentities(after / "photos")
    for fit in ("fit", "fit_inside", "fit_elsewhere"):
        assert fitted_model(after / fit / "targets.npz", folder).content_sha256() == beside["sha256"]
    targets = load_fitted_targets(after / "fit" / "targets.npz", folder)
    torch.testing.assert_close(targets["alpha_id"][0], alpha_id[0])

    # the targets' folder moved alone: the model is found where it was at fit time
    alone = tmp_path / "alone" / "fit"
    shutil.copytree(after / "fit", alone)
    record = dict(beside, absolute_path=str(after / "model.npz"))
    with np.load(alone / "targets.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(alone / "targets.npz", **{**arrays, "morphable": np.array(json.dumps(record))})
    assert fitted_model(alone / "targets.npz", folder).content_sha256() == beside["sha256"]

    # the model beside it changed: refused, naming the file the relative path leads to
    changed = _other_model(seed=1)
    changed.save(after / "model.npz")
    with pytest.raises(ValueError, match=rf"after/model\.npz: the morphable model now has sha256 {changed.content_sha256()}"):
        load_fitted_targets(after / "fit" / "targets.npz", folder)
    (after / "model.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"after/model\.npz: the morphable model .* \(recorded as \.\./model\.npz"):
        fitted_model(after / "fit" / "targets.npz", folder)


def test_record_and_version_must_agree(photos, fit_other, tmp_path):
    with np.load(fit_other / "targets.npz") as z:
        arrays = {k: z[k] for k in z.files}
    folder = ImageFolderIdentities(photos)
    cases = {"v1_with_record": {**arrays, "version": np.array(TARGETS_VERSION)},
             "v2_without_record": {k: v for k, v in arrays.items() if k != "morphable"},
             "bad_record": {**arrays, "morphable": np.array('{"path": "x.npz"}')}}
    for name, case in cases.items():
        np.savez(tmp_path / f"{name}.npz", **case)
    with pytest.raises(ValueError, match=r"v1_with_record\.npz: corrupt fitted-targets file, version 1 with a morphable"):
        fitted_model(tmp_path / "v1_with_record.npz", folder)
    with pytest.raises(ValueError, match=r"v2_without_record\.npz: corrupt fitted-targets file, version 2 without"):
        load_fitted_targets(tmp_path / "v2_without_record.npz", folder)
    with pytest.raises(ValueError, match=r"bad_record\.npz: corrupt fitted-targets file, morphable: expected a morphable"):
        fitted_model(tmp_path / "bad_record.npz", folder)


def test_partial_landmark_model_fits_its_mapped_points(photos, other, tmp_path):
    """A model mapping no jaw contour (iBUG 1-17): the fit uses the other 51 points."""
    model = load_morphable(other)
    lm = model.landmarks.clone()
    lm[:17] = -1
    partial = dataclasses.replace(model, landmarks=lm)
    path = partial.save(tmp_path / "partial.npz")
    folder = ImageFolderIdentities(photos)
    targets, _ = fit_collection(folder, CollectionFitConfig(n_steps=0, morphable=str(path)))
    torch.testing.assert_close(targets["alpha_id"], _direct_alpha_id(partial, photos), rtol=1e-5, atol=1e-5)
    # the 68-point fit of the same model differs: the jaw points were left out
    full = _direct_alpha_id(model, photos)
    assert not torch.allclose(targets["alpha_id"], full, atol=1e-3)
    refined, _ = fit_collection(folder, CollectionFitConfig(n_steps=1, morphable=str(path)))
    assert torch.isfinite(refined["residual_px"]).all() and torch.isfinite(refined["alpha_id"]).all()


# ------------------------------------------------------------------ Liu et al. on those targets
def _liu_args(photos, targets, *extra):
    return ["data.kind=imagefolder", f"data.train={photos}", "targets=fitted", f"targets_path={targets}", *TINY, *extra]


def test_liu_trains_with_the_fitted_model_file(photos, other, fit_other, root):
    run = root / "liu_other"
    argv = ["train", "liu2018", "--out", str(run), *_set(_liu_args(photos, fit_other / "targets.npz", f"morphable={other}"))]
    assert main(argv) == 0
    model, ckpt = load_model(run / "phase3.pt", expect_model="liu2018")
    record = ckpt["model_config"]["morphable"]
    assert record["sha256"] == load_morphable(other).content_sha256() and record["path"] == str(other.resolve())
    assert (model.n_id, model.n_res) == (OTHER_COMPONENTS, OTHER_COMPONENTS)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out["c_id"].shape == (2, OTHER_COMPONENTS) and out["shape"].shape == (2, 1353, 3)
    assert torch.isfinite(out["shape"]).all()

    # resumes: run again when finished, nothing is rewritten; without its last published checkpoint,
    # the run finishes from phase3/last.pt with the same weights
    phases = ("phase1.pt", "phase2.pt", "phase3.pt")
    before = {name: (run / name).stat().st_mtime_ns for name in phases}
    weights = torch.load(run / "phase3.pt", weights_only=True)["state_dict"]
    assert main(argv) == 0
    assert {name: (run / name).stat().st_mtime_ns for name in phases} == before
    (run / "phase3.pt").unlink()
    assert main(argv) == 0
    again = torch.load(run / "phase3.pt", weights_only=True)["state_dict"]
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    assert load_model(run / "phase3.pt")[1]["model_config"]["morphable"] == record


def test_liu_refuses_another_model_than_the_fit(photos, other, fit_other, root, capsys):
    quick = build_synthfaces(SynthFacesConfig(resolution="quick")).save(root / "models" / "quick.npz")
    for extra in ([f"morphable={quick}"], []):  # a SynthFaces file, or the default SynthFaces
        run = root / f"liu_refused_{len(extra)}"
        argv = ["train", "liu2018", "--out", str(run), *_set(_liu_args(photos, fit_other / "targets.npz", *extra))]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is not the model" in err and "targets.npz was fitted with" in err and "sha256" in err, err
        assert not (run / "phase1.pt").exists()


# ------------------------------------------------------------------ suites refuse it; the default is unchanged
def test_generated_and_saved_suites_refuse_a_model_file(other, tmp_path, capsys):
    assert main(["fit", "webface", "--out", str(tmp_path / "a"), "--set", f"morphable={other}"]) == 2
    assert "--set morphable: the generated suite 'webface'" in capsys.readouterr().err
    suite = make_suite("webface", n_identities=2, images_per_identity=2, image_size=16, resolution="quick")
    saved = SavedCollection(save_collection(suite, tmp_path / "saved", progress=False))
    assert main(["fit", str(saved.root), "--out", str(tmp_path / "b"), "--set", f"morphable={other}"]) == 2
    assert "--set morphable: a saved folder" in capsys.readouterr().err
    for collection in (suite, saved):
        with pytest.raises(ValueError, match=r"morphable: .*own SynthFaces model"):
            fit_collection(collection, CollectionFitConfig(morphable=str(other)))
    with pytest.raises(ValueError, match=r"morphable: the generated suite 'webface'"):
        fit_collection_study(CollectionFitConfig(morphable=str(other)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_model_file_argument_errors(photos, other, tmp_path, capsys):
    out = str(tmp_path / "fit")
    assert main(["fit", str(photos), "--out", out, "--set", f"morphable={other}", "--set", "resolution=default"]) == 2
    assert "--set resolution" in capsys.readouterr().err
    assert main(["fit", str(photos), "--out", out, "--quiet", "--set", f"morphable={tmp_path / 'none.npz'}"]) == 2
    assert "none.npz" in capsys.readouterr().err
    bare = dataclasses.replace(load_morphable(other), albedo_basis=torch.zeros(load_morphable(other).n_verts * 3, 0),
                               albedo_std=torch.zeros(0))
    no_albedo = bare.save(tmp_path / "no_albedo.npz")
    with pytest.raises(ValueError, match=r"morphable: .*no_albedo\.npz has no albedo basis"):
        fit_collection(ImageFolderIdentities(photos), CollectionFitConfig(morphable=str(no_albedo)))
    with pytest.raises(ValueError, match=r"morphable: expected the path"):
        CollectionFitConfig(morphable="")


def test_default_fit_unchanged(photos, other, root, fit_other):
    """Without morphable: a version-1 file with exactly its old keys and SynthFaces' coefficients;
    a file of SynthFaces' own model fits the same numbers and only adds its record."""
    default = root / "fit_default"
    assert main(["fit", str(photos), "--out", str(default), "--quiet", "--set", "n_steps=0"]) == 0
    quick = build_synthfaces(SynthFacesConfig(resolution="quick"))
    expected, _ = fit_collection(ImageFolderIdentities(photos), CollectionFitConfig(n_steps=0))
    with np.load(default / "targets.npz") as z:
        assert set(z.files) == VERSION1_KEYS and int(z["version"]) == TARGETS_VERSION
        assert json.loads(str(z["suite_config"]))["resolution"] == "quick"
        for key in PER_IMAGE_KEYS + PER_IDENTITY_KEYS:
            assert np.array_equal(z[key], expected[key].numpy()), key
        torch.testing.assert_close(torch.from_numpy(z["alpha_id"]), _direct_alpha_id(quick, photos), rtol=1e-5, atol=1e-5)
        default_arrays = {k: z[k] for k in PER_IMAGE_KEYS + PER_IDENTITY_KEYS}
    assert fitted_model(default / "targets.npz", ImageFolderIdentities(photos)).content_sha256() == quick.content_sha256()

    same = root / "fit_quick_file"
    quick_file = quick.save(root / "models" / "quick-copy.npz")
    assert main(["fit", str(photos), "--out", str(same), "--quiet", "--set", f"morphable={quick_file}", "--set", "n_steps=0"]) == 0
    with np.load(same / "targets.npz") as z:
        assert set(z.files) == VERSION1_KEYS | {"morphable"}
        for key, value in default_arrays.items():
            np.testing.assert_allclose(z[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    with np.load(fit_other / "targets.npz") as z:  # the other model fits other numbers
        assert z["alpha_id"].shape != default_arrays["alpha_id"].shape
