"""Model loaders (BFM2009, BFM2017, FLAME, SFM/eos) on tiny fixtures written in the real layouts.

The fixture is a 3 x 5 grid on a sphere cap facing +z (V = 15), symmetric in x, with
a known mirror map and nose tip. Each file is written here with scipy / h5py /
pickle / struct, independently of facelab's own writers.
"""

import pickle
import struct
import sys
import types

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from hypothesis import given, settings, strategies as st

from facelab.io import load_bfm2009, load_bfm2017, load_flame, load_sfm, read_flame_pickle, save_sfm
from facelab.io._build import fix_winding, orthonormal_pca
from facelab.morphable.model import MorphableModel

ROWS, COLS, RADIUS = 3, 5, 60.0
K = 4
STD = np.array([4.0, 3.0, 2.0, 1.0])  # mm


def _grid():
    """(V, 3) mm sphere-cap grid, CCW faces from +z, mirror map and nose tip, by construction."""
    xs, ys = np.linspace(-20, 20, COLS), np.linspace(-10, 10, ROWS)
    X, Y = np.meshgrid(xs, ys)  # vertex id = r * COLS + c
    Z = np.sqrt(RADIUS**2 - X**2 - Y**2)
    verts = np.stack([X, Y, Z], -1).reshape(-1, 3)
    faces = []
    for r in range(ROWS - 1):
        for c in range(COLS - 1):
            i00, i01, i10, i11 = r * COLS + c, r * COLS + c + 1, (r + 1) * COLS + c, (r + 1) * COLS + c + 1
            faces += [[i00, i01, i11], [i00, i11, i10]]
    mirror = np.array([r * COLS + (COLS - 1 - c) for r in range(ROWS) for c in range(COLS)])
    nose = (ROWS // 2) * COLS + COLS // 2
    return verts, np.array(faces), mirror, nose


VERTS, FACES, MIRROR, NOSE = _grid()
V = len(VERTS)


def _orthonormal(seed: int, k: int = K) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3 * V, k)))
    return q


def _check_common(m: MorphableModel, faces_expected=FACES):
    assert m.n_verts == V
    assert np.array_equal(m.faces.numpy(), faces_expected)
    assert np.array_equal(m.symmetry.numpy(), MIRROR)
    assert m.nose_tip == NOSE
    assert m.face_mask.all() and m.landmarks.numel() == 0
    for basis in (m.shape_basis, m.exp_basis, m.albedo_basis):
        gram = basis.double().T @ basis.double()
        assert torch.allclose(gram, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-5)


def _cov(basis: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (basis * std**2) @ basis.T


# ------------------------------------------------------------------ BFM2009
def _bfm2009_dict(flip: bool = False):
    q_shape, q_tex = _orthonormal(0), _orthonormal(1)
    tex_mu = np.random.default_rng(2).uniform(0, 255, 3 * V)
    faces = FACES[:, [0, 2, 1]] if flip else FACES
    return {
        "shapeMU": (VERTS.reshape(-1, 1) * 1000.0).astype(np.float32),  # µm
        "shapePC": q_shape.astype(np.float32),
        "shapeEV": (STD * 1000.0).reshape(-1, 1),
        "texMU": tex_mu.reshape(-1, 1).astype(np.float32),
        "texPC": q_tex.astype(np.float32),
        "texEV": np.array([[40.0], [30.0], [20.0], [10.0]]),
        "tl": (faces + 1).astype(np.float64),  # MATLAB: 1-based doubles
    }, q_shape, q_tex, tex_mu


@pytest.mark.parametrize("flip", [False, True])
def test_bfm2009_values(tmp_path, flip):
    d, q_shape, q_tex, tex_mu = _bfm2009_dict(flip)
    p = tmp_path / "01_MorphableModel.mat"
    scipy.io.savemat(p, d)
    m = load_bfm2009(p)
    _check_common(m)
    assert m.meta["faces_flipped"] is flip and m.meta["source"] == str(p)
    assert np.allclose(m.mean_shape.numpy(), VERTS, atol=1e-4)  # µm -> mm
    assert np.allclose(m.shape_std.numpy(), STD)
    assert np.allclose(m.shape_basis.numpy(), q_shape, atol=1e-6)
    assert np.allclose(m.mean_albedo.numpy(), tex_mu.reshape(V, 3) / 255.0, atol=1e-5)
    assert np.allclose(m.albedo_std.numpy(), [40 / 255, 30 / 255, 20 / 255, 10 / 255])
    assert m.n_exp == 0 and m.exp_std.shape == (0,)
    # a sample is mean + basis @ alpha, the BFM formula in µm / 1000
    alpha = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    expected = (d["shapeMU"][:, 0] + d["shapePC"] @ (alpha[0].numpy() * 1000.0)) / 1000.0
    assert np.allclose(m.shape(alpha)[0].numpy().reshape(-1), expected, atol=1e-3)


def test_bfm2009_landmarks_and_mask(tmp_path):
    d, *_ = _bfm2009_dict()
    p = tmp_path / "m.mat"
    scipy.io.savemat(p, d)
    lm = np.arange(68) % V
    mask = np.arange(V) % 2 == 0
    m = load_bfm2009(p, landmarks=lm, face_mask=mask)
    assert m.landmarks.tolist() == lm.tolist() and m.face_mask.tolist() == mask.tolist()
    with pytest.raises(ValueError, match="landmarks"):
        load_bfm2009(p, landmarks=np.arange(5))
    with pytest.raises(ValueError, match="landmarks"):
        load_bfm2009(p, landmarks=np.arange(68) + V)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("tl"), r"missing required key\(s\) \['tl'\]"),
        (lambda d: d.pop("texEV"), "texture model incomplete"),
        (lambda d: d.update(shapePC=d["shapePC"][:-3]), "shapePC"),
        (lambda d: d.update(shapeEV=d["shapeEV"][:2]), "shapePC"),
        (lambda d: d.update(tl=d["tl"] + V), "tl"),
        (lambda d: d.update(shapeMU=d["shapeMU"][:-1]), "shapeMU"),
        (lambda d: d.update(texMU=d["texMU"][:-3]), "texMU"),
    ],
)
def test_bfm2009_bad_content(tmp_path, change, match):
    d, *_ = _bfm2009_dict()
    change(d)
    p = tmp_path / "bad.mat"
    scipy.io.savemat(p, d)
    with pytest.raises(ValueError, match=match) as err:
        load_bfm2009(p)
    assert "bad.mat" in str(err.value)


def test_bfm2009_missing_and_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.mat"):
        load_bfm2009(tmp_path / "none.mat")
    d, *_ = _bfm2009_dict()
    p = tmp_path / "full.mat"
    scipy.io.savemat(p, d)
    data = p.read_bytes()
    for frac in (0.05, 0.3, 0.7, 0.99):
        t = tmp_path / "trunc.mat"
        t.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match="trunc.mat"):
            load_bfm2009(t)


@settings(max_examples=40, deadline=None)
@given(frac=st.floats(0.0, 0.999), compress=st.booleans())
def test_bfm2009_truncated_fuzz(tmp_path_factory, frac, compress):
    d = tmp_path_factory.mktemp("bfm")
    scipy.io.savemat(d / "full.mat", _bfm2009_dict()[0], do_compression=compress)
    data = (d / "full.mat").read_bytes()
    (d / "t.mat").write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ValueError, match="t.mat"):
        load_bfm2009(d / "t.mat")


# ------------------------------------------------------------------ BFM2017
def _write_bfm2017(path, basis_mode="orthonormal", with_exp=True, drop=None, bad=None):
    q_shape, q_exp, q_col = _orthonormal(3), _orthonormal(4, 2), _orthonormal(5)
    var = STD**2
    basis = {"orthonormal": q_shape, "prescaled": q_shape * STD}.get(basis_mode)
    if basis is None:  # a generic, non-orthogonal basis
        basis = np.random.default_rng(6).standard_normal((3 * V, K))
    col_mean = np.random.default_rng(7).uniform(0, 1, 3 * V)
    exp_mean = np.random.default_rng(8).normal(0, 0.5, 3 * V)
    data = {
        "shape/model/mean": VERTS.reshape(-1),
        "shape/model/pcaBasis": basis,
        "shape/model/pcaVariance": var,
        "shape/representer/points": VERTS.T,
        "shape/representer/cells": FACES.T,
        "color/model/mean": col_mean,
        "color/model/pcaBasis": q_col,
        "color/model/pcaVariance": np.array([0.04, 0.01, 0.0025, 0.0001]),
    }
    if with_exp:
        data.update({"expression/model/mean": exp_mean, "expression/model/pcaBasis": q_exp,
                     "expression/model/pcaVariance": np.array([9.0, 0.25])})
    if drop:
        data.pop(drop)
    if bad:
        data[bad[0]] = bad[1]
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f[k] = np.asarray(v, dtype=np.int32 if k.endswith("cells") else np.float32)
    return basis, q_exp, q_col, col_mean, exp_mean


def test_bfm2017_values(tmp_path):
    p = tmp_path / "model2017.h5"
    basis, q_exp, q_col, col_mean, exp_mean = _write_bfm2017(p)
    m = load_bfm2017(p)
    _check_common(m)
    assert m.meta["basis_transform"] == {"shape": "orthonormal", "expression": "orthonormal", "albedo": "orthonormal"}
    assert np.allclose(m.shape_std.numpy(), STD)  # sqrt of the variances 16, 9, 4, 1
    assert np.allclose(m.exp_std.numpy(), [3.0, 0.5])
    assert np.allclose(m.albedo_std.numpy(), [0.2, 0.1, 0.05, 0.01])
    assert np.allclose(m.shape_basis.numpy(), basis, atol=1e-6)
    assert np.allclose(m.mean_shape.numpy(), VERTS + exp_mean.reshape(V, 3), atol=1e-4)
    assert np.allclose(m.mean_albedo.numpy(), col_mean.reshape(V, 3), atol=1e-6)


@pytest.mark.parametrize("mode,expected", [("prescaled", "prescaled"), ("generic", "svd")])
def test_bfm2017_reorthonormalises_preserving_covariance(tmp_path, mode, expected):
    p = tmp_path / "m.h5"
    basis, *_ = _write_bfm2017(p, basis_mode=mode, with_exp=False)
    m = load_bfm2017(p)
    assert m.meta["basis_transform"]["shape"] == expected
    assert m.n_exp == 0
    U, s = m.shape_basis.double().numpy(), m.shape_std.double().numpy()
    assert np.allclose(U.T @ U, np.eye(K), atol=1e-5)
    assert np.all(np.diff(s) <= 0)
    # the Gaussian described by the file: x = mean + B diag(std) a, with the stated convention
    source_cov = _cov(basis / STD, STD) if mode == "prescaled" else _cov(basis, STD)
    assert np.allclose(_cov(U, s), source_cov, rtol=1e-4, atol=1e-4 * np.abs(source_cov).max())


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"drop": "shape/model/pcaVariance"}, "missing dataset 'shape/model/pcaVariance'"),
        ({"drop": "shape/representer/cells"}, "missing dataset 'shape/representer/cells'"),
        ({"bad": ("shape/model/pcaBasis", np.zeros((3 * V - 3, K)))}, "shape/model/pcaBasis"),
        ({"bad": ("shape/model/pcaVariance", -np.ones(K))}, "negative variances"),
        ({"bad": ("shape/representer/cells", FACES)}, "cells"),
        ({"bad": ("color/model/mean", np.zeros(5))}, "color/model/mean"),
    ],
)
def test_bfm2017_bad_content(tmp_path, kw, match):
    p = tmp_path / "bad.h5"
    _write_bfm2017(p, **kw)
    with pytest.raises(ValueError, match=match) as err:
        load_bfm2017(p)
    assert "bad.h5" in str(err.value)


def test_bfm2017_missing_and_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.h5"):
        load_bfm2017(tmp_path / "none.h5")
    p = tmp_path / "full.h5"
    _write_bfm2017(p)
    data = p.read_bytes()
    for frac in (0.1, 0.5, 0.9):
        t = tmp_path / "trunc.h5"
        t.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match="trunc.h5"):
            load_bfm2017(t)


# -------------------------------------------------------------------- FLAME
N_SHAPE, N_EXP = 4, 2


def _flame_dict(seed: int = 9):
    rng = np.random.default_rng(seed)
    shapedirs = rng.normal(0, 1e-3, (V, 3, N_SHAPE + N_EXP + 1))  # metres per unit beta
    return {
        "v_template": VERTS / 1000.0,  # metres
        "f": FACES.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": rng.normal(0, 1e-4, (V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(rng.uniform(0, 1, (5, V)) * (rng.uniform(0, 1, (5, V)) > 0.7)),
        "weights": rng.uniform(0, 1, (V, 5)),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
    }


def _check_flame(m: MorphableModel, d: dict):
    _check_common(m)
    assert np.allclose(m.mean_shape.numpy(), VERTS, atol=1e-4)  # m -> mm
    flat = d["shapedirs"].reshape(3 * V, -1) * 1000.0  # mm per unit beta
    for basis, std, block in ((m.shape_basis, m.shape_std, flat[:, :N_SHAPE]),
                              (m.exp_basis, m.exp_std, flat[:, N_SHAPE:N_SHAPE + N_EXP])):
        U, s = basis.double().numpy(), std.double().numpy()
        assert np.allclose(_cov(U, s), block @ block.T, atol=1e-4)  # covariance of beta ~ N(0, I) kept
        assert np.allclose(s, np.linalg.svd(block, compute_uv=False), rtol=1e-5)
    assert m.n_albedo == 0 and torch.all(m.mean_albedo == 0.5)
    assert m.meta["basis_transform"]["shape"] == "svd"


def test_flame_plain_pickle(tmp_path):
    d = _flame_dict()
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(d, protocol=2))
    m = load_flame(p, n_shape=N_SHAPE, n_exp=N_EXP)
    _check_flame(m, d)
    raw = read_flame_pickle(p)
    assert scipy.sparse.issparse(raw["J_regressor"])
    assert np.array_equal(raw["J_regressor"].toarray(), d["J_regressor"].toarray())


def test_flame_chumpy_without_chumpy(tmp_path):
    """Pickle fake ``chumpy.ch.Ch`` objects, then load with no chumpy module available."""
    d = _flame_dict()

    class Ch:  # mimics a chumpy leaf: the value lives in __dict__["x"]
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    chumpy_ch.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        wrapped = {k: (Ch(d[k]) if k in ("v_template", "shapedirs", "posedirs", "weights") else v) for k, v in d.items()}
        data = pickle.dumps(wrapped, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert b"chumpy.ch" in data
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(data)
    m = load_flame(p, n_shape=N_SHAPE, n_exp=N_EXP)
    _check_flame(m, d)
    assert "chumpy" not in sys.modules or saved["chumpy"] is not None
    assert np.array_equal(read_flame_pickle(p)["posedirs"], d["posedirs"])


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_flame_refuses_foreign_classes(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match="evil.pkl.*refusing to load class"):
        read_flame_pickle(p)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("shapedirs"), r"missing required key\(s\) \['shapedirs'\]"),
        (lambda d: d.update(shapedirs=d["shapedirs"][:-1]), "shapedirs"),
        (lambda d: d.update(shapedirs=d["shapedirs"][..., :3]), "fewer than n_shape"),
        (lambda d: d.update(v_template=d["v_template"][:, :2]), "v_template"),
        (lambda d: d.update(f=d["f"] + V), "'f'"),
    ],
)
def test_flame_bad_content(tmp_path, change, match):
    d = _flame_dict()
    change(d)
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError, match=match) as err:
        load_flame(p, n_shape=N_SHAPE, n_exp=N_EXP)
    assert "bad.pkl" in str(err.value)


def test_flame_bad_args_and_files(tmp_path):
    p = tmp_path / "m.pkl"
    p.write_bytes(pickle.dumps(_flame_dict(), protocol=2))
    with pytest.raises(ValueError, match="n_shape"):
        load_flame(p, n_shape=-1)
    with pytest.raises(FileNotFoundError, match="none.pkl"):
        load_flame(tmp_path / "none.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.pkl.*dict"):
        load_flame(tmp_path / "list.pkl")


@settings(max_examples=30, deadline=None)
@given(frac=st.floats(0.0, 0.999))
def test_flame_truncated(tmp_path_factory, frac):
    d = tmp_path_factory.mktemp("flame")
    data = pickle.dumps(_flame_dict(), protocol=2)
    (d / "t.pkl").write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ValueError, match="t.pkl"):
        load_flame(d / "t.pkl", n_shape=N_SHAPE, n_exp=N_EXP)


# ---------------------------------------------------------------- SFM / eos
def _mat(a) -> bytes:
    """eos cereal Eigen matrix: int32 rows, int32 cols, column-major float32."""
    a = np.asarray(a, dtype=np.float32)
    a = a[:, None] if a.ndim == 1 else a
    return struct.pack("<ii", *a.shape) + np.asfortranarray(a).tobytes(order="F")


def _pca(mean, basis, variances, tris) -> bytes:
    return _mat(mean) + _mat(basis) + _mat(variances) + struct.pack("<Q", len(tris)) + tris.astype("<i4").tobytes()


def _sfm_bytes(version=1, expression=None, landmarks=None, texcoords=2, with_color=True):
    q_shape, q_col = _orthonormal(10), _orthonormal(11)
    out = struct.pack("<I", version) + _pca(VERTS.reshape(-1), q_shape, STD**2, FACES)
    if with_color:
        out += _pca(np.full(3 * V, 0.25), q_col, np.array([0.04, 0.01, 0.0025, 0.0001]), FACES)
    else:
        out += _pca(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 3)))
    if version >= 2:
        if expression is None:
            out += struct.pack("<B", 1)
        elif expression == "blendshapes":
            shapes = np.random.default_rng(12).normal(0, 2.0, (3, 3 * V))
            out += struct.pack("<BiQ", 0, 1, len(shapes))
            for k, s in enumerate(shapes):
                name = f"bs{k}".encode()
                out += struct.pack("<Q", len(name)) + name + _mat(s)
        else:
            out += struct.pack("<Bi", 0, 0) + _pca(np.zeros(3 * V), _orthonormal(13, 2), np.array([4.0, 1.0]), FACES)
    if version >= 3:
        if landmarks is None:
            out += struct.pack("<B", 1)
        else:
            out += struct.pack("<BQ", 0, len(landmarks))
            for name, v in landmarks.items():
                out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<i", v)
    out += struct.pack("<Q", texcoords) + np.zeros((texcoords, 2)).tobytes()
    if version == 4:
        out += struct.pack("<Q", 1) + np.array([0, 1, 2], "<i4").tobytes()
    return out, q_shape, q_col


def test_sfm_v1_values(tmp_path):
    data, q_shape, q_col = _sfm_bytes(version=1)
    p = tmp_path / "sfm_shape_3448.bin"
    p.write_bytes(data)
    m = load_sfm(p)
    _check_common(m)
    assert np.allclose(m.mean_shape.numpy(), VERTS, atol=1e-4)
    assert np.allclose(m.shape_std.numpy(), STD)  # sqrt(eigenvalues 16, 9, 4, 1)
    assert np.allclose(m.shape_basis.numpy(), q_shape, atol=1e-6)
    assert np.allclose(m.albedo_std.numpy(), [0.2, 0.1, 0.05, 0.01])
    assert torch.allclose(m.mean_albedo, torch.full((V, 3), 0.25))
    assert m.n_exp == 0 and m.meta["format"] == "eos-cereal-v1"


def test_sfm_shape_only(tmp_path):
    p = tmp_path / "s.bin"
    p.write_bytes(_sfm_bytes(version=1, with_color=False)[0])
    m = load_sfm(p)
    assert m.n_albedo == 0 and torch.all(m.mean_albedo == 0.5)


def test_sfm_v2_blendshapes_and_v3_landmarks(tmp_path):
    p = tmp_path / "bs.bin"
    p.write_bytes(_sfm_bytes(version=2, expression="blendshapes")[0])
    m = load_sfm(p)
    shapes = np.random.default_rng(12).normal(0, 2.0, (3, 3 * V)).astype(np.float32).astype(np.float64).T
    assert np.allclose(_cov(m.exp_basis.double().numpy(), m.exp_std.double().numpy()), shapes @ shapes.T, atol=1e-3)
    lm = {str(i): (i * 7) % V for i in range(1, 69)}
    for version in (3, 4):
        p = tmp_path / f"v{version}.bin"
        p.write_bytes(_sfm_bytes(version=version, expression="pca", landmarks=lm)[0])
        m = load_sfm(p)
        assert m.landmarks.tolist() == [lm[str(i)] for i in range(1, 69)]
        assert np.allclose(m.exp_std.numpy(), [2.0, 1.0])


def test_save_sfm_round_trip(tmp_path):
    q = _orthonormal(14)
    p = save_sfm(tmp_path / "w.bin", torch.tensor(VERTS), torch.tensor(q), torch.tensor(STD), torch.tensor(FACES),
                 exp_basis=_orthonormal(15, 2), exp_std=np.array([2.0, 1.0]), version=2)
    m = load_sfm(p)
    assert np.allclose(m.shape_basis.numpy(), q, atol=1e-6) and np.allclose(m.shape_std.numpy(), STD)
    assert np.allclose(m.exp_std.numpy(), [2.0, 1.0]) and m.n_albedo == 0
    with pytest.raises(ValueError, match="version"):
        save_sfm(tmp_path / "x.bin", VERTS, q, STD, FACES, version=7)


@pytest.mark.parametrize(
    "data,match",
    [
        (struct.pack("<I", 9) + b"\0" * 64, "unsupported eos MorphableModel version 9"),
        (_sfm_bytes(version=1)[0] + b"\0\0", "trailing bytes"),
        (struct.pack("<I", 1) + _mat(np.zeros(3 * V)) + _mat(np.zeros((3 * V - 3, K))), "truncated"),
    ],
)
def test_sfm_bad_content(tmp_path, data, match):
    p = tmp_path / "bad.bin"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=match) as err:
        load_sfm(p)
    assert "bad.bin" in str(err.value)


def test_sfm_wrong_shape_basis(tmp_path):
    out = struct.pack("<I", 1) + _pca(VERTS.reshape(-1), _orthonormal(16)[:-3], STD**2, FACES)
    out += _pca(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 3))) + struct.pack("<Q", 0)
    p = tmp_path / "bad.bin"
    p.write_bytes(out)
    with pytest.raises(ValueError, match="bad.bin.*shape_model.orthonormal_pca_basis"):
        load_sfm(p)
    with pytest.raises(FileNotFoundError, match="none.bin"):
        load_sfm(tmp_path / "none.bin")


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10_000), version=st.sampled_from([1, 2, 3, 4]))
def test_sfm_truncated(tmp_path_factory, cut, version):
    data = _sfm_bytes(version=version, expression="pca", landmarks={"1": 0})[0]
    d = tmp_path_factory.mktemp("sfm")
    (d / "t.bin").write_bytes(data[: cut % len(data)])
    with pytest.raises(ValueError, match="t.bin"):
        load_sfm(d / "t.bin")


# ---------------------------------------------------------- shared helpers
def test_fix_winding_closed_mesh():
    """A closed tetrahedron wound inward is flipped; outward stays."""
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    outward = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert not fix_winding(verts, outward)[1]
    fixed, flipped = fix_winding(verts, outward[:, [0, 2, 1]])
    assert flipped and np.array_equal(fixed, outward)


def test_orthonormal_pca_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="f.bin: 'k' basis has shape"):
        orthonormal_pca(np.zeros((6, 2)), np.ones(3), tmp_path / "f.bin", "k")
    with pytest.raises(ValueError, match="NaN"):
        orthonormal_pca(np.full((6, 2), np.nan), np.ones(2), tmp_path / "f.bin", "k")


def test_loaded_model_moves_to_device_dtype(tmp_path, device, dtype):
    p = tmp_path / "m.h5"
    basis, *_ = _write_bfm2017(p, with_exp=False)
    m = load_bfm2017(p).to(device, dtype)
    alpha = torch.tensor([[1.0, 0.0, -1.0, 2.0]], device=device, dtype=dtype)
    verts = m.shape(alpha)
    assert verts.device.type == device.type and verts.dtype == dtype
    expected = VERTS.reshape(-1) + basis @ alpha[0].double().cpu().numpy()
    assert np.allclose(verts[0].double().cpu().numpy().reshape(-1), expected, atol=1e-3)


# ------------------------------------------------------------------ load_morphable
def test_load_morphable_picks_the_loader_by_suffix(tmp_path):
    from facelab.io import load_morphable

    lm = np.arange(68) % V
    d, *_ = _bfm2009_dict()
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", d)
    _write_bfm2017(tmp_path / "model2017.h5")
    for path, direct in ((tmp_path / "01_MorphableModel.mat", load_bfm2009), (tmp_path / "model2017.h5", load_bfm2017)):
        got, want = load_morphable(path, landmarks=lm), direct(path, landmarks=lm)
        assert torch.equal(got.mean_shape, want.mean_shape) and torch.equal(got.shape_basis, want.shape_basis)
        assert got.landmarks.tolist() == lm.tolist()
    saved = load_bfm2009(tmp_path / "01_MorphableModel.mat", landmarks=lm).save(tmp_path / "bfm.npz")
    assert load_morphable(saved).landmarks.tolist() == lm.tolist()  # a .npz keeps its own landmarks ...
    assert load_morphable(saved, landmarks=lm[::-1].copy()).landmarks.tolist() == lm[::-1].tolist()  # ... or takes new ones
    with pytest.raises(ValueError, match=r"model\.obj: unknown morphable-model suffix '\.obj'"):
        (tmp_path / "model.obj").write_text("v 0 0 0\n")
        load_morphable(tmp_path / "model.obj")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_morphable(tmp_path / "missing.h5")
