"""The SynthFaces world and the morphable model built from it (facelab.morphable)."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest
import torch

from facelab.morphable import (
    POPULATION_ID_START, FaceWorld, MorphableModel, SynthFacesConfig, build_synthfaces, load_npz, load_world,
    mesh_hierarchy,
)
from facelab.morphable.landmarks import IBUG_MIRROR, LANDMARK_GROUPS
from facelab.morphable.synthfaces import hash_uniform

QUICK = SynthFacesConfig(resolution="quick")


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return build_synthfaces(QUICK, use_cache=False)


@pytest.fixture(scope="module")
def world() -> FaceWorld:
    return load_world(QUICK)


def _mirror(verts, sym):
    return verts[..., sym, :] * torch.tensor([-1.0, 1.0, 1.0], dtype=verts.dtype)


# ------------------------------------------------------------------ config
def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="resolution"):
        SynthFacesConfig(resolution="tiny")
    with pytest.raises(ValueError, match="n_shape"):
        SynthFacesConfig(n_population=10, n_shape=80)
    with pytest.raises(TypeError, match="config"):
        build_synthfaces({"resolution": "quick"})
    assert SynthFacesConfig(seed=1).key() != SynthFacesConfig(seed=2).key()


# ------------------------------------------------------------------ bases
def test_model_shapes(model):
    V = 33 * 41
    assert model.n_verts == V and model.grid_shape == (33, 41)
    assert (model.n_shape, model.n_albedo, model.n_exp) == (80, 80, 30)
    assert model.faces.shape == (2 * 32 * 40, 3)
    assert model.meta["seed"] == 0 and model.meta["resolution"] == "quick"


@pytest.mark.parametrize("basis,std", [("shape_basis", "shape_std"), ("exp_basis", "exp_std"), ("albedo_basis", "albedo_std")])
def test_bases_orthonormal_and_std_sorted(model, basis, std):
    b = getattr(model, basis).double()
    assert torch.allclose(b.T @ b, torch.eye(b.shape[1], dtype=torch.float64), atol=1e-4)
    s = getattr(model, std)
    assert (s[:-1] >= s[1:]).all() and (s > 0).all()


def test_shape_std_matches_population_variance(model, world):
    """Independent check: PCA std**2 sums to the population variance captured by the basis."""
    ids = torch.arange(POPULATION_ID_START, POPULATION_ID_START + QUICK.n_population)
    shapes = world.identity(ids)["shape"].double()
    data = torch.cat([shapes, world.mirror(shapes)]).reshape(2 * len(ids), -1)
    centred = data - model.mean_shape.double().reshape(-1)
    coeffs = centred @ model.shape_basis.double()
    assert torch.allclose(coeffs.std(0), model.shape_std.double(), rtol=1e-3)


def test_expression_basis_spans_blendshapes(model, world):
    blend = world.blendshapes.double().reshape(world.n_blend, -1)
    q = model.exp_basis.double()
    resid = blend - (blend @ q) @ q.T
    assert resid.abs().max() < 1e-3


# ------------------------------------------------------------------ symmetry and landmarks
def test_mean_shape_is_mirror_symmetric(model):
    mirrored = _mirror(model.mean_shape, model.symmetry)
    assert (mirrored - model.mean_shape).abs().max() < 1e-4
    assert torch.allclose(_mirror(model.mean_albedo, model.symmetry) * torch.tensor([-1.0, 1, 1]), model.mean_albedo, atol=1e-5)


def test_world_template_symmetric_and_true_faces_are_not(world):
    m = world.mean_surface()
    assert torch.equal(world.mirror(m[None])[0], m)
    face = world.identity(torch.tensor([3]))["shape"]
    assert (world.mirror(face) - face).abs().max() > 0.1


def test_landmarks_anatomy(model):
    lm, v = model.landmarks, model.mean_shape
    p = v[lm]
    assert lm.shape == (68,) and len(set(lm.tolist())) == 68
    # nose tip: the most forward landmark and the model's nose_tip vertex
    assert int(torch.argmax(p[:, 2])) == 30 and int(lm[30]) == model.nose_tip
    # eye corners are mirror pairs through the symmetry map
    for a, b in ((36, 45), (39, 42)):
        assert int(model.symmetry[lm[a]]) == int(lm[b])
        assert torch.allclose(p[a] * torch.tensor([-1.0, 1, 1]), p[b], atol=1e-4)
    # every landmark's mirror partner is the iBUG mirror landmark
    assert torch.equal(model.symmetry[lm], lm[list(IBUG_MIRROR)])
    # mouth below the nose, brows above the eyes
    assert p[list(LANDMARK_GROUPS["outer_lips"]), 1].max() < p[list(LANDMARK_GROUPS["nostrils"]), 1].min()
    assert p[list(LANDMARK_GROUPS["right_brow"]), 1].min() > p[list(LANDMARK_GROUPS["right_eye"]), 1].max()
    # jaw contour runs from the subject's right (x < 0) to the left; chin at the bottom
    jaw_x = p[list(LANDMARK_GROUPS["jaw"]), 0]
    assert (jaw_x[1:] > jaw_x[:-1] - 1.0).all()  # near the ears the contour is vertical
    assert (jaw_x[[0, 4, 8, 12, 16]].diff() > 10).all() and jaw_x[8] == 0
    assert (p[1:9, 1] <= p[:8, 1] + 0.01).all() and p[8, 1] <= p[:17, 1].min() + 0.01
    # right eye is on the subject's right
    assert p[36, 0] < p[39, 0] < 0 < p[42, 0] < p[45, 0]
    # landmarks lie inside the face region
    assert model.face_mask[lm].all()


def test_face_mask_excludes_border(model):
    rows, cols = model.grid_shape
    grid = model.face_mask.reshape(rows, cols)
    assert not grid[:, 0].any() and not grid[:, -1].any() and not grid[-1].any()
    assert 0.3 < model.face_mask.float().mean() < 0.9


# ------------------------------------------------------------------ determinism
def test_identity_deterministic_and_batch_independent(world):
    a = world.identity(torch.tensor([11, 12, 13]))
    b = world.identity(torch.tensor([13, 99, 11]))
    assert torch.equal(a["shape"][0], b["shape"][2]) and torch.equal(a["albedo"][2], b["albedo"][0])
    assert not torch.equal(a["shape"][0], a["shape"][1])
    other = FaceWorld(dataclasses.replace(QUICK, seed=1)).identity(torch.tensor([11]))
    assert (other["shape"][0] - a["shape"][0]).abs().max() > 0.5


def test_hash_uniform_statistics():
    u = hash_uniform(0, torch.arange(2000), 3, 50)
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.003


def test_model_does_not_depend_on_the_callers_thread_count():
    # LAPACK's SVD splits work by thread count; near-degenerate PCA components rotate with it
    from facelab.config import torch_threads

    with torch_threads(2):
        two = build_synthfaces(QUICK, use_cache=False)
    with torch_threads(1):
        one = build_synthfaces(QUICK, use_cache=False)
    for f in ("shape_basis", "albedo_basis", "exp_basis", "shape_std"):
        assert torch.equal(getattr(one, f), getattr(two, f)), f


def test_same_seed_same_model_different_seed_differs(model):
    again = build_synthfaces(QUICK, use_cache=False)
    for f in ("mean_shape", "shape_basis", "shape_std", "albedo_basis", "exp_basis", "landmarks"):
        assert torch.equal(getattr(model, f), getattr(again, f)), f
    small = dataclasses.replace(QUICK, n_population=40, n_shape=10, n_albedo=10, n_expression_samples=500)
    a = build_synthfaces(small, use_cache=False)
    b = build_synthfaces(dataclasses.replace(small, seed=7), use_cache=False)
    assert (a.mean_shape - b.mean_shape).abs().max() > 0.01


# ------------------------------------------------------------------ identity values
def test_identity_shapes_and_ranges(world):
    out = world.identity(torch.tensor([0, 1, 2, 3]))
    assert out["shape"].shape == (4, 1353, 3) and out["albedo"].shape == (4, 1353, 3)
    assert out["albedo"].min() >= 0 and out["albedo"].max() <= 1
    x = out["shape"][..., 0]
    width = x.max(1).values - x.min(1).values
    assert ((width > 130) & (width < 180)).all()
    with pytest.raises(TypeError, match="ids"):
        world.identity(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="ids"):
        world.identity(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="ids"):
        world.identity(torch.tensor([-1]))


def test_eyes_read_as_eyes(world):
    """Sclera is brighter than the skin around it, the pupil is the darkest."""
    alb = world.identity(torch.arange(20))["albedo"].mean(-1)
    s, y = world.template_s, world.template_y
    d = torch.sqrt((s.abs() - 31) ** 2 + (y - 28) ** 2)
    pupil = alb[:, d <= d.min() + 1e-6].mean()
    sclera = alb[:, (d > 7) & (d < 10) & ((y - 28).abs() < 1.5)].mean()
    cheek = alb[:, ((s.abs() - 45).abs() < 5) & ((y + 10).abs() < 5)].mean()
    assert pupil < 0.5 * cheek and cheek < sclera


def test_true_face_beyond_linear_model_but_samples_exact(model, world):
    true = world.identity(torch.arange(20))["shape"]
    resid = model.shape(model.project_shape(true)) - true
    rms = resid.pow(2).sum(-1).mean().sqrt()
    assert 0.15 < rms < 1.5  # visible detail the 80-dim basis cannot hold
    sample = model.shape(model.sample(5, torch.Generator().manual_seed(0))["alpha_id"])
    again = model.shape(model.project_shape(sample))
    assert (again - sample).abs().max() < 1e-3


def test_expression_linear_and_sampler(world):
    g = torch.Generator().manual_seed(0)
    c = world.sample_expression(2000, g, neutral_prob=0.5)
    assert c.shape == (2000, world.n_blend) and c.min() >= 0
    near_neutral = (c.max(1).values < 0.15).float().mean()
    assert 0.4 < near_neutral < 0.6
    c1, c2 = c[:3], c[3:6]
    assert torch.allclose(world.expression(c1 + 2 * c2), world.expression(c1) + 2 * world.expression(c2), atol=1e-4)
    names = world.blendshape_names
    jaw = world.expression(torch.eye(world.n_blend)[[names.index("jaw_open")]])[0]
    chin = jaw[world.landmarks[8]]
    assert chin[1] < -5  # the chin drops
    smile = world.expression(torch.eye(world.n_blend)[[names.index("smile_L")]])[0]
    assert smile[world.landmarks[54], 1] > 2 and smile[world.landmarks[48]].abs().max() < 0.5
    with pytest.raises(ValueError, match="coeffs"):
        world.expression(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="neutral_prob"):
        world.sample_expression(2, neutral_prob=2.0)


def test_model_shape_rejects_wrong_shapes(model):
    with pytest.raises(ValueError, match="alpha_id"):
        model.shape(torch.zeros(2, 79))
    with pytest.raises(ValueError, match="alpha_exp"):
        model.shape(torch.zeros(2, 80), torch.zeros(3, 30))
    with pytest.raises(TypeError, match="alpha_id"):
        model.shape(torch.zeros(2, 80, dtype=torch.long))


def test_model_shape_gradcheck(model):
    m = model.truncate(n_shape=4, n_exp=3).to(dtype=torch.float64)
    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: m.shape(x, y)[:, :50], (a, e))


def test_model_on_device(model, device, dtype):
    m = model.to(device, dtype)
    out = m.shape(torch.zeros(1, 80, device=device, dtype=dtype))
    assert torch.allclose(out[0].cpu().double(), model.mean_shape.double(), atol=1e-4)


# ------------------------------------------------------------------ save / load / cache
def test_save_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "m.npz")
    back = load_npz(path)
    for f in ("mean_shape", "shape_basis", "exp_std", "mean_albedo", "faces", "landmarks", "symmetry", "face_mask"):
        assert torch.equal(getattr(back, f), getattr(model, f)), f
    assert back.grid_shape == model.grid_shape and back.nose_tip == model.nose_tip and back.meta == json.loads(json.dumps(model.meta))


def test_corrupt_and_wrong_version_files_raise(model, tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt.npz"):
        load_npz(bad)
    path = model.save(tmp_path / "old.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes())
    header["version"] = 99
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="old.npz.*version"):
        load_npz(path)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(path)


def test_cache_written_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path))
    cfg = dataclasses.replace(QUICK, n_population=20, n_shape=8, n_albedo=8, n_expression_samples=500)
    first = build_synthfaces(cfg)
    files = list(tmp_path.glob("synthfaces-quick-*.npz"))
    assert len(files) == 1 and cfg.key() in files[0].name
    # a cached file is what gets loaded: tamper with it and see the change
    tampered = dataclasses.replace(first, name="from-cache")
    tampered.save(files[0])
    assert build_synthfaces(cfg).name == "from-cache"
    files[0].write_bytes(b"garbage")  # a damaged cache entry is rebuilt
    assert build_synthfaces(cfg).name == first.name


def test_mesh_hierarchy_from_model_and_config(model):
    h = mesh_hierarchy(model)
    assert [lvl.n_verts for lvl in h.levels] == [1353, 357, 99, 30]
    assert mesh_hierarchy(SynthFacesConfig()).n_levels == 4
    coarse = h.downsample(model.mean_shape[None], 0)
    assert torch.equal(coarse[0], model.mean_shape.reshape(33, 41, 3)[::2, ::2].reshape(-1, 3))
    with pytest.raises(TypeError, match="model_or_config"):
        mesh_hierarchy("quick")
