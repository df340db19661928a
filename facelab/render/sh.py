"""Lambertian shading under 3-band spherical-harmonics (SH) lighting, and vertex normals.

Book chapter ``book/03_rendering.ipynb``.  As in Deep3DFaceRecon and Gao et al.
2020, the 9 basis functions already contain the Lambertian convolution factors
``a_l`` (``a0 = pi, a1 = 2 pi/sqrt(3), a2 = 2 pi/sqrt(8)``) times the real-SH
normalisation ``c_l`` (``c0 = 1/sqrt(4 pi), c1 = sqrt(3)/sqrt(4 pi),
c2 = 3 sqrt(5)/sqrt(12 pi)``), so that the irradiance at a normal ``n`` is simply
``sh_basis(n) @ gamma_c`` for each colour channel c.

Layout: ``sh: (B, 27)`` is channel-major, ``sh.view(B, 3, 9)[:, c]`` being the 9
coefficients of channel c (R, G, B) in the order
``1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2``.

Normals are expressed in the *camera* frame (x right, y up, z toward the camera),
so lighting is fixed relative to the camera as the face turns.
"""

from __future__ import annotations

import math

import torch

from facelab.checks import check_positive, check_tensor
from facelab.numerics import ordered_matmul

__all__ = [
    "SH_A", "SH_C", "LAMBERT_A", "DEFAULT_SH", "sh_basis", "sh_shading", "shade",
    "ambient_sh", "directional_sh", "sample_sh", "sh_from_random", "SH_RANDOM_DIMS", "vertex_normals", "NORMAL_EPS",
]

#: Lambertian convolution factors a_l used by Deep3DFaceRecon/Gao (l = 0, 1, 2)
SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
#: real-SH normalisation constants c_l (l = 0, 1, 2)
SH_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))
#: the exact clamped-cosine kernel's SH coefficients A_l (Ramamoorthi & Hanrahan 2001)
LAMBERT_A = (math.pi, 2 * math.pi / 3, math.pi / 4)
#: band of each of the 9 basis functions
_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
#: guards the division when normalising zero-length normals
NORMAL_EPS = 1e-12

#: default lighting's ambient level and frontal key light (white)
DEFAULT_AMBIENT = 0.6
DEFAULT_KEY = 0.4


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 Lambert-convolved SH basis functions at unit normals.

    Args:
        normals: ``(..., 3)`` float, unit vectors (camera frame).

    Returns:
        ``(..., 9)`` float.

    >>> sh_basis(torch.tensor([0.0, 0.0, 1.0]))[:3]  # [sqrt(pi)/2, 0, sqrt(pi)]
    tensor([0.8862, 0.0000, 1.7725])
    """
    check_tensor(normals, "normals")
    if normals.dim() < 1 or normals.shape[-1] != 3:
        raise ValueError(f"normals: expected shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    k0 = SH_A[0] * SH_C[0]
    k1 = SH_A[1] * SH_C[1]
    k2 = SH_A[2] * SH_C[2]
    return torch.stack([
        torch.full_like(x, k0),
        -k1 * y,
        k1 * z,
        -k1 * x,
        k2 * x * y,
        -k2 * y * z,
        0.5 * k2 / math.sqrt(3.0) * (3 * z * z - 1),
        -k2 * x * z,
        0.5 * k2 * (x * x - y * y),
    ], dim=-1)


def sh_shading(normals: torch.Tensor, sh: torch.Tensor, batch_invariant: bool = False) -> torch.Tensor:
    """Per-vertex RGB irradiance under SH lighting.

    Args:
        normals: ``(B, V, 3)`` float, unit, camera frame.
        sh: ``(B, 27)`` float, channel-major SH coefficients.
        batch_invariant: sum the 9 bands in a fixed order with element-wise ops, so that
            each image's bits never depend on the batch it is shaded in
            (:func:`facelab.numerics.ordered_matmul`); about 1.5x slower under autograd.

    Returns:
        ``(B, V, 3)`` float irradiance (unclamped; multiply by albedo for colour).

    >>> n = torch.tensor([[[0.0, 0.0, 1.0]]])
    >>> sh_shading(n, DEFAULT_SH[None]).round(decimals=3)  # 0.6 ambient + ~0.4 key light
    tensor([[[1.0250, 1.0250, 1.0250]]])
    """
    B = normals.shape[0] if normals.dim() == 3 else None
    check_tensor(normals, "normals", ("B", "V", 3))
    check_tensor(sh, "sh", (B, 27))
    if batch_invariant:
        return ordered_matmul(sh_basis(normals), sh.reshape(-1, 3, 9).transpose(1, 2))
    return torch.einsum("bvk,bck->bvc", sh_basis(normals), sh.reshape(-1, 3, 9))


def shade(albedo: torch.Tensor, normals: torch.Tensor, sh: torch.Tensor, batch_invariant: bool = False) -> torch.Tensor:
    """Lambertian colour ``albedo * irradiance``.

    Args:
        albedo: ``(B, V, 3)`` float, linear RGB.
        normals: ``(B, V, 3)`` float, unit, camera frame.
        sh: ``(B, 27)`` float.
        batch_invariant: see :func:`sh_shading`.

    Returns:
        ``(B, V, 3)`` float colour (unclamped).

    >>> n = torch.tensor([[[0.0, 0.0, 1.0]]])
    >>> shade(torch.full((1, 1, 3), 0.5), n, ambient_sh(torch.tensor([1.0])))
    tensor([[[0.5000, 0.5000, 0.5000]]])
    """
    check_tensor(albedo, "albedo", tuple(normals.shape) if normals.dim() == 3 else ("B", "V", 3))
    return albedo * sh_shading(normals, sh, batch_invariant)


def ambient_sh(level: torch.Tensor) -> torch.Tensor:
    """SH coefficients of uniform white light with irradiance ``level``.

    Args:
        level: ``(B,)`` float, or ``(B, 3)`` per RGB channel.

    Returns:
        ``(B, 27)`` float.

    >>> ambient_sh(torch.tensor([1.0])).reshape(3, 9)[0, 0].item() * SH_A[0] * SH_C[0]
    1.0
    """
    check_tensor(level, "level")
    if level.dim() == 1:
        level = level[:, None].expand(-1, 3)
    check_tensor(level, "level", ("B", 3))
    sh = level.new_zeros(level.shape[0], 3, 9)
    sh[:, :, 0] = level / (SH_A[0] * SH_C[0])
    return sh.reshape(-1, 27)


def directional_sh(direction: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """SH coefficients that approximate a distant light: irradiance ``~ I max(0, n.d)``.

    The light's radiance has real-SH coefficients ``I Y_lm(d)``; convolving with the
    exact clamped-cosine kernel ``A_l`` and dividing by the ``a_l`` already inside
    :func:`sh_basis` gives ``gamma_lm = I * sh_basis(d)_lm * A_l / a_l**2``.  The
    3-band truncation is accurate to about 0.1 I (at n = d it gives 1.0625 I).

    Args:
        direction: ``(B, 3)`` float, toward the light, camera frame (normalised here).
        intensity: ``(B,)`` or ``(B, 3)`` float, RGB.

    Returns:
        ``(B, 27)`` float.

    >>> d = torch.tensor([[0.0, 0.0, 1.0]])
    >>> sh_shading(d[:, None], directional_sh(d, torch.tensor([1.0])))[0, 0, 0].round(decimals=2)
    tensor(1.0600)
    """
    check_tensor(direction, "direction", ("B", 3))
    B = direction.shape[0]
    check_tensor(intensity, "intensity")
    if intensity.dim() == 1:
        intensity = intensity[:, None].expand(-1, 3)
    check_tensor(intensity, "intensity", (B, 3))
    d = direction / direction.norm(dim=-1, keepdim=True).clamp_min(NORMAL_EPS)
    factor = torch.tensor([LAMBERT_A[b] / SH_A[b] ** 2 for b in _BAND], dtype=d.dtype, device=d.device)
    coeff = sh_basis(d) * factor  # (B, 9)
    return (intensity[:, :, None] * coeff[:, None, :]).reshape(B, 27)


def _default_sh() -> torch.Tensor:
    frontal = torch.tensor([[0.0, 0.0, 1.0]])
    return (ambient_sh(torch.tensor([DEFAULT_AMBIENT])) + directional_sh(frontal, torch.tensor([DEFAULT_KEY])))[0]


#: ``(27,)`` default white lighting: ambient 0.6 plus a frontal key light of 0.4
DEFAULT_SH = _default_sh()

#: ranges of :func:`sample_sh`'s random lighting
SAMPLE_AMBIENT = (0.35, 0.8)
SAMPLE_KEY = (0.2, 0.7)
SAMPLE_CONE_DEG = 70.0  # key light within this angle of the camera axis
SAMPLE_TINT_STD = 0.06  # per-channel colour tint of the lights


#: random numbers :func:`sh_from_random` takes per lighting: (uniforms, normals)
SH_RANDOM_DIMS = (4, 6)


def sample_sh(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Random realistic lighting: ambient plus one dominant key light, slightly coloured.

    Ambient level ~ U(0.35, 0.8), key-light intensity ~ U(0.2, 0.7) from a direction
    within 70 degrees of the camera axis (camera frame), each tinted per channel by
    ``1 + 0.06 N(0, 1)`` (clipped to +-15 %).

    Args:
        n: number of lightings B.
        generator: a ``torch.Generator`` for reproducibility.

    Returns:
        ``(n, 27)`` float SH coefficients.

    >>> g = torch.Generator().manual_seed(0)
    >>> sample_sh(4, g).shape
    torch.Size([4, 27])
    """
    check_positive(n, "n", integer=True)
    u = torch.rand(n, SH_RANDOM_DIMS[0], generator=generator, dtype=torch.float64)
    z = torch.randn(n, SH_RANDOM_DIMS[1], generator=generator, dtype=torch.float64)
    return sh_from_random(u, z).to(dtype=dtype, device=device)


def sh_from_random(u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The deterministic part of :func:`sample_sh`.

    Args:
        u: ``(n, 4)`` uniforms in [0, 1); z: ``(n, 6)`` standard normals
            (:data:`SH_RANDOM_DIMS`). Callers that need one random stream per image
            (the photo collections) draw these per image.

    Returns:
        ``(n, 27)`` SH coefficients, in ``u``'s dtype.
    """
    check_tensor(u, "u", ("n", SH_RANDOM_DIMS[0]))
    check_tensor(z, "z", (u.shape[0], SH_RANDOM_DIMS[1]))
    z = z.to(u.dtype)

    def between(lo: float, hi: float, t: torch.Tensor) -> torch.Tensor:
        return lo + (hi - lo) * t

    def tint(normals: torch.Tensor) -> torch.Tensor:
        return (1 + SAMPLE_TINT_STD * normals).clamp(0.85, 1.15)

    ambient = between(*SAMPLE_AMBIENT, u[:, 0])[:, None] * tint(z[:, 0:3])
    key = between(*SAMPLE_KEY, u[:, 1])[:, None] * tint(z[:, 3:6])
    # uniform on the spherical cap around +z
    cos_t = between(math.cos(math.radians(SAMPLE_CONE_DEG)), 1.0, u[:, 2])
    phi = 2 * math.pi * u[:, 3]
    sin_t = torch.sqrt(1 - cos_t**2)
    direction = torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], dim=-1)
    return ambient_sh(ambient) + directional_sh(direction, key)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Each vertex gets the sum of the (unnormalised) cross products of its faces,
    i.e. face normals weighted by twice their area; counter-clockwise faces give
    normals on the side they are counter-clockwise from.

    Args:
        verts: ``(B, V, 3)`` float (any length unit).
        faces: ``(F, 3)`` long vertex indices.

    Returns:
        ``(B, V, 3)`` float unit normals (zero for vertices in no face).

    >>> v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    >>> vertex_normals(v, torch.tensor([[0, 1, 2]]))[0, 0]
    tensor([0., 0., 1.])
    """
    check_tensor(verts, "verts", ("B", "V", 3))
    check_tensor(faces, "faces", (None, 3), dtype_kind="int")
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), |n| = 2 area
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals = normals.index_add(1, faces[:, k], face_n)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(NORMAL_EPS)
