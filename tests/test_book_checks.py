"""facelab.book_checks: planted faults are found, clean pages pass, and the book itself is clean.

The built-HTML test skips without a build (``make book``); with ``FACELAB_REQUIRE_BOOK=1``
it fails instead, as the browser test does.
"""

import json
import os
from pathlib import Path

import pytest

from facelab.book_checks import markdown_hazards, scan_book, scan_html

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = ROOT / "_build" / "html"

# A page shaped like a myst-nb chapter: prose with maths, a code cell with its output, an HTML table.
CLEAN_PAGE = """<!doctype html><html><head><title>4. Fitting</title>
<script>var x = "| --- | the issue $\\\\alpha$";</script><style>p::after {content: "$x_1$";}</style></head><body>
<h1>4. Fitting</h1>
<p>The error <span class="math notranslate nohighlight">\\(E = \\lVert x \\rVert^2\\)</span> is in mm.</p>
<div class="math notranslate nohighlight">\\[ L = \\lambda_R L_R + L_C \\]</div>
<p>A <a href="https://example.org/issues/3">link</a> and a tissue sample.</p>
<div class="cell docutils container">
<div class="cell_input docutils container"><pre><span>rows</span> <span>=</span> "| a | --- |"  # a $\\beta$ string</pre></div>
<div class="cell_output docutils container"><div class="output text_html">
<table class="facelab-table"><caption>Phases</caption><thead><tr><th>stage</th><th>rmse</th></tr></thead>
<tbody><tr><td>I</td><td>1.000</td></tr></tbody></table></div>
<div class="output stream"><pre>price: $5 per run; x_1 = 2</pre></div></div></div>
</body></html>
"""


def _plant(fragment: str) -> str:
    return CLEAN_PAGE.replace("</body>", fragment + "</body>")


def test_clean_page_passes():
    assert scan_html(CLEAN_PAGE) == []
    two_figures = ('<figure><figcaption><span class="caption-number">Fig. 1 </span>A grid.</figcaption></figure>'
                   '<figure><figcaption><span class="caption-number">Fig. 2 </span>Another grid.</figcaption></figure>')
    assert scan_html(_plant(two_figures)) == []  # distinct captions are fine


@pytest.mark.parametrize("fragment, expected", [
    # a Markdown table that the front end did not render
    ("<p>| method | rmse |\n| --- | --- |\n| mean face | 4.000 |</p>", "raw Markdown table"),
    ('<div class="cell_output"><div class="output stream"><pre>| a |\n|---|\n| 1 |</pre></div></div>',
     "raw Markdown table"),
    # broken maths: TeX left in the text, or a MathJax error node
    ("<ul><li><p>the critic minimises $\\mathbb{E}[D(\\text{fake})]</p></li></ul>", "TeX left in the text"),
    ("<p>where \\(x\\) is the input</p>", "TeX left in the text"),
    ('<span class="math"><mjx-container><mjx-merror data-mjx-error="Missing }">x</mjx-merror></mjx-container></span>',
     "MathJax error node"),
    ('<span class="MathJax_Error">Undefined control sequence</span>', "MathJax error node"),
    # a heading inside a cell output
    ('<div class="cell_output docutils container"><section><h1>Liu et al. 2018 ablation</h1></section></div>',
     "heading <h1> inside a cell output"),
    # internal terms, in prose or in code
    ("<p>As design §3 says, the faces keep detail.</p>", "internal term 'design §'"),
    ("<p>The Issue behind this chapter lists them.</p>", "internal term 'Issue'"),
    ("<p>(<code>papers/000</code>, the poster text)</p>", "internal term 'papers/0'"),
    ("<p>Written for The Team.</p>", "internal term 'The Team'"),
    # one figure cell's caption on two of its outputs (a plot and a printed report)
    ('<figure><img src="a.png"><figcaption><p><span class="caption-number">Fig. 86 </span>'
     '<span class="caption-text">The grid in each person\'s own light.</span></p></figcaption></figure>'
     '<figure><div>mean colour 0.147</div><figcaption><p><span class="caption-number">Fig. 87 </span>'
     '<span class="caption-text">The grid in each person\'s own light.</span></p></figcaption></figure>',
     "caption on 2 figures"),
])
def test_each_planted_fault_is_found(fragment, expected):
    problems = scan_html(_plant(fragment))
    assert any(expected in p for p in problems), problems


def test_blocklist_matches_whole_words_in_text_only():
    assert scan_html("<p>The tissue is an issuer's; <a href='/issues/1' title='issue'>link</a></p>") == []
    assert scan_html("<p>two issues remain</p>")


def test_scan_html_rejects_bytes():
    with pytest.raises(TypeError, match="page"):
        scan_html(b"<p></p>")


def test_scan_book_reports_pages_and_skips_static(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "book" / "good.html").write_text(CLEAN_PAGE)
    (tmp_path / "book" / "bad.html").write_text(_plant("<p>| a |\n| --- |</p>"))
    (tmp_path / "_static" / "theme.html").write_text("<p>issue</p>")
    found = scan_book(tmp_path)
    assert list(found) == ["book/bad.html"] and "raw Markdown table" in found["book/bad.html"][0]
    with pytest.raises(FileNotFoundError, match="html_dir"):
        scan_book(tmp_path / "missing")


@pytest.mark.parametrize("text, line", [
    ("The MAP step minimises $E = \\lVert r\\rVert^2\n+ \\sum_k p_k\\alpha_k^2$, with", 2),
    ("- **WGAN-div**: the critic minimises $D(f) - D(r)\n  + k\\,E$ with $k = 2$", 2),
    ("the streaks, as in part\n1. With it they contract", 2),
    ("so $a\n- b$ is small", 2),
])
def test_markdown_hazards_find_planted_lines(text, line):
    found = markdown_hazards(text)
    assert len(found) == 1 and found[0].startswith(f"line {line}:"), found


def test_markdown_hazards_ignore_display_maths_code_and_real_lists():
    text = ("$$\nL = a\n+ b\n$$\n\n```python\nx = 1\n1. not markdown\n```\n\nSteps:\n\n1. one\n2. two\n\n"
            "- a bullet with $x$\n- another\n\n`$` alone, then a line\n+ that is a real list")
    assert markdown_hazards(text) == []


def _markdown_sources():
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.name, path.read_text()


def test_book_sources_have_no_markdown_hazards():
    found = [f"{where}, {h}" for where, text in _markdown_sources() for h in markdown_hazards(text)]
    assert not found, "\n".join(found)


def test_built_book_is_clean():
    """An independent scan of the static HTML of ``make book`` (no browser, no JavaScript)."""
    if not (HTML_DIR / "index.html").exists():
        if os.environ.get("FACELAB_REQUIRE_BOOK") == "1":
            pytest.fail(f"{HTML_DIR} has no built book (FACELAB_REQUIRE_BOOK=1)", pytrace=False)
        pytest.skip(f"{HTML_DIR} has no built book: run `make book`")
    found = scan_book(HTML_DIR)
    assert not found, "\n".join(f"{page}: {p}" for page, problems in found.items() for p in problems)
