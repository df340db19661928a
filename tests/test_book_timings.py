"""facelab.book_timings: per-chapter execution times read back from the book's jupyter-cache."""

import math

import nbformat
import pytest

from facelab.book_timings import NEVER, STALE, chapter_timings, format_timings, main


def _notebook(code: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    return nb


@pytest.fixture
def build(tmp_path):
    """A fake ``_build`` whose cache holds a current run (a), a stale run (b) and no run (c)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    for name, code in (("a.ipynb", "1 + 1"), ("b.ipynb", "2 + 2"), ("c.ipynb", "3 + 3")):
        path = tmp_path / name
        nbformat.write(_notebook(code), path)
        cache.add_nb_to_project(str(path))
    for name, code, seconds in (("a.ipynb", "1 + 1", 12.5), ("b.ipynb", "2 + 2", 3.0)):
        bundle = CacheBundleIn(_notebook(code), str(tmp_path / name), data={"execution_seconds": seconds})
        cache.cache_notebook_bundle(bundle, check_validity=False)  # "executed" without a kernel
    nbformat.write(_notebook("2 + 2  # edited after the run"), tmp_path / "b.ipynb")
    return tmp_path / "_build"


def test_chapter_timings_current_stale_and_never(build):
    rows = chapter_timings(build)
    assert [r.name for r in rows] == ["a.ipynb", "b.ipynb", "c.ipynb"]
    a, b, c = rows
    assert (a.seconds, a.note) == (12.5, "") and a.executed_at is not None
    assert (b.seconds, b.note) == (3.0, STALE)
    assert math.isnan(c.seconds) and c.note == NEVER and c.executed_at is None


def test_format_total_skips_missing_runs(build):
    text = format_timings(chapter_timings(build))
    assert text.splitlines()[-1].split() == ["total", "15.5"]
    assert "never executed" in text and "stale" in text


def test_missing_cache_raises_and_main_fails(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="build_dir"):
        chapter_timings(tmp_path)
    assert main([str(tmp_path)]) == 1
    assert "make book" in capsys.readouterr().err
