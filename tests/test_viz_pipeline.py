"""The book's road-map diagram (facelab.viz.pipeline): chapters, highlights, thumbnails and where it is used."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from facelab.viz.pipeline import ARROWS, CHAPTER_STAGES, HIGHLIGHT_COLOUR, STAGES, _thumbnails, pipeline_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PICTURE_BOXES = {"photo", "shape"}  # drawn as an outlined image, not a filled box
FLAT = (torch.ones(3, 8, 8), torch.ones(3, 8, 8))


def _filled(fig, colour):
    return [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch) and p.get_fill()
            and to_hex(p.get_facecolor()) == to_hex(colour)]


@pytest.mark.parametrize("chapter", sorted(CHAPTER_STAGES))
def test_a_chapter_colours_exactly_its_boxes(chapter):
    fig = pipeline_figure(chapter, thumbnails=FLAT)
    expected = set(CHAPTER_STAGES[chapter]) - PICTURE_BOXES
    assert len(_filled(fig, HIGHLIGHT_COLOUR)) == len(expected)
    plt.close(fig)


def test_no_highlight_colours_nothing_and_every_box_is_drawn():
    fig = pipeline_figure(None, thumbnails=FLAT)
    assert _filled(fig, HIGHLIGHT_COLOUR) == []
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert all(label in labels for label, *_ in STAGES.values())
    plt.close(fig)


def test_bad_highlight_names_the_argument():
    with pytest.raises(ValueError, match="highlight: no chapter '99_nothing'"):
        pipeline_figure("99_nothing", thumbnails=FLAT)
    with pytest.raises(ValueError, match=r"highlight: unknown boxes \['nose'\]"):
        pipeline_figure(("shape", "nose"), thumbnails=FLAT)


def test_arrows_and_chapters_name_existing_boxes():
    assert {k for pair in ARROWS for k in pair} <= set(STAGES)
    assert {k for keys in CHAPTER_STAGES.values() for k in keys} <= set(STAGES)


def test_thumbnails_are_real_renders():
    photo, shape = _thumbnails()
    assert photo.shape == shape.shape == (3, 128, 128)
    background = (photo == 1).all(0)
    assert 0.1 < (~background).float().mean() < 0.9  # a face on a white background
    skin = photo[:, ~background]
    assert (skin[0] - skin[2]).mean() > 0.05  # coloured (albedo), not the grey shape render
    assert (shape[0] - shape[2]).abs().max() < 1e-6  # grey


def test_every_chapter_opens_with_its_captioned_road_map():
    chapters = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert {p.stem for p in chapters} == set(CHAPTER_STAGES)
    for path in chapters:
        cells = json.loads(path.read_text())["cells"][:5]
        roadmap = [c for c in cells if f'pipeline_figure("{path.stem}")' in "".join(c["source"])]
        assert len(roadmap) == 1, f"{path.name}: no road-map cell among its first five cells"
        figure = roadmap[0]["metadata"].get("mystnb", {}).get("figure", {})
        assert figure.get("caption") and figure.get("name"), f"{path.name}: the road map has no caption or name"


def test_the_introduction_shows_the_whole_pipeline():
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "images/pipeline.png" in intro and (ROOT / "book" / "images" / "pipeline.png").is_file()
    assert intro.startswith("# 1. ")
