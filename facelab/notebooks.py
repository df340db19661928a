"""Notebook hygiene: chapters are committed without outputs.

``python -m facelab.notebooks strip book`` removes outputs and execution counts in
place; ``python -m facelab.notebooks check book`` exits 1 and names every notebook
that still has them. The test suite runs the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Metadata keys that change on every run and carry no content.
VOLATILE_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


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
    if len(argv) < 2 or argv[0] not in ("strip", "check"):
        print("usage: python -m facelab.notebooks strip|check PATH...", file=sys.stderr)
        return 2
    action, paths = argv[0], argv[1:]
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
