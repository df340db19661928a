"""Trained book artifacts: model-only checkpoints of a recorded ``facelab reproduce`` run.

Training every ablation row of a chapter from scratch takes longer than a book build
should (Liu et al.'s quick profile takes 13 minutes on a 2-core CPU). So the
checkpoints that ``facelab reproduce <paper> --profile quick`` trained are committed under
``book/artifacts/<name>/``, stripped of optimiser and RNG state, together with a
``manifest.json`` that records the command, the facelab version, the git commit and the
SHA-256 of every file. A chapter copies them into its run folder with :func:`restore_run`
(the recipe then skips the stages that exist) and scores them live; with
``RETRAIN = True`` it trains them itself.

>>> "state_dict" in EXPORT_KEYS, "optimizer" in EXPORT_KEYS
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from facelab.io.checkpoint import atomic_torch_save, load_checkpoint
from facelab.train.trainer import CHECKPOINT_NAME

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "book" / "artifacts"
MANIFEST = "manifest.json"
# what a model-only checkpoint keeps (no optimiser, scheduler or RNG state)
EXPORT_KEYS = ("format", "format_version", "facelab_version", "torch_version", "model_name", "model_config",
               "state_dict", "step", "epoch", "train_config", "extra")
RESULT_FILES = ("results.json", "results.md", "summary.json", "units.npz")
SUMMARY_FILE = "summary.json"  # the recipes' record of each finished stage, with its term diagnostics
LOG_FILES = ("metrics.csv",)  # each stage folder's training log (the chapters plot the curves)
STAGE_CONFIG = "config.json"  # a stage folder's recipe and loop config (kept for stages exported without a checkpoint)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_checkpoint(src, dst) -> Path:
    """Write the model-only part of checkpoint ``src`` to ``dst`` (atomically); returns ``dst``."""
    ckpt = load_checkpoint(src)
    return atomic_torch_save({k: ckpt[k] for k in EXPORT_KEYS if k in ckpt}, Path(dst))


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ARTIFACTS_DIR.parents[1], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_run(run_dir, name: str, command: str, root=ARTIFACTS_DIR, skip: tuple[str, ...] = ()) -> Path:
    """Export every stage checkpoint ``*.pt`` of ``run_dir`` (model-only) and its result files to ``root/name``.

    Stage checkpoints are the ``*.pt`` at the top level and in variant sub-folders (e.g.
    ``full/step2.pt`` of ``facelab reproduce gao2020``), not the trainer's resumable
    ``last.pt`` files; each one's ``<stage>/metrics.csv`` comes along. A stage folder with a
    log but no finished checkpoint (a trial stopped early) contributes its ``metrics.csv`` and
    ``config.json`` alone.

    Args:
        run_dir: the output folder of a reproduce/train command.
        name: artifact name, e.g. ``"liu2018-quick"``.
        command: the command line that produced ``run_dir`` (recorded in the manifest).
        skip: sub-folders of ``run_dir`` whose checkpoints stay out (e.g. ``("seed1", "seed2")``
            to keep an artifact small); their result files still come along, and the manifest
            lists what was skipped.

    Returns:
        The artifact folder.
    """
    run_dir = Path(run_dir)
    skip = tuple(str(Path(s)) for s in skip)
    for folder in skip:
        if not (run_dir / folder).is_dir():
            raise FileNotFoundError(f"skip: {run_dir / folder} is not a folder of the run")
    skipped = lambda p: any(p.relative_to(run_dir).parts[:len(Path(s).parts)] == Path(s).parts for s in skip)  # noqa: E731
    ckpts = sorted(p for p in run_dir.rglob("*.pt") if p.name != CHECKPOINT_NAME and not skipped(p))
    if not ckpts:
        raise FileNotFoundError(f"run_dir: {run_dir} holds no *.pt checkpoint to export")
    dest = Path(root) / name
    dest.mkdir(parents=True, exist_ok=True)
    for src in ckpts:
        rel = src.relative_to(run_dir)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        export_checkpoint(src, dest / rel)
        for log in LOG_FILES:
            if (src.parent / src.stem / log).is_file():
                (dest / rel.parent / src.stem).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.parent / src.stem / log, dest / rel.parent / src.stem / log)
    # stage folders without a checkpoint (a stopped trial the chapter plots): their log and config alone
    for log in sorted(run_dir.rglob(LOG_FILES[0])):
        stage = log.parent
        if skipped(log) or stage == run_dir or stage.parent / f"{stage.name}.pt" in ckpts:
            continue
        rel = stage.relative_to(run_dir)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for kept in LOG_FILES + (STAGE_CONFIG,):
            if (stage / kept).is_file():
                shutil.copyfile(stage / kept, dest / rel / kept)
    for fname in RESULT_FILES:
        for found in run_dir.rglob(fname):
            rel = found.relative_to(run_dir)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, dest / rel)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST)
    import facelab

    manifest = {"name": name, "command": command, "facelab_version": facelab.__version__,
                "git_commit": _git_commit(), "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                **({"checkpoints_not_exported": list(skip)} if skip else {}),
                "files": {f: {"sha256": _sha256(dest / f), "bytes": (dest / f).stat().st_size} for f in files}}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def verify_artifacts(name: str, root=ARTIFACTS_DIR) -> dict:
    """Check ``root/name`` against its manifest; returns the manifest.

    Raises:
        FileNotFoundError: no such artifact, or a listed file is missing.
        ValueError: a file's SHA-256 differs from the manifest (named).
    """
    folder = Path(root) / name
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder / MANIFEST}: no such artifact manifest")
    manifest = json.loads((folder / MANIFEST).read_text())
    for fname, meta in manifest["files"].items():
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {MANIFEST} but missing")
        if _sha256(path) != meta["sha256"]:
            raise ValueError(f"{path}: SHA-256 differs from {MANIFEST}; the artifact was modified or damaged")
    return manifest


def has_artifact(name: str, root=ARTIFACTS_DIR) -> bool:
    """Whether ``root/name/manifest.json`` exists."""
    return (Path(root) / name / MANIFEST).is_file()


def restore_run(name: str, out_dir, root=ARTIFACTS_DIR) -> list[str]:
    """Copy artifact ``name``'s checkpoints, training logs and stage summaries (``summary.json``:
    the term diagnostics the claims read) into ``out_dir``, after verifying them. A file already
    there is kept when its content is the artifact's, and replaced when it differs (an earlier
    version of the artifact, or a run trained there since), so the folder always holds the
    committed run.

    Returns the checkpoint file names now in ``out_dir`` that came from the artifact
    (empty when there is no such artifact). The recipes skip every stage whose final
    checkpoint exists, so a reproduce call on ``out_dir`` then only scores.

    >>> restore_run("no-such-artifact", "/tmp/unused")
    []
    """
    if not has_artifact(name, root):
        return []
    manifest = verify_artifacts(name, root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    restored = []
    for fname in manifest["files"]:
        if fname.endswith(".pt") or Path(fname).name in LOG_FILES + (SUMMARY_FILE,):
            here = out / fname
            if not here.exists() or _sha256(here) != manifest["files"][fname]["sha256"]:
                here.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(root) / name / fname, out / fname)
            if fname.endswith(".pt"):
                restored.append(fname)
    return restored



def load_results(name: str, root=ARTIFACTS_DIR) -> dict:
    """The ``results.json`` of artifact ``name``, after checking the artifact against its manifest.

    These are the numbers the run's ``reproduce`` command computed when it was trained (for a
    multi-seed run, from every seed's checkpoints, even those the artifact leaves out).

    >>> load_results("no-such-artifact")
    Traceback (most recent call last):
    ...
    FileNotFoundError: name: no artifact 'no-such-artifact' under book/artifacts
    """
    if not has_artifact(name, root):
        raise FileNotFoundError(f"name: no artifact {name!r} under {Path(root).parent.name}/{Path(root).name}")
    verify_artifacts(name, root)
    path = Path(root) / name / RESULT_FILES[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the artifact holds no {RESULT_FILES[0]}")
    return json.loads(path.read_text())
