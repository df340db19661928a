"""300W-LP annotations, LFW pairs and MICC-style folders on tiny fixtures in the real layouts."""

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facelab.io import LFWPairs, MICCDataset, load_300wlp, read_pairs, write_mesh
from facelab.io.lfw import lfw_image_path


# ------------------------------------------------------------------ 300W-LP
def _lp_dict(n2d: int = 68):
    rng = np.random.default_rng(0)
    return {
        "pt2d": rng.uniform(0, 450, (2, n2d)),
        "pt3d_68": rng.uniform(0, 450, (3, 68)),
        "Pose_Para": np.array([[0.1, -0.7, 0.05, 120.0, 130.0, 5.0, 0.0012]], np.float32),
        "Shape_Para": rng.normal(0, 1e5, (199, 1)).astype(np.float32),
        "Exp_Para": rng.normal(0, 1, (29, 1)).astype(np.float32),
        "Tex_Para": rng.normal(0, 1, (199, 1)),
        "Illum_Para": rng.normal(0, 1, (1, 10)),
        "Color_Para": rng.normal(0, 1, (1, 7)),
        "roi": np.array([[10.0, 20.0, 200.0, 210.0]]),
    }


@pytest.mark.parametrize("n2d", [68, 21])
def test_300wlp_values(tmp_path, n2d):
    d = _lp_dict(n2d)
    p = tmp_path / "AFW_1_0.mat"
    scipy.io.savemat(p, d)
    a = load_300wlp(p)
    assert torch.allclose(a["angles"], torch.tensor([0.1, -0.7, 0.05]))
    assert torch.allclose(a["translation"], torch.tensor([120.0, 130.0, 5.0]))
    assert a["scale"] == pytest.approx(0.0012)
    assert a["pose"].shape == (7,) and a["shape"].shape == (199,) and a["exp"].shape == (29,)
    assert np.allclose(a["pt2d"].numpy(), d["pt2d"].T.astype(np.float32))
    assert a["pt2d"].shape == (n2d, 2) and a["pt3d_68"].shape == (68, 3)
    assert np.allclose(a["shape"].numpy(), d["Shape_Para"][:, 0])
    assert a["illum"].shape == (10,) and a["color"].shape == (7,) and a["roi"].tolist() == [10, 20, 200, 210]


def test_300wlp_optional_keys_none(tmp_path):
    d = {k: v for k, v in _lp_dict().items() if k in ("Pose_Para", "Shape_Para", "Exp_Para")}
    p = tmp_path / "min.mat"
    scipy.io.savemat(p, d)
    a = load_300wlp(p)
    assert all(a[k] is None for k in ("pt2d", "pt3d_68", "tex", "illum", "color", "roi"))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("Pose_Para"), r"missing required key\(s\) \['Pose_Para'\]"),
        (lambda d: d.pop("Exp_Para"), "Exp_Para"),
        (lambda d: d.update(Pose_Para=np.zeros((1, 6))), "'Pose_Para' must have 7 entries"),
        (lambda d: d.update(pt2d=np.zeros((3, 68))), "'pt2d' must be"),
        (lambda d: d.update(pt3d_68=np.zeros((3, 60))), "'pt3d_68' must be"),
        (lambda d: d.update(Shape_Para=np.zeros((199, 2))), "'Shape_Para' must be a vector"),
        (lambda d: d.update(Exp_Para=np.full((29, 1), np.nan)), "NaN"),
    ],
)
def test_300wlp_bad_content(tmp_path, change, match):
    d = _lp_dict()
    change(d)
    p = tmp_path / "bad.mat"
    scipy.io.savemat(p, d)
    with pytest.raises(ValueError, match=match) as err:
        load_300wlp(p)
    assert "bad.mat" in str(err.value)


def test_300wlp_missing_and_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.mat"):
        load_300wlp(tmp_path / "none.mat")
    p = tmp_path / "full.mat"
    scipy.io.savemat(p, _lp_dict())
    data = p.read_bytes()
    for frac in (0.0, 0.1, 0.5, 0.95):
        t = tmp_path / "trunc.mat"
        t.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match="trunc.mat"):
            load_300wlp(t)


# ---------------------------------------------------------------------- LFW
NAMES = ["Ann_Lee", "Bob_Roe", "Cy_Ng"]


def _lfw(tmp_path, n_folds=2, per_half=2, write_images=True):
    """pairs.txt with folds of matched then mismatched pairs, and the images it lists."""
    lines = [f"{n_folds}\t{per_half}"]
    expected = []
    for fold in range(n_folds):
        for k in range(per_half):
            name = NAMES[(fold + k) % 3]
            lines.append(f"{name}\t1\t{k + 2}")
            expected.append((name, 1, name, k + 2, True, fold))
        for k in range(per_half):
            a, b = NAMES[k % 3], NAMES[(k + 1) % 3]
            lines.append(f"{a}\t{k + 1}\t{b}\t{fold + 1}")
            expected.append((a, k + 1, b, fold + 1, False, fold))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    root = tmp_path / "lfw"
    root.mkdir()
    if write_images:
        for name in NAMES:
            for idx in range(1, 5):
                f = lfw_image_path(root, name, idx)
                f.parent.mkdir(exist_ok=True)
                colour = (NAMES.index(name) * 100, idx * 50, 0)
                Image.new("RGB", (25, 30), colour).save(f, quality=100)
    return root, pairs, expected


def test_read_pairs_values(tmp_path):
    _, pairs, expected = _lfw(tmp_path, n_folds=3, per_half=2)
    got = read_pairs(pairs)
    assert [tuple(p) for p in got] == expected
    assert [p.fold for p in got] == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("ten 300\n", "header"),
        ("1 1\nAnn 1 2\n", "promises"),
        ("1 1\nAnn 1\nAnn 1 Bob 2\n", ":2: expected a matched"),
        ("1 1\nAnn 1 2\nAnn 1 2\n", ":3: expected a mismatched"),
        ("1 1\nAnn x 2\nAnn 1 Bob 2\n", "integers"),
    ],
)
def test_read_pairs_bad(tmp_path, text, match):
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        read_pairs(p)
    assert "pairs.txt" in str(err.value)


def test_lfw_dataset(tmp_path):
    root, pairs, expected = _lfw(tmp_path)
    ds = LFWPairs(root, pairs, image_size=(16, 12))
    assert len(ds) == len(expected)
    img1, img2, same = ds[0]
    assert img1.shape == (3, 16, 12) and img1.dtype == torch.float32 and same is True
    assert 0.0 <= img1.min() and img1.max() <= 1.0
    # a uniform image keeps its colour through the resize (JPEG within a few levels)
    name, idx = expected[0][0], expected[0][1]
    want = torch.tensor([NAMES.index(name) * 100, idx * 50, 0]) / 255.0
    assert torch.allclose(img1.mean(dim=(1, 2)), want, atol=4 / 255)
    assert ds.issame.tolist() == [e[4] for e in expected]
    assert ds.folds.tolist() == [e[5] for e in expected]
    flipped = LFWPairs(root, pairs, image_size=(16, 12), transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[1][0], ds[1][0].flip(-1))


def test_lfw_missing_image_named(tmp_path):
    root, pairs, _ = _lfw(tmp_path, write_images=False)
    with pytest.raises(FileNotFoundError, match="_0001.jpg"):
        LFWPairs(root, pairs)
    ds = LFWPairs(root, pairs, check_files=False)
    with pytest.raises(FileNotFoundError, match="_0001.jpg"):
        ds[0]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        LFWPairs(tmp_path / "nowhere", pairs)
    with pytest.raises(ValueError, match="image_size"):
        LFWPairs(root, pairs, image_size=(0, 5), check_files=False)


def test_lfw_corrupt_image(tmp_path):
    root, pairs, expected = _lfw(tmp_path)
    bad = lfw_image_path(root, expected[0][0], expected[0][1])
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        LFWPairs(root, pairs)[0]


# --------------------------------------------------------------------- MICC
def _micc(tmp_path):
    root = tmp_path / "micc"
    verts = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    write_mesh(root / "subject_02" / "scan.ply", verts * 2, faces)
    write_mesh(root / "subject_02" / "other.obj", verts, faces)  # ignored: scan.* wins
    write_mesh(root / "subject_01" / "model.obj", verts, faces)
    np.save(root / "subject_01" / "landmarks.npy", np.arange(21, dtype=np.float64).reshape(7, 3))
    np.savetxt(root / "subject_02" / "landmarks.txt", np.ones((5, 3)))
    for t in (2, 0, 1):
        (root / "subject_01" / "indoor").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (t * 80, 0, 0)).save(root / "subject_01" / "indoor" / f"frame_{t:03d}.png")
    (root / "subject_01" / "indoor" / "notes.txt").write_text("not a frame")
    return root, verts, faces


def test_micc_dataset(tmp_path):
    root, verts, faces = _micc(tmp_path)
    ds = MICCDataset(root)
    assert len(ds) == 2 and ds.names == ["subject_01", "subject_02"]
    s1, s2 = ds[0], ds[1]
    assert torch.equal(s1.scan.verts, verts) and torch.equal(s2.scan.verts, verts * 2)
    assert torch.equal(s1.scan.faces, faces)
    assert s1.landmarks.shape == (7, 3) and s1.landmarks[2, 1].item() == 7.0
    assert torch.equal(s2.landmarks, torch.ones(5, 3))
    assert [p.name for p in s1.frames["indoor"]] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert s1.frames["outdoor"] == [] and s2.frames["cooperative"] == []
    frames = ds.load_frames(0, "indoor")
    assert frames.shape == (3, 3, 6, 8)
    assert torch.allclose(frames[:, 0, 0, 0], torch.tensor([0.0, 80, 160]) / 255)


def test_micc_errors(tmp_path):
    root, _, _ = _micc(tmp_path)
    ds = MICCDataset(root)
    with pytest.raises(FileNotFoundError, match="outdoor"):
        ds.load_frames(0, "outdoor")
    with pytest.raises(ValueError, match="condition"):
        ds.load_frames(0, "rainy")
    with pytest.raises(IndexError):
        ds[5]
    (root / "subject_03").mkdir()
    with pytest.raises(ValueError, match="subject_03.*expected one scan mesh"):
        MICCDataset(root)
    (root / "subject_03").rmdir()
    np.save(root / "subject_01" / "landmarks.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="landmarks.npy.*\\(L, 3\\)"):
        MICCDataset(root)[0]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MICCDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no subject folders"):
        MICCDataset(tmp_path / "empty")
