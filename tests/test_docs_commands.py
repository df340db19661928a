"""Every ``facelab ...`` command the README and chapter 12 show parses, and every ``facelab train``
command's ``--set`` keys exist in its recipe's config (the commands for the real datasets cannot be
run here, so this is what keeps them right)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCES = ("", "bash", "sh", "console")


def _shell_blocks(markdown: str) -> list[str]:
    """The text of each fenced block of ``markdown`` whose language is a shell's (or none)."""
    blocks, current, language = [], None, None
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and current is None:
            current, language = [], fence.group(1)
        elif fence:
            if language in SHELL_FENCES:
                blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _commands(markdown: str) -> list[list[str]]:
    """The ``facelab ...`` commands of the shell blocks of ``markdown``, continuation lines joined, comments dropped."""
    out = []
    for block in _shell_blocks(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("facelab "):
                out.append(shlex.split(line, comments=True)[1:])
    return out


def _chapter_markdown(name: str) -> str:
    nb = json.loads((ROOT / "book" / name).read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


DOCS = {"README.md": (ROOT / "README.md").read_text(), "book/12_real_data.ipynb": _chapter_markdown("12_real_data.ipynb")}
COMMANDS = [(doc, argv) for doc, text in DOCS.items() for argv in _commands(text)]


def test_the_docs_show_the_real_data_commands():
    shown = {(doc, argv[0], argv[1] if len(argv) > 1 else "") for doc, argv in COMMANDS}
    for doc in DOCS:
        for command in (("train", "liu2018"), ("landmarks", None), ("fit", None), ("eval", "model")):
            assert any(d == doc and c == command[0] and (command[1] is None or s == command[1]) for d, c, s in shown), \
                (doc, command)
    chapter = [argv for doc, argv in COMMANDS if doc.startswith("book/") and argv[0] == "train"]
    assert {argv[1] for argv in chapter} == {"liu2018", "gao2020", "sir"}  # the guide covers every recipe


@pytest.mark.parametrize("doc,argv", COMMANDS, ids=[f"{d}: {' '.join(a[:2])}" for d, a in COMMANDS])
def test_each_command_parses_and_its_config_keys_exist(doc, argv):
    from facelab.cli import build_parser
    from facelab.config import apply_overrides
    from facelab.train.recipes import RECIPES

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse's way of refusing
        pytest.fail(f"{doc}: `facelab {' '.join(argv)}` does not parse (exit {exit_.code})")
    if argv[0] == "train":
        recipe = RECIPES[args.model]
        # keys and values are checked; the folders themselves are not read until training starts
        apply_overrides(recipe.config_class(profile=args.profile), args.set)
