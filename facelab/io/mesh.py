"""Triangle-mesh files: Wavefront ``.obj`` and Stanford ``.ply``.

Supported layouts (book appendix "using the real datasets and models"):

* ``.obj``: ``v x y z`` or ``v x y z r g b`` (per-vertex colour, floats in [0, 1]);
  ``f`` lines with ``i``, ``i/t``, ``i//n`` or ``i/t/n`` entries, 1-based or negative
  (relative) indices; polygons with more than three corners are fan-triangulated.
  Other lines (``vt``, ``vn``, ``g``, ``usemtl``, comments) are ignored.
* ``.ply``: ``ascii``, ``binary_little_endian`` and ``binary_big_endian``; a
  ``vertex`` element with ``x y z`` and optional ``red green blue`` (uchar colours are
  divided by 255, float colours are kept) and a ``face`` element with a list
  property ``vertex_indices`` (or ``vertex_index``); other properties and elements
  are read and dropped.

Writing uses ``%.9g`` for ASCII numbers and float32 for binary ones, so a float32
round trip is exact. Colours are written as floats (PLY ``float red``), not
quantised to bytes.

Book chapter: ``book/12_real_data.ipynb``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from facelab.io._util import existing_file, to_numpy

MESH_SUFFIXES = (".obj", ".ply")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # beyond this a value turns to inf in float32
FLOAT_FORMAT = "%.9g"  # 9 significant digits reproduce any float32 exactly
PLY_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
UCHAR_COLOUR_MAX = 255.0

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class Mesh(NamedTuple):
    """A triangle mesh.

    Attributes:
        verts: ``(V, 3)`` float32 (the file's units; facelab uses mm).
        faces: ``(F, 3)`` int64, 0-based vertex indices.
        colors: ``(V, 3)`` float32 RGB in [0, 1], or None when the file has none.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor | None = None


# ---------------------------------------------------------------- public API
def read_mesh(path) -> Mesh:
    """Read an ``.obj`` or ``.ply`` triangle mesh.

    Args:
        path: file path; the suffix picks the format.

    Returns:
        :class:`Mesh` with ``verts (V, 3) float32``, ``faces (F, 3) int64`` (0-based)
        and ``colors (V, 3) float32`` or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, or a malformed/truncated file (the message names
            the file and the problem).

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "tri.ply")
    >>> _ = write_mesh(p, torch.eye(3), torch.tensor([[0, 1, 2]]))
    >>> m = read_mesh(p)
    >>> m.verts.shape, m.faces.tolist(), m.colors
    (torch.Size([3, 3]), [[0, 1, 2]], None)
    """
    path = existing_file(path, "mesh file")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    verts, faces, colors = _read_obj(path) if suffix == ".obj" else _read_ply(path)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"{path}: vertices must be (V, 3), got {verts.shape}")
    if not np.isfinite(verts).all():
        raise ValueError(f"{path}: vertex coordinates contain NaN or Inf")
    if np.abs(verts).max(initial=0.0) > FLOAT32_MAX:
        raise ValueError(f"{path}: vertex coordinates exceed the float32 range (|x| > {FLOAT32_MAX:.3g})")
    if colors is not None and not (np.isfinite(colors).all() and np.abs(colors).max(initial=0.0) <= FLOAT32_MAX):
        raise ValueError(f"{path}: vertex colours contain NaN, Inf or values beyond the float32 range")
    if faces.size and (faces.min() < 0 or faces.max() >= verts.shape[0]):
        raise ValueError(
            f"{path}: face indices must lie in [0, {verts.shape[0]}), got [{faces.min()}, {faces.max()}]"
        )
    return Mesh(
        torch.from_numpy(np.ascontiguousarray(verts, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)),
        None if colors is None else torch.from_numpy(np.ascontiguousarray(colors, dtype=np.float32)),
    )


def write_mesh(path, verts, faces, colors=None, *, binary: bool = True) -> Path:
    """Write a triangle mesh as ``.obj`` or ``.ply`` (chosen by the suffix).

    Args:
        path: destination; parent folders are created.
        verts: ``(V, 3)`` float (tensor or array), any unit.
        faces: ``(F, 3)`` int, 0-based.
        colors: optional ``(V, 3)`` float RGB in [0, 1].
        binary: for ``.ply``, binary little-endian (default) or ASCII. Ignored for ``.obj``.

    Returns:
        The path written.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "tri.obj")
    >>> _ = write_mesh(p, torch.eye(3), torch.tensor([[0, 1, 2]]), colors=torch.ones(3, 3))
    >>> open(p).read().splitlines()[0]
    'v 1 0 0 1 1 1'
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a str or Path, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    v = to_numpy(verts, "verts")
    f = to_numpy(faces, "faces")
    if v.ndim != 2 or v.shape[1] != 3 or v.dtype.kind not in "fiu":
        raise ValueError(f"verts: expected a (V, 3) numeric array, got shape {v.shape} dtype {v.dtype}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and f.dtype.kind not in "iu"):
        raise ValueError(f"faces: expected a (F, 3) integer array, got shape {f.shape} dtype {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"faces: vertex indices must lie in [0, {v.shape[0]}), got [{f.min()}, {f.max()}]")
    v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise ValueError("verts: contains NaN or Inf")
    c = None
    if colors is not None:
        c = to_numpy(colors, "colors")
        if c.shape != v.shape:
            raise ValueError(f"colors: expected shape {v.shape} like verts, got {c.shape}")
        c = c.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".obj":
        _write_obj(path, v, f.astype(np.int64), c)
    else:
        _write_ply(path, v, f.astype(np.int64), c, binary)
    return path


# ---------------------------------------------------------------------- OBJ
def _read_obj(path: Path):
    verts, colors, faces = [], [], []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                try:
                    nums = [float(p) for p in parts[1:]]
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: bad vertex line {line.strip()!r}") from None
                if len(nums) not in (3, 4, 6, 7):
                    raise ValueError(f"{path}:{lineno}: vertex line needs 3 or 6 numbers, got {len(nums)}")
                verts.append(nums[:3])
                if len(nums) >= 6:
                    colors.append(nums[-3:])
            elif parts[0] == "f":
                faces.extend(_obj_face(parts[1:], len(verts), path, lineno))
    if not verts:
        raise ValueError(f"{path}: no vertices ('v' lines) found")
    if colors and len(colors) != len(verts):
        raise ValueError(f"{path}: {len(colors)} of {len(verts)} vertices have colours; expected all or none")
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return v, f, (np.asarray(colors) if colors else None)


def _obj_face(items: list[str], n_verts: int, path: Path, lineno: int) -> list[list[int]]:
    if len(items) < 3:
        raise ValueError(f"{path}:{lineno}: a face needs at least 3 vertices, got {len(items)}")
    idx = []
    for item in items:
        try:
            i = int(item.split("/")[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: bad face entry {item!r}") from None
        if i == 0:
            raise ValueError(f"{path}:{lineno}: OBJ indices are 1-based; got 0")
        idx.append(i - 1 if i > 0 else n_verts + i)  # negative = relative to the last vertex
    return [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]


def _write_obj(path: Path, v: np.ndarray, f: np.ndarray, c: np.ndarray | None) -> None:
    rows = v if c is None else np.concatenate([v, c], axis=1)
    fmt = " ".join([FLOAT_FORMAT] * rows.shape[1])
    with open(path, "w") as fh:
        np.savetxt(fh, rows.astype(np.float64), fmt="v " + fmt)
        np.savetxt(fh, f + 1, fmt="f %d %d %d")


# ---------------------------------------------------------------------- PLY
def _read_ply(path: Path):
    data = path.read_bytes()
    fmt, elements, body_start = _ply_header(data, path)
    if fmt == "ascii":
        values = _ply_ascii_elements(data[body_start:], elements, path)
    else:
        values = _ply_binary_elements(data, body_start, elements, fmt, path)
    if "vertex" not in values:
        raise ValueError(f"{path}: no 'vertex' element")
    vert = values["vertex"]
    for axis in ("x", "y", "z"):
        if axis not in vert:
            raise ValueError(f"{path}: vertex element lacks property {axis!r}")
    v = np.stack([vert["x"], vert["y"], vert["z"]], axis=1).astype(np.float64)
    colors = None
    if all(k in vert for k in ("red", "green", "blue")):
        colors = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1).astype(np.float64)
        if vert["red"].dtype.kind in "iu":
            colors = colors / UCHAR_COLOUR_MAX
    faces = np.zeros((0, 3), dtype=np.int64)
    if "face" in values:
        lists = values["face"].get("vertex_indices", values["face"].get("vertex_index"))
        if lists is None:
            raise ValueError(f"{path}: face element lacks a 'vertex_indices' list property")
        faces = _triangulate_lists(lists, path)
    return v, faces, colors


def _ply_header(data: bytes, path: Path):
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise ValueError(f"{path}: truncated PLY header")
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = None, []
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1] if len(parts) > 1 else None
        elif parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError(f"{path}: bad PLY element line {line!r}")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element: {line!r}")
            elements[-1][2].append(_ply_property(parts, line, path))
    if fmt not in PLY_FORMATS:
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}; expected one of {PLY_FORMATS}")
    return fmt, elements, newline + 1


def _ply_property(parts: list[str], line: str, path: Path):
    try:
        if parts[1] == "list":
            return (parts[4], _PLY_TYPES[parts[2]], _PLY_TYPES[parts[3]])
        return (parts[2], _PLY_TYPES[parts[1]], None)
    except (IndexError, KeyError):
        raise ValueError(f"{path}: bad PLY property line {line!r}") from None


def _ply_ascii_elements(body: bytes, elements, path: Path) -> dict:
    tokens = body.split()
    pos, out = 0, {}
    for name, count, props in elements:
        cols: dict[str, list] = {p[0]: [] for p in props}
        for _ in range(count):
            for pname, dtype, item_dtype in props:
                if item_dtype is None:
                    pos = _need(tokens, pos, 1, path)
                    cols[pname].append(_num(tokens[pos - 1], path))
                else:
                    pos = _need(tokens, pos, 1, path)
                    n = int(_num(tokens[pos - 1], path))
                    pos = _need(tokens, pos, n, path)
                    cols[pname].append([int(_num(t, path)) for t in tokens[pos - n:pos]])
        out[name] = {
            p[0]: (np.asarray(cols[p[0]], dtype=p[1]) if p[2] is None else cols[p[0]]) for p in props
        }
    return out


def _need(tokens, pos: int, n: int, path: Path) -> int:
    if pos + n > len(tokens):
        raise ValueError(f"{path}: truncated PLY body (expected more values)")
    return pos + n


def _num(token: bytes, path: Path) -> float:
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"{path}: bad number {token!r} in PLY body") from None


def _ply_binary_elements(data: bytes, pos: int, elements, fmt: str, path: Path) -> dict:
    order = "<" if fmt == "binary_little_endian" else ">"
    out = {}
    for name, count, props in elements:
        if all(p[2] is None for p in props):
            dt = np.dtype([(p[0], order + p[1]) for p in props])
            pos = _check_room(data, pos, dt.itemsize * count, path, name)
            arr = np.frombuffer(data, dtype=dt, count=count, offset=pos - dt.itemsize * count)
            out[name] = {p[0]: arr[p[0]].copy() for p in props}
        else:
            out[name], pos = _ply_binary_lists(data, pos, count, props, order, path, name)
    return out


def _check_room(data: bytes, pos: int, nbytes: int, path: Path, name: str) -> int:
    if pos + nbytes > len(data):
        raise ValueError(f"{path}: truncated PLY body in element {name!r}")
    return pos + nbytes


def _ply_binary_lists(data: bytes, pos: int, count: int, props, order: str, path: Path, name: str):
    # Fast path: a single list property whose lists all have the same length (triangles).
    if len(props) == 1 and count:
        pname, count_dt, item_dt = props[0]
        cdt, idt = np.dtype(order + count_dt), np.dtype(order + item_dt)
        _check_room(data, pos, cdt.itemsize, path, name)
        n = int(np.frombuffer(data, dtype=cdt, count=1, offset=pos)[0])
        row = np.dtype([("n", cdt), ("idx", idt, (n,))])
        if pos + row.itemsize * count <= len(data):
            arr = np.frombuffer(data, dtype=row, count=count, offset=pos)
            if (arr["n"] == n).all():
                return {pname: arr["idx"].astype(np.int64)}, pos + row.itemsize * count
    cols: dict[str, list] = {p[0]: [] for p in props}
    for _ in range(count):
        for pname, dtype, item_dtype in props:
            dt = np.dtype(order + dtype)
            end = _check_room(data, pos, dt.itemsize, path, name)
            value = np.frombuffer(data, dtype=dt, count=1, offset=pos)[0]
            pos = end
            if item_dtype is None:
                cols[pname].append(value)
            else:
                idt = np.dtype(order + item_dtype)
                end = _check_room(data, pos, idt.itemsize * int(value), path, name)
                cols[pname].append(np.frombuffer(data, dtype=idt, count=int(value), offset=pos).tolist())
                pos = end
    return {p[0]: (np.asarray(cols[p[0]], dtype=p[1]) if p[2] is None else cols[p[0]]) for p in props}, pos


def _triangulate_lists(lists, path: Path) -> np.ndarray:
    if isinstance(lists, np.ndarray) and lists.ndim == 2 and lists.shape[1] == 3:
        return lists.astype(np.int64)
    tris = []
    for poly in lists:
        poly = [int(i) for i in poly]
        if len(poly) < 3:
            raise ValueError(f"{path}: a face needs at least 3 vertices, got {len(poly)}")
        tris.extend([poly[0], poly[k], poly[k + 1]] for k in range(1, len(poly) - 1))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _write_ply(path: Path, v: np.ndarray, f: np.ndarray, c: np.ndarray | None, binary: bool) -> None:
    fmt = "binary_little_endian" if binary else "ascii"
    header = ["ply", f"format {fmt} 1.0", "comment written by facelab", f"element vertex {len(v)}"]
    header += [f"property float {a}" for a in "xyz"]
    if c is not None:
        header += [f"property float {a}" for a in ("red", "green", "blue")]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    rows = v if c is None else np.concatenate([v, c], axis=1)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            fh.write(rows.astype("<f4").tobytes())
            tri = np.zeros(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            tri["n"], tri["idx"] = 3, f
            fh.write(tri.tobytes())
        else:
            np.savetxt(fh, rows.astype(np.float64), fmt=FLOAT_FORMAT)
            np.savetxt(fh, f, fmt="3 %d %d %d")

