"""The book's structure: every chapter ends with a key-takeaways box and further reading, and every
part of the book sets at least one multi-step, auto-checked assignment."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
BIB_KEYS = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "book" / "references.bib").read_text(), flags=re.M))
PARTS_WITHOUT_ASSIGNMENT = {"Appendix", "Back matter"}  # reference material, not a course unit
MIN_READINGS = 3


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _markdown(path, heading):
    found = [("".join(c["source"])) for c in _cells(path) if c["cell_type"] == "markdown"
             and "".join(c["source"]).startswith(heading)]
    return found[0] if found else None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_a_key_takeaways_box(path):
    text = _markdown(path, "## Key takeaways")
    assert text, f"{path.name}: no '## Key takeaways' cell"
    assert re.search(r"```\{admonition\} Key takeaways\n(:class: \w+\n)?\n(- .+\n?)+", text), \
        f"{path.name}: the takeaways are not a bulleted admonition box"
    assert text.rstrip().endswith("```"), f"{path.name}: the takeaways box is not closed"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_further_reading_from_the_bibliography(path):
    text = _markdown(path, "## Further reading")
    assert text, f"{path.name}: no '## Further reading' cell"
    keys = re.findall(r"\{cite[pt]?\}`([^`]+)`", text)
    keys = {k.strip() for group in keys for k in group.split(",")}
    assert len(keys) >= MIN_READINGS, f"{path.name}: {len(keys)} readings, expected at least {MIN_READINGS}"
    assert keys <= BIB_KEYS, f"{path.name}: not in book/references.bib: {sorted(keys - BIB_KEYS)}"


def _assignments(path):
    cells = _cells(path)
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and "".join(cell["source"]).startswith("### Assignment"):
            after = cells[i + 1:i + 3]
            tags = [set(c.get("metadata", {}).get("tags", [])) for c in after]
            if len(after) == 2 and "solution" in tags[0] and "check" in tags[1]:
                found.append("".join(cell["source"]).splitlines()[0])
    return found


def test_every_part_sets_an_assignment():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    missing = []
    for part in toc["parts"]:
        if part["caption"] in PARTS_WITHOUT_ASSIGNMENT:
            continue
        files = [ROOT / (c["file"] + ".ipynb") for c in part["chapters"]]
        if not any(f.exists() and _assignments(f) for f in files):
            missing.append(part["caption"])
    assert not missing, f"parts without a multi-step, auto-checked assignment: {missing}"


def test_assignment_finder_needs_a_solution_and_a_check(tmp_path):
    def cell(kind, text, tags=()):
        return {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": [text]}
    nb = {"cells": [cell("markdown", "### Assignment 4: a"), cell("code", "x = 1", ["solution"]), cell("code", "assert x", ["check"]),
                    cell("markdown", "### Assignment 5: b"), cell("code", "y = 1", ["solution"])]}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    assert _assignments(path) == ["### Assignment 4: a"]
