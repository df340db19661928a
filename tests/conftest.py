"""Shared fixtures. Device and dtype are switched by environment variables:

    FACELAB_TEST_DEVICE=cuda FACELAB_TEST_DTYPE=float64 pytest tests
"""

import os

import pytest
import torch

# Under pytest-xdist each worker gets one thread: two workers x two threads on a
# 2-core machine oversubscribe it, and loops of small ops then run several times slower.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(os.environ.get("FACELAB_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def dtype() -> torch.dtype:
    name = os.environ.get("FACELAB_TEST_DTYPE", "float32")
    return getattr(torch, name)


@pytest.fixture(scope="session")
def has_pytorch3d() -> bool:
    try:
        import pytorch3d  # noqa: F401
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def one_thread():
    """Small convolutions on a shared 2-core machine run several times faster on one thread.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
