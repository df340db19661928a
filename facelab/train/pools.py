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
from facelab.train.checkpoint import atomic_torch_save
from facelab.train.trainer import step_indices

POOL_RENDER_BATCH = 64


def recipe_suite(suite: str, cfg):
    """The training suite of a recipe config (``profile``, ``image_size``, ``resolution``,
    ``seed`` and optional ``n_identities`` / ``images_per_identity``; 0 = the suite's default)."""
    from facelab.data import make_suite

    sizes = {k: getattr(cfg, k) for k in ("n_identities", "images_per_identity") if getattr(cfg, k)}
    return make_suite(suite, profile=cfg.profile, image_size=cfg.image_size, resolution=cfg.resolution,
                      seed=cfg.seed, **sizes)


def pool_path(collection, keys: tuple[str, ...], tag: str) -> Path:
    """``cache_dir()/pools/<suite>-<tag>-<digest>.pt``, keyed by the suite config and ``keys``."""
    key = json.dumps([dataclasses.asdict(collection.config), list(keys), tag], sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir() / "pools" / f"{collection.config.suite}-{tag}-{digest}.pt"


def render_pool(collection, keys: tuple[str, ...], tag: str, cache: bool = True, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every image of ``collection`` with the sample fields ``keys``, on the CPU.

    ``image`` is stored as ``(N, 3, H, W)`` uint8; the other fields as generated. With
    ``cache`` the pool is read from / written to :func:`pool_path`; a damaged cache
    file is re-rendered, never trusted.
    """
    path = pool_path(collection, keys, tag)
    if cache and path.exists():
        try:
            pool = torch.load(path, weights_only=True)
            if set(pool) == set(keys) and pool["image"].shape[0] == len(collection):
                return pool
        except Exception:
            pass
    parts = {k: [] for k in keys}
    for batch in collection.batches(POOL_RENDER_BATCH, progress=progress):
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
