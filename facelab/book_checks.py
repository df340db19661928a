"""Checks of the published book that need no browser: the HTML pages and the Markdown sources.

A page can build without an error and still show the reader something broken. The faults
found so far, each with its check:

- a Markdown table printed as text (``| a | --- |``) instead of a table;
- maths that did not typeset: a MathJax error node, or TeX left in the text (``$\\alpha$``,
  ``\\(``), typically because a line inside ``$...$`` began with ``+`` or ``1.`` and Markdown
  read it as a list item;
- a heading (``h1``-``h6``) inside a cell's output, which breaks the page outline;
- words that speak about the project's organisation rather than to the reader;
- one caption on two figures of a page: myst-nb gives a cell's figure caption to each of its
  display outputs, so a figure cell that also prints a report shows the caption twice.

:func:`scan_html` checks one page (the static file, or the live DOM after MathJax ran);
:func:`scan_book` every page of a build; :func:`markdown_hazards` finds the Markdown lines
that would break maths before the book is built.
"""

from __future__ import annotations

import html.parser
import re
from collections import Counter
from pathlib import Path

# Internal terms that must not reach the reader (case-insensitive, matched in page text only).
BLOCKLIST = (r"design\s*§", r"papers/0", r"\bissues?\b", r"\bthe team\b")
_BLOCKLIST_RE = re.compile("|".join(f"(?:{b})" for b in BLOCKLIST), re.IGNORECASE)
_RAW_TABLE_RE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
# TeX outside typeset maths: \( \) \[ \], or a $ that opens something TeX-like.
_LEFTOVER_TEX_RE = re.compile(r"\\[(\[]|(?<![\w\\])\$(?=\S)[^$\n]{0,120}?(?:\\[A-Za-z]+|[_^{}])")
_SKIP_TAGS = {"script", "style", "noscript", "template"}
_CODE_TAGS = {"pre", "code", "kbd", "samp"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
              "track", "wbr"}
_BLOCK_TAGS = {"p", "div", "li", "td", "th", "tr", "pre", "section", "dt", "dd", "caption", "br", "blockquote",
               "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "title", "article", "aside", "nav", "figure"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_MATH_CLASSES = {"math", "MathJax", "MathJax_Display", "MathJax_Preview"}
_ERROR_CLASSES = {"MathJax_Error", "merror"}
SNIPPET = 60  # characters of context either side of a finding
_CAPTION_NUMBER_RE = re.compile(r"^\s*(?:Fig(?:ure)?\.?|Table)\s*[\d.]+\s*")  # myst's "Fig. 86" prefix


class _PageParser(html.parser.HTMLParser):
    """Collects the page's text in three views, and structural faults, while parsing."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, frozenset]] = []
        self.visible: list[str] = []  # all text a reader sees (code included)
        self.prose: list[str] = []  # outside code, maths and code-cell inputs
        self.shown: list[str] = []  # outside code-cell inputs (outputs and prose)
        self.faults: list[str] = []
        self.captions: list[str] = []  # each <figcaption>'s text, its number left out
        self._caption: list[str] | None = None

    def _inside(self, pred) -> bool:
        return any(pred(tag, classes) for tag, classes in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = frozenset((dict(attrs).get("class") or "").split())
        if tag == "mjx-merror" or classes & _ERROR_CLASSES:
            self.faults.append(f"MathJax error node <{tag}>")
        if tag in _HEADINGS and self._inside(lambda t, c: "cell_output" in c):
            self.faults.append(f"heading <{tag}> inside a cell output")
        if tag in _BLOCK_TAGS:
            self._newline()
        if tag == "figcaption":
            self._caption = []
        if tag not in _VOID_TAGS:
            self.stack.append((tag, classes))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS and self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):  # tolerate unclosed children, as browsers do
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in _BLOCK_TAGS:
            self._newline()
        if tag == "figcaption" and self._caption is not None:
            self.captions.append(_CAPTION_NUMBER_RE.sub("", " ".join("".join(self._caption).split())))
            self._caption = None

    def _newline(self):
        for buf in (self.visible, self.prose, self.shown):
            buf.append("\n")

    def handle_data(self, data):
        if self._inside(lambda t, c: t in _SKIP_TAGS):
            return
        self.visible.append(data)
        if self._caption is not None:
            self._caption.append(data)
        in_input = self._inside(lambda t, c: "cell_input" in c)
        if not in_input:
            self.shown.append(data)
        if not (in_input or self._inside(lambda t, c: t in _CODE_TAGS or t.startswith("mjx-") or t == "math"
                                         or bool(c & _MATH_CLASSES))):
            self.prose.append(data)


def _snippet(text: str, match: re.Match) -> str:
    # the match with some context, within its own block of the page
    line_start = text.rfind("\n", 0, match.start()) + 1
    line_end = text.find("\n", match.end())
    line_end = len(text) if line_end < 0 else line_end
    start, end = max(line_start, match.start() - SNIPPET), min(line_end, match.end() + SNIPPET)
    return " ".join(text[start:end].split())


def scan_html(page: str) -> list[str]:
    """Every reader-visible fault of one HTML page, as short descriptions (empty: clean).

    Args:
        page: the HTML text (a built file, or a browser's ``page_source`` after MathJax ran).

    Text in ``<script>``/``<style>``, URLs and attributes are not checked; code cells are
    checked for the blocklist only; maths elements are skipped for leftover TeX.

    >>> scan_html('<p>Error <span class="math">\\\\(\\\\alpha\\\\)</span> in mm.</p>')
    []
    >>> scan_html('<p>| a | b |\\n| --- | --- |</p><p>as the issue says</p>')
    ['raw Markdown table: | --- | --- |', "internal term 'issue': as the issue says"]
    """
    if not isinstance(page, str):
        raise TypeError(f"page: expected the HTML as a str, got {type(page).__name__}")
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    problems = list(dict.fromkeys(parser.faults))
    shown, prose, visible = ("".join(b) for b in (parser.shown, parser.prose, parser.visible))
    problems += [f"raw Markdown table: {_snippet(shown, m)}" for m in _RAW_TABLE_RE.finditer(shown)]
    problems += [f"TeX left in the text: {_snippet(prose, m)}" for m in _LEFTOVER_TEX_RE.finditer(prose)]
    problems += [f"internal term {m.group(0)!r}: {_snippet(visible, m)}" for m in _BLOCKLIST_RE.finditer(visible)]
    problems += [f"caption on {n} figures (a figure cell with more than one output?): {c[:2 * SNIPPET]}"
                 for c, n in Counter(parser.captions).items() if c and n > 1]
    return problems


def scan_book(html_dir) -> dict[str, list[str]]:
    """:func:`scan_html` of every page of a built book: ``{page path: problems}``, clean pages left out.

    Args:
        html_dir: the build's HTML folder (``_build/html``); folders starting with ``_``
            (static files, sources) are skipped.
    """
    html_dir = Path(html_dir)
    if not html_dir.is_dir():
        raise FileNotFoundError(f"html_dir: {html_dir} is not a folder")
    found = {}
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if any(part.startswith("_") for part in rel.parts[:-1]):
            continue
        if problems := scan_html(path.read_text(encoding="utf-8", errors="replace")):
            found[rel.as_posix()] = problems
    return found


_LIST_MARKER = re.compile(r"^([-+*]|\d+[.)])(\s|$)")


def markdown_hazards(text: str) -> list[str]:
    """Lines of a Markdown cell that Markdown would turn into list items by mistake.

    Two cases break the rendered page: a line inside inline maths ``$...$`` that starts with
    ``+``, ``-``, ``*`` or ``1.`` (the maths is split and shows as TeX), and a line ``1. ...``
    right after a line of prose (an ordered list interrupts the paragraph). Display maths
    (``$$``), code fences and inline code are ignored.

    Args:
        text: the Markdown source.

    Returns:
        ``"line N: ..."`` descriptions, 1-based.

    >>> markdown_hazards("$a = b\\n+ c$ holds")
    ['line 2: starts a list inside $...$: + c$ holds']
    >>> markdown_hazards("as in part\\n1. With it")
    ['line 2: a numbered list interrupts the paragraph: 1. With it']
    >>> markdown_hazards("$a = b +\\nc$, and\\n\\n1. a list")
    []
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    found, lines = [], text.splitlines()
    in_display, in_fence, open_dollar = False, False, False
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if in_display:
            in_display = not stripped.endswith("$$")
            continue
        if stripped.startswith("$$") and not open_dollar:
            in_display = "$$" not in stripped[2:]
            continue
        prev = lines[n - 2] if n > 1 else ""
        if open_dollar and _LIST_MARKER.match(stripped):
            found.append(f"line {n}: starts a list inside $...$: {stripped}")
        elif (re.match(r"^1[.)]\s", stripped) and prev.strip() and not _LIST_MARKER.match(prev.strip())
              and not prev.startswith((" ", "\t"))):
            found.append(f"line {n}: a numbered list interrupts the paragraph: {stripped}")
        if not stripped:
            open_dollar = False
            continue
        dollars = re.sub(r"`[^`]*`", "", line.replace("\\$", "")).replace("$$", "").count("$")
        open_dollar ^= dollars % 2 == 1
    return found
