"""``facelab eval``: verify / recon on tiny files written here, and its error messages."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from facelab.cli import main
from facelab.eval_cli import load_embeddings, load_landmarks, nose_tip
from facelab.io import write_mesh
from facelab.metrics import verify

NOW7 = [36, 39, 42, 45, 33, 48, 54]  # NoW's 7 points as iBUG indices, for the hand-made meshes


def face_grid(rows=30, cols=30, half=90.0):
    """A smooth face-like height field in mm (nose bump at the origin) and its triangles."""
    u, v = np.meshgrid(np.linspace(-half, half, cols), np.linspace(-half, half, rows))
    z = 25 * np.exp(-(u**2 + v**2) / 400) + 20 * np.exp(-(u**2 + v**2) / 8000) + 6 * np.sin(u / 20) * np.cos(v / 25)
    verts = np.stack([u, v, z], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def rigid(points, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix()
    return scale * points @ R.T + rng.normal(size=3) * 20


def run_json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def run_error(capsys, argv):
    """Run, expect a non-zero exit (argparse's SystemExit or main's return code), return stderr."""
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    assert rc != 0
    return capsys.readouterr().err


@pytest.fixture
def embeddings_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    issame = np.tile(np.repeat([True, False], 3), n // 6)  # every fold has both kinds
    emb1 = rng.normal(size=(n, 8))
    emb2 = np.where(issame[:, None], emb1 + 0.5 * rng.normal(size=(n, 8)), rng.normal(size=(n, 8)))
    path = tmp_path / "emb.npz"
    np.savez(path, emb1=emb1, emb2=emb2, issame=issame)
    return path, emb1, emb2, issame


@pytest.fixture
def meshes(tmp_path):
    verts, faces = face_grid()
    gt = write_mesh(tmp_path / "gt.obj", verts, faces)
    return tmp_path, verts, faces, gt


# ------------------------------------------------------------------ verify
def test_verify_json_equals_library(capsys, embeddings_file):
    path, emb1, emb2, issame = embeddings_file
    got = run_json(capsys, ["eval", "verify", "--embeddings", str(path), "--json"])
    expected = verify(emb1, emb2, issame).to_dict()
    for key in ("accuracy_mean", "accuracy_std", "auc", "eer", "val", "far"):
        assert got[key] == pytest.approx(expected[key])
    assert got["tar_at_far"] == pytest.approx(expected["tar_at_far"])


def test_verify_separable_pairs_are_perfect(capsys, tmp_path):
    # matched pairs identical, mismatched pairs orthogonal: distance 0 vs 2
    n = 40
    issame = np.arange(n) % 2 == 0
    emb1 = np.eye(n)[:, :n]
    emb2 = np.where(issame[:, None], emb1, np.roll(emb1, 1, axis=1))
    np.savez(tmp_path / "e.npz", emb1=emb1, emb2=emb2, issame=issame)
    got = run_json(capsys, ["eval", "verify", "--embeddings", str(tmp_path / "e.npz"), "--json"])
    assert got["accuracy_mean"] == 1.0 and got["auc"] == 1.0 and got["eer"] == 0.0


def test_verify_text_output(capsys, embeddings_file):
    assert main(["eval", "verify", "--embeddings", str(embeddings_file[0])]) == 0
    assert "accuracy_mean:" in capsys.readouterr().out


def test_verify_missing_file(capsys, tmp_path):
    err = run_error(capsys, ["eval", "verify", "--embeddings", str(tmp_path / "nope.npz")])
    assert "nope.npz" in err and "no such" in err


def test_verify_missing_key(capsys, tmp_path):
    np.savez(tmp_path / "e.npz", emb1=np.ones((4, 2)), issame=[1, 0, 1, 0])
    err = run_error(capsys, ["eval", "verify", "--embeddings", str(tmp_path / "e.npz")])
    assert "e.npz" in err and "emb2" in err


def test_verify_mismatched_lengths(capsys, tmp_path):
    np.savez(tmp_path / "e.npz", emb1=np.ones((4, 2)), emb2=np.ones((4, 2)), issame=[1, 0, 1])
    err = run_error(capsys, ["eval", "verify", "--embeddings", str(tmp_path / "e.npz")])
    assert "issame" in err and "4" in err


def test_verify_not_an_npz(tmp_path):
    (tmp_path / "e.npz").write_text("hello")
    with pytest.raises(ValueError, match="e.npz"):
        load_embeddings(tmp_path / "e.npz")


# ------------------------------------------------------------------- recon
def test_recon_rmse_rigid_transform_is_zero(capsys, meshes):
    tmp, verts, faces, gt = meshes
    pred = write_mesh(tmp / "pred.obj", rigid(verts), faces)
    got = run_json(capsys, ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "rmse", "--json"])
    # float32 OBJ coordinates: agreement to round-off of ~1e-5 mm
    assert got["rmse"] < 1e-3 and got["mean"] < 1e-3 and got["n_points"] == verts.shape[0]


def test_recon_rmse_known_offset(capsys, meshes):
    tmp, verts, faces, gt = meshes
    pred = write_mesh(tmp / "pred.ply", verts + [3.0, 4.0, 0.0], faces)
    argv = ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "rmse", "--align", "none", "--json"]
    got = run_json(capsys, argv)
    assert got["rmse"] == pytest.approx(5.0, abs=1e-4)
    assert got["mean"] == pytest.approx(5.0, abs=1e-4) and got["median"] == pytest.approx(5.0, abs=1e-4)
    assert got["std"] < 1e-4


def test_recon_rmse_known_nonrigid_error(capsys, meshes):
    # half the vertices pushed 2 mm along z, the others not: without alignment the RMSE is
    # sqrt(0.5 * 4) and the per-vertex mean 1 mm.
    tmp, verts, faces, gt = meshes
    bump = np.zeros_like(verts)
    bump[::2, 2] = 2.0
    pred = write_mesh(tmp / "pred.obj", verts + bump, faces)
    argv = ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "rmse", "--align", "none", "--json"]
    got = run_json(capsys, argv)
    assert got["rmse"] == pytest.approx(np.sqrt(2.0), abs=1e-4)
    assert got["mean"] == pytest.approx(1.0, abs=1e-4)


def test_recon_micc_rigid_copy_is_zero(capsys, meshes):
    tmp, verts, faces, gt = meshes
    pred = write_mesh(tmp / "pred.obj", rigid(verts, seed=1), faces)
    got = run_json(capsys, ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "micc", "--json"])
    assert got["mean"] < 1e-2
    # the 95 mm crop around the nose keeps fewer than all vertices
    assert 0 < got["n_points"] < verts.shape[0]


def test_recon_micc_with_landmarks(capsys, meshes):
    tmp, verts, faces, gt = meshes
    moved = rigid(verts, seed=2)
    lmk_idx = np.array([0, 29, 435, 870, 899, 200, 700])
    np.savetxt(tmp / "gt_lmk.txt", verts[lmk_idx])
    np.save(tmp / "pred_lmk.npy", moved[lmk_idx])
    pred = write_mesh(tmp / "pred.obj", moved, faces)
    got = run_json(capsys, ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "micc",
                            "--pred-landmarks", str(tmp / "pred_lmk.npy"), "--gt-landmarks", str(tmp / "gt_lmk.txt"),
                            "--json"])
    assert got["mean"] < 1e-2


def test_recon_now_similarity_copy_is_zero(capsys, meshes):
    tmp, verts, faces, gt = meshes
    moved = rigid(verts, seed=3, scale=0.5)
    lmk_idx = np.array([320, 330, 340, 350, 435, 560, 570])
    np.save(tmp / "pl.npy", moved[lmk_idx])
    np.save(tmp / "gl.npy", verts[lmk_idx])
    pred = write_mesh(tmp / "pred.obj", moved, faces)
    got = run_json(capsys, ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "now",
                            "--pred-landmarks", str(tmp / "pl.npy"), "--gt-landmarks", str(tmp / "gl.npy"), "--json"])
    assert got["median"] < 1e-2 and got["n_points"] == verts.shape[0]


def test_recon_unknown_protocol(capsys, meshes):
    _, _, _, gt = meshes
    err = run_error(capsys, ["eval", "recon", "--pred", str(gt), "--gt", str(gt), "--protocol", "chamfer"])
    assert "--protocol" in err


def test_recon_missing_mesh(capsys, meshes):
    tmp, _, _, gt = meshes
    err = run_error(capsys, ["eval", "recon", "--pred", str(tmp / "missing.obj"), "--gt", str(gt), "--protocol", "rmse"])
    assert "missing.obj" in err


def test_recon_rmse_vertex_count_mismatch(capsys, meshes):
    tmp, verts, faces, gt = meshes
    pred = write_mesh(tmp / "small.obj", verts[:3], np.array([[0, 1, 2]]))
    err = run_error(capsys, ["eval", "recon", "--pred", str(pred), "--gt", str(gt), "--protocol", "rmse"])
    assert "--pred" in err and "3 vertices" in err


def test_recon_now_needs_seven_landmarks(capsys, meshes):
    tmp, verts, _, gt = meshes
    np.save(tmp / "l5.npy", verts[:5])
    err = run_error(capsys, ["eval", "recon", "--pred", str(gt), "--gt", str(gt), "--protocol", "now",
                             "--pred-landmarks", str(tmp / "l5.npy"), "--gt-landmarks", str(tmp / "l5.npy")])
    assert "--pred-landmarks" in err and "7" in err
    err = run_error(capsys, ["eval", "recon", "--pred", str(gt), "--gt", str(gt), "--protocol", "now"])
    assert "--pred-landmarks" in err


def test_landmark_file_errors(tmp_path):
    (tmp_path / "l.csv").write_text("0 0 0\n")
    with pytest.raises(ValueError, match="l.csv"):
        load_landmarks(tmp_path / "l.csv")
    (tmp_path / "l.txt").write_text("0 0\n1 1\n")
    with pytest.raises(ValueError, match=r"l.txt.*\(K, 3\)"):
        load_landmarks(tmp_path / "l.txt")
    with pytest.raises(FileNotFoundError, match="gone.npy"):
        load_landmarks(tmp_path / "gone.npy")


def test_nose_tip_conventions():
    verts = np.array([[0.0, 0, 1], [0, 0, 9], [1, 0, 2]])
    ibug = np.arange(68 * 3, dtype=float).reshape(68, 3)
    assert nose_tip(verts).tolist() == [0.0, 0.0, 9.0]
    assert nose_tip(verts, ibug).tolist() == ibug[30].tolist()
    assert nose_tip(verts, ibug[NOW7]).tolist() == ibug[33].tolist()
    assert nose_tip(verts, ibug[:5], nose_index=2).tolist() == ibug[2].tolist()
    with pytest.raises(ValueError, match="--nose-index"):
        nose_tip(verts, ibug[:5])


def test_entry_point_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "facelab.cli", "eval", "verify", "--embeddings", str(tmp_path / "x.npz")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "x.npz" in proc.stderr
