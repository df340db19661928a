"""Face alignment: warp each photo so that five landmarks land on a fixed template.

Face recognition networks are trained and tested on *aligned* crops: SphereFace (and
so Liu et al. 2018) detects five points (eye centres, nose tip, mouth corners) and
warps the photo with the similarity transform that maps them onto a 112x96 template.
The crop then shows the inner face at a fixed position, size and in-plane rotation, so
the network spends none of its capacity on where the face is.

On SynthFaces the five points come from the sample's projected iBUG-68 landmarks
(``landmarks2d``), i.e. a perfect landmark detector; the paper used MTCNN.

Pixel convention (as :mod:`facelab.render`): pixel ``(row i, col j)`` has its centre
at ``(x, y) = (j + 0.5, i + 0.5)`` px.

Book chapter: ``book/05_encoder_decoder.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facelab.checks import check_image_size, check_tensor

# The five points as groups of iBUG-68 indices: image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner (each point is its group's mean).
FIVE_POINT_GROUPS: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))
# SphereFace's five-point template for 112x96 (H x W) crops, (x, y) px.
SPHEREFACE_TEMPLATE = ((30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366), (33.5493, 92.3655),
                       (62.7299, 92.2041))
SPHEREFACE_SIZE = (112, 96)


def five_points(landmarks2d: torch.Tensor) -> torch.Tensor:
    """The five alignment points of iBUG-68 landmarks.

    Args:
        landmarks2d: ``(B, 68, 2)`` float, px.

    Returns:
        ``(B, 5, 2)`` float, px: eye centres, nose tip, mouth corners (:data:`FIVE_POINT_GROUPS`).

    >>> five_points(torch.arange(136.).reshape(1, 68, 2))[0, 2].tolist()  # nose tip = landmark 30
    [60.0, 61.0]
    """
    check_tensor(landmarks2d, "landmarks2d", ("B", 68, 2))
    return torch.stack([landmarks2d[:, list(g)].mean(1) for g in FIVE_POINT_GROUPS], 1)


def template(image_size: tuple[int, int]) -> torch.Tensor:
    """SphereFace's five-point template scaled (uniformly) and centred into ``image_size`` = ``(H, W)``.

    Returns:
        ``(5, 2)`` float, px.

    >>> template((112, 96))[0].tolist() == list(torch.tensor(SPHEREFACE_TEMPLATE[0]).tolist())
    True
    """
    H, W = check_image_size(image_size)
    ref = torch.tensor(SPHEREFACE_TEMPLATE)
    s = min(H / SPHEREFACE_SIZE[0], W / SPHEREFACE_SIZE[1])
    offset = torch.tensor([(W - s * SPHEREFACE_SIZE[1]) / 2, (H - s * SPHEREFACE_SIZE[0]) / 2])
    return ref * s + offset


def similarity_2d(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares 2D similarity ``dst ~ a * src + b`` (rotation, uniform scale, translation).

    Points are complex numbers ``x + iy``; the closed form is
    ``a = sum (d - d_mean) conj(s - s_mean) / sum |s - s_mean|^2`` and
    ``b = d_mean - a s_mean`` (Umeyama's estimate restricted to 2D).

    Args:
        src, dst: ``(B, N, 2)`` float, N >= 2 corresponding points.

    Returns:
        ``A (B, 2, 2)`` and ``b (B, 2)`` with ``dst ~ src @ A.T + b``.

    >>> src = torch.tensor([[[0., 0.], [1., 0.], [0., 1.]]])
    >>> A, b = similarity_2d(src, 2 * src.flip(-1) + 3)  # a reflection is not a similarity...
    >>> A, b = similarity_2d(src, src @ torch.tensor([[0., -2.], [2., 0.]]).T + 1)  # ...a rotation+scale is
    >>> A.round(decimals=4).tolist(), b.round(decimals=4).tolist()
    ([[[0.0, -2.0], [2.0, 0.0]]], [[1.0, 1.0]])
    """
    check_tensor(src, "src", ("B", "N", 2))
    check_tensor(dst, "dst", (src.shape[0], src.shape[1], 2))
    if src.shape[1] < 2:
        raise ValueError(f"src: a similarity needs at least 2 points, got {src.shape[1]}")
    zs = torch.complex(src[..., 0].double(), src[..., 1].double())
    zd = torch.complex(dst[..., 0].double(), dst[..., 1].double())
    cs, cd = zs - zs.mean(1, keepdim=True), zd - zd.mean(1, keepdim=True)
    denom = (cs.abs() ** 2).sum(1)
    if (denom <= 0).any():
        raise ValueError("src: the points of some sample coincide; no similarity is defined")
    a = (cd * cs.conj()).sum(1) / denom
    b = zd.mean(1) - a * zs.mean(1)
    A = torch.stack([torch.stack([a.real, -a.imag], -1), torch.stack([a.imag, a.real], -1)], -2)
    return A.to(src.dtype), torch.stack([b.real, b.imag], -1).to(src.dtype)


def align_faces(images: torch.Tensor, landmarks2d: torch.Tensor, out_size: tuple[int, int] | None = None,
                mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``images`` so their five points land on :func:`template` of ``out_size``.

    Args:
        images: ``(B, C, H, W)`` float.
        landmarks2d: ``(B, 68, 2)`` float, px in ``images``.
        out_size: ``(H_out, W_out)`` of the crops (default: the input size).
        mode: ``grid_sample`` interpolation (``"bilinear"`` or ``"nearest"``).

    Returns:
        ``(crops (B, C, H_out, W_out), landmarks (B, 68, 2))``: the aligned crops (zero outside
        the photo) and the landmarks moved into crop pixels. Differentiable in ``images``.

    >>> img = torch.rand(2, 3, 64, 64)
    >>> lm = torch.rand(2, 68, 2) * 40 + 12
    >>> crops, lm_out = align_faces(img, lm, (56, 48))
    >>> crops.shape, bool((five_points(lm_out) - template((56, 48))).abs().mean() < 20)
    (torch.Size([2, 3, 56, 48]), True)
    """
    check_tensor(images, "images", ("B", "C", "H", "W"))
    check_tensor(landmarks2d, "landmarks2d", (images.shape[0], 68, 2))
    H, W = images.shape[-2:]
    Ho, Wo = check_image_size(out_size or (H, W))
    dst = template((Ho, Wo)).to(images)
    try:
        A, b = similarity_2d(five_points(landmarks2d).to(images.dtype), dst.expand(images.shape[0], 5, 2))
    except ValueError as err:
        raise ValueError(f"landmarks2d: {err}") from None
    # grid_sample needs, for each crop pixel, the photo point it comes from: the inverse map.
    A_inv = torch.linalg.inv(A)
    # normalised coordinates (align_corners=False): u = 2 x / W - 1
    to_norm_in = torch.diag(torch.tensor([2.0 / W, 2.0 / H])).to(images)
    from_norm_out = torch.diag(torch.tensor([Wo / 2.0, Ho / 2.0])).to(images)
    lin = to_norm_in @ A_inv @ from_norm_out
    shift = (to_norm_in @ (A_inv @ (torch.tensor([Wo / 2.0, Ho / 2.0]).to(images) - b)[..., None]))[..., 0] - 1
    theta = torch.cat([lin, shift[..., None]], -1)
    grid = F.affine_grid(theta, (images.shape[0], images.shape[1], Ho, Wo), align_corners=False)
    crops = F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return crops, landmarks2d @ A.transpose(-1, -2) + b[:, None]
