"""Write a generated suite to disk and read it back.

Layout of a saved suite folder::

    manifest.json          format, version, suite config, counts, shard list
    shard_00000.npz        image (N, H, W, 3) uint8, plus one array per compact field
    ...
    preview.png            a grid of the first images

Heavy per-vertex truth (shapes, albedo) is not stored: it is a pure function of the
world identity and the blendshape weights, which are stored, and
:meth:`SavedCollection.truth` regenerates it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

CACHE_FORMAT = "facelab-synthfaces"
CACHE_VERSION = 1
SHARD_SIZE = 2048
COMPACT_FIELDS = ("label", "identity", "condition", "alpha_id", "alpha_exp", "beta", "blend", "pose", "sh",
                  "landmarks2d", "landmarks3d", "occluder", "yaw_deg")
MASK_FIELDS = ("face_mask", "occlusion_mask")


def save_collection(collection, out_dir: str | Path, batch_size: int = 128, progress: bool = True) -> Path:
    """Generate every image of ``collection`` and write the folder described above."""
    from facelab.viz import image_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards, buffer, n_in_buffer = [], {}, 0

    def flush():
        nonlocal buffer, n_in_buffer
        if not n_in_buffer:
            return
        name = f"shard_{len(shards):05d}.npz"
        arrays = {k: np.concatenate(v) for k, v in buffer.items()}
        tmp = out / (name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        tmp.replace(out / name)
        shards.append({"file": name, "images": n_in_buffer})
        buffer, n_in_buffer = {}, 0

    for i, batch in enumerate(collection.batches(batch_size, progress=progress)):
        img = (batch["image"].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        buffer.setdefault("image", []).append(img)
        for k in COMPACT_FIELDS:
            buffer.setdefault(k, []).append(batch[k].detach().cpu().numpy())
        for k in MASK_FIELDS:
            buffer.setdefault(k, []).append((batch[k] > 0.5).cpu().numpy())
        if i == 0:
            image_grid(batch["image"][:32], ncols=8, path=out / "preview.png")
        n_in_buffer += img.shape[0]
        if n_in_buffer >= SHARD_SIZE:
            flush()
    flush()
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "suite": collection.config.suite,
        "config": dataclasses.asdict(collection.config), "images": len(collection), "shards": shards,
        "condition_names": list(collection.condition_names),
    }
    if collection.table.pairs is not None:
        np.savez(out / "pairs.npz", pairs=collection.table.pairs.numpy(), issame=collection.table.issame.numpy(), fold=collection.table.fold.numpy())
        manifest["pairs"] = "pairs.npz"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


class SavedCollection(Dataset):
    """A suite written by :func:`save_collection`. Items are dicts of tensors
    (``image`` as float (3, H, W) in [0, 1], the compact fields and the masks)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no manifest; not a saved SynthFaces suite")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: corrupt manifest ({err})") from None
        if self.manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: format {self.manifest.get('format')!r}, expected {CACHE_FORMAT!r}")
        if self.manifest.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: version {self.manifest.get('version')!r} not supported (reads {CACHE_VERSION})")
        self._arrays = {}
        for shard in self.manifest["shards"]:
            file = self.root / shard["file"]
            if not file.exists():
                raise FileNotFoundError(f"{file}: shard listed in the manifest is missing")
            try:
                with np.load(file) as z:
                    for k in z.files:
                        self._arrays.setdefault(k, []).append(z[k])
            except (OSError, ValueError, EOFError) as err:
                raise ValueError(f"{file}: unreadable shard ({err})") from None
        self._arrays = {k: np.concatenate(v) for k, v in self._arrays.items()}
        if len(self._arrays.get("image", [])) != self.manifest["images"]:
            raise ValueError(f"{path}: manifest lists {self.manifest['images']} images, shards hold {len(self._arrays.get('image', []))}")
        self.pairs = None
        if "pairs" in self.manifest:
            with np.load(self.root / self.manifest["pairs"]) as z:
                self.pairs = {k: torch.from_numpy(z[k]) for k in z.files}

    def __len__(self) -> int:
        return self.manifest["images"]

    def __getitem__(self, i: int) -> dict:
        item = {k: torch.from_numpy(np.asarray(v[i])) for k, v in self._arrays.items()}
        item["image"] = item["image"].permute(2, 0, 1).float() / 255
        for k in MASK_FIELDS:
            item[k] = item[k].float()
        return item
