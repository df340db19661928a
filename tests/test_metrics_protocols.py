"""facelab.metrics.protocols: MICC-style and NoW-style errors on constructed scans."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from facelab.metrics.alignment import Similarity, apply
from facelab.metrics.protocols import crop_around, micc_error, micc_table, now_error, now_summary


def face_mesh(rows=40, cols=40, half=110.0, seed=0):
    """A smooth face-like height field (nose bump at the origin), mm."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-half, half, cols), np.linspace(-half, half, rows))
    z = 25 * np.exp(-(u**2 + v**2) / 400) + 20 * np.exp(-(u**2 + v**2) / 8000) + 8 * np.sin(u / 20) * np.cos(v / 25)
    z = z + 0.3 * rng.normal(size=z.shape)
    verts = np.stack([u, v, z], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
    nose = int(np.argmax(verts[:, 2]))
    return verts, faces, nose


def _similarity(seed, scale):
    rng = np.random.default_rng(seed)
    return Similarity(Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix(), rng.normal(size=3) * 30, scale)


def _lmk_idx(verts, nose):
    # seven spread-out vertices, like eye corners, nose tip, mouth corners
    targets = np.array([[-45, 35], [-15, 35], [15, 35], [45, 35], [0, 0], [-25, -40], [25, -40]], dtype=float)
    return np.array([int(np.argmin(np.sum((verts[:, :2] - t) ** 2, axis=1))) for t in targets])


def test_crop_around_matches_brute_force():
    verts, _, nose = face_mesh()
    cropped, index = crop_around(verts, verts[nose], 95.0)
    expected = [i for i, p in enumerate(verts) if np.sqrt(np.sum((p - verts[nose]) ** 2)) <= 95.0]
    assert index.tolist() == expected
    np.testing.assert_array_equal(cropped, verts[expected])
    with pytest.raises(ValueError, match="no vertex lies within"):
        crop_around(verts, verts[nose] + 1000.0)


@pytest.mark.parametrize("scale", [True, False])
def test_micc_zero_error_for_transformed_copy(scale):
    verts, faces, nose = face_mesh()
    T = _similarity(1, 1.15 if scale else 1.0)
    pred = apply(T, verts)
    lmk = _lmk_idx(verts, nose)
    noisy_pred_lmk = pred[lmk] + np.random.default_rng(0).normal(scale=2.0, size=(7, 3))
    out = micc_error(pred, faces, verts, faces, nose_tip_gt=verts[nose], pred_landmarks=noisy_pred_lmk,
                     gt_landmarks=verts[lmk], scale=scale)
    assert out["mean"] < 1e-3 and out["median"] < 1e-3
    assert out["distances"].shape == out["crop_index"].shape
    np.testing.assert_allclose(apply(out["transform"], pred), verts, atol=1e-2)


def test_micc_scale_flag_matters():
    verts, faces, nose = face_mesh()
    pred = 1.15 * verts
    lmk = _lmk_idx(verts, nose)
    kw = dict(nose_tip_gt=verts[nose], pred_landmarks=pred[lmk], gt_landmarks=verts[lmk])
    assert micc_error(pred, faces, verts, scale=False, **kw)["mean"] > 0.3
    assert micc_error(pred, faces, verts, scale=True, **kw)["mean"] < 1e-3


def test_micc_distances_are_point_to_plane_brute_force():
    verts, faces, nose = face_mesh(20, 20)
    rng = np.random.default_rng(3)
    pred = verts + rng.normal(scale=1.0, size=verts.shape) * [0, 0, 1]
    out = micc_error(pred, faces, verts, nose_tip_gt=verts[nose], scale=False)
    aligned = apply(out["transform"], pred)
    tri = aligned[faces]
    for k in rng.choice(len(out["crop_index"]), 15, replace=False):
        p = verts[out["crop_index"][k]]
        # brute force: closest triangle by exact distance (dense sampling of each triangle)
        w = np.array([(i, j) for i in range(21) for j in range(21 - i)]) / 20.0
        samples = tri[:, 0, None] + w[:, :1] * (tri[:, 1] - tri[:, 0])[:, None] + w[:, 1:] * (tri[:, 2] - tri[:, 0])[:, None]
        f = int(np.argmin(np.linalg.norm(samples - p, axis=2).min(axis=1)))
        n = np.cross(tri[f, 1] - tri[f, 0], tri[f, 2] - tri[f, 0])
        assert out["distances"][k] == pytest.approx(abs((p - tri[f, 0]) @ n) / np.linalg.norm(n), abs=1e-3)
    assert 0.1 < out["mean"] < 1.5


def test_micc_bad_inputs():
    verts, faces, nose = face_mesh(10, 10)
    with pytest.raises(ValueError, match="give both or neither"):
        micc_error(verts, faces, verts, nose_tip_gt=verts[nose], pred_landmarks=verts[:5])
    with pytest.raises(ValueError, match="gt_landmarks: expected shape"):
        micc_error(verts, faces, verts, nose_tip_gt=verts[nose], pred_landmarks=verts[:5], gt_landmarks=verts[:4])
    with pytest.raises(ValueError, match="pred_faces: indices"):
        micc_error(verts, faces + 1000, verts, nose_tip_gt=verts[nose])
    with pytest.raises(ValueError, match="center: expected shape"):
        micc_error(verts, faces, verts, nose_tip_gt=verts[:2])


def test_micc_table_hand_example():
    errs = [1.0, 2.0, 3.0, 5.0, 4.0]
    conds = ["outdoor", "cooperative", "cooperative", "indoor", "outdoor"]
    table = micc_table(errs, conds)
    assert list(table) == ["cooperative", "indoor", "outdoor"]
    assert table["cooperative"] == {"mean": 2.5, "std": 0.5, "n": 2}
    assert table["outdoor"] == {"mean": 2.5, "std": 1.5, "n": 2}
    assert table["indoor"] == {"mean": 5.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match="conditions"):
        micc_table(errs, conds[:2])


def test_now_hand_example_on_plane():
    g = np.linspace(-100, 100, 21)
    u, v = np.meshgrid(g, g)
    plane = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], 1)
    idx = np.arange(441).reshape(21, 21)
    faces = np.concatenate([np.stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], 1),
                            np.stack([idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()], 1)])
    lmk = plane[[110, 120, 130, 220, 310, 320, 330]]
    # scan: a symmetric pattern at z = +-h above/below the plane (optimum of the refinement: no shift)
    h = 0.7
    s = np.linspace(-45, 45, 10)
    su, sv = np.meshgrid(s, s)
    signs = np.where((np.add.outer(np.arange(10), np.arange(10)).ravel() % 2) == 0, 1.0, -1.0)  # checkerboard
    scan = np.stack([su.ravel(), sv.ravel(), h * signs], 1)
    out = now_error(0.5 * plane, faces, 0.5 * lmk, scan, lmk)  # the prediction is at half scale
    assert out["median"] == pytest.approx(h, abs=1e-6)
    assert out["mean"] == pytest.approx(h, abs=1e-6)
    assert out["std"] == pytest.approx(0.0, abs=1e-6)


def test_now_zero_error_for_transformed_copy():
    verts, faces, nose = face_mesh(30, 30)
    lmk = _lmk_idx(verts, nose)
    T = _similarity(5, 0.9)
    rng = np.random.default_rng(2)
    fidx = rng.choice(len(faces), 800)
    scan = np.einsum("nk,nkc->nc", rng.dirichlet([1, 1, 1], 800), verts[faces[fidx]])
    pred = apply(T, verts)
    out = now_error(pred, faces, pred[lmk], scan, verts[lmk])  # exact landmarks fix the scale
    assert out["median"] < 1e-3 and out["mean"] < 1e-3
    with pytest.raises(ValueError, match="pred_lmk7: expected shape"):
        now_error(pred, faces, pred[lmk[:6]], scan, verts[lmk[:6]])


def test_now_summary_pools_vertices():
    out = now_summary([np.array([1.0, 2.0, 3.0]), np.array([10.0])])
    assert out == {"median": 2.5, "mean": 4.0, "std": pytest.approx(np.std([1, 2, 3, 10]))}
    with pytest.raises(ValueError, match="empty"):
        now_summary([])
    with pytest.raises(ValueError, match=r"distance_arrays\[1\]: contains NaN"):
        now_summary([np.ones(2), np.array([np.nan])])
