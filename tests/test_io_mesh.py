"""Mesh I/O: exact float32 round trips, hand-written files in each format, bad files."""

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from facelab.io.mesh import Mesh, read_mesh, write_mesh


def _mesh(seed: int = 0, n_verts: int = 7, n_faces: int = 5):
    g = torch.Generator().manual_seed(seed)
    verts = torch.randn(n_verts, 3, generator=g) * 37.123456789  # non-round float32 values
    faces = torch.randint(0, n_verts, (n_faces, 3), generator=g)
    colors = torch.rand(n_verts, 3, generator=g)
    return verts, faces, colors


@pytest.mark.parametrize("suffix,binary", [(".obj", True), (".ply", True), (".ply", False)])
@pytest.mark.parametrize("with_colors", [False, True])
def test_round_trip_exact(tmp_path, suffix, binary, with_colors):
    verts, faces, colors = _mesh()
    path = write_mesh(tmp_path / f"m{suffix}", verts, faces, colors if with_colors else None, binary=binary)
    m = read_mesh(path)
    assert isinstance(m, Mesh)
    assert m.verts.dtype == torch.float32 and m.faces.dtype == torch.int64
    assert torch.equal(m.verts, verts) and torch.equal(m.faces, faces)
    if with_colors:
        assert torch.equal(m.colors, colors)
    else:
        assert m.colors is None


def test_numpy_inputs_accepted(tmp_path):
    verts, faces, _ = _mesh(1)
    write_mesh(tmp_path / "m.ply", verts.numpy().astype(np.float64), faces.numpy().astype(np.int32))
    m = read_mesh(tmp_path / "m.ply")
    assert torch.equal(m.verts, verts) and torch.equal(m.faces, faces)


def test_obj_hand_written_quads_slashes_negative(tmp_path):
    p = tmp_path / "q.obj"
    p.write_text(
        "# a unit square as one quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
        "f 1/1/1 2//1 3 -1\n"
    )
    m = read_mesh(p)
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3]]  # fan triangulation
    assert m.verts[2].tolist() == [1.0, 1.0, 0.0]


def test_ply_binary_hand_written_uchar_colours(tmp_path):
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode()
    body = b"".join(struct.pack("<fffBBB", *v) for v in [(0, 0, 0, 255, 0, 0), (1, 0, 0, 0, 255, 0), (0, 1, 0, 0, 0, 51)])
    body += struct.pack("<Biii", 3, 0, 1, 2)
    p = tmp_path / "c.ply"
    p.write_bytes(header + body)
    m = read_mesh(p)
    assert m.faces.tolist() == [[0, 1, 2]]
    assert torch.allclose(m.colors, torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0.2]]))


def test_ply_ascii_with_extra_element_and_quad(tmp_path):
    p = tmp_path / "a.ply"
    p.write_text(
        "ply\nformat ascii 1.0\ncomment x\nelement vertex 4\nproperty double x\nproperty double y\n"
        "property double z\nproperty float confidence\nelement face 1\nproperty list uchar uint vertex_index\n"
        "element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n"
        "0 0 0 1\n1 0 0 1\n1 1 0 1\n0 1 0 1\n4 0 1 2 3\n0 1\n"
    )
    m = read_mesh(p)
    assert m.verts.shape == (4, 3) and m.faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_ply_matches_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts, faces, _ = _mesh(2)
    write_mesh(tmp_path / "t.ply", verts, faces)
    tm = trimesh.load(tmp_path / "t.ply", process=False)
    assert np.array_equal(np.asarray(tm.vertices, dtype=np.float32), verts.numpy())
    assert np.array_equal(np.asarray(tm.faces), faces.numpy())


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("x.stl", b"solid", "unsupported mesh format"),
        ("bad.obj", b"v 0 0\n", "vertex line"),
        ("bad2.obj", b"v 0 0 0\nf 1 2 3\n", "face indices"),
        ("empty.obj", b"# nothing\n", "no vertices"),
        ("bad.ply", b"plx\n", "not a PLY"),
        ("fmt.ply", b"ply\nformat weird 1.0\nend_header\n", "unsupported PLY format"),
    ],
)
def test_bad_files_raise_naming_file(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        read_mesh(p)
    assert name in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        read_mesh(tmp_path / "nope.ply")


def test_write_bad_inputs(tmp_path):
    verts, faces, colors = _mesh()
    with pytest.raises(ValueError, match="verts"):
        write_mesh(tmp_path / "m.ply", verts[:, :2], faces)
    with pytest.raises(ValueError, match="faces"):
        write_mesh(tmp_path / "m.ply", verts, faces + 100)
    with pytest.raises(ValueError, match="colors"):
        write_mesh(tmp_path / "m.ply", verts, faces, colors[:2])
    with pytest.raises(ValueError, match="unsupported"):
        write_mesh(tmp_path / "m.off", verts, faces)


@pytest.mark.parametrize("binary", [True, False])
@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.05, 0.95))
def test_truncated_ply_raises(tmp_path_factory, binary, frac):
    d = tmp_path_factory.mktemp("trunc")
    verts, faces, colors = _mesh(3, n_verts=20, n_faces=30)
    data = write_mesh(d / "m.ply", verts, faces, colors, binary=binary).read_bytes()
    header_end = data.index(b"end_header") + len(b"end_header\n")
    cut = header_end + int(frac * (len(data) - header_end) * 0.9)
    (d / "t.ply").write_bytes(data[:cut])
    with pytest.raises(ValueError, match="t.ply"):
        read_mesh(d / "t.ply")
