"""Tests of facelab.bench.infer (the ``facelab bench infer`` benchmark)."""

import json

import pytest
import torch

from facelab.bench.infer import PAPER_MS_PER_IMAGE_GPU, bench_infer, build_profile_model
from facelab.cli import main


def test_tiny_call_returns_positive_figures_and_keys():
    r = bench_infer(batch_sizes=(1, 2), profiles=("quick",), repeats=1)
    assert set(r) >= {"quick", "threads", "device", "paper_ms_per_image_gpu"}
    assert "full" not in r
    row = r["quick"]
    for b in (1, 2):
        assert row[f"batch_{b}_ms_per_image"] > 0
        assert 0 < row[f"batch_{b}_best_ms_per_image"] <= row[f"batch_{b}_ms_per_image"]
    assert row["image_size"] == [64, 64] and row["encoder"] == "sphere_tiny"
    assert r["device"] == "cpu" and r["paper_ms_per_image_gpu"] == PAPER_MS_PER_IMAGE_GPU
    assert r["threads"] == torch.get_num_threads()
    json.dumps(r)  # serialisable


def test_params_count_matches_closed_form():
    net, size = build_profile_model("quick")
    r = bench_infer(batch_sizes=(1,), profiles=("quick",), repeats=1)
    emb, n_id, n_res = net.config.encoder.embedding_dim, net.n_id, net.n_res
    three_v = 3 * r["quick"]["n_verts"]
    # code heads and decoders are dense layers: (in + 1) * out weights each; no classifier
    heads = (emb + 1) * (n_id + n_res)
    decoders = (n_id + 1) * three_v + (n_res + 1) * three_v
    assert r["quick"]["params"] == r["quick"]["encoder_params"] + heads + decoders
    assert net.classifier is None and not net.training and size == (64, 64)


def test_threads_restored_after_run():
    before = torch.get_num_threads()
    r = bench_infer(batch_sizes=(1,), profiles=("quick",), repeats=1, threads=1)
    assert r["threads"] == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, name", [
    (dict(model="resnet"), "model"),
    (dict(profiles=("tiny",)), "profiles"),
    (dict(profiles="quick"), "profiles"),
    (dict(batch_sizes=(0,)), "batch_sizes"),
    (dict(batch_sizes=()), "batch_sizes"),
    (dict(repeats=0), "repeats"),
    (dict(threads=0), "threads"),
])
def test_bad_input_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bench_infer(**kwargs)


def test_cli_rejects_bad_model_and_model_on_other_bench(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "infer", "resnet"])
    assert main(["bench", "render", "liu2018"]) == 2
    assert "model" in capsys.readouterr().err
