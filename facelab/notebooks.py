"""Notebook hygiene: chapters are committed without outputs, with one install cell.

``python -m facelab.notebooks strip book`` removes outputs and execution counts in
place; ``python -m facelab.notebooks check book`` exits 1 and names every notebook
that still has them. The test suite runs the check.

Every chapter's first code cell installs facelab when it runs in Colab. Where it installs
from has one source of truth, ``repository.url`` in ``_config.yml`` (empty while the project
has no public home: the cell then stops with instructions instead of guessing a URL).
``python -m facelab.notebooks sync-install book`` rewrites each chapter's cell from it and
from ``facelab.__version__``; ``tests/test_install_source.py`` checks they agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Metadata keys that change on every run and carry no content.
VOLATILE_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
# The first line of every chapter's install cell: how sync-install finds it.
INSTALL_MARKER = "# Install facelab in Colab."
REPO_ROOT = Path(__file__).resolve().parent.parent


def repository_url(config_path: str | Path = REPO_ROOT / "_config.yml") -> str:
    """The project's home, ``repository.url`` in the book's ``_config.yml`` ("" if it has none)."""
    import yaml

    path = Path(config_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no book config (repository.url lives there)")
    url = ((yaml.safe_load(path.read_text()) or {}).get("repository") or {}).get("url") or ""
    if url and not url.startswith("https://"):
        raise ValueError(f"{path}: repository.url must be an https URL or empty, got {url!r}")
    return url


def install_cell(source: str, version: str) -> str:
    """The source of a chapter's install cell for the project's home ``source`` ("" if none).

    >>> print(install_cell("", "0.1.0").splitlines()[2])
    FACELAB_SOURCE, FACELAB_VERSION = '', '0.1.0'
    """
    return f'''{INSTALL_MARKER} FACELAB_SOURCE is the project's home (the book's _config.yml).
import importlib.util, subprocess, sys
FACELAB_SOURCE, FACELAB_VERSION = {source!r}, {version!r}
if "google.colab" in sys.modules and importlib.util.find_spec("facelab") is None:
    if not FACELAB_SOURCE:
        raise RuntimeError("facelab has no public home yet, so this cell cannot install it. From a clone, build a "
                           "wheel (pip wheel --no-deps -w dist .), upload it here and pip install it.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{{FACELAB_SOURCE}}"], check=True)
import facelab
if facelab.__version__ != FACELAB_VERSION:
    raise RuntimeError(f"this chapter is for facelab {{FACELAB_VERSION}}, but {{facelab.__file__}} is {{facelab.__version__}}")'''


def install_cells(nb: dict) -> list[int]:
    """Indices of the cells that hold an install cell (a chapter has exactly one)."""
    return [i for i, c in enumerate(nb.get("cells", [])) if "".join(c.get("source", "")).startswith(INSTALL_MARKER)]


def sync_install(nb: dict, source: str, version: str) -> bool:
    """Rewrite ``nb``'s install cell (in place); True if it changed."""
    found = install_cells(nb)
    if len(found) != 1:
        raise ValueError(f"expected one install cell (starting {INSTALL_MARKER!r}), found {len(found)}")
    cell = nb["cells"][found[0]]
    want = install_cell(source, version).splitlines(keepends=True)
    if cell["source"] == want:
        return False
    cell["source"] = want
    return True


def find_notebooks(root: str | Path) -> list[Path]:
    """All ``.ipynb`` under ``root`` (a file or folder), skipping checkpoints and builds."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    return sorted(p for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def dirty_cells(nb: dict) -> list[int]:
    """Indices of code cells that carry outputs or an execution count.

    >>> dirty_cells({"cells": [{"cell_type": "code", "outputs": [], "execution_count": None},
    ...                        {"cell_type": "code", "outputs": [{"output_type": "stream"}], "execution_count": 3}]})
    [1]
    """
    return [
        i for i, c in enumerate(nb.get("cells", []))
        if c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]


def strip_notebook(nb: dict) -> dict:
    """Remove outputs, execution counts and volatile metadata from ``nb`` (in place)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in VOLATILE_METADATA:
            cell.get("metadata", {}).pop(key, None)
    return nb


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid notebook JSON ({err})") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("strip", "check", "sync-install"):
        print("usage: python -m facelab.notebooks strip|check|sync-install PATH...", file=sys.stderr)
        return 2
    action, paths = argv[0], argv[1:]
    if action == "sync-install":
        import facelab

        source = repository_url()
        for root in paths:
            for path in find_notebooks(root):
                nb = _load(path)
                try:
                    changed = sync_install(nb, source, facelab.__version__)
                except ValueError as err:
                    raise ValueError(f"{path}: {err}") from None
                if changed:
                    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
                    print(f"install cell updated: {path}")
        return 0
    bad = []
    for root in paths:
        for path in find_notebooks(root):
            nb = _load(path)
            if action == "strip":
                if dirty_cells(nb) or any(k in c.get("metadata", {}) for c in nb["cells"] for k in VOLATILE_METADATA):
                    path.write_text(json.dumps(strip_notebook(nb), indent=1, ensure_ascii=False) + "\n")
                    print(f"stripped {path}")
            elif dirty_cells(nb):
                bad.append(f"{path} (cells {dirty_cells(nb)})")
    if bad:
        print("notebooks committed with outputs; run `make strip`:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
