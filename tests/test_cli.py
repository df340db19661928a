"""The facelab command line: synth, render, bench."""

import json

import pytest
from PIL import Image

from facelab.bench.synth import bench_synth
from facelab.cli import main
from facelab.data import SavedCollection

TINY = ["--set", "resolution=quick", "--set", "image_size=32"]


def test_synth_writes_a_suite(tmp_path, capsys):
    out = tmp_path / "lfw"
    rc = main(["synth", "lfw", "--out", str(out), "--quiet", "--set", "n_identities=20", "--set", "pairs_per_fold=2", *TINY])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    saved = SavedCollection(out)
    assert report["images"] == len(saved) == 80
    assert saved.pairs["pairs"].shape == (40, 2) and saved[0]["image"].shape == (3, 32, 32)


def test_synth_rejects_unknown_keys(tmp_path, capsys):
    rc = main(["synth", "webface", "--out", str(tmp_path), "--set", "n_identitiez=3"])
    assert rc == 2 and "n_identitiez" in capsys.readouterr().err


def test_render_face_and_gallery(tmp_path, capsys):
    face = tmp_path / "face.png"
    assert main(["render", "--out", str(face), "--size", "40", "--resolution", "quick", "--yaw", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["yaw_deg"] == pytest.approx(30.0, abs=1e-3)
    assert Image.open(face).size == (40, 40)
    gallery = tmp_path / "gallery.png"
    assert main(["render", "--gallery", "--identities", "2", "--size", "24", "--resolution", "quick", "--out", str(gallery)]) == 0
    info = json.loads(capsys.readouterr().out)
    width, height = Image.open(gallery).size
    assert info["rows"] == 2 and width > height * 4, "12 columns, 2 rows"


def test_bench_synth_reports_a_rate():
    result = bench_synth(image_size=32, batch_size=16, n_batches=1, resolution="quick", workers=0, repeats=1)
    assert result["images"] == 16 and result["images_per_s"] > 0 and result["dataloader_images_per_s"] is None


def test_train_then_eval_model(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "regressor", "--out", str(run), "--set", "image_size=32", "--set", "steps=4", "--set", "batch_size=8",
               "--set", "n_identities=8", "--set", "images_per_identity=2", "--set", "cache_pool=false",
               "--set", "progress=false", "--set", "ckpt_every=4"])
    assert rc == 0
    ckpt = json.loads(capsys.readouterr().out)["checkpoint"]
    report = tmp_path / "report"
    rc = main(["eval", "model", ckpt, "--suite", "lfw", "--json", "--out", str(report),
               "--set", "lfw_identities=20", "--set", "lfw_pairs_per_fold=2"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    verification = result["lfw"]["regressor"]
    assert 0.0 <= verification["accuracy_mean"] <= 1.0 and "tar_at_far" in verification
    assert (report / "report.json").exists() and (report / "report.md").read_text().strip()


def test_eval_model_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", "model", str(tmp_path / "nope.pt"), "--suite", "lfw"]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_reproductions_name_their_training_recipes(capsys):
    """Every `facelab reproduce` table trains a recipe of `facelab train`; --liu only where there is a Liu row."""
    from facelab.reproduce import REPRODUCTIONS
    from facelab.train.recipes import RECIPES

    assert {r.recipe for r in REPRODUCTIONS.values()} <= set(RECIPES)
    assert set(REPRODUCTIONS) == {"liu2018", "gao2020", "sir"}
    assert main(["reproduce", "liu2018", "--out", "/tmp/unused-facelab-run", "--liu", "x.pt"]) != 0
    assert "--liu: the liu2018 table has no Liu et al. row" in capsys.readouterr().err


def test_reproduce_seeds_option(capsys):
    """--seeds reaches the reproductions that train several seeds; elsewhere, or malformed, it is an error."""
    from facelab.reproduce import REPRODUCTIONS, Reproduction

    assert all(r.takes_seeds for r in REPRODUCTIONS.values())  # every paper's standard profile trains three
    one_seed = Reproduction("toy", lambda *a, **k: {}, str, uses_liu=False)
    with pytest.raises(ValueError, match="seeds: the toy reproduction trains one seed"):
        one_seed("quick", "/tmp/unused-facelab-run", seeds=(0, 1))
    with pytest.raises(SystemExit):
        main(["reproduce", "gao2020", "--out", "/tmp/unused-facelab-run", "--seeds", "0,x"])
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds: give at least one"):
        REPRODUCTIONS["gao2020"]("quick", "/tmp/unused-facelab-run", seeds=())
