"""``facelab bench synth``: photo-collection generation throughput."""

from __future__ import annotations

import json
import time

import torch

from facelab.data import make_suite

WARMUP_BATCHES = 1


def bench_synth(image_size: int = 64, batch_size: int = 256, n_batches: int = 4, resolution: str = "default") -> dict:
    """Images per second generating ``webface`` photos (render, background, occluders, noise).

    Identities repeat across batches as in training (16 images per identity), so the
    per-identity cache is exercised the way a trainer uses it.
    """
    suite = make_suite("webface", n_identities=(batch_size * (n_batches + WARMUP_BATCHES)) // 16 + 1,
                       images_per_identity=16, image_size=image_size, resolution=resolution)
    order = torch.randperm(len(suite), generator=torch.Generator().manual_seed(0))
    batches = torch.split(order[: batch_size * (n_batches + WARMUP_BATCHES)], batch_size)
    for b in batches[:WARMUP_BATCHES]:
        suite.batch(b)
    start = time.perf_counter()
    for b in batches[WARMUP_BATCHES:]:
        suite.batch(b)
    elapsed = time.perf_counter() - start
    n = batch_size * n_batches
    return {"image_size": image_size, "batch_size": batch_size, "images": n, "seconds": round(elapsed, 3),
            "images_per_s": round(n / elapsed, 1), "threads": torch.get_num_threads(), "resolution": resolution}


if __name__ == "__main__":
    print(json.dumps(bench_synth()))
