"""In-memory pools of rendered training images, cached on disk.

Small quick-profile suites are rendered once and sampled from memory; each recipe
says which sample fields it keeps (:func:`render_pool`) and draws batches with
:func:`pool_batches`, which depends only on the seed and the step number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from facelab.config import cache_dir
from facelab.io.checkpoint import atomic_torch_save
from facelab.train.trainer import step_indices

POOL_RENDER_BATCH = 64


def check_data_folders(kind: str, kinds: tuple[str, ...], folders: dict[str, tuple[str, str]],
                       generated: str = "images") -> None:
    """Check a recipe's ``data`` group: ``kind`` is one of ``kinds`` (the first generates its data, the
    second reads ``folders``); the folder kind needs every folder, the generating kind takes none.

    ``folders``: ``{field: (its value, what the folder is)}``; ``generated``: what the generating kind makes.

    >>> check_data_folders("real", ("synth", "real"), {"labelled": ("", "the labelled folder")})
    Traceback (most recent call last):
    ...
    ValueError: data.labelled: data.kind='real' needs the labelled folder
    """
    from facelab.checks import check_choice

    check_choice(kind, "data.kind", kinds)
    synth, real = kinds
    for name, (value, what) in folders.items():
        if kind == real and not value:
            raise ValueError(f"data.{name}: data.kind={real!r} needs {what}")
        if kind == synth and value:
            raise ValueError(f"data.{name}: {value!r} is read with data.kind={real!r} only "
                             f"(data.kind={synth!r} generates its {generated})")


def recipe_suite(suite: str, cfg, image_size: tuple[int, int] | None = None):
    """The training suite of a recipe config (``profile``, ``image_size``, ``resolution``,
    ``train.seed`` and optional ``n_identities`` / ``images_per_identity``; 0 = the suite's default).
    ``image_size`` overrides the config's (e.g. the photo size before aligned cropping)."""
    from facelab.data import make_suite

    sizes = {k: getattr(cfg, k) for k in ("n_identities", "images_per_identity") if getattr(cfg, k)}
    return make_suite(suite, profile=cfg.profile, image_size=image_size or cfg.image_size, resolution=cfg.resolution,
                      seed=cfg.train.seed, **sizes)


def pool_path(collection, keys: tuple[str, ...], tag: str, align_to: tuple[int, int] | None = None) -> Path:
    """``cache_dir()/pools/<suite>-<tag>-<digest>.pt``, keyed by the suite config, ``keys`` and ``align_to``."""
    key = json.dumps([dataclasses.asdict(collection.config), list(keys), tag] + ([list(align_to)] if align_to else []),
                     sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir() / "pools" / f"{collection.config.suite}-{tag}-{digest}.pt"


def align_batch(batch: dict, size: tuple[int, int]) -> dict:
    """``batch`` with ``image`` replaced by five-point aligned ``size`` crops (:func:`facelab.data.align.align_faces`).

    Needs ``image (B, 3, H, W)`` and ``landmarks2d (B, 68, 2)`` px; ``landmarks2d`` is moved
    into crop pixels. Other fields are kept.
    """
    from facelab.data.align import align_faces

    if "landmarks2d" not in batch:
        raise KeyError("batch: aligning crops needs the 'landmarks2d' field")
    crops, lm = align_faces(batch["image"], batch["landmarks2d"], size)
    return {**batch, "image": crops, "landmarks2d": lm}


def render_pool(collection, keys: tuple[str, ...], tag: str, cache: bool = True, progress: bool = False,
                align_to: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Every image of ``collection`` with the sample fields ``keys``, on the CPU.

    ``image`` is stored as ``(N, 3, H, W)`` uint8; the other fields as generated. With
    ``align_to = (H', W')`` the images are stored as aligned crops of that size
    (:func:`align_batch`). With ``cache`` the pool is read from / written to
    :func:`pool_path`; a damaged cache file is re-rendered, never trusted.
    """
    path = pool_path(collection, keys, tag, align_to)
    if cache and path.exists():
        try:
            pool = torch.load(path, weights_only=True)
            if set(pool) == set(keys) and pool["image"].shape[0] == len(collection):
                return pool
        except Exception:
            pass
    parts = {k: [] for k in keys}
    for batch in collection.batches(POOL_RENDER_BATCH, progress=progress):
        if align_to:
            batch = align_batch(batch, align_to)
        for k in keys:
            v = batch[k].detach().cpu()
            parts[k].append((v.clamp(0, 1) * 255).round().to(torch.uint8) if k == "image" else v)
    pool = {k: torch.cat(v) for k, v in parts.items()}
    if cache:
        atomic_torch_save(pool, path)
    return pool


def pool_batches(pool: dict[str, torch.Tensor], batch_size: int, seed: int = 0):
    """A callable ``step -> batch`` sampling ``pool`` by :func:`~facelab.train.trainer.step_indices`.

    >>> pool = {"image": torch.zeros(6, 3, 4, 4, dtype=torch.uint8), "label": torch.arange(6)}
    >>> pool_batches(pool, 4)(0)["image"].dtype
    torch.float32
    """
    n = pool["image"].shape[0]

    def get(step: int) -> dict:
        idx = step_indices(n, batch_size, step, seed)
        batch = {k: v[idx] for k, v in pool.items()}
        batch["image"] = batch["image"].float() / 255
        return batch

    return get
