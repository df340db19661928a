"""``facelab eval model`` on a network trained with a morphable-model file whose mesh is not SynthFaces':
the SynthFaces suites whose truth lies on SynthFaces' mesh refuse it, the LFW suite (identity
embeddings only) scores it, and a MICC folder scores its meshes with the network's own mesh."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.data import export_micc, make_suite
from facelab.io.checkpoint import load_checkpoint, save_checkpoint
from facelab.metrics.micc_folder import evaluate_micc_folder, micc_videos_for
from facelab.metrics.model_eval import ModelEvalConfig, predict_suite
from facelab.metrics.protocols import micc_error
from facelab.models.liu2018 import build_liu2018_model
from facelab.models.morphable_record import morphable_record, network_morphable, require_synthfaces_mesh
from facelab.models.registry import load_evaluable
from facelab.morphable import SynthFacesConfig, build_synthfaces

PX = 32
#: the network's SynthFaces resolution (what a suite would render) and its model file's mesh
RESOLUTION, FINE = "quick", "default"


def _liu_checkpoint(path, morphable, model_file):
    """An untrained Liu et al. network recorded as trained with ``model_file`` (``morphable=PATH``)."""
    mcfg = {"resolution": RESOLUTION, "input": {"align": False, "render_size": [PX, PX], "disentangled": True},
            "model": {"encoder": {"depth": "sphere_tiny", "embedding_dim": 8, "input_size": [PX, PX]}},
            "morphable": morphable_record(morphable, model_file)}
    torch.manual_seed(0)
    net = build_liu2018_model(mcfg, morphable)
    return save_checkpoint(path, model_name="liu2018", model_config=mcfg, state_dict=net.state_dict(), step=0)


@pytest.fixture(scope="module")
def fine(tmp_path_factory):
    """SynthFaces at the finer resolution saved as a model file, and a checkpoint trained with it."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_morphable")
    model = build_synthfaces(SynthFacesConfig(resolution=FINE))
    path = model.save(root / "fine.npz")
    return model, path, _liu_checkpoint(root / "fine" / "last.pt", model, path)


@pytest.mark.parametrize("suite", ["micc", "bu3dfe"])
def test_shape_suites_refuse_another_mesh(fine, suite, capsys):
    model, path, ckpt = fine
    quick = build_synthfaces(SynthFacesConfig(resolution=RESOLUTION)).n_verts
    assert model.n_verts != quick
    assert main(["eval", "model", str(ckpt), "--suite", suite, "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: the network was trained with the morphable model {path.resolve()}" in err
    assert f"outputs meshes of {model.n_verts} vertices, but --suite {suite} scores them" in err
    assert f"SynthFaces mesh of resolution {RESOLUTION!r} ({quick} vertices)" in err


def test_lfw_suite_scores_the_embeddings(fine, capsys):
    _, _, ckpt = fine
    argv = ["eval", "model", str(ckpt), "--suite", "lfw", "--json", "--set", "lfw_identities=20",
            "--set", "lfw_pairs_per_fold=1", "--set", "device=cpu"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["lfw"]["liu2018"]["accuracy_mean"] <= 1.0


def test_same_vertex_count_passes():
    quick = build_synthfaces(SynthFacesConfig(resolution=RESOLUTION)).n_verts
    same = {"morphable": {"path": "m.npz", "sha256": "0", "n_verts": quick}}
    require_synthfaces_mesh(same, RESOLUTION, "a.pt", "--suite micc")
    require_synthfaces_mesh({}, RESOLUTION, "a.pt", "--suite micc")  # no record: SynthFaces' own mesh
    # Gao et al.'s decoders run on the grid: a resampled file's network mesh is SynthFaces'
    gao = {"morphable": {"path": "bfm.npz", "sha256": "0", "n_verts": 53215, "resampled": True}}
    require_synthfaces_mesh(gao, RESOLUTION, "a.pt", "--suite bu3dfe")
    with pytest.raises(ValueError, match=r"a\.pt: .* bfm\.npz and outputs meshes of 53215 vertices, but --suite bu3dfe"):
        require_synthfaces_mesh({"morphable": {**gao["morphable"], "resampled": False}}, RESOLUTION, "a.pt", "--suite bu3dfe")


def test_micc_folder_scores_with_the_networks_mesh(fine, tmp_path):
    """The single-frame rows equal micc_error computed here with the model file's triangles and landmarks."""
    model, _, ckpt = fine
    suite = make_suite("micc", n_identities=1, frames_per_video=1, image_size=PX, resolution=RESOLUTION)
    root = export_micc(suite, tmp_path / "micc")["out"]
    cfg = ModelEvalConfig(device="cpu")
    result = evaluate_micc_folder(ckpt, root, config=cfg)

    net = load_evaluable(ckpt)
    own = network_morphable(load_checkpoint(ckpt)["model_config"], RESOLUTION)
    assert own.content_sha256() == model.content_sha256()
    folder = micc_videos_for(net, root, morphable=own)
    pred = predict_suite(net, folder)
    assert pred["identity_shape"].shape[1] == model.n_verts
    faces, lm = model.faces.numpy(), model.landmarks.numpy()
    resolved = cfg.resolved("quick")
    scan, nose, scan_lm = (folder.scan(0).double().numpy(), folder.nose_tip(0).double().numpy(),
                           folder.scan_landmarks(0).double().numpy())
    for i, cond in enumerate(pred["condition"].tolist()):
        p = pred["identity_shape"][i].double().numpy()
        want = micc_error(p, faces, scan, nose_tip_gt=nose, pred_landmarks=p[lm], gt_landmarks=scan_lm,
                          max_iter=resolved.icp_iters, tol=resolved.icp_tol)["mean"]
        got = result["micc"]["single_frame"][folder.condition_names[cond]]["mean"]
        np.testing.assert_allclose(got, want, rtol=1e-6)
