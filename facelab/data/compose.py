"""Image composition for SynthFaces photos: backgrounds, occluders, sensor effects.

Everything is vectorised over the batch and driven by per-image random numbers, so
that an image depends only on its own seed (book chapter ``book/03_rendering.ipynb``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Background: a colour gradient plus a low-resolution noise field, upsampled.
BACKGROUND_NOISE_GRID = 6
BACKGROUND_NOISE_AMPLITUDE = 0.15
BACKGROUND_SATURATION = 0.45

# Occluder kinds, in the order of the `occluder` code stored with each sample.
OCCLUDERS = ("none", "glasses", "hand", "hairband")

# Iris/eye landmark groups of the iBUG-68 convention.
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
BROWS = slice(17, 27)
MOUTH = slice(48, 68)
JAW = slice(0, 17)

# Images per slice in gaussian_blur: a slice of 64 x 64 RGB images stays in L2 across the taps.
BLUR_CHUNK = 16


def pixel_grid(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(x, y)``, each ``(1, H, W)``, in pixels."""
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return x[None], y[None]


def _muted(rgb: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` colours of brightness ``level`` with limited saturation."""
    grey = 0.2 + 0.6 * level[:, None]
    return (grey + BACKGROUND_SATURATION * (rgb - 0.5)).clamp(0, 1)


def backgrounds(u: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Random smooth backgrounds.

    Args:
        u: ``(B, 12 + 3 * G * G)`` uniforms in [0, 1) with ``G = BACKGROUND_NOISE_GRID``.

    Returns:
        ``(B, 3, H, W)`` float in [0, 1].

    >>> backgrounds(torch.rand(2, 12 + 3 * 36), 8, 6).shape
    torch.Size([2, 3, 8, 6])
    """
    B = u.shape[0]
    g = BACKGROUND_NOISE_GRID
    c0 = _muted(u[:, 0:3], u[:, 8])
    c1 = _muted(u[:, 3:6], u[:, 9])
    angle = 2 * math.pi * u[:, 6]
    x, y = pixel_grid(height, width, u.device)
    t = (torch.cos(angle)[:, None, None] * x / width + torch.sin(angle)[:, None, None] * y / height).clamp(0, 1)
    grad = c0[:, :, None, None] * (1 - t[:, None]) + c1[:, :, None, None] * t[:, None]
    raw = u[:, 12:12 + 3 * g * g].reshape(B, 3, g, g) - 0.5
    # Mostly luminance noise with a little colour, like cluttered indoor/outdoor scenes.
    noise = (0.7 * raw.mean(1, keepdim=True) + 0.3 * raw) * 2 * BACKGROUND_NOISE_AMPLITUDE
    noise = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    return (grad + noise).clamp(0, 1)


def _ellipse(x, y, cx, cy, rx, ry):
    """``(B, H, W)`` signed ellipse function: < 1 inside."""
    return ((x - cx[:, None, None]) / rx[:, None, None]) ** 2 + ((y - cy[:, None, None]) / ry[:, None, None]) ** 2


def occluder_masks(kind: torch.Tensor, landmarks2d: torch.Tensor, u: torch.Tensor, height: int, width: int):
    """Masks and colours of 2D occluders placed from the projected landmarks.

    Args:
        kind: ``(B,)`` long, index into :data:`OCCLUDERS`.
        landmarks2d: ``(B, 68, 2)`` float, px.
        u: ``(B, 8)`` uniforms for size, placement and colour.

    Returns:
        ``(mask (B, 1, H, W) float in {0, 1}, colour (B, 3, H, W) float)``.
    """
    B = kind.shape[0]
    x, y = pixel_grid(height, width, landmarks2d.device)
    x = x.expand(B, -1, -1)
    y = y.expand(B, -1, -1)
    mask = torch.zeros(B, height, width, device=landmarks2d.device)
    colour = torch.zeros(B, 3, height, width, device=landmarks2d.device)
    eye_r = landmarks2d[:, RIGHT_EYE].mean(1)
    eye_l = landmarks2d[:, LEFT_EYE].mean(1)
    iod = (eye_l - eye_r).norm(dim=-1).clamp_min(1.0)

    # Glasses: two lens rings and a bridge, dark frame.
    rx = 0.42 * iod * (0.9 + 0.3 * u[:, 0])
    ry = 0.32 * iod * (0.9 + 0.3 * u[:, 1])
    thick = 0.25 + 0.25 * u[:, 2]
    glasses = torch.zeros_like(mask, dtype=torch.bool)
    for centre in (eye_r, eye_l):
        e = _ellipse(x, y, centre[:, 0], centre[:, 1], rx, ry)
        glasses |= (e < (1 + thick)[:, None, None] ** 2) & (e > 1.0)
    mid = 0.5 * (eye_r + eye_l)
    bridge = ((x - mid[:, 0, None, None]).abs() < (0.5 * iod - 0.8 * rx)[:, None, None].clamp_min(1)) & (
        (y - mid[:, 1, None, None]).abs() < (0.06 * iod)[:, None, None].clamp_min(0.5)
    )
    glasses |= bridge
    is_glasses = (kind == OCCLUDERS.index("glasses"))[:, None, None]
    mask = torch.where(is_glasses & glasses, torch.ones_like(mask), mask)
    frame = (0.05 + 0.25 * u[:, 3:6])[:, :, None, None]

    # Hand: a skin-coloured blob over the mouth/chin side, with finger bumps.
    mouth = landmarks2d[:, MOUTH].mean(1)
    side = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
    hx = mouth[:, 0] + side * iod * (0.3 + 0.5 * u[:, 1])
    hy = mouth[:, 1] + iod * (0.1 + 0.4 * u[:, 2])
    hand = _ellipse(x, y, hx, hy, 0.75 * iod, 0.55 * iod) < 1
    is_hand = (kind == OCCLUDERS.index("hand"))[:, None, None]
    mask = torch.where(is_hand & hand, torch.ones_like(mask), mask)
    skin = torch.stack([0.55 + 0.35 * u[:, 3], 0.38 + 0.25 * u[:, 3], 0.28 + 0.2 * u[:, 3]], 1)[:, :, None, None]

    # Hair band: a band across the forehead above the brows.
    brow_y = landmarks2d[:, BROWS, 1].min(1).values
    top = brow_y - iod * (0.22 + 0.15 * u[:, 1])
    jaw_x = landmarks2d[:, JAW, 0]
    half_width = 0.5 * (jaw_x.amax(1) - jaw_x.amin(1))
    centre_x = 0.5 * (jaw_x.amax(1) + jaw_x.amin(1))
    band = ((y - top[:, None, None]).abs() < (0.12 + 0.08 * u[:, 2])[:, None, None] * iod[:, None, None]) & (
        (x - centre_x[:, None, None]).abs() < 0.95 * half_width[:, None, None]
    )
    is_band = (kind == OCCLUDERS.index("hairband"))[:, None, None]
    mask = torch.where(is_band & band, torch.ones_like(mask), mask)
    band_colour = (0.1 + 0.8 * u[:, 5:8])[:, :, None, None] if u.shape[1] >= 8 else frame

    colour = torch.where(is_glasses[:, None], frame.expand_as(colour), colour)
    colour = torch.where(is_hand[:, None], skin.expand_as(colour), colour)
    colour = torch.where(is_band[:, None], band_colour.expand_as(colour), colour)
    return mask[:, None], colour


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur.

    Args:
        images: ``(B, C, H, W)`` float.
        sigma: ``(B,)`` float, px; 0 leaves an image unchanged.

    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1
    >>> float(gaussian_blur(x, torch.tensor([1.0])).sum())  # blur keeps the mass
    1.0
    """
    radius = 3
    k = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp_min(1e-3)[:, None]
    w = torch.exp(-0.5 * (k[None] / s) ** 2)
    w = w / w.sum(1, keepdim=True)  # (B, K)
    # Horizontal then vertical pass, each a fixed-order sum over the taps (a convolution
    # routine picks its algorithm from the batch shape, so a pixel would depend on it).
    # Slices of BLUR_CHUNK images stay in cache across the taps.
    return torch.cat([_blur_taps(images[i : i + BLUR_CHUNK], w[i : i + BLUR_CHUNK], radius)
                      for i in range(0, images.shape[0], BLUR_CHUNK)])


def _blur_taps(images: torch.Tensor, w: torch.Tensor, radius: int) -> torch.Tensor:
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    taps = w[:, :, None, None, None]  # (B, K, 1, 1, 1)
    for axis in (-1, -2):
        n = out.shape[axis] - 2 * radius
        acc = taps[:, 0] * out.narrow(axis, 0, n)
        for j in range(1, 2 * radius + 1):
            acc = acc + taps[:, j] * out.narrow(axis, j, n)
        out = acc
    return out
