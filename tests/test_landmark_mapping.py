"""Partial landmark annotations: mapping files (eos TOML, JSON), models with unmapped iBUG points,
and the landmark fit / losses that must use the mapped points only."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from facelab.fitting import fit_landmarks, project_landmarks
from facelab.io import load_morphable, read_landmark_mapping
from facelab.losses import LandmarkLoss, landmark_gdl, landmark_loss
from facelab.morphable import MorphableModel, SynthFacesConfig, build_synthfaces

#: eos leaves out the jaw contour (iBUG 1-17) and the inner mouth corners (61, 65): 0-based
UNMAPPED = [*range(17), 60, 64]
#: ... the same, but 18 points (jaw without the chin, 9, plus 61 and 65), as eos's ibug_to_sfm.txt
EOS_UNMAPPED = [k for k in range(17) if k != 8] + [60, 64]

EOS_TEXT = """\
# Mapping from the 68 iBUG points to a test mesh (TOML, as eos's share/ibug_to_sfm.txt).
[landmark_mappings]
            # 1 to 8: right contour, not mapped
 9 = 33     # chin bottom
18 = 225    # right brow outer corner
"31" = 114  # nose tip, a quoted key
49 = 398
68 = 404

[other_table]
1 = 5       # not a mapping: ignored
"""


@pytest.fixture(scope="module")
def synth():
    return build_synthfaces(SynthFacesConfig(resolution="quick"))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _partial(model, unmapped):
    lm = model.landmarks.clone()
    lm[unmapped] = -1
    return dataclasses.replace(model, landmarks=lm)


# ---------------------------------------------------------------------------- reading
def test_eos_toml_mapping(tmp_path):
    lm = read_landmark_mapping(_write(tmp_path, "ibug_to_mesh.txt", EOS_TEXT))
    expected = np.full(68, -1)
    expected[[8, 17, 30, 48, 67]] = [33, 225, 114, 398, 404]
    assert lm.dtype == torch.long and lm.tolist() == expected.tolist()


def test_json_object_and_list(tmp_path):
    obj = read_landmark_mapping(_write(tmp_path, "m.json", json.dumps({"1": 7, "34": 12, "68": 0, "2": None})))
    expected = [-1] * 68
    expected[0], expected[33], expected[67] = 7, 12, 0
    assert obj.tolist() == expected
    entries = [None] * 68
    entries[5], entries[40] = 100, 3
    listed = read_landmark_mapping(_write(tmp_path, "l.json", json.dumps(entries)))
    want = [-1] * 68
    want[5], want[40] = 100, 3
    assert listed.tolist() == want


@pytest.mark.parametrize("text, message", [
    ("[landmark_mappings]\n9 = 33\n69 = 7\n", r"line 3: iBUG point 69 outside 1\.\.68"),
    ("[landmark_mappings]\n9 = 33\n0 = 7\n", r"line 3: iBUG point 0 outside"),
    ("[landmark_mappings]\n9 = 33\n10 = 2.5\n", r"line 3: vertex 2\.5 of iBUG point 10 is not an integer"),
    ("[landmark_mappings]\n9 = 33\n10 = \"7\"\n", r"line 3: vertex '7' of iBUG point 10 is not an integer"),
    ("[landmark_mappings]\n9 = 33\n10 = -4\n", r"line 3: vertex -4 of iBUG point 10 is negative"),
    ("[landmark_mappings]\n9 = 33\n09 = 7\n", r"line 3: iBUG point 9 is mapped twice \(also line 2\)"),
    ("[landmark_mappings]\n9 = 33\n9 = 7\n", r"not a TOML landmark mapping .*line 3"),
    ("[landmark_mappings]\nnose = 33\n", r"line 2: key 'nose' is not an iBUG point number"),
    ("9 = 33\n", r"no \[landmark_mappings\] table"),
])
def test_bad_toml_names_file_and_line(tmp_path, text, message):
    p = _write(tmp_path, "bad_map.txt", text)
    with pytest.raises(ValueError, match=r"bad_map\.txt: " + message):
        read_landmark_mapping(p)


@pytest.mark.parametrize("text, message", [
    ('{"1": 3, "70": 4}', r"key '70': iBUG point 70 outside"),
    ('{"1": 3, "1": 4}', r"key '1' appears twice"),
    ('{"1": 3, "01": 4}', r"key '01': iBUG point 1 is mapped twice"),
    ('{"1": 3.5}', r"key '1': vertex 3\.5 of iBUG point 1 is not an integer"),
    ('{"1": true}', r"key '1': vertex True of iBUG point 1 is not an integer"),
    ('[1, 2, 3]', r"a list mapping needs 68 entries"),
    ('[' + ", ".join(["null"] * 67 + ['"x"']) + ']', r"list position 68: vertex 'x' of iBUG point 68"),
    ('{"1": 3', r"not valid JSON"),
])
def test_bad_json_names_file_and_key(tmp_path, text, message):
    p = _write(tmp_path, "bad_map.json", text)
    with pytest.raises(ValueError, match=r"bad_map\.json: " + message):
        read_landmark_mapping(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_landmark_mapping(tmp_path / "nowhere.txt")


# ------------------------------------------------------------------------ the model
def test_load_morphable_with_mapping(tmp_path, synth):
    path = synth.save(tmp_path / "m.npz")
    lm = synth.landmarks.tolist()
    lines = ["[landmark_mappings]"] + [f"{k + 1} = {lm[k]}" for k in range(68) if k not in EOS_UNMAPPED]
    mapping = _write(tmp_path, "ibug_to_m.txt", "\n".join(lines) + "\n")
    model = load_morphable(path, landmarks=mapping)
    expected = [-1 if k in EOS_UNMAPPED else lm[k] for k in range(68)]
    assert model.landmarks.tolist() == expected
    assert model.landmark_mask.tolist() == [k not in EOS_UNMAPPED for k in range(68)]
    assert int(model.landmark_mask.sum()) == 50
    # the same through an array holding -1, and a JSON sidecar
    assert load_morphable(path, landmarks=np.array(expected)).landmarks.tolist() == expected
    side = _write(tmp_path, "m.json", json.dumps({str(k + 1): v for k, v in enumerate(expected) if v >= 0}))
    assert load_morphable(path, landmarks=side).landmarks.tolist() == expected
    # a vertex the model does not have: the message names the mapping file and the point
    far = _write(tmp_path, "far.txt", f"[landmark_mappings]\n31 = {synth.n_verts}\n")
    with pytest.raises(ValueError, match=r"far\.txt: does not fit .*m\.npz .*iBUG points 31 "):
        load_morphable(path, landmarks=far)
    # a full model still loads unchanged
    assert torch.equal(load_morphable(path).landmarks, synth.landmarks)
    assert bool(load_morphable(path).landmark_mask.all())


def test_foreign_loader_reads_mapping_path(tmp_path):
    from facelab.io import save_sfm

    mean = torch.randn(80, 3, generator=torch.Generator().manual_seed(0)) * 40
    q = torch.linalg.qr(torch.randn(240, 3, generator=torch.Generator().manual_seed(1)))[0]
    p = save_sfm(tmp_path / "m.bin", mean, q, torch.tensor([3.0, 2.0, 1.0]), torch.tensor([[0, 1, 2]]))
    mapping = _write(tmp_path, "map.json", '{"31": 5, "37": 6, "46": 7}')
    m = load_morphable(p, landmarks=mapping)
    assert m.landmarks[[30, 36, 45]].tolist() == [5, 6, 7] and int(m.landmark_mask.sum()) == 3
    assert m.meta["landmark_mapping"] == str(mapping)
    bad = _write(tmp_path, "bad.json", '{"31": 80}')
    with pytest.raises(ValueError, match=r"landmarks \(.*bad\.json\): iBUG points 31 .*\[0, 80\)"):
        load_morphable(p, landmarks=bad)


def test_sfm_landmark_definitions_may_be_partial(tmp_path):
    from facelab.io import load_sfm, save_sfm

    mean = torch.randn(80, 3, generator=torch.Generator().manual_seed(0)) * 40
    q = torch.linalg.qr(torch.randn(240, 3, generator=torch.Generator().manual_seed(1)))[0]
    defs = {"9": 4, "31": 5, "37": 6, "46": 7, "right.eye": 8}  # not every iBUG number; other names ignored
    p = save_sfm(tmp_path / "m.bin", mean, q, torch.tensor([3.0, 2.0, 1.0]), torch.tensor([[0, 1, 2]]), landmarks=defs)
    m = load_sfm(p)
    want = [-1] * 68
    want[8], want[30], want[36], want[45] = 4, 5, 6, 7
    assert m.landmarks.tolist() == want


def test_model_validates_partial_landmarks(synth):
    lm = synth.landmarks.clone()
    lm[[3, 40]] = torch.tensor([-2, synth.n_verts])
    with pytest.raises(ValueError, match=r"landmarks: iBUG points 4, 41 \(1-based\) hold \[-2, 1353\]"):
        dataclasses.replace(synth, landmarks=lm)
    partial = _partial(synth, UNMAPPED)
    assert partial.landmark_mask.tolist() == [k not in UNMAPPED for k in range(68)]
    with pytest.raises(ValueError, match=r"MICC: model .* maps no vertex to iBUG points 1-17, 61, 65 \(1-based\)"):
        partial.require_landmarks("MICC")
    assert torch.equal(partial.require_landmarks("eyes", [36, 45]), partial.landmarks)
    with pytest.raises(ValueError, match=r"chin: .*iBUG points 9 .*it needs iBUG points 9, 31"):
        partial.require_landmarks("chin", [8, 30])
    pts = partial.landmark_points(synth.mean_shape[None])
    assert pts[0, UNMAPPED].isnan().all() and torch.equal(pts[0, 17:60], synth.mean_shape[synth.landmarks[17:60]])
    assert partial.content_sha256() != synth.content_sha256()  # the -1 entries are part of the model


def test_save_round_trip_keeps_unmapped(tmp_path, synth):
    partial = _partial(synth, UNMAPPED)
    back = MorphableModel.load(partial.save(tmp_path / "p.npz"))
    assert back.landmarks.tolist() == partial.landmarks.tolist()


# -------------------------------------------------------------------------- fitting
def _tiny(V=200, K=10, E=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(V, generator=g, dtype=torch.float64) * math.pi - math.pi / 2
    phi = (torch.rand(V, generator=g, dtype=torch.float64) - 0.5) * 0.8 * math.pi
    mean = torch.stack([70 * torch.sin(theta) * torch.cos(phi), 90 * torch.sin(phi),
                        80 * torch.cos(theta) * torch.cos(phi)], 1)
    Q = torch.linalg.qr(torch.randn(3 * V, K + E, generator=g, dtype=torch.float64))[0]
    return MorphableModel(
        mean, Q[:, :K], torch.linspace(30, 5, K, dtype=torch.float64), Q[:, K:],
        torch.linspace(10, 2, E, dtype=torch.float64), torch.zeros(V, 3, dtype=torch.float64),
        torch.zeros(3 * V, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
        torch.tensor([[0, 1, 2], [1, 3, 2]]), torch.randperm(V, generator=g)[:68], torch.arange(V),
        torch.ones(V, dtype=torch.bool), 0, name="tiny")


def _scene(model, B=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    a_id = torch.randn(2, model.n_shape, generator=g, dtype=torch.float64) * model.shape_std
    a_exp = torch.randn(B, model.n_exp, generator=g, dtype=torch.float64) * model.exp_std
    pose = torch.tensor([[0.1, 0.4, 0.0, 110, 100, 1.1], [-0.2, -0.6, 0.1, 90, 120, 0.9],
                         [0.0, 0.9, -0.1, 100, 100, 1.3], [0.2, -0.2, 0.05, 120, 95, 1.0]], dtype=torch.float64)[:B]
    groups = torch.tensor([0, 0, 1, 1])[:B]
    truth = model.shape(a_id[groups], a_exp)
    return truth, pose, groups, project_landmarks(truth[:, model.landmarks], pose)


def test_partial_fit_equals_subset_fit():
    """A model with 18 unmapped points fits like the full model told to ignore those 18 points."""
    full = _tiny()
    partial = _partial(full, EOS_UNMAPPED)
    _, pose, groups, lm2d = _scene(full)
    garbage = lm2d.clone()
    garbage[:, EOS_UNMAPPED] = float("nan")  # never read: NaN would poison any sum it entered
    got = fit_landmarks(partial, garbage, groups)
    weights = torch.ones(4, 68, dtype=torch.float64)
    weights[:, EOS_UNMAPPED] = 0
    want = fit_landmarks(full, lm2d, groups, weights=weights)
    for field in ("alpha_id", "alpha_exp", "pose", "shapes", "residual_px"):
        assert torch.allclose(getattr(got, field), getattr(want, field), atol=1e-7, rtol=1e-7), field
    # and the targets at the unmapped points make no difference
    other = lm2d.clone()
    other[:, EOS_UNMAPPED] += 50.0
    again = fit_landmarks(partial, other, groups)
    assert torch.equal(again.alpha_id, got.alpha_id) and torch.equal(again.pose, got.pose)
    # the fit differs from one that uses the 18 points with wrong targets (the test can fail)
    assert not torch.allclose(fit_landmarks(full, other, groups).alpha_id, got.alpha_id, atol=1e-3)


def test_partial_fit_recovers_truth():
    """Independent check: noise-free projections of the 50 mapped points give back the true faces."""
    full = _tiny()
    partial = _partial(full, EOS_UNMAPPED)
    truth, pose, groups, lm2d = _scene(full)
    lm2d[:, EOS_UNMAPPED] = 1e6  # wildly wrong where unmapped
    fit = fit_landmarks(partial, lm2d, groups, landmark_std_px=0.01)  # noise-free: a weak prior
    keep = [k for k in range(68) if k not in EOS_UNMAPPED]
    reproj = project_landmarks(fit.shapes[:, full.landmarks[keep]], fit.pose)
    assert (reproj - lm2d[:, keep]).norm(dim=-1).max() < 0.01
    assert float(fit.residual_px.max()) < 0.01
    assert (fit.pose[:, :3] - pose[:, :3]).abs().max() < 1e-3
    assert ((fit.shapes - truth) ** 2).sum(-1).mean(-1).sqrt().max() < 0.01


def test_partial_shape_step_matches_dense_least_squares():
    """One alternation on the 50 mapped points = numpy's lstsq on the explicit stacked system."""
    from facelab.fitting import estimate_pose

    full = _tiny(K=6, E=3)
    partial = _partial(full, EOS_UNMAPPED)
    keep = [k for k in range(68) if k not in EOS_UNMAPPED]
    lm_v = full.landmarks[keep]
    _, _, groups, lm2d = _scene(full)
    g = torch.Generator().manual_seed(8)
    std_px, B, G, K, E = 1.5, 4, 2, full.n_shape, full.n_exp
    lm2d = lm2d + std_px * torch.randn(B, 68, 2, generator=g, dtype=torch.float64)
    fit = fit_landmarks(partial, lm2d, groups, n_iter=1, n_refine=0, landmark_std_px=std_px)

    obs = lm2d[:, keep]
    pose = estimate_pose(full.mean_shape[lm_v].expand(B, -1, -1), obs)

    def columns(basis):  # d(landmark px)/d(coefficient), by projecting each unit offset
        offs = basis.T.reshape(-1, full.n_verts, 3)[:, lm_v]
        return torch.stack([(project_landmarks(o.expand(B, -1, -1), pose) - pose[:, None, 3:5]).reshape(B, -1)
                            for o in offs], -1)

    J_id, J_exp = columns(full.shape_basis), columns(full.exp_basis)
    resid = (obs - project_landmarks(full.mean_shape[lm_v].expand(B, -1, -1), pose)).reshape(B, -1)
    rows, rhs = [], []
    for b in range(B):
        A = torch.zeros(2 * len(keep), G * K + B * E, dtype=torch.float64)
        A[:, groups[b] * K:(groups[b] + 1) * K] = J_id[b]
        A[:, G * K + b * E:G * K + (b + 1) * E] = J_exp[b]
        rows.append(A / std_px)
        rhs.append(resid[b] / std_px)
    rows.append(torch.diag(torch.cat([(1 / full.shape_std).repeat(G), (1 / full.exp_std).repeat(B)])))
    rhs.append(torch.zeros(G * K + B * E, dtype=torch.float64))
    sol = np.linalg.lstsq(torch.cat(rows).numpy(), torch.cat(rhs).numpy(), rcond=None)[0]
    np.testing.assert_allclose(fit.alpha_id.numpy(), sol[:G * K].reshape(G, K), atol=1e-8)
    np.testing.assert_allclose(fit.alpha_exp.numpy(), sol[G * K:].reshape(B, E), atol=1e-8)


def test_fit_needs_enough_mapped_points():
    model = _partial(_tiny(), list(range(65)))
    with pytest.raises(ValueError, match="maps 3 of the 68 iBUG points"):
        fit_landmarks(model, torch.zeros(1, 68, 2, dtype=torch.float64))


def test_full_model_fit_unchanged():
    """A full model ignores nothing: moving any single target moves the fit."""
    full = _tiny()
    _, _, groups, lm2d = _scene(full)
    base = fit_landmarks(full, lm2d, groups)
    moved = lm2d.clone()
    moved[:, 0] += 20.0  # iBUG 1, a jaw point
    assert not torch.allclose(fit_landmarks(full, moved, groups).alpha_id, base.alpha_id, atol=1e-3)


# --------------------------------------------------------------------------- losses
def test_landmark_loss_ignores_unmapped_points():
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(3, 68, 2, generator=g, dtype=torch.float64) * 10
    target = torch.randn(3, 68, 2, generator=g, dtype=torch.float64) * 10
    mask = torch.ones(68, dtype=torch.bool)
    mask[EOS_UNMAPPED] = False
    keep = mask.nonzero()[:, 0]
    # the masked mean is the plain mean over the mapped points (written independently)
    want = ((pred[:, keep] - target[:, keep]) ** 2).sum(-1).mean()
    assert torch.allclose(landmark_loss(pred, target, mask=mask), want)
    changed = target.clone()
    changed[:, EOS_UNMAPPED] = torch.randn(3, 18, 2, dtype=torch.float64) * 1e3
    assert landmark_loss(pred, changed, mask=mask) == landmark_loss(pred, target, mask=mask)
    assert landmark_loss(pred, changed) != landmark_loss(pred, target)  # without the mask it would count
    # NaN placeholders at unmapped points (MorphableModel.landmark_points) stay out of value and gradient
    p = pred.clone()
    p[:, EOS_UNMAPPED] = float("nan")
    p.requires_grad_(True)
    loss = LandmarkLoss(gdl_weight=1.0)(p, changed, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all() and (p.grad[:, EOS_UNMAPPED] == 0).all()
    # the GDL keeps only pairs with both ends mapped: here the jaw-width pair (iBUG 1, 17) goes
    from facelab.losses import LANDMARK_GDL_PAIRS

    kept = LANDMARK_GDL_PAIRS[mask[LANDMARK_GDL_PAIRS].all(1)]
    assert len(kept) == len(LANDMARK_GDL_PAIRS) - 1 and [0, 16] not in kept.tolist()
    assert torch.allclose(landmark_gdl(pred, changed, mask=mask), landmark_gdl(pred, target, kept))
    assert torch.allclose(LandmarkLoss()(pred, changed, mask=mask),
                          landmark_loss(pred, target, mask=mask) + landmark_gdl(pred, target, kept))
    # weights combine with the mask
    w = torch.rand(3, 68, generator=g, dtype=torch.float64)
    ww = w[:, keep]
    want_w = (ww * ((pred[:, keep] - target[:, keep]) ** 2).sum(-1)).sum() / ww.sum()
    assert torch.allclose(landmark_loss(pred, changed, w, mask=mask), want_w)


def test_landmark_loss_full_mask_is_unmasked():
    g = torch.Generator().manual_seed(6)
    pred, target = torch.randn(2, 68, 2, generator=g), torch.randn(2, 68, 2, generator=g)
    all_mapped = torch.ones(68, dtype=torch.bool)
    assert torch.allclose(LandmarkLoss()(pred, target, mask=all_mapped), LandmarkLoss()(pred, target))


def test_regressor_loss_uses_mapped_points(synth):
    from facelab.train.regressor import RegressorLoss

    model = synth.to(dtype=torch.float64)
    partial = _partial(model, UNMAPPED)
    loss_fn = RegressorLoss(partial, 3, 2, (64, 64)).double()
    assert loss_fn.landmarks3d(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)).shape == (1, 49, 3)
    assert loss_fn.landmark_keep.tolist() == [k for k in range(68) if k not in UNMAPPED]
    assert torch.allclose(loss_fn.mean_lm, model.mean_shape[model.landmarks[loss_fn.landmark_keep]])


# ----------------------------------------------------------- consumers needing all 68
def test_consumers_that_need_all_points_say_which_are_missing(synth):
    from facelab.render import render

    partial = _partial(synth, UNMAPPED)
    with pytest.raises(ValueError, match=r"landmarks_idx: holds -1"):
        render(synth.mean_shape[None], synth.faces, synth.mean_albedo[None], torch.zeros(1, 27),
               torch.tensor([[0.0, 0, 0, 32, 32, 0.5]]), landmarks_idx=partial.landmarks)
    from facelab.morphable.resample import resample_model

    # resampling onto another mesh aligns on the common mapped points and keeps the unmapped ones
    # unmapped (not moved to the last vertex)
    moved = resample_model(partial, synth)
    assert moved.landmark_mask.tolist() == partial.landmark_mask.tolist()
    assert torch.equal(moved.landmarks[partial.landmark_mask], synth.landmarks[partial.landmark_mask])
    assert torch.allclose(moved.mean_shape, synth.mean_shape, atol=1e-3)  # the same mesh: an identity transfer
    with pytest.raises(ValueError, match="map only 3 iBUG points in common"):
        resample_model(_partial(synth, list(range(65))), synth)
    from facelab.models.gao2020 import Gao2020Config, Gao2020Model

    with pytest.raises(ValueError, match=r"maps no vertex to iBUG points 1-17, 61, 65"):
        Gao2020Model(Gao2020Config(resolution="quick"), partial)


def test_photo_app_fits_the_mapped_points(synth, tmp_path):
    """facelab photo with an eos-style partial model: fitted landmarks NaN/null where unmapped."""
    pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    from facelab.apps import photo as P

    partial = _partial(synth, UNMAPPED)
    (face,) = P.reconstruct_photo(skimage_data.astronaut(), model=partial, run_liu=False)
    fitted, detected = face["landmarks_fitted"], face["landmarks_detected"]
    keep = [k for k in range(68) if k not in UNMAPPED]
    assert fitted[UNMAPPED].isnan().all() and fitted[keep].isfinite().all()
    error = (fitted[keep] - detected[keep]).norm(dim=-1).mean()  # recomputed over the mapped points
    assert face["landmark_error_px"] == pytest.approx(float(error), rel=1e-5) and error < 5.0
    summary = P.photo_summary([face])
    json.dumps(summary)  # JSON-ready: null, not NaN
    points = summary["faces"][0]["landmarks_fitted"]
    assert [k for k, p in enumerate(points) if p is None] == UNMAPPED
    files = P.write_photo([face], skimage_data.astronaut(), tmp_path)
    assert files[0]["overlay"].is_file()
