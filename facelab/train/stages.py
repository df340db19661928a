"""The stage runner of the multi-stage recipes (Liu et al. 2018, Gao et al. 2020, SIR).

A recipe declares its stages as data (:class:`Stage`: a name and the stage it starts from)
and hands :func:`run_stages` a ``build`` callable that makes the stage's
:class:`~facelab.train.trainer.Trainer`. The runner owns what every recipe shares:

* a stage whose final checkpoint ``root/<name>.pt`` exists is done and skipped; when all are
  done nothing is prepared (no data rendered);
* a stage with a parent needs ``root/<parent>.pt`` (an error names the file otherwise);
* the trainer runs in ``root/<name>/`` (``last.pt``, logs, resumption), then its checkpoint
  is published atomically as ``root/<name>.pt`` and its last logged row is added to
  ``root/summary.json``;
* under ``torchrun`` only rank 0 writes, and every rank waits at a barrier after each stage.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from facelab.io.checkpoint import TMP_SUFFIX
from facelab.train import distributed as D
from facelab.train.trainer import Trainer

SUMMARY_JSON = "summary.json"
CHECKPOINT_SUFFIX = ".pt"


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe: its ``name`` (checkpoint ``<name>.pt``) and the stage it starts from.

    >>> Stage("phase2", parent="phase1").checkpoint(Path("run")).as_posix()
    'run/phase2.pt'
    """

    name: str
    parent: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name: expected a non-empty file stem, got {self.name!r}")

    def checkpoint(self, root: Path) -> Path:
        """The stage's final checkpoint in the run folder ``root``."""
        return Path(root) / f"{self.name}{CHECKPOINT_SUFFIX}"

    def parent_checkpoint(self, root: Path) -> Path | None:
        """The parent's final checkpoint (None for a stage that starts from scratch)."""
        return None if self.parent is None else Path(root) / f"{self.parent}{CHECKPOINT_SUFFIX}"


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s folder and ``os.replace``.

    >>> d = Path(tempfile.mkdtemp()); _ = (d / "a").write_text("x")
    >>> copy_atomic(d / "a", d / "b").read_text()
    'x'
    """
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def read_summary(root: str | Path) -> dict:
    """``root/summary.json`` (``{stage: last logged row}``), or ``{}`` when there is none.

    >>> read_summary(tempfile.mkdtemp())
    {}
    """
    path = Path(root) / SUMMARY_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def _publish_by_copy(stage: Stage, trainer_checkpoint: Path, final: Path) -> None:
    copy_atomic(trainer_checkpoint, final)


def run_stages(
    root: str | Path,
    stages: Sequence[Stage],
    build: Callable[[Stage, Any, Path | None], Trainer],
    prepare: Callable[[], Any] = lambda: None,
    publish: Callable[[Stage, Path, Path], None] = _publish_by_copy,
) -> dict:
    """Train the stages that are not done yet, in order (see the module docstring).

    Args:
        root: the run folder.
        stages: the recipe's stages, parents before children.
        build: ``build(stage, data, parent_checkpoint) -> Trainer`` for ``stage``, its trainer's
            ``out_dir`` being ``root/<name>``; ``parent_checkpoint`` is ``root/<parent>.pt`` or None.
        prepare: ``prepare() -> data`` (the morphable model, batches, ...), called once, and
            only if a stage is left to train.
        publish: ``publish(stage, trainer_checkpoint, final)`` writes the stage's final
            checkpoint (default: an atomic copy of the trainer's ``last.pt``).

    Returns:
        ``root/summary.json``'s content: ``{stage: last logged metrics}``.

    >>> run_stages(tempfile.mkdtemp(), [], build=None)
    {}
    """
    root = Path(root)
    todo = [stage for stage in stages if not stage.checkpoint(root).exists()]
    if not todo:
        return read_summary(root)  # every stage finished earlier (or restored from artifacts)
    data = prepare()
    summary = read_summary(root)
    for stage in todo:
        parent = stage.parent_checkpoint(root)
        if parent is not None and not parent.exists():
            raise FileNotFoundError(f"stages: {stage.name} starts from {parent}; train {stage.parent!r} first")
        trainer = build(stage, data, parent)
        result = trainer.fit()
        if D.is_main_process():  # under torchrun only rank 0 writes
            publish(stage, trainer.checkpoint_path, stage.checkpoint(root))
            summary[stage.name] = result["metrics"]
            if "diagnostics" in result:  # whether each loss term pulled (facelab.train.diagnostics)
                summary[stage.name] = {**result["metrics"], "diagnostics": result["diagnostics"]}
            (root / SUMMARY_JSON).write_text(json.dumps(summary, indent=2))
        D.barrier()
    return summary

