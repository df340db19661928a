"""The book's road map: one diagram of the whole pipeline, with a chapter's parts highlighted.

Chapter 1 shows the whole diagram; every other chapter opens with the same diagram and its own
boxes in colour, so a reader always sees where the chapter sits. The two face thumbnails are
real SynthFaces renders (seeded), not clip art.

``python -m facelab.viz.pipeline book/images/roadmap`` writes ``pipeline.png`` and one
``<chapter>.png`` per entry of :data:`CHAPTER_STAGES`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

#: diagram boxes: key -> (label, (x, y) centre in axes units, width, height)
STAGES = {
    "photo": ("photo", (0.06, 0.62), 0.10, 0.30),
    "landmark_fit": ("landmark fit\n(classical, ch. 4)", (0.24, 0.20), 0.15, 0.13),
    "encoder": ("encoder E\nSphereFace CNN\n(ch. 5)", (0.22, 0.62), 0.13, 0.22),
    "c_id": ("identity code\n$c_{id}$", (0.39, 0.80), 0.11, 0.12),
    "c_res": ("residual code $c_{res}$,\npose, light, albedo", (0.39, 0.50), 0.13, 0.15),
    "decoders": ("decoders\n$D_{id}$, $D_{res}$\n(ch. 5, 9)", (0.555, 0.62), 0.11, 0.22),
    "shape": ("3D shape\n$\\bar{s} + \\Delta s_{id} + \\Delta s_{res}$\n(ch. 2)", (0.71, 0.62), 0.12, 0.30),
    "renderer": ("differentiable\nrenderer (ch. 3)", (0.86, 0.62), 0.11, 0.16),
    "losses": ("losses (ch. 6): recognition, 3D shape, photometric,\nlandmark, adversarial, smoothness, SIR",
               (0.60, 0.21), 0.36, 0.12),
    "recognition": ("verification\n(LFW, ch. 7)", (0.555, 0.90), 0.12, 0.11),
    "evaluation": ("reconstruction error\n(MICC, BU-3DFE, ch. 7)", (0.86, 0.90), 0.15, 0.11),
    "training": ("training: Liu et al. (ch. 8), Gao et al. (ch. 9), SIR (ch. 10)", (0.60, 0.05), 0.50, 0.06),
}
#: arrows between boxes (from, to)
ARROWS = (("photo", "encoder"), ("encoder", "c_id"), ("encoder", "c_res"), ("c_id", "decoders"), ("c_res", "decoders"),
          ("decoders", "shape"), ("shape", "renderer"), ("c_id", "recognition"), ("shape", "evaluation"),
          ("photo", "landmark_fit"), ("landmark_fit", "shape"), ("losses", "training"))
#: which boxes each chapter is about (chapter 1, the introduction, shows them all)
CHAPTER_STAGES = {
    "02_morphable_models": ("shape", "c_res"),
    "03_rendering": ("renderer", "photo"),
    "04_fitting": ("landmark_fit", "shape"),
    "05_encoder_decoder": ("encoder", "c_id", "c_res", "decoders"),
    "06_losses": ("losses",),
    "07_evaluation": ("recognition", "evaluation", "landmark_fit"),
    "08_three_phases": ("training", "encoder", "decoders", "losses"),
    "09_gao2020": ("training", "decoders", "renderer", "losses"),
    "10_sir": ("training", "c_id", "shape", "losses"),
    "11_applications": ("c_id", "c_res", "decoders", "shape"),
    "12_real_data": ("photo", "landmark_fit", "recognition", "evaluation"),
}
HIGHLIGHT_COLOUR = "#f4a259"  # warm orange: the chapter's boxes
QUIET_COLOUR = "#e8edf2"      # pale grey-blue: the rest of the pipeline
THUMBNAIL_SEED = 3            # a face whose expression and yaw are visible at thumbnail size
THUMBNAIL_SIZE = 128          # px


def _thumbnails(seed: int = THUMBNAIL_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured, posed, expressive SynthFaces render and its grey 3D shape: two ``(3, S, S)`` images."""
    from facelab.morphable import build_synthfaces
    from facelab.viz import render_mesh

    model = build_synthfaces()
    coeffs = model.sample(1, generator=torch.Generator().manual_seed(seed))
    verts = model.shape(coeffs["alpha_id"], coeffs["alpha_exp"] * 1.5)  # a clear expression at thumbnail size
    albedo = model.albedo(coeffs["beta"]).clamp(0, 1)
    photo = render_mesh(verts, model.faces, albedo, image_size=THUMBNAIL_SIZE, yaw_deg=20.0)[0]
    shape = render_mesh(verts, model.faces, image_size=THUMBNAIL_SIZE, yaw_deg=-25.0)[0]
    return photo, shape


def pipeline_figure(highlight: str | tuple[str, ...] | None = None, thumbnails=None):
    """Draw the pipeline; ``highlight``: a chapter stem of :data:`CHAPTER_STAGES`, box keys, or None (no box).

    Returns the matplotlib figure.

    >>> fig = pipeline_figure("06_losses", thumbnails=(torch.ones(3, 8, 8), torch.ones(3, 8, 8)))
    >>> len(fig.axes)
    3
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if isinstance(highlight, str):
        if highlight not in CHAPTER_STAGES:
            raise ValueError(f"highlight: no chapter {highlight!r}; expected one of {sorted(CHAPTER_STAGES)} or box keys")
        keys = set(CHAPTER_STAGES[highlight])
    else:
        keys = set() if highlight is None else set(highlight)
        unknown = keys - set(STAGES)
        if unknown:
            raise ValueError(f"highlight: unknown boxes {sorted(unknown)}; expected some of {list(STAGES)}")
    photo, shape = _thumbnails() if thumbnails is None else thumbnails
    fig = plt.figure(figsize=(11, 4.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.01, 1)  # room for the bottom box's border
    ax.axis("off")
    for key, (label, (x, y), w, h) in STAGES.items():
        if key in ("photo", "shape"):  # picture boxes: the label goes under the image
            ax.text(x, y - h / 2 - 0.03, label, ha="center", va="top", fontsize=8.5,
                    fontweight="bold" if key in keys else "normal")
            colour = HIGHLIGHT_COLOUR if key in keys else "#bbbbbb"
            ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.005", fill=False,
                                        edgecolor=colour, linewidth=3 if key in keys else 1))
            continue
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.008",
                                    facecolor=HIGHLIGHT_COLOUR if key in keys else QUIET_COLOUR,
                                    edgecolor="#555555", linewidth=0.8))
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5, fontweight="bold" if key in keys else "normal")
    for key, image in (("photo", photo), ("shape", shape)):
        _, (x, y), w, h = STAGES[key]
        inset = fig.add_axes((x - w / 2 + 0.004, y - h / 2 + 0.01, w - 0.008, h - 0.02))
        inset.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), aspect="equal")
        inset.axis("off")
    for a, b in ARROWS:
        (_, (xa, ya), wa, ha), (_, (xb, yb), wb, hb) = STAGES[a], STAGES[b]
        ax.add_patch(FancyArrowPatch(_edge(xa, ya, wa, ha, xb, yb), _edge(xb, yb, wb, hb, xa, ya),
                                     arrowstyle="-|>", mutation_scale=11, color="#444444", linewidth=0.9))
    ax.add_patch(FancyArrowPatch((0.915, 0.62), (0.985, 0.62), arrowstyle="-|>", mutation_scale=11, color="#444444"))
    ax.text(0.95, 0.53, "rendered image,\ncompared with\nthe photo", ha="center", va="top", fontsize=7.5, color="#444444")
    return fig


def _edge(x, y, w, h, tx, ty):
    """The point where the segment from a box's centre toward ``(tx, ty)`` leaves the box."""
    dx, dy = tx - x, ty - y
    scale = min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf"))
    return x + dx * scale * 1.04, y + dy * scale * 1.04


def write_roadmaps(folder: str | Path) -> list[Path]:
    """Write ``pipeline.png`` (no box highlighted) and one ``<chapter>.png`` per chapter into ``folder``."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    thumbs = _thumbnails()
    written = []
    for name, highlight in [("pipeline", None)] + [(c, c) for c in CHAPTER_STAGES]:
        fig = pipeline_figure(highlight, thumbnails=thumbs)
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for p in write_roadmaps(sys.argv[1] if len(sys.argv) > 1 else "book/images/roadmap"):
        print(p)
