"""facelab.viz tables (HTML that renders in Jupyter and the book) and the empty-axes guard."""

import html.parser

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from facelab.viz import (check_figures, empty_axes, html_table, markdown_report, show_report, show_table,
                         watch_figures)


class _Cells(html.parser.HTMLParser):
    """Counts rows and the cells of each row in an HTML table."""

    def __init__(self):
        super().__init__()
        self.rows, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            self.rows[-1] += 1

    def handle_data(self, data):
        self.text.append(data)


def _cells(markup: str) -> _Cells:
    parser = _Cells()
    parser.feed(markup)
    return parser


def test_dict_rows_give_header_plus_one_row_each():
    rows = {"mean face": {"rmse": 4.0, "lfw": None}, "oracle": {"rmse": 0.3456, "lfw": float("nan")}, "none": None}
    table = html_table(rows, row_header="method", caption="Baselines (mm)")
    parsed = _cells(table._repr_html_())
    assert parsed.rows == [3, 3, 3, 3], "header + 3 rows, each with the row name and 2 columns"
    assert (table.n_rows, table.n_cols) == (3, 3)
    text = "".join(parsed.text)
    assert "0.346" in text and "–" in text and "Baselines (mm)" in text
    assert "<caption>" in table._repr_html_()
    assert "|" not in repr(table), "the text form is not a Markdown table"


def test_list_rows_and_scalar_types():
    table = html_table([[np.float32(0.5), torch.tensor(2.25), 3, "a"]], columns=["a", "b", "c", "d"], floatfmt="{:.1f}")
    assert table.body == [["0.5", "2.2", "3", "a"]]
    table = html_table([{"K": 5, "nmi": 0.25}, {"K": 10, "nmi": 0.5}], floatfmt="{:.2f}")
    assert table.header == ["K", "nmi"] and table.body[1] == ["10", "0.50"]
    assert _cells(table._repr_html_()).rows == [2, 2, 2]


def test_cells_are_escaped_and_backticks_become_code():
    table = html_table({"<script>alert(1)</script>": {"x & y": "a < b", "`c_id`": "`shape`"}})
    markup = table._repr_html_()
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert "a &lt; b" in markup and "x &amp; y" in markup
    assert "<code>shape</code>" in markup and "<code>c_id</code>" in markup


@pytest.mark.parametrize("kwargs, argument", [
    (dict(rows={}), "rows"),
    (dict(rows=[]), "rows"),
    (dict(rows="| a |"), "rows"),
    (dict(rows={"a": [1, 2]}), "rows"),
    (dict(rows={"a": None}), "rows"),
    (dict(rows=[[1, 2]]), "columns"),
    (dict(rows=[[1, 2]], columns=["a"]), "rows"),
    (dict(rows={"a": {"x": 1.0}}, floatfmt="{:d}"), "floatfmt"),
    (dict(rows={"a": {"x": 1.0}}, floatfmt=3), "floatfmt"),
    (dict(rows={"a": {"x": 1.0}}, caption=["c"]), "caption"),
])
def test_bad_input_names_the_argument(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        html_table(**kwargs)


def test_no_markdown_repr():
    # Jupyter would prefer text/markdown over text/html and show the raw table again.
    assert not hasattr(html_table({"a": {"x": 1}}), "_repr_markdown_")
    assert not hasattr(markdown_report("a"), "_repr_markdown_")


def test_markdown_report_turns_tables_and_headings_into_html():
    text = ("# Ablation on SynthFaces (quick profile)\n\n**Phases** (mm)\n\n| stage | rmse | lfw |\n"
            "| --- | --- | --- |\n| I | 1.000 | – |\n| III | 0.9 | 0.7 |\n\nTime: 3 s\n")
    report = markdown_report(text)
    markup = report._repr_html_()
    assert "<h1" not in markup and "#" not in markup
    assert "<strong>Ablation on SynthFaces (quick profile)</strong>" in markup
    assert "---" not in markup and "| I |" not in markup
    assert len(report.tables) == 1 and _cells(markup).rows == [3, 3, 3]
    assert report.tables[0].body == [["I", "1.000", "–"], ["III", "0.9", "0.7"]]


def test_markdown_report_keeps_lists_as_lists():
    # each "- " line is an item; a line without a marker continues the item above; "**x**" and "-0.5" are not items
    report = markdown_report("- first item\n  runs on\n- **second** item\n\n**bold** paragraph\n\n-0.5 mm is not an item")
    kinds = [type(b).__name__ for b in report.blocks]
    assert kinds == ["Bullets", "str", "str"]
    assert report.blocks[0].items == ["first item runs on", "**second** item"]
    markup = report._repr_html_()
    assert "<ul>\n<li>first item runs on</li>\n<li><strong>second</strong> item</li>\n</ul>" in markup
    assert "<p>- " not in markup
    assert repr(report).startswith("- first item runs on\n- second item\n\nbold paragraph")


def test_markdown_report_rejects_ragged_tables_and_non_text():
    with pytest.raises(ValueError, match="text: table row 1"):
        markdown_report("| a | b |\n|---|---|\n| 1 |")
    with pytest.raises(TypeError, match="text"):
        markdown_report(None)
    with pytest.raises(ValueError, match="text"):
        markdown_report("\n\n")


def test_show_functions_print_text_outside_ipython(capsys):
    show_table({"a": {"x": 1.0}}, caption="cap")
    show_report("**b**")
    out = capsys.readouterr().out
    assert out.startswith("cap\n") and "1.000" in out and "b" in out and "**" not in out


def test_check_figures_finds_a_planted_empty_axes():
    plt.close("all")
    fig, axes = plt.subplots(1, 3)
    axes[0].plot([0, 1]); axes[1].imshow(np.zeros((2, 2)))
    axes[2].set_title("forgotten")
    try:
        assert empty_axes() == ["figure %d, axes 3 of 3 ('forgotten')" % fig.number]
        with pytest.raises(ValueError, match="figures: empty axes in figure .*axes 3 of 3"):
            check_figures()
        axes[2].set_visible(False)  # hidden on purpose: fine
        check_figures()
        axes[2].set_visible(True); axes[2].axis("off")  # blank cell of a grid: fine
        check_figures()
        axes[2].axis("on"); axes[2].bar([0], [1])
        check_figures([fig])
    finally:
        plt.close(fig)


def test_duplicated_subplots_is_caught_by_the_watched_show():
    plt.close("all")
    watch_figures()
    fig, axes = plt.subplots(1, 5)  # the mistake: a second subplots call replaces the first
    fig, axes = plt.subplots(1, 5)
    for ax in axes:
        ax.plot([0, 1])
    try:
        with pytest.raises(ValueError, match="axes 1 of 5"):
            plt.show()
    finally:
        plt.close("all")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plt.show()  # a complete figure passes
    plt.close("all")
