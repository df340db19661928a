"""Training Liu et al. 2018 on photos in identity folders (``data.kind=imagefolder``) and with a
morphable-model file (``morphable=PATH``), end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelab.cli import main
from facelab.config import apply_overrides
from facelab.data import make_suite
from facelab.data.align import align_faces
from facelab.data.image_folder import export_image_folder
from facelab.models.registry import load_evaluable, load_model
from facelab.morphable import SynthFacesConfig, build_synthfaces
from facelab.train.liu2018 import DataConfig, Liu2018TrainConfig, _prepare

N_IDENTITIES, IMAGES_PER_IDENTITY, PHOTO_PX = 4, 3, 48
#: a tiny run (as the golden test's): 32 px crops of 48 px photos, a few steps per phase
TINY = ["image_size=32,32", "render_size=48,48", "phase_steps=6,4,6", "embedding_dim=16", "batch_size=8",
        "log_every=2", "progress=false", "num_threads=1", "cache_pool=false"]
FIT_STEPS = 5
PHASES = ("phase1.pt", "phase2.pt", "phase3.pt")


def _set(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 4-identity x 3-photo folder in the CASIA layout and its `facelab fit` targets."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real")
    suite = make_suite("webface", n_identities=N_IDENTITIES, images_per_identity=IMAGES_PER_IDENTITY,
                       image_size=PHOTO_PX, resolution="quick")
    export_image_folder(suite, root / "photos")
    assert main(["fit", str(root / "photos"), "--out", str(root / "fit"), "--quiet", "--set", f"n_steps={FIT_STEPS}"]) == 0
    return root


def _folder_args(root: Path) -> list[str]:
    return ["data.kind=imagefolder", f"data.train={root / 'photos'}", "targets=fitted",
            f"targets_path={root / 'fit' / 'targets.npz'}", *TINY]


def _train(root: Path, out: Path, *extra: str) -> Path:
    assert main(["train", "liu2018", "--out", str(out), *_set(_folder_args(root) + list(extra))]) == 0
    return out


@pytest.fixture(scope="module")
def run(folder):
    return _train(folder, folder / "run")


@pytest.fixture(scope="module")
def saved_model(folder):
    """The default SynthFaces model (quick) saved as a facelab .npz."""
    return build_synthfaces(SynthFacesConfig(resolution="quick")).save(folder / "models" / "synthfaces-quick.npz")


# ------------------------------------------------------------------ the data the recipe trains on
def test_folder_pool_matches_files_and_targets(folder):
    """Pool rows against the PNGs, landmarks.json and targets.npz, read here with PIL / json / numpy."""
    cfg = apply_overrides(Liu2018TrainConfig(), _folder_args(folder))
    data = _prepare(cfg)
    assert data["n_classes"] == N_IDENTITIES and data["morphable_record"] is None
    n = N_IDENTITIES * IMAGES_PER_IDENTITY
    from facelab.data import ImageFolderIdentities
    from facelab.fitting.targets import load_fitted_targets
    from facelab.train.liu2018 import FolderTargets, folder_pool
    from facelab.train.trainer import step_indices

    photos = ImageFolderIdentities(folder / "photos", image_size=(PHOTO_PX, PHOTO_PX))
    pool = folder_pool(FolderTargets(photos, load_fitted_targets(cfg.targets_path, photos), align_to=(32, 32)))
    assert pool["image"].shape == (n, 3, 32, 32) and pool["image"].dtype == torch.uint8
    # the recipe's batches are rows of this pool, drawn by step
    idx = step_indices(n, cfg.train.batch_size, 1, cfg.train.seed)
    batch = data["batches"](1)
    assert torch.equal(batch["image"], pool["image"][idx].float() / 255)
    assert all(torch.equal(batch[k], pool[k][idx]) for k in ("label", "alpha_id", "alpha_exp", "shape", "shape_identity"))
    # streamed (pool=False): the same rows, the images not rounded to 8 bits
    streamed = _prepare(apply_overrides(cfg, ["pool=false", "num_workers=0"]))["batches"](1)
    assert all(torch.equal(streamed[k], pool[k][idx]) for k in ("label", "shape", "shape_identity"))
    assert (streamed["image"] - batch["image"]).abs().max() <= 0.5 / 255 + 1e-6

    # labels: sorted folder names, 3 photos each
    names = sorted(p.name for p in (folder / "photos").iterdir() if p.is_dir())
    files = [p for name in names for p in sorted((folder / "photos" / name).glob("*.png"))]
    assert pool["label"].tolist() == [names.index(f.parent.name) for f in files]

    # targets: per identity s = mean + B_id alpha_id, + B_exp alpha_exp per image (numpy, from the files)
    z = np.load(folder / "fit" / "targets.npz")
    mm = build_synthfaces(SynthFacesConfig(resolution="quick"))
    mean, b_id, b_exp = (t.double().numpy() for t in (mm.mean_shape, mm.shape_basis, mm.exp_basis))
    row = {int(k): r for r, k in enumerate(z["identity_labels"])}
    for i, f in enumerate(files):
        a_id = np.zeros(mm.n_shape)
        a_id[: z["alpha_id"].shape[1]] = z["alpha_id"][row[int(z["labels"][i])]]
        a_exp = np.zeros(mm.n_exp)
        a_exp[: z["alpha_exp"].shape[1]] = z["alpha_exp"][i]
        neutral = mean + (b_id @ a_id).reshape(-1, 3)
        np.testing.assert_allclose(pool["shape_identity"][i].numpy(), neutral, atol=1e-3)
        np.testing.assert_allclose(pool["shape"][i].numpy(), neutral + (b_exp @ a_exp).reshape(-1, 3), atol=1e-3)

    # images: the PNG read with PIL, cut by the five points of its landmarks.json entry
    marks = json.loads((folder / "photos" / "landmarks.json").read_text())
    i = len(files) - 1
    photo = torch.from_numpy(np.asarray(Image.open(files[i]).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    lm = torch.tensor(marks[files[i].relative_to(folder / "photos").as_posix()], dtype=torch.float32)
    crop = align_faces(photo[None], lm[None], (32, 32))[0][0]
    assert (pool["image"][i].float() / 255 - crop).abs().max() <= 1 / 255 + 1e-6


# ------------------------------------------------------------------ train, load, resume
def test_train_from_folder_loads_and_runs(run):
    for name in PHASES:
        assert (run / name).is_file()
    model, ckpt = load_model(run / "phase3.pt", expect_model="liu2018")
    assert ckpt["model_config"]["model"]["n_classes"] == N_IDENTITIES
    assert "morphable" not in ckpt["model_config"]  # the default model: SynthFaces at the resolution
    assert ckpt["extra"]["recipe"]["data"]["kind"] == "imagefolder"
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out["c_id"].shape == (2, model.n_id) and out["shape"].shape == (2, 1353, 3)
    evaluable = load_evaluable(run / "phase3.pt")
    from facelab.data import ImageFolderIdentities

    photos = ImageFolderIdentities(run.parent / "photos", image_size=evaluable.config.image_size)
    rec = evaluable.reconstruct(evaluable.prepare_images(photos.batch(torch.arange(3))), None)
    assert rec["embedding"].shape == (3, model.n_id) and rec["identity_shape"].shape == (3, 1353, 3)
    assert torch.isfinite(rec["shape"]).all()


def _mtimes(run: Path) -> dict[str, int]:
    return {name: (run / name).stat().st_mtime_ns for name in PHASES}


def test_rerun_finished_is_noop_and_interrupted_resumes(folder, run):
    before = _mtimes(run)
    logged = (run / "phase3" / "metrics.jsonl").read_text()
    _train(folder, run)
    assert _mtimes(run) == before  # finished: nothing retrained or rewritten

    weights = torch.load(run / "phase3.pt", weights_only=True)["state_dict"]
    (run / "phase3.pt").unlink()  # as if stopped before publishing: phase3/last.pt holds the last step
    _train(folder, run)
    after = _mtimes(run)
    assert {k: after[k] for k in PHASES[:2]} == {k: before[k] for k in PHASES[:2]}
    assert (run / "phase3" / "metrics.jsonl").read_text() == logged  # resumed at the end: no step trained again
    again = torch.load(run / "phase3.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


# ------------------------------------------------------------------ morphable=PATH
def test_morphable_file_same_model_as_default(folder, run, saved_model):
    other = _train(folder, folder / "run_npz", f"morphable={saved_model}")
    a, ckpt = load_model(run / "phase3.pt")
    b, ckpt_b = load_model(other / "phase3.pt")
    record = ckpt_b["model_config"]["morphable"]
    assert record["path"] == str(saved_model.resolve())
    assert record["sha256"] == build_synthfaces(SynthFacesConfig(resolution="quick")).content_sha256()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    # the checkpoint names the file: changed or gone, the network is not rebuilt from it
    changed = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=40)
    moved = folder / "models" / "moved.npz"
    shutil.copy(saved_model, moved)
    ckpt_b["model_config"]["morphable"]["path"] = str(moved)
    torch.save(ckpt_b, folder / "moved.pt")
    assert load_model(folder / "moved.pt")[0].n_id == b.n_id  # same content elsewhere: fine
    changed.save(moved)
    with pytest.raises(ValueError, match=r"moved\.npz: the morphable model now has sha256 .* trained with sha256"):
        load_model(folder / "moved.pt")
    moved.unlink()
    with pytest.raises(FileNotFoundError, match=r"moved\.npz: the morphable model this network was trained with"):
        load_model(folder / "moved.pt")


def test_morphable_file_on_synth_suite(tmp_path, saved_model):
    """data.kind=synth: a file of the suite's own model trains the same weights as the default."""
    common = dict(image_size=(32, 32), render_size=(48, 48), resolution="quick", n_identities=4, images_per_identity=2,
                  phase_steps=(3, 1, 1), embedding_dim=16, cache_pool=False, stages=("phase1",), num_threads=1)
    from facelab.train.liu2018 import train_liu2018
    from facelab.train.trainer import LoopConfig

    loop = LoopConfig(batch_size=4, log_every=1, progress=False)
    a = train_liu2018(Liu2018TrainConfig(out_dir=str(tmp_path / "a"), train=loop, **common))
    b = train_liu2018(Liu2018TrainConfig(out_dir=str(tmp_path / "b"), train=loop, morphable=str(saved_model), **common))
    sa, sb = (load_model(r / "phase1.pt")[0].state_dict() for r in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    other = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_exp=10).save(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"morphable: morphable='.*other\.npz' .* is not the model of the synthetic suite"):
        train_liu2018(Liu2018TrainConfig(out_dir=str(tmp_path / "c"), train=loop, morphable=str(other), **common))


# ------------------------------------------------------------------ clear errors
def test_targets_fitted_with_another_model_raise(folder, tmp_path):
    other = build_synthfaces(SynthFacesConfig(resolution="quick")).truncate(n_shape=40).save(tmp_path / "other.npz")
    cfg = apply_overrides(Liu2018TrainConfig(out_dir=str(tmp_path / "run")), _folder_args(folder) + [f"morphable={other}"])
    with pytest.raises(ValueError, match=r"other\.npz.* is not the model .*targets\.npz was fitted with"):
        _prepare(cfg)
    assert main(["train", "liu2018", "--out", str(tmp_path / "run"), *_set(_folder_args(folder) + [f"morphable={other}"])]) == 2
    assert not (tmp_path / "run" / "phase1.pt").exists()


def test_imagefolder_config_errors(folder, tmp_path):
    with pytest.raises(ValueError, match=r"targets: data.kind='imagefolder' needs targets='fitted'"):
        apply_overrides(Liu2018TrainConfig(), ["data.kind=imagefolder", f"data.train={folder / 'photos'}"])
    with pytest.raises(ValueError, match=r"data.train: data.kind='imagefolder' needs the identity folder"):
        Liu2018TrainConfig(data=DataConfig(kind="imagefolder"), targets="fitted", targets_path="t.npz")
    with pytest.raises(ValueError, match=r"data.kind"):
        DataConfig(kind="lmdb", train="x")
    with pytest.raises(ValueError, match=r"data.train: .* data.kind='imagefolder' only"):
        apply_overrides(Liu2018TrainConfig(), [f"data.train={folder / 'photos'}"])

    bare = tmp_path / "bare"  # the same photos without their landmarks.json: nothing to align by
    shutil.copytree(folder / "photos", bare, ignore=shutil.ignore_patterns("landmarks.json"))
    cfg = apply_overrides(Liu2018TrainConfig(), _folder_args(folder) + [f"data.train={bare}"])
    with pytest.raises(ValueError, match=r"bare: training on five-point aligned crops .* landmarks.json"):
        _prepare(cfg)


def test_default_config_unchanged():
    cfg = Liu2018TrainConfig()
    assert cfg.data == DataConfig() and cfg.data.kind == "synth" and cfg.morphable is None
