"""Chapters are committed without outputs (house style)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facelab.notebooks import dirty_cells, find_notebooks, strip_notebook

ROOT = Path(__file__).resolve().parents[1]


def test_committed_notebooks_have_no_outputs():
    files = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    dirty = [f for f in files if dirty_cells(json.loads((ROOT / f).read_text()))]
    assert dirty == [], f"strip outputs with `make strip`: {dirty}"


def test_strip_removes_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "1", "metadata": {"execution": {}},
                     "outputs": [{"output_type": "execute_result"}], "execution_count": 1}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    check = [sys.executable, "-m", "facelab.notebooks", "check", str(path)]
    assert subprocess.run(check, capture_output=True).returncode == 1
    assert subprocess.run([sys.executable, "-m", "facelab.notebooks", "strip", str(tmp_path)], capture_output=True).returncode == 0
    assert subprocess.run(check, capture_output=True).returncode == 0
    cleaned = json.loads(path.read_text())
    assert cleaned["cells"][0]["outputs"] == [] and "execution" not in cleaned["cells"][0]["metadata"]


def test_strip_is_idempotent():
    nb = {"cells": [{"cell_type": "code", "outputs": [1], "execution_count": 2, "metadata": {}}]}
    once = strip_notebook(json.loads(json.dumps(nb)))
    assert strip_notebook(json.loads(json.dumps(once))) == once


def test_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_notebooks(tmp_path / "nowhere")


def test_every_toc_chapter_exists():
    toc = (ROOT / "_toc.yml").read_text()
    files = [line.split("file:")[1].strip() for line in toc.splitlines() if "file:" in line]
    missing = [f for f in files if not any((ROOT / (f + ext)).exists() for ext in (".ipynb", ".md"))]
    assert files and missing == []
