"""facelab.data: suites, photo collections, composition, disk cache."""

import numpy as np
import pytest
import torch

from facelab.data import (
    BU3DFE_EXPRESSIONS, BU3DFE_YAWS_DEG, MICC_CONDITIONS, SUITES, SavedCollection, SuiteConfig, build_table,
    make_suite, save_collection,
)
from facelab.data import compose

SMALL = dict(image_size=32, resolution="quick")


@pytest.fixture(scope="module")
def webface():
    return make_suite("webface", n_identities=6, images_per_identity=4, **SMALL)


# ---------------------------------------------------------------- suite tables
def test_suites_have_disjoint_identities():
    seen = {}
    for name in SUITES:
        ids = set(build_table(SuiteConfig(suite=name)).identity.tolist())
        for other, other_ids in seen.items():
            assert not ids & other_ids, f"{name} and {other} share identities"
        seen[name] = ids


def test_lfw_table_follows_the_protocol():
    cfg = SuiteConfig(suite="lfw", n_identities=40, pairs_per_fold=5)
    t = build_table(cfg)
    assert t.pairs.shape == (10 * 2 * 5, 2) and len(t) == 2 * t.pairs.shape[0]
    ident = t.identity
    for k in range(10):
        rows = torch.nonzero(t.fold == k).flatten()
        assert rows.tolist() == list(range(k * 10, (k + 1) * 10)), "folds must be contiguous"
        same = t.issame[rows]
        assert same[:5].all() and not same[5:].any(), "matched pairs first, then mismatched"
    a, b = ident[t.pairs[:, 0]], ident[t.pairs[:, 1]]
    assert torch.equal(a == b, t.issame)
    fold_ids = [set(a[t.fold == k].tolist()) | set(b[t.fold == k].tolist()) for k in range(10)]
    for i in range(10):
        for j in range(i + 1, 10):
            assert not fold_ids[i] & fold_ids[j], "folds must not share identities"


def test_micc_and_bu3dfe_tables():
    micc = build_table(SuiteConfig(suite="micc", n_identities=2, frames_per_video=4))
    assert len(micc) == 2 * 3 * 4 and micc.condition_names == MICC_CONDITIONS
    coop = micc.fixed_yaw_deg[(micc.condition == 0) & (micc.label == 0)]
    assert torch.all(coop[1:] > coop[:-1]), "the cooperative video sweeps the yaw"
    bu = build_table(SuiteConfig(suite="bu3dfe", n_identities=1))
    assert len(bu) == len(BU3DFE_EXPRESSIONS) * len(BU3DFE_YAWS_DEG)
    assert set(bu.fixed_yaw_deg.tolist()) == {float(y) for y in range(-90, 91, 10)}


@pytest.mark.parametrize("bad", [dict(suite="casia"), dict(image_size=(4, 4)), dict(conditions={"yaw_maxx": 3}),
                                 dict(profile="medium"), dict(n_identities=-1)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        SuiteConfig(**bad)


# ------------------------------------------------------------ photo collection
def test_sample_shapes(webface):
    s = webface[0]
    V, m = webface.model.n_verts, webface.model
    assert s["image"].shape == (3, 32, 32) and 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["shape"].shape == (V, 3) and s["albedo"].shape == (V, 3)
    assert s["alpha_id"].shape == (m.n_shape,) and s["alpha_exp"].shape == (m.n_exp,) and s["beta"].shape == (m.n_albedo,)
    assert s["pose"].shape == (6,) and s["sh"].shape == (27,)
    assert s["landmarks2d"].shape == (68, 2) and s["landmarks3d"].shape == (68, 3)
    assert s["face_mask"].shape == (1, 32, 32) and s["occlusion_mask"].shape == (1, 32, 32)


def test_images_depend_only_on_their_index(webface):
    alone = webface.batch(torch.tensor([7]))
    mixed = webface.batch(torch.tensor([3, 7, 1]))
    for key in ("image", "shape", "pose", "sh", "landmarks2d"):
        torch.testing.assert_close(alone[key][0], mixed[key][1])
    again = make_suite("webface", n_identities=6, images_per_identity=4, **SMALL).batch(torch.tensor([7]))
    assert torch.equal(alone["image"], again["image"])
    other_seed = make_suite("webface", n_identities=6, images_per_identity=4, seed=1, **SMALL).batch(torch.tensor([7]))
    assert not torch.equal(alone["image"], other_seed["image"])


def test_truth_is_consistent(webface):
    from facelab.camera import euler_to_rotation, weak_perspective

    b = webface.batch(torch.arange(8))
    m = webface.model
    # The shape splits into identity + expression, and the expression is exactly in the model.
    torch.testing.assert_close(b["shape"], b["shape_identity"] + b["shape_expression"])
    torch.testing.assert_close(m.expression_offset(b["alpha_exp"]), b["shape_expression"], atol=1e-3, rtol=0)
    # Landmarks: the 2D ones are the camera projection of the 3D ones.
    proj = weak_perspective(b["landmarks3d"], euler_to_rotation(b["pose"][:, :3]), b["pose"][:, 5], b["pose"][:, 3:5])
    torch.testing.assert_close(proj[..., :2], b["landmarks2d"], atol=1e-3, rtol=1e-4)
    # Same identity label => same identity shape; alpha_id is its model projection.
    same = b["label"][:, None] == b["label"][None, :]
    dist = (b["shape_identity"][:, None] - b["shape_identity"][None]).abs().amax((-1, -2))
    assert (dist[same] == 0).all() and (dist[~same] > 0).all()
    torch.testing.assert_close(m.project_shape(b["shape_identity"]), b["alpha_id"], atol=1e-2, rtol=1e-3)


def test_labels_and_pose_ranges():
    lp = make_suite("lp", n_identities=4, images_per_identity=8, **SMALL)
    yaw = torch.cat([lp.batch(torch.arange(i, i + 8))["yaw_deg"] for i in range(0, 32, 8)])
    assert yaw.abs().max() <= 90 + 1e-4 and yaw.abs().max() > 30, "lp covers large poses"
    bu = make_suite("bu3dfe", n_identities=1, **SMALL)
    b = bu.batch(torch.arange(len(BU3DFE_YAWS_DEG)))
    torch.testing.assert_close(b["yaw_deg"], torch.tensor(BU3DFE_YAWS_DEG, dtype=torch.float32), atol=1e-4, rtol=0)
    assert (b["blend"] == 0).all(), "the first bu3dfe expression is neutral"


def test_face_mask_covers_frontal_landmarks(webface):
    scene = webface.scene(torch.arange(4))
    scene["angles"].zero_()
    b = webface.render_scene(scene)
    lm = b["landmarks2d"][:, 17:].floor().long().clamp(0, 31)  # inner landmarks; the jaw sits on the outline
    inside = b["face_mask"][torch.arange(4)[:, None], 0, lm[..., 1], lm[..., 0]]
    assert inside.mean() > 0.95


def test_index_errors(webface):
    with pytest.raises(IndexError):
        webface[len(webface)]
    with pytest.raises(ValueError, match="empty"):
        webface.batch(torch.tensor([], dtype=torch.long))


# ------------------------------------------------------------------- compose
def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    out = compose.gaussian_blur(x, torch.tensor([1.0, 0.6]))
    for b, sigma in enumerate((1.0, 0.6)):
        radius = 3
        ref = gaussian_filter(x[b].numpy(), sigma=(0, sigma, sigma), mode="nearest", truncate=radius / sigma)
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-5)


def test_occluders_cover_their_region():
    lm = torch.zeros(3, 68, 2)
    lm[:, 36:42] = torch.tensor([20.0, 30.0])
    lm[:, 42:48] = torch.tensor([44.0, 30.0])
    lm[:, 48:68] = torch.tensor([32.0, 50.0])
    lm[:, 17:27] = torch.tensor([32.0, 24.0])
    lm[:, 0:17] = torch.stack([torch.linspace(10.0, 54.0, 17), torch.full((17,), 40.0)], 1)
    kind = torch.tensor([compose.OCCLUDERS.index(k) for k in ("none", "glasses", "hairband")])
    mask, _ = compose.occluder_masks(kind, lm, torch.full((3, 8), 0.5), 64, 64)
    assert mask[0].sum() == 0
    assert mask[1, 0, 20:40, 8:56].sum() > 20 and mask[1, 0, 45:, :].sum() == 0, "glasses sit on the eyes"
    assert mask[2, 0, :24].sum() > 20 and mask[2, 0, 28:].sum() == 0, "the band sits above the brows"


# --------------------------------------------------------------------- cache
def test_save_and_load_round_trip(tmp_path, webface):
    out = save_collection(webface, tmp_path / "wf", batch_size=10, progress=False)
    saved = SavedCollection(out)
    assert len(saved) == len(webface) and (out / "preview.png").exists()
    fresh = webface[5]
    item = saved[5]
    assert (item["image"] - fresh["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert int(item["label"]) == int(fresh["label"])
    torch.testing.assert_close(item["pose"], fresh["pose"])


def test_saved_collection_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        SavedCollection(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="format"):
        SavedCollection(tmp_path)


def test_batch_stream_leaves_gradients_on_for_its_consumer():
    from facelab.data import BatchStream, make_suite

    stream = iter(BatchStream(make_suite("lfw", n_identities=20, pairs_per_fold=2, image_size=16), batch_size=4, shuffle=False))
    batch = next(stream)  # the generator is now suspended between two batches
    assert torch.is_grad_enabled()
    assert not batch["image"].requires_grad
    w = torch.ones(1, requires_grad=True)
    assert (batch["image"].mean() * w).requires_grad  # the consumer can still build a graph


def test_suite_order_is_part_of_every_image_seed():
    from facelab.data.suites import SUITES

    # an image's seed mixes in its suite's position here: reordering would change every photo
    assert SUITES == ("webface", "lp", "collections", "micc", "bu3dfe", "lfw")


def test_standard_profile_suites_have_power():
    """The standard profile's scoring suites: >= 30 MICC subjects x 3 videos, >= 3,000 LFW pairs, >= 50 BU-3DFE."""
    micc = build_table(SuiteConfig(suite="micc", profile="standard"))
    assert len(set(micc.label.tolist())) >= 30 and len(micc.condition_names) == 3
    lfw = build_table(SuiteConfig(suite="lfw", profile="standard"))
    assert lfw.pairs.shape[0] >= 3000 and int(lfw.fold.max()) + 1 == 10
    assert SuiteConfig(suite="bu3dfe", profile="standard").n_identities >= 50
