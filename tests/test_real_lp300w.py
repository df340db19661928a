"""300W-LP end to end: 3DDFA's BFM.mat, the files' projection, the LP300W dataset and the exporter.

The synthetic files are built here by hand (numpy/scipy), in the real layouts and conventions
(3DDFA's ``model`` struct; 300W-LP's ``s * R3 @ v + t`` with ``y -> H + 1 - y`` and 1-based
pixels), independently of the code under test.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.io
import torch

from facelab.data.lp300w import LP300W, export_lp300w
from facelab.io import (
    landmark_visibility, load_300wlp, load_bfm_3ddfa, load_morphable, lp300w_coefficients, lp300w_vertices,
    pixels_from_file, pose_from_facelab, pose_to_facelab, project_300wlp,
)
from facelab.morphable.model import load_npz

N_VERTS = 300
N_SHAPE, N_EXP, N_TEX = 199, 29, 10
IMAGE_H, IMAGE_W = 120, 100


# ------------------------------------------------------------------ hand-built files
def rotation_3ddfa(phi: float, gamma: float, theta: float) -> np.ndarray:
    """Zhu et al.'s RotationMatrix(phi, gamma, theta), written out."""
    c, s = math.cos(phi), math.sin(phi)
    rx = np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    c, s = math.cos(gamma), math.sin(gamma)
    ry = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    c, s = math.cos(theta), math.sin(theta)
    rz = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    return rx @ ry @ rz


def make_bfm(path, seed: int = 0) -> dict:
    """A small BFM.mat in 3DDFA's struct layout (µm, 1-based tri (3, F) and kpt_ind (1, 68))."""
    rng = np.random.default_rng(seed)
    grid = int(math.ceil(math.sqrt(N_VERTS)))
    u, v = np.meshgrid(np.linspace(-1, 1, grid), np.linspace(-1, 1, grid))
    xy = np.stack([u.ravel(), v.ravel()], 1)[:N_VERTS] * 80_000.0  # a face-sized sheet, µm
    z = 30_000.0 * (1 - (xy ** 2).sum(1) / (2 * 80_000.0 ** 2))
    verts = np.column_stack([xy, z])
    shape_mu = verts.reshape(-1, 1)
    exp_mu = rng.normal(0, 500.0, (3 * N_VERTS, 1))  # a mean expression offset, folded into the mean
    shape_pc = np.linalg.qr(rng.normal(size=(3 * N_VERTS, N_SHAPE)))[0]
    shape_ev = np.geomspace(2e5, 2e3, N_SHAPE)[:, None]
    exp_pc = rng.normal(0, 300.0, (3 * N_VERTS, N_EXP))  # not orthonormal, as 3DDFA's w_exp
    exp_ev = np.geomspace(2.0, 0.1, N_EXP)[:, None]
    tex_pc = np.linalg.qr(rng.normal(size=(3 * N_VERTS, N_TEX)))[0]
    faces = []
    for r in range(grid - 1):
        for c in range(grid - 1):
            a, b, d, e = r * grid + c, r * grid + c + 1, (r + 1) * grid + c, (r + 1) * grid + c + 1
            if e < N_VERTS:
                faces += [[a, b, e], [a, e, d]]
    tri = (np.array(faces) + 1).T  # (3, F), 1-based
    kpt = rng.choice(N_VERTS, 68, replace=False)
    model = {
        "shapeMU": shape_mu, "shapePC": shape_pc, "shapeEV": shape_ev,
        "expMU": exp_mu, "expPC": exp_pc, "expEV": exp_ev,
        "texMU": rng.uniform(50, 200, (3 * N_VERTS, 1)), "texPC": tex_pc, "texEV": np.geomspace(40, 4, N_TEX)[:, None],
        "tri": tri.astype(np.float64), "kpt_ind": (kpt + 1)[None].astype(np.float64),
        "tri_mouth": np.array([[1], [2], [3]], dtype=np.float64),
    }
    scipy.io.savemat(path, {"model": model})
    return {**model, "kpt0": kpt}


def make_annotation(path, bfm: dict, pose: list, seed: int = 1, pt2d=None, height: int = IMAGE_H) -> dict:
    """A 300W-LP .mat whose pt3d_68 is the BFM landmarks under ``pose``, MATLAB's way."""
    rng = np.random.default_rng(seed)
    sp = rng.normal(size=(N_SHAPE, 1)) * bfm["shapeEV"]  # raw coefficients: N(0, EV^2)
    ep = rng.normal(size=(N_EXP, 1)) * bfm["expEV"]
    flat = bfm["shapeMU"] + bfm["expMU"] + bfm["shapePC"] @ sp + bfm["expPC"] @ ep
    vertex = flat.reshape(-1, 3).T  # (3, V): MATLAB's reshape(vertex, 3, [])
    phi, gamma, theta, tx, ty, tz, s = pose
    p = s * rotation_3ddfa(phi, gamma, theta) @ vertex + np.array([[tx], [ty], [tz]])
    p[1] = height + 1 - p[1]
    pt3d = p[:, bfm["kpt0"]]
    fields = {"Pose_Para": np.array([pose]), "Shape_Para": sp, "Exp_Para": ep, "pt3d_68": pt3d,
              "pt2d": pt3d[:2].copy() if pt2d is None else pt2d}
    scipy.io.savemat(path, fields)
    return {**fields, "vertex_um": vertex.T}


def write_image(path, h: int = IMAGE_H, w: int = IMAGE_W) -> None:
    from PIL import Image

    arr = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    Image.fromarray(arr).save(path)


POSE = [0.2, -0.6, 0.15, 52.0, 61.0, 3.0, 4.5e-4]  # pitch, yaw, roll (rad), t (px), scale px/µm


@pytest.fixture()
def bfm_file(tmp_path):
    path = tmp_path / "BFM.mat"
    return path, make_bfm(path)


# ------------------------------------------------------------------ the model
def test_bfm_3ddfa_reproduces_pt3d_68_under_the_file_pose(bfm_file, tmp_path):
    path, bfm = bfm_file
    ann_path = tmp_path / "AFW_1_0.mat"
    truth = make_annotation(ann_path, bfm, POSE)
    model = load_morphable(path)  # the .mat hook must pick the 3DDFA layout
    assert model.meta["format"] == "bfm-3ddfa-mat"
    ann = load_300wlp(ann_path)
    verts = lp300w_vertices(model, ann["shape"][None], ann["exp"][None])
    np.testing.assert_allclose(verts[0].double().numpy(), truth["vertex_um"] / 1000.0, atol=2e-3)  # mm
    proj = project_300wlp(verts[:, model.landmarks], ann["pose"][None], IMAGE_H)
    expected = truth["pt3d_68"][:2].T - 0.5  # file pixel centres j + 1 -> facelab's j + 0.5
    err = np.abs(proj[0, :, :2].double().numpy() - expected).max()
    assert err < 1.0, err
    assert err < 1e-2, err  # float32 round-off only
    np.testing.assert_allclose(pixels_from_file(ann["pt3d_68"])[:, :2].numpy(), expected, atol=1e-4)


def test_bfm_3ddfa_conventions(bfm_file):
    path, bfm = bfm_file
    model = load_bfm_3ddfa(path)
    assert model.n_verts == N_VERTS and model.n_shape == N_SHAPE and model.n_exp == N_EXP
    # expMU folded into the mean, µm -> mm
    np.testing.assert_allclose(model.mean_shape.double().numpy(),
                               (bfm["shapeMU"] + bfm["expMU"]).reshape(-1, 3) / 1000.0, atol=1e-3)
    # 1-based kpt_ind and tri
    assert model.landmarks.tolist() == bfm["kpt0"].tolist()
    faces = {tuple(sorted(f)) for f in model.faces.tolist()}
    assert faces == {tuple(sorted(f)) for f in (bfm["tri"].T.astype(int) - 1).tolist()}
    # identity std in mm; the expression prior expPC diag(expEV^2) expPC^T kept (mm^2)
    np.testing.assert_allclose(model.shape_std.double().numpy(), bfm["shapeEV"][:, 0] / 1000.0, rtol=1e-5)
    cov = model.exp_basis.double().numpy() * model.exp_std.double().numpy() ** 2 @ model.exp_basis.double().numpy().T
    ref = (bfm["expPC"] * bfm["expEV"][:, 0] ** 2) @ bfm["expPC"].T / 1e6
    np.testing.assert_allclose(cov, ref, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(model.mean_albedo.double().numpy(), bfm["texMU"].reshape(-1, 3) / 255.0, atol=1e-6)
    # raw coefficients: zero gives the folded mean; one unit of Shape_Para moves by shapePC[:, k] µm
    zero = lp300w_vertices(model, torch.zeros(1, N_SHAPE), torch.zeros(1, N_EXP))
    torch.testing.assert_close(zero[0], model.mean_shape)
    sp = torch.zeros(1, N_SHAPE)
    sp[0, 3] = 1000.0
    moved = lp300w_vertices(model, sp, torch.zeros(1, N_EXP))[0] - model.mean_shape
    np.testing.assert_allclose(moved.double().numpy(), bfm["shapePC"][:, 3].reshape(-1, 3), atol=1e-5)


def test_bfm_3ddfa_model_saved_and_truncated_keeps_the_coefficient_map(bfm_file, tmp_path):
    path, bfm = bfm_file
    model = load_bfm_3ddfa(path)
    truth = make_annotation(tmp_path / "a.mat", bfm, POSE)
    sp, ep = torch.from_numpy(truth["Shape_Para"].T).float(), torch.from_numpy(truth["Exp_Para"].T).float()
    again = load_npz(model.save(tmp_path / "bfm.npz"))
    torch.testing.assert_close(lp300w_vertices(again, sp, ep), lp300w_vertices(model, sp, ep))
    short = model.truncate(n_shape=N_SHAPE, n_exp=N_EXP - 1)
    a_id, a_exp = lp300w_coefficients(short, sp, ep)
    assert a_exp.shape == (1, N_EXP - 1)
    with pytest.raises(ValueError, match="exp_para: 28 coefficients"):
        lp300w_coefficients(model, sp, ep[:, :-1])


def test_load_morphable_keeps_bfm2009_for_a_top_level_mat(tmp_path):
    p = tmp_path / "01_MorphableModel.mat"
    mu = np.array([[0, 0, 0], [1000, 0, 0], [0, 1000, 0]], float).reshape(-1, 1)
    scipy.io.savemat(p, {"shapeMU": mu, "shapePC": np.eye(9)[:, :2], "shapeEV": [[2000.0], [1000.0]], "tl": [[1, 2, 3]]})
    assert load_morphable(p).meta["format"] == "bfm2009-mat"


def test_bfm_3ddfa_errors_name_file_and_field(bfm_file, tmp_path):
    path, bfm = bfm_file
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"model": {k: v for k, v in bfm.items() if k not in ("expPC", "kpt0")}})
    with pytest.raises(ValueError, match=r"bad\.mat: struct 'model' lacks field\(s\) \['expPC'\]"):
        load_bfm_3ddfa(bad)
    scipy.io.savemat(bad, {"model": {**{k: v for k, v in bfm.items() if k != "kpt0"}, "kpt_ind": [[0] * 68]}})
    with pytest.raises(ValueError, match=r"bad\.mat: 'kpt_ind' vertex indices must lie in \[1, 300\]"):
        load_bfm_3ddfa(bad)
    scipy.io.savemat(bad, {"shapeMU": [[0.0]]})
    with pytest.raises(ValueError, match=r"bad\.mat: no 1x1 struct 'model'"):
        load_bfm_3ddfa(bad)
    with pytest.raises(ValueError, match="has no meta"):
        from facelab.morphable import SynthFacesConfig, build_synthfaces

        lp300w_coefficients(build_synthfaces(SynthFacesConfig(resolution="quick")), torch.zeros(3), torch.zeros(2))


# ------------------------------------------------------------------ the pose
def test_pose_conventions_match_the_matlab_rotation():
    pose = torch.tensor(POSE, dtype=torch.float64)
    fl = pose_to_facelab(pose, IMAGE_H)
    from facelab.camera import euler_to_rotation

    np.testing.assert_allclose(euler_to_rotation(fl[None, :3])[0].numpy(), rotation_3ddfa(*POSE[:3]), atol=1e-12)
    assert fl[3].item() == pytest.approx(POSE[3] - 0.5)
    assert fl[4].item() == pytest.approx(IMAGE_H + 0.5 - POSE[4])
    assert fl[5].item() == pytest.approx(POSE[6] * 1000.0)  # px/µm -> px/mm
    # a pure 300W-LP yaw is facelab's yaw with the opposite sign
    yaw_only = pose_to_facelab(torch.tensor([0.0, 0.4, 0.0, 0, 0, 0, 1e-3]), IMAGE_H)
    assert yaw_only[1].item() == pytest.approx(-0.4)
    torch.testing.assert_close(pose_from_facelab(fl, IMAGE_H)[[0, 1, 2, 3, 4, 6]], pose[[0, 1, 2, 3, 4, 6]])


def test_missing_landmark_marker():
    pts = torch.tensor([[10.0, 12.0], [-1.0, -1.0], [-1.0, IMAGE_H + 2.0], [0.5, 0.5], [float("nan"), 3.0]])
    assert landmark_visibility(pts).tolist() == [True, False, False, True, False]


# ------------------------------------------------------------------ the dataset
def test_lp300w_dataset_reads_a_folder(bfm_file, tmp_path):
    path, bfm = bfm_file
    root = tmp_path / "300W_LP"
    (root / "AFW").mkdir(parents=True)
    (root / "landmarks" / "AFW").mkdir(parents=True)
    truth = make_annotation(root / "AFW" / "AFW_1_0.mat", bfm, POSE)
    write_image(root / "AFW" / "AFW_1_0.jpg")
    scipy.io.savemat(root / "landmarks" / "AFW" / "AFW_1_0_pts.mat", {"pts_2d": np.zeros((68, 2))})  # no image: ignored
    write_image(root / "AFW" / "lonely.jpg")  # no annotation: not a sample
    # AFLW2000-3D style: 21 annotated points, -1 for the missing ones
    pt2d = np.full((2, 21), -1.0)
    pt2d[:, :15] = np.random.default_rng(2).uniform(5, 90, (2, 15))
    make_annotation(root / "image00002.mat", bfm, [-0.1, 0.9, 0.0, 50.0, 60.0, 0.0, 4e-4], seed=3, pt2d=pt2d)
    write_image(root / "image00002.jpg")

    d = LP300W(root, model=path)
    assert len(d) == 2 and d.unpaired == 1 and d.skipped == []
    s = d[0]  # AFW/AFW_1_0 sorts first
    assert s["path"].endswith("AFW_1_0.jpg") and s["image"].shape == (3, IMAGE_H, IMAGE_W)
    np.testing.assert_allclose(s["landmarks2d"].double().numpy(), truth["pt3d_68"][:2].T - 0.5, atol=1e-4)
    assert s["landmarks_visible"].all()
    np.testing.assert_allclose(s["shape"].double().numpy(), truth["vertex_um"] / 1000.0, atol=2e-3)
    torch.testing.assert_close(s["landmarks3d"], s["shape"][d.model.landmarks])
    torch.testing.assert_close(s["shape_identity"] + s["shape_expression"], s["shape"])
    R = rotation_3ddfa(*POSE[:3])  # facelab's yaw: atan2(-R20, hypot(R21, R22)) of the same rotation
    assert s["yaw_deg"].item() == pytest.approx(math.degrees(math.atan2(-R[2, 0], math.hypot(R[2, 1], R[2, 2]))), abs=1e-4)
    # the facelab pose projects the facelab shape onto the facelab landmarks
    from facelab.camera import WeakPerspectiveCamera

    proj = WeakPerspectiveCamera.from_pose(s["pose"][None]).project(s["landmarks3d"][None])[0, :, :2]
    assert (proj - s["landmarks2d"]).abs().max() < 1e-2

    a = d[1]
    assert a["landmarks2d_annotated"].shape == (21, 2)
    assert a["landmarks_annotated_visible"].tolist() == [True] * 15 + [False] * 6
    assert torch.isnan(a["landmarks2d_annotated"][15:]).all()
    np.testing.assert_allclose(a["landmarks2d_annotated"][:15].numpy(), pt2d[:, :15].T - 0.5, atol=1e-4)

    # without a model: no shape keys at all (absent, not zero); resize scales landmarks and pose
    small = LP300W(root, image_size=(60, 50))[0]
    assert not {"shape", "alpha_id", "landmarks3d"} & small.keys()
    assert small["image"].shape == (3, 60, 50)
    torch.testing.assert_close(small["landmarks2d"], s["landmarks2d"] * 0.5)
    torch.testing.assert_close(small["pose"][3:], s["pose"][3:] * 0.5)
    assert "pose" not in LP300W(root, image_size=(60, 60))[0]  # aspect changed: no single scale


def test_lp300w_bad_image_raise_or_skip(bfm_file, tmp_path):
    path, bfm = bfm_file
    for name in ("a", "b"):
        make_annotation(tmp_path / f"{name}.mat", bfm, POSE)
    write_image(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"b\.jpg: not a readable image"):
        LP300W(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        d = LP300W(tmp_path, on_bad_image="skip")
    assert len(d) == 1 and d.skipped[0][0].endswith("b.jpg")
    with pytest.raises(ValueError, match="on_bad_image"):
        LP300W(tmp_path, on_bad_image="ignore")
    (tmp_path / "a.jpg").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match="no readable image"):
            LP300W(tmp_path, on_bad_image="skip")


# ------------------------------------------------------------------ the exporter
def test_export_lp300w_round_trip(tmp_path):
    from facelab.data import make_suite

    suite = make_suite("lp", n_identities=2, images_per_identity=2, image_size=32, resolution="quick")
    info = export_lp300w(suite, tmp_path / "lp")
    assert info["images"] == 4 and info["identities"] == 2
    batch = suite.batch(torch.arange(4))
    names = sorted(p.name for p in (tmp_path / "lp").glob("*.mat"))
    assert names[0] == "Synth_Person_0000_0001.mat"
    # the file itself, read with scipy: the real field names and shapes, 1-based pixels
    raw = scipy.io.loadmat(tmp_path / "lp" / names[0])
    assert raw["Pose_Para"].shape == (1, 7) and raw["pt2d"].shape == (2, 68) and raw["pt3d_68"].shape == (3, 68)
    assert raw["Shape_Para"].shape == (suite.model.n_shape, 1) and raw["Exp_Para"].shape == (suite.model.n_exp, 1)
    np.testing.assert_allclose(raw["pt2d"].T, batch["landmarks2d"][0].double().numpy() + 0.5, atol=1e-4)

    d = LP300W(tmp_path / "lp", model=info["model"])
    assert len(d) == 4
    order = [0, 1, 2, 3]  # identity 0's photos 1, 2, then identity 1's (the lp table lists them so)
    assert suite.table.label.tolist() == [0, 0, 1, 1]
    model = suite.model
    for i, j in enumerate(order):
        s = d[i]
        torch.testing.assert_close(s["landmarks2d"], batch["landmarks2d"][j], atol=1e-4, rtol=0)
        torch.testing.assert_close(s["pose"], batch["pose"][j], atol=1e-4, rtol=1e-5)
        assert s["yaw_deg"].item() == pytest.approx(batch["yaw_deg"][j].item(), abs=1e-3)
        ref = model.shape(batch["alpha_id"][j : j + 1], batch["alpha_exp"][j : j + 1])[0]
        torch.testing.assert_close(s["shape"], ref, atol=1e-4, rtol=0)
        # the stored model's landmarks under the stored pose land on the suite's landmarks
        from facelab.camera import WeakPerspectiveCamera

        proj = WeakPerspectiveCamera.from_pose(s["pose"][None]).project(s["landmarks3d"][None])[0, :, :2]
        assert (proj - batch["landmarks2d"][j]).abs().max() < 0.05 * 32
        assert (s["image"] - batch["image"][j]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG


def test_cli_synth_lp_format_lp300w(tmp_path, capsys):
    import json

    from facelab.cli import main

    root = tmp_path / "lp"
    rc = main(["synth", "lp", "--format", "lp300w", "--out", str(root), "--quiet", "--set", "n_identities=1",
               "--set", "images_per_identity=2", "--set", "image_size=24", "--set", "resolution=quick"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["format"] == "lp300w" and info["images"] == 2 and info["image_size"] == [24, 24]
    assert (root / "model.npz").is_file() and len(list(root.glob("*.mat"))) == 2
    d = LP300W(root, model=root / "model.npz")
    assert d.unit_mm == 1.0 and d[1]["image"].shape == (3, 24, 24)
