"""Differentiable rendering: SH Lambertian shading, rasterization (torch / PyTorch3D), the render layer.

Conventions (book chapter ``book/03_rendering.ipynb``; details in
:mod:`facelab.camera.projection` and :mod:`facelab.render.rasterize`):

* Model frame: mm, x = the subject's left, y up, z toward the camera.
* Screen space ``verts_screen: (B, V, 3)``: x, y in px from the image's top-left
  corner (x right, y down, pixel (i, j) centred at ``(j + .5, i + .5)``), z = depth
  in mm, larger = farther.
* Images are ``(B, C, H, W)`` float in [0, 1]; lighting ``sh: (B, 27)``.
"""

from facelab.render.rasterize import Fragments, interpolate, pytorch3d_available, rasterize
from facelab.render.renderer import Renderer, RenderOutput, RenderSettings, render
from facelab.render.sh import (
    DEFAULT_SH,
    ambient_sh,
    directional_sh,
    sample_sh,
    sh_from_random,
    sh_basis,
    sh_shading,
    shade,
    vertex_normals,
)

__all__ = [
    "Fragments", "rasterize", "interpolate", "pytorch3d_available",
    "RenderSettings", "RenderOutput", "render", "Renderer",
    "DEFAULT_SH", "sh_basis", "sh_shading", "shade", "ambient_sh", "directional_sh", "sample_sh", "sh_from_random", "vertex_normals",
]
