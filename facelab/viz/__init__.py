"""Pictures of faces: image grids, landmark overlays, mesh renders, interactive 3D, sliders and training curves.

Matplotlib for static figures, plotly ``Mesh3d`` for interactive 3D, ipywidgets for
sliders over 3DMM coefficients (book chapter ``book/02_morphable_models.ipynb``). Result
tables as HTML (:func:`show_table`, :func:`show_report`, in :mod:`facelab.viz.tables`) and a
guard against empty axes (:func:`check_figures`, :func:`watch_figures`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from facelab.checks import check_tensor
from facelab.viz.figures import check_figures, empty_axes, watch_figures
from facelab.viz.tables import Report, Table, html_table, markdown_report, show_report, show_table

# A soft frontal light used for "mesh only" renders: ambient plus light from the upper front.
VIEW_LIGHT_AMBIENT = 0.75
VIEW_LIGHT_DIRECTIONAL = 0.45
# iBUG-68 groups drawn with connected lines in landmark overlays.
LANDMARK_GROUPS = ((0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
                   (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True))


def image_grid(images: torch.Tensor, ncols: int = 8, pad: int = 2, path: str | Path | None = None, pad_value: float = 1.0) -> torch.Tensor:
    """Tile images into one picture.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        ncols: images per row.
        path: if given, also write a PNG there.

    Returns:
        ``(3, H', W')`` float.

    >>> image_grid(torch.zeros(5, 3, 4, 4), ncols=3, pad=1).shape
    torch.Size([3, 11, 16])
    """
    check_tensor(images, "images", ("B", 3, "H", "W"))
    B, C, H, W = images.shape
    ncols = max(1, min(ncols, B))
    nrows = math.ceil(B / ncols)
    grid = torch.full((C, nrows * (H + pad) + pad, ncols * (W + pad) + pad), pad_value, dtype=images.dtype)
    for k in range(B):
        r, c = divmod(k, ncols)
        grid[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = images[k].detach().cpu()
    if path is not None:
        save_image(grid, path)
    return grid


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write ``(3, H, W)`` float [0, 1] as a PNG (``.png``) with Pillow."""
    from PIL import Image

    check_tensor(image, "image", (3, "H", "W"))
    arr = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def show_images(images: torch.Tensor, titles=None, ncols: int = 8, size: float = 1.6, landmarks: torch.Tensor | None = None,
                colorbar: tuple[float, str] | None = None, cmap: str = "viridis"):
    """A matplotlib figure of ``images (B, 3, H, W)``, optionally with titles and
    ``landmarks (B, 68, 2)`` px overlaid. Returns the figure.

    ``colorbar=(vmax, label)`` adds a colour bar of ``cmap`` from 0 to ``vmax``, for images
    coloured with :func:`scalar_colors`.
    """
    import matplotlib.pyplot as plt

    check_tensor(images, "images", ("B", 3, "H", "W"))
    B = images.shape[0]
    ncols = max(1, min(ncols, B))
    nrows = math.ceil(B / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * images.shape[2] / images.shape[3]), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= B:
            continue
        ax.imshow(images[k].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        if landmarks is not None:
            draw_landmarks(ax, landmarks[k])
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    fig.tight_layout()
    if colorbar is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        vmax, label = colorbar
        if not vmax > 0:
            raise ValueError(f"colorbar: vmax must be > 0, got {vmax}")
        fig.colorbar(ScalarMappable(Normalize(0.0, vmax), cmap), ax=axes.ravel().tolist(), label=label, shrink=0.8)
    return fig


def scalar_colors(values: torch.Tensor, vmax: float, cmap: str = "viridis", mask: torch.Tensor | None = None,
                  rest: float = 0.72) -> torch.Tensor:
    """Per-vertex colours of a scalar field, for :func:`render_mesh` (a heat map on the mesh).

    Args:
        values: ``(B, V)`` float, e.g. mm; mapped linearly from 0 to ``vmax`` (> 0) on the
            matplotlib colour map ``cmap``, clipped at both ends.
        mask: ``(V,)`` bool, the vertices to colour; the others are grey ``rest`` (None: all).

    Returns:
        ``(B, V, 3)`` float RGB in [0, 1].

    >>> c = scalar_colors(torch.tensor([[0.0, 2.0, 9.0]]), vmax=2.0, mask=torch.tensor([True, True, False]))
    >>> c.shape, c[0, 2].tolist()
    (torch.Size([1, 3, 3]), [0.7200000286102295, 0.7200000286102295, 0.7200000286102295])
    """
    import matplotlib

    check_tensor(values, "values", ("B", "V"))
    if not vmax > 0:
        raise ValueError(f"vmax: must be > 0, got {vmax}")
    table = matplotlib.colormaps[cmap]
    unit = (values.detach().cpu().double() / vmax).clamp(0, 1).numpy()
    colors = torch.as_tensor(table(unit)[..., :3], dtype=torch.float32)
    if mask is not None:
        check_tensor(mask, "mask", (values.shape[1],), dtype_kind=None)
        colors[:, ~mask.cpu().bool()] = rest
    return colors.to(values.device)


def draw_landmarks(ax, landmarks: torch.Tensor, color: str = "lime", size: float = 4.0) -> None:
    """Draw ``(68, 2)`` px iBUG landmarks on a matplotlib axis, with contour lines."""
    lm = torch.as_tensor(landmarks).detach().cpu().numpy()
    for start, stop, closed in LANDMARK_GROUPS:
        pts = lm[start:stop]
        if closed:
            pts = np.concatenate([pts, pts[:1]])
        ax.plot(pts[:, 0], pts[:, 1], "-", color=color, lw=0.7)
    ax.scatter(lm[:, 0], lm[:, 1], s=size, c=color, edgecolors="none")


def plot_claims(claims: list[dict], ax=None, title: str | None = None):
    """Paired differences ``A - B`` of reproduced claims, with their 95 % intervals.

    Args:
        claims: entries as made by :func:`facelab.metrics.stats.claim` (``id``, ``metric``,
            ``estimate``, ``ci95``, ``better``, ``verdict``).
        ax: a matplotlib axis (default: a new figure).

    Returns:
        the axis. One row per claim; the dashed line is "no difference", and each label
        carries the claim's verdict. Differences are plotted as they are, so the picture
        needs no axis that starts at zero.

    >>> import matplotlib; matplotlib.use("Agg")
    >>> c = {"id": "L2", "metric": "micc_mm", "estimate": -0.05, "ci95": [-0.08, -0.02], "better": "lower", "verdict": "holds"}
    >>> len(plot_claims([c]).lines) >= 1
    True
    """
    import matplotlib.pyplot as plt

    if not claims:
        raise ValueError("claims: nothing to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 0.5 + 0.45 * len(claims)))
    colours = VERDICT_COLOURS
    for row, c in enumerate(claims):
        low, high = c["ci95"]
        ax.errorbar(c["estimate"], row, xerr=[[c["estimate"] - low], [high - c["estimate"]]], fmt="o", capsize=4,
                    color=colours.get(c["verdict"], "black"))
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(claims)), [f"{c['id']} ({c['metric']}, {c['better']} is better): {c['verdict']}" for c in claims])
    ax.invert_yaxis()
    ax.set_xlabel("paired difference A - B, with 95 % interval")
    if title:
        ax.set_title(title)
    return ax


VERDICT_COLOURS = {"holds": "tab:green", "within noise": "tab:gray", "reversed": "tab:red", "inactive": "tab:orange"}


def plot_dose_response(entries: list[dict], dose_key: str, ax=None, title: str | None = None, log_x: bool = True):
    """Paired differences of one claim at several doses of a loss weight, with 95 % intervals.

    Args:
        entries: claim entries (:func:`facelab.metrics.stats.claim`) of *one* comparison, each
            with its dose under ``dose_key`` (e.g. ``"lambda_r"``).
        dose_key: the entry key that holds the dose, also the x label.
        ax: a matplotlib axis (default: a new figure).
        log_x: a logarithmic dose axis (doses must then be > 0).

    Returns:
        the axis: one point per dose, coloured by its verdict, joined by a line; the dashed
        line is "no difference".

    >>> import matplotlib; matplotlib.use("Agg")
    >>> e = [{"lambda_r": w, "estimate": d, "ci95": [d - 0.1, d + 0.1], "verdict": "holds", "metric": "micc_mm",
    ...       "better": "lower"} for w, d in ((0.1, -0.3), (1.0, -0.2))]
    >>> [float(x) for x in plot_dose_response(e, "lambda_r").lines[0].get_xdata()]
    [0.1, 1.0]
    """
    import matplotlib.pyplot as plt

    if not entries:
        raise ValueError("entries: nothing to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    entries = sorted(entries, key=lambda e: e[dose_key])
    doses = [e[dose_key] for e in entries]
    ax.plot(doses, [e["estimate"] for e in entries], "-", color="0.6", zorder=1)
    for dose, e in zip(doses, entries):
        low, high = e["ci95"]
        ax.errorbar(dose, e["estimate"], yerr=[[e["estimate"] - low], [high - e["estimate"]]], fmt="o", capsize=4,
                    color=VERDICT_COLOURS.get(e["verdict"], "black"), label=e["verdict"], zorder=2)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(doses, [f"{d:g}" for d in doses])
    ax.minorticks_off()
    ax.set_xlabel(dose_key)
    ax.set_ylabel(f"{entries[0]['metric']}: A - B ({entries[0]['better']} is better)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_metrics(ax, logs: dict[str, dict[str, np.ndarray]], key: str, title: str | None = None,
                 step_offsets: dict[str, float] | None = None, **style) -> None:
    """Plot column ``key`` of several training logs against their steps, one line per log.

    Args:
        ax: a matplotlib axis.
        logs: ``{label: read_metrics(...)}`` (:func:`facelab.train.read_metrics`), each with ``step``.
        key: the logged metric to plot.
        title: the axis title; step_offsets: ``{label: steps}`` added to a log's steps (a
            stage that continues another). ``style``: passed to ``ax.plot``.

    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> _, ax = plt.subplots()
    >>> plot_metrics(ax, {"a": {"step": np.arange(3), "loss": np.ones(3)}}, "loss"); len(ax.lines)
    1
    """
    offsets = step_offsets or {}
    for label, log in logs.items():
        if key not in log:
            raise KeyError(f"key: {label!r} logged no {key!r}; it has {sorted(log)}")
        ax.plot(np.asarray(log["step"]) + offsets.get(label, 0), log[key], label=label, **style)
    ax.set_xlabel("step")
    if title is not None:
        ax.set_title(title)
    if len(logs) > 1:
        ax.legend(fontsize=7)


def view_light(n: int = 1, device=None) -> torch.Tensor:
    """``(n, 27)`` SH lighting for neutral mesh views: ambient plus an upper-front light."""
    from facelab.render.sh import ambient_sh, directional_sh

    direction = torch.tensor([[0.0, 0.5, 1.0]]).expand(n, 3)
    sh = ambient_sh(torch.full((n,), VIEW_LIGHT_AMBIENT)) + directional_sh(direction, torch.full((n,), VIEW_LIGHT_DIRECTIONAL))
    return sh.to(device)


def render_mesh(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor | None = None, image_size: int = 256,
                yaw_deg: float = 0.0, pitch_deg: float = 0.0, fill: float = 0.85, sh: torch.Tensor | None = None,
                shared_frame: bool = False) -> torch.Tensor:
    """Shade and render meshes centred in the image, for looking at them.

    Args:
        verts: ``(B, V, 3)`` float, mm (model frame).
        faces: ``(F, 3)`` long.
        colors: ``(B, V, 3)`` albedo in [0, 1]; light grey if None.
        shared_frame: frame all meshes with one camera (so sizes compare) instead of
            fitting each mesh to the image.

    Returns:
        ``(B, 3, S, S)`` float in [0, 1], white background.
    """
    from facelab.render import RenderSettings, render

    check_tensor(verts, "verts", ("B", "V", 3))
    B = verts.shape[0]
    if colors is None:
        colors = torch.full_like(verts, 0.72)
    angles = torch.deg2rad(torch.tensor([[pitch_deg, yaw_deg, 0.0]], dtype=verts.dtype, device=verts.device)).expand(B, 3)
    from facelab.camera import euler_to_rotation

    rotated = verts @ euler_to_rotation(angles).transpose(1, 2)
    lo, hi = rotated.amin(1), rotated.amax(1)
    if shared_frame:
        lo, hi = lo.amin(0, keepdim=True).expand_as(lo), hi.amax(0, keepdim=True).expand_as(hi)
    extent = (hi - lo)[:, :2].amax(1)
    scale = fill * image_size / extent
    centre = 0.5 * (lo + hi)
    tx = image_size / 2 - scale * centre[:, 0]
    ty = image_size / 2 + scale * centre[:, 1]
    pose = torch.cat([angles, tx[:, None], ty[:, None], scale[:, None]], 1)
    light = view_light(B, verts.device) if sh is None else sh
    out = render(verts, faces, colors, light, pose, settings=RenderSettings(image_size=(image_size, image_size)))
    return out.image * out.mask + (1 - out.mask)


def plot_mesh(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor | None = None, ax=None, image_size: int = 256, **view):
    """Show one mesh ``verts (V, 3)`` mm with matplotlib (a shaded render). Returns the axis."""
    import matplotlib.pyplot as plt

    check_tensor(verts, "verts", ("V", 3))
    img = render_mesh(verts[None], faces, None if colors is None else colors[None], image_size=image_size, **view)[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(img.permute(1, 2, 0).cpu().numpy())
    ax.axis("off")
    return ax


def mesh3d(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor | None = None, intensity: torch.Tensor | None = None,
           colorscale: str = "Viridis", title: str | None = None, colorbar_title: str | None = None):
    """An interactive plotly ``Mesh3d`` figure of one mesh.

    Args:
        verts: ``(V, 3)`` float, mm.
        faces: ``(F, 3)`` long.
        colors: ``(V, 3)`` RGB in [0, 1] per vertex, or
        intensity: ``(V,)`` scalar per vertex (e.g. an error map in mm), shown with ``colorscale``.

    >>> fig = mesh3d(torch.eye(3), torch.tensor([[0, 1, 2]]))
    >>> fig.data[0].type
    'mesh3d'
    """
    import plotly.graph_objects as go

    check_tensor(verts, "verts", ("V", 3))
    v = verts.detach().cpu().numpy()
    f = torch.as_tensor(faces).cpu().numpy()
    kwargs = dict(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], flatshading=False,
                  lighting=dict(ambient=0.45, diffuse=0.7, specular=0.1, roughness=0.8), lightposition=dict(x=0, y=100, z=300))
    if intensity is not None:
        kwargs.update(intensity=torch.as_tensor(intensity).detach().cpu().numpy(), colorscale=colorscale,
                      colorbar=dict(title=colorbar_title or ""))
    elif colors is not None:
        rgb = (torch.as_tensor(colors).detach().cpu().clamp(0, 1).numpy() * 255).astype(int)
        kwargs.update(vertexcolor=[f"rgb({r},{g},{b})" for r, g, b in rgb])
    else:
        kwargs.update(color="rgb(200,180,165)")
    fig = go.Figure(go.Mesh3d(**kwargs))
    # Camera looks at the face from the front (+z), y up.
    fig.update_layout(scene=dict(aspectmode="data", xaxis_visible=False, yaxis_visible=False, zaxis_visible=False,
                                 camera=dict(eye=dict(x=0, y=0, z=1.8), up=dict(x=0, y=1, z=0))),
                      margin=dict(l=0, r=0, t=30 if title else 0, b=0), height=420, title=title)
    return fig


_PLOTLY_JS_SHOWN = False


def show_plotly(fig) -> None:
    """Display a plotly figure that also works offline in the built book.

    The first call in a kernel embeds plotly.js in the output; later calls reuse it.
    In Colab (one iframe per output) each figure carries its own copy.
    """
    global _PLOTLY_JS_SHOWN
    from IPython.display import HTML, display

    in_colab = "google.colab" in __import__("sys").modules
    include = in_colab or not _PLOTLY_JS_SHOWN
    display(HTML(fig.to_html(include_plotlyjs=include, full_html=False)))
    _PLOTLY_JS_SHOWN = True


def png_bytes(image: torch.Tensor) -> bytes:
    """``image (3, H, W)`` float in [0, 1] as PNG bytes (for an ``ipywidgets.Image``).

    >>> png_bytes(torch.zeros(3, 4, 4))[:4]
    b'\\x89PNG'
    """
    import io

    from PIL import Image

    check_tensor(image, "image", (3, "H", "W"))
    buf = io.BytesIO()
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(buf, format="png")
    return buf.getvalue()


def camera_light_sliders(model, image_size: int = 192):
    """ipywidgets sliders over the camera (yaw, pitch, roll) and a directional light
    (azimuth, elevation, intensity, ambient), rendering the mean face live.

    ``model``: a :class:`~facelab.morphable.MorphableModel`. Returns the widget box; its
    ``.image`` attribute is the ``ipywidgets.Image`` (PNG) that every change redraws.
    Book chapter: ``book/03_rendering.ipynb``.
    """
    import ipywidgets as widgets

    from facelab.camera import euler_to_rotation
    from facelab.render import ambient_sh, directional_sh

    angles = {name: widgets.FloatSlider(value=0.0, min=-60, max=60, step=5, description=f"{name} °")
              for name in ("yaw", "pitch", "roll")}
    light = {"azimuth": widgets.FloatSlider(value=30.0, min=-90, max=90, step=5, description="light az °"),
             "elevation": widgets.FloatSlider(value=20.0, min=-60, max=60, step=5, description="light el °"),
             "intensity": widgets.FloatSlider(value=0.7, min=0, max=1.5, step=0.05, description="intensity"),
             "ambient": widgets.FloatSlider(value=0.4, min=0, max=1, step=0.05, description="ambient")}
    image = widgets.Image(format="png", width=image_size, height=image_size)

    def update(*_):
        rad = torch.deg2rad(torch.tensor([[angles["pitch"].value, angles["yaw"].value, angles["roll"].value]]))
        verts = model.mean_shape[None] @ euler_to_rotation(rad).transpose(1, 2)
        az, el = math.radians(light["azimuth"].value), math.radians(light["elevation"].value)
        direction = torch.tensor([[math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]])
        sh = directional_sh(direction, torch.tensor([light["intensity"].value])) + ambient_sh(torch.tensor([light["ambient"].value]))
        image.value = png_bytes(render_mesh(verts, model.faces, model.mean_albedo[None], image_size=image_size, sh=sh)[0])

    for s in [*angles.values(), *light.values()]:
        s.observe(update, names="value")
    update()
    box = widgets.HBox([widgets.VBox([*angles.values(), *light.values()]), image])
    box.image = image
    return box


def coefficient_sliders(model, n_shape: int = 6, n_exp: int = 4, image_size: int = 192):
    """ipywidgets sliders over the leading standardised 3DMM coefficients, with a live render.

    Each slider sets ``a_k = alpha_k / sigma_k`` in [-3, 3]. Returns the widget box; its
    ``.image`` attribute is the ``ipywidgets.Image`` (PNG) that every change redraws.
    Book chapter: ``book/02_morphable_models.ipynb``.
    """
    import ipywidgets as widgets

    shape_sliders = [widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description=f"id {k}") for k in range(min(n_shape, model.n_shape))]
    exp_sliders = [widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description=f"exp {k}") for k in range(min(n_exp, model.n_exp))]
    yaw = widgets.FloatSlider(value=20.0, min=-90, max=90, step=5, description="yaw °")
    image = widgets.Image(format="png", width=image_size, height=image_size)

    def update(*_):
        a = torch.zeros(1, model.n_shape)
        a[0, : len(shape_sliders)] = torch.tensor([s.value for s in shape_sliders])
        e = torch.zeros(1, model.n_exp)
        e[0, : len(exp_sliders)] = torch.tensor([s.value for s in exp_sliders])
        verts = model.shape(a * model.shape_std, e * model.exp_std)
        img = render_mesh(verts, model.faces, model.mean_albedo[None], image_size=image_size, yaw_deg=yaw.value)[0]
        image.value = png_bytes(img)

    for s in [*shape_sliders, *exp_sliders, yaw]:
        s.observe(update, names="value")
    update()
    box = widgets.HBox([widgets.VBox([*shape_sliders, *exp_sliders, yaw]), image])
    box.image = image
    return box
