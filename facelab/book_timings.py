"""Print the per-chapter execution time of the book build (``make book`` runs it after building).

Jupyter Book's ``execute_notebooks: cache`` mode keeps each executed notebook and its run time
in ``_build/.jupyter_cache``. Each chapter is reported with the cached run that matches its
current code; a chapter edited since its last run is flagged, and so is one never executed.

    python -m facelab.book_timings _build
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

CACHE_DIRNAME = ".jupyter_cache"
STALE = "stale: notebook changed since this run"
NEVER = "never executed"


@dataclass(frozen=True)
class ChapterTiming:
    """One chapter's last execution: ``seconds`` is nan when it never ran; ``note`` is ``""`` when current."""

    name: str
    seconds: float
    executed_at: datetime | None = None  # when jupyter-cache stored the run (UTC)
    note: str = ""


def chapter_timings(build_dir: str | Path = "_build") -> list[ChapterTiming]:
    """The execution time of every notebook of the last build, from its jupyter-cache, sorted by name.

    ``build_dir``: the folder holding ``.jupyter_cache`` (``_build``, as ``make book`` writes it).
    Raises ``FileNotFoundError`` when there is no cache (the book was never built).
    """
    from jupyter_cache import get_cache

    cache_path = Path(build_dir) / CACHE_DIRNAME
    if not cache_path.is_dir():
        raise FileNotFoundError(f"build_dir: {cache_path} does not exist; build the book first (make book)")
    cache = get_cache(str(cache_path))
    newest: dict[str, object] = {}  # uri -> its latest run, whatever code it ran
    for record in cache.list_cache_records():
        if record.uri not in newest or record.created > newest[record.uri].created:
            newest[record.uri] = record
    rows = []
    for project in cache.list_project_records():
        if not Path(project.uri).exists():  # a chapter removed from the book since
            continue
        record, note = cache.get_cached_project_nb(project.pk), ""
        if record is None:
            record = newest.get(project.uri)
            note = STALE if record is not None else NEVER
        seconds = (record.data or {}).get("execution_seconds") if record is not None else None
        rows.append(ChapterTiming(Path(project.uri).name, float(seconds) if seconds is not None else math.nan,
                                  record.created if record is not None else None, note))
    return sorted(rows, key=lambda row: row.name)


def format_timings(rows: list[ChapterTiming]) -> str:
    """The table that ``make book`` prints: one line per chapter (seconds), then the total.

    >>> print(format_timings([ChapterTiming("02_a.ipynb", 61.25), ChapterTiming("03_b.ipynb", math.nan, note=NEVER)]))
    chapter execution times (s):
      02_a.ipynb                                   61.2
      03_b.ipynb                                      -  never executed
      total                                        61.2
    """
    lines = ["chapter execution times (s):"]
    for row in rows:
        seconds = "-" if math.isnan(row.seconds) else f"{row.seconds:.1f}"
        lines.append(f"  {row.name:<40} {seconds:>8}" + (f"  {row.note}" if row.note else ""))
    total = sum(row.seconds for row in rows if not math.isnan(row.seconds))
    lines.append(f"  {'total':<40} {total:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rows = chapter_timings(argv[0] if argv else "_build")
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    print(format_timings(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
