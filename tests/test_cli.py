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
    result = bench_synth(image_size=32, batch_size=16, n_batches=1, resolution="quick", workers=0)
    assert result["images"] == 16 and result["images_per_s"] > 0 and result["dataloader_images_per_s"] is None
