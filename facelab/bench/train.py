"""``facelab bench train RECIPE``: training throughput of a recipe, per speed option.

Runs the recipe's own training loop (the :class:`~facelab.train.trainer.Trainer` with its
loss, optimiser, scheduler and pre-rendered batches) for ``steps`` steps of its main stage
(Liu et al.: Phase III; Gao et al.: ``step1``; SIR: ``base``) on a small suite, and reads steps/s off the
trainer's log, after the first :data:`WARMUP_STEPS` steps (allocator and oneDNN kernel
selection). The per-step cost does not depend on the suite's size, since the batches come
from a pool in memory; the term diagnostics are off (they cost one extra backward per term
every ``diagnose_every`` steps).

Each profile is timed with 1 and 2 threads and with each entry of :data:`VARIANTS`:
``float32`` is the recipes' default (today's code path); the others switch on the options of
:mod:`facelab.train.speed` (``compiled``: a bfloat16 encoder through ``torch.compile`` and the
fused optimiser; its compilation falls in the untimed first steps). The ratio column is each
variant over ``float32`` at the same profile and thread count, measured in the same process. Other processes on the machine
slow every variant alike only if they run throughout: benchmark on an idle machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from facelab.checks import check_choice, check_positive

__all__ = ["bench_train", "BENCH_RECIPES", "VARIANTS"]

BENCH_RECIPES = ("liu2018", "gao2020", "sir")
#: speed options per variant (fields of the recipe config; see facelab.train.speed)
VARIANTS = {
    "float32": {},
    "channels_last": {"channels_last": True},
    "bfloat16": {"channels_last": True, "encoder_precision": "bfloat16"},
    # bfloat16 without channels_last: inductor's own layout choice measured faster than NHWC
    "compiled": {"encoder_precision": "bfloat16", "compile_encoder": True, "fused_optimizer": True},
}
WARMUP_STEPS = 10  # logged steps not timed
DEFAULT_STEPS = 60
DEFAULT_THREADS = (1, 2)
# a small training suite: enough images for distinct batches, cheap to render once (cached)
LIU_SUITE = dict(n_identities=64, images_per_identity=8)
GAO_SUITE = dict(lp_identities=32, lp_images_per_identity=4, col_identities=16, col_images_per_identity=4)
SIR_SUITE = dict(lp_identities=64, lp_images_per_identity=2, n_identities=16, images_per_identity=8)


def _loop(steps: int, device: str):
    """The loop options of a timed run: a row after the warm-up steps, one checkpoint, no diagnostics."""
    from facelab.train.trainer import LoopConfig

    return LoopConfig(log_every=WARMUP_STEPS, ckpt_every=steps, diagnose_every=0, progress=False, device=device)


def _liu_run(profile: str, out: Path, steps: int, threads: int, options: dict, device: str) -> tuple[Path, int]:
    from facelab.train.liu2018 import Liu2018TrainConfig, train_liu2018

    cfg = Liu2018TrainConfig(profile=profile, out_dir=str(out), stages=("phase1", "phase2", "phase3"),
                             phase_steps=(1, 1, steps), train=_loop(steps, device), num_threads=threads, pool=True,
                             num_workers=0, **LIU_SUITE, **options)
    train_liu2018(cfg)
    return out / "phase3", cfg.train.batch_size


def _gao_run(profile: str, out: Path, steps: int, threads: int, options: dict, device: str) -> tuple[Path, int]:
    from facelab.train.gao2020 import Gao2020TrainConfig, train_gao2020

    cfg = Gao2020TrainConfig(profile=profile, out_dir=str(out), warmup_steps=0, steps=(steps, 1),
                             train=_loop(steps, device), num_threads=threads, pool=True, num_workers=0,
                             **GAO_SUITE, **options)
    train_gao2020(cfg)
    return out / "step1", cfg.batch_lp + cfg.batch_col


def _sir_run(profile: str, out: Path, steps: int, threads: int, options: dict, device: str) -> tuple[Path, int]:
    from facelab.train.sir import SIRTrainConfig, train_sir

    cfg = SIRTrainConfig(profile=profile, out_dir=str(out), variants=(), base_steps=steps, train=_loop(steps, device),
                         num_threads=threads, pool=True, **SIR_SUITE, **options)
    train_sir(cfg)
    return out / "base", cfg.batch_lp + cfg.batch_id


RUNNERS = {"liu2018": _liu_run, "gao2020": _gao_run, "sir": _sir_run}


def _profiles(recipe: str) -> tuple[str, ...]:
    """The recipe's CPU profiles (those with a table of defaults)."""
    if recipe == "liu2018":
        from facelab.train.liu2018 import PROFILE_DEFAULTS
    elif recipe == "gao2020":
        from facelab.train.gao2020 import PROFILE_DEFAULTS
    else:
        from facelab.train.sir import PROFILE_DEFAULTS
    return tuple(p for p in ("quick", "standard") if p in PROFILE_DEFAULTS)


def steps_per_second(stage_dir: Path, skip: int = WARMUP_STEPS) -> float:
    """Steps/s of a trainer's run folder from its log, leaving out the first ``skip`` steps.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "metrics.csv").write_text("step,loss,time_s\\n10,1.0,2.0\\n20,0.9,4.0\\n30,0.8,6.5\\n")
    >>> steps_per_second(d)
    4.444444444444445
    """
    from facelab.train import read_metrics

    log = read_metrics(stage_dir)
    timed = log["step"] >= skip
    steps, seconds = log["step"][timed], log["time_s"][timed]
    if steps.size < 2 or seconds[-1] <= seconds[0]:
        raise ValueError(f"stage_dir: {stage_dir} logged too few steps after the first {skip} to time")
    return float((steps[-1] - steps[0]) / (seconds[-1] - seconds[0]))


def bench_train(recipe: str = "liu2018", steps: int = DEFAULT_STEPS, threads: tuple[int, ...] = DEFAULT_THREADS,
                variants: tuple[str, ...] = tuple(VARIANTS), profiles: tuple[str, ...] | None = None,
                device: str = "cpu") -> dict:
    """Steps/s and images/s of ``recipe``'s training loop per profile, thread count and variant.

    ``profiles`` default to the recipe's CPU profiles; ``device`` is where it trains (the
    pools are pre-rendered from a small suite either way).

    Returns ``{"recipe", "stage_steps", "rows": [{"profile", "threads", "variant",
    "steps_per_s", "images_per_s", "ratio"}]}`` where ``ratio`` is over the ``float32`` row of
    the same profile and thread count (None when ``float32`` was not timed).
    """
    check_choice(recipe, "recipe", BENCH_RECIPES)
    check_positive(steps, "steps", integer=True)
    if steps < 3 * WARMUP_STEPS:
        raise ValueError(f"steps: need at least {3 * WARMUP_STEPS} (the first {WARMUP_STEPS} are not timed), got {steps}")
    for v in variants:
        check_choice(v, "variants", list(VARIANTS))
    for t in threads:
        check_positive(t, "threads", integer=True)
    profiles = tuple(profiles) if profiles is not None else _profiles(recipe)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facelab-bench-train-") as tmp:
        for profile in profiles:
            for n_threads in threads:
                base = None
                for variant in variants:
                    out = Path(tmp) / f"{profile}-{n_threads}-{variant}"
                    stage_dir, batch = RUNNERS[recipe](profile, out, steps, n_threads, VARIANTS[variant], device)
                    rate = steps_per_second(stage_dir)
                    base = rate if variant == "float32" else base
                    rows.append({"profile": profile, "threads": n_threads, "variant": variant,
                                 "steps_per_s": round(rate, 3), "images_per_s": round(rate * batch, 1),
                                 "ratio": round(rate / base, 3) if base else None})
    return {"recipe": recipe, "stage_steps": steps, "device": device, "rows": rows}


def format_bench_train(result: dict) -> str:
    """A plain-text table of :func:`bench_train`'s result."""
    lines = [f"facelab bench train {result['recipe']} ({result['stage_steps']} steps of the main stage each)",
             f"{'profile':10s} {'threads':>7s} {'variant':14s} {'steps/s':>8s} {'img/s':>8s} {'vs float32':>10s}"]
    for r in result["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(f"{r['profile']:10s} {r['threads']:7d} {r['variant']:14s} {r['steps_per_s']:8.2f} "
                     f"{r['images_per_s']:8.1f} {ratio:>10s}")
    return "\n".join(lines)
