"""Sphinx fixes for the facelab book; ``_config.yml`` loads it (``sphinx.local_extensions``).

1. Repeated inline scripts. Sphinx 7.4 (the lock's version) lists every inline script that an
   extension registers after the builder has started twice on each page: once as registered
   (filename ``None``) and again, re-read from the registry with filename ``""``, when writing
   starts. sphinx-thebe's ``const THEBE_JS_URL = ...`` then runs twice, a JavaScript
   SyntaxError on every page. The repeats are dropped.
2. ``\\tag`` in multi-line display maths. Sphinx wraps a display equation that contains ``\\\\``
   (a line break, or a row of a matrix) in ``\\begin{split}``, where MathJax refuses ``\\tag``
   ("\\tag not allowed in split environment"), yet the book tags the equations it takes from a
   paper (``book/symbols.md``). The tag is moved after the ``split``, where it is allowed.

The browser test (``tests/test_browser.py``) fails on either.
"""

from __future__ import annotations

import re

# Run after the other html-page-context handlers (default 500), myst-nb's included: it adds
# each page's own scripts (the ipywidgets ones) there.
DEDUPE_PRIORITY = 900
_TAG = re.compile(r"\\tag\*?\s*\{")


def unique_scripts(scripts: list) -> list:
    """The first of each script in ``scripts``, a filename ``None`` and ``""`` (inline) being the same.

    >>> from sphinx.builders.html._assets import _JavaScript
    >>> inline = [_JavaScript(None, body="const x = 1;"), _JavaScript("", body="const x = 1;")]
    >>> [js.filename for js in unique_scripts([*inline, _JavaScript("a.js"), _JavaScript("a.js")])]
    [None, 'a.js']
    """
    seen, kept = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {})
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", None), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    return kept


def tag_outside_split(latex: str, delimiters: tuple[str, str] = (r"\[", r"\]")) -> str | None:
    """The display maths ``latex`` as Sphinx would write it, with its ``\\tag{...}`` after the ``split``.

    ``None`` where Sphinx's own output is fine: no ``\\tag``, no ``\\\\`` (so no ``split``), or
    several equations separated by blank lines (Sphinx aligns those instead).

    >>> print(tag_outside_split(r"P = \\begin{bmatrix}1&0\\\\0&1\\end{bmatrix} \\tag{Gao 3}"))
    \\[\\begin{split}P = \\begin{bmatrix}1&0\\\\0&1\\end{bmatrix} \\end{split}\\tag{Gao 3}\\]
    >>> tag_outside_split(r"L = a + b \\tag{4}") is None  # one line: no split, the tag is fine
    True
    """
    parts = [part for part in latex.split("\n\n") if part.strip()]
    if len(parts) != 1 or r"\\" not in parts[0] or not (match := _TAG.search(parts[0])):
        return None
    depth, end = 1, match.end()
    while depth and end < len(latex):
        depth += {"{": 1, "}": -1}.get(latex[end], 0)
        end += 1
    if depth:
        raise ValueError(f"latex: unbalanced braces after {match.group(0)!r} in {latex!r}")
    body, tag = latex[: match.start()] + latex[end:], latex[match.start() : end]
    return f"{delimiters[0]}\\begin{{split}}{body.strip(chr(10))}\\end{{split}}{tag}{delimiters[1]}"


def _move_tags_out_of_split(app, doctree, docname) -> None:
    from docutils import nodes

    if app.builder.format != "html":
        return
    for node in doctree.findall(nodes.math_block):
        if node.get("nowrap") or node.get("number"):
            continue
        if (latex := tag_outside_split(node.astext(), tuple(app.config.mathjax_display))) is not None:
            node["nowrap"] = True  # written as is, delimiters included
            node.children = [nodes.Text(latex)]


def _dedupe_page_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if isinstance(scripts, list):
        # In place: the list is the builder's, which Sphinx restores before the next page.
        scripts[:] = unique_scripts(scripts)


def setup(app):
    app.connect("doctree-resolved", _move_tags_out_of_split)
    app.connect("html-page-context", _dedupe_page_scripts, priority=DEDUPE_PRIORITY)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
