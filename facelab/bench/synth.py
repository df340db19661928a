"""``facelab bench synth``: photo-collection generation throughput.

Two ways of generating, as a trainer would: in the main process (torch's own
threads), and streamed by a ``DataLoader`` with one worker per core (one torch
thread each). ``images_per_s`` is the faster of the two.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import torch

from facelab.data import BatchStream, make_suite

IMAGES_PER_IDENTITY = 16


def _suite(image_size: int, n_images: int, resolution: str):
    n_ids = n_images // IMAGES_PER_IDENTITY + 1
    return make_suite("webface", n_identities=n_ids, images_per_identity=IMAGES_PER_IDENTITY, image_size=image_size, resolution=resolution)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def bench_synth(image_size: int = 64, batch_size: int = 256, n_batches: int = 6, resolution: str = "default",
                workers: int | None = None, repeats: int = 3) -> dict:
    """Images per second generating ``webface`` photos (render, background, occluders, blur, noise).

    New identities keep arriving (16 photos each, shuffled), so the per-identity
    cache is exercised the way a trainer uses it.

    The main-process figure is the median of ``repeats`` passes.

    Returns a dict with ``images_per_s`` (the faster mode), ``main_process_images_per_s``,
    ``dataloader_images_per_s``, the settings and the mesh level photos were rasterized at.
    """
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    n = batch_size * n_batches
    suite = _suite(image_size, (repeats + 1) * n, resolution)

    rates = []
    with torch.no_grad():
        suite.batch(torch.arange(batch_size))  # warm-up: allocator, caches of the first batch
        order = torch.randperm(len(suite), generator=torch.Generator().manual_seed(0))
        for r in range(repeats):  # each repeat sees identities it has not generated yet
            start = time.perf_counter()
            for chunk in torch.split(order[(r + 1) * n: (r + 2) * n], batch_size):
                suite.batch(chunk)
            rates.append(n / (time.perf_counter() - start))
    main = statistics.median(rates)

    loader_rate = None
    if workers > 0:
        fresh = _suite(image_size, 2 * n, resolution)
        stream = BatchStream(fresh, batch_size=batch_size, shuffle=True, seed=1, epochs=1)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, worker_init_fn=_one_thread,
                                             prefetch_factor=2, persistent_workers=False)
        count = 0
        start = None
        for batch in loader:
            if start is None:  # the first batch includes worker start-up
                start = time.perf_counter()
                continue
            count += batch["image"].shape[0]
            if count >= n:
                break
        loader_rate = count / (time.perf_counter() - start)

    best = max(main, loader_rate or 0.0)
    return {
        "image_size": image_size, "batch_size": batch_size, "images": n, "resolution": resolution,
        "render_level": suite.render_level, "threads": torch.get_num_threads(), "workers": workers,
        "main_process_images_per_s": round(main, 1), "main_process_repeats": [round(r, 1) for r in rates],
        "dataloader_images_per_s": round(loader_rate, 1) if loader_rate else None,
        "images_per_s": round(best, 1),
    }


if __name__ == "__main__":
    print(json.dumps(bench_synth()))
