"""Training Gao et al. 2020 on folders (``data.kind=real``: a 300W-LP-layout folder and identity folders) and
with a morphable-model file (``morphable=PATH``, resampled onto the grid when its mesh differs), end to end
through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facelab.cli import main
from facelab.config import apply_overrides
from facelab.io.models import load_morphable
from facelab.models.registry import load_model
from facelab.morphable import SynthFacesConfig, build_synthfaces
from facelab.morphable.resample import resample_model
from facelab.train.gao2020 import NO_LABEL, FolderRows, Gao2020TrainConfig, _prepare, morphable_source, train_gao2020
from facelab.train.trainer import step_indices

pytestmark = pytest.mark.usefixtures("one_thread")

N_IDENTITIES, IMAGES_PER_IDENTITY, PHOTO_PX = 4, 2, 32
#: a tiny run (the golden test's GAO sizes): 32 px, 2 warm-up steps, 2 + 1 training steps
TINY = ["image_size=32,32", "batch_lp=4", "batch_col=4", "steps=2,1", "warmup_steps=2", "batch_warmup=4",
        "progress=false", "log_every=1", "ckpt_every=1", "num_threads=1"]
STAGES = ("warmup.pt", "step1.pt", "step2.pt")
LANDMARKS_FILE = "landmarks.json"


def _set(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _synth(suite: str, fmt: str, out: Path, resolution: str = "quick") -> None:
    sizes = [f"n_identities={N_IDENTITIES}", f"images_per_identity={IMAGES_PER_IDENTITY}", f"image_size={PHOTO_PX}",
             f"resolution={resolution}"]
    assert main(["synth", suite, "--format", fmt, "--out", str(out), "--quiet", *_set(sizes)]) == 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """LP (300W-LP layout, quick-grid model.npz), LPD (the same layout, a 65 x 81-grid model) and COL
    (identity folders with landmarks.json)."""
    root = tmp_path_factory.mktemp("gao_real")
    _synth("lp", "lp300w", root / "LP")
    _synth("lp", "lp300w", root / "LPD", resolution="default")
    _synth("collections", "imagefolder", root / "COL")
    return root


def _args(root: Path, labelled: str = "LP", *extra: str) -> list[str]:
    return ["data.kind=real", f"data.labelled={root / labelled}", f"data.collections={root / 'COL'}", *TINY, *extra]


def _train(root: Path, out: Path, *args: str) -> Path:
    assert main(["train", "gao2020", "--out", str(out), *_set(args)]) == 0
    return out


@pytest.fixture(scope="module")
def run(folders):
    return _train(folders, folders / "run", *_args(folders, "LP", f"morphable={folders / 'LP' / 'model.npz'}"))


# ------------------------------------------------------------------ the data the recipe trains on
def test_rows_match_the_files(folders):
    """Pool rows against the PNGs and .mat files (PIL, scipy.io) and the identity folders (names, landmarks.json)."""
    cfg = apply_overrides(Gao2020TrainConfig(), _args(folders))
    source = morphable_source(cfg)
    assert source[1]["path"] == str((folders / "LP" / "model.npz").resolve()) and not source[1]["resampled"]
    data = _prepare(cfg, source)
    assert data["n_classes"] == N_IDENTITIES
    lp = data["lp_source"]
    n = N_IDENTITIES * IMAGES_PER_IDENTITY
    assert lp["image"].shape == (n, 3, PHOTO_PX, PHOTO_PX) and lp["image"].dtype == torch.uint8

    # labelled rows: sorted NAME.png next to NAME.mat, read here
    pngs = sorted((folders / "LP").glob("*.png"))
    assert len(pngs) == n
    for i, png in enumerate(pngs):
        assert torch.equal(lp["image"][i], torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1))
        mat = scipy.io.loadmat(png.with_suffix(".mat"))
        np.testing.assert_allclose(lp["alpha_id"][i].numpy(), mat["Shape_Para"][:, 0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lp["alpha_exp"][i].numpy(), mat["Exp_Para"][:, 0], rtol=1e-5, atol=1e-5)
        # 1-based MATLAB pixel centres -> facelab's (centre of pixel j at j + 0.5)
        np.testing.assert_allclose(lp["landmarks2d"][i].numpy(), mat["pt3d_68"][:2].T - 0.5, atol=1e-4)
    assert (lp["label"] == NO_LABEL).all() and (lp["photo_mask"] == 255).all()
    # the shape term's targets: mean + B_id alpha + B_exp alpha_exp of model.npz, read with numpy
    z = np.load(folders / "LP" / "model.npz")
    mm = data["morphable"]
    want = z["mean_shape"] + (z["shape_basis"] @ lp["alpha_id"][0].numpy() + z["exp_basis"] @ lp["alpha_exp"][0].numpy()).reshape(-1, 3)
    np.testing.assert_allclose(mm.shape(lp["alpha_id"][:1], lp["alpha_exp"][:1])[0].numpy(), want, atol=1e-3)

    # collection rows: folders in sorted order, their PNGs and landmarks.json entries
    marks = json.loads((folders / "COL" / LANDMARKS_FILE).read_text())
    names = sorted(p.name for p in (folders / "COL").iterdir() if p.is_dir())
    files = [p for name in names for p in sorted((folders / "COL" / name).glob("*.png"))]
    batch = data["batches"](1)
    lp_idx = step_indices(n, cfg.batch_lp, 1, cfg.train.seed)
    col_idx = step_indices(len(files), cfg.batch_col, 1, cfg.train.seed + 1)
    assert batch["image"].shape[0] == cfg.batch_lp + cfg.batch_col
    assert torch.equal(batch["image"][: cfg.batch_lp], lp["image"][lp_idx].float() / 255)
    assert torch.equal(batch["alpha_id"][: cfg.batch_lp], lp["alpha_id"][lp_idx])
    for row, i in enumerate(col_idx.tolist(), start=cfg.batch_lp):
        f = files[i]
        assert int(batch["label"][row]) == names.index(f.parent.name) and int(batch["source"][row]) == 1
        photo = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        assert torch.equal(batch["image"][row], photo)
        np.testing.assert_allclose(batch["landmarks2d"][row].numpy(),
                                   np.asarray(marks[f.relative_to(folders / "COL").as_posix()]), atol=1e-5)
        assert (batch["alpha_id"][row] == 0).all() and (batch["photo_mask"][row] == 1).all()
    # streamed (pool=False): the same rows
    streamed = _prepare(apply_overrides(cfg, ["pool=false", "num_workers=0"]), source)["batches"](1)
    assert all(torch.equal(streamed[k], batch[k]) for k in batch)


# ------------------------------------------------------------------ train, load, resume
def test_train_from_folders_loads(run, folders):
    for name in STAGES:
        assert (run / name).is_file()
    model, ckpt = load_model(run / "step2.pt", expect_model="gao2020")
    record = ckpt["model_config"]["morphable"]
    assert record["path"] == str((folders / "LP" / "model.npz").resolve()) and record["resampled"] is False
    assert record["sha256"] == load_morphable(folders / "LP" / "model.npz").content_sha256()
    assert ckpt["extra"]["recipe"]["data"]["kind"] == "real"
    assert ckpt["extra"]["recognition"]["center.centers"].shape[0] == N_IDENTITIES  # one class per identity folder
    assert model.config.albedo == "cnn"
    with torch.no_grad():
        out = model(torch.rand(2, 3, PHOTO_PX, PHOTO_PX))
    assert out["shape"].shape == (2, 1353, 3) and torch.isfinite(out["shape"]).all()


def _mtimes(run: Path) -> dict[str, int]:
    return {name: (run / name).stat().st_mtime_ns for name in STAGES}


def test_rerun_is_noop_and_interrupted_resumes(run, folders):
    before = _mtimes(run)
    args = _args(folders, "LP", f"morphable={folders / 'LP' / 'model.npz'}")
    _train(folders, run, *args)
    assert _mtimes(run) == before  # finished: nothing retrained or rewritten

    logged = (run / "step2" / "metrics.jsonl").read_text()
    weights = torch.load(run / "step2.pt", weights_only=True)["state_dict"]
    (run / "step2.pt").unlink()  # as if stopped before publishing: step2/last.pt holds the last step
    _train(folders, run, *args)
    after = _mtimes(run)
    assert {k: after[k] for k in STAGES[:2]} == {k: before[k] for k in STAGES[:2]}
    assert (run / "step2" / "metrics.jsonl").read_text() == logged  # resumed at the end: no step trained again
    again = torch.load(run / "step2.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


# ------------------------------------------------------------------ another mesh: resampled onto the grid
def test_model_of_another_mesh_is_resampled(folders):
    """LPD's coefficients refer to a 65 x 81-grid model; the quick run's decoders use it resampled onto 33 x 41
    (morphable left unset: data.labelled/model.npz)."""
    out = _train(folders, folders / "run_resampled", *_args(folders, "LPD"))
    model, ckpt = load_model(out / "step2.pt")
    record = ckpt["model_config"]["morphable"]
    source = load_morphable(folders / "LPD" / "model.npz")
    assert record["resampled"] is True and record["n_verts"] == source.n_verts == 5265
    grid = resample_model(source, build_synthfaces(SynthFacesConfig(resolution="quick")))
    assert record["network_sha256"] == grid.content_sha256()
    assert torch.allclose(model.template, grid.mean_shape) and model.n_verts == 1353

    # the checkpoint names the file: changed or gone, the network is not rebuilt from it
    moved = folders / "moved.npz"
    shutil.copy(folders / "LPD" / "model.npz", moved)
    ckpt["model_config"]["morphable"]["path"] = str(moved)
    torch.save(ckpt, folders / "moved.pt")
    assert torch.equal(load_model(folders / "moved.pt")[0].template, model.template)
    source.truncate(n_shape=40).save(moved)
    with pytest.raises(ValueError, match=r"moved\.npz: the morphable model now has sha256 .* trained with sha256"):
        load_model(folders / "moved.pt")
    moved.unlink()
    with pytest.raises(FileNotFoundError, match=r"moved\.npz: the morphable model this network was trained with"):
        load_model(folders / "moved.pt")


# ------------------------------------------------------------------ errors
def test_errors_name_the_missing_key_or_file(folders, tmp_path):
    def cfg(*extra, labelled="LP"):
        return apply_overrides(Gao2020TrainConfig(out_dir=str(tmp_path / "x")), _args(folders, labelled, *extra))

    with pytest.raises(ValueError, match=r"data.collections: data.kind='real' needs the folder of identity folders"):
        apply_overrides(Gao2020TrainConfig(), ["data.kind=real", f"data.labelled={folders / 'LP'}"])
    with pytest.raises(ValueError, match=r"data.labelled: .* is read with data.kind='real' only"):
        apply_overrides(Gao2020TrainConfig(), [f"data.labelled={folders / 'LP'}"])
    with pytest.raises(FileNotFoundError, match=r"data.labelled: .*nowhere is not a folder"):
        train_gao2020(cfg(labelled="nowhere"))
    # the model must be the one the coefficients refer to
    with pytest.raises(ValueError, match=r"morphable: .*LPD/model.npz .* is not .*LP/model.npz .* the model the "
                                         r"coefficients of data.labelled refer to"):
        train_gao2020(cfg(f"morphable={folders / 'LPD' / 'model.npz'}"))
    # data.kind=synth takes a file of the suites' own model (LP's model.npz is SynthFaces at the quick grid)
    same = morphable_source(apply_overrides(Gao2020TrainConfig(), [f"morphable={folders / 'LP' / 'model.npz'}"]))
    assert same[1]["resampled"] is False
    assert same[1]["network_sha256"] == build_synthfaces(SynthFacesConfig(resolution="quick")).content_sha256()
    with pytest.raises(ValueError, match=r"morphable: .*LPD/model.npz .* is not the model of the synthetic suites"):
        morphable_source(apply_overrides(Gao2020TrainConfig(), [f"morphable={folders / 'LPD' / 'model.npz'}"]))
    # no model: no coefficients to read
    bare = tmp_path / "LP_bare"
    shutil.copytree(folders / "LP", bare)
    (bare / "model.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"morphable: data.kind='real' needs the morphable model .*LP_bare/model.npz"):
        train_gao2020(cfg(labelled=bare))
    # collections without landmarks: the landmark terms cannot apply to them
    col = tmp_path / "COL_bare"
    shutil.copytree(folders / "COL", col)
    (col / LANDMARKS_FILE).unlink()
    with pytest.raises(ValueError, match=r"COL_bare: Gao et al.'s landmark terms \(on every image\) needs 68 landmarks"):
        train_gao2020(apply_overrides(cfg(), [f"data.collections={col}"]))
    assert not (tmp_path / "x").exists()  # nothing trained or written


def test_rows_without_landmarks_or_coefficients_raise():
    """Missing truth is not filled in: an image with a missing landmark, or labelled without coefficients."""
    class OneImage:  # the LP300W interface: pairs, len, samples
        pairs = [(Path("LP/a.png"), Path("LP/a.mat"))]

        def __init__(self, sample):
            self.sample = sample

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return dict(self.sample)

    full = {"image": torch.zeros(3, 4, 4), "landmarks2d": torch.zeros(68, 2), "alpha_id": torch.zeros(3),
            "alpha_exp": torch.zeros(2)}
    assert FolderRows(OneImage(full), labelled=True).batch([0])["label"].tolist() == [NO_LABEL]
    gap = {**full, "landmarks2d": torch.zeros(68, 2).index_fill_(0, torch.tensor([30]), float("nan"))}
    with pytest.raises(ValueError, match=r"LP/a.png: Gao et al.'s landmark terms need all 68 landmarks"):
        FolderRows(OneImage(gap), labelled=True).batch([0])
    bare = {k: v for k, v in full.items() if k != "alpha_id"}
    with pytest.raises(ValueError, match=r"LP/a.png: the labelled shape terms need its 3DMM coefficients"):
        FolderRows(OneImage(bare), labelled=True).batch([0])
    assert "alpha_id" not in FolderRows(OneImage(bare), labelled=False).batch([0])
