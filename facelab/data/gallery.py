"""The README gallery: rows are identities, columns vary one factor at a time."""

from __future__ import annotations

import math

import torch

from facelab.data.compose import OCCLUDERS
from facelab.data.synth import make_suite
from facelab.render.sh import ambient_sh, directional_sh

# (column title, edit) pairs; each edit changes one factor of a neutral frontal scene.
GALLERY_COLUMNS = (
    "neutral", "happy", "surprise", "disgust",
    "yaw -45°", "yaw +75°", "pitch +20°",
    "light left", "light right",
    "glasses", "hand", "hair band",
)


def _light(direction, ambient=0.35, key=0.75) -> torch.Tensor:
    d = torch.tensor([direction], dtype=torch.float32)
    return ambient_sh(torch.tensor([ambient])) + directional_sh(d, torch.tensor([key]))


def gallery_scenes(collection, n_identities: int = 6):
    """Scenes (see :meth:`PhotoCollection.scene`) for ``n_identities`` x the gallery columns."""
    from facelab.data.suites import BU3DFE_EXPRESSIONS

    per_id = collection.config.images_per_identity
    first = torch.arange(n_identities) * per_id
    base = collection.scene(first)
    n_col = len(GALLERY_COLUMNS)
    scene = {k: (v.repeat_interleave(n_col, 0) if isinstance(v, torch.Tensor) else v) for k, v in base.items()}
    N = n_identities * n_col
    col = torch.arange(N) % n_col
    scene["blend"] = torch.zeros_like(scene["blend"])
    scene["angles"] = torch.zeros(N, 3)
    scene["scale_jitter"] = torch.zeros(N)
    scene["shift"] = torch.zeros(N, 2)
    scene["occluder"] = torch.zeros(N, dtype=torch.long)
    scene["blur"] = torch.zeros(N)
    scene["noise_std"] = torch.full((N,), 0.01)
    front = _light([0.0, 0.3, 1.0], ambient=0.6, key=0.45)[0]
    scene["sh"] = front.expand(N, 27).clone()
    protos = collection._prototypes
    for name, c in (("happy", 1), ("surprise", 2), ("disgust", 3)):
        scene["blend"][col == c] = protos[BU3DFE_EXPRESSIONS.index(name)]
    scene["angles"][col == 4, 1] = math.radians(-45)
    scene["angles"][col == 5, 1] = math.radians(75)
    scene["angles"][col == 6, 0] = math.radians(20)
    scene["sh"][col == 7] = _light([-1.0, 0.2, 0.6])[0]
    scene["sh"][col == 8] = _light([1.0, 0.2, 0.6])[0]
    for name, c in (("glasses", 9), ("hand", 10), ("hairband", 11)):
        scene["occluder"][col == c] = OCCLUDERS.index(name)
    return scene


def gallery(n_identities: int = 6, image_size: int = 96, seed: int = 0, resolution: str = "default") -> tuple[torch.Tensor, tuple[str, ...]]:
    """Render the gallery. Returns ``(images (n_identities * 12, 3, S, S), column titles)``."""
    collection = make_suite("webface", n_identities=max(n_identities, 1), images_per_identity=1,
                            image_size=image_size, seed=seed, resolution=resolution)
    out = collection.render_scene(gallery_scenes(collection, n_identities))
    return out["image"], GALLERY_COLUMNS
