"""The rendering layer: pose + SH lighting + rasterization -> image, mask, depth, normals.

Book chapter ``book/03_rendering.ipynb``.  The image formation of Gao et al. 2020:
the face ``verts`` (model frame, mm) is projected by a weak-perspective pose
``[pitch, yaw, roll, tx, ty, scale]`` (or any camera with ``project``), shaded
per vertex by Lambertian SH lighting with normals in the camera frame (x right,
y up, z toward the camera), rasterized, and the vertex colours are interpolated.
Gradients flow to the vertices, albedo, lighting and pose.

Soft mode (``faces_per_pixel > 1``, PyTorch3D backend): each of the K nearest faces
covers a pixel with probability ``sigmoid(-d / sigma)`` (``d`` the signed squared
distance in px^2), colours are blended by a depth softmax with temperature
``gamma`` as in SoftRasterizer, and the mask is ``1 - prod_k (1 - p_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facelab.camera.projection import WeakPerspectiveCamera, image_hw
from facelab.camera.rotation import rotate_points
from facelab.checks import check_choice, check_positive, check_tensor
from facelab.render.rasterize import BACKENDS, Fragments, interpolate, rasterize
from facelab.render.sh import NORMAL_EPS, shade, vertex_normals

__all__ = ["RenderSettings", "RenderOutput", "render", "Renderer"]

#: keeps the soft blend's background weight and depth normalisation finite
SOFT_EPS = 1e-10


@dataclass
class RenderSettings:
    """How to render.

    Attributes:
        image_size: ``(H, W)`` px (an int means square).
        backend: ``"auto"``, ``"torch"`` or ``"pytorch3d"`` (see :mod:`facelab.render.rasterize`).
        blur_radius: px; > 0 for soft rasterization (PyTorch3D backend).
        faces_per_pixel: K faces blended per pixel; > 1 for soft rasterization.
        background: grey level of uncovered pixels, in [0, 1].
        clamp: clamp the image to [0, 1].
        sigma: px^2, sharpness of the soft silhouette (soft mode only).
        gamma: depth-softmax temperature (soft mode only).
        cull_backfaces: skip faces turned away from the camera.
        batch_invariant: shade each image independently of its batch, bit for bit (slower
            under autograd; SynthFaces photo generation sets it).
    """

    image_size: tuple[int, int] = (64, 64)
    backend: str = "auto"
    blur_radius: float = 0.0
    faces_per_pixel: int = 1
    background: float = 0.0
    clamp: bool = True
    sigma: float = 1.0
    gamma: float = 1e-2
    cull_backfaces: bool = False
    batch_invariant: bool = False

    def __post_init__(self) -> None:
        self.image_size = image_hw(self.image_size)
        check_choice(self.backend, "backend", BACKENDS)
        check_positive(self.faces_per_pixel, "faces_per_pixel", integer=True)
        check_positive(self.sigma, "sigma")
        check_positive(self.gamma, "gamma")
        if not self.blur_radius >= 0:
            raise ValueError(f"blur_radius: must be >= 0 px, got {self.blur_radius}")


@dataclass
class RenderOutput:
    """What :func:`render` returns (B images of H x W).

    Attributes:
        image: ``(B, 3, H, W)`` float RGB in [0, 1] when clamped.
        mask: ``(B, 1, H, W)`` float coverage (0/1, or soft in soft mode).
        depth: ``(B, 1, H, W)`` float, mm (0 on background).
        normals: ``(B, 3, H, W)`` float unit normals, camera frame (0 on background).
        landmarks2d: ``(B, L, 2)`` float px, or None without ``landmarks_idx``.
        verts_screen: ``(B, V, 3)`` float screen space (px, px, mm).
        fragments: the rasterizer's :class:`~facelab.render.rasterize.Fragments`.
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    landmarks2d: torch.Tensor | None
    verts_screen: torch.Tensor
    fragments: Fragments = field(repr=False)


def _camera(pose) -> object:
    if isinstance(pose, torch.Tensor):
        check_tensor(pose, "pose", ("B", 6))
        return WeakPerspectiveCamera.from_pose(pose)
    if hasattr(pose, "project") and hasattr(pose, "rotation"):
        return pose
    raise TypeError(f"pose: expected a (B, 6) tensor or a camera with .project and .rotation, got {type(pose).__name__}")


def _soft_blend(frags: Fragments, colour: torch.Tensor, depth: torch.Tensor, settings: RenderSettings):
    """SoftRasterizer blending of K faces per pixel -> ``(B, H, W, 3)`` colour and ``(B, H, W)`` alpha."""
    covered = frags.pix_to_face >= 0
    prob = torch.sigmoid(-frags.dists / settings.sigma) * covered
    with torch.no_grad():  # per-image depth range for the softmax, as SoftRas's znear/zfar
        far_fill = torch.where(covered, depth, torch.full_like(depth, -torch.inf))
        near_fill = torch.where(covered, depth, torch.full_like(depth, torch.inf))
        zfar = far_fill.flatten(1).amax(1).clamp_min(-1e30).view(-1, 1, 1, 1) + 1.0
        znear = near_fill.flatten(1).amin(1).clamp_max(1e30).view(-1, 1, 1, 1) - 1.0
    z_inv = (zfar - depth) / (zfar - znear).clamp_min(SOFT_EPS) * covered
    z_max = z_inv.amax(-1, keepdim=True).clamp_min(SOFT_EPS).detach()
    weights = prob * torch.exp((z_inv - z_max) / settings.gamma)
    delta = torch.exp((SOFT_EPS - z_max) / settings.gamma).clamp_min(SOFT_EPS)
    denom = weights.sum(-1, keepdim=True) + delta
    rgb = ((weights[..., None] * colour).sum(-2) + delta * settings.background) / denom
    alpha = 1 - torch.prod(1 - prob, dim=-1)
    return rgb, alpha


def render(
    verts: torch.Tensor,
    faces: torch.Tensor,
    albedo: torch.Tensor,
    sh: torch.Tensor,
    pose,
    landmarks_idx: torch.Tensor | None = None,
    settings: RenderSettings | None = None,
) -> RenderOutput:
    """Render shaded faces.

    Args:
        verts: ``(B, V, 3)`` float, mm, model frame.
        faces: ``(F, 3)`` long.
        albedo: ``(B, V, 3)`` float, linear RGB.
        sh: ``(B, 27)`` float SH lighting (see :mod:`facelab.render.sh`).
        pose: ``(B, 6)`` float ``[pitch, yaw, roll, tx, ty, scale]`` (rad, px, px/mm),
            or a camera (:class:`~facelab.camera.WeakPerspectiveCamera`,
            :class:`~facelab.camera.PerspectiveCamera`).
        landmarks_idx: ``(L,)`` long vertex indices (e.g. the 68 iBUG landmarks), or None.
        settings: :class:`RenderSettings` (default: 64 x 64, auto backend).

    Returns:
        :class:`RenderOutput`.

    >>> from facelab.render.procedural import head_grid
    >>> from facelab.camera import centered_pose
    >>> from facelab.render.sh import DEFAULT_SH
    >>> v, f = head_grid(17, 21)
    >>> out = render(v[None], f, torch.full((1, v.shape[0], 3), 0.7), DEFAULT_SH[None], centered_pose(64))
    >>> out.image.shape, out.mask.shape
    (torch.Size([1, 3, 64, 64]), torch.Size([1, 1, 64, 64]))
    """
    settings = settings or RenderSettings()
    check_tensor(verts, "verts", ("B", "V", 3))
    B, V = verts.shape[:2]
    check_tensor(albedo, "albedo", (B, V, 3))
    check_tensor(sh, "sh", (B, 27))
    camera = _camera(pose)
    rotation = camera.rotation
    check_tensor(rotation, "pose rotation", (B, 3, 3))
    H, W = settings.image_size

    verts_screen = camera.project(verts)
    normals_cam = rotate_points(vertex_normals(verts, faces), rotation)
    colour = shade(albedo, normals_cam, sh, settings.batch_invariant)
    frags = rasterize(
        verts_screen, faces, (H, W), backend=settings.backend, blur_radius=settings.blur_radius,
        faces_per_pixel=settings.faces_per_pixel, cull_backfaces=settings.cull_backfaces,
    )
    pixels = interpolate(frags, torch.cat([colour, normals_cam], dim=-1), faces)
    if frags.faces_per_pixel == 1:
        mask = frags.mask.to(verts.dtype)
        rgb = pixels[..., :3] + settings.background * (1 - mask[..., None])
        normals, depth = pixels[..., 3:], frags.depth
    else:
        rgb, mask = _soft_blend(frags, pixels[..., :3], frags.depth, settings)
        normals, depth = pixels[..., 0, 3:], frags.depth[..., 0]
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(NORMAL_EPS)
    if settings.clamp:
        rgb = rgb.clamp(0.0, 1.0)
    landmarks2d = None
    if landmarks_idx is not None:
        check_tensor(landmarks_idx, "landmarks_idx", (None,), dtype_kind="int")
        _check_landmark_vertices(landmarks_idx)
        landmarks2d = verts_screen[:, landmarks_idx.long(), :2]
    return RenderOutput(
        image=rgb.permute(0, 3, 1, 2),
        mask=mask[:, None],
        depth=depth[:, None],
        normals=normals.permute(0, 3, 1, 2),
        landmarks2d=landmarks2d,
        verts_screen=verts_screen,
        fragments=frags,
    )


def _check_landmark_vertices(idx: torch.Tensor) -> None:
    """Refuse negative indices: an unmapped landmark's -1 would silently render the last vertex."""
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"landmarks_idx: holds {int(idx.min())}; a partial landmark annotation's unmapped "
                         "points (-1) must be left out (model.landmarks[model.landmark_mask])")


class Renderer(nn.Module):
    """:func:`render` as a module that holds the triangles and landmark indices.

    >>> from facelab.render.procedural import head_grid
    >>> from facelab.camera import centered_pose
    >>> from facelab.render.sh import DEFAULT_SH
    >>> v, f = head_grid(17, 21)
    >>> r = Renderer(f, RenderSettings(image_size=(24, 32)))
    >>> r(v[None], torch.full((1, v.shape[0], 3), 0.7), DEFAULT_SH[None], centered_pose((24, 32))).image.shape
    torch.Size([1, 3, 24, 32])
    """

    def __init__(self, faces: torch.Tensor, settings: RenderSettings | None = None, landmarks_idx: torch.Tensor | None = None):
        super().__init__()
        check_tensor(faces, "faces", (None, 3), dtype_kind="int")
        self.settings = settings or RenderSettings()
        self.register_buffer("faces", faces.long().clone(), persistent=False)
        if landmarks_idx is not None:
            check_tensor(landmarks_idx, "landmarks_idx", (None,), dtype_kind="int")
            _check_landmark_vertices(landmarks_idx)
            self.register_buffer("landmarks_idx", landmarks_idx.long().clone(), persistent=False)
        else:
            self.landmarks_idx = None

    def forward(self, verts: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor, pose) -> RenderOutput:
        """See :func:`render`; ``verts``/``albedo`` ``(B, V, 3)``, ``sh`` ``(B, 27)``, ``pose`` ``(B, 6)``."""
        return render(verts, self.faces, albedo, sh, pose, self.landmarks_idx, self.settings)
