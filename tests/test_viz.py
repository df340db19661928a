"""facelab.viz: grids, PNGs, mesh renders, plotly figures."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

from facelab.render.procedural import head_grid
from facelab.viz import image_grid, mesh3d, render_mesh, save_image, show_images


def test_image_grid_places_images():
    imgs = torch.stack([torch.full((3, 4, 5), v) for v in (0.1, 0.5, 0.9)])
    grid = image_grid(imgs, ncols=2, pad=1, pad_value=1.0)
    assert grid.shape == (3, 2 * 5 + 1, 2 * 6 + 1)
    assert torch.all(grid[:, 1:5, 1:6] == 0.1) and torch.all(grid[:, 1:5, 7:12] == 0.5) and torch.all(grid[:, 6:10, 1:6] == 0.9)
    assert torch.all(grid[:, 6:10, 7:12] == 1.0), "the empty cell is padding"


def test_save_image_round_trip(tmp_path):
    img = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0))
    path = save_image(img, tmp_path / "a" / "x.png")
    back = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("bad", [torch.zeros(3, 4, 4), torch.zeros(2, 4, 4, 4)])
def test_grid_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="images"):
        image_grid(bad)


def test_render_mesh_frames_the_mesh():
    verts, faces = head_grid(17, 21)
    imgs = render_mesh(torch.stack([verts, 0.5 * verts]), faces, image_size=48)
    assert imgs.shape == (2, 3, 48, 48)
    assert torch.all(imgs[:, :, 0, 0] == 1.0), "white background in the corner"
    covered = (imgs < 0.999).any(1).float().mean((1, 2))
    assert torch.allclose(covered[0], covered[1], atol=0.02), "each mesh is fitted to the image"
    shared = render_mesh(torch.stack([verts, 0.5 * verts]), faces, image_size=48, shared_frame=True)
    cov = (shared < 0.999).any(1).float().mean((1, 2))
    assert cov[1] < 0.4 * cov[0], "a shared frame keeps the half-size mesh small"


def test_mesh3d_and_show_images():
    verts, faces = head_grid(5, 5)
    fig = mesh3d(verts, faces, intensity=verts[:, 2])
    assert fig.data[0].type == "mesh3d" and len(fig.data[0].intensity) == verts.shape[0]
    f = show_images(torch.rand(3, 3, 8, 8), titles=["a", "b", "c"], ncols=2, landmarks=torch.rand(3, 68, 2) * 8)
    assert len(f.axes) == 4


def test_scalar_colors_follow_the_colour_map_and_leave_the_rest_grey():
    import matplotlib

    from facelab.viz import scalar_colors

    values = torch.tensor([[0.0, 1.0, 2.0, 5.0], [-1.0, 0.5, 2.0, 0.0]])
    got = scalar_colors(values, vmax=2.0, cmap="magma", mask=torch.tensor([True, True, True, False]))
    table = matplotlib.colormaps["magma"]
    want = torch.tensor([table(0.0)[:3], table(0.5)[:3], table(1.0)[:3]], dtype=torch.float32)
    torch.testing.assert_close(got[0, :3], want)
    torch.testing.assert_close(got[1, 0], want[0])  # clipped below at 0
    assert torch.all(got[:, 3] == 0.72)  # outside the mask
    with pytest.raises(ValueError, match="vmax"):
        scalar_colors(values, vmax=0.0)
    with pytest.raises(ValueError, match="mask"):
        scalar_colors(values, vmax=1.0, mask=torch.ones(3, dtype=torch.bool))


def test_show_images_adds_a_labelled_colour_bar():
    f = show_images(torch.rand(4, 3, 8, 8), ncols=2, colorbar=(3.0, "distance (mm)"))
    bar = [ax for ax in f.axes if ax.get_ylabel() == "distance (mm)"]
    assert len(f.axes) == 5 and len(bar) == 1 and bar[0].get_ylim() == (0.0, 3.0)
    with pytest.raises(ValueError, match="colorbar"):
        show_images(torch.rand(1, 3, 8, 8), colorbar=(0.0, "x"))
