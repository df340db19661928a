"""Training the SIR recipe on folders (``data.kind=real``: a 300W-LP-layout folder of landmark-labelled
images and a folder of identity folders) and with a morphable-model file (``morphable=PATH``),
end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facelab.cli import main
from facelab.config import apply_overrides
from facelab.models.registry import load_evaluable, load_model
from facelab.morphable import SynthFacesConfig, build_synthfaces
from facelab.train.sir import SIRDataConfig, SIRTrainConfig, _prepare
from facelab.train.trainer import step_indices

LP_IDENTITIES, ID_IDENTITIES, IMAGES_PER_IDENTITY, PX = 3, 4, 3, 32
#: a tiny run (as the golden test's SIR overrides): 32 px images, 2 steps per stage, a 10-identity SFM
TINY = ["image_size=32,32", "n_shape=8", "n_exp=4", "base_steps=2", "steps=2", "batch_lp=4", "batch_id=4",
        "ids_per_batch=2", "sfm_identities=10", "sfm_samples=3", "sfm_steps=5", "progress=false",
        "cache_pool=false", "log_every=1", "num_threads=1"]
STAGE_FILES = ("base.pt", "params_recog.pt", "params_recog_sir.pt", "sfm_sir.pt")


def _set(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """LP: 3 x 3 images in the 300W-LP layout (with model.npz); IDS: 4 identity folders x 3 photos."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real_sir")
    sizes = [f"image_size={PX}", "resolution=quick", f"images_per_identity={IMAGES_PER_IDENTITY}"]
    assert main(["synth", "lp", "--format", "lp300w", "--out", str(root / "lp"), "--quiet",
                 *_set(sizes + [f"n_identities={LP_IDENTITIES}"])]) == 0
    assert main(["synth", "webface", "--format", "imagefolder", "--out", str(root / "ids"), "--quiet",
                 *_set(sizes + [f"n_identities={ID_IDENTITIES}"])]) == 0
    return root


def _real_args(root: Path) -> list[str]:
    return ["data.kind=real", f"data.labelled={root / 'lp'}", f"data.identities={root / 'ids'}",
            f"morphable={root / 'lp' / 'model.npz'}", *TINY]


def _train(root: Path, out: Path, args: list[str] | None = None) -> int:
    return main(["train", "sir", "--out", str(out), *_set(_real_args(root) if args is None else args)])


@pytest.fixture(scope="module")
def run(folders):
    assert _train(folders, folders / "run") == 0
    return folders / "run"


# ------------------------------------------------------------------ the data the recipe trains on
def test_pools_match_the_files(folders):
    """The recipe's rows against the PNGs, the .mat files and the folder names, read here with PIL / scipy."""
    cfg = apply_overrides(SIRTrainConfig(), _real_args(folders))
    data = _prepare(cfg)
    lp, ids = data["pools"]["lp"], data["pools"]["webface"]
    assert data["n_classes"] == ID_IDENTITIES
    assert data["morphable_record"]["path"] == str((folders / "lp" / "model.npz").resolve())

    pngs = sorted((folders / "lp").glob("*.png"))
    assert lp["image"].shape == (LP_IDENTITIES * IMAGES_PER_IDENTITY, 3, PX, PX) and lp["image"].dtype == torch.uint8
    for i, png in enumerate(pngs):
        pixels = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(lp["image"][i], pixels)  # same size: the 8-bit file exactly
        mat = scipy.io.loadmat(png.with_suffix(".mat"))
        want = mat["pt3d_68"][:2].T - 0.5  # 1-based pixel centres -> facelab's (centre of pixel 0 at 0.5)
        np.testing.assert_allclose(lp["landmarks2d"][i].numpy(), want, atol=1e-4)
        assert np.ptp(want[:, 0]) > PX / 4  # a face's landmarks, not a placeholder

    names = sorted(p.name for p in (folders / "ids").iterdir() if p.is_dir())
    files = [f for name in names for f in sorted((folders / "ids" / name).glob("*.png"))]
    assert ids["label"].tolist() == [names.index(f.parent.name) for f in files]
    for i in (0, len(files) - 1):
        pixels = torch.from_numpy(np.array(Image.open(files[i]).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(ids["image"][i], pixels)
    # the landmarks.json of the identity folder is not a label the recipe uses
    assert set(ids) == {"image", "label"} and json.loads((folders / "ids" / "landmarks.json").read_text())

    # a mixed batch: landmark rows of LP (no label), identity rows of IDS (labels of their folders)
    from facelab.train.sir import mixed_batches

    batch = mixed_batches(lp, ids, cfg.batch_lp, cfg.batch_id, cfg.ids_per_batch, cfg.train.seed)(1)
    li = step_indices(len(pngs), cfg.batch_lp, 1, cfg.train.seed)
    assert torch.equal(batch["landmarks2d"][: cfg.batch_lp], lp["landmarks2d"][li])
    assert batch["label"][: cfg.batch_lp].tolist() == [-1] * cfg.batch_lp
    assert set(batch["label"][cfg.batch_lp:].tolist()) <= set(range(ID_IDENTITIES))


# ------------------------------------------------------------------ train, load, resume
def test_train_from_folders_loads_and_runs(folders, run):
    for name in STAGE_FILES:
        assert (run / name).is_file()
    model, ckpt = load_model(run / "params_recog_sir.pt", expect_model="sir")
    assert model.head.n_classes == ID_IDENTITIES
    record = ckpt["model_config"]["morphable"]
    assert record["path"] == str((folders / "lp" / "model.npz").resolve())
    assert record["sha256"] == build_synthfaces(SynthFacesConfig(resolution="quick")).content_sha256()
    recipe = ckpt["extra"]["recipe"]
    assert recipe["data"] == {"kind": "real", "labelled": str(folders / "lp"), "identities": str(folders / "ids")}
    sfm, _ = load_model(run / "sfm_sir.pt", expect_model="sir")
    assert sfm.sfm is not None and sfm.head.n_classes == ID_IDENTITIES
    evaluable = load_evaluable(run / "params_recog.pt")
    rec = evaluable.reconstruct(torch.rand(2, 3, PX, PX))
    assert rec["identity_shape"].shape == (2, 1353, 3) and rec["embedding"].shape == (2, 8)
    assert torch.isfinite(rec["shape"]).all()


def _mtimes(run: Path) -> dict[str, int]:
    return {name: (run / name).stat().st_mtime_ns for name in STAGE_FILES}


def test_rerun_finished_is_noop_and_interrupted_resumes(folders, run):
    before = _mtimes(run)
    assert _train(folders, run) == 0
    assert _mtimes(run) == before  # finished: nothing retrained or rewritten

    weights = torch.load(run / "params_recog_sir.pt", weights_only=True)["state_dict"]
    logged = (run / "params_recog_sir" / "metrics.jsonl").read_text()
    (run / "params_recog_sir.pt").unlink()  # as if stopped before publishing: its last.pt holds the last step
    assert _train(folders, run) == 0
    after = _mtimes(run)
    assert {k: after[k] for k in STAGE_FILES if k != "params_recog_sir.pt"} == \
        {k: before[k] for k in STAGE_FILES if k != "params_recog_sir.pt"}
    assert (run / "params_recog_sir" / "metrics.jsonl").read_text() == logged  # no step trained again
    again = torch.load(run / "params_recog_sir.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_changed_or_missing_morphable_file_is_refused(folders, run, tmp_path):
    ckpt = torch.load(run / "params_recog.pt", weights_only=False)
    moved = tmp_path / "model.npz"
    moved.write_bytes((folders / "lp" / "model.npz").read_bytes())
    ckpt["model_config"]["morphable"]["path"] = str(moved)
    torch.save(ckpt, tmp_path / "moved.pt")
    assert load_model(tmp_path / "moved.pt")[0].head.n_classes == ID_IDENTITIES  # same content elsewhere: fine
    build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=40).save(moved)
    with pytest.raises(ValueError, match=r"model\.npz: the morphable model now has sha256 .* trained with sha256"):
        load_model(tmp_path / "moved.pt")
    moved.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.npz: the morphable model this network was trained with"):
        load_model(tmp_path / "moved.pt")


# ------------------------------------------------------------------ clear errors
def test_missing_folders_raise(folders, tmp_path):
    args = _real_args(folders)
    for key in ("data.labelled", "data.identities"):
        bad = [a for a in args if not a.startswith(key + "=")] + [f"{key}={tmp_path / 'nowhere'}"]
        with pytest.raises(FileNotFoundError, match="nowhere"):
            _prepare(apply_overrides(SIRTrainConfig(), bad))
        assert _train(folders, tmp_path / "run", bad) == 2
    assert not (tmp_path / "run" / "base.pt").exists()


def test_another_model_and_sfm_variant(folders, tmp_path):
    """SFM stage 1 learns from SynthFaces' 3D population: another model trains the PCA variants only."""
    other = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=40).save(tmp_path / "other.npz")
    args = [a for a in _real_args(folders) if not a.startswith("morphable=")] + [f"morphable={other}"]
    with pytest.raises(ValueError, match=r"variants: 'sfm_sir' learns its Sphere Face Model .*/other\.npz"):
        _prepare(apply_overrides(SIRTrainConfig(), args))
    assert _train(folders, tmp_path / "run", args) == 2
    data = _prepare(apply_overrides(SIRTrainConfig(), args + ["variants=params_recog"]))
    assert data["morphable"].n_shape == 40 and data["morphable_record"]["path"] == str(other.resolve())

    import dataclasses

    no_marks = build_synthfaces(SynthFacesConfig(resolution="quick"))  # a model without landmark vertices
    no_marks = dataclasses.replace(no_marks, landmarks=no_marks.landmarks[:0]).save(tmp_path / "bare.npz")
    with pytest.raises(ValueError, match=r"morphable: .*bare\.npz has 0 landmark vertices"):
        _prepare(apply_overrides(SIRTrainConfig(), args + [f"morphable={no_marks}", "variants=params_recog"]))


def test_labelled_image_missing_landmarks_raises(folders, tmp_path):
    """An annotation with -1 markers (no pt3d_68) is not given invented positions."""
    import shutil

    lp = tmp_path / "lp"
    shutil.copytree(folders / "lp", lp)
    mat_path = sorted(lp.glob("*.mat"))[1]
    mat = scipy.io.loadmat(mat_path)
    pt2d = mat["pt2d"].copy()
    pt2d[:, :3] = -1
    scipy.io.savemat(mat_path, {k: mat[k] for k in ("Pose_Para", "Shape_Para", "Exp_Para")} | {"pt2d": pt2d})
    args = [a for a in _real_args(folders) if not a.startswith("data.labelled=")] + [f"data.labelled={lp}"]
    with pytest.raises(ValueError, match=rf"{mat_path.name}: 65 of the 68 landmarks .* are there"):
        _prepare(apply_overrides(SIRTrainConfig(), args))


def test_data_config_errors(folders):
    with pytest.raises(ValueError, match=r"data.identities: data.kind='real' needs"):
        apply_overrides(SIRTrainConfig(), ["data.kind=real", f"data.labelled={folders / 'lp'}"])
    with pytest.raises(ValueError, match=r"data.labelled: data.kind='real' needs"):
        SIRTrainConfig(data=SIRDataConfig(kind="real", identities="x"))
    with pytest.raises(ValueError, match=r"data.kind"):
        SIRDataConfig(kind="imagefolder")
    with pytest.raises(ValueError, match=r"data.labelled: .* data.kind='real' only"):
        apply_overrides(SIRTrainConfig(), [f"data.labelled={folders / 'lp'}"])
    with pytest.raises(ValueError, match=r"ids_per_batch: 5 exceeds the 4 identity folders"):
        _prepare(apply_overrides(SIRTrainConfig(), _real_args(folders) + ["ids_per_batch=5", "batch_id=5"]))


def test_default_config_unchanged():
    cfg = SIRTrainConfig()
    assert cfg.data == SIRDataConfig() and cfg.data.kind == "synth" and cfg.morphable is None
    assert apply_overrides(SIRTrainConfig(), ["identities=IDS", "labelled=LP", "kind=real"]).data.identities == "IDS"


def test_reproduction_needs_the_suite_mesh(tmp_path):
    """`facelab reproduce sir` scores on SynthFaces suites: a model in another mesh is refused before training."""
    import dataclasses

    from facelab.reproduce.sir import require_suite_mesh, reproduce_sir

    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    same_mesh = mm.truncate(n_shape=40).save(tmp_path / "same_mesh.npz")
    require_suite_mesh(SIRTrainConfig(morphable=str(same_mesh), variants=("params_recog",)))
    other_mesh = dataclasses.replace(mm, faces=mm.faces.flip(1)).save(tmp_path / "other_mesh.npz")
    with pytest.raises(ValueError, match=r"train.morphable: .*other_mesh\.npz .* not in the mesh of the SynthFaces"):
        reproduce_sir("quick", tmp_path / "run", overrides=[f"train.morphable={other_mesh}", "train.variants=params_recog"])
    assert not (tmp_path / "run").exists()
