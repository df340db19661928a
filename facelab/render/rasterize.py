"""Differentiable triangle rasterization with two backends: pure PyTorch and PyTorch3D.

Book chapter ``book/03_rendering.ipynb``.

Screen space (see :mod:`facelab.camera.projection`): ``verts_screen: (B, V, 3)`` holds
x, y in pixels (origin at the image's top-left corner, x right, y down; pixel
(row i, col j) has its centre at ``(j + 0.5, i + 0.5)``) and the depth z in mm,
larger = farther.  A pixel is covered by a triangle when its centre lies inside it
(edges included); the nearest covering triangle wins.  Barycentric coordinates are
affine in screen space (exact for the weak-perspective camera).

Backends:

* ``"torch"``: pure PyTorch and vectorized. Each triangle's bounding box of pixel
  centres is enumerated (one ``repeat_interleave`` over all boxes), the centres
  inside the triangle are kept, and a z-buffer is taken with a single
  ``scatter_reduce("amin")`` over a packed int64 key ``(order-preserving int32 bits of
  the float32 depth) << 32 | face id``, so the nearest face wins and ties go to the
  lower face id. All of this runs without autograd; the barycentric coordinates and
  depth of each winning face are then recomputed from the vertex positions, so they
  are differentiable with respect to ``verts_screen``.  Hard edges only
  (``blur_radius=0``, ``faces_per_pixel=1``).
* ``"pytorch3d"``: ``pytorch3d.renderer.mesh.rasterize_meshes`` on NDC coordinates
  converted from screen space (PyTorch3D's NDC has +X left, +Y up, and its shorter
  image side spans [-1, 1]): ``x_ndc = (W - 2x)/S``, ``y_ndc = (H - 2y)/S`` with
  ``S = min(H, W)``. Depth is offset so that it is positive. Supports
  ``blur_radius > 0`` (in pixels) and ``faces_per_pixel > 1`` for soft
  rasterization (SoftRasterizer-style blending in :mod:`facelab.render.renderer`).
  PyTorch3D is optional and imported only when this backend is used.
* ``"auto"``: ``"torch"`` for hard rasterization (on CPU it is far faster than
  PyTorch3D's CPU rasterizer; on CUDA we also choose it, for one code path), and
  ``"pytorch3d"`` when soft rasterization is asked for.

Both backends rasterize both windings. ``cull_backfaces=True`` keeps only the
triangles that are counter-clockwise as seen from the camera (clockwise in the
y-down pixel frame, where twice their signed area is negative): with the model's
counter-clockwise-from-outside triangles, those that face the camera.

The two backends agree (``tests/test_rasterize.py``): coverage IoU >= 0.99 and the
same winning face on >= 99 % of co-covered pixels (measured: identical on random
SynthFaces faces and poses at 64 and 112 px); there, barycentrics within 1e-2 and
depth within 1 mm (PyTorch3D rasterizes in float32 NDC), rendered colour within 2e-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facelab.camera.projection import image_hw
from facelab.checks import check_choice, check_positive, check_tensor

__all__ = ["Fragments", "rasterize", "interpolate", "BACKENDS", "resolve_backend", "pytorch3d_available"]

BACKENDS = ("auto", "torch", "pytorch3d")
#: triangles with |2 * signed area| below this (px^2) cover nothing and are skipped
DEGENERATE_AREA = 1e-9
_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
#: the (detached) depth offset that keeps PyTorch3D's z positive: z_min maps to this
_P3D_MIN_DEPTH = 1.0


@dataclass
class Fragments:
    """Per-pixel rasterization results.

    With ``faces_per_pixel == 1`` (hard rasterization):

    * ``pix_to_face``: ``(B, H, W)`` long, index into the shared ``faces`` tensor, -1 = background.
    * ``bary``: ``(B, H, W, 3)`` float, barycentric coordinates (0 on background),
      differentiable w.r.t. ``verts_screen``.
    * ``depth``: ``(B, H, W)`` float, mm (0 on background), differentiable.
    * ``mask``: ``(B, H, W)`` bool, covered pixels.
    * ``dists``: None.

    With ``faces_per_pixel = K > 1`` the first three gain a K axis after W (nearest
    first), ``dists: (B, H, W, K)`` holds PyTorch3D's signed squared distance of the
    pixel centre to each face in px^2 (negative inside) and ``mask`` is any-coverage.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    dists: torch.Tensor | None = None

    @property
    def faces_per_pixel(self) -> int:
        return 1 if self.pix_to_face.dim() == 3 else self.pix_to_face.shape[-1]


def pytorch3d_available() -> bool:
    """True when PyTorch3D's rasterizer can be imported.

    >>> isinstance(pytorch3d_available(), bool)
    True
    """
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
    except Exception:  # ImportError, or a binary built for another torch
        return False
    return True


def resolve_backend(backend: str, device: torch.device, soft: bool) -> str:
    """The concrete backend ``"torch"`` or ``"pytorch3d"`` that ``backend`` means.

    >>> resolve_backend("auto", torch.device("cpu"), soft=False)
    'torch'
    """
    check_choice(backend, "backend", BACKENDS)
    if backend == "auto":
        return "pytorch3d" if soft else "torch"
    return backend


def rasterize(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    backend: str = "auto",
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize a batch of meshes that share one triangle list.

    Args:
        verts_screen: ``(B, V, 3)`` float, screen space (px, px, mm depth).
        faces: ``(F, 3)`` long vertex indices, shared by the batch.
        image_size: int or ``(H, W)``.
        backend: ``"auto"``, ``"torch"`` or ``"pytorch3d"`` (see the module docstring).
        blur_radius: px; > 0 makes faces cover pixels up to this distance outside
            them (soft rasterization, PyTorch3D backend only).
        faces_per_pixel: K nearest faces kept per pixel (> 1: PyTorch3D backend only).
        cull_backfaces: keep only triangles that are counter-clockwise seen from the
            camera (front faces of a mesh that is counter-clockwise from outside).

    Returns:
        :class:`Fragments`.

    >>> v = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]])
    >>> frag = rasterize(v, torch.tensor([[0, 1, 2]]), 4, backend="torch")
    >>> frag.mask[0].int()  # centres with x + y <= 4 are inside
    tensor([[1, 1, 1, 1],
            [1, 1, 1, 0],
            [1, 1, 0, 0],
            [1, 0, 0, 0]], dtype=torch.int32)
    """
    check_tensor(verts_screen, "verts_screen", ("B", "V", 3))
    check_tensor(faces, "faces", (None, 3), dtype_kind="int")
    H, W = image_hw(image_size)
    check_positive(faces_per_pixel, "faces_per_pixel", integer=True)
    if not blur_radius >= 0:
        raise ValueError(f"blur_radius: must be >= 0 px, got {blur_radius}")
    V = verts_screen.shape[1]
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ValueError(f"faces: vertex indices must lie in [0, {V}), got [{int(faces.min())}, {int(faces.max())}]")
    if faces.device != verts_screen.device:
        raise ValueError(f"faces: on {faces.device} but verts_screen is on {verts_screen.device}")
    soft = blur_radius > 0 or faces_per_pixel > 1
    which = resolve_backend(backend, verts_screen.device, soft)
    faces = faces.long()
    if which == "torch":
        if soft:
            raise ValueError(
                f"backend 'torch' rasterizes hard edges only (blur_radius=0, faces_per_pixel=1); got "
                f"blur_radius={blur_radius}, faces_per_pixel={faces_per_pixel}: use backend='pytorch3d'"
            )
        return _rasterize_torch(verts_screen, faces, H, W, cull_backfaces)
    return _rasterize_pytorch3d(verts_screen, faces, H, W, blur_radius, faces_per_pixel, cull_backfaces)


# ----------------------------------------------------------------- torch backend
def _edge_weights(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor):
    """Unnormalised barycentrics of points ``(px, py)`` in triangles ``tri: (N, 3, >=2)``.

    Returns ``(w0, w1, w2, area2)``: ``w_k`` is twice the signed area of the
    sub-triangle opposite vertex k, ``area2`` twice the signed triangle area.
    """
    x0, x1, x2 = tri[:, 0, 0], tri[:, 1, 0], tri[:, 2, 0]
    y0, y1, y2 = tri[:, 0, 1], tri[:, 1, 1], tri[:, 2, 1]
    w0 = (x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)
    w1 = (x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)
    w2 = (x0 - px) * (y1 - py) - (x1 - px) * (y0 - py)
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    return w0, w1, w2, area2


def _ordered_depth_key(depth: torch.Tensor) -> torch.Tensor:
    """int64 whose order matches float32 ``depth`` (IEEE bits, negatives flipped)."""
    bits = depth.float().contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long()


def _candidate_pixels(tri: torch.Tensor, H: int, W: int, cull_backfaces: bool):
    """Enumerate (face, pixel) pairs of every face's clipped bounding box.

    ``tri: (B*F, 3, 3)`` detached screen-space triangles.  Returns ``face_idx (N,)``
    (into B*F) and the pixel columns/rows ``px, py (N,)`` (long).
    """
    x, y = tri[:, :, 0], tri[:, :, 1]
    # pixel centre j + 0.5 lies in [xmin, xmax]  <=>  ceil(xmin - .5) <= j <= floor(xmax - .5)
    j0 = torch.ceil(x.amin(1) - 0.5).clamp(0, W).long()
    j1 = torch.floor(x.amax(1) - 0.5).clamp(-1, W - 1).long()
    i0 = torch.ceil(y.amin(1) - 0.5).clamp(0, H).long()
    i1 = torch.floor(y.amax(1) - 0.5).clamp(-1, H - 1).long()
    nx = (j1 - j0 + 1).clamp_min(0)
    ny = (i1 - i0 + 1).clamp_min(0)
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    keep = area2.abs() > DEGENERATE_AREA
    if cull_backfaces:
        # y points down on screen, so a camera-frame counter-clockwise face has area2 < 0
        keep &= area2 < 0
    count = nx * ny * keep
    nonempty = count.nonzero().squeeze(1)
    count = count[nonempty]
    face_idx = torch.repeat_interleave(nonempty, count)
    starts = torch.cumsum(count, 0) - count
    local = torch.arange(face_idx.shape[0], device=tri.device) - torch.repeat_interleave(starts, count)
    nxf = torch.repeat_interleave(nx[nonempty], count)
    px = torch.repeat_interleave(j0[nonempty], count) + local % nxf
    py = torch.repeat_interleave(i0[nonempty], count) + torch.div(local, nxf, rounding_mode="floor")
    return face_idx, px, py


def _zbuffer(verts_screen: torch.Tensor, faces: torch.Tensor, H: int, W: int, cull_backfaces: bool) -> torch.Tensor:
    """``(B*H*W,)`` long: the nearest covering face (local id) per pixel, -1 if none."""
    B = verts_screen.shape[0]
    F = faces.shape[0]
    tri = verts_screen.detach()[:, faces].reshape(B * F, 3, 3)
    face_idx, px, py = _candidate_pixels(tri, H, W, cull_backfaces)
    # Gather only x, y per candidate (and z only for the covered ones): memory traffic dominates.
    t = tri[:, :, :2].contiguous()[face_idx]
    w0, w1, w2, area2 = _edge_weights(t, px.to(t.dtype) + 0.5, py.to(t.dtype) + 0.5)
    # inside (edges included) for either winding: all weights share area2's sign
    inside = torch.where(area2 > 0, (w0 >= 0) & (w1 >= 0) & (w2 >= 0), (w0 <= 0) & (w1 <= 0) & (w2 <= 0))
    # One nonzero + index_select is much cheaper than a boolean mask per array.
    sel = inside.nonzero().squeeze(1)
    face_idx, px, py = face_idx[sel], px[sel], py[sel]
    z = tri[:, :, 2].contiguous()[face_idx]
    depth = (w0[sel] * z[:, 0] + w1[sel] * z[:, 1] + w2[sel] * z[:, 2]) / area2[sel]
    batch = torch.div(face_idx, F, rounding_mode="floor")
    key = (_ordered_depth_key(depth) << 32) | (face_idx - batch * F)
    pixel = (batch * H + py) * W + px
    zbuf = torch.full((B * H * W,), _INT64_MAX, dtype=torch.long, device=verts_screen.device)
    zbuf.scatter_reduce_(0, pixel, key, reduce="amin", include_self=True)
    return torch.where(zbuf == _INT64_MAX, torch.full_like(zbuf, -1), zbuf & _LOW32)


def _rasterize_torch(verts_screen: torch.Tensor, faces: torch.Tensor, H: int, W: int, cull_backfaces: bool) -> Fragments:
    B, V, _ = verts_screen.shape
    with torch.no_grad():
        face_of_pixel = _zbuffer(verts_screen, faces, H, W, cull_backfaces)
        pixel = (face_of_pixel >= 0).nonzero().squeeze(1)
        face = face_of_pixel[pixel]
        batch = torch.div(pixel, H * W, rounding_mode="floor")
        rem = pixel - batch * (H * W)
        py = torch.div(rem, W, rounding_mode="floor")
        px = rem - py * W
        vidx = faces[face] + (batch * V)[:, None]  # (M, 3) into the flattened batch
    # differentiable: barycentrics of the winning faces from the vertex positions
    tri = verts_screen.reshape(B * V, 3)[vidx]
    w0, w1, w2, area2 = _edge_weights(tri, px.to(tri.dtype) + 0.5, py.to(tri.dtype) + 0.5)
    bary = torch.stack([w0, w1, w2], dim=-1) / area2[:, None]
    depth = (bary * tri[:, :, 2]).sum(-1)
    bary_full = bary.new_zeros(B * H * W, 3).index_copy(0, pixel, bary)
    depth_full = depth.new_zeros(B * H * W).index_copy(0, pixel, depth)
    return Fragments(
        pix_to_face=face_of_pixel.reshape(B, H, W),
        bary=bary_full.reshape(B, H, W, 3),
        depth=depth_full.reshape(B, H, W),
        mask=(face_of_pixel >= 0).reshape(B, H, W),
    )


# ------------------------------------------------------------- pytorch3d backend
def _import_pytorch3d():
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except Exception as err:
        raise ImportError(
            "backend='pytorch3d' needs PyTorch3D (pip install 'facelab[pytorch3d]' or conda-forge "
            f"pytorch3d); it could not be imported: {err}. Use backend='torch' instead."
        ) from None
    return rasterize_meshes, Meshes


def screen_to_ndc(verts_screen: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Screen space (px, y down) -> PyTorch3D NDC (+X left, +Y up, shorter side in [-1, 1]).

    Args:
        verts_screen: ``(B, V, 3)`` float; z is passed through unchanged.

    Returns:
        ``(B, V, 3)`` float.

    >>> screen_to_ndc(torch.tensor([[[0.0, 0.0, 5.0], [64.0, 32.0, 5.0]]]), 32, 64)
    tensor([[[ 2.,  1.,  5.],
             [-2., -0.,  5.]]])
    """
    S = min(H, W)
    x, y, z = verts_screen.unbind(-1)
    return torch.stack([(W - 2 * x) / S, (H - 2 * y) / S, z], dim=-1)


def _rasterize_pytorch3d(verts_screen, faces, H, W, blur_radius, faces_per_pixel, cull_backfaces) -> Fragments:
    rasterize_meshes, Meshes = _import_pytorch3d()
    B, V, _ = verts_screen.shape
    F = faces.shape[0]
    S = min(H, W)
    px_to_ndc = 2.0 / S
    offset = _P3D_MIN_DEPTH - verts_screen[..., 2].detach().min()
    ndc = screen_to_ndc(verts_screen, H, W) + torch.stack([offset.new_zeros(()), offset.new_zeros(()), offset])
    meshes = Meshes(verts=ndc, faces=faces[None].expand(B, F, 3))
    # NDC flips both x and y, so windings are preserved and PyTorch3D's notion of a
    # back face (clockwise seen from its camera) matches ours; the tests check this.
    p2f, zbuf, bary, dists = rasterize_meshes(
        meshes,
        image_size=(H, W),
        blur_radius=float((blur_radius * px_to_ndc) ** 2),
        faces_per_pixel=faces_per_pixel,
        perspective_correct=False,
        cull_backfaces=cull_backfaces,
    )
    covered = p2f >= 0
    first = torch.arange(B, device=p2f.device).view(B, 1, 1, 1) * F
    p2f = torch.where(covered, p2f - first, p2f)
    depth = torch.where(covered, zbuf - offset, torch.zeros_like(zbuf))
    bary = bary * covered[..., None]
    dists = dists / px_to_ndc**2
    mask = covered.any(-1)
    if faces_per_pixel == 1:
        return Fragments(p2f[..., 0], bary[..., 0, :], depth[..., 0], mask)
    return Fragments(p2f, bary, depth, mask, dists)


# ------------------------------------------------------------------ interpolation
def interpolate(fragments: Fragments, attrs: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes to pixels.

    Args:
        fragments: from :func:`rasterize` on a ``(B, V, 3)`` mesh.
        attrs: ``(B, V, C)`` float per-vertex values (colour, normals, ...).
        faces: ``(F, 3)`` long, the faces given to :func:`rasterize`.

    Returns:
        ``(B, H, W, C)`` (or ``(B, H, W, K, C)`` with K faces per pixel) float,
        0 on background; differentiable w.r.t. ``attrs`` and the barycentrics.

    >>> v = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]])
    >>> f = torch.tensor([[0, 1, 2]])
    >>> out = interpolate(rasterize(v, f, 4), v[..., :2], f)  # interpolating x, y
    >>> out[0, 1, 2]  # the pixel centre (2.5, 1.5)
    tensor([2.5000, 1.5000])
    """
    p2f = fragments.pix_to_face
    B = p2f.shape[0]
    check_tensor(attrs, "attrs", (B, "V", "C"))
    check_tensor(faces, "faces", (None, 3), dtype_kind="int")
    V, C = attrs.shape[1], attrs.shape[2]
    covered = p2f >= 0
    pixel = covered.reshape(-1).nonzero().squeeze(1)
    face = p2f.reshape(-1)[pixel]
    per_batch = p2f[0].numel()
    batch = torch.div(pixel, per_batch, rounding_mode="floor")
    vidx = faces.long()[face] + (batch * V)[:, None]  # (M, 3)
    vals = attrs.reshape(B * V, C)[vidx]  # (M, 3, C)
    bary = fragments.bary.reshape(-1, 3)[pixel]
    out = (bary[:, :, None] * vals).sum(1)
    return out.new_zeros(p2f.numel(), C).index_copy(0, pixel, out).reshape(*p2f.shape, C)
