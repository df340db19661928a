"""Print the per-chapter execution time of the last book build.

Jupyter Book's ``execute_notebooks: cache`` mode keeps each executed notebook and
its run time in ``_build/.jupyter_cache``; this reads them back.
"""

from __future__ import annotations

import sys
from pathlib import Path


def chapter_timings(build_dir: str | Path = "_build") -> list[tuple[str, float]]:
    """``[(notebook path, seconds), ...]`` from the build's jupyter-cache."""
    from jupyter_cache import get_cache

    cache_path = Path(build_dir) / ".jupyter_cache"
    if not cache_path.exists():
        raise FileNotFoundError(f"{cache_path}: no execution cache; build the book first (make book)")
    cache = get_cache(str(cache_path))
    rows = []
    for record in cache.list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        rows.append((Path(record.uri).name, float(seconds) if seconds is not None else float("nan")))
    return sorted(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = chapter_timings(argv[0] if argv else "_build")
    total = sum(s for _, s in rows if s == s)
    print("chapter execution times (s):")
    for name, seconds in rows:
        print(f"  {name:<40} {seconds:8.1f}")
    print(f"  {'total':<40} {total:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
