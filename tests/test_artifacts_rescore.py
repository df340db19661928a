"""A committed run's checkpoints, loaded through the model registry, score what its ``results.json`` says.

The scores were computed when the run was made; re-scoring the exported checkpoints with
today's loaders and evaluation code must give the same numbers. Like the reproduce goldens,
the comparison holds on the kind of machine the runs were scored on (LAPACK's rounding of
the SynthFaces PCA differs between CPUs), and skips elsewhere, saying so.
"""

from __future__ import annotations

import json

import pytest

from facelab.metrics.model_eval import ModelEvalConfig
from facelab.models.registry import load_evaluable
from facelab.reproduce.artifacts import ARTIFACTS_DIR, has_artifact, load_results
from facelab.reproduce.liu2018 import COLUMNS, RECOGNITION_ONLY_ROWS, ScoringSuites, score_phase
from test_reproduce_golden import GOLDEN, MACHINE_KEY, machine

SAME_SCORE = 1e-6  # mm and accuracy: the same code on the same kind of CPU gives the same number


def _skip_unless_scorable(name: str) -> None:
    """Skip, saying why, off the machine kind the runs were scored on or without the artifact."""
    recorded_on = json.loads(GOLDEN.read_text()).get(MACHINE_KEY)
    if recorded_on != machine():
        pytest.skip(f"the committed runs were scored on {recorded_on!r}, this is {machine()!r}")
    if not has_artifact(name):
        pytest.skip(f"no committed {name} run")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["liu2018-quick"])
def test_committed_liu_run_rescores_to_its_results(name, one_thread):
    _skip_unless_scorable(name)
    result = load_results(name)
    eval_cfg = ModelEvalConfig()
    suites = ScoringSuites(result["profile"], eval_cfg)
    for row in result["rows"]:
        model = load_evaluable(ARTIFACTS_DIR / name / f"{row['stage']}.pt")
        cols, _, _ = score_phase(model, result["profile"], eval_cfg, suites,
                                 reconstruction=row["stage"] not in RECOGNITION_ONLY_ROWS)
        for col in COLUMNS:
            if row[col] is not None:
                assert cols[col] == pytest.approx(row[col], abs=SAME_SCORE), f"{name}/{row['stage']}: {col}"


def _gao(out):
    from facelab.reproduce.gao2020 import reproduce_gao2020

    return reproduce_gao2020("quick", out, ["train.progress=false"])


def _sir(out):
    from facelab.reproduce.sir import reproduce_sir

    return reproduce_sir("quick", out)


@pytest.mark.slow
@pytest.mark.parametrize("name, rescore", [("gao2020-quick", _gao), ("sir-quick", _sir)])
def test_committed_run_rescores_to_its_results(name, rescore, tmp_path, one_thread):
    """``facelab reproduce`` on the restored checkpoints trains nothing and gives every recorded number again."""
    from facelab.reproduce.artifacts import restore_run
    from test_reproduce_golden import UNSTABLE_KEYS, numbers

    _skip_unless_scorable(name)
    assert restore_run(name, tmp_path / name)
    got = rescore(tmp_path / name)
    assert got["train_seconds"] < 5, f"{name}: the restored run trained again"
    by_id = lambda result: {**result, "claims": {c["id"]: c for c in result.get("claims", [])},  # noqa: E731
                            "rows": {r.get("stage", i): r for i, r in enumerate(result.get("rows", []))}}
    # claims by id and rows by stage, not position: newer code may test more claims, or score more
    # rows (e.g. a mean-face row), than the recorded run
    want = {k: v for k, v in numbers(by_id(load_results(name))).items() if not k.startswith(tuple(UNSTABLE_KEYS))}
    got = numbers(by_id(got))
    assert set(want) <= set(got), f"{name}: numbers missing from the re-score: {sorted(set(want) - set(got))[:5]}"
    worst = max(want, key=lambda k: abs(got[k] - want[k]))
    assert abs(got[worst] - want[worst]) <= SAME_SCORE, f"{name}: {worst} = {got[worst]}, recorded {want[worst]}"
