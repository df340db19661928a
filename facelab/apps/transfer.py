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


def _recombine(model, identity: dict, c_exp: torch.Tensor, c_pose: torch.Tensor, c_lgt: torch.Tensor):
    """Decode ``identity``'s shape (with ``c_exp``) and albedo, render with ``c_pose`` / ``c_lgt``:
    ``(parts, render output)``."""
    out = {"shape": model.decode_shape(identity["c_id"], c_exp),
           "albedo": model.decode_albedo(identity["c_id"], identity["features"]),
           "pose": model.pose(c_pose), "sh": model.light(c_lgt)}
    return out, model.render(out)


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

    out, r = _recombine(model, a, expand(b["c_exp"]), expand(b["c_pose"]), expand(b["c_lgt"]))
    background = expand(img_b) if composite else torch.zeros_like(r.image)
    image = r.mask * r.image + (1 - r.mask) * background
    return {**out, "image": image, "render": r.image, "mask": r.mask}


@torch.no_grad()
def blend_transfer(model, codes_a: dict, codes_b: dict, amount: float = 1.0, take_pose: bool = True) -> dict:
    """Decode A's identity with an expression blended from A's (``amount=0``) to B's (``amount=1``).

    ``codes_a`` / ``codes_b``: :meth:`~facelab.models.gao2020.Gao2020Model.encode` outputs of one
    image each (batch 1). The albedo comes from A; pose and light from B when ``take_pose``,
    else from A. ``amount=1, take_pose=True`` is :func:`expression_transfer`.

    Returns the :meth:`~facelab.models.gao2020.Gao2020Model.render` output's fields ``image``
    ``(1, 3, H, W)`` and ``mask`` plus ``shape (1, V, 3)`` mm.
    """
    if not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"amount: expected a number in [0, 1], got {amount!r}")
    c_exp = torch.lerp(codes_a["c_exp"], codes_b["c_exp"], float(amount))
    source = codes_b if take_pose else codes_a
    out, r = _recombine(model, codes_a, c_exp, source["c_pose"], source["c_lgt"])
    return {"image": r.image, "mask": r.mask, "shape": out["shape"]}


def transfer_widget(model, images: torch.Tensor, titles=None, size: int = 192):
    """ipywidgets demo of :func:`expression_transfer`: pick photo A (identity) and photo B
    (expression, pose, light); a slider blends A's expression into B's.

    Args:
        model: a :class:`~facelab.models.gao2020.Gao2020Model` in eval mode.
        images: ``(N, 3, H, W)`` float [0, 1], N >= 2, the photos to choose from.
        titles: N labels for the drop-downs (default ``"photo k"``).
        size: px of the displayed images.

    Returns:
        The widget box; ``.controls`` holds the widgets (``a``, ``b``, ``amount``,
        ``take_pose``) and ``.image`` the ``ipywidgets.Image`` (PNG: A | result | B) that
        every change redraws.
    """
    import ipywidgets as widgets

    from facelab.viz import png_bytes

    H, W = model.config.image_size
    check_tensor(images, "images", ("N", 3, H, W))
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"images: need at least 2 photos to transfer between, got {n}")
    titles = list(titles) if titles is not None else [f"photo {k}" for k in range(n)]
    if len(titles) != n:
        raise ValueError(f"titles: expected {n} labels (one per image), got {len(titles)}")
    with torch.no_grad():
        codes = [model.encode(images[k:k + 1]) for k in range(n)]
    options = list(zip(titles, range(n)))
    controls = {"a": widgets.Dropdown(options=options, value=0, description="identity A"),
                "b": widgets.Dropdown(options=options, value=1, description="expression B"),
                "amount": widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="B's expr."),
                "take_pose": widgets.Checkbox(value=True, description="B's pose and light")}
    image = widgets.Image(format="png", width=3 * size, height=size)

    def update(*_):
        a, b = controls["a"].value, controls["b"].value
        out = blend_transfer(model, codes[a], codes[b], controls["amount"].value, controls["take_pose"].value)
        background = images[b:b + 1] if controls["take_pose"].value else images[a:a + 1]
        result = out["mask"] * out["image"] + (1 - out["mask"]) * background
        image.value = png_bytes(torch.cat([images[a], result[0], images[b]], dim=2))

    for w in controls.values():
        w.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([controls["a"], controls["b"]]),
                        widgets.HBox([controls["amount"], controls["take_pose"]]), image])
    box.controls, box.image = controls, image
    return box
