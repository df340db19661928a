"""Result tables that render as tables in Jupyter and in the built book, without pandas.

A notebook output shown with ``display(Markdown(...))`` is only a table where the front end
parses Markdown tables; the book printed such outputs as raw ``| a | --- |`` text. The objects
here carry HTML (``_repr_html_``), which every front end renders, and an aligned plain-text
``repr`` for terminals, doctests and output comparisons. They have no ``_repr_markdown_`` on
purpose: a front end prefers Markdown over HTML when both exist.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np

MISSING = "–"  # a None or non-finite cell
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _inline_html(text: str) -> str:
    """Escape ``text`` for HTML, then show ```code``` and ``**bold**`` as in Markdown."""
    out = html.escape(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _plain(text: str) -> str:
    return _BOLD.sub(r"\1", text)


def _format_cell(value, floatfmt: str) -> str:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # torch / numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return floatfmt.format(float(value))
    return str(value)


class Table:
    """A rendered table: a header row and body rows of strings, an optional caption.

    Build one with :func:`html_table`. ``n_rows`` counts body rows, ``n_cols`` columns
    (including the row-name column, if any).
    """

    def __init__(self, header: list[str], body: list[list[str]], caption: str | None = None):
        if any(len(row) != len(header) for row in body):
            raise ValueError("body: every row needs one cell per header column")
        self.header, self.body, self.caption = list(header), [list(r) for r in body], caption

    @property
    def n_rows(self) -> int:
        return len(self.body)

    @property
    def n_cols(self) -> int:
        return len(self.header)

    def _repr_html_(self) -> str:
        parts = ['<table class="facelab-table">']
        if self.caption:
            parts.append(f"<caption>{_inline_html(self.caption)}</caption>")
        parts.append("<thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in self.header) + "</tr></thead>")
        parts.append("<tbody>")
        for row in self.body:
            parts.append("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        rows = [[_plain(c) for c in self.header], *[[_plain(c) for c in r] for r in self.body]]
        widths = [max(len(r[j]) for r in rows) for j in range(self.n_cols)]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        lines = [line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])]
        return "\n".join(([_plain(self.caption)] if self.caption else []) + lines)


def row_columns(rows: dict, columns=None) -> list:
    """The column keys of a ``{row name: {column: value} or None}`` table: ``columns`` if given,
    else the keys of the first row that is not None.

    >>> row_columns({"a": None, "b": {"x": 1, "y": 2}})
    ['x', 'y']
    """
    if columns is None:
        first = next((r for r in rows.values() if r is not None), None)
        if first is None:
            raise ValueError("rows: every row is None; give columns")
        columns = first
    return list(columns)


def html_table(rows, columns=None, caption: str | None = None, floatfmt: str = "{:.3f}", row_header: str = "") -> Table:
    """A :class:`Table` of ``rows``, for a notebook to display.

    Args:
        rows: either ``{row name: {column: value}}`` (a row may be ``None``: every cell ``–``),
            shown with the row names as first column; or a list of ``{column: value}`` dicts;
            or a list of sequences of values, with ``columns`` given. Values: floats (numpy
            and 0-d tensors too), formatted with ``floatfmt``; ``None`` or NaN (shown ``–``);
            anything else through ``str``. Text in backticks shows as code, ``**text**`` bold.
        columns: column keys in order (default: the keys of the first dict row).
        caption: a line above the table, or None.
        floatfmt: ``str.format`` pattern of float cells, e.g. ``"{:.2f}"``.
        row_header: title of the row-name column (dict rows only).

    Returns:
        a :class:`Table`, rendered by ``_repr_html_`` in Jupyter and in the book.

    >>> html_table({"mean face": {"rmse": 4.0}, "oracle": {"rmse": 0.3456}}, row_header="method")
    method     rmse
    ---------  -----
    mean face  4.000
    oracle     0.346
    >>> html_table([[1, 2.5]], columns=["k", "x"], floatfmt="{:.1f}")._repr_html_().count("<td>")
    2
    """
    if not isinstance(floatfmt, str):
        raise TypeError(f"floatfmt: expected a format string such as '{{:.3f}}', got {type(floatfmt).__name__}")
    try:
        floatfmt.format(1.0)
    except (ValueError, IndexError, KeyError) as err:
        raise ValueError(f"floatfmt: {floatfmt!r} cannot format a float ({err})") from None
    if caption is not None and not isinstance(caption, str):
        raise TypeError(f"caption: expected a str or None, got {type(caption).__name__}")
    if isinstance(rows, dict):
        if not rows:
            raise ValueError("rows: expected at least one row")
        bad = [name for name, row in rows.items() if row is not None and not isinstance(row, dict)]
        if bad:
            raise TypeError(f"rows: row {bad[0]!r} is a {type(rows[bad[0]]).__name__}, expected a dict of cells or None")
        columns = row_columns(rows, columns)
        header = [row_header, *map(str, columns)]
        body = [[str(name), *(_format_cell(None if row is None else row.get(c), floatfmt) for c in columns)]
                for name, row in rows.items()]
        return Table(header, body, caption)
    if isinstance(rows, (list, tuple)):
        if not rows:
            raise ValueError("rows: expected at least one row")
        if all(isinstance(r, dict) for r in rows):
            columns = list(rows[0]) if columns is None else list(columns)
            body = [[_format_cell(r.get(c), floatfmt) for c in columns] for r in rows]
            return Table(list(map(str, columns)), body, caption)
        if columns is None:
            raise ValueError("columns: required when rows are sequences of values")
        columns = list(columns)
        for i, r in enumerate(rows):
            if isinstance(r, (str, dict)) or not hasattr(r, "__len__") or len(r) != len(columns):
                raise ValueError(f"rows: row {i} should be a sequence of {len(columns)} values (one per column)")
        return Table(list(map(str, columns)), [[_format_cell(v, floatfmt) for v in r] for r in rows], caption)
    raise TypeError(f"rows: expected a dict of rows or a list of rows, got {type(rows).__name__}")


def show_table(rows, columns=None, caption: str | None = None, floatfmt: str = "{:.3f}", row_header: str = "") -> None:
    """Display :func:`html_table` ``(rows, columns, caption, floatfmt, row_header)`` in the notebook.

    Outside IPython the plain-text form is printed.

    >>> show_table([{"K": 10, "nmi": 0.51234}], floatfmt="{:.2f}", caption="SFM")
    SFM
    K   nmi
    --  ----
    10  0.51
    """
    from IPython.display import display

    display(html_table(rows, columns, caption=caption, floatfmt=floatfmt, row_header=row_header))


class Bullets:
    """A bulleted list of a Markdown report: ``items``, each inline Markdown."""

    def __init__(self, items: list[str]):
        self.items = list(items)

    def _repr_html_(self) -> str:
        return "<ul>\n" + "\n".join(f"<li>{_inline_html(item)}</li>" for item in self.items) + "\n</ul>"

    def __repr__(self) -> str:
        return "\n".join(f"- {_plain(item)}" for item in self.items)


#: a Markdown list item: "- text" or "* text"
_BULLET = re.compile(r"^\s*[-*]\s+")


def _bullets(lines: list[str]) -> Bullets:
    """The items of a block whose first line is a list item; other lines continue the item above."""
    items: list[str] = []
    for line in lines:
        if _BULLET.match(line):
            items.append(_BULLET.sub("", line).strip())
        else:
            items[-1] += " " + line.strip()
    return Bullets(items)


class Report:
    """Paragraphs, bulleted lists and tables, in order: the HTML form of a short Markdown report.

    ``blocks`` is a list of ``str`` (a paragraph, inline Markdown), :class:`Bullets` and :class:`Table`.
    """

    def __init__(self, blocks: list):
        self.blocks = list(blocks)

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def _repr_html_(self) -> str:
        # Markdown headings become bold paragraphs: a heading inside an output would break
        # the page's outline (the book's table of contents and numbering).
        return "\n".join(f"<p>{_inline_html(b)}</p>" if isinstance(b, str) else b._repr_html_() for b in self.blocks)

    def __repr__(self) -> str:
        return "\n\n".join(_plain(b) if isinstance(b, str) else repr(b) for b in self.blocks)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") else line
    return [c.strip() for c in line.split("|")]


def markdown_report(text: str) -> Report:
    """Parse a short Markdown report (paragraphs, ``#`` headings, ``-`` lists, pipe tables) into a :class:`Report`.

    A pipe table is a block whose second line is a ``| --- |`` separator; a heading becomes a
    bold paragraph; a block whose first line starts with ``- `` (or ``* ``) is a bulleted list,
    one item per such line; everything else is a paragraph. For reports written as Markdown files
    (e.g. a run's ``results.md``); tables built in a notebook should use :func:`html_table`.

    Args:
        text: the Markdown, blocks separated by blank lines.

    >>> r = markdown_report("# Run\\n\\n**Phases** (mm)\\n\\n| stage | rmse |\\n| --- | --- |\\n| I | 1.0 |")
    >>> [type(b).__name__ for b in r.blocks], r.tables[0].n_rows
    (['str', 'str', 'Table'], 1)
    >>> print(r)
    Run
    <BLANKLINE>
    Phases (mm)
    <BLANKLINE>
    stage  rmse
    -----  ----
    I      1.0
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    blocks: list = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [ln for ln in chunk.splitlines() if ln.strip()]
        if not lines:
            continue
        if len(lines) >= 2 and lines[0].lstrip().startswith("|") and _SEPARATOR.match(lines[1].strip()):
            header = _split_row(lines[0])
            body = [_split_row(ln) for ln in lines[2:]]
            for i, row in enumerate(body):
                if len(row) != len(header):
                    raise ValueError(f"text: table row {i + 1} has {len(row)} cells, its header {len(header)}")
            blocks.append(Table(header, body))
        elif len(lines) == 1 and lines[0].lstrip().startswith("#"):
            blocks.append("**" + lines[0].lstrip().lstrip("#").strip() + "**")
        elif _BULLET.match(lines[0]):
            blocks.append(_bullets(lines))
        else:
            blocks.append(" ".join(ln.strip() for ln in lines))
    if not blocks:
        raise ValueError("text: the report is empty")
    return Report(blocks)


def show_report(text: str) -> None:
    """Display :func:`markdown_report` ``(text)``: its tables as HTML tables, headings in bold.

    >>> show_report("Time: 3 s")
    Time: 3 s
    """
    from IPython.display import display

    display(markdown_report(text))
