"""The held-out shape curve of the recipes that train on SynthFaces suites (Liu et al. 2018, Gao et al. 2020).

A training loss says how well a network fits the identities it trains on; the number a
reconstruction paper reports is the error on people it has never seen. Logged every
``train.heldout_every`` steps (:class:`~facelab.train.trainer.Trainer`'s ``heldout`` hook),
the error on a small fixed set of unseen identities shows when the two part: memorising
the training identities, or no identity learned at all (the curve stays at the mean face's).

The held-out set: each suite draws its world identity ids from its own range
(:data:`facelab.data.suites.ID_RANGES`) as ``first + arange(n_identities)``, so a suite of
``n_train + HELDOUT_IDENTITIES`` identities with one photo each, of which the last
:data:`HELDOUT_IDENTITIES` rows are kept, holds identities right after the ``n_train`` a run
trains on, never among them. The photos are drawn as the training suite's are (same
profile, seed, mesh and conditions).
"""

from __future__ import annotations

from typing import Callable

import torch

#: the identities of the held-out curve (one photo each): rendered once per run in seconds,
#: and measured in one encoder batch
HELDOUT_IDENTITIES = 48
HELDOUT_BATCH = 64  # encoder batch of the measurement (bounds its memory at large image sizes)


def heldout_photos(suite: str, cfg, n_train: int, photo_size, align_to: tuple[int, int] | None = None,
                   quantise: bool = True) -> dict[str, torch.Tensor]:
    """One photo of each of the :data:`HELDOUT_IDENTITIES` identities after the ``n_train`` training ones.

    Args:
        suite: the SynthFaces suite the run trains on (``"webface"``, ``"lp"``, ...).
        cfg: the recipe config (its ``profile``, ``resolution`` and ``train.seed`` draw the photos).
        n_train: identities of the training suite (held-out ids start right after them).
        photo_size: ``(H, W)`` px of the rendered photos.
        align_to: cut five-point aligned crops of this ``(H, W)`` from the photos, as the
            recipe's pools do (:func:`facelab.train.pools.align_batch`); None: the photos.
        quantise: round the images to 8 bits, as the in-memory pools store them.

    Returns:
        ``image (N, 3, H, W)`` float in [0, 1] (what the encoder sees), ``shape_identity (N, V, 3)``
        mm (the true neutral shapes) and ``identity (N,)`` long (world ids), ``N = HELDOUT_IDENTITIES``.

    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(profile="quick", resolution="quick", train=SimpleNamespace(seed=0))
    >>> photos = heldout_photos("lp", cfg, n_train=4, photo_size=(16, 16))
    >>> photos["image"].shape, photos["identity"][:2].tolist()
    (torch.Size([48, 3, 16, 16]), [2000004, 2000005])
    """
    from facelab.data import make_suite
    from facelab.train.pools import align_batch

    collection = make_suite(suite, profile=cfg.profile, image_size=tuple(photo_size), resolution=cfg.resolution,
                            seed=cfg.train.seed, n_identities=n_train + HELDOUT_IDENTITIES, images_per_identity=1)
    rows = torch.arange(n_train, n_train + HELDOUT_IDENTITIES)
    with torch.no_grad():
        batch = collection.batch(rows)
        if align_to:
            batch = align_batch(batch, tuple(align_to))
    image = batch["image"].clamp(0, 1)
    if quantise:
        image = (image * 255).round() / 255
    return {"image": image.float(), "shape_identity": batch["shape_identity"].float(),
            "identity": collection.table.identity[rows].clone()}


def aligned_rmse(shapes: torch.Tensor, truth: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
    """Per-shape RMS distance (mm) over the ``face_mask`` vertices after a rigid alignment.

    ``shapes``, ``truth``: ``(N, V, 3)`` mm; ``face_mask``: ``(V,)`` bool. Each shape is moved
    onto its truth by :func:`facelab.metrics.alignment.procrustes_batched` (rotation and
    translation, no scale: a reconstruction off in size is off), so pose and position cannot
    hide or add error. Returns ``(N,)`` float64.

    >>> truth = torch.randn(2, 5, 3)
    >>> float(aligned_rmse(truth + 3.0, truth, torch.ones(5, dtype=torch.bool)).max()) < 1e-6
    True
    """
    from facelab.metrics.alignment import procrustes_batched

    face = face_mask.bool().cpu()
    src, dst = shapes[:, face].double().cpu(), truth[:, face].double().cpu()
    R, t, _ = procrustes_batched(src, dst)
    moved = src @ R.transpose(1, 2) + t[:, None]
    return (moved - dst).pow(2).sum(-1).mean(-1).sqrt()


def shape_error(photos: dict, mean_shape: torch.Tensor, face_mask: torch.Tensor,
                identity_shape: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                extra: Callable[[torch.Tensor, torch.Tensor], dict] | None = None) -> Callable[[torch.nn.Module], dict]:
    """``model -> {"rmse_mm", "mean_face_rmse_mm", ...}``: the held-out error of a network's identity shapes.

    Args:
        photos: :func:`heldout_photos`' dict.
        mean_shape: ``(V, 3)`` mm, the morphable model's mean face.
        face_mask: ``(V,)`` bool, the region the error is taken over.
        identity_shape: ``(model, images (B, 3, H, W)) -> (B, V, 3)`` mm, the recipe's decoded
            identity shape; called under ``no_grad`` on the model's device, in chunks of
            :data:`HELDOUT_BATCH` images.
        extra: ``(shapes (N, V, 3), truth (N, V, 3)) -> {name: float}``, more figures (e.g. the
            recipe's training measure of the same shapes).

    Returns:
        The measure: ``rmse_mm``, the mean over identities of :func:`aligned_rmse`;
        ``mean_face_rmse_mm``, the same for the mean face (the floor a network that learned no
        identity sits at; computed once); then ``extra``'s figures. It draws no random numbers.
    """
    images, truth = photos["image"], photos["shape_identity"]
    floor = float(aligned_rmse(mean_shape.detach().float().cpu().expand_as(truth), truth, face_mask).mean())

    @torch.no_grad()
    def measure(model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        shapes = torch.cat([identity_shape(model, chunk.to(device)).float().cpu()
                            for chunk in images.split(HELDOUT_BATCH)])
        out = {"rmse_mm": float(aligned_rmse(shapes, truth, face_mask).mean()), "mean_face_rmse_mm": floor}
        if extra is not None:
            out.update(extra(shapes, truth))
        return out

    return measure
