"""One install source: every chapter installs facelab from ``repository.url`` in ``_config.yml``.

The URL must be the project's own (empty while it has no public home), every chapter's install
cell must be the one ``facelab.notebooks.install_cell`` writes for it and for the package version,
and nothing in the repository may point at a guessed home.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import facelab
from facelab.notebooks import INSTALL_MARKER, install_cell, install_cells, repository_url, sync_install

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
# A repository that exists and belongs to someone else; the book once pointed at it.
FORMER_GUESS = "github.com/facelab/" + "facelab"


def test_every_chapter_has_the_configured_install_cell():
    want = install_cell(repository_url(), facelab.__version__).splitlines(keepends=True)
    assert CHAPTERS
    for path in CHAPTERS:
        nb = json.loads(path.read_text())
        cells = install_cells(nb)
        assert len(cells) == 1, f"{path.name}: {len(cells)} install cells"
        assert nb["cells"][cells[0]]["source"] == want, f"{path.name}: run `python -m facelab.notebooks sync-install book`"
        earlier = "".join("".join(c["source"]) for c in nb["cells"][: cells[0]] if c["cell_type"] == "code")
        assert not re.search(r"\b(import|from)\s+facelab\b", earlier), f"{path.name}: a cell before the install cell imports facelab"


def test_launch_buttons_only_with_a_home():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    buttons = config.get("launch_buttons", {})
    if not repository_url():
        assert not buttons.get("colab_url") and not buttons.get("binderhub_url")


def test_nothing_points_at_the_former_guess():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = [f for f in files if f != "tests/test_install_source.py" and (ROOT / f).is_file()
            and FORMER_GUESS in (ROOT / f).read_text(errors="ignore")]
    assert not hits, hits


def test_install_cell_runs_outside_colab_and_rejects_a_wrong_version():
    namespace: dict = {}
    exec(install_cell("", facelab.__version__), namespace)  # not in Colab: only the version check
    assert namespace["facelab"] is facelab
    with pytest.raises(RuntimeError, match="this chapter is for facelab 0.0.0"):
        exec(install_cell("", "0.0.0"), {})


def test_sync_install_rewrites_and_rejects(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": [INSTALL_MARKER + " old\n", "x = 1"]}]}
    assert sync_install(nb, "https://example.org/ours.git", "9.9")
    assert "FACELAB_SOURCE, FACELAB_VERSION = 'https://example.org/ours.git', '9.9'" in "".join(nb["cells"][0]["source"])
    assert not sync_install(nb, "https://example.org/ours.git", "9.9")
    with pytest.raises(ValueError, match="expected one install cell"):
        sync_install({"cells": []}, "", "1")
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: http://insecure.example\n")
    with pytest.raises(ValueError, match="repository.url must be an https URL"):
        repository_url(config)
    with pytest.raises(FileNotFoundError, match="no book config"):
        repository_url(tmp_path / "missing.yml")
