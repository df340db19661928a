"""``facelab bench infer liu2018``: inference time of the Liu et al. 2018 network.

Times one forward pass (eval mode, ``torch.no_grad``) of the encoder, the two code
heads and both shape decoders, i.e. image -> ``c_Id``, ``c_Res`` and the full
``(B, V, 3)`` mm shape, for the ``quick`` and ``full`` architectures of
:mod:`facelab.train.liu2018` (``sphere_tiny`` on 64x64 images of the quick mesh;
``sphere20`` on 112x96 images of the default mesh). The weights are untrained: the
cost of a forward pass does not depend on their values. The classification head
is left out since it is used for training only.

After ``warmup`` untimed passes, the median of ``repeats`` timed passes is kept
(other processes share the CPU; the median is robust to their spikes while
staying honest about a loaded machine; the best is reported too). The paper
reports 4.79 ms/image on a GTX 1080 (Liu et al. 2018, Sec. 4), given here as
context only: it is a GPU figure.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from facelab.checks import check_choice, check_positive

__all__ = ["bench_infer", "build_profile_model", "INFER_MODELS", "INFER_PROFILES"]

INFER_MODELS = ("liu2018",)
INFER_PROFILES = ("quick", "full")
#: Liu et al. 2018's reported inference time, ms/image, on an NVIDIA GTX 1080
PAPER_MS_PER_IMAGE_GPU = 4.79
#: untimed passes before timing (allocator and oneDNN kernel selection warm-up)
WARMUP_PASSES = 1
#: timed passes at most for the full profile at batch sizes above FULL_BATCH_BOUND
FULL_LARGE_BATCH_REPEATS = 2
FULL_BATCH_BOUND = 8
DEFAULT_REPEATS = 5


def build_profile_model(profile: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    """The untrained ``Liu2018Model`` of a training profile, in eval mode, and its input ``(H, W)`` px.

    The architecture (encoder depth, embedding length, image size, mesh) is the one
    :func:`facelab.train.liu2018.train_liu2018` builds for that profile; no
    classification head.

    >>> net, (h, w) = build_profile_model("quick")
    >>> (h, w), net.training
    ((64, 64), False)
    """
    check_choice(profile, "profile", INFER_PROFILES)
    from facelab.models.liu2018 import Liu2018Config, Liu2018Model
    from facelab.models.sphereface import SphereConfig
    from facelab.morphable import SynthFacesConfig, build_synthfaces
    from facelab.train.liu2018 import PROFILE_DEFAULTS

    d = PROFILE_DEFAULTS[profile]
    size = tuple(d["image_size"])
    morphable = build_synthfaces(SynthFacesConfig(resolution=d["resolution"]))
    encoder = SphereConfig(d["depth"], embedding_dim=d["embedding_dim"], input_size=size)
    return Liu2018Model(morphable, Liu2018Config(encoder=encoder, n_classes=0)).eval(), size


def _time_forward(net: torch.nn.Module, images: torch.Tensor, repeats: int, warmup: int) -> tuple[float, float]:
    """Median and best wall-clock seconds of one ``net(images)`` under ``no_grad``."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            net(images)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def bench_infer(
    model: str = "liu2018",
    batch_sizes: tuple[int, ...] = (1, 64),
    profiles: tuple[str, ...] = INFER_PROFILES,
    repeats: int = DEFAULT_REPEATS,
    threads: int | None = None,
    seed: int = 0,
) -> dict:
    """Milliseconds per image of a forward pass (encoder + code heads + decoders) on the CPU.

    Args:
        model: network to time; only ``"liu2018"``.
        batch_sizes: images per forward pass, each timed separately.
        profiles: architectures, from ``"quick"`` and ``"full"``.
        repeats: timed passes per batch size (median kept) after one warm-up pass;
            the full profile's batches above 8 images take at most 2.
        threads: torch intra-op threads during the benchmark (None: leave as is).
        seed: seeds the random input images.

    Returns:
        ``{profile: {"batch_<B>_ms_per_image": float, "batch_<B>_best_ms_per_image":
        float, ..., "params": int, "image_size": [H, W], "n_verts": int, "encoder":
        str}, ..., "threads": int, "device": "cpu", "timing": str,
        "paper_ms_per_image_gpu": 4.79}``.

    >>> r = bench_infer(batch_sizes=(1,), profiles=("quick",), repeats=1)
    >>> r["quick"]["batch_1_ms_per_image"] > 0, r["device"]
    (True, 'cpu')
    """
    check_choice(model, "model", INFER_MODELS)
    check_positive(repeats, "repeats", integer=True)
    if isinstance(profiles, str) or not profiles:
        raise ValueError(f"profiles: expected a non-empty tuple of {INFER_PROFILES}, got {profiles!r}")
    for p in profiles:
        check_choice(p, "profiles", INFER_PROFILES)
    if isinstance(batch_sizes, int) or not batch_sizes:
        raise ValueError(f"batch_sizes: expected a non-empty tuple of positive ints, got {batch_sizes!r}")
    for b in batch_sizes:
        check_positive(b, "batch_sizes", integer=True)
    if threads is not None:
        check_positive(threads, "threads", integer=True)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result: dict = {p: _bench_profile(p, batch_sizes, repeats, seed) for p in profiles}
        result["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    result["device"] = "cpu"
    result["timing"] = f"median (and best) of timed forward passes after {WARMUP_PASSES} warm-up, eval mode, no_grad"
    result["paper_ms_per_image_gpu"] = PAPER_MS_PER_IMAGE_GPU
    return result


def _bench_profile(profile: str, batch_sizes, repeats: int, seed: int) -> dict:
    net, (h, w) = build_profile_model(profile)
    g = torch.Generator().manual_seed(seed)
    row: dict = {}
    for b in batch_sizes:
        images = torch.rand(b, 3, h, w, generator=g)
        n = min(repeats, FULL_LARGE_BATCH_REPEATS) if profile == "full" and b > FULL_BATCH_BOUND else repeats
        median, best = _time_forward(net, images, n, WARMUP_PASSES)
        row[f"batch_{b}_ms_per_image"] = round(1000 * median / b, 3)
        row[f"batch_{b}_best_ms_per_image"] = round(1000 * best / b, 3)
    row["params"] = sum(p.numel() for p in net.parameters())
    row["encoder_params"] = sum(p.numel() for p in net.encoder.parameters())
    row["image_size"] = [h, w]
    row["n_verts"] = int(net.mean_shape.shape[0])
    row["encoder"] = net.config.encoder.depth
    return row


if __name__ == "__main__":
    print(json.dumps(bench_infer(), indent=2))
