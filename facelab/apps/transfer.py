"""Expression transfer with a disentangled encoder-decoder (Gao et al. 2020, section 5.3).

Book chapter: ``book/11_applications.ipynb``.
"""

from __future__ import annotations

import torch

from facelab.checks import check_tensor


def _codes(model, images: torch.Tensor, name: str) -> dict:
    H, W = model.config.image_size
    check_tensor(images, name, ("B", 3, H, W))
    return model.encode(images)


@torch.no_grad()
def expression_transfer(model, img_a: torch.Tensor, img_b: torch.Tensor, composite: bool = True) -> dict:
    """A's identity with B's expression, pose and lighting.

    The new face is decoded from ``[c_id(A), c_exp(B)]``; its albedo comes from A (with the
    CNN albedo decoder, from A's encoder features); it is rendered with B's pose and light.

    Args:
        model: a :class:`~facelab.models.gao2020.Gao2020Model` (or anything with its
            ``encode``, ``decode_shape``, ``decode_albedo``, ``pose``, ``light``, ``render``).
        img_a: ``(B, 3, H, W)`` float [0, 1]: the identities.
        img_b: ``(B, 3, H, W)`` float [0, 1]: the expressions, poses and lights (same B;
            a batch of 1 is broadcast).
        composite: paste the rendered face over ``img_b`` (else over black).

    Returns:
        ``image (B, 3, H, W)``, ``render (B, 3, H, W)`` (the face alone), ``mask (B, 1, H, W)``,
        ``shape (B, V, 3)`` mm (model frame), ``albedo (B, V, 3)``, ``pose (B, 6)``, ``sh (B, 27)``.

    >>> from facelab.models.gao2020 import Gao2020Config, Gao2020Model
    >>> from facelab.morphable import SynthFacesConfig, build_synthfaces
    >>> net = Gao2020Model(Gao2020Config(image_size=(32, 32)), build_synthfaces(SynthFacesConfig(resolution="quick"))).eval()
    >>> out = expression_transfer(net, torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32))
    >>> out["image"].shape, out["shape"].shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 1353, 3]))
    """
    a = _codes(model, img_a, "img_a")
    b = _codes(model, img_b, "img_b")
    n = img_a.shape[0]
    if img_b.shape[0] not in (1, n):
        raise ValueError(f"img_b: expected a batch of 1 or {n} (as img_a), got {img_b.shape[0]}")

    def expand(x):
        return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 and n > 1 else x

    out = {"shape": model.decode_shape(a["c_id"], expand(b["c_exp"])),
           "albedo": model.decode_albedo(a["c_id"], a["features"]),
           "pose": model.pose(expand(b["c_pose"])), "sh": model.light(expand(b["c_lgt"]))}
    r = model.render(out)
    background = expand(img_b) if composite else torch.zeros_like(r.image)
    image = r.mask * r.image + (1 - r.mask) * background
    return {**out, "image": image, "render": r.image, "mask": r.mask}
