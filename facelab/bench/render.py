"""``facelab bench render``: forward + backward throughput of the two rasterizer backends.

Each backend renders the same batch (the SynthFaces mean face at the requested
resolution, random poses, albedo and lighting) through :func:`facelab.render.render`
and back-propagates ``image.mean()`` to the vertices.  Times are the best of
``repeats`` runs (the torch backend after one warm-up) (other processes share the CPU, so the minimum
is the least noisy estimate).  Book chapter ``book/03_rendering.ipynb``.
"""

from __future__ import annotations

import json
import time

import torch

from facelab.camera import centered_pose
from facelab.render.rasterize import pytorch3d_available
from facelab.render.renderer import RenderSettings, render
from facelab.render.sh import sample_sh

__all__ = ["bench_render", "bench_mesh"]

#: random head poses of the benchmark batch: std of [pitch, yaw, roll], radians
POSE_STD = (0.2, 0.5, 0.15)


def bench_mesh(resolution: str = "default") -> tuple[torch.Tensor, torch.Tensor, str]:
    """The benchmark mesh: SynthFaces' mean face, or the equal-size procedural grid.

    Returns:
        ``verts: (V, 3)`` float mm, ``faces: (F, 3)`` long, and a label naming the mesh.
    """
    try:
        from facelab.morphable.synthfaces import SynthFacesConfig, build_synthfaces
    except ImportError:
        build_synthfaces = None
    if build_synthfaces is not None:
        model = build_synthfaces(SynthFacesConfig(resolution=resolution))
        return model.mean_shape, model.faces, f"synthfaces-{resolution}"
    from facelab.render.procedural import head_grid

    verts, faces = head_grid()
    return verts, faces, "procedural-grid"


def _time_backend(backend: str, verts, faces, albedo, sh, pose, size: int, repeats: int, warmup: int) -> tuple[float, float]:
    """Best wall-clock and best process-CPU seconds of one forward + backward."""
    settings = RenderSettings(image_size=(size, size), backend=backend)
    best_wall = best_cpu = float("inf")
    for i in range(warmup + repeats):
        v = verts.detach().clone().requires_grad_(True)
        wall, cpu = time.perf_counter(), time.process_time()
        render(v, faces, albedo, sh, pose, settings=settings).image.mean().backward()
        if i >= warmup:
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def bench_render(
    image_sizes: tuple[int, ...] = (64, 112),
    batch: int = 32,
    repeats: int = 5,
    pytorch3d_repeats: int = 1,
    resolution: str = "default",
    seed: int = 0,
    threads: int | None = 1,
) -> dict:
    """Images per second, forward + backward, for each backend and image size.

    Args:
        image_sizes: square image sizes, px.
        batch: images per render call.
        repeats: timed runs of the torch backend (best is kept).
        pytorch3d_repeats: timed runs of the PyTorch3D backend (it is slow on CPU).
        resolution: SynthFaces mesh resolution.
        seed: seeds the poses, albedo and lighting.
        threads: torch intra-op threads during the benchmark (None: leave as is).
            The default 1 compares like with like, since PyTorch3D's CPU
            rasterizer is single-threaded; on a busy machine one thread is also
            often faster for the torch backend, since waking a second thread for
            each of its many small ops costs more than it saves.

    Returns:
        ``{str(size): {"torch_images_per_s", "pytorch3d_images_per_s", "speedup",
        "speedup_cpu_time"}, ...}`` (ratios of the best wall-clock times and of the
        best process CPU times, the latter less sensitive to other load on the
        machine) plus ``"meta"`` (mesh, vertex/face counts, batch, threads, device).
        The PyTorch3D entries are None when it is not installed.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(image_sizes, batch, repeats, pytorch3d_repeats, resolution, seed)
    finally:
        torch.set_num_threads(before)


def _bench(image_sizes, batch, repeats, pytorch3d_repeats, resolution, seed) -> dict:
    verts, faces, label = bench_mesh(resolution)
    g = torch.Generator().manual_seed(seed)
    V = verts.shape[0]
    verts_b = verts[None].expand(batch, V, 3).contiguous()
    albedo = 0.4 + 0.4 * torch.rand(batch, 1, 3, generator=g).expand(batch, V, 3)
    sh = sample_sh(batch, g)
    angles = torch.randn(batch, 3, generator=g) * torch.tensor(POSE_STD)
    result: dict = {}
    have_p3d = pytorch3d_available()
    for size in image_sizes:
        pose = centered_pose(size, batch, angles=angles)
        t_torch, cpu_torch = _time_backend("torch", verts_b, faces, albedo, sh, pose, size, repeats, warmup=1)
        row = {"torch_images_per_s": round(batch / t_torch, 1), "pytorch3d_images_per_s": None, "speedup": None,
               "speedup_cpu_time": None}
        if have_p3d:
            t_p3d, cpu_p3d = _time_backend("pytorch3d", verts_b, faces, albedo, sh, pose, size, pytorch3d_repeats, warmup=0)
            row["pytorch3d_images_per_s"] = round(batch / t_p3d, 2)
            row["speedup"] = round(t_p3d / t_torch, 1)
            row["speedup_cpu_time"] = round(cpu_p3d / cpu_torch, 1)
        result[str(size)] = row
    result["meta"] = {"mesh": label, "n_verts": V, "n_faces": int(faces.shape[0]), "batch": batch,
                      "threads": torch.get_num_threads(), "device": "cpu", "timing": "best of repeats, forward+backward"}
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps(bench_render(threads=int(sys.argv[1]) if len(sys.argv) > 1 else 1), indent=2))
